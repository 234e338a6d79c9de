/* cuda_attention.h: launchers of the causal-attention kernels in cuda_attention.cu, callable from C. */
#ifndef TESSERA_CUDA_ATTENTION_H
#define TESSERA_CUDA_ATTENTION_H

#ifdef TSR_CUDA_EMU
#include "cuda_emu.h"
#else
#include <cuda_runtime.h>
#endif
#include <tessera/dtype.h>

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Queue the forward of tsr_kernel_attention_forward() on stream: dt F32 or BF16 (q, k, v, o
 * of that type), hd 16, 32, 64 or 128 (cudaErrorInvalidValue otherwise), shapes already
 * checked by the caller.
 */
cudaError_t tsr__cuda_attention_forward(tsr_dtype_t dt, int seqs, int T, int heads, int hd, const void *q,
                                        const void *k, const void *v, int ld_in, void *o, int ld_o, float *lse,
                                        cudaStream_t stream);

/* Queue the backward of tsr_kernel_attention_backward() on stream: three kernels (delta, dK and dV, dQ). */
cudaError_t tsr__cuda_attention_backward(tsr_dtype_t dt, int seqs, int T, int heads, int hd, const void *q,
                                         const void *k, const void *v, int ld_in, const void *o, const void *d_o,
                                         int ld_o, const float *lse, float *delta, void *dq, void *dk, void *dv,
                                         cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif /* TESSERA_CUDA_ATTENTION_H */
