// cuda_attention_cached.cu: attention of new queries against a KV cache (generation), the
// CUDA twin of cpu_attention_cached.c. One block of 128 threads per (query row, head,
// sequence): the row's scaled scores against every cached key up to its position go into
// shared memory (fp32), a block-wide max and sum make them probabilities, and each thread
// sums one output column over them. Decoding reads each cached row once per query, which
// is what bounds it; the training's flash kernels (cuda_attention.cu) do the prefill.
// tests/emu/test_emu_attention_cached.cc checks it against a reference in double.
#include <math.h>
#include <stdint.h>

#include "device/cuda_attention_cached.h"
#include "device/cuda_launch.h"

namespace {

constexpr int WARP = 32, THREADS = 128;
constexpr unsigned FULL_MASK = 0xffffffffu;

__device__ inline float to_float(float v) { return v; }
__device__ inline float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> __device__ inline T from_float(float v);
template <> __device__ inline float from_float<float>(float v) { return v; }
template <> __device__ inline __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16(v); }

// The block's max (sum when !is_max) of one value a thread; every thread gets the result.
__device__ inline float block_reduce(float v, bool is_max, float *red)
{
    for (int off = WARP / 2; off > 0; off /= 2) {
        float o = __shfl_xor_sync(FULL_MASK, v, off);
        v = is_max ? fmaxf(v, o) : v + o;
    }
    int warp = (int)threadIdx.x / WARP, lane = (int)threadIdx.x % WARP;
    if (lane == 0)
        red[warp] = v;
    __syncthreads();
    float r = red[0];
    for (int w = 1; w < THREADS / WARP; w++)
        r = is_max ? fmaxf(r, red[w]) : r + red[w];
    __syncthreads();
    return r;
}

// Shared memory: T scores, then hd query values, then a reduction slot per warp.
template <typename E>
__global__ void attention_cached_kernel(int n, int pos, int T, int hd, const E *q, int ld_q, const E *kc,
                                        const E *vc, int ld_c, E *o, int ld_o)
{
    TSR_DYNAMIC_SMEM(float, smem);
    int i = (int)blockIdx.x, h = (int)blockIdx.y, s = (int)blockIdx.z;
    int keys = pos + i + 1;
    float *score = smem, *qs = smem + T, *red = qs + hd;
    const E *qr = q + ((size_t)s * n + i) * ld_q + (size_t)h * hd;
    const E *kb = kc + (size_t)s * T * ld_c + (size_t)h * hd;
    const E *vb = vc + (size_t)s * T * ld_c + (size_t)h * hd;
    float scale = 1.0f / sqrtf((float)hd);
    for (int d = (int)threadIdx.x; d < hd; d += THREADS)
        qs[d] = to_float(qr[d]) * scale;
    __syncthreads();
    float mx = -INFINITY;
    for (int j = (int)threadIdx.x; j < keys; j += THREADS) {
        const E *kr = kb + (size_t)j * ld_c;
        float acc = 0.0f;
        for (int d = 0; d < hd; d++)
            acc += qs[d] * to_float(kr[d]);
        score[j] = acc;
        mx = fmaxf(mx, acc);
    }
    mx = block_reduce(mx, true, red);
    float sum = 0.0f;
    for (int j = (int)threadIdx.x; j < keys; j += THREADS) {
        float e = expf(score[j] - mx);
        score[j] = e;
        sum += e;
    }
    sum = block_reduce(sum, false, red); // also orders the score writes before the reads below
    E *orow = o + ((size_t)s * n + i) * ld_o + (size_t)h * hd;
    for (int d = (int)threadIdx.x; d < hd; d += THREADS) {
        float acc = 0.0f;
        for (int j = 0; j < keys; j++)
            acc += score[j] * to_float(vb[(size_t)j * ld_c + d]);
        orow[d] = from_float<E>(acc / sum);
    }
}

template <typename E>
cudaError_t launch(int seqs, int n, int pos, int T, int heads, int hd, const void *q, int ld_q, const void *kc,
                   const void *vc, int ld_c, void *o, int ld_o, cudaStream_t stream)
{
    size_t smem = tsr__cuda_attention_cached_smem(T, hd);
    TSR_LAUNCH(attention_cached_kernel<E>, dim3((unsigned)n, (unsigned)heads, (unsigned)seqs), THREADS, smem, stream,
               n, pos, T, hd, (const E *)q, ld_q, (const E *)kc, (const E *)vc, ld_c, (E *)o, ld_o);
    return cudaGetLastError();
}

} // namespace

extern "C" size_t tsr__cuda_attention_cached_smem(int T, int hd)
{
    return ((size_t)T + (size_t)hd + THREADS / WARP) * sizeof(float);
}

extern "C" cudaError_t tsr__cuda_attention_cached(tsr_dtype_t dt, int seqs, int n, int pos, int T, int heads, int hd,
                                                  const void *q, int ld_q, const void *kc, const void *vc, int ld_c,
                                                  void *o, int ld_o, cudaStream_t stream)
{
    if (dt == TSR_DTYPE_BF16)
        return launch<__nv_bfloat16>(seqs, n, pos, T, heads, hd, q, ld_q, kc, vc, ld_c, o, ld_o, stream);
    return launch<float>(seqs, n, pos, T, heads, hd, q, ld_q, kc, vc, ld_c, o, ld_o, stream);
}
