/*
 * test_comm_nonblocking.c: the non-blocking operations of comm.h and their requests.
 *
 * Each tsr_comm_i* operation must give the result of its blocking twin and count the same
 * bytes, at the time it is posted. Then: several operations in flight completed by one
 * tsr_request_waitall(); tsr_request_test() polled to completion; waits on NULL requests;
 * receives posted before their sends, matched by tag around a ring, as a pipeline does;
 * a receive whose message has the wrong length, which fails when it completes; and an
 * allreduce overlapped with local work.
 *
 * Data is a pure function of (rank, index, data set) drawn with tsr_rng_uniform(), so every
 * rank computes the expected result of every operation.
 */
#include <tessera.h>

#include "tap.h"

#define SEED 0x0b10c4edULL

static const char *const dtype_names[] = {"F32", "F64", "I32", "I64", "U8"};
static const char *const reduce_names[] = {"SUM", "MAX", "MIN"};

static int is_float(tsr_dtype_t t) { return t == TSR_DTYPE_F32 || t == TSR_DTYPE_F64; }

static size_t esize(tsr_dtype_t t) { return t == TSR_DTYPE_F64 || t == TSR_DTYPE_I64 ? 8 : 4; }

/* Element idx of rank r's data in data set salt: gen_f for F32 and F64, gen_i for I32 and I64. */
static double gen_f(tsr_dtype_t t, int r, uint64_t idx, uint64_t salt)
{
    float u = tsr_rng_uniform(SEED + salt, (uint64_t)r, idx);
    if (t == TSR_DTYPE_F32)
        return (double)(2.0f * u - 1.0f);
    return (2.0 * (double)u - 1.0) + (double)tsr_rng_uniform(SEED + salt, (uint64_t)r + 1000, idx) * 1e-9;
}

static int64_t gen_i(tsr_dtype_t t, int r, uint64_t idx, uint64_t salt)
{
    float u = tsr_rng_uniform(SEED + salt, (uint64_t)r, idx);
    if (t == TSR_DTYPE_I32)
        return (int64_t)(u * 2000000.0f) - 1000000;
    float v = tsr_rng_uniform(SEED + salt, (uint64_t)r + 1000, idx);
    return (int64_t)(((double)u - 0.5) * 1099511627776.0) * 4096 + (int64_t)(v * 4096.0f);
}

static double load_f(tsr_dtype_t t, const void *buf, size_t k)
{
    return t == TSR_DTYPE_F32 ? (double)((const float *)buf)[k] : ((const double *)buf)[k];
}

static int64_t load_i(tsr_dtype_t t, const void *buf, size_t k)
{
    return t == TSR_DTYPE_I32 ? ((const int32_t *)buf)[k] : ((const int64_t *)buf)[k];
}

/* buf[k] = rank r's element first + k of data set salt, k < count. */
static void fill(tsr_dtype_t t, void *buf, size_t count, int r, uint64_t first, uint64_t salt)
{
    for (size_t k = 0; k < count; k++) {
        switch (t) {
        case TSR_DTYPE_F32: ((float *)buf)[k] = (float)gen_f(t, r, first + k, salt); break;
        case TSR_DTYPE_F64: ((double *)buf)[k] = gen_f(t, r, first + k, salt); break;
        case TSR_DTYPE_I32: ((int32_t *)buf)[k] = (int32_t)gen_i(t, r, first + k, salt); break;
        default: ((int64_t *)buf)[k] = gen_i(t, r, first + k, salt); break;
        }
    }
}

/* Does buf[k] hold op over ranks 0..N-1 of element first + k (k < count)? Sums of floating
 * types to within rounding, everything else exactly. */
static int check_reduced(tsr_dtype_t t, tsr_reduce_op_t op, int N, const void *buf, size_t count, uint64_t first,
                         uint64_t salt, const char *what)
{
    double max_err = 0, norm = 0;
    size_t bad = 0;
    for (size_t k = 0; k < count; k++) {
        if (is_float(t)) {
            double ref = gen_f(t, 0, first + k, salt);
            for (int r = 1; r < N; r++) {
                double x = gen_f(t, r, first + k, salt);
                ref = op == TSR_REDUCE_SUM ? ref + x : op == TSR_REDUCE_MAX ? (x > ref ? x : ref) : (x < ref ? x : ref);
            }
            double got = load_f(t, buf, k), e = fabs(got - ref);
            if (fabs(ref) > norm)
                norm = fabs(ref);
            if (op == TSR_REDUCE_SUM) {
                if (!(e <= max_err))
                    max_err = e;
            } else if (got != ref) {
                bad++;
            }
        } else {
            int64_t ref = gen_i(t, 0, first + k, salt);
            for (int r = 1; r < N; r++) {
                int64_t x = gen_i(t, r, first + k, salt);
                ref = op == TSR_REDUCE_SUM ? ref + x : op == TSR_REDUCE_MAX ? (x > ref ? x : ref) : (x < ref ? x : ref);
            }
            if (load_i(t, buf, k) != ref)
                bad++;
        }
    }
    if (is_float(t) && op == TSR_REDUCE_SUM) {
        double tol = t == TSR_DTYPE_F32 ? 1e-5 : 1e-12, rel = max_err / (norm > 1e-30 ? norm : 1e-30);
        if (!(rel <= tol))
            fprintf(stderr, "#   [rank %d] %s: relative error %.3g > %.3g\n", tap_rank(), what, rel, tol);
        return rel <= tol;
    }
    if (bad)
        fprintf(stderr, "#   [rank %d] %s: %zu of %zu elements wrong\n", tap_rank(), what, bad, count);
    return bad == 0;
}

/* Are two results of the same reduction alike: bit for bit, or for floating sums to within
 * rounding (a non-blocking algorithm may add in another order)? */
static int same_result(tsr_dtype_t t, tsr_reduce_op_t op, const void *a, const void *b, size_t count)
{
    if (!(is_float(t) && op == TSR_REDUCE_SUM))
        return memcmp(a, b, count * esize(t)) == 0;
    double diff = 0, norm = 0;
    for (size_t k = 0; k < count; k++) {
        double x = load_f(t, a, k), y = load_f(t, b, k);
        if (!(fabs(x - y) <= diff))
            diff = fabs(x - y);
        if (fabs(y) > norm)
            norm = fabs(y);
    }
    return diff / (norm > 1e-30 ? norm : 1e-30) <= (t == TSR_DTYPE_F32 ? 1e-5 : 1e-12);
}

/* Counter deltas since *before, for one operation. */
static void delta(tsr_comm_t c, const tsr_comm_counters_t *before, tsr_comm_op_t op, uint64_t *bytes,
                  uint64_t *calls, uint64_t *sent)
{
    tsr_comm_counters_t now;
    tsr_comm_counters(c, &now);
    *bytes = now.bytes[op] - before->bytes[op];
    *calls = now.calls[op] - before->calls[op];
    *sent = now.bytes_sent - before->bytes_sent;
}

/* Did op alone move by bytes and calls since *before (bytes_sent by bytes too)? */
static int moved(tsr_comm_t c, const tsr_comm_counters_t *before, tsr_comm_op_t op, uint64_t bytes, uint64_t calls,
                 const char *what)
{
    tsr_comm_counters_t now;
    tsr_comm_counters(c, &now);
    int good = now.bytes_sent - before->bytes_sent == bytes;
    for (int o = 0; o < TSR_COMM_OP_COUNT; o++) {
        uint64_t db = now.bytes[o] - before->bytes[o], dc = now.calls[o] - before->calls[o];
        uint64_t eb = o == (int)op ? bytes : 0, ec = o == (int)op ? calls : 0;
        if (db != eb || dc != ec) {
            good = 0;
            fprintf(stderr, "#   [rank %d] %s: %s moved by %llu bytes, %llu calls; expected %llu, %llu\n", tap_rank(),
                    what, tsr_comm_op_name((tsr_comm_op_t)o), (unsigned long long)db, (unsigned long long)dc,
                    (unsigned long long)eb, (unsigned long long)ec);
        }
    }
    if (now.bytes_sent - before->bytes_sent != bytes)
        fprintf(stderr, "#   [rank %d] %s: bytes_sent moved by %llu, expected %llu\n", tap_rank(), what,
                (unsigned long long)(now.bytes_sent - before->bytes_sent), (unsigned long long)bytes);
    return good;
}

static void report_status(tsr_status_t st, const char *what)
{
    if (st != TSR_OK)
        fprintf(stderr, "#   [rank %d] %s: %s (%s)\n", tap_rank(), what, tsr_status_name(st), tsr_last_error());
}

int main(int argc, char **argv)
{
    tap_init(&argc, &argv, "1 2 4");
    const int n = tap_size();
    const uint64_t Nu = (uint64_t)n;
    double t0 = MPI_Wtime();
    char what[160];
    uint64_t salt = 0;
    tsr_comm_counters_t before, after_post;
    tsr_status_t st;

    tsr_comm_t c = NULL;
    st = tsr_comm_create(MPI_COMM_WORLD, &c);
    report_status(st, "tsr_comm_create");
    ok(st == TSR_OK && c != NULL, "tsr_comm_create(MPI_COMM_WORLD) on %d ranks", n);
    if (st != TSR_OK || !c)
        return tap_done(); /* create is collective: every rank stops here alike */
    const int me = tsr_comm_rank(c), right = (me + 1) % n, left = (me + n - 1) % n;

    /* --- A NULL request: wait and waitall return at once. --- */
    {
        tsr_request_t r = NULL;
        st = tsr_request_wait(&r);
        ok(st == TSR_OK && r == NULL, "tsr_request_wait on a NULL request returns TSR_OK at once");
        tsr_request_t rs[3] = {NULL, NULL, NULL};
        st = tsr_request_waitall(3, rs);
        ok(st == TSR_OK, "tsr_request_waitall on 3 NULL requests returns TSR_OK");
    }

    /* --- iallreduce against allreduce. --- */
    {
        enum { COUNT = 29 };
        static const struct {
            tsr_dtype_t t;
            tsr_reduce_op_t op;
            int in_place;
        } cases[] = {{TSR_DTYPE_I64, TSR_REDUCE_SUM, 0},
                     {TSR_DTYPE_F32, TSR_REDUCE_SUM, 1},
                     {TSR_DTYPE_I32, TSR_REDUCE_MAX, 0},
                     {TSR_DTYPE_F64, TSR_REDUCE_MIN, 1}};
        for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
            tsr_dtype_t t = cases[k].t;
            tsr_reduce_op_t op = cases[k].op;
            int in_place = cases[k].in_place;
            snprintf(what, sizeof what, "iallreduce %s %s %s on %d ranks", dtype_names[t], reduce_names[op],
                     in_place ? "in place" : "out of place", n);
            salt++;
            int64_t sbuf[COUNT], nb[COUNT], bl[COUNT]; /* 8-byte slots fit every dtype */
            fill(t, sbuf, COUNT, me, 0, salt);
            if (in_place)
                memcpy(nb, sbuf, sizeof nb);
            else
                memset(nb, 0xab, sizeof nb);
            const uint64_t S = COUNT * esize(t), expect = 2 * (Nu - 1) * S / Nu;

            tsr_request_t req = NULL;
            tsr_comm_counters(c, &before);
            st = tsr_comm_iallreduce(c, in_place ? TSR_IN_PLACE : sbuf, nb, COUNT, t, op, &req);
            report_status(st, what);
            ok(st == TSR_OK && moved(c, &before, TSR_COMM_ALLREDUCE, expect, 1, what),
               "%s: posted; counters add %llu bytes and 1 call at post time", what, (unsigned long long)expect);
            tsr_comm_counters(c, &after_post);
            st = tsr_request_wait(&req);
            report_status(st, what);
            ok(st == TSR_OK && req == NULL, "%s: wait returns TSR_OK and sets the request to NULL", what);
            ok(moved(c, &after_post, TSR_COMM_ALLREDUCE, 0, 0, what), "%s: completion counts nothing more", what);
            ok(check_reduced(t, op, n, nb, COUNT, 0, salt, what), "%s: result", what);

            /* The blocking twin on the same data. */
            if (in_place)
                memcpy(bl, sbuf, sizeof bl);
            tsr_comm_counters(c, &before);
            st = tsr_comm_allreduce(c, in_place ? TSR_IN_PLACE : sbuf, bl, COUNT, t, op);
            report_status(st, what);
            uint64_t db, dc, ds;
            delta(c, &before, TSR_COMM_ALLREDUCE, &db, &dc, &ds);
            ok(st == TSR_OK && same_result(t, op, nb, bl, COUNT) && db == expect && dc == 1 && ds == expect,
               "%s: same result and bytes as allreduce", what);
        }
    }

    /* --- ireduce_scatter, iallgather, ibcast against their blocking twins. --- */
    {
        enum { RC = 6 };
        float *sbuf = malloc((size_t)n * RC * sizeof(float));
        float nb[RC], bl[RC];
        snprintf(what, sizeof what, "ireduce_scatter F32 SUM x %d per rank on %d ranks", RC, n);
        salt++;
        fill(TSR_DTYPE_F32, sbuf, (size_t)n * RC, me, 0, salt);
        tsr_request_t req = NULL;
        const uint64_t expect = (Nu - 1) * RC * 4;
        tsr_comm_counters(c, &before);
        st = tsr_comm_ireduce_scatter(c, sbuf, nb, RC, TSR_DTYPE_F32, TSR_REDUCE_SUM, &req);
        report_status(st, what);
        ok(st == TSR_OK && moved(c, &before, TSR_COMM_REDUCE_SCATTER, expect, 1, what),
           "%s: posted; counters add %llu bytes and 1 call at post time", what, (unsigned long long)expect);
        st = tsr_request_wait(&req);
        report_status(st, what);
        ok(st == TSR_OK && req == NULL &&
               check_reduced(TSR_DTYPE_F32, TSR_REDUCE_SUM, n, nb, RC, (uint64_t)me * RC, salt, what),
           "%s: wait; my block", what);
        tsr_comm_counters(c, &before);
        st = tsr_comm_reduce_scatter(c, sbuf, bl, RC, TSR_DTYPE_F32, TSR_REDUCE_SUM);
        uint64_t db, dc, ds;
        delta(c, &before, TSR_COMM_REDUCE_SCATTER, &db, &dc, &ds);
        ok(st == TSR_OK && same_result(TSR_DTYPE_F32, TSR_REDUCE_SUM, nb, bl, RC) && db == expect && dc == 1,
           "%s: same result and bytes as reduce_scatter", what);
        free(sbuf);
    }
    {
        enum { SC = 5 };
        int32_t sbuf[SC], *nb = malloc((size_t)n * SC * 4), *bl = malloc((size_t)n * SC * 4),
                          *ref = malloc((size_t)n * SC * 4);
        snprintf(what, sizeof what, "iallgather I32 x %d on %d ranks", SC, n);
        salt++;
        fill(TSR_DTYPE_I32, sbuf, SC, me, 0, salt);
        for (int r = 0; r < n; r++)
            fill(TSR_DTYPE_I32, ref + (size_t)r * SC, SC, r, 0, salt);
        memset(nb, 0xab, (size_t)n * SC * 4);
        tsr_request_t req = NULL;
        const uint64_t expect = (Nu - 1) * SC * 4;
        tsr_comm_counters(c, &before);
        st = tsr_comm_iallgather(c, sbuf, nb, SC, TSR_DTYPE_I32, &req);
        report_status(st, what);
        ok(st == TSR_OK && moved(c, &before, TSR_COMM_ALLGATHER, expect, 1, what),
           "%s: posted; counters add %llu bytes and 1 call at post time", what, (unsigned long long)expect);
        st = tsr_request_wait(&req);
        ok(st == TSR_OK && req == NULL && memcmp(nb, ref, (size_t)n * SC * 4) == 0, "%s: wait; result", what);
        tsr_comm_counters(c, &before);
        st = tsr_comm_allgather(c, sbuf, bl, SC, TSR_DTYPE_I32);
        uint64_t db, dc, ds;
        delta(c, &before, TSR_COMM_ALLGATHER, &db, &dc, &ds);
        ok(st == TSR_OK && memcmp(nb, bl, (size_t)n * SC * 4) == 0 && db == expect && dc == 1,
           "%s: same result and bytes as allgather", what);
        free(nb);
        free(bl);
        free(ref);
    }
    {
        enum { BC = 9 };
        const int roots[2] = {0, n - 1};
        for (int k = 0; k < 2; k++) {
            int root = roots[k];
            snprintf(what, sizeof what, "ibcast F64 x %d from root %d on %d ranks", BC, root, n);
            salt++;
            double nb[BC], bl[BC], ref[BC];
            fill(TSR_DTYPE_F64, ref, BC, root, 0, salt);
            if (me == root) {
                memcpy(nb, ref, sizeof nb);
                memcpy(bl, ref, sizeof bl);
            } else {
                memset(nb, 0xab, sizeof nb);
                memset(bl, 0xcd, sizeof bl);
            }
            tsr_request_t req = NULL;
            const uint64_t expect = n > 1 ? BC * 8 : 0;
            tsr_comm_counters(c, &before);
            st = tsr_comm_ibcast(c, nb, BC, TSR_DTYPE_F64, root, &req);
            report_status(st, what);
            ok(st == TSR_OK && moved(c, &before, TSR_COMM_BCAST, expect, 1, what),
               "%s: posted; counters add %llu bytes and 1 call at post time", what, (unsigned long long)expect);
            st = tsr_request_wait(&req);
            ok(st == TSR_OK && req == NULL && memcmp(nb, ref, sizeof nb) == 0, "%s: wait; every rank has the data",
               what);
            tsr_comm_counters(c, &before);
            st = tsr_comm_bcast(c, bl, BC, TSR_DTYPE_F64, root);
            uint64_t db, dc, ds;
            delta(c, &before, TSR_COMM_BCAST, &db, &dc, &ds);
            ok(st == TSR_OK && memcmp(nb, bl, sizeof nb) == 0 && db == expect && dc == 1,
               "%s: same result and bytes as bcast", what);
        }
    }

    /* --- isend / irecv around the ring against send / recv. --- */
    {
        enum { PC = 7 };
        int64_t sbuf[PC], nb[PC], bl[PC], ref[PC];
        snprintf(what, sizeof what, "isend/irecv I64 x %d around the ring on %d ranks", PC, n);
        salt++;
        fill(TSR_DTYPE_I64, sbuf, PC, me, 0, salt);
        fill(TSR_DTYPE_I64, ref, PC, left, 0, salt);
        memset(nb, 0, sizeof nb);
        tsr_request_t reqs[2] = {NULL, NULL};
        tsr_comm_counters(c, &before);
        tsr_status_t st_r = tsr_comm_irecv(c, nb, PC, TSR_DTYPE_I64, left, 3, &reqs[0]);
        int recv_counted = moved(c, &before, TSR_COMM_RECV, 0, 1, what);
        tsr_comm_counters(c, &before);
        tsr_status_t st_s = tsr_comm_isend(c, sbuf, PC, TSR_DTYPE_I64, right, 3, &reqs[1]);
        int send_counted = moved(c, &before, TSR_COMM_SEND, PC * 8, 1, what);
        report_status(st_r, what);
        report_status(st_s, what);
        ok(st_r == TSR_OK && recv_counted, "%s: irecv posted; counts 1 call and 0 bytes", what);
        ok(st_s == TSR_OK && send_counted, "%s: isend posted; counts 1 call and %d bytes", what, PC * 8);
        st = tsr_request_waitall(2, reqs);
        report_status(st, what);
        ok(st == TSR_OK && reqs[0] == NULL && reqs[1] == NULL && memcmp(nb, ref, sizeof nb) == 0,
           "%s: waitall; received the left neighbour's data", what);
        /* Blocking twin: even ranks send first, odd ranks receive first. A rank alone sends
         * to itself, which a blocking send may not finish before its receive: post it. */
        tsr_status_t s1, s2;
        if (n == 1) {
            tsr_request_t self = NULL;
            s1 = tsr_comm_isend(c, sbuf, PC, TSR_DTYPE_I64, right, 4, &self);
            s2 = tsr_comm_recv(c, bl, PC, TSR_DTYPE_I64, left, 4);
            if (s1 == TSR_OK)
                s1 = tsr_request_wait(&self);
        } else if (me % 2 == 0) {
            s1 = tsr_comm_send(c, sbuf, PC, TSR_DTYPE_I64, right, 4);
            s2 = tsr_comm_recv(c, bl, PC, TSR_DTYPE_I64, left, 4);
        } else {
            s2 = tsr_comm_recv(c, bl, PC, TSR_DTYPE_I64, left, 4);
            s1 = tsr_comm_send(c, sbuf, PC, TSR_DTYPE_I64, right, 4);
        }
        ok(s1 == TSR_OK && s2 == TSR_OK && memcmp(nb, bl, sizeof nb) == 0, "%s: same data as send/recv", what);
    }

    /* --- Several operations in flight at once, completed by one waitall. --- */
    {
        enum { AC = 13, RC = 4, GC = 3, PC = 5 };
        salt++;
        const uint64_t s_ar = salt, s_rs = salt + 1, s_ag = salt + 2, s_bc = salt + 3, s_p2p = salt + 4;
        salt += 5;
        int64_t ar_send[AC], ar_recv[AC];
        double *rs_send = malloc((size_t)n * RC * sizeof(double)), rs_recv[RC];
        float ag_send[GC], *ag_recv = malloc((size_t)n * GC * sizeof(float)), *ag_ref = malloc((size_t)n * GC * sizeof(float));
        int32_t bc_buf[AC], bc_ref[AC];
        int32_t p_send[PC], p_recv[PC], p_ref[PC];
        fill(TSR_DTYPE_I64, ar_send, AC, me, 0, s_ar);
        fill(TSR_DTYPE_F64, rs_send, (size_t)n * RC, me, 0, s_rs);
        fill(TSR_DTYPE_F32, ag_send, GC, me, 0, s_ag);
        for (int r = 0; r < n; r++)
            fill(TSR_DTYPE_F32, ag_ref + (size_t)r * GC, GC, r, 0, s_ag);
        fill(TSR_DTYPE_I32, bc_ref, AC, n - 1, 0, s_bc);
        if (me == n - 1)
            memcpy(bc_buf, bc_ref, sizeof bc_buf);
        else
            memset(bc_buf, 0xab, sizeof bc_buf);
        fill(TSR_DTYPE_I32, p_send, PC, me, 0, s_p2p);
        fill(TSR_DTYPE_I32, p_ref, PC, left, 0, s_p2p);

        tsr_request_t reqs[7] = {NULL, NULL, NULL, NULL, NULL, NULL, NULL};
        tsr_status_t sts[6];
        tsr_comm_counters(c, &before);
        sts[0] = tsr_comm_irecv(c, p_recv, PC, TSR_DTYPE_I32, left, 11, &reqs[0]);
        sts[1] = tsr_comm_iallreduce(c, ar_send, ar_recv, AC, TSR_DTYPE_I64, TSR_REDUCE_SUM, &reqs[1]);
        sts[2] = tsr_comm_ireduce_scatter(c, rs_send, rs_recv, RC, TSR_DTYPE_F64, TSR_REDUCE_MAX, &reqs[2]);
        /* reqs[3] stays NULL: waitall skips NULL entries */
        sts[3] = tsr_comm_iallgather(c, ag_send, ag_recv, GC, TSR_DTYPE_F32, &reqs[4]);
        sts[4] = tsr_comm_ibcast(c, bc_buf, AC, TSR_DTYPE_I32, n - 1, &reqs[5]);
        sts[5] = tsr_comm_isend(c, p_send, PC, TSR_DTYPE_I32, right, 11, &reqs[6]);
        int posted = 1;
        for (int k = 0; k < 6; k++) {
            report_status(sts[k], "post in flight");
            posted = posted && sts[k] == TSR_OK;
        }
        ok(posted && reqs[0] && reqs[1] && reqs[2] && reqs[4] && reqs[5] && reqs[6],
           "in flight on %d ranks: 6 operations posted, each with a request", n);
        tsr_comm_counters_t now;
        tsr_comm_counters(c, &now);
        const uint64_t e_ar = 2 * (Nu - 1) * AC * 8 / Nu, e_rs = (Nu - 1) * RC * 8, e_ag = (Nu - 1) * GC * 4,
                       e_bc = n > 1 ? AC * 4 : 0, e_p = PC * 4;
        int counted = now.bytes[TSR_COMM_ALLREDUCE] - before.bytes[TSR_COMM_ALLREDUCE] == e_ar &&
                      now.bytes[TSR_COMM_REDUCE_SCATTER] - before.bytes[TSR_COMM_REDUCE_SCATTER] == e_rs &&
                      now.bytes[TSR_COMM_ALLGATHER] - before.bytes[TSR_COMM_ALLGATHER] == e_ag &&
                      now.bytes[TSR_COMM_BCAST] - before.bytes[TSR_COMM_BCAST] == e_bc &&
                      now.bytes[TSR_COMM_SEND] - before.bytes[TSR_COMM_SEND] == e_p &&
                      now.bytes[TSR_COMM_RECV] - before.bytes[TSR_COMM_RECV] == 0 &&
                      now.bytes_sent - before.bytes_sent == e_ar + e_rs + e_ag + e_bc + e_p;
        for (int o = 0; o < TSR_COMM_OP_COUNT; o++)
            counted = counted && now.calls[o] - before.calls[o] == 1;
        if (!counted)
            fprintf(stderr, "#   [rank %d] in flight: bytes_sent +%llu, expected %llu\n", tap_rank(),
                    (unsigned long long)(now.bytes_sent - before.bytes_sent),
                    (unsigned long long)(e_ar + e_rs + e_ag + e_bc + e_p));
        ok(counted, "in flight on %d ranks: each operation counted its bytes and 1 call when posted", n);
        st = tsr_request_waitall(7, reqs);
        report_status(st, "waitall");
        int all_null = 1;
        for (int k = 0; k < 7; k++)
            all_null = all_null && reqs[k] == NULL;
        ok(st == TSR_OK && all_null, "in flight on %d ranks: waitall of 7 (one NULL) returns TSR_OK, sets all NULL", n);
        ok(check_reduced(TSR_DTYPE_I64, TSR_REDUCE_SUM, n, ar_recv, AC, 0, s_ar, "in flight iallreduce"),
           "in flight on %d ranks: iallreduce I64 SUM result", n);
        ok(check_reduced(TSR_DTYPE_F64, TSR_REDUCE_MAX, n, rs_recv, RC, (uint64_t)me * RC, s_rs,
                         "in flight ireduce_scatter"),
           "in flight on %d ranks: ireduce_scatter F64 MAX result", n);
        ok(memcmp(ag_recv, ag_ref, (size_t)n * GC * sizeof(float)) == 0, "in flight on %d ranks: iallgather F32 result",
           n);
        ok(memcmp(bc_buf, bc_ref, sizeof bc_buf) == 0, "in flight on %d ranks: ibcast I32 from root %d result", n,
           n - 1);
        ok(memcmp(p_recv, p_ref, sizeof p_recv) == 0, "in flight on %d ranks: irecv got the left neighbour's data", n);
        free(rs_send);
        free(ag_recv);
        free(ag_ref);
    }

    /* --- tsr_request_test polled until done. --- */
    {
        enum { TC = 1000 };
        double *sbuf = malloc(TC * sizeof(double)), *rbuf = malloc(TC * sizeof(double));
        salt++;
        fill(TSR_DTYPE_F64, sbuf, TC, me, 0, salt);
        tsr_request_t req = NULL;
        st = tsr_comm_iallreduce(c, sbuf, rbuf, TC, TSR_DTYPE_F64, TSR_REDUCE_SUM, &req);
        report_status(st, "iallreduce to poll");
        int done = 0, polls = 0, non_null_while_pending = 1;
        tsr_status_t tst = TSR_OK;
        double start = MPI_Wtime();
        while (st == TSR_OK && !done && MPI_Wtime() - start < 30.0) {
            done = -1;
            tst = tsr_request_test(&req, &done);
            polls++;
            if (tst != TSR_OK)
                break;
            if (done == 0 && req == NULL)
                non_null_while_pending = 0;
        }
        ok(st == TSR_OK && tst == TSR_OK && done == 1, "tsr_request_test on an iallreduce on %d ranks reports done",
           n);
        ok(done == 1 && req == NULL, "tsr_request_test sets the request to NULL when done");
        ok(non_null_while_pending, "tsr_request_test keeps the request while not done (%d polls)", polls);
        if (req)
            tsr_request_wait(&req);
        ok(done == 1 && check_reduced(TSR_DTYPE_F64, TSR_REDUCE_SUM, n, rbuf, TC, 0, salt, "polled iallreduce"),
           "polled iallreduce F64 SUM x %d on %d ranks: result", TC, n);
        free(sbuf);
        free(rbuf);
    }

    /* --- Receives posted before their sends, matched by tag around a ring. --- */
    {
        enum { K = 4 };
        int64_t rbuf[K][8], sbuf[K][8];
        tsr_request_t reqs[2 * K];
        tsr_status_t sts[2 * K];
        salt++;
        /* Message k (tag 100 + k) carries k + 2 elements: a message matched to the wrong tag
         * has the wrong length and fails, besides holding the wrong data. */
        for (int k = 0; k < K; k++) {
            fill(TSR_DTYPE_I64, sbuf[k], (size_t)k + 2, me, 0, salt + (uint64_t)k);
            memset(rbuf[k], 0, sizeof rbuf[k]);
            sts[k] = tsr_comm_irecv(c, rbuf[k], (size_t)k + 2, TSR_DTYPE_I64, left, 100 + k, &reqs[k]);
        }
        tsr_comm_barrier(c); /* every receive is posted before any send starts */
        tsr_comm_counters(c, &before);
        for (int k = K - 1; k >= 0; k--) /* sent in the opposite order */
            sts[K + (K - 1 - k)] = tsr_comm_isend(c, sbuf[k], (size_t)k + 2, TSR_DTYPE_I64, right, 100 + k,
                                                  &reqs[K + (K - 1 - k)]);
        int posted = 1;
        for (int k = 0; k < 2 * K; k++)
            posted = posted && sts[k] == TSR_OK;
        ok(posted, "pre-posted ring on %d ranks: %d irecvs then %d isends posted", n, K, K);
        ok(moved(c, &before, TSR_COMM_SEND, (2 + 3 + 4 + 5) * 8, K, "pre-posted ring"),
           "pre-posted ring on %d ranks: isends counted %d bytes, %d calls", n, (2 + 3 + 4 + 5) * 8, K);
        st = tsr_request_waitall(2 * K, reqs);
        report_status(st, "pre-posted ring waitall");
        int good = st == TSR_OK;
        for (int k = 0; k < K; k++) {
            int64_t ref[8];
            fill(TSR_DTYPE_I64, ref, (size_t)k + 2, left, 0, salt + (uint64_t)k);
            if (memcmp(rbuf[k], ref, ((size_t)k + 2) * 8) != 0) {
                good = 0;
                fprintf(stderr, "#   [rank %d] pre-posted ring: tag %d holds the wrong data\n", tap_rank(), 100 + k);
            }
        }
        ok(good, "pre-posted ring on %d ranks: every tag got its own message", n);
        salt += K;
    }

    /* --- A receive whose message is shorter than asked fails when it completes. --- */
    {
        int32_t sbuf[3] = {1, 2, 3}, rbuf[4];
        tsr_request_t reqs[2] = {NULL, NULL};
        tsr_status_t st_r = tsr_comm_irecv(c, rbuf, 4, TSR_DTYPE_I32, left, 30, &reqs[0]);
        tsr_status_t st_s = tsr_comm_isend(c, sbuf, 3, TSR_DTYPE_I32, right, 30, &reqs[1]);
        ok(st_r == TSR_OK && st_s == TSR_OK, "irecv of 4 I32 and isend of 3 posted");
        tsr_status_t st_s_wait = tsr_request_wait(&reqs[1]);
        tsr_status_t st_r_wait = tsr_request_wait(&reqs[0]);
        is_int(st_s_wait, TSR_OK, "isend of 3 I32 completes with TSR_OK");
        ok(st_r_wait != TSR_OK && reqs[0] == NULL, "irecv of 4 I32 when 3 arrive fails at wait, request released");
        tsr_clear_error();
    }

    /* --- Overlap: an allreduce in flight while this rank computes. --- */
    {
        enum { OC = 1 << 15 };
        float *sbuf = malloc(OC * sizeof(float)), *rbuf = malloc(OC * sizeof(float)),
              *keep = malloc(OC * sizeof(float));
        salt++;
        fill(TSR_DTYPE_F32, sbuf, OC, me, 0, salt);
        memcpy(keep, sbuf, OC * sizeof(float));
        tsr_request_t req = NULL;
        st = tsr_comm_iallreduce(c, sbuf, rbuf, OC, TSR_DTYPE_F32, TSR_REDUCE_SUM, &req);
        report_status(st, "overlapped iallreduce");
        /* Local work meanwhile: the sum of this rank's own data, twice over different code. */
        double local = 0, local2 = 0;
        for (size_t i = 0; i < OC; i++)
            local += gen_f(TSR_DTYPE_F32, me, i, salt);
        for (size_t i = OC; i-- > 0;)
            local2 += (double)keep[i];
        tsr_status_t wst = tsr_request_wait(&req);
        report_status(wst, "overlapped iallreduce wait");
        ok(st == TSR_OK && wst == TSR_OK && req == NULL, "overlapped iallreduce F32 SUM x %d on %d ranks: post and wait",
           OC, n);
        ok(check_reduced(TSR_DTYPE_F32, TSR_REDUCE_SUM, n, rbuf, OC, 0, salt, "overlapped iallreduce"),
           "overlapped iallreduce F32 SUM x %d on %d ranks: result", OC, n);
        ok(memcmp(sbuf, keep, OC * sizeof(float)) == 0 && fabs(local - local2) <= 1e-6 * (fabs(local2) + 1),
           "overlapped iallreduce: send buffer untouched, local work done meanwhile");
        free(sbuf);
        free(rbuf);
        free(keep);
    }

    tsr_comm_destroy(&c);
    ok(c == NULL, "tsr_comm_destroy sets the handle to NULL");
    if (tap_rank() == 0) /* once, not once per rank */
        diag("%.2f s on %d ranks", MPI_Wtime() - t0, n);
    return tap_done();
}
