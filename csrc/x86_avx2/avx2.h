#ifndef LOWBIT_AVX2_H
#define LOWBIT_AVX2_H
#include "lowbit/kernel.h"
#if defined(__x86_64__) || defined(_M_X64)
#define LB_AVX2_DECL(name)                                                                                 \
    void gemv_##name(int K, const uint8_t *W, const int8_t *aux, const uint8_t *A, const int16_t *bsums,    \
                     float *out, int n0, int n1, int N);                                                    \
    void gemm_##name(int K, const uint8_t *W, const int8_t *aux, const uint8_t *A4, const int16_t *bsums4, \
                     float *out, size_t ldo, int n0, int n1, int N);
LB_AVX2_DECL(q4_0_8x8__avx2)
LB_AVX2_DECL(iq4_nl_8x8__avx2)
LB_AVX2_DECL(q8_0_8x8__avx2)
/* Activation quantizers, bit-identical to lb_quantize_row_q8_0 / lb_quantize_rows_q8_0x4 (quant_act_avx2.c). */
void lb_quantize_row_q8_0_avx2(const float *x, int K, uint8_t *out, int16_t *bsums, int bsum_stride);
void lb_quantize_rows_q8_0x4_avx2(const float *x, size_t ldx, int K, int act_B, uint8_t *out, int16_t *bsums4);
/* out = silu(g) * u for n floats (silu_avx2.c) */
void lb_silu_mul_avx2(int n, const float *g, const float *u, float *out);
/* One query row's causal attention over T keys (attn_avx2.c); hd % 8 == 0. s: T floats of scratch. */
void lb_attn_row_avx2(int hd, int T, const float *q, const float *K, const float *V, float scale, float *s,
                      float *o);
/* The G (<= LB_ATTN_MAX_GROUP) query heads of one KV head, q and o [G][hd], s: G*T floats; bit-identical to G
 * lb_attn_row_avx2 calls, with each K/V block read once for all of them. */
void lb_attn_group_avx2(int hd, int T, int G, const float *q, const float *K, const float *V, float scale,
                        float *s, float *o);
#endif
#endif
