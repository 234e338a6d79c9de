// cuda_optim.cu: CUDA kernels of the optimizer updates (AdamW, SGD), the double-accumulated
// sums, axpy, scale and the f32/bf16 casts. Each has a CPU twin in cpu_optim.c that
// tests/test_kernels_optim.c checks it against.
//
// Element-wise kernels are grid-stride loops over packs of VEC consecutive values, loaded and
// stored 16 bytes at a time (8 for bf16) when every pointer is aligned for it, one value at a
// time otherwise; the n mod VEC values past the last pack go one to a thread. They are memory
// bound (AdamW moves 28 bytes per value, 30 with a bf16 copy), so the math stays in plain fp32
// in the CPU's order; nvcc may still fuse a multiply and an add, which is why the CUDA results
// are compared with the CPU's to a tolerance rather than bit for bit.
//
// The reductions are deterministic: a fixed grid, each thread summing fixed packs in index
// order in double, then a tree in shared memory per block and one more block over the block
// sums. The pack a value belongs to does not depend on the pointer's alignment, so the bits
// of the result depend only on the values.
#include <stdint.h>

#include "device/cuda_launch.h"
#include "device/cuda_optim.h"

namespace {

constexpr unsigned THREADS = 256;     // per block; a power of two for the reduction trees
constexpr size_t MAX_BLOCKS = 4096;   // element-wise grids: several waves of the largest GPU
constexpr int VEC = 4;                // values per pack

// N values of T moved as one access (16 bytes for four floats, 8 for four bf16).
template <typename T, int N>
struct alignas(sizeof(T) * N) Pack {
    T v[N];
};

template <int N, typename T>
__device__ Pack<T, N> load(const T *x, size_t pack)
{
    return reinterpret_cast<const Pack<T, N> *>(x)[pack];
}

template <int N, typename T>
__device__ void store(T *x, size_t pack, const Pack<T, N> &value)
{
    reinterpret_cast<Pack<T, N> *>(x)[pack] = value;
}

__device__ float to_f32(float x)
{
    return x;
}

__device__ float to_f32(__nv_bfloat16 x)
{
    return __bfloat162float(x);
}

__device__ void from_f32(float x, float &out)
{
    out = x;
}

// Round to nearest even; NaN gives a NaN (the CPU twin makes it 0x7fff, as CUDA does).
__device__ void from_f32(float x, __nv_bfloat16 &out)
{
    out = __float2bfloat16(x);
}

bool aligned(const void *ptr, size_t bytes)
{
    return (uintptr_t)ptr % bytes == 0;
}

// Blocks for `items` work items of one thread each (at least one block), capped: the kernels
// loop over the rest.
unsigned grid_for(size_t items)
{
    size_t blocks = (items + THREADS - 1) / THREADS;
    if (blocks == 0)
        blocks = 1;
    return (unsigned)(blocks < MAX_BLOCKS ? blocks : MAX_BLOCKS);
}

__device__ size_t thread_index()
{
    return blockIdx.x * (size_t)blockDim.x + threadIdx.x;
}

__device__ size_t thread_count()
{
    return (size_t)gridDim.x * blockDim.x;
}

// ---------------------------------------------------------------------------------------
// AdamW and SGD: the expressions of cpu_optim.c, term for term.

__device__ void adamw_one(const tsr__cuda_adamw_t &a, float &p, float g, float &m, float &v)
{
    float gi = g * a.grad_coef;
    m = a.beta1 * m + (1.0f - a.beta1) * gi;
    v = a.beta2 * v + (1.0f - a.beta2) * gi * gi;
    p = p * a.decay - a.step_size * m / (sqrtf(v) / a.sqrt_bc2 + a.eps);
}

// p, g, m, v: n floats; work: n values of W, or NULL.
template <typename W, int N>
__global__ void adamw_kernel(size_t n, float *p, const float *g, float *m, float *v, tsr__cuda_adamw_t a, W *work)
{
    const size_t packs = n / N;
    for (size_t i = thread_index(); i < packs; i += thread_count()) {
        Pack<float, N> pp = load<N>(p, i), gg = load<N>(g, i), mm = load<N>(m, i), vv = load<N>(v, i);
        Pack<W, N> ww;
        for (int k = 0; k < N; k++) {
            adamw_one(a, pp.v[k], gg.v[k], mm.v[k], vv.v[k]);
            from_f32(pp.v[k], ww.v[k]);
        }
        store<N>(p, i, pp);
        store<N>(m, i, mm);
        store<N>(v, i, vv);
        if (work)
            store<N>(work, i, ww);
    }
    const size_t i = packs * N + thread_index();
    if (i < n) {
        float pi = p[i], mi = m[i], vi = v[i];
        adamw_one(a, pi, g[i], mi, vi);
        p[i] = pi;
        m[i] = mi;
        v[i] = vi;
        if (work)
            from_f32(pi, work[i]);
    }
}

// m NULL: no momentum.
__device__ void sgd_one(float &p, float g, float *m, float lr, float mu, float decay, float coef)
{
    float d = g * coef;
    if (m) {
        *m = mu * *m + d;
        d = *m;
    }
    p = p * decay - lr * d;
}

// p, g, m (or NULL): n floats; work: n values of W, or NULL.
template <typename W, int N>
__global__ void sgd_kernel(size_t n, float *p, const float *g, float *m, float lr, float mu, float decay, float coef,
                           W *work)
{
    const size_t packs = n / N;
    for (size_t i = thread_index(); i < packs; i += thread_count()) {
        Pack<float, N> pp = load<N>(p, i), gg = load<N>(g, i), mm{};
        if (m)
            mm = load<N>(m, i);
        Pack<W, N> ww;
        for (int k = 0; k < N; k++) {
            sgd_one(pp.v[k], gg.v[k], m ? &mm.v[k] : nullptr, lr, mu, decay, coef);
            from_f32(pp.v[k], ww.v[k]);
        }
        store<N>(p, i, pp);
        if (m)
            store<N>(m, i, mm);
        if (work)
            store<N>(work, i, ww);
    }
    const size_t i = packs * N + thread_index();
    if (i < n) {
        float pi = p[i];
        sgd_one(pi, g[i], m ? &m[i] : nullptr, lr, mu, decay, coef);
        p[i] = pi;
        if (work)
            from_f32(pi, work[i]);
    }
}

template <typename W>
void launch_adamw(size_t n, float *p, const float *g, float *m, float *v, const tsr__cuda_adamw_t &a, W *work,
                  bool vec, cudaStream_t stream)
{
    if (vec) {
        auto kernel = adamw_kernel<W, VEC>;
        TSR_LAUNCH(kernel, grid_for((n + VEC - 1) / VEC), THREADS, 0, stream, n, p, g, m, v, a, work);
    } else {
        auto kernel = adamw_kernel<W, 1>;
        TSR_LAUNCH(kernel, grid_for(n), THREADS, 0, stream, n, p, g, m, v, a, work);
    }
}

template <typename W>
void launch_sgd(size_t n, float *p, const float *g, float *m, float lr, float mu, float decay, float coef, W *work,
                bool vec, cudaStream_t stream)
{
    if (vec) {
        auto kernel = sgd_kernel<W, VEC>;
        TSR_LAUNCH(kernel, grid_for((n + VEC - 1) / VEC), THREADS, 0, stream, n, p, g, m, lr, mu, decay, coef, work);
    } else {
        auto kernel = sgd_kernel<W, 1>;
        TSR_LAUNCH(kernel, grid_for(n), THREADS, 0, stream, n, p, g, m, lr, mu, decay, coef, work);
    }
}

// ---------------------------------------------------------------------------------------
// Reductions. x*x of a float is exact in double, so sumsq rounds only in its additions.

template <bool SQUARE>
__device__ double term(float x)
{
    return SQUARE ? (double)x * (double)x : (double)x;
}

// Sum the THREADS values of s (one per thread) into s[0], always in the same tree.
__device__ void block_tree_sum(double *s)
{
    __syncthreads();
    for (unsigned half = THREADS / 2; half > 0; half /= 2) {
        if (threadIdx.x < half)
            s[threadIdx.x] += s[threadIdx.x + half];
        __syncthreads();
    }
}

// partials[b] = block b's sum. Launched with TSR__CUDA_REDUCE_BLOCKS blocks of THREADS.
// Thread t sums packs t, t + T, t + 2T, ... (T threads in all) in that order, then value
// VEC (n / VEC) + t when that is one of the n mod VEC left over.
template <bool SQUARE, bool ALIGNED>
__global__ void reduce_blocks_kernel(const float *x, size_t n, double *partials)
{
    static __shared__ double s[THREADS];
    const size_t packs = n / VEC;
    double acc = 0.0;
    for (size_t i = thread_index(); i < packs; i += thread_count()) {
        Pack<float, VEC> xx;
        if (ALIGNED)
            xx = load<VEC>(x, i);
        else
            for (int k = 0; k < VEC; k++)
                xx.v[k] = x[i * VEC + k];
        for (int k = 0; k < VEC; k++)
            acc += term<SQUARE>(xx.v[k]);
    }
    const size_t i = packs * VEC + thread_index();
    if (i < n)
        acc += term<SQUARE>(x[i]);
    s[threadIdx.x] = acc;
    block_tree_sum(s);
    if (threadIdx.x == 0)
        partials[blockIdx.x] = s[0];
}

// *out = the sum of count partials, by one block of THREADS.
__global__ void reduce_final_kernel(const double *partials, unsigned count, double *out)
{
    static __shared__ double s[THREADS];
    double acc = 0.0;
    for (unsigned i = threadIdx.x; i < count; i += THREADS)
        acc += partials[i];
    s[threadIdx.x] = acc;
    block_tree_sum(s);
    if (threadIdx.x == 0)
        *out = s[0];
}

template <bool SQUARE>
cudaError_t reduce(const float *x, size_t n, double *scratch, double *out, cudaStream_t stream)
{
    double *total = scratch + TSR__CUDA_REDUCE_BLOCKS;
    if (aligned(x, sizeof(Pack<float, VEC>))) {
        auto kernel = reduce_blocks_kernel<SQUARE, true>;
        TSR_LAUNCH(kernel, TSR__CUDA_REDUCE_BLOCKS, THREADS, 0, stream, x, n, scratch);
    } else {
        auto kernel = reduce_blocks_kernel<SQUARE, false>;
        TSR_LAUNCH(kernel, TSR__CUDA_REDUCE_BLOCKS, THREADS, 0, stream, x, n, scratch);
    }
    cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess)
        return err;
    TSR_LAUNCH(reduce_final_kernel, 1, THREADS, 0, stream, scratch, (unsigned)TSR__CUDA_REDUCE_BLOCKS, total);
    err = cudaGetLastError();
    if (err != cudaSuccess)
        return err;
    return cudaMemcpyAsync(out, total, sizeof *out, cudaMemcpyDeviceToHost, stream);
}

// ---------------------------------------------------------------------------------------
// axpy, scale, casts.

template <int N>
__global__ void axpy_kernel(size_t n, float alpha, const float *x, float *y)
{
    const size_t packs = n / N;
    for (size_t i = thread_index(); i < packs; i += thread_count()) {
        Pack<float, N> xx = load<N>(x, i), yy = load<N>(y, i);
        for (int k = 0; k < N; k++)
            yy.v[k] += alpha * xx.v[k];
        store<N>(y, i, yy);
    }
    const size_t i = packs * N + thread_index();
    if (i < n)
        y[i] += alpha * x[i];
}

// x: n values of T; the product is rounded to float, then to T.
template <typename T, int N>
__global__ void scale_kernel(T *x, size_t n, float alpha)
{
    const size_t packs = n / N;
    for (size_t i = thread_index(); i < packs; i += thread_count()) {
        Pack<T, N> xx = load<N>(x, i);
        for (int k = 0; k < N; k++)
            from_f32(to_f32(xx.v[k]) * alpha, xx.v[k]);
        store<N>(x, i, xx);
    }
    const size_t i = packs * N + thread_index();
    if (i < n)
        from_f32(to_f32(x[i]) * alpha, x[i]);
}

// dst = src converted, n values.
template <typename S, typename D, int N>
__global__ void cast_kernel(const S *src, D *dst, size_t n)
{
    const size_t packs = n / N;
    for (size_t i = thread_index(); i < packs; i += thread_count()) {
        Pack<S, N> ss = load<N>(src, i);
        Pack<D, N> dd;
        for (int k = 0; k < N; k++)
            from_f32(to_f32(ss.v[k]), dd.v[k]);
        store<N>(dst, i, dd);
    }
    const size_t i = packs * N + thread_index();
    if (i < n)
        from_f32(to_f32(src[i]), dst[i]);
}

template <typename T>
cudaError_t launch_scale(T *x, size_t n, float alpha, cudaStream_t stream)
{
    if (n == 0)
        return cudaSuccess;
    if (aligned(x, sizeof(Pack<T, VEC>))) {
        auto kernel = scale_kernel<T, VEC>;
        TSR_LAUNCH(kernel, grid_for((n + VEC - 1) / VEC), THREADS, 0, stream, x, n, alpha);
    } else {
        auto kernel = scale_kernel<T, 1>;
        TSR_LAUNCH(kernel, grid_for(n), THREADS, 0, stream, x, n, alpha);
    }
    return cudaGetLastError();
}

template <typename S, typename D>
cudaError_t launch_cast(const S *src, D *dst, size_t n, cudaStream_t stream)
{
    if (n == 0)
        return cudaSuccess;
    if (aligned(src, sizeof(Pack<S, VEC>)) && aligned(dst, sizeof(Pack<D, VEC>))) {
        auto kernel = cast_kernel<S, D, VEC>;
        TSR_LAUNCH(kernel, grid_for((n + VEC - 1) / VEC), THREADS, 0, stream, src, dst, n);
    } else {
        auto kernel = cast_kernel<S, D, 1>;
        TSR_LAUNCH(kernel, grid_for(n), THREADS, 0, stream, src, dst, n);
    }
    return cudaGetLastError();
}

} // namespace

extern "C" cudaError_t tsr__cuda_adamw(size_t n, float *p, const float *g, float *m, float *v,
                                       const tsr__cuda_adamw_t *a, float *work_f32, void *work_bf16,
                                       cudaStream_t stream)
{
    if (n == 0)
        return cudaSuccess;
    const size_t f4 = sizeof(Pack<float, VEC>);
    bool vec = aligned(p, f4) && aligned(g, f4) && aligned(m, f4) && aligned(v, f4);
    if (work_bf16) {
        __nv_bfloat16 *w = static_cast<__nv_bfloat16 *>(work_bf16);
        launch_adamw(n, p, g, m, v, *a, w, vec && aligned(w, sizeof(Pack<__nv_bfloat16, VEC>)), stream);
    } else {
        launch_adamw(n, p, g, m, v, *a, work_f32, vec && aligned(work_f32, f4), stream);
    }
    return cudaGetLastError();
}

extern "C" cudaError_t tsr__cuda_sgd(size_t n, float *p, const float *g, float *m, float lr, float momentum,
                                     float decay, float grad_coef, float *work_f32, void *work_bf16,
                                     cudaStream_t stream)
{
    if (n == 0)
        return cudaSuccess;
    const size_t f4 = sizeof(Pack<float, VEC>);
    bool vec = aligned(p, f4) && aligned(g, f4) && aligned(m, f4);
    if (work_bf16) {
        __nv_bfloat16 *w = static_cast<__nv_bfloat16 *>(work_bf16);
        launch_sgd(n, p, g, m, lr, momentum, decay, grad_coef, w, vec && aligned(w, sizeof(Pack<__nv_bfloat16, VEC>)),
                   stream);
    } else {
        launch_sgd(n, p, g, m, lr, momentum, decay, grad_coef, work_f32, vec && aligned(work_f32, f4), stream);
    }
    return cudaGetLastError();
}

extern "C" cudaError_t tsr__cuda_sumsq(const float *x, size_t n, double *scratch, double *out, cudaStream_t stream)
{
    return reduce<true>(x, n, scratch, out, stream);
}

extern "C" cudaError_t tsr__cuda_sum(const float *x, size_t n, double *scratch, double *out, cudaStream_t stream)
{
    return reduce<false>(x, n, scratch, out, stream);
}

extern "C" cudaError_t tsr__cuda_axpy(size_t n, float alpha, const float *x, float *y, cudaStream_t stream)
{
    if (n == 0)
        return cudaSuccess;
    const size_t f4 = sizeof(Pack<float, VEC>);
    if (aligned(x, f4) && aligned(y, f4)) {
        auto kernel = axpy_kernel<VEC>;
        TSR_LAUNCH(kernel, grid_for((n + VEC - 1) / VEC), THREADS, 0, stream, n, alpha, x, y);
    } else {
        auto kernel = axpy_kernel<1>;
        TSR_LAUNCH(kernel, grid_for(n), THREADS, 0, stream, n, alpha, x, y);
    }
    return cudaGetLastError();
}

extern "C" cudaError_t tsr__cuda_scale_f32(float *x, size_t n, float alpha, cudaStream_t stream)
{
    return launch_scale(x, n, alpha, stream);
}

extern "C" cudaError_t tsr__cuda_scale_bf16(void *x, size_t n, float alpha, cudaStream_t stream)
{
    return launch_scale(static_cast<__nv_bfloat16 *>(x), n, alpha, stream);
}

extern "C" cudaError_t tsr__cuda_cast_f32_bf16(const float *src, void *dst, size_t n, cudaStream_t stream)
{
    return launch_cast(src, static_cast<__nv_bfloat16 *>(dst), n, stream);
}

extern "C" cudaError_t tsr__cuda_cast_bf16_f32(const void *src, float *dst, size_t n, cudaStream_t stream)
{
    return launch_cast(static_cast<const __nv_bfloat16 *>(src), dst, n, stream);
}

extern "C" cudaError_t tsr__cuda_copy(void *dst, const void *src, size_t bytes, cudaStream_t stream)
{
    if (bytes == 0 || dst == src)
        return cudaSuccess;
    return cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, stream);
}
