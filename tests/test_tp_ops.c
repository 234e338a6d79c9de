/*
 * test_tp_ops: every layer operation, forward and backward, distributed on the grids 1×1,
 * 1×2, 2×1, 2×2, 1×4, 2×3 and 3×3 against the serial double references (relative error
 * 1e-5), with shapes that do not divide by the grids, and the bytes each rank sends against
 * doc/tp.md's formulas computed here (and the calls against the algorithm's plan):
 *   - linear, in the 2D, column-parallel and row-parallel layouts (and, with r > 1, the 1D
 *     weights with token rows split): forward without and with bias, with a residual R
 *     apart and with R == Y; linear_gelu_forward (H and Y); backward_input for one layer and
 *     for three layers sharing their input (one all-reduce in all where column-parallel);
 *     linear_gelu_backward_input; backward_weight onto non-zero dW and db, with and without
 *     db; tsr_tp_linear_bytes against the counters. Once with contiguous blocks and once
 *     with every operand, and every result an algorithm can write strided, wrapped with
 *     ld > columns (the padding must stay untouched). On grids of 3 or more columns also a
 *     layer 2 wide, so that ranks hold empty blocks (no bias or aux memory behind them).
 *   - layernorm forward (Y, mean, rstd), backward_input (dX += onto non-zero values) and
 *     backward_weight (accumulated) with X's columns split (2D: row-partial statistics) and
 *     whole (1D); a refusal that must come from every rank alike.
 *   - GELU forward and backward (in place too), the residual add.
 *   - attention forward and backward (O, lse, dQ, dK, dV) on each rank's sequences and
 *     heads, with Q, K, V apart and as three column ranges of one buffer (one ld), O and
 *     dO strided; no communication.
 *   - embedding forward and backward (dwte and dwpe accumulated, and dwte alone) in the 2D,
 *     1D vocabulary-parallel and whole-vocabulary layouts, with a vocabulary smaller than
 *     the grid's rows or columns (a rank with an empty vocabulary block), token ids in
 *     device memory and in malloc'ed host memory.
 *   - cross-entropy: the loss of each local row and the gradient written over the logits
 *     (dscale), vocabulary whole or split over 2, 3 or 4 grid columns, logits strided; a
 *     refusal that must come from every rank alike.
 * 6- and 9-rank runs skip the contiguous linear variants (collectives are slow there).
 */
#include "test_tp_common.h"

#define TOL 1e-5
#define B 3  /* sequences */
#define T 2  /* tokens per sequence */
#define M (B * T)
#define H 7  /* hidden */
#define H2 5 /* linear output */
#define V 11 /* vocabulary */

static int R, C;  /* grid shape of the battery running */
static int SMALL; /* 6 or 9 ranks */

static const tsr_split_t NONE = TSR_SPLIT_NONE, ROWS = TSR_SPLIT_GRID_ROWS, COLS = TSR_SPLIT_GRID_COLS;

static tsr_dmat_desc_t d2(int m, int n, int ru, int cu) { return tp_desc(m, n, ROWS, COLS, ru, cu); }

static tsr_dmat_desc_t dvec(int n, tsr_split_t cs) { return tp_desc(1, n, NONE, cs, 1, 1); }

/* Rows and columns of this rank's block of a description. */
static tsr_dmat_view_t block_of(tsr_tp_t tp, tsr_dmat_desc_t d)
{
    tsr_dmat_view_t v;
    if (tsr_tp_block(tp, &d, &v) != TSR_OK)
        tp_die("block");
    return v;
}

/* ---------- linear ---------- */

typedef enum plan { LOCAL, SUM, SUMMA } plan_t;

/* A layout of Y = X W + b and doc/tp.md's bytes for this rank: forward, input gradient,
 * weight gradient, bias gradient; the plan of each product. */
typedef struct layout {
    const char *name;
    tsr_dmat_desc_t x, w, b, y;
    plan_t fwd, in, wt;
    uint64_t b_fwd, b_in, b_wt, b_db;
} layout_t;

/* A result matrix: wrapped with ld > columns where `strided`, else contiguous. */
static tp_wrapped_t out(tsr_tp_t tp, tsr_dmat_desc_t d, const double *g, int pad, int strided)
{
    return tp_wrap(tp, d, g, strided ? pad : 0);
}

static void check_bytes(tsr_tp_t tp, uint64_t want, const char *what)
{
    is_int(tsr_tp_bytes_sent(tp), want, "%dx%d %s: bytes = doc formula", R, C, what);
}

/* Every operation of the linear layer in one layout; pad > 0 wraps the blocks with ld = columns + pad. */
static void linear_layout(tsr_tp_t tp, const layout_t *L, int pad)
{
    int m = L->x.rows, k = L->x.cols, n = L->w.cols;
    size_t mk = (size_t)m * k, kn = (size_t)k * n, mn = (size_t)m * n;
    double *x = tp_random(mk, -1, 1), *w = tp_random(kn, -1, 1), *b = tp_random(n, -1, 1);
    double *res = tp_random(mn, -1, 1), *gy = tp_random(mn, -1, 1), *gy2 = tp_random(mn, -1, 1);
    double *gy3 = tp_random(mn, -1, 1), *w2 = tp_random(kn, -1, 1), *w3 = tp_random(kn, -1, 1);
    double *hin = tp_random(mk, -2, 2), *dx0 = tp_random(mk, -1, 1), *gw0 = tp_random(kn, -1, 1);
    double *gb0 = tp_random(n, -1, 1);
    double *y0 = malloc(mn * sizeof *y0), *y1 = malloc(mn * sizeof *y1), *y2 = malloc(mn * sizeof *y2);
    double *g1 = malloc(mn * sizeof *g1), *dx1 = malloc(mk * sizeof *dx1), *dx3 = malloc(mk * sizeof *dx3);
    double *tmp = malloc(mk * sizeof *tmp), *dh = malloc(mk * sizeof *dh), *gw = tp_copy(gw0, kn);
    double *gb = tp_copy(gb0, n), *scratch = calloc(kn, sizeof *scratch);
    tsr_ref_linear_forward(m, n, k, x, w, NULL, y0);
    tsr_ref_linear_forward(m, n, k, x, w, b, y1);
    for (size_t i = 0; i < mn; i++)
        y2[i] = y1[i] + res[i];
    tsr_ref_gelu_forward(mn, y1, g1);
    tsr_ref_linear_backward(m, n, k, x, w, gy, dx1, gw, gb);
    memcpy(dx3, dx1, mk * sizeof *dx3);
    tsr_ref_linear_backward(m, n, k, x, w2, gy2, tmp, scratch, NULL);
    for (size_t i = 0; i < mk; i++)
        dx3[i] += tmp[i];
    tsr_ref_linear_backward(m, n, k, x, w3, gy3, tmp, scratch, NULL);
    for (size_t i = 0; i < mk; i++)
        dx3[i] += tmp[i];
    tsr_ref_gelu_backward(mk, hin, dx1, dh);

    /* Operands are always strided when padded; results where their algorithm writes ld. */
    tp_wrapped_t X = tp_wrap(tp, L->x, x, pad), W = tp_wrap(tp, L->w, w, pad), Rm = tp_wrap(tp, L->y, res, pad);
    tp_wrapped_t W2 = tp_wrap(tp, L->w, w2, pad), W3 = tp_wrap(tp, L->w, w3, pad);
    tp_wrapped_t dY = tp_wrap(tp, L->y, gy, pad), dY2 = tp_wrap(tp, L->y, gy2, pad), dY3 = tp_wrap(tp, L->y, gy3, pad);
    tp_wrapped_t Y = out(tp, L->y, NULL, pad, L->fwd != SUM), Hm = out(tp, L->y, NULL, pad, L->fwd == LOCAL);
    tp_wrapped_t G = out(tp, L->y, NULL, pad, L->fwd == LOCAL), dX = out(tp, L->x, dx0, pad, L->in != SUM);
    tp_wrapped_t Hin = out(tp, L->x, hin, pad, L->in == LOCAL), dH = out(tp, L->x, dx0, pad, L->in == LOCAL);
    tp_wrapped_t dW = out(tp, L->w, gw0, pad, L->wt != SUM), dWn = out(tp, L->w, gw0, pad, L->wt != SUM);
    tsr_dmat_t Bv = tp_dmat(tp, L->b, b), dB = tp_dmat(tp, L->b, gb0);
    char what[128];
    const char *lay = pad ? " ld>cols" : "";
#define STEP(call, ...)                                                                             \
    do {                                                                                            \
        snprintf(what, sizeof what, __VA_ARGS__);                                                   \
        tsr_tp_reset_counters(tp);                                                                  \
        tsr_status_t rc_ = (call);                                                                  \
        if (!ok(rc_ == TSR_OK, "%dx%d %s runs", R, C, what))                                        \
            diag("%s", tsr_last_error());                                                           \
    } while (0)

    STEP(tsr_tp_linear_forward(tp, X.d, W.d, NULL, NULL, Y.d), "linear %s forward, no bias%s", L->name, lay);
    check_bytes(tp, L->b_fwd, what);
    is_int(tsr_tp_linear_bytes(tp, X.d, W.d, Y.d, 0, 0), L->b_fwd, "%dx%d %s: tsr_tp_linear_bytes agrees", R, C,
           what);
    tp_check(Y.d, y0, TOL, what, R, C);
    STEP(tsr_tp_linear_forward(tp, X.d, W.d, Bv, NULL, Y.d), "linear %s forward + b%s", L->name, lay);
    check_bytes(tp, L->b_fwd, what);
    tp_check(Y.d, y1, TOL, what, R, C);
    STEP(tsr_tp_linear_forward(tp, X.d, W.d, Bv, Rm.d, Y.d), "linear %s forward + b + R%s", L->name, lay);
    check_bytes(tp, L->b_fwd, what);
    tp_check(Y.d, y2, TOL, what, R, C);
    ok(tp_block_err(Rm.d, res) == 0, "%dx%d %s leaves R alone", R, C, what);
    tp_fill(Y.d, res);
    STEP(tsr_tp_linear_forward(tp, X.d, W.d, Bv, Y.d, Y.d), "linear %s forward Y += X W + b (R == Y)%s", L->name,
         lay);
    check_bytes(tp, L->b_fwd, what);
    tp_check(Y.d, y2, TOL, what, R, C);
    STEP(tsr_tp_linear_gelu_forward(tp, X.d, W.d, Bv, Hm.d, G.d), "linear %s gelu forward%s", L->name, lay);
    check_bytes(tp, L->b_fwd, what);
    snprintf(what, sizeof what, "linear %s gelu forward H%s", L->name, lay);
    tp_check(Hm.d, y1, TOL, what, R, C);
    snprintf(what, sizeof what, "linear %s gelu forward Y = gelu(H)%s", L->name, lay);
    tp_check(G.d, g1, TOL, what, R, C);

    /* dX starts with other values: the input gradient overwrites. */
    STEP(tsr_tp_linear_backward_input(tp, 1, &W.d, &dY.d, dX.d), "linear %s backward_input n=1%s", L->name, lay);
    check_bytes(tp, L->b_in, what);
    tp_check(dX.d, dx1, TOL, what, R, C);
    tsr_dmat_t w_3[3] = {W.d, W2.d, W3.d}, dy_3[3] = {dY.d, dY2.d, dY3.d};
    tp_fill(dX.d, dx0);
    STEP(tsr_tp_linear_backward_input(tp, 3, w_3, dy_3, dX.d), "linear %s backward_input n=3 (shared X)%s", L->name,
         lay);
    check_bytes(tp, L->in == SUMMA ? 3 * L->b_in : L->b_in, what);
    if (L->in == SUM)
        ok(tp_calls(tp, TSR_COMM_ALLREDUCE) == 1 && tp_all_calls(tp) == 1, "%dx%d %s: one all-reduce in all", R, C,
           what);
    tp_check(dX.d, dx3, TOL, what, R, C);
    STEP(tsr_tp_linear_gelu_backward_input(tp, W.d, dY.d, Hin.d, dH.d), "linear %s gelu backward_input%s", L->name,
         lay);
    check_bytes(tp, L->b_in, what);
    tp_check(dH.d, dh, TOL, what, R, C);

    STEP(tsr_tp_linear_backward_weight(tp, X.d, dY.d, dW.d, dB), "linear %s backward_weight + db%s", L->name, lay);
    check_bytes(tp, L->b_wt + L->b_db, what);
    is_int(tsr_tp_linear_bytes(tp, X.d, W.d, Y.d, 1, 1), L->b_in + L->b_wt + L->b_db,
           "%dx%d linear %s: tsr_tp_linear_bytes(backward) = input + weight + bias gradients", R, C, L->name);
    snprintf(what, sizeof what, "linear %s dW (accumulated)%s", L->name, lay);
    tp_check(dW.d, gw, TOL, what, R, C);
    snprintf(what, sizeof what, "linear %s db (accumulated)%s", L->name, lay);
    tp_check(dB, gb, TOL, what, R, C);
    STEP(tsr_tp_linear_backward_weight(tp, X.d, dY.d, dWn.d, NULL), "linear %s backward_weight, no db%s", L->name,
         lay);
    check_bytes(tp, L->b_wt, what);
    tp_check(dWn.d, gw, TOL, what, R, C);
#undef STEP
    tp_wrapped_t *all[] = {&X, &W, &Rm, &W2, &W3, &dY, &dY2, &dY3, &Y, &Hm, &G, &dX, &Hin, &dH, &dW, &dWn};
    int intact = 1;
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) {
        intact &= tp_pad_intact(all[i]);
        tp_unwrap(all[i]);
    }
    if (pad)
        ok(intact, "%dx%d linear %s: every padding element untouched", R, C, L->name);
    TP_DESTROY(Bv, dB);
    double *frees[] = {x, w, b, res, gy, gy2, gy3, w2, w3, hin, dx0, gw0, gb0, y0, y1, y2, g1, dx1, dx3, tmp, dh,
                       gw, gb, scratch};
    for (size_t i = 0; i < sizeof frees / sizeof *frees; i++)
        free(frees[i]);
}

/* The linear layer X (M x K) W (K x N) in every layout; `narrow` layers have fewer columns than
 * the grid (ranks with empty blocks of W, Y or X's columns) and run strided only. */
static void linears(tsr_tp_t tp, int K, int N, int narrow)
{
    tsr_grid_coords_t co = tp_coords(tp);
    int one = R == 1 && C == 1;
    uint64_t mi = tp_block_len(M, T, R, co.tp_row), kj = tp_block_len(K, 1, C, co.tp_col);
    uint64_t ki = tp_block_len(K, 1, R, co.tp_row), nj = tp_block_len(N, 1, C, co.tp_col);
    layout_t L[5];
    int n = 0;
    /* 2D: SUMMA X·W, dY·Wᵀ, Xᵀ·dY; db summed down the column. */
    L[n++] = (layout_t){narrow ? "2D narrow" : "2D", d2(M, K, T, 1), d2(K, N, 1, 1), dvec(N, COLS), d2(M, N, T, 1),
                        one ? LOCAL : SUMMA, one ? LOCAL : SUMMA, one ? LOCAL : SUMMA,
                        4 * ((C > 1 ? mi * K : 0) + (R > 1 ? (uint64_t)K * nj : 0)),
                        4 * ((R > 1 ? (uint64_t)K * nj : 0) + mi * (K - kj)),
                        4 * ((C > 1 ? mi * K : 0) + nj * (K - ki)), tp_ar(R, 4 * nj)};
    /* 1D column-parallel: local forward, one all-reduce of dX along the row. */
    L[n++] = (layout_t){narrow ? "column-parallel narrow" : "column-parallel", tp_desc(M, K, NONE, NONE, T, 1),
                        tp_desc(K, N, NONE, COLS, 1, 1), dvec(N, COLS), tp_desc(M, N, NONE, COLS, T, 1), LOCAL,
                        C > 1 ? SUM : LOCAL, LOCAL, 0, tp_ar(C, 4ull * M * K), 0, 0};
    /* 1D row-parallel: one all-reduce of Y along the row; local backward. */
    L[n++] = (layout_t){narrow ? "row-parallel narrow" : "row-parallel", tp_desc(M, K, NONE, COLS, T, 1),
                        tp_desc(K, N, COLS, NONE, 1, 1), dvec(N, NONE), tp_desc(M, N, NONE, NONE, T, 1),
                        C > 1 ? SUM : LOCAL, LOCAL, LOCAL, tp_ar(C, 4ull * M * N), 0, 0, 0};
    if (R > 1 && !narrow) {
        /* The 1D weights with token rows over grid rows: dW and db also summed down the column. */
        L[n++] = (layout_t){"column-parallel, rows split", tp_desc(M, K, ROWS, NONE, T, 1),
                            tp_desc(K, N, NONE, COLS, 1, 1), dvec(N, COLS), d2(M, N, T, 1), LOCAL,
                            C > 1 ? SUM : LOCAL, SUM, 0, tp_ar(C, 4 * mi * K), tp_ar(R, 4 * K * nj), tp_ar(R, 4 * nj)};
        L[n++] = (layout_t){"row-parallel, rows split", d2(M, K, T, 1), tp_desc(K, N, COLS, NONE, 1, 1),
                            dvec(N, NONE), tp_desc(M, N, ROWS, NONE, T, 1), C > 1 ? SUM : LOCAL, LOCAL, SUM,
                            tp_ar(C, 4 * mi * N), 0, tp_ar(R, 4 * kj * N), tp_ar(R, 4ull * N)};
    }
    for (int i = 0; i < n; i++) {
        if (!SMALL && !narrow)
            linear_layout(tp, &L[i], 0);
        linear_layout(tp, &L[i], 1);
    }
}

/* ---------- layernorm, GELU, add ---------- */

/* Layernorm with X's columns split over grid columns (2D) or whole (1D: X whole). */
static void layernorm_case(tsr_tp_t tp, int oned)
{
    const char *name = oned ? "1D" : "2D";
    tsr_dmat_desc_t dx = oned ? tp_desc(M, H, NONE, NONE, T, 1) : d2(M, H, T, 1);
    tsr_dmat_desc_t dv = dvec(H, oned ? NONE : COLS);
    double *x = tp_random(M * H, -2, 2), *g = tp_random(H, 0.5, 1.5), *be = tp_random(H, -1, 1);
    double *gy = tp_random(M * H, -1, 1), *dx0 = tp_random(M * H, -1, 1), *gg0 = tp_random(H, -1, 1);
    double *gbe0 = tp_random(H, -1, 1), y[M * H], mean[M], rstd[M], gx[M * H];
    double *gg = tp_copy(gg0, H), *gbe = tp_copy(gbe0, H);
    tsr_ref_layernorm_forward(M, H, x, g, be, 1e-5, y, mean, rstd);
    tsr_ref_layernorm_backward(M, H, x, g, mean, rstd, gy, gx, gg, gbe);
    for (int i = 0; i < M * H; i++)
        gx[i] += dx0[i];
    tsr_dmat_t X = tp_dmat(tp, dx, x), G = tp_dmat(tp, dv, g), Be = tp_dmat(tp, dv, be), Y = tp_dmat(tp, dx, NULL);
    tsr_dmat_t dY = tp_dmat(tp, dx, gy), dX = tp_dmat(tp, dx, dx0), dG = tp_dmat(tp, dv, gg0);
    tsr_dmat_t dBe = tp_dmat(tp, dv, gbe0);
    tsr_dmat_view_t v;
    tsr_dmat_local(X, &v);
    float *dmean = tp_device_floats((size_t)v.rows), *drstd = tp_device_floats((size_t)v.rows);
    uint64_t mi = (uint64_t)v.rows, hj = (uint64_t)v.cols;
    char what[96];
    tsr_tp_reset_counters(tp);
    ok(tsr_tp_layernorm_forward(tp, X, G, Be, 1e-5f, Y, dmean, drstd) == TSR_OK, "%dx%d layernorm %s forward runs",
       R, C, name);
    is_int(tsr_tp_bytes_sent(tp), oned ? 0 : tp_ar(C, 12 * mi),
           "%dx%d layernorm %s forward: bytes = doc formula (3 floats a row along the row)", R, C, name);
    snprintf(what, sizeof what, "layernorm %s Y", name);
    tp_check(Y, y, TOL, what, R, C);
    snprintf(what, sizeof what, "layernorm %s mean", name);
    tp_check_floats(dmean, mean, (size_t)v.row0, (size_t)v.rows, M, TOL, what, R, C);
    snprintf(what, sizeof what, "layernorm %s rstd", name);
    tp_check_floats(drstd, rstd, (size_t)v.row0, (size_t)v.rows, M, TOL, what, R, C);
    tsr_tp_reset_counters(tp);
    ok(tsr_tp_layernorm_backward_input(tp, X, G, dmean, drstd, dY, dX) == TSR_OK,
       "%dx%d layernorm %s backward_input runs", R, C, name);
    is_int(tsr_tp_bytes_sent(tp), oned ? 0 : tp_ar(C, 8 * mi),
           "%dx%d layernorm %s backward_input: bytes = doc formula (2 floats a row along the row)", R, C, name);
    snprintf(what, sizeof what, "layernorm %s dX (added to)", name);
    tp_check(dX, gx, TOL, what, R, C);
    tsr_tp_reset_counters(tp);
    ok(tsr_tp_layernorm_backward_weight(tp, X, dmean, drstd, dY, dG, dBe) == TSR_OK,
       "%dx%d layernorm %s backward_weight runs", R, C, name);
    is_int(tsr_tp_bytes_sent(tp), oned ? 0 : tp_ar(R, 8 * hj),
           "%dx%d layernorm %s backward_weight: bytes = doc formula (dgamma, dbeta down the column)", R, C, name);
    snprintf(what, sizeof what, "layernorm %s dgamma (accumulated)", name);
    tp_check(dG, gg, TOL, what, R, C);
    snprintf(what, sizeof what, "layernorm %s dbeta (accumulated)", name);
    tp_check(dBe, gbe, TOL, what, R, C);
    TP_DESTROY(X, G, Be, Y, dY, dX, dG, dBe);
    tp_device_free(dmean);
    tp_device_free(drstd);
    free(x), free(g), free(be), free(gy), free(dx0), free(gg0), free(gbe0), free(gg), free(gbe);
}

/* Layernorm over fewer columns than the grid has: every rank refuses (none waits in the all-reduce). */
static void layernorm_refusal(tsr_tp_t tp)
{
    if (C < 3)
        return;
    tsr_dmat_desc_t dx = d2(M, 2, T, 1);
    tsr_dmat_t X = tp_dmat(tp, dx, NULL), Y = tp_dmat(tp, dx, NULL), G = tp_dmat(tp, dvec(2, COLS), NULL);
    tsr_dmat_t Be = tp_dmat(tp, dvec(2, COLS), NULL);
    float *st = tp_device_floats(2 * M);
    is_int(tsr_tp_layernorm_forward(tp, X, G, Be, 1e-5f, Y, st, st + M), TSR_ERR_INVALID_ARG,
           "%dx%d layernorm over 2 columns on %d grid columns is refused on every rank", R, C, C);
    is_int(tsr_tp_layernorm_backward_input(tp, X, G, st, st + M, Y, X), TSR_ERR_INVALID_ARG,
           "%dx%d its backward_input too, on every rank", R, C);
    TP_DESTROY(X, Y, G, Be);
    tp_device_free(st);
}

static void gelu_add(tsr_tp_t tp)
{
    double *x = tp_random(M * H, -3, 3), *gy = tp_random(M * H, -1, 1), ge[M * H], gd[M * H], sum[M * H];
    tsr_ref_gelu_forward(M * H, x, ge);
    tsr_ref_gelu_backward(M * H, x, gy, gd);
    for (int i = 0; i < M * H; i++)
        sum[i] = x[i] + gy[i];
    tsr_dmat_t X = tp_dmat(tp, d2(M, H, T, 1), x), Y = tp_dmat(tp, d2(M, H, T, 1), NULL);
    tsr_dmat_t dY = tp_dmat(tp, d2(M, H, T, 1), gy), dX = tp_dmat(tp, d2(M, H, T, 1), NULL);
    tsr_dmat_t W = tp_dmat(tp, dvec(H, COLS), NULL);
    tsr_tp_reset_counters(tp);
    ok(tsr_tp_gelu_forward(tp, X, Y) == TSR_OK && tsr_tp_gelu_backward(tp, X, dY, dX) == TSR_OK, "%dx%d gelu runs", R,
       C);
    tp_check(Y, ge, TOL, "gelu Y", R, C);
    tp_check(dX, gd, TOL, "gelu dX", R, C);
    ok(tsr_tp_gelu_backward(tp, X, dY, dY) == TSR_OK, "%dx%d gelu backward in place (dx == dy) runs", R, C);
    tp_check(dY, gd, TOL, "gelu dX in place", R, C);
    tp_fill(dY, gy);
    ok(tsr_tp_add(tp, X, dY, Y) == TSR_OK, "%dx%d add runs", R, C);
    tp_check(Y, sum, TOL, "residual add", R, C);
    ok(tsr_tp_add(tp, dY, X, dY) == TSR_OK, "%dx%d add into its own input runs", R, C);
    tp_check(dY, sum, TOL, "residual add in place", R, C);
    is_int(tsr_tp_bytes_sent(tp), 0, "%dx%d gelu and add send nothing", R, C);
    is_int(tsr_tp_add(tp, X, W, Y), TSR_ERR_INVALID_ARG, "%dx%d add refuses mismatched layouts", R, C);
    tp_wrapped_t S = tp_wrap(tp, d2(M, H, T, 1), x, 1);
    is_int(tsr_tp_gelu_forward(tp, S.d, Y), TSR_ERR_INVALID_ARG, "%dx%d gelu refuses a strided block", R, C);
    tp_unwrap(&S);
    TP_DESTROY(X, Y, dY, dX, W);
    free(x), free(gy);
}

/* ---------- attention ---------- */

enum { AB = 3, AT = 3, NH = 3, HD = 8, AM = AB * AT, AH = NH * HD };

/* Log-sum-exp of each row of scaled causal scores, laid out as the kernel keeps it for this rank's block. */
static double *ref_lse(const double *q, const double *k, tsr_dmat_view_t b)
{
    int seqs = b.rows / AT, heads = b.cols / HD, s0 = b.row0 / AT, h0 = b.col0 / HD;
    double *lse = malloc((size_t)(b.rows * heads > 0 ? b.rows * heads : 1) * sizeof *lse);
    for (int s = 0; s < seqs; s++)
        for (int h = 0; h < heads; h++)
            for (int t = 0; t < AT; t++) {
                double sc[AT], mx = -INFINITY, sum = 0;
                for (int j = 0; j <= t; j++) {
                    double d = 0;
                    for (int e = 0; e < HD; e++)
                        d += q[(size_t)((s0 + s) * AT + t) * AH + (h0 + h) * HD + e] *
                             k[(size_t)((s0 + s) * AT + j) * AH + (h0 + h) * HD + e];
                    sc[j] = d / sqrt((double)HD);
                    mx = sc[j] > mx ? sc[j] : mx;
                }
                for (int j = 0; j <= t; j++)
                    sum += exp(sc[j] - mx);
                lse[((size_t)s * heads + h) * AT + t] = mx + log(sum);
            }
    return lse;
}

/* Q, K, V (or their gradients) as three column ranges of one buffer of this rank's rows, ld = 3 columns. */
static void *packed(tsr_tp_t tp, tsr_dmat_desc_t d, const double *g[3], tsr_dmat_t m[3])
{
    tsr_dmat_view_t b = block_of(tp, d);
    void *buf = NULL;
    if (tsr_device_alloc(tp_dev, TSR_MEM_ACTIVATIONS, (size_t)b.rows * 3 * b.cols * sizeof(float), &buf) != TSR_OK)
        tp_die("alloc");
    for (int j = 0; j < 3; j++) {
        if (tsr_dmat_wrap(tp, &d, buf ? (float *)buf + (size_t)j * b.cols : NULL, 3 * b.cols, &m[j]) != TSR_OK)
            tp_die("wrap");
        tp_fill(m[j], g ? g[j] : NULL);
    }
    return buf;
}

static void attention(tsr_tp_t tp, int pack)
{
    const char *name = pack ? "Q|K|V in one buffer, O strided" : "Q, K, V apart";
    double *q = tp_random(AM * AH, -1, 1), *k = tp_random(AM * AH, -1, 1), *v = tp_random(AM * AH, -1, 1);
    double *go = tp_random(AM * AH, -1, 1), o[AM * AH], att[AB * NH * AT * AT], gq[AM * AH], gk[AM * AH], gv[AM * AH];
    tsr_ref_attention_forward(AB, AT, NH, HD, q, k, v, o, att);
    tsr_ref_attention_backward(AB, AT, NH, HD, q, k, v, att, go, gq, gk, gv);
    tsr_dmat_desc_t d = d2(AM, AH, AT, HD);
    tsr_dmat_view_t b = block_of(tp, d);
    double *lse = ref_lse(q, k, b);
    tsr_dmat_t in[3], grad[3];
    void *buf = NULL, *gbuf = NULL;
    const double *qkv[3] = {q, k, v};
    if (pack) {
        buf = packed(tp, d, qkv, in);
        gbuf = packed(tp, d, NULL, grad);
    } else {
        for (int j = 0; j < 3; j++) {
            in[j] = tp_dmat(tp, d, qkv[j]);
            grad[j] = tp_dmat(tp, d, NULL);
        }
    }
    tp_wrapped_t O = tp_wrap(tp, d, NULL, pack), dO = tp_wrap(tp, d, go, pack);
    size_t nl = (size_t)b.rows * (b.cols / HD);
    float *dlse = tp_device_floats(nl);
    char what[96];
    tsr_tp_reset_counters(tp);
    ok(tsr_tp_attention_forward(tp, in[0], in[1], in[2], AT, HD, O.d, dlse) == TSR_OK,
       "%dx%d attention forward (%s) runs", R, C, name);
    ok(tsr_tp_attention_backward(tp, in[0], in[1], in[2], O.d, dlse, AT, HD, dO.d, grad[0], grad[1], grad[2]) ==
           TSR_OK,
       "%dx%d attention backward (%s) runs", R, C, name);
    is_int(tsr_tp_bytes_sent(tp), 0, "%dx%d attention (%s) sends nothing", R, C, name);
    is_int(tp_all_calls(tp), 0, "%dx%d attention (%s) makes no communication call", R, C, name);
    snprintf(what, sizeof what, "attention O (%s)", name);
    tp_check(O.d, o, TOL, what, R, C);
    snprintf(what, sizeof what, "attention lse (%s)", name);
    tp_check_floats(dlse, lse, 0, nl, nl, TOL, what, R, C);
    const double *gref[3] = {gq, gk, gv};
    static const char *const gname[3] = {"dQ", "dK", "dV"};
    for (int j = 0; j < 3; j++) {
        snprintf(what, sizeof what, "attention %s (%s)", gname[j], name);
        tp_check(grad[j], gref[j], TOL, what, R, C);
    }
    ok(tp_block_err(in[0], q) == 0 && tp_block_err(in[1], k) == 0 && tp_block_err(in[2], v) == 0 &&
           tp_pad_intact(&O) && tp_pad_intact(&dO),
       "%dx%d attention (%s) leaves Q, K, V and the padding of O and dO alone", R, C, name);
    if (pack) { /* K with another leading dimension than Q is refused where a rank has heads */
        tsr_dmat_t q1 = tp_dmat(tp, d, q);
        tsr_status_t rc = tsr_tp_attention_forward(tp, q1, in[1], in[2], AT, HD, O.d, dlse);
        ok(b.cols == 0 || rc == TSR_ERR_INVALID_ARG, "%dx%d attention refuses Q and K with different ld", R, C);
        tsr_dmat_destroy(&q1);
    }
    for (int j = 0; j < 3; j++) {
        tsr_dmat_destroy(&in[j]);
        tsr_dmat_destroy(&grad[j]);
    }
    tsr_device_free(tp_dev, &buf);
    tsr_device_free(tp_dev, &gbuf);
    tp_unwrap(&O);
    tp_unwrap(&dO);
    tp_device_free(dlse);
    free(q), free(k), free(v), free(go), free(lse);
}

/* ---------- embedding ---------- */

typedef enum emb { EMB_2D, EMB_1D, EMB_WHOLE } emb_t;

/* Embedding forward and backward with a vocabulary of nv ids; token ids in device memory or malloc'ed. */
static void embedding(tsr_tp_t tp, emb_t lay, int nv, int on_device)
{
    static const char *const lname[] = {"2D", "1D vocabulary-parallel", "2D, vocabulary whole"};
    char name[96], what[128];
    snprintf(name, sizeof name, "embedding %s V=%d, ids in %s", lname[lay], nv, on_device ? "device memory" : "malloc");
    int32_t *tok = tp_tokens(M, nv);
    double *wte = tp_random((size_t)nv * H, -1, 1), *wpe = tp_random(T * H, -1, 1), *gx = tp_random(M * H, -1, 1);
    double *gte0 = tp_random((size_t)nv * H, -1, 1), *gpe0 = tp_random(T * H, -1, 1), x[M * H];
    double *gte = tp_copy(gte0, (size_t)nv * H), *gpe = tp_copy(gpe0, T * H);
    tsr_ref_embedding_forward(M, T, H, tok, wte, wpe, x);
    tsr_ref_embedding_backward(M, T, H, tok, gx, gte, gpe);
    int32_t *ids = tok;
    if (on_device)
        ids = tp_device_tokens(tok, M);
    tsr_dmat_desc_t dx = lay == EMB_1D ? tp_desc(M, H, NONE, NONE, T, 1) : d2(M, H, T, 1);
    tsr_dmat_desc_t dte = lay == EMB_2D   ? tp_desc(nv, H, ROWS, COLS, 1, 1)
                          : lay == EMB_1D ? tp_desc(nv, H, COLS, NONE, 1, 1)
                                          : tp_desc(nv, H, NONE, COLS, 1, 1);
    tsr_dmat_desc_t dpe = tp_desc(T, H, NONE, lay == EMB_1D ? NONE : COLS, 1, 1);
    tsr_dmat_t X = tp_dmat(tp, dx, NULL), Wte = tp_dmat(tp, dte, wte), Wpe = tp_dmat(tp, dpe, wpe);
    tsr_dmat_t dX = tp_dmat(tp, dx, gx), dWte = tp_dmat(tp, dte, gte0), dWpe = tp_dmat(tp, dpe, gpe0);
    tsr_dmat_t dWte1 = tp_dmat(tp, dte, gte0);
    tsr_dmat_view_t vx = block_of(tp, dx), vte = block_of(tp, dte);
    uint64_t m0 = tp_block_len(M, T, R, 0), hj = (uint64_t)vx.cols;
    uint64_t gather = (uint64_t)(R - 1) * 4 * m0 * hj; /* the 2D padded reduce-scatter / all-gather */
    uint64_t fwd = lay == EMB_2D ? gather : lay == EMB_1D ? tp_ar(C, 4ull * M * H) : 0;
    uint64_t bwd_te = lay == EMB_2D ? gather : lay == EMB_1D ? 0 : tp_ar(R, 4ull * nv * hj);
    uint64_t bwd_pe = lay == EMB_WHOLE ? tp_ar(R, 4ull * T * hj) : 0;
    if (vte.rows == 0)
        diag("%dx%d %s: this rank's vocabulary block is empty", R, C, name);
    tsr_tp_reset_counters(tp);
    ok(tsr_tp_embedding_forward(tp, ids, T, Wte, Wpe, X) == TSR_OK, "%dx%d %s forward runs", R, C, name);
    snprintf(what, sizeof what, "%s forward", name);
    check_bytes(tp, fwd, what);
    snprintf(what, sizeof what, "%s X", name);
    tp_check(X, x, TOL, what, R, C);
    tsr_tp_reset_counters(tp);
    ok(tsr_tp_embedding_backward(tp, ids, T, dX, dWte, dWpe) == TSR_OK, "%dx%d %s backward runs", R, C, name);
    snprintf(what, sizeof what, "%s backward", name);
    check_bytes(tp, bwd_te + bwd_pe, what);
    snprintf(what, sizeof what, "%s dwte (accumulated)", name);
    tp_check(dWte, gte, TOL, what, R, C);
    snprintf(what, sizeof what, "%s dwpe (accumulated)", name);
    tp_check(dWpe, gpe, TOL, what, R, C);
    tsr_tp_reset_counters(tp);
    ok(tsr_tp_embedding_backward(tp, ids, T, dX, dWte1, NULL) == TSR_OK, "%dx%d %s backward, dwte alone, runs", R, C,
       name);
    snprintf(what, sizeof what, "%s backward, dwte alone", name);
    check_bytes(tp, bwd_te, what);
    snprintf(what, sizeof what, "%s dwte alone (accumulated)", name);
    tp_check(dWte1, gte, TOL, what, R, C);
    TP_DESTROY(X, Wte, Wpe, dX, dWte, dWpe, dWte1);
    if (on_device)
        tp_device_free(ids);
    free(tok), free(wte), free(wpe), free(gx), free(gte0), free(gpe0), free(gte), free(gpe);
}

/* ---------- cross-entropy ---------- */

/* Losses of the local rows and the gradient over the logits, vocabulary split like `dl`'s columns. */
static void cross_entropy(tsr_tp_t tp, const char *name, tsr_dmat_desc_t dl, int pad)
{
    const float dscale = 0.375f;
    int32_t *tgt = tp_tokens(M, V);
    double *lg = tp_random(M * V, -5, 5), glg[M * V], loss[M];
    for (int i = 0; i < M; i++)
        loss[i] = tsr_ref_cross_entropy_forward(1, V, lg + (size_t)i * V, tgt + i); /* one row's mean is its loss */
    tsr_ref_cross_entropy_backward(M, V, lg, tgt, (double)dscale * M, glg);    /* the gradient of the mean x M */
    int32_t *ids = tp_device_tokens(tgt, M);
    tp_wrapped_t L = tp_wrap(tp, dl, lg, pad);
    tsr_dmat_view_t v = block_of(tp, dl);
    float *losses = tp_device_floats((size_t)v.rows);
    int parts = dl.col_split == COLS ? C : dl.col_split == ROWS ? R : 1;
    char what[128];
    tsr_tp_reset_counters(tp);
    ok(tsr_tp_cross_entropy(tp, L.d, ids, dscale, losses) == TSR_OK, "%dx%d cross-entropy %s runs", R, C, name);
    snprintf(what, sizeof what, "cross-entropy %s (vocabulary in %d blocks)", name, parts);
    check_bytes(tp, (uint64_t)(parts - 1) * 12 * v.rows, what);
    if (parts > 1)
        ok(tp_calls(tp, TSR_COMM_ALLGATHER) == 1 && tp_all_calls(tp) == 1, "%dx%d %s: one all-gather", R, C, what);
    snprintf(what, sizeof what, "cross-entropy %s losses of the local rows", name);
    tp_check_floats(losses, loss, (size_t)v.row0, (size_t)v.rows, M, TOL, what, R, C);
    snprintf(what, sizeof what, "cross-entropy %s gradient over the logits", name);
    tp_check(L.d, glg, TOL, what, R, C);
    if (pad)
        ok(tp_pad_intact(&L), "%dx%d cross-entropy %s leaves the padding alone", R, C, name);
    tp_unwrap(&L);
    tp_device_free(losses);
    tp_device_free(ids);
    free(tgt), free(lg);
}

/* A vocabulary smaller than the grid's columns: every rank refuses (none waits in the all-gather). */
static void cross_entropy_refusal(tsr_tp_t tp)
{
    if (C < 3)
        return;
    int32_t tgt[M] = {0};
    tsr_dmat_t L = tp_dmat(tp, d2(M, 2, T, 1), NULL);
    float *losses = tp_device_floats(M);
    is_int(tsr_tp_cross_entropy(tp, L, tgt, 1.0f, losses), TSR_ERR_INVALID_ARG,
           "%dx%d cross-entropy over 2 vocabulary columns on %d grid columns is refused on every rank", R, C, C);
    tsr_dmat_destroy(&L);
    tp_device_free(losses);
}

static void battery(int r, int c)
{
    tsr_grid_t grid = NULL;
    R = r, C = c;
    tsr_tp_t tp = tp_open(r, c, &grid);
    tsr_tp_set_panel(tp, 3);
    linears(tp, H, H2, 0);
    if (c >= 3)
        linears(tp, 2, 2, 1); /* grid column 2 and up hold no column of W */
    layernorm_case(tp, 0);
    layernorm_case(tp, 1);
    layernorm_refusal(tp);
    gelu_add(tp);
    attention(tp, 0);
    attention(tp, 1);
    embedding(tp, EMB_2D, V, 1);
    embedding(tp, EMB_1D, V, 0);
    if (r > 1) {
        embedding(tp, EMB_WHOLE, V, 1);
        embedding(tp, EMB_2D, r - 1, 0); /* grid row r - 1 holds no vocabulary */
    }
    if (c > 1)
        embedding(tp, EMB_1D, c - 1, 1); /* grid column c - 1 holds no vocabulary */
    cross_entropy(tp, "2D", d2(M, V, T, 1), 0);
    cross_entropy(tp, "2D, logits ld>cols", d2(M, V, T, 1), 2);
    if (!SMALL)
        cross_entropy(tp, "vocabulary whole", tp_desc(M, V, ROWS, NONE, T, 1), 0);
    cross_entropy_refusal(tp);
    tp_close(&tp, &grid);
}

int main(int argc, char **argv)
{
    tap_init(&argc, &argv, "1 2 4 6 9");
    tp_test_start();
    SMALL = tap_size() > 4;
    switch (tap_size()) {
    case 1: battery(1, 1); break;
    case 2: battery(1, 2); battery(2, 1); break;
    case 4: battery(2, 2); battery(1, 4); break;
    case 6: battery(2, 3); break;
    case 9: battery(3, 3); break;
    default: tap_skip_all("runs at 1, 2, 4, 6 or 9 ranks");
    }
    tp_test_end();
    return tap_done();
}
