/* comm.c: the public communicator API: argument checks, byte counters, backend dispatch,
 * and the choice of backend and buffer location. */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "comm/comm_impl.h"

static const tsr_comm_ops_t *const backends[] = {
    [TSR_COMM_BACKEND_MPI] = &tsr__comm_mpi_ops,
    [TSR_COMM_BACKEND_NCCL] = &tsr__comm_nccl_ops,
};

static int on_gpu(tsr_comm_t c)
{
    return c->dev && tsr_device_kind(c->dev) == TSR_DEVICE_CUDA;
}

/* The MPI backend's table for where c's buffers live: host memory as is, GPU memory staged. */
static const tsr_comm_ops_t *mpi_ops_for(tsr_comm_t c)
{
    return on_gpu(c) ? &tsr__comm_staged_ops : &tsr__comm_mpi_ops;
}

/* The backend for an operation whose result lands in buf: the communicator's own, except that
 * host memory on a communicator of GPU buffers goes through plain MPI (a loss, a flag, a
 * checkpoint's metadata), whichever backend the GPU buffers use. */
static const tsr_comm_ops_t *ops_for(tsr_comm_t c, const void *buf)
{
    if (c && on_gpu(c) && !tsr__device_holds(c->dev, buf))
        return &tsr__comm_mpi_ops;
    return c ? c->ops : NULL;
}

void tsr__comm_set_label(tsr_comm_t c, const char *label)
{
    if (c)
        c->label = label;
}

int tsr__comm_set_sync_sends(tsr_comm_t c, int on)
{
    int was = c->sync_sends;
    c->sync_sends = on;
    return was;
}

/* The device whose stream an operation of ops is timed on: NCCL's operations are queued on
 * the device; MPI's, staged or not, have finished (or been posted) when the call returns. */
static tsr_device_t timed_device(tsr_comm_t c, const tsr_comm_ops_t *ops)
{
    return c && ops == &tsr__comm_nccl_ops ? c->dev : NULL;
}

/* The profiler region of an operation of c through ops. */
#define COMM_REGION(c, ops, op) TSR__REGION(timed_device((c), (ops)), TSR_PROF_COMM, op_names[op], (c) ? (c)->label : NULL)

static const char *const op_names[TSR_COMM_OP_COUNT] = {
    [TSR_COMM_ALLREDUCE] = "allreduce", [TSR_COMM_REDUCE_SCATTER] = "reduce_scatter",
    [TSR_COMM_ALLGATHER] = "allgather", [TSR_COMM_BCAST] = "bcast",
    [TSR_COMM_SEND] = "send",           [TSR_COMM_RECV] = "recv",
};

const char *tsr_comm_op_name(tsr_comm_op_t op)
{
    return (unsigned)op < TSR_COMM_OP_COUNT ? op_names[op] : "unknown";
}

tsr_status_t tsr__comm_adopt(MPI_Comm owned, tsr_comm_t *out)
{
    tsr_status_t rc = TSR_OK;
    struct tsr_comm *c = tsr__calloc(1, sizeof *c);
    *out = NULL;
    TSR_CHECK(c, TSR_ERR_OUT_OF_MEMORY, "no memory for a communicator");
    c->mpi = owned;
    TSR_CALL_MPI(MPI_Comm_set_errhandler(owned, MPI_ERRORS_RETURN));
    TSR_CALL_MPI(MPI_Comm_rank(owned, &c->rank));
    TSR_CALL_MPI(MPI_Comm_size(owned, &c->size));
    c->backend = TSR_COMM_BACKEND_MPI;
    c->ops = backends[TSR_COMM_BACKEND_MPI];
    c->pair = MPI_COMM_NULL;
    /* comm_mpi.c's pairwise reduce-scatter sends on a duplicate, made here, while every rank is
     * in this collective call: made on its first use, it would block a non-blocking post. */
    if (c->size == 2)
        TSR_CALL_MPI(MPI_Comm_dup(owned, &c->pair));
    *out = c;
    c = NULL;
cleanup:
    free(c);
    return rc;
}

tsr_status_t tsr_comm_create(MPI_Comm comm, tsr_comm_t *out)
{
    tsr_status_t rc = TSR_OK;
    MPI_Comm dup = MPI_COMM_NULL;
    *out = NULL;
    TSR_CHECK(comm != MPI_COMM_NULL, TSR_ERR_INVALID_ARG, "tsr_comm_create needs a communicator, got MPI_COMM_NULL");
    TSR_CALL_MPI(MPI_Comm_dup(comm, &dup));
    TSR_TRY(tsr__comm_adopt(dup, out));
    dup = MPI_COMM_NULL;
cleanup:
    if (dup != MPI_COMM_NULL)
        MPI_Comm_free(&dup);
    return rc;
}

void tsr_comm_destroy(tsr_comm_t *comm)
{
    if (!comm || !*comm)
        return;
    if ((*comm)->nccl)
        tsr__comm_nccl_disable(*comm);
    tsr__comm_stage_free(*comm, 1);
    free((*comm)->stages);
    if ((*comm)->pair != MPI_COMM_NULL)
        MPI_Comm_free(&(*comm)->pair);
    MPI_Comm_free(&(*comm)->mpi);
    free(*comm);
    *comm = NULL;
}

int tsr_comm_rank(tsr_comm_t comm)
{
    return comm->rank;
}

int tsr_comm_size(tsr_comm_t comm)
{
    return comm->size;
}

MPI_Comm tsr_comm_mpi(tsr_comm_t comm)
{
    return comm->mpi;
}

/* Fail on every rank if any rank of c has non-blocking operations in flight: switching
 * device or backend under them would complete them with the wrong backend or device.
 * Collective over c, so that every rank takes the same branch afterwards. */
static tsr_status_t agree_idle(tsr_comm_t c, const char *what)
{
    tsr_status_t rc = TSR_OK;
    int busy = c->inflight ? c->rank + 1 : 0, first_busy = 0;
    TSR_CALL_MPI(MPI_Allreduce(&busy, &first_busy, 1, MPI_INT, MPI_MAX, c->mpi));
    TSR_CHECK(first_busy == 0, TSR_ERR_INVALID_ARG,
              "%s: rank %d of the communicator has non-blocking operations in flight; complete them first",
              what, first_busy - 1);
cleanup:
    return rc;
}

tsr_status_t tsr_comm_set_device(tsr_comm_t comm, tsr_device_t dev)
{
    tsr_status_t rc = TSR_OK;
    int gpu_aware = 0;
    TSR_CHECK(comm, TSR_ERR_INVALID_ARG, "tsr_comm_set_device on a NULL communicator");
    TSR_TRY(agree_idle(comm, "tsr_comm_set_device"));
    if (dev && tsr_device_kind(dev) == TSR_DEVICE_CUDA)
        TSR_TRY(tsr__mpi_gpu_aware(&gpu_aware));
    if (comm->nccl)
        tsr__comm_nccl_disable(comm);
    comm->dev = dev;
    comm->gpu_aware = gpu_aware;
    comm->backend = TSR_COMM_BACKEND_MPI;
    comm->ops = mpi_ops_for(comm);
    if (!on_gpu(comm))
        tsr__comm_stage_free(comm, 0);
cleanup:
    return rc;
}

tsr_device_t tsr_comm_device(tsr_comm_t comm)
{
    return comm->dev;
}

int tsr_comm_gpu_aware(tsr_comm_t comm)
{
    return comm->gpu_aware;
}

tsr_status_t tsr_comm_set_backend(tsr_comm_t comm, tsr_comm_backend_t backend)
{
    tsr_status_t rc = TSR_OK;
    TSR_CHECK(comm, TSR_ERR_INVALID_ARG, "tsr_comm_set_backend on a NULL communicator");
    TSR_CHECK((unsigned)backend <= TSR_COMM_BACKEND_NCCL, TSR_ERR_INVALID_ARG,
              "communication backend %d out of range", (int)backend);
    TSR_CHECK(backends[backend]->allreduce, TSR_ERR_NOT_SUPPORTED,
              "the %s communication backend is not available in this build (reconfigure with --with-%s)",
              backends[backend]->name, backends[backend]->name);
    if (backend == comm->backend)
        return TSR_OK;
    TSR_TRY(agree_idle(comm, "tsr_comm_set_backend"));
    if (backend == TSR_COMM_BACKEND_NCCL) {
        TSR_TRY(tsr__comm_nccl_enable(comm));
        comm->ops = &tsr__comm_nccl_ops;
    } else {
        tsr__comm_nccl_disable(comm);
        comm->ops = mpi_ops_for(comm);
    }
    comm->backend = backend;
cleanup:
    return rc;
}

tsr_comm_backend_t tsr_comm_backend(tsr_comm_t comm)
{
    return comm->backend;
}

void tsr_comm_counters(tsr_comm_t comm, tsr_comm_counters_t *out)
{
    *out = comm->counters;
}

void tsr_comm_reset_counters(tsr_comm_t comm)
{
    memset(&comm->counters, 0, sizeof comm->counters);
}

tsr_status_t tsr_comm_barrier(tsr_comm_t comm)
{
    tsr_status_t rc = TSR_OK;
    TSR__REGION(NULL, TSR_PROF_COMM, "barrier", comm->label);
    TSR_CALL_MPI(MPI_Barrier(comm->mpi));
cleanup:
    return rc;
}

/* Bytes this rank sends in op, by the bus-bytes model documented in tessera/comm.h.
 * bytes: the whole vector for allreduce, one rank's block for reduce-scatter and allgather,
 * the message for the others. */
static uint64_t bus_bytes(tsr_comm_op_t op, int n, uint64_t bytes)
{
    uint64_t others = (uint64_t)n - 1;
    switch (op) {
    case TSR_COMM_ALLREDUCE:
        return 2 * others * bytes / (uint64_t)n;
    case TSR_COMM_REDUCE_SCATTER:
    case TSR_COMM_ALLGATHER:
        return others * bytes;
    case TSR_COMM_BCAST:
        return n > 1 ? bytes : 0;
    case TSR_COMM_SEND:
        return bytes;
    default:
        return 0;
    }
}

static void count(tsr_comm_t c, tsr_comm_op_t op, size_t count, tsr_dtype_t dtype)
{
    uint64_t b = bus_bytes(op, c->size, (uint64_t)count * tsr_dtype_size(dtype));
    c->counters.bytes[op] += b;
    c->counters.bytes_sent += b;
    c->counters.calls[op]++;
}

/* No peer rank, reduction or tag to check, for begin(). */
#define NONE (-1)

/* Check the arguments of an operation and, for a non-blocking one (req != NULL), allocate
 * its request. peer is a root, destination or source rank; reduce a tsr_reduce_op_t. */
static tsr_status_t begin(tsr_comm_t c, const tsr_comm_ops_t *ops, tsr_comm_op_t op, size_t count,
                          tsr_dtype_t dtype, int peer, int reduce, int tag, tsr_request_t *req,
                          struct tsr_request **out)
{
    *out = NULL;
    if (!c)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "%s on a NULL communicator", op_names[op]);
    if (tsr_dtype_size(dtype) == 0)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "%s: element type %d out of range", op_names[op], (int)dtype);
    if (count > INT_MAX)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "%s of %zu elements: at most %d per call", op_names[op], count,
                         INT_MAX);
    if (peer != NONE && (peer < 0 || peer >= c->size) && !(op == TSR_COMM_RECV && peer == MPI_ANY_SOURCE))
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "%s: rank %d out of range for a communicator of %d ranks",
                         op_names[op], peer, c->size);
    if (reduce != NONE && (reduce < TSR_REDUCE_SUM || reduce > TSR_REDUCE_MIN))
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "%s: reduction %d out of range", op_names[op], reduce);
    if (tag != NONE && tag < 0)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "%s: tag %d is negative", op_names[op], tag);
    if (!req)
        return TSR_OK;
    *req = NULL;
    *out = tsr__calloc(1, sizeof **out);
    if (!*out)
        return TSR_ERROR(TSR_ERR_OUT_OF_MEMORY, "no memory for a request");
    (*out)->mpi = MPI_REQUEST_NULL;
    (*out)->mpi2 = MPI_REQUEST_NULL;
    (*out)->comm = c;
    (*out)->ops = ops;
    return TSR_OK;
}

/* Finish posting: on success count the op and publish the request, else free it. */
static tsr_status_t posted(tsr_status_t rc, tsr_comm_t c, tsr_comm_op_t op, size_t n, tsr_dtype_t dtype,
                           struct tsr_request *r, tsr_request_t *req)
{
    if (rc != TSR_OK) {
        free(r);
        return rc;
    }
    count(c, op, n, dtype);
    if (req) {
        c->inflight++;
        *req = r;
    }
    return TSR_OK;
}

static tsr_status_t do_allreduce(tsr_comm_t c, const void *send, void *recv, size_t n, tsr_dtype_t dtype,
                                 tsr_reduce_op_t op, tsr_request_t *req)
{
    struct tsr_request *r;
    const tsr_comm_ops_t *ops = ops_for(c, recv);
    COMM_REGION(c, ops, TSR_COMM_ALLREDUCE);
    tsr_status_t rc = begin(c, ops, TSR_COMM_ALLREDUCE, n, dtype, NONE, (int)op, NONE, req, &r);
    if (rc != TSR_OK)
        return rc;
    return posted(ops->allreduce(c, send, recv, n, dtype, op, r), c, TSR_COMM_ALLREDUCE, n, dtype, r, req);
}

static tsr_status_t do_reduce_scatter(tsr_comm_t c, const void *send, void *recv, size_t n, tsr_dtype_t dtype,
                                      tsr_reduce_op_t op, tsr_request_t *req)
{
    struct tsr_request *r;
    const tsr_comm_ops_t *ops = ops_for(c, recv);
    COMM_REGION(c, ops, TSR_COMM_REDUCE_SCATTER);
    tsr_status_t rc = begin(c, ops, TSR_COMM_REDUCE_SCATTER, n, dtype, NONE, (int)op, NONE, req, &r);
    if (rc != TSR_OK)
        return rc;
    return posted(ops->reduce_scatter(c, send, recv, n, dtype, op, r), c, TSR_COMM_REDUCE_SCATTER, n, dtype,
                  r, req);
}

static tsr_status_t do_allgather(tsr_comm_t c, const void *send, void *recv, size_t n, tsr_dtype_t dtype,
                                 tsr_request_t *req)
{
    struct tsr_request *r;
    const tsr_comm_ops_t *ops = ops_for(c, recv);
    COMM_REGION(c, ops, TSR_COMM_ALLGATHER);
    tsr_status_t rc = begin(c, ops, TSR_COMM_ALLGATHER, n, dtype, NONE, NONE, NONE, req, &r);
    if (rc != TSR_OK)
        return rc;
    return posted(ops->allgather(c, send, recv, n, dtype, r), c, TSR_COMM_ALLGATHER, n, dtype, r, req);
}

static tsr_status_t do_bcast(tsr_comm_t c, void *buf, size_t n, tsr_dtype_t dtype, int root, tsr_request_t *req)
{
    struct tsr_request *r;
    const tsr_comm_ops_t *ops = ops_for(c, buf);
    COMM_REGION(c, ops, TSR_COMM_BCAST);
    tsr_status_t rc = begin(c, ops, TSR_COMM_BCAST, n, dtype, root, NONE, NONE, req, &r);
    if (rc != TSR_OK)
        return rc;
    return posted(ops->bcast(c, buf, n, dtype, root, r), c, TSR_COMM_BCAST, n, dtype, r, req);
}

static tsr_status_t do_send(tsr_comm_t c, const void *buf, size_t n, tsr_dtype_t dtype, int dest, int tag,
                            tsr_request_t *req)
{
    struct tsr_request *r;
    const tsr_comm_ops_t *ops = ops_for(c, buf);
    COMM_REGION(c, ops, TSR_COMM_SEND);
    tsr_status_t rc = begin(c, ops, TSR_COMM_SEND, n, dtype, dest, NONE, tag, req, &r);
    if (rc != TSR_OK)
        return rc;
    return posted(ops->send(c, buf, n, dtype, dest, tag, r), c, TSR_COMM_SEND, n, dtype, r, req);
}

static tsr_status_t do_recv(tsr_comm_t c, void *buf, size_t n, tsr_dtype_t dtype, int src, int tag,
                            tsr_request_t *req)
{
    struct tsr_request *r;
    const tsr_comm_ops_t *ops = ops_for(c, buf);
    COMM_REGION(c, ops, TSR_COMM_RECV);
    tsr_status_t rc = begin(c, ops, TSR_COMM_RECV, n, dtype, src, NONE, tag, req, &r);
    if (rc != TSR_OK)
        return rc;
    return posted(ops->recv(c, buf, n, dtype, src, tag, r), c, TSR_COMM_RECV, n, dtype, r, req);
}

tsr_status_t tsr_comm_allreduce(tsr_comm_t comm, const void *send, void *recv, size_t count, tsr_dtype_t dtype,
                                tsr_reduce_op_t op)
{
    return do_allreduce(comm, send, recv, count, dtype, op, NULL);
}

tsr_status_t tsr_comm_iallreduce(tsr_comm_t comm, const void *send, void *recv, size_t count, tsr_dtype_t dtype,
                                 tsr_reduce_op_t op, tsr_request_t *req)
{
    return do_allreduce(comm, send, recv, count, dtype, op, req);
}

tsr_status_t tsr_comm_reduce_scatter(tsr_comm_t comm, const void *send, void *recv, size_t recv_count,
                                     tsr_dtype_t dtype, tsr_reduce_op_t op)
{
    return do_reduce_scatter(comm, send, recv, recv_count, dtype, op, NULL);
}

tsr_status_t tsr_comm_ireduce_scatter(tsr_comm_t comm, const void *send, void *recv, size_t recv_count,
                                      tsr_dtype_t dtype, tsr_reduce_op_t op, tsr_request_t *req)
{
    return do_reduce_scatter(comm, send, recv, recv_count, dtype, op, req);
}

tsr_status_t tsr_comm_allgather(tsr_comm_t comm, const void *send, void *recv, size_t send_count,
                                tsr_dtype_t dtype)
{
    return do_allgather(comm, send, recv, send_count, dtype, NULL);
}

tsr_status_t tsr_comm_iallgather(tsr_comm_t comm, const void *send, void *recv, size_t send_count,
                                 tsr_dtype_t dtype, tsr_request_t *req)
{
    return do_allgather(comm, send, recv, send_count, dtype, req);
}

tsr_status_t tsr_comm_bcast(tsr_comm_t comm, void *buf, size_t count, tsr_dtype_t dtype, int root)
{
    return do_bcast(comm, buf, count, dtype, root, NULL);
}

tsr_status_t tsr_comm_ibcast(tsr_comm_t comm, void *buf, size_t count, tsr_dtype_t dtype, int root,
                             tsr_request_t *req)
{
    return do_bcast(comm, buf, count, dtype, root, req);
}

tsr_status_t tsr_comm_send(tsr_comm_t comm, const void *buf, size_t count, tsr_dtype_t dtype, int dest, int tag)
{
    return do_send(comm, buf, count, dtype, dest, tag, NULL);
}

tsr_status_t tsr_comm_isend(tsr_comm_t comm, const void *buf, size_t count, tsr_dtype_t dtype, int dest, int tag,
                            tsr_request_t *req)
{
    return do_send(comm, buf, count, dtype, dest, tag, req);
}

tsr_status_t tsr_comm_recv(tsr_comm_t comm, void *buf, size_t count, tsr_dtype_t dtype, int src, int tag)
{
    return do_recv(comm, buf, count, dtype, src, tag, NULL);
}

tsr_status_t tsr_comm_irecv(tsr_comm_t comm, void *buf, size_t count, tsr_dtype_t dtype, int src, int tag,
                            tsr_request_t *req)
{
    return do_recv(comm, buf, count, dtype, src, tag, req);
}

/* Complete *req through the backend that posted it; free it once finished. */
static tsr_status_t request_complete(tsr_request_t *req, int blocking, int *done)
{
    struct tsr_request *r = *req;
    int finished = 0;
    tsr_status_t rc = r->ops->complete(r, blocking, &finished);
    if (done)
        *done = finished;
    if (finished) {
        r->comm->inflight--;
        free(r);
        *req = NULL;
    }
    return rc;
}

tsr_status_t tsr_request_wait(tsr_request_t *req)
{
    if (!req || !*req)
        return TSR_OK;
    TSR__REGION(timed_device((*req)->comm, (*req)->ops), TSR_PROF_WAIT, "wait", (*req)->comm->label);
    return request_complete(req, 1, NULL);
}

tsr_status_t tsr_request_test(tsr_request_t *req, int *done)
{
    if (!req || !*req) {
        *done = 1;
        return TSR_OK;
    }
    return request_complete(req, 0, done);
}

tsr_status_t tsr_request_waitall(size_t n, tsr_request_t *reqs)
{
    tsr_status_t first = TSR_OK;
    for (size_t i = 0; i < n; i++) {
        tsr_status_t rc = tsr_request_wait(&reqs[i]);
        if (first == TSR_OK)
            first = rc;
    }
    return first;
}
