/* metrics.h - image quality metrics for float images with data range 1
 * (pixels in [0, 1]): mean squared error, PSNR and SSIM, plus an
 * accumulator that averages them over many images. Everything is computed
 * in double; nothing here keeps state between calls. */
#ifndef DAE_METRICS_H
#define DAE_METRICS_H

#include <stddef.h>

/* PSNR reported for identical images, and the most ever reported. */
#define DAE_METRICS_PSNR_MAX 100.0

/* SSIM window: side, Gaussian sigma, and the constants of Wang et al. */
#define DAE_METRICS_SSIM_WIN 11
#define DAE_METRICS_SSIM_SIGMA 1.5
#define DAE_METRICS_SSIM_K1 0.01
#define DAE_METRICS_SSIM_K2 0.03

/* Returns the mean of (a[i] - b[i])^2 over i < n, accumulated in double;
 * NAN when n == 0. */
double dae_metrics_mse(const float *a, const float *b, size_t n);

/* Returns the PSNR in dB, 10*log10(1/mse), for data range 1. The value is
 * capped at DAE_METRICS_PSNR_MAX (100 dB): identical images (mse == 0)
 * give exactly 100, and so does any mse below 1e-10, so that the result
 * never falls as images get closer. NAN when n == 0. */
double dae_metrics_psnr(const float *a, const float *b, size_t n);

/* Returns the mean SSIM of two single-channel h x w images (row-major), as
 * in Wang et al. 2004 and their ssim.m: 11x11 Gaussian window of sigma 1.5
 * normalised to sum 1, K1 = 0.01, K2 = 0.03, L = 1, 'valid' filtering (the
 * map is (h-10) x (w-10)), result = the mean of the SSIM map. Uses a
 * separable filter. Returns NAN when h or w is below 11, or when its
 * O(h*w) scratch cannot be allocated. */
double dae_metrics_ssim(const float *a, const float *b, int h, int w);

/* Number of doubles of scratch dae_metrics_ssim_scratch needs for an
 * h x w image (0 when h or w is below 11). */
size_t dae_metrics_ssim_scratch_len(int h, int w);

/* Same as dae_metrics_ssim but works in scratch, caller-owned, of at least
 * dae_metrics_ssim_scratch_len(h, w) doubles; allocates nothing, so a
 * caller scoring many images can reuse one buffer. NAN when h or w < 11. */
double dae_metrics_ssim_scratch(const float *a, const float *b, int h, int w,
                                double *scratch);

/* Same result as dae_metrics_ssim, computed the obvious way: the full
 * 11x11 window summed at every output pixel. Slow; it is the test oracle
 * for the separable version. NAN when h or w is below 11. */
double dae_metrics_ssim_naive(const float *a, const float *b, int h, int w);

/* ---- Averages over many images ---------------------------------------- */

/* Sums of per-image metrics; start from a zeroed struct
 * (dae_quality q = {0};). */
typedef struct {
    double sum_mse, sum_psnr, sum_ssim;
    long count;
} dae_quality;

/* Adds one single-channel h x w image pair (clean reference, test image)
 * to q: its MSE, PSNR and SSIM. An SSIM of NAN (image smaller than 11x11,
 * or no memory for scratch) makes the mean SSIM NAN. */
void dae_quality_add(dae_quality *q, const float *clean, const float *test,
                     int h, int w);

/* Adds the sums and count of from into into, e.g. to combine the
 * accumulators of several threads. */
void dae_quality_merge(dae_quality *into, const dae_quality *from);

/* Mean per-image MSE, PSNR and SSIM of the images added; NAN when none. */
double dae_quality_mse(const dae_quality *q);
double dae_quality_psnr(const dae_quality *q);
double dae_quality_ssim(const dae_quality *q);

#endif
