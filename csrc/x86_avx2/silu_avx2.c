/* out = silu(g) * u = g / (1 + e^-g) * u, eight at a time with the vector exp (x86_avx2/vexp.h). */
#include <math.h>
#include "x86_avx2/avx2.h"
#include "x86_avx2/vexp.h"

void lb_silu_mul_avx2(int n, const float *g, const float *u, float *out) {
    const __m256 one = _mm256_set1_ps(1.0f), zero = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256 x = _mm256_loadu_ps(g + i);
        const __m256 d = _mm256_add_ps(one, lb_exp256(_mm256_sub_ps(zero, x)));
        _mm256_storeu_ps(out + i, _mm256_mul_ps(_mm256_div_ps(x, d), _mm256_loadu_ps(u + i)));
    }
    for (; i < n; i++) out[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}
