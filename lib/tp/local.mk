# lib/tp/local.mk: the tp module (tensor parallelism: distributed matrices, SUMMA, layer operations):
# its sources, public header, tsr-bench subcommand and tests.
tsr_include_HEADERS += lib/include/tessera/tp.h
apps_tsr_bench_SOURCES += apps/bench_tp.c
