/* clock.h - the monotonic clock the engine and both front ends time
 * things with (training progress, request deadlines, draining). */
#ifndef DAE_CLOCK_H
#define DAE_CLOCK_H

/* Seconds on CLOCK_MONOTONIC: only differences between two calls mean
 * anything; never goes back when the wall clock is set. */
double dae_now_s(void);

#endif
