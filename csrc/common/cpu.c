/* CPU feature detection (cpuid / getauxval) and the LOWBIT_DISABLE_ISA mask. Built without ISA flags. */
#include <stdlib.h>
#include <string.h>
#include "lowbit/kernel.h"

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#include <cpuid.h>
static int detect(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
    int fma = (c >> 12) & 1, osxsave = (c >> 27) & 1, avx = (c >> 28) & 1, f16c = (c >> 29) & 1;
    if (!(osxsave && avx)) return 0;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & 6) != 6) return 0;  /* the OS must save ymm state */
    if (__get_cpuid_max(0, 0) < 7) return 0;
    __cpuid_count(7, 0, a, b, c, d);
    int avx2 = (b >> 5) & 1;
    return (avx2 && fma && f16c) ? LB_ISA_AVX2 : 0;
}
int lb_sve_vector_bits(void) { return 0; }
#elif defined(__aarch64__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMDDP
#define HWCAP_ASIMDDP (1 << 20)
#endif
#ifndef HWCAP_SVE
#define HWCAP_SVE (1 << 22)
#endif
#ifndef HWCAP2_I8MM
#define HWCAP2_I8MM (1 << 13)
#endif
#ifndef HWCAP2_SVEI8MM
#define HWCAP2_SVEI8MM (1 << 9)
#endif
int lb_sve_vector_bits_impl(void);   /* in the SVE translation unit, when built */
int lb_sve_vector_bits(void) {
#ifdef LB_HAVE_SVE
    if (getauxval(AT_HWCAP) & HWCAP_SVE) return lb_sve_vector_bits_impl();
#endif
    return 0;
}
static int detect(void) {
    unsigned long h1 = getauxval(AT_HWCAP), h2 = getauxval(AT_HWCAP2);
    int f = LB_ISA_NEON;
    if (h1 & HWCAP_ASIMDDP) f |= LB_ISA_DOTPROD;
    if ((h1 & HWCAP_ASIMDDP) && (h2 & HWCAP2_I8MM)) f |= LB_ISA_I8MM;
    /* The SVE kernels use SVE SMMLA (needs SVE's own i8mm bit) and assume exactly 256-bit vectors. */
    if ((f & LB_ISA_I8MM) && (h2 & HWCAP2_SVEI8MM) && lb_sve_vector_bits() == 256) f |= LB_ISA_SVE256;
    return f;
}
#else
static int detect(void) { return 0; }
int lb_sve_vector_bits(void) { return 0; }
#endif

static const struct { const char *name; int bit; } isa_names[] = {
    {"avx2", LB_ISA_AVX2}, {"neon", LB_ISA_NEON}, {"dotprod", LB_ISA_DOTPROD},
    {"i8mm", LB_ISA_I8MM}, {"sve256", LB_ISA_SVE256},
};

int lb_cpu_features(void) {
    static int cached = -1;
    if (cached < 0) cached = detect();
    return cached;
}

/* LOWBIT_DISABLE_ISA=avx2,dotprod masks features so lower paths run on this CPU (tests, A/B). */
static int disabled_mask(void) {
    const char *env = getenv("LOWBIT_DISABLE_ISA");
    int mask = 0;
    if (!env) return 0;
    for (size_t i = 0; i < sizeof isa_names / sizeof isa_names[0]; i++) {
        const char *p = env;
        size_t n = strlen(isa_names[i].name);
        while ((p = strstr(p, isa_names[i].name)) != NULL) {
            int start_ok = (p == env) || p[-1] == ',' || p[-1] == ' ';
            int end_ok = p[n] == 0 || p[n] == ',' || p[n] == ' ';
            if (start_ok && end_ok) mask |= isa_names[i].bit;
            p += n;
        }
    }
    if (strstr(env, "all")) mask = ~0;
    /* Disabling a feature disables those that imply it. */
    if (mask & LB_ISA_NEON) mask |= LB_ISA_DOTPROD;   /* every Arm kernel family is NEON-based */
    if (mask & LB_ISA_DOTPROD) mask |= LB_ISA_I8MM | LB_ISA_SVE256;
    if (mask & LB_ISA_I8MM) mask |= LB_ISA_SVE256;
    return mask;
}

/* Read once: the mask is a process-start setting (tests change it in a subprocess), and the per-token ops
 * (attention, SiLU) ask on every call, which must not scan the environment each time. */
int lb_isa_usable(void) {
    static int cached = -1;
    if (cached < 0) cached = lb_cpu_features() & ~disabled_mask();
    return cached;
}

const char *lb_isa_name(int bit) {
    for (size_t i = 0; i < sizeof isa_names / sizeof isa_names[0]; i++)
        if (isa_names[i].bit == bit) return isa_names[i].name;
    return "?";
}
