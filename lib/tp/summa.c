/*
 * summa.c: SUMMA on the 2D layout. The inner index is walked in panels that never straddle
 * a block boundary of either operand (the two operands can split it differently, e.g. over
 * c columns for A and r rows for B) and are at most the panel width wide.
 *
 *   A·B:  panel of A broadcast along the grid row from its owning column, panel of B along
 *         the grid column from its owning row; every rank adds the product to its C block.
 *   A·Bᵀ: the inner index is split alike in A and B, so each rank forms a partial product of
 *         its k-block; the panel walks C's columns: B's rows are broadcast along the grid
 *         column and the partials are sent along the grid row to the column owning them.
 *   Aᵀ·B: the same with the roles of rows and columns exchanged.
 * Broadcasts are double-buffered (the next panel's broadcast is in flight during this GEMM).
 * The reduction to the owner is a direct send of each partial (comm.h offers no reduce).
 */
#include <stdlib.h>
#include <string.h>

#include "tp_impl.h"

#define TP_TAG_PARTIAL 7102

/* A panel of the walked index: [start, start + len), inside block ia of one split and ib of the other. */
typedef struct panel {
    int start, len, ia, ib;
} panel_t;

/* Cut [0, extent) at the block boundaries of two splits and every `width` elements. */
static tsr_status_t make_panels(tsr_dmat_t a, int da, tsr_dmat_t b, int db, int width, panel_t **out, int *count)
{
    tsr_dmat_desc_t *x = &a->desc, *y = &b->desc;
    int extent = da ? x->cols : x->rows;
    int ua = da ? x->col_unit : x->row_unit, ub = db ? y->col_unit : y->row_unit;
    int pa = a->parts[da], pb = b->parts[db];
    int cap = extent / width + pa + pb + 1, n = 0, ia = 0, ib = 0, pos = 0;
    panel_t *p = malloc((size_t)cap * sizeof *p);
    if (!p)
        return TSR_ERROR(TSR_ERR_OUT_OF_MEMORY, "no memory for %d SUMMA panels", cap);
    while (pos < extent) {
        int sa, la, sb, lb;
        tsr__tp_block(extent, ua, pa, ia, &sa, &la);
        tsr__tp_block(extent, ub, pb, ib, &sb, &lb);
        if (pos >= sa + la) {
            ia++;
            continue;
        }
        if (pos >= sb + lb) {
            ib++;
            continue;
        }
        int end = sa + la < sb + lb ? sa + la : sb + lb;
        int len = end - pos < width ? end - pos : width;
        p[n++] = (panel_t){pos, len, ia, ib};
        pos += len;
    }
    *out = p;
    *count = n;
    return TSR_OK;
}

/* Copy rows x cols of src (leading dimension lds) into dst (leading dimension ldd). */
static void copy2d(float *dst, int ldd, const float *src, int lds, int rows, int cols)
{
    if (cols == 0) /* an empty block has no memory behind it */
        return;
    for (int i = 0; i < rows; i++)
        memcpy(dst + (size_t)i * ldd, src + (size_t)i * lds, (size_t)cols * sizeof(float));
}

/* C = beta C on the local block (beta 0 clears NaNs too). */
static void scale_block(tsr_dmat_t c, float beta)
{
    size_t n = (size_t)c->len[0] * (size_t)c->len[1];
    for (size_t i = 0; i < n; i++)
        c->data[i] = beta == 0.0f ? 0.0f : beta * c->data[i];
}

static int is_2d(tsr_dmat_t d)
{
    return (d->parts[0] == 1 || d->desc.row_split == TSR_SPLIT_GRID_ROWS) &&
           (d->parts[1] == 1 || d->desc.col_split == TSR_SPLIT_GRID_COLS);
}

/* C = alpha A B + beta C. */
static tsr_status_t summa_nn(tsr_tp_t tp, float alpha, tsr_dmat_t a, tsr_dmat_t b, float beta, tsr_dmat_t c)
{
    tsr_status_t rc = TSR_OK;
    panel_t *pan = NULL;
    float *abuf[2] = {NULL, NULL}, *bbuf[2] = {NULL, NULL};
    tsr_request_t req[2][2] = {{NULL, NULL}, {NULL, NULL}};
    int np = 0, w = tp->panel, mi = c->len[0], nj = c->len[1];
    TSR_CHECK(tsr__tp_same_split(a, 0, c, 0) && tsr__tp_same_split(b, 1, c, 1) && a->desc.cols == b->desc.rows,
              TSR_ERR_INVALID_ARG, "SUMMA A·B: A %dx%d, B %dx%d, C %dx%d do not conform or are split differently",
              a->desc.rows, a->desc.cols, b->desc.rows, b->desc.cols, c->desc.rows, c->desc.cols);
    TSR_TRY(make_panels(a, 1, b, 0, w, &pan, &np));
    for (int s = 0; s < 2; s++) {
        TSR_TRY(tsr__tp_scratch(tp, TSR_MEM_COMM, (size_t)mi * w, &abuf[s]));
        TSR_TRY(tsr__tp_scratch(tp, TSR_MEM_COMM, (size_t)w * nj, &bbuf[s]));
    }
    scale_block(c, beta);
    for (int t = 0; t <= np; t++) {
        if (t < np) { /* post panel t, while panel t-1 still waits for its GEMM */
            const panel_t *p = &pan[t];
            int s = t & 1;
            if (tp->col == p->ia)
                copy2d(abuf[s], p->len, a->data + (p->start - a->start[1]), a->len[1], mi, p->len);
            if (tp->row == p->ib)
                copy2d(bbuf[s], nj, b->data + (size_t)(p->start - b->start[0]) * b->len[1], b->len[1], p->len, nj);
            TSR_TRY(tsr_comm_ibcast(tp->row_comm, abuf[s], (size_t)mi * p->len, TSR_DTYPE_F32, p->ia, &req[s][0]));
            TSR_TRY(tsr_comm_ibcast(tp->col_comm, bbuf[s], (size_t)p->len * nj, TSR_DTYPE_F32, p->ib, &req[s][1]));
        }
        if (t > 0) {
            const panel_t *p = &pan[t - 1];
            int s = (t - 1) & 1;
            TSR_TRY(tsr_request_waitall(2, req[s]));
            TSR_TRY(tsr_device_gemm_f32(tp->dev, TSR_NO_TRANS, TSR_NO_TRANS, mi, nj, p->len, alpha, abuf[s],
                                        p->len > 0 ? p->len : 1, bbuf[s], nj > 0 ? nj : 1, 1.0f, c->data,
                                        nj > 0 ? nj : 1));
        }
    }
cleanup:
    for (int s = 0; s < 2; s++) {
        tsr_request_waitall(2, req[s]);
        tsr__tp_scratch_free(tp, &abuf[s]);
        tsr__tp_scratch_free(tp, &bbuf[s]);
    }
    free(pan);
    return rc;
}

/*
 * Add the partial products of one panel on its owner: the owner (rank `owner` of comm)
 * receives size-1 partials of n floats and adds them to its own in `mine`; every other
 * rank sends `mine` (non-blocking: *send must be waited on before `mine` is reused).
 */
static tsr_status_t reduce_to_owner(tsr_comm_t comm, int owner, float *mine, float *recv, size_t n,
                                    tsr_request_t *send)
{
    tsr_status_t rc = TSR_OK;
    int me = tsr_comm_rank(comm), size = tsr_comm_size(comm);
    if (me != owner)
        return tsr_comm_isend(comm, mine, n, TSR_DTYPE_F32, owner, TP_TAG_PARTIAL, send);
    for (int q = 0; q < size; q++) {
        if (q == owner)
            continue;
        TSR_TRY(tsr_comm_recv(comm, recv, n, TSR_DTYPE_F32, q, TP_TAG_PARTIAL));
        for (size_t i = 0; i < n; i++)
            mine[i] += recv[i];
    }
cleanup:
    return rc;
}

/* dst (rows x cols, leading dimension ld) = alpha src (packed) + beta dst. */
static void axpby_block(float *dst, int ld, const float *src, int rows, int cols, float alpha, float beta)
{
    for (int i = 0; i < rows; i++)
        for (int j = 0; j < cols; j++) {
            float *d = dst + (size_t)i * ld + j;
            float s = alpha * src[(size_t)i * cols + j];
            *d = beta == 0.0f ? s : s + beta * *d;
        }
}

/*
 * C = alpha A Bᵀ + beta C (nt != 0) or alpha Aᵀ B + beta C (nt == 0). The panel walks the
 * index shared by the broadcast operand X (B's rows, or A's columns) and C (C's columns,
 * or C's rows); the fixed operand F (A, or B) is used in place.
 */
static tsr_status_t summa_reduce(tsr_tp_t tp, int nt, float alpha, tsr_dmat_t a, tsr_dmat_t b, float beta,
                                 tsr_dmat_t c)
{
    tsr_status_t rc = TSR_OK;
    panel_t *pan = NULL;
    float *xbuf[2] = {NULL, NULL}, *part[2] = {NULL, NULL}, *recv = NULL;
    tsr_request_t bc[2] = {NULL, NULL}, sent[2] = {NULL, NULL};
    tsr_dmat_t x = nt ? b : a, f = nt ? a : b;
    int xd = nt ? 0 : 1, cd = nt ? 1 : 0;            /* walked dimension of X and of C */
    tsr_comm_t xcomm = nt ? tp->col_comm : tp->row_comm; /* along which X's panel travels */
    tsr_comm_t ccomm = nt ? tp->row_comm : tp->col_comm; /* along which partials travel */
    int kl = f->len[nt ? 1 : 0];                     /* my block of the inner index */
    int fo = c->len[nt ? 0 : 1];                     /* C's other dimension, local */
    int np = 0, w = tp->panel;
    TSR_CHECK(nt ? (tsr__tp_same_split(a, 0, c, 0) && tsr__tp_same_split(a, 1, b, 1) && b->desc.rows == c->desc.cols)
                 : (tsr__tp_same_split(b, 1, c, 1) && tsr__tp_same_split(a, 0, b, 0) && a->desc.cols == c->desc.rows),
              TSR_ERR_INVALID_ARG, "SUMMA %s: A %dx%d, B %dx%d, C %dx%d do not conform or are split differently",
              nt ? "A·Bᵀ" : "Aᵀ·B", a->desc.rows, a->desc.cols, b->desc.rows, b->desc.cols, c->desc.rows,
              c->desc.cols);
    TSR_TRY(make_panels(x, xd, c, cd, w, &pan, &np));
    for (int s = 0; s < 2; s++) {
        TSR_TRY(tsr__tp_scratch(tp, TSR_MEM_COMM, (size_t)w * kl, &xbuf[s]));
        TSR_TRY(tsr__tp_scratch(tp, TSR_MEM_COMM, (size_t)w * fo, &part[s]));
    }
    TSR_TRY(tsr__tp_scratch(tp, TSR_MEM_COMM, (size_t)w * fo, &recv));
    for (int t = 0; t <= np; t++) {
        if (t < np) {
            const panel_t *p = &pan[t];
            int s = t & 1, mine = (nt ? tp->row : tp->col) == p->ia;
            if (mine && nt) /* rows of B */
                copy2d(xbuf[s], kl, x->data + (size_t)(p->start - x->start[0]) * x->len[1], x->len[1], p->len, kl);
            else if (mine) /* columns of A */
                copy2d(xbuf[s], p->len, x->data + (p->start - x->start[1]), x->len[1], kl, p->len);
            TSR_TRY(tsr_comm_ibcast(xcomm, xbuf[s], (size_t)p->len * kl, TSR_DTYPE_F32, p->ia, &bc[s]));
        }
        if (t > 0) {
            const panel_t *p = &pan[t - 1];
            int s = (t - 1) & 1, owner = p->ib, l = p->len;
            TSR_TRY(tsr_request_wait(&bc[s]));
            TSR_TRY(tsr_request_wait(&sent[s]));
            if (nt) /* partial (mi x l) = A_loc (mi x kl) · panelᵀ (kl x l) */
                TSR_TRY(tsr_device_gemm_f32(tp->dev, TSR_NO_TRANS, TSR_TRANS, fo, l, kl, 1.0f, f->data,
                                            kl > 0 ? kl : 1, xbuf[s], kl > 0 ? kl : 1, 0.0f, part[s], l));
            else /* partial (l x nj) = panelᵀ (l x kl) · B_loc (kl x nj) */
                TSR_TRY(tsr_device_gemm_f32(tp->dev, TSR_TRANS, TSR_NO_TRANS, l, fo, kl, 1.0f, xbuf[s], l,
                                            f->data, fo > 0 ? fo : 1, 0.0f, part[s], fo > 0 ? fo : 1));
            TSR_TRY(reduce_to_owner(ccomm, owner, part[s], recv, (size_t)l * fo, &sent[s]));
            if (tsr_comm_rank(ccomm) == owner) {
                int off = p->start - c->start[cd];
                if (nt)
                    axpby_block(c->data + off, c->len[1], part[s], fo, l, alpha, beta);
                else
                    axpby_block(c->data + (size_t)off * c->len[1], c->len[1], part[s], l, fo, alpha, beta);
            }
        }
    }
cleanup:
    for (int s = 0; s < 2; s++) {
        tsr_request_wait(&bc[s]);
        tsr_request_wait(&sent[s]);
        tsr__tp_scratch_free(tp, &xbuf[s]);
        tsr__tp_scratch_free(tp, &part[s]);
    }
    tsr__tp_scratch_free(tp, &recv);
    free(pan);
    return rc;
}

tsr_status_t tsr_tp_summa(tsr_tp_t tp, tsr_trans_t trans_a, tsr_trans_t trans_b, float alpha, tsr_dmat_t a,
                          tsr_dmat_t b, float beta, tsr_dmat_t c)
{
    if (!tp || !a || !b || !c)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "tsr_tp_summa: NULL context or matrix");
    if (!is_2d(a) || !is_2d(b) || !is_2d(c))
        return TSR_ERROR(TSR_ERR_INVALID_ARG,
                         "tsr_tp_summa: every matrix must be in the 2D layout (rows over grid rows, columns over "
                         "grid columns)");
    if (trans_a == TSR_NO_TRANS && trans_b == TSR_NO_TRANS)
        return summa_nn(tp, alpha, a, b, beta, c);
    if (trans_a == TSR_NO_TRANS && trans_b == TSR_TRANS)
        return summa_reduce(tp, 1, alpha, a, b, beta, c);
    if (trans_a == TSR_TRANS && trans_b == TSR_NO_TRANS)
        return summa_reduce(tp, 0, alpha, a, b, beta, c);
    return TSR_ERROR(TSR_ERR_NOT_SUPPORTED, "tsr_tp_summa: Aᵀ·Bᵀ is not offered; compute (B·A)ᵀ instead");
}
