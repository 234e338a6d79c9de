/**
 * @file tessera/device.h
 * @brief Devices: tracked memory, copies, fills and GEMM on the CPU (CBLAS) or a GPU.
 *
 * A ::tsr_device_t is a handle on one backend instance: the CPU, or one CUDA device with its
 * stream and BLAS handle. Each backend is an entry of an ops table; a backend that this
 * build does not include still has an entry, and creating it fails with
 * TSR_ERR_NOT_SUPPORTED. Matrices are row-major throughout Tessera.
 *
 * Copies complete before they return. Fills, memsets and GEMMs are queued in order on the
 * device's stream (on the CPU they complete at once); tsr_device_sync() waits for them.
 *
 * Memory from tsr_device_alloc() is counted by category in the tracked allocator
 * (tessera/memory.h) and aligned to #TSR_DEVICE_ALIGNMENT bytes.
 */
#ifndef TESSERA_DEVICE_H
#define TESSERA_DEVICE_H

#include <stddef.h>
#include <tessera/memory.h>
#include <tessera/status.h>
#include <tessera/visibility.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Alignment in bytes of every buffer returned by tsr_device_alloc(). */
#define TSR_DEVICE_ALIGNMENT 64

/** An opaque device handle. */
typedef struct tsr_device *tsr_device_t;

/** Whether a GEMM operand is used as stored or transposed. */
typedef enum tsr_trans { TSR_NO_TRANS = 0, TSR_TRANS = 1 } tsr_trans_t;

/** Direction of a copy, as seen from the device. */
typedef enum tsr_copy_dir {
    TSR_COPY_HOST_TO_DEVICE = 0,
    TSR_COPY_DEVICE_TO_HOST = 1,
    TSR_COPY_DEVICE_TO_DEVICE = 2
} tsr_copy_dir_t;

/** The name of a device kind ("cpu", "cuda"). */
TSR_API const char *tsr_device_kind_name(tsr_device_kind_t kind);

/**
 * Parse "cpu" or "cuda".
 * @return #TSR_OK, or TSR_ERR_INVALID_ARG naming the accepted values.
 */
TSR_API tsr_status_t tsr_device_kind_parse(const char *name, tsr_device_kind_t *out);

/** Whether this build of the library includes the backend for @p kind. */
TSR_API int tsr_device_kind_built(tsr_device_kind_t kind);

/**
 * Open device @p index of @p kind (index is ignored for the CPU).
 * @return TSR_ERR_NOT_SUPPORTED if the backend is not built, TSR_ERR_CUDA if no such GPU.
 */
TSR_API tsr_status_t tsr_device_create(tsr_device_kind_t kind, int index, tsr_device_t *out);

/**
 * The threads of this rank's CPU kernels and CPU GEMMs, chosen once, when the first CPU
 * device is created: OMP_NUM_THREADS when it is set; else the CPUs of the rank's affinity
 * mask, divided among the ranks of the node when the mask is the whole machine (the launcher
 * did not bind the ranks: MPI_LOCALNRANKS of MPICH, OMPI_COMM_WORLD_LOCAL_SIZE of Open MPI or
 * SLURM_NTASKS_PER_NODE tells how many share it). With OpenMP these threads run the kernels
 * and split each large GEMM, the BLAS running one thread per slice (OpenBLAS is told so; set
 * another BLAS's own thread count to 1, e.g. MKL_NUM_THREADS=1); without OpenMP the kernels
 * run on one thread and the count returned is 1, OpenBLAS then getting the rank's threads.
 * @param how  when not NULL, receives a short static text saying how the count was chosen
 */
TSR_API int tsr_device_cpu_threads(const char **how);

/** Release a device handle; sets *dev to NULL and accepts NULL. */
TSR_API void tsr_device_destroy(tsr_device_t *dev);

/** The kind of a device. */
TSR_API tsr_device_kind_t tsr_device_kind(tsr_device_t dev);

/**
 * Allocate @p bytes (0 gives NULL and succeeds) and count them under @p category.
 * Contents are undefined; use tsr_device_fill_f32() or tsr_device_memset().
 */
TSR_API tsr_status_t tsr_device_alloc(tsr_device_t dev, tsr_mem_category_t category, size_t bytes,
                                      void **out);

/** Free memory from tsr_device_alloc(); sets *ptr to NULL and accepts a NULL *ptr. */
TSR_API tsr_status_t tsr_device_free(tsr_device_t dev, void **ptr);

/** Copy @p bytes between host and device memory, or within the device. Completes before returning. */
TSR_API tsr_status_t tsr_device_copy(tsr_device_t dev, void *dst, const void *src, size_t bytes,
                                     tsr_copy_dir_t dir);

/**
 * Copy @p rows rows of @p row_bytes bytes each: row r goes from src + r src_pitch to
 * dst + r dst_pitch (pitches in bytes, each at least @p row_bytes; the regions must not
 * overlap). Between host and device memory, or within the device, like tsr_device_copy();
 * completes before returning. A strided block of a matrix in one call.
 * @return TSR_ERR_INVALID_ARG for a NULL buffer, a pitch below row_bytes or a bad direction.
 */
TSR_API tsr_status_t tsr_device_copy_2d(tsr_device_t dev, void *dst, size_t dst_pitch, const void *src,
                                        size_t src_pitch, size_t row_bytes, size_t rows, tsr_copy_dir_t dir);

/** Set @p bytes of device memory to the byte @p value. */
TSR_API tsr_status_t tsr_device_memset(tsr_device_t dev, void *ptr, int value, size_t bytes);

/** Set @p n floats of device memory to @p value. */
TSR_API tsr_status_t tsr_device_fill_f32(tsr_device_t dev, float *x, float value, size_t n);

/**
 * Row-major single-precision GEMM on device memory:
 * C = alpha * op(A) * op(B) + beta * C, with op(A) m×k, op(B) k×n, C m×n and leading
 * dimensions lda, ldb, ldc (elements per stored row). With beta == 0, C is not read.
 */
TSR_API tsr_status_t tsr_device_gemm_f32(tsr_device_t dev, tsr_trans_t trans_a, tsr_trans_t trans_b,
                                         int m, int n, int k, float alpha, const float *a, int lda,
                                         const float *b, int ldb, float beta, float *c, int ldc);

/** Wait for all work queued on the device. */
TSR_API tsr_status_t tsr_device_sync(tsr_device_t dev);

/** Number of devices of @p kind visible to this process (1 for the CPU, 0 if not built). */
TSR_API int tsr_device_count(tsr_device_kind_t kind);

#ifdef __cplusplus
}
#endif
#endif /* TESSERA_DEVICE_H */
