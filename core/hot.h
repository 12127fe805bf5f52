/* hot.h - HOT marks a hot loop's function to be compiled for AVX-512, AVX2
 * and baseline x86-64 and picked at run time (GCC's target_clones), so one
 * portable binary runs fast everywhere. Off under AddressSanitizer and
 * with DAE_NO_CLONES (the fuzz builds). */
#ifndef DAE_HOT_H
#define DAE_HOT_H

#if defined(__x86_64__) && !defined(__SANITIZE_ADDRESS__) && !defined(DAE_NO_CLONES)
#define HOT __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define HOT
#endif

#endif
