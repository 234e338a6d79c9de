/* dmat.c: the tensor-parallel context, its scratch, and distributed matrices (own or
 * wrapped blocks, scatter, gather). */
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
    if (tsr_device_kind(dev) != TSR_DEVICE_CPU) {
        static const tsr_axis_t axes[] = {TSR_AXIS_TP, TSR_AXIS_TP_ROW, TSR_AXIS_TP_COL};
        for (size_t i = 0; i < sizeof axes / sizeof *axes; i++)
            TSR_CHECK(tsr_comm_device(tsr_grid_comm(grid, axes[i])) == dev, TSR_ERR_INVALID_ARG,
                      "tsr_tp_create: the grid's tp communicators are not on this %s device; call "
                      "tsr_grid_set_device() first",
                      tsr_device_kind_name(tsr_device_kind(dev)));
    }
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
    for (int s = 0; s < TP_SCRATCH_COUNT; s++)
        tsr_device_free((*tp)->dev, &(*tp)->scratch[s]);
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

tsr_status_t tsr__tp_scratch(tsr_tp_t tp, tp_scratch_t slot, size_t bytes, void **out)
{
    tsr_status_t rc = TSR_OK;
    if (bytes > tp->scratch_bytes[slot]) {
        /* Freeing a buffer queued work may still read is safe: the device frees in stream order
         * (a CUDA free waits for the device), and every communication on it has completed. */
        TSR_TRY(tsr_device_free(tp->dev, &tp->scratch[slot]));
        tp->scratch_bytes[slot] = 0;
        TSR_TRY(tsr_device_alloc(tp->dev, TSR_MEM_WORKSPACE, bytes, &tp->scratch[slot]));
        tp->scratch_bytes[slot] = bytes;
    }
    *out = tp->scratch[slot];
cleanup:
    return rc;
}

tsr_status_t tsr__tp_axpby(tsr_tp_t tp, int rows, int cols, float alpha, tsr_dtype_t st, const void *src, int lds,
                           float beta, tsr_dtype_t dt, void *dst, int ldd)
{
    if (rows == 0 || cols == 0)
        return TSR_OK;
    return tsr_kernel_axpby_2d(tp->dev, rows, cols, alpha, st, src, lds, beta, dt, dst, ldd);
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

int tsr__dmat_contiguous(tsr_dmat_t d) { return d->ld == d->len[1] || d->len[0] <= 1; }

static tsr_status_t check_desc(tsr_tp_t tp, const tsr_dmat_desc_t *d)
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
    if (d->dtype != TSR_DTYPE_F32 && !(d->dtype == TSR_DTYPE_BF16 && tsr_device_kind(tp->dev) == TSR_DEVICE_CUDA))
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "dmat: element type %s on a %s device, expected f32%s",
                         tsr_dtype_name(d->dtype), tsr_device_kind_name(tsr_device_kind(tp->dev)),
                         tsr_device_kind(tp->dev) == TSR_DEVICE_CUDA ? " or bf16" : "");
    return TSR_OK;
}

/* The handle of a matrix: description, blocks and my block's place; no memory yet. */
static tsr_status_t new_handle(tsr_tp_t tp, const tsr_dmat_desc_t *desc, struct tsr_dmat **out)
{
    tsr_status_t rc = TSR_OK;
    struct tsr_dmat *d = NULL;
    *out = NULL;
    TSR_CHECK(tp, TSR_ERR_INVALID_ARG, "dmat: NULL tp context");
    TSR_TRY(check_desc(tp, desc));
    d = tsr__calloc(1, sizeof *d);
    TSR_CHECK(d, TSR_ERR_OUT_OF_MEMORY, "no memory for a dmat");
    d->tp = tp;
    d->desc = *desc;
    d->desc.struct_size = sizeof d->desc;
    d->es = tsr_dtype_size(desc->dtype);
    for (int dim = 0; dim < 2; dim++) {
        d->parts[dim] = tsr__tp_parts(tp, split_of(desc, dim));
        d->index[dim] = tsr__tp_index(tp, split_of(desc, dim));
        tsr__tp_block(extent_of(desc, dim), unit_of(desc, dim), d->parts[dim], d->index[dim], &d->start[dim],
                      &d->len[dim]);
    }
    d->ld = d->len[1];
    *out = d;
cleanup:
    return rc;
}

tsr_status_t tsr_tp_block(tsr_tp_t tp, const tsr_dmat_desc_t *desc, tsr_dmat_view_t *out)
{
    struct tsr_dmat *d = NULL;
    tsr_status_t rc = new_handle(tp, desc, &d);
    if (rc == TSR_OK)
        tsr_dmat_local(d, out);
    free(d);
    return rc;
}

tsr_status_t tsr_dmat_create(tsr_tp_t tp, const tsr_dmat_desc_t *desc, tsr_dmat_t *out)
{
    tsr_status_t rc = TSR_OK;
    struct tsr_dmat *d = NULL;
    TSR_CHECK(out, TSR_ERR_INVALID_ARG, "tsr_dmat_create: out is NULL");
    *out = NULL;
    TSR_TRY(new_handle(tp, desc, &d));
    d->owned = 1;
    size_t bytes = (size_t)d->len[0] * (size_t)d->len[1] * d->es;
    TSR_TRY(tsr_device_alloc(tp->dev, desc->category, bytes, &d->data));
    if (bytes)
        TSR_TRY(tsr_device_memset(tp->dev, d->data, 0, bytes));
    *out = d;
    d = NULL;
cleanup:
    tsr_dmat_destroy(&d);
    return rc;
}

tsr_status_t tsr_dmat_wrap(tsr_tp_t tp, const tsr_dmat_desc_t *desc, void *data, int ld, tsr_dmat_t *out)
{
    tsr_status_t rc = TSR_OK;
    struct tsr_dmat *d = NULL;
    TSR_CHECK(out, TSR_ERR_INVALID_ARG, "tsr_dmat_wrap: out is NULL");
    *out = NULL;
    TSR_TRY(new_handle(tp, desc, &d));
    if (ld == 0)
        ld = d->len[1];
    TSR_CHECK(ld >= d->len[1], TSR_ERR_INVALID_ARG, "tsr_dmat_wrap: leading dimension %d below the block's %d columns",
              ld, d->len[1]);
    TSR_CHECK(data || d->len[0] == 0 || d->len[1] == 0, TSR_ERR_INVALID_ARG,
              "tsr_dmat_wrap: NULL memory for a %d x %d block", d->len[0], d->len[1]);
    d->ld = ld;
    d->data = data;
    *out = d;
    d = NULL;
cleanup:
    free(d);
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
    if ((*d)->owned)
        tsr_device_free((*d)->tp->dev, &(*d)->data);
    free(*d);
    *d = NULL;
}

void tsr_dmat_desc(tsr_dmat_t d, tsr_dmat_desc_t *out) { *out = d->desc; }

void tsr_dmat_local(tsr_dmat_t d, tsr_dmat_view_t *out)
{
    out->data = d->data;
    out->rows = d->len[0];
    out->cols = d->len[1];
    out->ld = d->ld;
    out->row0 = d->start[0];
    out->col0 = d->start[1];
    out->dtype = d->desc.dtype;
}

tsr_status_t tsr_dmat_zero(tsr_dmat_t d)
{
    if (d->len[0] == 0 || d->len[1] == 0)
        return TSR_OK;
    if (tsr__dmat_contiguous(d))
        return tsr_device_memset(d->tp->dev, d->data, 0, (size_t)d->len[0] * (size_t)d->len[1] * d->es);
    for (int i = 0; i < d->len[0]; i++) {
        tsr_status_t rc = tsr_device_memset(d->tp->dev, tsr__dmat_at(d, i, 0), 0, (size_t)d->len[1] * d->es);
        if (rc != TSR_OK)
            return rc;
    }
    return TSR_OK;
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

/* Copy a rows x cols block between a packed host buffer and the global host matrix (ld = global cols). */
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

/* Move d's local block to (to_device) or from a packed host buffer. */
static tsr_status_t local_copy(tsr_dmat_t d, float *host, int to_device)
{
    size_t row = (size_t)d->len[1] * sizeof(float);
    if (d->len[0] == 0 || d->len[1] == 0)
        return TSR_OK;
    return to_device ? tsr_device_copy_2d(d->tp->dev, d->data, (size_t)d->ld * d->es, host, row, row,
                                          (size_t)d->len[0], TSR_COPY_HOST_TO_DEVICE)
                     : tsr_device_copy_2d(d->tp->dev, host, row, d->data, (size_t)d->ld * d->es, row,
                                          (size_t)d->len[0], TSR_COPY_DEVICE_TO_HOST);
}

/* Scatter and gather move host buffers (the tp communicators take host memory on any device). */
static tsr_status_t check_f32(tsr_dmat_t d, const char *what)
{
    if (d->desc.dtype != TSR_DTYPE_F32)
        return TSR_ERROR(TSR_ERR_NOT_SUPPORTED, "%s: a %s matrix; only f32 matrices are scattered and gathered",
                         what, tsr_dtype_name(d->desc.dtype));
    return TSR_OK;
}

tsr_status_t tsr_dmat_scatter(tsr_dmat_t d, int root, const float *global)
{
    tsr_status_t rc = TSR_OK;
    tsr_tp_t tp = d->tp;
    float *buf = NULL;
    int me = tsr_comm_rank(tp->tp_comm), n = tsr_comm_size(tp->tp_comm);
    TSR_TRY(check_f32(d, "scatter"));
    TSR_CHECK(root >= 0 && root < n, TSR_ERR_INVALID_ARG, "scatter root %d out of range for %d tp ranks", root, n);
    buf = malloc(largest_block(d) * sizeof *buf);
    TSR_CHECK(buf, TSR_ERR_OUT_OF_MEMORY, "scatter: no memory for a block of %zu values", largest_block(d));
    if (me != root) {
        TSR_TRY(tsr_comm_recv(tp->tp_comm, buf, (size_t)d->len[0] * (size_t)d->len[1], TSR_DTYPE_F32, root,
                              TP_TAG_SCATTER));
        TSR_TRY(local_copy(d, buf, 1));
        goto cleanup;
    }
    TSR_CHECK(global || d->desc.rows * d->desc.cols == 0, TSR_ERR_INVALID_ARG, "scatter: global is NULL on the root");
    for (int q = 0; q < n; q++) {
        int start[2], len[2];
        block_of_rank(d, q, start, len);
        copy_block((float *)global, d->desc.cols, start, len, buf, 0);
        if (q == root)
            TSR_TRY(local_copy(d, buf, 1));
        else
            TSR_TRY(tsr_comm_send(tp->tp_comm, buf, (size_t)len[0] * (size_t)len[1], TSR_DTYPE_F32, q,
                                  TP_TAG_SCATTER));
    }
cleanup:
    free(buf);
    return rc;
}

tsr_status_t tsr_dmat_gather(tsr_dmat_t d, int root, float *global)
{
    tsr_status_t rc = TSR_OK;
    tsr_tp_t tp = d->tp;
    float *buf = NULL;
    int me = tsr_comm_rank(tp->tp_comm), n = tsr_comm_size(tp->tp_comm);
    TSR_TRY(check_f32(d, "gather"));
    TSR_CHECK(root >= 0 && root < n, TSR_ERR_INVALID_ARG, "gather root %d out of range for %d tp ranks", root, n);
    buf = malloc(largest_block(d) * sizeof *buf);
    TSR_CHECK(buf, TSR_ERR_OUT_OF_MEMORY, "gather: no memory for a block of %zu values", largest_block(d));
    if (me != root) {
        TSR_TRY(local_copy(d, buf, 0));
        TSR_TRY(tsr_comm_send(tp->tp_comm, buf, (size_t)d->len[0] * (size_t)d->len[1], TSR_DTYPE_F32, root,
                              TP_TAG_SCATTER));
        goto cleanup;
    }
    /* From the highest rank down, so the lowest holder of a replicated block is written last. */
    for (int q = n - 1; q >= 0; q--) {
        int start[2], len[2];
        block_of_rank(d, q, start, len);
        if (q != root)
            TSR_TRY(tsr_comm_recv(tp->tp_comm, buf, (size_t)len[0] * (size_t)len[1], TSR_DTYPE_F32, q,
                                  TP_TAG_SCATTER));
        else
            TSR_TRY(local_copy(d, buf, 0));
        copy_block(global, d->desc.cols, start, len, buf, 1);
    }
cleanup:
    free(buf);
    return rc;
}
