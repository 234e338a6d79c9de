# lib/pipe/local.mk: the pipe module (pipeline schedules, simulator, executor, partitioner, traces):
# its sources, public header, tsr-bench subcommand and tests.
tsr_include_HEADERS += lib/include/tessera/pipe.h
apps_tsr_bench_SOURCES += apps/bench_pipe.c
libtessera_la_SOURCES += \
	lib/pipe/pipe_impl.h \
	lib/pipe/schedule.c \
	lib/pipe/simulate.c \
	lib/pipe/execute.c \
	lib/pipe/trace.c \
	lib/pipe/partition.c
check_PROGRAMS += tests/test_pipe_schedule
TESTS += tests/test_pipe_schedule
check_PROGRAMS += tests/test_pipe_mlp
TESTS += tests/test_pipe_mlp
noinst_PROGRAMS += doc/examples/pipe_mlp
doc_examples_pipe_mlp_LDADD = libtessera.la -lm
EXTRA_DIST += doc/pipeline.md doc/pipe-gpipe.svg doc/pipe-1f1b.svg doc/pipe-interleaved.svg doc/pipe-zb-h1.svg
