/*
 * cpu_optim.c: the CPU optimizer updates (AdamW, SGD), double-accumulated sums, axpy, scale
 * and the f32/bf16 casts: the reference that the CUDA twins in cuda_optim.cu are tested against.
 *
 * AdamW and SGD are one pass over the elements, split in chunks over the threads; each element's
 * arithmetic is the same float expression whatever the thread, so the results do not depend on
 * the number of threads. The sums are per block of SUM_BLOCK elements (eight double partial
 * sums, added in a fixed order), the blocks' sums added in index order.
 */
#include <math.h>
#include <string.h>

#include "core/internal.h"
#include "device/cpu_math.h"
#include "device/optim_impl.h"

/* The compute copy is written per chunk, while the chunk of p is still in cache. */
enum { CHUNK = 1024 };
/* Elements per block of the sums, and blocks whose sums are held at once. */
enum { SUM_BLOCK = 4096, SUM_BATCH = 1024 };

/* work[0..n) = p[0..n) as work_dt (F32 or BF16). */
static void store_work(const float *p, size_t n, tsr_dtype_t work_dt, void *work)
{
    if (work_dt == TSR_DTYPE_BF16) {
        uint16_t *w = work;
        for (size_t i = 0; i < n; i++)
            w[i] = tsr__bf16_from_f32(p[i]);
    } else {
        memcpy(work, p, n * sizeof *p);
    }
}

/* The address of element i of a work buffer of type work_dt. */
static void *work_at(void *work, tsr_dtype_t work_dt, size_t i)
{
    return (char *)work + i * tsr_dtype_size(work_dt);
}

TSR_CPU_KERNEL
void tsr__cpu_adamw(size_t n, float *p, const float *g, float *m, float *v, const tsr_adamw_params_t *hp,
                    tsr_dtype_t work_dt, void *work)
{
    const float b1 = hp->beta1, b2 = hp->beta2, eps = hp->eps, coef = hp->grad_coef;
    const float step_size = hp->lr / hp->bc1, sqrt_bc2 = sqrtf(hp->bc2), decay = 1.0f - hp->lr * hp->weight_decay;
#pragma omp parallel for schedule(static) if (n >= TSR_CPU_PAR_MIN)
    for (size_t lo = 0; lo < n; lo += CHUNK) {
        size_t hi = n - lo > CHUNK ? lo + CHUNK : n;
#pragma omp simd
        for (size_t i = lo; i < hi; i++) {
            float gi = g[i] * coef;
            m[i] = b1 * m[i] + (1.0f - b1) * gi;
            v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
            p[i] = p[i] * decay - step_size * m[i] / (sqrtf(v[i]) / sqrt_bc2 + eps);
        }
        if (work)
            store_work(p + lo, hi - lo, work_dt, work_at(work, work_dt, lo));
    }
}

TSR_CPU_KERNEL
void tsr__cpu_sgd(size_t n, float *p, const float *g, float *m, float lr, float momentum, float weight_decay,
                  float grad_coef, tsr_dtype_t work_dt, void *work)
{
    const float mu = momentum, decay = 1.0f - lr * weight_decay;
#pragma omp parallel for schedule(static) if (n >= TSR_CPU_PAR_MIN)
    for (size_t lo = 0; lo < n; lo += CHUNK) {
        size_t hi = n - lo > CHUNK ? lo + CHUNK : n;
        if (m) {
#pragma omp simd
            for (size_t i = lo; i < hi; i++) {
                m[i] = mu * m[i] + g[i] * grad_coef;
                p[i] = p[i] * decay - lr * m[i];
            }
        } else {
#pragma omp simd
            for (size_t i = lo; i < hi; i++)
                p[i] = p[i] * decay - lr * (g[i] * grad_coef);
        }
        if (work)
            store_work(p + lo, hi - lo, work_dt, work_at(work, work_dt, lo));
    }
}

/* Sum (squares when sq) of x[0..n), n <= SUM_BLOCK: eight interleaved partial sums in double,
 * then added pairwise: the same bits on every thread. */
TSR_CPU_KERNEL
static double block_sum(const float *x, size_t n, int sq)
{
    double part[8] = {0};
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++)
            part[l] += sq ? (double)x[i + l] * x[i + l] : (double)x[i + l];
    for (int l = 0; i < n; i++, l++)
        part[l] += sq ? (double)x[i] * x[i] : (double)x[i];
    return ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
}

/* The blocks' sums computed over the threads, a batch at a time, added in index order. */
static double blocked_sum(const float *x, size_t n, int sq)
{
    double total = 0.0, sums[SUM_BATCH];
    size_t blocks = (n + SUM_BLOCK - 1) / SUM_BLOCK;
    for (size_t b0 = 0; b0 < blocks; b0 += SUM_BATCH) {
        int nb = blocks - b0 < SUM_BATCH ? (int)(blocks - b0) : SUM_BATCH;
#pragma omp parallel for schedule(static) if (nb > 1 && n >= TSR_CPU_PAR_MIN)
        for (int b = 0; b < nb; b++) {
            size_t lo = (b0 + b) * SUM_BLOCK;
            sums[b] = block_sum(x + lo, n - lo < SUM_BLOCK ? n - lo : SUM_BLOCK, sq);
        }
        for (int b = 0; b < nb; b++)
            total += sums[b];
    }
    return total;
}

double tsr__cpu_sumsq(const float *x, size_t n)
{
    return blocked_sum(x, n, 1);
}

double tsr__cpu_sum(const float *x, size_t n)
{
    return blocked_sum(x, n, 0);
}

TSR_CPU_KERNEL
void tsr__cpu_axpy(size_t n, float alpha, const float *x, float *y)
{
#pragma omp parallel for simd schedule(static) if (n >= TSR_CPU_PAR_MIN)
    for (size_t i = 0; i < n; i++)
        y[i] += alpha * x[i];
}

TSR_CPU_KERNEL
void tsr__cpu_scale(tsr_dtype_t dt, size_t n, void *x, float alpha)
{
    if (dt == TSR_DTYPE_BF16) {
        uint16_t *h = x;
        for (size_t i = 0; i < n; i++)
            h[i] = tsr__bf16_from_f32(tsr__f32_from_bf16(h[i]) * alpha);
    } else {
        float *f = x;
#pragma omp parallel for simd schedule(static) if (n >= TSR_CPU_PAR_MIN)
        for (size_t i = 0; i < n; i++)
            f[i] *= alpha;
    }
}

TSR_CPU_KERNEL
void tsr__cpu_cast(tsr_dtype_t src_type, const void *src, tsr_dtype_t dst_type, void *dst, size_t n)
{
    if (src_type == dst_type) {
        memmove(dst, src, n * tsr_dtype_size(src_type));
    } else if (src_type == TSR_DTYPE_F32) {
        const float *s = src;
        uint16_t *d = dst;
        for (size_t i = 0; i < n; i++)
            d[i] = tsr__bf16_from_f32(s[i]);
    } else {
        const uint16_t *s = src;
        float *d = dst;
        for (size_t i = 0; i < n; i++)
            d[i] = tsr__f32_from_bf16(s[i]);
    }
}
