/*
 * test_kernels_layer: the layer operations of tessera/kernels.h (layernorm forward and
 * backward, whole or split into column blocks, GELU forward and backward, add, strided
 * axpby, bias gradient, embedding forward and backward of a vocabulary block, cross-entropy
 * stats and finish over vocabulary blocks).
 *   - CPU, fp32: each kernel against a serial double-precision reference written here
 *     (1e-5 relative to the largest reference value), on shapes that are multiples of nothing
 *     (7 rows of 13, V = 37 with ld = 40), with accumulated outputs pre-filled to check "+=",
 *     padding columns checked untouched, optional outputs left out, and the references'
 *     derivatives checked by finite differences. The split kernels run on 1, 2 and 3 blocks
 *     as ranks would, their statistics summed (layernorm) or gathered (cross-entropy) here,
 *     against the reference of the whole row. Then the argument errors.
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

/* As up(), but a NULL h gives a NULL pointer: an optional argument left out. */
static void *up_opt(tsr_device_t d, tsr_dtype_t dt, const float *h, size_t n, int off)
{
    return h ? up(d, dt, h, n, off) : NULL;
}

/* The first error of a sequence of calls. */
static void keep(tsr_status_t *rc, tsr_status_t r)
{
    if (*rc == TSR_OK)
        *rc = r;
}

/* Columns [c0, c0 + w) of rows × width a, as a fresh rows × w array, and back. */
static float *col_block(const float *a, int rows, int width, int c0, int w)
{
    float *b = xmalloc((size_t)rows * w * sizeof *b);
    for (int r = 0; r < rows; r++)
        memcpy(b + (size_t)r * w, a + (size_t)r * width + c0, (size_t)w * sizeof *b);
    return b;
}

static void put_col_block(float *a, int rows, int width, int c0, int w, const float *b)
{
    for (int r = 0; r < rows; r++)
        memcpy(a + (size_t)r * width + c0, b + (size_t)r * w, (size_t)w * sizeof *b);
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

/* dx, or dg and db, may be NULL: the kernel gets NULL for them. */
static tsr_status_t run_ln_backward(tsr_device_t d, tsr_dtype_t dt, int off, int rows, int cols, const float *dy,
                                    const float *x, const float *g, const float *mean, const float *rstd, float *dx,
                                    float *dg, float *db)
{
    size_t n = (size_t)rows * cols;
    void *d_dy = up(d, dt, dy, n, off), *d_x = up(d, dt, x, n, off), *d_g = up(d, dt, g, (size_t)cols, off);
    float *d_m = up(d, TSR_DTYPE_F32, mean, (size_t)rows, 0), *d_r = up(d, TSR_DTYPE_F32, rstd, (size_t)rows, 0);
    void *d_dx = up_opt(d, dt, dx, n, off);
    float *d_dg = up_opt(d, TSR_DTYPE_F32, dg, (size_t)cols, 0), *d_db = up_opt(d, TSR_DTYPE_F32, db, (size_t)cols, 0);
    tsr_status_t rc =
        finish(d, tsr_kernel_layernorm_backward(d, dt, rows, cols, d_dy, d_x, d_g, d_m, d_r, d_dx, d_dg, d_db));
    if (dx)
        down(d, dt, d_dx, dx, n);
    if (dg)
        down(d, TSR_DTYPE_F32, d_dg, dg, (size_t)cols);
    if (db)
        down(d, TSR_DTYPE_F32, d_db, db, (size_t)cols);
    release();
    return rc;
}

/* The layernorm of rows of `width` values split into nb column blocks of widths[k], run on d
 * as nb ranks would run it, one block at a time: the forward stats of every block summed on
 * the host in fp32 in block order (the all-reduce), then apply on every block; the backward
 * from this run's mean and rstd likewise (backward stats, summed, backward apply), and each
 * block's dgamma and dbeta from the one-kernel backward with dx NULL. x, g, b, dy, y, dx
 * (+=), dg (+=), db (+=) are whole rows; mean and rstd are block 0's, and *same says
 * whether every block wrote the same bits of them. */
static tsr_status_t run_ln_split(tsr_device_t d, tsr_dtype_t dt, int off, int rows, int width, int nb,
                                 const int *widths, const float *x, const float *g, const float *b, float eps,
                                 const float *dy, float *y, float *mean, float *rstd, int *same, float *dx, float *dg,
                                 float *db)
{
    tsr_status_t rc = TSR_OK;
    size_t r3 = 3 * (size_t)rows, r2 = 2 * (size_t)rows;
    float *stats = calloc(r3, sizeof *stats), *bstats = calloc(r2, sizeof *bstats), *part = xmalloc(r3 * sizeof *part);
    float *m = xmalloc(rows * sizeof *m), *rs = xmalloc(rows * sizeof *rs);
    *same = 1;
    for (int k = 0, c0 = 0; k < nb; c0 += widths[k++]) {
        size_t nk = (size_t)rows * widths[k];
        float *xb = col_block(x, rows, width, c0, widths[k]);
        void *d_x = up(d, dt, xb, nk, off);
        float *d_s = up(d, TSR_DTYPE_F32, NULL, r3, 0);
        keep(&rc, finish(d, tsr_kernel_layernorm_stats(d, dt, rows, widths[k], d_x, d_s)));
        down(d, TSR_DTYPE_F32, d_s, part, r3);
        for (size_t i = 0; i < r3; i++)
            stats[i] += part[i];
        release();
        free(xb);
    }
    for (int k = 0, c0 = 0; k < nb; c0 += widths[k++]) {
        size_t nk = (size_t)rows * widths[k];
        float *xb = col_block(x, rows, width, c0, widths[k]), *yb = xmalloc(nk * sizeof *yb);
        void *d_x = up(d, dt, xb, nk, off), *d_g = up(d, dt, g + c0, (size_t)widths[k], off);
        void *d_b = up(d, dt, b + c0, (size_t)widths[k], off), *d_y = up(d, dt, NULL, nk, off);
        float *d_s = up(d, TSR_DTYPE_F32, stats, r3, 0), *d_m = up(d, TSR_DTYPE_F32, NULL, (size_t)rows, 0);
        float *d_r = up(d, TSR_DTYPE_F32, NULL, (size_t)rows, 0);
        keep(&rc, finish(d, tsr_kernel_layernorm_apply(d, dt, rows, widths[k], width, d_x, d_g, d_b, eps, d_s, d_y,
                                                       d_m, d_r)));
        down(d, dt, d_y, yb, nk);
        put_col_block(y, rows, width, c0, widths[k], yb);
        down(d, TSR_DTYPE_F32, d_m, k ? m : mean, (size_t)rows);
        down(d, TSR_DTYPE_F32, d_r, k ? rs : rstd, (size_t)rows);
        if (k)
            *same &= memcmp(m, mean, rows * sizeof *m) == 0 && memcmp(rs, rstd, rows * sizeof *rs) == 0;
        release();
        free(xb), free(yb);
    }
    for (int k = 0, c0 = 0; k < nb; c0 += widths[k++]) {
        size_t nk = (size_t)rows * widths[k];
        float *xb = col_block(x, rows, width, c0, widths[k]), *dyb = col_block(dy, rows, width, c0, widths[k]);
        void *d_x = up(d, dt, xb, nk, off), *d_dy = up(d, dt, dyb, nk, off);
        void *d_g = up(d, dt, g + c0, (size_t)widths[k], off);
        float *d_m = up(d, TSR_DTYPE_F32, mean, (size_t)rows, 0), *d_r = up(d, TSR_DTYPE_F32, rstd, (size_t)rows, 0);
        float *d_s = up(d, TSR_DTYPE_F32, NULL, r2, 0);
        keep(&rc, finish(d, tsr_kernel_layernorm_backward_stats(d, dt, rows, widths[k], d_dy, d_x, d_g, d_m, d_r,
                                                                d_s)));
        down(d, TSR_DTYPE_F32, d_s, part, r2);
        for (size_t i = 0; i < r2; i++)
            bstats[i] += part[i];
        release();
        free(xb), free(dyb);
    }
    for (int k = 0, c0 = 0; k < nb; c0 += widths[k++]) {
        size_t nk = (size_t)rows * widths[k];
        float *xb = col_block(x, rows, width, c0, widths[k]), *dyb = col_block(dy, rows, width, c0, widths[k]);
        float *dxb = col_block(dx, rows, width, c0, widths[k]);
        void *d_x = up(d, dt, xb, nk, off), *d_dy = up(d, dt, dyb, nk, off), *d_dx = up(d, dt, dxb, nk, off);
        void *d_g = up(d, dt, g + c0, (size_t)widths[k], off);
        float *d_m = up(d, TSR_DTYPE_F32, mean, (size_t)rows, 0), *d_r = up(d, TSR_DTYPE_F32, rstd, (size_t)rows, 0);
        float *d_s = up(d, TSR_DTYPE_F32, bstats, r2, 0);
        float *d_dg = up(d, TSR_DTYPE_F32, dg + c0, (size_t)widths[k], 0);
        float *d_db = up(d, TSR_DTYPE_F32, db + c0, (size_t)widths[k], 0);
        keep(&rc, finish(d, tsr_kernel_layernorm_backward_apply(d, dt, rows, widths[k], width, d_dy, d_x, d_g, d_m,
                                                                d_r, d_s, d_dx)));
        keep(&rc, finish(d, tsr_kernel_layernorm_backward(d, dt, rows, widths[k], d_dy, d_x, d_g, d_m, d_r, NULL,
                                                          d_dg, d_db)));
        down(d, dt, d_dx, dxb, nk);
        put_col_block(dx, rows, width, c0, widths[k], dxb);
        down(d, TSR_DTYPE_F32, d_dg, dg + c0, (size_t)widths[k]);
        down(d, TSR_DTYPE_F32, d_db, db + c0, (size_t)widths[k]);
        release();
        free(xb), free(dyb), free(dxb);
    }
    free(stats), free(bstats), free(part), free(m), free(rs);
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

/* dst = alpha src + beta dst on d: src rows × lds of type st, dst rows × ldd of type dt (in
 * and out); soff, doff offset the two pointers. in_place: dst is src (ldd = lds, st = dt). */
static tsr_status_t run_axpby(tsr_device_t d, tsr_dtype_t st, tsr_dtype_t dt, int soff, int doff, int rows,
                              int cols, float alpha, const float *src, int lds, float beta, float *dst, int ldd,
                              int in_place)
{
    size_t ns = (size_t)rows * lds, nd = (size_t)rows * ldd;
    void *d_src = up(d, st, in_place ? dst : src, ns, soff), *d_dst = in_place ? d_src : up(d, dt, dst, nd, doff);
    tsr_status_t rc = finish(d, tsr_kernel_axpby_2d(d, rows, cols, alpha, st, d_src, lds, beta, dt, d_dst, ldd));
    down(d, dt, d_dst, dst, nd);
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

/* The embedding of the vocabulary block [v0, v0 + nv): wte holds its nv rows; wte or wpe may be NULL. */
static tsr_status_t run_embed_forward(tsr_device_t d, tsr_dtype_t dt, int off, const int32_t *tok, int seqs, int T,
                                      int C, int v0, int nv, const float *wte, const float *wpe, float *out)
{
    size_t n = (size_t)seqs * T * C;
    int32_t *d_tok = up_tokens(d, tok, (size_t)seqs * T, off);
    void *d_wte = up_opt(d, dt, wte, (size_t)nv * C, off), *d_wpe = up_opt(d, dt, wpe, (size_t)T * C, off);
    void *d_out = up(d, dt, NULL, n, off);
    tsr_status_t rc =
        finish(d, tsr_kernel_embedding_forward(d, dt, d_tok, seqs, T, C, v0, nv, d_wte, d_wpe, d_out));
    down(d, dt, d_out, out, n);
    release();
    return rc;
}

/* dwte (nv × C) or dwpe may be NULL. */
static tsr_status_t run_embed_backward(tsr_device_t d, tsr_dtype_t dt, int off, const int32_t *tok, int seqs, int T,
                                       int C, int v0, int nv, const float *dout, float *dwte, float *dwpe)
{
    int32_t *d_tok = up_tokens(d, tok, (size_t)seqs * T, off);
    void *d_dout = up(d, dt, dout, (size_t)seqs * T * C, off);
    float *d_wte = up_opt(d, TSR_DTYPE_F32, dwte, (size_t)nv * C, 0);
    float *d_wpe = up_opt(d, TSR_DTYPE_F32, dwpe, (size_t)T * C, 0);
    tsr_status_t rc =
        finish(d, tsr_kernel_embedding_backward(d, dt, d_tok, seqs, T, C, v0, nv, d_dout, d_wte, d_wpe));
    if (dwte)
        down(d, TSR_DTYPE_F32, d_wte, dwte, (size_t)nv * C);
    if (dwpe)
        down(d, TSR_DTYPE_F32, d_wpe, dwpe, (size_t)T * C);
    release();
    return rc;
}

#define PAD_VALUE 4096.0f /* what padding columns hold; a bf16 value, so any type keeps it */
#define MAX_PARTS 3

/* Cross-entropy over nb vocabulary blocks of widths[k] on d, each block in a buffer of its
 * own with leading dimension widths[k] + pad (padding PAD_VALUE), as nb ranks hold them: the
 * stats of every block into one buffer in block order (the all-gather), then finish on every
 * block. logits: rows × V, V the sum of the widths (no padding), overwritten by the
 * gradient; stats: the gathered nb × rows × 3; losses: block 0's. *same: every block wrote
 * the same loss bits; *pad_ok: the padding is untouched. */
static tsr_status_t run_ce_split(tsr_device_t d, tsr_dtype_t dt, int off, int rows, int nb, const int *widths,
                                 int pad, float *logits, const int32_t *targets, float dscale, float *stats,
                                 float *losses, int *same, int *pad_ok)
{
    int V = 0;
    for (int k = 0; k < nb; k++)
        V += widths[k];
    void *d_l[MAX_PARTS];
    float *d_loss[MAX_PARTS];
    int32_t *d_t = up_tokens(d, targets, (size_t)rows, 0);
    float *d_st = up(d, TSR_DTYPE_F32, NULL, 3 * (size_t)nb * rows, 0);
    tsr_status_t rc = TSR_OK;
    for (int k = 0, c0 = 0; k < nb; c0 += widths[k++]) {
        int ld = widths[k] + pad;
        float *lb = xmalloc((size_t)rows * ld * sizeof *lb);
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < ld; c++)
                lb[(size_t)r * ld + c] = c < widths[k] ? logits[(size_t)r * V + c0 + c] : PAD_VALUE;
        d_l[k] = up(d, dt, lb, (size_t)rows * ld, off);
        d_loss[k] = up(d, TSR_DTYPE_F32, NULL, (size_t)rows, 0);
        keep(&rc, finish(d, tsr_kernel_cross_entropy_stats(d, dt, rows, widths[k], c0, d_l[k], ld, d_t,
                                                           d_st + 3 * (size_t)k * rows)));
        free(lb);
    }
    *same = *pad_ok = 1;
    float *other = xmalloc(rows * sizeof *other);
    for (int k = 0, c0 = 0; k < nb; c0 += widths[k++]) {
        int ld = widths[k] + pad;
        float *lb = xmalloc((size_t)rows * ld * sizeof *lb);
        keep(&rc, finish(d, tsr_kernel_cross_entropy_finish(d, dt, rows, widths[k], c0, d_l[k], ld, d_t, nb, d_st,
                                                            d_loss[k], dscale)));
        down(d, dt, d_l[k], lb, (size_t)rows * ld);
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < ld; c++)
                if (c < widths[k])
                    logits[(size_t)r * V + c0 + c] = lb[(size_t)r * ld + c];
                else
                    *pad_ok &= lb[(size_t)r * ld + c] == PAD_VALUE;
        down(d, TSR_DTYPE_F32, d_loss[k], k ? other : losses, (size_t)rows);
        if (k)
            *same &= memcmp(other, losses, rows * sizeof *other) == 0;
        free(lb);
    }
    down(d, TSR_DTYPE_F32, d_st, stats, 3 * (size_t)nb * rows);
    free(other);
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

/* loss of one row, and (when grad is not NULL) dscale (softmax - onehot); a target outside
 * [0, V) adds no target term and no one-hot (a target in another rank's block). */
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
    return mx + log(sum) - (target >= 0 && target < V ? row[target] : 0.0);
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

    /* The halves of a split backward: dx alone, then dgamma and dbeta alone. */
    memcpy(dx, dx0, n * sizeof *dx);
    rc = run_ln_backward(cpu, TSR_DTYPE_F32, 0, rows, cols, dy, x, g, mean, rstd, dx, NULL, NULL);
    edx = err_d(dx, rdx, n);
    ok(rc == TSR_OK && edx <= 1e-5, "cpu layernorm backward %dx%d, dgamma and dbeta NULL: dx += within 1e-5 (%.2g)",
       rows, cols, edx);
    memcpy(dg, dg0, cols * sizeof *dg);
    memcpy(db, db0, cols * sizeof *db);
    rc = run_ln_backward(cpu, TSR_DTYPE_F32, 0, rows, cols, dy, x, g, mean, rstd, NULL, dg, db);
    edg = err_d(dg, rdg, (size_t)cols), edb = err_d(db, rdb, (size_t)cols);
    ok(rc == TSR_OK && edg <= 1e-5 && edb <= 1e-5,
       "cpu layernorm backward %dx%d, dx NULL: dgamma +=, dbeta += within 1e-5 (%.2g %.2g)", rows, cols, edg, edb);
    free(x), free(g), free(b), free(y), free(mean), free(rstd), free(ry), free(rm), free(rr), free(dy), free(dx0);
    free(dg0), free(db0), free(dx), free(dg), free(db), free(rdx), free(rdg), free(rdb);
}

/* Rows of `width` values around `shift` (deviation 1/sqrt(3)) split into nb column blocks,
 * against the whole-row references. With the rows' means far from zero against their
 * spread (|shift| > 2), the fp32 sums of the stats lose digits: rstd and y are then held to
 * the bound of tessera/kernels.h, 2^-23 mean^2/variance a block in the variance (half that
 * in rstd), on top of 1e-5. */
static void cpu_layernorm_split(int rows, int nb, const int *widths, float shift)
{
    int width = 0;
    for (int k = 0; k < nb; k++)
        width += widths[k];
    size_t n = (size_t)rows * width;
    double ratio = 3.0 * (fabs(shift) + 0.1) * (fabs(shift) + 0.1); /* mean^2/variance, at most about */
    double tol = 1e-5 + (fabs(shift) > 2 ? nb * ldexp(1, -24) * ratio : 0);
    float *x = rnd(n, shift - 1, shift + 1), *g = rnd((size_t)width, 0.5f, 1.5f), *b = rnd((size_t)width, -1, 1);
    float *dy = rnd(n, -1, 1), *dx0 = rnd(n, -1, 1), *dg0 = rnd((size_t)width, -1, 1), *db0 = rnd((size_t)width, -1, 1);
    float *y = xmalloc(n * sizeof *y), *mean = xmalloc(rows * sizeof *mean), *rstd = xmalloc(rows * sizeof *rstd);
    float *dx = dup(dx0, n), *dg = dup(dg0, (size_t)width), *db = dup(db0, (size_t)width);
    double *ry = xmalloc(n * sizeof *ry), *rm = xmalloc(rows * sizeof *rm), *rr = xmalloc(rows * sizeof *rr);
    double *rdx = xmalloc(n * sizeof *rdx), *rdg = xmalloc(width * sizeof *rdg), *rdb = xmalloc(width * sizeof *rdb);
    int same;
    tsr_status_t rc = run_ln_split(cpu, TSR_DTYPE_F32, 0, rows, width, nb, widths, x, g, b, 1e-5f, dy, y, mean, rstd,
                                   &same, dx, dg, db);
    ref_ln_forward(rows, width, x, g, b, 1e-5f, ry, rm, rr);
    double ey = err_d(y, ry, n), em = err_d(mean, rm, (size_t)rows), er = err_d(rstd, rr, (size_t)rows);
    ok(rc == TSR_OK && ey <= tol && em <= 1e-5 && er <= tol && same,
       "cpu split layernorm %d rows of %d in %d blocks (x around %g): y, mean, rstd within %.2g (%.2g %.2g %.2g), "
       "the same mean and rstd in every block",
       rows, width, nb, (double)shift, tol, ey, em, er);
    for (int r = 0; r < rows; r++) { /* the backward ran from the forward's statistics */
        rm[r] = mean[r];
        rr[r] = rstd[r];
    }
    ref_ln_backward(rows, width, dy, x, g, rm, rr, dx0, dg0, db0, rdx, rdg, rdb);
    double edx = err_d(dx, rdx, n), edg = err_d(dg, rdg, (size_t)width), edb = err_d(db, rdb, (size_t)width);
    ok(rc == TSR_OK && edx <= 1e-5 && edg <= 1e-5 && edb <= 1e-5,
       "cpu split layernorm backward %d rows of %d in %d blocks: dx += (backward stats, apply), dgamma +=, dbeta += "
       "(backward with dx NULL) within 1e-5 (%.2g %.2g %.2g)",
       rows, width, nb, edx, edg, edb);
    free(x), free(g), free(b), free(dy), free(dx0), free(dg0), free(db0), free(y), free(mean), free(rstd), free(dx);
    free(dg), free(db), free(ry), free(rm), free(rr), free(rdx), free(rdg), free(rdb);
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


/* dst = alpha src + beta dst on rows × cols (leading dimensions lds, ldd; padding NaN in
 * src, PAD_VALUE in dst, which must stay); beta 0 starts dst as NaN, which must not be read.
 * in_place: dst is src. */
static void cpu_axpby(int rows, int cols, int lds, int ldd, float alpha, float beta, int in_place)
{
    size_t ns = (size_t)rows * lds, nd = (size_t)rows * ldd;
    float *src = rnd(ns, -2, 2), *dst = in_place ? dup(src, ns) : rnd(nd, -2, 2);
    double *ref = xmalloc(nd * sizeof *ref);
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < ldd; c++) {
            size_t i = (size_t)r * ldd + c;
            if (in_place) {
                ref[i] = c >= cols ? dst[i] : alpha * (double)dst[i] + (beta == 0.0f ? 0.0 : beta * (double)dst[i]);
                continue;
            }
            if (c >= cols)
                dst[i] = PAD_VALUE;
            else if (beta == 0.0f)
                dst[i] = NAN;
            ref[i] = c >= cols ? PAD_VALUE
                               : alpha * (double)src[(size_t)r * lds + c] +
                                     (beta == 0.0f ? 0.0 : beta * (double)dst[i]);
        }
    for (int r = 0; r < rows && !in_place; r++)
        for (int c = cols; c < lds; c++)
            src[(size_t)r * lds + c] = NAN;
    tsr_status_t rc = run_axpby(cpu, TSR_DTYPE_F32, TSR_DTYPE_F32, 0, 0, rows, cols, alpha, src, lds, beta, dst, ldd,
                                in_place);
    int pad = 1;
    for (int r = 0; r < rows; r++)
        for (int c = cols; c < ldd; c++)
            pad &= dst[(size_t)r * ldd + c] == ref[(size_t)r * ldd + c];
    pack_rows_f(dst, rows, cols, ldd);
    pack_rows_d(ref, rows, cols, ldd);
    double e = err_d(dst, ref, (size_t)rows * cols);
    ok(rc == TSR_OK && e <= 1e-5 && pad, "cpu axpby_2d %dx%d lds %d ldd %d, alpha %g beta %g%s: within 1e-5 (%.2g)%s",
       rows, cols, lds, ldd, (double)alpha, (double)beta, in_place ? ", in place" : "", e,
       ldd > cols ? ", padding untouched" : "");
    free(src), free(dst), free(ref);
}

/* use: 3 both tables, 1 wte alone (wpe and dwpe NULL), 2 wpe alone. The block [v0, v0 + nv)
 * of a vocabulary of `vocab`; tokens lie in the whole vocabulary. */
static void cpu_embedding(int seqs, int T, int C, int vocab, int v0, int nv, int use)
{
    size_t ntok = (size_t)seqs * T, n = ntok * C, nte = (size_t)nv * C, npe = (size_t)T * C;
    int32_t *tok = rnd_tokens(ntok, vocab);
    float *wte = use & 1 ? rnd(nte, -1, 1) : NULL, *wpe = use & 2 ? rnd(npe, -1, 1) : NULL;
    float *out = xmalloc(n * sizeof *out);
    double *ref = xmalloc(n * sizeof *ref);
    for (size_t i = 0; i < ntok; i++) {
        int in = tok[i] >= v0 && tok[i] < v0 + nv;
        for (int c = 0; c < C; c++)
            ref[i * C + c] = (wte && in ? (double)wte[(size_t)(tok[i] - v0) * C + c] : 0.0) +
                             (wpe ? wpe[(i % T) * C + c] : 0.0);
    }
    tsr_status_t rc = run_embed_forward(cpu, TSR_DTYPE_F32, 0, tok, seqs, T, C, v0, nv, wte, wpe, out);
    double e = err_d(out, ref, n);
    const char *which = use == 1 ? ", wte alone" : use == 2 ? ", wpe alone" : "";
    ok(rc == TSR_OK && e <= 1e-5,
       "cpu embedding forward %d x %d tokens, C %d, block [%d, %d) of %d%s: within 1e-5 (%.2g)", seqs, T, C, v0,
       v0 + nv, vocab, which, e);

    float *dout = rnd(n, -1, 1), *gte0 = rnd(nte, -1, 1), *gpe0 = rnd(npe, -1, 1);
    float *dwte = use & 1 ? dup(gte0, nte) : NULL, *dwpe = use & 2 ? dup(gpe0, npe) : NULL;
    double *rte = xmalloc(nte * sizeof *rte), *rpe = xmalloc(npe * sizeof *rpe);
    for (size_t i = 0; i < nte; i++)
        rte[i] = gte0[i];
    for (size_t i = 0; i < npe; i++)
        rpe[i] = gpe0[i];
    for (size_t i = 0; i < ntok; i++)
        for (int c = 0; c < C; c++) {
            if (tok[i] >= v0 && tok[i] < v0 + nv)
                rte[(size_t)(tok[i] - v0) * C + c] += dout[i * C + c];
            rpe[(i % T) * C + c] += dout[i * C + c];
        }
    rc = run_embed_backward(cpu, TSR_DTYPE_F32, 0, tok, seqs, T, C, v0, nv, dout, dwte, dwpe);
    double et = dwte ? err_d(dwte, rte, nte) : 0, ep = dwpe ? err_d(dwpe, rpe, npe) : 0;
    ok(rc == TSR_OK && et <= 1e-5 && ep <= 1e-5,
       "cpu embedding backward %d x %d tokens (repeated), C %d, block [%d, %d)%s: dwte +=, dwpe += within 1e-5 "
       "(%.2g %.2g)",
       seqs, T, C, v0, v0 + nv, which, et, ep);
    free(tok), free(wte), free(wpe), free(out), free(ref), free(dout), free(gte0), free(gpe0), free(dwte);
    free(dwpe), free(rte), free(rpe);
}

/* Row r's target in block r mod nb: every block holds some rows' targets. */
static int32_t *block_targets(int rows, int nb, const int *widths)
{
    int32_t *t = rnd_tokens((size_t)rows, 1 << 30);
    for (int r = 0; r < rows; r++) {
        int c0 = 0, b = r % nb;
        for (int k = 0; k < b; k++)
            c0 += widths[k];
        t[r] = c0 + t[r] % widths[b];
    }
    return t;
}

/* Cross-entropy over nb vocabulary blocks (padding `pad` columns each), stats and finish,
 * against the whole-vocabulary reference; the stats of each block against theirs too.
 * no_target: row 0's target is V, in no block (no target term, no one-hot). */
static void cpu_cross_entropy(int rows, int nb, const int *widths, int pad, float shift, float dscale, int no_target)
{
    int V = 0;
    for (int k = 0; k < nb; k++)
        V += widths[k];
    size_t n = (size_t)rows * V;
    float *logits = rnd(n, shift - 4, shift + 4), *l0 = dup(logits, n), *loss = xmalloc(rows * sizeof *loss);
    float *stats = xmalloc(3 * (size_t)nb * rows * sizeof *stats);
    int32_t *tgt = block_targets(rows, nb, widths);
    if (no_target)
        tgt[0] = V;
    double *rl = xmalloc(rows * sizeof *rl), *rg = xmalloc(n * sizeof *rg);
    double *rs = xmalloc(3 * (size_t)nb * rows * sizeof *rs);
    for (int r = 0; r < rows; r++)
        rl[r] = ref_ce_row(V, l0 + (size_t)r * V, tgt[r], dscale, rg + (size_t)r * V);
    for (int k = 0, c0 = 0; k < nb; c0 += widths[k++])
        for (int r = 0; r < rows; r++) {
            const float *row = l0 + (size_t)r * V + c0;
            double *st = rs + 3 * ((size_t)k * rows + r), mx = -INFINITY, sum = 0;
            for (int c = 0; c < widths[k]; c++)
                mx = row[c] > mx ? row[c] : mx;
            for (int c = 0; c < widths[k]; c++)
                sum += exp(row[c] - mx);
            st[0] = mx;
            st[1] = sum;
            st[2] = tgt[r] >= c0 && tgt[r] < c0 + widths[k] ? row[tgt[r] - c0] : 0.0;
        }
    int same, pad_ok;
    tsr_status_t rc = run_ce_split(cpu, TSR_DTYPE_F32, 0, rows, nb, widths, pad, logits, tgt, dscale, stats, loss,
                                   &same, &pad_ok);
    double el = err_d(loss, rl, (size_t)rows), eg = err_d(logits, rg, n), es = err_d(stats, rs, 3 * (size_t)nb * rows);
    ok(rc == TSR_OK && el <= 1e-5 && eg <= 1e-5 && es <= 1e-5 && same && pad_ok,
       "cpu cross-entropy %d rows, V %d in %d blocks, ld width+%d, logits around %g, dscale %g%s: stats, losses and "
       "gradient within 1e-5 (%.2g %.2g %.2g), the same losses from every block, padding untouched",
       rows, V, nb, pad, (double)shift, (double)dscale, no_target ? ", a target in no block" : "", es, el, eg);
    free(logits), free(l0), free(loss), free(stats), free(tgt), free(rl), free(rg), free(rs);
}

/* Whether the last error names `what` (a one-line message saying which call failed). */
static int says(const char *what)
{
    return strstr(tsr_last_error(), what) != NULL;
}

/* The call must fail with `want` and an error naming `what`. */
static void refuses(tsr_status_t got, tsr_status_t want, const char *what, const char *why)
{
    ok(got == want && says(what), "%s: %s is refused, %s (\"%s\")", what, why, tsr_strerror(want), tsr_last_error());
}

static void cpu_errors(void)
{
    float buf[64] = {0}, stat[16] = {0};
    int32_t tok[8] = {0, 1, 2, 3, 0, 1, 2, 3};
    const tsr_dtype_t bf = TSR_DTYPE_BF16, f32 = TSR_DTYPE_F32;
    enum { KERNELS = 15 };
    tsr_status_t r[KERNELS];
    r[0] = tsr_kernel_layernorm_forward(cpu, bf, 2, 4, buf, buf, buf, 1e-5f, buf, stat, stat);
    r[1] = tsr_kernel_layernorm_backward(cpu, bf, 2, 4, buf, buf, buf, stat, stat, buf, stat, stat);
    r[2] = tsr_kernel_layernorm_stats(cpu, bf, 2, 4, buf, stat);
    r[3] = tsr_kernel_layernorm_apply(cpu, bf, 2, 4, 8, buf, buf, buf, 1e-5f, stat, buf, stat, stat);
    r[4] = tsr_kernel_layernorm_backward_stats(cpu, bf, 2, 4, buf, buf, buf, stat, stat, stat);
    r[5] = tsr_kernel_layernorm_backward_apply(cpu, bf, 2, 4, 8, buf, buf, buf, stat, stat, stat, buf);
    r[6] = tsr_kernel_gelu_forward(cpu, bf, 8, buf, buf);
    r[7] = tsr_kernel_gelu_backward(cpu, bf, 8, buf, buf, buf);
    r[8] = tsr_kernel_add(cpu, bf, 8, buf, buf, buf);
    r[9] = tsr_kernel_axpby_2d(cpu, 2, 4, 1.0f, bf, buf, 4, 0.0f, f32, buf, 4);
    r[10] = tsr_kernel_bias_grad(cpu, bf, 2, 4, buf, 4, stat);
    r[11] = tsr_kernel_embedding_forward(cpu, bf, tok, 2, 4, 2, 0, 4, buf, buf, buf);
    r[12] = tsr_kernel_embedding_backward(cpu, bf, tok, 2, 4, 2, 0, 4, buf, buf, buf);
    r[13] = tsr_kernel_cross_entropy_stats(cpu, bf, 2, 4, 0, buf, 4, tok, stat);
    r[14] = tsr_kernel_cross_entropy_finish(cpu, bf, 2, 4, 0, buf, 4, tok, 1, stat, stat, 1.0f);
    int all = 1;
    for (int i = 0; i < KERNELS; i++)
        all &= r[i] == TSR_ERR_NOT_SUPPORTED;
    ok(all, "every layer kernel answers TSR_ERR_NOT_SUPPORTED for bf16 on the CPU");
    ok(says("cross-entropy finish") && says("bf16"), "the error names the kernel and the type (\"%s\")",
       tsr_last_error());
    refuses(tsr_kernel_axpby_2d(cpu, 2, 4, 1.0f, f32, buf, 4, 0.0f, bf, buf, 4), TSR_ERR_NOT_SUPPORTED, "axpby 2d",
            "a bf16 destination on the CPU");

    is_int(tsr_kernel_layernorm_forward(cpu, TSR_DTYPE_I32, 2, 4, buf, buf, buf, 1e-5f, buf, stat, stat),
           TSR_ERR_INVALID_ARG, "layernorm forward: element type i32 is TSR_ERR_INVALID_ARG");
    ok(says("layernorm forward") && says("i32"), "the error names the call and the type (\"%s\")", tsr_last_error());
    is_int(tsr_kernel_add(cpu, TSR_DTYPE_F64, 8, buf, buf, buf), TSR_ERR_INVALID_ARG,
           "add: element type f64 is TSR_ERR_INVALID_ARG");
    is_int(tsr_kernel_add(NULL, f32, 8, buf, buf, buf), TSR_ERR_INVALID_ARG,
           "add: a NULL device is TSR_ERR_INVALID_ARG");
    is_int(tsr_kernel_layernorm_forward(cpu, f32, 0, 4, buf, buf, buf, 1e-5f, buf, stat, stat), TSR_ERR_INVALID_ARG,
           "layernorm forward: 0 rows is TSR_ERR_INVALID_ARG");
    is_int(tsr_kernel_layernorm_forward(cpu, f32, 2, 4, buf, buf, buf, -1.0f, buf, stat, stat), TSR_ERR_INVALID_ARG,
           "layernorm forward: a negative eps is TSR_ERR_INVALID_ARG");

    /* The layernorm backward's optional outputs: dx, or dgamma and dbeta together. */
    refuses(tsr_kernel_layernorm_backward(cpu, f32, 2, 4, buf, buf, buf, stat, stat, buf, NULL, stat),
            TSR_ERR_INVALID_ARG, "layernorm backward", "dbeta without dgamma");
    refuses(tsr_kernel_layernorm_backward(cpu, f32, 2, 4, buf, buf, buf, stat, stat, buf, stat, NULL),
            TSR_ERR_INVALID_ARG, "layernorm backward", "dgamma without dbeta");
    refuses(tsr_kernel_layernorm_backward(cpu, f32, 2, 4, buf, buf, buf, stat, stat, NULL, NULL, NULL),
            TSR_ERR_INVALID_ARG, "layernorm backward", "no output at all");
    refuses(tsr_kernel_layernorm_backward(cpu, f32, 2, 4, buf, NULL, buf, stat, stat, buf, stat, stat),
            TSR_ERR_INVALID_ARG, "layernorm backward", "a NULL x");
    refuses(tsr_kernel_layernorm_backward(cpu, f32, 2, 0, buf, buf, buf, stat, stat, buf, stat, stat),
            TSR_ERR_INVALID_ARG, "layernorm backward", "0 columns");
    is_int(tsr_kernel_layernorm_backward(cpu, f32, 2, 4, buf, buf, buf, stat, stat, NULL, stat + 8, stat + 12),
           TSR_OK, "layernorm backward: dx NULL (parameter gradients only) is accepted");
    is_int(tsr_kernel_layernorm_backward(cpu, f32, 2, 4, buf, buf, buf, stat, stat, buf + 8, NULL, NULL), TSR_OK,
           "layernorm backward: dgamma and dbeta NULL (dx only) is accepted");

    /* The split layernorm. */
    refuses(tsr_kernel_layernorm_stats(cpu, f32, 0, 4, buf, stat), TSR_ERR_INVALID_ARG, "layernorm stats", "0 rows");
    refuses(tsr_kernel_layernorm_stats(cpu, f32, 2, 4, NULL, stat), TSR_ERR_INVALID_ARG, "layernorm stats",
            "a NULL x");
    refuses(tsr_kernel_layernorm_stats(cpu, f32, 2, 4, buf, NULL), TSR_ERR_INVALID_ARG, "layernorm stats",
            "NULL stats");
    refuses(tsr_kernel_layernorm_apply(cpu, f32, 2, 4, 3, buf, buf, buf, 1e-5f, stat, buf, stat, stat),
            TSR_ERR_INVALID_ARG, "layernorm apply", "a width 3 below the block's 4 columns");
    ok(says("width"), "the error names the width (\"%s\")", tsr_last_error());
    refuses(tsr_kernel_layernorm_apply(cpu, f32, 2, -4, 8, buf, buf, buf, 1e-5f, stat, buf, stat, stat),
            TSR_ERR_INVALID_ARG, "layernorm apply", "-4 columns");
    refuses(tsr_kernel_layernorm_apply(cpu, f32, 2, 4, 8, buf, buf, buf, 1e-5f, NULL, buf, stat, stat),
            TSR_ERR_INVALID_ARG, "layernorm apply", "NULL stats");
    refuses(tsr_kernel_layernorm_apply(cpu, f32, 2, 4, 8, buf, buf, buf, 1e-5f, stat, buf, NULL, stat),
            TSR_ERR_INVALID_ARG, "layernorm apply", "a NULL mean");
    refuses(tsr_kernel_layernorm_apply(cpu, f32, 2, 4, 8, buf, buf, buf, -1.0f, stat, buf, stat, stat),
            TSR_ERR_INVALID_ARG, "layernorm apply", "a negative eps");
    refuses(tsr_kernel_layernorm_backward_stats(cpu, f32, 2, 4, buf, buf, NULL, stat, stat, stat),
            TSR_ERR_INVALID_ARG, "layernorm backward stats", "a NULL gamma");
    refuses(tsr_kernel_layernorm_backward_stats(cpu, f32, 2, 4, buf, buf, buf, stat, stat, NULL),
            TSR_ERR_INVALID_ARG, "layernorm backward stats", "NULL stats");
    refuses(tsr_kernel_layernorm_backward_stats(cpu, f32, -1, 4, buf, buf, buf, stat, stat, stat),
            TSR_ERR_INVALID_ARG, "layernorm backward stats", "-1 rows");
    refuses(tsr_kernel_layernorm_backward_apply(cpu, f32, 2, 4, 2, buf, buf, buf, stat, stat, stat, buf),
            TSR_ERR_INVALID_ARG, "layernorm backward apply", "a width 2 below the block's 4 columns");
    refuses(tsr_kernel_layernorm_backward_apply(cpu, f32, 2, 4, 8, buf, buf, buf, stat, stat, stat, NULL),
            TSR_ERR_INVALID_ARG, "layernorm backward apply", "a NULL dx");
    refuses(tsr_kernel_layernorm_backward_apply(cpu, f32, 2, 4, 8, buf, buf, buf, stat, NULL, stat, buf),
            TSR_ERR_INVALID_ARG, "layernorm backward apply", "a NULL rstd");

    is_int(tsr_kernel_gelu_forward(cpu, f32, 0, NULL, NULL), TSR_OK, "gelu forward of 0 values is a no-op");
    is_int(tsr_kernel_gelu_backward(cpu, f32, 8, buf, NULL, buf), TSR_ERR_INVALID_ARG,
           "gelu backward: a NULL dy is TSR_ERR_INVALID_ARG");

    /* axpby_2d. */
    refuses(tsr_kernel_axpby_2d(cpu, -1, 4, 1.0f, f32, buf, 4, 0.0f, f32, buf, 4), TSR_ERR_INVALID_ARG, "axpby 2d",
            "-1 rows");
    refuses(tsr_kernel_axpby_2d(cpu, 2, 4, 1.0f, f32, buf, 3, 0.0f, f32, buf + 16, 4), TSR_ERR_INVALID_ARG,
            "axpby 2d", "lds 3 below 4 columns");
    ok(says("leading dimension"), "the error names the leading dimensions (\"%s\")", tsr_last_error());
    refuses(tsr_kernel_axpby_2d(cpu, 2, 4, 1.0f, f32, buf, 4, 0.0f, f32, buf + 16, 2), TSR_ERR_INVALID_ARG,
            "axpby 2d", "ldd 2 below 4 columns");
    refuses(tsr_kernel_axpby_2d(cpu, 2, 4, 1.0f, f32, NULL, 4, 0.0f, f32, buf, 4), TSR_ERR_INVALID_ARG, "axpby 2d",
            "a NULL src");
    refuses(tsr_kernel_axpby_2d(cpu, 2, 4, 1.0f, f32, buf, 4, 0.0f, f32, NULL, 4), TSR_ERR_INVALID_ARG, "axpby 2d",
            "a NULL dst");
    refuses(tsr_kernel_axpby_2d(cpu, 2, 4, 1.0f, TSR_DTYPE_I32, buf, 4, 0.0f, f32, buf, 4), TSR_ERR_INVALID_ARG,
            "axpby 2d", "a source of type i32");
    is_int(tsr_kernel_axpby_2d(cpu, 0, 4, 1.0f, f32, NULL, 0, 0.0f, f32, NULL, 0), TSR_OK,
           "axpby 2d: 0 rows is a no-op (NULL pointers, any leading dimensions)");
    is_int(tsr_kernel_axpby_2d(cpu, 3, 0, 1.0f, f32, NULL, 0, 0.0f, f32, NULL, 0), TSR_OK,
           "axpby 2d: 0 columns is a no-op");

    is_int(tsr_kernel_bias_grad(cpu, f32, 2, 4, buf, 3, stat), TSR_ERR_INVALID_ARG,
           "bias gradient: ld 3 < 4 columns is TSR_ERR_INVALID_ARG");
    ok(says("leading dimension"), "the error names the leading dimension (\"%s\")", tsr_last_error());
    is_int(tsr_kernel_bias_grad(cpu, f32, 2, -1, buf, 4, stat), TSR_ERR_INVALID_ARG,
           "bias gradient: -1 columns is TSR_ERR_INVALID_ARG");

    /* Embeddings of a vocabulary block. */
    is_int(tsr_kernel_embedding_forward(cpu, f32, tok, 2, 0, 2, 0, 4, buf, buf, buf), TSR_ERR_INVALID_ARG,
           "embedding forward: T = 0 is TSR_ERR_INVALID_ARG");
    is_int(tsr_kernel_embedding_backward(cpu, f32, NULL, 2, 4, 2, 0, 4, buf, buf, buf), TSR_ERR_INVALID_ARG,
           "embedding backward: NULL tokens is TSR_ERR_INVALID_ARG");
    int32_t neg[8] = {0, 1, -3, 3, 0, 1, 2, 3};
    is_int(tsr_kernel_embedding_forward(cpu, f32, neg, 2, 4, 2, 0, 4, buf, buf, buf), TSR_ERR_INVALID_ARG,
           "embedding forward: a negative token is TSR_ERR_INVALID_ARG on the CPU");
    refuses(tsr_kernel_embedding_forward(cpu, f32, tok, 2, 4, 2, 0, 4, NULL, NULL, buf), TSR_ERR_INVALID_ARG,
            "embedding forward", "wte and wpe both NULL");
    refuses(tsr_kernel_embedding_forward(cpu, f32, tok, 2, 4, 2, 0, 4, buf, buf, NULL), TSR_ERR_INVALID_ARG,
            "embedding forward", "a NULL out");
    refuses(tsr_kernel_embedding_forward(cpu, f32, tok, 2, 4, 2, -1, 4, buf, buf, buf), TSR_ERR_INVALID_ARG,
            "embedding forward", "a block from v0 = -1");
    ok(says("vocabulary block"), "the error names the vocabulary block (\"%s\")", tsr_last_error());
    refuses(tsr_kernel_embedding_forward(cpu, f32, tok, 2, 4, 2, 0, 0, buf, buf, buf), TSR_ERR_INVALID_ARG,
            "embedding forward", "a block of 0 rows");
    is_int(tsr_kernel_embedding_forward(cpu, f32, tok, 2, 4, 2, -1, 0, NULL, buf, buf + 32), TSR_OK,
           "embedding forward: without wte the block is not looked at");
    refuses(tsr_kernel_embedding_backward(cpu, f32, tok, 2, 4, 2, 0, 4, buf, NULL, NULL), TSR_ERR_INVALID_ARG,
            "embedding backward", "dwte and dwpe both NULL");
    refuses(tsr_kernel_embedding_backward(cpu, f32, tok, 2, 4, 2, 0, 4, NULL, buf, buf), TSR_ERR_INVALID_ARG,
            "embedding backward", "a NULL dout");
    refuses(tsr_kernel_embedding_backward(cpu, f32, tok, 2, 4, 2, 0, -2, buf, buf, buf), TSR_ERR_INVALID_ARG,
            "embedding backward", "a block of -2 rows");
    is_int(tsr_kernel_embedding_backward(cpu, f32, tok, 2, 4, 2, -5, 0, buf, NULL, buf + 32), TSR_OK,
           "embedding backward: without dwte the block is not looked at");

    /* Cross-entropy stats and finish. */
    refuses(tsr_kernel_cross_entropy_stats(cpu, f32, 2, 5, 0, buf, 4, tok, stat), TSR_ERR_INVALID_ARG,
            "cross-entropy stats", "ld 4 < V 5");
    ok(says("leading dimension"), "the error names the leading dimension (\"%s\")", tsr_last_error());
    refuses(tsr_kernel_cross_entropy_stats(cpu, f32, 0, 4, 0, buf, 4, tok, stat), TSR_ERR_INVALID_ARG,
            "cross-entropy stats", "0 rows");
    refuses(tsr_kernel_cross_entropy_stats(cpu, f32, 2, 4, -1, buf, 4, tok, stat), TSR_ERR_INVALID_ARG,
            "cross-entropy stats", "v0 = -1");
    refuses(tsr_kernel_cross_entropy_stats(cpu, f32, 2, 4, 0, buf, 4, tok, NULL), TSR_ERR_INVALID_ARG,
            "cross-entropy stats", "NULL stats");
    refuses(tsr_kernel_cross_entropy_stats(cpu, f32, 2, 4, 0, buf, 4, NULL, stat), TSR_ERR_INVALID_ARG,
            "cross-entropy stats", "NULL targets");
    refuses(tsr_kernel_cross_entropy_stats(cpu, f32, 2, 4, 0, NULL, 4, tok, stat), TSR_ERR_INVALID_ARG,
            "cross-entropy stats", "NULL logits");
    refuses(tsr_kernel_cross_entropy_finish(cpu, f32, 2, 4, 0, buf, 4, tok, 0, stat, stat, 1.0f),
            TSR_ERR_INVALID_ARG, "cross-entropy finish", "0 parts");
    refuses(tsr_kernel_cross_entropy_finish(cpu, f32, 2, 4, 0, buf, 4, tok, 1, NULL, stat, 1.0f),
            TSR_ERR_INVALID_ARG, "cross-entropy finish", "NULL stats");
    refuses(tsr_kernel_cross_entropy_finish(cpu, f32, 2, 4, 0, buf, 4, tok, 1, stat, NULL, 1.0f),
            TSR_ERR_INVALID_ARG, "cross-entropy finish", "NULL losses");
    refuses(tsr_kernel_cross_entropy_finish(cpu, f32, 2, 4, 0, buf, 3, tok, 1, stat, stat, 1.0f),
            TSR_ERR_INVALID_ARG, "cross-entropy finish", "ld 3 < V 4");
    float logits[8] = {1, 2, 3, 4, 5, 6, 7, 8}, before[8], st[6] = {8, 1, 4, 8, 1, 8}, loss[2] = {0, 0};
    memcpy(before, logits, sizeof logits);
    int32_t bad[2] = {1, -1};
    refuses(tsr_kernel_cross_entropy_stats(cpu, f32, 2, 4, 0, logits, 4, bad, st), TSR_ERR_INVALID_ARG,
            "cross-entropy stats", "a negative target on the CPU");
    refuses(tsr_kernel_cross_entropy_finish(cpu, f32, 2, 4, 0, logits, 4, bad, 1, st, loss, 1.0f),
            TSR_ERR_INVALID_ARG, "cross-entropy finish", "a negative target on the CPU");
    ok(memcmp(logits, before, sizeof logits) == 0,
       "cross-entropy finish: a rejected call leaves the logits as they were");
    tsr_clear_error();
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
        /* The GPU again with dx alone, then dgamma and dbeta alone: the CPU's full results. */
        memcpy(dx[1], dx0, n * sizeof(float));
        rc[1] = run_ln_backward(gpu, dt, off, rows, cols, dy, x, g, m[0], rs[0], dx[1], NULL, NULL);
        edx = err_f(dx[1], dx[0], n);
        memcpy(dg[1], dg0, cols * sizeof(float));
        memcpy(db[1], db0, cols * sizeof(float));
        tsr_status_t rw = run_ln_backward(gpu, dt, off, rows, cols, dy, x, g, m[0], rs[0], NULL, dg[1], db[1]);
        edg = err_f(dg[1], dg[0], (size_t)cols), edb = err_f(db[1], db[0], (size_t)cols);
        ok(rc[1] == TSR_OK && rw == TSR_OK && edx <= tol_of(dt) && edg <= tol_of(dt) && edb <= tol_of(dt),
           "cuda %s layernorm backward %dx%d offset %d, dx alone and dgamma, dbeta alone: as the CPU (%.2g %.2g %.2g "
           "<= %g)",
           tn, rows, cols, off, edx, edg, edb, tol_of(dt));
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


/* The split layernorm (forward and backward, as run_ln_split runs it) on the GPU against the
 * CPU on the same blocks. */
static void gpu_layernorm_split(int rows, int nb, const int *widths, int off)
{
    int width = 0;
    for (int k = 0; k < nb; k++)
        width += widths[k];
    size_t n = (size_t)rows * width;
    float *x0 = rnd(n, 1, 3), *g0 = rnd((size_t)width, 0.5f, 1.5f), *b0 = rnd((size_t)width, -1, 1);
    float *dy0 = rnd(n, -1, 1), *dx00 = rnd(n, -1, 1), *dg0 = rnd((size_t)width, -1, 1);
    float *db0 = rnd((size_t)width, -1, 1);
    for (int t = 0; t < 2; t++) {
        tsr_dtype_t dt = gpu_types[t];
        float *x = input(x0, n, dt), *g = input(g0, (size_t)width, dt), *b = input(b0, (size_t)width, dt);
        float *dy = input(dy0, n, dt), *dx0 = input(dx00, n, dt);
        float *y[2], *m[2], *rs[2], *dx[2], *dg[2], *db[2];
        int same[2];
        tsr_status_t rc[2];
        for (int k = 0; k < 2; k++) {
            y[k] = xmalloc(n * sizeof(float));
            m[k] = xmalloc(rows * sizeof(float));
            rs[k] = xmalloc(rows * sizeof(float));
            dx[k] = dup(dx0, n);
            dg[k] = dup(dg0, (size_t)width);
            db[k] = dup(db0, (size_t)width);
            rc[k] = run_ln_split(k ? gpu : cpu, k ? dt : TSR_DTYPE_F32, k ? off : 0, rows, width, nb, widths, x, g, b,
                                 1e-5f, dy, y[k], m[k], rs[k], &same[k], dx[k], dg[k], db[k]);
        }
        double ey = err_f(y[1], y[0], n), em = err_f(m[1], m[0], (size_t)rows), er = err_f(rs[1], rs[0], (size_t)rows);
        double edx = err_f(dx[1], dx[0], n), edg = err_f(dg[1], dg[0], (size_t)width),
               edb = err_f(db[1], db[0], (size_t)width);
        ok(rc[0] == TSR_OK && rc[1] == TSR_OK && ey <= tol_of(dt) && em <= tol_of(dt) && er <= tol_of(dt) && same[1],
           "cuda %s split layernorm %d rows of %d in %d blocks, offset %d: y, mean, rstd as the CPU (%.2g %.2g %.2g <= "
           "%g), the same mean and rstd in every block",
           tsr_dtype_name(dt), rows, width, nb, off, ey, em, er, tol_of(dt));
        ok(rc[0] == TSR_OK && rc[1] == TSR_OK && edx <= tol_of(dt) && edg <= tol_of(dt) && edb <= tol_of(dt),
           "cuda %s split layernorm backward %d rows of %d in %d blocks, offset %d: dx, dgamma, dbeta as the CPU "
           "(%.2g %.2g %.2g <= %g)",
           tsr_dtype_name(dt), rows, width, nb, off, edx, edg, edb, tol_of(dt));
        for (int k = 0; k < 2; k++)
            free(y[k]), free(m[k]), free(rs[k]), free(dx[k]), free(dg[k]), free(db[k]);
        free(x), free(g), free(b), free(dy), free(dx0);
    }
    free(x0), free(g0), free(b0), free(dy0), free(dx00), free(dg0), free(db0);
}

/* axpby_2d for every pair of f32 and bf16, on the GPU against the CPU in f32 on the values
 * the GPU sees (a bf16 destination is compared after rounding the CPU's result, its padding
 * exactly). soff, doff: offsets of src and dst. */
static void gpu_axpby(int rows, int cols, int lds, int ldd, float beta, int soff, int doff)
{
    size_t ns = (size_t)rows * lds, nd = (size_t)rows * ldd;
    float *s0 = rnd(ns, -2, 2), *d0 = rnd(nd, -2, 2);
    for (int r = 0; r < rows; r++)
        for (int c = cols; c < ldd; c++)
            d0[(size_t)r * ldd + c] = PAD_VALUE;
    for (int ts = 0; ts < 2; ts++)
        for (int td = 0; td < 2; td++) {
            tsr_dtype_t st = gpu_types[ts], dt = gpu_types[td];
            float *src = input(s0, ns, st), *dst[2] = {input(d0, nd, dt), input(d0, nd, dt)};
            tsr_status_t rc0 = run_axpby(cpu, TSR_DTYPE_F32, TSR_DTYPE_F32, 0, 0, rows, cols, -1.25f, src, lds, beta,
                                         dst[0], ldd, 0);
            tsr_status_t rc1 = run_axpby(gpu, st, dt, soff, doff, rows, cols, -1.25f, src, lds, beta, dst[1], ldd, 0);
            int pad = 1;
            for (int r = 0; r < rows; r++)
                for (int c = cols; c < ldd; c++)
                    pad &= dst[1][(size_t)r * ldd + c] == PAD_VALUE;
            pack_rows_f(dst[0], rows, cols, ldd);
            pack_rows_f(dst[1], rows, cols, ldd);
            double e = err_f(dst[1], dst[0], (size_t)rows * cols);
            ok(rc0 == TSR_OK && rc1 == TSR_OK && e <= tol_of(dt) && pad,
               "cuda axpby_2d %s to %s %dx%d lds %d ldd %d beta %g, offsets %d %d: as the CPU (%.2g <= %g), padding "
               "untouched",
               tsr_dtype_name(st), tsr_dtype_name(dt), rows, cols, lds, ldd, (double)beta, soff, doff, e, tol_of(dt));
            free(src), free(dst[0]), free(dst[1]);
        }
    free(s0), free(d0);
}

/* The block [v0, v0 + nv) of a vocabulary of `vocab`; use: 3 both tables, 1 wte alone, 2 wpe alone. */
static void gpu_embedding(int seqs, int T, int C, int vocab, int v0, int nv, int use, int off)
{
    size_t ntok = (size_t)seqs * T, n = ntok * C, nte = (size_t)nv * C, npe = (size_t)T * C;
    int32_t *tok = rnd_tokens(ntok, vocab);
    float *wte0 = rnd(nte, -1, 1), *wpe0 = rnd(npe, -1, 1), *dout0 = rnd(n, -1, 1);
    float *gte0 = rnd(nte, -1, 1), *gpe0 = rnd(npe, -1, 1);
    const int te = use & 1, pe = use & 2;
    const char *which = use == 1 ? ", wte alone" : use == 2 ? ", wpe alone" : "";
    for (int t = 0; t < 2; t++) {
        tsr_dtype_t dt = gpu_types[t];
        const char *tn = tsr_dtype_name(dt);
        float *wte = te ? input(wte0, nte, dt) : NULL, *wpe = pe ? input(wpe0, npe, dt) : NULL;
        float *dout = input(dout0, n, dt);
        float *out[2] = {xmalloc(n * sizeof(float)), xmalloc(n * sizeof(float))};
        tsr_status_t rc0 = run_embed_forward(cpu, TSR_DTYPE_F32, 0, tok, seqs, T, C, v0, nv, wte, wpe, out[0]);
        tsr_status_t rc1 = run_embed_forward(gpu, dt, off, tok, seqs, T, C, v0, nv, wte, wpe, out[1]);
        double e = err_f(out[1], out[0], n);
        ok(rc0 == TSR_OK && rc1 == TSR_OK && e <= tol_of(dt),
           "cuda %s embedding forward %d x %d tokens, C %d, block [%d, %d) of %d%s, offset %d: as the CPU (%.2g <= %g)",
           tn, seqs, T, C, v0, v0 + nv, vocab, which, off, e, tol_of(dt));

        /* Backward: the CPU, the GPU, and the GPU again (it must give the same bits). */
        float *gte[3], *gpe[3];
        tsr_status_t rc[3];
        for (int k = 0; k < 3; k++) {
            gte[k] = dup(gte0, nte);
            gpe[k] = dup(gpe0, npe);
            rc[k] = run_embed_backward(k ? gpu : cpu, k ? dt : TSR_DTYPE_F32, k ? off : 0, tok, seqs, T, C, v0, nv,
                                       dout, te ? gte[k] : NULL, pe ? gpe[k] : NULL);
        }
        double et = err_f(gte[1], gte[0], nte), ep = err_f(gpe[1], gpe[0], npe);
        ok(rc[0] == TSR_OK && rc[1] == TSR_OK && et <= tol_of(dt) && ep <= tol_of(dt),
           "cuda %s embedding backward %d x %d tokens, C %d, block [%d, %d) of %d%s, offset %d: dwte, dwpe += as the "
           "CPU (%.2g %.2g <= %g)",
           tn, seqs, T, C, v0, v0 + nv, vocab, which, off, et, ep, tol_of(dt));
        ok(rc[2] == TSR_OK && memcmp(gte[1], gte[2], nte * sizeof(float)) == 0 &&
               memcmp(gpe[1], gpe[2], npe * sizeof(float)) == 0,
           "cuda %s embedding backward (block [%d, %d)%s) is deterministic: a second run gives the same bits", tn, v0,
           v0 + nv, which);
        if (dt == TSR_DTYPE_F32)
            ok(memcmp(gte[1], gte[0], nte * sizeof(float)) == 0 && memcmp(gpe[1], gpe[0], npe * sizeof(float)) == 0,
               "cuda f32 embedding backward (block [%d, %d)%s) sums in the CPU's order: the same bits as the CPU", v0,
               v0 + nv, which);
        for (int k = 0; k < 3; k++)
            free(gte[k]), free(gpe[k]);
        free(wte), free(wpe), free(dout), free(out[0]), free(out[1]);
    }
    free(tok), free(wte0), free(wpe0), free(dout0), free(gte0), free(gpe0);
}

/* Cross-entropy over nb vocabulary blocks (leading dimension width + pad each), stats and
 * finish, on the GPU against the CPU; logits around `shift`. */
static void gpu_cross_entropy(int rows, int nb, const int *widths, int pad, int off, float shift)
{
    int V = 0;
    for (int k = 0; k < nb; k++)
        V += widths[k];
    size_t n = (size_t)rows * V, ns = 3 * (size_t)nb * rows;
    float *l0 = rnd(n, shift - 4, shift + 4);
    int32_t *tgt = block_targets(rows, nb, widths);
    tgt[rows - 1] = V - 1; /* the last column, where a scalar tail lives */
    if (rows > 1)
        tgt[0] = V; /* in no block: no target term, no one-hot */
    float dscale = 1.0f / rows;
    for (int t = 0; t < 2; t++) {
        tsr_dtype_t dt = gpu_types[t];
        float *l[2] = {input(l0, n, dt), input(l0, n, dt)};
        float *loss[2] = {xmalloc(rows * sizeof(float)), xmalloc(rows * sizeof(float))};
        float *st[2] = {xmalloc(ns * sizeof(float)), xmalloc(ns * sizeof(float))};
        int same[2], pad_ok[2];
        tsr_status_t rc0 = run_ce_split(cpu, TSR_DTYPE_F32, 0, rows, nb, widths, pad, l[0], tgt, dscale, st[0], loss[0],
                                        &same[0], &pad_ok[0]);
        tsr_status_t rc1 = run_ce_split(gpu, dt, off, rows, nb, widths, pad, l[1], tgt, dscale, st[1], loss[1],
                                        &same[1], &pad_ok[1]);
        double es = err_f(st[1], st[0], ns), el = err_f(loss[1], loss[0], (size_t)rows), eg = err_f(l[1], l[0], n);
        ok(rc0 == TSR_OK && rc1 == TSR_OK && es <= 1e-5 && el <= 1e-5 && eg <= tol_of(dt) && same[1] && pad_ok[1],
           "cuda %s cross-entropy %d rows, V %d in %d blocks, ld width+%d, offset %d, logits around %g: stats, losses "
           "and gradient as the CPU (%.2g %.2g <= 1e-5, %.2g <= %g), the same losses from every block, padding "
           "untouched",
           tsr_dtype_name(dt), rows, V, nb, pad, off, (double)shift, es, el, eg, tol_of(dt));
        free(l[0]), free(l[1]), free(loss[0]), free(loss[1]), free(st[0]), free(st[1]);
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
    gpu_layernorm_split(7, 1, (const int[]){13}, 0);
    gpu_layernorm_split(33, 2, (const int[]){64, 64}, 0);
    gpu_layernorm_split(33, 2, (const int[]){64, 64}, 1);
    gpu_layernorm_split(4500, 3, (const int[]){256, 256, 256}, 0);
    gpu_layernorm_split(5, 3, (const int[]){100, 37, 163}, 0); /* blocks that are not whole packs */
    gpu_elementwise(13, 0);
    gpu_elementwise(100003, 0);
    gpu_elementwise(100003, 1);
    gpu_axpby(7, 13, 13, 13, 0.5f, 0, 0);
    gpu_axpby(100, 768, 776, 784, 1.0f, 0, 0);
    gpu_axpby(100, 768, 776, 784, 0.0f, 0, 0);
    gpu_axpby(33, 64, 64, 64, 0.5f, 1, 0);
    gpu_axpby(33, 64, 64, 64, 0.0f, 0, 1);
    gpu_axpby(33, 64, 66, 64, 0.5f, 0, 0); /* rows misaligned by lds, then by ldd: scalar */
    gpu_axpby(33, 64, 64, 66, 0.5f, 0, 0);
    gpu_axpby(1000, 3000, 3000, 3008, -0.5f, 0, 0); /* more packs than the grid's threads */
    gpu_bias_grad(7, 13, 13, 0);
    gpu_bias_grad(1000, 768, 776, 0);
    gpu_bias_grad(1000, 96, 100, 0);
    gpu_bias_grad(100, 64, 64, 1);
    gpu_embedding(3, 5, 13, 4, 0, 4, 3, 0);
    gpu_embedding(4, 64, 768, 50, 0, 50, 3, 0);
    gpu_embedding(3, 31, 64, 20, 0, 20, 3, 1);
    gpu_embedding(2, 300, 40, 3000, 0, 3000, 3, 0);
    gpu_embedding(4, 64, 768, 50, 10, 20, 3, 0); /* a vocabulary block: tokens outside it */
    gpu_embedding(2, 300, 40, 3000, 1000, 1000, 3, 0);
    gpu_embedding(3, 31, 64, 20, 5, 5, 1, 1);
    gpu_embedding(3, 31, 64, 20, 0, 20, 2, 0);
    gpu_cross_entropy(7, 1, (const int[]){37}, 3, 0, 0.0f);
    gpu_cross_entropy(5, 1, (const int[]){64}, 0, 0, 30.0f);
    gpu_cross_entropy(3, 1, (const int[]){37}, 3, 1, 0.0f);
    gpu_cross_entropy(4, 1, (const int[]){50257}, 47, 0, 0.0f);
    gpu_cross_entropy(4, 2, (const int[]){25000, 25257}, 47, 0, 0.0f);
    gpu_cross_entropy(4, 3, (const int[]){16384, 17000, 16873}, 47, 0, 0.0f);
    gpu_cross_entropy(3, 3, (const int[]){37, 41, 22}, 1, 1, 0.0f);
    gpu_cross_entropy(5, 3, (const int[]){1000, 1200, 800}, 0, 0, 90.0f);
    gpu_cross_entropy(65600, 2, (const int[]){3, 5}, 0, 0, 0.0f); /* rows past the 65535 blocks of a grid */
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
    cpu_layernorm_split(7, 1, (const int[]){13}, 0.5f);
    cpu_layernorm_split(7, 2, (const int[]){6, 7}, 0.5f);
    cpu_layernorm_split(9, 3, (const int[]){10, 13, 7}, -0.5f);
    cpu_layernorm_split(64, 3, (const int[]){32, 32, 32}, 1.0f);
    cpu_layernorm_split(16, 3, (const int[]){32, 32, 32}, 10.0f); /* means far from zero: the stated bound */
    cpu_elementwise(1);
    cpu_elementwise(1000);
    cpu_axpby(7, 13, 13, 13, 0.5f, 2.0f, 0);
    cpu_axpby(7, 13, 16, 20, -1.5f, 0.25f, 0);
    cpu_axpby(7, 13, 16, 20, -1.5f, 0.0f, 0); /* dst NaN: not read */
    cpu_axpby(5, 9, 11, 11, 0.75f, -1.0f, 1);
    cpu_bias_grad(7, 13, 13);
    cpu_bias_grad(7, 13, 16);
    cpu_bias_grad(64, 300, 301);
    cpu_embedding(1, 7, 13, 3, 0, 3, 3);
    cpu_embedding(4, 16, 64, 37, 0, 37, 3);
    cpu_embedding(4, 16, 64, 37, 10, 12, 3); /* a vocabulary block: tokens outside it */
    cpu_embedding(3, 8, 5, 20, 15, 5, 1);
    cpu_embedding(3, 8, 5, 20, 0, 20, 2);
    cpu_cross_entropy(7, 1, (const int[]){37}, 3, 0.0f, 1.0f, 0);
    cpu_cross_entropy(5, 1, (const int[]){256}, 0, 40.0f, 0.2f, 0);
    cpu_cross_entropy(1, 1, (const int[]){1}, 2, 0.0f, 1.0f, 0);
    cpu_cross_entropy(7, 2, (const int[]){20, 17}, 3, 0.0f, 1.0f, 1);
    cpu_cross_entropy(5, 3, (const int[]){100, 56, 100}, 0, 40.0f, 0.2f, 0);
    cpu_cross_entropy(3, 3, (const int[]){1, 1, 1}, 1, 0.0f, 1.0f, 0);
    cpu_errors();

    if (tsr_device_count(TSR_DEVICE_CUDA) > 0)
        with_gpu();
    else
        skip(15, "no CUDA device: the CUDA layer kernels are not checked");
    tsr_device_destroy(&cpu);
    return tap_done();
}
