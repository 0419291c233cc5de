/* Per-token Llama pieces between the linear ops, fused so decode makes few Python calls (the per-token
 * overhead target): residual add + RMSNorm, SiLU(gate) * up, and one layer's RoPE + KV write + GQA attention.
 * Single-threaded: at decode sizes these are microseconds; the weights' GEMV is what runs on the pool. */
#include <math.h>
#include <stddef.h>
#include "ops/ops.h"
#include "common/threadpool.h"
#if defined(__x86_64__) || defined(_M_X64)
#include "x86_avx2/avx2.h"
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
 * RoPE rotates adjacent pairs (GGUF order) of q and k in place, k/v go to cache[kvh][pos], then each query
 * head h attends over positions 0..pos of kv head h / (H/Hkv). scores: n_ctx floats of scratch. */
void lb_attn_decode(int H, int Hkv, int hd, int pos, int n_ctx, float *qkv, const float *rot, float *kc,
                    float *vc, float *scores, float *out) {
    const int half = hd / 2, G = H / Hkv;
    for (int h = 0; h < H + Hkv; h++) {
        float *v = qkv + (size_t)h * hd;
        for (int i = 0; i < half; i++) {
            const float c = rot[2 * i], s = rot[2 * i + 1], a = v[2 * i], b = v[2 * i + 1];
            v[2 * i] = a * c - b * s;
            v[2 * i + 1] = a * s + b * c;
        }
    }
    const float *k = qkv + (size_t)H * hd, *vv = k + (size_t)Hkv * hd;
    for (int j = 0; j < Hkv; j++)
        for (int i = 0; i < hd; i++) {
            kc[((size_t)j * n_ctx + pos) * hd + i] = k[(size_t)j * hd + i];
            vc[((size_t)j * n_ctx + pos) * hd + i] = vv[(size_t)j * hd + i];
        }
    const float scale = 1.0f / sqrtf((float)hd);
    for (int h = 0; h < H; h++) {
        const float *q = qkv + (size_t)h * hd;
        const float *K = kc + (size_t)(h / G) * n_ctx * hd, *V = vc + (size_t)(h / G) * n_ctx * hd;
        float mx = -INFINITY;
        for (int t = 0; t <= pos; t++) {
            float d = 0.f;
            for (int i = 0; i < hd; i++) d += q[i] * K[(size_t)t * hd + i];
            scores[t] = d * scale;
            if (scores[t] > mx) mx = scores[t];
        }
        float sum = 0.f;
        for (int t = 0; t <= pos; t++) { scores[t] = expf(scores[t] - mx); sum += scores[t]; }
        float *o = out + (size_t)h * hd;
        for (int i = 0; i < hd; i++) o[i] = 0.f;
        for (int t = 0; t <= pos; t++) {
            const float p = scores[t] / sum;
            for (int i = 0; i < hd; i++) o[i] += p * V[(size_t)t * hd + i];
        }
    }
}
