/* Byte layouts shared by every kernel. The numpy code in src/lowbit/formats is the executable spec;
 * these constants must agree with it (checked by tests/test_layouts.py through _core.layout_info()). */
#ifndef LOWBIT_BLOCKS_H
#define LOWBIT_BLOCKS_H
#include <stdint.h>
#include <stddef.h>

#define LB_QK 32                  /* elements per quantization group along K */
#define LB_Q8_BLOCK 34            /* Q8_0: fp16 d + 32 int8 */
#define LB_Q8X4_BLOCK 136         /* 4 rows of Q8_0 interleaved: 4 fp16 d + 128 int8 */

/* Weight super-block for R interleaved rows of one K-block:
 *   4-bit formats (q4_0, iq4_nl): R fp16 scales, then R*16 bytes of nibbles.
 *   cb4: R u16 scale words, then R*16 bytes of nibbles (R*18 bytes, as q4_0).
 *   cb2: R u16 scale words, then R*8 bytes of 2-bit indices.
 *   q8_0: R fp16 scales, then R*32 int8.
 * A cb scale word h carries the row's codebook id in its low 4 bits (id = h & 15) and the scale in the rest
 * (fp16 h & 0xFFF0, a 6-bit mantissa): 4.5 / 2.5 bits per weight (docs/codebooks.md). */
#define LB_CB_ID_MASK 0x000F
#define LB_CB_SCALE_MASK 0xFFF0
/* Codebook aux buffers hold 16 tables of 16 int8 (unused ones zero), so every 4-bit id indexes inside it. */
#define LB_CB_AUX_BYTES 256
static inline size_t lb_sb_bytes_q4(int R) { return (size_t)R * (2 + 16); }
static inline size_t lb_sb_bytes_q8(int R) { return (size_t)R * (2 + 32); }

/* IQ4_NL's fixed non-uniform table (ggml kvalues_iq4nl). */
extern const int8_t lb_kvalues_iq4nl[16];

/* fp16 <-> fp32 without relying on compiler extensions (the scalar reference must build everywhere). */
float lb_fp16_to_fp32(uint16_t h);
uint16_t lb_fp32_to_fp16(float f);

#endif
