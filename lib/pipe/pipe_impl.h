/*
 * pipe_impl.h: what the pipe module's source files share. Private to lib/pipe.
 */
#ifndef TESSERA_PIPE_IMPL_H
#define TESSERA_PIPE_IMPL_H

#include "../core/internal.h"

struct tsr_pipe_schedule {
    int p, m, v;               /* stages, micro-batches, chunks per stage */
    int kind;                  /* tsr_pipe_kind_t of a generated schedule, -1 if hand-made */
    tsr_pipe_action_t **acts;  /* per stage: its actions */
    size_t *len, *cap;         /* per stage: actions held and allocated */
};

struct tsr_pipe_trace {
    tsr_pipe_event_t *ev; /* events in the order they ran */
    size_t n, cap;
};

/* Virtual stage of chunk c on stage s (Megatron: c*p + s). */
static inline int tsr__pipe_vstage(int p, int s, int c) { return c * p + s; }

/* Stage and chunk on the other end of a send or receive by (stage s, chunk c): activations
 * go to the next virtual stage (forward == 1), gradients to the previous one. Returns -1
 * in *peer when there is no such virtual stage. */
static inline void tsr__pipe_neighbour(int p, int v, int s, int c, int forward, int *peer, int *peer_chunk)
{
    int vs = tsr__pipe_vstage(p, s, c) + (forward ? 1 : -1);
    if (vs < 0 || vs >= p * v) {
        *peer = -1;
        *peer_chunk = -1;
        return;
    }
    *peer = vs % p;
    *peer_chunk = vs / p;
}

/* Is op a send or a receive of activations (forward direction)? */
static inline int tsr__pipe_is_act(tsr_pipe_op_t op) { return op == TSR_PIPE_SEND_ACT || op == TSR_PIPE_RECV_ACT; }
static inline int tsr__pipe_is_send(tsr_pipe_op_t op) { return op == TSR_PIPE_SEND_ACT || op == TSR_PIPE_SEND_GRAD; }
static inline int tsr__pipe_is_recv(tsr_pipe_op_t op) { return op == TSR_PIPE_RECV_ACT || op == TSR_PIPE_RECV_GRAD; }
static inline int tsr__pipe_is_compute(tsr_pipe_op_t op) { return op <= TSR_PIPE_WEIGHT; }

/* Describe an action in words ("send_act mb 3 chunk 0 to stage 2") into buf. */
void tsr__pipe_action_str(const tsr_pipe_action_t *a, char *buf, size_t len);

/* Does stage s of sched have a W action for (mb, chunk)? flags[mb * v + chunk], caller frees. */
tsr_status_t tsr__pipe_weight_flags(tsr_pipe_schedule_t sched, int s, unsigned char **flags);

#endif /* TESSERA_PIPE_IMPL_H */
