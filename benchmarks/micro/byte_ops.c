/* Throughput of the instructions the pixel kernels are built on, one core (AVX2).
 *
 *     gcc -O3 -mavx2 benchmarks/micro/byte_ops.c -o /tmp/byte_ops && /tmp/byte_ops
 *
 * Prints, per second: vpmaddubsw alone (12 independent chains, latency hidden), the
 * bytes form's step (vpmaddubsw + vpaddw, 32 multiply-adds), and the lookup form's step
 * (2 vpshufb + 2 byte interleaves + 2 vpaddw, 128 multiply-adds); docs/performance.md § 7
 * compares them with the kernels' measured rates. Registers only: no memory traffic. */
#include <immintrin.h>
#include <stdio.h>
#include <time.h>

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

#define N 100000000L
#define KEEP8(a) __asm__ volatile("" : "+x"(a[0]), "+x"(a[1]), "+x"(a[2]), "+x"(a[3]), \
                                       "+x"(a[4]), "+x"(a[5]), "+x"(a[6]), "+x"(a[7]))

int main(void) {
    __m256i a[12], x = _mm256_set1_epi8(3), y = _mm256_set1_epi8(5);
    __m256i tl = _mm256_set1_epi8(3), th = _mm256_set1_epi8(1), idx = _mm256_set1_epi8(7);
    for (int i = 0; i < 12; i++) a[i] = _mm256_set1_epi16(i + 1);
    double t = now();
    for (long i = 0; i < N; i++) {
        _Pragma("GCC unroll 12") for (int j = 0; j < 12; j++) a[j] = _mm256_maddubs_epi16(a[j], y);
        KEEP8(a); __asm__ volatile("" : "+x"(a[8]), "+x"(a[9]), "+x"(a[10]), "+x"(a[11]));
    }
    double dt = now() - t;
    printf("vpmaddubsw alone:        %.2f G/s\n", 12.0 * N / dt / 1e9);
    t = now();
    for (long i = 0; i < N; i++) {
        _Pragma("GCC unroll 8") for (int j = 0; j < 8; j++)
            a[j] = _mm256_add_epi16(a[j], _mm256_maddubs_epi16(x, a[(j + 4) % 8]));
        KEEP8(a);
    }
    dt = now() - t;
    printf("bytes step (madd + add): %.2f G/s = %.1f G MAC/s\n", 8.0 * N / dt / 1e9, 32 * 8.0 * N / dt / 1e9);
    t = now();
    for (long i = 0; i < N; i++) {
        _Pragma("GCC unroll 4") for (int j = 0; j < 4; j++) {
            __m256i lo = _mm256_shuffle_epi8(tl, a[j]), hi = _mm256_shuffle_epi8(th, a[j]);
            a[j] = _mm256_add_epi16(a[j], _mm256_unpacklo_epi8(lo, hi));
            a[j + 4] = _mm256_add_epi16(a[j + 4], _mm256_unpackhi_epi8(lo, hi));
        }
        KEEP8(a);
    }
    dt = now() - t;
    printf("lookup step (128 MACs):  %.2f G/s = %.1f G MAC/s\n", 4.0 * N / dt / 1e9, 4.0 * 128 * N / dt / 1e9);
    int s = 0;
    for (int i = 0; i < 12; i++) s += _mm256_extract_epi16(a[i], 0);
    (void)idx;
    return s == 12345;
}
