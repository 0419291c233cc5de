/* SVE kernels on the 8-row, 8-byte interleave, for a 256-bit vector length only (cpu.c checks the length at
 * run time before LB_ISA_SVE256 is reported). One 32-byte weight vector = 4 rows x 8 K-values; SVE SMMLA
 * works per 128-bit segment (2 rows each) against 2 activation rows replicated into both segments (LD1RQB),
 * and GEMV uses SVE SDOT against an 8-byte activation chunk broadcast to every 64-bit lane (LD1RD). */
#if !defined(__ARM_FEATURE_SVE) || !defined(__ARM_FEATURE_SVE_MATMUL_INT8)
#error "this file must be compiled with -march=armv8.2-a+dotprod+i8mm+sve"
#endif
#include <arm_sve.h>
#include "arm_common/arm_inline.h"

int lb_sve_vector_bits_impl(void) { return (int)svcntb() * 8; }

#define SAI static inline __attribute__((always_inline))

/* Codebook tables of one R=8 super-block (ids: low 4 bits of the scale words), loaded once per block. cb2: the 8 rows' entries
 * 0..3 fit one 32-byte table (row r at 4r..4r+3). cb4: a 32-byte SVE TBL holds only 2 rows' [16] tables, so
 * t[2h+i] = rows 4h+2i, 4h+2i+1 (svext joins two LD1RQ copies); see unpack_r8 for how a byte picks its pair. */
typedef svint8x4_t tabs8;  /* SVE types can't be struct fields; a tuple can carry them */
SAI tabs8 load_tabs8(int fmt, const uint8_t *sb, const int8_t *aux) {
    const svbool_t pb = svptrue_b8();
    if (fmt == LB_FMT_CB2) {
        uint32_t t4[8];
        for (int r = 0; r < 8; r++) memcpy(&t4[r], aux + 16 * lb_cb_id(sb, r), 4);
        const svint8_t t = svreinterpret_s8_u32(svld1_u32(svptrue_b32(), t4));
        return svcreate4_s8(t, t, t, t);
    }
    if (fmt == LB_FMT_CB4) {
#define PAIR(r) svext_s8(svld1rq_s8(pb, aux + 16 * lb_cb_id(sb, r)), svld1rq_s8(pb, aux + 16 * lb_cb_id(sb, (r) + 1)), 16)
        return svcreate4_s8(PAIR(0), PAIR(2), PAIR(4), PAIR(6));
#undef PAIR
    }
    const svint8_t z = svdup_n_s8(0);
    return svcreate4_s8(z, z, z, z);
}

/* Weights of one R=8 super-block, chunk index c = 2q+h meaning rows 4h..4h+3 x K 8q..8q+7 (SVE types
 * can't form arrays, so one chunk pair at a time): call m gives chunk m (4-bit: low nibbles of byte vector
 * m, or the q8_0 bytes at 32m) and chunk m+4 (high nibbles: K + 16, or q8_0 bytes at 32(m+4)).
 * cb2 (rows r at bytes 8r..8r+7, byte j = elements j, j+8, j+16, j+24): chunk 2q+h is crumb q of code
 * vector h, so call m reads vector m&1, crumbs m>>1 and (m>>1)+2; index = crumb | 4 * row. */
SAI void unpack_r8(int fmt, const uint8_t *qs, int m, tabs8 t, svint8_t *lo, svint8_t *hi) {
    const svbool_t pb = svptrue_b8();
    if (fmt == LB_FMT_Q8_0) {
        *lo = svld1_s8(pb, (const int8_t *)qs + 32 * m);
        *hi = svld1_s8(pb, (const int8_t *)qs + 32 * (m + 4));
        return;
    }
    if (fmt == LB_FMT_CB2) {
        const int h = m & 1, c = m >> 1;
        const svuint8_t v = svld1_u8(pb, qs + 32 * h);
        /* row of byte p is 4h + p/8: offset 16h + 4(p/8) */
        const svuint8_t off = svadd_n_u8_x(pb, svlsl_n_u8_x(pb, svlsr_n_u8_x(pb, svindex_u8(0, 1), 3), 2), 16 * h);
        const svuint8_t lo_i = svand_n_u8_x(pb, svlsr_n_u8_x(pb, v, 2 * c), 3);
        const svuint8_t hi_i = svand_n_u8_x(pb, svlsr_n_u8_x(pb, v, 2 * c + 4), 3);
        *lo = svtbl_s8(svget4_s8(t, 0), svorr_u8_x(pb, lo_i, off));
        *hi = svtbl_s8(svget4_s8(t, 0), svorr_u8_x(pb, hi_i, off));
        return;
    }
    const svuint8_t v = svld1_u8(pb, qs + 32 * m);
    if (fmt == LB_FMT_Q4_0) {  /* sign form: 16 * (q - 8) */
        *lo = svreinterpret_s8_u8(svlsl_n_u8_x(pb, v, 4));
        *hi = svreinterpret_s8_u8(svand_n_u8_x(pb, v, 0xF0));
    } else if (fmt == LB_FMT_CB4) {
        /* vector m = rows 4h..4h+3 (h = m&1), byte p in row 4h + p/8. idx = nibble + 16(p/8) is < 32 for the
         * first row pair (table t[2h]) and 32..63 for the second (t[2h+1] at idx - 32); TBL gives 0 for an
         * out-of-range index (idx - 32 wraps to >= 224), so OR-ing the two lookups decodes all 4 rows. */
        const svint8_t ta = (m & 1) ? svget4_s8(t, 2) : svget4_s8(t, 0), tb = (m & 1) ? svget4_s8(t, 3) : svget4_s8(t, 1);
        const svuint8_t off = svlsl_n_u8_x(pb, svlsr_n_u8_x(pb, svindex_u8(0, 1), 3), 4);
        const svuint8_t il = svadd_u8_x(pb, svand_n_u8_x(pb, v, 0x0F), off);
        const svuint8_t ih = svadd_u8_x(pb, svlsr_n_u8_x(pb, v, 4), off);
        *lo = svorr_s8_x(pb, svtbl_s8(ta, il), svtbl_s8(tb, svsub_n_u8_x(pb, il, 32)));
        *hi = svorr_s8_x(pb, svtbl_s8(ta, ih), svtbl_s8(tb, svsub_n_u8_x(pb, ih, 32)));
    } else {
        const svint8_t tab = svld1rq_s8(pb, lb_kvalues_iq4nl);
        *lo = svtbl_s8(tab, svand_n_u8_x(pb, v, 0x0F));
        *hi = svtbl_s8(tab, svlsr_n_u8_x(pb, v, 4));
    }
}

/* Header bytes before the codes: 8 scale words (cb4/cb2 keep the codebook id in their low 4 bits). */
SAI int hdr8(int fmt) { (void)fmt; return 16; }

SAI svint8_t bcast8(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return svreinterpret_s8_u64(svdup_n_u64(v)); }

SAI svfloat32_t isum_to_f(int fmt, svint32_t s) {
    const svbool_t p = svptrue_b32();
    if (fmt == LB_FMT_Q4_0) s = svasr_n_s32_x(p, s, 4);  /* exact: every product is a multiple of 16 */
    return svcvt_f32_s32_x(p, s);
}

SAI svfloat32_t scales8(int fmt, const uint8_t *sb) {  /* 8 fp16 -> 8 fp32 (f16 in the low half of each lane) */
    const svbool_t p = svptrue_b32();
    svuint32_t h = svld1uh_u32(p, (const uint16_t *)sb);
    if (fmt == LB_FMT_CB4 || fmt == LB_FMT_CB2) h = svand_n_u32_x(p, h, LB_CB_SCALE_MASK);   /* drop the id */
    return svcvt_f32_f16_x(p, svreinterpret_f16_u32(h));
}

SAI void store8(float *out, svfloat32_t v, int g, int n1, int N) {
    const int c0 = 8 * g;
    if (c0 + 8 <= N && c0 + 8 <= n1) { svst1_f32(svptrue_b32(), out + c0, v); return; }
    float t[8];
    svst1_f32(svptrue_b32(), t, v);
    for (int r = 0; r < 8; r++)
        if (c0 + r < N && c0 + r < n1) out[c0 + r] = t[r];
}

SAI void gemv_8x8(int fmt, int K, const uint8_t *W, const int8_t *aux, const uint8_t *A, float *out, int n0, int n1, int N) {
    const int nb = K / LB_QK;
    const size_t sbb = lb_sbb(fmt, 8);
    const svbool_t p = svptrue_b32();
    for (int g = n0 / 8; 8 * g < n1; g++) {
        const uint8_t *sb = W + (size_t)g * nb * sbb;
        svfloat32_t acc = svdup_n_f32(0.0f);
        for (int b = 0; b < nb; b++, sb += sbb) {
            const uint8_t *ab = A + (size_t)b * LB_Q8_BLOCK;
            const tabs8 t = load_tabs8(fmt, sb, aux);
            svint32_t s0 = svdup_n_s32(0), s1 = svdup_n_s32(0);  /* rows 0-3, rows 4-7 */
            for (int m = 0; m < 4; m += 2) {  /* K chunk q = m/2 (low) and q + 2 (high) */
                svint8_t l0, h0, l1, h1;
                unpack_r8(fmt, sb + hdr8(fmt), m, t, &l0, &h0);
                unpack_r8(fmt, sb + hdr8(fmt), m + 1, t, &l1, &h1);
                const svint8_t alo = bcast8(ab + 2 + 4 * m), ahi = bcast8(ab + 18 + 4 * m);
                s0 = svdot_s32(s0, l0, alo);  /* lanes: r0 K0-3, r0 K4-7, r1 K0-3, ... r3 K4-7 */
                s1 = svdot_s32(s1, l1, alo);
                s0 = svdot_s32(s0, h0, ahi);
                s1 = svdot_s32(s1, h1, ahi);
            }
            const svint32_t s = svadd_s32_x(p, svuzp1_s32(s0, s1), svuzp2_s32(s0, s1));  /* rows 0..7 */
            acc = svmla_f32_x(p, acc, isum_to_f(fmt, s), svmul_n_f32_x(p, scales8(fmt, sb), lb_h2f(ab)));
        }
        store8(out, acc, g, n1, N);
    }
}

SAI void gemm_8x8(int fmt, int K, const uint8_t *W, const int8_t *aux, const uint8_t *A4, float *out, size_t ldo, int n0, int n1,
                  int N) {
    const int nb = K / LB_QK;
    const size_t sbb = lb_sbb(fmt, 8);
    const svbool_t p = svptrue_b32(), pb = svptrue_b8();
    for (int g = n0 / 8; 8 * g < n1; g++) {
        const uint8_t *sb = W + (size_t)g * nb * sbb;
        svfloat32_t acc0 = svdup_n_f32(0.0f), acc1 = acc0, acc2 = acc0, acc3 = acc0;
        for (int b = 0; b < nb; b++, sb += sbb) {
            const uint8_t *ab = A4 + (size_t)b * LB_Q8X4_BLOCK;
            /* s_th, per 128-bit segment: activation rows 2t,2t+1 x weight rows 4h+2seg, 4h+2seg+1 */
            const tabs8 t = load_tabs8(fmt, sb, aux);
            svint32_t s00 = svdup_n_s32(0), s01 = s00, s10 = s00, s11 = s00;
            for (int m = 0; m < 4; m += 2) {
                svint8_t l0, h0, l1, h1;
                unpack_r8(fmt, sb + hdr8(fmt), m, t, &l0, &h0);
                unpack_r8(fmt, sb + hdr8(fmt), m + 1, t, &l1, &h1);
                const int q = m / 2;
                svint8_t a0 = svld1rq_s8(pb, (const int8_t *)ab + 8 + 32 * q);
                svint8_t a1 = svld1rq_s8(pb, (const int8_t *)ab + 24 + 32 * q);
                s00 = svmmla_s32(s00, a0, l0);
                s01 = svmmla_s32(s01, a0, l1);
                s10 = svmmla_s32(s10, a1, l0);
                s11 = svmmla_s32(s11, a1, l1);
                a0 = svld1rq_s8(pb, (const int8_t *)ab + 8 + 32 * (q + 2));
                a1 = svld1rq_s8(pb, (const int8_t *)ab + 24 + 32 * (q + 2));
                s00 = svmmla_s32(s00, a0, h0);
                s01 = svmmla_s32(s01, a0, h1);
                s10 = svmmla_s32(s10, a1, h0);
                s11 = svmmla_s32(s11, a1, h1);
            }
            /* 64-bit lanes of s_t0: [a0 r01, a1 r01, a0 r23, a1 r23], s_t1 the same for rows 4-7: uzp gives
             * activation row x weight rows 0..7 */
#define ROW(u, x, y) svreinterpret_s32_s64(u(svreinterpret_s64_s32(x), svreinterpret_s64_s32(y)))
            const svfloat32_t dw = scales8(fmt, sb);
            acc0 = svmla_f32_x(p, acc0, isum_to_f(fmt, ROW(svuzp1_s64, s00, s01)), svmul_n_f32_x(p, dw, lb_h2f(ab)));
            acc1 = svmla_f32_x(p, acc1, isum_to_f(fmt, ROW(svuzp2_s64, s00, s01)), svmul_n_f32_x(p, dw, lb_h2f(ab + 2)));
            acc2 = svmla_f32_x(p, acc2, isum_to_f(fmt, ROW(svuzp1_s64, s10, s11)), svmul_n_f32_x(p, dw, lb_h2f(ab + 4)));
            acc3 = svmla_f32_x(p, acc3, isum_to_f(fmt, ROW(svuzp2_s64, s10, s11)), svmul_n_f32_x(p, dw, lb_h2f(ab + 6)));
#undef ROW
        }
        store8(out, acc0, g, n1, N);
        store8(out + ldo, acc1, g, n1, N);
        store8(out + 2 * ldo, acc2, g, n1, N);
        store8(out + 3 * ldo, acc3, g, n1, N);
    }
}

LB_ARM_DEF(q4_0_8x8__sve256, LB_FMT_Q4_0, gemv_8x8, gemm_8x8)
LB_ARM_DEF(iq4_nl_8x8__sve256, LB_FMT_IQ4_NL, gemv_8x8, gemm_8x8)
LB_ARM_DEF(q8_0_8x8__sve256, LB_FMT_Q8_0, gemv_8x8, gemm_8x8)
LB_ARM_DEF(cb4_8x8__sve256, LB_FMT_CB4, gemv_8x8, gemm_8x8)
LB_ARM_DEF(cb2_8x8__sve256, LB_FMT_CB2, gemv_8x8, gemm_8x8)
