/*
 * cuda_impl.h: what the CUDA backend's kernel groups need from cuda.c (C and C++).
 * Only included where TSR_HAVE_CUDA is 1.
 */
#ifndef TESSERA_CUDA_IMPL_H
#define TESSERA_CUDA_IMPL_H

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "device/device_impl.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The stream every kernel of @p dev is queued on. */
cudaStream_t tsr__cuda_stream(struct tsr_device *dev);

/* The cuBLAS handle of @p dev (on its stream). */
cublasHandle_t tsr__cuda_cublas(struct tsr_device *dev);

/* The cuBLASLt handle of @p dev and the workspace its matmuls may use. */
cublasLtHandle_t tsr__cuda_cublaslt(struct tsr_device *dev, void **workspace, size_t *workspace_bytes);

/* The device's scratch for the reductions of cuda_optim.cu (TSR__CUDA_REDUCE_SCRATCH doubles):
 * free again once the stream is synchronized after a reduction. */
double *tsr__cuda_reduce_scratch(struct tsr_device *dev);

/* The slot where cuda_gemm.c keeps the device's cache of cuBLASLt matmul plans (NULL until
 * the first GEMM); cuda.c destroys it at close with tsr__cuda_gemm_plans_destroy (NULL is fine). */
struct tsr__gemm_plans;
struct tsr__gemm_plans **tsr__cuda_gemm_plans(struct tsr_device *dev);
void tsr__cuda_gemm_plans_destroy(struct tsr__gemm_plans *plans);

/* Call the CUDA runtime; on failure record TSR_ERR_CUDA with the call and CUDA's message, and
 * jump to cleanup. */
#define CALL_CUDA(call)                                                                            \
    do {                                                                                           \
        cudaError_t tsr_cuda_rc_ = (call);                                                         \
        if (tsr_cuda_rc_ != cudaSuccess) {                                                         \
            rc = TSR_ERROR(TSR_ERR_CUDA, "%s failed: %s", #call, cudaGetErrorString(tsr_cuda_rc_)); \
            goto cleanup;                                                                          \
        }                                                                                          \
    } while (0)

/* Call cuBLAS or cuBLASLt; on failure record TSR_ERR_CUBLAS with the call and cuBLAS's own
 * message, and jump to cleanup (rc and the label as for TSR_CHECK). */
#define CALL_CUBLAS(call)                                                                               \
    do {                                                                                                \
        cublasStatus_t tsr_blas_rc_ = (call);                                                           \
        if (tsr_blas_rc_ != CUBLAS_STATUS_SUCCESS) {                                                    \
            rc = TSR_ERROR(TSR_ERR_CUBLAS, "%s failed: %s", #call, cublasGetStatusString(tsr_blas_rc_)); \
            goto cleanup;                                                                               \
        }                                                                                               \
    } while (0)

/* Turn a CUDA error into a Tessera status with the call's name ("layernorm forward"). */
tsr_status_t tsr__cuda_status(cudaError_t err, const char *what);

#ifdef __cplusplus
}
#endif
#endif /* TESSERA_CUDA_IMPL_H */
