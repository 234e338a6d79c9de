/*
 * cuda_optim.h: launchers of the CUDA kernels in cuda_optim.cu (optimizer updates, reductions,
 * axpy, scale, casts), callable from C. Each queues its work on @p stream and returns the
 * launch's error; none waits for the device. bf16 buffers are void pointers here.
 */
#ifndef TESSERA_CUDA_OPTIM_H
#define TESSERA_CUDA_OPTIM_H

#ifdef TSR_CUDA_EMU
#include "cuda_emu.h"
#else
#include <cuda_runtime.h>
#endif
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The per-step scalars of AdamW, derived on the host exactly as the CPU kernel derives them
 * (step_size = lr / bc1, sqrt_bc2 = sqrtf(bc2), decay = 1 - lr wd, all in float). */
typedef struct tsr__cuda_adamw {
    float beta1, beta2, eps, grad_coef;
    float step_size, sqrt_bc2, decay;
} tsr__cuda_adamw_t;

/* Blocks of the first pass of a reduction: fixed, so that the summation order, and hence
 * the result's bits, depend on nothing but n. */
#define TSR__CUDA_REDUCE_BLOCKS 1024
/* Doubles of device scratch a reduction needs: one partial sum per block, then the total. */
#define TSR__CUDA_REDUCE_SCRATCH (TSR__CUDA_REDUCE_BLOCKS + 1)

/* AdamW on n values (see tsr_kernel_adamw). At most one of work_f32, work_bf16 is not NULL:
 * it receives the new p. */
cudaError_t tsr__cuda_adamw(size_t n, float *p, const float *g, float *m, float *v, const tsr__cuda_adamw_t *a,
                            float *work_f32, void *work_bf16, cudaStream_t stream);

/* SGD on n values; m NULL: no momentum; decay = 1 - lr wd. Work as for AdamW. */
cudaError_t tsr__cuda_sgd(size_t n, float *p, const float *g, float *m, float lr, float momentum, float decay,
                          float grad_coef, float *work_f32, void *work_bf16, cudaStream_t stream);

/* *out (host memory) = the sum of x[i]^2 (sumsq) or of x[i] (sum) over n > 0 floats, in
 * double; scratch: TSR__CUDA_REDUCE_SCRATCH doubles of device memory. *out is written by a
 * copy queued on the stream: valid once the stream is synchronized. */
cudaError_t tsr__cuda_sumsq(const float *x, size_t n, double *scratch, double *out, cudaStream_t stream);
cudaError_t tsr__cuda_sum(const float *x, size_t n, double *scratch, double *out, cudaStream_t stream);

/* y += alpha x over n floats. */
cudaError_t tsr__cuda_axpy(size_t n, float alpha, const float *x, float *y, cudaStream_t stream);

/* x *= alpha over n floats or n bf16 values. */
cudaError_t tsr__cuda_scale_f32(float *x, size_t n, float alpha, cudaStream_t stream);
cudaError_t tsr__cuda_scale_bf16(void *x, size_t n, float alpha, cudaStream_t stream);

/* n values converted: f32 to bf16 (round to nearest even), bf16 to f32 (exact). */
cudaError_t tsr__cuda_cast_f32_bf16(const float *src, void *dst, size_t n, cudaStream_t stream);
cudaError_t tsr__cuda_cast_bf16_f32(const void *src, float *dst, size_t n, cudaStream_t stream);

/* A same-type cast: bytes copied within the device. */
cudaError_t tsr__cuda_copy(void *dst, const void *src, size_t bytes, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif /* TESSERA_CUDA_OPTIM_H */
