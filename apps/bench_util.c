/* bench_util.c: helpers shared by the tsr-bench subcommands. */
#include <stdarg.h>
#include <stdio.h>

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
