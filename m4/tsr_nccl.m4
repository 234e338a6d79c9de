# TSR_CHECK_NCCL: NCCL for the communication backend (needs CUDA). --with-nccl[=DIR]:
# auto-detected by default in the CUDA toolkit and system paths; an error only when asked
# for explicitly and missing. Sets NCCL_CPPFLAGS, NCCL_LDFLAGS, NCCL_LIBS, TSR_HAVE_NCCL.
AC_DEFUN([TSR_CHECK_NCCL], [
AC_ARG_WITH([nccl],
  [AS_HELP_STRING([--with-nccl@<:@=DIR@:>@], [build the NCCL backend, NCCL in DIR (default: auto-detect; needs CUDA)])],
  [], [with_nccl=auto])
TSR_HAVE_NCCL=0
tsr_nccl_summary="no"
AS_IF([test "x$with_nccl" != xno && test "x$with_nccl" != xauto && test "x$with_nccl" != xyes],
      [AS_IF([test -f "$with_nccl/include/nccl.h"], [],
             [AC_MSG_ERROR([--with-nccl=$with_nccl: no NCCL there ($with_nccl/include/nccl.h not found)])])
       NCCL_CPPFLAGS="-I$with_nccl/include"
       tsr_nccl_libdir=$with_nccl/lib
       AS_IF([test -d "$with_nccl/lib64"], [tsr_nccl_libdir=$with_nccl/lib64])
       NCCL_LDFLAGS="-L$tsr_nccl_libdir -Wl,-rpath,$tsr_nccl_libdir"])
AS_IF([test "x$with_nccl" = xno], [tsr_nccl_summary="no (--without-nccl)"],
      [test $TSR_HAVE_CUDA = 0],
      [AS_IF([test "x$with_nccl" != xauto],
             [AC_MSG_ERROR([--with-nccl needs the CUDA backend, which is not enabled (see --with-cuda)])])
       tsr_nccl_summary="no (needs CUDA)"],
      [tsr_save_CPPFLAGS=$CPPFLAGS
       tsr_save_LIBS=$LIBS
       CPPFLAGS="$CPPFLAGS $CUDA_CPPFLAGS $NCCL_CPPFLAGS"
       LIBS="$NCCL_LDFLAGS $CUDA_LDFLAGS -lnccl $CUDA_LIBS $LIBS"
       AC_MSG_CHECKING([for NCCL])
       AC_LINK_IFELSE([AC_LANG_PROGRAM([[#include <nccl.h>]], [[ncclUniqueId id; ncclGetUniqueId(&id);]])],
         [AC_MSG_RESULT([yes]); TSR_HAVE_NCCL=1; NCCL_LIBS="-lnccl"; tsr_nccl_summary="yes"],
         [AC_MSG_RESULT([no])
          AS_IF([test "x$with_nccl" != xauto],
                [AC_MSG_ERROR([--with-nccl: NCCL (nccl.h and -lnccl) not found; give --with-nccl=DIR])])
          tsr_nccl_summary="no (not found)"])
       CPPFLAGS=$tsr_save_CPPFLAGS
       LIBS=$tsr_save_LIBS])
AC_SUBST([NCCL_CPPFLAGS])
AC_SUBST([NCCL_LDFLAGS])
AC_SUBST([NCCL_LIBS])
AC_SUBST([TSR_HAVE_NCCL])
AM_CONDITIONAL([TSR_HAVE_NCCL], [test $TSR_HAVE_NCCL = 1])
])
