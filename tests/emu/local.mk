# tests/emu/local.mk: the CPU emulation of the CUDA subset that lib/device/cuda_launch.h allows
# (cuda_emu.h), and tests that run CUDA kernels under it. They need a C++17 compiler, and neither
# a GPU, the CUDA toolkit nor MPI.
#
# To run a .cu file's kernels here: add a two-line tests/emu/emu_<name>.cc that includes
# "device/<name>.cu" (as emu_cuda_kernels.cc does) to a test's _SOURCES, with
# _CPPFLAGS = $(tsr_emu_cppflags), _CXXFLAGS = $(tsr_emu_cxxflags), _LDADD = $(tsr_emu_ldadd).
EXTRA_DIST += tests/emu/local.mk

if TSR_HAVE_CXX17
# Only the project's headers: not CUDA's (the emulation must not need them) nor MPI's.
tsr_emu_cppflags = -DTSR_CUDA_EMU -I$(top_srcdir)/tests/emu -I$(top_srcdir)/tests -I$(top_srcdir)/lib \
	-I$(top_srcdir)/lib/include -I$(top_builddir)/lib/include
# Variable-length arrays are not CUDA: g++ would accept them.
tsr_emu_cxxflags = -std=c++17 -Wall -Wextra -Werror=vla
tsr_emu_ldadd = tests/emu/libtsr_emu.a

check_LIBRARIES = tests/emu/libtsr_emu.a
tests_emu_libtsr_emu_a_SOURCES = tests/emu/cuda_emu.cc tests/emu/cuda_emu.h
tests_emu_libtsr_emu_a_CPPFLAGS = $(tsr_emu_cppflags)
tests_emu_libtsr_emu_a_CXXFLAGS = $(tsr_emu_cxxflags)

tsr_emu_tests = tests/emu/test_emu_selftest
check_PROGRAMS += $(tsr_emu_tests)
TESTS += $(tsr_emu_tests)

tests_emu_test_emu_selftest_SOURCES = tests/emu/test_emu_selftest.cc tests/emu/emu_cuda_kernels.cc
tests_emu_test_emu_selftest_CPPFLAGS = $(tsr_emu_cppflags)
tests_emu_test_emu_selftest_CXXFLAGS = $(tsr_emu_cxxflags)
tests_emu_test_emu_selftest_LDADD = $(tsr_emu_ldadd)
endif

if TSR_HAVE_CXX17
# cuda_attention.cu and cuda_gemm_epilogue.cu against references in double.
check_PROGRAMS += tests/emu/test_emu_attention
TESTS += tests/emu/test_emu_attention
tests_emu_test_emu_attention_SOURCES = tests/emu/test_emu_attention.cc tests/emu/emu_cuda_attention.cc \
	tests/emu/emu_cuda_gemm_epilogue.cc
tests_emu_test_emu_attention_CPPFLAGS = $(tsr_emu_cppflags)
tests_emu_test_emu_attention_CXXFLAGS = $(tsr_emu_cxxflags)
tests_emu_test_emu_attention_LDADD = $(tsr_emu_ldadd)

# The launchers of cuda_layer.cu and cuda_optim.cu against double-precision references.
check_PROGRAMS += tests/emu/test_emu_layer_optim
TESTS += tests/emu/test_emu_layer_optim
tests_emu_test_emu_layer_optim_SOURCES = tests/emu/test_emu_layer_optim.cc tests/emu/emu_cuda_layer.cc \
	tests/emu/emu_cuda_optim.cc
tests_emu_test_emu_layer_optim_CPPFLAGS = $(tsr_emu_cppflags)
tests_emu_test_emu_layer_optim_CXXFLAGS = $(tsr_emu_cxxflags)
tests_emu_test_emu_layer_optim_LDADD = $(tsr_emu_ldadd)
endif

if TSR_HAVE_CXX17
# cuda_attention_cached.cu (generation's attention against a KV cache) against a reference in double.
check_PROGRAMS += tests/emu/test_emu_attention_cached
TESTS += tests/emu/test_emu_attention_cached
tests_emu_test_emu_attention_cached_SOURCES = tests/emu/test_emu_attention_cached.cc \
	tests/emu/emu_cuda_attention_cached.cc
tests_emu_test_emu_attention_cached_CPPFLAGS = $(tsr_emu_cppflags)
tests_emu_test_emu_attention_cached_CXXFLAGS = $(tsr_emu_cxxflags)
tests_emu_test_emu_attention_cached_LDADD = $(tsr_emu_ldadd)
endif
