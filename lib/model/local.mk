# lib/model/local.mk: the GPT model (issue 7), the tsr-train driver, their tests and docs.
libtessera_la_SOURCES += lib/model/model_impl.h lib/model/config.c lib/model/gpt.c lib/model/block.c
tsr_include_HEADERS += lib/include/tessera/model.h


model_tests = tests/test_model_layout
check_PROGRAMS += $(model_tests)
TESTS += $(model_tests)
EXTRA_DIST += lib/model/local.mk
