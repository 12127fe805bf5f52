/* hot.h - HOT marks a hot loop's function to be compiled for AVX-512, AVX2
 * and baseline x86-64 and picked at run time (GCC's target_clones), so one
 * portable binary runs fast everywhere. Off under AddressSanitizer and
 * with DAE_NO_CLONES (the fuzz builds).
 *
 * DAE_NO_AVX512_CLONES (`make AVX2_PATH=1`, `make test-avx2`) leaves the
 * AVX-512 copies out: an AVX-512 machine then runs the copies an AVX2
 * machine runs, which with DAE_ISA=avx2 makes all of that machine's path. */
#ifndef DAE_HOT_H
#define DAE_HOT_H

#if defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__) && !defined(DAE_NO_CLONES)
#ifndef DAE_NO_AVX512_CLONES
#define HOT __attribute__((target_clones("avx512f", "avx2", "default")))
/* For code the engine picks only where the CPU has AVX-512 (the phases,
 * where it runs at full width, dae_cpu_full_width_avx512; the one-channel
 * rows' 16-lane copy; layers_lanes.inc's 16-float copies, where AVX-512 is
 * in use): an AVX2 clone would run only under tests that force it, and
 * the phases' took 670 KB. */
#define HOT_AVX512 __attribute__((target_clones("avx512f", "default")))
#else
#define HOT __attribute__((target_clones("avx2", "default")))
#define HOT_AVX512
#endif
#else
#define HOT
#define HOT_AVX512
#endif

#endif
