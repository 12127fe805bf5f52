/* sha256.h - SHA-256 (FIPS 180-4) of a buffer, used for model versions:
 * a model's version is the start of the hash of its weights file, so the
 * same weights always carry the same version. */
#ifndef SRV_SHA256_H
#define SRV_SHA256_H

#include <stddef.h>
#include <stdint.h>

/* Writes the 32-byte digest of data (len bytes) into digest. */
void srv_sha256(const void *data, size_t len, uint8_t digest[32]);

/* Writes the digest as 64 lower-case hex digits and a NUL into hex. */
void srv_sha256_hex(const void *data, size_t len, char hex[65]);

#endif
