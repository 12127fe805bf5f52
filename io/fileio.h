/* fileio.h - whole-file reads with a size limit, and atomic writes.
 *
 * An atomic write goes to a temporary file beside the target,
 * "<path>.tmp.<pid>.XXXXXX" (the pid lets a later process recognise and
 * remove what a crashed one left), is flushed with fsync, renamed over the
 * target and the directory is flushed too: a reader sees the old file or
 * the new one, never half of one, even after a crash. A target that is a
 * device or a FIFO (/dev/null, /dev/stdout) is written as it is: a
 * rename would replace the node. */
#ifndef DAE_FILEIO_H
#define DAE_FILEIO_H

#include <stddef.h>
#include <stdint.h>

#include "dae_status.h"

/* Reads the regular file at path, at most max_bytes, into a new buffer
 * (*data, with a NUL after the *len bytes; the caller frees it). A FIFO
 * (bash's <(...)) is read to its end, within max_bytes; opening one never
 * waits for a writer. Messages name the path. */
dae_status dae_file_read(const char *path, size_t max_bytes, uint8_t **data, size_t *len,
                         char *err, size_t errlen);

/* Reads fd to its end, at most max_bytes, into a new buffer as
 * dae_file_read does; messages name it name ("standard input"). */
dae_status dae_fd_read_all(int fd, const char *name, size_t max_bytes, uint8_t **data, size_t *len, char *err,
                           size_t errlen);

/* Writes the content through writer(fd, ctx), which returns 0 or -1 with
 * errno set, atomically to path (mode 0644). On failure nothing is left
 * beside path and path is untouched; the status is DAE_ERR_NO_SPACE when
 * the file system is full (dae_write_errno_status), else DAE_ERR_IO. */
typedef int (*dae_file_writer)(int fd, void *ctx);
dae_status dae_file_write_atomic_with(const char *path, dae_file_writer writer, void *ctx,
                                      char *err, size_t errlen);

/* Writes len bytes of data atomically to path. */
dae_status dae_file_write_atomic(const char *path, const void *data, size_t len, char *err, size_t errlen);

/* Writes len bytes of data into a new temporary file beside path
 * (path.tmp.PID.XXXXXX, mode 0644), flushed to disk, for the caller to
 * rename into place (and fsync the directory) after checking it: its name
 * in *tmp (malloc'd). On failure nothing is left, *tmp is NULL, and the
 * status is as dae_file_write_atomic_with's. */
dae_status dae_file_write_temp(const char *path, const void *data, size_t len, char **tmp, char *err,
                               size_t errlen);

/* The status of a write that failed with errno e: DAE_ERR_NO_SPACE for a
 * full file system or quota (ENOSPC, EDQUOT), else DAE_ERR_IO. */
dae_status dae_write_errno_status(int e);

/* Writes all of len bytes to fd, retrying short writes and EINTR. Returns
 * 0, or -1 with errno set (EIO when write makes no progress). */
int dae_write_all(int fd, const void *data, size_t len);

/* The pid in a temporary name made by the atomic writes ("...tmp.<pid>.X"),
 * or 0 when name is not one. */
long dae_file_temp_pid(const char *name);

/* Removes dir and everything below it, removing links rather than
 * following them. 0, or -1 with errno set. */
int dae_dir_remove_tree(const char *dir);

/* fsyncs the directory dir, so that renames in it are durable; a file
 * system that cannot sync a directory (EINVAL) counts as done. 0, or -1
 * with errno set. */
int dae_dir_fsync(const char *dir);

#endif
