/**
 * @file tessera/pipe.h
 * @brief Pipeline parallelism: schedules, simulator, executor, partitioner, traces.
 *
 * A model's layers are split into p stages (the grid's pp axis), optionally each into v
 * model chunks (interleaved schedules). Chunk c of stage s holds virtual stage c*p + s
 * (Megatron's convention), so an activation leaves stage p-1 chunk c for stage 0 chunk c+1.
 *
 * A ::tsr_pipe_schedule_t is, per stage, an ordered list of ::tsr_pipe_action_t: forward,
 * backward (input gradient), weight gradient, and the sends and receives of activations and
 * gradients that connect the stages. The generators build GPipe, 1F1B (PipeDream-Flush),
 * interleaved 1F1B and ZB-H1 schedules. tsr_pipe_simulate() plays all stages against each
 * other with blocking (rendezvous) point-to-point rules: it rejects a deadlock, naming the
 * stages and the actions they wait on, and reports makespan, idle time, bubble fraction and
 * peak live activations per stage. tsr_pipe_execute() runs one stage's list on real ranks
 * through user callbacks (::tsr_pipe_stage_t), recording a trace that tsr_pipe_trace_write()
 * writes as Chrome trace JSON.
 */
#ifndef TESSERA_PIPE_H
#define TESSERA_PIPE_H

#include <stddef.h>
#include <tessera/comm.h>
#include <tessera/device.h>
#include <tessera/grid.h>
#include <tessera/status.h>
#include <tessera/visibility.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Schedule families. */
typedef enum tsr_pipe_kind {
    TSR_PIPE_GPIPE = 0,   /**< all forwards, then all backwards */
    TSR_PIPE_1F1B,        /**< PipeDream-Flush: p-1-s warm-up forwards, then one forward one backward */
    TSR_PIPE_INTERLEAVED, /**< 1F1B over v model chunks per stage (Megatron); m a multiple of p */
    TSR_PIPE_ZB_H1,       /**< zero-bubble H1: backward split into B and W, W filling the bubble */
    TSR_PIPE_KIND_COUNT
} tsr_pipe_kind_t;

/** What an action does. */
typedef enum tsr_pipe_op {
    TSR_PIPE_FORWARD = 0, /**< forward of one micro-batch through one chunk */
    TSR_PIPE_BACKWARD,    /**< backward: input gradient (and weight gradient if no W action) */
    TSR_PIPE_WEIGHT,      /**< weight gradient of a micro-batch whose B has run */
    TSR_PIPE_SEND_ACT,    /**< send the forward's output activation to the next virtual stage */
    TSR_PIPE_RECV_ACT,    /**< receive the input activation from the previous virtual stage */
    TSR_PIPE_SEND_GRAD,   /**< send the input gradient to the previous virtual stage */
    TSR_PIPE_RECV_GRAD,   /**< receive the output gradient from the next virtual stage */
    TSR_PIPE_OP_COUNT
} tsr_pipe_op_t;

/** One action of one stage. For sends and receives, @c chunk is this stage's chunk whose
 *  activation or gradient it is, and @c peer the stage on the other end. */
typedef struct tsr_pipe_action {
    tsr_pipe_op_t op; /**< what to do */
    int mb;           /**< micro-batch, 0 <= mb < m */
    int chunk;        /**< model chunk on this stage, 0 <= chunk < v */
    int peer;         /**< other stage for sends and receives; -1 for compute */
} tsr_pipe_action_t;

/** An opaque schedule. */
typedef struct tsr_pipe_schedule *tsr_pipe_schedule_t;

/** "gpipe", "1f1b", "interleaved", "zb-h1". */
TSR_API const char *tsr_pipe_kind_name(tsr_pipe_kind_t kind);

/** Parse a kind name as tsr_pipe_kind_name() writes it. TSR_ERR_INVALID_ARG names the accepted ones. */
TSR_API tsr_status_t tsr_pipe_kind_parse(const char *name, tsr_pipe_kind_t *out);

/**
 * Parse a schedule as the drivers take it: "gpipe", "1f1b", "zb-h1" (chunks 1) or
 * "interleaved:V" (V chunks per stage, 1..64). TSR_ERR_INVALID_ARG names the accepted forms.
 */
TSR_API tsr_status_t tsr_pipe_spec_parse(const char *text, tsr_pipe_kind_t *kind, int *chunks);

/** "F", "B", "W", "send_act", "recv_act", "send_grad", "recv_grad". */
TSR_API const char *tsr_pipe_op_name(tsr_pipe_op_t op);

/**
 * Generate a schedule of @p kind for @p stages stages, @p micro_batches micro-batches and
 * @p chunks model chunks per stage (1 except for TSR_PIPE_INTERLEAVED, where
 * micro_batches must be a multiple of stages). Sends and receives are ordered so that the
 * schedule is deadlock-free even when every send waits for its receive.
 */
TSR_API tsr_status_t tsr_pipe_schedule_create(tsr_pipe_kind_t kind, int stages, int micro_batches, int chunks,
                                              tsr_pipe_schedule_t *out);

/** An empty schedule, to be filled with tsr_pipe_schedule_append() (hand-made or edited schedules). */
TSR_API tsr_status_t tsr_pipe_schedule_create_empty(int stages, int micro_batches, int chunks,
                                                    tsr_pipe_schedule_t *out);

/** Append @p action to the list of @p stage. */
TSR_API tsr_status_t tsr_pipe_schedule_append(tsr_pipe_schedule_t sched, int stage, const tsr_pipe_action_t *action);

/** Free a schedule; sets *sched to NULL and accepts NULL. */
TSR_API void tsr_pipe_schedule_destroy(tsr_pipe_schedule_t *sched);

/** Stages p, micro-batches m and chunks v of a schedule (any pointer may be NULL). */
TSR_API void tsr_pipe_schedule_shape(tsr_pipe_schedule_t sched, int *stages, int *micro_batches, int *chunks);

/** Number of actions of @p stage (0 for a stage out of range). */
TSR_API size_t tsr_pipe_schedule_length(tsr_pipe_schedule_t sched, int stage);

/** The actions of @p stage, tsr_pipe_schedule_length() of them; writable, to edit a schedule in place. */
TSR_API tsr_pipe_action_t *tsr_pipe_schedule_actions(tsr_pipe_schedule_t sched, int stage);

/** Per-action costs of the simulator, in any time unit. Start from #TSR_PIPE_COSTS_INIT. */
typedef struct tsr_pipe_costs {
    size_t struct_size; /**< sizeof(tsr_pipe_costs_t) */
    double forward;     /**< forward of one micro-batch through a whole stage (a chunk costs 1/v) */
    double backward;    /**< backward of one micro-batch through a whole stage (B only when W is split off) */
    double weight;      /**< weight gradient of one micro-batch through a whole stage */
    double transfer;    /**< one send/receive pair, from both sides meeting to both completing */
    int eager;          /**< 0: a send waits for its receive (rendezvous, MPI_Ssend's rule: the
                             strict check of a schedule); 1: sends are buffered and a receive waits
                             for its data (the executor's timing: it posts receives ahead) */
} tsr_pipe_costs_t;

/** Forward 1, backward 2, weight 0, transfer 0, rendezvous sends. For ZB-H1 set backward and
 *  weight to the two parts of the backward (e.g. 1 and 1). */
#define TSR_PIPE_COSTS_INIT {sizeof(tsr_pipe_costs_t), 1.0, 2.0, 0.0, 0.0, 0}

/** What a simulation found. Free the arrays with tsr_pipe_sim_free(). */
typedef struct tsr_pipe_sim {
    int stages;         /**< p */
    double makespan;    /**< time at which the last stage finished */
    double bubble;      /**< idle fraction: 1 - busy compute time / (p * makespan) */
    double *idle;       /**< per stage: makespan minus its compute time */
    int *peak_live;     /**< per stage: most (micro-batch, chunk) pairs forwarded and not yet
                             through their last backward action (B, or W where the schedule has W
                             actions: W still needs the stage's input activations). A chunk's
                             pair holds 1/v of a stage's activations. */
    double **start;     /**< per stage, per action: start time */
    double **end;       /**< per stage, per action: end time */
} tsr_pipe_sim_t;

/**
 * Play @p sched with @p costs (NULL: #TSR_PIPE_COSTS_INIT). A deadlock fails with TSR_ERR_INVALID_ARG and a detail naming
 * each blocked stage and the action it waits on; so does a malformed schedule (an action
 * out of range, a forward or backward missing or repeated, a receive that nothing sends).
 * @p out may be NULL to only validate; otherwise its arrays are filled (also on failure
 * they are left empty).
 */
TSR_API tsr_status_t tsr_pipe_simulate(tsr_pipe_schedule_t sched, const tsr_pipe_costs_t *costs, tsr_pipe_sim_t *out);

/** Free the arrays of a simulation result and zero it. */
TSR_API void tsr_pipe_sim_free(tsr_pipe_sim_t *sim);

/**
 * The textbook bubble fraction of @p kind with per-stage costs @p costs: (p-1)/(m+p-1) for
 * GPipe and 1F1B, (p-1)/(v m+p-1) for interleaved, and for ZB-H1
 * (p-1)(F+B-W) / (m(F+B+W) + (p-1)(F+B-W)) (m >= p, W <= F+B). The simulator reproduces
 * each exactly with buffered sends and no transfer cost (for interleaved, m a multiple of p).
 */
TSR_API double tsr_pipe_bubble_formula(tsr_pipe_kind_t kind, int stages, int micro_batches, int chunks,
                                       const tsr_pipe_costs_t *costs);

/**
 * Draw the simulated timeline of @p sched as an SVG Gantt chart into @p path: stages as
 * rows, forward, backward and weight-gradient blocks coloured and numbered by micro-batch.
 */
TSR_API tsr_status_t tsr_pipe_write_svg(tsr_pipe_schedule_t sched, const tsr_pipe_sim_t *sim, const char *path);

/** Which side of a chunk a buffer sits on. */
typedef enum tsr_pipe_side {
    TSR_PIPE_INPUT = 0, /**< the activation entering the chunk, and its gradient */
    TSR_PIPE_OUTPUT = 1 /**< the activation leaving the chunk, and its gradient */
} tsr_pipe_side_t;

/**
 * A stage's model, as callbacks. Every callback gets @c ctx, the chunk and the micro-batch.
 *
 * Buffers are device memory from the executor's pool; their sizes come from @c buffer_bytes.
 * The first virtual stage (stage 0, chunk 0) gets @c in == NULL and @c grad_in == NULL: it
 * reads its micro-batch itself. The last virtual stage gets @c out == NULL and
 * @c grad_out == NULL: its forward computes the loss and its backward seeds the gradient.
 * @c in stays valid from forward until the micro-batch's last backward action (B, or W when
 * the schedule has W actions), so a backward may read it; anything else the backward needs
 * the stage keeps itself in @c ctx. Weight gradients are accumulated by the callbacks over
 * micro-batches (the executor never zeroes them).
 */
typedef struct tsr_pipe_stage {
    size_t struct_size; /**< sizeof(tsr_pipe_stage_t) */
    void *ctx;          /**< user context passed to every callback */
    /** Bytes of the activation (equally of its gradient) on @p side of @p chunk. */
    size_t (*buffer_bytes)(void *ctx, int chunk, tsr_pipe_side_t side);
    /** out = forward(in). */
    tsr_status_t (*forward)(void *ctx, int chunk, int mb, const void *in, void *out);
    /** grad_in from grad_out; also the weight gradient unless the schedule has W actions. */
    tsr_status_t (*backward)(void *ctx, int chunk, int mb, const void *in, const void *grad_out, void *grad_in);
    /** Weight gradient after backward; NULL allowed when the schedule has no W actions. */
    tsr_status_t (*weight_grad)(void *ctx, int chunk, int mb, const void *in, const void *grad_out);
} tsr_pipe_stage_t;

/** All callbacks NULL. */
#define TSR_PIPE_STAGE_INIT {sizeof(tsr_pipe_stage_t), NULL, NULL, NULL, NULL, NULL}

/** One recorded action of an executed schedule (times from tsr_time_now()). */
typedef struct tsr_pipe_event {
    tsr_pipe_op_t op; /**< the action; for receives, the span is the wait for the data */
    int mb;           /**< micro-batch */
    int chunk;        /**< chunk */
    double start;     /**< seconds */
    double end;       /**< seconds */
} tsr_pipe_event_t;

/** An opaque per-rank recording of executed actions. */
typedef struct tsr_pipe_trace *tsr_pipe_trace_t;

/** An empty trace. */
TSR_API tsr_status_t tsr_pipe_trace_create(tsr_pipe_trace_t *out);

/** Free a trace; sets *trace to NULL and accepts NULL. */
TSR_API void tsr_pipe_trace_destroy(tsr_pipe_trace_t *trace);

/** Forget all events. */
TSR_API void tsr_pipe_trace_clear(tsr_pipe_trace_t trace);

/** Number of events and a pointer to them (valid until the next change of the trace). */
TSR_API const tsr_pipe_event_t *tsr_pipe_trace_events(tsr_pipe_trace_t trace, size_t *count);

/**
 * Gather every rank's events to rank 0 of @p comm (point-to-point through tsr_comm) and let
 * rank 0 write one Chrome trace JSON file (ranks as processes, times in microseconds from
 * the earliest event), which chrome://tracing and Perfetto open. Collective over @p comm;
 * @p path matters on rank 0 only.
 */
TSR_API tsr_status_t tsr_pipe_trace_write(tsr_pipe_trace_t trace, tsr_comm_t comm, const char *path);

/** Executor options. Start from #TSR_PIPE_EXEC_INIT. */
typedef struct tsr_pipe_exec_config {
    size_t struct_size; /**< sizeof(tsr_pipe_exec_config_t) */
    int lookahead;      /**< receives are posted this many compute actions ahead (>= 1) */
    int poll_us;        /**< 0: wait inside MPI (it spins); > 0: test every poll_us microseconds and
                             sleep in between, which leaves the cores to other ranks when a node
                             runs more ranks than it has cores (MPI only: on NCCL the executor's
                             waits are queued on the device's stream) */
    int in_order;       /**< 1: post each send and receive at its own action, in the stage's list
                             order, all with one tag, so that two stages' messages match in the
                             order they are posted (NCCL's rule; lookahead is then unused). Set by
                             the executor itself when the communicator's backend is NCCL. On MPI
                             the run is strict, to check the order on a CPU: synchronous sends,
                             each message alone in flight. Unused with one stage. */
} tsr_pipe_exec_config_t;

/** Receives posted two compute actions ahead, matched by tag; waits inside MPI. */
#define TSR_PIPE_EXEC_INIT {sizeof(tsr_pipe_exec_config_t), 2, 0, 0}

/**
 * Run this rank's part of @p sched: stage = rank of @p comm (the grid's pp communicator,
 * whose size must be the schedule's stage count). Receives are posted ahead with
 * tsr_comm_irecv() and sends go out with tsr_comm_isend(); tags encode (micro-batch, chunk,
 * direction), so messages may arrive in any order. On an NCCL communicator (or with
 * config->in_order) every message is instead posted at its own action, in list order: NCCL
 * runs a rank's sends and receives one after another in posting order and matches two
 * ranks' messages by that order, and a list that passes the rendezvous check below
 * neither deadlocks nor mismatches under that rule (each rank's operations there run one at
 * a time in list order, and a send completes only with its receive; NCCL's streams order
 * less than that). Activation and gradient buffers come
 * from a pool allocated on @p dev (TSR_MEM_ACTIVATIONS) whose size is the most buffers this
 * stage's list holds at once. Actions are appended to @p trace if it is not NULL. Returns
 * once every send of this stage has completed.
 *
 * Before any message, the schedule is checked with tsr_pipe_simulate() under rendezvous
 * rules, and a schedule that fails, a stage count other than the communicator's size, or W
 * actions without a weight_grad callback is refused (TSR_ERR_INVALID_ARG) alike on every
 * rank. @p config may be NULL (#TSR_PIPE_EXEC_INIT); one not from #TSR_PIPE_EXEC_INIT (its
 * struct_size another) is refused. If a callback fails, the error is
 * returned and, should receives still be posted into the pool, the pool is not freed.
 */
TSR_API tsr_status_t tsr_pipe_execute(tsr_pipe_schedule_t sched, tsr_comm_t comm, tsr_device_t dev,
                                      const tsr_pipe_stage_t *stage, const tsr_pipe_exec_config_t *config,
                                      tsr_pipe_trace_t trace);

/**
 * Split @p layers layers with costs @p cost into @p parts contiguous non-empty parts
 * minimizing the most expensive part (optimal, by dynamic programming). Part k is layers
 * [bounds[k], bounds[k+1]); @p bounds holds parts+1 entries. For v chunks per stage use
 * parts = p*v: part k is virtual stage k, i.e. chunk k / p of stage k % p.
 * @param max_cost if not NULL, the cost of the most expensive part.
 */
TSR_API tsr_status_t tsr_pipe_partition(const double *cost, int layers, int parts, int *bounds, double *max_cost);

#ifdef __cplusplus
}
#endif
#endif /* TESSERA_PIPE_H */
