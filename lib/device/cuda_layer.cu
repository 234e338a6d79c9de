// cuda_layer.cu: CUDA kernels of the layer operations of tessera/kernels.h (layernorm, whole
// or split into column blocks, GELU, add, strided axpby, bias gradient, embeddings,
// cross-entropy over vocabulary blocks). Each is templated on the element type (float,
// __nv_bfloat16) with fp32 math inside, and on VEC, the elements one thread moves at once:
// 16 bytes when every pointer is 16-byte aligned and every row a whole number of 16-byte
// packs, else 1 (the scalar path; no size is assumed to divide anything). Loops are
// grid-stride, so grids are capped. tests/emu/test_emu_layer_optim.cc checks each against
// references in double on the CPU emulation, tests/test_kernels_layer.c against its CPU
// twin in cpu_layer.c on a GPU.
//
// Determinism: the embedding backward is deterministic (each dwte row is summed by one warp
// in position order, each dwpe value by one thread), as are the row statistics of the
// split layernorm and of the cross-entropy (one warp or one block a row, fixed shuffle
// trees). The layernorm backward's dgamma and dbeta and the bias gradient are not: their
// per-block column sums meet in fp32 atomicAdd, so their last bits can vary from run to run
// (dx cannot).
#include <math.h>
#include <stdint.h>

#include "device/cuda_launch.h"
#include "device/cuda_layer.h"

static constexpr int WARP = 32;
static constexpr unsigned FULL_MASK = 0xffffffffu;
static constexpr unsigned GRID_MAX = 65535; // blocks of a grid-stride launch, at most

// ---------------------------------------------------------------------------------------
// Element access.

__device__ inline float to_float(float v) { return v; }
__device__ inline float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T> __device__ inline T from_float(float v);
template <> __device__ inline float from_float<float>(float v) { return v; }
template <> __device__ inline __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16(v); }

// N elements moved as one aligned load or store (128 bits when N * sizeof(T) is 16).
template <typename T, int N> struct alignas(sizeof(T) * N) Pack {
    T v[N];
};

template <int N, typename T> __device__ inline void load(const T *p, float (&out)[N])
{
    const Pack<T, N> pk = *reinterpret_cast<const Pack<T, N> *>(p);
    for (int e = 0; e < N; e++)
        out[e] = to_float(pk.v[e]);
}

template <int N, typename T> __device__ inline void store(T *p, const float (&in)[N])
{
    Pack<T, N> pk;
    for (int e = 0; e < N; e++)
        pk.v[e] = from_float<T>(in[e]);
    *reinterpret_cast<Pack<T, N> *>(p) = pk;
}

// Elements of T in a 16-byte pack.
template <typename T> static constexpr int vec16() { return (int)(16 / sizeof(T)); }

static bool aligned16(const void *p) { return ((uintptr_t)p & 15u) == 0; }

// Blocks for `work` items at `per_block` a block, at least 1, at most `cap`.
static unsigned blocks_for(size_t work, size_t per_block, unsigned cap)
{
    size_t b = (work + per_block - 1) / per_block;
    return b < 1 ? 1u : b > cap ? cap : (unsigned)b;
}

// Butterfly sums leave every lane the same bits: each level adds the same two values.
__device__ inline float warp_sum(float v)
{
    for (int off = WARP / 2; off > 0; off /= 2)
        v += __shfl_xor_sync(FULL_MASK, v, off);
    return v;
}

__device__ inline int warp_or(int v)
{
    for (int off = WARP / 2; off > 0; off /= 2)
        v |= __shfl_xor_sync(FULL_MASK, v, off);
    return v;
}

// ---------------------------------------------------------------------------------------
// LayerNorm. One warp per row (warp-uniform row loop, so full-mask shuffles are safe); the
// row is read three times (mean, variance about the mean, output), the last two mostly
// from L1/L2. The variance is two-pass in fp32: no cancellation for rows far from zero.
// The split kernels (a row's columns in blocks on several ranks) are the same row loops
// with the row sums going out to, or coming in from, the caller's all-reduce.

static constexpr int LN_WARPS = 8; // rows per block

// The grid-stride row loop of the layernorm kernels: warp w of block b takes row
// b LN_WARPS + w, then every gridDim.x LN_WARPS-th row after it.
#define LN_ROWS(row, rows)                                                                                     \
    for (long long row = (long long)blockIdx.x * LN_WARPS + threadIdx.x / WARP; row < (rows);                \
         row += (long long)gridDim.x * LN_WARPS)

// Sum of a row's x and, about their mean, of (x - mean)^2; every lane gets both.
template <int VEC, typename T>
__device__ inline void ln_row_moments(int lane, int cols, const T *xr, float &sum, float &sq)
{
    float s = 0.0f;
    for (int c = lane * VEC; c < cols; c += WARP * VEC) {
        float v[VEC];
        load<VEC>(xr + c, v);
        for (int e = 0; e < VEC; e++)
            s += v[e];
    }
    sum = warp_sum(s);
    const float m = sum / (float)cols;
    float q = 0.0f;
    for (int c = lane * VEC; c < cols; c += WARP * VEC) {
        float v[VEC];
        load<VEC>(xr + c, v);
        for (int e = 0; e < VEC; e++)
            q += (v[e] - m) * (v[e] - m);
    }
    sq = warp_sum(q);
}

// y = (x - m) rs gamma + beta over a row.
template <int VEC, typename T>
__device__ inline void ln_normalize_row(int lane, int cols, const T *xr, const T *gamma, const T *beta, float m,
                                        float rs, T *yr)
{
    for (int c = lane * VEC; c < cols; c += WARP * VEC) {
        float v[VEC], g[VEC], b[VEC], out[VEC];
        load<VEC>(xr + c, v);
        load<VEC>(gamma + c, g);
        load<VEC>(beta + c, b);
        for (int e = 0; e < VEC; e++)
            out[e] = (v[e] - m) * rs * g[e] + b[e];
        store<VEC>(yr + c, out);
    }
}

// Sums over a row of g = dy gamma and of g xhat; every lane gets both.
template <int VEC, typename T>
__device__ inline void ln_grad_sums(int lane, int cols, const T *dyr, const T *xr, const T *gamma, float m, float rs,
                                    float &sg, float &sgx)
{
    float a = 0.0f, b = 0.0f;
    for (int c = lane * VEC; c < cols; c += WARP * VEC) {
        float d[VEC], v[VEC], g[VEC];
        load<VEC>(dyr + c, d);
        load<VEC>(xr + c, v);
        load<VEC>(gamma + c, g);
        for (int e = 0; e < VEC; e++) {
            const float gg = d[e] * g[e];
            a += gg;
            b += gg * ((v[e] - m) * rs);
        }
    }
    sg = warp_sum(a);
    sgx = warp_sum(b);
}

// Over a row: dx += rs (g - mg - xhat mgx) (DX), from the row means mg, mgx of g and g xhat;
// pg += dy xhat and pb += dy (DW; shared or global fp32, by atomicAdd).
template <int VEC, bool DX, bool DW, typename T>
__device__ inline void ln_backward_row(int lane, int cols, const T *dyr, const T *xr, const T *gamma, float m,
                                       float rs, float mg, float mgx, T *dxr, float *pg, float *pb)
{
    for (int c = lane * VEC; c < cols; c += WARP * VEC) {
        float d[VEC], v[VEC], g[VEC], o[VEC];
        load<VEC>(dyr + c, d);
        load<VEC>(xr + c, v);
        if constexpr (DX) {
            load<VEC>(gamma + c, g);
            load<VEC>(dxr + c, o);
        }
        for (int e = 0; e < VEC; e++) {
            const float xhat = (v[e] - m) * rs;
            if constexpr (DX)
                o[e] += rs * (d[e] * g[e] - mg - xhat * mgx);
            if constexpr (DW) {
                atomicAdd(&pg[c + e], d[e] * xhat);
                atomicAdd(&pb[c + e], d[e]);
            }
        }
        if constexpr (DX)
            store<VEC>(dxr + c, o);
    }
}

// x, y: rows×cols; gamma, beta: cols; mean, rstd: rows (fp32).
template <typename T, int VEC>
__global__ static void layernorm_forward_kernel(int rows, int cols, const T *x, const T *gamma, const T *beta,
                                                float eps, T *y, float *mean, float *rstd)
{
    const int lane = threadIdx.x % WARP;
    LN_ROWS(row, rows)
    {
        const T *xr = x + (size_t)row * cols;
        float sum, sq;
        ln_row_moments<VEC>(lane, cols, xr, sum, sq);
        const float m = sum / (float)cols, rs = 1.0f / sqrtf(sq / (float)cols + eps);
        ln_normalize_row<VEC>(lane, cols, xr, gamma, beta, m, rs, y + (size_t)row * cols);
        if (lane == 0) {
            mean[row] = m;
            rstd[row] = rs;
        }
    }
}

// stats[3 row..3 row+2] = (S, Q, S m) of the block x (rows×cols), S m formed in double from
// S as stored and the error of its rounding carried in Q's place: see tessera/kernels.h.
template <typename T, int VEC>
__global__ static void layernorm_stats_kernel(int rows, int cols, const T *x, float *stats)
{
    const int lane = threadIdx.x % WARP;
    LN_ROWS(row, rows)
    {
        float sum, sq;
        ln_row_moments<VEC>(lane, cols, x + (size_t)row * cols, sum, sq);
        if (lane == 0) {
            const double sm = (double)sum * sum / cols;
            stats[3 * row] = sum;
            stats[3 * row + 1] = (float)(sq + (sm - (float)sm));
            stats[3 * row + 2] = (float)sm;
        }
    }
}

// y = (x - mean) rstd gamma + beta on the block, mean and rstd from the stats summed over
// the row's blocks (width values in all). The variance (Q + S m)/width - mean^2 cancels
// about mean^2/variance of its digits, so it is formed in double (a few operations a row).
template <typename T, int VEC>
__global__ static void layernorm_apply_kernel(int rows, int cols, int width, const T *x, const T *gamma,
                                              const T *beta, float eps, const float *stats, T *y, float *mean,
                                              float *rstd)
{
    const int lane = threadIdx.x % WARP;
    LN_ROWS(row, rows)
    {
        const float *st = stats + 3 * row;
        const double md = (double)st[0] / width, var = ((double)st[1] + st[2]) / width - md * md;
        const float m = (float)md, rs = (float)(1.0 / sqrt((var > 0 ? var : 0.0) + eps));
        ln_normalize_row<VEC>(lane, cols, x + (size_t)row * cols, gamma, beta, m, rs, y + (size_t)row * cols);
        if (lane == 0) {
            mean[row] = m;
            rstd[row] = rs;
        }
    }
}

// dy, x, dx: rows×cols (dx +=, when DX); gamma: cols; mean, rstd: rows; dgamma, dbeta: cols
// fp32 (+=, when DW). With SHARED, a block sums its rows' dgamma and dbeta in dynamic shared
// memory (2 cols floats) and adds them to the outputs with one atomicAdd per column at the
// end; without (rows too wide for shared memory) every row's terms go straight to global
// atomics. Without DX the row sums are not needed, and the row is read once.
template <typename T, int VEC, bool DX, bool DW, bool SHARED>
__global__ static void layernorm_backward_kernel(int rows, int cols, const T *dy, const T *x, const T *gamma,
                                                 const float *mean, const float *rstd, T *dx, float *dgamma,
                                                 float *dbeta)
{
    TSR_DYNAMIC_SMEM(float, smem);
    float *pg = SHARED ? smem : dgamma, *pb = SHARED ? smem + cols : dbeta;
    if constexpr (SHARED) {
        for (int c = threadIdx.x; c < 2 * cols; c += blockDim.x)
            smem[c] = 0.0f;
        __syncthreads();
    }
    const int lane = threadIdx.x % WARP;
    LN_ROWS(row, rows)
    {
        const size_t off = (size_t)row * cols;
        const float m = mean[row], rs = rstd[row];
        float sg = 0.0f, sgx = 0.0f;
        if constexpr (DX)
            ln_grad_sums<VEC>(lane, cols, dy + off, x + off, gamma, m, rs, sg, sgx);
        ln_backward_row<VEC, DX, DW>(lane, cols, dy + off, x + off, gamma, m, rs, sg / (float)cols,
                                     sgx / (float)cols, dx + off, pg, pb);
    }
    if constexpr (SHARED) {
        __syncthreads();
        for (int c = threadIdx.x; c < cols; c += blockDim.x) {
            atomicAdd(&dgamma[c], pg[c]);
            atomicAdd(&dbeta[c], pb[c]);
        }
    }
}

// stats[2 row], stats[2 row+1] = sums over the block of g and g xhat.
template <typename T, int VEC>
__global__ static void layernorm_backward_stats_kernel(int rows, int cols, const T *dy, const T *x, const T *gamma,
                                                       const float *mean, const float *rstd, float *stats)
{
    const int lane = threadIdx.x % WARP;
    LN_ROWS(row, rows)
    {
        const size_t off = (size_t)row * cols;
        float sg, sgx;
        ln_grad_sums<VEC>(lane, cols, dy + off, x + off, gamma, mean[row], rstd[row], sg, sgx);
        if (lane == 0) {
            stats[2 * row] = sg;
            stats[2 * row + 1] = sgx;
        }
    }
}

// dx += rstd (g - sum(g)/width - xhat sum(g xhat)/width) on the block, from summed stats.
template <typename T, int VEC>
__global__ static void layernorm_backward_apply_kernel(int rows, int cols, int width, const T *dy, const T *x,
                                                       const T *gamma, const float *mean, const float *rstd,
                                                       const float *stats, T *dx)
{
    const int lane = threadIdx.x % WARP;
    LN_ROWS(row, rows)
    {
        const size_t off = (size_t)row * cols;
        ln_backward_row<VEC, true, false>(lane, cols, dy + off, x + off, gamma, mean[row], rstd[row],
                                          stats[2 * row] / (float)width, stats[2 * row + 1] / (float)width,
                                          dx + off, nullptr, nullptr);
    }
}

static unsigned ln_blocks(int rows) { return blocks_for((size_t)rows, LN_WARPS, GRID_MAX); }

template <typename T>
static cudaError_t layernorm_forward(int rows, int cols, const T *x, const T *gamma, const T *beta, float eps, T *y,
                                     float *mean, float *rstd, cudaStream_t stream)
{
    constexpr int V = vec16<T>();
    if (cols % V == 0 && aligned16(x) && aligned16(gamma) && aligned16(beta) && aligned16(y)) {
        auto kernel = layernorm_forward_kernel<T, V>;
        TSR_LAUNCH(kernel, ln_blocks(rows), LN_WARPS * WARP, 0, stream, rows, cols, x, gamma, beta, eps, y, mean,
                   rstd);
    } else {
        auto kernel = layernorm_forward_kernel<T, 1>;
        TSR_LAUNCH(kernel, ln_blocks(rows), LN_WARPS * WARP, 0, stream, rows, cols, x, gamma, beta, eps, y, mean,
                   rstd);
    }
    return cudaGetLastError();
}

template <typename T, int VEC, bool DX, bool DW>
static void launch_layernorm_backward(int rows, int cols, const T *dy, const T *x, const T *gamma, const float *mean,
                                      const float *rstd, T *dx, float *dgamma, float *dbeta, cudaStream_t stream)
{
    if constexpr (!DW) {
        auto kernel = layernorm_backward_kernel<T, VEC, DX, false, false>;
        TSR_LAUNCH(kernel, ln_blocks(rows), LN_WARPS * WARP, 0, stream, rows, cols, dy, x, gamma, mean, rstd, dx,
                   dgamma, dbeta);
    } else {
        // 512 blocks: half an H100's threads resident, and 512 atomics per column at the end.
        const unsigned blocks = blocks_for((size_t)rows, LN_WARPS, 512);
        const size_t smem = 2 * (size_t)cols * sizeof(float);
        if (smem <= 48 * 1024) { // the dynamic shared memory every launch may take without opting in
            auto kernel = layernorm_backward_kernel<T, VEC, DX, true, true>;
            TSR_LAUNCH(kernel, blocks, LN_WARPS * WARP, smem, stream, rows, cols, dy, x, gamma, mean, rstd, dx,
                       dgamma, dbeta);
        } else {
            auto kernel = layernorm_backward_kernel<T, VEC, DX, true, false>;
            TSR_LAUNCH(kernel, blocks, LN_WARPS * WARP, 0, stream, rows, cols, dy, x, gamma, mean, rstd, dx, dgamma,
                       dbeta);
        }
    }
}

// The outputs present pick the instantiation: dx alone, dgamma and dbeta alone, or all three.
template <typename T, int VEC>
static void layernorm_backward_outputs(int rows, int cols, const T *dy, const T *x, const T *gamma, const float *mean,
                                       const float *rstd, T *dx, float *dgamma, float *dbeta, cudaStream_t stream)
{
    if (!dgamma)
        launch_layernorm_backward<T, VEC, true, false>(rows, cols, dy, x, gamma, mean, rstd, dx, dgamma, dbeta,
                                                       stream);
    else if (!dx)
        launch_layernorm_backward<T, VEC, false, true>(rows, cols, dy, x, gamma, mean, rstd, dx, dgamma, dbeta,
                                                       stream);
    else
        launch_layernorm_backward<T, VEC, true, true>(rows, cols, dy, x, gamma, mean, rstd, dx, dgamma, dbeta,
                                                      stream);
}

template <typename T>
static cudaError_t layernorm_backward(int rows, int cols, const T *dy, const T *x, const T *gamma, const float *mean,
                                      const float *rstd, T *dx, float *dgamma, float *dbeta, cudaStream_t stream)
{
    constexpr int V = vec16<T>();
    if (cols % V == 0 && aligned16(dy) && aligned16(x) && aligned16(gamma) && aligned16(dx))
        layernorm_backward_outputs<T, V>(rows, cols, dy, x, gamma, mean, rstd, dx, dgamma, dbeta, stream);
    else
        layernorm_backward_outputs<T, 1>(rows, cols, dy, x, gamma, mean, rstd, dx, dgamma, dbeta, stream);
    return cudaGetLastError();
}

template <typename T>
static cudaError_t layernorm_stats(int rows, int cols, const T *x, float *stats, cudaStream_t stream)
{
    constexpr int V = vec16<T>();
    if (cols % V == 0 && aligned16(x)) {
        auto kernel = layernorm_stats_kernel<T, V>;
        TSR_LAUNCH(kernel, ln_blocks(rows), LN_WARPS * WARP, 0, stream, rows, cols, x, stats);
    } else {
        auto kernel = layernorm_stats_kernel<T, 1>;
        TSR_LAUNCH(kernel, ln_blocks(rows), LN_WARPS * WARP, 0, stream, rows, cols, x, stats);
    }
    return cudaGetLastError();
}

template <typename T>
static cudaError_t layernorm_apply(int rows, int cols, int width, const T *x, const T *gamma, const T *beta,
                                   float eps, const float *stats, T *y, float *mean, float *rstd, cudaStream_t stream)
{
    constexpr int V = vec16<T>();
    if (cols % V == 0 && aligned16(x) && aligned16(gamma) && aligned16(beta) && aligned16(y)) {
        auto kernel = layernorm_apply_kernel<T, V>;
        TSR_LAUNCH(kernel, ln_blocks(rows), LN_WARPS * WARP, 0, stream, rows, cols, width, x, gamma, beta, eps, stats,
                   y, mean, rstd);
    } else {
        auto kernel = layernorm_apply_kernel<T, 1>;
        TSR_LAUNCH(kernel, ln_blocks(rows), LN_WARPS * WARP, 0, stream, rows, cols, width, x, gamma, beta, eps, stats,
                   y, mean, rstd);
    }
    return cudaGetLastError();
}

template <typename T>
static cudaError_t layernorm_backward_stats(int rows, int cols, const T *dy, const T *x, const T *gamma,
                                            const float *mean, const float *rstd, float *stats, cudaStream_t stream)
{
    constexpr int V = vec16<T>();
    if (cols % V == 0 && aligned16(dy) && aligned16(x) && aligned16(gamma)) {
        auto kernel = layernorm_backward_stats_kernel<T, V>;
        TSR_LAUNCH(kernel, ln_blocks(rows), LN_WARPS * WARP, 0, stream, rows, cols, dy, x, gamma, mean, rstd, stats);
    } else {
        auto kernel = layernorm_backward_stats_kernel<T, 1>;
        TSR_LAUNCH(kernel, ln_blocks(rows), LN_WARPS * WARP, 0, stream, rows, cols, dy, x, gamma, mean, rstd, stats);
    }
    return cudaGetLastError();
}

template <typename T>
static cudaError_t layernorm_backward_apply(int rows, int cols, int width, const T *dy, const T *x, const T *gamma,
                                            const float *mean, const float *rstd, const float *stats, T *dx,
                                            cudaStream_t stream)
{
    constexpr int V = vec16<T>();
    if (cols % V == 0 && aligned16(dy) && aligned16(x) && aligned16(gamma) && aligned16(dx)) {
        auto kernel = layernorm_backward_apply_kernel<T, V>;
        TSR_LAUNCH(kernel, ln_blocks(rows), LN_WARPS * WARP, 0, stream, rows, cols, width, dy, x, gamma, mean, rstd,
                   stats, dx);
    } else {
        auto kernel = layernorm_backward_apply_kernel<T, 1>;
        TSR_LAUNCH(kernel, ln_blocks(rows), LN_WARPS * WARP, 0, stream, rows, cols, width, dy, x, gamma, mean, rstd,
                   stats, dx);
    }
    return cudaGetLastError();
}

// ---------------------------------------------------------------------------------------
// Element-wise maps: GELU forward and backward, add. The output may be an input: each
// element is read before it is written, by the same thread.

// sqrt(2/pi), the constant of the tanh form of GELU (as in cpu_layer.c and lib/tp/norm.c).
#define GELU_SCALE 0.7978845608028654
#define GELU_CUBE 0.044715

struct GeluForward {
    __device__ float operator()(float v) const
    {
        return 0.5f * v * (1.0f + tanhf((float)GELU_SCALE * (v + (float)GELU_CUBE * v * v * v)));
    }
};

struct GeluBackward { // (x, dy) -> dy gelu'(x)
    __device__ float operator()(float v, float d) const
    {
        const float t = tanhf((float)GELU_SCALE * (v + (float)GELU_CUBE * v * v * v));
        const float dt = (float)GELU_SCALE * (1.0f + 3.0f * (float)GELU_CUBE * v * v) * (1.0f - t * t);
        return d * (0.5f * (1.0f + t) + 0.5f * v * dt);
    }
};

struct Add {
    __device__ float operator()(float a, float b) const { return a + b; }
};

static constexpr int MAP_THREADS = 256;
static constexpr unsigned MAP_GRID_MAX = 2048;

// y[i] = op(x[i]), n elements: whole packs, then the n % VEC left over.
template <typename T, int VEC, typename Op> __global__ static void map1_kernel(size_t n, const T *x, T *y, Op op)
{
    const size_t stride = (size_t)gridDim.x * blockDim.x, tid = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    const size_t packs = n / VEC;
    for (size_t p = tid; p < packs; p += stride) {
        float v[VEC];
        load<VEC>(x + p * VEC, v);
        for (int e = 0; e < VEC; e++)
            v[e] = op(v[e]);
        store<VEC>(y + p * VEC, v);
    }
    for (size_t i = packs * VEC + tid; i < n; i += stride)
        y[i] = from_float<T>(op(to_float(x[i])));
}

// y[i] = op(a[i], b[i]), n elements.
template <typename T, int VEC, typename Op>
__global__ static void map2_kernel(size_t n, const T *a, const T *b, T *y, Op op)
{
    const size_t stride = (size_t)gridDim.x * blockDim.x, tid = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    const size_t packs = n / VEC;
    for (size_t p = tid; p < packs; p += stride) {
        float u[VEC], v[VEC];
        load<VEC>(a + p * VEC, u);
        load<VEC>(b + p * VEC, v);
        for (int e = 0; e < VEC; e++)
            u[e] = op(u[e], v[e]);
        store<VEC>(y + p * VEC, u);
    }
    for (size_t i = packs * VEC + tid; i < n; i += stride)
        y[i] = from_float<T>(op(to_float(a[i]), to_float(b[i])));
}

template <typename T, typename Op> static cudaError_t map1(size_t n, const T *x, T *y, cudaStream_t stream)
{
    constexpr int V = vec16<T>();
    if (aligned16(x) && aligned16(y)) {
        auto kernel = map1_kernel<T, V, Op>;
        TSR_LAUNCH(kernel, blocks_for(n / V + 1, MAP_THREADS, MAP_GRID_MAX), MAP_THREADS, 0, stream, n, x, y, Op());
    } else {
        auto kernel = map1_kernel<T, 1, Op>;
        TSR_LAUNCH(kernel, blocks_for(n, MAP_THREADS, MAP_GRID_MAX), MAP_THREADS, 0, stream, n, x, y, Op());
    }
    return cudaGetLastError();
}

template <typename T, typename Op>
static cudaError_t map2(size_t n, const T *a, const T *b, T *y, cudaStream_t stream)
{
    constexpr int V = vec16<T>();
    if (aligned16(a) && aligned16(b) && aligned16(y)) {
        auto kernel = map2_kernel<T, V, Op>;
        TSR_LAUNCH(kernel, blocks_for(n / V + 1, MAP_THREADS, MAP_GRID_MAX), MAP_THREADS, 0, stream, n, a, b, y,
                   Op());
    } else {
        auto kernel = map2_kernel<T, 1, Op>;
        TSR_LAUNCH(kernel, blocks_for(n, MAP_THREADS, MAP_GRID_MAX), MAP_THREADS, 0, stream, n, a, b, y, Op());
    }
    return cudaGetLastError();
}

// ---------------------------------------------------------------------------------------
// Bias gradient: db += column sums of dy. Block (x, y): 32 lanes × VEC columns, BG_STRIPES
// warps taking every BG_STRIPES-th row of the block's row share; the warps' sums are added
// in a fixed order in shared memory, and blocks of the same columns meet in atomicAdd
// (a plain add when there is one row share: then the result is deterministic).

static constexpr int BG_STRIPES = 8;

template <typename T, int VEC>
__global__ static void bias_grad_kernel(int rows, int cols, const T *dy, int ld, float *db)
{
    __shared__ float part[BG_STRIPES][WARP * VEC];
    const int lane = threadIdx.x % WARP, stripe = threadIdx.x / WARP;
    const long long c = ((long long)blockIdx.x * WARP + lane) * VEC;
    float acc[VEC];
    for (int e = 0; e < VEC; e++)
        acc[e] = 0.0f;
    if (c < cols)
        for (long long r = (long long)blockIdx.y * BG_STRIPES + stripe; r < rows;
             r += (long long)gridDim.y * BG_STRIPES) {
            float v[VEC];
            load<VEC>(dy + (size_t)r * ld + c, v);
            for (int e = 0; e < VEC; e++)
                acc[e] += v[e];
        }
    for (int e = 0; e < VEC; e++)
        part[stripe][lane * VEC + e] = acc[e];
    __syncthreads();
    if (stripe == 0 && c < cols)
        for (int e = 0; e < VEC; e++) {
            float s = 0.0f;
            for (int k = 0; k < BG_STRIPES; k++)
                s += part[k][lane * VEC + e];
            if (gridDim.y == 1)
                db[c + e] += s;
            else
                atomicAdd(&db[c + e], s);
        }
}

template <typename T, int VEC>
static void launch_bias_grad(int rows, int cols, const T *dy, int ld, float *db, cudaStream_t stream)
{
    const unsigned gx = blocks_for((size_t)cols, (size_t)WARP * VEC, 0x7fffffffu);
    // At least 16 rows a thread, and about 1024 blocks in all when there are rows enough.
    const unsigned gy = blocks_for((size_t)rows, (size_t)BG_STRIPES * 16, gx >= 1024 ? 1u : 1024u / gx);
    auto kernel = bias_grad_kernel<T, VEC>;
    TSR_LAUNCH(kernel, dim3(gx, gy), BG_STRIPES * WARP, 0, stream, rows, cols, dy, ld, db);
}

template <typename T>
static cudaError_t bias_grad(int rows, int cols, const T *dy, int ld, float *db, cudaStream_t stream)
{
    constexpr int V = vec16<T>();
    if (cols % V == 0 && ld % V == 0 && aligned16(dy))
        launch_bias_grad<T, V>(rows, cols, dy, ld, db, stream);
    else
        launch_bias_grad<T, 1>(rows, cols, dy, ld, db, stream);
    return cudaGetLastError();
}

// ---------------------------------------------------------------------------------------
// Strided axpby: dst = alpha src + beta dst over a rows×cols block, converting the element
// type on the way. One thread per pack of a row (a flattened grid-stride index, so narrow
// blocks still fill the grid); a pack is 16 bytes of the wider type (8 of a narrower one).
// READ: beta is nonzero (with beta 0, dst is not read: NaNs there do not spread).

template <typename S, typename D> static constexpr int axpby_vec()
{
    return (int)(16 / (sizeof(S) > sizeof(D) ? sizeof(S) : sizeof(D)));
}

static bool aligned_to(const void *p, size_t bytes) { return (uintptr_t)p % bytes == 0; }

template <typename S, typename D, int VEC, bool READ>
__global__ static void axpby_2d_kernel(int rows, int cols, float alpha, const S *src, int lds, float beta, D *dst,
                                       int ldd)
{
    const size_t stride = (size_t)gridDim.x * blockDim.x, per_row = (size_t)(cols / VEC),
                 total = (size_t)rows * per_row;
    for (size_t p = (size_t)blockIdx.x * blockDim.x + threadIdx.x; p < total; p += stride) {
        const size_t r = p / per_row, c = (p % per_row) * VEC;
        float s[VEC], d[VEC];
        load<VEC>(src + r * lds + c, s);
        if constexpr (READ) {
            load<VEC>(dst + r * ldd + c, d);
            for (int e = 0; e < VEC; e++)
                d[e] = alpha * s[e] + beta * d[e];
        } else {
            for (int e = 0; e < VEC; e++)
                d[e] = alpha * s[e];
        }
        store<VEC>(dst + r * ldd + c, d);
    }
}

template <typename S, typename D, int VEC>
static void launch_axpby_2d(int rows, int cols, float alpha, const S *src, int lds, float beta, D *dst, int ldd,
                            cudaStream_t stream)
{
    const unsigned blocks = blocks_for((size_t)rows * (size_t)(cols / VEC), MAP_THREADS, MAP_GRID_MAX);
    if (beta != 0.0f) {
        auto kernel = axpby_2d_kernel<S, D, VEC, true>;
        TSR_LAUNCH(kernel, blocks, MAP_THREADS, 0, stream, rows, cols, alpha, src, lds, beta, dst, ldd);
    } else {
        auto kernel = axpby_2d_kernel<S, D, VEC, false>;
        TSR_LAUNCH(kernel, blocks, MAP_THREADS, 0, stream, rows, cols, alpha, src, lds, beta, dst, ldd);
    }
}

template <typename S, typename D>
static cudaError_t axpby_2d(int rows, int cols, float alpha, const S *src, int lds, float beta, D *dst, int ldd,
                            cudaStream_t stream)
{
    constexpr int V = axpby_vec<S, D>();
    if (cols % V == 0 && lds % V == 0 && ldd % V == 0 && aligned_to(src, V * sizeof(S)) &&
        aligned_to(dst, V * sizeof(D)))
        launch_axpby_2d<S, D, V>(rows, cols, alpha, src, lds, beta, dst, ldd, stream);
    else
        launch_axpby_2d<S, D, 1>(rows, cols, alpha, src, lds, beta, dst, ldd, stream);
    return cudaGetLastError();
}

// ---------------------------------------------------------------------------------------
// Embeddings.

// Whether token id `tok` lies in the vocabulary block [v0, v0 + nv), and its row there: in
// unsigned arithmetic an id below v0 wraps past every row of the block.
__device__ inline bool in_block(int32_t tok, int v0, int nv, unsigned &row)
{
    row = (unsigned)tok - (unsigned)v0;
    return row < (unsigned)nv;
}

// out[i] = wte[tokens[i] - v0] + wpe[i mod seq] for i < n = seqs seq; one thread per pack. A
// token outside the block [v0, v0 + nv) adds nothing, nor does a NULL wte or wpe.
template <typename T, int VEC>
__global__ static void embedding_forward_kernel(const int32_t *tokens, int seq, int C, size_t n, int v0, int nv,
                                                const T *wte, const T *wpe, T *out)
{
    const size_t stride = (size_t)gridDim.x * blockDim.x, per_row = (size_t)(C / VEC), total = n * per_row;
    for (size_t p = (size_t)blockIdx.x * blockDim.x + threadIdx.x; p < total; p += stride) {
        const size_t i = p / per_row, c = (p % per_row) * VEC;
        float w[VEC], q[VEC];
        unsigned id;
        if (wte && in_block(tokens[i], v0, nv, id))
            load<VEC>(wte + (size_t)id * C + c, w);
        else
            for (int e = 0; e < VEC; e++)
                w[e] = 0.0f;
        if (wpe) {
            load<VEC>(wpe + (i % seq) * C + c, q);
            for (int e = 0; e < VEC; e++)
                w[e] += q[e];
        }
        store<VEC>(out + i * C + c, w);
    }
}

// dwpe[t] += the sum over sequences s of dout[s seq + t]; one thread per pack of a
// position's row, summing from zero in sequence order (as the CPU does: the same bits in fp32).
template <typename T, int VEC>
__global__ static void embedding_dwpe_kernel(int seqs, int seq, int C, const T *dout, float *dwpe)
{
    const size_t stride = (size_t)gridDim.x * blockDim.x, per_row = (size_t)(C / VEC), total = (size_t)seq * per_row;
    for (size_t p = (size_t)blockIdx.x * blockDim.x + threadIdx.x; p < total; p += stride) {
        const size_t t = p / per_row, c = (p % per_row) * VEC;
        float acc[VEC];
        for (int e = 0; e < VEC; e++)
            acc[e] = 0.0f;
        for (int s = 0; s < seqs; s++) {
            float v[VEC];
            load<VEC>(dout + ((size_t)s * seq + t) * C + c, v);
            for (int e = 0; e < VEC; e++)
                acc[e] += v[e];
        }
        for (int e = 0; e < VEC; e++)
            dwpe[t * C + c + e] += acc[e];
    }
}

// dwte, deterministic and sort-free: one warp per position i. The warp goes on only if i's
// token is in the vocabulary block [v0, v0 + nv) and i is the first occurrence of that token
// (a scan of positions [0, i)); it then owns the token's
// dwte row, collects the positions of every occurrence in order (a scan of [i, n)), sums
// their dout rows from zero in position order and adds the sum once, as the CPU does (so
// fp32 gives the same bits). Lanes hold channels; a pass covers WARP × VEC × DWTE_PACKS
// channels and wider rows take several passes.
//
// Cost: the first-occurrence scans read about n²/2 token ids in all (n = 16k tokens: 134M
// ids, 4 a lane per load, out of L1/L2), the collecting scans (n - i) ids per distinct
// token and pass, and the sums read dout once. A token's sum is a serial chain over its
// occurrences (DWTE_UNROLL rows in flight at once), so the most frequent token sets the
// tail. Estimated (not measured: written without a GPU) for GPT-2 on an H100, n = 16k,
// C = 768 bf16: tens of microseconds of scanning, and a tail of about 100 us for a token
// occurring some 600 times; the scans grow as n², so much larger batches per call would
// want a sort- or bucket-based variant. A rank of a vocabulary-parallel group scans only
// for the tokens of its block.
static constexpr int DWTE_WARPS = 8;  // positions per block
static constexpr int DWTE_CHUNK = 4 * WARP; // positions per warp step: 4 token ids a lane
static constexpr int DWTE_PACKS = 2;  // packs a lane per pass
static constexpr int DWTE_UNROLL = 4; // dout rows loaded before they are added

// Token ids at positions j..j+3 (j a multiple of 4); those at or past `end` read as -1,
// which is no token. VT: tokens is 16-byte aligned, so whole quads load as one.
template <bool VT> __device__ inline void load_tokens(const int32_t *tokens, int j, int end, int32_t (&t)[4])
{
    if (VT && j + 4 <= end) {
        const Pack<int32_t, 4> q = *reinterpret_cast<const Pack<int32_t, 4> *>(tokens + j);
        for (int e = 0; e < 4; e++)
            t[e] = q.v[e];
    } else {
        for (int e = 0; e < 4; e++)
            t[e] = j + e < end ? tokens[j + e] : -1;
    }
}

template <typename T, int VEC, bool VT>
__global__ static void embedding_dwte_kernel(const int32_t *tokens, int n, int C, int v0, int nv, const T *dout,
                                             float *dwte)
{
    __shared__ int list[DWTE_WARPS][DWTE_CHUNK]; // a warp's matching positions of one step
    const int lane = threadIdx.x % WARP, w = threadIdx.x / WARP;
    for (int i = blockIdx.x * DWTE_WARPS + w; i < n; i += gridDim.x * DWTE_WARPS) {
        const int32_t tok = tokens[i];
        unsigned id;
        if (!in_block(tok, v0, nv, id))
            continue;
        // Seen before i? A warp vote every 4 steps, so repeated tokens stop early.
        int seen = 0;
        for (int j0 = 0; j0 < i && !seen; j0 += 4 * DWTE_CHUNK) {
            for (int k = 0; k < 4; k++) {
                int32_t t[4];
                load_tokens<VT>(tokens, j0 + k * DWTE_CHUNK + lane * 4, i, t);
                for (int e = 0; e < 4; e++)
                    seen |= t[e] == tok;
            }
            seen = warp_or(seen);
        }
        if (seen)
            continue;
        float *dst = dwte + (size_t)id * C;
        for (int c0 = 0; c0 < C; c0 += WARP * VEC * DWTE_PACKS) {
            float acc[DWTE_PACKS][VEC];
            for (int q = 0; q < DWTE_PACKS; q++)
                for (int e = 0; e < VEC; e++)
                    acc[q][e] = 0.0f;
            for (int j0 = i / DWTE_CHUNK * DWTE_CHUNK; j0 < n; j0 += DWTE_CHUNK) {
                const int j = j0 + lane * 4;
                int32_t t[4];
                load_tokens<VT>(tokens, j, n, t);
                int mine = 0;
                for (int e = 0; e < 4; e++)
                    mine += t[e] == tok && j + e >= i;
                // Inclusive prefix sum over lanes: where this lane's matches go in the list.
                int incl = mine;
                for (int off = 1; off < WARP; off *= 2) {
                    const int up = __shfl_up_sync(FULL_MASK, incl, off);
                    if (lane >= off)
                        incl += up;
                }
                const int found = __shfl_sync(FULL_MASK, incl, WARP - 1);
                int at = incl - mine;
                for (int e = 0; e < 4; e++)
                    if (t[e] == tok && j + e >= i)
                        list[w][at++] = j + e;
                __syncwarp();
                for (int k = 0; k < found; k += DWTE_UNROLL) {
                    Pack<T, VEC> rows[DWTE_UNROLL][DWTE_PACKS];
                    for (int u = 0; u < DWTE_UNROLL; u++)
                        for (int q = 0; q < DWTE_PACKS; q++) {
                            const int c = c0 + (q * WARP + lane) * VEC;
                            if (k + u < found && c < C)
                                rows[u][q] = *reinterpret_cast<const Pack<T, VEC> *>(
                                    dout + (size_t)list[w][k + u] * C + c);
                            else
                                for (int e = 0; e < VEC; e++)
                                    rows[u][q].v[e] = from_float<T>(0.0f);
                        }
                    for (int u = 0; u < DWTE_UNROLL; u++)
                        if (k + u < found) // the same for every lane
                            for (int q = 0; q < DWTE_PACKS; q++)
                                for (int e = 0; e < VEC; e++)
                                    acc[q][e] += to_float(rows[u][q].v[e]);
                }
                __syncwarp(); // the list is read by all lanes before the next step rewrites it
            }
            for (int q = 0; q < DWTE_PACKS; q++) {
                const int c = c0 + (q * WARP + lane) * VEC;
                if (c < C)
                    for (int e = 0; e < VEC; e++)
                        dst[c + e] += acc[q][e];
            }
        }
    }
}

template <typename T>
static cudaError_t embedding_forward(const int32_t *tokens, int seqs, int seq, int C, int v0, int nv, const T *wte,
                                     const T *wpe, T *out, cudaStream_t stream)
{
    constexpr int V = vec16<T>();
    const size_t n = (size_t)seqs * seq;
    if (C % V == 0 && aligned16(wte) && aligned16(wpe) && aligned16(out)) {
        auto kernel = embedding_forward_kernel<T, V>;
        TSR_LAUNCH(kernel, blocks_for(n * (C / V), MAP_THREADS, MAP_GRID_MAX), MAP_THREADS, 0, stream, tokens, seq,
                   C, n, v0, nv, wte, wpe, out);
    } else {
        auto kernel = embedding_forward_kernel<T, 1>;
        TSR_LAUNCH(kernel, blocks_for(n * C, MAP_THREADS, MAP_GRID_MAX), MAP_THREADS, 0, stream, tokens, seq, C, n,
                   v0, nv, wte, wpe, out);
    }
    return cudaGetLastError();
}

// dwte or dwpe NULL: that kernel is not launched.
template <typename T, int VEC>
static void launch_embedding_backward(const int32_t *tokens, int seqs, int seq, int C, int v0, int nv, const T *dout,
                                      float *dwte, float *dwpe, cudaStream_t stream)
{
    const int n = seqs * seq; // at most 2^30, checked by the caller
    const unsigned blocks = blocks_for((size_t)n, DWTE_WARPS, GRID_MAX);
    if (dwte && aligned16(tokens)) {
        auto kernel = embedding_dwte_kernel<T, VEC, true>;
        TSR_LAUNCH(kernel, blocks, DWTE_WARPS * WARP, 0, stream, tokens, n, C, v0, nv, dout, dwte);
    } else if (dwte) {
        auto kernel = embedding_dwte_kernel<T, VEC, false>;
        TSR_LAUNCH(kernel, blocks, DWTE_WARPS * WARP, 0, stream, tokens, n, C, v0, nv, dout, dwte);
    }
    if (dwpe) {
        auto kernel = embedding_dwpe_kernel<T, VEC>;
        TSR_LAUNCH(kernel, blocks_for((size_t)seq * (C / VEC), MAP_THREADS, MAP_GRID_MAX), MAP_THREADS, 0, stream,
                   seqs, seq, C, dout, dwpe);
    }
}

template <typename T>
static cudaError_t embedding_backward(const int32_t *tokens, int seqs, int seq, int C, int v0, int nv, const T *dout,
                                      float *dwte, float *dwpe, cudaStream_t stream)
{
    constexpr int V = vec16<T>();
    if (C % V == 0 && aligned16(dout))
        launch_embedding_backward<T, V>(tokens, seqs, seq, C, v0, nv, dout, dwte, dwpe, stream);
    else
        launch_embedding_backward<T, 1>(tokens, seqs, seq, C, v0, nv, dout, dwte, dwpe, stream);
    return cudaGetLastError();
}

// ---------------------------------------------------------------------------------------
// Cross-entropy over vocabulary blocks, one block of threads a row in both kernels. The
// stats kernel reads its block of the row once, keeping a running (max, sum of exp(l - max))
// per thread with one rescale a pack, and combines them over the block. The finish kernel
// combines the parts' stats (every warp for itself, so no barrier), writes the loss and
// streams the row once, overwriting it with dscale (softmax - onehot).
//
// For one part the pair reads the row twice and writes it once, as the fused kernel it
// replaced did, but its second read comes from memory where the fused kernel's came partly
// from L2 (at worst a third more traffic). It makes up for it in instructions, which the
// fused kernel was close to bound by: exp(d) is taken as exp2f(d log2(e)), one FMUL or FFMA
// before MUFU.EX2 where expf adds a range reduction, and the finish kernel needs no
// rescaling. The PTX of the bf16 loops has 60 (stats) + 84 (finish) instructions a pack of
// 8, against 147 + 167 in the fused kernel's two loops. (Not timed: written without a GPU.)
// d = l - max carries at most one rounding, so the error exp2f adds, about |d| 2^-24
// relative, is below fp32 rounding for the terms that carry the sum.

static constexpr int CE_THREADS = 512;
static constexpr float LOG2E = 1.44269504088896341f;

// Fold k values into the running (m, s); -inf values add nothing.
__device__ inline void online_add(float &m, float &s, const float *v, int k)
{
    float pm = v[0];
    for (int e = 1; e < k; e++)
        pm = fmaxf(pm, v[e]);
    const float nm = fmaxf(m, pm);
    if (nm == -INFINITY)
        return;
    s *= exp2f((m - nm) * LOG2E); // 0 while m is -inf, as s is
    for (int e = 0; e < k; e++)
        s += exp2f((v[e] - nm) * LOG2E);
    m = nm;
}

// (m, s) <- the combination of (m, s) and (m2, s2); symmetric, so butterflies agree.
__device__ inline void combine(float &m, float &s, float m2, float s2)
{
    const float nm = fmaxf(m, m2);
    if (nm == -INFINITY)
        return;
    s = (m == -INFINITY ? 0.0f : s * expf(m - nm)) + (m2 == -INFINITY ? 0.0f : s2 * expf(m2 - nm));
    m = nm;
}

// The combination of the warp's (m, s), in every lane.
__device__ inline void warp_combine(float &m, float &s)
{
    for (int off = WARP / 2; off > 0; off /= 2) {
        const float m2 = __shfl_xor_sync(FULL_MASK, m, off), s2 = __shfl_xor_sync(FULL_MASK, s, off);
        combine(m, s, m2, s2);
    }
}

// stats[3 row..3 row+2] = (max, sum of exp(l - max), the target's logit or 0) of each row's
// block: V logits (leading dimension ld) of the vocabulary ids v0..v0+V-1.
template <typename T, int VEC>
__global__ static void cross_entropy_stats_kernel(int rows, int V, int v0, const T *logits, int ld,
                                                  const int32_t *targets, float *stats)
{
    __shared__ float red_m[CE_THREADS / WARP], red_s[CE_THREADS / WARP];
    const int lane = threadIdx.x % WARP, w = threadIdx.x / WARP, warps = blockDim.x / WARP;
    const int vend = V / VEC * VEC; // whole packs below V; columns V..ld-1 are never read
    for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
        const T *lr = logits + (size_t)row * ld;
        float m = -INFINITY, s = 0.0f;
        for (int c = threadIdx.x * VEC; c < vend; c += blockDim.x * VEC) {
            float v[VEC];
            load<VEC>(lr + c, v);
            online_add(m, s, v, VEC);
        }
        for (int c = vend + threadIdx.x; c < V; c += blockDim.x) {
            const float v = to_float(lr[c]);
            online_add(m, s, &v, 1);
        }
        warp_combine(m, s);
        if (lane == 0) {
            red_m[w] = m;
            red_s[w] = s;
        }
        __syncthreads();
        if (w == 0) {
            m = lane < warps ? red_m[lane] : -INFINITY;
            s = lane < warps ? red_s[lane] : 0.0f;
            warp_combine(m, s);
            if (lane == 0) {
                unsigned t;
                float *st = stats + 3 * row;
                st[0] = m;
                st[1] = s;
                st[2] = in_block(targets[row], v0, V, t) ? to_float(lr[t]) : 0.0f;
            }
        }
        __syncthreads(); // red_m and red_s are rewritten for the next row
    }
}

// losses[row] = logsumexp - target logit from the parts' stats (part p's at stats + 3 p
// rows), and the block's logits overwritten by dscale (softmax - onehot).
template <typename T, int VEC>
__global__ static void cross_entropy_finish_kernel(int rows, int V, int v0, T *logits, int ld,
                                                   const int32_t *targets, int parts, const float *stats,
                                                   float *losses, float dscale)
{
    const int lane = threadIdx.x % WARP;
    const int vend = V / VEC * VEC;
    for (long long row = blockIdx.x; row < rows; row += gridDim.x) {
        float m = -INFINITY, s = 0.0f, target_logit = 0.0f;
        for (int p = lane; p < parts; p += WARP) {
            const float *st = stats + 3 * ((size_t)p * rows + row);
            combine(m, s, st[0], st[1]);
            target_logit += st[2];
        }
        warp_combine(m, s);
        target_logit = warp_sum(target_logit);
        if (threadIdx.x == 0)
            losses[row] = m + logf(s) - target_logit;
        // softmax = exp2((l - m) log2(e) - log2(s)).
        const float log2s = log2f(s);
        const unsigned t = (unsigned)targets[row] - (unsigned)v0; // >= V when in another block (see in_block)
        T *lr = logits + (size_t)row * ld;
        for (int c = threadIdx.x * VEC; c < vend; c += blockDim.x * VEC) {
            float v[VEC];
            load<VEC>(lr + c, v);
            for (int e = 0; e < VEC; e++)
                v[e] = dscale * (exp2f(fmaf(v[e] - m, LOG2E, -log2s)) - ((unsigned)(c + e) == t ? 1.0f : 0.0f));
            store<VEC>(lr + c, v);
        }
        for (int c = vend + threadIdx.x; c < V; c += blockDim.x)
            lr[c] = from_float<T>(dscale *
                                  (exp2f(fmaf(to_float(lr[c]) - m, LOG2E, -log2s)) - ((unsigned)c == t ? 1.0f : 0.0f)));
    }
}

template <typename T>
static cudaError_t cross_entropy_stats(int rows, int V, int v0, const T *logits, int ld, const int32_t *targets,
                                       float *stats, cudaStream_t stream)
{
    constexpr int P = vec16<T>();
    const unsigned blocks = blocks_for((size_t)rows, 1, GRID_MAX);
    if (ld % P == 0 && aligned16(logits)) {
        auto kernel = cross_entropy_stats_kernel<T, P>;
        TSR_LAUNCH(kernel, blocks, CE_THREADS, 0, stream, rows, V, v0, logits, ld, targets, stats);
    } else {
        auto kernel = cross_entropy_stats_kernel<T, 1>;
        TSR_LAUNCH(kernel, blocks, CE_THREADS, 0, stream, rows, V, v0, logits, ld, targets, stats);
    }
    return cudaGetLastError();
}

template <typename T>
static cudaError_t cross_entropy_finish(int rows, int V, int v0, T *logits, int ld, const int32_t *targets, int parts,
                                        const float *stats, float *losses, float dscale, cudaStream_t stream)
{
    constexpr int P = vec16<T>();
    const unsigned blocks = blocks_for((size_t)rows, 1, GRID_MAX);
    if (ld % P == 0 && aligned16(logits)) {
        auto kernel = cross_entropy_finish_kernel<T, P>;
        TSR_LAUNCH(kernel, blocks, CE_THREADS, 0, stream, rows, V, v0, logits, ld, targets, parts, stats, losses,
                   dscale);
    } else {
        auto kernel = cross_entropy_finish_kernel<T, 1>;
        TSR_LAUNCH(kernel, blocks, CE_THREADS, 0, stream, rows, V, v0, logits, ld, targets, parts, stats, losses,
                   dscale);
    }
    return cudaGetLastError();
}

// ---------------------------------------------------------------------------------------
// C entry points: the element type picks the instantiation.

typedef __nv_bfloat16 bf16_t;

#define AS(type, p) static_cast<type>(p)

extern "C" cudaError_t tsr__cuda_layernorm_forward(int bf16, int rows, int cols, const void *x, const void *gamma,
                                                   const void *beta, float eps, void *y, float *mean, float *rstd,
                                                   cudaStream_t stream)
{
    if (bf16)
        return layernorm_forward<bf16_t>(rows, cols, AS(const bf16_t *, x), AS(const bf16_t *, gamma),
                                         AS(const bf16_t *, beta), eps, AS(bf16_t *, y), mean, rstd, stream);
    return layernorm_forward<float>(rows, cols, AS(const float *, x), AS(const float *, gamma),
                                    AS(const float *, beta), eps, AS(float *, y), mean, rstd, stream);
}

extern "C" cudaError_t tsr__cuda_layernorm_backward(int bf16, int rows, int cols, const void *dy, const void *x,
                                                    const void *gamma, const float *mean, const float *rstd, void *dx,
                                                    float *dgamma, float *dbeta, cudaStream_t stream)
{
    if (bf16)
        return layernorm_backward<bf16_t>(rows, cols, AS(const bf16_t *, dy), AS(const bf16_t *, x),
                                          AS(const bf16_t *, gamma), mean, rstd, AS(bf16_t *, dx), dgamma, dbeta,
                                          stream);
    return layernorm_backward<float>(rows, cols, AS(const float *, dy), AS(const float *, x),
                                     AS(const float *, gamma), mean, rstd, AS(float *, dx), dgamma, dbeta, stream);
}

extern "C" cudaError_t tsr__cuda_layernorm_stats(int bf16, int rows, int cols, const void *x, float *stats,
                                                 cudaStream_t stream)
{
    if (bf16)
        return layernorm_stats<bf16_t>(rows, cols, AS(const bf16_t *, x), stats, stream);
    return layernorm_stats<float>(rows, cols, AS(const float *, x), stats, stream);
}

extern "C" cudaError_t tsr__cuda_layernorm_apply(int bf16, int rows, int cols, int width, const void *x,
                                                 const void *gamma, const void *beta, float eps, const float *stats,
                                                 void *y, float *mean, float *rstd, cudaStream_t stream)
{
    if (bf16)
        return layernorm_apply<bf16_t>(rows, cols, width, AS(const bf16_t *, x), AS(const bf16_t *, gamma),
                                       AS(const bf16_t *, beta), eps, stats, AS(bf16_t *, y), mean, rstd, stream);
    return layernorm_apply<float>(rows, cols, width, AS(const float *, x), AS(const float *, gamma),
                                  AS(const float *, beta), eps, stats, AS(float *, y), mean, rstd, stream);
}

extern "C" cudaError_t tsr__cuda_layernorm_backward_stats(int bf16, int rows, int cols, const void *dy, const void *x,
                                                          const void *gamma, const float *mean, const float *rstd,
                                                          float *stats, cudaStream_t stream)
{
    if (bf16)
        return layernorm_backward_stats<bf16_t>(rows, cols, AS(const bf16_t *, dy), AS(const bf16_t *, x),
                                                AS(const bf16_t *, gamma), mean, rstd, stats, stream);
    return layernorm_backward_stats<float>(rows, cols, AS(const float *, dy), AS(const float *, x),
                                           AS(const float *, gamma), mean, rstd, stats, stream);
}

extern "C" cudaError_t tsr__cuda_layernorm_backward_apply(int bf16, int rows, int cols, int width, const void *dy,
                                                          const void *x, const void *gamma, const float *mean,
                                                          const float *rstd, const float *stats, void *dx,
                                                          cudaStream_t stream)
{
    if (bf16)
        return layernorm_backward_apply<bf16_t>(rows, cols, width, AS(const bf16_t *, dy), AS(const bf16_t *, x),
                                                AS(const bf16_t *, gamma), mean, rstd, stats, AS(bf16_t *, dx),
                                                stream);
    return layernorm_backward_apply<float>(rows, cols, width, AS(const float *, dy), AS(const float *, x),
                                           AS(const float *, gamma), mean, rstd, stats, AS(float *, dx), stream);
}

extern "C" cudaError_t tsr__cuda_gelu_forward(int bf16, size_t n, const void *x, void *y, cudaStream_t stream)
{
    if (bf16)
        return map1<bf16_t, GeluForward>(n, AS(const bf16_t *, x), AS(bf16_t *, y), stream);
    return map1<float, GeluForward>(n, AS(const float *, x), AS(float *, y), stream);
}

extern "C" cudaError_t tsr__cuda_gelu_backward(int bf16, size_t n, const void *x, const void *dy, void *dx,
                                               cudaStream_t stream)
{
    if (bf16)
        return map2<bf16_t, GeluBackward>(n, AS(const bf16_t *, x), AS(const bf16_t *, dy), AS(bf16_t *, dx),
                                          stream);
    return map2<float, GeluBackward>(n, AS(const float *, x), AS(const float *, dy), AS(float *, dx), stream);
}

extern "C" cudaError_t tsr__cuda_add(int bf16, size_t n, const void *a, const void *b, void *y, cudaStream_t stream)
{
    if (bf16)
        return map2<bf16_t, Add>(n, AS(const bf16_t *, a), AS(const bf16_t *, b), AS(bf16_t *, y), stream);
    return map2<float, Add>(n, AS(const float *, a), AS(const float *, b), AS(float *, y), stream);
}

extern "C" cudaError_t tsr__cuda_axpby_2d(int rows, int cols, float alpha, int src_bf16, const void *src, int lds,
                                          float beta, int dst_bf16, void *dst, int ldd, cudaStream_t stream)
{
    if (src_bf16 && dst_bf16)
        return axpby_2d<bf16_t, bf16_t>(rows, cols, alpha, AS(const bf16_t *, src), lds, beta, AS(bf16_t *, dst), ldd,
                                        stream);
    if (src_bf16)
        return axpby_2d<bf16_t, float>(rows, cols, alpha, AS(const bf16_t *, src), lds, beta, AS(float *, dst), ldd,
                                       stream);
    if (dst_bf16)
        return axpby_2d<float, bf16_t>(rows, cols, alpha, AS(const float *, src), lds, beta, AS(bf16_t *, dst), ldd,
                                       stream);
    return axpby_2d<float, float>(rows, cols, alpha, AS(const float *, src), lds, beta, AS(float *, dst), ldd, stream);
}

extern "C" cudaError_t tsr__cuda_bias_grad(int bf16, int rows, int cols, const void *dy, int ld, float *db,
                                           cudaStream_t stream)
{
    if (bf16)
        return bias_grad<bf16_t>(rows, cols, AS(const bf16_t *, dy), ld, db, stream);
    return bias_grad<float>(rows, cols, AS(const float *, dy), ld, db, stream);
}

extern "C" cudaError_t tsr__cuda_embedding_forward(int bf16, const int32_t *tokens, int seqs, int T, int C, int v0,
                                                   int nv, const void *wte, const void *wpe, void *out,
                                                   cudaStream_t stream)
{
    if (bf16)
        return embedding_forward<bf16_t>(tokens, seqs, T, C, v0, nv, AS(const bf16_t *, wte),
                                         AS(const bf16_t *, wpe), AS(bf16_t *, out), stream);
    return embedding_forward<float>(tokens, seqs, T, C, v0, nv, AS(const float *, wte), AS(const float *, wpe),
                                    AS(float *, out), stream);
}

extern "C" cudaError_t tsr__cuda_embedding_backward(int bf16, const int32_t *tokens, int seqs, int T, int C, int v0,
                                                    int nv, const void *dout, float *dwte, float *dwpe,
                                                    cudaStream_t stream)
{
    if (bf16)
        return embedding_backward<bf16_t>(tokens, seqs, T, C, v0, nv, AS(const bf16_t *, dout), dwte, dwpe, stream);
    return embedding_backward<float>(tokens, seqs, T, C, v0, nv, AS(const float *, dout), dwte, dwpe, stream);
}

extern "C" cudaError_t tsr__cuda_cross_entropy_stats(int bf16, int rows, int V, int v0, const void *logits, int ld,
                                                     const int32_t *targets, float *stats, cudaStream_t stream)
{
    if (bf16)
        return cross_entropy_stats<bf16_t>(rows, V, v0, AS(const bf16_t *, logits), ld, targets, stats, stream);
    return cross_entropy_stats<float>(rows, V, v0, AS(const float *, logits), ld, targets, stats, stream);
}

extern "C" cudaError_t tsr__cuda_cross_entropy_finish(int bf16, int rows, int V, int v0, void *logits, int ld,
                                                      const int32_t *targets, int parts, const float *stats,
                                                      float *losses, float dscale, cudaStream_t stream)
{
    if (bf16)
        return cross_entropy_finish<bf16_t>(rows, V, v0, AS(bf16_t *, logits), ld, targets, parts, stats, losses,
                                            dscale, stream);
    return cross_entropy_finish<float>(rows, V, v0, AS(float *, logits), ld, targets, parts, stats, losses, dscale,
                                       stream);
}
