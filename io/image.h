/* image.h - the image codec: decoding the images dae denoises into
 * dae_image (core/dae_image.h: 8-bit interleaved samples), encoding PNG,
 * and reading and writing image files.
 *
 * Decoding takes PNG through libpng (every colour type and bit depth,
 * palettes, tRNS transparency, Adam7 interlacing; the plain 8-bit ones
 * clients send most are inflated in one call and unfiltered in image.c,
 * with the same result, and anything odd about them left to libpng: see
 * img_png_decode_plain in img_codec.h), JPEG through
 * libjpeg-turbo (baseline and progressive; gray, RGB, CMYK), the first
 * frame of a GIF through giflib, and BMP, PNM (P5/P6) and TGA through
 * dae's own readers (io/img_*.c), which check every length before they
 * read. Every decoder checks the pixel count announced by the header
 * against a caller's limit before it allocates anything, so a small file
 * claiming a huge image (a decompression bomb) costs nothing. A decoder
 * either writes every byte of the image it returns or fails: corrupt or
 * truncated input (including what libjpeg only warns about) gives an
 * error, never a crash and never memory the decoder did not write.
 *
 * Encoding writes 8-bit PNG, the one PNG writer of the CLI and the server.
 * Small images (at most DAE_PNG_STORED_MAX bytes of filtered scanlines:
 * 28x28 digits, up to about 255x255 gray or 147x147 RGB) are written
 * directly as one stored (uncompressed) deflate block: a few hundred bytes
 * larger than compressed, but with no zlib or libpng state to set up,
 * which would cost several times the network's own forward pass on a
 * 28x28 image. Larger images go through libpng at the caller's zlib level.
 *
 * Files go through io/fileio.h: whole reads with a size limit, atomic
 * writes.
 *
 * Nothing here keeps state between calls; every function may run on any
 * thread at once. */
#ifndef DAE_IMAGE_H
#define DAE_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "dae_image.h"
#include "dae_status.h"

/* The pixel limit used when a caller passes 0: 16 megapixels (4096x4096).
 * Whatever the limit, no side may exceed DAE_IMAGE_MAX_SIDE. */
#define DAE_IMAGE_MAX_PIXELS ((size_t)16777216)

/* Largest filtered image (height * (1 + width * channels) bytes) that
 * dae_image_encode_png writes as one stored deflate block. */
#define DAE_PNG_STORED_MAX 65535

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
 * that the caller frees: *out and *out_len. Images of at most
 * DAE_PNG_STORED_MAX filtered bytes are written stored (see above);
 * larger ones through libpng with compression as zlib's level (0 to 9; -1
 * for zlib's default), which is checked for every image. On failure *out
 * is NULL and err says why (DAE_ERR_INVALID for a bad image or level,
 * DAE_ERR_NOMEM). */
dae_status dae_image_encode_png(const dae_image *img, int compression, uint8_t **out,
                                size_t *out_len, char *err, size_t errlen);

/* ------------------------------------------------------------ files */

/* dae_file_read (at most max_bytes) + dae_image_decode; messages
 * start with the path. */
dae_status dae_image_load(const char *path, size_t max_bytes, size_t max_pixels, dae_image *out,
                          char *err, size_t errlen);

/* dae_image_encode_png + dae_file_write_atomic; messages start with the
 * path. Nothing is written to path on failure. */
dae_status dae_image_save_png(const char *path, const dae_image *img, char *err, size_t errlen);

#endif
