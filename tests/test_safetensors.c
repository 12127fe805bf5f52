/* test_safetensors.c - safetensors reader and writer: round trips, a file
 * laid out byte for byte as the Python package writes it, every malformed
 * header the reference crate rejects, and atomic saving. */
#include <criterion/criterion.h>

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"
#include "safetensors.h"
#include "test_util.h"

/* ------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------ */

/* Number of entries in dir other than "." and "..". */
static int st_count_entries(const char *dir) {
    DIR *d = opendir(dir);
    cr_assert_not_null(d);
    int n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) n++;
    closedir(d);
    return n;
}

static uint8_t *st_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)n + 1);
    cr_assert_not_null(b);
    cr_assert_eq(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return b;
}

/* Builds a file image: 8-byte little-endian length of json, json, then
 * dlen bytes of data (or zeros when data is NULL). */
static uint8_t *st_image(const char *json, const uint8_t *data, size_t dlen, size_t *len) {
    size_t n = strlen(json);
    uint8_t *b = calloc(8 + n + dlen + 1, 1);
    cr_assert_not_null(b);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)n >> (8 * i));
    memcpy(b + 8, json, n);
    if (data != NULL) memcpy(b + 8 + n, data, dlen);
    *len = 8 + n + dlen;
    return b;
}

/* Parses buf and expects DAE_ERR_FORMAT with a message that contains
 * needle (when not NULL), and an output left empty. */
static void st_expect_bad_buf(const uint8_t *buf, size_t len, const char *needle) {
    dae_st_file f;
    memset(&f, 0xAB, sizeof f); /* the parser must reset it */
    char err[DAE_ERR_LEN] = "";
    dae_status st = dae_st_parse(buf, len, &f, err, sizeof err);
    cr_assert_eq(st, DAE_ERR_FORMAT, "expected a format error, got %s (%s)", dae_status_str(st), err);
    cr_assert_gt(strlen(err), 0, "empty error message");
    if (needle != NULL)
        cr_assert_not_null(strstr(err, needle), "message '%s' does not mention '%s'", err, needle);
    cr_assert_null(f.tensors);
    cr_assert_eq(f.n_tensors, 0);
    cr_assert_null(f.meta_keys);
    cr_assert_eq(f.n_meta, 0);
    dae_st_free(&f);
}

static void st_expect_bad(const char *json, size_t dlen, const char *needle) {
    size_t len;
    uint8_t *b = st_image(json, NULL, dlen, &len);
    st_expect_bad_buf(b, len, needle);
    free(b);
}

static void st_expect_ok(const char *json, size_t dlen, int n_tensors) {
    size_t len;
    uint8_t *b = st_image(json, NULL, dlen, &len);
    dae_st_file f = {0};
    char err[DAE_ERR_LEN] = "";
    dae_status st = dae_st_parse(b, len, &f, err, sizeof err);
    cr_assert_eq(st, DAE_OK, "%s: %s", json, err);
    cr_assert_eq(f.n_tensors, n_tensors);
    dae_st_free(&f);
    free(b);
}

/* ------------------------------------------------------------------------
 * Round trip
 * ------------------------------------------------------------------------ */

Test(safetensors, round_trip) {
    char *dir = test_tmpdir("st");
    char *path = path_join(dir, "model.safetensors");

    float w[6] = {0.0f, -0.0f, 1.5f, -2.25f, 1e-40f /* subnormal */, 3.4e38f};
    float s[1] = {42.0f};
    float b[5] = {1, 2, 3, 4, 5};
    dae_st_tensor t[4] = {
        {.name = "enc.w", .ndim = 2, .shape = {2, 3}, .numel = 6, .data = w},
        {.name = "empty", .ndim = 2, .shape = {0, 4}, .numel = 0, .data = NULL},
        {.name = "scalar", .ndim = 0, .numel = 1, .data = s},
        {.name = "dec.b \"q\"\n", .ndim = 1, .shape = {5}, .numel = 5, .data = b},
    };
    const char *keys[3] = {"format", "note", "na\xc3\xafve"};
    const char *vals[3] = {"dae", "line1\nline2 \"quoted\" back\\slash \x01", "caf\xc3\xa9"};
    char err[DAE_ERR_LEN] = "";
    cr_assert_eq(dae_st_save(path, t, 4, keys, vals, 3, err, sizeof err), DAE_OK, "%s", err);
    cr_assert_eq(st_count_entries(dir), 1, "temporary file left behind");

    dae_st_file f = {0};
    cr_assert_eq(dae_st_load(path, &f, err, sizeof err), DAE_OK, "%s", err);
    cr_assert_eq(f.n_tensors, 4);
    for (int i = 0; i < 4; i++) {
        const dae_st_tensor *g = &f.tensors[i];
        cr_assert_str_eq(g->name, t[i].name, "tensors must come back in file order");
        cr_assert_eq(g->ndim, t[i].ndim);
        for (int d = 0; d < g->ndim; d++) cr_assert_eq(g->shape[d], t[i].shape[d]);
        cr_assert_eq(g->numel, t[i].numel);
        cr_assert_not_null(g->data);
        cr_assert_eq((uintptr_t)g->data % _Alignof(float), 0);
        if (g->numel > 0) cr_assert_eq(memcmp(g->data, t[i].data, g->numel * sizeof(float)), 0, "%s", g->name);
    }
    cr_assert_eq(dae_st_find(&f, "scalar"), &f.tensors[2]);
    cr_assert_null(dae_st_find(&f, "missing"));
    cr_assert_eq(f.n_meta, 3);
    for (int i = 0; i < 3; i++) cr_assert_str_eq(dae_st_meta(&f, keys[i]), vals[i]);
    cr_assert_null(dae_st_meta(&f, "absent"));
    dae_st_free(&f);
    dae_st_free(&f); /* idempotent */

    /* Hand check of the layout: header padded with spaces to 8 bytes,
     * metadata first, data starts right after and holds 4*(6+0+1+5) bytes. */
    size_t len;
    uint8_t *img = st_read_file(path, &len);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | img[i];
    cr_assert_eq(n % 8, 0, "header length %llu is not a multiple of 8", (unsigned long long)n);
    cr_assert_eq(len, 8 + n + 4 * 12);
    cr_assert_eq(memcmp(img + 8, "{\"__metadata__\":{\"format\":\"dae\"", 31), 0);
    size_t close = 8 + n;
    while (img[close - 1] == ' ') close--;
    cr_assert_eq(img[close - 1], '}');
    cr_assert_lt(8 + n - close, 8, "more padding than needed");
    const char *want_w = "\"enc.w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}";
    const char *want_s = "\"scalar\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[24,28]}";
    const char *want_q = "\"dec.b \\\"q\\\"\\n\":";
    cr_assert_not_null(memmem(img + 8, n, want_w, strlen(want_w)));
    cr_assert_not_null(memmem(img + 8, n, want_s, strlen(want_s)));
    cr_assert_not_null(memmem(img + 8, n, want_q, strlen(want_q)), "name not escaped as JSON");
    /* 1.5f little-endian at data offset 8 */
    const uint8_t one_and_half[4] = {0x00, 0x00, 0xc0, 0x3f};
    cr_assert_eq(memcmp(img + 8 + n + 8, one_and_half, 4), 0);
    free(img);

    /* Saving again replaces the file atomically. */
    cr_assert_eq(dae_st_save(path, t + 2, 1, NULL, NULL, 0, err, sizeof err), DAE_OK, "%s", err);
    cr_assert_eq(dae_st_load(path, &f, err, sizeof err), DAE_OK, "%s", err);
    cr_assert_eq(f.n_tensors, 1);
    cr_assert_eq(f.n_meta, 0);
    cr_assert_float_eq(f.tensors[0].data[0], 42.0f, 0.0f);
    dae_st_free(&f);
    cr_assert_eq(st_count_entries(dir), 1);

    free(path);
    test_rm_tree(dir);
}

Test(safetensors, empty_file_round_trip) {
    char *dir = test_tmpdir("st");
    char *path = path_join(dir, "empty.safetensors");
    char err[DAE_ERR_LEN] = "";
    cr_assert_eq(dae_st_save(path, NULL, 0, NULL, NULL, 0, err, sizeof err), DAE_OK, "%s", err);
    dae_st_file f = {0};
    cr_assert_eq(dae_st_load(path, &f, err, sizeof err), DAE_OK, "%s", err);
    cr_assert_eq(f.n_tensors, 0);
    cr_assert_eq(f.n_meta, 0);
    dae_st_free(&f);
    free(path);
    test_rm_tree(dir);
}

/* A file laid out exactly as safetensors.torch.save_file writes
 *   {"b": tensor([[1., 2.]]), "a": tensor([-1.])}, metadata={"format": "pt"}
 * (tensors by name in the data, header padded with spaces to 8 bytes). The
 * header lists "b" before "a" to check sorting by offset. */
Test(safetensors, python_layout_loads) {
    static const char json[] =
        "{\"__metadata__\":{\"format\":\"pt\"},"
        "\"b\":{\"dtype\":\"F32\",\"shape\":[1,2],\"data_offsets\":[4,12]},"
        "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}";
    const size_t jn = sizeof json - 1;
    const size_t n = (jn + 7) / 8 * 8;
    static const uint8_t data[12] = {
        0x00, 0x00, 0x80, 0xbf, /* -1.0f */
        0x00, 0x00, 0x80, 0x3f, /*  1.0f */
        0x00, 0x00, 0x00, 0x40, /*  2.0f */
    };
    uint8_t buf[8 + 256 + 12];
    cr_assert_leq(n, 256);
    memset(buf, ' ', sizeof buf);
    for (int i = 0; i < 8; i++) buf[i] = (uint8_t)((uint64_t)n >> (8 * i));
    memcpy(buf + 8, json, jn);
    memcpy(buf + 8 + n, data, sizeof data);

    dae_st_file f = {0};
    char err[DAE_ERR_LEN] = "";
    cr_assert_eq(dae_st_parse(buf, 8 + n + sizeof data, &f, err, sizeof err), DAE_OK, "%s", err);
    cr_assert_eq(f.n_tensors, 2);
    cr_assert_str_eq(f.tensors[0].name, "a");
    cr_assert_str_eq(f.tensors[1].name, "b");
    cr_assert_eq(f.tensors[0].ndim, 1);
    cr_assert_eq(f.tensors[0].shape[0], 1);
    cr_assert_eq(f.tensors[1].ndim, 2);
    cr_assert_eq(f.tensors[1].shape[0], 1);
    cr_assert_eq(f.tensors[1].shape[1], 2);
    cr_assert_float_eq(f.tensors[0].data[0], -1.0f, 0.0f);
    cr_assert_float_eq(f.tensors[1].data[0], 1.0f, 0.0f);
    cr_assert_float_eq(f.tensors[1].data[1], 2.0f, 0.0f);
    cr_assert_str_eq(dae_st_meta(&f, "format"), "pt");
    dae_st_free(&f);
}

Test(safetensors, accepts_edge_cases) {
    st_expect_ok("{}", 0, 0);
    st_expect_ok("{\"__metadata__\":{}}", 0, 0);
    st_expect_ok("{\"z\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[0,0]}}", 0, 1);
    st_expect_ok("{\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]}}  \n", 4, 1);
    /* zero-size tensors sharing an offset with a real one */
    st_expect_ok("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                 "\"z\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[0,0]}}", 4, 2);
    /* a zero dimension before huge ones: the left-to-right product stays 0 */
    st_expect_ok("{\"z\":{\"dtype\":\"F32\",\"shape\":[0,4294967296,4294967296],\"data_offsets\":[0,0]}}", 0, 1);
    /* eight dimensions is the maximum */
    st_expect_ok("{\"d\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,2],\"data_offsets\":[0,8]}}", 8, 1);
    /* a non-ASCII name */
    st_expect_ok("{\"caf\xc3\xa9\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, 1);
}

/* ------------------------------------------------------------------------
 * Malformed files
 * ------------------------------------------------------------------------ */

Test(safetensors, rejects_short_file) {
    const uint8_t b[5] = {2, 0, 0, 0, 0};
    st_expect_bad_buf(b, sizeof b, "too short");
    st_expect_bad_buf(b, 0, "too short");
}

Test(safetensors, rejects_huge_header_length) {
    uint8_t b[16] = {0};
    uint64_t n = 100000001;
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(n >> (8 * i));
    st_expect_bad_buf(b, sizeof b, "limit");
    memset(b, 0xff, 8);
    st_expect_bad_buf(b, sizeof b, "limit");
}

Test(safetensors, rejects_header_beyond_file) {
    size_t len;
    uint8_t *b = st_image("{}", NULL, 0, &len);
    b[0] = 100;
    st_expect_bad_buf(b, len, "runs past the end");
    free(b);
}

Test(safetensors, rejects_bad_json) {
    st_expect_bad("{not json}", 0, "not valid JSON");
    st_expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}", 4, "not valid JSON");
    st_expect_bad("[1,2]", 0, "'{'");
    st_expect_bad(" {}", 0, "'{'");
    st_expect_bad("", 0, "'{'");
    st_expect_bad("{}x", 0, "trailing");
    st_expect_bad("{\"\xff\":1}", 0, "UTF-8");
    st_expect_bad("{\"\xed\xa0\x80\":1}", 0, "UTF-8"); /* an encoded surrogate */
    st_expect_bad("{\"a\tb\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "control character");
    st_expect_bad("{\"a\\u0000b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "NUL");

    /* a NUL byte inside the header, after the object */
    size_t len;
    uint8_t *b = st_image("{}      ", NULL, 0, &len);
    b[8 + 3] = '\0';
    st_expect_bad_buf(b, len, "trailing");
    free(b);
}

Test(safetensors, rejects_missing_fields) {
    st_expect_bad("{\"w\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "missing \"dtype\"");
    st_expect_bad("{\"w\":{\"dtype\":\"F32\",\"data_offsets\":[0,4]}}", 4, "missing \"shape\"");
    st_expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1]}}", 4, "missing \"data_offsets\"");
    st_expect_bad("{\"w\":[1]}", 4, "'w'");
    st_expect_bad("{\"w\":{\"dtype\":32,\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "dtype");
}

Test(safetensors, rejects_unknown_and_repeated_keys) {
    st_expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4],\"extra\":1}}", 4, "unknown key 'extra'");
    st_expect_bad("{\"w\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "twice");
}

Test(safetensors, rejects_bad_shapes) {
    st_expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4, "negative");
    st_expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4, "not an integer");
    st_expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1.0],\"data_offsets\":[0,4]}}", 4, "plain integer");
    st_expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1e0],\"data_offsets\":[0,4]}}", 4, "plain integer");
    st_expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[\"1\"],\"data_offsets\":[0,4]}}", 4, "shape[0]");
    st_expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":1,\"data_offsets\":[0,4]}}", 4, "not an array");
    st_expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 4, "9 dimensions");
    st_expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1e300],\"data_offsets\":[0,4]}}", 4, "too large");
}

Test(safetensors, rejects_bad_offsets) {
    st_expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4, "2 integers");
    st_expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4,8]}}", 4, "2 integers");
    st_expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[-4,0]}}", 4, "negative");
    st_expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,0]}}", 4, "[4, 0]");
    /* gap: b starts at 8 but a ends at 4 */
    st_expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                  "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[8,12]}}", 12, "gap");
    /* first tensor does not start at 0 */
    st_expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "'a'");
    /* overlap: b starts inside a */
    st_expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                  "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "overlap");
    /* same range twice */
    st_expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                  "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "overlap");
}

Test(safetensors, rejects_size_mismatch) {
    st_expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4, "'w'");
    st_expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 20, "[0, 20]");
}

Test(safetensors, rejects_data_size_mismatch) {
    /* trailing bytes after the last tensor */
    st_expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 8, "trailing");
    /* data shorter than the offsets */
    st_expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, "truncated");
    /* no tensors but data */
    st_expect_bad("{}", 4, "trailing");
}

Test(safetensors, rejects_other_dtypes) {
    st_expect_bad("{\"w\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4, "only F32");
    st_expect_bad("{\"w\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4, "only F32");
    st_expect_bad("{\"w\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[0,8]}}", 8, "only F32");
    st_expect_bad("{\"w\":{\"dtype\":\"Q7\",\"shape\":[1],\"data_offsets\":[0,4]}}", 4, "unknown dtype");
}

Test(safetensors, rejects_shape_overflow) {
    st_expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,0],\"data_offsets\":[0,0]}}", 0, "overflow");
    st_expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[65536,65536,65536,65536],\"data_offsets\":[0,0]}}", 0, "overflow");
    /* the element count fits but its byte size does not */
    st_expect_bad("{\"w\":{\"dtype\":\"F32\",\"shape\":[4194304,4194304,524288],\"data_offsets\":[0,0]}}", 0, "overflow");
}

Test(safetensors, rejects_duplicate_names) {
    st_expect_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                  "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "'a' appears twice");
    st_expect_bad("{\"__metadata__\":{},\"__metadata__\":{}}", 0, "twice");
    st_expect_bad("{\"__metadata__\":{\"k\":\"1\",\"k\":\"2\"}}", 0, "'k' appears twice");
}

Test(safetensors, rejects_bad_metadata) {
    st_expect_bad("{\"__metadata__\":{\"k\":1}}", 0, "'k'");
    st_expect_bad("{\"__metadata__\":{\"k\":null}}", 0, "'k'");
    st_expect_bad("{\"__metadata__\":{\"k\":{\"x\":\"y\"}}}", 0, "'k'");
    st_expect_bad("{\"__metadata__\":[\"k\"]}", 0, "__metadata__");
    st_expect_bad("{\"__metadata__\":\"k\"}", 0, "__metadata__");
}

/* Every proper prefix of a valid file and thousands of random byte
 * mutations must fail cleanly (or, for harmless mutations, succeed). */
Test(safetensors, survives_truncation_and_mutation) {
    static const char json[] =
        "{\"__metadata__\":{\"format\":\"pt\"},"
        "\"a\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
        "\"b\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[16,20]}}";
    size_t len;
    uint8_t *good = st_image(json, NULL, 20, &len);
    char err[DAE_ERR_LEN];
    dae_st_file f = {0};
    cr_assert_eq(dae_st_parse(good, len, &f, err, sizeof err), DAE_OK, "%s", err);
    dae_st_free(&f);
    for (size_t cut = 0; cut < len; cut++) {
        uint8_t *b = malloc(cut + 1);
        memcpy(b, good, cut);
        st_expect_bad_buf(b, cut, NULL);
        free(b);
    }
    uint8_t *b = malloc(len);
    uint64_t x = 0x243f6a8885a308d3ULL;
    for (int iter = 0; iter < 4000; iter++) {
        memcpy(b, good, len);
        int flips = 1 + iter % 3;
        for (int k = 0; k < flips; k++) {
            x = x * 6364136223846793005ULL + 1442695040888963407ULL;
            size_t at = (size_t)(x >> 33) % len;
            b[at] = (uint8_t)(x >> 16);
        }
        err[0] = '\0';
        dae_status st = dae_st_parse(b, len, &f, err, sizeof err);
        cr_assert(st == DAE_OK || st == DAE_ERR_FORMAT, "status %d", (int)st);
        if (st != DAE_OK) cr_assert_gt(strlen(err), 0);
        dae_st_free(&f);
    }
    free(b);
    free(good);
}

/* ------------------------------------------------------------------------
 * Files
 * ------------------------------------------------------------------------ */

Test(safetensors, load_missing_path_names_it) {
    dae_st_file f = {0};
    char err[DAE_ERR_LEN] = "";
    const char *path = "tests/fixtures/no-such-model.safetensors";
    cr_assert_eq(dae_st_load(path, &f, err, sizeof err), DAE_ERR_IO);
    cr_assert_not_null(strstr(err, path), "%s", err);
    cr_assert_eq(f.n_tensors, 0);
    dae_st_free(&f);
}

Test(safetensors, load_bad_file_names_path) {
    char *dir = test_tmpdir("st");
    char *path = path_join(dir, "bad.safetensors");
    FILE *fp = fopen(path, "wb");
    cr_assert_not_null(fp);
    fputs("abc", fp);
    fclose(fp);
    dae_st_file f = {0};
    char err[DAE_ERR_LEN] = "";
    cr_assert_eq(dae_st_load(path, &f, err, sizeof err), DAE_ERR_FORMAT);
    cr_assert_not_null(strstr(err, path), "%s", err);
    cr_assert_eq(dae_st_load(dir, &f, err, sizeof err), DAE_ERR_IO); /* a directory */
    cr_assert_not_null(strstr(err, dir), "%s", err);
    free(path);
    test_rm_tree(dir);
}

Test(safetensors, save_into_missing_directory_fails_cleanly) {
    char *dir = test_tmpdir("st");
    char *sub = path_join(dir, "nope");
    char *path = path_join(sub, "model.safetensors");
    float v = 1.0f;
    dae_st_tensor t = {.name = "v", .ndim = 1, .shape = {1}, .numel = 1, .data = &v};
    char err[DAE_ERR_LEN] = "";
    cr_assert_eq(dae_st_save(path, &t, 1, NULL, NULL, 0, err, sizeof err), DAE_ERR_IO);
    cr_assert_not_null(strstr(err, path), "%s", err);
    struct stat sb;
    cr_assert_neq(stat(sub, &sb), 0);
    cr_assert_eq(st_count_entries(dir), 0);
    free(path);
    free(sub);
    test_rm_tree(dir);
}

Test(safetensors, save_failing_rename_removes_tmp) {
    char *dir = test_tmpdir("st");
    char *path = path_join(dir, "adir");
    char *inner = path_join(path, "x");
    cr_assert_eq(mkdir(path, 0755), 0);
    FILE *fp = fopen(inner, "wb"); /* a non-empty directory cannot be replaced */
    cr_assert_not_null(fp);
    fclose(fp);
    float v = 1.0f;
    dae_st_tensor t = {.name = "v", .ndim = 1, .shape = {1}, .numel = 1, .data = &v};
    char err[DAE_ERR_LEN] = "";
    cr_assert_eq(dae_st_save(path, &t, 1, NULL, NULL, 0, err, sizeof err), DAE_ERR_IO);
    cr_assert_gt(strlen(err), 0);
    cr_assert_eq(st_count_entries(dir), 1, "temporary file left behind");
    free(inner);
    free(path);
    test_rm_tree(dir);
}

/* A full file system is told apart from other write failures: the server
 * answers it 507 rather than 500. /dev/full fails every write with
 * ENOSPC (written in place, as a device is). */
Test(safetensors, save_to_a_full_device_says_no_space) {
    float v = 1.0f;
    dae_st_tensor t = {.name = "v", .ndim = 1, .shape = {1}, .numel = 1, .data = &v};
    char err[DAE_ERR_LEN] = "";
    cr_assert_eq(dae_st_save("/dev/full", &t, 1, NULL, NULL, 0, err, sizeof err), DAE_ERR_NO_SPACE, "%s", err);
    cr_assert_not_null(strstr(err, "No space left"), "%s", err);
    cr_assert_eq(dae_write_errno_status(EDQUOT), DAE_ERR_NO_SPACE);
    cr_assert_eq(dae_write_errno_status(EACCES), DAE_ERR_IO);
}

Test(safetensors, save_rejects_bad_arguments_and_keeps_old_file) {
    char *dir = test_tmpdir("st");
    char *path = path_join(dir, "m.safetensors");
    float v[2] = {1.0f, 2.0f};
    dae_st_tensor good = {.name = "v", .ndim = 1, .shape = {2}, .numel = 2, .data = v};
    char err[DAE_ERR_LEN] = "";
    cr_assert_eq(dae_st_save(path, &good, 1, NULL, NULL, 0, err, sizeof err), DAE_OK, "%s", err);

    dae_st_tensor dup[2] = {good, good};
    cr_assert_eq(dae_st_save(path, dup, 2, NULL, NULL, 0, err, sizeof err), DAE_ERR_INVALID);
    cr_assert_not_null(strstr(err, "twice"), "%s", err);
    dae_st_tensor bad = good;
    bad.numel = 3;
    cr_assert_eq(dae_st_save(path, &bad, 1, NULL, NULL, 0, err, sizeof err), DAE_ERR_INVALID);
    bad = good;
    bad.shape[0] = -2;
    cr_assert_eq(dae_st_save(path, &bad, 1, NULL, NULL, 0, err, sizeof err), DAE_ERR_INVALID);
    bad = good;
    bad.name = "__metadata__";
    cr_assert_eq(dae_st_save(path, &bad, 1, NULL, NULL, 0, err, sizeof err), DAE_ERR_INVALID);
    bad = good;
    bad.ndim = DAE_ST_MAX_DIMS + 1;
    cr_assert_eq(dae_st_save(path, &bad, 1, NULL, NULL, 0, err, sizeof err), DAE_ERR_INVALID);
    const char *k[2] = {"a", "a"}, *val[2] = {"1", "2"};
    cr_assert_eq(dae_st_save(path, &good, 1, k, val, 2, err, sizeof err), DAE_ERR_INVALID);
    const char *badutf[1] = {"\xff"};
    cr_assert_eq(dae_st_save(path, &good, 1, badutf, val, 1, err, sizeof err), DAE_ERR_INVALID);

    dae_st_file f = {0};
    cr_assert_eq(dae_st_load(path, &f, err, sizeof err), DAE_OK, "%s", err);
    cr_assert_eq(f.n_tensors, 1);
    cr_assert_float_eq(f.tensors[0].data[1], 2.0f, 0.0f);
    dae_st_free(&f);
    cr_assert_eq(st_count_entries(dir), 1);
    free(path);
    test_rm_tree(dir);
}

Test(safetensors, free_is_safe_on_zeroed_struct) {
    dae_st_file f = {0};
    dae_st_free(&f);
    dae_st_free(&f);
    dae_st_free(NULL);
    cr_assert_null(dae_st_find(&f, "x"));
    cr_assert_null(dae_st_meta(&f, "x"));
}
