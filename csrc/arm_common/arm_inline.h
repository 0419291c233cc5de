/* Static helpers shared by the Arm kernel TUs. Static on purpose: each TU gets its own copy compiled with
 * its own -march, so no dotprod/i8mm/SVE code can leak into a baseline path through the linker. */
#ifndef LOWBIT_ARM_INLINE_H
#define LOWBIT_ARM_INLINE_H
#include <arm_neon.h>
#include <string.h>
#include "arm_common/arm.h"

#define AI static inline __attribute__((always_inline))

AI float lb_h2f(const uint8_t *p) { __fp16 h; memcpy(&h, p, 2); return (float)h; }
AI float32x4_t lb_h2f4(const uint8_t *p) { return vcvt_f32_f16(vreinterpret_f16_u8(vld1_u8(p))); }
AI size_t lb_sbb(int fmt, int R) {
    return (size_t)R * (fmt == LB_FMT_Q8_0 ? 34 : fmt == LB_FMT_CB2 ? 10 : 18);
}
/* The 4 row scales of a weight super-block; cb formats clear the codebook id (low 4 bits of the word). */
AI float32x4_t lb_wscale4(int fmt, const uint8_t *sb) {
    uint16x4_t h = vld1_u16((const uint16_t *)sb);
    if (fmt == LB_FMT_CB4 || fmt == LB_FMT_CB2) h = vand_u16(h, vdup_n_u16(LB_CB_SCALE_MASK));
    return vcvt_f32_f16(vreinterpret_f16_u16(h));
}
/* Codebook id of row r: the low 4 bits of its scale word (little-endian: the word's first byte). */
AI int lb_cb_id(const uint8_t *sb, int r) { return sb[2 * r] & LB_CB_ID_MASK; }

/* q4_0 weights are unpacked in the sign form (nibble << 4 or byte & 0xF0 = 16 * (q - 8), exact in int8),
 * so their integer sums are 16x: fixed-point convert with 4 fraction bits divides exactly. */
AI float32x4_t lb_isum_to_f(int fmt, int32x4_t s) {
    return fmt == LB_FMT_Q4_0 ? vcvtq_n_f32_s32(s, 4) : vcvtq_f32_s32(s);
}

/* Low (elements j) and high (elements j+16) halves of 16 nibble bytes as int8 weights. */
AI void lb_unpack_nib(int fmt, uint8x16_t v, int8x16_t *lo, int8x16_t *hi) {
    if (fmt == LB_FMT_Q4_0) {
        *lo = vreinterpretq_s8_u8(vshlq_n_u8(v, 4));
        *hi = vreinterpretq_s8_u8(vandq_u8(v, vdupq_n_u8(0xF0)));
    } else {  /* iq4_nl: table lookup of each nibble */
        const int8x16_t tab = vld1q_s8(lb_kvalues_iq4nl);
        *lo = vqtbl1q_s8(tab, vandq_u8(v, vdupq_n_u8(0x0F)));
        *hi = vqtbl1q_s8(tab, vshrq_n_u8(v, 4));
    }
}

/* Weights of one R=4 super-block as 8 vectors in K order: w[k] = 4 rows x (elements of chunk k), where a
 * chunk is 4 elements (B=4: w[k] = rows 0-3 x 4 bytes) or, for B=8, w[2q+p] = rows 2p,2p+1 x elements
 * 8q..8q+7. In both layouts plain byte vector m holds chunk m (low nibbles) and chunk m+4 (high). */
AI void lb_unpack_r4(int fmt, const uint8_t *qs, int8x16_t w[8]) {
    if (fmt == LB_FMT_Q8_0) {
        for (int k = 0; k < 8; k++) w[k] = vld1q_s8((const int8_t *)qs + 16 * k);
        return;
    }
    for (int m = 0; m < 4; m++) lb_unpack_nib(fmt, vld1q_u8(qs + 16 * m), &w[m], &w[m + 4]);
}

/* cb4 super-block (R=4): 4 scale words (id in bits 0-3), 64 nibble bytes (no XOR). The 4 rows' int8 tables
 * [16] form one 64-byte TBL table; each byte's index is its nibble + 16 * (its row in the group), so one
 * vqtbl4q_s8 decodes 4 rows with 4 different codebooks. Vector m has the same chunk meaning as above. */
AI void lb_unpack_cb4_r4(int B, const uint8_t *sb, const int8_t *aux, int8x16_t w[8]) {
    int8x16x4_t t;
    t.val[0] = vld1q_s8(aux + 16 * lb_cb_id(sb, 0));
    t.val[1] = vld1q_s8(aux + 16 * lb_cb_id(sb, 1));
    t.val[2] = vld1q_s8(aux + 16 * lb_cb_id(sb, 2));
    t.val[3] = vld1q_s8(aux + 16 * lb_cb_id(sb, 3));
    /* row of byte p: B=4 -> p/4; B=8, vector m -> 2(m%2) + p/8 */
    static const uint8_t off4[16] = {0, 0, 0, 0, 16, 16, 16, 16, 32, 32, 32, 32, 48, 48, 48, 48};
    static const uint8_t off8[2][16] = {{0, 0, 0, 0, 0, 0, 0, 0, 16, 16, 16, 16, 16, 16, 16, 16},
                                        {32, 32, 32, 32, 32, 32, 32, 32, 48, 48, 48, 48, 48, 48, 48, 48}};
    const uint8x16_t m4 = vdupq_n_u8(0x0F);
    for (int m = 0; m < 4; m++) {
        const uint8x16_t v = vld1q_u8(sb + 8 + 16 * m), off = vld1q_u8(B == 4 ? off4 : off8[m & 1]);
        w[m] = vqtbl4q_s8(t, vaddq_u8(vandq_u8(v, m4), off));
        w[m + 4] = vqtbl4q_s8(t, vaddq_u8(vshrq_n_u8(v, 4), off));
    }
}

/* cb2 super-block (R=4): 4 scale words (id in bits 0-3), 32 crumb bytes (no XOR). Only entries 0..3 of a
 * row's table are used, so the 4 rows' tables fit one 16-byte TBL table (row r at bytes 4r..4r+3), indexed
 * by crumb | 4 * (row of the byte). Byte j of a row holds elements j, j+8, j+16, j+24, so crumb c of code
 * vector v is chunk 2c+v in both interleaves: B=4, v = bytes 4v..4v+3 of rows 0-3 -> elements 8c+4v..+3;
 * B=8, v = rows 2v,2v+1 x bytes 0..7 -> elements 8c..8c+7. Same w[k] meaning as the 4-bit unpackers. */
AI void lb_unpack_cb2_r4(int B, const uint8_t *sb, const int8_t *aux, int8x16_t w[8]) {
    uint32_t t4[4];
    for (int r = 0; r < 4; r++) memcpy(&t4[r], aux + 16 * lb_cb_id(sb, r), 4);
    const int8x16_t tab = vreinterpretq_s8_u32(vld1q_u32(t4));
    static const uint8_t off4[16] = {0, 0, 0, 0, 4, 4, 4, 4, 8, 8, 8, 8, 12, 12, 12, 12};
    static const uint8_t off8[2][16] = {{0, 0, 0, 0, 0, 0, 0, 0, 4, 4, 4, 4, 4, 4, 4, 4},
                                        {8, 8, 8, 8, 8, 8, 8, 8, 12, 12, 12, 12, 12, 12, 12, 12}};
    const uint8x16_t m2 = vdupq_n_u8(3);
    for (int v = 0; v < 2; v++) {
        const uint8x16_t q = vld1q_u8(sb + 8 + 16 * v), off = vld1q_u8(B == 4 ? off4 : off8[v]);
        w[v] = vqtbl1q_s8(tab, vorrq_u8(vandq_u8(q, m2), off));
        w[2 + v] = vqtbl1q_s8(tab, vorrq_u8(vandq_u8(vshrq_n_u8(q, 2), m2), off));
        w[4 + v] = vqtbl1q_s8(tab, vorrq_u8(vandq_u8(vshrq_n_u8(q, 4), m2), off));
        w[6 + v] = vqtbl1q_s8(tab, vorrq_u8(vshrq_n_u8(q, 6), off));
    }
}

/* Any R=4 format: the right unpacker for the super-block at sb. */
AI void lb_unpack_any_r4(int fmt, int B, const uint8_t *sb, const int8_t *aux, int8x16_t w[8]) {
    if (fmt == LB_FMT_CB4) lb_unpack_cb4_r4(B, sb, aux, w);
    else if (fmt == LB_FMT_CB2) lb_unpack_cb2_r4(B, sb, aux, w);
    else lb_unpack_r4(fmt, sb + 8, w);
}

/* Store the R=4 columns of group g that are < N and < n1. */
AI void lb_store4(float *out, float32x4_t v, int g, int n1, int N) {
    const int c0 = 4 * g;
    if (c0 + 4 <= N && c0 + 4 <= n1) { vst1q_f32(out + c0, v); return; }
    float t[4];
    vst1q_f32(t, v);
    for (int r = 0; r < 4; r++)
        if (c0 + r < N && c0 + r < n1) out[c0 + r] = t[r];
}
#endif
