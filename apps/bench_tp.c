/*
 * bench_tp.c: tsr-bench tp. On whatever number of ranks P it is given, builds the most
 * square 2D grid r×c (r <= c) and the 1D grid 1×P, and on each shape M,N,K measures:
 *   summa       C = A·B, A M×K, B K×N (2D grid)
 *   linear_fwd  Y = X W + b, X M×K, W K×N (2D: SUMMA; 1D: column-parallel)
 *   linear_bwd  dX, dW, db of the same
 *   pair_fwd    Z = (X W1 + b1) W2 + b2, W2 N×K (2D: two SUMMA linears; 1D: column- then row-parallel)
 *   pair_bwd    the backward of the pair
 * For each: milliseconds per call (slowest rank, mean of --reps calls after one warm-up),
 * GFLOP/s per rank, and the bytes sent by the most loaded rank as counted by the comm
 * layer next to the formula of doc/tp.md (bytes_match: every rank's count equals it).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

#define MAX_SHAPES 16

typedef struct opts {
    int json, panel, reps, nshapes;
    int shape[MAX_SHAPES][3]; /* M, N, K */
} opts_t;

/* The matrices of one (grid, shape) configuration. */
typedef struct bench_ctx {
    tsr_tp_t tp;
    tsr_dmat_t x, w, b, y, w2, b2, z;       /* forward */
    tsr_dmat_t dx, dw, db, dy, dw2, db2, dz; /* backward */
} bench_ctx_t;

typedef enum bench_op { OP_SUMMA, OP_LINEAR_FWD, OP_LINEAR_BWD, OP_PAIR_FWD, OP_PAIR_BWD, OP_COUNT } bench_op_t;
static const char *const op_names[OP_COUNT] = {"summa", "linear_fwd", "linear_bwd", "pair_fwd", "pair_bwd"};

static void usage(FILE *out)
{
    fprintf(out,
            "Usage: mpiexec -n P tsr-bench tp [--json] [--shapes M,N,K[;M,N,K...]] [--panel W] [--reps R]\n"
            "  Runs SUMMA (2D only), a linear layer and a linear pair, forward and backward, on the\n"
            "  most square 2D grid of P ranks and on the 1D grid 1xP (column- then row-parallel),\n"
            "  and prints the bytes each sends beside the formula of doc/tp.md.\n"
            "  --json           one JSON object per measurement\n"
            "  --shapes LIST    X MxK, W KxN (default 256,256,256;512,512,512;250,300,170)\n"
            "  --panel W        SUMMA panel width (default %d)\n"
            "  --reps R         timed calls per measurement (default 3)\n"
            "  --help           this text\n",
            TSR_TP_DEFAULT_PANEL);
}

/* "M,N,K[;M,N,K...]": each size parsed whole (tsr_parse_i64), at most 2^20. */
static int parse_shapes(const char *text, opts_t *o)
{
    o->nshapes = 0;
    while (*text) {
        if (o->nshapes == MAX_SHAPES)
            return -1;
        for (int d = 0; d < 3; d++) {
            char num[16];
            int64_t v;
            size_t len = strcspn(text, d < 2 ? "," : ";");
            if (len == 0 || len >= sizeof num || text[len] != (d < 2 ? ',' : text[len]))
                return -1;
            snprintf(num, sizeof num, "%.*s", (int)len, text);
            if (tsr_parse_i64(num, 1, 1 << 20, &v) != TSR_OK)
                return -1;
            o->shape[o->nshapes][d] = (int)v;
            text += len + (d < 2);
        }
        o->nshapes++;
        if (*text == ';' && !*++text)
            return -1; /* a trailing ';' */
    }
    return o->nshapes > 0 ? 0 : -1;
}

/* 0: run, 1: exit 0 (help), -1: bad input (message printed). */
static int parse(int argc, char **argv, opts_t *o)
{
    static const struct option longs[] = {{"json", no_argument, NULL, 'j'},     {"shapes", required_argument, NULL, 's'},
                                          {"panel", required_argument, NULL, 'p'}, {"reps", required_argument, NULL, 'r'},
                                          {"help", no_argument, NULL, 'h'},     {NULL, 0, NULL, 0}};
    *o = (opts_t){0, TSR_TP_DEFAULT_PANEL, 3, 0, {{0}}};
    parse_shapes("256,256,256;512,512,512;250,300,170", o);
    int c;
    opterr = 0;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (c) {
        case 'j': o->json = 1; break;
        case 's':
            if (parse_shapes(optarg, o) != 0)
                return bench_fail("tp", "--shapes %s: expected M,N,K[;M,N,K...] of integers in [1, 1048576]", optarg),
                       -1;
            break;
        case 'p':
            if (bench_int("tp", "--panel", optarg, 1, 1 << 20, &o->panel))
                return -1;
            break;
        case 'r':
            if (bench_int("tp", "--reps", optarg, 1, 1 << 20, &o->reps))
                return -1;
            break;
        case 'h':
            if (bench_rank() == 0)
                usage(stdout);
            return 1;
        default:
            return bench_fail("tp", "unknown option \"%s\" (see tsr-bench tp --help)", argv[optind - 1]), -1;
        }
    }
    if (optind < argc)
        return bench_fail("tp", "unexpected argument \"%s\"", argv[optind]), -1;
    return 0;
}

static tsr_dmat_desc_t desc(int m, int n, tsr_split_t rs, tsr_split_t cs)
{
    tsr_dmat_desc_t d = TSR_DMAT_DESC_INIT;
    d.rows = m, d.cols = n, d.row_split = rs, d.col_split = cs;
    return d;
}

/* A matrix with uniform random entries in [-1, 1) (the same for every layout). */
static tsr_status_t make(tsr_tp_t tp, tsr_dmat_desc_t d, uint32_t id, tsr_dmat_t *out)
{
    tsr_status_t rc = tsr_dmat_create(tp, &d, out);
    if (rc != TSR_OK)
        return rc;
    tsr_dmat_view_t v;
    tsr_dmat_local(*out, &v);
    for (int i = 0; i < v.rows; i++)
        tsr_rng_fill_uniform(1234, tsr_rng_stream(id, 0), (uint64_t)(v.row0 + i) * d.cols + v.col0, (size_t)v.cols,
                             -1.0f, 1.0f, (float *)v.data + (size_t)i * v.ld);
    return TSR_OK;
}

static void ctx_free(bench_ctx_t *c)
{
    tsr_dmat_t *all[] = {&c->x, &c->w, &c->b, &c->y, &c->w2, &c->b2, &c->z,
                         &c->dx, &c->dw, &c->db, &c->dy, &c->dw2, &c->db2, &c->dz};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        tsr_dmat_destroy(all[i]);
}

/* Matrices for X M×K, W K×N, W2 N×K in the 2D layout, or the 1D one (column- then row-parallel). */
static tsr_status_t ctx_make(bench_ctx_t *c, int oned, int m, int n, int k)
{
    tsr_split_t N = TSR_SPLIT_NONE, R = TSR_SPLIT_GRID_ROWS, C = TSR_SPLIT_GRID_COLS;
    tsr_dmat_desc_t dx = oned ? desc(m, k, N, N) : desc(m, k, R, C);
    tsr_dmat_desc_t dw = oned ? desc(k, n, N, C) : desc(k, n, R, C);
    tsr_dmat_desc_t db = desc(1, n, N, C);
    tsr_dmat_desc_t dy = oned ? desc(m, n, N, C) : desc(m, n, R, C);
    tsr_dmat_desc_t dw2 = oned ? desc(n, k, C, N) : desc(n, k, R, C);
    tsr_dmat_desc_t db2 = desc(1, k, N, oned ? N : C);
    struct { tsr_dmat_t *d; tsr_dmat_desc_t desc; } list[] = {
        {&c->x, dx}, {&c->w, dw}, {&c->b, db}, {&c->y, dy}, {&c->w2, dw2}, {&c->b2, db2}, {&c->z, dx},
        {&c->dx, dx}, {&c->dw, dw}, {&c->db, db}, {&c->dy, dy}, {&c->dw2, dw2}, {&c->db2, db2}, {&c->dz, dx}};
    for (size_t i = 0; i < sizeof list / sizeof *list; i++) {
        tsr_status_t rc = make(c->tp, list[i].desc, (uint32_t)i, list[i].d);
        if (rc != TSR_OK)
            return rc;
    }
    return TSR_OK;
}

/* The backward of Y = X W + b: dX = dY Wᵀ, then dW += Xᵀ dY and db. */
static tsr_status_t linear_backward(tsr_tp_t tp, tsr_dmat_t x, tsr_dmat_t w, tsr_dmat_t dy, tsr_dmat_t dx,
                                    tsr_dmat_t dw, tsr_dmat_t db)
{
    tsr_status_t rc = tsr_tp_linear_backward_input(tp, 1, &w, &dy, dx);
    return rc != TSR_OK ? rc : tsr_tp_linear_backward_weight(tp, x, dy, dw, db);
}

static tsr_status_t run_op(bench_ctx_t *c, bench_op_t op)
{
    tsr_status_t rc;
    switch (op) {
    case OP_SUMMA: return tsr_tp_summa(c->tp, TSR_NO_TRANS, TSR_NO_TRANS, 1.0f, c->x, c->w, 0.0f, c->y);
    case OP_LINEAR_FWD: return tsr_tp_linear_forward(c->tp, c->x, c->w, c->b, NULL, c->y);
    case OP_LINEAR_BWD: return linear_backward(c->tp, c->x, c->w, c->dy, c->dx, c->dw, c->db);
    case OP_PAIR_FWD:
        rc = tsr_tp_linear_forward(c->tp, c->x, c->w, c->b, NULL, c->y);
        return rc != TSR_OK ? rc : tsr_tp_linear_forward(c->tp, c->y, c->w2, c->b2, NULL, c->z);
    case OP_PAIR_BWD:
        rc = linear_backward(c->tp, c->y, c->w2, c->dz, c->dy, c->dw2, c->db2);
        return rc != TSR_OK ? rc : linear_backward(c->tp, c->x, c->w, c->dy, c->dx, c->dw, c->db);
    default: return TSR_ERR_INVALID_ARG;
    }
}

/* This rank's bytes for one call of op, by the formulas (tsr_tp_summa_bytes, tsr_tp_linear_bytes). */
static uint64_t formula(bench_ctx_t *c, bench_op_t op)
{
    switch (op) {
    case OP_SUMMA: return tsr_tp_summa_bytes(c->tp, TSR_NO_TRANS, TSR_NO_TRANS, c->x, c->w, c->y);
    case OP_LINEAR_FWD: return tsr_tp_linear_bytes(c->tp, c->x, c->w, c->y, 1, 0);
    case OP_LINEAR_BWD: return tsr_tp_linear_bytes(c->tp, c->x, c->w, c->y, 1, 1);
    case OP_PAIR_FWD:
        return tsr_tp_linear_bytes(c->tp, c->x, c->w, c->y, 1, 0) + tsr_tp_linear_bytes(c->tp, c->y, c->w2, c->z, 1, 0);
    case OP_PAIR_BWD:
        return tsr_tp_linear_bytes(c->tp, c->x, c->w, c->y, 1, 1) + tsr_tp_linear_bytes(c->tp, c->y, c->w2, c->z, 1, 1);
    default: return 0;
    }
}

static double flops(bench_op_t op, int m, int n, int k)
{
    double mnk = 2.0 * m * n * k;
    return op == OP_SUMMA || op == OP_LINEAR_FWD ? mnk : op == OP_LINEAR_BWD || op == OP_PAIR_FWD ? 2 * mnk : 4 * mnk;
}

/* Measure one op and print its line on rank 0. Returns 0, or 1 on a library error. */
static int measure(bench_ctx_t *c, bench_op_t op, const opts_t *o, int r, int cols, int oned, const int *shape)
{
    tsr_tp_reset_counters(c->tp);
    tsr_status_t rc = run_op(c, op); /* the warm-up call is the counted one */
    uint64_t mine = tsr_tp_bytes_sent(c->tp), want = formula(c, op);
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = MPI_Wtime();
    for (int i = 0; i < o->reps && rc == TSR_OK; i++)
        rc = run_op(c, op);
    double dt = (MPI_Wtime() - t0) / o->reps, slowest;
    int bad = rc != TSR_OK, any_bad, match = mine == want, all_match;
    if (bad)
        fprintf(stderr, "tsr-bench tp: %s on %dx%d: %s\n", op_names[op], r, cols, tsr_last_error());
    unsigned long long bytes[2] = {mine, want}, most[2];
    MPI_Allreduce(&dt, &slowest, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    MPI_Allreduce(&bad, &any_bad, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    MPI_Allreduce(&match, &all_match, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(bytes, most, 2, MPI_UNSIGNED_LONG_LONG, MPI_MAX, MPI_COMM_WORLD);
    if (any_bad || bench_rank() != 0)
        return any_bad;
    double ms = slowest * 1e3, gf = flops(op, shape[0], shape[1], shape[2]) / slowest / (r * cols) / 1e9;
    if (o->json)
        printf("{\"op\":\"%s\",\"mode\":\"%s\",\"grid\":\"%dx%d\",\"ranks\":%d,\"m\":%d,\"n\":%d,\"k\":%d,"
               "\"panel\":%d,\"ms\":%.4f,\"gflops_per_rank\":%.4f,\"bytes_per_rank\":%llu,\"bytes_formula\":%llu,"
               "\"bytes_match\":%s}\n",
               op_names[op], oned ? "1d" : "2d", r, cols, r * cols, shape[0], shape[1], shape[2], o->panel, ms, gf,
               most[0], most[1], all_match ? "true" : "false");
    else
        printf("%-11s %-3s %5dx%-3d %6d %6d %6d %10.3f %10.3f %14llu %14llu %s\n", op_names[op], oned ? "1d" : "2d", r,
               cols, shape[0], shape[1], shape[2], ms, gf, most[0], most[1], all_match ? "yes" : "NO");
    fflush(stdout);
    return 0;
}

/* All shapes on one grid; oned selects the 1D (Megatron) layouts. */
static int bench_grid(tsr_device_t dev, const opts_t *o, int r, int c, int oned)
{
    tsr_layout_t layout = TSR_LAYOUT_INIT;
    tsr_grid_t grid = NULL;
    bench_ctx_t ctx = {0};
    int status = 0;
    layout.tp_rows = r, layout.tp_cols = c;
    if (tsr_grid_create(MPI_COMM_WORLD, &layout, &grid) != TSR_OK || tsr_tp_create(grid, dev, &ctx.tp) != TSR_OK ||
        tsr_tp_set_panel(ctx.tp, o->panel) != TSR_OK) {
        status = bench_fail("tp", "grid %dx%d: %s", r, c, tsr_last_error());
        goto done;
    }
    for (int s = 0; s < o->nshapes && !status; s++) {
        const int *sh = o->shape[s];
        if (ctx_make(&ctx, oned, sh[0], sh[1], sh[2]) != TSR_OK) {
            status = bench_fail("tp", "shape %d,%d,%d: %s", sh[0], sh[1], sh[2], tsr_last_error());
            break;
        }
        for (int op = oned ? OP_LINEAR_FWD : OP_SUMMA; op < OP_COUNT && !status; op++)
            status = measure(&ctx, (bench_op_t)op, o, r, c, oned, sh);
        ctx_free(&ctx);
    }
done:
    ctx_free(&ctx);
    tsr_tp_destroy(&ctx.tp);
    tsr_grid_destroy(&grid);
    return status;
}

int bench_tp(int argc, char **argv)
{
    opts_t o;
    int p = 0, status;
    if ((status = parse(argc, argv, &o)) != 0)
        return status < 0;
    MPI_Comm_size(MPI_COMM_WORLD, &p);
    int r = 1;
    for (int d = 1; d * d <= p; d++)
        if (p % d == 0)
            r = d;
    tsr_device_t dev = NULL;
    if (tsr_device_create(TSR_DEVICE_CPU, 0, &dev) != TSR_OK)
        return bench_fail("tp", "cpu device: %s", tsr_last_error());
    if (!o.json && bench_rank() == 0)
        printf("%-11s %-3s %9s %6s %6s %6s %10s %10s %14s %14s %s\n", "op", "alg", "grid", "m", "n", "k", "ms",
               "GFLOP/s/rk", "bytes/rank", "formula", "match");
    status = bench_grid(dev, &o, r, p / r, 0);
    if (!status)
        status = bench_grid(dev, &o, 1, p, 1);
    tsr_device_destroy(&dev);
    return status;
}
