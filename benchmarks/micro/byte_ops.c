/* Throughput of the instructions the pixel and nibble kernels are built on, one core (AVX2).
 *
 *     gcc -O2 -mavx2 benchmarks/micro/byte_ops.c -o /tmp/byte_ops && /tmp/byte_ops
 *
 * Registers only: the loops are written in assembly, so no accumulator goes through
 * memory. (Round 3's version kept its accumulators in a C array that the compiler
 * loaded and stored every iteration; its "one vpmaddubsw per cycle" measured that round
 * trip, not the pipes: docs/performance.md section 10.) Each line prints instructions
 * per cycle, the clock taken from a chain of dependent vpaddw (latency 1):
 *   - vpmaddubsw, vpshufb, vpunpcklbw, vpaddw alone (8 independent chains);
 *   - vpshufb with vpunpcklbw, and vpshufb with vpmaddubsw (which pipes they share);
 *   - the steps of the kernels: bytes (vpmaddubsw + vpaddw: 32 multiply-adds), lookup
 *     (2 vpshufb + 2 interleaves + 2 vpaddw: 128), nibble (vpshufb + vpaddb: 128
 *     binary multiply-adds);
 *   - a step measured in round 7 and not kept (docs/performance.md section 11): pixel
 *     tables split into low and high nibbles, byte sums over 4 groups, then widened by
 *     vpmaddubsw (16 vpshufb + 16 vpaddb + 8 vpmaddubsw + 8 vpaddw: 1024 multiply-adds). */
#include <stdio.h>
#include <time.h>

#define N 20000000L
#define CLOBBER "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7", "xmm8", "xmm9", \
                "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15"
/* one instruction on each of the 8 accumulators ymm0-7, ymm8 the other operand */
#define ALL8(op) op " %%ymm8,%%ymm0,%%ymm0\n" op " %%ymm8,%%ymm1,%%ymm1\n" op " %%ymm8,%%ymm2,%%ymm2\n" \
    op " %%ymm8,%%ymm3,%%ymm3\n" op " %%ymm8,%%ymm4,%%ymm4\n" op " %%ymm8,%%ymm5,%%ymm5\n"          \
    op " %%ymm8,%%ymm6,%%ymm6\n" op " %%ymm8,%%ymm7,%%ymm7\n"
/* a kernel step: op1 of ymm15 (a table, or pixels) and ymm8 into a temporary t, op2 adds
 * it to accumulator j */
#define STEP(op1, op2, j, t) op1 " %%ymm8,%%ymm15,%%ymm" #t "\n" op2 " %%ymm" #t ",%%ymm" #j ",%%ymm" #j "\n"
#define STEPS8(op1, op2) STEP(op1, op2, 0, 9) STEP(op1, op2, 1, 10) STEP(op1, op2, 2, 11) \
    STEP(op1, op2, 3, 12) STEP(op1, op2, 4, 13) STEP(op1, op2, 5, 14) STEP(op1, op2, 6, 9) STEP(op1, op2, 7, 10)

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

#define RATE(body, per) ({ double t0 = now();                                   \
    for (long i = 0; i < N; i++) __asm__ volatile(body ::: CLOBBER);              \
    (double)(per) * N / (now() - t0) / 1e9; })

int main(void) {
    for (int rep = 0; rep < 3; rep++) {
        double ghz = RATE("vpaddw %%ymm8,%%ymm0,%%ymm0\n vpaddw %%ymm8,%%ymm0,%%ymm0\n"
                          "vpaddw %%ymm8,%%ymm0,%%ymm0\n vpaddw %%ymm8,%%ymm0,%%ymm0\n", 4);
        double madd = RATE(ALL8("vpmaddubsw") ALL8("vpmaddubsw"), 16) / ghz;
        double shuf = RATE(ALL8("vpshufb") ALL8("vpshufb"), 16) / ghz;
        double unpck = RATE(ALL8("vpunpcklbw") ALL8("vpunpcklbw"), 16) / ghz;
        double add = RATE(ALL8("vpaddw") ALL8("vpaddw"), 16) / ghz;
        double su = RATE(ALL8("vpshufb") ALL8("vpunpcklbw"), 16) / ghz;
        double sm = RATE(ALL8("vpshufb") ALL8("vpmaddubsw"), 16) / ghz;
        double bytes = RATE(STEPS8("vpmaddubsw", "vpaddw"), 8) / ghz;
        double nib = RATE(STEPS8("vpshufb", "vpaddb"), 8) / ghz;
        /* lookup step: lo/hi shuffles, two interleaves, two adds (per 32 units x 4 pixels) */
        double lut = RATE("vpshufb %%ymm8,%%ymm10,%%ymm12\n vpshufb %%ymm8,%%ymm11,%%ymm13\n"
                          "vpunpcklbw %%ymm13,%%ymm12,%%ymm14\n vpunpckhbw %%ymm13,%%ymm12,%%ymm15\n"
                          "vpaddw %%ymm14,%%ymm0,%%ymm0\n vpaddw %%ymm15,%%ymm1,%%ymm1\n"
                          "vpshufb %%ymm9,%%ymm10,%%ymm12\n vpshufb %%ymm9,%%ymm11,%%ymm13\n"
                          "vpunpcklbw %%ymm13,%%ymm12,%%ymm14\n vpunpckhbw %%ymm13,%%ymm12,%%ymm15\n"
                          "vpaddw %%ymm14,%%ymm2,%%ymm2\n vpaddw %%ymm15,%%ymm3,%%ymm3\n", 2) / ghz;
        /* split step: low/high-nibble tables (ymm10, ymm11) looked up by two pattern
         * vectors (ymm8, ymm9: 64 units) for 4 groups into byte sums ymm4-7, then widened
         * into int16 sums ymm0-3 (even and odd bytes; ymm12 stands for the constant
         * weights 1 and 16) */
#define SPLIT1(i, l, h) "vpshufb %%ymm" #i ",%%ymm10,%%ymm13\n vpaddb %%ymm13,%%ymm" #l ",%%ymm" #l "\n" \
                        "vpshufb %%ymm" #i ",%%ymm11,%%ymm14\n vpaddb %%ymm14,%%ymm" #h ",%%ymm" #h "\n"
#define SPLITG SPLIT1(8, 4, 5) SPLIT1(9, 6, 7)
#define WIDEN(a, j) "vpmaddubsw %%ymm12,%%ymm" #a ",%%ymm15\n vpaddw %%ymm15,%%ymm" #j ",%%ymm" #j "\n"
        double split = RATE(SPLITG SPLITG SPLITG SPLITG WIDEN(4, 0) WIDEN(5, 0) WIDEN(4, 1) WIDEN(5, 1)
                            WIDEN(6, 2) WIDEN(7, 2) WIDEN(6, 3) WIDEN(7, 3), 1) / ghz;
        printf("%.2f GHz | per cycle: vpmaddubsw %.2f, vpshufb %.2f, vpunpcklbw %.2f, vpaddw %.2f, "
               "vpshufb+vpunpcklbw %.2f, vpshufb+vpmaddubsw %.2f | steps per cycle: bytes %.2f "
               "(%.0f MAC), lookup %.2f (%.0f MAC), nibble %.2f (%.0f binary MAC), split %.3f (%.0f MAC)\n",
               ghz, madd, shuf, unpck, add, su, sm, bytes, 32 * bytes, lut, 128 * lut, nib, 128 * nib,
               split, 1024 * split);
    }
    return 0;
}
