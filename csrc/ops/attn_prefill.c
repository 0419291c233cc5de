/* Prefill attention on the pool: RoPE + KV-cache write for M new rows, then causal GQA attention of each row
 * (position p0 + i attends to 0..p0 + i). Replaces numpy's per-layer matmul/mask/softmax passes (30-40% of
 * SmolLM2's prefill at 2 threads, none of it threaded). The row kernel: AVX2 (x86_avx2/attn_avx2.c) or the
 * scalar one below; the numpy path in model/llama.py stays the reference where no SIMD row kernel exists. */
#include <math.h>
#include <stddef.h>
#include "ops/ops.h"
#include "common/threadpool.h"
#if defined(__x86_64__) || defined(_M_X64)
#include "x86_avx2/avx2.h"
#elif defined(__aarch64__)
#include "arm_common/arm.h"
#endif

#define ROW_BLOCK 4            /* query rows per task (x G heads): small enough to balance causal work */

void lb_attn_row_scalar(int hd, int T, const float *q, const float *K, const float *V, float scale, float *s,
                        float *o) {
    float mx = -INFINITY;
    for (int t = 0; t < T; t++) {
        float d = 0.f;
        for (int i = 0; i < hd; i++) d += q[i] * K[(size_t)t * hd + i];
        s[t] = d * scale;
        if (s[t] > mx) mx = s[t];
    }
    float sum = 0.f;
    for (int t = 0; t < T; t++) { s[t] = expf(s[t] - mx); sum += s[t]; }
    for (int i = 0; i < hd; i++) o[i] = 0.f;
    for (int t = 0; t < T; t++)
        for (int i = 0; i < hd; i++) o[i] += s[t] * V[(size_t)t * hd + i];
    const float inv = 1.0f / sum;
    for (int i = 0; i < hd; i++) o[i] *= inv;
}


typedef struct {
    int H, Hkv, hd, p0, M, n_ctx, nblk;
    float *qkv, *kc, *vc, *out, *scratch;
    const float *rot;
    size_t ldq, ldo, scratch_per_thread;
    float scale;
    lb_attn_row_fn row;
    lb_attn_group_fn grp;
} ajob;

#define KB 64                  /* keys per block: 64 rows of K (or V) at hd 64 = 16 KB, inside L1 */

/* The G query heads of one KV head over blocks of KB keys: each block of K and V comes from memory once and is
 * re-read from L1 for the other heads. Per head the ISA's pieces run in the one-row order (scores in t order,
 * exp, then Σ p_t V[t] in t order with the sums carried through o between blocks), so the result is
 * bit-identical to one row at a time; o is scaled by 1/Σ at the end, one multiply per value as a row does. */
void lb_attn_group_blocks(const lb_attn_parts *k, int hd, int T, int G, const float *q, const float *K,
                          const float *V, float scale, float *s, float *o) {
    float mx[LB_ATTN_MAX_GROUP], inv[LB_ATTN_MAX_GROUP];
    for (int g = 0; g < G; g++) mx[g] = -INFINITY;
    for (int t0 = 0; t0 < T; t0 += KB) {
        const int t1 = t0 + KB < T ? t0 + KB : T;
        for (int g = 0; g < G; g++)
            mx[g] = k->scores(hd, t0, t1, T, q + (size_t)g * hd, K, scale, s + (size_t)g * T, mx[g]);
    }
    for (int g = 0; g < G; g++) {
        inv[g] = 1.0f / k->expsum(T, s + (size_t)g * T, mx[g]);
        for (int i = 0; i < hd; i++) o[(size_t)g * hd + i] = 0.f;
    }
    for (int t0 = 0; t0 < T; t0 += KB) {
        const int t1 = t0 + KB < T ? t0 + KB : T;
        for (int g = 0; g < G; g++) k->pv(hd, t0, t1, s + (size_t)g * T, V, o + (size_t)g * hd);
    }
    for (int g = 0; g < G; g++)
        for (int i = 0; i < hd; i++) o[(size_t)g * hd + i] *= inv[g];
}

void lb_attn_heads(lb_attn_group_fn grp, lb_attn_row_fn row, int hd, int T, int n, const float *q,
                   const float *K, const float *V, float scale, float *s, float *o) {
    if (grp) {
        for (int g0 = 0; g0 < n; g0 += LB_ATTN_MAX_GROUP) {
            const int gn = n - g0 < LB_ATTN_MAX_GROUP ? n - g0 : LB_ATTN_MAX_GROUP;
            grp(hd, T, gn, q + (size_t)g0 * hd, K, V, scale, s, o + (size_t)g0 * hd);
        }
    } else {
        for (int g = 0; g < n; g++) row(hd, T, q + (size_t)g * hd, K, V, scale, s, o + (size_t)g * hd);
    }
}

void lb_rope_kv(int H, int Hkv, int hd, int pos, int n_ctx, float *row, const float *rot, float *kc, float *vc) {
    const int half = hd / 2;
    for (int h = 0; h < H + Hkv; h++) {                     /* q heads, then k heads: adjacent pairs (GGUF) */
        float *v = row + (size_t)h * hd;
        for (int e = 0; e < half; e++) {
            const float c = rot[2 * e], s = rot[2 * e + 1], a = v[2 * e], b = v[2 * e + 1];
            v[2 * e] = a * c - b * s;
            v[2 * e + 1] = a * s + b * c;
        }
    }
    const float *k = row + (size_t)H * hd, *v = k + (size_t)Hkv * hd;
    for (int g = 0; g < Hkv; g++)
        for (int e = 0; e < hd; e++) {
            kc[((size_t)g * n_ctx + pos) * hd + e] = k[(size_t)g * hd + e];
            vc[((size_t)g * n_ctx + pos) * hd + e] = v[(size_t)g * hd + e];
        }
}

static void rope_task(void *ctx, int i, int thread) {
    (void)thread;
    ajob *j = ctx;
    const int pos = j->p0 + i;
    lb_rope_kv(j->H, j->Hkv, j->hd, pos, j->n_ctx, j->qkv + (size_t)i * j->ldq, j->rot + (size_t)pos * j->hd,
               j->kc, j->vc);
}

static void attn_task(void *ctx, int t, int thread) {
    ajob *j = ctx;
    /* tasks from the last row block down: the longest (most keys) are claimed first */
    const int kvh = t % j->Hkv, blk = j->nblk - 1 - t / j->Hkv;
    const int G = j->H / j->Hkv, hd = j->hd;
    const float *K = j->kc + (size_t)kvh * j->n_ctx * hd, *V = j->vc + (size_t)kvh * j->n_ctx * hd;
    float *s = j->scratch + (size_t)thread * j->scratch_per_thread;
    const int i1 = (blk + 1) * ROW_BLOCK < j->M ? (blk + 1) * ROW_BLOCK : j->M;
    for (int i = blk * ROW_BLOCK; i < i1; i++)      /* the G heads of this KV head together */
        lb_attn_heads(j->grp, j->row, hd, j->p0 + i + 1, G, j->qkv + (size_t)i * j->ldq + (size_t)kvh * G * hd,
                      K, V, j->scale, s, j->out + (size_t)i * j->ldo + (size_t)kvh * G * hd);
}

int lb_attn_prefill_simd(void) {
#if defined(__x86_64__) || defined(_M_X64)
    return (lb_isa_usable() & LB_ISA_AVX2) != 0;
#elif defined(__aarch64__)
    return (lb_isa_usable() & LB_ISA_NEON) != 0;
#else
    return 0;
#endif
}

lb_attn_group_fn lb_attn_group_for(int hd, int simd) {
    if (simd != 1 || !lb_attn_prefill_simd()) return NULL;
#if defined(__x86_64__) || defined(_M_X64)
    if (hd % 8 == 0) return lb_attn_group_avx2;
#elif defined(__aarch64__)
    if (hd % 4 == 0) return lb_attn_group_neon;
#else
    (void)hd;
#endif
    return NULL;
}

size_t lb_attn_scratch_floats(int G, int n_ctx) {
    return (size_t)(G < LB_ATTN_MAX_GROUP ? G : LB_ATTN_MAX_GROUP) * n_ctx;
}

lb_attn_row_fn lb_attn_row_for(int hd, int simd) {
    if (!simd || !lb_attn_prefill_simd()) return lb_attn_row_scalar;
#if defined(__x86_64__) || defined(_M_X64)
    if (hd % 8 == 0) return lb_attn_row_avx2;
#elif defined(__aarch64__)
    if (hd % 4 == 0) return lb_attn_row_neon;
#endif
    return lb_attn_row_scalar;
}

void lb_attn_prefill(int H, int Hkv, int hd, int p0, int M, int n_ctx, float *qkv, size_t ldq, const float *rot,
                     float *kc, float *vc, float *out, size_t ldo, float scale, float *scratch, int simd) {
    ajob j = {.H = H, .Hkv = Hkv, .hd = hd, .p0 = p0, .M = M, .n_ctx = n_ctx, .qkv = qkv, .kc = kc, .vc = vc,
              .out = out, .scratch = scratch, .rot = rot, .ldq = ldq, .ldo = ldo, .scale = scale,
              .scratch_per_thread = lb_attn_scratch_floats(H / Hkv, n_ctx),
              .row = lb_attn_row_for(hd, simd), .grp = lb_attn_group_for(hd, simd)};
    lb_parallel_for(M, rope_task, &j);      /* every new key is in the cache before any row attends */
    j.nblk = (M + ROW_BLOCK - 1) / ROW_BLOCK;
    lb_parallel_for(j.nblk * Hkv, attn_task, &j);
}
