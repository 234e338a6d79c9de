/*
 * test_tp_block: one whole pre-LayerNorm transformer block (layernorm, Q/K/V, attention,
 * projection plus residual, layernorm, GELU MLP plus residual), forward and backward,
 * distributed in the 2D layout on 2×2 and in the 1D Megatron layout on 1×4, against the
 * same block computed serially in double with the tsr_ref_* functions: the output, the input
 * gradient and all sixteen parameter gradients within 1e-5. It is written as the model
 * writes it (lib/model/layers.c): Q, K and V are three column ranges of one buffer (and dQ,
 * dK, dV of another), the residuals are the linear layers' R, the MLP's first layer is
 * linear_gelu_forward, and the backward is split into input gradients (backward_input,
 * QKV's three at once) and weight gradients (backward_weight) afterwards. The shapes do
 * not divide by the grids (3 sequences, 3 heads), so the 1×4 run has a rank without a
 * head. At 1 rank both layouts run on 1×1. The 1D run also checks the communication: two
 * all-reduces forward, two for the input gradients, none for the weight gradients, and
 * their bytes.
 */
#include "test_tp_common.h"

#define TOL 1e-5
#define NB 3          /* sequences */
#define T 4           /* tokens per sequence */
#define M (NB * T)
#define NH 3          /* heads */
#define HD 8          /* head size */
#define H (NH * HD)
#define F (4 * H)     /* MLP width */
#define EPS 1e-5

/* The parameters, in one order for the serial and the distributed block. */
enum { LN1G, LN1B, WQ, BQ, WK, BK, WV, BV, WO, BO, LN2G, LN2B, W1, B1, W2, B2, NPARAM };
static const char *const pname[NPARAM] = {"ln1.gamma", "ln1.beta", "Wq", "bq", "Wk", "bk", "Wv", "bv", "Wo", "bo",
                                          "ln2.gamma", "ln2.beta", "W1", "b1", "W2", "b2"};
static const int prow[NPARAM] = {1, 1, H, 1, H, 1, H, 1, H, 1, 1, 1, H, 1, F, 1};
static const int pcol[NPARAM] = {H, H, H, H, H, H, H, H, H, H, H, H, F, F, H, H};

static double *param[NPARAM], *grad[NPARAM]; /* serial values and reference gradients */

static size_t psize(int p) { return (size_t)prow[p] * pcol[p]; }

/* ---------- the serial block, double precision ---------- */

static void serial_block(const double *x, const double *dy, double *y, double *dx)
{
    static double a[M * H], q[M * H], k[M * H], v[M * H], o[M * H], x1[M * H], b[M * H], h[M * F], g[M * F];
    static double att[NB * NH * T * T], mean1[M], rstd1[M], mean2[M], rstd2[M];
    static double dg[M * F], dh[M * F], db_[M * H], dx1[M * H], d_o[M * H], dq[M * H], dk[M * H], dv[M * H];
    static double da[M * H], tmp[M * H];
    tsr_ref_layernorm_forward(M, H, x, param[LN1G], param[LN1B], EPS, a, mean1, rstd1);
    tsr_ref_linear_forward(M, H, H, a, param[WQ], param[BQ], q);
    tsr_ref_linear_forward(M, H, H, a, param[WK], param[BK], k);
    tsr_ref_linear_forward(M, H, H, a, param[WV], param[BV], v);
    tsr_ref_attention_forward(NB, T, NH, HD, q, k, v, o, att);
    tsr_ref_linear_forward(M, H, H, o, param[WO], param[BO], x1);
    for (int i = 0; i < M * H; i++)
        x1[i] += x[i];
    tsr_ref_layernorm_forward(M, H, x1, param[LN2G], param[LN2B], EPS, b, mean2, rstd2);
    tsr_ref_linear_forward(M, F, H, b, param[W1], param[B1], h);
    tsr_ref_gelu_forward(M * F, h, g);
    tsr_ref_linear_forward(M, H, F, g, param[W2], param[B2], y);
    for (int i = 0; i < M * H; i++)
        y[i] += x1[i];
    /* backward */
    tsr_ref_linear_backward(M, H, F, g, param[W2], dy, dg, grad[W2], grad[B2]);
    tsr_ref_gelu_backward(M * F, h, dg, dh);
    tsr_ref_linear_backward(M, F, H, b, param[W1], dh, db_, grad[W1], grad[B1]);
    tsr_ref_layernorm_backward(M, H, x1, param[LN2G], mean2, rstd2, db_, dx1, grad[LN2G], grad[LN2B]);
    for (int i = 0; i < M * H; i++)
        dx1[i] += dy[i];
    tsr_ref_linear_backward(M, H, H, o, param[WO], dx1, d_o, grad[WO], grad[BO]);
    tsr_ref_attention_backward(NB, T, NH, HD, q, k, v, att, d_o, dq, dk, dv);
    tsr_ref_linear_backward(M, H, H, a, param[WQ], dq, da, grad[WQ], grad[BQ]);
    tsr_ref_linear_backward(M, H, H, a, param[WK], dk, tmp, grad[WK], grad[BK]);
    for (int i = 0; i < M * H; i++)
        da[i] += tmp[i];
    tsr_ref_linear_backward(M, H, H, a, param[WV], dv, tmp, grad[WV], grad[BV]);
    for (int i = 0; i < M * H; i++)
        da[i] += tmp[i];
    tsr_ref_layernorm_backward(M, H, x, param[LN1G], mean1, rstd1, da, dx, grad[LN1G], grad[LN1B]);
    for (int i = 0; i < M * H; i++)
        dx[i] += dx1[i];
}

/* ---------- the distributed block ---------- */

static tsr_dmat_desc_t lay(int oned, int m, int n, tsr_split_t r2, tsr_split_t c2, tsr_split_t r1, tsr_split_t c1,
                           int ru, int cu)
{
    return oned ? tp_desc(m, n, r1, c1, ru, cu) : tp_desc(m, n, r2, c2, ru, cu);
}

/* Layout of parameter p: 2D blocks, or 1D column-parallel (Q, K, V, W1) / row-parallel (Wo, W2). */
static tsr_dmat_desc_t param_desc(int p, int oned)
{
    tsr_split_t N = TSR_SPLIT_NONE, R = TSR_SPLIT_GRID_ROWS, C = TSR_SPLIT_GRID_COLS;
    switch (p) {
    case WQ: case WK: case WV: return lay(oned, H, H, R, C, N, C, 1, HD);
    case BQ: case BK: case BV: return lay(oned, 1, H, N, C, N, C, 1, HD);
    case WO: return lay(oned, H, H, R, C, C, N, HD, 1);
    case W1: return lay(oned, H, F, R, C, N, C, 1, 1);
    case B1: return lay(oned, 1, F, N, C, N, C, 1, 1);
    case W2: return lay(oned, F, H, R, C, C, N, 1, 1);
    default: return lay(oned, 1, H, N, C, N, N, 1, 1); /* layernorm vectors, bo, b2 */
    }
}

static void check_rc(tsr_status_t rc, const char *what)
{
    if (rc != TSR_OK)
        tp_die(what);
}

/* Three matrices laid out by d over one buffer of this rank's rows, side by side (ld = 3 columns). */
static void *three_in_one(tsr_tp_t tp, tsr_dmat_desc_t d, tsr_dmat_t m[3])
{
    tsr_dmat_view_t b;
    void *buf = NULL;
    check_rc(tsr_tp_block(tp, &d, &b), "block");
    check_rc(tsr_device_alloc(tp_dev, TSR_MEM_ACTIVATIONS, (size_t)b.rows * 3 * b.cols * sizeof(float), &buf),
             "alloc");
    for (int j = 0; j < 3; j++) {
        check_rc(tsr_dmat_wrap(tp, &d, buf ? (float *)buf + (size_t)j * b.cols : NULL, 3 * b.cols, &m[j]), "wrap");
        check_rc(tsr_dmat_zero(m[j]), "zero");
    }
    return buf;
}

/* dst = src, blocks laid out alike (the model's copy of a residual gradient before a += op). */
static tsr_status_t copy(tsr_dmat_t src, tsr_dmat_t dst)
{
    tsr_dmat_view_t s, d;
    tsr_dmat_local(src, &s);
    tsr_dmat_local(dst, &d);
    if (s.rows == 0 || s.cols == 0)
        return TSR_OK;
    return tsr_kernel_axpby_2d(tp_dev, s.rows, s.cols, 1.0f, s.dtype, s.data, s.ld, 0.0f, d.dtype, d.data, d.ld);
}

static void distributed_block(int r, int c, int oned, const double *x, const double *dy, const double *y_ref,
                              const double *dx_ref)
{
    tsr_grid_t grid = NULL;
    tsr_tp_t tp = tp_open(r, c, &grid);
    tsr_split_t N = TSR_SPLIT_NONE, R = TSR_SPLIT_GRID_ROWS, C = TSR_SPLIT_GRID_COLS;
    const char *mode = oned ? "1D" : "2D";
    tsr_dmat_desc_t act = lay(oned, M, H, R, C, N, N, T, 1);   /* x, a, x1, b, y */
    tsr_dmat_desc_t heads = lay(oned, M, H, R, C, N, C, T, HD); /* q, k, v, o */
    tsr_dmat_desc_t wide = lay(oned, M, F, R, C, N, C, T, 1);  /* h, g */
    tsr_dmat_t P[NPARAM], G[NPARAM];
    for (int p = 0; p < NPARAM; p++) {
        P[p] = tp_dmat(tp, param_desc(p, oned), param[p]);
        G[p] = tp_dmat(tp, param_desc(p, oned), NULL);
    }
    tsr_dmat_t X = tp_dmat(tp, act, x), dY = tp_dmat(tp, act, dy);
    tsr_dmat_t A = tp_dmat(tp, act, NULL), X1 = tp_dmat(tp, act, NULL), Bm = tp_dmat(tp, act, NULL);
    tsr_dmat_t Y = tp_dmat(tp, act, NULL), dA = tp_dmat(tp, act, NULL), dX1 = tp_dmat(tp, act, NULL);
    tsr_dmat_t dB = tp_dmat(tp, act, NULL), dX = tp_dmat(tp, act, NULL);
    tsr_dmat_t QKV[3], dQKV[3];
    void *qkv_buf = three_in_one(tp, heads, QKV), *dqkv_buf = three_in_one(tp, heads, dQKV);
    tsr_dmat_t O = tp_dmat(tp, heads, NULL), dO = tp_dmat(tp, heads, NULL);
    tsr_dmat_t Hm = tp_dmat(tp, wide, NULL), Gm = tp_dmat(tp, wide, NULL), dH = tp_dmat(tp, wide, NULL);
    tsr_dmat_view_t va, vh;
    tsr_dmat_local(X, &va);
    tsr_dmat_local(O, &vh);
    float *mean1 = tp_device_floats((size_t)va.rows), *rstd1 = tp_device_floats((size_t)va.rows);
    float *mean2 = tp_device_floats((size_t)va.rows), *rstd2 = tp_device_floats((size_t)va.rows);
    float *lse = tp_device_floats((size_t)vh.rows * (vh.cols / HD));
    tsr_dmat_t wqkv[3] = {P[WQ], P[WK], P[WV]};
    uint64_t pair = tp_ar(c, 4ull * M * H); /* one all-reduce of an M x H activation along the row */

    tsr_tp_reset_counters(tp);
    check_rc(tsr_tp_layernorm_forward(tp, X, P[LN1G], P[LN1B], (float)EPS, A, mean1, rstd1), "ln1");
    for (int j = 0; j < 3; j++)
        check_rc(tsr_tp_linear_forward(tp, A, wqkv[j], P[BQ + 2 * j], NULL, QKV[j]), "qkv");
    check_rc(tsr_tp_attention_forward(tp, QKV[0], QKV[1], QKV[2], T, HD, O, lse), "attention");
    check_rc(tsr_tp_linear_forward(tp, O, P[WO], P[BO], X, X1), "proj + residual");
    check_rc(tsr_tp_layernorm_forward(tp, X1, P[LN2G], P[LN2B], (float)EPS, Bm, mean2, rstd2), "ln2");
    check_rc(tsr_tp_linear_gelu_forward(tp, Bm, P[W1], P[B1], Hm, Gm), "fc + gelu");
    check_rc(tsr_tp_linear_forward(tp, Gm, P[W2], P[B2], X1, Y), "fc proj + residual");
    if (oned) {
        is_int(tp_calls(tp, TSR_COMM_ALLREDUCE), c > 1 ? 2 : 0, "1x%d 1D block forward: one all-reduce per pair", c);
        is_int(tsr_tp_bytes_sent(tp), 2 * pair, "1x%d 1D block forward: bytes = 2 all-reduces of M x H", c);
    }
    tp_check(Y, y_ref, TOL, oned ? "1D block output" : "2D block output", r, c);

    /* Input gradients, as lib/model/layers.c orders them. */
    tsr_dmat_t w1 = P[W1], wo = P[WO];
    tsr_tp_reset_counters(tp);
    check_rc(tsr_tp_linear_gelu_backward_input(tp, P[W2], dY, Hm, dH), "fc proj + gelu backward");
    check_rc(tsr_tp_linear_backward_input(tp, 1, &w1, &dH, dB), "fc backward");
    check_rc(copy(dY, dX1), "residual 2 backward");
    check_rc(tsr_tp_layernorm_backward_input(tp, X1, P[LN2G], mean2, rstd2, dB, dX1), "ln2 backward");
    check_rc(tsr_tp_linear_backward_input(tp, 1, &wo, &dX1, dO), "proj backward");
    check_rc(tsr_tp_attention_backward(tp, QKV[0], QKV[1], QKV[2], O, lse, T, HD, dO, dQKV[0], dQKV[1], dQKV[2]),
             "attention backward");
    check_rc(tsr_tp_linear_backward_input(tp, 3, wqkv, dQKV, dA), "qkv backward");
    check_rc(copy(dX1, dX), "residual 1 backward");
    check_rc(tsr_tp_layernorm_backward_input(tp, X, P[LN1G], mean1, rstd1, dA, dX), "ln1 backward");
    if (oned) {
        is_int(tp_calls(tp, TSR_COMM_ALLREDUCE), c > 1 ? 2 : 0,
               "1x%d 1D block input gradients: one all-reduce per pair (QKV's three at once)", c);
        is_int(tsr_tp_bytes_sent(tp), 2 * pair, "1x%d 1D block input gradients: bytes = 2 all-reduces of M x H", c);
    }
    tp_check(dX, dx_ref, TOL, oned ? "1D block dX" : "2D block dX", r, c);

    /* Weight gradients, afterwards. */
    tsr_tp_reset_counters(tp);
    check_rc(tsr_tp_linear_backward_weight(tp, Gm, dY, G[W2], G[B2]), "dW2");
    check_rc(tsr_tp_linear_backward_weight(tp, Bm, dH, G[W1], G[B1]), "dW1");
    check_rc(tsr_tp_layernorm_backward_weight(tp, X1, mean2, rstd2, dB, G[LN2G], G[LN2B]), "ln2 weights");
    check_rc(tsr_tp_linear_backward_weight(tp, O, dX1, G[WO], G[BO]), "dWo");
    for (int j = 0; j < 3; j++)
        check_rc(tsr_tp_linear_backward_weight(tp, A, dQKV[j], G[WQ + 2 * j], G[BQ + 2 * j]), "dWqkv");
    check_rc(tsr_tp_layernorm_backward_weight(tp, X, mean1, rstd1, dA, G[LN1G], G[LN1B]), "ln1 weights");
    if (oned)
        is_int(tp_all_calls(tp), 0, "1x%d 1D block weight gradients: no communication", c);
    for (int p = 0; p < NPARAM; p++) {
        char what[64];
        snprintf(what, sizeof what, "%s block d%s", mode, pname[p]);
        if (p != BK)
            tp_check(G[p], grad[p], TOL, what, r, c);
    }
    /* A bias on the keys shifts every score of a query alike: softmax ignores it, dbk is 0. */
    double *gk = tp_local(G[BK]), big = 0, ref = 0;
    tsr_dmat_view_t vb;
    tsr_dmat_local(G[BK], &vb);
    for (int j = 0; j < vb.cols; j++)
        big = fabs(gk[j]) > big ? fabs(gk[j]) : big;
    for (int j = 0; j < H; j++)
        ref = fabs(grad[BQ][j]) > ref ? fabs(grad[BQ][j]) : ref;
    ok(big <= TOL * ref, "%dx%d %s block dbk is zero: max %.2g <= 1e-5 max|dbq|", r, c, mode, big);
    free(gk);
    for (int p = 0; p < NPARAM; p++) {
        tsr_dmat_destroy(&P[p]);
        tsr_dmat_destroy(&G[p]);
    }
    for (int j = 0; j < 3; j++) {
        tsr_dmat_destroy(&QKV[j]);
        tsr_dmat_destroy(&dQKV[j]);
    }
    tsr_device_free(tp_dev, &qkv_buf);
    tsr_device_free(tp_dev, &dqkv_buf);
    TP_DESTROY(X, dY, A, X1, Bm, Y, dA, dX1, dB, dX, O, dO, Hm, Gm, dH);
    float *stats[] = {mean1, rstd1, mean2, rstd2, lse};
    for (size_t i = 0; i < sizeof stats / sizeof *stats; i++)
        tp_device_free(stats[i]);
    tp_close(&tp, &grid);
}

int main(int argc, char **argv)
{
    tap_init(&argc, &argv, "1 4");
    tp_test_start();
    static double y[M * H], dx[M * H];
    for (int p = 0; p < NPARAM; p++) {
        int gain = p == LN1G || p == LN2G;
        param[p] = tp_random(psize(p), gain ? 0.8 : -0.5, gain ? 1.2 : 0.5);
        grad[p] = calloc(psize(p), sizeof(double));
    }
    double *x = tp_random(M * H, -1, 1), *dy = tp_random(M * H, -1, 1);
    serial_block(x, dy, y, dx);
    if (tap_size() == 1) {
        distributed_block(1, 1, 0, x, dy, y, dx);
        distributed_block(1, 1, 1, x, dy, y, dx);
    } else if (tap_size() == 4) {
        distributed_block(2, 2, 0, x, dy, y, dx);
        distributed_block(1, 4, 1, x, dy, y, dx);
    } else {
        tap_skip_all("runs at 1 or 4 ranks");
    }
    for (int p = 0; p < NPARAM; p++)
        free(param[p]), free(grad[p]);
    free(x), free(dy);
    tp_test_end();
    return tap_done();
}
