/* device.c: the public device API: argument checks, memory tracking, dispatch to a backend. */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "device/device_impl.h"

static const tsr_device_ops_t *const backends[TSR_DEVICE_KIND_COUNT] = {
    [TSR_DEVICE_CPU] = &tsr__device_cpu_ops,
    [TSR_DEVICE_CUDA] = &tsr__device_cuda_ops,
};

const char *tsr_device_kind_name(tsr_device_kind_t kind)
{
    if ((unsigned)kind >= TSR_DEVICE_KIND_COUNT)
        return "unknown";
    return backends[kind]->name;
}

tsr_status_t tsr_device_kind_parse(const char *name, tsr_device_kind_t *out)
{
    for (int k = 0; k < TSR_DEVICE_KIND_COUNT; k++) {
        if (name && strcasecmp(name, backends[k]->name) == 0) {
            *out = (tsr_device_kind_t)k;
            return TSR_OK;
        }
    }
    return TSR_ERROR(TSR_ERR_INVALID_ARG, "unknown device \"%s\" (expected cpu or cuda)", name ? name : "(null)");
}

int tsr_device_kind_built(tsr_device_kind_t kind)
{
    return (unsigned)kind < TSR_DEVICE_KIND_COUNT && backends[kind]->open != NULL;
}

int tsr_device_count(tsr_device_kind_t kind)
{
    if (!tsr_device_kind_built(kind))
        return 0;
    return backends[kind]->count();
}

tsr_status_t tsr_device_create(tsr_device_kind_t kind, int index, tsr_device_t *out)
{
    tsr_status_t rc = TSR_OK;
    struct tsr_device *dev = NULL;
    *out = NULL;
    TSR_CHECK((unsigned)kind < TSR_DEVICE_KIND_COUNT, TSR_ERR_INVALID_ARG, "device kind %d out of range", (int)kind);
    TSR_CHECK(tsr_device_kind_built(kind), TSR_ERR_NOT_SUPPORTED,
              "this build of Tessera has no %s backend (reconfigure with --with-%s)", backends[kind]->name,
              backends[kind]->name);
    dev = tsr__calloc(1, sizeof *dev);
    TSR_CHECK(dev, TSR_ERR_OUT_OF_MEMORY, "no memory for a device handle");
    dev->kind = kind;
    dev->ops = backends[kind];
    TSR_TRY(dev->ops->open(dev, index));
    *out = dev;
    dev = NULL;
cleanup:
    free(dev);
    return rc;
}

void tsr_device_destroy(tsr_device_t *dev)
{
    if (!dev || !*dev)
        return;
    (*dev)->ops->close(*dev);
    free(*dev);
    *dev = NULL;
}

tsr_device_kind_t tsr_device_kind(tsr_device_t dev)
{
    return dev->kind;
}

tsr_status_t tsr_device_alloc(tsr_device_t dev, tsr_mem_category_t category, size_t bytes, void **out)
{
    tsr_status_t rc = TSR_OK;
    void *ptr = NULL;
    *out = NULL;
    TSR_CHECK((unsigned)category < TSR_MEM_CATEGORY_COUNT, TSR_ERR_INVALID_ARG,
              "memory category %d out of range", (int)category);
    if (bytes == 0)
        return TSR_OK;
    TSR_TRY(dev->ops->alloc(dev, bytes, &ptr));
    rc = tsr__mem_record(dev->kind, category, ptr, bytes);
    if (rc != TSR_OK) {
        dev->ops->free(dev, ptr);
        return rc;
    }
    *out = ptr;
cleanup:
    return rc;
}

tsr_status_t tsr_device_free(tsr_device_t dev, void **ptr)
{
    tsr_status_t rc = TSR_OK;
    if (!ptr || !*ptr)
        return TSR_OK;
    TSR_TRY(tsr__mem_forget(dev->kind, *ptr));
    TSR_TRY(dev->ops->free(dev, *ptr));
    *ptr = NULL;
cleanup:
    return rc;
}

/* Device-timed regions open now: one nested in another (a copy inside a reduction) is timed on
 * the host only, so that device times never count the same work twice. */
static int device_regions_open;

tsr__region_t tsr__region_start(tsr_device_t dev, tsr_prof_cat_t cat, const char *name, const char *label)
{
    tsr__region_t r = {tsr_prof_begin(cat, name, label, -1), NULL, dev};
    if (r.region >= 0 && dev && dev->ops->prof_mark && device_regions_open == 0)
        r.e0 = dev->ops->prof_mark(dev);
    device_regions_open += r.e0 != NULL;
    return r;
}

void tsr__region_stop(tsr__region_t *r)
{
    device_regions_open -= r->e0 != NULL;
    void *e1 = r->e0 ? r->dev->ops->prof_mark(r->dev) : NULL;
    if (r->e0 && !e1)
        r->dev->ops->prof_elapsed(r->e0, r->e0); /* releases e0 */
    if (e1)
        tsr__prof_end_device(r->region, r->e0, e1, r->dev->ops->prof_elapsed);
    else
        tsr_prof_end(r->region);
}

tsr_status_t tsr_device_copy(tsr_device_t dev, void *dst, const void *src, size_t bytes, tsr_copy_dir_t dir)
{
    TSR__REGION(dev, TSR_PROF_KERNEL, "copy", NULL);
    if (bytes == 0)
        return TSR_OK;
    if (!dst || !src || (unsigned)dir > TSR_COPY_DEVICE_TO_DEVICE)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "copy of %zu bytes: NULL buffer or bad direction %d", bytes, (int)dir);
    return dev->ops->copy(dev, dst, src, bytes, dir);
}

tsr_status_t tsr_device_copy_2d(tsr_device_t dev, void *dst, size_t dst_pitch, const void *src, size_t src_pitch,
                                size_t row_bytes, size_t rows, tsr_copy_dir_t dir)
{
    TSR__REGION(dev, TSR_PROF_KERNEL, "copy 2d", NULL);
    if (row_bytes == 0 || rows == 0)
        return TSR_OK;
    if (!dst || !src || (unsigned)dir > TSR_COPY_DEVICE_TO_DEVICE)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "2D copy of %zu rows of %zu bytes: NULL buffer or bad direction %d",
                         rows, row_bytes, (int)dir);
    if (dst_pitch < row_bytes || src_pitch < row_bytes)
        return TSR_ERROR(TSR_ERR_INVALID_ARG,
                         "2D copy of rows of %zu bytes: pitches dst %zu and src %zu must be at least the row length",
                         row_bytes, dst_pitch, src_pitch);
    return dev->ops->copy_2d(dev, dst, dst_pitch, src, src_pitch, row_bytes, rows, dir);
}

tsr_status_t tsr_device_memset(tsr_device_t dev, void *ptr, int value, size_t bytes)
{
    TSR__REGION(dev, TSR_PROF_KERNEL, "memset", NULL);
    if (bytes == 0)
        return TSR_OK;
    if (!ptr)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "memset of %zu bytes on a NULL buffer", bytes);
    return dev->ops->memset(dev, ptr, value, bytes);
}

tsr_status_t tsr_device_fill_f32(tsr_device_t dev, float *x, float value, size_t n)
{
    TSR__REGION(dev, TSR_PROF_KERNEL, "memset", NULL);
    if (n == 0)
        return TSR_OK;
    if (!x)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "fill of %zu floats on a NULL buffer", n);
    return dev->ops->fill_f32(dev, x, value, n);
}

tsr_status_t tsr_device_gemm_f32(tsr_device_t dev, tsr_trans_t trans_a, tsr_trans_t trans_b, int m, int n, int k,
                                 float alpha, const float *a, int lda, const float *b, int ldb, float beta,
                                 float *c, int ldc)
{
    TSR__REGION(dev, TSR_PROF_KERNEL, "gemm", NULL);
    /* Row-major: a stored row holds k elements of op(A) = A, or m of op(A) = A^T. */
    int a_cols = trans_a == TSR_NO_TRANS ? k : m;
    int b_cols = trans_b == TSR_NO_TRANS ? n : k;
    if (m < 0 || n < 0 || k < 0)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "gemm with negative size m=%d n=%d k=%d", m, n, k);
    if (lda < (a_cols > 1 ? a_cols : 1) || ldb < (b_cols > 1 ? b_cols : 1) || ldc < (n > 1 ? n : 1))
        return TSR_ERROR(TSR_ERR_INVALID_ARG,
                         "gemm m=%d n=%d k=%d: leading dimensions lda=%d ldb=%d ldc=%d are below the row "
                         "lengths %d, %d, %d", m, n, k, lda, ldb, ldc, a_cols, b_cols, n);
    if (m == 0 || n == 0)
        return TSR_OK;
    return dev->ops->gemm_f32(dev, trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

tsr_status_t tsr_device_sync(tsr_device_t dev)
{
    TSR__REGION(NULL, TSR_PROF_WAIT, "device sync", NULL);
    return dev->ops->sync(dev);
}

int tsr__device_holds(tsr_device_t dev, const void *ptr)
{
    return dev->ops->holds ? dev->ops->holds(dev, ptr) : 1;
}
