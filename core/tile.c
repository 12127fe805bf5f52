/* tile.c - overlapping tiles over planes of any size: the tile grid, the
 * blend windows, extraction with mirror padding, weighted accumulation,
 * the denoising pipeline over the colour channels of an 8-bit image, and
 * whole-plane and whole-image denoising. Choices are explained in
 * tile.h. */
#include "tile.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "hot.h"
#include "infer.h"
#include "pages.h"

/* Largest batch of tiles dae_denoise_plane and dae_denoise_image gather
 * before a forward pass. */
enum { MAX_CHUNK = 4096 };

/* Maps coordinate i (any integer) into [0, n) by mirror reflection
 * without repeating the edge pixel; n == 1 maps everything to 0. */
static int reflect(int i, int n) {
    if (n == 1) return 0;
    int period = 2 * (n - 1);
    i %= period;
    if (i < 0) i += period;
    return i < n ? i : period - i;
}

/* Tiles along an axis of n pixels for tile size t and stride s. */
static int axis_count(int n, int t, int s) {
    if (n <= t) return 1;
    return (n - t + s - 1) / s + 1;
}

/* Origin of tile k along an axis: centred when the axis is shorter than
 * the tile, else spread evenly (rounded) from 0 to n - t, so consecutive
 * tiles are at most the stride apart and the last one ends at the border. */
static int axis_origin(int k, int count, int n, int t) {
    if (n <= t) return -((t - n) / 2);
    if (count == 1) return 0;
    long long span = n - t, gaps = count - 1;
    return (int)((k * span + gaps / 2) / gaps);
}

/* Fills the window (t values) of an axis with count tiles, and inv (n
 * values) with 1 / the total weight at each pixel. */
static void axis_weights(int n, int t, int count, float *win, float *inv) {
    for (int i = 0; i < t; i++) {
        if (count == 1) {
            win[i] = 1.0f;
        } else {
            double w = 0.5 - 0.5 * cos(2.0 * M_PI * (i + 0.5) / t);
            win[i] = w > DAE_TILE_WINDOW_FLOOR ? (float)w : DAE_TILE_WINDOW_FLOOR;
        }
    }
    for (int x = 0; x < n; x++) inv[x] = 0.0f;
    for (int k = 0; k < count; k++) {
        int o = axis_origin(k, count, n, t);
        for (int i = 0; i < t; i++)
            if (o + i >= 0 && o + i < n) inv[o + i] += win[i];
    }
    for (int x = 0; x < n; x++) inv[x] = 1.0f / inv[x]; /* exactly 1 with one tile */
}

dae_status dae_denoise_check_model(const dae_model *m, const char *model, char *err, size_t errlen) {
    if (m->in_c == 1) return DAE_OK;
    return dae_fail(err, errlen, DAE_ERR_INVALID,
                    "%s: the model takes %d-channel input; denoising needs a single-channel model", model, m->in_c);
}

dae_status dae_tile_plan_init(dae_tile_plan *p, const dae_model *m, int width, int height,
                              char *err, size_t errlen) {
    memset(p, 0, sizeof *p);
    if (m->in_c != 1 || m->in_h < 1 || m->in_w < 1)
        return dae_fail(err, errlen, DAE_ERR_INVALID,
                        "tiling needs a model with a single-channel input, not %dx%dx%d", m->in_c, m->in_h,
                        m->in_w);
    if (width < 1 || height < 1 || width > DAE_IMAGE_MAX_SIDE || height > DAE_IMAGE_MAX_SIDE)
        return dae_fail(err, errlen, DAE_ERR_INVALID, "plane size %dx%d is outside 1..%d", width, height,
                        DAE_IMAGE_MAX_SIDE);
    p->width = width, p->height = height;
    p->tile_w = m->in_w, p->tile_h = m->in_h;
    p->stride_x = p->tile_w / 2 > 0 ? p->tile_w / 2 : 1;
    p->stride_y = p->tile_h / 2 > 0 ? p->tile_h / 2 : 1;
    p->cols = axis_count(width, p->tile_w, p->stride_x);
    p->rows = axis_count(height, p->tile_h, p->stride_y);
    long long count = (long long)p->cols * p->rows;
    if (count > 0x7fffffffLL) {
        memset(p, 0, sizeof *p);
        return dae_fail(err, errlen, DAE_ERR_INVALID, "plane %dx%d needs too many tiles", width, height);
    }
    p->count = (int)count;
    size_t floats = (size_t)p->tile_w + (size_t)p->tile_h + (size_t)width + (size_t)height;
    p->buffer_ = malloc(sizeof(float) * floats);
    if (p->buffer_ == NULL) {
        memset(p, 0, sizeof *p);
        return dae_fail(err, errlen, DAE_ERR_NOMEM, "out of memory for the tiles of a %dx%d plane", width,
                        height);
    }
    p->win_x = p->buffer_;
    p->win_y = p->win_x + p->tile_w;
    p->inv_x = p->win_y + p->tile_h;
    p->inv_y = p->inv_x + width;
    axis_weights(width, p->tile_w, p->cols, p->win_x, p->inv_x);
    axis_weights(height, p->tile_h, p->rows, p->win_y, p->inv_y);
    return DAE_OK;
}

void dae_tile_plan_free(dae_tile_plan *p) {
    if (p == NULL) return;
    free(p->buffer_);
    memset(p, 0, sizeof *p);
}

void dae_tile_origin(const dae_tile_plan *p, int index, int *x, int *y) {
    *x = axis_origin(index % p->cols, p->cols, p->width, p->tile_w);
    *y = axis_origin(index / p->cols, p->rows, p->height, p->tile_h);
}

void dae_tile_extract(const dae_tile_plan *p, const float *plane, int first, int n, float *tiles) {
    const int tw = p->tile_w, th = p->tile_h, w = p->width, h = p->height;
    for (int k = 0; k < n; k++) {
        int ox, oy;
        dae_tile_origin(p, first + k, &ox, &oy);
        float *dst = tiles + (size_t)k * (size_t)tw * (size_t)th;
        int inside_x = ox >= 0 && ox + tw <= w;
        for (int ty = 0; ty < th; ty++) {
            const float *src = plane + (size_t)reflect(oy + ty, h) * (size_t)w;
            float *row = dst + (size_t)ty * (size_t)tw;
            if (inside_x) {
                memcpy(row, src + ox, sizeof(float) * (size_t)tw);
            } else {
                for (int tx = 0; tx < tw; tx++) row[tx] = src[reflect(ox + tx, w)];
            }
        }
    }
}

HOT void dae_tile_extract_u8(const dae_tile_plan *p, const uint8_t *pixels, int channels, int c, int first, int n,
                         float *tiles) {
    const int tw = p->tile_w, th = p->tile_h, w = p->width, h = p->height;
    const size_t ch = (size_t)channels;
    for (int k = 0; k < n; k++) {
        int ox, oy;
        dae_tile_origin(p, first + k, &ox, &oy);
        float *dst = tiles + (size_t)k * (size_t)tw * (size_t)th;
        int inside_x = ox >= 0 && ox + tw <= w;
        for (int ty = 0; ty < th; ty++) {
            const uint8_t *src = pixels + (size_t)reflect(oy + ty, h) * (size_t)w * ch + (size_t)c;
            float *row = dst + (size_t)ty * (size_t)tw;
            if (inside_x && ch == 1) { /* gray: consecutive samples, which vectorises */
                const uint8_t *s = src + ox;
                for (int tx = 0; tx < tw; tx++) row[tx] = s[tx] * (1.0f / 255.0f);
            } else if (inside_x) {
                const uint8_t *s = src + (size_t)ox * ch;
                for (int tx = 0; tx < tw; tx++) row[tx] = s[(size_t)tx * ch] * (1.0f / 255.0f);
            } else {
                for (int tx = 0; tx < tw; tx++) row[tx] = src[(size_t)reflect(ox + tx, w) * ch] * (1.0f / 255.0f);
            }
        }
    }
}

void dae_tile_accumulate(const dae_tile_plan *p, const float *outputs, int first, int n, float *acc) {
    const int tw = p->tile_w, th = p->tile_h, w = p->width, h = p->height;
    for (int k = 0; k < n; k++) {
        int ox, oy;
        dae_tile_origin(p, first + k, &ox, &oy);
        const float *src = outputs + (size_t)k * (size_t)tw * (size_t)th;
        /* The part of the tile inside the plane. */
        int x_lo = ox < 0 ? -ox : 0, x_hi = ox + tw > w ? w - ox : tw;
        int y_lo = oy < 0 ? -oy : 0, y_hi = oy + th > h ? h - oy : th;
        for (int ty = y_lo; ty < y_hi; ty++) {
            const float wy = p->win_y[ty];
            const float *s = src + (size_t)ty * (size_t)tw;
            float *d = acc + (size_t)(oy + ty) * (size_t)w + ox;
            for (int tx = x_lo; tx < x_hi; tx++) d[tx] += (wy * p->win_x[tx]) * s[tx];
        }
    }
}

void dae_tile_finish(const dae_tile_plan *p, float *acc) {
    for (int y = 0; y < p->height; y++) {
        float *row = acc + (size_t)y * (size_t)p->width;
        const float iy = p->inv_y[y];
        for (int x = 0; x < p->width; x++) row[x] *= iy * p->inv_x[x];
    }
}

/* ------------------------------------------------------------ the pipeline */

dae_status dae_denoise_begin(dae_denoise_pipe *p, const dae_model *m, dae_image *img, char *err, size_t errlen) {
    memset(p, 0, sizeof *p);
    dae_status st = dae_tile_plan_init(&p->plan, m, img->width, img->height, err, errlen);
    if (st != DAE_OK) return st;
    p->img = img;
    p->colours = dae_image_colours(img->channels);
    p->tiles = p->colours * p->plan.count;
    size_t acc_bytes = sizeof(float) * (size_t)img->width * (size_t)img->height * (size_t)p->colours;
    p->acc = malloc(acc_bytes);
    if (p->acc == NULL) {
        dae_denoise_free(p);
        return dae_fail(err, errlen, DAE_ERR_NOMEM, "out of memory for the image's planes");
    }
    dae_prefault(p->acc, acc_bytes); /* 4 MB for 1000x1000 gray: 977 of its 1,749 faults */
    memset(p->acc, 0, acc_bytes);
    return DAE_OK;
}

/* How many of the n tiles from pipeline index first lie in its channel,
 * which *c is set to, starting at tile *t of that channel's plane. */
static int channel_span(const dae_denoise_pipe *p, int first, int n, int *c, int *t) {
    *c = first / p->plan.count;
    *t = first % p->plan.count;
    return p->plan.count - *t < n ? p->plan.count - *t : n;
}

void dae_denoise_extract(const dae_denoise_pipe *p, int first, int n, float *tiles) {
    const size_t tile = (size_t)p->plan.tile_w * (size_t)p->plan.tile_h;
    while (n > 0) {
        int c, t, k = channel_span(p, first, n, &c, &t);
        dae_tile_extract_u8(&p->plan, p->img->pixels, p->img->channels, c, t, k, tiles);
        tiles += (size_t)k * tile;
        first += k, n -= k;
    }
}

void dae_denoise_accumulate(dae_denoise_pipe *p, int first, int n, const float *outputs) {
    const size_t tile = (size_t)p->plan.tile_w * (size_t)p->plan.tile_h;
    const size_t plane = (size_t)p->plan.width * (size_t)p->plan.height;
    while (n > 0) {
        int c, t, k = channel_span(p, first, n, &c, &t);
        dae_tile_accumulate(&p->plan, outputs, t, k, p->acc + (size_t)c * plane);
        outputs += (size_t)k * tile;
        first += k, n -= k;
    }
}

void dae_denoise_finish(dae_denoise_pipe *p) {
    const size_t plane = (size_t)p->plan.width * (size_t)p->plan.height;
    for (int c = 0; c < p->colours; c++) {
        float *acc = p->acc + (size_t)c * plane;
        dae_tile_finish(&p->plan, acc);
        dae_image_from_plane(p->img, c, acc);
    }
    free(p->acc); /* a caller encoding the image next has the memory back */
    p->acc = NULL;
    dae_tile_plan_free(&p->plan);
}

void dae_denoise_free(dae_denoise_pipe *p) {
    if (p == NULL) return;
    free(p->acc);
    dae_tile_plan_free(&p->plan);
    memset(p, 0, sizeof *p);
}

/* ------------------------------------------------------------ convenience */

/* Runs batches of tiles through a model for the convenience functions:
 * on pool's threads, or on the calling thread with workspaces[0]. */
typedef struct {
    const dae_model *m;
    dae_pool *pool;
    dae_workspace *const *workspaces;
    int per_thread;              /* tiles a workspace takes in one pass */
    int chunk;                   /* tiles gathered for one batch */
    float *tiles_in, *tiles_out; /* chunk tiles each */
} batcher;

/* Sizes b's batches for planes of count tiles and allocates its buffers.
 * Fails with DAE_ERR_NOMEM (b then owns nothing). */
static dae_status batcher_init(batcher *b, const dae_model *m, dae_pool *pool, dae_workspace *const *workspaces,
                               int count, char *err, size_t errlen) {
    b->m = m, b->pool = pool, b->workspaces = workspaces;
    int threads = pool != NULL ? dae_pool_size(pool) : 1;
    b->per_thread = dae_workspace_max_batch(workspaces[0]);
    for (int t = 1; t < threads; t++)
        if (dae_workspace_max_batch(workspaces[t]) < b->per_thread) b->per_thread = dae_workspace_max_batch(workspaces[t]);
    if (b->per_thread < 1) b->per_thread = 1;
    long long want = (long long)b->per_thread * threads;
    b->chunk = want < count ? (int)want : count;
    if (b->chunk > MAX_CHUNK) b->chunk = MAX_CHUNK;
    size_t tile = (size_t)m->in_h * (size_t)m->in_w;
    b->tiles_in = malloc(sizeof(float) * tile * (size_t)b->chunk);
    b->tiles_out = malloc(sizeof(float) * tile * (size_t)b->chunk);
    if (b->tiles_in == NULL || b->tiles_out == NULL) {
        free(b->tiles_in);
        free(b->tiles_out);
        b->tiles_in = b->tiles_out = NULL;
        return dae_fail(err, errlen, DAE_ERR_NOMEM, "out of memory for a batch of %d tiles", b->chunk);
    }
    return DAE_OK;
}

/* One batch: the model's outputs for the first n (at most chunk) tiles of
 * b->tiles_in into b->tiles_out. */
static void batcher_forward(batcher *b, int n) {
    if (b->pool != NULL) {
        dae_forward_parallel(b->m, b->pool, b->workspaces, b->tiles_in, b->tiles_out, n);
        return;
    }
    size_t tile = (size_t)b->m->in_h * (size_t)b->m->in_w;
    for (int i = 0; i < n; i += b->per_thread) {
        int nb = n - i < b->per_thread ? n - i : b->per_thread;
        dae_model_forward(b->m, b->workspaces[0], b->tiles_in + (size_t)i * tile, b->tiles_out + (size_t)i * tile,
                          nb);
    }
}

static void batcher_free(batcher *b) {
    free(b->tiles_in);
    free(b->tiles_out);
}

dae_status dae_denoise_plane(const dae_model *m, dae_pool *pool, dae_workspace *const *workspaces,
                             const float *in, float *out, int width, int height, char *err, size_t errlen) {
    dae_tile_plan plan;
    dae_status st = dae_tile_plan_init(&plan, m, width, height, err, errlen);
    if (st != DAE_OK) return st;
    batcher b;
    if ((st = batcher_init(&b, m, pool, workspaces, plan.count, err, errlen)) != DAE_OK) {
        dae_tile_plan_free(&plan);
        return st;
    }
    memset(out, 0, sizeof(float) * (size_t)width * (size_t)height);
    for (int first = 0; first < plan.count; first += b.chunk) {
        int n = plan.count - first < b.chunk ? plan.count - first : b.chunk;
        dae_tile_extract(&plan, in, first, n, b.tiles_in);
        batcher_forward(&b, n);
        dae_tile_accumulate(&plan, b.tiles_out, first, n, out);
    }
    dae_tile_finish(&plan, out);
    batcher_free(&b);
    dae_tile_plan_free(&plan);
    return DAE_OK;
}

dae_status dae_denoise_image(const dae_model *m, dae_pool *pool, dae_workspace *const *workspaces,
                             const dae_image *in, dae_image *out, char *err, size_t errlen) {
    dae_status st = dae_image_alloc(out, in->width, in->height, in->channels, err, errlen);
    if (st != DAE_OK) return st;
    /* Denoised in place over a copy, which also carries alpha over. */
    memcpy(out->pixels, in->pixels, (size_t)in->width * (size_t)in->height * (size_t)in->channels);
    dae_denoise_pipe pipe;
    batcher b = {0};
    st = dae_denoise_begin(&pipe, m, out, err, errlen);
    if (st == DAE_OK) st = batcher_init(&b, m, pool, workspaces, pipe.plan.count, err, errlen);
    if (st == DAE_OK) {
        int n;
        for (int first = 0; first < pipe.tiles; first += n) {
            /* A batch never spans two channels: the batches of a gray plane. */
            int plane_end = (first / pipe.plan.count + 1) * pipe.plan.count;
            n = plane_end - first < b.chunk ? plane_end - first : b.chunk;
            dae_denoise_extract(&pipe, first, n, b.tiles_in);
            batcher_forward(&b, n);
            dae_denoise_accumulate(&pipe, first, n, b.tiles_out);
        }
        dae_denoise_finish(&pipe);
    }
    batcher_free(&b);
    dae_denoise_free(&pipe);
    if (st != DAE_OK) dae_image_free(out);
    return st;
}
