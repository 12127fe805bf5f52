/* img_pnm.c - binary PNM: P5 (gray) and P6 (RGB), maxval 1 to 65535
 * (two big-endian bytes per sample above 255), samples rescaled to 8 bits.
 * The header is parsed with every number bounded, and the file must hold
 * all the samples its header promises before anything is allocated. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "img_codec.h"

typedef struct {
    int width, height, maxval, channels;
    size_t data; /* offset of the first sample */
} pnm_header;

/* Skips whitespace and '#' comments (to the end of the line) from *pos. */
static void pnm_skip_space(const uint8_t *buf, size_t len, size_t *pos) {
    while (*pos < len) {
        uint8_t c = buf[*pos];
        if (c == '#') {
            while (*pos < len && buf[*pos] != '\n' && buf[*pos] != '\r') (*pos)++;
        } else if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f') {
            (*pos)++;
        } else {
            return;
        }
    }
}

/* Reads one decimal header field at *pos into *value (at most limit);
 * fails with a message naming the field. */
static dae_status pnm_number(const uint8_t *buf, size_t len, size_t *pos, long limit, const char *what,
                             long *value, char *err, size_t errlen) {
    pnm_skip_space(buf, len, pos);
    if (*pos >= len) return dae_fail(err, errlen, DAE_ERR_FORMAT, "PNM: file is truncated in the header (no %s)", what);
    if (buf[*pos] < '0' || buf[*pos] > '9')
        return dae_fail(err, errlen, DAE_ERR_FORMAT, "PNM: the %s is not a number", what);
    long v = 0;
    while (*pos < len && buf[*pos] >= '0' && buf[*pos] <= '9') {
        v = v * 10 + (buf[*pos] - '0');
        if (v > limit) return dae_fail(err, errlen, DAE_ERR_FORMAT, "PNM: the %s is over %ld", what, limit);
        (*pos)++;
    }
    *value = v;
    return DAE_OK;
}

/* Parses "P5|P6 width height maxval" and the single whitespace byte that
 * ends the header. */
static dae_status pnm_parse(const uint8_t *buf, size_t len, pnm_header *h, char *err, size_t errlen) {
    if (len < 2 || buf[0] != 'P' || (buf[1] != '5' && buf[1] != '6'))
        return dae_fail(err, errlen, DAE_ERR_FORMAT, "PNM: only binary P5 (gray) and P6 (RGB) files are supported");
    size_t pos = 2;
    if (pos < len && buf[pos] != '#' && buf[pos] != ' ' && buf[pos] != '\t' && buf[pos] != '\n' &&
        buf[pos] != '\r' && buf[pos] != '\v' && buf[pos] != '\f')
        return dae_fail(err, errlen, DAE_ERR_FORMAT, "PNM: no whitespace after the magic number");
    long w, hh, maxval;
    dae_status st = pnm_number(buf, len, &pos, DAE_IMAGE_MAX_SIDE * 10L, "width", &w, err, errlen);
    if (st == DAE_OK) st = pnm_number(buf, len, &pos, DAE_IMAGE_MAX_SIDE * 10L, "height", &hh, err, errlen);
    if (st == DAE_OK) st = pnm_number(buf, len, &pos, 65535, "maximum value", &maxval, err, errlen);
    if (st != DAE_OK) return st;
    if (maxval < 1) return dae_fail(err, errlen, DAE_ERR_FORMAT, "PNM: the maximum value is 0");
    if (pos >= len) return dae_fail(err, errlen, DAE_ERR_FORMAT, "PNM: file is truncated after the header");
    uint8_t c = buf[pos];
    if (c != ' ' && c != '\t' && c != '\n' && c != '\r' && c != '\v' && c != '\f')
        return dae_fail(err, errlen, DAE_ERR_FORMAT, "PNM: no whitespace after the maximum value");
    h->width = (int)w, h->height = (int)hh, h->maxval = (int)maxval;
    h->channels = buf[1] == '5' ? 1 : 3;
    h->data = pos + 1;
    return DAE_OK;
}

dae_status img_pnm_probe(const uint8_t *buf, size_t len, int *width, int *height, char *err, size_t errlen) {
    pnm_header h;
    dae_status st = pnm_parse(buf, len, &h, err, errlen);
    if (st != DAE_OK) return st;
    *width = h.width, *height = h.height;
    return DAE_OK;
}

dae_status img_pnm_decode(const uint8_t *buf, size_t len, size_t max_pixels, dae_image *out,
                          char *err, size_t errlen) {
    pnm_header h;
    dae_status st = pnm_parse(buf, len, &h, err, errlen);
    if (st != DAE_OK) return st;
    st = img_check_size(h.width, h.height, max_pixels, err, errlen);
    if (st != DAE_OK) return st;
    size_t samples = (size_t)h.width * (size_t)h.height * (size_t)h.channels;
    size_t bytes_per = h.maxval > 255 ? 2 : 1;
    if (samples > (len - h.data) / bytes_per)
        return dae_fail(err, errlen, DAE_ERR_FORMAT,
                        "PNM: file is truncated: the %dx%d header promises %zu bytes of samples, %zu are present",
                        h.width, h.height, samples * bytes_per, len - h.data);
    uint8_t *px = img_pixels_alloc(samples);
    if (px == NULL)
        return dae_fail(err, errlen, DAE_ERR_NOMEM, "PNM: out of memory for a %dx%d image", h.width, h.height);
    const uint8_t *s = buf + h.data;
    unsigned maxval = (unsigned)h.maxval;
    for (size_t i = 0; i < samples; i++) {
        unsigned v = bytes_per == 2 ? (unsigned)s[2 * i] << 8 | s[2 * i + 1] : s[i];
        if (v > maxval) {
            free(px);
            return dae_fail(err, errlen, DAE_ERR_FORMAT, "PNM: sample %u is over the maximum value %u", v, maxval);
        }
        px[i] = maxval == 255 ? (uint8_t)v : (uint8_t)((v * 255u + maxval / 2) / maxval);
    }
    out->width = h.width, out->height = h.height, out->channels = h.channels;
    out->source_16bit = h.maxval > 255;
    out->format = "PNM";
    out->pixels = px;
    return DAE_OK;
}
