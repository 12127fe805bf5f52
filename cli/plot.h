/* plot.h - the training-loss plot of `dae train --loss-svg`: a
 * self-contained SVG line chart (no scripts, fonts or external files) of
 * the loss of every step and the mean loss of every epoch. */
#ifndef DAE_CLI_PLOT_H
#define DAE_CLI_PLOT_H

#include <stddef.h>

/* Renders the chart: n_steps points (step number, batch loss) as a thin
 * line and n_epochs points (step number at the epoch's end, mean loss of
 * the epoch) as a thick line with markers, on linear axes from the first
 * to the last step and from 0 to a round number above the largest loss,
 * with ticks, grid, axis labels, a legend and title (escaped). Non-finite
 * losses are skipped. Returns a malloc'd NUL-terminated document that the
 * caller frees, or NULL when out of memory. */
char *cli_loss_svg(const char *title, const long *step_x, const float *step_loss, size_t n_steps,
                   const long *epoch_x, const double *epoch_loss, size_t n_epochs);

#endif
