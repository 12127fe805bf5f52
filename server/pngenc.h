/* pngenc.h - PNG encoding of response images.
 *
 * Small images (at most 65535 bytes of filtered scanlines: 28x28 digits,
 * up to about 255x255 gray or 147x147 RGB) are written directly as one
 * stored (uncompressed) deflate block: a handful of bytes larger than
 * compressed, but with no zlib or libpng state to set up, which would
 * cost several times the network's own forward pass on a 28x28 image.
 * Larger images go through libpng at the configured zlib level. */
#ifndef SRV_PNGENC_H
#define SRV_PNGENC_H

#include <stddef.h>
#include <stdint.h>

#include "dae_status.h"
#include "image.h"

/* Largest filtered image (height * (1 + width * channels) bytes) that is
 * written stored. */
#define SRV_PNG_STORED_MAX 65535

/* Encodes img (8-bit, 1 to 4 channels) as a PNG into a new malloc'd
 * buffer (*out, *out_len; the caller frees it). level is zlib's level for
 * large images. On failure *out is NULL and err says why. */
dae_status srv_png_encode(const dae_image *img, int level, uint8_t **out, size_t *out_len, char *err,
                          size_t errlen);

#endif
