/* train_http.c - the HTTP face of training: validation of POST /train,
 * the training routes' answers and the Server-Sent Events stream of a
 * job (see train_http.h). */
#include "train_http.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cJSON.h>
#include <microhttpd.h>

#include "http.h"
#include "jsontext.h"
#include "train_request.h"
#include "utf8.h"

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

/* Fills a with the error answer of st (with its sentence msg) for work
 * of that kind: the HTTP edge's one table (http.h) chooses. */
static void fail_status(srv_train_answer *a, srv_edge_kind kind, dae_status st, const char *msg) {
    const char *code;
    int status = srv_http_error_of(kind, st, &code);
    fail_answer(a, status, code, "%s", srv_http_error_message(st, msg));
}

int srv_train_validate(const char *body, size_t len, const char *data_dir, srv_train_answer *a) {
    return srv_train_validate_memory(body, len, data_dir, NULL, 0, 1, a);
}

int srv_train_validate_memory(const char *body, size_t len, const char *data_dir, srv_registry *registry,
                              long long train_budget, int threads, srv_train_answer *a) {
    memset(a, 0, sizeof *a);
    const char *end = NULL;
    cJSON *in = cJSON_ParseWithLengthOpts(body, len, &end, 0);
    size_t used = in != NULL ? (size_t)(end - body) : len;
    while (used < len && strchr(" \t\r\n", body[used]) != NULL && body[used] != '\0') used++;
    if (used < len) {
        /* {"epochs":1}{"epochs":5} would read as its first object. */
        cJSON_Delete(in);
        fail_answer(a, 400, "invalid_json", "%zu bytes follow the JSON object (at byte %zu): the body is one object",
                    len - used, used);
        return -1;
    }
    if (in == NULL || !cJSON_IsObject(in)) {
        cJSON_Delete(in);
        fail_answer(a, 400, "invalid_json",
                    "the body must be a JSON object with the job's fields (%s, %s); Content-Type: application/json",
                    dae_train_request_fields(), SRV_TRAIN_SERVER_FIELDS);
        return -1;
    }
    long nul = dae_json_find_nul(body, len);
    if (nul >= 0) {
        /* {"model_name":"a\u0000b"} would name the model "a". */
        cJSON_Delete(in);
        fail_answer(a, 422, "invalid_parameter", "a string holds a NUL character (\\u0000, at byte %ld): no field may",
                    nul);
        return -1;
    }
    cJSON *canon = NULL;
    char err[sizeof a->message];
    dae_status st = srv_train_request_check(in, data_dir, registry, train_budget, threads, &canon, err, sizeof err);
    cJSON_Delete(in);
    if (st == DAE_OK && (a->json = cJSON_PrintUnformatted(canon)) == NULL)
        st = dae_fail(err, sizeof err, DAE_ERR_NOMEM, "out of memory");
    cJSON_Delete(canon);
    if (st != DAE_OK) {
        fail_status(a, SRV_EDGE_TRAIN_REQUEST, st, err);
        return -1;
    }
    a->status = 200;
    return 0;
}

/* ------------------------------------------------------------ answers */

/* A srv_training_view_fn: the 202 answer of the job a (srv_train_answer). */
static void accepted(const srv_train_job *job, unsigned long version, void *user) {
    (void)version;
    srv_train_answer *a = user;
    a->status = 202;
    srv_copy_str(a->id, sizeof a->id, job->id);
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

void srv_train_http_submit(srv_train_http *f, const char *body, size_t len, const char *request_id,
                           srv_train_answer *a) {
    const srv_config *cfg = f->cfg;
    if (srv_train_validate_memory(body, len, cfg->data_dir, srv_training_registry(f->training),
                                  cfg->train_memory_budget, cfg->train_threads, a) != 0)
        return;
    cJSON *req = cJSON_Parse(a->json);
    free(a->json);
    a->json = NULL;
    if (req == NULL) {
        fail_answer(a, 500, "internal_error", "out of memory");
        return;
    }
    char err[sizeof a->message];
    dae_status st = srv_training_submit(f->training, req, request_id, accepted, a, err, sizeof err);
    if (st != DAE_OK) fail_status(a, SRV_EDGE_TRAIN_SUBMIT, st, err);
}

void srv_train_http_cancel(srv_train_http *f, const char *id, srv_train_answer *a) {
    memset(a, 0, sizeof *a);
    char err[sizeof a->message];
    dae_status st = srv_training_cancel(f->training, id, accepted, a, err, sizeof err);
    if (st != DAE_OK) fail_status(a, SRV_EDGE_TRAIN_CANCEL, st, err);
}

dae_status srv_train_http_list(srv_train_http *f, srv_job_text ***texts, int *n) {
    return srv_training_texts(f->training, texts, n);
}

dae_status srv_train_http_get(srv_train_http *f, const char *id, srv_job_text **text) {
    return srv_training_text(f->training, id, 0, text, NULL, NULL);
}

dae_status srv_train_http_loss(srv_train_http *f, const char *id, int svg, srv_job_text **curve) {
    return srv_training_loss(f->training, id, svg, curve);
}

char *srv_train_http_metrics(srv_train_http *f) { return srv_training_metrics(f->training); }

srv_training *srv_train_http_training(srv_train_http *f) { return f->training; }

/* ------------------------------------------------------------ events */

struct srv_train_stream {
    srv_train_http *face;
    char id[24];
    unsigned long seen;    /* version last sent; 0: none yet */
    int done_sent;
    int ended;             /* srv_train_stream_kick: end at the next read */
    unsigned long changes; /* changes of the job seen by the change callback */
    /* The event not yet fully sent: "event: NAME\ndata: ", the job's
     * text (shared with its other readers), "\n\n"; pending_off bytes of
     * it sent. */
    const char *pending_head;
    srv_job_text *pending;
    size_t pending_off;
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
    srv_copy_str(s->id, sizeof s->id, id);
    pthread_mutex_lock(&f->mu);
    s->next = f->streams;
    f->streams = s;
    pthread_mutex_unlock(&f->mu);
    return s;
}

/* Copies up to max bytes of s's pending event into buf, from where the
 * last copy ended; lets go of its text once it is sent whole. Returns the
 * bytes copied. */
static size_t pending_copy(srv_train_stream *s, char *buf, size_t max) {
    const char *parts[3] = {s->pending_head, s->pending->s, "\n\n"};
    size_t lens[3] = {strlen(s->pending_head), s->pending->len, 2};
    size_t n = 0, skip = s->pending_off;
    for (int i = 0; i < 3 && n < max; i++) {
        if (skip >= lens[i]) {
            skip -= lens[i];
            continue;
        }
        size_t k = lens[i] - skip < max - n ? lens[i] - skip : max - n;
        memcpy(buf + n, parts[i] + skip, k);
        n += k;
        skip = 0;
    }
    s->pending_off += n;
    if (s->pending_off == lens[0] + lens[1] + lens[2]) {
        srv_job_text_release(s->pending);
        s->pending = NULL;
    }
    return n;
}

ssize_t srv_train_stream_read(srv_train_stream *s, void *conn, char *buf, size_t max) {
    srv_train_http *f = s->face;
    pthread_mutex_lock(&f->mu);
    if (s->ended) {
        srv_job_text_release(s->pending);
        s->pending = NULL;
    }
    /* The job is read without the face's lock (the training lock is taken
     * around it by the change callback); a change that comes meanwhile
     * counts in s->changes, and the job is read again rather than the
     * connection parked and that change missed. */
    while (s->pending == NULL && !s->done_sent && !s->ended) {
        unsigned long changes = s->changes, version = 0;
        srv_job_text *text = NULL;
        int done = 0;
        pthread_mutex_unlock(&f->mu);
        dae_status found = srv_training_text(f->training, s->id, s->seen, &text, &version, &done);
        pthread_mutex_lock(&f->mu);
        if (found != DAE_OK) { /* removed past --train-keep: nothing more comes */
            s->ended = 1;
            break;
        }
        if (version != s->seen) {
            s->pending = text;
            s->pending_head = done ? "event: done\ndata: " : "event: progress\ndata: ";
            s->pending_off = 0;
            s->seen = version;
            if (done) s->done_sent = 1;
            break;
        }
        if (changes == s->changes) break;
    }
    ssize_t ret = 0;
    if (s->pending != NULL) {
        ret = (ssize_t)pending_copy(s, buf, max);
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
    srv_job_text_release(s->pending);
    free(s);
}
