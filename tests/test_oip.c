/* test_oip.c - the Open Inference Protocol's payloads (server/oip.h):
 * requests in JSON (flat and nested data) and with the binary tensor data
 * extension, the answers in both forms, and every kind of mistake a client
 * can make answered with a sentence that names it. tests/server/test_oip.py
 * covers the routes over HTTP. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../server/oip.h"
#include "test_util.h"

enum { H = 28, W = 28, T = H * W };

/* The nodes of a tensor request's JSON besides its data, at most. */
#define JSON_NODES_LEFT 32

/* srv_oip_take_fn: grants everything, counting it in *ctx (long long). */
static int take_all(void *ctx, long long bytes) {
    *(long long *)ctx += bytes;
    return 0;
}

static long long taken;

/* srv_oip_take_fn: grants nothing. */
static int take_none(void *ctx, long long bytes) {
    (void)ctx;
    (void)bytes;
    return -1;
}

/* Parses the NUL-terminated JSON body s (no binary part). */
static dae_status parse_json(const char *s, srv_oip_request *req, char *err, size_t errlen) {
    return srv_oip_parse((const uint8_t *)s, strlen(s), strlen(s), NULL, H, W, take_all, &taken, req, err, errlen);
}

/* What parsing the len bytes of JSON at s holds at most (srv_oip_scan). */
static long long scan_bytes(const char *s, size_t len) {
    srv_oip_scan scan;
    srv_oip_scan_json((const uint8_t *)s, len, &scan);
    return scan.bytes;
}

/* A request of n FP32 inputs in JSON: flat data, or nested [n][1][H][W]. */
static char *tensor_json(int n, int nested, const char *extra) {
    size_t cap = (size_t)n * T * 16 + 4096, k = 0;
    char *s = malloc(cap);
    k += (size_t)snprintf(s + k, cap - k,
                          "{%s\"inputs\":[{\"name\":\"input\",\"datatype\":\"FP32\",\"shape\":[%d,1,%d,%d],\"data\":[", extra,
                          n, H, W);
    for (int i = 0; i < n * T; i++) {
        const char *open = "", *close = "";
        if (nested) {
            if (i % T == 0) open = i % W == 0 ? "[[[" : "";
            else if (i % W == 0) open = "[";
            if ((i + 1) % T == 0) close = "]]]";
            else if ((i + 1) % W == 0) close = "]";
        }
        k += (size_t)snprintf(s + k, cap - k, "%s%s%.9g%s", i > 0 ? "," : "", open, (double)(i % 255) / 254.0, close);
    }
    snprintf(s + k, cap - k, "]}]}");
    return s;
}

Test(oip, flat_and_nested_json_give_the_same_tensor) {
    char err[DAE_ERR_LEN] = "";
    srv_oip_request a, b;
    char *flat = tensor_json(2, 0, "\"id\":\"42\",");
    char *nested = tensor_json(2, 1, "");
    cr_assert_eq(parse_json(flat, &a, err, sizeof err), DAE_OK, "%s", err);
    cr_assert_eq(parse_json(nested, &b, err, sizeof err), DAE_OK, "%s", err);
    cr_assert_eq(a.kind, SRV_OIP_TENSOR);
    cr_assert_eq(a.n, 2);
    cr_assert_str_eq(a.id, "42");
    cr_assert_null(b.id);
    cr_assert(memcmp(a.tensor, b.tensor, sizeof(float) * 2 * T) == 0);
    cr_assert_eq(a.floats[300], (float)(300 % 255) / 254.0f);
    cr_assert_eq(a.binary_output, 0);
    srv_oip_request_free(&a);
    srv_oip_request_free(&b);
    free(flat);
    free(nested);
}

/* A body of the JSON head followed by bin (binlen bytes). */
static uint8_t *with_binary(const char *head, const void *bin, size_t binlen, size_t *len) {
    size_t h = strlen(head);
    uint8_t *b = malloc(h + binlen);
    memcpy(b, head, h);
    memcpy(b + h, bin, binlen);
    *len = h + binlen;
    return b;
}

Test(oip, binary_tensor_in_and_out) {
    char err[DAE_ERR_LEN] = "", head[256];
    float x[3 * T];
    for (int i = 0; i < 3 * T; i++) x[i] = (float)i / (3 * T);
    snprintf(head, sizeof head,
             "{\"inputs\":[{\"name\":\"input\",\"datatype\":\"FP32\",\"shape\":[3,1,28,28],"
             "\"parameters\":{\"binary_data_size\":%zu}}],"
             "\"outputs\":[{\"name\":\"output\",\"parameters\":{\"binary_data\":true}}]}",
             sizeof x);
    size_t len, json_len;
    uint8_t *body = with_binary(head, x, sizeof x, &len);
    char hl[32];
    snprintf(hl, sizeof hl, "%zu", strlen(head));
    cr_assert_eq(srv_oip_json_length(hl, len, &json_len, err, sizeof err), DAE_OK);
    cr_assert_eq(json_len, strlen(head));
    srv_oip_request req;
    cr_assert_eq(srv_oip_parse(body, len, json_len, NULL, H, W, take_all, &taken, &req, err, sizeof err), DAE_OK, "%s", err);
    cr_assert_eq(req.n, 3);
    cr_assert_eq(req.tensor, body + json_len, "binary data is read where it lies");
    cr_assert(memcmp(req.tensor, x, sizeof x) == 0);
    cr_assert(req.binary_output);
    /* The answer: JSON with binary_data_size, then the floats. */
    srv_model m = {.name = "mnist", .version = "sha256:0123456789ab"};
    m.net.in_h = H, m.net.in_w = W;
    uint8_t *ans;
    size_t alen, ajson;
    cr_assert_eq(srv_oip_answer(&req, &m, x, NULL, NULL, &ans, &alen, &ajson), DAE_OK);
    cr_assert_eq(alen - ajson, sizeof x);
    cr_assert(memcmp(ans + ajson, x, sizeof x) == 0);
    char *json = strndup((char *)ans, ajson);
    cr_assert_not_null(strstr(json, "\"binary_data_size\":9408"), "%s", json);
    cr_assert_not_null(strstr(json, "\"shape\":[3,1,28,28]"), "%s", json);
    cr_assert_not_null(strstr(json, "\"model_version\":\"sha256:0123456789ab\""), "%s", json);
    cr_assert_leq(alen, (size_t)srv_oip_answer_bytes(&req, H, W, 0));
    free(json);
    free(ans);
    /* Made before the outputs exist: the same JSON, room for them after it. */
    size_t alen2, ajson2;
    cr_assert_eq(srv_oip_answer(&req, &m, NULL, NULL, NULL, &ans, &alen2, &ajson2), DAE_OK);
    cr_assert_eq(alen2, alen);
    cr_assert_eq(ajson2, ajson);
    free(ans);
    srv_oip_request_free(&req);
    free(body);
}

Test(oip, json_answer_floats_round_trip) {
    char err[DAE_ERR_LEN] = "";
    srv_oip_request req;
    char *s = tensor_json(1, 0, "\"id\":\"a\\\"b\",");
    cr_assert_eq(parse_json(s, &req, err, sizeof err), DAE_OK, "%s", err);
    float out[T];
    for (int i = 0; i < T; i++) out[i] = i == 0 ? 1.17549435e-38f : (float)(1.0 / (i + 3.0)) - (i % 2 ? 0.25f : 0.0f);
    srv_model m = {.name = "m", .version = "sha256:000000000000"};
    m.net.in_h = H, m.net.in_w = W;
    uint8_t *ans;
    size_t alen, ajson;
    cr_assert_eq(srv_oip_answer(&req, &m, out, NULL, NULL, &ans, &alen, &ajson), DAE_OK);
    cr_assert_eq(alen, ajson, "JSON only");
    cr_assert_leq(alen, (size_t)srv_oip_answer_bytes(&req, H, W, 0));
    /* Read the data back: every float comes back exactly. */
    char *text = strndup((char *)ans, alen);
    cr_assert_not_null(strstr(text, "\"id\":\"a\\\"b\""), "the id is echoed, escaped");
    char *p = strstr(text, "\"data\":[");
    cr_assert_not_null(p);
    p += 8;
    for (int i = 0; i < T; i++) {
        char *end;
        float v = strtof(p, &end);
        cr_assert_eq(v, out[i], "element %d: %.9g read back as %.9g", i, (double)out[i], (double)v);
        p = end + 1;
    }
    free(text);
    free(ans);
    srv_oip_request_free(&req);
    free(s);
}

/* The answers' float text is printf's "%.9g", made faster: checked here
 * against printf on the edges of its own arithmetic (powers of ten and
 * their neighbours, where the decimal exponent and the rounding change,
 * the ends of the float range) and 2 million floats at random, half of
 * them in [0, 1] as images are. (All 2^32 patterns matched once, by a
 * program of the same loop.) */
Test(oip, float_text_is_printfs) {
    float edges[200];
    int n = 0;
    static const float fixed[] = {0.0f, -0.0f, 1.0f, -1.0f, 0.5f, 0.1f, 0.3f, 2.0f / 3.0f, 1.17549435e-38f,
                                  1.4e-45f, 3.40282347e38f, 123456789.0f, 999999999.0f, 9.9999999e-5f,
                                  9.99999975e-5f, 0.000123456789f, INFINITY, -INFINITY, NAN,
                                  1234567.125f, 1234567.375f, 9999999.5f, 99999999.0f}; /* ties to even */
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++) edges[n++] = fixed[i];
    for (int e = -7; e <= 10; e++) {
        float p = (float)pow(10.0, e);
        edges[n++] = p, edges[n++] = nextafterf(p, 0.0f), edges[n++] = nextafterf(p, INFINITY);
        edges[n++] = -p, edges[n++] = 0.5f * p, edges[n++] = 0.95f * p;
    }
    cr_assert_leq(n, (int)(sizeof edges / sizeof edges[0]));
    uint64_t state = 0x9e3779b97f4a7c15ull;
    for (int i = 0; i < n + 2000000; i++) {
        float f;
        if (i < n) {
            f = edges[i];
        } else {
            state ^= state << 13, state ^= state >> 7, state ^= state << 17; /* xorshift64 */
            uint32_t bits = (uint32_t)(state >> 32);
            if (i % 2) f = (float)(bits >> 8) / 16777216.0f;
            else memcpy(&f, &bits, sizeof f);
        }
        char want[32], got[32];
        int len = snprintf(want, sizeof want, "%.9g", (double)f);
        size_t k = srv_oip_float_text(f, got);
        cr_assert_leq(k, 15);
        got[k] = '\0';
        cr_assert_str_eq(got, want, "float %a: \"%s\", printf \"%s\"", (double)f, got, want);
        cr_assert_eq((int)k, len);
    }
}

Test(oip, images_in_base64_json_and_binary) {
    char err[DAE_ERR_LEN] = "";
    srv_oip_request req;
    /* "hello" and "PNG!?" in base64. */
    const char *json = "{\"inputs\":[{\"name\":\"images\",\"datatype\":\"BYTES\",\"shape\":[2],"
                       "\"data\":[\"aGVsbG8=\",[\"UE5HIT8=\"]]}],\"parameters\":{\"binary_data_output\":true}}";
    cr_assert_eq(parse_json(json, &req, err, sizeof err), DAE_OK, "%s", err);
    cr_assert_eq(req.kind, SRV_OIP_IMAGES);
    cr_assert_eq(req.n, 2);
    cr_assert_eq(req.image_len[0], 5);
    cr_assert(memcmp(req.image[0], "hello", 5) == 0);
    cr_assert(memcmp(req.image[1], "PNG!?", 5) == 0);
    cr_assert(req.binary_output);
    /* The answer's binary part: a 4-byte little-endian length per element. */
    srv_model m = {.name = "m", .version = "v"};
    m.net.in_h = H, m.net.in_w = W;
    uint8_t *png[2] = {(uint8_t *)"abc", (uint8_t *)"defgh"};
    size_t png_len[2] = {3, 5};
    uint8_t *ans;
    size_t alen, ajson;
    cr_assert_eq(srv_oip_answer(&req, &m, NULL, png, png_len, &ans, &alen, &ajson), DAE_OK);
    cr_assert_eq(alen - ajson, 4 + 3 + 4 + 5);
    cr_assert(memcmp(ans + ajson, "\3\0\0\0abc\5\0\0\0defgh", 16) == 0);
    free(ans);
    req.binary_output = 0;
    cr_assert_eq(srv_oip_answer(&req, &m, NULL, png, png_len, &ans, &alen, &ajson), DAE_OK);
    char *text = strndup((char *)ans, alen);
    cr_assert_not_null(strstr(text, "\"data\":[\"YWJj\",\"ZGVmZ2g=\"]"), "%s", text);
    cr_assert_leq(alen, (size_t)srv_oip_answer_bytes(&req, H, W, 8));
    free(text);
    free(ans);
    srv_oip_request_free(&req);
    /* The same images with the binary extension. */
    const char *head = "{\"inputs\":[{\"name\":\"images\",\"datatype\":\"BYTES\",\"shape\":[2],"
                       "\"parameters\":{\"binary_data_size\":18}}]}";
    size_t len;
    uint8_t *body = with_binary(head, "\5\0\0\0hello\5\0\0\0PNG!?", 18, &len);
    cr_assert_eq(srv_oip_parse(body, len, strlen(head), NULL, H, W, take_all, &taken, &req, err, sizeof err), DAE_OK, "%s", err);
    cr_assert(memcmp(req.image[1], "PNG!?", 5) == 0);
    cr_assert_eq(req.image[0], body + strlen(head) + 4, "binary images are not copied");
    srv_oip_request_free(&req);
    /* A length that runs past the data. */
    body[strlen(head) + 9] = 6;
    cr_assert_eq(srv_oip_parse(body, len, strlen(head), NULL, H, W, take_all, &taken, &req, err, sizeof err), DAE_ERR_INVALID);
    cr_assert_not_null(strstr(err, "element 1"), "%s", err);
    free(body);
}

/* Each mistake is refused with a sentence naming what is wrong. */
Test(oip, mistakes_are_named) {
    static const struct {
        const char *body, *says;
    } cases[] = {
        {"{", "not valid JSON"},
        {"[]", "JSON object"},
        {"{\"inputs\":[]}", "exactly one input"},
        {"{\"inputs\":[{\"name\":\"input\",\"datatype\":\"FP32\",\"shape\":[1,1,28,28],\"data\":[0]},"
         "{\"name\":\"images\",\"datatype\":\"BYTES\",\"shape\":[1],\"data\":[\"\"]}]}",
         "exactly one input"},
        {"{\"inputs\":[{\"name\":\"x\",\"datatype\":\"FP32\",\"shape\":[1,1,28,28],\"data\":[0]}]}", "unknown input \"x\""},
        {"{\"inputs\":[{\"name\":\"input\",\"datatype\":\"FP64\",\"shape\":[1,1,28,28],\"data\":[0]}]}", "datatype FP64"},
        {"{\"inputs\":[{\"name\":\"input\",\"datatype\":\"FP32\",\"shape\":[1,28,28],\"data\":[0]}]}", "shape [1,28,28]"},
        {"{\"inputs\":[{\"name\":\"input\",\"datatype\":\"FP32\",\"shape\":[0,1,28,28],\"data\":[]}]}", "N >= 1"},
        {"{\"inputs\":[{\"name\":\"input\",\"datatype\":\"FP32\",\"shape\":[1,1,28,28],\"data\":[1,2,3]}]}", "has 3 elements"},
        {"{\"inputs\":[{\"name\":\"input\",\"datatype\":\"FP32\",\"shape\":[99999,1,28,28],\"data\":[0]}]}",
         "needs 78399216"},
        {"{\"inputs\":[{\"name\":\"input\",\"datatype\":\"FP32\",\"shape\":[4294967297,1,28,28],\"data\":[0]}]}",
         "whole numbers from 0 to 1000000000"},
        {"{\"inputs\":[{\"name\":\"input\",\"datatype\":\"FP32\",\"shape\":[1,1,-28,28],\"data\":[0]}]}",
         "whole numbers from 0 to 1000000000"},
        {"{\"inputs\":[{\"name\":\"input\",\"datatype\":\"FP32\",\"shape\":[1,1,28,28]}]}", "no \"data\""},
        {"{\"inputs\":[{\"name\":\"input\",\"datatype\":\"FP32\",\"shape\":[1,1,28,28],"
         "\"parameters\":{\"binary_data_size\":3136}}]}",
         "binary_data_size\" is 3136 and 0 bytes"},
        {"{\"inputs\":[{\"name\":\"images\",\"datatype\":\"BYTES\",\"shape\":[1],\"data\":[\"@@@@\"]}]}", "not base64"},
        {"{\"inputs\":[{\"name\":\"images\",\"datatype\":\"BYTES\",\"shape\":[2],\"data\":[\"aGk=\"]}]}", "has 1 elements"},
        {"{\"inputs\":[{\"name\":\"images\",\"datatype\":\"BYTES\",\"shape\":[1],\"data\":[7]}]}", "not a string"},
        {"{\"inputs\":[{\"name\":\"images\",\"datatype\":\"BYTES\",\"shape\":[1],\"data\":[\"aGk=\"]}],"
         "\"outputs\":[{\"name\":\"output\"}]}",
         "unknown output \"output\""},
        {"{\"id\":7,\"inputs\":[]}", "\"id\" must be a string"},
        {"{\"inputs\":[]} xy", "2 bytes follow the JSON"},
        {"{\"inputs\":[{\"name\":\"images\",\"datatype\":\"BYTES\",\"shape\":[1],\"data\":[\"aGk=\"]}],"
         "\"outputs\":[{\"name\":\"denoised\"},{\"name\":\"denoised\"}]}",
         "more than once"},
        {"{\"parameters\":{\"binary_data_output\":1},\"inputs\":[{\"name\":\"images\",\"datatype\":\"BYTES\","
         "\"shape\":[1],\"data\":[\"aGk=\"]}]}",
         "binary_data_output"},
        /* A NUL in a string would end the name cJSON gives: "images" */
        {"{\"inputs\":[{\"name\":\"images\\u0000x\",\"datatype\":\"BYTES\",\"shape\":[1],\"data\":[\"aGk=\"]}]}",
         "a string holds a NUL character"},
        /* A key the parse reads, given twice in its object: which one would count? */
        {"{\"inputs\":[{\"name\":\"images\",\"datatype\":\"BYTES\",\"shape\":[1],\"data\":[\"aGk=\"]}],"
         "\"inputs\":[]}",
         "\"inputs\" is given more than once"},
        {"{\"inputs\":[{\"name\":\"input\",\"datatype\":\"FP32\",\"shape\":[1,1,28,28],\"shape\":[2,1,28,28],"
         "\"data\":[0]}]}",
         "\"shape\" is given more than once"},
        {"{\"inputs\":[{\"name\":\"images\",\"name\":\"input\",\"datatype\":\"BYTES\",\"shape\":[1],"
         "\"data\":[\"aGk=\"]}]}",
         "\"name\" is given more than once"},
        {"{\"inputs\":[{\"name\":\"images\",\"datatype\":\"BYTES\",\"shape\":[1],\"data\":[\"aGk=\"]}],"
         "\"outputs\":[{\"name\":\"denoised\",\"parameters\":{\"binary_data\":true,\"binary_data\":false}}]}",
         "\"binary_data\" is given more than once"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char err[DAE_ERR_LEN] = "";
        srv_oip_request req;
        cr_assert_eq(parse_json(cases[i].body, &req, err, sizeof err), DAE_ERR_INVALID, "accepted %s", cases[i].body);
        cr_assert_not_null(strstr(err, cases[i].says), "%s: said \"%s\", not \"%s\"", cases[i].body, err, cases[i].says);
        cr_assert_null(req.tensor);
        cr_assert_null(req.image);
    }
    /* A bad element among 784. */
    static const struct {
        const char *element, *says;
    } elements[] = {{"\"a\"", "element 783 of \"data\" is not a number"}, {"1e300", "range of FP32"}};
    for (size_t i = 0; i < sizeof elements / sizeof elements[0]; i++) {
        char body[8192], err[DAE_ERR_LEN] = "";
        size_t k = (size_t)snprintf(body, sizeof body,
                                    "{\"inputs\":[{\"name\":\"input\",\"datatype\":\"FP32\",\"shape\":[1,1,28,28],\"data\":[");
        for (int e = 0; e < T - 1; e++) k += (size_t)snprintf(body + k, sizeof body - k, "0,");
        snprintf(body + k, sizeof body - k, "%s]}]}", elements[i].element);
        srv_oip_request req;
        cr_assert_eq(parse_json(body, &req, err, sizeof err), DAE_ERR_INVALID, "accepted %s", elements[i].element);
        cr_assert_not_null(strstr(err, elements[i].says), "said \"%s\", not \"%s\"", err, elements[i].says);
        cr_assert_null(req.floats);
    }
    char err[DAE_ERR_LEN];
    size_t json_len;
    cr_assert_eq(srv_oip_json_length("12x", 100, &json_len, err, sizeof err), DAE_ERR_INVALID);
    cr_assert_eq(srv_oip_json_length("101", 100, &json_len, err, sizeof err), DAE_ERR_INVALID);
    cr_assert_eq(srv_oip_json_length("100", 100, &json_len, err, sizeof err), DAE_OK);
}

/* The parse tree's reservation grows with the values of the text, and
 * what the parser keeps is asked for first: refused, the parse fails
 * with DAE_ERR_BUSY, holding nothing. */
Test(oip, memory_is_asked_for_first) {
    char *one = tensor_json(1, 0, ""), *four = tensor_json(4, 0, "");
    /* cJSON's tree: a node a value. */
    srv_oip_read_numbers_apart(0);
    long long a = scan_bytes(one, strlen(one));
    long long b = scan_bytes(four, strlen(four));
    srv_oip_read_numbers_apart(1);
    cr_assert_gt(a, (long long)T * 64, "at least a node per value");
    cr_assert_gt(b, 3 * a, "four times the values");
    /* The numbers read apart: a float each, and two copies of the text
     * (the body and the copy cJSON parses). */
    long long apart = scan_bytes(four, strlen(four));
    cr_assert_leq(apart, 4LL * T * (long long)sizeof(float) + 2 * (long long)strlen(four) + 64 * JSON_NODES_LEFT);
    cr_assert_lt(apart * 3, b, "a third of the tree's or less");
    char err[DAE_ERR_LEN] = "";
    srv_oip_request req;
    taken = 0;
    cr_assert_eq(parse_json(four, &req, err, sizeof err), DAE_OK, "%s", err);
    cr_assert_eq(taken, (long long)sizeof(float) * 4 * T, "the floats were asked for");
    srv_oip_request_free(&req);
    cr_assert_eq(srv_oip_parse((uint8_t *)four, strlen(four), strlen(four), NULL, H, W, take_none, NULL, &req, err,
                               sizeof err),
                 DAE_ERR_BUSY);
    cr_assert_not_null(strstr(err, "memory budget"), "%s", err);
    cr_assert_null(req.floats);
    free(one);
    free(four);
}

/* ------------------------------------------------------------ numbers read apart from the tree */

/* Bodies whose numbers were read apart, of those assert_parsed_alike saw. */
static int read_apart;

/* Parses body both ways, its tensor's numbers read apart and everything
 * by cJSON (the oracle), and checks the two agree: outcome, message,
 * memory asked for, and the request to the bit. */
static void assert_parsed_alike(const char *body, size_t len, size_t json_len) {
    srv_oip_read_numbers_apart(0);
    long long tree = scan_bytes(body, json_len);
    srv_oip_read_numbers_apart(1);
    read_apart += scan_bytes(body, json_len) < tree;
    srv_oip_request a, b;
    char ea[DAE_ERR_LEN] = "", eb[DAE_ERR_LEN] = "";
    long long ta = 0, tb = 0;
    srv_oip_read_numbers_apart(1);
    dae_status sa = srv_oip_parse((const uint8_t *)body, len, json_len, NULL, H, W, take_all, &ta, &a, ea, sizeof ea);
    srv_oip_read_numbers_apart(0);
    dae_status sb = srv_oip_parse((const uint8_t *)body, len, json_len, NULL, H, W, take_all, &tb, &b, eb, sizeof eb);
    srv_oip_read_numbers_apart(1);
    cr_assert_eq(sa, sb, "%.300s: %d \"%s\" against cJSON's %d \"%s\"", body, sa, ea, sb, eb);
    cr_assert_str_eq(ea, eb, "%.300s", body);
    cr_assert_eq(ta, tb, "%.300s: asked for %lld bytes against %lld", body, ta, tb);
    if (sa == DAE_OK) {
        cr_assert_eq(a.kind, b.kind);
        cr_assert_eq(a.n, b.n);
        cr_assert_eq(a.binary_output, b.binary_output);
        cr_assert_eq(a.id == NULL, b.id == NULL);
        if (a.id != NULL) cr_assert_str_eq(a.id, b.id);
        if (a.kind == SRV_OIP_TENSOR) {
            cr_assert_eq(memcmp(a.tensor, b.tensor, (size_t)a.n * T * sizeof(float)), 0, "%.300s", body);
        } else {
            for (int i = 0; i < a.n; i++) {
                cr_assert_eq(a.image_len[i], b.image_len[i]);
                cr_assert_eq(memcmp(a.image[i], b.image[i], a.image_len[i]), 0);
            }
        }
    }
    srv_oip_request_free(&a);
    srv_oip_request_free(&b);
}

/* A tensor request whose data is T numbers written by number(i, r),
 * between the parts head and tail, each element separated by sep(r). */
static char *numbers_body(const char *head, const char *tail, dae_rng *r, int nested) {
    static const char *const numbers[] = {"0", "1", "0.5", "-0", "1e-3", "2.5E+1", "0.123456789", "3.4e38", "7",
                                          "12", "1.", "01", "-0.0", "1e0"};
    static const char *const spaces[] = {"", "", "", " ", "\n", "\t ", "\r\n  ", "\x01", "\x1f"};
    size_t cap = (size_t)T * 48 + 4096, k = 0;
    char *s = malloc(cap);
    k += (size_t)snprintf(s + k, cap - k, "%s", head);
    for (int i = 0; i < T; i++) {
        const char *sp = spaces[dae_rng_next(r) % (sizeof spaces / sizeof *spaces)];
        const char *open = nested && i % W == 0 ? "[" : "", *close = nested && (i + 1) % W == 0 ? "]" : "";
        k += (size_t)snprintf(s + k, cap - k, "%s%s%s%s%s%s", i > 0 ? "," : "", sp, open,
                              numbers[dae_rng_next(r) % (sizeof numbers / sizeof *numbers)], close, sp);
    }
    snprintf(s + k, cap - k, "%s", tail);
    return s;
}

/* Every way a body can go wrong in or around its numbers is refused (or
 * taken) alike with the numbers read apart and by cJSON alone. */
Test(oip, numbers_read_apart_parse_as_cjson_does) {
    dae_rng r;
    dae_rng_seed(&r, 11, 0);
    static const char *const heads[] = {
        "{\"inputs\":[{\"name\":\"input\",\"datatype\":\"FP32\",\"shape\":[1,1,28,28],\"data\":[",
        "{\"id\":\"x\",\"inputs\":[{\"data\": [\n",
        "{\"inputs\":[{\"data\":[[1,2]],\"data\":[",   /* the first "data" is cJSON's */
        "{\"inputs\":[{\"d\\u0061ta\":[",               /* an escaped key: cJSON's alone */
        "{\"inp\\u0075ts\":[],\"inputs\":[{\"data\":[",
        "{\"inputs\":[{\"name\":\"images\",\"datatype\":\"BYTES\",\"shape\":[1],\"data\":[",
        "{\"inputs\":[{\"name\":\"input\"},{\"name\":\"input\",\"datatype\":\"FP32\",\"shape\":[1,1,28,28],\"data\":[",
        "{\"inputs\":[{\"name\":\"input\",\"datatype\":\"FP32\",\"shape\":[1,1,28,28],\"parameters\":{\"data\":[",
        "[{\"inputs\":[{\"data\":[",
        "\xEF\xBB\xBF {\"inputs\":[{\"data\":[", /* a BOM before the request */
        "2\t{\"inputs\":[{\"data\":[",           /* the request is 2: the rest follows it (found by fuzz_oip) */
        "{\"inputs\":[{\"data\":[]}]} {\"inputs\":[{\"data\":[",
        /* a NUL ('~' here) ends cJSON's copy of a key: "data~x" is "data" to it */
        "{\"inputs\":[{\"name\":\"input\",\"datatype\":\"FP32\",\"shape\":[1,1,28,28],\"data~x\":[1],\"data\":[",
    };
    static const char *const tails[] = {
        "]}]}",
        "],\"name\":\"input\",\"datatype\":\"FP32\",\"shape\":[1,1,28,28]}]}",
        "]}]} ",
        "]}]}x",
        "]}]",
        "],}]}",
        "]]}]}",
        "]}],\"outputs\":[{\"name\":\"output\",\"parameters\":{\"binary_data\":true}}]}",
        "]}}]}",
    };
    for (size_t h = 0; h < sizeof heads / sizeof *heads; h++)
        for (size_t t = 0; t < sizeof tails / sizeof *tails; t++)
            for (int nested = 0; nested < 2; nested++) {
                char *body = numbers_body(heads[h], tails[t], &r, nested);
                size_t len = strlen(body);
                char *nul = strchr(body, '~');
                if (nul != NULL) *nul = '\0';
                assert_parsed_alike(body, len, len);
                free(body);
            }
    /* One element at a time made wrong, at the start, the middle or the end. */
    static const char *const wrong[] = {"-", "1e", "1e+", "--1", "1.2.3", "+1", ".5", "1x", "0x10", "1e39", "-1e39",
                                        "nan", "true", "null", "\"0\"", "{}", "[", "]", "", "1 2", "123456789012345678901234567890123456789012345678901234567890123",
                                        "1234567890123456789012345678901234567890123456789012345678901234", "1,", "[1]", "[]"};
    for (size_t i = 0; i < sizeof wrong / sizeof *wrong; i++)
        for (int where = 0; where < 3; where++) {
            char *body = numbers_body(heads[0], tails[0], &r, 0);
            /* Replace one element's text: rebuild around the chosen index. */
            size_t k = 0, cap = strlen(body) + 256;
            char *out = malloc(cap);
            int target = where == 0 ? 0 : where == 1 ? T / 2 : T - 1;
            k += (size_t)snprintf(out + k, cap - k, "%s", heads[0]);
            for (int e = 0; e < T; e++)
                k += (size_t)snprintf(out + k, cap - k, "%s%s", e > 0 ? "," : "", e == target ? wrong[i] : "0.25");
            snprintf(out + k, cap - k, "%s", tails[0]);
            assert_parsed_alike(out, strlen(out), strlen(out));
            free(out);
            free(body);
        }
    /* Bodies that end inside a key, after a backslash (the scan once read
     * past such an end: found by fuzz_oip under ASan). */
    static const char *const cut[] = {"{\"abcd\\", "{\"inputs\":[{\"ab\\", "{\"6\\", "{\"inputs\":[{\"da", "{\""};
    for (size_t i = 0; i < sizeof cut / sizeof *cut; i++) {
        size_t len = strlen(cut[i]);
        char *body = malloc(len); /* exactly: ASan sees a read past it */
        memcpy(body, cut[i], len);
        assert_parsed_alike(body, len, len);
        free(body);
    }
    /* Random bytes of a good body changed, inserted or removed. */
    static const char alphabet[] = "0123456789+-.eE,[]{}\": \n\\ax";
    for (int round = 0; round < 3000; round++) {
        char *body = numbers_body(heads[round % 2 ? 0 : 1], tails[round % 2 ? 0 : 1], &r, round % 3 == 0);
        size_t len = strlen(body);
        for (int edits = 1 + (int)(dae_rng_next(&r) % 3); edits > 0; edits--) {
            size_t at = (size_t)(dae_rng_next(&r) % len);
            char c = alphabet[dae_rng_next(&r) % (sizeof alphabet - 1)];
            switch (dae_rng_next(&r) % 3) {
            case 0: body[at] = c; break;
            case 1: memmove(body + at, body + at + 1, len - at), len--; break;
            default: memmove(body + at + 1, body + at, len - at + 1), body[at] = c, len++; break;
            }
        }
        assert_parsed_alike(body, len, len);
        free(body);
    }
    cr_assert_gt(read_apart, 1000, "a third of the bodies' numbers were read apart (%d)", read_apart);
}

Test(oip, model_metadata_names_the_inputs_and_outputs) {
    srv_model m = {.name = "mnist", .version = "sha256:0123456789ab"};
    m.net.in_h = H, m.net.in_w = W;
    char *s = srv_oip_model_json(&m);
    cr_assert_not_null(strstr(s, "\"versions\":[\"sha256:0123456789ab\"]"), "%s", s);
    cr_assert_not_null(strstr(s, "{\"name\":\"input\",\"datatype\":\"FP32\",\"shape\":[-1,1,28,28]}"), "%s", s);
    cr_assert_not_null(strstr(s, "{\"name\":\"images\",\"datatype\":\"BYTES\",\"shape\":[-1]}"), "%s", s);
    cr_assert_not_null(strstr(s, "{\"name\":\"denoised\",\"datatype\":\"BYTES\",\"shape\":[-1]}"), "%s", s);
    free(s);
}
