# lib/pipe/local.mk: the pipe module (pipeline schedules, simulator, executor, partitioner, traces):
# its sources, public header, tsr-bench subcommand and tests.
tsr_include_HEADERS += lib/include/tessera/pipe.h
apps_tsr_bench_SOURCES += apps/bench_pipe.c
