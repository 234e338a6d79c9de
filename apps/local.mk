# apps/local.mk: the command-line drivers. tsr-bench has one source file per subcommand
# (apps/bench_<module>.c, listed in lib/<module>/local.mk). Installed programs set their own
# _LDFLAGS so that the tests' -no-install does not apply to them.
bin_PROGRAMS += apps/tsr-bench
apps_tsr_bench_SOURCES = apps/tsr-bench.c apps/bench.h apps/bench_util.c
apps_tsr_bench_LDADD = libtessera.la -lm
apps_tsr_bench_LDFLAGS =
