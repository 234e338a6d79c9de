/* tp_impl.h: what the sources of the tp module share (never installed). */
#ifndef TESSERA_TP_IMPL_H
#define TESSERA_TP_IMPL_H

#include "../core/internal.h"

/* Scratch buffers a tp context keeps on its device, one per use, grown on demand: an
 * operation never allocates after its first call with the largest shapes. Two uses that can
 * be live at once (SUMMA inside a linear backward beside its bias sum) have different slots. */
typedef enum tp_scratch {
    TP_SCRATCH_PANEL_A0, /* SUMMA: broadcast panels, double-buffered */
    TP_SCRATCH_PANEL_A1,
    TP_SCRATCH_PANEL_B0,
    TP_SCRATCH_PANEL_B1,
    TP_SCRATCH_PART0, /* SUMMA A·Bᵀ, Aᵀ·B: fp32 partial products and the owner's receive buffer */
    TP_SCRATCH_PART1,
    TP_SCRATCH_RECV,
    TP_SCRATCH_STATS,  /* layernorm and cross-entropy row statistics */
    TP_SCRATCH_GATHER, /* cross-entropy: every block's statistics */
    TP_SCRATCH_EMBED,  /* embedding: every token's rows, padded per grid row */
    TP_SCRATCH_DELTA,  /* attention backward */
    TP_SCRATCH_LSE,    /* attention with a KV cache: the prefill's log-sum-exp rows */
    TP_SCRATCH_BIAS,   /* bias gradient partial sums */
    TP_SCRATCH_COUNT
} tp_scratch_t;

struct tsr_tp {
    tsr_grid_t grid;
    tsr_device_t dev;
    tsr_comm_t row_comm; /* my grid row: ranks differ in column (size cols) */
    tsr_comm_t col_comm; /* my grid column: ranks differ in row (size rows) */
    tsr_comm_t tp_comm;  /* the whole tp group, ranked row * cols + col */
    int rows, cols;      /* grid shape */
    int row, col;        /* my place in it */
    int panel;           /* SUMMA panel width */
    void *scratch[TP_SCRATCH_COUNT];
    size_t scratch_bytes[TP_SCRATCH_COUNT];
};

struct tsr_dmat {
    tsr_tp_t tp;
    tsr_dmat_desc_t desc;
    int parts[2]; /* blocks along rows [0] and columns [1] */
    int index[2]; /* my block along each */
    int start[2]; /* global index of my block's first row, column */
    int len[2];   /* rows and columns of my block */
    int ld;       /* elements between rows of the block */
    size_t es;    /* bytes per element */
    int owned;    /* data is the matrix's own allocation */
    void *data;   /* len[0] x len[1], leading dimension ld */
};

/* Element (i, j) of d's local block, as a byte address. */
static inline void *tsr__dmat_at(tsr_dmat_t d, int i, int j)
{
    return (char *)d->data + ((size_t)i * (size_t)d->ld + (size_t)j) * d->es;
}

/* Block p of `parts` of an extent split in units: its first index and length. */
void tsr__tp_block(int extent, int unit, int parts, int p, int *start, int *len);

/* Number of blocks for a split, and my index among them. */
int tsr__tp_parts(tsr_tp_t tp, tsr_split_t split);
int tsr__tp_index(tsr_tp_t tp, tsr_split_t split);

/* The communicator across which a dimension with this split is distributed (NULL if whole). */
tsr_comm_t tsr__tp_split_comm(tsr_tp_t tp, tsr_split_t split);

/* The communicator across which dimension dim (0 rows, 1 columns) of d is split, or NULL when
 * that dimension is whole on every rank. */
tsr_comm_t tsr__tp_dim_comm(tsr_dmat_t d, int dim);

/* Whether dimension da of a and db of b are split identically (same extent, unit, axis). */
int tsr__tp_same_split(tsr_dmat_t a, int da, tsr_dmat_t b, int db);

/* Whether a and b have the same shape and layout. */
int tsr__tp_same_layout(tsr_dmat_t a, tsr_dmat_t b);

/* Whether d's block is stored without gaps between rows. */
int tsr__dmat_contiguous(tsr_dmat_t d);

/* The context's scratch buffer `slot`, at least `bytes` long (device memory, category WORKSPACE). */
tsr_status_t tsr__tp_scratch(tsr_tp_t tp, tp_scratch_t slot, size_t bytes, void **out);

/* dst (a block laid out like d) = alpha src + beta dst, with the types and leading dimensions given. */
tsr_status_t tsr__tp_axpby(tsr_tp_t tp, int rows, int cols, float alpha, tsr_dtype_t st, const void *src, int lds,
                           float beta, tsr_dtype_t dt, void *dst, int ldd);

/* C = alpha op(A) op(B) + beta C (+ bias, with an epilogue) on distributed matrices. */
typedef struct tp_gemm {
    tsr_trans_t ta, tb;
    float alpha, beta;
    tsr_dmat_t a, b, c;
    tsr_epilogue_t epilogue; /* NONE, BIAS, BIAS_GELU (aux = pre-activation) or DGELU */
    tsr_dmat_t bias;         /* BIAS, BIAS_GELU: 1 x n, split like C's columns */
    tsr_dmat_t aux;          /* BIAS_GELU, DGELU: laid out like C */
    int no_sum;              /* TP_MM_SUM: leave each rank's partial (beta applied everywhere) */
} tp_gemm_t;

/* How tsr_tp_matmul() computes a product: one local GEMM; a local GEMM and an all-reduce of
 * C over the ranks that split the inner index; SUMMA. */
typedef enum tp_mm_plan { TP_MM_LOCAL, TP_MM_SUM, TP_MM_SUMMA } tp_mm_plan_t;

/* The plan for g, and for TP_MM_SUM the communicator of the sum. */
tsr_status_t tsr__tp_matmul_plan(const tp_gemm_t *g, tp_mm_plan_t *plan, tsr_comm_t *kcomm);

/* The product of g by its plan. An epilogue is fused where the product is local; after a sum
 * or SUMMA, BIAS_GELU computes aux = product + bias and C = gelu(aux), DGELU multiplies C by
 * gelu'(aux) in place. */
tsr_status_t tsr__tp_matmul(tsr_tp_t tp, const tp_gemm_t *g);

#endif /* TESSERA_TP_IMPL_H */
