/* assets.c - server/web/ compiled in with the assembler's .incbin (the
 * Makefile rebuilds this object when a file there changes). A new file is
 * one ASSET line and one row of ASSETS. */
#include "assets.h"

#include <string.h>

/* Emits the bytes of server/web/FILE as the read-only symbol SYM, and
 * SYM_end just after them. The path is relative to the directory make
 * runs in (the repository's root). */
#define ASSET(sym, file)                                                                                              \
    __asm__(".section .rodata\n"                                                                                      \
            ".balign 16\n" #sym ":\n"                                                                                 \
            ".incbin \"server/web/" file "\"\n" #sym "_end:\n"                                                        \
            ".byte 0\n"                                                                                               \
            ".previous\n");                                                                                           \
    extern const unsigned char sym[], sym##_end[]

ASSET(asset_index_html, "index.html");
ASSET(asset_app_js, "app.js");
ASSET(asset_style_css, "style.css");
ASSET(asset_favicon_svg, "favicon.svg");
ASSET(asset_openapi_json, "openapi.json");

typedef struct {
    const char *name, *content_type;
    const unsigned char *begin, *end;
} asset_row;

static const asset_row ASSETS[] = {
    {"index.html", "text/html; charset=utf-8", asset_index_html, asset_index_html_end},
    {"app.js", "text/javascript; charset=utf-8", asset_app_js, asset_app_js_end},
    {"style.css", "text/css; charset=utf-8", asset_style_css, asset_style_css_end},
    {"favicon.svg", "image/svg+xml", asset_favicon_svg, asset_favicon_svg_end},
    {"openapi.json", "application/json", asset_openapi_json, asset_openapi_json_end},
};
enum { N_ASSETS = sizeof ASSETS / sizeof ASSETS[0] };

int srv_asset_find(const char *name, srv_asset *out) {
    for (int i = 0; i < N_ASSETS; i++) {
        if (strcmp(name, ASSETS[i].name) != 0) continue;
        *out = (srv_asset){ASSETS[i].name, ASSETS[i].content_type, ASSETS[i].begin,
                           (size_t)(ASSETS[i].end - ASSETS[i].begin)};
        return 0;
    }
    return -1;
}
