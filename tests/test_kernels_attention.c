/*
 * test_kernels_attention: causal multi-head attention, tsr_kernel_attention_forward() and
 * tsr_kernel_attention_backward().
 *   - CPU, fp32: o, lse, dq, dk and dv against a serial reference in double that builds the
 *     whole T×T matrices, for seqs 2, T 1, 7, 33, 64, heads 1 to 3, hd 8, 16, 32; q, k and v
 *     are column blocks of one packed buffer (ld_in = 3 heads hd + padding), o and the
 *     gradients have padding columns that must stay untouched.
 *   - The reference's backward, and the CPU kernel's, against central finite differences of
 *     the reference forward in double, on a tiny case.
 *   - Argument errors: one-line errors, nothing written.
 *   - With a GPU: the CUDA kernels against the CPU device, fp32 and bf16 (on inputs rounded
 *     to bf16, so both sides see the same numbers), hd 16, 32, 64, 128 and T 1, 17, 64, 130,
 *     1024. Without one these points are skipped.
 *
 * Error measures. Each output element is a sum; its "terms" are the same sum of absolute
 * values (Σ_j p_ij |v_j| for o, p_ij (|dp_ij| + |delta_i|) for the softmax gradient, and so
 * on, from the double reference), the scale of rounding errors, as in test_device_cuda's
 * GEMMs. fp32: max |got - want| / max |terms| over an array, at most 1e-5. bf16: norm-wise,
 * ||got - want||_2 / max(||want||_2, ||terms||_2 / 100), at most 1e-2; the floor matters only
 * for arrays that vanish, as dq and dk do at T = 1 (one key: the softmax is constant).
 * Inputs are drawn with a fresh seed each run (TSR_TEST_SEED=N repeats a run).
 */
#include <tessera.h>

#include "tap.h"

static uint64_t seed, next_stream;

/* ---------------------------------------------------------------------------------------- */
/* Problems: a packed q|k|v buffer and an upstream gradient, with NaN in the padding columns. */

typedef struct shape {
    int seqs, T, heads, hd, pad_in, pad_o;
} shape_t;

typedef struct problem {
    shape_t sh;
    int C, ld_in, ld_o;
    size_t rows, n_in, n_o, n_stat;
    float *qkv;  /* rows × ld_in: q in columns [0, C), k in [C, 2C), v in [2C, 3C) */
    float *dout; /* rows × ld_o */
} problem_t;

static void fill_rows(float *m, size_t rows, int cols, int ld, float amp_first, int first_cols, float amp)
{
    float *row = malloc((size_t)cols * sizeof *row);
    uint64_t stream = next_stream++;
    for (size_t r = 0; r < rows; r++) {
        tsr_rng_fill_uniform(seed, stream, (uint64_t)r * (uint64_t)cols, (size_t)cols, -1.0f, 1.0f, row);
        for (int c = 0; c < ld; c++)
            m[r * ld + c] = c < cols ? row[c] * (c < first_cols ? amp_first : amp) : NAN;
    }
    free(row);
}

static uint16_t to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    if ((u & 0x7fffffffu) > 0x7f800000u)
        return 0x7fc0;
    u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest even */
    return (uint16_t)(u >> 16);
}

static float from_bf16(uint16_t b)
{
    uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* q is drawn 3 times larger than k and v so that scores have a spread of about 1 (a softmax
 * that is neither flat nor one-hot). With round_bf16 every value is representable in bf16. */
static problem_t make_problem(shape_t sh, int round_bf16)
{
    problem_t p = {sh, sh.heads * sh.hd, 0, 0, 0, 0, 0, 0, NULL, NULL};
    p.ld_in = 3 * p.C + sh.pad_in;
    p.ld_o = p.C + sh.pad_o;
    p.rows = (size_t)sh.seqs * sh.T;
    p.n_in = p.rows * p.ld_in;
    p.n_o = p.rows * p.ld_o;
    p.n_stat = (size_t)sh.seqs * sh.heads * sh.T;
    p.qkv = malloc((p.n_in ? p.n_in : 1) * sizeof(float));
    p.dout = malloc((p.n_o ? p.n_o : 1) * sizeof(float));
    fill_rows(p.qkv, p.rows, 3 * p.C, p.ld_in, 3.0f, p.C, 1.0f);
    fill_rows(p.dout, p.rows, p.C, p.ld_o, 1.0f, 0, 1.0f);
    if (round_bf16) {
        for (size_t i = 0; i < p.n_in; i++)
            p.qkv[i] = from_bf16(to_bf16(p.qkv[i]));
        for (size_t i = 0; i < p.n_o; i++)
            p.dout[i] = from_bf16(to_bf16(p.dout[i]));
    }
    return p;
}

static void free_problem(problem_t *p)
{
    free(p->qkv);
    free(p->dout);
}

/* ---------------------------------------------------------------------------------------- */
/* The serial reference in double. Outputs are compact: o, dq, dk, dv rows × C (head h in
 * columns h hd..), lse [(s heads + h) T + t]; each with the size of its terms (see above). */

typedef struct reference {
    double *o, *lse, *dq, *dk, *dv;
    double *o_mag, *lse_mag, *dq_mag, *dk_mag, *dv_mag;
} reference_t;

static double *dalloc(size_t n)
{
    double *x = calloc(n ? n : 1, sizeof *x);
    if (!x) {
        fprintf(stderr, "# out of memory\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    return x;
}

static reference_t ref_alloc(const problem_t *p)
{
    size_t n = p->rows * p->C;
    reference_t r = {dalloc(n), dalloc(p->n_stat), dalloc(n), dalloc(n), dalloc(n),
                     dalloc(n), dalloc(p->n_stat), dalloc(n), dalloc(n), dalloc(n)};
    return r;
}

static void ref_free(reference_t *r)
{
    double **all[] = {&r->o, &r->lse, &r->dq, &r->dk, &r->dv, &r->o_mag, &r->lse_mag, &r->dq_mag, &r->dk_mag, &r->dv_mag};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        free(*all[i]);
        *all[i] = NULL;
    }
}

/* qkv (rows × ld_in) and dout (rows × ld_o) in double; the backward only when dout. */
static void reference(const shape_t *sh, const double *qkv, int ld_in, const double *dout, int ld_o, reference_t *r)
{
    const int T = sh->T, hd = sh->hd, C = sh->heads * hd;
    const double scale = 1.0 / sqrt((double)hd);
    double *S = dalloc((size_t)T * T), *P = dalloc((size_t)T * T), *dP = dalloc((size_t)T * T);
    double *dPmag = dalloc((size_t)T * T), *delta = dalloc((size_t)T), *delta_mag = dalloc((size_t)T);
    for (int s = 0; s < sh->seqs; s++)
        for (int h = 0; h < sh->heads; h++) {
#define Q(t, e) qkv[((size_t)s * T + (t)) * ld_in + (size_t)h * hd + (e)]
#define K(t, e) qkv[((size_t)s * T + (t)) * ld_in + C + (size_t)h * hd + (e)]
#define V(t, e) qkv[((size_t)s * T + (t)) * ld_in + 2 * C + (size_t)h * hd + (e)]
#define DO(t, e) dout[((size_t)s * T + (t)) * ld_o + (size_t)h * hd + (e)]
#define OUT(a, t, e) (a)[((size_t)s * T + (t)) * C + (size_t)h * hd + (e)]
            const size_t stat = ((size_t)s * sh->heads + h) * T;
            for (int i = 0; i < T; i++) {
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j <= i; j++) {
                    double dot = 0;
                    for (int e = 0; e < hd; e++)
                        dot += Q(i, e) * K(j, e);
                    S[(size_t)i * T + j] = dot * scale;
                    mx = fmax(mx, dot * scale);
                }
                for (int j = 0; j <= i; j++)
                    sum += exp(S[(size_t)i * T + j] - mx);
                for (int j = 0; j < T; j++)
                    P[(size_t)i * T + j] = j <= i ? exp(S[(size_t)i * T + j] - mx) / sum : 0.0;
                r->lse[stat + i] = mx + log(sum);
                r->lse_mag[stat + i] = fabs(mx) + log(i + 1.0);
                for (int e = 0; e < hd; e++) {
                    double o = 0, mag = 0;
                    for (int j = 0; j <= i; j++) {
                        o += P[(size_t)i * T + j] * V(j, e);
                        mag += P[(size_t)i * T + j] * fabs(V(j, e));
                    }
                    OUT(r->o, i, e) = o;
                    OUT(r->o_mag, i, e) = mag;
                }
            }
            if (!dout)
                continue;
            for (int i = 0; i < T; i++) {
                delta[i] = delta_mag[i] = 0;
                for (int e = 0; e < hd; e++) {
                    delta[i] += DO(i, e) * OUT(r->o, i, e);
                    delta_mag[i] += fabs(DO(i, e)) * OUT(r->o_mag, i, e);
                }
                for (int j = 0; j <= i; j++) {
                    double dot = 0, mag = 0;
                    for (int e = 0; e < hd; e++) {
                        dot += DO(i, e) * V(j, e);
                        mag += fabs(DO(i, e) * V(j, e));
                    }
                    dP[(size_t)i * T + j] = dot;
                    dPmag[(size_t)i * T + j] = mag;
                }
            }
            /* dS = P (dP - delta), its terms P (|dP| + |delta|); dq = scale dS k, dk = scale dSᵀ q,
             * dv = Pᵀ dO. */
            for (int t = 0; t < T; t++)
                for (int e = 0; e < hd; e++) {
                    double dq = 0, dqm = 0, dk = 0, dkm = 0, dv = 0, dvm = 0;
                    for (int j = 0; j <= t; j++) {
                        double pij = P[(size_t)t * T + j];
                        double ds = pij * (dP[(size_t)t * T + j] - delta[t]);
                        double dsm = pij * (dPmag[(size_t)t * T + j] + fabs(delta[t]));
                        dq += ds * K(j, e);
                        dqm += dsm * fabs(K(j, e));
                    }
                    for (int i = t; i < T; i++) {
                        double pit = P[(size_t)i * T + t];
                        double ds = pit * (dP[(size_t)i * T + t] - delta[i]);
                        double dsm = pit * (dPmag[(size_t)i * T + t] + fabs(delta[i]));
                        dk += ds * Q(i, e);
                        dkm += dsm * fabs(Q(i, e));
                        dv += pit * DO(i, e);
                        dvm += pit * fabs(DO(i, e));
                    }
                    OUT(r->dq, t, e) = dq * scale;
                    OUT(r->dq_mag, t, e) = dqm * scale;
                    OUT(r->dk, t, e) = dk * scale;
                    OUT(r->dk_mag, t, e) = dkm * scale;
                    OUT(r->dv, t, e) = dv;
                    OUT(r->dv_mag, t, e) = dvm;
                }
#undef Q
#undef K
#undef V
#undef DO
#undef OUT
        }
    free(S), free(P), free(dP), free(dPmag), free(delta), free(delta_mag);
}

static double *to_double(const float *x, size_t n)
{
    double *d = dalloc(n);
    for (size_t i = 0; i < n; i++)
        d[i] = x[i];
    return d;
}

static void reference_of(const problem_t *p, int backward, reference_t *r)
{
    double *qkv = to_double(p->qkv, p->n_in), *dout = to_double(p->dout, p->n_o);
    reference(&p->sh, qkv, p->ld_in, backward ? dout : NULL, p->ld_o, r);
    free(qkv);
    free(dout);
}

/* ---------------------------------------------------------------------------------------- */
/* Error measures (see the file comment). got: rows × ld from column off; want, mag compact. */

static double err_max(const float *got, int ld, int off, const double *want, const double *mag, size_t rows, int C)
{
    double diff = 0, scale = 0;
    for (size_t r = 0; r < rows; r++)
        for (int c = 0; c < C; c++) {
            double d = fabs((double)got[r * ld + off + c] - want[r * C + c]);
            diff = (d > diff || d != d) ? d : diff;
            scale = fmax(scale, mag[r * C + c]);
        }
    return diff / (scale > 1e-30 ? scale : 1e-30);
}

static double err_norm(const float *got, int ld, int off, const double *want, const double *mag, size_t rows, int C)
{
    double diff = 0, norm = 0, terms = 0;
    for (size_t r = 0; r < rows; r++)
        for (int c = 0; c < C; c++) {
            double d = (double)got[r * ld + off + c] - want[r * C + c];
            diff += d * d;
            norm += want[r * C + c] * want[r * C + c];
            terms += mag[r * C + c] * mag[r * C + c];
        }
    double den = fmax(sqrt(norm), sqrt(terms) / 100);
    return sqrt(diff) / (den > 1e-30 ? den : 1e-30);
}

/* The values of a device run, as fp32 in the layouts of the problem. */
typedef struct result {
    float *o, *lse, *dqkv;
} result_t;

/* One test point for each of o, lse, dq, dk, dv of a run against wanted values. */
static void compare(const char *what, const problem_t *p, const result_t *got, const reference_t *want,
                    const reference_t *mag, int bf16)
{
    const shape_t *sh = &p->sh;
    double (*err)(const float *, int, int, const double *, const double *, size_t, int) = bf16 ? err_norm : err_max;
    const double tol = bf16 ? 1e-2 : 1e-5;
    const char *measure = bf16 ? "norm-wise" : "max";
    struct {
        const char *name;
        const float *m;
        int ld, off;
        const double *w, *g;
        size_t rows;
        int cols;
    } arrays[] = {
        {"o", got->o, p->ld_o, 0, want->o, mag->o_mag, p->rows, p->C},
        {"lse", got->lse, 1, 0, want->lse, mag->lse_mag, p->n_stat, 1},
        {"dq", got->dqkv, p->ld_in, 0, want->dq, mag->dq_mag, p->rows, p->C},
        {"dk", got->dqkv, p->ld_in, p->C, want->dk, mag->dk_mag, p->rows, p->C},
        {"dv", got->dqkv, p->ld_in, 2 * p->C, want->dv, mag->dv_mag, p->rows, p->C},
    };
    for (size_t a = 0; a < sizeof arrays / sizeof arrays[0]; a++) {
        double e = err(arrays[a].m, arrays[a].ld, arrays[a].off, arrays[a].w, arrays[a].g, arrays[a].rows,
                       arrays[a].cols);
        ok(e <= tol, "%s seqs=%d T=%d heads=%d hd=%d ld_in=%d ld_o=%d: %s within %g (%s %.3g)", what, sh->seqs, sh->T,
           sh->heads, sh->hd, p->ld_in, p->ld_o, arrays[a].name, tol, measure, e);
    }
}

/* Padding columns still hold the bytes they were given (sentinel, es bytes an element). */
static int padding_kept(const unsigned char *m, size_t rows, int ld, int cols, size_t es, const unsigned char *sentinel)
{
    for (size_t r = 0; r < rows; r++)
        for (int c = cols; c < ld; c++)
            if (memcmp(m + (r * ld + c) * es, sentinel, es) != 0)
                return 0;
    return 1;
}

/* ---------------------------------------------------------------------------------------- */
/* Runs on a device: host fp32 in, host fp32 out; dt BF16 converts on the way. */

static void *dev_alloc(tsr_device_t d, size_t bytes)
{
    void *x = NULL;
    if (tsr_device_alloc(d, TSR_MEM_WORKSPACE, bytes ? bytes : 1, &x) != TSR_OK || !x) {
        fprintf(stderr, "# alloc of %zu bytes failed: %s\n", bytes, tsr_last_error());
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    return x;
}

static void *to_dt(const float *x, size_t n, tsr_dtype_t dt)
{
    void *out = malloc(n ? n * tsr_dtype_size(dt) : 1);
    if (dt == TSR_DTYPE_BF16)
        for (size_t i = 0; i < n; i++)
            ((uint16_t *)out)[i] = to_bf16(x[i]);
    else
        memcpy(out, x, n * sizeof(float));
    return out;
}

static void from_dt(const void *x, size_t n, tsr_dtype_t dt, float *out)
{
    if (dt == TSR_DTYPE_BF16)
        for (size_t i = 0; i < n; i++)
            out[i] = from_bf16(((const uint16_t *)x)[i]);
    else
        memcpy(out, x, n * sizeof(float));
}

static const float SENTINEL = -1024.0f; /* exact in bf16 */

/* Forward then backward on d; *pad_ok says whether the padding of o and of the gradients is intact. */
static tsr_status_t run_on(tsr_device_t d, tsr_dtype_t dt, const problem_t *p, result_t *res, int *pad_ok)
{
    const shape_t *sh = &p->sh;
    const size_t es = tsr_dtype_size(dt), C = (size_t)p->C;
    float *sent_o = malloc(p->n_o * sizeof(float)), *sent_in = malloc(p->n_in * sizeof(float));
    for (size_t i = 0; i < p->n_o; i++)
        sent_o[i] = SENTINEL;
    for (size_t i = 0; i < p->n_in; i++)
        sent_in[i] = SENTINEL;
    unsigned char *h_qkv = to_dt(p->qkv, p->n_in, dt), *h_dout = to_dt(p->dout, p->n_o, dt);
    unsigned char *h_o = to_dt(sent_o, p->n_o, dt), *h_g = to_dt(sent_in, p->n_in, dt);
    unsigned char sentinel[4];
    memcpy(sentinel, h_o, es);
    unsigned char *qkv = dev_alloc(d, p->n_in * es), *dout = dev_alloc(d, p->n_o * es);
    unsigned char *o = dev_alloc(d, p->n_o * es), *g = dev_alloc(d, p->n_in * es);
    float *lse = dev_alloc(d, p->n_stat * sizeof(float)), *delta = dev_alloc(d, p->n_stat * sizeof(float));
    tsr_status_t rc = tsr_device_copy(d, qkv, h_qkv, p->n_in * es, TSR_COPY_HOST_TO_DEVICE);
    rc = rc ? rc : tsr_device_copy(d, dout, h_dout, p->n_o * es, TSR_COPY_HOST_TO_DEVICE);
    rc = rc ? rc : tsr_device_copy(d, o, h_o, p->n_o * es, TSR_COPY_HOST_TO_DEVICE);
    rc = rc ? rc : tsr_device_copy(d, g, h_g, p->n_in * es, TSR_COPY_HOST_TO_DEVICE);
    rc = rc ? rc
            : tsr_kernel_attention_forward(d, dt, sh->seqs, sh->T, sh->heads, sh->hd, qkv, qkv + C * es,
                                           qkv + 2 * C * es, p->ld_in, o, p->ld_o, lse);
    rc = rc ? rc
            : tsr_kernel_attention_backward(d, dt, sh->seqs, sh->T, sh->heads, sh->hd, qkv, qkv + C * es,
                                            qkv + 2 * C * es, p->ld_in, o, dout, p->ld_o, lse, delta, g, g + C * es,
                                            g + 2 * C * es);
    rc = rc ? rc : tsr_device_sync(d);
    rc = rc ? rc : tsr_device_copy(d, h_o, o, p->n_o * es, TSR_COPY_DEVICE_TO_HOST);
    rc = rc ? rc : tsr_device_copy(d, h_g, g, p->n_in * es, TSR_COPY_DEVICE_TO_HOST);
    rc = rc ? rc : tsr_device_copy(d, res->lse, lse, p->n_stat * sizeof(float), TSR_COPY_DEVICE_TO_HOST);
    if (rc != TSR_OK)
        diag("run failed: %s", tsr_last_error());
    from_dt(h_o, p->n_o, dt, res->o);
    from_dt(h_g, p->n_in, dt, res->dqkv);
    *pad_ok = padding_kept(h_o, p->rows, p->ld_o, p->C, es, sentinel) &&
              padding_kept(h_g, p->rows, p->ld_in, 3 * p->C, es, sentinel);
    void *ptrs[] = {qkv, dout, o, g, lse, delta};
    for (size_t i = 0; i < sizeof ptrs / sizeof ptrs[0]; i++)
        tsr_device_free(d, &ptrs[i]);
    free(sent_o), free(sent_in), free(h_qkv), free(h_dout), free(h_o), free(h_g);
    return rc;
}

static result_t result_alloc(const problem_t *p)
{
    result_t r = {malloc((p->n_o ? p->n_o : 1) * sizeof(float)), malloc((p->n_stat ? p->n_stat : 1) * sizeof(float)),
                  malloc((p->n_in ? p->n_in : 1) * sizeof(float))};
    return r;
}

static void result_free(result_t *r)
{
    free(r->o), free(r->lse), free(r->dqkv);
}

/* ---------------------------------------------------------------------------------------- */
/* CPU against the double reference. */

static void cpu_case(tsr_device_t cpu, shape_t sh)
{
    problem_t p = make_problem(sh, 0);
    reference_t ref = ref_alloc(&p);
    reference_of(&p, 1, &ref);
    result_t got = result_alloc(&p);
    int pad_ok = 0;
    tsr_status_t rc = run_on(cpu, TSR_DTYPE_F32, &p, &got, &pad_ok);
    is_int(rc, TSR_OK, "CPU seqs=%d T=%d heads=%d hd=%d: forward and backward succeed", sh.seqs, sh.T, sh.heads, sh.hd);
    compare("CPU", &p, &got, &ref, &ref, 0);
    ok(pad_ok, "CPU seqs=%d T=%d heads=%d hd=%d: padding columns of o and of dq|dk|dv untouched", sh.seqs, sh.T,
       sh.heads, sh.hd);
    result_free(&got);
    ref_free(&ref);
    free_problem(&p);
}

/* Central differences of L = Σ dout∘o with the reference forward in double, against the
 * reference backward and the CPU kernel's. */
static void finite_differences(tsr_device_t cpu)
{
    const shape_t sh = {1, 5, 2, 8, 3, 1};
    problem_t p = make_problem(sh, 0);
    reference_t ref = ref_alloc(&p), tmp = ref_alloc(&p);
    reference_of(&p, 1, &ref);
    double *qkv = to_double(p.qkv, p.n_in), *dout = to_double(p.dout, p.n_o);
    double *fd = dalloc(p.rows * 3 * p.C);
    const double step = 1e-5;
    for (size_t r = 0; r < p.rows; r++)
        for (int c = 0; c < 3 * p.C; c++) {
            double loss[2], x = qkv[r * p.ld_in + c];
            for (int side = 0; side < 2; side++) {
                qkv[r * p.ld_in + c] = x + (side ? -step : step);
                reference(&sh, qkv, p.ld_in, NULL, p.ld_o, &tmp);
                loss[side] = 0;
                for (size_t t = 0; t < p.rows; t++)
                    for (int e = 0; e < p.C; e++)
                        loss[side] += dout[t * p.ld_o + e] * tmp.o[t * p.C + e];
            }
            qkv[r * p.ld_in + c] = x;
            fd[r * 3 * p.C + c] = (loss[0] - loss[1]) / (2 * step);
        }
    /* The analytic gradients in the same packed layout. */
    double maxg = 0, err_ref = 0;
    const double *grads[3] = {ref.dq, ref.dk, ref.dv};
    for (size_t r = 0; r < p.rows; r++)
        for (int c = 0; c < 3 * p.C; c++) {
            double a = grads[c / p.C][r * p.C + c % p.C], f = fd[r * 3 * p.C + c];
            maxg = fmax(maxg, fabs(f));
            err_ref = fmax(err_ref, fabs(a - f));
        }
    ok(maxg > 0 && err_ref / maxg <= 1e-7, "reference backward equals finite differences (max error %.3g of max %.3g)",
       err_ref, maxg);

    result_t got = result_alloc(&p);
    int pad_ok = 0;
    tsr_status_t rc = run_on(cpu, TSR_DTYPE_F32, &p, &got, &pad_ok);
    double err_cpu = 0;
    for (size_t r = 0; r < p.rows; r++)
        for (int c = 0; c < 3 * p.C; c++)
            err_cpu = fmax(err_cpu, fabs((double)got.dqkv[r * p.ld_in + c] - fd[r * 3 * p.C + c]));
    ok(rc == TSR_OK && maxg > 0 && err_cpu / maxg <= 1e-5,
       "CPU kernel backward equals finite differences within 1e-5 (max error %.3g of max %.3g)", err_cpu, maxg);
    result_free(&got);
    free(qkv), free(dout), free(fd);
    ref_free(&ref);
    ref_free(&tmp);
    free_problem(&p);
}

/* ---------------------------------------------------------------------------------------- */
/* Argument errors. */

static int one_line(const char *s)
{
    return s && *s && !strchr(s, '\n');
}

static int contains(const char *s, const char *word)
{
    return s && strstr(s, word) != NULL;
}

static void argument_errors(tsr_device_t cpu, tsr_device_t gpu)
{
    enum { T = 4, H = 2, HD = 8, C = H * HD };
    float q[T * 3 * C], o[T * C], lse[H * T], delta[H * T], g[T * 3 * C];
    for (int i = 0; i < T * 3 * C; i++)
        q[i] = 0.25f, g[i] = SENTINEL;
    for (int i = 0; i < T * C; i++)
        o[i] = SENTINEL;
    float *k = q + C, *v = q + 2 * C;
    struct {
        tsr_device_t dev;
        tsr_dtype_t dt;
        int seqs, hd, ld_in, ld_o;
        float *q, *lse;
        tsr_status_t want;
        const char *word, *what;
    } fwd[] = {
        {NULL, TSR_DTYPE_F32, 1, HD, 3 * C, C, q, lse, TSR_ERR_INVALID_ARG, "device", "a NULL device"},
        {cpu, TSR_DTYPE_F64, 1, HD, 3 * C, C, q, lse, TSR_ERR_INVALID_ARG, "f64", "element type f64"},
        {cpu, TSR_DTYPE_BF16, 1, HD, 3 * C, C, q, lse, TSR_ERR_NOT_SUPPORTED, "bf16", "bf16 on the CPU"},
        {cpu, TSR_DTYPE_F32, -1, HD, 3 * C, C, q, lse, TSR_ERR_INVALID_ARG, "negative", "seqs -1"},
        {cpu, TSR_DTYPE_F32, 1, 0, 3 * C, C, q, lse, TSR_ERR_INVALID_ARG, "head size", "hd 0"},
        {cpu, TSR_DTYPE_F32, 1, HD, C - 1, C, q, lse, TSR_ERR_INVALID_ARG, "ld_in", "ld_in below heads hd"},
        {cpu, TSR_DTYPE_F32, 1, HD, 3 * C, C - 1, q, lse, TSR_ERR_INVALID_ARG, "ld_o", "ld_o below heads hd"},
        {cpu, TSR_DTYPE_F32, 1, HD, 3 * C, C, NULL, lse, TSR_ERR_INVALID_ARG, "NULL", "a NULL q"},
        {cpu, TSR_DTYPE_F32, 1, HD, 3 * C, C, q, NULL, TSR_ERR_INVALID_ARG, "NULL", "a NULL lse"},
        {gpu, TSR_DTYPE_F32, 1, 8, 3 * C, C, q, lse, TSR_ERR_INVALID_ARG, "head size", "hd 8 on CUDA"},
        {gpu, TSR_DTYPE_BF16, 1, 48, 3 * C, C, q, lse, TSR_ERR_INVALID_ARG, "head size", "hd 48 on CUDA"},
    };
    for (size_t i = 0; i < sizeof fwd / sizeof fwd[0]; i++) {
        if (i >= 9 && !gpu) {
            skip(2, "no GPU");
            continue;
        }
        tsr_clear_error();
        /* Host pointers for the GPU cases: the shape is rejected before any is touched. */
        tsr_status_t rc = tsr_kernel_attention_forward(fwd[i].dev, fwd[i].dt, fwd[i].seqs, T, H, fwd[i].hd, fwd[i].q,
                                                       k, v, fwd[i].ld_in, o, fwd[i].ld_o, fwd[i].lse);
        is_int(rc, fwd[i].want, "forward with %s fails with %s", fwd[i].what, tsr_status_name(fwd[i].want));
        ok(one_line(tsr_last_error()) && contains(tsr_last_error(), fwd[i].word),
           "forward with %s: a one-line error naming it (\"%s\")", fwd[i].what, tsr_last_error());
    }
    int o_kept = 1;
    for (int i = 0; i < T * C; i++)
        o_kept &= o[i] == SENTINEL;
    ok(o_kept, "rejected forwards write nothing to o");

    tsr_clear_error();
    tsr_status_t rc = tsr_kernel_attention_backward(cpu, TSR_DTYPE_BF16, 1, T, H, HD, q, k, v, 3 * C, o, o, C, lse,
                                                    delta, g, g + C, g + 2 * C);
    is_int(rc, TSR_ERR_NOT_SUPPORTED, "backward in bf16 on the CPU fails with TSR_ERR_NOT_SUPPORTED");
    ok(one_line(tsr_last_error()) && contains(tsr_last_error(), "bf16"), "... with a one-line error naming bf16");
    rc = tsr_kernel_attention_backward(cpu, TSR_DTYPE_F32, 1, T, H, HD, q, k, v, 3 * C, o, o, C - 1, lse, delta, g,
                                       g + C, g + 2 * C);
    is_int(rc, TSR_ERR_INVALID_ARG, "backward with ld_o below heads hd fails with TSR_ERR_INVALID_ARG");
    rc = tsr_kernel_attention_backward(cpu, TSR_DTYPE_F32, 1, T, H, HD, q, k, v, 3 * C, o, o, C, lse, NULL, g, g + C,
                                       g + 2 * C);
    is_int(rc, TSR_ERR_INVALID_ARG, "backward with a NULL delta fails with TSR_ERR_INVALID_ARG");
    rc = tsr_kernel_attention_backward(cpu, TSR_DTYPE_F32, 1, T, H, 20, q, k, v, 3 * C, o, o, C, lse, delta, g, g + C,
                                       g + 2 * C);
    is_int(rc, TSR_ERR_INVALID_ARG, "backward with hd 20 fails with TSR_ERR_INVALID_ARG");
    int g_kept = 1;
    for (int i = 0; i < T * 3 * C; i++)
        g_kept &= g[i] == SENTINEL;
    ok(g_kept, "rejected backwards write nothing to dq, dk, dv");

    /* Nothing to compute is not an error, and touches nothing (NULL pointers allowed). */
    rc = tsr_kernel_attention_forward(cpu, TSR_DTYPE_F32, 0, T, H, HD, NULL, NULL, NULL, 3 * C, NULL, C, NULL);
    is_int(rc, TSR_OK, "forward with no sequence succeeds");
    rc = tsr_kernel_attention_forward(cpu, TSR_DTYPE_F32, 2, 0, H, HD, NULL, NULL, NULL, 3 * C, NULL, C, NULL);
    is_int(rc, TSR_OK, "forward with T = 0 succeeds");
    rc = tsr_kernel_attention_backward(cpu, TSR_DTYPE_F32, 2, T, 0, HD, NULL, NULL, NULL, 0, NULL, NULL, 0, NULL, NULL,
                                       NULL, NULL, NULL);
    is_int(rc, TSR_OK, "backward with no head succeeds");
    tsr_clear_error();
}

/* ---------------------------------------------------------------------------------------- */
/* CUDA against the CPU. */

enum { GPU_POINTS = 7 }; /* per gpu_case: status, o, lse, dq, dk, dv, padding */

static void gpu_case(tsr_device_t gpu, tsr_device_t cpu, tsr_dtype_t dt, shape_t sh)
{
    const int bf16 = dt == TSR_DTYPE_BF16;
    problem_t p = make_problem(sh, bf16);
    reference_t ref = ref_alloc(&p), want = ref_alloc(&p);
    reference_of(&p, 1, &ref); /* for the size of the terms */
    result_t on_cpu = result_alloc(&p), on_gpu = result_alloc(&p);
    int pad_cpu = 0, pad_gpu = 0;
    tsr_status_t rc_cpu = run_on(cpu, TSR_DTYPE_F32, &p, &on_cpu, &pad_cpu);
    tsr_status_t rc_gpu = run_on(gpu, dt, &p, &on_gpu, &pad_gpu);
    /* The CPU's results are what the GPU must give. */
    const float *src[] = {on_cpu.o, on_cpu.dqkv, on_cpu.dqkv, on_cpu.dqkv};
    double *dst[] = {want.o, want.dq, want.dk, want.dv};
    for (int a = 0; a < 4; a++)
        for (size_t r = 0; r < p.rows; r++)
            for (int c = 0; c < p.C; c++)
                dst[a][r * p.C + c] = src[a][r * (a ? p.ld_in : p.ld_o) + (a ? (a - 1) * p.C : 0) + c];
    for (size_t i = 0; i < p.n_stat; i++)
        want.lse[i] = on_cpu.lse[i];
    const char *name = bf16 ? "CUDA bf16" : "CUDA f32";
    ok(rc_cpu == TSR_OK && rc_gpu == TSR_OK, "%s seqs=%d T=%d heads=%d hd=%d: CPU and GPU runs succeed", name, sh.seqs,
       sh.T, sh.heads, sh.hd);
    compare(name, &p, &on_gpu, &want, &ref, bf16);
    ok(pad_gpu, "%s seqs=%d T=%d heads=%d hd=%d: padding columns of o and of dq|dk|dv untouched", name, sh.seqs, sh.T,
       sh.heads, sh.hd);
    result_free(&on_cpu);
    result_free(&on_gpu);
    ref_free(&ref);
    ref_free(&want);
    free_problem(&p);
}

static const int gpu_hd[] = {16, 32, 64, 128}, gpu_T[] = {1, 17, 64, 130, 1024};
#define N_GPU_CASES ((int)(sizeof gpu_hd / sizeof gpu_hd[0] * sizeof gpu_T / sizeof gpu_T[0]) * 2)

static void gpu_cases(tsr_device_t gpu, tsr_device_t cpu)
{
    for (size_t a = 0; a < sizeof gpu_hd / sizeof gpu_hd[0]; a++)
        for (size_t b = 0; b < sizeof gpu_T / sizeof gpu_T[0]; b++) {
            const int T = gpu_T[b], big = T > 256;
            /* Odd paddings take the kernels' element-wise loads, even ones their 16-byte loads. */
            shape_t sh = {big ? 1 : 2, T, big ? 1 : 3, gpu_hd[a], b % 2 ? 3 : 8, b % 2 ? 1 : 0};
            gpu_case(gpu, cpu, TSR_DTYPE_F32, sh);
            gpu_case(gpu, cpu, TSR_DTYPE_BF16, sh);
        }
}

int main(int argc, char **argv)
{
    tap_init(&argc, &argv, "1");
    seed = tap_seed();
    tsr_device_t cpu = NULL, gpu = NULL;
    if (tsr_device_create(TSR_DEVICE_CPU, 0, &cpu) != TSR_OK) {
        fprintf(stderr, "# no CPU device: %s\n", tsr_last_error());
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    const char *no_gpu = !tsr_device_kind_built(TSR_DEVICE_CUDA) ? "CUDA not built"
                         : tsr_device_count(TSR_DEVICE_CUDA) == 0 ? "no GPU"
                                                                   : NULL;
    if (!no_gpu && tsr_device_create(TSR_DEVICE_CUDA, 0, &gpu) != TSR_OK) {
        diag("cannot open the GPU: %s", tsr_last_error());
        no_gpu = "the GPU did not open";
    }

    static const int Ts[] = {1, 7, 33, 64}, hds[] = {8, 16, 32, 4, 12}; /* any head size on the CPU */
    int n = 0;
    for (size_t a = 0; a < sizeof Ts / sizeof Ts[0]; a++)
        for (size_t b = 0; b < sizeof hds / sizeof hds[0]; b++, n++) {
            shape_t sh = {2, Ts[a], 1 + n % 3, hds[b], n % 2 ? 5 : 0, n % 3 ? 3 : 0};
            cpu_case(cpu, sh);
        }
    finite_differences(cpu);
    argument_errors(cpu, gpu);

    if (gpu)
        gpu_cases(gpu, cpu);
    else
        skip(N_GPU_CASES * GPU_POINTS, no_gpu);
    tsr_device_destroy(&gpu);
    tsr_device_destroy(&cpu);
    return tap_done();
}
