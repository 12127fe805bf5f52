/* img_bmp.c - Windows and OS/2 BMP, uncompressed: 1/4/8-bit palette
 * images, 16- and 32-bit pixels with default or explicit bit fields
 * (BI_BITFIELDS, BI_ALPHABITFIELDS, V3/V4/V5 header masks), 24-bit BGR;
 * bottom-up or top-down (negative height). Run-length and embedded
 * JPEG/PNG compression are refused. The headers, the colour table and
 * every pixel row are checked to lie inside the buffer before anything is
 * read or allocated, so a short file fails instead of decoding garbage. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "img_codec.h"

enum { BMP_FILE_HEADER = 14 };

typedef struct {
    long long width, height; /* height > 0 after parsing; top_down says the order */
    int top_down, bpp, compression;
    unsigned hsz;
    size_t offset;           /* where the pixel rows start */
    size_t palette, entry;   /* colour table offset and entry size (3 or 4) */
    unsigned colours;        /* colour-table entries declared (0 = 2^bpp) */
    uint32_t mask[4];        /* R, G, B, A bit fields for 16/32-bit pixels */
} bmp_header;

static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static unsigned le16(const uint8_t *p) { return (unsigned)p[0] | (unsigned)p[1] << 8; }

/* Parses the file and DIB headers (and the bit fields that follow a
 * 40-byte header), checking that each lies inside the buffer. */
static dae_status bmp_parse(const uint8_t *buf, size_t len, bmp_header *h, char *err, size_t errlen) {
    memset(h, 0, sizeof *h);
    if (len < BMP_FILE_HEADER + 4)
        return dae_fail(err, errlen, DAE_ERR_FORMAT, "BMP: file is truncated in the header (%zu bytes)", len);
    h->offset = le32(buf + 10);
    h->hsz = le32(buf + 14);
    if (h->hsz != 12 && h->hsz != 40 && h->hsz != 52 && h->hsz != 56 && h->hsz != 108 && h->hsz != 124)
        return dae_fail(err, errlen, DAE_ERR_FORMAT, "BMP: unsupported header of %u bytes", h->hsz);
    size_t end = BMP_FILE_HEADER + (size_t)h->hsz;
    if (len < end)
        return dae_fail(err, errlen, DAE_ERR_FORMAT, "BMP: file is truncated in the header (%zu bytes)", len);
    const uint8_t *d = buf + BMP_FILE_HEADER;
    unsigned planes;
    if (h->hsz == 12) {
        h->width = le16(d + 4), h->height = le16(d + 6);
        planes = le16(d + 8), h->bpp = (int)le16(d + 10);
        h->entry = 3;
    } else {
        h->width = (int32_t)le32(d + 4), h->height = (int32_t)le32(d + 8);
        planes = le16(d + 12), h->bpp = (int)le16(d + 14);
        h->compression = (int)le32(d + 16);
        h->colours = le32(d + 32);
        h->entry = 4;
    }
    if (h->height < 0) h->height = -h->height, h->top_down = 1;
    if (planes != 1) return dae_fail(err, errlen, DAE_ERR_FORMAT, "BMP: %u planes, not 1", planes);
    int bpp = h->bpp;
    if (bpp != 1 && bpp != 4 && bpp != 8 && bpp != 16 && bpp != 24 && bpp != 32)
        return dae_fail(err, errlen, DAE_ERR_FORMAT, "BMP: unsupported depth of %d bits per pixel", bpp);
    int fields = h->compression == 3 || h->compression == 6;
    if (h->compression != 0 && !fields)
        return dae_fail(err, errlen, DAE_ERR_FORMAT,
                        "BMP: compression type %d (run-length, JPEG or PNG) is not supported", h->compression);
    if (fields && bpp != 16 && bpp != 32)
        return dae_fail(err, errlen, DAE_ERR_FORMAT, "BMP: bit fields on a %d-bit image", bpp);
    if (fields) {
        const uint8_t *m = d + 40; /* inside a 52+ byte header, or just after a 40-byte one */
        /* R, G, B, and A in a 56+ byte header or after a 40-byte one with
         * BI_ALPHABITFIELDS; a 52-byte header has room for three. */
        size_t n = h->hsz >= 56 || (h->hsz == 40 && h->compression == 6) ? 4 : 3;
        if (h->hsz == 40) {
            if (len - end < 4 * n)
                return dae_fail(err, errlen, DAE_ERR_FORMAT, "BMP: file is truncated in the bit fields");
            end += 4 * n;
        }
        for (size_t i = 0; i < n; i++) h->mask[i] = le32(m + 4 * i);
    } else if (bpp == 16) {
        h->mask[0] = 0x7c00, h->mask[1] = 0x03e0, h->mask[2] = 0x001f;
    } else if (bpp == 32) {
        h->mask[0] = 0xff0000, h->mask[1] = 0xff00, h->mask[2] = 0xff, h->mask[3] = 0xff000000u;
    }
    h->palette = end;
    return DAE_OK;
}

dae_status img_bmp_probe(const uint8_t *buf, size_t len, int *width, int *height, char *err, size_t errlen) {
    bmp_header h;
    dae_status st = bmp_parse(buf, len, &h, err, errlen);
    if (st != DAE_OK) return st;
    if (h.width < 1 || h.height < 1)
        return dae_fail(err, errlen, DAE_ERR_FORMAT, "BMP: image size %lldx%lld is empty", h.width, h.height);
    *width = h.width > INT32_MAX ? INT32_MAX : (int)h.width;
    *height = h.height > INT32_MAX ? INT32_MAX : (int)h.height;
    return DAE_OK;
}

/* One bit field: where it sits and how to scale it to 8 bits. */
typedef struct {
    uint32_t mask;
    int shift, bits;
} bmp_field;

/* Checks that mask is one contiguous run of bits and describes it. */
static int bmp_field_init(uint32_t mask, bmp_field *f) {
    f->mask = mask, f->shift = 0, f->bits = 0;
    if (mask == 0) return 1;
    while (!(mask >> f->shift & 1)) f->shift++;
    uint64_t run = (uint64_t)mask >> f->shift;
    while (run & 1) run >>= 1, f->bits++;
    return run == 0;
}

/* Extracts a field from pixel v, scaled to 0..255 (0 for an empty mask). */
static uint8_t bmp_field_get(const bmp_field *f, uint32_t v) {
    if (f->bits == 0) return 0;
    uint64_t x = (v & f->mask) >> f->shift;
    if (f->bits >= 8) return (uint8_t)(x >> (f->bits - 8));
    uint64_t max = ((uint64_t)1 << f->bits) - 1;
    return (uint8_t)((x * 255 + max / 2) / max);
}

dae_status img_bmp_decode(const uint8_t *buf, size_t len, size_t max_pixels, dae_image *out,
                          char *err, size_t errlen) {
    bmp_header h;
    dae_status st = bmp_parse(buf, len, &h, err, errlen);
    if (st != DAE_OK) return st;
    st = img_check_size(h.width, h.height, max_pixels, err, errlen);
    if (st != DAE_OK) return st;
    int w = (int)h.width, ht = (int)h.height, bpp = h.bpp;

    /* The colour table: the declared count (or 2^bpp), no more than fits
     * between the headers and the pixels, all of it inside the file. */
    uint8_t pal[256][3];
    unsigned colours = 0;
    if (bpp <= 8) {
        unsigned most = 1u << bpp;
        colours = h.colours == 0 || h.colours > most ? most : h.colours;
        if (h.offset > h.palette && (h.offset - h.palette) / h.entry < colours)
            colours = (unsigned)((h.offset - h.palette) / h.entry);
        if (colours == 0) return dae_fail(err, errlen, DAE_ERR_FORMAT, "BMP: the colour table is empty");
        if (h.palette > len || (len - h.palette) / h.entry < colours)
            return dae_fail(err, errlen, DAE_ERR_FORMAT, "BMP: file is truncated in the colour table");
        for (unsigned i = 0; i < colours; i++) {
            const uint8_t *e = buf + h.palette + (size_t)i * h.entry;
            pal[i][0] = e[2], pal[i][1] = e[1], pal[i][2] = e[0];
        }
    }

    bmp_field f[4];
    for (int i = 0; i < 4; i++)
        if (!bmp_field_init(h.mask[i], &f[i]))
            return dae_fail(err, errlen, DAE_ERR_FORMAT, "BMP: bit field mask 0x%08x is not contiguous",
                            (unsigned)h.mask[i]);
    int channels = (bpp == 16 || bpp == 32) && h.mask[3] != 0 ? 4 : 3;

    /* Every row is stored padded to 4 bytes; the last one may lack its padding. */
    size_t rowbytes = ((size_t)w * (size_t)bpp + 7) / 8;
    size_t stride = ((size_t)w * (size_t)bpp + 31) / 32 * 4;
    size_t avail = h.offset <= len ? len - h.offset : 0;
    if (h.offset > len || avail < rowbytes || (size_t)(ht - 1) > (avail - rowbytes) / stride)
        return dae_fail(err, errlen, DAE_ERR_FORMAT,
                        "BMP: file is truncated: the %dx%d header promises %zu bytes of pixels from offset %zu, "
                        "the file has %zu bytes",
                        w, ht, (size_t)(ht - 1) * stride + rowbytes, h.offset, len);

    size_t out_stride = (size_t)w * (size_t)channels;
    uint8_t *px = img_pixels_alloc(out_stride * (size_t)ht);
    if (px == NULL) return dae_fail(err, errlen, DAE_ERR_NOMEM, "BMP: out of memory for a %dx%d image", w, ht);
    uint32_t alpha_or = 0;
    for (int r = 0; r < ht; r++) {
        const uint8_t *s = buf + h.offset + (size_t)r * stride;
        uint8_t *o = px + (size_t)(h.top_down ? r : ht - 1 - r) * out_stride;
        for (int x = 0; x < w; x++, o += channels) {
            if (bpp <= 8) {
                unsigned per = 8u / (unsigned)bpp, bit = (unsigned)x % per;
                unsigned idx = s[(unsigned)x / per] >> (8 - bpp * (int)(bit + 1)) & ((1u << bpp) - 1);
                if (idx >= colours) {
                    free(px);
                    return dae_fail(err, errlen, DAE_ERR_FORMAT,
                                    "BMP: colour index %u is outside the %u-entry colour table", idx, colours);
                }
                memcpy(o, pal[idx], 3);
            } else if (bpp == 24) {
                const uint8_t *p = s + (size_t)x * 3;
                o[0] = p[2], o[1] = p[1], o[2] = p[0];
            } else {
                uint32_t v = bpp == 16 ? le16(s + (size_t)x * 2) : le32(s + (size_t)x * 4);
                for (int c = 0; c < channels; c++) o[c] = bmp_field_get(&f[c], v);
                if (channels == 4) alpha_or |= o[3];
            }
        }
    }
    /* An alpha field that is zero everywhere is unused, not transparent
     * (most 32-bit BMPs leave those bits 0): the image is opaque. */
    if (channels == 4 && alpha_or == 0)
        for (size_t i = 0; i < (size_t)w * (size_t)ht; i++) px[i * 4 + 3] = 255;
    out->width = w, out->height = ht, out->channels = channels;
    out->format = "BMP";
    out->pixels = px;
    return DAE_OK;
}
