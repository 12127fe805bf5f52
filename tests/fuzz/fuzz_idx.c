/* fuzz_idx.c - libFuzzer target: arbitrary bytes through the IDX image and
 * label parsers, and, as a file, through the loaders, which inflate a
 * gzip file (the corpus has gzip seeds). A gzip file claims its own size
 * in its last bytes: -malloc_limit_mb turns believing too much of that
 * into a finding. */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

#include "idx.h"

/* data as a file, at a path the loaders can open: one memory file,
 * rewritten for each input. */
static const char *as_file(const uint8_t *data, size_t size) {
    static int fd = -1;
    static char path[64];
    if (fd < 0) {
        fd = memfd_create("fuzz_idx", MFD_CLOEXEC);
        if (fd < 0) abort();
        snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    }
    if (ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != (ssize_t)size) abort();
    return path;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    dae_idx_images im = {0};
    dae_idx_labels lb = {0};
    char err[DAE_ERR_LEN];
    if (dae_idx_parse_images(data, size, &im, err, sizeof err) == DAE_OK) dae_idx_images_free(&im);
    if (dae_idx_parse_labels(data, size, &lb, err, sizeof err) == DAE_OK) dae_idx_labels_free(&lb);
    const char *path = as_file(data, size);
    if (dae_idx_load_images(path, &im, err, sizeof err) == DAE_OK) dae_idx_images_free(&im);
    if (dae_idx_load_labels(path, &lb, err, sizeof err) == DAE_OK) dae_idx_labels_free(&lb);
    return 0;
}
