/* test_train_request.c - the one table of training parameters and the
 * typed training request: what POST /train accepts and refuses, the
 * canonical JSON it records, and a whole run from a request (the path
 * both `dae train` and the server's jobs take). */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "jsontext.h"
#include "modelfile.h"
#include "test_util.h"
#include "train_run.h"

/* Reads text as a request; returns the status, err filled. */
static dae_status parse(const char *text, const char *caller_fields, dae_train_request *req, char *err, size_t len) {
    cJSON *in = cJSON_Parse(text);
    cr_assert_not_null(in, "bad test JSON %s", text);
    err[0] = '\0';
    dae_status st = dae_train_request_from_json(in, caller_fields, req, err, len);
    cJSON_Delete(in);
    return st;
}

Test(train_request, defaults_are_the_engines_except_the_json_evaluation) {
    dae_train_request req;
    char err[DAE_ERR_LEN];
    cr_assert_eq(parse("{\"dataset\":\"mnist\"}", NULL, &req, err, sizeof err), DAE_OK, "%s", err);
    dae_train_config def;
    dae_train_config_default(&def);
    cr_assert_str_eq(req.dataset, "mnist");
    cr_assert_eq(req.cfg.epochs, def.epochs);
    cr_assert_eq(req.cfg.batch_size, def.batch_size);
    cr_assert_eq(req.cfg.learning_rate, def.learning_rate);
    cr_assert_eq(req.cfg.weight_decay, def.weight_decay);
    cr_assert_eq(req.cfg.noise.kind, def.noise.kind);
    cr_assert_eq(req.cfg.noise.level, def.noise.level);
    cr_assert_eq(req.cfg.eval_limit, DAE_TRAIN_JSON_EVAL_LIMIT);
    cr_assert_eq(req.cfg.eval_each_epoch, 1);
    cr_assert_null(req.architecture);
    dae_train_request_free(&req);
    /* eval_limit 0 in JSON: no evaluation. */
    cr_assert_eq(parse("{\"dataset\":\"mnist\",\"eval_limit\":0}", NULL, &req, err, sizeof err), DAE_OK, "%s", err);
    cr_assert_eq(req.cfg.eval_each_epoch, 0);
    dae_train_request_free(&req);
}

Test(train_request, every_bad_field_is_named_with_its_range) {
    static const char *const bad[][2] = {
        {"{}", "dataset is required"},
        {"{\"dataset\":\"../etc\"}", "dataset must be"},
        {"{\"dataset\":7}", "dataset must be"},
        {"{\"dataset\":\"m\",\"epochs\":0}", "epochs must be an integer from 1 to 10000"},
        {"{\"dataset\":\"m\",\"epochs\":1.5}", "epochs must be an integer"},
        {"{\"dataset\":\"m\",\"batch_size\":65537}", "batch_size must be an integer from 1 to 65536"},
        {"{\"dataset\":\"m\",\"learning_rate\":0}", "learning_rate must be a number in (0, 1]"},
        {"{\"dataset\":\"m\",\"learning_rate\":\"x\"}", "learning_rate must be a number"},
        {"{\"dataset\":\"m\",\"weight_decay\":-1}", "weight_decay must be a number in [0, 1]"},
        {"{\"dataset\":\"m\",\"noise\":5}", "noise must be a string"},
        {"{\"dataset\":\"m\",\"noise\":\"gaussian:-1\"}", "noise: "},
        {"{\"dataset\":\"m\",\"seed\":-1}", "seed must be an integer from 0 to 9007199254740991"},
        {"{\"dataset\":\"m\",\"seed\":1e300}", "seed must be an integer from 0 to 9007199254740991"},
        {"{\"dataset\":\"m\",\"train_limit\":-1}", "train_limit must be an integer from 0"},
        {"{\"dataset\":\"m\",\"eval_limit\":-5}", "eval_limit must be an integer from 0"},
        {"{\"dataset\":\"m\",\"threads\":2}", "unknown field \"threads\""},
        {"{\"dataset\":\"m\",\"epoch\":1}", "unknown field \"epoch\""},
        {"{\"dataset\":\"m\",\"epochs\":1,\"epochs\":100}", "field \"epochs\" is given more than once"},
        {"{\"dataset\":\"m\",\"model_name\":\"a\",\"model_name\":\"b\"}", "field \"model_name\" is given more than once"},
        {"{\"dataset\":\"m\",\"dataset\":\"n\"}", "field \"dataset\" is given more than once"},
        {"{\"dataset\":\"m\",\"architecture\":7}", "architecture must be"},
        {"{\"dataset\":\"m\",\"architecture\":{\"input\":[3,8,8]}}", "architecture: "},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        dae_train_request req;
        char err[DAE_ERR_LEN];
        cr_assert_eq(parse(bad[i][0], "model_name", &req, err, sizeof err), DAE_ERR_INVALID, "%s was accepted",
                     bad[i][0]);
        cr_assert(strstr(err, bad[i][1]) != NULL, "%s: \"%s\" does not say \"%s\"", bad[i][0], err, bad[i][1]);
        cr_assert_null(req.architecture);
    }
}

/* A built-in architecture by name is its spec, recorded in full. */
/* The NUL a JSON string would hold, which cJSON's C string would end at;
 * an escaped backslash before "u0000" is no NUL. */
Test(train_request, a_nul_in_a_json_string_is_found) {
    static const struct {
        const char *text;
        long at;
    } cases[] = {
        {"{\"model_name\":\"a\\u0000b\"}", 16}, {"{\"a\\u0000\":1}", 3}, {"{\"a\":\"\\\\u0000\"}", -1},
        {"{\"a\":\"x\\\"\\u0000\"}", 9},   {"{\"a\":\"\\u0041\"}", -1},  {"{\"a\":1}", -1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        cr_expect_eq(dae_json_find_nul(cases[i].text, strlen(cases[i].text)), cases[i].at, "%s", cases[i].text);
    cr_expect_eq(dae_json_find_nul("{\"a\":\"x\0y\"}", 11), 7, "a NUL byte in a string");
}

Test(train_request, architectures_by_name_are_their_specs) {
    dae_train_request req;
    char err[DAE_ERR_LEN];
    cr_assert_eq(parse("{\"dataset\":\"mnist\",\"architecture\":\"unet\"}", NULL, &req, err, sizeof err), DAE_OK,
                 "%s", err);
    dae_model unet;
    cr_assert_eq(dae_model_init(&unet, dae_model_named_spec("unet"), err, sizeof err), DAE_OK, "%s", err);
    cr_assert_str_eq(req.architecture, unet.spec);
    dae_model_free(&unet);
    dae_train_request_free(&req);
    cr_assert_eq(parse("{\"dataset\":\"mnist\",\"architecture\":\"resnet\"}", NULL, &req, err, sizeof err),
                 DAE_ERR_INVALID);
    cr_assert(strstr(err, "architecture: ") != NULL, "%s", err);
}

Test(train_request, caller_fields_are_left_to_the_caller) {
    dae_train_request req;
    char err[DAE_ERR_LEN];
    cr_assert_eq(parse("{\"dataset\":\"m\",\"model_name\":\"x\",\"activate\":true}", "model_name, activate", &req, err,
                       sizeof err),
                 DAE_OK, "%s", err);
    dae_train_request_free(&req);
    cr_assert_eq(parse("{\"dataset\":\"m\",\"activate\":true}", "model_name", &req, err, sizeof err), DAE_ERR_INVALID);
    cr_assert(strstr(err, "model_name") != NULL, "the list of fields names the caller's: %s", err);
}

Test(train_request, canonical_json_reads_back_the_same) {
    dae_train_request req, again;
    char err[DAE_ERR_LEN];
    cr_assert_eq(parse("{\"dataset\":\"mnist-mini\",\"epochs\":3,\"batch_size\":16,\"learning_rate\":0.001,"
                       "\"weight_decay\":0,\"noise\":\"gaussian:0.25:clip\",\"seed\":9007199254740991,"
                       "\"train_limit\":100,\"eval_limit\":0,"
                       "\"architecture\":\"" "{\\\"input\\\":[1,8,8],\\\"enc\\\":[{\\\"type\\\":\\\"conv2d\\\",\\\"in_channels\\\":1,"
                       "\\\"out_channels\\\":1,\\\"kernel_size\\\":3,\\\"padding\\\":1}],"
                       "\\\"dec\\\":[{\\\"type\\\":\\\"sigmoid\\\"}]}\"}",
                       NULL, &req, err, sizeof err),
                 DAE_OK, "%s", err);
    cJSON *out = cJSON_CreateObject();
    cr_assert_eq(dae_train_request_to_json(&req, out), DAE_OK);
    char *text = cJSON_PrintUnformatted(out);
    /* The numbers as a person wrote them, not as floats widen. */
    cr_assert(strstr(text, "\"learning_rate\":0.001,") != NULL, "%s", text);
    cr_assert(strstr(text, "\"eval_limit\":0") != NULL, "%s", text);
    cr_assert_eq(dae_train_request_from_json(out, NULL, &again, err, sizeof err), DAE_OK, "%s", err);
    cr_assert_eq(memcmp(&again.cfg, &req.cfg, sizeof req.cfg), 0, "the configuration changed through JSON: %s", text);
    cr_assert_str_eq(again.architecture, req.architecture);
    free(text);
    cJSON_Delete(out);
    dae_train_request_free(&req);
    dae_train_request_free(&again);
}

Test(train_request, the_engine_checks_by_the_same_table) {
    dae_train_config cfg;
    dae_train_config_default(&cfg);
    char err[DAE_ERR_LEN] = "";
    cr_assert_eq(dae_train_config_check(&cfg, err, sizeof err), DAE_OK, "%s", err);
    cfg.batch_size = 0;
    cr_assert_eq(dae_train_config_check(&cfg, err, sizeof err), DAE_ERR_INVALID);
    cr_assert(strstr(err, "batch_size must be an integer from 1 to 65536 (got 0)") != NULL, "%s", err);
    dae_train_config_default(&cfg);
    cfg.threads = 65;
    cr_assert_eq(dae_train_config_check(&cfg, err, sizeof err), DAE_ERR_INVALID);
    cfg.threads = 0; /* every online CPU */
    cr_assert_eq(dae_train_config_check(&cfg, err, sizeof err), DAE_OK, "%s", err);
    char text[64];
    for (int i = 0; i < DAE_TRAIN_N_PARAMS; i++) {
        dae_train_param_default_text(&DAE_TRAIN_PARAMS[i], text, sizeof text);
        cr_assert(text[0] != '\0', "%s has no default text", DAE_TRAIN_PARAMS[i].name);
    }
}

/* A network of 8x8 images with one convolution. */
#define SMALL_8X8                                                                                                  \
    "{\"input\":[1,8,8],\"enc\":[{\"type\":\"conv2d\",\"in_channels\":1,\"out_channels\":1,\"kernel_size\":3," \
    "\"padding\":1}],\"dec\":[{\"type\":\"sigmoid\"}]}"

/* A whole run from a request on the mini data set: the weights it saves
 * carry the request's facts; a missing data set is DAE_ERR_NOT_FOUND and
 * a network of another size is refused naming both sizes. */
Test(train_run, a_request_trains_and_saves_with_its_facts) {
    dae_train_request req;
    char err[DAE_ERR_LEN];
    cr_assert_eq(parse("{\"dataset\":\"mnist-mini\",\"epochs\":1,\"batch_size\":32,\"train_limit\":64,"
                       "\"eval_limit\":16}",
                       NULL, &req, err, sizeof err),
                 DAE_OK, "%s", err);
    req.cfg.threads = 1;
    dae_train_run *run = NULL;
    cr_assert_eq(dae_train_run_open(&run, &req, FIXTURES, NULL, err, sizeof err), DAE_OK, "%s", err);
    cr_assert_eq(dae_train_run_images(run), 64);
    cr_assert_eq(dae_train_run_train(run, NULL, NULL, NULL, err, sizeof err), DAE_OK, "%s", err);
    char path[] = "/tmp/dae-test-run-XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    close(fd);
    const char *keys[] = {"train_job"}, *values[] = {"7"};
    cr_assert_eq(dae_train_run_save(run, path, "test", keys, values, 1, err, sizeof err), DAE_OK, "%s", err);
    dae_model m;
    dae_model_info info;
    cr_assert_eq(dae_model_open(path, &m, &info, err, sizeof err), DAE_OK, "%s", err);
    cr_assert_str_eq(dae_st_meta(&info.meta, "train_images"), "64");
    cr_assert_str_eq(dae_st_meta(&info.meta, "test_images"), "16");
    cr_assert_str_eq(dae_st_meta(&info.meta, "epochs"), "1");
    cr_assert_str_eq(dae_st_meta(&info.meta, "train_job"), "7");
    cr_assert_not_null(dae_st_meta(&info.meta, "final_loss"));
    dae_st_free(&info.meta);
    dae_model_free(&m);
    unlink(path);
    dae_train_run_free(run);

    snprintf(req.dataset, sizeof req.dataset, "no-such-set");
    cr_assert_eq(dae_train_run_open(&run, &req, FIXTURES, NULL, err, sizeof err), DAE_ERR_NOT_FOUND);
    cr_assert(strstr(err, "no-such-set") != NULL, "%s", err);
    snprintf(req.dataset, sizeof req.dataset, "mnist-mini");
    cr_assert_eq(dae_train_request_set_architecture(
                     &req, SMALL_8X8,
                     "small.json", err, sizeof err),
                 DAE_OK, "%s", err);
    cr_assert_eq(dae_train_run_open(&run, &req, FIXTURES, NULL, err, sizeof err), DAE_ERR_INVALID);
    cr_assert(strstr(err, "the model takes 1x8x8 images, data set mnist-mini has 28x28 gray images") != NULL, "%s", err);
    dae_train_request_free(&req);
}

/* Fine-tuning: a run with a base model starts from its network and
 * weights, and the saved model names it. */
Test(train_run, a_base_model_gives_the_network_and_the_starting_weights) {
    dae_train_request req;
    char err[DAE_ERR_LEN];
    cr_assert_eq(parse("{\"dataset\":\"mnist-mini\",\"epochs\":1,\"batch_size\":32,\"train_limit\":64,\"eval_limit\":0}",
                       NULL, &req, err, sizeof err),
                 DAE_OK, "%s", err);
    req.cfg.threads = 1;
    req.base_model = strdup(FIXTURES "/ref/unet_init.safetensors");
    dae_model base;
    cr_assert_eq(dae_model_load(&base, req.base_model, err, sizeof err), DAE_OK, "%s", err);
    dae_train_run *run = NULL;
    cr_assert_eq(dae_train_run_open(&run, &req, FIXTURES, NULL, err, sizeof err), DAE_OK, "%s", err);
    const dae_model *m = dae_train_run_model(run);
    cr_assert_str_eq(m->spec, base.spec);
    cr_assert_eq(memcmp(m->params, base.params, base.n_params * sizeof(float)), 0, "starts from the base weights");
    cr_assert_eq(dae_train_run_train(run, NULL, NULL, NULL, err, sizeof err), DAE_OK, "%s", err);
    cr_assert_neq(memcmp(m->params, base.params, base.n_params * sizeof(float)), 0, "and trains them");
    char path[] = "/tmp/dae-test-run-XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    close(fd);
    cr_assert_eq(dae_train_run_save(run, path, "test", NULL, NULL, 0, err, sizeof err), DAE_OK, "%s", err);
    dae_model saved;
    dae_model_info info;
    cr_assert_eq(dae_model_open(path, &saved, &info, err, sizeof err), DAE_OK, "%s", err);
    cr_assert_str_eq(dae_st_meta(&info.meta, "base_model"), "unet_init");
    dae_st_free(&info.meta);
    dae_model_free(&saved);
    unlink(path);
    dae_train_run_free(run);
    /* Neither an architecture nor a checkpoint goes with a base model. */
    cr_assert_eq(dae_train_request_set_architecture(&req, "unet", "architecture", err, sizeof err), DAE_OK, "%s", err);
    cr_assert_eq(dae_train_run_open(&run, &req, FIXTURES, NULL, err, sizeof err), DAE_ERR_INVALID);
    cr_assert(strstr(err, "takes its network from its base model") != NULL, "%s", err);
    dae_model_free(&base);
    dae_train_request_free(&req);
}
