/*
 * comm_nccl.c: the NCCL backend: GPU buffers, moved by NCCL on a CUDA stream of the
 * communicator's own.
 *
 * Ordering, with "compute stream" the device's stream (tsr__cuda_stream) on which every
 * kernel and copy of the device is queued:
 *   1. an event recorded on the compute stream, waited for by the communication stream,
 *      so NCCL reads buffers only after the kernels queued before the call wrote them;
 *   2. the NCCL operation, queued on the communication stream;
 *   3. an event recorded on the communication stream after it. A blocking call makes the
 *      compute stream wait for it before returning, a non-blocking one keeps it in the
 *      request and tsr_request_wait() makes the compute stream wait. Nothing blocks the
 *      host: kernels queued afterwards see the results, the host after tsr_device_sync().
 * The ready event and the blocking-completion event are the communicator's and re-recorded
 * by every call (a wait binds to the record current when it is queued); each request in
 * flight holds a completion event of its own from a small pool.
 *
 * Creating the NCCL communicator is collective, and every check that could fail on some
 * ranks only is agreed over MPI first, so all ranks either call ncclCommInitRank or return
 * the same error. Without NCCL in the build the table has no operations and enabling it
 * reports TSR_ERR_NOT_SUPPORTED.
 */
#include "comm/comm_impl.h"

#if TSR_HAVE_NCCL
#include <cuda_runtime.h>
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device/cuda_impl.h"

typedef struct nccl_state {
    ncclComm_t comm;
    int device;          /* the CUDA device index */
    cudaStream_t stream; /* the communication stream */
    cudaEvent_t ready;   /* recorded on the compute stream before each operation */
    cudaEvent_t done;    /* recorded on the communication stream after each blocking operation */
    cudaEvent_t *idle;   /* completion events for non-blocking operations, not in use */
    size_t nidle, cap;
} nccl_state_t;

#define CALL_NCCL(call)                                                                            \
    do {                                                                                           \
        ncclResult_t tsr_nccl_rc_ = (call);                                                        \
        if (tsr_nccl_rc_ != ncclSuccess) {                                                         \
            rc = TSR_ERROR(TSR_ERR_NCCL, "%s failed: %s (%s)", #call, ncclGetErrorString(tsr_nccl_rc_), \
                           ncclGetLastError(NULL));                                                \
            goto cleanup;                                                                          \
        }                                                                                          \
    } while (0)

static nccl_state_t *state(tsr_comm_t c)
{
    return (nccl_state_t *)c->nccl;
}

static cudaStream_t compute_stream(tsr_comm_t c)
{
    return tsr__cuda_stream(c->dev);
}

/* U8 is ncclUint8, unsigned: SUM wraps modulo 256 and MAX and MIN compare as unsigned, as
 * on the MPI backend. */
static ncclDataType_t nccl_dtype(tsr_dtype_t dtype)
{
    switch (dtype) {
    case TSR_DTYPE_F32:
        return ncclFloat32;
    case TSR_DTYPE_F64:
        return ncclFloat64;
    case TSR_DTYPE_I32:
        return ncclInt32;
    case TSR_DTYPE_I64:
        return ncclInt64;
    case TSR_DTYPE_U8:
        return ncclUint8;
    case TSR_DTYPE_BF16:
        return ncclBfloat16;
    default:
        return ncclNumTypes; /* comm.c rejects invalid types before a backend sees them */
    }
}

static ncclRedOp_t nccl_op(tsr_reduce_op_t op)
{
    static const ncclRedOp_t ops[] = {[TSR_REDUCE_SUM] = ncclSum, [TSR_REDUCE_MAX] = ncclMax,
                                      [TSR_REDUCE_MIN] = ncclMin};
    return ops[op];
}

/* ------------------------------------------------------------------------------------------ */
/* Completion events of non-blocking operations. */

static tsr_status_t event_take(nccl_state_t *s, cudaEvent_t *out)
{
    tsr_status_t rc = TSR_OK;
    if (s->nidle) {
        *out = s->idle[--s->nidle];
        return TSR_OK;
    }
    CALL_CUDA(cudaSetDevice(s->device)); /* an event belongs to the device current at creation */
    CALL_CUDA(cudaEventCreateWithFlags(out, cudaEventDisableTiming));
cleanup:
    return rc;
}

static void event_give(nccl_state_t *s, cudaEvent_t ev)
{
    if (s->nidle == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 8;
        cudaEvent_t *grown = realloc(s->idle, cap * sizeof *grown);
        if (!grown) {
            cudaEventDestroy(ev);
            return;
        }
        s->idle = grown;
        s->cap = cap;
    }
    s->idle[s->nidle++] = ev;
}

/* ------------------------------------------------------------------------------------------ */
/* Operations. */

/* Step 1 above; also reports an error NCCL met asynchronously since the last call. */
static tsr_status_t order_after_compute(tsr_comm_t c)
{
    tsr_status_t rc = TSR_OK;
    nccl_state_t *s = state(c);
    ncclResult_t async = ncclSuccess;
    CALL_NCCL(ncclCommGetAsyncError(s->comm, &async));
    TSR_CHECK(async == ncclSuccess || async == ncclInProgress, TSR_ERR_NCCL,
              "the NCCL communicator failed in an earlier operation: %s", ncclGetErrorString(async));
    CALL_CUDA(cudaEventRecord(s->ready, compute_stream(c)));
    CALL_CUDA(cudaStreamWaitEvent(s->stream, s->ready, 0));
cleanup:
    return rc;
}

/* Step 3 above: blocking, the compute stream waits now; else the request holds the event. */
static tsr_status_t signal_done(tsr_comm_t c, struct tsr_request *req)
{
    tsr_status_t rc = TSR_OK;
    nccl_state_t *s = state(c);
    cudaEvent_t ev = NULL;
    if (!req) {
        CALL_CUDA(cudaEventRecord(s->done, s->stream));
        CALL_CUDA(cudaStreamWaitEvent(compute_stream(c), s->done, 0));
        return TSR_OK;
    }
    TSR_TRY(event_take(s, &ev));
    CALL_CUDA(cudaEventRecord(ev, s->stream));
    req->event = ev;
    ev = NULL;
cleanup:
    if (ev)
        event_give(s, ev);
    return rc;
}

static tsr_status_t nccl_allreduce(tsr_comm_t c, const void *send, void *recv, size_t count, tsr_dtype_t dtype,
                                   tsr_reduce_op_t op, struct tsr_request *req)
{
    tsr_status_t rc = TSR_OK;
    const void *s = send == TSR_IN_PLACE ? recv : send; /* NCCL works in place when send == recv */
    TSR_TRY(order_after_compute(c));
    CALL_NCCL(ncclAllReduce(s, recv, count, nccl_dtype(dtype), nccl_op(op), state(c)->comm, state(c)->stream));
    TSR_TRY(signal_done(c, req));
cleanup:
    return rc;
}

static tsr_status_t nccl_reduce_scatter(tsr_comm_t c, const void *send, void *recv, size_t recv_count,
                                        tsr_dtype_t dtype, tsr_reduce_op_t op, struct tsr_request *req)
{
    tsr_status_t rc = TSR_OK;
    TSR_TRY(order_after_compute(c));
    CALL_NCCL(ncclReduceScatter(send, recv, recv_count, nccl_dtype(dtype), nccl_op(op), state(c)->comm,
                                state(c)->stream));
    TSR_TRY(signal_done(c, req));
cleanup:
    return rc;
}

static tsr_status_t nccl_allgather(tsr_comm_t c, const void *send, void *recv, size_t send_count, tsr_dtype_t dtype,
                                   struct tsr_request *req)
{
    tsr_status_t rc = TSR_OK;
    /* NCCL works in place when send is this rank's block of recv. */
    const void *s = send == TSR_IN_PLACE ? (const char *)recv + (size_t)c->rank * send_count * tsr_dtype_size(dtype)
                                         : send;
    TSR_TRY(order_after_compute(c));
    CALL_NCCL(ncclAllGather(s, recv, send_count, nccl_dtype(dtype), state(c)->comm, state(c)->stream));
    TSR_TRY(signal_done(c, req));
cleanup:
    return rc;
}

static tsr_status_t nccl_bcast(tsr_comm_t c, void *buf, size_t count, tsr_dtype_t dtype, int root,
                               struct tsr_request *req)
{
    tsr_status_t rc = TSR_OK;
    TSR_TRY(order_after_compute(c));
    CALL_NCCL(ncclBroadcast(buf, buf, count, nccl_dtype(dtype), root, state(c)->comm, state(c)->stream));
    TSR_TRY(signal_done(c, req));
cleanup:
    return rc;
}

/* NCCL has no tags (messages between two ranks match in posting order) and runs each
 * ncclSend and ncclRecv to completion in turn on the stream, so a send to oneself would wait
 * for a receive queued behind it: refused. */
static tsr_status_t nccl_send(tsr_comm_t c, const void *buf, size_t count, tsr_dtype_t dtype, int dest, int tag,
                              struct tsr_request *req)
{
    tsr_status_t rc = TSR_OK;
    (void)tag;
    TSR_CHECK(dest != c->rank, TSR_ERR_NOT_SUPPORTED,
              "send to oneself (rank %d) on the NCCL backend would never complete; use the MPI backend", dest);
    TSR_TRY(order_after_compute(c));
    CALL_NCCL(ncclSend(buf, count, nccl_dtype(dtype), dest, state(c)->comm, state(c)->stream));
    TSR_TRY(signal_done(c, req));
cleanup:
    return rc;
}

static tsr_status_t nccl_recv(tsr_comm_t c, void *buf, size_t count, tsr_dtype_t dtype, int src, int tag,
                              struct tsr_request *req)
{
    tsr_status_t rc = TSR_OK;
    (void)tag;
    TSR_CHECK(src != MPI_ANY_SOURCE, TSR_ERR_NOT_SUPPORTED, "the NCCL backend cannot receive from any source");
    TSR_CHECK(src != c->rank, TSR_ERR_NOT_SUPPORTED,
              "receive from oneself (rank %d) on the NCCL backend would never complete; use the MPI backend", src);
    TSR_TRY(order_after_compute(c));
    CALL_NCCL(ncclRecv(buf, count, nccl_dtype(dtype), src, state(c)->comm, state(c)->stream));
    TSR_TRY(signal_done(c, req));
cleanup:
    return rc;
}

/* Finished means finished on the GPU (tested) or ordered before the compute stream's next
 * work (waited): neither blocks the host. */
static tsr_status_t nccl_complete(struct tsr_request *r, int blocking, int *done)
{
    tsr_status_t rc = TSR_OK;
    tsr_comm_t c = r->comm;
    nccl_state_t *s = state(c);
    cudaEvent_t ev = (cudaEvent_t)r->event;
    *done = 1;
    if (!blocking) {
        cudaError_t q = cudaEventQuery(ev);
        if (q == cudaErrorNotReady) {
            ncclResult_t async = ncclSuccess;
            CALL_NCCL(ncclCommGetAsyncError(s->comm, &async));
            TSR_CHECK(async == ncclSuccess || async == ncclInProgress, TSR_ERR_NCCL,
                      "NCCL failed while an operation was in flight: %s", ncclGetErrorString(async));
            *done = 0;
            return TSR_OK;
        }
        TSR_CHECK(q == cudaSuccess, TSR_ERR_CUDA, "cudaEventQuery on a communication's completion failed: %s",
                  cudaGetErrorString(q));
    }
    CALL_CUDA(cudaStreamWaitEvent(compute_stream(c), ev, 0));
cleanup:
    event_give(s, ev);
    r->event = NULL;
    return rc;
}

const tsr_comm_ops_t tsr__comm_nccl_ops = {
    .name = "nccl",
    .allreduce = nccl_allreduce,
    .reduce_scatter = nccl_reduce_scatter,
    .allgather = nccl_allgather,
    .bcast = nccl_bcast,
    .send = nccl_send,
    .recv = nccl_recv,
    .complete = nccl_complete,
};

/* ------------------------------------------------------------------------------------------ */
/* Creation and release. */

/* What each rank tells the others before NCCL is set up. */
enum { GPU_OK = 0, GPU_NONE, GPU_FAILED };
typedef struct gpu_id {
    int status;     /* GPU_OK, GPU_NONE (no CUDA device set) or GPU_FAILED (CUDA call failed) */
    char uuid[16];  /* what two ranks on one GPU have in common, across nodes too */
    char bus[32];   /* PCI bus id, for the message */
    char node[64];  /* MPI processor name, for the message */
    char what[128]; /* GPU_FAILED: the CUDA error */
} gpu_id_t;

static void destroy_state(nccl_state_t *s, int finalize)
{
    if (!s)
        return;
    cudaError_t err = s->stream ? cudaStreamSynchronize(s->stream) : cudaSuccess;
    if (err != cudaSuccess)
        tsr_log(TSR_LOG_WARN, "NCCL communicator release: the communication stream failed: %s",
                cudaGetErrorString(err));
    if (s->comm) {
        /* Finalize flushes outstanding work and is collective; after a failure only an abort
         * is safe, as the other ranks may not be there. */
        if (finalize && ncclCommFinalize(s->comm) == ncclSuccess) {
            ncclCommDestroy(s->comm);
        } else {
            if (finalize)
                tsr_log(TSR_LOG_WARN, "ncclCommFinalize failed (%s); aborting the communicator",
                        ncclGetLastError(NULL));
            ncclCommAbort(s->comm);
        }
    }
    for (size_t i = 0; i < s->nidle; i++)
        cudaEventDestroy(s->idle[i]);
    free(s->idle);
    if (s->done)
        cudaEventDestroy(s->done);
    if (s->ready)
        cudaEventDestroy(s->ready);
    if (s->stream)
        cudaStreamDestroy(s->stream);
    free(s);
}

/* This rank's GPU and, if that works, its communication stream and events in *out. */
static void prepare(tsr_comm_t c, gpu_id_t *me, nccl_state_t **out)
{
    struct cudaDeviceProp prop;
    char node[MPI_MAX_PROCESSOR_NAME];
    int len = 0;
    cudaError_t err = cudaSuccess;
    nccl_state_t *s = NULL;
    memset(me, 0, sizeof *me);
    *out = NULL;
    if (!c->dev || tsr_device_kind(c->dev) != TSR_DEVICE_CUDA) {
        me->status = GPU_NONE;
        return;
    }
    if (MPI_Get_processor_name(node, &len) == MPI_SUCCESS)
        snprintf(me->node, sizeof me->node, "%.63s", node); /* a long name is cut, it only labels a message */
    int index = c->dev->index;
    s = tsr__calloc(1, sizeof *s);
    if (!s) {
        me->status = GPU_FAILED;
        snprintf(me->what, sizeof me->what, "no host memory for the NCCL state");
        return;
    }
    s->device = index;
    if ((err = cudaGetDeviceProperties(&prop, index)) != cudaSuccess ||
        (err = cudaDeviceGetPCIBusId(me->bus, (int)sizeof me->bus, index)) != cudaSuccess ||
        (err = cudaSetDevice(index)) != cudaSuccess ||
        (err = cudaStreamCreateWithFlags(&s->stream, cudaStreamNonBlocking)) != cudaSuccess ||
        (err = cudaEventCreateWithFlags(&s->ready, cudaEventDisableTiming)) != cudaSuccess ||
        (err = cudaEventCreateWithFlags(&s->done, cudaEventDisableTiming)) != cudaSuccess) {
        cudaGetLastError();
        me->status = GPU_FAILED;
        snprintf(me->what, sizeof me->what, "CUDA device %d: %s", index, cudaGetErrorString(err));
        destroy_state(s, 0);
        return;
    }
    memcpy(me->uuid, prop.uuid.bytes, sizeof me->uuid);
    *out = s;
}

/* The same verdict on every rank, from every rank's gpu_id_t. */
static tsr_status_t verdict(const gpu_id_t *ids, int n)
{
    for (int r = 0; r < n; r++) {
        if (ids[r].status == GPU_NONE)
            return TSR_ERROR(TSR_ERR_INVALID_ARG,
                             "the NCCL backend needs a CUDA device on every rank, and rank %d of the communicator "
                             "has none (call tsr_comm_set_device first)", r);
        if (ids[r].status != GPU_OK)
            return TSR_ERROR(TSR_ERR_CUDA, "NCCL setup failed on rank %d of the communicator: %s", r, ids[r].what);
    }
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++)
            if (memcmp(ids[i].uuid, ids[j].uuid, sizeof ids[i].uuid) == 0)
                return TSR_ERROR(TSR_ERR_NOT_SUPPORTED,
                                 "NCCL cannot put two ranks on one GPU (ranks %d and %d share GPU %s on %s); use "
                                 "the MPI backend", i, j, ids[i].bus, ids[i].node[0] ? ids[i].node : "one node");
    return TSR_OK;
}

tsr_status_t tsr__comm_nccl_enable(tsr_comm_t c)
{
    tsr_status_t rc = TSR_OK;
    gpu_id_t me, *ids = NULL;
    nccl_state_t *s = NULL;
    struct {
        int ok;
        ncclUniqueId id;
    } unique;
    int inited = 0, all_inited = 0;
    ids = tsr__calloc((size_t)c->size, sizeof *ids);
    TSR_CHECK(ids, TSR_ERR_OUT_OF_MEMORY, "no memory for the GPU ids of %d ranks", c->size);
    prepare(c, &me, &s);
    TSR_CALL_MPI(MPI_Allgather(&me, (int)sizeof me, MPI_BYTE, ids, (int)sizeof me, MPI_BYTE, c->mpi));
    TSR_TRY(verdict(ids, c->size));

    memset(&unique, 0, sizeof unique);
    if (c->rank == 0)
        unique.ok = ncclGetUniqueId(&unique.id) == ncclSuccess;
    TSR_CALL_MPI(MPI_Bcast(&unique, (int)sizeof unique, MPI_BYTE, 0, c->mpi));
    TSR_CHECK(unique.ok, TSR_ERR_NCCL, "ncclGetUniqueId failed on rank 0 of the communicator (%s)",
              c->rank == 0 ? ncclGetLastError(NULL) : "see rank 0");

    /* Every rank calls ncclCommInitRank, or the ranks that do wait for the others forever.
     * prepare() made the device current already; NCCL binds the communicator to it. */
    cudaSetDevice(s->device);
    if (ncclCommInitRank(&s->comm, c->size, unique.id, c->rank) == ncclSuccess)
        inited = 1;
    else
        s->comm = NULL;
    TSR_CALL_MPI(MPI_Allreduce(&inited, &all_inited, 1, MPI_INT, MPI_MIN, c->mpi));
    TSR_CHECK(all_inited, TSR_ERR_NCCL, "ncclCommInitRank failed on %s rank of the communicator (%s)",
              inited ? "another" : "this", inited ? "see the other ranks" : ncclGetLastError(NULL));
    c->nccl = s;
    s = NULL;
    tsr_log(TSR_LOG_DEBUG, "NCCL communicator of %d ranks on CUDA device %d", c->size, c->dev->index);
cleanup:
    destroy_state(s, 0); /* a half-built communicator is aborted, never finalized */
    free(ids);
    return rc;
}

void tsr__comm_nccl_disable(tsr_comm_t c)
{
    nccl_state_t *s = state(c);
    c->nccl = NULL;
    destroy_state(s, 1);
}

#else /* !TSR_HAVE_NCCL */

const tsr_comm_ops_t tsr__comm_nccl_ops = {.name = "nccl"};

tsr_status_t tsr__comm_nccl_enable(tsr_comm_t c)
{
    (void)c;
    return TSR_ERROR(TSR_ERR_NOT_SUPPORTED, "this build of Tessera has no NCCL backend (reconfigure with --with-nccl)");
}

void tsr__comm_nccl_disable(tsr_comm_t c)
{
    (void)c;
}

#endif
