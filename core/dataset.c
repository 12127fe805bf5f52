/* dataset.c - releasing the in-memory images, labels and data sets, and
 * the rules a data set is used by. */
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

int dae_name_valid(const char *name) {
    size_t n = strlen(name);
    if (n < 1 || n > DAE_NAME_MAX || name[0] == '.') return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-'))
            return 0;
    }
    return 1;
}

int dae_limit_count(int limit, int count) { return limit > 0 && limit < count ? limit : count; }

dae_status dae_model_check_images(const dae_model *m, const dae_idx_images *im, const char *model,
                                  const char *dataset, char *err, size_t errlen) {
    if (m->in_c == 1 && m->in_h == im->rows && m->in_w == im->cols) return DAE_OK;
    return dae_fail(err, errlen, DAE_ERR_INVALID, "%s%sthe model takes %dx%dx%d images, data set %s has %dx%d gray images",
                    model != NULL ? model : "", model != NULL ? ": " : "", m->in_c, m->in_h, m->in_w,
                    dataset != NULL ? dataset : "", im->rows, im->cols);
}
