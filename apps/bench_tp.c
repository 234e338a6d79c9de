/* bench_tp.c: tsr-bench tp (arrives with the tp module). */
#include "bench.h"

int bench_tp(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return bench_fail("tp", "not built yet");
}
