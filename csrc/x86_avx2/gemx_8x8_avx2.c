/* AVX2 GEMV (1x8) and GEMM (4x8) on the 8-row, 8-byte interleave, for q4_0, iq4_nl and q8_0 weights.
 * Compiled with -mavx2 -mfma -mf16c only (setup.py); called only when cpuid reports all three.
 *
 * One ymm of packed nibbles = 4 rows x 8 bytes. q4_0: XOR 0x88 restores the unsigned codes q (0..15), and
 * maddubs(q, a) pairs stay <= 2*15*127, so four of them add in int16; the -8 offset is folded once per block
 * as -8*Σa (the activation block sums). iq4_nl and q8_0 weights are signed: maddubs(|w|, sign(a, w)).
 * Integer block sums land in lanes ordered rows [0,1,4,5,2,3,6,7] (hadd of two 4-row halves); scales are
 * permuted the same way and the accumulator is put back in row order once at the end. */
#ifndef __AVX2__
#error "this file must be compiled with -mavx2 -mfma -mf16c"
#endif
#include <immintrin.h>
#include <string.h>
#include "avx2.h"

#define AI static inline __attribute__((always_inline))

static const int32_t PERM[8] = {0, 1, 4, 5, 2, 3, 6, 7};

AI float fp16(const uint8_t *p) { uint16_t h; memcpy(&h, p, 2); return _cvtsh_ss(h); }
AI __m256i bcast8(const uint8_t *p) { int64_t v; memcpy(&v, p, 8); return _mm256_set1_epi64x(v); }

/* Unpacked weights of one super-block: w[2k+h] = elements 8k..8k+7 of rows 4h..4h+3 (int8 or uint8 codes). */
typedef struct { __m256i v[8]; } wblk;

AI void unpack(int fmt, const uint8_t *qs, wblk *w) {
    if (fmt == LB_FMT_Q8_0) {
        for (int i = 0; i < 8; i++) w->v[i] = _mm256_loadu_si256((const __m256i *)(qs + 32 * i));
        return;
    }
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    __m256i L[4];
    for (int i = 0; i < 4; i++) L[i] = _mm256_loadu_si256((const __m256i *)(qs + 32 * i));
    if (fmt == LB_FMT_Q4_0) {
        const __m256i x88 = _mm256_set1_epi8((char)0x88);
        for (int i = 0; i < 4; i++) L[i] = _mm256_xor_si256(L[i], x88);
    }
    /* L0: rows0-3 bytes0-7, L1: rows4-7 bytes0-7, L2: rows0-3 bytes8-15, L3: rows4-7 bytes8-15 */
    w->v[0] = _mm256_and_si256(L[0], m4);
    w->v[1] = _mm256_and_si256(L[1], m4);
    w->v[2] = _mm256_and_si256(L[2], m4);
    w->v[3] = _mm256_and_si256(L[3], m4);
    w->v[4] = _mm256_and_si256(_mm256_srli_epi16(L[0], 4), m4);
    w->v[5] = _mm256_and_si256(_mm256_srli_epi16(L[1], 4), m4);
    w->v[6] = _mm256_and_si256(_mm256_srli_epi16(L[2], 4), m4);
    w->v[7] = _mm256_and_si256(_mm256_srli_epi16(L[3], 4), m4);
    if (fmt == LB_FMT_IQ4_NL) {
        const __m256i tab = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)lb_kvalues_iq4nl));
        for (int i = 0; i < 8; i++) w->v[i] = _mm256_shuffle_epi8(tab, w->v[i]);
    }
}

/* Integer block sums of 8 rows against one activation block (octets a[0..3] broadcast), lanes in PERM order. */
AI __m256i block_dot(int fmt, const wblk *w, const __m256i a[4], int bsum) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i s[2];
    if (fmt == LB_FMT_Q4_0) {
        for (int h = 0; h < 2; h++) {
            __m256i p = _mm256_maddubs_epi16(w->v[h], a[0]);
            p = _mm256_add_epi16(p, _mm256_maddubs_epi16(w->v[2 + h], a[1]));
            p = _mm256_add_epi16(p, _mm256_maddubs_epi16(w->v[4 + h], a[2]));
            p = _mm256_add_epi16(p, _mm256_maddubs_epi16(w->v[6 + h], a[3]));
            s[h] = _mm256_madd_epi16(p, ones);
        }
        return _mm256_sub_epi32(_mm256_hadd_epi32(s[0], s[1]), _mm256_set1_epi32(8 * bsum));
    }
    for (int h = 0; h < 2; h++) {
        __m256i acc = _mm256_setzero_si256();
        for (int k = 0; k < 4; k++) {
            const __m256i wv = w->v[2 * k + h];
            __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(a[k], wv));
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, ones));
        }
        s[h] = acc;
    }
    (void)bsum;
    return _mm256_hadd_epi32(s[0], s[1]);
}

/* Element octets of a q8_0 weight row chunk sit at +64k; of 4-bit formats the nibble stream is 128 bytes. */
AI size_t sb_bytes(int fmt) { return fmt == LB_FMT_Q8_0 ? 8 * 34 : 8 * 18; }

AI void store_cols(float *out, const float *acc, int g, int n1, int N) {
    for (int r = 0; r < 8; r++)
        if (8 * g + r < N && 8 * g + r < n1) out[8 * g + r] = acc[r];
}

AI void gemv_8x8(int fmt, int K, const uint8_t *W, const uint8_t *A, const int16_t *bsums, float *out, int n0,
                 int n1, int N) {
    const int nb = K / LB_QK;
    const size_t sbb = sb_bytes(fmt);
    const __m256i perm = _mm256_loadu_si256((const __m256i *)PERM);
    for (int g = n0 / 8; 8 * g < n1; g++) {
        const uint8_t *sb = W + (size_t)g * nb * sbb;
        __m256 acc = _mm256_setzero_ps();
        for (int b = 0; b < nb; b++, sb += sbb) {
            const uint8_t *ab = A + (size_t)b * LB_Q8_BLOCK;
            __m256i a[4];
            for (int k = 0; k < 4; k++) a[k] = bcast8(ab + 2 + 8 * k);
            wblk w;
            unpack(fmt, sb + 16, &w);
            const __m256i isum = block_dot(fmt, &w, a, bsums[b]);
            const __m256 dw = _mm256_permutevar8x32_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)sb)), perm);
            acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(dw, _mm256_set1_ps(fp16(ab))), acc);
        }
        float tmp[8], res[8];
        _mm256_storeu_ps(tmp, acc);
        for (int i = 0; i < 8; i++) res[PERM[i]] = tmp[i];
        store_cols(out, res, g, n1, N);
    }
}

AI void gemm_8x8(int fmt, int K, const uint8_t *W, const uint8_t *A4, const int16_t *bsums4, float *out,
                 size_t ldo, int n0, int n1, int N) {
    const int nb = K / LB_QK;
    const size_t sbb = sb_bytes(fmt);
    const __m256i perm = _mm256_loadu_si256((const __m256i *)PERM);
    for (int g = n0 / 8; 8 * g < n1; g++) {
        const uint8_t *sb = W + (size_t)g * nb * sbb;
        __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
        for (int b = 0; b < nb; b++, sb += sbb) {
            const uint8_t *ab = A4 + (size_t)b * LB_Q8X4_BLOCK;
            wblk w;
            unpack(fmt, sb + 16, &w);
            const __m256 dw = _mm256_permutevar8x32_ps(_mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)sb)), perm);
            const __m128 da = _mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)ab));
            float das[4];
            _mm_storeu_ps(das, da);
            for (int i = 0; i < 4; i++) {
                __m256i a[4];
                for (int k = 0; k < 4; k++) a[k] = bcast8(ab + 8 + 32 * k + 8 * i);
                const __m256i isum = block_dot(fmt, &w, a, bsums4[4 * b + i]);
                acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(dw, _mm256_set1_ps(das[i])), acc[i]);
            }
        }
        for (int i = 0; i < 4; i++) {
            float tmp[8], res[8];
            _mm256_storeu_ps(tmp, acc[i]);
            for (int r = 0; r < 8; r++) res[PERM[r]] = tmp[r];
            store_cols(out + i * ldo, res, g, n1, N);
        }
    }
}

#define LB_AVX2_DEF(name, FMT)                                                                              \
    void gemv_##name(int K, const uint8_t *W, const int8_t *aux, const uint8_t *A, const int16_t *bsums,     \
                     float *out, int n0, int n1, int N) {                                                    \
        (void)aux; gemv_8x8(FMT, K, W, A, bsums, out, n0, n1, N);                                            \
    }                                                                                                         \
    void gemm_##name(int K, const uint8_t *W, const int8_t *aux, const uint8_t *A4, const int16_t *bsums4,  \
                     float *out, size_t ldo, int n0, int n1, int N) {                                        \
        (void)aux; gemm_8x8(FMT, K, W, A4, bsums4, out, ldo, n0, n1, N);                                     \
    }

LB_AVX2_DEF(q4_0_8x8__avx2, LB_FMT_Q4_0)
LB_AVX2_DEF(iq4_nl_8x8__avx2, LB_FMT_IQ4_NL)
LB_AVX2_DEF(q8_0_8x8__avx2, LB_FMT_Q8_0)
