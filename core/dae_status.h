/* dae_status.h - status codes and error-message helpers shared by every
 * libdae module. Functions that can fail return a dae_status and, when the
 * caller passes a buffer, describe the failure there in one sentence that
 * names the file or field at fault. */
#ifndef DAE_STATUS_H
#define DAE_STATUS_H

#include <stddef.h>

/* Size callers should give error buffers; longer messages are truncated. */
#define DAE_ERR_LEN 512

typedef enum {
    DAE_OK = 0,
    DAE_ERR_IO,        /* a file could not be opened, read or written */
    DAE_ERR_FORMAT,    /* bytes that do not follow the expected format */
    DAE_ERR_INVALID,   /* an argument, flag or spec outside what is allowed */
    DAE_ERR_NOMEM,     /* an allocation failed */
    DAE_ERR_CANCELLED, /* the caller's cancel flag was raised */
    /* What the server's modules report besides; the HTTP edge alone turns
     * a status into an HTTP status and error code (its table per route). */
    DAE_ERR_NOT_FOUND, /* no model, job or data set of that name */
    DAE_ERR_EXISTS,    /* the name is taken and replacing was not asked */
    DAE_ERR_IN_USE,    /* the thing is busy with something that cannot be undone: the active model, a
                          job past its commit point */
    DAE_ERR_CONFLICT,  /* the thing is in a state that does not allow it: a job that has ended */
    DAE_ERR_BUSY,      /* a queue or a limit is full now; the same request may succeed later */
    DAE_ERR_STOPPING,  /* the process is shutting down */
    DAE_ERR_TOO_LARGE, /* the work would exceed a size or memory limit */
    DAE_ERR_NO_SPACE,  /* the file system being written is full (ENOSPC, or the user's quota: EDQUOT) */
} dae_status;

/* Returns a static, lower-case name for a status ("ok", "io error", ...). */
const char *dae_status_str(dae_status status);

/* Formats a message into err (errlen bytes) when err is not NULL, and
 * returns status so callers can write `return dae_fail(err, n, S, ...)`. */
dae_status dae_fail(char *err, size_t errlen, dae_status status,
                    const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

#endif
