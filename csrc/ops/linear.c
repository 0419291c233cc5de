/* The threaded linear op: quantize activations in parallel, then tile (M, N) over the pool.
 * GEMM takes rows in groups of 4; the M%4 leftover rows go through GEMV (as ggml does). */
#include <string.h>
#include "ops.h"
#include "ref/ref.h"
#include "common/threadpool.h"
#if defined(__x86_64__) || defined(_M_X64)
#include "x86_avx2/avx2.h"
#endif

#define M_TILE 64              /* at most this many tokens per task */
#define ACT_TILE_BYTES (256 << 10)   /* ... and at most this many activation bytes, so they stay in L2 */
#define PANEL_BYTES (128 << 10)      /* weight columns per GEMM call: at most this many bytes (see mm_task) */

int lb_gemm_multi_enabled = 1;

size_t lb_act_bytes(int M, int K) {
    const size_t nb = (size_t)(K / LB_QK);
    const size_t g = (size_t)(M / 4), rest = (size_t)(M % 4);
    return g * nb * LB_Q8X4_BLOCK + rest * nb * LB_Q8_BLOCK + (size_t)M * nb * sizeof(int16_t) + 16;
}

#define MAX_PARTS LB_MAX_PARTS  /* parts of one fused output (q/k/v, gate/up): 3 in practice */

/* One weight of a fused output: its columns land at out + col (row stride ldo). Per-part task split. */
typedef struct {
    lb_lin_part p;
    int chunk_cols, panel_cols, ncol_chunks, task0;
} part_job;

typedef struct {
    const lb_kernel *k;        /* parts[0]'s kernel: it decides the activation packing, shared by all parts */
    int K, M, nb, ngroups, nrest, m_tiles, tile_groups, nparts, tasks_per_tile;
    size_t ldo;
    part_job parts[MAX_PARTS];
    const float *x;
    float *out;
    uint8_t *act4, *act1;
    int16_t *bsums;
} job;

static void layout(job *j, uint8_t *scratch) {
    j->nb = j->K / LB_QK;
    j->ngroups = j->M / 4;
    j->nrest = j->M % 4;
    j->act4 = scratch;
    j->act1 = scratch + (size_t)j->ngroups * j->nb * LB_Q8X4_BLOCK;
    size_t off = (size_t)(j->act1 - scratch) + (size_t)j->nrest * j->nb * LB_Q8_BLOCK;
    off = (off + 15) & ~(size_t)15;   /* block sums start 16-aligned from the scratch base */
    j->bsums = (int16_t *)(scratch + off);
}

typedef void (*quant_row_fn)(const float *, int, uint8_t *, int16_t *, int);
typedef void (*quant_rows4_fn)(const float *, size_t, int, int, uint8_t *, int16_t *);

static void quant_task(void *ctx, int t, int thread) {
    (void)thread;
    job *j = ctx;
    /* the SIMD quantizers give the same bytes; use them whenever the kernel itself needs that ISA */
    quant_row_fn row = lb_quantize_row_q8_0;
    quant_rows4_fn rows4 = lb_quantize_rows_q8_0x4;
#if defined(__x86_64__) || defined(_M_X64)
    if (j->k->isa & LB_ISA_AVX2) { row = lb_quantize_row_q8_0_avx2; rows4 = lb_quantize_rows_q8_0x4_avx2; }
#endif
    if (t < j->ngroups) {
        rows4(j->x + (size_t)4 * t * j->K, j->K, j->K, j->k->act_B,
                                j->act4 + (size_t)t * j->nb * LB_Q8X4_BLOCK, j->bsums + (size_t)t * j->nb * 4);
    } else {
        int r = t - j->ngroups;
        row(j->x + (size_t)(4 * j->ngroups + r) * j->K, j->K,
                             j->act1 + (size_t)r * j->nb * LB_Q8_BLOCK,
                             j->bsums + (size_t)j->ngroups * j->nb * 4 + (size_t)r * j->nb, 1);
    }
}

static void mm_task(void *ctx, int t, int thread) {
    (void)thread;
    job *j = ctx;
    const int mt = t / j->tasks_per_tile, r = t % j->tasks_per_tile;
    int pi = 0;
    while (pi + 1 < j->nparts && r >= j->parts[pi + 1].task0) pi++;
    const part_job *pj = &j->parts[pi];
    const lb_kernel *k = pj->p.k;
    const int N = pj->p.N;
    const uint8_t *W = pj->p.W;
    const int8_t *aux = pj->p.aux;
    float *out = j->out + pj->p.col;
    const size_t ldo = j->ldo;
    const int n0 = (r - pj->task0) * pj->chunk_cols;
    int n1 = n0 + pj->chunk_cols;
    const int Np = (N + k->R - 1) / k->R * k->R;
    if (n1 > Np) n1 = Np;
    if (n0 >= n1) return;
    /* token groups of this M tile; the last tile also runs the leftover GEMV rows */
    const int g0 = mt * j->tile_groups, g1 = g0 + j->tile_groups < j->ngroups ? g0 + j->tile_groups : j->ngroups;
    /* A kernel with a multi-group GEMM takes all the tile's token groups in one call per column chunk: it
     * decodes each weight block once for them all (the weights are then read once, so no panels). For one
     * group the per-group gemm is faster (cb4: -7..10% at M = 4, even at 2 groups, +4..24% from 4 to 16). */
    if (k->gemm_multi && lb_gemm_multi_enabled && g1 - g0 >= 2)
        k->gemm_multi(j->K, W, aux, j->act4 + (size_t)g0 * j->nb * LB_Q8X4_BLOCK,
                      j->bsums + (size_t)g0 * j->nb * 4, out + (size_t)4 * g0 * ldo, ldo, n0, n1, N, g1 - g0);
    /* Otherwise one GEMM call per (weight panel, token group): the kernel walks the panel's row groups against
     * one token group, whose activations stay in L1 and whose per-call setup is shared by all the rows; the
     * panel (<= PANEL_BYTES) stays in L2 across the tile's token groups. +3..8% over one row group per call. */
    else for (int n = n0; n < n1; n += pj->panel_cols) {
        const int ne = n + pj->panel_cols < n1 ? n + pj->panel_cols : n1;
        for (int g = g0; g < g1; g++)
            k->gemm(j->K, W, aux, j->act4 + (size_t)g * j->nb * LB_Q8X4_BLOCK,
                    j->bsums + (size_t)g * j->nb * 4, out + (size_t)4 * g * ldo, ldo, n, ne, N);
    }
    if (mt == j->m_tiles - 1)
        for (int q = 0; q < j->nrest; q++)
            k->gemv(j->K, W, aux, j->act1 + (size_t)q * j->nb * LB_Q8_BLOCK,
                    j->bsums + (size_t)j->ngroups * j->nb * 4 + (size_t)q * j->nb,
                    out + (size_t)(4 * j->ngroups + q) * ldo, n0, n1, N);
}

void lb_pack_activations(const lb_kernel *k, int M, int K, const float *x, uint8_t *scratch) {
    job j = {.k = k, .K = K, .M = M, .x = x};
    layout(&j, scratch);
    lb_parallel_for(j.ngroups + j.nrest, quant_task, &j);
}

int lb_parts_compatible(const lb_kernel *a, const lb_kernel *b) {
    /* same activation packing: the Q8_0x4 chunk size and the quantizer's ISA (bytes are equal either way, but
     * a kernel may only assume its own ISA is usable) */
    return a->act_B == b->act_B && (a->isa & LB_ISA_AVX2) == (b->isa & LB_ISA_AVX2);
}

void lb_linear_parts(int nparts, const lb_lin_part *parts, int K, int M, const float *x, float *out, size_t ldo,
                     uint8_t *scratch) {
    job j = {.k = parts[0].k, .K = K, .M = M, .x = x, .out = out, .ldo = ldo, .nparts = nparts};
    layout(&j, scratch);
    lb_parallel_for(j.ngroups + j.nrest, quant_task, &j);   /* once for all parts */
    const int nth = lb_pool_threads();
    /* token groups per task: up to M_TILE tokens whose packed activations fit ACT_TILE_BYTES (K=4096: 60
     * tokens, K=11008: 20), so each weight strip is dotted against L2-resident activations, not L3 */
    j.tile_groups = ACT_TILE_BYTES / (j.nb * LB_Q8X4_BLOCK);
    if (j.tile_groups > M_TILE / 4) j.tile_groups = M_TILE / 4;
    if (j.tile_groups < 1) j.tile_groups = 1;
    j.m_tiles = j.ngroups > 0 ? (j.ngroups + j.tile_groups - 1) / j.tile_groups : 1;
    /* Column chunks: enough of them over all parts to balance threads (about 4 per thread per M tile) */
    int Ntot = 0;
    for (int i = 0; i < nparts; i++) Ntot += parts[i].N;
    int want = 4 * nth / j.m_tiles;
    if (want < 1 || nth == 1) want = 1;
    const int cols_all = (Ntot + want - 1) / want;
    j.tasks_per_tile = 0;
    for (int i = 0; i < nparts; i++) {
        part_job *pj = &j.parts[i];
        const lb_kernel *k = parts[i].k;
        pj->p = parts[i];
        const int Np = (parts[i].N + k->R - 1) / k->R * k->R;
        int cols = (cols_all + k->R - 1) / k->R * k->R;          /* R-aligned */
        if (cols > Np) cols = Np;
        if (j.ngroups > 0 && cols > 256) cols = 256;   /* strips of <= 256 cols keep the weight tile in L2 */
        pj->chunk_cols = cols;
        /* GEMM panels: the chunk split into equal R-aligned panels of <= PANEL_BYTES packed weights (bytes per
         * column: nb blocks of fp16 scale + payload) */
        const size_t col_bytes = (size_t)j.nb * (k->fmt == LB_FMT_Q8_0 ? 34 : k->fmt == LB_FMT_CB2 ? 10 : 18);
        int panel = (int)(PANEL_BYTES / col_bytes) / k->R * k->R;
        if (panel < k->R) panel = k->R;
        const int npanels = (cols + panel - 1) / panel;
        pj->panel_cols = ((cols + npanels - 1) / npanels + k->R - 1) / k->R * k->R;
        pj->ncol_chunks = (Np + cols - 1) / cols;
        pj->task0 = j.tasks_per_tile;
        j.tasks_per_tile += pj->ncol_chunks;
    }
    lb_parallel_for(j.m_tiles * j.tasks_per_tile, mm_task, &j);
}

void lb_linear(const lb_kernel *k, int K, int N, const uint8_t *W, const int8_t *aux, int M, const float *x,
               float *out, uint8_t *scratch) {
    const lb_lin_part p = {.k = k, .N = N, .W = W, .aux = aux, .col = 0};
    lb_linear_parts(1, &p, K, M, x, out, (size_t)N, scratch);
}

double lb_read_sum(const uint8_t *buf, size_t n) {
    const uint64_t *p = (const uint64_t *)buf;
    uint64_t s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    size_t i, m = n / 8;
    for (i = 0; i + 4 <= m; i += 4) { s0 += p[i]; s1 += p[i + 1]; s2 += p[i + 2]; s3 += p[i + 3]; }
    for (; i < m; i++) s0 += p[i];
    return (double)(s0 + s1 + s2 + s3);
}

long long lb_add_chain(long long iters) {
    long long x = 0;
    for (long long i = 0; i < iters; i++) {
        /* eight dependent adds per iteration; the barrier keeps the compiler from folding them */
        x += i; __asm__ volatile("" : "+r"(x)); x += 1; __asm__ volatile("" : "+r"(x));
        x += 3; __asm__ volatile("" : "+r"(x)); x += 5; __asm__ volatile("" : "+r"(x));
        x += 7; __asm__ volatile("" : "+r"(x)); x += 9; __asm__ volatile("" : "+r"(x));
        x += 11; __asm__ volatile("" : "+r"(x)); x += 13; __asm__ volatile("" : "+r"(x));
    }
    return x;
}
