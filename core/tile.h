/* tile.h - denoising images of any size with a model of fixed input size
 * (28x28 for the reference network) by overlapping tiles and blending.
 *
 * A plane (one float channel, values in [0, 1], row-major) is covered by a
 * grid of tiles of the model's input size T (tile_w x tile_h):
 *
 * - Stride at most T/2 (14 for 28) along an axis longer than T: every
 *   pixel away from the image border lies in the central half of some
 *   tile, where the network sees context on all sides, instead of only
 *   near a tile edge, where its zero padding and the missing context hurt
 *   most. It costs about 4 forward passes per pixel area (vs ~2 at stride
 *   T-8); at about 0.7 MMAC a tile that still denoises a megapixel in well
 *   under a second. The ceil((n-T)/(T/2)) + 1 tile origins are spread
 *   evenly from 0 to n-T (rounded), so tiles never leave the image, no
 *   gap is wider than T/2 (an end-aligned last tile would leave one tile
 *   barely overlapping its neighbour), and a side of exactly T is exactly
 *   one tile.
 * - An axis shorter than T is one tile, centred, the missing pixels filled
 *   by mirror reflection (..., 2, 1, | 0, 1, 2, ..., n-1, | n-2, ...; a side
 *   of 1 repeats its pixel). Reflection keeps the local statistics of the
 *   image and its noise, where zero padding would add a hard edge and
 *   replication would smear single noisy pixels into streaks.
 * - Blending: along an axis with several tiles, each tile's output is
 *   weighted by a Hann window sampled at pixel centres,
 *   w(t) = 0.5 - 0.5 cos(2 pi (t + 0.5) / T), floored at 1e-3 so every pixel
 *   has weight; at stride T/2 these windows sum to about 1, so seams vanish
 *   and tile edges count least. An axis with one tile has weight 1. The 2-D
 *   weight is the product; the result is the weighted sum divided by the
 *   total weight at each pixel (precomputed per row and column, since the
 *   grid is a product grid). A T x T image is thus one tile, weight 1,
 *   whose output is bit-identical to dae_model_forward on that image.
 *
 * The plan functions let a caller batch tiles of several planes through
 * one forward pass: extract tiles into a batch buffer, run the model,
 * accumulate each plane's tiles back, finish. The denoising pipeline
 * (dae_denoise_begin ... dae_denoise_finish) does the same for every
 * colour channel of an 8-bit image: `dae denoise` (dae_denoise_image) is
 * a loop over it, and the server's batcher drives the same steps with
 * tiles of several requests in one forward pass. */
#ifndef DAE_TILE_H
#define DAE_TILE_H

#include "dae_status.h"
#include "dae_image.h"
#include "model.h"
#include "pool.h"

/* Smallest blend weight of a pixel within a tile. */
#define DAE_TILE_WINDOW_FLOOR 1e-3f

/* How one width x height plane is cut into tiles. */
typedef struct {
    int width, height;      /* the plane */
    int tile_w, tile_h;     /* the model's input */
    int stride_x, stride_y; /* largest step between tile origins (T/2) */
    int cols, rows;         /* tiles across and down */
    int count;              /* cols * rows; tile i is at column i % cols, row i / cols */
    float *win_x, *win_y;   /* blend weight of each tile column (tile_w) and row (tile_h) */
    float *inv_x, *inv_y;   /* 1 / total weight of each image column (width) and row (height) */
    float *buffer_;         /* owns the four arrays */
} dae_tile_plan;

/* Checks that m can denoise images: its input is one channel (images of
 * any channel count are denoised a channel at a time). Otherwise err says
 * so, naming the model (a path or a word for it). */
dae_status dae_denoise_check_model(const dae_model *m, const char *model, char *err, size_t errlen);

/* Plans the tiles of a width x height plane for model m (single-channel
 * input). Allocates O(width + height + tile) floats, owned by p until
 * dae_tile_plan_free. Fails with DAE_ERR_INVALID for a multi-channel
 * model or a size outside 1..DAE_IMAGE_MAX_SIDE, DAE_ERR_NOMEM; p is then
 * zeroed. */
dae_status dae_tile_plan_init(dae_tile_plan *p, const dae_model *m, int width, int height,
                              char *err, size_t errlen);

/* Frees what p owns and zeroes it; safe on a zeroed plan and on NULL. */
void dae_tile_plan_free(dae_tile_plan *p);

/* Sets *x, *y to the image coordinates of tile index's top-left pixel
 * (negative when an axis shorter than the tile is centred in it). */
void dae_tile_origin(const dae_tile_plan *p, int index, int *x, int *y);

/* Copies tiles [first, first + n) of plane (width x height floats) into
 * tiles (n x tile_h x tile_w floats, NCHW with C = 1), reflecting at the
 * borders where a tile sticks out. Allocates nothing. */
void dae_tile_extract(const dae_tile_plan *p, const float *plane, int first, int n, float *tiles);

/* The same tiles cut straight from channel c of an 8-bit image (width x
 * height pixels of channels interleaved bytes), each byte scaled by 1/255
 * exactly as dae_image_to_plane does, so the tiles are bit-identical to
 * dae_image_to_plane followed by dae_tile_extract - without the float
 * plane (4 bytes a pixel) that would need. Allocates nothing. */
void dae_tile_extract_u8(const dae_tile_plan *p, const uint8_t *pixels, int channels, int c, int first, int n,
                         float *tiles);

/* Adds the model's outputs for tiles [first, first + n) (n x tile_h x
 * tile_w floats), times their blend weights, into acc (width x height
 * floats, zeroed by the caller before the first tile). Pixels that fall
 * outside the plane are dropped. Allocates nothing. */
void dae_tile_accumulate(const dae_tile_plan *p, const float *outputs, int first, int n, float *acc);

/* Turns acc, once every tile has been accumulated, into the blended
 * plane in place (divides by the total weight of each pixel). */
void dae_tile_finish(const dae_tile_plan *p, float *acc);

/* Denoises one width x height plane: in and out (width x height floats
 * each, in [0, 1], not overlapping). Runs batches of tiles through m on
 * pool's threads with workspaces[thread] (made for m; batches are chunked
 * to each workspace's max batch), or on the calling thread with
 * workspaces[0] when pool is NULL. Callers with a pool of more than one
 * thread should call dae_gemm_single_threaded() first. out is a convex
 * combination of model outputs, so it lies in [0, 1] for a model ending in
 * a sigmoid. Allocates scratch for one call (a batch of tiles and the
 * plan); fails with DAE_ERR_INVALID or DAE_ERR_NOMEM (out is then
 * unspecified). */
dae_status dae_denoise_plane(const dae_model *m, dae_pool *pool, dae_workspace *const *workspaces,
                             const float *in, float *out, int width, int height, char *err, size_t errlen);

/* ------------------------------------------------------------ the pipeline */

/* Denoising one 8-bit image in place, in steps a caller can batch: gray
 * is one plane; R, G and B are denoised independently as gray planes;
 * alpha passes through untouched. Tile index i (0 <= i < tiles) is tile
 * i % plan.count of colour channel i / plan.count. Tiles are cut straight
 * from the image's bytes (no float copy of it); the only float memory is
 * one accumulator plane per colour channel. Every tile must be
 * extracted before dae_denoise_finish writes the result over the image,
 * and a pixel's result depends on the order its tiles are accumulated in
 * (float addition is not associative): accumulating in tile order gives
 * the same bytes however the tiles were batched. */
typedef struct {
    dae_image *img;  /* borrowed: tiles are cut from it, the result is written into it */
    dae_tile_plan plan; /* the tiles of one plane */
    int colours;     /* channels denoised: all but alpha */
    int tiles;       /* colours * plan.count */
    float *acc;      /* colours planes of width * height: weighted sums of outputs */
} dae_denoise_pipe;

/* Starts denoising img (borrowed until dae_denoise_free) with model m:
 * plans the tiles and allocates the zeroed accumulator planes; p->tiles is
 * then the number of tiles to run. Fails with DAE_ERR_INVALID (see
 * dae_tile_plan_init) or DAE_ERR_NOMEM; p is then zeroed. */
dae_status dae_denoise_begin(dae_denoise_pipe *p, const dae_model *m, dae_image *img, char *err, size_t errlen);

/* Copies tiles [first, first + n) of the pipeline into tiles (n x tile_h
 * x tile_w floats), as dae_tile_extract_u8 does for each channel; the
 * range may span channels. Allocates nothing. */
void dae_denoise_extract(const dae_denoise_pipe *p, int first, int n, float *tiles);

/* Adds the model's outputs for tiles [first, first + n) into the
 * accumulator planes (see dae_tile_accumulate); the range may span
 * channels. Not thread-safe for one pipeline. Allocates nothing. */
void dae_denoise_accumulate(dae_denoise_pipe *p, int first, int n, const float *outputs);

/* Once every tile has been accumulated: blends each colour channel and
 * writes it into the image as 8-bit samples (alpha stays as it was), then
 * frees the pipeline's float memory; only dae_denoise_free remains. */
void dae_denoise_finish(dae_denoise_pipe *p);

/* Frees what p owns (not the image) and zeroes it; safe on a zeroed or
 * finished pipeline and on NULL. */
void dae_denoise_free(dae_denoise_pipe *p);

/* Denoises an image into *out, a new image of the same size and channels
 * (the caller frees it with dae_image_free), by running the pipeline over
 * a copy of in: batches of tiles, never spanning two channels, through m
 * as dae_denoise_plane does. Pool and workspaces as dae_denoise_plane.
 * On failure *out is zeroed. */
dae_status dae_denoise_image(const dae_model *m, dae_pool *pool, dae_workspace *const *workspaces,
                             const dae_image *in, dae_image *out, char *err, size_t errlen);

#endif
