/* dae_image.h - an image in memory (8-bit interleaved samples) and the
 * conversions between it and the float planes the network works on.
 *
 * The engine denoises and adds noise to images it is handed; reading and
 * writing them (PNG, JPEG, GIF, BMP, PNM, TGA, files) is io/image.h's work,
 * so libdae links no image codec.
 *
 * Nothing here keeps state between calls; every function may run on any
 * thread at once. */
#ifndef DAE_DAE_IMAGE_H
#define DAE_DAE_IMAGE_H

#include <stddef.h>
#include <stdint.h>

#include "dae_status.h"
#include "noise.h"

/* Largest side any image may have (decoders and dae_image_alloc alike). */
#define DAE_IMAGE_MAX_SIDE 1000000

/* An image: height rows of width pixels of channels samples each,
 * interleaved (RGBARGBA...), top row first. channels is 1 (gray), 2 (gray +
 * alpha), 3 (RGB) or 4 (RGBA); the alpha sample is always the last one. */
typedef struct {
    int width, height, channels;
    int source_16bit;   /* the file had 16-bit samples, scaled to 8 bits here */
    const char *format; /* static name of the source format ("PNG", "JPEG", ...);
                           NULL for images built in memory */
    uint8_t *pixels;    /* owned: width * height * channels bytes */
} dae_image;

/* How many of channels (1 to 4) samples per pixel are colour, which the
 * engine denoises and adds noise to: all but alpha (gray + alpha and RGBA
 * have one). */
static inline int dae_image_colours(int channels) {
    return channels == 2 || channels == 4 ? channels - 1 : channels;
}

/* Allocates a zeroed width x height image of channels (1 to 4) samples per
 * pixel into *img, which the caller releases with dae_image_free(). Fails
 * with DAE_ERR_INVALID for a size outside 1..DAE_IMAGE_MAX_SIDE or a bad
 * channel count, DAE_ERR_NOMEM when out of memory; *img is then zeroed. */
dae_status dae_image_alloc(dae_image *img, int width, int height, int channels,
                           char *err, size_t errlen);

/* Releases the pixels and zeroes *img; safe on a zeroed or freed image and
 * on NULL. */
void dae_image_free(dae_image *img);

/* Adds noise to every colour sample of img (not to alpha), in place: each
 * colour channel c becomes a float plane in [0, 1], gets
 * dae_noise_apply(spec, ..., seed, stream c), and is stored back clipped to
 * [0, 1] and rounded to 8 bits. Same image, spec and seed give the same
 * bytes. Fails only with DAE_ERR_NOMEM (img is then unchanged). */
dae_status dae_image_add_noise(dae_image *img, const dae_noise_spec *spec, uint64_t seed,
                               char *err, size_t errlen);

/* Copies colour or alpha channel c of img into plane (width * height
 * floats, row-major) as sample / 255. */
void dae_image_to_plane(const dae_image *img, int c, float *plane);

/* Stores plane (width * height floats) into channel c of img: each value
 * clipped to [0, 1] (NaN becomes 0), times 255, rounded to nearest. */
void dae_image_from_plane(dae_image *img, int c, const float *plane);

#endif
