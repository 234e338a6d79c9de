/* tp_impl.h: what the sources of the tp module share (never installed). */
#ifndef TESSERA_TP_IMPL_H
#define TESSERA_TP_IMPL_H

#include "../core/internal.h"

struct tsr_tp {
    tsr_grid_t grid;
    tsr_device_t dev;
    tsr_comm_t row_comm; /* my grid row: ranks differ in column (size cols) */
    tsr_comm_t col_comm; /* my grid column: ranks differ in row (size rows) */
    tsr_comm_t tp_comm;  /* the whole tp group, ranked row * cols + col */
    int rows, cols;      /* grid shape */
    int row, col;        /* my place in it */
    int panel;           /* SUMMA panel width */
};

struct tsr_dmat {
    tsr_tp_t tp;
    tsr_dmat_desc_t desc;
    int parts[2]; /* blocks along rows [0] and columns [1] */
    int index[2]; /* my block along each */
    int start[2]; /* global index of my block's first row, column */
    int len[2];   /* rows and columns of my block */
    float *data;  /* len[0] x len[1], leading dimension len[1] */
};

/* State a forward keeps for its backward: up to two float arrays. */
struct tsr_tp_saved {
    tsr_tp_t tp;
    float *a, *b;
    size_t na, nb;
    int seq, dim; /* attention: sequence length and head size */
};

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

/* dst[i] += partial[i] after summing partial over comm in place (NULL: added as is). */
tsr_status_t tsr__tp_add_reduced(tsr_comm_t comm, float *dst, float *partial, size_t n);

/* Whether dimension da of a and db of b are split identically (same extent, unit, axis). */
int tsr__tp_same_split(tsr_dmat_t a, int da, tsr_dmat_t b, int db);

/* Whether a and b have the same shape and layout. */
int tsr__tp_same_layout(tsr_dmat_t a, tsr_dmat_t b);

/* Saved state with arrays of na and nb floats (workspace category, zeroed). */
tsr_status_t tsr__tp_saved_new(tsr_tp_t tp, size_t na, size_t nb, tsr_tp_saved_t *out);

/* Host scratch of n floats from the tracked allocator (category workspace or comm). */
tsr_status_t tsr__tp_scratch(tsr_tp_t tp, tsr_mem_category_t cat, size_t n, float **out);
void tsr__tp_scratch_free(tsr_tp_t tp, float **p);

#endif /* TESSERA_TP_IMPL_H */
