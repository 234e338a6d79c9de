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
 *
 * A SAVE or LOAD request is a barrier: the source's next receive is posted only once it is
 * answered, so that nothing it sends after it is taken before. When every source has asked
 * (and, for SAVE, every round up to the clock is applied) the servers call their callback
 * together and answer everyone with its status. A source that leaves by ABORT breaks the
 * server: from then on every waiting and every later message is answered with ABORT.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ps/ps_impl.h"

/* One worker rank as this server sees it. */
typedef struct source {
    int rank, position;
    ps_span_t *push, *pull;
    int npush, npull;
    size_t push_n, pull_n;
    unsigned char *rbuf, *sbuf;
    tsr_request_t rreq, sreq;
    int received; /* rbuf holds a message not yet taken */
    int awaiting; /* a push taken, not yet answered */
    int64_t request; /* PS_SAVE or PS_LOAD taken, not yet answered (its receive not re-posted); or 0 */
    int64_t note;    /* the request's note */
    int done;
    int64_t clock;
    double loss; /* of its last push */
} source_t;

typedef struct server {
    tsr_comm_t job;
    tsr_grid_t grid;
    const tsr_ps_config_t *cfg;
    ps_table_t t;
    tsr_zero_t opt;
    int64_t lo, hi; /* this shard */
    int *tensor_of; /* table tensor -> optimizer tensor id (-1: none here) */
    int64_t *row0;  /* first row of each table tensor held here */
    source_t *src;
    int nsrc, positions, replicas;
    int *filled; /* gradients in the current round, per position */
    int64_t rounds;
    int64_t rounds0; /* rounds at the start (a restored step): the replies' loss is of a round applied here */
    int broken;      /* a worker left by ABORT, or this server failed: everything is answered with ABORT */
    int64_t failed_rank; /* the job rank that did */
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
static tsr_status_t make_spans(server_t *s, int r, int counted, ps_span_t **out, int *n)
{
    tsr_status_t rc = TSR_OK;
    ps_run_t *runs = NULL;
    ps_span_t *sp = NULL;
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
        sp[i] = (ps_span_t){p + off, g + off, (size_t)runs[i].n};
    }
    *n = tsr__ps_spans_merge(sp, *n);
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
        TSR_TRY(tsr__ps_check_link(w->push_n, w->pull_n, r, tsr_comm_rank(s->job) - s->t.workers));
        w->rbuf = malloc(sizeof(ps_header_t) + w->push_n * sizeof(float));
        w->sbuf = malloc(sizeof(ps_header_t) + (w->pull_n * sizeof(float) > PS_MSG_MAX ? w->pull_n * sizeof(float)
                                                                                           : PS_MSG_MAX));
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

/* The header of a message from w, checked. Every message from a worker has the size of its
 * push (comm receives messages of the size posted). */
static tsr_status_t header_of(const source_t *w, int64_t expect, ps_header_t *h)
{
    memcpy(h, w->rbuf, sizeof *h);
    if (h->count != (int64_t)w->push_n || (expect && h->type != expect) || h->type < PS_PUSH ||
        h->type > PS_ABORT || h->type == PS_REPLY)
        return TSR_ERROR(TSR_ERR_INTERNAL, "worker rank %d sent a message of type %lld with %lld floats (expected %zu)",
                         w->rank, (long long)h->type, (long long)h->count, w->push_n);
    return TSR_OK;
}

/* The payload bytes of an answer to w: a REPLY's parameters (or an ABORT in its place), or,
 * to a request, room for the parameters or an error's text. */
static size_t answer_bytes(const source_t *w, int request)
{
    size_t params = w->pull_n * sizeof(float);
    return request && params < PS_MSG_MAX ? PS_MSG_MAX : params;
}

/* Send w a header (and len bytes of payload already in its send buffer after it). */
static tsr_status_t send_header(server_t *s, source_t *w, const ps_header_t *h, size_t len)
{
    tsr_status_t rc = TSR_OK;
    TSR_TRY(tsr_request_wait(&w->sreq));
    memcpy(w->sbuf, h, sizeof *h);
    TSR_TRY(tsr_comm_isend(s->job, w->sbuf, sizeof *h + len, TSR_DTYPE_U8, w->rank, PS_TAG, &w->sreq));
cleanup:
    return rc;
}

/* Answer w's waiting push or request with ABORT; its receive is posted again if it was not. */
static tsr_status_t send_abort(server_t *s, source_t *w)
{
    tsr_status_t rc = TSR_OK;
    ps_header_t h = {PS_ABORT, w->clock, s->failed_rank, 0.0, 0.0, 0, 0.0};
    TSR_TRY(send_header(s, w, &h, answer_bytes(w, w->request != 0)));
    w->awaiting = 0;
    if (w->request) {
        w->request = 0;
        TSR_TRY(post_receive(s, w));
    }
cleanup:
    return rc;
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
    if (h.type == PS_DONE || h.type == PS_ABORT) {
        w->done = 1;
        w->received = 0;
        *took = 1;
        if (h.type == PS_ABORT && !s->broken)
            s->broken = 1, s->failed_rank = w->rank;
        goto cleanup;
    }
    TSR_CHECK(!w->awaiting && !w->request && h.type != PS_INIT, TSR_ERR_INTERNAL,
              "worker rank %d sent a message of type %lld before its last one was answered", w->rank,
              (long long)h.type);
    if (s->broken) { /* whatever it asks, the answer is ABORT, of the length the asker expects */
        w->received = 0;
        w->clock = h.clock;
        *took = 1;
        if (h.type == PS_SAVE || h.type == PS_LOAD)
            w->request = h.type; /* send_abort posts its next receive */
        else
            TSR_TRY(post_receive(s, w));
        TSR_TRY(send_abort(s, w));
        goto cleanup;
    }
    if (h.type == PS_SAVE || h.type == PS_LOAD) { /* its receive waits until the answer */
        w->received = 0;
        w->request = h.type;
        w->clock = h.clock;
        w->note = h.round;
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
    /* before the first round applied here, a worker hears back its own loss */
    ps_header_t h = {PS_REPLY, w->clock, s->rounds, s->norm, s->lr, (int64_t)w->pull_n,
                     s->rounds > s->rounds0 ? s->loss : w->loss};
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

/* Answer w's request with the callback's status (and its message), or with LOAD's parameters;
 * then post its next receive. */
static tsr_status_t answer_request(server_t *s, source_t *w, tsr_status_t status, const char *msg, int64_t step)
{
    tsr_status_t rc = TSR_OK;
    ps_header_t h = {w->request, w->request == PS_LOAD ? step : w->clock, status, 0.0, 0.0, 0, 0.0};
    size_t len = strlen(msg) + 1;
    TSR_TRY(tsr_request_wait(&w->sreq));
    if (status != TSR_OK) {
        memcpy(w->sbuf + sizeof h, msg, len);
        h.count = (int64_t)len;
    } else if (w->request == PS_LOAD) {
        float *dst = (float *)(w->sbuf + sizeof h);
        for (int i = 0; i < w->npull; i++) {
            memcpy(dst, w->pull[i].param, w->pull[i].n * sizeof(float));
            dst += w->pull[i].n;
        }
        h.count = (int64_t)w->pull_n;
    }
    TSR_TRY(send_header(s, w, &h, answer_bytes(w, 1)));
    w->request = 0;
    TSR_TRY(post_receive(s, w));
cleanup:
    return rc;
}

/* Whether the requests the sources made can be served together now: every source asked the
 * same (type, clock, note), none has left, and for SAVE every round up to the clock is
 * applied. *ready: serve now; *why: an error to answer with instead (set when they cannot
 * agree); neither: wait. */
static void requests_ready(const server_t *s, int *ready, char *why, size_t len)
{
    const source_t *a = NULL;
    *ready = 0;
    why[0] = '\0';
    for (int r = 0; r < s->nsrc; r++)
        if (s->src[r].request) {
            a = &s->src[r];
            break;
        }
    if (!a)
        return;
    for (int r = 0; r < s->nsrc; r++) {
        const source_t *w = &s->src[r];
        if (w->done) {
            snprintf(why, len, "worker rank %d left before every worker rank asked for the %s (expected all of them)",
                     w->rank, a->request == PS_SAVE ? "checkpoint" : "resume");
            return;
        }
        if (!w->request)
            return; /* not yet */
        if (w->request != a->request || w->clock != a->clock || w->note != a->note) {
            snprintf(why, len, "worker ranks %d and %d asked for a %s at step %lld and a %s at step %lld (expected "
                     "every worker rank after the same step)", a->rank, w->rank,
                     a->request == PS_SAVE ? "checkpoint" : "resume", (long long)a->clock,
                     w->request == PS_SAVE ? "checkpoint" : "resume", (long long)w->clock);
            return;
        }
    }
    if (a->request == PS_LOAD && s->stats.pushes > 0)
        snprintf(why, len, "the workers asked for a resume after training started (expected it before step 1)");
    else if (a->request == PS_SAVE && s->rounds > a->clock)
        snprintf(why, len, "the workers asked for a checkpoint of step %lld, but the servers have applied %lld rounds",
                 (long long)a->clock, (long long)s->rounds);
    else if (a->request == PS_LOAD || s->rounds == a->clock)
        *ready = 1;
}

/* Serve the sources' requests when they are ready: the callback on every server together. */
static tsr_status_t maybe_serve_requests(server_t *s, int *served)
{
    tsr_status_t rc = TSR_OK, status = TSR_OK;
    char why[PS_MSG_MAX];
    int ready = 0;
    int64_t step = s->rounds;
    *served = 0;
    requests_ready(s, &ready, why, sizeof why);
    if (!ready && !why[0])
        goto cleanup;
    const source_t *a = &s->src[0];
    if (why[0]) {
        status = TSR_ERR_MISMATCH;
    } else if (a->request == PS_SAVE) {
        status = s->cfg->save ? s->cfg->save(s->cfg->ctx, s->grid, s->opt, a->clock, a->note)
                              : TSR_ERROR(TSR_ERR_INVALID_ARG, "the parameter servers write no checkpoints (no save "
                                          "callback)");
    } else {
        status = s->cfg->load ? s->cfg->load(s->cfg->ctx, s->grid, s->opt, &step)
                              : TSR_ERROR(TSR_ERR_INVALID_ARG, "the parameter servers restore no checkpoints (no load "
                                          "callback)");
        if (status == TSR_OK && step < 0)
            status = TSR_ERROR(TSR_ERR_INTERNAL, "the servers' load callback returned step %lld", (long long)step);
        if (status == TSR_OK)
            s->rounds = s->rounds0 = step;
    }
    if (status != TSR_OK && !why[0])
        snprintf(why, sizeof why, "%s", tsr_last_error());
    for (int r = 0; r < s->nsrc; r++)
        if (s->src[r].request)
            TSR_TRY(answer_request(s, &s->src[r], status, why, step));
    *served = 1;
cleanup:
    return rc;
}

static tsr_status_t serve_loop(server_t *s, const tsr_ps_config_t *cfg)
{
    tsr_status_t rc = TSR_OK;
    int left = 0;
    long us = 1;
    for (int r = 0; r < s->nsrc; r++)
        left += !s->src[r].done;
    while (left > 0) {
        int progress = 0, took = 0, applied = 0, served = 0;
        for (int r = 0; s->broken && r < s->nsrc; r++)
            if (s->src[r].awaiting || s->src[r].request) {
                TSR_TRY(send_abort(s, &s->src[r]));
                progress = 1;
            }
        for (int r = 0; r < s->nsrc; r++) {
            source_t *w = &s->src[r];
            if (w->done || w->request)
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
        if (!s->broken) {
            TSR_TRY(maybe_apply(s, &applied));
            TSR_TRY(maybe_serve_requests(s, &served));
        }
        progress |= applied | served;
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
    s.grid = grid;
    s.cfg = cfg;
    for (int r = 0; r < s.nsrc; r++)
        TSR_TRY(post_receive(&s, &s.src[r]));
    rc = serve_loop(&s, cfg);
    if (rc != TSR_OK && !s.broken) {
        /* This server failed: it answers ABORT to everyone until every worker rank has left,
         * so that none waits forever for it, and then returns its own error. */
        char why[PS_MSG_MAX];
        snprintf(why, sizeof why, "%s", tsr_last_error());
        s.broken = 1;
        s.failed_rank = tsr_comm_rank(s.job);
        if (serve_loop(&s, cfg) == TSR_OK)
            rc = TSR_ERROR(rc, "%s", why);
    } else if (rc == TSR_OK && s.broken) {
        rc = TSR_ERROR(TSR_ERR_ABORTED, "worker rank %lld of the job failed (see its error)", (long long)s.failed_rank);
    }
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
    if (!grid || !tsr_grid_ps_comm(grid) || tsr_grid_is_server(grid))
        return TSR_OK;
    if (tsr__grid_ps_joined(grid))
        return tsr__grid_ps_worker(grid) ? tsr__ps_worker_abort(tsr__grid_ps_worker(grid)) : TSR_OK;
    tsr__grid_set_ps_joined(grid);
    tsr_layout_t lay;
    tsr_grid_layout(grid, &lay);
    rc = tsr__ps_table_build(tsr_grid_ps_comm(grid), lay.ps, NULL, 0,
                             TSR_ERROR(TSR_ERR_MISMATCH, "a worker failed before training started"), &t);
    return rc == TSR_ERR_MISMATCH ? TSR_OK : rc;
}
