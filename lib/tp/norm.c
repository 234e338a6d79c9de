/* norm.c: layer normalization, GELU and the residual add on distributed matrices. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tp_impl.h"

/* buf (n doubles) summed over comm, in place; nothing when comm is NULL. */
static tsr_status_t sum_f64(tsr_comm_t comm, double *buf, size_t n)
{
    return comm ? tsr_comm_allreduce(comm, TSR_IN_PLACE, buf, n, TSR_DTYPE_F64, TSR_REDUCE_SUM) : TSR_OK;
}

static tsr_status_t check_vec(tsr_dmat_t v, tsr_dmat_t x, const char *what)
{
    if (!v || v->desc.rows != 1 || !tsr__tp_same_split(v, 1, x, 1))
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "layernorm: %s must be 1x%d with columns split like X's", what,
                         x->desc.cols);
    return TSR_OK;
}

tsr_status_t tsr_tp_layernorm_forward(tsr_tp_t tp, tsr_dmat_t x, tsr_dmat_t gamma, tsr_dmat_t beta, float eps,
                                      tsr_dmat_t y, tsr_tp_saved_t *saved)
{
    tsr_status_t rc = TSR_OK;
    double *stat = NULL;
    tsr_tp_saved_t s = NULL;
    TSR_CHECK(tp && x && y && saved, TSR_ERR_INVALID_ARG, "layernorm forward: NULL argument");
    *saved = NULL;
    TSR_TRY(check_vec(gamma, x, "gamma"));
    TSR_TRY(check_vec(beta, x, "beta"));
    TSR_CHECK(tsr__tp_same_layout(x, y), TSR_ERR_INVALID_ARG, "layernorm: Y must be laid out like X");
    int m = x->len[0], n = x->len[1];
    double width = x->desc.cols;
    stat = calloc(2 * (size_t)m + 1, sizeof *stat);
    TSR_CHECK(stat, TSR_ERR_OUT_OF_MEMORY, "no memory for layernorm statistics");
    /* Sum and sum of squares in double, one all-reduce along the row for both. */
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double v = x->data[(size_t)i * n + j];
            stat[2 * i] += v;
            stat[2 * i + 1] += v * v;
        }
    TSR_TRY(sum_f64(tsr__tp_dim_comm(x, 1), stat, 2 * (size_t)m));
    TSR_TRY(tsr__tp_saved_new(tp, (size_t)m, (size_t)m, &s));
    for (int i = 0; i < m; i++) {
        double mean = stat[2 * i] / width, var = stat[2 * i + 1] / width - mean * mean;
        double rstd = 1.0 / sqrt((var > 0 ? var : 0) + eps);
        s->a[i] = (float)mean;
        s->b[i] = (float)rstd;
        for (int j = 0; j < n; j++) {
            size_t e = (size_t)i * n + j;
            y->data[e] = (float)((x->data[e] - mean) * rstd) * gamma->data[j] + beta->data[j];
        }
    }
    *saved = s;
    s = NULL;
cleanup:
    free(stat);
    tsr_tp_saved_destroy(&s);
    return rc;
}

tsr_status_t tsr_tp_layernorm_backward(tsr_tp_t tp, tsr_dmat_t x, tsr_dmat_t gamma, tsr_tp_saved_t saved,
                                       tsr_dmat_t dy, tsr_dmat_t dx, tsr_dmat_t dgamma, tsr_dmat_t dbeta)
{
    tsr_status_t rc = TSR_OK;
    double *stat = NULL;
    float *pg = NULL;
    TSR_CHECK(tp && x && saved && dy && dx, TSR_ERR_INVALID_ARG, "layernorm backward: NULL argument");
    TSR_TRY(check_vec(gamma, x, "gamma"));
    TSR_TRY(check_vec(dgamma, x, "dgamma"));
    TSR_TRY(check_vec(dbeta, x, "dbeta"));
    TSR_CHECK(tsr__tp_same_layout(x, dy) && tsr__tp_same_layout(x, dx), TSR_ERR_INVALID_ARG,
              "layernorm backward: dY and dX must be laid out like X");
    int m = x->len[0], n = x->len[1];
    double width = x->desc.cols;
    stat = calloc(2 * (size_t)m + 1, sizeof *stat);
    TSR_CHECK(stat, TSR_ERR_OUT_OF_MEMORY, "no memory for layernorm statistics");
    TSR_TRY(tsr__tp_scratch(tp, TSR_MEM_WORKSPACE, 2 * (size_t)n, &pg));
    memset(pg, 0, 2 * (size_t)(n ? n : 1) * sizeof(float));
    /* Row sums of g = dy·gamma and of g·xhat along the row; dgamma, dbeta partials down the column. */
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            size_t e = (size_t)i * n + j;
            double xhat = (x->data[e] - saved->a[i]) * (double)saved->b[i];
            double g = (double)dy->data[e] * gamma->data[j];
            stat[2 * i] += g;
            stat[2 * i + 1] += g * xhat;
            pg[j] += (float)(dy->data[e] * xhat);
            pg[n + j] += dy->data[e];
        }
    TSR_TRY(sum_f64(tsr__tp_dim_comm(x, 1), stat, 2 * (size_t)m));
    for (int i = 0; i < m; i++) {
        double mg = stat[2 * i] / width, mgx = stat[2 * i + 1] / width;
        for (int j = 0; j < n; j++) {
            size_t e = (size_t)i * n + j;
            double xhat = (x->data[e] - saved->a[i]) * (double)saved->b[i];
            double g = (double)dy->data[e] * gamma->data[j];
            dx->data[e] = (float)(saved->b[i] * (g - mg - xhat * mgx));
        }
    }
    tsr_comm_t down = tsr__tp_dim_comm(x, 0);
    if (down)
        TSR_TRY(tsr_comm_allreduce(down, TSR_IN_PLACE, pg, 2 * (size_t)n, TSR_DTYPE_F32, TSR_REDUCE_SUM));
    for (int j = 0; j < n; j++) {
        dgamma->data[j] += pg[j];
        dbeta->data[j] += pg[n + j];
    }
cleanup:
    free(stat);
    tsr__tp_scratch_free(tp, &pg);
    return rc;
}

/* sqrt(2/pi), the constant of the tanh form of GELU. */
#define GELU_SCALE 0.7978845608028654
#define GELU_CUBE 0.044715

tsr_status_t tsr_tp_gelu_forward(tsr_tp_t tp, tsr_dmat_t x, tsr_dmat_t y)
{
    if (!tp || !x || !y || !tsr__tp_same_layout(x, y))
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "gelu forward: Y must be laid out like X");
    size_t n = (size_t)x->len[0] * (size_t)x->len[1];
    for (size_t i = 0; i < n; i++) {
        float v = x->data[i];
        y->data[i] = 0.5f * v * (1.0f + tanhf((float)GELU_SCALE * (v + (float)GELU_CUBE * v * v * v)));
    }
    return TSR_OK;
}

tsr_status_t tsr_tp_gelu_backward(tsr_tp_t tp, tsr_dmat_t x, tsr_dmat_t dy, tsr_dmat_t dx)
{
    if (!tp || !x || !dy || !dx || !tsr__tp_same_layout(x, dy) || !tsr__tp_same_layout(x, dx))
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "gelu backward: dY and dX must be laid out like X");
    size_t n = (size_t)x->len[0] * (size_t)x->len[1];
    for (size_t i = 0; i < n; i++) {
        float v = x->data[i];
        float t = tanhf((float)GELU_SCALE * (v + (float)GELU_CUBE * v * v * v));
        float dt = (float)GELU_SCALE * (1.0f + 3.0f * (float)GELU_CUBE * v * v) * (1.0f - t * t);
        dx->data[i] = dy->data[i] * (0.5f * (1.0f + t) + 0.5f * v * dt);
    }
    return TSR_OK;
}

tsr_status_t tsr_tp_add(tsr_tp_t tp, tsr_dmat_t a, tsr_dmat_t b, tsr_dmat_t y)
{
    if (!tp || !a || !b || !y || !tsr__tp_same_layout(a, b) || !tsr__tp_same_layout(a, y))
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "add: A, B and Y must have the same shape and layout");
    size_t n = (size_t)a->len[0] * (size_t)a->len[1];
    for (size_t i = 0; i < n; i++)
        y->data[i] = a->data[i] + b->data[i];
    return TSR_OK;
}
