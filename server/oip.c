/* oip.c - the Open Inference Protocol's payloads (oip.h). */
#include "oip.h"

#include <cJSON.h>
#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsontext.h"

/* ------------------------------------------------------------ base64 (RFC 4648, with padding) */

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* The value of base64 digit c, or -1. */
static int b64_digit(unsigned char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/* Decodes the n characters of s into out (room for n / 4 * 3 bytes).
 * Returns the bytes written, or -1 when s is not base64. */
static long long b64_decode(const char *s, size_t n, uint8_t *out) {
    if (n % 4 != 0) return -1;
    size_t o = 0;
    for (size_t i = 0; i < n; i += 4) {
        int d[4], pad = 0;
        for (int k = 0; k < 4; k++) {
            unsigned char c = (unsigned char)s[i + k];
            if (c == '=' && i + 4 == n && k >= 2) {
                d[k] = 0;
                pad++;
                continue;
            }
            if (pad > 0 || (d[k] = b64_digit(c)) < 0) return -1;
        }
        uint32_t v = (uint32_t)d[0] << 18 | (uint32_t)d[1] << 12 | (uint32_t)d[2] << 6 | (uint32_t)d[3];
        out[o++] = (uint8_t)(v >> 16);
        if (pad < 2) out[o++] = (uint8_t)(v >> 8);
        if (pad < 1) out[o++] = (uint8_t)v;
    }
    return (long long)o;
}

/* Encodes the n bytes of in into out (room for (n + 2) / 3 * 4 bytes). */
static size_t b64_encode(const uint8_t *in, size_t n, char *out) {
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n) v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n) v |= in[i + 2];
        out[o++] = B64[v >> 18 & 63];
        out[o++] = B64[v >> 12 & 63];
        out[o++] = i + 1 < n ? B64[v >> 6 & 63] : '=';
        out[o++] = i + 2 < n ? B64[v & 63] : '=';
    }
    return o;
}

/* ------------------------------------------------------------ parsing */

/* A cJSON node and what malloc adds to it: the parse tree of a body costs
 * this per value. */
#define JSON_NODE_BYTES 96

/* The longest run of number characters read apart: cJSON's versions
 * differ beyond it (some read 63 characters, some any number). */
#define JSON_NUMBER_MAX 63

/* The tensor's numbers, read apart from cJSON's tree.
 *
 * The "data" array of a JSON tensor is nearly all of a big request: a
 * node of cJSON's tree (96 bytes) for every number of 2 to 20
 * characters. When the array of inputs[0] (the only input a request may
 * give) is nothing but nested arrays of plain numbers, it is read here
 * straight into floats, and cJSON parses a copy of the JSON with the
 * array's contents blanked to spaces. The numbers are read as cJSON
 * reads them (the longest run of number characters, through strtod,
 * which must take all of it), so the same text gives the same floats and
 * is refused alike. Anything else in the array (strings, literals,
 * objects, runs over 63 characters, escapes in a key on the way there)
 * leaves the whole JSON to cJSON, as before. srv_oip_scan_json finds
 * the array (srv_oip_scan's data_*), in the same pass that sizes the
 * tree of the rest. */

static int numbers_apart = 1;

void srv_oip_read_numbers_apart(int on) { numbers_apart = on; }

/* 1 for the characters of a number as cJSON gathers them. */
static int is_number_char(uint8_t c) {
    return (c >= '0' && c <= '9') || c == '+' || c == '-' || c == '.' || c == 'e' || c == 'E';
}

/* Checks that json[start] is an array of arrays of plain numbers (any
 * nesting, whitespace as cJSON skips it: any byte up to 32); if so,
 * records it in scan and returns 1, else 0. */
static int numbers_only(const uint8_t *json, size_t len, size_t start, srv_oip_scan *scan) {
    size_t i = start, depth = 0, numbers = 0;
    for (;;) {
        /* A value is expected at i. */
        while (i < len && json[i] <= 32) i++;
        if (i >= len) return 0;
        if (json[i] == '[') {
            depth++, i++;
            while (i < len && json[i] <= 32) i++;
            if (i < len && json[i] == ']') i++, depth--;
            else continue;
        } else if (json[i] == '-' || (json[i] >= '0' && json[i] <= '9')) {
            size_t from = i;
            while (i < len && is_number_char(json[i])) i++;
            if (i - from > JSON_NUMBER_MAX) return 0;
            numbers++;
        } else {
            return 0;
        }
        /* After a value: more of its array, or its end. */
        for (;;) {
            if (depth == 0) {
                scan->data_start = start, scan->data_end = i, scan->data_numbers = numbers;
                return 1;
            }
            while (i < len && json[i] <= 32) i++;
            if (i >= len) return 0;
            if (json[i] == ',') {
                i++;
                break;
            }
            if (json[i] != ']') return 0;
            i++, depth--;
        }
    }
}

/* Reads the numbers scan found in json into out, as cJSON reads them. Returns the offset at which cJSON would find the JSON
 * invalid (a run of number characters strtod does not take whole), or
 * SIZE_MAX when every number was read. */
static size_t read_numbers(const uint8_t *json, const srv_oip_scan *scan, float *out) {
    const char point = localeconv()->decimal_point[0]; /* cJSON's strtod reads the locale's */
    size_t k = 0;
    for (size_t i = scan->data_start; i < scan->data_end;) {
        if (json[i] != '-' && !(json[i] >= '0' && json[i] <= '9')) {
            i++;
            continue;
        }
        size_t run = 0;
        while (i + run < scan->data_end && is_number_char(json[i + run])) run++;
        char text[JSON_NUMBER_MAX + 1]; /* numbers_only saw to it */
        for (size_t j = 0; j < run; j++) text[j] = json[i + j] == '.' ? point : (char)json[i + j];
        text[run] = '\0';
        char *after;
        double v = strtod(text, &after);
        size_t used = (size_t)(after - text);
        if (used == 0) return i;          /* no number at all */
        if (used < run) return i + used;  /* what follows it is not ',' or ']' */
        out[k++] = (float)v;
        i += run;
    }
    return SIZE_MAX;
}

void srv_oip_scan_json(const uint8_t *json, size_t len, srv_oip_scan *scan) {
    memset(scan, 0, sizeof *scan);
    /* Every value but the first follows a ',' '[' '{' or ':' outside a
     * string: that many nodes at most, plus the strings' copies. */
    long long nodes = 1;
    /* Looking for the "data" array of inputs[0] (the first of each key, as
     * cJSON looks them up) through levels 1 (the request), 2 ("inputs"), 3
     * (inputs[0]) and the one below; deeper ones are only counted. The
     * request is the first value, after a UTF-8 BOM and whitespace (as
     * cJSON skips them); what follows it is not cJSON's. */
    enum { LEVELS = 5 };
    uint8_t type[LEVELS] = {0};
    int expect_key[LEVELS] = {0}, key_is[LEVELS] = {0}, on_path[LEVELS] = {0};
    size_t index[LEVELS] = {0}, depth = 0;
    int seen_inputs = 0, seen_data = 0;
    size_t first = len >= 3 && memcmp(json, "\xEF\xBB\xBF", 3) == 0 ? 3 : 0;
    while (first < len && json[first] <= 32) first++;
    int looking = numbers_apart && first < len && json[first] == '{';
    for (size_t i = 0; i < len; i++) {
        uint8_t c = json[i];
        if (c == '"') {
            size_t j = i + 1;
            int escaped = 0;
            while (j < len && json[j] != '"') {
                if (json[j] == '\\') escaped = 1, j++;
                else if (json[j] == '\0') escaped = 1; /* cJSON's key would end there */
                j++;
            }
            if (j > len) j = len; /* a '\\' last */
            if (looking && depth < LEVELS && type[depth] == '{' && expect_key[depth]) {
                expect_key[depth] = 0;
                key_is[depth] = 0;
                /* A key with an escape (or a NUL) may read "inputs" or "data" to cJSON: leave it all to cJSON. */
                if (escaped && (depth == 1 || (depth == 3 && on_path[3]))) looking = 0;
                size_t klen = escaped ? 0 : j - i - 1;
                const uint8_t *key = json + i + 1;
                if (depth == 1 && !seen_inputs && klen == 6 && memcmp(key, "inputs", 6) == 0)
                    key_is[1] = seen_inputs = 1;
                if (depth == 3 && on_path[3] && !seen_data && klen == 4 && memcmp(key, "data", 4) == 0)
                    key_is[3] = seen_data = 1;
            }
            i = j;
            continue;
        }
        if (c == ',' || c == '[' || c == '{' || c == ':') nodes++;
        if (!looking) continue;
        if (c == '[' || c == '{') {
            if (depth == 3 && on_path[3] && key_is[3]) {
                /* The array itself stays in cJSON's tree, empty: what is
                 * in it is skipped. */
                looking = 0;
                if (c == '[' && numbers_only(json, len, i, scan)) i = scan->data_end - 1;
                continue;
            }
            depth++;
            if (depth < LEVELS) {
                type[depth] = c;
                expect_key[depth] = c == '{';
                key_is[depth] = 0;
                index[depth] = 0;
                on_path[depth] = depth == 1 ? c == '{'
                                 : depth == 2 ? c == '[' && on_path[1] && key_is[1]
                                 : depth == 3 ? c == '{' && on_path[2] && index[2] == 0
                                              : 0;
            }
        } else if (c == ']' || c == '}') {
            if (depth < LEVELS) key_is[depth] = 0;
            if (depth <= 1) looking = 0; /* the request ended without it */
            else depth--;
        } else if (c == ',' && depth < LEVELS) {
            if (type[depth] == '[') index[depth]++;
            else expect_key[depth] = 1, key_is[depth] = 0;
        }
    }
    scan->bytes = nodes * JSON_NODE_BYTES + (long long)len;
    /* Read apart: a copy of the text for cJSON, and a float per number. */
    if (scan->data_end != 0) scan->bytes += (long long)len + (long long)(scan->data_numbers * sizeof(float));
}

dae_status srv_oip_json_length(const char *header, size_t len, size_t *json_len, char *err, size_t errlen) {
    *json_len = len;
    if (header == NULL) return DAE_OK;
    char *end;
    unsigned long long v = strtoull(header, &end, 10);
    if (header[0] < '0' || header[0] > '9' || *end != '\0' || v > len || v == 0)
        return dae_fail(err, errlen, DAE_ERR_INVALID,
                        "%s is \"%s\": it must be the length in bytes of the JSON at the start of the %zu-byte body",
                        SRV_OIP_HEADER_LENGTH, header, len);
    *json_len = (size_t)v;
    return DAE_OK;
}

/* What parsing needs to carry around. */
typedef struct {
    char *err;
    size_t errlen;
    const char *input; /* the input's name, for messages */
    srv_oip_take_fn take;
    void *take_ctx;
    /* The "data" of inputs[0] when it was read apart (srv_oip_scan): its
     * numbers (malloc'd, handed to the request when they are its tensor),
     * and cJSON's node of it, left an empty array. */
    float *numbers;
    size_t n_numbers;
    const cJSON *numbers_node;
    const char *twice; /* a key some object read gives twice (member), or NULL */
} parse_ctx;

/* obj's first member named key, as cJSON_GetObjectItemCaseSensitive
 * finds it (NULL: none, or obj is no object); a second one is noted in
 * c->twice, which the parse refuses: which one would count? Members the
 * parse does not read may come any number of times. */
static const cJSON *member(parse_ctx *c, const cJSON *obj, const char *key) {
    const cJSON *found = NULL;
    for (const cJSON *e = cJSON_IsObject(obj) ? obj->child : NULL; e != NULL; e = e->next)
        if (e->string != NULL && strcmp(e->string, key) == 0) {
            if (found == NULL) found = e;
            else if (c->twice == NULL) c->twice = key;
        }
    return found;
}

/* Asks take for bytes: DAE_OK, or DAE_ERR_BUSY with a sentence. */
static dae_status take_bytes(parse_ctx *c, size_t bytes) {
    if (c->take(c->take_ctx, (long long)bytes) == 0) return DAE_OK;
    return dae_fail(c->err, c->errlen, DAE_ERR_BUSY, "the memory budget cannot hold the %zu bytes of input \"%s\"",
                    bytes, c->input);
}

/* Allocates bytes (zeroed) once take granted them. NULL with *st set to
 * DAE_ERR_BUSY (refused) or DAE_ERR_NOMEM and a sentence in c->err. */
static void *take_alloc(parse_ctx *c, size_t bytes, dae_status *st) {
    if ((*st = take_bytes(c, bytes)) != DAE_OK) return NULL;
    void *p = calloc(1, bytes > 0 ? bytes : 1);
    if (p == NULL) *st = dae_fail(c->err, c->errlen, DAE_ERR_NOMEM, "out of memory for input \"%s\"", c->input);
    return p;
}

static dae_status bad(parse_ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Refuses the request with the sentence fmt makes, or, when a key the
 * parse read came twice (member), with that: the mistake may follow from
 * which one counted. */
static dae_status bad(parse_ctx *c, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (c->err != NULL && c->errlen > 0) {
        if (c->twice != NULL)
            snprintf(c->err, c->errlen, "\"%s\" is given more than once in one object (which one would count?)",
                     c->twice);
        else vsnprintf(c->err, c->errlen, fmt, ap);
    }
    va_end(ap);
    return DAE_ERR_INVALID;
}

/* Reads "binary_data_size" of an input's parameters: *size, or -1 when
 * absent. */
static dae_status binary_size_of(parse_ctx *c, const cJSON *input, long long *size) {
    *size = -1;
    const cJSON *params = member(c, input, "parameters");
    if (params == NULL) return DAE_OK;
    if (!cJSON_IsObject(params)) return bad(c, "input \"%s\": \"parameters\" must be an object", c->input);
    const cJSON *b = member(c, params, "binary_data_size");
    if (b == NULL) return DAE_OK;
    if (!cJSON_IsNumber(b) || b->valuedouble < 0 || b->valuedouble != floor(b->valuedouble) || b->valuedouble > 1e15)
        return bad(c, "input \"%s\": \"binary_data_size\" must be a whole number of bytes", c->input);
    *size = (long long)b->valuedouble;
    return DAE_OK;
}

/* The refusal of a BYTES input's element that is not a string (from the
 * tree, or among the numbers read apart). */
#define NOT_A_STRING "input \"%s\": element %zu of \"data\" is not a string (datatype BYTES: the base64 of an image file)"

/* Walks data (an array, nested any way) in row-major order, calling each
 * leaf into out: numbers (floats != NULL) or strings (strings != NULL).
 * *n counts the leaves; more than cap is an error. */
static dae_status flatten(parse_ctx *c, const cJSON *data, float *floats, const cJSON **strings, size_t cap,
                          size_t *n) {
    const cJSON *e;
    cJSON_ArrayForEach(e, data) {
        if (cJSON_IsArray(e)) {
            dae_status st = flatten(c, e, floats, strings, cap, n);
            if (st != DAE_OK) return st;
            continue;
        }
        if (*n >= cap) return bad(c, "input \"%s\": \"data\" has more elements than its shape (%zu)", c->input, cap);
        if (floats != NULL) {
            if (!cJSON_IsNumber(e))
                return bad(c, "input \"%s\": element %zu of \"data\" is not a number (datatype FP32)", c->input, *n);
            if (!isfinite((float)e->valuedouble))
                return bad(c, "input \"%s\": element %zu of \"data\" is out of the range of FP32", c->input, *n);
            floats[*n] = (float)e->valuedouble;
        } else {
            if (!cJSON_IsString(e))
                return bad(c, NOT_A_STRING, c->input, *n);
            strings[*n] = e;
        }
        (*n)++;
    }
    return DAE_OK;
}

/* The number of leaves (non-array values) of data, however nested. */
static size_t leaf_count(const cJSON *data) {
    size_t n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, data) n += cJSON_IsArray(e) ? leaf_count(e) : 1;
    return n;
}

/* Reads the shape of input into dims (at most max), *rank. */
static dae_status shape_of(parse_ctx *c, const cJSON *input, long long *dims, int max, int *rank) {
    const cJSON *shape = member(c, input, "shape");
    if (!cJSON_IsArray(shape)) return bad(c, "input \"%s\": \"shape\" must be an array of sizes", c->input);
    *rank = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, shape) {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0 || e->valuedouble != floor(e->valuedouble) ||
            e->valuedouble > 1e9)
            return bad(c, "input \"%s\": \"shape\" must hold whole numbers from 0 to 1000000000", c->input);
        if (*rank == max) return bad(c, "input \"%s\": \"shape\" has more than %d dimensions", c->input, max);
        dims[(*rank)++] = (long long)e->valuedouble;
    }
    return DAE_OK;
}

/* The FP32 input: shape [N, 1, h, w], data in JSON or binary. */
static dae_status parse_tensor(parse_ctx *c, const cJSON *input, const uint8_t *bin, size_t bin_len, int h, int w,
                               srv_oip_request *req) {
    long long d[8];
    int rank;
    dae_status st = shape_of(c, input, d, 8, &rank);
    if (st != DAE_OK) return st;
    if (rank != 4 || d[0] < 1 || d[1] != 1 || d[2] != h || d[3] != w) {
        char got[128] = "";
        size_t k = 0;
        for (int i = 0; i < rank && k < sizeof got; i++)
            k += (size_t)snprintf(got + k, sizeof got - k, "%s%lld", i ? "," : "", d[i]);
        return bad(c, "input \"%s\" has shape [%s]; this model takes [N,1,%d,%d] with N >= 1", c->input, got, h, w);
    }
    size_t count = (size_t)d[0] * (size_t)h * (size_t)w;
    if (d[0] > (1 << 24)) return bad(c, "input \"%s\": a batch of %lld is too many", c->input, d[0]);
    long long bsize;
    if ((st = binary_size_of(c, input, &bsize)) != DAE_OK) return st;
    const cJSON *data = member(c, input, "data");
    if (bsize >= 0 && data != NULL)
        return bad(c, "input \"%s\" has both \"data\" and \"binary_data_size\"", c->input);
    if (bsize >= 0) {
        if ((size_t)bsize != count * sizeof(float) || bin_len != (size_t)bsize)
            return bad(c,
                       "input \"%s\": \"binary_data_size\" is %lld and %zu bytes follow the JSON; shape [%lld,1,%d,%d] "
                       "of FP32 is %zu bytes",
                       c->input, bsize, bin_len, d[0], h, w, count * sizeof(float));
    } else if (!cJSON_IsArray(data)) {
        return bad(c, "input \"%s\" has no \"data\" array (nor \"binary_data_size\")", c->input);
    }
    if (bsize >= 0) { /* read where it lies: a 3 MB batch is not copied */
        for (size_t i = 0; i < count; i++) {
            float v;
            memcpy(&v, bin + i * sizeof v, sizeof v); /* little-endian, as the extension says */
            if (!isfinite(v))
                return bad(c, "input \"%s\": element %zu of the binary data is not a finite number", c->input, i);
        }
        req->n = (int)d[0];
        req->tensor = bin;
        return DAE_OK;
    }
    /* The shape is the client's word: the data must match it before
     * anything of its size is allocated. */
    const int apart = data == c->numbers_node;
    size_t n = apart ? c->n_numbers : leaf_count(data);
    if (n != count)
        return bad(c, "input \"%s\": \"data\" has %zu elements; shape [%lld,1,%d,%d] needs %zu", c->input, n, d[0], h,
                   w, count);
    if (apart) { /* the numbers read apart become the tensor */
        if ((st = take_bytes(c, count * sizeof(float))) != DAE_OK) return st;
        req->floats = c->numbers;
        c->numbers = NULL;
    } else if ((req->floats = take_alloc(c, count * sizeof(float), &st)) == NULL) {
        return st;
    }
    req->n = (int)d[0];
    req->tensor = (const uint8_t *)req->floats;
    if (apart) {
        for (size_t i = 0; i < count; i++)
            if (!isfinite(req->floats[i]))
                return bad(c, "input \"%s\": element %zu of \"data\" is out of the range of FP32", c->input, i);
        return DAE_OK;
    }
    n = 0;
    return flatten(c, data, req->floats, NULL, count, &n);
}

/* The BYTES input: shape [N], each element an image file. */
static dae_status parse_images(parse_ctx *c, const cJSON *input, const uint8_t *bin, size_t bin_len,
                               srv_oip_request *req) {
    long long d[8];
    int rank;
    dae_status st = shape_of(c, input, d, 8, &rank);
    if (st != DAE_OK) return st;
    if (rank != 1 || d[0] < 1) return bad(c, "input \"%s\" must have shape [N] with N >= 1 (N images)", c->input);
    if (d[0] > (1 << 20)) return bad(c, "input \"%s\": a batch of %lld is too many", c->input, d[0]);
    size_t count = (size_t)d[0];
    long long bsize;
    if ((st = binary_size_of(c, input, &bsize)) != DAE_OK) return st;
    const cJSON *data = member(c, input, "data");
    if (bsize >= 0 && data != NULL)
        return bad(c, "input \"%s\" has both \"data\" and \"binary_data_size\"", c->input);
    if (bsize < 0 && !cJSON_IsArray(data))
        return bad(c, "input \"%s\" has no \"data\" array (nor \"binary_data_size\")", c->input);
    const int apart = bsize < 0 && data == c->numbers_node;
    size_t leaves = bsize < 0 ? (apart ? c->n_numbers : leaf_count(data)) : count;
    if (leaves != count)
        return bad(c, "input \"%s\": \"data\" has %zu elements; shape [%zu] needs %zu", c->input, leaves, count,
                   count);
    if (bsize >= 0 && bin_len != (size_t)bsize)
        return bad(c, "input \"%s\": \"binary_data_size\" is %lld but %zu bytes follow the JSON", c->input, bsize,
                   bin_len);
    if (bsize >= 0 && bin_len / 4 < count)
        return bad(c, "input \"%s\": %zu bytes of binary data cannot hold %zu elements", c->input, bin_len, count);
    if ((req->image = take_alloc(c, count * sizeof *req->image, &st)) == NULL ||
        (req->image_len = take_alloc(c, count * sizeof *req->image_len, &st)) == NULL)
        return st;
    req->n = (int)count;
    if (bsize >= 0) {
        size_t off = 0;
        for (size_t i = 0; i < count; i++) {
            if (bin_len - off < 4)
                return bad(c, "input \"%s\": the binary data ends before the length of element %zu", c->input, i);
            uint32_t n = (uint32_t)bin[off] | (uint32_t)bin[off + 1] << 8 | (uint32_t)bin[off + 2] << 16 |
                         (uint32_t)bin[off + 3] << 24;
            off += 4;
            if (n > bin_len - off)
                return bad(c, "input \"%s\": element %zu is %u bytes long but only %zu bytes are left", c->input, i, n,
                           bin_len - off);
            req->image[i] = bin + off;
            req->image_len[i] = n;
            off += n;
        }
        if (off != bin_len)
            return bad(c, "input \"%s\": %zu bytes of binary data are left after its %zu elements", c->input,
                       bin_len - off, count);
        return DAE_OK;
    }
    const cJSON **strings = take_alloc(c, count * sizeof *strings, &st);
    if (strings == NULL) return st;
    if (apart) { /* numbers only, where flatten wants strings */
        free(strings);
        return bad(c, NOT_A_STRING, c->input, (size_t)0);
    }
    size_t n = 0, total = 0;
    st = flatten(c, data, NULL, strings, count, &n);
    for (size_t i = 0; st == DAE_OK && i < count; i++) total += strlen(strings[i]->valuestring) / 4 * 3;
    if (st == DAE_OK) req->decoded = take_alloc(c, total, &st);
    size_t off = 0;
    for (size_t i = 0; st == DAE_OK && i < count; i++) {
        const char *s = strings[i]->valuestring;
        long long got = b64_decode(s, strlen(s), req->decoded + off);
        if (got < 0) {
            st = bad(c, "input \"%s\": element %zu of \"data\" is not base64 (a BYTES element in JSON is the base64 of "
                        "an image file)",
                     c->input, i);
            break;
        }
        req->image[i] = req->decoded + off;
        req->image_len[i] = (size_t)got;
        off += (size_t)got;
    }
    free(strings);
    return st;
}

/* The request's "outputs": names only the output matching the input; any
 * of them may ask for binary data. */
static dae_status parse_outputs(parse_ctx *c, const cJSON *root, srv_oip_request *req) {
    const cJSON *outputs = member(c, root, "outputs");
    if (outputs == NULL) return DAE_OK;
    if (!cJSON_IsArray(outputs)) return bad(c, "\"outputs\" must be an array of {\"name\": ...} objects");
    const char *want = req->kind == SRV_OIP_TENSOR ? SRV_OIP_OUTPUT_TENSOR : SRV_OIP_OUTPUT_IMAGES;
    if (cJSON_GetArraySize(outputs) > 1) return bad(c, "\"outputs\" names \"%s\" more than once", want);
    const cJSON *o;
    cJSON_ArrayForEach(o, outputs) {
        const cJSON *name = member(c, o, "name");
        if (!cJSON_IsString(name)) return bad(c, "each of \"outputs\" must have a \"name\"");
        if (strcmp(name->valuestring, want) != 0)
            return bad(c, "unknown output \"%.64s\": input \"%s\" gives the output \"%s\"", name->valuestring,
                       c->input, want);
        const cJSON *params = member(c, o, "parameters");
        if (params != NULL && !cJSON_IsObject(params))
            return bad(c, "output \"%s\": \"parameters\" must be an object", want);
        const cJSON *b = member(c, params, "binary_data");
        if (b != NULL && !cJSON_IsBool(b)) return bad(c, "output \"%s\": \"binary_data\" must be true or false", want);
        if (b != NULL) req->binary_output = cJSON_IsTrue(b);
    }
    return DAE_OK;
}

dae_status srv_oip_parse(const uint8_t *body, size_t len, size_t json_len, const srv_oip_scan *scan, int h, int w,
                         srv_oip_take_fn take, void *ctx, srv_oip_request *req, char *err, size_t errlen) {
    memset(req, 0, sizeof *req);
    parse_ctx c = {err, errlen, "", take, ctx, NULL, 0, NULL, NULL};
    srv_oip_scan own;
    if (scan == NULL) {
        srv_oip_scan_json(body, json_len, &own);
        scan = &own;
    }
    /* The tensor's numbers apart from the tree: cJSON parses a copy with
     * them blanked, and they are read here. */
    const char *text = (const char *)body;
    char *blanked = NULL;
    const size_t start = scan->data_start, end_of_data = scan->data_end;
    if (end_of_data != 0) {
        blanked = malloc(json_len);
        c.numbers = malloc((scan->data_numbers > 0 ? scan->data_numbers : 1) * sizeof(float));
        if (blanked == NULL || c.numbers == NULL) {
            free(blanked);
            free(c.numbers);
            return dae_fail(err, errlen, DAE_ERR_NOMEM, "out of memory for the request's JSON");
        }
        memcpy(blanked, body, json_len);
        memset(blanked + start + 1, ' ', end_of_data - start - 2);
        text = blanked;
        c.n_numbers = scan->data_numbers;
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, json_len, &end, 0);
    /* The first place cJSON would have found the JSON invalid: before the
     * numbers, in them, or after them. */
    size_t invalid = root == NULL ? (end != NULL ? (size_t)(end - text) : 0) : SIZE_MAX;
    if (end_of_data != 0 && invalid > start) {
        size_t in_numbers = read_numbers(body, scan, c.numbers);
        if (in_numbers != SIZE_MAX) invalid = in_numbers;
    }
    free(blanked);
    if (invalid != SIZE_MAX) {
        cJSON_Delete(root);
        free(c.numbers);
        return bad(&c, "the request is not valid JSON (at byte %zu of %zu)", invalid, json_len);
    }
    size_t used = (size_t)(end - text);
    while (used < json_len && strchr(" \t\r\n", body[used]) != NULL && body[used] != '\0') used++;
    if (used < json_len) {
        cJSON_Delete(root);
        free(c.numbers);
        return bad(&c,
                   "%zu bytes follow the JSON (at byte %zu): binary data needs the header %s giving the JSON's length",
                   json_len - used, used, SRV_OIP_HEADER_LENGTH);
    }
    long nul = dae_json_find_nul((const char *)body, json_len);
    if (nul >= 0) { /* "name":"images\u0000x" would read as "images" */
        cJSON_Delete(root);
        free(c.numbers);
        return bad(&c, "a string holds a NUL character (\\u0000, at byte %ld): no name or value may", nul);
    }
    dae_status st = DAE_OK;
    const cJSON *id = member(&c, root, "id");
    const cJSON *params = member(&c, root, "parameters");
    const cJSON *inputs = member(&c, root, "inputs");
    const cJSON *input = cJSON_IsArray(inputs) ? inputs->child : NULL;
    const cJSON *name = member(&c, input, "name");
    const cJSON *datatype = member(&c, input, "datatype");
    const cJSON *data = member(&c, input, "data");
    if (end_of_data != 0) c.numbers_node = data;
    /* The other keys the parse reads of these two objects, looked up now
     * so that one given twice is refused before any work. */
    member(&c, root, "outputs"), member(&c, input, "shape"), member(&c, input, "parameters");
    if (!cJSON_IsObject(root)) st = bad(&c, "the request must be a JSON object with \"inputs\"");
    else if (c.twice != NULL) st = bad(&c, "a key is given twice");
    else if (id != NULL && !cJSON_IsString(id)) st = bad(&c, "\"id\" must be a string");
    else if (params != NULL && !cJSON_IsObject(params)) st = bad(&c, "\"parameters\" must be an object");
    else if (!cJSON_IsArray(inputs) || cJSON_GetArraySize(inputs) != 1)
        st = bad(&c, "\"inputs\" must hold exactly one input: \"%s\" (FP32 [N,1,%d,%d]) or \"%s\" (BYTES [N], image "
                     "files)",
                 SRV_OIP_INPUT_TENSOR, h, w, SRV_OIP_INPUT_IMAGES);
    else if (!cJSON_IsString(name) || !cJSON_IsString(datatype))
        st = bad(&c, "the input must have a \"name\" and a \"datatype\"");
    if (st == DAE_OK && id != NULL && (req->id = strdup(id->valuestring)) == NULL)
        st = dae_fail(err, errlen, DAE_ERR_NOMEM, "out of memory");
    if (st == DAE_OK) {
        const cJSON *b = member(&c, params, "binary_data_output");
        if (b != NULL && !cJSON_IsBool(b)) st = bad(&c, "\"binary_data_output\" must be true or false");
        req->binary_output = cJSON_IsTrue(b);
    }
    if (st == DAE_OK) {
        c.input = name->valuestring;
        const uint8_t *bin = body + json_len;
        size_t bin_len = len - json_len;
        int tensor = strcmp(c.input, SRV_OIP_INPUT_TENSOR) == 0, images = strcmp(c.input, SRV_OIP_INPUT_IMAGES) == 0;
        const char *want = tensor ? "FP32" : "BYTES";
        if (!tensor && !images)
            st = bad(&c, "unknown input \"%.64s\": this model takes \"%s\" (FP32 [N,1,%d,%d]) or \"%s\" (BYTES [N])",
                     c.input, SRV_OIP_INPUT_TENSOR, h, w, SRV_OIP_INPUT_IMAGES);
        else if (strcmp(datatype->valuestring, want) != 0)
            st = bad(&c, "input \"%s\" has datatype %.32s; it must be %s", c.input, datatype->valuestring, want);
        else if (tensor) req->kind = SRV_OIP_TENSOR, st = parse_tensor(&c, input, bin, bin_len, h, w, req);
        else req->kind = SRV_OIP_IMAGES, st = parse_images(&c, input, bin, bin_len, req);
    }
    if (st == DAE_OK) st = parse_outputs(&c, root, req);
    if (st == DAE_OK && c.twice != NULL) st = bad(&c, "a key is given twice");
    cJSON_Delete(root);
    free(c.numbers); /* unless the tensor took them */
    if (st != DAE_OK) srv_oip_request_free(req);
    return st;
}

void srv_oip_request_free(srv_oip_request *req) {
    if (req == NULL) return;
    free(req->id);
    free(req->floats);
    free(req->image);
    free(req->image_len);
    free(req->decoded);
    memset(req, 0, sizeof *req);
}

/* ------------------------------------------------------------ answers */

/* Room for the JSON around the data: names, shape, id (escaped: 6 bytes
 * a byte at worst). */
static long long answer_head_bytes(const srv_oip_request *req) {
    return 1024 + (req->id != NULL ? 6 * (long long)strlen(req->id) : 0);
}

/* The longest "%.9g" of a float, and its comma. */
#define FLOAT_TEXT_MAX 16

/* Powers of ten to 10^15. */
static const uint64_t POW10[16] = {1ull, 10ull, 100ull, 1000ull, 10000ull, 100000ull, 1000000ull, 10000000ull,
                                   100000000ull, 1000000000ull, 10000000000ull, 100000000000ull,
                                   1000000000000ull, 10000000000000ull, 100000000000000ull, 1000000000000000ull};

size_t srv_oip_float_text(float f, char *out) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    int biased = (int)(bits >> 23 & 0xff), neg = (int)(bits >> 31);
    char *p = out;
    if (biased == 0 && (bits & 0x7fffff) == 0) { /* "0" or "-0" */
        if (neg) *p++ = '-';
        *p++ = '0';
        return (size_t)(p - out);
    }
    if (biased == 0 || biased == 0xff) goto by_printf; /* subnormal (an exponent), infinite or NaN */
    /* |f| = m 2^e2 exactly. x is its decimal exponent: the one whose 9
     * digits q = |f| 10^(8 - x), cut to a whole number, lie in
     * [10^8, 10^9); a guess from the binary exponent is off by one at
     * most. q is then rounded as printf rounds: half to even. */
    uint64_t m = (bits & 0x7fffff) | 0x800000;
    int e2 = biased - 150, x = (int)floor((biased - 127) * 0.30102999566398120), round_up = 0;
    uint64_t q = 0;
    for (int tries = 0;; tries++) {
        int s = 8 - x;
        if (tries == 3 || s < 0 || s > 15) goto by_printf; /* an exponent, or past 10^15 2^24 < 2^128 */
        unsigned __int128 n = (unsigned __int128)m * POW10[s];
        if (e2 >= 0) {
            q = (uint64_t)(n << e2), round_up = 0;
        } else {
            unsigned __int128 rem = n & (((unsigned __int128)1 << -e2) - 1), half = (unsigned __int128)1 << (-e2 - 1);
            q = (uint64_t)(n >> -e2);
            round_up = rem > half || (rem == half && (q & 1));
        }
        if (q >= 1000000000ull) x++;
        else if (q < 100000000ull) x--;
        else break;
    }
    q += (uint64_t)round_up;
    if (q == 1000000000ull) q = 100000000ull, x++;
    if (x < -4 || x > 8) goto by_printf; /* "%g" writes an exponent */
    char d[9];
    for (int i = 8; i >= 0; i--, q /= 10) d[i] = (char)('0' + q % 10);
    int last = 8; /* the last digit that is not a trailing zero */
    while (last > 0 && d[last] == '0') last--;
    if (neg) *p++ = '-';
    if (x >= 0) {
        for (int i = 0; i <= x; i++) *p++ = d[i];
        if (last > x) *p++ = '.';
        for (int i = x + 1; i <= last; i++) *p++ = d[i];
    } else {
        *p++ = '0', *p++ = '.';
        for (int i = 0; i < -x - 1; i++) *p++ = '0';
        for (int i = 0; i <= last; i++) *p++ = d[i];
    }
    return (size_t)(p - out);
by_printf:;
    char text[32];
    int n = snprintf(text, sizeof text, "%.9g", (double)f);
    memcpy(out, text, (size_t)n);
    return (size_t)n;
}

long long srv_oip_answer_bytes(const srv_oip_request *req, int h, int w, size_t png_total) {
    long long head = answer_head_bytes(req);
    if (req->kind == SRV_OIP_TENSOR) {
        long long count = (long long)req->n * h * w;
        return head + count * (req->binary_output ? (long long)sizeof(float) : FLOAT_TEXT_MAX);
    }
    long long n = req->n;
    if (req->binary_output) return head + 4 * n + (long long)png_total;
    return head + 3 * n + ((long long)png_total + 2 * n) / 3 * 4 + 4 * n;
}

dae_status srv_oip_answer(const srv_oip_request *req, const srv_model *m, const float *out,
                          uint8_t *const *png, const size_t *png_len, uint8_t **body, size_t *len, size_t *json_len) {
    const int h = m->net.in_h, w = m->net.in_w;
    size_t png_total = 0;
    for (int i = 0; req->kind == SRV_OIP_IMAGES && i < req->n; i++) png_total += png_len[i];
    size_t cap = (size_t)srv_oip_answer_bytes(req, h, w, png_total);
    char *b = malloc(cap);
    char *id = NULL;
    if (req->id != NULL) {
        cJSON *s = cJSON_CreateString(req->id);
        id = s != NULL ? cJSON_PrintUnformatted(s) : NULL;
        cJSON_Delete(s);
    }
    if (b == NULL || (req->id != NULL && id == NULL)) {
        free(b);
        free(id);
        return DAE_ERR_NOMEM;
    }
    const int tensor = req->kind == SRV_OIP_TENSOR;
    size_t count = tensor ? (size_t)req->n * (size_t)h * (size_t)w : (size_t)req->n;
    size_t bin = tensor ? count * sizeof(float) : 4 * count + png_total;
    size_t n = (size_t)snprintf(b, cap,
                                "{\"model_name\":\"%s\",\"model_version\":\"%s\",%s%s%s\"outputs\":[{\"name\":\"%s\","
                                "\"datatype\":\"%s\",\"shape\":[",
                                m->name, m->version, id != NULL ? "\"id\":" : "", id != NULL ? id : "",
                                id != NULL ? "," : "", tensor ? SRV_OIP_OUTPUT_TENSOR : SRV_OIP_OUTPUT_IMAGES,
                                tensor ? "FP32" : "BYTES");
    free(id);
    if (tensor) n += (size_t)snprintf(b + n, cap - n, "%d,1,%d,%d],", req->n, h, w);
    else n += (size_t)snprintf(b + n, cap - n, "%d],", req->n);
    if (req->binary_output) {
        n += (size_t)snprintf(b + n, cap - n, "\"parameters\":{\"binary_data_size\":%zu}}]}", bin);
        *json_len = n;
        if (tensor) {
            if (out != NULL) memcpy(b + n, out, bin);
            n += bin;
        } else {
            for (int i = 0; i < req->n; i++) {
                uint32_t l = (uint32_t)png_len[i];
                uint8_t le[4] = {(uint8_t)l, (uint8_t)(l >> 8), (uint8_t)(l >> 16), (uint8_t)(l >> 24)};
                memcpy(b + n, le, 4);
                memcpy(b + n + 4, png[i], png_len[i]);
                n += 4 + png_len[i];
            }
        }
    } else {
        n += (size_t)snprintf(b + n, cap - n, "\"data\":[");
        for (size_t i = 0; i < count; i++) {
            if (i > 0) b[n++] = ',';
            if (tensor) {
                n += srv_oip_float_text(out[i], b + n);
            } else {
                b[n++] = '"';
                n += b64_encode(png[i], png_len[i], b + n);
                b[n++] = '"';
            }
        }
        n += (size_t)snprintf(b + n, cap - n, "]}]}\n");
        *json_len = n;
    }
    *body = (uint8_t *)b;
    *len = n;
    return DAE_OK;
}

/* ------------------------------------------------------------ metadata */

char *srv_oip_model_json(const srv_model *m) {
    char *s = malloc(1024);
    if (s == NULL) return NULL;
    const int h = m->net.in_h, w = m->net.in_w;
    snprintf(s, 1024,
             "{\"name\":\"%s\",\"versions\":[\"%s\"],\"platform\":\"dae_safetensors\","
             "\"inputs\":[{\"name\":\"%s\",\"datatype\":\"FP32\",\"shape\":[-1,1,%d,%d]},"
             "{\"name\":\"%s\",\"datatype\":\"BYTES\",\"shape\":[-1]}],"
             "\"outputs\":[{\"name\":\"%s\",\"datatype\":\"FP32\",\"shape\":[-1,1,%d,%d]},"
             "{\"name\":\"%s\",\"datatype\":\"BYTES\",\"shape\":[-1]}]}\n",
             m->name, m->version, SRV_OIP_INPUT_TENSOR, h, w, SRV_OIP_INPUT_IMAGES, SRV_OIP_OUTPUT_TENSOR, h, w,
             SRV_OIP_OUTPUT_IMAGES);
    return s;
}
