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
             nj = (uint64_t)c->len[1];
    int row_bc = tp->cols > 1, col_bc = tp->rows > 1;
    if (trans_a == TSR_NO_TRANS && trans_b == TSR_NO_TRANS) {
        uint64_t k = (uint64_t)a->desc.cols;
        return 4 * ((row_bc ? mi * k : 0) + (col_bc ? k * nj : 0));
    }
    if (trans_a == TSR_NO_TRANS)
        return 4 * ((col_bc ? n * (uint64_t)a->len[1] : 0) + mi * (n - nj));
    return 4 * ((row_bc ? (uint64_t)b->len[0] * m : 0) + nj * (m - mi));
}

uint64_t tsr_tp_linear_bytes(tsr_tp_t tp, tsr_dmat_t x, tsr_dmat_t w, tsr_dmat_t y, int with_bias, int backward)
{
    uint64_t xm = (uint64_t)x->len[0], xk = (uint64_t)x->len[1], yn = (uint64_t)y->len[1];
    int xrows = x->parts[0];
    uint64_t bytes = 0;
    if (!(w->parts[0] == 1 && x->parts[1] == 1) &&
        !(w->desc.row_split == TSR_SPLIT_GRID_COLS && w->parts[0] > 1 && w->parts[1] == 1)) {
        /* 2D: SUMMA forward; dX = dY Wᵀ and dW += Xᵀ dY backward; db down the grid column. */
        if (!backward)
            return tsr_tp_summa_bytes(tp, TSR_NO_TRANS, TSR_NO_TRANS, x, w, y);
        bytes = tsr_tp_summa_bytes(tp, TSR_NO_TRANS, TSR_TRANS, y, w, x) +
                tsr_tp_summa_bytes(tp, TSR_TRANS, TSR_NO_TRANS, x, y, w);
        return bytes + (with_bias ? allreduce_bytes(xrows, 4 * yn) : 0);
    }
    int column = w->parts[0] == 1 && x->parts[1] == 1;
    if (!backward)
        return column ? 0 : allreduce_bytes(tp->cols, 4 * xm * yn);
    if (column)
        bytes += allreduce_bytes(w->parts[1], 4 * xm * xk);
    bytes += allreduce_bytes(xrows, 4 * xk * yn); /* dW, when token rows are split */
    return bytes + (with_bias ? allreduce_bytes(xrows, 4 * yn) : 0);
}
