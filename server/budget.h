/* budget.h - one budget for the bytes a server holds on behalf of its
 * requests: bodies being received, decoded pixels, float planes, tiles
 * and encoded answers.
 *
 * Memory is reserved before it is allocated: a request takes its bytes
 * from the budget first (srv_budget_take) and is refused with 503 when
 * they are not there, so the allocation that would have gone over never
 * happens. Reservations are given back (srv_budget_give) when the memory
 * is freed or the request ends, whichever comes first. The budget itself
 * is a lock-free counter any thread may use.
 *
 * The estimates below say how many bytes an image job of a given size
 * may hold at its peak; they follow what server/inference.c allocates
 * (see the comment above srv_budget_image_bytes). */
#ifndef SRV_BUDGET_H
#define SRV_BUDGET_H

#include <stdatomic.h>

typedef struct {
    long long limit;          /* bytes; fixed at init */
    long long share_limit;    /* bytes one share may hold (<= limit); fixed at init */
    atomic_llong used;        /* bytes reserved now */
    atomic_llong peak;        /* most bytes reserved at once */
    atomic_ullong refusals;   /* takes refused */
} srv_budget;

/* One client's part of a budget: what the client's requests hold of it,
 * at most the budget's share_limit, so that no one client can hold the
 * whole budget (clients.h says who a client is). */
typedef struct {
    atomic_llong used;
} srv_budget_share;

/* Sets up b with a limit of limit bytes, of which one share may hold
 * share_limit (at most limit), nothing reserved. */
void srv_budget_init(srv_budget *b, long long limit, long long share_limit);

/* Reserves bytes (>= 0) when used + bytes stays within the limit.
 * Returns 0 when granted, -1 when refused (nothing reserved then). */
int srv_budget_take(srv_budget *b, long long bytes);

/* Gives back bytes reserved earlier (>= 0). */
void srv_budget_give(srv_budget *b, long long bytes);

/* srv_budget_take and srv_budget_give on behalf of share (NULL: none),
 * whose part must stay within share_limit too. A refusal because of the
 * share counts as a refusal. */
int srv_budget_take_share(srv_budget *b, srv_budget_share *share, long long bytes);
void srv_budget_give_share(srv_budget *b, srv_budget_share *share, long long bytes);

/* The most one request of share (NULL: none) could ever be granted: the
 * whole limit, or the share limit. */
long long srv_budget_most(const srv_budget *b, const srv_budget_share *share);

long long srv_budget_used(srv_budget *b);
long long srv_budget_peak(srv_budget *b);
unsigned long long srv_budget_refusals(srv_budget *b);

/* Sets the C library's allocator to hand large blocks back to the system
 * as soon as they are freed (glibc: a fixed mmap threshold, so bodies,
 * images and planes are mapped and unmapped one by one, and a trim
 * threshold for the heap's top), so the resident size falls back after a
 * burst instead of staying at its peak. Call once at start-up. */
void srv_budget_malloc_policy(void);

/* What an image job does with its pixels. */
typedef enum {
    SRV_BUDGET_DENOISE, /* tiles and float planes, blended back */
    SRV_BUDGET_NOISE,   /* one float plane at a time */
} srv_budget_kind;

/* The most bytes a job of kind on a width x height image with channels
 * channels (1 to 4; 0 when not yet known: the worst case, 4) holds at
 * any one time, not counting its request body. The larger of:
 *   decoding  - the decoder's own buffers and the image it hands over:
 *               4 bytes per pixel and channel (a 16-bit source expanded,
 *               converted and copied);
 *   working   - denoise: the 8-bit image (tiles are cut from it) plus
 *               one float accumulator plane per colour channel;
 *               noise: the image plus one float plane;
 *   encoding  - the image plus the PNG being written, whose buffer
 *               doubles as it grows (twice the unfiltered size), plus
 *               zlib's state.
 * Returns -1 for a size outside 1..65535 per side. */
long long srv_budget_image_bytes(srv_budget_kind kind, int width, int height, int channels);

#endif
