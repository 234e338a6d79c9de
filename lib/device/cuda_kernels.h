/* cuda_kernels.h: launchers of the CUDA kernels in cuda_kernels.cu, callable from C. */
#ifndef TESSERA_CUDA_KERNELS_H
#define TESSERA_CUDA_KERNELS_H

#ifdef TSR_CUDA_EMU
#include "cuda_emu.h"
#else
#include <cuda_runtime.h>
#endif
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* x[i] = value for i < n, queued on stream. */
cudaError_t tsr__cuda_fill_f32(float *x, float value, size_t n, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif /* TESSERA_CUDA_KERNELS_H */
