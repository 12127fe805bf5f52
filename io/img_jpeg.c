/* img_jpeg.c - JPEG through libjpeg-turbo: baseline and progressive,
 * restart markers, gray, YCbCr/RGB and CMYK/YCCK (converted to RGB).
 * libjpeg's warnings (premature end of data, corrupt entropy data, bogus
 * progression) are errors here: libjpeg would pad such an image with gray
 * and call it decoded. CPU is bounded three ways: the pixel limit is
 * checked from the header, a file with fewer bytes than one bit per
 * 8x8 block of its claimed size is refused before decoding, and a
 * progressive file may have at most JPEG_MAX_SCANS scans. Arithmetic
 * coding is refused (stb_image, which dae used before, never read it). */
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>

#include "img_codec.h"

/* libjpeg's default progression has 10 scans for colour and 6 for gray;
 * libjpeg-turbo's own fuzzers stop at 500. */
#define JPEG_MAX_SCANS 100

typedef struct {
    struct jpeg_error_mgr pub; /* first: libjpeg's err pointer is cast to this */
    struct jpeg_progress_mgr progress;
    jmp_buf jmp;
    char msg[JMSG_LENGTH_MAX + 64];
    uint8_t *pixels; /* owned until handed to the image */
    uint8_t *row;    /* CMYK scanline */
} jpeg_guard;

/* libjpeg's fatal-error handler: keeps the message and unwinds. */
static void jpeg_error_exit(j_common_ptr cinfo) {
    jpeg_guard *g = (jpeg_guard *)cinfo->err;
    char text[JMSG_LENGTH_MAX];
    (*cinfo->err->format_message)(cinfo, text);
    snprintf(g->msg, sizeof g->msg, "JPEG: %s", text);
    longjmp(g->jmp, 1);
}

/* Warnings (level -1) stop decoding like errors; trace messages are
 * ignored. */
static void jpeg_emit_message(j_common_ptr cinfo, int level) {
    if (level < 0) jpeg_error_exit(cinfo);
}

/* Called by libjpeg between iMCU rows: stops a file with too many scans. */
static void jpeg_progress(j_common_ptr cinfo) {
    j_decompress_ptr d = (j_decompress_ptr)cinfo;
    if (d->input_scan_number > JPEG_MAX_SCANS) {
        jpeg_guard *g = (jpeg_guard *)cinfo->err;
        snprintf(g->msg, sizeof g->msg, "JPEG: more than %d progressive scans", JPEG_MAX_SCANS);
        longjmp(g->jmp, 1);
    }
}

/* Sets up cinfo with g's handlers (cinfo and g zeroed by the caller). */
static void jpeg_setup(struct jpeg_decompress_struct *cinfo, jpeg_guard *g) {
    cinfo->err = jpeg_std_error(&g->pub);
    g->pub.error_exit = jpeg_error_exit;
    g->pub.emit_message = jpeg_emit_message;
    g->progress.progress_monitor = jpeg_progress;
}

/* Reads the header and applies the checks that need no pixels: size,
 * arithmetic coding, number of components. Errors longjmp. */
static dae_status jpeg_header(struct jpeg_decompress_struct *cinfo, jpeg_guard *g, const uint8_t *buf,
                              size_t len) {
    jpeg_create_decompress(cinfo);
    cinfo->progress = &g->progress;
    jpeg_mem_src(cinfo, buf, (unsigned long)len);
    jpeg_read_header(cinfo, TRUE);
    if (cinfo->arith_code) {
        snprintf(g->msg, sizeof g->msg, "JPEG: arithmetic coding is not supported");
        return DAE_ERR_FORMAT;
    }
    int n = cinfo->num_components;
    if (n != 1 && n != 3 && n != 4) {
        snprintf(g->msg, sizeof g->msg, "JPEG: %d colour components are not supported", n);
        return DAE_ERR_FORMAT;
    }
    if (cinfo->image_width < 1 || cinfo->image_height < 1) {
        snprintf(g->msg, sizeof g->msg, "JPEG: image size %ux%u is empty", cinfo->image_width, cinfo->image_height);
        return DAE_ERR_FORMAT;
    }
    return DAE_OK;
}

/* The probe: header only. */
static dae_status jpeg_probe_into(struct jpeg_decompress_struct *cinfo, jpeg_guard *g, const uint8_t *buf,
                                  size_t len, int *width, int *height) {
    if (setjmp(g->jmp)) return DAE_ERR_FORMAT;
    dae_status st = jpeg_header(cinfo, g, buf, len);
    if (st != DAE_OK) return st;
    *width = (int)cinfo->image_width, *height = (int)cinfo->image_height;
    return DAE_OK;
}

dae_status img_jpeg_probe(const uint8_t *buf, size_t len, int *width, int *height, char *err, size_t errlen) {
    struct jpeg_decompress_struct cinfo;
    jpeg_guard g;
    memset(&cinfo, 0, sizeof cinfo);
    memset(&g, 0, sizeof g);
    jpeg_setup(&cinfo, &g);
    dae_status st = jpeg_probe_into(&cinfo, &g, buf, len, width, height);
    jpeg_destroy_decompress(&cinfo);
    if (st != DAE_OK) return dae_fail(err, errlen, st, "%s", g.msg);
    return DAE_OK;
}

/* Converts one CMYK scanline (as Adobe writes it: inverted, 255 = no
 * ink) to RGB, the way stb_image did: R = C * K / 255. */
static void jpeg_cmyk_to_rgb(const uint8_t *cmyk, uint8_t *rgb, size_t width) {
    for (size_t x = 0; x < width; x++, cmyk += 4, rgb += 3) {
        unsigned k = cmyk[3];
        rgb[0] = (uint8_t)((cmyk[0] * k + 127) / 255);
        rgb[1] = (uint8_t)((cmyk[1] * k + 127) / 255);
        rgb[2] = (uint8_t)((cmyk[2] * k + 127) / 255);
    }
}

/* The decode proper; every libjpeg failure longjmps back here. On success
 * g->pixels holds the image; on failure the caller frees it. */
static dae_status jpeg_decode_into(struct jpeg_decompress_struct *cinfo, jpeg_guard *g, const uint8_t *buf,
                                   size_t len, size_t max_pixels, int *channels) {
    if (setjmp(g->jmp)) return DAE_ERR_FORMAT;
    dae_status st = jpeg_header(cinfo, g, buf, len);
    if (st != DAE_OK) return st;
    st = img_check_size(cinfo->image_width, cinfo->image_height, max_pixels, g->msg, sizeof g->msg);
    if (st != DAE_OK) return st;

    /* Every 8x8 block of every component costs at least one bit of
     * entropy-coded data (a DC code), so a file shorter than that cannot
     * hold the image it claims: refuse it before spending CPU on it. */
    unsigned long long blocks = 0;
    for (int c = 0; c < cinfo->num_components; c++)
        blocks += (unsigned long long)cinfo->comp_info[c].width_in_blocks * cinfo->comp_info[c].height_in_blocks;
    if (len < blocks / 8) {
        snprintf(g->msg, sizeof g->msg,
                 "JPEG: file is truncated: %zu bytes cannot hold a %ux%u image (at least %llu bytes)", len,
                 cinfo->image_width, cinfo->image_height, blocks / 8);
        return DAE_ERR_FORMAT;
    }

    int n = cinfo->num_components;
    cinfo->out_color_space = n == 1 ? JCS_GRAYSCALE : n == 3 ? JCS_RGB : JCS_CMYK;
    cinfo->dct_method = JDCT_ISLOW; /* exact integer IDCT: the same bytes everywhere */
    jpeg_start_decompress(cinfo);
    if (cinfo->output_components != n || cinfo->output_width != cinfo->image_width ||
        cinfo->output_height != cinfo->image_height) {
        snprintf(g->msg, sizeof g->msg, "JPEG: unexpected output layout");
        return DAE_ERR_FORMAT;
    }
    *channels = n == 4 ? 3 : n;
    size_t w = cinfo->output_width, stride = w * (size_t)*channels;
    g->pixels = img_pixels_alloc(stride * cinfo->output_height);
    if (n == 4) g->row = malloc(w * 4);
    if (g->pixels == NULL || (n == 4 && g->row == NULL)) {
        snprintf(g->msg, sizeof g->msg, "JPEG: out of memory for a %zux%u image", w, cinfo->output_height);
        return DAE_ERR_NOMEM;
    }
    while (cinfo->output_scanline < cinfo->output_height) {
        uint8_t *dst = g->pixels + (size_t)cinfo->output_scanline * stride;
        JSAMPROW row = n == 4 ? g->row : dst;
        if (jpeg_read_scanlines(cinfo, &row, 1) != 1) {
            snprintf(g->msg, sizeof g->msg, "JPEG: decoding stopped at row %u", cinfo->output_scanline);
            return DAE_ERR_FORMAT;
        }
        if (n == 4) jpeg_cmyk_to_rgb(g->row, dst, w);
    }
    jpeg_finish_decompress(cinfo); /* reads to EOI: trailing corruption is an error too */
    return DAE_OK;
}

dae_status img_jpeg_decode(const uint8_t *buf, size_t len, size_t max_pixels, dae_image *out,
                           char *err, size_t errlen) {
    struct jpeg_decompress_struct cinfo;
    jpeg_guard *g = calloc(1, sizeof *g);
    if (g == NULL) return dae_fail(err, errlen, DAE_ERR_NOMEM, "JPEG: out of memory");
    memset(&cinfo, 0, sizeof cinfo);
    jpeg_setup(&cinfo, g);
    int channels = 0;
    dae_status st = jpeg_decode_into(&cinfo, g, buf, len, max_pixels, &channels);
    if (st == DAE_OK) {
        out->width = (int)cinfo.output_width, out->height = (int)cinfo.output_height;
        out->channels = channels;
        out->format = "JPEG";
        out->pixels = g->pixels;
    } else {
        dae_fail(err, errlen, st, "%s", g->msg);
        free(g->pixels);
    }
    jpeg_destroy_decompress(&cinfo);
    free(g->row);
    free(g);
    return st;
}
