/* train_request.h - a training run as a typed request, and the one table
 * of its parameters.
 *
 * The table (DAE_TRAIN_PARAMS) names every hyper-parameter once, with its
 * field of dae_train_config, its valid range and a help line; defaults are
 * dae_train_config_default's. `dae train` builds its flags and --help from
 * it, POST /train validates its JSON body by it (dae_train_request_from_json),
 * and dae_train_config_check reports a value out of range with its words,
 * so a range or default changes in one place. */
#ifndef DAE_TRAIN_REQUEST_H
#define DAE_TRAIN_REQUEST_H

#include <stddef.h>

#include <cJSON.h>

#include "dae_status.h"
#include "train.h"

typedef enum {
    DAE_PARAM_INT,   /* int, an integer in [min, max] */
    DAE_PARAM_U64,   /* uint64_t, an integer in [min, max] */
    DAE_PARAM_FLOAT, /* float, a number in [min, max], or (min, max] when min_open */
    DAE_PARAM_NOISE, /* dae_noise_spec, from its text form (noise.h) */
} dae_param_kind;

/* Where a parameter is offered. */
enum { DAE_PARAM_CLI = 1, DAE_PARAM_JSON = 2 };

/* One hyper-parameter. */
typedef struct {
    const char *name;    /* the JSON field, e.g. "batch_size" */
    const char *flag;    /* the `dae train` flag without "--", e.g. "batch-size" */
    dae_param_kind kind;
    size_t offset;       /* of its field in dae_train_config */
    double min, max;
    int min_open;        /* min itself is not allowed */
    unsigned where;      /* DAE_PARAM_CLI | DAE_PARAM_JSON */
    const char *meta;    /* placeholder of the usage: "N", "X", "SPEC" */
    const char *help;    /* one line, without the default */
} dae_train_param;

extern const dae_train_param DAE_TRAIN_PARAMS[];
extern const int DAE_TRAIN_N_PARAMS;

/* The default of p (dae_train_config_default's) as text: "64", "0.001",
 * "gaussian:0.5"; "online CPUs" for the thread count, "0 = all" for
 * a limit of images. */
void dae_train_param_default_text(const dae_train_param *p, char *buf, size_t len);

/* The range of p in words: "an integer from 1 to 10000", "a number in (0, 1]". */
void dae_train_param_range_text(const dae_train_param *p, char *buf, size_t len);

/* Checks the value of p in cfg against its range; err then says
 * "NAME must be RANGE (got VALUE)" with p's JSON name. */
dae_status dae_train_param_check(const dae_train_param *p, const dae_train_config *cfg, char *err, size_t errlen);

/* A training run to do: on which data set, with which network and
 * hyper-parameters. */
typedef struct {
    char dataset[DAE_NAME_MAX + 1]; /* dae_name_valid */
    char *architecture;  /* the network's JSON spec (model.h), malloc'd; NULL: the reference network */
    char *base_model;    /* fine-tuning: a weights file to start from, its network and weights,
                            malloc'd (the caller's to set); NULL: a new network of architecture */
    char *import_path;   /* an archive or a folder of images to train on instead of the data set
                            named dataset (io/dataset_import.h), malloc'd (the CLI's to set); NULL */
    dae_train_config cfg; /* the hyper-parameters; progress, user and cancel unset */
} dae_train_request;

/* Test images evaluated after every epoch of a JSON request that does not
 * say (its "eval_limit"; 0 there means no evaluation). */
#define DAE_TRAIN_JSON_EVAL_LIMIT 1000

/* Reads a request from the JSON object in: "dataset" (required: a data
 * set name), "architecture" (a spec object, or a string holding one; its
 * input must be one channel), and the table's JSON parameters, each
 * defaulting as dae_train_config_default does, except eval_limit
 * (DAE_TRAIN_JSON_EVAL_LIMIT; 0 turns evaluation off). Fields named in
 * caller_fields (a comma-separated list, may be NULL) are skipped for the
 * caller to read; any other field is an error. The thread count is the
 * caller's (cfg.threads 0). Returns DAE_OK, or DAE_ERR_INVALID with a
 * sentence naming the field. req is then empty (free it either way). */
dae_status dae_train_request_from_json(const cJSON *in, const char *caller_fields, dae_train_request *req,
                                       char *err, size_t errlen);

/* Sets req's network to the JSON spec text (or a built-in architecture's
 * name, model.h's dae_model_named_spec): one the engine accepts, with a
 * one-channel input, kept in the engine's canonical text. Errors are "SOURCE: why" (source names the spec: a file, or the
 * field "architecture"). */
dae_status dae_train_request_set_architecture(dae_train_request *req, const char *spec, const char *source,
                                              char *err, size_t errlen);

/* The request as canonical JSON fields added to out (every field, the
 * noise in its canonical text, the architecture as an object when set);
 * dae_train_request_from_json of them gives back req. Returns DAE_OK or
 * DAE_ERR_NOMEM. */
dae_status dae_train_request_to_json(const dae_train_request *req, cJSON *out);

/* The JSON fields a request takes, comma-separated, for error messages. */
const char *dae_train_request_fields(void);

void dae_train_request_free(dae_train_request *req);

#endif
