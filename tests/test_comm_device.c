/*
 * test_comm_device.c: communication on device buffers (tsr_comm_set_device, the staged MPI
 * backend, the NCCL backend, tsr_grid_set_device) and BF16 messages.
 *
 * One battery of blocking and non-blocking operations runs on buffers of a device, filled
 * and read back with tsr_device_copy(), against references every rank computes itself:
 *   - with the CPU device set, on every build: everything behaves as with host buffers,
 *     and no staging memory is allocated;
 *   - with a GPU (skipped where none is visible): the MPI backend staged through host
 *     memory, with all ranks of the job sharing the GPUs there are; on a GPU-aware MPI,
 *     send and recv of device buffers handed to MPI as they are; NCCL on communicators
 *     of one rank (MPI_COMM_SELF), since NCCL refuses two ranks on one GPU; NCCL over the
 *     whole job only where every rank has a GPU of its own, and otherwise the clean refusal;
 *     the grid choosing NCCL or staged MPI per axis.
 * Values are small integers drawn with tsr_rng_uniform() (fresh seed, printed), so every
 * sum is exact in every type, bf16 included, and results are compared bit for bit; one
 * bf16 sum of arbitrary values checks the rounding against a tolerance.
 */
#include <tessera.h>

#include "tap.h"

static uint64_t seed;

/* bf16 <-> float, written here rather than taken from the library under test. */
static uint16_t to_bf16(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest even; test data has no NaN */
    return (uint16_t)(u >> 16);
}

static float from_bf16(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

/* Element i of rank r's data in data set salt: 0..255 for U8, else -32..32. A sum over 4
 * ranks stays within 128, exact even in bf16 (8 significant bits). */
static int64_t gen(tsr_dtype_t t, int r, size_t i, uint64_t salt)
{
    float u = tsr_rng_uniform(seed + salt, (uint64_t)r, (uint64_t)i);
    if (t == TSR_DTYPE_U8)
        return (int64_t)(u * 256.0f) & 255;
    return (int64_t)(u * 65.0f) - 32;
}

static void store(tsr_dtype_t t, void *buf, size_t i, int64_t v)
{
    switch (t) {
    case TSR_DTYPE_F32: ((float *)buf)[i] = (float)v; break;
    case TSR_DTYPE_F64: ((double *)buf)[i] = (double)v; break;
    case TSR_DTYPE_I32: ((int32_t *)buf)[i] = (int32_t)v; break;
    case TSR_DTYPE_I64: ((int64_t *)buf)[i] = v; break;
    case TSR_DTYPE_U8: ((uint8_t *)buf)[i] = (uint8_t)v; break;
    default: ((uint16_t *)buf)[i] = to_bf16((float)v); break;
    }
}

/* The element as a double (every test value is an exactly representable integer). */
static double load(tsr_dtype_t t, const void *buf, size_t i)
{
    switch (t) {
    case TSR_DTYPE_F32: return ((const float *)buf)[i];
    case TSR_DTYPE_F64: return ((const double *)buf)[i];
    case TSR_DTYPE_I32: return ((const int32_t *)buf)[i];
    case TSR_DTYPE_I64: return (double)((const int64_t *)buf)[i];
    case TSR_DTYPE_U8: return ((const uint8_t *)buf)[i];
    default: return from_bf16(((const uint16_t *)buf)[i]);
    }
}

/* op over ranks 0..n-1 of element i; U8 sums wrap modulo 256. */
static int64_t reduced(tsr_dtype_t t, tsr_reduce_op_t op, int n, size_t i, uint64_t salt)
{
    int64_t acc = gen(t, 0, i, salt);
    for (int r = 1; r < n; r++) {
        int64_t x = gen(t, r, i, salt);
        acc = op == TSR_REDUCE_SUM ? acc + x : op == TSR_REDUCE_MAX ? (x > acc ? x : acc) : (x < acc ? x : acc);
    }
    return t == TSR_DTYPE_U8 ? (acc & 255) : acc;
}

/* A buffer on a device, its host image, and the device it lives on. */
typedef struct buf {
    tsr_device_t dev;
    tsr_dtype_t t;
    size_t n;
    void *d, *h;
} buf_t;

static buf_t mkbuf(tsr_device_t dev, tsr_dtype_t t, size_t n)
{
    buf_t b = {dev, t, n, NULL, calloc(n ? n : 1, tsr_dtype_size(t))};
    if (tsr_device_alloc(dev, TSR_MEM_WORKSPACE, n * tsr_dtype_size(t), &b.d) != TSR_OK || !b.h) {
        fprintf(stderr, "# [rank %d] allocation of %zu elements failed: %s\n", tap_rank(), n, tsr_last_error());
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
    return b;
}

static void rmbuf(buf_t *b)
{
    tsr_device_free(b->dev, &b->d);
    free(b->h);
}

/* Host image -> device. */
static void push(buf_t *b)
{
    if (tsr_device_copy(b->dev, b->d, b->h, b->n * tsr_dtype_size(b->t), TSR_COPY_HOST_TO_DEVICE) != TSR_OK)
        fprintf(stderr, "# [rank %d] copy to the device failed: %s\n", tap_rank(), tsr_last_error());
}

/* Device -> host image. Ordered after everything queued on the device, NCCL included. */
static void pull(buf_t *b)
{
    memset(b->h, 0xab, b->n * tsr_dtype_size(b->t));
    if (tsr_device_copy(b->dev, b->h, b->d, b->n * tsr_dtype_size(b->t), TSR_COPY_DEVICE_TO_HOST) != TSR_OK)
        fprintf(stderr, "# [rank %d] copy from the device failed: %s\n", tap_rank(), tsr_last_error());
}

/* Fill elements [first, first + count) of b's host image with rank r's data from element
 * `from` on, and a marker elsewhere. */
static void fill(buf_t *b, size_t first, size_t count, int r, size_t from, uint64_t salt)
{
    for (size_t i = 0; i < b->n; i++)
        store(b->t, b->h, i, b->t == TSR_DTYPE_U8 ? 77 : -77);
    for (size_t k = 0; k < count; k++)
        store(b->t, b->h, first + k, gen(b->t, r, from + k, salt));
}

static int report(tsr_status_t st, const char *what)
{
    if (st != TSR_OK)
        fprintf(stderr, "#   [rank %d] %s: %s (%s)\n", tap_rank(), what, tsr_status_name(st), tsr_last_error());
    return st == TSR_OK;
}

/* Element k of b's host image equals `want`, for k < count from element `first`. */
static int same(const buf_t *b, size_t first, size_t count, const double *want, const char *what)
{
    for (size_t k = 0; k < count; k++) {
        double got = load(b->t, b->h, first + k);
        if (got != want[k]) {
            fprintf(stderr, "#   [rank %d] %s: element %zu is %g, expected %g\n", tap_rank(), what, first + k, got,
                    want[k]);
            return 0;
        }
    }
    return 1;
}

/* Bytes counted by the model of tessera/comm.h. */
static uint64_t model(tsr_comm_op_t op, int n, uint64_t bytes)
{
    uint64_t others = (uint64_t)n - 1;
    switch (op) {
    case TSR_COMM_ALLREDUCE: return 2 * others * bytes / (uint64_t)n;
    case TSR_COMM_REDUCE_SCATTER:
    case TSR_COMM_ALLGATHER: return others * bytes;
    case TSR_COMM_BCAST: return n > 1 ? bytes : 0;
    case TSR_COMM_SEND: return bytes;
    default: return 0;
    }
}

typedef struct expect {
    uint64_t bytes[TSR_COMM_OP_COUNT], calls[TSR_COMM_OP_COUNT];
} expect_t;

static void expect_op(expect_t *e, tsr_comm_op_t op, int n, size_t count, tsr_dtype_t t)
{
    e->bytes[op] += model(op, n, (uint64_t)count * tsr_dtype_size(t));
    e->calls[op]++;
}

/* ---------------------------------------------------------------------------------------- */

/* One collective, blocking or not: run it on c and check every rank's result. */
static void allreduce_case(tsr_comm_t c, tsr_device_t dev, tsr_dtype_t t, tsr_reduce_op_t op, int in_place,
                           uint64_t salt, const char *label, expect_t *e)
{
    enum { COUNT = 37 };
    static const char *const ops[] = {"SUM", "MAX", "MIN"};
    const int n = tsr_comm_size(c), me = tsr_comm_rank(c);
    char what[200];
    double want[COUNT];
    snprintf(what, sizeof what, "%s: allreduce %s %s %s", label, tsr_dtype_name(t), ops[op],
             in_place ? "in place" : "out of place");
    buf_t s = mkbuf(dev, t, COUNT), r = mkbuf(dev, t, COUNT);
    fill(&s, 0, COUNT, me, 0, salt);
    fill(&r, 0, in_place ? COUNT : 0, me, 0, salt);
    push(&s);
    push(&r);
    tsr_status_t st = tsr_comm_allreduce(c, in_place ? TSR_IN_PLACE : s.d, r.d, COUNT, t, op);
    pull(&r);
    pull(&s);
    for (size_t k = 0; k < COUNT; k++)
        want[k] = (double)reduced(t, op, n, k, salt);
    int good = report(st, what) && same(&r, 0, COUNT, want, what);
    if (!in_place) {
        for (size_t k = 0; k < COUNT; k++)
            want[k] = (double)gen(t, me, k, salt);
        good = same(&s, 0, COUNT, want, "send buffer unchanged") && good;
    }
    ok(good, "%s", what);
    expect_op(e, TSR_COMM_ALLREDUCE, n, COUNT, t);
    rmbuf(&s);
    rmbuf(&r);
}

/* Post to the right, receive from the left, blocking, in an order that cannot deadlock for
 * either backend (even ranks send first). One rank sends to itself non-blocking (MPI only). */
static void ring(tsr_comm_t c, const void *sbuf, size_t scount, void *rbuf, size_t rcount, tsr_dtype_t t,
                 tsr_status_t *st_send, tsr_status_t *st_recv)
{
    int n = tsr_comm_size(c), me = tsr_comm_rank(c);
    int right = (me + 1) % n, left = (me + n - 1) % n;
    if (n == 1) {
        tsr_request_t req = NULL;
        *st_send = tsr_comm_isend(c, sbuf, scount, t, right, 5, &req);
        *st_recv = tsr_comm_recv(c, rbuf, rcount, t, left, 5);
        tsr_status_t st = tsr_request_wait(&req);
        if (*st_send == TSR_OK)
            *st_send = st;
    } else if (me % 2 == 0) {
        *st_send = tsr_comm_send(c, sbuf, scount, t, right, 5);
        *st_recv = tsr_comm_recv(c, rbuf, rcount, t, left, 5);
    } else {
        *st_recv = tsr_comm_recv(c, rbuf, rcount, t, left, 5);
        *st_send = tsr_comm_send(c, sbuf, scount, t, right, 5);
    }
}

/* Every operation, blocking and non-blocking, on buffers of dev. nccl: the communicator is
 * on NCCL (no point-to-point on one rank, no length check). */
static void battery(tsr_comm_t c, tsr_device_t dev, const char *label, int nccl)
{
    const int n = tsr_comm_size(c), me = tsr_comm_rank(c);
    const int left = (me + n - 1) % n, right = (me + 1) % n;
    char what[200];
    uint64_t salt = 1000;
    expect_t e;
    memset(&e, 0, sizeof e);
    tsr_comm_reset_counters(c);

    /* allreduce: each type once, the reductions whose semantics differ by type. */
    allreduce_case(c, dev, TSR_DTYPE_F32, TSR_REDUCE_SUM, 0, ++salt, label, &e);
    allreduce_case(c, dev, TSR_DTYPE_F64, TSR_REDUCE_MIN, 1, ++salt, label, &e);
    allreduce_case(c, dev, TSR_DTYPE_I32, TSR_REDUCE_MAX, 1, ++salt, label, &e);
    allreduce_case(c, dev, TSR_DTYPE_I64, TSR_REDUCE_SUM, 0, ++salt, label, &e);
    allreduce_case(c, dev, TSR_DTYPE_U8, TSR_REDUCE_SUM, 0, ++salt, label, &e); /* wraps modulo 256 */
    allreduce_case(c, dev, TSR_DTYPE_U8, TSR_REDUCE_MAX, 1, ++salt, label, &e); /* unsigned: 200 > 100 */
    allreduce_case(c, dev, TSR_DTYPE_BF16, TSR_REDUCE_SUM, 0, ++salt, label, &e);
    allreduce_case(c, dev, TSR_DTYPE_BF16, TSR_REDUCE_MAX, 1, ++salt, label, &e);

    /* reduce_scatter F64 SUM: my block of the sum. */
    {
        enum { RC = 5 };
        double want[RC];
        buf_t s = mkbuf(dev, TSR_DTYPE_F64, (size_t)n * RC), r = mkbuf(dev, TSR_DTYPE_F64, RC);
        salt++;
        fill(&s, 0, (size_t)n * RC, me, 0, salt);
        fill(&r, 0, 0, me, 0, salt);
        push(&s);
        push(&r);
        snprintf(what, sizeof what, "%s: reduce_scatter F64 SUM", label);
        tsr_status_t st = tsr_comm_reduce_scatter(c, s.d, r.d, RC, TSR_DTYPE_F64, TSR_REDUCE_SUM);
        pull(&r);
        for (size_t k = 0; k < RC; k++)
            want[k] = (double)reduced(TSR_DTYPE_F64, TSR_REDUCE_SUM, n, (size_t)me * RC + k, salt);
        ok(report(st, what) && same(&r, 0, RC, want, what), "%s", what);
        expect_op(&e, TSR_COMM_REDUCE_SCATTER, n, RC, TSR_DTYPE_F64);
        rmbuf(&s);
        rmbuf(&r);
    }

    /* allgather: I64 out of place, BF16 in place. */
    for (int in_place = 0; in_place < 2; in_place++) {
        enum { SC = 4 };
        tsr_dtype_t t = in_place ? TSR_DTYPE_BF16 : TSR_DTYPE_I64;
        buf_t s = mkbuf(dev, t, SC), r = mkbuf(dev, t, (size_t)n * SC);
        double *want = calloc((size_t)n * SC, sizeof *want);
        salt++;
        fill(&s, 0, SC, me, 0, salt);
        fill(&r, in_place ? (size_t)me * SC : 0, in_place ? SC : 0, me, 0, salt);
        push(&s);
        push(&r);
        snprintf(what, sizeof what, "%s: allgather %s %s", label, tsr_dtype_name(t),
                 in_place ? "in place" : "out of place");
        tsr_status_t st = tsr_comm_allgather(c, in_place ? TSR_IN_PLACE : s.d, r.d, SC, t);
        pull(&r);
        for (int q = 0; q < n; q++)
            for (size_t k = 0; k < SC; k++)
                want[(size_t)q * SC + k] = (double)gen(t, q, k, salt);
        ok(report(st, what) && same(&r, 0, (size_t)n * SC, want, what), "%s", what);
        expect_op(&e, TSR_COMM_ALLGATHER, n, SC, t);
        free(want);
        rmbuf(&s);
        rmbuf(&r);
    }

    /* bcast: F32 from the last rank, BF16 from rank 0. */
    for (int k = 0; k < 2; k++) {
        enum { BC = 11 };
        tsr_dtype_t t = k ? TSR_DTYPE_BF16 : TSR_DTYPE_F32;
        int root = k ? 0 : n - 1;
        double want[BC];
        buf_t b = mkbuf(dev, t, BC);
        salt++;
        fill(&b, 0, me == root ? BC : 0, me, 0, salt);
        push(&b);
        snprintf(what, sizeof what, "%s: bcast %s from rank %d", label, tsr_dtype_name(t), root);
        tsr_status_t st = tsr_comm_bcast(c, b.d, BC, t, root);
        pull(&b);
        for (size_t i = 0; i < BC; i++)
            want[i] = (double)gen(t, root, i, salt);
        ok(report(st, what) && same(&b, 0, BC, want, what), "%s", what);
        expect_op(&e, TSR_COMM_BCAST, n, BC, t);
        rmbuf(&b);
    }

    /* send/recv around the ring (NCCL: not on one rank, which would be a send to oneself). */
    if (!nccl || n > 1) {
        enum { PC = 9 };
        double want[PC];
        buf_t s = mkbuf(dev, TSR_DTYPE_BF16, PC), r = mkbuf(dev, TSR_DTYPE_BF16, PC);
        tsr_status_t st_send, st_recv;
        salt++;
        fill(&s, 0, PC, me, 0, salt);
        fill(&r, 0, 0, me, 0, salt);
        push(&s);
        push(&r);
        snprintf(what, sizeof what, "%s: send/recv BF16 around the ring", label);
        ring(c, s.d, PC, r.d, PC, TSR_DTYPE_BF16, &st_send, &st_recv);
        pull(&r);
        for (size_t i = 0; i < PC; i++)
            want[i] = (double)gen(TSR_DTYPE_BF16, left, i, salt);
        ok(report(st_send, what) && report(st_recv, what) && same(&r, 0, PC, want, what), "%s", what);
        expect_op(&e, TSR_COMM_SEND, n, PC, TSR_DTYPE_BF16);
        expect_op(&e, TSR_COMM_RECV, n, PC, TSR_DTYPE_BF16);
        if (!nccl) {
            /* A message shorter than the receive fails (and is not counted). Staged, nothing
             * reaches the device buffer; host buffers get what MPI wrote. */
            int staged = tsr_device_kind(dev) == TSR_DEVICE_CUDA && !tsr_comm_gpu_aware(c);
            fill(&r, 0, 0, me, 0, salt);
            push(&r);
            ring(c, s.d, 3, r.d, PC, TSR_DTYPE_BF16, &st_send, &st_recv);
            pull(&r);
            for (size_t i = 0; i < PC; i++)
                want[i] = -77;
            ok(st_send == TSR_OK && st_recv != TSR_OK && (!staged || same(&r, 0, PC, want, "untouched buffer")),
               "%s: a receive of 9 that gets 3 fails%s", label, staged ? " and leaves the buffer as it was" : "");
            tsr_clear_error();
            expect_op(&e, TSR_COMM_SEND, n, 3, TSR_DTYPE_BF16);
        } else {
            skip(1, "NCCL does not check message lengths");
        }
        rmbuf(&s);
        rmbuf(&r);
    } else {
        skip(2, "NCCL on one rank: a send to oneself never completes");
    }

    /* Non-blocking: four collectives in flight at once, then one request polled. */
    {
        enum { K = 6 };
        buf_t ar = mkbuf(dev, TSR_DTYPE_F32, K), rs_s = mkbuf(dev, TSR_DTYPE_I32, (size_t)n * K);
        buf_t rs_r = mkbuf(dev, TSR_DTYPE_I32, K), ag_s = mkbuf(dev, TSR_DTYPE_U8, K);
        buf_t ag_r = mkbuf(dev, TSR_DTYPE_U8, (size_t)n * K), bc = mkbuf(dev, TSR_DTYPE_I64, K);
        double *want = calloc((size_t)n * K, sizeof *want);
        uint64_t s0 = ++salt;
        salt += 4;
        fill(&ar, 0, K, me, 0, s0);
        fill(&rs_s, 0, (size_t)n * K, me, 0, s0 + 1);
        fill(&rs_r, 0, 0, me, 0, s0);
        fill(&ag_s, 0, K, me, 0, s0 + 2);
        fill(&ag_r, 0, 0, me, 0, s0);
        fill(&bc, 0, me == 0 ? K : 0, me, 0, s0 + 3);
        push(&ar);
        push(&rs_s);
        push(&rs_r);
        push(&ag_s);
        push(&ag_r);
        push(&bc);
        tsr_request_t reqs[4] = {NULL, NULL, NULL, NULL};
        int posted = report(tsr_comm_iallreduce(c, TSR_IN_PLACE, ar.d, K, TSR_DTYPE_F32, TSR_REDUCE_SUM, &reqs[0]),
                            "iallreduce") &
                     report(tsr_comm_ireduce_scatter(c, rs_s.d, rs_r.d, K, TSR_DTYPE_I32, TSR_REDUCE_MIN, &reqs[1]),
                            "ireduce_scatter") &
                     report(tsr_comm_iallgather(c, ag_s.d, ag_r.d, K, TSR_DTYPE_U8, &reqs[2]), "iallgather") &
                     report(tsr_comm_ibcast(c, bc.d, K, TSR_DTYPE_I64, 0, &reqs[3]), "ibcast");
        tsr_status_t st = tsr_request_waitall(4, reqs);
        ok(posted && report(st, "waitall") && !reqs[0] && !reqs[1] && !reqs[2] && !reqs[3],
           "%s: four non-blocking collectives posted together complete in one waitall", label);
        pull(&ar);
        pull(&rs_r);
        pull(&ag_r);
        pull(&bc);
        for (size_t k = 0; k < K; k++)
            want[k] = (double)reduced(TSR_DTYPE_F32, TSR_REDUCE_SUM, n, k, s0);
        ok(same(&ar, 0, K, want, "iallreduce"), "%s: iallreduce F32 SUM in place", label);
        for (size_t k = 0; k < K; k++)
            want[k] = (double)reduced(TSR_DTYPE_I32, TSR_REDUCE_MIN, n, (size_t)me * K + k, s0 + 1);
        ok(same(&rs_r, 0, K, want, "ireduce_scatter"), "%s: ireduce_scatter I32 MIN", label);
        for (int q = 0; q < n; q++)
            for (size_t k = 0; k < K; k++)
                want[(size_t)q * K + k] = (double)gen(TSR_DTYPE_U8, q, k, s0 + 2);
        ok(same(&ag_r, 0, (size_t)n * K, want, "iallgather"), "%s: iallgather U8", label);
        for (size_t k = 0; k < K; k++)
            want[k] = (double)gen(TSR_DTYPE_I64, 0, k, s0 + 3);
        ok(same(&bc, 0, K, want, "ibcast"), "%s: ibcast I64 from rank 0", label);
        expect_op(&e, TSR_COMM_ALLREDUCE, n, K, TSR_DTYPE_F32);
        expect_op(&e, TSR_COMM_REDUCE_SCATTER, n, K, TSR_DTYPE_I32);
        expect_op(&e, TSR_COMM_ALLGATHER, n, K, TSR_DTYPE_U8);
        expect_op(&e, TSR_COMM_BCAST, n, K, TSR_DTYPE_I64);

        /* Polled with tsr_request_test (bounded, so a bug fails instead of hanging). */
        fill(&ar, 0, K, me, 0, s0);
        push(&ar);
        tsr_request_t req = NULL;
        int done = 0;
        st = tsr_comm_iallreduce(c, TSR_IN_PLACE, ar.d, K, TSR_DTYPE_F32, TSR_REDUCE_MAX, &req);
        double t0 = MPI_Wtime();
        while (st == TSR_OK && !done && MPI_Wtime() - t0 < 60)
            st = tsr_request_test(&req, &done);
        pull(&ar);
        for (size_t k = 0; k < K; k++)
            want[k] = (double)reduced(TSR_DTYPE_F32, TSR_REDUCE_MAX, n, k, s0);
        ok(report(st, "polled iallreduce") && done && !req && same(&ar, 0, K, want, "polled iallreduce"),
           "%s: iallreduce MAX polled with tsr_request_test to completion", label);
        tsr_request_wait(&req);
        expect_op(&e, TSR_COMM_ALLREDUCE, n, K, TSR_DTYPE_F32);
        free(want);
        rmbuf(&ar);
        rmbuf(&rs_s);
        rmbuf(&rs_r);
        rmbuf(&ag_s);
        rmbuf(&ag_r);
        rmbuf(&bc);
    }

    /* Non-blocking point-to-point. MPI: receives posted before sends, as a pipeline does,
     * completed in the reverse order. NCCL runs each in turn, so there even ranks send first. */
    if (!nccl || n > 1) {
        enum { PC = 7 };
        double want[PC];
        buf_t s = mkbuf(dev, TSR_DTYPE_I32, PC), r = mkbuf(dev, TSR_DTYPE_I32, PC);
        salt++;
        fill(&s, 0, PC, me, 0, salt);
        fill(&r, 0, 0, me, 0, salt);
        push(&s);
        push(&r);
        tsr_request_t rq[2] = {NULL, NULL};
        int send_first = nccl && me % 2 == 0;
        tsr_status_t st1 = send_first ? tsr_comm_isend(c, s.d, PC, TSR_DTYPE_I32, right, 8, &rq[1])
                                      : tsr_comm_irecv(c, r.d, PC, TSR_DTYPE_I32, left, 8, &rq[0]);
        tsr_status_t st2 = send_first ? tsr_comm_irecv(c, r.d, PC, TSR_DTYPE_I32, left, 8, &rq[0])
                                      : tsr_comm_isend(c, s.d, PC, TSR_DTYPE_I32, right, 8, &rq[1]);
        tsr_status_t st3 = tsr_request_wait(&rq[1]);
        tsr_status_t st4 = tsr_request_wait(&rq[0]);
        pull(&r);
        for (size_t i = 0; i < PC; i++)
            want[i] = (double)gen(TSR_DTYPE_I32, left, i, salt);
        ok(report(st1, "isend/irecv") && report(st2, "isend/irecv") && report(st3, "wait") &&
               report(st4, "wait") && same(&r, 0, PC, want, "irecv"),
           "%s: isend/irecv I32 around the ring", label);
        expect_op(&e, TSR_COMM_SEND, n, PC, TSR_DTYPE_I32);
        expect_op(&e, TSR_COMM_RECV, n, PC, TSR_DTYPE_I32);
        rmbuf(&s);
        rmbuf(&r);
    } else {
        skip(1, "NCCL on one rank: a send to oneself never completes");
    }

    /* Work queued on the device before a call is what the call communicates. */
    {
        enum { FC = 1000 };
        double want[FC];
        buf_t s = mkbuf(dev, TSR_DTYPE_F32, FC), r = mkbuf(dev, TSR_DTYPE_F32, FC);
        tsr_status_t st = tsr_device_fill_f32(dev, s.d, 0.25f * (float)(me + 1), FC);
        if (st == TSR_OK)
            st = tsr_comm_allreduce(c, s.d, r.d, FC, TSR_DTYPE_F32, TSR_REDUCE_SUM);
        pull(&r);
        for (size_t i = 0; i < FC; i++)
            want[i] = 0.125 * n * (n + 1);
        ok(report(st, "fill then allreduce") && same(&r, 0, FC, want, "fill then allreduce"),
           "%s: an allreduce reads what a fill queued just before it wrote", label);
        expect_op(&e, TSR_COMM_ALLREDUCE, n, FC, TSR_DTYPE_F32);
        rmbuf(&s);
        rmbuf(&r);
    }

    /* The counters, exactly as for host buffers. */
    {
        tsr_comm_counters_t got;
        tsr_comm_counters(c, &got);
        int good = 1;
        uint64_t total = 0;
        for (int o = 0; o < TSR_COMM_OP_COUNT; o++) {
            total += e.bytes[o];
            if (got.bytes[o] != e.bytes[o] || got.calls[o] != e.calls[o]) {
                good = 0;
                fprintf(stderr, "#   [rank %d] %s: %s counted %llu bytes in %llu calls, expected %llu in %llu\n",
                        tap_rank(), label, tsr_comm_op_name((tsr_comm_op_t)o), (unsigned long long)got.bytes[o],
                        (unsigned long long)got.calls[o], (unsigned long long)e.bytes[o],
                        (unsigned long long)e.calls[o]);
            }
        }
        ok(good && got.bytes_sent == total, "%s: byte and call counters follow the bus-bytes model", label);
    }
}

/* A bf16 sum of arbitrary values: every partial sum rounded to nearest in bf16's 8
 * significant bits errs by at most 2^-8 of itself, so the result is within (n-1) * 2^-8 of
 * the sum of magnitudes. Truncating instead of rounding would double that. */
static void bf16_rounding(tsr_comm_t c, tsr_device_t dev, const char *label)
{
    enum { COUNT = 64 };
    const int n = tsr_comm_size(c), me = tsr_comm_rank(c);
    buf_t b = mkbuf(dev, TSR_DTYPE_BF16, COUNT);
    for (size_t i = 0; i < COUNT; i++)
        ((uint16_t *)b.h)[i] = to_bf16(4.0f * tsr_rng_uniform(seed + 77, (uint64_t)me, i) - 2.0f);
    push(&b);
    tsr_status_t st = tsr_comm_allreduce(c, TSR_IN_PLACE, b.d, COUNT, TSR_DTYPE_BF16, TSR_REDUCE_SUM);
    pull(&b);
    double worst = 0;
    for (size_t i = 0; i < COUNT; i++) {
        double sum = 0, mag = 0;
        for (int r = 0; r < n; r++) {
            double x = from_bf16(to_bf16(4.0f * tsr_rng_uniform(seed + 77, (uint64_t)r, i) - 2.0f));
            sum += x;
            mag += fabs(x);
        }
        double err = fabs(from_bf16(((uint16_t *)b.h)[i]) - sum) / (mag > 0 ? mag : 1);
        if (!(err <= worst))
            worst = err;
    }
    double tol = n > 1 ? (n - 1) / 256.0 : 0;
    if (!(worst <= tol))
        fprintf(stderr, "#   [rank %d] %s: bf16 sum error %.3g of the magnitudes > %.3g\n", tap_rank(), label, worst,
                tol);
    ok(report(st, "bf16 sum") && worst <= tol, "%s: allreduce BF16 SUM of arbitrary values within %d rounding%s",
       label, n - 1, n == 2 ? "" : "s");
    rmbuf(&b);
}

static uint64_t comm_host_bytes(void)
{
    tsr_mem_stats_t s;
    tsr_mem_stats(TSR_DEVICE_CPU, &s);
    return s.current[TSR_MEM_COMM];
}

/* ---------------------------------------------------------------------------------------- */
/* The CPU device: everything as with host buffers, on every build. */

static void cpu_part(tsr_device_t cpu)
{
    const int n = tap_size(), w = tap_rank();
    tsr_comm_t c = NULL;
    tsr_status_t st = tsr_comm_create(MPI_COMM_WORLD, &c);
    if (!report(st, "tsr_comm_create"))
        MPI_Abort(MPI_COMM_WORLD, 2);
    ok(tsr_comm_device(c) == NULL, "a new communicator works on host memory (tsr_comm_device is NULL)");
    setenv("TSR_GPU_AWARE_MPI", "yes", 1); /* read for GPU buffers alone */
    st = tsr_comm_set_device(c, cpu);
    unsetenv("TSR_GPU_AWARE_MPI");
    ok(report(st, "set_device(cpu)") && tsr_comm_device(c) == cpu && tsr_comm_backend(c) == TSR_COMM_BACKEND_MPI &&
           !tsr_comm_gpu_aware(c),
       "tsr_comm_set_device(CPU): TSR_OK, the device recorded, backend MPI, not GPU-aware (TSR_GPU_AWARE_MPI unread)");

    uint64_t before = comm_host_bytes();
    battery(c, cpu, "CPU device", 0);
    bf16_rounding(c, cpu, "CPU device");
    is_int(comm_host_bytes(), before, "CPU device: no staging memory is allocated (host TSR_MEM_COMM unchanged)");

    st = tsr_comm_set_backend(c, TSR_COMM_BACKEND_NCCL);
    is_int(st, TSR_HAVE_NCCL ? TSR_ERR_INVALID_ARG : TSR_ERR_NOT_SUPPORTED,
           "set_backend(NCCL) on a CPU device: %s", TSR_HAVE_NCCL ? "TSR_ERR_INVALID_ARG" : "not built");
    is_int(tsr_comm_backend(c), TSR_COMM_BACKEND_MPI, "the backend stays MPI after the refusal");
    tsr_clear_error();

    /* A request in flight on rank 0 alone makes set_device fail on every rank. */
    {
        int32_t x = 5, y = 0;
        tsr_request_t rr = NULL, sr = NULL;
        if (w == 0)
            tsr_comm_irecv(c, &y, 1, TSR_DTYPE_I32, 0, 31, &rr);
        st = tsr_comm_set_device(c, NULL);
        is_int(st, TSR_ERR_INVALID_ARG, "set_device while rank 0 has a request in flight fails on every rank");
        ok(strstr(tsr_last_error(), "rank 0") != NULL, "the message names rank 0 (\"%s\")", tsr_last_error());
        tsr_clear_error();
        if (w == 0) {
            tsr_comm_isend(c, &x, 1, TSR_DTYPE_I32, 0, 31, &sr);
            tsr_request_wait(&sr);
            tsr_request_wait(&rr);
        }
        ok(tsr_comm_device(c) == cpu, "the refused set_device left the device as it was");
        st = tsr_comm_set_device(c, NULL);
        ok(report(st, "set_device(NULL)") && tsr_comm_device(c) == NULL, "set_device(NULL) goes back to host memory");
    }
    tsr_comm_destroy(&c);

    /* The grid: every axis on the CPU device uses MPI, whatever is preferred. */
    {
        tsr_layout_t layout = TSR_LAYOUT_INIT;
        layout.tp_cols = n;
        tsr_grid_t g = NULL;
        st = tsr_grid_create(MPI_COMM_WORLD, &layout, &g);
        if (!report(st, "tsr_grid_create"))
            MPI_Abort(MPI_COMM_WORLD, 2);
        st = tsr_grid_set_device(g, cpu, TSR_COMM_BACKEND_NCCL);
        int all_mpi = 1, all_cpu = 1;
        for (int a = 0; a < TSR_AXIS_COUNT; a++) {
            all_mpi = all_mpi && tsr_comm_backend(tsr_grid_comm(g, (tsr_axis_t)a)) == TSR_COMM_BACKEND_MPI;
            all_cpu = all_cpu && tsr_comm_device(tsr_grid_comm(g, (tsr_axis_t)a)) == cpu;
        }
        ok(report(st, "grid_set_device(cpu)") && all_mpi && all_cpu,
           "tsr_grid_set_device(CPU, prefer NCCL): every axis on the CPU device, with MPI");
        int32_t one = w + 1, total = 0;
        st = tsr_comm_allreduce(tsr_grid_comm(g, TSR_AXIS_TP), &one, &total, 1, TSR_DTYPE_I32, TSR_REDUCE_SUM);
        ok(report(st, "tp allreduce") && total == n * (n + 1) / 2, "the grid's tp axis still reduces host buffers");
        st = tsr_grid_set_device(g, cpu, (tsr_comm_backend_t)7);
        is_int(st, TSR_ERR_INVALID_ARG, "tsr_grid_set_device with backend 7 is TSR_ERR_INVALID_ARG");
        tsr_clear_error();
        tsr_grid_destroy(&g);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* A GPU. */

static int nccl_wanted(tsr_status_t st)
{
    return TSR_HAVE_NCCL ? st == TSR_OK : st == TSR_ERR_NOT_SUPPORTED;
}

/* Send and recv of device buffers on a GPU-aware MPI, as the MPI library answers: the
 * battery, and a send of what a kernel queued just before it wrote (the stream is
 * synchronized before MPI reads the buffer). TSR_TEST_GPU_AWARE=0|1, where set, is what the
 * test expects the MPI library to say (.ci/gpu-check sets it for the MPI it runs). */
static void gpu_aware_part(tsr_device_t gpu)
{
    const int n = tap_size(), me = tap_rank();
    tsr_comm_t c = NULL;
    if (!report(tsr_comm_create(MPI_COMM_WORLD, &c), "tsr_comm_create"))
        MPI_Abort(MPI_COMM_WORLD, 2);
    setenv("TSR_GPU_AWARE_MPI", "yes", 1);
    tsr_status_t st = tsr_comm_set_device(c, gpu);
    ok(st == TSR_ERR_INVALID_ARG && strstr(tsr_last_error(), "TSR_GPU_AWARE_MPI=yes: expected 1") &&
           tsr_comm_device(c) == NULL,
       "TSR_GPU_AWARE_MPI=yes: set_device(GPU) fails, saying what the variable takes, and changes nothing (\"%s\")",
       tsr_last_error());
    tsr_clear_error();
    unsetenv("TSR_GPU_AWARE_MPI");
    st = tsr_comm_set_device(c, gpu);
    const int aware = tsr_comm_gpu_aware(c);
    diag("the MPI library says it is %sGPU-aware", aware ? "" : "not ");
    const char *want = getenv("TSR_TEST_GPU_AWARE");
    if (want && *want)
        ok(report(st, "set_device(gpu)") && aware == (want[0] == '1'),
           "TSR_GPU_AWARE_MPI unset: tsr_comm_gpu_aware is %d, as TSR_TEST_GPU_AWARE expects", aware);
    else
        skip(1, "TSR_TEST_GPU_AWARE not set: what this MPI says is not checked");
    if (st == TSR_OK && aware) {
        battery(c, gpu, "GPU, GPU-aware MPI", 0);
        enum { FC = 1 << 22 }; /* 16 MiB: the fill is still running when a send that did not wait posts */
        buf_t s = mkbuf(gpu, TSR_DTYPE_F32, FC), r = mkbuf(gpu, TSR_DTYPE_F32, FC);
        fill(&r, 0, 0, me, 0, 1);
        push(&r);
        tsr_request_t rq = NULL;
        tsr_status_t st1 = tsr_comm_irecv(c, r.d, FC, TSR_DTYPE_F32, (me + n - 1) % n, 3, &rq);
        tsr_status_t st2 = tsr_device_fill_f32(gpu, s.d, (float)(me + 1), FC);
        st2 = st2 ? st2 : tsr_comm_send(c, s.d, FC, TSR_DTYPE_F32, (me + 1) % n, 3);
        tsr_status_t st3 = tsr_request_wait(&rq);
        pull(&r);
        double *w = malloc(FC * sizeof *w);
        for (size_t i = 0; i < FC; i++)
            w[i] = (me + n - 1) % n + 1;
        ok(report(st1, "irecv") && report(st2, "fill, send") && report(st3, "wait") && same(&r, 0, FC, w, "fill, send"),
           "GPU-aware MPI: a send carries what a fill queued just before it wrote (16 MiB)");
        free(w);
        rmbuf(&s);
        rmbuf(&r);
    } else {
        skip(1, "this MPI is not GPU-aware: send and recv of GPU buffers are staged");
    }
    tsr_comm_destroy(&c);
}

static void gpu_part(tsr_device_t gpu, int ndev)
{
    const int n = tap_size();
    const int shared = ndev < n; /* one node: rank r uses GPU r % ndev */
    tsr_status_t st;

    /* The MPI backend, staged through host memory (TSR_GPU_AWARE_MPI=0, whatever the MPI);
     * all ranks may share one GPU. */
    {
        tsr_comm_t c = NULL;
        if (!report(tsr_comm_create(MPI_COMM_WORLD, &c), "tsr_comm_create"))
            MPI_Abort(MPI_COMM_WORLD, 2);
        uint64_t before = comm_host_bytes();
        setenv("TSR_GPU_AWARE_MPI", "0", 1);
        st = tsr_comm_set_device(c, gpu);
        unsetenv("TSR_GPU_AWARE_MPI");
        ok(report(st, "set_device(gpu)") && tsr_comm_device(c) == gpu && tsr_comm_backend(c) == TSR_COMM_BACKEND_MPI &&
               !tsr_comm_gpu_aware(c),
           "tsr_comm_set_device(GPU) with TSR_GPU_AWARE_MPI=0: TSR_OK, backend MPI, staged");
        battery(c, gpu, "GPU, staged MPI", 0);
        bf16_rounding(c, gpu, "GPU, staged MPI");
        ok(comm_host_bytes() > before, "staging buffers are counted as host TSR_MEM_COMM memory (%llu bytes)",
           (unsigned long long)(comm_host_bytes() - before));

        /* NCCL over the whole job: refused cleanly where ranks share a GPU. */
        st = tsr_comm_set_backend(c, TSR_COMM_BACKEND_NCCL);
        if (!TSR_HAVE_NCCL) {
            is_int(st, TSR_ERR_NOT_SUPPORTED, "set_backend(NCCL) without NCCL in the build: TSR_ERR_NOT_SUPPORTED");
            skip(2, "no NCCL in this build");
        } else if (shared) {
            is_int(st, TSR_ERR_NOT_SUPPORTED, "set_backend(NCCL) with %d ranks on %d GPU(s): TSR_ERR_NOT_SUPPORTED",
                   n, ndev);
            ok(strstr(tsr_last_error(), "NCCL cannot put two ranks on one GPU (ranks 0 and ") &&
                   strstr(tsr_last_error(), "use the MPI backend"),
               "the refusal names the ranks and the way out (\"%s\")", tsr_last_error());
            is_int(tsr_comm_backend(c), TSR_COMM_BACKEND_MPI, "after the refusal the backend is still MPI");
        } else {
            is_int(st, TSR_OK, "set_backend(NCCL) with one GPU per rank: TSR_OK");
            is_int(tsr_comm_backend(c), TSR_COMM_BACKEND_NCCL, "the backend is NCCL");
            if (st == TSR_OK)
                battery(c, gpu, "GPU, NCCL over all ranks", 1);
            else
                skip(1, "NCCL setup failed");
        }
        tsr_clear_error();
        /* The communicator still works, staged, after whatever happened. */
        st = tsr_comm_set_backend(c, TSR_COMM_BACKEND_MPI);
        {
            int32_t *d = NULL, h = tap_rank() + 1, total = 0;
            tsr_status_t s2 = tsr_device_alloc(gpu, TSR_MEM_WORKSPACE, sizeof h, (void **)&d);
            s2 = s2 ? s2 : tsr_device_copy(gpu, d, &h, sizeof h, TSR_COPY_HOST_TO_DEVICE);
            s2 = s2 ? s2 : tsr_comm_allreduce(c, TSR_IN_PLACE, d, 1, TSR_DTYPE_I32, TSR_REDUCE_SUM);
            s2 = s2 ? s2 : tsr_device_copy(gpu, &total, d, sizeof h, TSR_COPY_DEVICE_TO_HOST);
            tsr_device_free(gpu, (void **)&d);
            ok(report(st, "set_backend(MPI)") && report(s2, "allreduce") && total == n * (n + 1) / 2,
               "back on MPI, a staged allreduce gives %d", n * (n + 1) / 2);
        }
        tsr_comm_destroy(&c);
        is_int(comm_host_bytes(), before, "tsr_comm_destroy frees the staging buffers");
    }

    gpu_aware_part(gpu);

    /* NCCL on a communicator of one rank per process: works even with ranks sharing a GPU. */
    {
        tsr_comm_t c = NULL;
        if (!report(tsr_comm_create(MPI_COMM_SELF, &c), "tsr_comm_create(self)"))
            MPI_Abort(MPI_COMM_WORLD, 2);
        st = tsr_comm_set_backend(c, TSR_COMM_BACKEND_NCCL);
        is_int(st, TSR_HAVE_NCCL ? TSR_ERR_INVALID_ARG : TSR_ERR_NOT_SUPPORTED,
               "set_backend(NCCL) before set_device: %s", TSR_HAVE_NCCL ? "TSR_ERR_INVALID_ARG" : "not built");
        tsr_clear_error();
        st = tsr_comm_set_device(c, gpu);
        st = st ? st : tsr_comm_set_backend(c, TSR_COMM_BACKEND_NCCL);
        ok(nccl_wanted(st), "set_backend(NCCL) on one rank with its GPU: %s",
           TSR_HAVE_NCCL ? "TSR_OK" : "TSR_ERR_NOT_SUPPORTED");
        if (TSR_HAVE_NCCL && st == TSR_OK) {
            is_int(tsr_comm_backend(c), TSR_COMM_BACKEND_NCCL, "the one-rank communicator is on NCCL");
            battery(c, gpu, "GPU, NCCL on one rank", 1);
            bf16_rounding(c, gpu, "GPU, NCCL on one rank");

            void *d = NULL;
            tsr_request_t req = NULL;
            tsr_device_alloc(gpu, TSR_MEM_WORKSPACE, 64, &d);
            is_int(tsr_comm_send(c, d, 4, TSR_DTYPE_F32, 0, 0), TSR_ERR_NOT_SUPPORTED,
                   "NCCL: a send to oneself is TSR_ERR_NOT_SUPPORTED");
            is_int(tsr_comm_irecv(c, d, 4, TSR_DTYPE_F32, MPI_ANY_SOURCE, 0, &req), TSR_ERR_NOT_SUPPORTED,
                   "NCCL: a receive from any source is TSR_ERR_NOT_SUPPORTED");
            ok(req == NULL, "the refused receive gives no request");
            tsr_clear_error();
            tsr_device_free(gpu, &d);

            st = tsr_comm_set_device(c, gpu);
            ok(report(st, "set_device again") && tsr_comm_backend(c) == TSR_COMM_BACKEND_MPI,
               "tsr_comm_set_device releases NCCL: the backend is MPI again");
        } else {
            skip(1, "no NCCL");
        }
        tsr_comm_destroy(&c);
        ok(c == NULL, "a communicator that used NCCL is destroyed");
    }

    /* The grid: NCCL on the axes where every rank has a GPU of its own, staged MPI elsewhere. */
    {
        tsr_layout_t layout = TSR_LAYOUT_INIT;
        layout.tp_cols = n;
        tsr_grid_t g = NULL;
        if (!report(tsr_grid_create(MPI_COMM_WORLD, &layout, &g), "tsr_grid_create"))
            MPI_Abort(MPI_COMM_WORLD, 2);
        st = tsr_grid_set_device(g, gpu, TSR_COMM_BACKEND_NCCL);
        int as_expected = 1;
        for (int a = 0; a < TSR_AXIS_COUNT; a++) {
            tsr_comm_t c = tsr_grid_comm(g, (tsr_axis_t)a);
            int size = tsr_comm_size(c);
            tsr_comm_backend_t want = TSR_HAVE_NCCL && size > 1 && ndev >= size ? TSR_COMM_BACKEND_NCCL
                                                                              : TSR_COMM_BACKEND_MPI;
            if (tsr_comm_backend(c) != want || tsr_comm_device(c) != gpu) {
                as_expected = 0;
                fprintf(stderr, "#   [rank %d] axis %s (%d ranks): backend %d, expected %d\n", tap_rank(),
                        tsr_axis_name((tsr_axis_t)a), size, (int)tsr_comm_backend(c), want);
            }
        }
        ok(report(st, "grid_set_device(gpu, NCCL)") && as_expected,
           "tsr_grid_set_device(GPU, prefer NCCL): NCCL exactly where built, size > 1 and one GPU per rank");
        int32_t *d = NULL, h = tap_rank() + 1, total = 0;
        tsr_status_t s2 = tsr_device_alloc(gpu, TSR_MEM_WORKSPACE, sizeof h, (void **)&d);
        s2 = s2 ? s2 : tsr_device_copy(gpu, d, &h, sizeof h, TSR_COPY_HOST_TO_DEVICE);
        s2 = s2 ? s2 : tsr_comm_allreduce(tsr_grid_comm(g, TSR_AXIS_TP), TSR_IN_PLACE, d, 1, TSR_DTYPE_I32,
                                          TSR_REDUCE_SUM);
        s2 = s2 ? s2 : tsr_device_copy(gpu, &total, d, sizeof h, TSR_COPY_DEVICE_TO_HOST);
        tsr_device_free(gpu, (void **)&d);
        ok(report(s2, "tp allreduce") && total == n * (n + 1) / 2, "the grid's tp axis reduces GPU buffers");
        /* Host buffers on the same axis go through plain MPI, whatever the backend. */
        double hsum = tap_rank() + 0.5;
        int32_t flag = tap_rank() == 0 ? 42 : 0;
        s2 = tsr_comm_allreduce(tsr_grid_comm(g, TSR_AXIS_TP), TSR_IN_PLACE, &hsum, 1, TSR_DTYPE_F64, TSR_REDUCE_SUM);
        s2 = s2 ? s2 : tsr_comm_bcast(tsr_grid_comm(g, TSR_AXIS_TP), &flag, 1, TSR_DTYPE_I32, 0);
        ok(report(s2, "host allreduce and bcast") && hsum == n * (n - 1) / 2.0 + 0.5 * n && flag == 42,
           "host buffers on the GPU axis (%s): allreduce %g, bcast %d",
           tsr_comm_backend(tsr_grid_comm(g, TSR_AXIS_TP)) == TSR_COMM_BACKEND_NCCL ? "NCCL" : "staged MPI", hsum,
           (int)flag);
        st = tsr_grid_set_device(g, gpu, TSR_COMM_BACKEND_MPI);
        int all_mpi = 1;
        for (int a = 0; a < TSR_AXIS_COUNT; a++)
            all_mpi = all_mpi && tsr_comm_backend(tsr_grid_comm(g, (tsr_axis_t)a)) == TSR_COMM_BACKEND_MPI;
        ok(report(st, "grid_set_device(gpu, MPI)") && all_mpi, "tsr_grid_set_device(GPU, prefer MPI): MPI everywhere");
        tsr_grid_destroy(&g);
    }
}

int main(int argc, char **argv)
{
    tap_init(&argc, &argv, "1 2 4");
    seed = tap_seed();
    double t0 = MPI_Wtime();

    is_int(tsr_dtype_size(TSR_DTYPE_BF16), 2, "tsr_dtype_size(BF16) is 2");
    tsr_device_t cpu = NULL;
    if (!report(tsr_device_create(TSR_DEVICE_CPU, 0, &cpu), "tsr_device_create(cpu)"))
        MPI_Abort(MPI_COMM_WORLD, 2);
    cpu_part(cpu);

    int ndev = tsr_device_count(TSR_DEVICE_CUDA);
    if (ndev > 0) {
        tsr_device_t gpu = NULL;
        if (!report(tsr_device_create(TSR_DEVICE_CUDA, tap_rank() % ndev, &gpu), "tsr_device_create(cuda)"))
            MPI_Abort(MPI_COMM_WORLD, 2);
        diag("%d rank(s) on %d GPU(s)", tap_size(), ndev);
        gpu_part(gpu, ndev);
        tsr_device_destroy(&gpu);
    } else {
        skip(1, "no GPU visible: staged MPI and NCCL on device buffers not tested");
    }
    tsr_device_destroy(&cpu);
    if (tap_rank() == 0)
        diag("%.2f s on %d ranks", MPI_Wtime() - t0, tap_size());
    return tap_done();
}
