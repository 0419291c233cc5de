/* AVX2 activation quantization to Q8_0 / Q8_0x4 (act_B = 8), bit-identical to csrc/ref/quant_act.c:
 * d = amax/127 (fp32, then RNE to fp16 by F16C), q = roundf(x * (1/d)) with ties away from zero, done
 * exactly as trunc(v) + sign(v) when |v - trunc(v)| >= 0.5 (v - trunc(v) is exact). The scalar version
 * called libm roundf per element and showed as ~10% of a 512-token GEMM. A block holding a non-finite value
 * (or a scale so small that 1/d overflows) goes through the scalar reference, so even garbage matches it. */
#ifndef __AVX2__
#error "this file must be compiled with -mavx2 -mfma -mf16c"
#endif
#include <float.h>
#include <immintrin.h>
#include <string.h>
#include "avx2.h"
#include "ref/ref.h"

#define AI static inline __attribute__((always_inline))

AI float hmax8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

AI __m256i round_away(__m256 v) {
    const __m256 t = _mm256_round_ps(v, _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC);
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 half = _mm256_cmp_ps(_mm256_and_ps(_mm256_sub_ps(v, t), absmask), _mm256_set1_ps(0.5f), _CMP_GE_OQ);
    const __m256 one = _mm256_or_ps(_mm256_set1_ps(1.0f), _mm256_andnot_ps(absmask, v));   /* copysign(1, v) */
    return _mm256_cvttps_epi32(_mm256_add_ps(t, _mm256_and_ps(half, one)));
}

/* One block of 32 floats -> 32 int8 (element order) in *q, fp16 scale, block sum. Returns 0 if the block is
 * not finite (the caller then uses the scalar reference). */
AI int quant_block(const float *x, __m256i *q, uint16_t *dh, int16_t *bsum) {
    const __m256 absmask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)), big = _mm256_set1_ps(FLT_MAX);
    __m256 v[4], amax = _mm256_setzero_ps(), fin = _mm256_castsi256_ps(_mm256_set1_epi32(-1));
    for (int i = 0; i < 4; i++) {
        v[i] = _mm256_loadu_ps(x + 8 * i);
        const __m256 a = _mm256_and_ps(v[i], absmask);
        fin = _mm256_and_ps(fin, _mm256_cmp_ps(a, big, _CMP_LE_OQ));
        amax = _mm256_max_ps(amax, a);
    }
    if (_mm256_movemask_ps(fin) != 0xff) return 0;
    const float d = hmax8(amax) / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    if (id > FLT_MAX) return 0;   /* subnormal d: 1/d overflows; the reference's int8 cast decides */
    const __m256 vid = _mm256_set1_ps(id);
    __m256i r[4];
    for (int i = 0; i < 4; i++) r[i] = round_away(_mm256_mul_ps(v[i], vid));
    __m256i s = _mm256_add_epi32(_mm256_add_epi32(r[0], r[1]), _mm256_add_epi32(r[2], r[3]));
    __m128i s4 = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0x4E));
    s4 = _mm_add_epi32(s4, _mm_shuffle_epi32(s4, 0xB1));
    *bsum = (int16_t)_mm_cvtsi128_si32(s4);
    const __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(r[0], r[1]), _mm256_packs_epi32(r[2], r[3]));
    *q = _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
    *dh = (uint16_t)_mm_extract_epi16(_mm_cvtps_ph(_mm_set_ss(d), _MM_FROUND_TO_NEAREST_INT), 0);
    return 1;
}

void lb_quantize_row_q8_0_avx2(const float *x, int K, uint8_t *out, int16_t *bsums, int bsum_stride) {
    for (int b = 0; b < K / LB_QK; b++) {
        uint8_t *blk = out + (size_t)b * LB_Q8_BLOCK;
        __m256i q;
        uint16_t dh;
        int16_t s;
        if (!quant_block(x + (size_t)b * LB_QK, &q, &dh, &s)) {
            lb_quantize_row_q8_0(x + (size_t)b * LB_QK, LB_QK, blk, bsums + (size_t)b * bsum_stride, 1);
            continue;
        }
        memcpy(blk, &dh, 2);
        _mm256_storeu_si256((__m256i *)(blk + 2), q);
        bsums[(size_t)b * bsum_stride] = s;
    }
}

void lb_quantize_rows_q8_0x4_avx2(const float *x, size_t ldx, int K, int act_B, uint8_t *out, int16_t *bsums4) {
    if (act_B != 8) { lb_quantize_rows_q8_0x4(x, ldx, K, act_B, out, bsums4); return; }
    for (int b = 0; b < K / LB_QK; b++) {
        uint8_t *blk = out + (size_t)b * LB_Q8X4_BLOCK;
        __m256i q[4];
        int ok = 1;
        for (int i = 0; i < 4 && ok; i++)
            ok = quant_block(x + i * ldx + (size_t)b * LB_QK, &q[i], (uint16_t *)(blk + 2 * i), &bsums4[4 * b + i]);
        if (!ok) {   /* rare: redo this block with the reference (one block, four rows) */
            float tmp[4 * LB_QK];
            for (int i = 0; i < 4; i++) memcpy(tmp + i * LB_QK, x + i * ldx + (size_t)b * LB_QK, sizeof(float) * LB_QK);
            lb_quantize_rows_q8_0x4(tmp, LB_QK, LB_QK, 8, blk, bsums4 + 4 * b);
            continue;
        }
        /* octet k of row i goes to 8 + 32k + 8i: a 4x4 transpose of 64-bit pieces */
        const __m256i t0 = _mm256_unpacklo_epi64(q[0], q[1]), t1 = _mm256_unpackhi_epi64(q[0], q[1]);
        const __m256i t2 = _mm256_unpacklo_epi64(q[2], q[3]), t3 = _mm256_unpackhi_epi64(q[2], q[3]);
        _mm256_storeu_si256((__m256i *)(blk + 8), _mm256_permute2x128_si256(t0, t2, 0x20));
        _mm256_storeu_si256((__m256i *)(blk + 40), _mm256_permute2x128_si256(t1, t3, 0x20));
        _mm256_storeu_si256((__m256i *)(blk + 72), _mm256_permute2x128_si256(t0, t2, 0x31));
        _mm256_storeu_si256((__m256i *)(blk + 104), _mm256_permute2x128_si256(t1, t3, 0x31));
    }
}
