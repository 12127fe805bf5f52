/* fuzz_oip.c - libFuzzer target: the Open Inference Protocol's request
 * parser of dae-server (server/oip.c), fed what any client may send. The
 * input is the body; a NUL byte, when there is one, ends the JSON part
 * and what follows it is the binary data (as Inference-Header-Content-
 * Length would say). The body is copied into a buffer of its exact size, so
 * AddressSanitizer catches a read past it. A request that parses must
 * hold its tensor or images inside the body or its own buffers, and its answer
 * (zeros for a tensor, the images themselves as the PNGs) must fit the
 * size srv_oip_answer_bytes promised, which the server reserves from its
 * memory budget. A tensor's numbers read apart from cJSON's tree must
 * give what cJSON alone gives: the same outcome and message, and the
 * same floats to the bit. The parser is compiled in here (server/ is not
 * part of libdae). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../server/oip.c"

enum { SIDE = 4 }; /* a small model input keeps tensors cheap */

/* srv_oip_take_fn: grants up to 64 MB in all, in *ctx. */
static int take(void *ctx, long long bytes) {
    long long *left = ctx;
    if (bytes > *left) return -1;
    *left -= bytes;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nul = memchr(data, '\0', size);
    size_t json_len = nul != NULL ? (size_t)(nul - data) : size;
    if (nul != NULL) size--; /* the NUL only marks where the JSON ends */
    uint8_t *body = malloc(size ? size : 1);
    if (body == NULL) return 0;
    memcpy(body, data, json_len);
    memcpy(body + json_len, data + json_len + (nul != NULL), size - json_len);
    srv_oip_request req, oracle;
    char err[256] = "", oracle_err[256] = "";
    long long left = 64 << 20, oracle_left = 64 << 20;
    srv_oip_read_numbers_apart(0);
    dae_status oracle_st =
        srv_oip_parse(body, size, json_len, NULL, SIDE, SIDE, take, &oracle_left, &oracle, oracle_err, sizeof oracle_err);
    srv_oip_read_numbers_apart(1);
    dae_status st = srv_oip_parse(body, size, json_len, NULL, SIDE, SIDE, take, &left, &req, err, sizeof err);
    if (st != oracle_st || strcmp(err, oracle_err) != 0 || left != oracle_left) abort();
    if (st == DAE_OK && (req.kind != oracle.kind || req.n != oracle.n ||
                         (req.kind == SRV_OIP_TENSOR &&
                          memcmp(req.tensor, oracle.tensor, (size_t)req.n * SIDE * SIDE * sizeof(float)) != 0)))
        abort();
    srv_oip_request_free(&oracle);
    if (st == DAE_OK) {
        srv_model m = {.name = "m", .version = "sha256:000000000000"};
        m.net.in_h = m.net.in_w = SIDE;
        float *out = NULL;
        size_t png_total = 0;
        if (req.kind == SRV_OIP_TENSOR) {
            size_t bytes = (size_t)req.n * SIDE * SIDE * sizeof(float);
            int in_body = req.tensor >= body && req.tensor + bytes <= body + size;
            if (!in_body && req.tensor != (const uint8_t *)req.floats) abort();
            out = calloc((size_t)req.n * SIDE * SIDE, sizeof(float));
        } else {
            for (int i = 0; i < req.n; i++) {
                const uint8_t *p = req.image[i];
                int in_body = p >= body && p + req.image_len[i] <= body + size;
                int in_decoded = req.decoded != NULL && p >= req.decoded;
                if (!in_body && !in_decoded) abort();
                png_total += req.image_len[i];
            }
        }
        uint8_t *ans;
        size_t len, ans_json;
        if ((req.kind == SRV_OIP_IMAGES || out != NULL) &&
            srv_oip_answer(&req, &m, out, (uint8_t *const *)req.image, req.image_len, &ans, &len, &ans_json) ==
                DAE_OK) {
            if (len > (size_t)srv_oip_answer_bytes(&req, SIDE, SIDE, png_total) || ans_json > len) abort();
            free(ans);
        }
        free(out);
        srv_oip_request_free(&req);
    }
    free(body);
    return 0;
}
