/* test_full_data.c - checks on the full MNIST and Fashion-MNIST sets in
 * $DAE_DATA_DIR. Skipped, saying so, when the directory is not there. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "idx.h"
#include "model.h"
#include "modelfile.h"
#include "noise.h"
#include "train.h"

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

/* The committed models on the full test set, png protocol (the noise an
 * 8-bit upload carries): what models/README.md claims, and better than
 * the PyTorch reference trained as in the notebook. */
static void check_committed_model(const char *name, double reference_mse, double claimed_psnr) {
    const char *dir = data_dir_or_skip();
    if (dir == NULL) return;
    char err[DAE_ERR_LEN] = "", path[64];
    dae_dataset d;
    cr_assert_eq(dae_dataset_load(dir, name, &d, err, sizeof err), DAE_OK, "%s", err);
    snprintf(path, sizeof path, "models/%s.safetensors", name);
    dae_model m;
    cr_assert_eq(dae_model_load(&m, path, err, sizeof err), DAE_OK, "%s", err);
    dae_noise_spec png;
    cr_assert_eq(dae_noise_parse("gaussian:0.5:clip:quantize", &png, err, sizeof err), DAE_OK);
    dae_quality q = {0}, noisy = {0};
    dae_pool *pool = dae_pool_new(2);
    cr_assert_eq(dae_evaluate(&m, pool, d.test_images.pixels, d.test_images.count, &png, DAE_EVAL_SEED, &q, &noisy,
                              err, sizeof err), DAE_OK, "%s", err);
    double mse = dae_quality_mse(&q), psnr = dae_quality_psnr(&q);
    cr_assert_lt(mse, reference_mse, "%s: test MSE %.5f, the PyTorch reference's %.4f", name, mse, reference_mse);
    cr_assert_geq(psnr, claimed_psnr, "%s: test PSNR %.3f dB, models/README.md claims %.1f", name, psnr, claimed_psnr);
    cr_assert_gt(psnr, dae_quality_psnr(&noisy) + 9.0);
    dae_pool_free(pool);
    dae_model_free(&m);
    dae_dataset_free(&d);
}

Test(full_data, committed_mnist_model_beats_the_reference, .timeout = 120) {
    check_committed_model("mnist", 0.0119, 20.0);
}

Test(full_data, committed_fashion_model_beats_the_reference, .timeout = 120) {
    check_committed_model("fashion-mnist", 0.0258, 19.0);
}
