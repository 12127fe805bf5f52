/* plot.c - an SVG line chart of the training loss, written by hand:
 * axes with round-number ticks, a grid, the per-step loss and the
 * per-epoch mean loss. */
#include "plot.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

enum { WIDTH = 800, HEIGHT = 450, LEFT = 76, RIGHT = 24, TOP = 48, BOTTOM = 58 };

/* A round step (1, 2 or 5 times a power of ten) near range / ticks. */
static double nice_step(double range, int ticks) {
    if (!(range > 0)) return 1.0;
    double raw = range / ticks, mag = pow(10.0, floor(log10(raw))), f = raw / mag;
    return (f < 1.5 ? 1.0 : f < 3.5 ? 2.0 : f < 7.5 ? 5.0 : 10.0) * mag;
}

/* Writes text with XML's special characters escaped. */
static void put_escaped(FILE *f, const char *text) {
    for (const char *c = text; *c; c++) {
        switch (*c) {
        case '&': fputs("&amp;", f); break;
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*c, f);
        }
    }
}

char *cli_loss_svg(const char *title, const long *step_x, const float *step_loss, size_t n_steps,
                   const long *epoch_x, const double *epoch_loss, size_t n_epochs) {
    char *doc = NULL;
    size_t doc_len = 0;
    FILE *f = open_memstream(&doc, &doc_len);
    if (f == NULL) return NULL;

    /* Data ranges. */
    double x0 = n_steps ? (double)step_x[0] : 0.0, x1 = n_steps ? (double)step_x[n_steps - 1] : 1.0;
    if (n_epochs && (double)epoch_x[n_epochs - 1] > x1) x1 = (double)epoch_x[n_epochs - 1];
    if (x1 <= x0) x1 = x0 + 1.0;
    double top = 0.0;
    for (size_t i = 0; i < n_steps; i++)
        if (isfinite(step_loss[i]) && step_loss[i] > top) top = step_loss[i];
    for (size_t i = 0; i < n_epochs; i++)
        if (isfinite(epoch_loss[i]) && epoch_loss[i] > top) top = epoch_loss[i];
    if (!(top > 0)) top = 1.0;
    double ystep = nice_step(top, 5), y1 = ceil(top / ystep) * ystep;
    double xstep = nice_step(x1 - x0, 6);
    if (xstep < 1.0) xstep = 1.0;
    const double pw = WIDTH - LEFT - RIGHT, ph = HEIGHT - TOP - BOTTOM;
#define PX(x) (LEFT + ((x) - x0) / (x1 - x0) * pw)
#define PY(y) (TOP + ph - (y) / y1 * ph)

    fprintf(f,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
            "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" font-size=\"12\">\n"
            "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
            WIDTH, HEIGHT, WIDTH, HEIGHT);
    fprintf(f, "<text x=\"%d\" y=\"28\" text-anchor=\"middle\" font-size=\"16\">", WIDTH / 2);
    put_escaped(f, title);
    fputs("</text>\n", f);

    /* Grid, ticks and tick labels. */
    fputs("<g stroke=\"#e0e0e0\" stroke-width=\"1\">\n", f);
    for (double y = 0.0; y <= y1 + ystep * 1e-9; y += ystep)
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\"/>\n", LEFT, PY(y), WIDTH - RIGHT, PY(y));
    double first_x = ceil(x0 / xstep) * xstep;
    for (double x = first_x; x <= x1 + 1e-9; x += xstep)
        fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\"/>\n", PX(x), TOP, PX(x), HEIGHT - BOTTOM);
    fputs("</g>\n<g fill=\"#333\">\n", f);
    for (double y = 0.0; y <= y1 + ystep * 1e-9; y += ystep)
        fprintf(f, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%.3g</text>\n", LEFT - 6, PY(y) + 4, y);
    for (double x = first_x; x <= x1 + 1e-9; x += xstep)
        fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%.0f</text>\n", PX(x), HEIGHT - BOTTOM + 16, x);
    fprintf(f,
            "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\" font-size=\"13\">optimiser step</text>\n"
            "<text transform=\"translate(18 %.1f) rotate(-90)\" text-anchor=\"middle\" font-size=\"13\">"
            "loss (mean squared error)</text>\n</g>\n",
            LEFT + pw / 2, HEIGHT - 16, TOP + ph / 2);
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" stroke=\"#333\"/>\n", LEFT, TOP,
            pw, ph);

    /* The data. */
    if (n_steps) {
        fputs("<polyline fill=\"none\" stroke=\"#4c78a8\" stroke-width=\"1\" stroke-opacity=\"0.7\" points=\"", f);
        for (size_t i = 0; i < n_steps; i++)
            if (isfinite(step_loss[i])) fprintf(f, "%.1f,%.1f ", PX((double)step_x[i]), PY((double)step_loss[i]));
        fputs("\"/>\n", f);
    }
    if (n_epochs) {
        fputs("<polyline fill=\"none\" stroke=\"#e45756\" stroke-width=\"2.5\" points=\"", f);
        for (size_t i = 0; i < n_epochs; i++)
            if (isfinite(epoch_loss[i])) fprintf(f, "%.1f,%.1f ", PX((double)epoch_x[i]), PY(epoch_loss[i]));
        fputs("\"/>\n<g fill=\"#e45756\">\n", f);
        for (size_t i = 0; i < n_epochs; i++)
            if (isfinite(epoch_loss[i]))
                fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\"/>\n", PX((double)epoch_x[i]), PY(epoch_loss[i]));
        fputs("</g>\n", f);
    }

    /* Legend, top right inside the plot. */
    int lx = WIDTH - RIGHT - 212, ly = TOP + 12;
    fprintf(f,
            "<rect x=\"%d\" y=\"%d\" width=\"202\" height=\"44\" fill=\"white\" fill-opacity=\"0.85\" "
            "stroke=\"#ccc\"/>\n"
            "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#4c78a8\" stroke-width=\"1.5\"/>\n"
            "<text x=\"%d\" y=\"%d\">loss of each step</text>\n"
            "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" stroke=\"#e45756\" stroke-width=\"2.5\"/>\n"
            "<circle cx=\"%d\" cy=\"%d\" r=\"4\" fill=\"#e45756\"/>\n"
            "<text x=\"%d\" y=\"%d\">mean loss of each epoch</text>\n</svg>\n",
            lx, ly - 6, lx + 8, ly + 8, lx + 32, ly + 8, lx + 40, ly + 12, lx + 8, ly + 28, lx + 32, ly + 28, lx + 20,
            ly + 28, lx + 40, ly + 32);
#undef PX
#undef PY
    if (fclose(f) != 0) {
        free(doc);
        return NULL;
    }
    return doc;
}
