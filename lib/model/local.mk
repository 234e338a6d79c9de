# lib/model/local.mk: the GPT model (issue 7), the tsr-train driver, their tests and docs.
libtessera_la_SOURCES += lib/model/model_impl.h lib/model/config.c lib/model/gpt.c lib/model/layers.c \
	lib/model/stage.c lib/model/infer.c lib/model/sample.c lib/model/weights.c
tsr_include_HEADERS += lib/include/tessera/model.h

bin_PROGRAMS += apps/tsr-train
apps_tsr_train_SOURCES = apps/tsr-train.c apps/app.h apps/app.c
apps_tsr_train_LDADD = libtessera.la -lm
apps_tsr_train_LDFLAGS =

# tsr-generate (issue 19): text from a checkpoint, with KV caches, on any layout.
bin_PROGRAMS += apps/tsr-generate
apps_tsr_generate_SOURCES = apps/tsr-generate.c apps/app.h apps/app.c
apps_tsr_generate_LDADD = libtessera.la -lm
apps_tsr_generate_LDFLAGS =
TESTS += tests/test_generate_cli.sh
EXTRA_DIST += tests/test_generate_cli.sh

model_tests = tests/test_model_config tests/test_model_layout tests/test_model_device tests/test_model_infer
check_PROGRAMS += $(model_tests)
TESTS += $(model_tests)
EXTRA_DIST += lib/model/local.mk

# tsr-train's options, errors, checkpoint and resume, driven by a shell script that prints TAP.
TESTS += tests/test_train_cli.sh tests/test_train_gpu.sh
EXTRA_DIST += tests/test_train_cli.sh tests/test_train_gpu.sh
# How a run ends: signals, --time-limit, --ckpt-keep, --max-bad-steps (issue 17).
TESTS += tests/test_train_stop.sh
EXTRA_DIST += tests/test_train_stop.sh
# The validation loss: the same on every layout (issue 17).
TESTS += tests/test_train_val.sh
EXTRA_DIST += tests/test_train_val.sh
# The start-up summary, checkpoint I/O rates, peak memory over the ranks, the checkpoint's size.
TESTS += tests/test_train_progress.sh
EXTRA_DIST += tests/test_train_progress.sh

# The training-driver example (public API only) and the documentation.
noinst_PROGRAMS += doc/examples/train_driver
doc_examples_train_driver_LDADD = libtessera.la -lm
dist_man_MANS += doc/tsr-train.1
EXTRA_DIST += doc/model.md

# tsr-bench train (apps/bench_train.c) and its test, a shell script that prints TAP.
apps_tsr_bench_SOURCES += apps/bench_train.c
# tsr-bench generate (apps/bench_generate.c, issue 19): generation speed and KV-cache bytes.
apps_tsr_bench_SOURCES += apps/bench_generate.c
TESTS += tests/test_bench_train.sh
EXTRA_DIST += tests/test_bench_train.sh

# What a checkpoint of the model must hold, from its /config (tsr-ckpt verify).
libtessera_la_SOURCES += lib/model/ckpt_check.c

# GPT-2 weights in and out (issue 19): tsr-ckpt import and export of llm.c's and Hugging
# Face's files (lib/model/weights.c), on files that tests/weights-craft writes on its own.
check_PROGRAMS += tests/weights-craft
tests_weights_craft_LDADD = libtessera.la -lm
TESTS += tests/test_ckpt_import.sh
EXTRA_DIST += tests/test_ckpt_import.sh
