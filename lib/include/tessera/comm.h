/**
 * @file tessera/comm.h
 * @brief Collectives and point-to-point messages over a communicator, with byte counters.
 *
 * A ::tsr_comm_t wraps a duplicate of an MPI communicator (with MPI_ERRORS_RETURN set on
 * the copy) and a backend: MPI always; NCCL for GPU buffers when the library is built
 * with it. Every operation is offered blocking and non-blocking (tsr_comm_i*), and every
 * operation adds the bytes this rank sends to the communicator's counters.
 *
 * Bytes sent are counted with the bus-bytes model of nccl-tests, for a communicator of N
 * ranks and a buffer of S bytes (the whole vector for allreduce, the concatenation of all
 * ranks' blocks for reduce-scatter and allgather):
 *   - allreduce:      floor(2 (N-1) S / N)
 *   - reduce-scatter: (N-1) S / N  (= (N-1) × block bytes)
 *   - allgather:      (N-1) S / N  (= (N-1) × block bytes)
 *   - broadcast:      S on every rank (root included)
 *   - send:           S; recv counts no bytes
 * A communicator of one rank counts no bytes for collectives. These are the volumes of the
 * bandwidth-optimal algorithms (ring, pipelined broadcast); they make communication volume
 * a measured quantity that formulas can be checked against exactly. The count does not
 * depend on the backend or on where the buffers live.
 *
 * <b>Where buffers live.</b> Buffers are host memory unless tsr_comm_set_device() gave the
 * communicator a CUDA device; from then on a buffer may be memory of that device (from
 * tsr_device_alloc()) or host memory, told apart on every call by where the result buffer
 * lies (the receive buffer; the buffer itself for bcast and send). Host buffers always go
 * through plain MPI, whatever the backend: a loss, a flag or a checkpoint's metadata
 * travels on the same communicator as the GPU tensors. GPU buffers:
 *   - MPI backend: each operation copies this rank's data from the device into host
 *     staging buffers (pinned, kept by the communicator and counted as host memory of
 *     category TSR_MEM_COMM), runs MPI and copies the result back. The copies are ordered
 *     after the work queued on the device's stream. A blocking call returns with the result
 *     in device memory; a non-blocking one copies in when posted and copies back in the
 *     tsr_request_wait() or tsr_request_test() that finds it complete. Several ranks may
 *     share one GPU. On a GPU-aware MPI (tsr_comm_gpu_aware()), send and recv skip the
 *     staging: the device's stream is synchronized and MPI gets the device buffer itself,
 *     under MPI's rules (a send buffer is not to be changed, nor a receive buffer read,
 *     until the request completes; a short message may leave part of itself). Collectives
 *     are staged on every MPI.
 *   - NCCL backend (tsr_comm_set_backend()): operations run on a CUDA stream of the
 *     communicator's own, after the work queued on the device's stream, and the device's
 *     stream waits for them. Nothing waits on the host: a blocking call returns once the
 *     operation is queued, tsr_request_wait() once the device's stream is made to wait,
 *     and tsr_request_test() reports completion when the GPU has finished. Kernels and
 *     copies queued on the device afterwards (tsr_device_copy() included) see the results;
 *     the host must call tsr_device_sync() before reading a result any other way, and
 *     before reusing or freeing a buffer from the host side.
 *     Point-to-point on NCCL: tags are accepted and ignored; the messages between two ranks
 *     match in the order they are posted, so post them in the same order on both sides.
 *     Each send and receive runs to completion in turn on the GPU, so the posting order must
 *     be one that blocking MPI calls would not deadlock on (a ring where every rank posts
 *     its receive first hangs). The counts of a send and its receive must be equal (NCCL
 *     does not detect a mismatch); receiving from MPI_ANY_SOURCE, and sending to or
 *     receiving from oneself, return TSR_ERR_NOT_SUPPORTED.
 *
 * <b>BF16</b> moves as 16-bit data on both backends. Its reductions combine two values at a
 * time in fp32 and round each partial result to bf16 (NCCL's behaviour, reproduced on MPI),
 * so a sum over N ranks carries up to N-1 roundings. U8 reductions are unsigned on both
 * backends (SUM wraps modulo 256).
 */
#ifndef TESSERA_COMM_H
#define TESSERA_COMM_H

#include <mpi.h>
#include <stddef.h>
#include <stdint.h>
#include <tessera/device.h>
#include <tessera/dtype.h>
#include <tessera/status.h>
#include <tessera/visibility.h>

#ifdef __cplusplus
extern "C" {
#endif

/** An opaque communicator handle. */
typedef struct tsr_comm *tsr_comm_t;

/** An opaque handle on a non-blocking operation in flight. */
typedef struct tsr_request *tsr_request_t;

/** Reductions. */
typedef enum tsr_reduce_op { TSR_REDUCE_SUM = 0, TSR_REDUCE_MAX, TSR_REDUCE_MIN } tsr_reduce_op_t;

/** Operations, as counted by ::tsr_comm_counters_t. */
typedef enum tsr_comm_op {
    TSR_COMM_ALLREDUCE = 0,
    TSR_COMM_REDUCE_SCATTER,
    TSR_COMM_ALLGATHER,
    TSR_COMM_BCAST,
    TSR_COMM_SEND,
    TSR_COMM_RECV,
    TSR_COMM_OP_COUNT
} tsr_comm_op_t;

/** Communication backends. */
typedef enum tsr_comm_backend { TSR_COMM_BACKEND_MPI = 0, TSR_COMM_BACKEND_NCCL = 1 } tsr_comm_backend_t;

/** Pass as the send buffer of tsr_comm_allreduce() to reduce in place in the receive buffer. */
#define TSR_IN_PLACE ((const void *)1)

/** Traffic counted on one communicator since creation or the last reset. */
typedef struct tsr_comm_counters {
    uint64_t bytes_sent;                 /**< sum of bytes[] */
    uint64_t bytes[TSR_COMM_OP_COUNT];   /**< bytes sent, per operation (see the model above) */
    uint64_t calls[TSR_COMM_OP_COUNT];   /**< calls, blocking and non-blocking, per operation */
} tsr_comm_counters_t;

/** The name of an operation ("allreduce", "reduce_scatter", ...). */
TSR_API const char *tsr_comm_op_name(tsr_comm_op_t op);

/** Wrap a duplicate of @p comm (the caller keeps and frees its own). Collective over @p comm. */
TSR_API tsr_status_t tsr_comm_create(MPI_Comm comm, tsr_comm_t *out);

/**
 * Free a communicator made by tsr_comm_create(), with its staging buffers and NCCL
 * communicator; sets *comm to NULL and accepts NULL. Collective. Complete its non-blocking
 * operations first.
 */
TSR_API void tsr_comm_destroy(tsr_comm_t *comm);

/** This process's rank in @p comm. */
TSR_API int tsr_comm_rank(tsr_comm_t comm);

/** Number of ranks in @p comm. */
TSR_API int tsr_comm_size(tsr_comm_t comm);

/** The library's MPI communicator under @p comm (for callers that need raw MPI; do not free it). */
TSR_API MPI_Comm tsr_comm_mpi(tsr_comm_t comm);

/**
 * Say where the buffers of @p comm's operations live from now on: memory of @p dev, a
 * device of this rank (each rank passes its own; host buffers keep working, see above). A
 * CPU device, or NULL, means host memory,
 * the default. The device is borrowed: keep it open while @p comm uses it.
 *
 * Collective over @p comm. The backend becomes MPI (an NCCL communicator is released; call
 * tsr_comm_set_backend() again to get it back on the new device). Ranks may give different
 * kinds of devices as long as they stay on the MPI backend.
 * @return #TSR_OK, or TSR_ERR_INVALID_ARG on every rank if any rank of @p comm has
 *         non-blocking operations in flight, or on a rank whose TSR_GPU_AWARE_MPI is
 *         neither 0 nor 1 (see tsr_comm_gpu_aware()) when @p dev is a GPU.
 */
TSR_API tsr_status_t tsr_comm_set_device(tsr_comm_t comm, tsr_device_t dev);

/** The device set by tsr_comm_set_device(), or NULL for host memory. */
TSR_API tsr_device_t tsr_comm_device(tsr_comm_t comm);

/**
 * 1 when send and recv of this rank's GPU buffers go to MPI as they are, 0 when they are
 * staged through host memory (or the communicator has no GPU). tsr_comm_set_device() decides
 * it for a CUDA device: the environment variable TSR_GPU_AWARE_MPI=1 or 0 if set (1 on an
 * MPI that is not GPU-aware crashes in MPI), else the MPI library's own answer
 * (MPIX_GPU_query_support in MPICH 4, MPIX_Query_cuda_support in Open MPI), else 0. Open
 * MPI 4.1 answers from how it was built: a run with `--mca opal_cuda_support 0` needs
 * TSR_GPU_AWARE_MPI=0 too. Any other value of the variable makes tsr_comm_set_device() fail
 * with TSR_ERR_INVALID_ARG.
 * It matters on the MPI backend only: NCCL moves GPU buffers itself.
 */
TSR_API int tsr_comm_gpu_aware(tsr_comm_t comm);

/**
 * Choose the backend. Collective over @p comm whenever it changes the backend.
 * NCCL needs a CUDA device set on every rank (tsr_comm_set_device()) and one GPU per rank;
 * its communicator is created on the device by ncclCommInitRank, with the id broadcast
 * from rank 0 over @p comm. Every rank returns the same verdict:
 * @return #TSR_OK (also when @p backend is already in use);
 *         TSR_ERR_NOT_SUPPORTED for NCCL in a build without it, or when two ranks of
 *         @p comm are on one GPU (NCCL refuses that; the MPI backend serves them);
 *         TSR_ERR_INVALID_ARG when a rank has no CUDA device set or has non-blocking
 *         operations in flight; TSR_ERR_CUDA or TSR_ERR_NCCL when setting up fails.
 */
TSR_API tsr_status_t tsr_comm_set_backend(tsr_comm_t comm, tsr_comm_backend_t backend);

/** The backend in use. */
TSR_API tsr_comm_backend_t tsr_comm_backend(tsr_comm_t comm);

/** Copy the traffic counters of @p comm into @p out. */
TSR_API void tsr_comm_counters(tsr_comm_t comm, tsr_comm_counters_t *out);

/** Set the traffic counters of @p comm to zero. */
TSR_API void tsr_comm_reset_counters(tsr_comm_t comm);

/** Wait until every rank of @p comm has called it, on the host (queued NCCL work may still run). Counts no bytes. */
TSR_API tsr_status_t tsr_comm_barrier(tsr_comm_t comm);

/** recv[i] = op over ranks of send[i], i < count, on every rank. send may be #TSR_IN_PLACE. */
TSR_API tsr_status_t tsr_comm_allreduce(tsr_comm_t comm, const void *send, void *recv, size_t count,
                                        tsr_dtype_t dtype, tsr_reduce_op_t op);

/** Rank r receives op over ranks of send[r*recv_count + i], i < recv_count. send holds N*recv_count. */
TSR_API tsr_status_t tsr_comm_reduce_scatter(tsr_comm_t comm, const void *send, void *recv,
                                             size_t recv_count, tsr_dtype_t dtype, tsr_reduce_op_t op);

/**
 * recv[r*send_count + i] = send of rank r, element i. recv holds N*send_count. send may be
 * #TSR_IN_PLACE (or recv + rank*send_count): this rank's block is already in place.
 */
TSR_API tsr_status_t tsr_comm_allgather(tsr_comm_t comm, const void *send, void *recv,
                                        size_t send_count, tsr_dtype_t dtype);

/** Copy @p count elements of @p buf on rank @p root to every rank. */
TSR_API tsr_status_t tsr_comm_bcast(tsr_comm_t comm, void *buf, size_t count, tsr_dtype_t dtype, int root);

/** Send @p count elements to rank @p dest with @p tag (tag >= 0). */
TSR_API tsr_status_t tsr_comm_send(tsr_comm_t comm, const void *buf, size_t count, tsr_dtype_t dtype,
                                   int dest, int tag);

/** Receive exactly @p count elements from rank @p src with @p tag. A different length is an error. */
TSR_API tsr_status_t tsr_comm_recv(tsr_comm_t comm, void *buf, size_t count, tsr_dtype_t dtype, int src,
                                   int tag);

/** Non-blocking tsr_comm_allreduce(); buffers must stay untouched until the request completes. */
TSR_API tsr_status_t tsr_comm_iallreduce(tsr_comm_t comm, const void *send, void *recv, size_t count,
                                         tsr_dtype_t dtype, tsr_reduce_op_t op, tsr_request_t *req);

/** Non-blocking tsr_comm_reduce_scatter(). */
TSR_API tsr_status_t tsr_comm_ireduce_scatter(tsr_comm_t comm, const void *send, void *recv,
                                              size_t recv_count, tsr_dtype_t dtype, tsr_reduce_op_t op,
                                              tsr_request_t *req);

/** Non-blocking tsr_comm_allgather(). */
TSR_API tsr_status_t tsr_comm_iallgather(tsr_comm_t comm, const void *send, void *recv, size_t send_count,
                                         tsr_dtype_t dtype, tsr_request_t *req);

/** Non-blocking tsr_comm_bcast(). */
TSR_API tsr_status_t tsr_comm_ibcast(tsr_comm_t comm, void *buf, size_t count, tsr_dtype_t dtype, int root,
                                     tsr_request_t *req);

/** Non-blocking tsr_comm_send(). */
TSR_API tsr_status_t tsr_comm_isend(tsr_comm_t comm, const void *buf, size_t count, tsr_dtype_t dtype,
                                    int dest, int tag, tsr_request_t *req);

/**
 * Non-blocking tsr_comm_recv(); a shorter message is reported when the request completes.
 * A longer one is an error that MPI itself raises in the wait; MPICH 4.0 raises it on
 * MPI_COMM_WORLD's handler, which aborts the job, whatever handler Tessera set.
 */
TSR_API tsr_status_t tsr_comm_irecv(tsr_comm_t comm, void *buf, size_t count, tsr_dtype_t dtype, int src,
                                    int tag, tsr_request_t *req);

/**
 * Wait for @p *req to complete, release it and set *req to NULL. A NULL *req returns at once.
 * On the NCCL backend, complete means the device's stream is ordered after the operation.
 */
TSR_API tsr_status_t tsr_request_wait(tsr_request_t *req);

/** Set *done to 1 and release the request (*req = NULL) if it has completed, else set *done to 0. */
TSR_API tsr_status_t tsr_request_test(tsr_request_t *req, int *done);

/** Wait for all @p n requests (NULL entries allowed); each is released and set to NULL. */
TSR_API tsr_status_t tsr_request_waitall(size_t n, tsr_request_t *reqs);

#ifdef __cplusplus
}
#endif
#endif /* TESSERA_COMM_H */
