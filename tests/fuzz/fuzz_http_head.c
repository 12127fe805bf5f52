/* fuzz_http_head.c - libFuzzer target: the request-head parser of the
 * connection gate (server/httphead.c), which reads bytes from any client
 * before libmicrohttpd does. The input is copied into a buffer of its
 * exact size, so AddressSanitizer catches a read one byte past it. Checks
 * the parser's promises: a complete head lies inside the input, an error
 * carries a 4xx/5xx status, a code and a printable ASCII message, and
 * parsing a prefix of a complete head never reports a different head. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../../server/httphead.c"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *buf = malloc(size ? size : 1);
    if (buf == NULL) return 0;
    memcpy(buf, data, size);
    srv_head hi;
    srv_head_result r = srv_head_parse(buf, size, &hi);
    if (r == SRV_HEAD_OK) {
        if (hi.len == 0 || hi.len > size || hi.len > SRV_HEAD_MAX) abort();
        if (hi.chunked && hi.body >= 0) abort();
        srv_head again;
        if (srv_head_parse(buf, hi.len, &again) != SRV_HEAD_OK || again.len != hi.len) abort();
    } else if (r == SRV_HEAD_ERROR) {
        if (hi.status < 400 || hi.status > 599 || hi.code == NULL) abort();
        for (const char *m = hi.message; *m != '\0'; m++)
            if ((unsigned char)*m < 0x20 || (unsigned char)*m > 0x7e) abort();
    } else if (size > SRV_HEAD_MAX) {
        abort(); /* past the limit it must decide */
    }
    free(buf);
    return 0;
}
