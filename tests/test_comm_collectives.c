/*
 * test_comm_collectives.c: the blocking collectives and point-to-point messages of comm.h,
 * against references computed locally, and the byte counters against the bus-bytes model.
 *
 * Every rank's data is a pure function of (rank, element index, data set) drawn with
 * tsr_rng_uniform(), so each rank computes what every other rank sent and hence the exact
 * result of any collective. Integer data is compared exactly; floating-point sums to within
 * rounding; maxima, minima and copies bit for bit.
 *
 * The battery runs on a tsr_comm_create(MPI_COMM_WORLD) communicator and on the tp_row
 * communicator of a grid (dp=1, pp=1, tp=2x(n/2) for even n, so 1 rank at n=2: the
 * one-rank case of the counter model), then the error cases run on the world communicator.
 */
#include <tessera.h>

#include "tap.h"

#define SEED 0x7e55e7a5ULL

static const char *const dtype_names[] = {"F32", "F64", "I32", "I64", "U8"};
static const char *const reduce_names[] = {"SUM", "MAX", "MIN"};

static int is_float(tsr_dtype_t t) { return t == TSR_DTYPE_F32 || t == TSR_DTYPE_F64; }

static size_t esize(tsr_dtype_t t)
{
    switch (t) {
    case TSR_DTYPE_F32: return 4;
    case TSR_DTYPE_F64: return 8;
    case TSR_DTYPE_I32: return 4;
    case TSR_DTYPE_I64: return 8;
    case TSR_DTYPE_U8: return 1;
    default: return 0;
    }
}

/* Element idx of rank r's data in data set salt: a floating-point value (F32, F64). */
static double gen_f(tsr_dtype_t t, int r, uint64_t idx, uint64_t salt)
{
    float u = tsr_rng_uniform(SEED + salt, (uint64_t)r, idx);
    if (t == TSR_DTYPE_F32)
        return (double)(2.0f * u - 1.0f);
    float v = tsr_rng_uniform(SEED + salt, (uint64_t)r + 1000, idx);
    return (2.0 * (double)u - 1.0) + (double)v * 1e-9; /* uses the low bits of a double */
}

/* Element idx of rank r's data in data set salt: an integer value (I32, I64, U8). */
static int64_t gen_i(tsr_dtype_t t, int r, uint64_t idx, uint64_t salt)
{
    float u = tsr_rng_uniform(SEED + salt, (uint64_t)r, idx);
    if (t == TSR_DTYPE_I32)
        return (int64_t)(u * 2000000.0f) - 1000000;
    if (t == TSR_DTYPE_U8)
        return (int64_t)(u * 256.0f) & 255;
    /* I64: values well beyond 32 bits, sums of a few still exact. */
    float v = tsr_rng_uniform(SEED + salt, (uint64_t)r + 1000, idx);
    return (int64_t)(((double)u - 0.5) * 1099511627776.0) * 4096 + (int64_t)(v * 4096.0f);
}

static void store_f(tsr_dtype_t t, void *buf, size_t k, double x)
{
    if (t == TSR_DTYPE_F32)
        ((float *)buf)[k] = (float)x;
    else
        ((double *)buf)[k] = x;
}

static void store_i(tsr_dtype_t t, void *buf, size_t k, int64_t x)
{
    if (t == TSR_DTYPE_I32)
        ((int32_t *)buf)[k] = (int32_t)x;
    else if (t == TSR_DTYPE_I64)
        ((int64_t *)buf)[k] = x;
    else
        ((uint8_t *)buf)[k] = (uint8_t)x;
}

static double load_f(tsr_dtype_t t, const void *buf, size_t k)
{
    return t == TSR_DTYPE_F32 ? (double)((const float *)buf)[k] : ((const double *)buf)[k];
}

static int64_t load_i(tsr_dtype_t t, const void *buf, size_t k)
{
    if (t == TSR_DTYPE_I32)
        return ((const int32_t *)buf)[k];
    if (t == TSR_DTYPE_I64)
        return ((const int64_t *)buf)[k];
    return ((const uint8_t *)buf)[k];
}

/* buf[k] = rank r's element first + k of data set salt, k < count. */
static void fill(tsr_dtype_t t, void *buf, size_t count, int r, uint64_t first, uint64_t salt)
{
    for (size_t k = 0; k < count; k++) {
        if (is_float(t))
            store_f(t, buf, k, gen_f(t, r, first + k, salt));
        else
            store_i(t, buf, k, gen_i(t, r, first + k, salt));
    }
}

/* Does buf[k] hold op over ranks 0..N-1 of element first + k (k < count)? */
static int check_reduced(tsr_dtype_t t, tsr_reduce_op_t op, int N, const void *buf, size_t count, uint64_t first,
                         uint64_t salt, const char *what)
{
    double max_err = 0, norm = 0;
    size_t bad = 0, first_bad = 0;
    for (size_t k = 0; k < count; k++) {
        if (is_float(t)) {
            double ref = gen_f(t, 0, first + k, salt);
            for (int r = 1; r < N; r++) {
                double x = gen_f(t, r, first + k, salt);
                ref = op == TSR_REDUCE_SUM ? ref + x : op == TSR_REDUCE_MAX ? (x > ref ? x : ref) : (x < ref ? x : ref);
            }
            double got = load_f(t, buf, k);
            if (fabs(ref) > norm)
                norm = fabs(ref);
            if (op == TSR_REDUCE_SUM) {
                double e = fabs(got - ref);
                if (!(e <= max_err)) /* NaN too */
                    max_err = e;
            } else if (got != ref && !bad++) {
                first_bad = k;
            }
        } else {
            int64_t ref = gen_i(t, 0, first + k, salt);
            for (int r = 1; r < N; r++) {
                int64_t x = gen_i(t, r, first + k, salt);
                ref = op == TSR_REDUCE_SUM ? ref + x : op == TSR_REDUCE_MAX ? (x > ref ? x : ref) : (x < ref ? x : ref);
            }
            if (t == TSR_DTYPE_I32)
                ref = (int32_t)ref;
            else if (t == TSR_DTYPE_U8)
                ref = (uint8_t)ref;
            if (load_i(t, buf, k) != ref && !bad++)
                first_bad = k;
        }
    }
    if (is_float(t) && op == TSR_REDUCE_SUM) {
        double tol = t == TSR_DTYPE_F32 ? 1e-5 : 1e-12;
        double rel = max_err / (norm > 1e-30 ? norm : 1e-30);
        if (!(rel <= tol)) {
            fprintf(stderr, "#   [rank %d] %s: relative error %.3g > %.3g\n", tap_rank(), what, rel, tol);
            return 0;
        }
        return 1;
    }
    if (bad)
        fprintf(stderr, "#   [rank %d] %s: %zu of %zu elements wrong, first at %zu\n", tap_rank(), what, bad, count,
                first_bad);
    return bad == 0;
}

/* Do the counters of c, read now, differ from *before by bytes and calls in op alone? */
static int counters_moved(tsr_comm_t c, const tsr_comm_counters_t *before, tsr_comm_op_t op, uint64_t bytes,
                          uint64_t calls, const char *what)
{
    tsr_comm_counters_t after;
    memset(&after, 0xee, sizeof after);
    tsr_comm_counters(c, &after);
    int good = after.bytes_sent - before->bytes_sent == bytes;
    uint64_t sum = 0;
    for (int o = 0; o < TSR_COMM_OP_COUNT; o++) {
        uint64_t db = after.bytes[o] - before->bytes[o], dc = after.calls[o] - before->calls[o];
        uint64_t eb = o == (int)op ? bytes : 0, ec = o == (int)op ? calls : 0;
        if (db != eb || dc != ec) {
            good = 0;
            fprintf(stderr, "#   [rank %d] %s: %s moved by %llu bytes, %llu calls; expected %llu, %llu\n", tap_rank(),
                    what, tsr_comm_op_name((tsr_comm_op_t)o), (unsigned long long)db, (unsigned long long)dc,
                    (unsigned long long)eb, (unsigned long long)ec);
        }
        sum += after.bytes[o];
    }
    if (after.bytes_sent - before->bytes_sent != bytes)
        fprintf(stderr, "#   [rank %d] %s: bytes_sent moved by %llu, expected %llu\n", tap_rank(), what,
                (unsigned long long)(after.bytes_sent - before->bytes_sent), (unsigned long long)bytes);
    if (sum != after.bytes_sent) {
        good = 0;
        fprintf(stderr, "#   [rank %d] %s: bytes_sent %llu is not the sum of bytes[] %llu\n", tap_rank(), what,
                (unsigned long long)after.bytes_sent, (unsigned long long)sum);
    }
    return good;
}

static void report_status(tsr_status_t st, const char *what)
{
    if (st != TSR_OK)
        fprintf(stderr, "#   [rank %d] %s: %s (%s)\n", tap_rank(), what, tsr_status_name(st), tsr_last_error());
}

/* Send to the right neighbour and receive from the left one on a ring, in an order that
 * cannot deadlock (even ranks send first, odd ranks receive first). On a one-rank
 * communicator the rank is its own neighbour and a blocking send to oneself may wait for
 * its receive forever (it does in MPICH), so there the send is posted non-blocking,
 * received with the blocking tsr_comm_recv, then completed: the counters see one send and
 * one receive either way. */
static void ring(tsr_comm_t c, const void *sbuf, size_t scount, void *rbuf, size_t rcount, tsr_dtype_t t, int tag,
                 tsr_status_t *st_send, tsr_status_t *st_recv)
{
    int N = tsr_comm_size(c), me = tsr_comm_rank(c);
    int right = (me + 1) % N, left = (me + N - 1) % N;
    if (N == 1) {
        tsr_request_t req = NULL;
        *st_send = tsr_comm_isend(c, sbuf, scount, t, right, tag, &req);
        *st_recv = tsr_comm_recv(c, rbuf, rcount, t, left, tag);
        tsr_status_t st = tsr_request_wait(&req);
        if (*st_send == TSR_OK)
            *st_send = st;
    } else if (me % 2 == 0) {
        *st_send = tsr_comm_send(c, sbuf, scount, t, right, tag);
        *st_recv = tsr_comm_recv(c, rbuf, rcount, t, left, tag);
    } else {
        *st_recv = tsr_comm_recv(c, rbuf, rcount, t, left, tag);
        *st_send = tsr_comm_send(c, sbuf, scount, t, right, tag);
    }
}

/* All blocking operations on c against their references; full: every dtype x op x in-place
 * combination of allreduce, else one of each dtype. */
static void battery(tsr_comm_t c, const char *label, int full)
{
    const int N = tsr_comm_size(c), me = tsr_comm_rank(c);
    const uint64_t Nu = (uint64_t)N;
    char what[160];
    uint64_t salt = 0;
    tsr_comm_counters_t before;

    /* The communicator itself. */
    {
        int mpi_size = -1, mpi_rank = -1;
        MPI_Comm_size(tsr_comm_mpi(c), &mpi_size);
        MPI_Comm_rank(tsr_comm_mpi(c), &mpi_rank);
        ok(mpi_size == N && mpi_rank == me && N >= 1 && me >= 0 && me < N,
           "%s (%d ranks): tsr_comm_size and tsr_comm_rank match its MPI communicator", label, N);
        tsr_comm_reset_counters(c);
        tsr_comm_counters(c, &before);
        int zero = before.bytes_sent == 0;
        for (int o = 0; o < TSR_COMM_OP_COUNT; o++)
            zero = zero && before.bytes[o] == 0 && before.calls[o] == 0;
        ok(zero, "%s (%d ranks): counters are zero after tsr_comm_reset_counters", label, N);
    }

    /* allreduce: every dtype x op, out of place and in place. */
    {
        enum { COUNT = 37 };
        static const tsr_dtype_t types[] = {TSR_DTYPE_F32, TSR_DTYPE_F64, TSR_DTYPE_I32, TSR_DTYPE_I64};
        double sbuf[COUNT], rbuf[COUNT], keep[COUNT];
        for (int ti = 0; ti < 4; ti++)
            for (int op = 0; op < 3; op++)
                for (int in_place = 0; in_place < 2; in_place++) {
                    /* The short battery does one combination per dtype: F32 SUM out of place,
                     * F64 MAX in place, I32 MIN out of place, I64 SUM in place. */
                    if (!full && !((ti == 0 && op == 0 && !in_place) || (ti == 1 && op == 1 && in_place) ||
                                   (ti == 2 && op == 2 && !in_place) || (ti == 3 && op == 0 && in_place)))
                        continue;
                    tsr_dtype_t t = types[ti];
                    snprintf(what, sizeof what, "allreduce %s %s %s, %s (%d ranks)", dtype_names[t],
                             reduce_names[op], in_place ? "in place" : "out of place", label, N);
                    salt++;
                    fill(t, sbuf, COUNT, me, 0, salt);
                    memcpy(keep, sbuf, sizeof keep);
                    if (in_place)
                        memcpy(rbuf, sbuf, sizeof rbuf);
                    else
                        memset(rbuf, 0xab, sizeof rbuf);
                    tsr_comm_counters(c, &before);
                    tsr_status_t st = tsr_comm_allreduce(c, in_place ? TSR_IN_PLACE : sbuf, rbuf, COUNT, t,
                                                         (tsr_reduce_op_t)op);
                    report_status(st, what);
                    int good = st == TSR_OK && check_reduced(t, (tsr_reduce_op_t)op, N, rbuf, COUNT, 0, salt, what);
                    if (!in_place && memcmp(keep, sbuf, COUNT * esize(t)) != 0) {
                        good = 0;
                        fprintf(stderr, "#   [rank %d] %s: send buffer modified\n", tap_rank(), what);
                    }
                    ok(good, "%s: result", what);
                    uint64_t S = COUNT * esize(t);
                    ok(counters_moved(c, &before, TSR_COMM_ALLREDUCE, 2 * (Nu - 1) * S / Nu, 1, what),
                       "%s: counters add floor(2(N-1)S/N) = %llu bytes, 1 call", what,
                       (unsigned long long)(2 * (Nu - 1) * S / Nu));
                }

        /* U8 of 37 bytes: 2(N-1)S/N is not whole for N = 4, the count is floored. SUM wraps
         * modulo 256; MAX and MIN must compare as unsigned (MPICH 4.0.2's built-in ones
         * compare as signed, pmodels/mpich#6083, so the library brings its own). */
        static const tsr_reduce_op_t u8_ops[] = {TSR_REDUCE_SUM, TSR_REDUCE_MAX, TSR_REDUCE_MIN};
        static const char *const u8_op_names[] = {"SUM", "MAX", "MIN"};
        for (int o = 0; o < 3; o++) {
            uint8_t u_send[COUNT], u_recv[COUNT];
            snprintf(what, sizeof what, "allreduce U8 %s out of place, %s (%d ranks)", u8_op_names[o], label, N);
            salt++;
            fill(TSR_DTYPE_U8, u_send, COUNT, me, 0, salt);
            tsr_comm_counters(c, &before);
            tsr_status_t st = tsr_comm_allreduce(c, u_send, u_recv, COUNT, TSR_DTYPE_U8, u8_ops[o]);
            report_status(st, what);
            ok(st == TSR_OK && check_reduced(TSR_DTYPE_U8, u8_ops[o], N, u_recv, COUNT, 0, salt, what),
               "%s: result (unsigned, SUM modulo 256)", what);
            ok(counters_moved(c, &before, TSR_COMM_ALLREDUCE, 2 * (Nu - 1) * COUNT / Nu, 1, what),
               "%s: counters add floor(2(N-1)*37/N) = %llu bytes", what,
               (unsigned long long)(2 * (Nu - 1) * COUNT / Nu));
        }
    }

    /* reduce_scatter: rank r gets op over ranks of block r. */
    {
        enum { RC = 5 };
        static const struct {
            tsr_dtype_t t;
            tsr_reduce_op_t op;
        } cases[] = {{TSR_DTYPE_F32, TSR_REDUCE_SUM},
                     {TSR_DTYPE_I64, TSR_REDUCE_SUM},
                     {TSR_DTYPE_I32, TSR_REDUCE_MAX},
                     {TSR_DTYPE_F64, TSR_REDUCE_MAX}};
        double *sbuf = calloc((size_t)N * RC, sizeof(double));
        double rbuf[RC];
        for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
            if (!full && k >= 2)
                break;
            tsr_dtype_t t = cases[k].t;
            snprintf(what, sizeof what, "reduce_scatter %s %s, %s (%d ranks)", dtype_names[t],
                     reduce_names[cases[k].op], label, N);
            salt++;
            fill(t, sbuf, (size_t)N * RC, me, 0, salt);
            memset(rbuf, 0xab, sizeof rbuf);
            tsr_comm_counters(c, &before);
            tsr_status_t st = tsr_comm_reduce_scatter(c, sbuf, rbuf, RC, t, cases[k].op);
            report_status(st, what);
            ok(st == TSR_OK && check_reduced(t, cases[k].op, N, rbuf, RC, (uint64_t)me * RC, salt, what),
               "%s: my block", what);
            uint64_t block = RC * esize(t);
            ok(counters_moved(c, &before, TSR_COMM_REDUCE_SCATTER, (Nu - 1) * block, 1, what),
               "%s: counters add (N-1) x block = %llu bytes", what, (unsigned long long)((Nu - 1) * block));
        }
        free(sbuf);
    }

    /* allgather: recv[r*sc + i] = element i of rank r. */
    {
        static const struct {
            tsr_dtype_t t;
            size_t sc;
        } cases[] = {{TSR_DTYPE_F64, 7}, {TSR_DTYPE_I32, 3}, {TSR_DTYPE_U8, 5}};
        for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
            if (!full && k >= 1)
                break;
            tsr_dtype_t t = cases[k].t;
            size_t sc = cases[k].sc, eb = esize(t);
            snprintf(what, sizeof what, "allgather %s x %zu, %s (%d ranks)", dtype_names[t], sc, label, N);
            salt++;
            unsigned char sbuf[64];
            unsigned char *rbuf = malloc((size_t)N * sc * eb), *ref = malloc((size_t)N * sc * eb);
            fill(t, sbuf, sc, me, 0, salt);
            for (int r = 0; r < N; r++)
                fill(t, ref + (size_t)r * sc * eb, sc, r, 0, salt);
            memset(rbuf, 0xab, (size_t)N * sc * eb);
            tsr_comm_counters(c, &before);
            tsr_status_t st = tsr_comm_allgather(c, sbuf, rbuf, sc, t);
            report_status(st, what);
            int good = st == TSR_OK && memcmp(rbuf, ref, (size_t)N * sc * eb) == 0;
            if (st == TSR_OK && !good)
                fprintf(stderr, "#   [rank %d] %s: gathered data differs\n", tap_rank(), what);
            ok(good, "%s: result", what);
            ok(counters_moved(c, &before, TSR_COMM_ALLGATHER, (Nu - 1) * sc * eb, 1, what),
               "%s: counters add (N-1) x block = %llu bytes", what, (unsigned long long)((Nu - 1) * sc * eb));
            free(rbuf);
            free(ref);
        }
    }

    /* bcast from every root. */
    {
        enum { BC = 11 };
        for (int root = 0; root < N; root++) {
            snprintf(what, sizeof what, "bcast F64 x %d from root %d, %s (%d ranks)", BC, root, label, N);
            salt++;
            double buf[BC], ref[BC];
            fill(TSR_DTYPE_F64, ref, BC, root, 0, salt);
            if (me == root)
                memcpy(buf, ref, sizeof buf);
            else
                memset(buf, 0xab, sizeof buf);
            tsr_comm_counters(c, &before);
            tsr_status_t st = tsr_comm_bcast(c, buf, BC, TSR_DTYPE_F64, root);
            report_status(st, what);
            ok(st == TSR_OK && memcmp(buf, ref, sizeof buf) == 0, "%s: every rank has the root's data", what);
            uint64_t S = N > 1 ? BC * 8 : 0;
            ok(counters_moved(c, &before, TSR_COMM_BCAST, S, 1, what), "%s: counters add %llu bytes on every rank",
               what, (unsigned long long)S);
        }
        /* U8, odd size, from the last rank. */
        snprintf(what, sizeof what, "bcast U8 x 13 from root %d, %s (%d ranks)", N - 1, label, N);
        salt++;
        uint8_t buf[13], ref[13];
        fill(TSR_DTYPE_U8, ref, 13, N - 1, 0, salt);
        if (me == N - 1)
            memcpy(buf, ref, sizeof buf);
        else
            memset(buf, 0, sizeof buf);
        tsr_comm_counters(c, &before);
        tsr_status_t st = tsr_comm_bcast(c, buf, 13, TSR_DTYPE_U8, N - 1);
        report_status(st, what);
        ok(st == TSR_OK && memcmp(buf, ref, sizeof buf) == 0, "%s: every rank has the root's data", what);
        ok(counters_moved(c, &before, TSR_COMM_BCAST, N > 1 ? 13 : 0, 1, what), "%s: counters add %d bytes", what,
           N > 1 ? 13 : 0);
    }

    /* send / recv around a ring. */
    {
        enum { PC = 9 };
        int64_t sbuf[PC], rbuf[PC], ref[PC];
        int left = (me + N - 1) % N;
        snprintf(what, sizeof what, "send/recv I64 x %d around the ring, %s (%d ranks)", PC, label, N);
        salt++;
        fill(TSR_DTYPE_I64, sbuf, PC, me, 0, salt);
        fill(TSR_DTYPE_I64, ref, PC, left, 0, salt);
        memset(rbuf, 0, sizeof rbuf);
        tsr_status_t st_send, st_recv;
        tsr_comm_counters(c, &before);
        /* Counters: each rank sends once and receives once. */
        ring(c, sbuf, PC, rbuf, PC, TSR_DTYPE_I64, 7, &st_send, &st_recv);
        report_status(st_send, what);
        report_status(st_recv, what);
        is_int(st_send, TSR_OK, "%s: send returns TSR_OK", what);
        ok(st_recv == TSR_OK && memcmp(rbuf, ref, sizeof rbuf) == 0, "%s: received the left neighbour's data", what);
        tsr_comm_counters_t after;
        tsr_comm_counters(c, &after);
        int good = after.bytes[TSR_COMM_SEND] - before.bytes[TSR_COMM_SEND] == PC * 8 &&
                   after.calls[TSR_COMM_SEND] - before.calls[TSR_COMM_SEND] == 1 &&
                   after.bytes[TSR_COMM_RECV] - before.bytes[TSR_COMM_RECV] == 0 &&
                   after.calls[TSR_COMM_RECV] - before.calls[TSR_COMM_RECV] == 1 &&
                   after.bytes_sent - before.bytes_sent == PC * 8;
        if (!good)
            fprintf(stderr,
                    "#   [rank %d] %s: send +%llu bytes +%llu calls, recv +%llu bytes +%llu calls, bytes_sent +%llu\n",
                    tap_rank(), what, (unsigned long long)(after.bytes[TSR_COMM_SEND] - before.bytes[TSR_COMM_SEND]),
                    (unsigned long long)(after.calls[TSR_COMM_SEND] - before.calls[TSR_COMM_SEND]),
                    (unsigned long long)(after.bytes[TSR_COMM_RECV] - before.bytes[TSR_COMM_RECV]),
                    (unsigned long long)(after.calls[TSR_COMM_RECV] - before.calls[TSR_COMM_RECV]),
                    (unsigned long long)(after.bytes_sent - before.bytes_sent));
        ok(good, "%s: counters add %d bytes and 1 call for send, 0 bytes and 1 call for recv", what, PC * 8);
    }

    /* barrier counts nothing; reset zeroes everything. */
    {
        tsr_comm_counters_t after;
        tsr_comm_counters(c, &before);
        tsr_status_t st = tsr_comm_barrier(c);
        tsr_comm_counters(c, &after);
        is_int(st, TSR_OK, "barrier, %s (%d ranks): returns TSR_OK", label, N);
        ok(memcmp(&before, &after, sizeof before) == 0, "barrier, %s (%d ranks): counters unchanged", label, N);
        ok((before.bytes[TSR_COMM_ALLREDUCE] > 0) == (N > 1) && before.calls[TSR_COMM_ALLREDUCE] > 0 &&
               before.bytes[TSR_COMM_SEND] > 0,
           "%s (%d ranks): the battery counted calls, send bytes, and collective bytes only if N > 1", label, N);
        tsr_comm_reset_counters(c);
        tsr_comm_counters(c, &after);
        int zero = after.bytes_sent == 0;
        for (int o = 0; o < TSR_COMM_OP_COUNT; o++)
            zero = zero && after.bytes[o] == 0 && after.calls[o] == 0;
        ok(zero, "%s (%d ranks): tsr_comm_reset_counters zeroes bytes and calls", label, N);
    }
}

int main(int argc, char **argv)
{
    tap_init(&argc, &argv, "1 2 4");
    const int n = tap_size(), w = tap_rank();
    double t0 = MPI_Wtime();

    /* Element sizes and operation names. */
    is_int(tsr_dtype_size(TSR_DTYPE_F32), 4, "tsr_dtype_size(F32)");
    is_int(tsr_dtype_size(TSR_DTYPE_F64), 8, "tsr_dtype_size(F64)");
    is_int(tsr_dtype_size(TSR_DTYPE_I32), 4, "tsr_dtype_size(I32)");
    is_int(tsr_dtype_size(TSR_DTYPE_I64), 8, "tsr_dtype_size(I64)");
    is_int(tsr_dtype_size(TSR_DTYPE_U8), 1, "tsr_dtype_size(U8)");
    is_int(tsr_dtype_size(TSR_DTYPE_COUNT), 0, "tsr_dtype_size of an invalid type is 0");
    static const char *const op_names[TSR_COMM_OP_COUNT] = {"allreduce", "reduce_scatter", "allgather",
                                                            "bcast",     "send",           "recv"};
    for (int o = 0; o < TSR_COMM_OP_COUNT; o++)
        is_str(tsr_comm_op_name((tsr_comm_op_t)o), op_names[o], "tsr_comm_op_name(%d)", o);

    /* A communicator over MPI_COMM_WORLD: a duplicate that returns errors, counters at zero. */
    tsr_comm_t c = NULL;
    tsr_status_t st = tsr_comm_create(MPI_COMM_WORLD, &c);
    report_status(st, "tsr_comm_create");
    ok(st == TSR_OK && c != NULL, "tsr_comm_create(MPI_COMM_WORLD) on %d ranks returns TSR_OK and a handle", n);
    if (st != TSR_OK || !c)
        return tap_done(); /* nothing below can run; create is collective, so every rank stops here */
    {
        int cmp = MPI_UNEQUAL;
        MPI_Comm_compare(tsr_comm_mpi(c), MPI_COMM_WORLD, &cmp);
        ok(cmp == MPI_CONGRUENT, "tsr_comm_mpi is a duplicate of MPI_COMM_WORLD (congruent, not identical)");
        MPI_Errhandler eh = MPI_ERRHANDLER_NULL;
        MPI_Comm_get_errhandler(tsr_comm_mpi(c), &eh);
        ok(eh == MPI_ERRORS_RETURN, "tsr_comm_mpi has MPI_ERRORS_RETURN");
        if (eh != MPI_ERRHANDLER_NULL)
            MPI_Errhandler_free(&eh);
        tsr_comm_counters_t fresh;
        memset(&fresh, 0xee, sizeof fresh);
        tsr_comm_counters(c, &fresh);
        int zero = fresh.bytes_sent == 0;
        for (int o = 0; o < TSR_COMM_OP_COUNT; o++)
            zero = zero && fresh.bytes[o] == 0 && fresh.calls[o] == 0;
        ok(zero, "a new communicator's counters are zero");
        is_int(tsr_comm_backend(c), TSR_COMM_BACKEND_MPI, "a new communicator uses the MPI backend");
    }

    /* Backends. */
    {
        /* NCCL needs a CUDA device set (tests/test_comm_device.c covers that case); host
         * buffers are refused before anything is created. */
        st = tsr_comm_set_backend(c, TSR_COMM_BACKEND_NCCL);
        if (!TSR_HAVE_NCCL)
            is_int(st, TSR_ERR_NOT_SUPPORTED, "set_backend(NCCL) without NCCL in the build: TSR_ERR_NOT_SUPPORTED");
        else
            is_int(st, TSR_ERR_INVALID_ARG, "set_backend(NCCL) with host buffers: TSR_ERR_INVALID_ARG");
        is_int(tsr_comm_backend(c), TSR_COMM_BACKEND_MPI, "after the refused set_backend(NCCL) the backend is MPI");
        tsr_clear_error();
        st = tsr_comm_set_backend(c, TSR_COMM_BACKEND_MPI);
        is_int(st, TSR_OK, "set_backend(MPI) returns TSR_OK");
        is_int(tsr_comm_backend(c), TSR_COMM_BACKEND_MPI, "backend is MPI after set_backend(MPI)");
    }

    battery(c, "world", 1);

    /* A grid sub-communicator: tp_row of dp=1, pp=1, tp=2x(n/2) (1x1 at n=1). */
    {
        tsr_layout_t layout = TSR_LAYOUT_INIT;
        layout.tp_rows = n % 2 == 0 ? 2 : 1;
        layout.tp_cols = n / layout.tp_rows;
        tsr_grid_t g = NULL;
        st = tsr_grid_create(MPI_COMM_WORLD, &layout, &g);
        report_status(st, "tsr_grid_create");
        int usable = st == TSR_OK && g && tsr_grid_comm(g, TSR_AXIS_TP_ROW);
        ok(usable, "grid dp=1,pp=1,tp=%dx%d on %d ranks", layout.tp_rows, layout.tp_cols, n);
        if (usable) {
            tsr_comm_t row = tsr_grid_comm(g, TSR_AXIS_TP_ROW);
            ok(tsr_comm_size(row) == layout.tp_cols && tsr_comm_rank(row) == w % layout.tp_cols,
               "tp_row communicator of tp=%dx%d: size %d, my rank is my column", layout.tp_rows, layout.tp_cols,
               layout.tp_cols);
            char label[32];
            snprintf(label, sizeof label, "tp_row of tp=%dx%d", layout.tp_rows, layout.tp_cols);
            battery(row, label, 0);
        } else {
            skip(1, "no grid");
        }
        tsr_grid_destroy(&g);
    }

    /* Error cases, on the world communicator. */
    {
        double buf[4] = {1, 2, 3, 4};
        st = tsr_comm_bcast(c, buf, 4, TSR_DTYPE_F64, n);
        ok(st != TSR_OK, "bcast with root == size (%d) returns an error", n);
        st = tsr_comm_bcast(c, buf, 4, TSR_DTYPE_F64, -1);
        ok(st != TSR_OK, "bcast with root -1 returns an error");
        double in[3] = {1, 2, 3}, out[3];
        st = tsr_comm_allreduce(c, in, out, 3, TSR_DTYPE_COUNT, TSR_REDUCE_SUM);
        ok(st != TSR_OK, "allreduce with an invalid dtype returns an error");

        /* A message longer than the receive count. */
        int32_t sbuf[5] = {1, 2, 3, 4, 5}, rbuf[5];
        tsr_status_t st_send, st_recv;
        ring(c, sbuf, 5, rbuf, 4, TSR_DTYPE_I32, 21, &st_send, &st_recv);
        is_int(st_send, TSR_OK, "send of 5 I32 to be received as 4: send returns TSR_OK");
        ok(st_recv != TSR_OK, "recv of 4 I32 when 5 arrive returns an error");
        /* A message shorter than the receive count. */
        ring(c, sbuf, 3, rbuf, 4, TSR_DTYPE_I32, 22, &st_send, &st_recv);
        is_int(st_send, TSR_OK, "send of 3 I32 to be received as 4: send returns TSR_OK");
        ok(st_recv != TSR_OK, "recv of 4 I32 when 3 arrive returns an error");
        tsr_clear_error();

        /* The communicator still works after the errors. */
        int32_t one = w + 1, total = 0;
        st = tsr_comm_allreduce(c, &one, &total, 1, TSR_DTYPE_I32, TSR_REDUCE_SUM);
        ok(st == TSR_OK && total == n * (n + 1) / 2, "allreduce after the errors gives %d", n * (n + 1) / 2);
    }

    tsr_comm_destroy(&c);
    ok(c == NULL, "tsr_comm_destroy sets the handle to NULL");
    tsr_comm_destroy(&c);
    ok(c == NULL, "tsr_comm_destroy accepts a NULL handle");

    if (tap_rank() == 0) /* once, not once per rank */
        diag("%.2f s on %d ranks", MPI_Wtime() - t0, n);
    return tap_done();
}
