#ifndef LOWBIT_OPS_H
#define LOWBIT_OPS_H
#include "lowbit/kernel.h"
/* Bytes of the activation scratch for M rows of K (Q8_0x4 groups, leftover Q8_0 rows, int16 block sums). */
size_t lb_act_bytes(int M, int K);
/* out[M,N] = x[M,K] @ W^T with W packed for kernel k. scratch has lb_act_bytes(M,K) bytes.
 * Runs on the thread pool; call without the GIL. */
void lb_linear(const lb_kernel *k, int K, int N, const uint8_t *W, const int8_t *aux, int M, const float *x,
               float *out, uint8_t *scratch);
/* One of several weights sharing K whose outputs sit side by side in one output (fused q/k/v or gate/up whose
 * cb tables cannot share one tensor): columns 0..N-1 of W go to out[:, col..col+N-1]. */
typedef struct {
    const lb_kernel *k;
    int N;
    const uint8_t *W;
    const int8_t *aux;
    size_t col;
} lb_lin_part;
#define LB_MAX_PARTS 8
/* Parts may share one call when their activations pack the same way (parts[0]'s packing is used). */
int lb_parts_compatible(const lb_kernel *a, const lb_kernel *b);
/* out[M, ldo] (columns per parts' col) = x[M,K] @ [W_0; W_1; ...]^T: activations quantized once, one pool
 * dispatch over all parts' column chunks. nparts <= LB_MAX_PARTS. Call without the GIL. */
void lb_linear_parts(int nparts, const lb_lin_part *parts, int K, int M, const float *x, float *out, size_t ldo,
                     uint8_t *scratch);
/* Quantize + pack activations only (the first half of lb_linear), for tests. */
void lb_pack_activations(const lb_kernel *k, int M, int K, const float *x, uint8_t *scratch);
/* STREAM-like read bandwidth over buf (bytes/s measured by the caller); returns a checksum. */
double lb_read_sum(const uint8_t *buf, size_t n);
/* Dependent-add chain; the caller times it to estimate the effective clock. */
long long lb_add_chain(long long iters);
/* Llama decode pieces (llama_ops.c): x += add (if add); out = x / rms(x) * w. */
void lb_add_rmsnorm(int n, float *x, const float *add, const float *w, float eps, float *out);
/* out = silu(g) * u (scalar: the reference) */
void lb_silu_mul(int n, const float *g, const float *u, float *out);
/* M rows: gu [M][2n] = [gate | up] per row -> out [M][n], on the pool when large; simd = 0 forces the scalar
 * loop (tests). */
void lb_silu_mul_rows(int M, int n, const float *gu, float *out, int simd);
/* RoPE q/k in qkv, write k/v to the caches at pos, GQA attention over 0..pos into out [H*hd]. */
void lb_attn_decode(int H, int Hkv, int hd, int pos, int n_ctx, float *qkv, const float *rot, float *kc,
                    float *vc, float *scores, float *out, int simd);
/* Prefill attention (attn_prefill.c), on the pool: RoPE q/k of M rows at positions p0.. in qkv (row stride ldq,
 * [q: H*hd | k | v]), write their k/v to the caches [Hkv][n_ctx][hd], then causal GQA attention into out (row
 * stride ldo). rot: (cos, sin) pairs [n_ctx][hd/2]. scratch: lb_pool_threads() * lb_attn_scratch_floats() floats.
 * simd = 0 forces the scalar row kernel, 2 the SIMD row kernel head by head (tests); lb_attn_prefill_simd() says
 * whether a SIMD one exists here. */
/* RoPE (rot: (cos, sin) pairs [hd/2] of pos) of q/k in one qkv row in place, then its k/v into the caches
 * [Hkv][n_ctx][hd] at pos: the first step of both prefill and decode attention. */
void lb_rope_kv(int H, int Hkv, int hd, int pos, int n_ctx, float *row, const float *rot, float *kc, float *vc);
/* One query row's causal attention over T keys: o = softmax(scale * K q) V, s: T floats of scratch. */
typedef void (*lb_attn_row_fn)(int hd, int T, const float *q, const float *K, const float *V, float scale,
                               float *s, float *o);
void lb_attn_prefill(int H, int Hkv, int hd, int p0, int M, int n_ctx, float *qkv, size_t ldq, const float *rot,
                     float *kc, float *vc, float *out, size_t ldo, float scale, float *scratch, int simd);
int lb_attn_prefill_simd(void);
/* The row kernel attention uses: SIMD (AVX2 / NEON) when simd, usable and hd fits it; else the scalar one. */
lb_attn_row_fn lb_attn_row_for(int hd, int simd);
/* Query heads of one KV head at once (q, o: [G][hd]; s: G*T floats), or NULL where no grouped kernel exists
 * (then each head runs the row kernel). simd == 2 asks for the per-head rows (tests: both must agree). */
#define LB_ATTN_MAX_GROUP 16
/* An ISA's pieces of the grouped kernel: scores of keys [t0, t1) (t0 % 4 == 0; the block ending at T has the
 * tail) returning the running max, the in-place exp and its sum, o += Σ p_t V[t] over [t0, t1). */
typedef struct {
    float (*scores)(int hd, int t0, int t1, int T, const float *q, const float *K, float scale, float *s,
                    float mx);
    float (*expsum)(int T, float *s, float mx);
    void (*pv)(int hd, int t0, int t1, const float *p, const float *V, float *o);
} lb_attn_parts;
/* The grouped kernel's schedule over 64-key blocks, shared by the ISAs (attn_prefill.c). */
void lb_attn_group_blocks(const lb_attn_parts *k, int hd, int T, int G, const float *q, const float *K,
                          const float *V, float scale, float *s, float *o);
typedef void (*lb_attn_group_fn)(int hd, int T, int G, const float *q, const float *K, const float *V,
                                 float scale, float *s, float *o);
lb_attn_group_fn lb_attn_group_for(int hd, int simd);
/* Scratch floats one thread needs for G query heads per KV head (lb_attn_prefill wants lb_pool_threads() of
 * them; lb_attn_decode's `scores` holds at least this many). */
size_t lb_attn_scratch_floats(int G, int n_ctx);
/* Run query heads h0..h0+n-1 of one KV head (all in its group) at T keys: grouped kernel in chunks of at most
 * LB_ATTN_MAX_GROUP heads, or row by row. q, o point at head h0; s: min(n, LB_ATTN_MAX_GROUP) * T floats. */
void lb_attn_heads(lb_attn_group_fn grp, lb_attn_row_fn row, int hd, int T, int n, const float *q,
                   const float *K, const float *V, float scale, float *s, float *o);
void lb_attn_row_scalar(int hd, int T, const float *q, const float *K, const float *V, float scale, float *s,
                        float *o);
/* Codebook group encoding (cb_encode.c): n groups of 32 floats x (importance w [n,32] or NULL) against C
 * codebooks given as LUTs over round(x/d) in -128..127 (values lut_val [C,256], indices lut_idx [C,256]) and
 * signed extreme entries ext [C]. Outputs the stored-grid scale, codebook id, entry indices and error. */
void lb_cb_encode(int64_t n, const float *x, const float *w, int C, const float *lut_val,
                  const uint8_t *lut_idx, const float *ext, int refits, int shortk, float *d_out,
                  uint8_t *id_out, uint8_t *idx_out, float *err_out);
#endif
