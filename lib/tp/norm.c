/*
 * norm.c: layer normalization, GELU and the residual add on distributed matrices.
 *
 * Layernorm normalizes rows. Where X's columns are whole on each rank (1D; a 2D grid of one
 * column) the one-kernel forward and backward run on the local block. Where they are split
 * (2D), each rank computes its columns' partial statistics, one all-reduce along the grid
 * row sums them, and a second kernel applies them: 3 floats a row forward, 2 backward. The
 * parameter gradients are partial over X's rows where those are split, and are summed down
 * the grid column.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tp_impl.h"

static tsr_status_t check_vec(tsr_dmat_t v, tsr_dmat_t x, tsr_dtype_t dt, const char *what)
{
    if (!v || v->desc.rows != 1 || !tsr__tp_same_split(v, 1, x, 1) || v->desc.dtype != dt)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "layernorm: %s must be 1x%d of %s with columns split like X's", what,
                         x->desc.cols, tsr_dtype_name(dt));
    return TSR_OK;
}

/* The layernorm kernels read whole rows of contiguous blocks. */
static tsr_status_t check_rows(tsr_dmat_t x, tsr_dmat_t y, const char *what, const char *yname)
{
    if (!tsr__tp_same_layout(x, y) || x->desc.dtype != y->desc.dtype)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "%s: %s must be laid out like X", what, yname);
    if (!tsr__dmat_contiguous(x) || !tsr__dmat_contiguous(y))
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "%s: X and %s must be contiguous blocks", what, yname);
    /* Decided from the description, alike on every rank: a rank without columns cannot join
     * the statistics' all-reduce, and its row would pair theirs with a later collective. */
    if (x->desc.rows > 0 && x->parts[1] > x->desc.cols / x->desc.col_unit)
        return TSR_ERROR(TSR_ERR_INVALID_ARG,
                         "%s: X's %d columns (units of %d) are split over %d ranks; some would hold none", what,
                         x->desc.cols, x->desc.col_unit, x->parts[1]);
    return TSR_OK;
}

tsr_status_t tsr_tp_layernorm_forward(tsr_tp_t tp, tsr_dmat_t x, tsr_dmat_t gamma, tsr_dmat_t beta, float eps,
                                      tsr_dmat_t y, float *mean, float *rstd)
{
    static const char what[] = "layernorm forward";
    tsr_status_t rc = TSR_OK;
    void *stats = NULL;
    TSR_CHECK(tp && x && y, TSR_ERR_INVALID_ARG, "%s: NULL argument", what);
    TSR_TRY(check_vec(gamma, x, x->desc.dtype, "gamma"));
    TSR_TRY(check_vec(beta, x, x->desc.dtype, "beta"));
    TSR_TRY(check_rows(x, y, what, "Y"));
    int m = x->len[0], n = x->len[1];
    tsr_comm_t along = tsr__tp_dim_comm(x, 1);
    if (m == 0)
        goto cleanup;
    TSR_CHECK(mean && rstd, TSR_ERR_INVALID_ARG, "%s: NULL mean or rstd", what);
    if (!along) {
        TSR_TRY(tsr_kernel_layernorm_forward(tp->dev, x->desc.dtype, m, n, x->data, gamma->data, beta->data, eps,
                                             y->data, mean, rstd));
        goto cleanup;
    }
    TSR_TRY(tsr__tp_scratch(tp, TP_SCRATCH_STATS, 3 * (size_t)m * sizeof(float), &stats));
    TSR_TRY(tsr_kernel_layernorm_stats(tp->dev, x->desc.dtype, m, n, x->data, stats));
    TSR_TRY(tsr_comm_allreduce(along, TSR_IN_PLACE, stats, 3 * (size_t)m, TSR_DTYPE_F32, TSR_REDUCE_SUM));
    TSR_TRY(tsr_kernel_layernorm_apply(tp->dev, x->desc.dtype, m, n, x->desc.cols, x->data, gamma->data, beta->data,
                                       eps, stats, y->data, mean, rstd));
cleanup:
    return rc;
}

tsr_status_t tsr_tp_layernorm_backward_input(tsr_tp_t tp, tsr_dmat_t x, tsr_dmat_t gamma, const float *mean,
                                             const float *rstd, tsr_dmat_t dy, tsr_dmat_t dx)
{
    static const char what[] = "layernorm backward input";
    tsr_status_t rc = TSR_OK;
    void *stats = NULL;
    TSR_CHECK(tp && x && dy && dx, TSR_ERR_INVALID_ARG, "%s: NULL argument", what);
    TSR_TRY(check_vec(gamma, x, x->desc.dtype, "gamma"));
    TSR_TRY(check_rows(x, dy, what, "dY"));
    TSR_TRY(check_rows(x, dx, what, "dX"));
    int m = x->len[0], n = x->len[1];
    tsr_comm_t along = tsr__tp_dim_comm(x, 1);
    if (m == 0)
        goto cleanup;
    TSR_CHECK(mean && rstd, TSR_ERR_INVALID_ARG, "%s: NULL mean or rstd", what);
    if (!along) {
        TSR_TRY(tsr_kernel_layernorm_backward(tp->dev, x->desc.dtype, m, n, dy->data, x->data, gamma->data, mean,
                                              rstd, dx->data, NULL, NULL));
        goto cleanup;
    }
    TSR_TRY(tsr__tp_scratch(tp, TP_SCRATCH_STATS, 2 * (size_t)m * sizeof(float), &stats));
    TSR_TRY(tsr_kernel_layernorm_backward_stats(tp->dev, x->desc.dtype, m, n, dy->data, x->data, gamma->data, mean,
                                                rstd, stats));
    TSR_TRY(tsr_comm_allreduce(along, TSR_IN_PLACE, stats, 2 * (size_t)m, TSR_DTYPE_F32, TSR_REDUCE_SUM));
    TSR_TRY(tsr_kernel_layernorm_backward_apply(tp->dev, x->desc.dtype, m, n, x->desc.cols, dy->data, x->data,
                                                gamma->data, mean, rstd, stats, dx->data));
cleanup:
    return rc;
}

tsr_status_t tsr_tp_layernorm_backward_weight(tsr_tp_t tp, tsr_dmat_t x, const float *mean, const float *rstd,
                                              tsr_dmat_t dy, tsr_dmat_t dgamma, tsr_dmat_t dbeta)
{
    static const char what[] = "layernorm backward weight";
    tsr_status_t rc = TSR_OK;
    void *part = NULL;
    TSR_CHECK(tp && x && dy, TSR_ERR_INVALID_ARG, "%s: NULL argument", what);
    TSR_TRY(check_vec(dgamma, x, TSR_DTYPE_F32, "dgamma"));
    TSR_TRY(check_vec(dbeta, x, TSR_DTYPE_F32, "dbeta"));
    TSR_TRY(check_rows(x, dy, what, "dY"));
    int m = x->len[0], n = x->len[1];
    tsr_comm_t down = tsr__tp_dim_comm(x, 0);
    if (n == 0)
        goto cleanup;
    if (!down) {
        if (m > 0)
            TSR_TRY(tsr_kernel_layernorm_backward(tp->dev, x->desc.dtype, m, n, dy->data, x->data, NULL, mean, rstd,
                                                  NULL, dgamma->data, dbeta->data));
        goto cleanup;
    }
    TSR_TRY(tsr__tp_scratch(tp, TP_SCRATCH_BIAS, 2 * (size_t)n * sizeof(float), &part));
    float *pg = part, *pb = pg + n;
    TSR_TRY(tsr_device_memset(tp->dev, part, 0, 2 * (size_t)n * sizeof(float)));
    if (m > 0)
        TSR_TRY(tsr_kernel_layernorm_backward(tp->dev, x->desc.dtype, m, n, dy->data, x->data, NULL, mean, rstd, NULL,
                                              pg, pb));
    TSR_TRY(tsr_comm_allreduce(down, TSR_IN_PLACE, part, 2 * (size_t)n, TSR_DTYPE_F32, TSR_REDUCE_SUM));
    TSR_TRY(tsr_kernel_axpy(tp->dev, (size_t)n, 1.0f, pg, (float *)dgamma->data));
    TSR_TRY(tsr_kernel_axpy(tp->dev, (size_t)n, 1.0f, pb, (float *)dbeta->data));
cleanup:
    return rc;
}

/* Elementwise operations take blocks laid out alike and stored without gaps. */
static tsr_status_t check_elementwise(tsr_dmat_t a, tsr_dmat_t b, tsr_dmat_t c, const char *what)
{
    if (!a || !b || !c || !tsr__tp_same_layout(a, b) || !tsr__tp_same_layout(a, c) ||
        a->desc.dtype != b->desc.dtype || a->desc.dtype != c->desc.dtype)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "%s: the matrices must have the same shape, layout and type", what);
    if (!tsr__dmat_contiguous(a) || !tsr__dmat_contiguous(b) || !tsr__dmat_contiguous(c))
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "%s: the blocks must be contiguous", what);
    return TSR_OK;
}

static size_t elements(tsr_dmat_t d) { return (size_t)d->len[0] * (size_t)d->len[1]; }

tsr_status_t tsr_tp_gelu_forward(tsr_tp_t tp, tsr_dmat_t x, tsr_dmat_t y)
{
    tsr_status_t rc = TSR_OK;
    TSR_CHECK(tp, TSR_ERR_INVALID_ARG, "gelu forward: NULL context");
    TSR_TRY(check_elementwise(x, y, y, "gelu forward"));
    TSR_TRY(tsr_kernel_gelu_forward(tp->dev, x->desc.dtype, elements(x), x->data, y->data));
cleanup:
    return rc;
}

tsr_status_t tsr_tp_gelu_backward(tsr_tp_t tp, tsr_dmat_t x, tsr_dmat_t dy, tsr_dmat_t dx)
{
    tsr_status_t rc = TSR_OK;
    TSR_CHECK(tp, TSR_ERR_INVALID_ARG, "gelu backward: NULL context");
    TSR_TRY(check_elementwise(x, dy, dx, "gelu backward"));
    TSR_TRY(tsr_kernel_gelu_backward(tp->dev, x->desc.dtype, elements(x), x->data, dy->data, dx->data));
cleanup:
    return rc;
}

tsr_status_t tsr_tp_add(tsr_tp_t tp, tsr_dmat_t a, tsr_dmat_t b, tsr_dmat_t y)
{
    tsr_status_t rc = TSR_OK;
    TSR_CHECK(tp, TSR_ERR_INVALID_ARG, "add: NULL context");
    TSR_TRY(check_elementwise(a, b, y, "add"));
    TSR_TRY(tsr_kernel_add(tp->dev, a->desc.dtype, elements(a), a->data, b->data, y->data));
cleanup:
    return rc;
}
