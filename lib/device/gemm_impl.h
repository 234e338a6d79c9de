/*
 * gemm_impl.h: the two versions of tsr_kernel_gemm (kernels_gemm.c checks the arguments,
 * then calls the one for the device's kind). Both get a description already checked
 * against kernels.h's rules, with m, n > 0.
 */
#ifndef TESSERA_GEMM_IMPL_H
#define TESSERA_GEMM_IMPL_H

#include "device/device_impl.h"

/* fp32 only: CBLAS through the CPU backend's sgemm, then the epilogue (cpu_gemm.c). */
tsr_status_t tsr__cpu_gemm(struct tsr_device *dev, const tsr_gemm_t *g);

#if TSR_HAVE_CUDA
/* cuBLASLt, fused epilogues where it has them, else Tessera's epilogue kernels (cuda_gemm.c). */
tsr_status_t tsr__cuda_gemm(struct tsr_device *dev, const tsr_gemm_t *g);
#endif

#endif /* TESSERA_GEMM_IMPL_H */
