/*
 * tap.h: Test Anything Protocol from C, for tests that run on several MPI ranks.
 *
 * Every rank evaluates every test point and records pass or fail. tap_done() reduces the
 * results over MPI_COMM_WORLD (one collective for the whole test) and rank 0 alone prints
 * the TAP stream, naming the ranks on which a point failed. Details of a failure are
 * printed by the failing rank to standard error at once, prefixed with its rank.
 *
 *   int main(int argc, char **argv) {
 *       tap_init(&argc, &argv, "1 2 4");   // the rank counts tests/tap-mpi.sh runs this at
 *       ok(1 + 1 == 2, "arithmetic");
 *       is_int(tsr_comm_size(c), 4, "size");
 *       return tap_done();
 *   }
 *
 * Tests on random data take their seed from tap_seed() (TSR_TEST_SEED=N repeats a run).
 *
 * Run as "./test --tap-ranks" it prints its rank counts and exits without starting MPI.
 *
 * A program without MPI (the emulated CUDA tests in tests/emu) defines TAP_NO_MPI before
 * including this file and declares the rank count "1": it runs as one process on its own.
 */
#ifndef TESSERA_TESTS_TAP_H
#define TESSERA_TESTS_TAP_H

#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef TAP_NO_MPI
/* For test programs without MPI (tests/emu): one process, whose "collectives" are copies. */
#define MPI_COMM_WORLD 0
#define MPI_INT sizeof(int)
#define MPI_UINT64_T sizeof(uint64_t)
#define MPI_MAX 0
#define MPI_BOR 0
#define MPI_Init(argc, argv) ((void)(argc), (void)(argv))
#define MPI_Comm_rank(comm, rank) (*(rank) = 0)
#define MPI_Comm_size(comm, size) (*(size) = 1)
#define MPI_Bcast(buf, count, type, root, comm) ((void)(buf))
#define MPI_Allreduce(in, out, count, type, op, comm) memcpy((out), (in), (size_t)(count) * (type))
#define MPI_Abort(comm, code) exit(code)
#define MPI_Finalize() ((void)0)
#else
#include <mpi.h>
#endif

#if defined(__GNUC__)
#define TAP_UNUSED_ __attribute__((unused))
#define TAP_PRINTF_(f, a) __attribute__((format(printf, f, a)))
#else
#define TAP_UNUSED_
#define TAP_PRINTF_(f, a)
#endif

typedef struct tap_point_ {
    char name[160];
    int failed;           /* this rank's verdict */
    char skip_reason[96]; /* non-empty: skipped */
} tap_point_t_;

static struct {
    tap_point_t_ *points;
    int count, capacity;
    int rank, size;
} tap_ TAP_UNUSED_;

/* Start MPI and the test. Handles --tap-ranks before MPI_Init. */
static TAP_UNUSED_ void tap_init(int *argc, char ***argv, const char *ranks)
{
    if (*argc > 1 && strcmp((*argv)[1], "--tap-ranks") == 0) {
        printf("%s\n", ranks);
        exit(0);
    }
    MPI_Init(argc, argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &tap_.rank);
    MPI_Comm_size(MPI_COMM_WORLD, &tap_.size);
}

/* A fresh seed for this run's random data, the same on every rank: TSR_TEST_SEED if set,
 * else the clock. Printed as a diagnostic, so a failing run can be repeated. */
static TAP_UNUSED_ uint64_t tap_seed(void)
{
    const char *env = getenv("TSR_TEST_SEED");
    uint64_t seed = env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL);
    MPI_Bcast(&seed, 1, MPI_UINT64_T, 0, MPI_COMM_WORLD);
    if (tap_.rank == 0)
        printf("# seed %llu (TSR_TEST_SEED=%llu repeats this run)\n", (unsigned long long)seed,
               (unsigned long long)seed);
    return seed;
}

static TAP_UNUSED_ int tap_rank(void) { return tap_.rank; }
static TAP_UNUSED_ int tap_size(void) { return tap_.size; }

static TAP_UNUSED_ tap_point_t_ *tap_add_(int failed, const char *fmt, va_list ap)
{
    if (tap_.count == tap_.capacity) {
        tap_.capacity = tap_.capacity ? 2 * tap_.capacity : 64;
        tap_.points = (tap_point_t_ *)realloc(tap_.points, (size_t)tap_.capacity * sizeof *tap_.points);
        if (!tap_.points) {
            fprintf(stderr, "tap.h: out of memory\n");
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
    }
    tap_point_t_ *p = &tap_.points[tap_.count++];
    vsnprintf(p->name, sizeof p->name, fmt, ap);
    p->failed = failed;
    p->skip_reason[0] = '\0';
    return p;
}

/* Record a test point; returns cond. */
static TAP_UNUSED_ TAP_PRINTF_(2, 3) int ok(int cond, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tap_point_t_ *p = tap_add_(!cond, fmt, ap);
    va_end(ap);
    if (!cond)
        fprintf(stderr, "# [rank %d] not ok %d - %s\n", tap_.rank, tap_.count, p->name);
    return cond;
}

/* A diagnostic line: rank 0 prints it in the TAP stream, other ranks on stderr. */
static TAP_UNUSED_ TAP_PRINTF_(1, 2) void diag(const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (tap_.rank == 0)
        printf("# %s\n", line);
    else
        fprintf(stderr, "# [rank %d] %s\n", tap_.rank, line);
}

#define TAP_DETAIL_(cond, detail_fmt, ...)                                                          \
    do {                                                                                            \
        if (!(cond))                                                                                \
            fprintf(stderr, "#   [rank %d] " detail_fmt "\n", tap_.rank, __VA_ARGS__);              \
    } while (0)

/* got == expected for integers. */
#define is_int(got, expected, ...)                                                                 \
    tap_is_int_((long long)(got), (long long)(expected), __VA_ARGS__)
static TAP_UNUSED_ TAP_PRINTF_(3, 4) int tap_is_int_(long long got, long long expected, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int cond = got == expected;
    tap_point_t_ *p = tap_add_(!cond, fmt, ap);
    va_end(ap);
    if (!cond)
        fprintf(stderr, "# [rank %d] not ok %d - %s\n#   got %lld, expected %lld\n", tap_.rank,
                tap_.count, p->name, got, expected);
    return cond;
}

/* Strings equal (NULL equals only NULL). */
static TAP_UNUSED_ TAP_PRINTF_(3, 4) int is_str(const char *got, const char *expected, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int cond = (got && expected) ? strcmp(got, expected) == 0 : got == expected;
    tap_point_t_ *p = tap_add_(!cond, fmt, ap);
    va_end(ap);
    if (!cond)
        fprintf(stderr, "# [rank %d] not ok %d - %s\n#   got \"%s\", expected \"%s\"\n", tap_.rank,
                tap_.count, p->name, got ? got : "(null)", expected ? expected : "(null)");
    return cond;
}

/* |got - expected| <= tol * max(|expected|, 1e-30), i.e. relative error within tol; NaN fails. */
static TAP_UNUSED_ TAP_PRINTF_(4, 5) int is_rel(double got, double expected, double tol, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    double scale = fabs(expected) > 1e-30 ? fabs(expected) : 1e-30;
    double err = fabs(got - expected) / scale;
    int cond = err <= tol; /* false for NaN */
    tap_point_t_ *p = tap_add_(!cond, fmt, ap);
    va_end(ap);
    if (!cond)
        fprintf(stderr, "# [rank %d] not ok %d - %s\n#   got %.9g, expected %.9g (relative error %.3g > %.3g)\n",
                tap_.rank, tap_.count, p->name, got, expected, err, tol);
    return cond;
}

/* Largest |a[i] - b[i]| / max(|b|_inf, tiny): the relative error of a whole array. */
static TAP_UNUSED_ double tap_max_rel_err(const float *a, const float *b, size_t n)
{
    double norm = 0, diff = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > diff || d != d)
            diff = d;
        if (fabs((double)b[i]) > norm)
            norm = fabs((double)b[i]);
    }
    return diff / (norm > 1e-30 ? norm : 1e-30);
}

/* Record n skipped points, all ranks alike. */
static TAP_UNUSED_ void skip(int n, const char *reason)
{
    for (int i = 0; i < n; i++) {
        va_list none;
        tap_point_t_ *p = tap_add_(0, "", none);
        snprintf(p->skip_reason, sizeof p->skip_reason, "%s", reason);
    }
}

/* Skip the whole test (call on every rank, before any point): prints "1..0 # SKIP" and exits. */
static TAP_UNUSED_ void tap_skip_all(const char *reason)
{
    if (tap_.rank == 0) {
        printf("1..0 # SKIP %s\n", reason);
        fflush(stdout);
    }
    MPI_Finalize();
    exit(0);
}

/* Reduce the verdicts over all ranks, print the TAP stream on rank 0, finalize MPI.
 * Returns the exit status for main(): 0 if every point passed on every rank. */
static TAP_UNUSED_ int tap_done(void)
{
    int counts[2] = {tap_.count, -tap_.count}, extremes[2];
    MPI_Allreduce(counts, extremes, 2, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    int n = extremes[0], same = extremes[0] == -extremes[1];
    uint64_t *mask = (uint64_t *)calloc((size_t)n + 1, sizeof *mask);
    uint64_t *all = (uint64_t *)calloc((size_t)n + 1, sizeof *all);
    int bit = tap_.rank < 63 ? tap_.rank : 63; /* ranks >= 63 share the last bit */
    for (int i = 0; i < n; i++)
        if (i >= tap_.count || tap_.points[i].failed)
            mask[i] = (uint64_t)1 << bit;
    MPI_Allreduce(mask, all, n, MPI_UINT64_T, MPI_BOR, MPI_COMM_WORLD);
    int failures = 0;
    if (tap_.rank == 0) {
        printf("1..%d\n", n + !same);
        for (int i = 0; i < n; i++) {
            const char *name = i < tap_.count ? tap_.points[i].name : "(not reached on rank 0)";
            if (i < tap_.count && tap_.points[i].skip_reason[0]) {
                printf("ok %d # SKIP %s\n", i + 1, tap_.points[i].skip_reason);
                continue;
            }
            if (!all[i]) {
                printf("ok %d - %s\n", i + 1, name);
                continue;
            }
            failures++;
            printf("not ok %d - %s # failed on rank", i + 1, name);
            for (int r = 0; r < 64 && r < tap_.size; r++)
                if (all[i] >> r & 1)
                    printf(r == 63 ? " 63+" : " %d", r);
            printf("\n");
        }
        if (!same) {
            failures++;
            printf("not ok %d - every rank ran the same number of test points\n", n + 1);
        }
        fflush(stdout);
    }
    MPI_Bcast(&failures, 1, MPI_INT, 0, MPI_COMM_WORLD);
    free(mask);
    free(all);
    free(tap_.points);
    MPI_Finalize();
    return failures ? 1 : 0;
}

#endif /* TESSERA_TESTS_TAP_H */
