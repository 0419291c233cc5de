/* Declarations of the AVX2 codebook kernels (gemx_cb_avx2.c). */
#ifndef LOWBIT_CB_AVX2_H
#define LOWBIT_CB_AVX2_H
#include "lowbit/kernel.h"
#if defined(__x86_64__) || defined(_M_X64)
#define LB_CB_AVX2_DECL(name)                                                                              \
    void gemv_##name(int K, const uint8_t *W, const int8_t *aux, const uint8_t *A, const int16_t *bsums,    \
                     float *out, int n0, int n1, int N);                                                    \
    void gemm_##name(int K, const uint8_t *W, const int8_t *aux, const uint8_t *A4, const int16_t *bsums4, \
                     float *out, size_t ldo, int n0, int n1, int N);
LB_CB_AVX2_DECL(cb4_8x16__avx2)
LB_CB_AVX2_DECL(cb2_8x8__avx2)
void gemm_multi_cb2_8x8__avx2(int K, const uint8_t *W, const int8_t *aux, const uint8_t *A4, const int16_t *bsums4,
                              float *out, size_t ldo, int n0, int n1, int N, int ng);
void gemm_multi_cb4_8x16__avx2(int K, const uint8_t *W, const int8_t *aux, const uint8_t *A4, const int16_t *bsums4,
                               float *out, size_t ldo, int n0, int n1, int N, int ng);
#endif
#endif
