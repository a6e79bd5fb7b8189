/* Three-pixel word tables against the lookup form's step, with their loads, one core (AVX2).
 *
 *     gcc -O2 -mavx2 benchmarks/micro/word_tables.c -o /tmp/word_tables && /tmp/word_tables
 *
 * The lookup form (kernels/pixels.py) keeps, per sample and group of 4 pixels, a table of
 * 16 int16 sums split into low and high bytes: per 32 units, 2 vpshufb and 2 byte
 * interleaves give 128 multiply-adds. A group of 3 pixels has 8 sums, which fit one
 * 16-byte table as int16 words: with each unit's pattern p stored as the byte pair
 * (2p, 2p + 1), one vpshufb returns 16 units' int16 sums, 48 multiply-adds and no
 * interleave. Half the shuffles per multiply-add, but a third more loads: the patterns
 * take 2 bytes per unit and group, not 1 per 4 pixels.
 *
 * Each loop runs a step over 84 groups of tables and patterns that stay in L1, with S
 * samples sharing each load of the patterns of U vectors. Both word configurations fit
 * the 16 ymm registers (S U accumulators, U patterns, a table); 6 samples x 2 vectors
 * would too, but GCC spills its accumulators. The rounds alternate the loops; printed is the median, over
 * rounds, of each loop's multiply-add rate over the lookup step's in the same round.
 * docs/performance.md section 12 quotes the results. */
#include <immintrin.h>
#include <stdint.h>
#include <stdio.h>
#include <time.h>

#define G 84      /* groups per run of a step */
#define ROUNDS 300

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static __attribute__((aligned(64))) uint8_t pat[G * 128];
static __attribute__((aligned(64))) uint8_t tab[2 * G * 64]; /* also 8 samples' word tables */
static volatile __m256i sink;

#define SH(t, i) _mm256_shuffle_epi8(t, i)
#define ADD(a, b) _mm256_add_epi16(a, b)
#define TABLE(s) _mm256_broadcastsi128_si256(_mm_load_si128((const __m128i *)(tab + (s) * G * 16 + 16 * q)))
#define PATS(u) _mm256_load_si256((const __m256i *)(pat + 128 * q + 32 * (u)))

/* the lookup form's step: 2 samples x 64 units x 4 pixels (tables stored twice, plain loads) */
#define LOOKUP(s, a0, a1, a2, a3)                                                              \
    {                                                                                          \
        __m256i lo = _mm256_load_si256((const __m256i *)(tab + (s) * G * 64 + 64 * q));        \
        __m256i hi = _mm256_load_si256((const __m256i *)(tab + (s) * G * 64 + 64 * q + 32));   \
        __m256i l0 = SH(lo, i0), h0 = SH(hi, i0), l1 = SH(lo, i1), h1 = SH(hi, i1);            \
        a0 = ADD(a0, _mm256_unpacklo_epi8(l0, h0));                                            \
        a1 = ADD(a1, _mm256_unpackhi_epi8(l0, h0));                                            \
        a2 = ADD(a2, _mm256_unpacklo_epi8(l1, h1));                                            \
        a3 = ADD(a3, _mm256_unpackhi_epi8(l1, h1));                                            \
    }
static __attribute__((noinline)) void lookup(long reps) {
    __m256i z = _mm256_setzero_si256(), a0 = z, a1 = z, a2 = z, a3 = z, e0 = z, e1 = z, e2 = z, e3 = z;
    for (long r = 0; r < reps; r++)
        for (int q = 0; q < G; q++) {
            __m256i i0 = PATS(0), i1 = PATS(1);
            LOOKUP(0, a0, a1, a2, a3)
            LOOKUP(1, e0, e1, e2, e3)
        }
    sink = ADD(ADD(ADD(a0, a1), ADD(a2, a3)), ADD(ADD(e0, e1), ADD(e2, e3)));
}

/* word tables: S samples x U vectors of 16 units x 3 pixels, every variable a register
 * (written out: GCC spills arrays of vectors) */
/* 2 samples x 4 vectors */
static __attribute__((noinline)) void words_s2u4(long reps) {
    __m256i z = _mm256_setzero_si256();
    __m256i a00 = z, a01 = z, a02 = z, a03 = z, a10 = z, a11 = z, a12 = z, a13 = z;
    for (long r = 0; r < reps; r++)
        for (int q = 0; q < G; q++) {
            __m256i i0 = PATS(0), i1 = PATS(1), i2 = PATS(2), i3 = PATS(3), t;
            t = TABLE(0);
            a00 = ADD(a00, SH(t, i0)); a01 = ADD(a01, SH(t, i1)); a02 = ADD(a02, SH(t, i2)); a03 = ADD(a03, SH(t, i3));
            t = TABLE(1);
            a10 = ADD(a10, SH(t, i0)); a11 = ADD(a11, SH(t, i1)); a12 = ADD(a12, SH(t, i2)); a13 = ADD(a13, SH(t, i3));
        }
    sink = ADD(ADD(ADD(ADD(ADD(ADD(ADD(a00, a01), a02), a03), a10), a11), a12), a13);
}

/* 3 samples x 3 vectors */
static __attribute__((noinline)) void words_s3u3(long reps) {
    __m256i z = _mm256_setzero_si256();
    __m256i a00 = z, a01 = z, a02 = z, a10 = z, a11 = z, a12 = z, a20 = z, a21 = z, a22 = z;
    for (long r = 0; r < reps; r++)
        for (int q = 0; q < G; q++) {
            __m256i i0 = PATS(0), i1 = PATS(1), i2 = PATS(2), t;
            t = TABLE(0);
            a00 = ADD(a00, SH(t, i0)); a01 = ADD(a01, SH(t, i1)); a02 = ADD(a02, SH(t, i2));
            t = TABLE(1);
            a10 = ADD(a10, SH(t, i0)); a11 = ADD(a11, SH(t, i1)); a12 = ADD(a12, SH(t, i2));
            t = TABLE(2);
            a20 = ADD(a20, SH(t, i0)); a21 = ADD(a21, SH(t, i1)); a22 = ADD(a22, SH(t, i2));
        }
    sink = ADD(ADD(ADD(ADD(ADD(ADD(ADD(ADD(a00, a01), a02), a10), a11), a12), a20), a21), a22);
}

int main(void) {
    void (*loop[3])(long) = {lookup, words_s2u4, words_s3u3};
    const char *name[3] = {"lookup step (2 samples x 64 units)", "words, 2 samples x 4 vectors",
                           "words, 3 samples x 3 vectors"};
    const double macs[3] = {2 * 64 * 4, 2 * 64 * 3, 3 * 48 * 3}; /* per group */
    static double ratio[3][ROUNDS];
    for (int i = 0; i < G * 128; i++) pat[i] = (uint8_t)((i * 7) & 15);
    for (int i = 0; i < 8 * G * 16; i++) tab[i] = (uint8_t)(i * 13);
    double base_rate = 0;
    for (int k = 0; k < ROUNDS; k++) {
        double rate[3];
        for (int v = 0; v < 3; v++) {
            long reps = 2000;
            double t = now();
            loop[v](reps);
            rate[v] = reps * (double)G * macs[v] / (now() - t) / 1e9;
        }
        for (int v = 0; v < 3; v++) ratio[v][k] = rate[v] / rate[0];
        if (rate[0] > base_rate) base_rate = rate[0];
    }
    printf("lookup step: best %.0f G multiply-adds/s\n", base_rate);
    for (int v = 0; v < 3; v++) {
        double *r = ratio[v];
        for (int i = 0; i < ROUNDS; i++) /* insertion sort: ROUNDS is small */
            for (int j = i; j > 0 && r[j] < r[j - 1]; j--) {
                double t = r[j];
                r[j] = r[j - 1];
                r[j - 1] = t;
            }
        printf("%-36s rate / lookup step's: median %.3f (quartiles %.3f, %.3f)\n", name[v],
               r[ROUNDS / 2], r[ROUNDS / 4], r[3 * ROUNDS / 4]);
    }
    return 0;
}
