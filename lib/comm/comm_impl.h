/*
 * comm_impl.h: communicator internals and the backend ops table, private to lib/comm.
 * comm.c checks arguments, counts bytes and dispatches; a backend only moves data. Each
 * backend operation takes a request pointer: NULL means blocking, otherwise it starts the
 * operation and fills *req. Three tables exist: MPI on host buffers (comm_mpi.c), MPI on
 * CUDA buffers (comm_stage.c: staged through host memory, or point-to-point handed to a
 * GPU-aware MPI as they are) and NCCL (comm_nccl.c).
 */
#ifndef TESSERA_COMM_IMPL_H
#define TESSERA_COMM_IMPL_H

#include "core/internal.h"

struct tsr_comm_ops;
struct tsr_stage; /* a host staging buffer of comm_stage.c */

struct tsr_request {
    MPI_Request mpi;
    MPI_Datatype recv_type; /* for a receive: its element type and expected count */
    size_t recv_count;      /* 0 for anything but a receive */
    int recv_source;
    int recv_tag;
    tsr_comm_t comm;                 /* the communicator it was posted on */
    const struct tsr_comm_ops *ops;  /* the backend that completes it */
    struct tsr_stage *stage;         /* staged MPI: host buffer held until completion, or NULL */
    void *unstage_dst;               /* staged MPI: device address the result goes to on completion */
    const void *unstage_src;         /* ... from this address in the staging buffer */
    size_t unstage_bytes;            /* ... this many bytes (0: nothing comes back) */
    void *event;                     /* NCCL: the cudaEvent_t recorded after the operation */
    MPI_Request mpi2;                /* the pairwise reduce-scatter (comm_mpi.c): its send */
    float *sum_dst;                  /* ... on completion sum_dst[i] += sum_src[i], i < sum_n */
    const float *sum_src;
    size_t sum_n;
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
    /* Wait for (blocking) or test r. *done says whether it is finished; a failure finishes it
     * too. A finished request has given back what the backend attached to it; comm.c frees it. */
    tsr_status_t (*complete)(struct tsr_request *r, int blocking, int *done);
} tsr_comm_ops_t;

struct tsr_comm {
    MPI_Comm mpi; /* the library's own communicator, MPI_ERRORS_RETURN set */
    int rank, size;
    tsr_comm_backend_t backend;
    const tsr_comm_ops_t *ops;
    tsr_comm_counters_t counters;
    tsr_device_t dev;          /* where operation buffers live (borrowed); NULL: host memory */
    size_t inflight;           /* non-blocking operations posted and not yet completed */
    struct tsr_stage **stages; /* staging buffers of comm_stage.c, idle or held by a request */
    size_t nstages;
    void *nccl; /* comm_nccl.c's state while the backend is NCCL */
    const char *label; /* the profiler's name of its axis (tsr__comm_set_label), or NULL */
    MPI_Comm pair;     /* on 2 ranks, a duplicate of mpi for comm_mpi.c's pairwise reduce-scatter, so
                        * that its messages never meet the caller's; else MPI_COMM_NULL */
    int sync_sends;    /* MPI sends complete only with their receive (tsr__comm_set_sync_sends) */
    int gpu_aware;     /* MPI takes this rank's GPU buffers in send and recv (tsr_comm_gpu_aware) */
};

extern const tsr_comm_ops_t tsr__comm_mpi_ops;
extern const tsr_comm_ops_t tsr__comm_staged_ops;
extern const tsr_comm_ops_t tsr__comm_nccl_ops;

/* The MPI type of a Tessera element type (BF16 travels as MPI_UINT16_T). */
MPI_Datatype tsr__mpi_dtype(tsr_dtype_t dtype);

/* Check a completed receive's length against what was asked for. */
tsr_status_t tsr__check_recv_count(const MPI_Status *status, MPI_Datatype type, size_t expected, int src, int tag);

/* The MPI backend's completion of r (comm_mpi.c): MPI_Wait or MPI_Test, then a receive's length. */
tsr_status_t tsr__mpi_complete(struct tsr_request *r, int blocking, int *done);

/* Whether this process's MPI takes CUDA device buffers (comm_stage.c): TSR_GPU_AWARE_MPI=1
 * or 0 if set, else what the MPI library answers, else no. Fails on another value. */
tsr_status_t tsr__mpi_gpu_aware(int *aware);

/* Free the staging buffers of c that no request holds; all of them when all is set (comm_stage.c). */
void tsr__comm_stage_free(tsr_comm_t c, int all);

/* Switch c to NCCL: every check agreed over c, then the NCCL communicator on c->dev.
 * Collective over c. Fails with TSR_ERR_NOT_SUPPORTED in a build without NCCL. */
tsr_status_t tsr__comm_nccl_enable(tsr_comm_t c);

/* Release c's NCCL communicator, stream and events; c->nccl becomes NULL. Collective over c. */
void tsr__comm_nccl_disable(tsr_comm_t c);

#endif /* TESSERA_COMM_IMPL_H */
