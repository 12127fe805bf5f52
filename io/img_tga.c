/* img_tga.c - Truevision TGA: types 1 (colour-mapped), 2 (true colour),
 * 3 (gray) and their run-length encoded forms 9, 10, 11; 8/16-bit gray
 * (16 = gray + alpha), 15/16/24/32-bit colour, 8/16-bit indices into a
 * 15/16/24/32-bit (or 8-bit gray) colour map; bottom-up or top-down, left
 * or right origin. Every read is checked against the buffer: a file that
 * ends before its last pixel is an error, never a partly written image. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "img_codec.h"

enum { TGA_HEADER = 18 };

typedef struct {
    int id_len, cmap_type, type;
    int cmap_first, cmap_len, cmap_bits;
    int width, height, bpp, desc;
} tga_header;

static unsigned le16(const uint8_t *p) { return (unsigned)p[0] | (unsigned)p[1] << 8; }

/* Splits the 18-byte header into its fields; len must be >= 18. */
static void tga_fields(const uint8_t *b, tga_header *h) {
    h->id_len = b[0], h->cmap_type = b[1], h->type = b[2];
    h->cmap_first = (int)le16(b + 3), h->cmap_len = (int)le16(b + 5), h->cmap_bits = b[7];
    h->width = (int)le16(b + 12), h->height = (int)le16(b + 14);
    h->bpp = b[16], h->desc = b[17];
}

/* Returns 1 when the fields make a TGA dae reads (the same judgement as
 * stb_image's TGA test, which decided what dae called a TGA before). */
static int tga_valid(const tga_header *h) {
    if (h->cmap_type > 1) return 0;
    if (h->cmap_type == 1) {
        if (h->type != 1 && h->type != 9) return 0;
        if (h->cmap_bits != 8 && h->cmap_bits != 15 && h->cmap_bits != 16 && h->cmap_bits != 24 &&
            h->cmap_bits != 32)
            return 0;
        if (h->cmap_len < 1 || (h->bpp != 8 && h->bpp != 16)) return 0;
    } else {
        if (h->type != 2 && h->type != 3 && h->type != 10 && h->type != 11) return 0;
        int gray = h->type == 3 || h->type == 11;
        if (gray && h->bpp != 8 && h->bpp != 16) return 0;
        if (!gray && h->bpp != 15 && h->bpp != 16 && h->bpp != 24 && h->bpp != 32) return 0;
    }
    return h->width >= 1 && h->height >= 1;
}

int img_tga_test(const uint8_t *buf, size_t len) {
    if (buf == NULL || len < TGA_HEADER) return 0;
    tga_header h;
    tga_fields(buf, &h);
    return tga_valid(&h);
}

/* Reads and validates the header. */
static dae_status tga_parse(const uint8_t *buf, size_t len, tga_header *h, char *err, size_t errlen) {
    memset(h, 0, sizeof *h);
    if (len < TGA_HEADER)
        return dae_fail(err, errlen, DAE_ERR_FORMAT, "TGA: file is truncated in the header (%zu bytes)", len);
    tga_fields(buf, h);
    if (!tga_valid(h))
        return dae_fail(err, errlen, DAE_ERR_FORMAT, "TGA: unsupported image type %d, %d bits per pixel", h->type,
                        h->bpp);
    return DAE_OK;
}

dae_status img_tga_probe(const uint8_t *buf, size_t len, int *width, int *height, char *err, size_t errlen) {
    tga_header h;
    dae_status st = tga_parse(buf, len, &h, err, errlen);
    if (st != DAE_OK) return st;
    *width = h.width, *height = h.height;
    return DAE_OK;
}

/* Scales a 5-bit sample to 8 bits. */
static uint8_t five(unsigned v) { return (uint8_t)((v * 255u + 15u) / 31u); }

/* Converts one stored pixel of bits bits (gray says it is a gray image)
 * into channels output samples. */
static void tga_pixel(const uint8_t *s, int bits, int gray, uint8_t *o) {
    if (gray) {
        o[0] = s[0];
        if (bits == 16) o[1] = s[1];
    } else if (bits == 8) {
        o[0] = s[0];
    } else if (bits == 15 || bits == 16) {
        unsigned v = le16(s);
        o[0] = five(v >> 10 & 31), o[1] = five(v >> 5 & 31), o[2] = five(v & 31);
    } else {
        o[0] = s[2], o[1] = s[1], o[2] = s[0];
        if (bits == 32) o[3] = s[3];
    }
}

/* Output channels for a stored pixel (or colour-map entry) of bits bits. */
static int tga_channels(int bits, int gray) {
    if (gray) return bits == 16 ? 2 : 1;
    if (bits == 8) return 1;
    return bits == 32 ? 4 : 3;
}

dae_status img_tga_decode(const uint8_t *buf, size_t len, size_t max_pixels, dae_image *out,
                          char *err, size_t errlen) {
    tga_header h;
    dae_status st = tga_parse(buf, len, &h, err, errlen);
    if (st != DAE_OK) return st;
    st = img_check_size(h.width, h.height, max_pixels, err, errlen);
    if (st != DAE_OK) return st;

    int mapped = h.cmap_type == 1, rle = h.type >= 9, gray = h.type == 3 || h.type == 11;
    size_t pos = TGA_HEADER + (size_t)h.id_len;
    size_t entry = (size_t)(h.cmap_bits + 7) / 8, map_bytes = mapped ? (size_t)h.cmap_len * entry : 0;
    if (pos > len || map_bytes > len - pos)
        return dae_fail(err, errlen, DAE_ERR_FORMAT, "TGA: file is truncated before the colour map ends");
    const uint8_t *map = buf + pos;
    pos += map_bytes;

    int channels = mapped ? tga_channels(h.cmap_bits, 0) : tga_channels(h.bpp, gray);
    size_t psize = (size_t)(h.bpp + 7) / 8, n = (size_t)h.width * (size_t)h.height;
    if (!rle && n > (len - pos) / psize)
        return dae_fail(err, errlen, DAE_ERR_FORMAT,
                        "TGA: file is truncated: the %dx%d header promises %zu bytes of pixels, %zu are present",
                        h.width, h.height, n * psize, len - pos);
    uint8_t *px = img_pixels_alloc(n * (size_t)channels);
    if (px == NULL)
        return dae_fail(err, errlen, DAE_ERR_NOMEM, "TGA: out of memory for a %dx%d image", h.width, h.height);

    int top = (h.desc & 0x20) != 0, right = (h.desc & 0x10) != 0;
    size_t stride = (size_t)h.width * (size_t)channels;
    int x = 0, row = 0;
    size_t left = 0;  /* pixels left in the current RLE packet */
    int repeat = 0;   /* the packet repeats one stored pixel */
    const uint8_t *s = NULL;
    for (size_t i = 0; i < n; i++) {
        if (rle && left == 0) {
            if (pos >= len) goto truncated;
            repeat = buf[pos] & 0x80;
            left = (size_t)(buf[pos] & 0x7f) + 1;
            pos++;
            if (repeat) {
                if (psize > len - pos) goto truncated;
                s = buf + pos;
                pos += psize;
            }
        }
        if (!rle || !repeat) {
            if (psize > len - pos) goto truncated;
            s = buf + pos;
            pos += psize;
        }
        if (rle) left--;
        int y = top ? row : h.height - 1 - row;
        int xx = right ? h.width - 1 - x : x;
        uint8_t *o = px + (size_t)y * stride + (size_t)xx * (size_t)channels;
        if (mapped) {
            long index = (long)(h.bpp == 16 ? le16(s) : s[0]) - h.cmap_first;
            if (index < 0 || index >= h.cmap_len) {
                free(px);
                return dae_fail(err, errlen, DAE_ERR_FORMAT, "TGA: colour index %ld is outside the %d-entry map",
                                index + h.cmap_first, h.cmap_len);
            }
            tga_pixel(map + (size_t)index * entry, h.cmap_bits, 0, o);
        } else {
            tga_pixel(s, h.bpp, gray, o);
        }
        if (++x == h.width) x = 0, row++;
    }
    out->width = h.width, out->height = h.height, out->channels = channels;
    out->format = "TGA";
    out->pixels = px;
    return DAE_OK;

truncated:
    free(px);
    return dae_fail(err, errlen, DAE_ERR_FORMAT, "TGA: file is truncated in the run-length encoded pixels");
}
