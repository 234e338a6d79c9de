/*
 * gpt.c: the GPT model's parameters (layouts, registration with the optimizer, initial
 * values), its pipeline stage callbacks and the training step.
 *
 * The model keeps a compute copy of each of its parameter blocks and a gradient block
 * summed over a step's micro-batches (tp operations take distributed matrices, which own
 * their memory). A step copies the optimizer's parameter views into the compute copies
 * (gathering each layer in ZeRO stage 3), runs the pipeline schedule, sums the tied
 * embedding's gradient between the first and the last stage, adds each layer's gradient
 * into the optimizer's gradient view (grad_begin / grad_ready, one layer at a time) and
 * steps the optimizer.
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

/* Create a tensor's blocks and register it with the optimizer. */
static tsr_status_t add_tensor(tsr_gpt_t gpt, gpt_tensor_t *t, const char *name, tsr_dmat_desc_t d, int zlayer,
                               unsigned extra_flags)
{
    tsr_status_t rc = TSR_OK;
    tsr_dmat_view_t v = {NULL, d.rows, d.cols, d.cols, 0, 0}; /* the kernels path: whole tensors */
    tsr_zero_tensor_t zt = TSR_ZERO_TENSOR_INIT;
    t->desc = d;
    if (!gpt->kernels) {
        TSR_TRY(tsr_dmat_create(gpt->tp, &d, &t->w));
        TSR_TRY(tsr_dmat_create_like(t->w, TSR_MEM_GRADS, &t->g));
        tsr_dmat_local(t->w, &v);
    }
    zt.name = name;
    zt.rows = d.rows, zt.cols = d.cols;
    zt.row_off = v.row0, zt.col_off = v.col0;
    zt.local_rows = v.rows, zt.local_cols = v.cols;
    zt.layer = zlayer;
    zt.flags = replication_flags(&d) | extra_flags;
    TSR_TRY(tsr_zero_register(gpt->zero, &zt, &t->zid));
    t->zlayer = zlayer;
    gpt->local[gpt->nlocal++] = t;
    if (gpt->stage == 3)
        tsr_dmat_destroy(&t->w);
    if (gpt->stage >= 2 && zlayer != gpt->wte_layer)
        tsr_dmat_destroy(&t->g);
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

/* ---------- creation ---------- */

/* Forward FLOPs per token of block l, with the head's output projection on the last one. */
static void block_costs(tsr_gpt_t gpt, double *cost)
{
    double h = gpt->cfg.dim, t = gpt->cfg.seq;
    for (int l = 0; l < gpt->cfg.layers; l++)
        cost[l] = 24.0 * h * h + 4.0 * t * h;
    cost[gpt->cfg.layers - 1] += 2.0 * h * gpt->cfg.vocab;
}

static tsr_status_t check_fit(tsr_gpt_t gpt)
{
    const tsr_gpt_config_t *c = &gpt->cfg;
    const tsr_gpt_options_t *o = &gpt->opts;
    int vstages = gpt->stages * gpt->chunks;
    if (c->heads % gpt->layout.tp_cols)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "%d attention heads are not divisible by the %d tp columns", c->heads,
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
    return TSR_OK;
}

/* The kernels path on a GPU (or when asked for), the tp operations otherwise; see model.h. */
static tsr_status_t choose_compute(tsr_gpt_t gpt, const tsr_zero_config_t *zcfg)
{
    tsr_device_kind_t kind = tsr_device_kind(gpt->dev);
    tsr_gpt_compute_t c = gpt->opts.struct_size >= sizeof(tsr_gpt_options_t) ? gpt->opts.compute : TSR_GPT_COMPUTE_AUTO;
    if (c == TSR_GPT_COMPUTE_AUTO)
        c = kind == TSR_DEVICE_CPU ? TSR_GPT_COMPUTE_TP : TSR_GPT_COMPUTE_KERNELS;
    if (c == TSR_GPT_COMPUTE_TP && kind != TSR_DEVICE_CPU)
        return TSR_ERROR(TSR_ERR_NOT_SUPPORTED, "the tp operations compute on the CPU, not on %s; on a GPU the "
                         "model uses the device kernels", tsr_device_kind_name(kind));
    if (c != TSR_GPT_COMPUTE_KERNELS)
        return TSR_OK;
    if (gpt->layout.tp_rows * gpt->layout.tp_cols != 1)
        return TSR_ERROR(TSR_ERR_NOT_SUPPORTED, "the device-kernel model (used on %s) needs a 1x1 tp grid, got "
                         "tp=%dx%d; use dp and pp", tsr_device_kind_name(kind), gpt->layout.tp_rows,
                         gpt->layout.tp_cols);
    if (kind != TSR_DEVICE_CPU && zcfg->precision == TSR_PRECISION_FP16)
        return TSR_ERROR(TSR_ERR_NOT_SUPPORTED, "fp16 training on %s is not built; use bf16 or fp32",
                         tsr_device_kind_name(kind));
    gpt->kernels = 1;
    gpt->dt = kind != TSR_DEVICE_CPU && zcfg->precision == TSR_PRECISION_BF16 ? TSR_DTYPE_BF16 : TSR_DTYPE_F32;
    gpt->dts = tsr_dtype_size(gpt->dt);
    return TSR_OK;
}

static tsr_status_t alloc_scratch(tsr_gpt_t gpt)
{
    tsr_status_t rc = TSR_OK;
    struct { tsr_dmat_t *m; const tsr_dmat_desc_t *d; } s[] = {
        {&gpt->d_x[0], &gpt->act}, {&gpt->d_x[1], &gpt->act}, {&gpt->d_a, &gpt->act}, {&gpt->d_x1, &gpt->act},
        {&gpt->d_b, &gpt->act}, {&gpt->d_y, &gpt->act}, {&gpt->proj, &gpt->act}, {&gpt->d_o, &gpt->heads},
        {&gpt->d_q, &gpt->heads}, {&gpt->d_k, &gpt->heads}, {&gpt->d_v, &gpt->heads}, {&gpt->d_h, &gpt->wide},
        {&gpt->d_g, &gpt->wide}, {&gpt->d_logits, &gpt->logits}};
    for (size_t i = 0; i < sizeof s / sizeof *s; i++)
        TSR_TRY(tsr_dmat_create(gpt->tp, s[i].d, s[i].m));
cleanup:
    return rc;
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

tsr_status_t tsr_gpt_create(tsr_grid_t grid, tsr_device_t dev, const tsr_gpt_config_t *cfg,
                            const tsr_gpt_options_t *opts, const tsr_zero_config_t *zcfg, tsr_gpt_t *out)
{
    tsr_status_t rc = TSR_OK;
    tsr_gpt_t gpt = NULL;
    double *cost = NULL;
    TSR_CHECK(grid && dev && cfg && opts && zcfg && out, TSR_ERR_INVALID_ARG, "tsr_gpt_create: NULL argument");
    *out = NULL;
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
    TSR_TRY(choose_compute(gpt, zcfg));
    TSR_TRY(check_fit(gpt));
    gpt->seqs = opts->batch / gpt->layout.dp;
    gpt->mb_seqs = gpt->seqs / opts->micro_batches;
    TSR_TRY(tsr_pipe_schedule_create(opts->schedule, gpt->stages, opts->micro_batches, gpt->chunks, &gpt->sched));
    int vstages = gpt->stages * gpt->chunks, L = cfg->layers;
    gpt->bounds = tsr__calloc((size_t)vstages + 1, sizeof *gpt->bounds);
    cost = tsr__calloc((size_t)L, sizeof *cost);
    gpt->block = tsr__calloc((size_t)L, sizeof *gpt->block);
    gpt->local = tsr__calloc((size_t)L * NBLOCK + 5, sizeof *gpt->local);
    gpt->bact = tsr__calloc((size_t)opts->micro_batches * L, sizeof *gpt->bact);
    gpt->hact = tsr__calloc((size_t)opts->micro_batches, sizeof *gpt->hact);
    TSR_CHECK(gpt->bounds && cost && gpt->block && gpt->local && gpt->bact && gpt->hact, TSR_ERR_OUT_OF_MEMORY,
              "no memory for the model's tables");
    block_costs(gpt, cost);
    TSR_TRY(tsr_pipe_partition(cost, L, vstages, gpt->bounds, NULL));
    if (!gpt->kernels)
        TSR_TRY(tsr_tp_create(grid, dev, &gpt->tp));
    TSR_TRY(grid_on_device(grid, dev));
    tsr_zero_config_t zc = *zcfg;
    zc.micro_batches = 1; /* the model hands each layer's gradient over once per step */
    TSR_TRY(tsr_zero_create(grid, dev, &zc, &gpt->zero));
    if (gpt->kernels) {
        TSR_TRY(build_tensors(gpt));
        TSR_TRY(tsr__engine_create(gpt));
        goto done;
    }
    activation_descs(gpt);
    TSR_TRY(build_tensors(gpt));
    TSR_TRY(alloc_scratch(gpt));
    if (gpt->stages > 1 && (first_stage(gpt) || last_stage(gpt))) {
        tsr_dmat_view_t v;
        tsr_dmat_local(gpt->wte.g, &v);
        TSR_TRY(tsr_device_alloc(dev, TSR_MEM_COMM, (size_t)v.rows * v.cols * sizeof(float) + sizeof(float),
                                 (void **)&gpt->tie_buf));
    }
done:
    *out = gpt;
    gpt = NULL;
cleanup:
    free(cost);
    tsr_gpt_destroy(&gpt);
    return rc;
}

static void free_tensor(gpt_tensor_t *t)
{
    tsr_dmat_destroy(&t->w);
    tsr_dmat_destroy(&t->g);
}

void tsr_gpt_destroy(tsr_gpt_t *gpt)
{
    if (!gpt || !*gpt)
        return;
    tsr_gpt_t g = *gpt;
    if (g->kernels)
        tsr__engine_destroy(g);
    if (g->bact && g->hact)
        for (int mb = 0; mb < g->opts.micro_batches; mb++)
            tsr__gpt_free_acts(g, mb);
    for (int i = 0; i < g->nlocal; i++)
        free_tensor(g->local[i]);
    tsr_dmat_t *s[] = {&g->d_x[0], &g->d_x[1], &g->d_a, &g->d_x1, &g->d_b, &g->d_y, &g->proj, &g->d_o,
                       &g->d_q, &g->d_k, &g->d_v, &g->d_h, &g->d_g, &g->d_logits};
    for (size_t i = 0; i < sizeof s / sizeof *s; i++)
        tsr_dmat_destroy(s[i]);
    if (g->tie_buf)
        tsr_device_free(g->dev, (void **)&g->tie_buf);
    tsr_zero_destroy(&g->zero);
    tsr_tp_destroy(&g->tp);
    tsr_pipe_schedule_destroy(&g->sched);
    free(g->bounds);
    free(g->block);
    free(g->local);
    free(g->bact);
    free(g->hact);
    free(g);
    *gpt = NULL;
}

tsr_zero_t tsr_gpt_optimizer(tsr_gpt_t gpt) { return gpt ? gpt->zero : NULL; }

void tsr_gpt_batch_slice(tsr_gpt_t gpt, int *first, int *count)
{
    *first = gpt->at.dp * gpt->seqs;
    *count = gpt->seqs;
}

tsr_gpt_compute_t tsr_gpt_compute_used(tsr_gpt_t gpt)
{
    return gpt->kernels ? TSR_GPT_COMPUTE_KERNELS : TSR_GPT_COMPUTE_TP;
}

void tsr_gpt_set_trace(tsr_gpt_t gpt, tsr_pipe_trace_t trace) { gpt->trace = trace; }

/* ---------- pipeline stage callbacks ---------- */

static void copy_block(tsr_dmat_t m, void *buf, int to_buf)
{
    tsr_dmat_view_t v;
    tsr_dmat_local(m, &v);
    float *b = buf;
    for (int i = 0; i < v.rows; i++) {
        float *row = v.data + (size_t)i * v.ld;
        if (to_buf)
            memcpy(b + (size_t)i * v.cols, row, (size_t)v.cols * sizeof(float));
        else
            memcpy(row, b + (size_t)i * v.cols, (size_t)v.cols * sizeof(float));
    }
}

static size_t stage_buffer_bytes(void *ctx, int chunk, tsr_pipe_side_t side)
{
    tsr_gpt_t gpt = ctx;
    tsr_dmat_view_t v;
    (void)chunk, (void)side;
    tsr_dmat_local(gpt->d_x[0], &v);
    return (size_t)v.rows * v.cols * sizeof(float);
}

static int vstage(tsr_gpt_t gpt, int chunk) { return chunk * gpt->stages + gpt->at.pp; }

static tsr_status_t stage_forward(void *ctx, int chunk, int mb, const void *in, void *out)
{
    tsr_status_t rc = TSR_OK;
    tsr_gpt_t gpt = ctx;
    tsr_dmat_t cur = NULL, next = NULL;
    int k = vstage(gpt, chunk), last = gpt->stages * gpt->chunks - 1;
    TSR_TRY(tsr_dmat_create(gpt->tp, &gpt->act, &cur));
    if (k == 0) {
        TSR_TRY(tsr__gpt_use_params(gpt, 0));
        TSR_TRY(tsr__gpt_use_params(gpt, gpt->wte_layer));
        TSR_TRY(tsr_tp_embedding_forward(gpt->tp, gpt->inputs + (size_t)mb * gpt->mb_seqs * gpt->cfg.seq,
                                         gpt->cfg.seq, gpt->wte.w, gpt->wpe.w, cur));
        tsr__gpt_drop_params(gpt, 0);
        tsr__gpt_drop_params(gpt, gpt->wte_layer);
    } else {
        copy_block(cur, (void *)in, 0);
    }
    for (int l = gpt->bounds[k]; l < gpt->bounds[k + 1]; l++) {
        tsr_dmat_t x = cur;
        cur = NULL; /* the block owns its input from here on */
        TSR_TRY(tsr__gpt_use_params(gpt, 1 + l));
        TSR_TRY(tsr__gpt_block_forward(gpt, l, mb, x, &next));
        tsr__gpt_drop_params(gpt, 1 + l);
        cur = next;
        next = NULL;
    }
    if (k == last) {
        float loss = 0.0f;
        tsr_dmat_t x = cur;
        cur = NULL;
        TSR_TRY(tsr__gpt_use_params(gpt, gpt->cfg.layers + 1));
        TSR_TRY(tsr__gpt_use_params(gpt, gpt->wte_layer));
        TSR_TRY(tsr__gpt_head_forward(gpt, mb, x, &loss));
        tsr__gpt_drop_params(gpt, gpt->cfg.layers + 1);
        tsr__gpt_drop_params(gpt, gpt->wte_layer);
        gpt->loss_sum += loss;
    } else {
        copy_block(cur, out, 1);
    }
cleanup:
    tsr_dmat_destroy(&cur);
    return rc;
}

static tsr_status_t stage_backward(void *ctx, int chunk, int mb, const void *in, const void *grad_out,
                                   void *grad_in)
{
    tsr_status_t rc = TSR_OK;
    tsr_gpt_t gpt = ctx;
    int k = vstage(gpt, chunk), last = gpt->stages * gpt->chunks - 1, cur = 0;
    int head = gpt->cfg.layers + 1;
    (void)in;
    if (k == last) {
        TSR_TRY(tsr__gpt_use_params(gpt, head));
        TSR_TRY(tsr__gpt_use_params(gpt, gpt->wte_layer));
        TSR_TRY(tsr__gpt_begin_grads(gpt, head));
        TSR_TRY(tsr__gpt_head_backward(gpt, mb, 1.0f / (float)gpt->opts.micro_batches, gpt->d_x[0]));
        TSR_TRY(tsr__gpt_hand_over_grads(gpt, head));
        tsr__gpt_drop_params(gpt, head);
        tsr__gpt_drop_params(gpt, gpt->wte_layer);
    } else {
        copy_block(gpt->d_x[0], (void *)grad_out, 0);
    }
    for (int l = gpt->bounds[k + 1] - 1; l >= gpt->bounds[k]; l--, cur ^= 1) {
        TSR_TRY(tsr__gpt_use_params(gpt, 1 + l));
        TSR_TRY(tsr__gpt_begin_grads(gpt, 1 + l));
        TSR_TRY(tsr__gpt_block_backward(gpt, l, mb, gpt->d_x[cur], gpt->d_x[cur ^ 1]));
        TSR_TRY(tsr__gpt_hand_over_grads(gpt, 1 + l));
        tsr__gpt_drop_params(gpt, 1 + l);
    }
    if (k == 0) {
        TSR_TRY(tsr__gpt_begin_grads(gpt, 0));
        TSR_TRY(tsr_tp_embedding_backward(gpt->tp, gpt->inputs + (size_t)mb * gpt->mb_seqs * gpt->cfg.seq,
                                          gpt->cfg.seq, gpt->d_x[cur], gpt->wte.g, gpt->wpe.g));
        TSR_TRY(tsr__gpt_hand_over_grads(gpt, 0));
    } else {
        copy_block(gpt->d_x[cur], grad_in, 1);
    }
cleanup:
    return rc;
}

/* The backward computes the weight gradients too, so ZB-H1's W actions have nothing left. */
static tsr_status_t stage_weight_grad(void *ctx, int chunk, int mb, const void *in, const void *grad_out)
{
    (void)ctx, (void)chunk, (void)mb, (void)in, (void)grad_out;
    return TSR_OK;
}

/* ---------- parameters and gradients as the schedule needs them ---------- */

static void view_copy(gpt_tensor_t *t, float *view, int to_view, int add);

tsr_status_t tsr__gpt_use_params(tsr_gpt_t gpt, int layer)
{
    tsr_status_t rc = TSR_OK;
    if (gpt->stage < 3)
        return TSR_OK;
    TSR_TRY(tsr_zero_gather(gpt->zero, layer));
    for (int i = 0; i < gpt->nlocal; i++) {
        gpt_tensor_t *t = gpt->local[i];
        float *p = NULL, *g = NULL;
        if (t->zlayer != layer)
            continue;
        if (!t->w)
            TSR_TRY(tsr_dmat_create(gpt->tp, &t->desc, &t->w));
        TSR_TRY(tsr_zero_view(gpt->zero, t->zid, &p, &g));
        if (p)
            view_copy(t, p, 0, 0);
    }
    TSR_TRY(tsr_zero_release(gpt->zero, layer));
cleanup:
    return rc;
}

void tsr__gpt_drop_params(tsr_gpt_t gpt, int layer)
{
    for (int i = 0; i < gpt->nlocal && gpt->stage == 3; i++)
        if (gpt->local[i]->zlayer == layer)
            tsr_dmat_destroy(&gpt->local[i]->w);
}

tsr_status_t tsr__gpt_begin_grads(tsr_gpt_t gpt, int layer)
{
    tsr_status_t rc = TSR_OK;
    for (int i = 0; i < gpt->nlocal && gpt->stage >= 2; i++) {
        gpt_tensor_t *t = gpt->local[i];
        tsr_dmat_desc_t d = t->desc;
        d.category = TSR_MEM_GRADS;
        if (t->zlayer == layer && !t->g)
            TSR_TRY(tsr_dmat_create(gpt->tp, &d, &t->g));
    }
cleanup:
    return rc;
}

tsr_status_t tsr__gpt_hand_over_grads(tsr_gpt_t gpt, int layer)
{
    tsr_status_t rc = TSR_OK;
    if (gpt->stage < 2)
        return TSR_OK;
    TSR_TRY(tsr_zero_grad_begin(gpt->zero, layer));
    for (int i = 0; i < gpt->nlocal; i++) {
        gpt_tensor_t *t = gpt->local[i];
        float *p = NULL, *g = NULL;
        if (t->zlayer != layer)
            continue;
        TSR_TRY(tsr_zero_view(gpt->zero, t->zid, &p, &g));
        if (g)
            view_copy(t, g, 1, 1);
        tsr_dmat_destroy(&t->g);
    }
    TSR_TRY(tsr_zero_grad_ready(gpt->zero, layer));
cleanup:
    return rc;
}

/* ---------- the step ---------- */

/* Copy between the optimizer's view of a tensor (contiguous local block) and its dmat. */
static void view_copy(gpt_tensor_t *t, float *view, int to_view, int add)
{
    tsr_dmat_view_t v;
    tsr_dmat_local(to_view ? t->g : t->w, &v);
    for (int i = 0; i < v.rows; i++) {
        float *row = v.data + (size_t)i * v.ld, *z = view + (size_t)i * v.cols;
        if (!to_view)
            memcpy(row, z, (size_t)v.cols * sizeof(float));
        else if (add)
            for (int j = 0; j < v.cols; j++)
                z[j] += row[j];
    }
}

/* Stages 0-2: refresh the compute copies from the optimizer, one ZeRO layer at a time. */
static tsr_status_t load_params(tsr_gpt_t gpt)
{
    tsr_status_t rc = TSR_OK;
    for (int i = 0; i < gpt->nlocal && gpt->stage < 3;) {
        int layer = gpt->local[i]->zlayer, j = i;
        TSR_TRY(tsr_zero_gather(gpt->zero, layer));
        for (; j < gpt->nlocal && gpt->local[j]->zlayer == layer; j++) {
            float *p = NULL, *g = NULL;
            TSR_TRY(tsr_zero_view(gpt->zero, gpt->local[j]->zid, &p, &g));
            if (p)
                view_copy(gpt->local[j], p, 0, 0);
        }
        if (j < gpt->nlocal)
            TSR_TRY(tsr_zero_prefetch(gpt->zero, gpt->local[j]->zlayer));
        TSR_TRY(tsr_zero_release(gpt->zero, layer));
        i = j;
    }
cleanup:
    return rc;
}

/* Hand the step's summed gradients to the optimizer, one ZeRO layer at a time: every layer in
 * stages 0-1, the tied embedding alone in stages 2-3 (the others went per micro-batch). */
static tsr_status_t push_grads(tsr_gpt_t gpt)
{
    tsr_status_t rc = TSR_OK;
    for (int i = gpt->nlocal - 1; i >= 0;) {
        int layer = gpt->local[i]->zlayer, j = i;
        if (gpt->stage >= 2 && layer != gpt->wte_layer) {
            i--;
            continue;
        }
        TSR_TRY(tsr_zero_grad_begin(gpt->zero, layer));
        for (; j >= 0 && gpt->local[j]->zlayer == layer; j--) {
            float *p = NULL, *g = NULL;
            TSR_TRY(tsr_zero_view(gpt->zero, gpt->local[j]->zid, &p, &g));
            if (g)
                view_copy(gpt->local[j], g, 1, 1);
        }
        TSR_TRY(tsr_zero_grad_ready(gpt->zero, layer));
        i = j;
    }
cleanup:
    return rc;
}

/* First and last stage both hold the tied embedding: each adds the other's gradient. */
static tsr_status_t sum_tied(tsr_gpt_t gpt)
{
    tsr_status_t rc = TSR_OK;
    tsr_request_t req = NULL;
    if (gpt->stages == 1 || !(first_stage(gpt) || last_stage(gpt)))
        return TSR_OK;
    tsr_comm_t pp = tsr_grid_comm(gpt->grid, TSR_AXIS_PP);
    int peer = first_stage(gpt) ? gpt->stages - 1 : 0;
    tsr_dmat_view_t v;
    tsr_dmat_local(gpt->wte.g, &v);
    size_t n = (size_t)v.rows * v.cols;
    float *mine = NULL;
    TSR_TRY(tsr_device_alloc(gpt->dev, TSR_MEM_COMM, (n ? n : 1) * sizeof(float), (void **)&mine));
    copy_block(gpt->wte.g, mine, 1);
    TSR_TRY(tsr_comm_isend(pp, mine, n, TSR_DTYPE_F32, peer, TIE_TAG, &req));
    TSR_TRY(tsr_comm_recv(pp, gpt->tie_buf, n, TSR_DTYPE_F32, peer, TIE_TAG));
    TSR_TRY(tsr_request_wait(&req));
    for (int i = 0; i < v.rows; i++)
        for (int j = 0; j < v.cols; j++)
            v.data[(size_t)i * v.ld + j] += gpt->tie_buf[(size_t)i * v.cols + j];
cleanup:
    if (req)
        tsr_request_wait(&req);
    if (mine)
        tsr_device_free(gpt->dev, (void **)&mine);
    return rc;
}

/* The mean loss over the global batch, on every rank: the last stage's tp rank 0 of each
 * replica contributes its replica's mean over micro-batches / dp. */
static tsr_status_t reduce_loss(tsr_gpt_t gpt, double *loss)
{
    double mine = 0.0;
    if (last_stage(gpt) && gpt->at.tp == 0)
        mine = gpt->loss_sum / gpt->opts.micro_batches / gpt->layout.dp;
    *loss = mine;
    return tsr_comm_allreduce(tsr_grid_comm(gpt->grid, TSR_AXIS_WORLD), TSR_IN_PLACE, loss, 1, TSR_DTYPE_F64,
                              TSR_REDUCE_SUM);
}

tsr_status_t tsr_gpt_train_step(tsr_gpt_t gpt, const int32_t *inputs, const int32_t *targets,
                                 tsr_gpt_step_info_t *info)
{
    tsr_status_t rc = TSR_OK;
    tsr_pipe_stage_t stage = TSR_PIPE_STAGE_INIT;
    tsr_pipe_exec_config_t exec = TSR_PIPE_EXEC_INIT;
    tsr_zero_step_info_t zi;
    double loss = 0.0;
    TSR_CHECK(gpt && inputs && targets, TSR_ERR_INVALID_ARG, "tsr_gpt_train_step: NULL argument");
    for (size_t i = 0; i < (size_t)gpt->seqs * gpt->cfg.seq; i++)
        TSR_CHECK(inputs[i] >= 0 && inputs[i] < gpt->cfg.vocab && targets[i] >= 0 && targets[i] < gpt->cfg.vocab,
                  TSR_ERR_INVALID_ARG, "token id %d at position %zu is not below the vocabulary size %d",
                  inputs[i] < 0 || inputs[i] >= gpt->cfg.vocab ? inputs[i] : targets[i], i, gpt->cfg.vocab);
    gpt->inputs = inputs;
    gpt->targets = targets;
    gpt->loss_sum = 0.0;
    exec.poll_us = gpt->opts.poll_us;
    if (gpt->kernels) {
        TSR_TRY(tsr__engine_train_step(gpt, &exec));
        goto step;
    }
    TSR_TRY(load_params(gpt));
    for (int i = 0; i < gpt->nlocal; i++)
        if (gpt->local[i]->g)
            TSR_TRY(tsr_dmat_zero(gpt->local[i]->g));
    stage.ctx = gpt;
    stage.buffer_bytes = stage_buffer_bytes;
    stage.forward = stage_forward;
    stage.backward = stage_backward;
    stage.weight_grad = stage_weight_grad;
    TSR_TRY(tsr_pipe_execute(gpt->sched, tsr_grid_comm(gpt->grid, TSR_AXIS_PP), gpt->dev, &stage, &exec,
                             gpt->trace));
    TSR_TRY(sum_tied(gpt));
    TSR_TRY(push_grads(gpt));
step:
    TSR_TRY(tsr_zero_step(gpt->zero, &zi));
    TSR_TRY(reduce_loss(gpt, &loss));
    if (info) {
        info->loss = loss;
        info->grad_norm = zi.grad_norm;
        info->lr = zi.lr;
        info->step = zi.step;
    }
cleanup:
    return rc;
}
