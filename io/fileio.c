/* fileio.c - size-limited whole-file reads and atomic writes. */
#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

dae_status dae_fd_read_all(int fd, const char *name, size_t max_bytes, uint8_t **data, size_t *len, char *err,
                           size_t errlen) {
    size_t cap = 0, got = 0;
    uint8_t *buf = NULL;
    *data = NULL;
    *len = 0;
    for (;;) {
        if (got == cap) { /* full: grow, up to one byte over the limit to tell "at" from "over" */
            if (cap > max_bytes) {
                free(buf);
                return dae_fail(err, errlen, DAE_ERR_IO, "%s: more than the limit of %zu bytes", name, max_bytes);
            }
            size_t next = cap == 0 ? (size_t)1 << 16 : cap * 2;
            if (next > max_bytes + 1) next = max_bytes + 1;
            uint8_t *grown = realloc(buf, next + 1); /* and the NUL after the data */
            if (grown == NULL) {
                free(buf);
                return dae_fail(err, errlen, DAE_ERR_NOMEM, "%s: out of memory for %zu bytes", name, next);
            }
            buf = grown;
            cap = next;
        }
        ssize_t n = read(fd, buf + got, cap - got);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            int e = errno;
            free(buf);
            return dae_fail(err, errlen, DAE_ERR_IO, "%s: %s", name, strerror(e));
        }
        if (n == 0) break;
        got += (size_t)n;
    }
    buf[got] = 0;
    *data = buf;
    *len = got;
    return DAE_OK;
}

dae_status dae_file_read(const char *path, size_t max_bytes, uint8_t **data, size_t *len,
                         char *err, size_t errlen) {
    *data = NULL;
    *len = 0;
    /* Not blocking in open: a FIFO without a writer would wait for one. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return dae_fail(err, errlen, DAE_ERR_IO, "%s: %s", path, strerror(errno));
    struct stat sb;
    dae_status st = DAE_OK;
    if (fstat(fd, &sb) != 0) {
        st = dae_fail(err, errlen, DAE_ERR_IO, "%s: %s", path, strerror(errno));
    } else if (S_ISFIFO(sb.st_mode)) { /* a pipe, as bash's <(...) gives: read to its end */
        st = fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) == 0
                 ? dae_fd_read_all(fd, path, max_bytes, data, len, err, errlen)
                 : dae_fail(err, errlen, DAE_ERR_IO, "%s: %s", path, strerror(errno));
        close(fd);
        return st;
    } else if (!S_ISREG(sb.st_mode)) {
        st = dae_fail(err, errlen, DAE_ERR_IO, "%s: %s", path,
                      S_ISDIR(sb.st_mode) ? "is a directory" : "not a regular file");
    } else if ((unsigned long long)sb.st_size > max_bytes) {
        st = dae_fail(err, errlen, DAE_ERR_IO, "%s: file is %lld bytes, over the limit of %zu", path,
                      (long long)sb.st_size, max_bytes);
    }
    size_t size = st == DAE_OK ? (size_t)sb.st_size : 0;
    uint8_t *buf = st == DAE_OK ? malloc(size + 1) : NULL;
    if (st == DAE_OK && buf == NULL)
        st = dae_fail(err, errlen, DAE_ERR_NOMEM, "%s: out of memory for %zu bytes", path, size);
    for (size_t got = 0; st == DAE_OK && got < size;) {
        ssize_t n = read(fd, buf + got, size - got);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0)
            st = dae_fail(err, errlen, DAE_ERR_IO, "%s: %s", path,
                          n < 0 ? strerror(errno) : "file shrank while being read");
        else
            got += (size_t)n;
    }
    close(fd);
    if (st != DAE_OK) {
        free(buf);
        return st;
    }
    buf[size] = 0;
    *data = buf;
    *len = size;
    return DAE_OK;
}

int dae_write_all(int fd, const void *data, size_t len) {
    const uint8_t *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return -1;
        if (n == 0) { /* no progress: give up rather than spin */
            errno = EIO;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Flushes the directory holding path so a rename in it survives a crash.
 * Filesystems that cannot fsync a directory (EINVAL) count as success. */
static int fsync_parent_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    char *dir = slash == NULL ? strdup(".") : slash == path ? strdup("/") : strndup(path, (size_t)(slash - path));
    if (dir == NULL) {
        errno = ENOMEM;
        return -1;
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    free(dir);
    if (fd < 0) return -1;
    int rc = fsync(fd), e = errno;
    close(fd);
    if (rc != 0 && e == EINVAL) rc = 0;
    errno = e;
    return rc;
}

dae_status dae_write_errno_status(int e) { return e == ENOSPC || e == EDQUOT ? DAE_ERR_NO_SPACE : DAE_ERR_IO; }

/* Writes through writer to path as it is, a device or a FIFO: renaming a
 * file over it would replace the node itself ("dae denoise in.png
 * /dev/full", as root, left a PNG file where /dev/full was, and said
 * nothing of the full device). */
static dae_status write_in_place(const char *path, dae_file_writer writer, void *ctx, char *err, size_t errlen) {
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return dae_fail(err, errlen, DAE_ERR_IO, "%s: cannot open it: %s", path, strerror(errno));
    int ok = writer(fd, ctx) == 0, e = errno;
    if (close(fd) != 0 && ok) ok = 0, e = errno;
    return ok ? DAE_OK : dae_fail(err, errlen, dae_write_errno_status(e), "%s: write failed: %s", path, strerror(e));
}

/* Writes through writer into a new temporary file beside path
 * (path.tmp.PID.XXXXXX, mode 0644), flushed and closed; its name in *tmp
 * (malloc'd). On failure nothing is left and *tmp is NULL. */
static dae_status write_temp(const char *path, dae_file_writer writer, void *ctx, char **tmp, char *err,
                             size_t errlen) {
    *tmp = NULL;
    size_t tmp_len = strlen(path) + 48;
    char *name = malloc(tmp_len);
    if (name == NULL) return dae_fail(err, errlen, DAE_ERR_NOMEM, "%s: out of memory", path);
    snprintf(name, tmp_len, "%s.tmp.%ld.XXXXXX", path, (long)getpid());
    int fd = mkstemp(name);
    if (fd < 0) {
        dae_status st = dae_fail(err, errlen, dae_write_errno_status(errno),
                                 "%s: cannot create a temporary file beside it: %s", path, strerror(errno));
        free(name);
        return st;
    }
    const char *what = "write";
    int ok = fchmod(fd, 0644) == 0 && writer(fd, ctx) == 0;
    if (ok) what = "fsync", ok = fsync(fd) == 0;
    int e = errno;
    if (close(fd) != 0 && ok) what = "close", ok = 0, e = errno;
    if (!ok) {
        unlink(name);
        dae_status st = dae_fail(err, errlen, dae_write_errno_status(e), "%s: %s of %s failed: %s", path, what, name,
                                 strerror(e));
        free(name);
        return st;
    }
    *tmp = name;
    return DAE_OK;
}

/* A path the writers take: a file's, not a directory's. */
static dae_status check_path(const char *path, char *err, size_t errlen) {
    if (path == NULL || path[0] == '\0' || path[strlen(path) - 1] == '/')
        return dae_fail(err, errlen, DAE_ERR_INVALID, "bad output path '%s'", path ? path : "(null)");
    return DAE_OK;
}

dae_status dae_file_write_atomic_with(const char *path, dae_file_writer writer, void *ctx,
                                      char *err, size_t errlen) {
    dae_status st = check_path(path, err, errlen);
    if (st != DAE_OK) return st;
    struct stat sb;
    if (stat(path, &sb) == 0 && (S_ISCHR(sb.st_mode) || S_ISBLK(sb.st_mode) || S_ISFIFO(sb.st_mode)))
        return write_in_place(path, writer, ctx, err, errlen);
    char *tmp;
    if ((st = write_temp(path, writer, ctx, &tmp, err, errlen)) != DAE_OK) return st;
    if (rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        st = dae_fail(err, errlen, dae_write_errno_status(e), "%s: rename of %s failed: %s", path, tmp, strerror(e));
    } else if (fsync_parent_dir(path) != 0) {
        /* The new file is complete and in place; only its durability
         * across a crash is in doubt, and removing it would lose both. */
        st = dae_fail(err, errlen, DAE_ERR_IO, "%s: written and renamed, but syncing its directory failed: %s",
                      path, strerror(errno));
    }
    free(tmp);
    return st;
}

typedef struct {
    const void *data;
    size_t len;
} buffer_ctx;

static int write_buffer(int fd, void *ctx) {
    const buffer_ctx *b = ctx;
    return dae_write_all(fd, b->data, b->len);
}

dae_status dae_file_write_atomic(const char *path, const void *data, size_t len, char *err, size_t errlen) {
    buffer_ctx b = {data, len};
    return dae_file_write_atomic_with(path, write_buffer, &b, err, errlen);
}

dae_status dae_file_write_temp(const char *path, const void *data, size_t len, char **tmp, char *err,
                               size_t errlen) {
    *tmp = NULL;
    dae_status st = check_path(path, err, errlen);
    buffer_ctx b = {data, len};
    return st != DAE_OK ? st : write_temp(path, write_buffer, &b, tmp, err, errlen);
}

long dae_file_temp_pid(const char *name) {
    const char *t = strstr(name, ".tmp.");
    if (t == NULL) return 0;
    char *end;
    long pid = strtol(t + 5, &end, 10);
    return pid > 0 && *end == '.' ? pid : 0;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)ftw;
    return flag == FTW_DP ? rmdir(path) : unlink(path);
}

int dae_dir_remove_tree(const char *dir) { return nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS); }

int dae_dir_fsync(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = fsync(fd), e = errno;
    close(fd);
    errno = e;
    return rc != 0 && e == EINVAL ? 0 : rc;
}
