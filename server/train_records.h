/* train_records.h - what is known of a training job, and its record on
 * disk: the job's JSON document (the body of GET /train/{id} and, the
 * same text, STATE_DIR/ID.json), written atomically, read back and
 * checked at start; and the removal of temporaries left by interrupted
 * writes. No HTTP here: the queue and the runner are training.h's, the
 * routes train_http.h's.
 *
 * Every record is STATE_DIR/ID.json, rewritten atomically (temporary
 * file, fsync, rename) on every change of state and after every epoch.
 * At start the records are read back and checked as requests are (a bad
 * one is skipped with a log line; ids never wrap), temporaries of
 * interrupted writes are removed, a job that was running (or whose record
 * was being rewritten) is failed with reason "interrupted" (jobs are not
 * resumed), and a queued one is queued again. */
#ifndef SRV_TRAIN_RECORDS_H
#define SRV_TRAIN_RECORDS_H

#include <stddef.h>

#include <cJSON.h>

#include "config.h"
#include "dae_status.h"
#include "registry.h"

/* Largest job id. Ids are decimal numbers from 1; the counter stops there
 * (new jobs are refused) rather than wrap onto old records. */
#define SRV_TRAIN_ID_MAX 999999999999ULL

typedef enum {
    SRV_TRAIN_QUEUED,
    SRV_TRAIN_RUNNING,
    SRV_TRAIN_SUCCEEDED,
    SRV_TRAIN_FAILED,
    SRV_TRAIN_CANCELLED,
    SRV_TRAIN_N_STATES
} srv_train_state;

/* "queued", "running", "succeeded", "failed" or "cancelled". */
const char *srv_train_state_name(srv_train_state state);

/* One epoch of a job's history. */
typedef struct {
    double loss, mse, psnr, ssim, seconds;
    int has_test;
} srv_train_epoch;

/* One logged optimiser step: its number (from 1) and its batch loss. */
typedef struct {
    long step;
    float loss;
} srv_train_step;

/* Most steps a job logs: past this, every other logged step is dropped
 * and from then on only every other step is logged, so a long job keeps
 * its whole curve in bounded memory (128 KiB). */
#define SRV_TRAIN_STEP_LOG 8192

/* A training job as its record says it (training.h keeps the rest: its
 * cancel flag, commit point and change counter). Read and written under
 * the training module's lock once the job is shared. */
typedef struct {
    char id[24];
    char request_id[72]; /* the X-Request-Id of the POST /train that made it, or "" */
    srv_train_state state;
    cJSON *request;      /* the canonical request (every field, defaults filled in) */
    /* Shortcuts into the request. */
    char model_name[DAE_NAME_MAX + 1];
    int epochs;
    int replace;         /* the request may replace a model that is not active */
    /* Progress. */
    int epoch;
    long step, steps_per_epoch, total_steps;
    double loss, images_per_s, elapsed_s, eta_s, progress;
    srv_train_epoch *history; /* epochs entries, n_history filled */
    int n_history;
    /* The loss of its steps, for the loss curve (srv_train_job_log_step);
     * in memory only, not in the record. */
    srv_train_step *steps;
    int n_steps, cap_steps;
    long step_stride;
    char error[DAE_ERR_LEN + 64];
    char created[32], started[32], finished[32];
    char model_version[24];
    int activated;
    cJSON *promotion;    /* the promotion gate's scores and decision (srv_train_gate_json), or NULL */
    struct srv_train_printed *printed; /* the history's epochs as text, each printed once (srv_train_job_json) */
} srv_train_job;

/* A new queued job of the canonical request req (taken over) with the id
 * id; its model is the request's model_name or DATASET-jobID. NULL if out
 * of memory. */
srv_train_job *srv_train_job_new(cJSON *req, const char *id);

/* NULL is fine. */
void srv_train_job_free(srv_train_job *job);

/* 1 when the job has ended (succeeded, failed or cancelled). */
int srv_train_job_finished(const srv_train_job *job);

/* The string or number field key of the job's request ("" or 0 when absent). */
const char *srv_train_job_req_str(const srv_train_job *job, const char *key);
double srv_train_job_req_num(const srv_train_job *job, const char *key);

/* The job as a JSON document (its record, and its answer over HTTP);
 * NULL if out of memory. Its history is a raw item (cJSON_Raw), printed
 * from text kept with the job: each epoch is printed once. */
cJSON *srv_train_job_json(const srv_train_job *job);

/* The same as malloc'd text; NULL if out of memory. */
char *srv_train_job_text(const srv_train_job *job);

/* Frees the history's text kept with the job (the next srv_train_job_json
 * prints every epoch again): for a job that has ended, whose text its
 * readers keep. */
void srv_train_job_drop_printed(srv_train_job *job);

/* Logs the batch loss of step `step` of the running job (lock held),
 * within SRV_TRAIN_STEP_LOG entries. Out of memory: not logged. */
void srv_train_job_log_step(srv_train_job *job, long step, double loss);

/* The job's loss curve in the columns of `dae train --loss-csv`: one row
 * per logged step, the epoch's mean loss and test metrics on the row of
 * its last step. A job read back from its record has no steps: one row
 * per epoch, the step's loss empty. Nothing yet (a queued job): the
 * header alone.
 * Malloc'd text, NULL if out of memory. */
char *srv_train_job_loss_csv(const srv_train_job *job);

/* The same curve as `dae train --loss-svg` draws it (io/plot.h); with no
 * point yet, an empty chart whose title says "no data yet". Malloc'd
 * text, NULL if out of memory. */
char *srv_train_job_loss_svg(const srv_train_job *job);

/* Parses a job id: 1 to 12 decimal digits, no leading zero, at most
 * SRV_TRAIN_ID_MAX. Returns it, or 0 when the len bytes of text are not one. */
unsigned long long srv_train_id_parse(const char *text, size_t len);

/* The fields of a training request that are the server's, besides the
 * library's (dae_train_request_from_json). */
#define SRV_TRAIN_SERVER_FIELDS "model_name, activate, replace, base_model, promote"

/* The promotion gate of a request, from its canonical form: activate
 * true (or a promote object) compares the job's model with another on
 * the same held-out images and activates it only when its PSNR gains at
 * least min_gain_db; activate "force" activates it unconditionally. */
typedef struct {
    int activate;  /* 0: never; 1: through the gate; 2: forced */
    char against[DAE_NAME_MAX + 1]; /* a model name, or "active": the default model when the job ends */
    double min_gain_db;
} srv_train_gate;

/* The gate of the canonical request req. */
void srv_train_gate_of(const cJSON *req, srv_train_gate *gate);

/* Checks a training request, the JSON object in (a POST /train body or a
 * record's request), into its canonical form *canon (a new object, the
 * caller's): the library's fields and ranges (train_request.h) and the
 * server's model_name, activate (true, false or "force"), replace,
 * base_model (a model to fine-tune) and promote ({"against": "active" or
 * a model, "metric": "psnr", "min_gain_db": X}; activate true implies the
 * default gate {"against": "active", "metric": "psnr", "min_gain_db": 0}).
 * Then whether it can run on this server now: its data set under data_dir
 * exists and has sound headers, its base model is one of registry's (when
 * registry is not NULL; its network is then the one estimated), and, when
 * memory_budget > 0, the run's estimated memory on threads threads
 * (dae_train_run_estimate) fits it. Returns DAE_OK;
 * DAE_ERR_INVALID when a field is not valid; DAE_ERR_NOT_FOUND (no such
 * data set), DAE_ERR_FORMAT (its headers are not sound) or
 * DAE_ERR_TOO_LARGE (over the budget, both numbers named) when every field
 * is valid but the request cannot run here now, *canon being set then
 * too; DAE_ERR_NOMEM. err says why in one sentence. */
dae_status srv_train_request_check(const cJSON *in, const char *data_dir, srv_registry *registry,
                                   long long memory_budget, int threads, cJSON **canon, char *err, size_t errlen);

/* Writes the job's record STATE_DIR/ID.json atomically (the directory is
 * made if missing). DAE_ERR_NO_SPACE (a full disk), DAE_ERR_IO or
 * DAE_ERR_NOMEM, err saying why. */
dae_status srv_train_record_write(const char *state_dir, const srv_train_job *job, char *err, size_t errlen);

/* srv_train_record_write for a job being submitted, whose record is then
 * there whole or not at all: one renamed into place before the sync of its
 * directory failed is removed (the job is refused, a restart must not run
 * it). */
dae_status srv_train_record_create(const char *state_dir, const srv_train_job *job, char *err, size_t errlen);

/* Removes the job's record (one already gone is no failure);
 * DAE_ERR_IO with err saying why. */
dae_status srv_train_record_remove(const char *state_dir, const srv_train_job *job, char *err, size_t errlen);

/* Checks the text (len bytes) of a job record read from the state file
 * fname as srv_train_records_load does: 0 when it would be loaded, or -1
 * with the reason in why. data_dir is where data sets are looked up;
 * the record's request is checked by srv_train_request_check. Exposed for the unit tests. */
int srv_train_record_check(const char *fname, const char *text, size_t len, const char *data_dir, char *why,
                           size_t whylen);

/* Reads every record of cfg->state_dir, oldest id first, into *jobs (a
 * malloc'd array of *n jobs, the caller's), each request checked by
 * srv_train_request_check with cfg's data directory, training memory budget and threads. The
 * state directory belongs to this server: every temporary file in it is
 * left from a write that was interrupted, and is removed; the job whose
 * record it was rewriting was being started or ended, so if its record
 * still says queued it is failed ("interrupted"), never run again, as is
 * a job whose record says running, and a queued one that can no longer
 * run here (its data set is gone). A record that is not valid is skipped
 * with a log line, and its id is never given again: *next_id is past
 * every id seen. Nothing to read is no failure: *n is then 0. */
void srv_train_records_load(const srv_config *cfg, srv_train_job ***jobs, int *n,
                            unsigned long long *next_id);

/* Removes the temporaries of interrupted writes from the models directory
 * (NAME.safetensors.tmp.PID.X, ACTIVE.tmp.PID.X). The directory may be
 * shared with other replicas, so a temporary is removed only when its
 * writer is gone (its pid is no process here), or nobody has touched it
 * for a minute (a pid may name a process of another machine or
 * container). */
void srv_train_remove_stale_temps(const char *models_dir);

#endif
