/* AVX2 GEMV (1x8) and GEMM (4x8) for the codebook formats: cb4 on the 8-row, 16-byte interleave (8x16),
 * cb2 on the 8-row, 8-byte interleave. Compiled with -mavx2 -mfma -mf16c only (setup.py); called only when
 * cpuid reports all three. Each row's codebook id is the low 4 bits of its scale word; aux is 16 tables.
 *
 * cb4: every row may use a different 16-entry table, and PSHUFB looks up one table per 128-bit lane. With
 * 16-byte chunks one ymm of codes is rows 2v, 2v+1, a whole row per lane, so no regrouping is needed; the
 * lane pair's two tables are one load from an array of all 256 table pairs. Low nibbles are elements 0..15,
 * high nibbles 16..31, dotted against the activation halves broadcast to both lanes as maddubs(|a|, sign(w, a)).
 * When all tables lie in [-64, 64] the two halves' products add in int16 before one madd. Three hadd levels
 * leave the row sums in lane order EO = [0,2,4,6,1,3,5,7]. GEMM takes Q8_0x4 activations with 16-byte chunks
 * (act_B = 16); for full-range tables it regroups the looked-up weights once per block to 4 rows x 8 bytes per
 * vector (one hadd per token instead of three).
 * cb2: 4 entries per table; a lane holds 2 rows x 8 code bytes, so its PSHUFB table is the two rows' tables
 * (entries 0..3 and 4..7, one load from an array of all 256 pairs) and the second row's index gets +4. The
 * layout then matches iq4_nl's (elements 8k..8k+7 of rows 4h..4h+3 per ymm). With tables in [-64, 63] (what
 * the learner emits) the pairs hold entries + 64 and maddubs(w + 64, a) runs without sign ops (-64*Σa folded
 * per block); in [-16, 16] (`lowbit quantize --narrow-tables`) entries + 16, and the block's 4 octets add in
 * int16 as in q4_0; else the signed dot of signed_dot.h. Row sums in lane order PERM = [0,1,4,5,2,3,6,7].
 * GEMV runs two row groups per block step: they share the activation loads and the per-call tables of
 * activation scales and offsets (as gemx_8x8_avx2.c does). GEMM prepares the 4 tokens' activations once per
 * call (broadcast, |a|, scales, offsets; 16 KB chunks) and walks row groups in tiles with stack accumulators.
 * Measured costs on this Zen1-class core (TSC cycles per ymm op, independent chains): maddubs and madd 1.6 (one
 * port), hadd 2.4, cvtdq2ps 1.6, 16-bit shift 1.6, unpack 0.8-1.15, sign and pshufb 0.8, add 0.54: moving work
 * between the multiply port and the other ports (biased tables, shift-based widening) lost in every trial. */
#ifndef __AVX2__
#error "this file must be compiled with -mavx2 -mfma -mf16c"
#endif
#include <immintrin.h>
#include <string.h>
#include "cb_avx2.h"
#include "signed_dot.h"

#define AI static inline __attribute__((always_inline))

AI float fp16(const uint8_t *p) { uint16_t h; memcpy(&h, p, 2); return _cvtsh_ss(h); }
AI __m256i bcast8(const uint8_t *p) { int64_t v; memcpy(&v, p, 8); return _mm256_set1_epi64x(v); }
AI int32_t ld32(const int8_t *p) { int32_t v; memcpy(&v, p, 4); return v; }

/* ---- cb2 on the 8-row, 8-byte interleave: ymm h of a super-block's codes = rows 4h, 4h+1 (lane 0) and
 * 4h+2, 4h+3 (lane 1), 8 bytes each. A lane's PSHUFB table holds its two rows' 4-entry tables (entries 0..3
 * and 4..7), one 16-byte load from a per-call array of all 16 x 16 table pairs (4 KB on the stack), so any
 * ids work at the same speed. The index is crumb | 4 * (second row of the lane): one OR per extracted
 * vector, before the 4-bit shift, because bit 2 and bit 6 both carry it (0x44) and bit 7 stays clear. */

typedef struct { __m128i t[256]; } cb2_pairs;   /* t[16a + b] = [table a entries 0..3, table b entries 0..3, 0] */

/* Fills the pair array and returns the dot path it was built for (entries 0..3 of all 16 tables):
 * CB2_NARROW when all lie in [-16, 16] (stores entries + 16: q4_0's schedule, the 4 octets add in int16),
 * CB2_BIASED when all lie in [-64, 63] (stores entries + 64), else CB2_SIGNED (entries as they are). */
enum { CB2_SIGNED = 0, CB2_BIASED = 1, CB2_NARROW = 2 };
static int cb2_build_pairs(const int8_t *aux, cb2_pairs *p) {
    __m128i out7 = _mm_setzero_si128(), out5 = _mm_setzero_si128();
    for (int i = 0; i < 4; i++) {
        const __m128i t = _mm_setr_epi32(ld32(aux + 64 * i), ld32(aux + 64 * i + 16), ld32(aux + 64 * i + 32),
                                         ld32(aux + 64 * i + 48));
        out7 = _mm_or_si128(out7, _mm_or_si128(_mm_cmpgt_epi8(t, _mm_set1_epi8(63)), _mm_cmplt_epi8(t, _mm_set1_epi8(-64))));
        out5 = _mm_or_si128(out5, _mm_or_si128(_mm_cmpgt_epi8(t, _mm_set1_epi8(16)), _mm_cmplt_epi8(t, _mm_set1_epi8(-16))));
    }
    const int path = _mm_testz_si128(out5, out5) ? CB2_NARROW : _mm_testz_si128(out7, out7) ? CB2_BIASED : CB2_SIGNED;
    const __m128i bias = _mm_set_epi64x(0, path == CB2_NARROW ? 0x1010101010101010ll
                                          : path == CB2_BIASED ? 0x4040404040404040ll : 0);
    for (int a = 0; a < 16; a++)
        for (int b = 0; b < 16; b++)
            p->t[16 * a + b] = _mm_add_epi8(_mm_setr_epi32(ld32(aux + 16 * a), ld32(aux + 16 * b), 0, 0), bias);
    return path;
}

/* The pair arrays are a pure function of the 256 aux bytes. linear.c calls GEMM once per weight panel x 4 tokens,
 * so rebuilding them per call would cost as much as the work; each thread keeps its last build, reused while
 * the aux bytes are the same (compared in full, so a reused address with new tables is rebuilt). */
#define LB_PAIR_CACHE(fmt, T, build)                                                                        \
    static const T *fmt##_pairs_for(const int8_t *aux, int *u) {                                           \
        static __thread struct { T p; int8_t key[LB_CB_AUX_BYTES]; int u, valid; } c;                      \
        if (!c.valid || memcmp(c.key, aux, LB_CB_AUX_BYTES)) {                                            \
            c.u = build(aux, &c.p);                                                                         \
            memcpy(c.key, aux, LB_CB_AUX_BYTES);                                                            \
            c.valid = 1;                                                                                    \
        }                                                                                                   \
        *u = c.u;                                                                                           \
        return &c.p;                                                                                        \
    }
LB_PAIR_CACHE(cb2, cb2_pairs, cb2_build_pairs)

/* cb2 weights: w[2k+h] = elements 8k..8k+7 of rows 4h..4h+3 (the iq4_nl layout), from the pair tables. */
AI void cb2_lookup(const uint8_t *sb, const cb2_pairs *p, __m256i w[8]) {
    const uint8_t *qs = sb + 16;
    const __m256i m33 = _mm256_set1_epi8(0x33);
    const __m256i row2 = _mm256_setr_epi64x(0, 0x4444444444444444ll, 0, 0x4444444444444444ll);
    uint64_t x[2];
    memcpy(x, sb, 16);   /* x[h]: the scale words of rows 4h..4h+3 */
    for (int h = 0; h < 2; h++) {
        const uint64_t v = x[h];
        const __m256i t = _mm256_inserti128_si256(_mm256_castsi128_si256(p->t[((v & 15) << 4) | ((v >> 16) & 15)]),
                                                  p->t[((v >> 28) & 0xF0) | ((v >> 48) & 15)], 1);
        const __m256i Q = _mm256_loadu_si256((const __m256i *)(qs + 32 * h));
        /* X: crumbs 0, 2 in bits 0-1, 4-5; Y: crumbs 1, 3. PSHUFB reads index bits 0-3 and 7 only; after the
         * 16-bit shift by 4, bit 7 of the low byte is the high byte's bit 3, which 0x33 | 0x44 keeps clear. */
        const __m256i X = _mm256_or_si256(_mm256_and_si256(Q, m33), row2);
        const __m256i Y = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(Q, 2), m33), row2);
        w[h] = _mm256_shuffle_epi8(t, X);
        w[2 + h] = _mm256_shuffle_epi8(t, Y);
        w[4 + h] = _mm256_shuffle_epi8(t, _mm256_srli_epi16(X, 4));
        w[6 + h] = _mm256_shuffle_epi8(t, _mm256_srli_epi16(Y, 4));
    }
}

/* cb2 dot when the weights were looked up from tables + 64 (all entries in [-64, 63]): maddubs(w + 64, a)
 * without sign ops; the caller subtracts 64 * Σa (Σa = the activation block sum). */
AI __m256i cb2_dot_u0(const __m256i w[8], const __m256i a[4]) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i s[2];
    for (int h = 0; h < 2; h++) {
        __m256i acc = _mm256_madd_epi16(_mm256_maddubs_epi16(w[h], a[0]), ones);
        for (int k = 1; k < 4; k++)
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(w[2 * k + h], a[k]), ones));
        s[h] = acc;
    }
    return _mm256_hadd_epi32(s[0], s[1]);
}

/* cb2 dot on the narrow path (tables + 16, all in [0, 32]): the 4 octets' maddubs add in int16 as in q4_0
 * (each lane <= 4 * 2 * 32 * 127 = 32512), then one madd per row half: 10 multiplies per block instead of 16.
 * The caller subtracts 16 * Σa. */
AI __m256i cb2_dot_n(const __m256i w[8], const __m256i a[4]) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i s[2];
    for (int h = 0; h < 2; h++)
        s[h] = _mm256_madd_epi16(_mm256_add_epi16(_mm256_add_epi16(_mm256_maddubs_epi16(w[h], a[0]),
                                                                   _mm256_maddubs_epi16(w[2 + h], a[1])),
                                                  _mm256_add_epi16(_mm256_maddubs_epi16(w[4 + h], a[2]),
                                                                   _mm256_maddubs_epi16(w[6 + h], a[3]))),
                                 ones);
    return _mm256_hadd_epi32(s[0], s[1]);
}

/* Integer row sums (PERM order) of looked-up weights against one token's octets on path u; off = the bias
 * times Σa (ignored on the signed path). */
AI __m256i cb2_dot(int u, const __m256i w[8], const __m256i a[4], __m256i off) {
    if (u == CB2_NARROW) return _mm256_sub_epi32(cb2_dot_n(w, a), off);
    if (u == CB2_BIASED) return _mm256_sub_epi32(cb2_dot_u0(w, a), off);
    return lb_avx2_signed_dot8(w, a);
}

/* log2 of the bias folded into the offsets: entries + 16 (narrow) or + 64 (biased). */
#define CB2_SHIFT(u) ((u) == CB2_NARROW ? 4 : 6)

/* PERM lane order -> rows 0..7 (a 64-bit pair swap), then store the valid columns. */
AI void store_cols(float *out, __m256 acc, int g, int n1, int N) {
    acc = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(acc), 0xD8));
    const int lim = n1 < N ? n1 : N;
    if (8 * g + 8 <= lim) { _mm256_storeu_ps(out + 8 * g, acc); return; }
    float tmp[8];
    _mm256_storeu_ps(tmp, acc);
    for (int r = 0; 8 * g + r < lim; r++) out[8 * g + r] = tmp[r];
}

#define LB_PF 2048   /* bytes ahead, as in gemx_8x8_avx2.c */

/* The 8 row scales of a super-block (scale words with the id bits cleared) as floats in PERM lane order
 * (one in-lane pshufd). */
AI __m256 load_dw(const uint8_t *sb) {
    const __m128i h = _mm_and_si128(_mm_loadu_si128((const __m128i *)sb), _mm_set1_epi16((short)LB_CB_SCALE_MASK));
    return _mm256_cvtph_ps(_mm_shuffle_epi32(h, 0xD8));
}

/* cb2 integer row sums (PERM order) of one super-block against the block's activation octets. */
AI __m256i cb2_gemv_isum(int u, const uint8_t *sb, const cb2_pairs *p, const __m256i a[4], int32_t off) {
    __m256i w[8];
    cb2_lookup(sb, p, w);
    return cb2_dot(u, w, a, _mm256_set1_epi32(off));
}

AI void gemv_cb2_u(int u, int K, const uint8_t *W, const cb2_pairs *p, const uint8_t *A, const int16_t *bsums,
                   float *out, int n0, int n1, int N) {
    const int nb = K / LB_QK;
    const size_t sbb = 8 * 10, gstride = (size_t)nb * sbb;
    /* per-block activation scale and offset (bias * Σa), converted once per call */
    float da[nb];
    int32_t off[nb];
    for (int b = 0; b < nb; b++) {
        da[b] = fp16(A + (size_t)b * LB_Q8_BLOCK);
        off[b] = bsums[b] * (1 << CB2_SHIFT(u));
    }
    int g = n0 / 8;
    for (; 8 * g + 8 < n1; g += 2) {   /* two row groups per step share the activation prep */
        const uint8_t *s0 = W + (size_t)g * gstride, *s1 = s0 + gstride;
        __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
        for (int b = 0; b < nb; b++, s0 += sbb, s1 += sbb) {
            const uint8_t *ab = A + (size_t)b * LB_Q8_BLOCK + 2;
            __m256i a[4];
            for (int k = 0; k < 4; k++) a[k] = bcast8(ab + 8 * k);
            _mm_prefetch((const char *)s0 + LB_PF, _MM_HINT_T0);
            _mm_prefetch((const char *)s1 + LB_PF, _MM_HINT_T0);
            const __m256 d = _mm256_set1_ps(da[b]);
            const __m256i i0 = cb2_gemv_isum(u, s0, p, a, off[b]);
            const __m256i i1 = cb2_gemv_isum(u, s1, p, a, off[b]);
            acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i0), _mm256_mul_ps(load_dw(s0), d), acc0);
            acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i1), _mm256_mul_ps(load_dw(s1), d), acc1);
        }
        store_cols(out, acc0, g, n1, N);
        store_cols(out, acc1, g + 1, n1, N);
    }
    for (; 8 * g < n1; g++) {
        const uint8_t *s0 = W + (size_t)g * gstride;
        __m256 acc0 = _mm256_setzero_ps();
        for (int b = 0; b < nb; b++, s0 += sbb) {
            const uint8_t *ab = A + (size_t)b * LB_Q8_BLOCK + 2;
            __m256i a[4];
            for (int k = 0; k < 4; k++) a[k] = bcast8(ab + 8 * k);
            const __m256i i0 = cb2_gemv_isum(u, s0, p, a, off[b]);
            acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i0), _mm256_mul_ps(load_dw(s0), _mm256_set1_ps(da[b])), acc0);
        }
        store_cols(out, acc0, g, n1, N);
    }
}

#define LB_CB_KC 32   /* blocks per activation chunk: 32 x 512 bytes of prepared activations (16 KB, in L1) */
#define LB_CB_GT 32   /* row groups per accumulator tile */

/* GEMM activation prep for blocks c0..c1-1: each token's 4 octets broadcast to all 4 qwords (the maddubs read
 * them as memory operands, no broadcast per row group), the token scales as floats and the offsets
 * (bias * Σa, bias = 1 << shift). */
AI void cb2_prep_act(const uint8_t *A4, const int16_t *bsums4, int c0, int c1, int shift, __m256i a8[][4][4],
                     float das[][4], int32_t offs[][4]) {
    for (int b = c0; b < c1; b++) {
        const uint8_t *ab = A4 + (size_t)b * LB_Q8X4_BLOCK;
        _mm_store_ps(das[b - c0], _mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)ab)));
        _mm_store_si128((__m128i *)offs[b - c0],
                        _mm_sll_epi32(_mm_cvtepi16_epi32(_mm_loadl_epi64((const __m128i *)(bsums4 + 4 * b))),
                                      _mm_cvtsi32_si128(shift)));
        for (int i = 0; i < 4; i++)
            for (int k = 0; k < 4; k++) a8[b - c0][i][k] = bcast8(ab + 8 + 32 * k + 8 * i);
    }
}

/* GEMM: 4 tokens against the row groups of n0..n1, activations prepared once per call per chunk of LB_CB_KC
 * blocks, row groups in tiles whose accumulators wait on the stack between chunks (each (row, token) still
 * accumulates its blocks in order). */
AI void gemm_cb2_u(int u, int K, const uint8_t *W, const cb2_pairs *p, const uint8_t *A4, const int16_t *bsums4,
                   float *out, size_t ldo, int n0, int n1, int N) {
    const int nb = K / LB_QK;
    const size_t sbb = 8 * 10;
    __m256i a8[LB_CB_KC][4][4];
    float das[LB_CB_KC][4] __attribute__((aligned(16)));
    int32_t offs[LB_CB_KC][4] __attribute__((aligned(16)));
    __m256 accs[LB_CB_GT][4];
    const int g1 = (n1 + 7) / 8;
    for (int gt = n0 / 8; gt < g1; gt += LB_CB_GT) {
        const int ge = gt + LB_CB_GT < g1 ? gt + LB_CB_GT : g1;
        for (int c0 = 0; c0 < nb; c0 += LB_CB_KC) {
            const int c1 = c0 + LB_CB_KC < nb ? c0 + LB_CB_KC : nb;
            cb2_prep_act(A4, bsums4, c0, c1, CB2_SHIFT(u), a8, das, offs);
            for (int g = gt; g < ge; g++) {
                const uint8_t *sb = W + ((size_t)g * nb + c0) * sbb;
                __m256 acc[4];
                for (int i = 0; i < 4; i++) acc[i] = c0 ? accs[g - gt][i] : _mm256_setzero_ps();
                for (int b = 0; b < c1 - c0; b++, sb += sbb) {
                    __m256i w[8];
                    cb2_lookup(sb, p, w);
                    const __m256 dw = load_dw(sb);
                    for (int i = 0; i < 4; i++) {
                        const __m256i *a = a8[b][i];
                        const __m256i isum = cb2_dot(u, w, a, _mm256_castps_si256(_mm256_broadcast_ss((const float *)&offs[b][i])));
                        acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(dw, _mm256_broadcast_ss(&das[b][i])), acc[i]);
                    }
                }
                for (int i = 0; i < 4; i++) accs[g - gt][i] = acc[i];
            }
        }
        for (int g = gt; g < ge; g++)
            for (int i = 0; i < 4; i++) store_cols(out + i * ldo, accs[g - gt][i], g, n1, N);
    }
}

void gemv_cb2_8x8__avx2(int K, const uint8_t *W, const int8_t *aux, const uint8_t *A, const int16_t *bsums,
                        float *out, int n0, int n1, int N) {
    int u;
    const cb2_pairs *p = cb2_pairs_for(aux, &u);
    if (u == CB2_NARROW) gemv_cb2_u(CB2_NARROW, K, W, p, A, bsums, out, n0, n1, N);
    else if (u == CB2_BIASED) gemv_cb2_u(CB2_BIASED, K, W, p, A, bsums, out, n0, n1, N);
    else gemv_cb2_u(CB2_SIGNED, K, W, p, A, bsums, out, n0, n1, N);
}

void gemm_cb2_8x8__avx2(int K, const uint8_t *W, const int8_t *aux, const uint8_t *A4, const int16_t *bsums4,
                        float *out, size_t ldo, int n0, int n1, int N) {
    int u;
    const cb2_pairs *p = cb2_pairs_for(aux, &u);
    if (u == CB2_NARROW) gemm_cb2_u(CB2_NARROW, K, W, p, A4, bsums4, out, ldo, n0, n1, N);
    else if (u == CB2_BIASED) gemm_cb2_u(CB2_BIASED, K, W, p, A4, bsums4, out, ldo, n0, n1, N);
    else gemm_cb2_u(CB2_SIGNED, K, W, p, A4, bsums4, out, ldo, n0, n1, N);
}

/* cb2 multi-group GEMM (kernel.h gemm_multi): linear.c passes all the token groups of its M tile in one call.
 * Per row group, a chunk of LB_CB2_MC blocks is looked up once into an L1 buffer (the 8 weight vectors and the
 * row scales), then every token group runs against it, its octets broadcast straight from the Q8_0x4 blocks:
 * the lookups are paid once per 4*ng tokens instead of once per 4. On the narrow path what remains per token
 * is q4_0's GEMM loop without its unpack. Integer sums and the float order per (row, token) are gemm_cb2_u's,
 * so the results are bit-identical to it. */
#define LB_CB2_MC 16   /* blocks per decoded chunk: 16 x 288 bytes */
#define LB_CB2_NG 16   /* token groups per pass (accumulators on the stack) */

typedef struct {
    __m256i w[8];   /* looked-up weights (entries + bias on the narrow and biased paths) */
    __m256 dw;      /* row scales, PERM order */
} cb2_dec;

AI void gemm_multi_cb2_u(int u, int K, const uint8_t *W, const cb2_pairs *p, const uint8_t *A4,
                         const int16_t *bsums4, float *out, size_t ldo, int n0, int n1, int N, int ng) {
    const int nb = K / LB_QK;
    const size_t sbb = 8 * 10, astride = (size_t)nb * LB_Q8X4_BLOCK;
    const __m128i shift = _mm_cvtsi32_si128(CB2_SHIFT(u));
    cb2_dec dec[LB_CB2_MC];
    __m256 accs[LB_CB2_NG][4];
    const int g1 = (n1 + 7) / 8;
    for (int t0 = 0; t0 < ng; t0 += LB_CB2_NG) {
        const int nt = ng - t0 < LB_CB2_NG ? ng - t0 : LB_CB2_NG;
        for (int g = n0 / 8; g < g1; g++) {
            for (int c0 = 0; c0 < nb; c0 += LB_CB2_MC) {
                const int c1 = c0 + LB_CB2_MC < nb ? c0 + LB_CB2_MC : nb;
                const uint8_t *sb = W + ((size_t)g * nb + c0) * sbb;
                for (int b = 0; b < c1 - c0; b++) {
                    cb2_lookup(sb + b * sbb, p, dec[b].w);
                    dec[b].dw = load_dw(sb + b * sbb);
                }
                for (int t = 0; t < nt; t++) {
                    const uint8_t *ab = A4 + (size_t)(t0 + t) * astride + (size_t)c0 * LB_Q8X4_BLOCK;
                    const int16_t *bs = bsums4 + ((size_t)(t0 + t) * nb + c0) * 4;
                    __m256 acc[4];
                    for (int i = 0; i < 4; i++) acc[i] = c0 ? accs[t][i] : _mm256_setzero_ps();
                    for (int b = 0; b < c1 - c0; b++, ab += LB_Q8X4_BLOCK, bs += 4) {
                        float das[4] __attribute__((aligned(16)));
                        int32_t offs[4] __attribute__((aligned(16)));
                        _mm_store_ps(das, _mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)ab)));
                        _mm_store_si128((__m128i *)offs, _mm_sll_epi32(_mm_cvtepi16_epi32(_mm_loadl_epi64((const __m128i *)bs)), shift));
                        for (int i = 0; i < 4; i++) {
                            __m256i a[4];
                            for (int k = 0; k < 4; k++) a[k] = bcast8(ab + 8 + 32 * k + 8 * i);
                            const __m256i isum = cb2_dot(u, dec[b].w, a, _mm256_set1_epi32(offs[i]));
                            acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum),
                                                     _mm256_mul_ps(dec[b].dw, _mm256_broadcast_ss(&das[i])), acc[i]);
                        }
                    }
                    for (int i = 0; i < 4; i++) accs[t][i] = acc[i];
                }
            }
            for (int t = 0; t < nt; t++)
                for (int i = 0; i < 4; i++) store_cols(out + (size_t)(4 * (t0 + t) + i) * ldo, accs[t][i], g, n1, N);
        }
    }
}

void gemm_multi_cb2_8x8__avx2(int K, const uint8_t *W, const int8_t *aux, const uint8_t *A4, const int16_t *bsums4,
                              float *out, size_t ldo, int n0, int n1, int N, int ng) {
    int u;
    const cb2_pairs *p = cb2_pairs_for(aux, &u);
    if (u == CB2_NARROW) gemm_multi_cb2_u(CB2_NARROW, K, W, p, A4, bsums4, out, ldo, n0, n1, N, ng);
    else if (u == CB2_BIASED) gemm_multi_cb2_u(CB2_BIASED, K, W, p, A4, bsums4, out, ldo, n0, n1, N, ng);
    else gemm_multi_cb2_u(CB2_SIGNED, K, W, p, A4, bsums4, out, ldo, n0, n1, N, ng);
}

/* ---- cb4 on the 8-row, 16-byte interleave (8x16): ymm v of a super-block's codes = rows 2v (lane 0) and
 * 2v+1 (lane 1), each lane one row's whole 16 bytes, so PSHUFB looks up each row in its own table with no
 * regrouping. The table pair of rows (2v, 2v+1) is one aligned 32-byte load from a per-call array of all
 * 16 x 16 pairs (8 KB), indexed by the two scale words' id bits. Row sums come out in lane order
 * EO = [0,2,4,6,1,3,5,7].
 * Both the multiply port (maddubs/madd) and the other vector ports are near full, so the schedule minimises
 * all ops: with every entry in [-64, 64] ("small", 7-bit tables) a maddubs pair is <= 2*64*127, so the low- and
 * high-nibble products add in int16 and one madd widens both (12 multiplies per 8 rows instead of 16). */

typedef struct { __m256i t[256]; } cb4_pairs;   /* t[16a + b]: table a in lane 0, table b in lane 1 */

/* Fills the pair array; returns 1 when all 16 tables lie in [-64, 64]. */
static int cb4_build_pairs(const int8_t *aux, cb4_pairs *p) {
    __m256i out = _mm256_setzero_si256();
    for (int i = 0; i < 8; i++) {
        const __m256i t = _mm256_loadu_si256((const __m256i *)(aux + 32 * i));
        out = _mm256_or_si256(out, _mm256_or_si256(_mm256_cmpgt_epi8(t, _mm256_set1_epi8(64)),
                                                    _mm256_cmpgt_epi8(_mm256_set1_epi8(-64), t)));
    }
    for (int a = 0; a < 16; a++) {
        const __m128i ta = _mm_loadu_si128((const __m128i *)(aux + 16 * a));
        for (int b = 0; b < 16; b++)
            p->t[16 * a + b] = _mm256_inserti128_si256(_mm256_castsi128_si256(ta),
                                                       _mm_loadu_si128((const __m128i *)(aux + 16 * b)), 1);
    }
    return _mm256_testz_si256(out, out);
}

LB_PAIR_CACHE(cb4, cb4_pairs, cb4_build_pairs)

/* The pair table of rows (2v, 2v+1); x = their two scale words (row 2v in the low 16 bits). */
AI __m256i cb4_pair(const cb4_pairs *p, uint32_t x) { return p->t[((x & 15) << 4) | ((x >> 16) & 15)]; }

/* Weights of one super-block: w[2v] = elements 0..15 (low nibbles), w[2v+1] = 16..31 (high), rows 2v, 2v+1. */
AI void cb4_lookup(const uint8_t *sb, const cb4_pairs *p, __m256i w[8]) {
    const uint8_t *qs = sb + 16;
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    uint32_t x[4];
    memcpy(x, sb, 16);
    for (int v = 0; v < 4; v++) {
        const __m256i t = cb4_pair(p, x[v]);
        const __m256i V = _mm256_loadu_si256((const __m256i *)(qs + 32 * v));
        w[2 * v] = _mm256_shuffle_epi8(t, _mm256_and_si256(V, m4));
        w[2 * v + 1] = _mm256_shuffle_epi8(t, _mm256_and_si256(_mm256_srli_epi16(V, 4), m4));
    }
}

/* EO-ordered row sums from the int16 pair products of each row pair v: plo[v] (elements 0..15) and phi[v]
 * (16..31). small: they add in int16 before the one widening madd. Three hadd fold each lane's 4 sums. */
AI __m256i cb4_reduce(int small, const __m256i plo[4], const __m256i phi[4]) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i s[4];
    for (int v = 0; v < 4; v++)
        s[v] = small ? _mm256_madd_epi16(_mm256_add_epi16(plo[v], phi[v]), ones)
                     : _mm256_add_epi32(_mm256_madd_epi16(plo[v], ones), _mm256_madd_epi16(phi[v], ones));
    return _mm256_hadd_epi32(_mm256_hadd_epi32(s[0], s[1]), _mm256_hadd_epi32(s[2], s[3]));
}

/* maddubs(|a|, sign(w, a)): GEMV with |a| (ulo, uhi) once per block for both row groups; 7-bit GEMM with
 * a and |a| prepared once per call. */
AI __m256i cb4_dot_ua(int small, const __m256i w[8], __m256i alo, __m256i ahi, __m256i ulo, __m256i uhi) {
    __m256i plo[4], phi[4];
    for (int v = 0; v < 4; v++) {
        plo[v] = _mm256_maddubs_epi16(ulo, _mm256_sign_epi8(w[2 * v], alo));
        phi[v] = _mm256_maddubs_epi16(uhi, _mm256_sign_epi8(w[2 * v + 1], ahi));
    }
    return cb4_reduce(small, plo, phi);
}

/* The 8 row scales (id bits cleared) as floats in EO order. */
AI __m256 load_dw_eo(const uint8_t *sb) {
    const __m128i h = _mm_and_si128(_mm_loadu_si128((const __m128i *)sb), _mm_set1_epi16((short)LB_CB_SCALE_MASK));
    return _mm256_cvtph_ps(_mm_shuffle_epi8(h, _mm_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15)));
}

/* EO lane order -> rows 0..7, then store the valid columns. */
AI void store_cols_eo(float *out, __m256 acc, int g, int n1, int N) {
    acc = _mm256_permutevar8x32_ps(acc, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    const int lim = n1 < N ? n1 : N;
    if (8 * g + 8 <= lim) { _mm256_storeu_ps(out + 8 * g, acc); return; }
    float tmp[8];
    _mm256_storeu_ps(tmp, acc);
    for (int r = 0; 8 * g + r < lim; r++) out[8 * g + r] = tmp[r];
}

/* One row group's block sum (EO order) for GEMV, with the activation halves already broadcast. */
AI __m256i cb4_gemv_isum(int small, const uint8_t *sb, const cb4_pairs *p, __m256i alo, __m256i ahi, __m256i ulo,
                         __m256i uhi) {
    __m256i w[8];
    cb4_lookup(sb, p, w);
    return cb4_dot_ua(small, w, alo, ahi, ulo, uhi);
}

AI void gemv_cb4_s(int small, int K, const uint8_t *W, const cb4_pairs *p, const uint8_t *A, float *out, int n0,
                   int n1, int N) {
    const int nb = K / LB_QK;
    const size_t sbb = 8 * 18, gstride = (size_t)nb * sbb;
    float da[nb];
    for (int b = 0; b < nb; b++) da[b] = fp16(A + (size_t)b * LB_Q8_BLOCK);
    int g = n0 / 8;
    for (; 8 * g + 8 < n1; g += 2) {   /* two row groups per step share the activation prep */
        const uint8_t *s0 = W + (size_t)g * gstride, *s1 = s0 + gstride;
        __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
        for (int b = 0; b < nb; b++, s0 += sbb, s1 += sbb) {
            const uint8_t *ab = A + (size_t)b * LB_Q8_BLOCK + 2;
            const __m256i alo = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)ab));
            const __m256i ahi = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(ab + 16)));
            const __m256i ulo = _mm256_sign_epi8(alo, alo), uhi = _mm256_sign_epi8(ahi, ahi);
            _mm_prefetch((const char *)s0 + LB_PF, _MM_HINT_T0);
            _mm_prefetch((const char *)s1 + LB_PF, _MM_HINT_T0);
            _mm_prefetch((const char *)s0 + LB_PF + 64, _MM_HINT_T0);
            _mm_prefetch((const char *)s1 + LB_PF + 64, _MM_HINT_T0);
            const __m256 d = _mm256_set1_ps(da[b]);
            const __m256i i0 = cb4_gemv_isum(small, s0, p, alo, ahi, ulo, uhi);
            const __m256i i1 = cb4_gemv_isum(small, s1, p, alo, ahi, ulo, uhi);
            acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i0), _mm256_mul_ps(load_dw_eo(s0), d), acc0);
            acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i1), _mm256_mul_ps(load_dw_eo(s1), d), acc1);
        }
        store_cols_eo(out, acc0, g, n1, N);
        store_cols_eo(out, acc1, g + 1, n1, N);
    }
    for (; 8 * g < n1; g++) {
        const uint8_t *s0 = W + (size_t)g * gstride;
        __m256 acc0 = _mm256_setzero_ps();
        for (int b = 0; b < nb; b++, s0 += sbb) {
            const uint8_t *ab = A + (size_t)b * LB_Q8_BLOCK + 2;
            const __m256i alo = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)ab));
            const __m256i ahi = _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(ab + 16)));
            const __m256i i0 = cb4_gemv_isum(small, s0, p, alo, ahi, _mm256_sign_epi8(alo, alo), _mm256_sign_epi8(ahi, ahi));
            acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i0), _mm256_mul_ps(load_dw_eo(s0), _mm256_set1_ps(da[b])), acc0);
        }
        store_cols_eo(out, acc0, g, n1, N);
    }
}

/* cb4 GEMM activation prep for blocks c0..c1-1 into buf (LB_CB_PREP vectors), and the 4 token scales as
 * floats. Q8_0x4 with chunk 16 (act_B = 16): token i's half n is the 16 bytes at 8 + 64 n + 16 i.
 * small (7-bit tables): per token, its halves broadcast to both lanes, as a and |a| (4 vectors, for cb4_dot_ua);
 * full range: per token, its octets k broadcast to all 4 qwords, as a and |a| (8 vectors, for cb4_dot_z).
 * a is read by sign as a memory operand, |a| by one load (the maddubs' unsigned side). */
#define LB_CB_PREP 512   /* 16 KB: 32 blocks of 16 vectors or 16 blocks of 32 */
AI int cb4_prep_act(int small, const uint8_t *A4, int c0, int c1, __m256i *buf, float das[][4]) {
    const int vpb = small ? 16 : 32;
    for (int b = c0; b < c1; b++) {
        const uint8_t *ab = A4 + (size_t)b * LB_Q8X4_BLOCK;
        __m256i *q = buf + (b - c0) * vpb;
        _mm_store_ps(das[b - c0], _mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)ab)));
        for (int i = 0; i < 4; i++)
            for (int k = 0; k < (small ? 2 : 4); k++) {
                const __m256i a = small ? _mm256_broadcastsi128_si256(_mm_loadu_si128((const __m128i *)(ab + 8 + 64 * k + 16 * i)))
                                        : bcast8(ab + 8 + 64 * (k >> 1) + 16 * i + 8 * (k & 1));
                q[vpb / 4 * i + k] = a;
                q[vpb / 4 * i + vpb / 8 + k] = _mm256_abs_epi8(a);
            }
    }
    return vpb;
}

/* Full range: the looked-up weights of one block regrouped to 4 rows x 8 bytes per vector, z[2k+h] = octet k of
 * rows {4h, 4h+2 | 4h+1, 4h+3}: one in-lane 64-bit unpack per vector, rows 2v and 2v+2 of a lane meet. Then 4
 * vectors share their rows, as in the 8x8 kernels, and a token's 8 row sums need 1 hadd instead of 3 (cb4_dot_z);
 * the unpacks are paid once per block for the 4 tokens. (For 7-bit tables, whose octet pairs add in int16 anyway,
 * the regrouping and the twice larger activation prep did not pay: same speed at K = 2048, -2% at K = 5632.) */
AI void cb4_regroup(const __m256i w[8], __m256i z[8]) {
    for (int h = 0; h < 2; h++)
        for (int n = 0; n < 2; n++) {   /* n: low (elements 0..15) or high (16..31) nibbles */
            const __m256i x = w[4 * h + n], y = w[4 * h + 2 + n];   /* row pairs v = 2h, 2h+1 */
            z[2 * (2 * n) + h] = _mm256_unpacklo_epi64(x, y);
            z[2 * (2 * n + 1) + h] = _mm256_unpackhi_epi64(x, y);
        }
}

/* One token's 8 row sums (EO order) from the regrouped full-range weights, q = the token's 4 octets then their
 * |a|: maddubs(|a|, sign(w, a)), each pair widened by madd, the two row halves meet in one hadd. */
AI __m256i cb4_dot_z(const __m256i z[8], const __m256i *q) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i s[2];
    for (int h = 0; h < 2; h++) {
        __m256i m[4];
        for (int k = 0; k < 4; k++)
            m[k] = _mm256_madd_epi16(_mm256_maddubs_epi16(q[4 + k], _mm256_sign_epi8(z[2 * k + h], q[k])), ones);
        s[h] = _mm256_add_epi32(_mm256_add_epi32(m[0], m[1]), _mm256_add_epi32(m[2], m[3]));
    }
    return _mm256_hadd_epi32(s[0], s[1]);
}

/* GEMM: 4 tokens against the row groups of n0..n1. The activations are prepared once per call (per chunk of
 * 16 KB, so the buffer stays in L1) and read back by plain loads: no broadcast or abs per row group. Row groups
 * are walked in tiles whose float accumulators wait on the stack between chunks; each (row, token) still
 * accumulates its blocks in order, so the result does not depend on the chunking. */
AI void gemm_cb4_s(int small, int K, const uint8_t *W, const cb4_pairs *p, const uint8_t *A4, float *out, size_t ldo,
                   int n0, int n1, int N) {
    const int nb = K / LB_QK, kc = LB_CB_PREP / (small ? 16 : 32);
    const size_t sbb = 8 * 18;
    __m256i buf[LB_CB_PREP];
    float das[LB_CB_PREP / 16][4] __attribute__((aligned(16)));
    __m256 accs[LB_CB_GT][4];
    const int g1 = (n1 + 7) / 8;
    for (int gt = n0 / 8; gt < g1; gt += LB_CB_GT) {
        const int ge = gt + LB_CB_GT < g1 ? gt + LB_CB_GT : g1;
        for (int c0 = 0; c0 < nb; c0 += kc) {
            const int c1 = c0 + kc < nb ? c0 + kc : nb;
            const int vpb = cb4_prep_act(small, A4, c0, c1, buf, das);
            for (int g = gt; g < ge; g++) {
                const uint8_t *sb = W + ((size_t)g * nb + c0) * sbb;
                __m256 acc[4];
                for (int i = 0; i < 4; i++) acc[i] = c0 ? accs[g - gt][i] : _mm256_setzero_ps();
                for (int b = 0; b < c1 - c0; b++, sb += sbb) {
                    __m256i w[8], z[8];
                    cb4_lookup(sb, p, w);
                    if (!small) cb4_regroup(w, z);
                    const __m256 dw = load_dw_eo(sb);
                    for (int i = 0; i < 4; i++) {
                        const __m256i *q = buf + b * vpb + vpb / 4 * i;
                        const __m256i isum = small ? cb4_dot_ua(1, w, q[0], q[1], q[2], q[3]) : cb4_dot_z(z, q);
                        acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum), _mm256_mul_ps(dw, _mm256_broadcast_ss(&das[b][i])), acc[i]);
                    }
                }
                for (int i = 0; i < 4; i++) accs[g - gt][i] = acc[i];
            }
        }
        for (int g = gt; g < ge; g++)
            for (int i = 0; i < 4; i++) store_cols_eo(out + i * ldo, accs[g - gt][i], g, n1, N);
    }
}

void gemv_cb4_8x16__avx2(int K, const uint8_t *W, const int8_t *aux, const uint8_t *A, const int16_t *bsums,
                         float *out, int n0, int n1, int N) {
    (void)bsums;
    int small;
    const cb4_pairs *p = cb4_pairs_for(aux, &small);
    if (small) gemv_cb4_s(1, K, W, p, A, out, n0, n1, N);
    else gemv_cb4_s(0, K, W, p, A, out, n0, n1, N);
}

void gemm_cb4_8x16__avx2(int K, const uint8_t *W, const int8_t *aux, const uint8_t *A4, const int16_t *bsums4,
                         float *out, size_t ldo, int n0, int n1, int N) {
    (void)bsums4;
    int small;
    const cb4_pairs *p = cb4_pairs_for(aux, &small);
    if (small) gemm_cb4_s(1, K, W, p, A4, out, ldo, n0, n1, N);
    else gemm_cb4_s(0, K, W, p, A4, out, ldo, n0, n1, N);
}

/* ---- cb4 multi-group GEMM: linear.c passes all the token groups of its M tile (up to 16 = 64 tokens) in one
 * call. Per row group, a chunk of LB_CB4_MC blocks is looked up and regrouped once into an L1 buffer (z as in
 * cb4_regroup, its |z| and the row scales), then every token group runs against it as
 * maddubs(|z|, sign(a, z)) with a broadcast straight from the Q8_0x4 blocks: no per-call activation prep.
 * The lookup, regrouping and abs are paid once per 4*ng tokens instead of once per 4. Both table ranges use the
 * regrouped layout (with the lookup amortised it saves 2 hadd per token for 7-bit tables); 7-bit tables add
 * octet pairs in int16 (2 * 2*64*127 fits) before the madd. The integer sums and the float accumulation order
 * per (row, token) are those of gemm_cb4_s, so the results are bit-identical to it. */
#define LB_CB4_MC 16   /* blocks per decoded chunk: 16 x 544 bytes */
#define LB_CB4_NG 16   /* token groups per pass (accumulators on the stack) */

typedef struct {
    __m256i z[8], u[8];   /* regrouped weights and |z| */
    __m256 dw;            /* row scales, EO order */
} cb4_dec;

AI void cb4_decode(const uint8_t *sb, const cb4_pairs *p, cb4_dec *d) {
    __m256i w[8], z[8];
    cb4_lookup(sb, p, w);
    cb4_regroup(w, z);
    for (int v = 0; v < 8; v++) {
        d->z[v] = z[v];
        d->u[v] = _mm256_abs_epi8(z[v]);
    }
    d->dw = load_dw_eo(sb);
}

/* One token's 8 row sums (EO order): ab = its first octet in a Q8_0x4 block (octet k at 64 (k>>1) + 8 (k&1)). */
AI __m256i cb4_dot_dec(int small, const cb4_dec *d, const uint8_t *ab) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i a[4], s[2];
    for (int k = 0; k < 4; k++) a[k] = bcast8(ab + 64 * (k >> 1) + 8 * (k & 1));
    for (int h = 0; h < 2; h++) {
        __m256i m[4];
        for (int k = 0; k < 4; k++) m[k] = _mm256_maddubs_epi16(d->u[2 * k + h], _mm256_sign_epi8(a[k], d->z[2 * k + h]));
        s[h] = small ? _mm256_add_epi32(_mm256_madd_epi16(_mm256_add_epi16(m[0], m[1]), ones),
                                        _mm256_madd_epi16(_mm256_add_epi16(m[2], m[3]), ones))
                     : _mm256_add_epi32(_mm256_add_epi32(_mm256_madd_epi16(m[0], ones), _mm256_madd_epi16(m[1], ones)),
                                        _mm256_add_epi32(_mm256_madd_epi16(m[2], ones), _mm256_madd_epi16(m[3], ones)));
    }
    return _mm256_hadd_epi32(s[0], s[1]);
}

AI void gemm_multi_cb4_s(int small, int K, const uint8_t *W, const cb4_pairs *p, const uint8_t *A4, float *out,
                         size_t ldo, int n0, int n1, int N, int ng) {
    const int nb = K / LB_QK;
    const size_t sbb = 8 * 18, astride = (size_t)nb * LB_Q8X4_BLOCK;
    cb4_dec dec[LB_CB4_MC];
    __m256 accs[LB_CB4_NG][4];
    const int g1 = (n1 + 7) / 8;
    for (int t0 = 0; t0 < ng; t0 += LB_CB4_NG) {
        const int nt = ng - t0 < LB_CB4_NG ? ng - t0 : LB_CB4_NG;
        for (int g = n0 / 8; g < g1; g++) {
            for (int c0 = 0; c0 < nb; c0 += LB_CB4_MC) {
                const int c1 = c0 + LB_CB4_MC < nb ? c0 + LB_CB4_MC : nb;
                const uint8_t *sb = W + ((size_t)g * nb + c0) * sbb;
                for (int b = 0; b < c1 - c0; b++) cb4_decode(sb + b * sbb, p, &dec[b]);
                for (int t = 0; t < nt; t++) {
                    const uint8_t *ab = A4 + (size_t)(t0 + t) * astride + (size_t)c0 * LB_Q8X4_BLOCK;
                    __m256 acc[4];
                    for (int i = 0; i < 4; i++) acc[i] = c0 ? accs[t][i] : _mm256_setzero_ps();
                    for (int b = 0; b < c1 - c0; b++, ab += LB_Q8X4_BLOCK) {
                        float das[4] __attribute__((aligned(16)));
                        _mm_store_ps(das, _mm_cvtph_ps(_mm_loadl_epi64((const __m128i *)ab)));
                        for (int i = 0; i < 4; i++) {
                            const __m256i isum = cb4_dot_dec(small, &dec[b], ab + 8 + 16 * i);
                            acc[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum),
                                                     _mm256_mul_ps(dec[b].dw, _mm256_broadcast_ss(&das[i])), acc[i]);
                        }
                    }
                    for (int i = 0; i < 4; i++) accs[t][i] = acc[i];
                }
            }
            for (int t = 0; t < nt; t++)
                for (int i = 0; i < 4; i++) store_cols_eo(out + (size_t)(4 * (t0 + t) + i) * ldo, accs[t][i], g, n1, N);
        }
    }
}

void gemm_multi_cb4_8x16__avx2(int K, const uint8_t *W, const int8_t *aux, const uint8_t *A4, const int16_t *bsums4,
                               float *out, size_t ldo, int n0, int n1, int N, int ng) {
    (void)bsums4;
    int small;
    const cb4_pairs *p = cb4_pairs_for(aux, &small);
    if (small) gemm_multi_cb4_s(1, K, W, p, A4, out, ldo, n0, n1, N, ng);
    else gemm_multi_cb4_s(0, K, W, p, A4, out, ldo, n0, n1, N, ng);
}
