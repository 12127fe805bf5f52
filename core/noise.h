/* noise.h - the noise models a denoising autoencoder learns to remove:
 * additive Gaussian, salt-and-pepper and speckle, applied to float images
 * whose pixels lie in [0, 1] (any layout; NCHW in practice).
 *
 * A noise model is a small value (dae_noise_spec) written on the command
 * line as text, e.g. "gaussian:0.5:clip:quantize", or with a range of
 * levels for blind training, "gaussian:0-0.8:clip:quantize", where each
 * image gets its own level drawn uniformly from the range. Applying it is a pure
 * function of (spec, clean pixels, seed, stream): there is no hidden state,
 * so training can derive one stream per (epoch, image) and get the same
 * noisy image on any thread, in any order. */
#ifndef DAE_NOISE_H
#define DAE_NOISE_H

#include <stddef.h>
#include <stdint.h>

#include "dae_status.h"

/* Size callers should give dae_noise_format; every valid spec fits. */
#define DAE_NOISE_TEXT_LEN 64

/* Largest sigma accepted for gaussian and speckle noise. */
#define DAE_NOISE_SIGMA_MAX 10.0f

typedef enum {
    DAE_NOISE_GAUSSIAN,    /* x + sigma * N(0,1) */
    DAE_NOISE_SALT_PEPPER, /* with probability amount, x becomes 0 or 1 */
    DAE_NOISE_SPECKLE,     /* x + x * sigma * N(0,1), as scikit-image */
} dae_noise_kind;

/* The level is fixed unless level_max > level, in which case it is the range
 * [level, level_max]. The range's top comes last and any level_max <= level
 * means "fixed", so a zero-initialised or hand-built {kind, level, clip,
 * quantize} spec keeps meaning one fixed level; dae_noise_parse stores
 * level_max = 0 for a fixed level (also for "LO-HI" with LO == HI). */
typedef struct {
    dae_noise_kind kind;
    float level;     /* gaussian/speckle: sigma in [0, 10];
                        salt-pepper: amount, the fraction of pixels replaced, in [0, 1];
                        with a range, its bottom */
    int clip;        /* clip the result to [0, 1] */
    int quantize;    /* round to 8 bits, round(x*255)/255, after clipping;
                        quantize implies clip whether or not clip is set */
    float level_max; /* top of the level range when > level, within the same
                        limits as level; otherwise ignored (a fixed level) */
} dae_noise_spec;

/* Returns the static text name of a kind ("gaussian", "salt-pepper",
 * "speckle"), or "unknown" for a value outside the enum. */
const char *dae_noise_kind_str(dae_noise_kind kind);

/* Returns 1 when spec draws its level per image from [level, level_max]
 * (level_max > level), 0 when the level is fixed. */
int dae_noise_is_range(const dae_noise_spec *spec);

/* Parses a noise spec of the form KIND:LEVEL[:OPTION]... where KIND is
 * gaussian, salt-pepper or speckle, LEVEL is a plain decimal number (sigma
 * in [0, 10], or the salt-pepper amount in [0, 1]) or a range LO-HI of two
 * such numbers with LO <= HI, and each OPTION is clip or quantize, each at
 * most once, in either order. Examples: "gaussian:0.5",
 * "gaussian:0.5:clip:quantize", "gaussian:0-0.8:clip:quantize",
 * "salt-pepper:0.2", "speckle:0.3:quantize". The flags are stored as written (":quantize"
 * alone leaves clip 0; dae_noise_apply clips anyway). On success fills *out
 * and returns DAE_OK; otherwise returns DAE_ERR_INVALID, leaves *out
 * untouched and writes to err a sentence naming the bad part and what is
 * allowed there. */
dae_status dae_noise_parse(const char *text, dae_noise_spec *out,
                           char *err, size_t errlen);

/* Writes the canonical text of spec into buf (len bytes, always
 * NUL-terminated when len > 0, truncated like snprintf): the shortest
 * decimal level that parses back to the same float (for a range, LO-HI,
 * each the shortest; a fixed level is written alone), then ":clip" and
 * ":quantize" when set. dae_noise_parse of the result gives back spec
 * exactly. DAE_NOISE_TEXT_LEN bytes are always enough. */
void dae_noise_format(const dae_noise_spec *spec, char *buf, size_t len);

/* Sets noisy[i] = noise(clean[i]) for i < n, drawing from a dae_rng seeded
 * with (seed, stream): the same spec, input, seed, stream and n give
 * bit-identical output on any thread. With a range, the first draw picks
 * the level for all n pixels, uniformly in [level, level_max]; a fixed
 * level makes no such draw. clean and noisy may be the same
 * array (in-place). spec must be valid (as dae_noise_parse makes it); a
 * kind outside the enum adds no noise. Cannot fail; allocates nothing. */
void dae_noise_apply(const dae_noise_spec *spec, const float *clean,
                     float *noisy, size_t n, uint64_t seed, uint64_t stream);

/* An 8-bit image's n pixels px as floats in [0, 1] (clean) and with
 * dae_noise_apply's noise from (seed, stream) (noisy): the input and the
 * target of training, evaluation and `dae eval --save-noisy` alike. */
void dae_noise_pixels(const dae_noise_spec *spec, const uint8_t *px, float *clean, float *noisy, size_t n,
                      uint64_t seed, uint64_t stream);

#endif
