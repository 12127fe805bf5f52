/* gemm.h - the one matrix-multiply entry point of the engine.
 *
 * C = alpha * op(A) * op(B) + beta * C, row-major, op = transpose or not.
 * dae_gemm calls the BLAS (OpenBLAS's sgemm, single-threaded: the engine
 * parallelises over the batch itself); dae_gemm_naive is the obviously
 * correct triple loop kept as the test oracle. */
#ifndef DAE_GEMM_H
#define DAE_GEMM_H

void dae_gemm(int trans_a, int trans_b, int m, int n, int k, float alpha,
              const float *a, int lda, const float *b, int ldb, float beta,
              float *c, int ldc);

void dae_gemm_naive(int trans_a, int trans_b, int m, int n, int k,
                    float alpha, const float *a, int lda, const float *b,
                    int ldb, float beta, float *c, int ldc);

/* Makes the BLAS run every call on the calling thread. The engine calls it
 * before starting its own threads; it changes OpenBLAS's process-wide
 * thread count, which is why it is explicit. */
void dae_gemm_single_threaded(void);

#endif
