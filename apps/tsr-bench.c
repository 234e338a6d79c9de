/*
 * tsr-bench: Tessera's performance measurements, one subcommand per module.
 *
 *   mpiexec -n N tsr-bench tp|pipe|zero|ckpt|train|generate|ps [--json] [OPTIONS]
 *
 * Figures come from the library's own counters (bytes sent per communicator, the tracked
 * allocator) next to the analytical formulas; with --json each measured configuration is
 * one JSON object on its own line.
 */
#include <stdio.h>
#include <string.h>

#include "bench.h"

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} subcommands[] = {
    {"tp", bench_tp, "SUMMA (2D) and Megatron (1D) tensor-parallel operations: time, GFLOP/s, bytes"},
    {"pipe", bench_pipe, "pipeline schedules on the executor: measured, simulated and formula bubble"},
    {"zero", bench_zero, "ZeRO stages: measured bytes per rank against the ZeRO formulas"},
    {"ckpt", bench_ckpt, "checkpoint write and read bandwidth against a plain sequential write"},
    {"train", bench_train, "GPT training throughput: tokens/s, ms per step, MFU, loss, peak bytes"},
    {"generate", bench_generate, "GPT generation through the KV caches: prompt and decode tokens/s, KV bytes"},
    {"ps", bench_ps, "parameter servers by staleness, with a straggler, against synchronous dp"},
};
#define NSUB (sizeof subcommands / sizeof subcommands[0])

static void usage(FILE *out)
{
    fprintf(out, "Usage: mpiexec -n N tsr-bench SUBCOMMAND [--json] [OPTIONS]\n"
                 "       tsr-bench SUBCOMMAND --help\n\nSubcommands:\n");
    for (size_t i = 0; i < NSUB; i++)
        fprintf(out, "  %-8s %s\n", subcommands[i].name, subcommands[i].summary);
    fprintf(out, "\nOptions for all: --json (one JSON object per configuration), --help, --version.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 1 : 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("tsr-bench (%s)\n", tsr_build_info());
        return 0;
    }
    size_t i;
    for (i = 0; i < NSUB && strcmp(argv[1], subcommands[i].name) != 0; i++)
        ;
    if (i == NSUB) {
        fprintf(stderr, "tsr-bench: unknown subcommand \"%s\" (expected tp, pipe, zero, ckpt, train, generate or ps; see tsr-bench --help)\n",
                argv[1]);
        return 1;
    }
    tsr_mem_keep_freed_host_memory(); /* before MPI_Init: MPI's buffers too */
    MPI_Init(&argc, &argv);
    int status = subcommands[i].run(argc - 1, argv + 1);
    MPI_Finalize();
    return status;
}
