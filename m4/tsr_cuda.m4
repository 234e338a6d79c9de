# TSR_CHECK_CUDA: the CUDA toolkit (nvcc, cudart, cuBLAS, cuBLASLt). --with-cuda[=DIR]:
# auto-detected by default (nvcc on PATH or /usr/local/cuda); an error only when asked
# for explicitly and missing; --without-cuda turns it off. Sets NVCC, CUDA_CPPFLAGS,
# CUDA_LDFLAGS, CUDA_LIBS, TSR_HAVE_CUDA (0/1) and the conditional TSR_HAVE_CUDA.
AC_DEFUN([TSR_CHECK_CUDA], [
AC_ARG_WITH([cuda],
  [AS_HELP_STRING([--with-cuda@<:@=DIR@:>@], [build the CUDA backend, toolkit in DIR (default: auto-detect)])],
  [], [with_cuda=auto])
AC_ARG_VAR([NVCC], [CUDA compiler (default: DIR/bin/nvcc)])
AC_ARG_VAR([NVCCFLAGS], [flags for NVCC (default: -O3 -gencode=arch=compute_90,code=sm_90)])
TSR_HAVE_CUDA=0
tsr_cuda_summary="no"
tsr_cuda_dir=
AS_CASE([$with_cuda],
  [no], [tsr_cuda_summary="no (--without-cuda)"],
  [yes|auto],
    [AS_IF([test -n "$NVCC"], [tsr_cuda_dir=`dirname \`dirname $NVCC\``],
           [tsr_nvcc=`command -v nvcc 2>/dev/null`
            AS_IF([test -n "$tsr_nvcc"], [tsr_cuda_dir=`dirname \`dirname $tsr_nvcc\``],
                  [test -x /usr/local/cuda/bin/nvcc], [tsr_cuda_dir=/usr/local/cuda])])
     AS_IF([test -z "$tsr_cuda_dir"],
       [AS_IF([test "x$with_cuda" = xyes],
              [AC_MSG_ERROR([--with-cuda: no CUDA toolkit found (no nvcc on PATH or in /usr/local/cuda/bin); give --with-cuda=DIR])])
        tsr_cuda_summary="no (no CUDA toolkit found)"])],
  [AS_IF([test -x "$with_cuda/bin/nvcc"], [tsr_cuda_dir=$with_cuda],
         [AC_MSG_ERROR([--with-cuda=$with_cuda: no CUDA toolkit there ($with_cuda/bin/nvcc not found)])])])
AS_IF([test -n "$tsr_cuda_dir"], [
  : ${NVCC=$tsr_cuda_dir/bin/nvcc}
  : ${NVCCFLAGS="-O3 -gencode=arch=compute_90,code=sm_90"}
  tsr_cuda_libdir=$tsr_cuda_dir/lib64
  AS_IF([test -d "$tsr_cuda_libdir"], [], [tsr_cuda_libdir=$tsr_cuda_dir/lib])
  CUDA_CPPFLAGS="-I$tsr_cuda_dir/include"
  CUDA_LDFLAGS="-L$tsr_cuda_libdir -Wl,-rpath,$tsr_cuda_libdir"
  CUDA_LIBS="-lcublasLt -lcublas -lcudart -lstdc++"
  tsr_save_CPPFLAGS=$CPPFLAGS
  tsr_save_LIBS=$LIBS
  CPPFLAGS="$CPPFLAGS $CUDA_CPPFLAGS"
  LIBS="$CUDA_LDFLAGS $CUDA_LIBS $LIBS"
  AC_MSG_CHECKING([for CUDA runtime and cuBLAS in $tsr_cuda_dir])
  AC_LINK_IFELSE([AC_LANG_PROGRAM([[#include <cuda_runtime.h>
#include <cublas_v2.h>]], [[int n; cudaGetDeviceCount(&n); cublasHandle_t h; cublasCreate(&h);]])],
    [AC_MSG_RESULT([yes])
     TSR_HAVE_CUDA=1
     tsr_cuda_summary="yes ($tsr_cuda_dir, $NVCCFLAGS)"],
    [AC_MSG_RESULT([no])
     AS_IF([test "x$with_cuda" != xauto],
           [AC_MSG_ERROR([--with-cuda: the CUDA toolkit in $tsr_cuda_dir does not link cudart and cuBLAS])])
     tsr_cuda_summary="no (CUDA in $tsr_cuda_dir does not link)"
     CUDA_CPPFLAGS= ; CUDA_LDFLAGS= ; CUDA_LIBS=])
  CPPFLAGS=$tsr_save_CPPFLAGS
  LIBS=$tsr_save_LIBS])
AC_SUBST([CUDA_CPPFLAGS])
AC_SUBST([CUDA_LDFLAGS])
AC_SUBST([CUDA_LIBS])
AC_SUBST([TSR_HAVE_CUDA])
AM_CONDITIONAL([TSR_HAVE_CUDA], [test $TSR_HAVE_CUDA = 1])
])
