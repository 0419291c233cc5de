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

/* 4-float vectors (GNU C vector extensions: SSE2 / NEON at the baseline, plain scalar code elsewhere). A group
 * is 8 of them; lane j of vector k is element 4k + j. */
typedef float f4 __attribute__((vector_size(16)));
typedef int32_t i4 __attribute__((vector_size(16)));
#define NV (G / 4)

/* Sum of 32 by halving (element i += element i + 16, then + 8, + 4, then (0 + 2) + (1 + 3)): numpy's _dot
 * does the same steps, so the sums are bit-identical. */
static inline float sum32(const f4 *p) {
    f4 a0 = p[0] + p[4], a1 = p[1] + p[5], a2 = p[2] + p[6], a3 = p[3] + p[7];
    a0 += a2; a1 += a3;
    a0 += a1;
    return (a0[0] + a0[2]) + (a0[1] + a0[3]);
}

/* LUT positions of x/d: q = clip(x * (1/d) + 128.5, 0, 255) truncated; NaN -> 0 (numpy's clip-mode take) */
static inline void positions(const f4 *x, float d, i4 *q) {
    const float inv = d != 0.f ? 1.0f / d : 0.f;
    const f4 vinv = {inv, inv, inv, inv}, half = {128.5f, 128.5f, 128.5f, 128.5f}, top = {255.f, 255.f, 255.f, 255.f};
    for (int k = 0; k < NV; k++) {
        f4 t = x[k] * vinv + half;
        t = (f4)((i4)t & (t > 0.f));                          /* t > 0 ? t : 0 (NaN fails: 0) */
        i4 lt = t < top;
        t = (f4)(((i4)t & lt) | ((i4)top & ~lt));             /* t < 255 ? t : 255 */
        q[k] = __builtin_convertvector(t, i4);
    }
}

/* the LUT values at q, built in registers (scalar stores read back as a vector would stall) */
static inline void gather(const i4 *q, const float *lv, f4 *v) {
    for (int k = 0; k < NV; k++) v[k] = (f4){lv[q[k][0]], lv[q[k][1]], lv[q[k][2]], lv[q[k][3]]};
}

/* One codebook from the LUT positions q at the start scale d (updated in place): `refits` rounds of
 * least-squares scale + reassignment, d rounded to the grid; returns the error, q holds the final positions. */
static inline float fit_one(const f4 *x, const f4 *w, const float *lv, int refits, float *dp, i4 *q) {
    float d = *dp;
    f4 v[NV], p[NV], p2[NV];
    gather(q, lv, v);
    for (int it = 0; it < refits; it++) {
        for (int k = 0; k < NV; k++) {
            f4 wv = w[k] * v[k];
            p[k] = wv * x[k];
            p2[k] = wv * v[k];
        }
        float num = sum32(p), den = sum32(p2);
        d = den > 0.f ? num / den : 0.f;
        positions(x, d, q);
        gather(q, lv, v);
    }
    d = round_scale(d);
    const f4 vd = {d, d, d, d};
    for (int k = 0; k < NV; k++) {
        f4 r = x[k] - vd * v[k];
        p[k] = (w[k] * r) * r;
    }
    *dp = d;
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
    const int full = shortk <= 0 || shortk >= C;
    const f4 one = {1.f, 1.f, 1.f, 1.f};
    for (int64_t g = 0; g < n; g++) {
        f4 xg[NV], wg[NV];
        memcpy(xg, x + g * G, sizeof xg);
        if (w) memcpy(wg, w + g * G, sizeof wg);
        else for (int k = 0; k < NV; k++) wg[k] = one;     /* weights 1: multiplying by 1 is exact */
        const float *xs = x + g * G;
        int am = 0;                                   /* signed absmax, first of equals (np.argmax) */
        for (int i = 1; i < G; i++)
            if (fabsf(xs[i]) > fabsf(xs[am])) am = i;
        const float mx = xs[am];
        /* the start positions depend on d0 = mx / ext only, and tables mostly share their extreme entry */
        i4 q0[16][NV];
        float d0[16];
        for (int c = 0; c < C; c++) {
            d0[c] = ext[c] != 0.f ? mx / ext[c] : 0.f;
            int same = -1;
            for (int j = 0; j < c && same < 0; j++)
                if (d0[j] == d0[c] || (d0[j] != d0[j] && d0[c] != d0[c])) same = j;
            if (same >= 0) memcpy(q0[c], q0[same], sizeof q0[c]);
            else positions(xg, d0[c], q0[c]);
        }
        int cand[16], nc = 0;
        if (full) {
            for (int c = 0; c < C; c++) cand[nc++] = c;
        } else {                                      /* shortlist: the shortk best without refits */
            float e[16];
            int order[16];
            for (int c = 0; c < C; c++) {
                i4 q[NV];
                float d = d0[c];
                memcpy(q, q0[c], sizeof q);
                e[c] = fit_one(xg, wg, lut_val + c * 256, 0, &d, q);
                int j = c;                            /* insertion sort of codebooks by (error, id) */
                while (j > 0 && before(e[c], c, e[order[j - 1]], order[j - 1])) { order[j] = order[j - 1]; j--; }
                order[j] = c;
            }
            for (; nc < shortk; nc++) cand[nc] = order[nc];
        }
        float best_err = INFINITY, best_d = 0.f;
        int best_id = 0;
        i4 best_q[NV], q[NV];
        memset(best_q, 0, sizeof best_q);
        for (int k = 0; k < nc; k++) {
            const int c = cand[k];
            float d = d0[c];
            memcpy(q, q0[c], sizeof q);
            float err = fit_one(xg, wg, lut_val + c * 256, refits, &d, q);
            if (err < best_err) { best_err = err; best_d = d; best_id = c; memcpy(best_q, q, sizeof q); }
        }
        d_out[g] = best_d;
        id_out[g] = (uint8_t)best_id;
        err_out[g] = best_err;
        const uint8_t *li = lut_idx + best_id * 256;
        for (int k = 0; k < NV; k++)
            for (int j = 0; j < 4; j++) idx_out[g * G + 4 * k + j] = li[best_q[k][j]];
    }
}
