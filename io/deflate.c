/* deflate.c - the calling thread's libdeflate objects, and gzip with them. */
#include "deflate.h"

#include <pthread.h>
#include <stdlib.h>

#include <libdeflate.h>

typedef struct {
    struct libdeflate_decompressor *inflater;
    struct libdeflate_compressor *gzipper;
} thread_deflaters;

static pthread_key_t deflaters_key;
static int deflaters_keyed;
static pthread_once_t deflaters_once = PTHREAD_ONCE_INIT;

static void deflaters_free(void *p) {
    thread_deflaters *d = p;
    libdeflate_free_decompressor(d->inflater);
    libdeflate_free_compressor(d->gzipper);
    free(d);
}

static void deflaters_key_make(void) { deflaters_keyed = pthread_key_create(&deflaters_key, deflaters_free) == 0; }

/* The calling thread's set, made empty at its first call; NULL without
 * memory or a key. */
static thread_deflaters *deflaters(void) {
    (void)pthread_once(&deflaters_once, deflaters_key_make);
    if (!deflaters_keyed) return NULL;
    thread_deflaters *d = pthread_getspecific(deflaters_key);
    if (d == NULL && (d = calloc(1, sizeof *d)) != NULL && pthread_setspecific(deflaters_key, d) != 0) {
        free(d);
        d = NULL;
    }
    return d;
}

struct libdeflate_decompressor *dae_thread_inflater(void) {
    thread_deflaters *d = deflaters();
    if (d != NULL && d->inflater == NULL) d->inflater = libdeflate_alloc_decompressor();
    return d != NULL ? d->inflater : NULL;
}

static struct libdeflate_compressor *thread_gzipper(void) {
    thread_deflaters *d = deflaters();
    if (d != NULL && d->gzipper == NULL) d->gzipper = libdeflate_alloc_compressor(6);
    return d != NULL ? d->gzipper : NULL;
}

uint8_t *dae_gzip(const void *data, size_t len, size_t *out_len) {
    *out_len = 0;
    struct libdeflate_compressor *c = thread_gzipper();
    if (c == NULL) return NULL;
    size_t cap = libdeflate_gzip_compress_bound(c, len);
    uint8_t *out = malloc(cap);
    if (out == NULL) return NULL;
    size_t n = libdeflate_gzip_compress(c, data, len, out, cap);
    if (n == 0) {
        free(out);
        return NULL;
    }
    uint8_t *fitted = realloc(out, n); /* the bound is about the data's size */
    *out_len = n;
    return fitted != NULL ? fitted : out;
}
