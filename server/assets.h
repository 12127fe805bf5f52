/* assets.h - the files dae-server serves itself (its web page and its
 * OpenAPI description), compiled into the binary from server/web/: the
 * server needs no files at run time and no network at build time. */
#ifndef SRV_ASSETS_H
#define SRV_ASSETS_H

#include <stddef.h>

typedef struct {
    const char *name;         /* the file's name in server/web/, e.g. "app.js" */
    const char *content_type; /* its media type */
    const unsigned char *data;
    size_t len;
} srv_asset;

/* Fills *out with the compiled-in file called name; returns 0, or -1 when
 * there is none. */
int srv_asset_find(const char *name, srv_asset *out);

#endif
