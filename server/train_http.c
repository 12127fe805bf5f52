/* train_http.c - the HTTP face of training: validation of POST /train,
 * the training routes' answers and the Server-Sent Events stream of a
 * job (see train_http.h). */
#include "train_http.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cJSON.h>
#include <microhttpd.h>

#include "idx.h"
#include "model.h"
#include "noise.h"
#include "train.h"
#include "utf8.h"

/* Test images evaluated after each epoch unless the job says otherwise. */
#define DEFAULT_EVAL_LIMIT 1000

static void fail_answer(srv_train_answer *a, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void fail_answer(srv_train_answer *a, int status, const char *code, const char *fmt, ...) {
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
                     srv_train_answer *a) {
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
                     srv_train_answer *a) {
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

int srv_train_validate(const char *body, size_t len, const char *data_dir, srv_train_answer *a) {
    return srv_train_validate_memory(body, len, data_dir, 0, 1, a);
}

int srv_train_validate_memory(const char *body, size_t len, const char *data_dir, long long train_budget,
                             int threads, srv_train_answer *a) {
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


dae_status srv_train_check_request(const char *request, size_t len, const char *data_dir, long long memory_budget,
                                   int threads, char **canon, char *err, size_t errlen) {
    srv_train_answer a;
    *canon = NULL;
    if (srv_train_validate_memory(request, len, data_dir, memory_budget, threads, &a) == 0) {
        *canon = a.json;
        return DAE_OK;
    }
    snprintf(err, errlen, "%s", a.message);
    if (a.status == 400 || a.code == NULL || strcmp(a.code, "invalid_parameter") == 0 ||
        strcmp(a.code, "invalid_json") == 0)
        return DAE_ERR_INVALID;
    /* Every field passed; what fails is this server's present state. */
    if (strcmp(a.code, "dataset_not_found") == 0) return DAE_ERR_NOT_FOUND;
    if (strcmp(a.code, "train_memory_budget") == 0) return DAE_ERR_TOO_LARGE;
    if (strcmp(a.code, "invalid_dataset") == 0) return DAE_ERR_FORMAT;
    return DAE_ERR_NOMEM;
}

/* ------------------------------------------------------------ answers */

/* What the training module's statuses answer, by route. */
typedef enum { TRAIN_SUBMIT, TRAIN_CANCEL } train_route;

typedef struct {
    train_route route;
    dae_status status;
    int http_status;
    const char *code;
} train_error;

/* Any status a route does not list answers 500 internal_error. */
static const train_error TRAIN_ERRORS[] = {
    /* POST /train (srv_training_submit). */
    {TRAIN_SUBMIT, DAE_ERR_STOPPING, 503, "draining"},
    {TRAIN_SUBMIT, DAE_ERR_BUSY, 503, "train_queue_full"},
    {TRAIN_SUBMIT, DAE_ERR_TOO_LARGE, 503, "job_ids_exhausted"},
    {TRAIN_SUBMIT, DAE_ERR_CONFLICT, 409, "model_name_in_use"},
    {TRAIN_SUBMIT, DAE_ERR_IN_USE, 409, "model_active"},
    {TRAIN_SUBMIT, DAE_ERR_EXISTS, 409, "model_exists"},
    /* DELETE /train/{id} (srv_training_cancel). */
    {TRAIN_CANCEL, DAE_ERR_NOT_FOUND, 404, "job_not_found"},
    {TRAIN_CANCEL, DAE_ERR_CONFLICT, 409, "job_finished"},
    {TRAIN_CANCEL, DAE_ERR_IN_USE, 409, "job_finishing"},
};

/* Fills a with the error answer of st (with its sentence msg) on route. */
static void fail_status(srv_train_answer *a, train_route route, dae_status st, const char *msg) {
    int status = 500;
    const char *code = "internal_error";
    for (size_t i = 0; i < sizeof TRAIN_ERRORS / sizeof TRAIN_ERRORS[0]; i++)
        if (TRAIN_ERRORS[i].route == route && TRAIN_ERRORS[i].status == st) {
            status = TRAIN_ERRORS[i].http_status;
            code = TRAIN_ERRORS[i].code;
        }
    fail_answer(a, status, code, "%s", msg);
}

/* A srv_training_view_fn: the 202 answer of the job a (srv_train_answer). */
static void accepted(const srv_train_job *job, unsigned long version, void *user) {
    (void)version;
    srv_train_answer *a = user;
    a->status = 202;
    snprintf(a->id, sizeof a->id, "%s", job->id);
    a->json = srv_train_job_text(job);
}

/* The face of one training module: its configuration and event streams. */
struct srv_train_http {
    srv_training *training;
    const srv_config *cfg;
    pthread_mutex_t mu;       /* the streams' state; taken inside the training lock, never around it */
    srv_train_stream *streams; /* every open stream */
    int ended;                /* srv_train_http_end_streams: every stream ends */
};

void srv_train_http_submit(srv_train_http *f, const char *body, size_t len, srv_train_answer *a) {
    const srv_config *cfg = f->cfg;
    if (srv_train_validate_memory(body, len, cfg->data_dir, cfg->train_memory_budget, cfg->train_threads, a) != 0)
        return;
    cJSON *req = cJSON_Parse(a->json);
    free(a->json);
    a->json = NULL;
    if (req == NULL) {
        fail_answer(a, 500, "internal_error", "out of memory");
        return;
    }
    char err[sizeof a->message];
    dae_status st = srv_training_submit(f->training, req, accepted, a, err, sizeof err);
    if (st != DAE_OK) fail_status(a, TRAIN_SUBMIT, st, err);
}

void srv_train_http_cancel(srv_train_http *f, const char *id, srv_train_answer *a) {
    memset(a, 0, sizeof *a);
    char err[sizeof a->message];
    dae_status st = srv_training_cancel(f->training, id, accepted, a, err, sizeof err);
    if (st != DAE_OK) fail_status(a, TRAIN_CANCEL, st, err);
}

/* A srv_training_view_fn: adds the job to the JSON array user. */
static void add_job(const srv_train_job *job, unsigned long version, void *user) {
    (void)version;
    cJSON *j = srv_train_job_json(job);
    if (j != NULL) cJSON_AddItemToArray(user, j);
}

char *srv_train_http_list(srv_train_http *f) {
    cJSON *o = cJSON_CreateObject();
    if (o == NULL) return NULL;
    cJSON *list = cJSON_AddArrayToObject(o, "jobs");
    if (list != NULL) srv_training_each(f->training, add_job, list);
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

/* A srv_training_view_fn: the job's text into *(char **)user. */
static void job_text(const srv_train_job *job, unsigned long version, void *user) {
    (void)version;
    *(char **)user = srv_train_job_text(job);
}

char *srv_train_http_get(srv_train_http *f, const char *id, int *found) {
    char *s = NULL;
    *found = srv_training_view(f->training, id, job_text, &s) == DAE_OK;
    return s;
}

char *srv_train_http_metrics(srv_train_http *f) { return srv_training_metrics(f->training); }

/* ------------------------------------------------------------ events */

struct srv_train_stream {
    srv_train_http *face;
    char id[24];
    unsigned long seen;    /* version last sent; 0: none yet */
    int done_sent;
    int ended;             /* srv_train_stream_kick: end at the next read */
    unsigned long changes; /* changes of the job seen by the change callback */
    char *pending;         /* formatted event not yet fully sent */
    size_t pending_len, pending_off;
    struct MHD_Connection *waiting; /* suspended, waiting for a change */
    srv_train_stream *next; /* in face->streams */
};

/* Resumes s if it waits (face lock held). */
static void wake(srv_train_stream *s) {
    struct MHD_Connection *c = s->waiting;
    s->waiting = NULL;
    if (c != NULL) MHD_resume_connection(c);
}

/* The training module's change callback (under its lock): counts the
 * change in every stream of the job and wakes those that wait. */
static void on_change(const srv_train_job *job, unsigned long version, void *user) {
    (void)version;
    srv_train_http *f = user;
    pthread_mutex_lock(&f->mu);
    for (srv_train_stream *s = f->streams; s != NULL; s = s->next)
        if (strcmp(s->id, job->id) == 0) {
            s->changes++;
            wake(s);
        }
    pthread_mutex_unlock(&f->mu);
}

srv_train_http *srv_train_http_new(srv_training *t, const srv_config *cfg) {
    srv_train_http *f = calloc(1, sizeof *f);
    if (f == NULL) return NULL;
    f->training = t;
    f->cfg = cfg;
    pthread_mutex_init(&f->mu, NULL);
    srv_training_on_change(t, on_change, f);
    return f;
}

void srv_train_http_free(srv_train_http *f) {
    if (f == NULL) return;
    srv_training_on_change(f->training, NULL, NULL);
    pthread_mutex_destroy(&f->mu);
    free(f);
}

void srv_train_http_end_streams(srv_train_http *f) {
    if (f == NULL) return;
    pthread_mutex_lock(&f->mu);
    f->ended = 1;
    for (srv_train_stream *s = f->streams; s != NULL; s = s->next) wake(s);
    pthread_mutex_unlock(&f->mu);
}

/* A srv_training_view_fn that only learns whether the job exists. */
static void nothing(const srv_train_job *job, unsigned long version, void *user) {
    (void)job, (void)version, (void)user;
}

srv_train_stream *srv_train_stream_open(srv_train_http *f, const char *id) {
    if (srv_training_view(f->training, id, nothing, NULL) != DAE_OK) return NULL;
    srv_train_stream *s = calloc(1, sizeof *s);
    if (s == NULL) return NULL;
    s->face = f;
    snprintf(s->id, sizeof s->id, "%s", id);
    pthread_mutex_lock(&f->mu);
    s->next = f->streams;
    f->streams = s;
    pthread_mutex_unlock(&f->mu);
    return s;
}

/* What a stream reads of its job: its text when it changed since seen. */
typedef struct {
    unsigned long seen, version;
    char *text;
    int done;
} snapshot;

/* A srv_training_view_fn: fills the snapshot user. */
static void take_snapshot(const srv_train_job *job, unsigned long version, void *user) {
    snapshot *sn = user;
    sn->version = version;
    if (version == sn->seen) return;
    sn->text = srv_train_job_text(job);
    sn->done = srv_train_job_finished(job);
}

ssize_t srv_train_stream_read(srv_train_stream *s, void *conn, char *buf, size_t max) {
    srv_train_http *f = s->face;
    pthread_mutex_lock(&f->mu);
    if (s->ended) {
        free(s->pending);
        s->pending = NULL;
    }
    /* The job is read without the face's lock (the training lock is taken
     * around it by the change callback); a change that comes meanwhile
     * counts in s->changes, and the job is read again rather than the
     * connection parked and that change missed. */
    while (s->pending == NULL && !s->done_sent && !s->ended) {
        unsigned long changes = s->changes;
        snapshot sn = {.seen = s->seen};
        pthread_mutex_unlock(&f->mu);
        srv_training_view(f->training, s->id, take_snapshot, &sn);
        pthread_mutex_lock(&f->mu);
        if (sn.version != s->seen) {
            char *text = sn.text;
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
                    s->pending_len = (size_t)snprintf(s->pending, n, "event: %s\ndata: %s\n\n",
                                                      sn.done ? "done" : "progress", text);
                s->pending_off = 0;
            }
            free(text);
            s->seen = sn.version;
            if (sn.done) s->done_sent = 1;
            break;
        }
        if (changes == s->changes) break;
    }
    ssize_t ret = 0;
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
    } else if (s->done_sent || f->ended || s->ended) {
        ret = (ssize_t)MHD_CONTENT_READER_END_OF_STREAM;
    } else {
        /* Nothing new: park the connection until the job changes. */
        s->waiting = conn;
        MHD_suspend_connection(conn);
        ret = 0;
    }
    pthread_mutex_unlock(&f->mu);
    return ret;
}

void srv_train_stream_kick(srv_train_stream *s) {
    srv_train_http *f = s->face;
    pthread_mutex_lock(&f->mu);
    s->ended = 1;
    wake(s);
    pthread_mutex_unlock(&f->mu);
}

void srv_train_stream_close(srv_train_stream *s) {
    if (s == NULL) return;
    srv_train_http *f = s->face;
    pthread_mutex_lock(&f->mu);
    for (srv_train_stream **p = &f->streams; *p != NULL; p = &(*p)->next)
        if (*p == s) {
            *p = s->next;
            break;
        }
    pthread_mutex_unlock(&f->mu);
    free(s->pending);
    free(s);
}
