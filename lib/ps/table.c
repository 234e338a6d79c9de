/*
 * table.c: the parameter server's agreed view of the model. Every rank of the job learns
 * every worker rank's registered blocks; from them each rank builds the same list of
 * tensors (sorted by ZeRO layer, then name), their offsets in one flat vector and the cuts
 * of that vector into the servers' shards, at row boundaries so that a shard holds whole
 * rows of each tensor (rectangular blocks, as the checkpoint writer and the optimizer take).
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ps/ps_impl.h"

void tsr__ps_sleep_us(long us)
{
    struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
    nanosleep(&ts, NULL);
}

int tsr__ps_spans_merge(ps_span_t *s, int n)
{
    int m = 0;
    for (int i = 0; i < n; i++) {
        if (m > 0 && s[m - 1].param + s[m - 1].n == s[i].param && s[m - 1].grad + s[m - 1].n == s[i].grad)
            s[m - 1].n += s[i].n;
        else
            s[m++] = s[i];
    }
    return m;
}

tsr_status_t tsr__ps_wait_all(tsr_request_t *reqs, int n, int max_us)
{
    tsr_status_t rc = TSR_OK;
    long us = 1;
    for (;;) {
        int left = 0;
        for (int i = 0; i < n; i++) {
            int done = 1;
            if (reqs[i])
                TSR_TRY(tsr_request_test(&reqs[i], &done));
            left += !done;
        }
        if (!left)
            break;
        tsr__ps_sleep_us(us);
        us = us * 2 > max_us ? max_us : us * 2;
    }
cleanup:
    if (rc != TSR_OK)
        tsr_request_waitall((size_t)n, reqs);
    return rc;
}

tsr_status_t tsr__ps_agree(tsr_comm_t job, tsr_status_t mine, const char *stage)
{
    int rank = tsr_comm_rank(job), size = tsr_comm_size(job);
    int64_t in[2] = {mine != TSR_OK ? rank : size, mine}, out[2];
    int64_t first = size;
    tsr_status_t rc = tsr_comm_allreduce(job, in, out, 1, TSR_DTYPE_I64, TSR_REDUCE_MIN);
    if (rc != TSR_OK)
        return rc;
    first = out[0];
    if (first == size)
        return TSR_OK;
    if (mine != TSR_OK)
        return mine;
    return TSR_ERROR(TSR_ERR_MISMATCH, "parameter server %s: rank %lld of the job failed", stage, (long long)first);
}

tsr_status_t tsr__ps_check_link(size_t push_n, size_t pull_n, int worker, int server)
{
    size_t n = push_n > pull_n ? push_n : pull_n;
    if (n <= ((size_t)INT_MAX - sizeof(ps_header_t) - PS_MSG_MAX) / sizeof(float))
        return TSR_OK;
    return TSR_ERROR(TSR_ERR_INVALID_ARG,
                     "the link between worker rank %d and server %d carries %zu floats a step, more than one MPI "
                     "message holds (%d bytes): use more servers (ps=S) or split the model over tp or pp",
                     worker, server, n, INT_MAX);
}

static int by_layer_name(const void *a, const void *b)
{
    const ps_tensor_t *x = a, *y = b;
    if (x->layer != y->layer)
        return x->layer < y->layer ? -1 : 1;
    return strcmp(x->name, y->name);
}

int tsr__ps_tensor_index(const ps_table_t *t, const char *name)
{
    for (int i = 0; i < t->nt; i++)
        if (strcmp(t->t[i].name, name) == 0)
            return i;
    return -1;
}

/* The distinct tensors of every record, checked to agree on shape, sorted, with offsets. */
static tsr_status_t build_tensors(ps_table_t *t, int nrec)
{
    tsr_status_t rc = TSR_OK;
    t->t = tsr__calloc((size_t)nrec + 1, sizeof *t->t);
    TSR_CHECK(t->t, TSR_ERR_OUT_OF_MEMORY, "no memory for the parameter server's tensor table");
    for (int i = 0; i < nrec; i++) {
        const ps_record_t *r = &t->rec[i];
        int k = tsr__ps_tensor_index(t, r->name);
        if (k >= 0) {
            TSR_CHECK(t->t[k].rows == r->rows && t->t[k].cols == r->cols, TSR_ERR_MISMATCH,
                      "workers registered tensor %s as %lld x %lld and as %lld x %lld", r->name,
                      (long long)t->t[k].rows, (long long)t->t[k].cols, (long long)r->rows, (long long)r->cols);
            continue;
        }
        ps_tensor_t *x = &t->t[t->nt++];
        memcpy(x->name, r->name, sizeof x->name);
        x->rows = r->rows, x->cols = r->cols, x->layer = r->layer;
        x->flags = r->flags & TSR_ZERO_NO_DECAY;
    }
    qsort(t->t, (size_t)t->nt, sizeof *t->t, by_layer_name);
    for (int i = 0; i < t->nt; i++) {
        t->t[i].base = t->total;
        t->total += t->t[i].rows * t->t[i].cols;
    }
cleanup:
    return rc;
}

/* Cut j (0 < j < S): the first row boundary at or after j·Ψ/S. */
static tsr_status_t build_cuts(ps_table_t *t)
{
    tsr_status_t rc = TSR_OK;
    int S = t->servers;
    t->cut = tsr__calloc((size_t)S + 1, sizeof *t->cut);
    TSR_CHECK(t->cut, TSR_ERR_OUT_OF_MEMORY, "no memory for the shard cuts");
    t->cut[S] = t->total;
    for (int j = 1, i = 0; j < S; j++) {
        int64_t target = (int64_t)((double)t->total * j / S);
        while (i < t->nt && t->t[i].base + t->t[i].rows * t->t[i].cols <= target)
            i++;
        int64_t c = t->total;
        if (i < t->nt) {
            int64_t rows = (target - t->t[i].base + t->t[i].cols - 1) / t->t[i].cols;
            c = t->t[i].base + rows * t->t[i].cols;
        }
        t->cut[j] = c;
    }
    for (int j = 0; j < S; j++)
        TSR_CHECK(t->cut[j + 1] > t->cut[j], TSR_ERR_INVALID_ARG,
                  "ps=%d: the model's %lld parameters, cut at row boundaries, leave server %d without any "
                  "(expected at most as many servers as the model has rows of parameters)",
                  S, (long long)t->total, j);
cleanup:
    return rc;
}

tsr_status_t tsr__ps_table_build(tsr_comm_t job, int servers, const ps_record_t *mine, int nmine, tsr_status_t status,
                                 ps_table_t *out)
{
    tsr_status_t rc = TSR_OK;
    int size = tsr_comm_size(job);
    int32_t *counts = NULL;
    ps_record_t *padded = NULL, *all = NULL;
    memset(out, 0, sizeof *out);
    TSR_TRY(tsr__ps_agree(job, status, "start-up"));
    out->servers = servers;
    out->workers = size - servers;
    counts = tsr__calloc((size_t)size, sizeof *counts);
    out->first = tsr__calloc((size_t)size, sizeof *out->first);
    out->count = tsr__calloc((size_t)size, sizeof *out->count);
    TSR_CHECK(counts && out->first && out->count, TSR_ERR_OUT_OF_MEMORY, "no memory for %d record counts", size);
    int32_t n32 = nmine;
    TSR_TRY(tsr_comm_allgather(job, &n32, counts, 1, TSR_DTYPE_I32));
    int max = 0, total = 0;
    for (int r = 0; r < size; r++) {
        max = counts[r] > max ? counts[r] : max;
        out->first[r] = total;
        out->count[r] = counts[r];
        total += counts[r];
    }
    /* every rank sends max records (the allgather of equal blocks), the tail unused */
    padded = tsr__calloc((size_t)max + 1, sizeof *padded);
    all = tsr__calloc((size_t)max * (size_t)size + 1, sizeof *all);
    out->rec = tsr__calloc((size_t)total + 1, sizeof *out->rec);
    TSR_CHECK(padded && all && out->rec, TSR_ERR_OUT_OF_MEMORY, "no memory for %d tensor records", total);
    if (nmine > 0)
        memcpy(padded, mine, (size_t)nmine * sizeof *mine);
    TSR_TRY(tsr_comm_allgather(job, padded, all, (size_t)max * sizeof *padded, TSR_DTYPE_U8));
    for (int r = 0; r < size; r++)
        memcpy(out->rec + out->first[r], all + (size_t)r * (size_t)max, (size_t)counts[r] * sizeof *all);
    for (int i = 0; i < total; i++)
        out->rec[i].name[TSR_ZERO_NAME_MAX - 1] = '\0';
    TSR_TRY(build_tensors(out, total));
    TSR_TRY(build_cuts(out));
cleanup:
    free(counts);
    free(padded);
    free(all);
    if (rc != TSR_OK)
        tsr__ps_table_free(out);
    return rc;
}

void tsr__ps_table_free(ps_table_t *t)
{
    free(t->t);
    free(t->cut);
    free(t->rec);
    free(t->first);
    free(t->count);
    memset(t, 0, sizeof *t);
}

tsr_status_t tsr__ps_runs(const ps_table_t *t, int r, int j, int counted_only, ps_run_t **out, int *n)
{
    tsr_status_t rc = TSR_OK;
    int cap = 0, len = 0;
    ps_run_t *runs = NULL;
    for (int i = t->first[r]; i < t->first[r] + t->count[r]; i++) {
        const ps_record_t *rec = &t->rec[i];
        if (counted_only && !rec->counted)
            continue;
        const ps_tensor_t *x = &t->t[tsr__ps_tensor_index(t, rec->name)];
        for (int64_t row = 0; row < rec->local_rows; row++) {
            int64_t g = x->base + (rec->row_off + row) * x->cols + rec->col_off;
            if (g < t->cut[j] || g >= t->cut[j + 1]) /* a row never crosses a cut */
                continue;
            if (len == cap) {
                cap = cap ? 2 * cap : 64;
                ps_run_t *grown = realloc(runs, (size_t)cap * sizeof *grown);
                TSR_CHECK(grown, TSR_ERR_OUT_OF_MEMORY, "no memory for %d runs", cap);
                runs = grown;
            }
            runs[len++] = (ps_run_t){row * rec->local_cols, g, rec->local_cols, i};
        }
    }
    *out = runs;
    *n = len;
    runs = NULL;
cleanup:
    free(runs);
    return rc;
}
