/*
 * bytes.c: the bytes each rank sends in SUMMA and in the linear layer, by the counting
 * model of tessera/comm.h. These are the formulas of doc/tp.md; tests compare them with
 * the counters exactly and tsr-bench prints them beside the measured bytes.
 */
#include "tp_impl.h"

/* floor(2 (N-1) S / N): an all-reduce of S bytes over N ranks. */
static uint64_t allreduce_bytes(int ranks, uint64_t s)
{
    return ranks > 1 ? 2 * (uint64_t)(ranks - 1) * s / (uint64_t)ranks : 0;
}

uint64_t tsr_tp_summa_bytes(tsr_tp_t tp, tsr_trans_t trans_a, tsr_trans_t trans_b, tsr_dmat_t a, tsr_dmat_t b,
                            tsr_dmat_t c)
{
    uint64_t m = (uint64_t)c->desc.rows, n = (uint64_t)c->desc.cols, mi = (uint64_t)c->len[0],
             nj = (uint64_t)c->len[1], e = a->es;
    int row_bc = tp->cols > 1, col_bc = tp->rows > 1;
    if (trans_a == TSR_NO_TRANS && trans_b == TSR_NO_TRANS) {
        uint64_t k = (uint64_t)a->desc.cols;
        return e * ((row_bc ? mi * k : 0) + (col_bc ? k * nj : 0));
    }
    if (trans_a == TSR_NO_TRANS)
        return e * (col_bc ? n * (uint64_t)a->len[1] : 0) + 4 * mi * (n - nj);
    return e * (row_bc ? (uint64_t)b->len[0] * m : 0) + 4 * nj * (m - mi);
}

/* Bytes of one product by its plan (tsr__tp_matmul_plan); C's elements are es_c bytes. */
static uint64_t product_bytes(tsr_tp_t tp, tsr_trans_t ta, tsr_trans_t tb, tsr_dmat_t a, tsr_dmat_t b, tsr_dmat_t c,
                              size_t es_c)
{
    tp_gemm_t g = {ta, tb, 1.0f, 0.0f, a, b, c, TSR_EPILOGUE_NONE, NULL, NULL, 0};
    tp_mm_plan_t plan;
    tsr_comm_t kcomm;
    if (tsr__tp_matmul_plan(&g, &plan, &kcomm) != TSR_OK || plan == TP_MM_LOCAL)
        return 0;
    if (plan == TP_MM_SUM)
        return allreduce_bytes(tsr_comm_size(kcomm), es_c * (uint64_t)c->len[0] * (uint64_t)c->len[1]);
    return tsr_tp_summa_bytes(tp, ta, tb, a, b, c);
}

uint64_t tsr_tp_linear_bytes(tsr_tp_t tp, tsr_dmat_t x, tsr_dmat_t w, tsr_dmat_t y, int with_bias, int backward)
{
    if (!backward)
        return product_bytes(tp, TSR_NO_TRANS, TSR_NO_TRANS, x, w, y, y->es);
    /* dX = dY Wᵀ (dY laid out like Y, dX like X); dW += Xᵀ dY in fp32; db down the grid column. */
    uint64_t bytes = product_bytes(tp, TSR_NO_TRANS, TSR_TRANS, y, w, x, x->es) +
                     product_bytes(tp, TSR_TRANS, TSR_NO_TRANS, x, y, w, sizeof(float));
    return bytes + (with_bias ? allreduce_bytes(y->parts[0], 4 * (uint64_t)y->len[1]) : 0);
}
