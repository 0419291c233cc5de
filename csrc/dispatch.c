/* Builds the kernel table from kernels.inc and chooses one kernel per format from the usable ISA. */
#include "lowbit/kernel.h"
#include "ref/ref.h"
#include "x86_avx2/avx2.h"
#include "x86_avx2/cb_avx2.h"
#include "arm_common/arm.h"

#define LB_KERNEL(name, fmt, isa, R, B, act_B) {#name, fmt, isa, R, B, act_B, gemv_##name, gemm_##name, 0},
#define LB_KERNEL_MULTI(name, fmt, isa, R, B, act_B)                                                          \
    {#name, fmt, isa, R, B, act_B, gemv_##name, gemm_##name, gemm_multi_##name},
const lb_kernel lb_kernels[] = {
#include "kernels.inc"
};
#undef LB_KERNEL
#undef LB_KERNEL_MULTI
const int lb_nkernels = sizeof lb_kernels / sizeof lb_kernels[0];

static const char *fmt_names[LB_NFMT] = {"q4_0", "iq4_nl", "q8_0", "cb4", "cb2"};
const char *lb_fmt_name(int fmt) { return fmt >= 0 && fmt < LB_NFMT ? fmt_names[fmt] : "?"; }

const lb_kernel *lb_select(int fmt) {
    const int usable = lb_isa_usable();
    for (int i = 0; i < lb_nkernels; i++)
        if (lb_kernels[i].fmt == fmt && (lb_kernels[i].isa & ~usable) == 0) return &lb_kernels[i];
    return 0;
}
