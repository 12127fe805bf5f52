/* pool.c - worker threads woken per job by a generation counter.
 *
 * A training step is two jobs of about a millisecond each, so a sleeping
 * thread's wake-up (a futex, then the hypervisor's interrupt on a VM) was
 * paid twice a step. Between jobs the workers, and the caller waiting for
 * them, watch the counters awake for a while (SPIN_S) before they sleep on
 * the condition variables; a pool left idle sleeps as before. */
#include "pool.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "clock.h"

/* How long a thread waits awake for the next job, or for the workers to
 * finish one, before it sleeps: longer than the gap between a step's two
 * jobs, short enough that an idle pool costs nothing noticeable. */
#define SPIN_S 50e-6

struct dae_pool {
    int size;
    pthread_t *threads;
    pthread_mutex_t lock;
    pthread_cond_t start, done;
    _Atomic unsigned long generation; /* bumped under lock for each job */
    _Atomic unsigned long pending;    /* workers still running the current job */
    dae_pool_fn fn;                   /* the job; NULL: stop */
    void *ctx;
};

typedef struct {
    dae_pool *pool;
    int index;
} worker_arg;

/* Waits awake, up to SPIN_S, until (*counter == value) == equal; returns
 * whether that came true. */
static int spin_until(_Atomic unsigned long *counter, unsigned long value, int equal) {
    double until = dae_now_s() + SPIN_S;
    for (;;) {
        for (int i = 0; i < 64; i++) {
            if ((atomic_load_explicit(counter, memory_order_acquire) == value) == equal) return 1;
            dae_spin_pause();
        }
        if (dae_now_s() > until) return 0;
    }
}

static void *worker_main(void *arg) {
    worker_arg wa = *(worker_arg *)arg;
    free(arg);
    dae_pool *p = wa.pool;
    unsigned long seen = 0;
    for (;;) {
        if (!spin_until(&p->generation, seen, 0)) {
            pthread_mutex_lock(&p->lock);
            while (atomic_load(&p->generation) == seen) pthread_cond_wait(&p->start, &p->lock);
            pthread_mutex_unlock(&p->lock);
        }
        /* fn and ctx were written before the generation that announced them */
        seen = atomic_load_explicit(&p->generation, memory_order_acquire);
        dae_pool_fn fn = p->fn;
        void *ctx = p->ctx;
        if (fn == NULL) break;
        fn(ctx, wa.index, p->size);
        if (atomic_fetch_sub_explicit(&p->pending, 1, memory_order_acq_rel) == 1) {
            /* the last one: the caller may be asleep, or about to be */
            pthread_mutex_lock(&p->lock);
            pthread_cond_signal(&p->done);
            pthread_mutex_unlock(&p->lock);
        }
    }
    return NULL;
}

dae_pool *dae_pool_new(int threads) {
    if (threads < 1) return NULL;
    dae_pool *p = calloc(1, sizeof *p);
    if (p == NULL) return NULL;
    p->size = threads;
    p->threads = calloc((size_t)threads, sizeof(pthread_t));
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->start, NULL);
    pthread_cond_init(&p->done, NULL);
    if (p->threads == NULL) {
        p->size = 1; /* no workers to stop */
        dae_pool_free(p);
        return NULL;
    }
    for (int i = 1; i < threads; i++) {
        worker_arg *wa = malloc(sizeof *wa);
        if (wa == NULL) {
            p->size = i;
            dae_pool_free(p);
            return NULL;
        }
        wa->pool = p;
        wa->index = i;
        if (pthread_create(&p->threads[i], NULL, worker_main, wa) != 0) {
            free(wa);
            p->size = i;
            dae_pool_free(p);
            return NULL;
        }
    }
    return p;
}

/* Publishes job fn(ctx) (NULL: stop) to the workers and wakes any asleep. */
static void announce(dae_pool *p, dae_pool_fn fn, void *ctx) {
    pthread_mutex_lock(&p->lock);
    p->fn = fn;
    p->ctx = ctx;
    atomic_store_explicit(&p->pending, (unsigned long)p->size - 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&p->generation, 1, memory_order_release);
    pthread_cond_broadcast(&p->start);
    pthread_mutex_unlock(&p->lock);
}

void dae_pool_free(dae_pool *p) {
    if (p == NULL) return;
    announce(p, NULL, NULL);
    for (int i = 1; i < p->size; i++) pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->start);
    pthread_cond_destroy(&p->done);
    free(p->threads);
    free(p);
}

int dae_pool_size(const dae_pool *p) { return p->size; }

void dae_pool_run(dae_pool *p, dae_pool_fn fn, void *ctx) {
    if (p->size == 1) {
        fn(ctx, 0, 1);
        return;
    }
    announce(p, fn, ctx);
    fn(ctx, 0, p->size);
    if (spin_until(&p->pending, 0, 1)) return;
    pthread_mutex_lock(&p->lock);
    while (atomic_load(&p->pending) > 0) pthread_cond_wait(&p->done, &p->lock);
    pthread_mutex_unlock(&p->lock);
}
