/* One query row's causal attention with AVX2+FMA (the prefill path's inner loop, csrc/ops/attn_prefill.c):
 * scores q·K[t] four keys at a time, a vector exp, then o = Σ p_t V[t] with o held in registers. hd % 8 == 0. */
#include <immintrin.h>
#include <math.h>
#include "x86_avx2/avx2.h"
#include "x86_avx2/vexp.h"

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

void lb_attn_row_avx2(int hd, int T, const float *q, const float *K, const float *V, float scale, float *s,
                      float *o) {
    const int nc = hd / 8;
    float mx = -INFINITY;
    int t = 0;
    for (; t + 4 <= T; t += 4) {           /* four keys per pass: q's chunks are loaded once for them */
        const float *k0 = K + (size_t)t * hd;
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
        for (int c = 0; c < nc; c++) {
            const __m256 qc = _mm256_loadu_ps(q + 8 * c);
            a0 = _mm256_fmadd_ps(qc, _mm256_loadu_ps(k0 + 8 * c), a0);
            a1 = _mm256_fmadd_ps(qc, _mm256_loadu_ps(k0 + hd + 8 * c), a1);
            a2 = _mm256_fmadd_ps(qc, _mm256_loadu_ps(k0 + 2 * hd + 8 * c), a2);
            a3 = _mm256_fmadd_ps(qc, _mm256_loadu_ps(k0 + 3 * hd + 8 * c), a3);
        }
        /* four horizontal sums at once: hadd pairs, then add the 128-bit halves */
        const __m256 h = _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));
        const __m128 d = _mm_mul_ps(_mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1)),
                                    _mm_set1_ps(scale));
        _mm_storeu_ps(s + t, d);
        const __m128 m2 = _mm_max_ps(d, _mm_movehl_ps(d, d));
        const float m = _mm_cvtss_f32(_mm_max_ss(m2, _mm_movehdup_ps(m2)));
        if (m > mx) mx = m;
    }
    for (; t < T; t++) {
        __m256 a = _mm256_setzero_ps();
        for (int c = 0; c < nc; c++)
            a = _mm256_fmadd_ps(_mm256_loadu_ps(q + 8 * c), _mm256_loadu_ps(K + (size_t)t * hd + 8 * c), a);
        s[t] = hsum8(a) * scale;
        if (s[t] > mx) mx = s[t];
    }
    const __m256 vm = _mm256_set1_ps(mx);
    __m256 vs = _mm256_setzero_ps();
    for (t = 0; t + 8 <= T; t += 8) {
        const __m256 e = lb_exp256(_mm256_sub_ps(_mm256_loadu_ps(s + t), vm));
        _mm256_storeu_ps(s + t, e);
        vs = _mm256_add_ps(vs, e);
    }
    float sum = hsum8(vs);
    if (t < T) {                           /* the tail through a padded vector (lanes past T give e^-inf = 0) */
        float buf[8];
        for (int i = 0; i < 8; i++) buf[i] = t + i < T ? s[t + i] - mx : -INFINITY;
        const __m256 e = lb_exp256(_mm256_loadu_ps(buf));
        _mm256_storeu_ps(buf, e);
        for (int i = 0; t + i < T; i++) { s[t + i] = buf[i]; sum += buf[i]; }
    }
    const __m256 inv = _mm256_set1_ps(1.0f / sum);
    /* o = Σ p_t V[t]: 64 dims (8 registers) per pass over the keys */
    for (int c0 = 0; c0 < nc; c0 += 8) {
        const int cn = nc - c0 < 8 ? nc - c0 : 8;
        __m256 acc[8];
        for (int c = 0; c < 8; c++) acc[c] = _mm256_setzero_ps();
        if (cn == 8) {
            for (t = 0; t < T; t++) {
                const __m256 p = _mm256_broadcast_ss(s + t);
                const float *v = V + (size_t)t * hd + 8 * c0;
                for (int c = 0; c < 8; c++) acc[c] = _mm256_fmadd_ps(p, _mm256_loadu_ps(v + 8 * c), acc[c]);
            }
        } else {
            for (t = 0; t < T; t++) {
                const __m256 p = _mm256_broadcast_ss(s + t);
                const float *v = V + (size_t)t * hd + 8 * c0;
                for (int c = 0; c < cn; c++) acc[c] = _mm256_fmadd_ps(p, _mm256_loadu_ps(v + 8 * c), acc[c]);
            }
        }
        for (int c = 0; c < cn; c++) _mm256_storeu_ps(o + 8 * (c0 + c), _mm256_mul_ps(acc[c], inv));
    }
}
