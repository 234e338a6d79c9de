# lib/local.mk: libtessera, one libtool library built from every module.
lib_LTLIBRARIES += libtessera.la
libtessera_la_LDFLAGS = -version-info $(TSR_LT_VERSION) $(CUDA_LDFLAGS) $(NCCL_LDFLAGS) $(OPENMP_CFLAGS)
libtessera_la_LIBADD = lib/libtsr_cpu.la $(NCCL_LIBS) $(CUDA_LIBS) $(BLAS_LIBS) -lm

# The CPU backend and its kernels, a convenience library of libtessera so that they get the
# kernels' optimization level (TSR_KERNEL_OPT: -O3 unless CFLAGS was given to configure).
noinst_LTLIBRARIES = lib/libtsr_cpu.la
lib_libtsr_cpu_la_CFLAGS = $(AM_CFLAGS) $(TSR_KERNEL_OPT) $(TSR_DISPATCH_CFLAGS)
lib_libtsr_cpu_la_SOURCES = lib/device/cpu.c lib/device/cpu_threads.c lib/device/cpu_math.h \
	lib/device/cpu_layer.c lib/device/cpu_gemm.c lib/device/cpu_optim.c lib/device/cpu_attention.c

libtessera_la_SOURCES = \
	lib/core/internal.h \
	lib/core/status.c \
	lib/core/log.c \
	lib/core/timer.c \
	lib/core/prof.c \
	lib/core/memory.c \
	lib/core/rng.c \
	lib/core/dtype.c \
	lib/core/version.c \
	lib/core/options.c \
	lib/core/file.c \
	lib/device/device_impl.h \
	lib/device/device.c \
	lib/device/cuda.c \
	lib/device/cuda_kernels.h \
	lib/device/cuda_impl.h \
	lib/device/cuda_launch.h \
	lib/device/kernels_layer.c \
	lib/device/layer_impl.h \
	lib/device/cuda_layer.h \
	lib/device/gemm_impl.h \
	lib/device/kernels_gemm.c \
	lib/device/cuda_gemm.c \
	lib/device/cuda_gemm_epilogue.h \
	lib/comm/comm_impl.h \
	lib/comm/comm.c \
	lib/comm/comm_mpi.c \
	lib/comm/comm_nccl.c \
	lib/comm/comm_stage.c \
	lib/grid/layout.c \
	lib/grid/grid.c

if TSR_HAVE_CUDA
libtessera_la_SOURCES += lib/device/cuda_kernels.cu
libtessera_la_SOURCES += lib/device/cuda_layer.cu
libtessera_la_SOURCES += lib/device/cuda_gemm_epilogue.cu
endif

# Optimizer updates, reductions, axpy, scale and casts of tessera/kernels.h.
libtessera_la_SOURCES += lib/device/kernels_optim.c lib/device/optim_impl.h \
	lib/device/cuda_optim.h
if TSR_HAVE_CUDA
libtessera_la_SOURCES += lib/device/cuda_optim.cu
endif

# nvcc through libtool: build-aux/nvcc-libtool turns libtool's -fPIC into -Xcompiler -fPIC.
SUFFIXES += .cu
AM_V_NVCC = $(am__v_NVCC_@AM_V@)
am__v_NVCC_ = $(am__v_NVCC_@AM_DEFAULT_V@)
am__v_NVCC_0 = @echo "  NVCC    " $@;
.cu.lo:
	$(AM_V_NVCC)$(LIBTOOL) $(AM_V_lt) --tag=CC --mode=compile $(SHELL) $(top_srcdir)/build-aux/nvcc-libtool \
	  $(NVCC) $(NVCCFLAGS) -fvisibility=hidden $(AM_CPPFLAGS) $(CPPFLAGS) -c -o $@ $<

tsr_includedir = $(includedir)/tessera
include_HEADERS = lib/include/tessera.h
tsr_include_HEADERS = \
	lib/include/tessera/visibility.h \
	lib/include/tessera/status.h \
	lib/include/tessera/dtype.h \
	lib/include/tessera/log.h \
	lib/include/tessera/timer.h \
	lib/include/tessera/prof.h \
	lib/include/tessera/memory.h \
	lib/include/tessera/rng.h \
	lib/include/tessera/options.h \
	lib/include/tessera/device.h \
	lib/include/tessera/kernels.h \
	lib/include/tessera/comm.h \
	lib/include/tessera/grid.h
nodist_tsr_include_HEADERS = lib/include/tessera/config.h

# Causal attention kernels (tessera/kernels.h): dispatch, CPU twin, CUDA kernels.
libtessera_la_SOURCES += \
	lib/device/kernels_attention.c \
	lib/device/attention_impl.h \
	lib/device/cuda_attention.h
if TSR_HAVE_CUDA
libtessera_la_SOURCES += lib/device/cuda_attention.cu
endif

# Attention against a KV cache (generation): dispatch and CPU kernel, CUDA kernel.
libtessera_la_SOURCES += lib/device/kernels_attention_cached.c lib/device/cuda_attention_cached.h
if TSR_HAVE_CUDA
libtessera_la_SOURCES += lib/device/cuda_attention_cached.cu
endif
