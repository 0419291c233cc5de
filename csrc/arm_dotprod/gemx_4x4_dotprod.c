/* NEON + dotprod kernels on the 4-row, 4-byte interleave (q4_0, iq4_nl, q8_0). One 16-byte weight vector is
 * 4 rows x 4 K-values; SDOT by element (vdotq_laneq_s32) multiplies it by one 4-byte activation group:
 * 16 useful MACs per instruction. GEMV: the lane is the K chunk; GEMM: the lane is the activation row. */
#ifndef __ARM_FEATURE_DOTPROD
#error "this file must be compiled with -march=armv8.2-a+dotprod"
#endif
#include "arm_common/arm_inline.h"

AI void gemv_4x4(int fmt, int K, const uint8_t *W, const int8_t *aux, const uint8_t *A, float *out, int n0, int n1, int N) {
    const int nb = K / LB_QK;
    const size_t sbb = lb_sbb(fmt, 4);
    for (int g = n0 / 4; 4 * g < n1; g++) {
        const uint8_t *sb = W + (size_t)g * nb * sbb;
        float32x4_t acc = vdupq_n_f32(0.0f);
        for (int b = 0; b < nb; b++, sb += sbb) {
            const uint8_t *ab = A + (size_t)b * LB_Q8_BLOCK;
            const int8x16_t al = vld1q_s8((const int8_t *)ab + 2), ah = vld1q_s8((const int8_t *)ab + 18);
            int8x16_t w[8];
            lb_unpack_any_r4(fmt, 4, sb, aux, w);
            int32x4_t s = vdupq_n_s32(0);
            s = vdotq_laneq_s32(s, w[0], al, 0);
            s = vdotq_laneq_s32(s, w[1], al, 1);
            s = vdotq_laneq_s32(s, w[2], al, 2);
            s = vdotq_laneq_s32(s, w[3], al, 3);
            s = vdotq_laneq_s32(s, w[4], ah, 0);
            s = vdotq_laneq_s32(s, w[5], ah, 1);
            s = vdotq_laneq_s32(s, w[6], ah, 2);
            s = vdotq_laneq_s32(s, w[7], ah, 3);
            acc = vfmaq_f32(acc, lb_isum_to_f(fmt, s), vmulq_n_f32(lb_wscale4(fmt, sb), lb_h2f(ab)));
        }
        lb_store4(out, acc, g, n1, N);
    }
}

AI void gemm_4x4(int fmt, int K, const uint8_t *W, const int8_t *aux, const uint8_t *A4, float *out, size_t ldo, int n0, int n1,
                 int N) {
    const int nb = K / LB_QK;
    const size_t sbb = lb_sbb(fmt, 4);
    for (int g = n0 / 4; 4 * g < n1; g++) {
        const uint8_t *sb = W + (size_t)g * nb * sbb;
        float32x4_t acc[4];
        for (int i = 0; i < 4; i++) acc[i] = vdupq_n_f32(0.0f);
        for (int b = 0; b < nb; b++, sb += sbb) {
            const uint8_t *ab = A4 + (size_t)b * LB_Q8X4_BLOCK;
            int8x16_t w[8];
            lb_unpack_any_r4(fmt, 4, sb, aux, w);
            int32x4_t s[4];
            for (int i = 0; i < 4; i++) s[i] = vdupq_n_s32(0);
            for (int k = 0; k < 8; k++) {  /* a = 4 activation rows x 4 K-values of chunk k */
                const int8x16_t a = vld1q_s8((const int8_t *)ab + 8 + 16 * k);
                s[0] = vdotq_laneq_s32(s[0], w[k], a, 0);
                s[1] = vdotq_laneq_s32(s[1], w[k], a, 1);
                s[2] = vdotq_laneq_s32(s[2], w[k], a, 2);
                s[3] = vdotq_laneq_s32(s[3], w[k], a, 3);
            }
            const float32x4_t dw = lb_wscale4(fmt, sb), da = lb_h2f4(ab);
            acc[0] = vfmaq_f32(acc[0], lb_isum_to_f(fmt, s[0]), vmulq_laneq_f32(dw, da, 0));
            acc[1] = vfmaq_f32(acc[1], lb_isum_to_f(fmt, s[1]), vmulq_laneq_f32(dw, da, 1));
            acc[2] = vfmaq_f32(acc[2], lb_isum_to_f(fmt, s[2]), vmulq_laneq_f32(dw, da, 2));
            acc[3] = vfmaq_f32(acc[3], lb_isum_to_f(fmt, s[3]), vmulq_laneq_f32(dw, da, 3));
        }
        for (int i = 0; i < 4; i++) lb_store4(out + i * ldo, acc[i], g, n1, N);
    }
}

LB_ARM_DEF(q4_0_4x4__dotprod, LB_FMT_Q4_0, gemv_4x4, gemm_4x4)
LB_ARM_DEF(iq4_nl_4x4__dotprod, LB_FMT_IQ4_NL, gemv_4x4, gemm_4x4)
LB_ARM_DEF(q8_0_4x4__dotprod, LB_FMT_Q8_0, gemv_4x4, gemm_4x4)
LB_ARM_DEF(cb4_4x4__dotprod, LB_FMT_CB4, gemv_4x4, gemm_4x4)
LB_ARM_DEF(cb2_4x4__dotprod, LB_FMT_CB2, gemv_4x4, gemm_4x4)
