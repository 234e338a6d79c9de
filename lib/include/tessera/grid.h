/**
 * @file tessera/grid.h
 * @brief The dp × pp × tp(rows × cols) process grid and its sub-communicators.
 *
 * World rank order keeps tensor parallelism innermost (the ranks of one tp group are
 * neighbours, normally on one node), then pipeline, then data parallelism:
 *
 *     rank = ((dp * PP + pp) * TP_ROWS + tp_row) * TP_COLS + tp_col
 *
 * A tp grid of 1×N runs tensor parallelism with the 1D (Megatron) algorithm; any other
 * shape uses the 2D (SUMMA) algorithm.
 *
 * Parameter servers (tessera/ps.h). A layout with ps = S > 0 adds S server ranks after the
 * dp × pp × tp workers: ranks [0, dp·pp·tp) are workers, numbered as above, and the last S
 * are servers. The data-parallel axis is then the parameter server itself, so a worker's
 * grid is its replica: its TSR_AXIS_WORLD holds the pp × tp ranks of its replica, its
 * TSR_AXIS_DP only itself, and its coordinates still say which replica (dp) it is. A
 * server's grid has the S servers as TSR_AXIS_WORLD and itself alone on every other axis.
 * tsr_grid_ps_comm() is the communicator of the whole job, servers and workers.
 */
#ifndef TESSERA_GRID_H
#define TESSERA_GRID_H

#include <mpi.h>
#include <stddef.h>
#include <tessera/comm.h>
#include <tessera/status.h>
#include <tessera/visibility.h>

#ifdef __cplusplus
extern "C" {
#endif

/** How a job's ranks are split. Start from #TSR_LAYOUT_INIT so new fields get defaults. */
typedef struct tsr_layout {
    size_t struct_size; /**< sizeof(tsr_layout_t), set by #TSR_LAYOUT_INIT */
    int dp;             /**< data-parallel replicas */
    int pp;             /**< pipeline stages */
    int tp_rows;        /**< rows of the tensor-parallel grid */
    int tp_cols;        /**< columns of the tensor-parallel grid */
    int ps;             /**< parameter-server ranks beside the workers (0: none; see tessera/ps.h) */
} tsr_layout_t;

/** One rank: dp = pp = tp_rows = tp_cols = 1, no parameter server. */
#define TSR_LAYOUT_INIT {sizeof(tsr_layout_t), 1, 1, 1, 1, 0}

/** Longest text tsr_layout_format() writes, with its terminating NUL. */
#define TSR_LAYOUT_STRLEN 80

/**
 * Parse "ps=S,dp=D,pp=P,tp=RxC" (keys in any order, each optional; ps defaults to 0, the
 * others to 1; "tp=N" means 1xN, the 1D layout), by the list rules of tessera/options.h. Each
 * size is at least 1 and at most 2^20, and the rank count at most INT_MAX.
 * @return #TSR_OK, or TSR_ERR_INVALID_ARG with a message naming the bad part.
 */
TSR_API tsr_status_t tsr_layout_parse(const char *text, tsr_layout_t *out);

/** Write "dp=D,pp=P,tp=RxC", preceded by "ps=S," when ps > 0, into @p buf (at most @p len bytes, NUL-terminated). @return buf. */
TSR_API char *tsr_layout_format(const tsr_layout_t *layout, char *buf, size_t len);

/**
 * Number of ranks the layout needs: ps + dp * pp * tp_rows * tp_cols, or -1 if a size is below 1
 * (ps below 0) or the count exceeds INT_MAX (tsr_layout_parse() refuses such layouts).
 */
TSR_API int tsr_layout_ranks(const tsr_layout_t *layout);

/** An opaque process grid. */
typedef struct tsr_grid *tsr_grid_t;

/** The axes of the grid, each with its own communicator. */
typedef enum tsr_axis {
    TSR_AXIS_WORLD = 0, /**< every rank of the grid */
    TSR_AXIS_DP,        /**< ranks with my pp and tp coordinates: the data-parallel group */
    TSR_AXIS_PP,        /**< ranks with my dp and tp coordinates: my pipeline */
    TSR_AXIS_TP,        /**< ranks with my dp and pp coordinates: my tensor-parallel group */
    TSR_AXIS_TP_ROW,    /**< my tp group's ranks in my tp row (size tp_cols, ranked by column) */
    TSR_AXIS_TP_COL,    /**< my tp group's ranks in my tp column (size tp_rows, ranked by row) */
    TSR_AXIS_COUNT
} tsr_axis_t;

/** Where this rank sits in the grid. */
typedef struct tsr_grid_coords {
    int rank;   /**< rank in the grid's world communicator */
    int size;   /**< ranks in the grid */
    int dp;     /**< data-parallel index, 0 <= dp < layout.dp */
    int pp;     /**< pipeline stage, 0 <= pp < layout.pp */
    int tp;     /**< rank in the tp group: tp_row * tp_cols + tp_col */
    int tp_row; /**< row in the tp grid */
    int tp_col; /**< column in the tp grid */
} tsr_grid_coords_t;

/** The name of an axis ("world", "dp", "pp", "tp", "tp_row", "tp_col"). */
TSR_API const char *tsr_axis_name(tsr_axis_t axis);

/**
 * Build the grid over a duplicate of @p comm. Collective over @p comm. Fails with
 * TSR_ERR_LAYOUT, naming every number, if the layout's product is not the size of @p comm.
 * Sets the log prefix of this process to the rank's coordinates.
 */
TSR_API tsr_status_t tsr_grid_create(MPI_Comm comm, const tsr_layout_t *layout, tsr_grid_t *out);

/** Free the grid and its communicators; sets *grid to NULL and accepts NULL. Collective. */
TSR_API void tsr_grid_destroy(tsr_grid_t *grid);

/** The layout the grid was built with. */
TSR_API void tsr_grid_layout(tsr_grid_t grid, tsr_layout_t *out);

/** This rank's coordinates. */
TSR_API void tsr_grid_coords(tsr_grid_t grid, tsr_grid_coords_t *out);

/** The communicator of one axis; owned by the grid (do not destroy it). */
TSR_API tsr_comm_t tsr_grid_comm(tsr_grid_t grid, tsr_axis_t axis);

/**
 * Put every axis communicator of @p grid on @p dev (see tsr_comm_set_device(): from then on
 * the buffers of all of them are memory of @p dev; a CPU device or NULL means host memory)
 * and choose each one's backend. With a CUDA device and @p preferred NCCL, an axis uses
 * NCCL where it can: NCCL is built, the axis has more than one rank and no two of its ranks
 * share a GPU; every other axis uses the MPI backend, staged through host memory. So
 * ranks sharing one GPU, or a build without NCCL, still run, only slower. With @p preferred
 * MPI, or a CPU device, every axis uses MPI. The pipeline axis follows the same rule: on
 * NCCL the executor posts its messages in each stage's list order, which NCCL matches as
 * posted (tsr_pipe_execute()). Rank 0 of each axis communicator logs the
 * choice and the reason at info level (TSR_LOG=info).
 *
 * Collective over the grid. Complete every non-blocking operation on the grid's
 * communicators first. On failure the axes may be left partly switched: call it again, or
 * destroy the grid.
 * @return #TSR_OK; TSR_ERR_INVALID_ARG for a bad @p preferred or operations in flight;
 *         TSR_ERR_CUDA or TSR_ERR_NCCL when creating an NCCL communicator fails.
 */
TSR_API tsr_status_t tsr_grid_set_device(tsr_grid_t grid, tsr_device_t dev, tsr_comm_backend_t preferred);

/** Whether this rank is a parameter server (a layout with ps > 0; see tessera/ps.h). */
TSR_API int tsr_grid_is_server(tsr_grid_t grid);

/** The communicator of the whole job, servers and workers; NULL without ps. Owned by the grid. */
TSR_API tsr_comm_t tsr_grid_ps_comm(tsr_grid_t grid);

/** Rank in the grid's world communicator of the given coordinates (with ps: in the whole job), or -1 if any is out of range. */
TSR_API int tsr_grid_rank_of(tsr_grid_t grid, int dp, int pp, int tp_row, int tp_col);

#ifdef __cplusplus
}
#endif
#endif /* TESSERA_GRID_H */
