# lib/zero/local.mk: the zero module (ZeRO optimizer sharding, optimizers, clipping, loss scaling):
# its sources, public header, tsr-bench subcommand and tests.
libtessera_la_SOURCES += lib/zero/zero.c lib/zero/optim.c
tsr_include_HEADERS += lib/include/tessera/zero.h
apps_tsr_bench_SOURCES += apps/bench_zero.c
zero_tests = tests/test_zero_train tests/test_zero_clip
check_PROGRAMS += $(zero_tests)
TESTS += $(zero_tests)
EXTRA_DIST += doc/zero.md
