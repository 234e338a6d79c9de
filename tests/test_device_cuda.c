/*
 * test_device_cuda: the CUDA device.
 *   - Backend not built: creating a CUDA device fails with TSR_ERR_NOT_SUPPORTED, saying CUDA.
 *   - Built but no GPU visible: the whole test is skipped.
 *   - A GPU: tracked allocation, copies (also 2D), memset, fill and GEMM (every transpose) compared with
 *     the CPU device.
 * Inputs are drawn with a fresh seed each run (TSR_TEST_SEED=N repeats a run).
 */
#include <ctype.h>
#include <time.h>
#include <tessera.h>

#include "tap.h"
#include "test_device_copy2d.h"

static int contains_ci(const char *haystack, const char *needle)
{
    if (!haystack)
        return 0;
    size_t hn = strlen(haystack), nn = strlen(needle);
    for (size_t i = 0; i + nn <= hn; i++) {
        size_t j = 0;
        while (j < nn && tolower((unsigned char)haystack[i + j]) == tolower((unsigned char)needle[j]))
            j++;
        if (j == nn)
            return 1;
    }
    return 0;
}

static void not_built(void)
{
    is_int(TSR_HAVE_CUDA, 0, "TSR_HAVE_CUDA is 0 when the backend is not built");
    is_int(tsr_device_count(TSR_DEVICE_CUDA), 0, "tsr_device_count(CUDA) is 0 without the backend");
    tsr_clear_error();
    tsr_device_t d = NULL;
    tsr_status_t rc = tsr_device_create(TSR_DEVICE_CUDA, 0, &d);
    is_int(rc, TSR_ERR_NOT_SUPPORTED, "tsr_device_create(CUDA) fails with TSR_ERR_NOT_SUPPORTED");
    is_int(tsr_last_error_status(), TSR_ERR_NOT_SUPPORTED, "the last error is TSR_ERR_NOT_SUPPORTED");
    ok(contains_ci(tsr_last_error(), "cuda"), "the error detail mentions CUDA (\"%s\")", tsr_last_error());
    if (rc == TSR_OK)
        tsr_device_destroy(&d);
    tsr_mem_stats_t s;
    tsr_mem_stats(TSR_DEVICE_CUDA, &s);
    ok(s.total_current == 0 && s.total_peak == 0 && s.live_allocations == 0,
       "nothing is accounted under CUDA when there is no CUDA backend");
    /* The CPU device is not affected. */
    rc = tsr_device_create(TSR_DEVICE_CPU, 0, &d);
    is_int(rc, TSR_OK, "the CPU device still opens");
    tsr_device_destroy(&d);
}

/* ---------------------------------------------------------------------------------------- */
/* With a GPU. */

static tsr_device_t gpu, cpu;
static uint64_t seed, next_stream;

static void *alloc_on(tsr_device_t d, size_t bytes)
{
    void *p = NULL;
    if (tsr_device_alloc(d, TSR_MEM_WORKSPACE, bytes ? bytes : 1, &p) != TSR_OK || !p) {
        fprintf(stderr, "# alloc of %zu bytes failed: %s\n", bytes, tsr_last_error());
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    return p;
}

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

/* Run the GEMM on device d from host inputs; write the whole C (m x ldc) back into c_out. */
static tsr_status_t gemm_on(tsr_device_t d, int ta, int tb, int m, int n, int k, float alpha, const float *a, size_t na,
                            int lda, const float *b, size_t nb, int ldb, float beta, const float *c0, float *c_out,
                            size_t nc, int ldc)
{
    float *da = alloc_on(d, na * sizeof(float)), *db = alloc_on(d, nb * sizeof(float));
    float *dc = alloc_on(d, nc * sizeof(float));
    tsr_status_t rc = TSR_OK;
    if (na)
        rc = rc ? rc : tsr_device_copy(d, da, a, na * sizeof(float), TSR_COPY_HOST_TO_DEVICE);
    if (nb)
        rc = rc ? rc : tsr_device_copy(d, db, b, nb * sizeof(float), TSR_COPY_HOST_TO_DEVICE);
    if (nc)
        rc = rc ? rc : tsr_device_copy(d, dc, c0, nc * sizeof(float), TSR_COPY_HOST_TO_DEVICE);
    rc = rc ? rc
            : tsr_device_gemm_f32(d, ta ? TSR_TRANS : TSR_NO_TRANS, tb ? TSR_TRANS : TSR_NO_TRANS, m, n, k, alpha, da,
                                  lda, db, ldb, beta, dc, ldc);
    rc = rc ? rc : tsr_device_sync(d);
    if (nc)
        rc = rc ? rc : tsr_device_copy(d, c_out, dc, nc * sizeof(float), TSR_COPY_DEVICE_TO_HOST);
    void *p = da;
    tsr_device_free(d, &p);
    p = db;
    tsr_device_free(d, &p);
    p = dc;
    tsr_device_free(d, &p);
    return rc;
}

static void gemm_case(int ta, int tb, int m, int n, int k, int pad, float alpha, float beta)
{
    int a_rows = ta ? k : m, a_cols = ta ? m : k, b_rows = tb ? n : k, b_cols = tb ? k : n;
    int lda = (a_cols ? a_cols : 1) + pad, ldb = (b_cols ? b_cols : 1) + 2 * pad, ldc = (n ? n : 1) + pad;
    size_t na = (size_t)a_rows * lda, nb = (size_t)b_rows * ldb, nc = (size_t)m * ldc;
    float *a = random_matrix(a_rows, a_cols, lda), *b = random_matrix(b_rows, b_cols, ldb);
    float *c0 = random_matrix(m, n, ldc);
    if (beta == 0.0f)
        for (size_t i = 0; i < nc; i++)
            c0[i] = NAN;
    float *c_gpu = malloc((nc ? nc : 1) * sizeof(float)), *c_cpu = malloc((nc ? nc : 1) * sizeof(float));
    tsr_status_t rc_gpu = gemm_on(gpu, ta, tb, m, n, k, alpha, a, na, lda, b, nb, ldb, beta, c0, c_gpu, nc, ldc);
    tsr_status_t rc_cpu = gemm_on(cpu, ta, tb, m, n, k, alpha, a, na, lda, b, nb, ldb, beta, c0, c_cpu, nc, ldc);

    /* The difference is relative to the size of the terms summed, |alpha| |op(A)| |op(B)| +
     * |beta| |C| (the scale of float rounding), so an element that cancels to near zero does
     * not fail a correct product. Both results must be finite: NaN would hide a difference. */
    double diff = 0, scale = 0;
    int pad_ok = 1, finite = 1;
    for (int i = 0; i < m; i++) {
        for (int j = 0; j < n; j++) {
            double abs_sum = 0;
            for (int l = 0; l < k; l++)
                abs_sum += fabs((double)(ta ? a[(size_t)l * lda + i] : a[(size_t)i * lda + l]) *
                                (double)(tb ? b[(size_t)j * ldb + l] : b[(size_t)l * ldb + j]));
            double cij = beta != 0.0f ? (double)c0[(size_t)i * ldc + j] : 0.0;
            double sc = fabs((double)alpha) * abs_sum + fabs((double)beta * cij);
            scale = sc > scale ? sc : scale;
            float g = c_gpu[(size_t)i * ldc + j], h = c_cpu[(size_t)i * ldc + j];
            finite &= isfinite(g) && isfinite(h);
            double d = fabs((double)g - (double)h);
            diff = d > diff ? d : diff;
        }
        pad_ok &= memcmp(&c_gpu[(size_t)i * ldc + n], &c0[(size_t)i * ldc + n], (size_t)(ldc - n) * sizeof(float)) == 0;
    }
    double err = diff / (scale > 1e-30 ? scale : 1e-30);
    const char *tn[2] = {"N", "T"};
    ok(rc_gpu == TSR_OK && rc_cpu == TSR_OK && finite && err <= 1e-5,
       "gemm %s%s m=%d n=%d k=%d lda=%d ldb=%d ldc=%d alpha=%g beta=%g: GPU equals CPU within 1e-5 (%.3g; %s/%s)",
       tn[ta], tn[tb], m, n, k, lda, ldb, ldc, (double)alpha, (double)beta, err, tsr_status_name(rc_gpu),
       tsr_status_name(rc_cpu));
    ok(pad_ok, "gemm %s%s m=%d n=%d k=%d on the GPU leaves C's padding columns alone", tn[ta], tn[tb], m, n, k);
    free(a), free(b), free(c0), free(c_gpu), free(c_cpu);
}

static void with_gpu(void)
{
    is_int(TSR_HAVE_CUDA, 1, "TSR_HAVE_CUDA is 1");
    tsr_status_t rc = tsr_device_create(TSR_DEVICE_CUDA, 0, &gpu);
    is_int(rc, TSR_OK, "tsr_device_create(CUDA, 0) succeeds");
    rc = rc ? rc : tsr_device_create(TSR_DEVICE_CPU, 0, &cpu);
    is_int(rc, TSR_OK, "tsr_device_create(CPU) succeeds");
    if (rc != TSR_OK) {
        diag("cannot go on: %s", tsr_last_error());
        return;
    }
    is_int(tsr_device_kind(gpu), TSR_DEVICE_CUDA, "tsr_device_kind of the GPU device is CUDA");

    tsr_device_t bad = NULL;
    int count = tsr_device_count(TSR_DEVICE_CUDA);
    rc = tsr_device_create(TSR_DEVICE_CUDA, count, &bad);
    is_int(rc, TSR_ERR_CUDA, "tsr_device_create(CUDA, %d) (one past the last GPU) fails with TSR_ERR_CUDA", count);
    if (rc == TSR_OK)
        tsr_device_destroy(&bad);
    tsr_clear_error();

    /* --- Accounting ------------------------------------------------------------------------ */
    {
        tsr_mem_stats_t g0, c0, g1, c1;
        tsr_mem_stats(TSR_DEVICE_CUDA, &g0);
        tsr_mem_stats(TSR_DEVICE_CPU, &c0);
        void *p = NULL, *q = NULL;
        rc = tsr_device_alloc(gpu, TSR_MEM_PARAMS, 1000003, &p);
        rc = rc ? rc : tsr_device_alloc(gpu, TSR_MEM_GRADS, 777, &q);
        is_int(rc, TSR_OK, "two GPU allocations succeed");
        ok(p && (uintptr_t)p % TSR_DEVICE_ALIGNMENT == 0 && q && (uintptr_t)q % TSR_DEVICE_ALIGNMENT == 0,
           "GPU blocks are aligned to TSR_DEVICE_ALIGNMENT");
        tsr_mem_stats(TSR_DEVICE_CUDA, &g1);
        tsr_mem_stats(TSR_DEVICE_CPU, &c1);
        is_int(g1.current[TSR_MEM_PARAMS] - g0.current[TSR_MEM_PARAMS], 1000003, "CUDA current[params] grew by 1000003");
        is_int(g1.current[TSR_MEM_GRADS] - g0.current[TSR_MEM_GRADS], 777, "CUDA current[grads] grew by 777");
        is_int(g1.total_current - g0.total_current, 1000003 + 777, "CUDA total_current grew by both");
        is_int(g1.live_allocations - g0.live_allocations, 2, "CUDA live_allocations grew by 2");
        ok(g1.total_peak >= g1.total_current, "CUDA total_peak is at least total_current");
        ok(memcmp(&c0, &c1, sizeof c0) == 0, "GPU allocations leave the CPU accounting unchanged");
        tsr_device_free(gpu, &p);
        tsr_device_free(gpu, &q);
        ok(p == NULL && q == NULL, "freeing GPU memory sets the pointers to NULL");
        tsr_mem_stats(TSR_DEVICE_CUDA, &g1);
        ok(g1.total_current == g0.total_current && g1.live_allocations == g0.live_allocations,
           "after the frees the CUDA accounting is back to the start");
        p = &g0;
        is_int(tsr_device_alloc(gpu, TSR_MEM_PARAMS, 0, &p), TSR_OK, "GPU alloc of 0 bytes succeeds");
        ok(p == NULL, "GPU alloc of 0 bytes gives NULL");
    }

    /* --- Copies, memset, fill ---------------------------------------------------------------- */
    {
        enum { BYTES = 4099, GUARD = 61 };
        unsigned char src[BYTES], dst[BYTES + GUARD];
        for (int i = 0; i < BYTES; i++)
            src[i] = (unsigned char)(i * 13 + 1);
        unsigned char *d1 = alloc_on(gpu, BYTES), *d2 = alloc_on(gpu, BYTES + GUARD);
        is_int(tsr_device_copy(gpu, d1, src, BYTES, TSR_COPY_HOST_TO_DEVICE), TSR_OK, "GPU copy host to device");
        memset(dst, 0, sizeof dst);
        is_int(tsr_device_copy(gpu, dst, d1, BYTES, TSR_COPY_DEVICE_TO_HOST), TSR_OK, "GPU copy device to host");
        ok(memcmp(dst, src, BYTES) == 0, "host -> GPU -> host gives the bytes back");
        is_int(tsr_device_memset(gpu, d2, 0xee, BYTES + GUARD), TSR_OK, "GPU memset");
        is_int(tsr_device_copy(gpu, d2, d1, BYTES, TSR_COPY_DEVICE_TO_DEVICE), TSR_OK, "GPU copy device to device");
        tsr_device_copy(gpu, dst, d2, BYTES + GUARD, TSR_COPY_DEVICE_TO_HOST);
        int guard_ok = 1;
        for (int i = BYTES; i < BYTES + GUARD; i++)
            guard_ok &= dst[i] == 0xee;
        ok(memcmp(dst, src, BYTES) == 0 && guard_ok, "GPU device -> device copies exactly the bytes asked");

        tsr_device_memset(gpu, d2, 0, BYTES + GUARD);
        is_int(tsr_device_memset(gpu, d2 + 7, 0xab, 1001), TSR_OK, "GPU memset of 1001 bytes at offset 7");
        tsr_device_copy(gpu, dst, d2, BYTES + GUARD, TSR_COPY_DEVICE_TO_HOST);
        int set_ok = 1;
        for (int i = 0; i < BYTES + GUARD; i++)
            set_ok &= dst[i] == ((i >= 7 && i < 7 + 1001) ? 0xab : 0);
        ok(set_ok, "GPU memset sets exactly bytes [7, 1008)");

        enum { N = 1000, OFF = 3, LEN = 777 };
        float host[N];
        float *f = (float *)(void *)d2;
        tsr_device_memset(gpu, f, 0, N * sizeof(float));
        is_int(tsr_device_fill_f32(gpu, f + OFF, -2.5f, LEN), TSR_OK, "GPU fill_f32");
        tsr_device_copy(gpu, host, f, sizeof host, TSR_COPY_DEVICE_TO_HOST);
        int fill_ok = 1;
        for (int i = 0; i < N; i++)
            fill_ok &= host[i] == ((i >= OFF && i < OFF + LEN) ? -2.5f : 0.0f);
        ok(fill_ok, "GPU fill_f32 sets exactly floats [3, 780) to -2.5");

        void *p = d1;
        tsr_device_free(gpu, &p);
        p = d2;
        tsr_device_free(gpu, &p);
    }

    check_copy_2d(gpu);

    /* --- GEMM against the CPU device ------------------------------------------------------ */
    static const int shapes[][3] = {{1, 1, 1}, {1, 9, 4}, {7, 1, 5}, {5, 6, 1}, {33, 17, 29}, {64, 48, 96}};
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                gemm_case(ta, tb, shapes[s][0], shapes[s][1], shapes[s][2], 0, 1.25f, -0.5f);
                gemm_case(ta, tb, shapes[s][0], shapes[s][1], shapes[s][2], 3, -0.75f, 0.0f);
            }

    tsr_device_destroy(&gpu);
    ok(gpu == NULL, "tsr_device_destroy sets the GPU handle to NULL");
    tsr_device_destroy(&cpu);
}

int main(int argc, char **argv)
{
    tap_init(&argc, &argv, "1");
    int built = tsr_device_kind_built(TSR_DEVICE_CUDA);
    if (!built) {
        not_built();
        return tap_done();
    }
    if (tsr_device_count(TSR_DEVICE_CUDA) == 0)
        tap_skip_all("no GPU");

    seed = tap_seed();
    with_gpu();
    return tap_done();
}
