/*
 * cpu_gemm.c: tsr_kernel_gemm on the CPU, fp32, the reference the CUDA version is tested
 * against: the CPU backend's CBLAS sgemm writes the product where the epilogue reads it (C,
 * or aux for BIAS_GELU), then one pass over the rows applies the epilogue. GELU is the tanh
 * form evaluated exactly as lib/tp/norm.c does, so both agree to the last bit.
 */
#include <math.h>

#include "device/gemm_impl.h"

/* sqrt(2/pi) and the cubic coefficient of the tanh form of GELU. */
#define GELU_SCALE 0.7978845608028654
#define GELU_CUBE 0.044715

static float gelu(float v)
{
    return 0.5f * v * (1.0f + tanhf((float)GELU_SCALE * (v + (float)GELU_CUBE * v * v * v)));
}

static float gelu_grad(float v)
{
    float t = tanhf((float)GELU_SCALE * (v + (float)GELU_CUBE * v * v * v));
    float dt = (float)GELU_SCALE * (1.0f + 3.0f * (float)GELU_CUBE * v * v) * (1.0f - t * t);
    return 0.5f * (1.0f + t) + 0.5f * v * dt;
}

tsr_status_t tsr__cpu_gemm(struct tsr_device *dev, const tsr_gemm_t *g)
{
    tsr_status_t rc = TSR_OK;
    const float *bias = g->bias;
    float *c = g->c, *aux = g->aux;
    int to_aux = g->epilogue == TSR_EPILOGUE_BIAS_GELU;
    int reads_aux = to_aux || g->epilogue == TSR_EPILOGUE_DGELU; /* else aux and ld_aux are not set */
    TSR_TRY(dev->ops->gemm_f32(dev, g->trans_a, g->trans_b, g->m, g->n, g->k, g->alpha, g->a, g->lda, g->b, g->ldb,
                               g->beta, to_aux ? aux : c, to_aux ? g->ld_aux : g->ldc));
    for (int i = 0; i < g->m && g->epilogue != TSR_EPILOGUE_NONE; i++) {
        float *ci = c + (size_t)i * g->ldc;
        float *xi = reads_aux ? aux + (size_t)i * g->ld_aux : NULL;
        for (int j = 0; j < g->n; j++) {
            switch (g->epilogue) {
            case TSR_EPILOGUE_BIAS:
                ci[j] += bias[j];
                break;
            case TSR_EPILOGUE_BIAS_GELU:
                xi[j] += bias[j];
                ci[j] = gelu(xi[j]);
                break;
            case TSR_EPILOGUE_DGELU:
                ci[j] *= gelu_grad(xi[j]);
                break;
            case TSR_EPILOGUE_NONE:
                break;
            }
        }
    }
cleanup:
    return rc;
}
