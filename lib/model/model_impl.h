/*
 * model_impl.h: the GPT model's private structures, shared by its source files.
 */
#ifndef TESSERA_MODEL_IMPL_H
#define TESSERA_MODEL_IMPL_H

#include "core/internal.h"

/* The sixteen parameters of a transformer block, in registration order. */
enum { LN1G, LN1B, WQ, BQ, WK, BK, WV, BV, WO, BO, LN2G, LN2B, W1, B1, W2, B2, NBLOCK };

/* One parameter tensor of this rank: the compute copy of its block, its gradient, and
 * where the optimizer keeps it. ZeRO stage 3 holds w only while its layer computes, stages
 * 2-3 hold g only during its layer's backward (the tied embedding's g always). */
typedef struct gpt_tensor {
    tsr_dmat_t w, g;
    tsr_dmat_desc_t desc; /* layout of w (g: the same, category grads) */
    int zid;              /* id in the optimizer */
    int zlayer;           /* the optimizer's layer (unit of gathering) */
    /* the kernels path (engine.c): */
    void *wc;             /* compute copy (dt): the optimizer's view in fp32, else a copy */
    void *owned;          /* the copy's own buffer, where there is one (stage 3) */
    float *gv;            /* where the gradient accumulates (fp32) */
} gpt_tensor_t;

struct gpt_slot; /* engine.c: what one virtual stage's forward keeps for its backward */

/* What one block's forward keeps for its backward, for one micro-batch. */
typedef struct gpt_block_act {
    tsr_dmat_t x, a, q, k, v, o, x1, b, h, gl;
    tsr_tp_saved_t ln1, ln2, att;
} gpt_block_act_t;

/* What the head's forward keeps for its backward, for one micro-batch. */
typedef struct gpt_head_act {
    tsr_dmat_t x, y, logits;
    tsr_tp_saved_t lnf, ce;
} gpt_head_act_t;

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
    tsr_pipe_schedule_t sched;
    tsr_pipe_trace_t trace;

    gpt_tensor_t wte, wpe, lnfg, lnfb;
    gpt_tensor_t (*block)[NBLOCK]; /* [layers][NBLOCK]; only this rank's blocks are built */
    gpt_tensor_t **local;          /* this rank's tensors in registration order */
    int nlocal;

    tsr_dmat_desc_t act, heads, wide, logits; /* layouts of one micro-batch's matrices */
    gpt_block_act_t *bact;                    /* [micro_batches][layers] */
    gpt_head_act_t *hact;                     /* [micro_batches] */
    /* backward scratch, one micro-batch at a time */
    tsr_dmat_t d_x[2], d_a, d_x1, d_b, d_o, d_q, d_k, d_v, d_h, d_g, d_y, d_logits, proj;
    float *tie_buf;  /* the other stage's tied-embedding gradient */

    const int32_t *inputs, *targets;
    double loss_sum; /* this step's micro-batch losses (last stage) */

    /* the kernels path (engine.c) */
    int kernels;              /* compute with tessera/kernels.h instead of the tp operations */
    tsr_dtype_t dt;           /* activations and compute copies: bf16 on CUDA with bf16, else f32 */
    size_t dts;               /* bytes per dt element */
    int vpad;                 /* vocabulary rounded up to 64: the logits' leading dimension */
    struct gpt_slot *slots;   /* activation slots, made on first need, reused */
    int nslots;
    void *scratch;            /* one allocation holding the buffers below */
    void *d_res, *d_ln, *d_qkv, *d_att, *d_mlp, *logits_buf;
    float *delta, *losses;
    int32_t *d_inputs, *d_targets; /* the step's tokens on the device */
    float *wte_grad;          /* the tied embedding's gradient, fp32 (first and last stage) */
    void *wcopy;              /* bf16 compute copies of every local tensor (stages 0-2) */
    int *bwd_count;           /* per ZeRO layer: backward passes this step (stages 0-1) */
};

/* Forward of block l on micro-batch mb: takes ownership of x, returns the output in *y. */
tsr_status_t tsr__gpt_block_forward(tsr_gpt_t gpt, int l, int mb, tsr_dmat_t x, tsr_dmat_t *y);
/* Backward of block l: dy (the output's gradient) to dx; frees the micro-batch's activations. */
tsr_status_t tsr__gpt_block_backward(tsr_gpt_t gpt, int l, int mb, tsr_dmat_t dy, tsr_dmat_t dx);
/* Final layernorm, tied output and loss of micro-batch mb: takes ownership of x. */
tsr_status_t tsr__gpt_head_forward(tsr_gpt_t gpt, int mb, tsr_dmat_t x, float *loss);
/* Backward of the head, seeded with d(loss)/d(micro-batch loss) = dloss, into dx. */
tsr_status_t tsr__gpt_head_backward(tsr_gpt_t gpt, int mb, float dloss, tsr_dmat_t dx);
/* Make layer's compute copies valid (stage 3: gather them) / free them again (stage 3). */
tsr_status_t tsr__gpt_use_params(tsr_gpt_t gpt, int layer);
void tsr__gpt_drop_params(tsr_gpt_t gpt, int layer);
/* Stages 2-3: zeroed gradient blocks for one micro-batch's backward of layer / hand them to
 * the optimizer (grad_begin, add, grad_ready) and free them. Stages 0-1: nothing. */
tsr_status_t tsr__gpt_begin_grads(tsr_gpt_t gpt, int layer);
tsr_status_t tsr__gpt_hand_over_grads(tsr_gpt_t gpt, int layer);
/* Free what micro-batch mb's forward kept (after an error, or at destroy). */
void tsr__gpt_free_acts(tsr_gpt_t gpt, int mb);

/* The kernels path (engine.c): allocate its buffers after the tensors are registered, free
 * them, and run one step's pipeline and tied-gradient exchange. */
tsr_status_t tsr__engine_create(tsr_gpt_t gpt);
void tsr__engine_destroy(tsr_gpt_t gpt);
tsr_status_t tsr__engine_train_step(tsr_gpt_t gpt, tsr_pipe_exec_config_t *exec);

#endif /* TESSERA_MODEL_IMPL_H */
