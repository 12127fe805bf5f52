/* sha256.c - SHA-256 hex digests through Nettle (sha256.h). */
#include "sha256.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <unistd.h>

#include <nettle/sha2.h>

/* The digest ctx holds, as hex. */
static void digest_hex(struct sha256_ctx *ctx, char hex[65]) {
    static const char digits[] = "0123456789abcdef";
    uint8_t d[SHA256_DIGEST_SIZE];
    sha256_digest(ctx, sizeof d, d);
    for (int i = 0; i < SHA256_DIGEST_SIZE; i++) {
        hex[2 * i] = digits[d[i] >> 4];
        hex[2 * i + 1] = digits[d[i] & 15];
    }
    hex[64] = '\0';
}

void srv_sha256_hex(const void *data, size_t len, char hex[65]) {
    struct sha256_ctx ctx;
    sha256_init(&ctx);
    sha256_update(&ctx, len, data);
    digest_hex(&ctx, hex);
}

/* Adds the first size bytes of the file at path to ctx. 0 or -1. */
static int add_file(struct sha256_ctx *ctx, const char *path, size_t size) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    uint8_t piece[1 << 16];
    while (size > 0) {
        ssize_t n = read(fd, piece, size < sizeof piece ? size : sizeof piece);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
            int e = n == 0 ? EIO : errno;
            close(fd);
            errno = e;
            return -1;
        }
        sha256_update(ctx, (size_t)n, piece);
        size -= (size_t)n;
    }
    close(fd);
    return 0;
}

int srv_sha256_files_hex(const char *const *paths, const size_t *sizes, int n, char hex[65]) {
    struct sha256_ctx ctx;
    sha256_init(&ctx);
    for (int i = 0; i < n; i++)
        if (add_file(&ctx, paths[i], sizes[i]) != 0) return -1;
    digest_hex(&ctx, hex);
    return 0;
}
