# lib/tp/local.mk: the tp module (tensor parallelism: distributed matrices, SUMMA, layer operations):
# its sources, public header, tsr-bench subcommand and tests.
libtessera_la_SOURCES += lib/tp/tp_impl.h lib/tp/dmat.c lib/tp/summa.c lib/tp/linear.c lib/tp/norm.c \
	lib/tp/attention.c lib/tp/embed.c \
	lib/tp/ref.c lib/tp/bytes.c
tsr_include_HEADERS += lib/include/tessera/tp.h
apps_tsr_bench_SOURCES += apps/bench_tp.c

tp_tests = tests/test_tp_summa tests/test_tp_ref tests/test_tp_ops tests/test_tp_block
check_PROGRAMS += $(tp_tests)
TESTS += $(tp_tests)
EXTRA_DIST += tests/test_tp_common.h doc/tp.md
