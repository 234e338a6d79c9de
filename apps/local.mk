# apps/local.mk: the command-line drivers. tsr-bench has one source file per subcommand
# (apps/bench_<module>.c, listed in lib/<module>/local.mk). Installed programs set their own
# _LDFLAGS so that the tests' -no-install does not apply to them.
bin_PROGRAMS += apps/tsr-bench
apps_tsr_bench_SOURCES = apps/tsr-bench.c apps/bench.h apps/bench_util.c
apps_tsr_bench_LDADD = libtessera.la -lm
apps_tsr_bench_LDFLAGS =

# tsr-plot: a loss-curve SVG from tsr-train --log-json files; libc and libm only (issue 17).
bin_PROGRAMS += apps/tsr-plot
apps_tsr_plot_SOURCES = apps/tsr-plot.c
apps_tsr_plot_LDADD = -lm
apps_tsr_plot_LDFLAGS =
dist_man_MANS += doc/tsr-plot.1
TESTS += tests/test_plot.sh
EXTRA_DIST += tests/test_plot.sh
