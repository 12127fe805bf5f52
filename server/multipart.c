/* multipart.c - a one-pass, allocation-free multipart/form-data field
 * finder. Every step checks the bytes left before it reads. */
#include "multipart.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* Skips spaces and tabs. */
static const char *skip_ws(const char *p) {
    while (*p == ' ' || *p == '\t') p++;
    return p;
}

int srv_multipart_is_form(const char *content_type) {
    if (content_type == NULL) return 0;
    const char *p = skip_ws(content_type);
    static const char form[] = "multipart/form-data";
    if (strncasecmp(p, form, sizeof form - 1) != 0) return 0;
    p = skip_ws(p + sizeof form - 1);
    return *p == '\0' || *p == ';';
}

/* Reads the value of a header parameter at p (a token or a quoted string
 * with backslash escapes) into out (room for cap bytes, NUL-terminated),
 * or only skips it when out is NULL. Returns the position after the
 * value, or NULL when it does not fit or a quote is not closed. */
static const char *param_value(const char *p, const char *end, char *out, size_t cap) {
    size_t n = 0;
    if (p < end && *p == '"') {
        for (p++; p < end && *p != '"'; p++) {
            if (*p == '\\' && p + 1 < end) p++;
            if (out == NULL) continue;
            if (n + 1 >= cap) return NULL;
            out[n++] = *p;
        }
        if (p >= end) return NULL;
        p++;
    } else {
        for (; p < end && *p != ';' && *p != ' ' && *p != '\t' && *p != ',' && *p != '\r' && *p != '\n'; p++) {
            if (out == NULL) continue;
            if (n + 1 >= cap) return NULL;
            out[n++] = *p;
        }
    }
    if (out != NULL) out[n] = '\0';
    return p;
}

/* Finds parameter `name` in the header value [p, end) made of
 * "type; a=b; c="d"" and copies its value into out. Returns 0, -1 when
 * absent or malformed. */
static int find_param(const char *p, const char *end, const char *name, char *out, size_t cap) {
    size_t nlen = strlen(name);
    while (p < end) {
        const char *semi = memchr(p, ';', (size_t)(end - p));
        if (semi == NULL) return -1;
        p = semi + 1;
        while (p < end && (*p == ' ' || *p == '\t')) p++;
        if ((size_t)(end - p) > nlen && strncasecmp(p, name, nlen) == 0) {
            const char *q = p + nlen;
            while (q < end && (*q == ' ' || *q == '\t')) q++;
            if (q < end && *q == '=') {
                q++;
                while (q < end && (*q == ' ' || *q == '\t')) q++;
                return param_value(q, end, out, cap) != NULL ? 0 : -1;
            }
        }
        /* Skip this parameter's value, which may be a quoted string holding ';'. */
        while (p < end && *p != '=' && *p != ';') p++;
        if (p < end && *p == '=') {
            p++;
            while (p < end && (*p == ' ' || *p == '\t')) p++;
            const char *after = param_value(p, end, NULL, 0);
            if (after == NULL) return -1;
            p = after;
        }
    }
    return -1;
}

int srv_multipart_boundary(const char *content_type, char *boundary) {
    if (content_type == NULL) return -1;
    const char *end = content_type + strlen(content_type);
    if (find_param(content_type, end, "boundary", boundary, SRV_MP_BOUNDARY_MAX + 1) != 0) return -1;
    return boundary[0] != '\0' ? 0 : -1;
}

/* memmem over bytes. */
static const uint8_t *find_bytes(const uint8_t *hay, size_t hlen, const void *needle, size_t nlen) {
    return memmem(hay, hlen, needle, nlen);
}

/* Checks the part headers [h, end) (lines ending in CRLF, without the
 * blank line) for Content-Disposition: form-data; name="field". */
static int part_is_field(const uint8_t *h, const uint8_t *end, const char *field) {
    static const char cd[] = "content-disposition:";
    while (h < end) {
        const uint8_t *eol = find_bytes(h, (size_t)(end - h), "\r\n", 2);
        if (eol == NULL) eol = end;
        size_t n = (size_t)(eol - h);
        if (n > sizeof cd - 1 && strncasecmp((const char *)h, cd, sizeof cd - 1) == 0) {
            const char *v = (const char *)h + sizeof cd - 1, *vend = (const char *)eol;
            while (v < vend && (*v == ' ' || *v == '\t')) v++;
            static const char fd[] = "form-data";
            if ((size_t)(vend - v) < sizeof fd - 1 || strncasecmp(v, fd, sizeof fd - 1) != 0) return 0;
            char name[256];
            return find_param(v, vend, "name", name, sizeof name) == 0 && strcmp(name, field) == 0;
        }
        h = eol + 2;
    }
    return 0;
}

dae_status srv_multipart_find(const char *content_type, const uint8_t *body, size_t len, const char *field,
                              const uint8_t **data, size_t *data_len, char *err, size_t errlen) {
    *data = NULL;
    *data_len = 0;
    char boundary[SRV_MP_BOUNDARY_MAX + 1];
    if (srv_multipart_boundary(content_type, boundary) != 0)
        return dae_fail(err, errlen, DAE_ERR_FORMAT,
                        "multipart/form-data without a valid boundary parameter (1 to %d characters)",
                        SRV_MP_BOUNDARY_MAX);
    /* delim = CRLF "--" boundary; the first one may start the body. */
    char delim[SRV_MP_BOUNDARY_MAX + 5];
    size_t dlen = (size_t)snprintf(delim, sizeof delim, "\r\n--%s", boundary);
    const uint8_t *end = body + len, *p;
    if (len >= dlen - 2 && memcmp(body, delim + 2, dlen - 2) == 0) {
        p = body + dlen - 2;
    } else {
        p = body != NULL ? find_bytes(body, len, delim, dlen) : NULL;
        if (p == NULL)
            return dae_fail(err, errlen, DAE_ERR_FORMAT, "multipart body does not contain its boundary \"%s\"",
                            boundary);
        p += dlen;
    }
    for (;;) {
        /* After a delimiter: "--" closes the body; else padding and CRLF. */
        if (end - p >= 2 && p[0] == '-' && p[1] == '-') break;
        while (p < end && (*p == ' ' || *p == '\t')) p++;
        if (end - p < 2 || p[0] != '\r' || p[1] != '\n')
            return dae_fail(err, errlen, DAE_ERR_FORMAT, "multipart body is malformed or truncated after a boundary");
        p += 2;
        /* Headers up to the blank line; a part may have none. */
        const uint8_t *headers = p, *hend;
        if (end - p >= 2 && p[0] == '\r' && p[1] == '\n') {
            hend = p;
            p += 2;
        } else {
            hend = find_bytes(p, (size_t)(end - p), "\r\n\r\n", 4);
            if (hend == NULL)
                return dae_fail(err, errlen, DAE_ERR_FORMAT,
                                "multipart part headers are not terminated by a blank line");
            p = hend + 4;
            hend += 2; /* keep the last header's CRLF */
        }
        const uint8_t *next = find_bytes(p, (size_t)(end - p), delim, dlen);
        if (next == NULL)
            return dae_fail(err, errlen, DAE_ERR_FORMAT,
                            "multipart part is not closed by the boundary (truncated body?)");
        if (part_is_field(headers, hend, field)) {
            /* A second one would be dropped without a word: refused. */
            if (*data != NULL)
                return dae_fail(err, errlen, DAE_ERR_CONFLICT,
                                "the form has more than one field named \"%s\"; send one per request", field);
            *data = p;
            *data_len = (size_t)(next - p);
        }
        p = next + dlen;
    }
    if (*data != NULL) return DAE_OK;
    return dae_fail(err, errlen, DAE_ERR_NOT_FOUND,
                    "multipart/form-data has no field named \"%s\" (send the file as -F %s=@FILE)", field, field);
}
