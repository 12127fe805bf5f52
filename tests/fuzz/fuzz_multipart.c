/* fuzz_multipart.c - libFuzzer target: the multipart/form-data parser of
 * dae-server. The input's first line is the Content-Type header value and
 * the rest the body (no newline: the whole input is the body, with a
 * fixed boundary). The body is copied into a buffer of its exact size, so
 * AddressSanitizer catches a read one byte past it; a field found must
 * lie inside the body. The parser is compiled in here (server/ is not
 * part of libdae). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../server/multipart.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const uint8_t *nl = memchr(data, '\n', size < 256 ? size : 256);
    char ctype[257] = "multipart/form-data; boundary=XyZ";
    const uint8_t *body_in = data;
    size_t len = size;
    if (nl != NULL) {
        size_t n = (size_t)(nl - data);
        memcpy(ctype, data, n);
        ctype[n] = '\0';
        body_in = nl + 1;
        len = size - n - 1;
    }
    uint8_t *body = malloc(len ? len : 1);
    if (body == NULL) return 0;
    memcpy(body, body_in, len);
    const uint8_t *field;
    size_t field_len;
    char err[256];
    srv_multipart_is_form(ctype);
    if (srv_multipart_find(ctype, body, len, "image", &field, &field_len, err, sizeof err) == DAE_OK)
        if (field < body || field + field_len > body + len) abort();
    free(body);
    return 0;
}
