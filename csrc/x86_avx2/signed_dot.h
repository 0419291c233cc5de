/* Shared by the AVX2 kernel files only (built with -mavx2): the signed-weight block dot used by iq4_nl, q8_0 and
 * cb2's full-range path. maddubs(|w|, sign(a, w)) keeps each pair <= 2*128*127, so every product widens once. */
#ifndef LOWBIT_AVX2_SIGNED_DOT_H
#define LOWBIT_AVX2_SIGNED_DOT_H
#include <immintrin.h>

/* w[2k+h] = elements 8k..8k+7 of rows 4h..4h+3 (signed int8); a[k] = activation octet k broadcast.
 * Returns the 8 rows' int32 sums in lanes ordered [0,1,4,5,2,3,6,7]. */
static inline __attribute__((always_inline)) __m256i lb_avx2_signed_dot8(const __m256i w[8], const __m256i a[4]) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i s[2];
    for (int h = 0; h < 2; h++) {
        __m256i acc = _mm256_setzero_si256();
        for (int k = 0; k < 4; k++) {
            const __m256i wv = w[2 * k + h];
            const __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(wv, wv), _mm256_sign_epi8(a[k], wv));
            acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, ones));
        }
        s[h] = acc;
    }
    return _mm256_hadd_epi32(s[0], s[1]);
}
#endif
