/* Per-token Llama pieces between the linear ops, fused so decode makes few Python calls (the per-token
 * overhead target): residual add + RMSNorm, SiLU(gate) * up, and one layer's RoPE + KV write + GQA attention.
 * Single-threaded: at decode sizes these are microseconds; the weights' GEMV is what runs on the pool. */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include "ops/ops.h"
#include "common/threadpool.h"
#if defined(__x86_64__) || defined(_M_X64)
#include "x86_avx2/avx2.h"
#elif defined(__aarch64__)
#include "arm_common/arm.h"
#endif

void lb_add_rmsnorm(int n, float *x, const float *add, const float *w, float eps, float *out) {
    float ss = 0.f;
    if (add)
        for (int i = 0; i < n; i++) { x[i] += add[i]; ss += x[i] * x[i]; }
    else
        for (int i = 0; i < n; i++) ss += x[i] * x[i];
    const float r = 1.0f / sqrtf(ss / (float)n + eps);
    for (int i = 0; i < n; i++) out[i] = x[i] * r * w[i];
}

void lb_silu_mul(int n, const float *g, const float *u, float *out) {
    for (int i = 0; i < n; i++) out[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

typedef void (*silu_fn)(int, const float *, const float *, float *);
typedef struct { int M, n, rows_per_task; const float *gu; float *out; silu_fn f; } silu_job;

static void silu_task(void *ctx, int t, int thread) {
    (void)thread;
    const silu_job *j = ctx;
    const int r1 = (t + 1) * j->rows_per_task < j->M ? (t + 1) * j->rows_per_task : j->M;
    for (int r = t * j->rows_per_task; r < r1; r++)
        j->f(j->n, j->gu + (size_t)r * 2 * j->n, j->gu + (size_t)r * 2 * j->n + j->n, j->out + (size_t)r * j->n);
}

void lb_silu_mul_rows(int M, int n, const float *gu, float *out, int simd) {
    silu_job j = {.M = M, .n = n, .gu = gu, .out = out, .f = lb_silu_mul};
#if defined(__x86_64__) || defined(_M_X64)
    if (simd && (lb_isa_usable() & LB_ISA_AVX2)) j.f = lb_silu_mul_avx2;
#elif defined(__aarch64__)
    if (simd && (lb_isa_usable() & LB_ISA_NEON)) j.f = lb_silu_mul_neon;
#else
    (void)simd;
#endif
    /* ~16K elements per task: one decode row (n_ff of a few thousand) runs inline, not through the pool */
    j.rows_per_task = 16384 / (n > 0 ? n : 1);
    if (j.rows_per_task < 1) j.rows_per_task = 1;
    const int ntasks = (M + j.rows_per_task - 1) / j.rows_per_task;
    if (ntasks <= 1) silu_task(&j, 0, 0);
    else lb_parallel_for(ntasks, silu_task, &j);
}

/* qkv = [q: H*hd | k: Hkv*hd | v: Hkv*hd] of the token at `pos`; rot = (cos, sin) pairs [hd/2] for pos.
 * RoPE rotates adjacent pairs (GGUF order) of q and k in place, k/v go to cache[kvh][pos], then the H/Hkv query
 * heads of each kv head attend over positions 0..pos together (the prefill path's kernels: grouped AVX2, so each
 * K/V block is read once for the group, or the row kernel head by head). Long contexts (pos * H * hd past ~256K
 * MACs) spread the kv heads over the pool. scores: lb_attn_scratch_floats(H/Hkv, n_ctx) floats of scratch for
 * the inline case. */
typedef struct {
    int G, hd, T, n_ctx, nsplit;
    const float *q, *kc, *vc;
    float *out, *scratch;
    size_t scratch_per_thread;
    float scale;
    lb_attn_row_fn row;
    lb_attn_group_fn grp;
} dec_job;

/* task t: kv head t / nsplit, its query heads split nsplit ways (nsplit > 1 only when there are fewer kv heads
 * than threads: each part then reads the kv head's K/V again, which beats leaving a core idle) */
static void dec_kv_head(void *ctx, int t, int thread) {
    const dec_job *j = ctx;
    const int kvh = t / j->nsplit, part = t % j->nsplit, gs = (j->G + j->nsplit - 1) / j->nsplit;
    const int g0 = part * gs, g1 = g0 + gs < j->G ? g0 + gs : j->G;
    if (g0 >= g1) return;
    const size_t kv = (size_t)kvh * j->n_ctx * j->hd, h0 = ((size_t)kvh * j->G + g0) * j->hd;
    lb_attn_heads(j->grp, j->row, j->hd, j->T, g1 - g0, j->q + h0, j->kc + kv, j->vc + kv, j->scale,
                  j->scratch + (size_t)thread * j->scratch_per_thread, j->out + h0);
}

void lb_attn_decode(int H, int Hkv, int hd, int pos, int n_ctx, float *qkv, const float *rot, float *kc,
                    float *vc, float *scores, float *out, int simd) {
    lb_rope_kv(H, Hkv, hd, pos, n_ctx, qkv, rot, kc, vc);
    dec_job j = {.G = H / Hkv, .hd = hd, .T = pos + 1, .n_ctx = n_ctx, .nsplit = 1, .q = qkv, .kc = kc, .vc = vc,
                 .out = out, .scratch = scores, .scratch_per_thread = lb_attn_scratch_floats(H / Hkv, n_ctx),
                 .scale = 1.0f / sqrtf((float)hd), .row = lb_attn_row_for(hd, simd),
                 .grp = lb_attn_group_for(hd, simd)};
    float *pool_scratch = NULL;
    const int nt = lb_pool_threads();
    if ((size_t)j.T * H * hd > (1u << 18) && nt > 1)
        pool_scratch = malloc((size_t)nt * j.scratch_per_thread * sizeof(float));
    if (pool_scratch) {
        j.scratch = pool_scratch;
        if (Hkv < nt) j.nsplit = (nt + Hkv - 1) / Hkv < j.G ? (nt + Hkv - 1) / Hkv : j.G;
        lb_parallel_for(Hkv * j.nsplit, dec_kv_head, &j);
        free(pool_scratch);
    } else {
        for (int g = 0; g < Hkv; g++) dec_kv_head(&j, g, 0);
    }
}
