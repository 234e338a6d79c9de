/*
 * schedule.c: the schedule representation and its generators.
 *
 * A generator works in two steps. First it fixes each stage's order of compute actions
 * (F, B, W), a fixed pattern per family; playing the orders as a dataflow with nominal
 * costs (F 1, B 2, or for ZB-H1 F, B and W 1 each) gives every compute a start and end
 * time. Then every send and receive is keyed by the time its data is produced, and each
 * stage's list is sorted by (time, communication before compute, a tie-break that names the
 * message). Both ends of a message share one key and every list is sorted by the same total
 * order, so the blocked action with the smallest key always finds its partner at the head
 * of the partner's list: the schedule cannot deadlock even when every send waits for its
 * receive.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipe_impl.h"

static const char *const kind_names[TSR_PIPE_KIND_COUNT] = {"gpipe", "1f1b", "interleaved", "zb-h1"};
static const char *const op_names[TSR_PIPE_OP_COUNT] = {"F",        "B",         "W",        "send_act",
                                                        "recv_act", "send_grad", "recv_grad"};

const char *tsr_pipe_kind_name(tsr_pipe_kind_t kind)
{
    return (unsigned)kind < TSR_PIPE_KIND_COUNT ? kind_names[kind] : "unknown";
}

tsr_status_t tsr_pipe_kind_parse(const char *name, tsr_pipe_kind_t *out)
{
    for (int k = 0; k < TSR_PIPE_KIND_COUNT; k++)
        if (name && strcmp(name, kind_names[k]) == 0) {
            *out = (tsr_pipe_kind_t)k;
            return TSR_OK;
        }
    return TSR_ERROR(TSR_ERR_INVALID_ARG, "unknown schedule \"%s\": expected gpipe, 1f1b, interleaved or zb-h1",
                     name ? name : "(null)");
}

tsr_status_t tsr_pipe_spec_parse(const char *text, tsr_pipe_kind_t *kind, int *chunks)
{
    char name[32], *end;
    const char *colon = text ? strchr(text, ':') : NULL;
    size_t len = colon ? (size_t)(colon - text) : text ? strlen(text) : 0;
    if (!text || len >= sizeof name)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "schedule \"%s\": expected gpipe, 1f1b, interleaved:V or zb-h1",
                         text ? text : "(null)");
    memcpy(name, text, len);
    name[len] = '\0';
    tsr_pipe_kind_t k;
    if (tsr_pipe_kind_parse(name, &k) != TSR_OK)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "schedule \"%s\": expected gpipe, 1f1b, interleaved:V or zb-h1", text);
    if ((k == TSR_PIPE_INTERLEAVED) != (colon != NULL))
        return TSR_ERROR(TSR_ERR_INVALID_ARG,
                         "schedule \"%s\": interleaved takes its chunks per stage as interleaved:V, the others none",
                         text);
    long v = 1;
    if (colon) {
        errno = 0;
        v = strtol(colon + 1, &end, 10);
        if (errno || end == colon + 1 || *end || v < 1 || v > 64)
            return TSR_ERROR(TSR_ERR_INVALID_ARG, "schedule \"%s\": chunks per stage must be an integer in [1, 64]",
                             text);
    }
    *kind = k;
    *chunks = (int)v;
    return TSR_OK;
}

const char *tsr_pipe_op_name(tsr_pipe_op_t op)
{
    return (unsigned)op < TSR_PIPE_OP_COUNT ? op_names[op] : "unknown";
}

void tsr__pipe_action_str(const tsr_pipe_action_t *a, char *buf, size_t len)
{
    if (tsr__pipe_is_compute(a->op))
        snprintf(buf, len, "%s mb %d chunk %d", tsr_pipe_op_name(a->op), a->mb, a->chunk);
    else
        snprintf(buf, len, "%s mb %d chunk %d %s stage %d", tsr_pipe_op_name(a->op), a->mb, a->chunk,
                 tsr__pipe_is_send(a->op) ? "to" : "from", a->peer);
}

tsr_status_t tsr_pipe_schedule_create_empty(int stages, int micro_batches, int chunks, tsr_pipe_schedule_t *out)
{
    tsr_status_t rc = TSR_OK;
    struct tsr_pipe_schedule *s = NULL;
    *out = NULL;
    TSR_CHECK(stages >= 1 && micro_batches >= 1 && chunks >= 1, TSR_ERR_INVALID_ARG,
              "a schedule needs stages, micro-batches and chunks >= 1, got %d, %d, %d", stages, micro_batches,
              chunks);
    s = tsr__calloc(1, sizeof *s);
    TSR_CHECK(s, TSR_ERR_OUT_OF_MEMORY, "schedule of %d stages", stages);
    s->p = stages;
    s->m = micro_batches;
    s->v = chunks;
    s->kind = -1;
    s->acts = tsr__calloc((size_t)stages, sizeof *s->acts);
    s->len = tsr__calloc((size_t)stages, sizeof *s->len);
    s->cap = tsr__calloc((size_t)stages, sizeof *s->cap);
    TSR_CHECK(s->acts && s->len && s->cap, TSR_ERR_OUT_OF_MEMORY, "schedule of %d stages", stages);
    *out = s;
    s = NULL;
cleanup:
    tsr_pipe_schedule_destroy(&s);
    return rc;
}

void tsr_pipe_schedule_destroy(tsr_pipe_schedule_t *sched)
{
    if (!sched || !*sched)
        return;
    struct tsr_pipe_schedule *s = *sched;
    for (int i = 0; s->acts && i < s->p; i++)
        free(s->acts[i]);
    free(s->acts);
    free(s->len);
    free(s->cap);
    free(s);
    *sched = NULL;
}

tsr_status_t tsr_pipe_schedule_append(tsr_pipe_schedule_t sched, int stage, const tsr_pipe_action_t *action)
{
    tsr_status_t rc = TSR_OK;
    TSR_CHECK(sched && action && stage >= 0 && stage < sched->p, TSR_ERR_INVALID_ARG,
              "append to stage %d of a schedule with %d stages", stage, sched ? sched->p : 0);
    if (sched->len[stage] == sched->cap[stage]) {
        size_t cap = sched->cap[stage] ? 2 * sched->cap[stage] : 64;
        tsr_pipe_action_t *a = realloc(sched->acts[stage], cap * sizeof *a);
        TSR_CHECK(a, TSR_ERR_OUT_OF_MEMORY, "%zu actions for stage %d", cap, stage);
        sched->acts[stage] = a;
        sched->cap[stage] = cap;
    }
    sched->acts[stage][sched->len[stage]++] = *action;
cleanup:
    return rc;
}

void tsr_pipe_schedule_shape(tsr_pipe_schedule_t sched, int *stages, int *micro_batches, int *chunks)
{
    if (stages)
        *stages = sched->p;
    if (micro_batches)
        *micro_batches = sched->m;
    if (chunks)
        *chunks = sched->v;
}

size_t tsr_pipe_schedule_length(tsr_pipe_schedule_t sched, int stage)
{
    return sched && stage >= 0 && stage < sched->p ? sched->len[stage] : 0;
}

tsr_pipe_action_t *tsr_pipe_schedule_actions(tsr_pipe_schedule_t sched, int stage)
{
    return sched && stage >= 0 && stage < sched->p ? sched->acts[stage] : NULL;
}

tsr_status_t tsr__pipe_weight_flags(tsr_pipe_schedule_t sched, int s, unsigned char **flags)
{
    *flags = tsr__calloc((size_t)sched->m * (size_t)sched->v, 1);
    if (!*flags)
        return TSR_ERROR(TSR_ERR_OUT_OF_MEMORY, "weight flags for %d micro-batches", sched->m);
    for (size_t i = 0; i < sched->len[s]; i++) {
        const tsr_pipe_action_t *a = &sched->acts[s][i];
        if (a->op == TSR_PIPE_WEIGHT && a->mb >= 0 && a->mb < sched->m && a->chunk >= 0 && a->chunk < sched->v)
            (*flags)[a->mb * sched->v + a->chunk] = 1;
    }
    return TSR_OK;
}

/* ---- Step 1: compute orders, timed as a dataflow. ---- */

/* One compute action being placed, with its nominal times. */
typedef struct item {
    tsr_pipe_op_t op;
    int mb, chunk;
    double start, end;
} item_t;

/* The generator's working state. Times of finished computes are indexed by
 * (virtual stage, micro-batch); a negative time means not yet done. */
typedef struct gen {
    int p, m, v;
    double cost[3];      /* nominal F, B, W of one chunk */
    item_t **items;      /* per stage: its compute order */
    size_t *n, *next;    /* per stage: items held, items placed */
    double *free_at;     /* per stage: when its last placed item ends */
    double *f_end, *b_end, *w_end; /* per (virtual stage, mb) */
} gen_t;

static size_t vm(const gen_t *g, int vs, int mb) { return (size_t)vs * (size_t)g->m + (size_t)mb; }

static void gen_free(gen_t *g)
{
    for (int s = 0; g->items && s < g->p; s++)
        free(g->items[s]);
    free(g->items);
    free(g->n);
    free(g->next);
    free(g->free_at);
    free(g->f_end);
    free(g->b_end);
    free(g->w_end);
}

static tsr_status_t gen_init(gen_t *g, int p, int m, int v)
{
    memset(g, 0, sizeof *g);
    g->p = p;
    g->m = m;
    g->v = v;
    size_t per_stage = 3 * (size_t)m * (size_t)v, cells = (size_t)p * (size_t)v * (size_t)m;
    g->items = tsr__calloc((size_t)p, sizeof *g->items);
    g->n = tsr__calloc((size_t)p, sizeof *g->n);
    g->next = tsr__calloc((size_t)p, sizeof *g->next);
    g->free_at = tsr__calloc((size_t)p, sizeof *g->free_at);
    g->f_end = malloc(cells * sizeof(double));
    g->b_end = malloc(cells * sizeof(double));
    g->w_end = malloc(cells * sizeof(double));
    if (!g->items || !g->n || !g->next || !g->free_at || !g->f_end || !g->b_end || !g->w_end)
        return TSR_ERROR(TSR_ERR_OUT_OF_MEMORY, "generator state for p=%d m=%d v=%d", p, m, v);
    for (int s = 0; s < p; s++)
        if (!(g->items[s] = tsr__calloc(per_stage, sizeof(item_t))))
            return TSR_ERROR(TSR_ERR_OUT_OF_MEMORY, "generator state for p=%d m=%d v=%d", p, m, v);
    for (size_t i = 0; i < cells; i++)
        g->f_end[i] = g->b_end[i] = g->w_end[i] = -1.0;
    return TSR_OK;
}

static void push(gen_t *g, int s, tsr_pipe_op_t op, int mb, int chunk)
{
    item_t *it = &g->items[s][g->n[s]++];
    it->op = op;
    it->mb = mb;
    it->chunk = chunk;
}

/* Earliest time stage s could start it, or a negative value if an input is not yet computed. */
static double ready_time(const gen_t *g, int s, const item_t *it)
{
    int vs = tsr__pipe_vstage(g->p, s, it->chunk), last = g->p * g->v - 1;
    double t = g->free_at[s], dep;
    if (it->op == TSR_PIPE_FORWARD)
        dep = vs > 0 ? g->f_end[vm(g, vs - 1, it->mb)] : 0.0;
    else if (it->op == TSR_PIPE_BACKWARD) {
        dep = vs < last ? g->b_end[vm(g, vs + 1, it->mb)] : 0.0;
        if (g->f_end[vm(g, vs, it->mb)] < 0)
            return -1.0;
    } else
        dep = g->b_end[vm(g, vs, it->mb)];
    if (dep < 0)
        return -1.0;
    return dep > t ? dep : t;
}

static void place(gen_t *g, int s, item_t *it, double start)
{
    int vs = tsr__pipe_vstage(g->p, s, it->chunk);
    it->start = start;
    it->end = start + g->cost[it->op];
    g->free_at[s] = it->end;
    double *ends = it->op == TSR_PIPE_FORWARD ? g->f_end : it->op == TSR_PIPE_BACKWARD ? g->b_end : g->w_end;
    ends[vm(g, vs, it->mb)] = it->end;
}

/* Time the fixed per-stage orders as a dataflow: repeatedly start the stage whose next item
 * can start earliest. */
static tsr_status_t time_fixed_orders(gen_t *g)
{
    for (;;) {
        int best = -1;
        double best_t = 0;
        for (int s = 0; s < g->p; s++) {
            if (g->next[s] == g->n[s])
                continue;
            double t = ready_time(g, s, &g->items[s][g->next[s]]);
            if (t >= 0 && (best < 0 || t < best_t)) {
                best = s;
                best_t = t;
            }
        }
        if (best < 0)
            break;
        place(g, best, &g->items[best][g->next[best]], best_t);
        g->next[best]++;
    }
    for (int s = 0; s < g->p; s++)
        if (g->next[s] != g->n[s])
            return TSR_ERROR(TSR_ERR_INTERNAL, "generated compute order of stage %d cannot proceed past item %zu", s,
                             g->next[s]);
    return TSR_OK;
}

static void order_gpipe(gen_t *g)
{
    for (int s = 0; s < g->p; s++) {
        for (int i = 0; i < g->m; i++)
            push(g, s, TSR_PIPE_FORWARD, i, 0);
        for (int i = 0; i < g->m; i++)
            push(g, s, TSR_PIPE_BACKWARD, i, 0);
    }
}

static void order_1f1b(gen_t *g)
{
    for (int s = 0; s < g->p; s++) {
        int warm = g->p - 1 - s < g->m ? g->p - 1 - s : g->m;
        for (int i = 0; i < warm; i++)
            push(g, s, TSR_PIPE_FORWARD, i, 0);
        for (int i = 0; i < g->m - warm; i++) {
            push(g, s, TSR_PIPE_FORWARD, warm + i, 0);
            push(g, s, TSR_PIPE_BACKWARD, i, 0);
        }
        for (int i = g->m - warm; i < g->m; i++)
            push(g, s, TSR_PIPE_BACKWARD, i, 0);
    }
}

/* Megatron's interleaved order: the k-th forward of a stage is chunk (k/p) mod v of
 * micro-batch (k/(p v)) p + k mod p; backwards walk the chunks in reverse. */
static void interleaved_item(const gen_t *g, int k, int backward, int *mb, int *chunk)
{
    int c = (k / g->p) % g->v;
    *chunk = backward ? g->v - 1 - c : c;
    *mb = (k / (g->p * g->v)) * g->p + k % g->p;
}

static void order_interleaved(gen_t *g)
{
    int total = g->m * g->v, mb, c;
    for (int s = 0; s < g->p; s++) {
        int warm = (g->p - s - 1) * 2 + (g->v - 1) * g->p;
        if (warm > total)
            warm = total;
        for (int k = 0; k < warm; k++) {
            interleaved_item(g, k, 0, &mb, &c);
            push(g, s, TSR_PIPE_FORWARD, mb, c);
        }
        for (int k = 0; k < total - warm; k++) {
            interleaved_item(g, warm + k, 0, &mb, &c);
            push(g, s, TSR_PIPE_FORWARD, mb, c);
            interleaved_item(g, k, 1, &mb, &c);
            push(g, s, TSR_PIPE_BACKWARD, mb, c);
        }
        for (int k = total - warm; k < total; k++) {
            interleaved_item(g, k, 1, &mb, &c);
            push(g, s, TSR_PIPE_BACKWARD, mb, c);
        }
    }
}

/* ZB-H1 (Qi et al., 2023): 1F1B's order of F and B, with stage s running the W of
 * micro-batch i right after the B of micro-batch i + s; the W's so held back fill the
 * cool-down, where stage s would otherwise wait for gradients. Every stage then holds at
 * most p micro-batches between F and W, 1F1B's peak (stage 0's). */
static void order_zb_h1(gen_t *g)
{
    for (int s = 0; s < g->p; s++) {
        int warm = g->p - 1 - s < g->m ? g->p - 1 - s : g->m, w = 0;
        for (int i = 0; i < warm; i++)
            push(g, s, TSR_PIPE_FORWARD, i, 0);
        for (int i = 0; i < g->m; i++) {
            if (warm + i < g->m)
                push(g, s, TSR_PIPE_FORWARD, warm + i, 0);
            push(g, s, TSR_PIPE_BACKWARD, i, 0);
            if (i - s >= 0)
                push(g, s, TSR_PIPE_WEIGHT, w++, 0);
        }
        while (w < g->m)
            push(g, s, TSR_PIPE_WEIGHT, w++, 0);
    }
}

/* ---- Step 2: sends and receives, sorted with the computes by a shared key. ---- */

typedef struct entry {
    double t;      /* compute: start; message: time its data is produced */
    int cls;       /* 0 message, 1 compute */
    int dir, mb, vs, recv; /* message tie-break: direction, micro-batch, producing virtual stage, send first */
    size_t seq;    /* compute: position in the stage's order */
    tsr_pipe_action_t a;
} entry_t;

static int entry_cmp(const void *pa, const void *pb)
{
    const entry_t *a = pa, *b = pb;
    if (a->t != b->t)
        return a->t < b->t ? -1 : 1;
    if (a->cls != b->cls)
        return a->cls - b->cls;
    if (a->cls == 1)
        return a->seq < b->seq ? -1 : a->seq > b->seq;
    if (a->dir != b->dir)
        return a->dir - b->dir;
    if (a->mb != b->mb)
        return a->mb - b->mb;
    if (a->vs != b->vs)
        return a->vs - b->vs;
    return a->recv - b->recv;
}

/* Add the send and receive of the data that compute `it` of stage s produces, if any. */
static void add_messages(const gen_t *g, int s, const item_t *it, entry_t **lists, size_t *n)
{
    int forward = it->op == TSR_PIPE_FORWARD, peer, peer_chunk;
    if (it->op == TSR_PIPE_WEIGHT)
        return;
    tsr__pipe_neighbour(g->p, g->v, s, it->chunk, forward, &peer, &peer_chunk);
    if (peer < 0)
        return;
    entry_t e = {it->end, 0, forward ? 0 : 1, it->mb, tsr__pipe_vstage(g->p, s, it->chunk), 0, 0,
                 {forward ? TSR_PIPE_SEND_ACT : TSR_PIPE_SEND_GRAD, it->mb, it->chunk, peer}};
    lists[s][n[s]++] = e;
    e.recv = 1;
    e.a.op = forward ? TSR_PIPE_RECV_ACT : TSR_PIPE_RECV_GRAD;
    e.a.chunk = peer_chunk;
    e.a.peer = s;
    lists[peer][n[peer]++] = e;
}

static tsr_status_t emit(const gen_t *g, tsr_pipe_schedule_t sched)
{
    tsr_status_t rc = TSR_OK;
    entry_t **lists = tsr__calloc((size_t)g->p, sizeof *lists);
    size_t *n = tsr__calloc((size_t)g->p, sizeof *n);
    TSR_CHECK(lists && n, TSR_ERR_OUT_OF_MEMORY, "schedule lists for %d stages", g->p);
    for (int s = 0; s < g->p; s++) {
        lists[s] = tsr__calloc(3 * g->n[s] + 1, sizeof(entry_t));
        TSR_CHECK(lists[s], TSR_ERR_OUT_OF_MEMORY, "schedule list of stage %d", s);
    }
    for (int s = 0; s < g->p; s++)
        for (size_t i = 0; i < g->n[s]; i++) {
            const item_t *it = &g->items[s][i];
            entry_t e = {it->start, 1, 0, 0, 0, 0, i, {it->op, it->mb, it->chunk, -1}};
            lists[s][n[s]++] = e;
            add_messages(g, s, it, lists, n);
        }
    for (int s = 0; s < g->p; s++) {
        qsort(lists[s], n[s], sizeof(entry_t), entry_cmp);
        for (size_t i = 0; i < n[s]; i++)
            TSR_TRY(tsr_pipe_schedule_append(sched, s, &lists[s][i].a));
    }
cleanup:
    for (int s = 0; lists && s < g->p; s++)
        free(lists[s]);
    free(lists);
    free(n);
    return rc;
}

tsr_status_t tsr_pipe_schedule_create(tsr_pipe_kind_t kind, int stages, int micro_batches, int chunks,
                                      tsr_pipe_schedule_t *out)
{
    tsr_status_t rc = TSR_OK;
    gen_t g;
    memset(&g, 0, sizeof g);
    tsr_pipe_schedule_t sched = NULL;
    *out = NULL;
    TSR_CHECK((unsigned)kind < TSR_PIPE_KIND_COUNT, TSR_ERR_INVALID_ARG, "unknown schedule kind %d", (int)kind);
    TSR_CHECK(kind == TSR_PIPE_INTERLEAVED || chunks == 1, TSR_ERR_INVALID_ARG,
              "%s takes one chunk per stage, got %d", kind_names[kind], chunks);
    TSR_CHECK(kind != TSR_PIPE_INTERLEAVED || chunks == 1 || (stages >= 1 && micro_batches % stages == 0),
              TSR_ERR_INVALID_ARG, "interleaved needs micro-batches a multiple of stages, got m=%d p=%d",
              micro_batches, stages);
    TSR_TRY(tsr_pipe_schedule_create_empty(stages, micro_batches, chunks, &sched));
    TSR_TRY(gen_init(&g, stages, micro_batches, chunks));
    g.cost[TSR_PIPE_FORWARD] = 1.0;
    g.cost[TSR_PIPE_BACKWARD] = kind == TSR_PIPE_ZB_H1 ? 1.0 : 2.0;
    g.cost[TSR_PIPE_WEIGHT] = 1.0;
    switch (kind) {
    case TSR_PIPE_GPIPE: order_gpipe(&g); break;
    case TSR_PIPE_1F1B: order_1f1b(&g); break;
    case TSR_PIPE_INTERLEAVED:
        if (chunks == 1)
            order_1f1b(&g);
        else
            order_interleaved(&g);
        break;
    default: order_zb_h1(&g); break;
    }
    TSR_TRY(time_fixed_orders(&g));
    TSR_TRY(emit(&g, sched));
    sched->kind = (int)kind;
    *out = sched;
    sched = NULL;
cleanup:
    gen_free(&g);
    tsr_pipe_schedule_destroy(&sched);
    return rc;
}
