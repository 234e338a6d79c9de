/*
 * attention.c: causal multi-head self-attention on whole sequences and whole heads, by the
 * flash kernels of tessera/kernels.h. Rows are split in units of the sequence length and
 * columns in units of the head size, so each rank owns complete (sequence, head) pairs and
 * needs no communication; no rank ever holds a T×T matrix. Generation appends each step's
 * keys and values to a cache laid out the same way and attends to it (the kernel of
 * tsr_kernel_attention_cached()).
 */
#include <stdlib.h>

#include "tp_impl.h"

/* The local problem: sequences and heads of this rank, and the leading dimensions. */
typedef struct att_shape {
    int seqs, heads, ld_in, ld_o;
} att_shape_t;

static tsr_status_t att_shape(tsr_dmat_t q, tsr_dmat_t k, tsr_dmat_t v, tsr_dmat_t o, int seq, int dim,
                              const char *what, att_shape_t *out)
{
    if (!q || !k || !v || !o || seq < 1 || dim < 1)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "%s: NULL matrix or sequence length %d, head size %d < 1", what, seq,
                         dim);
    if (!tsr__tp_same_layout(q, k) || !tsr__tp_same_layout(q, v) || !tsr__tp_same_layout(q, o))
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "%s: Q, K, V and O must have the same shape and layout", what);
    if (k->ld != q->ld || v->ld != q->ld || k->desc.dtype != q->desc.dtype || v->desc.dtype != q->desc.dtype ||
        o->desc.dtype != q->desc.dtype)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "%s: Q, K and V must share one leading dimension and one type with O",
                         what);
    if (q->start[0] % seq || q->len[0] % seq || q->start[1] % dim || q->len[1] % dim)
        return TSR_ERROR(TSR_ERR_INVALID_ARG,
                         "%s: this rank's block (rows %d+%d, columns %d+%d) must hold whole sequences of %d "
                         "and whole heads of %d; split rows in units of T and columns in units of d",
                         what, q->start[0], q->len[0], q->start[1], q->len[1], seq, dim);
    *out = (att_shape_t){q->len[0] / seq, q->len[1] / dim, q->ld, o->ld};
    return TSR_OK;
}

tsr_status_t tsr_tp_attention_forward(tsr_tp_t tp, tsr_dmat_t q, tsr_dmat_t k, tsr_dmat_t v, int seq_len,
                                      int head_dim, tsr_dmat_t o, float *lse)
{
    tsr_status_t rc = TSR_OK;
    att_shape_t s;
    TSR_CHECK(tp, TSR_ERR_INVALID_ARG, "attention forward: NULL context");
    TSR_TRY(att_shape(q, k, v, o, seq_len, head_dim, "attention forward", &s));
    if (s.seqs == 0 || s.heads == 0) /* a rank can hold no sequence or no head */
        goto cleanup;
    TSR_TRY(tsr_kernel_attention_forward(tp->dev, q->desc.dtype, s.seqs, seq_len, s.heads, head_dim, q->data,
                                         k->data, v->data, s.ld_in, o->data, s.ld_o, lse));
cleanup:
    return rc;
}

tsr_status_t tsr_tp_attention_backward(tsr_tp_t tp, tsr_dmat_t q, tsr_dmat_t k, tsr_dmat_t v, tsr_dmat_t o,
                                       const float *lse, int seq_len, int head_dim, tsr_dmat_t d_o, tsr_dmat_t dq,
                                       tsr_dmat_t dk, tsr_dmat_t dv)
{
    static const char what[] = "attention backward";
    tsr_status_t rc = TSR_OK;
    att_shape_t s, ds;
    void *delta = NULL;
    TSR_CHECK(tp, TSR_ERR_INVALID_ARG, "%s: NULL context", what);
    TSR_TRY(att_shape(q, k, v, o, seq_len, head_dim, what, &s));
    TSR_TRY(att_shape(dq, dk, dv, d_o, seq_len, head_dim, what, &ds));
    TSR_CHECK(tsr__tp_same_layout(q, dq) && ds.ld_in == s.ld_in && ds.ld_o == s.ld_o && dq->desc.dtype == q->desc.dtype,
              TSR_ERR_INVALID_ARG, "%s: dQ, dK, dV and dO must be laid out like Q, K, V and O", what);
    if (s.seqs == 0 || s.heads == 0)
        goto cleanup;
    TSR_TRY(tsr__tp_scratch(tp, TP_SCRATCH_DELTA, (size_t)q->len[0] * s.heads * sizeof(float), &delta));
    TSR_TRY(tsr_kernel_attention_backward(tp->dev, q->desc.dtype, s.seqs, seq_len, s.heads, head_dim, q->data,
                                          k->data, v->data, s.ld_in, o->data, d_o->data, s.ld_o, lse, delta,
                                          dq->data, dk->data, dv->data));
cleanup:
    return rc;
}

/* Whether c is a cache for q's sequences: rows in units of T, the same sequences, columns split alike. */
static int cache_fits(tsr_dmat_t q, int n, tsr_dmat_t c, int T)
{
    return c->desc.rows % T == 0 && c->desc.rows / T == q->desc.rows / n && c->start[0] == q->start[0] / n * T &&
           c->len[0] == q->len[0] / n * T && tsr__tp_same_split(c, 1, q, 1) && c->desc.dtype == q->desc.dtype;
}

tsr_status_t tsr_tp_attention_cached(tsr_tp_t tp, tsr_dmat_t q, tsr_dmat_t k, tsr_dmat_t v, int n, int pos,
                                     int head_dim, tsr_dmat_t k_cache, tsr_dmat_t v_cache, tsr_dmat_t o)
{
    static const char what[] = "attention with a KV cache";
    tsr_status_t rc = TSR_OK;
    att_shape_t s;
    void *lse = NULL;
    TSR_CHECK(tp && k_cache && v_cache, TSR_ERR_INVALID_ARG, "%s: NULL context or cache", what);
    TSR_TRY(att_shape(q, k, v, o, n, head_dim, what, &s));
    int T = k_cache->desc.row_unit;
    TSR_CHECK(tsr__tp_same_layout(k_cache, v_cache) && k_cache->ld == v_cache->ld && cache_fits(q, n, k_cache, T),
              TSR_ERR_INVALID_ARG, "%s: the caches (%dx%d, rows in units of %d) must be laid out alike, hold "
              "this rank's %d sequences and split columns like Q's", what, k_cache->desc.rows, k_cache->desc.cols, T,
              s.seqs);
    TSR_CHECK(pos >= 0 && pos + n <= T, TSR_ERR_INVALID_ARG, "%s: positions %d..%d are outside a cache of %d", what,
              pos, pos + n - 1, T);
    if (s.seqs == 0 || s.heads == 0)
        goto cleanup;
    for (int j = 0; j < s.seqs; j++) {
        size_t src = (size_t)j * n, dst = (size_t)j * T + (size_t)pos;
        TSR_TRY(tsr__tp_axpby(tp, n, q->len[1], 1.0f, k->desc.dtype, tsr__dmat_at(k, (int)src, 0), k->ld, 0.0f,
                              k->desc.dtype, tsr__dmat_at(k_cache, (int)dst, 0), k_cache->ld));
        TSR_TRY(tsr__tp_axpby(tp, n, q->len[1], 1.0f, v->desc.dtype, tsr__dmat_at(v, (int)src, 0), v->ld, 0.0f,
                              v->desc.dtype, tsr__dmat_at(v_cache, (int)dst, 0), v_cache->ld));
    }
    if (pos == 0) { /* the prefill: the training's flash kernels on the new tokens alone */
        TSR_TRY(tsr__tp_scratch(tp, TP_SCRATCH_LSE, (size_t)q->len[0] * s.heads * sizeof(float), &lse));
        TSR_TRY(tsr_kernel_attention_forward(tp->dev, q->desc.dtype, s.seqs, n, s.heads, head_dim, q->data, k->data,
                                             v->data, s.ld_in, o->data, s.ld_o, lse));
    } else {
        TSR_TRY(tsr_kernel_attention_cached(tp->dev, q->desc.dtype, s.seqs, n, pos, T, s.heads, head_dim, q->data,
                                            q->ld, k_cache->data, v_cache->data, k_cache->ld, o->data, o->ld));
    }
cleanup:
    return rc;
}
