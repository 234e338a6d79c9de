// cuda_attention.cu: causal multi-head attention on CUDA in the manner of flash-attention 2.
// The T×T matrices of scores and probabilities never reach global memory: blocks walk over
// tiles of them in shared memory, the forward carries each query row's running max and sum
// (online softmax, fp32) across key tiles and saves the row's log-sum-exp, and the backward
// recomputes the probabilities from it. Every output element is written by one block, once:
// no atomics, the same bits on every run. Their CPU twins are in cpu_attention.c.
//
// BF16: tensor cores through nvcuda::wmma (16×16×16 bf16 fragments, fp32 accumulators), four
// warps per block, each warp owning 16 rows of a 64-row tile, key and query tiles of 64:
//   forward  block (query tile, seq, head) over the key tiles up to the diagonal:
//            S = Q Kᵀ, softmax on S in shared memory, O += P V (O in registers, fp32).
//   delta    rowsum(dO∘O), one warp per (token, head).
//   dK, dV   block (key tile, seq, head) over the query tiles from the diagonal down:
//            Sᵀ = K Qᵀ, dPᵀ = V dOᵀ, Pᵀ from the lse, dSᵀ = Pᵀ∘(dPᵀ - delta),
//            dV += Pᵀ dO, dK += dSᵀ Q (accumulator fragments for the whole loop).
//   dQ       block (query tile, seq, head) over the key tiles up to the diagonal:
//            S and dP again, dS, dQ += dS K.
// A fragment's element-to-position map is unspecified (and the CPU emulation keeps its own),
// so fragments are only filled, loaded, multiplied and stored: masking, softmax and scaling
// happen on fp32 tiles in shared memory, which the lanes of a warp read in pairs of columns.
//
// F32: CUDA-core kernels on 32-row tiles in shared memory, the same loops without fragments:
// the GPU's reference, not tuned.
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "device/cuda_attention.h"
#include "device/cuda_launch.h"

#ifdef TSR_CUDA_EMU
#define UNROLL
#define MIN_BLOCKS(n)
#else
#define UNROLL _Pragma("unroll")
#define MIN_BLOCKS(n) __launch_bounds__(THREADS, n)
#endif

namespace {

typedef __nv_bfloat16 bf16;
using namespace nvcuda;

constexpr float LOG2E = 1.44269504088896340736f;
constexpr float LN2 = 0.69314718055994530942f;
constexpr int WARPS = 4, THREADS = 32 * WARPS;
constexpr int BR = 64, BC = 64; // query and key rows of a bf16 tile: 16 per warp
constexpr int FT = 32;          // rows of an fp32 tile

typedef wmma::fragment<wmma::matrix_a, 16, 16, 16, bf16, wmma::row_major> frag_a;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::row_major> frag_b;
typedef wmma::fragment<wmma::matrix_b, 16, 16, 16, bf16, wmma::col_major> frag_bt;
typedef wmma::fragment<wmma::accumulator, 16, 16, 16, float> frag_c;

// Vector accesses, spelled out element by element for the emulation (which has no vector types).
__device__ inline void load_f32x2(const float *p, float &a, float &b) // p 8-byte aligned
{
#ifdef TSR_CUDA_EMU
    a = p[0];
    b = p[1];
#else
    const float2 x = *reinterpret_cast<const float2 *>(p);
    a = x.x;
    b = x.y;
#endif
}

__device__ inline void store_bf16x2(bf16 *p, float a, float b) // p 4-byte aligned
{
#ifdef TSR_CUDA_EMU
    p[0] = __float2bfloat16(a);
    p[1] = __float2bfloat16(b);
#else
    *reinterpret_cast<__nv_bfloat162 *>(p) = __floats2bfloat162_rn(a, b);
#endif
}

__device__ inline void copy16(bf16 *dst, const bf16 *src) // both 16-byte aligned
{
#ifdef TSR_CUDA_EMU
    memcpy(dst, src, 16);
#else
    *reinterpret_cast<uint4 *>(dst) = *reinterpret_cast<const uint4 *>(src);
#endif
}

// ---------------------------------------------------------------------------------------------
// BF16 kernels

// Shared memory of the bf16 kernels, in bytes. Tiles of 64 rows × HD are padded to HD + 8
// columns, so that the rows of a fragment fall in different banks. Each warp has fp32 scratch
// for its 16 × 64 tiles of scores (row length LDW) and for 16 × HD results (LDO); both are
// 4 × an odd number of floats, which makes the lanes' column pairs hit 32 distinct banks. The
// bf16 version of a score tile is laid over the fp32 one (row length 2 LDW bf16s).
template <int HD> struct Bf16Layout {
    static constexpr int LDT = HD + 8, LDW = BC + 4, LDO = HD + 4;
    static constexpr size_t TILE = (size_t)BR * LDT * sizeof(bf16);
    static constexpr size_t FWD_WARP = (size_t)16 * (LDW > LDO ? LDW : LDO) * sizeof(float);
    static constexpr size_t FWD = 3 * TILE + WARPS * FWD_WARP; // Q, K, V tiles; scratch
    static constexpr size_t BWD_WARP = (size_t)(2 * 16 * LDW > 16 * LDO ? 2 * 16 * LDW : 16 * LDO) * sizeof(float);
    static constexpr size_t BWD = 4 * TILE + 2 * BR * sizeof(float) + WARPS * BWD_WARP; // + lse, delta
};

// A tile of ROWS rows × HD: row r from src + r ld, zeros from row `valid` on, into dst (row
// length ldt). vec: src and ld allow 16-byte loads.
template <int ROWS, int HD>
__device__ void load_tile(bf16 *dst, int ldt, const bf16 *src, int ld, int valid, int vec)
{
    constexpr int CHUNKS = HD / 8; // 16-byte pieces of a row
    for (int idx = threadIdx.x; idx < ROWS * CHUNKS; idx += THREADS) {
        const int r = idx / CHUNKS, c = idx % CHUNKS * 8;
        bf16 *d = dst + r * ldt + c;
        if (r >= valid) {
            for (int e = 0; e < 8; e++)
                d[e] = __float2bfloat16(0.0f);
        } else if (vec) {
            copy16(d, src + (size_t)r * ld + c);
        } else {
            for (int e = 0; e < 8; e++)
                d[e] = src[(size_t)r * ld + c + e];
        }
    }
}

// dst (16 × 64 fp32, row length ldd) = A Bᵀ: A is 16 rows × HD at a, B is 64 rows × HD at b,
// both of row length ldt: each row of A against each row of B.
template <int HD>
__device__ void rows_times_rows(float *dst, int ldd, const bf16 *a, const bf16 *b, int ldt)
{
    frag_a fa[HD / 16]; // the 16 rows of A stay in registers; one 16 × 16 result at a time
    UNROLL for (int d = 0; d < HD / 16; d++)
        wmma::load_matrix_sync(fa[d], a + d * 16, ldt);
    UNROLL for (int n = 0; n < BC / 16; n++) {
        frag_c c;
        wmma::fill_fragment(c, 0.0f);
        UNROLL for (int d = 0; d < HD / 16; d++) {
            frag_bt fb;
            wmma::load_matrix_sync(fb, b + n * 16 * ldt + d * 16, ldt);
            wmma::mma_sync(c, fa[d], fb, c);
        }
        wmma::store_matrix_sync(dst + n * 16, c, ldd, wmma::mem_row_major);
    }
}

// Write a warp's 16 × HD accumulators times scale as bf16 rows row0.. (those below T) of the
// head whose row 0 is at dst (row length ld), through the warp's scratch `stage`.
template <int HD>
__device__ void write_rows(const frag_c (&f)[HD / 16], float *stage, bf16 *dst, int ld, int row0, int T, float scale)
{
    constexpr int LDO = Bf16Layout<HD>::LDO;
    const int lane = threadIdx.x % 32, r = lane / 2, half = lane % 2;
    __syncwarp(); // the scratch is no longer read
    UNROLL for (int n = 0; n < HD / 16; n++)
        wmma::store_matrix_sync(stage + n * 16, f[n], LDO, wmma::mem_row_major);
    __syncwarp();
    if (row0 + r < T) {
        bf16 *row = dst + (size_t)(row0 + r) * ld;
        UNROLL for (int c = 0; c < HD / 4; c++) {
            const int col = 4 * c + 2 * half;
            float a, b;
            load_f32x2(stage + r * LDO + col, a, b);
            row[col] = __float2bfloat16(a * scale);
            row[col + 1] = __float2bfloat16(b * scale);
        }
    }
}

// Grid (seqs × heads, query tiles), the last tile (the longest rows) first.
template <int HD>
__global__ void fwd_bf16_kernel(int T, int heads, const bf16 *__restrict__ q, const bf16 *__restrict__ k,
                                const bf16 *__restrict__ v, int ld_in, bf16 *__restrict__ o, int ld_o,
                                float *__restrict__ lse, float scale_log2, int vec)
{
    typedef Bf16Layout<HD> L;
    TSR_DYNAMIC_SMEM(unsigned char, smem);
    bf16 *sq = (bf16 *)smem, *sk = (bf16 *)(smem + L::TILE), *sv = (bf16 *)(smem + 2 * L::TILE);
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    float *ws = (float *)(smem + 3 * L::TILE + warp * L::FWD_WARP); // scores, then P V
    bf16 *wp = (bf16 *)ws;                                           // P over the scores

    const int bh = blockIdx.x, s = bh / heads, h = bh % heads;
    const int qt = (int)(gridDim.y - 1 - blockIdx.y), q0 = qt * BR;
    const size_t head = (size_t)s * T * ld_in + (size_t)h * HD;
    load_tile<BR, HD>(sq, L::LDT, q + head + (size_t)q0 * ld_in, ld_in, T - q0, vec);

    // Lane (r, half) keeps row r of the warp's 16: its max m (log2 units), its sum l, and the
    // columns 4c + 2 half + {0, 1} of its output.
    const int r = lane / 2, half = lane % 2, qi = q0 + warp * 16 + r;
    float m = -INFINITY, l = 0.0f, acc[HD / 2];
    UNROLL for (int c = 0; c < HD / 2; c++)
        acc[c] = 0.0f;

    for (int kt = 0; kt <= qt; kt++) {
        const int k0 = kt * BC;
        __syncthreads(); // the previous K and V tiles are no longer read
        load_tile<BC, HD>(sk, L::LDT, k + head + (size_t)k0 * ld_in, ld_in, T - k0, vec);
        load_tile<BC, HD>(sv, L::LDT, v + head + (size_t)k0 * ld_in, ld_in, T - k0, vec);
        __syncthreads();

        rows_times_rows<HD>(ws, L::LDW, sq + warp * 16 * L::LDT, sk, L::LDT);
        __syncwarp();
        // Scaled, masked scores of this lane's 32 columns; every row has key 0, so the max
        // is finite after the first tile and exp2(-inf) gives the masked zeros.
        float p[BC / 2], mt = -INFINITY;
        UNROLL for (int c = 0; c < BC / 4; c++) {
            const int col = 4 * c + 2 * half;
            float s0, s1;
            load_f32x2(ws + r * L::LDW + col, s0, s1);
            p[2 * c] = k0 + col <= qi ? s0 * scale_log2 : -INFINITY;
            p[2 * c + 1] = k0 + col + 1 <= qi ? s1 * scale_log2 : -INFINITY;
            mt = fmaxf(mt, fmaxf(p[2 * c], p[2 * c + 1]));
        }
        mt = fmaxf(mt, __shfl_xor_sync(0xffffffffu, mt, 1)); // the other half of the row
        const float mn = fmaxf(m, mt), alpha = exp2f(m - mn);
        m = mn;
        __syncwarp(); // every lane holds its scores before P overwrites them
        float rs = 0.0f;
        UNROLL for (int c = 0; c < BC / 4; c++) {
            // Sum P as rounded to bf16, the values that P V adds up.
            const float e0 = __bfloat162float(__float2bfloat16(exp2f(p[2 * c] - mn)));
            const float e1 = __bfloat162float(__float2bfloat16(exp2f(p[2 * c + 1] - mn)));
            rs += e0 + e1;
            store_bf16x2(wp + r * 2 * L::LDW + 4 * c + 2 * half, e0, e1);
        }
        rs += __shfl_xor_sync(0xffffffffu, rs, 1);
        l = l * alpha + rs;
        UNROLL for (int c = 0; c < HD / 2; c++)
            acc[c] *= alpha;
        __syncwarp(); // P is complete

        // P V into the scratch; P is taken into fragments first, as the products overwrite it.
        frag_a pa[BC / 16];
        UNROLL for (int kk = 0; kk < BC / 16; kk++)
            wmma::load_matrix_sync(pa[kk], wp + kk * 16, 2 * L::LDW);
        __syncwarp();
        UNROLL for (int n = 0; n < HD / 16; n++) {
            frag_c pv;
            wmma::fill_fragment(pv, 0.0f);
            UNROLL for (int kk = 0; kk < BC / 16; kk++) {
                frag_b fb;
                wmma::load_matrix_sync(fb, sv + kk * 16 * L::LDT + n * 16, L::LDT);
                wmma::mma_sync(pv, pa[kk], fb, pv);
            }
            wmma::store_matrix_sync(ws + n * 16, pv, L::LDO, wmma::mem_row_major);
        }
        __syncwarp();
        UNROLL for (int c = 0; c < HD / 4; c++) {
            float a, b;
            load_f32x2(ws + r * L::LDO + 4 * c + 2 * half, a, b);
            acc[2 * c] += a;
            acc[2 * c + 1] += b;
        }
    }

    if (qi < T) {
        const float inv = 1.0f / l;
        bf16 *row = o + ((size_t)s * T + qi) * ld_o + (size_t)h * HD;
        UNROLL for (int c = 0; c < HD / 4; c++) {
            const int col = 4 * c + 2 * half;
            row[col] = __float2bfloat16(acc[2 * c] * inv);
            row[col + 1] = __float2bfloat16(acc[2 * c + 1] * inv);
        }
        if (half == 0)
            lse[(size_t)bh * T + qi] = (m + log2f(l)) * LN2;
    }
}

// Rows t >= T of the lse and delta tiles: nothing to load; the kernels mask them anyway.
__device__ inline void load_row_stats(float *slse, float *sdelta, const float *lse, const float *delta, size_t base,
                                      int t0, int T)
{
    for (int i = threadIdx.x; i < BR; i += THREADS) {
        const int t = t0 + i;
        slse[i] = t < T ? lse[base + t] * LOG2E : 0.0f;
        sdelta[i] = t < T ? delta[base + t] : 0.0f;
    }
}

// Grid (seqs × heads, key tiles). Warp w accumulates dK and dV of key rows 16w.. of the tile.
// At HD <= 64 the registers are capped at 168, so that three blocks fit on an SM as the
// shared memory allows (without the cap ptxas takes 192 and two fit).
template <int HD>
__global__ void MIN_BLOCKS(HD <= 64 ? 3 : 1) dkdv_bf16_kernel(int T, int heads, const bf16 *__restrict__ q, const bf16 *__restrict__ k,
                                 const bf16 *__restrict__ v, int ld_in, const bf16 *__restrict__ d_o, int ld_o,
                                 const float *__restrict__ lse, const float *__restrict__ delta,
                                 bf16 *__restrict__ dk, bf16 *__restrict__ dv, float scale_log2, float scale, int vec)
{
    typedef Bf16Layout<HD> L;
    TSR_DYNAMIC_SMEM(unsigned char, smem);
    bf16 *sk = (bf16 *)smem, *sv = (bf16 *)(smem + L::TILE), *sq = (bf16 *)(smem + 2 * L::TILE);
    bf16 *sdo = (bf16 *)(smem + 3 * L::TILE);
    float *slse = (float *)(smem + 4 * L::TILE), *sdelta = slse + BR;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    float *ws = (float *)(smem + 4 * L::TILE + 2 * BR * sizeof(float) + warp * L::BWD_WARP); // Sᵀ
    float *wd = ws + 16 * L::LDW;                                                                // dPᵀ
    bf16 *wp = (bf16 *)ws, *wds = (bf16 *)wd; // Pᵀ and dSᵀ over them

    const int bh = blockIdx.x, s = bh / heads, h = bh % heads;
    const int kt = blockIdx.y, k0 = kt * BC, nq = (int)gridDim.y;
    const size_t head_in = (size_t)s * T * ld_in + (size_t)h * HD, head_o = (size_t)s * T * ld_o + (size_t)h * HD;
    load_tile<BC, HD>(sk, L::LDT, k + head_in + (size_t)k0 * ld_in, ld_in, T - k0, vec);
    load_tile<BC, HD>(sv, L::LDT, v + head_in + (size_t)k0 * ld_in, ld_in, T - k0, vec);

    const int r = lane / 2, half = lane % 2, kj = k0 + warp * 16 + r; // this lane's key row
    frag_c fdk[HD / 16], fdv[HD / 16];
    UNROLL for (int n = 0; n < HD / 16; n++) {
        wmma::fill_fragment(fdk[n], 0.0f);
        wmma::fill_fragment(fdv[n], 0.0f);
    }

    for (int qt = kt; qt < nq; qt++) {
        const int q0 = qt * BR;
        __syncthreads(); // the previous Q, dO, lse and delta are no longer read
        load_tile<BR, HD>(sq, L::LDT, q + head_in + (size_t)q0 * ld_in, ld_in, T - q0, vec);
        load_tile<BR, HD>(sdo, L::LDT, d_o + head_o + (size_t)q0 * ld_o, ld_o, T - q0, vec);
        load_row_stats(slse, sdelta, lse, delta, (size_t)bh * T, q0, T);
        __syncthreads();

        rows_times_rows<HD>(ws, L::LDW, sk + warp * 16 * L::LDT, sq, L::LDT);  // Sᵀ = K Qᵀ
        rows_times_rows<HD>(wd, L::LDW, sv + warp * 16 * L::LDT, sdo, L::LDT); // dPᵀ = V dOᵀ
        __syncwarp();

        // Pᵀ and dSᵀ of the lane's columns (queries q0 + col, col + 1), zero above the diagonal
        // and past T.
        const float *srow = ws + r * L::LDW, *drow = wd + r * L::LDW;
        auto grads = [&](int col, float &p0, float &p1, float &ds0, float &ds1) {
            float s0, s1, dp0, dp1;
            load_f32x2(srow + col, s0, s1);
            load_f32x2(drow + col, dp0, dp1);
            const int i = q0 + col;
            p0 = i >= kj && i < T ? exp2f(s0 * scale_log2 - slse[col]) : 0.0f;
            p1 = i + 1 >= kj && i + 1 < T ? exp2f(s1 * scale_log2 - slse[col + 1]) : 0.0f;
            ds0 = p0 * (dp0 - sdelta[col]);
            ds1 = p1 * (dp1 - sdelta[col + 1]);
        };
        // bf16 row r lies over fp32 columns 0..31 of row r. Columns 0..31 are all read before
        // any is written (their bf16 land on fp32 columns 0..15); the bf16 of columns 32..63
        // land on fp32 columns 16..31, already read, so those are written as they are made.
        bf16 *prow = wp + r * 2 * L::LDW, *dsrow = wds + r * 2 * L::LDW;
        float p[16], ds[16];
        UNROLL for (int c = 0; c < 8; c++)
            grads(4 * c + 2 * half, p[2 * c], p[2 * c + 1], ds[2 * c], ds[2 * c + 1]);
        __syncwarp();
        UNROLL for (int c = 0; c < 8; c++) {
            store_bf16x2(prow + 4 * c + 2 * half, p[2 * c], p[2 * c + 1]);
            store_bf16x2(dsrow + 4 * c + 2 * half, ds[2 * c], ds[2 * c + 1]);
        }
        UNROLL for (int c = 8; c < 16; c++) {
            float p0, p1, ds0, ds1;
            grads(4 * c + 2 * half, p0, p1, ds0, ds1);
            store_bf16x2(prow + 4 * c + 2 * half, p0, p1);
            store_bf16x2(dsrow + 4 * c + 2 * half, ds0, ds1);
        }
        __syncwarp();

        UNROLL for (int kk = 0; kk < BR / 16; kk++) {
            frag_a fp, fds;
            wmma::load_matrix_sync(fp, wp + kk * 16, 2 * L::LDW);
            wmma::load_matrix_sync(fds, wds + kk * 16, 2 * L::LDW);
            UNROLL for (int n = 0; n < HD / 16; n++) {
                frag_b fb;
                wmma::load_matrix_sync(fb, sdo + kk * 16 * L::LDT + n * 16, L::LDT);
                wmma::mma_sync(fdv[n], fp, fb, fdv[n]); // dV += Pᵀ dO
                wmma::load_matrix_sync(fb, sq + kk * 16 * L::LDT + n * 16, L::LDT);
                wmma::mma_sync(fdk[n], fds, fb, fdk[n]); // dK += dSᵀ Q
            }
        }
    }
    write_rows<HD>(fdk, ws, dk + head_in, ld_in, k0 + warp * 16, T, scale);
    write_rows<HD>(fdv, ws, dv + head_in, ld_in, k0 + warp * 16, T, 1.0f);
}

// Grid (seqs × heads, query tiles), the last tile first. Warp w accumulates dQ of rows 16w..
template <int HD>
__global__ void dq_bf16_kernel(int T, int heads, const bf16 *__restrict__ q, const bf16 *__restrict__ k,
                               const bf16 *__restrict__ v, int ld_in, const bf16 *__restrict__ d_o, int ld_o,
                               const float *__restrict__ lse, const float *__restrict__ delta, bf16 *__restrict__ dq,
                               float scale_log2, float scale, int vec)
{
    typedef Bf16Layout<HD> L;
    TSR_DYNAMIC_SMEM(unsigned char, smem);
    bf16 *sq = (bf16 *)smem, *sdo = (bf16 *)(smem + L::TILE), *sk = (bf16 *)(smem + 2 * L::TILE);
    bf16 *sv = (bf16 *)(smem + 3 * L::TILE);
    float *slse = (float *)(smem + 4 * L::TILE), *sdelta = slse + BR;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    float *ws = (float *)(smem + 4 * L::TILE + 2 * BR * sizeof(float) + warp * L::BWD_WARP); // S
    float *wd = ws + 16 * L::LDW;                                                                // dP
    bf16 *wds = (bf16 *)ws;                                                                      // dS over S

    const int bh = blockIdx.x, s = bh / heads, h = bh % heads;
    const int qt = (int)(gridDim.y - 1 - blockIdx.y), q0 = qt * BR;
    const size_t head_in = (size_t)s * T * ld_in + (size_t)h * HD, head_o = (size_t)s * T * ld_o + (size_t)h * HD;
    load_tile<BR, HD>(sq, L::LDT, q + head_in + (size_t)q0 * ld_in, ld_in, T - q0, vec);
    load_tile<BR, HD>(sdo, L::LDT, d_o + head_o + (size_t)q0 * ld_o, ld_o, T - q0, vec);
    load_row_stats(slse, sdelta, lse, delta, (size_t)bh * T, q0, T);

    const int r = lane / 2, half = lane % 2, qi = q0 + warp * 16 + r; // this lane's query row
    frag_c fdq[HD / 16];
    UNROLL for (int n = 0; n < HD / 16; n++)
        wmma::fill_fragment(fdq[n], 0.0f);

    for (int kt = 0; kt <= qt; kt++) {
        const int k0 = kt * BC;
        __syncthreads(); // the previous K and V tiles are no longer read
        load_tile<BC, HD>(sk, L::LDT, k + head_in + (size_t)k0 * ld_in, ld_in, T - k0, vec);
        load_tile<BC, HD>(sv, L::LDT, v + head_in + (size_t)k0 * ld_in, ld_in, T - k0, vec);
        __syncthreads();

        rows_times_rows<HD>(ws, L::LDW, sq + warp * 16 * L::LDT, sk, L::LDT);  // S = Q Kᵀ
        rows_times_rows<HD>(wd, L::LDW, sdo + warp * 16 * L::LDT, sv, L::LDT); // dP = dO Vᵀ
        __syncwarp();

        const float lse_r = slse[warp * 16 + r], delta_r = sdelta[warp * 16 + r];
        const float *srow = ws + r * L::LDW, *drow = wd + r * L::LDW;
        auto grad = [&](int col, float &ds0, float &ds1) {
            float s0, s1, dp0, dp1;
            load_f32x2(srow + col, s0, s1);
            load_f32x2(drow + col, dp0, dp1);
            const int j = k0 + col;
            ds0 = j <= qi && qi < T ? exp2f(s0 * scale_log2 - lse_r) * (dp0 - delta_r) : 0.0f;
            ds1 = j + 1 <= qi && qi < T ? exp2f(s1 * scale_log2 - lse_r) * (dp1 - delta_r) : 0.0f;
        };
        // dS over S in place, in the order explained in dkdv_bf16_kernel.
        bf16 *dsrow = wds + r * 2 * L::LDW;
        float ds[16];
        UNROLL for (int c = 0; c < 8; c++)
            grad(4 * c + 2 * half, ds[2 * c], ds[2 * c + 1]);
        __syncwarp();
        UNROLL for (int c = 0; c < 8; c++)
            store_bf16x2(dsrow + 4 * c + 2 * half, ds[2 * c], ds[2 * c + 1]);
        UNROLL for (int c = 8; c < 16; c++) {
            float ds0, ds1;
            grad(4 * c + 2 * half, ds0, ds1);
            store_bf16x2(dsrow + 4 * c + 2 * half, ds0, ds1);
        }
        __syncwarp();

        UNROLL for (int kk = 0; kk < BC / 16; kk++) {
            frag_a fds;
            wmma::load_matrix_sync(fds, wds + kk * 16, 2 * L::LDW);
            UNROLL for (int n = 0; n < HD / 16; n++) {
                frag_b fb;
                wmma::load_matrix_sync(fb, sk + kk * 16 * L::LDT + n * 16, L::LDT);
                wmma::mma_sync(fdq[n], fds, fb, fdq[n]); // dQ += dS K
            }
        }
    }
    write_rows<HD>(fdq, ws, dq + head_in, ld_in, q0 + warp * 16, T, scale);
}

// ---------------------------------------------------------------------------------------------
// F32 kernels: 32-row tiles, tiles read across rows padded to an odd row length.

template <int HD> struct F32Layout {
    static constexpr int LDT = HD + 1, LDS = FT + 1;
    static constexpr int PER = FT * HD / THREADS; // output elements of a tile per thread
    static constexpr size_t FWD = (3 * FT * LDT + FT * LDS + 3 * FT) * sizeof(float);
    static constexpr size_t BWD = (4 * FT * LDT + 2 * FT * LDS + 2 * FT) * sizeof(float);
};

template <int HD> __device__ void load_tile_f32(float *dst, const float *src, int ld, int valid)
{
    for (int idx = threadIdx.x; idx < FT * HD; idx += THREADS) {
        const int r = idx / HD, c = idx % HD;
        dst[r * (HD + 1) + c] = r < valid ? src[(size_t)r * ld + c] : 0.0f;
    }
}

// Grid (seqs × heads, query tiles), the last tile first.
template <int HD>
__global__ void fwd_f32_kernel(int T, int heads, const float *__restrict__ q, const float *__restrict__ k,
                               const float *__restrict__ v, int ld_in, float *__restrict__ o, int ld_o,
                               float *__restrict__ lse, float scale)
{
    typedef F32Layout<HD> L;
    TSR_DYNAMIC_SMEM(float, smem);
    float *sq = smem, *sk = sq + FT * L::LDT, *sv = sk + FT * L::LDT, *ss = sv + FT * L::LDT;
    float *smax = ss + FT * L::LDS, *ssum = smax + FT, *salpha = ssum + FT;
    const int tid = threadIdx.x, bh = blockIdx.x, s = bh / heads, h = bh % heads;
    const int qt = (int)(gridDim.y - 1 - blockIdx.y), q0 = qt * FT;
    const size_t head = (size_t)s * T * ld_in + (size_t)h * HD;
    load_tile_f32<HD>(sq, q + head + (size_t)q0 * ld_in, ld_in, T - q0);
    if (tid < FT) {
        smax[tid] = -INFINITY;
        ssum[tid] = 0.0f;
    }
    float acc[L::PER]; // element tid + u THREADS of the tile: row e / HD, column e % HD
    UNROLL for (int u = 0; u < L::PER; u++)
        acc[u] = 0.0f;

    for (int kt = 0; kt <= qt; kt++) {
        const int k0 = kt * FT;
        __syncthreads();
        load_tile_f32<HD>(sk, k + head + (size_t)k0 * ld_in, ld_in, T - k0);
        load_tile_f32<HD>(sv, v + head + (size_t)k0 * ld_in, ld_in, T - k0);
        __syncthreads();
        for (int e = tid; e < FT * FT; e += THREADS) {
            const int i = e / FT, j = e % FT;
            float dot = 0.0f;
            for (int d = 0; d < HD; d++)
                dot += sq[i * L::LDT + d] * sk[j * L::LDT + d];
            ss[i * L::LDS + j] = k0 + j <= q0 + i ? dot * scale : -INFINITY;
        }
        __syncthreads();
        if (tid < FT) { // one thread per row: key 0 makes every row's max finite
            float mx = smax[tid], sum = 0.0f;
            for (int j = 0; j < FT; j++)
                mx = fmaxf(mx, ss[tid * L::LDS + j]);
            for (int j = 0; j < FT; j++) {
                const float p = expf(ss[tid * L::LDS + j] - mx);
                ss[tid * L::LDS + j] = p;
                sum += p;
            }
            salpha[tid] = expf(smax[tid] - mx);
            ssum[tid] = ssum[tid] * salpha[tid] + sum;
            smax[tid] = mx;
        }
        __syncthreads();
        UNROLL for (int u = 0; u < L::PER; u++) {
            const int e = tid + u * THREADS, i = e / HD, d = e % HD;
            float a = acc[u] * salpha[i];
            for (int j = 0; j < FT; j++)
                a += ss[i * L::LDS + j] * sv[j * L::LDT + d];
            acc[u] = a;
        }
    }
    UNROLL for (int u = 0; u < L::PER; u++) {
        const int e = tid + u * THREADS, i = e / HD, d = e % HD;
        if (q0 + i < T)
            o[((size_t)s * T + q0 + i) * ld_o + (size_t)h * HD + d] = acc[u] / ssum[i];
    }
    if (tid < FT && q0 + tid < T)
        lse[(size_t)bh * T + q0 + tid] = smax[tid] + logf(ssum[tid]);
}

__device__ inline void load_row_stats_f32(float *slse, float *sdelta, const float *lse, const float *delta,
                                          size_t base, int t0, int T)
{
    if (threadIdx.x < FT) {
        const int t = t0 + threadIdx.x;
        slse[threadIdx.x] = t < T ? lse[base + t] : 0.0f;
        sdelta[threadIdx.x] = t < T ? delta[base + t] : 0.0f;
    }
}

// Grid (seqs × heads, key tiles).
template <int HD>
__global__ void dkdv_f32_kernel(int T, int heads, const float *__restrict__ q, const float *__restrict__ k,
                                const float *__restrict__ v, int ld_in, const float *__restrict__ d_o, int ld_o,
                                const float *__restrict__ lse, const float *__restrict__ delta, float *__restrict__ dk,
                                float *__restrict__ dv, float scale)
{
    typedef F32Layout<HD> L;
    TSR_DYNAMIC_SMEM(float, smem);
    float *sk = smem, *sv = sk + FT * L::LDT, *sq = sv + FT * L::LDT, *sdo = sq + FT * L::LDT;
    float *sp = sdo + FT * L::LDT, *sds = sp + FT * L::LDS, *slse = sds + FT * L::LDS, *sdelta = slse + FT;
    const int tid = threadIdx.x, bh = blockIdx.x, s = bh / heads, h = bh % heads;
    const int kt = blockIdx.y, k0 = kt * FT, nq = (int)gridDim.y;
    const size_t head_in = (size_t)s * T * ld_in + (size_t)h * HD, head_o = (size_t)s * T * ld_o + (size_t)h * HD;
    load_tile_f32<HD>(sk, k + head_in + (size_t)k0 * ld_in, ld_in, T - k0);
    load_tile_f32<HD>(sv, v + head_in + (size_t)k0 * ld_in, ld_in, T - k0);
    float adk[L::PER], adv[L::PER]; // key row e / HD, column e % HD, e = tid + u THREADS
    UNROLL for (int u = 0; u < L::PER; u++)
        adk[u] = adv[u] = 0.0f;

    for (int qt = kt; qt < nq; qt++) {
        const int q0 = qt * FT;
        __syncthreads();
        load_tile_f32<HD>(sq, q + head_in + (size_t)q0 * ld_in, ld_in, T - q0);
        load_tile_f32<HD>(sdo, d_o + head_o + (size_t)q0 * ld_o, ld_o, T - q0);
        load_row_stats_f32(slse, sdelta, lse, delta, (size_t)bh * T, q0, T);
        __syncthreads();
        for (int e = tid; e < FT * FT; e += THREADS) {
            const int j = e / FT, i = e % FT; // key row, query column: Pᵀ and dSᵀ
            float sdot = 0.0f, pdot = 0.0f;
            for (int d = 0; d < HD; d++) {
                sdot += sk[j * L::LDT + d] * sq[i * L::LDT + d];
                pdot += sv[j * L::LDT + d] * sdo[i * L::LDT + d];
            }
            const int ti = q0 + i;
            const float p = ti >= k0 + j && ti < T ? expf(sdot * scale - slse[i]) : 0.0f;
            sp[j * L::LDS + i] = p;
            sds[j * L::LDS + i] = p * (pdot - sdelta[i]);
        }
        __syncthreads();
        UNROLL for (int u = 0; u < L::PER; u++) {
            const int e = tid + u * THREADS, j = e / HD, d = e % HD;
            float a = 0.0f, b = 0.0f;
            for (int i = 0; i < FT; i++) {
                a += sp[j * L::LDS + i] * sdo[i * L::LDT + d];
                b += sds[j * L::LDS + i] * sq[i * L::LDT + d];
            }
            adv[u] += a;
            adk[u] += b;
        }
    }
    UNROLL for (int u = 0; u < L::PER; u++) {
        const int e = tid + u * THREADS, j = e / HD, d = e % HD;
        if (k0 + j < T) {
            const size_t at = head_in + (size_t)(k0 + j) * ld_in + d;
            dk[at] = adk[u] * scale;
            dv[at] = adv[u];
        }
    }
}

// Grid (seqs × heads, query tiles), the last tile first.
template <int HD>
__global__ void dq_f32_kernel(int T, int heads, const float *__restrict__ q, const float *__restrict__ k,
                              const float *__restrict__ v, int ld_in, const float *__restrict__ d_o, int ld_o,
                              const float *__restrict__ lse, const float *__restrict__ delta, float *__restrict__ dq,
                              float scale)
{
    typedef F32Layout<HD> L;
    TSR_DYNAMIC_SMEM(float, smem);
    float *sq = smem, *sdo = sq + FT * L::LDT, *sk = sdo + FT * L::LDT, *sv = sk + FT * L::LDT;
    float *sds = sv + FT * L::LDT, *slse = sds + 2 * FT * L::LDS, *sdelta = slse + FT;
    const int tid = threadIdx.x, bh = blockIdx.x, s = bh / heads, h = bh % heads;
    const int qt = (int)(gridDim.y - 1 - blockIdx.y), q0 = qt * FT;
    const size_t head_in = (size_t)s * T * ld_in + (size_t)h * HD, head_o = (size_t)s * T * ld_o + (size_t)h * HD;
    load_tile_f32<HD>(sq, q + head_in + (size_t)q0 * ld_in, ld_in, T - q0);
    load_tile_f32<HD>(sdo, d_o + head_o + (size_t)q0 * ld_o, ld_o, T - q0);
    load_row_stats_f32(slse, sdelta, lse, delta, (size_t)bh * T, q0, T);
    float adq[L::PER]; // query row e / HD, column e % HD, e = tid + u THREADS
    UNROLL for (int u = 0; u < L::PER; u++)
        adq[u] = 0.0f;

    for (int kt = 0; kt <= qt; kt++) {
        const int k0 = kt * FT;
        __syncthreads();
        load_tile_f32<HD>(sk, k + head_in + (size_t)k0 * ld_in, ld_in, T - k0);
        load_tile_f32<HD>(sv, v + head_in + (size_t)k0 * ld_in, ld_in, T - k0);
        __syncthreads();
        for (int e = tid; e < FT * FT; e += THREADS) {
            const int i = e / FT, j = e % FT;
            float sdot = 0.0f, pdot = 0.0f;
            for (int d = 0; d < HD; d++) {
                sdot += sq[i * L::LDT + d] * sk[j * L::LDT + d];
                pdot += sdo[i * L::LDT + d] * sv[j * L::LDT + d];
            }
            const int ti = q0 + i;
            const float p = k0 + j <= ti && ti < T ? expf(sdot * scale - slse[i]) : 0.0f;
            sds[i * L::LDS + j] = p * (pdot - sdelta[i]);
        }
        __syncthreads();
        UNROLL for (int u = 0; u < L::PER; u++) {
            const int e = tid + u * THREADS, i = e / HD, d = e % HD;
            float a = 0.0f;
            for (int j = 0; j < FT; j++)
                a += sds[i * L::LDS + j] * sk[j * L::LDT + d];
            adq[u] += a;
        }
    }
    UNROLL for (int u = 0; u < L::PER; u++) {
        const int e = tid + u * THREADS, i = e / HD, d = e % HD;
        if (q0 + i < T)
            dq[head_in + (size_t)(q0 + i) * ld_in + d] = adq[u] * scale;
    }
}

// ---------------------------------------------------------------------------------------------
// delta = rowsum(dO∘O) per (token, head): one warp each, grid-stride.

__device__ inline float to_f32(float x)
{
    return x;
}

__device__ inline float to_f32(bf16 x)
{
    return __bfloat162float(x);
}

template <typename E>
__global__ void delta_kernel(int T, int heads, int hd, long long pairs, const E *__restrict__ o,
                             const E *__restrict__ d_o, int ld_o, float *__restrict__ delta)
{
    const int lane = threadIdx.x % 32;
    const long long stride = (long long)gridDim.x * WARPS;
    for (long long p = (long long)blockIdx.x * WARPS + threadIdx.x / 32; p < pairs; p += stride) {
        const long long row = p / heads; // token s T + t
        const int h = (int)(p % heads);
        const E *orow = o + row * ld_o + (long long)h * hd, *drow = d_o + row * ld_o + (long long)h * hd;
        float acc = 0.0f;
        for (int d = lane; d < hd; d += 32)
            acc += to_f32(orow[d]) * to_f32(drow[d]);
        for (int off = 16; off > 0; off /= 2)
            acc += __shfl_xor_sync(0xffffffffu, acc, off);
        if (lane == 0) {
            const long long s = row / T, t = row % T;
            delta[(s * heads + h) * T + t] = acc;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Launchers

int aligned16(const void *p)
{
    return ((uintptr_t)p & 15) == 0;
}

// Kernels that need more than the default 48 KiB of dynamic shared memory must say so first.
cudaError_t allow_smem(const void *kernel, size_t bytes)
{
    if (bytes <= 48 * 1024)
        return cudaSuccess;
    return cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes);
}

float inv_sqrt(int hd)
{
    return (float)(1.0 / sqrt((double)hd));
}

template <int HD>
cudaError_t forward_hd(tsr_dtype_t dt, int seqs, int T, int heads, const void *q, const void *k, const void *v,
                       int ld_in, void *o, int ld_o, float *lse, cudaStream_t stream)
{
    const float scale = inv_sqrt(HD);
    cudaError_t err;
    if (dt == TSR_DTYPE_BF16) {
        auto kernel = fwd_bf16_kernel<HD>;
        const size_t smem = Bf16Layout<HD>::FWD;
        if ((err = allow_smem((const void *)kernel, smem)) != cudaSuccess)
            return err;
        const dim3 grid((unsigned)(seqs * heads), (unsigned)((T + BR - 1) / BR));
        const int vec = aligned16(q) && aligned16(k) && aligned16(v) && ld_in % 8 == 0;
        TSR_LAUNCH(kernel, grid, THREADS, smem, stream, T, heads, (const bf16 *)q, (const bf16 *)k, (const bf16 *)v,
                   ld_in, (bf16 *)o, ld_o, lse, scale * LOG2E, vec);
    } else {
        auto kernel = fwd_f32_kernel<HD>;
        const size_t smem = F32Layout<HD>::FWD;
        if ((err = allow_smem((const void *)kernel, smem)) != cudaSuccess)
            return err;
        const dim3 grid((unsigned)(seqs * heads), (unsigned)((T + FT - 1) / FT));
        TSR_LAUNCH(kernel, grid, THREADS, smem, stream, T, heads, (const float *)q, (const float *)k,
                   (const float *)v, ld_in, (float *)o, ld_o, lse, scale);
    }
    return cudaGetLastError();
}

template <typename E>
cudaError_t launch_delta(int seqs, int T, int heads, int hd, const void *o, const void *d_o, int ld_o, float *delta,
                         cudaStream_t stream)
{
    const long long pairs = (long long)seqs * T * heads;
    long long blocks = (pairs + WARPS - 1) / WARPS;
    if (blocks > 65535)
        blocks = 65535;
    auto kernel = delta_kernel<E>;
    TSR_LAUNCH(kernel, (unsigned)blocks, THREADS, 0, stream, T, heads, hd, pairs, (const E *)o, (const E *)d_o, ld_o,
               delta);
    return cudaGetLastError();
}

template <int HD>
cudaError_t backward_hd(tsr_dtype_t dt, int seqs, int T, int heads, const void *q, const void *k, const void *v,
                        int ld_in, const void *o, const void *d_o, int ld_o, const float *lse, float *delta, void *dq,
                        void *dk, void *dv, cudaStream_t stream)
{
    const float scale = inv_sqrt(HD);
    cudaError_t err;
    if (dt == TSR_DTYPE_BF16) {
        if ((err = launch_delta<bf16>(seqs, T, heads, HD, o, d_o, ld_o, delta, stream)) != cudaSuccess)
            return err;
        auto kdkdv = dkdv_bf16_kernel<HD>;
        auto kdq = dq_bf16_kernel<HD>;
        const size_t smem = Bf16Layout<HD>::BWD;
        if ((err = allow_smem((const void *)kdkdv, smem)) != cudaSuccess ||
            (err = allow_smem((const void *)kdq, smem)) != cudaSuccess)
            return err;
        const dim3 grid((unsigned)(seqs * heads), (unsigned)((T + BR - 1) / BR));
        const int vec = aligned16(q) && aligned16(k) && aligned16(v) && aligned16(d_o) && ld_in % 8 == 0 &&
                        ld_o % 8 == 0;
        TSR_LAUNCH(kdkdv, grid, THREADS, smem, stream, T, heads, (const bf16 *)q, (const bf16 *)k, (const bf16 *)v,
                   ld_in, (const bf16 *)d_o, ld_o, lse, (const float *)delta, (bf16 *)dk, (bf16 *)dv, scale * LOG2E,
                   scale, vec);
        if ((err = cudaGetLastError()) != cudaSuccess)
            return err;
        TSR_LAUNCH(kdq, grid, THREADS, smem, stream, T, heads, (const bf16 *)q, (const bf16 *)k, (const bf16 *)v,
                   ld_in, (const bf16 *)d_o, ld_o, lse, (const float *)delta, (bf16 *)dq, scale * LOG2E, scale,
                   vec);
    } else {
        if ((err = launch_delta<float>(seqs, T, heads, HD, o, d_o, ld_o, delta, stream)) != cudaSuccess)
            return err;
        auto kdkdv = dkdv_f32_kernel<HD>;
        auto kdq = dq_f32_kernel<HD>;
        const size_t smem = F32Layout<HD>::BWD;
        if ((err = allow_smem((const void *)kdkdv, smem)) != cudaSuccess ||
            (err = allow_smem((const void *)kdq, smem)) != cudaSuccess)
            return err;
        const dim3 grid((unsigned)(seqs * heads), (unsigned)((T + FT - 1) / FT));
        TSR_LAUNCH(kdkdv, grid, THREADS, smem, stream, T, heads, (const float *)q, (const float *)k,
                   (const float *)v, ld_in, (const float *)d_o, ld_o, lse, (const float *)delta, (float *)dk,
                   (float *)dv, scale);
        if ((err = cudaGetLastError()) != cudaSuccess)
            return err;
        TSR_LAUNCH(kdq, grid, THREADS, smem, stream, T, heads, (const float *)q, (const float *)k, (const float *)v,
                   ld_in, (const float *)d_o, ld_o, lse, (const float *)delta, (float *)dq, scale);
    }
    return cudaGetLastError();
}

} // namespace

extern "C" cudaError_t tsr__cuda_attention_forward(tsr_dtype_t dt, int seqs, int T, int heads, int hd, const void *q,
                                                   const void *k, const void *v, int ld_in, void *o, int ld_o,
                                                   float *lse, cudaStream_t stream)
{
    if ((dt != TSR_DTYPE_F32 && dt != TSR_DTYPE_BF16) || seqs < 0 || T < 0 || heads < 0)
        return cudaErrorInvalidValue;
    if (seqs == 0 || T == 0 || heads == 0)
        return cudaSuccess;
    switch (hd) {
    case 16:
        return forward_hd<16>(dt, seqs, T, heads, q, k, v, ld_in, o, ld_o, lse, stream);
    case 32:
        return forward_hd<32>(dt, seqs, T, heads, q, k, v, ld_in, o, ld_o, lse, stream);
    case 64:
        return forward_hd<64>(dt, seqs, T, heads, q, k, v, ld_in, o, ld_o, lse, stream);
    case 128:
        return forward_hd<128>(dt, seqs, T, heads, q, k, v, ld_in, o, ld_o, lse, stream);
    default:
        return cudaErrorInvalidValue;
    }
}

extern "C" cudaError_t tsr__cuda_attention_backward(tsr_dtype_t dt, int seqs, int T, int heads, int hd, const void *q,
                                                    const void *k, const void *v, int ld_in, const void *o,
                                                    const void *d_o, int ld_o, const float *lse, float *delta,
                                                    void *dq, void *dk, void *dv, cudaStream_t stream)
{
    if ((dt != TSR_DTYPE_F32 && dt != TSR_DTYPE_BF16) || seqs < 0 || T < 0 || heads < 0)
        return cudaErrorInvalidValue;
    if (seqs == 0 || T == 0 || heads == 0)
        return cudaSuccess;
    switch (hd) {
    case 16:
        return backward_hd<16>(dt, seqs, T, heads, q, k, v, ld_in, o, d_o, ld_o, lse, delta, dq, dk, dv, stream);
    case 32:
        return backward_hd<32>(dt, seqs, T, heads, q, k, v, ld_in, o, d_o, ld_o, lse, delta, dq, dk, dv, stream);
    case 64:
        return backward_hd<64>(dt, seqs, T, heads, q, k, v, ld_in, o, d_o, ld_o, lse, delta, dq, dk, dv, stream);
    case 128:
        return backward_hd<128>(dt, seqs, T, heads, q, k, v, ld_in, o, d_o, ld_o, lse, delta, dq, dk, dv, stream);
    default:
        return cudaErrorInvalidValue;
    }
}
