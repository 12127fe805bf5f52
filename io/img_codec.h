/* img_codec.h - the per-format decoders behind image.c, internal to
 * libdae-io: JPEG (libjpeg-turbo), GIF (giflib), and dae's own BMP, PNM and
 * TGA readers, plus the two helpers they share.
 *
 * Every decoder follows one contract. probe reads the header only and
 * sets the size. decode checks the header's size against max_pixels with
 * img_check_size before it allocates any pixel memory, then either writes
 * every byte of out->pixels (allocated with img_pixels_alloc) and returns
 * DAE_OK, or frees what it took, leaves *out zeroed and fails: truncated
 * or corrupt input is DAE_ERR_FORMAT with a message that starts with the
 * format's name. buf holds len bytes, already identified as the format. */
#ifndef DAE_IMG_CODEC_H
#define DAE_IMG_CODEC_H

#include <stddef.h>
#include <stdint.h>

#include "image.h"

/* Fails unless a width x height image is within DAE_IMAGE_MAX_SIDE and
 * max_pixels (0 meaning DAE_IMAGE_MAX_PIXELS): DAE_ERR_FORMAT for an empty
 * size, DAE_ERR_INVALID for one over a limit. */
dae_status img_check_size(long long width, long long height, size_t max_pixels, char *err, size_t errlen);

/* Allocates n bytes (at least 1) for decoded pixels; NULL when out of
 * memory. The caller frees it. Built with -DDAE_IMAGE_FILL_CHECK (the
 * fuzzers), the bytes are set to dae_image_fill_byte, so that decoding the
 * same input with two different fill bytes shows any byte a decoder did
 * not write. */
uint8_t *img_pixels_alloc(size_t n);

#ifdef DAE_IMAGE_FILL_CHECK
extern int dae_image_fill_byte;
#endif

/* The PNGs clients send most: 8 bits a sample, not interlaced, no
 * palette and no tRNS (gray, gray + alpha, RGB, RGBA), whose only chunks
 * besides IHDR, the IDATs and IEND are ancillary. Their IDATs are
 * inflated in one call and the rows unfiltered here, where libpng
 * inflates a row per call on zlib's slow path and sets up its own state
 * (6.5 us of a 28x28 digit's decode). Returns 1 with *out decoded (the
 * samples libpng gives); 0, with nothing allocated, for any other PNG and
 * for anything amiss (a zlib stream short or long, a bad filter byte), which
 * libpng then decodes or names. Expects the CRCs checked. */
int img_png_decode_plain(const uint8_t *buf, size_t len, size_t max_pixels, dae_image *out);

dae_status img_jpeg_probe(const uint8_t *buf, size_t len, int *width, int *height, char *err, size_t errlen);
dae_status img_jpeg_decode(const uint8_t *buf, size_t len, size_t max_pixels, dae_image *out,
                           char *err, size_t errlen);

dae_status img_gif_probe(const uint8_t *buf, size_t len, int *width, int *height, char *err, size_t errlen);
dae_status img_gif_decode(const uint8_t *buf, size_t len, size_t max_pixels, dae_image *out,
                          char *err, size_t errlen);

dae_status img_bmp_probe(const uint8_t *buf, size_t len, int *width, int *height, char *err, size_t errlen);
dae_status img_bmp_decode(const uint8_t *buf, size_t len, size_t max_pixels, dae_image *out,
                          char *err, size_t errlen);

dae_status img_pnm_probe(const uint8_t *buf, size_t len, int *width, int *height, char *err, size_t errlen);
dae_status img_pnm_decode(const uint8_t *buf, size_t len, size_t max_pixels, dae_image *out,
                          char *err, size_t errlen);

/* Returns 1 when buf starts with a plausible TGA header (TGA has no magic
 * number: image type, colour-map fields, size and depth are judged). */
int img_tga_test(const uint8_t *buf, size_t len);
dae_status img_tga_probe(const uint8_t *buf, size_t len, int *width, int *height, char *err, size_t errlen);
dae_status img_tga_decode(const uint8_t *buf, size_t len, size_t max_pixels, dae_image *out,
                          char *err, size_t errlen);

#endif
