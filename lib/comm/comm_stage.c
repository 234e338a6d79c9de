/*
 * comm_stage.c: the MPI backend on GPU buffers, through host staging buffers, or, for
 * point-to-point on a GPU-aware MPI, as they are.
 *
 * Each operation copies what this rank contributes from the device into a host buffer,
 * runs the MPI backend on host buffers, and copies the result back to the device. A
 * blocking operation does all three before it returns; a non-blocking one copies in when
 * posted and copies out when tsr_request_wait() or tsr_request_test() finds it finished.
 * The copies are tsr_device_copy(), ordered after the work queued on the device's stream,
 * so a buffer a kernel is still writing is read only once the kernel is done.
 *
 * This path works where NCCL does not (several ranks on one GPU, no NCCL in the build) and
 * is the reference the NCCL backend is checked against.
 *
 * A GPU-aware MPI (one that says it takes CUDA buffers: tsr__mpi_gpu_aware) gets the device
 * buffers of send and recv as they are, which saves the two copies through host memory on
 * every pipeline message. The device's stream is synchronized first, so a send reads what
 * the kernels queued before it wrote, and a receive writes nothing a queued kernel still
 * uses; from there the rules are MPI's, as on host buffers. Collectives stay staged: the
 * reductions of bf16 and u8 are user operations that run on the host, and an MPI's
 * reductions on device memory stage through the host anyway.
 *
 * Staging buffers belong to the communicator: a pool that grows to the largest message and
 * to the number of operations in flight at once, pinned (cudaHostAlloc) so that copies run
 * at full speed, plain host memory if pinning fails. They are counted in the tracked
 * allocator as host (TSR_DEVICE_CPU) memory of category TSR_MEM_COMM.
 */
#include <stdlib.h>
#include <string.h>

#include "comm/comm_impl.h"

#if TSR_HAVE_CUDA
#include <cuda_runtime.h>
#endif
#if HAVE_MPI_EXT_H
#include <mpi-ext.h> /* Open MPI's MPIX_Query_cuda_support */
#endif

tsr_status_t tsr__mpi_gpu_aware(int *aware)
{
    const char *env = getenv("TSR_GPU_AWARE_MPI");
    *aware = 0;
    if (env && *env) {
        if (strcmp(env, "0") != 0 && strcmp(env, "1") != 0)
            return TSR_ERROR(TSR_ERR_INVALID_ARG,
                             "TSR_GPU_AWARE_MPI=%.40s: expected 1 (this MPI takes GPU buffers) or 0 (stage them "
                             "through host memory), or unset to ask the MPI library",
                             env);
        *aware = env[0] == '1';
        return TSR_OK;
    }
#if HAVE_MPIX_GPU_QUERY_SUPPORT
    int supported = 0;
    if (MPIX_GPU_query_support(MPIX_GPU_SUPPORT_CUDA, &supported) == MPI_SUCCESS)
        *aware = supported != 0;
#elif HAVE_MPIX_QUERY_CUDA_SUPPORT
    *aware = MPIX_Query_cuda_support() != 0;
#endif
    return TSR_OK;
}

struct tsr_stage {
    void *host;
    size_t bytes; /* capacity */
    int pinned;   /* from cudaHostAlloc, else from posix_memalign */
    int in_use;   /* held by an operation */
};

static void stage_release_memory(struct tsr_stage *s)
{
    if (!s->host)
        return;
    tsr__mem_forget(TSR_DEVICE_CPU, s->host);
#if TSR_HAVE_CUDA
    if (s->pinned)
        cudaFreeHost(s->host);
    else
#endif
        free(s->host);
    s->host = NULL;
    s->bytes = 0;
    s->pinned = 0;
}

/* Give s exactly `bytes` of fresh host memory, pinned if the driver allows. */
static tsr_status_t stage_resize(struct tsr_stage *s, size_t bytes)
{
    tsr_status_t rc = TSR_OK;
    void *p = NULL;
    int pinned = 0;
    stage_release_memory(s);
#if TSR_HAVE_CUDA
    if (cudaHostAlloc(&p, bytes, cudaHostAllocPortable) == cudaSuccess) {
        pinned = 1;
    } else {
        cudaGetLastError(); /* pinned memory can run out; pageable memory still works */
        p = NULL;
    }
#endif
    if (!p && posix_memalign(&p, TSR_DEVICE_ALIGNMENT, bytes) != 0)
        p = NULL;
    TSR_CHECK(p, TSR_ERR_OUT_OF_MEMORY, "no host memory for a %zu-byte communication staging buffer", bytes);
    rc = tsr__mem_record(TSR_DEVICE_CPU, TSR_MEM_COMM, p, bytes);
    if (rc != TSR_OK) {
#if TSR_HAVE_CUDA
        if (pinned)
            cudaFreeHost(p);
        else
#endif
            free(p);
        goto cleanup;
    }
    s->host = p;
    s->bytes = bytes;
    s->pinned = pinned;
cleanup:
    return rc;
}

/* An idle staging buffer of at least `bytes` (> 0): the smallest idle one that fits, else
 * the largest idle one regrown, else a new one. */
static tsr_status_t stage_take(tsr_comm_t c, size_t bytes, struct tsr_stage **out)
{
    tsr_status_t rc = TSR_OK;
    struct tsr_stage *fit = NULL, *largest = NULL, *fresh = NULL;
    *out = NULL;
    for (size_t i = 0; i < c->nstages; i++) {
        struct tsr_stage *s = c->stages[i];
        if (s->in_use)
            continue;
        if (s->bytes >= bytes && (!fit || s->bytes < fit->bytes))
            fit = s;
        if (!largest || s->bytes > largest->bytes)
            largest = s;
    }
    if (!fit && largest) {
        TSR_TRY(stage_resize(largest, bytes));
        fit = largest;
    }
    if (!fit) {
        struct tsr_stage **grown = realloc(c->stages, (c->nstages + 1) * sizeof *grown);
        TSR_CHECK(grown, TSR_ERR_OUT_OF_MEMORY, "no memory for the staging buffer list");
        c->stages = grown;
        fresh = tsr__calloc(1, sizeof *fresh);
        TSR_CHECK(fresh, TSR_ERR_OUT_OF_MEMORY, "no memory for a staging buffer");
        TSR_TRY(stage_resize(fresh, bytes));
        c->stages[c->nstages++] = fresh;
        fit = fresh;
        fresh = NULL;
    }
    fit->in_use = 1;
    *out = fit;
cleanup:
    free(fresh);
    return rc;
}

static void stage_give(struct tsr_stage *s)
{
    if (s)
        s->in_use = 0;
}

void tsr__comm_stage_free(tsr_comm_t c, int all)
{
    size_t kept = 0;
    for (size_t i = 0; i < c->nstages; i++) {
        struct tsr_stage *s = c->stages[i];
        if (s->in_use && !all) {
            c->stages[kept++] = s;
            continue;
        }
        stage_release_memory(s);
        free(s);
    }
    c->nstages = kept;
}

static tsr_status_t to_host(tsr_comm_t c, void *host, const void *dev, size_t bytes)
{
    return tsr_device_copy(c->dev, host, dev, bytes, TSR_COPY_DEVICE_TO_HOST);
}

static tsr_status_t to_device(tsr_comm_t c, void *dev, const void *host, size_t bytes)
{
    return tsr_device_copy(c->dev, dev, host, bytes, TSR_COPY_HOST_TO_DEVICE);
}

/* The last step of a staged operation whose result is `bytes` at host address src, bound
 * for device address dst (bytes may be 0: nothing comes back). Blocking: copy it now.
 * Non-blocking: the request takes the staging buffer (*s becomes NULL) and the copy waits
 * for completion. */
static tsr_status_t stage_finish(tsr_comm_t c, struct tsr_stage **s, void *dst, const void *src, size_t bytes,
                                 struct tsr_request *req)
{
    if (!req)
        return bytes ? to_device(c, dst, src, bytes) : TSR_OK;
    req->stage = *s;
    req->unstage_dst = dst;
    req->unstage_src = src;
    req->unstage_bytes = bytes;
    *s = NULL;
    return TSR_OK;
}

/* A staging buffer for `bytes`, or none (*out = NULL) for an empty message: MPI accepts a
 * NULL buffer with a count of 0. */
static tsr_status_t stage_for(tsr_comm_t c, size_t bytes, struct tsr_stage **s, char **host)
{
    tsr_status_t rc = TSR_OK;
    *s = NULL;
    *host = NULL;
    if (bytes == 0)
        return TSR_OK;
    TSR_TRY(stage_take(c, bytes, s));
    *host = (*s)->host;
cleanup:
    return rc;
}

/* allreduce: reduce in place in one staging buffer that starts as the send data. */
static tsr_status_t staged_allreduce(tsr_comm_t c, const void *send, void *recv, size_t count, tsr_dtype_t dtype,
                                     tsr_reduce_op_t op, struct tsr_request *req)
{
    tsr_status_t rc = TSR_OK;
    struct tsr_stage *s = NULL;
    char *host;
    size_t bytes = count * tsr_dtype_size(dtype);
    TSR_TRY(stage_for(c, bytes, &s, &host));
    TSR_TRY(to_host(c, host, send == TSR_IN_PLACE ? recv : send, bytes));
    TSR_TRY(tsr__comm_mpi_ops.allreduce(c, TSR_IN_PLACE, host, count, dtype, op, req));
    TSR_TRY(stage_finish(c, &s, recv, host, bytes, req));
cleanup:
    stage_give(s);
    return rc;
}

/* reduce-scatter: one staging buffer holds all N blocks sent, then the block received. */
static tsr_status_t staged_reduce_scatter(tsr_comm_t c, const void *send, void *recv, size_t recv_count,
                                          tsr_dtype_t dtype, tsr_reduce_op_t op, struct tsr_request *req)
{
    tsr_status_t rc = TSR_OK;
    struct tsr_stage *s = NULL;
    char *host;
    size_t block = recv_count * tsr_dtype_size(dtype), all = (size_t)c->size * block;
    TSR_TRY(stage_for(c, all + block, &s, &host));
    TSR_TRY(to_host(c, host, send, all));
    TSR_TRY(tsr__comm_mpi_ops.reduce_scatter(c, host, host ? host + all : NULL, recv_count, dtype, op, req));
    TSR_TRY(stage_finish(c, &s, recv, host ? host + all : NULL, block, req));
cleanup:
    stage_give(s);
    return rc;
}

/* allgather: this rank's block goes to its place in the staging buffer, then in place. */
static tsr_status_t staged_allgather(tsr_comm_t c, const void *send, void *recv, size_t send_count,
                                     tsr_dtype_t dtype, struct tsr_request *req)
{
    tsr_status_t rc = TSR_OK;
    struct tsr_stage *s = NULL;
    char *host;
    size_t block = send_count * tsr_dtype_size(dtype), mine = (size_t)c->rank * block;
    const void *src = send == TSR_IN_PLACE ? (const char *)recv + mine : send;
    TSR_TRY(stage_for(c, (size_t)c->size * block, &s, &host));
    TSR_TRY(to_host(c, host ? host + mine : NULL, src, block));
    TSR_TRY(tsr__comm_mpi_ops.allgather(c, TSR_IN_PLACE, host, send_count, dtype, req));
    TSR_TRY(stage_finish(c, &s, recv, host, (size_t)c->size * block, req));
cleanup:
    stage_give(s);
    return rc;
}

/* bcast: the root copies out and needs nothing back; the others only copy back. */
static tsr_status_t staged_bcast(tsr_comm_t c, void *buf, size_t count, tsr_dtype_t dtype, int root,
                                 struct tsr_request *req)
{
    tsr_status_t rc = TSR_OK;
    struct tsr_stage *s = NULL;
    char *host;
    size_t bytes = count * tsr_dtype_size(dtype);
    int is_root = c->rank == root;
    TSR_TRY(stage_for(c, bytes, &s, &host));
    if (is_root)
        TSR_TRY(to_host(c, host, buf, bytes));
    TSR_TRY(tsr__comm_mpi_ops.bcast(c, host, count, dtype, root, req));
    TSR_TRY(stage_finish(c, &s, buf, host, is_root ? 0 : bytes, req));
cleanup:
    stage_give(s);
    return rc;
}

static tsr_status_t staged_send(tsr_comm_t c, const void *buf, size_t count, tsr_dtype_t dtype, int dest, int tag,
                                struct tsr_request *req)
{
    tsr_status_t rc = TSR_OK;
    struct tsr_stage *s = NULL;
    char *host;
    size_t bytes = count * tsr_dtype_size(dtype);
    if (c->gpu_aware) {
        TSR_TRY(tsr_device_sync(c->dev));
        return tsr__comm_mpi_ops.send(c, buf, count, dtype, dest, tag, req);
    }
    TSR_TRY(stage_for(c, bytes, &s, &host));
    TSR_TRY(to_host(c, host, buf, bytes));
    TSR_TRY(tsr__comm_mpi_ops.send(c, host, count, dtype, dest, tag, req));
    TSR_TRY(stage_finish(c, &s, NULL, NULL, 0, req));
cleanup:
    stage_give(s);
    return rc;
}

/* recv: staged, a message of the wrong length fails in the MPI backend before anything is
 * copied; handed to a GPU-aware MPI, the buffer may hold part of it, as host buffers do. */
static tsr_status_t staged_recv(tsr_comm_t c, void *buf, size_t count, tsr_dtype_t dtype, int src, int tag,
                                struct tsr_request *req)
{
    tsr_status_t rc = TSR_OK;
    struct tsr_stage *s = NULL;
    char *host;
    size_t bytes = count * tsr_dtype_size(dtype);
    if (c->gpu_aware) {
        TSR_TRY(tsr_device_sync(c->dev));
        return tsr__comm_mpi_ops.recv(c, buf, count, dtype, src, tag, req);
    }
    TSR_TRY(stage_for(c, bytes, &s, &host));
    TSR_TRY(tsr__comm_mpi_ops.recv(c, host, count, dtype, src, tag, req));
    TSR_TRY(stage_finish(c, &s, buf, host, bytes, req));
cleanup:
    stage_give(s);
    return rc;
}

/* Complete the MPI part, copy the result to the device if it succeeded, then give the
 * staging buffer back. */
static tsr_status_t staged_complete(struct tsr_request *r, int blocking, int *done)
{
    tsr_status_t rc = tsr__mpi_complete(r, blocking, done);
    if (!*done)
        return rc;
    if (rc == TSR_OK && r->unstage_bytes)
        rc = to_device(r->comm, r->unstage_dst, r->unstage_src, r->unstage_bytes);
    stage_give(r->stage);
    r->stage = NULL;
    return rc;
}

const tsr_comm_ops_t tsr__comm_staged_ops = {
    .name = "mpi",
    .allreduce = staged_allreduce,
    .reduce_scatter = staged_reduce_scatter,
    .allgather = staged_allgather,
    .bcast = staged_bcast,
    .send = staged_send,
    .recv = staged_recv,
    .complete = staged_complete,
};
