/*
 * ps_impl.h: what the servers (server.c) and the workers (worker.c) of the parameter server
 * share: the agreed table of the model's tensors, the shard cuts, the runs of elements a
 * worker rank exchanges with a server, and the message header.
 */
#ifndef TESSERA_PS_IMPL_H
#define TESSERA_PS_IMPL_H

#include <stdint.h>

#include "core/internal.h"

/* Every PS message travels on the job communicator with this tag. */
#define PS_TAG 0x5053

/*
 * comm receives a message of exactly the size posted, so every message from a worker has
 * the size of its push (PUSH, INIT carry floats; DONE, SAVE, LOAD and ABORT none that are
 * read), every answer to a push the size of its pull (REPLY, or ABORT), and every answer
 * to a request that of the larger of its pull and PS_MSG_MAX. The server answers SAVE and
 * LOAD with a message of the same type whose round is the status of its callback: on
 * success LOAD's payload holds the parameters the worker pulls (clock: the step resumed
 * at); on failure the payload is the error's text (count: its bytes). It answers any
 * message with ABORT (round: the job rank of the worker that failed, or the server's own)
 * once a worker left by ABORT or the server failed.
 */
enum { PS_PUSH = 1, PS_REPLY, PS_INIT, PS_DONE, PS_SAVE, PS_LOAD, PS_ABORT };

/* The longest error text a server sends back (bytes, with its NUL). */
#define PS_MSG_MAX 512

/* The header of every message; its payload of floats follows. */
typedef struct ps_header {
    int64_t type;  /* PS_PUSH, ... */
    int64_t clock; /* PUSH, SAVE: the worker's step; REPLY: echoed; LOAD's answer: the step */
    int64_t round; /* REPLY: rounds the server has applied; SAVE: the note; answers: see above */
    double norm;   /* REPLY: gradient norm of the last round applied */
    double lr;     /* REPLY: learning rate of the last round applied */
    int64_t count; /* floats in the payload */
    double loss;   /* PUSH: the replica's loss; REPLY: the mean loss of the last round applied */
} ps_header_t;

/* One tensor block a worker rank registered, as every rank of the job learns it. */
typedef struct ps_record {
    char name[TSR_ZERO_NAME_MAX];
    int64_t rows, cols, row_off, col_off, local_rows, local_cols;
    int32_t layer, flags, counted, pad;
} ps_record_t;

/* A tensor of the model, at `base` in the flat vector the servers shard. */
typedef struct ps_tensor {
    char name[TSR_ZERO_NAME_MAX];
    int64_t rows, cols, base;
    int32_t layer, flags;
} ps_tensor_t;

/* What every rank agrees on after ps_table_build(). */
typedef struct ps_table {
    int servers, workers, replicas; /* S, worker ranks, dp */
    ps_tensor_t *t;
    int nt;
    int64_t total;   /* Ψ: elements of the flat vector */
    int64_t *cut;    /* server j holds [cut[j], cut[j+1]) */
    ps_record_t *rec; /* worker rank r's records: rec[first[r] .. first[r] + count[r]) */
    int *first, *count;
} ps_table_t;

/* A run of n elements: local element `local` of a worker's record, global element `global`. */
typedef struct ps_run {
    int64_t local, global, n;
    int record; /* index into table->rec */
} ps_run_t;

/* A run as a rank copies it: n floats of a message at param / grad of the optimizer's views. */
typedef struct ps_span {
    float *param, *grad;
    size_t n;
} ps_span_t;

/* Merge each span into the one before it where both its param and grad continue that one's
 * (whole rows of a block, blocks laid end to end): one copy or addition instead of one per
 * row. Returns the new count; the message's order and bytes are unchanged. */
int tsr__ps_spans_merge(ps_span_t *s, int n);

/* Collective over the job: the first agreement (status of every rank: a worker's
 * tsr_ps_cancel() passes an error), then each worker rank's records. */
tsr_status_t tsr__ps_table_build(tsr_comm_t job, int servers, const ps_record_t *mine, int nmine, tsr_status_t status,
                                 ps_table_t *out);

void tsr__ps_table_free(ps_table_t *t);

/* The runs of worker rank r's records that server j holds, in the order of r's records
 * then rows; counted_only: only records the rank counts (its pushes). Malloc'ed into *out. */
tsr_status_t tsr__ps_runs(const ps_table_t *t, int r, int j, int counted_only, ps_run_t **out, int *n);

/* The index of a tensor by name, or -1. */
int tsr__ps_tensor_index(const ps_table_t *t, const char *name);

/* Agree on a status over the job: the lowest failing rank's status, else TSR_OK. A rank that
 * failed keeps its own message; the others get one saying which rank failed. */
tsr_status_t tsr__ps_agree(tsr_comm_t job, tsr_status_t mine, const char *stage);

/* Whether one message can carry the link between a worker rank and a server: push_n floats
 * one way, pull_n the other, a header before them, at most INT_MAX bytes (one MPI call).
 * Both ends check before the set-up agreement, so an oversized link fails on every rank. */
tsr_status_t tsr__ps_check_link(size_t push_n, size_t pull_n, int worker, int server);

/* Test every request until all are done, sleeping between polls (up to max_us). */
tsr_status_t tsr__ps_wait_all(tsr_request_t *reqs, int n, int max_us);

/* Tell every server that this worker rank failed and leaves (tsr_ps_cancel() after the
 * join); from then on it sends nothing more. */
tsr_status_t tsr__ps_worker_abort(tsr__ps_worker_t *w);

/* Sleep us microseconds. */
void tsr__ps_sleep_us(long us);

#endif /* TESSERA_PS_IMPL_H */
