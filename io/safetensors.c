/* safetensors.c - safetensors reader (strict, F32 only) and atomic writer.
 *
 * The reader follows the checks of the reference Rust crate: header length
 * at most 100,000,000 and inside the file, UTF-8, a JSON object starting
 * with '{', entries {"dtype","shape","data_offsets"} and nothing else, a
 * string->string "__metadata__", offsets that tile the data buffer exactly
 * once sorted, sizes that match shape and dtype. cJSON parses the JSON; a
 * small lexical pass catches what cJSON lets through but serde_json does not
 * (raw control characters in strings, numbers like 1.0 where integers are
 * required) and \u0000, which a C string cannot hold. */
#include "safetensors.h"

#include <cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"
#include "jsontext.h"

/* Largest integer a JSON number may hold here: cJSON stores numbers as
 * doubles, which are exact only up to 2^53. */
#define ST_MAX_JSON_INT 9007199254740992.0

/* ------------------------------------------------------------------------
 * Small helpers
 * ------------------------------------------------------------------------ */

/* Returns 1 when s[0..n) is valid UTF-8 by the same rules as Rust's
 * str::from_utf8 (no overlong forms, no surrogates, nothing above U+10FFFF),
 * else 0 with the offset of the first bad byte in *bad_at. */
static int utf8_valid(const uint8_t *s, size_t n, size_t *bad_at) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t need;
        uint8_t lo = 0x80, hi = 0xBF; /* allowed range of the 2nd byte */
        if (c < 0x80) { i++; continue; }
        else if (c >= 0xC2 && c <= 0xDF) need = 1;
        else if (c == 0xE0) { need = 2; lo = 0xA0; }
        else if (c >= 0xE1 && c <= 0xEC) need = 2;
        else if (c == 0xED) { need = 2; hi = 0x9F; }
        else if (c >= 0xEE && c <= 0xEF) need = 2;
        else if (c == 0xF0) { need = 3; lo = 0x90; }
        else if (c >= 0xF1 && c <= 0xF3) need = 3;
        else if (c == 0xF4) { need = 3; hi = 0x8F; }
        else { if (bad_at) *bad_at = i; return 0; }
        if (n - i - 1 < need) { if (bad_at) *bad_at = i; return 0; }
        for (size_t k = 1; k <= need; k++) {
            uint8_t b = s[i + k];
            uint8_t l = (k == 1) ? lo : 0x80, h = (k == 1) ? hi : 0xBF;
            if (b < l || b > h) { if (bad_at) *bad_at = i; return 0; }
        }
        i += need + 1;
    }
    return 1;
}

static int cmp_cstr_ptr(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Finds a string that occurs twice among names[0..n) in O(n log n).
 * Returns DAE_OK and sets *dup (pointing into names, or NULL when all are
 * distinct); DAE_ERR_NOMEM if the scratch copy cannot be allocated. */
static dae_status find_duplicate(const char *const *names, size_t n, const char **dup) {
    *dup = NULL;
    if (n < 2) return DAE_OK;
    const char **sorted = malloc(n * sizeof *sorted);
    if (sorted == NULL) return DAE_ERR_NOMEM;
    memcpy(sorted, names, n * sizeof *sorted);
    qsort(sorted, n, sizeof *sorted, cmp_cstr_ptr);
    for (size_t i = 1; i < n; i++) {
        if (strcmp(sorted[i - 1], sorted[i]) == 0) { *dup = sorted[i]; break; }
    }
    free(sorted);
    return DAE_OK;
}

static uint64_t read_u64_le(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* ------------------------------------------------------------------------
 * Dtypes
 * ------------------------------------------------------------------------ */

/* Every dtype name the reference crate knows; only F32 loads here. */
static const char *const known_dtypes[] = {
    "BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3",
    "F8_E8M0", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "F64",
    "C64", "I64", "U64",
};

static int dtype_is_known(const char *s) {
    for (size_t i = 0; i < sizeof known_dtypes / sizeof known_dtypes[0]; i++)
        if (strcmp(s, known_dtypes[i]) == 0) return 1;
    return 0;
}

/* ------------------------------------------------------------------------
 * Reader
 * ------------------------------------------------------------------------ */

/* One header entry while validating: where it points and how big it is. */
typedef struct {
    const char *name;   /* points into the cJSON tree */
    int ndim;
    int64_t shape[DAE_ST_MAX_DIMS];
    size_t numel;
    uint64_t begin, end;
    size_t order;       /* position in the header, to keep sorting stable */
} st_entry;

static int cmp_entry_offsets(const void *a, const void *b) {
    const st_entry *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return x->order < y->order ? -1 : (x->order > y->order);
}

/* Scans the header text for what cJSON accepts but the reference parser
 * does not, or what C strings cannot carry: raw control characters in
 * strings and \u0000 escapes fail at once (returned as DAE_ERR_FORMAT);
 * the first number not written as a plain integer is only recorded in
 * *num_at / *num_len (SIZE_MAX when none), to be reported after the
 * structural checks, which give better messages for the common cases. */
static dae_status scan_header_text(const char *h, size_t n, size_t *num_at, size_t *num_len,
                                   const char *label, char *err, size_t errlen) {
    *num_at = SIZE_MAX;
    *num_len = 0;
    long nul = dae_json_find_nul(h, n); /* a NUL byte is the control character below */
    if (nul >= 0 && h[nul] == '\\')
        return dae_fail(err, errlen, DAE_ERR_FORMAT,
                        "%s: header byte %ld: string contains \\u0000 (NUL), which names and metadata cannot hold",
                        label, nul);
    size_t i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)h[i];
        if (c == '"') {
            i++;
            while (i < n && h[i] != '"') {
                unsigned char s = (unsigned char)h[i];
                if (s < 0x20)
                    return dae_fail(err, errlen, DAE_ERR_FORMAT,
                                    "%s: header byte %zu: unescaped control character 0x%02x inside a JSON string",
                                    label, i, s);
                if (s == '\\') {
                    i += 2;
                    continue;
                }
                i++;
            }
            i++; /* closing quote */
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            size_t start = i;
            int plain = 1;
            while (i < n && strchr("0123456789+-.eE", h[i]) != NULL && h[i] != '\0') {
                if (h[i] == '.' || h[i] == 'e' || h[i] == 'E' || h[i] == '+') plain = 0;
                i++;
            }
            if (!plain && *num_at == SIZE_MAX) {
                *num_at = start;
                *num_len = i - start;
            }
        } else {
            i++;
        }
    }
    return DAE_OK;
}

/* Reads a JSON number that must be a non-negative integer exactly
 * representable in a double. Returns 1 and sets *v, or 0 with a reason. */
static int json_uint(const cJSON *item, uint64_t *v, const char **why) {
    if (!cJSON_IsNumber(item)) { *why = "is not a number"; return 0; }
    double d = item->valuedouble;
    if (d != d) { *why = "is not a number"; return 0; }
    if (d < 0) { *why = "is negative"; return 0; }
    if (d > ST_MAX_JSON_INT) { *why = "is too large"; return 0; }
    uint64_t u = (uint64_t)d;
    if ((double)u != d) { *why = "is not an integer"; return 0; }
    *v = u;
    return 1;
}

/* Checks one tensor entry of the header and fills *e. Never allocates. */
static dae_status check_entry(const cJSON *item, st_entry *e, const char *label,
                              char *err, size_t errlen) {
    const char *name = item->string;
    if (!cJSON_IsObject(item))
        return dae_fail(err, errlen, DAE_ERR_FORMAT,
                        "%s: tensor '%s': entry is not a JSON object", label, name);
    const cJSON *dtype = NULL, *shape = NULL, *offsets = NULL;
    for (const cJSON *m = item->child; m != NULL; m = m->next) {
        const cJSON **slot;
        if (strcmp(m->string, "dtype") == 0) slot = &dtype;
        else if (strcmp(m->string, "shape") == 0) slot = &shape;
        else if (strcmp(m->string, "data_offsets") == 0) slot = &offsets;
        else
            return dae_fail(err, errlen, DAE_ERR_FORMAT,
                            "%s: tensor '%s': unknown key '%s' (allowed: dtype, shape, data_offsets)",
                            label, name, m->string);
        if (*slot != NULL)
            return dae_fail(err, errlen, DAE_ERR_FORMAT,
                            "%s: tensor '%s': key '%s' appears twice", label, name, m->string);
        *slot = m;
    }
    if (dtype == NULL)
        return dae_fail(err, errlen, DAE_ERR_FORMAT, "%s: tensor '%s': missing \"dtype\"", label, name);
    if (shape == NULL)
        return dae_fail(err, errlen, DAE_ERR_FORMAT, "%s: tensor '%s': missing \"shape\"", label, name);
    if (offsets == NULL)
        return dae_fail(err, errlen, DAE_ERR_FORMAT, "%s: tensor '%s': missing \"data_offsets\"", label, name);

    if (!cJSON_IsString(dtype))
        return dae_fail(err, errlen, DAE_ERR_FORMAT, "%s: tensor '%s': \"dtype\" is not a string", label, name);
    if (strcmp(dtype->valuestring, "F32") != 0) {
        if (dtype_is_known(dtype->valuestring))
            return dae_fail(err, errlen, DAE_ERR_FORMAT,
                            "%s: tensor '%s': dtype %s is not supported; only F32 is supported",
                            label, name, dtype->valuestring);
        return dae_fail(err, errlen, DAE_ERR_FORMAT,
                        "%s: tensor '%s': unknown dtype '%s' (only F32 is supported)",
                        label, name, dtype->valuestring);
    }

    if (!cJSON_IsArray(shape))
        return dae_fail(err, errlen, DAE_ERR_FORMAT, "%s: tensor '%s': \"shape\" is not an array", label, name);
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > DAE_ST_MAX_DIMS)
        return dae_fail(err, errlen, DAE_ERR_FORMAT,
                        "%s: tensor '%s': shape has %d dimensions, at most %d are supported",
                        label, name, ndim, DAE_ST_MAX_DIMS);
    size_t numel = 1;
    int overflow = 0;
    int d = 0;
    for (const cJSON *x = shape->child; x != NULL; x = x->next, d++) {
        uint64_t v;
        const char *why;
        if (!json_uint(x, &v, &why))
            return dae_fail(err, errlen, DAE_ERR_FORMAT,
                            "%s: tensor '%s': shape[%d] %s; dimensions must be non-negative integers",
                            label, name, d, why);
        e->shape[d] = (int64_t)v;
        if (v > SIZE_MAX || (v != 0 && numel > SIZE_MAX / (size_t)v)) overflow = 1;
        else numel *= (size_t)v;
    }
    /* Like the crate's checked fold, the product is taken left to right and
     * the first overflow is an error even if a later dimension is 0. */
    if (overflow)
        return dae_fail(err, errlen, DAE_ERR_FORMAT,
                        "%s: tensor '%s': the product of the shape overflows", label, name);
    if (numel > SIZE_MAX / sizeof(float))
        return dae_fail(err, errlen, DAE_ERR_FORMAT,
                        "%s: tensor '%s': the byte size of the shape overflows", label, name);

    if (!cJSON_IsArray(offsets) || cJSON_GetArraySize(offsets) != 2)
        return dae_fail(err, errlen, DAE_ERR_FORMAT,
                        "%s: tensor '%s': \"data_offsets\" is not an array of 2 integers", label, name);
    uint64_t be[2];
    d = 0;
    for (const cJSON *x = offsets->child; x != NULL; x = x->next, d++) {
        const char *why;
        if (!json_uint(x, &be[d], &why))
            return dae_fail(err, errlen, DAE_ERR_FORMAT,
                            "%s: tensor '%s': data_offsets[%d] %s; offsets must be non-negative integers",
                            label, name, d, why);
    }
    if (be[0] > be[1])
        return dae_fail(err, errlen, DAE_ERR_FORMAT,
                        "%s: tensor '%s': data_offsets [%llu, %llu] end before they begin",
                        label, name, (unsigned long long)be[0], (unsigned long long)be[1]);
    e->name = name;
    e->ndim = ndim;
    e->numel = numel;
    e->begin = be[0];
    e->end = be[1];
    return DAE_OK;
}

/* Copies little-endian F32 bytes into host floats, portably. */
static void decode_f32_le(float *dst, const uint8_t *src, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = src + 4 * i;
        uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
        memcpy(&dst[i], &u, sizeof u);
    }
}

/* Parses the header JSON (already UTF-8 checked, starting with '{'),
 * validates it against the data buffer and builds *out. label prefixes
 * every message. On failure *out holds whatever was built so far, for the
 * caller to free. */
static dae_status parse_checked(const char *hdr, size_t n, const uint8_t *data, size_t data_len,
                                dae_st_file *out, const char *label, char *err, size_t errlen) {
    dae_status st = DAE_OK;
    st_entry *entries = NULL;
    const char **names = NULL;
    const cJSON *meta = NULL;
    size_t n_entries = 0;

    size_t num_at, num_len;
    st = scan_header_text(hdr, n, &num_at, &num_len, label, err, errlen);
    if (st != DAE_OK) return st;

    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(hdr, n, &end, 0);
    if (root == NULL) {
        size_t at = (end != NULL && end >= hdr && end <= hdr + n) ? (size_t)(end - hdr) : 0;
        return dae_fail(err, errlen, DAE_ERR_FORMAT,
                        "%s: header is not valid JSON (error near header byte %zu)", label, at);
    }
    for (const char *p = end; p < hdr + n; p++) {
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            st = dae_fail(err, errlen, DAE_ERR_FORMAT,
                          "%s: header has trailing characters after the JSON object (header byte %zu)",
                          label, (size_t)(p - hdr));
            goto done;
        }
    }
    if (!cJSON_IsObject(root)) {
        st = dae_fail(err, errlen, DAE_ERR_FORMAT, "%s: header is not a JSON object", label);
        goto done;
    }

    /* Collect the entries; "__metadata__" may appear once. */
    size_t n_children = 0;
    for (const cJSON *c = root->child; c != NULL; c = c->next) n_children++;
    if (n_children > (size_t)INT32_MAX) {
        st = dae_fail(err, errlen, DAE_ERR_FORMAT, "%s: header has too many entries", label);
        goto done;
    }
    if (n_children > 0) {
        entries = calloc(n_children, sizeof *entries);
        names = calloc(n_children, sizeof *names);
        if (entries == NULL || names == NULL) {
            st = dae_fail(err, errlen, DAE_ERR_NOMEM, "%s: out of memory reading the header", label);
            goto done;
        }
    }
    size_t order = 0;
    for (const cJSON *c = root->child; c != NULL; c = c->next, order++) {
        if (strcmp(c->string, "__metadata__") == 0) {
            if (meta != NULL) {
                st = dae_fail(err, errlen, DAE_ERR_FORMAT, "%s: \"__metadata__\" appears twice", label);
                goto done;
            }
            if (!cJSON_IsObject(c)) {
                st = dae_fail(err, errlen, DAE_ERR_FORMAT,
                              "%s: \"__metadata__\" is not a JSON object of strings", label);
                goto done;
            }
            for (const cJSON *m = c->child; m != NULL; m = m->next) {
                if (!cJSON_IsString(m)) {
                    st = dae_fail(err, errlen, DAE_ERR_FORMAT,
                                  "%s: \"__metadata__\" value of '%s' is not a string", label, m->string);
                    goto done;
                }
            }
            meta = c;
            continue;
        }
        st_entry *e = &entries[n_entries];
        st = check_entry(c, e, label, err, errlen);
        if (st != DAE_OK) goto done;
        e->order = order;
        names[n_entries] = e->name;
        n_entries++;
    }

    const char *dup = NULL;
    if (find_duplicate(names, n_entries, &dup) != DAE_OK) {
        st = dae_fail(err, errlen, DAE_ERR_NOMEM, "%s: out of memory reading the header", label);
        goto done;
    }
    if (dup != NULL) {
        st = dae_fail(err, errlen, DAE_ERR_FORMAT, "%s: tensor name '%s' appears twice", label, dup);
        goto done;
    }

    size_t n_meta = 0;
    const char **meta_names = NULL;
    if (meta != NULL) {
        for (const cJSON *m = meta->child; m != NULL; m = m->next) n_meta++;
        if (n_meta > 0) {
            meta_names = malloc(n_meta * sizeof *meta_names);
            if (meta_names == NULL) {
                st = dae_fail(err, errlen, DAE_ERR_NOMEM, "%s: out of memory reading the header", label);
                goto done;
            }
            size_t k = 0;
            for (const cJSON *m = meta->child; m != NULL; m = m->next) meta_names[k++] = m->string;
            dae_status ds = find_duplicate(meta_names, n_meta, &dup);
            free(meta_names);
            if (ds != DAE_OK) {
                st = dae_fail(err, errlen, DAE_ERR_NOMEM, "%s: out of memory reading the header", label);
                goto done;
            }
            if (dup != NULL) {
                st = dae_fail(err, errlen, DAE_ERR_FORMAT,
                              "%s: \"__metadata__\" key '%s' appears twice", label, dup);
                goto done;
            }
        }
    }

    /* Offsets must tile the data buffer: sorted, contiguous, exact sizes. */
    if (n_entries > 1) qsort(entries, n_entries, sizeof *entries, cmp_entry_offsets);
    uint64_t pos = 0;
    for (size_t i = 0; i < n_entries; i++) {
        const st_entry *e = &entries[i];
        if (e->begin != pos) {
            if (e->begin > pos)
                st = dae_fail(err, errlen, DAE_ERR_FORMAT,
                              "%s: tensor '%s': data_offsets [%llu, %llu] leave a gap: the previous tensor ends at %llu",
                              label, e->name, (unsigned long long)e->begin, (unsigned long long)e->end,
                              (unsigned long long)pos);
            else
                st = dae_fail(err, errlen, DAE_ERR_FORMAT,
                              "%s: tensor '%s': data_offsets [%llu, %llu] overlap the previous tensor, which ends at %llu",
                              label, e->name, (unsigned long long)e->begin, (unsigned long long)e->end,
                              (unsigned long long)pos);
            goto done;
        }
        uint64_t nbytes = (uint64_t)e->numel * sizeof(float);
        if (e->end - e->begin != nbytes) {
            st = dae_fail(err, errlen, DAE_ERR_FORMAT,
                          "%s: tensor '%s': data_offsets [%llu, %llu] span %llu bytes but F32 shape holds %zu elements (%llu bytes)",
                          label, e->name, (unsigned long long)e->begin, (unsigned long long)e->end,
                          (unsigned long long)(e->end - e->begin), e->numel, (unsigned long long)nbytes);
            goto done;
        }
        pos = e->end;
    }
    if (pos != data_len) {
        st = dae_fail(err, errlen, DAE_ERR_FORMAT,
                      "%s: tensors end at data offset %llu but the data buffer has %zu bytes%s",
                      label, (unsigned long long)pos, data_len,
                      pos < data_len ? " (trailing bytes)" : " (file truncated)");
        goto done;
    }
    if (num_at != SIZE_MAX) {
        st = dae_fail(err, errlen, DAE_ERR_FORMAT,
                      "%s: header byte %zu: number '%.*s' is not written as a plain integer, as shape and data_offsets require",
                      label, num_at, (int)(num_len > 40 ? 40 : num_len), hdr + num_at);
        goto done;
    }

    /* Everything checks out: build the result. */
    if (n_entries > 0) {
        out->tensors = calloc(n_entries, sizeof *out->tensors);
        if (out->tensors == NULL) goto oom;
    }
    for (size_t i = 0; i < n_entries; i++) {
        const st_entry *e = &entries[i];
        dae_st_tensor *t = &out->tensors[i];
        out->n_tensors = (int)i + 1;
        t->name = strdup(e->name);
        t->data = malloc(e->numel > 0 ? e->numel * sizeof(float) : sizeof(float));
        if (t->name == NULL || t->data == NULL) goto oom;
        t->ndim = e->ndim;
        memcpy(t->shape, e->shape, sizeof t->shape);
        t->numel = e->numel;
        decode_f32_le(t->data, data + e->begin, e->numel);
    }
    if (n_meta > 0) {
        out->meta_keys = calloc(n_meta, sizeof *out->meta_keys);
        out->meta_values = calloc(n_meta, sizeof *out->meta_values);
        if (out->meta_keys == NULL || out->meta_values == NULL) goto oom;
        out->n_meta = (int)n_meta;
        size_t k = 0;
        for (const cJSON *m = meta->child; m != NULL; m = m->next, k++) {
            out->meta_keys[k] = strdup(m->string);
            out->meta_values[k] = strdup(m->valuestring);
            if (out->meta_keys[k] == NULL || out->meta_values[k] == NULL) goto oom;
        }
    }
    goto done;

oom:
    st = dae_fail(err, errlen, DAE_ERR_NOMEM, "%s: out of memory copying the tensors", label);
done:
    free(entries);
    free(names);
    cJSON_Delete(root);
    return st;
}

/* Parses a whole file image; label names it in messages. */
static dae_status parse_labelled(const uint8_t *buf, size_t len, dae_st_file *out, const char *label,
                                 char *err, size_t errlen) {
    if (out == NULL)
        return dae_fail(err, errlen, DAE_ERR_INVALID, "%s: no output given", label);
    memset(out, 0, sizeof *out);
    if (buf == NULL && len > 0)
        return dae_fail(err, errlen, DAE_ERR_INVALID, "%s: no buffer given", label);
    if (len < 8)
        return dae_fail(err, errlen, DAE_ERR_FORMAT,
                        "%s: file has %zu bytes, too short for the 8-byte header length", label, len);
    uint64_t n = read_u64_le(buf);
    if (n > DAE_ST_MAX_HEADER_SIZE)
        return dae_fail(err, errlen, DAE_ERR_FORMAT,
                        "%s: header length %llu is larger than the %u-byte limit",
                        label, (unsigned long long)n, DAE_ST_MAX_HEADER_SIZE);
    if (n > len - 8)
        return dae_fail(err, errlen, DAE_ERR_FORMAT,
                        "%s: header length %llu runs past the end of the file (%zu bytes after the length)",
                        label, (unsigned long long)n, len - 8);
    const uint8_t *hdr = buf + 8;
    size_t bad;
    if (!utf8_valid(hdr, (size_t)n, &bad))
        return dae_fail(err, errlen, DAE_ERR_FORMAT, "%s: header is not valid UTF-8 (header byte %zu)",
                        label, bad);
    if (n == 0 || hdr[0] != '{')
        return dae_fail(err, errlen, DAE_ERR_FORMAT,
                        "%s: header does not start with '{' (it must be a JSON object)", label);
    /* cJSON gets a NUL-terminated copy, so no parser bug can read past the
     * header into the data or beyond the buffer. */
    char *text = malloc((size_t)n + 1);
    if (text == NULL)
        return dae_fail(err, errlen, DAE_ERR_NOMEM, "%s: out of memory for a %llu-byte header",
                        label, (unsigned long long)n);
    memcpy(text, hdr, (size_t)n);
    text[n] = '\0';
    dae_status st = parse_checked(text, (size_t)n, hdr + n, len - 8 - (size_t)n, out,
                                  label, err, errlen);
    free(text);
    if (st != DAE_OK) dae_st_free(out);
    return st;
}

dae_status dae_st_parse(const uint8_t *buf, size_t len, dae_st_file *out, char *err, size_t errlen) {
    return parse_labelled(buf, len, out, "safetensors", err, errlen);
}

dae_status dae_st_parse_named(const uint8_t *buf, size_t len, const char *name, dae_st_file *out, char *err,
                              size_t errlen) {
    return parse_labelled(buf, len, out, name != NULL ? name : "safetensors", err, errlen);
}

dae_status dae_st_load(const char *path, dae_st_file *out, char *err, size_t errlen) {
    if (out != NULL) memset(out, 0, sizeof *out);
    if (path == NULL || out == NULL)
        return dae_fail(err, errlen, DAE_ERR_INVALID, "dae_st_load: no path or output given");
    uint8_t *buf;
    size_t len;
    dae_status st = dae_file_read(path, SIZE_MAX - 1, &buf, &len, err, errlen);
    if (st != DAE_OK) return st;
    st = parse_labelled(buf, len, out, path, err, errlen);
    free(buf);
    return st;
}

/* ------------------------------------------------------------------------
 * Writer
 * ------------------------------------------------------------------------ */

/* A growable byte buffer; on allocation failure it sets oom and stops. */
typedef struct {
    char *p;
    size_t len, cap;
    int oom;
} st_buf;

static void sb_put(st_buf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1) cap *= 2;
        char *p = realloc(b->p, cap);
        if (p == NULL) { b->oom = 1; return; }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_str(st_buf *b, const char *s) { sb_put(b, s, strlen(s)); }

static void sb_u64(st_buf *b, uint64_t v) {
    char tmp[24];
    int n = snprintf(tmp, sizeof tmp, "%llu", (unsigned long long)v);
    sb_put(b, tmp, (size_t)n);
}

/* Appends s as a JSON string, escaped as serde_json does. */
static void sb_json_str(st_buf *b, const char *s) {
    static const char hex[] = "0123456789abcdef";
    sb_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': sb_put(b, "\\\"", 2); break;
        case '\\': sb_put(b, "\\\\", 2); break;
        case '\b': sb_put(b, "\\b", 2); break;
        case '\f': sb_put(b, "\\f", 2); break;
        case '\n': sb_put(b, "\\n", 2); break;
        case '\r': sb_put(b, "\\r", 2); break;
        case '\t': sb_put(b, "\\t", 2); break;
        default:
            if (*p < 0x20) {
                char e[6] = {'\\', 'u', '0', '0', hex[*p >> 4], hex[*p & 15]};
                sb_put(b, e, 6);
            } else {
                sb_put(b, (const char *)p, 1);
            }
        }
    }
    sb_put(b, "\"", 1);
}

/* Writes n floats to fd as little-endian bytes, in chunks, portably. */
static int write_f32_le(int fd, const float *x, size_t n) {
    uint8_t chunk[16384];
    const size_t per = sizeof chunk / 4;
    while (n > 0) {
        size_t k = n < per ? n : per;
        for (size_t i = 0; i < k; i++) {
            uint32_t u;
            memcpy(&u, &x[i], sizeof u);
            chunk[4 * i + 0] = (uint8_t)u;
            chunk[4 * i + 1] = (uint8_t)(u >> 8);
            chunk[4 * i + 2] = (uint8_t)(u >> 16);
            chunk[4 * i + 3] = (uint8_t)(u >> 24);
        }
        if (dae_write_all(fd, chunk, 4 * k) != 0) return -1;
        x += k;
        n -= k;
    }
    return 0;
}

/* Checks the arguments of dae_st_save and builds the padded header text
 * into *hdr (caller frees hdr->p). */
static dae_status build_header(const char *path, const dae_st_tensor *tensors, int n_tensors,
                               const char *const *meta_keys, const char *const *meta_values, int n_meta,
                               st_buf *hdr, char *err, size_t errlen) {
    if (n_tensors < 0 || (n_tensors > 0 && tensors == NULL))
        return dae_fail(err, errlen, DAE_ERR_INVALID, "%s: bad tensor list (%d tensors)", path, n_tensors);
    if (n_meta < 0 || (n_meta > 0 && (meta_keys == NULL || meta_values == NULL)))
        return dae_fail(err, errlen, DAE_ERR_INVALID, "%s: bad metadata list (%d entries)", path, n_meta);

    for (int i = 0; i < n_meta; i++) {
        if (meta_keys[i] == NULL || meta_values[i] == NULL)
            return dae_fail(err, errlen, DAE_ERR_INVALID, "%s: metadata entry %d has a NULL key or value", path, i);
        if (!utf8_valid((const uint8_t *)meta_keys[i], strlen(meta_keys[i]), NULL) ||
            !utf8_valid((const uint8_t *)meta_values[i], strlen(meta_values[i]), NULL))
            return dae_fail(err, errlen, DAE_ERR_INVALID, "%s: metadata entry %d is not valid UTF-8", path, i);
    }
    const char *dup = NULL;
    if (find_duplicate(meta_keys, (size_t)n_meta, &dup) != DAE_OK)
        return dae_fail(err, errlen, DAE_ERR_NOMEM, "%s: out of memory building the header", path);
    if (dup != NULL)
        return dae_fail(err, errlen, DAE_ERR_INVALID, "%s: metadata key '%s' given twice", path, dup);

    const char **names = n_tensors > 0 ? malloc((size_t)n_tensors * sizeof *names) : NULL;
    if (n_tensors > 0 && names == NULL)
        return dae_fail(err, errlen, DAE_ERR_NOMEM, "%s: out of memory building the header", path);
    for (int i = 0; i < n_tensors; i++) {
        const dae_st_tensor *t = &tensors[i];
        if (t->name == NULL) {
            free(names);
            return dae_fail(err, errlen, DAE_ERR_INVALID, "%s: tensor %d has no name", path, i);
        }
        if (strcmp(t->name, "__metadata__") == 0 ||
            !utf8_valid((const uint8_t *)t->name, strlen(t->name), NULL)) {
            free(names);
            return dae_fail(err, errlen, DAE_ERR_INVALID,
                            "%s: tensor %d: name '%s' is reserved or not valid UTF-8", path, i, t->name);
        }
        names[i] = t->name;
        if (t->ndim < 0 || t->ndim > DAE_ST_MAX_DIMS) {
            free(names);
            return dae_fail(err, errlen, DAE_ERR_INVALID, "%s: tensor '%s': ndim %d is outside 0..%d",
                            path, t->name, t->ndim, DAE_ST_MAX_DIMS);
        }
        size_t numel = 1;
        int bad = 0;
        for (int d = 0; d < t->ndim; d++) {
            int64_t v = t->shape[d];
            if (v < 0 || (uint64_t)v > (uint64_t)SIZE_MAX ||
                (v != 0 && numel > SIZE_MAX / (size_t)v)) { bad = 1; break; }
            numel *= (size_t)v;
        }
        if (bad || numel != t->numel || numel > SIZE_MAX / 4 || (numel > 0 && t->data == NULL)) {
            free(names);
            return dae_fail(err, errlen, DAE_ERR_INVALID,
                            "%s: tensor '%s': shape, numel (%zu) and data do not agree", path, t->name, t->numel);
        }
    }
    dae_status ds = find_duplicate(names, (size_t)n_tensors, &dup);
    free(names);
    if (ds != DAE_OK)
        return dae_fail(err, errlen, DAE_ERR_NOMEM, "%s: out of memory building the header", path);
    if (dup != NULL)
        return dae_fail(err, errlen, DAE_ERR_INVALID, "%s: tensor name '%s' given twice", path, dup);

    sb_put(hdr, "{", 1);
    int first = 1;
    if (n_meta > 0) {
        sb_str(hdr, "\"__metadata__\":{");
        for (int i = 0; i < n_meta; i++) {
            if (i > 0) sb_put(hdr, ",", 1);
            sb_json_str(hdr, meta_keys[i]);
            sb_put(hdr, ":", 1);
            sb_json_str(hdr, meta_values[i]);
        }
        sb_put(hdr, "}", 1);
        first = 0;
    }
    uint64_t offset = 0;
    for (int i = 0; i < n_tensors; i++) {
        const dae_st_tensor *t = &tensors[i];
        uint64_t nbytes = (uint64_t)t->numel * 4;
        if (offset > UINT64_MAX - nbytes) {
            return dae_fail(err, errlen, DAE_ERR_INVALID, "%s: tensors too large in total", path);
        }
        if (!first) sb_put(hdr, ",", 1);
        first = 0;
        sb_json_str(hdr, t->name);
        sb_str(hdr, ":{\"dtype\":\"F32\",\"shape\":[");
        for (int d = 0; d < t->ndim; d++) {
            if (d > 0) sb_put(hdr, ",", 1);
            sb_u64(hdr, (uint64_t)t->shape[d]);
        }
        sb_str(hdr, "],\"data_offsets\":[");
        sb_u64(hdr, offset);
        sb_put(hdr, ",", 1);
        sb_u64(hdr, offset + nbytes);
        sb_str(hdr, "]}");
        offset += nbytes;
    }
    sb_put(hdr, "}", 1);
    while (!hdr->oom && hdr->len % 8 != 0) sb_put(hdr, " ", 1);
    if (hdr->oom)
        return dae_fail(err, errlen, DAE_ERR_NOMEM, "%s: out of memory building the header", path);
    if (hdr->len > DAE_ST_MAX_HEADER_SIZE)
        return dae_fail(err, errlen, DAE_ERR_INVALID, "%s: header would be %zu bytes, over the %u-byte limit",
                        path, hdr->len, DAE_ST_MAX_HEADER_SIZE);
    return DAE_OK;
}

/* What dae_st_save streams into the file: length, header, tensor data. */
typedef struct {
    const st_buf *header;
    const dae_st_tensor *tensors;
    int n_tensors;
} st_content;

static int write_content(int fd, void *ctx) {
    const st_content *c = ctx;
    uint8_t lenbuf[8];
    uint64_t n = c->header->len;
    for (int i = 0; i < 8; i++) lenbuf[i] = (uint8_t)(n >> (8 * i));
    if (dae_write_all(fd, lenbuf, 8) != 0 || dae_write_all(fd, c->header->p, c->header->len) != 0) return -1;
    for (int i = 0; i < c->n_tensors; i++)
        if (write_f32_le(fd, c->tensors[i].data, c->tensors[i].numel) != 0) return -1;
    return 0;
}

dae_status dae_st_save(const char *path, const dae_st_tensor *tensors, int n_tensors,
                       const char *const *meta_keys, const char *const *meta_values, int n_meta,
                       char *err, size_t errlen) {
    if (path == NULL || path[0] == '\0' || path[strlen(path) - 1] == '/')
        return dae_fail(err, errlen, DAE_ERR_INVALID, "dae_st_save: bad path '%s'", path ? path : "(null)");

    st_buf hdr = {0};
    dae_status st = build_header(path, tensors, n_tensors, meta_keys, meta_values, n_meta, &hdr, err, errlen);
    if (st != DAE_OK) {
        free(hdr.p);
        return st;
    }

    st_content content = {&hdr, tensors, n_tensors};
    st = dae_file_write_atomic_with(path, write_content, &content, err, errlen);
    free(hdr.p);
    return st;
}
