/* The micro-kernel interface. Micro-kernels are stateless: no allocation, no threads, any sub-rectangle.
 *
 * W is the whole packed weight tensor: Np/R row groups (Np = N rounded up to R), each holding nb = K/32
 * consecutive super-blocks. Columns n0..n1 are computed (n0 a multiple of R, n1 <= Np); outputs are stored
 * only for columns < N, so a padded last group never writes past the user's row.
 *   gemv: one activation row A as nb plain Q8_0 blocks; out[n] for the row.
 *   gemm: four activation rows A as nb Q8_0x4 blocks (chunk = kernel's act_B); out + i*ldo for row i.
 * aux: the format's lookup tables (cb4/cb2: int8 codebooks [C][16]); NULL for the others.
 * bsums: int16 block sums Σq of the activations (SIMD kernels use them to fold offsets):
 *   gemv: [nb] for the row; gemm: [nb][4] interleaved like the rows.
 * gemm_multi (optional, NULL for most kernels): the gemm for ng consecutive token groups in one call, so a kernel
 *   whose weight decoding is costly (cb4 table lookups) decodes each block once for all 4*ng tokens. Group t's
 *   activations at A4 + t*nb*LB_Q8X4_BLOCK, block sums at bsums4 + t*nb*4, output rows at out + 4*t*ldo.   */
#ifndef LOWBIT_KERNEL_H
#define LOWBIT_KERNEL_H
#include "lowbit/blocks.h"

typedef void (*lb_gemv_fn)(int K, const uint8_t *W, const int8_t *aux, const uint8_t *A, const int16_t *bsums,
                           float *out, int n0, int n1, int N);
typedef void (*lb_gemm_fn)(int K, const uint8_t *W, const int8_t *aux, const uint8_t *A4, const int16_t *bsums4,
                           float *out, size_t ldo, int n0, int n1, int N);
typedef void (*lb_gemm_multi_fn)(int K, const uint8_t *W, const int8_t *aux, const uint8_t *A4,
                                 const int16_t *bsums4, float *out, size_t ldo, int n0, int n1, int N, int ng);

/* ISA feature bits (one namespace for both architectures). */
enum {
    LB_ISA_AVX2 = 1 << 0,      /* avx2 + fma + f16c */
    LB_ISA_NEON = 1 << 8,
    LB_ISA_DOTPROD = 1 << 9,
    LB_ISA_I8MM = 1 << 10,
    LB_ISA_SVE256 = 1 << 11,   /* SVE with a 256-bit vector length */
};

enum { LB_FMT_Q4_0 = 0, LB_FMT_IQ4_NL = 1, LB_FMT_Q8_0 = 2, LB_FMT_CB4 = 3, LB_FMT_CB2 = 4, LB_NFMT };

typedef struct {
    const char *name;      /* gemX_<fmt>_<R>x<B>__<isa>: the name is the spec */
    int fmt;
    int isa;               /* required features, 0 = scalar */
    int R, B;              /* weight interleave: rows per group, bytes per chunk */
    int act_B;             /* Q8_0x4 chunk size the gemm expects */
    lb_gemv_fn gemv;
    lb_gemm_fn gemm;
    lb_gemm_multi_fn gemm_multi;   /* NULL unless kernels.inc lists the kernel with LB_KERNEL_MULTI */
} lb_kernel;

extern const lb_kernel lb_kernels[];
extern const int lb_nkernels;

/* Features found, features masked by LOWBIT_DISABLE_ISA, and the chosen kernel per format. */
int lb_cpu_features(void);
int lb_isa_usable(void);
const lb_kernel *lb_select(int fmt);
const char *lb_fmt_name(int fmt);
int lb_sve_vector_bits(void);
/* 0 makes lb_linear use the per-group gemm loop even where gemm_multi exists (tests compare both). */
extern int lb_gemm_multi_enabled;

#endif
