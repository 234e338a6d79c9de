/*
 * cpu_math.h: what the CPU kernels of lib/device/cpu_*.c share: the thread set-up, an exp
 * that vectorizes, GELU written with it, and the sizes below which a loop stays on one thread.
 *
 * The loops are plain C with `omp simd` and `omp parallel for`: without OpenMP they compile
 * to serial loops with the same results. Every result is a function of the inputs alone,
 * never of the number of threads: a loop's iterations are split over the threads, but each
 * output is computed by one iteration in a fixed order, and reductions (tsr__cpu_sumsq) are
 * cut in blocks of a fixed size whose sums are added in index order.
 */
#ifndef TESSERA_CPU_MATH_H
#define TESSERA_CPU_MATH_H

#include <stdint.h>
#include <string.h>

#include "config.h"

/*
 * TSR_CPU_KERNEL marks a kernel (or a per-row helper that does not inline) to be compiled
 * three times, for AVX-512, AVX2 and the baseline of CFLAGS, the loader choosing one by the
 * CPU (configure's --disable-cpu-dispatch turns it off). The kernels are compiled with
 * -ffp-contract=off (AVX-512F has fused multiply-adds of its own), so no multiply-add is
 * contracted: an element-wise kernel gives the same bits in every version, on every node of a
 * cluster. Reductions that `omp simd` may reorder (attention's dot products, the cross-entropy
 * and layernorm sums) can differ in the last bits between CPU kinds, never between runs on
 * one node.
 */
#ifdef TSR_HAVE_CPU_DISPATCH
#define TSR_CPU_KERNEL __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define TSR_CPU_KERNEL
#endif

/* Fewer elements than this stay on the calling thread: starting the team costs more. */
#define TSR_CPU_PAR_MIN 32768

/* Choose the threads of this rank (cpu_threads.c), once; the first CPU device open calls it. */
void tsr__cpu_threads_init(void);

/*
 * e^x in float, within 2 ulp on [-87, 88] (inputs are clamped there, so large negative x gives
 * about 1.6e-38 rather than 0, and NaN stays NaN): x = n ln2 + r with |r| <= ln2/2, Cephes's
 * polynomial for e^r, 2^n through the exponent bits. Branch-free, so loops of it vectorize.
 */
#pragma omp declare simd
static inline float tsr__expf(float x)
{
    const float log2e = 1.44269504088896341f, ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
    const float round = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
    x = x > 88.0f ? 88.0f : x; /* written so that NaN passes */
    x = x < -87.0f ? -87.0f : x;
    float n = (x * log2e + round) - round;
    float r = (x - n * ln2_hi) - n * ln2_lo;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    uint32_t bits = (uint32_t)((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return p * scale;
}

/* sqrt(2/pi) and the cubic coefficient of the tanh form of GELU. */
#define TSR_GELU_SCALE 0.7978845608028654f
#define TSR_GELU_CUBE 0.044715f

/*
 * GELU's tanh form, 0.5 v (1 + tanh(u)) with u = sqrt(2/pi) (v + 0.044715 v^3), written as
 * v s with s = 1 / (1 + e^(-2u)) = (1 + tanh(u)) / 2: no cancellation for negative v.
 */
#pragma omp declare simd
static inline float tsr__gelu(float v)
{
    float u = TSR_GELU_SCALE * (v + TSR_GELU_CUBE * v * v * v);
    return v / (1.0f + tsr__expf(-2.0f * u));
}

/* d gelu / dv = s + v u' 2 s (1 - s), since 1 - tanh^2 = 4 s (1 - s). */
#pragma omp declare simd
static inline float tsr__gelu_grad(float v)
{
    float u = TSR_GELU_SCALE * (v + TSR_GELU_CUBE * v * v * v);
    float du = TSR_GELU_SCALE * (1.0f + 3.0f * TSR_GELU_CUBE * v * v);
    float s = 1.0f / (1.0f + tsr__expf(-2.0f * u));
    return s + 2.0f * v * du * s * (1.0f - s);
}

#endif /* TESSERA_CPU_MATH_H */
