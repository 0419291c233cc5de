/* Codebook group encoding (cb4/cb2 quantization's hot loop), the C twin of src/lowbit/quantize/encode.py:
 * per group of 32, per candidate codebook: d = signed absmax / the table's signed extreme entry, then
 * `refits` rounds of nearest-entry assignment (a 256-entry LUT on round(x/d)) + least-squares scale, d rounded
 * to the stored grid (fp16 with the low 4 bits cleared), error = sum w (x - d v)^2; the least error wins.
 * Same float32 operations in the same order as numpy except the 32-term sums (8 partial sums here, numpy's
 * own order there), so results agree up to near-ties (tests/test_cb_encode.py).
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

static const float ONES[G] = {1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1,
                              1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1};

/* Nearest value on the masked fp16 grid (formats/cb.round_scale). */
static float round_scale(float d) {
    uint16_t h = lb_fp32_to_fp16(d);
    uint16_t lo = h & 0xFFF0, hi = (uint16_t)(lo + 0x10);
    if ((hi & 0x7FFF) >= 0x7C00) hi = lo;            /* never step onto inf */
    float vlo = lb_fp16_to_fp32(lo), vhi = lb_fp16_to_fp32(hi);
    return fabsf(vhi - d) < fabsf(vlo - d) ? vhi : vlo;
}

/* sum a*b*c over 32 (c may be ONES: multiplying by 1 is exact, so one code path serves both cases) */
static inline float dot3(const float *a, const float *b, const float *c) {
    float s[8] = {0};
    for (int i = 0; i < G; i += 8)
        for (int j = 0; j < 8; j++) s[j] += (a[i + j] * b[i + j]) * c[i + j];
    return ((s[0] + s[1]) + (s[2] + s[3])) + ((s[4] + s[5]) + (s[6] + s[7]));
}

/* nearest entries of x/d through the LUT: qi in 0..255 (NaN -> 0, like numpy's clip-mode take) */
static inline void assign(const float *x, float d, const float *lv, uint8_t *qi, float *v) {
    const float inv = d != 0.f ? 1.0f / d : 0.f;
    int32_t q[G];
    for (int i = 0; i < G; i++) {
        float t = x[i] * inv + 128.5f;
        t = t > 0.f ? t : 0.f;
        t = t < 255.f ? t : 255.f;
        q[i] = (int32_t)t;
    }
    for (int i = 0; i < G; i++) { qi[i] = (uint8_t)q[i]; v[i] = lv[q[i]]; }
}

/* One codebook: returns the error, the rounded scale in *dout and the LUT positions in qi. */
static float fit_one(const float *x, const float *w, float mx, const float *lv, float ext, int refits,
                     float *dout, uint8_t *qi) {
    float d = ext != 0.f ? mx / ext : 0.f;
    float v[G], wv[G], r[G];
    for (int it = 0;; it++) {
        assign(x, d, lv, qi, v);
        if (it == refits) break;
        for (int i = 0; i < G; i++) wv[i] = w[i] * v[i];
        float num = dot3(wv, x, ONES), den = dot3(wv, v, ONES);
        d = den > 0.f ? num / den : 0.f;
    }
    d = round_scale(d);
    for (int i = 0; i < G; i++) r[i] = x[i] - d * v[i];
    *dout = d;
    return dot3(w, r, r);
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
            uint8_t qq[G];
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
        uint8_t best_qi[G], qi[G];
        memset(best_qi, 0, G);
        for (int k = 0; k < nc; k++) {
            const int c = cand[k];
            float d, err = fit_one(xg, wg, mx, lut_val + c * 256, ext[c], refits, &d, qi);
            if (err < best_err) { best_err = err; best_d = d; best_id = c; memcpy(best_qi, qi, G); }
        }
        d_out[g] = best_d;
        id_out[g] = (uint8_t)best_id;
        err_out[g] = best_err;
        const uint8_t *li = lut_idx + best_id * 256;
        for (int i = 0; i < G; i++) idx_out[g * G + i] = li[best_qi[i]];
    }
}
