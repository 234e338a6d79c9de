/*
 * execute.c: run one stage's action list on real ranks.
 *
 * Buffers. Each (micro-batch, chunk) holds its input activation from the moment its receive
 * is posted until its last backward action (B, or W when the schedule has one), and its
 * output gradient likewise; an output activation or input gradient is held from the compute
 * that fills it until its send completes. At most `max_sends` sends stay in flight (the
 * oldest is waited for beyond that), and receives are posted `lookahead` compute actions
 * ahead. The same rules are first played without data or messages (exec_t.planning) to find
 * the most buffers this stage ever holds: the pool is exactly that big, so its size follows
 * the schedule's peak of live activations (p for 1F1B on stage 0, m for GPipe) plus what is
 * in flight.
 *
 * Tags encode (micro-batch, receiving chunk, direction), so a message can only match its
 * own receive, whatever order messages arrive in. In order (NCCL, or in_order asked for),
 * each receive is posted at its own action and every message has tag 0: two stages'
 * messages then match in the order both post them, which is their list order; the
 * rendezvous check (tsr_pipe_simulate) guarantees the two orders agree (pipe.h). On MPI
 * the in-order run is strict: sends are synchronous and every message completes at its own
 * action, one at a time, as NCCL's stream runs them, so a CPU run hangs or mixes messages up
 * wherever NCCL would.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "pipe_impl.h"

/* One send in flight and the pool slot it reads from. */
typedef struct inflight {
    tsr_request_t req;
    int slot;
} inflight_t;

typedef struct exec {
    tsr_pipe_schedule_t s;
    const tsr_pipe_stage_t *cb;
    tsr_comm_t comm;
    int me, lookahead, max_sends, poll_us;
    int in_order, strict; /* messages in list order, one tag; strict: each completes at its action */
    int messages;         /* posted and not yet waited for */
    const tsr_pipe_action_t *acts;
    size_t n;
    unsigned char *has_w;
    /* per (mb, chunk): pool slots, -1 when none */
    int *in_slot, *gout_slot, *out_slot, *gin_slot;
    tsr_request_t *recv_req; /* per action: its posted receive */
    size_t posted;           /* receives among acts[0 .. posted) are posted */
    inflight_t *sends;       /* FIFO of sends in flight */
    size_t nsends;
    /* the pool */
    char *pool;
    size_t slot_bytes;
    int *free_slots, nfree, capacity, used, peak;
    int planning; /* play the rules without data or communication */
    tsr_pipe_trace_t trace;
} exec_t;

static size_t key(const exec_t *x, int mb, int chunk) { return (size_t)mb * (size_t)x->s->v + (size_t)chunk; }

static void *slot_ptr(const exec_t *x, int slot) { return slot < 0 || !x->pool ? NULL : x->pool + (size_t)slot * x->slot_bytes; }

static tsr_status_t acquire(exec_t *x, int *slot)
{
    if (++x->used > x->peak)
        x->peak = x->used;
    if (x->planning) {
        *slot = 0;
        return TSR_OK;
    }
    if (x->nfree == 0)
        return TSR_ERROR(TSR_ERR_INTERNAL, "stage %d: buffer pool of %d slots exhausted", x->me, x->capacity);
    *slot = x->free_slots[--x->nfree];
    return TSR_OK;
}

static void release(exec_t *x, int *slot)
{
    if (*slot < 0)
        return;
    x->used--;
    if (!x->planning)
        x->free_slots[x->nfree++] = *slot;
    *slot = -1;
}

static tsr_status_t record(exec_t *x, const tsr_pipe_action_t *a, double start, double end)
{
    tsr_pipe_trace_t t = x->trace;
    if (!t || x->planning)
        return TSR_OK;
    if (t->n == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 256;
        tsr_pipe_event_t *ev = realloc(t->ev, cap * sizeof *ev);
        if (!ev)
            return TSR_ERROR(TSR_ERR_OUT_OF_MEMORY, "trace of %zu events", cap);
        t->ev = ev;
        t->cap = cap;
    }
    tsr_pipe_event_t e = {a->op, a->mb, a->chunk, start, end};
    t->ev[t->n++] = e;
    return TSR_OK;
}

static int tag_of(const exec_t *x, int mb, int chunk, int grad)
{
    return x->in_order ? 0 : (int)key(x, mb, chunk) * 2 + grad;
}

/* Bytes of the message of action a (receive: on this stage's side; send: the same size). */
static size_t message_bytes(const exec_t *x, const tsr_pipe_action_t *a)
{
    int input_side = a->op == TSR_PIPE_RECV_ACT || a->op == TSR_PIPE_SEND_GRAD;
    return x->cb->buffer_bytes(x->cb->ctx, a->chunk, input_side ? TSR_PIPE_INPUT : TSR_PIPE_OUTPUT);
}

/* Count a message about to be posted; a strict run has no other in flight, as on NCCL's stream. */
static tsr_status_t posting(exec_t *x, const tsr_pipe_action_t *a)
{
    char what[96];
    if (x->strict && x->messages > 0) {
        tsr__pipe_action_str(a, what, sizeof what);
        return TSR_ERROR(TSR_ERR_INTERNAL, "stage %d: %s posted while %d message%s in flight (in-order run)", x->me,
                         what, x->messages, x->messages == 1 ? " is" : "s are");
    }
    x->messages++;
    return TSR_OK;
}

/* Post the receives of acts[posted .. i + lookahead computes), or in order of acts[posted .. i]. */
static tsr_status_t post_receives(exec_t *x, size_t i)
{
    tsr_status_t rc = TSR_OK;
    size_t end = i;
    for (int computes = 0; end < x->n; end++) {
        if (x->in_order ? end > i : (tsr__pipe_is_compute(x->acts[end].op) && ++computes > x->lookahead))
            break;
    }
    for (; x->posted < end; x->posted++) {
        const tsr_pipe_action_t *a = &x->acts[x->posted];
        if (!tsr__pipe_is_recv(a->op))
            continue;
        int grad = a->op == TSR_PIPE_RECV_GRAD;
        int *slot = &(grad ? x->gout_slot : x->in_slot)[key(x, a->mb, a->chunk)];
        TSR_TRY(acquire(x, slot));
        TSR_TRY(posting(x, a));
        if (!x->planning)
            TSR_TRY(tsr_comm_irecv(x->comm, slot_ptr(x, *slot), message_bytes(x, a), TSR_DTYPE_U8, a->peer,
                                   tag_of(x, a->mb, a->chunk, grad), &x->recv_req[x->posted]));
    }
cleanup:
    return rc;
}

/* Wait for a request: in MPI's own wait (which spins), or by testing it every poll_us
 * microseconds and sleeping in between, which leaves oversubscribed cores to other ranks. */
static tsr_status_t wait_request(const exec_t *x, tsr_request_t *req)
{
    if (x->poll_us <= 0)
        return tsr_request_wait(req);
    struct timespec nap = {x->poll_us / 1000000, (long)(x->poll_us % 1000000) * 1000};
    for (;;) {
        int done = 0;
        tsr_status_t rc = tsr_request_test(req, &done);
        if (rc != TSR_OK || done)
            return rc;
        nanosleep(&nap, NULL);
    }
}

static tsr_status_t wait_oldest_send(exec_t *x)
{
    tsr_status_t rc = TSR_OK;
    if (!x->planning)
        TSR_TRY(wait_request(x, &x->sends[0].req));
    x->messages--;
    release(x, &x->sends[0].slot);
    memmove(x->sends, x->sends + 1, (x->nsends - 1) * sizeof *x->sends);
    x->nsends--;
cleanup:
    return rc;
}

/* Give MPI a chance to move the sends in flight before this rank disappears into a long
 * compute: without it an eager message may sit in the sender's queue until the next wait. */
static tsr_status_t push_sends(exec_t *x)
{
    tsr_status_t rc = TSR_OK;
    int done;
    for (size_t i = 0; !x->planning && i < x->nsends; i++)
        if (x->sends[i].req)
            TSR_TRY(tsr_request_test(&x->sends[i].req, &done));
cleanup:
    return rc;
}

static tsr_status_t do_send(exec_t *x, const tsr_pipe_action_t *a)
{
    tsr_status_t rc = TSR_OK;
    int grad = a->op == TSR_PIPE_SEND_GRAD, peer, peer_chunk;
    int *slot = &(grad ? x->gin_slot : x->out_slot)[key(x, a->mb, a->chunk)];
    TSR_CHECK(*slot >= 0, TSR_ERR_INVALID_ARG, "stage %d: %s of mb %d chunk %d before the compute that fills it",
              x->me, tsr_pipe_op_name(a->op), a->mb, a->chunk);
    tsr__pipe_neighbour(x->s->p, x->s->v, x->me, a->chunk, !grad, &peer, &peer_chunk);
    if (x->nsends == (size_t)x->max_sends)
        TSR_TRY(wait_oldest_send(x));
    TSR_TRY(posting(x, a));
    inflight_t *f = &x->sends[x->nsends++];
    f->req = NULL;
    f->slot = *slot;
    *slot = -1;
    if (!x->planning)
        TSR_TRY(tsr_comm_isend(x->comm, slot_ptr(x, f->slot), message_bytes(x, a), TSR_DTYPE_U8, a->peer,
                               tag_of(x, a->mb, peer_chunk, grad), &f->req));
    if (x->strict)
        TSR_TRY(wait_oldest_send(x));
    TSR_TRY(push_sends(x));
cleanup:
    return rc;
}

static tsr_status_t do_compute(exec_t *x, const tsr_pipe_action_t *a)
{
    tsr_status_t rc = TSR_OK;
    size_t k = key(x, a->mb, a->chunk);
    int vs = tsr__pipe_vstage(x->s->p, x->me, a->chunk), last = x->s->p * x->s->v - 1;
    if (a->op == TSR_PIPE_FORWARD) {
        if (vs < last)
            TSR_TRY(acquire(x, &x->out_slot[k]));
        if (!x->planning)
            TSR_TRY(x->cb->forward(x->cb->ctx, a->chunk, a->mb, slot_ptr(x, x->in_slot[k]), slot_ptr(x, x->out_slot[k])));
        return TSR_OK;
    }
    if (a->op == TSR_PIPE_BACKWARD) {
        if (vs > 0)
            TSR_TRY(acquire(x, &x->gin_slot[k]));
        if (!x->planning)
            TSR_TRY(x->cb->backward(x->cb->ctx, a->chunk, a->mb, slot_ptr(x, x->in_slot[k]),
                                    slot_ptr(x, x->gout_slot[k]), slot_ptr(x, x->gin_slot[k])));
    } else if (!x->planning) {
        TSR_TRY(x->cb->weight_grad(x->cb->ctx, a->chunk, a->mb, slot_ptr(x, x->in_slot[k]),
                                   slot_ptr(x, x->gout_slot[k])));
    }
    if (a->op == TSR_PIPE_WEIGHT || !x->has_w[k]) {
        release(x, &x->in_slot[k]);
        release(x, &x->gout_slot[k]);
    }
cleanup:
    return rc;
}

static tsr_status_t run_action(exec_t *x, size_t i)
{
    tsr_status_t rc = TSR_OK;
    const tsr_pipe_action_t *a = &x->acts[i];
    int region = -1;
    TSR_TRY(post_receives(x, i));
    /* a receive is the wait for its message: a host wait, not work */
    if (!x->planning)
        region = tsr_prof_begin(tsr__pipe_is_recv(a->op) ? TSR_PROF_WAIT : TSR_PROF_PIPE,
                                tsr_pipe_op_name(a->op), "pp", a->mb);
    double t0 = x->planning ? 0 : tsr_time_now();
    if (tsr__pipe_is_recv(a->op)) {
        if (!x->planning)
            TSR_TRY(wait_request(x, &x->recv_req[i]));
        x->messages--;
    } else if (tsr__pipe_is_send(a->op)) {
        TSR_TRY(do_send(x, a));
    } else {
        TSR_TRY(push_sends(x));
        t0 = x->planning ? 0 : tsr_time_now();
        TSR_TRY(do_compute(x, a));
    }
    TSR_TRY(record(x, a, t0, x->planning ? 0 : tsr_time_now()));
cleanup:
    tsr_prof_end(region);
    return rc;
}

static tsr_status_t run_all(exec_t *x)
{
    tsr_status_t rc = TSR_OK;
    size_t slots = (size_t)x->s->m * (size_t)x->s->v;
    for (size_t k = 0; k < slots; k++)
        x->in_slot[k] = x->gout_slot[k] = x->out_slot[k] = x->gin_slot[k] = -1;
    x->posted = 0;
    x->nsends = 0;
    x->messages = 0;
    x->used = 0;
    for (size_t i = 0; i < x->n; i++)
        TSR_TRY(run_action(x, i));
    while (x->nsends)
        TSR_TRY(wait_oldest_send(x));
cleanup:
    return rc;
}

static int requests_pending(const exec_t *x)
{
    for (size_t i = 0; x->recv_req && i < x->n; i++)
        if (x->recv_req[i])
            return 1;
    for (size_t i = 0; i < x->nsends; i++)
        if (x->sends[i].req)
            return 1;
    return 0;
}

static tsr_status_t check_args(tsr_pipe_schedule_t sched, tsr_comm_t comm, const tsr_pipe_stage_t *st,
                               const unsigned char *has_w, int me)
{
    if (tsr_comm_size(comm) != sched->p)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "schedule has %d stages but the communicator has %d ranks", sched->p,
                         tsr_comm_size(comm));
    /* 32767 is the largest tag MPI guarantees (MPI_TAG_UB may be larger). */
    if ((long)sched->m * sched->v * 2 > 32767)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "m * v = %d micro-batch chunks need more message tags than MPI "
                         "guarantees (at most 16383)", sched->m * sched->v);
    if (!st->forward || !st->backward || !st->buffer_bytes)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "stage callbacks forward, backward and buffer_bytes are required");
    for (size_t k = 0; k < (size_t)sched->m * (size_t)sched->v; k++)
        if (has_w[k] && !st->weight_grad)
            return TSR_ERROR(TSR_ERR_INVALID_ARG, "stage %d's schedule has W actions but weight_grad is NULL", me);
    return TSR_OK;
}

/* The largest buffer of any chunk, rounded up to keep every slot aligned. */
static size_t largest_buffer(const exec_t *x)
{
    size_t b = 0;
    for (int c = 0; c < x->s->v; c++)
        for (int side = 0; side < 2; side++) {
            size_t n = x->cb->buffer_bytes(x->cb->ctx, c, (tsr_pipe_side_t)side);
            if (n > b)
                b = n;
        }
    return (b + TSR_DEVICE_ALIGNMENT - 1) / TSR_DEVICE_ALIGNMENT * TSR_DEVICE_ALIGNMENT;
}

tsr_status_t tsr_pipe_execute(tsr_pipe_schedule_t sched, tsr_comm_t comm, tsr_device_t dev,
                              const tsr_pipe_stage_t *stage, const tsr_pipe_exec_config_t *config,
                              tsr_pipe_trace_t trace)
{
    tsr_status_t rc = TSR_OK;
    tsr_pipe_exec_config_t defaults = TSR_PIPE_EXEC_INIT;
    exec_t x;
    memset(&x, 0, sizeof x);
    void *pool = NULL;
    int sync_was;
    TSR_CHECK(sched && comm && dev && stage, TSR_ERR_INVALID_ARG, "schedule, communicator, device and stage are required");
    if (!config)
        config = &defaults;
    TSR_CHECK(config->struct_size == sizeof *config, TSR_ERR_INVALID_ARG,
              "tsr_pipe_execute: options not from TSR_PIPE_EXEC_INIT (size %zu, expected %zu)", config->struct_size,
              sizeof *config);
    TSR_CHECK(config->lookahead >= 1 && config->poll_us >= 0, TSR_ERR_INVALID_ARG,
              "lookahead must be >= 1 and poll_us >= 0, got %d and %d", config->lookahead, config->poll_us);
    x.s = sched;
    x.cb = stage;
    x.comm = comm;
    x.me = tsr_comm_rank(comm);
    x.lookahead = config->lookahead;
    /* On NCCL a wait is queued on the device's stream; testing in a loop would hold the host
     * until the GPU got there, and nothing would be queued ahead. */
    x.poll_us = tsr_comm_backend(comm) == TSR_COMM_BACKEND_NCCL ? 0 : config->poll_us;
    x.max_sends = config->lookahead + 1;
    /* one stage (p = 1, v > 1) sends to itself, which NCCL never does: in order needs p > 1 */
    x.in_order = (config->in_order || tsr_comm_backend(comm) == TSR_COMM_BACKEND_NCCL) && sched->p > 1;
    x.strict = x.in_order && tsr_comm_backend(comm) != TSR_COMM_BACKEND_NCCL;
    x.trace = trace;
    TSR_TRY(tsr__pipe_weight_flags(sched, x.me < sched->p ? x.me : 0, &x.has_w));
    TSR_TRY(check_args(sched, comm, stage, x.has_w, x.me));
    TSR_TRY(tsr_pipe_simulate(sched, NULL, NULL));
    x.acts = sched->acts[x.me];
    x.n = sched->len[x.me];
    size_t slots = (size_t)sched->m * (size_t)sched->v;
    x.in_slot = malloc(slots * sizeof(int));
    x.gout_slot = malloc(slots * sizeof(int));
    x.out_slot = malloc(slots * sizeof(int));
    x.gin_slot = malloc(slots * sizeof(int));
    x.recv_req = tsr__calloc(x.n + 1, sizeof(tsr_request_t));
    x.sends = tsr__calloc((size_t)x.max_sends, sizeof(inflight_t));
    TSR_CHECK(x.in_slot && x.gout_slot && x.out_slot && x.gin_slot && x.recv_req && x.sends, TSR_ERR_OUT_OF_MEMORY,
              "executor state for %zu actions", x.n);

    x.planning = 1;
    TSR_TRY(run_all(&x));
    x.planning = 0;
    x.capacity = x.peak;
    x.slot_bytes = largest_buffer(&x);
    x.free_slots = tsr__calloc((size_t)x.capacity + 1, sizeof(int));
    TSR_CHECK(x.free_slots, TSR_ERR_OUT_OF_MEMORY, "pool of %d slots", x.capacity);
    for (int k = 0; k < x.capacity; k++)
        x.free_slots[x.nfree++] = x.capacity - 1 - k;
    TSR_TRY(tsr_device_alloc(dev, TSR_MEM_ACTIVATIONS, (size_t)x.capacity * x.slot_bytes, &pool));
    x.pool = pool;
    sync_was = tsr__comm_set_sync_sends(comm, x.strict);
    rc = run_all(&x);
    tsr__comm_set_sync_sends(comm, sync_was);
cleanup:
    /* After a failure, receives may still be posted into the pool: waiting for them could
     * hang and freeing the pool would let MPI write into freed memory, so it is left. */
    if (pool && !requests_pending(&x))
        tsr_device_free(dev, &pool);
    free(x.has_w);
    free(x.in_slot);
    free(x.gout_slot);
    free(x.out_slot);
    free(x.gin_slot);
    free(x.recv_req);
    free(x.sends);
    free(x.free_slots);
    return rc;
}

/* ---- traces ---- */

tsr_status_t tsr_pipe_trace_create(tsr_pipe_trace_t *out)
{
    *out = tsr__calloc(1, sizeof **out);
    return *out ? TSR_OK : TSR_ERROR(TSR_ERR_OUT_OF_MEMORY, "pipeline trace");
}

void tsr_pipe_trace_destroy(tsr_pipe_trace_t *trace)
{
    if (!trace || !*trace)
        return;
    free((*trace)->ev);
    free(*trace);
    *trace = NULL;
}

void tsr_pipe_trace_clear(tsr_pipe_trace_t trace)
{
    if (trace)
        trace->n = 0;
}

const tsr_pipe_event_t *tsr_pipe_trace_events(tsr_pipe_trace_t trace, size_t *count)
{
    *count = trace ? trace->n : 0;
    return trace ? trace->ev : NULL;
}
