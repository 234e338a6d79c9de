/*
 * embed.c: token + position embedding and softmax cross-entropy over vocabulary-split
 * logits, in the 2D and the 1D (vocabulary-parallel) layouts.
 *
 * Embedding, 2D: wte's rows (the vocabulary) are split over grid rows like X's token rows.
 * Each rank looks up every token of the batch in its own vocabulary block (zeros for the
 * others), and a reduce-scatter down the grid column sums the rows and leaves each rank
 * its token block; the backward all-gathers dX down the column instead, and every rank adds
 * every token to its vocabulary block and every position to wpe. 1D: X is whole, wte's rows
 * are split over grid columns; the partial lookups are all-reduced along the row. The
 * position embedding is added by one rank of the sum (grid row 0, or grid column 0), so the
 * sum holds it once and, its other terms being zeros, exactly as one rank would.
 *
 * Cross-entropy: each rank's statistics of its vocabulary block (row maximum, sum of
 * exponentials, the target's logit) are all-gathered along the communicator that splits the
 * vocabulary and combined on every rank, which then writes the loss of each row and the
 * gradient of its own block in place.
 */
#include <stdlib.h>
#include <string.h>

#include "tp_impl.h"

typedef enum embed_mode { EMBED_LOCAL, EMBED_2D, EMBED_1D } embed_mode_t;

static tsr_status_t embed_mode(tsr_tp_t tp, tsr_dmat_t wte, tsr_dmat_t wpe, tsr_dmat_t x, int seq, embed_mode_t *out)
{
    if (!tp || !wte || !x || seq < 1 || x->desc.rows % seq || x->len[0] % seq)
        return TSR_ERROR(TSR_ERR_INVALID_ARG,
                         "embedding: NULL matrix, or token rows (%d, %d here) not whole sequences of T=%d",
                         x ? x->desc.rows : -1, x ? x->len[0] : -1, seq);
    if (wte->desc.cols != x->desc.cols || !tsr__tp_same_split(wte, 1, x, 1) || !tsr__dmat_contiguous(wte) ||
        !tsr__dmat_contiguous(x))
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "embedding: wte's %d columns must be split like X's %d, both contiguous",
                         wte->desc.cols, x->desc.cols);
    if (wpe && (wpe->desc.rows != seq || wpe->parts[0] != 1 || !tsr__tp_same_split(wpe, 1, x, 1) ||
                !tsr__dmat_contiguous(wpe)))
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

/* Rows of the largest token block of X (block 0 under balanced splitting). */
static int max_rows(tsr_dmat_t x)
{
    int start, len;
    tsr__tp_block(x->desc.rows, x->desc.row_unit, x->parts[0], 0, &start, &len);
    return len;
}

/* out (seqs T rows of n) = the lookup of tokens in wte's block [v0, v0 + nv) (if any) + wpe (if given). */
static tsr_status_t lookup(tsr_tp_t tp, tsr_dtype_t dt, const int32_t *tokens, int seqs, int T, int n, int v0,
                           int nv, const void *wte, const void *wpe, void *out)
{
    if (nv == 0)
        wte = NULL;
    if (!wte && !wpe)
        return tsr_device_memset(tp->dev, out, 0, (size_t)seqs * T * n * tsr_dtype_size(dt));
    return tsr_kernel_embedding_forward(tp->dev, dt, tokens, seqs, T, n, v0, nv > 0 ? nv : 1, wte, wpe, out);
}

tsr_status_t tsr_tp_embedding_forward(tsr_tp_t tp, const int32_t *tokens, int seq_len, tsr_dmat_t wte,
                                      tsr_dmat_t wpe, tsr_dmat_t x)
{
    tsr_status_t rc = TSR_OK;
    void *part = NULL;
    embed_mode_t mode;
    TSR_TRY(embed_mode(tp, wte, wpe, x, seq_len, &mode));
    TSR_CHECK(tokens || x->desc.rows == 0, TSR_ERR_INVALID_ARG, "embedding forward: NULL token ids");
    TSR_CHECK(wte->desc.dtype == x->desc.dtype && (!wpe || wpe->desc.dtype == x->desc.dtype), TSR_ERR_INVALID_ARG,
              "embedding forward: wte, wpe and X must have one element type");
    tsr_dtype_t dt = x->desc.dtype;
    int n = x->len[1], v0 = wte->start[0], nv = wte->len[0];
    if (n == 0)
        goto cleanup;
    if (mode == EMBED_2D) {
        /* Every token of the batch, in r blocks padded to the largest token block. */
        int r = x->parts[0], mr = max_rows(x);
        size_t blk = (size_t)mr * n;
        TSR_TRY(tsr__tp_scratch(tp, TP_SCRATCH_EMBED, blk * (r + 1) * x->es, &part));
        for (int p = 0; p < r; p++) {
            int start, len;
            tsr__tp_block(x->desc.rows, x->desc.row_unit, r, p, &start, &len);
            if (len > 0) /* rows past len pad the block; the reduce-scatter sums them, nobody reads them */
                TSR_TRY(lookup(tp, dt, tokens + start, len / seq_len, seq_len, n, v0, nv, wte->data,
                               tp->row == 0 && wpe ? wpe->data : NULL, (char *)part + blk * p * x->es));
        }
        void *mine = (char *)part + blk * r * x->es;
        TSR_TRY(tsr_comm_reduce_scatter(tp->col_comm, part, mine, blk, dt, TSR_REDUCE_SUM));
        TSR_TRY(tsr__tp_axpby(tp, x->len[0], n, 1.0f, dt, mine, n, 0.0f, dt, x->data, x->ld));
    } else if (x->len[0] > 0) {
        int add_wpe = wpe && (mode == EMBED_LOCAL || tp->col == 0);
        TSR_TRY(lookup(tp, dt, tokens + x->start[0], x->len[0] / seq_len, seq_len, n, v0, nv, wte->data,
                       add_wpe ? wpe->data : NULL, x->data));
        if (mode == EMBED_1D)
            TSR_TRY(tsr_comm_allreduce(tp->row_comm, TSR_IN_PLACE, x->data, (size_t)x->len[0] * n, dt,
                                       TSR_REDUCE_SUM));
    }
cleanup:
    return rc;
}

/* dst (n floats, device) += src summed over comm (src is scratch, overwritten). */
static tsr_status_t add_summed(tsr_tp_t tp, tsr_comm_t comm, float *dst, float *src, size_t n)
{
    tsr_status_t rc = TSR_OK;
    if (n == 0)
        return TSR_OK;
    TSR_TRY(tsr_comm_allreduce(comm, TSR_IN_PLACE, src, n, TSR_DTYPE_F32, TSR_REDUCE_SUM));
    TSR_TRY(tsr_kernel_axpy(tp->dev, n, 1.0f, src, dst));
cleanup:
    return rc;
}

tsr_status_t tsr_tp_embedding_backward(tsr_tp_t tp, const int32_t *tokens, int seq_len, tsr_dmat_t dx,
                                       tsr_dmat_t dwte, tsr_dmat_t dwpe)
{
    tsr_status_t rc = TSR_OK;
    void *all = NULL, *part = NULL;
    embed_mode_t mode = EMBED_LOCAL;
    TSR_CHECK(tp && dx && (dwte || dwpe), TSR_ERR_INVALID_ARG, "embedding backward: nothing to compute");
    TSR_TRY(embed_mode(tp, dwte ? dwte : dwpe, dwpe, dx, seq_len, &mode));
    if (!dwte)
        mode = EMBED_LOCAL;
    TSR_CHECK(tokens || dx->desc.rows == 0, TSR_ERR_INVALID_ARG, "embedding backward: NULL token ids");
    TSR_CHECK((!dwte || dwte->desc.dtype == TSR_DTYPE_F32) && (!dwpe || dwpe->desc.dtype == TSR_DTYPE_F32),
              TSR_ERR_INVALID_ARG, "embedding backward: dwte and dwpe accumulate in f32");
    tsr_dtype_t dt = dx->desc.dtype;
    int n = dx->len[1], v0 = dwte ? dwte->start[0] : 0, nv = dwte ? dwte->len[0] : 0;
    float *gte = nv > 0 ? dwte->data : NULL, *gpe = dwpe ? dwpe->data : NULL;
    /* In 2D every rank of the grid column joins the all-gather, even one with nothing to add
     * to (an empty vocabulary block and no dwpe). */
    if (n == 0 || (mode != EMBED_2D && !gte && !gpe))
        goto cleanup;
    if (mode == EMBED_2D) {
        int r = dx->parts[0], mr = max_rows(dx);
        size_t blk = (size_t)mr * n;
        TSR_TRY(tsr__tp_scratch(tp, TP_SCRATCH_EMBED, blk * (r + 1) * dx->es, &all));
        void *mine = (char *)all + blk * r * dx->es;
        TSR_TRY(tsr__tp_axpby(tp, dx->len[0], n, 1.0f, dt, dx->data, dx->ld, 0.0f, dt, mine, n));
        TSR_TRY(tsr_comm_allgather(tp->col_comm, mine, all, blk, dt));
        for (int p = 0; p < r; p++) {
            int start, len;
            tsr__tp_block(dx->desc.rows, dx->desc.row_unit, r, p, &start, &len);
            if (len > 0 && (gte || gpe))
                TSR_TRY(tsr_kernel_embedding_backward(tp->dev, dt, tokens + start, len / seq_len, seq_len, n, v0,
                                                      nv > 0 ? nv : 1, (char *)all + blk * p * dx->es, gte, gpe));
        }
        goto cleanup;
    }
    tsr_comm_t down = tsr__tp_dim_comm(dx, 0); /* a vocabulary whole on ranks that split the tokens */
    if (!down) {
        if (dx->len[0] > 0)
            TSR_TRY(tsr_kernel_embedding_backward(tp->dev, dt, tokens + dx->start[0], dx->len[0] / seq_len, seq_len,
                                                  n, v0, nv > 0 ? nv : 1, dx->data, gte, gpe));
        goto cleanup;
    }
    size_t nte = gte ? (size_t)nv * n : 0, npe = gpe ? (size_t)seq_len * n : 0;
    TSR_TRY(tsr__tp_scratch(tp, TP_SCRATCH_EMBED, (nte + npe) * sizeof(float), &part));
    TSR_TRY(tsr_device_memset(tp->dev, part, 0, (nte + npe) * sizeof(float)));
    float *pte = part, *ppe = pte + nte;
    if (dx->len[0] > 0)
        TSR_TRY(tsr_kernel_embedding_backward(tp->dev, dt, tokens + dx->start[0], dx->len[0] / seq_len, seq_len, n,
                                              v0, nv > 0 ? nv : 1, dx->data, gte ? pte : NULL, gpe ? ppe : NULL));
    if (gte)
        TSR_TRY(add_summed(tp, down, gte, pte, nte));
    if (gpe)
        TSR_TRY(add_summed(tp, down, gpe, ppe, npe));
cleanup:
    return rc;
}

tsr_status_t tsr_tp_cross_entropy(tsr_tp_t tp, tsr_dmat_t logits, const int32_t *targets, float dscale,
                                  float *losses)
{
    static const char what[] = "cross-entropy";
    tsr_status_t rc = TSR_OK;
    void *stats = NULL, *all = NULL;
    TSR_CHECK(tp && logits && targets && losses, TSR_ERR_INVALID_ARG, "%s: NULL argument", what);
    int m = logits->len[0], n = logits->len[1], v0 = logits->start[1];
    tsr_comm_t vocab = tsr__tp_dim_comm(logits, 1);
    /* Decided from the description, alike on every rank: a rank without vocabulary cannot
     * join the all-gather, and the others would pair theirs with a later collective. */
    TSR_CHECK(logits->desc.rows == 0 || logits->parts[1] <= logits->desc.cols / logits->desc.col_unit,
              TSR_ERR_INVALID_ARG, "%s: %d vocabulary columns (units of %d) split over %d ranks; some would hold none",
              what, logits->desc.cols, logits->desc.col_unit, logits->parts[1]);
    if (m == 0)
        goto cleanup;
    const int32_t *tg = targets + logits->start[0];
    tsr_dtype_t dt = logits->desc.dtype;
    TSR_TRY(tsr__tp_scratch(tp, TP_SCRATCH_STATS, 3 * (size_t)m * sizeof(float), &stats));
    TSR_TRY(tsr_kernel_cross_entropy_stats(tp->dev, dt, m, n, v0, logits->data, logits->ld, tg, stats));
    int parts = 1;
    if (vocab) {
        parts = tsr_comm_size(vocab);
        TSR_TRY(tsr__tp_scratch(tp, TP_SCRATCH_GATHER, 3 * (size_t)m * parts * sizeof(float), &all));
        TSR_TRY(tsr_comm_allgather(vocab, stats, all, 3 * (size_t)m, TSR_DTYPE_F32));
    }
    TSR_TRY(tsr_kernel_cross_entropy_finish(tp->dev, dt, m, n, v0, logits->data, logits->ld, tg, parts,
                                            vocab ? all : stats, losses, dscale));
cleanup:
    return rc;
}
