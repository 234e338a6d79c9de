/*
 * cpu_gemm.c: tsr_kernel_gemm on the CPU, fp32, the reference the CUDA version is tested
 * against: the CPU backend's CBLAS sgemm writes the product where the epilogue reads it (C,
 * or aux for BIAS_GELU), then one pass over the rows, split over the threads, applies the
 * epilogue. GELU is cpu_math.h's, the one tsr_kernel_gelu_forward() computes, to the bit.
 */
#include "device/cpu_math.h"
#include "device/gemm_impl.h"

/* Row i of the epilogue: c = c + bias; x = x + bias, c = gelu(x); c = c gelu'(x). */
TSR_CPU_KERNEL
static void epilogue_row(tsr_epilogue_t epilogue, int n, const float *bias, float *c, float *x)
{
    switch (epilogue) {
    case TSR_EPILOGUE_BIAS:
#pragma omp simd
        for (int j = 0; j < n; j++)
            c[j] += bias[j];
        break;
    case TSR_EPILOGUE_BIAS_GELU:
#pragma omp simd
        for (int j = 0; j < n; j++) {
            x[j] += bias[j];
            c[j] = tsr__gelu(x[j]);
        }
        break;
    case TSR_EPILOGUE_DGELU:
#pragma omp simd
        for (int j = 0; j < n; j++)
            c[j] *= tsr__gelu_grad(x[j]);
        break;
    case TSR_EPILOGUE_NONE:
        break;
    }
}

tsr_status_t tsr__cpu_gemm(struct tsr_device *dev, const tsr_gemm_t *g)
{
    tsr_status_t rc = TSR_OK;
    float *c = g->c, *aux = g->aux;
    int to_aux = g->epilogue == TSR_EPILOGUE_BIAS_GELU;
    int reads_aux = to_aux || g->epilogue == TSR_EPILOGUE_DGELU; /* else aux and ld_aux are not set */
    TSR_TRY(dev->ops->gemm_f32(dev, g->trans_a, g->trans_b, g->m, g->n, g->k, g->alpha, g->a, g->lda, g->b, g->ldb,
                               g->beta, to_aux ? aux : c, to_aux ? g->ld_aux : g->ldc));
    if (g->epilogue == TSR_EPILOGUE_NONE)
        return TSR_OK;
#pragma omp parallel for schedule(static) if ((size_t)g->m * g->n >= TSR_CPU_PAR_MIN && g->m > 1)
    for (int i = 0; i < g->m; i++)
        epilogue_row(g->epilogue, g->n, g->bias, c + (size_t)i * g->ldc,
                     reads_aux ? aux + (size_t)i * g->ld_aux : NULL);
cleanup:
    return rc;
}
