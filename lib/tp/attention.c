/*
 * attention.c: causal multi-head self-attention on whole sequences and whole heads. Rows
 * are split in units of the sequence length and columns in units of the head size, so
 * each rank owns complete (sequence, head) pairs and needs no communication.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tp_impl.h"

/* The local problem: sequences and heads of this rank, and the row stride of Q, K, V, O. */
typedef struct att_shape {
    int batch, heads, seq, dim, ld;
} att_shape_t;

static tsr_status_t att_shape(tsr_dmat_t q, tsr_dmat_t k, tsr_dmat_t v, tsr_dmat_t o, int seq, int dim,
                              att_shape_t *out)
{
    if (!q || !k || !v || !o || seq < 1 || dim < 1)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "attention: NULL matrix or sequence length %d, head size %d < 1",
                         seq, dim);
    if (!tsr__tp_same_layout(q, k) || !tsr__tp_same_layout(q, v) || !tsr__tp_same_layout(q, o))
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "attention: Q, K, V and O must have the same shape and layout");
    if (q->start[0] % seq || q->len[0] % seq || q->start[1] % dim || q->len[1] % dim)
        return TSR_ERROR(TSR_ERR_INVALID_ARG,
                         "attention: this rank's block (rows %d+%d, columns %d+%d) must hold whole sequences of %d "
                         "and whole heads of %d; split rows in units of T and columns in units of d",
                         q->start[0], q->len[0], q->start[1], q->len[1], seq, dim);
    *out = (att_shape_t){q->len[0] / seq, q->len[1] / dim, seq, dim, q->len[1]};
    return TSR_OK;
}

/* Row t of sequence b, head h, of a local block. */
static float *row_of(float *m, const att_shape_t *s, int b, int t, int h)
{
    return m + ((size_t)b * s->seq + t) * s->ld + (size_t)h * s->dim;
}

tsr_status_t tsr_tp_attention_forward(tsr_tp_t tp, tsr_dmat_t q, tsr_dmat_t k, tsr_dmat_t v, int seq_len,
                                      int head_dim, tsr_dmat_t o, tsr_tp_saved_t *saved)
{
    tsr_status_t rc = TSR_OK;
    tsr_tp_saved_t st = NULL;
    att_shape_t s;
    TSR_CHECK(tp && saved, TSR_ERR_INVALID_ARG, "attention forward: NULL context or saved");
    *saved = NULL;
    TSR_TRY(att_shape(q, k, v, o, seq_len, head_dim, &s));
    TSR_TRY(tsr__tp_saved_new(tp, (size_t)s.batch * s.heads * s.seq * s.seq, 0, &st));
    st->seq = seq_len;
    st->dim = head_dim;
    double scale = 1.0 / sqrt((double)s.dim);
    for (int b = 0; b < s.batch; b++)
        for (int h = 0; h < s.heads; h++)
            for (int i = 0; i < s.seq; i++) {
                float *p = st->a + (((size_t)b * s.heads + h) * s.seq + i) * s.seq;
                const float *qi = row_of(q->data, &s, b, i, h);
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j <= i; j++) {
                    const float *kj = row_of(k->data, &s, b, j, h);
                    double dot = 0;
                    for (int e = 0; e < s.dim; e++)
                        dot += (double)qi[e] * kj[e];
                    p[j] = (float)(dot * scale);
                    mx = p[j] > mx ? p[j] : mx;
                }
                for (int j = 0; j <= i; j++) {
                    double ex = exp(p[j] - mx);
                    p[j] = (float)ex;
                    sum += ex;
                }
                float *oi = row_of(o->data, &s, b, i, h);
                for (int j = 0; j <= i; j++)
                    p[j] = (float)(p[j] / sum);
                for (int e = 0; e < s.dim; e++) {
                    double acc = 0;
                    for (int j = 0; j <= i; j++)
                        acc += (double)p[j] * row_of(v->data, &s, b, j, h)[e];
                    oi[e] = (float)acc;
                }
            }
    *saved = st;
    st = NULL;
cleanup:
    tsr_tp_saved_destroy(&st);
    return rc;
}

tsr_status_t tsr_tp_attention_backward(tsr_tp_t tp, tsr_dmat_t q, tsr_dmat_t k, tsr_dmat_t v, tsr_tp_saved_t saved,
                                       tsr_dmat_t d_o, tsr_dmat_t dq, tsr_dmat_t dk, tsr_dmat_t dv)
{
    tsr_status_t rc = TSR_OK;
    double *datt = NULL;
    att_shape_t s;
    TSR_CHECK(tp && saved, TSR_ERR_INVALID_ARG, "attention backward: NULL context or saved state");
    TSR_TRY(att_shape(q, k, v, d_o, saved->seq, saved->dim, &s));
    TSR_CHECK(dq && dk && dv && tsr__tp_same_layout(q, dq) && tsr__tp_same_layout(q, dk) &&
                  tsr__tp_same_layout(q, dv),
              TSR_ERR_INVALID_ARG, "attention backward: dQ, dK and dV must be laid out like Q");
    TSR_CHECK(saved->na == (size_t)s.batch * s.heads * s.seq * s.seq, TSR_ERR_INVALID_ARG,
              "attention backward: saved state is not from a forward on these matrices");
    datt = malloc((size_t)s.seq * sizeof *datt);
    TSR_CHECK(datt, TSR_ERR_OUT_OF_MEMORY, "no memory for attention backward");
    size_t bytes = (size_t)q->len[0] * (size_t)q->len[1] * sizeof(float);
    if (bytes) { /* a rank can hold no head at all */
        memset(dq->data, 0, bytes);
        memset(dk->data, 0, bytes);
        memset(dv->data, 0, bytes);
    }
    double scale = 1.0 / sqrt((double)s.dim);
    for (int b = 0; b < s.batch; b++)
        for (int h = 0; h < s.heads; h++)
            for (int i = 0; i < s.seq; i++) {
                const float *p = saved->a + (((size_t)b * s.heads + h) * s.seq + i) * s.seq;
                const float *doi = row_of(d_o->data, &s, b, i, h);
                double dot = 0;
                for (int j = 0; j <= i; j++) {
                    const float *vj = row_of(v->data, &s, b, j, h);
                    float *dvj = row_of(dv->data, &s, b, j, h);
                    double acc = 0;
                    for (int e = 0; e < s.dim; e++) {
                        acc += (double)doi[e] * vj[e];
                        dvj[e] += p[j] * doi[e];
                    }
                    datt[j] = acc;
                    dot += p[j] * acc;
                }
                const float *qi = row_of(q->data, &s, b, i, h);
                float *dqi = row_of(dq->data, &s, b, i, h);
                for (int j = 0; j <= i; j++) {
                    float ds = (float)(p[j] * (datt[j] - dot) * scale);
                    const float *kj = row_of(k->data, &s, b, j, h);
                    float *dkj = row_of(dk->data, &s, b, j, h);
                    for (int e = 0; e < s.dim; e++) {
                        dqi[e] += ds * kj[e];
                        dkj[e] += ds * qi[e];
                    }
                }
            }
cleanup:
    free(datt);
    return rc;
}
