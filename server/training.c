/* training.c - training jobs: the FIFO and its runner thread, the
 * training run with its commit point, cancellation and the training
 * metrics (see training.h). */
#include "training.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "clock.h"
#include "log.h"
#include "train_run.h"
#include "utf8.h"

/* Least time between two progress notices of a job, and between two
 * writes of its record at the end of an epoch. A record holds the job's
 * whole history, so writing it at every epoch made a job of many short
 * epochs quadratic: 4,000 epochs of 64 images took 29.4 s, 1,000 took
 * 3.2 s. The last epoch's end is written, and the record again when the
 * job ends. */
#define NOTIFY_EVERY_S 0.1
#define PERSIST_EVERY_S 1.0

/* A notice makes every reader's copy of the job's text (an event each
 * stream sends, the text made anew once for them): past 100 KB of record
 * they come further apart, one per NOTICE_BYTES_PER_S of it. With 24
 * event streams on a job of 10,000 one-step epochs (a 1.7 MB record at
 * its end), the streams read 1.5 GB, the event loop was busy 36% of the
 * time and /healthz took up to 174 ms. */
#define NOTICE_BYTES_PER_S 1e6

/* A job and what only this module knows of it. */
typedef struct {
    srv_train_job *job;
    atomic_int cancel;
    int cancel_asked;      /* a cancel succeeded: the job ends cancelled */
    int committed;         /* past the last cancellation point: installing its model */
    unsigned long version; /* bumped on every change the change callback sees */
    double last_notify;
    double last_persist;   /* when the running job's record was last written */
    int unsaved;           /* the last write of its record failed: the file is behind (retried) */
    srv_job_text *text;    /* the job's JSON as of version text_version (entry_text), or NULL */
    unsigned long text_version;
    srv_job_text *curve[2]; /* its loss curve as CSV and as SVG as of curve_version (entry_curve), or NULL */
    unsigned long curve_version[2];
} train_entry;

struct srv_training {
    const srv_config *cfg;
    srv_registry *registry;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    train_entry **all;          /* oldest first */
    int n;
    unsigned long long next_id; /* at most SRV_TRAIN_ID_MAX + 1 */
    int stopping;
    int abandoned;              /* shutdown stopped waiting for the runner: touch no record */
    pthread_t runner;
    int runner_started;
    srv_training_view_fn on_change;
    void *on_change_user;
    srv_training_running_fn on_running;
    void *on_running_user;
    /* Metrics. */
    unsigned long long finished[SRV_TRAIN_N_STATES];
    unsigned long long steps_total;
    unsigned long long promotions[2]; /* the promotion gate's decisions: kept, promoted */
    unsigned long long removed;       /* ended jobs removed past --train-keep */
    unsigned long long record_failures; /* writes of a job's record that failed */
    int cur_epoch;
    double cur_loss, cur_images_per_s;
};

/* How often the runner tries again to write the records it could not
 * (a full disk) while it waits for work. */
#define RECORD_RETRY_S 5.0

/* Writes the job's record (lock held). A failure is logged once and
 * counted; the job goes on, the entry is marked unsaved and the runner
 * writes it again (retry_unsaved) until it is written. Until then a
 * restart finds the record last written. */
static void persist(srv_training *t, train_entry *e) {
    if (t->abandoned) return; /* the record already says how the job ended */
    char err[DAE_ERR_LEN];
    if (srv_train_record_write(t->cfg->state_dir, e->job, err, sizeof err) != DAE_OK) {
        t->record_failures++;
        if (!e->unsaved) srv_log("warning: cannot write the record of job %s (tried again until it is): %s",
                                 e->job->id, err);
        e->unsaved = 1;
    } else if (e->unsaved) {
        srv_log("job %s: its record is written again", e->job->id);
        e->unsaved = 0;
    }
}

/* The number of jobs whose record file is behind them (lock held). */
static int count_unsaved(const srv_training *t) {
    int n = 0;
    for (int i = 0; i < t->n; i++) n += t->all[i]->unsaved;
    return n;
}

/* Writes again the records that could not be written, but for the
 * running job's, written at its own pace (lock held). */
static void retry_unsaved(srv_training *t) {
    for (int i = 0; i < t->n; i++)
        if (t->all[i]->unsaved && t->all[i]->job->state != SRV_TRAIN_RUNNING) persist(t, t->all[i]);
}

/* Marks a change of e, shows it to the change callback and wakes the
 * runner (lock held). */
static void notify(srv_training *t, train_entry *e) {
    e->version++;
    e->last_notify = dae_now_s();
    if (t->on_change != NULL) t->on_change(e->job, e->version, t->on_change_user);
    pthread_cond_broadcast(&t->cv);
}

static train_entry *entry_new(srv_train_job *jb) {
    train_entry *e = calloc(1, sizeof *e);
    if (e == NULL) return NULL;
    e->job = jb;
    e->version = 1;
    return e;
}

static void entry_free(train_entry *e) {
    if (e == NULL) return;
    srv_train_job_free(e->job);
    srv_job_text_release(e->text);
    srv_job_text_release(e->curve[0]);
    srv_job_text_release(e->curve[1]);
    free(e);
}

srv_job_text *srv_job_text_new(const void *bytes, size_t len) {
    srv_job_text *text = malloc(sizeof *text + len + 1);
    if (text != NULL) {
        atomic_init(&text->refs, 1);
        atomic_init(&text->deflated, NULL);
        text->crc32 = 0;
        text->len = len;
        memcpy(text->s, bytes, len);
        text->s[len] = '\0';
    }
    return text;
}

srv_job_text *srv_job_text_retain(srv_job_text *text) {
    if (text != NULL) atomic_fetch_add(&text->refs, 1);
    return text;
}

void srv_job_text_release(srv_job_text *text) {
    if (text != NULL && atomic_fetch_sub(&text->refs, 1) == 1) {
        srv_job_text_release(atomic_load(&text->deflated));
        free(text);
    }
}

/* A shared text of s (taken over; NULL: out of memory), one reference,
 * or NULL if out of memory. */
static srv_job_text *shared_text(char *s) {
    size_t len = s != NULL ? strlen(s) : 0;
    if (s != NULL && !srv_utf8_valid(s, len)) {
        /* strings from records and files must not break an event stream's JSON */
        char *fixed = srv_utf8_fix(s, len, &len);
        free(s);
        s = fixed;
    }
    srv_job_text *text = s != NULL ? srv_job_text_new(s, len) : NULL;
    free(s);
    return text;
}

/* The job's JSON text as of its last change (lock held; NULL if out of
 * memory), made once and shared by however many read it: event streams,
 * GET /train/{id} and GET /train each made their own, under this lock and
 * on the event loop, and a record holds the job's whole history. With 30
 * event streams on a job of one-step epochs 4 s into its run, /denoise
 * fell from 12,000 to 70 requests/s; each stream then copied the text
 * twice more per event. A running job's text is as old as its last
 * progress notice at most. */
static srv_job_text *entry_text(train_entry *e) {
    if (e->text == NULL || e->text_version != e->version) {
        srv_job_text_release(e->text);
        e->text = shared_text(srv_train_job_text(e->job));
        e->text_version = e->version;
        /* an ended job's history is in its text: not kept twice */
        if (srv_train_job_finished(e->job)) srv_train_job_drop_printed(e->job);
    }
    return e->text;
}

/* The job's loss curve, as CSV (svg 0) or SVG (1), as of its last
 * change (lock held; NULL if out of memory), made once and shared as the
 * text is: a chart took 5.5 ms to draw, on the event loop, for every
 * request, and one client asking for it in a loop took the loop whole
 * (/denoise beside it fell from 11,000 to 560 requests/s). */
static srv_job_text *entry_curve(train_entry *e, int svg) {
    if (e->curve[svg] == NULL || e->curve_version[svg] != e->version) {
        srv_job_text_release(e->curve[svg]);
        e->curve[svg] = shared_text(svg ? srv_train_job_loss_svg(e->job) : srv_train_job_loss_csv(e->job));
        e->curve_version[svg] = e->version;
    }
    return e->curve[svg];
}

static train_entry *find_entry(srv_training *t, const char *id) {
    for (int i = 0; i < t->n; i++)
        if (strcmp(t->all[i]->job->id, id) == 0) return t->all[i];
    return NULL;
}

/* Removes the oldest ended jobs past --train-keep, their records first
 * (lock held): called whenever a job ends, and at start, where a lower
 * --train-keep than before takes effect. The array is in id order, so
 * the oldest go first; queued and running jobs are never removed. With
 * at least one ended job kept, the largest id stays on disk (the newest
 * job is queued, running or among those kept), so a restart never gives
 * an id twice. A record that cannot be removed stops it: the job stays
 * listed, as a restart would read it. */
static void remove_old_jobs(srv_training *t) {
    int keep = t->cfg->train_keep, ended = 0;
    if (keep <= 0 || t->abandoned) return;
    for (int i = 0; i < t->n; i++) ended += srv_train_job_finished(t->all[i]->job);
    for (int i = 0; i < t->n && ended > keep;) {
        train_entry *e = t->all[i];
        if (!srv_train_job_finished(e->job)) {
            i++;
            continue;
        }
        char err[DAE_ERR_LEN];
        if (srv_train_record_remove(t->cfg->state_dir, e->job, err, sizeof err) != DAE_OK) {
            srv_log("warning: job %s is kept past --train-keep %d: %s", e->job->id, keep, err);
            return;
        }
        srv_log("job %s: removed (--train-keep %d: the newest ended jobs are kept)", e->job->id, keep);
        memmove(&t->all[i], &t->all[i + 1], sizeof *t->all * (size_t)(t->n - i - 1));
        t->n--;
        ended--;
        t->removed++;
        entry_free(e);
    }
}

/* ------------------------------------------------------------ the run */

typedef struct {
    srv_training *t;
    train_entry *e;
    long last_total;
    double last_epoch_end;
} run_ctx;

/* dae_train's progress callback, on the training thread. */
static void on_progress(const dae_train_progress *p, void *user) {
    run_ctx *c = user;
    srv_training *t = c->t;
    srv_train_job *jb = c->e->job;
    pthread_mutex_lock(&t->mu);
    jb->epoch = p->epoch;
    jb->step = p->step;
    jb->steps_per_epoch = p->steps_per_epoch;
    jb->total_steps = p->total_steps;
    jb->loss = p->loss;
    jb->images_per_s = p->images_per_s;
    jb->elapsed_s = p->elapsed_s;
    jb->progress = p->run_fraction; /* a job never resumes: its run is the whole training */
    jb->eta_s = p->eta_s;
    t->steps_total += (unsigned long long)(p->total_steps - c->last_total);
    c->last_total = p->total_steps;
    t->cur_epoch = p->epoch;
    t->cur_loss = p->loss;
    t->cur_images_per_s = p->images_per_s;
    /* The job's own step number: its curve starts at 1 even when the
     * optimiser's count does not. */
    srv_train_job_log_step(jb, (long)(p->epoch - 1) * p->steps_per_epoch + p->step, p->loss);
    int last_epoch = p->epoch_done && p->epoch == jb->epochs;
    double now = dae_now_s();
    if (p->epoch_done && p->epoch >= 1 && p->epoch <= jb->epochs) {
        srv_train_epoch *ep = &jb->history[p->epoch - 1];
        ep->loss = p->epoch_loss;
        ep->seconds = p->elapsed_s - c->last_epoch_end;
        c->last_epoch_end = p->elapsed_s;
        ep->has_test = p->has_test;
        ep->mse = p->test_mse, ep->psnr = p->test_psnr, ep->ssim = p->test_ssim;
        if (jb->n_history < p->epoch) jb->n_history = p->epoch;
        if (last_epoch || now - c->e->last_persist >= PERSIST_EVERY_S) {
            persist(t, c->e);
            retry_unsaved(t); /* ended jobs' records a full disk held back */
            c->e->last_persist = now;
        }
    }
    /* the last epoch's end is shown at once: evaluating, saving and
     * installing the model may take a while */
    double text_len = c->e->text != NULL ? (double)c->e->text->len : 0;
    if (last_epoch || now - c->e->last_notify >= fmax(NOTIFY_EVERY_S, text_len / NOTICE_BYTES_PER_S))
        notify(t, c->e);
    pthread_mutex_unlock(&t->mu);
}

/* Test images the promotion gate compares models on when the request's
 * eval_limit does not say (0 there only turns the per-epoch evaluation
 * off). */
enum { GATE_IMAGES = 1000 };

/* Adds PSNR of m on the first n test images of run's data set, under
 * noise with the evaluation seed, as key to o; returns it (NAN when the
 * evaluation failed, err saying why). */
static double gate_psnr(const dae_model *m, const dae_train_run *run, int n, cJSON *o, const char *key, char *err,
                        size_t errlen) {
    const dae_idx_images *test = &dae_train_run_data(run)->test_images;
    dae_quality q = {0}, noisy = {0};
    if (dae_evaluate(m, NULL, test->pixels, n, &dae_train_run_config(run)->noise, DAE_EVAL_SEED, &q, &noisy, err,
                     errlen) != DAE_OK)
        return NAN;
    cJSON_AddNumberToObject(o, key, dae_quality_psnr(&q));
    return dae_quality_psnr(&q);
}

/* The promotion gate: the job's model and the model the gate names, on the
 * same held-out test images of the job's data set with the same seeded
 * noise (the job's own, noise_text). Returns 1 when the PSNR gain reaches
 * the bar; *verdict is the job's "promotion" object: both scores, the gain,
 * the decision and its reason (NULL if out of memory). */
static int gate_decide(srv_training *t, const dae_train_run *run, const srv_train_gate *gate, const char *noise_text,
                       cJSON **verdict) {
    const dae_train_config *cfg = dae_train_run_config(run);
    const dae_idx_images *test = &dae_train_run_data(run)->test_images;
    int n = dae_limit_count(cfg->eval_limit > 0 ? cfg->eval_limit : GATE_IMAGES, test->count);
    int against_active = strcmp(gate->against, "active") == 0;
    srv_model *other = srv_registry_acquire(t->registry, against_active ? NULL : gate->against);
    cJSON *o = cJSON_CreateObject();
    char err[DAE_ERR_LEN] = "", reason[DAE_ERR_LEN + DAE_NAME_MAX + 96] = "";
    cJSON_AddStringToObject(o, "against", other != NULL ? other->name : gate->against);
    cJSON_AddStringToObject(o, "metric", "psnr");
    cJSON_AddNumberToObject(o, "test_images", n);
    cJSON_AddStringToObject(o, "noise", noise_text);
    cJSON_AddNumberToObject(o, "min_gain_db", gate->min_gain_db);
    double mine = gate_psnr(dae_train_run_model(run), run, n, o, "candidate_psnr", err, sizeof err), theirs = NAN;
    if (isnan(mine)) {
        snprintf(reason, sizeof reason, "the job's model could not be evaluated: %s", err);
    } else if (other == NULL) {
        snprintf(reason, sizeof reason, "there is no model \"%s\" to compare with", gate->against);
    } else if (dae_model_check_images(&other->net, test, other->name, NULL, err, sizeof err) != DAE_OK) {
        snprintf(reason, sizeof reason, "%s: the two models cannot be compared on these images", err);
    } else if (isnan(theirs = gate_psnr(&other->net, run, n, o, "baseline_psnr", err, sizeof err))) {
        snprintf(reason, sizeof reason, "model \"%s\" could not be evaluated: %s", other->name, err);
    }
    int promoted = reason[0] == '\0' && mine - theirs >= gate->min_gain_db;
    if (reason[0] == '\0') {
        cJSON_AddNumberToObject(o, "gain_db", mine - theirs);
        snprintf(reason, sizeof reason, "PSNR %.2f dB against %.2f dB of %s: a gain of %.2f dB, %s the bar of %.2f dB",
                 mine, theirs, other->name, mine - theirs, promoted ? "reaching" : "below", gate->min_gain_db);
    }
    cJSON_AddStringToObject(o, "decision", promoted ? "promoted" : "kept");
    cJSON_AddStringToObject(o, "reason", reason);
    srv_model_release(other);
    *verdict = o;
    return promoted;
}

/* Fills a job's error, which every client may read, for the step what
 * that ended with st and the sentence err: a full disk in words of its
 * own, any other error with the server's directories named by their
 * flags (srv_config_hide_dirs); the log has err as it was. */
static void job_error(char *error, size_t errlen, const srv_config *cfg, const srv_train_job *jb, const char *what,
                      dae_status st, const char *err) {
    char shown[DAE_ERR_LEN];
    int hidden = srv_config_hide_dirs(cfg, err, shown, sizeof shown);
    if (st == DAE_ERR_NO_SPACE || hidden) srv_log("job %s: %s: %s", jb->id, what, err);
    snprintf(error, errlen, "%s: %s", what,
             st == DAE_ERR_NO_SPACE ? "no space left on the server's storage (an admin must free some)" : shown);
}

/* The training run of one job, from its request to its model installed:
 * the library's run (io/train_run.h: data set, network, training, the
 * model with its training facts written to a temporary file), then the
 * commit point, the install and the activation if asked. Returns the
 * final state, the reason of a failure in error (errlen bytes). Runs on
 * the runner thread without the lock (only the runner writes the job
 * meanwhile), taking it for what others read. */
static srv_train_state run_job(srv_training *t, train_entry *e, char *error, size_t errlen) {
    srv_train_job *jb = e->job;
    const srv_config *cfg = t->cfg;
    char err[DAE_ERR_LEN] = "";
    int active = 0;
    if (srv_registry_name_taken(t->registry, jb->model_name, &active) && (!jb->replace || active)) {
        if (active) snprintf(error, errlen, "model name taken: \"%s\" is the active model, which a job never replaces",
                             jb->model_name);
        else snprintf(error, errlen, "model name taken: a model named \"%s\" exists (and replace is false)",
                      jb->model_name);
        return SRV_TRAIN_FAILED;
    }
    dae_train_request req;
    dae_train_run *run = NULL;
    srv_train_state result = SRV_TRAIN_FAILED;
    if (dae_train_request_from_json(jb->request, SRV_TRAIN_SERVER_FIELDS, &req, err, sizeof err) != DAE_OK) {
        snprintf(error, errlen, "request: %s", err);
        return SRV_TRAIN_FAILED;
    }
    req.cfg.threads = cfg->train_threads;
    const char *base = srv_train_job_req_str(jb, "base_model");
    if (base[0] != '\0') { /* looked up now: it was there when the job was submitted */
        srv_model *bm = srv_registry_acquire(t->registry, base);
        req.base_model = bm != NULL ? strdup(bm->path) : NULL;
        srv_model_release(bm);
        if (req.base_model == NULL) {
            snprintf(error, errlen, "base model \"%s\": %s", base, bm == NULL ? "no such model any more" : "out of memory");
            goto done;
        }
    }
    run_ctx ctx = {t, e, 0, 0};
    dae_status opened = dae_train_run_open(&run, &req, cfg->data_dir, NULL, err, sizeof err);
    if (opened != DAE_OK) {
        job_error(error, errlen, cfg, jb, "reading the data set and the base model", opened, err);
        goto done;
    }
    dae_status st = dae_train_run_train(run, on_progress, &ctx, &e->cancel, err, sizeof err);
    if (st == DAE_ERR_CANCELLED) {
        result = SRV_TRAIN_CANCELLED;
        goto done;
    }
    if (st != DAE_OK) {
        snprintf(error, errlen, "training: %s", err);
        goto done;
    }
    srv_train_gate gate;
    srv_train_gate_of(jb->request, &gate);
    int activate = gate.activate == 2;
    if (gate.activate == 1) {
        cJSON *verdict = NULL;
        activate = gate_decide(t, run, &gate, srv_train_job_req_str(jb, "noise"), &verdict);
        pthread_mutex_lock(&t->mu);
        jb->promotion = verdict;
        t->promotions[activate]++;
        pthread_mutex_unlock(&t->mu);
    }
    /* The model goes to a temporary name first (the pid in it lets a later
     * start remove it if this process dies) and reaches its own name only
     * past the commit point below. Its metadata is `dae train`'s, plus the
     * job's id. */
    char path[4096], tmp[4200];
    mkdir(cfg->models_dir, 0755);
    snprintf(path, sizeof path, "%s/%s.safetensors", cfg->models_dir, jb->model_name);
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld.job%s", path, (long)getpid(), jb->id);
    if (atomic_load(&e->cancel)) {
        result = SRV_TRAIN_CANCELLED;
        goto done;
    }
    const char *keys[] = {"train_job"}, *values[] = {jb->id};
    dae_status saved = dae_train_run_save(run, tmp, DAE_SERVER_VERSION, keys, values, 1, err, sizeof err);
    if (saved != DAE_OK) {
        job_error(error, errlen, cfg, jb, "saving the model", saved, err);
        goto done;
    }
    /* The commit point: a cancel that came before it wins (the job ends
     * cancelled, its model is never seen); one after it is refused
     * (srv_training_cancel reads committed under the same lock). */
    pthread_mutex_lock(&t->mu);
    int cancelled = atomic_load(&e->cancel);
    if (!cancelled) e->committed = 1;
    pthread_mutex_unlock(&t->mu);
    if (cancelled) {
        unlink(tmp);
        result = SRV_TRAIN_CANCELLED;
        goto done;
    }
    dae_status rs = srv_registry_install(t->registry, jb->model_name, tmp, jb->replace, err, sizeof err);
    if (rs != DAE_OK) {
        unlink(tmp);
        job_error(error, errlen, cfg, jb,
                  rs == DAE_ERR_EXISTS || rs == DAE_ERR_IN_USE ? "model name taken" : "installing the model", rs, err);
        goto done;
    }
    srv_model *nm = srv_registry_acquire(t->registry, jb->model_name);
    if (nm != NULL) {
        pthread_mutex_lock(&t->mu);
        srv_copy_str(jb->model_version, sizeof jb->model_version, nm->version);
        pthread_mutex_unlock(&t->mu);
        srv_model_release(nm);
    }
    if (activate) {
        dae_status as = srv_registry_activate(t->registry, jb->model_name, NULL, err, sizeof err);
        if (as != DAE_OK) {
            job_error(error, errlen, cfg, jb, "activating the new model", as, err);
            goto done;
        }
        pthread_mutex_lock(&t->mu);
        jb->activated = 1;
        pthread_mutex_unlock(&t->mu);
    }
    srv_log("job %s: model %s written to %s (%.1f s)", jb->id, jb->model_name, path, dae_train_run_seconds(run));
    result = SRV_TRAIN_SUCCEEDED;
done:
    dae_train_run_free(run);
    dae_train_request_free(&req);
    return result;
}


/* ------------------------------------------------------------ the runner */

/* Tells the on_running function that a job starts or ended (lock held). */
static void set_running(srv_training *t, int running) {
    if (t->on_running != NULL) t->on_running(t->on_running_user, running);
}

static void *runner(void *arg) {
    srv_training *t = arg;
    pthread_mutex_lock(&t->mu);
    for (;;) {
        train_entry *e = NULL;
        while (!t->stopping) {
            for (int i = 0; i < t->n && e == NULL; i++)
                if (t->all[i]->job->state == SRV_TRAIN_QUEUED) e = t->all[i];
            if (e != NULL) break;
            if (count_unsaved(t) == 0) {
                pthread_cond_wait(&t->cv, &t->mu);
                continue;
            }
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_sec += (time_t)RECORD_RETRY_S;
            if (pthread_cond_timedwait(&t->cv, &t->mu, &until) == ETIMEDOUT) retry_unsaved(t);
        }
        if (t->stopping) break;
        srv_train_job *jb = e->job;
        jb->state = SRV_TRAIN_RUNNING;
        set_running(t, 1);
        e->committed = 0;
        srv_utc_now(jb->started, sizeof jb->started);
        persist(t, e);
        e->last_persist = dae_now_s();
        notify(t, e);
        srv_log("job %s: training %s for %d epochs into model %s", jb->id, srv_train_job_req_str(jb, "dataset"),
                jb->epochs, jb->model_name);
        pthread_mutex_unlock(&t->mu);
        char error[sizeof jb->error] = "";
        srv_train_state result = run_job(t, e, error, sizeof error);
        pthread_mutex_lock(&t->mu);
        if (t->abandoned) break; /* shutdown recorded it and stopped waiting */
        set_running(t, 0);
        if (e->cancel_asked && result != SRV_TRAIN_SUCCEEDED) { /* a cancel succeeded */
            result = SRV_TRAIN_CANCELLED;
            error[0] = '\0';
        }
        if (result == SRV_TRAIN_CANCELLED && t->stopping && !e->cancel_asked) {
            result = SRV_TRAIN_FAILED;
            snprintf(error, sizeof error, "interrupted: the server shut down during the job");
        }
        jb->state = result;
        srv_copy_str(jb->error, sizeof jb->error, error);
        if (result == SRV_TRAIN_SUCCEEDED) jb->progress = 1;
        jb->eta_s = -1;
        srv_utc_now(jb->finished, sizeof jb->finished);
        t->finished[result]++;
        persist(t, e);
        notify(t, e);
        srv_log("job %s: %s%s%s", jb->id, srv_train_state_name(result), error[0] ? ": " : "", error);
        remove_old_jobs(t);
    }
    pthread_mutex_unlock(&t->mu);
    return NULL;
}

/* ------------------------------------------------------------ the API */

srv_training *srv_training_start(const srv_config *cfg, srv_registry *registry, char *err,
                                 size_t errlen) {
    srv_training *t = calloc(1, sizeof *t);
    if (t == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    t->cfg = cfg;
    t->registry = registry;
    pthread_mutex_init(&t->mu, NULL);
    pthread_cond_init(&t->cv, NULL);
    if (cfg->models_dir != NULL) srv_train_remove_stale_temps(cfg->models_dir);
    srv_train_job **jobs = NULL;
    int n = 0;
    srv_train_records_load(cfg, &jobs, &n, &t->next_id);
    t->all = calloc((size_t)(n > 0 ? n : 1), sizeof *t->all);
    for (int i = 0; i < n && t->all != NULL; i++) {
        train_entry *e = entry_new(jobs[i]);
        if (e == NULL) break;
        t->all[t->n++] = e;
    }
    for (int i = t->n; i < n; i++) srv_train_job_free(jobs[i]);
    free(jobs);
    if (t->all == NULL || t->n < n) {
        snprintf(err, errlen, "out of memory reading the job records of %s", cfg->state_dir);
        srv_training_free(t);
        return NULL;
    }
    remove_old_jobs(t);
    /* Every job's text is made now rather than by its first reader: after
     * a restart with 100 jobs of 10,000 epochs, the first GET /train
     * printed their 152 MB on the event loop, 5.9 s. */
    for (int i = 0; i < t->n; i++) entry_text(t->all[i]);
    if (pthread_create(&t->runner, NULL, runner, t) != 0) {
        snprintf(err, errlen, "cannot start the training thread");
        srv_training_free(t);
        return NULL;
    }
    t->runner_started = 1;
    return t;
}

void srv_training_quiesce(srv_training *t) {
    if (t == NULL) return;
    pthread_mutex_lock(&t->mu);
    t->stopping = 1;
    for (int i = 0; i < t->n; i++)
        if (t->all[i]->job->state == SRV_TRAIN_RUNNING) atomic_store(&t->all[i]->cancel, 1);
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
}

int srv_training_stop(srv_training *t, double seconds) {
    if (t == NULL) return 0;
    srv_training_quiesce(t);
    int rc = 0;
    if (t->runner_started) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        if (seconds < 0) seconds = 0;
        until.tv_sec += (time_t)seconds;
        until.tv_nsec += (long)((seconds - floor(seconds)) * 1e9);
        if (until.tv_nsec >= 1000000000L) until.tv_sec++, until.tv_nsec -= 1000000000L;
        rc = pthread_timedjoin_np(t->runner, NULL, &until) == 0 ? 0 : -1;
    }
    if (rc != 0) {
        /* The running job is inside one long step: record it interrupted
         * now and let the process end without it. */
        pthread_mutex_lock(&t->mu);
        for (int i = 0; i < t->n; i++)
            if (t->all[i]->job->state == SRV_TRAIN_RUNNING) {
                srv_train_job *jb = t->all[i]->job;
                jb->state = SRV_TRAIN_FAILED;
                snprintf(jb->error, sizeof jb->error, "interrupted: the server shut down during the job");
                srv_utc_now(jb->finished, sizeof jb->finished);
                jb->eta_s = -1;
                persist(t, t->all[i]);
                notify(t, t->all[i]);
                srv_log("job %s: failed: interrupted (shutdown did not wait for its training step)", jb->id);
            }
        t->abandoned = 1;
        pthread_mutex_unlock(&t->mu);
    } else {
        t->runner_started = 0;
    }
    return rc;
}

void srv_training_free(srv_training *t) {
    if (t == NULL) return;
    for (int i = 0; i < t->n; i++) entry_free(t->all[i]);
    free(t->all);
    pthread_mutex_destroy(&t->mu);
    pthread_cond_destroy(&t->cv);
    free(t);
}

void srv_training_on_change(srv_training *t, srv_training_view_fn fn, void *user) {
    pthread_mutex_lock(&t->mu);
    t->on_change = fn;
    t->on_change_user = user;
    pthread_mutex_unlock(&t->mu);
}

/* Checks that the model req would write is free (lock held): no model of
 * its name exists, or the request asks to replace one that is not active;
 * no queued or running job writes that name. A request without a
 * model_name gets DATASET-jobID, and ids whose such name is taken are
 * passed over. Returns DAE_OK, or the status of srv_training_submit with
 * err filled. */
static dae_status name_free_for(srv_training *t, const cJSON *req, char *err, size_t errlen) {
    const cJSON *mn = cJSON_GetObjectItemCaseSensitive(req, "model_name");
    const cJSON *ds = cJSON_GetObjectItemCaseSensitive(req, "dataset");
    int replace = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(req, "replace"));
    char name[DAE_NAME_MAX + 1];
    int active = 0;
    if (!cJSON_IsString(mn)) {
        for (int tries = 0; t->next_id <= SRV_TRAIN_ID_MAX; tries++, t->next_id++) {
            snprintf(name, sizeof name, "%.40s-job%llu", cJSON_IsString(ds) ? ds->valuestring : "", t->next_id);
            int pending = 0;
            for (int i = 0; i < t->n && !pending; i++)
                pending = !srv_train_job_finished(t->all[i]->job) && strcmp(t->all[i]->job->model_name, name) == 0;
            if (tries >= 10000 || (!pending && !srv_registry_name_taken(t->registry, name, NULL))) return DAE_OK;
        }
        return dae_fail(err, errlen, DAE_ERR_TOO_LARGE,
                        "every job id up to %llu is taken; remove old records from the state directory",
                        SRV_TRAIN_ID_MAX);
    }
    srv_copy_str(name, sizeof name, mn->valuestring);
    for (int i = 0; i < t->n; i++) {
        const srv_train_job *jb = t->all[i]->job;
        if (!srv_train_job_finished(jb) && strcmp(jb->model_name, name) == 0)
            return dae_fail(err, errlen, DAE_ERR_CONFLICT,
                            "job %s, %s, will write a model named \"%s\"; choose another model_name", jb->id,
                            srv_train_state_name(jb->state), name);
    }
    if (!srv_registry_name_taken(t->registry, name, &active)) return DAE_OK;
    if (active)
        return dae_fail(err, errlen, DAE_ERR_IN_USE,
                        "\"%s\" is the active model, which a job never replaces; choose another model_name, or "
                        "activate another model first", name);
    if (!replace)
        return dae_fail(err, errlen, DAE_ERR_EXISTS,
                        "a model named \"%s\" already exists; choose another model_name, or ask \"replace\": true "
                        "to replace it", name);
    return DAE_OK;
}

void srv_training_on_running(srv_training *t, srv_training_running_fn fn, void *user) {
    pthread_mutex_lock(&t->mu);
    t->on_running = fn;
    t->on_running_user = user;
    for (int i = 0; i < t->n && fn != NULL; i++)
        if (t->all[i]->job->state == SRV_TRAIN_RUNNING) fn(user, 1);
    pthread_mutex_unlock(&t->mu);
}

dae_status srv_training_submit(srv_training *t, cJSON *req, const char *request_id, srv_training_view_fn fn,
                               void *user, char *err, size_t errlen) {
    pthread_mutex_lock(&t->mu);
    int queued = 0;
    for (int i = 0; i < t->n; i++) queued += t->all[i]->job->state == SRV_TRAIN_QUEUED;
    dae_status st = DAE_OK;
    if (t->stopping) {
        st = dae_fail(err, errlen, DAE_ERR_STOPPING, "the server is shutting down and takes no new jobs");
    } else if (queued >= t->cfg->train_queue) {
        st = dae_fail(err, errlen, DAE_ERR_BUSY,
                      "%d training jobs are already waiting (--train-queue %d); retry when one has started", queued,
                      t->cfg->train_queue);
    } else if (t->next_id > SRV_TRAIN_ID_MAX) {
        st = dae_fail(err, errlen, DAE_ERR_TOO_LARGE,
                      "every job id up to %llu is taken; remove old records from the state directory",
                      SRV_TRAIN_ID_MAX);
    } else {
        st = name_free_for(t, req, err, errlen);
    }
    if (st != DAE_OK) {
        cJSON_Delete(req);
        pthread_mutex_unlock(&t->mu);
        return st;
    }
    char id[24];
    snprintf(id, sizeof id, "%llu", t->next_id);
    srv_train_job *jb = srv_train_job_new(req, id);
    train_entry *e = jb != NULL ? entry_new(jb) : NULL;
    train_entry **grown = e != NULL ? realloc(t->all, sizeof *grown * (size_t)(t->n + 1)) : NULL;
    if (grown == NULL) {
        st = dae_fail(err, errlen, DAE_ERR_NOMEM, "out of memory");
    } else {
        t->all = grown;
        jb->replace = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(jb->request, "replace"));
        if (request_id != NULL) srv_copy_str(jb->request_id, sizeof jb->request_id, request_id);
        srv_utc_now(jb->created, sizeof jb->created);
        /* A job is accepted once its record is written, so that a restart
         * knows it (a full disk is answered 507, and no job is made). */
        char why[DAE_ERR_LEN];
        st = srv_train_record_create(t->cfg->state_dir, jb, why, sizeof why);
        if (st != DAE_OK) dae_fail(err, errlen, st, "no job was made: its record cannot be written (%s)", why);
    }
    if (st != DAE_OK) {
        if (e != NULL) entry_free(e);
        else srv_train_job_free(jb);
        pthread_mutex_unlock(&t->mu);
        return st;
    }
    t->next_id++;
    t->all[t->n++] = e;
    if (fn != NULL) fn(jb, e->version, user);
    pthread_cond_broadcast(&t->cv);
    pthread_mutex_unlock(&t->mu);
    return DAE_OK;
}

dae_status srv_training_cancel(srv_training *t, const char *id, srv_training_view_fn fn, void *user, char *err,
                               size_t errlen) {
    pthread_mutex_lock(&t->mu);
    train_entry *e = find_entry(t, id);
    srv_train_job *jb = e != NULL ? e->job : NULL;
    dae_status st = DAE_OK;
    if (jb == NULL) {
        st = dae_fail(err, errlen, DAE_ERR_NOT_FOUND, "no training job %s (GET /train lists them)", id);
    } else if (srv_train_job_finished(jb)) {
        st = dae_fail(err, errlen, DAE_ERR_CONFLICT, "job %s has already %s", id, srv_train_state_name(jb->state));
    } else if (e->committed) {
        st = dae_fail(err, errlen, DAE_ERR_IN_USE,
                      "job %s has finished training and is installing model %s; it can no longer be cancelled", id,
                      jb->model_name);
    } else if (jb->state == SRV_TRAIN_QUEUED) {
        /* Cancelled once its record says so, or a restart would run it (a
         * full disk is answered 507, and the job stays queued). */
        jb->state = SRV_TRAIN_CANCELLED;
        srv_utc_now(jb->finished, sizeof jb->finished);
        st = srv_train_record_write(t->cfg->state_dir, jb, err, errlen);
        if (st != DAE_OK) {
            jb->state = SRV_TRAIN_QUEUED;
            jb->finished[0] = '\0';
        } else {
            e->cancel_asked = 1;
            t->finished[SRV_TRAIN_CANCELLED]++;
            notify(t, e);
            srv_log("job %s: cancelled while queued", jb->id);
            if (fn != NULL) fn(jb, e->version, user);
            remove_old_jobs(t);
        }
    } else {
        /* Whatever happens next, the job ends cancelled: the runner
         * finishes it within a step. */
        e->cancel_asked = 1;
        atomic_store(&e->cancel, 1);
        if (fn != NULL) fn(jb, e->version, user);
    }
    pthread_mutex_unlock(&t->mu);
    return st;
}

dae_status srv_training_view(srv_training *t, const char *id, srv_training_view_fn fn, void *user) {
    pthread_mutex_lock(&t->mu);
    train_entry *e = find_entry(t, id);
    if (e != NULL) fn(e->job, e->version, user);
    pthread_mutex_unlock(&t->mu);
    return e != NULL ? DAE_OK : DAE_ERR_NOT_FOUND;
}

dae_status srv_training_text(srv_training *t, const char *id, unsigned long seen, srv_job_text **text,
                             unsigned long *version, int *finished) {
    pthread_mutex_lock(&t->mu);
    train_entry *e = find_entry(t, id);
    *text = NULL;
    if (e != NULL) {
        if (version != NULL) *version = e->version;
        if (finished != NULL) *finished = srv_train_job_finished(e->job);
        *text = srv_job_text_retain(e->version != seen ? entry_text(e) : NULL);
    }
    pthread_mutex_unlock(&t->mu);
    return e != NULL ? DAE_OK : DAE_ERR_NOT_FOUND;
}

dae_status srv_training_loss(srv_training *t, const char *id, int svg, srv_job_text **curve) {
    pthread_mutex_lock(&t->mu);
    train_entry *e = find_entry(t, id);
    *curve = srv_job_text_retain(e != NULL ? entry_curve(e, svg != 0) : NULL);
    pthread_mutex_unlock(&t->mu);
    return e != NULL ? DAE_OK : DAE_ERR_NOT_FOUND;
}

dae_status srv_training_texts(srv_training *t, srv_job_text ***texts, int *n) {
    pthread_mutex_lock(&t->mu);
    *n = 0;
    *texts = malloc(((size_t)t->n + 1) * sizeof **texts);
    for (int i = t->n - 1; *texts != NULL && i >= 0; i--) {
        srv_job_text *text = srv_job_text_retain(entry_text(t->all[i]));
        if (text != NULL) (*texts)[(*n)++] = text; /* out of memory: the job is left out, not the list refused */
    }
    pthread_mutex_unlock(&t->mu);
    return *texts != NULL ? DAE_OK : DAE_ERR_NOMEM;
}

char *srv_training_metrics(srv_training *t) {
    char *doc = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&doc, &len);
    if (f == NULL) return NULL;
    pthread_mutex_lock(&t->mu);
    int count[SRV_TRAIN_N_STATES] = {0};
    for (int i = 0; i < t->n; i++) count[t->all[i]->job->state]++;
    fprintf(f, "# HELP dae_train_jobs Training jobs known to the server, by state.\n# TYPE dae_train_jobs gauge\n");
    for (int s = 0; s < SRV_TRAIN_N_STATES; s++)
        fprintf(f, "dae_train_jobs{state=\"%s\"} %d\n", srv_train_state_name((srv_train_state)s), count[s]);
    fprintf(f, "# HELP dae_train_jobs_finished_total Training jobs finished since the start, by outcome.\n"
               "# TYPE dae_train_jobs_finished_total counter\n");
    for (int s = SRV_TRAIN_SUCCEEDED; s < SRV_TRAIN_N_STATES; s++)
        fprintf(f, "dae_train_jobs_finished_total{state=\"%s\"} %llu\n", srv_train_state_name((srv_train_state)s),
                t->finished[s]);
    fprintf(f, "# HELP dae_train_steps_total Optimiser steps of training jobs since the start.\n"
               "# TYPE dae_train_steps_total counter\ndae_train_steps_total %llu\n", t->steps_total);
    fprintf(f, "# HELP dae_train_promotions_total Decisions of the promotion gate since the start: a job's model "
               "activated (promoted) or not (kept).\n# TYPE dae_train_promotions_total counter\n"
               "dae_train_promotions_total{decision=\"promoted\"} %llu\n"
               "dae_train_promotions_total{decision=\"kept\"} %llu\n", t->promotions[1], t->promotions[0]);
    fprintf(f, "# HELP dae_train_jobs_removed_total Ended training jobs removed since the start, oldest first, "
               "past --train-keep.\n# TYPE dae_train_jobs_removed_total counter\ndae_train_jobs_removed_total %llu\n",
            t->removed);
    fprintf(f, "# HELP dae_train_record_write_failures_total Writes of a training job's record to the state "
               "directory that failed (a full disk); such a record is written again once there is room, tried at "
               "least every %.0f s.\n"
               "# TYPE dae_train_record_write_failures_total counter\ndae_train_record_write_failures_total %llu\n",
            RECORD_RETRY_S, t->record_failures);
    fprintf(f, "# HELP dae_train_records_unsaved Training jobs whose record file is behind them: a restart would "
               "find their last written state.\n# TYPE dae_train_records_unsaved gauge\ndae_train_records_unsaved %d\n",
            count_unsaved(t));
    fprintf(f, "# HELP dae_train_epoch Epoch of the running (or last) training job.\n"
               "# TYPE dae_train_epoch gauge\ndae_train_epoch %d\n", t->cur_epoch);
    fprintf(f, "# HELP dae_train_loss Last batch loss (MSE) of the running (or last) training job.\n"
               "# TYPE dae_train_loss gauge\ndae_train_loss %.9g\n", t->cur_loss);
    fprintf(f, "# HELP dae_train_images_per_second Training throughput of the running (or last) job.\n"
               "# TYPE dae_train_images_per_second gauge\ndae_train_images_per_second %.1f\n", t->cur_images_per_s);
    pthread_mutex_unlock(&t->mu);
    if (fclose(f) != 0) {
        free(doc);
        return NULL;
    }
    return doc;
}

srv_registry *srv_training_registry(srv_training *t) { return t->registry; }

int srv_training_dataset_in_use(srv_training *t, const char *name, char *job, size_t joblen) {
    int used = 0;
    pthread_mutex_lock(&t->mu);
    for (int i = 0; i < t->n && !used; i++) {
        const srv_train_job *jb = t->all[i]->job;
        used = !srv_train_job_finished(jb) && strcmp(srv_train_job_req_str(jb, "dataset"), name) == 0;
        if (used) snprintf(job, joblen, "%s", jb->id);
    }
    pthread_mutex_unlock(&t->mu);
    return used;
}
