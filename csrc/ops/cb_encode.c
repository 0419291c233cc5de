/* Codebook group encoding (cb4/cb2 quantization's hot loop), the C twin of src/lowbit/quantize/encode.py:
 * per group of 32, per candidate codebook: d = signed absmax / the table's signed extreme entry, then
 * `refits` rounds of nearest-entry assignment (a 256-entry LUT on round(x/d)) + least-squares scale, d rounded
 * to the stored grid (fp16 with the low 4 bits cleared), error = sum w (x - d v)^2; the least error wins.
 * The same float32 operations in the same order as the numpy reference (its 32-term sums use this file's
 * halving order, no fused multiply-adds), so both give bit-identical results (tests/test_cb_encode.py).
 * Plain C (no ISA flags); single-threaded per call: the Python pool calls it per chunk without the GIL. */
#include <math.h>
#include <stdint.h>
#include <string.h>
#include "lowbit/blocks.h"
#include "ops/ops.h"

/* a*b + c must round twice like numpy does: no fused multiply-add */
#if defined(__clang__)
#pragma clang fp contract(off)
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#define G 32

/* importance None = weights 1: multiplying by 1 is exact, so one code path serves both cases */
static const float ONES[G] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
                              1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};

/* Nearest value on the masked fp16 grid (formats/cb.round_scale: fp16 rounding, then the nearer of the two
 * masked neighbours, ties to the smaller magnitude). */
static float round_scale_slow(float d) {
    uint16_t h = lb_fp32_to_fp16(d);
    uint16_t lo = h & 0xFFF0, hi = (uint16_t)(lo + 0x10);
    if ((hi & 0x7FFF) >= 0x7C00) hi = lo;            /* never step onto inf */
    float vlo = lb_fp16_to_fp32(lo), vhi = lb_fp16_to_fp32(hi);
    return fabsf(vhi - d) < fabsf(vlo - d) ? vhi : vlo;
}

/* Same result, in float32 bits, where the grid point is a normal fp16 below the largest one (2^-14 <= |d| <
 * 65280): the grid keeps 6 of float32's 23 mantissa bits; the differences to both neighbours are exact. */
static inline float round_scale(float d) {
    uint32_t u;
    memcpy(&u, &d, 4);
    uint32_t a = u & 0x7fffffffu;
    if (a < 0x38800000u || a >= 0x477f0000u) return round_scale_slow(d);
    uint32_t lo = u & ~0x1ffffu, rem = u & 0x1ffffu;
    u = rem > 0x10000u ? lo + 0x20000u : lo;
    memcpy(&d, &u, 4);
    return d;
}

/* Sum of p[0..31] (overwritten) by halving: a fixed order whose steps the compiler vectorizes. */
static inline float sum32(float *p) {
    for (int i = 0; i < 16; i++) p[i] += p[i + 16];
    for (int i = 0; i < 8; i++) p[i] += p[i + 8];
    for (int i = 0; i < 4; i++) p[i] += p[i + 4];
    return (p[0] + p[2]) + (p[1] + p[3]);
}

/* nearest entries of x/d through the LUT: q in 0..255 (NaN -> 0, like numpy's clip-mode take), v = values */
static inline void assign(const float *x, float d, const float *lv, int32_t *q, float *v) {
    const float inv = d != 0.f ? 1.0f / d : 0.f;
    for (int i = 0; i < G; i++) {      /* vectorizes: t > 0 ? t : 0 is a max that sends NaN to 0 */
        float t = x[i] * inv + 128.5f;
        t = t > 0.f ? t : 0.f;
        t = t < 255.f ? t : 255.f;
        q[i] = (int32_t)t;
    }
    for (int i = 0; i < G; i++) v[i] = lv[q[i]];      /* the gather stays scalar (no ISA flags) */
}

/* One codebook: returns the error, the rounded scale in *dout and the LUT positions in q. */
static inline float fit_one(const float *x, const float *w, float mx, const float *lv, float ext, int refits,
                            float *dout, int32_t *q) {
    float d = ext != 0.f ? mx / ext : 0.f;
    float v[G], p[G], p2[G];
    for (int it = 0;; it++) {
        assign(x, d, lv, q, v);
        if (it == refits) break;
        for (int i = 0; i < G; i++) {
            float wv = w[i] * v[i];
            p[i] = wv * x[i];
            p2[i] = wv * v[i];
        }
        float num = sum32(p), den = sum32(p2);
        d = den > 0.f ? num / den : 0.f;
    }
    d = round_scale(d);
    for (int i = 0; i < G; i++) {
        float r = x[i] - d * v[i];
        p[i] = (w[i] * r) * r;
    }
    *dout = d;
    return sum32(p);
}

/* a ranks before b: smaller error, NaN last, ties to the lower codebook (numpy: stable argsort) */
static inline int before(float ea, int a, float eb, int b) {
    if (ea < eb) return 1;
    if (ea > eb) return 0;
    if (ea == eb) return a < b;
    return isnan(eb) && (!isnan(ea) || a < b);
}

void lb_cb_encode(int64_t n, const float *x, const float *w, int C, const float *lut_val,
                  const uint8_t *lut_idx, const float *ext, int refits, int shortk, float *d_out,
                  uint8_t *id_out, uint8_t *idx_out, float *err_out) {
    int full = shortk <= 0 || shortk >= C;
    for (int64_t g = 0; g < n; g++) {
        const float *xg = x + g * G, *wg = w ? w + g * G : ONES;
        int am = 0;                                   /* signed absmax, first of equals (np.argmax) */
        for (int i = 1; i < G; i++)
            if (fabsf(xg[i]) > fabsf(xg[am])) am = i;
        const float mx = xg[am];
        int cand[16], nc = 0;
        if (full) {
            for (int c = 0; c < C; c++) cand[nc++] = c;
        } else {                                      /* shortlist: the shortk best without refits */
            float e[16], dd;
            int32_t qq[G];
            int order[16];
            for (int c = 0; c < C; c++) {
                e[c] = fit_one(xg, wg, mx, lut_val + c * 256, ext[c], 0, &dd, qq);
                int j = c;                            /* insertion sort of codebooks by (error, id) */
                while (j > 0 && before(e[c], c, e[order[j - 1]], order[j - 1])) { order[j] = order[j - 1]; j--; }
                order[j] = c;
            }
            for (; nc < shortk; nc++) cand[nc] = order[nc];
        }
        float best_err = INFINITY, best_d = 0.f;
        int best_id = 0;
        int32_t best_qi[G], qi[G];
        memset(best_qi, 0, sizeof best_qi);
        for (int k = 0; k < nc; k++) {
            const int c = cand[k];
            float d, err = fit_one(xg, wg, mx, lut_val + c * 256, ext[c], refits, &d, qi);
            if (err < best_err) { best_err = err; best_d = d; best_id = c; memcpy(best_qi, qi, sizeof qi); }
        }
        d_out[g] = best_d;
        id_out[g] = (uint8_t)best_id;
        err_out[g] = best_err;
        const uint8_t *li = lut_idx + best_id * 256;
        for (int i = 0; i < G; i++) idx_out[g * G + i] = li[best_qi[i]];
    }
}
