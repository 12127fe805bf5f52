/* dae_status.c - status names and the error-message helper. */
#include "dae_status.h"

#include <stdarg.h>
#include <stdio.h>

const char *dae_status_str(dae_status status) {
    switch (status) {
    case DAE_OK: return "ok";
    case DAE_ERR_IO: return "io error";
    case DAE_ERR_FORMAT: return "format error";
    case DAE_ERR_INVALID: return "invalid argument";
    case DAE_ERR_NOMEM: return "out of memory";
    case DAE_ERR_CANCELLED: return "cancelled";
    case DAE_ERR_NOT_FOUND: return "not found";
    case DAE_ERR_EXISTS: return "already exists";
    case DAE_ERR_IN_USE: return "in use";
    case DAE_ERR_CONFLICT: return "conflict";
    case DAE_ERR_BUSY: return "busy";
    case DAE_ERR_STOPPING: return "stopping";
    case DAE_ERR_TOO_LARGE: return "too large";
    case DAE_ERR_NO_SPACE: return "no space left";
    }
    return "unknown status";
}

dae_status dae_fail(char *err, size_t errlen, dae_status status,
                    const char *fmt, ...) {
    if (err != NULL && errlen > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return status;
}
