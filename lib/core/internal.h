/*
 * internal.h: the library-private API that every module of libtessera may use.
 * Never installed; apps and black-box tests do not include it.
 *
 * Error handling, PETSc style. A fallible function declares `tsr_status_t rc = TSR_OK;`,
 * has one `cleanup:` label that releases what it acquired, and returns rc:
 *
 *     TSR_CHECK(n > 0, TSR_ERR_INVALID_ARG, "n must be positive, got %d", n);
 *     TSR_TRY(tsr_device_alloc(dev, TSR_MEM_WORKSPACE, bytes, &buf));
 *     TSR_CALL_MPI(MPI_Comm_dup(comm, &dup));
 *   cleanup:
 *     free(tmp);
 *     return rc;
 *
 * TSR_CHECK and TSR_CALL_* record the detail (file, line, formatted message) readable
 * through tsr_last_error(); TSR_TRY propagates a status whose detail is already recorded.
 */
#ifndef TESSERA_CORE_INTERNAL_H
#define TESSERA_CORE_INTERNAL_H

#include <mpi.h>
#include <stddef.h>
#include <sys/stat.h>
#include <tessera.h>

/* Record an error's detail for tsr_last_error() and return status. */
tsr_status_t tsr__error(tsr_status_t status, const char *file, int line, const char *fmt, ...)
    TSR_PRINTF(4, 5);

/* Record an MPI error: the call's text and MPI's own error string. Returns TSR_ERR_MPI. */
tsr_status_t tsr__error_mpi(int mpi_code, const char *call, const char *file, int line);

/* Raise an error where it is detected: `return TSR_ERROR(TSR_ERR_INVALID_ARG, "...", ...);` */
#define TSR_ERROR(status, ...) tsr__error((status), __FILE__, __LINE__, __VA_ARGS__)

/* If cond is false, record the error in rc and jump to cleanup. */
#define TSR_CHECK(cond, status, ...)                                                               \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            rc = TSR_ERROR((status), __VA_ARGS__);                                                 \
            goto cleanup;                                                                          \
        }                                                                                          \
    } while (0)

/* Evaluate a tsr_status_t expression; on failure keep its status in rc and jump to cleanup. */
#define TSR_TRY(expr)                                                                              \
    do {                                                                                           \
        rc = (expr);                                                                               \
        if (rc != TSR_OK)                                                                          \
            goto cleanup;                                                                          \
    } while (0)

/* Call MPI; on failure convert its code with MPI's message and jump to cleanup. */
#define TSR_CALL_MPI(call)                                                                         \
    do {                                                                                           \
        int tsr_mpi_rc_ = (call);                                                                  \
        if (tsr_mpi_rc_ != MPI_SUCCESS) {                                                          \
            rc = tsr__error_mpi(tsr_mpi_rc_, #call, __FILE__, __LINE__);                           \
            goto cleanup;                                                                          \
        }                                                                                          \
    } while (0)

/* Tracked-allocator bookkeeping, called by the device backends (lib/core/memory.c). */
tsr_status_t tsr__mem_record(tsr_device_kind_t kind, tsr_mem_category_t category, void *ptr, size_t bytes);
/* Forget ptr; TSR_ERR_INVALID_ARG if it was never recorded (a double or foreign free). */
tsr_status_t tsr__mem_forget(tsr_device_kind_t kind, void *ptr);

/* Whether ptr lies in memory of dev that the host cannot address directly: GPU memory of a
 * CUDA device (pinned or plain host memory is not); anything on the CPU device. */
int tsr__device_holds(tsr_device_t dev, const void *ptr);

/* x rounded to bf16, to nearest even; every NaN gives the canonical NaN 0x7fff, as CUDA's
 * __float2bfloat16 does (lib/core/dtype.c). */
uint16_t tsr__bf16_from_f32(float x);

/* The float whose top half is h (exact). */
float tsr__f32_from_bf16(uint16_t h);

/* Checked host allocation for the library's own small structures (not tracked). */
void *tsr__calloc(size_t count, size_t size);

/* One value of a key=value list: where it starts in the text and its length; value is NULL
 * for a key the list does not give. */
typedef struct tsr__kv {
    const char *value;
    size_t len;
} tsr__kv_t;

/* Split a comma-separated key=value list by the rules of tessera/options.h: values[k] is the
 * value of keys[k]. TSR_ERR_INVALID_ARG naming `what`, the text and the bad item otherwise,
 * ending with "(expected <expected>)". An empty text gives no values. */
tsr_status_t tsr__kv_split(const char *what, const char *text, const char *const keys[], int nkeys,
                           tsr__kv_t values[], const char *expected);

/* A malloc'ed, formatted string (NULL when out of memory): paths of any length. */
char *tsr__strdupf(const char *fmt, ...) TSR_PRINTF(1, 2);

/* "a directory", "a FIFO", ... of a stat mode (lib/core/file.c). */
const char *tsr__file_kind(mode_t mode);

/* TSR_OK if st is a regular file, else TSR_ERR_IO "PATH is a FIFO, not a regular file
 * (expected EXPECTED)": inputs that a read would block on or misread are refused first. */
tsr_status_t tsr__check_regular(const char *path, const struct stat *st, const char *expected);

/* stat(path) and tsr__check_regular(); TSR_ERR_IO with the errno text if stat fails. */
tsr_status_t tsr__stat_regular(const char *path, const char *expected);

/* Wrap an MPI communicator the library created itself (e.g. by MPI_Comm_split): the handle
 * takes ownership and frees it on destroy, with no further duplicate (lib/comm/comm.c). */
tsr_status_t tsr__comm_adopt(MPI_Comm owned, tsr_comm_t *out);

/* A worker's side of the parameter server (lib/ps/worker.c), driven by its ZeRO optimizer. */
typedef struct tsr__ps_worker tsr__ps_worker_t;

/* After tsr_zero_commit() on a worker's grid (tsr_grid_ps_comm() set, not a server): agree
 * with every rank of the job, tell the servers which elements this rank holds and counts.
 * Collective over the job with tsr_ps_serve(). */
tsr_status_t tsr__ps_worker_join(tsr_grid_t grid, tsr_zero_t z, tsr__ps_worker_t **out);

/* The initial parameters to the servers (replica 0 sends, every rank waits). Once per run. */
tsr_status_t tsr__ps_worker_publish(tsr__ps_worker_t *w);

/* One step: push the counted gradients of clock `clock` with the replica's loss, pull the
 * parameters back into the optimizer's views. *loss, *norm and *lr: the mean loss, gradient
 * norm and learning rate of the last round the first server applied. */
tsr_status_t tsr__ps_worker_exchange(tsr__ps_worker_t *w, int64_t clock, double *loss, double *norm, float *lr);

/* Tell the servers this rank is done, and free. Accepts NULL. */
void tsr__ps_worker_leave(tsr__ps_worker_t **w);

/* A grid's record that this worker took part in the servers' first agreement (lib/grid),
 * and its link to the servers while it has one (NULL before the join and after the leave),
 * for tsr_ps_cancel(). */
void tsr__grid_set_ps_joined(tsr_grid_t grid);
int tsr__grid_ps_joined(tsr_grid_t grid);
void tsr__grid_set_ps_worker(tsr_grid_t grid, tsr__ps_worker_t *w);
tsr__ps_worker_t *tsr__grid_ps_worker(tsr_grid_t grid);

/* A worker's optimizer's link to the servers, NULL on any other optimizer (lib/zero). */
tsr__ps_worker_t *tsr__zero_ps_worker(tsr_zero_t z);

/* The number the step divides the summed gradients by (default the dp size): a server's
 * optimizer divides by the number of gradients in a round (lib/zero). */
void tsr__zero_set_grad_divisor(tsr_zero_t z, double divisor);

/* The step's loss, set by the model before tsr_zero_step() and read after it: unchanged,
 * except on a parameter-server worker, where the step makes it the mean loss of the round
 * the servers applied last (lib/zero). */
void tsr__zero_set_loss(tsr_zero_t z, double loss);
double tsr__zero_loss(tsr_zero_t z);

/* ---- profiling (lib/core/prof.c, tessera/prof.h) ---- */

/* Whether the profiler records: the one branch a region costs when it is off. */
extern int tsr__prof_on;

/* Seconds between two device events, after waiting for the second; releases both. Negative
 * when the device cannot tell. */
typedef double (*tsr__prof_elapsed_fn)(void *e0, void *e1);

/* tsr_prof_end() for a region timed on a device between events e0 and e1. */
void tsr__prof_end_device(int region, void *e0, void *e1, tsr__prof_elapsed_fn elapsed);

/* A region that closes when its variable goes out of scope (GCC's and clang's cleanup
 * attribute), so that every return of an instrumented function closes it: one line at the
 * top of the function. On a CUDA device, also timed with events on the device's stream;
 * dev may be NULL (host only). */
typedef struct tsr__region {
    int region;
    void *e0; /* the device event recorded at the start, or NULL */
    tsr_device_t dev;
} tsr__region_t;

/* lib/device/device.c */
tsr__region_t tsr__region_start(tsr_device_t dev, tsr_prof_cat_t cat, const char *name, const char *label);
void tsr__region_stop(tsr__region_t *r);

static inline tsr__region_t tsr__region_begin(tsr_device_t dev, tsr_prof_cat_t cat, const char *name,
                                              const char *label)
{
    if (__builtin_expect(!tsr__prof_on, 1)) {
        tsr__region_t none = {-1, NULL, NULL};
        return none;
    }
    return tsr__region_start(dev, cat, name, label);
}

static inline void tsr__region_end(tsr__region_t *r)
{
    if (r->region >= 0)
        tsr__region_stop(r);
}

#define TSR__REGION(dev, cat, name, label)                                                        \
    tsr__region_t tsr__region_ __attribute__((cleanup(tsr__region_end))) =                        \
        tsr__region_begin((dev), (cat), (name), (label))

/* The axis name a communicator's regions carry ("dp", "tp_row", ...; lib/comm/comm.c). */
void tsr__comm_set_label(tsr_comm_t c, const char *label);

/* Make c's point-to-point sends on MPI synchronous (MPI_Issend, MPI_Ssend: complete only once
 * their receive has started), or plain again; returns the previous setting. The pipeline
 * executor's in-order check on MPI (lib/pipe/execute.c). */
int tsr__comm_set_sync_sends(tsr_comm_t c, int on);

#endif /* TESSERA_CORE_INTERNAL_H */
