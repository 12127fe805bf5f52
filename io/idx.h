/* idx.h - reader for the IDX files of MNIST and Fashion-MNIST, raw or
 * gzip-compressed, and for a whole data set of the four standard files.
 * What they are read into (dae_idx_images, dae_idx_labels, dae_dataset)
 * are core types (core/dataset.h): dae_train takes a data set in memory.
 *
 * An IDX file is a big-endian header (magic 0x00000803 and count, rows,
 * cols for images; magic 0x00000801 and count for labels) followed by one
 * unsigned byte per pixel or label. Every size is checked against the
 * header before anything large is allocated, and gzip input is never
 * inflated beyond the size the header announces, so a gzip bomb cannot
 * exhaust memory. */
#ifndef DAE_IDX_H
#define DAE_IDX_H

#include <stddef.h>
#include <stdint.h>

#include "dae_status.h"
#include "dataset.h"

/* Magic numbers of the two IDX files used here (unsigned bytes, 3 or 1
 * dimensions). */
#define DAE_IDX_MAGIC_IMAGES 0x00000803u
#define DAE_IDX_MAGIC_LABELS 0x00000801u

/* Largest image side accepted. */
#define DAE_IDX_MAX_SIDE 4096

/* Largest payload (pixels or labels) accepted, in bytes: 1 GiB, over ten
 * times EMNIST's largest file. Anything bigger is refused as absurd. */
#define DAE_IDX_MAX_PAYLOAD ((uint64_t)1 << 30)

/* Parses an IDX image file held in memory. On success *out owns a copy of
 * the pixels (release with dae_idx_images_free()); on failure *out is
 * zeroed and err says what is wrong. Returns DAE_ERR_FORMAT for malformed
 * input, DAE_ERR_NOMEM when allocation fails. */
dae_status dae_idx_parse_images(const uint8_t *buf, size_t len, dae_idx_images *out, char *err, size_t errlen);

/* Parses an IDX label file held in memory; as dae_idx_parse_images(). */
dae_status dae_idx_parse_labels(const uint8_t *buf, size_t len, dae_idx_labels *out, char *err, size_t errlen);

/* Reads an IDX image file, raw or gzip (detected from the content, not the
 * name). Messages name the path. On failure *out is zeroed. Returns
 * DAE_ERR_IO when the file cannot be opened or read, DAE_ERR_FORMAT for a
 * corrupt gzip stream or a bad IDX layout, DAE_ERR_NOMEM. */
dae_status dae_idx_load_images(const char *path, dae_idx_images *out, char *err, size_t errlen);

/* Reads an IDX label file, raw or gzip; as dae_idx_load_images(). */
dae_status dae_idx_load_labels(const char *path, dae_idx_labels *out, char *err, size_t errlen);

/* Loads the data set NAME under data_dir into *out (release with
 * dae_dataset_free()): the four standard files under DATA_DIR/NAME/,
 * train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte
 * and t10k-labels-idx1-ubyte, each either raw or with ".gz" (whichever
 * exists; raw first). NAME must be dae_name_valid (dataset.h). Checks that each split has as many labels as images
 * and that train and test images have the same size. On failure *out is
 * zeroed. Returns DAE_ERR_INVALID for a bad name, DAE_ERR_IO when the
 * directory or a file is missing (the message says where it looked),
 * DAE_ERR_FORMAT for files that do not fit together. */
dae_status dae_dataset_load(const char *data_dir, const char *name, dae_dataset *out, char *err, size_t errlen);

/* What dae_dataset_load would hold for a data set, read from the image
 * files' headers alone (cheap: nothing is inflated beyond them). */
typedef struct {
    int train_count, test_count; /* images of each split */
    int rows, cols;              /* of the training images */
    size_t bytes;                /* pixels and labels of both splits, as loaded */
} dae_dataset_info;

/* Fills *out for the data set NAME under data_dir (same names and files
 * as dae_dataset_load). Returns DAE_ERR_INVALID for a bad name, DAE_ERR_IO
 * for a missing file, DAE_ERR_FORMAT for a bad header; *out is then
 * zeroed. */
dae_status dae_dataset_info_read(const char *data_dir, const char *name, dae_dataset_info *out, char *err,
                                 size_t errlen);

#endif
