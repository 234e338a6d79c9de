/*
 * cuda_emu.h: a CPU emulation of the subset of CUDA that lib/device/cuda_launch.h allows, so the
 * kernels in lib/device/cuda_*.cu compile as plain C++ and run on machines without a GPU or the
 * CUDA toolkit, with the results a GPU would give (up to the order of float rounding).
 *
 * How a kernel runs. tsr_emu::launch (what TSR_LAUNCH expands to under -DTSR_CUDA_EMU) runs the
 * blocks of the grid one after the other, on the calling thread, before it returns. The threads
 * of a block are fibers (own stacks, switched in user space) that run one at a time and switch
 * only where CUDA threads wait for each other: __syncthreads() is a barrier of the block; the
 * warp functions (__syncwarp, __shfl_*_sync, the wmma *_sync functions) meet the lanes named in
 * their mask (lane = linear thread index % 32, warp = linear index / 32; a block whose size is
 * not a multiple of 32 ends in a partial warp). Successive blocks and launches alternate between
 * starting their threads in increasing and in decreasing order, so that a missing barrier shows
 * as a wrong result. Static __shared__ arrays are function-local statics (one block runs at a
 * time, and each host thread has its own); dynamic shared memory is a buffer of the launch's
 * size, 64-byte aligned, filled with 0xff bytes (NaN as floats) before each block.
 *
 * What is checked. Where real CUDA would hang or leave the result undefined, the launch stops,
 * prints one line to stderr starting with "tsr_emu:" and makes cudaGetLastError() return
 * cudaErrorLaunchFailure (cudaErrorInvalidConfiguration or cudaErrorInvalidValue for a launch
 * that CUDA would refuse); tsr_emu::last_message() returns the text. Checked: a deadlock (every
 * thread waits at a barrier or warp operation that cannot complete); threads of a block at
 * different __syncthreads() calls; a thread that returns while others wait for it at
 * __syncthreads() or that others reach one after it returned; a warp operation whose mask names
 * a lane that returned, or that lanes reach with different operations or masks; a shuffle that
 * reads a lane outside the mask or the block; a width that is not a power of two up to 32; wmma
 * fragments whose elements differ between the lanes of a warp (touched non-uniformly); wmma
 * pointers not 32-byte aligned or ldm not a multiple of 16 bytes, or lanes passing different
 * ones; block and grid sizes beyond CUDA's limits; more than 48 KiB of dynamic shared memory
 * without cudaFuncSetAttribute. Not checked: data races (except as the two start orders expose
 * them) and spin-waits on other threads or blocks (they hang: don't write them). Built with
 * -fsanitize=address, out-of-bounds accesses of kernels are reported too (the fiber switches
 * are annotated for it); a kernel thread that overflows its stack crashes with a message saying so.
 *
 * How to run a .cu file's kernels on the CPU (tests/emu/local.mk does it for cuda_kernels.cu):
 *   1. Compile it as C++17 with -DTSR_CUDA_EMU -I$(top_srcdir)/tests/emu -I$(top_srcdir)/lib:
 *        g++ -x c++ -std=c++17 -DTSR_CUDA_EMU -Itests/emu -Ilib -c lib/device/cuda_foo.cu
 *      In automake, a two-line tests/emu/emu_cuda_foo.cc that #includes "device/cuda_foo.cu"
 *      does this with dependency tracking; add it to the test's _SOURCES (see local.mk).
 *   2. Link tests/emu/libtsr_emu.a (cuda_emu.cc). Nothing from CUDA, MPI or libtessera is needed.
 *   3. Call the launchers (from C++ or C) with host memory where the GPU code has device memory;
 *      they return when the kernel has run, with the error a bad launch or kernel gave:
 *        float x[1000];
 *        cudaError_t err = tsr__cuda_fill_f32(x, 2.5f, 1000, 0);   // x[i] == 2.5f now
 *      Streams are ignored (pass 0); cudaMemcpyAsync and cudaMemsetAsync act at once. Buffers
 *      that wmma loads or stores must be 32-byte aligned (cudaMalloc's are): allocate them with
 *      posix_memalign, not std::vector.
 *   Tests in C++ can use tests/tap.h with TAP_NO_MPI defined (one process, no MPI).
 *
 * The surface (nothing else of CUDA is provided): dim3, uint3, threadIdx, blockIdx, blockDim,
 * gridDim, warpSize; __global__ __device__ __host__ __forceinline__ __shared__ (static __shared__
 * too) __align__(n) __launch_bounds__(...) (__restrict__ is g++'s own); __syncthreads, __syncwarp,
 * __shfl_sync/_up/_down/_xor (int, unsigned, long, unsigned long, long long, unsigned long
 * long, float, double, __nv_bfloat16, __nv_bfloat162); atomicAdd (float, double, int, unsigned,
 * unsigned long long), atomicMax (int, unsigned); __nv_bfloat16 with the constructors,
 * conversions and operators of CUDA 13's cuda_bf16.h, __float2bfloat16(_rn), __double2bfloat16,
 * __bfloat162float, __nv_bfloat162 with __floats2bfloat162_rn, __float2bfloat162_rn,
 * __low2float, __high2float; <math.h> plus __expf, __logf, rsqrtf, __fdividef,
 * __int_as_float, __float_as_int, __uint_as_float, __float_as_uint, and CUDA's min/max
 * overloads; nvcuda::wmma for bf16 inputs and float accumulators in shapes 16x16x16, 32x8x16 and
 * 8x32x16 (fragment, fill_fragment, load_matrix_sync, store_matrix_sync, mma_sync); host:
 * cudaStream_t, cudaError_t, cudaGetLastError, cudaGetErrorString, cudaMemsetAsync,
 * cudaMemcpyAsync, cudaFuncSetAttribute (cudaFuncAttributeMaxDynamicSharedMemorySize; the kernel
 * or the kernel cast to const void *).
 * Dynamic shared memory only through TSR_DYNAMIC_SMEM (extern __shared__ does not compile).
 *
 * Differences from a GPU to keep in mind: each lane's wmma fragment holds the whole tile
 * (num_elements is M*K, K*N or M*N, not a per-lane share), so code may only apply the same
 * operation to every element; __expf and __logf are as exact as expf and logf; tensor-core
 * sums are formed in fp32 in k order; template kernels must be named with their template
 * arguments in TSR_LAUNCH (kernel<float>), as the emulation cannot deduce them from the
 * arguments; kernel errors show at once in cudaGetLastError, not at the next synchronization.
 *
 * Cost, measured on the 2-core build machine (x86-64, one core): about 40 million
 * thread-barriers, 45 million thread-shuffles, 2.5 million warp mma_syncs (16x16x16) and 30
 * million started threads per second (blocks of 1024 threads: 30 million thread-barriers).
 * Test shapes of up to a few million elements therefore take well under a second. Other CPUs
 * switch fibers with ucontext, about 8 times slower. Each fiber has a 256 KiB stack (set
 * TSR_EMU_STACK_KB to change it) above a guard page.
 */
#ifndef TESSERA_CUDA_EMU_H
#define TESSERA_CUDA_EMU_H

#include <stddef.h>

#ifdef __cplusplus
#define TSR_EMU_DEFAULT_(value) = value
extern "C" {
#else
#define TSR_EMU_DEFAULT_(value)
#endif

/* The error codes the emulation returns, with CUDA's values. */
typedef enum cudaError {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorLaunchFailure = 719
} cudaError_t;

typedef enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4
} cudaMemcpyKind;

typedef enum cudaFuncAttribute {
    cudaFuncAttributeMaxDynamicSharedMemorySize = 8
} cudaFuncAttribute;

/* Streams are accepted and ignored: everything runs at once, in call order. */
typedef struct CUstream_st *cudaStream_t;

/* The last error of a launch or call on this host thread, reset to cudaSuccess. */
cudaError_t cudaGetLastError(void);
const char *cudaGetErrorString(cudaError_t error);
cudaError_t cudaMemsetAsync(void *ptr, int value, size_t count, cudaStream_t stream TSR_EMU_DEFAULT_(0));
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t count, cudaMemcpyKind kind,
                            cudaStream_t stream TSR_EMU_DEFAULT_(0));

#ifdef __cplusplus
}

#include <math.h>
#include <stdint.h>
#include <string.h>

#include <cmath>
#include <limits>
#include <tuple>
#include <type_traits>
#include <utility>

/* ---- qualifiers ---- */
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)
/* One block runs at a time per host thread, so a per-thread static is the block's memory;
 * thread_local in a function is static already, so `static __shared__` compiles too. */
#define __shared__ thread_local

/* ---- built-in variables ---- */
struct uint3 {
    unsigned int x, y, z;
};

struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
    constexpr operator uint3() const { return uint3{x, y, z}; }
};

namespace tsr_emu {
namespace detail {
/* Set by the scheduler before it switches to a fiber; read-only for kernels. */
extern __thread const uint3 *tls_thread_idx, *tls_block_idx, *tls_block_dim, *tls_grid_dim;
/* Not a constant expression, like CUDA's warpSize. */
inline int warp_size() { return 32; }
} // namespace detail
} // namespace tsr_emu

#define threadIdx (*static_cast<const uint3 *>(::tsr_emu::detail::tls_thread_idx))
#define blockIdx (*static_cast<const uint3 *>(::tsr_emu::detail::tls_block_idx))
#define blockDim (*static_cast<const uint3 *>(::tsr_emu::detail::tls_block_dim))
#define gridDim (*static_cast<const uint3 *>(::tsr_emu::detail::tls_grid_dim))
#define warpSize (::tsr_emu::detail::warp_size())

/* ---- the scheduler's entry points (cuda_emu.cc) ---- */
namespace tsr_emu {
namespace detail {
enum warp_op_kind { op_syncwarp, op_shfl_idx, op_shfl_up, op_shfl_down, op_shfl_xor };

void syncthreads(const char *file, int line);
void warp_op(warp_op_kind kind, unsigned mask, const void *in, void *out, size_t size, int arg, int width,
             const char *file, int line);
/* wmma: fragments are tiles of rows x cols elements of elem_size bytes, row-major. */
void wmma_load(void *frag, int rows, int cols, size_t elem_size, const void *p, unsigned ldm, bool col_major,
               const char *file, int line);
void wmma_store(float *p, const float *frag, int rows, int cols, unsigned ldm, bool col_major, const char *file,
                int line);
void wmma_mma(float *d, const uint16_t *a, const uint16_t *b, const float *c, int m, int n, int k,
              const char *file, int line);
void launch(const void *kernel, dim3 grid, dim3 block, size_t smem, void (*invoke)(void *), void *call);
cudaError_t func_set_attribute(const void *kernel, cudaFuncAttribute attr, int value);
} // namespace detail

/* The dynamic shared memory of the running block (NULL when the launch asked for none). */
void *dynamic_smem();

/* The text of the last error the emulation reported on this host thread ("" if none). */
const char *last_message();

/* Run kernel(args...) on grid x block threads with smem bytes of dynamic shared memory; the
 * arguments are converted to the kernel's parameter types here, as CUDA does at a launch. */
template <typename... P, typename... A>
void launch(void (*kernel)(P...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream, A &&...args)
{
    static_assert(sizeof...(P) == sizeof...(A), "tsr_emu::launch: wrong number of kernel arguments");
    (void)stream;
    struct call_t {
        void (*kernel)(P...);
        std::tuple<typename std::decay<P>::type...> params;
    } call{kernel, std::tuple<typename std::decay<P>::type...>(std::forward<A>(args)...)};
    // Each thread gets its own copies of the parameters, as each CUDA thread does.
    detail::launch(
        reinterpret_cast<const void *>(kernel), grid, block, smem,
        [](void *p) {
            call_t *c = static_cast<call_t *>(p);
            std::apply(c->kernel, c->params);
        },
        &call);
}
} // namespace tsr_emu

template <typename T> inline cudaError_t cudaFuncSetAttribute(T *kernel, cudaFuncAttribute attr, int value)
{
    static_assert(std::is_function<T>::value, "cudaFuncSetAttribute: the first argument must be a kernel");
    return tsr_emu::detail::func_set_attribute(reinterpret_cast<const void *>(kernel), attr, value);
}
/* The runtime API's form, a kernel cast to const void * (as (const void *)kernel does). */
inline cudaError_t cudaFuncSetAttribute(const void *kernel, cudaFuncAttribute attr, int value)
{
    return tsr_emu::detail::func_set_attribute(kernel, attr, value);
}

/* ---- synchronization ---- */
inline void __syncthreads(const char *file = __builtin_FILE(), int line = __builtin_LINE())
{
    tsr_emu::detail::syncthreads(file, line);
}

inline void __syncwarp(unsigned mask = 0xffffffffu, const char *file = __builtin_FILE(), int line = __builtin_LINE())
{
    tsr_emu::detail::warp_op(tsr_emu::detail::op_syncwarp, mask, nullptr, nullptr, 0, 0, 32, file, line);
}

/* ---- atomics: fibers switch only at waits, so a plain read-modify-write is atomic ---- */
#define TSR_EMU_ATOMIC_ADD_(T)                                                                                 \
    inline T atomicAdd(T *address, T val)                                                                      \
    {                                                                                                          \
        T old = *address;                                                                                      \
        *address = old + val;                                                                                  \
        return old;                                                                                            \
    }
TSR_EMU_ATOMIC_ADD_(int)
TSR_EMU_ATOMIC_ADD_(unsigned int)
TSR_EMU_ATOMIC_ADD_(unsigned long long)
TSR_EMU_ATOMIC_ADD_(float)
TSR_EMU_ATOMIC_ADD_(double)
#undef TSR_EMU_ATOMIC_ADD_

#define TSR_EMU_ATOMIC_MAX_(T)                                                                                 \
    inline T atomicMax(T *address, T val)                                                                      \
    {                                                                                                          \
        T old = *address;                                                                                      \
        *address = old > val ? old : val;                                                                      \
        return old;                                                                                            \
    }
TSR_EMU_ATOMIC_MAX_(int)
TSR_EMU_ATOMIC_MAX_(unsigned int)
#undef TSR_EMU_ATOMIC_MAX_

/* ---- math ---- */
/* glibc's <math.h> declares __expf and __logf (without defining them); match its declaration. */
extern "C" inline float __expf(float x) noexcept { return expf(x); }
extern "C" inline float __logf(float x) noexcept { return logf(x); }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline float __fdividef(float x, float y) { return x / y; }
inline float __int_as_float(int x)
{
    float f;
    memcpy(&f, &x, sizeof f);
    return f;
}
inline int __float_as_int(float x)
{
    int i;
    memcpy(&i, &x, sizeof i);
    return i;
}
inline float __uint_as_float(unsigned int x)
{
    float f;
    memcpy(&f, &x, sizeof f);
    return f;
}
inline unsigned int __float_as_uint(float x)
{
    unsigned int u;
    memcpy(&u, &x, sizeof u);
    return u;
}

/* CUDA's min and max: the same overloads as crt/math_functions.hpp. */
#define TSR_EMU_MINMAX_(R, A, B)                                                                               \
    inline R min(A a, B b) { return (R)a < (R)b ? (R)a : (R)b; }                                               \
    inline R max(A a, B b) { return (R)a > (R)b ? (R)a : (R)b; }
TSR_EMU_MINMAX_(int, int, int)
TSR_EMU_MINMAX_(unsigned int, unsigned int, unsigned int)
TSR_EMU_MINMAX_(unsigned int, int, unsigned int)
TSR_EMU_MINMAX_(unsigned int, unsigned int, int)
TSR_EMU_MINMAX_(long, long, long)
TSR_EMU_MINMAX_(unsigned long, unsigned long, unsigned long)
TSR_EMU_MINMAX_(unsigned long, long, unsigned long)
TSR_EMU_MINMAX_(unsigned long, unsigned long, long)
TSR_EMU_MINMAX_(long long, long long, long long)
TSR_EMU_MINMAX_(unsigned long long, unsigned long long, unsigned long long)
TSR_EMU_MINMAX_(unsigned long long, long long, unsigned long long)
TSR_EMU_MINMAX_(unsigned long long, unsigned long long, long long)
#undef TSR_EMU_MINMAX_
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }
inline double min(float a, double b) { return fmin(a, b); }
inline double max(float a, double b) { return fmax(a, b); }
inline double min(double a, float b) { return fmin(a, b); }
inline double max(double a, float b) { return fmax(a, b); }

/* ---- bfloat16: the conversions and operators of CUDA 13's cuda_bf16.h ---- */
struct __nv_bfloat16_raw {
    unsigned short x;
};
struct __nv_bfloat162_raw {
    unsigned short x, y;
};

struct __align__(2) __nv_bfloat16 {
  protected:
    unsigned short __x;

  public:
    __nv_bfloat16() = default;
    constexpr __nv_bfloat16(const __nv_bfloat16_raw &hr) : __x(hr.x) {}
    __nv_bfloat16 &operator=(const __nv_bfloat16_raw &hr)
    {
        __x = hr.x;
        return *this;
    }
    operator __nv_bfloat16_raw() const { return __nv_bfloat16_raw{__x}; }

    __nv_bfloat16(float f);
    __nv_bfloat16(double f);
    operator float() const;
    __nv_bfloat16 &operator=(float f);
    __nv_bfloat16 &operator=(double f);

    __nv_bfloat16(short val);
    __nv_bfloat16(unsigned short val);
    __nv_bfloat16(int val);
    __nv_bfloat16(unsigned int val);
    __nv_bfloat16(long val);
    __nv_bfloat16(unsigned long val);
    __nv_bfloat16(long long val);
    __nv_bfloat16(unsigned long long val);

    operator signed char() const;
    operator unsigned char() const;
    operator char() const;
    operator short() const;
    operator unsigned short() const;
    operator int() const;
    operator unsigned int() const;
    operator long() const;
    operator unsigned long() const;
    operator long long() const;
    operator unsigned long long() const;
    __nv_bfloat16 &operator=(short val);
    __nv_bfloat16 &operator=(unsigned short val);
    __nv_bfloat16 &operator=(int val);
    __nv_bfloat16 &operator=(unsigned int val);
    __nv_bfloat16 &operator=(long long val);
    __nv_bfloat16 &operator=(unsigned long long val);
    constexpr operator bool() const { return (__x & 0x7FFFU) != 0U; }
};
typedef __nv_bfloat16 nv_bfloat16;

namespace tsr_emu {
namespace detail {
inline __nv_bfloat16 bf16_from_bits(unsigned short bits) { return __nv_bfloat16(__nv_bfloat16_raw{bits}); }
inline unsigned short bf16_bits(__nv_bfloat16 h) { return static_cast<__nv_bfloat16_raw>(h).x; }

/* Round to nearest even; any NaN becomes the canonical 0x7fff, as cvt.rn.bf16.f32 gives. */
inline unsigned short float_to_bf16_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return 0x7fff;
    uint32_t rest = u & 0xffffu, hi = u >> 16;
    if (rest > 0x8000u || (rest == 0x8000u && (hi & 1u)))
        hi++; /* carries into the exponent: the largest finite values round to infinity */
    return (unsigned short)hi;
}

/* Float to integer type I, rounding toward zero and saturating, NaN to 0 (cvt.rzi.sat). */
template <typename I> inline I float_to_int_rz(float f)
{
    if (f != f)
        return 0;
    double d = f;
    if (d <= (double)std::numeric_limits<I>::min())
        return std::numeric_limits<I>::min();
    if (d >= (double)std::numeric_limits<I>::max())
        return std::numeric_limits<I>::max();
    return (I)d;
}
} // namespace detail
} // namespace tsr_emu

inline float __bfloat162float(const __nv_bfloat16 a)
{
    uint32_t u = (uint32_t)tsr_emu::detail::bf16_bits(a) << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}
inline __nv_bfloat16 __float2bfloat16(const float a)
{
    return tsr_emu::detail::bf16_from_bits(tsr_emu::detail::float_to_bf16_bits(a));
}
inline __nv_bfloat16 __float2bfloat16_rn(const float a) { return __float2bfloat16(a); }
/* One rounding from double, as cvt.rn.bf16.f64: round to float toward odd first (cuda_bf16.hpp's way). */
inline __nv_bfloat16 __double2bfloat16(const double x)
{
    float f = (float)x;
    double d = f;
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    bool not_nan = (u << 1) <= 0xFF000000u;
    if ((x > 0.0 && d > x) || (x < 0.0 && d < x))
        u--;
    if (d != x && not_nan)
        u |= 1u;
    memcpy(&f, &u, sizeof f);
    return __float2bfloat16(f);
}

inline __nv_bfloat16::__nv_bfloat16(float f) : __x(tsr_emu::detail::float_to_bf16_bits(f)) {}
inline __nv_bfloat16::__nv_bfloat16(double f) : __x(tsr_emu::detail::bf16_bits(__double2bfloat16(f))) {}
inline __nv_bfloat16::operator float() const { return __bfloat162float(*this); }
inline __nv_bfloat16 &__nv_bfloat16::operator=(float f) { return *this = __nv_bfloat16(f); }
inline __nv_bfloat16 &__nv_bfloat16::operator=(double f) { return *this = __nv_bfloat16(f); }
/* Integers convert through double, which holds every int exactly, then round once. */
inline __nv_bfloat16::__nv_bfloat16(short val) : __nv_bfloat16((double)val) {}
inline __nv_bfloat16::__nv_bfloat16(unsigned short val) : __nv_bfloat16((double)val) {}
inline __nv_bfloat16::__nv_bfloat16(int val) : __nv_bfloat16((double)val) {}
inline __nv_bfloat16::__nv_bfloat16(unsigned int val) : __nv_bfloat16((double)val) {}
inline __nv_bfloat16::__nv_bfloat16(long val) : __nv_bfloat16((double)val) {}
inline __nv_bfloat16::__nv_bfloat16(unsigned long val) : __nv_bfloat16((double)val) {}
inline __nv_bfloat16::__nv_bfloat16(long long val) : __nv_bfloat16((double)val) {}
inline __nv_bfloat16::__nv_bfloat16(unsigned long long val) : __nv_bfloat16((double)val) {}
#define TSR_EMU_BF16_TO_INT_(I)                                                                                \
    inline __nv_bfloat16::operator I() const { return tsr_emu::detail::float_to_int_rz<I>(__bfloat162float(*this)); }
TSR_EMU_BF16_TO_INT_(signed char)
TSR_EMU_BF16_TO_INT_(unsigned char)
TSR_EMU_BF16_TO_INT_(char)
TSR_EMU_BF16_TO_INT_(short)
TSR_EMU_BF16_TO_INT_(unsigned short)
TSR_EMU_BF16_TO_INT_(int)
TSR_EMU_BF16_TO_INT_(unsigned int)
TSR_EMU_BF16_TO_INT_(long)
TSR_EMU_BF16_TO_INT_(unsigned long)
TSR_EMU_BF16_TO_INT_(long long)
TSR_EMU_BF16_TO_INT_(unsigned long long)
#undef TSR_EMU_BF16_TO_INT_
inline __nv_bfloat16 &__nv_bfloat16::operator=(short val) { return *this = __nv_bfloat16(val); }
inline __nv_bfloat16 &__nv_bfloat16::operator=(unsigned short val) { return *this = __nv_bfloat16(val); }
inline __nv_bfloat16 &__nv_bfloat16::operator=(int val) { return *this = __nv_bfloat16(val); }
inline __nv_bfloat16 &__nv_bfloat16::operator=(unsigned int val) { return *this = __nv_bfloat16(val); }
inline __nv_bfloat16 &__nv_bfloat16::operator=(long long val) { return *this = __nv_bfloat16(val); }
inline __nv_bfloat16 &__nv_bfloat16::operator=(unsigned long long val) { return *this = __nv_bfloat16(val); }

/* Arithmetic rounds the exact result once, as sm_90's bf16 instructions do: every sum, product
 * or quotient of two bf16 values is exact or rounded harmlessly in double. */
#define TSR_EMU_BF16_ARITH_(op)                                                                                \
    inline __nv_bfloat16 operator op(const __nv_bfloat16 &lh, const __nv_bfloat16 &rh)                         \
    {                                                                                                          \
        return __double2bfloat16((double)__bfloat162float(lh) op(double) __bfloat162float(rh));                \
    }                                                                                                          \
    inline __nv_bfloat16 &operator op##=(__nv_bfloat16 &lh, const __nv_bfloat16 &rh)                           \
    {                                                                                                          \
        lh = lh op rh;                                                                                         \
        return lh;                                                                                             \
    }
TSR_EMU_BF16_ARITH_(+)
TSR_EMU_BF16_ARITH_(-)
TSR_EMU_BF16_ARITH_(*)
TSR_EMU_BF16_ARITH_(/)
#undef TSR_EMU_BF16_ARITH_
inline __nv_bfloat16 &operator++(__nv_bfloat16 &h) { return h += tsr_emu::detail::bf16_from_bits(0x3F80); }
inline __nv_bfloat16 &operator--(__nv_bfloat16 &h) { return h -= tsr_emu::detail::bf16_from_bits(0x3F80); }
inline __nv_bfloat16 operator++(__nv_bfloat16 &h, const int)
{
    __nv_bfloat16 old = h;
    ++h;
    return old;
}
inline __nv_bfloat16 operator--(__nv_bfloat16 &h, const int)
{
    __nv_bfloat16 old = h;
    --h;
    return old;
}
inline __nv_bfloat16 operator+(const __nv_bfloat16 &h) { return h; }
inline __nv_bfloat16 operator-(const __nv_bfloat16 &h)
{
    return tsr_emu::detail::bf16_from_bits((unsigned short)(tsr_emu::detail::bf16_bits(h) ^ 0x8000u));
}
#define TSR_EMU_BF16_CMP_(op)                                                                                  \
    inline bool operator op(const __nv_bfloat16 &lh, const __nv_bfloat16 &rh)                                  \
    {                                                                                                          \
        return __bfloat162float(lh) op __bfloat162float(rh);                                                  \
    }
TSR_EMU_BF16_CMP_(==)
TSR_EMU_BF16_CMP_(!=)
TSR_EMU_BF16_CMP_(>)
TSR_EMU_BF16_CMP_(<)
TSR_EMU_BF16_CMP_(>=)
TSR_EMU_BF16_CMP_(<=)
#undef TSR_EMU_BF16_CMP_

struct __align__(4) __nv_bfloat162 {
    __nv_bfloat16 x;
    __nv_bfloat16 y;
    __nv_bfloat162() = default;
    __nv_bfloat162(const __nv_bfloat16 &a, const __nv_bfloat16 &b) : x(a), y(b) {}
    __nv_bfloat162(const __nv_bfloat162_raw &h2r)
        : x(__nv_bfloat16_raw{h2r.x}), y(__nv_bfloat16_raw{h2r.y})
    {
    }
    operator __nv_bfloat162_raw() const
    {
        return __nv_bfloat162_raw{tsr_emu::detail::bf16_bits(x), tsr_emu::detail::bf16_bits(y)};
    }
};
typedef __nv_bfloat162 nv_bfloat162;

inline __nv_bfloat162 __floats2bfloat162_rn(const float a, const float b)
{
    return __nv_bfloat162(__float2bfloat16(a), __float2bfloat16(b));
}
inline __nv_bfloat162 __float2bfloat162_rn(const float a) { return __floats2bfloat162_rn(a, a); }
inline float __low2float(const __nv_bfloat162 a) { return __bfloat162float(a.x); }
inline float __high2float(const __nv_bfloat162 a) { return __bfloat162float(a.y); }
#define TSR_EMU_BF162_ARITH_(op)                                                                               \
    inline __nv_bfloat162 operator op(const __nv_bfloat162 &lh, const __nv_bfloat162 &rh)                      \
    {                                                                                                          \
        return __nv_bfloat162(lh.x op rh.x, lh.y op rh.y);                                                     \
    }                                                                                                          \
    inline __nv_bfloat162 &operator op##=(__nv_bfloat162 &lh, const __nv_bfloat162 &rh)                        \
    {                                                                                                          \
        lh = lh op rh;                                                                                         \
        return lh;                                                                                             \
    }
TSR_EMU_BF162_ARITH_(+)
TSR_EMU_BF162_ARITH_(-)
TSR_EMU_BF162_ARITH_(*)
TSR_EMU_BF162_ARITH_(/)
#undef TSR_EMU_BF162_ARITH_
inline __nv_bfloat162 operator+(const __nv_bfloat162 &h) { return h; }
inline __nv_bfloat162 operator-(const __nv_bfloat162 &h) { return __nv_bfloat162(-h.x, -h.y); }
/* Comparisons of pairs hold when they hold for both halves (__hbeq2 and the like). */
#define TSR_EMU_BF162_CMP_(op)                                                                                 \
    inline bool operator op(const __nv_bfloat162 &lh, const __nv_bfloat162 &rh)                                \
    {                                                                                                          \
        return (lh.x op rh.x) && (lh.y op rh.y);                                                               \
    }
TSR_EMU_BF162_CMP_(==)
TSR_EMU_BF162_CMP_(!=)
TSR_EMU_BF162_CMP_(>)
TSR_EMU_BF162_CMP_(<)
TSR_EMU_BF162_CMP_(>=)
TSR_EMU_BF162_CMP_(<=)
#undef TSR_EMU_BF162_CMP_

/* ---- warp shuffles: CUDA's overloads, each meeting the lanes of mask ---- */
#define TSR_EMU_SHFL_(T)                                                                                       \
    inline T __shfl_sync(unsigned mask, T var, int srcLane, int width = 32, const char *file = __builtin_FILE(), \
                         int line = __builtin_LINE())                                                          \
    {                                                                                                          \
        T out;                                                                                                 \
        tsr_emu::detail::warp_op(tsr_emu::detail::op_shfl_idx, mask, &var, &out, sizeof(T), srcLane, width,     \
                                 file, line);                                                                  \
        return out;                                                                                            \
    }                                                                                                          \
    inline T __shfl_up_sync(unsigned mask, T var, unsigned int delta, int width = 32,                          \
                            const char *file = __builtin_FILE(), int line = __builtin_LINE())                  \
    {                                                                                                          \
        T out;                                                                                                 \
        tsr_emu::detail::warp_op(tsr_emu::detail::op_shfl_up, mask, &var, &out, sizeof(T), (int)delta, width,   \
                                 file, line);                                                                  \
        return out;                                                                                            \
    }                                                                                                          \
    inline T __shfl_down_sync(unsigned mask, T var, unsigned int delta, int width = 32,                        \
                              const char *file = __builtin_FILE(), int line = __builtin_LINE())                \
    {                                                                                                          \
        T out;                                                                                                 \
        tsr_emu::detail::warp_op(tsr_emu::detail::op_shfl_down, mask, &var, &out, sizeof(T), (int)delta,        \
                                 width, file, line);                                                           \
        return out;                                                                                            \
    }                                                                                                          \
    inline T __shfl_xor_sync(unsigned mask, T var, int laneMask, int width = 32,                               \
                             const char *file = __builtin_FILE(), int line = __builtin_LINE())                 \
    {                                                                                                          \
        T out;                                                                                                 \
        tsr_emu::detail::warp_op(tsr_emu::detail::op_shfl_xor, mask, &var, &out, sizeof(T), laneMask, width,    \
                                 file, line);                                                                  \
        return out;                                                                                            \
    }
TSR_EMU_SHFL_(int)
TSR_EMU_SHFL_(unsigned int)
TSR_EMU_SHFL_(long)
TSR_EMU_SHFL_(unsigned long)
TSR_EMU_SHFL_(long long)
TSR_EMU_SHFL_(unsigned long long)
TSR_EMU_SHFL_(float)
TSR_EMU_SHFL_(double)
TSR_EMU_SHFL_(__nv_bfloat16)
TSR_EMU_SHFL_(__nv_bfloat162)
#undef TSR_EMU_SHFL_

/* ---- nvcuda::wmma: bf16 inputs, float accumulators; each lane holds the whole tile ---- */
namespace nvcuda {
namespace wmma {
struct row_major;
struct col_major;
struct matrix_a;
struct matrix_b;
struct accumulator;

enum layout_t { mem_row_major, mem_col_major };

template <typename T> struct helper_traits {
    typedef T element_type;
    typedef T storage_element_type;
    typedef T fill_argument_type;
};

template <typename T, int size, int packed_size = size> struct __align__(8) __frag_base {
    enum { num_elements = size };
    enum { num_storage_elements = packed_size };
    typedef T element_type;
    typedef typename helper_traits<T>::storage_element_type storage_element_type;
    /* The tile in row-major order (rows x cols of the matrix this fragment holds). */
    storage_element_type x[num_storage_elements];
};

template <typename FragEleType, int size, int packed_size>
inline void fill_fragment(__frag_base<FragEleType, size, packed_size> &f,
                          const typename helper_traits<FragEleType>::fill_argument_type &in)
{
    for (int i = 0; i < f.num_storage_elements; i++)
        f.x[i] = in;
}

template <typename Use, int m, int n, int k, typename T, typename Layout = void> class fragment;

#define TSR_EMU_WMMA_SHAPE_(m, n, k)                                                                           \
    template <> class fragment<matrix_a, m, n, k, __nv_bfloat16, row_major>                                    \
        : public __frag_base<__nv_bfloat16, m * k> {};                                                         \
    template <> class fragment<matrix_a, m, n, k, __nv_bfloat16, col_major>                                    \
        : public __frag_base<__nv_bfloat16, m * k> {};                                                         \
    template <> class fragment<matrix_b, m, n, k, __nv_bfloat16, row_major>                                    \
        : public __frag_base<__nv_bfloat16, k * n> {};                                                         \
    template <> class fragment<matrix_b, m, n, k, __nv_bfloat16, col_major>                                    \
        : public __frag_base<__nv_bfloat16, k * n> {};                                                         \
    template <> class fragment<accumulator, m, n, k, float> : public __frag_base<float, m * n> {};
TSR_EMU_WMMA_SHAPE_(16, 16, 16)
TSR_EMU_WMMA_SHAPE_(32, 8, 16)
TSR_EMU_WMMA_SHAPE_(8, 32, 16)
#undef TSR_EMU_WMMA_SHAPE_

namespace detail {
template <typename Layout> struct is_col_major;
template <> struct is_col_major<row_major> : std::false_type {};
template <> struct is_col_major<col_major> : std::true_type {};
} // namespace detail

template <int m, int n, int k, typename Layout>
inline void load_matrix_sync(fragment<matrix_a, m, n, k, __nv_bfloat16, Layout> &a, const __nv_bfloat16 *p,
                             unsigned ldm, const char *file = __builtin_FILE(), int line = __builtin_LINE())
{
    tsr_emu::detail::wmma_load(a.x, m, k, sizeof(__nv_bfloat16), p, ldm, detail::is_col_major<Layout>::value,
                               file, line);
}

template <int m, int n, int k, typename Layout>
inline void load_matrix_sync(fragment<matrix_b, m, n, k, __nv_bfloat16, Layout> &b, const __nv_bfloat16 *p,
                             unsigned ldm, const char *file = __builtin_FILE(), int line = __builtin_LINE())
{
    tsr_emu::detail::wmma_load(b.x, k, n, sizeof(__nv_bfloat16), p, ldm, detail::is_col_major<Layout>::value,
                               file, line);
}

template <int m, int n, int k>
inline void load_matrix_sync(fragment<accumulator, m, n, k, float> &c, const float *p, unsigned ldm,
                             layout_t layout, const char *file = __builtin_FILE(), int line = __builtin_LINE())
{
    tsr_emu::detail::wmma_load(c.x, m, n, sizeof(float), p, ldm, layout == mem_col_major, file, line);
}

template <int m, int n, int k>
inline void store_matrix_sync(float *p, const fragment<accumulator, m, n, k, float> &c, unsigned ldm,
                              layout_t layout, const char *file = __builtin_FILE(), int line = __builtin_LINE())
{
    tsr_emu::detail::wmma_store(p, c.x, m, n, ldm, layout == mem_col_major, file, line);
}

template <int m, int n, int k, typename LayoutA, typename LayoutB>
inline void mma_sync(fragment<accumulator, m, n, k, float> &d,
                     const fragment<matrix_a, m, n, k, __nv_bfloat16, LayoutA> &a,
                     const fragment<matrix_b, m, n, k, __nv_bfloat16, LayoutB> &b,
                     const fragment<accumulator, m, n, k, float> &c, const char *file = __builtin_FILE(),
                     int line = __builtin_LINE())
{
    static_assert(sizeof(__nv_bfloat16) == sizeof(uint16_t), "bf16 is 16 bits");
    tsr_emu::detail::wmma_mma(d.x, reinterpret_cast<const uint16_t *>(a.x), reinterpret_cast<const uint16_t *>(b.x),
                              c.x, m, n, k, file, line);
}
} // namespace wmma
} // namespace nvcuda

#endif /* __cplusplus */
#endif /* TESSERA_CUDA_EMU_H */
