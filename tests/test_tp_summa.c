/*
 * test_tp_summa: distributed matrices (scatter, gather, local view, blocks that do not
 * divide) and SUMMA's A·B, A·Bᵀ and Aᵀ·B with alpha and beta, on the grids 1×1 (1 rank),
 * 1×2 and 2×1 (2 ranks), 2×2 and 1×4 (4 ranks), 2×3 (6 ranks) and 3×3 (9 ranks), against a
 * double reference, and the bytes each rank sends against the formulas of doc/tp.md.
 */
#include "test_tp_common.h"

/* The rows of block `index` of an extent split into `parts` (unit 1). */
static int blk(int extent, int parts, int index) { return tp_block_len(extent, 1, parts, index); }

/* doc/tp.md: bytes rank (i, j) sends in SUMMA on an r×c grid, fp32. */
static uint64_t formula(int ta, int tb, int m, int n, int k, int r, int c, int i, int j)
{
    if (!ta && !tb) /* A panels along the row, B panels down the column */
        return 4ull * ((c > 1 ? (uint64_t)blk(m, r, i) * k : 0) + (r > 1 ? (uint64_t)k * blk(n, c, j) : 0));
    if (!ta) /* B panels (n × k_j) down the column, partials of C's other columns sent along the row */
        return 4ull * ((r > 1 ? (uint64_t)n * blk(k, c, j) : 0) + (uint64_t)blk(m, r, i) * (n - blk(n, c, j)));
    /* Aᵀ·B: A panels (k_i × m) along the row, partials of C's other rows sent down the column */
    return 4ull * ((c > 1 ? (uint64_t)blk(k, r, i) * m : 0) + (uint64_t)blk(n, c, j) * (m - blk(m, r, i)));
}

static void roundtrip(tsr_tp_t tp, int r, int c, tsr_split_t rs, tsr_split_t cs, int m, int n, int ru, int cu)
{
    double *g = tp_random((size_t)m * n, -1, 1);
    tsr_dmat_t d = tp_dmat(tp, tp_desc(m, n, rs, cs, ru, cu), g);
    tsr_dmat_view_t v;
    tsr_dmat_local(d, &v);
    int local_ok = 1;
    for (int i = 0; i < v.rows; i++)
        for (int j = 0; j < v.cols; j++)
            local_ok &= v.data[(size_t)i * v.ld + j] == (float)g[(size_t)(v.row0 + i) * n + v.col0 + j];
    ok(local_ok, "%dx%d scatter %dx%d (splits %d,%d units %d,%d): local view holds its block", r, c, m, n, rs, cs,
       ru, cu);
    double *back = tp_global(d);
    ok(tp_rel_err(back, g, (size_t)m * n) == 0, "%dx%d gather %dx%d gives the matrix back", r, c, m, n);
    free(back);
    free(g);
    tsr_dmat_destroy(&d);
}

static void summa_case(tsr_tp_t tp, int r, int c, int ta, int tb, int m, int n, int k, int panel)
{
    tsr_grid_coords_t co;
    tsr_grid_coords(tsr_tp_grid(tp), &co);
    int ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
    double *a = tp_random((size_t)ar * ac, -1, 1), *b = tp_random((size_t)br * bc, -1, 1);
    double *c0 = tp_random((size_t)m * n, -1, 1), *ref = malloc((size_t)m * n * sizeof *ref);
    const double alpha = 1.5, beta = -0.5;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int l = 0; l < k; l++)
                s += (ta ? a[(size_t)l * ac + i] : a[(size_t)i * ac + l]) *
                     (tb ? b[(size_t)j * bc + l] : b[(size_t)l * bc + j]);
            ref[(size_t)i * n + j] = alpha * s + beta * c0[(size_t)i * n + j];
        }
    tsr_dmat_t da = tp_dmat(tp, tp_desc(ar, ac, TSR_SPLIT_GRID_ROWS, TSR_SPLIT_GRID_COLS, 1, 1), a);
    tsr_dmat_t db = tp_dmat(tp, tp_desc(br, bc, TSR_SPLIT_GRID_ROWS, TSR_SPLIT_GRID_COLS, 1, 1), b);
    tsr_dmat_t dc = tp_dmat(tp, tp_desc(m, n, TSR_SPLIT_GRID_ROWS, TSR_SPLIT_GRID_COLS, 1, 1), c0);
    const char *name = ta ? "At*B" : tb ? "A*Bt" : "A*B";
    tsr_tp_set_panel(tp, panel);
    tsr_tp_reset_counters(tp);
    tsr_status_t rc = tsr_tp_summa(tp, ta ? TSR_TRANS : TSR_NO_TRANS, tb ? TSR_TRANS : TSR_NO_TRANS, (float)alpha,
                                   da, db, (float)beta, dc);
    uint64_t sent = tsr_tp_bytes_sent(tp);
    if (!ok(rc == TSR_OK, "%dx%d SUMMA %s m=%d n=%d k=%d panel %d runs", r, c, name, m, n, k, panel))
        diag("%s", tsr_last_error());
    is_int(sent, formula(ta, tb, m, n, k, r, c, co.tp_row, co.tp_col), "%dx%d SUMMA %s m=%d n=%d k=%d: bytes sent",
           r, c, name, m, n, k);
    is_int(tsr_tp_summa_bytes(tp, ta ? TSR_TRANS : TSR_NO_TRANS, tb ? TSR_TRANS : TSR_NO_TRANS, da, db, dc), sent,
           "%dx%d SUMMA %s: tsr_tp_summa_bytes agrees", r, c, name);
    char what[64];
    snprintf(what, sizeof what, "SUMMA %s k=%d panel %d", name, k, panel);
    tp_check(dc, ref, 1e-5, what, r, c);
    tsr_dmat_destroy(&da);
    tsr_dmat_destroy(&db);
    tsr_dmat_destroy(&dc);
    free(a);
    free(b);
    free(c0);
    free(ref);
}

static void errors(tsr_tp_t tp)
{
    tsr_dmat_t d = NULL;
    tsr_dmat_desc_t bad = tp_desc(10, 7, TSR_SPLIT_GRID_ROWS, TSR_SPLIT_GRID_COLS, 3, 1);
    is_int(tsr_dmat_create(tp, &bad, &d), TSR_ERR_INVALID_ARG, "a unit that does not divide the rows is refused");
    ok(d == NULL && strstr(tsr_last_error(), "multiple of its unit") != NULL, "and the message says why");
    tsr_dmat_t a = tp_dmat(tp, tp_desc(4, 5, TSR_SPLIT_GRID_ROWS, TSR_SPLIT_GRID_COLS, 1, 1), NULL);
    tsr_dmat_t c = tp_dmat(tp, tp_desc(4, 4, TSR_SPLIT_GRID_ROWS, TSR_SPLIT_GRID_COLS, 1, 1), NULL);
    is_int(tsr_tp_summa(tp, TSR_NO_TRANS, TSR_NO_TRANS, 1, a, a, 0, c), TSR_ERR_INVALID_ARG,
           "SUMMA refuses shapes that do not conform");
    is_int(tsr_tp_summa(tp, TSR_TRANS, TSR_TRANS, 1, a, a, 0, c), TSR_ERR_NOT_SUPPORTED, "Aᵀ·Bᵀ is refused");
    is_int(tsr_tp_set_panel(tp, 0), TSR_ERR_INVALID_ARG, "panel width 0 is refused");
    tsr_dmat_destroy(&a);
    tsr_dmat_destroy(&c);
}

static void grid_battery(int r, int c)
{
    tsr_grid_t grid = NULL;
    tsr_tp_t tp = tp_open(r, c, &grid);
    roundtrip(tp, r, c, TSR_SPLIT_GRID_ROWS, TSR_SPLIT_GRID_COLS, 10, 7, 1, 1);
    roundtrip(tp, r, c, TSR_SPLIT_GRID_ROWS, TSR_SPLIT_GRID_COLS, 12, 9, 4, 3);
    roundtrip(tp, r, c, TSR_SPLIT_GRID_COLS, TSR_SPLIT_NONE, 9, 5, 1, 1);
    roundtrip(tp, r, c, TSR_SPLIT_NONE, TSR_SPLIT_NONE, 3, 4, 1, 1);
    summa_case(tp, r, c, 0, 0, 10, 7, 9, 2);
    summa_case(tp, r, c, 0, 0, 5, 8, 4, 64);
    summa_case(tp, r, c, 0, 1, 10, 7, 9, 2);
    summa_case(tp, r, c, 0, 1, 3, 11, 5, 64);
    summa_case(tp, r, c, 1, 0, 10, 7, 9, 2);
    summa_case(tp, r, c, 1, 0, 7, 4, 6, 64);
    errors(tp);
    tp_close(&tp, &grid);
}

int main(int argc, char **argv)
{
    tap_init(&argc, &argv, "1 2 4 6 9");
    tp_test_start();
    switch (tap_size()) {
    case 1: grid_battery(1, 1); break;
    case 2: grid_battery(1, 2); grid_battery(2, 1); break;
    case 4: grid_battery(2, 2); grid_battery(1, 4); break;
    case 6: grid_battery(2, 3); break;
    case 9: grid_battery(3, 3); break;
    default: tap_skip_all("runs at 1, 2, 4, 6 or 9 ranks");
    }
    tsr_device_destroy(&tp_dev);
    return tap_done();
}
