/* optim.c: the LR schedule and low-precision rounding (the updates are tsr_kernel_adamw/sgd). */
#include <math.h>
#include <string.h>

#include "core/internal.h"

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
            x[i] = tsr__f32_from_bf16(tsr__bf16_from_f32(x[i]));
    else if (precision == TSR_PRECISION_FP16)
        for (size_t i = 0; i < n; i++)
            x[i] = round_fp16(x[i]);
}
