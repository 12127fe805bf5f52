/* test_jobs.c - unit tests of what dae-server trusts on disk: job records
 * are checked like requests before they are loaded (ids, states, the
 * request, the model name, every number and string), and a trained model
 * is installed without ever writing over another file
 * (srv_registry_install). tests/hostile/test_jobs.py covers the same
 * over HTTP against the real daemon. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../server/config.h"
#include "../server/registry.h"
#include "../server/train_http.h"
#include "../server/train_records.h"
#include "model.h"
#include "modelfile.h"

/* ------------------------------------------------------------ records */

/* A canonical request, as srv_train_validate writes it, with the model name
 * "m" and the extra fields extra (each starting with a comma, or ""). */
static void request(char *out, size_t len, const char *extra) {
    snprintf(out, len,
             "{\"dataset\":\"mnist-mini\",\"epochs\":2,\"batch_size\":16,\"learning_rate\":0.001,"
             "\"weight_decay\":1e-05,\"noise\":\"gaussian:0.5\",\"seed\":0,\"train_limit\":0,\"eval_limit\":10,"
             "\"model_name\":\"m\",\"activate\":false%s}",
             extra);
}

/* Checks the record {"id":id,"state":state,"request":req<fields>} as the
 * state file fname; returns what srv_train_record_check returns. */
static int check(const char *fname, const char *id, const char *state, const char *req, const char *fields,
                 char *why, size_t whylen) {
    char text[4096];
    snprintf(text, sizeof text, "{\"id\":\"%s\",\"state\":\"%s\",\"request\":%s%s}", id, state, req, fields);
    why[0] = '\0';
    return srv_train_record_check(fname, text, strlen(text), "tests/fixtures", why,
                                  whylen);
}

Test(job_records, a_record_the_server_writes_loads) {
    char req[1024], why[1024];
    request(req, sizeof req, "");
    static const char *const states[] = {"queued", "running", "succeeded", "failed", "cancelled"};
    for (int i = 0; i < 5; i++)
        cr_assert_eq(check("12.json", "12", states[i], req, "", why, sizeof why), 0, "%s: %s", states[i], why);
    cr_assert_eq(check("3.json", "3", "succeeded", req,
                       ",\"progress\":1,\"epoch\":2,\"epochs\":2,\"step\":4,\"model\":\"m\","
                       "\"model_version\":\"sha256:0123456789ab\",\"activated\":true,"
                       "\"created\":\"2026-01-01T00:00:00.000Z\",\"error\":null,"
                       "\"history\":[{\"epoch\":1,\"loss\":0.1,\"seconds\":0.5,\"test_mse\":0.02,"
                       "\"test_psnr\":17.5,\"test_ssim\":0.6}]",
                       why, sizeof why),
                 0, "%s", why);
    /* Largest id there is. */
    cr_assert_eq(check("999999999999.json", "999999999999", "queued", req, "", why, sizeof why), 0, "%s", why);
    /* A record whose data set is gone still loads (the server fails it if queued). */
    char gone[1024];
    request(gone, sizeof gone, "");
    memcpy(strstr(gone, "mnist-mini"), "mnist-gone", 10);
    cr_assert_eq(check("4.json", "4", "succeeded", gone, "", why, sizeof why), 0, "%s", why);
}

Test(job_records, ids_must_be_the_file_name_and_in_range) {
    char req[1024], why[1024];
    request(req, sizeof req, "");
    static const char *const bad[][2] = {
        {"18446744073709551615.json", "18446744073709551615"}, /* 2^64-1: would wrap the counter */
        {"1000000000000.json", "1000000000000"},
        {"0.json", "0"},
        {"007.json", "007"},
        {"7.json", "1"},   /* not its file's id: would overwrite 1.json */
        {"x.json", "x"},
        {"-1.json", "-1"},
        {"1.json.json", "1.json"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_eq(check(bad[i][0], bad[i][1], "queued", req, "", why, sizeof why), -1, "%s", bad[i][0]);
        cr_assert(why[0] != '\0');
    }
}

Test(job_records, states_requests_and_model_names_are_checked) {
    char req[1024], why[1024];
    request(req, sizeof req, "");
    cr_assert_eq(check("1.json", "1", "exploded", req, "", why, sizeof why), -1);
    cr_assert_not_null(strstr(why, "state"), "%s", why);
    cr_assert_eq(check("1.json", "1", "QUEUED", req, "", why, sizeof why), -1);
    /* The finding: a model name that leaves the models directory. */
    cr_assert_eq(check("1.json", "1", "queued", req, ",\"model\":\"../../evil\"", why, sizeof why), -1);
    cr_assert_not_null(strstr(why, "model"), "%s", why);
    char evil[1024];
    request(evil, sizeof evil, "");
    memcpy(strstr(evil, "\"m\""), "\"/\"", 3);
    cr_assert_eq(check("1.json", "1", "queued", evil, "", why, sizeof why), -1);
    cr_assert_not_null(strstr(why, "model_name"), "%s", why);
    /* Every field of the request goes through srv_train_validate. */
    static const char *const bad_req[] = {
        "{\"dataset\":\"mnist-mini\",\"epochs\":0}",
        "{\"dataset\":\"../etc\"}",
        "{\"dataset\":\"mnist-mini\",\"batch_size\":1e9}",
        "{\"dataset\":\"mnist-mini\",\"cheat\":1}",
        "{\"dataset\":\"mnist-mini\",\"noise\":\"blur:1\"}",
        "{\"dataset\":\"mnist-mini\",\"activate\":\"yes\"}",
        "[]",
        "\"x\"",
    };
    for (size_t i = 0; i < sizeof bad_req / sizeof bad_req[0]; i++) {
        cr_assert_eq(check("1.json", "1", "queued", bad_req[i], "", why, sizeof why), -1, "%s", bad_req[i]);
        cr_assert(why[0] != '\0');
    }
    /* Not JSON, or not an object. */
    cr_assert_eq(srv_train_record_check("1.json", "{garbage", 8, "tests/fixtures", why,
                                        sizeof why), -1);
    cr_assert_eq(srv_train_record_check("1.json", "[1]", 3, "tests/fixtures", why,
                                        sizeof why), -1);
    cr_assert_eq(srv_train_record_check("1.json", "", 0, "tests/fixtures", why,
                                        sizeof why), -1);
}

Test(job_records, numbers_and_strings_are_checked) {
    char req[1024], why[1024];
    request(req, sizeof req, "");
    static const char *const bad[] = {
        ",\"progress\":7",
        ",\"progress\":-0.5",
        ",\"progress\":\"1\"",
        ",\"epoch\":3",          /* more than the request's epochs */
        ",\"epochs\":5",         /* not the request's */
        ",\"step\":-1",
        ",\"total_steps\":1e300",
        ",\"loss\":-1",
        ",\"model_version\":\"sha256:xyz\"",
        ",\"model_version\":\"md5:0123456789ab\"",
        ",\"created\":\"<script>\"",
        ",\"started\":\"2026-01-01T00:00:00.000Z and more text that is far too long\"",
        ",\"activated\":1",
        ",\"history\":{}",
        ",\"history\":[{},{},{}]", /* more epochs than the job has */
        ",\"history\":[1]",
        ",\"history\":[{\"loss\":-5}]",
        ",\"history\":[{\"test_ssim\":9}]",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        cr_assert_eq(check("1.json", "1", "succeeded", req, bad[i], why, sizeof why), -1, "%s", bad[i]);
        cr_assert(why[0] != '\0');
    }
    /* Strings go into JSON answers: the record must be valid UTF-8. */
    cr_assert_eq(check("1.json", "1", "failed", req, ",\"error\":\"bad \xff\xfe bytes\"", why, sizeof why), -1);
    cr_assert_not_null(strstr(why, "UTF-8"), "%s", why);
    cr_assert_eq(check("1.json", "1", "failed", req, ",\"error\":\"caf\xc3\xa9\"", why, sizeof why), 0, "%s", why);
    /* null is as good as absent. */
    cr_assert_eq(check("1.json", "1", "running", req, ",\"error\":null,\"loss\":null", why, sizeof why), 0, "%s",
                 why);
}

/* ------------------------------------------------------------ installing models */

/* Saves a default-architecture model with weights from seed at path. */
static void save_model(const char *path, uint64_t seed) {
    char err[DAE_ERR_LEN];
    dae_model m;
    cr_assert_eq(dae_model_init(&m, dae_model_default_spec(), err, sizeof err), DAE_OK);
    dae_model_init_params(&m, seed);
    cr_assert_eq(dae_model_save(&m, path, NULL, NULL, 0, err, sizeof err), DAE_OK, "%s", err);
    dae_model_free(&m);
}

static long file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : -1;
}

Test(registry_install, never_writes_over_a_model) {
    char dir[256], path[600], tmp[600], err[DAE_ERR_LEN] = "";
    snprintf(dir, sizeof dir, "%s/dae-test-jobs.XXXXXX", getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/a.safetensors", dir);
    save_model(path, 1);
    char *argv[] = {"dae-server", NULL};
    unsetenv("DAE_MODEL");
    unsetenv("DAE_MODELS_DIR");
    srv_config cfg;
    cr_assert_eq(srv_config_parse(&cfg, 1, argv), 0);
    cfg.models_dir = dir;
    cfg.model = "a";
    cfg.workers = 1;
    cfg.max_batch = 8;
    srv_registry *r = srv_registry_open(&cfg, err, sizeof err);
    cr_assert_not_null(r, "%s", err);
    int active = 0;
    cr_assert(srv_registry_name_taken(r, "a", &active));
    cr_assert(active);
    cr_assert_not(srv_registry_name_taken(r, "b", &active));

    /* A new name: installed and listed; the temporary is gone. */
    snprintf(tmp, sizeof tmp, "%s/b.safetensors.tmp.1.job1", dir);
    save_model(tmp, 2);
    cr_assert_eq(srv_registry_install(r, "b", tmp, 0, err, sizeof err), DAE_OK, "%s", err);
    cr_assert_eq(access(tmp, F_OK), -1);
    srv_model *b = srv_registry_acquire(r, "b");
    cr_assert_not_null(b);
    char b_version[24];
    snprintf(b_version, sizeof b_version, "%s", b->version);
    srv_model_release(b);

    /* The same name again: refused, the file untouched, the temporary left to the caller. */
    save_model(tmp, 3);
    snprintf(path, sizeof path, "%s/b.safetensors", dir);
    long before = file_size(path);
    cr_assert_eq(srv_registry_install(r, "b", tmp, 0, err, sizeof err), DAE_ERR_EXISTS);
    cr_assert_eq(access(tmp, F_OK), 0);
    b = srv_registry_acquire(r, "b");
    cr_assert_str_eq(b->version, b_version);
    srv_model_release(b);
    cr_assert_eq(file_size(path), before);

    /* A file that appeared in the directory (not listed yet) is not replaced either. */
    snprintf(path, sizeof path, "%s/c.safetensors", dir);
    save_model(path, 4);
    cr_assert_eq(srv_registry_install(r, "c", tmp, 0, err, sizeof err), DAE_ERR_EXISTS);

    /* replace: a model that is not active is replaced; the active one never. */
    cr_assert_eq(srv_registry_install(r, "b", tmp, 1, err, sizeof err), DAE_OK, "%s", err);
    b = srv_registry_acquire(r, "b");
    cr_assert_str_neq(b->version, b_version);
    srv_model_release(b);
    save_model(tmp, 5);
    cr_assert_eq(srv_registry_install(r, "a", tmp, 1, err, sizeof err), DAE_ERR_IN_USE);
    srv_model *a = srv_registry_acquire(r, NULL);
    cr_assert_str_eq(a->name, "a");
    srv_model_release(a);

    /* A file that does not load never appears. */
    FILE *f = fopen(tmp, "w");
    cr_assert_not_null(f);
    fputs("not a model", f);
    fclose(f);
    cr_assert_eq(srv_registry_install(r, "d", tmp, 0, err, sizeof err), DAE_ERR_IO);
    snprintf(path, sizeof path, "%s/d.safetensors", dir);
    cr_assert_eq(access(path, F_OK), -1);
    cr_assert_null(srv_registry_acquire(r, "d"));

    srv_registry_free(r);
    static const char *const files[] = {"a.safetensors", "b.safetensors", "c.safetensors", "b.safetensors.tmp.1.job1",
                                        SRV_LOCK_FILE};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, files[i]);
        unlink(path);
    }
    cr_assert_eq(rmdir(dir), 0);
}
