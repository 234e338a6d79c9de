/*
 * kernels_attention.c: the public causal-attention kernels of tessera/kernels.h: argument
 * checks, then dispatch to the CPU twin (cpu_attention.c) or the CUDA kernels
 * (cuda_attention.cu).
 */
#include <limits.h>

#include "device/attention_impl.h"
#include "device/device_impl.h"

#if TSR_HAVE_CUDA
#include "device/cuda_attention.h"
#include "device/cuda_impl.h"
#endif

/* The CUDA kernels tile T by 32 rows at the finest and put the tiles on grid.y (at most 65535). */
#define CUDA_MAX_T (65535LL * 32)

/*
 * Check what forward and backward share; *empty is set when there is nothing to compute
 * (no sequence, token or head), which is not an error.
 */
static tsr_status_t check_args(tsr_device_t dev, tsr_dtype_t dt, int seqs, int T, int heads, int hd, int ld_in,
                               int ld_o, const char *what, int *empty)
{
    if (!dev)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "%s: NULL device", what);
    if (dt != TSR_DTYPE_F32 && dt != TSR_DTYPE_BF16)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "%s: element type %s is not supported (expected f32 or bf16)", what,
                         tsr_dtype_name(dt));
    if (dt == TSR_DTYPE_BF16 && dev->kind == TSR_DEVICE_CPU)
        return TSR_ERROR(TSR_ERR_NOT_SUPPORTED, "%s: bf16 is not supported on the CPU device (use f32)", what);
    if (seqs < 0 || T < 0 || heads < 0)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "%s: seqs %d, T %d, heads %d must not be negative", what, seqs, T,
                         heads);
    if (dev->kind == TSR_DEVICE_CUDA) {
        if (hd != 16 && hd != 32 && hd != 64 && hd != 128)
            return TSR_ERROR(TSR_ERR_INVALID_ARG, "%s: head size %d is not supported on CUDA (expected 16, 32, 64 or 128)",
                             what, hd);
        if ((long long)seqs * heads > INT_MAX || T > CUDA_MAX_T)
            return TSR_ERROR(TSR_ERR_INVALID_ARG,
                             "%s: seqs %d * heads %d must be at most %d and T %d at most %lld on CUDA", what, seqs,
                             heads, INT_MAX, T, CUDA_MAX_T);
    } else if (hd < 1) {
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "%s: head size %d, expected at least 1", what, hd);
    }
    long long width = (long long)heads * hd;
    if (ld_in < width || ld_o < width)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "%s: leading dimensions ld_in %d and ld_o %d must be at least heads * hd = %lld",
                         what, ld_in, ld_o, width);
    *empty = seqs == 0 || T == 0 || heads == 0;
    return TSR_OK;
}

tsr_status_t tsr_kernel_attention_forward(tsr_device_t dev, tsr_dtype_t dt, int seqs, int T, int heads, int hd,
                                          const void *q, const void *k, const void *v, int ld_in, void *o, int ld_o,
                                          float *lse)
{
    TSR__REGION(dev, TSR_PROF_KERNEL, "attention fwd", NULL);
    tsr_status_t rc = TSR_OK;
    int empty = 0;
    TSR_TRY(check_args(dev, dt, seqs, T, heads, hd, ld_in, ld_o, "attention forward", &empty));
    if (empty)
        goto cleanup;
    TSR_CHECK(q && k && v && o && lse, TSR_ERR_INVALID_ARG, "attention forward: q, k, v, o and lse must not be NULL");
    if (dev->kind == TSR_DEVICE_CPU) {
        TSR_TRY(tsr__cpu_attention_forward(seqs, T, heads, hd, q, k, v, ld_in, o, ld_o, lse));
    } else {
#if TSR_HAVE_CUDA
        TSR_TRY(tsr__cuda_status(tsr__cuda_attention_forward(dt, seqs, T, heads, hd, q, k, v, ld_in, o, ld_o, lse,
                                                             tsr__cuda_stream(dev)),
                                 "attention forward"));
#else
        TSR_CHECK(0, TSR_ERR_NOT_SUPPORTED, "attention forward: this build has no CUDA backend");
#endif
    }
cleanup:
    return rc;
}

tsr_status_t tsr_kernel_attention_backward(tsr_device_t dev, tsr_dtype_t dt, int seqs, int T, int heads, int hd,
                                           const void *q, const void *k, const void *v, int ld_in, const void *o,
                                           const void *d_o, int ld_o, const float *lse, float *delta, void *dq,
                                           void *dk, void *dv)
{
    TSR__REGION(dev, TSR_PROF_KERNEL, "attention bwd", NULL);
    tsr_status_t rc = TSR_OK;
    int empty = 0;
    TSR_TRY(check_args(dev, dt, seqs, T, heads, hd, ld_in, ld_o, "attention backward", &empty));
    if (empty)
        goto cleanup;
    TSR_CHECK(q && k && v && o && d_o && lse && delta && dq && dk && dv, TSR_ERR_INVALID_ARG,
              "attention backward: q, k, v, o, d_o, lse, delta, dq, dk and dv must not be NULL");
    if (dev->kind == TSR_DEVICE_CPU) {
        TSR_TRY(tsr__cpu_attention_backward(seqs, T, heads, hd, q, k, v, ld_in, o, d_o, ld_o, lse, delta, dq, dk, dv));
    } else {
#if TSR_HAVE_CUDA
        TSR_TRY(tsr__cuda_status(tsr__cuda_attention_backward(dt, seqs, T, heads, hd, q, k, v, ld_in, o, d_o, ld_o,
                                                              lse, delta, dq, dk, dv, tsr__cuda_stream(dev)),
                                 "attention backward"));
#else
        TSR_CHECK(0, TSR_ERR_NOT_SUPPORTED, "attention backward: this build has no CUDA backend");
#endif
    }
cleanup:
    return rc;
}
