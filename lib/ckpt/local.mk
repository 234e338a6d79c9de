# lib/ckpt/local.mk: the checkpoint module (parallel HDF5 writer and reader, tsr-ckpt).
libtessera_la_SOURCES += \
	lib/ckpt/ckpt_impl.h \
	lib/ckpt/common.c \
	lib/ckpt/writer.c \
	lib/ckpt/reader.c \
	lib/ckpt/lock.c
tsr_include_HEADERS += lib/include/tessera/ckpt.h
libtessera_la_LIBADD += $(HDF5_LIBS)
apps_tsr_bench_SOURCES += apps/bench_ckpt.c

bin_PROGRAMS += apps/tsr-ckpt
apps_tsr_ckpt_LDADD = libtessera.la -lm
apps_tsr_ckpt_LDFLAGS =

check_PROGRAMS += tests/test_ckpt_io
TESTS += tests/test_ckpt_io
# The test damages files with HDF5 itself (to find a dataset's offset).
tests_test_ckpt_io_LDADD = libtessera.la $(HDF5_LIBS)

# tsr-ckpt and tsr-bench ckpt, driven by a shell script that prints TAP.
TESTS += tests/test_ckpt_tool.sh
EXTRA_DIST += tests/test_ckpt_tool.sh

# Checkpoints damaged on purpose (tests/ckpt-craft edits them with HDF5, as h5py could),
# refused by tsr-ckpt and tsr-train --resume.
check_PROGRAMS += tests/ckpt-craft
tests_ckpt_craft_LDADD = libtessera.la $(HDF5_LIBS)
TESTS += tests/test_ckpt_hostile.sh
EXTRA_DIST += tests/test_ckpt_hostile.sh

# Two writers of one directory: temporary files of their own, and tsr_ckpt_lock.
check_PROGRAMS += tests/test_ckpt_lock
TESTS += tests/test_ckpt_lock

# A disk that fills during a checkpoint write, on a small tmpfs; also as on a file system
# without fallocate (tests/nofalloc.c, preloaded).
TESTS += tests/test_ckpt_enospc.sh
EXTRA_DIST += tests/test_ckpt_enospc.sh
check_LTLIBRARIES = tests/nofalloc.la
tests_nofalloc_la_SOURCES = tests/nofalloc.c
tests_nofalloc_la_LDFLAGS = -module -avoid-version -shared -rpath /nowhere
tests_nofalloc_la_LIBADD =

# Saving and restoring a ZeRO optimizer through the writer and reader.
libtessera_la_SOURCES += lib/ckpt/state.c
ckpt_state_tests = tests/test_ckpt_state tests/test_ckpt_reshard
check_PROGRAMS += $(ckpt_state_tests)
TESTS += $(ckpt_state_tests)
EXTRA_DIST += doc/checkpoint.md tests/test_ckpt_model.h
# test_ckpt_state damages a file with HDF5 itself (to find a dataset's offset).
tests_test_ckpt_state_LDADD = libtessera.la $(HDF5_LIBS)
