/* dae_image.c - image buffers and their float planes, and seeded noise on
 * images. */
#include "dae_image.h"

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ basics */

dae_status dae_image_alloc(dae_image *img, int width, int height, int channels,
                           char *err, size_t errlen) {
    memset(img, 0, sizeof *img);
    if (width < 1 || height < 1 || width > DAE_IMAGE_MAX_SIDE || height > DAE_IMAGE_MAX_SIDE)
        return dae_fail(err, errlen, DAE_ERR_INVALID, "image size %dx%d is outside 1..%d", width, height,
                        DAE_IMAGE_MAX_SIDE);
    if (channels < 1 || channels > 4)
        return dae_fail(err, errlen, DAE_ERR_INVALID, "an image has 1 to 4 channels, not %d", channels);
    img->pixels = calloc((size_t)width * (size_t)height, (size_t)channels);
    if (img->pixels == NULL)
        return dae_fail(err, errlen, DAE_ERR_NOMEM, "out of memory for a %dx%d image", width, height);
    img->width = width, img->height = height, img->channels = channels;
    return DAE_OK;
}

void dae_image_free(dae_image *img) {
    if (img == NULL) return;
    free(img->pixels);
    memset(img, 0, sizeof *img);
}

/* ------------------------------------------------------------ planes and noise */

void dae_image_to_plane(const dae_image *img, int c, float *plane) {
    size_t pixels = (size_t)img->width * (size_t)img->height;
    const uint8_t *px = img->pixels + c;
    for (size_t i = 0; i < pixels; i++) plane[i] = px[i * (size_t)img->channels] * (1.0f / 255.0f);
}

void dae_image_from_plane(dae_image *img, int c, const float *plane) {
    size_t pixels = (size_t)img->width * (size_t)img->height;
    uint8_t *px = img->pixels + c;
    for (size_t i = 0; i < pixels; i++) {
        float v = plane[i] > 0.0f ? (plane[i] < 1.0f ? plane[i] : 1.0f) : 0.0f; /* NaN -> 0 */
        px[i * (size_t)img->channels] = (uint8_t)(v * 255.0f + 0.5f);
    }
}

dae_status dae_image_add_noise(dae_image *img, const dae_noise_spec *spec, uint64_t seed,
                               char *err, size_t errlen) {
    size_t pixels = (size_t)img->width * (size_t)img->height;
    int colours = dae_image_colours(img->channels);
    float *plane = malloc(sizeof(float) * (pixels ? pixels : 1));
    if (plane == NULL) return dae_fail(err, errlen, DAE_ERR_NOMEM, "out of memory for noise");
    for (int c = 0; c < colours; c++) {
        dae_image_to_plane(img, c, plane);
        dae_noise_apply(spec, plane, plane, pixels, seed, (uint64_t)c);
        dae_image_from_plane(img, c, plane);
    }
    free(plane);
    return DAE_OK;
}
