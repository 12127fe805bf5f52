/* fuzz_safetensors.c - libFuzzer target: arbitrary bytes through the
 * safetensors parser and, when they parse, through the model builder. */
#include <stddef.h>
#include <stdint.h>

#include "model.h"
#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    dae_st_file f = {0};
    char err[DAE_ERR_LEN];
    if (dae_st_parse(data, size, &f, err, sizeof err) == DAE_OK) {
        dae_model m;
        if (dae_model_from_safetensors(&m, &f, err, sizeof err) == DAE_OK) dae_model_free(&m);
        dae_st_free(&f);
    }
    return 0;
}
