/* bench_pipe.c: tsr-bench pipe (arrives with the pipe module). */
#include "bench.h"

int bench_pipe(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    return bench_fail("pipe", "not built yet");
}
