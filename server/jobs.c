/* jobs.c - training jobs: validation, the FIFO and its runner thread,
 * records on disk, JSON, Server-Sent Events and metrics (see jobs.h). */
#include "jobs.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cJSON.h>
#include <microhttpd.h>

#include "clock.h"
#include "fileio.h"
#include "idx.h"
#include "log.h"
#include "modelfile.h"
#include "noise.h"
#include "train.h"
#include "utf8.h"

/* Test images evaluated after each epoch unless the job says otherwise. */
#define DEFAULT_EVAL_LIMIT 1000
/* Least time between two progress events of a job. */
#define NOTIFY_EVERY_S 0.1
/* Largest job id. Ids are decimal numbers from 1; the counter stops there
 * (new jobs are refused) rather than wrap onto old records. */
#define JOB_ID_MAX 999999999999ULL
/* Largest job record read at start. */
#define RECORD_MAX_BYTES ((size_t)4 << 20)
/* A temporary file of the models directory untouched for this long is
 * left over from an interrupted write, whoever wrote it. */
#define STALE_TEMP_S 60

typedef enum { ST_QUEUED, ST_RUNNING, ST_SUCCEEDED, ST_FAILED, ST_CANCELLED, N_STATES } job_state;
static const char *const STATE_NAMES[N_STATES] = {"queued", "running", "succeeded", "failed", "cancelled"};

typedef struct {
    double loss, mse, psnr, ssim, seconds;
    int has_test;
} epoch_rec;

typedef struct job {
    char id[24];
    job_state state;
    cJSON *request;      /* the canonical request (every field, defaults filled in) */
    /* Shortcuts into the request. */
    char model_name[SRV_MODEL_NAME_LEN + 1];
    int epochs;
    /* Progress. */
    int epoch;
    long step, steps_per_epoch, total_steps;
    double loss, images_per_s, elapsed_s, eta_s, progress;
    epoch_rec *history;  /* epochs entries, n_history filled */
    int n_history;
    double last_epoch_end;
    char error[DAE_ERR_LEN + 64];
    char created[32], started[32], finished[32];
    char model_version[24];
    int activated;
    int replace;         /* the request may replace a model that is not active */
    int cancel_asked;    /* DELETE answered 202: the job ends cancelled */
    int committed;       /* past the last cancellation point: installing its model */
    atomic_int cancel;
    unsigned long version; /* bumped on every change streams should see */
    double last_notify;
} job;

struct srv_job_stream {
    srv_jobs *jobs;
    job *job;
    unsigned long seen;   /* version last sent; 0: none yet */
    int done_sent;
    int ended;            /* srv_jobs_stream_kick: end at the next read */
    char *pending;        /* formatted event not yet fully sent */
    size_t pending_len, pending_off;
    struct MHD_Connection *waiting; /* suspended, waiting for a change */
    srv_job_stream *next; /* in jobs->waiters */
};

struct srv_jobs {
    const srv_config *cfg;
    srv_registry *registry;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    job **all;            /* oldest first */
    int n;
    unsigned long long next_id; /* at most JOB_ID_MAX + 1 */
    int stopping, streams_ended;
    int abandoned;        /* shutdown stopped waiting for the runner: touch no record */
    pthread_t runner;
    int runner_started;
    srv_job_stream *waiters;
    /* Metrics. */
    unsigned long long finished[N_STATES];
    unsigned long long steps_total;
    int cur_epoch;
    double cur_loss, cur_images_per_s;
};

static void fail_answer(srv_jobs_answer *a, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void fail_answer(srv_jobs_answer *a, int status, const char *code, const char *fmt, ...) {
    a->status = status;
    a->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(a->message, sizeof a->message, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------ validation */

static const char FIELDS[] = "dataset, epochs, batch_size, learning_rate, weight_decay, noise, seed, train_limit, "
                             "eval_limit, model_name, activate, replace, architecture";

/* Reads the optional integer field name of o into *out, in [lo, hi].
 * Returns 0, or -1 after filling a. */
static int int_field(const cJSON *o, const char *name, long long lo, long long hi, long long *out,
                     srv_jobs_answer *a) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (v == NULL) return 0;
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < (double)lo ||
        v->valuedouble > (double)hi) {
        fail_answer(a, 422, "invalid_parameter", "%s must be an integer from %lld to %lld", name, lo, hi);
        return -1;
    }
    *out = (long long)v->valuedouble;
    return 0;
}

/* As int_field for a number in (lo, hi] (lo_open) or [lo, hi]. */
static int num_field(const cJSON *o, const char *name, double lo, int lo_open, double hi, double *out,
                     srv_jobs_answer *a) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, name);
    if (v == NULL) return 0;
    double x = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    if (!(x == x) || (lo_open ? x <= lo : x < lo) || x > hi) {
        fail_answer(a, 422, "invalid_parameter", "%s must be a number in %s%g, %g]", name, lo_open ? "(" : "[", lo,
                    hi);
        return -1;
    }
    *out = x;
    return 0;
}

/* 1 when DIR/NAME/FILE or its .gz exists; path gets the raw name. */
static int data_file_exists(const char *dir, const char *name, const char *file, char *path, size_t len) {
    struct stat st;
    snprintf(path, len, "%s/%s/%s", dir, name, file);
    if (stat(path, &st) == 0) return 1;
    char gz[4200];
    snprintf(gz, sizeof gz, "%s.gz", path);
    return stat(gz, &st) == 0;
}

int srv_jobs_validate(const char *body, size_t len, const char *data_dir, srv_jobs_answer *a) {
    return srv_jobs_validate_memory(body, len, data_dir, 0, 1, a);
}

int srv_jobs_validate_memory(const char *body, size_t len, const char *data_dir, long long train_budget,
                             int threads, srv_jobs_answer *a) {
    memset(a, 0, sizeof *a);
    cJSON *in = cJSON_ParseWithLength(body, len);
    if (in == NULL || !cJSON_IsObject(in)) {
        cJSON_Delete(in);
        fail_answer(a, 400, "invalid_json",
                    "the body must be a JSON object with the job's fields (%s); Content-Type: application/json",
                    FIELDS);
        return -1;
    }
    int rc = -1;
    cJSON *out = cJSON_CreateObject();
    for (const cJSON *f = in->child; f != NULL; f = f->next) {
        if (f->string == NULL || strstr(FIELDS, f->string) == NULL || strchr(f->string, ',') != NULL ||
            strchr(f->string, ' ') != NULL || f->string[0] == '\0') {
            fail_answer(a, 422, "invalid_parameter", "unknown field \"%s\" (fields: %s)",
                        f->string != NULL ? f->string : "", FIELDS);
            goto done;
        }
        /* strstr above also matches substrings such as "epoch": check exactly. */
        char key[64];
        snprintf(key, sizeof key, "%s", f->string);
        const char *p = strstr(FIELDS, key);
        size_t kl = strlen(key);
        int exact = 0;
        while (p != NULL && !exact) {
            exact = (p == FIELDS || p[-1] == ' ') && (p[kl] == ',' || p[kl] == '\0');
            p = strstr(p + 1, key);
        }
        if (!exact) {
            fail_answer(a, 422, "invalid_parameter", "unknown field \"%s\" (fields: %s)", key, FIELDS);
            goto done;
        }
    }
    const cJSON *ds = cJSON_GetObjectItemCaseSensitive(in, "dataset");
    if (ds == NULL) {
        fail_answer(a, 422, "invalid_parameter", "dataset is required: a data set name such as mnist or fashion-mnist");
        goto done;
    }
    if (!cJSON_IsString(ds) || !srv_model_name_valid(ds->valuestring) || strcmp(ds->valuestring, "..") == 0) {
        fail_answer(a, 422, "invalid_parameter",
                    "dataset must be a data set name: 1 to 64 characters of [A-Za-z0-9._-], not starting with '.'");
        goto done;
    }
    long long epochs = 10, batch = 64, seed = 0, limit = 0, eval_limit = DEFAULT_EVAL_LIMIT;
    double lr = 1e-3, wd = 1e-5;
    if (int_field(in, "epochs", 1, 10000, &epochs, a) || int_field(in, "batch_size", 1, 65536, &batch, a) ||
        num_field(in, "learning_rate", 0, 1, 1, &lr, a) || num_field(in, "weight_decay", 0, 0, 1, &wd, a) ||
        int_field(in, "seed", 0, 9007199254740991LL, &seed, a) ||
        int_field(in, "train_limit", 0, 2147483647LL, &limit, a) ||
        int_field(in, "eval_limit", 0, 2147483647LL, &eval_limit, a))
        goto done;
    const char *noise_text = "gaussian:0.5";
    const cJSON *nz = cJSON_GetObjectItemCaseSensitive(in, "noise");
    dae_noise_spec noise;
    char err[DAE_ERR_LEN] = "";
    if (nz != NULL) {
        if (!cJSON_IsString(nz)) {
            fail_answer(a, 422, "invalid_parameter",
                        "noise must be a string: gaussian:S[:clip][:quantize], salt-pepper:P or speckle:S");
            goto done;
        }
        noise_text = nz->valuestring;
    }
    if (strlen(noise_text) > 64 || dae_noise_parse(noise_text, &noise, err, sizeof err) != DAE_OK) {
        fail_answer(a, 422, "invalid_parameter", "noise: %s", err[0] ? err : "too long");
        goto done;
    }
    char noise_canon[DAE_NOISE_TEXT_LEN];
    dae_noise_format(&noise, noise_canon, sizeof noise_canon);
    const cJSON *mn = cJSON_GetObjectItemCaseSensitive(in, "model_name");
    if (mn != NULL && (!cJSON_IsString(mn) || !srv_model_name_valid(mn->valuestring))) {
        fail_answer(a, 422, "invalid_parameter",
                    "model_name must be 1 to 64 characters of [A-Za-z0-9._-], not starting with '.'");
        goto done;
    }
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(in, "activate");
    if (act != NULL && !cJSON_IsBool(act)) {
        fail_answer(a, 422, "invalid_parameter", "activate must be true or false");
        goto done;
    }
    const cJSON *rep = cJSON_GetObjectItemCaseSensitive(in, "replace");
    if (rep != NULL && !cJSON_IsBool(rep)) {
        fail_answer(a, 422, "invalid_parameter",
                    "replace must be true or false (true: the job may replace a model of its name that is not active)");
        goto done;
    }
    const cJSON *arch = cJSON_GetObjectItemCaseSensitive(in, "architecture");
    char *spec = NULL;
    if (arch != NULL) {
        if (cJSON_IsString(arch)) spec = strdup(arch->valuestring);
        else if (cJSON_IsObject(arch) || cJSON_IsArray(arch)) spec = cJSON_PrintUnformatted(arch);
        if (spec == NULL) {
            fail_answer(a, 422, "invalid_parameter", "architecture must be an architecture spec (a JSON object)");
            goto done;
        }
        dae_model m;
        dae_status st = dae_model_init(&m, spec, err, sizeof err);
        if (st == DAE_OK && m.in_c != 1) {
            snprintf(err, sizeof err, "the input must have 1 channel, not %d", m.in_c);
            st = DAE_ERR_INVALID;
        }
        if (st == DAE_OK) {
            free(spec);
            spec = strdup(m.spec);
        }
        dae_model_free(&m);
        if (st != DAE_OK || spec == NULL) {
            free(spec);
            fail_answer(a, 422, "invalid_parameter", "architecture: %s", err);
            goto done;
        }
    }
    /* A last check by the engine itself (every range above is its own). */
    dae_train_config tc;
    dae_train_config_default(&tc);
    tc.epochs = (int)epochs, tc.batch_size = (int)batch, tc.learning_rate = (float)lr, tc.weight_decay = (float)wd;
    tc.seed = (uint64_t)seed, tc.threads = 1, tc.limit = (int)limit, tc.noise = noise, tc.eval_limit = (int)eval_limit;
    if (dae_train_config_check(&tc, err, sizeof err) != DAE_OK) {
        free(spec);
        fail_answer(a, 422, "invalid_parameter", "%s", err);
        goto done;
    }
    char path[4200];
    if (data_dir == NULL || !data_file_exists(data_dir, ds->valuestring, "train-images-idx3-ubyte", path, sizeof path) ||
        !data_file_exists(data_dir, ds->valuestring, "t10k-images-idx3-ubyte", path, sizeof path)) {
        free(spec);
        fail_answer(a, 422, "dataset_not_found", "data set \"%s\" not found: no %s[.gz] (the data directory is %s)",
                    ds->valuestring, path, data_dir != NULL ? data_dir : "not set");
        goto done;
    }
    /* The memory the run will take, from the data set's headers and the
     * engine's own arithmetic for the batch, against the training budget:
     * refused now rather than found out by the kernel's OOM killer. */
    if (train_budget > 0) {
        dae_dataset_info info;
        dae_model em = {0};
        if (dae_dataset_info_read(data_dir, ds->valuestring, &info, err, sizeof err) != DAE_OK ||
            dae_model_init(&em, spec != NULL ? spec : dae_model_default_spec(), err, sizeof err) != DAE_OK) {
            free(spec);
            fail_answer(a, 422, "invalid_dataset", "data set \"%s\": %s", ds->valuestring, err);
            goto done;
        }
        tc.threads = threads;
        tc.eval_each_epoch = eval_limit > 0;
        int n_train = limit > 0 && limit < info.train_count ? (int)limit : info.train_count;
        long long need = (long long)(info.bytes + dae_train_memory_bytes(&em, &tc, n_train) +
                                     sizeof(float) * em.n_params);
        dae_model_free(&em);
        if (need > train_budget) {
            free(spec);
            fail_answer(a, 422, "train_memory_budget",
                        "this job needs an estimated %lld bytes (%.0f MiB: data set %.0f MiB, batches of %d "
                        "images on %d thread%s), over the training memory budget of %lld bytes (%.0f MiB, "
                        "--train-memory-budget); use a smaller batch_size or train_limit",
                        need, need / 1048576.0, info.bytes / 1048576.0,
                        (int)(batch < n_train ? batch : n_train), threads, threads == 1 ? "" : "s", train_budget, train_budget / 1048576.0);
            goto done;
        }
    }
    cJSON_AddStringToObject(out, "dataset", ds->valuestring);
    cJSON_AddNumberToObject(out, "epochs", (double)epochs);
    cJSON_AddNumberToObject(out, "batch_size", (double)batch);
    cJSON_AddNumberToObject(out, "learning_rate", lr);
    cJSON_AddNumberToObject(out, "weight_decay", wd);
    cJSON_AddStringToObject(out, "noise", noise_canon);
    cJSON_AddNumberToObject(out, "seed", (double)seed);
    cJSON_AddNumberToObject(out, "train_limit", (double)limit);
    cJSON_AddNumberToObject(out, "eval_limit", (double)eval_limit);
    if (mn != NULL) cJSON_AddStringToObject(out, "model_name", mn->valuestring);
    cJSON_AddBoolToObject(out, "activate", act != NULL && cJSON_IsTrue(act));
    cJSON_AddBoolToObject(out, "replace", rep != NULL && cJSON_IsTrue(rep));
    if (spec != NULL) {
        cJSON *s = cJSON_Parse(spec);
        if (s != NULL) cJSON_AddItemToObject(out, "architecture", s);
        free(spec);
    }
    a->json = cJSON_PrintUnformatted(out);
    if (a->json == NULL) {
        fail_answer(a, 500, "internal_error", "out of memory");
        goto done;
    }
    a->status = 200;
    rc = 0;
done:
    cJSON_Delete(in);
    cJSON_Delete(out);
    return rc;
}

/* ------------------------------------------------------------ JSON and records */

static const char *req_str(const job *jb, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(jb->request, key);
    return cJSON_IsString(v) ? v->valuestring : "";
}

static double req_num(const job *jb, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(jb->request, key);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

/* The job as JSON (called with the jobs' lock held). */
static cJSON *job_json(const job *jb) {
    cJSON *o = cJSON_CreateObject();
    if (o == NULL) return NULL;
    cJSON_AddStringToObject(o, "id", jb->id);
    cJSON_AddStringToObject(o, "state", STATE_NAMES[jb->state]);
    cJSON_AddNumberToObject(o, "progress", jb->progress);
    cJSON_AddNumberToObject(o, "epoch", jb->epoch);
    cJSON_AddNumberToObject(o, "epochs", jb->epochs);
    cJSON_AddNumberToObject(o, "step", (double)jb->step);
    cJSON_AddNumberToObject(o, "steps_per_epoch", (double)jb->steps_per_epoch);
    cJSON_AddNumberToObject(o, "total_steps", (double)jb->total_steps);
    cJSON_AddNumberToObject(o, "loss", jb->loss);
    cJSON_AddNumberToObject(o, "images_per_second", round(jb->images_per_s * 10) / 10);
    cJSON_AddNumberToObject(o, "elapsed_seconds", round(jb->elapsed_s * 1000) / 1000);
    if (jb->state == ST_RUNNING && jb->eta_s >= 0) cJSON_AddNumberToObject(o, "eta_seconds", round(jb->eta_s * 10) / 10);
    else cJSON_AddNullToObject(o, "eta_seconds");
    cJSON *hist = cJSON_AddArrayToObject(o, "history");
    for (int i = 0; hist != NULL && i < jb->n_history; i++) {
        const epoch_rec *e = &jb->history[i];
        cJSON *h = cJSON_CreateObject();
        if (h == NULL) break;
        cJSON_AddNumberToObject(h, "epoch", i + 1);
        cJSON_AddNumberToObject(h, "loss", e->loss);
        cJSON_AddNumberToObject(h, "seconds", round(e->seconds * 1000) / 1000);
        if (e->has_test) {
            cJSON_AddNumberToObject(h, "test_mse", e->mse);
            cJSON_AddNumberToObject(h, "test_psnr", e->psnr);
            cJSON_AddNumberToObject(h, "test_ssim", e->ssim);
        }
        cJSON_AddItemToArray(hist, h);
    }
    if (jb->error[0] != '\0') cJSON_AddStringToObject(o, "error", jb->error);
    else cJSON_AddNullToObject(o, "error");
    cJSON_AddStringToObject(o, "model", jb->model_name);
    if (jb->model_version[0] != '\0') cJSON_AddStringToObject(o, "model_version", jb->model_version);
    cJSON_AddBoolToObject(o, "activated", jb->activated);
    cJSON_AddStringToObject(o, "created", jb->created);
    if (jb->started[0] != '\0') cJSON_AddStringToObject(o, "started", jb->started);
    if (jb->finished[0] != '\0') cJSON_AddStringToObject(o, "finished", jb->finished);
    cJSON_AddItemToObject(o, "request", cJSON_Duplicate(jb->request, 1));
    cJSON *links = cJSON_AddObjectToObject(o, "links");
    if (links != NULL) {
        char buf[96];
        snprintf(buf, sizeof buf, "/train/%s", jb->id);
        cJSON_AddStringToObject(links, "self", buf);
        snprintf(buf, sizeof buf, "/train/%s/events", jb->id);
        cJSON_AddStringToObject(links, "events", buf);
        snprintf(buf, sizeof buf, "/models/%s", jb->model_name);
        cJSON_AddStringToObject(links, "model", buf);
    }
    return o;
}

static char *job_text(const job *jb) {
    cJSON *o = job_json(jb);
    if (o == NULL) return NULL;
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

/* Writes the job's record STATE_DIR/ID.json atomically (called with the
 * lock held; records are small). Failures are logged, not fatal. */
static void job_persist(srv_jobs *js, const job *jb) {
    if (js->abandoned) return; /* the record already says how the job ended */
    const char *dir = js->cfg->state_dir;
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        srv_log("warning: cannot make the state directory %s: %s", dir, strerror(errno));
        return;
    }
    char *text = job_text(jb);
    if (text == NULL) return;
    char path[4096], err[DAE_ERR_LEN];
    snprintf(path, sizeof path, "%s/%s.json", dir, jb->id);
    if (dae_file_write_atomic(path, text, strlen(text), err, sizeof err) != DAE_OK)
        srv_log("warning: cannot write the job record: %s", err);
    free(text);
}

static void job_free(job *jb) {
    if (jb == NULL) return;
    cJSON_Delete(jb->request);
    free(jb->history);
    free(jb);
}

/* A new job of the canonical request req (taken over); NULL if out of memory. */
static job *job_new(cJSON *req, const char *id) {
    job *jb = calloc(1, sizeof *jb);
    if (jb == NULL) {
        cJSON_Delete(req);
        return NULL;
    }
    jb->request = req;
    snprintf(jb->id, sizeof jb->id, "%s", id);
    jb->epochs = (int)req_num(jb, "epochs");
    if (jb->epochs < 1) jb->epochs = 1;
    jb->history = calloc((size_t)jb->epochs, sizeof *jb->history);
    if (jb->history == NULL) {
        job_free(jb);
        return NULL;
    }
    const char *mn = req_str(jb, "model_name");
    if (mn[0] != '\0') snprintf(jb->model_name, sizeof jb->model_name, "%s", mn);
    else snprintf(jb->model_name, sizeof jb->model_name, "%.40s-job%s", req_str(jb, "dataset"), id);
    jb->eta_s = -1;
    jb->version = 1;
    return jb;
}

/* Parses a job id: 1 to 12 decimal digits, no leading zero, at most
 * JOB_ID_MAX. Returns it, or 0 when the len bytes of text are not one. */
static unsigned long long parse_id(const char *text, size_t len) {
    if (len == 0 || len > 12 || text[0] == '0') return 0;
    unsigned long long v = 0;
    for (size_t i = 0; i < len; i++) {
        if (text[i] < '0' || text[i] > '9') return 0;
        v = v * 10 + (unsigned long long)(text[i] - '0');
    }
    return v <= JOB_ID_MAX ? v : 0;
}

/* The id of a record's file name "ID.json", or 0 when it is not one. */
static unsigned long long record_file_id(const char *fname) {
    size_t n = strlen(fname);
    if (n < 6 || strcmp(fname + n - 5, ".json") != 0) return 0;
    return parse_id(fname, n - 5);
}

/* Reads the optional number key of record o into *out when it is in
 * [lo, hi] (absent or null: *out unchanged). Returns 0, or -1 after
 * writing the reason into why. */
static int rec_num(const cJSON *o, const char *key, double lo, double hi, double *out, char *why, size_t whylen) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (v == NULL || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= lo && v->valuedouble <= hi)) {
        snprintf(why, whylen, "%s must be a number from %g to %g", key, lo, hi);
        return -1;
    }
    *out = v->valuedouble;
    return 0;
}

/* Copies the optional string key of record o into out (cap bytes) when it
 * is shorter than cap and, when allowed is not NULL, made only of those
 * characters. Returns 0, or -1 after writing the reason into why. */
static int rec_str(const cJSON *o, const char *key, const char *allowed, char *out, size_t cap, char *why,
                   size_t whylen) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (v == NULL || cJSON_IsNull(v)) return 0;
    if (!cJSON_IsString(v) || strlen(v->valuestring) >= cap ||
        (allowed != NULL && strspn(v->valuestring, allowed) != strlen(v->valuestring))) {
        snprintf(why, whylen, "%s must be a string of fewer than %zu characters%s%s", key, cap,
                 allowed != NULL ? " of " : "", allowed != NULL ? allowed : "");
        return -1;
    }
    snprintf(out, cap, "%s", v->valuestring);
    return 0;
}

/* Rebuilds a job from the record text (len bytes) of the state file
 * fname, checking it as POST /train checks a request: the file is ID.json
 * and the record's id is that ID; the state is one of the five; the
 * request passes srv_jobs_validate, and its canonical form is kept; the
 * model is the name that request makes; numbers are in range, strings
 * short and of the right characters. A request that is valid but can no
 * longer run here (its data set is gone, say) is kept, with the reason in
 * unrunnable (ulen bytes), for the caller to fail the job if it has not
 * run. data_dir, train_budget and threads are srv_jobs_validate_memory's.
 * Returns the job, or NULL with the reason in why. */
static job *job_from_record(const char *fname, const char *text, size_t len, const char *data_dir,
                            long long train_budget, int threads, char *unrunnable, size_t ulen, char *why,
                            size_t whylen) {
    static const char TIME_CHARS[] = "0123456789-:.TZ";
    unrunnable[0] = '\0';
    unsigned long long fid = record_file_id(fname);
    if (fid == 0) {
        snprintf(why, whylen, "the file name is not ID.json with an id from 1 to %llu", JOB_ID_MAX);
        return NULL;
    }
    cJSON *o = cJSON_ParseWithLength(text, len), *req = NULL;
    job *jb = NULL;
    if (o == NULL || !cJSON_IsObject(o)) {
        snprintf(why, whylen, "not a JSON object");
        goto fail;
    }
    if (!srv_utf8_valid(text, len)) { /* its strings go into JSON answers */
        snprintf(why, whylen, "not valid UTF-8");
        goto fail;
    }
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "id"), *st = cJSON_GetObjectItemCaseSensitive(o, "state");
    if (!cJSON_IsString(id) || parse_id(id->valuestring, strlen(id->valuestring)) != fid) {
        snprintf(why, whylen, "id must be \"%llu\", the file's name", fid);
        goto fail;
    }
    int state = -1;
    for (int i = 0; i < N_STATES && cJSON_IsString(st); i++)
        if (strcmp(st->valuestring, STATE_NAMES[i]) == 0) state = i;
    if (state < 0) {
        snprintf(why, whylen, "state must be queued, running, succeeded, failed or cancelled");
        goto fail;
    }
    const cJSON *rq = cJSON_GetObjectItemCaseSensitive(o, "request");
    char *rq_text = cJSON_IsObject(rq) ? cJSON_PrintUnformatted(rq) : NULL;
    if (rq_text == NULL) {
        snprintf(why, whylen, "request must be the job's request (a JSON object)");
        goto fail;
    }
    srv_jobs_answer a;
    int valid = srv_jobs_validate_memory(rq_text, strlen(rq_text), data_dir, train_budget, threads, &a) == 0;
    free(rq_text);
    if (valid) {
        req = cJSON_Parse(a.json);
        free(a.json);
        if (req == NULL) {
            snprintf(why, whylen, "out of memory");
            goto fail;
        }
    } else if (a.status == 400 || a.code == NULL || strcmp(a.code, "invalid_parameter") == 0 ||
               strcmp(a.code, "invalid_json") == 0) {
        snprintf(why, whylen, "request: %s", a.message);
        goto fail;
    } else {
        /* Every field passed; what fails is this server's present state. */
        snprintf(unrunnable, ulen, "%s", a.message);
        req = cJSON_Duplicate(rq, 1);
        const cJSON *mn = cJSON_GetObjectItemCaseSensitive(req, "model_name");
        if (mn != NULL && (!cJSON_IsString(mn) || !srv_model_name_valid(mn->valuestring))) {
            snprintf(why, whylen, "request: model_name is not a valid model name");
            goto fail;
        }
    }
    jb = job_new(req, id->valuestring);
    req = NULL;
    if (jb == NULL) {
        snprintf(why, whylen, "out of memory");
        goto fail;
    }
    if (!srv_model_name_valid(jb->model_name)) {
        snprintf(why, whylen, "its request makes no valid model name");
        goto fail;
    }
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "model");
    if (v != NULL && (!cJSON_IsString(v) || strcmp(v->valuestring, jb->model_name) != 0)) {
        snprintf(why, whylen, "model must be \"%s\", the name its request makes", jb->model_name);
        goto fail;
    }
    jb->state = (job_state)state;
    jb->replace = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(jb->request, "replace"));
    const double BIG = 9007199254740991.0; /* 2^53 - 1 */
    double epochs = jb->epochs, epoch = 0, step = 0, spe = 0, total = 0;
    if (rec_num(o, "epochs", epochs, epochs, &epochs, why, whylen) ||
        rec_num(o, "progress", 0, 1, &jb->progress, why, whylen) ||
        rec_num(o, "epoch", 0, jb->epochs, &epoch, why, whylen) || rec_num(o, "step", 0, BIG, &step, why, whylen) ||
        rec_num(o, "steps_per_epoch", 0, BIG, &spe, why, whylen) ||
        rec_num(o, "total_steps", 0, BIG, &total, why, whylen) ||
        rec_num(o, "loss", 0, DBL_MAX, &jb->loss, why, whylen) ||
        rec_num(o, "images_per_second", 0, DBL_MAX, &jb->images_per_s, why, whylen) ||
        rec_num(o, "elapsed_seconds", 0, DBL_MAX, &jb->elapsed_s, why, whylen) ||
        rec_str(o, "error", NULL, jb->error, sizeof jb->error, why, whylen) ||
        rec_str(o, "model_version", "sha256:0123456789abcdef", jb->model_version, sizeof jb->model_version, why,
                whylen) ||
        rec_str(o, "created", TIME_CHARS, jb->created, sizeof jb->created, why, whylen) ||
        rec_str(o, "started", TIME_CHARS, jb->started, sizeof jb->started, why, whylen) ||
        rec_str(o, "finished", TIME_CHARS, jb->finished, sizeof jb->finished, why, whylen))
        goto fail;
    jb->epoch = (int)epoch, jb->step = (long)step, jb->steps_per_epoch = (long)spe, jb->total_steps = (long)total;
    if (jb->model_version[0] != '\0' &&
        (strncmp(jb->model_version, "sha256:", 7) != 0 || strlen(jb->model_version) != 19 ||
         strspn(jb->model_version + 7, "0123456789abcdef") != 12)) {
        snprintf(why, whylen, "model_version must be sha256: and 12 hex digits");
        goto fail;
    }
    v = cJSON_GetObjectItemCaseSensitive(o, "activated");
    if (v != NULL && !cJSON_IsBool(v)) {
        snprintf(why, whylen, "activated must be true or false");
        goto fail;
    }
    jb->activated = cJSON_IsTrue(v);
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(o, "history"), *e;
    if (h != NULL && (!cJSON_IsArray(h) || cJSON_GetArraySize(h) > jb->epochs)) {
        snprintf(why, whylen, "history must be an array of at most %d epochs", jb->epochs);
        goto fail;
    }
    cJSON_ArrayForEach(e, h) {
        epoch_rec *r = &jb->history[jb->n_history++];
        double x = -1;
        if (!cJSON_IsObject(e) || rec_num(e, "loss", 0, DBL_MAX, &r->loss, why, whylen) ||
            rec_num(e, "seconds", 0, DBL_MAX, &r->seconds, why, whylen) ||
            rec_num(e, "test_mse", 0, DBL_MAX, &x, why, whylen) ||
            rec_num(e, "test_psnr", -DBL_MAX, DBL_MAX, &r->psnr, why, whylen) ||
            rec_num(e, "test_ssim", -1, 1, &r->ssim, why, whylen)) {
            if (!cJSON_IsObject(e)) snprintf(why, whylen, "history entries must be objects");
            goto fail;
        }
        r->has_test = x >= 0;
        r->mse = r->has_test ? x : 0;
    }
    cJSON_Delete(o);
    return jb;
fail:
    cJSON_Delete(o);
    cJSON_Delete(req);
    job_free(jb);
    return NULL;
}

int srv_jobs_record_check(const char *fname, const char *text, size_t len, const char *data_dir, char *why,
                          size_t whylen) {
    char unrunnable[sizeof ((srv_jobs_answer *)0)->message];
    job *jb = job_from_record(fname, text, len, data_dir, 0, 1, unrunnable, sizeof unrunnable, why, whylen);
    if (jb == NULL) return -1;
    job_free(jb);
    return 0;
}

static int by_id(const void *a, const void *b) {
    unsigned long long x = strtoull((*(job *const *)a)->id, NULL, 10), y = strtoull((*(job *const *)b)->id, NULL, 10);
    return x < y ? -1 : x > y;
}

/* Ends a job that can no longer run (lock held or not yet shared):
 * failed with reason why, recorded. */
static void fail_loaded(srv_jobs *js, job *jb, const char *why) {
    jb->state = ST_FAILED;
    snprintf(jb->error, sizeof jb->error, "%s", why);
    if (jb->finished[0] == '\0') srv_utc_now(jb->finished, sizeof jb->finished);
    jb->eta_s = -1;
    job_persist(js, jb);
    srv_log("job %s: failed: %s", jb->id, why);
}

/* Reads every record of the state directory into js at start. The state
 * directory belongs to this server: every temporary file in it is left
 * from a write that was interrupted, and is removed; the job whose record
 * it was rewriting was being started or ended, so if its record still
 * says queued it is failed ("interrupted"), never run again, as is a job
 * whose record says running. A record that is not valid is skipped with
 * a log line, and its id is never given again. */
static void load_records(srv_jobs *js) {
    const char *dir = js->cfg->state_dir;
    DIR *d = opendir(dir);
    if (d == NULL) return;
    unsigned long long *torn = NULL, max_id = 0;
    int n_torn = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        const char *t = strstr(e->d_name, ".tmp.");
        if (t == NULL || e->d_name[0] == '.') continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        if (unlink(path) != 0) continue;
        srv_log("removed %s, left by an interrupted write", path);
        unsigned long long id = t - e->d_name > 5 && strncmp(t - 5, ".json", 5) == 0
                                    ? parse_id(e->d_name, (size_t)(t - 5 - e->d_name))
                                    : 0;
        unsigned long long *grown = id > 0 ? realloc(torn, sizeof *torn * (size_t)(n_torn + 1)) : NULL;
        if (grown != NULL) torn = grown, torn[n_torn++] = id;
    }
    rewinddir(d);
    while ((e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        if (e->d_name[0] == '.' || n < 6 || strcmp(e->d_name + n - 5, ".json") != 0 || strstr(e->d_name, ".tmp."))
            continue;
        char path[4096], why[DAE_ERR_LEN + 800] = "", unrunnable[sizeof ((srv_jobs_answer *)0)->message];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unsigned long long fid = record_file_id(e->d_name);
        if (fid > max_id) max_id = fid; /* even a bad record's id is never given again */
        uint8_t *text = NULL;
        size_t len = 0;
        job *jb = NULL;
        struct stat st;
        if (lstat(path, &st) != 0 || !S_ISREG(st.st_mode)) /* a FIFO would block the start, a link lead elsewhere */
            snprintf(why, sizeof why, "not a regular file");
        else if (dae_file_read(path, RECORD_MAX_BYTES, &text, &len, why, sizeof why) == DAE_OK)
            jb = job_from_record(e->d_name, (const char *)text, len, js->cfg->data_dir, js->cfg->train_memory_budget,
                                 js->cfg->train_threads, unrunnable, sizeof unrunnable, why, sizeof why);
        free(text);
        if (jb == NULL) {
            srv_log("warning: %s is not a valid job record (%s): skipped", path, why);
            continue;
        }
        job **grown = realloc(js->all, sizeof *grown * (size_t)(js->n + 1));
        if (grown == NULL) {
            job_free(jb);
            break;
        }
        js->all = grown;
        js->all[js->n++] = jb;
        int was_torn = 0;
        for (int i = 0; i < n_torn; i++) was_torn |= torn[i] == fid;
        if (jb->state == ST_RUNNING) {
            fail_loaded(js, jb, "interrupted: the server stopped while the job was running");
        } else if (jb->state == ST_QUEUED && was_torn) {
            fail_loaded(js, jb, "interrupted: the server stopped while the job was being started or cancelled");
        } else if (jb->state == ST_QUEUED && unrunnable[0] != '\0') {
            char reason[sizeof jb->error];
            snprintf(reason, sizeof reason, "cannot run after the restart: %.400s", unrunnable);
            fail_loaded(js, jb, reason);
        }
    }
    closedir(d);
    free(torn);
    js->next_id = max_id + 1;
    if (js->n > 1) qsort(js->all, (size_t)js->n, sizeof *js->all, by_id);
}

/* Removes the temporaries of interrupted writes from the models directory
 * (NAME.safetensors.tmp.PID.X, ACTIVE.tmp.PID.X). The directory may be
 * shared with other replicas, so a temporary is removed only when its
 * writer is gone (its pid is no process here), or nobody has touched it
 * for STALE_TEMP_S seconds (a pid may name a process of another machine
 * or container). */
static void remove_stale_temps(const char *dir) {
    DIR *d = opendir(dir);
    if (d == NULL) return;
    struct dirent *e;
    time_t now = time(NULL);
    while ((e = readdir(d)) != NULL) {
        long pid = dae_file_temp_pid(e->d_name);
        if (pid <= 0 || e->d_name[0] == '.') continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(path, &st) != 0 || !S_ISREG(st.st_mode)) continue;
        int gone = pid != (long)getpid() && kill((pid_t)pid, 0) != 0 && errno == ESRCH;
        if ((gone || now - st.st_mtime >= STALE_TEMP_S) && unlink(path) == 0)
            srv_log("removed %s, left by an interrupted write", path);
    }
    closedir(d);
}

/* ------------------------------------------------------------ streams */

/* Marks a change of jb and wakes its streams (lock held). */
static void notify(srv_jobs *js, job *jb) {
    jb->version++;
    jb->last_notify = dae_now_s();
    srv_job_stream **p = &js->waiters;
    while (*p != NULL) {
        srv_job_stream *s = *p;
        if (s->job == jb || js->streams_ended) {
            *p = s->next;
            struct MHD_Connection *c = s->waiting;
            s->waiting = NULL;
            s->next = NULL;
            MHD_resume_connection(c);
        } else {
            p = &s->next;
        }
    }
    pthread_cond_broadcast(&js->cv);
}

void srv_jobs_end_streams(srv_jobs *js) {
    if (js == NULL) return;
    pthread_mutex_lock(&js->mu);
    js->streams_ended = 1;
    while (js->waiters != NULL) {
        srv_job_stream *s = js->waiters;
        js->waiters = s->next;
        struct MHD_Connection *c = s->waiting;
        s->waiting = NULL;
        s->next = NULL;
        MHD_resume_connection(c);
    }
    pthread_mutex_unlock(&js->mu);
}

static job *find_job(srv_jobs *js, const char *id) {
    for (int i = 0; i < js->n; i++)
        if (strcmp(js->all[i]->id, id) == 0) return js->all[i];
    return NULL;
}

srv_job_stream *srv_jobs_stream_open(srv_jobs *js, const char *id) {
    pthread_mutex_lock(&js->mu);
    job *jb = find_job(js, id);
    srv_job_stream *s = jb != NULL ? calloc(1, sizeof *s) : NULL;
    if (s != NULL) s->jobs = js, s->job = jb;
    pthread_mutex_unlock(&js->mu);
    return s;
}

static int finished(const job *jb) { return jb->state >= ST_SUCCEEDED; }

ssize_t srv_jobs_stream_read(srv_job_stream *s, void *conn, char *buf, size_t max) {
    srv_jobs *js = s->jobs;
    pthread_mutex_lock(&js->mu);
    ssize_t ret = 0;
    if (s->ended) {
        free(s->pending);
        s->pending = NULL;
    }
    if (s->pending == NULL && !s->done_sent && !s->ended && s->seen != s->job->version) {
        char *text = job_text(s->job);
        int done = finished(s->job);
        if (text != NULL && !srv_utf8_valid(text, strlen(text))) {
            /* Strings from records and files must not break the stream's JSON. */
            char *fixed = srv_utf8_fix(text, strlen(text), NULL);
            free(text);
            text = fixed;
        }
        if (text != NULL) {
            size_t n = strlen(text) + 64;
            s->pending = malloc(n);
            if (s->pending != NULL)
                s->pending_len = (size_t)snprintf(s->pending, n, "event: %s\ndata: %s\n\n", done ? "done" : "progress",
                                                  text);
            s->pending_off = 0;
        }
        free(text);
        s->seen = s->job->version;
        if (done) s->done_sent = 1;
    }
    if (s->pending != NULL) {
        size_t n = s->pending_len - s->pending_off;
        if (n > max) n = max;
        memcpy(buf, s->pending + s->pending_off, n);
        s->pending_off += n;
        if (s->pending_off == s->pending_len) {
            free(s->pending);
            s->pending = NULL;
        }
        ret = (ssize_t)n;
    } else if (s->done_sent || js->streams_ended || s->ended) {
        ret = (ssize_t)MHD_CONTENT_READER_END_OF_STREAM;
    } else {
        /* Nothing new: park the connection until the job changes. */
        s->waiting = conn;
        s->next = js->waiters;
        js->waiters = s;
        MHD_suspend_connection(conn);
        ret = 0;
    }
    pthread_mutex_unlock(&js->mu);
    return ret;
}

void srv_jobs_stream_kick(srv_job_stream *s) {
    srv_jobs *js = s->jobs;
    pthread_mutex_lock(&js->mu);
    s->ended = 1;
    for (srv_job_stream **p = &js->waiters; *p != NULL; p = &(*p)->next)
        if (*p == s) {
            *p = s->next;
            s->next = NULL;
            struct MHD_Connection *c = s->waiting;
            s->waiting = NULL;
            MHD_resume_connection(c);
            break;
        }
    pthread_mutex_unlock(&js->mu);
}

void srv_jobs_stream_close(srv_job_stream *s) {
    if (s == NULL) return;
    srv_jobs *js = s->jobs;
    pthread_mutex_lock(&js->mu);
    for (srv_job_stream **p = &js->waiters; *p != NULL; p = &(*p)->next)
        if (*p == s) {
            *p = s->next;
            break;
        }
    pthread_mutex_unlock(&js->mu);
    free(s->pending);
    free(s);
}

/* ------------------------------------------------------------ the runner */

typedef struct {
    srv_jobs *js;
    job *jb;
    long last_total;
} run_ctx;

/* dae_train's progress callback, on the training thread. */
static void on_progress(const dae_train_progress *p, void *user) {
    run_ctx *c = user;
    srv_jobs *js = c->js;
    job *jb = c->jb;
    pthread_mutex_lock(&js->mu);
    jb->epoch = p->epoch;
    jb->step = p->step;
    jb->steps_per_epoch = p->steps_per_epoch;
    jb->total_steps = p->total_steps;
    jb->loss = p->loss;
    jb->images_per_s = p->images_per_s;
    jb->elapsed_s = p->elapsed_s;
    long run_steps = (long)p->epochs * p->steps_per_epoch;
    long done = (long)(p->epoch - 1) * p->steps_per_epoch + p->step;
    jb->progress = run_steps > 0 ? (double)done / (double)run_steps : 1.0;
    if (jb->progress > 1) jb->progress = 1;
    jb->eta_s = done > 0 ? p->elapsed_s / (double)done * (double)(run_steps - done) : -1;
    js->steps_total += (unsigned long long)(p->total_steps - c->last_total);
    c->last_total = p->total_steps;
    js->cur_epoch = p->epoch;
    js->cur_loss = p->loss;
    js->cur_images_per_s = p->images_per_s;
    if (p->epoch_done && p->epoch >= 1 && p->epoch <= jb->epochs) {
        epoch_rec *e = &jb->history[p->epoch - 1];
        e->loss = p->epoch_loss;
        e->seconds = p->elapsed_s - jb->last_epoch_end;
        jb->last_epoch_end = p->elapsed_s;
        e->has_test = p->has_test;
        e->mse = p->test_mse, e->psnr = p->test_psnr, e->ssim = p->test_ssim;
        if (jb->n_history < p->epoch) jb->n_history = p->epoch;
        job_persist(js, jb);
    }
    if (p->epoch_done || dae_now_s() - jb->last_notify >= NOTIFY_EVERY_S) notify(js, jb);
    pthread_mutex_unlock(&js->mu);
}

/* Trains jb and writes its model. Returns the final state; fills
 * jb->error (without the lock: only the runner writes it meanwhile). */
static job_state run_job(srv_jobs *js, job *jb, char *error, size_t errlen) {
    const srv_config *cfg = js->cfg;
    char err[DAE_ERR_LEN] = "";
    dae_dataset data;
    dae_model m = {0};
    dae_train_state state = {0};
    job_state result = ST_FAILED;
    const char *dataset = req_str(jb, "dataset");
    int active = 0;
    if (srv_registry_name_taken(js->registry, jb->model_name, &active) && (!jb->replace || active)) {
        if (active) snprintf(error, errlen, "model name taken: \"%s\" is the active model, which a job never replaces",
                             jb->model_name);
        else snprintf(error, errlen, "model name taken: a model named \"%s\" exists (and replace is false)",
                      jb->model_name);
        return ST_FAILED;
    }
    if (dae_dataset_load(cfg->data_dir, dataset, &data, err, sizeof err) != DAE_OK) {
        snprintf(error, errlen, "data set %s: %s", dataset, err);
        return ST_FAILED;
    }
    const cJSON *arch = cJSON_GetObjectItemCaseSensitive(jb->request, "architecture");
    char *spec = arch != NULL ? cJSON_PrintUnformatted(arch) : NULL;
    dae_status st = dae_model_init(&m, spec != NULL ? spec : dae_model_default_spec(), err, sizeof err);
    free(spec);
    uint64_t seed = (uint64_t)req_num(jb, "seed");
    dae_train_config tc;
    dae_train_config_default(&tc);
    tc.epochs = jb->epochs;
    tc.batch_size = (int)req_num(jb, "batch_size");
    tc.learning_rate = (float)req_num(jb, "learning_rate");
    tc.weight_decay = (float)req_num(jb, "weight_decay");
    tc.seed = seed;
    tc.threads = cfg->train_threads;
    tc.limit = (int)req_num(jb, "train_limit");
    tc.eval_each_epoch = 1;
    tc.eval_limit = (int)req_num(jb, "eval_limit");
    if (tc.eval_limit == 0) tc.eval_each_epoch = 0;
    tc.progress_every = 1;
    tc.cancel = &jb->cancel;
    run_ctx ctx = {js, jb, 0};
    tc.progress = on_progress;
    tc.user = &ctx;
    if (st == DAE_OK) st = dae_noise_parse(req_str(jb, "noise"), &tc.noise, err, sizeof err);
    if (st != DAE_OK) {
        snprintf(error, errlen, "%s", err);
        goto done;
    }
    const dae_idx_images *train = &data.train_images;
    if (m.in_c != 1 || m.in_h != train->rows || m.in_w != train->cols) {
        snprintf(error, errlen, "the model takes %dx%dx%d images, data set %s has %dx%d gray images", m.in_c, m.in_h,
                 m.in_w, dataset, train->rows, train->cols);
        goto done;
    }
    dae_model_init_params(&m, seed);
    if (dae_train_state_init(&state, &m, &tc, err, sizeof err) != DAE_OK) {
        snprintf(error, errlen, "%s", err);
        goto done;
    }
    double t0 = dae_now_s();
    st = dae_train(&m, &state, &data, &tc, err, sizeof err);
    double seconds = dae_now_s() - t0;
    if (st == DAE_ERR_CANCELLED) {
        result = ST_CANCELLED;
        goto done;
    }
    if (st != DAE_OK) {
        snprintf(error, errlen, "training: %s", err);
        goto done;
    }
    /* The metadata set of `dae train`, plus the job's id. */
    int n_train = tc.limit > 0 && tc.limit < train->count ? tc.limit : train->count;
    pthread_mutex_lock(&js->mu);
    epoch_rec last = jb->n_history > 0 ? jb->history[jb->n_history - 1] : (epoch_rec){0};
    int has_loss = jb->n_history > 0;
    pthread_mutex_unlock(&js->mu);
    const dae_idx_images *test = &data.test_images;
    dae_train_facts facts = {
        .dataset = dataset, .program_version = DAE_SERVER_VERSION, .train_images = n_train,
        .threads = tc.threads, .seconds = seconds, .has_loss = has_loss, .final_loss = last.loss,
        .test_images = !last.has_test ? 0
                       : tc.eval_limit > 0 && tc.eval_limit < test->count ? tc.eval_limit : test->count,
        .test_mse = last.mse, .test_psnr = last.psnr, .test_ssim = last.ssim,
    };
    dae_train_meta meta;
    dae_train_meta_init(&meta, &tc, &state, &facts);
    dae_train_meta_add(&meta, "train_job", jb->id);
    /* The model goes to a temporary name first (the pid in it lets a later
     * start remove it if this process dies) and reaches its own name only
     * past the commit point below. */
    char path[4096], tmp[4200];
    mkdir(cfg->models_dir, 0755);
    snprintf(path, sizeof path, "%s/%s.safetensors", cfg->models_dir, jb->model_name);
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld.job%s", path, (long)getpid(), jb->id);
    if (atomic_load(&jb->cancel)) {
        result = ST_CANCELLED;
        goto done;
    }
    if (dae_model_save(&m, tmp, meta.keys, meta.values, meta.n, err, sizeof err) != DAE_OK) {
        snprintf(error, errlen, "saving the model: %s", err);
        goto done;
    }
    /* The commit point: a cancel that came before it wins (the job ends
     * cancelled, its model is never seen); one after it is refused with
     * 409 (srv_jobs_cancel reads committed under the same lock). */
    pthread_mutex_lock(&js->mu);
    int cancelled = atomic_load(&jb->cancel);
    if (!cancelled) jb->committed = 1;
    pthread_mutex_unlock(&js->mu);
    if (cancelled) {
        unlink(tmp);
        result = ST_CANCELLED;
        goto done;
    }
    srv_reg_status rs = srv_registry_install(js->registry, jb->model_name, tmp, jb->replace, err, sizeof err);
    if (rs != SRV_REG_OK) {
        unlink(tmp);
        snprintf(error, errlen, "%s: %s",
                 rs == SRV_REG_EXISTS || rs == SRV_REG_ACTIVE ? "model name taken" : "installing the model", err);
        goto done;
    }
    srv_model *nm = srv_registry_acquire(js->registry, jb->model_name);
    if (nm != NULL) {
        pthread_mutex_lock(&js->mu);
        snprintf(jb->model_version, sizeof jb->model_version, "%s", nm->version);
        pthread_mutex_unlock(&js->mu);
        srv_model_release(nm);
    }
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(jb->request, "activate"))) {
        if (srv_registry_activate(js->registry, jb->model_name, err, sizeof err) != SRV_REG_OK) {
            snprintf(error, errlen, "activating the new model: %s", err);
            goto done;
        }
        pthread_mutex_lock(&js->mu);
        jb->activated = 1;
        pthread_mutex_unlock(&js->mu);
    }
    srv_log("job %s: model %s written to %s (%.1f s)", jb->id, jb->model_name, path, seconds);
    result = ST_SUCCEEDED;
done:
    dae_train_state_free(&state);
    dae_model_free(&m);
    dae_dataset_free(&data);
    return result;
}

static void *runner(void *arg) {
    srv_jobs *js = arg;
    pthread_mutex_lock(&js->mu);
    for (;;) {
        job *jb = NULL;
        while (!js->stopping) {
            for (int i = 0; i < js->n && jb == NULL; i++)
                if (js->all[i]->state == ST_QUEUED) jb = js->all[i];
            if (jb != NULL) break;
            pthread_cond_wait(&js->cv, &js->mu);
        }
        if (js->stopping) break;
        jb->state = ST_RUNNING;
        jb->committed = 0;
        srv_utc_now(jb->started, sizeof jb->started);
        job_persist(js, jb);
        notify(js, jb);
        srv_log("job %s: training %s for %d epochs into model %s", jb->id, req_str(jb, "dataset"), jb->epochs,
                jb->model_name);
        pthread_mutex_unlock(&js->mu);
        char error[sizeof jb->error] = "";
        job_state result = run_job(js, jb, error, sizeof error);
        pthread_mutex_lock(&js->mu);
        if (js->abandoned) break; /* shutdown recorded it and stopped waiting */
        if (jb->cancel_asked && result != ST_SUCCEEDED) { /* DELETE answered 202 */
            result = ST_CANCELLED;
            error[0] = '\0';
        }
        if (result == ST_CANCELLED && js->stopping && !jb->cancel_asked) {
            result = ST_FAILED;
            snprintf(error, sizeof error, "interrupted: the server shut down during the job");
        }
        jb->state = result;
        snprintf(jb->error, sizeof jb->error, "%s", error);
        if (result == ST_SUCCEEDED) jb->progress = 1;
        jb->eta_s = -1;
        srv_utc_now(jb->finished, sizeof jb->finished);
        js->finished[result]++;
        job_persist(js, jb);
        notify(js, jb);
        srv_log("job %s: %s%s%s", jb->id, STATE_NAMES[result], error[0] ? ": " : "", error);
    }
    pthread_mutex_unlock(&js->mu);
    return NULL;
}

/* ------------------------------------------------------------ the API */

srv_jobs *srv_jobs_start(const srv_config *cfg, srv_registry *registry, char *err, size_t errlen) {
    srv_jobs *js = calloc(1, sizeof *js);
    if (js == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    js->cfg = cfg;
    js->registry = registry;
    js->next_id = 1; /* load_records raises it past every record */
    pthread_mutex_init(&js->mu, NULL);
    pthread_cond_init(&js->cv, NULL);
    if (cfg->models_dir != NULL) remove_stale_temps(cfg->models_dir);
    load_records(js);
    if (pthread_create(&js->runner, NULL, runner, js) != 0) {
        snprintf(err, errlen, "cannot start the training thread");
        srv_jobs_free(js);
        return NULL;
    }
    js->runner_started = 1;
    return js;
}

void srv_jobs_quiesce(srv_jobs *js) {
    if (js == NULL) return;
    pthread_mutex_lock(&js->mu);
    js->stopping = 1;
    for (int i = 0; i < js->n; i++)
        if (js->all[i]->state == ST_RUNNING) atomic_store(&js->all[i]->cancel, 1);
    pthread_cond_broadcast(&js->cv);
    pthread_mutex_unlock(&js->mu);
}

int srv_jobs_stop(srv_jobs *js, double seconds) {
    if (js == NULL) return 0;
    srv_jobs_quiesce(js);
    int rc = 0;
    if (js->runner_started) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        if (seconds < 0) seconds = 0;
        until.tv_sec += (time_t)seconds;
        until.tv_nsec += (long)((seconds - floor(seconds)) * 1e9);
        if (until.tv_nsec >= 1000000000L) until.tv_sec++, until.tv_nsec -= 1000000000L;
        rc = pthread_timedjoin_np(js->runner, NULL, &until) == 0 ? 0 : -1;
    }
    if (rc != 0) {
        /* The running job is inside one long step: record it interrupted
         * now and let the process end without it. */
        pthread_mutex_lock(&js->mu);
        for (int i = 0; i < js->n; i++)
            if (js->all[i]->state == ST_RUNNING) {
                job *jb = js->all[i];
                jb->state = ST_FAILED;
                snprintf(jb->error, sizeof jb->error, "interrupted: the server shut down during the job");
                srv_utc_now(jb->finished, sizeof jb->finished);
                jb->eta_s = -1;
                job_persist(js, jb);
                notify(js, jb);
                srv_log("job %s: failed: interrupted (shutdown did not wait for its training step)", jb->id);
            }
        js->abandoned = 1;
        pthread_mutex_unlock(&js->mu);
    } else {
        js->runner_started = 0;
    }
    srv_jobs_end_streams(js);
    return rc;
}

void srv_jobs_free(srv_jobs *js) {
    if (js == NULL) return;
    for (int i = 0; i < js->n; i++) job_free(js->all[i]);
    free(js->all);
    pthread_mutex_destroy(&js->mu);
    pthread_cond_destroy(&js->cv);
    free(js);
}

/* Checks that the model req would write is free (lock held): no model of
 * its name exists, or the request asks to replace one that is not active;
 * no queued or running job writes that name. A request without a
 * model_name gets DATASET-jobID, and ids whose such name is taken are
 * passed over. Returns 1, or 0 after filling a with the 409 to give (or
 * with nothing when the ids ran out). */
static int name_free_for(srv_jobs *js, const cJSON *req, srv_jobs_answer *a) {
    const cJSON *mn = cJSON_GetObjectItemCaseSensitive(req, "model_name");
    const cJSON *ds = cJSON_GetObjectItemCaseSensitive(req, "dataset");
    int replace = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(req, "replace"));
    char name[SRV_MODEL_NAME_LEN + 1];
    int active = 0;
    if (!cJSON_IsString(mn)) {
        for (int tries = 0; js->next_id <= JOB_ID_MAX; tries++, js->next_id++) {
            snprintf(name, sizeof name, "%.40s-job%llu", cJSON_IsString(ds) ? ds->valuestring : "", js->next_id);
            int pending = 0;
            for (int i = 0; i < js->n && !pending; i++)
                pending = !finished(js->all[i]) && strcmp(js->all[i]->model_name, name) == 0;
            if (tries >= 10000 || (!pending && !srv_registry_name_taken(js->registry, name, NULL))) return 1;
        }
        return 0;
    }
    snprintf(name, sizeof name, "%s", mn->valuestring);
    for (int i = 0; i < js->n; i++)
        if (!finished(js->all[i]) && strcmp(js->all[i]->model_name, name) == 0) {
            fail_answer(a, 409, "model_name_in_use", "job %s, %s, will write a model named \"%s\"; choose another "
                        "model_name", js->all[i]->id, STATE_NAMES[js->all[i]->state], name);
            return 0;
        }
    if (!srv_registry_name_taken(js->registry, name, &active)) return 1;
    if (active) {
        fail_answer(a, 409, "model_active", "\"%s\" is the active model, which a job never replaces; choose another "
                    "model_name, or activate another model first", name);
        return 0;
    }
    if (!replace) {
        fail_answer(a, 409, "model_exists", "a model named \"%s\" already exists; choose another model_name, or "
                    "ask \"replace\": true to replace it", name);
        return 0;
    }
    return 1;
}

void srv_jobs_submit(srv_jobs *js, const char *body, size_t len, srv_jobs_answer *a) {
    if (srv_jobs_validate_memory(body, len, js->cfg->data_dir, js->cfg->train_memory_budget, js->cfg->train_threads,
                                 a) != 0)
        return;
    cJSON *req = cJSON_Parse(a->json);
    free(a->json);
    a->json = NULL;
    if (req == NULL) {
        fail_answer(a, 500, "internal_error", "out of memory");
        return;
    }
    pthread_mutex_lock(&js->mu);
    int queued = 0;
    for (int i = 0; i < js->n; i++) queued += js->all[i]->state == ST_QUEUED;
    if (js->stopping) {
        cJSON_Delete(req);
        fail_answer(a, 503, "draining", "the server is shutting down and takes no new jobs");
    } else if (queued >= js->cfg->train_queue) {
        cJSON_Delete(req);
        fail_answer(a, 503, "train_queue_full",
                    "%d training jobs are already waiting (--train-queue %d); retry when one has started", queued,
                    js->cfg->train_queue);
    } else if (js->next_id > JOB_ID_MAX || !name_free_for(js, req, a)) {
        cJSON_Delete(req);
        if (a->status < 400)
            fail_answer(a, 503, "job_ids_exhausted", "every job id up to %llu is taken; remove old records from the "
                        "state directory", JOB_ID_MAX);
    } else {
        char id[24];
        snprintf(id, sizeof id, "%llu", js->next_id);
        job *jb = job_new(req, id);
        job **grown = jb != NULL ? realloc(js->all, sizeof *grown * (size_t)(js->n + 1)) : NULL;
        if (grown == NULL) {
            job_free(jb);
            fail_answer(a, 500, "internal_error", "out of memory");
        } else {
            jb->replace = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(jb->request, "replace"));
            js->next_id++;
            js->all = grown;
            js->all[js->n++] = jb;
            srv_utc_now(jb->created, sizeof jb->created);
            job_persist(js, jb);
            a->status = 202;
            snprintf(a->id, sizeof a->id, "%s", jb->id);
            a->json = job_text(jb);
            pthread_cond_broadcast(&js->cv);
        }
    }
    pthread_mutex_unlock(&js->mu);
}

char *srv_jobs_list_json(srv_jobs *js) {
    cJSON *o = cJSON_CreateObject();
    if (o == NULL) return NULL;
    cJSON *list = cJSON_AddArrayToObject(o, "jobs");
    pthread_mutex_lock(&js->mu);
    for (int i = js->n - 1; list != NULL && i >= 0; i--) {
        cJSON *j = job_json(js->all[i]);
        if (j != NULL) cJSON_AddItemToArray(list, j);
    }
    pthread_mutex_unlock(&js->mu);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

char *srv_jobs_get_json(srv_jobs *js, const char *id, int *found) {
    pthread_mutex_lock(&js->mu);
    job *jb = find_job(js, id);
    *found = jb != NULL;
    char *s = jb != NULL ? job_text(jb) : NULL;
    pthread_mutex_unlock(&js->mu);
    return s;
}

void srv_jobs_cancel(srv_jobs *js, const char *id, srv_jobs_answer *a) {
    memset(a, 0, sizeof *a);
    pthread_mutex_lock(&js->mu);
    job *jb = find_job(js, id);
    if (jb == NULL) {
        fail_answer(a, 404, "job_not_found", "no training job %s (GET /train lists them)", id);
    } else if (finished(jb)) {
        fail_answer(a, 409, "job_finished", "job %s has already %s", id, STATE_NAMES[jb->state]);
    } else if (jb->committed) {
        fail_answer(a, 409, "job_finishing",
                    "job %s has finished training and is installing model %s; it can no longer be cancelled", id,
                    jb->model_name);
    } else {
        jb->cancel_asked = 1; /* whatever happens next, the job ends cancelled */
        if (jb->state == ST_QUEUED) {
            jb->state = ST_CANCELLED;
            srv_utc_now(jb->finished, sizeof jb->finished);
            js->finished[ST_CANCELLED]++;
            job_persist(js, jb);
            notify(js, jb);
            srv_log("job %s: cancelled while queued", jb->id);
        } else {
            atomic_store(&jb->cancel, 1); /* the runner finishes it within a step */
        }
        a->status = 202;
        snprintf(a->id, sizeof a->id, "%s", jb->id);
        a->json = job_text(jb);
    }
    pthread_mutex_unlock(&js->mu);
}

char *srv_jobs_metrics(srv_jobs *js) {
    char *doc = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&doc, &len);
    if (f == NULL) return NULL;
    pthread_mutex_lock(&js->mu);
    int count[N_STATES] = {0};
    for (int i = 0; i < js->n; i++) count[js->all[i]->state]++;
    fprintf(f, "# HELP dae_train_jobs Training jobs known to the server, by state.\n# TYPE dae_train_jobs gauge\n");
    for (int s = 0; s < N_STATES; s++) fprintf(f, "dae_train_jobs{state=\"%s\"} %d\n", STATE_NAMES[s], count[s]);
    fprintf(f, "# HELP dae_train_jobs_finished_total Training jobs finished since the start, by outcome.\n"
               "# TYPE dae_train_jobs_finished_total counter\n");
    for (int s = ST_SUCCEEDED; s < N_STATES; s++)
        fprintf(f, "dae_train_jobs_finished_total{state=\"%s\"} %llu\n", STATE_NAMES[s], js->finished[s]);
    fprintf(f, "# HELP dae_train_steps_total Optimiser steps of training jobs since the start.\n"
               "# TYPE dae_train_steps_total counter\ndae_train_steps_total %llu\n", js->steps_total);
    fprintf(f, "# HELP dae_train_epoch Epoch of the running (or last) training job.\n"
               "# TYPE dae_train_epoch gauge\ndae_train_epoch %d\n", js->cur_epoch);
    fprintf(f, "# HELP dae_train_loss Last batch loss (MSE) of the running (or last) training job.\n"
               "# TYPE dae_train_loss gauge\ndae_train_loss %.9g\n", js->cur_loss);
    fprintf(f, "# HELP dae_train_images_per_second Training throughput of the running (or last) job.\n"
               "# TYPE dae_train_images_per_second gauge\ndae_train_images_per_second %.1f\n", js->cur_images_per_s);
    pthread_mutex_unlock(&js->mu);
    if (fclose(f) != 0) {
        free(doc);
        return NULL;
    }
    return doc;
}
