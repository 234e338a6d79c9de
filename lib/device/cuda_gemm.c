/*
 * cuda_gemm.c: tsr_kernel_gemm on CUDA, with cuBLASLt.
 *
 * Row-major through a column-major library: a row-major X (r x c, ld) is the column-major
 * X^T (c x r, ld), so C = op(A) op(B) is computed as cuBLASLt's D = C^T = op(B)^T op(A)^T:
 * its A is our B, its B is our A, its m and n are our n and m (as cuda.c's cublasSgemm
 * does). In that view a bias per column of C is one per row of D, which is what cuBLASLt's
 * bias vector is, and aux (m x n, ld_aux) is an n x m column-major matrix like D.
 *
 * Compute type CUBLAS_COMPUTE_32F, fp32 scale: never TF32, so that fp32 GEMMs agree with the
 * CPU to 1e-5. Epilogues:
 *   - NONE and BIAS: cuBLASLt's DEFAULT and BIAS epilogues.
 *   - BIAS_GELU and DGELU with a bf16 C: GELU_AUX_BIAS and DGELU, when ld_aux is a multiple
 *     of 8 (cuBLASLt's rule for a GELU aux matrix).
 *   - BIAS_GELU and DGELU with an fp32 C: the product (and bias) by cuBLASLt, then Tessera's
 *     kernel (cuda_gemm_epilogue.cu). cuBLASLt documents neither its GELU's formula nor its
 *     accuracy, and fp32 results must match the CPU's tanhf-based GELU within 1e-5; bf16's
 *     rounding hides any such difference.
 * Bias and aux have C's type, cuBLASLt's default for both (left unset). An epilogue cuBLASLt
 * declines (its heuristic fails or finds no algorithm, or the matmul answers NOT_SUPPORTED,
 * both before anything is queued) runs unfused the same way, and a plain product it declines
 * goes to cublasGemmEx. With k = 0 or alpha = 0 there is no product, as on the CPU: A and B
 * are not read.
 *
 * Plans: the descriptors, layouts and the heuristic's algorithm of each distinct (shape,
 * types, transposes, leading dimensions, epilogue, pointer alignments) are kept in a small
 * least-recently-used table in the device state, so that a training step does not query the
 * heuristic for every GEMM. The bias and aux pointers are set on a cached descriptor for each
 * call; the heuristic saw pointers of the same alignment. Like the device's stream, the table
 * is not for several threads at once.
 */
#include "device/device_impl.h"

#if TSR_HAVE_CUDA
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "device/cuda_gemm_epilogue.h"
#include "device/cuda_impl.h"
#include "device/gemm_impl.h"

/* Distinct GEMMs remembered per device: a GPT step has a few dozen at most. */
#define PLAN_SLOTS 64

/* Everything that decides a plan, in cuBLASLt's view. Zero-filled before use so that keys
 * compare with memcmp. */
typedef struct plan_key {
    int op_a, op_b;        /* cublasOperation_t of cuBLASLt's A (our B) and B (our A) */
    int m, n, k;           /* cuBLASLt's: our n, m, k */
    int ab_type, c_type;   /* cudaDataType_t */
    int lda, ldb, ldd;     /* cuBLASLt's A (our ldb), B (our lda), C = D */
    int ld_aux;            /* 0 without an aux matrix */
    int epilogue;          /* cublasLtEpilogue_t */
    int align_log2[5];     /* alignment of cuBLASLt's A, B, D, bias and aux pointers, up to 256 bytes */
} plan_key_t;

typedef struct plan {
    plan_key_t key;
    uint64_t last_use; /* 0: the slot is free */
    int has_algo;      /* 0: cuBLASLt declined this matmul */
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t a, b, d; /* D's layout serves C too: C is D */
    cublasLtMatmulAlgo_t algo;
} plan_t;

struct tsr__gemm_plans {
    plan_t slot[PLAN_SLOTS];
    uint64_t clock;
};

/* One cuBLASLt matmul in our terms: d (ldd) = epilogue(alpha op(A) op(B) + beta d), A and B
 * those of g, d being g->c or g->aux. */
typedef struct matmul {
    const tsr_gemm_t *g;
    void *d;
    int ldd;
    float beta;
    cublasLtEpilogue_t epilogue;
    const void *bias; /* BIAS, GELU_AUX_BIAS */
    void *aux;        /* GELU_AUX_BIAS (written), DGELU (read) */
    int ld_aux;
} matmul_t;

static cudaDataType_t cuda_type(tsr_dtype_t t)
{
    return t == TSR_DTYPE_BF16 ? CUDA_R_16BF : CUDA_R_32F;
}

static int uses_bias(cublasLtEpilogue_t e)
{
    return e == CUBLASLT_EPILOGUE_BIAS || e == CUBLASLT_EPILOGUE_GELU_AUX_BIAS;
}

static int uses_aux(cublasLtEpilogue_t e)
{
    return e == CUBLASLT_EPILOGUE_GELU_AUX_BIAS || e == CUBLASLT_EPILOGUE_DGELU;
}

/* log2 of the largest power of two dividing p, at most 8 (256 bytes, cuBLASLt's largest). */
static int align_log2(const void *p)
{
    uintptr_t v = (uintptr_t)p;
    int l = 0;
    while (l < 8 && !(v >> l & 1))
        l++;
    return l;
}

static plan_key_t key_of(const matmul_t *mm)
{
    const tsr_gemm_t *g = mm->g;
    plan_key_t key;
    memset(&key, 0, sizeof key);
    key.op_a = g->trans_b == TSR_TRANS ? CUBLAS_OP_T : CUBLAS_OP_N;
    key.op_b = g->trans_a == TSR_TRANS ? CUBLAS_OP_T : CUBLAS_OP_N;
    key.m = g->n;
    key.n = g->m;
    key.k = g->k;
    key.ab_type = cuda_type(g->ab_type);
    key.c_type = cuda_type(g->c_type);
    key.lda = g->ldb;
    key.ldb = g->lda;
    key.ldd = mm->ldd;
    key.ld_aux = uses_aux(mm->epilogue) ? mm->ld_aux : 0;
    key.epilogue = mm->epilogue;
    key.align_log2[0] = align_log2(g->b);
    key.align_log2[1] = align_log2(g->a);
    key.align_log2[2] = align_log2(mm->d);
    key.align_log2[3] = align_log2(uses_bias(mm->epilogue) ? mm->bias : NULL);
    key.align_log2[4] = align_log2(uses_aux(mm->epilogue) ? mm->aux : NULL);
    return key;
}

static void plan_release(plan_t *p)
{
    if (p->desc)
        cublasLtMatmulDescDestroy(p->desc);
    if (p->a)
        cublasLtMatrixLayoutDestroy(p->a);
    if (p->b)
        cublasLtMatrixLayoutDestroy(p->b);
    if (p->d)
        cublasLtMatrixLayoutDestroy(p->d);
    memset(p, 0, sizeof *p);
}

void tsr__cuda_gemm_plans_destroy(struct tsr__gemm_plans *plans)
{
    if (!plans)
        return;
    for (int i = 0; i < PLAN_SLOTS; i++)
        plan_release(&plans->slot[i]);
    free(plans);
}

/* The bias and aux pointers of this call on the plan's descriptor. */
static tsr_status_t set_pointers(plan_t *p, const matmul_t *mm)
{
    tsr_status_t rc = TSR_OK;
    if (uses_bias(mm->epilogue))
        CALL_CUBLAS(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &mm->bias,
                                                   sizeof mm->bias));
    if (uses_aux(mm->epilogue))
        CALL_CUBLAS(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, &mm->aux,
                                                   sizeof mm->aux));
cleanup:
    return rc;
}

/* Create p's descriptor and layouts from p->key and ask the heuristic for one algorithm. */
static tsr_status_t plan_build(struct tsr_device *dev, plan_t *p, const matmul_t *mm)
{
    tsr_status_t rc = TSR_OK;
    const plan_key_t *key = &p->key;
    cublasLtMatmulPreference_t pref = NULL;
    cublasLtMatmulHeuristicResult_t result;
    int found = 0;
    void *workspace;
    size_t workspace_bytes;
    cublasLtHandle_t lt = tsr__cuda_cublaslt(dev, &workspace, &workspace_bytes);
    cublasOperation_t op_a = (cublasOperation_t)key->op_a, op_b = (cublasOperation_t)key->op_b;
    cublasLtEpilogue_t epilogue = (cublasLtEpilogue_t)key->epilogue;
    cudaDataType_t ab_type = (cudaDataType_t)key->ab_type, c_type = (cudaDataType_t)key->c_type;
    uint64_t m = (uint64_t)key->m, n = (uint64_t)key->n, k = (uint64_t)key->k;
    uint64_t max_workspace = workspace_bytes;

    CALL_CUBLAS(cublasLtMatmulDescCreate(&p->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    CALL_CUBLAS(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof op_a));
    CALL_CUBLAS(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof op_b));
    CALL_CUBLAS(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue));
    if (uses_aux(epilogue)) {
        int64_t ld_aux = key->ld_aux;
        CALL_CUBLAS(cublasLtMatmulDescSetAttribute(p->desc, CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, &ld_aux,
                                                   sizeof ld_aux));
    }
    TSR_TRY(set_pointers(p, mm)); /* the heuristic takes the bias and aux alignment from them */

    /* Stored shapes: cuBLASLt's A is m x k (k x m transposed), B k x n (n x k), D m x n. */
    CALL_CUBLAS(cublasLtMatrixLayoutCreate(&p->a, ab_type, op_a == CUBLAS_OP_N ? m : k, op_a == CUBLAS_OP_N ? k : m,
                                           key->lda));
    CALL_CUBLAS(cublasLtMatrixLayoutCreate(&p->b, ab_type, op_b == CUBLAS_OP_N ? k : n, op_b == CUBLAS_OP_N ? n : k,
                                           key->ldb));
    CALL_CUBLAS(cublasLtMatrixLayoutCreate(&p->d, c_type, m, n, key->ldd));

    /* Only algorithms that work with these pointers' alignment (the default assumes 256 bytes). */
    static const cublasLtMatmulPreferenceAttributes_t align_attr[4] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
    const int align_of[4] = {key->align_log2[0], key->align_log2[1], key->align_log2[2], key->align_log2[2]};
    CALL_CUBLAS(cublasLtMatmulPreferenceCreate(&pref));
    CALL_CUBLAS(cublasLtMatmulPreferenceSetAttribute(pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &max_workspace,
                                                     sizeof max_workspace));
    for (int i = 0; i < 4; i++) {
        uint32_t bytes = 1u << align_of[i];
        CALL_CUBLAS(cublasLtMatmulPreferenceSetAttribute(pref, align_attr[i], &bytes, sizeof bytes));
    }

    cublasStatus_t st = cublasLtMatmulAlgoGetHeuristic(lt, p->desc, p->a, p->b, p->d, p->d, pref, 1, &result, &found);
    /* Nothing is queued yet, so whatever cuBLASLt rejects can run another way: a fused epilogue
     * rejected in any way unfused, a plain product it has no heuristic for (NOT_SUPPORTED) on
     * cublasGemmEx. Only a plain product rejected as invalid is an error. */
    TSR_CHECK(st == CUBLAS_STATUS_SUCCESS || st == CUBLAS_STATUS_NOT_SUPPORTED || epilogue != CUBLASLT_EPILOGUE_DEFAULT,
              TSR_ERR_CUBLAS, "cublasLtMatmulAlgoGetHeuristic failed: %s", cublasGetStatusString(st));
    p->has_algo = st == CUBLAS_STATUS_SUCCESS && found > 0 && result.state == CUBLAS_STATUS_SUCCESS;
    if (p->has_algo)
        p->algo = result.algo;
cleanup:
    if (pref)
        cublasLtMatmulPreferenceDestroy(pref);
    return rc;
}

/* The plan of mm, from the table or built into a free or the least recently used slot. */
static tsr_status_t plan_for(struct tsr_device *dev, const matmul_t *mm, plan_t **out)
{
    tsr_status_t rc = TSR_OK;
    struct tsr__gemm_plans **table = tsr__cuda_gemm_plans(dev);
    if (!*table) {
        *table = tsr__calloc(1, sizeof **table);
        TSR_CHECK(*table, TSR_ERR_OUT_OF_MEMORY, "no host memory for the GEMM plan table");
    }
    struct tsr__gemm_plans *plans = *table;
    plan_key_t key = key_of(mm);
    plan_t *victim = &plans->slot[0];
    for (int i = 0; i < PLAN_SLOTS; i++) {
        plan_t *p = &plans->slot[i];
        if (p->last_use && memcmp(&p->key, &key, sizeof key) == 0) {
            p->last_use = ++plans->clock;
            *out = p;
            return set_pointers(p, mm);
        }
        if (p->last_use < victim->last_use)
            victim = p; /* a free slot (0) first, else the least recently used */
    }
    plan_release(victim);
    victim->key = key;
    rc = plan_build(dev, victim, mm);
    if (rc != TSR_OK) {
        plan_release(victim);
        goto cleanup;
    }
    victim->last_use = ++plans->clock;
    *out = victim;
cleanup:
    return rc;
}

/* Queue mm on cuBLASLt; *declined = 1, with nothing queued, when cuBLASLt cannot run it. */
static tsr_status_t lt_matmul(struct tsr_device *dev, const matmul_t *mm, int *declined)
{
    tsr_status_t rc = TSR_OK;
    const tsr_gemm_t *g = mm->g;
    plan_t *p = NULL;
    void *workspace;
    size_t workspace_bytes;
    cublasLtHandle_t lt = tsr__cuda_cublaslt(dev, &workspace, &workspace_bytes);
    cublasStatus_t st = CUBLAS_STATUS_NOT_SUPPORTED;
    *declined = 0;
    TSR_TRY(plan_for(dev, mm, &p));
    if (p->has_algo)
        st = cublasLtMatmul(lt, p->desc, &g->alpha, g->b, p->a, g->a, p->b, &mm->beta, mm->d, p->d, mm->d, p->d,
                            &p->algo, workspace, workspace_bytes, tsr__cuda_stream(dev));
    if (st == CUBLAS_STATUS_NOT_SUPPORTED) {
        p->has_algo = 0; /* and from now on, without asking again */
        *declined = 1;
    } else {
        TSR_CHECK(st == CUBLAS_STATUS_SUCCESS, TSR_ERR_CUBLAS, "cublasLtMatmul (m=%d n=%d k=%d) failed: %s", g->m,
                  g->n, g->k, cublasGetStatusString(st));
    }
cleanup:
    return rc;
}

/* The plain product with cuBLAS, for what cuBLASLt declines. */
static tsr_status_t gemm_ex(struct tsr_device *dev, const matmul_t *mm)
{
    tsr_status_t rc = TSR_OK;
    const tsr_gemm_t *g = mm->g;
    cudaDataType_t ab_type = cuda_type(g->ab_type);
    CALL_CUBLAS(cublasGemmEx(tsr__cuda_cublas(dev), g->trans_b == TSR_TRANS ? CUBLAS_OP_T : CUBLAS_OP_N,
                             g->trans_a == TSR_TRANS ? CUBLAS_OP_T : CUBLAS_OP_N, g->n, g->m, g->k, &g->alpha, g->b,
                             ab_type, g->ldb, g->a, ab_type, g->lda, &mm->beta, mm->d, cuda_type(g->c_type), mm->ldd,
                             CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
cleanup:
    return rc;
}

/* d (ldd) = alpha op(A) op(B) + beta d, plus bias[j] in every row when bias is not NULL:
 * cuBLASLt's BIAS epilogue, else the plain product and the bias kernel. */
static tsr_status_t product(struct tsr_device *dev, const tsr_gemm_t *g, void *d, int ldd, float beta,
                            const void *bias)
{
    tsr_status_t rc = TSR_OK;
    cudaStream_t stream = tsr__cuda_stream(dev);
    matmul_t mm = {g, d, ldd, beta, CUBLASLT_EPILOGUE_BIAS, bias, NULL, 0};
    int declined = 1;
    if (g->k == 0 || g->alpha == 0.0f) {
        TSR_TRY(tsr__cuda_status(tsr__cuda_gemm_scale_bias(g->c_type, g->m, g->n, d, ldd, beta, bias, stream),
                                 "gemm: scale C by beta and add the bias"));
        goto cleanup;
    }
    if (bias) {
        TSR_TRY(lt_matmul(dev, &mm, &declined));
        if (!declined)
            goto cleanup;
    }
    mm.epilogue = CUBLASLT_EPILOGUE_DEFAULT;
    mm.bias = NULL;
    TSR_TRY(lt_matmul(dev, &mm, &declined));
    if (declined)
        TSR_TRY(gemm_ex(dev, &mm));
    if (bias)
        TSR_TRY(tsr__cuda_status(tsr__cuda_gemm_scale_bias(g->c_type, g->m, g->n, d, ldd, 1.0f, bias, stream),
                                 "gemm epilogue: add the bias"));
cleanup:
    return rc;
}

tsr_status_t tsr__cuda_gemm(struct tsr_device *dev, const tsr_gemm_t *g)
{
    tsr_status_t rc = TSR_OK;
    cudaStream_t stream = tsr__cuda_stream(dev);
    int declined = 1;
    /* Where Tessera takes cuBLASLt's own GELU (see the top of the file). */
    int fuse_gelu = g->c_type == TSR_DTYPE_BF16 && g->ld_aux % 8 == 0 && g->k > 0 && g->alpha != 0.0f;
    switch (g->epilogue) {
    case TSR_EPILOGUE_NONE:
        TSR_TRY(product(dev, g, g->c, g->ldc, g->beta, NULL));
        break;
    case TSR_EPILOGUE_BIAS:
        TSR_TRY(product(dev, g, g->c, g->ldc, g->beta, g->bias));
        break;
    case TSR_EPILOGUE_BIAS_GELU:
        if (fuse_gelu) {
            matmul_t mm = {g, g->c, g->ldc, 0.0f, CUBLASLT_EPILOGUE_GELU_AUX_BIAS, g->bias, g->aux, g->ld_aux};
            TSR_TRY(lt_matmul(dev, &mm, &declined));
        }
        if (declined) {
            TSR_TRY(product(dev, g, g->aux, g->ld_aux, 0.0f, g->bias));
            TSR_TRY(tsr__cuda_status(
                tsr__cuda_gemm_gelu(g->c_type, g->m, g->n, g->aux, g->ld_aux, g->c, g->ldc, stream),
                "gemm epilogue BIAS_GELU"));
        }
        break;
    case TSR_EPILOGUE_DGELU:
        if (fuse_gelu) {
            matmul_t mm = {g, g->c, g->ldc, 0.0f, CUBLASLT_EPILOGUE_DGELU, NULL, g->aux, g->ld_aux};
            TSR_TRY(lt_matmul(dev, &mm, &declined));
        }
        if (declined) {
            TSR_TRY(product(dev, g, g->c, g->ldc, 0.0f, NULL));
            TSR_TRY(tsr__cuda_status(
                tsr__cuda_gemm_dgelu(g->c_type, g->m, g->n, g->aux, g->ld_aux, g->c, g->ldc, stream),
                "gemm epilogue DGELU"));
        }
        break;
    }
cleanup:
    return rc;
}

#endif /* TSR_HAVE_CUDA */
