/*
 * gpt.c: the GPT model's parameters (layouts, registration with the optimizer, initial
 * values, the matrices the model computes on), its creation and the training step.
 *
 * The model computes on the optimizer's memory. Each parameter tensor has a matrix w (the
 * optimizer's fp32 parameter view, or in bf16 a compute copy rounded from it each step) and
 * a matrix g (the optimizer's fp32 gradient view) over that memory. In ZeRO stage 3 w exists
 * between tsr__gpt_use_params() and tsr__gpt_drop_params() of its layer (the gathered
 * layer); in stages 2-3 g between tsr__gpt_begin_grads() and tsr__gpt_end_grads() (the
 * layer's gradient for one micro-batch's weight-gradient pass). A step runs the pipeline
 * schedule (stage.c), sums the tied embedding's gradient between the first and the last
 * stage, hands it to the optimizer and steps.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_impl.h"

/* Tag of the tied-gradient exchange; the executor's tags are done when it returns. */
#define TIE_TAG 0x7ffe

/* ---------- layouts ---------- */

static tsr_dmat_desc_t desc(int rows, int cols, tsr_split_t rs, tsr_split_t cs, int ru, int cu,
                            tsr_mem_category_t cat)
{
    tsr_dmat_desc_t d = TSR_DMAT_DESC_INIT;
    d.rows = rows, d.cols = cols, d.row_split = rs, d.col_split = cs, d.row_unit = ru, d.col_unit = cu;
    d.category = cat;
    return d;
}

/* Layout of block parameter p: 2D blocks; 1D column-parallel (Q, K, V, W1) or row-parallel (Wo, W2). */
static tsr_dmat_desc_t block_param_desc(tsr_gpt_t gpt, int p)
{
    const tsr_split_t N = TSR_SPLIT_NONE, R = TSR_SPLIT_GRID_ROWS, C = TSR_SPLIT_GRID_COLS;
    int h = gpt->cfg.dim, f = 4 * h, hd = h / gpt->cfg.heads, o = gpt->oned;
    tsr_mem_category_t P = TSR_MEM_PARAMS;
    switch (p) {
    case WQ: case WK: case WV: return desc(h, h, o ? N : R, C, 1, hd, P);
    case BQ: case BK: case BV: return desc(1, h, N, C, 1, hd, P);
    case WO: return desc(h, h, o ? C : R, o ? N : C, hd, 1, P);
    case W1: return desc(h, f, o ? N : R, C, 1, 1, P);
    case B1: return desc(1, f, N, C, 1, 1, P);
    case W2: return desc(f, h, o ? C : R, o ? N : C, 1, 1, P);
    default: return desc(1, h, N, o ? N : C, 1, 1, P); /* layernorm vectors, bo, b2 */
    }
}

static void activation_descs(tsr_gpt_t gpt)
{
    const tsr_split_t N = TSR_SPLIT_NONE, R = TSR_SPLIT_GRID_ROWS, C = TSR_SPLIT_GRID_COLS;
    int t = gpt->cfg.seq, m = gpt->mb_seqs * t, h = gpt->cfg.dim, hd = h / gpt->cfg.heads;
    tsr_split_t rows = gpt->oned ? N : R;
    tsr_mem_category_t A = TSR_MEM_ACTIVATIONS;
    gpt->act = desc(m, h, rows, gpt->oned ? N : C, t, 1, A);
    gpt->heads = desc(m, h, rows, C, t, hd, A);
    gpt->wide = desc(m, 4 * h, rows, C, t, 1, A);
    gpt->logits = desc(m, gpt->cfg.vocab, rows, C, t, 1, A);
    gpt->act.dtype = gpt->heads.dtype = gpt->wide.dtype = gpt->logits.dtype = gpt->dt;
}

/* The optimizer's flags for a block laid out as d: which tp ranks hold the same block. */
static unsigned replication_flags(const tsr_dmat_desc_t *d)
{
    int by_rows = d->row_split == TSR_SPLIT_GRID_ROWS || d->col_split == TSR_SPLIT_GRID_ROWS;
    int by_cols = d->row_split == TSR_SPLIT_GRID_COLS || d->col_split == TSR_SPLIT_GRID_COLS;
    unsigned f = d->rows == 1 ? TSR_ZERO_NO_DECAY : 0u;
    if (!by_rows && !by_cols)
        f |= TSR_ZERO_REPLICATED_TP;
    else if (!by_rows)
        f |= TSR_ZERO_REPLICATED_TP_COL;
    else if (!by_cols)
        f |= TSR_ZERO_REPLICATED_TP_ROW;
    return f;
}

/* ---------- parameters ---------- */

/* How a tensor starts: normal(0, std), or the constant value when std is 0. */
typedef struct init_rule {
    uint32_t id; /* the tensor's random stream */
    float std, value;
} init_rule_t;

static tsr_status_t init_tensor(tsr_gpt_t gpt, const gpt_tensor_t *t, init_rule_t rule)
{
    tsr_status_t rc = TSR_OK;
    tsr_zero_tensor_t td;
    tsr_zero_piece_t pc;
    float *host = NULL;
    TSR_TRY(tsr_zero_tensor_desc(gpt->zero, t->zid, &td));
    TSR_TRY(tsr_zero_piece(gpt->zero, t->zid, TSR_ZERO_PARAM, &pc));
    if (pc.end == pc.begin)
        goto cleanup;
    /* values are made on the host and copied to the optimizer's (device) memory */
    host = malloc((pc.end - pc.begin) * sizeof(float));
    TSR_CHECK(host, TSR_ERR_OUT_OF_MEMORY, "no memory to initialize tensor %s", td.name);
    uint64_t stream = tsr_rng_stream(rule.id, 0);
    for (size_t i = pc.begin; i < pc.end;) {
        size_t r = i / (size_t)td.local_cols, c = i % (size_t)td.local_cols;
        size_t run = (size_t)td.local_cols - c;
        if (run > pc.end - i)
            run = pc.end - i;
        float *dst = host + (i - pc.begin);
        if (rule.std > 0) {
            uint64_t g = (uint64_t)(td.row_off + (long)r) * (uint64_t)td.cols + (uint64_t)(td.col_off + (long)c);
            tsr_rng_fill_normal(gpt->opts.seed, stream, g, run, 0.0f, rule.std, dst);
        } else {
            for (size_t k = 0; k < run; k++)
                dst[k] = rule.value;
        }
        i += run;
    }
    TSR_TRY(tsr_device_copy(gpt->dev, pc.data, host, (pc.end - pc.begin) * sizeof(float), TSR_COPY_HOST_TO_DEVICE));
cleanup:
    free(host);
    return rc;
}

/* Register a tensor's block with the optimizer (the matrices over its memory come after the commit). */
static tsr_status_t add_tensor(tsr_gpt_t gpt, gpt_tensor_t *t, const char *name, tsr_dmat_desc_t d, int zlayer,
                               unsigned extra_flags)
{
    tsr_status_t rc = TSR_OK;
    tsr_dmat_view_t v;
    tsr_zero_tensor_t zt = TSR_ZERO_TENSOR_INIT;
    t->desc = d;
    TSR_TRY(tsr_tp_block(gpt->tp, &d, &v));
    zt.name = name;
    zt.rows = d.rows, zt.cols = d.cols;
    zt.row_off = v.row0, zt.col_off = v.col0;
    zt.local_rows = v.rows, zt.local_cols = v.cols;
    zt.layer = zlayer;
    zt.flags = replication_flags(&d) | extra_flags;
    TSR_TRY(tsr_zero_register(gpt->zero, &zt, &t->zid));
    t->zlayer = zlayer;
    gpt->local[gpt->nlocal++] = t;
cleanup:
    return rc;
}

static const char *const block_name[NBLOCK] = {"ln_1.w", "ln_1.b", "attn.q.w", "attn.q.b", "attn.k.w",
                                               "attn.k.b", "attn.v.w", "attn.v.b", "attn.proj.w",
                                               "attn.proj.b", "ln_2.w", "ln_2.b", "mlp.fc.w",
                                               "mlp.fc.b", "mlp.proj.w", "mlp.proj.b"};

/* Random stream ids: wte 0, wpe 1, block l parameter p 2 + l*NBLOCK + p, then lnf. */
static init_rule_t block_rule(tsr_gpt_t gpt, int l, int p)
{
    init_rule_t r = {(uint32_t)(2 + l * NBLOCK + p), 0.0f, 0.0f};
    if (p == LN1G || p == LN2G)
        r.value = 1.0f;
    else if (p == WQ || p == WK || p == WV || p == W1)
        r.std = 0.02f;
    else if (p == WO || p == W2)
        r.std = 0.02f / sqrtf(2.0f * (float)gpt->cfg.layers);
    return r;
}

static int first_stage(tsr_gpt_t gpt) { return gpt->at.pp == 0; }
static int last_stage(tsr_gpt_t gpt) { return gpt->at.pp == gpt->stages - 1; }

/* Whether block l lives on this rank's stage (in any of its chunks). */
static int block_here(tsr_gpt_t gpt, int l)
{
    for (int c = 0; c < gpt->chunks; c++) {
        int k = c * gpt->stages + gpt->at.pp;
        if (l >= gpt->bounds[k] && l < gpt->bounds[k + 1])
            return 1;
    }
    return 0;
}

static tsr_status_t build_tensors(tsr_gpt_t gpt)
{
    tsr_status_t rc = TSR_OK;
    const tsr_split_t N = TSR_SPLIT_NONE, R = TSR_SPLIT_GRID_ROWS, C = TSR_SPLIT_GRID_COLS;
    int L = gpt->cfg.layers, h = gpt->cfg.dim, o = gpt->oned;
    unsigned tied = gpt->stages > 1 ? TSR_ZERO_REPLICATED_PP : 0u;
    tsr_dmat_desc_t wte = desc(gpt->cfg.vocab, h, o ? C : R, o ? N : C, 1, 1, TSR_MEM_PARAMS);
    tsr_dmat_desc_t wpe = desc(gpt->cfg.seq, h, N, o ? N : C, 1, 1, TSR_MEM_PARAMS);
    tsr_dmat_desc_t lnf = block_param_desc(gpt, LN1G);
    char name[TSR_ZERO_NAME_MAX];
    if (first_stage(gpt)) {
        TSR_TRY(add_tensor(gpt, &gpt->wte, "wte", wte, gpt->wte_layer, tied));
        TSR_TRY(add_tensor(gpt, &gpt->wpe, "wpe", wpe, 0, 0));
    }
    for (int l = 0; l < L; l++) {
        if (!block_here(gpt, l))
            continue;
        for (int p = 0; p < NBLOCK; p++) {
            snprintf(name, sizeof name, "h%d.%s", l, block_name[p]);
            TSR_TRY(add_tensor(gpt, &gpt->block[l][p], name, block_param_desc(gpt, p), 1 + l, 0));
        }
    }
    if (last_stage(gpt)) {
        TSR_TRY(add_tensor(gpt, &gpt->lnfg, "ln_f.w", lnf, L + 1, 0));
        TSR_TRY(add_tensor(gpt, &gpt->lnfb, "ln_f.b", lnf, L + 1, 0));
        if (!first_stage(gpt))
            TSR_TRY(add_tensor(gpt, &gpt->wte, "wte", wte, gpt->wte_layer, tied));
    }
    TSR_TRY(tsr_zero_commit(gpt->zero));
    /* initial values, by the global index of every element */
    for (int i = 0; i < gpt->nlocal; i++) {
        gpt_tensor_t *t = gpt->local[i];
        init_rule_t rule = {0, 0.0f, 0.0f};
        if (t == &gpt->wte)
            rule.id = 0, rule.std = 0.02f;
        else if (t == &gpt->wpe)
            rule.id = 1, rule.std = 0.02f;
        else if (t == &gpt->lnfg)
            rule.id = (uint32_t)(2 + L * NBLOCK), rule.value = 1.0f;
        else if (t == &gpt->lnfb)
            rule.id = (uint32_t)(3 + L * NBLOCK);
        else
            rule = block_rule(gpt, (int)((t - &gpt->block[0][0]) / NBLOCK), (int)((t - &gpt->block[0][0]) % NBLOCK));
        TSR_TRY(init_tensor(gpt, t, rule));
    }
    TSR_TRY(tsr_zero_sync_params(gpt->zero));
cleanup:
    return rc;
}

/* Forward FLOPs per token of block l, with the head's output projection on the last one. */
static void block_costs(tsr_gpt_t gpt, double *cost)
{
    double h = gpt->cfg.dim, t = gpt->cfg.seq;
    for (int l = 0; l < gpt->cfg.layers; l++)
        cost[l] = 24.0 * h * h + 4.0 * t * h;
    cost[gpt->cfg.layers - 1] += 2.0 * h * gpt->cfg.vocab;
}

/* Activations, gradients and parameters on a GPU travel on the grid's communicators: put them
 * on dev unless the caller already did (tsr_grid_set_device(), say to insist on MPI). */
static tsr_status_t grid_on_device(tsr_grid_t grid, tsr_device_t dev)
{
    if (tsr_device_kind(dev) != TSR_DEVICE_CUDA)
        return TSR_OK;
    for (int a = 0; a < TSR_AXIS_COUNT; a++)
        if (tsr_comm_device(tsr_grid_comm(grid, (tsr_axis_t)a)) != dev)
            return tsr_grid_set_device(grid, dev, TSR_COMM_BACKEND_NCCL);
    return TSR_OK;
}

static tsr_status_t check_fit(tsr_gpt_t gpt, const tsr_zero_config_t *zcfg)
{
    const tsr_gpt_config_t *c = &gpt->cfg;
    const tsr_gpt_options_t *o = &gpt->opts;
    int vstages = gpt->stages * gpt->chunks;
    tsr_device_kind_t kind = tsr_device_kind(gpt->dev);
    if (c->heads % gpt->layout.tp_cols)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "%d attention heads are not divisible by the %d tp columns", c->heads,
                         gpt->layout.tp_cols);
    if (c->vocab < gpt->layout.tp_cols)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "a vocabulary of %d cannot be split over %d tp columns", c->vocab,
                         gpt->layout.tp_cols);
    if (c->layers < vstages)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "the model's %d layers cannot fill %d pipeline stages x %d chunks",
                         c->layers, gpt->stages, gpt->chunks);
    if (o->batch < 1 || o->micro_batches < 1 || o->batch % (gpt->layout.dp * o->micro_batches))
        return TSR_ERROR(TSR_ERR_INVALID_ARG,
                         "the batch of %d sequences must be a multiple of dp=%d x %d micro-batches", o->batch,
                         gpt->layout.dp, o->micro_batches);
    if (o->chunks < 1 || (o->chunks > 1 && o->schedule != TSR_PIPE_INTERLEAVED))
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "%d model chunks per stage need the interleaved schedule", o->chunks);
    if ((unsigned)o->recompute > TSR_GPT_RECOMPUTE_BLOCK)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "recomputation %d, expected none, attention or block", (int)o->recompute);
    int hd = c->dim / c->heads;
    if (kind == TSR_DEVICE_CUDA && hd != 16 && hd != 32 && hd != 64 && hd != 128)
        return TSR_ERROR(TSR_ERR_NOT_SUPPORTED,
                         "head size %d (dim %d / %d heads) is not one the GPU's attention runs: expected 16, 32, "
                         "64 or 128",
                         hd, c->dim, c->heads);
    if (zcfg->precision == TSR_PRECISION_FP16)
        return TSR_ERROR(TSR_ERR_NOT_SUPPORTED, "fp16 training is not built; use bf16 (on a GPU) or fp32");
    if (zcfg->precision == TSR_PRECISION_BF16 && kind != TSR_DEVICE_CUDA)
        return TSR_ERROR(TSR_ERR_NOT_SUPPORTED, "bf16 compute needs a CUDA device; the %s computes in fp32",
                         tsr_device_kind_name(kind));
    return TSR_OK;
}

/* Whether this rank's stage has W actions: then the weight gradients wait for them. */
static int schedule_splits_w(tsr_gpt_t gpt)
{
    size_t n = tsr_pipe_schedule_length(gpt->sched, gpt->at.pp);
    const tsr_pipe_action_t *a = tsr_pipe_schedule_actions(gpt->sched, gpt->at.pp);
    for (size_t i = 0; i < n; i++)
        if (a[i].op == TSR_PIPE_WEIGHT)
            return 1;
    return 0;
}

/* ---------- the matrices over the optimizer's memory ---------- */

static size_t local_elements(tsr_gpt_t gpt, const gpt_tensor_t *t)
{
    tsr_dmat_view_t v = {0};
    tsr_tp_block(gpt->tp, &t->desc, &v);
    return (size_t)v.rows * (size_t)v.cols;
}

/* t->w over p (fp32), or over the bf16 copy at `copy`. */
static tsr_status_t bind_params(tsr_gpt_t gpt, gpt_tensor_t *t, float *p, void *copy)
{
    tsr_dmat_desc_t d = t->desc;
    tsr_dmat_destroy(&t->w);
    if (!copy)
        return tsr_dmat_wrap(gpt->tp, &d, p, 0, &t->w);
    d.dtype = gpt->dt;
    return tsr_dmat_wrap(gpt->tp, &d, copy, 0, &t->w);
}

/* t->g over the optimizer's gradient view. */
static tsr_status_t bind_grads(tsr_gpt_t gpt, gpt_tensor_t *t)
{
    tsr_status_t rc = TSR_OK;
    tsr_dmat_desc_t d = t->desc;
    float *g = NULL;
    d.category = TSR_MEM_GRADS;
    tsr_dmat_destroy(&t->g);
    TSR_TRY(tsr_zero_view(gpt->zero, t->zid, NULL, &g));
    TSR_CHECK(g || local_elements(gpt, t) == 0, TSR_ERR_INTERNAL, "no gradient view for tensor %d", t->zid);
    TSR_TRY(tsr_dmat_wrap(gpt->tp, &d, g, 0, &t->g));
cleanup:
    return rc;
}

/* Stages 0-2: w over the parameter views (bf16: over one buffer of copies); stages 0-1: g
 * over the gradient views. The tied embedding's g is the model's own buffer. */
static tsr_status_t bind_tensors(tsr_gpt_t gpt)
{
    tsr_status_t rc = TSR_OK;
    size_t total = 0, off = 0;
    if (gpt->dt != TSR_DTYPE_F32 && gpt->stage < 3) {
        for (int i = 0; i < gpt->nlocal; i++)
            total += local_elements(gpt, gpt->local[i]);
        TSR_TRY(tsr_device_alloc(gpt->dev, TSR_MEM_PARAMS, total * gpt->dts, &gpt->wcopy));
    }
    for (int i = 0; i < gpt->nlocal; i++) {
        gpt_tensor_t *t = gpt->local[i];
        float *p = NULL;
        if (gpt->stage < 3) {
            TSR_TRY(tsr_zero_view(gpt->zero, t->zid, &p, NULL));
            TSR_TRY(bind_params(gpt, t, p, gpt->wcopy ? (char *)gpt->wcopy + off * gpt->dts : NULL));
            off += local_elements(gpt, t);
        }
        if (t == &gpt->wte)
            t->g = gpt->wte_grad;
        else if (gpt->stage < 2)
            TSR_TRY(bind_grads(gpt, t));
    }
cleanup:
    return rc;
}

/* Stages 0-2 in bf16: the step's compute copies, one cast per ZeRO layer (the tensors of a
 * layer are contiguous in the optimizer's buffer and in the copies). */
tsr_status_t tsr__gpt_load_params(tsr_gpt_t gpt)
{
    tsr_status_t rc = TSR_OK;
    for (int i = 0; i < gpt->nlocal && gpt->wcopy;) {
        int layer = gpt->local[i]->zlayer, j = i;
        size_t n = 0;
        float *p = NULL;
        tsr_dmat_view_t v;
        for (; j < gpt->nlocal && gpt->local[j]->zlayer == layer; j++)
            n += local_elements(gpt, gpt->local[j]);
        TSR_TRY(tsr_zero_view(gpt->zero, gpt->local[i]->zid, &p, NULL));
        tsr_dmat_local(gpt->local[i]->w, &v);
        TSR_TRY(tsr_kernel_cast(gpt->dev, TSR_DTYPE_F32, p, gpt->dt, v.data, n));
        i = j;
    }
cleanup:
    return rc;
}

tsr_status_t tsr__gpt_use_params(tsr_gpt_t gpt, int layer)
{
    tsr_status_t rc = TSR_OK;
    if (gpt->stage < 3)
        return TSR_OK;
    TSR_TRY(tsr_zero_gather(gpt->zero, layer));
    for (int i = 0; i < gpt->nlocal; i++) {
        gpt_tensor_t *t = gpt->local[i];
        float *p = NULL;
        if (t->zlayer != layer)
            continue;
        TSR_TRY(tsr_zero_view(gpt->zero, t->zid, &p, NULL));
        if (gpt->dt != TSR_DTYPE_F32) {
            size_t n = local_elements(gpt, t);
            TSR_TRY(tsr_device_alloc(gpt->dev, TSR_MEM_PARAMS, n * gpt->dts, &t->copy));
            TSR_TRY(tsr_kernel_cast(gpt->dev, TSR_DTYPE_F32, p, gpt->dt, t->copy, n));
        }
        TSR_TRY(bind_params(gpt, t, p, t->copy));
    }
cleanup:
    return rc;
}

void tsr__gpt_drop_params(tsr_gpt_t gpt, int layer)
{
    if (gpt->stage < 3)
        return;
    /* the gathered layer goes once the device has read it */
    if (tsr_device_kind(gpt->dev) != TSR_DEVICE_CPU)
        tsr_device_sync(gpt->dev);
    for (int i = 0; i < gpt->nlocal; i++)
        if (gpt->local[i]->zlayer == layer) {
            tsr_dmat_destroy(&gpt->local[i]->w);
            tsr_device_free(gpt->dev, &gpt->local[i]->copy);
        }
    tsr_zero_release(gpt->zero, layer);
}

tsr_status_t tsr__gpt_begin_grads(tsr_gpt_t gpt, int layer)
{
    tsr_status_t rc = TSR_OK;
    if (gpt->stage < 2)
        return TSR_OK;
    TSR_TRY(tsr_zero_grad_begin(gpt->zero, layer));
    for (int i = 0; i < gpt->nlocal; i++)
        if (gpt->local[i]->zlayer == layer && gpt->local[i] != &gpt->wte)
            TSR_TRY(bind_grads(gpt, gpt->local[i]));
cleanup:
    return rc;
}

tsr_status_t tsr__gpt_end_grads(tsr_gpt_t gpt, int layer)
{
    tsr_status_t rc = TSR_OK;
    /* Stages 0-1 reduce once the step's last micro-batch is through, so the reduction
     * overlaps the rest of the backward; stages 2-3 hand each micro-batch's over now. */
    if (gpt->stage < 2 && ++gpt->bwd_count[layer] < gpt->opts.micro_batches)
        return TSR_OK;
    if (gpt->stage < 2)
        TSR_TRY(tsr_zero_grad_begin(gpt->zero, layer));
    TSR_TRY(tsr_zero_grad_ready(gpt->zero, layer));
    for (int i = 0; i < gpt->nlocal && gpt->stage >= 2; i++)
        if (gpt->local[i]->zlayer == layer && gpt->local[i] != &gpt->wte)
            tsr_dmat_destroy(&gpt->local[i]->g);
cleanup:
    return rc;
}

/* ---------- creation ---------- */

tsr_status_t tsr_gpt_create(tsr_grid_t grid, tsr_device_t dev, const tsr_gpt_config_t *cfg,
                            const tsr_gpt_options_t *opts, const tsr_zero_config_t *zcfg, tsr_gpt_t *out)
{
    tsr_status_t rc = TSR_OK;
    tsr_gpt_t gpt = NULL;
    double *cost = NULL;
    TSR_CHECK(grid && dev && cfg && opts && zcfg && out, TSR_ERR_INVALID_ARG, "tsr_gpt_create: NULL argument");
    *out = NULL;
    TSR_CHECK(opts->struct_size == sizeof *opts, TSR_ERR_INVALID_ARG,
              "tsr_gpt_create: options not from TSR_GPT_OPTIONS_INIT (size %zu, expected %zu)", opts->struct_size,
              sizeof *opts);
    TSR_TRY(tsr_gpt_config_check(cfg));
    gpt = tsr__calloc(1, sizeof *gpt);
    TSR_CHECK(gpt, TSR_ERR_OUT_OF_MEMORY, "no memory for the model");
    gpt->cfg = *cfg;
    gpt->opts = *opts;
    gpt->grid = grid;
    gpt->dev = dev;
    tsr_grid_coords(grid, &gpt->at);
    tsr_grid_layout(grid, &gpt->layout);
    gpt->oned = gpt->layout.tp_rows == 1;
    gpt->stages = gpt->layout.pp;
    gpt->chunks = opts->chunks;
    gpt->stage = zcfg->stage;
    gpt->wte_layer = cfg->layers + 2;
    TSR_TRY(check_fit(gpt, zcfg));
    gpt->dt = zcfg->precision == TSR_PRECISION_BF16 ? TSR_DTYPE_BF16 : TSR_DTYPE_F32;
    gpt->dts = tsr_dtype_size(gpt->dt);
    gpt->seqs = opts->batch / gpt->layout.dp;
    gpt->mb_seqs = gpt->seqs / opts->micro_batches;
    TSR_TRY(tsr_pipe_schedule_create(opts->schedule, gpt->stages, opts->micro_batches, gpt->chunks, &gpt->sched));
    gpt->split_w = schedule_splits_w(gpt);
    int vstages = gpt->stages * gpt->chunks, L = cfg->layers;
    gpt->bounds = tsr__calloc((size_t)vstages + 1, sizeof *gpt->bounds);
    cost = tsr__calloc((size_t)L, sizeof *cost);
    gpt->block = tsr__calloc((size_t)L, sizeof *gpt->block);
    gpt->local = tsr__calloc((size_t)L * NBLOCK + 5, sizeof *gpt->local);
    gpt->bwd_count = tsr__calloc((size_t)gpt->wte_layer + 1, sizeof *gpt->bwd_count);
    TSR_CHECK(gpt->bounds && cost && gpt->block && gpt->local && gpt->bwd_count, TSR_ERR_OUT_OF_MEMORY,
              "no memory for the model's tables");
    block_costs(gpt, cost);
    TSR_TRY(tsr_pipe_partition(cost, L, vstages, gpt->bounds, NULL));
    TSR_TRY(grid_on_device(grid, dev));
    TSR_TRY(tsr_tp_create(grid, dev, &gpt->tp));
    tsr_zero_config_t zc = *zcfg;
    zc.micro_batches = 1; /* the model hands each layer's gradient over once per step */
    TSR_TRY(tsr_zero_create(grid, dev, &zc, &gpt->zero));
    activation_descs(gpt);
    TSR_TRY(build_tensors(gpt));
    if (first_stage(gpt) || last_stage(gpt)) {
        tsr_dmat_desc_t d = gpt->wte.desc;
        d.category = TSR_MEM_GRADS;
        TSR_TRY(tsr_dmat_create(gpt->tp, &d, &gpt->wte_grad));
    }
    TSR_TRY(bind_tensors(gpt));
    TSR_TRY(tsr__gpt_stage_create(gpt));
    *out = gpt;
    gpt = NULL;
cleanup:
    free(cost);
    tsr_gpt_destroy(&gpt);
    return rc;
}

void tsr_gpt_destroy(tsr_gpt_t *gpt)
{
    if (!gpt || !*gpt)
        return;
    tsr_gpt_t g = *gpt;
    tsr_gpt_infer_destroy(&g->eval);
    tsr__gpt_stage_destroy(g);
    for (int i = 0; i < g->nlocal; i++) {
        gpt_tensor_t *t = g->local[i];
        tsr_dmat_destroy(&t->w);
        if (t != &g->wte)
            tsr_dmat_destroy(&t->g);
        tsr_device_free(g->dev, &t->copy);
    }
    tsr_dmat_destroy(&g->wte_grad);
    tsr_device_free(g->dev, &g->wcopy);
    tsr_zero_destroy(&g->zero);
    tsr_tp_destroy(&g->tp);
    tsr_pipe_schedule_destroy(&g->sched);
    free(g->bounds);
    free(g->block);
    free(g->local);
    free(g->bwd_count);
    free(g);
    *gpt = NULL;
}

tsr_zero_t tsr_gpt_optimizer(tsr_gpt_t gpt) { return gpt ? gpt->zero : NULL; }

/* The index of local tensor t in tsr_gpt_tensor_info()'s order. */
static int tensor_index(tsr_gpt_t gpt, const gpt_tensor_t *t)
{
    int L = gpt->cfg.layers;
    if (t == &gpt->wte)
        return 0;
    if (t == &gpt->wpe)
        return 1;
    if (t == &gpt->lnfg)
        return 2 + L * NBLOCK;
    if (t == &gpt->lnfb)
        return 3 + L * NBLOCK;
    return 2 + (int)(t - &gpt->block[0][0]);
}

tsr_status_t tsr_gpt_set_params(tsr_gpt_t gpt, const float *params)
{
    tsr_status_t rc = TSR_OK;
    int n = 0;
    int64_t *off = NULL;
    float *host = NULL;
    TSR_CHECK(gpt && params, TSR_ERR_INVALID_ARG, "tsr_gpt_set_params: NULL argument");
    n = tsr_gpt_tensor_count(&gpt->cfg);
    off = tsr__calloc((size_t)n + 1, sizeof *off);
    TSR_CHECK(off, TSR_ERR_OUT_OF_MEMORY, "no memory for the model's tensor offsets");
    for (int i = 0; i < n; i++) {
        char name[TSR_ZERO_NAME_MAX];
        int64_t rows, cols;
        TSR_TRY(tsr_gpt_tensor_info(&gpt->cfg, i, name, sizeof name, &rows, &cols));
        off[i + 1] = off[i] + rows * cols;
    }
    for (int i = 0; i < gpt->nlocal; i++) {
        const gpt_tensor_t *t = gpt->local[i];
        tsr_zero_tensor_t td;
        tsr_zero_piece_t pc;
        TSR_TRY(tsr_zero_tensor_desc(gpt->zero, t->zid, &td));
        TSR_TRY(tsr_zero_piece(gpt->zero, t->zid, TSR_ZERO_PARAM, &pc));
        if (pc.end == pc.begin)
            continue;
        /* local element k is global element (row_off + k / local_cols, col_off + k % local_cols) */
        float *grown = realloc(host, (pc.end - pc.begin) * sizeof *host);
        TSR_CHECK(grown, TSR_ERR_OUT_OF_MEMORY, "no memory to set tensor %s", td.name);
        host = grown;
        const float *src = params + off[tensor_index(gpt, t)];
        for (size_t k = pc.begin; k < pc.end; k++) {
            size_t r = (size_t)td.row_off + k / (size_t)td.local_cols, c = (size_t)td.col_off + k % (size_t)td.local_cols;
            host[k - pc.begin] = src[r * (size_t)td.cols + c];
        }
        TSR_TRY(tsr_device_copy(gpt->dev, pc.data, host, (pc.end - pc.begin) * sizeof *host,
                                TSR_COPY_HOST_TO_DEVICE));
    }
    TSR_TRY(tsr_zero_sync_params(gpt->zero));
cleanup:
    free(host);
    free(off);
    return rc;
}

void tsr_gpt_batch_slice(tsr_gpt_t gpt, int *first, int *count)
{
    *first = gpt->at.dp * gpt->seqs;
    *count = gpt->seqs;
}

void tsr_gpt_set_trace(tsr_gpt_t gpt, tsr_pipe_trace_t trace) { gpt->trace = trace; }

int tsr_gpt_stage_blocks(tsr_gpt_t gpt, int k, int *stage, int *first, int *end)
{
    if (k < 0 || k >= gpt->stages * gpt->chunks)
        return -1;
    *stage = k % gpt->stages;
    *first = gpt->bounds[k];
    *end = gpt->bounds[k + 1];
    return 0;
}

/* ---------- the step ---------- */

/* First and last stage both hold the tied embedding: each adds the other's gradient. */
static tsr_status_t sum_tied(tsr_gpt_t gpt)
{
    tsr_status_t rc = TSR_OK;
    tsr_request_t req = NULL;
    float *theirs = NULL;
    tsr_dmat_view_t v;
    if (gpt->stages == 1 || !(first_stage(gpt) || last_stage(gpt)))
        return TSR_OK;
    tsr_comm_t pp = tsr_grid_comm(gpt->grid, TSR_AXIS_PP);
    int peer = first_stage(gpt) ? gpt->stages - 1 : 0;
    tsr_dmat_local(gpt->wte_grad, &v);
    size_t n = (size_t)v.rows * (size_t)v.cols;
    TSR_TRY(tsr_device_alloc(gpt->dev, TSR_MEM_COMM, n * sizeof(float), (void **)&theirs));
    /* NCCL runs a rank's send and receive in turn, as posted: there the last stage receives
     * first. MPI lets both directions move at once. */
    int recv_first = last_stage(gpt) && tsr_comm_backend(pp) == TSR_COMM_BACKEND_NCCL;
    if (recv_first)
        TSR_TRY(tsr_comm_recv(pp, theirs, n, TSR_DTYPE_F32, peer, TIE_TAG));
    TSR_TRY(tsr_comm_isend(pp, v.data, n, TSR_DTYPE_F32, peer, TIE_TAG, &req));
    if (!recv_first)
        TSR_TRY(tsr_comm_recv(pp, theirs, n, TSR_DTYPE_F32, peer, TIE_TAG));
    TSR_TRY(tsr_request_wait(&req));
    TSR_TRY(tsr_kernel_axpy(gpt->dev, n, 1.0f, theirs, v.data));
cleanup:
    if (req)
        tsr_request_wait(&req);
    tsr_device_free(gpt->dev, (void **)&theirs);
    return rc;
}

/* The tied embedding's gradient to the optimizer (after sum_tied). */
static tsr_status_t push_wte(tsr_gpt_t gpt)
{
    tsr_status_t rc = TSR_OK;
    float *view = NULL;
    tsr_dmat_view_t v;
    if (!gpt->wte_grad)
        return TSR_OK;
    tsr_dmat_local(gpt->wte_grad, &v);
    TSR_TRY(tsr_zero_grad_begin(gpt->zero, gpt->wte_layer));
    TSR_TRY(tsr_zero_view(gpt->zero, gpt->wte.zid, NULL, &view));
    TSR_TRY(tsr_kernel_axpy(gpt->dev, (size_t)v.rows * (size_t)v.cols, 1.0f, v.data, view));
    TSR_TRY(tsr_zero_grad_ready(gpt->zero, gpt->wte_layer));
cleanup:
    return rc;
}

/* The mean loss over the global batch (with parameter servers: over this replica's share,
 * which the servers average over the replicas), on every rank: on the last stage, tp column 0
 * of each grid row adds its rows' token losses (summed once per step, not per micro-batch). */
static tsr_status_t reduce_loss(tsr_gpt_t gpt, double *loss)
{
    tsr_status_t rc = TSR_OK;
    double mine = 0.0;
    tsr_comm_t world = tsr_grid_comm(gpt->grid, TSR_AXIS_WORLD);
    /* the replicas in the world: dp, or with parameter servers the rank's own replica alone */
    int replicas = tsr_comm_size(world) / (gpt->stages * gpt->layout.tp_rows * gpt->layout.tp_cols);
    if (last_stage(gpt) && gpt->at.tp_col == 0 && gpt->rows > 0) {
        TSR_TRY(tsr_kernel_sum(gpt->dev, gpt->losses, (size_t)gpt->rows * (size_t)gpt->opts.micro_batches, &mine));
        mine /= (double)gpt->seqs * (double)replicas * (double)gpt->cfg.seq;
    }
    *loss = mine;
    TSR_TRY(tsr_comm_allreduce(world, TSR_IN_PLACE, loss, 1, TSR_DTYPE_F64, TSR_REDUCE_SUM));
cleanup:
    return rc;
}

tsr_status_t tsr_gpt_train_step(tsr_gpt_t gpt, const int32_t *inputs, const int32_t *targets,
                                tsr_gpt_step_info_t *info)
{
    TSR__REGION(NULL, TSR_PROF_STEP, "train step", NULL);
    tsr_status_t rc = TSR_OK;
    tsr_pipe_stage_t stage = TSR_PIPE_STAGE_INIT;
    tsr_pipe_exec_config_t exec = TSR_PIPE_EXEC_INIT;
    tsr_zero_step_info_t zi;
    double loss = 0.0;
    size_t ntok;
    TSR_CHECK(gpt && inputs && targets, TSR_ERR_INVALID_ARG, "tsr_gpt_train_step: NULL argument");
    ntok = (size_t)gpt->seqs * gpt->cfg.seq;
    for (size_t i = 0; i < ntok; i++)
        TSR_CHECK(inputs[i] >= 0 && inputs[i] < gpt->cfg.vocab && targets[i] >= 0 && targets[i] < gpt->cfg.vocab,
                  TSR_ERR_INVALID_ARG, "token id %d at position %zu is not below the vocabulary size %d",
                  inputs[i] < 0 || inputs[i] >= gpt->cfg.vocab ? inputs[i] : targets[i], i, gpt->cfg.vocab);
    TSR_TRY(tsr_device_copy(gpt->dev, gpt->d_inputs, inputs, ntok * sizeof(int32_t), TSR_COPY_HOST_TO_DEVICE));
    TSR_TRY(tsr_device_copy(gpt->dev, gpt->d_targets, targets, ntok * sizeof(int32_t), TSR_COPY_HOST_TO_DEVICE));
    TSR_TRY(tsr__gpt_load_params(gpt));
    memset(gpt->bwd_count, 0, ((size_t)gpt->wte_layer + 1) * sizeof *gpt->bwd_count);
    if (gpt->wte_grad)
        TSR_TRY(tsr_dmat_zero(gpt->wte_grad));
    exec.poll_us = gpt->opts.poll_us;
    tsr__gpt_stage_callbacks(gpt, &stage);
    TSR_TRY(tsr_pipe_execute(gpt->sched, tsr_grid_comm(gpt->grid, TSR_AXIS_PP), gpt->dev, &stage, &exec,
                             gpt->trace));
    TSR_TRY(sum_tied(gpt));
    TSR_TRY(push_wte(gpt));
    TSR_TRY(reduce_loss(gpt, &loss));
    tsr__zero_set_loss(gpt->zero, loss);
    TSR_TRY(tsr_zero_step(gpt->zero, &zi));
    loss = tsr__zero_loss(gpt->zero); /* with parameter servers: the round's mean */
    if (info) {
        info->loss = loss;
        info->grad_norm = zi.grad_norm;
        info->lr = zi.lr;
        info->step = zi.step;
    }
cleanup:
    if (gpt)
        tsr__gpt_release_slots(gpt);
    return rc;
}
