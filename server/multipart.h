/* multipart.h - finding one field of a multipart/form-data body (RFC 7578
 * over RFC 2046), as `curl -F image=@noisy.png` sends it.
 *
 * The whole body is in memory (the server caps its size first); the
 * parser walks it once, allocates nothing and returns the field's content
 * as a pointer into the body. It takes any bytes: malformed input gives
 * an error, never a read outside the buffer. */
#ifndef SRV_MULTIPART_H
#define SRV_MULTIPART_H

#include <stddef.h>
#include <stdint.h>

#include "dae_status.h"

/* Longest boundary RFC 2046 allows. */
#define SRV_MP_BOUNDARY_MAX 70

/* 1 when the Content-Type header value content_type (may be NULL) is
 * multipart/form-data, whatever its parameters. */
int srv_multipart_is_form(const char *content_type);

/* Copies the boundary parameter of content_type into boundary (room for
 * SRV_MP_BOUNDARY_MAX + 1 bytes), unquoting a quoted one. Returns 0, or -1
 * when there is none or it is empty or too long. */
int srv_multipart_boundary(const char *content_type, char *boundary);

/* Finds the part whose Content-Disposition is form-data with
 * name="field" in body (len bytes) with the boundary of content_type, and
 * sets *data / *data_len to its content (pointing into body). Returns
 * DAE_OK; DAE_ERR_FORMAT when there is no usable boundary or the body
 * does not follow it; DAE_ERR_NOT_FOUND when it is well-formed but no
 * part has that name; DAE_ERR_CONFLICT when more than one has; errors
 * with a sentence in err. */
dae_status srv_multipart_find(const char *content_type, const uint8_t *body, size_t len, const char *field,
                              const uint8_t **data, size_t *data_len, char *err, size_t errlen);

#endif
