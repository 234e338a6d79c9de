/*
 * cpu_optim.c: the CPU optimizer updates (AdamW, SGD), double-accumulated sums, axpy, scale
 * and the f32/bf16 casts: the reference that the CUDA twins in cuda_optim.cu are tested against.
 *
 * AdamW and SGD repeat lib/zero/optim.c's expressions term for term, in the same float types,
 * so that the ZeRO optimizer can call them without moving a single bit of its results.
 */
#include <math.h>
#include <string.h>

#include "core/internal.h"
#include "device/optim_impl.h"

/* The compute copy is written per chunk, while the chunk of p is still in cache. */
enum { CHUNK = 1024 };

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

void tsr__cpu_adamw(size_t n, float *p, const float *g, float *m, float *v, const tsr_adamw_params_t *hp,
                    tsr_dtype_t work_dt, void *work)
{
    const float b1 = hp->beta1, b2 = hp->beta2, eps = hp->eps, coef = hp->grad_coef;
    const float step_size = hp->lr / hp->bc1, sqrt_bc2 = sqrtf(hp->bc2), decay = 1.0f - hp->lr * hp->weight_decay;
    for (size_t lo = 0; lo < n; lo += CHUNK) {
        size_t hi = n - lo > CHUNK ? lo + CHUNK : n;
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

void tsr__cpu_sgd(size_t n, float *p, const float *g, float *m, float lr, float momentum, float weight_decay,
                  float grad_coef, tsr_dtype_t work_dt, void *work)
{
    const float mu = momentum, decay = 1.0f - lr * weight_decay;
    for (size_t lo = 0; lo < n; lo += CHUNK) {
        size_t hi = n - lo > CHUNK ? lo + CHUNK : n;
        for (size_t i = lo; i < hi; i++) {
            float d = g[i] * grad_coef;
            if (m) {
                m[i] = mu * m[i] + d;
                d = m[i];
            }
            p[i] = p[i] * decay - lr * d;
        }
        if (work)
            store_work(p + lo, hi - lo, work_dt, work_at(work, work_dt, lo));
    }
}

double tsr__cpu_sumsq(const float *x, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)x[i] * (double)x[i];
    return s;
}

double tsr__cpu_sum(const float *x, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)x[i];
    return s;
}

void tsr__cpu_axpy(size_t n, float alpha, const float *x, float *y)
{
    for (size_t i = 0; i < n; i++)
        y[i] += alpha * x[i];
}

void tsr__cpu_scale(tsr_dtype_t dt, size_t n, void *x, float alpha)
{
    if (dt == TSR_DTYPE_BF16) {
        uint16_t *h = x;
        for (size_t i = 0; i < n; i++)
            h[i] = tsr__bf16_from_f32(tsr__f32_from_bf16(h[i]) * alpha);
    } else {
        float *f = x;
        for (size_t i = 0; i < n; i++)
            f[i] *= alpha;
    }
}

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
