# tests/local.mk: TAP tests. Each program declares the MPI rank counts it runs at (see
# tests/tap.h); tests/tap-mpi.sh runs it at each under $MPIEXEC and merges the TAP.
# MPIEXEC and MPIEXEC_FLAGS from the environment (or make's command line) win over configure's
# (TSR_MPIEXEC, TSR_MPIEXEC_FLAGS); a MPIEXEC given alone runs without configure's flags, since
# they belong to configure's launcher (Open MPI's --oversubscribe means nothing to srun).
LOG_DRIVER = env AM_TAP_AWK='$(AWK)' $(SHELL) $(top_srcdir)/build-aux/tap-driver.sh
LOG_COMPILER = $(SHELL) $(top_srcdir)/tests/tap-mpi.sh
# Open MPI refuses to start as root (CI runs as root) and more ranks than cores (the tests run
# up to 8 on 2) unless told, and without "quiet" adds a multi-line banner to the one-line error
# of a run that fails, whichever Open MPI launcher the environment names; its session directory
# stays in the real TMPDIR when a test gives tsr-train a bad one; OMPIO's sharedfp/lockedfile
# (which aborts on long paths, see m4/tsr_mpi.m4) is left out. MPICH ignores these.
# Undefined behaviour found under -fsanitize=undefined ends the program (UBSan's default is to
# print a line and go on), so that the test fails instead of passing. OpenMP's threads sleep
# rather than spin while they wait (passive): tests share the cores with each other and with
# more ranks than cores, where spinning threads slow everything down many times over.
AM_TESTS_ENVIRONMENT = if test -n "$${MPIEXEC}"; then MPIEXEC_FLAGS=$${MPIEXEC_FLAGS-}; \
	else MPIEXEC='$(TSR_MPIEXEC)'; MPIEXEC_FLAGS=$${MPIEXEC_FLAGS-'$(TSR_MPIEXEC_FLAGS)'}; fi; \
	TSR_BUILDDIR='$(abs_top_builddir)'; OMPI_ALLOW_RUN_AS_ROOT=1; OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; \
	OMPI_MCA_rmaps_base_oversubscribe=1; OMPI_MCA_orte_execute_quiet=1; OMPI_MCA_sharedfp='^lockedfile'; \
	OMPI_MCA_orte_tmpdir_base=$${TMPDIR:-/tmp}; \
	UBSAN_OPTIONS=$${UBSAN_OPTIONS-halt_on_error=1:print_stacktrace=1}; \
	OMP_WAIT_POLICY=$${OMP_WAIT_POLICY-passive}; \
	export MPIEXEC MPIEXEC_FLAGS TSR_BUILDDIR OMPI_ALLOW_RUN_AS_ROOT OMPI_ALLOW_RUN_AS_ROOT_CONFIRM UBSAN_OPTIONS \
	OMP_WAIT_POLICY OMPI_MCA_rmaps_base_oversubscribe OMPI_MCA_orte_execute_quiet OMPI_MCA_sharedfp \
	OMPI_MCA_orte_tmpdir_base;
# Shell tests print TAP themselves and run their programs under mpiexec where needed.
TEST_EXTENSIONS = .sh
SH_LOG_DRIVER = $(LOG_DRIVER)
SH_LOG_COMPILER = $(SHELL)
LDADD = libtessera.la

tsr_tests = \
	tests/test_core_status \
	tests/test_core_rng \
	tests/test_core_memory \
	tests/test_core_misc \
	tests/test_core_options \
	tests/test_device_cpu \
	tests/test_device_cuda \
	tests/test_kernels_layer \
	tests/test_kernels_gemm \
	tests/test_grid_layout \
	tests/test_grid_shapes \
	tests/test_comm_collectives \
	tests/test_comm_nonblocking \
	tests/test_comm_device

tsr_tests += tests/test_kernels_optim

check_PROGRAMS += $(tsr_tests)
TESTS += $(tsr_tests)
EXTRA_DIST += tests/tap.h tests/gpt_runs.h tests/tap-mpi.sh tests/tap-sh.sh tests/test_device_copy2d.h
# test_core_memory tells AddressSanitizer to let an allocation of SIZE_MAX/2 fail (its
# __asan_default_options), which the sanitizer sees only if the program exports it.
tests_test_core_memory_LDFLAGS = $(AM_LDFLAGS) -Wl,--export-dynamic

check_PROGRAMS += tests/test_kernels_attention
TESTS += tests/test_kernels_attention

# The profiler (tessera/prof.h): exclusive times, levels, axis labels and the whole-step trace.
check_PROGRAMS += tests/test_prof_regions
TESTS += tests/test_prof_regions
EXTRA_DIST += tests/json_check.h
# tsr-train --trace on every layout; json_valid checks the file's syntax for it.
check_PROGRAMS += tests/json_valid
tests_json_valid_LDADD =
TESTS += tests/test_train_trace.sh
EXTRA_DIST += tests/test_train_trace.sh

# tsr-train refuses what would lose a job or a result (issue 16), before step 1 where it can.
TESTS += tests/test_train_guard.sh
EXTRA_DIST += tests/test_train_guard.sh
# The CPU threads per rank: printed, and bitwise equal losses from equal thread counts.
TESTS += tests/test_train_threads.sh
EXTRA_DIST += tests/test_train_threads.sh

# tsr-bench's numeric options, parsed whole and checked.
TESTS += tests/test_bench_options.sh
EXTRA_DIST += tests/test_bench_options.sh

# Fuzz targets of the checkpoint, token-shard and weights-file readers (tests/fuzz, see HACKING): replayed
# over their seeds by make check with any compiler; built for libFuzzer by `make fuzz`.
fuzz_ckpt_common = tests/fuzz/ckpt_common.c tests/fuzz/fuzz.h
check_PROGRAMS += tests/fuzz/replay_ckpt tests/fuzz/replay_ckpt_bytes tests/fuzz/replay_shard tests/fuzz/replay_weights
tests_fuzz_replay_ckpt_SOURCES = tests/fuzz/replay.c tests/fuzz/fuzz_ckpt.c $(fuzz_ckpt_common)
tests_fuzz_replay_ckpt_LDADD = libtessera.la $(HDF5_LIBS)
tests_fuzz_replay_ckpt_bytes_SOURCES = tests/fuzz/replay.c tests/fuzz/fuzz_ckpt_bytes.c $(fuzz_ckpt_common)
tests_fuzz_replay_shard_SOURCES = tests/fuzz/replay.c tests/fuzz/fuzz_shard.c tests/fuzz/fuzz.h
tests_fuzz_replay_weights_SOURCES = tests/fuzz/replay.c tests/fuzz/fuzz_weights.c tests/fuzz/fuzz.h
TESTS += tests/test_fuzz_replay.sh
EXTRA_DIST += tests/test_fuzz_replay.sh tests/fuzz/make-seeds.sh
EXTRA_PROGRAMS = tests/fuzz/fuzz_ckpt tests/fuzz/fuzz_ckpt_bytes tests/fuzz/fuzz_shard tests/fuzz/fuzz_weights
tests_fuzz_fuzz_ckpt_SOURCES = tests/fuzz/fuzz_ckpt.c $(fuzz_ckpt_common)
tests_fuzz_fuzz_ckpt_LDADD = libtessera.la $(HDF5_LIBS)
tests_fuzz_fuzz_ckpt_bytes_SOURCES = tests/fuzz/fuzz_ckpt_bytes.c $(fuzz_ckpt_common)
tests_fuzz_fuzz_shard_SOURCES = tests/fuzz/fuzz_shard.c tests/fuzz/fuzz.h
tests_fuzz_fuzz_weights_SOURCES = tests/fuzz/fuzz_weights.c tests/fuzz/fuzz.h
LIBFUZZER_FLAGS = -fsanitize=fuzzer
tests_fuzz_fuzz_ckpt_LDFLAGS = $(AM_LDFLAGS) $(LIBFUZZER_FLAGS)
tests_fuzz_fuzz_ckpt_bytes_LDFLAGS = $(AM_LDFLAGS) $(LIBFUZZER_FLAGS)
tests_fuzz_fuzz_shard_LDFLAGS = $(AM_LDFLAGS) $(LIBFUZZER_FLAGS)
tests_fuzz_fuzz_weights_LDFLAGS = $(AM_LDFLAGS) $(LIBFUZZER_FLAGS)
CLEANFILES += $(EXTRA_PROGRAMS)
fuzz: $(EXTRA_PROGRAMS)
.PHONY: fuzz

# Every option of every tool's --help in its man page (and back), the ENVIRONMENT sections,
# tessera(3)'s sections and installed documents.
TESTS += tests/test_manpages.sh
EXTRA_DIST += tests/test_manpages.sh
