/*
 * cuda.c: the CUDA backend: cudaMalloc'd memory, one stream per device handle, cuBLAS and
 * cuBLASLt (with the workspace and matmul plan cache of cuda_gemm.c).
 * Without CUDA in the build the table entry has no open function, so creating a CUDA
 * device reports TSR_ERR_NOT_SUPPORTED (see device.c).
 */
#include "device/device_impl.h"

#if TSR_HAVE_CUDA
#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdlib.h>

#include "device/cuda_impl.h"
#include "device/cuda_kernels.h"
#include "device/cuda_optim.h"

/* cuBLASLt's workspace: 32 MiB is what NVIDIA recommends for Hopper; smaller rules out the
 * fastest algorithms of large GEMMs. */
#define LT_WORKSPACE_BYTES ((size_t)32 << 20)

typedef struct cuda_state {
    cudaStream_t stream;
    cublasHandle_t blas;
    cublasLtHandle_t lt;
    void *lt_workspace; /* LT_WORKSPACE_BYTES, tracked under TSR_MEM_WORKSPACE */
    double *reduce_scratch; /* TSR__CUDA_REDUCE_SCRATCH doubles, TSR_MEM_WORKSPACE */
    struct tsr__gemm_plans *gemm_plans;
} cuda_state_t;

static cuda_state_t *state(struct tsr_device *dev)
{
    return (cuda_state_t *)dev->backend;
}

cudaStream_t tsr__cuda_stream(struct tsr_device *dev)
{
    return state(dev)->stream;
}

cublasHandle_t tsr__cuda_cublas(struct tsr_device *dev)
{
    return state(dev)->blas;
}

cublasLtHandle_t tsr__cuda_cublaslt(struct tsr_device *dev, void **workspace, size_t *workspace_bytes)
{
    *workspace = state(dev)->lt_workspace;
    *workspace_bytes = LT_WORKSPACE_BYTES;
    return state(dev)->lt;
}

double *tsr__cuda_reduce_scratch(struct tsr_device *dev)
{
    return state(dev)->reduce_scratch;
}

struct tsr__gemm_plans **tsr__cuda_gemm_plans(struct tsr_device *dev)
{
    return &state(dev)->gemm_plans;
}

tsr_status_t tsr__cuda_status(cudaError_t err, const char *what)
{
    if (err == cudaSuccess)
        return TSR_OK;
    return TSR_ERROR(TSR_ERR_CUDA, "%s: %s", what, cudaGetErrorString(err));
}

static int cuda_count(void)
{
    int n = 0;
    if (cudaGetDeviceCount(&n) != cudaSuccess) {
        cudaGetLastError(); /* no driver or no GPU: clear the sticky error, report none */
        return 0;
    }
    return n;
}

static void cuda_close(struct tsr_device *dev)
{
    cuda_state_t *s = state(dev);
    if (!s)
        return;
    if (s->stream)
        cudaStreamSynchronize(s->stream); /* nothing queued may still use the workspace */
    tsr__cuda_gemm_plans_destroy(s->gemm_plans);
    (void)tsr_device_free(dev, &s->lt_workspace);
    (void)tsr_device_free(dev, (void **)&s->reduce_scratch);
    if (s->lt)
        cublasLtDestroy(s->lt);
    if (s->blas)
        cublasDestroy(s->blas);
    if (s->stream)
        cudaStreamDestroy(s->stream);
    free(s);
    dev->backend = NULL;
}

static tsr_status_t cuda_open(struct tsr_device *dev, int index)
{
    tsr_status_t rc = TSR_OK;
    int n = cuda_count();
    TSR_CHECK(index >= 0 && index < n, TSR_ERR_CUDA, "CUDA device %d requested but %d visible", index, n);
    dev->index = index;
    dev->backend = tsr__calloc(1, sizeof(cuda_state_t));
    TSR_CHECK(dev->backend, TSR_ERR_OUT_OF_MEMORY, "no memory for CUDA device state");
    CALL_CUDA(cudaSetDevice(index));
    CALL_CUDA(cudaStreamCreateWithFlags(&state(dev)->stream, cudaStreamNonBlocking));
    CALL_CUBLAS(cublasCreate(&state(dev)->blas));
    CALL_CUBLAS(cublasSetStream(state(dev)->blas, state(dev)->stream));
    CALL_CUBLAS(cublasLtCreate(&state(dev)->lt));
    TSR_TRY(tsr_device_alloc(dev, TSR_MEM_WORKSPACE, LT_WORKSPACE_BYTES, &state(dev)->lt_workspace));
    TSR_TRY(tsr_device_alloc(dev, TSR_MEM_WORKSPACE, TSR__CUDA_REDUCE_SCRATCH * sizeof(double),
                             (void **)&state(dev)->reduce_scratch));
cleanup:
    if (rc != TSR_OK)
        cuda_close(dev);
    return rc;
}

static tsr_status_t cuda_alloc(struct tsr_device *dev, size_t bytes, void **out)
{
    tsr_status_t rc = TSR_OK;
    (void)dev;
    CALL_CUDA(cudaMalloc(out, bytes)); /* 256-byte aligned, more than TSR_DEVICE_ALIGNMENT */
cleanup:
    return rc;
}

static tsr_status_t cuda_free(struct tsr_device *dev, void *ptr)
{
    tsr_status_t rc = TSR_OK;
    (void)dev;
    CALL_CUDA(cudaFree(ptr));
cleanup:
    return rc;
}

static const enum cudaMemcpyKind copy_kinds[] = {
    [TSR_COPY_HOST_TO_DEVICE] = cudaMemcpyHostToDevice,
    [TSR_COPY_DEVICE_TO_HOST] = cudaMemcpyDeviceToHost,
    [TSR_COPY_DEVICE_TO_DEVICE] = cudaMemcpyDeviceToDevice,
};

static tsr_status_t cuda_copy(struct tsr_device *dev, void *dst, const void *src, size_t bytes, tsr_copy_dir_t dir)
{
    tsr_status_t rc = TSR_OK;
    CALL_CUDA(cudaMemcpyAsync(dst, src, bytes, copy_kinds[dir], state(dev)->stream));
    CALL_CUDA(cudaStreamSynchronize(state(dev)->stream));
cleanup:
    return rc;
}

static tsr_status_t cuda_copy_2d(struct tsr_device *dev, void *dst, size_t dst_pitch, const void *src,
                                 size_t src_pitch, size_t row_bytes, size_t rows, tsr_copy_dir_t dir)
{
    tsr_status_t rc = TSR_OK;
    CALL_CUDA(
        cudaMemcpy2DAsync(dst, dst_pitch, src, src_pitch, row_bytes, rows, copy_kinds[dir], state(dev)->stream));
    CALL_CUDA(cudaStreamSynchronize(state(dev)->stream));
cleanup:
    return rc;
}

static tsr_status_t cuda_memset(struct tsr_device *dev, void *ptr, int value, size_t bytes)
{
    tsr_status_t rc = TSR_OK;
    CALL_CUDA(cudaMemsetAsync(ptr, value, bytes, state(dev)->stream));
cleanup:
    return rc;
}

static tsr_status_t cuda_fill_f32(struct tsr_device *dev, float *x, float value, size_t n)
{
    tsr_status_t rc = TSR_OK;
    CALL_CUDA(tsr__cuda_fill_f32(x, value, n, state(dev)->stream));
cleanup:
    return rc;
}

static tsr_status_t cuda_gemm_f32(struct tsr_device *dev, tsr_trans_t ta, tsr_trans_t tb, int m, int n, int k,
                                  float alpha, const float *a, int lda, const float *b, int ldb, float beta,
                                  float *c, int ldc)
{
    tsr_status_t rc = TSR_OK;
    /* cuBLAS is column-major: a row-major C (m×n) is a column-major C^T (n×m) = op(B)^T op(A)^T. */
    CALL_CUBLAS(cublasSgemm(state(dev)->blas, tb == TSR_TRANS ? CUBLAS_OP_T : CUBLAS_OP_N,
                            ta == TSR_TRANS ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &alpha, b, ldb, a, lda, &beta,
                            c, ldc));
cleanup:
    return rc;
}

static tsr_status_t cuda_sync(struct tsr_device *dev)
{
    tsr_status_t rc = TSR_OK;
    CALL_CUDA(cudaStreamSynchronize(state(dev)->stream));
cleanup:
    return rc;
}

static int cuda_holds(struct tsr_device *dev, const void *ptr)
{
    (void)dev;
    struct cudaPointerAttributes a;
    if (cudaPointerGetAttributes(&a, ptr) != cudaSuccess) {
        cudaGetLastError(); /* older runtimes fail on plain host memory: clear it */
        return 0;
    }
    return a.type == cudaMemoryTypeDevice || a.type == cudaMemoryTypeManaged;
}

/* An event recorded on the device's stream for the profiler; NULL if CUDA refuses (the region
 * then has host times only). Created per region: profiling is off in normal runs. */
static void *cuda_prof_mark(struct tsr_device *dev)
{
    cudaEvent_t e = NULL;
    if (cudaEventCreate(&e) != cudaSuccess) {
        cudaGetLastError();
        return NULL;
    }
    if (cudaEventRecord(e, state(dev)->stream) != cudaSuccess) {
        cudaGetLastError();
        cudaEventDestroy(e);
        return NULL;
    }
    return e;
}

/* Seconds from e0 to e1 once e1 has happened; destroys both (once if they are the same). */
static double cuda_prof_elapsed(void *e0, void *e1)
{
    float ms = -1.0f;
    int ok = e0 != e1 && cudaEventSynchronize((cudaEvent_t)e1) == cudaSuccess &&
             cudaEventElapsedTime(&ms, (cudaEvent_t)e0, (cudaEvent_t)e1) == cudaSuccess;
    if (!ok)
        cudaGetLastError();
    cudaEventDestroy((cudaEvent_t)e0);
    if (e1 != e0)
        cudaEventDestroy((cudaEvent_t)e1);
    return ok ? 1e-3 * ms : -1.0;
}

const tsr_device_ops_t tsr__device_cuda_ops = {
    .name = "cuda",
    .count = cuda_count,
    .open = cuda_open,
    .close = cuda_close,
    .alloc = cuda_alloc,
    .free = cuda_free,
    .copy = cuda_copy,
    .copy_2d = cuda_copy_2d,
    .memset = cuda_memset,
    .fill_f32 = cuda_fill_f32,
    .gemm_f32 = cuda_gemm_f32,
    .sync = cuda_sync,
    .holds = cuda_holds,
    .prof_mark = cuda_prof_mark,
    .prof_elapsed = cuda_prof_elapsed,
};

#else /* !TSR_HAVE_CUDA */

const tsr_device_ops_t tsr__device_cuda_ops = {.name = "cuda"};

#endif
