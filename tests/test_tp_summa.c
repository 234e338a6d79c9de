/*
 * test_tp_summa: distributed matrices and the products, on the grids 1×1 (1 rank), 1×2 and
 * 2×1 (2 ranks), 2×2 and 1×4 (4 ranks), 2×3 (6 ranks) and 3×3 (9 ranks).
 *   - dmat: tsr_tp_block (shape, offsets, no memory) against doc/tp.md's block rule;
 *     scatter and gather (blocks that do not divide, units, empty and replicated blocks:
 *     gather takes a replica from the lowest rank holding it), also into a wrapped block
 *     with ld > columns; tsr_dmat_wrap (memory the matrix never frees, ld 0,
 *     ld below the columns and NULL memory refused); tsr_dmat_zero on a strided view;
 *     tsr_dmat_create_like; bad descriptions and element types refused (bf16 on the CPU
 *     with a one-line message).
 *   - SUMMA's A·B, A·Bᵀ and Aᵀ·B with alpha and beta against a double reference, with
 *     uneven blocks, empty blocks (2x2 products on the larger grids), an inner index split
 *     in units on one operand only, panel widths 1, 3 and the default, and operands and results wrapped with ld > columns; the bytes each
 *     rank sends against the formula of doc/tp.md computed here and tsr_tp_summa_bytes().
 *   - tsr_tp_matmul's three plans: local (no communication), a local product and one
 *     all-reduce over the ranks that split the inner index (the 1D row-parallel X·W and
 *     the weight gradient Xᵀ·dY with token rows split), and SUMMA; each against the
 *     reference, its bytes against the formula and its calls against the plan.
 * 6- and 9-rank runs do the same with fewer cases (collectives are slow there).
 */
#include "test_tp_common.h"

#define TOL 1e-5

static int R, C;   /* grid shape of the battery running */
static int SMALL;  /* 6 or 9 ranks: fewer cases */

static const tsr_split_t NONE = TSR_SPLIT_NONE, ROWS = TSR_SPLIT_GRID_ROWS, COLS = TSR_SPLIT_GRID_COLS;

/* ---------- distributed matrices ---------- */

/* tsr_tp_block and a created matrix's view agree with doc/tp.md's blocks on this rank. */
static void block_case(tsr_tp_t tp, tsr_split_t rs, tsr_split_t cs, int m, int n, int ru, int cu)
{
    tsr_grid_coords_t co = tp_coords(tp);
    int coord[3] = {0, co.tp_row, co.tp_col}, parts[3] = {1, R, C}; /* indexed by tsr_split_t */
    tsr_dmat_desc_t desc = tp_desc(m, n, rs, cs, ru, cu);
    tsr_dmat_view_t b, v;
    tsr_dmat_t d = NULL;
    int rows = tp_block_len(m, ru, parts[rs], coord[rs]), cols = tp_block_len(n, cu, parts[cs], coord[cs]);
    int row0 = tp_block_start(m, ru, parts[rs], coord[rs]), col0 = tp_block_start(n, cu, parts[cs], coord[cs]);
    ok(tsr_tp_block(tp, &desc, &b) == TSR_OK && b.data == NULL && b.rows == rows && b.cols == cols &&
           b.row0 == row0 && b.col0 == col0 && b.ld == cols && b.dtype == TSR_DTYPE_F32,
       "%dx%d block of %dx%d (splits %d,%d units %d,%d): %dx%d at (%d,%d), no memory", R, C, m, n, rs, cs, ru, cu,
       rows, cols, row0, col0);
    if (tsr_dmat_create(tp, &desc, &d) != TSR_OK)
        tp_die("create");
    tsr_dmat_local(d, &v);
    ok(v.rows == rows && v.cols == cols && v.row0 == row0 && v.col0 == col0 && v.ld == cols &&
           (rows * cols == 0 || v.data != NULL),
       "%dx%d created %dx%d: its local view is that block, rows contiguous", R, C, m, n);
    double *z = tp_local(d);
    int zero = 1;
    for (int i = 0; i < rows * cols; i++)
        zero &= z[i] == 0;
    ok(zero, "%dx%d created %dx%d: zero-filled", R, C, m, n);
    free(z);
    tsr_dmat_destroy(&d);
    ok(d == NULL, "destroy sets the handle to NULL");
    tsr_dmat_destroy(&d);
    tsr_dmat_destroy(NULL);
    ok(1, "destroy accepts NULL");
}

/* Scatter from rank 0 and gather back, into an owned block or a wrapped one with ld > columns. */
static void roundtrip(tsr_tp_t tp, tsr_split_t rs, tsr_split_t cs, int m, int n, int ru, int cu, int pad)
{
    double *g = tp_random((size_t)m * n, -1, 1);
    tsr_dmat_desc_t desc = tp_desc(m, n, rs, cs, ru, cu);
    tp_wrapped_t w = {NULL, NULL, 0, 0, 0};
    tsr_dmat_t d = NULL;
    if (pad) {
        w = tp_wrap(tp, desc, NULL, pad);
        d = w.d;
    } else if (tsr_dmat_create(tp, &desc, &d) != TSR_OK) {
        tp_die("create");
    }
    float *f = malloc((size_t)m * n * sizeof *f);
    for (int i = 0; i < m * n; i++)
        f[i] = (float)g[i];
    ok(tsr_dmat_scatter(d, 0, tap_rank() == 0 ? f : NULL) == TSR_OK, "%dx%d scatter %dx%d%s runs", R, C, m, n,
       pad ? " (ld > columns)" : "");
    ok(tp_block_err(d, g) == 0, "%dx%d scatter %dx%d (splits %d,%d units %d,%d%s): every rank holds its block", R,
       C, m, n, rs, cs, ru, cu, pad ? ", ld > columns" : "");
    double *back = tp_global(d);
    ok(tp_rel_err(back, g, (size_t)m * n) == 0, "%dx%d gather %dx%d gives the matrix back", R, C, m, n);
    if (rs == NONE || cs == NONE) {
        /* Replicas made to differ by rank: gather takes each block from the lowest tp rank holding it. */
        tsr_grid_coords_t co = tp_coords(tp);
        double *mine = malloc((size_t)m * n * sizeof *mine), *want = malloc((size_t)m * n * sizeof *want);
        int me = co.tp_row * C + co.tp_col, parts[3] = {1, R, C};
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++) {
                int at[3] = {0, 0, 0}; /* the grid row and column of the lowest holder, by split */
                for (int p = 0; p < parts[rs]; p++)
                    if (i >= tp_block_start(m, ru, parts[rs], p))
                        at[rs] = p;
                for (int p = 0; p < parts[cs]; p++)
                    if (j >= tp_block_start(n, cu, parts[cs], p))
                        at[cs] = p;
                int lowest = at[TSR_SPLIT_GRID_ROWS] * C + at[TSR_SPLIT_GRID_COLS];
                mine[(size_t)i * n + j] = (float)(g[(size_t)i * n + j] + 1000.0 * me);
                want[(size_t)i * n + j] = (float)(g[(size_t)i * n + j] + 1000.0 * lowest);
            }
        tp_fill(d, mine);
        free(back);
        back = tp_global(d);
        ok(tp_rel_err(back, want, (size_t)m * n) == 0, "%dx%d gather %dx%d takes replicated blocks from the lowest rank",
           R, C, m, n);
        free(mine), free(want);
    }
    if (pad) {
        ok(tp_pad_intact(&w), "%dx%d scatter into a wrapped block leaves the padding alone", R, C);
        tp_unwrap(&w);
    } else {
        tsr_dmat_destroy(&d);
    }
    free(back);
    free(f);
    free(g);
}

/* tsr_dmat_wrap: the caller's memory, never freed; ld 0, ld too small, NULL; zero on a strided view; create_like. */
static void wrap_cases(tsr_tp_t tp)
{
    tsr_dmat_desc_t desc = tp_desc(7, 8, ROWS, COLS, 1, 1);
    tsr_dmat_view_t b, v;
    tsr_mem_stats_t before, after;
    tsr_dmat_t d = NULL;
    tsr_tp_block(tp, &desc, &b);
    size_t ld = (size_t)b.cols + 3, n = (size_t)b.rows * ld;
    void *buf = NULL;
    if (tsr_device_alloc(tp_dev, TSR_MEM_PARAMS, n * sizeof(float) + 1, &buf) != TSR_OK)
        tp_die("alloc");
    tsr_mem_stats(TSR_DEVICE_CPU, &before);
    ok(tsr_dmat_wrap(tp, &desc, buf, (int)ld, &d) == TSR_OK, "%dx%d wrap with ld = columns + 3 runs", R, C);
    tsr_dmat_local(d, &v);
    ok(v.data == buf && v.ld == (int)ld && v.rows == b.rows && v.cols == b.cols && v.row0 == b.row0 &&
           v.col0 == b.col0,
       "%dx%d wrapped view: the caller's memory and leading dimension, the block of tsr_tp_block", R, C);
    tsr_dmat_destroy(&d);
    tsr_mem_stats(TSR_DEVICE_CPU, &after);
    ok(after.live_allocations == before.live_allocations && after.current[TSR_MEM_PARAMS] == before.current[TSR_MEM_PARAMS],
       "%dx%d wrap and destroy allocate and free nothing of the caller's (live %llu -> %llu)", R, C,
       (unsigned long long)before.live_allocations, (unsigned long long)after.live_allocations);
    ok(tsr_dmat_wrap(tp, &desc, buf, 0, &d) == TSR_OK, "%dx%d wrap with ld 0 runs", R, C);
    tsr_dmat_local(d, &v);
    ok(v.ld == b.cols, "%dx%d ld 0 means the block's columns (%d)", R, C, b.cols);
    tsr_dmat_destroy(&d);
    ok(tsr_device_free(tp_dev, &buf) == TSR_OK && buf == NULL, "%dx%d the caller frees its memory itself", R, C);

    /* Every rank holds at least two columns of a 7x8 matrix on these grids, so ld - 1 is not 0.
     * A refused call must leave *out NULL: start it at a non-NULL junk value. */
    d = (tsr_dmat_t)&d;
    is_int(tsr_dmat_wrap(tp, &desc, &v, b.cols - 1, &d), TSR_ERR_INVALID_ARG, "%dx%d wrap refuses ld below the columns",
           R, C);
    ok(d == NULL && strstr(tsr_last_error(), "leading dimension") != NULL, "and says so, leaving NULL");
    if (b.rows > 0)
        is_int(tsr_dmat_wrap(tp, &desc, NULL, 0, &d), TSR_ERR_INVALID_ARG, "%dx%d wrap refuses NULL memory", R, C);
    else
        ok(1, "%dx%d (this rank holds no rows of the NULL-memory case)", R, C);
    tsr_dmat_desc_t empty = tp_desc(0, 8, ROWS, COLS, 1, 1);
    ok(tsr_dmat_wrap(tp, &empty, NULL, 0, &d) == TSR_OK, "%dx%d wrap of an empty block may take NULL", R, C);
    tsr_dmat_destroy(&d);

    /* tsr_dmat_zero on a strided view zeroes the block and nothing else. */
    double *g = tp_random(7 * 8, -1, 1), zeros[7 * 8] = {0};
    tp_wrapped_t w = tp_wrap(tp, desc, g, 2);
    ok(tp_block_err(w.d, g) == 0, "%dx%d a wrapped block holds its values", R, C);
    ok(tsr_dmat_zero(w.d) == TSR_OK, "%dx%d zero on a strided view runs", R, C);
    ok(tp_block_err(w.d, zeros) == 0 && tp_pad_intact(&w), "%dx%d zero on a strided view: block 0, padding untouched",
       R, C);

    /* create_like: same shape, layout and type, its own zeroed memory in the category asked. */
    tsr_dmat_desc_t dl, dd;
    tsr_mem_stats(TSR_DEVICE_CPU, &before);
    ok(tsr_dmat_create_like(w.d, TSR_MEM_GRADS, &d) == TSR_OK, "%dx%d create_like runs", R, C);
    tsr_mem_stats(TSR_DEVICE_CPU, &after);
    tsr_dmat_desc(d, &dl);
    tsr_dmat_desc(w.d, &dd);
    tsr_dmat_local(d, &v);
    ok(dl.rows == dd.rows && dl.cols == dd.cols && dl.row_split == dd.row_split && dl.col_split == dd.col_split &&
           dl.category == TSR_MEM_GRADS && v.ld == v.cols && v.data != w.buf &&
           after.current[TSR_MEM_GRADS] - before.current[TSR_MEM_GRADS] == (uint64_t)v.rows * v.cols * sizeof(float),
       "%dx%d create_like: the layout, a contiguous block of its own, counted as grads", R, C);
    ok(tp_block_err(d, zeros) == 0, "%dx%d create_like is zero-filled", R, C);
    tsr_dmat_destroy(&d);
    tsr_mem_stats(TSR_DEVICE_CPU, &before);
    ok(before.current[TSR_MEM_GRADS] == after.current[TSR_MEM_GRADS] - (uint64_t)v.rows * v.cols * sizeof(float),
       "%dx%d destroying an owned matrix frees its block", R, C);
    tp_unwrap(&w);
    free(g);
}

/* A description tsr_dmat_create, tsr_tp_block and tsr_dmat_wrap all refuse with TSR_ERR_INVALID_ARG. */
static void refused(tsr_tp_t tp, tsr_dmat_desc_t desc, const char *what, const char *needle)
{
    tsr_dmat_t d = (tsr_dmat_t)&desc; /* junk: a refusal must set it to NULL */
    tsr_dmat_view_t v;
    float mem[64];
    int created = tsr_dmat_create(tp, &desc, &d) == TSR_ERR_INVALID_ARG && d == NULL;
    const char *msg = tsr_last_error();
    int one_line = strchr(msg, '\n') == NULL && msg[0] != '\0', says = strstr(msg, needle) != NULL;
    if (!says)
        diag("message: %s", msg);
    int block = tsr_tp_block(tp, &desc, &v) == TSR_ERR_INVALID_ARG;
    d = (tsr_dmat_t)&desc;
    int wrap = tsr_dmat_wrap(tp, &desc, mem, 0, &d) == TSR_ERR_INVALID_ARG && d == NULL;
    ok(created && block && wrap && one_line && says, "%dx%d %s is refused by create, block and wrap (one line naming %s)",
       R, C, what, needle);
}

static void desc_errors(tsr_tp_t tp)
{
    tsr_dmat_desc_t d = tp_desc(10, 7, ROWS, COLS, 3, 1);
    refused(tp, d, "a unit that does not divide the rows", "multiple of its unit");
    d = tp_desc(4, 6, ROWS, COLS, 1, 0);
    refused(tp, d, "a column unit of 0", "multiple of its unit");
    d = tp_desc(-1, 6, ROWS, COLS, 1, 1);
    refused(tp, d, "negative rows", ">= 0");
    d = tp_desc(4, 6, ROWS, (tsr_split_t)7, 1, 1);
    refused(tp, d, "a split out of range", "out of range");
    d = tp_desc(4, 6, COLS, COLS, 1, 1);
    refused(tp, d, "rows and columns on one grid axis", "same grid axis");
    d = tp_desc(4, 6, ROWS, COLS, 1, 1);
    d.struct_size = 0;
    refused(tp, d, "a description not from TSR_DMAT_DESC_INIT", "TSR_DMAT_DESC_INIT");
    d = tp_desc(4, 6, ROWS, COLS, 1, 1);
    d.dtype = TSR_DTYPE_BF16;
    refused(tp, d, "bf16 on the CPU", "bf16");
    d.dtype = TSR_DTYPE_F64;
    refused(tp, d, "f64", "f64");
    is_int(tsr_tp_set_panel(tp, 0), TSR_ERR_INVALID_ARG, "%dx%d panel width 0 is refused", R, C);
    is_int(tsr_tp_panel(tp), TSR_TP_DEFAULT_PANEL, "%dx%d and the panel stays the default %d", R, C,
           TSR_TP_DEFAULT_PANEL);
}

/* ---------- SUMMA ---------- */

/* doc/tp.md: bytes this rank sends in SUMMA, fp32 (e = 4), from its blocks: C m_i x n_j; the inner
 * index's block k_j over grid columns (A·Bᵀ) or k_i over grid rows (Aᵀ·B). */
static uint64_t summa_formula(int ta, int tb, int m, int n, int k, int mi, int nj, int kij)
{
    if (!ta && !tb) /* A panels along the row, B panels down the column */
        return 4ull * ((C > 1 ? (uint64_t)mi * k : 0) + (R > 1 ? (uint64_t)k * nj : 0));
    if (!ta) /* B panels (w x k_j) down the column; partials of C's other columns along the row */
        return 4ull * ((R > 1 ? (uint64_t)n * kij : 0) + (uint64_t)mi * (n - nj));
    /* Aᵀ·B: A panels (k_i x w) along the row; partials of C's other rows down the column */
    return 4ull * ((C > 1 ? (uint64_t)kij * m : 0) + (uint64_t)nj * (m - mi));
}

/*
 * C = alpha op(A) op(B) + beta C on the 2D layout. `u` is the unit of one operand's split of
 * a walked index (A's columns for A·B, B's rows for A·Bᵀ, A's columns for Aᵀ·B) so that the
 * panels are cut at two different sets of block boundaries; pad > 0 wraps A, B and C with
 * ld = columns + pad.
 */
static void summa_case(tsr_tp_t tp, int ta, int tb, int m, int n, int k, int panel, int u, int pad)
{
    tsr_grid_coords_t co = tp_coords(tp);
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
    int bu = tb ? u : 1, au = tb ? 1 : u; /* the unit on A's columns, on B's rows */
    tsr_dmat_desc_t da = tp_desc(ar, ac, ROWS, COLS, 1, au), db = tp_desc(br, bc, ROWS, COLS, bu, 1);
    tsr_dmat_desc_t dc = tp_desc(m, n, ROWS, COLS, 1, 1);
    tp_wrapped_t wa = tp_wrap(tp, da, a, pad), wb = tp_wrap(tp, db, b, pad), wc = tp_wrap(tp, dc, c0, pad);
    const char *name = ta ? "At*B" : tb ? "A*Bt" : "A*B";
    tsr_trans_t tra = ta ? TSR_TRANS : TSR_NO_TRANS, trb = tb ? TSR_TRANS : TSR_NO_TRANS;
    tsr_tp_set_panel(tp, panel ? panel : TSR_TP_DEFAULT_PANEL);
    tsr_tp_reset_counters(tp);
    tsr_status_t rc = tsr_tp_summa(tp, tra, trb, (float)alpha, wa.d, wb.d, (float)beta, wc.d);
    uint64_t sent = tsr_tp_bytes_sent(tp);
    char what[96];
    snprintf(what, sizeof what, "SUMMA %s m=%d n=%d k=%d panel %d unit %d%s", name, m, n, k,
             panel ? panel : TSR_TP_DEFAULT_PANEL, u, pad ? " ld>cols" : "");
    if (!ok(rc == TSR_OK, "%dx%d %s runs", R, C, what))
        diag("%s", tsr_last_error());
    int mi = tp_block_len(m, 1, R, co.tp_row), nj = tp_block_len(n, 1, C, co.tp_col);
    int kij = ta ? tp_block_len(k, 1, R, co.tp_row) : tp_block_len(k, 1, C, co.tp_col);
    is_int(sent, summa_formula(ta, tb, m, n, k, mi, nj, kij), "%dx%d %s: bytes sent = doc formula", R, C, what);
    is_int(tsr_tp_summa_bytes(tp, tra, trb, wa.d, wb.d, wc.d), sent, "%dx%d %s: tsr_tp_summa_bytes agrees", R, C,
           name);
    tp_check(wc.d, ref, TOL, what, R, C);
    if (pad)
        ok(tp_pad_intact(&wa) && tp_pad_intact(&wb) && tp_pad_intact(&wc),
           "%dx%d %s: the padding of A, B and C is untouched", R, C, what);
    tp_unwrap(&wa);
    tp_unwrap(&wb);
    tp_unwrap(&wc);
    free(a), free(b), free(c0), free(ref);
}

static void summa_errors(tsr_tp_t tp)
{
    tsr_dmat_t a = tp_dmat(tp, tp_desc(4, 5, ROWS, COLS, 1, 1), NULL);
    tsr_dmat_t c = tp_dmat(tp, tp_desc(4, 4, ROWS, COLS, 1, 1), NULL);
    is_int(tsr_tp_summa(tp, TSR_NO_TRANS, TSR_NO_TRANS, 1, a, a, 0, c), TSR_ERR_INVALID_ARG,
           "%dx%d SUMMA refuses shapes that do not conform", R, C);
    ok(strstr(tsr_last_error(), "4x5") != NULL, "and names the shapes: %s", tsr_last_error());
    is_int(tsr_tp_summa(tp, TSR_TRANS, TSR_TRANS, 1, a, a, 0, c), TSR_ERR_NOT_SUPPORTED, "%dx%d Aᵀ·Bᵀ is refused", R,
           C);
    is_int(tsr_tp_matmul(tp, TSR_NO_TRANS, TSR_NO_TRANS, 1, a, a, 0, c), TSR_ERR_INVALID_ARG,
           "%dx%d tsr_tp_matmul refuses shapes that do not conform", R, C);
    if (C > 1) { /* a matrix with its rows over grid columns is not in the 2D layout */
        tsr_dmat_t w = tp_dmat(tp, tp_desc(5, 4, COLS, NONE, 1, 1), NULL);
        is_int(tsr_tp_summa(tp, TSR_NO_TRANS, TSR_NO_TRANS, 1, a, w, 0, c), TSR_ERR_INVALID_ARG,
               "%dx%d SUMMA refuses a B outside the 2D layout", R, C);
        tsr_dmat_t y = tp_dmat(tp, tp_desc(4, 4, ROWS, COLS, 1, 1), NULL);
        is_int(tsr_tp_matmul(tp, TSR_NO_TRANS, TSR_NO_TRANS, 1, a, w, 0, y), TSR_ERR_INVALID_ARG,
               "%dx%d tsr_tp_matmul refuses layouts no plan applies to", R, C);
        TP_DESTROY(w, y);
    }
    if (R > 1) { /* C's rows must be split like A's */
        tsr_dmat_t b = tp_dmat(tp, tp_desc(5, 4, ROWS, COLS, 1, 1), NULL);
        tsr_dmat_t cw = tp_dmat(tp, tp_desc(4, 4, NONE, COLS, 1, 1), NULL);
        is_int(tsr_tp_summa(tp, TSR_NO_TRANS, TSR_NO_TRANS, 1, a, b, 0, cw), TSR_ERR_INVALID_ARG,
               "%dx%d SUMMA A·B refuses C's rows split unlike A's", R, C);
        TP_DESTROY(b, cw);
    }
    TP_DESTROY(a, c);
}

/* ---------- tsr_tp_matmul ---------- */

typedef enum plan { PLAN_LOCAL, PLAN_SUM, PLAN_SUMMA } plan_t;
static const char *const plan_name[] = {"local", "sum", "SUMMA"};

/*
 * C = alpha op(A) op(B) + beta C through tsr_tp_matmul on the given layouts, expecting `plan`
 * and `bytes`; pad > 0 wraps A and B (and C where cpad) with ld = columns + pad.
 */
static void matmul_case(tsr_tp_t tp, const char *name, int ta, int tb, tsr_dmat_desc_t da, tsr_dmat_desc_t db,
                        tsr_dmat_desc_t dc, plan_t plan, uint64_t bytes, int pad, int cpad)
{
    int m = dc.rows, n = dc.cols, k = ta ? da.rows : da.cols;
    double *a = tp_random((size_t)da.rows * da.cols, -1, 1), *b = tp_random((size_t)db.rows * db.cols, -1, 1);
    double *c0 = tp_random((size_t)m * n, -1, 1), *ref = malloc((size_t)m * n * sizeof *ref);
    const double alpha = -0.75, beta = 0.5;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int l = 0; l < k; l++)
                s += (ta ? a[(size_t)l * da.cols + i] : a[(size_t)i * da.cols + l]) *
                     (tb ? b[(size_t)j * db.cols + l] : b[(size_t)l * db.cols + j]);
            ref[(size_t)i * n + j] = alpha * s + beta * c0[(size_t)i * n + j];
        }
    tp_wrapped_t wa = tp_wrap(tp, da, a, pad), wb = tp_wrap(tp, db, b, pad), wc = tp_wrap(tp, dc, c0, cpad);
    char what[128];
    snprintf(what, sizeof what, "matmul %s (%s)%s", name, plan_name[plan], pad ? " ld>cols" : "");
    tsr_tp_reset_counters(tp);
    tsr_status_t rc = tsr_tp_matmul(tp, ta ? TSR_TRANS : TSR_NO_TRANS, tb ? TSR_TRANS : TSR_NO_TRANS, (float)alpha,
                                    wa.d, wb.d, (float)beta, wc.d);
    if (!ok(rc == TSR_OK, "%dx%d %s runs", R, C, what))
        diag("%s", tsr_last_error());
    uint64_t sent = tsr_tp_bytes_sent(tp), reduces = tp_calls(tp, TSR_COMM_ALLREDUCE), all = tp_all_calls(tp);
    is_int(sent, bytes, "%dx%d %s: bytes sent = doc formula", R, C, what);
    if (plan == PLAN_LOCAL)
        is_int(all, 0, "%dx%d %s: no communication at all", R, C, what);
    else if (plan == PLAN_SUM)
        ok(all == reduces && reduces == 1, "%dx%d %s: exactly one all-reduce (%llu calls, %llu all-reduces)", R, C,
           what, (unsigned long long)all, (unsigned long long)reduces);
    else
        ok(tp_calls(tp, TSR_COMM_BCAST) > 0 && reduces == 0, "%dx%d %s: panel broadcasts, no all-reduce", R, C, what);
    if (plan == PLAN_SUMMA)
        is_int(sent, tsr_tp_summa_bytes(tp, ta ? TSR_TRANS : TSR_NO_TRANS, tb ? TSR_TRANS : TSR_NO_TRANS, wa.d, wb.d,
                                        wc.d),
               "%dx%d %s: tsr_tp_summa_bytes agrees", R, C, what);
    tp_check(wc.d, ref, TOL, what, R, C);
    if (pad)
        ok(tp_pad_intact(&wa) && tp_pad_intact(&wb) && tp_pad_intact(&wc), "%dx%d %s: padding untouched", R, C,
           what);
    tp_unwrap(&wa);
    tp_unwrap(&wb);
    tp_unwrap(&wc);
    free(a), free(b), free(c0), free(ref);
}

static void matmul_cases(tsr_tp_t tp)
{
    tsr_grid_coords_t co = tp_coords(tp);
    enum { M = 6, K = 7, N = 5 };
    int one = R == 1 && C == 1;
    int nj = tp_block_len(N, 1, C, co.tp_col), mi = tp_block_len(M, 1, R, co.tp_row);
    /* Local: the 1D column-parallel products X·W and X·Wᵀ (W's rows over grid columns), with C strided. */
    matmul_case(tp, "X*W column-parallel", 0, 0, tp_desc(M, K, NONE, NONE, 1, 1), tp_desc(K, N, NONE, COLS, 1, 1),
                tp_desc(M, N, NONE, COLS, 1, 1), PLAN_LOCAL, 0, 2, 2);
    if (!SMALL)
        matmul_case(tp, "X*Wt column-parallel", 0, 1, tp_desc(M, K, NONE, NONE, 1, 1),
                    tp_desc(N, K, COLS, NONE, 1, 1), tp_desc(M, N, NONE, COLS, 1, 1), PLAN_LOCAL, 0, 0, 0);
    /* The sum over the inner index: the row-parallel X·W (one all-reduce along the row), A and B strided. */
    matmul_case(tp, "X*W row-parallel", 0, 0, tp_desc(M, K, NONE, COLS, 1, 1), tp_desc(K, N, COLS, NONE, 1, 1),
                tp_desc(M, N, NONE, NONE, 1, 1), one ? PLAN_LOCAL : C > 1 ? PLAN_SUM : PLAN_LOCAL,
                tp_ar(C, 4ull * M * N), 1, 0);
    /* Xᵀ·dY with token rows over grid rows: one all-reduce down the column. */
    matmul_case(tp, "Xt*dY rows split", 1, 0, tp_desc(M, K, ROWS, NONE, 1, 1), tp_desc(M, N, ROWS, COLS, 1, 1),
                    tp_desc(K, N, NONE, COLS, 1, 1), R > 1 ? PLAN_SUM : PLAN_LOCAL, tp_ar(R, 4ull * K * nj), 0, 0);
    /* SUMMA: the 2D layout (local on 1x1). */
    tsr_tp_set_panel(tp, TSR_TP_DEFAULT_PANEL);
    matmul_case(tp, "X*W 2D", 0, 0, tp_desc(M, K, ROWS, COLS, 1, 1), tp_desc(K, N, ROWS, COLS, 1, 1),
                tp_desc(M, N, ROWS, COLS, 1, 1), one ? PLAN_LOCAL : PLAN_SUMMA,
                summa_formula(0, 0, M, N, K, mi, nj, 0), 1, 1);
    if (!SMALL)
        matmul_case(tp, "X*Wt 2D", 0, 1, tp_desc(M, K, ROWS, COLS, 1, 1), tp_desc(N, K, ROWS, COLS, 1, 1),
                    tp_desc(M, N, ROWS, COLS, 1, 1), one ? PLAN_LOCAL : PLAN_SUMMA,
                    summa_formula(0, 1, M, N, K, mi, nj, tp_block_len(K, 1, C, co.tp_col)), 0, 0);
    /* The sum refuses a strided C (an all-reduce needs the block contiguous), on every rank alike. */
    if (C > 1) {
        tp_wrapped_t a = tp_wrap(tp, tp_desc(M, K, NONE, COLS, 1, 1), NULL, 0);
        tp_wrapped_t b = tp_wrap(tp, tp_desc(K, N, COLS, NONE, 1, 1), NULL, 0);
        tp_wrapped_t c = tp_wrap(tp, tp_desc(M, N, NONE, NONE, 1, 1), NULL, 1);
        is_int(tsr_tp_matmul(tp, TSR_NO_TRANS, TSR_NO_TRANS, 1, a.d, b.d, 0, c.d), TSR_ERR_INVALID_ARG,
               "%dx%d matmul refuses to sum into a C with ld > columns", R, C);
        ok(strstr(tsr_last_error(), "contiguous") != NULL, "and says why: %s", tsr_last_error());
        tp_unwrap(&a);
        tp_unwrap(&b);
        tp_unwrap(&c);
    }
}

static void grid_battery(int r, int c)
{
    tsr_grid_t grid = NULL;
    R = r, C = c;
    tsr_tp_t tp = tp_open(r, c, &grid);
    is_int(tsr_tp_panel(tp), TSR_TP_DEFAULT_PANEL, "%dx%d the panel width starts at the default", r, c);
    block_case(tp, ROWS, COLS, 10, 7, 1, 1);
    block_case(tp, ROWS, COLS, 12, 9, 4, 3);
    block_case(tp, COLS, NONE, 9, 5, 1, 1);
    block_case(tp, NONE, ROWS, 3, 8, 1, 2);
    block_case(tp, ROWS, COLS, 2, 1, 1, 1); /* empty blocks on most ranks */
    roundtrip(tp, ROWS, COLS, 10, 7, 1, 1, 0);
    roundtrip(tp, ROWS, COLS, 12, 9, 4, 3, 3);
    roundtrip(tp, COLS, NONE, 9, 5, 1, 1, 0);
    roundtrip(tp, ROWS, COLS, 2, 1, 1, 1, 0); /* empty blocks */
    if (!SMALL) {
        roundtrip(tp, NONE, ROWS, 4, 6, 1, 2, 1);
        roundtrip(tp, NONE, NONE, 3, 4, 1, 1, 2);
    }
    wrap_cases(tp);
    desc_errors(tp);
    /* A·B, A·Bᵀ, Aᵀ·B: panels of 1, 3 and the default (0); units on one operand; strided operands. */
    summa_case(tp, 0, 0, 10, 7, 9, 3, 1, 0);
    summa_case(tp, 0, 0, 5, 8, 6, 1, 2, 0);
    summa_case(tp, 0, 0, 7, 6, 11, 0, 1, 2);
    summa_case(tp, 0, 1, 10, 7, 9, 3, 1, 0);
    summa_case(tp, 0, 1, 3, 8, 5, 1, 2, 0);
    summa_case(tp, 0, 1, 6, 9, 7, 0, 3, 1);
    summa_case(tp, 1, 0, 10, 7, 9, 3, 1, 0);
    summa_case(tp, 1, 0, 8, 4, 5, 1, 2, 0);
    summa_case(tp, 1, 0, 9, 5, 8, 0, 3, 2);
    for (int f = 0; f < 3; f++) /* 2x2 by 2x2: empty blocks of A, B and C on the larger grids */
        summa_case(tp, f == 2, f == 1, 2, 2, 2, 1, 1, f == 0);
    summa_errors(tp);
    matmul_cases(tp);
    tp_close(&tp, &grid);
}

int main(int argc, char **argv)
{
    tap_init(&argc, &argv, "1 2 4 6 9");
    tp_test_start();
    SMALL = tap_size() > 4;
    switch (tap_size()) {
    case 1: grid_battery(1, 1); break;
    case 2: grid_battery(1, 2); grid_battery(2, 1); break;
    case 4: grid_battery(2, 2); grid_battery(1, 4); break;
    case 6: grid_battery(2, 3); break;
    case 9: grid_battery(3, 3); break;
    default: tap_skip_all("runs at 1, 2, 4, 6 or 9 ranks");
    }
    tp_test_end();
    return tap_done();
}
