/* bench_zero.c: tsr-bench zero (arrives with the zero module). */
#include "bench.h"

int bench_zero(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return bench_fail("zero", "not built yet");
}
