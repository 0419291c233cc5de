/* The attention kernels (grouped and one row) and SiLU·up with NEON (baseline aarch64): the same schedule as
 * x86_avx2/attn_avx2.c and silu_avx2.c with 4-float vectors. Proven under qemu (tests/test_attn_prefill.py, test_silu_mul.py). */
#include <arm_neon.h>
#include <math.h>
#include "arm_common/arm.h"
#include "ops/ops.h"

/* e^x: 2^n · p(r), x = n ln2 + r, Cephes' degree-6 polynomial; x clamped to [-87, 88], below -87 flushed to 0
 * (x86_avx2/vexp.h has the reasoning). */
static inline float32x4_t exp4(float32x4_t x) {
    const float32x4_t lo = vdupq_n_f32(-87.0f);
    const uint32x4_t under = vcltq_f32(x, lo);
    x = vminq_f32(vmaxq_f32(x, lo), vdupq_n_f32(88.0f));
    const float32x4_t n = vrndnq_f32(vmulq_n_f32(x, 1.44269504089f));
    float32x4_t r = vfmsq_f32(x, n, vdupq_n_f32(0.693359375f));          /* x - n ln2 (hi, lo) */
    r = vfmsq_f32(r, n, vdupq_n_f32(-2.12194440e-4f));
    float32x4_t p = vdupq_n_f32(1.9875691500e-4f);
    p = vfmaq_f32(vdupq_n_f32(1.3981999507e-3f), p, r);
    p = vfmaq_f32(vdupq_n_f32(8.3334519073e-3f), p, r);
    p = vfmaq_f32(vdupq_n_f32(4.1665795894e-2f), p, r);
    p = vfmaq_f32(vdupq_n_f32(1.6666665459e-1f), p, r);
    p = vfmaq_f32(vdupq_n_f32(5.0000001201e-1f), p, r);
    p = vfmaq_f32(vaddq_f32(r, vdupq_n_f32(1.0f)), p, vmulq_f32(r, r));
    const int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23);
    const float32x4_t y = vmulq_f32(p, vreinterpretq_f32_s32(e));
    return vreinterpretq_f32_u32(vbicq_u32(vreinterpretq_u32_f32(y), under));
}

/* s[t] = scale * q·K[t] for t in [t0, t1) (t0 % 4 == 0; only the block ending at T has a tail); running max */
static float scores(int hd, int t0, int t1, int T, const float *q, const float *K, float scale, float *s,
                    float mx) {
    const int nc = hd / 4;
    const int t4 = t1 == T ? t0 + (t1 - t0) / 4 * 4 : t1;
    int t = t0;
    for (; t < t4; t += 4) {               /* four keys per pass: q's chunks are loaded once for them */
        const float *k0 = K + (size_t)t * hd;
        float32x4_t a0 = vdupq_n_f32(0.f), a1 = a0, a2 = a0, a3 = a0;
        for (int c = 0; c < nc; c++) {
            const float32x4_t qc = vld1q_f32(q + 4 * c);
            a0 = vfmaq_f32(a0, qc, vld1q_f32(k0 + 4 * c));
            a1 = vfmaq_f32(a1, qc, vld1q_f32(k0 + hd + 4 * c));
            a2 = vfmaq_f32(a2, qc, vld1q_f32(k0 + 2 * hd + 4 * c));
            a3 = vfmaq_f32(a3, qc, vld1q_f32(k0 + 3 * hd + 4 * c));
        }
        /* pairwise adds give the four sums in order [a0, a1, a2, a3] */
        const float32x4_t d = vmulq_n_f32(vpaddq_f32(vpaddq_f32(a0, a1), vpaddq_f32(a2, a3)), scale);
        vst1q_f32(s + t, d);
        const float m = vmaxvq_f32(d);
        if (m > mx) mx = m;
    }
    for (; t < t1; t++) {
        float32x4_t a = vdupq_n_f32(0.f);
        for (int c = 0; c < nc; c++) a = vfmaq_f32(a, vld1q_f32(q + 4 * c), vld1q_f32(K + (size_t)t * hd + 4 * c));
        s[t] = vaddvq_f32(a) * scale;
        if (s[t] > mx) mx = s[t];
    }
    return mx;
}

/* s[t] = exp(s[t] - mx) for t < T; returns their sum */
static float expsum(int T, float *s, float mx) {
    const float32x4_t vm = vdupq_n_f32(mx);
    float32x4_t vs = vdupq_n_f32(0.f);
    int t = 0;
    for (; t + 4 <= T; t += 4) {
        const float32x4_t e = exp4(vsubq_f32(vld1q_f32(s + t), vm));
        vst1q_f32(s + t, e);
        vs = vaddq_f32(vs, e);
    }
    float sum = vaddvq_f32(vs);
    if (t < T) {                           /* the tail through a padded vector (lanes past T give 0) */
        float buf[4];
        for (int i = 0; i < 4; i++) buf[i] = t + i < T ? s[t + i] - mx : -INFINITY;
        vst1q_f32(buf, exp4(vld1q_f32(buf)));
        for (int i = 0; t + i < T; i++) { s[t + i] = buf[i]; sum += buf[i]; }
    }
    return sum;
}

/* o += Σ_{t0 <= t < t1} p_t V[t], 64 dims (16 registers) per pass over the block's keys */
static void pv(int hd, int t0, int t1, const float *p, const float *V, float *o) {
    const int nc = hd / 4;
    for (int c0 = 0; c0 < nc; c0 += 16) {
        const int cn = nc - c0 < 16 ? nc - c0 : 16;
        float32x4_t acc[16];
        for (int c = 0; c < cn; c++) acc[c] = vld1q_f32(o + 4 * (c0 + c));
        for (int t = t0; t < t1; t++) {
            const float pt = p[t];
            const float *v = V + (size_t)t * hd + 4 * c0;
            for (int c = 0; c < cn; c++) acc[c] = vfmaq_n_f32(acc[c], vld1q_f32(v + 4 * c), pt);
        }
        for (int c = 0; c < cn; c++) vst1q_f32(o + 4 * (c0 + c), acc[c]);
    }
}

static const lb_attn_parts parts = {scores, expsum, pv};

void lb_attn_group_neon(int hd, int T, int G, const float *q, const float *K, const float *V, float scale,
                        float *s, float *o) {
    lb_attn_group_blocks(&parts, hd, T, G, q, K, V, scale, s, o);
}

void lb_attn_row_neon(int hd, int T, const float *q, const float *K, const float *V, float scale, float *s,
                      float *o) {
    lb_attn_group_neon(hd, T, 1, q, K, V, scale, s, o);
}

void lb_silu_mul_neon(int n, const float *g, const float *u, float *out) {
    const float32x4_t one = vdupq_n_f32(1.0f);
    int i = 0;
    for (; i + 4 <= n; i += 4) {
        const float32x4_t x = vld1q_f32(g + i);
        const float32x4_t d = vaddq_f32(one, exp4(vnegq_f32(x)));
        vst1q_f32(out + i, vmulq_f32(vdivq_f32(x, d), vld1q_f32(u + i)));
    }
    for (; i < n; i++) out[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}
