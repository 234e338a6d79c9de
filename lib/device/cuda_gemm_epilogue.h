/*
 * cuda_gemm_epilogue.h: launchers of the GEMM epilogue kernels in cuda_gemm_epilogue.cu,
 * callable from C: the epilogues of tsr_kernel_gemm that cuBLASLt does not fuse (see
 * cuda_gemm.c). Matrices are row-major, rows x cols with a leading dimension; every
 * element is of @p dt (TSR_DTYPE_F32 or TSR_DTYPE_BF16, bf16 passed as void *).
 */
#ifndef TESSERA_CUDA_GEMM_EPILOGUE_H
#define TESSERA_CUDA_GEMM_EPILOGUE_H

#ifdef TSR_CUDA_EMU
#include "cuda_emu.h"
#else
#include <cuda_runtime.h>
#endif
#include <tessera/dtype.h>

#ifdef __cplusplus
extern "C" {
#endif

/* x = beta x + bias[j] in every row; x is not read when beta is 0, bias may be NULL. */
cudaError_t tsr__cuda_gemm_scale_bias(tsr_dtype_t dt, int rows, int cols, void *x, int ldx, float beta,
                                      const void *bias, cudaStream_t stream);

/* c = gelu(aux), the tanh form. */
cudaError_t tsr__cuda_gemm_gelu(tsr_dtype_t dt, int rows, int cols, const void *aux, int ld_aux, void *c, int ldc,
                                cudaStream_t stream);

/* c = c * gelu'(aux). */
cudaError_t tsr__cuda_gemm_dgelu(tsr_dtype_t dt, int rows, int cols, const void *aux, int ld_aux, void *c, int ldc,
                                 cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif /* TESSERA_CUDA_GEMM_EPILOGUE_H */
