/**
 * @file tessera/zero.h
 * @brief ZeRO optimizer sharding: AdamW and SGD, stages 0-3, global-norm clipping, loss scaling.
 *
 * An optimizer handle lives on a process grid. Each rank registers the parameter blocks it
 * holds after tensor and pipeline splitting; tsr_zero_commit() packs them into flat fp32
 * buffers, one bucket per layer, each bucket padded to a multiple of the dp size and cut
 * into dp shards (rank r of the dp communicator owns elements [r*s, (r+1)*s) of every
 * bucket of s*dp elements). What is kept whole and what is sharded depends on the stage:
 *
 * | stage | parameters        | gradients                       | optimizer state | reduction            |
 * |-------|-------------------|---------------------------------|-----------------|----------------------|
 * | 0     | whole             | whole                           | whole           | all-reduce           |
 * | 1     | whole             | whole                           | shard           | reduce-scatter, all-gather params |
 * | 2     | whole             | shard (+ <= 2 layers in a step) | shard           | reduce-scatter, all-gather params |
 * | 3     | shard (+ gathered layers) | shard (+ <= 2 layers in a step) | shard   | reduce-scatter       |
 *
 * A training step, as a model drives it (every call is cheap where the stage has nothing
 * to do, so one code path serves all stages):
 *
 *     for each micro-batch:
 *         forward:  for l: tsr_zero_gather(l); tsr_zero_prefetch(l+1); compute; tsr_zero_release(l)
 *         backward: for l reversed: tsr_zero_gather(l); tsr_zero_grad_begin(l);
 *                   compute, adding into the gradient views; tsr_zero_grad_ready(l); tsr_zero_release(l)
 *     tsr_zero_step()
 *
 * Gradients are summed over micro-batches (the model scales each micro-batch's loss) and
 * averaged over the dp ranks: a rank's gradient should be that of the mean loss over its
 * own samples, so that the average over dp is the gradient of the mean over the global batch.
 *
 * Global-norm ownership rule (clipping and checkpoint writing). A gradient element is
 * counted by exactly one rank of the grid:
 *   - along dp, by the rank whose shard holds it (the same shard cut in every stage);
 *   - along tp, a block split by tp is counted by every tp rank for its own block; a block
 *     flagged #TSR_ZERO_REPLICATED_TP only by tp rank 0 of its group; one flagged
 *     #TSR_ZERO_REPLICATED_TP_ROW (same block on every rank of a tp row) only by tp column 0;
 *     one flagged #TSR_ZERO_REPLICATED_TP_COL only by tp row 0;
 *   - along pp, tensors live on one stage; one flagged #TSR_ZERO_REPLICATED_PP (tied
 *     embeddings held by the first and last stage) only by pipeline stage 0.
 * The squared sums are added in double and summed over the whole grid in one all-reduce.
 *
 * Buffers are memory of the optimizer's device (host memory for the CPU, GPU memory for
 * CUDA: views then point to device memory and the updates run as device kernels), counted
 * by the tracked allocator: params (master and working copies, gathered layers), grads (flat
 * gradients, layer gradients in flight), optim (moments), comm (reduce-scatter staging). On
 * the CPU a low-precision working copy is rounded to its precision; on a GPU it stays an
 * exact copy of the master, which the model rounds when it converts it to bf16.
 */
#ifndef TESSERA_ZERO_H
#define TESSERA_ZERO_H

#include <stddef.h>
#include <tessera/device.h>
#include <tessera/grid.h>
#include <tessera/status.h>
#include <tessera/visibility.h>

#ifdef __cplusplus
extern "C" {
#endif

/** The optimizer. */
typedef enum tsr_optim_kind {
    TSR_OPTIM_ADAMW = 0, /**< Adam with decoupled weight decay and bias correction; state m, v */
    TSR_OPTIM_SGD = 1    /**< SGD with momentum (PyTorch convention) and decoupled weight decay; state m */
} tsr_optim_kind_t;

/**
 * The learning-rate schedule; a pure function of the step (see tsr_zero_lr_at()). Every
 * schedule starts with warmup_steps of linear warmup (step s of them: lr * s / warmup_steps),
 * then holds lr or decays it to min_lr at total_steps, and holds min_lr after that.
 */
typedef enum tsr_lr_schedule {
    TSR_LR_CONSTANT = 0,      /**< after the warmup, lr at every step */
    TSR_LR_WARMUP_COSINE = 1, /**< after the warmup, cosine from lr to min_lr */
    TSR_LR_WARMUP_LINEAR = 2  /**< after the warmup, linear from lr to min_lr */
} tsr_lr_schedule_t;

/** Precision of the working copy of the parameters that the model computes with. */
typedef enum tsr_precision {
    TSR_PRECISION_FP32 = 0, /**< no separate master copy */
    TSR_PRECISION_BF16 = 1, /**< fp32 master copy; working copy rounded to bf16 */
    TSR_PRECISION_FP16 = 2  /**< fp32 master copy; working copy rounded to fp16 */
} tsr_precision_t;

/** Optimizer configuration. Start from #TSR_ZERO_CONFIG_INIT. */
typedef struct tsr_zero_config {
    size_t struct_size;          /**< sizeof(tsr_zero_config_t), set by #TSR_ZERO_CONFIG_INIT */
    int stage;                   /**< ZeRO stage 0..3 */
    tsr_optim_kind_t optim;      /**< AdamW or SGD */
    float lr;                    /**< peak learning rate */
    float beta1, beta2, eps;     /**< AdamW */
    float momentum;              /**< SGD (0: plain SGD, no state kept) */
    float weight_decay;          /**< decoupled: p -= lr * weight_decay * p, except #TSR_ZERO_NO_DECAY tensors */
    tsr_lr_schedule_t schedule;  /**< learning-rate schedule */
    long warmup_steps;           /**< steps of linear warmup (0: none), every schedule */
    long total_steps;            /**< cosine, linear: the step at which the decay reaches min_lr */
    float min_lr;                /**< cosine, linear: the final learning rate */
    float clip_norm;             /**< clip gradients to this global norm; 0 disables clipping */
    int micro_batches;           /**< tsr_zero_grad_ready() calls per layer per step (stages 0, 1 reduce after the last) */
    tsr_precision_t precision;   /**< working-copy precision */
    int dynamic_loss_scale;      /**< 1: scale the loss, skip steps whose gradients overflow */
    float loss_scale;            /**< initial loss scale (used when dynamic_loss_scale) */
    int loss_scale_window;       /**< double the scale after this many steps without overflow */
} tsr_zero_config_t;

/** Defaults: stage 0, AdamW (lr 1e-3, betas 0.9/0.999, eps 1e-8, no weight decay), constant LR, fp32. */
#define TSR_ZERO_CONFIG_INIT                                                                       \
    {sizeof(tsr_zero_config_t), 0, TSR_OPTIM_ADAMW, 1e-3f, 0.9f, 0.999f, 1e-8f, 0.0f, 0.0f,        \
     TSR_LR_CONSTANT, 0, 0, 0.0f, 0.0f, 1, TSR_PRECISION_FP32, 0, 65536.0f, 1000}

/** Flags of a registered tensor. */
enum tsr_zero_flags {
    TSR_ZERO_NO_DECAY = 1 << 0,        /**< no weight decay (biases, layernorm gains) */
    TSR_ZERO_REPLICATED_TP = 1 << 1,   /**< every rank of the tp group holds this same block */
    TSR_ZERO_REPLICATED_TP_ROW = 1 << 2, /**< every rank of the tp row holds this same block */
    TSR_ZERO_REPLICATED_TP_COL = 1 << 3, /**< every rank of the tp column holds this same block */
    TSR_ZERO_REPLICATED_PP = 1 << 4    /**< several pipeline stages hold this same block (tied weights) */
};

/** Longest tensor name, with its terminating NUL. */
#define TSR_ZERO_NAME_MAX 96

/** One tensor block as a rank holds it. Start from #TSR_ZERO_TENSOR_INIT. */
typedef struct tsr_zero_tensor {
    size_t struct_size;          /**< sizeof(tsr_zero_tensor_t) */
    const char *name;            /**< global name, e.g. "h3.mlp.fc.w" (copied) */
    long rows, cols;             /**< global shape (a vector is 1 x n) */
    long row_off, col_off;       /**< where this rank's block starts in the global tensor */
    long local_rows, local_cols; /**< this rank's block (row-major, contiguous in the flat buffer) */
    int layer;                   /**< layer id >= 0: the unit of bucketing, gather and release */
    unsigned flags;              /**< ::tsr_zero_flags */
} tsr_zero_tensor_t;

/** An empty description: fill every field but struct_size. */
#define TSR_ZERO_TENSOR_INIT {sizeof(tsr_zero_tensor_t), NULL, 0, 0, 0, 0, 0, 0, 0, 0u}

/** An opaque optimizer handle. */
typedef struct tsr_zero *tsr_zero_t;

/** What one step did. */
typedef struct tsr_zero_step_info {
    long step;          /**< steps taken so far, this one included (skipped steps are not counted) */
    double grad_norm;   /**< global gradient norm before clipping (unscaled; inf or NaN on overflow) */
    float lr;           /**< learning rate used */
    float loss_scale;   /**< loss scale for the next step */
    int skipped;        /**< 1 if the gradients were not finite and no update was made */
} tsr_zero_step_info_t;

/** The optimizer's scalar state, for checkpoints; the LR schedule is a function of step. */
typedef struct tsr_zero_state {
    long step;          /**< completed steps */
    float loss_scale;   /**< current loss scale */
    long good_steps;    /**< steps since the loss scale last changed */
} tsr_zero_state_t;

/** Which per-element state tsr_zero_piece() exposes. */
typedef enum tsr_zero_kind {
    TSR_ZERO_PARAM = 0, /**< fp32 master parameters (/params/<name>) */
    TSR_ZERO_M = 1,     /**< AdamW first moment or SGD momentum (/optim/<name>/m) */
    TSR_ZERO_V = 2      /**< AdamW second moment (/optim/<name>/v) */
} tsr_zero_kind_t;

/**
 * The part of one registered tensor's local block that this rank stores for one kind of
 * state. Indices count elements of the local block in row-major order; local element i is
 * global element (row_off + i / local_cols, col_off + i % local_cols).
 */
typedef struct tsr_zero_piece {
    size_t begin, end;              /**< this rank stores local elements [begin, end) */
    float *data;                    /**< local element begin (NULL when begin == end); read and write through it */
    size_t write_begin, write_end;  /**< the sub-range this rank alone should write to a checkpoint
                                       (the ownership rule above); empty when write_begin == write_end */
} tsr_zero_piece_t;

/**
 * Create an optimizer over @p grid (dp communicator for sharding, the whole grid for the
 * global norm), its buffers on @p dev, which must outlive the handle. Local.
 * @return TSR_ERR_INVALID_ARG for a bad configuration.
 */
TSR_API tsr_status_t tsr_zero_create(tsr_grid_t grid, tsr_device_t dev, const tsr_zero_config_t *cfg,
                                     tsr_zero_t *out);

/** The device holding the optimizer's buffers. */
TSR_API tsr_device_t tsr_zero_device(tsr_zero_t opt);

/** Free the handle and every buffer; sets *opt to NULL and accepts NULL. Local. */
TSR_API void tsr_zero_destroy(tsr_zero_t *opt);

/**
 * Register a tensor block before tsr_zero_commit(). Every rank of a dp group must register
 * the same tensors (same blocks) in the same order. @p id (may be NULL) gets its index.
 */
TSR_API tsr_status_t tsr_zero_register(tsr_zero_t opt, const tsr_zero_tensor_t *t, int *id);

/**
 * Pack the registered tensors into flat buckets and allocate them, zeroed. Collective over
 * the dp communicator (it checks that the dp ranks registered the same sizes). Write initial
 * values through tsr_zero_piece(TSR_ZERO_PARAM) and call tsr_zero_sync_params().
 */
TSR_API tsr_status_t tsr_zero_commit(tsr_zero_t opt);

/** Number of registered tensors. */
TSR_API int tsr_zero_tensor_count(tsr_zero_t opt);

/** The description of tensor @p id as registered (the name points into the handle). */
TSR_API tsr_status_t tsr_zero_tensor_desc(tsr_zero_t opt, int id, tsr_zero_tensor_t *out);

/** Local elements this rank registers (Ψ of this rank, unpadded). */
TSR_API size_t tsr_zero_local_elements(tsr_zero_t opt);

/** Padded elements of the flat buffer (sum over buckets of dp * shard) and of this rank's shards. */
TSR_API void tsr_zero_flat_elements(tsr_zero_t opt, size_t *padded, size_t *shard);

/**
 * Where tensor @p id's working parameters and gradient live now (NULL where not
 * materialized): parameters always in stages 0-2 and between tsr_zero_gather() and
 * tsr_zero_release() in stage 3; gradients always in stages 0-1 and between
 * tsr_zero_grad_begin() and tsr_zero_grad_ready() in stages 2-3.
 */
TSR_API tsr_status_t tsr_zero_view(tsr_zero_t opt, int id, float **param, float **grad);

/** Stage 3: start gathering @p layer's parameters without waiting. Otherwise (or unknown layer) no-op. */
TSR_API tsr_status_t tsr_zero_prefetch(tsr_zero_t opt, int layer);

/** Stage 3: make @p layer's parameters valid (waits for its prefetch, or gathers now). Collective over dp. */
TSR_API tsr_status_t tsr_zero_gather(tsr_zero_t opt, int layer);

/** Stage 3: free @p layer's gathered parameters. Other stages: no-op. */
TSR_API tsr_status_t tsr_zero_release(tsr_zero_t opt, int layer);

/** Stages 2-3: materialize @p layer's full gradient, zeroed, for one micro-batch's backward. */
TSR_API tsr_status_t tsr_zero_grad_begin(tsr_zero_t opt, int layer);

/**
 * @p layer's gradient for this micro-batch is complete: start its non-blocking reduction
 * (stages 2-3: reduce-scatter now; stage 0 all-reduce, stage 1 reduce-scatter, once every
 * micro-batch is in).
 * Collective over dp, in the same layer order on every rank.
 */
TSR_API tsr_status_t tsr_zero_grad_ready(tsr_zero_t opt, int layer);

/** Multiply the loss by this before backward (1 without dynamic loss scaling). */
TSR_API float tsr_zero_loss_scale(tsr_zero_t opt);

/**
 * Finish the reductions (any layer whose gradient was never marked ready is reduced now),
 * compute the global norm, clip, update this rank's part, publish parameters and zero the
 * gradients. Collective over the grid. @p info may be NULL.
 */
TSR_API tsr_status_t tsr_zero_step(tsr_zero_t opt, tsr_zero_step_info_t *info);

/** Zero every gradient (the step does this itself). */
TSR_API tsr_status_t tsr_zero_zero_grad(tsr_zero_t opt);

/** The learning rate of a configuration at step @p step (1-based). */
TSR_API float tsr_zero_lr_at(const tsr_zero_config_t *cfg, long step);

/** The optimizer's name: "adamw" or "sgd" (as checkpoints and options spell it). */
TSR_API const char *tsr_optim_kind_name(tsr_optim_kind_t kind);

/** Parse "adamw" or "sgd". TSR_ERR_INVALID_ARG otherwise, naming the choices. */
TSR_API tsr_status_t tsr_optim_kind_parse(const char *text, tsr_optim_kind_t *out);

/** The schedule's name: "constant", "cosine" or "linear". */
TSR_API const char *tsr_lr_schedule_name(tsr_lr_schedule_t schedule);

/** Parse "constant", "cosine" or "linear". TSR_ERR_INVALID_ARG otherwise, naming the choices. */
TSR_API tsr_status_t tsr_lr_schedule_parse(const char *text, tsr_lr_schedule_t *out);

/**
 * The part of tensor @p id's local block stored here for @p kind (see ::tsr_zero_piece_t).
 * TSR_ERR_INVALID_ARG for a state the optimizer does not keep (V with SGD, M with momentum 0).
 */
TSR_API tsr_status_t tsr_zero_piece(tsr_zero_t opt, int id, tsr_zero_kind_t kind, tsr_zero_piece_t *out);

/** Refresh the working parameters from the master copy after writing PARAM pieces. Collective over dp. */
TSR_API tsr_status_t tsr_zero_sync_params(tsr_zero_t opt);

/** Read the scalar state. */
TSR_API void tsr_zero_get_state(tsr_zero_t opt, tsr_zero_state_t *out);

/** Restore the scalar state (e.g. from a checkpoint). */
TSR_API tsr_status_t tsr_zero_set_state(tsr_zero_t opt, const tsr_zero_state_t *state);

/** Round @p n floats in place to the nearest value of @p precision (round to nearest even). */
TSR_API void tsr_zero_round(tsr_precision_t precision, float *x, size_t n);

#ifdef __cplusplus
}
#endif
#endif /* TESSERA_ZERO_H */
