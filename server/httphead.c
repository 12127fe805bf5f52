/* httphead.c - the request-head parser of the connection gate. */
#include "httphead.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

static int is_tchar(unsigned char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL);
}

static srv_head_result head_error(srv_head *hi, int status, const char *code, const char *fmt, const char *arg) {
    hi->status = status;
    hi->code = code;
    snprintf(hi->message, sizeof hi->message, fmt, arg);
    return SRV_HEAD_ERROR;
}

srv_head_result srv_head_too_large(srv_head *hi) {
    return head_error(hi, 431, "header_too_large", "the request head is over %s bytes", "8192");
}

int srv_head_path_nul(const char *path, size_t n) {
    for (size_t i = 0; i + 2 < n; i++)
        if (path[i] == '%' && path[i + 1] == '0' && path[i + 2] == '0') return 1;
    return 0;
}

srv_head_result srv_head_path_nul_error(srv_head *hi) {
    return head_error(hi, 400, "malformed_request", "the request target's path holds %s (a NUL byte)", "%00");
}

size_t srv_head_authority_len(const char *target, size_t n) {
    size_t i = n >= 7 && strncasecmp(target, "http://", 7) == 0    ? 7
               : n >= 8 && strncasecmp(target, "https://", 8) == 0 ? 8
                                                                    : 0;
    if (i == 0) return 0;
    while (i < n && target[i] != '/' && target[i] != '?') i++;
    return i;
}

/* Checks the request line line[0..n): METHOD SP TARGET SP HTTP/1.x. */
static srv_head_result parse_request_line(const char *line, size_t n, srv_head *hi) {
    size_t i = 0;
    while (i < n && is_tchar((unsigned char)line[i])) i++;
    if (i == 0 || i >= n || line[i] != ' ' || i >= sizeof hi->method)
        return head_error(hi, 400, "malformed_request", "the request line is not METHOD TARGET HTTP/1.1%s", "");
    memcpy(hi->method, line, i);
    hi->method[i] = '\0';
    size_t t0 = ++i;
    while (i < n && line[i] != ' ') {
        unsigned char c = (unsigned char)line[i];
        if (c < 0x20 || c == 0x7f)
            return head_error(hi, 400, "malformed_request", "the request target holds a control character%s", "");
        i++;
    }
    size_t tlen = i - t0;
    if (tlen == 0 || i >= n)
        return head_error(hi, 400, "malformed_request", "the request line is not METHOD TARGET HTTP/1.1%s", "");
    size_t authority = srv_head_authority_len(line + t0, tlen); /* the absolute form's path follows it */
    t0 += authority, tlen -= authority;
    size_t plen = strcspn(line + t0, "? ");
    if (plen > tlen) plen = tlen;
    size_t copy = plen < sizeof hi->path ? plen : sizeof hi->path - 1;
    memcpy(hi->path, line + t0, copy);
    hi->path[copy] = '\0';
    if (copy == 0) snprintf(hi->path, sizeof hi->path, "/"); /* "http://host" alone */
    if (srv_head_path_nul(line + t0, plen)) return srv_head_path_nul_error(hi);
    const char *v = line + i + 1;
    size_t vlen = n - i - 1;
    int digits = vlen == 8 && memcmp(v, "HTTP/", 5) == 0 && v[5] >= '0' && v[5] <= '9' && v[6] == '.' &&
                 v[7] >= '0' && v[7] <= '9';
    if (!digits)
        return head_error(hi, 400, "malformed_request", "the request line must end in HTTP/1.1 or HTTP/1.0%s", "");
    if (v[5] != '1')
        return head_error(hi, 505, "http_version_not_supported",
                          "HTTP/%.3s is not supported: this server speaks HTTP/1.1 and HTTP/1.0", v + 5);
    static const char *const probes[] = {"/healthz", "/readyz", "/metrics"};
    if (strcmp(hi->method, "GET") == 0 || strcmp(hi->method, "HEAD") == 0)
        for (int k = 0; k < 3; k++)
            if (plen == strlen(probes[k]) && memcmp(line + t0, probes[k], plen) == 0) hi->probe = 1;
    return SRV_HEAD_OK;
}

/* Parses the request head at the start of buf (n bytes peeked). Checks the
 * request line and every header line, refuses what would let two parsers
 * disagree on where the request ends (several Content-Length headers,
 * Content-Length with Transfer-Encoding, folded lines, a Transfer-Encoding
 * other than chunked), and fills hi. */
srv_head_result srv_head_parse(const char *buf, size_t n, srv_head *hi) {
    memset(hi, 0, sizeof *hi);
    hi->body = -1;
    snprintf(hi->method, sizeof hi->method, "-");
    snprintf(hi->path, sizeof hi->path, "-");
    size_t pos = 0;
    /* Empty lines before the request line are allowed (RFC 9112 2.2). */
    for (int k = 0; k < 4 && pos < n && (buf[pos] == '\r' || buf[pos] == '\n'); k++)
        pos += buf[pos] == '\r' && pos + 1 < n && buf[pos + 1] == '\n' ? 2 : 1;
    int line_no = 0;
    srv_head_framing f = {0};
    while (1) {
        const char *nl = memchr(buf + pos, '\n', n - pos);
        if (nl == NULL) {
            if (line_no == 0 && n - pos > SRV_HEAD_LINE_MAX)
                return head_error(hi, 414, "uri_too_long", "the request line is over %s bytes", "4096");
            if (n > SRV_HEAD_MAX)
                return srv_head_too_large(hi);
            return SRV_HEAD_INCOMPLETE;
        }
        size_t end = (size_t)(nl - buf), len = end - pos;
        if (len > 0 && buf[end - 1] == '\r') len--;
        const char *line = buf + pos;
        pos = end + 1;
        if (line_no == 0 && len > SRV_HEAD_LINE_MAX)
            return head_error(hi, 414, "uri_too_long", "the request line is over %s bytes", "4096");
        if (pos > SRV_HEAD_MAX)
            return srv_head_too_large(hi);
        if (line_no++ == 0) {
            srv_head_result r = parse_request_line(line, len, hi);
            if (r != SRV_HEAD_OK) return r;
            f.http10 = line[len - 1] == '0';
            continue;
        }
        if (len == 0) break; /* the empty line: end of the head */
        if (line[0] == ' ' || line[0] == '\t')
            return head_error(hi, 400, "malformed_header", "folded header lines are not accepted%s", "");
        size_t k = 0;
        while (k < len && is_tchar((unsigned char)line[k])) k++;
        if (k == 0 || k >= len || line[k] != ':')
            return head_error(hi, 400, "malformed_header", "a header line is not NAME: VALUE%s", "");
        for (size_t j = k + 1; j < len; j++) {
            unsigned char c = (unsigned char)line[j];
            if ((c < 0x20 && c != '\t') || c == 0x7f)
                return head_error(hi, 400, "malformed_header", "a header value holds a control character%s", "");
        }
        const char *v = line + k + 1, *ve = line + len;
        while (v < ve && (*v == ' ' || *v == '\t')) v++;
        while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t')) ve--;
        size_t vlen = (size_t)(ve - v);
        srv_head_count_field(&f, line, k, v, vlen);
        if (k == 14 && strncasecmp(line, "Content-Length", 14) == 0) {
            if (vlen == 0 || vlen > 18)
                return head_error(hi, 400, "invalid_content_length", "Content-Length must be a number of bytes%s", "");
            long long cl = 0;
            for (size_t j = 0; j < vlen; j++) {
                if (v[j] < '0' || v[j] > '9')
                    return head_error(hi, 400, "invalid_content_length",
                                      "Content-Length must be one number of bytes%s", "");
                cl = cl * 10 + (v[j] - '0');
            }
            hi->body = cl;
        }
    }
    srv_head_result r = srv_head_check_framing(&f, hi);
    if (r != SRV_HEAD_OK) return r;
    hi->chunked = f.transfer_encoding > 0;
    hi->len = pos;
    return SRV_HEAD_OK;
}

void srv_head_count_field(srv_head_framing *f, const char *name, size_t name_len, const char *value,
                          size_t value_len) {
    if (name_len == 14 && strncasecmp(name, "Content-Length", 14) == 0) {
        f->content_length++;
    } else if (name_len == 17 && strncasecmp(name, "Transfer-Encoding", 17) == 0) {
        f->transfer_encoding++;
        if (value_len != 7 || strncasecmp(value, "chunked", 7) != 0) f->not_chunked++;
    } else if (name_len == 4 && strncasecmp(name, "Host", 4) == 0) {
        f->host++;
    }
}

srv_head_result srv_head_check_framing(const srv_head_framing *f, srv_head *hi) {
    if (f->content_length > 1)
        return head_error(hi, 400, "duplicate_content_length", "the request has more than one Content-Length header%s",
                          "");
    if (f->transfer_encoding > 1 || f->not_chunked > 0)
        return head_error(hi, 501, "unsupported_transfer_encoding",
                          "the only Transfer-Encoding accepted is one \"chunked\"%s", "");
    if (f->content_length > 0 && f->transfer_encoding > 0)
        return head_error(hi, 400, "content_length_with_chunked",
                          "the request has both Content-Length and Transfer-Encoding: chunked%s", "");
    if (f->transfer_encoding > 0 && f->http10)
        return head_error(hi, 400, "malformed_request", "HTTP/1.0 has no Transfer-Encoding%s", "");
    if (!f->http10 && f->host != 1)
        return head_error(hi, 400, f->host == 0 ? "missing_host" : "duplicate_host",
                          "an HTTP/1.1 request needs exactly one Host header%s", "");
    return SRV_HEAD_OK;
}

