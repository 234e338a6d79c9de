/*
 * infer.c: the GPT's forward alone, for evaluation and generation, on the one engine: the
 * same blocks (layers.c) in the same tp operations on the same parameters as training.
 *
 * An inference context holds, for this replica's sequences, a key and a value cache per
 * block of this rank (the heads layout of the attention over (sequences × seq) rows: 2D
 * sequences over tp rows and heads over tp columns, 1D heads over the tp columns) and the
 * buffers of one forward of up to seq tokens a sequence, over which each step wraps
 * matrices of its n tokens a sequence. A step runs the virtual stages in order: the owner of
 * stage k receives the activations from the owner of k - 1 on the pp communicator, runs its
 * blocks and sends them on; the owner of the last computes LN_f and the logits (all the
 * step's tokens, or the last of each sequence), which are gathered on its tp rank 0 and
 * broadcast to the replica, or their cross-entropy (tsr_gpt_eval()).
 */
#include <stdlib.h>
#include <string.h>

#include "model_impl.h"

/* Tag of the activations between stages (the executor's tags are done when it returns). */
#define INFER_TAG 0x7ffd

struct tsr_gpt_infer {
    tsr_gpt_t gpt;
    int batch, first, count; /* sequences in all; this replica's */
    int pos;                 /* tokens each sequence holds */
    int seqs_here;           /* this rank's sequences of the replica's (its tp row's share) */
    tsr_dmat_t *kc, *vc;     /* [layers]: the caches of this rank's blocks, NULL elsewhere */
    void *cache_mem, *work_mem, *logits_mem;
    size_t logits_bytes;
    /* one forward's buffers, for seq tokens a sequence */
    void *x[2], *ln1, *qkv, *att, *x1, *ln2, *hpre, *hgelu, *lnf, *last;
    float *mean, *rstd, *losses;
    int32_t *d_tokens, *d_targets;
};

typedef struct arena {
    char *base; /* NULL: only measure */
    size_t off;
} arena_t;

static void *carve(arena_t *ar, size_t bytes)
{
    void *p = ar->base ? ar->base + ar->off : NULL;
    ar->off += (bytes + TSR_DEVICE_ALIGNMENT - 1) / TSR_DEVICE_ALIGNMENT * TSR_DEVICE_ALIGNMENT;
    return p;
}

/* Layouts over the replica's sequences of n tokens (unit n). */
typedef enum { L_ACT, L_HEADS, L_WIDE } lay_t;

static tsr_dmat_desc_t layout(tsr_gpt_t g, lay_t kind, int seqs, int n)
{
    const tsr_split_t N = TSR_SPLIT_NONE, R = TSR_SPLIT_GRID_ROWS, C = TSR_SPLIT_GRID_COLS;
    tsr_dmat_desc_t d = TSR_DMAT_DESC_INIT;
    int h = g->cfg.dim;
    d.rows = seqs * n, d.row_unit = n;
    d.row_split = g->oned ? N : R;
    d.cols = kind == L_WIDE ? 4 * h : h;
    d.col_split = kind == L_ACT && g->oned ? N : C;
    d.col_unit = kind == L_HEADS ? h / g->cfg.heads : 1;
    d.category = TSR_MEM_ACTIVATIONS;
    d.dtype = g->dt;
    return d;
}

/* Elements of this rank's block of a layout. */
static size_t block_elems(tsr_gpt_t g, const tsr_dmat_desc_t *d, int *rows, int *cols)
{
    tsr_dmat_view_t v = {0};
    tsr_tp_block(g->tp, d, &v);
    if (rows)
        *rows = v.rows;
    if (cols)
        *cols = v.cols;
    return (size_t)v.rows * (size_t)v.cols;
}

static int owns_vstage(tsr_gpt_t g, int k) { return k % g->stages == g->at.pp; }

/* Lay out (ar->base NULL: measure) the caches of this rank's blocks. */
static tsr_status_t layout_caches(tsr_gpt_infer_t c, arena_t *ar)
{
    tsr_status_t rc = TSR_OK;
    tsr_gpt_t g = c->gpt;
    tsr_dmat_desc_t d = layout(g, L_HEADS, c->count, g->cfg.seq);
    size_t bytes = block_elems(g, &d, NULL, NULL) * g->dts;
    for (int k = 0; k < g->stages * g->chunks; k++)
        for (int l = g->bounds[k]; l < g->bounds[k + 1] && owns_vstage(g, k); l++) {
            void *pk = carve(ar, bytes), *pv = carve(ar, bytes);
            if (ar->base) {
                TSR_TRY(tsr_dmat_wrap(g->tp, &d, pk, 0, &c->kc[l]));
                TSR_TRY(tsr_dmat_wrap(g->tp, &d, pv, 0, &c->vc[l]));
            }
        }
cleanup:
    return rc;
}

/* Lay out one forward's buffers for seq tokens a sequence. */
static tsr_status_t layout_work(tsr_gpt_infer_t c, arena_t *ar)
{
    tsr_gpt_t g = c->gpt;
    int T = g->cfg.seq, rows = 0;
    tsr_dmat_desc_t act = layout(g, L_ACT, c->count, T), heads = layout(g, L_HEADS, c->count, T),
                    wide = layout(g, L_WIDE, c->count, T), last = layout(g, L_ACT, c->count, 1);
    size_t na = block_elems(g, &act, &rows, NULL) * g->dts, nh = block_elems(g, &heads, NULL, NULL) * g->dts;
    size_t nw = block_elems(g, &wide, NULL, NULL) * g->dts, ntok = (size_t)c->count * (size_t)T;
    c->seqs_here = rows / T;
    c->x[0] = carve(ar, na), c->x[1] = carve(ar, na);
    c->ln1 = carve(ar, na), c->x1 = carve(ar, na), c->ln2 = carve(ar, na), c->lnf = carve(ar, na);
    c->qkv = carve(ar, 3 * nh), c->att = carve(ar, nh);
    c->hpre = carve(ar, nw), c->hgelu = carve(ar, nw);
    c->last = carve(ar, block_elems(g, &last, NULL, NULL) * g->dts);
    c->mean = carve(ar, (size_t)rows * sizeof(float));
    c->rstd = carve(ar, (size_t)rows * sizeof(float));
    c->losses = carve(ar, (size_t)rows * sizeof(float));
    c->d_tokens = carve(ar, ntok * sizeof(int32_t));
    c->d_targets = carve(ar, ntok * sizeof(int32_t));
    return TSR_OK;
}

static tsr_status_t make_area(tsr_gpt_infer_t c, tsr_mem_category_t cat, tsr_status_t (*lay)(tsr_gpt_infer_t, arena_t *),
                              void **mem)
{
    tsr_status_t rc = TSR_OK;
    arena_t ar = {NULL, 0};
    TSR_TRY(lay(c, &ar));
    TSR_TRY(tsr_device_alloc(c->gpt->dev, cat, ar.off ? ar.off : 1, mem));
    ar = (arena_t){*mem, 0};
    TSR_TRY(lay(c, &ar));
cleanup:
    return rc;
}

tsr_status_t tsr_gpt_infer_create(tsr_gpt_t gpt, int batch, tsr_gpt_infer_t *out)
{
    tsr_status_t rc = TSR_OK;
    tsr_gpt_infer_t c = NULL;
    TSR_CHECK(gpt && out, TSR_ERR_INVALID_ARG, "tsr_gpt_infer_create: NULL argument");
    *out = NULL;
    TSR_CHECK(batch >= 1 && batch % gpt->layout.dp == 0, TSR_ERR_INVALID_ARG,
              "a batch of %d sequences does not split over %d data-parallel replicas (expected a positive multiple "
              "of %d)", batch, gpt->layout.dp, gpt->layout.dp);
    TSR_CHECK((int64_t)batch * gpt->cfg.seq <= INT32_MAX / 4, TSR_ERR_INVALID_ARG,
              "a batch of %d sequences of %d tokens is too large", batch, gpt->cfg.seq);
    c = tsr__calloc(1, sizeof *c);
    TSR_CHECK(c, TSR_ERR_OUT_OF_MEMORY, "no memory for an inference context");
    c->gpt = gpt;
    c->batch = batch;
    c->count = batch / gpt->layout.dp;
    c->first = gpt->at.dp * c->count;
    c->kc = tsr__calloc((size_t)gpt->cfg.layers, sizeof *c->kc);
    c->vc = tsr__calloc((size_t)gpt->cfg.layers, sizeof *c->vc);
    TSR_CHECK(c->kc && c->vc, TSR_ERR_OUT_OF_MEMORY, "no memory for an inference context");
    TSR_TRY(make_area(c, TSR_MEM_ACTIVATIONS, layout_caches, &c->cache_mem));
    TSR_TRY(make_area(c, TSR_MEM_WORKSPACE, layout_work, &c->work_mem));
    *out = c;
    c = NULL;
cleanup:
    tsr_gpt_infer_destroy(&c);
    return rc;
}

void tsr_gpt_infer_destroy(tsr_gpt_infer_t *ctx)
{
    if (!ctx || !*ctx)
        return;
    tsr_gpt_infer_t c = *ctx;
    for (int l = 0; c->kc && l < c->gpt->cfg.layers; l++) {
        tsr_dmat_destroy(&c->kc[l]);
        tsr_dmat_destroy(&c->vc[l]);
    }
    free(c->kc);
    free(c->vc);
    tsr_device_free(c->gpt->dev, &c->cache_mem);
    tsr_device_free(c->gpt->dev, &c->work_mem);
    tsr_device_free(c->gpt->dev, &c->logits_mem);
    free(c);
    *ctx = NULL;
}

void tsr_gpt_infer_slice(tsr_gpt_infer_t ctx, int *first, int *count)
{
    *first = ctx->first;
    *count = ctx->count;
}

int tsr_gpt_infer_position(tsr_gpt_infer_t ctx) { return ctx->pos; }

void tsr_gpt_infer_reset(tsr_gpt_infer_t ctx) { ctx->pos = 0; }

/* ---------- one forward ---------- */

/* The matrices of one step over the context's buffers, n tokens a sequence. */
typedef struct step_mats {
    tsr_dmat_t x[2], ln1, q, k, v, att, x1, ln2, hpre, hgelu, lnf, last, logits;
} step_mats_t;

static void free_mats(step_mats_t *m)
{
    tsr_dmat_t *all[] = {&m->x[0], &m->x[1], &m->ln1, &m->q, &m->k, &m->v, &m->att, &m->x1,
                         &m->ln2, &m->hpre, &m->hgelu, &m->lnf, &m->last, &m->logits};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        tsr_dmat_destroy(all[i]);
}

/* The logits' buffer for `rows` sequences-or-tokens (unit `unit`), fp32, grown on demand. */
static tsr_status_t wrap_logits(tsr_gpt_infer_t c, int rows, int unit, tsr_dmat_t *out)
{
    tsr_status_t rc = TSR_OK;
    tsr_gpt_t g = c->gpt;
    tsr_dmat_desc_t d = TSR_DMAT_DESC_INIT;
    d.rows = rows, d.cols = g->cfg.vocab, d.row_unit = unit;
    d.row_split = g->oned ? TSR_SPLIT_NONE : TSR_SPLIT_GRID_ROWS;
    d.col_split = TSR_SPLIT_GRID_COLS;
    d.category = TSR_MEM_ACTIVATIONS;
    size_t bytes = block_elems(g, &d, NULL, NULL) * sizeof(float);
    if (bytes > c->logits_bytes) {
        tsr_device_free(g->dev, &c->logits_mem);
        c->logits_bytes = 0;
        TSR_TRY(tsr_device_alloc(g->dev, TSR_MEM_ACTIVATIONS, bytes, &c->logits_mem));
        c->logits_bytes = bytes;
    }
    TSR_TRY(tsr_dmat_wrap(g->tp, &d, c->logits_mem, 0, out));
cleanup:
    return rc;
}

static tsr_status_t wrap_mats(tsr_gpt_infer_t c, int n, step_mats_t *m)
{
    tsr_status_t rc = TSR_OK;
    tsr_gpt_t g = c->gpt;
    tsr_dmat_desc_t act = layout(g, L_ACT, c->count, n), heads = layout(g, L_HEADS, c->count, n),
                    wide = layout(g, L_WIDE, c->count, n), last = layout(g, L_ACT, c->count, 1);
    int hc = 0;
    block_elems(g, &heads, NULL, &hc);
    for (int j = 0; j < 2; j++)
        TSR_TRY(tsr_dmat_wrap(g->tp, &act, c->x[j], 0, &m->x[j]));
    TSR_TRY(tsr_dmat_wrap(g->tp, &act, c->ln1, 0, &m->ln1));
    TSR_TRY(tsr_dmat_wrap(g->tp, &act, c->x1, 0, &m->x1));
    TSR_TRY(tsr_dmat_wrap(g->tp, &act, c->ln2, 0, &m->ln2));
    TSR_TRY(tsr_dmat_wrap(g->tp, &act, c->lnf, 0, &m->lnf));
    TSR_TRY(tsr_dmat_wrap(g->tp, &last, c->last, 0, &m->last));
    /* q, k and v as three column ranges of one buffer, as the attention reads them */
    tsr_dmat_t *qkv[3] = {&m->q, &m->k, &m->v};
    for (int j = 0; j < 3; j++)
        TSR_TRY(tsr_dmat_wrap(g->tp, &heads, (char *)c->qkv + (size_t)j * hc * g->dts, 3 * hc, qkv[j]));
    TSR_TRY(tsr_dmat_wrap(g->tp, &heads, c->att, 0, &m->att));
    TSR_TRY(tsr_dmat_wrap(g->tp, &wide, c->hpre, 0, &m->hpre));
    TSR_TRY(tsr_dmat_wrap(g->tp, &wide, c->hgelu, 0, &m->hgelu));
cleanup:
    return rc;
}

/* The embedding of the step's tokens at positions pos .. pos + n - 1 into x. */
static tsr_status_t embed(tsr_gpt_infer_t c, int n, tsr_dmat_t x)
{
    tsr_status_t rc = TSR_OK;
    tsr_gpt_t g = c->gpt;
    tsr_dmat_t wpe = NULL;
    tsr_dmat_view_t v;
    TSR_TRY(tsr__gpt_use_params(g, 0));
    TSR_TRY(tsr__gpt_use_params(g, g->wte_layer));
    tsr_dmat_local(g->wpe.w, &v);
    tsr_dmat_desc_t d = g->wpe.desc;
    d.rows = n;
    d.dtype = g->dt;
    TSR_TRY(tsr_dmat_wrap(g->tp, &d, v.data ? (char *)v.data + (size_t)c->pos * v.ld * g->dts : NULL, v.ld, &wpe));
    TSR_TRY(tsr_tp_embedding_forward(g->tp, c->d_tokens, n, g->wte.w, wpe, x));
cleanup:
    tsr_dmat_destroy(&wpe);
    tsr__gpt_drop_params(g, 0);
    tsr__gpt_drop_params(g, g->wte_layer);
    return rc;
}

/* Block l on x into y, through the caches. */
static tsr_status_t block(tsr_gpt_infer_t c, int l, int n, step_mats_t *m, tsr_dmat_t x, tsr_dmat_t y)
{
    tsr_status_t rc = TSR_OK;
    tsr_gpt_t g = c->gpt;
    gpt_acts_t a = {.x = x, .ln1 = m->ln1, .q = m->q, .k = m->k, .v = m->v, .att = m->att, .x1 = m->x1,
                    .ln2 = m->ln2, .hpre = m->hpre, .hgelu = m->hgelu, .mean1 = c->mean, .rstd1 = c->rstd,
                    .mean2 = c->mean, .rstd2 = c->rstd, .kc = c->kc[l], .vc = c->vc[l], .n = n, .pos = c->pos};
    TSR_TRY(tsr__gpt_use_params(g, 1 + l));
    rc = tsr__gpt_block_forward(g, l, &a, y, 0);
    tsr__gpt_drop_params(g, 1 + l);
cleanup:
    return rc;
}

/* LN_f and the logits: of every token (all), or of the last of each sequence. */
static tsr_status_t head(tsr_gpt_infer_t c, int n, int all, step_mats_t *m, tsr_dmat_t y)
{
    tsr_status_t rc = TSR_OK;
    tsr_gpt_t g = c->gpt;
    tsr_dmat_t a = m->lnf;
    TSR_TRY(tsr__gpt_use_params(g, g->cfg.layers + 1));
    TSR_TRY(tsr__gpt_use_params(g, g->wte_layer));
    TSR_TRY(tsr_tp_layernorm_forward(g->tp, y, g->lnfg.w, g->lnfb.w, GPT_LN_EPS, m->lnf, c->mean, c->rstd));
    if (!all) { /* row n - 1 of each of this rank's sequences */
        tsr_dmat_view_t s, d;
        tsr_dmat_local(m->lnf, &s);
        tsr_dmat_local(m->last, &d);
        if (d.rows > 0 && d.cols > 0)
            TSR_TRY(tsr_kernel_axpby_2d(g->dev, d.rows, d.cols, 1.0f, g->dt,
                                        (char *)s.data + (size_t)(n - 1) * s.ld * g->dts, n * s.ld, 0.0f, g->dt,
                                        d.data, d.ld));
        a = m->last;
    }
    TSR_TRY(wrap_logits(c, all ? c->count * n : c->count, all ? n : 1, &m->logits));
    TSR_TRY(tsr_tp_matmul(g->tp, TSR_NO_TRANS, TSR_TRANS, 1.0f, a, g->wte.w, 0.0f, m->logits));
cleanup:
    tsr__gpt_drop_params(g, g->cfg.layers + 1);
    tsr__gpt_drop_params(g, g->wte_layer);
    return rc;
}

/* The step's forward through every virtual stage; the last one's owner ends with m->logits. */
static tsr_status_t forward(tsr_gpt_infer_t c, int n, int all, step_mats_t *m)
{
    tsr_status_t rc = TSR_OK;
    tsr_gpt_t g = c->gpt;
    tsr_comm_t pp = tsr_grid_comm(g->grid, TSR_AXIS_PP);
    int K = g->stages * g->chunks, cur = 0;
    tsr_dmat_view_t v;
    tsr_dmat_local(m->x[0], &v);
    size_t bytes = (size_t)v.rows * (size_t)v.cols * g->dts;
    for (int k = 0; k < K; k++) {
        if (!owns_vstage(g, k))
            continue;
        if (k == 0)
            TSR_TRY(embed(c, n, m->x[cur]));
        else
            TSR_TRY(tsr_comm_recv(pp, c->x[cur], bytes, TSR_DTYPE_U8, (k - 1) % g->stages, INFER_TAG));
        for (int l = g->bounds[k]; l < g->bounds[k + 1]; l++, cur ^= 1)
            TSR_TRY(block(c, l, n, m, m->x[cur], m->x[cur ^ 1]));
        if (k + 1 < K)
            TSR_TRY(tsr_comm_send(pp, c->x[cur], bytes, TSR_DTYPE_U8, (k + 1) % g->stages, INFER_TAG));
        else
            TSR_TRY(head(c, n, all, m, m->x[cur]));
    }
cleanup:
    return rc;
}

/* Token ids of count × n on the host: each inside the vocabulary. */
static tsr_status_t check_tokens(tsr_gpt_t g, const int32_t *t, size_t ntok, const char *what)
{
    for (size_t i = 0; i < ntok; i++)
        if (t[i] < 0 || t[i] >= g->cfg.vocab)
            return TSR_ERROR(TSR_ERR_INVALID_ARG, "%s id %d at position %zu is outside the vocabulary (expected 0 to %d)",
                             what, t[i], i, g->cfg.vocab - 1);
    return TSR_OK;
}

/* The logits of the last stage on every rank of the replica (host fp32). */
static tsr_status_t share_logits(tsr_gpt_infer_t c, step_mats_t *m, size_t rows, float *out)
{
    tsr_status_t rc = TSR_OK;
    tsr_gpt_t g = c->gpt;
    size_t count = rows * (size_t)g->cfg.vocab;
    if (g->at.pp == g->stages - 1) {
        TSR_TRY(tsr_dmat_gather(m->logits, 0, out));
        TSR_TRY(tsr_comm_bcast(tsr_grid_comm(g->grid, TSR_AXIS_TP), out, count, TSR_DTYPE_F32, 0));
    }
    if (g->stages > 1)
        TSR_TRY(tsr_comm_bcast(tsr_grid_comm(g->grid, TSR_AXIS_PP), out, count, TSR_DTYPE_F32, g->stages - 1));
cleanup:
    return rc;
}

tsr_status_t tsr_gpt_infer_step(tsr_gpt_infer_t ctx, int n, const int32_t *tokens, int all_positions,
                                float *logits)
{
    tsr_status_t rc = TSR_OK;
    step_mats_t m = {0};
    TSR_CHECK(ctx && tokens, TSR_ERR_INVALID_ARG, "tsr_gpt_infer_step: NULL argument");
    tsr_gpt_t g = ctx->gpt;
    TSR_CHECK(n >= 1, TSR_ERR_INVALID_ARG, "a step of %d tokens (expected at least 1)", n);
    TSR_CHECK(ctx->pos > 0 || n <= g->cfg.seq, TSR_ERR_INVALID_ARG,
              "a prompt of %d tokens is longer than the context of %d tokens", n, g->cfg.seq);
    TSR_CHECK(n <= g->cfg.seq - ctx->pos, TSR_ERR_INVALID_ARG,
              "%d more tokens after %d would pass the context of %d tokens", n, ctx->pos, g->cfg.seq);
    size_t ntok = (size_t)ctx->count * (size_t)n;
    TSR_TRY(check_tokens(g, tokens, ntok, "token"));
    if (ctx->pos == 0)
        TSR_TRY(tsr__gpt_load_params(g));
    TSR_TRY(tsr_device_copy(g->dev, ctx->d_tokens, tokens, ntok * sizeof(int32_t), TSR_COPY_HOST_TO_DEVICE));
    TSR_TRY(wrap_mats(ctx, n, &m));
    TSR_TRY(forward(ctx, n, all_positions, &m));
    if (logits)
        TSR_TRY(share_logits(ctx, &m, all_positions ? ntok : (size_t)ctx->count, logits));
    ctx->pos += n;
cleanup:
    free_mats(&m);
    return rc;
}

/* ---------- evaluation ---------- */

/* Add the summed cross-entropy of each whole sequence among the @p rows token losses of the
 * last stage's block into seq_loss[first + (row0 + i) / T], in token order, in double: the sum
 * of a sequence is then computed the same way whatever the layout. */
static tsr_status_t add_sequence_losses(tsr_gpt_t g, const float *d_losses, int rows, int row0, int first,
                                        double *seq_loss)
{
    tsr_status_t rc = TSR_OK;
    int T = g->cfg.seq;
    float *h = malloc(sizeof *h * (size_t)rows);
    TSR_CHECK(h, TSR_ERR_OUT_OF_MEMORY, "no memory for %d token losses", rows);
    TSR_TRY(tsr_device_copy(g->dev, h, d_losses, sizeof *h * (size_t)rows, TSR_COPY_DEVICE_TO_HOST));
    for (int i = 0; i < rows; i++)
        seq_loss[first + (row0 + i) / T] += (double)h[i];
cleanup:
    free(h);
    return rc;
}

tsr_status_t tsr_gpt_eval_sequences(tsr_gpt_t gpt, const int32_t *inputs, const int32_t *targets, double *seq_loss)
{
    TSR__REGION(NULL, TSR_PROF_STEP, "eval step", NULL);
    tsr_status_t rc = TSR_OK;
    step_mats_t m = {0};
    TSR_CHECK(gpt && inputs && targets && seq_loss, TSR_ERR_INVALID_ARG, "tsr_gpt_eval_sequences: NULL argument");
    int T = gpt->cfg.seq, B = gpt->opts.batch;
    size_t ntok = (size_t)gpt->seqs * (size_t)T, mb_tok = (size_t)gpt->mb_seqs * (size_t)T;
    memset(seq_loss, 0, sizeof *seq_loss * (size_t)B);
    TSR_TRY(check_tokens(gpt, inputs, ntok, "input token"));
    TSR_TRY(check_tokens(gpt, targets, ntok, "target token"));
    if (!gpt->eval)
        TSR_TRY(tsr_gpt_infer_create(gpt, gpt->mb_seqs * gpt->layout.dp, &gpt->eval));
    tsr_gpt_infer_t c = gpt->eval;
    TSR_TRY(tsr__gpt_load_params(gpt));
    TSR_TRY(wrap_mats(c, T, &m));
    int last = gpt->at.pp == gpt->stages - 1;
    for (int mb = 0; mb < gpt->opts.micro_batches; mb++) {
        c->pos = 0;
        TSR_TRY(tsr_device_copy(gpt->dev, c->d_tokens, inputs + mb * mb_tok, mb_tok * sizeof(int32_t),
                                TSR_COPY_HOST_TO_DEVICE));
        TSR_TRY(forward(c, T, 1, &m));
        if (!last)
            continue;
        tsr_dmat_view_t v;
        TSR_TRY(tsr_device_copy(gpt->dev, c->d_targets, targets + mb * mb_tok, mb_tok * sizeof(int32_t),
                                TSR_COPY_HOST_TO_DEVICE));
        TSR_TRY(tsr_tp_cross_entropy(gpt->tp, m.logits, c->d_targets, 0.0f, c->losses));
        tsr_dmat_local(m.logits, &v);
        /* one rank of the replica's tp row holds each row's loss: its sequence gets one addend */
        if (gpt->at.tp_col == 0 && v.rows > 0)
            TSR_TRY(add_sequence_losses(gpt, c->losses, v.rows, v.row0, gpt->at.dp * gpt->seqs + mb * gpt->mb_seqs,
                                        seq_loss));
        tsr_dmat_destroy(&m.logits);
    }
    c->pos = 0;
    /* Each sequence's sum comes from one rank and zeros from the others: exact. */
    TSR_TRY(tsr_comm_allreduce(tsr_grid_comm(gpt->grid, TSR_AXIS_WORLD), TSR_IN_PLACE, seq_loss, (size_t)B,
                               TSR_DTYPE_F64, TSR_REDUCE_SUM));
cleanup:
    free_mats(&m);
    return rc;
}

tsr_status_t tsr_gpt_eval(tsr_gpt_t gpt, const int32_t *inputs, const int32_t *targets, double *loss)
{
    tsr_status_t rc = TSR_OK;
    double *seq_loss = NULL, sum = 0.0;
    TSR_CHECK(gpt && inputs && targets && loss, TSR_ERR_INVALID_ARG, "tsr_gpt_eval: NULL argument");
    seq_loss = malloc(sizeof *seq_loss * (size_t)gpt->opts.batch);
    TSR_CHECK(seq_loss, TSR_ERR_OUT_OF_MEMORY, "no memory for %d sequence losses", gpt->opts.batch);
    TSR_TRY(tsr_gpt_eval_sequences(gpt, inputs, targets, seq_loss));
    for (int i = 0; i < gpt->opts.batch; i++)
        sum += seq_loss[i];
    *loss = sum / ((double)gpt->opts.batch * (double)gpt->cfg.seq);
cleanup:
    free(seq_loss);
    return rc;
}
