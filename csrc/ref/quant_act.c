/* Activation quantization to Q8_0 (plain rows for GEMV, 4-row interleaved Q8_0x4 for GEMM).
 * d = amax/127 rounded to fp16; q = roundf(x * (1/d)) with 1/d taken from the fp32 d, as ggml does. */
#include <math.h>
#include <string.h>
#include "ref.h"

static void quant_block(const float *x, int8_t *q, uint16_t *dh, int16_t *bsum) {
    float amax = 0.0f;
    int finite = 1;
    for (int e = 0; e < LB_QK; e++) { float a = fabsf(x[e]); finite &= a <= 3.4e38f; if (a > amax) amax = a; }
    if (!finite) {  /* NaN/inf in: a NaN scale carries it to the outputs (casting NaN to int8 would be UB) */
        memset(q, 0, LB_QK);
        *dh = 0x7e00;
        *bsum = 0;
        return;
    }
    const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
    int s = 0;
    for (int e = 0; e < LB_QK; e++) { q[e] = (int8_t)roundf(x[e] * id); s += q[e]; }
    *dh = lb_fp32_to_fp16(d);
    *bsum = (int16_t)s;
}

void lb_quantize_row_q8_0(const float *x, int K, uint8_t *out, int16_t *bsums, int bsum_stride) {
    for (int b = 0; b < K / LB_QK; b++) {
        uint8_t *blk = out + (size_t)b * LB_Q8_BLOCK;
        uint16_t dh; int16_t s;
        quant_block(x + (size_t)b * LB_QK, (int8_t *)(blk + 2), &dh, &s);
        memcpy(blk, &dh, 2);
        bsums[(size_t)b * bsum_stride] = s;
    }
}

/* Four rows x[i*ldx]: block b holds 4 fp16 scales then 128 bytes; element e of row i sits at
 * ((e/act_B)*4 + i)*act_B + e%act_B. bsums4 is [nb][4]. */
void lb_quantize_rows_q8_0x4(const float *x, size_t ldx, int K, int act_B, uint8_t *out, int16_t *bsums4) {
    int8_t q[LB_QK];
    for (int b = 0; b < K / LB_QK; b++) {
        uint8_t *blk = out + (size_t)b * LB_Q8X4_BLOCK;
        for (int i = 0; i < 4; i++) {
            uint16_t dh;
            quant_block(x + i * ldx + (size_t)b * LB_QK, q, &dh, &bsums4[(size_t)b * 4 + i]);
            memcpy(blk + 2 * i, &dh, 2);
            for (int e = 0; e < LB_QK; e++) blk[8 + ((e / act_B) * 4 + i) * act_B + e % act_B] = (uint8_t)q[e];
        }
    }
}
