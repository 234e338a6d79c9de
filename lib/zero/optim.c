/* optim.c: the element-wise optimizer updates, the LR schedule and low-precision rounding. */
#include <math.h>
#include <string.h>

#include "core/internal.h"
#include "zero/zero_impl.h"

/* PyTorch's AdamW order: decay the weight first, then apply the bias-corrected Adam step. */
void tsr__zero_adamw(const tsr_zero_config_t *cfg, const tsr__zero_update_t *u, float wd, size_t n, float *p,
                     const float *g, float *m, float *v)
{
    const float b1 = cfg->beta1, b2 = cfg->beta2, eps = cfg->eps;
    const float step_size = u->lr / u->bc1, sqrt_bc2 = sqrtf(u->bc2), decay = 1.0f - u->lr * wd;
    for (size_t i = 0; i < n; i++) {
        float gi = g[i] * u->grad_coef;
        m[i] = b1 * m[i] + (1.0f - b1) * gi;
        v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
        p[i] = p[i] * decay - step_size * m[i] / (sqrtf(v[i]) / sqrt_bc2 + eps);
    }
}

/* Momentum as in PyTorch (buf = momentum * buf + g, zero-initialized, so the first buf is g);
 * weight decay decoupled as in AdamW so that both optimizers treat it alike. */
void tsr__zero_sgd(const tsr_zero_config_t *cfg, const tsr__zero_update_t *u, float wd, size_t n, float *p,
                   const float *g, float *m)
{
    const float mu = cfg->momentum, decay = 1.0f - u->lr * wd;
    for (size_t i = 0; i < n; i++) {
        float d = g[i] * u->grad_coef;
        if (m) {
            m[i] = mu * m[i] + d;
            d = m[i];
        }
        p[i] = p[i] * decay - u->lr * d;
    }
}

double tsr__zero_sumsq(const float *g, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)g[i] * (double)g[i];
    return s;
}

float tsr_zero_lr_at(const tsr_zero_config_t *cfg, long step)
{
    if (cfg->schedule != TSR_LR_WARMUP_COSINE)
        return cfg->lr;
    if (step <= cfg->warmup_steps)
        return cfg->lr * (float)step / (float)cfg->warmup_steps;
    long span = cfg->total_steps - cfg->warmup_steps;
    double progress = span > 0 ? (double)(step - cfg->warmup_steps) / (double)span : 1.0;
    if (progress > 1.0)
        progress = 1.0;
    double c = 0.5 * (1.0 + cos(3.14159265358979323846 * progress));
    return (float)(cfg->min_lr + (cfg->lr - cfg->min_lr) * c);
}

/* Keep the top 16 bits, rounding the rest to nearest even; NaN stays NaN. */
static float round_bf16(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if (isnan(x))
        return x;
    u += 0x7fffu + ((u >> 16) & 1u);
    u &= 0xffff0000u;
    memcpy(&x, &u, sizeof x);
    return x;
}

/* IEEE half: 10 mantissa bits for normals (|x| >= 2^-14), a fixed step of 2^-24 below,
 * infinity from the rounding midpoint above the largest finite half (65504) on. */
static float round_fp16(float x)
{
    float a = fabsf(x);
    if (isnan(x) || isinf(x))
        return x;
    if (a >= 65520.0f)
        return copysignf(INFINITY, x);
    if (a < 6.103515625e-05f)
        return nearbyintf(x * 16777216.0f) / 16777216.0f;
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    u += 0xfffu + ((u >> 13) & 1u);
    u &= 0xffffe000u;
    memcpy(&x, &u, sizeof x);
    return x;
}

void tsr_zero_round(tsr_precision_t precision, float *x, size_t n)
{
    if (precision == TSR_PRECISION_BF16)
        for (size_t i = 0; i < n; i++)
            x[i] = round_bf16(x[i]);
    else if (precision == TSR_PRECISION_FP16)
        for (size_t i = 0; i < n; i++)
            x[i] = round_fp16(x[i]);
}
