/*
 * cuda_impl.h: what the CUDA backend's kernel groups need from cuda.c (C and C++).
 * Only included where TSR_HAVE_CUDA is 1.
 */
#ifndef TESSERA_CUDA_IMPL_H
#define TESSERA_CUDA_IMPL_H

#include <cuda_runtime.h>

#include "device/device_impl.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The stream every kernel of @p dev is queued on. */
cudaStream_t tsr__cuda_stream(struct tsr_device *dev);

/* Turn a CUDA error into a Tessera status with the call's name ("layernorm forward"). */
tsr_status_t tsr__cuda_status(cudaError_t err, const char *what);

#ifdef __cplusplus
}
#endif
#endif /* TESSERA_CUDA_IMPL_H */
