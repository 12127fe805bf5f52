/* sha256.h - SHA-256 (FIPS 180-4) hex digests, by Nettle: of a buffer (a
 * model's version is the start of the hash of its weights file, so the
 * same weights always carry the same version), and of files read in
 * pieces (a data set's four files). Nettle's runs the CPU's SHA
 * instructions where it has them: 1.4 GB/s on the README's machine, 5-6
 * times the portable loop this replaced. */
#ifndef SRV_SHA256_H
#define SRV_SHA256_H

#include <stddef.h>

/* Writes the digest of data (len bytes) as 64 lower-case hex digits and a
 * NUL into hex. */
void srv_sha256_hex(const void *data, size_t len, char hex[65]);

/* The digest of the first sizes[i] bytes of each file paths[i] (i < n),
 * concatenated, read in pieces, into hex as srv_sha256_hex writes it.
 * Returns 0, or -1 with errno set (EIO: a file is shorter than its
 * size). */
int srv_sha256_files_hex(const char *const *paths, const size_t *sizes, int n, char hex[65]);

#endif
