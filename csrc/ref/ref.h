/* Scalar reference: the fallback, the test oracle and the executable description of each byte layout. */
#ifndef LOWBIT_REF_H
#define LOWBIT_REF_H
#include "lowbit/kernel.h"

#define LB_REF_DECL(fmt, R, B)                                                                          \
    void gemv_##fmt##_##R##x##B##__scalar(int K, const uint8_t *W, const int8_t *aux, const uint8_t *A,  \
                                          const int16_t *bsums, float *out, int n0, int n1, int N);      \
    void gemm_##fmt##_##R##x##B##__scalar(int K, const uint8_t *W, const int8_t *aux, const uint8_t *A4, \
                                          const int16_t *bsums4, float *out, size_t ldo, int n0, int n1, int N);

LB_REF_DECL(q4_0, 4, 4)
LB_REF_DECL(q4_0, 4, 8)
LB_REF_DECL(q4_0, 8, 8)
LB_REF_DECL(iq4_nl, 4, 4)
LB_REF_DECL(iq4_nl, 4, 8)
LB_REF_DECL(iq4_nl, 8, 8)
LB_REF_DECL(q8_0, 4, 4)
LB_REF_DECL(q8_0, 4, 8)
LB_REF_DECL(q8_0, 8, 8)
LB_REF_DECL(cb4, 4, 4)
LB_REF_DECL(cb4, 4, 8)
LB_REF_DECL(cb4, 8, 8)
LB_REF_DECL(cb4, 8, 16)
LB_REF_DECL(cb2, 4, 4)
LB_REF_DECL(cb2, 4, 8)
LB_REF_DECL(cb2, 8, 8)

/* Activation quantization (Q8_0, roundf: ties away from zero, as ggml's reference and gguf's numpy). */
void lb_quantize_row_q8_0(const float *x, int K, uint8_t *out, int16_t *bsums, int bsum_stride);
void lb_quantize_rows_q8_0x4(const float *x, size_t ldx, int K, int act_B, uint8_t *out, int16_t *bsums4);

#endif
