/*
 * test_kernels_layer: the layer operations of tessera/kernels.h (layernorm forward and
 * backward, GELU forward and backward, add, bias gradient, embedding forward and backward,
 * cross-entropy).
 *   - CPU, fp32: each kernel against a serial double-precision reference written here
 *     (1e-5 relative to the largest reference value), on shapes that are multiples of nothing
 *     (7 rows of 13, V = 37 with ld = 40), with accumulated outputs pre-filled to check "+=",
 *     padding columns checked untouched, and the references' derivatives checked by
 *     finite differences. Then the argument errors, and the kernels against the tp ops on
 *     one rank (lib/tp), which the GPT model uses today (1e-6).
 *   - CUDA, when a GPU is visible: each kernel in fp32 against the CPU kernel (1e-5) and in
 *     bf16 against the CPU kernel on the same bf16-rounded inputs (1e-2), on vectorized
 *     shapes, on shapes and offsets that force the scalar paths, and on GPT-2-sized rows;
 *     the embedding backward is deterministic. Without a GPU these points are skipped.
 * Inputs are drawn with a fresh seed each run (TSR_TEST_SEED=N repeats a run).
 */
#include <tessera.h>

#include "tap.h"

static tsr_device_t cpu, gpu;
static uint64_t seed, next_stream;

/* ---------------------------------------------------------------------------------------- */
/* Host data. */

static void *xmalloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "# out of host memory (%zu bytes)\n", bytes);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    return p;
}

/* n uniform values in [lo, hi) from a fresh stream. */
static float *rnd(size_t n, float lo, float hi)
{
    float *a = xmalloc(n * sizeof *a);
    tsr_rng_fill_uniform(seed, next_stream++, 0, n, lo, hi, a);
    return a;
}

static float *dup(const float *a, size_t n)
{
    float *b = xmalloc(n * sizeof *b);
    memcpy(b, a, n * sizeof *b);
    return b;
}

/* n token ids in [0, vocab) from a fresh stream. */
static int32_t *rnd_tokens(size_t n, int vocab)
{
    int32_t *t = xmalloc(n * sizeof *t);
    uint64_t stream = next_stream++;
    for (size_t i = 0; i < n; i++)
        t[i] = (int32_t)(tsr_rng_u32(seed, stream, i) % (uint32_t)vocab);
    return t;
}

/* bfloat16 by round-to-nearest-even, as the GPU rounds; NaN stays NaN. */
static uint16_t to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)(u >> 16 | 0x40);
    u += 0x7fffu + (u >> 16 & 1);
    return (uint16_t)(u >> 16);
}

static float from_bf16(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Round in place to what bf16 can hold (for the CPU's copy of a bf16 GPU run's inputs). */
static void round_bf16(float *a, size_t n)
{
    for (size_t i = 0; i < n; i++)
        a[i] = from_bf16(to_bf16(a[i]));
}

static double max_abs(const float *a, size_t n)
{
    double m = 0;
    for (size_t i = 0; i < n; i++)
        m = fabs((double)a[i]) > m ? fabs((double)a[i]) : m;
    return m;
}

/* max |got - want| / max(max |want|, floor): the relative error of a whole array (NaN fails).
 * floor keeps a few values that happen to lie near a zero of the function from turning
 * rounding into a large relative error. */
static double err_d_floor(const float *got, const double *want, size_t n, double floor)
{
    double diff = 0, norm = floor;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        if (d > diff || d != d)
            diff = d;
        norm = fabs(want[i]) > norm ? fabs(want[i]) : norm;
    }
    return diff / (norm > 1e-30 ? norm : 1e-30);
}

static double err_d(const float *got, const double *want, size_t n)
{
    return err_d_floor(got, want, n, 0);
}

static double err_f_floor(const float *got, const float *want, size_t n, double floor)
{
    double diff = 0, norm = floor;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - (double)want[i]);
        if (d > diff || d != d)
            diff = d;
        norm = fabs((double)want[i]) > norm ? fabs((double)want[i]) : norm;
    }
    return diff / (norm > 1e-30 ? norm : 1e-30);
}

static double err_f(const float *got, const float *want, size_t n)
{
    return err_f_floor(got, want, n, 0);
}

/* The first cols of each of rows rows of ld moved to the front (padding left out of errors). */
static void pack_rows_f(float *a, int rows, int cols, int ld)
{
    for (int r = 0; r < rows; r++)
        memmove(a + (size_t)r * cols, a + (size_t)r * ld, (size_t)cols * sizeof *a);
}

static void pack_rows_d(double *a, int rows, int cols, int ld)
{
    for (int r = 0; r < rows; r++)
        memmove(a + (size_t)r * cols, a + (size_t)r * ld, (size_t)cols * sizeof *a);
}

/* ---------------------------------------------------------------------------------------- */
/* Device buffers: every buffer of a run is freed together by release(). */

#define MAX_BUFS 32
static struct {
    tsr_device_t dev;
    void *ptr;
} bufs[MAX_BUFS];
static int nbufs;

static char *dalloc(tsr_device_t d, size_t bytes)
{
    void *p = NULL;
    if (nbufs == MAX_BUFS || tsr_device_alloc(d, TSR_MEM_WORKSPACE, bytes ? bytes : 1, &p) != TSR_OK || !p) {
        fprintf(stderr, "# device alloc of %zu bytes failed: %s\n", bytes, tsr_last_error());
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    bufs[nbufs].dev = d;
    bufs[nbufs++].ptr = p;
    return p;
}

static void release(void)
{
    while (nbufs > 0) {
        nbufs--;
        tsr_device_free(bufs[nbufs].dev, &bufs[nbufs].ptr);
    }
}

static void copy_or_die(tsr_device_t d, void *dst, const void *src, size_t bytes, tsr_copy_dir_t dir)
{
    if (bytes && tsr_device_copy(d, dst, src, bytes, dir) != TSR_OK) {
        fprintf(stderr, "# device copy failed: %s\n", tsr_last_error());
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
}

/* n values of h (NaN where h is NULL) on d as dt, `off` elements into a fresh buffer (an
 * odd off misaligns the pointer and so exercises the kernels' scalar paths). */
static void *up(tsr_device_t d, tsr_dtype_t dt, const float *h, size_t n, int off)
{
    size_t es = tsr_dtype_size(dt);
    char *p = dalloc(d, (n + (size_t)off) * es) + (size_t)off * es;
    if (dt == TSR_DTYPE_BF16) {
        uint16_t *t = xmalloc(n * sizeof *t);
        for (size_t i = 0; i < n; i++)
            t[i] = to_bf16(h ? h[i] : NAN);
        copy_or_die(d, p, t, n * sizeof *t, TSR_COPY_HOST_TO_DEVICE);
        free(t);
    } else {
        float *t = xmalloc(n * sizeof *t);
        for (size_t i = 0; i < n; i++)
            t[i] = h ? h[i] : NAN;
        copy_or_die(d, p, t, n * sizeof *t, TSR_COPY_HOST_TO_DEVICE);
        free(t);
    }
    return p;
}

static int32_t *up_tokens(tsr_device_t d, const int32_t *h, size_t n, int off)
{
    int32_t *p = (int32_t *)dalloc(d, (n + (size_t)off) * sizeof *p) + off;
    copy_or_die(d, p, h, n * sizeof *p, TSR_COPY_HOST_TO_DEVICE);
    return p;
}

/* n values of dt at p on d, as floats into h. */
static void down(tsr_device_t d, tsr_dtype_t dt, const void *p, float *h, size_t n)
{
    if (dt == TSR_DTYPE_BF16) {
        uint16_t *t = xmalloc(n * sizeof *t);
        copy_or_die(d, t, p, n * sizeof *t, TSR_COPY_DEVICE_TO_HOST);
        for (size_t i = 0; i < n; i++)
            h[i] = from_bf16(t[i]);
        free(t);
    } else {
        copy_or_die(d, h, p, n * sizeof(float), TSR_COPY_DEVICE_TO_HOST);
    }
}

/* The kernel's status, then the device's (queued work fails at the sync). */
static tsr_status_t finish(tsr_device_t d, tsr_status_t rc)
{
    return rc == TSR_OK ? tsr_device_sync(d) : rc;
}

/* ---------------------------------------------------------------------------------------- */
/* One call of each kernel on device d with element type dt: host inputs in, host outputs
 * out (accumulated outputs hold their initial values on entry), buffers freed after. */

static tsr_status_t run_ln_forward(tsr_device_t d, tsr_dtype_t dt, int off, int rows, int cols, const float *x,
                                   const float *g, const float *b, float eps, float *y, float *mean, float *rstd)
{
    size_t n = (size_t)rows * cols;
    void *dx = up(d, dt, x, n, off), *dg = up(d, dt, g, (size_t)cols, off), *db = up(d, dt, b, (size_t)cols, off);
    void *dy = up(d, dt, NULL, n, off);
    float *dm = up(d, TSR_DTYPE_F32, NULL, (size_t)rows, 0), *dr = up(d, TSR_DTYPE_F32, NULL, (size_t)rows, 0);
    tsr_status_t rc = finish(d, tsr_kernel_layernorm_forward(d, dt, rows, cols, dx, dg, db, eps, dy, dm, dr));
    down(d, dt, dy, y, n);
    down(d, TSR_DTYPE_F32, dm, mean, (size_t)rows);
    down(d, TSR_DTYPE_F32, dr, rstd, (size_t)rows);
    release();
    return rc;
}

static tsr_status_t run_ln_backward(tsr_device_t d, tsr_dtype_t dt, int off, int rows, int cols, const float *dy,
                                    const float *x, const float *g, const float *mean, const float *rstd, float *dx,
                                    float *dg, float *db)
{
    size_t n = (size_t)rows * cols;
    void *d_dy = up(d, dt, dy, n, off), *d_x = up(d, dt, x, n, off), *d_g = up(d, dt, g, (size_t)cols, off);
    float *d_m = up(d, TSR_DTYPE_F32, mean, (size_t)rows, 0), *d_r = up(d, TSR_DTYPE_F32, rstd, (size_t)rows, 0);
    void *d_dx = up(d, dt, dx, n, off);
    float *d_dg = up(d, TSR_DTYPE_F32, dg, (size_t)cols, 0), *d_db = up(d, TSR_DTYPE_F32, db, (size_t)cols, 0);
    tsr_status_t rc =
        finish(d, tsr_kernel_layernorm_backward(d, dt, rows, cols, d_dy, d_x, d_g, d_m, d_r, d_dx, d_dg, d_db));
    down(d, dt, d_dx, dx, n);
    down(d, TSR_DTYPE_F32, d_dg, dg, (size_t)cols);
    down(d, TSR_DTYPE_F32, d_db, db, (size_t)cols);
    release();
    return rc;
}

typedef enum { ELT_GELU, ELT_DGELU, ELT_ADD } elt_op_t;
static const char *elt_name[] = {"gelu forward", "gelu backward", "add"};

/* The scale an elementwise result is measured against where it is near zero: GELU(x) is
 * tiny for x below -4 (and found there by cancellation), GELU'(x) crosses zero near -0.75,
 * so a few values there would turn rounding into large relative errors. */
static double elt_floor(elt_op_t op, const float *x, const float *dy, size_t n)
{
    return op == ELT_GELU ? 0.1 * max_abs(x, n) : op == ELT_DGELU ? 0.1 * max_abs(dy, n) : 0;
}

/* y = op(a[, b]); in_place: y is written over a (gelu, add) or over b (gelu backward: dx over dy). */
static tsr_status_t run_elementwise(tsr_device_t d, tsr_dtype_t dt, int off, elt_op_t op, size_t n, const float *a,
                                    const float *b, int in_place, float *y)
{
    void *da = up(d, dt, a, n, off), *dbv = op == ELT_GELU ? NULL : up(d, dt, b, n, off);
    void *dy = in_place ? (op == ELT_DGELU ? dbv : da) : up(d, dt, NULL, n, off);
    tsr_status_t rc = op == ELT_GELU    ? tsr_kernel_gelu_forward(d, dt, n, da, dy)
                      : op == ELT_DGELU ? tsr_kernel_gelu_backward(d, dt, n, da, dbv, dy)
                                        : tsr_kernel_add(d, dt, n, da, dbv, dy);
    rc = finish(d, rc);
    down(d, dt, dy, y, n);
    release();
    return rc;
}

static tsr_status_t run_bias_grad(tsr_device_t d, tsr_dtype_t dt, int off, int rows, int cols, const float *dy,
                                  int ld, float *db)
{
    void *d_dy = up(d, dt, dy, (size_t)rows * ld, off);
    float *d_db = up(d, TSR_DTYPE_F32, db, (size_t)cols, 0);
    tsr_status_t rc = finish(d, tsr_kernel_bias_grad(d, dt, rows, cols, d_dy, ld, d_db));
    down(d, TSR_DTYPE_F32, d_db, db, (size_t)cols);
    release();
    return rc;
}

static tsr_status_t run_embed_forward(tsr_device_t d, tsr_dtype_t dt, int off, const int32_t *tok, int seqs, int T,
                                      int C, const float *wte, int vocab, const float *wpe, float *out)
{
    size_t n = (size_t)seqs * T * C;
    int32_t *d_tok = up_tokens(d, tok, (size_t)seqs * T, off);
    void *d_wte = up(d, dt, wte, (size_t)vocab * C, off), *d_wpe = up(d, dt, wpe, (size_t)T * C, off);
    void *d_out = up(d, dt, NULL, n, off);
    tsr_status_t rc = finish(d, tsr_kernel_embedding_forward(d, dt, d_tok, seqs, T, C, d_wte, d_wpe, d_out));
    down(d, dt, d_out, out, n);
    release();
    return rc;
}

static tsr_status_t run_embed_backward(tsr_device_t d, tsr_dtype_t dt, int off, const int32_t *tok, int seqs, int T,
                                       int C, const float *dout, int vocab, float *dwte, float *dwpe)
{
    int32_t *d_tok = up_tokens(d, tok, (size_t)seqs * T, off);
    void *d_dout = up(d, dt, dout, (size_t)seqs * T * C, off);
    float *d_wte = up(d, TSR_DTYPE_F32, dwte, (size_t)vocab * C, 0);
    float *d_wpe = up(d, TSR_DTYPE_F32, dwpe, (size_t)T * C, 0);
    tsr_status_t rc = finish(d, tsr_kernel_embedding_backward(d, dt, d_tok, seqs, T, C, d_dout, d_wte, d_wpe));
    down(d, TSR_DTYPE_F32, d_wte, dwte, (size_t)vocab * C);
    down(d, TSR_DTYPE_F32, d_wpe, dwpe, (size_t)T * C);
    release();
    return rc;
}

/* logits: rows × ld, overwritten by the gradient (padding columns included in the copy back). */
static tsr_status_t run_cross_entropy(tsr_device_t d, tsr_dtype_t dt, int off, int rows, int V, int ld,
                                      float *logits, const int32_t *targets, float *losses, float dscale)
{
    size_t n = (size_t)rows * ld;
    void *d_l = up(d, dt, logits, n, off);
    int32_t *d_t = up_tokens(d, targets, (size_t)rows, 0);
    float *d_loss = up(d, TSR_DTYPE_F32, NULL, (size_t)rows, 0);
    tsr_status_t rc = finish(d, tsr_kernel_cross_entropy(d, dt, rows, V, d_l, ld, d_t, d_loss, dscale));
    down(d, dt, d_l, logits, n);
    down(d, TSR_DTYPE_F32, d_loss, losses, (size_t)rows);
    release();
    return rc;
}

/* ---------------------------------------------------------------------------------------- */
/* Double-precision references. */

#define GELU_S 0.7978845608028654 /* sqrt(2/pi) */
#define GELU_C 0.044715

static double ref_gelu(double v)
{
    return 0.5 * v * (1.0 + tanh(GELU_S * (v + GELU_C * v * v * v)));
}

static double ref_dgelu(double v)
{
    double t = tanh(GELU_S * (v + GELU_C * v * v * v));
    return 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * GELU_S * (1.0 + 3.0 * GELU_C * v * v);
}

/* Two-pass mean and biased variance in double. */
static void ref_ln_forward(int rows, int cols, const float *x, const float *g, const float *b, double eps, double *y,
                           double *mean, double *rstd)
{
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * cols;
        double m = 0, var = 0;
        for (int c = 0; c < cols; c++)
            m += xr[c];
        m /= cols;
        for (int c = 0; c < cols; c++)
            var += (xr[c] - m) * (xr[c] - m);
        var /= cols;
        double rs = 1.0 / sqrt(var + eps);
        mean[r] = m;
        rstd[r] = rs;
        for (int c = 0; c < cols; c++)
            y[(size_t)r * cols + c] = (xr[c] - m) * rs * g[c] + b[c];
    }
}

/* dx = dx0 + rstd (g - mean(g) - xhat mean(g xhat)), g = dy gamma; dgamma, dbeta likewise +=. */
static void ref_ln_backward(int rows, int cols, const float *dy, const float *x, const float *g, const double *mean,
                            const double *rstd, const float *dx0, const float *dg0, const float *db0, double *dx,
                            double *dg, double *db)
{
    for (int c = 0; c < cols; c++) {
        dg[c] = dg0[c];
        db[c] = db0[c];
    }
    for (int r = 0; r < rows; r++) {
        double mg = 0, mgx = 0;
        for (int c = 0; c < cols; c++) {
            size_t e = (size_t)r * cols + c;
            double xhat = (x[e] - mean[r]) * rstd[r];
            mg += (double)dy[e] * g[c];
            mgx += (double)dy[e] * g[c] * xhat;
            dg[c] += dy[e] * xhat;
            db[c] += dy[e];
        }
        mg /= cols;
        mgx /= cols;
        for (int c = 0; c < cols; c++) {
            size_t e = (size_t)r * cols + c;
            double xhat = (x[e] - mean[r]) * rstd[r];
            dx[e] = dx0[e] + rstd[r] * ((double)dy[e] * g[c] - mg - xhat * mgx);
        }
    }
}

/* loss of one row, and (when grad is not NULL) dscale (softmax - onehot). */
static double ref_ce_row(int V, const float *row, int target, double dscale, double *grad)
{
    double mx = -INFINITY, sum = 0;
    for (int j = 0; j < V; j++)
        mx = row[j] > mx ? row[j] : mx;
    for (int j = 0; j < V; j++)
        sum += exp(row[j] - mx);
    if (grad)
        for (int j = 0; j < V; j++)
            grad[j] = dscale * (exp(row[j] - mx) / sum - (j == target));
    return mx + log(sum) - row[target];
}

/* ---------------------------------------------------------------------------------------- */
/* The references' derivatives against central differences of the references themselves,
 * perturbing in double so that the steps are exact. */

/* sum(w y) for the layernorm of rows of double x (two-pass statistics, as ref_ln_forward). */
static double ln_loss(int rows, int cols, const double *x, const float *g, const float *b, const float *w)
{
    double l = 0;
    for (int r = 0; r < rows; r++) {
        const double *xr = x + (size_t)r * cols;
        double m = 0, var = 0;
        for (int c = 0; c < cols; c++)
            m += xr[c];
        m /= cols;
        for (int c = 0; c < cols; c++)
            var += (xr[c] - m) * (xr[c] - m);
        double rs = 1.0 / sqrt(var / cols + 1e-5);
        for (int c = 0; c < cols; c++)
            l += w[(size_t)r * cols + c] * ((xr[c] - m) * rs * g[c] + b[c]);
    }
    return l;
}

static double ce_loss(int V, const double *row, int target)
{
    double mx = -INFINITY, sum = 0;
    for (int j = 0; j < V; j++)
        mx = row[j] > mx ? row[j] : mx;
    for (int j = 0; j < V; j++)
        sum += exp(row[j] - mx);
    return mx + log(sum) - row[target];
}

static void check_references(void)
{
    double worst = 0;
    for (int i = 0; i < 41; i++) {
        double v = -5.0 + 0.25 * i, h = 1e-5;
        double fd = (ref_gelu(v + h) - ref_gelu(v - h)) / (2 * h);
        double e = fabs(fd - ref_dgelu(v)) / (fabs(fd) > 1e-3 ? fabs(fd) : 1e-3);
        worst = e > worst ? e : worst;
    }
    ok(worst < 1e-7, "reference gelu' matches central differences of gelu (worst %.2g)", worst);

    /* Layernorm: d/dh sum(w y(x + h v)) at h = 0 is dx(dy = w) . v. */
    enum { ROWS = 3, COLS = 11, N = ROWS * COLS };
    float *x = rnd(N, -2, 2), *g = rnd(COLS, 0.5f, 1.5f), *b = rnd(COLS, -1, 1), *w = rnd(N, -1, 1);
    float *v = rnd(N, -1, 1), zero[N] = {0};
    double y[N], mean[ROWS], rstd[ROWS], dx[N], dg[COLS], db[COLS], xp[N], xm[N], h = 1e-4, dot = 0;
    for (int i = 0; i < N; i++) {
        xp[i] = x[i] + h * v[i];
        xm[i] = x[i] - h * v[i];
    }
    double fd = (ln_loss(ROWS, COLS, xp, g, b, w) - ln_loss(ROWS, COLS, xm, g, b, w)) / (2 * h);
    ref_ln_forward(ROWS, COLS, x, g, b, 1e-5, y, mean, rstd);
    ref_ln_backward(ROWS, COLS, w, x, g, mean, rstd, zero, zero, zero, dx, dg, db);
    for (int i = 0; i < N; i++)
        dot += dx[i] * v[i];
    ok(fabs(fd - dot) <= 1e-6 * (fabs(dot) + 1), "reference layernorm dx matches a central difference (%.10g vs %.10g)",
       fd, dot);

    /* Cross-entropy: the gradient of the loss along a direction. */
    enum { V = 9, TARGET = 4 };
    float *row = rnd(V, -3, 3), *dir = rnd(V, -1, 1);
    double grad[V], rp[V], rmi[V], dl = 0;
    ref_ce_row(V, row, TARGET, 1.0, grad);
    for (int j = 0; j < V; j++) {
        dl += grad[j] * dir[j];
        rp[j] = row[j] + h * dir[j];
        rmi[j] = row[j] - h * dir[j];
    }
    double fdce = (ce_loss(V, rp, TARGET) - ce_loss(V, rmi, TARGET)) / (2 * h);
    ok(fabs(fdce - dl) <= 1e-6 * (fabs(dl) + 1),
       "reference cross-entropy gradient matches a central difference (%.10g vs %.10g)", fdce, dl);
    free(x), free(g), free(b), free(w), free(v), free(row), free(dir);
}

/* ---------------------------------------------------------------------------------------- */
/* CPU kernels against the references. */

static void cpu_layernorm(int rows, int cols, float shift)
{
    size_t n = (size_t)rows * cols;
    float *x = rnd(n, shift - 1, shift + 1), *g = rnd((size_t)cols, 0.5f, 1.5f), *b = rnd((size_t)cols, -1, 1);
    float *y = xmalloc(n * sizeof *y), *mean = xmalloc(rows * sizeof *mean), *rstd = xmalloc(rows * sizeof *rstd);
    double *ry = xmalloc(n * sizeof *ry), *rm = xmalloc(rows * sizeof *rm), *rr = xmalloc(rows * sizeof *rr);
    tsr_status_t rc = run_ln_forward(cpu, TSR_DTYPE_F32, 0, rows, cols, x, g, b, 1e-5f, y, mean, rstd);
    ref_ln_forward(rows, cols, x, g, b, 1e-5f, ry, rm, rr);
    double ey = err_d(y, ry, n), em = err_d(mean, rm, (size_t)rows), er = err_d(rstd, rr, (size_t)rows);
    ok(rc == TSR_OK && ey <= 1e-5 && em <= 1e-5 && er <= 1e-5,
       "cpu layernorm forward %dx%d (x around %g): y, mean, rstd within 1e-5 (%.2g %.2g %.2g)", rows, cols,
       (double)shift, ey, em, er);

    /* Backward from the forward's saved statistics, into pre-filled dx, dgamma, dbeta. */
    float *dy = rnd(n, -1, 1), *dx0 = rnd(n, -1, 1), *dg0 = rnd((size_t)cols, -1, 1), *db0 = rnd((size_t)cols, -1, 1);
    float *dx = dup(dx0, n), *dg = dup(dg0, (size_t)cols), *db = dup(db0, (size_t)cols);
    double *rdx = xmalloc(n * sizeof *rdx), *rdg = xmalloc(cols * sizeof *rdg), *rdb = xmalloc(cols * sizeof *rdb);
    for (int r = 0; r < rows; r++) {
        rm[r] = mean[r];
        rr[r] = rstd[r];
    }
    rc = run_ln_backward(cpu, TSR_DTYPE_F32, 0, rows, cols, dy, x, g, mean, rstd, dx, dg, db);
    ref_ln_backward(rows, cols, dy, x, g, rm, rr, dx0, dg0, db0, rdx, rdg, rdb);
    double edx = err_d(dx, rdx, n), edg = err_d(dg, rdg, (size_t)cols), edb = err_d(db, rdb, (size_t)cols);
    ok(rc == TSR_OK && edx <= 1e-5 && edg <= 1e-5 && edb <= 1e-5,
       "cpu layernorm backward %dx%d: dx +=, dgamma +=, dbeta += within 1e-5 (%.2g %.2g %.2g)", rows, cols, edx, edg,
       edb);
    free(x), free(g), free(b), free(y), free(mean), free(rstd), free(ry), free(rm), free(rr), free(dy), free(dx0);
    free(dg0), free(db0), free(dx), free(dg), free(db), free(rdx), free(rdg), free(rdb);
}

static void cpu_elementwise(size_t n)
{
    float *a = rnd(n, -6, 6), *b = rnd(n, -2, 2), *y = xmalloc(n * sizeof *y);
    double *ref = xmalloc(n * sizeof *ref);
    for (int op = ELT_GELU; op <= ELT_ADD; op++)
        for (int in_place = 0; in_place <= 1; in_place++) {
            for (size_t i = 0; i < n; i++)
                ref[i] = op == ELT_GELU ? ref_gelu(a[i]) : op == ELT_DGELU ? b[i] * ref_dgelu(a[i]) : (double)a[i] + b[i];
            tsr_status_t rc = run_elementwise(cpu, TSR_DTYPE_F32, 0, (elt_op_t)op, n, a, b, in_place, y);
            double e = err_d_floor(y, ref, n, elt_floor((elt_op_t)op, a, b, n));
            ok(rc == TSR_OK && e <= 1e-5, "cpu %s, %zu values%s: within 1e-5 (%.2g)", elt_name[op], n,
               in_place ? ", output over the input" : "", e);
        }
    free(a), free(b), free(y), free(ref);
}

static void cpu_bias_grad(int rows, int cols, int ld)
{
    float *dy = rnd((size_t)rows * ld, -1, 1), *db0 = rnd((size_t)cols, -1, 1), *db = dup(db0, (size_t)cols);
    double *ref = xmalloc(cols * sizeof *ref);
    for (int r = 0; r < rows; r++)
        for (int c = cols; c < ld; c++)
            dy[(size_t)r * ld + c] = NAN; /* padding: must not be read */
    for (int c = 0; c < cols; c++) {
        ref[c] = db0[c];
        for (int r = 0; r < rows; r++)
            ref[c] += dy[(size_t)r * ld + c];
    }
    tsr_status_t rc = run_bias_grad(cpu, TSR_DTYPE_F32, 0, rows, cols, dy, ld, db);
    double e = err_d(db, ref, (size_t)cols);
    ok(rc == TSR_OK && e <= 1e-5, "cpu bias gradient %dx%d ld %d: db += column sums within 1e-5 (%.2g)", rows, cols,
       ld, e);
    free(dy), free(db0), free(db), free(ref);
}

static void cpu_embedding(int seqs, int T, int C, int vocab)
{
    size_t ntok = (size_t)seqs * T, n = ntok * C;
    int32_t *tok = rnd_tokens(ntok, vocab);
    float *wte = rnd((size_t)vocab * C, -1, 1), *wpe = rnd((size_t)T * C, -1, 1), *out = xmalloc(n * sizeof *out);
    double *ref = xmalloc(n * sizeof *ref);
    for (size_t i = 0; i < ntok; i++)
        for (int c = 0; c < C; c++)
            ref[i * C + c] = (double)wte[(size_t)tok[i] * C + c] + wpe[(i % T) * C + c];
    tsr_status_t rc = run_embed_forward(cpu, TSR_DTYPE_F32, 0, tok, seqs, T, C, wte, vocab, wpe, out);
    double e = err_d(out, ref, n);
    ok(rc == TSR_OK && e <= 1e-5, "cpu embedding forward %d x %d tokens, C %d, vocabulary %d: within 1e-5 (%.2g)",
       seqs, T, C, vocab, e);

    float *dout = rnd(n, -1, 1), *wte0 = rnd((size_t)vocab * C, -1, 1), *wpe0 = rnd((size_t)T * C, -1, 1);
    float *dwte = dup(wte0, (size_t)vocab * C), *dwpe = dup(wpe0, (size_t)T * C);
    double *rte = xmalloc((size_t)vocab * C * sizeof *rte), *rpe = xmalloc((size_t)T * C * sizeof *rpe);
    for (size_t i = 0; i < (size_t)vocab * C; i++)
        rte[i] = wte0[i];
    for (size_t i = 0; i < (size_t)T * C; i++)
        rpe[i] = wpe0[i];
    for (size_t i = 0; i < ntok; i++)
        for (int c = 0; c < C; c++) {
            rte[(size_t)tok[i] * C + c] += dout[i * C + c];
            rpe[(i % T) * C + c] += dout[i * C + c];
        }
    rc = run_embed_backward(cpu, TSR_DTYPE_F32, 0, tok, seqs, T, C, dout, vocab, dwte, dwpe);
    double et = err_d(dwte, rte, (size_t)vocab * C), ep = err_d(dwpe, rpe, (size_t)T * C);
    ok(rc == TSR_OK && et <= 1e-5 && ep <= 1e-5,
       "cpu embedding backward %d x %d tokens (repeated), C %d: dwte +=, dwpe += within 1e-5 (%.2g %.2g)", seqs, T, C,
       et, ep);
    free(tok), free(wte), free(wpe), free(out), free(ref), free(dout), free(wte0), free(wpe0), free(dwte);
    free(dwpe), free(rte), free(rpe);
}

#define PAD_VALUE 4096.0f /* what padding columns hold; a bf16 value, so any type keeps it */

static void cpu_cross_entropy(int rows, int V, int ld, float shift, float dscale)
{
    size_t n = (size_t)rows * ld;
    float *logits = rnd(n, shift - 4, shift + 4), *loss = xmalloc(rows * sizeof *loss);
    int32_t *tgt = rnd_tokens((size_t)rows, V);
    for (int r = 0; r < rows; r++)
        for (int c = V; c < ld; c++)
            logits[(size_t)r * ld + c] = PAD_VALUE;
    double *rl = xmalloc(rows * sizeof *rl), *rg = xmalloc(n * sizeof *rg);
    for (int r = 0; r < rows; r++) {
        rl[r] = ref_ce_row(V, logits + (size_t)r * ld, tgt[r], dscale, rg + (size_t)r * ld);
        for (int c = V; c < ld; c++)
            rg[(size_t)r * ld + c] = PAD_VALUE;
    }
    tsr_status_t rc = run_cross_entropy(cpu, TSR_DTYPE_F32, 0, rows, V, ld, logits, tgt, loss, dscale);
    int pad = 1;
    for (int r = 0; r < rows; r++)
        for (int c = V; c < ld; c++)
            pad &= logits[(size_t)r * ld + c] == PAD_VALUE;
    pack_rows_f(logits, rows, V, ld);
    pack_rows_d(rg, rows, V, ld);
    double el = err_d(loss, rl, (size_t)rows), eg = err_d(logits, rg, (size_t)rows * V);
    ok(rc == TSR_OK && el <= 1e-5 && eg <= 1e-5 && pad,
       "cpu cross-entropy %d rows, V %d, ld %d, logits around %g, dscale %g: losses and gradient within 1e-5 "
       "(%.2g %.2g), padding untouched",
       rows, V, ld, (double)shift, (double)dscale, el, eg);
    free(logits), free(loss), free(tgt), free(rl), free(rg);
}

/* Whether the last error names `what` (a one-line message saying which call failed). */
static int says(const char *what)
{
    return strstr(tsr_last_error(), what) != NULL;
}

static void cpu_errors(void)
{
    float buf[64] = {0}, stat[8] = {0};
    int32_t tok[8] = {0, 1, 2, 3, 0, 1, 2, 3};
    const tsr_dtype_t bf = TSR_DTYPE_BF16;
    tsr_status_t r[9];
    r[0] = tsr_kernel_layernorm_forward(cpu, bf, 2, 4, buf, buf, buf, 1e-5f, buf, stat, stat);
    r[1] = tsr_kernel_layernorm_backward(cpu, bf, 2, 4, buf, buf, buf, stat, stat, buf, stat, stat);
    r[2] = tsr_kernel_gelu_forward(cpu, bf, 8, buf, buf);
    r[3] = tsr_kernel_gelu_backward(cpu, bf, 8, buf, buf, buf);
    r[4] = tsr_kernel_add(cpu, bf, 8, buf, buf, buf);
    r[5] = tsr_kernel_bias_grad(cpu, bf, 2, 4, buf, 4, stat);
    r[6] = tsr_kernel_embedding_forward(cpu, bf, tok, 2, 4, 2, buf, buf, buf);
    r[7] = tsr_kernel_embedding_backward(cpu, bf, tok, 2, 4, 2, buf, buf, buf);
    r[8] = tsr_kernel_cross_entropy(cpu, bf, 2, 4, buf, 4, tok, stat, 1.0f);
    int all = 1;
    for (int i = 0; i < 9; i++)
        all &= r[i] == TSR_ERR_NOT_SUPPORTED;
    ok(all, "every layer kernel answers TSR_ERR_NOT_SUPPORTED for bf16 on the CPU");
    ok(says("cross-entropy") && says("bf16"), "the error names the kernel and the type (\"%s\")", tsr_last_error());

    is_int(tsr_kernel_layernorm_forward(cpu, TSR_DTYPE_I32, 2, 4, buf, buf, buf, 1e-5f, buf, stat, stat),
           TSR_ERR_INVALID_ARG, "layernorm forward: element type i32 is TSR_ERR_INVALID_ARG");
    ok(says("layernorm forward") && says("i32"), "the error names the call and the type (\"%s\")", tsr_last_error());
    is_int(tsr_kernel_add(cpu, TSR_DTYPE_F64, 8, buf, buf, buf), TSR_ERR_INVALID_ARG,
           "add: element type f64 is TSR_ERR_INVALID_ARG");
    is_int(tsr_kernel_add(NULL, TSR_DTYPE_F32, 8, buf, buf, buf), TSR_ERR_INVALID_ARG,
           "add: a NULL device is TSR_ERR_INVALID_ARG");
    is_int(tsr_kernel_layernorm_forward(cpu, TSR_DTYPE_F32, 0, 4, buf, buf, buf, 1e-5f, buf, stat, stat),
           TSR_ERR_INVALID_ARG, "layernorm forward: 0 rows is TSR_ERR_INVALID_ARG");
    is_int(tsr_kernel_layernorm_forward(cpu, TSR_DTYPE_F32, 2, 4, buf, buf, buf, -1.0f, buf, stat, stat),
           TSR_ERR_INVALID_ARG, "layernorm forward: a negative eps is TSR_ERR_INVALID_ARG");
    is_int(tsr_kernel_layernorm_backward(cpu, TSR_DTYPE_F32, 2, 4, buf, buf, buf, stat, stat, buf, NULL, stat),
           TSR_ERR_INVALID_ARG, "layernorm backward: a NULL dgamma is TSR_ERR_INVALID_ARG");
    is_int(tsr_kernel_gelu_forward(cpu, TSR_DTYPE_F32, 0, NULL, NULL), TSR_OK, "gelu forward of 0 values is a no-op");
    is_int(tsr_kernel_gelu_backward(cpu, TSR_DTYPE_F32, 8, buf, NULL, buf), TSR_ERR_INVALID_ARG,
           "gelu backward: a NULL dy is TSR_ERR_INVALID_ARG");
    is_int(tsr_kernel_bias_grad(cpu, TSR_DTYPE_F32, 2, 4, buf, 3, stat), TSR_ERR_INVALID_ARG,
           "bias gradient: ld 3 < 4 columns is TSR_ERR_INVALID_ARG");
    ok(says("leading dimension"), "the error names the leading dimension (\"%s\")", tsr_last_error());
    is_int(tsr_kernel_bias_grad(cpu, TSR_DTYPE_F32, 2, -1, buf, 4, stat), TSR_ERR_INVALID_ARG,
           "bias gradient: -1 columns is TSR_ERR_INVALID_ARG");
    is_int(tsr_kernel_embedding_forward(cpu, TSR_DTYPE_F32, tok, 2, 0, 2, buf, buf, buf), TSR_ERR_INVALID_ARG,
           "embedding forward: T = 0 is TSR_ERR_INVALID_ARG");
    is_int(tsr_kernel_embedding_backward(cpu, TSR_DTYPE_F32, NULL, 2, 4, 2, buf, buf, buf), TSR_ERR_INVALID_ARG,
           "embedding backward: NULL tokens is TSR_ERR_INVALID_ARG");
    int32_t neg[8] = {0, 1, -3, 3, 0, 1, 2, 3};
    is_int(tsr_kernel_embedding_forward(cpu, TSR_DTYPE_F32, neg, 2, 4, 2, buf, buf, buf), TSR_ERR_INVALID_ARG,
           "embedding forward: a negative token is TSR_ERR_INVALID_ARG on the CPU");
    is_int(tsr_kernel_cross_entropy(cpu, TSR_DTYPE_F32, 2, 5, buf, 4, tok, stat, 1.0f), TSR_ERR_INVALID_ARG,
           "cross-entropy: ld 4 < V 5 is TSR_ERR_INVALID_ARG");
    float logits[8] = {1, 2, 3, 4, 5, 6, 7, 8}, before[8];
    memcpy(before, logits, sizeof logits);
    int32_t bad[2] = {1, 4};
    is_int(tsr_kernel_cross_entropy(cpu, TSR_DTYPE_F32, 2, 4, logits, 4, bad, stat, 1.0f), TSR_ERR_INVALID_ARG,
           "cross-entropy: target 4 outside [0, 4) is TSR_ERR_INVALID_ARG on the CPU");
    ok(memcmp(logits, before, sizeof logits) == 0, "cross-entropy: a rejected call leaves the logits as they were");
    tsr_clear_error();
}

/* ---------------------------------------------------------------------------------------- */
/* The CPU kernels against the tp ops on one rank (lib/tp/norm.c, embed.c), which the GPT
 * model is built on today: a model moved onto the kernels must see the same numbers. */

/* A whole rows × cols matrix of the 1×1 tp grid holding data (zeros when NULL). */
static tsr_dmat_t tp_mat(tsr_tp_t tp, int rows, int cols, const float *data)
{
    tsr_dmat_desc_t d = TSR_DMAT_DESC_INIT;
    tsr_dmat_t m = NULL;
    tsr_dmat_view_t v;
    d.rows = rows;
    d.cols = cols;
    if (tsr_dmat_create(tp, &d, &m) != TSR_OK) {
        fprintf(stderr, "# tsr_dmat_create failed: %s\n", tsr_last_error());
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    tsr_dmat_local(m, &v);
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < cols; c++)
            v.data[(size_t)r * v.ld + c] = data ? data[(size_t)r * cols + c] : 0.0f;
    return m;
}

static float *tp_read(tsr_dmat_t m)
{
    tsr_dmat_view_t v;
    tsr_dmat_local(m, &v);
    float *out = xmalloc((size_t)v.rows * v.cols * sizeof *out);
    for (int r = 0; r < v.rows; r++)
        memcpy(out + (size_t)r * v.cols, v.data + (size_t)r * v.ld, (size_t)v.cols * sizeof *out);
    return out;
}

static void against_tp(void)
{
    enum { SEQS = 3, T = 4, ROWS = SEQS * T, COLS = 13, VOCAB = 37 };
    tsr_layout_t layout = TSR_LAYOUT_INIT;
    tsr_grid_t grid = NULL;
    tsr_tp_t tp = NULL;
    if (tsr_grid_create(MPI_COMM_WORLD, &layout, &grid) != TSR_OK || tsr_tp_create(grid, cpu, &tp) != TSR_OK) {
        ok(0, "a 1x1 tp group on the CPU: %s", tsr_last_error());
        tsr_grid_destroy(&grid);
        return;
    }
    const size_t n = (size_t)ROWS * COLS;
    tsr_tp_saved_t saved = NULL;
    float *x = rnd(n, -1, 3), *g = rnd(COLS, 0.5f, 1.5f), *b = rnd(COLS, -1, 1), *dy = rnd(n, -1, 1);
    float *dg0 = rnd(COLS, -1, 1), *db0 = rnd(COLS, -1, 1);

    /* Layernorm forward and backward (tp overwrites dx: the kernel adds onto zeros). */
    tsr_dmat_t X = tp_mat(tp, ROWS, COLS, x), G = tp_mat(tp, 1, COLS, g), Bt = tp_mat(tp, 1, COLS, b);
    tsr_dmat_t Y = tp_mat(tp, ROWS, COLS, NULL), DY = tp_mat(tp, ROWS, COLS, dy), DX = tp_mat(tp, ROWS, COLS, NULL);
    tsr_dmat_t DG = tp_mat(tp, 1, COLS, dg0), DB = tp_mat(tp, 1, COLS, db0);
    tsr_status_t rc = tsr_tp_layernorm_forward(tp, X, G, Bt, 1e-5f, Y, &saved);
    if (rc == TSR_OK)
        rc = tsr_tp_layernorm_backward(tp, X, G, saved, DY, DX, DG, DB);
    float *ty = tp_read(Y), *tdx = tp_read(DX), *tdg = tp_read(DG), *tdb = tp_read(DB);
    float *y = xmalloc(n * sizeof *y), *mean = xmalloc(ROWS * sizeof *mean), *rstd = xmalloc(ROWS * sizeof *rstd);
    float *dx = calloc(n, sizeof *dx), *dg = dup(dg0, COLS), *db = dup(db0, COLS);
    tsr_status_t rk = tsr_kernel_layernorm_forward(cpu, TSR_DTYPE_F32, ROWS, COLS, x, g, b, 1e-5f, y, mean, rstd);
    if (rk == TSR_OK)
        rk = tsr_kernel_layernorm_backward(cpu, TSR_DTYPE_F32, ROWS, COLS, dy, x, g, mean, rstd, dx, dg, db);
    double e1 = err_f(y, ty, n), e2 = err_f(dx, tdx, n), e3 = err_f(dg, tdg, COLS), e4 = err_f(db, tdb, COLS);
    ok(rc == TSR_OK && rk == TSR_OK && e1 <= 1e-6 && e2 <= 1e-6 && e3 <= 1e-6 && e4 <= 1e-6,
       "layernorm kernels as tsr_tp_layernorm_*: y, dx, dgamma, dbeta within 1e-6 (%.2g %.2g %.2g %.2g)", e1, e2,
       e3, e4);
    tsr_tp_saved_destroy(&saved);

    /* GELU. */
    rc = tsr_tp_gelu_forward(tp, X, Y);
    if (rc == TSR_OK)
        rc = tsr_tp_gelu_backward(tp, X, DY, DX);
    free(ty), free(tdx);
    ty = tp_read(Y);
    tdx = tp_read(DX);
    rk = tsr_kernel_gelu_forward(cpu, TSR_DTYPE_F32, n, x, y);
    if (rk == TSR_OK)
        rk = tsr_kernel_gelu_backward(cpu, TSR_DTYPE_F32, n, x, dy, dx);
    e1 = err_f(y, ty, n);
    e2 = err_f(dx, tdx, n);
    ok(rc == TSR_OK && rk == TSR_OK && e1 <= 1e-6 && e2 <= 1e-6,
       "gelu kernels as tsr_tp_gelu_*: within 1e-6 (%.2g %.2g)", e1, e2);

    /* Embedding forward and backward, tokens repeated, gradients onto random values. */
    int32_t *tok = rnd_tokens(ROWS, 5);
    float *wte = rnd((size_t)VOCAB * COLS, -1, 1), *wpe = rnd((size_t)T * COLS, -1, 1);
    float *gte0 = rnd((size_t)VOCAB * COLS, -1, 1), *gpe0 = rnd((size_t)T * COLS, -1, 1);
    tsr_dmat_t WTE = tp_mat(tp, VOCAB, COLS, wte), WPE = tp_mat(tp, T, COLS, wpe);
    tsr_dmat_t GTE = tp_mat(tp, VOCAB, COLS, gte0), GPE = tp_mat(tp, T, COLS, gpe0);
    rc = tsr_tp_embedding_forward(tp, tok, T, WTE, WPE, Y);
    if (rc == TSR_OK)
        rc = tsr_tp_embedding_backward(tp, tok, T, DY, GTE, GPE);
    free(ty);
    ty = tp_read(Y);
    float *tte = tp_read(GTE), *tpe = tp_read(GPE);
    float *gte = dup(gte0, (size_t)VOCAB * COLS), *gpe = dup(gpe0, (size_t)T * COLS);
    rk = tsr_kernel_embedding_forward(cpu, TSR_DTYPE_F32, tok, SEQS, T, COLS, wte, wpe, y);
    if (rk == TSR_OK)
        rk = tsr_kernel_embedding_backward(cpu, TSR_DTYPE_F32, tok, SEQS, T, COLS, dy, gte, gpe);
    e1 = err_f(y, ty, n);
    e2 = err_f(gte, tte, (size_t)VOCAB * COLS);
    e3 = err_f(gpe, tpe, (size_t)T * COLS);
    ok(rc == TSR_OK && rk == TSR_OK && e1 <= 1e-6 && e2 <= 1e-6 && e3 <= 1e-6,
       "embedding kernels as tsr_tp_embedding_*: out, dwte, dwpe within 1e-6 (%.2g %.2g %.2g)", e1, e2, e3);

    /* Cross-entropy: tp's mean loss and its gradient with dloss 1 = the kernel with dscale 1/rows. */
    size_t nl = (size_t)ROWS * VOCAB;
    float *logits = rnd(nl, -4, 4), tloss = NAN, *loss = xmalloc(ROWS * sizeof *loss);
    int32_t *tgt = rnd_tokens(ROWS, VOCAB);
    tsr_dmat_t L = tp_mat(tp, ROWS, VOCAB, logits), DL = tp_mat(tp, ROWS, VOCAB, NULL);
    rc = tsr_tp_cross_entropy_forward(tp, L, tgt, &tloss, &saved);
    if (rc == TSR_OK)
        rc = tsr_tp_cross_entropy_backward(tp, L, tgt, saved, 1.0f, DL);
    float *tdl = tp_read(DL);
    rk = tsr_kernel_cross_entropy(cpu, TSR_DTYPE_F32, ROWS, VOCAB, logits, VOCAB, tgt, loss, 1.0f / ROWS);
    double mean_loss = 0;
    for (int r = 0; r < ROWS; r++)
        mean_loss += loss[r] / (double)ROWS;
    e1 = fabs(mean_loss - tloss) / fabs((double)tloss);
    e2 = err_f(logits, tdl, nl);
    ok(rc == TSR_OK && rk == TSR_OK && e1 <= 1e-6 && e2 <= 1e-6,
       "cross-entropy kernel as tsr_tp_cross_entropy_*: mean loss (%.7g vs %.7g) and gradient within 1e-6 (%.2g %.2g)",
       mean_loss, (double)tloss, e1, e2);
    tsr_tp_saved_destroy(&saved);

    tsr_dmat_t all[] = {X, G, Bt, Y, DY, DX, DG, DB, WTE, WPE, GTE, GPE, L, DL};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        tsr_dmat_destroy(&all[i]);
    free(x), free(g), free(b), free(dy), free(dg0), free(db0), free(ty), free(tdx), free(tdg), free(tdb), free(y);
    free(mean), free(rstd), free(dx), free(dg), free(db), free(tok), free(wte), free(wpe), free(gte0), free(gpe0);
    free(tte), free(tpe), free(gte), free(gpe), free(logits), free(loss), free(tgt), free(tdl);
    tsr_tp_destroy(&tp);
    tsr_grid_destroy(&grid);
}

/* ---------------------------------------------------------------------------------------- */
/* CUDA against the CPU. Each case runs in fp32 (1e-5) and in bf16 (1e-2, the CPU on the
 * same rounded inputs); `off` elements of offset into every activation buffer. */

static const tsr_dtype_t gpu_types[2] = {TSR_DTYPE_F32, TSR_DTYPE_BF16};

static double tol_of(tsr_dtype_t dt)
{
    return dt == TSR_DTYPE_BF16 ? 1e-2 : 1e-5;
}

/* The inputs of a GPU run of type dt: bf16 rounds them (the CPU sees the rounded copy). */
static float *input(const float *a, size_t n, tsr_dtype_t dt)
{
    float *b = dup(a, n);
    if (dt == TSR_DTYPE_BF16)
        round_bf16(b, n);
    return b;
}

static void gpu_layernorm(int rows, int cols, int off)
{
    size_t n = (size_t)rows * cols;
    float *x0 = rnd(n, 1, 3), *g0 = rnd((size_t)cols, 0.5f, 1.5f), *b0 = rnd((size_t)cols, -1, 1);
    float *dy0 = rnd(n, -1, 1), *dx00 = rnd(n, -1, 1), *dg0 = rnd((size_t)cols, -1, 1), *db0 = rnd((size_t)cols, -1, 1);
    for (int t = 0; t < 2; t++) {
        tsr_dtype_t dt = gpu_types[t];
        const char *tn = tsr_dtype_name(dt);
        float *x = input(x0, n, dt), *g = input(g0, (size_t)cols, dt), *b = input(b0, (size_t)cols, dt);
        float *y[2], *m[2], *rs[2];
        tsr_status_t rc[2];
        for (int k = 0; k < 2; k++) {
            y[k] = xmalloc(n * sizeof(float));
            m[k] = xmalloc(rows * sizeof(float));
            rs[k] = xmalloc(rows * sizeof(float));
            rc[k] = run_ln_forward(k ? gpu : cpu, k ? dt : TSR_DTYPE_F32, k ? off : 0, rows, cols, x, g, b, 1e-5f, y[k],
                                   m[k], rs[k]);
        }
        double ey = err_f(y[1], y[0], n), em = err_f(m[1], m[0], (size_t)rows), er = err_f(rs[1], rs[0], (size_t)rows);
        ok(rc[0] == TSR_OK && rc[1] == TSR_OK && ey <= tol_of(dt) && em <= tol_of(dt) && er <= tol_of(dt),
           "cuda %s layernorm forward %dx%d offset %d: y, mean, rstd as the CPU (%.2g %.2g %.2g <= %g)", tn, rows, cols,
           off, ey, em, er, tol_of(dt));

        /* Backward from the CPU's statistics, accumulating into the same pre-filled outputs. */
        float *dy = input(dy0, n, dt), *dx0 = input(dx00, n, dt);
        float *dx[2], *dg[2], *db[2];
        for (int k = 0; k < 2; k++) {
            dx[k] = dup(dx0, n);
            dg[k] = dup(dg0, (size_t)cols);
            db[k] = dup(db0, (size_t)cols);
            rc[k] = run_ln_backward(k ? gpu : cpu, k ? dt : TSR_DTYPE_F32, k ? off : 0, rows, cols, dy, x, g, m[0],
                                    rs[0], dx[k], dg[k], db[k]);
        }
        double edx = err_f(dx[1], dx[0], n), edg = err_f(dg[1], dg[0], (size_t)cols),
               edb = err_f(db[1], db[0], (size_t)cols);
        ok(rc[0] == TSR_OK && rc[1] == TSR_OK && edx <= tol_of(dt) && edg <= tol_of(dt) && edb <= tol_of(dt),
           "cuda %s layernorm backward %dx%d offset %d: dx, dgamma, dbeta as the CPU (%.2g %.2g %.2g <= %g)", tn, rows,
           cols, off, edx, edg, edb, tol_of(dt));
        for (int k = 0; k < 2; k++)
            free(y[k]), free(m[k]), free(rs[k]), free(dx[k]), free(dg[k]), free(db[k]);
        free(x), free(g), free(b), free(dy), free(dx0);
    }
    free(x0), free(g0), free(b0), free(dy0), free(dx00), free(dg0), free(db0);
}

static void gpu_elementwise(size_t n, int off)
{
    float *a0 = rnd(n, -6, 6), *b0 = rnd(n, -2, 2);
    float *y[2] = {xmalloc(n * sizeof(float)), xmalloc(n * sizeof(float))};
    for (int t = 0; t < 2; t++) {
        tsr_dtype_t dt = gpu_types[t];
        float *a = input(a0, n, dt), *b = input(b0, n, dt);
        for (int op = ELT_GELU; op <= ELT_ADD; op++)
            for (int in_place = 0; in_place <= 1; in_place++) {
                tsr_status_t rc0 = run_elementwise(cpu, TSR_DTYPE_F32, 0, (elt_op_t)op, n, a, b, in_place, y[0]);
                tsr_status_t rc1 = run_elementwise(gpu, dt, off, (elt_op_t)op, n, a, b, in_place, y[1]);
                double e = err_f_floor(y[1], y[0], n, elt_floor((elt_op_t)op, a, b, n));
                ok(rc0 == TSR_OK && rc1 == TSR_OK && e <= tol_of(dt),
                   "cuda %s %s, %zu values, offset %d%s: as the CPU (%.2g <= %g)", tsr_dtype_name(dt), elt_name[op], n,
                   off, in_place ? ", in place" : "", e, tol_of(dt));
            }
        free(a), free(b);
    }
    free(a0), free(b0), free(y[0]), free(y[1]);
}

static void gpu_bias_grad(int rows, int cols, int ld, int off)
{
    float *dy0 = rnd((size_t)rows * ld, -1, 1), *db0 = rnd((size_t)cols, -1, 1);
    for (int r = 0; r < rows; r++)
        for (int c = cols; c < ld; c++)
            dy0[(size_t)r * ld + c] = NAN;
    for (int t = 0; t < 2; t++) {
        tsr_dtype_t dt = gpu_types[t];
        float *dy = input(dy0, (size_t)rows * ld, dt), *db[2] = {dup(db0, (size_t)cols), dup(db0, (size_t)cols)};
        tsr_status_t rc0 = run_bias_grad(cpu, TSR_DTYPE_F32, 0, rows, cols, dy, ld, db[0]);
        tsr_status_t rc1 = run_bias_grad(gpu, dt, off, rows, cols, dy, ld, db[1]);
        double e = err_f(db[1], db[0], (size_t)cols);
        ok(rc0 == TSR_OK && rc1 == TSR_OK && e <= tol_of(dt),
           "cuda %s bias gradient %dx%d ld %d offset %d: db += as the CPU (%.2g <= %g)", tsr_dtype_name(dt), rows, cols,
           ld, off, e, tol_of(dt));
        free(dy), free(db[0]), free(db[1]);
    }
    free(dy0), free(db0);
}

static void gpu_embedding(int seqs, int T, int C, int vocab, int off)
{
    size_t ntok = (size_t)seqs * T, n = ntok * C, nte = (size_t)vocab * C, npe = (size_t)T * C;
    int32_t *tok = rnd_tokens(ntok, vocab);
    float *wte0 = rnd(nte, -1, 1), *wpe0 = rnd(npe, -1, 1), *dout0 = rnd(n, -1, 1);
    float *gte0 = rnd(nte, -1, 1), *gpe0 = rnd(npe, -1, 1);
    for (int t = 0; t < 2; t++) {
        tsr_dtype_t dt = gpu_types[t];
        const char *tn = tsr_dtype_name(dt);
        float *wte = input(wte0, nte, dt), *wpe = input(wpe0, npe, dt), *dout = input(dout0, n, dt);
        float *out[2] = {xmalloc(n * sizeof(float)), xmalloc(n * sizeof(float))};
        tsr_status_t rc0 = run_embed_forward(cpu, TSR_DTYPE_F32, 0, tok, seqs, T, C, wte, vocab, wpe, out[0]);
        tsr_status_t rc1 = run_embed_forward(gpu, dt, off, tok, seqs, T, C, wte, vocab, wpe, out[1]);
        double e = err_f(out[1], out[0], n);
        ok(rc0 == TSR_OK && rc1 == TSR_OK && e <= tol_of(dt),
           "cuda %s embedding forward %d x %d tokens, C %d, offset %d: as the CPU (%.2g <= %g)", tn, seqs, T, C, off, e,
           tol_of(dt));

        /* Backward: the CPU, the GPU, and the GPU again (it must give the same bits). */
        float *gte[3], *gpe[3];
        tsr_status_t rc[3];
        for (int k = 0; k < 3; k++) {
            gte[k] = dup(gte0, nte);
            gpe[k] = dup(gpe0, npe);
            rc[k] = run_embed_backward(k ? gpu : cpu, k ? dt : TSR_DTYPE_F32, k ? off : 0, tok, seqs, T, C, dout, vocab,
                                       gte[k], gpe[k]);
        }
        double et = err_f(gte[1], gte[0], nte), ep = err_f(gpe[1], gpe[0], npe);
        ok(rc[0] == TSR_OK && rc[1] == TSR_OK && et <= tol_of(dt) && ep <= tol_of(dt),
           "cuda %s embedding backward %d x %d tokens (vocabulary %d), C %d, offset %d: dwte, dwpe += as the CPU "
           "(%.2g %.2g <= %g)",
           tn, seqs, T, vocab, C, off, et, ep, tol_of(dt));
        ok(rc[2] == TSR_OK && memcmp(gte[1], gte[2], nte * sizeof(float)) == 0 &&
               memcmp(gpe[1], gpe[2], npe * sizeof(float)) == 0,
           "cuda %s embedding backward is deterministic: a second run gives the same bits", tn);
        if (dt == TSR_DTYPE_F32)
            ok(memcmp(gte[1], gte[0], nte * sizeof(float)) == 0 && memcmp(gpe[1], gpe[0], npe * sizeof(float)) == 0,
               "cuda f32 embedding backward sums in the CPU's order: the same bits as the CPU");
        for (int k = 0; k < 3; k++)
            free(gte[k]), free(gpe[k]);
        free(wte), free(wpe), free(dout), free(out[0]), free(out[1]);
    }
    free(tok), free(wte0), free(wpe0), free(dout0), free(gte0), free(gpe0);
}

static void gpu_cross_entropy(int rows, int V, int ld, int off, float shift)
{
    size_t n = (size_t)rows * ld;
    float *l0 = rnd(n, shift - 4, shift + 4);
    int32_t *tgt = rnd_tokens((size_t)rows, V);
    tgt[rows - 1] = V - 1; /* the last column, where a scalar tail lives */
    for (int r = 0; r < rows; r++)
        for (int c = V; c < ld; c++)
            l0[(size_t)r * ld + c] = PAD_VALUE;
    float dscale = 1.0f / rows;
    for (int t = 0; t < 2; t++) {
        tsr_dtype_t dt = gpu_types[t];
        float *l[2] = {input(l0, n, dt), input(l0, n, dt)};
        float *loss[2] = {xmalloc(rows * sizeof(float)), xmalloc(rows * sizeof(float))};
        tsr_status_t rc0 = run_cross_entropy(cpu, TSR_DTYPE_F32, 0, rows, V, ld, l[0], tgt, loss[0], dscale);
        tsr_status_t rc1 = run_cross_entropy(gpu, dt, off, rows, V, ld, l[1], tgt, loss[1], dscale);
        int pad = 1;
        for (int r = 0; r < rows; r++)
            for (int c = V; c < ld; c++)
                pad &= l[1][(size_t)r * ld + c] == PAD_VALUE;
        pack_rows_f(l[0], rows, V, ld);
        pack_rows_f(l[1], rows, V, ld);
        double el = err_f(loss[1], loss[0], (size_t)rows), eg = err_f(l[1], l[0], (size_t)rows * V);
        ok(rc0 == TSR_OK && rc1 == TSR_OK && el <= tol_of(dt) && eg <= tol_of(dt) && pad,
           "cuda %s cross-entropy %d rows, V %d, ld %d, offset %d: losses and gradient as the CPU (%.2g %.2g <= %g), "
           "padding untouched",
           tsr_dtype_name(dt), rows, V, ld, off, el, eg, tol_of(dt));
        free(l[0]), free(l[1]), free(loss[0]), free(loss[1]);
    }
    free(l0), free(tgt);
}

static void with_gpu(void)
{
    if (tsr_device_create(TSR_DEVICE_CUDA, 0, &gpu) != TSR_OK) {
        ok(0, "open CUDA device 0: %s", tsr_last_error());
        return;
    }
    /* Vectorized shapes, scalar shapes, odd offsets; rows past the grid caps. */
    gpu_layernorm(7, 13, 0);
    gpu_layernorm(33, 64, 0);
    gpu_layernorm(33, 64, 1);
    gpu_layernorm(4500, 64, 0);
    gpu_layernorm(64, 768, 0);
    gpu_layernorm(4, 20000, 0); /* too wide for the backward's shared-memory sums */
    gpu_elementwise(13, 0);
    gpu_elementwise(100003, 0);
    gpu_elementwise(100003, 1);
    gpu_bias_grad(7, 13, 13, 0);
    gpu_bias_grad(1000, 768, 776, 0);
    gpu_bias_grad(1000, 96, 100, 0);
    gpu_bias_grad(100, 64, 64, 1);
    gpu_embedding(3, 5, 13, 4, 0);
    gpu_embedding(4, 64, 768, 50, 0);
    gpu_embedding(3, 31, 64, 20, 1);
    gpu_embedding(2, 300, 40, 3000, 0);
    gpu_cross_entropy(7, 37, 40, 0, 0.0f);
    gpu_cross_entropy(5, 64, 64, 0, 30.0f);
    gpu_cross_entropy(3, 37, 40, 1, 0.0f);
    gpu_cross_entropy(4, 50257, 50304, 0, 0.0f);
    tsr_device_destroy(&gpu);
}

int main(int argc, char **argv)
{
    tap_init(&argc, &argv, "1");
    seed = tap_seed();
    if (tsr_device_create(TSR_DEVICE_CPU, 0, &cpu) != TSR_OK) {
        ok(0, "open the CPU device: %s", tsr_last_error());
        return tap_done();
    }
    check_references();
    cpu_layernorm(7, 13, 0.0f);
    cpu_layernorm(64, 96, 5.0f);
    cpu_layernorm(1, 300, -2.0f);
    cpu_elementwise(1);
    cpu_elementwise(1000);
    cpu_bias_grad(7, 13, 13);
    cpu_bias_grad(7, 13, 16);
    cpu_bias_grad(64, 300, 301);
    cpu_embedding(1, 7, 13, 3);
    cpu_embedding(4, 16, 64, 37);
    cpu_cross_entropy(7, 37, 40, 0.0f, 1.0f);
    cpu_cross_entropy(5, 256, 256, 40.0f, 0.2f);
    cpu_cross_entropy(1, 1, 3, 0.0f, 1.0f);
    cpu_errors();
    against_tp();

    if (tsr_device_count(TSR_DEVICE_CUDA) > 0)
        with_gpu();
    else
        skip(9, "no CUDA device: the CUDA layer kernels are not checked");
    tsr_device_destroy(&cpu);
    return tap_done();
}
