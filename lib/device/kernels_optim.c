/*
 * kernels_optim.c: the public optimizer, reduction, axpy, scale and cast kernels of
 * tessera/kernels.h: argument checks, then dispatch to the CPU (cpu_optim.c) or CUDA
 * (cuda_optim.cu) implementation.
 *
 * Where the header leaves a choice:
 *   - The CPU supports BF16 storage (uint16_t, the top half of the float) for the AdamW/SGD
 *     compute copy, for tsr_kernel_cast, and for tsr_kernel_scale too: it costs nothing and
 *     gives the CUDA bf16 scale a reference to be tested against.
 *   - F32 to BF16 turns every NaN into the canonical NaN 0x7fff, on both devices.
 *   - tsr_kernel_cast copies any one type to itself; src and dst must not overlap (unless
 *     they are the same buffer of the same type: nothing to do).
 *   - The CUDA reductions put their block sums in the device's scratch
 *     (tsr__cuda_reduce_scratch, made when the device opens): the host waits for the
 *     result, so the next reduction finds it free. A training step makes one reduction per
 *     gradient bucket for the norm, and allocates nothing for them (a cudaFree would also
 *     synchronize the whole device).
 */
#include <math.h>
#include <stdint.h>

#include "device/device_impl.h"
#include "device/optim_impl.h"
#if TSR_HAVE_CUDA
#include "device/cuda_impl.h"
#include "device/cuda_optim.h"
#endif

/* A device handle the kernels can run on. */
static tsr_status_t check_device(tsr_device_t dev, const char *what)
{
    if (!dev)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "%s: NULL device", what);
    if (!tsr_device_kind_built(tsr_device_kind(dev)))
        return TSR_ERROR(TSR_ERR_NOT_SUPPORTED, "%s: this build has no %s backend", what,
                         tsr_device_kind_name(tsr_device_kind(dev)));
    return TSR_OK;
}

/* A floating-point storage type: F32 or BF16 (on every device). role names the argument. */
static tsr_status_t check_float_type(tsr_dtype_t dt, const char *what, const char *role)
{
    if ((unsigned)dt >= TSR_DTYPE_COUNT)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "%s: %s %d is not an element type", what, role, (int)dt);
    if (dt != TSR_DTYPE_F32 && dt != TSR_DTYPE_BF16)
        return TSR_ERROR(TSR_ERR_NOT_SUPPORTED, "%s: %s %s is not supported (expected f32 or bf16)", what, role,
                         tsr_dtype_name(dt));
    return TSR_OK;
}

static int on_cpu(tsr_device_t dev)
{
    return tsr_device_kind(dev) == TSR_DEVICE_CPU;
}

#if TSR_HAVE_CUDA
/* The compute-copy pointers of the CUDA launchers: at most one is not NULL. */
static float *work_f32(tsr_dtype_t work_dt, void *work)
{
    return work_dt == TSR_DTYPE_F32 ? work : NULL;
}

static void *work_bf16(tsr_dtype_t work_dt, void *work)
{
    return work_dt == TSR_DTYPE_BF16 ? work : NULL;
}
#endif

tsr_status_t tsr_kernel_adamw(tsr_device_t dev, size_t n, float *p, const float *g, float *m, float *v,
                              const tsr_adamw_params_t *hp, tsr_dtype_t work_dt, void *work)
{
    TSR__REGION(dev, TSR_PROF_KERNEL, "optimizer", NULL);
    tsr_status_t rc = TSR_OK;
    TSR_TRY(check_device(dev, "adamw"));
    TSR_CHECK(hp, TSR_ERR_INVALID_ARG, "adamw: NULL hyper-parameters");
    TSR_CHECK(hp->bc1 > 0.0f && hp->bc2 > 0.0f, TSR_ERR_INVALID_ARG,
              "adamw: bias corrections bc1=%g and bc2=%g must be positive (1 - beta^t with t >= 1)",
              (double)hp->bc1, (double)hp->bc2);
    if (work)
        TSR_TRY(check_float_type(work_dt, "adamw", "work type"));
    TSR_CHECK(n == 0 || (p && g && m && v), TSR_ERR_INVALID_ARG, "adamw of %zu values: p, g, m or v is NULL", n);
    if (n == 0)
        goto cleanup;
    if (on_cpu(dev)) {
        tsr__cpu_adamw(n, p, g, m, v, hp, work_dt, work);
    } else {
#if TSR_HAVE_CUDA
        /* Derived exactly as the CPU kernel derives them, in float. */
        tsr__cuda_adamw_t a = {
            .beta1 = hp->beta1,
            .beta2 = hp->beta2,
            .eps = hp->eps,
            .grad_coef = hp->grad_coef,
            .step_size = hp->lr / hp->bc1,
            .sqrt_bc2 = sqrtf(hp->bc2),
            .decay = 1.0f - hp->lr * hp->weight_decay,
        };
        TSR_TRY(tsr__cuda_status(tsr__cuda_adamw(n, p, g, m, v, &a, work ? work_f32(work_dt, work) : NULL,
                                                 work ? work_bf16(work_dt, work) : NULL, tsr__cuda_stream(dev)),
                                 "adamw"));
#endif
    }
cleanup:
    return rc;
}

tsr_status_t tsr_kernel_sgd(tsr_device_t dev, size_t n, float *p, const float *g, float *m, float lr,
                            float momentum, float weight_decay, float grad_coef, tsr_dtype_t work_dt, void *work)
{
    TSR__REGION(dev, TSR_PROF_KERNEL, "optimizer", NULL);
    tsr_status_t rc = TSR_OK;
    TSR_TRY(check_device(dev, "sgd"));
    if (work)
        TSR_TRY(check_float_type(work_dt, "sgd", "work type"));
    TSR_CHECK(n == 0 || (p && g), TSR_ERR_INVALID_ARG, "sgd of %zu values: p or g is NULL", n);
    if (n == 0)
        goto cleanup;
    if (on_cpu(dev)) {
        tsr__cpu_sgd(n, p, g, m, lr, momentum, weight_decay, grad_coef, work_dt, work);
    } else {
#if TSR_HAVE_CUDA
        TSR_TRY(tsr__cuda_status(tsr__cuda_sgd(n, p, g, m, lr, momentum, 1.0f - lr * weight_decay, grad_coef,
                                               work ? work_f32(work_dt, work) : NULL,
                                               work ? work_bf16(work_dt, work) : NULL, tsr__cuda_stream(dev)),
                                 "sgd"));
#endif
    }
cleanup:
    return rc;
}

/* The sum of x[i]^2 (square) or of x[i] over n floats into *out, waiting for the device. */
static tsr_status_t reduce(tsr_device_t dev, const float *x, size_t n, int square, double *out, const char *what)
{
    tsr_status_t rc = TSR_OK;
    TSR_TRY(check_device(dev, what));
    TSR_CHECK(out, TSR_ERR_INVALID_ARG, "%s: NULL result pointer", what);
    TSR_CHECK(n == 0 || x, TSR_ERR_INVALID_ARG, "%s of %zu values: x is NULL", what, n);
    if (n == 0) {
        *out = 0.0;
        goto cleanup;
    }
    if (on_cpu(dev)) {
        *out = square ? tsr__cpu_sumsq(x, n) : tsr__cpu_sum(x, n);
    } else {
#if TSR_HAVE_CUDA
        double total = 0.0;
        cudaError_t err = (square ? tsr__cuda_sumsq : tsr__cuda_sum)(x, n, tsr__cuda_reduce_scratch(dev), &total,
                                                                      tsr__cuda_stream(dev));
        /* Wait even when a launch failed: what was queued before it may still use the scratch. */
        tsr_status_t sync_rc = tsr_device_sync(dev);
        TSR_TRY(tsr__cuda_status(err, what));
        TSR_TRY(sync_rc);
        *out = total;
#endif
    }
cleanup:
    return rc;
}

tsr_status_t tsr_kernel_sumsq(tsr_device_t dev, const float *x, size_t n, double *out)
{
    TSR__REGION(dev, TSR_PROF_KERNEL, "norm", NULL);
    return reduce(dev, x, n, 1, out, "sumsq");
}

tsr_status_t tsr_kernel_sum(tsr_device_t dev, const float *x, size_t n, double *out)
{
    TSR__REGION(dev, TSR_PROF_KERNEL, "reduction", NULL);
    return reduce(dev, x, n, 0, out, "sum");
}

tsr_status_t tsr_kernel_axpy(tsr_device_t dev, size_t n, float alpha, const float *x, float *y)
{
    TSR__REGION(dev, TSR_PROF_KERNEL, "axpy", NULL);
    tsr_status_t rc = TSR_OK;
    TSR_TRY(check_device(dev, "axpy"));
    TSR_CHECK(n == 0 || (x && y), TSR_ERR_INVALID_ARG, "axpy of %zu values: x or y is NULL", n);
    if (n == 0)
        goto cleanup;
    if (on_cpu(dev)) {
        tsr__cpu_axpy(n, alpha, x, y);
    } else {
#if TSR_HAVE_CUDA
        TSR_TRY(tsr__cuda_status(tsr__cuda_axpy(n, alpha, x, y, tsr__cuda_stream(dev)), "axpy"));
#endif
    }
cleanup:
    return rc;
}

tsr_status_t tsr_kernel_scale(tsr_device_t dev, tsr_dtype_t dt, size_t n, void *x, float alpha)
{
    TSR__REGION(dev, TSR_PROF_KERNEL, "scale", NULL);
    tsr_status_t rc = TSR_OK;
    TSR_TRY(check_device(dev, "scale"));
    TSR_TRY(check_float_type(dt, "scale", "element type"));
    TSR_CHECK(n == 0 || x, TSR_ERR_INVALID_ARG, "scale of %zu values: x is NULL", n);
    if (n == 0)
        goto cleanup;
    if (on_cpu(dev)) {
        tsr__cpu_scale(dt, n, x, alpha);
    } else {
#if TSR_HAVE_CUDA
        cudaStream_t stream = tsr__cuda_stream(dev);
        TSR_TRY(tsr__cuda_status(dt == TSR_DTYPE_BF16 ? tsr__cuda_scale_bf16(x, n, alpha, stream)
                                                      : tsr__cuda_scale_f32(x, n, alpha, stream),
                                 "scale"));
#endif
    }
cleanup:
    return rc;
}

/* Whether the byte ranges [a, a + a_bytes) and [b, b + b_bytes) share a byte. */
static int overlap(const void *a, size_t a_bytes, const void *b, size_t b_bytes)
{
    uintptr_t a0 = (uintptr_t)a, b0 = (uintptr_t)b;
    return a0 < b0 + b_bytes && b0 < a0 + a_bytes;
}

tsr_status_t tsr_kernel_cast(tsr_device_t dev, tsr_dtype_t src_type, const void *src, tsr_dtype_t dst_type,
                             void *dst, size_t n)
{
    TSR__REGION(dev, TSR_PROF_KERNEL, "cast", NULL);
    tsr_status_t rc = TSR_OK;
    TSR_TRY(check_device(dev, "cast"));
    TSR_CHECK((unsigned)src_type < TSR_DTYPE_COUNT && (unsigned)dst_type < TSR_DTYPE_COUNT, TSR_ERR_INVALID_ARG,
              "cast: element types %d and %d are not both valid", (int)src_type, (int)dst_type);
    if (src_type != dst_type) {
        TSR_TRY(check_float_type(src_type, "cast", "source type"));
        TSR_TRY(check_float_type(dst_type, "cast", "destination type"));
    }
    TSR_CHECK(n == 0 || (src && dst), TSR_ERR_INVALID_ARG, "cast of %zu values: src or dst is NULL", n);
    if (n == 0 || (src == dst && src_type == dst_type))
        goto cleanup;
    TSR_CHECK(!overlap(src, n * tsr_dtype_size(src_type), dst, n * tsr_dtype_size(dst_type)), TSR_ERR_INVALID_ARG,
              "cast of %zu values from %s to %s: src and dst overlap", n, tsr_dtype_name(src_type),
              tsr_dtype_name(dst_type));
    if (on_cpu(dev)) {
        tsr__cpu_cast(src_type, src, dst_type, dst, n);
    } else {
#if TSR_HAVE_CUDA
        cudaStream_t stream = tsr__cuda_stream(dev);
        cudaError_t err;
        if (src_type == dst_type)
            err = tsr__cuda_copy(dst, src, n * tsr_dtype_size(src_type), stream);
        else if (src_type == TSR_DTYPE_F32)
            err = tsr__cuda_cast_f32_bf16(src, dst, n, stream);
        else
            err = tsr__cuda_cast_bf16_f32(src, dst, n, stream);
        TSR_TRY(tsr__cuda_status(err, "cast"));
#endif
    }
cleanup:
    return rc;
}
