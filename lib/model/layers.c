/*
 * layers.c: the GPT's math, in tp operations, for one micro-batch: a transformer block, the
 * embedding and the head, forward and backward, the backward in two halves (input
 * gradients, then weight gradients), whatever the layout and the device.
 *
 * Block l (pre-LayerNorm, GPT-2), M tokens, width C, F = 4C:
 *   ln1 = LN(x); q, k, v = ln1 Wq + bq, ln1 Wk + bk, ln1 Wv + bv; att = attention(q, k, v)
 *   x1 = x + att Wo + bo; ln2 = LN(x1); hpre = ln2 W1 + b1; hgelu = gelu(hpre)
 *   y = x1 + hgelu W2 + b2
 * Input gradients (dy = dL/dy):
 *   dh = (dy W2ᵀ) gelu'(hpre); dln2 = dh W1ᵀ; dx1 = dy + LN2'(dln2); datt = dx1 Woᵀ
 *   dq, dk, dv = attention'(datt); dln1 = dq Wqᵀ + dk Wkᵀ + dv Wvᵀ; dx = dx1 + LN1'(dln1)
 * Weight gradients (from those): dW2 += hgeluᵀ dy, dW1 += ln2ᵀ dh, dWo += attᵀ dx1,
 * dWq += ln1ᵀ dq (k, v alike), the biases' column sums, dgamma and dbeta of both layernorms.
 * Head: lnf = LN_f(y); logits = lnf wteᵀ; loss = cross-entropy, whose gradient replaces the
 * logits at once; dwte += dlogitsᵀ lnf; d_lnf = dlogits wte; the backward is LN_f's.
 */
#include "model_impl.h"

tsr_status_t tsr__gpt_copy(tsr_gpt_t gpt, tsr_dmat_t src, tsr_dmat_t dst)
{
    tsr_dmat_view_t s, d;
    tsr_dmat_local(src, &s);
    tsr_dmat_local(dst, &d);
    if (s.rows == 0 || s.cols == 0)
        return TSR_OK;
    return tsr_kernel_axpby_2d(gpt->dev, s.rows, s.cols, 1.0f, s.dtype, s.data, s.ld, 0.0f, d.dtype, d.data, d.ld);
}

/* The attention sublayer's internals from x: ln1, q, k, v, att (and their statistics). */
static tsr_status_t attention_part(tsr_gpt_t gpt, const gpt_tensor_t *p, const gpt_acts_t *a)
{
    tsr_status_t rc = TSR_OK;
    tsr_tp_t tp = gpt->tp;
    tsr_dmat_t qkv[3] = {a->q, a->k, a->v};
    TSR_TRY(tsr_tp_layernorm_forward(tp, a->x, p[LN1G].w, p[LN1B].w, GPT_LN_EPS, a->ln1, a->mean1, a->rstd1));
    for (int j = 0; j < 3; j++)
        TSR_TRY(tsr_tp_linear_forward(tp, a->ln1, p[WQ + 2 * j].w, p[BQ + 2 * j].w, NULL, qkv[j]));
    if (a->kc)
        TSR_TRY(tsr_tp_attention_cached(tp, a->q, a->k, a->v, a->n, a->pos, gpt->cfg.dim / gpt->cfg.heads, a->kc,
                                        a->vc, a->att));
    else
        TSR_TRY(tsr_tp_attention_forward(tp, a->q, a->k, a->v, gpt->cfg.seq, gpt->cfg.dim / gpt->cfg.heads, a->att,
                                         a->lse));
cleanup:
    return rc;
}

tsr_status_t tsr__gpt_block_forward(tsr_gpt_t gpt, int l, const gpt_acts_t *a, tsr_dmat_t y, int attention_only)
{
    tsr_status_t rc = TSR_OK;
    const gpt_tensor_t *p = gpt->block[l];
    tsr_tp_t tp = gpt->tp;
    TSR_TRY(attention_part(gpt, p, a));
    if (attention_only)
        goto cleanup;
    TSR_TRY(tsr_tp_linear_forward(tp, a->att, p[WO].w, p[BO].w, a->x, a->x1));
    TSR_TRY(tsr_tp_layernorm_forward(tp, a->x1, p[LN2G].w, p[LN2B].w, GPT_LN_EPS, a->ln2, a->mean2, a->rstd2));
    TSR_TRY(tsr_tp_linear_gelu_forward(tp, a->ln2, p[W1].w, p[B1].w, a->hpre, a->hgelu));
    if (y)
        TSR_TRY(tsr_tp_linear_forward(tp, a->hgelu, p[W2].w, p[B2].w, a->x1, y));
cleanup:
    return rc;
}

tsr_status_t tsr__gpt_block_backward_input(tsr_gpt_t gpt, int l, const gpt_acts_t *a, tsr_dmat_t dy,
                                           const gpt_grads_t *g)
{
    tsr_status_t rc = TSR_OK;
    const gpt_tensor_t *p = gpt->block[l];
    tsr_tp_t tp = gpt->tp;
    tsr_dmat_t w1 = p[W1].w, wo = p[WO].w, dh = g->dh, dx1 = g->dx1;
    tsr_dmat_t w[3] = {p[WQ].w, p[WK].w, p[WV].w}, d[3] = {g->dq, g->dk, g->dv};
    TSR_TRY(tsr_tp_linear_gelu_backward_input(tp, p[W2].w, dy, a->hpre, g->dh));
    TSR_TRY(tsr_tp_linear_backward_input(tp, 1, &w1, &dh, g->dln2));
    TSR_TRY(tsr__gpt_copy(gpt, dy, g->dx1));
    TSR_TRY(tsr_tp_layernorm_backward_input(tp, a->x1, p[LN2G].w, a->mean2, a->rstd2, g->dln2, g->dx1));
    TSR_TRY(tsr_tp_linear_backward_input(tp, 1, &wo, &dx1, gpt->d_att));
    TSR_TRY(tsr_tp_attention_backward(tp, a->q, a->k, a->v, a->att, a->lse, gpt->cfg.seq,
                                      gpt->cfg.dim / gpt->cfg.heads, gpt->d_att, g->dq, g->dk, g->dv));
    TSR_TRY(tsr_tp_linear_backward_input(tp, 3, w, d, g->dln1));
    TSR_TRY(tsr__gpt_copy(gpt, g->dx1, g->dx));
    TSR_TRY(tsr_tp_layernorm_backward_input(tp, a->x, p[LN1G].w, a->mean1, a->rstd1, g->dln1, g->dx));
cleanup:
    return rc;
}

tsr_status_t tsr__gpt_block_backward_weight(tsr_gpt_t gpt, int l, const gpt_acts_t *a, tsr_dmat_t dy,
                                            const gpt_grads_t *g)
{
    tsr_status_t rc = TSR_OK;
    gpt_tensor_t *p = gpt->block[l];
    tsr_tp_t tp = gpt->tp;
    tsr_dmat_t d[3] = {g->dq, g->dk, g->dv};
    TSR_TRY(tsr_tp_linear_backward_weight(tp, a->hgelu, dy, p[W2].g, p[B2].g));
    TSR_TRY(tsr_tp_linear_backward_weight(tp, a->ln2, g->dh, p[W1].g, p[B1].g));
    TSR_TRY(tsr_tp_layernorm_backward_weight(tp, a->x1, a->mean2, a->rstd2, g->dln2, p[LN2G].g, p[LN2B].g));
    TSR_TRY(tsr_tp_linear_backward_weight(tp, a->att, g->dx1, p[WO].g, p[BO].g));
    for (int j = 0; j < 3; j++)
        TSR_TRY(tsr_tp_linear_backward_weight(tp, a->ln1, d[j], p[WQ + 2 * j].g, p[BQ + 2 * j].g));
    TSR_TRY(tsr_tp_layernorm_backward_weight(tp, a->x, a->mean1, a->rstd1, g->dln1, p[LN1G].g, p[LN1B].g));
cleanup:
    return rc;
}

/* The token ids of micro-batch mb (device memory, every row of the micro-batch). */
static const int32_t *mb_tokens(tsr_gpt_t gpt, const int32_t *all, int mb)
{
    return all + (size_t)mb * (size_t)gpt->mb_seqs * (size_t)gpt->cfg.seq;
}

tsr_status_t tsr__gpt_embed_forward(tsr_gpt_t gpt, int mb, tsr_dmat_t x)
{
    return tsr_tp_embedding_forward(gpt->tp, mb_tokens(gpt, gpt->d_inputs, mb), gpt->cfg.seq, gpt->wte.w,
                                    gpt->wpe.w, x);
}

tsr_status_t tsr__gpt_embed_backward(tsr_gpt_t gpt, int mb, tsr_dmat_t dx)
{
    return tsr_tp_embedding_backward(gpt->tp, mb_tokens(gpt, gpt->d_inputs, mb), gpt->cfg.seq, dx, gpt->wte_grad,
                                     gpt->wpe.g);
}

tsr_status_t tsr__gpt_head_forward(tsr_gpt_t gpt, int mb, gpt_slot_t *s)
{
    tsr_status_t rc = TSR_OK;
    tsr_tp_t tp = gpt->tp;
    /* the gradient of the mean over the step's tokens of this replica */
    float dscale = 1.0f / ((float)gpt->act.rows * (float)gpt->opts.micro_batches);
    TSR_TRY(tsr_tp_layernorm_forward(tp, s->y, gpt->lnfg.w, gpt->lnfb.w, GPT_LN_EPS, s->lnf, s->lnf_mean,
                                     s->lnf_rstd));
    TSR_TRY(tsr_tp_matmul(tp, TSR_NO_TRANS, TSR_TRANS, 1.0f, s->lnf, gpt->wte.w, 0.0f, gpt->logits_buf));
    TSR_TRY(tsr_tp_cross_entropy(tp, gpt->logits_buf, mb_tokens(gpt, gpt->d_targets, mb), dscale,
                                 gpt->losses + (size_t)mb * (size_t)gpt->rows));
    TSR_TRY(tsr_tp_matmul(tp, TSR_TRANS, TSR_NO_TRANS, 1.0f, gpt->logits_buf, s->lnf, 1.0f, gpt->wte_grad));
    TSR_TRY(tsr_tp_matmul(tp, TSR_NO_TRANS, TSR_NO_TRANS, 1.0f, gpt->logits_buf, gpt->wte.w, 0.0f, s->d_lnf));
cleanup:
    return rc;
}

tsr_status_t tsr__gpt_head_backward_input(tsr_gpt_t gpt, gpt_slot_t *s, tsr_dmat_t g_out)
{
    tsr_status_t rc = TSR_OK;
    TSR_TRY(tsr_dmat_zero(g_out));
    TSR_TRY(tsr_tp_layernorm_backward_input(gpt->tp, s->y, gpt->lnfg.w, s->lnf_mean, s->lnf_rstd, s->d_lnf, g_out));
cleanup:
    return rc;
}

tsr_status_t tsr__gpt_head_backward_weight(tsr_gpt_t gpt, gpt_slot_t *s)
{
    return tsr_tp_layernorm_backward_weight(gpt->tp, s->y, s->lnf_mean, s->lnf_rstd, s->d_lnf, gpt->lnfg.g,
                                            gpt->lnfb.g);
}
