/* test_dataset_import.c - data sets from archives and directories
 * (io/dataset_import.h): tar, tar.gz and zip of PNGs, images cut into
 * patches, a test/ folder, the IDX variant, a directory, an archive in
 * memory; every refusal (not an archive, truncated, zip-slip paths, links,
 * a header claiming a huge image, too many members, a gzip bomb, too few
 * images); saving into a data directory and loading it back. Every
 * archive is written here with libarchive, into a temporary directory. */
#include <criterion/criterion.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <archive.h>
#include <archive_entry.h>
#include <zlib.h>

#include "dataset_import.h"
#include "idx.h"
#include "image.h"
#include "test_util.h"

/* ------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------ */

/* Sample c of pixel (x, y) of generated image seed. */
static uint8_t sample(int x, int y, int c, int seed) { return (uint8_t)(x * 7 + y * 13 + seed * 31 + c * 50); }

/* The gray value dae_dataset_import makes of pixel (x, y) of a generated
 * image of channels channels. */
static uint8_t gray_of(int x, int y, int channels, int seed) {
    if (channels < 3) return sample(x, y, 0, seed);
    return (uint8_t)((299u * sample(x, y, 0, seed) + 587u * sample(x, y, 1, seed) + 114u * sample(x, y, 2, seed) +
                      500u) / 1000u);
}

/* A PNG of w x h pixels of channels channels, made by dae's encoder. */
static uint8_t *make_png(int w, int h, int channels, int seed, size_t *len) {
    dae_image img;
    char err[DAE_ERR_LEN] = "";
    cr_assert_eq(dae_image_alloc(&img, w, h, channels, err, sizeof err), DAE_OK, "%s", err);
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++)
            for (int c = 0; c < channels; c++)
                img.pixels[((size_t)y * w + x) * channels + c] = sample(x, y, c, seed);
    uint8_t *png;
    cr_assert_eq(dae_image_encode_png(&img, 6, &png, len, err, sizeof err), DAE_OK, "%s", err);
    dae_image_free(&img);
    return png;
}

/* gzip of len bytes of data, in a new buffer. */
static uint8_t *gzip_bytes(const uint8_t *data, size_t len, size_t *out_len) {
    z_stream z = {0};
    cr_assert_eq(deflateInit2(&z, 9, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY), Z_OK);
    size_t cap = deflateBound(&z, (uLong)len);
    uint8_t *out = malloc(cap);
    cr_assert_not_null(out);
    z.next_in = (Bytef *)data, z.avail_in = (uInt)len;
    z.next_out = out, z.avail_out = (uInt)cap;
    cr_assert_eq(deflate(&z, Z_FINISH), Z_STREAM_END);
    *out_len = cap - z.avail_out;
    deflateEnd(&z);
    return out;
}

typedef enum { TAR, TAR_GZ, ZIP } arc_kind;

static struct archive *arc_open(const char *path, arc_kind kind) {
    struct archive *a = archive_write_new();
    cr_assert_not_null(a);
    if (kind == ZIP) archive_write_set_format_zip(a);
    else archive_write_set_format_pax_restricted(a);
    if (kind == TAR_GZ) archive_write_add_filter_gzip(a);
    cr_assert_eq(archive_write_open_filename(a, path), ARCHIVE_OK, "%s", archive_error_string(a));
    return a;
}

/* Adds a member: a regular file of len bytes when type is AE_IFREG, else
 * an entry of that type (link names target). */
static void arc_add_entry(struct archive *a, const char *name, mode_t type, const void *data, size_t len,
                          const char *target) {
    struct archive_entry *e = archive_entry_new();
    archive_entry_set_pathname(e, name);
    archive_entry_set_filetype(e, type);
    archive_entry_set_perm(e, type == AE_IFDIR ? 0755 : 0644);
    archive_entry_set_size(e, type == AE_IFREG ? (la_int64_t)len : 0);
    if (type == AE_IFLNK) archive_entry_set_symlink(e, target);
    cr_assert_eq(archive_write_header(a, e), ARCHIVE_OK, "%s: %s", name, archive_error_string(a));
    if (type == AE_IFREG && len > 0) cr_assert_eq(archive_write_data(a, data, len), (la_ssize_t)len);
    archive_entry_free(e);
}

static void arc_add(struct archive *a, const char *name, const void *data, size_t len) {
    arc_add_entry(a, name, AE_IFREG, data, len, NULL);
}

/* Adds a generated PNG as name. */
static void arc_add_png(struct archive *a, const char *name, int w, int h, int channels, int seed) {
    size_t len;
    uint8_t *png = make_png(w, h, channels, seed, &len);
    arc_add(a, name, png, len);
    free(png);
}

static void arc_close(struct archive *a) {
    cr_assert_eq(archive_write_close(a), ARCHIVE_OK, "%s", archive_error_string(a));
    archive_write_free(a);
}

/* Writes len bytes to path. */
static void write_file(const char *path, const void *data, size_t len) {
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "cannot create %s", path);
    cr_assert_eq(fwrite(data, 1, len, f), len);
    cr_assert_eq(fclose(f), 0);
}

/* An IDX file image: a header of n_head fields, then payload bytes. */
static uint8_t *idx_bytes(const uint32_t *head, int n_head, const uint8_t *payload, size_t n, size_t *len) {
    uint8_t *b = malloc(4 * (size_t)n_head + n + 1);
    cr_assert_not_null(b);
    for (int i = 0; i < n_head; i++)
        b[4 * i] = (uint8_t)(head[i] >> 24), b[4 * i + 1] = (uint8_t)(head[i] >> 16),
        b[4 * i + 2] = (uint8_t)(head[i] >> 8), b[4 * i + 3] = (uint8_t)head[i];
    if (n > 0) memcpy(b + 4 * n_head, payload, n);
    *len = 4 * (size_t)n_head + n;
    return b;
}

/* Imports path with lim (NULL: defaults) for 28x28 and expects failure
 * status want with a message holding needle; the output stays empty. */
static void expect_refused(const char *path, const dae_import_limits *lim, dae_status want, const char *needle) {
    dae_dataset d;
    memset(&d, 0xAB, sizeof d);
    dae_import_report rep;
    char err[DAE_ERR_LEN] = "";
    dae_status st = dae_dataset_import(path, lim, 28, 28, &d, &rep, err, sizeof err);
    cr_assert_eq(st, want, "expected %s, got %s (%s)", dae_status_str(want), dae_status_str(st), err);
    cr_assert_not_null(strstr(err, needle), "message '%s' does not mention '%s'", err, needle);
    cr_assert_null(d.train_images.pixels);
    cr_assert_null(d.test_labels.labels);
    cr_assert_eq(d.train_images.count, 0);
}

/* Imports path for 28x28 with the default limits, or fails the test. */
static void import_ok(const char *path, dae_dataset *d, dae_import_report *rep) {
    char err[DAE_ERR_LEN] = "";
    dae_status st = dae_dataset_import(path, NULL, 28, 28, d, rep, err, sizeof err);
    cr_assert_eq(st, DAE_OK, "%s: %s", dae_status_str(st), err);
}

/* The sorted names in dir, joined by spaces (a new string). */
static char *listing(const char *dir) {
    struct dirent **names;
    int n = scandir(dir, &names, NULL, alphasort);
    cr_assert_geq(n, 0, "cannot list %s", dir);
    char *s = calloc(1, 4096);
    cr_assert_not_null(s);
    for (int i = 0; i < n; i++) {
        if (strcmp(names[i]->d_name, ".") != 0 && strcmp(names[i]->d_name, "..") != 0) {
            strncat(s, names[i]->d_name, 4000 - strlen(s));
            strcat(s, " ");
        }
        free(names[i]);
    }
    free(names);
    return s;
}

/* Checks that example k of im is the rows x cols crop at (x0, y0) of
 * generated image seed. */
static void assert_patch(const dae_idx_images *im, int k, int seed, int channels, int x0, int y0) {
    const uint8_t *p = im->pixels + (size_t)k * im->rows * im->cols;
    for (int y = 0; y < im->rows; y++)
        for (int x = 0; x < im->cols; x++)
            cr_assert_eq(p[y * im->cols + x], gray_of(x0 + x, y0 + y, channels, seed),
                         "example %d pixel (%d, %d): got %d, want %d", k, x, y, p[y * im->cols + x],
                         gray_of(x0 + x, y0 + y, channels, seed));
}

/* ------------------------------------------------------------------------
 * Sources that work
 * ------------------------------------------------------------------------ */

/* 20 digits of 28x28 under one top folder, in reverse order in the
 * archive: sorted by path, every 10th (img09, img19) is held out. */
Test(dataset_import, tar_of_exact_size_pngs) {
    char *dir = test_tmpdir("import");
    char *path = path_join(dir, "digits.tar");
    struct archive *a = arc_open(path, TAR);
    arc_add_entry(a, "digits", AE_IFDIR, NULL, 0, NULL);
    for (int i = 19; i >= 0; i--) {
        char name[64];
        snprintf(name, sizeof name, "digits/img%02d.png", i);
        arc_add_png(a, name, 28, 28, i == 9 ? 3 : 1, i);
    }
    arc_close(a);

    dae_dataset d;
    dae_import_report rep;
    import_ok(path, &d, &rep);
    cr_assert_str_eq(rep.source, "images");
    cr_assert_eq(rep.members, 21);
    cr_assert_eq(rep.images, 20);
    cr_assert_eq(rep.patches, 20);
    cr_assert_eq(rep.train_count, 18);
    cr_assert_eq(rep.test_count, 2);
    cr_assert_eq(rep.test_every, 10);
    cr_assert_eq(rep.rows, 28);
    cr_assert_eq(rep.cols, 28);
    cr_assert_not_null(strstr(rep.split, "i % 10 == 9"), "%s", rep.split);
    cr_assert_eq(d.train_images.count, 18);
    cr_assert_eq(d.train_labels.count, 18);
    cr_assert_eq(d.test_images.count, 2);
    cr_assert_eq(d.test_labels.count, 2);
    assert_patch(&d.test_images, 0, 9, 3, 0, 0); /* RGB: the luma */
    assert_patch(&d.test_images, 1, 19, 1, 0, 0);
    assert_patch(&d.train_images, 0, 0, 1, 0, 0);
    assert_patch(&d.train_images, 17, 18, 1, 0, 0);
    for (int i = 0; i < 18; i++) cr_assert_eq(d.train_labels.labels[i], 0);
    dae_dataset_free(&d);
    free(path);
    test_rm_tree(dir);
}

/* 64x48 images become 4 x 3 patches of 28x28 each (origins 0, 12, 24, 36
 * across and 0, 10, 20 down: the tile plan of the denoiser); a 20x20
 * image is skipped and counted. */
Test(dataset_import, targz_large_images_are_cut_into_patches) {
    char *dir = test_tmpdir("import");
    char *path = path_join(dir, "photos.tar.gz");
    struct archive *a = arc_open(path, TAR_GZ);
    for (int i = 0; i < 16; i++) {
        char name[64];
        snprintf(name, sizeof name, "p%02d.png", i);
        arc_add_png(a, name, 64, 48, i == 0 ? 4 : 1, i);
    }
    arc_add_png(a, "small.png", 20, 20, 1, 99);
    arc_close(a);

    dae_dataset d;
    dae_import_report rep;
    import_ok(path, &d, &rep);
    cr_assert_eq(rep.images, 16);
    cr_assert_eq(rep.skipped_small, 1);
    cr_assert_eq(rep.patches, 16 * 12);
    cr_assert_eq(rep.test_count, 12); /* one image: p09 */
    cr_assert_eq(rep.train_count, 15 * 12);
    /* p00 (RGBA: alpha dropped) comes first, its patches in plan order. */
    static const int xs[4] = {0, 12, 24, 36}, ys[3] = {0, 10, 20};
    for (int k = 0; k < 12; k++) assert_patch(&d.train_images, k, 0, 4, xs[k % 4], ys[k / 4]);
    assert_patch(&d.test_images, 11, 9, 1, 36, 20); /* flush with the corner */
    dae_dataset_free(&d);
    free(path);
    test_rm_tree(dir);
}

/* A test/ folder under one top folder picks the test split; other files
 * and what macOS adds are skipped. */
Test(dataset_import, zip_with_test_folder) {
    char *dir = test_tmpdir("import");
    char *path = path_join(dir, "set.zip");
    struct archive *a = arc_open(path, ZIP);
    for (int i = 0; i < 16; i++) {
        char name[64];
        snprintf(name, sizeof name, "set/train/a%02d.png", i);
        arc_add_png(a, name, 28, 28, 1, i);
    }
    for (int i = 0; i < 3; i++) {
        char name[64];
        snprintf(name, sizeof name, "set/test/b%02d.PNG", i);
        arc_add_png(a, name, 28, 28, 1, 50 + i);
    }
    arc_add(a, "set/README.txt", "hello\n", 6);
    arc_add(a, "__MACOSX/set/._a00.png", "\0\5\26\7", 4);
    arc_close(a);

    dae_dataset d;
    dae_import_report rep;
    import_ok(path, &d, &rep);
    cr_assert_eq(rep.train_count, 16);
    cr_assert_eq(rep.test_count, 3);
    cr_assert_eq(rep.test_every, 0);
    cr_assert_eq(rep.skipped_other, 2);
    cr_assert_not_null(strstr(rep.split, "set/test/"), "%s", rep.split);
    assert_patch(&d.test_images, 2, 52, 1, 0, 0);
    assert_patch(&d.train_images, 15, 15, 1, 0, 0);
    dae_dataset_free(&d);
    free(path);
    test_rm_tree(dir);
}

/* Writes the four IDX files of n_train / n_test 28x28 images into a, each
 * gzip'd when gz; pixels are (i * 7 + 1) % 256 over each payload, labels
 * i % 10. */
static void arc_add_idx_set(struct archive *a, const char *prefix, int n_train, int n_test, int gz) {
    for (int s = 0; s < 2; s++) {
        int n = s == 0 ? n_train : n_test;
        size_t np = (size_t)n * 28 * 28;
        uint8_t *px = malloc(np + 1), *lb = malloc((size_t)n + 1);
        for (size_t i = 0; i < np; i++) px[i] = (uint8_t)(i * 7 + 1);
        for (int i = 0; i < n; i++) lb[i] = (uint8_t)(i % 10);
        uint32_t hi[4] = {DAE_IDX_MAGIC_IMAGES, (uint32_t)n, 28, 28}, hl[2] = {DAE_IDX_MAGIC_LABELS, (uint32_t)n};
        size_t len[2];
        uint8_t *f[2] = {idx_bytes(hi, 4, px, np, &len[0]), idx_bytes(hl, 2, lb, (size_t)n, &len[1])};
        static const char *const base[2][2] = {{"train-images-idx3-ubyte", "train-labels-idx1-ubyte"},
                                               {"t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"}};
        for (int k = 0; k < 2; k++) {
            char name[128];
            snprintf(name, sizeof name, "%s%s%s", prefix, base[s][k], gz ? ".gz" : "");
            if (gz) {
                size_t zl;
                uint8_t *z = gzip_bytes(f[k], len[k], &zl);
                arc_add(a, name, z, zl);
                free(z);
            } else {
                arc_add(a, name, f[k], len[k]);
            }
            free(f[k]);
        }
        free(px);
        free(lb);
    }
}

Test(dataset_import, idx_files_keep_their_split_and_labels) {
    char *dir = test_tmpdir("import");
    char *path = path_join(dir, "mnist.tgz");
    struct archive *a = arc_open(path, TAR_GZ);
    arc_add_idx_set(a, "mnist/", 20, 5, 1);
    arc_close(a);

    dae_dataset d;
    dae_import_report rep;
    import_ok(path, &d, &rep);
    cr_assert_str_eq(rep.source, "idx");
    cr_assert_eq(rep.train_count, 20);
    cr_assert_eq(rep.test_count, 5);
    cr_assert_eq(d.train_labels.labels[13], 3);
    cr_assert_eq(d.test_images.pixels[100], (uint8_t)(100 * 7 + 1));
    dae_dataset_free(&d);

    /* The same files raw in a zip. */
    char *zpath = path_join(dir, "mnist.zip");
    a = arc_open(zpath, ZIP);
    arc_add_idx_set(a, "", 20, 5, 0);
    arc_close(a);
    import_ok(zpath, &d, &rep);
    cr_assert_eq(rep.train_count, 20);
    dae_dataset_free(&d);
    free(zpath);
    free(path);
    test_rm_tree(dir);
}

/* A directory works as an archive does; dae_import_is_path tells it from
 * a data set's name. */
Test(dataset_import, directory_source) {
    char *dir = test_tmpdir("import");
    char *src = path_join(dir, "pics");
    char *test = path_join(src, "test");
    cr_assert_eq(mkdir(src, 0755), 0);
    cr_assert_eq(mkdir(test, 0755), 0);
    for (int i = 0; i < 18; i++) {
        char name[64];
        snprintf(name, sizeof name, "%s/%c%02d.png", i < 16 ? "." : "test", 'x', i);
        char *p = path_join(src, name);
        size_t len;
        uint8_t *png = make_png(28, 28, 1, i, &len);
        write_file(p, png, len);
        free(png);
        free(p);
    }
    dae_dataset d;
    dae_import_report rep;
    import_ok(src, &d, &rep);
    cr_assert_eq(rep.train_count, 16);
    cr_assert_eq(rep.test_count, 2);
    cr_assert_eq(rep.members, 19); /* test/ too */
    assert_patch(&d.test_images, 1, 17, 1, 0, 0);
    dae_dataset_free(&d);

    cr_assert_eq(dae_import_is_path(src, dir), 1);
    cr_assert_eq(dae_import_is_path("mnist", dir), 0);
    cr_assert_eq(dae_import_is_path("pics", dir), 0); /* a data set of that name */
    free(test);
    free(src);
    test_rm_tree(dir);
}

Test(dataset_import, archive_in_memory) {
    char *dir = test_tmpdir("import");
    char *path = path_join(dir, "m.tar");
    struct archive *a = arc_open(path, TAR);
    for (int i = 0; i < 16; i++) {
        char name[64];
        snprintf(name, sizeof name, "m%02d.png", i);
        arc_add_png(a, name, 28, 28, 1, i);
    }
    arc_close(a);
    uint8_t *buf;
    size_t len;
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    fseek(f, 0, SEEK_END);
    len = (size_t)ftell(f);
    rewind(f);
    buf = malloc(len);
    cr_assert_eq(fread(buf, 1, len, f), len);
    fclose(f);

    dae_dataset d;
    dae_import_report rep;
    char err[DAE_ERR_LEN] = "";
    cr_assert_eq(dae_dataset_import_memory(buf, len, "upload", NULL, 28, 28, &d, &rep, err, sizeof err), DAE_OK,
                 "%s", err);
    cr_assert_eq(rep.train_count + rep.test_count, 16);
    dae_dataset_free(&d);
    dae_import_limits lim;
    dae_import_limits_default(&lim);
    lim.max_archive_bytes = len - 1;
    cr_assert_eq(dae_dataset_import_memory(buf, len, "upload", &lim, 28, 28, &d, &rep, err, sizeof err),
                 DAE_ERR_TOO_LARGE);
    cr_assert_not_null(strstr(err, "upload"), "%s", err);
    free(buf);
    free(path);
    test_rm_tree(dir);
}

/* ------------------------------------------------------------------------
 * Refusals
 * ------------------------------------------------------------------------ */

Test(dataset_import, refuses_what_is_not_an_archive) {
    char *dir = test_tmpdir("import");
    char *path = path_join(dir, "notes.tar");
    write_file(path, "these are my holiday notes, not a tar file\n", 43);
    expect_refused(path, NULL, DAE_ERR_FORMAT, "not a tar or zip archive");
    char *missing = path_join(dir, "missing.tar");
    expect_refused(missing, NULL, DAE_ERR_IO, "missing.tar");
    free(missing);
    free(path);
    test_rm_tree(dir);
}

Test(dataset_import, refuses_a_truncated_archive) {
    char *dir = test_tmpdir("import");
    char *path = path_join(dir, "cut.tar.gz");
    struct archive *a = arc_open(path, TAR_GZ);
    for (int i = 0; i < 16; i++) {
        char name[64];
        snprintf(name, sizeof name, "c%02d.png", i);
        arc_add_png(a, name, 64, 64, 3, i);
    }
    arc_close(a);
    struct stat sb;
    cr_assert_eq(stat(path, &sb), 0);
    cr_assert_eq(truncate(path, sb.st_size / 2), 0);
    expect_refused(path, NULL, DAE_ERR_FORMAT, "cut.tar.gz");
    free(path);
    test_rm_tree(dir);
}

/* Builds an archive of 16 good images plus one member made by add, and
 * expects it refused with want and needle. */
static void expect_member_refused(arc_kind kind, void (*add)(struct archive *), dae_status want, const char *needle) {
    char *dir = test_tmpdir("import");
    char *path = path_join(dir, kind == ZIP ? "bad.zip" : "bad.tar");
    struct archive *a = arc_open(path, kind);
    for (int i = 0; i < 16; i++) {
        char name[64];
        snprintf(name, sizeof name, "ok%02d.png", i);
        arc_add_png(a, name, 28, 28, 1, i);
    }
    add(a);
    arc_close(a);
    expect_refused(path, NULL, want, needle);
    free(path);
    test_rm_tree(dir);
}

static void add_dotdot(struct archive *a) { arc_add_png(a, "../x.png", 28, 28, 1, 1); }
static void add_inner_dotdot(struct archive *a) { arc_add_png(a, "a/../../x.png", 28, 28, 1, 1); }
static void add_absolute(struct archive *a) { arc_add_png(a, "/abs.png", 28, 28, 1, 1); }
static void add_symlink(struct archive *a) { arc_add_entry(a, "link.png", AE_IFLNK, NULL, 0, "/etc/passwd"); }
static void add_fifo(struct archive *a) { arc_add_entry(a, "pipe.png", AE_IFIFO, NULL, 0, NULL); }
static void add_hardlink(struct archive *a) {
    struct archive_entry *e = archive_entry_new();
    archive_entry_set_pathname(e, "hard.png");
    archive_entry_set_filetype(e, AE_IFREG);
    archive_entry_set_perm(e, 0644);
    archive_entry_set_hardlink(e, "ok00.png");
    cr_assert_eq(archive_write_header(a, e), ARCHIVE_OK, "%s", archive_error_string(a));
    archive_entry_free(e);
}
static void add_broken_png(struct archive *a) { arc_add(a, "broken.png", "\x89PNG\r\n\x1a\nrubbish", 15); }

/* A PNG signature and an IHDR (with a valid CRC) claiming 20000x20000:
 * 33 bytes that would decode to 400 MB. */
static void add_huge_header(struct archive *a) {
    uint8_t b[33] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n', 0, 0, 0, 13, 'I', 'H', 'D', 'R',
                     0, 0, 0x4e, 0x20, 0, 0, 0x4e, 0x20, 8, 0, 0, 0, 0};
    uLong crc = crc32(0, b + 12, 17);
    b[29] = (uint8_t)(crc >> 24), b[30] = (uint8_t)(crc >> 16), b[31] = (uint8_t)(crc >> 8), b[32] = (uint8_t)crc;
    arc_add(a, "huge.png", b, sizeof b);
}

Test(dataset_import, refuses_zip_slip_paths) {
    expect_member_refused(TAR, add_dotdot, DAE_ERR_INVALID, "member ../x.png: '..'");
    expect_member_refused(ZIP, add_dotdot, DAE_ERR_INVALID, "member ../x.png: '..'");
    expect_member_refused(TAR, add_inner_dotdot, DAE_ERR_INVALID, "a/../../x.png");
    expect_member_refused(TAR, add_absolute, DAE_ERR_INVALID, "member /abs.png: absolute");
    expect_member_refused(ZIP, add_absolute, DAE_ERR_INVALID, "member /abs.png: absolute");
}

Test(dataset_import, refuses_links_and_special_files) {
    expect_member_refused(TAR, add_symlink, DAE_ERR_INVALID, "member link.png: symbolic links");
    expect_member_refused(ZIP, add_symlink, DAE_ERR_INVALID, "member link.png: symbolic links");
    expect_member_refused(TAR, add_hardlink, DAE_ERR_INVALID, "member hard.png: hard links");
    expect_member_refused(TAR, add_fifo, DAE_ERR_INVALID, "member pipe.png: FIFOs");
}

Test(dataset_import, refuses_a_symlink_in_a_directory) {
    char *dir = test_tmpdir("import");
    char *src = path_join(dir, "pics");
    cr_assert_eq(mkdir(src, 0755), 0);
    char *link = path_join(src, "secret.png");
    cr_assert_eq(symlink("/etc/passwd", link), 0);
    expect_refused(src, NULL, DAE_ERR_INVALID, "member secret.png: symbolic links");
    free(link);
    free(src);
    test_rm_tree(dir);
}

Test(dataset_import, refuses_broken_and_huge_images) {
    expect_member_refused(TAR, add_broken_png, DAE_ERR_FORMAT, "member broken.png: PNG");
    expect_member_refused(TAR, add_huge_header, DAE_ERR_TOO_LARGE, "member huge.png: image is 20000x20000");
}

Test(dataset_import, refuses_too_many_pixels_in_all) {
    char *dir = test_tmpdir("import");
    char *path = path_join(dir, "many.tar");
    struct archive *a = arc_open(path, TAR);
    for (int i = 0; i < 16; i++) {
        char name[64];
        snprintf(name, sizeof name, "m%02d.png", i);
        arc_add_png(a, name, 64, 48, 1, i);
    }
    arc_close(a);
    dae_import_limits lim;
    dae_import_limits_default(&lim);
    lim.max_total_pixels = 10 * 64 * 48; /* the images; their patches (12 * 784 each) pass it sooner */
    expect_refused(path, &lim, DAE_ERR_TOO_LARGE, "over the limit of 30720 pixels");
    free(path);
    test_rm_tree(dir);
}

/* 100,000 empty members: refused at member 20,001, before reading the
 * rest. */
Test(dataset_import, refuses_too_many_members) {
    char *dir = test_tmpdir("import");
    char *path = path_join(dir, "flood.tar.gz");
    struct archive *a = arc_open(path, TAR_GZ);
    for (int i = 0; i < 100000; i++) {
        char name[32];
        snprintf(name, sizeof name, "e%06d", i);
        arc_add(a, name, NULL, 0);
    }
    arc_close(a);
    expect_refused(path, NULL, DAE_ERR_TOO_LARGE, "more than 20000 members");
    free(path);
    test_rm_tree(dir);
}

/* A gzip'd IDX member that inflates to 32 MiB from about 32 KiB: refused
 * at the 1 MiB member limit; and a member too large as stored. */
Test(dataset_import, refuses_decompression_bombs) {
    char *dir = test_tmpdir("import");
    char *path = path_join(dir, "bomb.tar");
    size_t n = (size_t)32 << 20;
    uint8_t *zeros = calloc(n, 1);
    cr_assert_not_null(zeros);
    uint32_t head[4] = {DAE_IDX_MAGIC_IMAGES, (uint32_t)(n / 784), 28, 28};
    for (int i = 0; i < 4; i++)
        zeros[4 * i] = (uint8_t)(head[i] >> 24), zeros[4 * i + 1] = (uint8_t)(head[i] >> 16),
        zeros[4 * i + 2] = (uint8_t)(head[i] >> 8), zeros[4 * i + 3] = (uint8_t)head[i];
    size_t zl;
    uint8_t *z = gzip_bytes(zeros, 16 + (n / 784) * 784, &zl);
    cr_assert_lt(zl, (size_t)64 << 10);
    struct archive *a = arc_open(path, TAR);
    arc_add(a, "train-images-idx3-ubyte.gz", z, zl);
    arc_close(a);
    dae_import_limits lim;
    dae_import_limits_default(&lim);
    lim.max_member_bytes = (size_t)1 << 20;
    expect_refused(path, &lim, DAE_ERR_TOO_LARGE, "member train-images-idx3-ubyte.gz: over the limit of 1048576");
    /* The same bytes stored raw in a tar.gz: refused from the declared size. */
    char *path2 = path_join(dir, "bomb2.tar.gz");
    a = arc_open(path2, TAR_GZ);
    arc_add(a, "zeros.png", zeros, n);
    arc_close(a);
    expect_refused(path2, &lim, DAE_ERR_TOO_LARGE, "member zeros.png: over the limit");
    lim.max_member_bytes = n;
    lim.max_total_bytes = (size_t)16 << 20;
    expect_refused(path2, &lim, DAE_ERR_TOO_LARGE, "over the limit of 16777216 bytes uncompressed");
    free(z);
    free(zeros);
    free(path2);
    free(path);
    test_rm_tree(dir);
}

Test(dataset_import, refuses_too_few_images) {
    char *dir = test_tmpdir("import");
    char *path = path_join(dir, "few.tar");
    struct archive *a = arc_open(path, TAR);
    for (int i = 0; i < 5; i++) {
        char name[64];
        snprintf(name, sizeof name, "f%02d.png", i);
        arc_add_png(a, name, 28, 28, 1, i);
    }
    arc_add_png(a, "tiny.png", 8, 8, 1, 7);
    arc_close(a);
    expect_refused(path, NULL, DAE_ERR_INVALID, "5 usable images of at least 28x28, need 16 (1 smaller image");
    free(path);
    test_rm_tree(dir);
}

Test(dataset_import, refuses_idx_files_and_images_together) {
    char *dir = test_tmpdir("import");
    char *path = path_join(dir, "mixed.tar");
    struct archive *a = arc_open(path, TAR);
    arc_add_idx_set(a, "", 20, 5, 0);
    arc_add_png(a, "extra.png", 28, 28, 1, 1);
    arc_close(a);
    expect_refused(path, NULL, DAE_ERR_INVALID, "both IDX files");
    free(path);
    test_rm_tree(dir);
}

/* ------------------------------------------------------------------------
 * Saving
 * ------------------------------------------------------------------------ */

/* An import of 20 generated 28x28 PNGs. */
static void small_import(const char *dir, dae_dataset *d) {
    char *path = path_join(dir, "src.tar");
    struct archive *a = arc_open(path, TAR);
    for (int i = 0; i < 20; i++) {
        char name[64];
        snprintf(name, sizeof name, "s%02d.png", i);
        arc_add_png(a, name, 28, 28, 1, i);
    }
    arc_close(a);
    dae_import_report rep;
    import_ok(path, d, &rep);
    free(path);
}

Test(dataset_import, round_trip_through_save_dir) {
    char *dir = test_tmpdir("import");
    char *data = path_join(dir, "data");
    cr_assert_eq(mkdir(data, 0755), 0);
    dae_dataset d, back;
    small_import(dir, &d);
    char err[DAE_ERR_LEN] = "";
    cr_assert_eq(dae_dataset_save_dir(data, "mine", &d, 0, err, sizeof err), DAE_OK, "%s", err);
    char *names = listing(data);
    cr_assert_str_eq(names, "mine ");
    free(names);
    cr_assert_eq(dae_dataset_load(data, "mine", &back, err, sizeof err), DAE_OK, "%s", err);
    cr_assert_eq(back.train_images.count, d.train_images.count);
    cr_assert_eq(back.test_images.count, d.test_images.count);
    cr_assert_eq(back.train_images.rows, 28);
    cr_assert_eq(memcmp(back.train_images.pixels, d.train_images.pixels, (size_t)d.train_images.count * 784), 0);
    cr_assert_eq(memcmp(back.test_images.pixels, d.test_images.pixels, (size_t)d.test_images.count * 784), 0);
    cr_assert_eq(back.test_labels.count, d.test_labels.count);
    dae_dataset_free(&back);
    dae_dataset_free(&d);
    free(data);
    test_rm_tree(dir);
}

Test(dataset_import, save_dir_refuses_an_existing_name_unless_replacing) {
    char *dir = test_tmpdir("import");
    char *data = path_join(dir, "data");
    cr_assert_eq(mkdir(data, 0755), 0);
    dae_dataset d, back;
    small_import(dir, &d);
    char err[DAE_ERR_LEN] = "";
    cr_assert_eq(dae_dataset_save_dir(data, "mine", &d, 0, err, sizeof err), DAE_OK, "%s", err);
    char *before = listing(data);
    cr_assert_eq(dae_dataset_save_dir(data, "mine", &d, 0, err, sizeof err), DAE_ERR_EXISTS);
    cr_assert_not_null(strstr(err, "'mine' exists"), "%s", err);
    char *after = listing(data);
    cr_assert_str_eq(after, before);
    free(after);
    cr_assert_eq(dae_dataset_save_dir(data, ".hidden", &d, 0, err, sizeof err), DAE_ERR_INVALID);
    cr_assert_eq(dae_dataset_save_dir(data, "../up", &d, 0, err, sizeof err), DAE_ERR_INVALID);

    d.train_labels.count = 2; /* labels that do not fit the images */
    cr_assert_eq(dae_dataset_save_dir(data, "other", &d, 0, err, sizeof err), DAE_ERR_INVALID);
    after = listing(data);
    cr_assert_str_eq(after, before);
    free(after);

    /* Replacing: the new one in, the old one gone, nothing else left. */
    d.train_images.count = d.train_labels.count = 3;
    cr_assert_eq(dae_dataset_save_dir(data, "mine", &d, 1, err, sizeof err), DAE_OK, "%s", err);
    after = listing(data);
    cr_assert_str_eq(after, before);
    free(after);
    cr_assert_eq(dae_dataset_load(data, "mine", &back, err, sizeof err), DAE_OK, "%s", err);
    cr_assert_eq(back.train_images.count, 3);
    dae_dataset_free(&back);
    free(before);
    dae_dataset_free(&d);
    free(data);
    test_rm_tree(dir);
}

/* A write that fails half way (pixels the kernel cannot read) leaves the
 * data directory as it was, also when replacing. */
Test(dataset_import, failed_save_leaves_nothing_behind) {
    char *dir = test_tmpdir("import");
    char *data = path_join(dir, "data");
    cr_assert_eq(mkdir(data, 0755), 0);
    dae_dataset d;
    small_import(dir, &d);
    char err[DAE_ERR_LEN] = "";
    cr_assert_eq(dae_dataset_save_dir(data, "old", &d, 0, err, sizeof err), DAE_OK, "%s", err);
    char *before = listing(data);
    uint8_t *saved = d.test_images.pixels;
    d.test_images.pixels = NULL; /* write(2) fails with EFAULT */
    cr_assert_eq(dae_dataset_save_dir(data, "new", &d, 0, err, sizeof err), DAE_ERR_IO);
    cr_assert_not_null(strstr(err, "'new'"), "%s", err);
    char *after = listing(data);
    cr_assert_str_eq(after, before);
    free(after);
    cr_assert_eq(dae_dataset_save_dir(data, "old", &d, 1, err, sizeof err), DAE_ERR_IO);
    after = listing(data);
    cr_assert_str_eq(after, before);
    free(after);
    d.test_images.pixels = saved;
    dae_dataset back;
    cr_assert_eq(dae_dataset_load(data, "old", &back, err, sizeof err), DAE_OK, "%s", err);
    dae_dataset_free(&back);
    free(before);
    dae_dataset_free(&d);
    free(data);
    test_rm_tree(dir);
}
