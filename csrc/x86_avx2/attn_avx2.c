/* Causal attention with AVX2+FMA (prefill and decode, csrc/ops/attn_prefill.c and llama_ops.c): the pieces of
 * the grouped kernel, whose block schedule (lb_attn_group_blocks, attn_prefill.c) runs the G query heads that
 * share one KV head together (GQA: SmolLM2 G = 3, Llama 3.2 1B G = 4) so each K/V block comes from memory once.
 * Per head: scores q·K[t] four keys at a time (the last T % 4 one by one), a vector exp, o = Σ p_t V[t] in t order.
 * The one-row kernel is the group of one, so grouped and per-head results are bit-identical. hd % 8 == 0. */
#include <immintrin.h>
#include <math.h>
#include "ops/ops.h"
#include "x86_avx2/avx2.h"
#include "x86_avx2/vexp.h"

static inline float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* s[t] = scale * q·K[t] for t in [t0, t1) (t0 % 4 == 0; only the block that ends at T has a tail); returns the
 * running max. */
static float scores(int hd, int t0, int t1, int T, const float *q, const float *K, float scale, float *s,
                    float mx) {
    const int nc = hd / 8;
    const int t4 = t1 == T ? t0 + (t1 - t0) / 4 * 4 : t1;
    int t = t0;
    for (; t < t4; t += 4) {               /* four keys per pass: q's chunks are loaded once for them */
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
    for (; t < t1; t++) {
        __m256 a = _mm256_setzero_ps();
        for (int c = 0; c < nc; c++)
            a = _mm256_fmadd_ps(_mm256_loadu_ps(q + 8 * c), _mm256_loadu_ps(K + (size_t)t * hd + 8 * c), a);
        s[t] = hsum8(a) * scale;
        if (s[t] > mx) mx = s[t];
    }
    return mx;
}

/* s[t] = exp(s[t] - mx) for t < T; returns their sum */
static float expsum(int T, float *s, float mx) {
    const __m256 vm = _mm256_set1_ps(mx);
    __m256 vs = _mm256_setzero_ps();
    int t = 0;
    for (; t + 8 <= T; t += 8) {
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
    return sum;
}

/* o += Σ_{t0 <= t < t1} p_t V[t], 64 dims (8 registers) per pass over the block's keys */
static void pv(int hd, int t0, int t1, const float *p, const float *V, float *o) {
    const int nc = hd / 8;
    for (int c0 = 0; c0 < nc; c0 += 8) {
        const int cn = nc - c0 < 8 ? nc - c0 : 8;
        __m256 acc[8];
        for (int c = 0; c < cn; c++) acc[c] = _mm256_loadu_ps(o + 8 * (c0 + c));
        if (cn == 8) {
            for (int t = t0; t < t1; t++) {
                const __m256 pt = _mm256_broadcast_ss(p + t);
                const float *v = V + (size_t)t * hd + 8 * c0;
                for (int c = 0; c < 8; c++) acc[c] = _mm256_fmadd_ps(pt, _mm256_loadu_ps(v + 8 * c), acc[c]);
            }
        } else {
            for (int t = t0; t < t1; t++) {
                const __m256 pt = _mm256_broadcast_ss(p + t);
                const float *v = V + (size_t)t * hd + 8 * c0;
                for (int c = 0; c < cn; c++) acc[c] = _mm256_fmadd_ps(pt, _mm256_loadu_ps(v + 8 * c), acc[c]);
            }
        }
        for (int c = 0; c < cn; c++) _mm256_storeu_ps(o + 8 * (c0 + c), acc[c]);
    }
}

static const lb_attn_parts parts = {scores, expsum, pv};

void lb_attn_group_avx2(int hd, int T, int G, const float *q, const float *K, const float *V, float scale,
                        float *s, float *o) {
    lb_attn_group_blocks(&parts, hd, T, G, q, K, V, scale, s, o);
}

void lb_attn_row_avx2(int hd, int T, const float *q, const float *K, const float *V, float scale, float *s,
                      float *o) {
    lb_attn_group_avx2(hd, T, 1, q, K, V, scale, s, o);
}
