/* dataset_http.c - data sets over HTTP: listing and describing the data
 * directory's data sets, importing an uploaded archive as one, deleting
 * one (see dataset_http.h). */
#include "dataset_http.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cJSON.h>

#include "dataset_import.h"
#include "fileio.h"
#include "idx.h"
#include "log.h"
#include "sha256.h"

/* The sidecar PUT writes into a data set's directory. */
#define SIDECAR "dataset.json"
/* A staging directory untouched this long is stale even when its pid
 * names a live process (of another container sharing the directory). */
#define STALE_TEMP_S 60
/* Digests remembered, by the identity of the four files: far more than
 * data sets are listed, the least recently used forgotten. A fixed 32,
 * forgotten in turn, made every GET /datasets of 33 or more hash them all
 * again: 3.2 s with 34 copies of MNIST. */
#define SHA_CACHE_MAX 4096

/* The four files of a data set, in the order of its digest. */
static const char *const FILES[4] = {
    "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
};

/* What identifies the contents of the four files: device, inode, size and
 * modification time (ns) of each. */
typedef struct {
    long long id[4][4];
} files_id;

typedef struct {
    files_id key;
    char hex[65];
    unsigned long long used; /* when last found (the cache's clock) */
} sha_entry;

struct srv_datasets {
    const srv_config *cfg;
    srv_registry *registry;
    srv_training *training;
    pthread_mutex_t import_mu; /* one import at a time: each may hold hundreds of MiB */
    pthread_mutex_t cache_mu;
    sha_entry *cache; /* n_cache of them, room for cap_cache */
    int n_cache, cap_cache;
    unsigned long long clock;
};

/* ------------------------------------------------------------ files */

/* Removes the staging directories (".tmp.<pid>.NAME.XXXXXX") an
 * interrupted upload or delete left in data_dir: their writer is gone, or
 * nobody touched them for STALE_TEMP_S (the pid may be another
 * container's). */
static void remove_stale(const char *data_dir) {
    DIR *d = opendir(data_dir);
    if (d == NULL) return;
    time_t now = time(NULL);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, ".tmp.", 5) != 0) continue;
        long pid = dae_file_temp_pid(e->d_name);
        if (pid <= 0) continue;
        char path[4400];
        snprintf(path, sizeof path, "%s/%s", data_dir, e->d_name);
        struct stat st;
        if (lstat(path, &st) != 0 || !S_ISDIR(st.st_mode)) continue;
        int gone = pid != (long)getpid() && kill((pid_t)pid, 0) != 0 && errno == ESRCH;
        if ((gone || now - st.st_mtime >= STALE_TEMP_S) && dae_dir_remove_tree(path) == 0)
            srv_log("removed %s, left by an interrupted data set upload or delete", path);
    }
    closedir(d);
}

/* The path of file i of the data set in dir: raw, else ".gz", as
 * dae_dataset_load picks them; its stat in *st. -1 when neither is a
 * regular file. */
static int file_path(const char *dir, int i, char *path, size_t cap, struct stat *st) {
    snprintf(path, cap, "%s/%s", dir, FILES[i]);
    if (stat(path, st) == 0 && S_ISREG(st->st_mode)) return 0;
    snprintf(path, cap, "%s/%s.gz", dir, FILES[i]);
    return stat(path, st) == 0 && S_ISREG(st->st_mode) ? 0 : -1;
}

/* The cache's entry for key, or NULL (cache_mu held). */
static sha_entry *cache_find(srv_datasets *ds, const files_id *key) {
    for (int i = 0; i < ds->n_cache; i++)
        if (memcmp(&ds->cache[i].key, key, sizeof *key) == 0) return &ds->cache[i];
    return NULL;
}

/* Remembers hex for key: in a new entry, or in place of the least
 * recently used once SHA_CACHE_MAX are kept (cache_mu held). */
static void cache_add(srv_datasets *ds, const files_id *key, const char hex[65]) {
    sha_entry *e = cache_find(ds, key);
    if (e == NULL && ds->n_cache < SHA_CACHE_MAX) {
        if (ds->n_cache == ds->cap_cache) {
            int cap = ds->cap_cache > 0 ? ds->cap_cache * 2 : 64;
            sha_entry *grown = realloc(ds->cache, sizeof *grown * (size_t)cap);
            if (grown == NULL) return; /* not remembered: found again next time */
            ds->cache = grown, ds->cap_cache = cap;
        }
        e = &ds->cache[ds->n_cache++];
    }
    if (e == NULL) {
        e = &ds->cache[0];
        for (int i = 1; i < ds->n_cache; i++)
            if (ds->cache[i].used < e->used) e = &ds->cache[i];
    }
    e->key = *key;
    memcpy(e->hex, hex, 65);
    e->used = ++ds->clock;
}

/* The digest of the four files (paths, with their stats) concatenated,
 * from the cache when they are the files it was taken of. 0 or -1. */
static int files_sha256(srv_datasets *ds, char paths[4][4400], const struct stat st[4], char hex[65]) {
    files_id key;
    memset(&key, 0, sizeof key);
    const char *names[4];
    size_t sizes[4];
    for (int i = 0; i < 4; i++) {
        key.id[i][0] = (long long)st[i].st_dev, key.id[i][1] = (long long)st[i].st_ino;
        key.id[i][2] = (long long)st[i].st_size;
        key.id[i][3] = (long long)st[i].st_mtim.tv_sec * 1000000000LL + st[i].st_mtim.tv_nsec;
        names[i] = paths[i], sizes[i] = (size_t)st[i].st_size;
    }
    pthread_mutex_lock(&ds->cache_mu);
    sha_entry *e = cache_find(ds, &key);
    if (e != NULL) {
        memcpy(hex, e->hex, 65);
        e->used = ++ds->clock;
    }
    pthread_mutex_unlock(&ds->cache_mu);
    if (e != NULL) return 0;
    if (srv_sha256_files_hex(names, sizes, 4, hex) != 0) return -1;
    pthread_mutex_lock(&ds->cache_mu);
    cache_add(ds, &key, hex);
    pthread_mutex_unlock(&ds->cache_mu);
    return 0;
}

/* ------------------------------------------------------------ describing */

/* Whether the sidecar in dir says the server wrote the data set. The
 * sidecar is a file of the data directory like any other: read with a
 * size limit, and only its "source" is believed. */
static int uploaded(const char *dir) {
    char path[4400];
    snprintf(path, sizeof path, "%s/%s", dir, SIDECAR);
    struct stat sb;
    if (lstat(path, &sb) != 0 || !S_ISREG(sb.st_mode)) return 0;
    uint8_t *text = NULL;
    size_t len = 0;
    char err[DAE_ERR_LEN];
    if (dae_file_read(path, 64 << 10, &text, &len, err, sizeof err) != DAE_OK) return 0;
    cJSON *j = cJSON_ParseWithLength((const char *)text, len);
    free(text);
    const cJSON *src = cJSON_GetObjectItemCaseSensitive(j, "source");
    int yes = cJSON_IsString(src) && strcmp(src->valuestring, "upload") == 0;
    cJSON_Delete(j);
    return yes;
}

/* The data set data_dir/name as a JSON object (see srv_dataset_get), or
 * NULL with err filled and *st set. */
static cJSON *describe(srv_datasets *ds, const char *data_dir, const char *name, dae_status *st, char *err,
                       size_t errlen) {
    char dir[4200];
    snprintf(dir, sizeof dir, "%s/%s", data_dir, name);
    struct stat dsb;
    if (!dae_name_valid(name) || lstat(dir, &dsb) != 0 || !S_ISDIR(dsb.st_mode)) {
        *st = dae_fail(err, errlen, DAE_ERR_NOT_FOUND, "no data set named \"%.80s\" (GET /datasets lists them)",
                       name);
        return NULL;
    }
    dae_dataset_info info;
    char why[DAE_ERR_LEN];
    if (dae_dataset_info_read(data_dir, name, &info, why, sizeof why) != DAE_OK) {
        *st = dae_fail(err, errlen, DAE_ERR_INVALID, "the directory of data set \"%s\" is not a valid data set: %s",
                       name, why);
        return NULL;
    }
    char paths[4][4400];
    struct stat fst[4];
    long long bytes = 0;
    for (int i = 0; i < 4; i++) {
        if (file_path(dir, i, paths[i], sizeof paths[i], &fst[i]) != 0) {
            *st = dae_fail(err, errlen, DAE_ERR_INVALID, "data set \"%s\" has no file %s", name, FILES[i]);
            return NULL;
        }
        bytes += (long long)fst[i].st_size;
    }
    char hex[65];
    if (files_sha256(ds, paths, fst, hex) != 0) {
        *st = dae_fail(err, errlen, errno == ENOMEM ? DAE_ERR_NOMEM : DAE_ERR_IO,
                       "cannot read the files of data set \"%s\": %s", name, strerror(errno));
        return NULL;
    }
    char created[32];
    struct tm tm;
    gmtime_r(&dsb.st_mtime, &tm);
    strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", &tm);
    cJSON *o = cJSON_CreateObject();
    cJSON *files = cJSON_CreateArray();
    if (o == NULL || files == NULL) {
        cJSON_Delete(o);
        cJSON_Delete(files);
        *st = dae_fail(err, errlen, DAE_ERR_NOMEM, "out of memory");
        return NULL;
    }
    for (int i = 0; i < 4; i++) cJSON_AddItemToArray(files, cJSON_CreateString(strrchr(paths[i], '/') + 1));
    cJSON_AddStringToObject(o, "name", name);
    cJSON_AddNumberToObject(o, "train_count", info.train_count);
    cJSON_AddNumberToObject(o, "test_count", info.test_count);
    cJSON_AddNumberToObject(o, "rows", info.rows);
    cJSON_AddNumberToObject(o, "cols", info.cols);
    cJSON_AddNumberToObject(o, "bytes", (double)bytes);
    cJSON_AddStringToObject(o, "sha256", hex);
    cJSON_AddItemToObject(o, "files", files);
    cJSON_AddStringToObject(o, "created", created);
    cJSON_AddStringToObject(o, "source", uploaded(dir) ? "upload" : "directory");
    *st = DAE_OK;
    return o;
}

/* The JSON text of o (taken over) with a newline; NULL if out of memory. */
static char *json_text(cJSON *o) {
    char *s = o != NULL ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    if (s == NULL) return NULL;
    size_t n = strlen(s);
    char *t = realloc(s, n + 2);
    if (t == NULL) {
        free(s);
        return NULL;
    }
    t[n] = '\n', t[n + 1] = '\0';
    return t;
}

static int by_name(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

char *srv_datasets_list_json(srv_datasets *ds) {
    cJSON *o = cJSON_CreateObject(), *arr = cJSON_CreateArray();
    if (o == NULL || arr == NULL) {
        cJSON_Delete(o);
        cJSON_Delete(arr);
        return NULL;
    }
    cJSON_AddItemToObject(o, "datasets", arr);
    char **names = NULL;
    size_t n = 0;
    DIR *d = opendir(ds->cfg->data_dir);
    struct dirent *e;
    while (d != NULL && (e = readdir(d)) != NULL) {
        if (!dae_name_valid(e->d_name)) continue; /* ".", "..", staging directories */
        char **grown = realloc(names, sizeof *names * (n + 1));
        char *copy = strdup(e->d_name);
        if (grown == NULL || copy == NULL) {
            free(copy);
            if (grown != NULL) names = grown;
            break;
        }
        names = grown;
        names[n++] = copy;
    }
    if (d != NULL) closedir(d);
    if (n > 1) qsort(names, n, sizeof *names, by_name);
    for (size_t i = 0; i < n; i++) {
        dae_status st;
        char err[DAE_ERR_LEN + 256];
        cJSON *one = describe(ds, ds->cfg->data_dir, names[i], &st, err, sizeof err);
        if (one != NULL) cJSON_AddItemToArray(arr, one);
        free(names[i]);
    }
    free(names);
    return json_text(o);
}

dae_status srv_dataset_get(srv_datasets *ds, const char *name, char **json, char *err, size_t errlen) {
    dae_status st;
    *json = NULL;
    cJSON *o = describe(ds, ds->cfg->data_dir, name, &st, err, errlen);
    if (o == NULL) return st;
    *json = json_text(o);
    return *json != NULL ? DAE_OK : dae_fail(err, errlen, DAE_ERR_NOMEM, "out of memory");
}

/* ------------------------------------------------------------ changing */

/* DAE_ERR_IN_USE with err filled when a queued or running job names the
 * data set name, else DAE_OK. */
static dae_status check_unused(srv_datasets *ds, const char *name, const char *doing, char *err, size_t errlen) {
    char job[32];
    if (ds->training == NULL || !srv_training_dataset_in_use(ds->training, name, job, sizeof job)) return DAE_OK;
    return dae_fail(err, errlen, DAE_ERR_IN_USE,
                    "data set \"%s\" is used by training job %s, which is queued or running; %s it when the job has "
                    "ended (or cancel it: DELETE /train/%s)",
                    name, job, doing, job);
}

/* The sidecar of an upload: who wrote the data set, when, from what. */
static char *sidecar_text(const dae_import_report *rep) {
    char now[32];
    srv_utc_now(now, sizeof now);
    cJSON *o = cJSON_CreateObject();
    if (o == NULL) return NULL;
    cJSON_AddStringToObject(o, "source", "upload");
    cJSON_AddStringToObject(o, "uploaded", now);
    cJSON_AddStringToObject(o, "import_source", rep->source);
    cJSON_AddNumberToObject(o, "images", rep->images);
    cJSON_AddNumberToObject(o, "patches", rep->patches);
    return json_text(o);
}

/* The import's report as JSON. */
static cJSON *report_json(const dae_import_report *rep) {
    cJSON *o = cJSON_CreateObject();
    if (o == NULL) return NULL;
    cJSON_AddStringToObject(o, "source", rep->source);
    cJSON_AddNumberToObject(o, "members", rep->members);
    cJSON_AddNumberToObject(o, "images", rep->images);
    cJSON_AddNumberToObject(o, "patches", rep->patches);
    cJSON_AddNumberToObject(o, "train_count", rep->train_count);
    cJSON_AddNumberToObject(o, "test_count", rep->test_count);
    cJSON_AddNumberToObject(o, "rows", rep->rows);
    cJSON_AddNumberToObject(o, "cols", rep->cols);
    cJSON_AddStringToObject(o, "test_split", rep->split);
    cJSON_AddNumberToObject(o, "test_every", rep->test_every);
    cJSON_AddNumberToObject(o, "skipped_small", rep->skipped_small);
    cJSON_AddNumberToObject(o, "skipped_other", rep->skipped_other);
    return o;
}

/* Writes d with its sidecar as DATA_DIR/name: in the staging directory
 * stage (made here), then one rename into place (exchanging with the old
 * copy when exists). *described is the data set as GET /datasets/{name}
 * shows it, read from the staged copy. On failure nothing is left. */
static dae_status install(srv_datasets *ds, const char *name, const dae_dataset *d, const dae_import_report *rep,
                          int exists, cJSON **described, char *err, size_t errlen) {
    static atomic_ulong uploads;
    const char *data_dir = ds->cfg->data_dir;
    char stage[4200], staged[4300], final[4200], side[4400];
    snprintf(final, sizeof final, "%s/%s", data_dir, name);
    snprintf(stage, sizeof stage, "%s/.tmp.%ld.%s.put%luXXXXXX", data_dir, (long)getpid(), name,
             atomic_fetch_add(&uploads, 1) + 1);
    if (mkdtemp(stage) == NULL)
        return dae_fail(err, errlen, dae_write_errno_status(errno), "cannot make a directory in the data directory: %s",
                        strerror(errno));
    dae_status st = dae_dataset_save_dir(stage, name, d, 0, err, errlen);
    snprintf(staged, sizeof staged, "%s/%s", stage, name);
    snprintf(side, sizeof side, "%s/%s", staged, SIDECAR);
    char *text = st == DAE_OK ? sidecar_text(rep) : NULL;
    if (st == DAE_OK && text == NULL) st = dae_fail(err, errlen, DAE_ERR_NOMEM, "out of memory");
    if (st == DAE_OK) st = dae_file_write_atomic(side, text, strlen(text), err, errlen);
    free(text);
    /* Described as staged, so that the answer stands even if a DELETE
     * takes the data set the moment it is in place. */
    if (st == DAE_OK) *described = describe(ds, stage, name, &st, err, errlen);
    /* The last look at the jobs before the data set changes under them. */
    if (st == DAE_OK && exists) st = check_unused(ds, name, "replace", err, errlen);
    if (st == DAE_OK &&
        renameat2(AT_FDCWD, staged, AT_FDCWD, final, exists ? RENAME_EXCHANGE : RENAME_NOREPLACE) != 0) {
        int e = errno;
        if (e == EEXIST || (exists && e == ENOENT))
            st = dae_fail(err, errlen, DAE_ERR_EXISTS, "data set \"%s\" %s while the upload was being written", name,
                          e == EEXIST ? "appeared" : "was removed");
        else
            st = dae_fail(err, errlen, DAE_ERR_IO, "data set \"%s\": rename into the data directory failed: %s", name,
                          strerror(e));
    }
    /* stage now holds nothing, or the old copy of a replaced data set. */
    int rm_failed = dae_dir_remove_tree(stage) != 0;
    if (st == DAE_OK && rm_failed)
        srv_log("warning: cannot remove %s (the old copy of data set %s): %s", stage, name, strerror(errno));
    if (st == DAE_OK && dae_dir_fsync(data_dir) != 0)
        st = dae_fail(err, errlen, DAE_ERR_IO, "data set \"%s\" written, but syncing the data directory failed: %s",
                      name, strerror(errno));
    if (st != DAE_OK) {
        cJSON_Delete(*described);
        *described = NULL;
    }
    return st;
}

dae_status srv_dataset_put(srv_datasets *ds, const char *name, const void *body, size_t len, int replace,
                           int *replaced, char **json, char *err, size_t errlen) {
    const char *data_dir = ds->cfg->data_dir;
    *replaced = 0;
    *json = NULL;
    if (!dae_name_valid(name))
        return dae_fail(err, errlen, DAE_ERR_INVALID,
                        "a data set name is 1 to %d characters of [A-Za-z0-9._-], not starting with '.'; \"%.80s\" "
                        "is not one",
                        DAE_NAME_MAX, name);
    if ((long long)len > ds->cfg->max_dataset_bytes)
        return dae_fail(err, errlen, DAE_ERR_TOO_LARGE, "a data set archive is at most %lld bytes, this one has %zu",
                        ds->cfg->max_dataset_bytes, len);
    if (mkdir(data_dir, 0755) != 0 && errno != EEXIST)
        return dae_fail(err, errlen, DAE_ERR_IO, "cannot make the data directory: %s", strerror(errno));
    char final[4200];
    snprintf(final, sizeof final, "%s/%s", data_dir, name);
    struct stat sb;
    int exists = lstat(final, &sb) == 0;
    if (exists && !S_ISDIR(sb.st_mode))
        return dae_fail(err, errlen, DAE_ERR_EXISTS,
                        "\"%s\" in the data directory is not a directory; choose another name", name);
    if (exists && !replace)
        return dae_fail(err, errlen, DAE_ERR_EXISTS,
                        "a data set named \"%s\" already exists; upload under another name, or add ?replace=true to "
                        "replace it",
                        name);
    dae_status st = exists ? check_unused(ds, name, "replace", err, errlen) : DAE_OK;
    if (st != DAE_OK) return st;
    cJSON *o = NULL;
    srv_model *m = srv_registry_acquire(ds->registry, NULL);
    if (m == NULL) return dae_fail(err, errlen, DAE_ERR_IO, "no default model to cut the images for");
    int rows = m->net.in_h, cols = m->net.in_w;
    srv_model_release(m);
    if (pthread_mutex_trylock(&ds->import_mu) != 0)
        return dae_fail(err, errlen, DAE_ERR_BUSY, "another data set upload is being imported; retry shortly");
    dae_import_limits lim;
    dae_import_limits_default(&lim);
    lim.max_archive_bytes = (size_t)ds->cfg->max_dataset_bytes;
    dae_dataset d;
    dae_import_report rep;
    st = dae_dataset_import_memory(body, len, "upload", &lim, rows, cols, &d, &rep, err, errlen);
    if (st == DAE_ERR_IO) st = DAE_ERR_FORMAT; /* no file was read: the bytes are at fault (a truncated gzip) */
    if (st == DAE_OK) {
        st = install(ds, name, &d, &rep, exists, &o, err, errlen);
        dae_dataset_free(&d);
    }
    pthread_mutex_unlock(&ds->import_mu);
    if (st != DAE_OK) return st;
    cJSON_AddItemToObject(o, "import", report_json(&rep));
    srv_log("data set %s %s from an upload of %zu bytes (%s: %d images, %d train + %d test examples of %dx%d)", name,
            exists ? "replaced" : "installed", len, rep.source, rep.images, rep.train_count, rep.test_count, rows,
            cols);
    *replaced = exists;
    *json = json_text(o);
    return *json != NULL ? DAE_OK : dae_fail(err, errlen, DAE_ERR_NOMEM, "out of memory");
}

dae_status srv_dataset_delete(srv_datasets *ds, const char *name, char *err, size_t errlen) {
    static atomic_ulong deletes;
    const char *data_dir = ds->cfg->data_dir;
    char final[4200], away[4300];
    snprintf(final, sizeof final, "%s/%s", data_dir, name);
    struct stat sb;
    if (!dae_name_valid(name) || lstat(final, &sb) != 0 || !S_ISDIR(sb.st_mode))
        return dae_fail(err, errlen, DAE_ERR_NOT_FOUND, "no data set named \"%.80s\" (GET /datasets lists them)",
                        name);
    dae_status st = check_unused(ds, name, "delete", err, errlen);
    if (st != DAE_OK) return st;
    /* Away under a staging name first: readers see the data set whole or
     * not at all, and a crash while removing leaves a name the next start
     * removes. */
    snprintf(away, sizeof away, "%s/.tmp.%ld.%s.del%lu", data_dir, (long)getpid(), name,
             atomic_fetch_add(&deletes, 1) + 1);
    if (renameat2(AT_FDCWD, final, AT_FDCWD, away, RENAME_NOREPLACE) != 0) {
        if (errno == ENOENT)
            return dae_fail(err, errlen, DAE_ERR_NOT_FOUND, "no data set named \"%s\" (it was just removed)", name);
        return dae_fail(err, errlen, DAE_ERR_IO, "cannot remove data set \"%s\": %s", name, strerror(errno));
    }
    dae_dir_fsync(data_dir);
    if (dae_dir_remove_tree(away) != 0)
        srv_log("warning: cannot remove %s (data set %s, deleted): %s", away, name, strerror(errno));
    srv_log("data set %s deleted", name);
    return DAE_OK;
}

/* ------------------------------------------------------------ the handle */

srv_datasets *srv_datasets_new(const srv_config *cfg, srv_registry *registry, srv_training *training) {
    srv_datasets *ds = calloc(1, sizeof *ds);
    if (ds == NULL) return NULL;
    ds->cfg = cfg, ds->registry = registry, ds->training = training;
    pthread_mutex_init(&ds->import_mu, NULL);
    pthread_mutex_init(&ds->cache_mu, NULL);
    if (cfg->data_dir != NULL) remove_stale(cfg->data_dir);
    return ds;
}

void srv_datasets_free(srv_datasets *ds) {
    if (ds == NULL) return;
    pthread_mutex_destroy(&ds->import_mu);
    pthread_mutex_destroy(&ds->cache_mu);
    free(ds->cache);
    free(ds);
}
