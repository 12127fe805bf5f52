/* plot.c - SVG line charts written by hand: axes with round-number ticks,
 * a grid, lines with optional markers and dashes, and a legend. The loss
 * chart of `dae train` and of dae-server's training jobs is one such
 * chart. */
#include "plot.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { WIDTH = 800, HEIGHT = 450, LEFT = 76, RIGHT = 24, TOP = 48, BOTTOM = 58 };

/* Colours of lines that do not choose their own (Tableau 10). */
static const char *const PALETTE[] = {"#4c78a8", "#e45756", "#54a24b", "#f58518", "#b279a2",
                                      "#72b7b2", "#eeca3b", "#9d755d", "#ff9da6", "#bab0ac"};

/* A round step (1, 2 or 5 times a power of ten) near range / ticks. */
static double nice_step(double range, int ticks) {
    if (!(range > 0)) return 1.0;
    double raw = range / ticks, mag = pow(10.0, floor(log10(raw))), f = raw / mag;
    return (f < 1.5 ? 1.0 : f < 3.5 ? 2.0 : f < 7.5 ? 5.0 : 10.0) * mag;
}

/* The decimals a tick label needs to show multiples of step exactly. */
static int step_decimals(double step) {
    int d = (int)ceil(-log10(step) - 1e-9);
    return d < 0 ? 0 : d > 9 ? 9 : d;
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

static int finite_point(const dae_plot_line *l, size_t i) { return isfinite(l->x[i]) && isfinite(l->y[i]); }

/* Writes the stroke attributes of line l, whose colour is color. */
static void put_stroke(FILE *f, const dae_plot_line *l, const char *color) {
    fprintf(f, "fill=\"none\" stroke=\"%s\" stroke-width=\"%g\"", color, l->width);
    if (l->opacity > 0 && l->opacity < 1) fprintf(f, " stroke-opacity=\"%g\"", l->opacity);
    if (l->dashed) fputs(" stroke-dasharray=\"6 4\"", f);
}

char *dae_lines_svg(const dae_plot_axes *axes, const dae_plot_line *lines, size_t n_lines) {
    char *doc = NULL;
    size_t doc_len = 0;
    FILE *f = open_memstream(&doc, &doc_len);
    if (f == NULL) return NULL;

    /* Data ranges. */
    double x0 = axes->x_from_zero ? 0.0 : INFINITY, x1 = -INFINITY;
    double lo = axes->y_from_zero ? 0.0 : INFINITY, hi = -INFINITY;
    for (size_t k = 0; k < n_lines; k++)
        for (size_t i = 0; i < lines[k].n; i++) {
            if (!finite_point(&lines[k], i)) continue;
            x0 = fmin(x0, lines[k].x[i]), x1 = fmax(x1, lines[k].x[i]);
            lo = fmin(lo, lines[k].y[i]), hi = fmax(hi, lines[k].y[i]);
        }
    if (!isfinite(x0)) x0 = 0.0;
    if (!(x1 > x0)) x1 = x0 + 1.0;
    if (!isfinite(lo)) lo = 0.0;
    if (!(hi > lo)) hi = lo + 1.0;
    double ystep = nice_step(hi - lo, 5), y0 = floor(lo / ystep) * ystep, y1 = ceil(hi / ystep) * ystep;
    double xstep = nice_step(x1 - x0, 6);
    if (axes->x_integer && xstep < 1.0) xstep = 1.0;
    int xdec = step_decimals(xstep), ydec = step_decimals(ystep);
    const double pw = WIDTH - LEFT - RIGHT, ph = HEIGHT - TOP - BOTTOM;
#define PX(x) (LEFT + ((x) - x0) / (x1 - x0) * pw)
#define PY(y) (TOP + ph - ((y) - y0) / (y1 - y0) * ph)

    fprintf(f,
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
            "font-family=\"DejaVu Sans, Helvetica, Arial, sans-serif\" font-size=\"12\">\n"
            "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
            WIDTH, HEIGHT, WIDTH, HEIGHT);
    fprintf(f, "<text x=\"%d\" y=\"28\" text-anchor=\"middle\" font-size=\"16\">", WIDTH / 2);
    put_escaped(f, axes->title);
    fputs("</text>\n", f);

    /* Grid, ticks and tick labels. */
    double first_x = ceil(x0 / xstep - 1e-9) * xstep;
    fputs("<g stroke=\"#e0e0e0\" stroke-width=\"1\">\n", f);
    for (double y = y0; y <= y1 + ystep * 1e-9; y += ystep)
        fprintf(f, "<line x1=\"%d\" y1=\"%.1f\" x2=\"%d\" y2=\"%.1f\"/>\n", LEFT, PY(y), WIDTH - RIGHT, PY(y));
    for (double x = first_x; x <= x1 + xstep * 1e-9; x += xstep)
        fprintf(f, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\"/>\n", PX(x), TOP, PX(x), HEIGHT - BOTTOM);
    fputs("</g>\n<g fill=\"#333\">\n", f);
    for (double y = y0; y <= y1 + ystep * 1e-9; y += ystep)
        fprintf(f, "<text x=\"%d\" y=\"%.1f\" text-anchor=\"end\">%.*f</text>\n", LEFT - 6, PY(y) + 4, ydec,
                fabs(y) < ystep * 1e-9 ? 0.0 : y);
    for (double x = first_x; x <= x1 + xstep * 1e-9; x += xstep)
        fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">%.*f</text>\n", PX(x), HEIGHT - BOTTOM + 16,
                xdec, fabs(x) < xstep * 1e-9 ? 0.0 : x);
    fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\" font-size=\"13\">", LEFT + pw / 2, HEIGHT - 16);
    put_escaped(f, axes->x_label);
    fprintf(f, "</text>\n<text transform=\"translate(18 %.1f) rotate(-90)\" text-anchor=\"middle\" font-size=\"13\">",
            TOP + ph / 2);
    put_escaped(f, axes->y_label);
    fputs("</text>\n</g>\n", f);
    fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%.0f\" height=\"%.0f\" fill=\"none\" stroke=\"#333\"/>\n", LEFT, TOP,
            pw, ph);

    /* The data. */
    size_t n_labels = 0, longest = 0;
    for (size_t k = 0; k < n_lines; k++) {
        const dae_plot_line *l = &lines[k];
        const char *color = l->color ? l->color : PALETTE[k % (sizeof PALETTE / sizeof PALETTE[0])];
        if (l->label != NULL) n_labels++, longest = strlen(l->label) > longest ? strlen(l->label) : longest;
        if (l->n == 0) continue;
        fputs("<polyline ", f);
        put_stroke(f, l, color);
        fputs(" points=\"", f);
        for (size_t i = 0; i < l->n; i++)
            if (finite_point(l, i)) fprintf(f, "%.1f,%.1f ", PX(l->x[i]), PY(l->y[i]));
        fputs("\"/>\n", f);
        if (!l->markers) continue;
        fprintf(f, "<g fill=\"%s\">\n", color);
        for (size_t i = 0; i < l->n; i++)
            if (finite_point(l, i)) fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\"/>\n", PX(l->x[i]), PY(l->y[i]));
        fputs("</g>\n", f);
    }

    /* Legend, top right inside the plot; about 7 pixels per character. */
    if (n_labels > 0) {
        int lw = 50 + 7 * (int)(longest < 60 ? longest : 60), lx = WIDTH - RIGHT - 10 - lw, ly = TOP + 12;
        fprintf(f, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"white\" fill-opacity=\"0.85\" "
                   "stroke=\"#ccc\"/>\n",
                lx, ly - 6, lw, 20 * (int)n_labels + 4);
        for (size_t k = 0; k < n_lines; k++) {
            const dae_plot_line *l = &lines[k];
            const char *color = l->color ? l->color : PALETTE[k % (sizeof PALETTE / sizeof PALETTE[0])];
            if (l->label == NULL) continue;
            fprintf(f, "<line x1=\"%d\" y1=\"%d\" x2=\"%d\" y2=\"%d\" ", lx + 8, ly + 8, lx + 32, ly + 8);
            dae_plot_line thick = *l;
            if (thick.width < 1.5) thick.width = 1.5;
            thick.opacity = 1;
            put_stroke(f, &thick, color);
            fputs("/>\n", f);
            if (l->markers) fprintf(f, "<circle cx=\"%d\" cy=\"%d\" r=\"4\" fill=\"%s\"/>\n", lx + 20, ly + 8, color);
            fprintf(f, "<text x=\"%d\" y=\"%d\">", lx + 40, ly + 12);
            put_escaped(f, l->label);
            fputs("</text>\n", f);
            ly += 20;
        }
    }
    fputs("</svg>\n", f);
#undef PX
#undef PY
    if (fclose(f) != 0) {
        free(doc);
        return NULL;
    }
    return doc;
}

char *dae_loss_svg(const char *title, const long *step_x, const float *step_loss, size_t n_steps,
                   const long *epoch_x, const double *epoch_loss, size_t n_epochs) {
    /* The chart takes doubles; +1 keeps malloc(0) out of the picture. */
    double *sx = malloc(sizeof(double) * (n_steps + 1)), *sy = malloc(sizeof(double) * (n_steps + 1));
    double *ex = malloc(sizeof(double) * (n_epochs + 1));
    char *doc = NULL;
    if (sx && sy && ex) {
        for (size_t i = 0; i < n_steps; i++) sx[i] = (double)step_x[i], sy[i] = step_loss[i];
        for (size_t i = 0; i < n_epochs; i++) ex[i] = (double)epoch_x[i];
        dae_plot_axes axes = {title, "optimiser step", "loss (mean squared error)", 1, 0, 1};
        dae_plot_line lines[2] = {
            {"loss of each step", sx, sy, n_steps, PALETTE[0], 1.0, 0.7, 0, 0},
            {"mean loss of each epoch", ex, epoch_loss, n_epochs, PALETTE[1], 2.5, 1.0, 1, 0},
        };
        doc = dae_lines_svg(&axes, lines, 2);
    }
    free(sx), free(sy), free(ex);
    return doc;
}
