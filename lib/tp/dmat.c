/* dmat.c: the tensor-parallel context and distributed matrices (blocks, scatter, gather). */
#include <stdlib.h>
#include <string.h>

#include "tp_impl.h"

/* Point-to-point tag of scatter and gather. */
#define TP_TAG_SCATTER 7101

tsr_status_t tsr_tp_create(tsr_grid_t grid, tsr_device_t dev, tsr_tp_t *out)
{
    tsr_status_t rc = TSR_OK;
    struct tsr_tp *tp = NULL;
    TSR_CHECK(out, TSR_ERR_INVALID_ARG, "tsr_tp_create: out is NULL");
    *out = NULL;
    TSR_CHECK(grid && dev, TSR_ERR_INVALID_ARG, "tsr_tp_create: grid and device must not be NULL");
    TSR_CHECK(tsr_device_kind(dev) == TSR_DEVICE_CPU, TSR_ERR_NOT_SUPPORTED,
              "tsr_tp_create: the tp layer kernels run on the host; got a %s device, expected cpu",
              tsr_device_kind_name(tsr_device_kind(dev)));
    tp = tsr__calloc(1, sizeof *tp);
    TSR_CHECK(tp, TSR_ERR_OUT_OF_MEMORY, "no memory for a tp context");
    tsr_layout_t layout = TSR_LAYOUT_INIT;
    tsr_grid_coords_t co;
    tsr_grid_layout(grid, &layout);
    tsr_grid_coords(grid, &co);
    tp->grid = grid;
    tp->dev = dev;
    tp->row_comm = tsr_grid_comm(grid, TSR_AXIS_TP_ROW);
    tp->col_comm = tsr_grid_comm(grid, TSR_AXIS_TP_COL);
    tp->tp_comm = tsr_grid_comm(grid, TSR_AXIS_TP);
    tp->rows = layout.tp_rows;
    tp->cols = layout.tp_cols;
    tp->row = co.tp_row;
    tp->col = co.tp_col;
    tp->panel = TSR_TP_DEFAULT_PANEL;
    *out = tp;
    tp = NULL;
cleanup:
    free(tp);
    return rc;
}

void tsr_tp_destroy(tsr_tp_t *tp)
{
    if (!tp || !*tp)
        return;
    free(*tp);
    *tp = NULL;
}

tsr_status_t tsr_tp_set_panel(tsr_tp_t tp, int width)
{
    if (width < 1)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "SUMMA panel width must be at least 1, got %d", width);
    tp->panel = width;
    return TSR_OK;
}

int tsr_tp_panel(tsr_tp_t tp) { return tp->panel; }

void tsr_tp_shape(tsr_tp_t tp, int *rows, int *cols)
{
    if (rows)
        *rows = tp->rows;
    if (cols)
        *cols = tp->cols;
}

tsr_grid_t tsr_tp_grid(tsr_tp_t tp) { return tp->grid; }

tsr_device_t tsr_tp_device(tsr_tp_t tp) { return tp->dev; }

uint64_t tsr_tp_bytes_sent(tsr_tp_t tp)
{
    tsr_comm_counters_t r, c, g;
    tsr_comm_counters(tp->row_comm, &r);
    tsr_comm_counters(tp->col_comm, &c);
    tsr_comm_counters(tp->tp_comm, &g);
    return r.bytes_sent + c.bytes_sent + g.bytes_sent;
}

void tsr_tp_reset_counters(tsr_tp_t tp)
{
    tsr_comm_reset_counters(tp->row_comm);
    tsr_comm_reset_counters(tp->col_comm);
    tsr_comm_reset_counters(tp->tp_comm);
}

void tsr__tp_block(int extent, int unit, int parts, int p, int *start, int *len)
{
    int units = extent / unit, base = units / parts, extra = units % parts;
    *start = unit * (p * base + (p < extra ? p : extra));
    *len = unit * (base + (p < extra));
}

int tsr__tp_parts(tsr_tp_t tp, tsr_split_t split)
{
    return split == TSR_SPLIT_GRID_ROWS ? tp->rows : split == TSR_SPLIT_GRID_COLS ? tp->cols : 1;
}

int tsr__tp_index(tsr_tp_t tp, tsr_split_t split)
{
    return split == TSR_SPLIT_GRID_ROWS ? tp->row : split == TSR_SPLIT_GRID_COLS ? tp->col : 0;
}

tsr_comm_t tsr__tp_split_comm(tsr_tp_t tp, tsr_split_t split)
{
    return split == TSR_SPLIT_GRID_ROWS ? tp->col_comm : split == TSR_SPLIT_GRID_COLS ? tp->row_comm : NULL;
}

tsr_comm_t tsr__tp_dim_comm(tsr_dmat_t d, int dim)
{
    return d->parts[dim] > 1 ? tsr__tp_split_comm(d->tp, dim ? d->desc.col_split : d->desc.row_split) : NULL;
}

tsr_status_t tsr__tp_add_reduced(tsr_comm_t comm, float *dst, float *partial, size_t n)
{
    if (comm) {
        tsr_status_t rc = tsr_comm_allreduce(comm, TSR_IN_PLACE, partial, n, TSR_DTYPE_F32, TSR_REDUCE_SUM);
        if (rc != TSR_OK)
            return rc;
    }
    for (size_t i = 0; i < n; i++)
        dst[i] += partial[i];
    return TSR_OK;
}

static int extent_of(const tsr_dmat_desc_t *d, int dim) { return dim ? d->cols : d->rows; }
static int unit_of(const tsr_dmat_desc_t *d, int dim) { return dim ? d->col_unit : d->row_unit; }
static tsr_split_t split_of(const tsr_dmat_desc_t *d, int dim) { return dim ? d->col_split : d->row_split; }

int tsr__tp_same_split(tsr_dmat_t a, int da, tsr_dmat_t b, int db)
{
    if (extent_of(&a->desc, da) != extent_of(&b->desc, db))
        return 0;
    if (a->parts[da] != b->parts[db] || a->index[da] != b->index[db])
        return 0;
    /* Units that differ can still give the same blocks: compare the blocks themselves. */
    for (int p = 0; p < a->parts[da]; p++) {
        int s1, l1, s2, l2;
        tsr__tp_block(extent_of(&a->desc, da), unit_of(&a->desc, da), a->parts[da], p, &s1, &l1);
        tsr__tp_block(extent_of(&b->desc, db), unit_of(&b->desc, db), b->parts[db], p, &s2, &l2);
        if (s1 != s2 || l1 != l2)
            return 0;
    }
    return a->parts[da] == 1 || split_of(&a->desc, da) == split_of(&b->desc, db);
}

int tsr__tp_same_layout(tsr_dmat_t a, tsr_dmat_t b)
{
    return tsr__tp_same_split(a, 0, b, 0) && tsr__tp_same_split(a, 1, b, 1);
}

static tsr_status_t check_desc(const tsr_dmat_desc_t *d)
{
    if (!d || d->struct_size < sizeof(tsr_dmat_desc_t))
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "dmat description missing or not from TSR_DMAT_DESC_INIT");
    for (int dim = 0; dim < 2; dim++) {
        int e = extent_of(d, dim), u = unit_of(d, dim);
        const char *what = dim ? "columns" : "rows";
        if (e < 0 || u < 1 || e % u != 0)
            return TSR_ERROR(TSR_ERR_INVALID_ARG,
                             "dmat %s: extent %d must be >= 0 and a multiple of its unit %d (>= 1)", what, e, u);
        if ((unsigned)split_of(d, dim) > TSR_SPLIT_GRID_COLS)
            return TSR_ERROR(TSR_ERR_INVALID_ARG, "dmat %s: split %d out of range", what, (int)split_of(d, dim));
    }
    if (d->row_split != TSR_SPLIT_NONE && d->row_split == d->col_split)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "dmat: rows and columns cannot both be split over the same grid axis");
    return TSR_OK;
}

tsr_status_t tsr_dmat_create(tsr_tp_t tp, const tsr_dmat_desc_t *desc, tsr_dmat_t *out)
{
    tsr_status_t rc = TSR_OK;
    struct tsr_dmat *d = NULL;
    TSR_CHECK(tp && out, TSR_ERR_INVALID_ARG, "tsr_dmat_create: tp and out must not be NULL");
    *out = NULL;
    TSR_TRY(check_desc(desc));
    d = tsr__calloc(1, sizeof *d);
    TSR_CHECK(d, TSR_ERR_OUT_OF_MEMORY, "no memory for a dmat");
    d->tp = tp;
    d->desc = *desc;
    d->desc.struct_size = sizeof d->desc;
    for (int dim = 0; dim < 2; dim++) {
        d->parts[dim] = tsr__tp_parts(tp, split_of(desc, dim));
        d->index[dim] = tsr__tp_index(tp, split_of(desc, dim));
        tsr__tp_block(extent_of(desc, dim), unit_of(desc, dim), d->parts[dim], d->index[dim], &d->start[dim],
                      &d->len[dim]);
    }
    size_t bytes = (size_t)d->len[0] * (size_t)d->len[1] * sizeof(float);
    TSR_TRY(tsr_device_alloc(tp->dev, desc->category, bytes, (void **)&d->data));
    if (bytes)
        TSR_TRY(tsr_device_memset(tp->dev, d->data, 0, bytes));
    *out = d;
    d = NULL;
cleanup:
    tsr_dmat_destroy(&d);
    return rc;
}

tsr_status_t tsr_dmat_create_like(tsr_dmat_t like, tsr_mem_category_t category, tsr_dmat_t *out)
{
    tsr_dmat_desc_t desc = like->desc;
    desc.category = category;
    return tsr_dmat_create(like->tp, &desc, out);
}

void tsr_dmat_destroy(tsr_dmat_t *d)
{
    if (!d || !*d)
        return;
    void *p = (*d)->data;
    tsr_device_free((*d)->tp->dev, &p);
    free(*d);
    *d = NULL;
}

void tsr_dmat_desc(tsr_dmat_t d, tsr_dmat_desc_t *out) { *out = d->desc; }

void tsr_dmat_local(tsr_dmat_t d, tsr_dmat_view_t *out)
{
    out->data = d->data;
    out->rows = d->len[0];
    out->cols = d->len[1];
    out->ld = d->len[1];
    out->row0 = d->start[0];
    out->col0 = d->start[1];
}

tsr_status_t tsr_dmat_zero(tsr_dmat_t d)
{
    size_t bytes = (size_t)d->len[0] * (size_t)d->len[1] * sizeof(float);
    return bytes ? tsr_device_memset(d->tp->dev, d->data, 0, bytes) : TSR_OK;
}

/* The block of d that tp rank q holds: first row, column and their counts. */
static void block_of_rank(tsr_dmat_t d, int q, int start[2], int len[2])
{
    tsr_tp_t tp = d->tp;
    int coord[3] = {0, q / tp->cols, q % tp->cols}; /* indexed by tsr_split_t */
    for (int dim = 0; dim < 2; dim++) {
        tsr_split_t s = split_of(&d->desc, dim);
        tsr__tp_block(extent_of(&d->desc, dim), unit_of(&d->desc, dim), d->parts[dim], coord[s], &start[dim],
                      &len[dim]);
    }
}

/* Elements in the largest block any tp rank holds (at least 1). */
static size_t largest_block(tsr_dmat_t d)
{
    size_t most = 1;
    for (int q = 0; q < d->tp->rows * d->tp->cols; q++) {
        int start[2], len[2];
        block_of_rank(d, q, start, len);
        if ((size_t)len[0] * (size_t)len[1] > most)
            most = (size_t)len[0] * (size_t)len[1];
    }
    return most;
}

/* Copy a rows x cols block between a packed buffer and the global matrix (ld = global cols). */
static void copy_block(float *global, int gcols, const int start[2], const int len[2], float *packed, int to_global)
{
    if (len[1] == 0) /* an empty block has no memory behind it */
        return;
    for (int i = 0; i < len[0]; i++) {
        float *g = global + (size_t)(start[0] + i) * gcols + start[1];
        float *p = packed + (size_t)i * len[1];
        memcpy(to_global ? g : p, to_global ? p : g, (size_t)len[1] * sizeof(float));
    }
}

tsr_status_t tsr_dmat_scatter(tsr_dmat_t d, int root, const float *global)
{
    tsr_status_t rc = TSR_OK;
    tsr_tp_t tp = d->tp;
    float *buf = NULL;
    int me = tsr_comm_rank(tp->tp_comm), n = tsr_comm_size(tp->tp_comm);
    TSR_CHECK(root >= 0 && root < n, TSR_ERR_INVALID_ARG, "scatter root %d out of range for %d tp ranks", root, n);
    size_t local = (size_t)d->len[0] * (size_t)d->len[1];
    if (me != root) {
        TSR_TRY(tsr_comm_recv(tp->tp_comm, d->data, local, TSR_DTYPE_F32, root, TP_TAG_SCATTER));
        goto cleanup;
    }
    TSR_CHECK(global || d->desc.rows * d->desc.cols == 0, TSR_ERR_INVALID_ARG, "scatter: global is NULL on the root");
    TSR_TRY(tsr__tp_scratch(tp, TSR_MEM_COMM, largest_block(d), &buf));
    for (int q = 0; q < n; q++) {
        int start[2], len[2];
        block_of_rank(d, q, start, len);
        copy_block((float *)global, d->desc.cols, start, len, q == root ? d->data : buf, 0);
        if (q != root)
            TSR_TRY(tsr_comm_send(tp->tp_comm, buf, (size_t)len[0] * (size_t)len[1], TSR_DTYPE_F32, q,
                                  TP_TAG_SCATTER));
    }
cleanup:
    tsr__tp_scratch_free(tp, &buf);
    return rc;
}

tsr_status_t tsr_dmat_gather(tsr_dmat_t d, int root, float *global)
{
    tsr_status_t rc = TSR_OK;
    tsr_tp_t tp = d->tp;
    float *buf = NULL;
    int me = tsr_comm_rank(tp->tp_comm), n = tsr_comm_size(tp->tp_comm);
    TSR_CHECK(root >= 0 && root < n, TSR_ERR_INVALID_ARG, "gather root %d out of range for %d tp ranks", root, n);
    if (me != root) {
        size_t local = (size_t)d->len[0] * (size_t)d->len[1];
        TSR_TRY(tsr_comm_send(tp->tp_comm, d->data, local, TSR_DTYPE_F32, root, TP_TAG_SCATTER));
        goto cleanup;
    }
    TSR_TRY(tsr__tp_scratch(tp, TSR_MEM_COMM, largest_block(d), &buf));
    /* From the highest rank down, so the lowest holder of a replicated block is written last. */
    for (int q = n - 1; q >= 0; q--) {
        int start[2], len[2];
        block_of_rank(d, q, start, len);
        if (q != root)
            TSR_TRY(tsr_comm_recv(tp->tp_comm, buf, (size_t)len[0] * (size_t)len[1], TSR_DTYPE_F32, q,
                                  TP_TAG_SCATTER));
        copy_block(global, d->desc.cols, start, len, q == root ? d->data : buf, 1);
    }
cleanup:
    tsr__tp_scratch_free(tp, &buf);
    return rc;
}

tsr_status_t tsr__tp_scratch(tsr_tp_t tp, tsr_mem_category_t cat, size_t n, float **out)
{
    *out = NULL;
    return tsr_device_alloc(tp->dev, cat, (n ? n : 1) * sizeof(float), (void **)out);
}

void tsr__tp_scratch_free(tsr_tp_t tp, float **p)
{
    void *v = *p;
    tsr_device_free(tp->dev, &v);
    *p = NULL;
}

tsr_status_t tsr__tp_saved_new(tsr_tp_t tp, size_t na, size_t nb, tsr_tp_saved_t *out)
{
    tsr_status_t rc = TSR_OK;
    struct tsr_tp_saved *s = tsr__calloc(1, sizeof *s);
    *out = NULL;
    TSR_CHECK(s, TSR_ERR_OUT_OF_MEMORY, "no memory for saved state");
    s->tp = tp;
    s->na = na;
    s->nb = nb;
    TSR_TRY(tsr__tp_scratch(tp, TSR_MEM_ACTIVATIONS, na, &s->a));
    TSR_TRY(tsr__tp_scratch(tp, TSR_MEM_ACTIVATIONS, nb, &s->b));
    memset(s->a, 0, (na ? na : 1) * sizeof(float));
    memset(s->b, 0, (nb ? nb : 1) * sizeof(float));
    *out = s;
    s = NULL;
cleanup:
    tsr_tp_saved_destroy(&s);
    return rc;
}

void tsr_tp_saved_destroy(tsr_tp_saved_t *saved)
{
    if (!saved || !*saved)
        return;
    tsr__tp_scratch_free((*saved)->tp, &(*saved)->a);
    tsr__tp_scratch_free((*saved)->tp, &(*saved)->b);
    free(*saved);
    *saved = NULL;
}
