/*
 * test_kernels_optim: the optimizer, reduction, axpy, scale and cast kernels of tessera/kernels.h.
 *   - CPU: AdamW and SGD equal bit for bit to lib/zero's loops (copied below) and within 1e-5
 *     of double-precision references, their compute copies (f32 and bf16); sums of 0, 1 and
 *     1000003 values against long double and exact sums; axpy and scale; casts on rounding
 *     ties, NaN, infinities, denormals and every bf16 value; argument errors.
 *   - CUDA (every point skipped on its own without a GPU): each kernel against the CPU, on
 *     aligned and misaligned pointers: AdamW and SGD to 1e-6 (nvcc fuses multiply-adds the
 *     CPU rounds twice), sums to 1e-12 of long double (equal to the CPU's where exact) and
 *     deterministic, scale and casts bit for bit.
 * Inputs are drawn with a fresh seed each run (TSR_TEST_SEED=N repeats a run).
 */
#include <tessera.h>

#include "tap.h"

static tsr_device_t cpu, gpu; /* gpu is NULL without a usable GPU */
static const char *no_gpu_reason = "no GPU";
static uint64_t seed, next_stream;

enum { BIG = 1000003 };

/* ------------------------------------------------------------------------------------------ */
/* Host helpers. */

static void *xmalloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "# out of host memory (%zu bytes)\n", bytes);
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    return p;
}

/* n floats uniform in [lo, hi), from a stream of their own. */
static float *random_floats(size_t n, float lo, float hi)
{
    float *x = xmalloc(n * sizeof *x);
    tsr_rng_fill_uniform(seed, next_stream++, 0, n, lo, hi, x);
    return x;
}

static float *copy_floats(const float *x, size_t n)
{
    float *y = xmalloc(n * sizeof *y);
    memcpy(y, x, n * sizeof *y);
    return y;
}

static uint32_t bits_of(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static float float_of(uint32_t u)
{
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

static int bf16_is_nan(uint16_t h)
{
    return (h & 0x7f80u) == 0x7f80u && (h & 0x007fu) != 0;
}

/* lib/zero/optim.c round_bf16, kept as the top half (any NaN for a NaN). */
static uint16_t zero_round_bf16(float x)
{
    uint32_t u = bits_of(x);
    if (isnan(x))
        return 0x7fc0u;
    u += 0x7fffu + ((u >> 16) & 1u);
    u &= 0xffff0000u;
    return (uint16_t)(u >> 16);
}

/* Equal bits, or both NaN. */
static int bf16_same(const uint16_t *a, const uint16_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (a[i] != b[i] && !(bf16_is_nan(a[i]) && bf16_is_nan(b[i])))
            return 0;
    return 1;
}

static int floats_identical(const float *a, const float *b, size_t n)
{
    return memcmp(a, b, n * sizeof *a) == 0;
}

/* ------------------------------------------------------------------------------------------ */
/* lib/zero/optim.c's loops, copied with the same expressions and float types. */

static void zero_adamw(const tsr_adamw_params_t *hp, size_t n, float *p, const float *g, float *m, float *v)
{
    const float b1 = hp->beta1, b2 = hp->beta2, eps = hp->eps;
    const float step_size = hp->lr / hp->bc1, sqrt_bc2 = sqrtf(hp->bc2), decay = 1.0f - hp->lr * hp->weight_decay;
    for (size_t i = 0; i < n; i++) {
        float gi = g[i] * hp->grad_coef;
        m[i] = b1 * m[i] + (1.0f - b1) * gi;
        v[i] = b2 * v[i] + (1.0f - b2) * gi * gi;
        p[i] = p[i] * decay - step_size * m[i] / (sqrtf(v[i]) / sqrt_bc2 + eps);
    }
}

static void zero_sgd(float lr, float mu, float wd, float grad_coef, size_t n, float *p, const float *g, float *m)
{
    const float decay = 1.0f - lr * wd;
    for (size_t i = 0; i < n; i++) {
        float d = g[i] * grad_coef;
        if (m) {
            m[i] = mu * m[i] + d;
            d = m[i];
        }
        p[i] = p[i] * decay - lr * d;
    }
}

/* The same updates in double, from the header's formulas, rounded to float at the end. */
static void ref_adamw(const tsr_adamw_params_t *hp, size_t n, float *p, const float *g, float *m, float *v)
{
    for (size_t i = 0; i < n; i++) {
        double gi = (double)g[i] * hp->grad_coef;
        double mi = hp->beta1 * (double)m[i] + (1.0 - hp->beta1) * gi;
        double vi = hp->beta2 * (double)v[i] + (1.0 - hp->beta2) * gi * gi;
        double pi = (double)p[i] * (1.0 - (double)hp->lr * hp->weight_decay) -
                    ((double)hp->lr / hp->bc1) * mi / (sqrt(vi) / sqrt((double)hp->bc2) + hp->eps);
        m[i] = (float)mi, v[i] = (float)vi, p[i] = (float)pi;
    }
}

static void ref_sgd(float lr, float mu, float wd, float grad_coef, size_t n, float *p, const float *g, float *m)
{
    for (size_t i = 0; i < n; i++) {
        double d = (double)g[i] * grad_coef;
        if (m) {
            d = mu * (double)m[i] + d;
            m[i] = (float)d;
        }
        p[i] = (float)((double)p[i] * (1.0 - (double)lr * wd) - lr * d);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* CPU. */

static const tsr_adamw_params_t adamw_cases[2] = {
    /* lr, beta1, beta2, eps, weight_decay, bc1, bc2 (step 1), grad_coef */
    {1e-3f, 0.9f, 0.95f, 1e-8f, 0.1f, 0.1f, 0.05f, 1.0f},
    /* step 7, no decay, a clipping coefficient */
    {6e-4f, 0.9f, 0.999f, 1e-6f, 0.0f, 0.5217031f, 0.006979035f, 0.37f},
};

static const char *work_name(int work)
{
    return work == 0 ? "no copy" : work == 1 ? "f32 copy" : "bf16 copy";
}

/* Check the compute copy work (kind 1 f32, 2 bf16) of the n values p. */
static int work_matches(int work, const void *w, const float *p, size_t n)
{
    if (work == 1)
        return floats_identical(w, p, n);
    const uint16_t *h = w;
    for (size_t i = 0; i < n; i++)
        if (h[i] != zero_round_bf16(p[i]))
            return 0;
    return 1;
}

static void cpu_adamw(void)
{
    const size_t n = 100003;
    for (int c = 0; c < 2; c++) {
        const tsr_adamw_params_t *hp = &adamw_cases[c];
        for (int work = 0; work < 3; work++) {
            float *p = random_floats(n, -1.0f, 1.0f), *g = random_floats(n, -2.0f, 2.0f);
            float *m = random_floats(n, -0.1f, 0.1f), *v = random_floats(n, 0.0f, 0.01f);
            float *zp = copy_floats(p, n), *zm = copy_floats(m, n), *zv = copy_floats(v, n);
            float *rp = copy_floats(p, n), *rm = copy_floats(m, n), *rv = copy_floats(v, n);
            void *w = work ? xmalloc(n * (work == 1 ? 4 : 2)) : NULL;
            tsr_status_t rc = tsr_kernel_adamw(cpu, n, p, g, m, v, hp, work == 2 ? TSR_DTYPE_BF16 : TSR_DTYPE_F32, w);
            zero_adamw(hp, n, zp, g, zm, zv);
            ref_adamw(hp, n, rp, g, rm, rv);
            ok(rc == TSR_OK && floats_identical(p, zp, n) && floats_identical(m, zm, n) && floats_identical(v, zv, n),
               "cpu adamw case %d, %s: p, m, v bit for bit lib/zero's", c, work_name(work));
            double err = fmax(tap_max_rel_err(p, rp, n), fmax(tap_max_rel_err(m, rm, n), tap_max_rel_err(v, rv, n)));
            ok(err <= 1e-5, "cpu adamw case %d, %s: within 1e-5 of double (%.3g)", c, work_name(work), err);
            if (work)
                ok(work_matches(work, w, p, n), "cpu adamw case %d: the %s is the new p, rounded as lib/zero rounds",
                   c, work_name(work));
            free(p), free(g), free(m), free(v), free(zp), free(zm), free(zv), free(rp), free(rm), free(rv), free(w);
        }
    }
}

static void cpu_sgd(void)
{
    const size_t n = 100003;
    for (int mom = 0; mom < 2; mom++)
        for (int work = 0; work < 3; work++) {
            const float lr = 0.05f, mu = mom ? 0.9f : 0.0f, wd = 0.01f, coef = 0.5f;
            float *p = random_floats(n, -1.0f, 1.0f), *g = random_floats(n, -2.0f, 2.0f);
            float *m = mom ? random_floats(n, -0.5f, 0.5f) : NULL;
            float *zp = copy_floats(p, n), *zm = mom ? copy_floats(m, n) : NULL;
            float *rp = copy_floats(p, n), *rm = mom ? copy_floats(m, n) : NULL;
            void *w = work ? xmalloc(n * (work == 1 ? 4 : 2)) : NULL;
            tsr_status_t rc = tsr_kernel_sgd(cpu, n, p, g, m, lr, mu, wd, coef,
                                             work == 2 ? TSR_DTYPE_BF16 : TSR_DTYPE_F32, w);
            zero_sgd(lr, mu, wd, coef, n, zp, g, zm);
            ref_sgd(lr, mu, wd, coef, n, rp, g, rm);
            ok(rc == TSR_OK && floats_identical(p, zp, n) && (!mom || floats_identical(m, zm, n)),
               "cpu sgd %s, %s: bit for bit lib/zero's", mom ? "momentum 0.9" : "no momentum", work_name(work));
            double err = fmax(tap_max_rel_err(p, rp, n), mom ? tap_max_rel_err(m, rm, n) : 0.0);
            ok(err <= 1e-5, "cpu sgd %s, %s: within 1e-5 of double (%.3g)", mom ? "momentum" : "no momentum",
               work_name(work), err);
            if (work)
                ok(work_matches(work, w, p, n), "cpu sgd: the %s is the new p", work_name(work));
            free(p), free(g), free(m), free(zp), free(zm), free(rp), free(rm), free(w);
        }
}

/* The sums of x^2, x and |x| in long double: references the double kernels can be held to. */
static void long_double_sums(const float *x, size_t n, double *sumsq, double *sum, double *sum_abs)
{
    long double s2 = 0, s1 = 0, sa = 0;
    for (size_t i = 0; i < n; i++) {
        s2 += (long double)x[i] * x[i];
        s1 += x[i];
        sa += fabsl((long double)x[i]);
    }
    *sumsq = (double)s2, *sum = (double)s1, *sum_abs = (double)sa;
}

/* n multiples of 1/1024 in [-1, 1]: every partial sum of them and of their squares is a
 * double, so any order of summation gives exactly *sumsq and *sum. */
static float *exact_floats(size_t n, double *sumsq, double *sum)
{
    float *x = xmalloc(n * sizeof *x);
    long long k2 = 0, k1 = 0;
    for (size_t i = 0; i < n; i++) {
        long long k = (long long)(tsr_rng_u32(seed, next_stream, i) % 2049) - 1024;
        x[i] = (float)k / 1024.0f;
        k2 += k * k, k1 += k;
    }
    next_stream++;
    *sumsq = (double)k2 / 1048576.0, *sum = (double)k1 / 1024.0;
    return x;
}

static void cpu_sums(void)
{
    double out = -1.0;
    is_int(tsr_kernel_sumsq(cpu, NULL, 0, &out), TSR_OK, "cpu sumsq of 0 values succeeds (x may be NULL)");
    ok(out == 0.0, "cpu sumsq of 0 values is 0");
    out = -1.0;
    is_int(tsr_kernel_sum(cpu, NULL, 0, &out), TSR_OK, "cpu sum of 0 values succeeds");
    ok(out == 0.0, "cpu sum of 0 values is 0");

    float one = -3.0f;
    ok(tsr_kernel_sumsq(cpu, &one, 1, &out) == TSR_OK && out == 9.0, "cpu sumsq of {-3} is 9");
    ok(tsr_kernel_sum(cpu, &one, 1, &out) == TSR_OK && out == -3.0, "cpu sum of {-3} is -3");

    /* A serial double sum of n terms errs by at most (n - 1) u sum|terms|, 1.1e-10 here (and
     * about 1e-12 in practice); an fp32 accumulator would be off by about 1e-4. */
    float *x = random_floats(BIG, -1.0f, 1.0f);
    double r2, r1, ra, sumsq = 0, sum = 0;
    long_double_sums(x, BIG, &r2, &r1, &ra);
    tsr_status_t rc = tsr_kernel_sumsq(cpu, x, BIG, &sumsq);
    rc = rc ? rc : tsr_kernel_sum(cpu, x, BIG, &sum);
    is_int(rc, TSR_OK, "cpu sumsq and sum of %d values succeed", BIG);
    is_rel(sumsq, r2, 1e-10, "cpu sumsq of %d values within 1e-10 of long double", BIG);
    ok(fabs(sum - r1) <= 1e-10 * ra, "cpu sum of %d values within 1e-10 sum|x| of long double (%.3g)", BIG,
       fabs(sum - r1) / ra);
    free(x);

    /* In float, a million times 0.1 drifts by about 1%; in double it does not. */
    x = xmalloc(BIG * sizeof *x);
    for (size_t i = 0; i < BIG; i++)
        x[i] = 0.1f;
    rc = tsr_kernel_sum(cpu, x, BIG, &sum);
    is_rel(rc == TSR_OK ? sum : NAN, BIG * (double)0.1f, 1e-12, "cpu sum accumulates in double (%d times 0.1f)",
           BIG);
    free(x);

    x = exact_floats(BIG, &r2, &r1);
    ok(tsr_kernel_sumsq(cpu, x, BIG, &sumsq) == TSR_OK && sumsq == r2, "cpu sumsq of multiples of 1/1024 is exact");
    ok(tsr_kernel_sum(cpu, x, BIG, &sum) == TSR_OK && sum == r1, "cpu sum of multiples of 1/1024 is exact");
    free(x);
}

static void cpu_axpy_scale(void)
{
    float *x = random_floats(BIG, -1.0f, 1.0f), *y = random_floats(BIG, -1.0f, 1.0f);
    float *ref = xmalloc(BIG * sizeof *ref);
    const float alpha = -0.731f;
    for (size_t i = 0; i < BIG; i++)
        ref[i] = (float)((double)y[i] + (double)alpha * x[i]);
    is_int(tsr_kernel_axpy(cpu, BIG, alpha, x, y), TSR_OK, "cpu axpy succeeds");
    double err = tap_max_rel_err(y, ref, BIG);
    ok(err <= 1e-6, "cpu axpy within 1e-6 of double (%.3g)", err);

    /* One product of two floats is exact in double: float scaling rounds it once. */
    const float s = 1.37f;
    for (size_t i = 0; i < BIG; i++)
        ref[i] = (float)((double)x[i] * s);
    is_int(tsr_kernel_scale(cpu, TSR_DTYPE_F32, BIG, x, s), TSR_OK, "cpu scale f32 succeeds");
    ok(floats_identical(x, ref, BIG), "cpu scale f32 is the correctly rounded product");

    uint16_t *h = xmalloc(BIG * sizeof *h), *href = xmalloc(BIG * sizeof *href);
    for (size_t i = 0; i < BIG; i++) {
        h[i] = zero_round_bf16(y[i]);
        href[i] = zero_round_bf16((float)((double)float_of((uint32_t)h[i] << 16) * s));
    }
    is_int(tsr_kernel_scale(cpu, TSR_DTYPE_BF16, BIG, h, s), TSR_OK, "cpu scale bf16 succeeds");
    ok(memcmp(h, href, BIG * sizeof *h) == 0, "cpu scale bf16: the product rounded to float, then to bf16");
    free(x), free(y), free(ref), free(h), free(href);
}

/* Rounding cases with their bf16 by hand: ties both ways, carries, overflow, denormals. */
static const struct {
    uint32_t f32;
    uint16_t bf16;
} cast_table[] = {
    {0x3f800000u, 0x3f80u}, /* 1 */
    {0x3f808000u, 0x3f80u}, /* 1 + 2^-8: a tie, to the even 1 */
    {0x3f818000u, 0x3f82u}, /* a tie above an odd value: up */
    {0x3f808001u, 0x3f81u}, /* just above a tie: up */
    {0x3f807fffu, 0x3f80u}, /* just below: down */
    {0xbf818000u, 0xbf82u}, /* negative ties round the magnitude */
    {0x3fffffffu, 0x4000u}, /* carry into the exponent */
    {0x7f7fffffu, 0x7f80u}, /* the largest float rounds to infinity */
    {0x7f7f7fffu, 0x7f7fu}, /* the largest bf16 stays */
    {0x7f7f8000u, 0x7f80u}, /* the tie above it overflows (7f7f is odd) */
    {0x7f800000u, 0x7f80u}, /* inf */
    {0xff800000u, 0xff80u}, /* -inf */
    {0x00000000u, 0x0000u}, /* 0 */
    {0x80000000u, 0x8000u}, /* -0 */
    {0x00000001u, 0x0000u}, /* the smallest denormal rounds to 0 */
    {0x00008000u, 0x0000u}, /* a denormal tie to the even 0 */
    {0x00018000u, 0x0002u}, /* a denormal tie up */
    {0x00017fffu, 0x0001u},
    {0x007fffffu, 0x0080u}, /* the largest denormal rounds up to the smallest normal */
    {0x80010000u, 0x8001u}, /* a negative bf16 denormal, exact */
};

static const uint32_t nan_inputs[] = {0x7fc00000u, 0xffc00000u, 0x7f800001u, 0xff800001u, 0x7fbfffffu, 0x7f810000u};

enum { TABLE = sizeof cast_table / sizeof cast_table[0], NANS = sizeof nan_inputs / sizeof nan_inputs[0] };

/* The f32 inputs of the special cases: the table, then the NaNs. */
static void special_inputs(float *in)
{
    for (int i = 0; i < TABLE; i++)
        in[i] = float_of(cast_table[i].f32);
    for (int i = 0; i < NANS; i++)
        in[TABLE + i] = float_of(nan_inputs[i]);
}

static void cpu_casts(void)
{
    float in[TABLE + NANS];
    uint16_t out[TABLE + NANS];
    special_inputs(in);
    is_int(tsr_kernel_cast(cpu, TSR_DTYPE_F32, in, TSR_DTYPE_BF16, out, TABLE + NANS), TSR_OK,
           "cpu cast f32 -> bf16 of the special values succeeds");
    int table_ok = 1;
    for (int i = 0; i < TABLE; i++)
        if (out[i] != cast_table[i].bf16) {
            table_ok = 0;
            diag("f32 %08x gave bf16 %04x, expected %04x", cast_table[i].f32, out[i], cast_table[i].bf16);
        }
    ok(table_ok, "cpu cast f32 -> bf16 rounds ties to even, overflows to inf, keeps denormals");
    int nan_ok = 1;
    for (int i = 0; i < NANS; i++)
        nan_ok &= out[TABLE + i] == 0x7fffu;
    ok(nan_ok, "cpu cast f32 -> bf16 makes every NaN (payloads below bit 16 too) the NaN 0x7fff");

    float *x = random_floats(BIG, -3.0f, 3.0f);
    for (size_t i = 0; i < BIG; i += 97) /* reach the tiny and huge exponents too */
        x[i] = ldexpf(x[i], (int)(i % 250) - 125);
    uint16_t *h = xmalloc(BIG * sizeof *h);
    int same = tsr_kernel_cast(cpu, TSR_DTYPE_F32, x, TSR_DTYPE_BF16, h, BIG) == TSR_OK;
    for (size_t i = 0; i < BIG && same; i++)
        same = h[i] == zero_round_bf16(x[i]);
    ok(same, "cpu cast f32 -> bf16 of %d values rounds as lib/zero does", BIG);

    /* bf16 -> f32 is exact: every one of the 65536 patterns becomes its top half. */
    uint16_t *all = xmalloc(65536 * sizeof *all);
    float *back = xmalloc(65536 * sizeof *back);
    for (uint32_t i = 0; i < 65536; i++)
        all[i] = (uint16_t)i;
    int exact = tsr_kernel_cast(cpu, TSR_DTYPE_BF16, all, TSR_DTYPE_F32, back, 65536) == TSR_OK;
    for (uint32_t i = 0; i < 65536 && exact; i++)
        exact = bits_of(back[i]) == i << 16;
    ok(exact, "cpu cast bf16 -> f32 is exact for all 65536 values");
    uint16_t *again = xmalloc(65536 * sizeof *again);
    int round_trip = tsr_kernel_cast(cpu, TSR_DTYPE_F32, back, TSR_DTYPE_BF16, again, 65536) == TSR_OK;
    for (uint32_t i = 0; i < 65536 && round_trip; i++)
        round_trip = bf16_is_nan(all[i]) ? again[i] == 0x7fffu : again[i] == all[i];
    ok(round_trip, "cpu cast bf16 -> f32 -> bf16 gives every non-NaN value back");

    /* Same-type casts copy, whatever the type. */
    float *y = xmalloc(BIG * sizeof *y);
    ok(tsr_kernel_cast(cpu, TSR_DTYPE_F32, x, TSR_DTYPE_F32, y, BIG) == TSR_OK && floats_identical(x, y, BIG),
       "cpu cast f32 -> f32 copies");
    ok(tsr_kernel_cast(cpu, TSR_DTYPE_BF16, h, TSR_DTYPE_BF16, again, 65536) == TSR_OK &&
           memcmp(again, h, 65536 * sizeof *h) == 0,
       "cpu cast bf16 -> bf16 copies");
    int32_t ints[5] = {1, -2, 3, -4, 5}, ints2[5] = {0};
    ok(tsr_kernel_cast(cpu, TSR_DTYPE_I32, ints, TSR_DTYPE_I32, ints2, 5) == TSR_OK &&
           memcmp(ints, ints2, sizeof ints) == 0,
       "cpu cast i32 -> i32 copies");
    ok(tsr_kernel_cast(cpu, TSR_DTYPE_F32, y, TSR_DTYPE_F32, y, BIG) == TSR_OK && floats_identical(x, y, BIG),
       "cpu cast of a buffer onto itself (same type) leaves it as it is");
    free(x), free(h), free(all), free(back), free(again), free(y);
}

/* One rejected call: the status, and a message naming the kernel. */
static void rejected(tsr_status_t got, tsr_status_t expected, const char *kernel, const char *what)
{
    const char *msg = tsr_last_error();
    ok(got == expected && strstr(msg, kernel) != NULL, "%s: %s is %s (\"%s\")", kernel, what,
       tsr_status_name(expected), msg);
    tsr_clear_error();
}

static void cpu_errors(void)
{
    float p[8] = {1, 2, 3, 4, 5, 6, 7, 8}, g[8] = {1}, m[8] = {0}, v[8] = {0};
    float p0[8];
    memcpy(p0, p, sizeof p);
    double out;
    tsr_adamw_params_t hp = adamw_cases[0], bad_hp = hp;
    bad_hp.bc1 = 0.0f;

    rejected(tsr_kernel_adamw(NULL, 8, p, g, m, v, &hp, TSR_DTYPE_F32, NULL), TSR_ERR_INVALID_ARG, "adamw",
             "a NULL device");
    rejected(tsr_kernel_adamw(cpu, 8, p, g, m, v, NULL, TSR_DTYPE_F32, NULL), TSR_ERR_INVALID_ARG, "adamw",
             "NULL hyper-parameters");
    rejected(tsr_kernel_adamw(cpu, 8, p, g, m, v, &bad_hp, TSR_DTYPE_F32, NULL), TSR_ERR_INVALID_ARG, "adamw",
             "bc1 = 0");
    rejected(tsr_kernel_adamw(cpu, 8, p, NULL, m, v, &hp, TSR_DTYPE_F32, NULL), TSR_ERR_INVALID_ARG, "adamw",
             "a NULL gradient");
    rejected(tsr_kernel_adamw(cpu, 8, p, g, m, v, &hp, TSR_DTYPE_F64, m), TSR_ERR_NOT_SUPPORTED, "adamw",
             "an f64 compute copy");
    rejected(tsr_kernel_adamw(cpu, 8, p, g, m, v, &hp, (tsr_dtype_t)99, m), TSR_ERR_INVALID_ARG, "adamw",
             "work type 99");
    ok(memcmp(p, p0, sizeof p) == 0, "rejected adamw calls leave p alone");
    is_int(tsr_kernel_adamw(cpu, 0, NULL, NULL, NULL, NULL, &hp, TSR_DTYPE_F64, NULL), TSR_OK,
           "adamw of 0 values with NULL buffers (and no copy) succeeds");
    rejected(tsr_kernel_sgd(cpu, 8, NULL, g, NULL, 0.1f, 0, 0, 1, TSR_DTYPE_F32, NULL), TSR_ERR_INVALID_ARG, "sgd",
             "a NULL p");
    rejected(tsr_kernel_sgd(cpu, 8, p, g, NULL, 0.1f, 0, 0, 1, TSR_DTYPE_I32, m), TSR_ERR_NOT_SUPPORTED, "sgd",
             "an i32 compute copy");
    rejected(tsr_kernel_sumsq(cpu, p, 8, NULL), TSR_ERR_INVALID_ARG, "sumsq", "a NULL result");
    rejected(tsr_kernel_sum(cpu, NULL, 8, &out), TSR_ERR_INVALID_ARG, "sum", "a NULL x");
    rejected(tsr_kernel_axpy(cpu, 8, 1.0f, NULL, p), TSR_ERR_INVALID_ARG, "axpy", "a NULL x");
    rejected(tsr_kernel_scale(cpu, TSR_DTYPE_F64, 4, p, 2.0f), TSR_ERR_NOT_SUPPORTED, "scale", "f64");
    rejected(tsr_kernel_scale(cpu, (tsr_dtype_t)-1, 4, p, 2.0f), TSR_ERR_INVALID_ARG, "scale", "type -1");
    rejected(tsr_kernel_cast(cpu, TSR_DTYPE_F64, p, TSR_DTYPE_BF16, m, 2), TSR_ERR_NOT_SUPPORTED, "cast",
             "f64 -> bf16");
    rejected(tsr_kernel_cast(cpu, TSR_DTYPE_F32, p, TSR_DTYPE_I32, m, 2), TSR_ERR_NOT_SUPPORTED, "cast",
             "f32 -> i32");
    rejected(tsr_kernel_cast(cpu, TSR_DTYPE_F32, p, TSR_DTYPE_COUNT, m, 2), TSR_ERR_INVALID_ARG, "cast",
             "an out-of-range type");
    rejected(tsr_kernel_cast(cpu, TSR_DTYPE_F32, p, TSR_DTYPE_BF16, p + 1, 4), TSR_ERR_INVALID_ARG, "cast",
             "overlapping src and dst");
    rejected(tsr_kernel_cast(cpu, TSR_DTYPE_F32, p, TSR_DTYPE_F32, p + 2, 4), TSR_ERR_INVALID_ARG, "cast",
             "an overlapping copy");
    ok(memcmp(p, p0, sizeof p) == 0, "rejected calls leave their buffers alone");
}

/* ------------------------------------------------------------------------------------------ */
/* CUDA against the CPU. Each case first says how many points it records, so that without a
 * GPU it skips exactly those. */

static int gpu_skips(int points)
{
    if (gpu)
        return 0;
    skip(points, no_gpu_reason);
    return 1;
}

/* Device memory for n elements of `size` bytes plus `off` elements, pointer at element off. */
static void *dev_alloc(size_t n, size_t size, int off)
{
    void *p = NULL;
    if (tsr_device_alloc(gpu, TSR_MEM_WORKSPACE, (n + (size_t)off) * size, &p) != TSR_OK || !p) {
        fprintf(stderr, "# GPU alloc failed: %s\n", tsr_last_error());
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    return (char *)p + (size_t)off * size;
}

static void dev_free(void *p, size_t size, int off)
{
    void *base = (char *)p - (size_t)off * size;
    tsr_device_free(gpu, &base);
}

static float *to_gpu(const float *x, size_t n, int off)
{
    float *d = dev_alloc(n, sizeof *d, off);
    tsr_device_copy(gpu, d, x, n * sizeof *d, TSR_COPY_HOST_TO_DEVICE);
    return d;
}

static void from_gpu(void *host, const void *d, size_t bytes)
{
    tsr_device_copy(gpu, host, d, bytes, TSR_COPY_DEVICE_TO_HOST);
}

/* AdamW (sgd 0) or SGD with momentum (sgd 1) or without (sgd 2) on the GPU and the CPU from
 * the same inputs; every device pointer off (0 or 1) elements past a 256-byte boundary. */
static void gpu_update(int sgd, size_t n, int work, int off)
{
    const char *name = sgd == 0 ? "adamw" : sgd == 1 ? "sgd momentum" : "sgd";
    if (gpu_skips(work ? 2 : 1))
        return;
    const tsr_adamw_params_t *hp = &adamw_cases[off]; /* with weight decay aligned, without misaligned */
    const float lr = 0.05f, mu = 0.9f, wd = 0.01f, coef = 0.5f;
    tsr_dtype_t wdt = work == 2 ? TSR_DTYPE_BF16 : TSR_DTYPE_F32;
    size_t wsize = work == 2 ? 2 : 4;
    float *p = random_floats(n, -1.0f, 1.0f), *g = random_floats(n, -2.0f, 2.0f);
    float *m = random_floats(n, -0.1f, 0.1f), *v = random_floats(n, 0.0f, 0.01f);
    float *dp = to_gpu(p, n, off), *dg = to_gpu(g, n, off), *dm = to_gpu(m, n, off), *dv = to_gpu(v, n, off);
    void *dw = work ? dev_alloc(n, wsize, off) : NULL;
    void *w = work ? xmalloc(n * wsize) : NULL;
    tsr_status_t rc;
    if (sgd == 0) {
        rc = tsr_kernel_adamw(gpu, n, dp, dg, dm, dv, hp, wdt, dw);
        tsr_kernel_adamw(cpu, n, p, g, m, v, hp, wdt, w);
    } else {
        rc = tsr_kernel_sgd(gpu, n, dp, dg, sgd == 1 ? dm : NULL, lr, mu, wd, coef, wdt, dw);
        tsr_kernel_sgd(cpu, n, p, g, sgd == 1 ? m : NULL, lr, mu, wd, coef, wdt, w);
    }
    float *gp = xmalloc(n * sizeof *gp), *gm = xmalloc(n * sizeof *gm), *gv = xmalloc(n * sizeof *gv);
    void *gw = work ? xmalloc(n * wsize) : NULL;
    from_gpu(gp, dp, n * 4), from_gpu(gm, dm, n * 4), from_gpu(gv, dv, n * 4);
    if (work)
        from_gpu(gw, dw, n * wsize);
    double err = tap_max_rel_err(gp, p, n);
    if (sgd != 2)
        err = fmax(err, tap_max_rel_err(gm, m, n));
    if (sgd == 0)
        err = fmax(err, tap_max_rel_err(gv, v, n));
    ok(rc == TSR_OK && err <= 1e-6, "gpu %s n=%zu %s off=%d: within 1e-6 of the CPU (%.3g)", name, n,
       work_name(work), off, err);
    if (work)
        ok(work_matches(work, gw, gp, n), "gpu %s n=%zu off=%d: the %s is the GPU's new p", name, n, off,
           work_name(work));
    dev_free(dp, 4, off), dev_free(dg, 4, off), dev_free(dm, 4, off), dev_free(dv, 4, off);
    if (work)
        dev_free(dw, wsize, off);
    free(p), free(g), free(m), free(v), free(w), free(gp), free(gm), free(gv), free(gw);
}

/* The GPU sums are held to long double rather than to the CPU's: its tree of partial sums is
 * far more accurate than the CPU's serial sum, whose error at n = 1e6 nears 1e-12. They must
 * equal the CPU's where every order of summation is exact. */
static void gpu_sums(size_t n)
{
    if (gpu_skips(5))
        return;
    float *x = random_floats(n, -1.0f, 1.0f);
    double r2, r1, ra, s2[3], s1[3];
    long_double_sums(x, n, &r2, &r1, &ra);
    tsr_status_t rc = TSR_OK;
    /* Twice aligned, once one float past alignment: the same bits each time. */
    for (int r = 0; r < 3; r++) {
        int off = r == 2;
        float *d = to_gpu(x, n, off);
        rc = rc ? rc : tsr_kernel_sumsq(gpu, d, n, &s2[r]);
        rc = rc ? rc : tsr_kernel_sum(gpu, d, n, &s1[r]);
        dev_free(d, 4, off);
    }
    ok(rc == TSR_OK && fabs(s2[0] - r2) <= 1e-12 * r2 && fabs(s1[0] - r1) <= 1e-12 * ra,
       "gpu sumsq and sum n=%zu within 1e-12 of long double (%.3g, %.3g of sum|x|)", n, fabs(s2[0] - r2) / r2,
       fabs(s1[0] - r1) / ra);
    ok(memcmp(&s2[0], &s2[1], sizeof(double)) == 0 && memcmp(&s1[0], &s1[1], sizeof(double)) == 0,
       "gpu sumsq and sum n=%zu give the same bits twice", n);
    ok(memcmp(&s2[0], &s2[2], sizeof(double)) == 0 && memcmp(&s1[0], &s1[2], sizeof(double)) == 0,
       "gpu sumsq and sum n=%zu give the same bits from a misaligned copy", n);
    free(x);

    double e2, e1, c2 = 0, c1 = 0, g2 = -1, g1 = -1;
    x = exact_floats(n, &e2, &e1);
    tsr_kernel_sumsq(cpu, x, n, &c2);
    tsr_kernel_sum(cpu, x, n, &c1);
    float *d = to_gpu(x, n, 0);
    rc = tsr_kernel_sumsq(gpu, d, n, &g2);
    rc = rc ? rc : tsr_kernel_sum(gpu, d, n, &g1);
    ok(rc == TSR_OK && g2 == c2 && c2 == e2, "gpu sumsq n=%zu of multiples of 1/1024 equals the CPU's", n);
    ok(rc == TSR_OK && g1 == c1 && c1 == e1, "gpu sum n=%zu of multiples of 1/1024 equals the CPU's", n);
    dev_free(d, 4, 0);
    free(x);
}

static void gpu_sums_edges(void)
{
    if (gpu_skips(3))
        return;
    tsr_mem_stats_t before, after;
    tsr_mem_stats(TSR_DEVICE_CUDA, &before);
    double out = -1.0;
    ok(tsr_kernel_sumsq(gpu, NULL, 0, &out) == TSR_OK && out == 0.0, "gpu sumsq of 0 values is 0");
    float x[3] = {0.1f, -3.0f, 1e30f};
    float *d = to_gpu(x, 3, 0);
    ok(tsr_kernel_sumsq(gpu, d, 2, &out) == TSR_OK && out == (double)0.1f * (double)0.1f + 9.0,
       "gpu sumsq of {0.1, -3} is the double sum");
    dev_free(d, 4, 0);
    tsr_mem_stats(TSR_DEVICE_CUDA, &after);
    ok(after.live_allocations == before.live_allocations && after.total_current == before.total_current,
       "gpu reductions free their scratch");
}

static void gpu_axpy(int off)
{
    if (gpu_skips(1))
        return;
    float *x = random_floats(BIG, -1.0f, 1.0f), *y = random_floats(BIG, -1.0f, 1.0f);
    float *dx = to_gpu(x, BIG, off), *dy = to_gpu(y, BIG, 0), *gy = xmalloc(BIG * sizeof *gy);
    tsr_status_t rc = tsr_kernel_axpy(gpu, BIG, 0.731f, dx, dy);
    tsr_kernel_axpy(cpu, BIG, 0.731f, x, y);
    from_gpu(gy, dy, BIG * sizeof *gy);
    double err = tap_max_rel_err(gy, y, BIG);
    ok(rc == TSR_OK && err <= 1e-6, "gpu axpy x off=%d: within 1e-6 of the CPU (%.3g)", off, err);
    dev_free(dx, 4, off), dev_free(dy, 4, 0);
    free(x), free(y), free(gy);
}

static void gpu_scale(int bf16, int off)
{
    if (gpu_skips(1))
        return;
    size_t n = BIG, size = bf16 ? 2 : 4;
    float *x = random_floats(n, -4.0f, 4.0f);
    void *host = x;
    uint16_t *h = NULL;
    if (bf16) {
        h = xmalloc(n * sizeof *h);
        tsr_kernel_cast(cpu, TSR_DTYPE_F32, x, TSR_DTYPE_BF16, h, n);
        host = h;
    }
    tsr_dtype_t dt = bf16 ? TSR_DTYPE_BF16 : TSR_DTYPE_F32;
    void *d = dev_alloc(n, size, off), *back = xmalloc(n * size);
    tsr_device_copy(gpu, d, host, n * size, TSR_COPY_HOST_TO_DEVICE);
    tsr_status_t rc = tsr_kernel_scale(gpu, dt, n, d, -0.377f);
    tsr_kernel_scale(cpu, dt, n, host, -0.377f);
    from_gpu(back, d, n * size);
    ok(rc == TSR_OK && memcmp(back, host, n * size) == 0, "gpu scale %s off=%d: bit for bit the CPU's",
       bf16 ? "bf16" : "f32", off);
    dev_free(d, size, off);
    free(x), free(h), free(back);
}

static void gpu_casts(int off)
{
    if (gpu_skips(4))
        return;
    size_t n = BIG;
    float *x = random_floats(n, -3.0f, 3.0f);
    special_inputs(x); /* the rounding cases first */
    for (size_t i = TABLE + NANS; i < n; i += 97)
        x[i] = ldexpf(x[i], (int)(i % 250) - 125);
    uint16_t *h = xmalloc(n * sizeof *h), *gh = xmalloc(n * sizeof *gh);
    tsr_kernel_cast(cpu, TSR_DTYPE_F32, x, TSR_DTYPE_BF16, h, n);
    float *dx = to_gpu(x, n, off);
    uint16_t *dh = dev_alloc(n, 2, off);
    tsr_status_t rc = tsr_kernel_cast(gpu, TSR_DTYPE_F32, dx, TSR_DTYPE_BF16, dh, n);
    from_gpu(gh, dh, n * 2);
    ok(rc == TSR_OK && bf16_same(gh, h, n), "gpu cast f32 -> bf16 off=%d: bit for bit the CPU's (NaN: a NaN)", off);

    uint16_t *all = xmalloc(65536 * sizeof *all);
    float *back = xmalloc(65536 * sizeof *back);
    for (uint32_t i = 0; i < 65536; i++)
        all[i] = (uint16_t)i;
    tsr_device_copy(gpu, dh, all, 65536 * 2, TSR_COPY_HOST_TO_DEVICE);
    rc = tsr_kernel_cast(gpu, TSR_DTYPE_BF16, dh, TSR_DTYPE_F32, dx, 65536);
    from_gpu(back, dx, 65536 * 4);
    int exact = rc == TSR_OK;
    for (uint32_t i = 0; i < 65536 && exact; i++)
        exact = bits_of(back[i]) == i << 16;
    ok(exact, "gpu cast bf16 -> f32 off=%d is exact for all 65536 values", off);

    float *dy = dev_alloc(n, 4, 1 - off), *y = xmalloc(n * sizeof *y);
    tsr_device_copy(gpu, dx, x, n * 4, TSR_COPY_HOST_TO_DEVICE);
    rc = tsr_kernel_cast(gpu, TSR_DTYPE_F32, dx, TSR_DTYPE_F32, dy, n);
    from_gpu(y, dy, n * 4);
    ok(rc == TSR_OK && floats_identical(x, y, n), "gpu cast f32 -> f32 copies");
    rc = tsr_kernel_cast(gpu, TSR_DTYPE_F32, dx, TSR_DTYPE_F32, dx + 1, 8);
    ok(rc == TSR_ERR_INVALID_ARG, "gpu cast onto an overlapping range is rejected");
    tsr_clear_error();
    dev_free(dx, 4, off), dev_free(dh, 2, off), dev_free(dy, 4, 1 - off);
    free(x), free(h), free(gh), free(all), free(back), free(y);
}

/* Not a test point: AdamW's speed at a GPT-2-sized shard, for the record. */
static void gpu_adamw_speed(void)
{
    if (!gpu)
        return;
    const size_t n = (size_t)1 << 26;
    float *p = dev_alloc(n, 4, 0), *g = dev_alloc(n, 4, 0), *m = dev_alloc(n, 4, 0), *v = dev_alloc(n, 4, 0);
    uint16_t *w = dev_alloc(n, 2, 0);
    tsr_device_memset(gpu, p, 0, n * 4), tsr_device_memset(gpu, g, 0, n * 4);
    tsr_device_memset(gpu, m, 0, n * 4), tsr_device_memset(gpu, v, 0, n * 4);
    tsr_kernel_adamw(gpu, n, p, g, m, v, &adamw_cases[0], TSR_DTYPE_BF16, w);
    tsr_device_sync(gpu);
    const int reps = 10;
    double t0 = tsr_time_now();
    for (int r = 0; r < reps; r++)
        tsr_kernel_adamw(gpu, n, p, g, m, v, &adamw_cases[0], TSR_DTYPE_BF16, w);
    tsr_device_sync(gpu);
    double t = (tsr_time_now() - t0) / reps;
    double s0 = tsr_time_now(), sum;
    for (int r = 0; r < reps; r++)
        tsr_kernel_sumsq(gpu, g, n, &sum);
    double ts = (tsr_time_now() - s0) / reps;
    diag("gpu adamw n=2^26 with a bf16 copy: %.3f ms, %.0f GB/s; sumsq: %.3f ms, %.0f GB/s", t * 1e3,
         30.0 * (double)n / t / 1e9, ts * 1e3, 4.0 * (double)n / ts / 1e9);
    dev_free(p, 4, 0), dev_free(g, 4, 0), dev_free(m, 4, 0), dev_free(v, 4, 0), dev_free(w, 2, 0);
}

static void gpu_all(void)
{
    for (int off = 0; off < 2; off++)
        for (int work = 0; work < 3; work++)
            for (int sgd = 0; sgd < 3; sgd++) {
                gpu_update(sgd, 1, work, off);
                gpu_update(sgd, BIG, work, off);
            }
    gpu_sums(1);
    gpu_sums(7);
    gpu_sums(BIG);
    gpu_sums_edges();
    for (int off = 0; off < 2; off++) {
        gpu_axpy(off);
        gpu_scale(0, off);
        gpu_scale(1, off);
        gpu_casts(off);
    }
    if (gpu_skips(1))
        return;
    rejected(tsr_kernel_scale(gpu, TSR_DTYPE_I64, 4, NULL, 1.0f), TSR_ERR_NOT_SUPPORTED, "scale",
             "i64 on the GPU");
    gpu_adamw_speed();
}

int main(int argc, char **argv)
{
    tap_init(&argc, &argv, "1");
    seed = tap_seed();
    if (tsr_device_create(TSR_DEVICE_CPU, 0, &cpu) != TSR_OK) {
        fprintf(stderr, "# cannot open the CPU device: %s\n", tsr_last_error());
        return 1;
    }
    cpu_adamw();
    cpu_sgd();
    cpu_sums();
    cpu_axpy_scale();
    cpu_casts();
    cpu_errors();

    if (!tsr_device_kind_built(TSR_DEVICE_CUDA))
        no_gpu_reason = "no CUDA backend in this build";
    else if (tsr_device_count(TSR_DEVICE_CUDA) > 0 && tsr_device_create(TSR_DEVICE_CUDA, 0, &gpu) != TSR_OK)
        diag("a GPU is visible but does not open (%s): its points fail", tsr_last_error());
    if (!gpu && tsr_device_count(TSR_DEVICE_CUDA) > 0)
        ok(0, "the visible GPU opens");
    gpu_all();

    tsr_device_destroy(&gpu);
    tsr_device_destroy(&cpu);
    return tap_done();
}
