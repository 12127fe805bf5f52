/* budget.c - the memory budget of the requests in flight, and the
 * per-job estimates it is charged with (see budget.h). */
#include "budget.h"

#include <malloc.h>

#include "dae_image.h"

/* Fixed costs of one job besides its pixels: zlib's deflate state and
 * libpng's row buffers while encoding, row pointers while decoding. */
#define JOB_FIXED_BYTES (1LL << 20)

void srv_budget_init(srv_budget *b, long long limit, long long share_limit) {
    b->limit = limit;
    b->share_limit = share_limit < limit ? share_limit : limit;
    atomic_init(&b->used, 0);
    atomic_init(&b->peak, 0);
    atomic_init(&b->refusals, 0);
}

/* Adds bytes to *used when the sum stays within limit, counting a
 * refusal in b otherwise. Returns the sum, or -1. */
static long long add_within(srv_budget *b, atomic_llong *used, long long bytes, long long limit) {
    long long now = atomic_load_explicit(used, memory_order_relaxed);
    do {
        if (bytes > limit - now) {
            atomic_fetch_add_explicit(&b->refusals, 1, memory_order_relaxed);
            return -1;
        }
    } while (!atomic_compare_exchange_weak_explicit(used, &now, now + bytes, memory_order_acq_rel,
                                                    memory_order_relaxed));
    return now + bytes;
}

int srv_budget_take(srv_budget *b, long long bytes) {
    if (bytes <= 0) return 0;
    long long now = add_within(b, &b->used, bytes, b->limit);
    if (now < 0) return -1;
    long long peak = atomic_load_explicit(&b->peak, memory_order_relaxed);
    while (now > peak &&
           !atomic_compare_exchange_weak_explicit(&b->peak, &peak, now, memory_order_relaxed, memory_order_relaxed))
        ;
    return 0;
}

void srv_budget_give(srv_budget *b, long long bytes) {
    if (bytes > 0) atomic_fetch_sub_explicit(&b->used, bytes, memory_order_acq_rel);
}

int srv_budget_take_share(srv_budget *b, srv_budget_share *share, long long bytes) {
    if (share == NULL || bytes <= 0) return srv_budget_take(b, bytes);
    if (add_within(b, &share->used, bytes, b->share_limit) < 0) return -1;
    if (srv_budget_take(b, bytes) == 0) return 0;
    atomic_fetch_sub_explicit(&share->used, bytes, memory_order_acq_rel);
    return -1;
}

void srv_budget_give_share(srv_budget *b, srv_budget_share *share, long long bytes) {
    if (bytes <= 0) return;
    if (share != NULL) atomic_fetch_sub_explicit(&share->used, bytes, memory_order_acq_rel);
    srv_budget_give(b, bytes);
}

long long srv_budget_most(const srv_budget *b, const srv_budget_share *share) {
    return share != NULL ? b->share_limit : b->limit;
}

long long srv_budget_used(srv_budget *b) { return atomic_load_explicit(&b->used, memory_order_relaxed); }

long long srv_budget_peak(srv_budget *b) { return atomic_load_explicit(&b->peak, memory_order_relaxed); }

unsigned long long srv_budget_refusals(srv_budget *b) {
    return atomic_load_explicit(&b->refusals, memory_order_relaxed);
}

void srv_budget_malloc_policy(void) {
#ifdef M_MMAP_THRESHOLD
    /* Setting the threshold also stops glibc from raising it each time a
     * large block is freed (by default it climbs to 32 MiB, after which
     * 10 MiB bodies come from the heap and stay resident). */
    mallopt(M_MMAP_THRESHOLD, 128 * 1024);
    mallopt(M_TRIM_THRESHOLD, 1024 * 1024);
#endif
}

static long long max2(long long a, long long b) { return a > b ? a : b; }

long long srv_budget_image_bytes(srv_budget_kind kind, int width, int height, int channels) {
    if (width < 1 || height < 1 || width > 65535 || height > 65535 || channels < 0 || channels > 4) return -1;
    const long long pixels = (long long)width * height;
    const long long ch = channels == 0 ? 4 : channels;
    const long long colours = dae_image_colours((int)ch);
    const long long image = pixels * ch;
    /* A PNG of the unfiltered rows, deflate's worst expansion included,
     * in a buffer that doubles as it grows. */
    const long long raw = (long long)height * (1 + (long long)width * ch);
    const long long png = 2 * (raw + raw / 1000 + 4096);
    long long decoding = 4 * image;
    long long working = kind == SRV_BUDGET_DENOISE ? image + 4 * pixels * colours : image + 4 * pixels;
    long long encoding = image + png;
    return max2(decoding, max2(working, encoding)) + JOB_FIXED_BYTES;
}
