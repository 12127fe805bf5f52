/* denormals.h - the engine's arithmetic with subnormal floats flushed to
 * zero.
 *
 * Weight decay drives the weights of units that never fire toward zero,
 * and they end as subnormal floats: 15% of the shipped U-Net's weights
 * (most in its 7x7 layers), 9% of the seed network's. On Intel's cores a
 * multiply-add with a subnormal operand takes a microcode assist, and
 * the daemon ran a 28x28 image through the shipped U-Net in about 1 ms
 * where random weights take 30 us (AMD's cores take no such penalty).
 * The engine's entry points (a forward pass, a training pass, an Adam
 * update) set the flush-to-zero and denormals-are-zero bits of the SSE
 * control register for their duration and give the caller's back. A
 * subnormal is below 1.2e-38: next to the activations it changes no
 * output, and the PyTorch fixtures' tolerances hold. */
#ifndef DAE_DENORMALS_H
#define DAE_DENORMALS_H

#if defined(__x86_64__) || defined(__SSE__)
#include <xmmintrin.h>

typedef unsigned dae_fp_mode;

/* Sets flush-to-zero (bit 15) and denormals-are-zero (bit 6); returns the
 * mode to restore. */
static inline dae_fp_mode dae_denormals_off(void) {
    dae_fp_mode caller = _mm_getcsr();
    _mm_setcsr(caller | 0x8040u);
    return caller;
}

static inline void dae_fp_mode_restore(dae_fp_mode caller) { _mm_setcsr(caller); }
#else
typedef int dae_fp_mode;
static inline dae_fp_mode dae_denormals_off(void) { return 0; }
static inline void dae_fp_mode_restore(dae_fp_mode caller) { (void)caller; }
#endif

#endif
