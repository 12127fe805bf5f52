/* test_pool.c - the thread pool: every index runs once per job, whether
 * the workers were waiting awake or asleep when it came. */
#include <criterion/criterion.h>
#include <stdatomic.h>
#include <time.h>

#include "pool.h"

enum { MAX_SIZE = 4 };

typedef struct {
    _Atomic int runs[MAX_SIZE];
    _Atomic int bad_calls; /* index or count out of range */
    int job;               /* the current job's number */
    int seen[MAX_SIZE];    /* the job each index ran last, written by that index only */
} count_ctx;

static void count_job(void *arg, int index, int count) {
    count_ctx *c = arg;
    if (index < 0 || index >= count || count > MAX_SIZE) {
        atomic_fetch_add(&c->bad_calls, 1);
        return;
    }
    atomic_fetch_add(&c->runs[index], 1);
    c->seen[index] = c->job;
}

/* Back-to-back jobs find the workers awake; jobs a millisecond apart find
 * them asleep (they wait awake for 50 us). Each index runs exactly once
 * per job, and the caller sees every index's work when run returns. */
Test(pool, every_index_runs_once_per_job_awake_or_asleep) {
    for (int size = 1; size <= MAX_SIZE; size++) {
        dae_pool *p = dae_pool_new(size);
        cr_assert_not_null(p);
        cr_assert_eq(dae_pool_size(p), size);
        count_ctx c = {0};
        const int jobs = 3000;
        for (c.job = 1; c.job <= jobs; c.job++) {
            if (c.job % 100 == 0) nanosleep(&(struct timespec){0, 1000000}, NULL);
            dae_pool_run(p, count_job, &c);
            for (int i = 0; i < size; i++)
                cr_assert_eq(c.seen[i], c.job, "size %d, job %d: index %d had not run when run returned", size,
                             c.job, i);
        }
        cr_assert_eq(atomic_load(&c.bad_calls), 0, "size %d: calls with a bad index or count", size);
        for (int i = 0; i < size; i++)
            cr_assert_eq(atomic_load(&c.runs[i]), jobs, "size %d: index %d ran %d times", size, i,
                         atomic_load(&c.runs[i]));
        dae_pool_free(p);
    }
}

Test(pool, no_threads_is_no_pool) { cr_assert_null(dae_pool_new(0)); }
