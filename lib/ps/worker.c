/*
 * worker.c: a worker rank's side of the parameter server. Its ZeRO optimizer (stage 0, a
 * data-parallel axis of one) holds the parameters and gradients the model computes with;
 * at each step this pushes the gradient elements the rank counts to the servers that hold
 * them and pulls every parameter element the rank holds back (tessera/ps.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ps/ps_impl.h"

/* What this rank exchanges with one server. */
typedef struct link {
    ps_span_t *push, *pull;
    int npush, npull;
    size_t push_n, pull_n; /* floats */
    unsigned char *sbuf, *rbuf;
    size_t rcap; /* bytes of rbuf: a reply, or an answer to SAVE or LOAD */
} link_t;

struct tsr__ps_worker {
    tsr_grid_t grid;
    tsr_comm_t job; /* NULL: the servers expect nothing more from this rank */
    int S, first_server, replica;
    link_t *link;
    tsr_request_t *reqs; /* 2 S */
    long delay_ms;       /* TSR_PS_DELAY for this replica */
};

/* TSR_PS_DELAY=WORKER:MS: the milliseconds replica `replica` sleeps before each push. */
static tsr_status_t read_delay(int replica, int replicas, long *ms)
{
    const char *env = getenv("TSR_PS_DELAY");
    int worker = -1, used = 0;
    long v = 0;
    *ms = 0;
    if (!env || !*env)
        return TSR_OK;
    if (sscanf(env, "%d:%ld%n", &worker, &v, &used) != 2 || env[used] || worker < 0 || worker >= replicas || v < 0 ||
        v > 3600000)
        return TSR_ERROR(TSR_ERR_INVALID_ARG,
                         "TSR_PS_DELAY=%s: expected WORKER:MS, a replica 0..%d and milliseconds 0..3600000", env,
                         replicas - 1);
    if (worker == replica)
        *ms = v;
    return TSR_OK;
}

/* This rank's records: one per registered tensor, in the optimizer's order. */
static tsr_status_t my_records(tsr_zero_t z, ps_record_t **out, int *n)
{
    tsr_status_t rc = TSR_OK;
    int nt = tsr_zero_tensor_count(z);
    ps_record_t *rec = tsr__calloc((size_t)nt + 1, sizeof *rec);
    TSR_CHECK(rec, TSR_ERR_OUT_OF_MEMORY, "no memory for %d tensor records", nt);
    for (int i = 0; i < nt; i++) {
        tsr_zero_tensor_t d;
        tsr_zero_piece_t pc;
        TSR_TRY(tsr_zero_tensor_desc(z, i, &d));
        TSR_TRY(tsr_zero_piece(z, i, TSR_ZERO_PARAM, &pc));
        snprintf(rec[i].name, sizeof rec[i].name, "%s", d.name);
        rec[i].rows = d.rows, rec[i].cols = d.cols, rec[i].row_off = d.row_off, rec[i].col_off = d.col_off;
        rec[i].local_rows = d.local_rows, rec[i].local_cols = d.local_cols;
        rec[i].layer = d.layer, rec[i].flags = (int32_t)d.flags;
        rec[i].counted = pc.write_end > pc.write_begin; /* a dp axis of one: the whole block, or nothing */
    }
    *out = rec;
    *n = nt;
    rec = NULL;
cleanup:
    free(rec);
    return rc;
}

/* Runs into spans over the optimizer's views (record i of this rank is its tensor i - first),
 * merged where contiguous: their count into *nspans. */
static tsr_status_t make_spans(tsr_zero_t z, const ps_table_t *t, int me, const ps_run_t *runs, int n, ps_span_t **out,
                               int *nspans)
{
    tsr_status_t rc = TSR_OK;
    ps_span_t *s = tsr__calloc((size_t)n + 1, sizeof *s);
    TSR_CHECK(s, TSR_ERR_OUT_OF_MEMORY, "no memory for %d runs", n);
    for (int i = 0; i < n; i++) {
        float *p = NULL, *g = NULL;
        TSR_TRY(tsr_zero_view(z, runs[i].record - t->first[me], &p, &g));
        s[i] = (ps_span_t){p + runs[i].local, g + runs[i].local, (size_t)runs[i].n};
    }
    *nspans = tsr__ps_spans_merge(s, n);
    *out = s;
    s = NULL;
cleanup:
    free(s);
    return rc;
}

static size_t span_total(const ps_span_t *s, int n)
{
    size_t k = 0;
    for (int i = 0; i < n; i++)
        k += s[i].n;
    return k;
}

tsr_status_t tsr__ps_worker_join(tsr_grid_t grid, tsr_zero_t z, tsr__ps_worker_t **out)
{
    tsr_status_t rc = TSR_OK, mine = TSR_OK;
    tsr__ps_worker_t *w = NULL;
    ps_record_t *rec = NULL;
    ps_run_t *runs = NULL;
    ps_table_t t = {0};
    int nrec = 0, nruns = 0;
    tsr_layout_t lay;
    tsr_grid_coords_t at;
    tsr_grid_layout(grid, &lay);
    tsr_grid_coords(grid, &at);
    *out = NULL;
    w = tsr__calloc(1, sizeof *w);
    mine = w ? my_records(z, &rec, &nrec) : TSR_ERROR(TSR_ERR_OUT_OF_MEMORY, "no memory for a worker");
    if (mine == TSR_OK)
        mine = read_delay(at.dp, lay.dp, &w->delay_ms);
    tsr__grid_set_ps_joined(grid);
    TSR_TRY(tsr__ps_table_build(tsr_grid_ps_comm(grid), lay.ps, rec, nrec, mine, &t));
    w->job = tsr_grid_ps_comm(grid);
    w->S = lay.ps;
    w->first_server = t.workers;
    w->replica = at.dp;
    w->link = tsr__calloc((size_t)w->S, sizeof *w->link);
    w->reqs = tsr__calloc(2 * (size_t)w->S, sizeof *w->reqs);
    mine = w->link && w->reqs ? TSR_OK : TSR_ERROR(TSR_ERR_OUT_OF_MEMORY, "no memory for %d server links", w->S);
    int me = tsr_comm_rank(w->job);
    for (int j = 0; j < w->S && mine == TSR_OK; j++) {
        link_t *l = &w->link[j];
        for (int counted = 0; counted < 2 && mine == TSR_OK; counted++) {
            mine = tsr__ps_runs(&t, me, j, counted, &runs, &nruns);
            if (mine == TSR_OK)
                mine = make_spans(z, &t, me, runs, nruns, counted ? &l->push : &l->pull,
                                  counted ? &l->npush : &l->npull);
            free(runs);
            runs = NULL;
        }
        if (mine != TSR_OK)
            break;
        l->push_n = span_total(l->push, l->npush);
        l->pull_n = span_total(l->pull, l->npull);
        if ((mine = tsr__ps_check_link(l->push_n, l->pull_n, me, j)) != TSR_OK)
            break;
        l->rcap = sizeof(ps_header_t) + (l->pull_n * sizeof(float) > PS_MSG_MAX ? l->pull_n * sizeof(float) : PS_MSG_MAX);
        l->sbuf = malloc(sizeof(ps_header_t) + l->push_n * sizeof(float));
        l->rbuf = malloc(l->rcap);
        if (!l->sbuf || !l->rbuf)
            mine = TSR_ERROR(TSR_ERR_OUT_OF_MEMORY, "no memory for the messages to server %d", j);
    }
    TSR_TRY(tsr__ps_agree(w->job, mine, "set-up"));
    w->grid = grid;
    tsr__grid_set_ps_worker(grid, w);
    *out = w;
    w = NULL;
cleanup:
    tsr__ps_table_free(&t);
    free(rec);
    if (w) {
        w->job = NULL; /* nothing was told to the servers that needs a goodbye */
        tsr__ps_worker_leave(&w);
    }
    return rc;
}

/* Header and the push spans' floats (params or grads) into link l's send buffer. */
static size_t pack(link_t *l, int64_t type, int64_t clock, double loss, int params)
{
    ps_header_t h = {type, clock, 0, 0.0, 0.0, (int64_t)l->push_n, loss};
    memcpy(l->sbuf, &h, sizeof h);
    float *dst = (float *)(l->sbuf + sizeof h);
    for (int i = 0; i < l->npush; i++) {
        memcpy(dst, params ? l->push[i].param : l->push[i].grad, l->push[i].n * sizeof(float));
        dst += l->push[i].n;
    }
    return sizeof h + l->push_n * sizeof(float);
}

tsr_status_t tsr__ps_worker_publish(tsr__ps_worker_t *w)
{
    tsr_status_t rc = TSR_OK;
    if (w->replica == 0) {
        for (int j = 0; j < w->S; j++) {
            size_t bytes = pack(&w->link[j], PS_INIT, 0, 0.0, 1);
            TSR_TRY(tsr_comm_isend(w->job, w->link[j].sbuf, bytes, TSR_DTYPE_U8, w->first_server + j, PS_TAG,
                                   &w->reqs[j]));
        }
        TSR_TRY(tsr__ps_wait_all(w->reqs, w->S, 1000));
    }
    TSR_TRY(tsr_comm_barrier(w->job));
cleanup:
    return rc;
}

/* The error of an ABORT answer from server j. */
static tsr_status_t aborted(const tsr__ps_worker_t *w, int j, const ps_header_t *h)
{
    if (h->round >= w->first_server)
        return TSR_ERROR(TSR_ERR_ABORTED, "parameter server %d failed (see its error), so the job ends", j);
    return TSR_ERROR(TSR_ERR_ABORTED, "worker rank %lld of the job failed (see its error), so the servers stopped "
                     "answering", (long long)h->round);
}

tsr_status_t tsr__ps_worker_exchange(tsr__ps_worker_t *w, int64_t clock, double *loss, double *norm, float *lr)
{
    tsr_status_t rc = TSR_OK;
    if (w->delay_ms > 0)
        tsr__ps_sleep_us(w->delay_ms * 1000);
    for (int j = 0; j < w->S; j++) {
        link_t *l = &w->link[j];
        TSR_TRY(tsr_comm_irecv(w->job, l->rbuf, sizeof(ps_header_t) + l->pull_n * sizeof(float), TSR_DTYPE_U8,
                               w->first_server + j, PS_TAG, &w->reqs[w->S + j]));
        size_t bytes = pack(l, PS_PUSH, clock, *loss, 0);
        TSR_TRY(tsr_comm_isend(w->job, l->sbuf, bytes, TSR_DTYPE_U8, w->first_server + j, PS_TAG, &w->reqs[j]));
    }
    TSR_TRY(tsr__ps_wait_all(w->reqs, 2 * w->S, 200));
    for (int j = 0; j < w->S; j++) {
        link_t *l = &w->link[j];
        ps_header_t h;
        memcpy(&h, l->rbuf, sizeof h);
        if (h.type == PS_ABORT) {
            rc = aborted(w, j, &h);
            goto cleanup;
        }
        TSR_CHECK(h.type == PS_REPLY && h.clock == clock && h.count == (int64_t)l->pull_n, TSR_ERR_INTERNAL,
                  "server %d answered clock %lld with a message of type %lld, clock %lld, %lld floats (expected a "
                  "reply to clock %lld of %zu)", j, (long long)clock, (long long)h.type, (long long)h.clock,
                  (long long)h.count, (long long)clock, l->pull_n);
        const float *src = (const float *)(l->rbuf + sizeof h);
        for (int i = 0; i < l->npull; i++) {
            memcpy(l->pull[i].param, src, l->pull[i].n * sizeof(float));
            src += l->pull[i].n;
        }
        if (j == 0)
            *loss = h.loss, *norm = h.norm, *lr = (float)h.lr;
    }
cleanup:
    if (rc != TSR_OK)
        tsr_request_waitall(2 * (size_t)w->S, w->reqs);
    return rc;
}

/* A request (SAVE, LOAD, ABORT) to server j in link l's send buffer: every message to a
 * server has the size of a push (comm receives messages of the size posted), its floats
 * unused. Returns its bytes. */
static size_t pack_request(link_t *l, int64_t type, int64_t clock, int64_t note)
{
    ps_header_t h = {type, clock, note, 0.0, 0.0, (int64_t)l->push_n, 0.0};
    memcpy(l->sbuf, &h, sizeof h);
    memset(l->sbuf + sizeof h, 0, l->push_n * sizeof(float));
    return sizeof h + l->push_n * sizeof(float);
}

/* Send a request (SAVE, LOAD) to every server and wait for their answers in rbuf. */
static tsr_status_t ask(tsr__ps_worker_t *w, int64_t type, int64_t clock, int64_t note)
{
    tsr_status_t rc = TSR_OK;
    for (int j = 0; j < w->S; j++) {
        link_t *l = &w->link[j];
        TSR_TRY(tsr_comm_irecv(w->job, l->rbuf, l->rcap, TSR_DTYPE_U8, w->first_server + j, PS_TAG,
                               &w->reqs[w->S + j]));
        size_t bytes = pack_request(l, type, clock, note);
        TSR_TRY(tsr_comm_isend(w->job, l->sbuf, bytes, TSR_DTYPE_U8, w->first_server + j, PS_TAG, &w->reqs[j]));
    }
    TSR_TRY(tsr__ps_wait_all(w->reqs, 2 * w->S, 200));
cleanup:
    if (rc != TSR_OK)
        tsr_request_waitall(2 * (size_t)w->S, w->reqs);
    return rc;
}

/* Server j's answer to a request of `type`: TSR_OK, or its error (the callback's, or an abort). */
static tsr_status_t answer_of(const tsr__ps_worker_t *w, int j, int64_t type, ps_header_t *h)
{
    const link_t *l = &w->link[j];
    memcpy(h, l->rbuf, sizeof *h);
    if (h->type == PS_ABORT)
        return aborted(w, j, h);
    if (h->type != type || h->round < 0 || h->round >= TSR_STATUS_COUNT_ ||
        (h->round != TSR_OK && (h->count < 1 || h->count > PS_MSG_MAX)))
        return TSR_ERROR(TSR_ERR_INTERNAL, "server %d answered a request of type %lld with type %lld, status %lld, "
                         "%lld payload items", j, (long long)type, (long long)h->type, (long long)h->round,
                         (long long)h->count);
    if (h->round != TSR_OK) {
        char msg[PS_MSG_MAX];
        memcpy(msg, l->rbuf + sizeof *h, (size_t)h->count);
        msg[h->count - 1] = '\0';
        return TSR_ERROR((tsr_status_t)h->round, "%s", msg);
    }
    return TSR_OK;
}

/* The worker optimizer's link, or an error naming the call. */
static tsr_status_t link_of(tsr_zero_t opt, const char *call, tsr__ps_worker_t **w)
{
    *w = opt ? tsr__zero_ps_worker(opt) : NULL;
    if (!*w || !(*w)->job)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "%s: not the optimizer of a parameter-server worker that trains (a "
                         "layout with ps=S, committed, not cancelled)", call);
    return TSR_OK;
}

tsr_status_t tsr_ps_checkpoint(tsr_zero_t opt, int64_t note)
{
    tsr_status_t rc = TSR_OK;
    tsr__ps_worker_t *w = NULL;
    tsr_zero_state_t st;
    TSR_TRY(link_of(opt, "tsr_ps_checkpoint", &w));
    tsr_zero_get_state(opt, &st);
    TSR_TRY(ask(w, PS_SAVE, st.step, note));
    for (int j = 0; j < w->S && rc == TSR_OK; j++) { /* the servers agree: the first error is theirs */
        ps_header_t h;
        rc = answer_of(w, j, PS_SAVE, &h);
    }
cleanup:
    return rc;
}

tsr_status_t tsr_ps_restore(tsr_zero_t opt, int64_t *step)
{
    tsr_status_t rc = TSR_OK;
    tsr__ps_worker_t *w = NULL;
    tsr_zero_state_t st;
    int64_t at = -1;
    TSR_TRY(link_of(opt, "tsr_ps_restore", &w));
    tsr_zero_get_state(opt, &st);
    TSR_TRY(ask(w, PS_LOAD, st.step, 0));
    for (int j = 0; j < w->S; j++) {
        ps_header_t h;
        TSR_TRY(answer_of(w, j, PS_LOAD, &h));
        link_t *l = &w->link[j];
        TSR_CHECK(h.count == (int64_t)l->pull_n && h.clock >= 0 && (at < 0 || h.clock == at), TSR_ERR_INTERNAL,
                  "server %d restored step %lld with %lld floats (expected step %lld, %zu floats)", j,
                  (long long)h.clock, (long long)h.count, (long long)at, l->pull_n);
        at = h.clock;
        const float *src = (const float *)(l->rbuf + sizeof h);
        for (int i = 0; i < l->npull; i++) {
            memcpy(l->pull[i].param, src, l->pull[i].n * sizeof(float));
            src += l->pull[i].n;
        }
    }
    st.step = (long)at;
    TSR_TRY(tsr_zero_set_state(opt, &st));
    if (step)
        *step = at;
cleanup:
    return rc;
}

tsr_status_t tsr__ps_worker_abort(tsr__ps_worker_t *w)
{
    tsr_status_t rc = TSR_OK;
    for (int j = 0; w->job && j < w->S; j++) {
        size_t bytes = pack_request(&w->link[j], PS_ABORT, 0, 0);
        tsr_status_t one = tsr_comm_send(w->job, w->link[j].sbuf, bytes, TSR_DTYPE_U8, w->first_server + j, PS_TAG);
        rc = rc == TSR_OK ? one : rc;
    }
    w->job = NULL; /* the servers count this rank as gone: no DONE at the leave */
    return rc;
}

void tsr__ps_worker_leave(tsr__ps_worker_t **wp)
{
    if (!wp || !*wp)
        return;
    tsr__ps_worker_t *w = *wp;
    if (w->grid)
        tsr__grid_set_ps_worker(w->grid, NULL);
    for (int j = 0; w->job && w->link && j < w->S; j++) {
        size_t bytes = pack(&w->link[j], PS_DONE, 0, 0.0, 0);
        tsr_comm_send(w->job, w->link[j].sbuf, bytes, TSR_DTYPE_U8, w->first_server + j, PS_TAG);
    }
    for (int j = 0; w->link && j < w->S; j++) {
        free(w->link[j].push);
        free(w->link[j].pull);
        free(w->link[j].sbuf);
        free(w->link[j].rbuf);
    }
    free(w->link);
    free(w->reqs);
    free(w);
    *wp = NULL;
}
