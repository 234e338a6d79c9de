/**
 * @file tessera/tp.h
 * @brief Tensor parallelism: distributed matrices, SUMMA products and transformer layer
 * operations, forward and backward, in the 2D (r×c grid) and the 1D (Megatron, 1×N) modes,
 * on any device.
 *
 * A ::tsr_tp_t binds a grid's tensor-parallel group to a device. A ::tsr_dmat_t is an m×n
 * matrix of fp32 or bf16 of which each rank holds one block in that device's memory,
 * either its own (tsr_dmat_create()) or memory it is lent (tsr_dmat_wrap(): a model computes
 * on its optimizer's parameter and gradient buffers that way, without copies). Each
 * dimension of a matrix is either whole on every rank (#TSR_SPLIT_NONE) or split into
 * balanced contiguous blocks over the grid's rows or its columns. Block p of P of an extent
 * E with unit u holds floor(G/P) + (p < G mod P) units of u elements, G = E/u: units keep
 * whole sequences (rows of T tokens) or whole attention heads on one rank.
 *
 * The 2D layout of an activation X (tokens × hidden) and a weight W (in × out) is
 * (rows over grid rows, columns over grid columns); the 1D layout keeps activations whole
 * and splits weights by columns (column-parallel) or rows (row-parallel) over grid columns.
 * A product picks its algorithm from the layouts of its operands (tsr_tp_matmul()); a grid
 * of 1×1 is the case without communication.
 *
 * Every operation computes its local part with the device kernels of tessera/kernels.h on
 * the context's device, in the matrices' element type, and communicates through
 * tessera/comm.h on the same device buffers (NCCL where the grid's communicators use it,
 * MPI otherwise), counted there: see doc/tp.md for the bytes each operation sends. Work is
 * queued on the device's stream as the kernels are; nothing waits for the device except
 * where a communication backend must (MPI staging through the host).
 *
 * Element types: the operands of one operation share one type, F32 or BF16 (BF16 on CUDA
 * only), except the parameter gradients that the backward accumulates (dW, db, dgamma,
 * dbeta, dwte, dwpe), which are always F32, and the statistics (mean, rstd, lse, losses),
 * fp32 device arrays. Gradients of weights and biases are accumulated (+=) so micro-batches
 * can accumulate; the input-gradient operations document their own rule.
 */
#ifndef TESSERA_TP_H
#define TESSERA_TP_H

#include <stddef.h>
#include <stdint.h>
#include <tessera/device.h>
#include <tessera/dtype.h>
#include <tessera/grid.h>

#ifdef __cplusplus
extern "C" {
#endif

/** An opaque tensor-parallel context: a grid's tp group, a device and SUMMA's settings. */
typedef struct tsr_tp *tsr_tp_t;

/** An opaque distributed matrix. */
typedef struct tsr_dmat *tsr_dmat_t;

/** How one dimension of a distributed matrix is split. */
typedef enum tsr_split {
    TSR_SPLIT_NONE = 0,  /**< whole on every rank */
    TSR_SPLIT_GRID_ROWS, /**< blocks over the tp grid's rows (block i on grid row i) */
    TSR_SPLIT_GRID_COLS  /**< blocks over the tp grid's columns (block j on grid column j) */
} tsr_split_t;

/** Shape, layout and element type of a distributed matrix. Start from #TSR_DMAT_DESC_INIT. */
typedef struct tsr_dmat_desc {
    size_t struct_size;           /**< sizeof(tsr_dmat_desc_t), set by #TSR_DMAT_DESC_INIT */
    int rows;                     /**< global rows m >= 0 */
    int cols;                     /**< global columns n >= 0 */
    tsr_split_t row_split;        /**< how rows are split */
    tsr_split_t col_split;        /**< how columns are split */
    int row_unit;                 /**< rows are split in units of this many (divides rows) */
    int col_unit;                 /**< columns are split in units of this many (divides cols) */
    tsr_mem_category_t category;  /**< allocator category of the local block */
    tsr_dtype_t dtype;            /**< element type: TSR_DTYPE_F32 or TSR_DTYPE_BF16 (CUDA) */
} tsr_dmat_desc_t;

/** A 0×0 fp32 matrix in the 2D layout (rows over grid rows, columns over grid columns), units 1. */
#define TSR_DMAT_DESC_INIT                                                                          \
    {sizeof(tsr_dmat_desc_t), 0, 0, TSR_SPLIT_GRID_ROWS, TSR_SPLIT_GRID_COLS, 1, 1, TSR_MEM_ACTIVATIONS,      \
     TSR_DTYPE_F32}

/** This rank's block of a distributed matrix. */
typedef struct tsr_dmat_view {
    void *data;        /**< the block, row-major, in device memory (NULL when empty) */
    int rows;          /**< rows of the block */
    int cols;          /**< columns of the block */
    int ld;            /**< elements between consecutive rows (>= cols) */
    int row0;          /**< global index of the block's first row */
    int col0;          /**< global index of the block's first column */
    tsr_dtype_t dtype; /**< element type */
} tsr_dmat_view_t;

/** Default SUMMA panel width (columns of A, rows of B per broadcast step). */
#define TSR_TP_DEFAULT_PANEL 256

/**
 * Bind the tp group of @p grid to @p dev, a CPU or CUDA device. On a CUDA device the grid's
 * communicators must already be on it (tsr_grid_set_device()). Not collective.
 * @return TSR_ERR_INVALID_ARG for a CUDA device the grid's communicators are not on.
 */
TSR_API tsr_status_t tsr_tp_create(tsr_grid_t grid, tsr_device_t dev, tsr_tp_t *out);

/** Free a context; sets *tp to NULL and accepts NULL. Matrices made on it must be freed first. */
TSR_API void tsr_tp_destroy(tsr_tp_t *tp);

/** Set SUMMA's panel width (>= 1). */
TSR_API tsr_status_t tsr_tp_set_panel(tsr_tp_t tp, int width);

/** SUMMA's panel width. */
TSR_API int tsr_tp_panel(tsr_tp_t tp);

/** Rows and columns of the tp grid. */
TSR_API void tsr_tp_shape(tsr_tp_t tp, int *rows, int *cols);

/** The grid the context was made on. */
TSR_API tsr_grid_t tsr_tp_grid(tsr_tp_t tp);

/** The device the context was made on. */
TSR_API tsr_device_t tsr_tp_device(tsr_tp_t tp);

/** The bytes sent on the tp group's row, column and whole-group communicators since the last reset. */
TSR_API uint64_t tsr_tp_bytes_sent(tsr_tp_t tp);

/** Zero the byte counters of the tp row, column and group communicators. */
TSR_API void tsr_tp_reset_counters(tsr_tp_t tp);

/**
 * The block this rank holds of a matrix described by @p desc, before any memory exists:
 * rows, columns, global offsets and type (data NULL, ld = columns).
 * @return TSR_ERR_INVALID_ARG for a description tsr_dmat_create() would refuse.
 */
TSR_API tsr_status_t tsr_tp_block(tsr_tp_t tp, const tsr_dmat_desc_t *desc, tsr_dmat_view_t *out);

/**
 * Allocate this rank's block of a distributed matrix on the tp's device, zero-filled,
 * rows contiguous (ld = columns). Not collective.
 * @return TSR_ERR_INVALID_ARG for negative sizes, a unit that does not divide its extent or
 * an element type the device does not compute in.
 */
TSR_API tsr_status_t tsr_dmat_create(tsr_tp_t tp, const tsr_dmat_desc_t *desc, tsr_dmat_t *out);

/**
 * A matrix whose block is the memory at @p data (device memory of the tp's device, rows
 * @p ld elements apart; ld 0 means the block's columns), which stays the caller's: the
 * matrix never frees it, and it must outlive the matrix. @p data may be NULL only for an
 * empty block. Not collective.
 */
TSR_API tsr_status_t tsr_dmat_wrap(tsr_tp_t tp, const tsr_dmat_desc_t *desc, void *data, int ld, tsr_dmat_t *out);

/** A new zero-filled matrix with the shape, layout and type of @p like (category as given). */
TSR_API tsr_status_t tsr_dmat_create_like(tsr_dmat_t like, tsr_mem_category_t category, tsr_dmat_t *out);

/** Free a matrix (and its block unless wrapped); sets *d to NULL and accepts NULL. */
TSR_API void tsr_dmat_destroy(tsr_dmat_t *d);

/** The matrix's description (global shape, layout, units, category, type). */
TSR_API void tsr_dmat_desc(tsr_dmat_t d, tsr_dmat_desc_t *out);

/** This rank's block. */
TSR_API void tsr_dmat_local(tsr_dmat_t d, tsr_dmat_view_t *out);

/** Set every local element to zero. */
TSR_API tsr_status_t tsr_dmat_zero(tsr_dmat_t d);

/**
 * Fill every rank's block of an fp32 matrix from the m×n row-major host matrix @p global
 * held by tp rank @p root (ignored elsewhere, may be NULL). Collective over the tp group;
 * uses send/recv.
 */
TSR_API tsr_status_t tsr_dmat_scatter(tsr_dmat_t d, int root, const float *global);

/**
 * Assemble the global m×n row-major host matrix of an fp32 matrix in @p global on tp rank
 * @p root (ignored elsewhere). Of replicated blocks, the copy of the lowest tp rank is
 * taken. Collective.
 */
TSR_API tsr_status_t tsr_dmat_gather(tsr_dmat_t d, int root, float *global);

/**
 * C = alpha op(A) op(B) + beta C by SUMMA on the 2D layout, for
 * (op(A), op(B)) = (A, B), (A, Bᵀ) or (Aᵀ, B); (Aᵀ, Bᵀ) is not offered.
 *
 * Every matrix is in the 2D layout, with any units. C's rows must be split like op(A)'s rows
 * when these are A's rows (A·B, A·Bᵀ), C's columns like op(B)'s columns when these are B's
 * columns (A·B, Aᵀ·B), and the inner index alike in A and B for A·Bᵀ and Aᵀ·B; every other
 * pair of indices may be split differently. The walked index is cut into panels of at most
 * the panel width that never straddle a block boundary of either matrix it belongs to.
 * A·B broadcasts the A panel along the grid row and the B panel down the grid column,
 * double-buffered: the next panels are in flight during this panel's GEMM. A·Bᵀ (Aᵀ·B)
 * broadcasts a panel of B (A), also double-buffered, and sends each partial product (fp32)
 * to the rank that owns that panel of C, which adds them up. C may be fp32 with bf16 A and B.
 * @return TSR_ERR_INVALID_ARG for shapes or splits that do not conform, naming the shapes.
 */
TSR_API tsr_status_t tsr_tp_summa(tsr_tp_t tp, tsr_trans_t trans_a, tsr_trans_t trans_b, float alpha,
                                  tsr_dmat_t a, tsr_dmat_t b, float beta, tsr_dmat_t c);

/**
 * C = alpha op(A) op(B) + beta C on any layouts that conform, by the cheapest algorithm
 * they allow: a local GEMM where no index needs communication (1×1 grids; the 1D
 * column-parallel products); a local GEMM and one all-reduce of C where only the inner
 * index is split, alike in A and B, and C is whole across it (the 1D row-parallel
 * products); tsr_tp_summa() where all three are in the 2D layout. C may be fp32 with bf16
 * A and B. @return TSR_ERR_INVALID_ARG naming the shapes when none applies.
 */
TSR_API tsr_status_t tsr_tp_matmul(tsr_tp_t tp, tsr_trans_t trans_a, tsr_trans_t trans_b, float alpha,
                                   tsr_dmat_t a, tsr_dmat_t b, float beta, tsr_dmat_t c);

/**
 * Bytes this rank sends in tsr_tp_summa() with these operands, by the counting model of
 * tessera/comm.h (doc/tp.md derives it). With C's block m_i×n_j, A's k_i×k_j (of the inner
 * index), e the element size of A and B and 4 that of the fp32 partials: A·B sends
 * e(m_i·k·[c>1] + k·n_j·[r>1]); A·Bᵀ sends e·n·k_j·[r>1] + 4·m_i·(n - n_j); Aᵀ·B sends
 * e·k_i·m·[c>1] + 4·n_j·(m - m_i). The panel width does not matter.
 */
TSR_API uint64_t tsr_tp_summa_bytes(tsr_tp_t tp, tsr_trans_t trans_a, tsr_trans_t trans_b, tsr_dmat_t a,
                                    tsr_dmat_t b, tsr_dmat_t c);

/**
 * Bytes this rank sends in tsr_tp_linear_forward() (backward = 0), or in
 * tsr_tp_linear_backward_input() and tsr_tp_linear_backward_weight() together (backward = 1,
 * with db if with_bias), for these operands.
 */
TSR_API uint64_t tsr_tp_linear_bytes(tsr_tp_t tp, tsr_dmat_t x, tsr_dmat_t w, tsr_dmat_t y, int with_bias,
                                     int backward);

/**
 * Y = X W + b + R (b and R may be NULL: no such term; R may be Y itself: Y += X W + b).
 * The algorithm follows the layouts (tsr_tp_matmul()):
 *   - W 2D (rows over grid rows, columns over grid columns): SUMMA; X and Y 2D.
 *   - W column-parallel (rows whole, columns over grid columns): X whole in its columns,
 *     Y split like W's columns; no communication.
 *   - W row-parallel (rows over grid columns, columns whole): X split in its columns like W's
 *     rows, Y whole; one all-reduce along the grid row.
 * b is 1×n', its columns split like Y's, whole over grid rows; R is laid out like Y.
 */
TSR_API tsr_status_t tsr_tp_linear_forward(tsr_tp_t tp, tsr_dmat_t x, tsr_dmat_t w, tsr_dmat_t b, tsr_dmat_t r,
                                           tsr_dmat_t y);

/** H = X W + b, Y = gelu(H) (the MLP's first layer; fused into the GEMM where it is local). */
TSR_API tsr_status_t tsr_tp_linear_gelu_forward(tsr_tp_t tp, tsr_dmat_t x, tsr_dmat_t w, tsr_dmat_t b, tsr_dmat_t h,
                                                tsr_dmat_t y);

/**
 * The input gradient of @p n linear layers that share their input X (the Q, K and V
 * projections; n = 1 for one layer): dX = sum over i of dY_i W_iᵀ, overwritten. Every W_i
 * must be laid out alike; in the column-parallel layout the partial dX are summed before
 * the one all-reduce along the grid row.
 */
TSR_API tsr_status_t tsr_tp_linear_backward_input(tsr_tp_t tp, int n, tsr_dmat_t *w, tsr_dmat_t *dy, tsr_dmat_t dx);

/**
 * dH = (dY Wᵀ) gelu'(H), overwritten: the gradient at the pre-activation H of a
 * tsr_tp_linear_gelu_forward() whose output feeds the linear layer W (the MLP's second
 * layer), from that layer's output gradient dY.
 */
TSR_API tsr_status_t tsr_tp_linear_gelu_backward_input(tsr_tp_t tp, tsr_dmat_t w, tsr_dmat_t dy, tsr_dmat_t h,
                                                       tsr_dmat_t dh);

/**
 * The weight gradient of a linear layer: dW += Xᵀ dY and db += the column sums of dY (db may
 * be NULL), both fp32, summed over the ranks that split the token rows. The other half of
 * the backward, so a pipeline can run it later (zero-bubble schedules).
 */
TSR_API tsr_status_t tsr_tp_linear_backward_weight(tsr_tp_t tp, tsr_dmat_t x, tsr_dmat_t dy, tsr_dmat_t dw,
                                                   tsr_dmat_t db);

/**
 * Layer normalization over each row: y = (x - mean) / sqrt(var + eps) * gamma + beta. Where
 * X's columns are split, each rank computes partial statistics of its columns and one
 * all-reduce along the grid row combines them (tsr_kernel_layernorm_stats()). gamma and
 * beta are 1×n with columns split like X's. mean and rstd (fp32 device arrays of X's local
 * rows) receive the statistics the backward needs.
 */
TSR_API tsr_status_t tsr_tp_layernorm_forward(tsr_tp_t tp, tsr_dmat_t x, tsr_dmat_t gamma, tsr_dmat_t beta,
                                              float eps, tsr_dmat_t y, float *mean, float *rstd);

/** dx += the input gradient of layernorm for dy (one all-reduce along the row where X's columns are split). */
TSR_API tsr_status_t tsr_tp_layernorm_backward_input(tsr_tp_t tp, tsr_dmat_t x, tsr_dmat_t gamma, const float *mean,
                                                     const float *rstd, tsr_dmat_t dy, tsr_dmat_t dx);

/** dgamma += and dbeta += (fp32), summed down the grid column where X's rows are split. */
TSR_API tsr_status_t tsr_tp_layernorm_backward_weight(tsr_tp_t tp, tsr_dmat_t x, const float *mean,
                                                      const float *rstd, tsr_dmat_t dy, tsr_dmat_t dgamma,
                                                      tsr_dmat_t dbeta);

/** y = gelu(x), tanh form; elementwise, any layout (y laid out like x). */
TSR_API tsr_status_t tsr_tp_gelu_forward(tsr_tp_t tp, tsr_dmat_t x, tsr_dmat_t y);

/** dx = gelu'(x) dy, overwritten (dx may be dy). */
TSR_API tsr_status_t tsr_tp_gelu_backward(tsr_tp_t tp, tsr_dmat_t x, tsr_dmat_t dy, tsr_dmat_t dx);

/** y = a + b elementwise (the residual add; its backward hands dy to both inputs). y may alias a or b. */
TSR_API tsr_status_t tsr_tp_add(tsr_tp_t tp, tsr_dmat_t a, tsr_dmat_t b, tsr_dmat_t y);

/**
 * Causal multi-head self-attention, O = softmax(Q Kᵀ / sqrt(d) + causal mask) V per sequence
 * and head, by the flash kernels (no T×T matrix). Q, K, V and O are (B·T) × (heads·d), rows
 * in units of T (whole sequences), columns in units of d (whole heads), all laid out alike
 * (Q, K and V with one leading dimension, as three column ranges of one buffer): each rank
 * computes its own sequences and heads with no communication. lse (fp32 device memory, one
 * value per local row per local head) keeps the log-sum-exp rows for the backward.
 */
TSR_API tsr_status_t tsr_tp_attention_forward(tsr_tp_t tp, tsr_dmat_t q, tsr_dmat_t k, tsr_dmat_t v, int seq_len,
                                              int head_dim, tsr_dmat_t o, float *lse);

/** Backward of attention: dq, dk, dv overwritten (laid out like q, with one leading dimension). */
TSR_API tsr_status_t tsr_tp_attention_backward(tsr_tp_t tp, tsr_dmat_t q, tsr_dmat_t k, tsr_dmat_t v, tsr_dmat_t o,
                                               const float *lse, int seq_len, int head_dim, tsr_dmat_t d_o,
                                               tsr_dmat_t dq, tsr_dmat_t dk, tsr_dmat_t dv);

/**
 * Causal attention of @p n new tokens of each sequence against a KV cache (generation).
 * Q, K, V and O hold the new tokens ((B·n) × (heads·d), rows in units of n, columns in units
 * of d, laid out as for tsr_tp_attention_forward()), at positions pos .. pos + n - 1 of
 * their sequences; k_cache and v_cache are (B·T) × (heads·d), rows in units of T (the
 * longest sequence), columns split like Q's, both with one leading dimension. The new keys
 * and values are copied into rows pos .. pos + n - 1 of each sequence's block of the caches;
 * then each query attends to its sequence's cached rows up to its own position. At pos 0 the
 * flash kernels of tsr_tp_attention_forward() compute it from Q, K and V; later steps use
 * tsr_kernel_attention_cached(). No communication.
 */
TSR_API tsr_status_t tsr_tp_attention_cached(tsr_tp_t tp, tsr_dmat_t q, tsr_dmat_t k, tsr_dmat_t v, int n, int pos,
                                             int head_dim, tsr_dmat_t k_cache, tsr_dmat_t v_cache, tsr_dmat_t o);

/**
 * Token and position embedding: X[t] = wte[tokens[t]] + wpe[t mod T]. @p tokens holds all
 * B·T token ids of X's global rows (int32 device memory, the same on every rank of the tp
 * group; the caller checks that each is in the vocabulary: an id past it looks up zeros). wte is V×H with its columns split like X's;
 * its rows (the vocabulary) either over grid rows (2D: X's rows over grid rows too; each
 * rank looks up every token in its vocabulary block and a reduce-scatter down the grid
 * column sums the blocks) or over grid columns (1D vocabulary-parallel: X whole; an
 * all-reduce along the grid row), or whole. wpe is T×H, rows whole, columns split like X's.
 */
TSR_API tsr_status_t tsr_tp_embedding_forward(tsr_tp_t tp, const int32_t *tokens, int seq_len, tsr_dmat_t wte,
                                              tsr_dmat_t wpe, tsr_dmat_t x);

/**
 * Backward of the embedding: dwte += and dwpe += (fp32; either may be NULL). In the 2D
 * layout dX is all-gathered down the grid column, and every rank adds every token's row to
 * its vocabulary block and every position to wpe's columns.
 */
TSR_API tsr_status_t tsr_tp_embedding_backward(tsr_tp_t tp, const int32_t *tokens, int seq_len, tsr_dmat_t dx,
                                               tsr_dmat_t dwte, tsr_dmat_t dwpe);

/**
 * Softmax cross-entropy fused with its backward over @p logits (tokens × vocabulary,
 * vocabulary split over columns or whole): losses[i] (fp32 device memory, one per local row)
 * = the cross-entropy of local row i against its target, and the logits are overwritten by
 * dscale × the gradient of the sum of the losses, ready for the classifier's backward.
 * @p targets holds the ids of all global rows (int32 device memory, the same on every rank;
 * the caller checks that each is in the vocabulary). Each rank computes its block's row maxima, sums of
 * exponentials and target logits; one all-gather of these along the communicator that splits
 * the vocabulary combines them.
 */
TSR_API tsr_status_t tsr_tp_cross_entropy(tsr_tp_t tp, tsr_dmat_t logits, const int32_t *targets, float dscale,
                                          float *losses);

/**
 * @name Serial references
 * Plain CPU code in double precision, row-major, for tests and for checking models: the
 * distributed operations above must agree with these.
 * @{
 */
/** C = A B (m×k times k×n). */
TSR_API void tsr_ref_matmul(int m, int n, int k, const double *a, const double *b, double *c);
/** y = x W + b (b may be NULL); x m×k, W k×n. */
TSR_API void tsr_ref_linear_forward(int m, int n, int k, const double *x, const double *w, const double *b,
                                    double *y);
/** dx = dy Wᵀ (dx may be NULL), dw += xᵀ dy, db += column sums of dy (db may be NULL). */
TSR_API void tsr_ref_linear_backward(int m, int n, int k, const double *x, const double *w, const double *dy,
                                     double *dx, double *dw, double *db);
/** Layer normalization of m rows of n; mean and rstd (m each) are written for the backward. */
TSR_API void tsr_ref_layernorm_forward(int m, int n, const double *x, const double *gamma, const double *beta,
                                       double eps, double *y, double *mean, double *rstd);
/** Backward of layernorm: dx overwritten, dgamma and dbeta accumulated. */
TSR_API void tsr_ref_layernorm_backward(int m, int n, const double *x, const double *gamma, const double *mean,
                                        const double *rstd, const double *dy, double *dx, double *dgamma,
                                        double *dbeta);
/** y = gelu(x), tanh form, n elements. */
TSR_API void tsr_ref_gelu_forward(size_t n, const double *x, double *y);
/** dx = gelu'(x) dy. */
TSR_API void tsr_ref_gelu_backward(size_t n, const double *x, const double *dy, double *dx);
/** Causal attention on (B·T) × (heads·d) matrices; att (B·heads·T·T) keeps the probabilities. */
TSR_API void tsr_ref_attention_forward(int batch, int seq_len, int heads, int head_dim, const double *q,
                                       const double *k, const double *v, double *o, double *att);
/** Backward of attention: dq, dk, dv overwritten. */
TSR_API void tsr_ref_attention_backward(int batch, int seq_len, int heads, int head_dim, const double *q,
                                        const double *k, const double *v, const double *att, const double *d_o,
                                        double *dq, double *dk, double *dv);
/** x[t] = wte[tokens[t]] + wpe[t mod T], ntok = B·T rows of width h. */
TSR_API void tsr_ref_embedding_forward(int ntok, int seq_len, int h, const int32_t *tokens, const double *wte,
                                       const double *wpe, double *x);
/** dwte += and dwpe += (either may be NULL). */
TSR_API void tsr_ref_embedding_backward(int ntok, int seq_len, int h, const int32_t *tokens, const double *dx,
                                        double *dwte, double *dwpe);
/** Mean cross-entropy of m rows of v logits against targets. */
TSR_API double tsr_ref_cross_entropy_forward(int m, int v, const double *logits, const int32_t *targets);
/** dlogits = dloss × gradient of the mean loss. */
TSR_API void tsr_ref_cross_entropy_backward(int m, int v, const double *logits, const int32_t *targets,
                                            double dloss, double *dlogits);
/** @} */

#ifdef __cplusplus
}
#endif
#endif /* TESSERA_TP_H */
