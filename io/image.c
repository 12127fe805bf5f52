/* image.c - image decoding (format detection, PNG through libpng, the
 * other formats through the decoders of img_codec.h), PNG encoding into
 * memory (stored for small images, libpng for the rest), and image files
 * (through fileio.h). */
#include "image.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <libdeflate.h>
#include <png.h>

#include "deflate.h"
#include "fileio.h"
#include "img_codec.h"
#include "pages.h"

/* Largest buffer libpng may allocate for one chunk's data. The ancillary
 * chunks it would inflate (iCCP, zTXt, iTXt) are skipped unread
 * (png_decode_into), so this bounds only what a chunk may still claim. */
#define PNG_CHUNK_MALLOC_MAX (8u << 20)

static const uint8_t PNG_SIGNATURE[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};

static const char UNSUPPORTED[] = "not a PNG, JPEG, BMP, GIF, PNM or TGA image";

/* ------------------------------------------------------------ decoder helpers */

#ifdef DAE_IMAGE_FILL_CHECK
int dae_image_fill_byte;
#endif

uint8_t *img_pixels_alloc(size_t n) {
    uint8_t *p = malloc(n ? n : 1);
#ifdef DAE_IMAGE_FILL_CHECK
    if (p != NULL) memset(p, dae_image_fill_byte, n);
#endif
    return p;
}

dae_status img_check_size(long long width, long long height, size_t max_pixels, char *err, size_t errlen) {
    if (max_pixels == 0) max_pixels = DAE_IMAGE_MAX_PIXELS;
    if (width < 1 || height < 1)
        return dae_fail(err, errlen, DAE_ERR_FORMAT, "image size %lldx%lld is empty", width, height);
    unsigned long long pixels = (unsigned long long)width * (unsigned long long)height;
    if (pixels > max_pixels)
        return dae_fail(err, errlen, DAE_ERR_INVALID, "image is %lldx%lld = %llu pixels, over the limit of %zu",
                        width, height, pixels, max_pixels);
    if (width > DAE_IMAGE_MAX_SIDE || height > DAE_IMAGE_MAX_SIDE)
        return dae_fail(err, errlen, DAE_ERR_INVALID, "image is %lldx%lld, over the side limit of %d",
                        width, height, DAE_IMAGE_MAX_SIDE);
    return DAE_OK;
}

const char *dae_image_format_name(const uint8_t *buf, size_t len) {
    if (buf == NULL || len == 0) return NULL;
    if (len >= 8 && memcmp(buf, PNG_SIGNATURE, 8) == 0) return "PNG";
    if (len >= 3 && buf[0] == 0xff && buf[1] == 0xd8 && buf[2] == 0xff) return "JPEG";
    if (len >= 6 && (memcmp(buf, "GIF87a", 6) == 0 || memcmp(buf, "GIF89a", 6) == 0)) return "GIF";
    if (len >= 2 && buf[0] == 'B' && buf[1] == 'M') return "BMP";
    if (len >= 2 && buf[0] == 'P' && buf[1] >= '1' && buf[1] <= '6') return "PNM";
    /* TGA has no magic number: its header fields are judged. */
    if (img_tga_test(buf, len)) return "TGA";
    return NULL;
}

/* Names the format of buf or fails with the messages every entry point
 * shares (empty input, unsupported format, truncated PNG signature). */
static dae_status identify(const uint8_t *buf, size_t len, const char **name, char *err, size_t errlen) {
    if (buf == NULL || len == 0)
        return dae_fail(err, errlen, DAE_ERR_FORMAT, "empty (0 bytes), %s", UNSUPPORTED);
    if (len < 8 && memcmp(buf, PNG_SIGNATURE, len) == 0)
        return dae_fail(err, errlen, DAE_ERR_FORMAT, "PNG: file is truncated (%zu bytes)", len);
    if (len > INT_MAX)
        return dae_fail(err, errlen, DAE_ERR_FORMAT, "image file of %zu bytes is too large", len);
    *name = dae_image_format_name(buf, len);
    if (*name == NULL) return dae_fail(err, errlen, DAE_ERR_FORMAT, "%s", UNSUPPORTED);
    if (strcmp(*name, "PNM") == 0 && buf[1] != '5' && buf[1] != '6')
        return dae_fail(err, errlen, DAE_ERR_FORMAT,
                        "PNM: only binary P5 (gray) and P6 (RGB) files are supported, not P%c", buf[1]);
    return DAE_OK;
}

/* Reads a big-endian 32-bit integer. */
static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

dae_status dae_image_probe(const uint8_t *buf, size_t len, int *width, int *height,
                           char *err, size_t errlen) {
    const char *name = NULL;
    dae_status st = identify(buf, len, &name, err, errlen);
    if (st != DAE_OK) return st;
    long long w, h;
    if (strcmp(name, "PNG") == 0) {
        /* Signature, then the IHDR chunk: length 13, "IHDR", width, height. */
        if (len < 8 + 8 + 13 + 4)
            return dae_fail(err, errlen, DAE_ERR_FORMAT, "PNG: file is truncated (%zu bytes)", len);
        if (be32(buf + 8) != 13 || memcmp(buf + 12, "IHDR", 4) != 0)
            return dae_fail(err, errlen, DAE_ERR_FORMAT, "PNG: the first chunk is not a valid IHDR");
        w = be32(buf + 16), h = be32(buf + 20);
        if (w > 0x7fffffffLL || h > 0x7fffffffLL)
            return dae_fail(err, errlen, DAE_ERR_FORMAT, "PNG: invalid image size in IHDR");
    } else {
        int iw = 0, ih = 0;
        st = strcmp(name, "JPEG") == 0  ? img_jpeg_probe(buf, len, &iw, &ih, err, errlen)
             : strcmp(name, "GIF") == 0 ? img_gif_probe(buf, len, &iw, &ih, err, errlen)
             : strcmp(name, "BMP") == 0 ? img_bmp_probe(buf, len, &iw, &ih, err, errlen)
             : strcmp(name, "PNM") == 0 ? img_pnm_probe(buf, len, &iw, &ih, err, errlen)
                                        : img_tga_probe(buf, len, &iw, &ih, err, errlen);
        if (st != DAE_OK) return st;
        w = iw, h = ih;
    }
    if (w < 1 || h < 1)
        return dae_fail(err, errlen, DAE_ERR_FORMAT, "%s: image size %lldx%lld is empty", name, w, h);
    *width = w > INT_MAX ? INT_MAX : (int)w;
    *height = h > INT_MAX ? INT_MAX : (int)h;
    return DAE_OK;
}

/* ------------------------------------------------------------ PNG decode */

typedef struct {
    const uint8_t *buf;
    size_t len, pos;
    size_t max_pixels;
    dae_status status; /* why decoding stopped, when it did */
    char msg[DAE_ERR_LEN];
    uint8_t *pixels;   /* owned until handed to the image */
    png_bytep *rows;
    int width, height, channels, source_16bit;
} png_reader;

/* Rewrites libpng's chunk errors "IDAT: CRC error" as "CRC error in IDAT". */
static void png_format_message(char *out, size_t len, const char *msg) {
    int chunk = strlen(msg) > 6 && msg[4] == ':' && msg[5] == ' ';
    for (int i = 0; i < 4 && chunk; i++)
        chunk = (msg[i] >= 'A' && msg[i] <= 'Z') || (msg[i] >= 'a' && msg[i] <= 'z');
    if (chunk) snprintf(out, len, "PNG: %s in %.4s", msg + 6, msg);
    else snprintf(out, len, "PNG: %s", msg);
}

/* libpng's error callback: keeps the message and unwinds to the setjmp. */
static void png_error_cb(png_structp png, png_const_charp msg) {
    png_reader *r = png_get_error_ptr(png);
    if (r != NULL) {
        png_format_message(r->msg, sizeof r->msg, msg);
        if (r->status == DAE_OK) r->status = DAE_ERR_FORMAT;
    }
    png_longjmp(png, 1);
}

/* Warnings (bad ancillary CRCs, odd sRGB profiles) do not stop decoding. */
static void png_warning_cb(png_structp png, png_const_charp msg) {
    (void)png;
    (void)msg;
}

/* libpng's read callback: hands out the next n bytes of the buffer, or
 * stops decoding with "file is truncated". */
static void png_read_cb(png_structp png, png_bytep data, size_t n) {
    png_reader *r = png_get_io_ptr(png);
    if (n > r->len - r->pos) png_error(png, "file is truncated");
    memcpy(data, r->buf + r->pos, n);
    r->pos += n;
}

/* Runs libpng over r->buf into r->pixels; every libpng failure longjmps
 * back here. Allocations live in r so the caller can release them. */
static dae_status png_decode_into(png_structp png, png_infop info, png_reader *r) {
    if (setjmp(png_jmpbuf(png))) return r->status != DAE_OK ? r->status : DAE_ERR_FORMAT;
    png_set_read_fn(png, r, png_read_cb);
    png_set_user_limits(png, 0x7fffffffu, 0x7fffffffu); /* our own limit below names the size */
    png_set_chunk_malloc_max(png, PNG_CHUNK_MALLOC_MAX);
    /* Every chunk but IHDR, PLTE, tRNS, IDAT and IEND is skipped unread:
     * dae uses no metadata, and libpng kept every text chunk,
     * a compressed one inflated up to the chunk limit (a 771 KB upload of
     * 100 zTXt chunks made 800 MB of text in 8 s). */
    png_set_keep_unknown_chunks(png, PNG_HANDLE_CHUNK_NEVER, NULL, -1);
    png_read_info(png, info);
    png_uint_32 w, h;
    int depth, color, interlace;
    png_get_IHDR(png, info, &w, &h, &depth, &color, &interlace, NULL, NULL);
    dae_status st = img_check_size(w, h, r->max_pixels, r->msg, sizeof r->msg);
    if (st != DAE_OK) return r->status = st;
    r->source_16bit = depth == 16;
    png_set_expand(png); /* palette -> RGB, gray < 8 bits -> 8, tRNS -> alpha */
    if (depth == 16) png_set_scale_16(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    int channels = png_get_channels(png, info);
    size_t rowbytes = png_get_rowbytes(png, info);
    if (channels < 1 || channels > 4 || png_get_bit_depth(png, info) != 8 || rowbytes != (size_t)w * channels)
        png_error(png, "unexpected sample layout after conversion to 8 bits");
    r->pixels = img_pixels_alloc((size_t)h * rowbytes);
    r->rows = malloc(sizeof(png_bytep) * h);
    if (r->pixels == NULL || r->rows == NULL) {
        snprintf(r->msg, sizeof r->msg, "PNG: out of memory for a %ux%u image", (unsigned)w, (unsigned)h);
        return r->status = DAE_ERR_NOMEM;
    }
    for (png_uint_32 y = 0; y < h; y++) r->rows[y] = r->pixels + (size_t)y * rowbytes;
    png_read_image(png, r->rows);
    png_read_end(png, NULL); /* checks the rest of the stream and the trailing CRCs */
    r->width = (int)w, r->height = (int)h, r->channels = channels;
    return DAE_OK;
}

/* Checks the CRC of every critical chunk before decoding, so corrupt image
 * data is reported as the CRC error it is rather than as whatever inflating
 * makes of the damaged bytes, and refuses a chunk that claims more bytes
 * than the file has left: libpng would allocate what a text chunk claims
 * before reading it (a 5 KB file claiming a 1.1 GB tEXt took 1.1 GB and
 * 3 s; so did a file ending 8 bytes into a chunk, its length and type).
 * Ancillary chunks' CRCs are left to libpng, which skips bad ones. */
static dae_status png_check_crcs(const uint8_t *buf, size_t len, char *err, size_t errlen) {
    size_t pos = 8;
    while (len - pos >= 8) { /* a chunk's length and type: what libpng sizes its buffer by */
        uint32_t n = be32(buf + pos);
        const uint8_t *type = buf + pos + 4;
        size_t left = len - pos - 8; /* for its data and its CRC */
        if (n > 0x7fffffffu)
            return dae_fail(err, errlen, DAE_ERR_FORMAT, "PNG: invalid chunk length %u", (unsigned)n);
        if (left < 4 || n > left - 4)
            return dae_fail(err, errlen, DAE_ERR_FORMAT,
                            "PNG: file is truncated (a chunk claims %u bytes and a CRC, %zu remain)", (unsigned)n,
                            left);
        if (type[0] >= 'A' && type[0] <= 'Z') {
            uint32_t crc = libdeflate_crc32(0, type, 4 + (size_t)n);
            if (crc != be32(buf + pos + 8 + n))
                return dae_fail(err, errlen, DAE_ERR_FORMAT, "PNG: CRC error in %.4s", (const char *)type);
        }
        if (memcmp(type, "IEND", 4) == 0) break;
        pos += 12 + (size_t)n;
    }
    return DAE_OK;
}

/* ------------------------------------------------- plain PNG fast path */

/* PNG's filters undone on one row (PNG spec 9.2): cur = the row's filtered
 * bytes (n of them, bpp a pixel) reconstructed in place, prev the row
 * above (NULL for the first). */
static void png_unfilter(int filter, uint8_t *cur, const uint8_t *prev, size_t n, int bpp) {
    for (size_t i = 0; i < n; i++) {
        int a = i >= (size_t)bpp ? cur[i - bpp] : 0, b = prev != NULL ? prev[i] : 0;
        int c = i >= (size_t)bpp && prev != NULL ? prev[i - bpp] : 0;
        int pred = 0;
        switch (filter) {
        case 1: pred = a; break;
        case 2: pred = b; break;
        case 3: pred = (a + b) / 2; break;
        case 4: {
            int p = a + b - c, pa = abs(p - a), pb = abs(p - b), pc = abs(p - c);
            pred = pa <= pb && pa <= pc ? a : pb <= pc ? b : c;
            break;
        }
        default: break;
        }
        cur[i] = (uint8_t)(cur[i] + pred);
    }
}

/* Room past the rows for libdeflate's fast loop, which stops this far
 * from the end of its output (2 literals and a longest match, and the
 * match copy's overrun): without it the last 299 bytes of a 28x28 digit's
 * 812 would be inflated by the careful loop. */
enum { INFLATE_SLACK = 299 };

/* Inflates the zlib stream of the consecutive IDAT chunks (the first at
 * pos, total bytes of data in all) into raw (n bytes, and INFLATE_SLACK
 * more of room); 1 when it gives exactly n bytes, ends with the last IDAT
 * and its Adler-32 holds. libdeflate takes a stream whole: in one chunk
 * it is read where it lies, in several they are joined in a copy first. */
static int png_inflate_idats(const uint8_t *buf, size_t pos, size_t total, uint8_t *raw, size_t n) {
    struct libdeflate_decompressor *d = dae_thread_inflater(); /* NULL: libpng decodes */
    if (d == NULL) return 0;
    const uint8_t *stream = buf + pos + 8;
    uint8_t *joined = NULL;
    if (be32(buf + pos) != total) {
        if ((joined = malloc(total)) == NULL) return 0;
        for (size_t at = 0; at < total; pos += 12 + (size_t)be32(buf + pos)) {
            memcpy(joined + at, buf + pos + 8, be32(buf + pos));
            at += be32(buf + pos);
        }
        stream = joined;
    }
    size_t used = 0, made = 0;
    int whole = libdeflate_zlib_decompress_ex(d, stream, total, raw, n + INFLATE_SLACK, &used, &made) ==
                    LIBDEFLATE_SUCCESS &&
                used == total && made == n;
    free(joined);
    return whole;
}

int img_png_decode_plain(const uint8_t *buf, size_t len, size_t max_pixels, dae_image *out) {
    static const int CHANNELS[7] = {1, 0, 3, 0, 2, 0, 4}; /* by colour type; 0: not plain */
    if (len < 8 + 25 || be32(buf + 8) != 13 || memcmp(buf + 12, "IHDR", 4) != 0) return 0;
    const uint8_t *ihdr = buf + 16;
    uint32_t w = be32(ihdr), h = be32(ihdr + 4);
    int channels = ihdr[9] <= 6 ? CHANNELS[ihdr[9]] : 0;
    if (ihdr[8] != 8 || channels == 0 || ihdr[10] != 0 || ihdr[11] != 0 || ihdr[12] != 0) return 0;
    char ignored[DAE_ERR_LEN];
    if (img_check_size(w, h, max_pixels, ignored, sizeof ignored) != DAE_OK) return 0;
    /* IHDR, ancillary chunks, consecutive IDATs, ancillary chunks, IEND; no
     * tRNS (libpng turns it into alpha), no other critical chunk, and
     * chunk names of ASCII letters only (libpng refuses any other) */
    size_t pos = 8 + 25, idat = 0, idat_bytes = 0;
    int after_idat = 0;
    for (;;) {
        if (len - pos < 12 || be32(buf + pos) > len - pos - 12) return 0;
        const uint8_t *type = buf + pos + 4;
        for (int i = 0; i < 4; i++)
            if (!((type[i] >= 'A' && type[i] <= 'Z') || (type[i] >= 'a' && type[i] <= 'z'))) return 0;
        if (memcmp(type, "IEND", 4) == 0) break;
        if (memcmp(type, "IDAT", 4) == 0) {
            if (after_idat) return 0;
            if (idat == 0) idat = pos;
            idat_bytes += be32(buf + pos);
        } else {
            if ((type[0] >= 'A' && type[0] <= 'Z') || memcmp(type, "tRNS", 4) == 0) return 0;
            after_idat = idat != 0;
        }
        pos += 12 + (size_t)be32(buf + pos);
    }
    if (idat == 0) return 0;
    size_t stride = (size_t)w * channels, raw_len = (size_t)h * (stride + 1);
    uint8_t *raw = malloc(raw_len + INFLATE_SLACK), *pixels = img_pixels_alloc((size_t)h * stride);
    int ok = raw != NULL && pixels != NULL && png_inflate_idats(buf, idat, idat_bytes, raw, raw_len);
    for (uint32_t y = 0; ok && y < h; y++) {
        const uint8_t *row = raw + (size_t)y * (stride + 1);
        uint8_t *cur = pixels + (size_t)y * stride;
        ok = row[0] <= 4;
        memcpy(cur, row + 1, stride);
        if (ok && row[0] != 0) png_unfilter(row[0], cur, y > 0 ? cur - stride : NULL, stride, channels);
    }
    free(raw);
    if (!ok) {
        free(pixels);
        return 0;
    }
    memset(out, 0, sizeof *out);
    out->width = (int)w, out->height = (int)h, out->channels = channels;
    out->format = "PNG";
    out->pixels = pixels;
    return 1;
}

/* Decodes a PNG (signature already seen) into *out; see dae_image_decode. */
static dae_status png_decode(const uint8_t *buf, size_t len, size_t max_pixels, dae_image *out,
                             char *err, size_t errlen) {
    dae_status crc = png_check_crcs(buf, len, err, errlen);
    if (crc != DAE_OK) return crc;
    if (img_png_decode_plain(buf, len, max_pixels, out)) return DAE_OK;
    png_reader *r = calloc(1, sizeof *r);
    if (r == NULL) return dae_fail(err, errlen, DAE_ERR_NOMEM, "PNG: out of memory");
    r->buf = buf, r->len = len, r->max_pixels = max_pixels;
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, r, png_error_cb, png_warning_cb);
    png_infop info = png != NULL ? png_create_info_struct(png) : NULL;
    dae_status st;
    if (info == NULL) {
        st = dae_fail(err, errlen, DAE_ERR_NOMEM, "PNG: out of memory");
    } else {
        st = png_decode_into(png, info, r);
        if (st != DAE_OK) dae_fail(err, errlen, st, "%s", r->msg);
    }
    png_destroy_read_struct(png != NULL ? &png : NULL, info != NULL ? &info : NULL, NULL);
    free(r->rows);
    if (st == DAE_OK) {
        out->width = r->width, out->height = r->height, out->channels = r->channels;
        out->source_16bit = r->source_16bit;
        out->format = "PNG";
        out->pixels = r->pixels;
    } else {
        free(r->pixels);
    }
    free(r);
    return st;
}

dae_status dae_image_decode(const uint8_t *buf, size_t len, size_t max_pixels, dae_image *out,
                            char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    const char *name = NULL;
    dae_status st = identify(buf, len, &name, err, errlen);
    if (st != DAE_OK) return st;
    if (strcmp(name, "PNG") == 0) st = png_decode(buf, len, max_pixels, out, err, errlen);
    else if (strcmp(name, "JPEG") == 0) st = img_jpeg_decode(buf, len, max_pixels, out, err, errlen);
    else if (strcmp(name, "GIF") == 0) st = img_gif_decode(buf, len, max_pixels, out, err, errlen);
    else if (strcmp(name, "BMP") == 0) st = img_bmp_decode(buf, len, max_pixels, out, err, errlen);
    else if (strcmp(name, "PNM") == 0) st = img_pnm_decode(buf, len, max_pixels, out, err, errlen);
    else st = img_tga_decode(buf, len, max_pixels, out, err, errlen);
    if (st != DAE_OK) memset(out, 0, sizeof *out);
    return st;
}

/* ------------------------------------------------------------ PNG encode */

/* PNG's colour type for 1 to 4 channels (libpng's constants are the
 * numbers the IHDR chunk carries, so the stored writer uses them too). */
static const uint8_t PNG_COLOR_TYPES[5] = {0, PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA, PNG_COLOR_TYPE_RGB,
                                           PNG_COLOR_TYPE_RGBA};

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
    put32(chunk + 8 + len, libdeflate_crc32(0, chunk + 4, 4 + (size_t)len));
    return chunk + 12 + len;
}

/* The stored writer for small images: signature, IHDR, one IDAT holding a
 * zlib stream of a single stored block of unfiltered rows, IEND. raw is
 * the filtered size (<= DAE_PNG_STORED_MAX). */
static dae_status encode_stored(const dae_image *img, size_t raw, uint8_t **out, size_t *out_len, char *err,
                                size_t errlen) {
    const uint32_t idat_len = (uint32_t)(2 + 5 + raw + 4);
    const size_t total = 8 + (12 + 13) + (12 + idat_len) + 12;
    uint8_t *buf = malloc(total);
    if (buf == NULL) return dae_fail(err, errlen, DAE_ERR_NOMEM, "PNG: out of memory");
    memcpy(buf, PNG_SIGNATURE, 8);
    uint8_t *c = buf + 8, *d = chunk_begin(c, 13, "IHDR");
    put32(d, (uint32_t)img->width);
    put32(d + 4, (uint32_t)img->height);
    d[8] = 8, d[9] = PNG_COLOR_TYPES[img->channels], d[10] = 0, d[11] = 0, d[12] = 0;
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
    put32(rows + raw, libdeflate_adler32(1, rows, raw));
    c = chunk_end(c, idat_len);
    chunk_begin(c, 0, "IEND");
    chunk_end(c, 0);
    *out = buf;
    *out_len = total;
    return DAE_OK;
}

typedef struct {
    uint8_t *data;
    size_t len, cap;
    dae_status status;
    char msg[DAE_ERR_LEN];
} png_writer;

/* libpng's write callback: appends to the growing buffer, doubling it;
 * stops encoding with DAE_ERR_NOMEM when it cannot grow. */
static void png_write_cb(png_structp png, png_bytep data, size_t n) {
    png_writer *w = png_get_io_ptr(png);
    if (n > w->cap - w->len) {
        size_t cap = w->cap ? w->cap : 4096;
        while (cap - w->len < n) {
            if (cap > SIZE_MAX / 2) {
                w->status = DAE_ERR_NOMEM;
                png_error(png, "output too large");
            }
            cap *= 2;
        }
        uint8_t *grown = realloc(w->data, cap);
        if (grown == NULL) {
            w->status = DAE_ERR_NOMEM;
            png_error(png, "out of memory");
        }
        dae_prefault(grown + w->len, cap - w->len);
        w->data = grown, w->cap = cap;
    }
    memcpy(w->data + w->len, data, n);
    w->len += n;
}

static void png_flush_cb(png_structp png) { (void)png; }

/* libpng's error callback when writing: keeps the message and unwinds. */
static void png_write_error_cb(png_structp png, png_const_charp msg) {
    png_writer *w = png_get_error_ptr(png);
    if (w != NULL) {
        png_format_message(w->msg, sizeof w->msg, msg);
        if (w->status == DAE_OK) w->status = DAE_ERR_INVALID;
    }
    png_longjmp(png, 1);
}

/* Runs libpng's writer over img into w; failures longjmp back here. */
static dae_status png_encode_into(png_structp png, png_infop info, const dae_image *img, int compression,
                                  png_writer *w) {
    if (setjmp(png_jmpbuf(png))) return w->status != DAE_OK ? w->status : DAE_ERR_INVALID;
    png_set_write_fn(png, w, png_write_cb, png_flush_cb);
    png_set_compression_level(png, compression);
    png_set_IHDR(png, info, (png_uint_32)img->width, (png_uint_32)img->height, 8, PNG_COLOR_TYPES[img->channels],
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    size_t stride = (size_t)img->width * (size_t)img->channels;
    for (int y = 0; y < img->height; y++) png_write_row(png, img->pixels + (size_t)y * stride);
    png_write_end(png, NULL);
    return DAE_OK;
}

dae_status dae_image_encode_png(const dae_image *img, int compression, uint8_t **out,
                                size_t *out_len, char *err, size_t errlen) {
    *out = NULL;
    *out_len = 0;
    if (img == NULL || img->pixels == NULL || img->width < 1 || img->height < 1 ||
        img->width > DAE_IMAGE_MAX_SIDE || img->height > DAE_IMAGE_MAX_SIDE || img->channels < 1 ||
        img->channels > 4)
        return dae_fail(err, errlen, DAE_ERR_INVALID, "PNG: cannot encode an empty or malformed image");
    if (compression < -1 || compression > 9)
        return dae_fail(err, errlen, DAE_ERR_INVALID, "PNG: compression level must be -1 to 9 (got %d)",
                        compression);
    size_t raw = (size_t)img->height * (1 + (size_t)img->width * (size_t)img->channels);
    if (raw <= DAE_PNG_STORED_MAX) return encode_stored(img, raw, out, out_len, err, errlen);
    png_writer *w = calloc(1, sizeof *w);
    if (w == NULL) return dae_fail(err, errlen, DAE_ERR_NOMEM, "PNG: out of memory");
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, w, png_write_error_cb, png_warning_cb);
    png_infop info = png != NULL ? png_create_info_struct(png) : NULL;
    dae_status st;
    if (info == NULL) {
        st = dae_fail(err, errlen, DAE_ERR_NOMEM, "PNG: out of memory");
    } else {
        st = png_encode_into(png, info, img, compression, w);
        if (st != DAE_OK) dae_fail(err, errlen, st, "%s", w->msg);
    }
    png_destroy_write_struct(png != NULL ? &png : NULL, info != NULL ? &info : NULL);
    if (st == DAE_OK) {
        *out = w->data;
        *out_len = w->len;
    } else {
        free(w->data);
    }
    free(w);
    return st;
}

/* ------------------------------------------------------------ files */

dae_status dae_image_load(const char *path, size_t max_bytes, size_t max_pixels, dae_image *out,
                          char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    uint8_t *data;
    size_t len;
    dae_status st = dae_file_read(path, max_bytes, &data, &len, err, errlen);
    if (st != DAE_OK) return st;
    char detail[DAE_ERR_LEN];
    st = dae_image_decode(data, len, max_pixels, out, detail, sizeof detail);
    free(data);
    if (st != DAE_OK) return dae_fail(err, errlen, st, "%s: %s", path, detail);
    return DAE_OK;
}

dae_status dae_image_save_png(const char *path, const dae_image *img, char *err, size_t errlen) {
    uint8_t *png;
    size_t len;
    char detail[DAE_ERR_LEN];
    dae_status st = dae_image_encode_png(img, -1, &png, &len, detail, sizeof detail);
    if (st != DAE_OK) return dae_fail(err, errlen, st, "%s: %s", path, detail);
    st = dae_file_write_atomic(path, png, len, err, errlen);
    free(png);
    return st;
}
