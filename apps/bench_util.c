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
