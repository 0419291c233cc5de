/* Declarations of the aarch64 micro-kernels (kernels.inc, aarch64 section). Each family lives in its own
 * directory, compiled with only its own -march (setup.py ISA_DIRS); dispatch.c calls one only when
 * getauxval reports the features (csrc/common/cpu.c). */
#ifndef LOWBIT_ARM_H
#define LOWBIT_ARM_H
#include "lowbit/kernel.h"
#if defined(__aarch64__)
#define LB_ARM_DECL(name)                                                                                  \
    void gemv_##name(int K, const uint8_t *W, const int8_t *aux, const uint8_t *A, const int16_t *bsums,    \
                     float *out, int n0, int n1, int N);                                                    \
    void gemm_##name(int K, const uint8_t *W, const int8_t *aux, const uint8_t *A4, const int16_t *bsums4, \
                     float *out, size_t ldo, int n0, int n1, int N);
LB_ARM_DECL(q4_0_4x4__neon)
LB_ARM_DECL(iq4_nl_4x4__neon)
LB_ARM_DECL(q8_0_4x4__neon)
LB_ARM_DECL(cb4_4x4__neon)
LB_ARM_DECL(cb2_4x4__neon)
LB_ARM_DECL(q4_0_4x4__dotprod)
LB_ARM_DECL(iq4_nl_4x4__dotprod)
LB_ARM_DECL(q8_0_4x4__dotprod)
LB_ARM_DECL(cb4_4x4__dotprod)
LB_ARM_DECL(cb2_4x4__dotprod)
LB_ARM_DECL(q4_0_4x8__i8mm)
LB_ARM_DECL(iq4_nl_4x8__i8mm)
LB_ARM_DECL(q8_0_4x8__i8mm)
LB_ARM_DECL(cb4_4x8__i8mm)
LB_ARM_DECL(cb2_4x8__i8mm)
/* Attention row kernel and SiLU·up (arm_neon/attn_neon.c); the x86 twins are in x86_avx2/avx2.h. */
void lb_attn_row_neon(int hd, int T, const float *q, const float *K, const float *V, float scale, float *s,
                      float *o);
/* The G query heads of one KV head together (q, o: [G][hd], s: G*T floats); bit-identical to G row calls. */
void lb_attn_group_neon(int hd, int T, int G, const float *q, const float *K, const float *V, float scale,
                        float *s, float *o);
void lb_silu_mul_neon(int n, const float *g, const float *u, float *out);
#ifdef LB_HAVE_SVE
LB_ARM_DECL(q4_0_8x8__sve256)
LB_ARM_DECL(iq4_nl_8x8__sve256)
LB_ARM_DECL(q8_0_8x8__sve256)
LB_ARM_DECL(cb4_8x8__sve256)
LB_ARM_DECL(cb2_8x8__sve256)
int lb_sve_vector_bits_impl(void);
#endif
/* Defines the exported gemv_/gemm_ pair of one kernel from the TU's static always-inline bodies. */
#define LB_ARM_DEF(name, FMT, gemv_body, gemm_body)                                                        \
    void gemv_##name(int K, const uint8_t *W, const int8_t *aux, const uint8_t *A, const int16_t *bsums,    \
                     float *out, int n0, int n1, int N) {                                                   \
        (void)bsums; gemv_body(FMT, K, W, aux, A, out, n0, n1, N);                                    \
    }                                                                                                        \
    void gemm_##name(int K, const uint8_t *W, const int8_t *aux, const uint8_t *A4, const int16_t *bsums4, \
                     float *out, size_t ldo, int n0, int n1, int N) {                                       \
        (void)bsums4; gemm_body(FMT, K, W, aux, A4, out, ldo, n0, n1, N);                             \
    }
#endif
#endif
