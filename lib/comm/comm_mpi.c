/* comm_mpi.c: the MPI backend on host buffers (comm_stage.c runs it on staged GPU buffers). */
#include <string.h>

#include "comm/comm_impl.h"
#include "device/optim_impl.h"

/* Reductions of uint8 as user operations: MPICH 4.0 compares MPI_UINT8_T and
 * MPI_UNSIGNED_CHAR as signed in its built-in MAX and MIN (pmodels/mpich#6083), and Open MPI
 * 4.1's AVX component saturates instead of wrapping in SUM of 16 or more elements. */
static void u8_sum(void *in, void *inout, int *len, MPI_Datatype *type)
{
    const uint8_t *a = in;
    uint8_t *b = inout;
    (void)type;
    for (int i = 0; i < *len; i++)
        b[i] = (uint8_t)(a[i] + b[i]);
}

static void u8_max(void *in, void *inout, int *len, MPI_Datatype *type)
{
    const uint8_t *a = in;
    uint8_t *b = inout;
    (void)type;
    for (int i = 0; i < *len; i++)
        b[i] = a[i] > b[i] ? a[i] : b[i];
}

static void u8_min(void *in, void *inout, int *len, MPI_Datatype *type)
{
    const uint8_t *a = in;
    uint8_t *b = inout;
    (void)type;
    for (int i = 0; i < *len; i++)
        b[i] = a[i] < b[i] ? a[i] : b[i];
}

/* Reductions of bf16 (carried as MPI_UINT16_T): each pair combined in fp32, a sum rounded
 * back to bf16 at every step, which is what NCCL's bf16 reductions do. */
static void bf16_sum(void *in, void *inout, int *len, MPI_Datatype *type)
{
    const uint16_t *a = in;
    uint16_t *b = inout;
    (void)type;
    for (int i = 0; i < *len; i++)
        b[i] = tsr__bf16_from_f32(tsr__f32_from_bf16(a[i]) + tsr__f32_from_bf16(b[i]));
}

static void bf16_max(void *in, void *inout, int *len, MPI_Datatype *type)
{
    const uint16_t *a = in;
    uint16_t *b = inout;
    (void)type;
    for (int i = 0; i < *len; i++)
        if (tsr__f32_from_bf16(a[i]) > tsr__f32_from_bf16(b[i]))
            b[i] = a[i];
}

static void bf16_min(void *in, void *inout, int *len, MPI_Datatype *type)
{
    const uint16_t *a = in;
    uint16_t *b = inout;
    (void)type;
    for (int i = 0; i < *len; i++)
        if (tsr__f32_from_bf16(a[i]) < tsr__f32_from_bf16(b[i]))
            b[i] = a[i];
}

/* The MPI operation for op on dtype. The user operations for uint8 and bf16 are created on
 * first use and live until MPI_Finalize frees them. */
static tsr_status_t mpi_op(tsr_reduce_op_t op, tsr_dtype_t dtype, MPI_Op *out)
{
    static const MPI_Op builtin[] = {[TSR_REDUCE_SUM] = MPI_SUM, [TSR_REDUCE_MAX] = MPI_MAX, [TSR_REDUCE_MIN] = MPI_MIN};
    static MPI_User_function *const u8_fns[] = {
        [TSR_REDUCE_SUM] = u8_sum, [TSR_REDUCE_MAX] = u8_max, [TSR_REDUCE_MIN] = u8_min};
    static MPI_User_function *const bf16_fns[] = {
        [TSR_REDUCE_SUM] = bf16_sum, [TSR_REDUCE_MAX] = bf16_max, [TSR_REDUCE_MIN] = bf16_min};
    static MPI_Op u8_ops[] = {MPI_OP_NULL, MPI_OP_NULL, MPI_OP_NULL};
    static MPI_Op bf16_ops[] = {MPI_OP_NULL, MPI_OP_NULL, MPI_OP_NULL};
    tsr_status_t rc = TSR_OK;
    if (dtype == TSR_DTYPE_U8) {
        if (u8_ops[op] == MPI_OP_NULL)
            TSR_CALL_MPI(MPI_Op_create(u8_fns[op], 1, &u8_ops[op]));
        *out = u8_ops[op];
    } else if (dtype == TSR_DTYPE_BF16) {
        if (bf16_ops[op] == MPI_OP_NULL)
            TSR_CALL_MPI(MPI_Op_create(bf16_fns[op], 1, &bf16_ops[op]));
        *out = bf16_ops[op];
    } else {
        *out = builtin[op];
    }
cleanup:
    return rc;
}

MPI_Datatype tsr__mpi_dtype(tsr_dtype_t dtype)
{
    switch (dtype) {
    case TSR_DTYPE_F32:
        return MPI_FLOAT;
    case TSR_DTYPE_F64:
        return MPI_DOUBLE;
    case TSR_DTYPE_I32:
        return MPI_INT32_T;
    case TSR_DTYPE_I64:
        return MPI_INT64_T;
    case TSR_DTYPE_U8:
        return MPI_UINT8_T;
    case TSR_DTYPE_BF16:
        return MPI_UINT16_T; /* moved as bits; reductions use the bf16 operations above */
    default:
        return MPI_DATATYPE_NULL;
    }
}

tsr_status_t tsr__check_recv_count(const MPI_Status *status, MPI_Datatype type, size_t expected, int src, int tag)
{
    tsr_status_t rc = TSR_OK;
    int got = 0;
    TSR_CALL_MPI(MPI_Get_count(status, type, &got));
    TSR_CHECK(got != MPI_UNDEFINED && (size_t)got == expected, TSR_ERR_INVALID_ARG,
              "receive from rank %d tag %d expected %zu elements but the message had %d", src, tag, expected,
              got == MPI_UNDEFINED ? -1 : got);
cleanup:
    return rc;
}

tsr_status_t tsr__mpi_complete(struct tsr_request *r, int blocking, int *done)
{
    tsr_status_t rc = TSR_OK;
    MPI_Status status;
    int flag = 1;
    if (r->mpi2 != MPI_REQUEST_NULL) { /* the pairwise reduce-scatter: its receive, its send, then the sum */
        MPI_Request both[2] = {r->mpi, r->mpi2};
        MPI_Status st[2];
        if (blocking)
            TSR_CALL_MPI(MPI_Waitall(2, both, st));
        else
            TSR_CALL_MPI(MPI_Testall(2, both, &flag, st));
        r->mpi = both[0], r->mpi2 = both[1];
        if (flag)
            tsr__cpu_axpy(r->sum_n, 1.0f, r->sum_src, r->sum_dst); /* 1 x is x: the sum */
        goto cleanup;
    }
    if (blocking)
        TSR_CALL_MPI(MPI_Wait(&r->mpi, &status));
    else
        TSR_CALL_MPI(MPI_Test(&r->mpi, &flag, &status));
    if (flag && r->recv_count > 0)
        TSR_TRY(tsr__check_recv_count(&status, r->recv_type, r->recv_count, r->recv_source, r->recv_tag));
cleanup:
    /* A failed request is finished too: MPI has released it or will never complete it. */
    *done = flag || rc != TSR_OK;
    return rc;
}

static tsr_status_t mpi_allreduce(tsr_comm_t c, const void *send, void *recv, size_t count, tsr_dtype_t dtype,
                                  tsr_reduce_op_t op, struct tsr_request *req)
{
    tsr_status_t rc = TSR_OK;
    const void *s = (send == TSR_IN_PLACE || send == recv) ? MPI_IN_PLACE : send;
    MPI_Op mop = MPI_OP_NULL;
    TSR_TRY(mpi_op(op, dtype, &mop));
    if (req)
        TSR_CALL_MPI(MPI_Iallreduce(s, recv, (int)count, tsr__mpi_dtype(dtype), mop, c->mpi, &req->mpi));
    else
        TSR_CALL_MPI(MPI_Allreduce(s, recv, (int)count, tsr__mpi_dtype(dtype), mop, c->mpi));
cleanup:
    return rc;
}

/*
 * A reduce-scatter of fp32 sums on two ranks as one exchange: each rank sends the peer's block
 * and receives the peer's copy of its own into recv, then adds its own block (a + b = b + a:
 * the same bits as any order). MPICH 4.0's MPI_Ireduce_scatter_block on 2 ranks takes about
 * as long as an all-reduce of the whole vector (500 MB in 15 pieces, all posted, then waited:
 * 145 ms against 115 for the all-reduce), this exchange about half. Its messages travel on
 * c->pair, the duplicate tsr__comm_adopt makes of a 2-rank communicator, so that they cannot
 * match the caller's own receives.
 */
static tsr_status_t pair_reduce_scatter(tsr_comm_t c, const float *send, float *recv, size_t n,
                                        struct tsr_request *req)
{
    tsr_status_t rc = TSR_OK;
    int peer = 1 - c->rank;
    MPI_Request q[2] = {MPI_REQUEST_NULL, MPI_REQUEST_NULL};
    MPI_Status st[2];
    TSR_CALL_MPI(MPI_Irecv(recv, (int)n, MPI_FLOAT, peer, 0, c->pair, &q[0]));
    TSR_CALL_MPI(MPI_Isend(send + (size_t)peer * n, (int)n, MPI_FLOAT, peer, 0, c->pair, &q[1]));
    if (req) {
        req->mpi = q[0], req->mpi2 = q[1];
        req->sum_dst = recv, req->sum_src = send + (size_t)c->rank * n, req->sum_n = n;
        q[0] = q[1] = MPI_REQUEST_NULL;
    } else {
        TSR_CALL_MPI(MPI_Waitall(2, q, st));
        tsr__cpu_axpy(n, 1.0f, send + (size_t)c->rank * n, recv);
    }
cleanup:
    return rc;
}

static tsr_status_t mpi_reduce_scatter(tsr_comm_t c, const void *send, void *recv, size_t recv_count,
                                       tsr_dtype_t dtype, tsr_reduce_op_t op, struct tsr_request *req)
{
    tsr_status_t rc = TSR_OK;
    MPI_Datatype t = tsr__mpi_dtype(dtype);
    MPI_Op mop = MPI_OP_NULL;
    if (c->pair != MPI_COMM_NULL && dtype == TSR_DTYPE_F32 && op == TSR_REDUCE_SUM && recv_count > 0)
        return pair_reduce_scatter(c, send, recv, recv_count, req);
    TSR_TRY(mpi_op(op, dtype, &mop));
    if (req)
        TSR_CALL_MPI(MPI_Ireduce_scatter_block(send, recv, (int)recv_count, t, mop, c->mpi, &req->mpi));
    else
        TSR_CALL_MPI(MPI_Reduce_scatter_block(send, recv, (int)recv_count, t, mop, c->mpi));
cleanup:
    return rc;
}

static tsr_status_t mpi_allgather(tsr_comm_t c, const void *send, void *recv, size_t send_count, tsr_dtype_t dtype,
                                  struct tsr_request *req)
{
    tsr_status_t rc = TSR_OK;
    MPI_Datatype t = tsr__mpi_dtype(dtype);
    /* In place: this rank's block is already at recv[rank * send_count]. */
    int in_place = send == TSR_IN_PLACE ||
                   send == (const char *)recv + (size_t)c->rank * send_count * tsr_dtype_size(dtype);
    const void *s = in_place ? MPI_IN_PLACE : send;
    if (req)
        TSR_CALL_MPI(MPI_Iallgather(s, (int)send_count, t, recv, (int)send_count, t, c->mpi, &req->mpi));
    else
        TSR_CALL_MPI(MPI_Allgather(s, (int)send_count, t, recv, (int)send_count, t, c->mpi));
cleanup:
    return rc;
}

static tsr_status_t mpi_bcast(tsr_comm_t c, void *buf, size_t count, tsr_dtype_t dtype, int root,
                              struct tsr_request *req)
{
    tsr_status_t rc = TSR_OK;
    if (req)
        TSR_CALL_MPI(MPI_Ibcast(buf, (int)count, tsr__mpi_dtype(dtype), root, c->mpi, &req->mpi));
    else
        TSR_CALL_MPI(MPI_Bcast(buf, (int)count, tsr__mpi_dtype(dtype), root, c->mpi));
cleanup:
    return rc;
}

static tsr_status_t mpi_send(tsr_comm_t c, const void *buf, size_t count, tsr_dtype_t dtype, int dest, int tag,
                             struct tsr_request *req)
{
    tsr_status_t rc = TSR_OK;
    MPI_Datatype type = tsr__mpi_dtype(dtype);
    if (req && c->sync_sends)
        TSR_CALL_MPI(MPI_Issend(buf, (int)count, type, dest, tag, c->mpi, &req->mpi));
    else if (req)
        TSR_CALL_MPI(MPI_Isend(buf, (int)count, type, dest, tag, c->mpi, &req->mpi));
    else if (c->sync_sends)
        TSR_CALL_MPI(MPI_Ssend(buf, (int)count, type, dest, tag, c->mpi));
    else
        TSR_CALL_MPI(MPI_Send(buf, (int)count, type, dest, tag, c->mpi));
cleanup:
    return rc;
}

static tsr_status_t mpi_recv(tsr_comm_t c, void *buf, size_t count, tsr_dtype_t dtype, int src, int tag,
                             struct tsr_request *req)
{
    tsr_status_t rc = TSR_OK;
    MPI_Datatype t = tsr__mpi_dtype(dtype);
    MPI_Status status;
    if (req) {
        /* A longer message fails in MPI as truncated; a shorter one is caught on completion. */
        TSR_CALL_MPI(MPI_Irecv(buf, (int)count, t, src, tag, c->mpi, &req->mpi));
        req->recv_type = t;
        req->recv_count = count;
        req->recv_source = src;
        req->recv_tag = tag;
    } else {
        TSR_CALL_MPI(MPI_Recv(buf, (int)count, t, src, tag, c->mpi, &status));
        TSR_TRY(tsr__check_recv_count(&status, t, count, src, tag));
    }
cleanup:
    return rc;
}

const tsr_comm_ops_t tsr__comm_mpi_ops = {
    .name = "mpi",
    .allreduce = mpi_allreduce,
    .reduce_scatter = mpi_reduce_scatter,
    .allgather = mpi_allgather,
    .bcast = mpi_bcast,
    .send = mpi_send,
    .recv = mpi_recv,
    .complete = tsr__mpi_complete,
};
