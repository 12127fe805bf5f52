/* pool.c - worker threads woken per job by a generation counter. */
#include "pool.h"

#include <pthread.h>
#include <stdlib.h>

struct dae_pool {
    int size;
    pthread_t *threads;
    pthread_mutex_t lock;
    pthread_cond_t start, done;
    unsigned long generation; /* bumped for each job */
    int pending;              /* workers still running the current job */
    int stopping;
    dae_pool_fn fn;
    void *ctx;
};

typedef struct {
    dae_pool *pool;
    int index;
} worker_arg;

static void *worker_main(void *arg) {
    worker_arg wa = *(worker_arg *)arg;
    free(arg);
    dae_pool *p = wa.pool;
    unsigned long seen = 0;
    pthread_mutex_lock(&p->lock);
    for (;;) {
        while (p->generation == seen && !p->stopping) pthread_cond_wait(&p->start, &p->lock);
        if (p->stopping) break;
        seen = p->generation;
        dae_pool_fn fn = p->fn;
        void *ctx = p->ctx;
        pthread_mutex_unlock(&p->lock);
        fn(ctx, wa.index, p->size);
        pthread_mutex_lock(&p->lock);
        if (--p->pending == 0) pthread_cond_signal(&p->done);
    }
    pthread_mutex_unlock(&p->lock);
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

void dae_pool_free(dae_pool *p) {
    if (p == NULL) return;
    pthread_mutex_lock(&p->lock);
    p->stopping = 1;
    pthread_cond_broadcast(&p->start);
    pthread_mutex_unlock(&p->lock);
    for (int i = 1; i < p->size; i++) pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->start);
    pthread_cond_destroy(&p->done);
    free(p->threads);
    free(p);
}

int dae_pool_size(const dae_pool *p) { return p->size; }

void dae_pool_run(dae_pool *p, dae_pool_fn fn, void *ctx) {
    if (p->size > 1) {
        pthread_mutex_lock(&p->lock);
        p->fn = fn;
        p->ctx = ctx;
        p->pending = p->size - 1;
        p->generation++;
        pthread_cond_broadcast(&p->start);
        pthread_mutex_unlock(&p->lock);
    }
    fn(ctx, 0, p->size);
    if (p->size > 1) {
        pthread_mutex_lock(&p->lock);
        while (p->pending > 0) pthread_cond_wait(&p->done, &p->lock);
        pthread_mutex_unlock(&p->lock);
    }
}
