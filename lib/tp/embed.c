/*
 * embed.c: token + position embedding and softmax cross-entropy over vocabulary-split
 * logits, in the 2D and the 1D (vocabulary-parallel) layouts.
 *
 * Embedding, 2D: wte's rows (the vocabulary) are split over grid rows like X's token rows.
 * Each rank looks up every token of the batch in its own vocabulary block (zeros for the
 * others), and a reduce-scatter down the grid column sums the rows and leaves each rank
 * its token block; the backward all-gathers dX down the column instead. 1D: X is whole,
 * wte's rows are split over grid columns; the partial lookups are all-reduced along the row.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tp_impl.h"

typedef enum embed_mode { EMBED_LOCAL, EMBED_2D, EMBED_1D } embed_mode_t;

static tsr_status_t embed_mode(tsr_tp_t tp, tsr_dmat_t wte, tsr_dmat_t wpe, tsr_dmat_t x, int seq, embed_mode_t *out)
{
    if (!tp || !wte || !x || seq < 1 || x->desc.rows % seq)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "embedding: NULL matrix, or %d token rows not a multiple of T=%d",
                         x ? x->desc.rows : -1, seq);
    if (wte->desc.cols != x->desc.cols || !tsr__tp_same_split(wte, 1, x, 1))
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "embedding: wte's %d columns must be split like X's %d",
                         wte->desc.cols, x->desc.cols);
    if (wpe && (wpe->desc.rows != seq || wpe->parts[0] != 1 || !tsr__tp_same_split(wpe, 1, x, 1)))
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "embedding: wpe must be %dx%d, rows whole, columns split like X's",
                         seq, x->desc.cols);
    if (wte->parts[0] == 1)
        *out = EMBED_LOCAL;
    else if (wte->desc.row_split == TSR_SPLIT_GRID_ROWS && x->desc.row_split == TSR_SPLIT_GRID_ROWS)
        *out = EMBED_2D;
    else if (wte->desc.row_split == TSR_SPLIT_GRID_COLS && x->parts[0] == 1 && x->parts[1] == 1)
        *out = EMBED_1D;
    else
        return TSR_ERROR(TSR_ERR_INVALID_ARG,
                         "embedding: wte's rows split over grid %s need X's token rows split over grid rows (2D) "
                         "or X whole (1D)",
                         wte->desc.row_split == TSR_SPLIT_GRID_ROWS ? "rows" : "columns");
    return TSR_OK;
}

static tsr_status_t check_tokens(const int32_t *tokens, int n, int vocab)
{
    if (!tokens && n > 0)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "token ids are NULL");
    for (int t = 0; t < n; t++)
        if (tokens[t] < 0 || tokens[t] >= vocab)
            return TSR_ERROR(TSR_ERR_INVALID_ARG, "token %d at position %d is outside the vocabulary [0, %d)",
                             tokens[t], t, vocab);
    return TSR_OK;
}

/* Rows of the largest token block of X (block 0 under balanced splitting). */
static int max_rows(tsr_dmat_t x)
{
    int start, len;
    tsr__tp_block(x->desc.rows, x->desc.row_unit, x->parts[0], 0, &start, &len);
    return len;
}

/* out[(t - first) row] = wte[tokens[t]] for t in [first, first + count) whose token is in my vocabulary block. */
static void lookup(tsr_dmat_t wte, const int32_t *tokens, int first, int count, float *out, int ld)
{
    int v0 = wte->start[0], nv = wte->len[0], n = wte->len[1];
    for (int t = 0; t < count; t++) {
        int id = tokens[first + t] - v0;
        if (id >= 0 && id < nv)
            memcpy(out + (size_t)t * ld, wte->data + (size_t)id * n, (size_t)n * sizeof(float));
    }
}

tsr_status_t tsr_tp_embedding_forward(tsr_tp_t tp, const int32_t *tokens, int seq_len, tsr_dmat_t wte,
                                      tsr_dmat_t wpe, tsr_dmat_t x)
{
    tsr_status_t rc = TSR_OK;
    float *part = NULL;
    embed_mode_t mode;
    TSR_TRY(embed_mode(tp, wte, wpe, x, seq_len, &mode));
    TSR_TRY(check_tokens(tokens, x->desc.rows, wte->desc.rows));
    int n = x->len[1];
    size_t local = (size_t)x->len[0] * n;
    if (local)
        memset(x->data, 0, local * sizeof(float));
    if (mode == EMBED_2D) {
        /* Every token of the batch, padded to r equal blocks of the largest token block. */
        int r = x->parts[0], mr = max_rows(x);
        size_t blk = (size_t)mr * n;
        TSR_TRY(tsr__tp_scratch(tp, TSR_MEM_COMM, blk * (r + 1), &part));
        memset(part, 0, blk * r * sizeof(float));
        for (int p = 0; p < r; p++) {
            int start, len;
            tsr__tp_block(x->desc.rows, x->desc.row_unit, r, p, &start, &len);
            lookup(wte, tokens, start, len, part + blk * p, n);
        }
        TSR_TRY(tsr_comm_reduce_scatter(tp->col_comm, part, part + blk * r, blk, TSR_DTYPE_F32, TSR_REDUCE_SUM));
        if (local)
            memcpy(x->data, part + blk * r, local * sizeof(float));
    } else {
        lookup(wte, tokens, x->start[0], x->len[0], x->data, n);
        if (mode == EMBED_1D)
            TSR_TRY(tsr_comm_allreduce(tp->row_comm, TSR_IN_PLACE, x->data, local, TSR_DTYPE_F32, TSR_REDUCE_SUM));
    }
    if (wpe)
        for (int i = 0; i < x->len[0]; i++) {
            const float *pos = wpe->data + (size_t)((x->start[0] + i) % seq_len) * n;
            for (int j = 0; j < n; j++)
                x->data[(size_t)i * n + j] += pos[j];
        }
cleanup:
    tsr__tp_scratch_free(tp, &part);
    return rc;
}

/* dst[tokens[t] - v0] += rows of dx for t in [first, first + count) in dwte's vocabulary block
 * (dst: dwte's local block, or scratch of its shape). */
static void scatter_add(tsr_dmat_t dwte, float *dst, const int32_t *tokens, int first, int count, const float *dx,
                        int ld)
{
    int v0 = dwte->start[0], nv = dwte->len[0], n = dwte->len[1];
    for (int t = 0; t < count; t++) {
        int id = tokens[first + t] - v0;
        if (id >= 0 && id < nv)
            for (int j = 0; j < n; j++)
                dst[(size_t)id * n + j] += dx[(size_t)t * ld + j];
    }
}

tsr_status_t tsr_tp_embedding_backward(tsr_tp_t tp, const int32_t *tokens, int seq_len, tsr_dmat_t dx,
                                       tsr_dmat_t dwte, tsr_dmat_t dwpe)
{
    tsr_status_t rc = TSR_OK;
    float *all = NULL, *part = NULL;
    embed_mode_t mode = EMBED_LOCAL;
    if (dwte)
        TSR_TRY(embed_mode(tp, dwte, dwpe, dx, seq_len, &mode));
    else
        TSR_CHECK(tp && dx && dwpe && seq_len > 0, TSR_ERR_INVALID_ARG, "embedding backward: nothing to compute");
    TSR_TRY(check_tokens(tokens, dx->desc.rows, dwte ? dwte->desc.rows : INT32_MAX));
    int n = dx->len[1];
    if (dwte && mode == EMBED_2D) {
        int r = dx->parts[0], mr = max_rows(dx);
        size_t blk = (size_t)mr * n;
        TSR_TRY(tsr__tp_scratch(tp, TSR_MEM_COMM, blk * r, &all));
        TSR_TRY(tsr__tp_scratch(tp, TSR_MEM_COMM, blk, &part));
        memset(part, 0, blk * sizeof(float));
        if (dx->len[0] > 0 && n > 0)
            memcpy(part, dx->data, (size_t)dx->len[0] * n * sizeof(float));
        TSR_TRY(tsr_comm_allgather(tp->col_comm, part, all, blk, TSR_DTYPE_F32));
        for (int p = 0; p < r; p++) {
            int start, len;
            tsr__tp_block(dx->desc.rows, dx->desc.row_unit, r, p, &start, &len);
            scatter_add(dwte, dwte->data, tokens, start, len, all + blk * p, n);
        }
    } else if (dwte && mode == EMBED_1D) {
        scatter_add(dwte, dwte->data, tokens, 0, dx->len[0], dx->data, n);
    } else if (dwte) { /* replicated vocabulary: the token rows of every grid row contribute */
        size_t cnt = (size_t)dwte->len[0] * n;
        TSR_TRY(tsr__tp_scratch(tp, TSR_MEM_WORKSPACE, cnt, &all));
        memset(all, 0, (cnt ? cnt : 1) * sizeof(float));
        scatter_add(dwte, all, tokens, dx->start[0], dx->len[0], dx->data, n);
        TSR_TRY(tsr__tp_add_reduced(tsr__tp_dim_comm(dx, 0), dwte->data, all, cnt));
    }
    if (dwpe) {
        size_t cnt = (size_t)seq_len * n;
        tsr__tp_scratch_free(tp, &part);
        TSR_TRY(tsr__tp_scratch(tp, TSR_MEM_WORKSPACE, cnt, &part));
        memset(part, 0, cnt * sizeof(float));
        for (int i = 0; i < dx->len[0]; i++) {
            float *pos = part + (size_t)((dx->start[0] + i) % seq_len) * n;
            for (int j = 0; j < n; j++)
                pos[j] += dx->data[(size_t)i * n + j];
        }
        TSR_TRY(tsr__tp_add_reduced(tsr__tp_dim_comm(dx, 0), dwpe->data, part, cnt));
    }
cleanup:
    tsr__tp_scratch_free(tp, &all);
    tsr__tp_scratch_free(tp, &part);
    return rc;
}

tsr_status_t tsr_tp_cross_entropy_forward(tsr_tp_t tp, tsr_dmat_t logits, const int32_t *targets, float *loss,
                                          tsr_tp_saved_t *saved)
{
    tsr_status_t rc = TSR_OK;
    tsr_tp_saved_t st = NULL;
    double *acc = NULL;
    TSR_CHECK(tp && logits && loss && saved, TSR_ERR_INVALID_ARG, "cross-entropy forward: NULL argument");
    *saved = NULL;
    TSR_TRY(check_tokens(targets, logits->desc.rows, logits->desc.cols));
    int m = logits->len[0], n = logits->len[1], v0 = logits->start[1];
    tsr_comm_t vocab = tsr__tp_dim_comm(logits, 1), tokens = tsr__tp_dim_comm(logits, 0);
    TSR_TRY(tsr__tp_saved_new(tp, (size_t)m, 0, &st));
    acc = calloc(2 * (size_t)m + 1, sizeof *acc);
    TSR_CHECK(acc, TSR_ERR_OUT_OF_MEMORY, "no memory for cross-entropy sums");
    /* Row maxima along the vocabulary split, then sums of exp(l - max) and the target logits. */
    for (int i = 0; i < m; i++) {
        float mx = -INFINITY;
        for (int j = 0; j < n; j++)
            mx = logits->data[(size_t)i * n + j] > mx ? logits->data[(size_t)i * n + j] : mx;
        st->a[i] = mx;
    }
    if (vocab)
        TSR_TRY(tsr_comm_allreduce(vocab, TSR_IN_PLACE, st->a, (size_t)m, TSR_DTYPE_F32, TSR_REDUCE_MAX));
    for (int i = 0; i < m; i++) {
        const float *row = logits->data + (size_t)i * n;
        for (int j = 0; j < n; j++)
            acc[2 * i] += exp((double)row[j] - st->a[i]);
        int t = targets[logits->start[0] + i] - v0;
        if (t >= 0 && t < n)
            acc[2 * i + 1] = row[t];
    }
    if (vocab)
        TSR_TRY(tsr_comm_allreduce(vocab, TSR_IN_PLACE, acc, 2 * (size_t)m, TSR_DTYPE_F64, TSR_REDUCE_SUM));
    double total = 0;
    for (int i = 0; i < m; i++) {
        double lse = st->a[i] + log(acc[2 * i]);
        st->a[i] = (float)lse;
        total += lse - acc[2 * i + 1];
    }
    if (tokens)
        TSR_TRY(tsr_comm_allreduce(tokens, TSR_IN_PLACE, &total, 1, TSR_DTYPE_F64, TSR_REDUCE_SUM));
    *loss = logits->desc.rows ? (float)(total / logits->desc.rows) : 0.0f;
    *saved = st;
    st = NULL;
cleanup:
    free(acc);
    tsr_tp_saved_destroy(&st);
    return rc;
}

tsr_status_t tsr_tp_cross_entropy_backward(tsr_tp_t tp, tsr_dmat_t logits, const int32_t *targets,
                                           tsr_tp_saved_t saved, float dloss, tsr_dmat_t dlogits)
{
    tsr_status_t rc = TSR_OK;
    TSR_CHECK(tp && logits && saved && dlogits && tsr__tp_same_layout(logits, dlogits), TSR_ERR_INVALID_ARG,
              "cross-entropy backward: dlogits must be laid out like the logits");
    TSR_CHECK(saved->na == (size_t)logits->len[0], TSR_ERR_INVALID_ARG,
              "cross-entropy backward: saved state is not from a forward on these logits");
    TSR_TRY(check_tokens(targets, logits->desc.rows, logits->desc.cols));
    int m = logits->len[0], n = logits->len[1], v0 = logits->start[1];
    double scale = logits->desc.rows ? (double)dloss / logits->desc.rows : 0;
    for (int i = 0; i < m; i++) {
        int t = targets[logits->start[0] + i] - v0;
        for (int j = 0; j < n; j++) {
            size_t e = (size_t)i * n + j;
            double p = exp((double)logits->data[e] - saved->a[i]);
            dlogits->data[e] = (float)(scale * (p - (j == t)));
        }
    }
cleanup:
    return rc;
}
