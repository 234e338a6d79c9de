/*
 * linear.c: Y = X W + b and its backward, in the three layouts of W: 2D (SUMMA),
 * column-parallel and row-parallel (the 1D Megatron pair).
 */
#include <stdlib.h>
#include <string.h>

#include "tp_impl.h"

typedef enum linear_mode { LINEAR_2D, LINEAR_COLUMN, LINEAR_ROW } linear_mode_t;

static const char *const mode_names[] = {"2D", "column-parallel", "row-parallel"};

/* Which algorithm W's layout asks for (see tsr_tp_linear_forward()). */
static linear_mode_t mode_of(tsr_dmat_t x, tsr_dmat_t w)
{
    if (w->parts[0] == 1 && x->parts[1] == 1)
        return LINEAR_COLUMN;
    if (w->desc.row_split == TSR_SPLIT_GRID_COLS && w->parts[0] > 1 && w->parts[1] == 1)
        return LINEAR_ROW;
    return LINEAR_2D;
}

/* Check that X (m×k), W (k×n) and Y (m×n) conform and are laid out as the mode needs. */
static tsr_status_t check_linear(tsr_dmat_t x, tsr_dmat_t w, tsr_dmat_t b, tsr_dmat_t y, linear_mode_t mode)
{
    int ok = x->desc.cols == w->desc.rows && tsr__tp_same_split(x, 0, y, 0);
    if (mode == LINEAR_COLUMN)
        ok = ok && tsr__tp_same_split(w, 1, y, 1);
    else if (mode == LINEAR_ROW)
        ok = ok && tsr__tp_same_split(x, 1, w, 0) && y->parts[1] == 1 && y->desc.cols == w->desc.cols;
    else
        ok = ok && tsr__tp_same_split(w, 1, y, 1);
    if (ok && b)
        ok = b->desc.rows == 1 && tsr__tp_same_split(b, 1, y, 1);
    if (!ok)
        return TSR_ERROR(TSR_ERR_INVALID_ARG,
                         "linear (%s): X %dx%d, W %dx%d, Y %dx%d%s do not conform or are split differently",
                         mode_names[mode], x->desc.rows, x->desc.cols, w->desc.rows, w->desc.cols, y->desc.rows,
                         y->desc.cols, b ? " (with bias)" : "");
    return TSR_OK;
}

/* Every row of the local block of y += b's local block. */
static void add_bias(tsr_dmat_t y, tsr_dmat_t b)
{
    for (int i = 0; i < y->len[0]; i++)
        for (int j = 0; j < y->len[1]; j++)
            y->data[(size_t)i * y->len[1] + j] += b->data[j];
}

/* db += column sums of dy's rows, summed over the ranks that split dy's rows. */
static tsr_status_t bias_grad(tsr_tp_t tp, tsr_dmat_t dy, tsr_dmat_t db)
{
    tsr_status_t rc = TSR_OK;
    float *sum = NULL;
    int n = dy->len[1];
    TSR_TRY(tsr__tp_scratch(tp, TSR_MEM_WORKSPACE, (size_t)n, &sum));
    memset(sum, 0, (size_t)(n ? n : 1) * sizeof(float));
    for (int i = 0; i < dy->len[0]; i++)
        for (int j = 0; j < n; j++)
            sum[j] += dy->data[(size_t)i * n + j];
    TSR_TRY(tsr__tp_add_reduced(tsr__tp_dim_comm(dy, 0), db->data, sum, (size_t)n));
cleanup:
    tsr__tp_scratch_free(tp, &sum);
    return rc;
}

/* dw += xᵀ dy on local blocks, summed over the ranks that split the token rows. */
static tsr_status_t weight_grad_local(tsr_tp_t tp, tsr_dmat_t x, tsr_dmat_t dy, tsr_dmat_t dw)
{
    tsr_status_t rc = TSR_OK;
    float *part = NULL;
    int k = x->len[1], n = dy->len[1], m = x->len[0];
    tsr_comm_t comm = tsr__tp_dim_comm(x, 0);
    if (!comm)
        return tsr_device_gemm_f32(tp->dev, TSR_TRANS, TSR_NO_TRANS, k, n, m, 1.0f, x->data, k > 0 ? k : 1,
                                   dy->data, n > 0 ? n : 1, 1.0f, dw->data, n > 0 ? n : 1);
    TSR_TRY(tsr__tp_scratch(tp, TSR_MEM_WORKSPACE, (size_t)k * n, &part));
    TSR_TRY(tsr_device_gemm_f32(tp->dev, TSR_TRANS, TSR_NO_TRANS, k, n, m, 1.0f, x->data, k > 0 ? k : 1, dy->data,
                                n > 0 ? n : 1, 0.0f, part, n > 0 ? n : 1));
    TSR_TRY(tsr__tp_add_reduced(comm, dw->data, part, (size_t)k * n));
cleanup:
    tsr__tp_scratch_free(tp, &part);
    return rc;
}

tsr_status_t tsr_tp_linear_forward(tsr_tp_t tp, tsr_dmat_t x, tsr_dmat_t w, tsr_dmat_t b, tsr_dmat_t y)
{
    tsr_status_t rc = TSR_OK;
    TSR_CHECK(tp && x && w && y, TSR_ERR_INVALID_ARG, "linear forward: NULL context or matrix");
    linear_mode_t mode = mode_of(x, w);
    TSR_TRY(check_linear(x, w, b, y, mode));
    if (mode == LINEAR_2D) {
        TSR_TRY(tsr_tp_summa(tp, TSR_NO_TRANS, TSR_NO_TRANS, 1.0f, x, w, 0.0f, y));
    } else {
        int m = x->len[0], k = x->len[1], n = y->len[1];
        TSR_TRY(tsr_device_gemm_f32(tp->dev, TSR_NO_TRANS, TSR_NO_TRANS, m, n, k, 1.0f, x->data, k > 0 ? k : 1,
                                    w->data, n > 0 ? n : 1, 0.0f, y->data, n > 0 ? n : 1));
        if (mode == LINEAR_ROW)
            TSR_TRY(tsr_comm_allreduce(tp->row_comm, TSR_IN_PLACE, y->data, (size_t)m * n, TSR_DTYPE_F32,
                                       TSR_REDUCE_SUM));
    }
    if (b)
        add_bias(y, b);
cleanup:
    return rc;
}

tsr_status_t tsr_tp_linear_backward(tsr_tp_t tp, tsr_dmat_t x, tsr_dmat_t w, tsr_dmat_t dy, tsr_dmat_t dx,
                                    tsr_dmat_t dw, tsr_dmat_t db)
{
    return tsr_tp_linear_backward_shared(tp, 1, x, &w, &dy, dx, &dw, db ? &db : NULL);
}

tsr_status_t tsr_tp_linear_backward_shared(tsr_tp_t tp, int n, tsr_dmat_t x, tsr_dmat_t *w, tsr_dmat_t *dy,
                                           tsr_dmat_t dx, tsr_dmat_t *dw, tsr_dmat_t *db)
{
    tsr_status_t rc = TSR_OK;
    TSR_CHECK(tp && x && w && dy && dw && n >= 1, TSR_ERR_INVALID_ARG, "linear backward: NULL context or matrix");
    linear_mode_t mode = mode_of(x, w[0]);
    for (int i = 0; i < n; i++) {
        TSR_CHECK(w[i] && dy[i] && dw[i] && mode_of(x, w[i]) == mode, TSR_ERR_INVALID_ARG,
                  "linear backward: weight %d is NULL or laid out differently from weight 0", i);
        TSR_TRY(check_linear(x, w[i], db ? db[i] : NULL, dy[i], mode));
        TSR_CHECK(tsr__tp_same_layout(w[i], dw[i]) && (!dx || tsr__tp_same_layout(x, dx)), TSR_ERR_INVALID_ARG,
                  "linear backward: dW must be laid out like W and dX like X");
    }
    for (int i = 0; i < n; i++) {
        float keep = i ? 1.0f : 0.0f; /* dX = sum over i of dY_i W_iᵀ */
        if (mode == LINEAR_2D) {
            if (dx)
                TSR_TRY(tsr_tp_summa(tp, TSR_NO_TRANS, TSR_TRANS, 1.0f, dy[i], w[i], keep, dx));
            TSR_TRY(tsr_tp_summa(tp, TSR_TRANS, TSR_NO_TRANS, 1.0f, x, dy[i], 1.0f, dw[i]));
        } else {
            int m = x->len[0], k = x->len[1], o = dy[i]->len[1];
            if (dx)
                TSR_TRY(tsr_device_gemm_f32(tp->dev, TSR_NO_TRANS, TSR_TRANS, m, k, o, 1.0f, dy[i]->data,
                                            o > 0 ? o : 1, w[i]->data, o > 0 ? o : 1, keep, dx->data, k > 0 ? k : 1));
            TSR_TRY(weight_grad_local(tp, x, dy[i], dw[i]));
        }
        if (db && db[i])
            TSR_TRY(bias_grad(tp, dy[i], db[i]));
    }
    /* Column-parallel: the one all-reduce of the backward, after every partial dX is summed. */
    if (dx && mode == LINEAR_COLUMN && w[0]->parts[1] > 1)
        TSR_TRY(tsr_comm_allreduce(tsr__tp_split_comm(tp, w[0]->desc.col_split), TSR_IN_PLACE, dx->data,
                                   (size_t)x->len[0] * x->len[1], TSR_DTYPE_F32, TSR_REDUCE_SUM));
cleanup:
    return rc;
}
