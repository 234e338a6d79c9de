/* bench_util.c: helpers shared by the tsr-bench subcommands. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "bench.h"

int bench_rank(void)
{
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    return rank;
}

int bench_fail(const char *sub, const char *fmt, ...)
{
    if (bench_rank() == 0) {
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "tsr-bench %s: ", sub);
        vfprintf(stderr, fmt, ap);
        fputc('\n', stderr);
        va_end(ap);
    }
    return 1;
}

int bench_int(const char *sub, const char *opt, const char *text, long lo, long hi, int *out)
{
    int64_t v;
    if (tsr_parse_i64(text, lo, hi, &v) != TSR_OK)
        return bench_fail(sub, "%s %s: %s", opt, text, tsr_last_error());
    *out = (int)v;
    return 0;
}

int bench_number(const char *sub, const char *opt, const char *text, double lo, double hi, double *out)
{
    double v;
    if (tsr_parse_f64(text, &v) != TSR_OK || v < lo || v > hi)
        return bench_fail(sub, "%s %s: expected a finite number in [%g, %g]", opt, text, lo, hi);
    *out = v;
    return 0;
}

int bench_failed(const char *sub, tsr_status_t st, const char *what, const char *own)
{
    int rank = bench_rank(), size = 0, first;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    int mine = st != TSR_OK ? rank : size;
    MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (first == size)
        return 0;
    if (rank == first)
        fprintf(stderr, "tsr-bench %s: %s%s%s\n", sub, own ? "" : what, own ? "" : ": ", own ? own : tsr_last_error());
    return 1;
}

int bench_local_rank(void)
{
    MPI_Comm node;
    int r = 0;
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
    MPI_Comm_rank(node, &r);
    MPI_Comm_free(&node);
    return r;
}

int bench_layout(const char *sub, int given, int world, tsr_layout_t *layout)
{
    char text[TSR_LAYOUT_STRLEN];
    if (!given)
        layout->dp = world;
    if (tsr_layout_ranks(layout) == world)
        return 0;
    return bench_fail(sub, "--layout %s needs %d ranks, but mpiexec started %d",
                      tsr_layout_format(layout, text, sizeof text), tsr_layout_ranks(layout), world);
}
