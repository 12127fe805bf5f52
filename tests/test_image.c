/* test_image.c - image decoding and encoding: every PNG flavour (made here
 * with libpng), JPEG (made here with libjpeg), BMP, TGA, PNM and GIF
 * (written byte by byte), the committed fixtures of every format and
 * flavour (tests/fixtures/images, against the pictures they were made
 * from), malformed input (corrupt CRC, header-only files, every
 * truncation of every format, byte flips, text, empty, decompression
 * bombs, the hostile JPEGs of the fuzzing corpus), the PNG encoder, noise
 * on images and the file helpers. */
#include <criterion/criterion.h>
#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include <jpeglib.h>

#include "fileio.h"
#include "image.h"
#include "img_codec.h"
#include "rng.h"

/* ------------------------------------------------------------ helpers */

typedef struct {
    uint8_t *data;
    size_t len, cap;
} membuf;

static void membuf_put(membuf *b, const void *data, size_t n) {
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2 + 64;
        b->data = realloc(b->data, b->cap);
        cr_assert_not_null(b->data);
    }
    memcpy(b->data + b->len, data, n);
    b->len += n;
}

static void png_put(png_structp png, png_bytep d, size_t n) { membuf_put(png_get_io_ptr(png), d, n); }
static void png_nop_flush(png_structp png) { (void)png; }

/* Compresses w x h RGB pixels as a baseline JPEG of quality q with libjpeg;
 * the caller frees the buffer. */
static membuf make_jpeg(const uint8_t *rgb, int w, int h, int q) {
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr e;
    unsigned char *data = NULL;
    unsigned long len = 0;
    c.err = jpeg_std_error(&e);
    jpeg_create_compress(&c);
    jpeg_mem_dest(&c, &data, &len);
    c.image_width = (JDIMENSION)w, c.image_height = (JDIMENSION)h;
    c.input_components = 3, c.in_color_space = JCS_RGB;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, q, TRUE);
    jpeg_start_compress(&c, TRUE);
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = (JSAMPROW)(rgb + (size_t)c.next_scanline * (size_t)w * 3);
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    membuf b = {0};
    membuf_put(&b, data, len);
    free(data);
    return b;
}

static void put_le16(membuf *b, unsigned v) {
    uint8_t x[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    membuf_put(b, x, 2);
}

static void put_le32(membuf *b, uint32_t v) {
    uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    membuf_put(b, x, 4);
}

/* A bottom-up 24-bit BMP of w x h RGB pixels, rows padded to 4 bytes. */
static membuf make_bmp24(const uint8_t *rgb, int w, int h) {
    membuf b = {0};
    uint32_t stride = (uint32_t)(w * 3 + 3) & ~3u, size = stride * (uint32_t)h;
    membuf_put(&b, "BM", 2);
    put_le32(&b, 54 + size), put_le32(&b, 0), put_le32(&b, 54);
    put_le32(&b, 40), put_le32(&b, (uint32_t)w), put_le32(&b, (uint32_t)h);
    put_le16(&b, 1), put_le16(&b, 24);
    put_le32(&b, 0), put_le32(&b, size), put_le32(&b, 2835), put_le32(&b, 2835), put_le32(&b, 0), put_le32(&b, 0);
    for (int y = h - 1; y >= 0; y--) {
        for (int x = 0; x < w; x++) {
            const uint8_t *p = rgb + ((size_t)y * w + x) * 3;
            uint8_t bgr[3] = {p[2], p[1], p[0]};
            membuf_put(&b, bgr, 3);
        }
        static const uint8_t pad[3] = {0};
        membuf_put(&b, pad, stride - (uint32_t)w * 3);
    }
    return b;
}

/* An uncompressed 32-bit top-left TGA (type 2) of w x h RGBA pixels. */
static membuf make_tga32(const uint8_t *rgba, int w, int h) {
    membuf b = {0};
    uint8_t hdr[18] = {0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, (uint8_t)w, (uint8_t)(w >> 8),
                       (uint8_t)h, (uint8_t)(h >> 8), 32, 0x28};
    membuf_put(&b, hdr, 18);
    for (int i = 0; i < w * h; i++) {
        uint8_t bgra[4] = {rgba[4 * i + 2], rgba[4 * i + 1], rgba[4 * i], rgba[4 * i + 3]};
        membuf_put(&b, bgra, 4);
    }
    return b;
}

/* Reads tests/fixtures/images/name (the tests run from the repository's
 * top directory); the caller frees the buffer. */
static membuf fixture(const char *name) {
    char path[512];
    snprintf(path, sizeof path, "tests/fixtures/images/%s", name);
    membuf b = {0};
    char err[DAE_ERR_LEN] = "";
    cr_assert_eq(dae_file_read(path, 1 << 24, &b.data, &b.len, err, sizeof err), DAE_OK, "%s", err);
    b.cap = b.len;
    return b;
}

/* Decodes a fixture, asserting success. */
static dae_image fixture_image(const char *name) {
    membuf b = fixture(name);
    dae_image img;
    char err[DAE_ERR_LEN] = "";
    cr_assert_eq(dae_image_decode(b.data, b.len, 0, &img, err, sizeof err), DAE_OK, "%s: %s", name, err);
    free(b.data);
    return img;
}

/* What a test PNG looks like. samples holds w*h*channels values in the
 * file's bit depth (one per sample, unpacked; palette indices for palette
 * images). */
typedef struct {
    int w, h, color_type, depth, interlace;
    const uint16_t *samples;
    const png_color *palette;
    int n_palette;
    const uint8_t *trns_alpha; /* palette tRNS */
    int n_trns;
    const png_color_16 *trns_color; /* gray/RGB tRNS */
    int filters;                    /* libpng's PNG_FILTER_* to choose from; 0: libpng's default */
    int idat_bytes;                 /* largest IDAT chunk; 0: libpng's default (8 KB) */
} png_spec;

static int spec_channels(int color_type) {
    switch (color_type) {
    case PNG_COLOR_TYPE_GRAY: return 1;
    case PNG_COLOR_TYPE_GRAY_ALPHA: return 2;
    case PNG_COLOR_TYPE_RGB: return 3;
    case PNG_COLOR_TYPE_RGBA: return 4;
    default: return 1; /* palette */
    }
}

/* Writes a PNG with libpng; the caller frees the buffer. */
static membuf make_png(const png_spec *s) {
    membuf b = {0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    cr_assert(png && info);
    if (setjmp(png_jmpbuf(png))) cr_assert_fail("libpng failed writing a fixture");
    png_set_write_fn(png, &b, png_put, png_nop_flush);
    if (s->filters) png_set_filter(png, PNG_FILTER_TYPE_BASE, s->filters);
    if (s->idat_bytes) png_set_compression_buffer_size(png, (size_t)s->idat_bytes);
    png_set_IHDR(png, info, s->w, s->h, s->depth, s->color_type, s->interlace, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    if (s->palette) png_set_PLTE(png, info, s->palette, s->n_palette);
    if (s->trns_alpha || s->trns_color) png_set_tRNS(png, info, s->trns_alpha, s->n_trns, s->trns_color);
    png_write_info(png, info);
    if (s->depth < 8) png_set_packing(png);
    int ch = spec_channels(s->color_type);
    int bps = s->depth == 16 ? 2 : 1;
    size_t stride = (size_t)s->w * ch * bps;
    uint8_t *img = malloc(stride * s->h);
    png_bytep *rows = malloc(sizeof(png_bytep) * s->h);
    for (int y = 0; y < s->h; y++) {
        rows[y] = img + y * stride;
        for (int i = 0; i < s->w * ch; i++) {
            uint16_t v = s->samples[(size_t)y * s->w * ch + i];
            if (bps == 2) rows[y][2 * i] = v >> 8, rows[y][2 * i + 1] = v & 0xff;
            else rows[y][i] = (uint8_t)v;
        }
    }
    png_write_image(png, rows);
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    free(rows);
    free(img);
    return b;
}

/* Decodes buf, asserting success. */
static dae_image decode_ok(const membuf *b) {
    dae_image img;
    char err[DAE_ERR_LEN] = "";
    dae_status st = dae_image_decode(b->data, b->len, 0, &img, err, sizeof err);
    cr_assert_eq(st, DAE_OK, "decode failed: %s", err);
    return img;
}

/* Decodes buf, asserting failure with status want and a message containing
 * needle; returns nothing, leaks nothing. */
static void decode_fails(const uint8_t *buf, size_t len, dae_status want, const char *needle) {
    dae_image img;
    char err[DAE_ERR_LEN] = "";
    dae_status st = dae_image_decode(buf, len, 0, &img, err, sizeof err);
    cr_assert_eq(st, want, "status %d (%s), want %d", st, err, want);
    cr_assert_null(img.pixels);
    if (needle) cr_assert(strstr(err, needle) != NULL, "message \"%s\" lacks \"%s\"", err, needle);
}

static uint16_t *random_samples(size_t n, int max, uint64_t seed) {
    uint16_t *s = malloc(sizeof(uint16_t) * n);
    dae_rng r;
    dae_rng_seed(&r, seed, 0);
    for (size_t i = 0; i < n; i++) s[i] = (uint16_t)dae_rng_below(&r, (uint64_t)max + 1);
    return s;
}

/* Scales a sample of depth bits to 8 as libpng's expand / scale_16 do. */
static uint8_t to8(unsigned v, int depth) {
    switch (depth) {
    case 1: return v ? 255 : 0;
    case 2: return (uint8_t)(v * 85);
    case 4: return (uint8_t)(v * 17);
    case 16: return (uint8_t)((v * 255u + 32895u) >> 16);
    default: return (uint8_t)v;
    }
}

/* Checks a decoded direct-colour (non-palette) PNG against its samples. */
static void check_direct(int color_type, int depth, int interlace, int w, int h) {
    int ch = spec_channels(color_type);
    size_t n = (size_t)w * h * ch;
    uint16_t *s = random_samples(n, (1 << depth) - 1, (uint64_t)color_type * 100 + depth);
    png_spec spec = {w, h, color_type, depth, interlace, s, NULL, 0, NULL, 0, NULL, 0, 0};
    membuf b = make_png(&spec);
    dae_image img = decode_ok(&b);
    cr_assert_eq(img.width, w);
    cr_assert_eq(img.height, h);
    cr_assert_eq(img.channels, ch, "color type %d depth %d: %d channels", color_type, depth, img.channels);
    cr_assert_eq(img.source_16bit, depth == 16);
    cr_assert_str_eq(img.format, "PNG");
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(img.pixels[i], to8(s[i], depth), "type %d depth %d sample %zu: %d, want %d", color_type,
                     depth, i, img.pixels[i], to8(s[i], depth));
    int pw = 0, ph = 0;
    char err[DAE_ERR_LEN] = "";
    cr_assert_eq(dae_image_probe(b.data, b.len, &pw, &ph, err, sizeof err), DAE_OK, "%s", err);
    cr_assert_eq(pw, w);
    cr_assert_eq(ph, h);
    dae_image_free(&img);
    free(b.data);
    free(s);
}

/* A small gray 8-bit PNG used by the malformed-input tests. */
static membuf small_png(void) {
    uint16_t *s = random_samples(9 * 7, 255, 5);
    png_spec spec = {9, 7, PNG_COLOR_TYPE_GRAY, 8, PNG_INTERLACE_NONE, s, NULL, 0, NULL, 0, NULL, 0, 0};
    membuf b = make_png(&spec);
    free(s);
    return b;
}

/* Appends one PNG chunk with its CRC. */
static void put_chunk(membuf *b, const char *type, const uint8_t *data, uint32_t len) {
    uint8_t hdr[8] = {len >> 24, len >> 16, len >> 8, len, type[0], type[1], type[2], type[3]};
    membuf_put(b, hdr, 8);
    if (len) membuf_put(b, data, len);
    uLong crc = crc32(0, (const Bytef *)type, 4);
    if (len) crc = crc32(crc, data, len);
    uint8_t c[4] = {crc >> 24, crc >> 16, crc >> 8, crc};
    membuf_put(b, c, 4);
}

/* A tiny PNG claiming w x h gray pixels, with a few hundred bytes of
 * zlib-compressed zeros as its only IDAT. */
static membuf png_bomb(uint32_t w, uint32_t h) {
    membuf b = {0};
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    membuf_put(&b, sig, 8);
    uint8_t ihdr[13] = {w >> 24, w >> 16, w >> 8, w, h >> 24, h >> 16, h >> 8, h, 8, 0, 0, 0, 0};
    put_chunk(&b, "IHDR", ihdr, 13);
    static uint8_t zeros[100000];
    uint8_t z[4096];
    uLongf zlen = sizeof z;
    cr_assert_eq(compress(z, &zlen, zeros, sizeof zeros), Z_OK);
    put_chunk(&b, "IDAT", z, (uint32_t)zlen);
    put_chunk(&b, "IEND", NULL, 0);
    return b;
}

/* ------------------------------------------------------------ PNG flavours */

/* The plain PNGs (8-bit gray, gray + alpha, RGB, RGBA, not interlaced,
 * no tRNS) take the one-call inflate and unfiltering of
 * img_png_decode_plain: each of PNG's five filters alone and libpng's
 * choice among them, in one IDAT or in many small ones, give back the
 * samples written; the other flavours are left to libpng. */
Test(image, plain_png_fast_path_undoes_every_filter) {
    static const int colors[] = {PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA, PNG_COLOR_TYPE_RGB,
                                 PNG_COLOR_TYPE_RGBA};
    static const int filters[] = {PNG_FILTER_NONE, PNG_FILTER_SUB,   PNG_FILTER_UP,
                                  PNG_FILTER_AVG,  PNG_FILTER_PAETH, PNG_ALL_FILTERS};
    static const int sizes[][2] = {{1, 1}, {28, 28}, {61, 13}};
    int n = 0;
    for (size_t c = 0; c < sizeof colors / sizeof colors[0]; c++)
        for (size_t f = 0; f < sizeof filters / sizeof filters[0]; f++)
            for (size_t z = 0; z < sizeof sizes / sizeof sizes[0]; z++)
                for (int idat = 0; idat <= 64; idat += 64) {
                    int w = sizes[z][0], h = sizes[z][1], ch = spec_channels(colors[c]);
                    size_t count = (size_t)w * h * ch;
                    /* smooth ramps with noise: every filter predicts something */
                    uint16_t *s = random_samples(count, 40, 900 + (uint64_t)n);
                    for (size_t i = 0; i < count; i++) s[i] = (uint16_t)((s[i] + i / ch % w * 3 + i / (w * ch)) % 256);
                    png_spec spec = {w, h, colors[c], 8, PNG_INTERLACE_NONE, s, NULL, 0, NULL, 0, NULL,
                                     filters[f], idat};
                    membuf b = make_png(&spec);
                    dae_image fast;
                    cr_assert_eq(img_png_decode_plain(b.data, b.len, 0, &fast), 1,
                                 "color type %d, filters %#x, %dx%d, IDATs of %d: not taken", colors[c], filters[f],
                                 w, h, idat);
                    cr_assert_eq(fast.width, w);
                    cr_assert_eq(fast.height, h);
                    cr_assert_eq(fast.channels, ch);
                    for (size_t i = 0; i < count; i++)
                        cr_assert_eq(fast.pixels[i], s[i], "color type %d, filters %#x, %dx%d: sample %zu is %d, "
                                     "want %d", colors[c], filters[f], w, h, i, fast.pixels[i], s[i]);
                    dae_image_free(&fast);
                    free(b.data);
                    free(s);
                    n++;
                }
    cr_assert_eq(n, 144);
    /* what libpng must decode: 16 bits, fewer than 8, a palette, tRNS, Adam7 */
    uint16_t *s = random_samples(64 * 3, 255, 7);
    png_color palette[4] = {{0, 0, 0}, {255, 0, 0}, {0, 255, 0}, {0, 0, 255}};
    png_color_16 trns = {0, 0, 0, 0, 5};
    png_spec others[] = {
        {8, 8, PNG_COLOR_TYPE_GRAY, 16, PNG_INTERLACE_NONE, s, NULL, 0, NULL, 0, NULL, 0, 0},
        {8, 8, PNG_COLOR_TYPE_GRAY, 4, PNG_INTERLACE_NONE, s, NULL, 0, NULL, 0, NULL, 0, 0},
        {8, 8, PNG_COLOR_TYPE_PALETTE, 8, PNG_INTERLACE_NONE, s, palette, 4, NULL, 0, NULL, 0, 0},
        {8, 8, PNG_COLOR_TYPE_GRAY, 8, PNG_INTERLACE_NONE, s, NULL, 0, NULL, 0, &trns, 0, 0},
        {8, 8, PNG_COLOR_TYPE_RGB, 8, PNG_INTERLACE_ADAM7, s, NULL, 0, NULL, 0, NULL, 0, 0},
    };
    for (int i = 0; i < 64; i++) s[i] %= 4; /* palette indices, 4-bit gray */
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++) {
        membuf b = make_png(&others[i]);
        dae_image img;
        cr_assert_eq(img_png_decode_plain(b.data, b.len, 0, &img), 0, "flavour %zu taken by the fast path", i);
        img = decode_ok(&b);
        dae_image_free(&img);
        free(b.data);
    }
    free(s);
}

/* A plain PNG whose zlib stream gives more or fewer bytes than its rows,
 * fails its Adler-32 or has bytes after its end, a row with an unknown
 * filter byte, or a chunk named with other bytes than ASCII letters is
 * left to libpng, which names what is wrong (or, for data past the rows
 * or the stream, decodes them as before); an ancillary chunk the fast
 * path skips, as libpng does. */
Test(image, plain_png_with_anything_amiss_goes_to_libpng) {
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    enum { W = 5, H = 4 };
    uint8_t rows[H * (W + 1) + 6] = {0};
    for (int y = 0; y < H; y++) rows[y * (W + 1)] = 1; /* Sub */
    static const struct {
        size_t raw;       /* bytes deflated */
        int bad_filter;   /* the last row's filter byte 7 */
        const char *name; /* of an ancillary-looking chunk before the IDAT, or NULL */
        int bad_adler;    /* the stream's Adler-32 off by one */
        int tail;         /* bytes after the stream's end, in the IDAT */
        int plain;        /* the fast path takes it */
        dae_status want;  /* of dae_image_decode */
    } cases[] = {{H * (W + 1) - 1, 0, NULL, 0, 0, 0, DAE_ERR_FORMAT},
                 {H * (W + 1), 1, NULL, 0, 0, 0, DAE_ERR_FORMAT},
                 {H * (W + 1) + 6, 0, NULL, 0, 0, 0, DAE_OK},
                 {H * (W + 1), 0, "\xe9xYz", 0, 0, 0, DAE_ERR_FORMAT},
                 {H * (W + 1), 0, "tE1t", 0, 0, 0, DAE_ERR_FORMAT},
                 {H * (W + 1), 0, "teXt", 0, 0, 1, DAE_OK},
                 {H * (W + 1), 0, NULL, 1, 0, 0, DAE_ERR_FORMAT},
                 {H * (W + 1), 0, NULL, 0, 3, 0, DAE_OK}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        rows[(H - 1) * (W + 1)] = cases[i].bad_filter ? 7 : 1;
        membuf b = {0};
        membuf_put(&b, sig, 8);
        uint8_t ihdr[13] = {0, 0, 0, W, 0, 0, 0, H, 8, 0, 0, 0, 0};
        put_chunk(&b, "IHDR", ihdr, 13);
        if (cases[i].name != NULL) put_chunk(&b, cases[i].name, (const uint8_t *)"abc", 3);
        uint8_t z[256];
        uLongf zlen = sizeof z;
        cr_assert_eq(compress(z, &zlen, rows, cases[i].raw), Z_OK);
        z[zlen - 1] ^= (uint8_t)cases[i].bad_adler;
        for (int t = 0; t < cases[i].tail; t++) z[zlen++] = 0x5a;
        put_chunk(&b, "IDAT", z, (uint32_t)zlen);
        put_chunk(&b, "IEND", NULL, 0);
        dae_image img;
        cr_assert_eq(img_png_decode_plain(b.data, b.len, 0, &img), cases[i].plain, "case %zu", i);
        if (cases[i].plain) dae_image_free(&img);
        char err[DAE_ERR_LEN] = "";
        cr_assert_eq(dae_image_decode(b.data, b.len, 0, &img, err, sizeof err), cases[i].want, "case %zu: %s", i,
                     err);
        dae_image_free(&img);
        free(b.data);
    }
}

Test(image, png_gray_every_depth) {
    for (int depth = 1; depth <= 16; depth *= 2) check_direct(PNG_COLOR_TYPE_GRAY, depth, PNG_INTERLACE_NONE, 13, 5);
}

Test(image, png_gray_alpha_rgb_rgba_8_and_16_bit) {
    int types[] = {PNG_COLOR_TYPE_GRAY_ALPHA, PNG_COLOR_TYPE_RGB, PNG_COLOR_TYPE_RGBA};
    for (int t = 0; t < 3; t++) {
        check_direct(types[t], 8, PNG_INTERLACE_NONE, 11, 6);
        check_direct(types[t], 16, PNG_INTERLACE_NONE, 11, 6);
    }
}

Test(image, png_adam7_interlaced) {
    check_direct(PNG_COLOR_TYPE_GRAY, 8, PNG_INTERLACE_ADAM7, 37, 23);
    check_direct(PNG_COLOR_TYPE_RGB, 8, PNG_INTERLACE_ADAM7, 37, 23);
    check_direct(PNG_COLOR_TYPE_RGBA, 16, PNG_INTERLACE_ADAM7, 5, 3);
    check_direct(PNG_COLOR_TYPE_GRAY, 2, PNG_INTERLACE_ADAM7, 1, 1);
}

Test(image, png_palette_with_and_without_trns) {
    png_color pal[16];
    uint8_t alpha[16];
    for (int i = 0; i < 16; i++) {
        pal[i].red = (png_byte)(i * 16), pal[i].green = (png_byte)(255 - i * 16), pal[i].blue = (png_byte)(i * 7);
        alpha[i] = (uint8_t)(i * 17);
    }
    for (int depth = 1; depth <= 8; depth *= 2) {
        int colours = 1 << (depth < 4 ? depth : 4);
        uint16_t *s = random_samples(10 * 4, colours - 1, (uint64_t)depth);
        for (int with_trns = 0; with_trns < 2; with_trns++) {
            png_spec spec = {10, 4, PNG_COLOR_TYPE_PALETTE, depth, PNG_INTERLACE_NONE, s, pal, colours,
                             with_trns ? alpha : NULL, with_trns ? colours : 0, NULL, 0, 0};
            membuf b = make_png(&spec);
            dae_image img = decode_ok(&b);
            int ch = with_trns ? 4 : 3;
            cr_assert_eq(img.channels, ch, "palette depth %d trns %d", depth, with_trns);
            for (int i = 0; i < 40; i++) {
                const uint8_t *px = img.pixels + i * ch;
                cr_assert_eq(px[0], pal[s[i]].red);
                cr_assert_eq(px[1], pal[s[i]].green);
                cr_assert_eq(px[2], pal[s[i]].blue);
                if (with_trns) cr_assert_eq(px[3], alpha[s[i]]);
            }
            dae_image_free(&img);
            free(b.data);
        }
        free(s);
    }
}

Test(image, png_gray_and_rgb_trns_become_alpha) {
    uint16_t gray[6] = {0, 7, 255, 7, 100, 7};
    png_color_16 key = {.gray = 7};
    png_spec g = {3, 2, PNG_COLOR_TYPE_GRAY, 8, PNG_INTERLACE_NONE, gray, NULL, 0, NULL, 0, &key, 0, 0};
    membuf b = make_png(&g);
    dae_image img = decode_ok(&b);
    cr_assert_eq(img.channels, 2);
    for (int i = 0; i < 6; i++) {
        cr_assert_eq(img.pixels[2 * i], gray[i]);
        cr_assert_eq(img.pixels[2 * i + 1], gray[i] == 7 ? 0 : 255);
    }
    dae_image_free(&img);
    free(b.data);

    uint16_t rgb[6] = {1, 2, 3, 4, 5, 6};
    png_color_16 rgb_key = {.red = 4, .green = 5, .blue = 6};
    png_spec c = {2, 1, PNG_COLOR_TYPE_RGB, 8, PNG_INTERLACE_NONE, rgb, NULL, 0, NULL, 0, &rgb_key, 0, 0};
    b = make_png(&c);
    img = decode_ok(&b);
    cr_assert_eq(img.channels, 4);
    cr_assert_eq(img.pixels[3], 255);
    cr_assert_eq(img.pixels[7], 0);
    cr_assert_eq(img.pixels[4], 4);
    dae_image_free(&img);
    free(b.data);
}

/* ------------------------------------------------------------ other formats */

Test(image, jpeg_bmp_tga_made_here) {
    enum { W = 16, H = 8 };
    uint8_t rgb[W * H * 3], rgba[W * H * 4];
    for (int i = 0; i < W * H; i++) {
        rgb[3 * i] = 200, rgb[3 * i + 1] = 100, rgb[3 * i + 2] = 50;
        rgba[4 * i] = (uint8_t)i, rgba[4 * i + 1] = 3, rgba[4 * i + 2] = 250, rgba[4 * i + 3] = (uint8_t)(i * 2);
    }
    membuf b = make_jpeg(rgb, W, H, 95);
    dae_image img = decode_ok(&b);
    cr_assert_str_eq(img.format, "JPEG");
    cr_assert_eq(img.width, W);
    cr_assert_eq(img.height, H);
    cr_assert_eq(img.channels, 3);
    for (int i = 0; i < W * H * 3; i++) cr_assert(abs(img.pixels[i] - rgb[i]) <= 4, "JPEG sample %d", i);
    dae_image_free(&img);
    free(b.data);

    membuf bmp = make_bmp24(rgb, W, H);
    img = decode_ok(&bmp);
    cr_assert_str_eq(img.format, "BMP");
    cr_assert_eq(img.channels, 3);
    cr_assert_arr_eq(img.pixels, rgb, sizeof rgb);
    dae_image_free(&img);
    free(bmp.data);

    membuf tga = make_tga32(rgba, W, H);
    cr_assert_str_eq(dae_image_format_name(tga.data, tga.len), "TGA");
    img = decode_ok(&tga);
    cr_assert_str_eq(img.format, "TGA");
    cr_assert_eq(img.channels, 4);
    cr_assert_arr_eq(img.pixels, rgba, sizeof rgba);
    int w, h;
    char err[DAE_ERR_LEN];
    cr_assert_eq(dae_image_probe(tga.data, tga.len, &w, &h, err, sizeof err), DAE_OK);
    cr_assert_eq(w, W);
    cr_assert_eq(h, H);
    dae_image_free(&img);
    free(tga.data);
}

Test(image, pnm_gray_color_and_16_bit) {
    static const uint8_t p5[] = "P5\n3 2\n255\n\x00\x10\x20\x30\x40\xff";
    membuf b = {(uint8_t *)p5, sizeof p5 - 1, 0};
    dae_image img = decode_ok(&b);
    cr_assert_str_eq(img.format, "PNM");
    cr_assert_eq(img.channels, 1);
    cr_assert_eq(img.width, 3);
    cr_assert_eq(img.pixels[5], 255);
    cr_assert_eq(img.pixels[1], 0x10);
    dae_image_free(&img);

    static const uint8_t p6[] = "P6 1 2 255 \x01\x02\x03\x04\x05\x06";
    b = (membuf){(uint8_t *)p6, sizeof p6 - 1, 0};
    img = decode_ok(&b);
    cr_assert_eq(img.channels, 3);
    cr_assert_eq(img.height, 2);
    cr_assert_eq(img.pixels[4], 5);
    dae_image_free(&img);

    static const uint8_t p5_16[] = "P5\n2 1\n65535\n\xff\xff\x00\x00";
    b = (membuf){(uint8_t *)p5_16, sizeof p5_16 - 1, 0};
    img = decode_ok(&b);
    cr_assert(img.source_16bit);
    cr_assert_eq(img.pixels[0], 255);
    cr_assert_eq(img.pixels[1], 0);
    dae_image_free(&img);

    static const char p1[] = "P1\n2 2\n0 1 1 0\n";
    decode_fails((const uint8_t *)p1, sizeof p1 - 1, DAE_ERR_FORMAT, "P5");
}

/* Packs codes LSB first into GIF sub-blocks. */
typedef struct {
    membuf *out;
    uint8_t block[255];
    int n;
    uint32_t acc;
    int bits;
} gif_bits;

static void gif_flush_block(gif_bits *g) {
    uint8_t len = (uint8_t)g->n;
    membuf_put(g->out, &len, 1);
    membuf_put(g->out, g->block, (size_t)g->n);
    g->n = 0;
}

static void gif_code(gif_bits *g, unsigned code, int width) {
    g->acc |= code << g->bits;
    g->bits += width;
    while (g->bits >= 8) {
        g->block[g->n++] = (uint8_t)g->acc;
        g->acc >>= 8;
        g->bits -= 8;
        if (g->n == 255) gif_flush_block(g);
    }
}

/* Writes a w x h GIF with a 4-colour palette; LZW with a clear code before
 * every pair of pixels keeps the code width at 3 bits. transparent >= 0
 * adds a graphic control extension naming that index transparent. */
static membuf make_gif(int w, int h, const uint8_t *idx, const uint8_t pal[4][3], int transparent) {
    membuf b = {0};
    membuf_put(&b, "GIF89a", 6);
    uint8_t lsd[7] = {w, w >> 8, h, h >> 8, 0x80 | 0x01, 0, 0}; /* global table of 4 colours */
    membuf_put(&b, lsd, 7);
    membuf_put(&b, pal, 12);
    if (transparent >= 0) {
        uint8_t gce[8] = {0x21, 0xf9, 4, 1, 0, 0, (uint8_t)transparent, 0};
        membuf_put(&b, gce, 8);
    }
    uint8_t desc[10] = {0x2c, 0, 0, 0, 0, w, w >> 8, h, h >> 8, 0};
    membuf_put(&b, desc, 10);
    uint8_t min_code = 2;
    membuf_put(&b, &min_code, 1);
    gif_bits g = {.out = &b};
    for (int i = 0; i < w * h; i++) {
        if (i % 2 == 0) gif_code(&g, 4, 3); /* clear */
        gif_code(&g, idx[i], 3);
    }
    gif_code(&g, 5, 3); /* end of information */
    if (g.bits > 0) g.block[g.n++] = (uint8_t)g.acc;
    if (g.n > 0) gif_flush_block(&g);
    uint8_t end[2] = {0, 0x3b};
    membuf_put(&b, end, 2);
    return b;
}

Test(image, gif_first_frame_with_and_without_transparency) {
    static const uint8_t pal[4][3] = {{0, 0, 0}, {255, 0, 0}, {0, 255, 0}, {10, 20, 30}};
    uint8_t idx[5 * 3];
    for (int i = 0; i < 15; i++) idx[i] = (uint8_t)(i % 4);
    membuf b = make_gif(5, 3, idx, pal, -1);
    dae_image img = decode_ok(&b);
    cr_assert_str_eq(img.format, "GIF");
    cr_assert_eq(img.channels, 3, "an opaque GIF is RGB");
    for (int i = 0; i < 15; i++)
        for (int c = 0; c < 3; c++) cr_assert_eq(img.pixels[i * 3 + c], pal[idx[i]][c], "pixel %d", i);
    dae_image_free(&img);
    free(b.data);

    b = make_gif(5, 3, idx, pal, 3);
    img = decode_ok(&b);
    cr_assert_eq(img.channels, 4);
    for (int i = 0; i < 15; i++) cr_assert_eq(img.pixels[i * 4 + 3], idx[i] == 3 ? 0 : 255);
    dae_image_free(&img);
    free(b.data);
}

/* ------------------------------------------------------------ fixtures */

/* Checks that img has the reference's size and channels, and that every
 * sample equals want(reference sample, channel) exactly. */
typedef int (*expect_fn)(int ref, int c);
static int same(int v, int c) { (void)c; return v; }
static void check_against(const char *name, const char *ref_name, int channels, int ref_channel_of[4],
                          expect_fn want) {
    dae_image img = fixture_image(name), ref = fixture_image(ref_name);
    cr_assert_eq(img.width, ref.width, "%s", name);
    cr_assert_eq(img.height, ref.height, "%s", name);
    cr_assert_eq(img.channels, channels, "%s: %d channels, want %d", name, img.channels, channels);
    for (int i = 0; i < img.width * img.height; i++)
        for (int c = 0; c < channels; c++) {
            int v = img.pixels[i * channels + c];
            int r = ref_channel_of[c] < 0 ? 255 : ref.pixels[i * ref.channels + ref_channel_of[c]];
            int e = ref_channel_of[c] < 0 ? 255 : want(r, c);
            cr_assert_eq(v, e, "%s pixel %d channel %d: %d, want %d", name, i, c, v, e);
        }
    dae_image_free(&img);
    dae_image_free(&ref);
}

static int bmp555(int v, int c) { (void)c; int q = v * 31 / 255; return (q * 255 + 15) / 31; }
static int bmp565(int v, int c) {
    if (c == 1) { int q = v * 63 / 255; return (q * 255 + 31) / 63; }
    return bmp555(v, c);
}
static int tga555(int v, int c) { (void)c; return ((v >> 3) * 255 + 15) / 31; }
static int four_bit(int v, int c) { (void)c; return (v >> 4) * 17; }
static int one_bit(int v, int c) { (void)c; return (v >> 7) * 255; }

Test(image, bmp_fixtures_every_flavour) {
    int rgb[4] = {0, 1, 2, -1}, rgba[4] = {0, 1, 2, 3}, gray3[4] = {0, 0, 0, -1};
    check_against("rgb.bmp", "rgb.ppm", 3, rgb, same);
    check_against("rgb_topdown.bmp", "rgb.ppm", 3, rgb, same);
    check_against("rgb_os2.bmp", "rgb.ppm", 3, rgb, same);
    check_against("rgb32.bmp", "rgb.ppm", 4, rgb, same); /* alpha all 0 in the file: opaque */
    check_against("rgba32_v5.bmp", "rgba8.png", 4, rgba, same);
    check_against("rgb16.bmp", "rgb.ppm", 3, rgb, bmp555);
    check_against("rgb565.bmp", "rgb.ppm", 3, rgb, bmp565);
    check_against("gray8.bmp", "gray.pgm", 3, gray3, same);
    check_against("gray4_27x29.bmp", "gray_27x29.png", 3, gray3, four_bit);
    check_against("gray1_27x29.bmp", "gray_27x29.png", 3, gray3, one_bit);
}

Test(image, tga_fixtures_every_flavour) {
    int rgb[4] = {0, 1, 2, -1}, rgba[4] = {0, 1, 2, 3}, gray[4] = {0}, ga[4] = {0, 1}, gray3[4] = {0, 0, 0, -1};
    check_against("rgb.tga", "rgb.ppm", 3, rgb, same);
    check_against("rgb_bottom.tga", "rgb.ppm", 3, rgb, same);
    check_against("rgb_rle.tga", "rgb.ppm", 3, rgb, same);
    check_against("rgba32.tga", "rgba8.png", 4, rgba, same);
    check_against("rgb16.tga", "rgb.ppm", 3, rgb, tga555);
    check_against("gray.tga", "gray.pgm", 1, gray, same);
    check_against("gray_rle.tga", "gray.pgm", 1, gray, same);
    check_against("graya16.tga", "graya8.png", 2, ga, same);
    check_against("gray_pal.tga", "gray.pgm", 3, gray3, same);
    check_against("gray_pal_rle.tga", "gray.pgm", 3, gray3, same);
}

Test(image, pnm_and_gif_fixtures) {
    int gray[4] = {0}, gray3[4] = {0, 0, 0, -1};
    check_against("gray16.pgm", "gray16.png", 1, gray, same);
    dae_image p = fixture_image("gray16.pgm");
    cr_assert(p.source_16bit);
    dae_image_free(&p);
    check_against("gray.gif", "gray.pgm", 3, gray3, same);
    check_against("gray_interlaced.gif", "gray.pgm", 3, gray3, same);
    check_against("gray_two_frames.gif", "gray.pgm", 3, gray3, same); /* the first frame only */

    dae_image ref = fixture_image("gray.pgm");
    dae_image t = fixture_image("gray_trns.gif"); /* index 0 transparent */
    cr_assert_eq(t.channels, 4);
    int transparent = 0;
    for (int i = 0; i < 28 * 28; i++) {
        int v = ref.pixels[i];
        uint8_t want[4] = {(uint8_t)v, (uint8_t)v, (uint8_t)v, 255};
        if (v == 0) memset(want, 0, 4), transparent++;
        cr_assert_arr_eq(t.pixels + 4 * i, want, 4, "pixel %d", i);
    }
    cr_assert_gt(transparent, 0);
    dae_image_free(&t);
    /* A 20x10 frame at (4, 6) of a 28x28 screen: the rest is transparent black. */
    dae_image sub = fixture_image("gray_subframe.gif");
    cr_assert_eq(sub.channels, 4);
    for (int y = 0; y < 28; y++)
        for (int x = 0; x < 28; x++) {
            int in = x >= 4 && x < 24 && y >= 6 && y < 16, v = ref.pixels[y * 28 + x];
            uint8_t want[4] = {(uint8_t)(in ? v : 0), (uint8_t)(in ? v : 0), (uint8_t)(in ? v : 0),
                               (uint8_t)(in ? 255 : 0)};
            cr_assert_arr_eq(sub.pixels + 4 * (y * 28 + x), want, 4, "pixel %d,%d", x, y);
        }
    dae_image_free(&sub);
    dae_image_free(&ref);
}

/* Asserts that every sample of a JPEG fixture is within tol of want(x, y, c). */
static void check_jpeg(const char *name, int w, int h, int channels, int (*want)(int, int, int, int, int), int tol) {
    dae_image img = fixture_image(name);
    cr_assert_str_eq(img.format, "JPEG");
    cr_assert_eq(img.width, w, "%s", name);
    cr_assert_eq(img.height, h, "%s", name);
    cr_assert_eq(img.channels, channels, "%s", name);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < channels; c++) {
                int v = img.pixels[(y * w + x) * channels + c], e = want(x, y, c, w, h);
                cr_assert(abs(v - e) <= tol, "%s (%d,%d) channel %d: %d, want %d", name, x, y, c, v, e);
            }
    dae_image_free(&img);
}

/* The pictures of make_jpegs.c. */
static int rgb_gradient(int x, int y, int c, int w, int h) { return c == 0 ? x * 255 / (w - 1) : c == 1 ? y * 255 / (h - 1) : 128; }
static int gray_gradient(int x, int y, int c, int w, int h) { (void)c; return (x + y) * 255 / (w + h - 2); }
static int cmyk_as_rgb(int x, int y, int c, int w, int h) {
    (void)w, (void)h;
    int ink = c == 0 ? x * 16 : c == 1 ? y * 16 : 64;
    return (ink * 200 + 127) / 255;
}

Test(image, jpeg_progressive_restart_cmyk) {
    check_jpeg("prog.jpg", 40, 30, 3, rgb_gradient, 12);
    check_jpeg("restart.jpg", 40, 30, 3, rgb_gradient, 12);
    check_jpeg("gray_prog.jpg", 28, 28, 1, gray_gradient, 6);
    check_jpeg("cmyk.jpg", 16, 16, 3, cmyk_as_rgb, 8);
    /* The progressive and baseline files hold the same picture. */
    dae_image a = fixture_image("prog.jpg"), b = fixture_image("restart.jpg");
    int worst = 0;
    for (int i = 0; i < 40 * 30 * 3; i++) worst = abs(a.pixels[i] - b.pixels[i]) > worst ? abs(a.pixels[i] - b.pixels[i]) : worst;
    cr_assert_leq(worst, 6);
    dae_image_free(&a);
    dae_image_free(&b);
}

/* The hostile JPEGs: too many scans, a size claim the file cannot back,
 * and the Huffman table with more than 256 codes that drove stb_image
 * out of bounds (the regression input of the fuzzing corpus). */
Test(image, hostile_jpegs_fail_cleanly) {
    const char *files[] = {"many_scans.jpg", "scans_4096.jpg", "claims_4096.jpg"};
    const char *why[] = {"more than 100 progressive scans", "more than 100 progressive scans",
                         "cannot hold a 4096x4096 image"};
    for (int i = 0; i < 3; i++) {
        membuf b = fixture(files[i]);
        decode_fails(b.data, b.len, DAE_ERR_FORMAT, why[i]);
        int w = 0, h = 0;
        char err[DAE_ERR_LEN];
        cr_assert_eq(dae_image_probe(b.data, b.len, &w, &h, err, sizeof err), DAE_OK, "%s", err);
        free(b.data);
    }
    membuf d = {0};
    char err[DAE_ERR_LEN] = "";
    cr_assert_eq(dae_file_read("tests/fuzz/corpus/fuzz_jpeg/bad_dht.jpg", 1 << 20, &d.data, &d.len, err, sizeof err),
                 DAE_OK, "%s", err);
    decode_fails(d.data, d.len, DAE_ERR_FORMAT, "JPEG: Bogus Huffman table definition");
    free(d.data);
}

/* Every format's header alone: it names a size but holds no pixels. */
Test(image, header_only_files_fail_in_every_format) {
    static const char p6[] = "P6\n100 100\n255\n";
    decode_fails((const uint8_t *)p6, sizeof p6 - 1, DAE_ERR_FORMAT, "PNM: file is truncated");
    static const char p5[] = "P5 28 28 65535 ";
    decode_fails((const uint8_t *)p5, sizeof p5 - 1, DAE_ERR_FORMAT, "PNM: file is truncated");
    struct { const char *file; size_t keep; const char *why; } cut[] = {
        {"rgb.tga", 18, "TGA: file is truncated"},
        {"rgb_rle.tga", 18, "TGA: file is truncated"},
        {"gray_pal.tga", 18 + 768, "TGA: file is truncated"},
        {"rgb.bmp", 54, "BMP: file is truncated"},
        {"gray8.bmp", 54 + 1024, "BMP: file is truncated"},
        {"gray.gif", 13 + 768, "GIF: file is truncated"},
        {"gray8.png", 33, "PNG: "},
    };
    for (size_t i = 0; i < sizeof cut / sizeof cut[0]; i++) {
        membuf b = fixture(cut[i].file);
        cr_assert_lt(cut[i].keep, b.len);
        decode_fails(b.data, cut[i].keep, DAE_ERR_FORMAT, cut[i].why);
        free(b.data);
    }
    /* A JPEG cut right after its first scan header. */
    membuf j = fixture("rgb.jpg");
    size_t sos = 0;
    for (size_t i = 2; i + 3 < j.len && sos == 0; i++)
        if (j.data[i] == 0xff && j.data[i + 1] == 0xda) sos = i + 2 + ((size_t)j.data[i + 2] << 8 | j.data[i + 3]);
    cr_assert_gt(sos, 0);
    decode_fails(j.data, sos, DAE_ERR_FORMAT, "JPEG: ");
    free(j.data);
}

/* Every prefix of every non-PNG fixture fails with DAE_ERR_FORMAT (the
 * PNG ones are covered above): no decoder pads a short file. A BMP may
 * lack the padding of its last row (up to 3 bytes), nothing else. */
Test(image, every_truncation_of_every_format_fails) {
    const char *files[] = {"rgb.jpg", "gray.jpg", "prog.jpg", "restart.jpg", "cmyk.jpg", "gray.gif",
                           "gray_interlaced.gif", "gray_subframe.gif", "rgb.bmp", "gray4_27x29.bmp",
                           "rgb16.bmp", "rgba32_v5.bmp", "rgb_os2.bmp", "gray.pgm", "rgb.ppm", "gray16.pgm",
                           "rgb.tga", "rgb_rle.tga", "gray_pal_rle.tga", "graya16.tga"};
    for (size_t f = 0; f < sizeof files / sizeof files[0]; f++) {
        membuf b = fixture(files[f]);
        size_t slack = strstr(files[f], ".bmp") != NULL ? 3 : 0;
        for (size_t len = 0; len + slack < b.len; len++) {
            dae_image img;
            char err[DAE_ERR_LEN] = "";
            dae_status st = dae_image_decode(b.data, len, 0, &img, err, sizeof err);
            cr_assert_eq(st, DAE_ERR_FORMAT, "%s cut to %zu of %zu bytes: status %d (%s)", files[f], len, b.len,
                         st, err);
            cr_assert_null(img.pixels);
        }
        free(b.data);
    }
}

/* Decoding the same bytes twice, with the heap dirtied in between by a
 * freed block of the same size full of another pattern, gives the same
 * pixels: nothing comes from memory the decoder did not write. */
Test(image, same_input_same_bytes_in_every_format) {
    const char *files[] = {"rgb.jpg", "prog.jpg", "cmyk.jpg", "gray_subframe.gif", "gray_trns.gif", "rgb.bmp",
                           "rgb32.bmp", "gray1_27x29.bmp", "rgb.ppm", "gray16.pgm", "rgb_rle.tga",
                           "gray_pal.tga", "rgba16_adam7.png"};
    for (size_t f = 0; f < sizeof files / sizeof files[0]; f++) {
        dae_image a = fixture_image(files[f]);
        size_t n = (size_t)a.width * a.height * a.channels;
        for (int pattern = 0; pattern < 2; pattern++) {
            uint8_t *dirt = malloc(n);
            memset(dirt, pattern ? 0xa5 : 0x5a, n);
            free(dirt);
            dae_image b = fixture_image(files[f]);
            cr_assert_eq(b.channels, a.channels);
            cr_assert_arr_eq(b.pixels, a.pixels, n, "%s decoded to other bytes", files[f]);
            dae_image_free(&b);
        }
        dae_image_free(&a);
    }
}

/* Malformed fields in each hand-written format: a clear message. */
Test(image, malformed_headers_have_clear_messages) {
    static const char p5_over[] = "P5 1 1 100 \xc8";
    decode_fails((const uint8_t *)p5_over, sizeof p5_over - 1, DAE_ERR_FORMAT, "over the maximum value");
    static const char p5_zero[] = "P5 1 1 0 \x00";
    decode_fails((const uint8_t *)p5_zero, sizeof p5_zero - 1, DAE_ERR_FORMAT, "maximum value is 0");
    static const char p6_big[] = "P6 99999999999 1 255 ";
    decode_fails((const uint8_t *)p6_big, sizeof p6_big - 1, DAE_ERR_FORMAT, "width is over");
    membuf b = fixture("gray8.bmp");
    b.data[30] = 1;                 /* BI_RLE8 */
    decode_fails(b.data, b.len, DAE_ERR_FORMAT, "compression type 1");
    b.data[30] = 0;
    b.data[46] = 16, b.data[47] = 0; /* 16 colours declared: larger indices are outside */
    decode_fails(b.data, b.len, DAE_ERR_FORMAT, "outside the 16-entry colour table");
    free(b.data);
    membuf t = fixture("gray_pal.tga");
    t.data[5] = 100, t.data[6] = 0; /* a 100-entry map: the gray values reach past it */
    decode_fails(t.data, t.len, DAE_ERR_FORMAT, "outside the 100-entry map");
    free(t.data);
}

/* ------------------------------------------------------------ bad input */

Test(image, corrupt_crc_is_an_error) {
    membuf b = small_png();
    /* The IDAT chunk follows the 8-byte signature and the 25-byte IHDR. */
    cr_assert_eq(memcmp(b.data + 37, "IDAT", 4), 0);
    uint32_t idat_len = (uint32_t)b.data[33] << 24 | b.data[34] << 16 | b.data[35] << 8 | b.data[36];
    /* A damaged CRC, then damaged data under a good CRC field. */
    b.data[41 + idat_len] ^= 0x01;
    decode_fails(b.data, b.len, DAE_ERR_FORMAT, "PNG: CRC error in IDAT");
    b.data[41 + idat_len] ^= 0x01;
    b.data[41 + 2] ^= 0x55;
    decode_fails(b.data, b.len, DAE_ERR_FORMAT, "PNG: CRC error in IDAT");
    b.data[41 + 2] ^= 0x55;
    b.data[16] ^= 0x01; /* width in IHDR */
    decode_fails(b.data, b.len, DAE_ERR_FORMAT, "PNG: CRC error in IHDR");
    free(b.data);
}

Test(image, every_truncation_is_an_error) {
    membuf b = small_png();
    for (size_t len = 0; len < b.len; len++) {
        dae_image img;
        char err[DAE_ERR_LEN] = "";
        dae_status st = dae_image_decode(b.data, len, 0, &img, err, sizeof err);
        cr_assert_neq(st, DAE_OK, "a PNG cut to %zu of %zu bytes decoded", len, b.len);
        cr_assert_null(img.pixels);
        cr_assert(err[0] != '\0');
    }
    decode_fails(b.data, b.len / 2, DAE_ERR_FORMAT, "PNG: ");
    decode_fails(b.data, 5, DAE_ERR_FORMAT, "truncated");
    free(b.data);
}

Test(image, random_byte_flips_never_crash) {
    membuf b = small_png();
    uint8_t *copy = malloc(b.len);
    dae_rng r;
    dae_rng_seed(&r, 77, 0);
    for (int trial = 0; trial < 2000; trial++) {
        memcpy(copy, b.data, b.len);
        int flips = 1 + (int)dae_rng_below(&r, 4);
        for (int k = 0; k < flips; k++) copy[dae_rng_below(&r, b.len)] ^= (uint8_t)(1 + dae_rng_below(&r, 255));
        dae_image img;
        char err[DAE_ERR_LEN];
        if (dae_image_decode(copy, b.len, 0, &img, err, sizeof err) == DAE_OK) dae_image_free(&img);
        else cr_assert_null(img.pixels);
    }
    free(copy);
    free(b.data);
}

Test(image, text_and_empty_are_not_images) {
    static const char text[] = "hello, this is plain text, not a picture\n";
    decode_fails((const uint8_t *)text, sizeof text - 1, DAE_ERR_FORMAT,
                 "not a PNG, JPEG, BMP, GIF, PNM or TGA image");
    decode_fails((const uint8_t *)"", 0, DAE_ERR_FORMAT, "empty");
    decode_fails(NULL, 0, DAE_ERR_FORMAT, "empty");
    int w, h;
    char err[DAE_ERR_LEN] = "";
    cr_assert_eq(dae_image_probe((const uint8_t *)text, sizeof text - 1, &w, &h, err, sizeof err), DAE_ERR_FORMAT);
    cr_assert(strstr(err, "not a PNG") != NULL);
    cr_assert_null(dae_image_format_name((const uint8_t *)text, sizeof text - 1));
    static const uint8_t psd[] = "8BPS\0\1\0\0\0\0\0\0\0\3\0\0\0\1\0\0\0\1\0\x08\0\3";
    decode_fails(psd, sizeof psd - 1, DAE_ERR_FORMAT, "not a PNG");
}

Test(image, decompression_bomb_is_rejected_before_allocating) {
    membuf b = png_bomb(20000, 20000);
    cr_assert_lt(b.len, 1000);
    int w = 0, h = 0;
    char err[DAE_ERR_LEN] = "";
    cr_assert_eq(dae_image_probe(b.data, b.len, &w, &h, err, sizeof err), DAE_OK, "%s", err);
    cr_assert_eq(w, 20000);
    cr_assert_eq(h, 20000);
    decode_fails(b.data, b.len, DAE_ERR_INVALID,
                 "image is 20000x20000 = 400000000 pixels, over the limit of 16777216");
    /* An explicit limit applies the same way to a small real image. */
    membuf s = small_png();
    dae_image img;
    cr_assert_eq(dae_image_decode(s.data, s.len, 62, &img, err, sizeof err), DAE_ERR_INVALID);
    cr_assert(strstr(err, "9x7 = 63 pixels, over the limit of 62") != NULL, "%s", err);
    cr_assert_eq(dae_image_decode(s.data, s.len, 63, &img, err, sizeof err), DAE_OK, "%s", err);
    dae_image_free(&img);
    free(s.data);
    free(b.data);

    /* A BMP header claiming 30000 x 30000: the probe reads it, the
     * decoder refuses it before looking for pixels. */
    uint8_t bmp[54] = {'B', 'M', 0};
    bmp[10] = 54;                    /* pixel data offset */
    bmp[14] = 40;                    /* BITMAPINFOHEADER */
    bmp[18] = 0x30, bmp[19] = 0x75;  /* width 30000 */
    bmp[22] = 0x30, bmp[23] = 0x75;  /* height 30000 */
    bmp[26] = 1, bmp[28] = 24;       /* planes, bits per pixel */
    cr_assert_eq(dae_image_probe(bmp, sizeof bmp, &w, &h, err, sizeof err), DAE_OK, "%s", err);
    cr_assert_eq(w, 30000);
    decode_fails(bmp, sizeof bmp, DAE_ERR_INVALID, "30000x30000 = 900000000 pixels, over the limit");
}

/* A chunk claiming more bytes than the file holds is refused before libpng
 * sees it (libpng allocated a text chunk's claimed length first: 1.1 GB
 * for the fuzzer's 5 KB file in tests/fuzz/corpus/fuzz_png), also when
 * the file ends within the chunk's first 12 bytes (fuzz_png_msan's 132-byte
 * file: a last sCAL header claiming 1128333312 bytes took 1.1 GB and 3 s). */
Test(image, png_chunk_longer_than_the_file_is_refused) {
    membuf b = small_png();
    const struct {
        uint8_t head[8];  /* the chunk's length and type */
        const char *rest; /* what the file holds after them */
        size_t rest_len;
    } cases[] = {
        {{0x44, 0x00, 0x00, 0x00, 't', 'E', 'X', 't'}, "Comment\0hello", 13}, /* 1140850688 bytes */
        {{0x43, 0x41, 0x00, 0x00, 's', 'C', 'A', 'L'}, "", 0},                 /* 1128333312 bytes */
        {{0x43, 0x41, 0x00, 0x00, 's', 'C', 'A', 'L'}, "1m2", 3},
        {{0x00, 0x00, 0x00, 0x00, 'I', 'E', 'N', 'D'}, "\xae\x42", 2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        membuf cut = {0};
        membuf_put(&cut, b.data, 33); /* signature + IHDR */
        membuf_put(&cut, cases[i].head, 8);
        membuf_put(&cut, cases[i].rest, cases[i].rest_len);
        const uint8_t *h = cases[i].head;
        unsigned claims = (unsigned)h[0] << 24 | (unsigned)h[1] << 16 | (unsigned)h[2] << 8 | h[3];
        char want[128];
        snprintf(want, sizeof want, "PNG: file is truncated (a chunk claims %u bytes and a CRC, %zu remain)", claims,
                 cases[i].rest_len);
        decode_fails(cut.data, cut.len, DAE_ERR_FORMAT, want);
        free(cut.data);
    }
    free(b.data);
}

/* Text chunks are metadata dae never reads, and libpng inflated each
 * compressed one (zTXt, iTXt) up to its 8 MB chunk limit and kept them
 * all: 100 chunks of 7.7 KB made a 771 KB upload cost 800 MB and 8 s.
 * Here 40 such chunks, each inflating to 7.9 MB, before an interlaced
 * image (so that libpng, not the plain fast path, decodes it): the
 * pixels are those of the file without them, and the decoder's peak
 * memory grows by no more than a few megabytes. */
Test(image, png_compressed_text_chunks_are_never_inflated) {
    uint16_t *s = random_samples(9 * 7, 255, 6);
    png_spec spec = {9, 7, PNG_COLOR_TYPE_GRAY, 8, PNG_INTERLACE_ADAM7, s, NULL, 0, NULL, 0, NULL, 0, 0};
    membuf plain = make_png(&spec);
    free(s);
    const size_t text_len = 7900000;
    uint8_t *text = malloc(text_len);
    cr_assert_not_null(text);
    memset(text, 'a', text_len);
    uint8_t z[16384];
    uLongf zlen = sizeof z;
    cr_assert_eq(compress2(z, &zlen, text, text_len, 9), Z_OK);
    free(text);
    static const char prefix[2][7] = {"k\0\0", "k\0\1\0\0\0"}; /* zTXt's and iTXt's fields before the text */
    static const size_t prefix_len[2] = {3, 6};
    uint8_t chunk[sizeof prefix[0] + sizeof z];
    membuf bomb = {0};
    membuf_put(&bomb, plain.data, 33); /* signature + IHDR */
    for (int i = 0; i < 40; i++) {
        int itxt = i % 2;
        memcpy(chunk, prefix[itxt], prefix_len[itxt]);
        memcpy(chunk + prefix_len[itxt], z, zlen);
        put_chunk(&bomb, itxt ? "iTXt" : "zTXt", chunk, (uint32_t)(prefix_len[itxt] + zlen));
    }
    membuf_put(&bomb, plain.data + 33, plain.len - 33);
    cr_assert_lt(bomb.len, 400000);

    dae_image want = decode_ok(&plain);
    struct rusage before, after;
    getrusage(RUSAGE_SELF, &before);
    dae_image got = decode_ok(&bomb);
    getrusage(RUSAGE_SELF, &after);
    cr_assert_lt(after.ru_maxrss - before.ru_maxrss, 16 * 1024, "peak RSS grew by %ld KiB",
                 after.ru_maxrss - before.ru_maxrss);
    cr_assert_eq(got.width, want.width);
    cr_assert_eq(got.height, want.height);
    cr_assert_eq(got.channels, want.channels);
    cr_assert_arr_eq(got.pixels, want.pixels, (size_t)want.width * want.height * want.channels);
    dae_image_free(&got);
    dae_image_free(&want);
    free(bomb.data);
    free(plain.data);
}

Test(image, zero_size_png_header_is_an_error) {
    membuf b = png_bomb(0, 5);
    dae_image img;
    char err[DAE_ERR_LEN] = "";
    cr_assert_neq(dae_image_decode(b.data, b.len, 0, &img, err, sizeof err), DAE_OK);
    int w, h;
    cr_assert_eq(dae_image_probe(b.data, b.len, &w, &h, err, sizeof err), DAE_ERR_FORMAT);
    free(b.data);
}

/* ------------------------------------------------------------ encoding */

Test(image, encode_decode_round_trip_every_channel_count) {
    for (int ch = 1; ch <= 4; ch++) {
        dae_image src;
        char err[DAE_ERR_LEN] = "";
        cr_assert_eq(dae_image_alloc(&src, 31, 17, ch, err, sizeof err), DAE_OK);
        dae_rng r;
        dae_rng_seed(&r, (uint64_t)ch, 1);
        for (size_t i = 0; i < (size_t)31 * 17 * ch; i++) src.pixels[i] = (uint8_t)dae_rng_below(&r, 256);
        uint8_t *png;
        size_t len;
        cr_assert_eq(dae_image_encode_png(&src, ch == 1 ? 0 : -1, &png, &len, err, sizeof err), DAE_OK, "%s", err);
        membuf b = {png, len, len};
        dae_image back = decode_ok(&b);
        cr_assert_eq(back.channels, ch);
        cr_assert_eq(back.width, 31);
        cr_assert_eq(back.height, 17);
        cr_assert_arr_eq(back.pixels, src.pixels, (size_t)31 * 17 * ch);
        dae_image_free(&back);
        dae_image_free(&src);
        free(png);
    }
}

Test(image, encode_rejects_bad_images) {
    dae_image bad = {0};
    uint8_t *png = (uint8_t *)1;
    size_t len = 5;
    char err[DAE_ERR_LEN] = "";
    cr_assert_eq(dae_image_encode_png(&bad, -1, &png, &len, err, sizeof err), DAE_ERR_INVALID);
    cr_assert_null(png);
    cr_assert_eq(len, 0);
    uint8_t px[4] = {0};
    dae_image five = {.width = 1, .height = 1, .channels = 5, .pixels = px};
    cr_assert_eq(dae_image_encode_png(&five, -1, &png, &len, err, sizeof err), DAE_ERR_INVALID);
    dae_image ok = {.width = 1, .height = 1, .channels = 1, .pixels = px};
    cr_assert_eq(dae_image_encode_png(&ok, 10, &png, &len, err, sizeof err), DAE_ERR_INVALID);
    cr_assert_eq(dae_image_alloc(&ok, 0, 3, 1, err, sizeof err), DAE_ERR_INVALID);
    cr_assert_eq(dae_image_alloc(&ok, 3, 3, 0, err, sizeof err), DAE_ERR_INVALID);
}

/* ------------------------------------------------------------ noise */

Test(image, noise_is_seeded_and_leaves_alpha) {
    dae_image a, b;
    char err[DAE_ERR_LEN] = "";
    cr_assert_eq(dae_image_alloc(&a, 20, 10, 4, err, sizeof err), DAE_OK);
    for (size_t i = 0; i < 800; i++) a.pixels[i] = (uint8_t)(i * 13);
    cr_assert_eq(dae_image_alloc(&b, 20, 10, 4, err, sizeof err), DAE_OK);
    memcpy(b.pixels, a.pixels, 800);
    uint8_t orig[800];
    memcpy(orig, a.pixels, 800);
    dae_noise_spec spec;
    cr_assert_eq(dae_noise_parse("gaussian:0.3", &spec, err, sizeof err), DAE_OK);
    cr_assert_eq(dae_image_add_noise(&a, &spec, 7, err, sizeof err), DAE_OK);
    cr_assert_eq(dae_image_add_noise(&b, &spec, 7, err, sizeof err), DAE_OK);
    cr_assert_arr_eq(a.pixels, b.pixels, 800, "same seed, same bytes");
    int changed = 0;
    for (int i = 0; i < 200; i++) {
        cr_assert_eq(a.pixels[i * 4 + 3], orig[i * 4 + 3], "alpha of pixel %d changed", i);
        changed += a.pixels[i * 4] != orig[i * 4];
    }
    cr_assert_gt(changed, 100);
    /* The three colour channels get different noise. */
    int same_rg = 0;
    for (int i = 0; i < 200; i++)
        same_rg += (a.pixels[i * 4] - orig[i * 4]) == (a.pixels[i * 4 + 1] - orig[i * 4 + 1]);
    cr_assert_lt(same_rg, 100);
    /* Zero noise changes nothing. */
    cr_assert_eq(dae_noise_parse("gaussian:0", &spec, err, sizeof err), DAE_OK);
    memcpy(b.pixels, orig, 800);
    cr_assert_eq(dae_image_add_noise(&b, &spec, 1, err, sizeof err), DAE_OK);
    cr_assert_arr_eq(b.pixels, orig, 800);
    dae_image_free(&a);
    dae_image_free(&b);
}

/* A gray image's plane converts in whole vectors and a tail: every
 * sample, wherever it falls, is clipped to [0, 1] (NaN and -inf to 0,
 * +inf to 255) and rounded to nearest. */
Test(image, gray_plane_conversion_clips_and_rounds_every_sample) {
    enum { N = 77 };
    dae_image img;
    char err[DAE_ERR_LEN];
    cr_assert_eq(dae_image_alloc(&img, N, 1, 1, err, sizeof err), DAE_OK);
    float plane[N];
    uint8_t want[N];
    for (int i = 0; i < N; i++) {
        plane[i] = (float)i / 60.0f - 0.1f; /* -0.1 to 1.17 */
        float v = plane[i] < 0.0f ? 0.0f : plane[i] > 1.0f ? 1.0f : plane[i];
        want[i] = (uint8_t)(int)(v * 255.0f + 0.5f);
    }
    static const int special[] = {0, 15, 16, 31, 63, 64, 76};
    for (size_t s = 0; s < sizeof special / sizeof special[0]; s++) {
        int i = special[s];
        plane[i] = s % 3 == 0 ? NAN : s % 3 == 1 ? INFINITY : -INFINITY;
        want[i] = s % 3 == 1 ? 255 : 0;
    }
    dae_image_from_plane(&img, 0, plane);
    for (int i = 0; i < N; i++)
        cr_assert_eq(img.pixels[i], want[i], "sample %d (%g): got %d, want %d", i, plane[i], img.pixels[i], want[i]);
    dae_image_free(&img);
}

Test(image, plane_conversion_clips_and_rounds) {
    dae_image img;
    char err[DAE_ERR_LEN];
    cr_assert_eq(dae_image_alloc(&img, 5, 1, 2, err, sizeof err), DAE_OK);
    float plane[5] = {-0.5f, 0.5f, 1.5f, NAN, 0.2f};
    dae_image_from_plane(&img, 0, plane);
    cr_assert_eq(img.pixels[0], 0);
    cr_assert_eq(img.pixels[2], 128);
    cr_assert_eq(img.pixels[4], 255);
    cr_assert_eq(img.pixels[6], 0);
    cr_assert_eq(img.pixels[8], 51);
    cr_assert_eq(img.pixels[1], 0, "other channels untouched");
    float back[5];
    dae_image_to_plane(&img, 0, back);
    cr_assert_float_eq(back[4], 0.2f, 1e-7);
    dae_image_free(&img);
}

/* ------------------------------------------------------------ files */

Test(image, files_write_atomically_and_read_back) {
    char dir[] = "/tmp/dae_image_test_XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char path[512], bad[512];
    snprintf(path, sizeof path, "%s/out.png", dir);
    snprintf(bad, sizeof bad, "%s/missing/out.png", dir);
    dae_image img;
    char err[DAE_ERR_LEN] = "";
    cr_assert_eq(dae_image_alloc(&img, 3, 2, 3, err, sizeof err), DAE_OK);
    img.pixels[4] = 99;
    cr_assert_eq(dae_image_save_png(path, &img, err, sizeof err), DAE_OK, "%s", err);
    dae_image back;
    cr_assert_eq(dae_image_load(path, 1 << 20, 0, &back, err, sizeof err), DAE_OK, "%s", err);
    cr_assert_arr_eq(back.pixels, img.pixels, 18);
    dae_image_free(&back);
    struct stat sb;
    cr_assert_eq(stat(path, &sb), 0);
    cr_assert_eq(sb.st_mode & 0777, 0644);

    cr_assert_eq(dae_image_save_png(bad, &img, err, sizeof err), DAE_ERR_IO);
    cr_assert(strstr(err, bad) != NULL, "%s", err);
    cr_assert_eq(dae_image_load(bad, 1 << 20, 0, &back, err, sizeof err), DAE_ERR_IO);
    cr_assert(strstr(err, "missing/out.png") != NULL, "%s", err);
    cr_assert_eq(dae_image_load(dir, 1 << 20, 0, &back, err, sizeof err), DAE_ERR_IO);
    cr_assert(strstr(err, "is a directory") != NULL, "%s", err);
    cr_assert_eq(dae_image_load(path, 10, 0, &back, err, sizeof err), DAE_ERR_IO);
    cr_assert(strstr(err, "over the limit of 10") != NULL, "%s", err);

    /* A text file: the message starts with its path. */
    char txt[512];
    snprintf(txt, sizeof txt, "%s/notes.txt", dir);
    cr_assert_eq(dae_file_write_atomic(txt, "just text\n", 10, err, sizeof err), DAE_OK);
    cr_assert_eq(dae_image_load(txt, 1 << 20, 0, &back, err, sizeof err), DAE_ERR_FORMAT);
    char want[700];
    snprintf(want, sizeof want, "%s: not a PNG, JPEG, BMP, GIF, PNM or TGA image", txt);
    cr_assert_str_eq(err, want);

    dae_image_free(&img);
    unlink(path);
    unlink(txt);
    cr_assert_eq(rmdir(dir), 0, "only the two files were left in %s", dir);
}
