# lib/data/local.mk: the data module (llm.c token shards, the step-indexed loader,
# synthetic text) and tsr-tokenize.
libtessera_la_SOURCES += lib/data/data.c
tsr_include_HEADERS += lib/include/tessera/data.h

bin_PROGRAMS += apps/tsr-tokenize
apps_tsr_tokenize_LDADD = libtessera.la -lm
apps_tsr_tokenize_LDFLAGS =

check_PROGRAMS += tests/test_data_shards
TESTS += tests/test_data_shards tests/test_data_tokenize.sh
EXTRA_DIST += tests/test_data_tokenize.sh
# tsr-tokenize streams its input and shows progress on a terminal (issue 17).
TESTS += tests/test_data_tokenize_stream.sh
EXTRA_DIST += tests/test_data_tokenize_stream.sh
