/*
 * comm_impl.h: communicator internals and the backend ops table, private to lib/comm.
 * comm.c checks arguments, counts bytes and dispatches; a backend only moves data. Each
 * backend operation takes a request pointer: NULL means blocking, otherwise it starts the
 * operation and fills *req.
 */
#ifndef TESSERA_COMM_IMPL_H
#define TESSERA_COMM_IMPL_H

#include "core/internal.h"

struct tsr_request {
    MPI_Request mpi;
    MPI_Datatype recv_type; /* for a receive: its element type and expected count */
    size_t recv_count;      /* 0 for anything but a receive */
    int recv_source;
    int recv_tag;
};

typedef struct tsr_comm_ops {
    const char *name;
    tsr_status_t (*allreduce)(tsr_comm_t c, const void *send, void *recv, size_t count, tsr_dtype_t dtype,
                              tsr_reduce_op_t op, struct tsr_request *req);
    tsr_status_t (*reduce_scatter)(tsr_comm_t c, const void *send, void *recv, size_t recv_count,
                                   tsr_dtype_t dtype, tsr_reduce_op_t op, struct tsr_request *req);
    tsr_status_t (*allgather)(tsr_comm_t c, const void *send, void *recv, size_t send_count, tsr_dtype_t dtype,
                              struct tsr_request *req);
    tsr_status_t (*bcast)(tsr_comm_t c, void *buf, size_t count, tsr_dtype_t dtype, int root,
                          struct tsr_request *req);
    tsr_status_t (*send)(tsr_comm_t c, const void *buf, size_t count, tsr_dtype_t dtype, int dest, int tag,
                         struct tsr_request *req);
    tsr_status_t (*recv)(tsr_comm_t c, void *buf, size_t count, tsr_dtype_t dtype, int src, int tag,
                         struct tsr_request *req);
} tsr_comm_ops_t;

struct tsr_comm {
    MPI_Comm mpi; /* the library's own communicator, MPI_ERRORS_RETURN set */
    int rank, size;
    tsr_comm_backend_t backend;
    const tsr_comm_ops_t *ops;
    tsr_comm_counters_t counters;
};

extern const tsr_comm_ops_t tsr__comm_mpi_ops;
extern const tsr_comm_ops_t tsr__comm_nccl_ops;

/* The MPI type of a Tessera element type. */
MPI_Datatype tsr__mpi_dtype(tsr_dtype_t dtype);

/* Check a completed receive's length against what was asked for. */
tsr_status_t tsr__check_recv_count(const MPI_Status *status, MPI_Datatype type, size_t expected, int src, int tag);

#endif /* TESSERA_COMM_IMPL_H */
