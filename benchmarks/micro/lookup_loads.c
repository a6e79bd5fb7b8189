/* The lookup form's step (kernels/pixels.py) with its loads, one core (AVX2).
 *
 *     gcc -O3 -mavx2 benchmarks/micro/lookup_loads.c -o /tmp/lookup_loads && /tmp/lookup_loads
 *
 * One step: 64 units' 4-bit patterns (two 32-byte loads) index one sample's table of four
 * pixels (low and high bytes of 16 int16 entries) with 4 vpshufb, 4 byte interleaves
 * rebuild the int16 sums, 4 vpaddw add them: 256 multiply-adds. Prints ns per step for
 *   - the tables as 2 x 16 bytes, read by broadcast loads (vbroadcasti128), as round 4
 *     stored them;
 *   - the tables stored twice over (2 x 32 bytes), read by plain loads, as round 5 does;
 *   - the patterns of 1 panel (12.5 KB, L1) or 16 panels (200 KB, L2, as 784 x 1024).
 * docs/performance.md section 9 quotes the results. */
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define GROUPS 196 /* groups of four pixels in a 784-pixel sample */

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static double run(const uint8_t *pats, int panels, const uint8_t *tab, int twice) {
    long reps = 4000000 / panels;
    __m256i acc[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(),
                      _mm256_setzero_si256()};
    double t = now();
    for (long r = 0; r < reps; r++) {
        for (int p = 0; p < panels; p++) {
            const uint8_t *pp = pats + (size_t)p * GROUPS * 64;
            __m256i a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
            for (int g = 0; g < GROUPS; g++) {
                __m256i i0 = _mm256_load_si256((const __m256i *)(pp + 64 * g));
                __m256i i1 = _mm256_load_si256((const __m256i *)(pp + 64 * g + 32));
                __m256i lo, hi;
                if (twice) {
                    lo = _mm256_load_si256((const __m256i *)(tab + 64 * g));
                    hi = _mm256_load_si256((const __m256i *)(tab + 64 * g + 32));
                } else {
                    lo = _mm256_broadcastsi128_si256(_mm_load_si128((const __m128i *)(tab + 32 * g)));
                    hi = _mm256_broadcastsi128_si256(_mm_load_si128((const __m128i *)(tab + 32 * g + 16)));
                }
                __m256i l0 = _mm256_shuffle_epi8(lo, i0), h0 = _mm256_shuffle_epi8(hi, i0);
                __m256i l1 = _mm256_shuffle_epi8(lo, i1), h1 = _mm256_shuffle_epi8(hi, i1);
                a0 = _mm256_add_epi16(a0, _mm256_unpacklo_epi8(l0, h0));
                a1 = _mm256_add_epi16(a1, _mm256_unpackhi_epi8(l0, h0));
                a2 = _mm256_add_epi16(a2, _mm256_unpacklo_epi8(l1, h1));
                a3 = _mm256_add_epi16(a3, _mm256_unpackhi_epi8(l1, h1));
            }
            acc[0] = a0, acc[1] = a1, acc[2] = a2, acc[3] = a3;
            __asm__ volatile("" : : "m"(acc));
        }
    }
    return (now() - t) / ((double)reps * panels * GROUPS) * 1e9;
}

int main(void) {
    uint8_t *pats = aligned_alloc(64, (size_t)16 * GROUPS * 64);
    uint8_t *tab = aligned_alloc(64, GROUPS * 64);
    for (long i = 0; i < 16L * GROUPS * 64; i++) pats[i] = (uint8_t)((i * 7) & 15);
    for (int i = 0; i < GROUPS * 64; i++) tab[i] = (uint8_t)(i * 13);
    for (int panels = 1; panels <= 16; panels *= 16)
        for (int twice = 0; twice < 2; twice++)
            printf("patterns of %2d panel(s), tables %-36s %.2f ns a step\n", panels,
                   twice ? "stored twice, plain loads:" : "once, broadcast loads:",
                   run(pats, panels, tab, twice));
    free(pats);
    free(tab);
    return 0;
}
