/* fuzz_spec.c - libFuzzer target: arbitrary text as an architecture spec
 * and as a noise spec. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "noise.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    if (text == NULL) return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    char err[DAE_ERR_LEN];
    dae_model m;
    if (dae_model_init(&m, text, err, sizeof err) == DAE_OK) dae_model_free(&m);
    dae_noise_spec spec;
    dae_noise_parse(text, &spec, err, sizeof err);
    free(text);
    return 0;
}
