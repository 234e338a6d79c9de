/*
 * test_kernels_gemm: tsr_kernel_gemm (tessera/kernels.h), one rank.
 *   - CPU against a serial double-precision reference: every transpose combination and
 *     epilogue, odd sizes, leading dimensions wider than the rows, beta != 0, alpha = 0,
 *     k = 0, an empty C. A, B, bias, an input aux, and the padding of C and aux keep their
 *     bytes; with beta = 0, C (NaN) is not read.
 *   - Rejected arguments: each a one-line error with the documented code, nothing written.
 *   - With a GPU, CUDA against the CPU device: fp32 within 1e-5; bf16 operands (rounded to
 *     bf16 here, to nearest even, so that both devices multiply the same numbers) with C of
 *     bf16 or fp32 within 1e-2; every epilogue, on shapes where cuBLASLt fuses GELU
 *     (ld_aux a multiple of 8) and where Tessera's kernels do it, k = 0, misaligned
 *     operands, repeats through the plan cache. Skip points where there is no GPU.
 * The error of a result is the largest difference over the largest sum of the magnitudes
 * it adds (|alpha| sum |a b| + |beta c| + |bias|, the scale of float rounding), so that an
 * element that cancels to near zero does not fail a correct product.
 * Inputs are drawn with a fresh seed each run (TSR_TEST_SEED=N repeats a run).
 */
#include <tessera.h>

#include "tap.h"

static uint64_t seed, next_stream;
static tsr_device_t cpu, gpu;
static const char *gpu_missing = "no GPU";

static const char *const epi_names[] = {"NONE", "BIAS", "BIAS_GELU", "DGELU"};
static const char *const tn[2] = {"N", "T"};

/* ---------- bf16 and typed buffers ---------- */

static uint16_t to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return (uint16_t)(u >> 16 | 0x40); /* NaN stays a (quiet) NaN */
    u += 0x7fffu + (u >> 16 & 1);         /* round to nearest, ties to even */
    return (uint16_t)(u >> 16);
}

static float from_bf16(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static float round_bf16(float f)
{
    return from_bf16(to_bf16(f));
}

static void *xmalloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "# out of host memory\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    return p;
}

/* The bytes of n floats stored as type t. */
static void *image_of(const float *x, size_t n, tsr_dtype_t t)
{
    void *img = xmalloc(n * tsr_dtype_size(t));
    for (size_t i = 0; i < n; i++) {
        if (t == TSR_DTYPE_BF16)
            ((uint16_t *)img)[i] = to_bf16(x[i]);
        else
            ((float *)img)[i] = x[i];
    }
    return img;
}

static float *floats_of(const void *img, size_t n, tsr_dtype_t t)
{
    float *x = xmalloc(n * sizeof *x);
    for (size_t i = 0; i < n; i++)
        x[i] = t == TSR_DTYPE_BF16 ? from_bf16(((const uint16_t *)img)[i]) : ((const float *)img)[i];
    return x;
}

/* ---------- cases and their inputs ---------- */

typedef struct gcase {
    int ta, tb, m, n, k;
    int pad; /* added to every leading dimension */
    float alpha, beta;
    tsr_epilogue_t epi;
    int offset; /* device buffers start this many elements in (misaligned pointers) */
} gcase_t;

/* A case's inputs on the host in fp32, bf16-representable where the case asks. Padding,
 * an output aux and C with beta = 0 are NaN. */
typedef struct host {
    int lda, ldb, ldc, ld_aux;
    size_t na, nb, nc, naux;
    float *a, *b, *c0, *bias, *aux0;
} host_t;

static float *random_matrix(int rows, int cols, int ld, float lo, float hi)
{
    float *m = xmalloc((size_t)rows * ld * sizeof *m);
    float *row = xmalloc((size_t)(cols ? cols : 1) * sizeof *row);
    uint64_t stream = next_stream++;
    for (int r = 0; r < rows; r++) {
        tsr_rng_fill_uniform(seed, stream, (uint64_t)r * (uint64_t)cols, (size_t)cols, lo, hi, row);
        for (int c = 0; c < ld; c++)
            m[(size_t)r * ld + c] = c < cols ? row[c] : NAN;
    }
    free(row);
    return m;
}

static void round_all(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = round_bf16(x[i]);
}

static void fill_nan(float *x, size_t n)
{
    for (size_t i = 0; i < n; i++)
        x[i] = NAN;
}

static host_t make_host(const gcase_t *gc, int bf16_ab, int bf16_c)
{
    host_t h;
    int a_rows = gc->ta ? gc->k : gc->m, a_cols = gc->ta ? gc->m : gc->k;
    int b_rows = gc->tb ? gc->n : gc->k, b_cols = gc->tb ? gc->k : gc->n;
    h.lda = (a_cols ? a_cols : 1) + gc->pad;
    h.ldb = (b_cols ? b_cols : 1) + gc->pad;
    h.ldc = (gc->n ? gc->n : 1) + gc->pad;
    h.ld_aux = (gc->n ? gc->n : 1) + gc->pad;
    h.na = (size_t)a_rows * h.lda, h.nb = (size_t)b_rows * h.ldb;
    h.nc = (size_t)gc->m * h.ldc, h.naux = (size_t)gc->m * h.ld_aux;
    h.a = random_matrix(a_rows, a_cols, h.lda, -1.0f, 1.0f);
    h.b = random_matrix(b_rows, b_cols, h.ldb, -1.0f, 1.0f);
    h.c0 = random_matrix(gc->m, gc->n, h.ldc, -1.0f, 1.0f);
    h.bias = random_matrix(1, gc->n, gc->n ? gc->n : 1, -1.0f, 1.0f);
    /* DGELU's aux: pre-activations spanning GELU's curved part. */
    h.aux0 = random_matrix(gc->m, gc->n, h.ld_aux, -3.0f, 3.0f);
    if (gc->beta == 0.0f)
        fill_nan(h.c0, h.nc);
    if (gc->epi != TSR_EPILOGUE_DGELU)
        fill_nan(h.aux0, h.naux);
    if (bf16_ab)
        round_all(h.a, h.na), round_all(h.b, h.nb);
    if (bf16_c)
        round_all(h.c0, h.nc), round_all(h.bias, (size_t)(gc->n ? gc->n : 1)), round_all(h.aux0, h.naux);
    return h;
}

static void free_host(host_t *h)
{
    free(h->a), free(h->b), free(h->c0), free(h->bias), free(h->aux0);
}

/* ---------- the double-precision reference ---------- */

static double gelu_d(double x)
{
    return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}

static double gelu_grad_d(double x)
{
    double t = tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x));
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * sqrt(2.0 / M_PI) * (1.0 + 3.0 * 0.044715 * x * x);
}

/* want_c, want_aux: dense m x n. Returns the scale of the errors: the largest magnitude sum,
 * times 1.2 where GELU or its derivative (|gelu'| <= 1.13) is applied to it. */
static double reference(const gcase_t *gc, const host_t *h, double *want_c, double *want_aux)
{
    double scale = 0;
    for (int i = 0; i < gc->m; i++)
        for (int j = 0; j < gc->n; j++) {
            double sum = 0, abs_sum = 0;
            for (int l = 0; l < gc->k; l++) {
                double x = gc->ta ? h->a[(size_t)l * h->lda + i] : h->a[(size_t)i * h->lda + l];
                double y = gc->tb ? h->b[(size_t)j * h->ldb + l] : h->b[(size_t)l * h->ldb + j];
                sum += x * y;
                abs_sum += fabs(x * y);
            }
            double p = (double)gc->alpha * sum, sc = fabs((double)gc->alpha) * abs_sum;
            if (gc->beta != 0.0f) {
                p += (double)gc->beta * h->c0[(size_t)i * h->ldc + j];
                sc += fabs((double)gc->beta * h->c0[(size_t)i * h->ldc + j]);
            }
            if (gc->epi == TSR_EPILOGUE_BIAS || gc->epi == TSR_EPILOGUE_BIAS_GELU) {
                p += h->bias[j];
                sc += fabs((double)h->bias[j]);
            }
            size_t e = (size_t)i * gc->n + j;
            switch (gc->epi) {
            case TSR_EPILOGUE_NONE:
            case TSR_EPILOGUE_BIAS:
                want_c[e] = p;
                break;
            case TSR_EPILOGUE_BIAS_GELU:
                want_aux[e] = p;
                want_c[e] = gelu_d(p);
                sc *= 1.2;
                break;
            case TSR_EPILOGUE_DGELU:
                want_c[e] = p * gelu_grad_d(h->aux0[(size_t)i * h->ld_aux + j]);
                sc *= 1.2;
                break;
            }
            scale = sc > scale ? sc : scale;
        }
    return scale;
}

/* Largest |got - want| over scale, got m x n with leading dimension ld; NaN gives infinity. */
static double error_of(const float *got, int ld, const double *want, int m, int n, double scale)
{
    double diff = 0;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double d = fabs((double)got[(size_t)i * ld + j] - want[(size_t)i * n + j]);
            if (!(d <= diff))
                diff = isnan(d) ? INFINITY : d;
        }
    return diff / (scale > 1e-30 ? scale : 1e-30);
}

static double *dense_of(const float *x, int ld, int m, int n)
{
    double *d = xmalloc((size_t)m * n * sizeof *d);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++)
            d[(size_t)i * n + j] = x[(size_t)i * ld + j];
    return d;
}

/* ---------- one GEMM on a device ---------- */

typedef struct buffer {
    void *dev;           /* offset + count elements */
    unsigned char *sent; /* their bytes as uploaded */
    size_t total, es;
} buffer_t;

static buffer_t upload(tsr_device_t d, const float *x, size_t count, int offset, tsr_dtype_t t)
{
    buffer_t b = {NULL, NULL, (size_t)offset + count, tsr_dtype_size(t)};
    float *all = xmalloc(b.total * sizeof *all);
    fill_nan(all, (size_t)offset);
    memcpy(all + offset, x, count * sizeof *x);
    b.sent = image_of(all, b.total, t);
    free(all);
    if (tsr_device_alloc(d, TSR_MEM_WORKSPACE, (b.total ? b.total : 1) * b.es, &b.dev) != TSR_OK ||
        tsr_device_copy(d, b.dev, b.sent, b.total * b.es, TSR_COPY_HOST_TO_DEVICE) != TSR_OK) {
        fprintf(stderr, "# device buffer of %zu bytes: %s\n", b.total * b.es, tsr_last_error());
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    return b;
}

static void *at(const buffer_t *b, int offset)
{
    return (unsigned char *)b->dev + (size_t)offset * b->es;
}

/* Download b; whether its bytes outside the rows x cols block (leading dimension ld) at
 * offset are those sent. rows = 0 compares everything. */
static unsigned char *download(tsr_device_t d, buffer_t *b, int offset, int rows, int cols, int ld, int *same)
{
    unsigned char *got = xmalloc(b->total * b->es);
    if (tsr_device_copy(d, got, b->dev, b->total * b->es, TSR_COPY_DEVICE_TO_HOST) != TSR_OK) {
        fprintf(stderr, "# download: %s\n", tsr_last_error());
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    for (size_t e = 0; e < b->total; e++) {
        size_t rel = e - (size_t)offset;
        if (e >= (size_t)offset && rel / (size_t)ld < (size_t)rows && rel % (size_t)ld < (size_t)cols)
            continue;
        *same &= memcmp(got + e * b->es, b->sent + e * b->es, b->es) == 0;
    }
    return got;
}

static void release(tsr_device_t d, buffer_t *b)
{
    tsr_device_free(d, &b->dev);
    free(b->sent);
}

typedef struct result {
    tsr_status_t rc;
    float *c, *aux; /* the whole buffers after the call, from the case's offset on */
    int untouched;  /* A, B, bias, an input aux and the padding of C and aux kept their bytes */
} result_t;

static result_t run_case(tsr_device_t d, const gcase_t *gc, const host_t *h, tsr_dtype_t ab_type,
                         tsr_dtype_t c_type)
{
    result_t r = {TSR_OK, NULL, NULL, 1};
    int off = gc->offset, aux_out = gc->epi == TSR_EPILOGUE_BIAS_GELU;
    buffer_t a = upload(d, h->a, h->na, off, ab_type), b = upload(d, h->b, h->nb, off, ab_type);
    buffer_t c = upload(d, h->c0, h->nc, off, c_type), bias = upload(d, h->bias, (size_t)gc->n, off, c_type);
    buffer_t aux = upload(d, h->aux0, h->naux, off, c_type);
    tsr_gemm_t g = TSR_GEMM_INIT;
    g.trans_a = gc->ta ? TSR_TRANS : TSR_NO_TRANS, g.trans_b = gc->tb ? TSR_TRANS : TSR_NO_TRANS;
    g.m = gc->m, g.n = gc->n, g.k = gc->k, g.alpha = gc->alpha, g.beta = gc->beta;
    g.ab_type = ab_type, g.c_type = c_type;
    g.a = at(&a, off), g.lda = h->lda, g.b = at(&b, off), g.ldb = h->ldb, g.c = at(&c, off), g.ldc = h->ldc;
    g.epilogue = gc->epi, g.bias = at(&bias, off), g.aux = at(&aux, off), g.ld_aux = h->ld_aux;
    r.rc = tsr_kernel_gemm(d, &g);
    if (r.rc == TSR_OK)
        r.rc = tsr_device_sync(d);

    unsigned char *img;
    free(download(d, &a, off, 0, 0, 1, &r.untouched));
    free(download(d, &b, off, 0, 0, 1, &r.untouched));
    free(download(d, &bias, off, 0, 0, 1, &r.untouched));
    img = download(d, &c, off, gc->m, gc->n, h->ldc, &r.untouched);
    r.c = floats_of(img + (size_t)off * c.es, h->nc, c_type);
    free(img);
    img = download(d, &aux, off, aux_out ? gc->m : 0, gc->n, h->ld_aux, &r.untouched);
    r.aux = floats_of(img + (size_t)off * aux.es, h->naux, c_type);
    free(img);
    release(d, &a), release(d, &b), release(d, &c), release(d, &bias), release(d, &aux);
    return r;
}

static void free_result(result_t *r)
{
    free(r->c), free(r->aux);
}

static void describe(char *out, size_t size, const gcase_t *gc, const host_t *h, const char *types)
{
    snprintf(out, size, "gemm %s %s%s m=%d n=%d k=%d lda=%d ldb=%d ldc=%d alpha=%g beta=%g %s%s", types, tn[gc->ta],
             tn[gc->tb], gc->m, gc->n, gc->k, h->lda, h->ldb, h->ldc, (double)gc->alpha, (double)gc->beta,
             epi_names[gc->epi], gc->offset ? " misaligned" : "");
}

/* ---------- CPU against the reference ---------- */

static void cpu_case(gcase_t gc)
{
    char what[160];
    host_t h = make_host(&gc, 0, 0);
    double *want_c = xmalloc((size_t)gc.m * gc.n * sizeof *want_c);
    double *want_aux = xmalloc((size_t)gc.m * gc.n * sizeof *want_aux);
    double scale = reference(&gc, &h, want_c, want_aux);
    result_t r = run_case(cpu, &gc, &h, TSR_DTYPE_F32, TSR_DTYPE_F32);
    describe(what, sizeof what, &gc, &h, "cpu");
    double err = error_of(r.c, h.ldc, want_c, gc.m, gc.n, scale);
    ok(r.rc == TSR_OK && err <= 1e-5, "%s: C within 1e-5 of the reference (%.3g, %s)", what, err,
       tsr_status_name(r.rc));
    if (gc.epi == TSR_EPILOGUE_BIAS_GELU) {
        err = error_of(r.aux, h.ld_aux, want_aux, gc.m, gc.n, scale);
        ok(r.rc == TSR_OK && err <= 1e-5, "%s: aux = P + bias within 1e-5 (%.3g)", what, err);
    }
    ok(r.untouched, "%s: inputs and the padding of C and aux not written", what);
    free_result(&r);
    free(want_c), free(want_aux);
    free_host(&h);
}

static void cpu_cases(void)
{
    static const int shapes[][3] = {{7, 13, 5}, {1, 1, 1}, {16, 24, 32}, {33, 17, 29}, {4, 9, 1}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++)
                for (int e = 0; e < 4; e++) {
                    int beta_ok = e == TSR_EPILOGUE_NONE || e == TSR_EPILOGUE_BIAS;
                    gcase_t v0 = {ta, tb, shapes[s][0], shapes[s][1], shapes[s][2], 0, 1.5f, beta_ok ? -0.75f : 0.0f,
                                  (tsr_epilogue_t)e, 0};
                    gcase_t v1 = {ta, tb, shapes[s][0], shapes[s][1], shapes[s][2], 3, -0.5f, 0.0f,
                                  (tsr_epilogue_t)e, 0};
                    cpu_case(v0);
                    cpu_case(v1); /* beta = 0: C is NaN and must not be read */
                }
    for (int e = 0; e < 4; e++) {
        int beta_ok = e == TSR_EPILOGUE_NONE || e == TSR_EPILOGUE_BIAS;
        /* k = 0: P = 0, so C = beta C (+ bias), gelu(bias), or 0. */
        cpu_case((gcase_t){0, 1, 5, 6, 0, 1, 1.0f, beta_ok ? 0.5f : 0.0f, (tsr_epilogue_t)e, 0});
        cpu_case((gcase_t){1, 0, 5, 6, 0, 2, 1.0f, 0.0f, (tsr_epilogue_t)e, 0});
        /* alpha = 0: no product either. */
        cpu_case((gcase_t){0, 0, 6, 5, 4, 1, 0.0f, beta_ok ? 2.0f : 0.0f, (tsr_epilogue_t)e, 0});
    }
    /* An empty C: nothing happens, successfully. */
    cpu_case((gcase_t){0, 0, 3, 0, 4, 2, 1.0f, 0.0f, TSR_EPILOGUE_BIAS_GELU, 0});
    cpu_case((gcase_t){1, 1, 0, 5, 4, 2, 1.0f, 0.5f, TSR_EPILOGUE_NONE, 0});
}

/* ---------- rejected arguments ---------- */

static void expect_error(tsr_device_t d, const tsr_gemm_t *g, tsr_status_t want, const char *what)
{
    tsr_clear_error();
    tsr_status_t rc = tsr_kernel_gemm(d, g);
    const char *msg = tsr_last_error();
    ok(rc == want && msg && *msg && !strchr(msg, '\n'), "%s %s: %s with a one-line message (got %s: \"%s\")",
       d == cpu ? "cpu" : "cuda", what, tsr_status_name(want), tsr_status_name(rc), msg ? msg : "(null)");
}

static void argument_errors(tsr_device_t d)
{
    enum { N = 4, LEN = 64 };
    float init[LEN];
    for (int i = 0; i < LEN; i++)
        init[i] = (float)i - 7.5f;
    void *a = NULL, *b = NULL, *c = NULL, *bias = NULL, *aux = NULL;
    tsr_device_alloc(d, TSR_MEM_WORKSPACE, sizeof init, &a);
    tsr_device_alloc(d, TSR_MEM_WORKSPACE, sizeof init, &b);
    tsr_device_alloc(d, TSR_MEM_WORKSPACE, sizeof init, &c);
    tsr_device_alloc(d, TSR_MEM_WORKSPACE, sizeof init, &bias);
    tsr_device_alloc(d, TSR_MEM_WORKSPACE, sizeof init, &aux);
    void *bufs[] = {a, b, c, bias, aux};
    for (int i = 0; i < 5; i++)
        tsr_device_copy(d, bufs[i], init, sizeof init, TSR_COPY_HOST_TO_DEVICE);

    tsr_gemm_t base = TSR_GEMM_INIT, g;
    base.m = base.n = base.k = N;
    base.a = a, base.lda = N, base.b = b, base.ldb = N, base.c = c, base.ldc = N;
    base.bias = bias, base.aux = aux, base.ld_aux = N;

    tsr_clear_error();
    is_int(tsr_kernel_gemm(d, NULL), TSR_ERR_INVALID_ARG, "%s gemm with a NULL description fails",
           d == cpu ? "cpu" : "cuda");
    g = base, g.c_type = TSR_DTYPE_BF16;
    expect_error(d, &g, TSR_ERR_INVALID_ARG, "f32 operands with a bf16 C");
    g = base, g.ab_type = TSR_DTYPE_F64, g.c_type = TSR_DTYPE_F64;
    expect_error(d, &g, TSR_ERR_INVALID_ARG, "f64 operands");
    if (d == cpu) {
        g = base, g.ab_type = g.c_type = TSR_DTYPE_BF16;
        expect_error(d, &g, TSR_ERR_NOT_SUPPORTED, "bf16 operands and C on the CPU");
        g = base, g.ab_type = TSR_DTYPE_BF16;
        expect_error(d, &g, TSR_ERR_NOT_SUPPORTED, "bf16 operands with an f32 C on the CPU");
    }
    g = base, g.trans_a = (tsr_trans_t)2;
    expect_error(d, &g, TSR_ERR_INVALID_ARG, "trans_a = 2");
    g = base, g.epilogue = (tsr_epilogue_t)7;
    expect_error(d, &g, TSR_ERR_INVALID_ARG, "epilogue 7");
    g = base, g.m = -1;
    expect_error(d, &g, TSR_ERR_INVALID_ARG, "m = -1");
    g = base, g.k = N + 1, g.lda = N;
    expect_error(d, &g, TSR_ERR_INVALID_ARG, "lda < k, A not transposed");
    g = base, g.trans_a = TSR_TRANS, g.m = N + 1, g.lda = N, g.ldc = N + 1;
    expect_error(d, &g, TSR_ERR_INVALID_ARG, "lda < m, A transposed");
    g = base, g.n = N + 1, g.ldb = N, g.ldc = N + 1;
    expect_error(d, &g, TSR_ERR_INVALID_ARG, "ldb < n, B not transposed");
    g = base, g.trans_b = TSR_TRANS, g.k = N + 1, g.lda = N + 1, g.ldb = N;
    expect_error(d, &g, TSR_ERR_INVALID_ARG, "ldb < k, B transposed");
    g = base, g.ldc = N - 1;
    expect_error(d, &g, TSR_ERR_INVALID_ARG, "ldc < n");
    g = base, g.c = NULL;
    expect_error(d, &g, TSR_ERR_INVALID_ARG, "C NULL");
    g = base, g.a = NULL;
    expect_error(d, &g, TSR_ERR_INVALID_ARG, "A NULL with k > 0");
    g = base, g.epilogue = TSR_EPILOGUE_BIAS, g.bias = NULL;
    expect_error(d, &g, TSR_ERR_INVALID_ARG, "BIAS without a bias");
    g = base, g.epilogue = TSR_EPILOGUE_BIAS_GELU, g.bias = NULL;
    expect_error(d, &g, TSR_ERR_INVALID_ARG, "BIAS_GELU without a bias");
    g = base, g.epilogue = TSR_EPILOGUE_BIAS_GELU, g.aux = NULL;
    expect_error(d, &g, TSR_ERR_INVALID_ARG, "BIAS_GELU without aux");
    g = base, g.epilogue = TSR_EPILOGUE_DGELU, g.aux = NULL;
    expect_error(d, &g, TSR_ERR_INVALID_ARG, "DGELU without aux");
    g = base, g.epilogue = TSR_EPILOGUE_BIAS_GELU, g.ld_aux = N - 1;
    expect_error(d, &g, TSR_ERR_INVALID_ARG, "BIAS_GELU with ld_aux < n");
    g = base, g.epilogue = TSR_EPILOGUE_BIAS_GELU, g.beta = 0.5f;
    expect_error(d, &g, TSR_ERR_INVALID_ARG, "BIAS_GELU with beta = 0.5");
    g = base, g.epilogue = TSR_EPILOGUE_DGELU, g.beta = 1.0f;
    expect_error(d, &g, TSR_ERR_INVALID_ARG, "DGELU with beta = 1");
    tsr_clear_error();

    int same = 1;
    float back[LEN];
    for (int i = 0; i < 5; i++) {
        tsr_device_copy(d, back, bufs[i], sizeof back, TSR_COPY_DEVICE_TO_HOST);
        same &= memcmp(back, init, sizeof init) == 0;
    }
    ok(same, "%s: the rejected GEMMs wrote nothing", d == cpu ? "cpu" : "cuda");
    for (int i = 0; i < 5; i++)
        tsr_device_free(d, &bufs[i]);
}

/* ---------- CUDA against the CPU ---------- */

static void gpu_case(gcase_t gc, tsr_dtype_t ab_type, tsr_dtype_t c_type)
{
    int points = 2 + (gc.epi == TSR_EPILOGUE_BIAS_GELU);
    if (!gpu) {
        skip(points, gpu_missing);
        return;
    }
    char what[160], types[32];
    int bf16 = ab_type == TSR_DTYPE_BF16;
    double tol = bf16 ? 1e-2 : 1e-5;
    snprintf(types, sizeof types, "cuda %s/%s", tsr_dtype_name(ab_type), tsr_dtype_name(c_type));
    host_t h = make_host(&gc, bf16, c_type == TSR_DTYPE_BF16);
    double *want_c = xmalloc((size_t)gc.m * gc.n * sizeof *want_c);
    double *want_aux = xmalloc((size_t)gc.m * gc.n * sizeof *want_aux);
    double scale = reference(&gc, &h, want_c, want_aux);
    result_t rg = run_case(gpu, &gc, &h, ab_type, c_type);
    result_t rc = run_case(cpu, &gc, &h, TSR_DTYPE_F32, TSR_DTYPE_F32);
    describe(what, sizeof what, &gc, &h, types);

    double *cpu_c = dense_of(rc.c, h.ldc, gc.m, gc.n);
    double err = error_of(rg.c, h.ldc, cpu_c, gc.m, gc.n, scale);
    ok(rg.rc == TSR_OK && rc.rc == TSR_OK && err <= tol, "%s: C equals the CPU's within %g (%.3g; %s)", what, tol,
       err, tsr_status_name(rg.rc));
    if (rg.rc != TSR_OK)
        diag("%s", tsr_last_error());
    if (gc.epi == TSR_EPILOGUE_BIAS_GELU) {
        double *cpu_aux = dense_of(rc.aux, h.ld_aux, gc.m, gc.n);
        err = error_of(rg.aux, h.ld_aux, cpu_aux, gc.m, gc.n, scale);
        ok(rg.rc == TSR_OK && err <= tol, "%s: aux equals the CPU's within %g (%.3g)", what, tol, err);
        free(cpu_aux);
    }
    ok(rg.untouched, "%s: inputs and the padding of C and aux not written", what);
    free(cpu_c);
    free_result(&rg), free_result(&rc);
    free(want_c), free(want_aux);
    free_host(&h);
}

static void gpu_cases(void)
{
    static const tsr_dtype_t types[][2] = {
        {TSR_DTYPE_F32, TSR_DTYPE_F32}, {TSR_DTYPE_BF16, TSR_DTYPE_BF16}, {TSR_DTYPE_BF16, TSR_DTYPE_F32}};
    /* With a bf16 C, 64x48 and 33x24 (ld_aux 48 and 24) take cuBLASLt's fused GELU, 7x13
     * (ld_aux 16, not a multiple of 8) Tessera's kernels; beta != 0 where allowed. */
    static const gcase_t shapes[] = {
        {0, 0, 7, 13, 5, 3, 1.25f, -0.5f, TSR_EPILOGUE_NONE, 0},
        {0, 0, 64, 48, 96, 0, 1.0f, 1.0f, TSR_EPILOGUE_NONE, 0},
        {0, 0, 33, 24, 41, 0, -0.75f, 0.0f, TSR_EPILOGUE_NONE, 0},
    };
    for (size_t t = 0; t < sizeof types / sizeof types[0]; t++) {
        for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
            for (int ta = 0; ta < 2; ta++)
                for (int tb = 0; tb < 2; tb++)
                    for (int e = 0; e < 4; e++) {
                        gcase_t gc = shapes[s];
                        gc.ta = ta, gc.tb = tb, gc.epi = (tsr_epilogue_t)e;
                        if (e == TSR_EPILOGUE_BIAS_GELU || e == TSR_EPILOGUE_DGELU)
                            gc.beta = 0.0f;
                        gpu_case(gc, types[t][0], types[t][1]);
                    }
        for (int e = 0; e < 4; e++) {
            int beta_ok = e == TSR_EPILOGUE_NONE || e == TSR_EPILOGUE_BIAS;
            gpu_case((gcase_t){0, 1, 5, 8, 0, 1, 1.0f, beta_ok ? 0.5f : 0.0f, (tsr_epilogue_t)e, 0}, types[t][0],
                     types[t][1]);
            /* Operands one element off their allocation's alignment. */
            gpu_case((gcase_t){0, 1, 64, 48, 96, 0, 1.0f, 0.0f, (tsr_epilogue_t)e, 1}, types[t][0], types[t][1]);
            /* The same GEMM twice, new data each time: the second runs on the cached plan. */
            for (int rep = 0; rep < 2; rep++)
                gpu_case((gcase_t){1, 0, 32, 16, 24, 0, 1.0f, 0.0f, (tsr_epilogue_t)e, 0}, types[t][0],
                         types[t][1]);
        }
    }
    if (!gpu) {
        skip(2, gpu_missing);
        return;
    }
    argument_errors(gpu);
}

int main(int argc, char **argv)
{
    tap_init(&argc, &argv, "1");
    seed = tap_seed();
    if (tsr_device_create(TSR_DEVICE_CPU, 0, &cpu) != TSR_OK) {
        ok(0, "the CPU device opens: %s", tsr_last_error());
        return tap_done();
    }
    if (!tsr_device_kind_built(TSR_DEVICE_CUDA))
        gpu_missing = "no CUDA backend in this build";
    else if (tsr_device_count(TSR_DEVICE_CUDA) > 0 && tsr_device_create(TSR_DEVICE_CUDA, 0, &gpu) != TSR_OK)
        ok(0, "the CUDA device opens: %s", tsr_last_error());

    cpu_cases();
    argument_errors(cpu);
    gpu_cases();

    tsr_device_destroy(&gpu);
    tsr_device_destroy(&cpu);
    return tap_done();
}
