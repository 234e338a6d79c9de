/*
 * test_device_cpu: the CPU device. Kind names, copies in every direction (also strided 2D
 * copies), memset and fill, and row-major GEMM for every transpose, several shapes, padded
 * leading dimensions and alpha/beta, against a double-precision triple loop.
 *
 * Inputs are drawn with a fresh seed each run (TSR_TEST_SEED=N repeats a run); the seed is
 * printed as a diagnostic.
 */
#include <time.h>
#include <tessera.h>

#include "tap.h"
#include "test_device_copy2d.h"

static tsr_device_t dev;
static uint64_t seed;
static uint64_t next_stream; /* the test's own counter of random streams */

/* A device buffer of n floats (at least one) filled from host memory. */
static float *to_device(const float *host, size_t n)
{
    void *p = NULL;
    size_t bytes = (n ? n : 1) * sizeof(float);
    if (tsr_device_alloc(dev, TSR_MEM_WORKSPACE, bytes, &p) != TSR_OK || !p) {
        fprintf(stderr, "# device alloc of %zu bytes failed: %s\n", bytes, tsr_last_error());
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    if (n)
        tsr_device_copy(dev, p, host, n * sizeof(float), TSR_COPY_HOST_TO_DEVICE);
    return (float *)p;
}

static void free_device(float **p)
{
    void *v = *p;
    tsr_device_free(dev, &v);
    *p = NULL;
}

/* A rows x ld host matrix: the first cols of each row random in [-1, 1), the rest NaN. */
static float *random_matrix(int rows, int cols, int ld)
{
    size_t total = (size_t)rows * (size_t)ld;
    float *m = malloc((total ? total : 1) * sizeof(float));
    float *row = malloc((size_t)(cols ? cols : 1) * sizeof(float));
    uint64_t stream = next_stream++;
    for (int r = 0; r < rows; r++) {
        tsr_rng_fill_uniform(seed, stream, (uint64_t)r * (uint64_t)cols, (size_t)cols, -1.0f, 1.0f, row);
        for (int c = 0; c < ld; c++)
            m[(size_t)r * ld + c] = c < cols ? row[c] : NAN;
    }
    free(row);
    return m;
}

/* Run one GEMM case and record two points: the result, and that nothing else was written. */
static void gemm_case(int ta, int tb, int m, int n, int k, int pad_a, int pad_b, int pad_c, float alpha, float beta)
{
    /* Stored shapes, row-major. */
    int a_rows = ta ? k : m, a_cols = ta ? m : k;
    int b_rows = tb ? n : k, b_cols = tb ? k : n;
    int lda = (a_cols > 0 ? a_cols : 1) + pad_a, ldb = (b_cols > 0 ? b_cols : 1) + pad_b;
    int ldc = (n > 0 ? n : 1) + pad_c;
    float *a = random_matrix(a_rows, a_cols, lda), *b = random_matrix(b_rows, b_cols, ldb);
    float *c0 = random_matrix(m, n, ldc);
    if (beta == 0.0f) /* beta == 0: C must not be read, so make it poison */
        for (size_t i = 0; i < (size_t)m * ldc; i++)
            c0[i] = NAN;

    size_t na = (size_t)a_rows * lda, nb = (size_t)b_rows * ldb, nc = (size_t)m * ldc;
    float *da = to_device(a, na), *db = to_device(b, nb), *dc = to_device(c0, nc);
    tsr_status_t rc = tsr_device_gemm_f32(dev, ta ? TSR_TRANS : TSR_NO_TRANS, tb ? TSR_TRANS : TSR_NO_TRANS, m, n, k,
                                          alpha, da, lda, db, ldb, beta, dc, ldc);
    rc = rc == TSR_OK ? tsr_device_sync(dev) : rc;
    float *c = malloc((nc ? nc : 1) * sizeof(float)), *a_after = malloc((na ? na : 1) * sizeof(float));
    float *b_after = malloc((nb ? nb : 1) * sizeof(float));
    if (nc)
        tsr_device_copy(dev, c, dc, nc * sizeof(float), TSR_COPY_DEVICE_TO_HOST);
    if (na)
        tsr_device_copy(dev, a_after, da, na * sizeof(float), TSR_COPY_DEVICE_TO_HOST);
    if (nb)
        tsr_device_copy(dev, b_after, db, nb * sizeof(float), TSR_COPY_DEVICE_TO_HOST);

    /* Reference in double. The error is relative to the size of the terms summed,
     * |alpha| |op(A)| |op(B)| + |beta| |C|, the scale of float rounding: a single element
     * that cancels to near zero must not fail a correct product. */
    double diff = 0, scale = 0;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double sum = 0, abs_sum = 0;
            for (int l = 0; l < k; l++) {
                double x = ta ? a[(size_t)l * lda + i] : a[(size_t)i * lda + l];
                double y = tb ? b[(size_t)j * ldb + l] : b[(size_t)l * ldb + j];
                sum += x * y;
                abs_sum += fabs(x * y);
            }
            double cij = beta != 0.0f ? (double)c0[(size_t)i * ldc + j] : 0.0;
            double want = (double)alpha * sum + (double)beta * cij;
            double d = fabs((double)c[(size_t)i * ldc + j] - want);
            if (d > diff || d != d)
                diff = d;
            double sc = fabs((double)alpha) * abs_sum + fabs((double)beta * cij);
            scale = sc > scale ? sc : scale;
        }
    double err = diff / (scale > 1e-30 ? scale : 1e-30);
    const char *tn[2] = {"N", "T"};
    ok(rc == TSR_OK && err <= 1e-5,
       "gemm %s%s m=%d n=%d k=%d lda=%d ldb=%d ldc=%d alpha=%g beta=%g: relative error %.3g <= 1e-5 (status %s)",
       tn[ta], tn[tb], m, n, k, lda, ldb, ldc, (double)alpha, (double)beta, err, tsr_status_name(rc));

    /* C's padding keeps its bits, and A and B are not written. */
    int untouched = memcmp(a, a_after, na * sizeof(float)) == 0 && memcmp(b, b_after, nb * sizeof(float)) == 0;
    for (int i = 0; i < m; i++)
        untouched &= memcmp(&c[(size_t)i * ldc + n], &c0[(size_t)i * ldc + n], (size_t)(ldc - n) * sizeof(float)) == 0;
    ok(untouched, "gemm %s%s m=%d n=%d k=%d ldc=%d: A, B and C's padding columns are not written", tn[ta], tn[tb], m,
       n, k, ldc);

    free_device(&da), free_device(&db), free_device(&dc);
    free(a), free(b), free(c0), free(c), free(a_after), free(b_after);
}

int main(int argc, char **argv)
{
    tap_init(&argc, &argv, "1");

    seed = tap_seed();

    /* --- Kinds ----------------------------------------------------------------------- */
    tsr_device_kind_t kind = TSR_DEVICE_CUDA;
    is_int(tsr_device_kind_parse("cpu", &kind), TSR_OK, "tsr_device_kind_parse(\"cpu\") succeeds");
    is_int(kind, TSR_DEVICE_CPU, "\"cpu\" is TSR_DEVICE_CPU");
    kind = TSR_DEVICE_CPU;
    is_int(tsr_device_kind_parse("cuda", &kind), TSR_OK, "tsr_device_kind_parse(\"cuda\") succeeds");
    is_int(kind, TSR_DEVICE_CUDA, "\"cuda\" is TSR_DEVICE_CUDA");
    is_int(tsr_device_kind_parse("tpu", &kind), TSR_ERR_INVALID_ARG, "tsr_device_kind_parse(\"tpu\") fails");
    is_int(tsr_device_kind_parse("", &kind), TSR_ERR_INVALID_ARG, "tsr_device_kind_parse(\"\") fails");
    is_int(tsr_device_kind_parse("cpux", &kind), TSR_ERR_INVALID_ARG, "tsr_device_kind_parse(\"cpux\") fails");
    tsr_clear_error();
    is_str(tsr_device_kind_name(TSR_DEVICE_CPU), "cpu", "tsr_device_kind_name(TSR_DEVICE_CPU)");
    is_str(tsr_device_kind_name(TSR_DEVICE_CUDA), "cuda", "tsr_device_kind_name(TSR_DEVICE_CUDA)");
    is_int(tsr_device_kind_built(TSR_DEVICE_CPU), 1, "tsr_device_kind_built(TSR_DEVICE_CPU) is 1");
    is_int(tsr_device_count(TSR_DEVICE_CPU), 1, "tsr_device_count(TSR_DEVICE_CPU) is 1");

    tsr_device_t other = NULL;
    is_int(tsr_device_create(TSR_DEVICE_CPU, 3, &other), TSR_OK, "tsr_device_create(CPU, index 3) succeeds (index ignored)");
    ok(other != NULL && tsr_device_kind(other) == TSR_DEVICE_CPU, "a CPU device opened with index 3 is a CPU device");
    tsr_device_destroy(&other);
    ok(other == NULL, "tsr_device_destroy sets the handle to NULL");

    tsr_status_t rc = tsr_device_create(TSR_DEVICE_CPU, 0, &dev);
    is_int(rc, TSR_OK, "tsr_device_create(TSR_DEVICE_CPU, 0) succeeds");
    if (rc != TSR_OK || !dev) {
        diag("cannot go on without a CPU device: %s", tsr_last_error());
        return tap_done();
    }
    is_int(tsr_device_kind(dev), TSR_DEVICE_CPU, "tsr_device_kind of the CPU device");
    is_int(tsr_device_sync(dev), TSR_OK, "tsr_device_sync on the CPU succeeds");

    /* --- Copies ---------------------------------------------------------------------- */
    {
        enum { BYTES = 1001, GUARD = 37 };
        unsigned char src[BYTES], dst[BYTES + GUARD];
        for (int i = 0; i < BYTES; i++)
            src[i] = (unsigned char)(i * 7 + 3);
        void *d1 = NULL, *d2 = NULL;
        rc = tsr_device_alloc(dev, TSR_MEM_WORKSPACE, BYTES, &d1);
        rc = rc == TSR_OK ? tsr_device_alloc(dev, TSR_MEM_WORKSPACE, BYTES + GUARD, &d2) : rc;
        is_int(rc, TSR_OK, "alloc of two copy buffers succeeds");

        is_int(tsr_device_copy(dev, d1, src, BYTES, TSR_COPY_HOST_TO_DEVICE), TSR_OK, "copy host to device");
        memset(dst, 0, sizeof dst);
        is_int(tsr_device_copy(dev, dst, d1, BYTES, TSR_COPY_DEVICE_TO_HOST), TSR_OK, "copy device to host");
        ok(memcmp(dst, src, BYTES) == 0, "host -> device -> host gives the bytes back");

        is_int(tsr_device_memset(dev, d2, 0xee, BYTES + GUARD), TSR_OK, "memset of the second buffer");
        is_int(tsr_device_copy(dev, d2, d1, BYTES, TSR_COPY_DEVICE_TO_DEVICE), TSR_OK, "copy device to device");
        memset(dst, 0, sizeof dst);
        tsr_device_copy(dev, dst, d2, BYTES + GUARD, TSR_COPY_DEVICE_TO_HOST);
        int guard_ok = 1;
        for (int i = BYTES; i < BYTES + GUARD; i++)
            guard_ok &= dst[i] == 0xee;
        ok(memcmp(dst, src, BYTES) == 0, "device -> device copies the bytes");
        ok(guard_ok, "device -> device writes no byte past the count");

        /* Copies at odd offsets and lengths. */
        unsigned char part[64];
        memset(part, 0, sizeof part);
        tsr_device_copy(dev, part + 1, (unsigned char *)d1 + 5, 13, TSR_COPY_DEVICE_TO_HOST);
        ok(memcmp(part + 1, src + 5, 13) == 0 && part[0] == 0 && part[14] == 0,
           "a 13-byte copy from offset 5 copies exactly those bytes");
        is_int(tsr_device_copy(dev, dst, d1, 0, TSR_COPY_DEVICE_TO_HOST), TSR_OK, "a copy of 0 bytes succeeds");

        /* memset a range. */
        is_int(tsr_device_memset(dev, d2, 0, BYTES + GUARD), TSR_OK, "memset to 0");
        is_int(tsr_device_memset(dev, (unsigned char *)d2 + 13, 0xab, 501), TSR_OK, "memset of 501 bytes at offset 13");
        tsr_device_copy(dev, dst, d2, BYTES + GUARD, TSR_COPY_DEVICE_TO_HOST);
        int set_ok = 1;
        for (int i = 0; i < BYTES + GUARD; i++)
            set_ok &= dst[i] == ((i >= 13 && i < 13 + 501) ? 0xab : 0);
        ok(set_ok, "memset sets exactly bytes [13, 514) to 0xab and leaves the rest 0");
        is_int(tsr_device_memset(dev, d2, 0x11, 0), TSR_OK, "memset of 0 bytes succeeds");
        tsr_device_copy(dev, dst, d2, 1, TSR_COPY_DEVICE_TO_HOST);
        is_int(dst[0], 0, "memset of 0 bytes writes nothing");

        tsr_device_free(dev, &d1);
        tsr_device_free(dev, &d2);
    }

    check_copy_2d(dev);

    /* --- fill_f32 -------------------------------------------------------------------- */
    {
        enum { N = 300, OFF = 5, LEN = 257 };
        float host[N];
        void *d = NULL;
        rc = tsr_device_alloc(dev, TSR_MEM_ACTIVATIONS, N * sizeof(float), &d);
        is_int(rc, TSR_OK, "alloc of a fill buffer succeeds");
        tsr_device_memset(dev, d, 0, N * sizeof(float));
        static const float values[] = {1.5f, -3.25e-5f, 0.0f, -0.0f, 1e30f};
        for (size_t v = 0; v < sizeof values / sizeof values[0]; v++) {
            tsr_device_memset(dev, d, 0, N * sizeof(float));
            rc = tsr_device_fill_f32(dev, (float *)d + OFF, values[v], LEN);
            tsr_device_copy(dev, host, d, sizeof host, TSR_COPY_DEVICE_TO_HOST);
            int good = rc == TSR_OK;
            for (int i = 0; i < N; i++) {
                float want = (i >= OFF && i < OFF + LEN) ? values[v] : 0.0f;
                good &= memcmp(&host[i], &want, sizeof want) == 0;
            }
            ok(good, "fill_f32 of %d floats at offset %d with %g sets exactly those, bit for bit", LEN, OFF,
               (double)values[v]);
        }
        rc = tsr_device_fill_f32(dev, (float *)d + 1, NAN, 3);
        tsr_device_copy(dev, host, d, sizeof host, TSR_COPY_DEVICE_TO_HOST);
        ok(rc == TSR_OK && isnan(host[1]) && isnan(host[3]) && !isnan(host[4]) && !isnan(host[0]),
           "fill_f32 with NaN of 3 floats");
        tsr_device_memset(dev, d, 0, N * sizeof(float));
        rc = tsr_device_fill_f32(dev, (float *)d, 7.0f, 0);
        tsr_device_copy(dev, host, d, sizeof host, TSR_COPY_DEVICE_TO_HOST);
        ok(rc == TSR_OK && host[0] == 0.0f, "fill_f32 of 0 floats succeeds and writes nothing");
        tsr_device_free(dev, &d);
    }

    /* --- GEMM -------------------------------------------------------------------------- */
    static const int shapes[][3] = {
        {1, 1, 1}, {1, 7, 5}, {6, 1, 3}, {4, 5, 1}, {13, 17, 19}, {32, 8, 64}, {3, 64, 2}, {65, 33, 17}, {1, 1, 40},
    };
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                int m = shapes[s][0], n = shapes[s][1], k = shapes[s][2];
                gemm_case(ta, tb, m, n, k, 0, 0, 0, 1.5f, -0.75f);
                gemm_case(ta, tb, m, n, k, 3, 5, 2, -0.5f, 0.0f); /* beta 0: C is NaN, not read */
                gemm_case(ta, tb, m, n, k, 1 + (int)s % 4, 7, 9, 0.75f, 2.0f);
            }
    /* k = 0: C = beta * C. */
    gemm_case(0, 0, 5, 6, 0, 0, 0, 1, 1.0f, 0.5f);
    gemm_case(1, 1, 5, 6, 0, 0, 0, 1, 1.0f, 0.0f); /* C was NaN: must become 0 */

    /* Bad arguments. */
    {
        float *da = NULL, *db = NULL, *dc = NULL;
        float zeros[64] = {0};
        da = to_device(zeros, 64), db = to_device(zeros, 64), dc = to_device(zeros, 64);
        rc = tsr_device_gemm_f32(dev, TSR_NO_TRANS, TSR_NO_TRANS, -1, 2, 2, 1.0f, da, 2, db, 2, 0.0f, dc, 2);
        is_int(rc, TSR_ERR_INVALID_ARG, "gemm with m = -1 fails with TSR_ERR_INVALID_ARG");
        rc = tsr_device_gemm_f32(dev, TSR_NO_TRANS, TSR_NO_TRANS, 4, 4, 4, 1.0f, da, 3, db, 4, 0.0f, dc, 4);
        is_int(rc, TSR_ERR_INVALID_ARG, "gemm with lda 3 < k 4 (A not transposed) fails with TSR_ERR_INVALID_ARG");
        rc = tsr_device_gemm_f32(dev, TSR_NO_TRANS, TSR_NO_TRANS, 4, 4, 4, 1.0f, da, 4, db, 4, 0.0f, dc, 3);
        is_int(rc, TSR_ERR_INVALID_ARG, "gemm with ldc 3 < n 4 fails with TSR_ERR_INVALID_ARG");
        tsr_clear_error();
        free_device(&da), free_device(&db), free_device(&dc);
    }

    tsr_device_destroy(&dev);
    ok(dev == NULL, "tsr_device_destroy of the CPU device sets the handle to NULL");
    return tap_done();
}
