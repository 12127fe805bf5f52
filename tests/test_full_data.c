/* test_full_data.c - checks on the full MNIST and Fashion-MNIST sets in
 * $DAE_DATA_DIR. Skipped, saying so, when the directory is not there. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "idx.h"

/* The data directory, or NULL after skipping the test. */
static const char *data_dir_or_skip(void) {
    const char *dir = getenv("DAE_DATA_DIR");
    struct stat st;
    if (dir == NULL || *dir == '\0' || stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        cr_skip_test("DAE_DATA_DIR is not set to a data directory: full-data checks skipped");
        return NULL;
    }
    return dir;
}

static void check_full_set(const char *name) {
    const char *dir = data_dir_or_skip();
    if (dir == NULL) return;
    dae_dataset d;
    char err[DAE_ERR_LEN] = "";
    cr_assert_eq(dae_dataset_load(dir, name, &d, err, sizeof err), DAE_OK, "%s", err);
    cr_assert_eq(d.train_images.count, 60000);
    cr_assert_eq(d.test_images.count, 10000);
    cr_assert_eq(d.train_images.rows, 28);
    cr_assert_eq(d.train_images.cols, 28);
    long per_class[10] = {0};
    for (int i = 0; i < d.train_labels.count; i++) {
        cr_assert_lt(d.train_labels.labels[i], 10);
        per_class[d.train_labels.labels[i]]++;
    }
    for (int k = 0; k < 10; k++) cr_assert_gt(per_class[k], 5000, "%s: class %d has %ld images", name, k, per_class[k]);
    dae_dataset_free(&d);
}

Test(full_data, mnist_loads_with_the_standard_counts) { check_full_set("mnist"); }
Test(full_data, fashion_mnist_loads_with_the_standard_counts) { check_full_set("fashion-mnist"); }
