/*
 * server.c: a parameter server. It holds one shard of the model's flat vector (whole rows
 * of each tensor it touches) in a ZeRO optimizer of its own, on a grid whose world is the
 * servers, so that the update, the master copy, the global-norm clipping over all the
 * shards and the checkpoint pieces are those of tessera/zero.h.
 *
 * The loop (tessera/ps.h): one receive is posted per worker rank. A PUSH adds its gradients
 * into the round if the round still needs that worker position's gradients, else it waits
 * in its buffer until the round is applied. A complete round (every position has dp
 * gradients) steps the optimizer. A worker whose clock c has c − rounds <= s is answered
 * with its parameters. When nothing happens the loop sleeps, doubling the sleep up to
 * poll_us, so that a server sharing cores with workers leaves them the cores.
 */
#include <stdlib.h>
#include <string.h>

#include "ps/ps_impl.h"

/* A run as the server copies it: n floats of a worker's message at param / grad. */
typedef struct span {
    float *param, *grad;
    size_t n;
} span_t;

/* One worker rank as this server sees it. */
typedef struct source {
    int rank, position;
    span_t *push, *pull;
    int npush, npull;
    size_t push_n, pull_n;
    unsigned char *rbuf, *sbuf;
    tsr_request_t rreq, sreq;
    int received; /* rbuf holds a message not yet taken */
    int awaiting; /* a push taken, not yet answered */
    int done;
    int64_t clock;
    double loss; /* of its last push */
} source_t;

typedef struct server {
    tsr_comm_t job;
    ps_table_t t;
    tsr_zero_t opt;
    int64_t lo, hi; /* this shard */
    int *tensor_of; /* table tensor -> optimizer tensor id (-1: none here) */
    int64_t *row0;  /* first row of each table tensor held here */
    source_t *src;
    int nsrc, positions, replicas;
    int *filled; /* gradients in the current round, per position */
    int64_t rounds;
    double norm, lr, loss;
    double loss_sum; /* the current round's replica losses (position 0's pushes) */
    tsr_ps_stats_t stats;
} server_t;

tsr_status_t tsr_ps_staleness_parse(const char *text, int64_t *out)
{
    if (text && strcmp(text, "inf") == 0) {
        *out = TSR_PS_STALENESS_INF;
        return TSR_OK;
    }
    if (!text || tsr_parse_i64(text, 0, INT64_MAX - 1, out) != TSR_OK)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "staleness \"%s\": expected a non-negative integer or inf",
                         text ? text : "(null)");
    return TSR_OK;
}

/* The optimizer over this shard: each table tensor's rows inside [lo, hi) as one block. */
static tsr_status_t build_optimizer(server_t *s, tsr_grid_t grid, tsr_device_t dev, const tsr_zero_config_t *zcfg)
{
    tsr_status_t rc = TSR_OK;
    tsr_zero_config_t zc = *zcfg;
    zc.stage = 0;
    zc.micro_batches = 1;
    s->tensor_of = tsr__calloc((size_t)s->t.nt + 1, sizeof *s->tensor_of);
    s->row0 = tsr__calloc((size_t)s->t.nt + 1, sizeof *s->row0);
    TSR_CHECK(s->tensor_of && s->row0, TSR_ERR_OUT_OF_MEMORY, "no memory for the server's tensor map");
    TSR_TRY(tsr_zero_create(grid, dev, &zc, &s->opt));
    tsr__zero_set_grad_divisor(s->opt, s->replicas);
    for (int i = 0; i < s->t.nt; i++) {
        const ps_tensor_t *x = &s->t.t[i];
        int64_t a = x->base > s->lo ? x->base : s->lo, end = x->base + x->rows * x->cols;
        int64_t b = end < s->hi ? end : s->hi;
        s->tensor_of[i] = -1;
        if (b <= a)
            continue;
        tsr_zero_tensor_t zt = TSR_ZERO_TENSOR_INIT;
        zt.name = x->name;
        zt.rows = x->rows, zt.cols = x->cols;
        zt.row_off = (a - x->base) / x->cols;
        zt.local_rows = (b - a) / x->cols;
        zt.col_off = 0, zt.local_cols = x->cols;
        zt.layer = x->layer;
        zt.flags = (unsigned)x->flags;
        s->row0[i] = zt.row_off;
        TSR_TRY(tsr_zero_register(s->opt, &zt, &s->tensor_of[i]));
    }
    TSR_TRY(tsr_zero_commit(s->opt));
cleanup:
    return rc;
}

/* Runs of worker rank r into spans over this server's optimizer views. */
static tsr_status_t make_spans(server_t *s, int r, int counted, span_t **out, int *n)
{
    tsr_status_t rc = TSR_OK;
    ps_run_t *runs = NULL;
    span_t *sp = NULL;
    int j = tsr_comm_rank(s->job) - s->t.workers;
    TSR_TRY(tsr__ps_runs(&s->t, r, j, counted, &runs, n));
    sp = tsr__calloc((size_t)*n + 1, sizeof *sp);
    TSR_CHECK(sp, TSR_ERR_OUT_OF_MEMORY, "no memory for %d runs", *n);
    for (int i = 0; i < *n; i++) {
        int k = tsr__ps_tensor_index(&s->t, s->t.rec[runs[i].record].name);
        const ps_tensor_t *x = &s->t.t[k];
        float *p = NULL, *g = NULL;
        TSR_TRY(tsr_zero_view(s->opt, s->tensor_of[k], &p, &g));
        int64_t off = runs[i].global - (x->base + s->row0[k] * x->cols);
        sp[i] = (span_t){p + off, g + off, (size_t)runs[i].n};
    }
    *out = sp;
    sp = NULL;
cleanup:
    free(runs);
    free(sp);
    return rc;
}

static tsr_status_t build_sources(server_t *s)
{
    tsr_status_t rc = TSR_OK;
    s->nsrc = s->t.workers;
    s->src = tsr__calloc((size_t)s->nsrc, sizeof *s->src);
    s->positions = s->t.workers / s->replicas;
    s->filled = tsr__calloc((size_t)s->positions, sizeof *s->filled);
    TSR_CHECK(s->src && s->filled, TSR_ERR_OUT_OF_MEMORY, "no memory for %d workers", s->nsrc);
    for (int r = 0; r < s->nsrc; r++) {
        source_t *w = &s->src[r];
        w->rank = r;
        w->position = r % s->positions;
        TSR_TRY(make_spans(s, r, 1, &w->push, &w->npush));
        TSR_TRY(make_spans(s, r, 0, &w->pull, &w->npull));
        for (int i = 0; i < w->npush; i++)
            w->push_n += w->push[i].n;
        for (int i = 0; i < w->npull; i++)
            w->pull_n += w->pull[i].n;
        w->rbuf = malloc(sizeof(ps_header_t) + w->push_n * sizeof(float));
        w->sbuf = malloc(sizeof(ps_header_t) + w->pull_n * sizeof(float));
        TSR_CHECK(w->rbuf && w->sbuf, TSR_ERR_OUT_OF_MEMORY, "no memory for the messages of worker %d", r);
    }
cleanup:
    return rc;
}

static tsr_status_t post_receive(server_t *s, source_t *w)
{
    w->received = 0;
    return tsr_comm_irecv(s->job, w->rbuf, sizeof(ps_header_t) + w->push_n * sizeof(float), TSR_DTYPE_U8, w->rank,
                          PS_TAG, &w->rreq);
}

/* The header of a message from w, checked. */
static tsr_status_t header_of(const source_t *w, int64_t expect, ps_header_t *h)
{
    memcpy(h, w->rbuf, sizeof *h);
    if (h->count != (int64_t)w->push_n || (expect && h->type != expect) || h->type < PS_PUSH || h->type > PS_DONE)
        return TSR_ERROR(TSR_ERR_INTERNAL, "worker rank %d sent a message of type %lld with %lld floats (expected %zu)",
                         w->rank, (long long)h->type, (long long)h->count, w->push_n);
    return TSR_OK;
}

/* Replica 0's initial parameters into the shard. */
static tsr_status_t receive_init(server_t *s)
{
    tsr_status_t rc = TSR_OK;
    ps_header_t h;
    for (int r = 0; r < s->positions; r++) {
        source_t *w = &s->src[r];
        TSR_TRY(tsr_comm_recv(s->job, w->rbuf, sizeof h + w->push_n * sizeof(float), TSR_DTYPE_U8, r, PS_TAG));
        TSR_TRY(header_of(w, PS_INIT, &h));
        const float *src = (const float *)(w->rbuf + sizeof h);
        for (int i = 0; i < w->npush; i++) {
            memcpy(w->push[i].param, src, w->push[i].n * sizeof(float));
            src += w->push[i].n;
        }
    }
    TSR_TRY(tsr_zero_sync_params(s->opt));
cleanup:
    return rc;
}

/* Take w's message if it can be taken now; *took says whether it was. */
static tsr_status_t take(server_t *s, source_t *w, int *took)
{
    tsr_status_t rc = TSR_OK;
    ps_header_t h;
    *took = 0;
    TSR_TRY(header_of(w, 0, &h));
    if (h.type == PS_DONE) {
        w->done = 1;
        w->received = 0;
        *took = 1;
        goto cleanup;
    }
    TSR_CHECK(h.type == PS_PUSH && !w->awaiting, TSR_ERR_INTERNAL,
              "worker rank %d sent a message of type %lld before its last push was answered", w->rank,
              (long long)h.type);
    if (s->filled[w->position] == s->replicas)
        goto cleanup; /* the round has this position's gradients: wait for the next */
    const float *src = (const float *)(w->rbuf + sizeof h);
    for (int i = 0; i < w->npush; i++) {
        TSR_TRY(tsr_kernel_axpy(tsr_zero_device(s->opt), w->push[i].n, 1.0f, src, w->push[i].grad));
        src += w->push[i].n;
    }
    s->filled[w->position]++;
    if (w->position == 0)
        s->loss_sum += h.loss;
    s->stats.pushes++;
    if (h.clock - s->rounds > s->stats.max_lag)
        s->stats.max_lag = h.clock - s->rounds;
    w->clock = h.clock;
    w->loss = h.loss;
    w->awaiting = 1;
    *took = 1;
    TSR_TRY(post_receive(s, w));
cleanup:
    return rc;
}

/* Step the optimizer if every position has its gradients. */
static tsr_status_t maybe_apply(server_t *s, int *applied)
{
    tsr_status_t rc = TSR_OK;
    tsr_zero_step_info_t info;
    *applied = 0;
    for (int q = 0; q < s->positions; q++)
        if (s->filled[q] < s->replicas)
            goto cleanup;
    TSR_TRY(tsr_zero_step(s->opt, &info)); /* the global norm: an all-reduce over the servers */
    s->rounds++;
    s->norm = info.grad_norm;
    s->lr = info.lr;
    s->loss = s->loss_sum / s->replicas;
    s->loss_sum = 0.0;
    memset(s->filled, 0, (size_t)s->positions * sizeof *s->filled);
    *applied = 1;
cleanup:
    return rc;
}

static tsr_status_t answer(server_t *s, source_t *w)
{
    tsr_status_t rc = TSR_OK;
    TSR_TRY(tsr_request_wait(&w->sreq));
    /* before the first round, a worker hears back its own loss */
    ps_header_t h = {PS_REPLY, w->clock, s->rounds, s->norm, s->lr, (int64_t)w->pull_n, s->rounds ? s->loss : w->loss};
    memcpy(w->sbuf, &h, sizeof h);
    float *dst = (float *)(w->sbuf + sizeof h);
    for (int i = 0; i < w->npull; i++) {
        memcpy(dst, w->pull[i].param, w->pull[i].n * sizeof(float));
        dst += w->pull[i].n;
    }
    w->awaiting = 0;
    TSR_TRY(tsr_comm_isend(s->job, w->sbuf, sizeof h + w->pull_n * sizeof(float), TSR_DTYPE_U8, w->rank, PS_TAG,
                           &w->sreq));
cleanup:
    return rc;
}

static tsr_status_t serve_loop(server_t *s, const tsr_ps_config_t *cfg)
{
    tsr_status_t rc = TSR_OK;
    int left = s->nsrc;
    long us = 1;
    for (int r = 0; r < s->nsrc; r++)
        TSR_TRY(post_receive(s, &s->src[r]));
    while (left > 0) {
        int progress = 0, took = 0, applied = 0;
        for (int r = 0; r < s->nsrc; r++) {
            source_t *w = &s->src[r];
            if (w->done)
                continue;
            if (!w->received) {
                int done = 0;
                TSR_TRY(tsr_request_test(&w->rreq, &done));
                w->received = done;
            }
            if (w->received) {
                TSR_TRY(take(s, w, &took));
                progress |= took;
                left -= w->done;
            }
        }
        TSR_TRY(maybe_apply(s, &applied));
        progress |= applied;
        for (int r = 0; r < s->nsrc; r++) {
            source_t *w = &s->src[r];
            if (w->awaiting && (cfg->staleness == TSR_PS_STALENESS_INF || w->clock - s->rounds <= cfg->staleness)) {
                TSR_TRY(answer(s, w));
                progress = 1;
            }
        }
        if (progress) {
            us = 1;
        } else {
            tsr__ps_sleep_us(us);
            us = us * 2 > cfg->poll_us ? cfg->poll_us : us * 2;
        }
    }
cleanup:
    return rc;
}

static void free_server(server_t *s)
{
    for (int r = 0; s->src && r < s->nsrc; r++) {
        source_t *w = &s->src[r];
        tsr_request_wait(&w->sreq);
        tsr_request_wait(&w->rreq);
        free(w->push);
        free(w->pull);
        free(w->rbuf);
        free(w->sbuf);
    }
    free(s->src);
    free(s->filled);
    free(s->tensor_of);
    free(s->row0);
    tsr_zero_destroy(&s->opt);
    tsr__ps_table_free(&s->t);
}

tsr_status_t tsr_ps_serve(tsr_grid_t grid, tsr_device_t dev, const tsr_zero_config_t *zcfg,
                          const tsr_ps_config_t *cfg, tsr_ps_stats_t *stats)
{
    tsr_status_t rc = TSR_OK, mine = TSR_OK;
    server_t s = {0};
    tsr_layout_t lay;
    TSR_CHECK(grid && dev && zcfg && cfg, TSR_ERR_INVALID_ARG, "tsr_ps_serve: NULL argument");
    TSR_CHECK(tsr_grid_is_server(grid), TSR_ERR_INVALID_ARG, "tsr_ps_serve on a rank that is not a server");
    tsr_grid_layout(grid, &lay);
    s.job = tsr_grid_ps_comm(grid);
    s.replicas = lay.dp;
    if (cfg->struct_size != sizeof *cfg)
        mine = TSR_ERROR(TSR_ERR_INVALID_ARG, "tsr_ps_serve: configuration not from TSR_PS_CONFIG_INIT");
    else if (cfg->staleness < 0 || cfg->poll_us < 1)
        mine = TSR_ERROR(TSR_ERR_INVALID_ARG, "tsr_ps_serve: staleness must be >= 0 and poll_us >= 1, got %lld and %d",
                         (long long)cfg->staleness, cfg->poll_us);
    else if (tsr_device_kind(dev) != TSR_DEVICE_CPU)
        mine = TSR_ERROR(TSR_ERR_NOT_SUPPORTED, "parameter servers (ps=S) run on the CPU device");
    TSR_TRY(tsr__ps_table_build(s.job, lay.ps, NULL, 0, mine, &s.t));
    int j = tsr_comm_rank(s.job) - s.t.workers;
    s.lo = s.t.cut[j], s.hi = s.t.cut[j + 1];
    mine = build_optimizer(&s, grid, dev, zcfg);
    if (mine == TSR_OK)
        mine = build_sources(&s);
    TSR_TRY(tsr__ps_agree(s.job, mine, "set-up"));
    TSR_TRY(receive_init(&s));
    TSR_TRY(tsr_comm_barrier(s.job));
    TSR_TRY(serve_loop(&s, cfg));
cleanup:
    if (stats)
        *stats = s.stats, stats->rounds = s.rounds;
    free_server(&s);
    return rc;
}

tsr_status_t tsr_ps_cancel(tsr_grid_t grid)
{
    tsr_status_t rc = TSR_OK;
    ps_table_t t;
    if (!grid || !tsr_grid_ps_comm(grid) || tsr_grid_is_server(grid) || tsr__grid_ps_joined(grid))
        return TSR_OK;
    tsr__grid_set_ps_joined(grid);
    tsr_layout_t lay;
    tsr_grid_layout(grid, &lay);
    rc = tsr__ps_table_build(tsr_grid_ps_comm(grid), lay.ps, NULL, 0,
                             TSR_ERROR(TSR_ERR_MISMATCH, "a worker failed before training started"), &t);
    return rc == TSR_ERR_MISMATCH ? TSR_OK : rc;
}
