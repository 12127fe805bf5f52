/* test_idx.c - IDX reader: the committed MNIST subset, in-memory parsing,
 * raw and gzip files, malformed headers and sizes, and data set loading
 * (name checks, missing files, count mismatches). */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "idx.h"
#include "test_util.h"

/* ------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------ */

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

/* Builds an IDX image file image: header, then payload bytes i*7+1 (mod
 * 256) for i in 0..payload_len-1 (which may differ from the header's). */
static uint8_t *make_images(uint32_t magic, uint32_t count, uint32_t rows, uint32_t cols,
                            size_t payload_len, size_t *len) {
    uint8_t *b = malloc(16 + payload_len + 1);
    cr_assert_not_null(b);
    put_be32(b, magic);
    put_be32(b + 4, count);
    put_be32(b + 8, rows);
    put_be32(b + 12, cols);
    for (size_t i = 0; i < payload_len; i++) b[16 + i] = (uint8_t)(i * 7 + 1);
    *len = 16 + payload_len;
    return b;
}

static uint8_t *make_labels(uint32_t magic, uint32_t count, size_t payload_len, size_t *len) {
    uint8_t *b = malloc(8 + payload_len + 1);
    cr_assert_not_null(b);
    put_be32(b, magic);
    put_be32(b + 4, count);
    for (size_t i = 0; i < payload_len; i++) b[8 + i] = (uint8_t)(i % 10);
    *len = 8 + payload_len;
    return b;
}

static void write_raw(const char *path, const uint8_t *b, size_t len) {
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "cannot create %s", path);
    cr_assert_eq(fwrite(b, 1, len, f), len);
    cr_assert_eq(fclose(f), 0);
}

static void write_gz(const char *path, const uint8_t *b, size_t len) {
    gzFile gz = gzopen(path, "wb");
    cr_assert_not_null(gz, "cannot create %s", path);
    if (len > 0) cr_assert_eq(gzwrite(gz, b, (unsigned)len), (int)len);
    cr_assert_eq(gzclose(gz), Z_OK);
}

/* Writes a data set of n_train / n_test 2x2 images into DIR/NAME, with
 * n_train_labels training labels; gz picks the compressed form. */
static void write_dataset(const char *dir, const char *name, uint32_t n_train, uint32_t n_train_labels,
                          uint32_t n_test, int gz) {
    char *d = path_join(dir, name);
    cr_assert_eq(mkdir(d, 0755), 0);
    struct { const char *base; int images; uint32_t n; } files[4] = {
        {"train-images-idx3-ubyte", 1, n_train},
        {"train-labels-idx1-ubyte", 0, n_train_labels},
        {"t10k-images-idx3-ubyte", 1, n_test},
        {"t10k-labels-idx1-ubyte", 0, n_test},
    };
    for (int i = 0; i < 4; i++) {
        size_t len;
        uint8_t *b = files[i].images ? make_images(DAE_IDX_MAGIC_IMAGES, files[i].n, 2, 2, 4 * files[i].n, &len)
                                     : make_labels(DAE_IDX_MAGIC_LABELS, files[i].n, files[i].n, &len);
        char base[64];
        snprintf(base, sizeof base, "%s%s", files[i].base, gz ? ".gz" : "");
        char *p = path_join(d, base);
        if (gz) write_gz(p, b, len);
        else write_raw(p, b, len);
        free(p);
        free(b);
    }
    free(d);
}

static void expect_bad_images(const uint8_t *b, size_t len, const char *needle) {
    dae_idx_images im;
    memset(&im, 0xAB, sizeof im);
    char err[DAE_ERR_LEN] = "";
    dae_status st = dae_idx_parse_images(b, len, &im, err, sizeof err);
    cr_assert_eq(st, DAE_ERR_FORMAT, "expected a format error, got %s (%s)", dae_status_str(st), err);
    cr_assert_not_null(strstr(err, needle), "message '%s' does not mention '%s'", err, needle);
    cr_assert_null(im.pixels);
    cr_assert_eq(im.count, 0);
    dae_idx_images_free(&im);
}

static void expect_bad_labels(const uint8_t *b, size_t len, const char *needle) {
    dae_idx_labels l;
    memset(&l, 0xAB, sizeof l);
    char err[DAE_ERR_LEN] = "";
    dae_status st = dae_idx_parse_labels(b, len, &l, err, sizeof err);
    cr_assert_eq(st, DAE_ERR_FORMAT, "expected a format error, got %s (%s)", dae_status_str(st), err);
    cr_assert_not_null(strstr(err, needle), "message '%s' does not mention '%s'", err, needle);
    cr_assert_null(l.labels);
    dae_idx_labels_free(&l);
}

/* Builds an image file from these header fields and payload length, and
 * checks that the parser refuses it with a message naming needle. */
static void expect_bad_image_file(uint32_t magic, uint32_t count, uint32_t rows, uint32_t cols, size_t payload_len,
                                  const char *needle) {
    size_t len;
    uint8_t *b = make_images(magic, count, rows, cols, payload_len, &len);
    expect_bad_images(b, len, needle);
    free(b);
}

/* The same for a label file. */
static void expect_bad_label_file(uint32_t magic, uint32_t count, size_t payload_len, const char *needle) {
    size_t len;
    uint8_t *b = make_labels(magic, count, payload_len, &len);
    expect_bad_labels(b, len, needle);
    free(b);
}

/* ------------------------------------------------------------------------
 * The committed MNIST subset (tools/make_mini_dataset.py)
 * ------------------------------------------------------------------------ */

Test(idx, loads_mnist_mini) {
    dae_dataset d;
    char err[DAE_ERR_LEN] = "";
    cr_assert_eq(dae_dataset_load("tests/fixtures", "mnist-mini", &d, err, sizeof err), DAE_OK, "%s", err);
    cr_assert_eq(d.train_images.count, 1024);
    cr_assert_eq(d.train_labels.count, 1024);
    cr_assert_eq(d.test_images.count, 256);
    cr_assert_eq(d.test_labels.count, 256);
    cr_assert_eq(d.train_images.rows, 28);
    cr_assert_eq(d.train_images.cols, 28);
    cr_assert_eq(d.test_images.rows, 28);
    cr_assert_eq(d.test_images.cols, 28);

    /* The first MNIST labels, and the last ones kept. */
    static const uint8_t train_first[5] = {5, 0, 4, 1, 9};
    static const uint8_t test_first[5] = {7, 2, 1, 0, 4};
    cr_assert_eq(memcmp(d.train_labels.labels, train_first, 5), 0);
    cr_assert_eq(memcmp(d.test_labels.labels, test_first, 5), 0);
    cr_assert_eq(d.train_labels.labels[1023], 7);
    cr_assert_eq(d.test_labels.labels[255], 7);

    /* Pixels of the first training image (a 5) and the first test image. */
    const uint8_t *p0 = d.train_images.pixels;
    cr_assert_eq(p0[0], 0);
    cr_assert_eq(p0[152], 3);
    cr_assert_eq(p0[156], 126);
    cr_assert_eq(p0[14 * 28 + 14], 240);
    long sum = 0;
    for (int i = 0; i < 784; i++) sum += p0[i];
    cr_assert_eq(sum, 27525);
    const uint8_t *t0 = d.test_images.pixels;
    cr_assert_eq(t0[202], 84);
    sum = 0;
    for (int i = 0; i < 784; i++) sum += t0[i];
    cr_assert_eq(sum, 18454);
    const uint8_t *last = d.train_images.pixels + 1023 * 784;
    sum = 0;
    for (int i = 0; i < 784; i++) sum += last[i];
    cr_assert_eq(sum, 12920);

    dae_dataset_free(&d);
    dae_dataset_free(&d); /* idempotent */
}

Test(idx, loads_single_gz_file) {
    dae_idx_labels l;
    char err[DAE_ERR_LEN] = "";
    cr_assert_eq(dae_idx_load_labels("tests/fixtures/mnist-mini/t10k-labels-idx1-ubyte.gz", &l, err, sizeof err),
                 DAE_OK, "%s", err);
    cr_assert_eq(l.count, 256);
    cr_assert_eq(l.labels[0], 7);
    dae_idx_labels_free(&l);
    /* the wrong kind of file says what it looks like */
    dae_idx_images im;
    cr_assert_eq(dae_idx_load_images("tests/fixtures/mnist-mini/t10k-labels-idx1-ubyte.gz", &im, err, sizeof err),
                 DAE_ERR_FORMAT);
    cr_assert_not_null(strstr(err, "t10k-labels-idx1-ubyte.gz"), "%s", err);
    cr_assert_not_null(strstr(err, "label file"), "%s", err);
}

/* ------------------------------------------------------------------------
 * In-memory parsing
 * ------------------------------------------------------------------------ */

Test(idx, parses_raw_images_and_labels) {
    size_t len;
    uint8_t *b = make_images(DAE_IDX_MAGIC_IMAGES, 2, 2, 3, 12, &len);
    dae_idx_images im;
    char err[DAE_ERR_LEN] = "";
    cr_assert_eq(dae_idx_parse_images(b, len, &im, err, sizeof err), DAE_OK, "%s", err);
    cr_assert_eq(im.count, 2);
    cr_assert_eq(im.rows, 2);
    cr_assert_eq(im.cols, 3);
    for (int i = 0; i < 12; i++) cr_assert_eq(im.pixels[i], (uint8_t)(i * 7 + 1));
    cr_assert_neq((const void *)im.pixels, (const void *)(b + 16), "pixels must be a copy");
    dae_idx_images_free(&im);
    dae_idx_images_free(&im);
    free(b);

    b = make_labels(DAE_IDX_MAGIC_LABELS, 12, 12, &len);
    dae_idx_labels l;
    cr_assert_eq(dae_idx_parse_labels(b, len, &l, err, sizeof err), DAE_OK, "%s", err);
    cr_assert_eq(l.count, 12);
    cr_assert_eq(l.labels[11], 1);
    dae_idx_labels_free(&l);
    free(b);

    /* zero images is a valid, empty file */
    b = make_images(DAE_IDX_MAGIC_IMAGES, 0, 28, 28, 0, &len);
    cr_assert_eq(dae_idx_parse_images(b, len, &im, err, sizeof err), DAE_OK, "%s", err);
    cr_assert_eq(im.count, 0);
    dae_idx_images_free(&im);
    free(b);
}

Test(idx, rejects_bad_magic) {
    expect_bad_image_file(0x12345678u, 1, 2, 2, 4, "bad magic 0x12345678 (expected 0x00000803 for an IDX image file)");
    expect_bad_label_file(0x12345678u, 1, 1, "bad magic 0x12345678 (expected 0x00000801 for an IDX label file)");
    /* gzip bytes handed to the raw parser */
    expect_bad_image_file(0x1f8b0800u, 1, 2, 2, 4, "gzip");
    /* a data type other than unsigned bytes */
    expect_bad_image_file(0x00000d03u, 1, 2, 2, 4, "data type 0x0d");
}

Test(idx, rejects_wrong_dimension_count) {
    expect_bad_image_file(0x00000802u, 1, 2, 2, 4, "2 dimensions, expected 3");
    expect_bad_image_file(DAE_IDX_MAGIC_LABELS, 1, 2, 2, 4, "label file");
    expect_bad_label_file(DAE_IDX_MAGIC_IMAGES, 1, 1, "3 dimensions, expected 1");
}

Test(idx, rejects_truncated_and_trailing) {
    expect_bad_image_file(DAE_IDX_MAGIC_IMAGES, 60000, 28, 28, 123,
                          "truncated: header says 60000 images of 28x28 (47040000 bytes), file has 123");
    expect_bad_image_file(DAE_IDX_MAGIC_IMAGES, 2, 2, 2, 9, "trailing bytes");
    expect_bad_label_file(DAE_IDX_MAGIC_LABELS, 5, 4, "truncated");
    expect_bad_label_file(DAE_IDX_MAGIC_LABELS, 5, 6, "trailing bytes");
    /* cut inside the header */
    size_t len;
    uint8_t *b = make_images(DAE_IDX_MAGIC_IMAGES, 1, 2, 2, 4, &len);
    for (size_t cut = 0; cut < 16; cut++) {
        dae_idx_images im;
        char err[DAE_ERR_LEN] = "";
        cr_assert_eq(dae_idx_parse_images(b, cut, &im, err, sizeof err), DAE_ERR_FORMAT);
        cr_assert_gt(strlen(err), 0);
    }
    expect_bad_images(b, 10, "header needs 16");
    free(b);
}

Test(idx, rejects_bad_dimensions) {
    expect_bad_image_file(DAE_IDX_MAGIC_IMAGES, 1, 0, 28, 0, "0x28");
    expect_bad_image_file(DAE_IDX_MAGIC_IMAGES, 1, 28, 0, 0, "28x0");
    expect_bad_image_file(DAE_IDX_MAGIC_IMAGES, 1, 5000, 28, 0, "5000x28");
    expect_bad_image_file(DAE_IDX_MAGIC_IMAGES, 1, 0xffffffffu, 0xffffffffu, 0, "outside 1..4096");
    /* absurd totals are refused before anything is allocated */
    expect_bad_image_file(DAE_IDX_MAGIC_IMAGES, 0x7fffffffu, 4096, 4096, 0, "limit");
    expect_bad_image_file(DAE_IDX_MAGIC_IMAGES, 0xffffffffu, 1, 1, 0, "limit");
    expect_bad_label_file(DAE_IDX_MAGIC_LABELS, 0xffffffffu, 0, "limit");
}

/* ------------------------------------------------------------------------
 * Files
 * ------------------------------------------------------------------------ */

Test(idx, loads_raw_and_gz_files) {
    char *dir = test_tmpdir("idx");
    char *raw = path_join(dir, "img");
    char *gz = path_join(dir, "img.gz");
    size_t len;
    uint8_t *b = make_images(DAE_IDX_MAGIC_IMAGES, 300, 28, 28, 300 * 784, &len);
    write_raw(raw, b, len);
    write_gz(gz, b, len);
    char err[DAE_ERR_LEN] = "";
    const char *paths[2] = {raw, gz};
    for (int k = 0; k < 2; k++) {
        dae_idx_images im;
        cr_assert_eq(dae_idx_load_images(paths[k], &im, err, sizeof err), DAE_OK, "%s", err);
        cr_assert_eq(im.count, 300);
        cr_assert_eq(memcmp(im.pixels, b + 16, 300 * 784), 0);
        dae_idx_images_free(&im);
    }
    free(b);
    free(raw);
    free(gz);
    test_rm_tree(dir);
}

static void append_gz(const char *path, const uint8_t *b, size_t len) {
    gzFile gz = gzopen(path, "ab"); /* a new gzip member after what the file holds */
    cr_assert_not_null(gz, "cannot append to %s", path);
    if (len > 0) cr_assert_eq(gzwrite(gz, b, (unsigned)len), (int)len);
    cr_assert_eq(gzclose(gz), Z_OK);
}

/* A gzip file is read as gzread reads it: member after member (each
 * member's size field then counts only that member), and bytes after a
 * member that do not start another ignored. */
Test(idx, gz_files_of_several_members_and_trailing_bytes) {
    char *dir = test_tmpdir("idx");
    char *members = path_join(dir, "members.gz"), *tail = path_join(dir, "tail.gz"), *extra = path_join(dir, "x.gz");
    size_t len;
    uint8_t *b = make_images(DAE_IDX_MAGIC_IMAGES, 300, 28, 28, 300 * 784, &len);
    write_gz(members, b, 1000);
    append_gz(members, b + 1000, len - 1000 - 10);
    append_gz(members, b + len - 10, 10); /* the last member: 10 bytes of the 235,216 */
    write_gz(tail, b, len);
    FILE *f = fopen(tail, "ab");
    cr_assert_not_null(f);
    fputs("not another member", f);
    cr_assert_eq(fclose(f), 0);
    char err[DAE_ERR_LEN] = "";
    const char *paths[2] = {members, tail};
    for (int k = 0; k < 2; k++) {
        dae_idx_images im;
        cr_assert_eq(dae_idx_load_images(paths[k], &im, err, sizeof err), DAE_OK, "%s: %s", paths[k], err);
        cr_assert_eq(im.count, 300);
        cr_assert_eq(memcmp(im.pixels, b + 16, 300 * 784), 0, "%s", paths[k]);
        dae_idx_images_free(&im);
    }
    /* a member past the announced payload is trailing data */
    write_gz(extra, b, len);
    append_gz(extra, b, 5);
    dae_idx_images im;
    cr_assert_eq(dae_idx_load_images(extra, &im, err, sizeof err), DAE_ERR_FORMAT);
    cr_assert_not_null(strstr(err, "trailing bytes"), "%s", err);
    cr_assert_not_null(strstr(err, "more than 235200"), "%s", err);
    cr_assert_null(im.pixels);
    /* a size field that lies is not believed past 16 bytes a byte of
     * file (fuzz_idx's corpus holds such a file, where -malloc_limit_mb
     * catches a buffer that believes it), and gzip's checks refuse it */
    write_gz(extra, b, len);
    f = fopen(extra, "r+b");
    cr_assert_not_null(f);
    cr_assert_eq(fseek(f, -4, SEEK_END), 0);
    fputs("\xf0\xff\xff\xff", f);
    cr_assert_eq(fclose(f), 0);
    cr_assert_eq(dae_idx_load_images(extra, &im, err, sizeof err), DAE_ERR_FORMAT);
    cr_assert_not_null(strstr(err, "corrupt gzip data"), "%s", err);
    free(b);
    free(members);
    free(tail);
    free(extra);
    test_rm_tree(dir);
}

Test(idx, load_errors_name_the_path) {
    char *dir = test_tmpdir("idx");
    char err[DAE_ERR_LEN] = "";
    dae_idx_images im;
    dae_idx_labels l;

    char *missing = path_join(dir, "missing");
    cr_assert_eq(dae_idx_load_images(missing, &im, err, sizeof err), DAE_ERR_IO);
    cr_assert_not_null(strstr(err, missing), "%s", err);
    cr_assert_eq(dae_idx_load_labels(dir, &l, err, sizeof err), DAE_ERR_IO); /* a directory */
    cr_assert_not_null(strstr(err, dir), "%s", err);

    /* truncated payload inside a valid gzip stream */
    char *p = path_join(dir, "short.gz");
    size_t len;
    uint8_t *b = make_images(DAE_IDX_MAGIC_IMAGES, 60000, 28, 28, 123, &len);
    write_gz(p, b, len);
    free(b);
    cr_assert_eq(dae_idx_load_images(p, &im, err, sizeof err), DAE_ERR_FORMAT);
    cr_assert_not_null(strstr(err, p), "%s", err);
    cr_assert_not_null(strstr(err, "truncated: header says 60000 images of 28x28 (47040000 bytes), file has 123"),
                       "%s", err);
    cr_assert_null(im.pixels);

    /* a gzip bomb: the header asks for 4 bytes, 64 MiB of zeros follow;
     * reading stops one byte past what the header announced */
    char *bomb = path_join(dir, "bomb.gz");
    size_t big = (size_t)64 << 20;
    b = calloc(16 + big, 1);
    cr_assert_not_null(b);
    put_be32(b, DAE_IDX_MAGIC_IMAGES);
    put_be32(b + 4, 1);
    put_be32(b + 8, 2);
    put_be32(b + 12, 2);
    write_gz(bomb, b, 16 + big);
    free(b);
    cr_assert_eq(dae_idx_load_images(bomb, &im, err, sizeof err), DAE_ERR_FORMAT);
    cr_assert_not_null(strstr(err, "trailing bytes"), "%s", err);
    cr_assert_not_null(strstr(err, "more than 4"), "%s", err);

    /* a damaged gzip stream: cut the compressed file in half */
    char *cut = path_join(dir, "cut.gz");
    b = make_labels(DAE_IDX_MAGIC_LABELS, 20000, 20000, &len);
    for (size_t i = 0; i < 20000; i++) b[8 + i] = (uint8_t)((i * 2654435761u) >> 13); /* poorly compressible */
    write_gz(cut, b, len);
    free(b);
    FILE *f = fopen(cut, "rb");
    cr_assert_not_null(f);
    uint8_t gzbytes[65536];
    size_t gzlen = fread(gzbytes, 1, sizeof gzbytes, f);
    fclose(f);
    cr_assert_gt(gzlen, 100);
    write_raw(cut, gzbytes, gzlen / 2);
    dae_status st = dae_idx_load_labels(cut, &l, err, sizeof err);
    cr_assert_eq(st, DAE_ERR_FORMAT, "%s: %s", dae_status_str(st), err);
    cr_assert_not_null(strstr(err, cut), "%s", err);
    cr_assert_null(l.labels);

    free(cut);
    free(bomb);
    free(p);
    free(missing);
    test_rm_tree(dir);
}

/* ------------------------------------------------------------------------
 * Data sets
 * ------------------------------------------------------------------------ */

Test(idx, dataset_raw_preferred_over_gz) {
    char *dir = test_tmpdir("idx");
    write_dataset(dir, "raw", 3, 3, 2, 0);
    /* add .gz files with other counts beside the raw ones: raw must win */
    char *sub = path_join(dir, "raw");
    size_t len;
    uint8_t *b = make_labels(DAE_IDX_MAGIC_LABELS, 9, 9, &len);
    char *p = path_join(sub, "train-labels-idx1-ubyte.gz");
    write_gz(p, b, len);
    free(p);
    free(b);
    free(sub);
    write_dataset(dir, "gz", 4, 4, 1, 1);

    dae_dataset d;
    char err[DAE_ERR_LEN] = "";
    cr_assert_eq(dae_dataset_load(dir, "raw", &d, err, sizeof err), DAE_OK, "%s", err);
    cr_assert_eq(d.train_images.count, 3);
    cr_assert_eq(d.train_labels.count, 3);
    cr_assert_eq(d.test_images.count, 2);
    cr_assert_eq(d.train_images.rows, 2);
    dae_dataset_free(&d);
    cr_assert_eq(dae_dataset_load(dir, "gz", &d, err, sizeof err), DAE_OK, "%s", err);
    cr_assert_eq(d.train_images.count, 4);
    cr_assert_eq(d.test_labels.count, 1);
    dae_dataset_free(&d);
    test_rm_tree(dir);
}

Test(idx, dataset_count_mismatch) {
    char *dir = test_tmpdir("idx");
    write_dataset(dir, "odd", 5, 4, 2, 1);
    dae_dataset d;
    char err[DAE_ERR_LEN] = "";
    cr_assert_eq(dae_dataset_load(dir, "odd", &d, err, sizeof err), DAE_ERR_FORMAT);
    cr_assert_not_null(strstr(err, "5 images"), "%s", err);
    cr_assert_not_null(strstr(err, "4 labels"), "%s", err);
    cr_assert_null(d.train_images.pixels, "partial results must be freed");
    cr_assert_null(d.train_labels.labels);
    test_rm_tree(dir);
}

Test(idx, dataset_missing_directory_names_path) {
    char *dir = test_tmpdir("idx");
    dae_dataset d;
    char err[DAE_ERR_LEN] = "";
    cr_assert_eq(dae_dataset_load(dir, "nope", &d, err, sizeof err), DAE_ERR_IO);
    char *want = path_join(dir, "nope");
    cr_assert_not_null(strstr(err, want), "%s", err);
    free(want);
    cr_assert_eq(dae_dataset_load("tests/no-such-dir", "mnist", &d, err, sizeof err), DAE_ERR_IO);
    cr_assert_not_null(strstr(err, "tests/no-such-dir/mnist"), "%s", err);
    test_rm_tree(dir);
}

Test(idx, dataset_missing_file_says_where_it_looked) {
    char *dir = test_tmpdir("idx");
    write_dataset(dir, "part", 2, 2, 2, 1);
    char *p = path_join(dir, "part/t10k-labels-idx1-ubyte.gz");
    cr_assert_eq(unlink(p), 0);
    free(p);
    dae_dataset d;
    char err[DAE_ERR_LEN] = "";
    cr_assert_eq(dae_dataset_load(dir, "part", &d, err, sizeof err), DAE_ERR_IO);
    cr_assert_not_null(strstr(err, "t10k-labels-idx1-ubyte.gz"), "%s", err);
    cr_assert_not_null(strstr(err, "looked for"), "%s", err);
    cr_assert_null(d.train_images.pixels);
    test_rm_tree(dir);
}

Test(idx, dataset_rejects_bad_names) {
    const char *bad[] = {"../etc", "..", ".", "", "a/b", "mnist\n", "x y",
                         "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa" /* 65 */};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        dae_dataset d;
        char err[DAE_ERR_LEN] = "";
        cr_assert_eq(dae_dataset_load("tests/fixtures", bad[i], &d, err, sizeof err), DAE_ERR_INVALID,
                     "name '%s' accepted", bad[i]);
        cr_assert_gt(strlen(err), 0);
    }
    dae_dataset d;
    char err[DAE_ERR_LEN] = "";
    cr_assert_eq(dae_dataset_load("tests/fixtures", NULL, &d, err, sizeof err), DAE_ERR_INVALID);
    cr_assert_eq(dae_dataset_load(NULL, "mnist", &d, err, sizeof err), DAE_ERR_INVALID);
}

Test(idx, free_is_safe_on_zeroed_structs) {
    dae_dataset d = {0};
    dae_dataset_free(&d);
    dae_dataset_free(NULL);
    dae_idx_images_free(NULL);
    dae_idx_labels_free(NULL);
}
