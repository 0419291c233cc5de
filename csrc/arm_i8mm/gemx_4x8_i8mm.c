/* NEON + i8mm kernels on the 4-row, 8-byte interleave (q4_0, iq4_nl, q8_0). B=8 makes a 16-byte weight load
 * exactly 2 rows x 8 K-values and a 16-byte Q8_0x4 (act_B=8) load 2 activation rows x 8 K-values: the two
 * operands of SMMLA (vmmlaq_s32, 2x2 int32 tile, 32 MACs). GEMV (one row) uses SDOT on the 8-byte
 * activation chunk broadcast, then one ADDP per block. */
#if !defined(__ARM_FEATURE_MATMUL_INT8) || !defined(__ARM_FEATURE_DOTPROD)
#error "this file must be compiled with -march=armv8.2-a+dotprod+i8mm"
#endif
#include "arm_common/arm_inline.h"

AI void gemv_4x8(int fmt, int K, const uint8_t *W, const int8_t *aux, const uint8_t *A, float *out, int n0, int n1, int N) {
    const int nb = K / LB_QK;
    const size_t sbb = lb_sbb(fmt, 4);
    for (int g = n0 / 4; 4 * g < n1; g++) {
        const uint8_t *sb = W + (size_t)g * nb * sbb;
        float32x4_t acc = vdupq_n_f32(0.0f);
        for (int b = 0; b < nb; b++, sb += sbb) {
            const uint8_t *ab = A + (size_t)b * LB_Q8_BLOCK;
            int8x16_t w[8];
            lb_unpack_any_r4(fmt, 8, sb, aux, w);  /* w[2q+p]: rows 2p,2p+1 x K 8q..8q+7 */
            int32x4_t s0 = vdupq_n_s32(0), s1 = vdupq_n_s32(0);
            for (int q = 0; q < 4; q++) {
                uint64_t a8;
                memcpy(&a8, ab + 2 + 8 * q, 8);
                const int8x16_t a = vreinterpretq_s8_u64(vdupq_n_u64(a8));
                s0 = vdotq_s32(s0, w[2 * q], a);      /* lanes: r0 K0-3, r0 K4-7, r1 K0-3, r1 K4-7 */
                s1 = vdotq_s32(s1, w[2 * q + 1], a);
            }
            const int32x4_t s = vpaddq_s32(s0, s1);
            acc = vfmaq_f32(acc, lb_isum_to_f(fmt, s), vmulq_n_f32(lb_wscale4(fmt, sb), lb_h2f(ab)));
        }
        lb_store4(out, acc, g, n1, N);
    }
}

AI void gemm_4x8(int fmt, int K, const uint8_t *W, const int8_t *aux, const uint8_t *A4, float *out, size_t ldo, int n0, int n1,
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
            lb_unpack_any_r4(fmt, 8, sb, aux, w);
            /* s[t][p]: activation rows 2t,2t+1 x weight rows 2p,2p+1 = [a0.w0, a0.w1, a1.w0, a1.w1] */
            int32x4_t s00 = vdupq_n_s32(0), s01 = s00, s10 = s00, s11 = s00;
            for (int q = 0; q < 4; q++) {
                const int8x16_t a0 = vld1q_s8((const int8_t *)ab + 8 + 32 * q);
                const int8x16_t a1 = vld1q_s8((const int8_t *)ab + 24 + 32 * q);
                s00 = vmmlaq_s32(s00, a0, w[2 * q]);
                s01 = vmmlaq_s32(s01, a0, w[2 * q + 1]);
                s10 = vmmlaq_s32(s10, a1, w[2 * q]);
                s11 = vmmlaq_s32(s11, a1, w[2 * q + 1]);
            }
            /* rows of the 4x4 tile: activation row i x weight rows 0..3 */
            int32x4_t s[4];
            s[0] = vreinterpretq_s32_s64(vzip1q_s64(vreinterpretq_s64_s32(s00), vreinterpretq_s64_s32(s01)));
            s[1] = vreinterpretq_s32_s64(vzip2q_s64(vreinterpretq_s64_s32(s00), vreinterpretq_s64_s32(s01)));
            s[2] = vreinterpretq_s32_s64(vzip1q_s64(vreinterpretq_s64_s32(s10), vreinterpretq_s64_s32(s11)));
            s[3] = vreinterpretq_s32_s64(vzip2q_s64(vreinterpretq_s64_s32(s10), vreinterpretq_s64_s32(s11)));
            const float32x4_t dw = lb_wscale4(fmt, sb), da = lb_h2f4(ab);
            acc[0] = vfmaq_f32(acc[0], lb_isum_to_f(fmt, s[0]), vmulq_laneq_f32(dw, da, 0));
            acc[1] = vfmaq_f32(acc[1], lb_isum_to_f(fmt, s[1]), vmulq_laneq_f32(dw, da, 1));
            acc[2] = vfmaq_f32(acc[2], lb_isum_to_f(fmt, s[2]), vmulq_laneq_f32(dw, da, 2));
            acc[3] = vfmaq_f32(acc[3], lb_isum_to_f(fmt, s[3]), vmulq_laneq_f32(dw, da, 3));
        }
        for (int i = 0; i < 4; i++) lb_store4(out + i * ldo, acc[i], g, n1, N);
    }
}

LB_ARM_DEF(q4_0_4x8__i8mm, LB_FMT_Q4_0, gemv_4x8, gemm_4x8)
LB_ARM_DEF(iq4_nl_4x8__i8mm, LB_FMT_IQ4_NL, gemv_4x8, gemm_4x8)
LB_ARM_DEF(q8_0_4x8__i8mm, LB_FMT_Q8_0, gemv_4x8, gemm_4x8)
LB_ARM_DEF(cb4_4x8__i8mm, LB_FMT_CB4, gemv_4x8, gemm_4x8)
LB_ARM_DEF(cb2_4x8__i8mm, LB_FMT_CB2, gemv_4x8, gemm_4x8)
