/*
 * model_impl.h: the GPT model's private structures, shared by its source files:
 *   gpt.c     parameters (layouts, registration with the optimizer, initial values, the
 *             views the model computes on), creation and the training step;
 *   layers.c  the math of a block, the head and the embedding, forward and backward (input
 *             and weight gradients apart), in tp operations;
 *   stage.c   the pipeline stage callbacks: activation slots, recomputation, which backward
 *             buffers live where;
 *   infer.c   the forward alone (evaluation, generation): KV caches, the pipeline's stages in
 *             turn, logits or losses;
 *   sample.c  the next token from logits (greedy, temperature, top-k, top-p).
 */
#ifndef TESSERA_MODEL_IMPL_H
#define TESSERA_MODEL_IMPL_H

#include "core/internal.h"

#define GPT_LN_EPS 1e-5f

/* The sixteen parameters of a transformer block, in registration order. */
enum { LN1G, LN1B, WQ, BQ, WK, BK, WV, BV, WO, BO, LN2G, LN2B, W1, B1, W2, B2, NBLOCK };

/* One parameter tensor of this rank. */
typedef struct gpt_tensor {
    tsr_dmat_desc_t desc; /* its layout (fp32, the optimizer's) */
    int zid;              /* id in the optimizer */
    int zlayer;           /* the optimizer's layer (unit of gathering) */
    tsr_dmat_t w;         /* what the model computes with: the optimizer's fp32 view, or the bf16 copy */
    tsr_dmat_t g;         /* where its gradient accumulates (fp32): the optimizer's view (wte: a buffer) */
    void *copy;           /* ZeRO 3 with bf16: this use's compute copy */
} gpt_tensor_t;

/* What a block's backward reads of its forward, for one micro-batch: dmats over slot memory
 * (NULL where the block recomputes it into the working set). In generation (infer.c) the
 * block attends through its KV cache kc, vc instead: the n tokens a sequence of x are at
 * positions pos .. pos + n - 1 (kc NULL in training). */
typedef struct gpt_acts {
    tsr_dmat_t x, ln1, q, k, v, att, x1, ln2, hpre, hgelu;
    float *mean1, *rstd1, *mean2, *rstd2, *lse;
    tsr_dmat_t kc, vc;
    int n, pos;
} gpt_acts_t;

/* A block's backward tensors: its input gradient dx, and what its weight gradient reads
 * (besides dy, the output gradient): dL/dx1, dL/dh (pre-GELU), dL/dln2, dL/dq,k,v, dL/dln1. */
typedef struct gpt_grads {
    tsr_dmat_t dx, dx1, dh, dln2, dq, dk, dv, dln1;
} gpt_grads_t;

/* What one virtual stage's forward of one micro-batch keeps for its backward. */
typedef struct gpt_slot {
    int busy, chunk, mb;
    void *mem;           /* one allocation behind every matrix below */
    int nb;              /* blocks of the chunk */
    gpt_acts_t *act;     /* [nb] */
    gpt_grads_t *grad;   /* [nb] where W actions come later (zero-bubble), else NULL */
    tsr_dmat_t x0, dx0;  /* first virtual stage: the embedding's output and its gradient */
    tsr_dmat_t y, lnf, d_lnf, g_out; /* last virtual stage: the head's input, LN_f, their gradients */
    float *lnf_mean, *lnf_rstd;
} gpt_slot_t;

struct tsr_gpt {
    tsr_gpt_config_t cfg;
    tsr_gpt_options_t opts;
    tsr_grid_t grid;
    tsr_device_t dev;
    tsr_tp_t tp;
    tsr_zero_t zero;
    tsr_grid_coords_t at;
    tsr_layout_t layout;
    int oned;           /* 1D (Megatron) layout: tp grid 1×N */
    int stage;          /* ZeRO stage */
    int wte_layer;      /* the optimizer's layer of the tied embedding (alone in it) */
    int stages, chunks; /* pipeline stages p and chunks v per stage */
    int *bounds;        /* virtual stage k holds blocks [bounds[k], bounds[k+1]) */
    int seqs;           /* sequences of this replica per step */
    int mb_seqs;        /* sequences per micro-batch */
    int split_w;        /* the schedule has W actions: weight gradients wait for them */
    tsr_dtype_t dt;     /* activations and compute copies: bf16 on CUDA with bf16, else f32 */
    size_t dts;         /* bytes per dt element */
    tsr_pipe_schedule_t sched;
    tsr_pipe_trace_t trace;

    gpt_tensor_t wte, wpe, lnfg, lnfb;
    gpt_tensor_t (*block)[NBLOCK]; /* [layers][NBLOCK]; only this rank's blocks are built */
    gpt_tensor_t **local;          /* this rank's tensors in registration order */
    int nlocal;
    void *wcopy;                   /* bf16 compute copies of every local tensor (stages 0-2) */
    int *bwd_count;                /* per ZeRO layer: weight-gradient passes this step (stages 0-1) */

    /* layouts of one micro-batch's matrices (type dt) */
    tsr_dmat_desc_t act, heads, wide, logits;
    int rows;                      /* local rows of an activation: this rank's tokens of a micro-batch */

    gpt_slot_t *slots;             /* activation slots, made on first need, reused */
    int nslots;
    void *ws_mem, *shared_mem;     /* the recomputation working set; the shared backward buffers */
    gpt_acts_t ws;                 /* one block's full activations, for replays */
    gpt_grads_t gsh;               /* the backward tensors when W follows B at once */
    tsr_dmat_t dxbuf[2], d_att;    /* ping-pong input gradients; attention's output gradient */
    tsr_dmat_t logits_buf;         /* the head's logits, then their gradient */
    tsr_dmat_t x0grad;             /* the embedding's input gradient when W follows B */
    tsr_dmat_t lnf_g_out;          /* the head's g_out when W follows B */
    float *losses;                 /* per micro-batch, per local row */
    int32_t *d_inputs, *d_targets; /* the step's tokens on the device */
    tsr_dmat_t wte_grad;           /* the tied embedding's gradient (fp32, first and last stage) */
    tsr_gpt_infer_t eval;          /* tsr_gpt_eval()'s context, made on first use */
};

/* ---------- gpt.c: parameters as the schedule needs them ---------- */

/* Make layer's compute matrices valid (ZeRO 3: gather the layer) / let them go (ZeRO 3). */
tsr_status_t tsr__gpt_use_params(tsr_gpt_t gpt, int layer);
void tsr__gpt_drop_params(tsr_gpt_t gpt, int layer);
/* Before a weight-gradient pass of layer (ZeRO 2-3: the layer's fresh gradient views) and
 * after it (ZeRO 2-3: hand it over; 0-1: once every micro-batch's pass is in). */
tsr_status_t tsr__gpt_begin_grads(tsr_gpt_t gpt, int layer);
tsr_status_t tsr__gpt_end_grads(tsr_gpt_t gpt, int layer);
/* bf16 in ZeRO 0-2: cast the compute copies from the fp32 parameters (a no-op otherwise). */
tsr_status_t tsr__gpt_load_params(tsr_gpt_t gpt);

/* ---------- layers.c ---------- */

/* Block l forward from a->x into every matrix of a and the output y; attention_only stops
 * after the attention sublayer, y NULL before the last product (the replays of a backward). */
tsr_status_t tsr__gpt_block_forward(tsr_gpt_t gpt, int l, const gpt_acts_t *a, tsr_dmat_t y, int attention_only);
/* Block l's input gradient: g->dx and the others of g from dy. */
tsr_status_t tsr__gpt_block_backward_input(tsr_gpt_t gpt, int l, const gpt_acts_t *a, tsr_dmat_t dy,
                                           const gpt_grads_t *g);
/* Block l's weight gradients from what its input gradient left in g. */
tsr_status_t tsr__gpt_block_backward_weight(tsr_gpt_t gpt, int l, const gpt_acts_t *a, tsr_dmat_t dy,
                                            const gpt_grads_t *g);
/* Embedding of micro-batch mb into x / its weight gradients from dx. */
tsr_status_t tsr__gpt_embed_forward(tsr_gpt_t gpt, int mb, tsr_dmat_t x);
tsr_status_t tsr__gpt_embed_backward(tsr_gpt_t gpt, int mb, tsr_dmat_t dx);
/* Head of micro-batch mb on s->y: LN_f, logits, loss, the tied gradient and s->d_lnf. */
tsr_status_t tsr__gpt_head_forward(tsr_gpt_t gpt, int mb, gpt_slot_t *s);
/* The head's input gradient into g_out (overwritten) / LN_f's weight gradients. */
tsr_status_t tsr__gpt_head_backward_input(tsr_gpt_t gpt, gpt_slot_t *s, tsr_dmat_t g_out);
tsr_status_t tsr__gpt_head_backward_weight(tsr_gpt_t gpt, gpt_slot_t *s);
/* dst = src (same layout and type). */
tsr_status_t tsr__gpt_copy(tsr_gpt_t gpt, tsr_dmat_t src, tsr_dmat_t dst);

/* ---------- stage.c ---------- */

/* The shared buffers (after the tensors are registered), and everything stage.c made. */
tsr_status_t tsr__gpt_stage_create(tsr_gpt_t gpt);
void tsr__gpt_stage_destroy(tsr_gpt_t gpt);
/* The pipeline callbacks of this rank's stage. */
void tsr__gpt_stage_callbacks(tsr_gpt_t gpt, tsr_pipe_stage_t *stage);
/* Mark every slot free (after a step, or a failed one). */
void tsr__gpt_release_slots(tsr_gpt_t gpt);

#endif /* TESSERA_MODEL_IMPL_H */
