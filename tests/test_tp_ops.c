/*
 * test_tp_ops: every layer operation, forward and backward, distributed on the grids 1×1,
 * 1×2, 2×1, 2×2, 1×4, 2×3 and 3×3 against the serial references (relative error 1e-5),
 * with shapes that do not divide by the grid: linear (2D, column-parallel, row-parallel),
 * layernorm, GELU, residual add, attention, embedding (2D and vocabulary-parallel) and
 * cross-entropy (vocabulary split over columns). Weight gradients accumulate onto random
 * starting values. Bytes sent by the linear layers, layernorm, embedding and cross-entropy
 * are compared with doc/tp.md's formulas. On grids with r > 1 the 1D weights also run with token
 * rows split, and the embedding also runs with the vocabulary whole.
 */
#include "test_tp_common.h"

#define TOL 1e-5
#define B 3    /* sequences */
#define T 2    /* tokens per sequence */
#define M (B * T)
#define H 7    /* hidden */
#define H2 5   /* linear output */
#define V 11   /* vocabulary */

static int R, C; /* grid shape of the battery running */

static tsr_dmat_desc_t d2(int m, int n, int ru, int cu)
{
    return tp_desc(m, n, TSR_SPLIT_GRID_ROWS, TSR_SPLIT_GRID_COLS, ru, cu);
}

static tsr_dmat_desc_t dvec(int n, int cu) { return tp_desc(1, n, TSR_SPLIT_NONE, TSR_SPLIT_GRID_COLS, 1, cu); }

/* floor(2 (N-1) S / N): bytes of an all-reduce of S bytes over N ranks. */
static uint64_t ar(int n, uint64_t s) { return n > 1 ? 2 * (uint64_t)(n - 1) * s / (uint64_t)n : 0; }

/* This rank's grid coordinates. */
static tsr_grid_coords_t coords(tsr_tp_t tp)
{
    tsr_grid_coords_t co;
    tsr_grid_coords(tsr_tp_grid(tp), &co);
    return co;
}

static double *dup_add(const double *a, const double *b, size_t n)
{
    double *s = malloc(n * sizeof *s);
    for (size_t i = 0; i < n; i++)
        s[i] = a[i] + b[i];
    return s;
}

/* doc/tp.md: bytes of the 2D linear layer on rank (i, j); backward with dX and db. */
static uint64_t linear2d_bytes(int backward, int i, int j)
{
    uint64_t mi = tp_block_len(M, T, R, i), hj = tp_block_len(H, 1, C, j), hi = tp_block_len(H, 1, R, i);
    uint64_t oj = tp_block_len(H2, 1, C, j);
    if (!backward) /* SUMMA X·W: m=M, k=H, n=H2 */
        return 4 * ((C > 1 ? mi * H : 0) + (R > 1 ? (uint64_t)H * oj : 0));
    uint64_t dx = 4 * ((R > 1 ? (uint64_t)H * oj : 0) + mi * (H - hj));  /* dY·Wᵀ: B=W is H×H2 */
    uint64_t dw = 4 * ((C > 1 ? mi * H : 0) + oj * (H - hi));            /* Xᵀ·dY: A=X is M×H */
    uint64_t db = R > 1 ? 2 * (uint64_t)(R - 1) * 4 * oj / R : 0;
    return dx + dw + db;
}

/* One linear layer in the layout given by the descriptions; backward accumulates onto random dW, db. */
static void linear_case(tsr_tp_t tp, const char *name, tsr_dmat_desc_t dx_, tsr_dmat_desc_t dw_, tsr_dmat_desc_t db_,
                        tsr_dmat_desc_t dy_, int check_2d_formula)
{
    tsr_grid_coords_t co;
    tsr_grid_coords(tsr_tp_grid(tp), &co);
    int m = dx_.rows, k = dx_.cols, n = dw_.cols;
    double *x = tp_random((size_t)m * k, -1, 1), *w = tp_random((size_t)k * n, -1, 1), *b = tp_random(n, -1, 1);
    double *gy = tp_random((size_t)m * n, -1, 1), *gw0 = tp_random((size_t)k * n, -1, 1), *gb0 = tp_random(n, -1, 1);
    double *y = malloc((size_t)m * n * sizeof *y), *gx = malloc((size_t)m * k * sizeof *gx);
    double *gw = malloc((size_t)k * n * sizeof *gw), *gb = malloc((size_t)n * sizeof *gb);
    memcpy(gw, gw0, (size_t)k * n * sizeof *gw);
    memcpy(gb, gb0, (size_t)n * sizeof *gb);
    tsr_ref_linear_forward(m, n, k, x, w, b, y);
    tsr_ref_linear_backward(m, n, k, x, w, gy, gx, gw, gb);

    tsr_dmat_t X = tp_dmat(tp, dx_, x), W = tp_dmat(tp, dw_, w), Bv = tp_dmat(tp, db_, b), Y = tp_dmat(tp, dy_, NULL);
    tsr_dmat_t dY = tp_dmat(tp, dy_, gy), dX = tp_dmat(tp, dx_, NULL), dW = tp_dmat(tp, dw_, gw0);
    tsr_dmat_t dB = tp_dmat(tp, db_, gb0);
    char what[96];
    tsr_tp_reset_counters(tp);
    ok(tsr_tp_linear_forward(tp, X, W, Bv, Y) == TSR_OK, "%dx%d linear %s forward runs", R, C, name);
    uint64_t fwd = tsr_tp_bytes_sent(tp);
    tsr_tp_reset_counters(tp);
    ok(tsr_tp_linear_backward(tp, X, W, dY, dX, dW, dB) == TSR_OK, "%dx%d linear %s backward runs", R, C, name);
    uint64_t bwd = tsr_tp_bytes_sent(tp);
    is_int(fwd, tsr_tp_linear_bytes(tp, X, W, Y, 1, 0), "%dx%d linear %s forward: bytes = tsr_tp_linear_bytes", R, C,
           name);
    is_int(bwd, tsr_tp_linear_bytes(tp, X, W, Y, 1, 1), "%dx%d linear %s backward: bytes = tsr_tp_linear_bytes", R,
           C, name);
    if (check_2d_formula) {
        is_int(fwd, linear2d_bytes(0, co.tp_row, co.tp_col), "%dx%d linear 2D forward: bytes = doc formula", R, C);
        is_int(bwd, linear2d_bytes(1, co.tp_row, co.tp_col), "%dx%d linear 2D backward: bytes = doc formula", R, C);
    }
    snprintf(what, sizeof what, "linear %s Y", name);
    tp_check(Y, y, TOL, what, R, C);
    snprintf(what, sizeof what, "linear %s dX", name);
    tp_check(dX, gx, TOL, what, R, C);
    snprintf(what, sizeof what, "linear %s dW (accumulated)", name);
    tp_check(dW, gw, TOL, what, R, C);
    snprintf(what, sizeof what, "linear %s db (accumulated)", name);
    tp_check(dB, gb, TOL, what, R, C);
    tsr_dmat_t all[] = {X, W, Bv, Y, dY, dX, dW, dB};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        tsr_dmat_destroy(&all[i]);
    free(x), free(w), free(b), free(gy), free(gw0), free(gb0), free(y), free(gx), free(gw), free(gb);
}

static void linears(tsr_tp_t tp)
{
    linear_case(tp, "2D", d2(M, H, T, 1), d2(H, H2, 1, 1), dvec(H2, 1), d2(M, H2, T, 1), 1);
    tsr_dmat_desc_t whole = tp_desc(M, H, TSR_SPLIT_NONE, TSR_SPLIT_NONE, 1, 1);
    linear_case(tp, "column-parallel", whole, tp_desc(H, H2, TSR_SPLIT_NONE, TSR_SPLIT_GRID_COLS, 1, 1), dvec(H2, 1),
                tp_desc(M, H2, TSR_SPLIT_NONE, TSR_SPLIT_GRID_COLS, 1, 1), 0);
    linear_case(tp, "row-parallel", tp_desc(M, H, TSR_SPLIT_NONE, TSR_SPLIT_GRID_COLS, 1, 1),
                tp_desc(H, H2, TSR_SPLIT_GRID_COLS, TSR_SPLIT_NONE, 1, 1),
                tp_desc(1, H2, TSR_SPLIT_NONE, TSR_SPLIT_NONE, 1, 1),
                tp_desc(M, H2, TSR_SPLIT_NONE, TSR_SPLIT_NONE, 1, 1), 0);
    if (R == 1)
        return;
    /* The 1D weights with token rows split over grid rows: dW and db are summed down the column. */
    linear_case(tp, "column-parallel, rows split", tp_desc(M, H, TSR_SPLIT_GRID_ROWS, TSR_SPLIT_NONE, T, 1),
                tp_desc(H, H2, TSR_SPLIT_NONE, TSR_SPLIT_GRID_COLS, 1, 1), dvec(H2, 1), d2(M, H2, T, 1), 0);
    linear_case(tp, "row-parallel, rows split", d2(M, H, T, 1), tp_desc(H, H2, TSR_SPLIT_GRID_COLS, TSR_SPLIT_NONE, 1, 1),
                tp_desc(1, H2, TSR_SPLIT_NONE, TSR_SPLIT_NONE, 1, 1),
                tp_desc(M, H2, TSR_SPLIT_GRID_ROWS, TSR_SPLIT_NONE, T, 1), 0);
}

static void layernorm_gelu_add(tsr_tp_t tp)
{
    double *x = tp_random(M * H, -2, 2), *g = tp_random(H, 0.5, 1.5), *be = tp_random(H, -1, 1);
    double *gy = tp_random(M * H, -1, 1), *gg = tp_random(H, -1, 1), *gbe = tp_random(H, -1, 1);
    double y[M * H], mean[M], rstd[M], gx[M * H], ge[M * H], gd[M * H];
    double *gg1 = malloc(H * sizeof *gg1), *gbe1 = malloc(H * sizeof *gbe1);
    memcpy(gg1, gg, H * sizeof *gg), memcpy(gbe1, gbe, H * sizeof *gbe);
    tsr_ref_layernorm_forward(M, H, x, g, be, 1e-5, y, mean, rstd);
    tsr_ref_layernorm_backward(M, H, x, g, mean, rstd, gy, gx, gg1, gbe1);
    tsr_dmat_t X = tp_dmat(tp, d2(M, H, T, 1), x), G = tp_dmat(tp, dvec(H, 1), g), Be = tp_dmat(tp, dvec(H, 1), be);
    tsr_dmat_t Y = tp_dmat(tp, d2(M, H, T, 1), NULL), dY = tp_dmat(tp, d2(M, H, T, 1), gy);
    tsr_dmat_t dX = tp_dmat(tp, d2(M, H, T, 1), NULL), dG = tp_dmat(tp, dvec(H, 1), gg);
    tsr_dmat_t dBe = tp_dmat(tp, dvec(H, 1), gbe);
    tsr_tp_saved_t s = NULL;
    tsr_grid_coords_t co = coords(tp);
    uint64_t mi = tp_block_len(M, T, R, co.tp_row), hj = tp_block_len(H, 1, C, co.tp_col);
    tsr_tp_reset_counters(tp);
    ok(tsr_tp_layernorm_forward(tp, X, G, Be, 1e-5f, Y, &s) == TSR_OK, "%dx%d layernorm forward runs", R, C);
    is_int(tsr_tp_bytes_sent(tp), ar(C, 16 * mi), "%dx%d layernorm forward: bytes = doc formula", R, C);
    tsr_tp_reset_counters(tp);
    ok(tsr_tp_layernorm_backward(tp, X, G, s, dY, dX, dG, dBe) == TSR_OK, "%dx%d layernorm backward runs", R, C);
    is_int(tsr_tp_bytes_sent(tp), ar(C, 16 * mi) + ar(R, 8 * hj), "%dx%d layernorm backward: bytes = doc formula",
           R, C);
    tp_check(Y, y, TOL, "layernorm Y", R, C);
    tp_check(dX, gx, TOL, "layernorm dX", R, C);
    tp_check(dG, gg1, TOL, "layernorm dgamma (accumulated)", R, C);
    tp_check(dBe, gbe1, TOL, "layernorm dbeta (accumulated)", R, C);
    tsr_tp_saved_destroy(&s);
    /* GELU and the residual add on the same layout. */
    tsr_ref_gelu_forward(M * H, x, ge);
    tsr_ref_gelu_backward(M * H, x, gy, gd);
    ok(tsr_tp_gelu_forward(tp, X, Y) == TSR_OK && tsr_tp_gelu_backward(tp, X, dY, dX) == TSR_OK,
       "%dx%d gelu runs", R, C);
    tp_check(Y, ge, TOL, "gelu Y", R, C);
    tp_check(dX, gd, TOL, "gelu dX", R, C);
    double *sum = dup_add(x, gy, M * H);
    ok(tsr_tp_add(tp, X, dY, Y) == TSR_OK, "%dx%d add runs", R, C);
    tp_check(Y, sum, TOL, "residual add", R, C);
    is_int(tsr_tp_add(tp, X, G, Y), TSR_ERR_INVALID_ARG, "%dx%d add refuses mismatched layouts", R, C);
    tsr_dmat_t all[] = {X, G, Be, Y, dY, dX, dG, dBe};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        tsr_dmat_destroy(&all[i]);
    free(x), free(g), free(be), free(gy), free(gg), free(gbe), free(gg1), free(gbe1), free(sum);
}

static void attention(tsr_tp_t tp)
{
    enum { AB = 3, AT = 3, NH = 4, HD = 2, AM = AB * AT, AH = NH * HD };
    double *q = tp_random(AM * AH, -1, 1), *k = tp_random(AM * AH, -1, 1), *v = tp_random(AM * AH, -1, 1);
    double *go = tp_random(AM * AH, -1, 1), o[AM * AH], att[AB * NH * AT * AT], gq[AM * AH], gk[AM * AH], gv[AM * AH];
    tsr_ref_attention_forward(AB, AT, NH, HD, q, k, v, o, att);
    tsr_ref_attention_backward(AB, AT, NH, HD, q, k, v, att, go, gq, gk, gv);
    tsr_dmat_desc_t d = d2(AM, AH, AT, HD);
    tsr_dmat_t Q = tp_dmat(tp, d, q), K = tp_dmat(tp, d, k), Vm = tp_dmat(tp, d, v), O = tp_dmat(tp, d, NULL);
    tsr_dmat_t dO = tp_dmat(tp, d, go), dQ = tp_dmat(tp, d, NULL), dK = tp_dmat(tp, d, NULL), dV = tp_dmat(tp, d, NULL);
    tsr_tp_saved_t s = NULL;
    tsr_tp_reset_counters(tp);
    ok(tsr_tp_attention_forward(tp, Q, K, Vm, AT, HD, O, &s) == TSR_OK, "%dx%d attention forward runs", R, C);
    ok(tsr_tp_attention_backward(tp, Q, K, Vm, s, dO, dQ, dK, dV) == TSR_OK, "%dx%d attention backward runs", R, C);
    is_int(tsr_tp_bytes_sent(tp), 0, "%dx%d attention sends nothing", R, C);
    tp_check(O, o, TOL, "attention O", R, C);
    tp_check(dQ, gq, TOL, "attention dQ", R, C);
    tp_check(dK, gk, TOL, "attention dK", R, C);
    tp_check(dV, gv, TOL, "attention dV", R, C);
    tsr_tp_saved_destroy(&s);
    tsr_dmat_t all[] = {Q, K, Vm, O, dO, dQ, dK, dV};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        tsr_dmat_destroy(&all[i]);
    free(q), free(k), free(v), free(go);
}

/* Embedding and cross-entropy in the 2D layout (vocab1d = 0), the 1D one (vocab1d = 1), or
 * the 2D one with wte's rows whole (vocab1d = 2: the lookup is local, dwte summed down the column). */
static void embedding_loss(tsr_tp_t tp, int variant)
{
    int vocab1d = variant == 1, whole = variant == 2;
    const char *name = vocab1d ? "1D" : whole ? "2D, wte rows whole" : "2D";
    int32_t *tok = tp_tokens(M, V), *tgt = tp_tokens(M, V);
    double *wte = tp_random(V * H, -1, 1), *wpe = tp_random(T * H, -1, 1), *gx = tp_random(M * H, -1, 1);
    double *gte = tp_random(V * H, -1, 1), *gpe = tp_random(T * H, -1, 1), *lg = tp_random(M * V, -5, 5);
    double x[M * H], gte1[V * H], gpe1[T * H], glg[M * V];
    memcpy(gte1, gte, sizeof gte1), memcpy(gpe1, gpe, sizeof gpe1);
    tsr_ref_embedding_forward(M, T, H, tok, wte, wpe, x);
    tsr_ref_embedding_backward(M, T, H, tok, gx, gte1, gpe1);
    double loss = tsr_ref_cross_entropy_forward(M, V, lg, tgt);
    tsr_ref_cross_entropy_backward(M, V, lg, tgt, 0.5, glg);

    tsr_split_t none = TSR_SPLIT_NONE, rows = TSR_SPLIT_GRID_ROWS, cols = TSR_SPLIT_GRID_COLS;
    tsr_dmat_desc_t dx = vocab1d ? tp_desc(M, H, none, none, T, 1) : d2(M, H, T, 1);
    tsr_dmat_desc_t dte = vocab1d ? tp_desc(V, H, cols, none, 1, 1) : tp_desc(V, H, whole ? none : rows, cols, 1, 1);
    tsr_dmat_desc_t dpe = tp_desc(T, H, none, vocab1d ? none : cols, 1, 1);
    tsr_dmat_desc_t dl = tp_desc(M, V, vocab1d ? none : rows, cols, T, 1);
    tsr_dmat_t X = tp_dmat(tp, dx, NULL), Wte = tp_dmat(tp, dte, wte), Wpe = tp_dmat(tp, dpe, wpe);
    tsr_dmat_t dX = tp_dmat(tp, dx, gx), dWte = tp_dmat(tp, dte, gte), dWpe = tp_dmat(tp, dpe, gpe);
    tsr_dmat_t L = tp_dmat(tp, dl, lg), dL = tp_dmat(tp, dl, NULL);
    tsr_grid_coords_t co = coords(tp);
    uint64_t m0 = tp_block_len(M, T, R, 0), mi = vocab1d ? M : tp_block_len(M, T, R, co.tp_row);
    uint64_t hj = vocab1d ? H : tp_block_len(H, 1, C, co.tp_col);
    tsr_tp_reset_counters(tp);
    ok(tsr_tp_embedding_forward(tp, tok, T, Wte, Wpe, X) == TSR_OK, "%dx%d embedding %s forward runs", R, C, name);
    is_int(tsr_tp_bytes_sent(tp), vocab1d ? ar(C, 4 * M * H) : whole ? 0 : (R - 1) * 4 * m0 * hj,
           "%dx%d embedding %s forward: bytes = doc formula", R, C, name);
    tsr_tp_reset_counters(tp);
    ok(tsr_tp_embedding_backward(tp, tok, T, dX, dWte, dWpe) == TSR_OK, "%dx%d embedding %s backward runs", R, C,
       name);
    is_int(tsr_tp_bytes_sent(tp),
           vocab1d ? 0 : (whole ? ar(R, 4 * V * hj) : (R - 1) * 4 * m0 * hj) + ar(R, 4 * T * hj),
           "%dx%d embedding %s backward: bytes = doc formula", R, C, name);
    char what[64];
    snprintf(what, sizeof what, "embedding %s X", name);
    tp_check(X, x, TOL, what, R, C);
    snprintf(what, sizeof what, "embedding %s dwte (accumulated)", name);
    tp_check(dWte, gte1, TOL, what, R, C);
    snprintf(what, sizeof what, "embedding %s dwpe (accumulated)", name);
    tp_check(dWpe, gpe1, TOL, what, R, C);
    float got = 0;
    tsr_tp_saved_t s = NULL;
    tsr_tp_reset_counters(tp);
    ok(tsr_tp_cross_entropy_forward(tp, L, tgt, &got, &s) == TSR_OK, "%dx%d cross-entropy %s forward runs", R, C,
       name);
    is_int(tsr_tp_bytes_sent(tp), ar(C, 4 * mi) + ar(C, 16 * mi) + (vocab1d ? 0 : ar(R, 8)),
           "%dx%d cross-entropy %s forward: bytes = doc formula", R, C, name);
    is_rel(got, loss, TOL, "%dx%d cross-entropy %s loss", R, C, name);
    ok(tsr_tp_cross_entropy_backward(tp, L, tgt, s, 0.5f, dL) == TSR_OK, "%dx%d cross-entropy %s backward runs", R,
       C, name);
    snprintf(what, sizeof what, "cross-entropy %s dlogits", name);
    tp_check(dL, glg, TOL, what, R, C);
    tsr_tp_saved_destroy(&s);
    tsr_dmat_t all[] = {X, Wte, Wpe, dX, dWte, dWpe, L, dL};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        tsr_dmat_destroy(&all[i]);
    free(tok), free(tgt), free(wte), free(wpe), free(gx), free(gte), free(gpe), free(lg);
}

static void battery(int r, int c)
{
    tsr_grid_t grid = NULL;
    R = r, C = c;
    tsr_tp_t tp = tp_open(r, c, &grid);
    tsr_tp_set_panel(tp, 3);
    linears(tp);
    layernorm_gelu_add(tp);
    attention(tp);
    embedding_loss(tp, 0);
    if (r == 1)
        embedding_loss(tp, 1);
    else
        embedding_loss(tp, 2);
    tp_close(&tp, &grid);
}

int main(int argc, char **argv)
{
    tap_init(&argc, &argv, "1 2 4 6 9");
    tp_test_start();
    switch (tap_size()) {
    case 1: battery(1, 1); break;
    case 2: battery(1, 2); battery(2, 1); break;
    case 4: battery(2, 2); battery(1, 4); break;
    case 6: battery(2, 3); break;
    case 9: battery(3, 3); break;
    default: tap_skip_all("runs at 1, 2, 4, 6 or 9 ranks");
    }
    tsr_device_destroy(&tp_dev);
    return tap_done();
}
