/* train_request.c - the table of training parameters and the typed
 * request read from JSON (see train_request.h). */
#include "train_request.h"

#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CFG(field) offsetof(dae_train_config, field)
#define BOTH (DAE_PARAM_CLI | DAE_PARAM_JSON)

/* JSON numbers are doubles: integers beyond 2^53 do not survive them. */
#define JSON_INT_MAX 9007199254740991.0

const dae_train_param DAE_TRAIN_PARAMS[] = {
    {"epochs", "epochs", DAE_PARAM_INT, CFG(epochs), 1, 10000, 0, BOTH, "N", "train until N epochs are done"},
    {"batch_size", "batch-size", DAE_PARAM_INT, CFG(batch_size), 1, 65536, 0, BOTH, "N", "images per optimiser step"},
    {"learning_rate", "learning-rate", DAE_PARAM_FLOAT, CFG(learning_rate), 0, 1, 1, BOTH, "X", "Adam learning rate"},
    {"weight_decay", "weight-decay", DAE_PARAM_FLOAT, CFG(weight_decay), 0, 1, 0, BOTH, "X",
     "Adam weight decay, added to the gradient"},
    {"noise", "noise", DAE_PARAM_NOISE, CFG(noise), 0, 0, 0, BOTH, "SPEC",
     "gaussian:S[:clip][:quantize], salt-pepper:P, speckle:S; a range LO-HI draws each image's level"},
    {"seed", "seed", DAE_PARAM_U64, CFG(seed), 0, 18446744073709551615.0, 0, BOTH, "N",
     "seed of initialisation, shuffling and noise"},
    {"threads", "threads", DAE_PARAM_INT, CFG(threads), 1, 64, 0, DAE_PARAM_CLI, "N", "threads over the batch"},
    {"train_limit", "limit", DAE_PARAM_INT, CFG(limit), 0, INT_MAX, 0, BOTH, "N",
     "use only the first N training images"},
    {"eval_limit", "eval-limit", DAE_PARAM_INT, CFG(eval_limit), 0, INT_MAX, 0, BOTH, "N",
     "test images evaluated after each epoch"},
};
const int DAE_TRAIN_N_PARAMS = (int)(sizeof DAE_TRAIN_PARAMS / sizeof DAE_TRAIN_PARAMS[0]);

/* The shortest decimal text that reads back as f: 0.001, not 0.0010000000474974513. */
static void format_float(float f, char *buf, size_t len) {
    for (int digits = 1; digits <= 9; digits++) {
        snprintf(buf, len, "%.*g", digits, (double)f);
        if (strtof(buf, NULL) == f) return;
    }
}

/* f as the double its shortest text stands for, so that JSON says 0.001. */
static double float_as_decimal(float f) {
    char text[32];
    format_float(f, text, sizeof text);
    return strtod(text, NULL);
}

static double param_value(const dae_train_param *p, const dae_train_config *cfg) {
    const char *field = (const char *)cfg + p->offset;
    switch (p->kind) {
    case DAE_PARAM_INT: return *(const int *)field;
    case DAE_PARAM_U64: return (double)*(const uint64_t *)field;
    case DAE_PARAM_FLOAT: return *(const float *)field;
    case DAE_PARAM_NOISE: break;
    }
    return 0;
}

void dae_train_param_default_text(const dae_train_param *p, char *buf, size_t len) {
    dae_train_config def;
    dae_train_config_default(&def);
    const char *field = (const char *)&def + p->offset;
    if (p->offset == CFG(threads)) snprintf(buf, len, "online CPUs");
    else if (p->kind == DAE_PARAM_NOISE) dae_noise_format((const dae_noise_spec *)field, buf, len);
    else if (p->kind == DAE_PARAM_FLOAT) format_float(*(const float *)field, buf, len);
    else if (p->kind == DAE_PARAM_U64) snprintf(buf, len, "%llu", (unsigned long long)*(const uint64_t *)field);
    else if (p->min == 0 && *(const int *)field == 0) snprintf(buf, len, "0 = all"); /* a limit */
    else snprintf(buf, len, "%d", *(const int *)field);
}

/* The largest value of p a JSON number carries exactly. */
static double json_max(const dae_train_param *p) { return p->max < JSON_INT_MAX ? p->max : JSON_INT_MAX; }

void dae_train_param_range_text(const dae_train_param *p, char *buf, size_t len) {
    if (p->kind == DAE_PARAM_FLOAT) snprintf(buf, len, "a number in %s%g, %g]", p->min_open ? "(" : "[", p->min, p->max);
    else if (p->kind == DAE_PARAM_NOISE) snprintf(buf, len, "a noise spec: %s", p->help);
    else snprintf(buf, len, "an integer from %.0f to %.0f", p->min, p->kind == DAE_PARAM_U64 ? json_max(p) : p->max);
}

static int in_range(const dae_train_param *p, double x) {
    return x == x && (p->min_open ? x > p->min : x >= p->min) && x <= p->max;
}

dae_status dae_train_param_check(const dae_train_param *p, const dae_train_config *cfg, char *err, size_t errlen) {
    if (p->kind == DAE_PARAM_NOISE) return DAE_OK; /* dae_noise_parse made it */
    double x = param_value(p, cfg);
    /* A thread count of 0 in a configuration means every online CPU. */
    if (in_range(p, x) || (p->offset == CFG(threads) && x == 0)) return DAE_OK;
    char range[96];
    dae_train_param_range_text(p, range, sizeof range);
    return dae_fail(err, errlen, DAE_ERR_INVALID, "%s must be %s (got %.9g)", p->name, range, x);
}

/* ------------------------------------------------------------ JSON */

/* The JSON fields of the table, plus dataset and architecture. */
const char *dae_train_request_fields(void) {
    return "dataset, epochs, batch_size, learning_rate, weight_decay, noise, seed, train_limit, eval_limit, "
           "architecture";
}

/* 1 when name is one of the comma-separated words of list. */
static int in_list(const char *list, const char *name) {
    size_t n = strlen(name);
    for (const char *p = list; p != NULL && *p != '\0';) {
        while (*p == ' ' || *p == ',') p++;
        size_t w = strcspn(p, ", ");
        if (w == n && n > 0 && strncmp(p, name, n) == 0) return 1;
        p += w;
    }
    return 0;
}

/* Reads the value v of p into cfg. */
static dae_status read_param(const dae_train_param *p, const cJSON *v, dae_train_config *cfg, char *err,
                             size_t errlen) {
    char *field = (char *)cfg + p->offset;
    char range[96];
    dae_train_param_range_text(p, range, sizeof range);
    if (p->kind == DAE_PARAM_NOISE) {
        char detail[DAE_ERR_LEN] = "too long";
        if (!cJSON_IsString(v))
            return dae_fail(err, errlen, DAE_ERR_INVALID, "%s must be a string: %s", p->name, p->help);
        if (strlen(v->valuestring) > DAE_NOISE_TEXT_LEN ||
            dae_noise_parse(v->valuestring, (dae_noise_spec *)field, detail, sizeof detail) != DAE_OK)
            return dae_fail(err, errlen, DAE_ERR_INVALID, "%s: %s", p->name, detail);
        return DAE_OK;
    }
    double x = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    if (!in_range(p, x) || x > json_max(p) || (p->kind != DAE_PARAM_FLOAT && x != floor(x)))
        return dae_fail(err, errlen, DAE_ERR_INVALID, "%s must be %s", p->name, range);
    if (p->kind == DAE_PARAM_INT) *(int *)field = (int)x;
    else if (p->kind == DAE_PARAM_U64) *(uint64_t *)field = (uint64_t)x;
    else *(float *)field = (float)x;
    return DAE_OK;
}

dae_status dae_train_request_set_architecture(dae_train_request *req, const char *spec, const char *source,
                                              char *err, size_t errlen) {
    dae_model m;
    char detail[DAE_ERR_LEN] = "";
    if (dae_model_named_spec(spec) != NULL) spec = dae_model_named_spec(spec);
    dae_status st = dae_model_init(&m, spec, detail, sizeof detail);
    if (st == DAE_OK && m.in_c != 1)
        st = dae_fail(detail, sizeof detail, DAE_ERR_INVALID, "the input must have 1 channel, not %d", m.in_c);
    char *canonical = st == DAE_OK ? strdup(m.spec) : NULL;
    if (st == DAE_OK && canonical == NULL) st = dae_fail(detail, sizeof detail, DAE_ERR_NOMEM, "out of memory");
    dae_model_free(&m);
    if (st != DAE_OK) return dae_fail(err, errlen, st, "%s: %s", source, detail);
    free(req->architecture);
    req->architecture = canonical;
    return DAE_OK;
}

/* Reads the architecture field: a spec object, or a string holding one or
 * naming a built-in architecture. */
static dae_status read_architecture(const cJSON *arch, dae_train_request *req, char *err, size_t errlen) {
    char *spec = NULL;
    if (cJSON_IsString(arch)) spec = strdup(arch->valuestring);
    else if (cJSON_IsObject(arch) || cJSON_IsArray(arch)) spec = cJSON_PrintUnformatted(arch);
    if (spec == NULL)
        return dae_fail(err, errlen, DAE_ERR_INVALID, "architecture must be an architecture spec (a JSON object)");
    dae_status st = dae_train_request_set_architecture(req, spec, "architecture", err, errlen);
    free(spec);
    return st;
}

dae_status dae_train_request_from_json(const cJSON *in, const char *caller_fields, dae_train_request *req,
                                       char *err, size_t errlen) {
    memset(req, 0, sizeof *req);
    dae_train_config_default(&req->cfg);
    req->cfg.eval_limit = DAE_TRAIN_JSON_EVAL_LIMIT;
    dae_status st = DAE_OK;
    if (!cJSON_IsObject(in)) return dae_fail(err, errlen, DAE_ERR_INVALID, "a training request is a JSON object");
    for (const cJSON *f = in->child; f != NULL && st == DAE_OK; f = f->next) {
        const char *name = f->string != NULL ? f->string : "";
        /* The fields before f are distinct and known (else the loop has
         * stopped): a few dozen compares at most, whatever the body. */
        for (const cJSON *e = in->child; e != f && st == DAE_OK; e = e->next)
            if (e->string != NULL && strcmp(e->string, name) == 0)
                st = dae_fail(err, errlen, DAE_ERR_INVALID,
                              "field \"%s\" is given more than once (which one would count?)", name);
        if (st != DAE_OK) break;
        if (in_list(caller_fields, name)) continue;
        int known = strcmp(name, "dataset") == 0 || strcmp(name, "architecture") == 0;
        for (int i = 0; i < DAE_TRAIN_N_PARAMS && !known; i++)
            known = (DAE_TRAIN_PARAMS[i].where & DAE_PARAM_JSON) && strcmp(name, DAE_TRAIN_PARAMS[i].name) == 0;
        if (!known)
            st = dae_fail(err, errlen, DAE_ERR_INVALID, "unknown field \"%s\" (fields: %s%s%s)", name,
                          dae_train_request_fields(), caller_fields != NULL ? ", " : "",
                          caller_fields != NULL ? caller_fields : "");
    }
    const cJSON *ds = cJSON_GetObjectItemCaseSensitive(in, "dataset");
    if (st == DAE_OK && ds == NULL)
        st = dae_fail(err, errlen, DAE_ERR_INVALID, "dataset is required: a data set name such as mnist or fashion-mnist");
    if (st == DAE_OK && (!cJSON_IsString(ds) || !dae_name_valid(ds->valuestring)))
        st = dae_fail(err, errlen, DAE_ERR_INVALID,
                      "dataset must be a data set name: 1 to %d characters of [A-Za-z0-9._-], not starting with '.'",
                      DAE_NAME_MAX);
    if (st == DAE_OK) snprintf(req->dataset, sizeof req->dataset, "%s", ds->valuestring);
    for (int i = 0; i < DAE_TRAIN_N_PARAMS && st == DAE_OK; i++) {
        const dae_train_param *p = &DAE_TRAIN_PARAMS[i];
        const cJSON *v = (p->where & DAE_PARAM_JSON) ? cJSON_GetObjectItemCaseSensitive(in, p->name) : NULL;
        if (v != NULL) st = read_param(p, v, &req->cfg, err, errlen);
    }
    req->cfg.eval_each_epoch = req->cfg.eval_limit > 0;
    const cJSON *arch = cJSON_GetObjectItemCaseSensitive(in, "architecture");
    if (st == DAE_OK && arch != NULL) st = read_architecture(arch, req, err, errlen);
    /* The engine's own last word on the whole configuration. */
    if (st == DAE_OK) st = dae_train_config_check(&req->cfg, err, errlen);
    if (st != DAE_OK) dae_train_request_free(req);
    return st;
}

dae_status dae_train_request_to_json(const dae_train_request *req, cJSON *out) {
    int ok = cJSON_AddStringToObject(out, "dataset", req->dataset) != NULL;
    for (int i = 0; i < DAE_TRAIN_N_PARAMS && ok; i++) {
        const dae_train_param *p = &DAE_TRAIN_PARAMS[i];
        if (!(p->where & DAE_PARAM_JSON)) continue;
        const char *field = (const char *)&req->cfg + p->offset;
        if (p->kind == DAE_PARAM_NOISE) {
            char text[DAE_NOISE_TEXT_LEN];
            dae_noise_format((const dae_noise_spec *)field, text, sizeof text);
            ok = cJSON_AddStringToObject(out, p->name, text) != NULL;
        } else {
            double x = p->kind == DAE_PARAM_FLOAT ? float_as_decimal(*(const float *)field) : param_value(p, &req->cfg);
            /* A request without evaluation says eval_limit 0. */
            if (p->offset == CFG(eval_limit) && !req->cfg.eval_each_epoch) x = 0;
            ok = cJSON_AddNumberToObject(out, p->name, x) != NULL;
        }
    }
    if (ok && req->architecture != NULL) {
        cJSON *spec = cJSON_Parse(req->architecture);
        ok = spec != NULL && cJSON_AddItemToObject(out, "architecture", spec);
        if (!ok) cJSON_Delete(spec);
    }
    return ok ? DAE_OK : DAE_ERR_NOMEM;
}

void dae_train_request_free(dae_train_request *req) {
    if (req == NULL) return;
    free(req->architecture);
    free(req->base_model);
    free(req->import_path);
    req->architecture = req->base_model = req->import_path = NULL;
}
