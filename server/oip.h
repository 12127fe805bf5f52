/* oip.h - the payloads of the Open Inference Protocol (the "v2" REST API
 * of KServe, Triton, Seldon MLServer): the inference request and answer,
 * with the binary tensor data extension, and the metadata documents. No
 * HTTP here: http.c routes /v2 to these and to the inference queue.
 *
 * A dae model has two inputs, of which a request gives one:
 *   "input"  FP32 [N, 1, H, W]: N model inputs (H x W the model's input
 *            size, values in [0, 1]) run as they are; the answer is the
 *            output "output", FP32 of the same shape: the network's
 *            outputs, as `dae forward` gives them;
 *   "images" BYTES [N]: N encoded images (any format and size POST
 *            /denoise takes); the answer is the output "denoised", BYTES
 *            [N]: N PNGs, the bytes N POST /denoise calls answer.
 * In JSON, a BYTES element is the base64 of the file (the protocol's
 * JSON strings cannot carry binary); with the binary extension it is a
 * 4-byte little-endian length and the bytes.
 *
 * Binary extension: a request whose JSON is followed by binary data says
 * how long the JSON is in the header Inference-Header-Content-Length; an
 * input with "parameters": {"binary_data_size": K} takes its data from
 * the K bytes after the JSON. "binary_data_output": true (request
 * parameter) or "binary_data": true (an output's parameter) asks for the
 * output the same way: the answer is then the JSON, whose output carries
 * "binary_data_size", followed by the data. */
#ifndef SRV_OIP_H
#define SRV_OIP_H

#include <stddef.h>
#include <stdint.h>

#include "dae_status.h"
#include "registry.h"

#define SRV_OIP_INPUT_TENSOR "input"
#define SRV_OIP_INPUT_IMAGES "images"
#define SRV_OIP_OUTPUT_TENSOR "output"
#define SRV_OIP_OUTPUT_IMAGES "denoised"

/* The extensions GET /v2 names. */
#define SRV_OIP_EXTENSIONS "[\"binary_tensor_data\",\"model_repository\"]"

/* The request header of the binary extension. */
#define SRV_OIP_HEADER_LENGTH "Inference-Header-Content-Length"

typedef enum { SRV_OIP_TENSOR, SRV_OIP_IMAGES } srv_oip_kind;

/* A parsed inference request. */
typedef struct {
    char *id;              /* the request's "id" (malloc'd), or NULL */
    srv_oip_kind kind;
    int n;                 /* the batch: N inputs or images */
    const uint8_t *tensor; /* TENSOR: n x h x w little-endian floats, at any alignment: in the
                              body (binary data, which must outlive req) or in floats */
    float *floats;         /* TENSOR in JSON: the parsed data (malloc'd) */
    const uint8_t **image; /* IMAGES: n files (into the body or into decoded) */
    size_t *image_len;
    uint8_t *decoded;      /* IMAGES in JSON: the base64-decoded files, back to back (malloc'd) */
    int binary_output;     /* answer the output as binary data */
} srv_oip_request;

/* What one pass over a request's JSON finds for its parse. */
typedef struct {
    /* The most bytes srv_oip_parse holds while it runs: cJSON's tree (a
     * node per value the text can hold, and the strings' copies), and
     * when the tensor's numbers are read apart (srv_oip_read_numbers_apart)
     * a copy of the text and a float per number instead of their nodes.
     * The HTTP layer reserves it from the memory budget before parsing
     * and gives it back after. */
    long long bytes;
    /* The tensor's numbers read apart: their array [data_start, data_end)
     * of the text, and how many; data_end 0 when they are not. */
    size_t data_start, data_end, data_numbers;
} srv_oip_scan;

/* Scans json_len bytes of a request's JSON (any bytes: cJSON judges them). */
void srv_oip_scan_json(const uint8_t *json, size_t json_len, srv_oip_scan *scan);

/* Asked by srv_oip_parse before each allocation whose size the client
 * chose (the tensor's floats, the images' lists, decoded images): returns
 * 0 when the bytes are granted (the caller then holds them until the
 * request ends, whatever the parse's outcome), -1 when they are not. */
typedef int (*srv_oip_take_fn)(void *ctx, long long bytes);

/* The length of the JSON part given the header value (NULL: none, the
 * whole body). Returns DAE_OK, or DAE_ERR_INVALID with a sentence. */
dae_status srv_oip_json_length(const char *header, size_t len, size_t *json_len, char *err, size_t errlen);

/* Parses an inference request for a model of h x w inputs into req,
 * given its JSON's scan (NULL: it scans the JSON itself), asking
 * take(ctx, bytes) before allocating what the client's sizes ask
 * for. Returns DAE_OK, DAE_ERR_INVALID (the request is wrong: err says
 * what, naming the field), DAE_ERR_BUSY (take refused) or DAE_ERR_NOMEM;
 * req is then zeroed. The tensor and image pointers of a binary request
 * point into body, which must outlive req. */
dae_status srv_oip_parse(const uint8_t *body, size_t len, size_t json_len, const srv_oip_scan *scan, int h, int w,
                         srv_oip_take_fn take, void *ctx, srv_oip_request *req, char *err, size_t errlen);

/* A JSON tensor's numbers are read straight into floats, apart from
 * cJSON's tree (oip.c: about 4 bytes a number instead of a 96-byte
 * node), with the same results and the same refusals. 0 leaves every
 * request to cJSON: the tests' oracle. */
void srv_oip_read_numbers_apart(int on);

/* Frees what req owns and zeroes it; NULL and a zeroed req are fine. */
void srv_oip_request_free(srv_oip_request *req);

/* The most bytes the answer to req can take: outputs of png_total bytes
 * of PNGs in all (images) or of req->n model outputs of h x w (tensor). */
long long srv_oip_answer_bytes(const srv_oip_request *req, int h, int w, size_t png_total);

/* Writes to out (15 bytes at most, no NUL) the text snprintf's "%.9g"
 * makes of (double)f, which reads back as f; returns its length. Made
 * without printf where it has no exponent (glibc's took 123 ns a float,
 * most of a JSON answer's time). */
size_t srv_oip_float_text(float f, char *out);

/* The answer to req from model m: *body (malloc'd) of *len bytes, of
 * which the first *json_len are JSON (*json_len == *len: no binary
 * part). out holds the tensor's outputs (TENSOR), png and png_len the
 * n PNGs (IMAGES). A tensor answered as binary data may be made before
 * its outputs exist: with out NULL, the outputs' room at *body +
 * *json_len is left for the workers to write into (saving a copy of
 * them). Returns DAE_OK or DAE_ERR_NOMEM. */
dae_status srv_oip_answer(const srv_oip_request *req, const srv_model *m, const float *out,
                          uint8_t *const *png, const size_t *png_len, uint8_t **body, size_t *len, size_t *json_len);

/* GET /v2/models/{name}: the model metadata document (malloc'd), or NULL
 * when out of memory. */
char *srv_oip_model_json(const srv_model *m);

#endif
