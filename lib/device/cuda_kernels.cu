// cuda_kernels.cu: CUDA kernels of the device backend. Each has a CPU twin in cpu.c that
// tests/test_device_cuda.c checks it against.
#include "device/cuda_launch.h"
#include "device/cuda_kernels.h"

// x: n floats. Grid-stride loop, so any n works with a bounded grid.
__global__ static void fill_f32_kernel(float *x, float value, size_t n)
{
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        x[i] = value;
}

extern "C" cudaError_t tsr__cuda_fill_f32(float *x, float value, size_t n, cudaStream_t stream)
{
    const int threads = 256;
    size_t blocks = (n + threads - 1) / threads;
    if (blocks > 65535)
        blocks = 65535;
    TSR_LAUNCH(fill_f32_kernel, (unsigned)blocks, threads, 0, stream, x, value, n);
    return cudaGetLastError();
}
