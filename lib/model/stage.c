/*
 * stage.c: the GPT's pipeline stage callbacks (forward, backward = input gradients, weight
 * gradients) and the memory they keep.
 *
 * What a virtual stage's forward of one micro-batch keeps for its backward lives in a slot:
 * one allocation (TSR_MEM_ACTIVATIONS) under dmats, made on first need and reused across
 * micro-batches and steps, so a step allocates nothing after the first. Per block a slot
 * holds its input and, by the recomputation policy, everything else the backward reads
 * (NONE), all but the attention sublayer's internals (ATTENTION), or nothing else (BLOCK);
 * what it does not hold, the backward replays into the working set, one block's worth
 * shared by every block and micro-batch. The first block's input is the executor's `in`
 * buffer (valid until the micro-batch's last backward action) and the last block's output
 * its `out`, except on the first and the last virtual stage.
 *
 * Weight gradients. With W actions in the schedule (zero-bubble), a block's backward
 * tensors (gpt_grads_t) go into the slot too and its weight-gradient GEMMs wait for the W
 * action; otherwise they run right after the block's input gradient, on shared buffers. A
 * block that recomputes runs its weight gradient at once whatever the schedule (its
 * replayed activations are not kept); the head's and the embedding's still wait for W.
 */
#include <stdlib.h>
#include <string.h>

#include "model_impl.h"

/* ---------- carving matrices out of one allocation ---------- */

typedef struct arena {
    char *base; /* NULL: only measure */
    size_t off;
} arena_t;

static size_t align_up(size_t n) { return (n + TSR_DEVICE_ALIGNMENT - 1) / TSR_DEVICE_ALIGNMENT * TSR_DEVICE_ALIGNMENT; }

static void *carve(arena_t *ar, size_t bytes)
{
    void *p = ar->base ? ar->base + ar->off : NULL;
    ar->off += align_up(bytes);
    return p;
}

static float *carve_f(arena_t *ar, size_t n) { return carve(ar, n * sizeof(float)); }

/* A matrix of layout d, its block at the arena's next place; ld rounded up to a multiple of pad. */
static tsr_status_t carve_mat(tsr_gpt_t g, arena_t *ar, const tsr_dmat_desc_t *d, int pad, tsr_dmat_t *out)
{
    tsr_status_t rc = TSR_OK;
    tsr_dmat_view_t v;
    TSR_TRY(tsr_tp_block(g->tp, d, &v));
    int ld = (v.cols + pad - 1) / pad * pad;
    void *p = carve(ar, (size_t)v.rows * (size_t)ld * tsr_dtype_size(d->dtype));
    if (ar->base)
        TSR_TRY(tsr_dmat_wrap(g->tp, d, p, ld, out));
cleanup:
    return rc;
}

/* q, k and v (the heads layout) as three column ranges of one buffer, as attention reads them. */
static tsr_status_t carve_qkv(tsr_gpt_t g, arena_t *ar, tsr_dmat_t *q, tsr_dmat_t *k, tsr_dmat_t *v)
{
    tsr_status_t rc = TSR_OK;
    tsr_dmat_view_t b;
    TSR_TRY(tsr_tp_block(g->tp, &g->heads, &b));
    char *p = carve(ar, (size_t)b.rows * 3 * (size_t)b.cols * g->dts);
    if (ar->base) {
        tsr_dmat_t *m[3] = {q, k, v};
        for (int j = 0; j < 3; j++)
            TSR_TRY(tsr_dmat_wrap(g->tp, &g->heads, p + (size_t)j * b.cols * g->dts, 3 * b.cols, m[j]));
    }
cleanup:
    return rc;
}

/* Local heads of the heads layout, for the attention's log-sum-exp rows. */
static size_t lse_count(tsr_gpt_t g)
{
    tsr_dmat_view_t b;
    if (tsr_tp_block(g->tp, &g->heads, &b) != TSR_OK)
        return 0;
    return (size_t)b.rows * (size_t)(b.cols / (g->cfg.dim / g->cfg.heads));
}

static void free_acts(gpt_acts_t *a)
{
    tsr_dmat_t *m[] = {&a->x, &a->ln1, &a->q, &a->k, &a->v, &a->att, &a->x1, &a->ln2, &a->hpre, &a->hgelu};
    for (size_t i = 0; i < sizeof m / sizeof *m; i++)
        tsr_dmat_destroy(m[i]);
}

static void free_grads(gpt_grads_t *g)
{
    tsr_dmat_t *m[] = {&g->dx, &g->dx1, &g->dh, &g->dln2, &g->dq, &g->dk, &g->dv, &g->dln1};
    for (size_t i = 0; i < sizeof m / sizeof *m; i++)
        tsr_dmat_destroy(m[i]);
}

/* The attention sublayer's internals (ln1 to the attention output). */
static tsr_status_t carve_attention(tsr_gpt_t g, arena_t *ar, gpt_acts_t *a)
{
    tsr_status_t rc = TSR_OK;
    size_t M = (size_t)g->rows;
    TSR_TRY(carve_mat(g, ar, &g->act, 1, &a->ln1));
    TSR_TRY(carve_qkv(g, ar, &a->q, &a->k, &a->v));
    TSR_TRY(carve_mat(g, ar, &g->heads, 1, &a->att));
    a->lse = carve_f(ar, lse_count(g));
    a->mean1 = carve_f(ar, M);
    a->rstd1 = carve_f(ar, M);
cleanup:
    return rc;
}

/* The MLP sublayer's: x1 to the GELU's output. */
static tsr_status_t carve_mlp(tsr_gpt_t g, arena_t *ar, gpt_acts_t *a)
{
    tsr_status_t rc = TSR_OK;
    size_t M = (size_t)g->rows;
    TSR_TRY(carve_mat(g, ar, &g->act, 1, &a->x1));
    TSR_TRY(carve_mat(g, ar, &g->act, 1, &a->ln2));
    TSR_TRY(carve_mat(g, ar, &g->wide, 1, &a->hpre));
    TSR_TRY(carve_mat(g, ar, &g->wide, 1, &a->hgelu));
    a->mean2 = carve_f(ar, M);
    a->rstd2 = carve_f(ar, M);
cleanup:
    return rc;
}

/* A block's backward tensors but dx. */
static tsr_status_t carve_grads(tsr_gpt_t g, arena_t *ar, gpt_grads_t *gr)
{
    tsr_status_t rc = TSR_OK;
    TSR_TRY(carve_mat(g, ar, &g->act, 1, &gr->dx1));
    TSR_TRY(carve_mat(g, ar, &g->wide, 1, &gr->dh));
    TSR_TRY(carve_mat(g, ar, &g->act, 1, &gr->dln2));
    TSR_TRY(carve_qkv(g, ar, &gr->dq, &gr->dk, &gr->dv));
    TSR_TRY(carve_mat(g, ar, &g->act, 1, &gr->dln1));
cleanup:
    return rc;
}

/* ---------- slots ---------- */

static int is_last(tsr_gpt_t g, int k) { return k == g->stages * g->chunks - 1; }
static int vstage_of(tsr_gpt_t g, int chunk) { return chunk * g->stages + g->at.pp; }

/* Blocks whose weight gradients wait for W actions: zero-bubble, no recomputation. */
static int defer_blocks(tsr_gpt_t g) { return g->split_w && g->opts.recompute == TSR_GPT_RECOMPUTE_NONE; }

/* Lay out (ar->base NULL: measure) the slot of virtual stage k. */
static tsr_status_t layout_slot(tsr_gpt_t g, int k, gpt_slot_t *s, arena_t *ar)
{
    tsr_status_t rc = TSR_OK;
    tsr_gpt_recompute_t rec = g->opts.recompute;
    if (k == 0) {
        TSR_TRY(carve_mat(g, ar, &g->act, 1, &s->x0));
        if (g->split_w)
            TSR_TRY(carve_mat(g, ar, &g->act, 1, &s->dx0));
    }
    for (int i = 0; i < s->nb; i++) {
        gpt_acts_t *a = &s->act[i];
        if (i > 0)
            TSR_TRY(carve_mat(g, ar, &g->act, 1, &a->x));
        if (rec == TSR_GPT_RECOMPUTE_NONE)
            TSR_TRY(carve_attention(g, ar, a));
        if (rec != TSR_GPT_RECOMPUTE_BLOCK)
            TSR_TRY(carve_mlp(g, ar, a));
        if (defer_blocks(g)) {
            if (i > 0)
                TSR_TRY(carve_mat(g, ar, &g->act, 1, &s->grad[i].dx));
            TSR_TRY(carve_grads(g, ar, &s->grad[i]));
        }
    }
    if (is_last(g, k)) {
        TSR_TRY(carve_mat(g, ar, &g->act, 1, &s->y));
        TSR_TRY(carve_mat(g, ar, &g->act, 1, &s->lnf));
        TSR_TRY(carve_mat(g, ar, &g->act, 1, &s->d_lnf));
        if (g->split_w)
            TSR_TRY(carve_mat(g, ar, &g->act, 1, &s->g_out));
        s->lnf_mean = carve_f(ar, (size_t)g->rows);
        s->lnf_rstd = carve_f(ar, (size_t)g->rows);
    }
cleanup:
    return rc;
}

static void free_slot(tsr_gpt_t g, gpt_slot_t *s)
{
    for (int i = 0; s->act && i < s->nb; i++)
        free_acts(&s->act[i]);
    for (int i = 0; s->grad && i < s->nb; i++)
        free_grads(&s->grad[i]);
    tsr_dmat_t *m[] = {&s->x0, &s->dx0, &s->y, &s->lnf, &s->d_lnf, &s->g_out};
    for (size_t i = 0; i < sizeof m / sizeof *m; i++)
        tsr_dmat_destroy(m[i]);
    free(s->act);
    free(s->grad);
    tsr_device_free(g->dev, &s->mem);
}

/* A free slot for (chunk, mb), made on first need. */
static tsr_status_t acquire_slot(tsr_gpt_t g, int chunk, int mb, gpt_slot_t **out)
{
    tsr_status_t rc = TSR_OK;
    int k = vstage_of(g, chunk);
    gpt_slot_t *s = NULL;
    for (int i = 0; i < g->nslots && !s; i++)
        if (!g->slots[i].busy && g->slots[i].chunk == chunk)
            s = &g->slots[i];
    if (!s) {
        gpt_slot_t *grown = realloc(g->slots, (size_t)(g->nslots + 1) * sizeof *grown);
        TSR_CHECK(grown, TSR_ERR_OUT_OF_MEMORY, "no memory for an activation slot");
        g->slots = grown;
        s = &g->slots[g->nslots++];
        memset(s, 0, sizeof *s);
        s->chunk = chunk;
        s->nb = g->bounds[k + 1] - g->bounds[k];
        s->act = tsr__calloc((size_t)s->nb, sizeof *s->act);
        s->grad = defer_blocks(g) ? tsr__calloc((size_t)s->nb, sizeof *s->grad) : NULL;
        TSR_CHECK(s->act && (s->grad || !defer_blocks(g)), TSR_ERR_OUT_OF_MEMORY, "no memory for an activation slot");
        arena_t ar = {NULL, 0};
        TSR_TRY(layout_slot(g, k, s, &ar));
        TSR_TRY(tsr_device_alloc(g->dev, TSR_MEM_ACTIVATIONS, ar.off, &s->mem));
        ar = (arena_t){s->mem, 0};
        TSR_TRY(layout_slot(g, k, s, &ar));
    }
    s->busy = 1;
    s->mb = mb;
    *out = s;
cleanup:
    return rc;
}

static gpt_slot_t *find_slot(tsr_gpt_t g, int chunk, int mb)
{
    for (int i = 0; i < g->nslots; i++)
        if (g->slots[i].busy && g->slots[i].chunk == chunk && g->slots[i].mb == mb)
            return &g->slots[i];
    return NULL;
}

void tsr__gpt_release_slots(tsr_gpt_t g)
{
    for (int i = 0; i < g->nslots; i++)
        g->slots[i].busy = 0;
}

/* Block i's activations as a forward or backward reads them: the slot's, the working set's
 * where the slot keeps none, and the first block's input x0 or `in`. */
static gpt_acts_t acts_of(tsr_gpt_t g, const gpt_slot_t *s, int i, tsr_dmat_t in)
{
    gpt_acts_t a = s->act[i];
    const gpt_acts_t *w = &g->ws;
    if (i == 0)
        a.x = s->x0 ? s->x0 : in;
    if (!a.ln1)
        a.ln1 = w->ln1, a.q = w->q, a.k = w->k, a.v = w->v, a.att = w->att, a.lse = w->lse, a.mean1 = w->mean1,
        a.rstd1 = w->rstd1;
    if (!a.x1)
        a.x1 = w->x1, a.ln2 = w->ln2, a.hpre = w->hpre, a.hgelu = w->hgelu, a.mean2 = w->mean2, a.rstd2 = w->rstd2;
    return a;
}

/* ---------- the callbacks ---------- */

static size_t stage_buffer_bytes(void *ctx, int chunk, tsr_pipe_side_t side)
{
    tsr_gpt_t g = ctx;
    tsr_dmat_view_t v = {0};
    (void)chunk, (void)side;
    tsr_tp_block(g->tp, &g->act, &v);
    return (size_t)v.rows * (size_t)v.cols * g->dts;
}

/* An executor buffer as an activation matrix (NULL stays NULL). */
static tsr_status_t wrap_buffer(tsr_gpt_t g, const void *buf, tsr_dmat_t *out)
{
    *out = NULL;
    return buf ? tsr_dmat_wrap(g->tp, &g->act, (void *)buf, 0, out) : TSR_OK;
}

static tsr_status_t stage_forward(void *ctx, int chunk, int mb, const void *in, void *out)
{
    tsr_status_t rc = TSR_OK;
    tsr_gpt_t g = ctx;
    gpt_slot_t *s = NULL;
    tsr_dmat_t xin = NULL, xout = NULL;
    int k = vstage_of(g, chunk), first = g->bounds[k];
    TSR_TRY(acquire_slot(g, chunk, mb, &s));
    TSR_TRY(wrap_buffer(g, in, &xin));
    TSR_TRY(wrap_buffer(g, out, &xout));
    if (k == 0) {
        TSR_TRY(tsr__gpt_use_params(g, 0));
        TSR_TRY(tsr__gpt_use_params(g, g->wte_layer));
        TSR_TRY(tsr__gpt_embed_forward(g, mb, s->x0));
        tsr__gpt_drop_params(g, 0);
        tsr__gpt_drop_params(g, g->wte_layer);
    }
    for (int i = 0; i < s->nb; i++) {
        gpt_acts_t a = acts_of(g, s, i, xin);
        tsr_dmat_t y = i + 1 < s->nb ? s->act[i + 1].x : is_last(g, k) ? s->y : xout;
        TSR_TRY(tsr__gpt_use_params(g, 1 + first + i));
        TSR_TRY(tsr__gpt_block_forward(g, first + i, &a, y, 0));
        tsr__gpt_drop_params(g, 1 + first + i);
    }
    if (is_last(g, k)) {
        TSR_TRY(tsr__gpt_use_params(g, g->cfg.layers + 1));
        TSR_TRY(tsr__gpt_use_params(g, g->wte_layer));
        TSR_TRY(tsr__gpt_head_forward(g, mb, s));
        tsr__gpt_drop_params(g, g->cfg.layers + 1);
        tsr__gpt_drop_params(g, g->wte_layer);
    }
cleanup:
    tsr_dmat_destroy(&xin);
    tsr_dmat_destroy(&xout);
    return rc;
}

/* A weight-gradient pass of one ZeRO layer around `pass`. */
#define WEIGHT_PASS(g, layer, pass)                                                                \
    do {                                                                                           \
        TSR_TRY(tsr__gpt_begin_grads((g), (layer)));                                              \
        TSR_TRY(pass);                                                                            \
        TSR_TRY(tsr__gpt_end_grads((g), (layer)));                                                \
    } while (0)

static tsr_status_t stage_backward(void *ctx, int chunk, int mb, const void *in, const void *grad_out,
                                   void *grad_in)
{
    tsr_status_t rc = TSR_OK;
    tsr_gpt_t g = ctx;
    gpt_slot_t *s = find_slot(g, chunk, mb);
    tsr_dmat_t xin = NULL, gout = NULL, gin = NULL, dy;
    int k = vstage_of(g, chunk), first = g->bounds[k], head = g->cfg.layers + 1;
    tsr_gpt_recompute_t rec = g->opts.recompute;
    TSR_CHECK(s, TSR_ERR_INTERNAL, "backward of chunk %d, micro-batch %d before its forward", chunk, mb);
    TSR_TRY(wrap_buffer(g, in, &xin));
    TSR_TRY(wrap_buffer(g, grad_out, &gout));
    TSR_TRY(wrap_buffer(g, grad_in, &gin));
    dy = gout;
    if (is_last(g, k)) {
        dy = g->split_w ? s->g_out : g->lnf_g_out;
        TSR_TRY(tsr__gpt_use_params(g, head));
        TSR_TRY(tsr__gpt_head_backward_input(g, s, dy));
        if (!g->split_w)
            WEIGHT_PASS(g, head, tsr__gpt_head_backward_weight(g, s));
        tsr__gpt_drop_params(g, head);
    }
    for (int i = s->nb - 1; i >= 0; i--) {
        int l = first + i;
        gpt_acts_t a = acts_of(g, s, i, xin);
        gpt_grads_t gr = defer_blocks(g) ? s->grad[i] : g->gsh;
        if (i > 0 && !defer_blocks(g))
            gr.dx = g->dxbuf[i & 1];
        else if (i == 0)
            gr.dx = k > 0 ? gin : g->split_w ? s->dx0 : g->x0grad;
        TSR_TRY(tsr__gpt_use_params(g, 1 + l));
        if (rec != TSR_GPT_RECOMPUTE_NONE)
            TSR_TRY(tsr__gpt_block_forward(g, l, &a, NULL, rec == TSR_GPT_RECOMPUTE_ATTENTION));
        TSR_TRY(tsr__gpt_block_backward_input(g, l, &a, dy, &gr));
        if (!defer_blocks(g))
            WEIGHT_PASS(g, 1 + l, tsr__gpt_block_backward_weight(g, l, &a, dy, &gr));
        tsr__gpt_drop_params(g, 1 + l);
        dy = gr.dx;
    }
    if (k == 0 && !g->split_w)
        WEIGHT_PASS(g, 0, tsr__gpt_embed_backward(g, mb, g->x0grad));
    if (!g->split_w)
        s->busy = 0;
cleanup:
    tsr_dmat_destroy(&xin);
    tsr_dmat_destroy(&gout);
    tsr_dmat_destroy(&gin);
    return rc;
}

static tsr_status_t stage_weight_grad(void *ctx, int chunk, int mb, const void *in, const void *grad_out)
{
    tsr_status_t rc = TSR_OK;
    tsr_gpt_t g = ctx;
    gpt_slot_t *s = find_slot(g, chunk, mb);
    tsr_dmat_t xin = NULL, gout = NULL;
    int k = vstage_of(g, chunk), first = g->bounds[k];
    TSR_CHECK(s, TSR_ERR_INTERNAL, "weight gradient of chunk %d, micro-batch %d before its forward", chunk, mb);
    TSR_TRY(wrap_buffer(g, in, &xin));
    TSR_TRY(wrap_buffer(g, grad_out, &gout));
    if (is_last(g, k))
        WEIGHT_PASS(g, g->cfg.layers + 1, tsr__gpt_head_backward_weight(g, s));
    for (int i = s->nb - 1; i >= 0 && defer_blocks(g); i--) {
        gpt_acts_t a = acts_of(g, s, i, xin);
        tsr_dmat_t dy = i + 1 < s->nb ? s->grad[i + 1].dx : is_last(g, k) ? s->g_out : gout;
        WEIGHT_PASS(g, 1 + first + i, tsr__gpt_block_backward_weight(g, first + i, &a, dy, &s->grad[i]));
    }
    if (k == 0)
        WEIGHT_PASS(g, 0, tsr__gpt_embed_backward(g, mb, s->dx0));
    s->busy = 0;
cleanup:
    tsr_dmat_destroy(&xin);
    tsr_dmat_destroy(&gout);
    return rc;
}

void tsr__gpt_stage_callbacks(tsr_gpt_t g, tsr_pipe_stage_t *stage)
{
    stage->ctx = g;
    stage->buffer_bytes = stage_buffer_bytes;
    stage->forward = stage_forward;
    stage->backward = stage_backward;
    stage->weight_grad = g->split_w ? stage_weight_grad : NULL;
}

/* ---------- the shared buffers ---------- */

/* Lay out (ar->base NULL: measure) the backward's shared buffers and the head's logits. */
static tsr_status_t layout_shared(tsr_gpt_t g, arena_t *ar)
{
    tsr_status_t rc = TSR_OK;
    int first = g->at.pp == 0, last = g->at.pp == g->stages - 1;
    TSR_TRY(carve_mat(g, ar, &g->heads, 1, &g->d_att));
    if (!defer_blocks(g)) {
        TSR_TRY(carve_grads(g, ar, &g->gsh));
        for (int j = 0; j < 2; j++)
            TSR_TRY(carve_mat(g, ar, &g->act, 1, &g->dxbuf[j]));
    }
    if (first && !g->split_w)
        TSR_TRY(carve_mat(g, ar, &g->act, 1, &g->x0grad));
    if (last) {
        if (!g->split_w)
            TSR_TRY(carve_mat(g, ar, &g->act, 1, &g->lnf_g_out));
        /* rows 64 elements apart, as the GPU's GEMM and cross-entropy kernels prefer */
        TSR_TRY(carve_mat(g, ar, &g->logits, 64, &g->logits_buf));
        g->losses = carve_f(ar, (size_t)g->rows * (size_t)g->opts.micro_batches);
    }
    size_t ntok = (size_t)g->seqs * (size_t)g->cfg.seq;
    g->d_inputs = carve(ar, 2 * ntok * sizeof(int32_t));
    g->d_targets = g->d_inputs ? g->d_inputs + ntok : NULL;
cleanup:
    return rc;
}

/* Lay out the recomputation working set: what the slots do not keep. */
static tsr_status_t layout_ws(tsr_gpt_t g, arena_t *ar)
{
    tsr_status_t rc = TSR_OK;
    TSR_TRY(carve_attention(g, ar, &g->ws));
    if (g->opts.recompute == TSR_GPT_RECOMPUTE_BLOCK)
        TSR_TRY(carve_mlp(g, ar, &g->ws));
cleanup:
    return rc;
}

/* Measure, allocate and lay out one of the two allocations. */
static tsr_status_t make_area(tsr_gpt_t g, tsr_mem_category_t cat, tsr_status_t (*layout)(tsr_gpt_t, arena_t *),
                              void **mem)
{
    tsr_status_t rc = TSR_OK;
    arena_t ar = {NULL, 0};
    TSR_TRY(layout(g, &ar));
    TSR_TRY(tsr_device_alloc(g->dev, cat, ar.off, mem));
    ar = (arena_t){*mem, 0};
    TSR_TRY(layout(g, &ar));
cleanup:
    return rc;
}

tsr_status_t tsr__gpt_stage_create(tsr_gpt_t g)
{
    tsr_status_t rc = TSR_OK;
    tsr_dmat_view_t v;
    TSR_TRY(tsr_tp_block(g->tp, &g->act, &v));
    g->rows = v.rows;
    TSR_TRY(make_area(g, TSR_MEM_WORKSPACE, layout_shared, &g->shared_mem));
    if (g->opts.recompute != TSR_GPT_RECOMPUTE_NONE)
        TSR_TRY(make_area(g, TSR_MEM_ACTIVATIONS, layout_ws, &g->ws_mem));
cleanup:
    return rc;
}

void tsr__gpt_stage_destroy(tsr_gpt_t g)
{
    for (int i = 0; i < g->nslots; i++)
        free_slot(g, &g->slots[i]);
    free(g->slots);
    g->slots = NULL;
    g->nslots = 0;
    free_acts(&g->ws);
    free_grads(&g->gsh);
    tsr_dmat_t *m[] = {&g->dxbuf[0], &g->dxbuf[1], &g->d_att, &g->logits_buf, &g->x0grad, &g->lnf_g_out};
    for (size_t i = 0; i < sizeof m / sizeof *m; i++)
        tsr_dmat_destroy(m[i]);
    tsr_device_free(g->dev, &g->shared_mem);
    tsr_device_free(g->dev, &g->ws_mem);
}
