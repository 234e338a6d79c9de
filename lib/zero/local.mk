# lib/zero/local.mk: the zero module (ZeRO optimizer sharding, optimizers, clipping, loss scaling):
# its sources, public header, tsr-bench subcommand and tests.
tsr_include_HEADERS += lib/include/tessera/zero.h
apps_tsr_bench_SOURCES += apps/bench_zero.c
