/* metrics.c - MSE, PSNR and SSIM (separable and naive) for float images of
 * data range 1, and the dae_quality accumulator. */
#include "metrics.h"

#include <math.h>
#include <stdlib.h>

#define WIN DAE_METRICS_SSIM_WIN
#define HALF (WIN / 2)

/* ---- MSE and PSNR ----------------------------------------------------- */

double dae_metrics_mse(const float *a, const float *b, size_t n) {
    if (n == 0) return NAN;
    double sum = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        sum += d * d;
    }
    return sum / (double)n;
}

/* Converts an MSE to PSNR (data range 1), capped at DAE_METRICS_PSNR_MAX. */
static double psnr_from_mse(double mse) {
    if (isnan(mse)) return mse;
    if (mse <= 0.0) return DAE_METRICS_PSNR_MAX;
    double p = -10.0 * log10(mse);
    return p < DAE_METRICS_PSNR_MAX ? p : DAE_METRICS_PSNR_MAX;
}

double dae_metrics_psnr(const float *a, const float *b, size_t n) {
    return psnr_from_mse(dae_metrics_mse(a, b, n));
}

/* ---- SSIM ------------------------------------------------------------- */

/* Fills g with the 1-D Gaussian of sigma 1.5 over -5..5, normalised to sum
 * 1. Its outer product with itself is ssim.m's normalised 11x11 window. */
static void gauss_1d(double g[WIN]) {
    const double s2 = 2.0 * DAE_METRICS_SSIM_SIGMA * DAE_METRICS_SSIM_SIGMA;
    double sum = 0.0;
    for (int k = 0; k < WIN; k++) {
        double x = k - HALF;
        g[k] = exp(-x * x / s2);
        sum += g[k];
    }
    for (int k = 0; k < WIN; k++) g[k] /= sum;
}

/* SSIM at one pixel from the window's local means, E[a^2], E[b^2] and
 * E[ab] (data range 1), as in ssim.m. */
static double ssim_pixel(double mu1, double mu2, double e11, double e22,
                         double e12) {
    const double c1 = (DAE_METRICS_SSIM_K1) * (DAE_METRICS_SSIM_K1);
    const double c2 = (DAE_METRICS_SSIM_K2) * (DAE_METRICS_SSIM_K2);
    double mu1_sq = mu1 * mu1, mu2_sq = mu2 * mu2, mu1_mu2 = mu1 * mu2;
    double sigma1_sq = e11 - mu1_sq, sigma2_sq = e22 - mu2_sq;
    double sigma12 = e12 - mu1_mu2;
    return ((2.0 * mu1_mu2 + c1) * (2.0 * sigma12 + c2)) /
           ((mu1_sq + mu2_sq + c1) * (sigma1_sq + sigma2_sq + c2));
}

size_t dae_metrics_ssim_scratch_len(int h, int w) {
    if (h < WIN || w < WIN) return 0;
    size_t ow = (size_t)(w - WIN + 1);
    /* five h x ow planes from the row pass, five ow-long row sums */
    return 5 * (size_t)h * ow + 5 * ow;
}

/* Separable SSIM: a row pass filters a, b, a*a, b*b and a*b along rows
 * into five (h, w-10) planes of the caller's scratch, then a column pass
 * filters those down to one output row at a time and sums the SSIM map.
 * Allocates nothing; NAN when the image is smaller than the window. */
double dae_metrics_ssim_scratch(const float *a, const float *b, int h, int w,
                                double *scratch) {
    if (h < WIN || w < WIN) return NAN;
    const size_t oh = (size_t)(h - WIN + 1), ow = (size_t)(w - WIN + 1);
    const size_t plane = (size_t)h * ow;
    /* Row pass output: each (h, ow), the window's 1-D weighted sums along
     * rows of a, b, a*a, b*b and a*b. */
    double *ha = scratch, *hb = ha + plane, *haa = hb + plane,
           *hbb = haa + plane, *hab = hbb + plane;
    /* Column pass accumulators for one output row: each (ow). */
    double *va = hab + plane, *vb = va + ow, *vaa = vb + ow, *vbb = vaa + ow,
           *vab = vbb + ow;
    double g[WIN];
    gauss_1d(g);

    for (size_t y = 0; y < (size_t)h; y++) {
        const float *ra = a + y * (size_t)w, *rb = b + y * (size_t)w;
        for (size_t x = 0; x < ow; x++) {
            double sa = 0, sb = 0, saa = 0, sbb = 0, sab = 0;
            for (int k = 0; k < WIN; k++) {
                double pa = ra[x + k], pb = rb[x + k], gk = g[k];
                sa += gk * pa;
                sb += gk * pb;
                saa += gk * (pa * pa);
                sbb += gk * (pb * pb);
                sab += gk * (pa * pb);
            }
            size_t o = y * ow + x;
            ha[o] = sa, hb[o] = sb, haa[o] = saa, hbb[o] = sbb, hab[o] = sab;
        }
    }

    double total = 0.0;
    for (size_t y = 0; y < oh; y++) {
        for (size_t x = 0; x < ow; x++)
            va[x] = vb[x] = vaa[x] = vbb[x] = vab[x] = 0.0;
        for (int k = 0; k < WIN; k++) {
            const double gk = g[k];
            const size_t r = (y + (size_t)k) * ow;
            for (size_t x = 0; x < ow; x++) {
                va[x] += gk * ha[r + x];
                vb[x] += gk * hb[r + x];
                vaa[x] += gk * haa[r + x];
                vbb[x] += gk * hbb[r + x];
                vab[x] += gk * hab[r + x];
            }
        }
        for (size_t x = 0; x < ow; x++)
            total += ssim_pixel(va[x], vb[x], vaa[x], vbb[x], vab[x]);
    }
    return total / (double)(oh * ow);
}

/* Allocates the scratch, runs the separable SSIM and frees it; NAN on
 * allocation failure or a too-small image. */
double dae_metrics_ssim(const float *a, const float *b, int h, int w) {
    size_t len = dae_metrics_ssim_scratch_len(h, w);
    if (len == 0) return NAN;
    double *scratch = malloc(len * sizeof *scratch);
    if (scratch == NULL) return NAN;
    double s = dae_metrics_ssim_scratch(a, b, h, w, scratch);
    free(scratch);
    return s;
}

double dae_metrics_ssim_naive(const float *a, const float *b, int h, int w) {
    if (h < WIN || w < WIN) return NAN;
    /* The 2-D window exactly as fspecial('gaussian', 11, 1.5) builds it. */
    double win[WIN][WIN], sum = 0.0;
    const double s2 = 2.0 * DAE_METRICS_SSIM_SIGMA * DAE_METRICS_SSIM_SIGMA;
    for (int i = 0; i < WIN; i++)
        for (int j = 0; j < WIN; j++) {
            double dy = i - HALF, dx = j - HALF;
            win[i][j] = exp(-(dx * dx + dy * dy) / s2);
            sum += win[i][j];
        }
    for (int i = 0; i < WIN; i++)
        for (int j = 0; j < WIN; j++) win[i][j] /= sum;

    double total = 0.0;
    for (int y = 0; y + WIN <= h; y++)
        for (int x = 0; x + WIN <= w; x++) {
            double mu1 = 0, mu2 = 0, e11 = 0, e22 = 0, e12 = 0;
            for (int i = 0; i < WIN; i++)
                for (int j = 0; j < WIN; j++) {
                    size_t at = (size_t)(y + i) * (size_t)w + (size_t)(x + j);
                    double pa = a[at], pb = b[at], wt = win[i][j];
                    mu1 += wt * pa;
                    mu2 += wt * pb;
                    e11 += wt * pa * pa;
                    e22 += wt * pb * pb;
                    e12 += wt * pa * pb;
                }
            total += ssim_pixel(mu1, mu2, e11, e22, e12);
        }
    return total / ((double)(h - WIN + 1) * (double)(w - WIN + 1));
}

/* ---- Averages over many images ---------------------------------------- */

void dae_quality_add(dae_quality *q, const float *clean, const float *test,
                     int h, int w) {
    size_t n = (size_t)(h > 0 ? h : 0) * (size_t)(w > 0 ? w : 0);
    double mse = dae_metrics_mse(clean, test, n);
    q->sum_mse += mse;
    q->sum_psnr += psnr_from_mse(mse);
    q->sum_ssim += dae_metrics_ssim(clean, test, h, w);
    q->count++;
}

void dae_quality_merge(dae_quality *into, const dae_quality *from) {
    into->sum_mse += from->sum_mse;
    into->sum_psnr += from->sum_psnr;
    into->sum_ssim += from->sum_ssim;
    into->count += from->count;
}

double dae_quality_mse(const dae_quality *q) {
    return q->count > 0 ? q->sum_mse / (double)q->count : NAN;
}

double dae_quality_psnr(const dae_quality *q) {
    return q->count > 0 ? q->sum_psnr / (double)q->count : NAN;
}

double dae_quality_ssim(const dae_quality *q) {
    return q->count > 0 ? q->sum_ssim / (double)q->count : NAN;
}
