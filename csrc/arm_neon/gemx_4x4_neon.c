/* Baseline NEON kernels (armv8-a, no dotprod) on the 4-row, 4-byte interleave. A 4-byte activation group is
 * broadcast to all 4 rows; vmull/vmlal form int16 products of two K chunks at once (|w|,|a| <= 128,127: the
 * pair sum stays <= 32512), vpadal folds pairs into int32 (lanes = 2 rows x 2 halves), and one vpadd per
 * block gives the 4 row sums. */
#include "arm_common/arm_inline.h"

AI int8x16_t bcast4(int8x16_t v, int lane) {
    const int32x4_t v32 = vreinterpretq_s32_s8(v);
    switch (lane) {
    case 0: return vreinterpretq_s8_s32(vdupq_laneq_s32(v32, 0));
    case 1: return vreinterpretq_s8_s32(vdupq_laneq_s32(v32, 1));
    case 2: return vreinterpretq_s8_s32(vdupq_laneq_s32(v32, 2));
    default: return vreinterpretq_s8_s32(vdupq_laneq_s32(v32, 3));
    }
}

/* Σ over chunks k<8 of w[k] (4 rows x 4) . a[k] (4 activations broadcast) -> 4 row sums. */
AI int32x4_t dot_r4(const int8x16_t w[8], const int8x16_t a[8]) {
    int32x4_t s01 = vdupq_n_s32(0), s23 = vdupq_n_s32(0);
    for (int k = 0; k < 4; k++) {
        int16x8_t p0 = vmull_s8(vget_low_s8(w[k]), vget_low_s8(a[k]));
        p0 = vmlal_s8(p0, vget_low_s8(w[k + 4]), vget_low_s8(a[k + 4]));
        int16x8_t p1 = vmull_high_s8(w[k], a[k]);
        p1 = vmlal_high_s8(p1, w[k + 4], a[k + 4]);
        s01 = vpadalq_s16(s01, p0);
        s23 = vpadalq_s16(s23, p1);
    }
    return vpaddq_s32(s01, s23);
}

AI void gemv_4x4(int fmt, int K, const uint8_t *W, const int8_t *aux, const uint8_t *A, float *out, int n0, int n1, int N) {
    const int nb = K / LB_QK;
    const size_t sbb = lb_sbb(fmt, 4);
    for (int g = n0 / 4; 4 * g < n1; g++) {
        const uint8_t *sb = W + (size_t)g * nb * sbb;
        float32x4_t acc = vdupq_n_f32(0.0f);
        for (int b = 0; b < nb; b++, sb += sbb) {
            const uint8_t *ab = A + (size_t)b * LB_Q8_BLOCK;
            const int8x16_t al = vld1q_s8((const int8_t *)ab + 2), ah = vld1q_s8((const int8_t *)ab + 18);
            int8x16_t w[8], a[8];
            lb_unpack_any_r4(fmt, 4, sb, aux, w);
            for (int k = 0; k < 4; k++) { a[k] = bcast4(al, k); a[k + 4] = bcast4(ah, k); }
            const int32x4_t s = dot_r4(w, a);
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
            int8x16_t w[8], av[8];
            lb_unpack_any_r4(fmt, 4, sb, aux, w);
            for (int k = 0; k < 8; k++) av[k] = vld1q_s8((const int8_t *)ab + 8 + 16 * k);
            const float32x4_t dw = lb_wscale4(fmt, sb);
            float das[4];
            vst1q_f32(das, lb_h2f4(ab));
            for (int i = 0; i < 4; i++) {
                int8x16_t a[8];
                for (int k = 0; k < 8; k++) a[k] = bcast4(av[k], i);
                const int32x4_t s = dot_r4(w, a);
                acc[i] = vfmaq_f32(acc[i], lb_isum_to_f(fmt, s), vmulq_n_f32(dw, das[i]));
            }
        }
        for (int i = 0; i < 4; i++) lb_store4(out + i * ldo, acc[i], g, n1, N);
    }
}

LB_ARM_DEF(q4_0_4x4__neon, LB_FMT_Q4_0, gemv_4x4, gemm_4x4)
LB_ARM_DEF(iq4_nl_4x4__neon, LB_FMT_IQ4_NL, gemv_4x4, gemm_4x4)
LB_ARM_DEF(q8_0_4x4__neon, LB_FMT_Q8_0, gemv_4x4, gemm_4x4)
LB_ARM_DEF(cb4_4x4__neon, LB_FMT_CB4, gemv_4x4, gemm_4x4)
LB_ARM_DEF(cb2_4x4__neon, LB_FMT_CB2, gemv_4x4, gemm_4x4)
