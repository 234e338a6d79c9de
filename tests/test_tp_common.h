/*
 * test_tp_common.h: what the tp tests share: a fresh seed per run, grids of a given shape
 * over MPI_COMM_WORLD, random global matrices (identical on every rank), distributed
 * matrices whose blocks each rank fills from them itself, blocks wrapped in memory the test
 * owns with rows wider than the block (ld > columns, the padding holding a sentinel), token
 * ids in device memory, and each rank's block compared with a double reference.
 *
 * Filling and checking blocks locally keeps communication out of the tests but for the
 * operations under test (collectives are slow with more ranks than cores), and checks every
 * replica of a replicated block, not only one. Scatter and gather have their own tests.
 */
#ifndef TESSERA_TESTS_TP_COMMON_H
#define TESSERA_TESTS_TP_COMMON_H

#include <time.h>
#include <tessera.h>

#include "tap.h"

static uint64_t tp_seed;
static uint64_t tp_stream; /* the test's own counter of random streams */
static tsr_device_t tp_dev;
static double tp_worst;       /* the largest relative error tp_check() saw on this rank */
static char tp_worst_what[96]; /* and what it was */

/* Pick the run's seed (TSR_TEST_SEED=N repeats one) on rank 0 and share it; open the CPU device. */
static TAP_UNUSED_ void tp_test_start(void)
{
    const char *env = getenv("TSR_TEST_SEED");
    unsigned long long s = env ? strtoull(env, NULL, 0) : (unsigned long long)time(NULL) * 2654435761ULL;
    MPI_Bcast(&s, 1, MPI_UNSIGNED_LONG_LONG, 0, MPI_COMM_WORLD);
    tp_seed = s;
    if (tap_rank() == 0)
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

/* Report the largest relative error of the run over all ranks (one collective) and close the device. */
static TAP_UNUSED_ void tp_test_end(void)
{
    struct {
        double err;
        int rank;
    } mine = {tp_worst, tap_rank()}, all;
    MPI_Allreduce(&mine, &all, 1, MPI_DOUBLE_INT, MPI_MAXLOC, MPI_COMM_WORLD);
    if (all.rank != 0 && tap_rank() == all.rank)
        MPI_Send(tp_worst_what, sizeof tp_worst_what, MPI_CHAR, 0, 1, MPI_COMM_WORLD);
    if (all.rank != 0 && tap_rank() == 0)
        MPI_Recv(tp_worst_what, sizeof tp_worst_what, MPI_CHAR, all.rank, 1, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
    if (tap_rank() == 0)
        diag("largest relative error against the double references: %.3g (%s)", all.err,
             tp_worst_what[0] ? tp_worst_what : "none");
    tsr_device_destroy(&tp_dev);
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

/* This rank's place in the tp grid. */
static TAP_UNUSED_ tsr_grid_coords_t tp_coords(tsr_tp_t tp)
{
    tsr_grid_coords_t co;
    tsr_grid_coords(tsr_tp_grid(tp), &co);
    return co;
}

/* Calls of one operation on the tp row, column and group communicators since the last reset. */
static TAP_UNUSED_ uint64_t tp_calls(tsr_tp_t tp, tsr_comm_op_t op)
{
    static const tsr_axis_t axes[] = {TSR_AXIS_TP_ROW, TSR_AXIS_TP_COL, TSR_AXIS_TP};
    uint64_t n = 0;
    for (size_t i = 0; i < sizeof axes / sizeof *axes; i++) {
        tsr_comm_counters_t cnt;
        tsr_comm_counters(tsr_grid_comm(tsr_tp_grid(tp), axes[i]), &cnt);
        n += cnt.calls[op];
    }
    return n;
}

/* Calls of every operation (all kinds) since the last reset. */
static TAP_UNUSED_ uint64_t tp_all_calls(tsr_tp_t tp)
{
    uint64_t n = 0;
    for (int op = 0; op < TSR_COMM_OP_COUNT; op++)
        n += tp_calls(tp, (tsr_comm_op_t)op);
    return n;
}

/* doc/tp.md: floor(2 (N-1) S / N), the bytes of an all-reduce of S bytes over N ranks. */
static TAP_UNUSED_ uint64_t tp_ar(int n, uint64_t s) { return n > 1 ? 2 * (uint64_t)(n - 1) * s / (uint64_t)n : 0; }

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

/* A copy of n doubles. */
static TAP_UNUSED_ double *tp_copy(const double *a, size_t n)
{
    double *c = malloc((n ? n : 1) * sizeof *c);
    memcpy(c, a, n * sizeof *c);
    return c;
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

/* A copy of n token ids in device memory (tsr_device_alloc; free with tsr_device_free). */
static TAP_UNUSED_ int32_t *tp_device_tokens(const int32_t *host, size_t n)
{
    void *d = NULL;
    if (tsr_device_alloc(tp_dev, TSR_MEM_WORKSPACE, (n ? n : 1) * sizeof(int32_t), &d) != TSR_OK ||
        tsr_device_copy(tp_dev, d, host, n * sizeof(int32_t), TSR_COPY_HOST_TO_DEVICE) != TSR_OK)
        tp_die("device tokens");
    return d;
}

/* An fp32 device array of n values (zeros), for statistics and losses. */
static TAP_UNUSED_ float *tp_device_floats(size_t n)
{
    void *d = NULL;
    if (tsr_device_alloc(tp_dev, TSR_MEM_ACTIVATIONS, (n ? n : 1) * sizeof(float), &d) != TSR_OK ||
        tsr_device_memset(tp_dev, d, 0, (n ? n : 1) * sizeof(float)) != TSR_OK)
        tp_die("device floats");
    return d;
}

static TAP_UNUSED_ void tp_device_free(void *p) { tsr_device_free(tp_dev, &p); }

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

/* Block p of `parts` of an extent in units, as doc/tp.md defines it: its length and first index. */
static TAP_UNUSED_ int tp_block_len(int extent, int unit, int parts, int p)
{
    int units = extent / unit;
    return unit * (units / parts + (p < units % parts));
}

static TAP_UNUSED_ int tp_block_start(int extent, int unit, int parts, int p)
{
    int units = extent / unit;
    return unit * (p * (units / parts) + (p < units % parts ? p : units % parts));
}

/* Fill d's block (any leading dimension) with its part of the global m×n double matrix g (NULL: zeros). */
static TAP_UNUSED_ void tp_fill(tsr_dmat_t d, const double *g)
{
    tsr_dmat_desc_t desc;
    tsr_dmat_view_t v;
    tsr_dmat_desc(d, &desc);
    tsr_dmat_local(d, &v);
    if (v.rows == 0 || v.cols == 0)
        return;
    float *f = malloc((size_t)v.rows * v.cols * sizeof *f);
    for (int i = 0; i < v.rows; i++)
        for (int j = 0; j < v.cols; j++)
            f[(size_t)i * v.cols + j] = g ? (float)g[(size_t)(v.row0 + i) * desc.cols + v.col0 + j] : 0.0f;
    if (tsr_device_copy_2d(tp_dev, v.data, (size_t)v.ld * sizeof(float), f, (size_t)v.cols * sizeof(float),
                           (size_t)v.cols * sizeof(float), (size_t)v.rows, TSR_COPY_HOST_TO_DEVICE) != TSR_OK)
        tp_die("fill");
    free(f);
}

/* A distributed matrix holding its blocks of the global double matrix g (NULL: zeros). */
static TAP_UNUSED_ tsr_dmat_t tp_dmat(tsr_tp_t tp, tsr_dmat_desc_t desc, const double *g)
{
    tsr_dmat_t d = NULL;
    if (tsr_dmat_create(tp, &desc, &d) != TSR_OK)
        tp_die("dmat");
    tp_fill(d, g);
    return d;
}

/* This rank's block of d, packed (rows × cols doubles). */
static TAP_UNUSED_ double *tp_local(tsr_dmat_t d)
{
    tsr_dmat_view_t v;
    tsr_dmat_local(d, &v);
    size_t n = (size_t)v.rows * v.cols;
    float *f = malloc((n ? n : 1) * sizeof *f);
    double *out = malloc((n ? n : 1) * sizeof *out);
    if (n && tsr_device_copy_2d(tp_dev, f, (size_t)v.cols * sizeof(float), v.data, (size_t)v.ld * sizeof(float),
                                (size_t)v.cols * sizeof(float), (size_t)v.rows, TSR_COPY_DEVICE_TO_HOST) != TSR_OK)
        tp_die("local copy");
    for (size_t i = 0; i < n; i++)
        out[i] = f[i];
    free(f);
    return out;
}

/* The padding of wrapped blocks: a quiet NaN with a payload, so a read of it poisons results. */
#define TP_SENTINEL 0x7fe5a5a5u

/* A block wrapped in memory of the test's own, rows `ld` elements apart (ld = columns + pad). */
typedef struct tp_wrapped {
    tsr_dmat_t d;
    float *buf;
    int rows, cols, ld;
} tp_wrapped_t;

/* A matrix over memory from tsr_device_alloc() with `pad` sentinel columns after each block row. */
static TAP_UNUSED_ tp_wrapped_t tp_wrap(tsr_tp_t tp, tsr_dmat_desc_t desc, const double *g, int pad)
{
    tp_wrapped_t w = {NULL, NULL, 0, 0, 0};
    tsr_dmat_view_t v;
    if (tsr_tp_block(tp, &desc, &v) != TSR_OK)
        tp_die("block");
    w.rows = v.rows, w.cols = v.cols, w.ld = v.cols + pad;
    size_t n = (size_t)w.rows * (size_t)w.ld;
    uint32_t *s = malloc((n ? n : 1) * sizeof *s);
    for (size_t i = 0; i < n; i++)
        s[i] = TP_SENTINEL;
    void *buf = NULL;
    if (tsr_device_alloc(tp_dev, TSR_MEM_ACTIVATIONS, (n ? n : 1) * sizeof(float), &buf) != TSR_OK ||
        tsr_device_copy(tp_dev, buf, s, n * sizeof(float), TSR_COPY_HOST_TO_DEVICE) != TSR_OK ||
        tsr_dmat_wrap(tp, &desc, buf, w.ld, &w.d) != TSR_OK)
        tp_die("wrap");
    w.buf = buf;
    free(s);
    tp_fill(w.d, g);
    return w;
}

/* Whether every padding element of this rank's wrapped block still holds the sentinel. */
static TAP_UNUSED_ int tp_pad_intact(const tp_wrapped_t *w)
{
    size_t n = (size_t)w->rows * (size_t)w->ld;
    uint32_t *s = malloc((n ? n : 1) * sizeof *s);
    int intact = 1;
    if (n && tsr_device_copy(tp_dev, s, w->buf, n * sizeof(float), TSR_COPY_DEVICE_TO_HOST) != TSR_OK)
        tp_die("padding copy");
    for (int i = 0; i < w->rows; i++)
        for (int j = w->cols; j < w->ld; j++)
            intact &= s[(size_t)i * w->ld + j] == TP_SENTINEL;
    free(s);
    return intact;
}

static TAP_UNUSED_ void tp_unwrap(tp_wrapped_t *w)
{
    void *buf = w->buf;
    tsr_dmat_destroy(&w->d);
    tsr_device_free(tp_dev, &buf);
    w->buf = NULL;
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

/* Note an error for the end-of-run report. */
static TAP_UNUSED_ void tp_note(double err, const char *what)
{
    if (err > tp_worst || err != err) {
        tp_worst = err;
        snprintf(tp_worst_what, sizeof tp_worst_what, "%s", what);
    }
}

/* This rank's block of d against its part of the global reference: max |error| / max |ref| (global). */
static TAP_UNUSED_ double tp_block_err(tsr_dmat_t d, const double *ref)
{
    tsr_dmat_desc_t desc;
    tsr_dmat_view_t v;
    tsr_dmat_desc(d, &desc);
    tsr_dmat_local(d, &v);
    double *got = tp_local(d), norm = 0, diff = 0;
    for (size_t i = 0; i < (size_t)desc.rows * desc.cols; i++)
        norm = fabs(ref[i]) > norm ? fabs(ref[i]) : norm;
    for (int i = 0; i < v.rows; i++)
        for (int j = 0; j < v.cols; j++) {
            double e = fabs(got[(size_t)i * v.cols + j] - ref[(size_t)(v.row0 + i) * desc.cols + v.col0 + j]);
            if (e > diff || e != e)
                diff = e;
        }
    free(got);
    return diff / (norm > 1e-30 ? norm : 1e-30);
}

/* Record that every rank's block of d equals its part of ref within tol (relative to max |ref|). */
static TAP_UNUSED_ void tp_check(tsr_dmat_t d, const double *ref, double tol, const char *what, int r, int c)
{
    tsr_dmat_desc_t desc;
    char name[96];
    tsr_dmat_desc(d, &desc);
    double err = tp_block_err(d, ref);
    snprintf(name, sizeof name, "%dx%d %s", r, c, what);
    tp_note(err, name);
    ok(err <= tol, "%s (%dx%d): relative error %.2g <= %.0e", name, desc.rows, desc.cols, err, tol);
}

/* Record that n fp32 device values equal ref[off, off + n) within tol, relative to the largest of
 * all `total` values of ref (a rank's part of an array of statistics, say of its rows). */
static TAP_UNUSED_ void tp_check_floats(const float *dev, const double *ref, size_t off, size_t n, size_t total,
                                        double tol, const char *what, int r, int c)
{
    float *f = malloc((n ? n : 1) * sizeof *f);
    double norm = 0, diff = 0;
    char name[96];
    if (n && tsr_device_copy(tp_dev, f, dev, n * sizeof(float), TSR_COPY_DEVICE_TO_HOST) != TSR_OK)
        tp_die("floats copy");
    for (size_t i = 0; i < total; i++)
        norm = fabs(ref[i]) > norm ? fabs(ref[i]) : norm;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)f[i] - ref[off + i]);
        if (e > diff || e != e)
            diff = e;
    }
    double err = diff / (norm > 1e-30 ? norm : 1e-30);
    snprintf(name, sizeof name, "%dx%d %s", r, c, what);
    tp_note(err, name);
    ok(err <= tol, "%s (%zu here): relative error %.2g <= %.0e", name, n, err, tol);
    free(f);
}

/* Destroy a list of matrices. */
static TAP_UNUSED_ void tp_destroy_all(tsr_dmat_t *m, size_t n)
{
    for (size_t i = 0; i < n; i++)
        tsr_dmat_destroy(&m[i]);
}
#define TP_DESTROY(...)                                                                             \
    do {                                                                                            \
        tsr_dmat_t list_[] = {__VA_ARGS__};                                                         \
        tp_destroy_all(list_, sizeof list_ / sizeof *list_);                                        \
    } while (0)

#endif /* TESSERA_TESTS_TP_COMMON_H */
