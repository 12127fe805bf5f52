/* fuzz_idx.c - libFuzzer target: arbitrary bytes through the IDX image and
 * label parsers. */
#include <stddef.h>
#include <stdint.h>

#include "idx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    dae_idx_images im = {0};
    dae_idx_labels lb = {0};
    char err[DAE_ERR_LEN];
    if (dae_idx_parse_images(data, size, &im, err, sizeof err) == DAE_OK) dae_idx_images_free(&im);
    if (dae_idx_parse_labels(data, size, &lb, err, sizeof err) == DAE_OK) dae_idx_labels_free(&lb);
    return 0;
}
