/* pool.h - a fixed set of threads that run one function together.
 *
 * dae_pool_run(p, fn, ctx) calls fn(ctx, i, n) once for every i in [0, n),
 * n = the pool's size, index 0 on the calling thread, and returns when all
 * are done. Training and batched inference use it to split work over the
 * batch with a fixed assignment, so results do not depend on timing. */
#ifndef DAE_POOL_H
#define DAE_POOL_H

typedef struct dae_pool dae_pool;
typedef void (*dae_pool_fn)(void *ctx, int index, int count);

/* Starts threads-1 workers; returns NULL if threads < 1 or on failure. */
dae_pool *dae_pool_new(int threads);
/* Stops and joins the workers; NULL is fine. */
void dae_pool_free(dae_pool *p);
int dae_pool_size(const dae_pool *p);
/* Runs fn on every thread of the pool and waits. Not reentrant: one caller
 * at a time per pool. */
void dae_pool_run(dae_pool *p, dae_pool_fn fn, void *ctx);

/* Splits [0, total) into count nearly equal ranges; returns range index's
 * start (the end is the start of index + 1). */
static inline int dae_pool_split(int total, int index, int count) {
    return (int)((long long)total * index / count);
}

/* One turn of a loop that waits awake for another thread: tells the CPU
 * so (x86's pause), sparing the other hyperthread and the memory order
 * machinery. */
static inline void dae_spin_pause(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#endif
}

#endif
