/**
 * @file tessera/ps.h
 * @brief Parameter server: server ranks holding sharded parameters and optimizer state,
 * workers pushing gradients and pulling parameters under bounded staleness.
 *
 * A layout with ps = S (tessera/grid.h) has S server ranks beside dp worker replicas, each
 * a pp × tp group. The servers hold the model's parameters, fp32, and the optimizer state
 * (AdamW or SGD, updated by the same code as tessera/zero.h: each server runs a ZeRO
 * optimizer over its shard) in flat ranges of the model's flat vector (the tensors in the
 * order of their ZeRO layer, then name), cut at row boundaries, about Ψ/S elements each.
 *
 * A worker trains through the model's ordinary parameter and gradient views: its ZeRO
 * optimizer (stage 0) sees that the grid is a worker's and, in tsr_zero_step(), pushes the
 * gradient elements it counts (the ownership rule of tessera/zero.h: each element once per
 * replica) to the servers that hold them and pulls every parameter element it holds back.
 * The protocol (doc/ps.md): one PUSH message to each server per step carrying the worker's
 * clock (its step), its replica's loss and its gradient elements in that server's range;
 * the server answers it with one REPLY of the worker's parameter elements in its range and
 * the mean loss, gradient norm and learning rate of the last round it applied.
 *
 * Updates. A server sums the gradients it receives into rounds: a round is complete when,
 * for every worker position (pp, tp), dp gradients have arrived, from any replicas, i.e.
 * the samples of one synchronous step. It then steps its optimizer on the mean (global-norm
 * clipping over all the servers' shards, the same learning-rate schedule by round), and
 * starts the next round. A push that would overfill a round waits until the round is done.
 *
 * Consistency: bounded staleness s. The server answers a worker's push of clock c once it
 * has applied c − s rounds. With s = 0 a worker's step c + 1 starts from the parameters
 * after exactly c rounds, each the mean of every replica's gradient of that step: the
 * synchronous data-parallel result. With #TSR_PS_STALENESS_INF the answer is immediate
 * (fully asynchronous). Under a straggler that stays slow, a bounded s lets the others run
 * at most s rounds ahead, so their speed converges to the straggler's; only s = inf keeps
 * the fast replicas at their own speed.
 *
 * Bytes per worker rank per step, as tessera/comm.h counts them on tsr_grid_ps_comm():
 * sent S × #TSR_PS_HEADER_BYTES + 4 × (gradient elements it counts); received (the servers'
 * replies) S × #TSR_PS_HEADER_BYTES + 4 × (parameter elements it holds).
 *
 * Straggler injection: the environment variable TSR_PS_DELAY=WORKER:MS makes every rank of
 * replica WORKER sleep MS milliseconds before each push.
 *
 * Checkpoints (doc/ps.md). The servers write them: every worker rank calls
 * tsr_ps_checkpoint() after the same step K; each server waits until every worker rank has
 * asked and it has applied K rounds (with s > 0 too: every push up to clock K is in), then
 * all servers call the save callback of their configuration together, on their own grid
 * (whose TSR_AXIS_WORLD is the servers) and their optimizer, so that tsr_ckpt_save_zero()
 * writes the global /params and /optim datasets a ZeRO run writes. A resume is the same
 * barrier before step 1 (tsr_ps_restore()): the load callback (tsr_ckpt_load_zero() on
 * the servers' grid) restores the shards, and every worker rank gets its parameters back.
 *
 * Faults. A worker rank that fails after joining calls tsr_ps_cancel(): the servers then
 * answer every waiting and later message with an abort, so that no worker waits forever
 * for a round that the failed rank would have completed; tsr_ps_serve() returns once every
 * worker rank has left. A rank that dies is MPI's to report: mpiexec ends the job.
 *
 * The transport is two-sided MPI with a polling server loop (doc/ps.md says why); servers
 * and waiting workers sleep between polls, so that co-located ranks are not starved.
 * Workers and servers run on the CPU device.
 */
#ifndef TESSERA_PS_H
#define TESSERA_PS_H

#include <stdint.h>
#include <tessera/device.h>
#include <tessera/grid.h>
#include <tessera/status.h>
#include <tessera/visibility.h>
#include <tessera/zero.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Staleness without bound: fully asynchronous. */
#define TSR_PS_STALENESS_INF INT64_MAX

/** Bytes of the header of every PUSH and REPLY message. */
#define TSR_PS_HEADER_BYTES 56

/**
 * Write a checkpoint of the servers' state after @p step rounds. Called on every server
 * together, collective over tsr_grid_comm(@p grid, TSR_AXIS_WORLD) (the servers), with the
 * server's grid and optimizer (pass them to tsr_ckpt_save_zero()). @p note is the value
 * the workers passed to tsr_ps_checkpoint() (tsr-train: the loader's position in tokens).
 * The status (and tsr_last_error()) goes back to every worker rank: return the same on
 * every server (tsr_ckpt_commit() does).
 */
typedef tsr_status_t (*tsr_ps_save_fn)(void *ctx, tsr_grid_t grid, tsr_zero_t opt, int64_t step, int64_t note);

/**
 * Restore the servers' state (tsr_ckpt_load_zero() on @p grid and @p opt) and set *@p step
 * to the step the run resumes at (the rounds the checkpoint had applied). Called and
 * collective as ::tsr_ps_save_fn; return the same status on every server.
 */
typedef tsr_status_t (*tsr_ps_load_fn)(void *ctx, tsr_grid_t grid, tsr_zero_t opt, int64_t *step);

/** Server configuration. Start from #TSR_PS_CONFIG_INIT. */
typedef struct tsr_ps_config {
    size_t struct_size; /**< sizeof(tsr_ps_config_t), set by #TSR_PS_CONFIG_INIT */
    int64_t staleness;  /**< s >= 0 rounds, or #TSR_PS_STALENESS_INF */
    int poll_us;        /**< longest sleep between two polls of an idle server (microseconds, >= 1) */
    tsr_ps_save_fn save; /**< for tsr_ps_checkpoint(); NULL: the workers' requests fail */
    tsr_ps_load_fn load; /**< for tsr_ps_restore(); NULL: the workers' requests fail */
    void *ctx;           /**< passed to save and load */
} tsr_ps_config_t;

/** Synchronous (s = 0), polling at most every 1000 microseconds when idle, no checkpoints. */
#define TSR_PS_CONFIG_INIT {sizeof(tsr_ps_config_t), 0, 1000, NULL, NULL, NULL}

/** What a server did, for benchmarks and tests. */
typedef struct tsr_ps_stats {
    int64_t rounds;      /**< optimizer steps taken (completed rounds) */
    int64_t pushes;      /**< gradient messages received */
    int64_t max_lag;     /**< largest (worker's clock − rounds applied) seen at a push */
} tsr_ps_stats_t;

/**
 * Parse a staleness: a non-negative integer, or "inf" for #TSR_PS_STALENESS_INF.
 * @return TSR_ERR_INVALID_ARG naming what was expected.
 */
TSR_API tsr_status_t tsr_ps_staleness_parse(const char *text, int64_t *out);

/**
 * Serve, on a server rank of @p grid (tsr_grid_is_server()), until every worker rank has
 * destroyed its optimizer. Collective over tsr_grid_ps_comm() with the workers' creation
 * of their model (tsr_zero_commit() and tsr_zero_sync_params() of their optimizers), or
 * with their tsr_ps_cancel(). @p zcfg is the optimizer configuration the workers use
 * (stage and micro_batches are ignored). @p stats may be NULL.
 * @return TSR_ERR_INVALID_ARG for a bad configuration or a rank that is not a server;
 *         TSR_ERR_MISMATCH when the workers cancelled before joining; TSR_ERR_ABORTED when
 *         a worker rank cancelled after (see tsr_ps_cancel()).
 */
TSR_API tsr_status_t tsr_ps_serve(tsr_grid_t grid, tsr_device_t dev, const tsr_zero_config_t *zcfg,
                                  const tsr_ps_config_t *cfg, tsr_ps_stats_t *stats);

/**
 * Release the servers from a worker that failed.
 *
 * Before its optimizer joined the servers (tsr_gpt_create() or tsr_zero_commit() returned
 * an error): every worker rank must call either this or tsr_zero_commit(), so call it only
 * after an agreement among the workers that creation failed; collective over
 * tsr_grid_ps_comm(), and tsr_ps_serve() returns an error.
 *
 * After it joined (a step, a checkpoint or a resume failed on this rank): local. It tells
 * every server that this rank has left; the servers answer every worker's waiting and later
 * requests with an abort (their tsr_zero_step(), tsr_ps_checkpoint() or tsr_ps_restore() then
 * fails with TSR_ERR_ABORTED naming this rank), and tsr_ps_serve() returns TSR_ERR_ABORTED
 * once every worker rank has left. Call it before any agreement that the other workers
 * could only reach after a step that waits for this rank. No-op on a server, without
 * servers, and when called again.
 */
TSR_API tsr_status_t tsr_ps_cancel(tsr_grid_t grid);

/**
 * On every worker rank, after the same step (tsr_zero_step() calls of @p opt, the worker's
 * optimizer): have the servers write a checkpoint of that step, at a consistent point: every
 * worker at that clock and every round up to it applied. Waits for the servers' save
 * callback and returns its status with its message. @p note goes to the callback.
 * Collective over tsr_grid_ps_comm() with the servers (in their tsr_ps_serve()).
 * @return TSR_ERR_ABORTED when a worker rank failed (tsr_ps_cancel()) or a server did;
 *         TSR_ERR_MISMATCH when the worker ranks asked after different steps (or one had
 *         left); TSR_ERR_INVALID_ARG on a rank that is not a joined worker.
 */
TSR_API tsr_status_t tsr_ps_checkpoint(tsr_zero_t opt, int64_t note);

/**
 * On every worker rank, before the first step: have the servers restore their state with
 * their load callback, pull this rank's parameters from them and set @p opt's step to the
 * one the callback returns (also in *@p step). Collective as tsr_ps_checkpoint(); the
 * callback's status and message come back on every worker rank.
 */
TSR_API tsr_status_t tsr_ps_restore(tsr_zero_t opt, int64_t *step);

#ifdef __cplusplus
}
#endif
#endif /* TESSERA_PS_H */
