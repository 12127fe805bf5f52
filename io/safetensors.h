/* safetensors.h - reader and writer for the safetensors tensor file format.
 *
 * A safetensors file is an 8-byte little-endian u64 N, then N bytes of JSON
 * header, then the data buffer. The header maps tensor names to
 * {"dtype", "shape", "data_offsets"} (offsets relative to the data buffer)
 * and may hold a "__metadata__" map of strings. The reader checks everything
 * the reference Rust `safetensors` crate checks (header size, UTF-8, JSON,
 * contiguous offsets, sizes that match shapes, no trailing bytes) and only
 * loads F32 tensors; the writer emits files the crate and the Python package
 * read, F32 only, replacing the target file atomically (fileio.h).
 *
 * The parsed result, dae_st_file, is a core type (core/tensors.h, with
 * dae_st_free, dae_st_find and dae_st_meta), and the parser lives here:
 * the engine builds models from named tensors and needs nothing more,
 * while the parser is a format's byte-level checks on untrusted input
 * (fuzzed as such), like the image and IDX readers beside it. So core
 * knows no file format, and a model from another source (an upload, a
 * PyTorch state_dict sent over the wire) needs only a dae_st_file. */
#ifndef DAE_SAFETENSORS_H
#define DAE_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "dae_status.h"
#include "tensors.h"

/* Largest JSON header accepted, as in the reference crate (MAX_HEADER_SIZE). */
#define DAE_ST_MAX_HEADER_SIZE 100000000u

/* Parses a whole file image already in memory (used by the fuzzer too).
 * On success fills *out, which the caller releases with dae_st_free(); the
 * result does not point into buf. On failure *out is left zeroed, nothing
 * is leaked, and err says what is wrong and where (tensor name, offsets).
 * Returns DAE_ERR_FORMAT for malformed input, DAE_ERR_NOMEM when an
 * allocation fails. */
dae_status dae_st_parse(const uint8_t *buf, size_t len, dae_st_file *out, char *err, size_t errlen);

/* Parses as dae_st_parse() does, with messages that begin with name
 * (the path the bytes came from) instead of "safetensors". */
dae_status dae_st_parse_named(const uint8_t *buf, size_t len, const char *name, dae_st_file *out, char *err,
                              size_t errlen);

/* Reads the file at path and parses it as dae_st_parse() does. Messages
 * name the path. Returns DAE_ERR_IO when the file cannot be opened or read. */
dae_status dae_st_load(const char *path, dae_st_file *out, char *err, size_t errlen);

/* Writes tensors (in the order given, offsets contiguous) and metadata
 * atomically (dae_file_write_atomic_with: a temporary file beside path,
 * fsync, rename over path, fsync the directory). On failure nothing is
 * left at path or beside it, with one exception: if the final fsync of
 * the directory fails, the rename has already replaced path with the
 * complete new file, which stays (deleting it would lose both the old and
 * the new contents) and the error says so.
 * Each tensor needs a valid UTF-8 name unique in the file (not
 * "__metadata__"), 0..DAE_ST_MAX_DIMS non-negative dimensions whose product
 * is numel, and data (may be NULL only when numel is 0). Metadata keys must
 * be unique; keys and values valid UTF-8. Returns DAE_ERR_INVALID for bad
 * arguments, DAE_ERR_IO when writing fails, DAE_ERR_NOMEM. */
dae_status dae_st_save(const char *path, const dae_st_tensor *tensors, int n_tensors,
                       const char *const *meta_keys, const char *const *meta_values, int n_meta,
                       char *err, size_t errlen);

#endif
