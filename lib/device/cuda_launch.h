/*
 * cuda_launch.h: what every .cu file of lib/device includes instead of the CUDA headers, so
 * that its kernels also build as plain C++ against the CPU emulation in tests/emu
 * (-DTSR_CUDA_EMU), where `make check` runs them on machines without a GPU.
 *
 * Kernel code may use only what the emulation provides (tests/emu/cuda_emu.h lists it):
 * threadIdx/blockIdx/blockDim/gridDim, __syncthreads, __syncwarp, static __shared__ arrays,
 * dynamic shared memory through TSR_DYNAMIC_SMEM, full-warp __shfl_*_sync, atomicAdd on
 * float, __nv_bfloat16 with its conversions, the float math functions, and nvcuda::wmma
 * (fill/load/store/mma, fragment elements touched only uniformly); launches go through
 * TSR_LAUNCH. Host wrappers may call cudaGetLastError, cudaMemsetAsync, cudaMemcpyAsync and
 * cudaFuncSetAttribute.
 */
#ifndef TESSERA_CUDA_LAUNCH_H
#define TESSERA_CUDA_LAUNCH_H

#ifdef TSR_CUDA_EMU
#include "cuda_emu.h"
#define TSR_LAUNCH(kernel, grid, block, smem, stream, ...)                                                     \
    tsr_emu::launch((kernel), dim3(grid), dim3(block), (size_t)(smem), (stream), __VA_ARGS__)
#define TSR_DYNAMIC_SMEM(type, name) type *name = (type *)tsr_emu::dynamic_smem()
#else
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <mma.h>
#define TSR_LAUNCH(kernel, grid, block, smem, stream, ...) kernel<<<(grid), (block), (smem), (stream)>>>(__VA_ARGS__)
#define TSR_DYNAMIC_SMEM(type, name)                                                                           \
    extern __shared__ __align__(16) unsigned char tsr_dynamic_smem_[];                                          \
    type *name = (type *)tsr_dynamic_smem_
#endif

#endif /* TESSERA_CUDA_LAUNCH_H */
