/*
 * cpu.c: the CPU backend, the reference: aligned host memory and CBLAS. With OpenMP a large
 * GEMM is split over the rank's threads (cpu_threads.c), along the longer of m and n, each
 * thread calling the BLAS on its slice of C; each element of C is then still one BLAS dot
 * product over the whole of k.
 */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "device/cpu_math.h"
#include "device/device_impl.h"

/* GEMMs of fewer multiply-adds than this run whole on the calling thread. */
#define GEMM_PAR_MIN (1 << 20)
/* Slices of C start at multiples of this (a multiple of the BLAS kernels' unrolling). */
#define GEMM_SLICE_ALIGN 32

static int cpu_count(void)
{
    return 1;
}

static tsr_status_t cpu_open(struct tsr_device *dev, int index)
{
    (void)index;
    tsr__cpu_threads_init();
    dev->index = 0;
    return TSR_OK;
}

static void cpu_close(struct tsr_device *dev)
{
    (void)dev;
}

static tsr_status_t cpu_alloc(struct tsr_device *dev, size_t bytes, void **out)
{
    (void)dev;
    if (posix_memalign(out, TSR_DEVICE_ALIGNMENT, bytes) != 0) {
        *out = NULL;
        return TSR_ERROR(TSR_ERR_OUT_OF_MEMORY, "cannot allocate %zu bytes of host memory", bytes);
    }
    return TSR_OK;
}

static tsr_status_t cpu_free(struct tsr_device *dev, void *ptr)
{
    (void)dev;
    free(ptr);
    return TSR_OK;
}

static tsr_status_t cpu_copy(struct tsr_device *dev, void *dst, const void *src, size_t bytes, tsr_copy_dir_t dir)
{
    (void)dev;
    (void)dir; /* host and device are the same memory */
    memmove(dst, src, bytes);
    return TSR_OK;
}

static tsr_status_t cpu_copy_2d(struct tsr_device *dev, void *dst, size_t dst_pitch, const void *src, size_t src_pitch,
                                size_t row_bytes, size_t rows, tsr_copy_dir_t dir)
{
    (void)dev;
    (void)dir;
    for (size_t r = 0; r < rows; r++)
        memcpy((char *)dst + r * dst_pitch, (const char *)src + r * src_pitch, row_bytes);
    return TSR_OK;
}

/* Bytes a thread of memset takes at once; a buffer under two of them is set by the caller. */
#define MEMSET_CHUNK ((size_t)1 << 20)

static tsr_status_t cpu_memset(struct tsr_device *dev, void *ptr, int value, size_t bytes)
{
    (void)dev;
    size_t chunks = (bytes + MEMSET_CHUNK - 1) / MEMSET_CHUNK;
#pragma omp parallel for schedule(static) if (chunks > 1)
    for (size_t c = 0; c < chunks; c++) {
        size_t lo = c * MEMSET_CHUNK;
        memset((char *)ptr + lo, value, bytes - lo < MEMSET_CHUNK ? bytes - lo : MEMSET_CHUNK);
    }
    return TSR_OK;
}

static tsr_status_t cpu_fill_f32(struct tsr_device *dev, float *x, float value, size_t n)
{
    (void)dev;
#pragma omp parallel for simd schedule(static) if (n >= TSR_CPU_PAR_MIN)
    for (size_t i = 0; i < n; i++)
        x[i] = value;
    return TSR_OK;
}

static tsr_status_t cpu_gemm_f32(struct tsr_device *dev, tsr_trans_t ta, tsr_trans_t tb, int m, int n, int k,
                                 float alpha, const float *a, int lda, const float *b, int ldb, float beta,
                                 float *c, int ldc)
{
    (void)dev;
    if (k == 0 || alpha == 0.0f) {
        /* C = beta C, and with beta == 0 C is not read (it may hold NaN). */
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
                c[(size_t)i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[(size_t)i * ldc + j];
        return TSR_OK;
    }
#if !HAVE_OPENBLAS_SET_NUM_THREADS
    if (beta == 0.0f) {
        /* BLAS leaves "C need not be set" to the implementation (OpenBLAS does not read it);
         * make it so for every CBLAS. */
        for (int i = 0; i < m; i++)
            memset(c + (size_t)i * ldc, 0, (size_t)n * sizeof *c);
    }
#endif
    CBLAS_TRANSPOSE tra = ta == TSR_TRANS ? CblasTrans : CblasNoTrans, trb = tb == TSR_TRANS ? CblasTrans : CblasNoTrans;
    int threads = tsr_device_cpu_threads(NULL), by_rows = m >= n, len = by_rows ? m : n;
    int parts = (double)m * n * k < GEMM_PAR_MIN ? 1 : len / GEMM_SLICE_ALIGN < threads ? len / GEMM_SLICE_ALIGN : threads;
    if (parts <= 1) {
        cblas_sgemm(CblasRowMajor, tra, trb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
        return TSR_OK;
    }
    /* Slice t of C: rows (or columns) [lo, hi), taken from op(A)'s rows (op(B)'s columns). */
#pragma omp parallel for num_threads(parts) schedule(static, 1)
    for (int t = 0; t < parts; t++) {
        int lo = (int)((int64_t)len * t / parts) / GEMM_SLICE_ALIGN * GEMM_SLICE_ALIGN;
        int hi = t == parts - 1 ? len : (int)((int64_t)len * (t + 1) / parts) / GEMM_SLICE_ALIGN * GEMM_SLICE_ALIGN;
        if (by_rows)
            cblas_sgemm(CblasRowMajor, tra, trb, hi - lo, n, k, alpha, a + (ta == TSR_TRANS ? (size_t)lo : (size_t)lo * lda),
                        lda, b, ldb, beta, c + (size_t)lo * ldc, ldc);
        else
            cblas_sgemm(CblasRowMajor, tra, trb, m, hi - lo, k, alpha, a, lda,
                        b + (tb == TSR_TRANS ? (size_t)lo * ldb : (size_t)lo), ldb, beta, c + lo, ldc);
    }
    return TSR_OK;
}

static tsr_status_t cpu_sync(struct tsr_device *dev)
{
    (void)dev;
    return TSR_OK;
}

const tsr_device_ops_t tsr__device_cpu_ops = {
    .name = "cpu",
    .count = cpu_count,
    .open = cpu_open,
    .close = cpu_close,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .copy = cpu_copy,
    .copy_2d = cpu_copy_2d,
    .memset = cpu_memset,
    .fill_f32 = cpu_fill_f32,
    .gemm_f32 = cpu_gemm_f32,
    .sync = cpu_sync,
};
