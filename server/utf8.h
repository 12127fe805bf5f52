/* utf8.h - UTF-8 validation and repair, and JSON string escaping, for
 * everything the server puts in a JSON body or a JSON log line: bytes that
 * came from a request or from a file are never copied raw, so a JSON
 * client can always parse the answer. And the plain copy of a string into
 * a field of fixed size. */
#ifndef SRV_UTF8_H
#define SRV_UTF8_H

#include <stddef.h>
#include <string.h>

/* The length (1 to 4) of the well-formed UTF-8 sequence that starts at s,
 * n bytes being readable, or 0 when the bytes there are not one (a stray
 * continuation byte, an overlong form, a surrogate, a code point over
 * U+10FFFF or a sequence cut short). n must be at least 1. */
size_t srv_utf8_seq(const unsigned char *s, size_t n);

/* 1 when the n bytes at s are all well-formed UTF-8, else 0. */
int srv_utf8_valid(const char *s, size_t n);

/* A malloc'd, NUL-terminated copy of the n bytes at s in which every byte
 * that is not part of a well-formed sequence became U+FFFD; its length
 * goes into *out_len (may be NULL). Returns NULL when out of memory. */
char *srv_utf8_fix(const char *s, size_t n, size_t *out_len);

/* Appends s to out (room for cap bytes, *n used) escaped for a JSON
 * string, without the quotes; stops short of overflowing (at most cap - 1
 * bytes used), never inside a character. Bytes that are not well-formed
 * UTF-8 become U+FFFD, so the result is always valid UTF-8. */
void srv_json_escape(char *out, size_t cap, size_t *n, const char *s);

/* dst (room for cap >= 1 bytes) = src cut to cap - 1 bytes, as
 * snprintf(dst, cap, "%s", src) has it, without printf: OpenBLAS brings in
 * libquadmath, whose printf hooks slow every printf of the process (log.c). */
static inline void srv_copy_str(char *dst, size_t cap, const char *src) {
    size_t n = strnlen(src, cap - 1);
    memcpy(dst, src, n);
    dst[n] = '\0';
}

#endif
