/* train_records.c - a training job's JSON document and its record on
 * disk: written atomically, read back and checked at start (see
 * train_records.h). */
#include "train_records.h"

#include <dirent.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fileio.h"
#include "plot.h"
#include "train_run.h"
#include "log.h"
#include "utf8.h"

/* Largest job record read at start. */
#define RECORD_MAX_BYTES ((size_t)4 << 20)
/* A temporary file of the models directory untouched for this long is
 * left over from an interrupted write, whoever wrote it. */
#define STALE_TEMP_S 60
/* Room for the reason a record or its request is refused. */
#define RECORD_WHY_LEN 768

static const char *const STATE_NAMES[SRV_TRAIN_N_STATES] = {"queued", "running", "succeeded", "failed",
                                                             "cancelled"};

const char *srv_train_state_name(srv_train_state state) {
    return state >= 0 && state < SRV_TRAIN_N_STATES ? STATE_NAMES[state] : "unknown";
}

/* ------------------------------------------------------------ the job and its JSON */

const char *srv_train_job_req_str(const srv_train_job *jb, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(jb->request, key);
    return cJSON_IsString(v) ? v->valuestring : "";
}

double srv_train_job_req_num(const srv_train_job *jb, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(jb->request, key);
    return cJSON_IsNumber(v) ? v->valuedouble : 0;
}

int srv_train_job_finished(const srv_train_job *jb) { return jb->state >= SRV_TRAIN_SUCCEEDED; }

/* The history's epochs as JSON text, "{...},{...}", the first n of them.
 * A running job's record is made anew at every notice and written once a
 * second, and it holds the whole history: printing its numbers again each
 * time took 58 ms at 10,000 epochs (most of it in printf and the check
 * that a number reads back, cJSON's), on the event loop. */
struct srv_train_printed {
    char *text;
    size_t len, cap;
    int n;
};

/* Epoch i of the job as a JSON object, or NULL if out of memory. */
static cJSON *epoch_json(const srv_train_job *jb, int i) {
    const srv_train_epoch *e = &jb->history[i];
    cJSON *h = cJSON_CreateObject();
    if (h == NULL) return NULL;
    cJSON_AddNumberToObject(h, "epoch", i + 1);
    cJSON_AddNumberToObject(h, "loss", e->loss);
    cJSON_AddNumberToObject(h, "seconds", round(e->seconds * 1000) / 1000);
    if (e->has_test) {
        cJSON_AddNumberToObject(h, "test_mse", e->mse);
        cJSON_AddNumberToObject(h, "test_psnr", e->psnr);
        cJSON_AddNumberToObject(h, "test_ssim", e->ssim);
    }
    return h;
}

/* The job's history as a JSON array's text (malloc'd), the epochs not yet
 * printed added to the job's text of them first; NULL if out of memory. */
static char *history_text(const srv_train_job *jb) {
    struct srv_train_printed *p = jb->printed;
    for (; p->n < jb->n_history; p->n++) {
        cJSON *h = epoch_json(jb, p->n);
        char *one = h != NULL ? cJSON_PrintUnformatted(h) : NULL;
        cJSON_Delete(h);
        if (one == NULL) return NULL;
        size_t n = strlen(one);
        if (p->len + n + 2 > p->cap) {
            size_t cap = (p->len + n + 2) * 2;
            char *grown = realloc(p->text, cap);
            if (grown == NULL) {
                free(one);
                return NULL;
            }
            p->text = grown, p->cap = cap;
        }
        if (p->n > 0) p->text[p->len++] = ',';
        memcpy(p->text + p->len, one, n);
        p->len += n;
        free(one);
    }
    char *arr = malloc(p->len + 3);
    if (arr != NULL) {
        arr[0] = '[';
        if (p->len > 0) memcpy(arr + 1, p->text, p->len);
        memcpy(arr + 1 + p->len, "]", 2);
    }
    return arr;
}

cJSON *srv_train_job_json(const srv_train_job *jb) {
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
    if (jb->state == SRV_TRAIN_RUNNING && jb->eta_s >= 0)
        cJSON_AddNumberToObject(o, "eta_seconds", round(jb->eta_s * 10) / 10);
    else cJSON_AddNullToObject(o, "eta_seconds");
    char *hist = history_text(jb);
    if (hist == NULL || cJSON_AddRawToObject(o, "history", hist) == NULL) {
        free(hist);
        cJSON_Delete(o);
        return NULL;
    }
    free(hist);
    if (jb->error[0] != '\0') cJSON_AddStringToObject(o, "error", jb->error);
    else cJSON_AddNullToObject(o, "error");
    cJSON_AddStringToObject(o, "model", jb->model_name);
    if (jb->model_version[0] != '\0') cJSON_AddStringToObject(o, "model_version", jb->model_version);
    cJSON_AddBoolToObject(o, "activated", jb->activated);
    if (jb->promotion != NULL) cJSON_AddItemToObject(o, "promotion", cJSON_Duplicate(jb->promotion, 1));
    cJSON_AddStringToObject(o, "created", jb->created);
    if (jb->request_id[0] != '\0') cJSON_AddStringToObject(o, "request_id", jb->request_id);
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

char *srv_train_job_text(const srv_train_job *jb) {
    cJSON *o = srv_train_job_json(jb);
    if (o == NULL) return NULL;
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

void srv_train_job_drop_printed(srv_train_job *jb) {
    free(jb->printed->text);
    memset(jb->printed, 0, sizeof *jb->printed);
}

/* path (4096 bytes) = the record file of job jb in dir. */
static void record_path(char *path, const char *dir, const srv_train_job *jb) {
    snprintf(path, 4096, "%s/%s.json", dir, jb->id);
}

/* Records are small: written whole under the caller's lock. */
dae_status srv_train_record_write(const char *dir, const srv_train_job *jb, char *err, size_t errlen) {
    dae_status st = DAE_OK;
    char *text = NULL;
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        st = dae_fail(err, errlen, dae_write_errno_status(errno), "cannot make the state directory %s: %s", dir,
                      strerror(errno));
    } else if ((text = srv_train_job_text(jb)) == NULL) {
        st = dae_fail(err, errlen, DAE_ERR_NOMEM, "out of memory");
    } else {
        char path[4096];
        record_path(path, dir, jb);
        st = dae_file_write_atomic(path, text, strlen(text), err, errlen);
    }
    free(text);
    return st;
}

dae_status srv_train_record_create(const char *dir, const srv_train_job *jb, char *err, size_t errlen) {
    dae_status st = srv_train_record_write(dir, jb, err, errlen);
    if (st != DAE_OK) {
        char path[4096];
        record_path(path, dir, jb);
        unlink(path);
    }
    return st;
}

dae_status srv_train_record_remove(const char *dir, const srv_train_job *jb, char *err, size_t errlen) {
    char path[4096];
    record_path(path, dir, jb);
    if (unlink(path) != 0 && errno != ENOENT)
        return dae_fail(err, errlen, DAE_ERR_IO, "cannot remove %s: %s", path, strerror(errno));
    return DAE_OK;
}

void srv_train_job_free(srv_train_job *jb) {
    if (jb == NULL) return;
    cJSON_Delete(jb->request);
    cJSON_Delete(jb->promotion);
    free(jb->history);
    free(jb->steps);
    if (jb->printed != NULL) free(jb->printed->text);
    free(jb->printed);
    free(jb);
}

srv_train_job *srv_train_job_new(cJSON *req, const char *id) {
    srv_train_job *jb = calloc(1, sizeof *jb);
    if (jb == NULL) {
        cJSON_Delete(req);
        return NULL;
    }
    jb->request = req;
    srv_copy_str(jb->id, sizeof jb->id, id);
    jb->epochs = (int)srv_train_job_req_num(jb, "epochs");
    if (jb->epochs < 1) jb->epochs = 1;
    jb->history = calloc((size_t)jb->epochs, sizeof *jb->history);
    jb->printed = calloc(1, sizeof *jb->printed);
    if (jb->history == NULL || jb->printed == NULL) {
        srv_train_job_free(jb);
        return NULL;
    }
    const char *mn = srv_train_job_req_str(jb, "model_name");
    if (mn[0] != '\0') srv_copy_str(jb->model_name, sizeof jb->model_name, mn);
    else snprintf(jb->model_name, sizeof jb->model_name, "%.40s-job%s", srv_train_job_req_str(jb, "dataset"), id);
    jb->eta_s = -1;
    return jb;
}

/* ------------------------------------------------------------ the loss curve */

void srv_train_job_log_step(srv_train_job *jb, long step, double loss) {
    if (jb->step_stride < 1) jb->step_stride = 1;
    if (step % jb->step_stride != 0) return;
    if (jb->n_steps == SRV_TRAIN_STEP_LOG) {
        /* Full: keep every other logged step, and log every other one from now on. */
        jb->step_stride *= 2;
        int k = 0;
        for (int i = 0; i < jb->n_steps; i++)
            if (jb->steps[i].step % jb->step_stride == 0) jb->steps[k++] = jb->steps[i];
        jb->n_steps = k;
        if (step % jb->step_stride != 0) return;
    }
    if (jb->n_steps == jb->cap_steps) {
        int cap = jb->cap_steps > 0 ? jb->cap_steps * 2 : 256;
        if (cap > SRV_TRAIN_STEP_LOG) cap = SRV_TRAIN_STEP_LOG;
        srv_train_step *grown = realloc(jb->steps, sizeof *grown * (size_t)cap);
        if (grown == NULL) return;
        jb->steps = grown, jb->cap_steps = cap;
    }
    jb->steps[jb->n_steps++] = (srv_train_step){step, (float)loss};
}

/* The last step of epoch e (from 0): a job never resumes, so its steps
 * count from 1 and every epoch has steps_per_epoch of them. */
static long epoch_end_step(const srv_train_job *jb, int e) { return jb->steps_per_epoch * (e + 1); }

/* Writes the epoch columns of the CSV row (",mean[,mse,psnr,ssim]"). */
static void put_epoch(FILE *f, const srv_train_epoch *ep) {
    fprintf(f, ",%.9g", ep->loss);
    if (ep->has_test) fprintf(f, ",%.9g,%.9g,%.9g\n", ep->mse, ep->psnr, ep->ssim);
    else fputs(",,,\n", f);
}

char *srv_train_job_loss_csv(const srv_train_job *jb) {
    char *doc = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&doc, &len);
    if (f == NULL) return NULL;
    fputs("step,epoch,loss,epoch_mean_loss,test_mse,test_psnr,test_ssim\n", f);
    long spe = jb->steps_per_epoch;
    int i = 0, e = 0;
    /* The logged steps and the epochs' ends, merged in step order: a
     * step the log dropped still has its epoch's row. */
    while (i < jb->n_steps || e < jb->n_history) {
        long s = i < jb->n_steps ? jb->steps[i].step : -1;
        int epoch_first = e < jb->n_history && (s < 0 || epoch_end_step(jb, e) < s);
        if (epoch_first) {
            fprintf(f, "%ld,%d,", epoch_end_step(jb, e), e + 1);
            put_epoch(f, &jb->history[e++]);
            continue;
        }
        fprintf(f, "%ld,%d,%.9g", s, spe > 0 ? (int)((s - 1) / spe) + 1 : jb->epoch, (double)jb->steps[i++].loss);
        if (e < jb->n_history && epoch_end_step(jb, e) == s) put_epoch(f, &jb->history[e++]);
        else fputs(",,,,\n", f);
    }
    if (fclose(f) != 0) {
        free(doc);
        return NULL;
    }
    return doc;
}

char *srv_train_job_loss_svg(const srv_train_job *jb) {
    size_t n = (size_t)jb->n_steps, ne = (size_t)jb->n_history;
    long *sx = malloc(sizeof(long) * (n + 1)), *ex = malloc(sizeof(long) * (ne + 1));
    float *sy = malloc(sizeof(float) * (n + 1));
    double *ey = malloc(sizeof(double) * (ne + 1));
    char *doc = NULL;
    if (sx && ex && sy && ey) {
        for (size_t i = 0; i < n; i++) sx[i] = jb->steps[i].step, sy[i] = jb->steps[i].loss;
        for (size_t i = 0; i < ne; i++) ex[i] = epoch_end_step(jb, (int)i), ey[i] = jb->history[i].loss;
        char title[160];
        snprintf(title, sizeof title, "dae training loss - %.40s, job %s%s", srv_train_job_req_str(jb, "dataset"),
                 jb->id, n + ne == 0 ? ": no data yet" : "");
        doc = dae_loss_svg(title, sx, sy, n, ex, ey, ne);
    }
    free(sx), free(ex), free(sy), free(ey);
    return doc;
}

unsigned long long srv_train_id_parse(const char *text, size_t len) {
    if (len == 0 || len > 12 || text[0] == '0') return 0;
    unsigned long long v = 0;
    for (size_t i = 0; i < len; i++) {
        if (text[i] < '0' || text[i] > '9') return 0;
        v = v * 10 + (unsigned long long)(text[i] - '0');
    }
    return v <= SRV_TRAIN_ID_MAX ? v : 0;
}

/* The id of a record's file name "ID.json", or 0 when it is not one. */
static unsigned long long record_file_id(const char *fname) {
    size_t n = strlen(fname);
    if (n < 6 || strcmp(fname + n - 5, ".json") != 0) return 0;
    return srv_train_id_parse(fname, n - 5);
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

/* ------------------------------------------------------------ requests */

/* Reads the promote object of a request into canon's: "against" ("active"
 * or a model name), "metric" ("psnr") and "min_gain_db" (-100 to 100), each
 * defaulted, no other key. */
static dae_status promote_field(const cJSON *promote, cJSON *canon, char *err, size_t errlen) {
    const char *against = "active";
    double min_gain = 0.0;
    if (promote != NULL) {
        if (!cJSON_IsObject(promote))
            return dae_fail(err, errlen, DAE_ERR_INVALID,
                            "promote must be an object: {\"against\": \"active\" or a model, \"metric\": \"psnr\", "
                            "\"min_gain_db\": X}");
        for (const cJSON *f = promote->child; f != NULL; f = f->next) {
            if (strcmp(f->string, "against") == 0) {
                if (!cJSON_IsString(f) || (strcmp(f->valuestring, "active") != 0 && !dae_name_valid(f->valuestring)))
                    return dae_fail(err, errlen, DAE_ERR_INVALID, "promote.against must be \"active\" or a model name");
                against = f->valuestring;
            } else if (strcmp(f->string, "metric") == 0) {
                if (!cJSON_IsString(f) || strcmp(f->valuestring, "psnr") != 0)
                    return dae_fail(err, errlen, DAE_ERR_INVALID,
                                    "promote.metric must be \"psnr\" (mean PSNR of the held-out test images)");
            } else if (strcmp(f->string, "min_gain_db") == 0) {
                if (!cJSON_IsNumber(f) || !(f->valuedouble >= -100 && f->valuedouble <= 100))
                    return dae_fail(err, errlen, DAE_ERR_INVALID, "promote.min_gain_db must be a number from -100 to 100");
                min_gain = f->valuedouble;
            } else {
                return dae_fail(err, errlen, DAE_ERR_INVALID,
                                "promote.%s is not a field of promote (against, metric, min_gain_db)", f->string);
            }
        }
    }
    cJSON *o = cJSON_AddObjectToObject(canon, "promote");
    int ok = o != NULL && cJSON_AddStringToObject(o, "against", against) != NULL &&
             cJSON_AddStringToObject(o, "metric", "psnr") != NULL &&
             cJSON_AddNumberToObject(o, "min_gain_db", min_gain) != NULL;
    return ok ? DAE_OK : dae_fail(err, errlen, DAE_ERR_NOMEM, "out of memory");
}

/* The server's own fields of a request into canon; DAE_ERR_INVALID names the field. */
static dae_status server_fields(const cJSON *in, cJSON *canon, char *err, size_t errlen) {
    const cJSON *mn = cJSON_GetObjectItemCaseSensitive(in, "model_name");
    if (mn != NULL && (!cJSON_IsString(mn) || !dae_name_valid(mn->valuestring)))
        return dae_fail(err, errlen, DAE_ERR_INVALID,
                        "model_name must be 1 to %d characters of [A-Za-z0-9._-], not starting with '.'", DAE_NAME_MAX);
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(in, "activate");
    int forced = cJSON_IsString(act) && strcmp(act->valuestring, "force") == 0;
    if (act != NULL && !cJSON_IsBool(act) && !forced)
        return dae_fail(err, errlen, DAE_ERR_INVALID,
                        "activate must be true (through the promotion gate), false or \"force\" (without it)");
    const cJSON *rep = cJSON_GetObjectItemCaseSensitive(in, "replace");
    if (rep != NULL && !cJSON_IsBool(rep))
        return dae_fail(err, errlen, DAE_ERR_INVALID,
                        "replace must be true or false (true: the job may replace a model of its name that is not "
                        "active)");
    const cJSON *base = cJSON_GetObjectItemCaseSensitive(in, "base_model");
    if (base != NULL && (!cJSON_IsString(base) || !dae_name_valid(base->valuestring)))
        return dae_fail(err, errlen, DAE_ERR_INVALID, "base_model must be the name of a model of this server");
    if (base != NULL && cJSON_GetObjectItemCaseSensitive(in, "architecture") != NULL)
        return dae_fail(err, errlen, DAE_ERR_INVALID,
                        "base_model gives the network: a request has base_model or architecture, not both");
    const cJSON *promote = cJSON_GetObjectItemCaseSensitive(in, "promote");
    if (promote != NULL && (forced || cJSON_IsFalse(act)))
        return dae_fail(err, errlen, DAE_ERR_INVALID,
                        "promote is the gate of an activation: it goes with activate true (or no activate), not %s",
                        forced ? "\"force\"" : "false");
    int gated = promote != NULL || cJSON_IsTrue(act);
    int ok = (mn == NULL || cJSON_AddStringToObject(canon, "model_name", mn->valuestring) != NULL) &&
             (forced ? cJSON_AddStringToObject(canon, "activate", "force") != NULL
                     : cJSON_AddBoolToObject(canon, "activate", gated) != NULL) &&
             cJSON_AddBoolToObject(canon, "replace", cJSON_IsTrue(rep)) != NULL &&
             (base == NULL || cJSON_AddStringToObject(canon, "base_model", base->valuestring) != NULL);
    if (!ok) return dae_fail(err, errlen, DAE_ERR_NOMEM, "out of memory");
    return gated ? promote_field(promote, canon, err, errlen) : DAE_OK;
}

void srv_train_gate_of(const cJSON *req, srv_train_gate *gate) {
    memset(gate, 0, sizeof *gate);
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(req, "activate");
    gate->activate = cJSON_IsString(act) ? 2 : cJSON_IsTrue(act) ? 1 : 0;
    const cJSON *promote = cJSON_GetObjectItemCaseSensitive(req, "promote");
    const cJSON *against = cJSON_GetObjectItemCaseSensitive(promote, "against");
    const cJSON *gain = cJSON_GetObjectItemCaseSensitive(promote, "min_gain_db");
    srv_copy_str(gate->against, sizeof gate->against, cJSON_IsString(against) ? against->valuestring : "active");
    gate->min_gain_db = cJSON_IsNumber(gain) ? gain->valuedouble : 0.0;
}

/* Whether req can run here now: its data set, and its memory against the
 * training budget, refused now rather than found out by the kernel's OOM
 * killer. */
static dae_status runnable(const dae_train_request *req, const char *data_dir, long long memory_budget, int threads,
                           char *err, size_t errlen) {
    if (data_dir == NULL)
        return dae_fail(err, errlen, DAE_ERR_NOT_FOUND,
                        "data set \"%s\" not found: the server has no data directory (--data-dir)", req->dataset);
    dae_train_estimate est;
    char detail[DAE_ERR_LEN];
    dae_status st = dae_train_run_estimate(req, data_dir, threads, &est, detail, sizeof detail);
    if (st == DAE_ERR_NOT_FOUND)
        return dae_fail(err, errlen, st, "data set \"%s\" not found: %s (the data directory is %s)", req->dataset,
                        detail, data_dir);
    if (st != DAE_OK) return dae_fail(err, errlen, st, "data set \"%s\": %s", req->dataset, detail);
    long long need = (long long)(est.dataset_bytes + est.run_bytes);
    if (memory_budget > 0 && need > memory_budget)
        return dae_fail(err, errlen, DAE_ERR_TOO_LARGE,
                        "this job needs an estimated %lld bytes (%.0f MiB: data set %.0f MiB, batches of %d images "
                        "on %d thread%s), over the training memory budget of %lld bytes (%.0f MiB, "
                        "--train-memory-budget); use a smaller batch_size or train_limit",
                        need, need / 1048576.0, est.dataset_bytes / 1048576.0, est.batch, threads,
                        threads == 1 ? "" : "s", memory_budget, memory_budget / 1048576.0);
    return DAE_OK;
}

/* The weights file of registry's model name into *path (malloc'd), or
 * DAE_ERR_INVALID naming it as the request's field. */
static dae_status base_model_path(srv_registry *registry, const char *name, char **path, char *err, size_t errlen) {
    srv_model *m = srv_registry_acquire(registry, name);
    if (m == NULL)
        return dae_fail(err, errlen, DAE_ERR_INVALID,
                        "base_model \"%s\" is not a model of this server (GET /models lists them)", name);
    *path = strdup(m->path);
    srv_model_release(m);
    return *path != NULL ? DAE_OK : dae_fail(err, errlen, DAE_ERR_NOMEM, "out of memory");
}

dae_status srv_train_request_check(const cJSON *in, const char *data_dir, srv_registry *registry,
                                   long long memory_budget, int threads, cJSON **canon, char *err, size_t errlen) {
    *canon = NULL;
    dae_train_request req;
    dae_status st = dae_train_request_from_json(in, SRV_TRAIN_SERVER_FIELDS, &req, err, errlen);
    if (st != DAE_OK) return st;
    cJSON *out = cJSON_CreateObject();
    if (out == NULL) st = dae_fail(err, errlen, DAE_ERR_NOMEM, "out of memory");
    if (st == DAE_OK) st = dae_train_request_to_json(&req, out);
    if (st == DAE_ERR_NOMEM) dae_fail(err, errlen, st, "out of memory");
    if (st == DAE_OK) st = server_fields(in, out, err, errlen);
    const cJSON *base = cJSON_GetObjectItemCaseSensitive(out, "base_model");
    if (st == DAE_OK && base != NULL && registry != NULL)
        st = base_model_path(registry, base->valuestring, &req.base_model, err, errlen);
    if (st == DAE_OK) {
        *canon = out;
        out = NULL;
        st = runnable(&req, data_dir, memory_budget, threads, err, errlen);
    }
    cJSON_Delete(out);
    dae_train_request_free(&req);
    return st;
}

/* Rebuilds a job from the record text (len bytes) of the state file
 * fname, checking it as POST /train checks a request: the file is ID.json
 * and the record's id is that ID; the state is one of the five; the
 * request passes srv_train_request_check, and its canonical form is kept; the
 * model is the name that request makes; numbers are in range, strings
 * short and of the right characters. A request that is valid but can no
 * longer run here (its data set is gone, say) is kept, with the reason in
 * unrunnable (ulen bytes), for the caller to fail the job if it has not
 * run. data_dir, train_budget and threads are srv_train_request_check's.
 * Returns the job, or NULL with the reason in why. */
static srv_train_job *job_from_record(const char *fname, const char *text, size_t len, const char *data_dir,
                                      long long train_budget, int threads, char *unrunnable, size_t ulen, char *why, size_t whylen) {
    static const char TIME_CHARS[] = "0123456789-:.TZ";
    unrunnable[0] = '\0';
    unsigned long long fid = record_file_id(fname);
    if (fid == 0) {
        snprintf(why, whylen, "the file name is not ID.json with an id from 1 to %llu", SRV_TRAIN_ID_MAX);
        return NULL;
    }
    cJSON *o = cJSON_ParseWithLength(text, len), *req = NULL;
    srv_train_job *jb = NULL;
    if (o == NULL || !cJSON_IsObject(o)) {
        snprintf(why, whylen, "not a JSON object");
        goto fail;
    }
    if (!srv_utf8_valid(text, len)) { /* its strings go into JSON answers */
        snprintf(why, whylen, "not valid UTF-8");
        goto fail;
    }
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(o, "id"), *st = cJSON_GetObjectItemCaseSensitive(o, "state");
    if (!cJSON_IsString(id) || srv_train_id_parse(id->valuestring, strlen(id->valuestring)) != fid) {
        snprintf(why, whylen, "id must be \"%llu\", the file's name", fid);
        goto fail;
    }
    int state = -1;
    for (int i = 0; i < SRV_TRAIN_N_STATES && cJSON_IsString(st); i++)
        if (strcmp(st->valuestring, STATE_NAMES[i]) == 0) state = i;
    if (state < 0) {
        snprintf(why, whylen, "state must be queued, running, succeeded, failed or cancelled");
        goto fail;
    }
    const cJSON *rq = cJSON_GetObjectItemCaseSensitive(o, "request");
    if (!cJSON_IsObject(rq)) {
        snprintf(why, whylen, "request must be the job's request (a JSON object)");
        goto fail;
    }
    char msg[RECORD_WHY_LEN] = "";
    dae_status valid = srv_train_request_check(rq, data_dir, NULL, train_budget, threads, &req, msg, sizeof msg);
    if (valid == DAE_ERR_INVALID || req == NULL) {
        snprintf(why, whylen, "request: %s", msg);
        goto fail;
    }
    /* Every field passed; what fails is this server's present state. */
    if (valid != DAE_OK) snprintf(unrunnable, ulen, "%s", msg);
    jb = srv_train_job_new(req, id->valuestring);
    req = NULL;
    if (jb == NULL) {
        snprintf(why, whylen, "out of memory");
        goto fail;
    }
    if (!dae_name_valid(jb->model_name)) {
        snprintf(why, whylen, "its request makes no valid model name");
        goto fail;
    }
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, "model");
    if (v != NULL && (!cJSON_IsString(v) || strcmp(v->valuestring, jb->model_name) != 0)) {
        snprintf(why, whylen, "model must be \"%s\", the name its request makes", jb->model_name);
        goto fail;
    }
    jb->state = (srv_train_state)state;
    const cJSON *rid = cJSON_GetObjectItemCaseSensitive(o, "request_id");
    if (cJSON_IsString(rid)) snprintf(jb->request_id, sizeof jb->request_id, "%.64s", rid->valuestring);
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
    v = cJSON_GetObjectItemCaseSensitive(o, "promotion");
    const cJSON *decision = cJSON_GetObjectItemCaseSensitive(v, "decision");
    if (v != NULL && (!cJSON_IsString(decision) || (strcmp(decision->valuestring, "promoted") != 0 &&
                                                      strcmp(decision->valuestring, "kept") != 0))) {
        snprintf(why, whylen, "promotion must be the gate's result, its decision \"promoted\" or \"kept\"");
        goto fail;
    }
    if (v != NULL && (jb->promotion = cJSON_Duplicate(v, 1)) == NULL) {
        snprintf(why, whylen, "out of memory");
        goto fail;
    }
    const cJSON *h = cJSON_GetObjectItemCaseSensitive(o, "history"), *e;
    if (h != NULL && (!cJSON_IsArray(h) || cJSON_GetArraySize(h) > jb->epochs)) {
        snprintf(why, whylen, "history must be an array of at most %d epochs", jb->epochs);
        goto fail;
    }
    cJSON_ArrayForEach(e, h) {
        srv_train_epoch *r = &jb->history[jb->n_history++];
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
    srv_train_job_free(jb);
    return NULL;
}

int srv_train_record_check(const char *fname, const char *text, size_t len, const char *data_dir, char *why,
                           size_t whylen) {
    char unrunnable[RECORD_WHY_LEN];
    srv_train_job *jb = job_from_record(fname, text, len, data_dir, 0, 1, unrunnable, sizeof unrunnable, why, whylen);
    if (jb == NULL) return -1;
    srv_train_job_free(jb);
    return 0;
}

static int by_id(const void *a, const void *b) {
    unsigned long long x = strtoull((*(srv_train_job *const *)a)->id, NULL, 10), y = strtoull((*(srv_train_job *const *)b)->id, NULL, 10);
    return x < y ? -1 : x > y;
}

/* Ends a job read back that can no longer run: failed with reason why,
 * recorded in dir. */
static void fail_loaded(const char *dir, srv_train_job *jb, const char *why) {
    jb->state = SRV_TRAIN_FAILED;
    srv_copy_str(jb->error, sizeof jb->error, why);
    if (jb->finished[0] == '\0') srv_utc_now(jb->finished, sizeof jb->finished);
    jb->eta_s = -1;
    char err[DAE_ERR_LEN];
    if (srv_train_record_write(dir, jb, err, sizeof err) != DAE_OK) /* it stays failed in memory */
        srv_log("warning: cannot write the record of job %s: %s", jb->id, err);
    srv_log("job %s: failed: %s", jb->id, why);
}

void srv_train_records_load(const srv_config *cfg, srv_train_job ***jobs, int *n_jobs,
                            unsigned long long *next_id) {
    const char *dir = cfg->state_dir;
    srv_train_job **all = NULL;
    int n_all = 0;
    *jobs = NULL, *n_jobs = 0, *next_id = 1;
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
                                    ? srv_train_id_parse(e->d_name, (size_t)(t - 5 - e->d_name))
                                    : 0;
        unsigned long long *grown = id > 0 ? realloc(torn, sizeof *torn * (size_t)(n_torn + 1)) : NULL;
        if (grown != NULL) torn = grown, torn[n_torn++] = id;
    }
    rewinddir(d);
    while ((e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        if (e->d_name[0] == '.' || n < 6 || strcmp(e->d_name + n - 5, ".json") != 0 || strstr(e->d_name, ".tmp."))
            continue;
        char path[4096], why[DAE_ERR_LEN + 800] = "", unrunnable[RECORD_WHY_LEN];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unsigned long long fid = record_file_id(e->d_name);
        if (fid > max_id) max_id = fid; /* even a bad record's id is never given again */
        uint8_t *text = NULL;
        size_t len = 0;
        srv_train_job *jb = NULL;
        struct stat st;
        if (lstat(path, &st) != 0 || !S_ISREG(st.st_mode)) /* a FIFO would block the start, a link lead elsewhere */
            snprintf(why, sizeof why, "not a regular file");
        else if (dae_file_read(path, RECORD_MAX_BYTES, &text, &len, why, sizeof why) == DAE_OK)
            jb = job_from_record(e->d_name, (const char *)text, len, cfg->data_dir, cfg->train_memory_budget,
                                 cfg->train_threads, unrunnable, sizeof unrunnable, why, sizeof why);
        free(text);
        if (jb == NULL) {
            srv_log("warning: %s is not a valid job record (%s): skipped", path, why);
            continue;
        }
        srv_train_job **grown = realloc(all, sizeof *grown * (size_t)(n_all + 1));
        if (grown == NULL) {
            srv_train_job_free(jb);
            break;
        }
        all = grown;
        all[n_all++] = jb;
        int was_torn = 0;
        for (int i = 0; i < n_torn; i++) was_torn |= torn[i] == fid;
        if (jb->state == SRV_TRAIN_RUNNING) {
            fail_loaded(dir, jb, "interrupted: the server stopped while the job was running");
        } else if (jb->state == SRV_TRAIN_QUEUED && was_torn) {
            fail_loaded(dir, jb, "interrupted: the server stopped while the job was being started or cancelled");
        } else if (jb->state == SRV_TRAIN_QUEUED && unrunnable[0] != '\0') {
            char reason[sizeof jb->error];
            snprintf(reason, sizeof reason, "cannot run after the restart: %.400s", unrunnable);
            fail_loaded(dir, jb, reason);
        }
    }
    closedir(d);
    free(torn);
    if (n_all > 1) qsort(all, (size_t)n_all, sizeof *all, by_id);
    *jobs = all, *n_jobs = n_all, *next_id = max_id + 1;
}

void srv_train_remove_stale_temps(const char *dir) {
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

