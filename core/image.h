/* image.h - decoding and encoding of the images dae denoises, held in
 * memory as 8-bit interleaved samples.
 *
 * Decoding takes PNG through libpng (every colour type and bit depth,
 * palettes, tRNS transparency, Adam7 interlacing), JPEG through
 * libjpeg-turbo (baseline and progressive; gray, RGB, CMYK), the first
 * frame of a GIF through giflib, and BMP, PNM (P5/P6) and TGA through
 * dae's own readers (core/img_*.c), which check every length before they
 * read. Every decoder checks the pixel count announced by the header
 * against a caller's limit before it allocates anything, so a small file
 * claiming a huge image (a decompression bomb) costs nothing. A decoder
 * either writes every byte of the image it returns or fails: corrupt or
 * truncated input (including what libjpeg only warns about) gives an
 * error, never a crash and never memory the decoder did not write.
 * Encoding writes 8-bit PNG.
 *
 * Also here: reading a whole file into memory with a size limit, and
 * writing one atomically (temporary file + rename), so a failed write
 * never leaves a half-written output behind.
 *
 * Nothing here keeps state between calls; every function may run on any
 * thread at once. */
#ifndef DAE_IMAGE_H
#define DAE_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "dae_status.h"
#include "noise.h"

/* The pixel limit used when a caller passes 0: 16 megapixels (4096x4096). */
#define DAE_IMAGE_MAX_PIXELS ((size_t)16777216)

/* Largest side any decoder accepts, whatever the pixel limit. */
#define DAE_IMAGE_MAX_SIDE 1000000

/* A decoded image: height rows of width pixels of channels samples each,
 * interleaved (RGBARGBA...), top row first. channels is 1 (gray), 2 (gray +
 * alpha), 3 (RGB) or 4 (RGBA); the alpha sample is always the last one. */
typedef struct {
    int width, height, channels;
    int source_16bit;   /* the file had 16-bit samples, scaled to 8 bits here */
    const char *format; /* static name of the source format ("PNG", "JPEG", ...);
                           NULL for images built in memory */
    uint8_t *pixels;    /* owned: width * height * channels bytes */
} dae_image;

/* Allocates a zeroed width x height image of channels (1 to 4) samples per
 * pixel into *img, which the caller releases with dae_image_free(). Fails
 * with DAE_ERR_INVALID for a size outside 1..DAE_IMAGE_MAX_SIDE or a bad
 * channel count, DAE_ERR_NOMEM when out of memory; *img is then zeroed. */
dae_status dae_image_alloc(dae_image *img, int width, int height, int channels,
                           char *err, size_t errlen);

/* Releases the pixels and zeroes *img; safe on a zeroed or freed image and
 * on NULL. */
void dae_image_free(dae_image *img);

/* Returns the static name of the format buf holds, judged from its first
 * bytes ("PNG", "JPEG", "BMP", "GIF", "PNM", or "TGA" for a plausible
 * TGA header, which has no magic number), or NULL when it is none of
 * these. */
const char *dae_image_format_name(const uint8_t *buf, size_t len);

/* Reads only the header of the image in buf (len bytes) and sets *width
 * and *height; nothing proportional to the image is allocated or decoded,
 * so callers can reject an image over their pixel limit first. Fails with
 * DAE_ERR_FORMAT (err says why: not an image of a supported format,
 * truncated header, zero or absurd size). */
dae_status dae_image_probe(const uint8_t *buf, size_t len, int *width, int *height,
                           char *err, size_t errlen);

/* Decodes the image in buf (len bytes) into *out, converting every format
 * to 8-bit samples: gray and gray+alpha stay 1 and 2 channels, colour and
 * palette images become RGB or RGBA (RGBA when the file carries alpha or
 * tRNS transparency), 16-bit samples are scaled to 8 bits (and
 * out->source_16bit set). Only the first frame of a GIF is read. The
 * header's pixel count is checked against max_pixels (0 means
 * DAE_IMAGE_MAX_PIXELS) before any pixel memory is allocated. On success
 * the caller owns out->pixels (dae_image_free); on failure *out is zeroed
 * and err says what is wrong, e.g. "PNG: CRC error in IDAT" or "image is
 * 20000x20000 = 400000000 pixels, over the limit of 16777216". Returns
 * DAE_ERR_FORMAT for malformed input, DAE_ERR_INVALID for an image over
 * the limit, DAE_ERR_NOMEM. */
dae_status dae_image_decode(const uint8_t *buf, size_t len, size_t max_pixels, dae_image *out,
                            char *err, size_t errlen);

/* Encodes img (8-bit, 1 to 4 channels) as a PNG into a new malloc'd buffer
 * that the caller frees: *out and *out_len. compression is zlib's level
 * (0 to 9; -1 for zlib's default). On failure *out is NULL and err says
 * why (DAE_ERR_INVALID for a bad image, DAE_ERR_NOMEM). */
dae_status dae_image_encode_png(const dae_image *img, int compression, uint8_t **out,
                                size_t *out_len, char *err, size_t errlen);

/* Adds noise to every colour sample of img (not to alpha), in place: each
 * colour channel c becomes a float plane in [0, 1], gets
 * dae_noise_apply(spec, ..., seed, stream c), and is stored back clipped to
 * [0, 1] and rounded to 8 bits. Same image, spec and seed give the same
 * bytes. Fails only with DAE_ERR_NOMEM (img is then unchanged). */
dae_status dae_image_add_noise(dae_image *img, const dae_noise_spec *spec, uint64_t seed,
                               char *err, size_t errlen);

/* Copies colour or alpha channel c of img into plane (width * height
 * floats, row-major) as sample / 255. */
void dae_image_to_plane(const dae_image *img, int c, float *plane);

/* Stores plane (width * height floats) into channel c of img: each value
 * clipped to [0, 1] (NaN becomes 0), times 255, rounded to nearest. */
void dae_image_from_plane(dae_image *img, int c, const float *plane);

/* ------------------------------------------------------------ files */

/* dae_file_read (at most max_bytes) + dae_image_decode; messages
 * start with the path. */
dae_status dae_image_load(const char *path, size_t max_bytes, size_t max_pixels, dae_image *out,
                          char *err, size_t errlen);

/* dae_image_encode_png + dae_file_write_atomic; messages start with the
 * path. Nothing is written to path on failure. */
dae_status dae_image_save_png(const char *path, const dae_image *img, char *err, size_t errlen);

#endif
