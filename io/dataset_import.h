/* dataset_import.h - turning a user's clean images into a dae data set
 * (core/dataset.h), and saving a data set under a data directory: what
 * `dae train --dataset PATH` and the server's PUT /datasets/{name} share.
 *
 * The source is a tar archive (raw or with any compression libarchive
 * reads: gzip, bzip2, xz, zstd, ...), a zip archive, or a directory. Only
 * tar and zip are read: libarchive's other formats include mtree, whose
 * entries may name files on this machine.
 *
 * It holds either
 * - the four IDX files of a split (train-images-idx3-ubyte,
 *   train-labels-idx1-ubyte, t10k-images-idx3-ubyte,
 *   t10k-labels-idx1-ubyte, each raw or gzip, found by their base name
 *   anywhere in the tree), taken as they are: their images must be
 *   rows x cols; or
 * - images of any format io/image.h decodes, found by their extension
 *   (.png .jpg .jpeg .gif .bmp .pnm .pgm .ppm .tga, any case) anywhere in
 *   the tree. Each becomes gray (ITU-R BT.601 luma of R, G and B; gray
 *   stays; alpha is dropped; 16-bit samples are scaled to 8 bits by the
 *   decoder). An image of exactly rows x cols is one example; a larger one
 *   is cut into rows x cols patches at the tile positions the denoiser
 *   uses (core/tile.h: stride rows/2 and cols/2, origins spread evenly so
 *   the last patch is flush with the edge); a smaller one is skipped and
 *   counted in the report. Labels are all 0 (denoising needs none).
 *   Images under a folder named "test" - the first path component, after
 *   one top folder that holds everything, if there is one - are the test
 *   split. Without such a folder the test split is every n-th image in
 *   the byte order of the member paths, n = round(1 / test_fraction): the
 *   image at index i goes to test when i % n == n - 1. Whole images go to
 *   one split, so no test patch overlaps a training patch.
 *
 * Files and folders whose name starts with '.' and anything under
 * __MACOSX/ (what macOS adds to zip files) are skipped, as are files of
 * other extensions; all are counted in the report.
 *
 * Every limit is checked before the memory it guards is used: the member
 * count as each member header arrives (an archive of a million empty
 * members is refused at the first one over the limit), declared member
 * sizes before reading, actual uncompressed bytes in 64 KiB chunks (a
 * compression bomb stops at the limit, for the archive's own compression
 * and for a gzip'd IDX member alike), image pixels from the image header
 * before decoding. Refused at once, naming the member: absolute paths and
 * ".." components (zip-slip), symbolic and hard links, devices, FIFOs and
 * sockets.
 *
 * Statuses, for an HTTP edge to map: DAE_ERR_TOO_LARGE for any size limit
 * (413), DAE_ERR_FORMAT for bytes that are not a readable archive, image
 * or IDX file (422), DAE_ERR_INVALID for content dae refuses (unsafe
 * members, too few images, IDX images of another size, both IDX files
 * and images; 422), DAE_ERR_IO when the path cannot be read, DAE_ERR_NOMEM.
 *
 * Nothing here keeps state between calls; every function may run on any
 * thread at once. */
#ifndef DAE_DATASET_IMPORT_H
#define DAE_DATASET_IMPORT_H

#include <stddef.h>

#include "dae_status.h"
#include "dataset.h"

/* What an import may take. dae_import_limits_default gives the values in
 * brackets. */
typedef struct {
    size_t max_archive_bytes;   /* the archive file or buffer itself [256 MiB] */
    int max_members;            /* entries, folders included [20000] */
    size_t max_image_pixels;    /* one image, from its header [16 Mi] */
    size_t max_total_pixels;    /* all source images, and all patches made [256 Mi] */
    size_t max_member_bytes;    /* one member, uncompressed [64 MiB] */
    size_t max_total_bytes;     /* all members, uncompressed [1 GiB] */
    int min_images;             /* usable images (IDX: train + test) [16] */
    double test_fraction;       /* held out when there is no test/ folder, 0.01 to 0.5 [0.1] */
} dae_import_limits;

/* Fills *lim with the defaults above. */
void dae_import_limits_default(dae_import_limits *lim);

/* What an import found and made. */
typedef struct {
    const char *source;    /* static: "idx" or "images" */
    int members;           /* entries read, folders included */
    int images;            /* images used (IDX: train + test images) */
    int patches;           /* examples made: train_count + test_count */
    int train_count, test_count;
    int rows, cols;
    int test_every;        /* n of the every-n-th rule, 0 when it was not used */
    char split[160];       /* how the test split was chosen, a sentence fragment */
    int skipped_small;     /* images smaller than rows x cols */
    int skipped_other;     /* files that are not images (or hidden, or under __MACOSX/) */
} dae_import_report;

/* Reads the data set in path (an archive file or a directory, see above)
 * for a model of rows x cols input into *out (release with
 * dae_dataset_free). lim NULL means the defaults; report (may be NULL)
 * is filled on success. Messages start with path and name the member at
 * fault. On failure *out is zeroed. */
dae_status dae_dataset_import(const char *path, const dae_import_limits *lim, int rows, int cols,
                              dae_dataset *out, dae_import_report *report, char *err, size_t errlen);

/* The same for an archive held in memory (len bytes of data, borrowed);
 * label names it in messages ("upload"). */
dae_status dae_dataset_import_memory(const void *data, size_t len, const char *label, const dae_import_limits *lim,
                                     int rows, int cols, dae_dataset *out, dae_import_report *report, char *err,
                                     size_t errlen);

/* 1 when the --dataset value s is a path to import rather than the name
 * of a data set under data_dir: it holds a '/', or DATA_DIR/s is not a
 * directory while s exists as a file or directory. */
int dae_import_is_path(const char *s, const char *data_dir);

/* Saves d as the data set NAME under data_dir: the four raw IDX files
 * (dae_dataset_load reads them) are written and fsynced in a new
 * directory DATA_DIR/.tmp.<pid>.NAME.XXXXXX (dae_file_temp_pid finds the
 * pid of a crashed writer), which is then renamed to DATA_DIR/NAME. When
 * NAME exists: DAE_ERR_EXISTS unless replace, in which case the new
 * directory and the old one are exchanged in one rename (readers see the
 * old data set or the new one, never a mix) and the old one is removed.
 * On failure nothing is left in data_dir. DAE_ERR_INVALID for a name
 * dae_name_valid refuses, DAE_ERR_IO for a failed write, DAE_ERR_EXISTS
 * as above (also when NAME is not a directory). */
dae_status dae_dataset_save_dir(const char *data_dir, const char *name, const dae_dataset *d, int replace,
                                char *err, size_t errlen);

#endif
