/* model_http.c - model files over HTTP: the download of a model's weights
 * with its ETag, and the upload of a new model (see model_http.h). */
#include "model_http.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fileio.h"
#include "utf8.h"

/* ------------------------------------------------------------ download */

/* Whether the If-None-Match value header names etag: "*", or a
 * comma-separated list holding it (weak W/ prefixes compare equal,
 * RFC 9110 13.1.2). */
static int etag_listed(const char *header, const char *etag) {
    size_t n = strlen(etag);
    for (const char *p = header; *p != '\0';) {
        p += strspn(p, " \t,");
        if (strncmp(p, "W/", 2) == 0) p += 2;
        size_t len = strcspn(p, ",");
        while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t')) len--;
        if ((len == 1 && p[0] == '*') || (len == n && memcmp(p, etag, n) == 0)) return 1;
        p += strcspn(p, ",");
    }
    return 0;
}

/* Opens the file of model m as it was loaded: an atomic write that
 * replaced it has a new inode, an edit in place a new modification time.
 * Once opened, the bytes are the loaded ones whatever happens to the name.
 * Returns the descriptor, -1 when the file changed or is gone, or -2 (errno
 * set) when it cannot be opened. */
static int open_as_loaded(const srv_model *m) {
    int fd = open(m->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return errno == ENOENT ? -1 : -2;
    struct stat sb;
    if (fstat(fd, &sb) != 0 || (long long)sb.st_dev != m->file_id[0] || (long long)sb.st_ino != m->file_id[1] ||
        (long long)sb.st_mtim.tv_sec * 1000000000LL + sb.st_mtim.tv_nsec != m->file_id[2] ||
        (size_t)sb.st_size != m->file_bytes) {
        close(fd);
        return -1;
    }
    return fd;
}

dae_status srv_model_file_open(srv_registry *r, const char *name, const char *if_none_match, srv_model_file *f,
                               char *err, size_t errlen) {
    memset(f, 0, sizeof *f);
    f->fd = -1;
    /* A file replaced or removed since its model was found: an upload or a
     * deletion through the registry renames or removes the file and lists
     * the change under one hold of its lock, so a second look finds the
     * model it installed, or none. A file changed by another process stays
     * unlike its model until a rescan. */
    for (int attempt = 0;; attempt++) {
        srv_model *m = srv_registry_acquire(r, name);
        if (m == NULL)
            return dae_fail(err, errlen, DAE_ERR_NOT_FOUND, "no model named \"%s\" (GET /models lists them)", name);
        snprintf(f->etag, sizeof f->etag, "\"sha256:%s\"", m->sha256);
        snprintf(f->disposition, sizeof f->disposition, "attachment; filename=\"%s.safetensors\"", m->name);
        if (if_none_match != NULL && etag_listed(if_none_match, f->etag)) {
            f->not_modified = 1;
            srv_model_release(m);
            return DAE_OK;
        }
        int fd = open_as_loaded(m);
        if (fd >= 0) {
            f->fd = fd;
            f->len = m->file_bytes;
        }
        srv_model_release(m);
        if (fd >= 0) return DAE_OK;
        if (fd == -2)
            return dae_fail(err, errlen, DAE_ERR_IO, "cannot open the weights file of model \"%s\": %s", name,
                            strerror(errno));
        if (attempt == 1)
            return dae_fail(err, errlen, DAE_ERR_CONFLICT,
                            "the weights file of model \"%s\" was changed or removed since it was loaded; the next "
                            "rescan of the models directory reloads it (retry shortly)",
                            name);
    }
}

/* ------------------------------------------------------------ upload */

dae_status srv_model_put(srv_registry *r, const char *models_dir, const char *name, const void *body, size_t len,
                         int replace, int *replaced, char **json, char *err, size_t errlen) {
    *replaced = 0;
    if (!dae_name_valid(name))
        return dae_fail(err, errlen, DAE_ERR_INVALID,
                        "a model name is 1 to %d characters of [A-Za-z0-9._-], not starting with '.'; \"%.80s\" is "
                        "not one",
                        DAE_NAME_MAX, name);
    if ((long long)len > SRV_MODEL_MAX_BYTES)
        return dae_fail(err, errlen, DAE_ERR_TOO_LARGE, "a model file is at most %lld bytes, this one has %zu",
                        SRV_MODEL_MAX_BYTES, len);
    if (models_dir == NULL) return dae_fail(err, errlen, DAE_ERR_IO, "this server has no models directory");
    int active = 0, taken = srv_registry_name_taken(r, name, &active);
    if (active)
        return dae_fail(err, errlen, DAE_ERR_IN_USE,
                        "\"%s\" is the active model, whose file is never replaced: upload the new weights under "
                        "another name (PUT /models/NEW_NAME), then make it the active model (POST "
                        "/models/NEW_NAME/activate)",
                        name);
    if (taken && !replace)
        return dae_fail(err, errlen, DAE_ERR_EXISTS,
                        "a model named \"%s\" already exists; upload under another name, or add ?replace=true to "
                        "replace it",
                        name);
    if (mkdir(models_dir, 0755) != 0 && errno != EEXIST)
        return dae_fail(err, errlen, DAE_ERR_IO, "cannot make the models directory: %s", strerror(errno));
    /* Written and flushed once beside its place; the install checks that
     * it loads, then renames it there and syncs the directory. */
    char path[4200], *tmp;
    snprintf(path, sizeof path, "%s/%s.safetensors", models_dir, name);
    dae_status st = dae_file_write_temp(path, body, len, &tmp, err, errlen);
    if (st != DAE_OK) return st;
    st = srv_registry_install_upload(r, name, tmp, replace, json, err, errlen);
    if (st != DAE_OK) {
        unlink(tmp);
        /* The loader names the file it read: to the client, that is the upload. */
        size_t n = strlen(tmp);
        if (strncmp(err, tmp, n) == 0) {
            char rest[DAE_ERR_LEN];
            srv_copy_str(rest, sizeof rest, err + n);
            snprintf(err, errlen, "the uploaded file%s", rest);
        }
    }
    free(tmp);
    if (st != DAE_OK) return st;
    *replaced = taken;
    return DAE_OK;
}
