/* dataset.c - releasing the in-memory images, labels and data sets. */
#include "dataset.h"

#include <stdlib.h>
#include <string.h>

void dae_idx_images_free(dae_idx_images *im) {
    if (im == NULL) return;
    free(im->pixels);
    memset(im, 0, sizeof *im);
}

void dae_idx_labels_free(dae_idx_labels *l) {
    if (l == NULL) return;
    free(l->labels);
    memset(l, 0, sizeof *l);
}

void dae_dataset_free(dae_dataset *d) {
    if (d == NULL) return;
    dae_idx_images_free(&d->train_images);
    dae_idx_images_free(&d->test_images);
    dae_idx_labels_free(&d->train_labels);
    dae_idx_labels_free(&d->test_labels);
}
