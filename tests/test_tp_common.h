/*
 * test_tp_common.h: what the tp tests share: a fresh seed per run, grids of a given shape
 * over MPI_COMM_WORLD, random global matrices (identical on every rank), distributed
 * matrices scattered from them, and gathered results compared with double references.
 */
#ifndef TESSERA_TESTS_TP_COMMON_H
#define TESSERA_TESTS_TP_COMMON_H

#include <time.h>
#include <tessera.h>

#include "tap.h"

static uint64_t tp_seed;
static uint64_t tp_stream; /* the test's own counter of random streams */
static tsr_device_t tp_dev;

/* Pick the run's seed (TSR_TEST_SEED=N repeats one) on rank 0 and share it; open the CPU device. */
static TAP_UNUSED_ void tp_test_start(void)
{
    const char *env = getenv("TSR_TEST_SEED");
    unsigned long long s = env ? strtoull(env, NULL, 0) : (unsigned long long)time(NULL) * 2654435761ULL;
    MPI_Bcast(&s, 1, MPI_UNSIGNED_LONG_LONG, 0, MPI_COMM_WORLD);
    tp_seed = s;
    diag("seed %llu (TSR_TEST_SEED=%llu repeats this run)", s, s);
    if (tsr_device_create(TSR_DEVICE_CPU, 0, &tp_dev) != TSR_OK) {
        fprintf(stderr, "# cpu device: %s\n", tsr_last_error());
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
}

static TAP_UNUSED_ void tp_die(const char *what)
{
    fprintf(stderr, "# [rank %d] %s: %s\n", tap_rank(), what, tsr_last_error());
    MPI_Abort(MPI_COMM_WORLD, 2);
}

/* A grid dp=1, pp=1, tp=RxC over MPI_COMM_WORLD and its tp context. */
static TAP_UNUSED_ tsr_tp_t tp_open(int r, int c, tsr_grid_t *grid)
{
    tsr_layout_t layout = TSR_LAYOUT_INIT;
    tsr_tp_t tp = NULL;
    layout.tp_rows = r;
    layout.tp_cols = c;
    if (tsr_grid_create(MPI_COMM_WORLD, &layout, grid) != TSR_OK || tsr_tp_create(*grid, tp_dev, &tp) != TSR_OK)
        tp_die("grid");
    return tp;
}

static TAP_UNUSED_ void tp_close(tsr_tp_t *tp, tsr_grid_t *grid)
{
    tsr_tp_destroy(tp);
    tsr_grid_destroy(grid);
}

/* n values uniform in [lo, hi), the same on every rank, from a fresh stream. */
static TAP_UNUSED_ double *tp_random(size_t n, double lo, double hi)
{
    double *d = malloc((n ? n : 1) * sizeof *d);
    float *f = malloc((n ? n : 1) * sizeof *f);
    tsr_rng_fill_uniform(tp_seed, tp_stream++, 0, n, (float)lo, (float)hi, f);
    for (size_t i = 0; i < n; i++)
        d[i] = f[i];
    free(f);
    return d;
}

/* n token ids in [0, v), the same on every rank. */
static TAP_UNUSED_ int32_t *tp_tokens(size_t n, int v)
{
    int32_t *t = malloc((n ? n : 1) * sizeof *t);
    uint64_t stream = tp_stream++;
    for (size_t i = 0; i < n; i++)
        t[i] = (int32_t)(tsr_rng_u32(tp_seed, stream, i) % (uint32_t)v);
    return t;
}

/* A description of an m×n matrix with the given splits and units. */
static TAP_UNUSED_ tsr_dmat_desc_t tp_desc(int m, int n, tsr_split_t rs, tsr_split_t cs, int ru, int cu)
{
    tsr_dmat_desc_t d = TSR_DMAT_DESC_INIT;
    d.rows = m;
    d.cols = n;
    d.row_split = rs;
    d.col_split = cs;
    d.row_unit = ru;
    d.col_unit = cu;
    return d;
}

/* A distributed matrix scattered from the global double matrix g (NULL: zeros). */
static TAP_UNUSED_ tsr_dmat_t tp_dmat(tsr_tp_t tp, tsr_dmat_desc_t desc, const double *g)
{
    tsr_dmat_t d = NULL;
    size_t n = (size_t)desc.rows * (size_t)desc.cols;
    float *f = malloc((n ? n : 1) * sizeof *f);
    for (size_t i = 0; i < n; i++)
        f[i] = g ? (float)g[i] : 0.0f;
    if (tsr_dmat_create(tp, &desc, &d) != TSR_OK || tsr_dmat_scatter(d, 0, f) != TSR_OK)
        tp_die("dmat");
    free(f);
    return d;
}

/* The global matrix of d, as doubles, on every rank (gathered to rank 0 and broadcast). */
static TAP_UNUSED_ double *tp_global(tsr_dmat_t d)
{
    tsr_dmat_desc_t desc;
    tsr_dmat_desc(d, &desc);
    size_t n = (size_t)desc.rows * (size_t)desc.cols;
    float *f = malloc((n ? n : 1) * sizeof *f);
    double *g = malloc((n ? n : 1) * sizeof *g);
    if (tsr_dmat_gather(d, 0, f) != TSR_OK)
        tp_die("gather");
    MPI_Bcast(f, (int)n, MPI_FLOAT, 0, MPI_COMM_WORLD);
    for (size_t i = 0; i < n; i++)
        g[i] = f[i];
    free(f);
    return g;
}

/* max |a - b| / max |b|: the relative error of a whole array against its reference b. */
static TAP_UNUSED_ double tp_rel_err(const double *a, const double *b, size_t n)
{
    double norm = 0, diff = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs(a[i] - b[i]);
        if (d > diff || d != d)
            diff = d;
        if (fabs(b[i]) > norm)
            norm = fabs(b[i]);
    }
    return diff / (norm > 1e-30 ? norm : 1e-30);
}

/* Record that distributed d equals the reference ref within tol (relative); frees the gathered copy. */
static TAP_UNUSED_ void tp_check(tsr_dmat_t d, const double *ref, double tol, const char *what, int r, int c)
{
    tsr_dmat_desc_t desc;
    tsr_dmat_desc(d, &desc);
    double *g = tp_global(d);
    double err = tp_rel_err(g, ref, (size_t)desc.rows * (size_t)desc.cols);
    ok(err <= tol, "%dx%d %s (%dx%d): relative error %.2g <= %.0e", r, c, what, desc.rows, desc.cols, err, tol);
    free(g);
}

/* Block p of `parts` of an extent in units, as doc/tp.md defines it. */
static TAP_UNUSED_ int tp_block_len(int extent, int unit, int parts, int p)
{
    int units = extent / unit;
    return unit * (units / parts + (p < units % parts));
}

#endif /* TESSERA_TESTS_TP_COMMON_H */
