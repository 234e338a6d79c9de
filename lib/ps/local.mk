# lib/ps/local.mk: the parameter server (server ranks, asynchronous push/pull, bounded
# staleness): its sources, public header and tests.
libtessera_la_SOURCES += lib/ps/ps_impl.h lib/ps/table.c lib/ps/server.c lib/ps/worker.c
tsr_include_HEADERS += lib/include/tessera/ps.h
ps_tests = tests/test_ps_sync
check_PROGRAMS += $(ps_tests)
TESTS += $(ps_tests)
EXTRA_DIST += doc/ps.md
# tsr-train with parameter servers: options, errors, staleness 0 against dp.
TESTS += tests/test_ps_train.sh
EXTRA_DIST += tests/test_ps_train.sh
# Checkpoints of a PS run, resumed on PS and ZeRO layouts bitwise; a failing server or worker.
TESTS += tests/test_ps_ckpt.sh
EXTRA_DIST += tests/test_ps_ckpt.sh
# tsr-bench ps (apps/bench_ps.c) and its test.
apps_tsr_bench_SOURCES += apps/bench_ps.c
TESTS += tests/test_bench_ps.sh
EXTRA_DIST += tests/test_bench_ps.sh
