// test_emu_selftest.cc: the CUDA emulation (tests/emu/cuda_emu.h) against what CUDA specifies:
// barriers, shared-memory and warp-shuffle reductions (also in divergent code and partial
// warps), dynamic shared memory, atomics, bf16 rounding and conversions, wmma against a plain
// loop, grid-stride loops, kernel parameters; that the errors a GPU would hang on or leave
// undefined are reported; and lib/device/cuda_kernels.cu's fill_f32 launcher run on the CPU.
// Its kernels are plain CUDA: `nvcc -x cu -std=c++17 -DTAP_NO_MPI -Ilib -Itests -c` compiles it.
#define TAP_NO_MPI 1 // one process, no MPI: see tests/tap.h
#include "tap.h"

#include "device/cuda_kernels.h"
#include "device/cuda_launch.h"

#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include <vector>

using namespace nvcuda;

static const unsigned FULL = 0xffffffffu;

// The emulation's text for the last error (a GPU has none to give).
static const char *emu_message()
{
#ifdef TSR_CUDA_EMU
    return tsr_emu::last_message();
#else
    return "";
#endif
}

// cudaGetLastError() is err and the emulation's message mentions what.
static void expect_error(cudaError_t err, const char *what, const char *name)
{
    cudaError_t got = cudaGetLastError();
    int same = got == err;
    ok(same && strstr(emu_message(), what) != NULL, "%s: reported as %s (\"%s\")", name, cudaGetErrorString(err),
       what);
    if (!same)
        diag("got error %d (%s), expected %d", (int)got, cudaGetErrorString(got), (int)err);
}

static uint64_t rng_state;
static double uniform(double lo, double hi)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return lo + (hi - lo) * (double)(rng_state >> 11) / 9007199254740992.0;
}

static double seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static unsigned short bits_of(__nv_bfloat16 h) { return static_cast<__nv_bfloat16_raw>(h).x; }

static __nv_bfloat16 from_bits(unsigned short u)
{
    __nv_bfloat16_raw r;
    r.x = u;
    return __nv_bfloat16(r);
}

static float float_of_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

// ---- kernels ----

// Linear thread and block indices for any block and grid shape.
__device__ unsigned thread_linear() { return threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z); }
__device__ unsigned block_linear() { return blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z); }

// Each phase every thread takes its right neighbour's value plus one: after p phases thread t
// holds what thread (t + p) % n started with, plus p. Wrong if a barrier lets a phase overlap.
__global__ void phases_kernel(int *out, int phases)
{
    __shared__ int s[1024];
    unsigned n = blockDim.x * blockDim.y * blockDim.z, t = thread_linear(), b = block_linear();
    int v = (int)(b * 10000 + t);
    for (int p = 0; p < phases; p++) {
        s[t] = v;
        __syncthreads();
        v = s[(t + 1) % n] + 1;
        __syncthreads();
    }
    out[b * n + t] = v;
}

// x: n floats; out[b] = sum of block b's 256 elements, by a tree in shared memory.
__global__ void tree_sum_kernel(const float *x, float *out, int n)
{
    __shared__ float s[256];
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    s[threadIdx.x] = i < n ? x[i] : 0.0f;
    __syncthreads();
    for (unsigned stride = blockDim.x / 2; stride > 0; stride >>= 1) {
        if (threadIdx.x < stride)
            s[threadIdx.x] += s[threadIdx.x + stride];
        __syncthreads();
    }
    if (threadIdx.x == 0)
        out[blockIdx.x] = s[0];
}

template <typename T> __device__ T warp_sum_xor(T v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(FULL, v, o);
    return v;
}

__device__ float warp_sum_down(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_down_sync(FULL, v, o);
    return v; // lane 0 holds the sum
}

// A block-wide sum with its shared memory in a device function; every thread gets the sum.
__device__ float block_sum(float v)
{
    __shared__ float partial[32];
    __shared__ float total;
    unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32, warps = (blockDim.x + 31) / 32;
    v = warp_sum_down(v);
    if (lane == 0)
        partial[warp] = v;
    __syncthreads();
    if (warp == 0) {
        float w = lane < warps ? partial[lane] : 0.0f;
        w = warp_sum_xor(w);
        if (lane == 0)
            total = w;
    }
    __syncthreads();
    return total;
}

// x: n floats summed by a grid-stride loop; out_xor[b] by warp shuffles and a template-sized
// shared array, out_dev[b] by block_sum(); both need the divergent `if (warp == 0)` step.
template <int BLOCK> __global__ void shuffle_sum_kernel(const float *x, float *out_xor, float *out_dev, int n)
{
    __shared__ float partial[BLOCK / 32];
    float v = 0.0f;
    for (int i = blockIdx.x * BLOCK + threadIdx.x; i < n; i += gridDim.x * BLOCK)
        v += x[i];
    unsigned lane = threadIdx.x % 32, warp = threadIdx.x / 32;
    float w = warp_sum_xor(v);
    if (lane == 0)
        partial[warp] = w;
    __syncthreads();
    if (warp == 0) {
        float t = lane < BLOCK / 32 ? partial[lane] : 0.0f;
        t = warp_sum_xor(t);
        if (lane == 0)
            out_xor[blockIdx.x] = t;
    }
    float s = block_sum(v);
    if (threadIdx.x == 0)
        out_dev[blockIdx.x] = s;
}

// out[4 * 32 * c + 32 * k + lane]: what lane gets from shuffle kind k (idx, up, down, xor) of
// the lane numbers with argument arg and segment width, c = the call's index.
__global__ void shuffle_kinds_kernel(int *out, const int *args, const int *widths, int calls)
{
    int lane = (int)threadIdx.x;
    for (int c = 0; c < calls; c++) {
        int *o = out + 4 * 32 * c;
        o[lane] = __shfl_sync(FULL, lane, args[c], widths[c]);
        o[32 + lane] = __shfl_up_sync(FULL, lane, (unsigned)args[c], widths[c]);
        o[64 + lane] = __shfl_down_sync(FULL, lane, (unsigned)args[c], widths[c]);
        o[96 + lane] = __shfl_xor_sync(FULL, lane, args[c], widths[c]);
    }
}

// Inclusive prefix sums of x within each warp, by __shfl_up_sync, and shuffles of other types.
__global__ void scan_kernel(const int *x, int *scan, double *dbl, long long *ll, float *bf)
{
    unsigned i = blockIdx.x * blockDim.x + threadIdx.x, lane = threadIdx.x % 32;
    int v = x[i];
    for (unsigned d = 1; d < 32; d <<= 1) {
        int up = __shfl_up_sync(FULL, v, d);
        if (lane >= d)
            v += up;
    }
    scan[i] = v;
    dbl[i] = __shfl_sync(FULL, 0.5 * (double)x[i], 31);
    ll[i] = __shfl_down_sync(FULL, (long long)x[i] * (1ll << 33), 1);
    bf[i] = __bfloat162float(__shfl_xor_sync(FULL, __float2bfloat16((float)x[i]), 3));
}

// Blocks of 48 threads: warp 1 has 16 lanes. Sums over groups of 16 lanes, which exist in both.
__global__ void partial_warp_kernel(const float *x, float *out)
{
    float v = x[threadIdx.x];
    for (int o = 8; o > 0; o >>= 1)
        v += __shfl_xor_sync(FULL, v, o);
    __syncthreads();
    out[threadIdx.x] = v;
}

// The same with offset 16, which reads lanes 32-47 of warp 1: they do not exist.
__global__ void missing_lane_kernel(float *x)
{
    x[threadIdx.x] += __shfl_xor_sync(FULL, x[threadIdx.x], 16);
}

// Dynamic shared memory: found[b] is 1 if the buffer is 16-byte aligned and filled with 0xff
// bytes when the block starts (a block must not see the last one's data); then a reversal.
__global__ void dynamic_smem_kernel(const float *x, float *out, int *found, int n)
{
    TSR_DYNAMIC_SMEM(float, buf);
    int t = (int)threadIdx.x;
    if (t == 0) {
        uint32_t u;
        memcpy(&u, &buf[n - 1], sizeof u);
        found[blockIdx.x] = ((uintptr_t)buf % 16 == 0) && u == 0xffffffffu;
    }
    __syncthreads();
    for (int i = t; i < n; i += blockDim.x)
        buf[i] = x[blockIdx.x * n + i];
    __syncthreads();
    for (int i = t; i < n; i += blockDim.x)
        out[blockIdx.x * n + i] = buf[n - 1 - i];
}

// Each thread takes a slot with atomicAdd's old value and adds to float, double and int totals.
__global__ void atomics_kernel(int *counter, int *slots, float *fsum, double *dsum, int *isum, int *imax)
{
    int g = (int)(blockIdx.x * blockDim.x + threadIdx.x);
    int slot = atomicAdd(counter, 1);
    slots[slot] = g;
    atomicAdd(fsum, 0.5f);
    atomicAdd(dsum, (double)g);
    atomicAdd(isum, g);
    atomicMax(imax, (g * 7919) % 1000);
}

// Kernel parameters are per-thread copies, converted at the launch.
__global__ void param_kernel(int *out, int k, float f)
{
    k += (int)threadIdx.x;
    __syncthreads();
    out[threadIdx.x] = k + (int)f;
}

// y = alpha * x in T, fp32 inside.
template <typename T> __global__ void scale_kernel(T *y, const T *x, float alpha, int n)
{
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x)
        y[i] = T(alpha * (float)x[i]);
}

// Writes x[i] = i + 0.5 for all i < n with a 2D grid and a grid-stride loop.
__global__ void grid_stride_kernel(float *x, int n)
{
    int stride = (int)(gridDim.x * gridDim.y * blockDim.x);
    for (int i = (int)((blockIdx.y * gridDim.x + blockIdx.x) * blockDim.x + threadIdx.x); i < n; i += stride)
        x[i] += (float)i + 0.5f;
}

// d = alpha * (c + a b): a (m x k) row-major bf16, b (k x n) column-major bf16, c (m x n)
// column-major, d (m x n) row-major; one warp per 16 x 16 tile, blockDim.x = 32 * (m/16) (n/16).
__global__ void wmma_kernel(float *d, const __nv_bfloat16 *a, const __nv_bfloat16 *b, const float *c, float alpha,
                            int m, int n, int k)
{
    int warp = (int)threadIdx.x / 32, tiles_n = n / 16;
    int tm = warp / tiles_n, tn = warp % tiles_n;
    wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa;
    wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> fb;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    wmma::load_matrix_sync(acc, c + tm * 16 + tn * 16 * m, m, wmma::mem_col_major);
    for (int k0 = 0; k0 < k; k0 += 16) {
        wmma::load_matrix_sync(fa, a + tm * 16 * k + k0, k);
        wmma::load_matrix_sync(fb, b + tn * 16 * k + k0, k);
        wmma::mma_sync(acc, fa, fb, acc);
    }
    for (int i = 0; i < acc.num_elements; i++)
        acc.x[i] *= alpha;
    wmma::store_matrix_sync(d + tm * 16 * n + tn * 16, acc, n, wmma::mem_row_major);
}

// d = a b with the other layouts: a column-major, b row-major, d column-major; shape 32x8x16.
__global__ void wmma_32x8_kernel(float *d, const __nv_bfloat16 *a, const __nv_bfloat16 *b)
{
    wmma::fragment<wmma::matrix_a, 32, 8, 16, __nv_bfloat16, wmma::col_major> fa;
    wmma::fragment<wmma::matrix_b, 32, 8, 16, __nv_bfloat16, wmma::row_major> fb;
    wmma::fragment<wmma::accumulator, 32, 8, 16, float> acc;
    wmma::fill_fragment(acc, 0.0f);
    wmma::load_matrix_sync(fa, a, 32);
    wmma::load_matrix_sync(fb, b, 8);
    wmma::mma_sync(acc, fa, fb, acc);
    wmma::store_matrix_sync(d, acc, 32, wmma::mem_col_major);
}

// Contract breaches of wmma: 1, a lane-dependent element; 2, a misaligned pointer; 3, a store
// only half of the warp reaches.
__global__ void wmma_bad_kernel(float *d, const __nv_bfloat16 *a, int how)
{
    unsigned lane = threadIdx.x % 32;
    wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> fa;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc;
    wmma::fill_fragment(acc, 1.0f);
    wmma::load_matrix_sync(fa, a + (how == 2 ? 8 : 0), 16);
    if (how == 1)
        acc.x[0] += (float)lane;
    if (how != 3 || lane < 16)
        wmma::store_matrix_sync(d, acc, 16, wmma::mem_row_major);
}

// Lanes 0-15 wait at the barrier, lanes 16-31 in a shuffle that needs lanes 0-15: a deadlock.
__global__ void deadlock_kernel(float *x)
{
    if (threadIdx.x < 16)
        __syncthreads();
    else
        x[threadIdx.x] = __shfl_xor_sync(FULL, x[threadIdx.x], 1);
}

// Two warps at two different barriers.
__global__ void split_barrier_kernel(float *x)
{
    if (threadIdx.x < 32) {
        x[threadIdx.x] = 1.0f;
        __syncthreads();
    } else {
        x[threadIdx.x] = 2.0f;
        __syncthreads();
    }
}

// Threads 32-63 return before a barrier the others reach.
__global__ void early_return_kernel(float *x)
{
    if (threadIdx.x >= 32)
        return;
    __syncthreads();
    x[threadIdx.x] = 1.0f;
}

// Lane 0 shuffles with a mask that leaves it out.
__global__ void bad_mask_kernel(float *x)
{
    x[threadIdx.x] = __shfl_xor_sync(0xfffffffeu, x[threadIdx.x], 1);
}

// Reads a neighbour's shared value with or without the barrier that makes it written.
__global__ void neighbour_kernel(int *out, int base, int sync)
{
    __shared__ int s[64];
    int t = (int)threadIdx.x;
    s[t] = base + t;
    if (sync)
        __syncthreads();
    out[t] = s[t ^ 1];
}

// Throughput: barriers per thread, and warp sums.
__global__ void barrier_bench_kernel(float *out, int rounds)
{
    __shared__ float s[1024];
    float v = (float)threadIdx.x;
    for (int r = 0; r < rounds; r++) {
        s[threadIdx.x] = v;
        __syncthreads();
        v = 0.5f * (v + s[(threadIdx.x + 1) % blockDim.x]);
        __syncthreads();
    }
    out[blockIdx.x * blockDim.x + threadIdx.x] = v;
}

__global__ void shuffle_bench_kernel(float *out, int rounds)
{
    float v = (float)threadIdx.x;
    for (int r = 0; r < rounds; r++)
        v = warp_sum_xor(v) * (1.0f / 32.0f);
    out[blockIdx.x * blockDim.x + threadIdx.x] = v;
}

// ---- tests ----

static void test_phases(void)
{
    dim3 grid(3, 2, 2), block(8, 4, 3);
    const unsigned nb = 12, nt = 96;
    const int phases = 5;
    std::vector<int> out(nb * nt, -1);
    TSR_LAUNCH(phases_kernel, grid, block, 0, 0, out.data(), phases);
    is_int(cudaGetLastError(), cudaSuccess, "phases: launch on grid 3x2x2 of blocks 8x4x3");
    int bad = 0;
    for (unsigned b = 0; b < nb; b++)
        for (unsigned t = 0; t < nt; t++)
            bad += out[b * nt + t] != (int)(b * 10000 + (t + phases) % nt) + phases;
    is_int(bad, 0, "phases: %d barrier-separated phases over 3D threads and blocks give the expected values", phases);
}

static void test_reductions(void)
{
    const int n = 5000, nb = (n + 255) / 256;
    std::vector<float> x(n), tree(nb, -1.0f);
    for (int i = 0; i < n; i++)
        x[i] = (float)uniform(-1, 1);
    TSR_LAUNCH(tree_sum_kernel, nb, 256, 0, 0, x.data(), tree.data(), n);
    is_int(cudaGetLastError(), cudaSuccess, "tree sum: launch");
    double worst = 0;
    for (int b = 0; b < nb; b++) {
        double ref = 0, mag = 0;
        for (int i = b * 256; i < n && i < (b + 1) * 256; i++) {
            ref += x[i];
            mag += fabs(x[i]);
        }
        worst = fmax(worst, fabs(tree[b] - ref) / mag);
    }
    ok(worst <= 1e-5, "tree sum: %d block sums in shared memory within 1e-5 (worst %.2g of the sum of |x|)", nb,
       worst);

    const int blocks = 7;
    std::vector<float> by_xor(blocks, -1.0f), by_dev(blocks, -1.0f);
    TSR_LAUNCH(shuffle_sum_kernel<256>, blocks, 256, 0, 0, x.data(), by_xor.data(), by_dev.data(), n);
    is_int(cudaGetLastError(), cudaSuccess, "shuffle sums: launch");
    double wx = 0, wd = 0;
    for (int b = 0; b < blocks; b++) {
        double ref = 0, mag = 0;
        for (int i = b * 256; i < n; i += blocks * 256)
            for (int j = i; j < i + 256 && j < n; j++) {
                ref += x[j];
                mag += fabs(x[j]);
            }
        wx = fmax(wx, fabs(by_xor[b] - ref) / mag);
        wd = fmax(wd, fabs(by_dev[b] - ref) / mag);
    }
    ok(wx <= 1e-5, "shuffle sums: __shfl_xor_sync warp sums, then warp 0 alone, within 1e-5 (worst %.2g)", wx);
    ok(wd <= 1e-5, "shuffle sums: __shfl_down_sync and shared memory in a device function within 1e-5 (worst %.2g)",
       wd);

    // 100 threads: three full warps and one of 4 lanes, whose sum reads lanes 4-31 as 0.
    std::vector<float> ones(100, 1.0f), o1(1), o2(1);
    TSR_LAUNCH(shuffle_sum_kernel<128>, 1, 100, 0, 0, ones.data(), o1.data(), o2.data(), 100);
    cudaError_t err = cudaGetLastError();
    ok(err != cudaSuccess && strstr(emu_message(), "does not exist"),
       "shuffle sums: a full-warp shuffle in a block of 100 threads reads lanes that do not exist: reported");
}

static void test_shuffle_kinds(void)
{
    const int calls = 9;
    int args[calls] = {0, 1, 3, 5, 16, 31, 7, 2, 9}, widths[calls] = {32, 32, 32, 8, 32, 16, 4, 2, 32};
    std::vector<int> out(4 * 32 * calls, -1);
    TSR_LAUNCH(shuffle_kinds_kernel, 1, 32, 0, 0, out.data(), args, widths, calls);
    is_int(cudaGetLastError(), cudaSuccess, "shuffle kinds: launch");
    // What the CUDA programming guide says each returns, written out per lane.
    int bad[4] = {0, 0, 0, 0};
    for (int c = 0; c < calls; c++) {
        int w = widths[c], a = args[c], d = a;
        for (int lane = 0; lane < 32; lane++) {
            int group = lane / w * w, pos = lane % w;
            int idx = group + a % w;
            int up = pos >= d ? lane - d : lane;
            int down = pos + d < w ? lane + d : lane;
            int x = lane ^ a;
            int xr = x / w <= lane / w ? x : lane; // lower groups can be read, higher ones give your own
            const int *o = &out[4 * 32 * c];
            bad[0] += o[lane] != idx;
            bad[1] += o[32 + lane] != up;
            bad[2] += o[64 + lane] != down;
            bad[3] += o[96 + lane] != xr;
        }
    }
    is_int(bad[0], 0, "__shfl_sync: source lane modulo width, in the lane's own segment");
    is_int(bad[1], 0, "__shfl_up_sync: lane - delta, own value below the segment start");
    is_int(bad[2], 0, "__shfl_down_sync: lane + delta, own value past the segment end");
    is_int(bad[3], 0, "__shfl_xor_sync: lane ^ mask, own value for a higher segment");

    const int n = 64;
    std::vector<int> x(n), scan(n);
    std::vector<double> dbl(n);
    std::vector<long long> ll(n);
    std::vector<float> bf(n);
    for (int i = 0; i < n; i++)
        x[i] = (int)uniform(-1000, 1000);
    TSR_LAUNCH(scan_kernel, 2, 32, 0, 0, x.data(), scan.data(), dbl.data(), ll.data(), bf.data());
    is_int(cudaGetLastError(), cudaSuccess, "scan: launch");
    int bad_scan = 0, bad_types = 0;
    for (int i = 0; i < n; i++) {
        int sum = 0;
        for (int j = i / 32 * 32; j <= i; j++)
            sum += x[j];
        bad_scan += scan[i] != sum;
        int lane = i % 32, base = i - lane;
        bad_types += dbl[i] != 0.5 * x[base + 31];
        bad_types += ll[i] != (long long)x[lane < 31 ? i + 1 : i] * (1ll << 33);
        bad_types += bf[i] != __bfloat162float(__float2bfloat16((float)x[base + (lane ^ 3)]));
    }
    is_int(bad_scan, 0, "scan: inclusive warp prefix sums by __shfl_up_sync");
    is_int(bad_types, 0, "shuffles of double, long long and __nv_bfloat16 move whole values");
}

static void test_partial_warps(void)
{
    std::vector<float> x(48), out(48, -1.0f);
    for (int i = 0; i < 48; i++)
        x[i] = (float)(i * i);
    TSR_LAUNCH(partial_warp_kernel, 1, 48, 0, 0, x.data(), out.data());
    is_int(cudaGetLastError(), cudaSuccess, "partial warp: launch of 48 threads");
    int bad = 0;
    for (int i = 0; i < 48; i++) {
        float sum = 0;
        for (int j = i / 16 * 16; j < i / 16 * 16 + 16; j++)
            sum += x[j];
        bad += out[i] != sum;
    }
    is_int(bad, 0, "partial warp: xor sums over 16 lanes in a full warp and in a warp of 16 lanes");
    TSR_LAUNCH(missing_lane_kernel, 1, 48, 0, 0, x.data());
    expect_error(cudaErrorLaunchFailure, "does not exist", "partial warp: reading lane 16 of a 16-lane warp");
}

static void test_dynamic_smem(void)
{
    const int n = 1000, blocks = 3;
    std::vector<float> x(n * blocks), out(n * blocks, 0.0f);
    std::vector<int> found(blocks, 0);
    for (int i = 0; i < n * blocks; i++)
        x[i] = (float)i;
    TSR_LAUNCH(dynamic_smem_kernel, blocks, 128, n * sizeof(float), 0, x.data(), out.data(), found.data(), n);
    is_int(cudaGetLastError(), cudaSuccess, "dynamic smem: launch with 4000 bytes");
    int bad = 0;
    for (int b = 0; b < blocks; b++)
        for (int i = 0; i < n; i++)
            bad += out[b * n + i] != x[b * n + n - 1 - i];
    is_int(bad, 0, "dynamic smem: each block reverses its part through the buffer");
    is_int(found[0] + found[1] + found[2], 3, "dynamic smem: 16-byte aligned and refilled with 0xff for each block");

    const int big = 64 * 1024 / 4;
    std::vector<float> xb(big), ob(big);
    int fb = 0;
    TSR_LAUNCH(dynamic_smem_kernel, 1, 256, big * sizeof(float), 0, xb.data(), ob.data(), &fb, big);
    expect_error(cudaErrorInvalidValue, "cudaFuncSetAttribute", "dynamic smem: 64 KiB without cudaFuncSetAttribute");
    is_int(cudaFuncSetAttribute(dynamic_smem_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 64 * 1024),
           cudaSuccess, "dynamic smem: cudaFuncSetAttribute to 64 KiB");
    TSR_LAUNCH(dynamic_smem_kernel, 1, 256, big * sizeof(float), 0, xb.data(), ob.data(), &fb, big);
    is_int(cudaGetLastError(), cudaSuccess, "dynamic smem: 64 KiB launch after cudaFuncSetAttribute");
    is_int(cudaFuncSetAttribute(dynamic_smem_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, 300 * 1024),
           cudaErrorInvalidValue, "dynamic smem: 300 KiB is more than a block can have");
    cudaGetLastError();
}

static void test_atomics(void)
{
    const int blocks = 4, threads = 256, n = blocks * threads;
    int counter = 0, isum = 0, imax = -1;
    float fsum = 0;
    double dsum = 0;
    std::vector<int> slots(n, -1), seen(n, 0);
    TSR_LAUNCH(atomics_kernel, blocks, threads, 0, 0, &counter, slots.data(), &fsum, &dsum, &isum, &imax);
    is_int(cudaGetLastError(), cudaSuccess, "atomics: launch");
    int dup = 0, want_max = 0;
    for (int i = 0; i < n; i++) {
        if (slots[i] >= 0 && slots[i] < n)
            dup += seen[slots[i]]++ > 0;
        else
            dup++;
        want_max = want_max > (i * 7919) % 1000 ? want_max : (i * 7919) % 1000;
    }
    is_int(counter, n, "atomicAdd(int): counter reaches the thread count");
    is_int(dup, 0, "atomicAdd(int) returns the old value: every thread gets its own slot");
    ok(fsum == 0.5f * n, "atomicAdd(float): %g", (double)fsum);
    ok(dsum == 0.5 * n * (n - 1), "atomicAdd(double): %.17g", dsum);
    is_int(isum, n * (n - 1) / 2, "atomicAdd(int) sum");
    is_int(imax, want_max, "atomicMax(int)");
}

static void test_params(void)
{
    std::vector<int> out(64, -1);
    TSR_LAUNCH(param_kernel, 1, 64, 0, 0, out.data(), (size_t)100, 2.75); // size_t -> int, double -> float
    int bad = 0;
    for (int t = 0; t < 64; t++)
        bad += out[t] != 100 + t + 2;
    is_int(bad, 0, "kernel parameters: converted at the launch, each thread's copy its own");
}

// bf16 by an independent route: the double's significand rounded to 8 bits by rint (ties to even).
static double ref_bf16(double x)
{
    int e;
    double m = frexp(x, &e);
    return ldexp(rint(ldexp(m, 8)), e - 8);
}

static void test_bf16(void)
{
    is_int(bits_of(__float2bfloat16(1.0f + 0x1p-8f)), 0x3F80, "bf16: 1 + 2^-8, a tie, rounds to the even 1");
    is_int(bits_of(__float2bfloat16(1.0f + 0x3p-8f)), 0x3F82, "bf16: 1 + 3 2^-8, a tie, rounds up to the even");
    is_int(bits_of(__float2bfloat16(1.0f + 0x1p-8f + 0x1p-20f)), 0x3F81, "bf16: just above a tie rounds up");
    is_int(bits_of(__float2bfloat16_rn(-(1.0f + 0x1p-8f))), 0xBF80, "bf16: negative tie to even");
    is_int(bits_of(__float2bfloat16(float_of_bits(0x00018000u))), 0x0002, "bf16: subnormal tie to even");
    is_int(bits_of(__float2bfloat16(FLT_MAX)), 0x7F80, "bf16: FLT_MAX rounds to infinity");
    is_int(bits_of(__float2bfloat16(float_of_bits(0x7F7F7FFFu))), 0x7F7F, "bf16: below the midpoint stays finite");
    is_int(bits_of(__float2bfloat16(-INFINITY)), 0xFF80, "bf16: -inf");
    is_int(bits_of(__float2bfloat16(float_of_bits(0x7F800001u))), 0x7FFF,
           "bf16: a NaN whose payload is in the low bits stays NaN (canonical 0x7fff)");
    ok(isnan(__bfloat162float(__float2bfloat16(float_of_bits(0xFFC00000u)))), "bf16: negative NaN stays NaN");
    is_int(bits_of(__double2bfloat16(1.0 + 0x1p-8 + 0x1p-40)), 0x3F81,
           "bf16 from double: rounded once (through float it would tie and go down)");
    __nv_bfloat16 from_double = 1.0 + 0x1p-8 + 0x1p-40;
    is_int(bits_of(from_double), 0x3F81, "bf16: construction from double rounds once");

    int bad = 0;
    for (int i = 0; i < 20000; i++) {
        float f = (float)(uniform(-1, 1) * pow(2.0, uniform(-100, 100)));
        bad += (double)__bfloat162float(__float2bfloat16(f)) != ref_bf16(f);
    }
    is_int(bad, 0, "bf16: 20000 random floats round to nearest even");

    __nv_bfloat16 h = 3.0f; // implicit construction from float, conversion to float
    float f = h;
    ok(f == 3.0f, "bf16: implicit conversions from and to float");
    is_int((int)__nv_bfloat16(-2.75f), -2, "bf16 to int rounds toward zero");
    is_int((int)__nv_bfloat16(1e20f), INT_MAX, "bf16 to int saturates");
    is_int((int)from_bits(0x7FFF), 0, "bf16 NaN to int is 0");
    is_int((unsigned)__nv_bfloat16(-5.0f), 0, "bf16 to unsigned saturates at 0");
    ok((float)__nv_bfloat16(257) == 256.0f && (float)__nv_bfloat16(259) == 260.0f,
       "bf16 from int: 257 and 259 round to the even neighbours 256 and 260");
    __nv_bfloat16 one = 1.0f, tiny = 0x1p-8f, two = 2.0f, qnan = from_bits(0x7FC0);
    ok(bits_of(one + tiny) == 0x3F80 && bits_of(one - tiny) == bits_of(__float2bfloat16(1.0f - 0x1p-8f)),
       "bf16 + and -: the exact result rounded once");
    ok((float)(two * two) == 4.0f && (float)(one / __nv_bfloat16(3.0f)) == (float)ref_bf16(1.0 / 3.0),
       "bf16 * and /");
    __nv_bfloat16 acc = one;
    acc += two;
    acc *= two;
    acc -= one;
    acc /= two;
    ok((float)acc == 2.5f, "bf16 compound assignments");
    __nv_bfloat16 inc = one;
    inc++;
    ++inc;
    ok((float)inc == 3.0f && (float)(-inc) == -3.0f, "bf16 ++ and unary -");
    ok(one < two && two > one && one <= one && two >= one && one == one && one != two, "bf16 comparisons");
    ok(!(qnan == qnan) && qnan != qnan && !(qnan < one) && !(qnan >= one), "bf16 comparisons with NaN are unordered");
    ok(!(bool)__nv_bfloat16(0.0f) && !(bool)__nv_bfloat16(-0.0f) && (bool)qnan && (bool)one, "bf16 to bool");
    __nv_bfloat162 pair = __floats2bfloat162_rn(1.5f, -2.25f);
    ok(__low2float(pair) == 1.5f && __high2float(pair) == -2.25f,
       "bf162: __floats2bfloat162_rn, __low2float, __high2float");
    __nv_bfloat162 sum = pair + __float2bfloat162_rn(1.0f);
    ok(__low2float(sum) == 2.5f && __high2float(sum) == -1.25f, "bf162: + adds both halves");

    const int n = 3000;
    std::vector<__nv_bfloat16> xb(n), yb(n);
    std::vector<float> xf(n), yf(n);
    for (int i = 0; i < n; i++) {
        xf[i] = (float)uniform(-10, 10);
        xb[i] = __float2bfloat16(xf[i]);
    }
    TSR_LAUNCH(scale_kernel<__nv_bfloat16>, 4, 128, 0, 0, yb.data(), xb.data(), 1.5f, n);
    TSR_LAUNCH(scale_kernel<float>, 4, 128, 0, 0, yf.data(), xf.data(), 1.5f, n);
    is_int(cudaGetLastError(), cudaSuccess, "scale: launches for float and bf16");
    int bad_b = 0, bad_f = 0;
    for (int i = 0; i < n; i++) {
        bad_b += (double)__bfloat162float(yb[i]) != ref_bf16((double)(1.5f * __bfloat162float(xb[i])));
        bad_f += yf[i] != 1.5f * xf[i];
    }
    is_int(bad_b, 0, "scale<__nv_bfloat16>: fp32 math inside, rounded to bf16 on store");
    is_int(bad_f, 0, "scale<float>");
}

static __nv_bfloat16 *bf16_alloc(size_t n)
{
    void *p = NULL;
    return posix_memalign(&p, 64, n * sizeof(__nv_bfloat16)) == 0 ? (__nv_bfloat16 *)p : NULL;
}

static float *f32_alloc(size_t n)
{
    void *p = NULL;
    return posix_memalign(&p, 64, n * sizeof(float)) == 0 ? (float *)p : NULL;
}

static void test_wmma(void)
{
    const int m = 32, n = 48, k = 64;
    const float alpha = 0.75f;
    __nv_bfloat16 *a = bf16_alloc(m * k), *b = bf16_alloc(k * n);
    float *c = f32_alloc(m * n), *d = f32_alloc(m * n);
    for (int i = 0; i < m * k; i++)
        a[i] = __float2bfloat16((float)uniform(-1, 1));
    for (int i = 0; i < k * n; i++)
        b[i] = __float2bfloat16((float)uniform(-1, 1));
    for (int i = 0; i < m * n; i++) {
        c[i] = (float)uniform(-1, 1);
        d[i] = NAN;
    }
    TSR_LAUNCH(wmma_kernel, 1, 32 * (m / 16) * (n / 16), 0, 0, d, a, b, c, alpha, m, n, k);
    is_int(cudaGetLastError(), cudaSuccess, "wmma: launch of 6 warps");
    std::vector<float> ref(m * n);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double s = c[i + j * m];
            for (int l = 0; l < k; l++)
                s += (double)__bfloat162float(a[i * k + l]) * (double)__bfloat162float(b[l + j * k]);
            ref[i * n + j] = (float)(alpha * s);
        }
    double err = tap_max_rel_err(d, ref.data(), m * n);
    ok(err <= 1e-5, "wmma: d = alpha (c + a b), 32x48x64, a row-major, b and c column-major, d row-major: "
                    "relative error %.2g", err);

    __nv_bfloat16 *a2 = bf16_alloc(32 * 16), *b2 = bf16_alloc(16 * 8);
    float *d2 = f32_alloc(32 * 8);
    for (int i = 0; i < 32 * 16; i++)
        a2[i] = __float2bfloat16((float)uniform(-2, 2));
    for (int i = 0; i < 16 * 8; i++)
        b2[i] = __float2bfloat16((float)uniform(-2, 2));
    TSR_LAUNCH(wmma_32x8_kernel, 1, 32, 0, 0, d2, a2, b2);
    is_int(cudaGetLastError(), cudaSuccess, "wmma 32x8x16: launch");
    std::vector<float> ref2(32 * 8);
    for (int i = 0; i < 32; i++)
        for (int j = 0; j < 8; j++) {
            double s = 0;
            for (int l = 0; l < 16; l++)
                s += (double)__bfloat162float(a2[i + l * 32]) * (double)__bfloat162float(b2[l * 8 + j]);
            ref2[i + j * 32] = (float)s;
        }
    err = tap_max_rel_err(d2, ref2.data(), 32 * 8);
    ok(err <= 1e-5, "wmma 32x8x16: a column-major, b row-major, d column-major: relative error %.2g", err);

    TSR_LAUNCH(wmma_bad_kernel, 1, 32, 0, 0, d, a, 1);
    expect_error(cudaErrorLaunchFailure, "uniformly", "wmma: a lane-dependent fragment element");
    TSR_LAUNCH(wmma_bad_kernel, 1, 32, 0, 0, d, a, 2);
    expect_error(cudaErrorLaunchFailure, "32-byte aligned", "wmma: a pointer 16 bytes off");
    TSR_LAUNCH(wmma_bad_kernel, 1, 32, 0, 0, d, a, 3);
    expect_error(cudaErrorLaunchFailure, "returned", "wmma: a store that half of the warp skips");
    free(a);
    free(b);
    free(c);
    free(d);
    free(a2);
    free(b2);
    free(d2);
}

static void test_grid_stride(void)
{
    const int n = 100000;
    std::vector<float> x(n, 0.0f);
    TSR_LAUNCH(grid_stride_kernel, dim3(5, 3), 64, 0, 0, x.data(), n);
    is_int(cudaGetLastError(), cudaSuccess, "grid stride: launch on a 5x3 grid");
    int bad = 0;
    for (int i = 0; i < n; i++)
        bad += x[i] != (float)i + 0.5f;
    is_int(bad, 0, "grid stride: 960 threads write each of 100000 elements once");
}

static void test_fill_f32(void)
{
    const size_t pad = 5, sizes[3] = {1, 1000, (size_t)65535 * 256 + 777};
    for (int s = 0; s < 3; s++) {
        size_t n = sizes[s];
        std::vector<float> x(n + 2 * pad, 7.0f);
        cudaError_t err = tsr__cuda_fill_f32(x.data() + pad, -2.5f, n, 0);
        is_int(err, cudaSuccess, "tsr__cuda_fill_f32 (cuda_kernels.cu) of %zu floats: no error", n);
        size_t bad = 0;
        for (size_t i = 0; i < n + 2 * pad; i++)
            bad += x[i] != (i >= pad && i < pad + n ? -2.5f : 7.0f);
        is_int(bad, 0, "tsr__cuda_fill_f32 of %zu floats%s sets exactly those", n,
               s == 2 ? " (more than 65535 blocks of 256: grid-stride)" : "");
    }
    float y = 1.0f;
    is_int(tsr__cuda_fill_f32(&y, 0.0f, 0, 0), cudaErrorInvalidConfiguration,
           "tsr__cuda_fill_f32 of 0 floats launches 0 blocks, which CUDA refuses (tsr_device_fill_f32 returns first)");
    cudaGetLastError();
}

static void test_errors(void)
{
    std::vector<float> x(64, 1.0f);
    TSR_LAUNCH(deadlock_kernel, 1, 32, 0, 0, x.data());
    expect_error(cudaErrorLaunchFailure, "deadlock", "a barrier one half-warp waits at while the other shuffles");
    TSR_LAUNCH(split_barrier_kernel, 1, 64, 0, 0, x.data());
    expect_error(cudaErrorLaunchFailure, "different __syncthreads", "two warps at two different barriers");
    TSR_LAUNCH(early_return_kernel, 1, 64, 0, 0, x.data());
    expect_error(cudaErrorLaunchFailure, "returned", "a barrier after some threads returned");
    TSR_LAUNCH(bad_mask_kernel, 1, 32, 0, 0, x.data());
    expect_error(cudaErrorLaunchFailure, "leaves out", "a shuffle whose mask leaves out its lane");
    TSR_LAUNCH(phases_kernel, 1, 1025, 0, 0, (int *)NULL, 1);
    expect_error(cudaErrorInvalidConfiguration, "1024 threads", "a block of 1025 threads");
    TSR_LAUNCH(phases_kernel, dim3(1, 65536), 32, 0, 0, (int *)NULL, 1);
    expect_error(cudaErrorInvalidConfiguration, "65535", "a grid 65536 blocks high");
    is_int(cudaGetLastError(), cudaSuccess, "cudaGetLastError resets the error");
    std::vector<int> out(32 * 4);
    TSR_LAUNCH(phases_kernel, 4, 32, 0, 0, out.data(), 3);
    int bad = 0;
    for (int i = 0; i < 32 * 4; i++)
        bad += out[i] != (i / 32) * 10000 + (i % 32 + 3) % 32 + 3;
    ok(cudaGetLastError() == cudaSuccess && bad == 0, "after those errors, kernels run normally again");
    ok(strcmp(cudaGetErrorString(cudaErrorLaunchFailure), "unspecified launch failure") == 0,
       "cudaGetErrorString names the errors as CUDA does");
}

static void test_race_shows(void)
{
    // Without the barrier, a thread that runs before its neighbour reads a stale value: threads
    // starting in increasing order catch reads of the next thread (even t), in decreasing order
    // reads of the previous one (odd t). Two launches in a row use both orders.
    int wrong_even = 0, wrong_odd = 0, wrong_synced = 0;
    std::vector<int> out(64);
    for (int run = 0; run < 2; run++) {
        int base = 1000 * (run + 1);
        TSR_LAUNCH(neighbour_kernel, 1, 64, 0, 0, out.data(), base, 0);
        for (int t = 0; t < 64; t++)
            *(t % 2 ? &wrong_odd : &wrong_even) += out[t] != base + (t ^ 1);
    }
    for (int run = 0; run < 2; run++) {
        int base = 1000 * (run + 3);
        TSR_LAUNCH(neighbour_kernel, 1, 64, 0, 0, out.data(), base, 1);
        for (int t = 0; t < 64; t++)
            wrong_synced += out[t] != base + (t ^ 1);
    }
    ok(wrong_even > 0 && wrong_odd > 0,
       "a missing __syncthreads() gives wrong values in two launches, reading both the next and the previous "
       "thread's value (%d and %d wrong)",
       wrong_even, wrong_odd);
    is_int(wrong_synced, 0, "with the __syncthreads() the values are right in both run orders");
    is_int(cudaGetLastError(), cudaSuccess, "neighbour: launches");
}

static void test_host_api(void)
{
    char a[16] = "abcdefghijklmno", b[16];
    is_int(cudaMemcpyAsync(b, a, 16, cudaMemcpyDeviceToHost, 0), cudaSuccess, "cudaMemcpyAsync");
    is_int(cudaMemsetAsync(a, 'z', 4), cudaSuccess, "cudaMemsetAsync");
    ok(memcmp(b, "abcdefghijklmno", 16) == 0 && memcmp(a, "zzzzefgh", 8) == 0, "memcpy and memset act at once");
    is_int(cudaMemsetAsync(NULL, 0, 4), cudaErrorInvalidValue, "cudaMemsetAsync on NULL is an error");
    cudaGetLastError();
}

// Throughput, as diagnostics: thread-barriers and warp shuffles per second, threads per second.
static void bench(void)
{
    const int blocks = 8, threads = 256, rounds = 100;
    std::vector<float> out(blocks * threads);
    double t0 = seconds();
    TSR_LAUNCH(barrier_bench_kernel, blocks, threads, 0, 0, out.data(), rounds);
    double t1 = seconds();
    TSR_LAUNCH(shuffle_bench_kernel, blocks, threads, 0, 0, out.data(), rounds);
    double t2 = seconds();
    const int nfill = 4 << 20;
    std::vector<float> x(nfill);
    tsr__cuda_fill_f32(x.data(), 1.0f, nfill, 0);
    double t3 = seconds();
    is_int(cudaGetLastError(), cudaSuccess, "benchmark kernels ran");
    diag("throughput: %.1fM thread-barriers/s (%d threads a block), %.1fM thread-shuffles/s, %.1fM threads/s "
         "(fill_f32)",
         2.0 * blocks * threads * rounds / (t1 - t0) / 1e6, threads, 5.0 * blocks * threads * rounds / (t2 - t1) / 1e6,
         nfill / (t3 - t2) / 1e6);
}

int main(int argc, char **argv)
{
    tap_init(&argc, &argv, "1");
    fprintf(stderr, "# The \"tsr_emu:\" lines below report errors this test makes on purpose; test points "
                    "check them.\n");
    rng_state = tap_seed();
    test_phases();
    test_reductions();
    test_shuffle_kinds();
    test_partial_warps();
    test_dynamic_smem();
    test_atomics();
    test_params();
    test_bf16();
    test_wmma();
    test_grid_stride();
    test_fill_f32();
    test_errors();
    test_race_shows();
    test_host_api();
    bench();
    return tap_done();
}
