/*
 * kernels_layer.c: the layer operations of tessera/kernels.h (layernorm, GELU, add, bias
 * gradient, strided axpby, embeddings, cross-entropy): argument checks, then the CPU kernels of
 * cpu_layer.c or the CUDA launchers of cuda_layer.cu by the device's kind.
 */
#include "device/device_impl.h"
#include "device/layer_impl.h"

#if TSR_HAVE_CUDA
#include "device/cuda_impl.h"
#include "device/cuda_layer.h"
#endif

/* The device and element type of a call: f32 anywhere, bf16 on CUDA only. */
static tsr_status_t check_device(tsr_device_t dev, tsr_dtype_t dt, const char *what)
{
    if (!dev)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "%s: NULL device", what);
    if (dt != TSR_DTYPE_F32 && dt != TSR_DTYPE_BF16)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "%s: element type %s, expected f32 or bf16", what,
                         tsr_dtype_name(dt));
    if (dev->kind == TSR_DEVICE_CPU && dt != TSR_DTYPE_F32)
        return TSR_ERROR(TSR_ERR_NOT_SUPPORTED, "%s: element type %s is not supported on the CPU (f32 only)", what,
                         tsr_dtype_name(dt));
    if (dev->kind != TSR_DEVICE_CPU && dev->kind != TSR_DEVICE_CUDA)
        return TSR_ERROR(TSR_ERR_NOT_SUPPORTED, "%s: no kernel for device kind %s", what,
                         tsr_device_kind_name(dev->kind));
    return TSR_OK;
}

#if TSR_HAVE_CUDA
#define ON_CUDA(dev) ((dev)->kind == TSR_DEVICE_CUDA)
#define CUDA_STATUS(call, what) tsr__cuda_status((call), (what))
#else
/* A CUDA device cannot be opened in this build: every device here is the CPU. */
#define ON_CUDA(dev) 0
#define CUDA_STATUS(call, what) TSR_ERROR(TSR_ERR_NOT_SUPPORTED, "%s: CUDA is not built", (what))
#endif

tsr_status_t tsr_kernel_layernorm_forward(tsr_device_t dev, tsr_dtype_t dt, int rows, int cols, const void *x,
                                          const void *gamma, const void *beta, float eps, void *y, float *mean,
                                          float *rstd)
{
    TSR__REGION(dev, TSR_PROF_KERNEL, "layernorm fwd", NULL);
    static const char what[] = "layernorm forward";
    tsr_status_t rc = TSR_OK;
    TSR_TRY(check_device(dev, dt, what));
    TSR_CHECK(rows > 0 && cols > 0, TSR_ERR_INVALID_ARG, "%s: %d x %d rows, expected positive sizes", what, rows,
              cols);
    TSR_CHECK(x && gamma && beta && y && mean && rstd, TSR_ERR_INVALID_ARG,
              "%s: NULL x, gamma, beta, y, mean or rstd", what);
    TSR_CHECK(eps >= 0, TSR_ERR_INVALID_ARG, "%s: eps %g, expected >= 0", what, (double)eps);
    if (ON_CUDA(dev))
        return CUDA_STATUS(tsr__cuda_layernorm_forward(dt == TSR_DTYPE_BF16, rows, cols, x, gamma, beta, eps, y,
                                                       mean, rstd, tsr__cuda_stream(dev)),
                           what);
    tsr__cpu_layernorm_forward(rows, cols, x, gamma, beta, eps, y, mean, rstd);
cleanup:
    return rc;
}

tsr_status_t tsr_kernel_layernorm_backward(tsr_device_t dev, tsr_dtype_t dt, int rows, int cols, const void *dy,
                                           const void *x, const void *gamma, const float *mean, const float *rstd,
                                           void *dx, float *dgamma, float *dbeta)
{
    TSR__REGION(dev, TSR_PROF_KERNEL, "layernorm bwd", NULL);
    static const char what[] = "layernorm backward";
    tsr_status_t rc = TSR_OK;
    TSR_TRY(check_device(dev, dt, what));
    TSR_CHECK(rows > 0 && cols > 0, TSR_ERR_INVALID_ARG, "%s: %d x %d rows, expected positive sizes", what, rows,
              cols);
    TSR_CHECK(dy && x && mean && rstd, TSR_ERR_INVALID_ARG, "%s: NULL dy, x, mean or rstd", what);
    TSR_CHECK(!dgamma == !dbeta && (dx || dgamma), TSR_ERR_INVALID_ARG,
              "%s: expected dx, or dgamma and dbeta together, or all three", what);
    TSR_CHECK(gamma || !dx, TSR_ERR_INVALID_ARG, "%s: NULL gamma (needed for dx)", what);
    if (ON_CUDA(dev))
        return CUDA_STATUS(tsr__cuda_layernorm_backward(dt == TSR_DTYPE_BF16, rows, cols, dy, x, gamma, mean, rstd,
                                                        dx, dgamma, dbeta, tsr__cuda_stream(dev)),
                           what);
    rc = tsr__cpu_layernorm_backward(rows, cols, dy, x, gamma, mean, rstd, dx, dgamma, dbeta);
cleanup:
    return rc;
}

/* Shapes of the split layernorm kernels: a block of rows x cols of rows of width values. */
static tsr_status_t check_ln_block(tsr_device_t dev, tsr_dtype_t dt, int rows, int cols, int width, const char *what)
{
    tsr_status_t rc = TSR_OK;
    TSR_TRY(check_device(dev, dt, what));
    TSR_CHECK(rows > 0 && cols > 0 && width >= cols, TSR_ERR_INVALID_ARG,
              "%s: %d x %d block of rows %d wide, expected positive sizes and width >= columns", what, rows, cols,
              width);
cleanup:
    return rc;
}

tsr_status_t tsr_kernel_layernorm_stats(tsr_device_t dev, tsr_dtype_t dt, int rows, int cols, const void *x,
                                        float *stats)
{
    TSR__REGION(dev, TSR_PROF_KERNEL, "layernorm fwd", NULL);
    static const char what[] = "layernorm stats";
    tsr_status_t rc = TSR_OK;
    TSR_TRY(check_ln_block(dev, dt, rows, cols, cols, what));
    TSR_CHECK(x && stats, TSR_ERR_INVALID_ARG, "%s: NULL x or stats", what);
    if (ON_CUDA(dev))
        return CUDA_STATUS(tsr__cuda_layernorm_stats(dt == TSR_DTYPE_BF16, rows, cols, x, stats, tsr__cuda_stream(dev)),
                           what);
    tsr__cpu_layernorm_stats(rows, cols, x, stats);
cleanup:
    return rc;
}

tsr_status_t tsr_kernel_layernorm_apply(tsr_device_t dev, tsr_dtype_t dt, int rows, int cols, int width,
                                        const void *x, const void *gamma, const void *beta, float eps,
                                        const float *stats, void *y, float *mean, float *rstd)
{
    TSR__REGION(dev, TSR_PROF_KERNEL, "layernorm fwd", NULL);
    static const char what[] = "layernorm apply";
    tsr_status_t rc = TSR_OK;
    TSR_TRY(check_ln_block(dev, dt, rows, cols, width, what));
    TSR_CHECK(x && gamma && beta && stats && y && mean && rstd, TSR_ERR_INVALID_ARG,
              "%s: NULL x, gamma, beta, stats, y, mean or rstd", what);
    TSR_CHECK(eps >= 0, TSR_ERR_INVALID_ARG, "%s: eps %g, expected >= 0", what, (double)eps);
    if (ON_CUDA(dev))
        return CUDA_STATUS(tsr__cuda_layernorm_apply(dt == TSR_DTYPE_BF16, rows, cols, width, x, gamma, beta, eps,
                                                     stats, y, mean, rstd, tsr__cuda_stream(dev)),
                           what);
    tsr__cpu_layernorm_apply(rows, cols, width, x, gamma, beta, eps, stats, y, mean, rstd);
cleanup:
    return rc;
}

tsr_status_t tsr_kernel_layernorm_backward_stats(tsr_device_t dev, tsr_dtype_t dt, int rows, int cols,
                                                 const void *dy, const void *x, const void *gamma, const float *mean,
                                                 const float *rstd, float *stats)
{
    TSR__REGION(dev, TSR_PROF_KERNEL, "layernorm bwd", NULL);
    static const char what[] = "layernorm backward stats";
    tsr_status_t rc = TSR_OK;
    TSR_TRY(check_ln_block(dev, dt, rows, cols, cols, what));
    TSR_CHECK(dy && x && gamma && mean && rstd && stats, TSR_ERR_INVALID_ARG,
              "%s: NULL dy, x, gamma, mean, rstd or stats", what);
    if (ON_CUDA(dev))
        return CUDA_STATUS(tsr__cuda_layernorm_backward_stats(dt == TSR_DTYPE_BF16, rows, cols, dy, x, gamma, mean,
                                                              rstd, stats, tsr__cuda_stream(dev)),
                           what);
    tsr__cpu_layernorm_backward_stats(rows, cols, dy, x, gamma, mean, rstd, stats);
cleanup:
    return rc;
}

tsr_status_t tsr_kernel_layernorm_backward_apply(tsr_device_t dev, tsr_dtype_t dt, int rows, int cols, int width,
                                                 const void *dy, const void *x, const void *gamma, const float *mean,
                                                 const float *rstd, const float *stats, void *dx)
{
    TSR__REGION(dev, TSR_PROF_KERNEL, "layernorm bwd", NULL);
    static const char what[] = "layernorm backward apply";
    tsr_status_t rc = TSR_OK;
    TSR_TRY(check_ln_block(dev, dt, rows, cols, width, what));
    TSR_CHECK(dy && x && gamma && mean && rstd && stats && dx, TSR_ERR_INVALID_ARG,
              "%s: NULL dy, x, gamma, mean, rstd, stats or dx", what);
    if (ON_CUDA(dev))
        return CUDA_STATUS(tsr__cuda_layernorm_backward_apply(dt == TSR_DTYPE_BF16, rows, cols, width, dy, x, gamma,
                                                              mean, rstd, stats, dx, tsr__cuda_stream(dev)),
                           what);
    tsr__cpu_layernorm_backward_apply(rows, cols, width, dy, x, gamma, mean, rstd, stats, dx);
cleanup:
    return rc;
}

tsr_status_t tsr_kernel_gelu_forward(tsr_device_t dev, tsr_dtype_t dt, size_t n, const void *x, void *y)
{
    TSR__REGION(dev, TSR_PROF_KERNEL, "gelu fwd", NULL);
    static const char what[] = "gelu forward";
    tsr_status_t rc = TSR_OK;
    TSR_TRY(check_device(dev, dt, what));
    if (n == 0)
        return TSR_OK;
    TSR_CHECK(x && y, TSR_ERR_INVALID_ARG, "%s: NULL x or y for %zu values", what, n);
    if (ON_CUDA(dev))
        return CUDA_STATUS(tsr__cuda_gelu_forward(dt == TSR_DTYPE_BF16, n, x, y, tsr__cuda_stream(dev)), what);
    tsr__cpu_gelu_forward(n, x, y);
cleanup:
    return rc;
}

tsr_status_t tsr_kernel_gelu_backward(tsr_device_t dev, tsr_dtype_t dt, size_t n, const void *x, const void *dy,
                                      void *dx)
{
    TSR__REGION(dev, TSR_PROF_KERNEL, "gelu bwd", NULL);
    static const char what[] = "gelu backward";
    tsr_status_t rc = TSR_OK;
    TSR_TRY(check_device(dev, dt, what));
    if (n == 0)
        return TSR_OK;
    TSR_CHECK(x && dy && dx, TSR_ERR_INVALID_ARG, "%s: NULL x, dy or dx for %zu values", what, n);
    if (ON_CUDA(dev))
        return CUDA_STATUS(tsr__cuda_gelu_backward(dt == TSR_DTYPE_BF16, n, x, dy, dx, tsr__cuda_stream(dev)), what);
    tsr__cpu_gelu_backward(n, x, dy, dx);
cleanup:
    return rc;
}

tsr_status_t tsr_kernel_add(tsr_device_t dev, tsr_dtype_t dt, size_t n, const void *a, const void *b, void *y)
{
    TSR__REGION(dev, TSR_PROF_KERNEL, "add", NULL);
    static const char what[] = "add";
    tsr_status_t rc = TSR_OK;
    TSR_TRY(check_device(dev, dt, what));
    if (n == 0)
        return TSR_OK;
    TSR_CHECK(a && b && y, TSR_ERR_INVALID_ARG, "%s: NULL a, b or y for %zu values", what, n);
    if (ON_CUDA(dev))
        return CUDA_STATUS(tsr__cuda_add(dt == TSR_DTYPE_BF16, n, a, b, y, tsr__cuda_stream(dev)), what);
    tsr__cpu_add(n, a, b, y);
cleanup:
    return rc;
}

tsr_status_t tsr_kernel_axpby_2d(tsr_device_t dev, int rows, int cols, float alpha, tsr_dtype_t src_type,
                                 const void *src, int lds, float beta, tsr_dtype_t dst_type, void *dst, int ldd)
{
    TSR__REGION(dev, TSR_PROF_KERNEL, "axpby", NULL);
    static const char what[] = "axpby 2d";
    tsr_status_t rc = TSR_OK;
    TSR_TRY(check_device(dev, src_type, what));
    TSR_TRY(check_device(dev, dst_type, what));
    TSR_CHECK(rows >= 0 && cols >= 0, TSR_ERR_INVALID_ARG, "%s: %d x %d block, expected sizes >= 0", what, rows, cols);
    if (rows == 0 || cols == 0)
        return TSR_OK;
    TSR_CHECK(lds >= cols && ldd >= cols, TSR_ERR_INVALID_ARG,
              "%s: leading dimensions %d and %d, expected >= %d columns", what, lds, ldd, cols);
    TSR_CHECK(src && dst, TSR_ERR_INVALID_ARG, "%s: NULL src or dst", what);
    if (ON_CUDA(dev))
        return CUDA_STATUS(tsr__cuda_axpby_2d(rows, cols, alpha, src_type == TSR_DTYPE_BF16, src, lds, beta,
                                              dst_type == TSR_DTYPE_BF16, dst, ldd, tsr__cuda_stream(dev)),
                           what);
    tsr__cpu_axpby_2d(rows, cols, alpha, src, lds, beta, dst, ldd);
cleanup:
    return rc;
}

tsr_status_t tsr_kernel_bias_grad(tsr_device_t dev, tsr_dtype_t dt, int rows, int cols, const void *dy, int ld,
                                  float *db)
{
    TSR__REGION(dev, TSR_PROF_KERNEL, "bias grad", NULL);
    static const char what[] = "bias gradient";
    tsr_status_t rc = TSR_OK;
    TSR_TRY(check_device(dev, dt, what));
    TSR_CHECK(rows > 0 && cols > 0, TSR_ERR_INVALID_ARG, "%s: %d x %d dy, expected positive sizes", what, rows,
              cols);
    TSR_CHECK(ld >= cols, TSR_ERR_INVALID_ARG, "%s: leading dimension %d, expected >= %d columns", what, ld, cols);
    TSR_CHECK(dy && db, TSR_ERR_INVALID_ARG, "%s: NULL dy or db", what);
    if (ON_CUDA(dev))
        return CUDA_STATUS(tsr__cuda_bias_grad(dt == TSR_DTYPE_BF16, rows, cols, dy, ld, db, tsr__cuda_stream(dev)),
                           what);
    tsr__cpu_bias_grad(rows, cols, dy, ld, db);
cleanup:
    return rc;
}

#define MAX_TOKENS (1 << 30)

/* Shapes of the embedding kernels; tokens are checked on the CPU, where they can be read. */
static tsr_status_t check_embedding(tsr_device_t dev, const int32_t *tokens, int seqs, int T, int C,
                                    const char *what)
{
    if (seqs <= 0 || T <= 0 || C <= 0)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "%s: %d sequences of %d tokens of width %d, expected positive sizes",
                         what, seqs, T, C);
    if (!tokens)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "%s: NULL tokens", what);
    /* The CUDA kernels index positions in int with headroom for a step past the end. */
    if ((size_t)seqs * (size_t)T > MAX_TOKENS)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "%s: %d x %d tokens, expected at most %d", what, seqs, T, MAX_TOKENS);
    if (dev->kind == TSR_DEVICE_CPU)
        for (size_t i = 0; i < (size_t)seqs * T; i++)
            if (tokens[i] < 0)
                return TSR_ERROR(TSR_ERR_INVALID_ARG, "%s: token %d at position %zu is negative", what,
                                 (int)tokens[i], i);
    return TSR_OK;
}

/* The vocabulary block [v0, v0 + nv) of the embedding kernels. */
static tsr_status_t check_vocab_block(int v0, int nv, int have_wte, const char *what)
{
    if (have_wte && (v0 < 0 || nv < 1))
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "%s: vocabulary block [%d, %d + %d), expected v0 >= 0 and nv >= 1", what,
                         v0, v0, nv);
    return TSR_OK;
}

tsr_status_t tsr_kernel_embedding_forward(tsr_device_t dev, tsr_dtype_t dt, const int32_t *tokens, int seqs, int T,
                                          int C, int v0, int nv, const void *wte, const void *wpe, void *out)
{
    TSR__REGION(dev, TSR_PROF_KERNEL, "embedding fwd", NULL);
    static const char what[] = "embedding forward";
    tsr_status_t rc = TSR_OK;
    TSR_TRY(check_device(dev, dt, what));
    TSR_CHECK((wte || wpe) && out, TSR_ERR_INVALID_ARG, "%s: NULL out, or both wte and wpe NULL", what);
    TSR_TRY(check_vocab_block(v0, nv, wte != NULL, what));
    TSR_TRY(check_embedding(dev, tokens, seqs, T, C, what));
    if (ON_CUDA(dev))
        return CUDA_STATUS(tsr__cuda_embedding_forward(dt == TSR_DTYPE_BF16, tokens, seqs, T, C, v0, nv, wte, wpe,
                                                       out, tsr__cuda_stream(dev)),
                           what);
    tsr__cpu_embedding_forward(tokens, seqs, T, C, v0, nv, wte, wpe, out);
cleanup:
    return rc;
}

tsr_status_t tsr_kernel_embedding_backward(tsr_device_t dev, tsr_dtype_t dt, const int32_t *tokens, int seqs,
                                           int T, int C, int v0, int nv, const void *dout, float *dwte, float *dwpe)
{
    TSR__REGION(dev, TSR_PROF_KERNEL, "embedding bwd", NULL);
    static const char what[] = "embedding backward";
    tsr_status_t rc = TSR_OK;
    TSR_TRY(check_device(dev, dt, what));
    TSR_CHECK(dout && (dwte || dwpe), TSR_ERR_INVALID_ARG, "%s: NULL dout, or both dwte and dwpe NULL", what);
    TSR_TRY(check_vocab_block(v0, nv, dwte != NULL, what));
    TSR_TRY(check_embedding(dev, tokens, seqs, T, C, what));
    if (ON_CUDA(dev))
        return CUDA_STATUS(tsr__cuda_embedding_backward(dt == TSR_DTYPE_BF16, tokens, seqs, T, C, v0, nv, dout, dwte,
                                                        dwpe, tsr__cuda_stream(dev)),
                           what);
    rc = tsr__cpu_embedding_backward(tokens, seqs, T, C, v0, nv, dout, dwte, dwpe);
cleanup:
    return rc;
}

/* Shapes of the cross-entropy kernels; negative targets refused on the CPU, where they can be read. */
static tsr_status_t check_cross_entropy(tsr_device_t dev, tsr_dtype_t dt, int rows, int V, int v0, const void *logits,
                                        int ld, const int32_t *targets, const char *what)
{
    tsr_status_t rc = TSR_OK;
    TSR_TRY(check_device(dev, dt, what));
    TSR_CHECK(rows > 0 && V > 0 && v0 >= 0, TSR_ERR_INVALID_ARG,
              "%s: %d rows of %d logits from vocabulary id %d, expected positive sizes and v0 >= 0", what, rows, V,
              v0);
    TSR_CHECK(ld >= V, TSR_ERR_INVALID_ARG, "%s: leading dimension %d, expected >= %d logits", what, ld, V);
    TSR_CHECK(logits && targets, TSR_ERR_INVALID_ARG, "%s: NULL logits or targets", what);
    if (!ON_CUDA(dev))
        for (int r = 0; r < rows; r++)
            TSR_CHECK(targets[r] >= 0, TSR_ERR_INVALID_ARG, "%s: target %d of row %d is negative", what,
                      (int)targets[r], r);
cleanup:
    return rc;
}

tsr_status_t tsr_kernel_cross_entropy_stats(tsr_device_t dev, tsr_dtype_t dt, int rows, int V, int v0,
                                            const void *logits, int ld, const int32_t *targets, float *stats)
{
    TSR__REGION(dev, TSR_PROF_KERNEL, "cross-entropy", NULL);
    static const char what[] = "cross-entropy stats";
    tsr_status_t rc = TSR_OK;
    TSR_TRY(check_cross_entropy(dev, dt, rows, V, v0, logits, ld, targets, what));
    TSR_CHECK(stats, TSR_ERR_INVALID_ARG, "%s: NULL stats", what);
    if (ON_CUDA(dev))
        return CUDA_STATUS(tsr__cuda_cross_entropy_stats(dt == TSR_DTYPE_BF16, rows, V, v0, logits, ld, targets,
                                                         stats, tsr__cuda_stream(dev)),
                           what);
    tsr__cpu_cross_entropy_stats(rows, V, v0, logits, ld, targets, stats);
cleanup:
    return rc;
}

tsr_status_t tsr_kernel_cross_entropy_finish(tsr_device_t dev, tsr_dtype_t dt, int rows, int V, int v0, void *logits,
                                             int ld, const int32_t *targets, int parts, const float *stats,
                                             float *losses, float dscale)
{
    TSR__REGION(dev, TSR_PROF_KERNEL, "cross-entropy", NULL);
    static const char what[] = "cross-entropy finish";
    tsr_status_t rc = TSR_OK;
    TSR_TRY(check_cross_entropy(dev, dt, rows, V, v0, logits, ld, targets, what));
    TSR_CHECK(parts >= 1 && stats && losses, TSR_ERR_INVALID_ARG, "%s: %d parts, expected >= 1, or NULL stats or losses",
              what, parts);
    if (ON_CUDA(dev))
        return CUDA_STATUS(tsr__cuda_cross_entropy_finish(dt == TSR_DTYPE_BF16, rows, V, v0, logits, ld, targets,
                                                          parts, stats, losses, dscale, tsr__cuda_stream(dev)),
                           what);
    tsr__cpu_cross_entropy_finish(rows, V, v0, logits, ld, targets, parts, stats, losses, dscale);
cleanup:
    return rc;
}
