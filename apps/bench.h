/*
 * bench.h: what the tsr-bench subcommands share. Each subcommand lives in
 * apps/bench_<module>.c and is called after MPI_Init with the arguments that follow its
 * name (argv[0] is the subcommand's name). It returns the process exit status.
 */
#ifndef TESSERA_APPS_BENCH_H
#define TESSERA_APPS_BENCH_H

#include <tessera.h>

int bench_tp(int argc, char **argv);
int bench_pipe(int argc, char **argv);
int bench_zero(int argc, char **argv);
int bench_ckpt(int argc, char **argv);
int bench_train(int argc, char **argv);
int bench_generate(int argc, char **argv);
int bench_ps(int argc, char **argv);

/* Print "tsr-bench SUB: message" on rank 0 and return 1 (for one-line errors on bad input). */
int bench_fail(const char *sub, const char *fmt, ...) TSR_PRINTF(2, 3);

/* Parse option opt's value text as an integer in [lo, hi] (tsr_parse_i64) into *out; on a bad
 * value print "tsr-bench SUB: OPT TEXT: expected an integer in [lo, hi]" and return 1. */
int bench_int(const char *sub, const char *opt, const char *text, long lo, long hi, int *out);

/* The same for a finite number in [lo, hi] (tsr_parse_f64). */
int bench_number(const char *sub, const char *opt, const char *text, double lo, double hi, double *out);

/* The rank of this process in MPI_COMM_WORLD. */
int bench_rank(void);

/* Agree on failure over MPI_COMM_WORLD: if any rank's st is not TSR_OK, the lowest failing
 * rank prints "tsr-bench SUB: what: " and the library's error (or only @p own, an error of
 * tsr-bench's own) as one line, and every rank returns 1; 0 when all succeeded. Collective. */
int bench_failed(const char *sub, tsr_status_t st, const char *what, const char *own);

/* This rank's index among the ranks of its node (its GPU is that modulo the GPUs). */
int bench_local_rank(void);

/* The --layout of a run of world ranks: dp=world unless given; a layout of another rank count
 * prints "tsr-bench SUB: --layout L needs N ranks, but mpiexec started M" and returns 1. */
int bench_layout(const char *sub, int given, int world, tsr_layout_t *layout);

#endif /* TESSERA_APPS_BENCH_H */
