/*
 * engine.c: the GPT model computed with the device kernels of tessera/kernels.h, the path
 * every CUDA run takes (and a CPU run asked for it with TSR_GPT_COMPUTE_KERNELS).
 *
 * Layouts: data and pipeline parallelism with any ZeRO stage; the tensor-parallel grid must
 * be 1×1 (each rank holds whole tensors). Precision: bf16 activations and compute copies of
 * the parameters on CUDA with --precision bf16 (fp32 everywhere else); parameter gradients
 * always accumulate in fp32, straight into the optimizer's gradient views (stages 0-1) or
 * into the layer's whole gradient between tsr_zero_grad_begin and _ready (stages 2-3); the
 * tied embedding's gradient into a buffer of its own, summed between the first and the last
 * stage and handed over at the end of the step.
 *
 * Block l on micro-batch rows M (mb_seqs·T tokens), width C, heads A, F = 4C:
 *   ln1 = LN(x); qkv = ln1 [Wq Wk Wv] + [bq bk bv] (M×3C); att = attention(qkv);
 *   x1 = x + att Wo + bo; ln2 = LN(x1); hpre = ln2 W1 + b1; hgelu = gelu(hpre);
 *   y = x1 + hgelu W2 + b2.
 * The head computes the loss and its gradient in the forward (softmax cross-entropy fused
 * with the classifier's backward: logits, then dlogits in place, then dwte += dlogitsᵀ lnf
 * and d_lnf = dlogits wte), so only the M×C d_lnf waits for the backward, not the logits.
 *
 * What a virtual stage's forward keeps for its backward lives in a slot (one allocation);
 * slots are reused across micro-batches and steps, so a step allocates nothing after the
 * first. Backward scratch and the logits are shared by all micro-batches.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_impl.h"

#define LN_EPS 1e-5f
#define TIE_TAG 0x7ffe

/* Saved tensors of one block (dt unless float). */
typedef struct eng_block {
    void *x, *ln1, *qkv, *att, *x1, *ln2, *hpre, *hgelu;
    float *mean1, *rstd1, *mean2, *rstd2, *lse;
} eng_block_t;

struct gpt_slot {
    int busy, chunk, mb;
    void *mem;
    eng_block_t *blk; /* the chunk's blocks, in order */
    void *y;          /* the chunk's output (the head's input on the last virtual stage) */
    void *lnf, *d_lnf;
    float *lnf_mean, *lnf_rstd;
};

/* ---------- sizes and helpers ---------- */

static size_t rows_of(tsr_gpt_t g) { return (size_t)g->mb_seqs * (size_t)g->cfg.seq; }
static size_t act_bytes(tsr_gpt_t g, size_t width) { return rows_of(g) * width * g->dts; }
static size_t align_up(size_t n) { return (n + TSR_DEVICE_ALIGNMENT - 1) / TSR_DEVICE_ALIGNMENT * TSR_DEVICE_ALIGNMENT; }
static void *at(void *base, size_t off) { return (char *)base + off; }

/* Carve a buffer of `bytes` from `*off` (a NULL base only measures). */
static void *carve(void *base, size_t *off, size_t bytes)
{
    void *p = base ? at(base, *off) : NULL;
    *off += align_up(bytes);
    return p;
}

static int is_last(tsr_gpt_t g, int k) { return k == g->stages * g->chunks - 1; }
static int vstage_of(tsr_gpt_t g, int chunk) { return chunk * g->stages + g->at.pp; }

/* dst = src, n elements of dt, queued on the device's stream. */
static tsr_status_t copy_act(tsr_gpt_t g, void *dst, const void *src, size_t n)
{
    return tsr_kernel_cast(g->dev, g->dt, src, g->dt, dst, n);
}

/* out (M×N, ldo) = in (M×K) W (K×N) + bias, with an epilogue; beta 1 adds to out. */
static tsr_status_t linear(tsr_gpt_t g, const void *in, int ldi, int K, const void *w, int N, const void *bias,
                           float beta, void *out, int ldo, tsr_epilogue_t epi, void *aux)
{
    tsr_gemm_t m = TSR_GEMM_INIT;
    m.m = (int)rows_of(g), m.n = N, m.k = K, m.beta = beta;
    m.ab_type = m.c_type = g->dt;
    m.a = in, m.lda = ldi, m.b = w, m.ldb = N, m.c = out, m.ldc = ldo;
    m.epilogue = epi, m.bias = bias, m.aux = aux, m.ld_aux = N;
    return tsr_kernel_gemm(g->dev, &m);
}

/* dx (M×K) = dout (M×N) Wᵀ, beta 1 adds; DGELU epilogue multiplies by gelu'(aux). */
static tsr_status_t linear_dx(tsr_gpt_t g, const void *dout, int ldd, int N, const void *w, int K, float beta,
                              void *dx, int ldx, tsr_epilogue_t epi, void *aux)
{
    tsr_gemm_t m = TSR_GEMM_INIT;
    m.trans_b = TSR_TRANS;
    m.m = (int)rows_of(g), m.n = K, m.k = N, m.beta = beta;
    m.ab_type = m.c_type = g->dt;
    m.a = dout, m.lda = ldd, m.b = w, m.ldb = N, m.c = dx, m.ldc = ldx;
    m.epilogue = epi, m.aux = aux, m.ld_aux = K;
    return tsr_kernel_gemm(g->dev, &m);
}

/* dw (K×N, fp32) += inᵀ dout; db (N, fp32) += column sums of dout (db may be NULL). */
static tsr_status_t linear_dw(tsr_gpt_t g, const void *in, int ldi, int K, const void *dout, int ldd, int N,
                              float *dw, float *db)
{
    tsr_status_t rc = TSR_OK;
    tsr_gemm_t m = TSR_GEMM_INIT;
    m.trans_a = TSR_TRANS;
    m.m = K, m.n = N, m.k = (int)rows_of(g), m.beta = 1.0f;
    m.ab_type = g->dt, m.c_type = TSR_DTYPE_F32;
    m.a = in, m.lda = ldi, m.b = dout, m.ldb = ldd, m.c = dw, m.ldc = N;
    TSR_TRY(tsr_kernel_gemm(g->dev, &m));
    if (db)
        TSR_TRY(tsr_kernel_bias_grad(g->dev, g->dt, (int)rows_of(g), N, dout, ldd, db));
cleanup:
    return rc;
}

/* ---------- slots ---------- */

/* Lay out (base NULL: measure) the slot of virtual stage k. */
static size_t layout_slot(tsr_gpt_t g, int k, struct gpt_slot *s, void *base)
{
    size_t off = 0, M = rows_of(g), C = (size_t)g->cfg.dim, F = 4 * C;
    size_t lse = (size_t)g->mb_seqs * (size_t)g->cfg.heads * (size_t)g->cfg.seq;
    int nb = g->bounds[k + 1] - g->bounds[k];
    for (int i = 0; i < nb; i++) {
        eng_block_t b;
        b.x = carve(base, &off, act_bytes(g, C));
        b.ln1 = carve(base, &off, act_bytes(g, C));
        b.qkv = carve(base, &off, act_bytes(g, 3 * C));
        b.att = carve(base, &off, act_bytes(g, C));
        b.x1 = carve(base, &off, act_bytes(g, C));
        b.ln2 = carve(base, &off, act_bytes(g, C));
        b.hpre = carve(base, &off, act_bytes(g, F));
        b.hgelu = carve(base, &off, act_bytes(g, F));
        b.mean1 = carve(base, &off, M * sizeof(float));
        b.rstd1 = carve(base, &off, M * sizeof(float));
        b.mean2 = carve(base, &off, M * sizeof(float));
        b.rstd2 = carve(base, &off, M * sizeof(float));
        b.lse = carve(base, &off, lse * sizeof(float));
        if (s)
            s->blk[i] = b;
    }
    void *y = carve(base, &off, act_bytes(g, C));
    void *lnf = NULL, *d_lnf = NULL;
    float *mean = NULL, *rstd = NULL;
    if (is_last(g, k)) {
        lnf = carve(base, &off, act_bytes(g, C));
        d_lnf = carve(base, &off, act_bytes(g, C));
        mean = carve(base, &off, M * sizeof(float));
        rstd = carve(base, &off, M * sizeof(float));
    }
    if (s)
        s->y = y, s->lnf = lnf, s->d_lnf = d_lnf, s->lnf_mean = mean, s->lnf_rstd = rstd;
    return off;
}

/* A free slot for (chunk, mb), made on first need. */
static tsr_status_t acquire_slot(tsr_gpt_t g, int chunk, int mb, struct gpt_slot **out)
{
    tsr_status_t rc = TSR_OK;
    int k = vstage_of(g, chunk);
    struct gpt_slot *s = NULL;
    for (int i = 0; i < g->nslots && !s; i++)
        if (!g->slots[i].busy && g->slots[i].chunk == chunk)
            s = &g->slots[i];
    if (!s) {
        struct gpt_slot *grown = realloc(g->slots, (size_t)(g->nslots + 1) * sizeof *grown);
        TSR_CHECK(grown, TSR_ERR_OUT_OF_MEMORY, "no memory for an activation slot");
        g->slots = grown;
        s = &g->slots[g->nslots];
        memset(s, 0, sizeof *s);
        s->chunk = chunk;
        s->blk = tsr__calloc((size_t)(g->bounds[k + 1] - g->bounds[k]) + 1, sizeof *s->blk);
        TSR_CHECK(s->blk, TSR_ERR_OUT_OF_MEMORY, "no memory for an activation slot");
        g->nslots++;
        TSR_TRY(tsr_device_alloc(g->dev, TSR_MEM_ACTIVATIONS, layout_slot(g, k, NULL, NULL), &s->mem));
        layout_slot(g, k, s, s->mem);
    }
    s->busy = 1;
    s->mb = mb;
    *out = s;
cleanup:
    return rc;
}

static struct gpt_slot *find_slot(tsr_gpt_t g, int chunk, int mb)
{
    for (int i = 0; i < g->nslots; i++)
        if (g->slots[i].busy && g->slots[i].chunk == chunk && g->slots[i].mb == mb)
            return &g->slots[i];
    return NULL;
}

/* ---------- parameters ---------- */

/* The compute copy of a tensor (dt). */
static const void *W(const gpt_tensor_t *t) { return t->wc; }

/* Refresh the compute copies of one ZeRO layer from the optimizer's views. Stages 0-2 keep
 * them for the step (in fp32 they are the views themselves); stage 3 gathers the layer and
 * copies it into buffers freed again by drop_params. */
static tsr_status_t load_layer(tsr_gpt_t g, int layer)
{
    tsr_status_t rc = TSR_OK;
    TSR_TRY(tsr_zero_gather(g->zero, layer));
    for (int i = 0; i < g->nlocal; i++) {
        gpt_tensor_t *t = g->local[i];
        float *p = NULL;
        size_t n = (size_t)t->desc.rows * (size_t)t->desc.cols;
        if (t->zlayer != layer)
            continue;
        TSR_TRY(tsr_zero_view(g->zero, t->zid, &p, NULL));
        TSR_CHECK(p, TSR_ERR_INTERNAL, "no parameter view for layer %d", layer);
        if (g->stage == 3 && !t->owned)
            TSR_TRY(tsr_device_alloc(g->dev, TSR_MEM_PARAMS, n * g->dts, &t->owned));
        if (t->owned) {
            t->wc = t->owned;
            TSR_TRY(tsr_kernel_cast(g->dev, TSR_DTYPE_F32, p, g->dt, t->wc, n));
        } else {
            t->wc = p;
        }
    }
    if (g->stage == 3)
        TSR_TRY(tsr_device_sync(g->dev)); /* the copies are read before the gathered layer goes */
    TSR_TRY(tsr_zero_release(g->zero, layer));
cleanup:
    return rc;
}

tsr_status_t tsr__engine_use_params(tsr_gpt_t g, int layer)
{
    return g->stage == 3 ? load_layer(g, layer) : TSR_OK;
}

void tsr__engine_drop_params(tsr_gpt_t g, int layer)
{
    for (int i = 0; i < g->nlocal && g->stage == 3; i++)
        if (g->local[i]->zlayer == layer) {
            tsr_device_free(g->dev, &g->local[i]->owned);
            g->local[i]->wc = NULL;
        }
}

/* Gradient views of a layer's tensors (valid all step in stages 0-1; after grad_begin in 2-3). */
static tsr_status_t grad_views(tsr_gpt_t g, int layer)
{
    tsr_status_t rc = TSR_OK;
    for (int i = 0; i < g->nlocal; i++) {
        gpt_tensor_t *t = g->local[i];
        if (t->zlayer != layer || t == &g->wte)
            continue;
        TSR_TRY(tsr_zero_view(g->zero, t->zid, NULL, &t->gv));
        TSR_CHECK(t->gv, TSR_ERR_INTERNAL, "no gradient view for %s", "a tensor");
    }
cleanup:
    return rc;
}

/* Stages 2-3: a fresh whole gradient for this micro-batch's backward of the layer. */
static tsr_status_t begin_grads(tsr_gpt_t g, int layer)
{
    tsr_status_t rc = TSR_OK;
    if (g->stage < 2)
        return TSR_OK;
    TSR_TRY(tsr_zero_grad_begin(g->zero, layer));
    TSR_TRY(grad_views(g, layer));
cleanup:
    return rc;
}

/* After a backward of the layer: stages 2-3 hand it over now; stages 0-1 once the step's
 * last micro-batch is through, so the reduction overlaps the rest of the backward. */
static tsr_status_t end_grads(tsr_gpt_t g, int layer)
{
    tsr_status_t rc = TSR_OK;
    if (g->stage < 2 && ++g->bwd_count[layer] < g->opts.micro_batches)
        return TSR_OK;
    if (g->stage < 2)
        TSR_TRY(tsr_zero_grad_begin(g->zero, layer));
    TSR_TRY(tsr_zero_grad_ready(g->zero, layer));
cleanup:
    return rc;
}

/* ---------- forward and backward of one block ---------- */

static tsr_status_t block_forward(tsr_gpt_t g, int l, eng_block_t *b, void *y)
{
    tsr_status_t rc = TSR_OK;
    const gpt_tensor_t *p = g->block[l];
    int M = (int)rows_of(g), C = g->cfg.dim, A = g->cfg.heads, hd = C / A, F = 4 * C;
    tsr_device_t d = g->dev;
    TSR_TRY(tsr_kernel_layernorm_forward(d, g->dt, M, C, b->x, W(&p[LN1G]), W(&p[LN1B]), LN_EPS, b->ln1, b->mean1,
                                         b->rstd1));
    for (int j = 0; j < 3; j++)
        TSR_TRY(linear(g, b->ln1, C, C, W(&p[WQ + 2 * j]), C, W(&p[BQ + 2 * j]), 0.0f,
                       at(b->qkv, (size_t)j * C * g->dts), 3 * C, TSR_EPILOGUE_BIAS, NULL));
    TSR_TRY(tsr_kernel_attention_forward(d, g->dt, g->mb_seqs, g->cfg.seq, A, hd, b->qkv, at(b->qkv, (size_t)C * g->dts),
                                         at(b->qkv, 2 * (size_t)C * g->dts), 3 * C, b->att, C, b->lse));
    TSR_TRY(copy_act(g, b->x1, b->x, (size_t)M * C));
    TSR_TRY(linear(g, b->att, C, C, W(&p[WO]), C, W(&p[BO]), 1.0f, b->x1, C, TSR_EPILOGUE_BIAS, NULL));
    TSR_TRY(tsr_kernel_layernorm_forward(d, g->dt, M, C, b->x1, W(&p[LN2G]), W(&p[LN2B]), LN_EPS, b->ln2, b->mean2,
                                         b->rstd2));
    TSR_TRY(linear(g, b->ln2, C, C, W(&p[W1]), F, W(&p[B1]), 0.0f, b->hgelu, F, TSR_EPILOGUE_BIAS_GELU, b->hpre));
    TSR_TRY(copy_act(g, y, b->x1, (size_t)M * C));
    TSR_TRY(linear(g, b->hgelu, F, F, W(&p[W2]), C, W(&p[B2]), 1.0f, y, C, TSR_EPILOGUE_BIAS, NULL));
cleanup:
    return rc;
}

/* dres holds dL/dy on entry and dL/dx on return. */
static tsr_status_t block_backward(tsr_gpt_t g, int l, const eng_block_t *b, void *dres)
{
    tsr_status_t rc = TSR_OK;
    gpt_tensor_t *p = g->block[l];
    int M = (int)rows_of(g), C = g->cfg.dim, A = g->cfg.heads, hd = C / A, F = 4 * C;
    size_t cs = (size_t)C * g->dts;
    tsr_device_t d = g->dev;
    /* MLP: y = x1 + gelu(ln2 W1 + b1) W2 + b2 */
    TSR_TRY(linear_dw(g, b->hgelu, F, F, dres, C, C, p[W2].gv, p[B2].gv));
    TSR_TRY(linear_dx(g, dres, C, C, W(&p[W2]), F, 0.0f, g->d_mlp, F, TSR_EPILOGUE_DGELU, b->hpre));
    TSR_TRY(linear_dw(g, b->ln2, C, C, g->d_mlp, F, F, p[W1].gv, p[B1].gv));
    TSR_TRY(linear_dx(g, g->d_mlp, F, F, W(&p[W1]), C, 0.0f, g->d_ln, C, TSR_EPILOGUE_NONE, NULL));
    TSR_TRY(tsr_kernel_layernorm_backward(d, g->dt, M, C, g->d_ln, b->x1, W(&p[LN2G]), b->mean2, b->rstd2, dres,
                                          p[LN2G].gv, p[LN2B].gv));
    /* attention: x1 = x + attention(qkv(ln1(x))) Wo + bo */
    TSR_TRY(linear_dw(g, b->att, C, C, dres, C, C, p[WO].gv, p[BO].gv));
    TSR_TRY(linear_dx(g, dres, C, C, W(&p[WO]), C, 0.0f, g->d_att, C, TSR_EPILOGUE_NONE, NULL));
    TSR_TRY(tsr_kernel_attention_backward(d, g->dt, g->mb_seqs, g->cfg.seq, A, hd, b->qkv, at(b->qkv, cs),
                                          at(b->qkv, 2 * cs), 3 * C, b->att, g->d_att, C, b->lse, g->delta,
                                          g->d_qkv, at(g->d_qkv, cs), at(g->d_qkv, 2 * cs)));
    for (int j = 0; j < 3; j++) {
        const void *dj = at(g->d_qkv, (size_t)j * cs);
        TSR_TRY(linear_dw(g, b->ln1, C, C, dj, 3 * C, C, p[WQ + 2 * j].gv, p[BQ + 2 * j].gv));
        TSR_TRY(linear_dx(g, dj, 3 * C, C, W(&p[WQ + 2 * j]), C, j ? 1.0f : 0.0f, g->d_ln, C, TSR_EPILOGUE_NONE,
                          NULL));
    }
    TSR_TRY(tsr_kernel_layernorm_backward(d, g->dt, M, C, g->d_ln, b->x, W(&p[LN1G]), b->mean1, b->rstd1, dres,
                                          p[LN1G].gv, p[LN1B].gv));
cleanup:
    return rc;
}

/* ---------- embedding and head ---------- */

static const int32_t *mb_tokens(tsr_gpt_t g, const int32_t *all, int mb)
{
    return all + (size_t)mb * rows_of(g);
}

/* Final layernorm, logits, loss and everything of the classifier's backward but the
 * layernorm's: the head's weight gradient, and d_lnf for the backward. */
static tsr_status_t head_forward(tsr_gpt_t g, int mb, struct gpt_slot *s)
{
    tsr_status_t rc = TSR_OK;
    int M = (int)rows_of(g), C = g->cfg.dim, V = g->cfg.vocab;
    tsr_gemm_t m = TSR_GEMM_INIT;
    TSR_TRY(tsr_kernel_layernorm_forward(g->dev, g->dt, M, C, s->y, W(&g->lnfg), W(&g->lnfb), LN_EPS, s->lnf,
                                         s->lnf_mean, s->lnf_rstd));
    /* logits (M×V, ld vpad) = lnf wteᵀ */
    m.trans_b = TSR_TRANS, m.m = M, m.n = V, m.k = C, m.ab_type = m.c_type = g->dt;
    m.a = s->lnf, m.lda = C, m.b = W(&g->wte), m.ldb = C, m.c = g->logits_buf, m.ldc = g->vpad;
    TSR_TRY(tsr_kernel_gemm(g->dev, &m));
    TSR_TRY(tsr_kernel_cross_entropy_stats(g->dev, g->dt, M, V, 0, g->logits_buf, g->vpad,
                                           mb_tokens(g, g->d_targets, mb), g->delta));
    TSR_TRY(tsr_kernel_cross_entropy_finish(g->dev, g->dt, M, V, 0, g->logits_buf, g->vpad,
                                            mb_tokens(g, g->d_targets, mb), 1, g->delta, g->losses + (size_t)mb * M,
                                            1.0f / ((float)M * (float)g->opts.micro_batches)));
    /* dwte += dlogitsᵀ lnf (fp32) */
    m = (tsr_gemm_t)TSR_GEMM_INIT;
    m.trans_a = TSR_TRANS, m.m = V, m.n = C, m.k = M, m.beta = 1.0f, m.ab_type = g->dt, m.c_type = TSR_DTYPE_F32;
    m.a = g->logits_buf, m.lda = g->vpad, m.b = s->lnf, m.ldb = C, m.c = g->wte_grad, m.ldc = C;
    TSR_TRY(tsr_kernel_gemm(g->dev, &m));
    /* d_lnf = dlogits wte */
    m = (tsr_gemm_t)TSR_GEMM_INIT;
    m.m = M, m.n = C, m.k = V, m.ab_type = m.c_type = g->dt;
    m.a = g->logits_buf, m.lda = g->vpad, m.b = W(&g->wte), m.ldb = C, m.c = s->d_lnf, m.ldc = C;
    TSR_TRY(tsr_kernel_gemm(g->dev, &m));
cleanup:
    return rc;
}

/* ---------- the pipeline stage callbacks ---------- */

static size_t stage_buffer_bytes(void *ctx, int chunk, tsr_pipe_side_t side)
{
    (void)chunk, (void)side;
    return act_bytes((tsr_gpt_t)ctx, (size_t)((tsr_gpt_t)ctx)->cfg.dim);
}

static tsr_status_t stage_forward(void *ctx, int chunk, int mb, const void *in, void *out)
{
    tsr_status_t rc = TSR_OK;
    tsr_gpt_t g = ctx;
    struct gpt_slot *s = NULL;
    int k = vstage_of(g, chunk), first = g->bounds[k], nb = g->bounds[k + 1] - first;
    size_t n = rows_of(g) * (size_t)g->cfg.dim;
    TSR_TRY(acquire_slot(g, chunk, mb, &s));
    void *x0 = nb > 0 ? s->blk[0].x : s->y;
    if (k == 0) {
        TSR_TRY(tsr__engine_use_params(g, 0));
        TSR_TRY(tsr__engine_use_params(g, g->wte_layer));
        TSR_TRY(tsr_kernel_embedding_forward(g->dev, g->dt, mb_tokens(g, g->d_inputs, mb), g->mb_seqs, g->cfg.seq,
                                             g->cfg.dim, 0, g->cfg.vocab, W(&g->wte), W(&g->wpe), x0));
        tsr__engine_drop_params(g, 0);
        tsr__engine_drop_params(g, g->wte_layer);
    } else {
        TSR_TRY(copy_act(g, x0, in, n));
    }
    for (int i = 0; i < nb; i++) {
        TSR_TRY(tsr__engine_use_params(g, 1 + first + i));
        TSR_TRY(block_forward(g, first + i, &s->blk[i], i + 1 < nb ? s->blk[i + 1].x : s->y));
        tsr__engine_drop_params(g, 1 + first + i);
    }
    if (is_last(g, k)) {
        TSR_TRY(tsr__engine_use_params(g, g->cfg.layers + 1));
        TSR_TRY(tsr__engine_use_params(g, g->wte_layer));
        TSR_TRY(head_forward(g, mb, s));
        tsr__engine_drop_params(g, g->cfg.layers + 1);
        tsr__engine_drop_params(g, g->wte_layer);
    } else {
        TSR_TRY(copy_act(g, out, s->y, n));
    }
    if (g->dev && tsr_device_kind(g->dev) != TSR_DEVICE_CPU && !is_last(g, k))
        TSR_TRY(tsr_device_sync(g->dev)); /* `out` is sent as soon as we return */
cleanup:
    return rc;
}

static tsr_status_t stage_backward(void *ctx, int chunk, int mb, const void *in, const void *grad_out,
                                   void *grad_in)
{
    tsr_status_t rc = TSR_OK;
    tsr_gpt_t g = ctx;
    struct gpt_slot *s = find_slot(g, chunk, mb);
    int k = vstage_of(g, chunk), first = g->bounds[k], nb = g->bounds[k + 1] - first, head = g->cfg.layers + 1;
    int M = (int)rows_of(g), C = g->cfg.dim;
    size_t n = rows_of(g) * (size_t)C;
    (void)in;
    TSR_CHECK(s, TSR_ERR_INTERNAL, "backward of chunk %d, micro-batch %d before its forward", chunk, mb);
    if (is_last(g, k)) {
        TSR_TRY(tsr__engine_use_params(g, head));
        TSR_TRY(begin_grads(g, head));
        TSR_TRY(tsr_device_memset(g->dev, g->d_res, 0, n * g->dts));
        TSR_TRY(tsr_kernel_layernorm_backward(g->dev, g->dt, M, C, s->d_lnf, s->y, W(&g->lnfg), s->lnf_mean,
                                              s->lnf_rstd, g->d_res, g->lnfg.gv, g->lnfb.gv));
        TSR_TRY(end_grads(g, head));
        tsr__engine_drop_params(g, head);
    } else {
        TSR_TRY(copy_act(g, g->d_res, grad_out, n));
    }
    for (int i = nb - 1; i >= 0; i--) {
        int layer = 1 + first + i;
        TSR_TRY(tsr__engine_use_params(g, layer));
        TSR_TRY(begin_grads(g, layer));
        TSR_TRY(block_backward(g, first + i, &s->blk[i], g->d_res));
        TSR_TRY(end_grads(g, layer));
        tsr__engine_drop_params(g, layer);
    }
    if (k == 0) {
        TSR_TRY(begin_grads(g, 0));
        TSR_TRY(tsr_kernel_embedding_backward(g->dev, g->dt, mb_tokens(g, g->d_inputs, mb), g->mb_seqs, g->cfg.seq,
                                              C, 0, g->cfg.vocab, g->d_res, g->wte_grad, g->wpe.gv));
        TSR_TRY(end_grads(g, 0));
    } else {
        TSR_TRY(copy_act(g, grad_in, g->d_res, n));
        if (tsr_device_kind(g->dev) != TSR_DEVICE_CPU)
            TSR_TRY(tsr_device_sync(g->dev)); /* grad_in is sent as soon as we return */
    }
cleanup:
    if (s)
        s->busy = 0;
    return rc;
}

/* The backward computes the weight gradients too, so ZB-H1's W actions have nothing left. */
static tsr_status_t stage_weight_grad(void *ctx, int chunk, int mb, const void *in, const void *grad_out)
{
    (void)ctx, (void)chunk, (void)mb, (void)in, (void)grad_out;
    return TSR_OK;
}

/* ---------- creation ---------- */

/* Everything the engine allocates once: the step's tokens, backward scratch, the logits,
 * the tied gradient, the compute copies (bf16, stages 0-2). */
tsr_status_t tsr__engine_create(tsr_gpt_t g)
{
    tsr_status_t rc = TSR_OK;
    size_t M = rows_of(g), C = (size_t)g->cfg.dim, off = 0, wn = 0;
    size_t lse = (size_t)g->mb_seqs * (size_t)g->cfg.heads * (size_t)g->cfg.seq;
    int last = g->at.pp == g->stages - 1, first = g->at.pp == 0;
    g->vpad = (g->cfg.vocab + 63) / 64 * 64;
    /* scratch: one allocation */
    size_t sizes[] = {act_bytes(g, C), act_bytes(g, C), act_bytes(g, 3 * C), act_bytes(g, C), act_bytes(g, 4 * C),
                      (lse > 3 * M ? lse : 3 * M) * sizeof(float), M * (size_t)g->opts.micro_batches * sizeof(float), last ? M * (size_t)g->vpad * g->dts : 0,
                      2 * (size_t)g->seqs * g->cfg.seq * sizeof(int32_t)};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++)
        off += align_up(sizes[i]);
    TSR_TRY(tsr_device_alloc(g->dev, TSR_MEM_WORKSPACE, off, &g->scratch));
    off = 0;
    void **dst[] = {&g->d_res, &g->d_ln, &g->d_qkv, &g->d_att, &g->d_mlp, (void **)&g->delta, (void **)&g->losses,
                    &g->logits_buf, (void **)&g->d_inputs};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++)
        *dst[i] = carve(g->scratch, &off, sizes[i]);
    g->d_targets = g->d_inputs + (size_t)g->seqs * g->cfg.seq;
    if (first || last)
        TSR_TRY(tsr_device_alloc(g->dev, TSR_MEM_GRADS, (size_t)g->cfg.vocab * C * sizeof(float),
                                 (void **)&g->wte_grad));
    g->bwd_count = tsr__calloc((size_t)g->wte_layer + 1, sizeof *g->bwd_count);
    TSR_CHECK(g->bwd_count, TSR_ERR_OUT_OF_MEMORY, "no memory for the model's tables");
    /* bf16 compute copies for stages 0-2: one buffer, tensors in registration order */
    if (g->dt != TSR_DTYPE_F32 && g->stage < 3) {
        for (int i = 0; i < g->nlocal; i++)
            wn += (size_t)g->local[i]->desc.rows * (size_t)g->local[i]->desc.cols;
        TSR_TRY(tsr_device_alloc(g->dev, TSR_MEM_PARAMS, wn * g->dts, &g->wcopy));
        for (int i = 0, o = 0; i < g->nlocal; i++) {
            gpt_tensor_t *t = g->local[i];
            t->wc = at(g->wcopy, (size_t)o * g->dts);
            o += t->desc.rows * t->desc.cols;
        }
    }
    if (g->stage < 2)
        for (int i = 0; i < g->nlocal; i++)
            TSR_TRY(grad_views(g, g->local[i]->zlayer));
cleanup:
    return rc;
}

void tsr__engine_destroy(tsr_gpt_t g)
{
    for (int i = 0; i < g->nslots; i++) {
        tsr_device_free(g->dev, &g->slots[i].mem);
        free(g->slots[i].blk);
    }
    free(g->slots);
    g->slots = NULL;
    g->nslots = 0;
    for (int i = 0; i < g->nlocal; i++)
        tsr_device_free(g->dev, &g->local[i]->owned);
    tsr_device_free(g->dev, &g->scratch);
    tsr_device_free(g->dev, (void **)&g->wte_grad);
    tsr_device_free(g->dev, &g->wcopy);
    free(g->bwd_count);
    g->bwd_count = NULL;
}

/* ---------- the step ---------- */

/* Stages 0-2: the step's compute copies, one ZeRO layer at a time (a cast per layer: the
 * tensors of a layer are contiguous in the optimizer's buffer and in ours). */
static tsr_status_t load_params(tsr_gpt_t g)
{
    tsr_status_t rc = TSR_OK;
    for (int i = 0; i < g->nlocal && g->stage < 3;) {
        int layer = g->local[i]->zlayer, j = i;
        size_t n = 0;
        float *p = NULL;
        for (; j < g->nlocal && g->local[j]->zlayer == layer; j++)
            n += (size_t)g->local[j]->desc.rows * (size_t)g->local[j]->desc.cols;
        TSR_TRY(tsr_zero_view(g->zero, g->local[i]->zid, &p, NULL));
        if (g->wcopy)
            TSR_TRY(tsr_kernel_cast(g->dev, TSR_DTYPE_F32, p, g->dt, g->local[i]->wc, n));
        else
            for (int t = i; t < j; t++)
                TSR_TRY(tsr_zero_view(g->zero, g->local[t]->zid, (float **)&g->local[t]->wc, NULL));
        i = j;
    }
cleanup:
    return rc;
}

/* First and last stage both hold the tied embedding: each adds the other's gradient. */
static tsr_status_t sum_tied(tsr_gpt_t g)
{
    tsr_status_t rc = TSR_OK;
    tsr_request_t req = NULL;
    size_t n = (size_t)g->cfg.vocab * (size_t)g->cfg.dim;
    float *theirs = NULL;
    if (g->stages == 1 || !(g->at.pp == 0 || g->at.pp == g->stages - 1))
        return TSR_OK;
    tsr_comm_t pp = tsr_grid_comm(g->grid, TSR_AXIS_PP);
    int peer = g->at.pp == 0 ? g->stages - 1 : 0;
    TSR_TRY(tsr_device_alloc(g->dev, TSR_MEM_COMM, n * sizeof(float), (void **)&theirs));
    TSR_TRY(tsr_device_sync(g->dev));
    TSR_TRY(tsr_comm_isend(pp, g->wte_grad, n, TSR_DTYPE_F32, peer, TIE_TAG, &req));
    TSR_TRY(tsr_comm_recv(pp, theirs, n, TSR_DTYPE_F32, peer, TIE_TAG));
    TSR_TRY(tsr_request_wait(&req));
    TSR_TRY(tsr_kernel_axpy(g->dev, n, 1.0f, theirs, g->wte_grad));
cleanup:
    if (req)
        tsr_request_wait(&req);
    tsr_device_free(g->dev, (void **)&theirs);
    return rc;
}

/* The tied embedding's gradient to the optimizer (after sum_tied). */
static tsr_status_t push_wte(tsr_gpt_t g)
{
    tsr_status_t rc = TSR_OK;
    float *view = NULL;
    if (!g->wte_grad)
        return TSR_OK;
    TSR_TRY(tsr_zero_grad_begin(g->zero, g->wte_layer));
    TSR_TRY(tsr_zero_view(g->zero, g->wte.zid, NULL, &view));
    TSR_TRY(tsr_kernel_axpy(g->dev, (size_t)g->cfg.vocab * g->cfg.dim, 1.0f, g->wte_grad, view));
    TSR_TRY(tsr_zero_grad_ready(g->zero, g->wte_layer));
cleanup:
    return rc;
}

tsr_status_t tsr__engine_train_step(tsr_gpt_t g, tsr_pipe_exec_config_t *exec)
{
    tsr_status_t rc = TSR_OK;
    tsr_pipe_stage_t stage = TSR_PIPE_STAGE_INIT;
    size_t ntok = (size_t)g->seqs * g->cfg.seq;
    TSR_TRY(tsr_device_copy(g->dev, g->d_inputs, g->inputs, ntok * sizeof(int32_t), TSR_COPY_HOST_TO_DEVICE));
    TSR_TRY(tsr_device_copy(g->dev, g->d_targets, g->targets, ntok * sizeof(int32_t), TSR_COPY_HOST_TO_DEVICE));
    TSR_TRY(load_params(g));
    memset(g->bwd_count, 0, ((size_t)g->wte_layer + 1) * sizeof *g->bwd_count);
    if (g->wte_grad)
        TSR_TRY(tsr_device_memset(g->dev, g->wte_grad, 0, (size_t)g->cfg.vocab * g->cfg.dim * sizeof(float)));
    stage.ctx = g;
    stage.buffer_bytes = stage_buffer_bytes;
    stage.forward = stage_forward;
    stage.backward = stage_backward;
    stage.weight_grad = stage_weight_grad;
    TSR_TRY(tsr_pipe_execute(g->sched, tsr_grid_comm(g->grid, TSR_AXIS_PP), g->dev, &stage, exec, g->trace));
    TSR_TRY(sum_tied(g));
    TSR_TRY(push_wte(g));
    if (g->at.pp == g->stages - 1) {
        /* the token losses of every micro-batch, summed once: no wait for the host per micro-batch */
        double total = 0.0;
        TSR_TRY(tsr_kernel_sum(g->dev, g->losses, ntok, &total));
        g->loss_sum = total / (double)rows_of(g);
    }
cleanup:
    for (int i = 0; i < g->nslots; i++)
        g->slots[i].busy = 0;
    return rc;
}
