/* img_gif.c - the first frame of a GIF through giflib (record by record,
 * never DGifSlurp, so later frames cost nothing). The image is the
 * logical screen: it starts as transparent black everywhere, the first
 * frame is drawn into it (interlaced or not, with its transparent index
 * left transparent), and it comes back RGB when every pixel is opaque,
 * RGBA otherwise. A frame outside the screen, a pixel index outside the
 * colour table, and a file that ends before the frame's data does (or
 * right after it, without a next record or trailer) are errors. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gif_lib.h>

#include "img_codec.h"

typedef struct {
    const uint8_t *buf;
    size_t len, pos;
} gif_source;

/* giflib's read callback: copies up to n bytes; a short count makes
 * giflib fail with "read failed". */
static int gif_read(GifFileType *gif, GifByteType *dst, int n) {
    gif_source *s = gif->UserData;
    size_t k = n < 0 ? 0 : (size_t)n;
    if (k > s->len - s->pos) k = s->len - s->pos;
    memcpy(dst, s->buf + s->pos, k);
    s->pos += k;
    return (int)k;
}

/* Formats giflib's error code as a message. */
static dae_status gif_fail(int code, const char *when, char *err, size_t errlen) {
    const char *why = GifErrorString(code);
    if (code == D_GIF_ERR_READ_FAILED) why = "file is truncated";
    return dae_fail(err, errlen, DAE_ERR_FORMAT, "GIF: %s%s%s", why != NULL ? why : "cannot decode",
                    when[0] ? " " : "", when);
}

/* Opens buf with giflib (reading the screen descriptor and global colour
 * table); NULL and err set on failure. */
static GifFileType *gif_open(gif_source *src, char *err, size_t errlen) {
    int code = 0;
    GifFileType *gif = DGifOpen(src, gif_read, &code);
    if (gif == NULL) gif_fail(code, "in the header", err, errlen);
    return gif;
}

dae_status img_gif_probe(const uint8_t *buf, size_t len, int *width, int *height, char *err, size_t errlen) {
    gif_source src = {buf, len, 0};
    GifFileType *gif = gif_open(&src, err, errlen);
    if (gif == NULL) return DAE_ERR_FORMAT;
    *width = gif->SWidth, *height = gif->SHeight;
    DGifCloseFile(gif, NULL);
    if (*width < 1 || *height < 1)
        return dae_fail(err, errlen, DAE_ERR_FORMAT, "GIF: image size %dx%d is empty", *width, *height);
    return DAE_OK;
}

/* Reads the records up to and including the first image into the RGBA
 * canvas px (the screen, already transparent black). */
static dae_status gif_first_frame(GifFileType *gif, uint8_t *px, char *err, size_t errlen) {
    int transparent = NO_TRANSPARENT_COLOR;
    for (;;) {
        GifRecordType type;
        if (DGifGetRecordType(gif, &type) == GIF_ERROR) return gif_fail(gif->Error, "before the first image", err, errlen);
        if (type == TERMINATE_RECORD_TYPE)
            return dae_fail(err, errlen, DAE_ERR_FORMAT, "GIF: the file has no image");
        if (type == EXTENSION_RECORD_TYPE) {
            int code;
            GifByteType *ext;
            if (DGifGetExtension(gif, &code, &ext) == GIF_ERROR) return gif_fail(gif->Error, "in an extension", err, errlen);
            if (code == GRAPHICS_EXT_FUNC_CODE && ext != NULL && ext[0] >= 4) {
                GraphicsControlBlock gcb;
                if (DGifExtensionToGCB(ext[0], ext + 1, &gcb) == GIF_OK) transparent = gcb.TransparentColor;
            }
            while (ext != NULL)
                if (DGifGetExtensionNext(gif, &ext) == GIF_ERROR) return gif_fail(gif->Error, "in an extension", err, errlen);
            continue;
        }
        if (type != IMAGE_DESC_RECORD_TYPE) continue;
        if (DGifGetImageDesc(gif) == GIF_ERROR) return gif_fail(gif->Error, "in the image descriptor", err, errlen);
        break;
    }
    GifImageDesc *d = &gif->Image;
    if (d->Width < 1 || d->Height < 1 || d->Left < 0 || d->Top < 0 || d->Left > gif->SWidth - d->Width ||
        d->Top > gif->SHeight - d->Height)
        return dae_fail(err, errlen, DAE_ERR_FORMAT, "GIF: the first image (%dx%d at %d,%d) lies outside the %dx%d screen",
                        d->Width, d->Height, d->Left, d->Top, gif->SWidth, gif->SHeight);
    const ColorMapObject *map = d->ColorMap != NULL ? d->ColorMap : gif->SColorMap;
    if (map == NULL || map->Colors == NULL || map->ColorCount < 1)
        return dae_fail(err, errlen, DAE_ERR_FORMAT, "GIF: the first image has no colour table");
    GifPixelType *line = malloc((size_t)d->Width);
    if (line == NULL) return dae_fail(err, errlen, DAE_ERR_NOMEM, "GIF: out of memory");
    /* Interlaced rows come in four passes: every 8th from 0, every 8th
     * from 4, every 4th from 2, every 2nd from 1. */
    static const int start[4] = {0, 4, 2, 1}, step[4] = {8, 8, 4, 2};
    int passes = d->Interlace ? 4 : 1;
    size_t stride = (size_t)gif->SWidth * 4;
    for (int p = 0; p < passes; p++) {
        for (int y = d->Interlace ? start[p] : 0; y < d->Height; y += d->Interlace ? step[p] : 1) {
            if (DGifGetLine(gif, line, d->Width) == GIF_ERROR) {
                free(line);
                return gif_fail(gif->Error, "in the image data", err, errlen);
            }
            uint8_t *o = px + (size_t)(d->Top + y) * stride + (size_t)d->Left * 4;
            for (int x = 0; x < d->Width; x++, o += 4) {
                int i = line[x];
                if (i == transparent) {
                    memset(o, 0, 4);
                    continue;
                }
                if (i >= map->ColorCount) {
                    free(line);
                    return dae_fail(err, errlen, DAE_ERR_FORMAT,
                                    "GIF: pixel index %d is outside the %d-colour table", i, map->ColorCount);
                }
                o[0] = map->Colors[i].Red, o[1] = map->Colors[i].Green, o[2] = map->Colors[i].Blue, o[3] = 255;
            }
        }
    }
    free(line);
    /* A complete GIF goes on with another record or its trailer. */
    GifRecordType next;
    if (DGifGetRecordType(gif, &next) == GIF_ERROR)
        return gif_fail(gif->Error, "after the first image", err, errlen);
    return DAE_OK;
}

dae_status img_gif_decode(const uint8_t *buf, size_t len, size_t max_pixels, dae_image *out,
                          char *err, size_t errlen) {
    gif_source src = {buf, len, 0};
    GifFileType *gif = gif_open(&src, err, errlen);
    if (gif == NULL) return DAE_ERR_FORMAT;
    int w = gif->SWidth, h = gif->SHeight;
    dae_status st = img_check_size(w, h, max_pixels, err, errlen);
    uint8_t *px = NULL;
    if (st == DAE_OK) {
        px = img_pixels_alloc((size_t)w * (size_t)h * 4);
        if (px == NULL) st = dae_fail(err, errlen, DAE_ERR_NOMEM, "GIF: out of memory for a %dx%d image", w, h);
    }
    if (st == DAE_OK) {
        memset(px, 0, (size_t)w * (size_t)h * 4); /* the background: transparent black */
        st = gif_first_frame(gif, px, err, errlen);
    }
    DGifCloseFile(gif, NULL);
    if (st != DAE_OK) {
        free(px);
        return st;
    }
    size_t pixels = (size_t)w * (size_t)h;
    int opaque = 1;
    for (size_t i = 0; i < pixels && opaque; i++) opaque = px[i * 4 + 3] == 255;
    int channels = 4;
    if (opaque) { /* RGBA -> RGB in place, front to back */
        for (size_t i = 0; i < pixels; i++) memmove(px + i * 3, px + i * 4, 3);
        uint8_t *shrunk = realloc(px, pixels * 3);
        if (shrunk != NULL) px = shrunk;
        channels = 3;
    }
    out->width = w, out->height = h, out->channels = channels;
    out->format = "GIF";
    out->pixels = px;
    return DAE_OK;
}
