/* plot.h - SVG charts: a self-contained line chart (no scripts, fonts or
 * external files) of any set of lines, and the training-loss chart built
 * on it. Both front ends draw with it: `dae train --loss-svg`, `dae eval
 * --sweep-svg` and dae-server's GET /train/{id}/loss.svg. */
#ifndef DAE_PLOT_H
#define DAE_PLOT_H

#include <stddef.h>

/* One line of a chart: n points (x[i], y[i]), drawn in order; points with
 * a non-finite coordinate are skipped. color NULL takes the i-th colour of
 * the chart's palette for the chart's i-th line. */
typedef struct {
    const char *label; /* legend text (escaped) */
    const double *x, *y;
    size_t n;
    const char *color; /* SVG colour, or NULL */
    double width;      /* stroke width in pixels */
    double opacity;    /* stroke opacity in (0, 1] */
    int markers;       /* a dot at every point */
    int dashed;
} dae_plot_line;

/* What is around the lines: the title and axis labels (escaped), and the
 * axes' ranges: x spans the data (from 0 when x_from_zero; integer ticks
 * when x_integer), y spans the data rounded out to ticks (from 0 when
 * y_from_zero). */
typedef struct {
    const char *title, *x_label, *y_label;
    int x_integer, x_from_zero, y_from_zero;
} dae_plot_axes;

/* Renders lines on linear axes with round-number ticks, a grid, the axis
 * labels, the title and a legend of every line with a label. Returns a
 * malloc'd NUL-terminated document that the caller frees, or NULL when out
 * of memory. */
char *dae_lines_svg(const dae_plot_axes *axes, const dae_plot_line *lines, size_t n_lines);

/* The training loss: n_steps points (step number, batch loss) as a thin
 * line and n_epochs points (step number at the epoch's end, mean loss of
 * the epoch) as a thick line with markers, on axes from the first to the
 * last step and from 0 to a round number above the largest loss. Returns
 * what dae_lines_svg returns. */
char *dae_loss_svg(const char *title, const long *step_x, const float *step_loss, size_t n_steps,
                   const long *epoch_x, const double *epoch_loss, size_t n_epochs);

#endif
