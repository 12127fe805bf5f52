/* test_budget.c - unit tests of the memory budget (server/budget.c), of
 * the engine's memory arithmetic it and the training check rely on
 * (dae_workspace_bytes, dae_train_memory_bytes, dae_dataset_info_read),
 * of tiles cut straight from 8-bit images, and of the scheduler giving
 * every reservation back. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../server/budget.h"
#include "../server/clients.h"
#include "../server/config.h"
#include "../server/inference.h"
#include "../server/train_http.h"
#include "../server/registry.h"
#include "idx.h"
#include "image.h"
#include "model.h"
#include "modelfile.h"
#include "test_util.h"
#include "tile.h"
#include "train.h"

/* ------------------------------------------------------------ the budget */

Test(budget, take_give_limit_peak_and_refusals) {
    srv_budget b;
    srv_budget_init(&b, 1000, 1000);
    cr_assert_eq(srv_budget_take(&b, 600), 0);
    cr_assert_eq(srv_budget_take(&b, 400), 0, "exactly the limit fits");
    cr_assert_eq(srv_budget_take(&b, 1), -1, "one byte more does not");
    cr_assert_eq(srv_budget_used(&b), 1000, "a refusal takes nothing");
    cr_assert_eq(srv_budget_refusals(&b), 1);
    srv_budget_give(&b, 600);
    cr_assert_eq(srv_budget_used(&b), 400);
    cr_assert_eq(srv_budget_take(&b, 0), 0, "nothing always fits");
    cr_assert_eq(srv_budget_take(&b, 1001), -1, "more than the whole budget never fits");
    cr_assert_eq(srv_budget_take(&b, 1LL << 62), -1, "no overflow on absurd sizes");
    srv_budget_give(&b, 400);
    cr_assert_eq(srv_budget_used(&b), 0);
    cr_assert_eq(srv_budget_peak(&b), 1000);
    cr_assert_eq(srv_budget_refusals(&b), 3);
}

typedef struct {
    srv_budget *b;
    long long granted;
} taker;

/* Takes and gives 7 bytes 20000 times; counts the grants. */
static void *take_many(void *arg) {
    taker *t = arg;
    for (int i = 0; i < 20000; i++) {
        if (srv_budget_take(t->b, 7) == 0) {
            t->granted++;
            if (srv_budget_used(t->b) > t->b->limit) abort();
            srv_budget_give(t->b, 7);
        }
    }
    return NULL;
}

Test(budget, threads_never_go_over_the_limit) {
    srv_budget b;
    srv_budget_init(&b, 20, 20); /* room for two takers at a time, not three */
    pthread_t th[4];
    taker t[4];
    for (int i = 0; i < 4; i++) {
        t[i] = (taker){&b, 0};
        pthread_create(&th[i], NULL, take_many, &t[i]);
    }
    for (int i = 0; i < 4; i++) pthread_join(th[i], NULL);
    cr_assert_eq(srv_budget_used(&b), 0, "every grant was given back");
    cr_assert_leq(srv_budget_peak(&b), 14, "never three 7-byte grants at once within 20");
    long long granted = 0;
    for (int i = 0; i < 4; i++) granted += t[i].granted;
    cr_assert_eq(granted + (long long)srv_budget_refusals(&b), 80000);
}

Test(budget, a_share_holds_at_most_its_limit) {
    srv_budget b;
    srv_budget_init(&b, 1000, 750);
    srv_budget_share one = {0}, other = {0};
    cr_assert_eq(srv_budget_take_share(&b, &one, 700), 0);
    cr_assert_eq(srv_budget_take_share(&b, &one, 51), -1, "past the share, with the budget not full");
    cr_assert_eq(srv_budget_take_share(&b, &one, 50), 0, "exactly the share fits");
    cr_assert_eq(srv_budget_take_share(&b, &other, 251), -1, "the budget itself is still the limit");
    cr_assert_eq(atomic_load(&other.used), 0, "a refusal by the budget leaves the share as it was");
    cr_assert_eq(srv_budget_take_share(&b, &other, 250), 0, "what one share cannot hold is there for others");
    cr_assert_eq(srv_budget_take_share(&b, NULL, 1), -1, "no share: the budget alone");
    cr_assert_eq(srv_budget_refusals(&b), 3);
    srv_budget_give_share(&b, &one, 750);
    cr_assert_eq(atomic_load(&one.used), 0);
    cr_assert_eq(srv_budget_used(&b), 250);
    cr_assert_eq(srv_budget_take_share(&b, NULL, 750), 0, "no share: up to the whole budget");
    cr_assert_eq(srv_budget_most(&b, &one), 750);
    cr_assert_eq(srv_budget_most(&b, NULL), 1000);
    srv_budget_init(&b, 1000, 5000);
    cr_assert_eq(b.share_limit, 1000, "a share is never more than the budget");
}

static srv_client *client_of(srv_clients *t, const char *text) {
    struct sockaddr_storage ss = test_addr(text);
    return srv_clients_get(t, (const struct sockaddr *)&ss);
}

Test(budget, a_client_is_an_ipv4_address_or_an_ipv6_64) {
    srv_clients *t = srv_clients_new();
    cr_assert_not_null(t);
    srv_client *a = client_of(t, "192.0.2.7");
    cr_assert_not_null(a);
    cr_assert_eq(client_of(t, "192.0.2.7"), a, "the same address: the same client");
    cr_assert_eq(client_of(t, "::ffff:192.0.2.7"), a, "IPv4-mapped: its IPv4 address");
    srv_client *b = client_of(t, "192.0.2.8");
    cr_assert_neq(b, a);
    srv_client *c = client_of(t, "2001:db8:1:2::1");
    cr_assert_eq(client_of(t, "2001:db8:1:2:ffff:1:2:3"), c, "one /64: one client");
    srv_client *d = client_of(t, "2001:db8:1:3::1");
    cr_assert_neq(d, c, "another /64: another client");
    char name[SRV_CLIENT_NAME_MAX];
    srv_client_name(a, name, sizeof name);
    cr_assert_str_eq(name, "192.0.2.7");
    srv_client_name(c, name, sizeof name);
    cr_assert_str_eq(name, "2001:db8:1:2::/64");
    cr_assert_eq(srv_clients_count(t), 4);
    cr_assert_null(srv_clients_get(t, NULL));
    /* a: 3 references, b: 1, c: 2, d: 1. The record goes with the last. */
    cr_assert_eq(client_of(t, "192.0.2.8"), b);
    srv_clients_put(t, b);
    srv_clients_put(t, b);
    cr_assert_eq(srv_clients_count(t), 3);
    for (int i = 0; i < 3; i++) srv_clients_put(t, a);
    srv_clients_put(t, c);
    srv_clients_put(t, c);
    srv_clients_put(t, d);
    cr_assert_eq(srv_clients_count(t), 0);
    srv_clients_put(t, NULL);
    srv_clients_free(t);
}

Test(budget, image_estimates) {
    const long long P = 4096LL * 4096, MiB = 1 << 20;
    /* Channels unknown: the worst case, RGBA; denoising holds the image
     * and three float planes (16 bytes a pixel), as decoding may. */
    long long worst = srv_budget_image_bytes(SRV_BUDGET_DENOISE, 4096, 4096, 0);
    cr_assert_eq(worst, srv_budget_image_bytes(SRV_BUDGET_DENOISE, 4096, 4096, 4));
    cr_assert_eq(worst, 16 * P + MiB);
    cr_assert_eq(srv_budget_image_bytes(SRV_BUDGET_DENOISE, 4096, 4096, 3), 15 * P + MiB, "RGB: 3 + 12 bytes");
    cr_assert_eq(srv_budget_image_bytes(SRV_BUDGET_DENOISE, 4096, 4096, 1), 5 * P + MiB, "gray: 1 + 4 bytes");
    /* The default budget holds one worst-case 16-megapixel image at a
     * time with a full body (deploy/k8s relies on this). */
    cr_assert_leq(worst + (10 << 20), 512 * MiB);
    cr_assert_leq(worst + (10 << 20), 512 * MiB / 4 * 3, "so does one client's share of it");
    /* Small images cost about the fixed part; estimates grow with size. */
    long long tiny = srv_budget_image_bytes(SRV_BUDGET_DENOISE, 28, 28, 0);
    cr_assert_gt(tiny, MiB);
    cr_assert_lt(tiny, MiB + 64 * 1024);
    cr_assert_lt(srv_budget_image_bytes(SRV_BUDGET_NOISE, 1000, 1000, 1),
                 srv_budget_image_bytes(SRV_BUDGET_NOISE, 1000, 1001, 1));
    /* The PNG being written (twice its rows) bounds small-channel noise jobs. */
    cr_assert_geq(srv_budget_image_bytes(SRV_BUDGET_NOISE, 100, 100, 1), 100 * 100 + 2 * 100 * 101);
    cr_assert_eq(srv_budget_image_bytes(SRV_BUDGET_NOISE, 0, 10, 1), -1);
    cr_assert_eq(srv_budget_image_bytes(SRV_BUDGET_NOISE, 10, 10, 5), -1);
}

/* ------------------------------------------------------------ tiles from 8-bit pixels */

Test(budget, tiles_cut_from_8bit_pixels_match_float_planes) {
    char err[DAE_ERR_LEN];
    dae_model m;
    cr_assert_eq(dae_model_init(&m, dae_model_default_spec(), err, sizeof err), DAE_OK);
    static const int sizes[][3] = {{28, 28, 1}, {1, 1, 4}, {57, 31, 3}, {14, 80, 2}, {100, 29, 4}};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        int w = sizes[s][0], h = sizes[s][1], ch = sizes[s][2];
        dae_image img;
        cr_assert_eq(dae_image_alloc(&img, w, h, ch, err, sizeof err), DAE_OK);
        for (size_t i = 0; i < (size_t)w * h * ch; i++) img.pixels[i] = (uint8_t)(i * 37 + s);
        dae_tile_plan p;
        cr_assert_eq(dae_tile_plan_init(&p, &m, w, h, err, sizeof err), DAE_OK);
        size_t tile = (size_t)p.tile_w * p.tile_h;
        float *plane = malloc(sizeof(float) * (size_t)w * h);
        float *a = malloc(sizeof(float) * tile * (size_t)p.count), *b = malloc(sizeof(float) * tile * (size_t)p.count);
        for (int c = 0; c < ch; c++) {
            dae_image_to_plane(&img, c, plane);
            dae_tile_extract(&p, plane, 0, p.count, a);
            dae_tile_extract_u8(&p, img.pixels, ch, c, 0, p.count, b);
            cr_assert(memcmp(a, b, sizeof(float) * tile * (size_t)p.count) == 0, "%dx%dx%d channel %d", w, h, ch,
                      c);
        }
        free(plane);
        free(a);
        free(b);
        dae_tile_plan_free(&p);
        dae_image_free(&img);
    }
    dae_model_free(&m);
}

/* ------------------------------------------------------------ training estimates */

Test(budget, training_memory_grows_with_the_batch) {
    char err[DAE_ERR_LEN];
    dae_model m;
    cr_assert_eq(dae_model_init(&m, dae_model_default_spec(), err, sizeof err), DAE_OK);
    cr_assert_gt(dae_workspace_bytes(&m, 64, 1), dae_workspace_bytes(&m, 64, 0), "training keeps activations");
    cr_assert_eq(dae_workspace_bytes(&m, 0, 1), 0);
    size_t per64 = dae_workspace_bytes(&m, 128, 1) - dae_workspace_bytes(&m, 64, 1);
    cr_assert_gt(per64, 64 * 4 * 784, "each image keeps more than its input");
    dae_train_config cfg;
    dae_train_config_default(&cfg);
    cfg.threads = 1;
    cfg.batch_size = 64;
    size_t small = dae_train_memory_bytes(&m, &cfg, 60000);
    cfg.batch_size = 65536;
    size_t huge = dae_train_memory_bytes(&m, &cfg, 60000);
    cfg.batch_size = 60000;
    cr_assert_eq(huge, dae_train_memory_bytes(&m, &cfg, 60000), "the batch is clamped to the data set");
    cr_assert_gt(huge, (size_t)1 << 30, "a 60000-image batch needs gigabytes (%zu)", huge);
    cr_assert_lt(small, (size_t)32 << 20, "a 64-image batch needs a few MiB (%zu)", small);
    cfg.batch_size = 64;
    cfg.threads = 2;
    cr_assert_gt(dae_train_memory_bytes(&m, &cfg, 60000), small, "a second thread has its own buffers");
    cr_assert_eq(dae_train_memory_bytes(&m, &cfg, 10), dae_train_memory_bytes(&m, &(dae_train_config){
        .batch_size = 10, .threads = 2}, 10), "10 images: a batch of 10 either way");
    dae_model_free(&m);
}

/* A model's weights block is counted as allocated: the default network's
 * 841 KB of parameters take a whole 2 MB page, and training counts that
 * page besides Adam's moments and the saved copy. */
Test(budget, training_memory_counts_the_weights_block_as_allocated) {
    char err[DAE_ERR_LEN];
    dae_model m;
    cr_assert_eq(dae_model_init(&m, dae_model_default_spec(), err, sizeof err), DAE_OK);
    size_t weights = dae_model_weights_bytes(&m), floats = sizeof(float) * (m.n_params + m.n_prepared);
    cr_assert_geq(weights, floats, "the block holds the parameters and prepared weights");
#ifdef __linux__
    cr_assert_eq(weights % (2 << 20), 0, "whole 2 MB pages (%zu bytes)", weights);
#endif
    dae_train_config cfg;
    dae_train_config_default(&cfg);
    cfg.threads = 1;
    size_t per_thread = dae_workspace_bytes(&m, cfg.batch_size, 1) + sizeof(float) * m.n_params +
                        2 * sizeof(float) * dae_model_image_size(&m) * cfg.batch_size;
    cr_assert_geq(dae_train_memory_bytes(&m, &cfg, 60000),
                  per_thread + weights + 3 * sizeof(float) * m.n_params + sizeof(int) * 60000);
    dae_model_free(&m);
}

Test(budget, dataset_info_from_headers) {
    char err[DAE_ERR_LEN];
    dae_dataset_info info;
    cr_assert_eq(dae_dataset_info_read("tests/fixtures", "mnist-mini", &info, err, sizeof err), DAE_OK, "%s", err);
    dae_dataset d;
    cr_assert_eq(dae_dataset_load("tests/fixtures", "mnist-mini", &d, err, sizeof err), DAE_OK, "%s", err);
    cr_assert_eq(info.train_count, d.train_images.count);
    cr_assert_eq(info.test_count, d.test_images.count);
    cr_assert_eq(info.rows, 28);
    cr_assert_eq(info.bytes, (size_t)(info.train_count + info.test_count) * (28 * 28 + 1));
    dae_dataset_free(&d);
    cr_assert_eq(dae_dataset_info_read("tests/fixtures", "absent", &info, err, sizeof err), DAE_ERR_IO);
    cr_assert_eq(dae_dataset_info_read("tests/fixtures", "..", &info, err, sizeof err), DAE_ERR_INVALID);
}

Test(budget, training_over_budget_is_422_naming_both_numbers) {
    srv_train_answer a;
    const char *body = "{\"dataset\":\"mnist-mini\",\"batch_size\":64}";
    cr_assert_eq(srv_train_validate_memory(body, strlen(body), "tests/fixtures", NULL, 256LL << 20, 1, &a), 0, "%s",
                 a.message);
    free(a.json);
    cr_assert_eq(srv_train_validate_memory(body, strlen(body), "tests/fixtures", NULL, 1 << 20, 1, &a), -1);
    cr_assert_eq(a.status, 422);
    cr_assert_str_eq(a.code, "train_memory_budget");
    cr_assert_not_null(strstr(a.message, "1048576"), "%s", a.message);
    cr_assert_not_null(strstr(a.message, "estimated"), "%s", a.message);
    free(a.json);
    cr_assert_eq(srv_train_validate_memory(body, strlen(body), "tests/fixtures", NULL, 0, 1, &a), 0, "0: no check");
    free(a.json);
}

/* ------------------------------------------------------------ the scheduler gives it all back */

/* A request's completion callback: counts it on the test_waiter in user. */
static void on_done(srv_infer_request *j) { test_waiter_done(j->user); }

Test(budget, requests_keep_only_their_answer_reserved, .timeout = TEST_TIME_LIMIT(60)) {
    char *dir = test_tmpdir("budget");
    char err[DAE_ERR_LEN] = "", path[600];
    dae_model m;
    cr_assert_eq(dae_model_init(&m, dae_model_default_spec(), err, sizeof err), DAE_OK);
    dae_model_init_params(&m, 1);
    snprintf(path, sizeof path, "%s/a.safetensors", dir);
    cr_assert_eq(dae_model_save(&m, path, NULL, NULL, 0, err, sizeof err), DAE_OK, "%s", err);
    dae_model_free(&m);
    srv_config cfg;
    char *argv[] = {"dae-server", NULL};
    cr_assert_eq(srv_config_parse(&cfg, 1, argv), 0);
    cfg.models_dir = dir;
    cfg.model = "a";
    cfg.workers = 2;
    cfg.memory_budget = 64 << 20;
    srv_registry *r = srv_registry_open(&cfg, err, sizeof err);
    cr_assert_not_null(r, "%s", err);
    static srv_metrics metrics;
    srv_metrics_init(&metrics);
    srv_infer *q = srv_infer_start(&cfg, &metrics, err, sizeof err);
    cr_assert_not_null(q, "%s", err);
    srv_budget *b = srv_infer_budget(q);
    cr_assert_eq(b->limit, 64 << 20);
    enum { N = 6 };
    srv_infer_request reqs[N];
    uint8_t *pngs[N];
    size_t lens[N];
    test_waiter w = TEST_WAITER_INIT;
    long long total = 0;
    for (int i = 0; i < N; i++) {
        int side = 20 + 30 * i, ch = 1 + i % 4;
        dae_image img;
        cr_assert_eq(dae_image_alloc(&img, side, side + 3, ch, err, sizeof err), DAE_OK);
        for (size_t k = 0; k < (size_t)side * (side + 3) * ch; k++) img.pixels[k] = (uint8_t)(k * 13 + i);
        cr_assert_eq(dae_image_encode_png(&img, 1, &pngs[i], &lens[i], err, sizeof err), DAE_OK);
        dae_image_free(&img);
        memset(&reqs[i], 0, sizeof reqs[i]);
        srv_infer_request *j = &reqs[i];
        j->kind = i == N - 1 ? SRV_INFER_NOISE : SRV_INFER_DENOISE;
        j->input = pngs[i];
        j->input_len = lens[i];
        j->max_pixels = 1 << 20;
        j->pixels = (long long)side * (side + 3);
        j->model = srv_registry_acquire(r, NULL);
        j->noise = (dae_noise_spec){.kind = DAE_NOISE_GAUSSIAN, .level = 0.3f, .clip = 1, .quantize = 1};
        j->png_level = 1;
        j->done = on_done;
        j->user = &w;
        j->mem_reserved = srv_budget_image_bytes(j->kind == SRV_INFER_NOISE ? SRV_BUDGET_NOISE : SRV_BUDGET_DENOISE,
                                                 side, side + 3, 0);
        cr_assert_eq(srv_budget_take(b, j->mem_reserved), 0);
        total += j->mem_reserved;
        cr_assert_eq(srv_infer_reserve(q, NULL, 1, j->pixels, NULL, 0), DAE_OK);
        srv_infer_enqueue(q, j);
    }
    cr_assert_leq(srv_budget_peak(b), total, "early requests may have given some back already");
    test_waiter_wait(&w, N);
    long long kept = 0;
    for (int i = 0; i < N; i++) {
        cr_assert_eq(reqs[i].status, DAE_OK, "request %d: %s", i, reqs[i].message);
        cr_assert_eq(reqs[i].mem_reserved, (long long)reqs[i].png_len, "request %d keeps its answer's bytes", i);
        kept += reqs[i].mem_reserved;
    }
    cr_assert_eq(srv_budget_used(b), kept, "the rest went back as each request ended");
    for (int i = 0; i < N; i++) {
        srv_budget_give(b, reqs[i].mem_reserved); /* what the HTTP layer does once the answer is sent */
        free(reqs[i].png);
        free(pngs[i]);
        srv_model_release(reqs[i].model);
    }
    cr_assert_eq(srv_budget_used(b), 0);
    srv_infer_stop(q);
    srv_registry_free(r);
    test_rm_tree(dir);
}
