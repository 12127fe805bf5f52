/* pngenc.c - PNG output: a direct writer with one stored deflate block for
 * small images, libpng for the rest. */
#include "pngenc.h"

#include <stdlib.h>
#include <string.h>

#include <zlib.h>

static void put32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

/* Writes the chunk header (length, type) at p; the caller writes the data
 * after it and then calls chunk_end. Returns the data's start. */
static uint8_t *chunk_begin(uint8_t *p, uint32_t len, const char type[4]) {
    put32(p, len);
    memcpy(p + 4, type, 4);
    return p + 8;
}

/* Writes the CRC of the chunk whose header starts at chunk (type + data)
 * and returns the position after it. */
static uint8_t *chunk_end(uint8_t *chunk, uint32_t len) {
    uLong crc = crc32(crc32(0L, Z_NULL, 0), chunk + 4, 4 + len);
    put32(chunk + 8 + len, (uint32_t)crc);
    return chunk + 12 + len;
}

/* The stored writer: signature, IHDR, one IDAT holding a zlib stream of a
 * single stored block, IEND. raw is the filtered size (<= 65535). */
static dae_status encode_stored(const dae_image *img, size_t raw, uint8_t **out, size_t *out_len, char *err,
                                size_t errlen) {
    static const uint8_t signature[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    static const uint8_t color_types[5] = {0, 0, 4, 2, 6};
    const uint32_t idat_len = (uint32_t)(2 + 5 + raw + 4);
    const size_t total = 8 + (12 + 13) + (12 + idat_len) + 12;
    uint8_t *buf = malloc(total);
    if (buf == NULL) return dae_fail(err, errlen, DAE_ERR_NOMEM, "PNG: out of memory");
    memcpy(buf, signature, 8);
    uint8_t *c = buf + 8, *d = chunk_begin(c, 13, "IHDR");
    put32(d, (uint32_t)img->width);
    put32(d + 4, (uint32_t)img->height);
    d[8] = 8, d[9] = color_types[img->channels], d[10] = 0, d[11] = 0, d[12] = 0;
    c = chunk_end(c, 13);
    d = chunk_begin(c, idat_len, "IDAT");
    d[0] = 0x78, d[1] = 0x01;                 /* deflate, 32K window, no dictionary, check bits */
    d[2] = 0x01;                              /* final block, stored */
    d[3] = (uint8_t)raw, d[4] = (uint8_t)(raw >> 8);
    d[5] = (uint8_t)~raw, d[6] = (uint8_t)(~raw >> 8);
    uint8_t *rows = d + 7;
    size_t stride = (size_t)img->width * (size_t)img->channels;
    for (int y = 0; y < img->height; y++) {
        uint8_t *row = rows + (size_t)y * (stride + 1);
        row[0] = 0;                           /* filter: none */
        memcpy(row + 1, img->pixels + (size_t)y * stride, stride);
    }
    put32(rows + raw, (uint32_t)adler32(adler32(0L, Z_NULL, 0), rows, (uInt)raw));
    c = chunk_end(c, idat_len);
    chunk_begin(c, 0, "IEND");
    chunk_end(c, 0);
    *out = buf;
    *out_len = total;
    return DAE_OK;
}

dae_status srv_png_encode(const dae_image *img, int level, uint8_t **out, size_t *out_len, char *err,
                          size_t errlen) {
    *out = NULL;
    *out_len = 0;
    if (img == NULL || img->pixels == NULL || img->width < 1 || img->height < 1 || img->channels < 1 ||
        img->channels > 4)
        return dae_fail(err, errlen, DAE_ERR_INVALID, "PNG: cannot encode an empty or malformed image");
    size_t raw = (size_t)img->height * (1 + (size_t)img->width * (size_t)img->channels);
    if (raw <= SRV_PNG_STORED_MAX) return encode_stored(img, raw, out, out_len, err, errlen);
    return dae_image_encode_png(img, level, out, out_len, err, errlen);
}
