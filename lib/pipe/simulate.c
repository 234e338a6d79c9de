/*
 * simulate.c: play every stage's action list against the others.
 *
 * Computes never block; they take their cost (a chunk's share of the stage's cost) and
 * check that their inputs are there. A send and its receive meet: with rendezvous rules
 * (the default, what MPI_Ssend guarantees and the weakest thing a portable program may
 * assume) both stages wait until the other reaches the matching action, then both finish
 * `transfer` later. A send to the stage itself (p = 1 with several chunks) and every send
 * under eager rules is buffered: the data arrives `transfer` after the send. Each stage runs
 * as far as it can in turn; when no stage can move and some are unfinished, that is a
 * deadlock, reported with every blocked stage and the action it waits on.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipe_impl.h"

typedef struct sim_state {
    tsr_pipe_schedule_t s;
    const tsr_pipe_costs_t *c;
    size_t *pc;              /* per stage: next action */
    double *t;               /* per stage: its clock */
    double *busy;            /* per stage: compute time */
    int *live, *peak;        /* per stage: live (mb, chunk) pairs and their maximum */
    unsigned char **has_w;   /* per stage, per (mb, chunk): W actions present */
    unsigned char **state;   /* per stage, per (mb, chunk): bit 0 F, 1 B, 2 W, 3 act in, 4 grad in */
    double **arrival;        /* per stage, per (mb, chunk, direction): see arrival_slot() */
    tsr_pipe_sim_t *out;
} sim_state_t;

enum { DONE_F = 1, DONE_B = 2, DONE_W = 4, HAVE_ACT = 8, HAVE_GRAD = 16 };

static void state_free(sim_state_t *st)
{
    for (int i = 0; i < st->s->p; i++) {
        if (st->has_w)
            free(st->has_w[i]);
        if (st->state)
            free(st->state[i]);
    }
    free(st->has_w);
    free(st->state);
    free(st->pc);
    free(st->t);
    free(st->busy);
    free(st->live);
    free(st->peak);
    for (int i = 0; st->arrival && i < st->s->p; i++)
        free(st->arrival[i]);
    free(st->arrival);
}

static tsr_status_t state_init(sim_state_t *st, tsr_pipe_schedule_t s, const tsr_pipe_costs_t *c)
{
    int p = s->p;
    memset(st, 0, sizeof *st);
    st->s = s;
    st->c = c;
    st->pc = tsr__calloc((size_t)p, sizeof(size_t));
    st->t = tsr__calloc((size_t)p, sizeof(double));
    st->busy = tsr__calloc((size_t)p, sizeof(double));
    st->live = tsr__calloc((size_t)p, sizeof(int));
    st->peak = tsr__calloc((size_t)p, sizeof(int));
    st->has_w = tsr__calloc((size_t)p, sizeof(unsigned char *));
    st->state = tsr__calloc((size_t)p, sizeof(unsigned char *));
    st->arrival = tsr__calloc((size_t)p, sizeof(double *));
    if (!st->pc || !st->t || !st->busy || !st->live || !st->peak || !st->has_w || !st->state || !st->arrival)
        return TSR_ERROR(TSR_ERR_OUT_OF_MEMORY, "simulator state for %d stages", p);
    for (int i = 0; i < p; i++) {
        tsr_status_t rc = tsr__pipe_weight_flags(s, i, &st->has_w[i]);
        if (rc != TSR_OK)
            return rc;
        size_t pairs = (size_t)s->m * (size_t)s->v;
        st->state[i] = tsr__calloc(pairs, 1);
        st->arrival[i] = malloc(2 * pairs * sizeof(double));
        if (!st->state[i] || !st->arrival[i])
            return TSR_ERROR(TSR_ERR_OUT_OF_MEMORY, "simulator state for %d micro-batches", s->m);
        for (size_t k = 0; k < 2 * pairs; k++)
            st->arrival[i][k] = -1.0;
    }
    return TSR_OK;
}

/* Is the action well-formed: indices in range, and for messages the peer its chunk implies? */
static tsr_status_t check_action(const sim_state_t *st, int stage, size_t i, const tsr_pipe_action_t *a)
{
    const tsr_pipe_schedule_t s = st->s;
    char what[96];
    tsr__pipe_action_str(a, what, sizeof what);
    if ((unsigned)a->op >= TSR_PIPE_OP_COUNT || a->mb < 0 || a->mb >= s->m || a->chunk < 0 || a->chunk >= s->v)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "stage %d action %zu (%s) is out of range for m=%d v=%d", stage, i,
                         what, s->m, s->v);
    if (tsr__pipe_is_compute(a->op))
        return TSR_OK;
    int peer, peer_chunk, forward = a->op == TSR_PIPE_SEND_ACT || a->op == TSR_PIPE_RECV_GRAD;
    tsr__pipe_neighbour(s->p, s->v, stage, a->chunk, forward, &peer, &peer_chunk);
    if (peer < 0 || peer != a->peer)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "stage %d action %zu (%s): chunk %d of stage %d has %s%d on that side",
                         stage, i, what, a->chunk, stage, peer < 0 ? "no neighbour" : "its neighbour on stage ",
                         peer < 0 ? 0 : peer);
    return TSR_OK;
}

/* The stage and chunk a message of action a lands on. */
static void message_target(const sim_state_t *st, int stage, const tsr_pipe_action_t *a, int *to, int *to_chunk)
{
    tsr__pipe_neighbour(st->s->p, st->s->v, stage, a->chunk, a->op == TSR_PIPE_SEND_ACT, to, to_chunk);
}

static tsr_status_t run_compute(sim_state_t *st, int stage, size_t i, const tsr_pipe_action_t *a)
{
    tsr_pipe_schedule_t s = st->s;
    int vs = tsr__pipe_vstage(s->p, stage, a->chunk), last = s->p * s->v - 1;
    size_t k = (size_t)a->mb * (size_t)s->v + (size_t)a->chunk;
    unsigned char *f = &st->state[stage][k];
    const char *problem = NULL;
    double cost;
    char what[96];
    if (a->op == TSR_PIPE_FORWARD) {
        problem = (*f & DONE_F) ? "repeats a forward" : (vs > 0 && !(*f & HAVE_ACT)) ? "has no input activation" : NULL;
        cost = st->c->forward;
        *f |= DONE_F;
        if (++st->live[stage] > st->peak[stage])
            st->peak[stage] = st->live[stage];
    } else if (a->op == TSR_PIPE_BACKWARD) {
        problem = (*f & DONE_B)                       ? "repeats a backward"
                  : !(*f & DONE_F)                    ? "comes before its forward"
                  : (vs < last && !(*f & HAVE_GRAD)) ? "has no output gradient"
                                                      : NULL;
        cost = st->c->backward;
        *f |= DONE_B;
        if (!st->has_w[stage][k])
            st->live[stage]--;
    } else {
        problem = (*f & DONE_W) ? "repeats a weight gradient" : !(*f & DONE_B) ? "comes before its backward" : NULL;
        cost = st->c->weight;
        *f |= DONE_W;
        st->live[stage]--;
    }
    if (problem) {
        tsr__pipe_action_str(a, what, sizeof what);
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "stage %d action %zu (%s) %s", stage, i, what, problem);
    }
    cost /= s->v;
    if (st->out) {
        st->out->start[stage][i] = st->t[stage];
        st->out->end[stage][i] = st->t[stage] + cost;
    }
    st->t[stage] += cost;
    st->busy[stage] += cost;
    return TSR_OK;
}

static void finish(sim_state_t *st, int stage, double start, double end)
{
    if (st->out) {
        st->out->start[stage][st->pc[stage]] = start;
        st->out->end[stage][st->pc[stage]] = end;
    }
    st->t[stage] = end;
    st->pc[stage]++;
}

/* The arrival time of the buffered message for chunk `chunk` of `stage` (activation or
 * gradient): -1 while none was sent, -2 once received. */
static double *arrival_slot(const sim_state_t *st, int stage, int mb, int chunk, int grad)
{
    return &st->arrival[stage][((size_t)mb * (size_t)st->s->v + (size_t)chunk) * 2 + (size_t)grad];
}

static tsr_status_t buffer_message(sim_state_t *st, int stage, size_t i, const tsr_pipe_action_t *a)
{
    int to, to_chunk;
    message_target(st, stage, a, &to, &to_chunk);
    double *slot = arrival_slot(st, to, a->mb, to_chunk, a->op == TSR_PIPE_SEND_GRAD);
    if (*slot != -1.0) {
        char what[96];
        tsr__pipe_action_str(a, what, sizeof what);
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "stage %d action %zu (%s) sends a message that was already sent", stage,
                         i, what);
    }
    *slot = st->t[stage] + st->c->transfer;
    return TSR_OK;
}

static void mark_received(sim_state_t *st, int stage, const tsr_pipe_action_t *a)
{
    st->state[stage][(size_t)a->mb * (size_t)st->s->v + (size_t)a->chunk] |=
        a->op == TSR_PIPE_RECV_ACT ? HAVE_ACT : HAVE_GRAD;
}

/* A receive: from a buffered message, or meeting its send at the head of the peer's list. */
static int try_recv(sim_state_t *st, int stage, const tsr_pipe_action_t *a)
{
    double *slot = arrival_slot(st, stage, a->mb, a->chunk, a->op == TSR_PIPE_RECV_GRAD);
    if (*slot >= 0) {
        double arrived = *slot;
        *slot = -2.0; /* taken: a second send of it is still an error */
        mark_received(st, stage, a);
        finish(st, stage, st->t[stage], arrived > st->t[stage] ? arrived : st->t[stage]);
        return 1;
    }
    int peer = a->peer;
    if (st->pc[peer] >= st->s->len[peer])
        return 0;
    const tsr_pipe_action_t *b = &st->s->acts[peer][st->pc[peer]];
    int to, to_chunk;
    if (!tsr__pipe_is_send(b->op) || b->mb != a->mb || (b->op == TSR_PIPE_SEND_ACT) != (a->op == TSR_PIPE_RECV_ACT))
        return 0;
    message_target(st, peer, b, &to, &to_chunk);
    if (to != stage || to_chunk != a->chunk || b->peer != stage)
        return 0;
    double start = st->t[stage] > st->t[peer] ? st->t[stage] : st->t[peer], end = start + st->c->transfer;
    mark_received(st, stage, a);
    finish(st, stage, start, end);
    finish(st, peer, start, end);
    return 1;
}

/* Advance one stage as far as it goes. Returns 1 if it moved. */
static tsr_status_t advance(sim_state_t *st, int stage, int *moved)
{
    tsr_pipe_schedule_t s = st->s;
    *moved = 0;
    while (st->pc[stage] < s->len[stage]) {
        size_t i = st->pc[stage];
        const tsr_pipe_action_t *a = &s->acts[stage][i];
        tsr_status_t rc = check_action(st, stage, i, a);
        if (rc != TSR_OK)
            return rc;
        if (tsr__pipe_is_compute(a->op)) {
            if ((rc = run_compute(st, stage, i, a)) != TSR_OK)
                return rc;
            st->pc[stage]++;
        } else if (tsr__pipe_is_send(a->op) && (st->c->eager || a->peer == stage)) {
            if ((rc = buffer_message(st, stage, i, a)) != TSR_OK)
                return rc;
            finish(st, stage, st->t[stage], st->t[stage]);
        } else if (tsr__pipe_is_recv(a->op)) {
            if (!try_recv(st, stage, a))
                return TSR_OK;
        } else {
            /* A rendezvous send completes when the peer's receive does (in try_recv). */
            size_t before = st->pc[stage];
            const tsr_pipe_action_t *b = st->pc[a->peer] < s->len[a->peer] ? &s->acts[a->peer][st->pc[a->peer]] : NULL;
            if (!b || !tsr__pipe_is_recv(b->op) || b->peer != stage || !try_recv(st, a->peer, b))
                return TSR_OK;
            if (st->pc[stage] == before)
                return TSR_OK;
        }
        *moved = 1;
    }
    return TSR_OK;
}

static tsr_status_t deadlock(const sim_state_t *st)
{
    char text[1024], what[96];
    size_t used = 0;
    text[0] = '\0';
    for (int i = 0; i < st->s->p && used < sizeof text; i++) {
        if (st->pc[i] >= st->s->len[i])
            continue;
        tsr__pipe_action_str(&st->s->acts[i][st->pc[i]], what, sizeof what);
        used += (size_t)snprintf(text + used, sizeof text - used, "%sstage %d waits at action %zu (%s)",
                                 used ? "; " : "", i, st->pc[i], what);
    }
    return TSR_ERROR(TSR_ERR_INVALID_ARG, "deadlock: %s", text);
}

static tsr_status_t check_complete(const sim_state_t *st)
{
    const tsr_pipe_schedule_t s = st->s;
    for (int i = 0; i < s->p; i++)
        for (int mb = 0; mb < s->m; mb++)
            for (int c = 0; c < s->v; c++) {
                unsigned char f = st->state[i][(size_t)mb * (size_t)s->v + (size_t)c];
                if (!(f & DONE_F) || !(f & DONE_B))
                    return TSR_ERROR(TSR_ERR_INVALID_ARG, "stage %d never runs the %s of mb %d chunk %d", i,
                                     (f & DONE_F) ? "backward" : "forward", mb, c);
            }
    return TSR_OK;
}

static tsr_status_t alloc_result(tsr_pipe_schedule_t s, tsr_pipe_sim_t *out)
{
    memset(out, 0, sizeof *out);
    out->stages = s->p;
    out->idle = tsr__calloc((size_t)s->p, sizeof(double));
    out->peak_live = tsr__calloc((size_t)s->p, sizeof(int));
    out->start = tsr__calloc((size_t)s->p, sizeof(double *));
    out->end = tsr__calloc((size_t)s->p, sizeof(double *));
    if (!out->idle || !out->peak_live || !out->start || !out->end)
        return TSR_ERROR(TSR_ERR_OUT_OF_MEMORY, "simulation result for %d stages", s->p);
    for (int i = 0; i < s->p; i++) {
        out->start[i] = tsr__calloc(s->len[i] + 1, sizeof(double));
        out->end[i] = tsr__calloc(s->len[i] + 1, sizeof(double));
        if (!out->start[i] || !out->end[i])
            return TSR_ERROR(TSR_ERR_OUT_OF_MEMORY, "simulation times of stage %d", i);
    }
    return TSR_OK;
}

void tsr_pipe_sim_free(tsr_pipe_sim_t *sim)
{
    if (!sim)
        return;
    for (int i = 0; i < sim->stages; i++) {
        if (sim->start)
            free(sim->start[i]);
        if (sim->end)
            free(sim->end[i]);
    }
    free(sim->start);
    free(sim->end);
    free(sim->idle);
    free(sim->peak_live);
    memset(sim, 0, sizeof *sim);
}

tsr_status_t tsr_pipe_simulate(tsr_pipe_schedule_t sched, const tsr_pipe_costs_t *costs, tsr_pipe_sim_t *out)
{
    tsr_status_t rc = TSR_OK;
    sim_state_t st;
    tsr_pipe_costs_t defaults = TSR_PIPE_COSTS_INIT;
    memset(&st, 0, sizeof st);
    if (out)
        memset(out, 0, sizeof *out);
    TSR_CHECK(sched, TSR_ERR_INVALID_ARG, "no schedule to simulate");
    if (!costs)
        costs = &defaults;
    TSR_CHECK(costs->forward >= 0 && costs->backward >= 0 && costs->weight >= 0 && costs->transfer >= 0,
              TSR_ERR_INVALID_ARG, "costs must be non-negative, got F=%g B=%g W=%g transfer=%g", costs->forward,
              costs->backward, costs->weight, costs->transfer);
    TSR_TRY(state_init(&st, sched, costs));
    if (out) {
        TSR_TRY(alloc_result(sched, out));
        st.out = out;
    }
    for (;;) {
        int any = 0, moved, unfinished = 0;
        for (int i = 0; i < sched->p; i++) {
            TSR_TRY(advance(&st, i, &moved));
            any |= moved;
            unfinished |= st.pc[i] < sched->len[i];
        }
        if (!unfinished)
            break;
        if (!any)
            TSR_TRY(deadlock(&st));
    }
    TSR_TRY(check_complete(&st));
    if (out) {
        double busy = 0;
        for (int i = 0; i < sched->p; i++) {
            if (st.t[i] > out->makespan)
                out->makespan = st.t[i];
            busy += st.busy[i];
            out->peak_live[i] = st.peak[i];
        }
        for (int i = 0; i < sched->p; i++)
            out->idle[i] = out->makespan - st.busy[i];
        out->bubble = out->makespan > 0 ? 1.0 - busy / (sched->p * out->makespan) : 0.0;
    }
cleanup:
    if (rc != TSR_OK && out)
        tsr_pipe_sim_free(out);
    state_free(&st);
    return rc;
}

double tsr_pipe_bubble_formula(tsr_pipe_kind_t kind, int stages, int micro_batches, int chunks,
                               const tsr_pipe_costs_t *costs)
{
    double p = stages, m = micro_batches, v = chunks;
    if (kind == TSR_PIPE_INTERLEAVED)
        return (p - 1) / (v * m + p - 1);
    if (kind == TSR_PIPE_ZB_H1 && costs) {
        double f = costs->forward, b = costs->backward, w = costs->weight, gap = (p - 1) * (f + b - w);
        if (gap < 0)
            gap = 0;
        return gap / (m * (f + b + w) + gap);
    }
    return (p - 1) / (m + p - 1);
}
