/*
 * linear.c: Y = X W + b (+ R) and its backward in two halves, input gradient and weight
 * gradient, on any layout of W (2D by SUMMA; column-parallel and row-parallel, the 1D
 * Megatron pair): each is one product of tsr__tp_matmul(), which picks the algorithm.
 */
#include <stdlib.h>
#include <string.h>

#include "tp_impl.h"

/* b is 1 x n with its columns split like Y's (and whole down the grid column). */
static tsr_status_t check_bias(tsr_dmat_t b, tsr_dmat_t y, const char *what)
{
    if (b && (b->desc.rows != 1 || b->parts[0] != 1 || !tsr__tp_same_split(b, 1, y, 1) ||
              b->desc.dtype != y->desc.dtype))
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "%s: the bias must be 1x%d of %s, its columns split like Y's", what,
                         y->desc.cols, tsr_dtype_name(y->desc.dtype));
    return TSR_OK;
}

tsr_status_t tsr_tp_linear_forward(tsr_tp_t tp, tsr_dmat_t x, tsr_dmat_t w, tsr_dmat_t b, tsr_dmat_t r, tsr_dmat_t y)
{
    tsr_status_t rc = TSR_OK;
    TSR_CHECK(tp && x && w && y, TSR_ERR_INVALID_ARG, "linear forward: NULL context or matrix");
    TSR_TRY(check_bias(b, y, "linear forward"));
    TSR_CHECK(!r || (tsr__tp_same_layout(r, y) && r->desc.dtype == y->desc.dtype), TSR_ERR_INVALID_ARG,
              "linear forward: the residual must be laid out like Y");
    if (r && r != y)
        TSR_TRY(tsr__tp_axpby(tp, y->len[0], y->len[1], 1.0f, r->desc.dtype, r->data, r->ld, 0.0f, y->desc.dtype,
                              y->data, y->ld));
    tp_gemm_t g = {TSR_NO_TRANS, TSR_NO_TRANS, 1.0f, r ? 1.0f : 0.0f, x, w, y,
                   b ? TSR_EPILOGUE_BIAS : TSR_EPILOGUE_NONE, b, NULL, 0};
    TSR_TRY(tsr__tp_matmul(tp, &g));
cleanup:
    return rc;
}

tsr_status_t tsr_tp_linear_gelu_forward(tsr_tp_t tp, tsr_dmat_t x, tsr_dmat_t w, tsr_dmat_t b, tsr_dmat_t h,
                                        tsr_dmat_t y)
{
    tsr_status_t rc = TSR_OK;
    TSR_CHECK(tp && x && w && b && h && y, TSR_ERR_INVALID_ARG, "linear gelu forward: NULL context or matrix");
    TSR_TRY(check_bias(b, y, "linear gelu forward"));
    TSR_CHECK(tsr__tp_same_layout(h, y) && h->desc.dtype == y->desc.dtype, TSR_ERR_INVALID_ARG,
              "linear gelu forward: H must be laid out like Y");
    tp_gemm_t g = {TSR_NO_TRANS, TSR_NO_TRANS, 1.0f, 0.0f, x, w, y, TSR_EPILOGUE_BIAS_GELU, b, h, 0};
    TSR_TRY(tsr__tp_matmul(tp, &g));
cleanup:
    return rc;
}

tsr_status_t tsr_tp_linear_backward_input(tsr_tp_t tp, int n, tsr_dmat_t *w, tsr_dmat_t *dy, tsr_dmat_t dx)
{
    tsr_status_t rc = TSR_OK;
    tp_mm_plan_t plan = TP_MM_LOCAL, first_plan = TP_MM_LOCAL;
    tsr_comm_t kcomm = NULL;
    TSR_CHECK(tp && w && dy && dx && n >= 1, TSR_ERR_INVALID_ARG, "linear backward input: NULL context or matrix");
    for (int i = 0; i < n; i++) {
        TSR_CHECK(w[i] && dy[i], TSR_ERR_INVALID_ARG, "linear backward input: weight or dY %d is NULL", i);
        tp_gemm_t g = {TSR_NO_TRANS, TSR_TRANS, 1.0f, i ? 1.0f : 0.0f, dy[i], w[i], dx, TSR_EPILOGUE_NONE, NULL,
                       NULL, 1};
        TSR_TRY(tsr__tp_matmul_plan(&g, &plan, &kcomm));
        if (i == 0)
            first_plan = plan;
        TSR_CHECK(plan == first_plan, TSR_ERR_INVALID_ARG,
                  "linear backward input: weight %d is laid out differently from weight 0", i);
        /* Column-parallel: each rank's partial dX summed over i here, all-reduced once below. */
        TSR_TRY(tsr__tp_matmul(tp, &g));
    }
    if (plan == TP_MM_SUM && dx->len[0] > 0 && dx->len[1] > 0) {
        TSR_CHECK(tsr__dmat_contiguous(dx), TSR_ERR_INVALID_ARG, "linear backward input: dX must be contiguous");
        TSR_TRY(tsr_comm_allreduce(kcomm, TSR_IN_PLACE, dx->data, (size_t)dx->len[0] * (size_t)dx->len[1],
                                   dx->desc.dtype, TSR_REDUCE_SUM));
    }
cleanup:
    return rc;
}

tsr_status_t tsr_tp_linear_gelu_backward_input(tsr_tp_t tp, tsr_dmat_t w, tsr_dmat_t dy, tsr_dmat_t h, tsr_dmat_t dh)
{
    tsr_status_t rc = TSR_OK;
    TSR_CHECK(tp && w && dy && h && dh, TSR_ERR_INVALID_ARG, "linear gelu backward input: NULL context or matrix");
    TSR_CHECK(tsr__tp_same_layout(h, dh) && h->desc.dtype == dh->desc.dtype, TSR_ERR_INVALID_ARG,
              "linear gelu backward input: dH must be laid out like H");
    tp_gemm_t g = {TSR_NO_TRANS, TSR_TRANS, 1.0f, 0.0f, dy, w, dh, TSR_EPILOGUE_DGELU, NULL, h, 0};
    TSR_TRY(tsr__tp_matmul(tp, &g));
cleanup:
    return rc;
}

/* db += column sums of dy's rows (fp32), summed over the ranks that split dy's rows. */
static tsr_status_t bias_grad(tsr_tp_t tp, tsr_dmat_t dy, tsr_dmat_t db)
{
    tsr_status_t rc = TSR_OK;
    int m = dy->len[0], n = dy->len[1];
    tsr_comm_t down = tsr__tp_dim_comm(dy, 0);
    void *sum = NULL;
    if (n == 0)
        return TSR_OK;
    if (!down) {
        if (m > 0)
            TSR_TRY(tsr_kernel_bias_grad(tp->dev, dy->desc.dtype, m, n, dy->data, dy->ld, (float *)db->data));
        goto cleanup;
    }
    TSR_TRY(tsr__tp_scratch(tp, TP_SCRATCH_BIAS, (size_t)n * sizeof(float), &sum));
    TSR_TRY(tsr_device_memset(tp->dev, sum, 0, (size_t)n * sizeof(float)));
    if (m > 0)
        TSR_TRY(tsr_kernel_bias_grad(tp->dev, dy->desc.dtype, m, n, dy->data, dy->ld, sum));
    TSR_TRY(tsr_comm_allreduce(down, TSR_IN_PLACE, sum, (size_t)n, TSR_DTYPE_F32, TSR_REDUCE_SUM));
    TSR_TRY(tsr_kernel_axpy(tp->dev, (size_t)n, 1.0f, sum, (float *)db->data));
cleanup:
    return rc;
}

tsr_status_t tsr_tp_linear_backward_weight(tsr_tp_t tp, tsr_dmat_t x, tsr_dmat_t dy, tsr_dmat_t dw, tsr_dmat_t db)
{
    tsr_status_t rc = TSR_OK;
    TSR_CHECK(tp && x && dy && dw, TSR_ERR_INVALID_ARG, "linear backward weight: NULL context or matrix");
    TSR_CHECK(dw->desc.dtype == TSR_DTYPE_F32 && (!db || db->desc.dtype == TSR_DTYPE_F32), TSR_ERR_INVALID_ARG,
              "linear backward weight: dW and db accumulate in f32, got %s", tsr_dtype_name(dw->desc.dtype));
    TSR_CHECK(!db || (db->desc.rows == 1 && tsr__tp_same_split(db, 1, dy, 1)), TSR_ERR_INVALID_ARG,
              "linear backward weight: db must be 1x%d with its columns split like dY's", dy->desc.cols);
    tp_gemm_t g = {TSR_TRANS, TSR_NO_TRANS, 1.0f, 1.0f, x, dy, dw, TSR_EPILOGUE_NONE, NULL, NULL, 0};
    TSR_TRY(tsr__tp_matmul(tp, &g));
    if (db)
        TSR_TRY(bias_grad(tp, dy, db));
cleanup:
    return rc;
}
