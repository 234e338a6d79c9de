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
 * Broadcasts are double-buffered: panel t + 1 is posted before panel t's GEMM is queued, so
 * on a GPU with NCCL the broadcast runs on the communicator's stream beside the GEMM, and on
 * MPI it progresses while the GEMM runs. Panels are packed by tsr_kernel_axpby_2d() on the
 * device. Partial products are fp32 whatever the operands' type, so a bf16 product is
 * rounded once, on its owner; the reduction to the owner is a direct send of each partial.
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

static int is_2d(tsr_dmat_t d)
{
    return (d->parts[0] == 1 || d->desc.row_split == TSR_SPLIT_GRID_ROWS) &&
           (d->parts[1] == 1 || d->desc.col_split == TSR_SPLIT_GRID_COLS);
}

static int at_least_1(int n) { return n > 0 ? n : 1; }

/* One GEMM on device buffers: C (m x n, ldc, type ct) = alpha op(A) op(B) + beta C. */
static tsr_status_t gemm(tsr_tp_t tp, tsr_trans_t ta, tsr_trans_t tb, int m, int n, int k, float alpha,
                         tsr_dtype_t abt, const void *a, int lda, const void *b, int ldb, float beta, tsr_dtype_t ct,
                         void *c, int ldc, tsr_epilogue_t epi, const void *bias)
{
    tsr_gemm_t g = TSR_GEMM_INIT;
    if (m == 0 || n == 0) /* an empty block: no bias or aux memory behind it for the kernel's checks */
        return TSR_OK;
    g.trans_a = ta, g.trans_b = tb, g.m = m, g.n = n, g.k = k, g.alpha = alpha, g.beta = beta;
    g.ab_type = abt, g.c_type = ct;
    g.a = a, g.lda = at_least_1(lda), g.b = b, g.ldb = at_least_1(ldb), g.c = c, g.ldc = at_least_1(ldc);
    g.epilogue = epi, g.bias = bias;
    return tsr_kernel_gemm(tp->dev, &g);
}

/* C = alpha A B + beta C (+ bias): A's panels along the row, B's down the column. */
static tsr_status_t summa_nn(tsr_tp_t tp, const tp_gemm_t *g)
{
    tsr_status_t rc = TSR_OK;
    tsr_dmat_t a = g->a, b = g->b, c = g->c;
    panel_t *pan = NULL;
    void *abuf[2], *bbuf[2];
    tsr_request_t req[2][2] = {{NULL, NULL}, {NULL, NULL}};
    tsr_dtype_t dt = a->desc.dtype;
    int np = 0, w = tp->panel, mi = c->len[0], nj = c->len[1];
    TSR_CHECK(tsr__tp_same_split(a, 0, c, 0) && tsr__tp_same_split(b, 1, c, 1) && a->desc.cols == b->desc.rows,
              TSR_ERR_INVALID_ARG, "SUMMA A·B: A %dx%d, B %dx%d, C %dx%d do not conform or are split differently",
              a->desc.rows, a->desc.cols, b->desc.rows, b->desc.cols, c->desc.rows, c->desc.cols);
    TSR_TRY(make_panels(a, 1, b, 0, w, &pan, &np));
    for (int s = 0; s < 2; s++) {
        TSR_TRY(tsr__tp_scratch(tp, TP_SCRATCH_PANEL_A0 + s, (size_t)mi * w * a->es, &abuf[s]));
        TSR_TRY(tsr__tp_scratch(tp, TP_SCRATCH_PANEL_B0 + s, (size_t)w * nj * a->es, &bbuf[s]));
    }
    if (np == 0) /* k = 0: C = beta C */
        TSR_TRY(gemm(tp, TSR_NO_TRANS, TSR_NO_TRANS, mi, nj, 0, g->alpha, dt, NULL, 1, NULL, 1, g->beta,
                     c->desc.dtype, c->data, c->ld, TSR_EPILOGUE_NONE, NULL));
    for (int t = 0; t <= np; t++) {
        if (t < np) { /* post panel t, while panel t-1 still waits for its GEMM */
            const panel_t *p = &pan[t];
            int s = t & 1;
            if (tp->col == p->ia)
                TSR_TRY(tsr__tp_axpby(tp, mi, p->len, 1.0f, dt, tsr__dmat_at(a, 0, p->start - a->start[1]), a->ld,
                                      0.0f, dt, abuf[s], p->len));
            if (tp->row == p->ib)
                TSR_TRY(tsr__tp_axpby(tp, p->len, nj, 1.0f, dt, tsr__dmat_at(b, p->start - b->start[0], 0), b->ld,
                                      0.0f, dt, bbuf[s], nj));
            TSR_TRY(tsr_comm_ibcast(tp->row_comm, abuf[s], (size_t)mi * p->len, dt, p->ia, &req[s][0]));
            TSR_TRY(tsr_comm_ibcast(tp->col_comm, bbuf[s], (size_t)p->len * nj, dt, p->ib, &req[s][1]));
        }
        if (t > 0) {
            const panel_t *p = &pan[t - 1];
            int s = (t - 1) & 1, first = t == 1;
            TSR_TRY(tsr_request_waitall(2, req[s]));
            TSR_TRY(gemm(tp, TSR_NO_TRANS, TSR_NO_TRANS, mi, nj, p->len, g->alpha, dt, abuf[s], p->len, bbuf[s], nj,
                         first ? g->beta : 1.0f, c->desc.dtype, c->data, c->ld,
                         first && g->bias ? TSR_EPILOGUE_BIAS : TSR_EPILOGUE_NONE, g->bias ? g->bias->data : NULL));
        }
    }
cleanup:
    for (int s = 0; s < 2; s++)
        tsr_request_waitall(2, req[s]);
    free(pan);
    return rc;
}

/*
 * Add the fp32 partial products of one panel on its owner: the owner (rank `owner` of comm)
 * receives size-1 partials of rows x cols and adds them to its own in `mine`; every other
 * rank sends `mine` (non-blocking: *send must be waited on before `mine` is reused).
 */
static tsr_status_t reduce_to_owner(tsr_tp_t tp, tsr_comm_t comm, int owner, float *mine, float *recv, int rows,
                                    int cols, tsr_request_t *send)
{
    tsr_status_t rc = TSR_OK;
    int me = tsr_comm_rank(comm), size = tsr_comm_size(comm);
    size_t n = (size_t)rows * (size_t)cols;
    if (me != owner)
        return tsr_comm_isend(comm, mine, n, TSR_DTYPE_F32, owner, TP_TAG_PARTIAL, send);
    for (int q = 0; q < size; q++) {
        if (q == owner)
            continue;
        TSR_TRY(tsr_comm_recv(comm, recv, n, TSR_DTYPE_F32, q, TP_TAG_PARTIAL));
        TSR_TRY(tsr__tp_axpby(tp, rows, cols, 1.0f, TSR_DTYPE_F32, recv, cols, 1.0f, TSR_DTYPE_F32, mine, cols));
    }
cleanup:
    return rc;
}

/*
 * C = alpha A Bᵀ + beta C (nt != 0) or alpha Aᵀ B + beta C (nt == 0). The panel walks the
 * index shared by the broadcast operand X (B's rows, or A's columns) and C (C's columns,
 * or C's rows); the fixed operand F (A, or B) is used in place.
 */
static tsr_status_t summa_reduce(tsr_tp_t tp, int nt, const tp_gemm_t *g)
{
    tsr_status_t rc = TSR_OK;
    tsr_dmat_t a = g->a, b = g->b, c = g->c;
    panel_t *pan = NULL;
    void *xbuf[2], *part[2], *recv;
    tsr_request_t bc[2] = {NULL, NULL}, sent[2] = {NULL, NULL};
    tsr_dmat_t x = nt ? b : a, f = nt ? a : b;
    tsr_dtype_t dt = a->desc.dtype;
    int xd = nt ? 0 : 1, cd = nt ? 1 : 0;                /* walked dimension of X and of C */
    tsr_comm_t xcomm = nt ? tp->col_comm : tp->row_comm; /* along which X's panel travels */
    tsr_comm_t ccomm = nt ? tp->row_comm : tp->col_comm; /* along which partials travel */
    int kl = f->len[nt ? 1 : 0];                         /* my block of the inner index */
    int fo = c->len[nt ? 0 : 1];                         /* C's other dimension, local */
    int np = 0, w = tp->panel;
    TSR_CHECK(nt ? (tsr__tp_same_split(a, 0, c, 0) && tsr__tp_same_split(a, 1, b, 1) && b->desc.rows == c->desc.cols)
                 : (tsr__tp_same_split(b, 1, c, 1) && tsr__tp_same_split(a, 0, b, 0) && a->desc.cols == c->desc.rows),
              TSR_ERR_INVALID_ARG, "SUMMA %s: A %dx%d, B %dx%d, C %dx%d do not conform or are split differently",
              nt ? "A·Bᵀ" : "Aᵀ·B", a->desc.rows, a->desc.cols, b->desc.rows, b->desc.cols, c->desc.rows,
              c->desc.cols);
    TSR_TRY(make_panels(x, xd, c, cd, w, &pan, &np));
    for (int s = 0; s < 2; s++) {
        TSR_TRY(tsr__tp_scratch(tp, TP_SCRATCH_PANEL_A0 + s, (size_t)w * kl * a->es, &xbuf[s]));
        TSR_TRY(tsr__tp_scratch(tp, TP_SCRATCH_PART0 + s, (size_t)w * fo * sizeof(float), &part[s]));
    }
    TSR_TRY(tsr__tp_scratch(tp, TP_SCRATCH_RECV, (size_t)w * fo * sizeof(float), &recv));
    for (int t = 0; t <= np; t++) {
        if (t < np) {
            const panel_t *p = &pan[t];
            int s = t & 1, mine = (nt ? tp->row : tp->col) == p->ia;
            if (mine && nt) /* rows of B */
                TSR_TRY(tsr__tp_axpby(tp, p->len, kl, 1.0f, dt, tsr__dmat_at(x, p->start - x->start[0], 0), x->ld,
                                      0.0f, dt, xbuf[s], kl));
            else if (mine) /* columns of A */
                TSR_TRY(tsr__tp_axpby(tp, kl, p->len, 1.0f, dt, tsr__dmat_at(x, 0, p->start - x->start[1]), x->ld,
                                      0.0f, dt, xbuf[s], p->len));
            TSR_TRY(tsr_comm_ibcast(xcomm, xbuf[s], (size_t)p->len * kl, dt, p->ia, &bc[s]));
        }
        if (t > 0) {
            const panel_t *p = &pan[t - 1];
            int s = (t - 1) & 1, owner = p->ib, l = p->len;
            TSR_TRY(tsr_request_wait(&bc[s]));
            TSR_TRY(tsr_request_wait(&sent[s]));
            if (kl == 0) /* no share of the inner index here: a zero partial */
                TSR_TRY(tsr_device_memset(tp->dev, part[s], 0, (size_t)l * fo * sizeof(float)));
            else if (nt) /* partial (fo x l) = A_loc (fo x kl) · panelᵀ (kl x l) */
                TSR_TRY(gemm(tp, TSR_NO_TRANS, TSR_TRANS, fo, l, kl, 1.0f, dt, f->data, f->ld, xbuf[s], kl, 0.0f,
                             TSR_DTYPE_F32, part[s], l, TSR_EPILOGUE_NONE, NULL));
            else /* partial (l x fo) = panelᵀ (l x kl) · B_loc (kl x fo) */
                TSR_TRY(gemm(tp, TSR_TRANS, TSR_NO_TRANS, l, fo, kl, 1.0f, dt, xbuf[s], l, f->data, f->ld, 0.0f,
                             TSR_DTYPE_F32, part[s], fo, TSR_EPILOGUE_NONE, NULL));
            TSR_TRY(reduce_to_owner(tp, ccomm, owner, part[s], recv, nt ? fo : l, nt ? l : fo, &sent[s]));
            if (tsr_comm_rank(ccomm) == owner) {
                int off = p->start - c->start[cd];
                void *dst = nt ? tsr__dmat_at(c, 0, off) : tsr__dmat_at(c, off, 0);
                TSR_TRY(tsr__tp_axpby(tp, nt ? fo : l, nt ? l : fo, g->alpha, TSR_DTYPE_F32, part[s], nt ? l : fo,
                                      g->beta, c->desc.dtype, dst, c->ld));
            }
        }
    }
cleanup:
    for (int s = 0; s < 2; s++) {
        tsr_request_wait(&bc[s]);
        tsr_request_wait(&sent[s]);
    }
    free(pan);
    return rc;
}

/* Types of a product: A and B alike; C alike or fp32. */
static tsr_status_t check_types(const tp_gemm_t *g, const char *what)
{
    tsr_dtype_t ab = g->a->desc.dtype, ct = g->c->desc.dtype;
    if (g->b->desc.dtype != ab || (ct != ab && ct != TSR_DTYPE_F32))
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "%s: A %s, B %s, C %s (expected A and B alike, C alike or f32)", what,
                         tsr_dtype_name(ab), tsr_dtype_name(g->b->desc.dtype), tsr_dtype_name(ct));
    return TSR_OK;
}

tsr_status_t tsr__tp_summa(tsr_tp_t tp, const tp_gemm_t *g)
{
    tsr_status_t rc = check_types(g, "tsr_tp_summa");
    if (rc != TSR_OK)
        return rc;
    if (!is_2d(g->a) || !is_2d(g->b) || !is_2d(g->c))
        return TSR_ERROR(TSR_ERR_INVALID_ARG,
                         "tsr_tp_summa: every matrix must be in the 2D layout (rows over grid rows, columns over "
                         "grid columns)");
    if (g->epilogue != TSR_EPILOGUE_NONE && !(g->epilogue == TSR_EPILOGUE_BIAS && g->ta == TSR_NO_TRANS &&
                                               g->tb == TSR_NO_TRANS))
        return TSR_ERROR(TSR_ERR_INTERNAL, "tsr_tp_summa: epilogue %d is applied after SUMMA, not in it",
                         (int)g->epilogue);
    if (g->ta == TSR_NO_TRANS && g->tb == TSR_NO_TRANS)
        return summa_nn(tp, g);
    if (g->ta == TSR_NO_TRANS && g->tb == TSR_TRANS)
        return summa_reduce(tp, 1, g);
    if (g->ta == TSR_TRANS && g->tb == TSR_NO_TRANS)
        return summa_reduce(tp, 0, g);
    return TSR_ERROR(TSR_ERR_NOT_SUPPORTED, "tsr_tp_summa: Aᵀ·Bᵀ is not offered; compute (B·A)ᵀ instead");
}

tsr_status_t tsr_tp_summa(tsr_tp_t tp, tsr_trans_t trans_a, tsr_trans_t trans_b, float alpha, tsr_dmat_t a,
                          tsr_dmat_t b, float beta, tsr_dmat_t c)
{
    if (!tp || !a || !b || !c)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "tsr_tp_summa: NULL context or matrix");
    tp_gemm_t g = {trans_a, trans_b, alpha, beta, a, b, c, TSR_EPILOGUE_NONE, NULL, NULL, 0};
    return tsr__tp_summa(tp, &g);
}

/* ---------- the dispatcher ---------- */

/* Dimension of A (is_b 0) holding op(A)'s rows, or of B (is_b 1) holding op(B)'s columns. */
static int outer_dim(tsr_trans_t t, int is_b) { return (t == TSR_TRANS) ^ is_b; }

tsr_status_t tsr__tp_matmul_plan(const tp_gemm_t *g, tp_mm_plan_t *plan, tsr_comm_t *kcomm)
{
    tsr_status_t rc = TSR_OK;
    tsr_dmat_t a = g->a, b = g->b, c = g->c;
    TSR_TRY(check_types(g, "tsr_tp_matmul"));
    int ai = outer_dim(g->ta, 0), ak = !ai; /* A's dimension of index i (C's rows), of k */
    int bj = outer_dim(g->tb, 1), bk = !bj; /* B's dimension of index j (C's columns), of k */
    int m = ai ? a->desc.cols : a->desc.rows, k = ak ? a->desc.cols : a->desc.rows;
    int n = bj ? b->desc.cols : b->desc.rows, kb = bk ? b->desc.cols : b->desc.rows;
    TSR_CHECK(m == c->desc.rows && n == c->desc.cols && k == kb, TSR_ERR_INVALID_ARG,
              "matmul: op(A) %dx%d times op(B) %dx%d does not give C %dx%d", m, k, kb, n, c->desc.rows, c->desc.cols);
    *kcomm = NULL;
    *plan = TP_MM_SUMMA;
    if (!tsr__tp_same_split(a, ai, c, 0) || !tsr__tp_same_split(b, bj, c, 1) || !tsr__tp_same_split(a, ak, b, bk))
        goto cleanup;
    if (a->parts[ak] == 1) {
        *plan = TP_MM_LOCAL;
        goto cleanup;
    }
    /* k is split alike in A and B: each rank's product is a partial C, to be summed over the
     * ranks that split k, if C is whole across them (neither of its dimensions on k's axis). */
    tsr_split_t kaxis = ak ? a->desc.col_split : a->desc.row_split;
    if ((c->parts[0] > 1 && c->desc.row_split == kaxis) || (c->parts[1] > 1 && c->desc.col_split == kaxis))
        goto cleanup;
    *plan = TP_MM_SUM;
    *kcomm = tsr__tp_dim_comm(a, ak);
cleanup:
    return rc;
}

/* The local GEMM of g; `first` applies beta, the bias and the epilogue (else beta 0, none). */
static tsr_status_t matmul_local(tsr_tp_t tp, const tp_gemm_t *g, int first, tsr_epilogue_t epi)
{
    tsr_dmat_t a = g->a, c = g->c;
    tsr_gemm_t m = TSR_GEMM_INIT;
    m.trans_a = g->ta, m.trans_b = g->tb;
    m.m = c->len[0], m.n = c->len[1], m.k = a->len[g->ta == TSR_TRANS ? 0 : 1];
    m.alpha = g->alpha, m.beta = first ? g->beta : 0.0f;
    m.ab_type = a->desc.dtype, m.c_type = c->desc.dtype;
    m.a = a->data, m.lda = at_least_1(a->ld), m.b = g->b->data, m.ldb = at_least_1(g->b->ld);
    m.c = c->data, m.ldc = at_least_1(c->ld);
    m.epilogue = first ? epi : TSR_EPILOGUE_NONE;
    m.bias = g->bias ? g->bias->data : NULL;
    m.aux = g->aux ? g->aux->data : NULL, m.ld_aux = g->aux ? at_least_1(g->aux->ld) : 0;
    if (m.m == 0 || m.n == 0) /* an empty block of C: its bias and aux blocks have no memory either */
        return TSR_OK;
    if (m.k == 0 && m.beta == 0.0f && m.epilogue == TSR_EPILOGUE_NONE) /* no share of k here */
        return tsr_dmat_zero(c);
    return tsr_kernel_gemm(tp->dev, &m);
}

tsr_status_t tsr__tp_matmul(tsr_tp_t tp, const tp_gemm_t *g)
{
    tsr_status_t rc = TSR_OK;
    tp_mm_plan_t plan;
    tsr_comm_t kcomm;
    tsr_dmat_t c = g->c;
    TSR_TRY(tsr__tp_matmul_plan(g, &plan, &kcomm));
    int gelu = g->epilogue == TSR_EPILOGUE_BIAS_GELU || g->epilogue == TSR_EPILOGUE_DGELU;
    if (plan == TP_MM_LOCAL || (plan == TP_MM_SUM && g->no_sum)) {
        TSR_CHECK(plan == TP_MM_LOCAL || !gelu, TSR_ERR_INTERNAL, "matmul: a GELU epilogue on an unsummed partial");
        TSR_TRY(matmul_local(tp, g, 1, g->epilogue));
        goto cleanup;
    }
    /* The product goes into aux for BIAS_GELU (C follows from it), into C otherwise. */
    tp_gemm_t p = *g;
    if (g->epilogue == TSR_EPILOGUE_BIAS_GELU)
        p.c = g->aux;
    p.epilogue = g->bias ? TSR_EPILOGUE_BIAS : TSR_EPILOGUE_NONE;
    if (plan == TP_MM_SUM) {
        /* One rank of the sum adds beta C and the bias; the others contribute their product. */
        TSR_CHECK(tsr__dmat_contiguous(p.c), TSR_ERR_INVALID_ARG,
                  "matmul: C's block must be contiguous to be summed over the inner index's ranks");
        TSR_TRY(matmul_local(tp, &p, tsr_comm_rank(kcomm) == 0, p.epilogue));
        if (p.c->len[0] > 0 && p.c->len[1] > 0)
            TSR_TRY(tsr_comm_allreduce(kcomm, TSR_IN_PLACE, p.c->data, (size_t)p.c->len[0] * (size_t)p.c->len[1],
                                       p.c->desc.dtype, TSR_REDUCE_SUM));
    } else {
        TSR_CHECK(!g->bias || (g->ta == TSR_NO_TRANS && g->tb == TSR_NO_TRANS), TSR_ERR_INTERNAL,
                  "matmul: a bias with a transposed SUMMA");
        TSR_TRY(tsr__tp_summa(tp, &p));
    }
    if (g->epilogue == TSR_EPILOGUE_BIAS_GELU)
        TSR_TRY(tsr_tp_gelu_forward(tp, g->aux, c));
    else if (g->epilogue == TSR_EPILOGUE_DGELU)
        TSR_TRY(tsr_tp_gelu_backward(tp, g->aux, c, c));
cleanup:
    return rc;
}

tsr_status_t tsr_tp_matmul(tsr_tp_t tp, tsr_trans_t trans_a, tsr_trans_t trans_b, float alpha, tsr_dmat_t a,
                           tsr_dmat_t b, float beta, tsr_dmat_t c)
{
    if (!tp || !a || !b || !c)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "tsr_tp_matmul: NULL context or matrix");
    tp_gemm_t g = {trans_a, trans_b, alpha, beta, a, b, c, TSR_EPILOGUE_NONE, NULL, NULL, 0};
    return tsr__tp_matmul(tp, &g);
}
