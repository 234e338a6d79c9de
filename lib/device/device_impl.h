/*
 * device_impl.h: the device ops table, private to lib/device. Each backend fills one entry
 * with designated initializers; a backend not built here has an entry whose create
 * reports TSR_ERR_NOT_SUPPORTED, so callers never test for a missing table entry.
 */
#ifndef TESSERA_DEVICE_IMPL_H
#define TESSERA_DEVICE_IMPL_H

#include "core/internal.h"

typedef struct tsr_device_ops {
    const char *name;
    int (*count)(void);
    /* Fill the backend's part of dev (index, backend state) or fail. */
    tsr_status_t (*open)(struct tsr_device *dev, int index);
    void (*close)(struct tsr_device *dev);
    tsr_status_t (*alloc)(struct tsr_device *dev, size_t bytes, void **out);
    tsr_status_t (*free)(struct tsr_device *dev, void *ptr);
    tsr_status_t (*copy)(struct tsr_device *dev, void *dst, const void *src, size_t bytes, tsr_copy_dir_t dir);
    /* rows rows of row_bytes bytes, pitches in bytes; completes before returning. */
    tsr_status_t (*copy_2d)(struct tsr_device *dev, void *dst, size_t dst_pitch, const void *src, size_t src_pitch,
                            size_t row_bytes, size_t rows, tsr_copy_dir_t dir);
    tsr_status_t (*memset)(struct tsr_device *dev, void *ptr, int value, size_t bytes);
    tsr_status_t (*fill_f32)(struct tsr_device *dev, float *x, float value, size_t n);
    tsr_status_t (*gemm_f32)(struct tsr_device *dev, tsr_trans_t ta, tsr_trans_t tb, int m, int n, int k,
                             float alpha, const float *a, int lda, const float *b, int ldb, float beta,
                             float *c, int ldc);
    tsr_status_t (*sync)(struct tsr_device *dev);
    /* Whether ptr points into memory of the device rather than the host; NULL: device memory
     * is host memory (the CPU). */
    int (*holds)(struct tsr_device *dev, const void *ptr);
    /* Profiling on the device's own clock, NULL where the host clock is the device's: an
     * event recorded on the device's stream (NULL on failure), and the seconds between two. */
    void *(*prof_mark)(struct tsr_device *dev);
    tsr__prof_elapsed_fn prof_elapsed;
} tsr_device_ops_t;

struct tsr_device {
    tsr_device_kind_t kind;
    int index;
    const tsr_device_ops_t *ops;
    void *backend; /* the backend's own state (CUDA stream and cuBLAS handle) */
};

extern const tsr_device_ops_t tsr__device_cpu_ops;
extern const tsr_device_ops_t tsr__device_cuda_ops;

#endif /* TESSERA_DEVICE_IMPL_H */
