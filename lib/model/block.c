/*
 * block.c: forward and backward of one transformer block and of the head (final layernorm,
 * tied output projection, cross-entropy) for one micro-batch, from the tp operations.
 *
 * Block (pre-LayerNorm, GPT-2):
 *   a = ln1(x); q, k, v = a Wq + bq, a Wk + bk, a Wv + bv; o = attention(q, k, v)
 *   x1 = x + o Wo + bo; b = ln2(x1); h = b W1 + b1; gl = gelu(h); y = x1 + gl W2 + b2
 * Head: y = lnf(x); logits = y wteᵀ; loss = mean cross-entropy(logits, targets).
 *
 * The tied output product: 2D, SUMMA (y·wteᵀ, and dlogits·wte, dlogitsᵀ·y backward);
 * 1D, each rank multiplies by its vocabulary rows of wte locally (logits split by
 * vocabulary, as cross-entropy takes them) and the backward's dy is all-reduced along the
 * tp row.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model_impl.h"

#define LN_EPS 1e-5f

static tsr_status_t new_mat(tsr_gpt_t gpt, const tsr_dmat_desc_t *desc, tsr_dmat_t *out)
{
    return tsr_dmat_create(gpt->tp, desc, out);
}

tsr_status_t tsr__gpt_block_forward(tsr_gpt_t gpt, int l, int mb, tsr_dmat_t x, tsr_dmat_t *y)
{
    tsr_status_t rc = TSR_OK;
    gpt_block_act_t *s = &gpt->bact[(size_t)mb * gpt->cfg.layers + l];
    gpt_tensor_t *p = gpt->block[l];
    tsr_tp_t tp = gpt->tp;
    int hd = gpt->cfg.dim / gpt->cfg.heads;
    tsr_dmat_t out = NULL;
    s->x = x;
    TSR_TRY(new_mat(gpt, &gpt->act, &s->a));
    TSR_TRY(new_mat(gpt, &gpt->heads, &s->q));
    TSR_TRY(new_mat(gpt, &gpt->heads, &s->k));
    TSR_TRY(new_mat(gpt, &gpt->heads, &s->v));
    TSR_TRY(new_mat(gpt, &gpt->heads, &s->o));
    TSR_TRY(new_mat(gpt, &gpt->act, &s->x1));
    TSR_TRY(new_mat(gpt, &gpt->act, &s->b));
    TSR_TRY(new_mat(gpt, &gpt->wide, &s->h));
    TSR_TRY(new_mat(gpt, &gpt->wide, &s->gl));
    TSR_TRY(new_mat(gpt, &gpt->act, &out));
    TSR_TRY(tsr_tp_layernorm_forward(tp, x, p[LN1G].w, p[LN1B].w, LN_EPS, s->a, &s->ln1));
    TSR_TRY(tsr_tp_linear_forward(tp, s->a, p[WQ].w, p[BQ].w, s->q));
    TSR_TRY(tsr_tp_linear_forward(tp, s->a, p[WK].w, p[BK].w, s->k));
    TSR_TRY(tsr_tp_linear_forward(tp, s->a, p[WV].w, p[BV].w, s->v));
    TSR_TRY(tsr_tp_attention_forward(tp, s->q, s->k, s->v, gpt->cfg.seq, hd, s->o, &s->att));
    TSR_TRY(tsr_tp_linear_forward(tp, s->o, p[WO].w, p[BO].w, gpt->proj));
    TSR_TRY(tsr_tp_add(tp, x, gpt->proj, s->x1));
    TSR_TRY(tsr_tp_layernorm_forward(tp, s->x1, p[LN2G].w, p[LN2B].w, LN_EPS, s->b, &s->ln2));
    TSR_TRY(tsr_tp_linear_forward(tp, s->b, p[W1].w, p[B1].w, s->h));
    TSR_TRY(tsr_tp_gelu_forward(tp, s->h, s->gl));
    TSR_TRY(tsr_tp_linear_forward(tp, s->gl, p[W2].w, p[B2].w, out));
    TSR_TRY(tsr_tp_add(tp, s->x1, out, out));
    *y = out;
    out = NULL;
cleanup:
    tsr_dmat_destroy(&out);
    return rc;
}

static void free_block(gpt_block_act_t *s)
{
    tsr_dmat_t *m[] = {&s->x, &s->a, &s->q, &s->k, &s->v, &s->o, &s->x1, &s->b, &s->h, &s->gl};
    for (size_t i = 0; i < sizeof m / sizeof *m; i++)
        tsr_dmat_destroy(m[i]);
    tsr_tp_saved_destroy(&s->ln1);
    tsr_tp_saved_destroy(&s->ln2);
    tsr_tp_saved_destroy(&s->att);
}

tsr_status_t tsr__gpt_block_backward(tsr_gpt_t gpt, int l, int mb, tsr_dmat_t dy, tsr_dmat_t dx)
{
    tsr_status_t rc = TSR_OK;
    gpt_block_act_t *s = &gpt->bact[(size_t)mb * gpt->cfg.layers + l];
    gpt_tensor_t *p = gpt->block[l];
    tsr_tp_t tp = gpt->tp;
    TSR_CHECK(s->x, TSR_ERR_INTERNAL, "block %d backward of micro-batch %d before its forward", l, mb);
    TSR_TRY(tsr_tp_linear_backward(tp, s->gl, p[W2].w, dy, gpt->d_g, p[W2].g, p[B2].g));
    TSR_TRY(tsr_tp_gelu_backward(tp, s->h, gpt->d_g, gpt->d_h));
    TSR_TRY(tsr_tp_linear_backward(tp, s->b, p[W1].w, gpt->d_h, gpt->d_b, p[W1].g, p[B1].g));
    TSR_TRY(tsr_tp_layernorm_backward(tp, s->x1, p[LN2G].w, s->ln2, gpt->d_b, gpt->d_x1, p[LN2G].g, p[LN2B].g));
    TSR_TRY(tsr_tp_add(tp, gpt->d_x1, dy, gpt->d_x1));
    TSR_TRY(tsr_tp_linear_backward(tp, s->o, p[WO].w, gpt->d_x1, gpt->d_o, p[WO].g, p[BO].g));
    TSR_TRY(tsr_tp_attention_backward(tp, s->q, s->k, s->v, s->att, gpt->d_o, gpt->d_q, gpt->d_k, gpt->d_v));
    {
        tsr_dmat_t w[3] = {p[WQ].w, p[WK].w, p[WV].w}, d[3] = {gpt->d_q, gpt->d_k, gpt->d_v};
        tsr_dmat_t dw[3] = {p[WQ].g, p[WK].g, p[WV].g}, db[3] = {p[BQ].g, p[BK].g, p[BV].g};
        TSR_TRY(tsr_tp_linear_backward_shared(tp, 3, s->a, w, d, gpt->d_a, dw, db));
    }
    TSR_TRY(tsr_tp_layernorm_backward(tp, s->x, p[LN1G].w, s->ln1, gpt->d_a, dx, p[LN1G].g, p[LN1B].g));
    TSR_TRY(tsr_tp_add(tp, dx, gpt->d_x1, dx));
cleanup:
    free_block(s);
    return rc;
}

/* 1D: logits (M × this rank's vocabulary rows) = y wte_jᵀ, no communication. */
static tsr_status_t logits_1d(tsr_gpt_t gpt, tsr_dmat_t y, tsr_dmat_t logits)
{
    tsr_dmat_view_t vy, vw, vl;
    tsr_dmat_local(y, &vy);
    tsr_dmat_local(gpt->wte.w, &vw);
    tsr_dmat_local(logits, &vl);
    if (vl.rows == 0 || vl.cols == 0)
        return TSR_OK;
    return tsr_device_gemm_f32(gpt->dev, TSR_NO_TRANS, TSR_TRANS, vl.rows, vl.cols, vy.cols, 1.0f, vy.data, vy.ld,
                               vw.data, vw.ld, 0.0f, vl.data, vl.ld);
}

/* 1D backward: dy = sum over the row of dlogits_j wte_j; dwte_j += dlogits_jᵀ y. */
static tsr_status_t logits_1d_backward(tsr_gpt_t gpt, tsr_dmat_t y, tsr_dmat_t dlogits, tsr_dmat_t dy)
{
    tsr_status_t rc = TSR_OK;
    tsr_dmat_view_t vy, vw, vl, vd, vg;
    tsr_dmat_local(y, &vy);
    tsr_dmat_local(gpt->wte.w, &vw);
    tsr_dmat_local(gpt->wte.g, &vg);
    tsr_dmat_local(dlogits, &vl);
    tsr_dmat_local(dy, &vd);
    TSR_TRY(tsr_dmat_zero(dy));
    if (vl.rows > 0 && vl.cols > 0) {
        TSR_TRY(tsr_device_gemm_f32(gpt->dev, TSR_NO_TRANS, TSR_NO_TRANS, vd.rows, vd.cols, vl.cols, 1.0f, vl.data,
                                    vl.ld, vw.data, vw.ld, 0.0f, vd.data, vd.ld));
        TSR_TRY(tsr_device_gemm_f32(gpt->dev, TSR_TRANS, TSR_NO_TRANS, vg.rows, vg.cols, vl.rows, 1.0f, vl.data,
                                    vl.ld, vy.data, vy.ld, 1.0f, vg.data, vg.ld));
    }
    if (vd.rows > 0 && vd.cols > 0)
        TSR_TRY(tsr_comm_allreduce(tsr_grid_comm(gpt->grid, TSR_AXIS_TP_ROW), TSR_IN_PLACE, vd.data,
                                   (size_t)vd.rows * vd.ld, TSR_DTYPE_F32, TSR_REDUCE_SUM));
cleanup:
    return rc;
}

static const int32_t *mb_targets(tsr_gpt_t gpt, int mb)
{
    return gpt->targets + (size_t)mb * gpt->mb_seqs * gpt->cfg.seq;
}

tsr_status_t tsr__gpt_head_forward(tsr_gpt_t gpt, int mb, tsr_dmat_t x, float *loss)
{
    tsr_status_t rc = TSR_OK;
    gpt_head_act_t *s = &gpt->hact[mb];
    s->x = x;
    TSR_TRY(new_mat(gpt, &gpt->act, &s->y));
    TSR_TRY(new_mat(gpt, &gpt->logits, &s->logits));
    TSR_TRY(tsr_tp_layernorm_forward(gpt->tp, x, gpt->lnfg.w, gpt->lnfb.w, LN_EPS, s->y, &s->lnf));
    if (gpt->oned)
        TSR_TRY(logits_1d(gpt, s->y, s->logits));
    else
        TSR_TRY(tsr_tp_summa(gpt->tp, TSR_NO_TRANS, TSR_TRANS, 1.0f, s->y, gpt->wte.w, 0.0f, s->logits));
    TSR_TRY(tsr_tp_cross_entropy_forward(gpt->tp, s->logits, mb_targets(gpt, mb), loss, &s->ce));
cleanup:
    return rc;
}

static void free_head(gpt_head_act_t *s)
{
    tsr_dmat_destroy(&s->x);
    tsr_dmat_destroy(&s->y);
    tsr_dmat_destroy(&s->logits);
    tsr_tp_saved_destroy(&s->lnf);
    tsr_tp_saved_destroy(&s->ce);
}

tsr_status_t tsr__gpt_head_backward(tsr_gpt_t gpt, int mb, float dloss, tsr_dmat_t dx)
{
    tsr_status_t rc = TSR_OK;
    gpt_head_act_t *s = &gpt->hact[mb];
    TSR_CHECK(s->x, TSR_ERR_INTERNAL, "head backward of micro-batch %d before its forward", mb);
    TSR_TRY(tsr_tp_cross_entropy_backward(gpt->tp, s->logits, mb_targets(gpt, mb), s->ce, dloss, gpt->d_logits));
    if (gpt->oned) {
        TSR_TRY(logits_1d_backward(gpt, s->y, gpt->d_logits, gpt->d_y));
    } else {
        TSR_TRY(tsr_tp_summa(gpt->tp, TSR_NO_TRANS, TSR_NO_TRANS, 1.0f, gpt->d_logits, gpt->wte.w, 0.0f, gpt->d_y));
        TSR_TRY(tsr_tp_summa(gpt->tp, TSR_TRANS, TSR_NO_TRANS, 1.0f, gpt->d_logits, s->y, 1.0f, gpt->wte.g));
    }
    TSR_TRY(tsr_tp_layernorm_backward(gpt->tp, s->x, gpt->lnfg.w, s->lnf, gpt->d_y, dx, gpt->lnfg.g, gpt->lnfb.g));
cleanup:
    free_head(s);
    return rc;
}

void tsr__gpt_free_acts(tsr_gpt_t gpt, int mb)
{
    for (int l = 0; l < gpt->cfg.layers; l++)
        free_block(&gpt->bact[(size_t)mb * gpt->cfg.layers + l]);
    free_head(&gpt->hact[mb]);
}
