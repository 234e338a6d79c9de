/* optim.c: the LR schedule and low-precision rounding (the updates are tsr_kernel_adamw/sgd). */
#include <math.h>
#include <string.h>

#include "core/internal.h"

float tsr_zero_lr_at(const tsr_zero_config_t *cfg, long step)
{
    if (step <= cfg->warmup_steps)
        return cfg->lr * (float)step / (float)cfg->warmup_steps;
    if (cfg->schedule == TSR_LR_CONSTANT)
        return cfg->lr;
    long span = cfg->total_steps - cfg->warmup_steps;
    double progress = span > 0 ? (double)(step - cfg->warmup_steps) / (double)span : 1.0;
    if (progress > 1.0)
        progress = 1.0;
    double c = cfg->schedule == TSR_LR_WARMUP_LINEAR ? 1.0 - progress
                                                     : 0.5 * (1.0 + cos(3.14159265358979323846 * progress));
    return (float)(cfg->min_lr + (cfg->lr - cfg->min_lr) * c);
}

static const char *const optim_names[] = {[TSR_OPTIM_ADAMW] = "adamw", [TSR_OPTIM_SGD] = "sgd"};
static const char *const schedule_names[] = {[TSR_LR_CONSTANT] = "constant", [TSR_LR_WARMUP_COSINE] = "cosine",
                                             [TSR_LR_WARMUP_LINEAR] = "linear"};

const char *tsr_optim_kind_name(tsr_optim_kind_t kind)
{
    return (unsigned)kind <= TSR_OPTIM_SGD ? optim_names[kind] : "unknown";
}

tsr_status_t tsr_optim_kind_parse(const char *text, tsr_optim_kind_t *out)
{
    for (int k = 0; k <= TSR_OPTIM_SGD; k++)
        if (text && strcmp(text, optim_names[k]) == 0) {
            *out = (tsr_optim_kind_t)k;
            return TSR_OK;
        }
    return TSR_ERROR(TSR_ERR_INVALID_ARG, "optimizer \"%s\": expected adamw or sgd", text ? text : "");
}

const char *tsr_lr_schedule_name(tsr_lr_schedule_t schedule)
{
    return (unsigned)schedule <= TSR_LR_WARMUP_LINEAR ? schedule_names[schedule] : "unknown";
}

tsr_status_t tsr_lr_schedule_parse(const char *text, tsr_lr_schedule_t *out)
{
    for (int k = 0; k <= TSR_LR_WARMUP_LINEAR; k++)
        if (text && strcmp(text, schedule_names[k]) == 0) {
            *out = (tsr_lr_schedule_t)k;
            return TSR_OK;
        }
    return TSR_ERROR(TSR_ERR_INVALID_ARG, "learning-rate schedule \"%s\": expected constant, cosine or linear",
                     text ? text : "");
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
