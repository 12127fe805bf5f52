/* registry.c - loading models by name from the models directory, the
 * default model, reference counting, and the JSON of GET /models. */
#include "registry.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>

#include <cJSON.h>

#include "fileio.h"
#include "log.h"
#include "modelfile.h"
#include "sha256.h"
#include "tile.h"
#include "utf8.h"

/* Largest weights file the registry reads. */
#define MAX_MODEL_BYTES ((size_t)2 << 30)

static const char SUFFIX[] = ".safetensors";

struct srv_registry {
    pthread_mutex_t mu;
    srv_model **models; /* sorted by name; each holds one reference */
    int n;
    srv_model *def;     /* one of models */
    pthread_mutex_t reload_mu; /* one rescan, activation, install or removal at a time */
    char *models_dir;   /* owned; NULL when none */
    int max_batch;
    atomic_ullong switches;
    /* The name in the ACTIVE file when it was last followed or passed
     * over: a rescan follows the file only when it says something new. */
    char active_seen[DAE_NAME_MAX + 1];
    /* Models of the directory unloaded through the v2 repository API:
     * a rescan passes over their files until they are loaded again. */
    char **unloaded;
    int n_unloaded;
};

/* The identity of the file at path (device, inode, mtime): 0, or -1 when
 * it cannot be stat'ed. */
static int file_identity(const char *path, long long id[3]) {
    struct stat st;
    if (stat(path, &st) != 0) return -1;
    id[0] = (long long)st.st_dev;
    id[1] = (long long)st.st_ino;
    id[2] = (long long)st.st_mtim.tv_sec * 1000000000LL + st.st_mtim.tv_nsec;
    return 0;
}

/* ------------------------------------------------------------ handles */

/* Frees everything m owns and m itself. */
static void model_free(srv_model *m) {
    for (int i = 0; i <= SRV_MAX_WORKERS; i++) dae_workspace_free(m->workspaces[i]);
    for (int i = 0; i < m->n_meta; i++) {
        free(m->meta_keys[i]);
        free(m->meta_values[i]);
    }
    free(m->meta_keys);
    free(m->meta_values);
    dae_model_free(&m->net);
    free(m->path);
    free(m);
}

void srv_model_retain(srv_model *m) { atomic_fetch_add_explicit(&m->refs, 1, memory_order_relaxed); }

void srv_model_release(srv_model *m) {
    if (m == NULL) return;
    if (atomic_fetch_sub_explicit(&m->refs, 1, memory_order_acq_rel) == 1) model_free(m);
}

dae_workspace *srv_model_workspace(srv_model *m, int worker) {
    if (worker < 0 || worker > SRV_MAX_WORKERS) return NULL;
    if (m->workspaces[worker] == NULL) m->workspaces[worker] = dae_workspace_new(&m->net, m->max_batch, 0);
    return m->workspaces[worker];
}

/* Loads the weights file (or training checkpoint) at path as model name,
 * with one reference. Returns NULL and fills err on failure, and *why
 * (may be NULL) with the failed step's status. */
static srv_model *model_load(const char *name, const char *path, int max_batch, dae_status *why, char *err,
                             size_t errlen) {
    uint8_t *buf = NULL;
    size_t len = 0;
    dae_status st = dae_file_read(path, MAX_MODEL_BYTES, &buf, &len, err, errlen);
    if (why != NULL) *why = st;
    if (st != DAE_OK) return NULL;
    srv_model *m = calloc(1, sizeof *m);
    dae_model_info info = {0};
    if (m == NULL || (m->path = strdup(path)) == NULL) {
        st = dae_fail(err, errlen, DAE_ERR_NOMEM, "%s: out of memory", path);
        goto fail;
    }
    atomic_init(&m->refs, 1);
    srv_copy_str(m->name, sizeof m->name, name);
    srv_sha256_hex(buf, len, m->sha256);
    snprintf(m->version, sizeof m->version, "sha256:%.12s", m->sha256);
    m->file_bytes = len;
    m->max_batch = max_batch;
    file_identity(path, m->file_id);
    srv_utc_now(m->loaded_at, sizeof m->loaded_at);
    if ((st = dae_model_parse(buf, len, path, &m->net, &info, err, errlen)) != DAE_OK) goto fail;
    if ((st = dae_denoise_check_model(&m->net, path, err, errlen)) != DAE_OK) goto fail;
    /* The metadata moves from info to m: no copy. */
    m->meta_keys = info.meta.meta_keys, m->meta_values = info.meta.meta_values, m->n_meta = info.meta.n_meta;
    free(buf);
    return m;
fail:
    if (why != NULL) *why = st;
    dae_st_free(&info.meta);
    free(buf);
    if (m != NULL) model_free(m);
    return NULL;
}

/* ------------------------------------------------------------ opening */

/* Index of name among r's unloaded models (r->mu held), or -1. */
static int find_unloaded(const srv_registry *r, const char *name) {
    for (int i = 0; i < r->n_unloaded; i++)
        if (strcmp(r->unloaded[i], name) == 0) return i;
    return -1;
}

/* Takes name off r's unloaded models (r->mu held). */
static void forget_unloaded(srv_registry *r, const char *name) {
    int i = find_unloaded(r, name);
    if (i < 0) return;
    free(r->unloaded[i]);
    r->unloaded[i] = r->unloaded[--r->n_unloaded];
}

static int by_name(const void *a, const void *b) {
    return strcmp((*(srv_model *const *)a)->name, (*(srv_model *const *)b)->name);
}

/* Index of the model called name in r (sorted), or -1. */
static int find(const srv_registry *r, const char *name) {
    for (int i = 0; i < r->n; i++)
        if (strcmp(r->models[i]->name, name) == 0) return i;
    return -1;
}

/* Adds m (its reference passes to r), replacing a model of the same name.
 * Returns 0 or -1 when out of memory (m is then released). */
static int add(srv_registry *r, srv_model *m) {
    int i = find(r, m->name);
    if (i >= 0) {
        if (r->def == r->models[i]) r->def = m;
        srv_model_release(r->models[i]);
        r->models[i] = m;
        return 0;
    }
    srv_model **grown = realloc(r->models, sizeof *grown * (size_t)(r->n + 1));
    if (grown == NULL) {
        srv_model_release(m);
        return -1;
    }
    r->models = grown;
    r->models[r->n++] = m;
    qsort(r->models, (size_t)r->n, sizeof *r->models, by_name);
    return 0;
}

/* Takes the model at index i off r's list (r->mu held); returns it,
 * with the list's reference. */
static srv_model *unlist(srv_registry *r, int i) {
    srv_model *m = r->models[i];
    memmove(r->models + i, r->models + i + 1, sizeof *r->models * (size_t)(r->n - i - 1));
    r->n--;
    return m;
}

/* The model name of a file path: its base name without ".safetensors"
 * (or without any other extension), into name. Returns 0, or -1 when that
 * is not a valid name. */
static int name_of_path(const char *path, char *name, size_t len) {
    const char *base = strrchr(path, '/');
    base = base != NULL ? base + 1 : path;
    size_t n = strlen(base), s = sizeof SUFFIX - 1;
    if (n > s && strcmp(base + n - s, SUFFIX) == 0) n -= s;
    else if (strrchr(base, '.') != NULL && strrchr(base, '.') != base) n = (size_t)(strrchr(base, '.') - base);
    if (n >= len) return -1;
    memcpy(name, base, n);
    name[n] = '\0';
    return dae_name_valid(name) ? 0 : -1;
}

/* Loads every DIR/NAME.safetensors into r, skipping (with a warning)
 * files that fail. A missing directory is quietly empty. */
static void load_dir(srv_registry *r, const char *dir, int max_batch) {
    DIR *d = opendir(dir);
    if (d == NULL) return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name), s = sizeof SUFFIX - 1;
        if (n <= s || strcmp(e->d_name + n - s, SUFFIX) != 0 || e->d_name[0] == '.') continue;
        char name[DAE_NAME_MAX + 1];
        if (n - s > DAE_NAME_MAX) {
            srv_log("warning: %s/%s: model name too long, skipped", dir, e->d_name);
            continue;
        }
        memcpy(name, e->d_name, n - s);
        name[n - s] = '\0';
        if (!dae_name_valid(name)) {
            srv_log("warning: %s/%s: \"%s\" is not a valid model name ([A-Za-z0-9._-]), skipped", dir, e->d_name, name);
            continue;
        }
        size_t plen = strlen(dir) + 1 + n + 1;
        char *path = malloc(plen);
        if (path == NULL) break;
        snprintf(path, plen, "%s/%s", dir, e->d_name);
        char err[DAE_ERR_LEN] = "";
        srv_model *m = model_load(name, path, max_batch, NULL, err, sizeof err);
        if (m != NULL) m->in_dir = 1;
        if (m == NULL) srv_log("warning: model skipped: %s", err);
        else if (add(r, m) != 0) srv_log("warning: %s: out of memory, skipped", path);
        free(path);
    }
    closedir(d);
}

/* 1 when paths a and b name the same existing file. */
static int same_file(const char *a, const char *b) {
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

srv_registry *srv_registry_open(const srv_config *cfg, char *err, size_t errlen) {
    srv_registry *r = calloc(1, sizeof *r);
    if (r == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&r->mu, NULL);
    pthread_mutex_init(&r->reload_mu, NULL);
    r->max_batch = cfg->max_batch;
    if (cfg->models_dir != NULL && (r->models_dir = strdup(cfg->models_dir)) == NULL) {
        snprintf(err, errlen, "out of memory");
        srv_registry_free(r);
        return NULL;
    }
    if (cfg->models_dir != NULL) load_dir(r, cfg->models_dir, cfg->max_batch);
    /* The ACTIVE file wins over the default cfg->model when it names a
     * loaded model: every replica sharing the directory follows the last
     * activation. A model given by flag or environment wins over it. */
    char active[DAE_NAME_MAX + 1];
    if (cfg->models_dir != NULL && srv_active_read(cfg->models_dir, active, sizeof active) == 0) {
        int i = find(r, active);
        srv_copy_str(r->active_seen, sizeof r->active_seen, active);
        if (i >= 0 && cfg->model_given && strcmp(active, cfg->model) != 0) {
            srv_log("%s/%s names \"%s\", but --model %s (or DAE_MODEL) was given and wins; without it the server "
                    "starts with %s",
                    cfg->models_dir, SRV_ACTIVE_FILE, active, cfg->model, active);
        } else if (i >= 0) {
            r->def = r->models[i];
            if (strcmp(active, cfg->model) != 0)
                srv_log("default model %s from %s/%s (instead of %s)", active, cfg->models_dir, SRV_ACTIVE_FILE,
                        cfg->model);
            return r;
        }
        srv_log("warning: %s/%s names \"%s\", which is not loaded; using %s", cfg->models_dir, SRV_ACTIVE_FILE,
                active, cfg->model);
    }
    const char *spec = cfg->model;
    /* A bare name (no slash, no extension) of a model in the directory. */
    if (strchr(spec, '/') == NULL && strchr(spec, '.') == NULL) {
        int i = find(r, spec);
        if (i < 0) {
            snprintf(err, errlen, "default model \"%s\": no %s/%s%s was loaded", spec,
                     cfg->models_dir != NULL ? cfg->models_dir : ".", spec, SUFFIX);
            srv_registry_free(r);
            return NULL;
        }
        r->def = r->models[i];
        return r;
    }
    /* A path: the same file as a directory model is that model. */
    for (int i = 0; i < r->n; i++)
        if (same_file(spec, r->models[i]->path)) {
            r->def = r->models[i];
            return r;
        }
    char name[DAE_NAME_MAX + 1];
    if (name_of_path(spec, name, sizeof name) != 0) {
        snprintf(err, errlen, "default model %s: its file name does not make a valid model name ([A-Za-z0-9._-])",
                 spec);
        srv_registry_free(r);
        return NULL;
    }
    srv_model *m = model_load(name, spec, cfg->max_batch, NULL, err, errlen);
    if (m == NULL) {
        srv_registry_free(r);
        return NULL;
    }
    if (find(r, name) >= 0)
        srv_log("warning: default model %s replaces %s/%s%s of the same name", spec, cfg->models_dir, name, SUFFIX);
    if (add(r, m) != 0) {
        snprintf(err, errlen, "out of memory");
        srv_registry_free(r);
        return NULL;
    }
    r->def = r->models[find(r, name)];
    return r;
}

void srv_registry_free(srv_registry *r) {
    if (r == NULL) return;
    for (int i = 0; i < r->n; i++) srv_model_release(r->models[i]);
    free(r->models);
    for (int i = 0; i < r->n_unloaded; i++) free(r->unloaded[i]);
    free(r->unloaded);
    free(r->models_dir);
    pthread_mutex_destroy(&r->mu);
    pthread_mutex_destroy(&r->reload_mu);
    free(r);
}

srv_model *srv_registry_acquire(srv_registry *r, const char *name) {
    pthread_mutex_lock(&r->mu);
    srv_model *m = NULL;
    if (name == NULL) {
        m = r->def;
    } else {
        int i = find(r, name);
        if (i >= 0) m = r->models[i];
    }
    if (m != NULL) srv_model_retain(m);
    pthread_mutex_unlock(&r->mu);
    return m;
}

int srv_registry_count(srv_registry *r) {
    pthread_mutex_lock(&r->mu);
    int n = r->n;
    pthread_mutex_unlock(&r->mu);
    return n;
}

void srv_registry_foreach(srv_registry *r, void (*fn)(void *ctx, const srv_model *m, int is_default), void *ctx) {
    pthread_mutex_lock(&r->mu);
    for (int i = 0; i < r->n; i++) fn(ctx, r->models[i], r->models[i] == r->def);
    pthread_mutex_unlock(&r->mu);
}

/* ------------------------------------------------------------ JSON */

/* The JSON object describing m; with_arch adds the architecture spec.
 * NULL when out of memory. */
static cJSON *model_json(const srv_model *m, int is_default, int with_arch) {
    cJSON *o = cJSON_CreateObject();
    if (o == NULL) return NULL;
    const char *base = strrchr(m->path, '/');
    cJSON_AddStringToObject(o, "name", m->name);
    cJSON_AddStringToObject(o, "version", m->version);
    cJSON_AddBoolToObject(o, "default", is_default);
    cJSON_AddBoolToObject(o, "active", is_default);
    cJSON_AddStringToObject(o, "sha256", m->sha256);
    cJSON_AddStringToObject(o, "file", base != NULL ? base + 1 : m->path);
    cJSON_AddNumberToObject(o, "file_bytes", (double)m->file_bytes);
    cJSON_AddStringToObject(o, "loaded_at", m->loaded_at);
    cJSON_AddNumberToObject(o, "parameters", (double)m->net.n_params);
    int input[3] = {m->net.in_c, m->net.in_h, m->net.in_w};
    cJSON_AddItemToObject(o, "input", cJSON_CreateIntArray(input, 3));
    cJSON *meta = cJSON_AddObjectToObject(o, "metadata");
    for (int i = 0; meta != NULL && i < m->n_meta; i++)
        if (strcmp(m->meta_keys[i], "architecture") != 0)
            cJSON_AddStringToObject(meta, m->meta_keys[i], m->meta_values[i]);
    if (with_arch) {
        cJSON *arch = cJSON_Parse(m->net.spec);
        if (arch != NULL) cJSON_AddItemToObject(o, "architecture", arch);
    }
    return o;
}

/* Prints o compactly into a new malloc'd string and frees o. */
static char *print_and_free(cJSON *o) {
    if (o == NULL) return NULL;
    char *s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

char *srv_registry_list_json(srv_registry *r) {
    cJSON *o = cJSON_CreateObject();
    if (o == NULL) return NULL;
    pthread_mutex_lock(&r->mu);
    if (r->def != NULL) cJSON_AddStringToObject(o, "default", r->def->name);
    else cJSON_AddNullToObject(o, "default");
    if (r->def != NULL) cJSON_AddStringToObject(o, "active", r->def->name);
    else cJSON_AddNullToObject(o, "active");
    cJSON *list = cJSON_AddArrayToObject(o, "models");
    for (int i = 0; list != NULL && i < r->n; i++) {
        cJSON *m = model_json(r->models[i], r->models[i] == r->def, 0);
        if (m != NULL) cJSON_AddItemToArray(list, m);
    }
    pthread_mutex_unlock(&r->mu);
    return print_and_free(o);
}

char *srv_registry_model_json(srv_registry *r, const char *name, int *found) {
    pthread_mutex_lock(&r->mu);
    int i = find(r, name);
    *found = i >= 0;
    cJSON *o = i >= 0 ? model_json(r->models[i], r->models[i] == r->def, 1) : NULL;
    pthread_mutex_unlock(&r->mu);
    return print_and_free(o);
}

/* ------------------------------------------------------------ hot swap */

int srv_active_read(const char *dir, char *name, size_t len) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, SRV_ACTIVE_FILE);
    FILE *f = fopen(path, "r");
    if (f == NULL) return -1;
    char line[256];
    int ok = fgets(line, sizeof line, f) != NULL;
    fclose(f);
    if (!ok) return -1;
    line[strcspn(line, "\r\n")] = '\0';
    if (!dae_name_valid(line) || strlen(line) >= len) return -1;
    snprintf(name, len, "%s", line);
    return 0;
}

dae_status srv_active_write(const char *dir, const char *name, char *err, size_t errlen) {
    char path[4096], line[DAE_NAME_MAX + 2];
    snprintf(path, sizeof path, "%s/%s", dir, SRV_ACTIVE_FILE);
    int n = snprintf(line, sizeof line, "%s\n", name);
    return dae_file_write_atomic(path, line, (size_t)n, err, errlen);
}

unsigned long long srv_registry_switches(srv_registry *r) { return atomic_load(&r->switches); }

/* Makes the listed model m the default, logging and counting a change.
 * Called with r->mu held. */
static void set_default(srv_registry *r, srv_model *m, const char *why) {
    if (r->def == m) return;
    srv_log("default model: %s %s (was %s; %s)", m->name, m->version, r->def != NULL ? r->def->name : "none", why);
    r->def = m;
    atomic_fetch_add(&r->switches, 1);
}

/* The replicas sharing a models directory exclude each other with an
 * flock on its file SRV_LOCK_FILE, held (after reload_mu, before mu)
 * while an activation checks that the model's file is there and writes
 * ACTIVE, and while a removal or a replacement checks ACTIVE and changes
 * the file: otherwise one replica removed or replaced the model another
 * had just activated (each knows the other's activations only at its
 * next rescan), leaving ACTIVE naming no file and the replicas serving
 * different defaults. A file opened for writing, not the directory: on
 * NFS (a ReadWriteMany volume) flock is a byte-range lock, which needs
 * that. Returns the descriptor for dir_unlock, or -1 when there is no
 * directory or it cannot be written (nothing then to exclude). */
static int dir_lock(const srv_registry *r) {
    char path[4096];
    int fd = -1;
    if (r->models_dir != NULL) {
        snprintf(path, sizeof path, "%s/%s", r->models_dir, SRV_LOCK_FILE);
        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    }
    while (fd >= 0 && flock(fd, LOCK_EX) != 0) {
        if (errno == EINTR) continue;
        close(fd);
        fd = -1;
    }
    return fd;
}

static void dir_unlock(int fd) {
    if (fd >= 0) close(fd); /* the lock goes with the descriptor */
}

/* Whether the models directory's ACTIVE file names name (dir_lock held):
 * another replica's active model, which this one may not know yet. */
static int active_in_dir(const srv_registry *r, const char *name) {
    char active[DAE_NAME_MAX + 1];
    return r->models_dir != NULL && srv_active_read(r->models_dir, active, sizeof active) == 0 &&
           strcmp(active, name) == 0;
}

dae_status srv_registry_activate(srv_registry *r, const char *name, srv_activation *done, char *err,
                                 size_t errlen) {
    pthread_mutex_lock(&r->reload_mu);
    int lock = dir_lock(r);
    dae_status st = DAE_OK;
    char path[4096] = "";
    pthread_mutex_lock(&r->mu);
    int i = find(r, name), found = i >= 0;
    if (found && r->models[i]->in_dir) srv_copy_str(path, sizeof path, r->models[i]->path);
    pthread_mutex_unlock(&r->mu);
    struct stat sb;
    if (!found) {
        st = dae_fail(err, errlen, DAE_ERR_NOT_FOUND, "no model named \"%s\" (GET /models lists them)", name);
    } else if (path[0] != '\0' && stat(path, &sb) != 0 && errno == ENOENT) {
        st = dae_fail(err, errlen, DAE_ERR_NOT_FOUND,
                      "model \"%s\" was removed from the models directory (by another server sharing it); the next "
                      "rescan unlists it",
                      name);
    } else if (r->models_dir != NULL && (st = srv_active_write(r->models_dir, name, err, errlen)) != DAE_OK) {
        /* The ACTIVE file was not written (a full disk: DAE_ERR_NO_SPACE); nothing changed. */
        if (st != DAE_ERR_NO_SPACE) st = DAE_ERR_IO;
    } else {
        srv_copy_str(r->active_seen, sizeof r->active_seen, name);
        pthread_mutex_lock(&r->mu);
        i = find(r, name);
        if (i >= 0 && done != NULL) {
            srv_copy_str(done->previous, sizeof done->previous, r->def != NULL ? r->def->name : "");
            srv_copy_str(done->version, sizeof done->version, r->models[i]->version);
        }
        if (i >= 0) set_default(r, r->models[i], "activated");
        else st = dae_fail(err, errlen, DAE_ERR_NOT_FOUND, "model \"%s\" was removed while it was activated", name);
        pthread_mutex_unlock(&r->mu);
    }
    dir_unlock(lock);
    pthread_mutex_unlock(&r->reload_mu);
    return st;
}

/* Takes the non-default model called name of the models directory out
 * of the list (requests holding it finish on it): with keep_file, its file
 * stays and rescans pass over it until srv_registry_load (unload);
 * without, its file is deleted (remove). */
static dae_status take_out(srv_registry *r, const char *name, int keep_file, char *err, size_t errlen) {
    pthread_mutex_lock(&r->reload_mu);
    int lock = keep_file ? -1 : dir_lock(r);
    pthread_mutex_lock(&r->mu);
    dae_status st = DAE_OK;
    int i = find(r, name);
    srv_model *m = NULL;
    char *copy = NULL;
    char **grown = NULL;
    if (i < 0) {
        st = dae_fail(err, errlen, DAE_ERR_NOT_FOUND, "no model named \"%s\" (GET /models lists them)", name);
    } else if (r->models[i] == r->def) {
        st = dae_fail(err, errlen, DAE_ERR_IN_USE, "model \"%s\" is the active model; activate another one first",
                      name);
    } else if (!r->models[i]->in_dir) {
        st = dae_fail(err, errlen, DAE_ERR_INVALID, "model \"%s\" was not loaded from the models directory", name);
    } else if (!keep_file && active_in_dir(r, name)) {
        st = dae_fail(err, errlen, DAE_ERR_IN_USE,
                      "model \"%s\" is the active model of the models directory (its ACTIVE file, written by another "
                      "server sharing it); activate another one first",
                      name);
    } else if (!keep_file && unlink(r->models[i]->path) != 0 && errno != ENOENT) {
        st = dae_fail(err, errlen, DAE_ERR_IO, "cannot remove %s: %s", r->models[i]->path, strerror(errno));
    } else if (keep_file && ((copy = strdup(name)) == NULL ||
                             (grown = realloc(r->unloaded, sizeof *grown * (size_t)(r->n_unloaded + 1))) == NULL)) {
        free(copy);
        st = dae_fail(err, errlen, DAE_ERR_NOMEM, "out of memory");
    } else {
        if (keep_file) {
            r->unloaded = grown;
            r->unloaded[r->n_unloaded++] = copy;
        }
        m = unlist(r, i);
    }
    pthread_mutex_unlock(&r->mu);
    dir_unlock(lock);
    if (m != NULL) {
        srv_log("model %s %s %s", m->name, m->version, keep_file ? "unloaded (its file stays)" : "removed");
        srv_model_release(m);
    }
    pthread_mutex_unlock(&r->reload_mu);
    return st;
}

dae_status srv_registry_remove(srv_registry *r, const char *name, char *err, size_t errlen) {
    return take_out(r, name, 0, err, errlen);
}

/* srv_registry_reload with reload_mu held. */
static void reload_locked(srv_registry *r) {
    if (r->models_dir == NULL) return;
    const char *dir = r->models_dir;
    size_t s = sizeof SUFFIX - 1;
    /* 1. Load new and changed files (outside the lock: loading is slow). */
    srv_model **fresh = NULL;
    int n_fresh = 0;
    char **seen = NULL;
    int n_seen = 0;
    DIR *d = opendir(dir);
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        if (n <= s || strcmp(e->d_name + n - s, SUFFIX) != 0 || e->d_name[0] == '.' || n - s > DAE_NAME_MAX)
            continue;
        char name[DAE_NAME_MAX + 1];
        memcpy(name, e->d_name, n - s);
        name[n - s] = '\0';
        if (!dae_name_valid(name)) continue;
        pthread_mutex_lock(&r->mu);
        int unloaded = find_unloaded(r, name) >= 0;
        pthread_mutex_unlock(&r->mu);
        if (unloaded) continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        long long id[3];
        if (file_identity(path, id) != 0) continue;
        char **grown = realloc(seen, sizeof *seen * (size_t)(n_seen + 1));
        if (grown == NULL) break;
        seen = grown;
        if ((seen[n_seen] = strdup(name)) == NULL) break;
        n_seen++;
        pthread_mutex_lock(&r->mu);
        int i = find(r, name);
        int same = i >= 0 && memcmp(r->models[i]->file_id, id, sizeof id) == 0;
        pthread_mutex_unlock(&r->mu);
        if (same) continue;
        char err[DAE_ERR_LEN] = "";
        srv_model *m = model_load(name, path, r->max_batch, NULL, err, sizeof err);
        if (m == NULL) {
            /* Skipped, but the old copy (if any) stays while its file is
             * being replaced; log a file once per change. */
            static _Thread_local long long last_bad[3];
            if (memcmp(last_bad, id, sizeof id) != 0) srv_log("warning: model skipped: %s", err);
            memcpy(last_bad, id, sizeof id);
            continue;
        }
        m->in_dir = 1;
        srv_model **g2 = realloc(fresh, sizeof *fresh * (size_t)(n_fresh + 1));
        if (g2 == NULL) {
            srv_model_release(m);
            break;
        }
        fresh = g2;
        fresh[n_fresh++] = m;
    }
    if (d != NULL) closedir(d);
    char active[DAE_NAME_MAX + 1];
    int has_active = srv_active_read(dir, active, sizeof active) == 0;
    /* 2. Swap them in, drop models whose file is gone, follow ACTIVE. */
    pthread_mutex_lock(&r->mu);
    for (int k = 0; k < n_fresh; k++) {
        srv_log("model %s %s loaded from %s", fresh[k]->name, fresh[k]->version, fresh[k]->path);
        if (add(r, fresh[k]) != 0) srv_log("warning: out of memory, a model was not loaded");
    }
    for (int i = 0; i < r->n;) {
        srv_model *m = r->models[i];
        int present = !m->in_dir;
        for (int k = 0; k < n_seen && !present; k++) present = strcmp(seen[k], m->name) == 0;
        if (present || m == r->def) {
            i++;
            continue;
        }
        srv_log("model %s removed (its file is gone)", m->name);
        srv_model_release(unlist(r, i));
    }
    if (has_active && strcmp(active, r->active_seen) != 0) {
        int i = find(r, active);
        if (i >= 0) {
            set_default(r, r->models[i], "ACTIVE file");
            srv_copy_str(r->active_seen, sizeof r->active_seen, active);
        }
    }
    pthread_mutex_unlock(&r->mu);
    for (int k = 0; k < n_seen; k++) free(seen[k]);
    free(seen);
    free(fresh);
}

void srv_registry_reload(srv_registry *r) {
    pthread_mutex_lock(&r->reload_mu);
    reload_locked(r);
    pthread_mutex_unlock(&r->reload_mu);
}

/* ------------------------------------------------------------ installing trained models */

/* Name taken? (reload_mu held, or a racy answer is fine): listed, or
 * path exists; *active when it is the default or named by ACTIVE. */
static int name_taken(srv_registry *r, const char *name, const char *path, int *active) {
    pthread_mutex_lock(&r->mu);
    int i = find(r, name);
    int listed = i >= 0, is_def = i >= 0 && r->models[i] == r->def;
    pthread_mutex_unlock(&r->mu);
    struct stat st;
    int exists = path != NULL && lstat(path, &st) == 0;
    char act[DAE_NAME_MAX + 1];
    if (!is_def && r->models_dir != NULL && srv_active_read(r->models_dir, act, sizeof act) == 0)
        is_def = strcmp(act, name) == 0;
    if (active != NULL) *active = (listed || exists) && is_def;
    return listed || exists;
}

int srv_registry_name_taken(srv_registry *r, const char *name, int *active) {
    char path[4096];
    if (r->models_dir != NULL) snprintf(path, sizeof path, "%s/%s%s", r->models_dir, name, SUFFIX);
    return name_taken(r, name, r->models_dir != NULL ? path : NULL, active);
}

/* Renames from to to unless to exists (EEXIST then): renameat2 with
 * RENAME_NOREPLACE, or link and unlink where the file system lacks it.
 * Returns 0, or -1 with errno set. */
static int rename_noreplace(const char *from, const char *to) {
    if (renameat2(AT_FDCWD, from, AT_FDCWD, to, RENAME_NOREPLACE) == 0) return 0;
    if (errno != EINVAL && errno != ENOSYS) return -1;
    if (link(from, to) != 0) return -1;
    unlink(from);
    return 0;
}

/* Flushes directory dir so a rename in it survives a crash (best effort). */
static void sync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    (void)fsync(fd);
    close(fd);
}

/* Puts the loaded model m (its reference passes here) at path from
 * tmp_path and lists it. Under the replicas' lock (dir_lock), held only
 * for this: the ACTIVE file, which another server sharing the directory
 * may have written, is checked with the rename. Under the lock that finds
 * models, the rename and the listing are one step: whoever finds the new
 * model finds its file, and a weights download that opened the old file
 * finds the new model when it looks again (model_http.c). reload_mu held. */
static dae_status put_in_place(srv_registry *r, srv_model *m, const char *name, const char *tmp_path,
                               const char *path, int replace, char **json, char *err, size_t errlen) {
    char *p = strdup(path);
    if (p == NULL) {
        srv_model_release(m);
        return dae_fail(err, errlen, DAE_ERR_NOMEM, "out of memory");
    }
    m->in_dir = 1; /* its file_id, the temporary's, stays: a rename keeps the inode and the mtime */
    int lock = dir_lock(r);
    int in_use = access(path, F_OK) == 0 && active_in_dir(r, name), renamed = 0, e = 0, rc = 0;
    if (!in_use) {
        pthread_mutex_lock(&r->mu);
        renamed = (replace ? rename(tmp_path, path) : rename_noreplace(tmp_path, path)) == 0, e = errno;
        if (renamed) {
            free(m->path);
            m->path = p, p = NULL;
            forget_unloaded(r, name); /* a new file of an unloaded model's name is served */
            rc = add(r, m);           /* a replaced model lives on while requests hold it */
            if (rc == 0 && json != NULL) *json = print_and_free(model_json(m, m == r->def, 1));
            m = NULL;
        }
        pthread_mutex_unlock(&r->mu);
    }
    dir_unlock(lock);
    free(p);
    srv_model_release(m);
    if (in_use)
        return dae_fail(err, errlen, DAE_ERR_IN_USE,
                        "model \"%s\" is the active model of the models directory (its ACTIVE file, written by "
                        "another server sharing it) and cannot be replaced",
                        name);
    if (!renamed && e == EEXIST)
        return dae_fail(err, errlen, DAE_ERR_EXISTS, "a model named \"%s\" appeared meanwhile; it was not replaced",
                        name);
    if (!renamed) return dae_fail(err, errlen, DAE_ERR_IO, "cannot rename %s to %s: %s", tmp_path, path, strerror(e));
    sync_dir(r->models_dir);
    if (rc != 0) return dae_fail(err, errlen, DAE_ERR_NOMEM, "out of memory (the file is in place; a rescan lists it)");
    return DAE_OK;
}

/* srv_registry_install, and srv_registry_install_upload when upload
 * (json: the installed model's, or NULL). */
static dae_status install(srv_registry *r, const char *name, const char *tmp_path, int replace, int upload,
                          char **json, char *err, size_t errlen) {
    if (r->models_dir == NULL) return dae_fail(err, errlen, DAE_ERR_IO, "no models directory");
    char path[4096];
    snprintf(path, sizeof path, "%s/%s%s", r->models_dir, name, SUFFIX);
    pthread_mutex_lock(&r->reload_mu);
    dae_status st = DAE_OK, load_st = DAE_OK;
    int active = 0;
    srv_model *m = NULL;
    if (name_taken(r, name, path, &active) && !replace) {
        st = dae_fail(err, errlen, DAE_ERR_EXISTS,
                      "a model named \"%s\" already exists (ask \"replace\": true to replace it)", name);
    } else if (active) {
        st = dae_fail(err, errlen, DAE_ERR_IN_USE, "model \"%s\" is the active model and cannot be replaced", name);
    } else if ((m = model_load(name, tmp_path, r->max_batch, &load_st, err, errlen)) == NULL) {
        /* An upload may be no model (the client's mistake); a file the
         * server wrote itself that does not load is the server's. */
        st = upload && load_st != DAE_ERR_IO && load_st != DAE_ERR_NOMEM ? DAE_ERR_FORMAT : DAE_ERR_IO;
    } else {
        st = put_in_place(r, m, name, tmp_path, path, replace, json, err, errlen);
    }
    pthread_mutex_unlock(&r->reload_mu);
    return st;
}

dae_status srv_registry_install(srv_registry *r, const char *name, const char *tmp_path, int replace, char *err,
                                size_t errlen) {
    return install(r, name, tmp_path, replace, 0, NULL, err, errlen);
}

dae_status srv_registry_install_upload(srv_registry *r, const char *name, const char *tmp_path, int replace,
                                       char **json, char *err, size_t errlen) {
    return install(r, name, tmp_path, replace, 1, json, err, errlen);
}

/* ------------------------------------------------------------ the v2 repository */

dae_status srv_registry_unload(srv_registry *r, const char *name, char *err, size_t errlen) {
    return take_out(r, name, 1, err, errlen);
}

dae_status srv_registry_load(srv_registry *r, const char *name, char *err, size_t errlen) {
    if (r->models_dir == NULL) return dae_fail(err, errlen, DAE_ERR_NOT_FOUND, "no models directory");
    char path[4096];
    snprintf(path, sizeof path, "%s/%s%s", r->models_dir, name, SUFFIX);
    /* Under the lock of rescans, uploads and removals: a DELETE or an
     * unload cannot come between the rescan and the look that follows it
     * (which took such a model for a file that does not load). */
    pthread_mutex_lock(&r->reload_mu);
    pthread_mutex_lock(&r->mu);
    forget_unloaded(r, name);
    pthread_mutex_unlock(&r->mu);
    dae_status st = DAE_OK;
    struct stat sb;
    if (stat(path, &sb) != 0) {
        st = dae_fail(err, errlen, DAE_ERR_NOT_FOUND, "no model named \"%s\" in the models directory", name);
    } else {
        reload_locked(r);
        srv_model *m = srv_registry_acquire(r, name);
        if (m == NULL)
            st = dae_fail(err, errlen, DAE_ERR_FORMAT,
                          "the file of model \"%s\" does not load (the server log says why)", name);
        srv_model_release(m);
    }
    pthread_mutex_unlock(&r->reload_mu);
    return st;
}

char *srv_registry_index_json(srv_registry *r) {
    cJSON *list = cJSON_CreateArray();
    pthread_mutex_lock(&r->mu);
    for (int i = 0; list != NULL && i < r->n; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", r->models[i]->name);
        cJSON_AddStringToObject(o, "version", r->models[i]->version);
        cJSON_AddStringToObject(o, "state", "READY");
        cJSON_AddItemToArray(list, o);
    }
    for (int i = 0; list != NULL && i < r->n_unloaded; i++) {
        char path[4096];
        struct stat sb;
        snprintf(path, sizeof path, "%s/%s%s", r->models_dir, r->unloaded[i], SUFFIX);
        if (stat(path, &sb) != 0) continue; /* its file is gone too */
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", r->unloaded[i]);
        cJSON_AddStringToObject(o, "state", "UNAVAILABLE");
        cJSON_AddStringToObject(o, "reason", "unloaded");
        cJSON_AddItemToArray(list, o);
    }
    pthread_mutex_unlock(&r->mu);
    return print_and_free(list);
}
