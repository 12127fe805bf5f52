/* dataset_import.c - data sets from archives and directories of images or
 * IDX files, and saving a data set into a data directory. What is
 * accepted and why is in dataset_import.h.
 *
 * One pass over the members through libarchive (its disk reader for a
 * directory, so both sources go through the same checks): each image is
 * checked, decoded, turned gray and cut into patches at once, so only
 * one image is ever held decoded; each patch remembers its image. The
 * split and the order of the examples are decided at the end, from the
 * sorted member paths, so they do not depend on the archive's order. */
#include "dataset_import.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>
#include <zlib.h>

#include "fileio.h"
#include "idx.h"
#include "image.h"
#include "tile.h"

/* Bytes read from a member at a time. */
enum { CHUNK = 64 * 1024 };

static const char *const IDX_NAMES[4] = {
    "train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
};

static const char *const IMAGE_EXTENSIONS[] = {"png", "jpg", "jpeg", "gif", "bmp", "pnm", "pgm", "ppm", "tga"};

void dae_import_limits_default(dae_import_limits *lim) {
    *lim = (dae_import_limits){
        .max_archive_bytes = (size_t)256 << 20,
        .max_members = 20000,
        .max_image_pixels = (size_t)16 << 20,
        .max_total_pixels = (size_t)256 << 20,
        .max_member_bytes = (size_t)64 << 20,
        .max_total_bytes = (size_t)1 << 30,
        .min_images = 16,
        .test_fraction = 0.1,
    };
}

/* ------------------------------------------------------------------------
 * The state of one import
 * ------------------------------------------------------------------------ */

/* An image used: its member path and its patches, [first, first + count). */
typedef struct {
    char *path;
    size_t first, count;
} source_image;

typedef struct {
    const dae_import_limits *lim;
    int rows, cols;
    const char *label;      /* the archive, for messages */
    dae_model tile_model;   /* only its input size: what dae_tile_plan_init reads */
    int members;
    size_t total_bytes;     /* uncompressed bytes read or skipped so far */
    size_t source_pixels;   /* of the images' headers */
    /* Images */
    source_image *images;
    int n_images, cap_images;
    uint8_t *patches;       /* n_patches * rows * cols bytes */
    size_t n_patches, cap_patches;
    int skipped_small, skipped_other;
    /* IDX files, indexed as IDX_NAMES; NULL until found. */
    uint8_t *idx[4];
    size_t idx_len[4];
    char *idx_member[4];
    /* The member being read, and its bytes. */
    uint8_t *buf;
    size_t cap;
} importer;

static void importer_free(importer *im) {
    for (int i = 0; i < im->n_images; i++) free(im->images[i].path);
    free(im->images);
    free(im->patches);
    for (int i = 0; i < 4; i++) free(im->idx[i]), free(im->idx_member[i]);
    free(im->buf);
}

/* ------------------------------------------------------------------------
 * Member names
 * ------------------------------------------------------------------------ */

/* Checks a member path: not absolute, no ".." component (with '/' or '\'
 * as separator, as a zip made on Windows may have). */
static dae_status check_path(const importer *im, const char *path, char *err, size_t errlen) {
    if (path[0] == '/' || path[0] == '\\')
        return dae_fail(err, errlen, DAE_ERR_INVALID, "%s: member %s: absolute paths are not allowed", im->label,
                        path);
    for (const char *p = path; *p != '\0';) {
        size_t n = strcspn(p, "/\\");
        if (n == 2 && p[0] == '.' && p[1] == '.')
            return dae_fail(err, errlen, DAE_ERR_INVALID, "%s: member %s: '..' in a path is not allowed", im->label,
                            path);
        p += n;
        if (*p != '\0') p++;
    }
    return DAE_OK;
}

/* 1 when a component of path starts with '.' (not "." itself) or is
 * __MACOSX. */
static int hidden_path(const char *path) {
    for (const char *p = path; *p != '\0';) {
        size_t n = strcspn(p, "/");
        if ((n > 1 && p[0] == '.') || (n == 8 && strncmp(p, "__MACOSX", 8) == 0)) return 1;
        p += n;
        if (*p != '\0') p++;
    }
    return 0;
}

/* The IDX file (index into IDX_NAMES) path's base name is, raw or .gz,
 * or -1. */
static int idx_index(const char *path) {
    const char *base = strrchr(path, '/');
    base = base != NULL ? base + 1 : path;
    for (int i = 0; i < 4; i++) {
        size_t n = strlen(IDX_NAMES[i]);
        if (strncmp(base, IDX_NAMES[i], n) == 0 && (base[n] == '\0' || strcmp(base + n, ".gz") == 0)) return i;
    }
    return -1;
}

static int image_name(const char *path) {
    const char *dot = strrchr(path, '.');
    if (dot == NULL || strchr(dot, '/') != NULL) return 0;
    for (size_t i = 0; i < sizeof IMAGE_EXTENSIONS / sizeof IMAGE_EXTENSIONS[0]; i++)
        if (strcasecmp(dot + 1, IMAGE_EXTENSIONS[i]) == 0) return 1;
    return 0;
}

/* ------------------------------------------------------------------------
 * Reading members within the limits
 * ------------------------------------------------------------------------ */

static dae_status over_member(const importer *im, const char *path, char *err, size_t errlen) {
    return dae_fail(err, errlen, DAE_ERR_TOO_LARGE, "%s: member %s: over the limit of %zu bytes uncompressed",
                    im->label, path, im->lim->max_member_bytes);
}

static dae_status over_total(const importer *im, const char *path, char *err, size_t errlen) {
    return dae_fail(err, errlen, DAE_ERR_TOO_LARGE,
                    "%s: member %s: the members come to over the limit of %zu bytes uncompressed", im->label, path,
                    im->lim->max_total_bytes);
}

/* Grows im->buf to at least need bytes, but never past max_member_bytes
 * + 1 (one byte over tells "over the limit" apart). */
static dae_status grow(importer *im, size_t need, char *err, size_t errlen) {
    size_t limit = im->lim->max_member_bytes + 1;
    if (need > limit) need = limit;
    if (need <= im->cap) return DAE_OK;
    size_t ncap = im->cap == 0 ? CHUNK : im->cap;
    while (ncap < need) ncap *= 2;
    if (ncap > limit) ncap = limit;
    uint8_t *nb = realloc(im->buf, ncap);
    if (nb == NULL) return dae_fail(err, errlen, DAE_ERR_NOMEM, "%s: out of memory for %zu bytes", im->label, ncap);
    im->buf = nb;
    im->cap = ncap;
    return DAE_OK;
}

/* Reads the current member's data into im->buf (*len bytes) in chunks,
 * stopping as soon as it passes the per-member or the total limit. With
 * keep 0 the data is only counted: skipped when its size is declared,
 * else read and dropped. */
static dae_status read_member(importer *im, struct archive *a, struct archive_entry *e, const char *path, int keep,
                              size_t *len, char *err, size_t errlen) {
    *len = 0;
    if (archive_entry_size_is_set(e)) {
        la_int64_t size = archive_entry_size(e);
        if (size < 0 || (unsigned long long)size > im->lim->max_member_bytes) return over_member(im, path, err, errlen);
        if (im->total_bytes + (size_t)size > im->lim->max_total_bytes) return over_total(im, path, err, errlen);
        if (!keep) {
            im->total_bytes += (size_t)size;
            if (archive_read_data_skip(a) != ARCHIVE_OK)
                return dae_fail(err, errlen, DAE_ERR_FORMAT, "%s: member %s: %s", im->label, path,
                                archive_error_string(a));
            return DAE_OK;
        }
    }
    size_t n_total = 0;
    for (;;) {
        size_t at = keep ? n_total : 0;
        dae_status st = grow(im, at + CHUNK, err, errlen); /* at <= the limit: room for 1 byte or more */
        if (st != DAE_OK) return st;
        la_ssize_t n = archive_read_data(a, im->buf + at, im->cap - at);
        if (n < 0)
            return dae_fail(err, errlen, DAE_ERR_FORMAT, "%s: member %s: truncated or corrupt: %s", im->label, path,
                            archive_error_string(a));
        if (n == 0) break;
        n_total += (size_t)n;
        if (n_total > im->lim->max_member_bytes) return over_member(im, path, err, errlen);
        if (im->total_bytes + n_total > im->lim->max_total_bytes) return over_total(im, path, err, errlen);
    }
    im->total_bytes += n_total;
    *len = keep ? n_total : 0;
    return DAE_OK;
}

/* Inflates the gzip data in im->buf (len bytes) into a new buffer *out
 * (*out_len bytes), within the same limits as a member's bytes. */
static dae_status gunzip(importer *im, size_t len, const char *path, uint8_t **out, size_t *out_len, char *err,
                         size_t errlen) {
    *out = NULL;
    *out_len = 0;
    if (len > UINT_MAX) return over_member(im, path, err, errlen); /* what one inflate call takes */
    z_stream z = {0};
    if (inflateInit2(&z, 15 + 16) != Z_OK)
        return dae_fail(err, errlen, DAE_ERR_NOMEM, "%s: member %s: cannot start zlib", im->label, path);
    size_t cap = 0, got = 0, limit = im->lim->max_member_bytes;
    uint8_t *o = NULL;
    dae_status st = DAE_OK;
    z.next_in = im->buf;
    z.avail_in = (uInt)len;
    int zr = Z_OK;
    while (st == DAE_OK && zr != Z_STREAM_END) {
        if (got == cap) {
            size_t ncap = cap == 0 ? CHUNK : cap * 2;
            if (ncap > limit + 1) ncap = limit + 1;
            uint8_t *nb = ncap > cap ? realloc(o, ncap) : NULL;
            if (nb == NULL) {
                st = ncap > cap ? dae_fail(err, errlen, DAE_ERR_NOMEM, "%s: out of memory", im->label)
                                : over_member(im, path, err, errlen);
                break;
            }
            o = nb, cap = ncap;
        }
        z.next_out = o + got;
        z.avail_out = (uInt)(cap - got);
        zr = inflate(&z, Z_NO_FLUSH);
        got = cap - z.avail_out;
        if (zr == Z_BUF_ERROR && z.avail_in == 0 && z.avail_out > 0) zr = Z_DATA_ERROR; /* input ended early */
        if (zr != Z_OK && zr != Z_STREAM_END && zr != Z_BUF_ERROR)
            st = dae_fail(err, errlen, DAE_ERR_FORMAT, "%s: member %s: corrupt or truncated gzip data: %s", im->label,
                          path, z.msg != NULL ? z.msg : "unknown error");
        else if (got > limit)
            st = over_member(im, path, err, errlen);
        else if (im->total_bytes + got > im->lim->max_total_bytes)
            st = over_total(im, path, err, errlen);
    }
    inflateEnd(&z);
    if (st != DAE_OK) {
        free(o);
        return st;
    }
    im->total_bytes += got;
    *out = o;
    *out_len = got;
    return DAE_OK;
}

/* ------------------------------------------------------------------------
 * Members
 * ------------------------------------------------------------------------ */

/* Gray value of each pixel of img into gray (width * height bytes):
 * gray kept, alpha dropped, R G B as BT.601 luma rounded to nearest. */
static void to_gray(const dae_image *img, uint8_t *gray) {
    size_t n = (size_t)img->width * (size_t)img->height, ch = (size_t)img->channels;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *p = img->pixels + i * ch;
        gray[i] = ch < 3 ? p[0] : (uint8_t)((299u * p[0] + 587u * p[1] + 114u * p[2] + 500u) / 1000u);
    }
}

/* Checks, decodes and cuts into patches the image member path, whose
 * len bytes are in im->buf. */
static dae_status add_image(importer *im, const char *path, size_t len, char *err, size_t errlen) {
    const dae_import_limits *lim = im->lim;
    int w, h;
    char why[DAE_ERR_LEN] = "";
    dae_status st = dae_image_probe(im->buf, len, &w, &h, why, sizeof why);
    if (st != DAE_OK) return dae_fail(err, errlen, DAE_ERR_FORMAT, "%s: member %s: %s", im->label, path, why);
    size_t pixels = (size_t)w * (size_t)h;
    if (pixels > lim->max_image_pixels)
        return dae_fail(err, errlen, DAE_ERR_TOO_LARGE, "%s: member %s: image is %dx%d, over the limit of %zu pixels",
                        im->label, path, w, h, lim->max_image_pixels);
    if (im->source_pixels + pixels > lim->max_total_pixels)
        return dae_fail(err, errlen, DAE_ERR_TOO_LARGE,
                        "%s: member %s: the images come to over the limit of %zu pixels", im->label, path,
                        lim->max_total_pixels);
    im->source_pixels += pixels;
    if (w < im->cols || h < im->rows) {
        im->skipped_small++;
        return DAE_OK;
    }

    dae_tile_plan plan;
    st = dae_tile_plan_init(&plan, &im->tile_model, w, h, err, errlen);
    if (st != DAE_OK) return st;
    size_t patch = (size_t)im->rows * (size_t)im->cols, count = (size_t)plan.count;
    if ((im->n_patches + count) * patch > lim->max_total_pixels) {
        dae_tile_plan_free(&plan);
        return dae_fail(err, errlen, DAE_ERR_TOO_LARGE,
                        "%s: member %s: the %dx%d patches come to over the limit of %zu pixels", im->label, path,
                        im->rows, im->cols, lim->max_total_pixels);
    }
    dae_image img = {0};
    uint8_t *gray = NULL;
    st = dae_image_decode(im->buf, len, lim->max_image_pixels, &img, why, sizeof why);
    if (st != DAE_OK) st = dae_fail(err, errlen, st == DAE_ERR_NOMEM ? st : DAE_ERR_FORMAT, "%s: member %s: %s",
                                    im->label, path, why);
    if (st == DAE_OK && im->n_images == im->cap_images) {
        int ncap = im->cap_images == 0 ? 256 : im->cap_images * 2;
        source_image *ni = realloc(im->images, sizeof *ni * (size_t)ncap);
        if (ni == NULL) st = dae_fail(err, errlen, DAE_ERR_NOMEM, "%s: out of memory", im->label);
        else im->images = ni, im->cap_images = ncap;
    }
    if (st == DAE_OK && im->n_patches + count > im->cap_patches) {
        size_t ncap = im->cap_patches == 0 ? 1024 : im->cap_patches;
        while (ncap < im->n_patches + count) ncap *= 2;
        uint8_t *np = realloc(im->patches, ncap * patch);
        if (np == NULL) st = dae_fail(err, errlen, DAE_ERR_NOMEM, "%s: out of memory for the patches", im->label);
        else im->patches = np, im->cap_patches = ncap;
    }
    if (st == DAE_OK && (gray = malloc(pixels)) == NULL)
        st = dae_fail(err, errlen, DAE_ERR_NOMEM, "%s: out of memory", im->label);
    source_image *si = st == DAE_OK ? &im->images[im->n_images] : NULL;
    if (st == DAE_OK && (si->path = strdup(path)) == NULL)
        st = dae_fail(err, errlen, DAE_ERR_NOMEM, "%s: out of memory", im->label);
    if (st == DAE_OK) {
        to_gray(&img, gray);
        for (int i = 0; i < plan.count; i++) {
            int x, y;
            dae_tile_origin(&plan, i, &x, &y); /* within the image: it is at least a patch */
            uint8_t *dst = im->patches + (im->n_patches + (size_t)i) * patch;
            for (int r = 0; r < im->rows; r++)
                memcpy(dst + (size_t)r * (size_t)im->cols, gray + (size_t)(y + r) * (size_t)w + (size_t)x,
                       (size_t)im->cols);
        }
        si->first = im->n_patches;
        si->count = count;
        im->n_patches += count;
        im->n_images++;
    }
    free(gray);
    dae_image_free(&img);
    dae_tile_plan_free(&plan);
    return st;
}

/* Keeps IDX member path (len bytes in im->buf), inflated when gzip. */
static dae_status add_idx(importer *im, int which, const char *path, size_t len, char *err, size_t errlen) {
    if (im->idx[which] != NULL)
        return dae_fail(err, errlen, DAE_ERR_INVALID, "%s: member %s: a second %s (the first is %s)", im->label, path,
                        IDX_NAMES[which], im->idx_member[which]);
    uint8_t *data;
    size_t n;
    if (len >= 2 && im->buf[0] == 0x1f && im->buf[1] == 0x8b) {
        dae_status st = gunzip(im, len, path, &data, &n, err, errlen);
        if (st != DAE_OK) return st;
    } else {
        data = malloc(len > 0 ? len : 1);
        if (data == NULL) return dae_fail(err, errlen, DAE_ERR_NOMEM, "%s: out of memory", im->label);
        if (len > 0) memcpy(data, im->buf, len);
        n = len;
    }
    im->idx_member[which] = strdup(path);
    if (im->idx_member[which] == NULL) {
        free(data);
        return dae_fail(err, errlen, DAE_ERR_NOMEM, "%s: out of memory", im->label);
    }
    im->idx[which] = data;
    im->idx_len[which] = n;
    return DAE_OK;
}

/* Reads every member of a. root_len: the length of the directory path
 * (and its '/') that a disk reader puts before each member's path, 0 for
 * an archive. */
static dae_status read_all(importer *im, struct archive *a, size_t root_len, char *err, size_t errlen) {
    struct archive_entry *e;
    dae_status st = DAE_OK;
    for (;;) {
        int r = archive_read_next_header(a, &e);
        if (r == ARCHIVE_EOF) break;
        if (r != ARCHIVE_OK && r != ARCHIVE_WARN) {
            if (im->members == 0)
                return dae_fail(err, errlen, DAE_ERR_FORMAT, "%s: not a tar or zip archive: %s", im->label,
                                archive_error_string(a));
            return dae_fail(err, errlen, DAE_ERR_FORMAT, "%s: truncated or corrupt after %d members: %s", im->label,
                            im->members, archive_error_string(a));
        }
        const char *full = archive_entry_pathname(e);
        if (full == NULL) full = "";
        if (root_len > 0) { /* a directory: the root itself, then ROOT/... */
            if (strlen(full) < root_len) {
                if (archive_entry_filetype(e) == AE_IFDIR) archive_read_disk_descend(a);
                continue;
            }
            full += root_len;
        }
        if (++im->members > im->lim->max_members)
            return dae_fail(err, errlen, DAE_ERR_TOO_LARGE, "%s: more than %d members (the limit)", im->label,
                            im->lim->max_members);
        st = check_path(im, full, err, errlen);
        if (st != DAE_OK) return st;
        const char *path = full;
        while (path[0] == '.' && path[1] == '/') path += 2; /* "./a.png" is "a.png" */
        mode_t type = archive_entry_filetype(e);
        if (archive_entry_hardlink(e) != NULL)
            return dae_fail(err, errlen, DAE_ERR_INVALID, "%s: member %s: hard links are not allowed", im->label,
                            full);
        if (type == AE_IFDIR) {
            if (root_len > 0 && !hidden_path(path)) archive_read_disk_descend(a);
            continue;
        }
        if (type != AE_IFREG)
            return dae_fail(err, errlen, DAE_ERR_INVALID, "%s: member %s: %s are not allowed", im->label, full,
                            type == AE_IFLNK ? "symbolic links" : type == AE_IFIFO ? "FIFOs"
                            : type == AE_IFSOCK ? "sockets" : "device files");
        int which = hidden_path(path) ? -1 : idx_index(path);
        int image = which < 0 && !hidden_path(path) && image_name(path);
        size_t len;
        st = read_member(im, a, e, full, which >= 0 || image, &len, err, errlen);
        if (st != DAE_OK) return st;
        if (which >= 0) st = add_idx(im, which, path, len, err, errlen);
        else if (image) st = add_image(im, path, len, err, errlen);
        else im->skipped_other++;
        if (st != DAE_OK) return st;
    }
    return DAE_OK;
}

/* ------------------------------------------------------------------------
 * Building the data set
 * ------------------------------------------------------------------------ */

static int by_path(const void *a, const void *b) {
    return strcmp(((const source_image *)a)->path, ((const source_image *)b)->path);
}

/* The length of the one top folder that holds every image ("top/"), or 0. */
static size_t top_folder(const importer *im) {
    const char *first = im->images[0].path, *slash = strchr(first, '/');
    if (slash == NULL) return 0;
    size_t n = (size_t)(slash - first) + 1;
    for (int i = 1; i < im->n_images; i++)
        if (strncmp(im->images[i].path, first, n) != 0) return 0;
    return n;
}

static dae_status alloc_split(dae_idx_images *im, dae_idx_labels *lb, int count, int rows, int cols) {
    size_t n = (size_t)count * (size_t)rows * (size_t)cols;
    im->pixels = malloc(n > 0 ? n : 1);
    lb->labels = calloc(count > 0 ? (size_t)count : 1, 1);
    im->count = lb->count = count;
    im->rows = rows, im->cols = cols;
    return im->pixels != NULL && lb->labels != NULL ? DAE_OK : DAE_ERR_NOMEM;
}

/* The data set from the images found: sorted by path, split by the test/
 * folder or the every-n-th rule. */
static dae_status build_images(importer *im, dae_dataset *out, dae_import_report *rep, char *err, size_t errlen) {
    const dae_import_limits *lim = im->lim;
    if (im->n_images < lim->min_images)
        return dae_fail(err, errlen, DAE_ERR_INVALID,
                        "%s: %d usable image%s of at least %dx%d, need %d (%d smaller image%s and %d other file%s "
                        "skipped)",
                        im->label, im->n_images, im->n_images == 1 ? "" : "s", im->rows, im->cols, lim->min_images,
                        im->skipped_small, im->skipped_small == 1 ? "" : "s", im->skipped_other,
                        im->skipped_other == 1 ? "" : "s");
    qsort(im->images, (size_t)im->n_images, sizeof *im->images, by_path);
    size_t top = top_folder(im);
    char *is_test = calloc((size_t)im->n_images, 1);
    if (is_test == NULL) return dae_fail(err, errlen, DAE_ERR_NOMEM, "%s: out of memory", im->label);
    int folder = 0;
    for (int i = 0; i < im->n_images; i++) {
        const char *p = im->images[i].path + top;
        is_test[i] = strncmp(p, "test/", 5) == 0;
        folder |= is_test[i];
    }
    int every = 0;
    if (folder) {
        snprintf(rep->split, sizeof rep->split, "the images under %.*stest/", (int)top, im->images[0].path);
    } else {
        every = (int)lround(1.0 / lim->test_fraction);
        for (int i = 0; i < im->n_images; i++) is_test[i] = i % every == every - 1;
        snprintf(rep->split, sizeof rep->split,
                 "every %dth image by member path (sorted index i %% %d == %d), a fraction of %g", every, every,
                 every - 1, lim->test_fraction);
    }
    size_t n_split[2] = {0, 0};
    for (int i = 0; i < im->n_images; i++) n_split[(int)is_test[i]] += im->images[i].count;
    dae_status st = DAE_OK;
    if (n_split[0] == 0 || n_split[1] == 0)
        st = dae_fail(err, errlen, DAE_ERR_INVALID, "%s: no %s images: the test split is %s", im->label,
                      n_split[0] == 0 ? "training" : "test", rep->split);
    if (st == DAE_OK && (n_split[0] > 0x7fffffff || n_split[1] > 0x7fffffff))
        st = dae_fail(err, errlen, DAE_ERR_TOO_LARGE, "%s: too many patches", im->label);
    if (st == DAE_OK &&
        (alloc_split(&out->train_images, &out->train_labels, (int)n_split[0], im->rows, im->cols) != DAE_OK ||
         alloc_split(&out->test_images, &out->test_labels, (int)n_split[1], im->rows, im->cols) != DAE_OK))
        st = dae_fail(err, errlen, DAE_ERR_NOMEM, "%s: out of memory for the data set", im->label);
    if (st == DAE_OK) {
        size_t patch = (size_t)im->rows * (size_t)im->cols, at[2] = {0, 0};
        uint8_t *dst[2] = {out->train_images.pixels, out->test_images.pixels};
        for (int i = 0; i < im->n_images; i++) {
            const source_image *s = &im->images[i];
            int t = is_test[i];
            memcpy(dst[t] + at[t] * patch, im->patches + s->first * patch, s->count * patch);
            at[t] += s->count;
        }
        rep->source = "images";
        rep->images = im->n_images;
        rep->test_every = every;
    }
    free(is_test);
    return st;
}

/* The data set from the four IDX files found. */
static dae_status build_idx(importer *im, dae_dataset *out, dae_import_report *rep, char *err, size_t errlen) {
    for (int i = 0; i < 4; i++)
        if (im->idx[i] == NULL)
            return dae_fail(err, errlen, DAE_ERR_INVALID, "%s: has IDX files but no %s (raw or .gz)", im->label,
                            IDX_NAMES[i]);
    dae_status st = DAE_OK;
    char why[DAE_ERR_LEN] = "";
    int at = 0;
    for (; at < 4 && st == DAE_OK; at++) {
        if (at == 0) st = dae_idx_parse_images(im->idx[0], im->idx_len[0], &out->train_images, why, sizeof why);
        if (at == 1) st = dae_idx_parse_labels(im->idx[1], im->idx_len[1], &out->train_labels, why, sizeof why);
        if (at == 2) st = dae_idx_parse_images(im->idx[2], im->idx_len[2], &out->test_images, why, sizeof why);
        if (at == 3) st = dae_idx_parse_labels(im->idx[3], im->idx_len[3], &out->test_labels, why, sizeof why);
    }
    if (st != DAE_OK)
        return dae_fail(err, errlen, st, "%s: member %s: %s", im->label, im->idx_member[at - 1], why);
    const dae_idx_images *tr = &out->train_images, *te = &out->test_images;
    for (int s = 0; s < 2; s++) {
        const dae_idx_images *ims = s == 0 ? tr : te;
        int labels = s == 0 ? out->train_labels.count : out->test_labels.count;
        const char *member = im->idx_member[2 * s];
        if (ims->count != labels)
            return dae_fail(err, errlen, DAE_ERR_FORMAT, "%s: member %s has %d images but %s has %d labels", im->label,
                            member, ims->count, im->idx_member[2 * s + 1], labels);
        if (ims->rows != im->rows || ims->cols != im->cols)
            return dae_fail(err, errlen, DAE_ERR_INVALID, "%s: member %s has %dx%d images, the model takes %dx%d",
                            im->label, member, ims->rows, ims->cols, im->rows, im->cols);
    }
    size_t pixels = ((size_t)tr->count + (size_t)te->count) * (size_t)im->rows * (size_t)im->cols;
    if (pixels > im->lim->max_total_pixels)
        return dae_fail(err, errlen, DAE_ERR_TOO_LARGE, "%s: the IDX images come to %zu pixels, over the limit of %zu",
                        im->label, pixels, im->lim->max_total_pixels);
    if (tr->count + te->count < im->lim->min_images || tr->count == 0 || te->count == 0)
        return dae_fail(err, errlen, DAE_ERR_INVALID,
                        "%s: %d training and %d test images, need at least %d in all and one in each", im->label,
                        tr->count, te->count, im->lim->min_images);
    rep->source = "idx";
    rep->images = tr->count + te->count;
    snprintf(rep->split, sizeof rep->split, "the split of the IDX files");
    return DAE_OK;
}

/* ------------------------------------------------------------------------
 * Entry points
 * ------------------------------------------------------------------------ */

/* Checks the arguments and starts *im. */
static dae_status importer_init(importer *im, const dae_import_limits *lim, int rows, int cols, const char *label,
                                dae_dataset *out, dae_import_report *rep, char *err, size_t errlen) {
    memset(im, 0, sizeof *im);
    memset(rep, 0, sizeof *rep);
    if (out != NULL) memset(out, 0, sizeof *out);
    if (out == NULL || label == NULL)
        return dae_fail(err, errlen, DAE_ERR_INVALID, "data set import: no source or no output given");
    if (rows < 1 || cols < 1 || rows > DAE_IDX_MAX_SIDE || cols > DAE_IDX_MAX_SIDE)
        return dae_fail(err, errlen, DAE_ERR_INVALID, "%s: image size %dx%d is outside 1..%d", label, rows, cols,
                        DAE_IDX_MAX_SIDE);
    if (!(lim->test_fraction >= 0.01 && lim->test_fraction <= 0.5) || lim->max_members < 1 || lim->min_images < 2)
        return dae_fail(err, errlen, DAE_ERR_INVALID,
                        "%s: bad import limits: the test fraction must be 0.01 to 0.5, members and images above 1",
                        label);
    im->lim = lim;
    im->rows = rows, im->cols = cols;
    im->label = label;
    im->tile_model.in_c = 1;
    im->tile_model.in_h = rows;
    im->tile_model.in_w = cols;
    return DAE_OK;
}

/* Reads a (opened, or failed to open with open_rc) and builds *out. */
static dae_status run(importer *im, struct archive *a, int open_rc, size_t root_len, dae_dataset *out,
                      dae_import_report *rep, char *err, size_t errlen) {
    dae_status st = DAE_OK;
    /* EILSEQ is libarchive's ARCHIVE_ERRNO_FILE_FORMAT on Linux, which
     * its public header does not define. */
    if (open_rc != ARCHIVE_OK && archive_errno(a) == EILSEQ)
        st = dae_fail(err, errlen, DAE_ERR_FORMAT, "%s: not a tar or zip archive: %s", im->label,
                      archive_error_string(a));
    else if (open_rc != ARCHIVE_OK)
        st = dae_fail(err, errlen, DAE_ERR_IO, "%s: cannot read: %s", im->label, archive_error_string(a));
    if (st == DAE_OK) st = read_all(im, a, root_len, err, errlen);
    int any_idx = 0;
    for (int i = 0; i < 4; i++) any_idx |= im->idx[i] != NULL;
    if (st == DAE_OK && any_idx && im->n_images > 0)
        st = dae_fail(err, errlen, DAE_ERR_INVALID, "%s: holds both IDX files (%s) and images (%s): give one kind",
                      im->label, im->idx_member[0] ? im->idx_member[0] : "...", im->images[0].path);
    if (st == DAE_OK) st = any_idx ? build_idx(im, out, rep, err, errlen) : build_images(im, out, rep, err, errlen);
    if (st == DAE_OK) {
        rep->members = im->members;
        rep->train_count = out->train_images.count;
        rep->test_count = out->test_images.count;
        rep->patches = rep->train_count + rep->test_count;
        rep->rows = im->rows, rep->cols = im->cols;
        rep->skipped_small = im->skipped_small;
        rep->skipped_other = im->skipped_other;
    } else {
        dae_dataset_free(out);
        memset(rep, 0, sizeof *rep);
    }
    importer_free(im);
    return st;
}

/* An archive reader for tar and zip under any compression. */
static struct archive *archive_reader(void) {
    struct archive *a = archive_read_new();
    if (a == NULL) return NULL;
    archive_read_support_filter_all(a);
    archive_read_support_format_tar(a); /* ustar, pax and GNU tar */
    archive_read_support_format_zip(a);
    return a;
}

/* The import both entry points make: from path (a directory or an archive
 * file) or, when path is NULL, from the archive of len bytes at data;
 * label names the source in messages. The source's size against the
 * limit, then every member through run(). */
static dae_status import_from(const char *path, const void *data, size_t len, const char *label,
                              const dae_import_limits *lim, int rows, int cols, dae_dataset *out,
                              dae_import_report *report, char *err, size_t errlen) {
    dae_import_limits def;
    dae_import_report rep_local;
    if (lim == NULL) dae_import_limits_default(&def), lim = &def;
    dae_import_report *rep = report != NULL ? report : &rep_local;
    importer *im = malloc(sizeof *im);
    if (im == NULL) return dae_fail(err, errlen, DAE_ERR_NOMEM, "out of memory");
    dae_status st = importer_init(im, lim, rows, cols, label, out, rep, err, errlen);
    struct stat sb = {0};
    unsigned long long bytes = len;
    if (st == DAE_OK && path != NULL) {
        if (stat(path, &sb) != 0)
            st = dae_fail(err, errlen, DAE_ERR_IO, "%s: %s", path, strerror(errno));
        else if (!S_ISDIR(sb.st_mode) && !S_ISREG(sb.st_mode))
            st = dae_fail(err, errlen, DAE_ERR_INVALID, "%s: not an archive file or a directory", path);
        bytes = S_ISREG(sb.st_mode) ? (unsigned long long)sb.st_size : 0;
    } else if (st == DAE_OK && data == NULL) {
        st = dae_fail(err, errlen, DAE_ERR_INVALID, "%s: no data given", label);
    }
    if (st == DAE_OK && bytes > lim->max_archive_bytes)
        st = dae_fail(err, errlen, DAE_ERR_TOO_LARGE, "%s: archive is %llu bytes, over the limit of %zu", label, bytes,
                      lim->max_archive_bytes);
    int is_dir = path != NULL && S_ISDIR(sb.st_mode);
    struct archive *a = st != DAE_OK ? NULL : is_dir ? archive_read_disk_new() : archive_reader();
    if (st == DAE_OK && a == NULL) st = dae_fail(err, errlen, DAE_ERR_NOMEM, "%s: out of memory", label);
    if (st == DAE_OK) {
        int rc;
        size_t root_len = 0;
        if (is_dir) {
            /* Links are reported as links (and refused), not followed. */
            archive_read_disk_set_symlink_physical(a);
            archive_read_disk_set_behavior(a, ARCHIVE_READDISK_NO_XATTR | ARCHIVE_READDISK_NO_ACL |
                                                  ARCHIVE_READDISK_NO_FFLAGS | ARCHIVE_READDISK_NO_TRAVERSE_MOUNTS);
            rc = archive_read_disk_open(a, path);
            root_len = strlen(path);
            while (root_len > 1 && path[root_len - 1] == '/') root_len--;
            root_len++; /* and the '/' after it */
        } else {
            rc = path != NULL ? archive_read_open_filename(a, path, CHUNK) : archive_read_open_memory(a, data, len);
        }
        st = run(im, a, rc, root_len, out, rep, err, errlen);
    } else {
        importer_free(im);
    }
    if (a != NULL) archive_read_free(a);
    free(im);
    return st;
}

dae_status dae_dataset_import(const char *path, const dae_import_limits *lim, int rows, int cols,
                              dae_dataset *out, dae_import_report *report, char *err, size_t errlen) {
    return import_from(path, NULL, 0, path, lim, rows, cols, out, report, err, errlen);
}

dae_status dae_dataset_import_memory(const void *data, size_t len, const char *label, const dae_import_limits *lim,
                                     int rows, int cols, dae_dataset *out, dae_import_report *report, char *err,
                                     size_t errlen) {
    return import_from(NULL, data, len, label, lim, rows, cols, out, report, err, errlen);
}

int dae_import_is_path(const char *s, const char *data_dir) {
    if (strchr(s, '/') != NULL) return 1;
    struct stat sb;
    if (data_dir != NULL && dae_name_valid(s)) {
        size_t n = strlen(data_dir) + strlen(s) + 2;
        char *p = malloc(n);
        if (p != NULL) {
            snprintf(p, n, "%s/%s", data_dir, s);
            int named = stat(p, &sb) == 0 && S_ISDIR(sb.st_mode);
            free(p);
            if (named) return 0;
        }
    }
    return stat(s, &sb) == 0 && (S_ISREG(sb.st_mode) || S_ISDIR(sb.st_mode));
}

/* ------------------------------------------------------------------------
 * Saving
 * ------------------------------------------------------------------------ */

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24), p[1] = (uint8_t)(v >> 16), p[2] = (uint8_t)(v >> 8), p[3] = (uint8_t)v;
}

/* Writes one IDX file dir/base (new; 16-byte header for images, 8 for
 * labels, then payload) and fsyncs it. Returns 0 or -1 with errno set. */
static int write_idx(const char *dir, const char *base, const uint32_t *head, int n_head, const uint8_t *payload,
                     size_t len) {
    char path[4096];
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, base) >= sizeof path) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) return -1;
    uint8_t h[16];
    for (int i = 0; i < n_head; i++) put_be32(h + 4 * i, head[i]);
    int ok = dae_write_all(fd, h, (size_t)n_head * 4) == 0 && dae_write_all(fd, payload, len) == 0 &&
             fsync(fd) == 0;
    int e = errno;
    if (close(fd) != 0 && ok) ok = 0, e = errno;
    errno = e;
    return ok ? 0 : -1;
}

dae_status dae_dataset_save_dir(const char *data_dir, const char *name, const dae_dataset *d, int replace,
                                char *err, size_t errlen) {
    if (data_dir == NULL || data_dir[0] == '\0')
        return dae_fail(err, errlen, DAE_ERR_INVALID, "no data directory given");
    if (name == NULL || !dae_name_valid(name))
        return dae_fail(err, errlen, DAE_ERR_INVALID,
                        "bad data set name '%s': use 1 to 64 of A-Z a-z 0-9 . _ - (not starting with '.')",
                        name ? name : "(null)");
    char final[4096], tmp[4096];
    if ((size_t)snprintf(final, sizeof final, "%s/%s", data_dir, name) >= sizeof final ||
        (size_t)snprintf(tmp, sizeof tmp, "%s/.tmp.%ld.%s.XXXXXX", data_dir, (long)getpid(), name) >= sizeof tmp)
        return dae_fail(err, errlen, DAE_ERR_INVALID, "%s: path too long", data_dir);
    const dae_idx_images *ims[2] = {&d->train_images, &d->test_images};
    const dae_idx_labels *lbs[2] = {&d->train_labels, &d->test_labels};
    for (int s = 0; s < 2; s++)
        if (ims[s]->count < 0 || ims[s]->count != lbs[s]->count || ims[s]->rows != ims[0]->rows ||
            ims[s]->cols != ims[0]->cols)
            return dae_fail(err, errlen, DAE_ERR_INVALID,
                            "data set '%s': the splits' images and labels do not fit together", name);
    struct stat sb;
    int exists = lstat(final, &sb) == 0;
    if (exists && (!replace || !S_ISDIR(sb.st_mode)))
        return dae_fail(err, errlen, DAE_ERR_EXISTS, "data set '%s' exists: %s%s", name, final,
                        S_ISDIR(sb.st_mode) ? "" : " (and is not a directory)");
    if (mkdtemp(tmp) == NULL)
        return dae_fail(err, errlen, dae_write_errno_status(errno), "data set '%s': cannot make a directory in %s: %s",
                        name, data_dir, strerror(errno));
    const char *what = "chmod";
    int ok = chmod(tmp, 0755) == 0; /* mkdtemp makes it 0700 */
    if (ok) what = "write";
    for (int s = 0; s < 2 && ok; s++) {
        uint32_t hi[4] = {DAE_IDX_MAGIC_IMAGES, (uint32_t)ims[s]->count, (uint32_t)ims[s]->rows,
                          (uint32_t)ims[s]->cols};
        uint32_t hl[2] = {DAE_IDX_MAGIC_LABELS, (uint32_t)lbs[s]->count};
        size_t n = (size_t)ims[s]->count * (size_t)ims[s]->rows * (size_t)ims[s]->cols;
        ok = write_idx(tmp, IDX_NAMES[2 * s], hi, 4, ims[s]->pixels, n) == 0 &&
             write_idx(tmp, IDX_NAMES[2 * s + 1], hl, 2, lbs[s]->labels, (size_t)lbs[s]->count) == 0;
    }
    if (ok) what = "fsync", ok = dae_dir_fsync(tmp) == 0;
    int e = errno;
    if (ok) {
        /* Into place without replacing what another writer may have put
         * there meanwhile; or, replacing, swapped with the old one. */
        what = "rename";
        unsigned flags = exists ? RENAME_EXCHANGE : RENAME_NOREPLACE;
        ok = renameat2(AT_FDCWD, tmp, AT_FDCWD, final, flags) == 0;
        e = errno;
        if (!ok && (e == EEXIST || (exists && e == ENOENT))) {
            dae_dir_remove_tree(tmp);
            return dae_fail(err, errlen, DAE_ERR_EXISTS, "data set '%s' %s while it was being written", name,
                            e == EEXIST ? "appeared" : "was removed");
        }
    }
    if (!ok) {
        dae_dir_remove_tree(tmp);
        return dae_fail(err, errlen, dae_write_errno_status(e), "data set '%s': %s in %s failed: %s", name, what,
                        data_dir, strerror(e));
    }
    /* tmp now names the old data set when one was replaced. */
    if (exists && dae_dir_remove_tree(tmp) != 0)
        return dae_fail(err, errlen, DAE_ERR_IO, "data set '%s' replaced, but removing the old copy %s failed: %s",
                        name, tmp, strerror(errno));
    if (dae_dir_fsync(data_dir) != 0)
        return dae_fail(err, errlen, DAE_ERR_IO, "data set '%s' written, but syncing %s failed: %s", name, data_dir,
                        strerror(errno));
    return DAE_OK;
}
