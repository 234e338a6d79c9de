/*
 * kernels_gemm.c: tsr_kernel_gemm, the GEMM with epilogues of tessera/kernels.h. Every
 * argument is checked here, once for both devices, so that a rejected call queues nothing;
 * then the CPU version (cpu_gemm.c) or the CUDA version (cuda_gemm.c) runs it.
 */
#include "device/gemm_impl.h"

static const char *const epilogue_names[] = {
    [TSR_EPILOGUE_NONE] = "NONE",
    [TSR_EPILOGUE_BIAS] = "BIAS",
    [TSR_EPILOGUE_BIAS_GELU] = "BIAS_GELU",
    [TSR_EPILOGUE_DGELU] = "DGELU",
};

/* The profiler's name of a GEMM: its family, by epilogue. */
static const char *gemm_family(const tsr_gemm_t *g)
{
    static const char *const family[] = {
        [TSR_EPILOGUE_NONE] = "gemm",
        [TSR_EPILOGUE_BIAS] = "gemm+bias",
        [TSR_EPILOGUE_BIAS_GELU] = "gemm+bias+gelu",
        [TSR_EPILOGUE_DGELU] = "gemm+dgelu",
    };
    return g && (unsigned)g->epilogue <= TSR_EPILOGUE_DGELU ? family[g->epilogue] : "gemm";
}

/* A stored row of @p cols elements needs ld >= cols, and ld >= 1 even when cols is 0 (BLAS). */
static int ld_fits(int ld, int cols)
{
    return ld >= (cols > 1 ? cols : 1);
}

static int types_allowed(tsr_dtype_t ab, tsr_dtype_t c)
{
    return (ab == TSR_DTYPE_F32 && c == TSR_DTYPE_F32) ||
           (ab == TSR_DTYPE_BF16 && (c == TSR_DTYPE_BF16 || c == TSR_DTYPE_F32));
}

static tsr_status_t check_epilogue(const tsr_gemm_t *g)
{
    const char *name = epilogue_names[g->epilogue];
    int wants_bias = g->epilogue == TSR_EPILOGUE_BIAS || g->epilogue == TSR_EPILOGUE_BIAS_GELU;
    int wants_aux = g->epilogue == TSR_EPILOGUE_BIAS_GELU || g->epilogue == TSR_EPILOGUE_DGELU;
    if (wants_bias && !g->bias)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "gemm epilogue %s: bias is NULL (expected n = %d values of %s)", name,
                         g->n, tsr_dtype_name(g->c_type));
    if (!wants_aux)
        return TSR_OK;
    if (!g->aux)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "gemm epilogue %s: aux is NULL (expected m x n = %d x %d values of %s)",
                         name, g->m, g->n, tsr_dtype_name(g->c_type));
    if (!ld_fits(g->ld_aux, g->n))
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "gemm epilogue %s: ld_aux = %d is below n = %d", name, g->ld_aux, g->n);
    if (g->beta != 0.0f)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "gemm epilogue %s: beta = %g, expected 0 (C is overwritten)", name,
                         (double)g->beta);
    return TSR_OK;
}

/* Everything kernels.h asks of a description, in the order a caller would fix it. */
static tsr_status_t check_gemm(tsr_device_t dev, const tsr_gemm_t *g)
{
    if (!types_allowed(g->ab_type, g->c_type))
        return TSR_ERROR(TSR_ERR_INVALID_ARG,
                         "gemm: ab_type %s with c_type %s (expected f32 with f32, or bf16 with bf16 or f32)",
                         tsr_dtype_name(g->ab_type), tsr_dtype_name(g->c_type));
    if (dev->kind == TSR_DEVICE_CPU && g->ab_type == TSR_DTYPE_BF16)
        return TSR_ERROR(TSR_ERR_NOT_SUPPORTED, "gemm: bf16 operands on the CPU device (it computes in f32 only)");
    if ((unsigned)g->trans_a > TSR_TRANS || (unsigned)g->trans_b > TSR_TRANS)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "gemm: trans_a = %d, trans_b = %d (expected TSR_NO_TRANS or TSR_TRANS)",
                         (int)g->trans_a, (int)g->trans_b);
    if ((unsigned)g->epilogue > TSR_EPILOGUE_DGELU)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "gemm: epilogue %d (expected NONE, BIAS, BIAS_GELU or DGELU)",
                         (int)g->epilogue);
    if (g->m < 0 || g->n < 0 || g->k < 0)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "gemm with negative size m=%d n=%d k=%d", g->m, g->n, g->k);

    /* Row-major: a stored row of A holds k elements of op(A) = A, or m of op(A) = A^T. */
    int a_cols = g->trans_a == TSR_NO_TRANS ? g->k : g->m;
    int b_cols = g->trans_b == TSR_NO_TRANS ? g->n : g->k;
    if (!ld_fits(g->lda, a_cols))
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "gemm m=%d n=%d k=%d: lda = %d is below %d, a stored row of A%s", g->m,
                         g->n, g->k, g->lda, a_cols, g->trans_a == TSR_TRANS ? " (transposed)" : "");
    if (!ld_fits(g->ldb, b_cols))
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "gemm m=%d n=%d k=%d: ldb = %d is below %d, a stored row of B%s", g->m,
                         g->n, g->k, g->ldb, b_cols, g->trans_b == TSR_TRANS ? " (transposed)" : "");
    if (!ld_fits(g->ldc, g->n))
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "gemm m=%d n=%d k=%d: ldc = %d is below n", g->m, g->n, g->k, g->ldc);
    tsr_status_t rc = check_epilogue(g);
    if (rc != TSR_OK || g->m == 0 || g->n == 0)
        return rc;
    if (!g->c || (g->k > 0 && (!g->a || !g->b)))
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "gemm m=%d n=%d k=%d: %s is NULL", g->m, g->n, g->k,
                         !g->c ? "C" : !g->a ? "A" : "B");
    return TSR_OK;
}

tsr_status_t tsr_kernel_gemm(tsr_device_t dev, const tsr_gemm_t *g)
{
    TSR__REGION(dev, TSR_PROF_KERNEL, gemm_family(g), NULL);
    if (!dev || !g)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "gemm: NULL %s", !dev ? "device" : "description");
    tsr_status_t rc = check_gemm(dev, g);
    if (rc != TSR_OK || g->m == 0 || g->n == 0)
        return rc;
#if TSR_HAVE_CUDA
    if (dev->kind == TSR_DEVICE_CUDA)
        return tsr__cuda_gemm(dev, g);
#endif
    return tsr__cpu_gemm(dev, g);
}
