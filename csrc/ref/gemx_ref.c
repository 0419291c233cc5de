/* Scalar GEMV/GEMM for every weight format and interleave, written once over (fmt, R, B). */
#include <string.h>
#include "ref.h"

/* Bytes of one super-block and where its parts live (see blocks.h). */
static inline size_t sb_bytes(int fmt, int R) {
    switch (fmt) {
    case LB_FMT_Q8_0: return (size_t)R * 34;
    case LB_FMT_CB2: return (size_t)R * 10;
    default: return (size_t)R * 18;   /* q4_0, iq4_nl, cb4 */
    }
}
static inline int is_cb(int fmt) { return fmt == LB_FMT_CB4 || fmt == LB_FMT_CB2; }
static inline uint16_t s_word(const uint8_t *sb, int r) { uint16_t h; memcpy(&h, sb + 2 * r, 2); return h; }
static inline int row_bytes(int fmt) { return fmt == LB_FMT_Q8_0 ? 32 : fmt == LB_FMT_CB2 ? 8 : 16; }

/* Weight element e (0..31) of row r in a super-block. The byte of a row's plain block at offset j lives at
 * packed offset ((j/B)*R + r)*B + j%B. 4-bit: byte j holds elements j (low) and j+16 (high).
 * 2-bit (cb2): byte j holds elements j, j+8, j+16, j+24 in bits 0-1, 2-3, 4-5, 6-7. */
static inline int w_elem(int fmt, const uint8_t *sb, const int8_t *aux, int R, int B, int r, int e) {
    const uint8_t *qs = sb + 2 * R;
    if (fmt == LB_FMT_Q8_0) {
        int j = e;
        return (int8_t)qs[((j / B) * R + r) * B + j % B];
    }
    if (fmt == LB_FMT_CB2) {
        int j = e & 7, sh = 2 * (e >> 3);
        uint8_t byte = qs[((j / B) * R + r) * B + j % B];
        int id = s_word(sb, r) & 15;   /* cb: the codebook id is the scale word's low 4 bits */
        return aux[id * 16 + ((byte >> sh) & 3)];
    }
    int j = e & 15, hi = e >> 4;
    uint8_t byte = qs[((j / B) * R + r) * B + j % B];
    int nib = hi ? byte >> 4 : byte & 15;
    switch (fmt) {
    case LB_FMT_Q4_0: return (nib ^ 8) - 8;   /* stored XOR 0x88: the nibble is two's complement q-8 */
    case LB_FMT_IQ4_NL: return lb_kvalues_iq4nl[nib];
    default: return aux[(s_word(sb, r) & 15) * 16 + nib];   /* cb4 */
    }
}

/* cb formats: the scale is the word with its id bits cleared (an fp16 with a 6-bit mantissa). */
static inline float w_scale(int fmt, const uint8_t *sb, int r) {
    uint16_t h = s_word(sb, r);
    return lb_fp16_to_fp32(is_cb(fmt) ? (uint16_t)(h & 0xFFF0) : h);
}

static void gemv_ref(int fmt, int R, int B, int K, const uint8_t *W, const int8_t *aux, const uint8_t *A,
                     float *out, int n0, int n1, int N) {
    const int nb = K / LB_QK;
    const size_t sbb = sb_bytes(fmt, R);
    float acc[8];
    for (int g = n0 / R; g * R < n1; g++) {
        for (int r = 0; r < R; r++) acc[r] = 0.0f;
        for (int b = 0; b < nb; b++) {
            const uint8_t *sb = W + ((size_t)g * nb + b) * sbb;
            const uint8_t *ab = A + (size_t)b * LB_Q8_BLOCK;
            uint16_t dh; memcpy(&dh, ab, 2);
            const float da = lb_fp16_to_fp32(dh);
            const int8_t *aq = (const int8_t *)(ab + 2);
            for (int r = 0; r < R; r++) {
                int32_t isum = 0;
                for (int e = 0; e < LB_QK; e++) isum += w_elem(fmt, sb, aux, R, B, r, e) * aq[e];
                acc[r] += (float)isum * (w_scale(fmt, sb, r) * da);
            }
        }
        for (int r = 0; r < R; r++)
            if (g * R + r < N && g * R + r < n1) out[g * R + r] = acc[r];
    }
    (void)row_bytes;
}

/* Activation element e of row i in a Q8_0x4 block with chunk act_B. */
static inline int a4_elem(const uint8_t *ab, int act_B, int i, int e) {
    return (int8_t)ab[8 + ((e / act_B) * 4 + i) * act_B + e % act_B];
}

static void gemm_ref(int fmt, int R, int B, int act_B, int K, const uint8_t *W, const int8_t *aux,
                     const uint8_t *A4, float *out, size_t ldo, int n0, int n1, int N) {
    const int nb = K / LB_QK;
    const size_t sbb = sb_bytes(fmt, R);
    float acc[4][8];
    for (int g = n0 / R; g * R < n1; g++) {
        memset(acc, 0, sizeof acc);
        for (int b = 0; b < nb; b++) {
            const uint8_t *sb = W + ((size_t)g * nb + b) * sbb;
            const uint8_t *ab = A4 + (size_t)b * LB_Q8X4_BLOCK;
            for (int i = 0; i < 4; i++) {
                uint16_t dh; memcpy(&dh, ab + 2 * i, 2);
                const float da = lb_fp16_to_fp32(dh);
                for (int r = 0; r < R; r++) {
                    int32_t isum = 0;
                    for (int e = 0; e < LB_QK; e++)
                        isum += w_elem(fmt, sb, aux, R, B, r, e) * a4_elem(ab, act_B, i, e);
                    acc[i][r] += (float)isum * (w_scale(fmt, sb, r) * da);
                }
            }
        }
        for (int i = 0; i < 4; i++)
            for (int r = 0; r < R; r++)
                if (g * R + r < N && g * R + r < n1) out[i * ldo + g * R + r] = acc[i][r];
    }
}

#define LB_REF_DEF(fmt, FMT, R, B, ACT_B)                                                                   \
    void gemv_##fmt##_##R##x##B##__scalar(int K, const uint8_t *W, const int8_t *aux, const uint8_t *A,      \
                                          const int16_t *bsums, float *out, int n0, int n1, int N) {         \
        (void)bsums; gemv_ref(FMT, R, B, K, W, aux, A, out, n0, n1, N);                                      \
    }                                                                                                         \
    void gemm_##fmt##_##R##x##B##__scalar(int K, const uint8_t *W, const int8_t *aux, const uint8_t *A4,     \
                                          const int16_t *bsums4, float *out, size_t ldo, int n0, int n1,     \
                                          int N) {                                                            \
        (void)bsums4; gemm_ref(FMT, R, B, ACT_B, K, W, aux, A4, out, ldo, n0, n1, N);                         \
    }

LB_REF_DEF(q4_0, LB_FMT_Q4_0, 4, 4, 4)
LB_REF_DEF(q4_0, LB_FMT_Q4_0, 4, 8, 8)
LB_REF_DEF(q4_0, LB_FMT_Q4_0, 8, 8, 8)
LB_REF_DEF(iq4_nl, LB_FMT_IQ4_NL, 4, 4, 4)
LB_REF_DEF(iq4_nl, LB_FMT_IQ4_NL, 4, 8, 8)
LB_REF_DEF(iq4_nl, LB_FMT_IQ4_NL, 8, 8, 8)
LB_REF_DEF(q8_0, LB_FMT_Q8_0, 4, 4, 4)
LB_REF_DEF(q8_0, LB_FMT_Q8_0, 4, 8, 8)
LB_REF_DEF(q8_0, LB_FMT_Q8_0, 8, 8, 8)
LB_REF_DEF(cb4, LB_FMT_CB4, 4, 4, 4)
LB_REF_DEF(cb4, LB_FMT_CB4, 4, 8, 8)
LB_REF_DEF(cb4, LB_FMT_CB4, 8, 8, 8)
LB_REF_DEF(cb4, LB_FMT_CB4, 8, 16, 16)
LB_REF_DEF(cb2, LB_FMT_CB2, 4, 4, 4)
LB_REF_DEF(cb2, LB_FMT_CB2, 4, 8, 8)
LB_REF_DEF(cb2, LB_FMT_CB2, 8, 8, 8)
