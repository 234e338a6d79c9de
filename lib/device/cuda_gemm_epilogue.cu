// cuda_gemm_epilogue.cu: the epilogues of tsr_kernel_gemm that cuBLASLt does not fuse (see
// cuda_gemm.c), as elementwise kernels over a row-major rows x cols matrix. Math is fp32
// whatever the element type; GELU is the tanh form written exactly as the CPU's
// (cpu_gemm.c), so fp32 results agree with it to rounding.
#include "device/cuda_launch.h"
#include "device/cuda_gemm_epilogue.h"

namespace {

const int kThreads = 256;

__device__ inline float load(const float *p) { return *p; }
__device__ inline float load(const __nv_bfloat16 *p) { return __bfloat162float(*p); }
__device__ inline void store(float *p, float v) { *p = v; }
__device__ inline void store(__nv_bfloat16 *p, float v) { *p = __float2bfloat16(v); } // nearest even

// The constants as the CPU rounds them: double literals converted to float.
__device__ inline float gelu_tanh(float v)
{
    return tanhf((float)0.7978845608028654 * (v + (float)0.044715 * v * v * v));
}

__device__ inline float gelu(float v)
{
    return 0.5f * v * (1.0f + gelu_tanh(v));
}

__device__ inline float gelu_grad(float v)
{
    float t = gelu_tanh(v);
    float dt = (float)0.7978845608028654 * (1.0f + 3.0f * (float)0.044715 * v * v) * (1.0f - t * t);
    return 0.5f * (1.0f + t) + 0.5f * v * dt;
}

// Each kernel walks the rows*cols elements with a grid-stride loop (a bounded grid covers any
// size), element e at row e / cols, column e % cols.

// x: rows x cols (ldx); bias: cols values or NULL.
template <typename T>
__global__ void scale_bias_kernel(int rows, int cols, T *x, int ldx, float beta, const T *bias)
{
    size_t total = (size_t)rows * cols;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < total; e += (size_t)gridDim.x * blockDim.x) {
        size_t j = e % cols;
        T *p = x + (e / cols) * ldx + j;
        float v = beta == 0.0f ? 0.0f : beta * load(p);
        if (bias)
            v += load(bias + j);
        store(p, v);
    }
}

// aux, c: rows x cols (ld_aux, ldc).
template <typename T>
__global__ void gelu_kernel(int rows, int cols, const T *aux, int ld_aux, T *c, int ldc)
{
    size_t total = (size_t)rows * cols;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < total; e += (size_t)gridDim.x * blockDim.x) {
        size_t i = e / cols, j = e % cols;
        store(c + i * ldc + j, gelu(load(aux + i * ld_aux + j)));
    }
}

template <typename T>
__global__ void dgelu_kernel(int rows, int cols, const T *aux, int ld_aux, T *c, int ldc)
{
    size_t total = (size_t)rows * cols;
    for (size_t e = blockIdx.x * (size_t)blockDim.x + threadIdx.x; e < total; e += (size_t)gridDim.x * blockDim.x) {
        size_t i = e / cols, j = e % cols;
        T *p = c + i * ldc + j;
        store(p, load(p) * gelu_grad(load(aux + i * ld_aux + j)));
    }
}

// Callers pass rows, cols >= 1 (tsr_kernel_gemm returns early on an empty C).
unsigned blocks_for(int rows, int cols)
{
    size_t blocks = ((size_t)rows * (size_t)cols + kThreads - 1) / kThreads;
    return (unsigned)(blocks > 65535 ? 65535 : blocks);
}

} // namespace

extern "C" cudaError_t tsr__cuda_gemm_scale_bias(tsr_dtype_t dt, int rows, int cols, void *x, int ldx, float beta,
                                                 const void *bias, cudaStream_t stream)
{
    if (dt == TSR_DTYPE_BF16) {
        TSR_LAUNCH(scale_bias_kernel<__nv_bfloat16>, blocks_for(rows, cols), kThreads, 0, stream, rows, cols,
                   (__nv_bfloat16 *)x, ldx, beta, (const __nv_bfloat16 *)bias);
    } else {
        TSR_LAUNCH(scale_bias_kernel<float>, blocks_for(rows, cols), kThreads, 0, stream, rows, cols, (float *)x, ldx,
                   beta, (const float *)bias);
    }
    return cudaGetLastError();
}

extern "C" cudaError_t tsr__cuda_gemm_gelu(tsr_dtype_t dt, int rows, int cols, const void *aux, int ld_aux, void *c,
                                           int ldc, cudaStream_t stream)
{
    if (dt == TSR_DTYPE_BF16) {
        TSR_LAUNCH(gelu_kernel<__nv_bfloat16>, blocks_for(rows, cols), kThreads, 0, stream, rows, cols,
                   (const __nv_bfloat16 *)aux, ld_aux, (__nv_bfloat16 *)c, ldc);
    } else {
        TSR_LAUNCH(gelu_kernel<float>, blocks_for(rows, cols), kThreads, 0, stream, rows, cols, (const float *)aux,
                   ld_aux, (float *)c, ldc);
    }
    return cudaGetLastError();
}

extern "C" cudaError_t tsr__cuda_gemm_dgelu(tsr_dtype_t dt, int rows, int cols, const void *aux, int ld_aux, void *c,
                                            int ldc, cudaStream_t stream)
{
    if (dt == TSR_DTYPE_BF16) {
        TSR_LAUNCH(dgelu_kernel<__nv_bfloat16>, blocks_for(rows, cols), kThreads, 0, stream, rows, cols,
                   (const __nv_bfloat16 *)aux, ld_aux, (__nv_bfloat16 *)c, ldc);
    } else {
        TSR_LAUNCH(dgelu_kernel<float>, blocks_for(rows, cols), kThreads, 0, stream, rows, cols, (const float *)aux,
                   ld_aux, (float *)c, ldc);
    }
    return cudaGetLastError();
}
