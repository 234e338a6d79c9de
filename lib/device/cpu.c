/* cpu.c: the CPU backend, the reference: aligned host memory and CBLAS. */
#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#include "device/device_impl.h"

static int cpu_count(void)
{
    return 1;
}

static tsr_status_t cpu_open(struct tsr_device *dev, int index)
{
    (void)index;
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

static tsr_status_t cpu_memset(struct tsr_device *dev, void *ptr, int value, size_t bytes)
{
    (void)dev;
    memset(ptr, value, bytes);
    return TSR_OK;
}

static tsr_status_t cpu_fill_f32(struct tsr_device *dev, float *x, float value, size_t n)
{
    (void)dev;
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
    if (beta == 0.0f) {
        /* BLAS leaves "C need not be set" to the implementation; make it so for every CBLAS. */
        for (int i = 0; i < m; i++)
            memset(c + (size_t)i * ldc, 0, (size_t)n * sizeof *c);
    }
    cblas_sgemm(CblasRowMajor, ta == TSR_TRANS ? CblasTrans : CblasNoTrans,
                tb == TSR_TRANS ? CblasTrans : CblasNoTrans, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
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
