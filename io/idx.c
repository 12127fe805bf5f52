/* idx.c - IDX image and label files (MNIST layout), raw or gzip, and the
 * four-file data sets built from them.
 *
 * A file's header is read and checked first, through zlib's gzread, which
 * also passes raw files through unchanged. The whole file is then read, a
 * gzip file inflated with libdeflate, into a buffer no larger than the
 * file can fill (so a lying header cannot make us allocate much more than
 * the file holds) and never past the announced size plus one byte (so a
 * gzip bomb stops there): read_whole. */
#include "idx.h"

#include <errno.h>
#include <fcntl.h>
#include <libdeflate.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "pages.h"

/* ------------------------------------------------------------------------
 * Header checks shared by the in-memory and the file readers
 * ------------------------------------------------------------------------ */

typedef enum { IDX_IMAGES, IDX_LABELS } idx_kind;

/* What a checked header says. */
typedef struct {
    int count, rows, cols; /* rows = cols = 1 for labels */
    size_t header_len;     /* 16 for images, 8 for labels */
    size_t payload;        /* count * rows * cols bytes */
} idx_header;

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static const char *kind_noun(idx_kind kind) { return kind == IDX_IMAGES ? "image" : "label"; }

/* Checks the magic number in the first 4 bytes (len >= 4) and says in err
 * what the file looks like instead when it is wrong. */
static dae_status check_magic(const uint8_t *buf, idx_kind kind, const char *label,
                              char *err, size_t errlen) {
    uint32_t want = kind == IDX_IMAGES ? DAE_IDX_MAGIC_IMAGES : DAE_IDX_MAGIC_LABELS;
    int want_dims = kind == IDX_IMAGES ? 3 : 1;
    uint32_t magic = be32(buf);
    if (magic == want) return DAE_OK;
    if (buf[0] == 0x1f && buf[1] == 0x8b)
        return dae_fail(err, errlen, DAE_ERR_FORMAT,
                        "%s: bad magic 0x%08x (expected 0x%08x for an IDX %s file): this is gzip data, not a raw IDX file",
                        label, magic, want, kind_noun(kind));
    if (buf[0] == 0 && buf[1] == 0 && buf[2] == 0x08) {
        const char *hint = "";
        if (kind == IDX_IMAGES && magic == DAE_IDX_MAGIC_LABELS) hint = " (this looks like a label file)";
        if (kind == IDX_LABELS && magic == DAE_IDX_MAGIC_IMAGES) hint = " (this looks like an image file)";
        return dae_fail(err, errlen, DAE_ERR_FORMAT,
                        "%s: bad magic 0x%08x: IDX file with %d dimension%s, expected %d (magic 0x%08x) for an IDX %s file%s",
                        label, magic, buf[3], buf[3] == 1 ? "" : "s", want_dims, want, kind_noun(kind), hint);
    }
    if (buf[0] == 0 && buf[1] == 0 && (buf[2] == 0x09 || (buf[2] >= 0x0B && buf[2] <= 0x0E)))
        return dae_fail(err, errlen, DAE_ERR_FORMAT,
                        "%s: bad magic 0x%08x: IDX data type 0x%02x is not unsigned bytes (0x08) (expected 0x%08x for an IDX %s file)",
                        label, magic, buf[2], want, kind_noun(kind));
    return dae_fail(err, errlen, DAE_ERR_FORMAT, "%s: bad magic 0x%08x (expected 0x%08x for an IDX %s file)",
                    label, magic, want, kind_noun(kind));
}

/* Checks the header at the start of buf (len bytes available, which may be
 * fewer than a header) and fills *h. Does not look at the payload. */
static dae_status check_header(const uint8_t *buf, size_t len, idx_kind kind, idx_header *h,
                               const char *label, char *err, size_t errlen) {
    size_t need = kind == IDX_IMAGES ? 16 : 8;
    if (len >= 4) {
        dae_status st = check_magic(buf, kind, label, err, errlen);
        if (st != DAE_OK) return st;
    }
    if (len < need)
        return dae_fail(err, errlen, DAE_ERR_FORMAT,
                        "%s: truncated: file has %zu bytes, an IDX %s header needs %zu",
                        label, len, kind_noun(kind), need);
    uint32_t count = be32(buf + 4);
    uint32_t rows = 1, cols = 1;
    if (kind == IDX_IMAGES) {
        rows = be32(buf + 8);
        cols = be32(buf + 12);
        if (rows < 1 || rows > DAE_IDX_MAX_SIDE || cols < 1 || cols > DAE_IDX_MAX_SIDE)
            return dae_fail(err, errlen, DAE_ERR_FORMAT,
                            "%s: image size %ux%u is outside 1..%d on a side", label, rows, cols, DAE_IDX_MAX_SIDE);
    }
    uint64_t payload = (uint64_t)count * rows * cols; /* < 2^56, no overflow */
    if (count > INT_MAX || payload > DAE_IDX_MAX_PAYLOAD) {
        if (kind == IDX_IMAGES)
            return dae_fail(err, errlen, DAE_ERR_FORMAT,
                            "%s: header says %u images of %ux%u (%llu bytes), more than the %llu-byte limit",
                            label, count, rows, cols, (unsigned long long)payload,
                            (unsigned long long)DAE_IDX_MAX_PAYLOAD);
        return dae_fail(err, errlen, DAE_ERR_FORMAT, "%s: header says %u labels, more than the %llu-byte limit",
                        label, count, (unsigned long long)DAE_IDX_MAX_PAYLOAD);
    }
    h->count = (int)count;
    h->rows = (int)rows;
    h->cols = (int)cols;
    h->header_len = need;
    h->payload = (size_t)payload;
    return DAE_OK;
}

/* Checks that have bytes follow the header where h->payload are due;
 * at_least says have is only a lower bound (the reader stopped early). */
static dae_status check_payload_len(const idx_header *h, idx_kind kind, size_t have, int at_least,
                                    const char *label, char *err, size_t errlen) {
    if (have == h->payload) return DAE_OK;
    const char *what = have < h->payload ? "truncated" : "trailing bytes";
    char has[64];
    if (at_least) snprintf(has, sizeof has, "more than %zu", have - 1);
    else snprintf(has, sizeof has, "%zu", have);
    if (kind == IDX_IMAGES)
        return dae_fail(err, errlen, DAE_ERR_FORMAT,
                        "%s: %s: header says %d images of %dx%d (%zu bytes), file has %s after the %zu-byte header",
                        label, what, h->count, h->rows, h->cols, h->payload, has, h->header_len);
    return dae_fail(err, errlen, DAE_ERR_FORMAT,
                    "%s: %s: header says %d labels (%zu bytes), file has %s after the %zu-byte header",
                    label, what, h->count, h->payload, has, h->header_len);
}

/* ------------------------------------------------------------------------
 * In-memory parsing
 * ------------------------------------------------------------------------ */

/* Checks a whole file image and returns a malloc'd copy of its payload in
 * *payload_out (at least 1 byte allocated, so never NULL on success). */
static dae_status parse_any(const uint8_t *buf, size_t len, idx_kind kind, idx_header *h,
                            uint8_t **payload_out, const char *label, char *err, size_t errlen) {
    *payload_out = NULL;
    if (buf == NULL && len > 0)
        return dae_fail(err, errlen, DAE_ERR_INVALID, "%s: no buffer given", label);
    dae_status st = check_header(buf, len, kind, h, label, err, errlen);
    if (st != DAE_OK) return st;
    st = check_payload_len(h, kind, len - h->header_len, 0, label, err, errlen);
    if (st != DAE_OK) return st;
    uint8_t *p = malloc(h->payload > 0 ? h->payload : 1);
    if (p == NULL)
        return dae_fail(err, errlen, DAE_ERR_NOMEM, "%s: out of memory for %zu bytes", label, h->payload);
    if (h->payload > 0) memcpy(p, buf + h->header_len, h->payload);
    *payload_out = p;
    return DAE_OK;
}

dae_status dae_idx_parse_images(const uint8_t *buf, size_t len, dae_idx_images *out, char *err, size_t errlen) {
    if (out == NULL) return dae_fail(err, errlen, DAE_ERR_INVALID, "IDX images: no output given");
    memset(out, 0, sizeof *out);
    idx_header h = {0};
    dae_status st = parse_any(buf, len, IDX_IMAGES, &h, &out->pixels, "IDX images", err, errlen);
    if (st != DAE_OK) return st;
    out->count = h.count;
    out->rows = h.rows;
    out->cols = h.cols;
    return DAE_OK;
}

dae_status dae_idx_parse_labels(const uint8_t *buf, size_t len, dae_idx_labels *out, char *err, size_t errlen) {
    if (out == NULL) return dae_fail(err, errlen, DAE_ERR_INVALID, "IDX labels: no output given");
    memset(out, 0, sizeof *out);
    idx_header h = {0};
    dae_status st = parse_any(buf, len, IDX_LABELS, &h, &out->labels, "IDX labels", err, errlen);
    if (st != DAE_OK) return st;
    out->count = h.count;
    return DAE_OK;
}

/* ------------------------------------------------------------------------
 * Reading files (raw or gzip)
 * ------------------------------------------------------------------------ */

/* Reads up to want bytes from gz into dst and sets *got (short only at the
 * end of the data). Fails with DAE_ERR_FORMAT when the gzip stream is
 * corrupt or truncated, DAE_ERR_IO when reading the file fails. */
static dae_status gz_read_upto(gzFile gz, uint8_t *dst, size_t want, size_t *got,
                               const char *path, char *err, size_t errlen) {
    *got = 0;
    while (*got < want) {
        size_t ask = want - *got;
        if (ask > (1u << 30)) ask = 1u << 30;
        int r = gzread(gz, dst + *got, (unsigned)ask);
        int errnum = Z_OK;
        const char *msg = gzerror(gz, &errnum);
        if (r < 0 || (errnum != Z_OK && errnum != Z_STREAM_END)) {
            if (errnum == Z_ERRNO)
                return dae_fail(err, errlen, DAE_ERR_IO, "%s: read failed: %s", path, strerror(errno));
            /* zlib's message starts with the path given to gzopen: drop it. */
            size_t pl = strlen(path);
            if (msg != NULL && strncmp(msg, path, pl) == 0 && strncmp(msg + pl, ": ", 2) == 0) msg += pl + 2;
            return dae_fail(err, errlen, DAE_ERR_FORMAT, "%s: corrupt gzip data: %s", path,
                            msg != NULL && msg[0] != '\0' ? msg : "unknown error");
        }
        *got += (size_t)r;
        if ((size_t)r < ask) break;
    }
    return DAE_OK;
}

/* Reads and checks only the header of the IDX file at path (raw or
 * gzip) into *h; *gzip (when not NULL): 1 for a gzip file, as zlib
 * found it. */
static dae_status peek_any(const char *path, idx_kind kind, idx_header *h, int *gzip, char *err, size_t errlen) {
    errno = 0;
    gzFile gz = gzopen(path, "rb");
    if (gz == NULL)
        return dae_fail(err, errlen, DAE_ERR_IO, "%s: cannot open: %s", path,
                        errno ? strerror(errno) : "out of memory");
    uint8_t head[16];
    size_t n = 0;
    dae_status st = gz_read_upto(gz, head, kind == IDX_IMAGES ? 16 : 8, &n, path, err, errlen);
    if (st == DAE_OK) st = check_header(head, n, kind, h, path, err, errlen);
    if (gzip != NULL) *gzip = !gzdirect(gz);
    gzclose(gz);
    return st;
}

/* The whole of a gzip file (in, len bytes) inflated into out (cap
 * bytes), member after member, as gzread reads it: bytes after a member
 * that do not start another are ignored. Sets *got; *full when the data
 * holds more than cap bytes (what is in out is then undefined). */
static dae_status inflate_members(const uint8_t *in, size_t len, uint8_t *out, size_t cap, size_t *got, int *full,
                                  const char *path, char *err, size_t errlen) {
    struct libdeflate_decompressor *d = libdeflate_alloc_decompressor();
    if (d == NULL) return dae_fail(err, errlen, DAE_ERR_NOMEM, "%s: out of memory", path);
    dae_status st = DAE_OK;
    *got = 0;
    *full = 0;
    for (size_t at = 0; at + 2 <= len && in[at] == 0x1f && in[at + 1] == 0x8b;) {
        size_t used = 0, made = 0;
        enum libdeflate_result r = libdeflate_gzip_decompress_ex(d, in + at, len - at, out + *got, cap - *got, &used,
                                                                 &made);
        if (r == LIBDEFLATE_INSUFFICIENT_SPACE) {
            *full = 1;
            break;
        }
        if (r != LIBDEFLATE_SUCCESS) {
            st = dae_fail(err, errlen, DAE_ERR_FORMAT, "%s: corrupt gzip data: damaged or cut short", path);
            break;
        }
        at += used;
        *got += made;
    }
    libdeflate_free_decompressor(d);
    return st;
}

/* Reads up to want bytes of fd into dst; sets *got (short at the end of
 * the file). */
static dae_status read_upto(int fd, uint8_t *dst, size_t want, size_t *got, const char *path, char *err,
                            size_t errlen) {
    *got = 0;
    while (*got < want) {
        ssize_t r = read(fd, dst + *got, want - *got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return dae_fail(err, errlen, DAE_ERR_IO, "%s: read failed: %s", path, strerror(errno));
        if (r == 0) break;
        *got += (size_t)r;
    }
    return DAE_OK;
}

/* The IDX file at path, header and payload, in a buffer of at most cap
 * bytes: its bytes, or a gzip file's inflated with libdeflate (2.1x
 * zlib's gzread: MNIST's training images in 58 ms instead of 122, one
 * core). The buffer starts at a gzip file's last size field (its whole
 * size when it has one member), believed up to 16 bytes a byte of file
 * (MNIST's inflate to 4.8), and doubles while the data fills it: a
 * header or a size field that claims more than the file holds cannot
 * make it large, and its pages are asked for at once (pages.h).
 * Of a gzip file, as much is read as could inflate to cap bytes in
 * stored blocks (bytes past a member's end are ignored anyway). Sets
 * *got: cap when the data holds more than cap bytes. */
static dae_status read_whole(const char *path, int gz, size_t cap, uint8_t **buf_out, size_t *got, char *err,
                             size_t errlen) {
    *buf_out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat sb;
    if (fd < 0 || fstat(fd, &sb) != 0) {
        dae_status st = dae_fail(err, errlen, DAE_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        if (fd >= 0) close(fd);
        return st;
    }
    dae_status st = DAE_OK;
    uint8_t *in = NULL, *buf = NULL;
    size_t room = cap, len = 0;
    if (gz) {
        size_t most = cap + cap / 64 + ((size_t)1 << 20);
        len = (size_t)sb.st_size < most ? (size_t)sb.st_size : most;
        if ((in = malloc(len > 0 ? len : 1)) == NULL) {
            st = dae_fail(err, errlen, DAE_ERR_NOMEM, "%s: out of memory for %zu bytes", path, len);
        } else {
            dae_prefault(in, len);
            st = read_upto(fd, in, len, &len, path, err, errlen);
        }
        size_t last = st == DAE_OK && len >= 4 ? (size_t)in[len - 4] | (size_t)in[len - 3] << 8 |
                                                     (size_t)in[len - 2] << 16 | (size_t)in[len - 1] << 24
                                               : 0;
        if (last > len * 16) last = len * 16;
        if (last < cap) room = last + 1;
    } else if ((size_t)sb.st_size < cap) {
        room = (size_t)sb.st_size + 1; /* the +1 sees a file that grew */
    }
    while (st == DAE_OK) {
        uint8_t *grown = realloc(buf, room > 0 ? room : 1);
        if (grown == NULL) {
            st = dae_fail(err, errlen, DAE_ERR_NOMEM, "%s: out of memory for %zu bytes", path, room);
            break;
        }
        buf = grown;
        dae_prefault(buf, room); /* without: dae train --limit 64 on MNIST 0.29-0.30 s, not 0.21-0.23 */
        if (!gz) {
            st = read_upto(fd, buf, room, got, path, err, errlen);
            break;
        }
        int full = 0;
        st = inflate_members(in, len, buf, room, got, &full, path, err, errlen);
        if (full && room == cap) *got = cap;
        if (st != DAE_OK || !full || room == cap) break;
        room = room > cap / 2 ? cap : room * 2;
    }
    close(fd);
    free(in);
    if (st != DAE_OK) {
        free(buf);
        return st;
    }
    *buf_out = buf;
    return DAE_OK;
}

/* Reads and checks the IDX file at path. On success *payload_out is a
 * malloc'd buffer holding exactly h->payload bytes (at least 1 allocated). */
static dae_status load_any(const char *path, idx_kind kind, idx_header *h, uint8_t **payload_out,
                           char *err, size_t errlen) {
    *payload_out = NULL;
    if (path == NULL) return dae_fail(err, errlen, DAE_ERR_INVALID, "IDX load: no path given");
    struct stat sb;
    if (stat(path, &sb) != 0)
        return dae_fail(err, errlen, DAE_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    if (S_ISDIR(sb.st_mode))
        return dae_fail(err, errlen, DAE_ERR_IO, "%s: is a directory, not an IDX file", path);
    int gz;
    dae_status st = peek_any(path, kind, h, &gz, err, errlen);
    if (st != DAE_OK) return st;
    /* At most the payload and one byte more: the extra byte tells
     * trailing data apart without inflating it all. */
    size_t limit = h->header_len + h->payload + 1, got = 0;
    uint8_t *buf;
    st = read_whole(path, gz, limit, &buf, &got, err, errlen);
    if (st != DAE_OK) return st;
    got = got > h->header_len ? got - h->header_len : 0;
    st = check_payload_len(h, kind, got, got > h->payload, path, err, errlen);
    if (st != DAE_OK) {
        free(buf);
        return st;
    }
    memmove(buf, buf + h->header_len, h->payload);
    *payload_out = buf;
    return DAE_OK;
}

dae_status dae_idx_load_images(const char *path, dae_idx_images *out, char *err, size_t errlen) {
    if (out == NULL) return dae_fail(err, errlen, DAE_ERR_INVALID, "%s: no output given", path ? path : "IDX");
    memset(out, 0, sizeof *out);
    idx_header h = {0};
    dae_status st = load_any(path, IDX_IMAGES, &h, &out->pixels, err, errlen);
    if (st != DAE_OK) return st;
    out->count = h.count;
    out->rows = h.rows;
    out->cols = h.cols;
    return DAE_OK;
}

dae_status dae_idx_load_labels(const char *path, dae_idx_labels *out, char *err, size_t errlen) {
    if (out == NULL) return dae_fail(err, errlen, DAE_ERR_INVALID, "%s: no output given", path ? path : "IDX");
    memset(out, 0, sizeof *out);
    idx_header h = {0};
    dae_status st = load_any(path, IDX_LABELS, &h, &out->labels, err, errlen);
    if (st != DAE_OK) return st;
    out->count = h.count;
    return DAE_OK;
}

/* ------------------------------------------------------------------------
 * Data sets
 * ------------------------------------------------------------------------ */

/* Returns a malloc'd "a/b<suffix>", or NULL when out of memory. */
static char *path_join(const char *a, const char *b, const char *suffix) {
    size_t n = strlen(a) + 1 + strlen(b) + strlen(suffix) + 1;
    char *p = malloc(n);
    if (p != NULL) snprintf(p, n, "%s/%s%s", a, b, suffix);
    return p;
}

static int is_regular_file(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* Finds DIR/BASE or else DIR/BASE.gz and returns its malloc'd path in
 * *found; fails with DAE_ERR_IO naming both places when neither exists. */
static dae_status find_idx_file(const char *dir, const char *name, const char *base, char **found,
                                char *err, size_t errlen) {
    *found = NULL;
    char *raw = path_join(dir, base, "");
    char *gz = path_join(dir, base, ".gz");
    if (raw == NULL || gz == NULL) {
        free(raw);
        free(gz);
        return dae_fail(err, errlen, DAE_ERR_NOMEM, "data set '%s': out of memory", name);
    }
    dae_status st = DAE_OK;
    if (is_regular_file(raw)) {
        *found = raw;
        raw = NULL;
    } else if (is_regular_file(gz)) {
        *found = gz;
        gz = NULL;
    } else {
        st = dae_fail(err, errlen, DAE_ERR_IO, "data set '%s': missing %s: looked for %s and %s",
                      name, base, raw, gz);
    }
    free(raw);
    free(gz);
    return st;
}

/* Checks data_dir and the data set name (no path tricks) and sets *dir
 * to the data set's directory (malloc'd), or fails. */
static dae_status dataset_dir(const char *data_dir, const char *name, char **dir, char *err, size_t errlen) {
    *dir = NULL;
    if (data_dir == NULL || data_dir[0] == '\0')
        return dae_fail(err, errlen, DAE_ERR_INVALID, "no data directory given");
    if (name == NULL || !dae_name_valid(name))
        return dae_fail(err, errlen, DAE_ERR_INVALID,
                        "bad data set name '%s': use 1 to 64 of A-Z a-z 0-9 . _ - (not starting with '.')",
                        name ? name : "(null)");
    *dir = path_join(data_dir, name, "");
    if (*dir == NULL) return dae_fail(err, errlen, DAE_ERR_NOMEM, "data set '%s': out of memory", name);
    return DAE_OK;
}

dae_status dae_dataset_info_read(const char *data_dir, const char *name, dae_dataset_info *out, char *err,
                                 size_t errlen) {
    memset(out, 0, sizeof *out);
    char *dir;
    dae_status st = dataset_dir(data_dir, name, &dir, err, errlen);
    if (st != DAE_OK) return st;
    static const char *const bases[2] = {"train-images-idx3-ubyte", "t10k-images-idx3-ubyte"};
    idx_header h[2] = {{0}, {0}};
    for (int i = 0; i < 2 && st == DAE_OK; i++) {
        char *path = NULL;
        st = find_idx_file(dir, name, bases[i], &path, err, errlen);
        if (st == DAE_OK) st = peek_any(path, IDX_IMAGES, &h[i], NULL, err, errlen);
        free(path);
    }
    free(dir);
    if (st != DAE_OK) return st;
    out->train_count = h[0].count;
    out->test_count = h[1].count;
    out->rows = h[0].rows;
    out->cols = h[0].cols;
    /* Pixels and one label byte per image, for both splits. */
    out->bytes = h[0].payload + h[1].payload + (size_t)h[0].count + (size_t)h[1].count;
    return DAE_OK;
}

dae_status dae_dataset_load(const char *data_dir, const char *name, dae_dataset *out, char *err, size_t errlen) {
    if (out == NULL) return dae_fail(err, errlen, DAE_ERR_INVALID, "dae_dataset_load: no output given");
    memset(out, 0, sizeof *out);
    char *dir;
    dae_status dir_st = dataset_dir(data_dir, name, &dir, err, errlen);
    if (dir_st != DAE_OK) return dir_st;
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        dae_status st = dae_fail(err, errlen, DAE_ERR_IO, "data set '%s' not found: no directory %s",
                                 name, dir);
        free(dir);
        return st;
    }

    static const char *const bases[4] = {
        "train-images-idx3-ubyte", "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
    };
    char *paths[4] = {NULL, NULL, NULL, NULL};
    dae_status st = DAE_OK;
    for (int i = 0; i < 4 && st == DAE_OK; i++) st = find_idx_file(dir, name, bases[i], &paths[i], err, errlen);
    if (st == DAE_OK) st = dae_idx_load_images(paths[0], &out->train_images, err, errlen);
    if (st == DAE_OK) st = dae_idx_load_labels(paths[1], &out->train_labels, err, errlen);
    if (st == DAE_OK) st = dae_idx_load_images(paths[2], &out->test_images, err, errlen);
    if (st == DAE_OK) st = dae_idx_load_labels(paths[3], &out->test_labels, err, errlen);
    if (st == DAE_OK && out->train_images.count != out->train_labels.count)
        st = dae_fail(err, errlen, DAE_ERR_FORMAT, "data set '%s': %s has %d images but %s has %d labels",
                      name, paths[0], out->train_images.count, paths[1], out->train_labels.count);
    if (st == DAE_OK && out->test_images.count != out->test_labels.count)
        st = dae_fail(err, errlen, DAE_ERR_FORMAT, "data set '%s': %s has %d images but %s has %d labels",
                      name, paths[2], out->test_images.count, paths[3], out->test_labels.count);
    if (st == DAE_OK && (out->train_images.rows != out->test_images.rows ||
                         out->train_images.cols != out->test_images.cols))
        st = dae_fail(err, errlen, DAE_ERR_FORMAT, "data set '%s': train images are %dx%d but test images are %dx%d",
                      name, out->train_images.rows, out->train_images.cols,
                      out->test_images.rows, out->test_images.cols);
    for (int i = 0; i < 4; i++) free(paths[i]);
    free(dir);
    if (st != DAE_OK) dae_dataset_free(out);
    return st;
}
