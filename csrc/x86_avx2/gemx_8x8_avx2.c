/* AVX2 GEMV (1x8) and GEMM (4x8) on the 8-row, 8-byte interleave, for q4_0, iq4_nl and q8_0 weights.
 * Compiled with -mavx2 -mfma -mf16c only (setup.py); called only when cpuid reports all three.
 *
 * One ymm of packed nibbles = 4 rows x 8 bytes. q4_0: XOR 0x88 (folded into the load) restores the unsigned
 * codes q (0..15); maddubs(q, a) pairs stay <= 2*15*127, so four of them add in int16 (<= 15240) and one
 * hadd_epi16 of the two 4-row halves still fits (<= 30480): 8 maddubs + 6 adds + hadd + madd per 8 rows.
 * The -8 offset is folded once per block as -8*Σa (the activation block sums).
 * iq4_nl and q8_0 weights are signed: maddubs(|w|, sign(a, w)) pairs reach 2*127*127, so each is widened.
 * Integer block sums land in lanes ordered rows [0,1,4,5,2,3,6,7]; the fp16 scales are put in that order by
 * one pshufd before conversion, and the accumulator goes back to row order once per row group.
 * GEMV runs two row groups per block step (they share the activation broadcasts and per-block constants,
 * which are converted once per call into small stack tables). The q4_0 GEMM walks a block octet by octet
 * (q4_hsum4) so the unpacked weights meet all four tokens with the accumulators in registers; every GEMM
 * finishes the four integer sums before the four float updates. */
#ifndef __AVX2__
#error "this file must be compiled with -mavx2 -mfma -mf16c"
#endif
#include <immintrin.h>
#include <string.h>
#include "avx2.h"
#include "signed_dot.h"

#define LB_PF 2048   /* bytes */
#define AI static inline __attribute__((always_inline))

AI __m256i bcast8(const uint8_t *p) { int64_t v; memcpy(&v, p, 8); return _mm256_set1_epi64x(v); }
AI int sb_bytes(int fmt) { return fmt == LB_FMT_Q8_0 ? 8 * 34 : 8 * 18; }

/* The 8 fp16 row scales of a super-block as floats in lane order [0,1,4,5,2,3,6,7]. */
AI __m256 load_dw(const uint8_t *sb) {
    return _mm256_cvtph_ps(_mm_shuffle_epi32(_mm_loadu_si128((const __m128i *)sb), 0xD8));
}

/* The partial last row group; out of line so the callers' accumulators need no stack array. */
static __attribute__((noinline)) void store_tail(float *out, __m256 acc, int n) {
    float tmp[8];
    _mm256_storeu_ps(tmp, acc);
    for (int r = 0; r < n; r++) out[r] = tmp[r];
}

/* Lane order [0,1,4,5,2,3,6,7] -> rows 0..7 (the same 64-bit pair swap), then store the valid columns. */
AI void store_group(float *out, __m256 acc, int g, int n1, int N) {
    acc = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(acc), 0xD8));
    const int lim = n1 < N ? n1 : N;
    if (8 * g + 8 <= lim) { _mm256_storeu_ps(out + 8 * g, acc); return; }
    store_tail(out + 8 * g, acc, lim - 8 * g);
}

/* Integer block sums (before the q4_0 offset) of one 8-row super-block against activation octets a[0..3]. */
AI __m256i block_isum(int fmt, const uint8_t *qs, const __m256i a[4]) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
    /* L0: rows0-3 bytes0-7, L1: rows4-7 bytes0-7, L2: rows0-3 bytes8-15, L3: rows4-7 bytes8-15;
     * low nibbles are elements 0..15, high nibbles 16..31 -> activation octets a0,a1 (low), a2,a3 (high). */
    if (fmt == LB_FMT_Q4_0) {
        const __m256i x88 = _mm256_set1_epi8((char)0x88);
        __m256i p[2];
        for (int h = 0; h < 2; h++) {
            const __m256i L0 = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(qs + 32 * h)), x88);
            const __m256i L2 = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(qs + 64 + 32 * h)), x88);
            const __m256i s01 = _mm256_add_epi16(_mm256_maddubs_epi16(_mm256_and_si256(L0, m4), a[0]),
                                                 _mm256_maddubs_epi16(_mm256_and_si256(L2, m4), a[1]));
            const __m256i s23 = _mm256_add_epi16(_mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(L0, 4), m4), a[2]),
                                                 _mm256_maddubs_epi16(_mm256_and_si256(_mm256_srli_epi16(L2, 4), m4), a[3]));
            p[h] = _mm256_add_epi16(s01, s23);
        }
        return _mm256_madd_epi16(_mm256_hadd_epi16(p[0], p[1]), ones);   /* one madd: 8% over madd x2 + hadd32 */
    }
    __m256i w[8];
    if (fmt == LB_FMT_Q8_0) {
        for (int i = 0; i < 8; i++) w[i] = _mm256_loadu_si256((const __m256i *)(qs + 32 * i));
    } else {
        const __m256i tab = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)lb_kvalues_iq4nl));
        for (int i = 0; i < 4; i++) {
            const __m256i L = _mm256_loadu_si256((const __m256i *)(qs + 32 * i));
            w[i] = _mm256_shuffle_epi8(tab, _mm256_and_si256(L, m4));
            w[4 + i] = _mm256_shuffle_epi8(tab, _mm256_and_si256(_mm256_srli_epi16(L, 4), m4));
        }
    }
    return lb_avx2_signed_dot8(w, a);   /* w[2k+h] = elements 8k..8k+7 of rows 4h..4h+3 */
}

/* q4_0 integer block sums (before the offset) of one 8-row super-block against all four tokens of a Q8_0x4
 * block, octet by octet: each unpacked weight vector meets the 4 tokens' broadcasts while 8 int16
 * accumulators (2 row halves x 4 tokens) stay in registers. The empty asm pins each accumulator after every
 * step; without it GCC reassociates the adds, computes all 32 maddubs first and spills them (+14% with it,
 * bit-identical). Lanes stay <= 4*2*15*127 = 15240 before the hadd, as in block_isum. */
AI void q4_hsum4(const uint8_t *qs, const uint8_t *ab, __m256i hsum[4]) {
    const __m256i m4 = _mm256_set1_epi8(0x0F), x88 = _mm256_set1_epi8((char)0x88);
    __m256i p[2][4];
    for (int k = 0; k < 4; k++) {   /* octet k: low nibbles of bytes 0-7 (k=0), 8-15 (1); high nibbles (2, 3) */
        __m256i w[2];
        for (int h = 0; h < 2; h++) {
            const __m256i L = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(qs + 64 * (k & 1) + 32 * h)), x88);
            w[h] = _mm256_and_si256(k < 2 ? L : _mm256_srli_epi16(L, 4), m4);
        }
        for (int i = 0; i < 4; i++) {
            const __m256i a = bcast8(ab + 8 + 32 * k + 8 * i);
            const __m256i m0 = _mm256_maddubs_epi16(w[0], a), m1 = _mm256_maddubs_epi16(w[1], a);
            if (k == 0) { p[0][i] = m0; p[1][i] = m1; }
            else { p[0][i] = _mm256_add_epi16(p[0][i], m0); p[1][i] = _mm256_add_epi16(p[1][i], m1); }
            __asm__("" : "+x"(p[0][i]), "+x"(p[1][i]));
        }
    }
    for (int i = 0; i < 4; i++) hsum[i] = _mm256_hadd_epi16(p[0][i], p[1][i]);   /* the madd is the caller's */
}

AI void gemv_8x8(int fmt, int K, const uint8_t *W, const uint8_t *A, const int16_t *bsums, float *out, int n0,
                 int n1, int N) {
    const int nb = K / LB_QK;
    const size_t sbb = (size_t)sb_bytes(fmt), gstride = (size_t)nb * sbb;
    /* per-block activation scale and q4_0 offset, converted once per call */
    float da[nb];
    int32_t off[nb];
    for (int b = 0; b < nb; b++) {
        da[b] = _cvtsh_ss((uint16_t)(A[(size_t)b * LB_Q8_BLOCK] | A[(size_t)b * LB_Q8_BLOCK + 1] << 8));
        off[b] = fmt == LB_FMT_Q4_0 ? 8 * bsums[b] : 0;
    }
    int g = n0 / 8;
    for (; 8 * g + 8 < n1; g += 2) {   /* two row groups per step */
        const uint8_t *s0 = W + (size_t)g * gstride, *s1 = s0 + gstride;
        __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
        for (int b = 0; b < nb; b++, s0 += sbb, s1 += sbb) {
            const uint8_t *ab = A + (size_t)b * LB_Q8_BLOCK + 2;
            __m256i a[4];
            for (int k = 0; k < 4; k++) a[k] = bcast8(ab + 8 * k);
            /* a software prefetch ~14 blocks ahead on both weight streams: +5..20% over the hardware prefetcher */
            _mm_prefetch((const char *)s0 + LB_PF, _MM_HINT_T0);
            _mm_prefetch((const char *)s1 + LB_PF, _MM_HINT_T0);
            _mm_prefetch((const char *)s0 + LB_PF + 64, _MM_HINT_T0);
            _mm_prefetch((const char *)s1 + LB_PF + 64, _MM_HINT_T0);
            const __m256i o = _mm256_set1_epi32(off[b]);
            const __m256 d = _mm256_set1_ps(da[b]);
            __m256i i0 = block_isum(fmt, s0 + 16, a), i1 = block_isum(fmt, s1 + 16, a);
            if (fmt == LB_FMT_Q4_0) { i0 = _mm256_sub_epi32(i0, o); i1 = _mm256_sub_epi32(i1, o); }
            acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i0), _mm256_mul_ps(load_dw(s0), d), acc0);
            acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i1), _mm256_mul_ps(load_dw(s1), d), acc1);
        }
        store_group(out, acc0, g, n1, N);
        store_group(out, acc1, g + 1, n1, N);
    }
    for (; 8 * g < n1; g++) {
        const uint8_t *s0 = W + (size_t)g * gstride;
        __m256 acc0 = _mm256_setzero_ps();
        for (int b = 0; b < nb; b++, s0 += sbb) {
            const uint8_t *ab = A + (size_t)b * LB_Q8_BLOCK + 2;
            __m256i a[4];
            for (int k = 0; k < 4; k++) a[k] = bcast8(ab + 8 * k);
            __m256i i0 = block_isum(fmt, s0 + 16, a);
            if (fmt == LB_FMT_Q4_0) i0 = _mm256_sub_epi32(i0, _mm256_set1_epi32(off[b]));
            acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i0), _mm256_mul_ps(load_dw(s0), _mm256_set1_ps(da[b])), acc0);
        }
        store_group(out, acc0, g, n1, N);
    }
}

AI void gemm_8x8(int fmt, int K, const uint8_t *W, const uint8_t *A4, const int16_t *bsums4, float *out,
                 size_t ldo, int n0, int n1, int N) {
    const int nb = K / LB_QK;
    const size_t sbb = (size_t)sb_bytes(fmt);
    /* the 4 tokens' scales and q4_0 offsets per block, converted once per call and read back by broadcast
     * loads (no shuffle ops in the block loop) */
    float das[nb][4] __attribute__((aligned(16)));
    int32_t offs[nb][4] __attribute__((aligned(16)));
    for (int b = 0; b < nb; b++) {
        _mm_store_ps(das[b], _mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)(A4 + (size_t)b * LB_Q8X4_BLOCK))));
        _mm_store_si128((__m128i *)offs[b],
                        _mm_slli_epi32(_mm_cvtepi16_epi32(_mm_loadl_epi64((const __m128i *)(bsums4 + 4 * b))), 3));
    }
    for (int g = n0 / 8; 8 * g < n1; g++) {
        const uint8_t *sb = W + (size_t)g * nb * sbb;
        __m256 acc[4] = {_mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps(), _mm256_setzero_ps()};
        for (int b = 0; b < nb; b++, sb += sbb) {
            const uint8_t *ab = A4 + (size_t)b * LB_Q8X4_BLOCK;
            /* all four integer sums first, then the four float updates: +5% over finishing each token in
             * turn (the long per-token chain no longer sits between the maddubs of consecutive tokens) */
            __m256i isum[4];
            if (fmt == LB_FMT_Q4_0) q4_hsum4(sb + 16, ab, isum);
            else
                for (int i = 0; i < 4; i++) {
                    __m256i a[4];
                    for (int k = 0; k < 4; k++) a[k] = bcast8(ab + 8 + 32 * k + 8 * i);
                    isum[i] = block_isum(fmt, sb + 16, a);
                }
            const __m256 dw = load_dw(sb);
            for (int i = 0; i < 4; i++) {
                if (fmt == LB_FMT_Q4_0)
                    isum[i] = _mm256_sub_epi32(_mm256_madd_epi16(isum[i], _mm256_set1_epi16(1)), _mm256_castps_si256(_mm256_broadcast_ss((const float *)&offs[b][i])));
                acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[i]), _mm256_mul_ps(dw, _mm256_broadcast_ss(&das[b][i])), acc[i]);
            }
        }
        for (int i = 0; i < 4; i++) store_group(out + i * ldo, acc[i], g, n1, N);
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
