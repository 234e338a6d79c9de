/**
 * @file tessera/kernels.h
 * @brief The compute of a transformer on one device: GEMMs with epilogues, layernorm, GELU,
 * residual adds, embeddings, softmax cross-entropy fused with its backward, causal attention,
 * optimizer updates, reductions and casts.
 *
 * Every kernel exists twice: on the CPU (plain C and CBLAS, fp32: the reference) and on CUDA
 * (cuBLASLt and Tessera's own kernels, fp32 or bf16). tests/test_kernels_*.c check each CUDA
 * kernel against its CPU twin.
 *
 * Conventions.
 *   - Pointers are memory of the device passed (host memory for the CPU device), from
 *     tsr_device_alloc() or inside such a buffer. Matrices are row-major; a leading dimension
 *     (ld) counts elements per stored row.
 *   - @p dt is the element type of activations, compute copies of parameters and activation
 *     gradients: #TSR_DTYPE_F32 on every device, #TSR_DTYPE_BF16 on CUDA only (the CPU
 *     answers TSR_ERR_NOT_SUPPORTED). Arguments declared float are fp32 whatever @p dt is:
 *     statistics (layernorm mean and rstd, attention log-sum-exp), losses, the parameter
 *     gradients that kernels accumulate, optimizer state.
 *   - "+=" in a description: the kernel adds into its output; otherwise it overwrites.
 *   - Work is queued on the device's stream in call order (done at once on the CPU); only
 *     the functions that return a host value wait for the device.
 *   - GELU is GPT-2's tanh form: gelu(x) = x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
 *   - A rejected argument (a type the device does not support, a shape a kernel cannot run)
 *     is a one-line TSR_ERR_INVALID_ARG or TSR_ERR_NOT_SUPPORTED naming it; nothing is queued.
 */
#ifndef TESSERA_KERNELS_H
#define TESSERA_KERNELS_H

#include <stddef.h>
#include <stdint.h>
#include <tessera/device.h>
#include <tessera/dtype.h>
#include <tessera/status.h>
#include <tessera/visibility.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---------- GEMM ---------- */

/** What a GEMM does after the product P = alpha op(A) op(B). */
typedef enum tsr_epilogue {
    TSR_EPILOGUE_NONE = 0,  /**< C = P + beta C */
    TSR_EPILOGUE_BIAS,      /**< C = P + beta C + bias (bias: n values, added to every row) */
    TSR_EPILOGUE_BIAS_GELU, /**< aux = P + bias; C = gelu(aux) (beta must be 0) */
    TSR_EPILOGUE_DGELU      /**< C = P * gelu'(aux), aux from a BIAS_GELU forward (beta must be 0) */
} tsr_epilogue_t;

/**
 * One GEMM, C (m×n) from op(A) (m×k) and op(B) (k×n), accumulated in fp32.
 * Types: ab_type F32 with c_type F32; or ab_type BF16 with c_type BF16 or F32 (so weight
 * gradients can accumulate in fp32 with beta = 1). bias and aux have c_type; aux is m×n
 * with leading dimension ld_aux. Start from #TSR_GEMM_INIT.
 */
typedef struct tsr_gemm {
    tsr_trans_t trans_a, trans_b;
    int m, n, k;
    float alpha, beta;
    tsr_dtype_t ab_type, c_type;
    const void *a;
    int lda;
    const void *b;
    int ldb;
    void *c;
    int ldc;
    tsr_epilogue_t epilogue;
    const void *bias;
    void *aux;
    int ld_aux;
} tsr_gemm_t;

/** No transposes, alpha 1, beta 0, fp32, no epilogue; shapes and pointers still to set. */
#define TSR_GEMM_INIT                                                                                              \
    {TSR_NO_TRANS, TSR_NO_TRANS, 0, 0, 0, 1.0f, 0.0f, TSR_DTYPE_F32, TSR_DTYPE_F32, NULL, 0, NULL, 0, NULL, 0,      \
     TSR_EPILOGUE_NONE, NULL, NULL, 0}

/** Run @p g (see ::tsr_gemm_t). m, n or k of 0 is a no-op (C scaled by beta when k is 0). */
TSR_API tsr_status_t tsr_kernel_gemm(tsr_device_t dev, const tsr_gemm_t *g);

/* ---------- layer operations ---------- */

/**
 * y = (x - mean) * rstd * gamma + beta over each of @p rows rows of @p cols values;
 * mean[r] and rstd[r] = 1/sqrt(var + eps) (biased variance) are saved for the backward.
 * x, y: rows×cols of @p dt (contiguous); gamma, beta: cols of @p dt.
 */
TSR_API tsr_status_t tsr_kernel_layernorm_forward(tsr_device_t dev, tsr_dtype_t dt, int rows, int cols,
                                                  const void *x, const void *gamma, const void *beta, float eps,
                                                  void *y, float *mean, float *rstd);

/**
 * Backward of tsr_kernel_layernorm_forward(): dx += dL/dx (dt), dgamma += and dbeta += (fp32,
 * cols each) from dy (dt) and the saved mean and rstd. dx may be NULL (parameter gradients
 * only; gamma, which only dx needs, may then be NULL too), or dgamma and dbeta both NULL
 * (dx only): the input- and weight-gradient halves of a split backward.
 */
TSR_API tsr_status_t tsr_kernel_layernorm_backward(tsr_device_t dev, tsr_dtype_t dt, int rows, int cols,
                                                   const void *dy, const void *x, const void *gamma,
                                                   const float *mean, const float *rstd, void *dx, float *dgamma,
                                                   float *dbeta);

/**
 * @name Layernorm over rows split into column blocks
 * When a row's @p width values are spread over several ranks, each holding @p cols of them,
 * the statistics are summed over the ranks (an all-reduce of the stats arrays) between two
 * kernels. Forward: stats[3r..3r+2] = (S, Q, S m) over this block of row r, with S = sum of
 * x, m = S / cols and Q = sum of (x - m)^2; summed over the blocks these give the row's mean
 * S/width and variance (Q + S m)/width - mean^2 (Chan's combination of block variances).
 * S m is formed from S as stored, and the error of its rounding to float is carried in Q's
 * place, so that Q + S m keeps the precision of Q. Summed in fp32 over several blocks, S
 * and S m leave the variance a relative error of about 2^-23 mean^2/variance a block (rows
 * whose mean is far from zero against their spread lose digits, as a one-pass variance does).
 * Backward: stats[2r], stats[2r+1] = sums over the block of g and g xhat (g = dy gamma).
 * With one block (cols == width) the results equal the one-kernel forward and backward up
 * to rounding.
 * @{
 */
/** stats (rows x 3, fp32) of the block x (rows x cols of dt, contiguous). */
TSR_API tsr_status_t tsr_kernel_layernorm_stats(tsr_device_t dev, tsr_dtype_t dt, int rows, int cols, const void *x,
                                                float *stats);

/**
 * y = (x - mean) rstd gamma + beta on the block, from stats summed over every block of the
 * rows (@p width values a row in all); writes mean[r] and rstd[r] = 1/sqrt(var + eps).
 * gamma and beta: this block's cols values.
 */
TSR_API tsr_status_t tsr_kernel_layernorm_apply(tsr_device_t dev, tsr_dtype_t dt, int rows, int cols, int width,
                                                const void *x, const void *gamma, const void *beta, float eps,
                                                const float *stats, void *y, float *mean, float *rstd);

/** Backward stats (rows x 2, fp32) of the block, from dy, x, gamma and the saved mean and rstd. */
TSR_API tsr_status_t tsr_kernel_layernorm_backward_stats(tsr_device_t dev, tsr_dtype_t dt, int rows, int cols,
                                                         const void *dy, const void *x, const void *gamma,
                                                         const float *mean, const float *rstd, float *stats);

/**
 * dx += rstd (g - sum(g)/width - xhat sum(g xhat)/width) on the block, from backward stats
 * summed over every block of the rows. The parameter gradients come from
 * tsr_kernel_layernorm_backward() with dx NULL (they need no row sums).
 */
TSR_API tsr_status_t tsr_kernel_layernorm_backward_apply(tsr_device_t dev, tsr_dtype_t dt, int rows, int cols,
                                                         int width, const void *dy, const void *x,
                                                         const void *gamma, const float *mean, const float *rstd,
                                                         const float *stats, void *dx);
/** @} */

/** y = gelu(x), n elements; y may be x. */
TSR_API tsr_status_t tsr_kernel_gelu_forward(tsr_device_t dev, tsr_dtype_t dt, size_t n, const void *x, void *y);

/** dx = dy * gelu'(x), n elements; dx may be dy. */
TSR_API tsr_status_t tsr_kernel_gelu_backward(tsr_device_t dev, tsr_dtype_t dt, size_t n, const void *x,
                                              const void *dy, void *dx);

/** y = a + b, n elements; y may be a or b. */
TSR_API tsr_status_t tsr_kernel_add(tsr_device_t dev, tsr_dtype_t dt, size_t n, const void *a, const void *b,
                                    void *y);

/**
 * dst = alpha src + beta dst over a rows×cols block (leading dimensions lds and ldd >= cols),
 * src converted from @p src_type to @p dst_type (each F32 or BF16; BF16 on CUDA only). With
 * beta 0 dst is not read. Copies strided panels, sums partial products into a result of
 * another type, adds residuals. The blocks must not overlap unless src == dst with lds == ldd.
 */
TSR_API tsr_status_t tsr_kernel_axpby_2d(tsr_device_t dev, int rows, int cols, float alpha, tsr_dtype_t src_type,
                                         const void *src, int lds, float beta, tsr_dtype_t dst_type, void *dst,
                                         int ldd);

/** db += the sum over @p rows rows of dy (rows×cols of @p dt, leading dimension ld); db: cols fp32. */
TSR_API tsr_status_t tsr_kernel_bias_grad(tsr_device_t dev, tsr_dtype_t dt, int rows, int cols, const void *dy,
                                          int ld, float *db);

/**
 * out[s T + t] = wte[tokens[s T + t] - v0] + wpe[t] for @p seqs sequences of @p T tokens, with
 * wte holding the @p nv vocabulary rows [v0, v0 + nv) (a vocabulary-parallel block): a token
 * outside the block contributes zeros. wte (nv×C) or wpe (T×C) may be NULL (no term), not
 * both; out: (seqs T)×C; all of @p dt. tokens: int32 device memory, each already checked to
 * be in the vocabulary.
 */
TSR_API tsr_status_t tsr_kernel_embedding_forward(tsr_device_t dev, tsr_dtype_t dt, const int32_t *tokens,
                                                  int seqs, int T, int C, int v0, int nv, const void *wte,
                                                  const void *wpe, void *out);

/**
 * dwte[tokens[i] - v0] += dout[i] for the tokens of the block [v0, v0 + nv), and
 * dwpe[i mod T] += dout[i] (fp32 accumulators, either may be NULL, not both; dout of dt).
 * Deterministic: the same inputs give the same bits.
 */
TSR_API tsr_status_t tsr_kernel_embedding_backward(tsr_device_t dev, tsr_dtype_t dt, const int32_t *tokens,
                                                   int seqs, int T, int C, int v0, int nv, const void *dout,
                                                   float *dwte, float *dwpe);

/**
 * @name Softmax cross-entropy fused with its backward, over a vocabulary split into blocks
 * The logits of row r are spread over @p parts blocks of the vocabulary (one a rank; one
 * block in all when the vocabulary is whole). Each block's stats are computed, gathered from
 * every block (an all-gather in block order), and finished on each block:
 * losses[r] = logsumexp(row) - row[targets[r]] and the block is overwritten by
 * dscale * (softmax(row) - onehot(targets[r])), the gradient of dscale * sum(losses).
 * The block holds vocabulary ids [v0, v0 + V) of rows×V logits with leading dimension
 * ld >= V (columns V..ld-1 are not touched). targets: int32 device memory, in the whole
 * vocabulary; a target in no block leaves its row's loss without the target term, so check
 * token ids on the host first (tsr_gpt_train_step() does); the CPU refuses negative ones.
 * @{
 */
/**
 * stats[3r..3r+2] (fp32) = (max of the block's row, sum of exp(l - max), the target's logit
 * if targets[r] is in the block, else 0).
 */
TSR_API tsr_status_t tsr_kernel_cross_entropy_stats(tsr_device_t dev, tsr_dtype_t dt, int rows, int V, int v0,
                                                    const void *logits, int ld, const int32_t *targets,
                                                    float *stats);

/**
 * Combine @p parts blocks' stats (block p's at stats + 3 p rows) into losses[r] (fp32) and
 * overwrite this block's logits with the gradient (see above).
 */
TSR_API tsr_status_t tsr_kernel_cross_entropy_finish(tsr_device_t dev, tsr_dtype_t dt, int rows, int V, int v0,
                                                     void *logits, int ld, const int32_t *targets, int parts,
                                                     const float *stats, float *losses, float dscale);
/** @} */

/**
 * Causal multi-head attention, scale 1/sqrt(hd), without storing the T×T matrix:
 * o = softmax(q kᵀ / sqrt(hd) + causal mask) v for every sequence and head. q, k, v: rows
 * of (seqs T) tokens with leading dimension ld_in, head h in columns [h hd, (h+1) hd);
 * o likewise with ld_o. lse[(s heads + h) T + t] (fp32) receives the log-sum-exp of each
 * row of scaled scores, for the backward. hd is any size on the CPU, one of 16, 32, 64 and
 * 128 on CUDA.
 */
TSR_API tsr_status_t tsr_kernel_attention_forward(tsr_device_t dev, tsr_dtype_t dt, int seqs, int T, int heads,
                                                  int hd, const void *q, const void *k, const void *v, int ld_in,
                                                  void *o, int ld_o, float *lse);

/**
 * Backward of tsr_kernel_attention_forward(): dq, dk, dv (=, leading dimension ld_in, like
 * q, k, v) from do (leading dimension ld_o, like o), o and lse. delta is fp32 scratch of
 * seqs × heads × T values.
 */
TSR_API tsr_status_t tsr_kernel_attention_backward(tsr_device_t dev, tsr_dtype_t dt, int seqs, int T, int heads,
                                                   int hd, const void *q, const void *k, const void *v, int ld_in,
                                                   const void *o, const void *d_o, int ld_o, const float *lse,
                                                   float *delta, void *dq, void *dk, void *dv);

/**
 * Attention of @p n new query rows per sequence against a KV cache (generation): for
 * sequence s, head h and query i (at position pos + i),
 * o[s n + i] = softmax over j <= pos + i of (q[s n + i] . kc[s T + j] / sqrt(hd)) vc[s T + j].
 * q: (seqs n) rows with leading dimension ld_q; kc, vc: (seqs T) rows with ld_c, of which rows
 * s T .. s T + pos + n - 1 hold keys and values already (the new ones included); o like q
 * with ld_o; head h in columns [h hd, (h+1) hd) of each. Softmax in fp32. Any head size on
 * the CPU; on CUDA a cache of up to about 12000 rows (shared memory), f32 or bf16.
 */
TSR_API tsr_status_t tsr_kernel_attention_cached(tsr_device_t dev, tsr_dtype_t dt, int seqs, int n, int pos, int T,
                                                 int heads, int hd, const void *q, int ld_q, const void *kc,
                                                 const void *vc, int ld_c, void *o, int ld_o);

/* ---------- optimizer updates and reductions (fp32 state) ---------- */

/** Hyper-parameters of one AdamW update; bc1 and bc2 are the bias corrections 1 - beta^t. */
typedef struct tsr_adamw_params {
    float lr, beta1, beta2, eps, weight_decay;
    float bc1, bc2;
    float grad_coef; /**< every gradient is multiplied by this first (clipping, loss scale) */
} tsr_adamw_params_t;

/**
 * AdamW in PyTorch's order over n values: g' = g grad_coef; m = b1 m + (1-b1) g';
 * v = b2 v + (1-b2) g'^2; p = p (1 - lr wd) - (lr/bc1) m / (sqrt(v)/sqrt(bc2) + eps).
 * When @p work is not NULL it receives p converted to @p work_dt (the compute copy).
 */
TSR_API tsr_status_t tsr_kernel_adamw(tsr_device_t dev, size_t n, float *p, const float *g, float *m, float *v,
                                      const tsr_adamw_params_t *hp, tsr_dtype_t work_dt, void *work);

/**
 * SGD with PyTorch's momentum (m = mu m + g', zero-initialized; no momentum when m is NULL)
 * and decoupled weight decay: p = p (1 - lr wd) - lr d, d = m or g'. @p work as for AdamW.
 */
TSR_API tsr_status_t tsr_kernel_sgd(tsr_device_t dev, size_t n, float *p, const float *g, float *m, float lr,
                                    float momentum, float weight_decay, float grad_coef, tsr_dtype_t work_dt,
                                    void *work);

/** *out = the sum of x[i]^2 over n fp32 values, accumulated in double. Waits for the device. */
TSR_API tsr_status_t tsr_kernel_sumsq(tsr_device_t dev, const float *x, size_t n, double *out);

/** *out = the sum of n fp32 values, accumulated in double. Waits for the device. */
TSR_API tsr_status_t tsr_kernel_sum(tsr_device_t dev, const float *x, size_t n, double *out);

/** y += alpha x over n fp32 values. */
TSR_API tsr_status_t tsr_kernel_axpy(tsr_device_t dev, size_t n, float alpha, const float *x, float *y);

/** x *= alpha over n values of @p dt. */
TSR_API tsr_status_t tsr_kernel_scale(tsr_device_t dev, tsr_dtype_t dt, size_t n, void *x, float alpha);

/**
 * dst = src converted, n values: F32 to BF16 rounds to nearest even (NaN stays NaN), BF16 to
 * F32 is exact, equal types copy. Supported on every device, BF16 included (stored as the
 * top 16 bits of the float).
 */
TSR_API tsr_status_t tsr_kernel_cast(tsr_device_t dev, tsr_dtype_t src_type, const void *src,
                                     tsr_dtype_t dst_type, void *dst, size_t n);

#ifdef __cplusplus
}
#endif
#endif /* TESSERA_KERNELS_H */
