/* fuzz_image.h - the body of the image-decoder fuzzers: each fuzz_FMT.c
 * defines FUZZ_FORMAT (the name dae_image_format_name gives the format)
 * and includes this file. Inputs of another format are rejected (kept out
 * of the corpus), so each target spends its time on one decoder.
 *
 * Beyond "no crash, no sanitizer report" it checks the decoder contract:
 *   - a failure leaves the image zeroed and says why;
 *   - a success has a sane size within the pixel limit;
 *   - every output byte was written by the decoder: built with
 *     -DDAE_IMAGE_FILL_CHECK (ASan + UBSan), the input is decoded twice
 *     into pixel buffers pre-filled with 0x00 and then 0xff, and the two
 *     results must be identical (same status, same bytes); built with
 *     MemorySanitizer, the pixels are checked to be initialised. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "image.h"
#include "img_codec.h"

#if defined(__has_feature)
#if __has_feature(memory_sanitizer)
#include <sanitizer/msan_interface.h>
#define FUZZ_MSAN 1
#endif
#endif

/* Small enough that a fuzzed header cannot make every input slow. */
#define FUZZ_MAX_PIXELS ((size_t)1 << 20)

static void fuzz_die(const char *what, const char *err) {
    fprintf(stderr, "fuzz_image (%s): %s (%s)\n", FUZZ_FORMAT, what, err);
    abort();
}

/* Decodes data once with fill byte fill; checks the status contract. */
static dae_status fuzz_decode(const uint8_t *data, size_t size, int fill, dae_image *img, char *err, size_t errlen) {
#ifdef DAE_IMAGE_FILL_CHECK
    dae_image_fill_byte = fill;
#else
    (void)fill;
#endif
    err[0] = '\0';
    dae_status st = dae_image_decode(data, size, FUZZ_MAX_PIXELS, img, err, errlen);
    if (st != DAE_OK) {
        if (img->pixels != NULL || img->width != 0) fuzz_die("a failed decode left an image behind", err);
        if (err[0] == '\0') fuzz_die("a failed decode gave no message", "");
        return st;
    }
    if (img->pixels == NULL || img->width < 1 || img->height < 1 || img->channels < 1 || img->channels > 4 ||
        (size_t)img->width * (size_t)img->height > FUZZ_MAX_PIXELS || img->format == NULL ||
        strcmp(img->format, FUZZ_FORMAT) != 0)
        fuzz_die("a successful decode returned a malformed image", "");
#ifdef FUZZ_MSAN
    __msan_check_mem_is_initialized(img->pixels, (size_t)img->width * img->height * img->channels);
#endif
    return st;
}

/* Runs every check on one input. */
static void fuzz_one(const uint8_t *data, size_t size) {
    char err[DAE_ERR_LEN];
    int w, h;
    if (dae_image_probe(data, size, &w, &h, err, sizeof err) == DAE_OK && (w < 1 || h < 1))
        fuzz_die("probe gave an empty size", err);
    dae_image a, b;
    dae_status sa = fuzz_decode(data, size, 0x00, &a, err, sizeof err);
#ifdef DAE_IMAGE_FILL_CHECK
    char err_b[DAE_ERR_LEN];
    dae_status sb = fuzz_decode(data, size, 0xff, &b, err_b, sizeof err_b);
    if (sa != sb) fuzz_die("two decodes of the same input disagree on success", err);
    if (sa == DAE_OK) {
        size_t n = (size_t)a.width * a.height * a.channels;
        if (a.width != b.width || a.height != b.height || a.channels != b.channels ||
            memcmp(a.pixels, b.pixels, n) != 0)
            fuzz_die("output bytes depend on the buffer's previous contents: some were never written", "");
    } else if (strcmp(err, err_b) != 0) {
        fuzz_die("two decodes of the same input give different messages", err_b);
    }
    dae_image_free(&b);
#else
    (void)b;
#endif
    dae_image_free(&a);
}

#ifdef FUZZ_PNG_FIX_CRC
#include <zlib.h>
/* A mutated PNG almost always fails dae's CRC check before libpng sees
 * it; a copy with every chunk's CRC recomputed goes on into libpng. */
static void fuzz_png_fixed(const uint8_t *data, size_t size) {
    uint8_t *copy = malloc(size ? size : 1);
    if (copy == NULL) return;
    memcpy(copy, data, size);
    size_t pos = 8;
    while (size - pos >= 12) {
        uint32_t n = (uint32_t)copy[pos] << 24 | (uint32_t)copy[pos + 1] << 16 | (uint32_t)copy[pos + 2] << 8 |
                     copy[pos + 3];
        if (n > size - pos - 12) break;
        uint32_t crc = (uint32_t)crc32(0, copy + pos + 4, 4 + n);
        uint8_t *c = copy + pos + 8 + n;
        c[0] = (uint8_t)(crc >> 24), c[1] = (uint8_t)(crc >> 16), c[2] = (uint8_t)(crc >> 8), c[3] = (uint8_t)crc;
        pos += 12 + (size_t)n;
    }
    fuzz_one(copy, size);
    free(copy);
}
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *name = dae_image_format_name(data, size);
    if (name == NULL || strcmp(name, FUZZ_FORMAT) != 0) return -1;
    fuzz_one(data, size);
#ifdef FUZZ_PNG_FIX_CRC
    fuzz_png_fixed(data, size);
#endif
    return 0;
}
