# TSR_CHECK_BLAS: a CBLAS with cblas_sgemm. --with-blas="LIBS" names the link flags
# (MKL, BLIS, ...); by default OpenBLAS (pkg-config openblas, then -lopenblas), then
# -lcblas -lblas. Sets BLAS_LIBS.
AC_DEFUN([TSR_CHECK_BLAS], [
AC_ARG_WITH([blas],
  [AS_HELP_STRING([--with-blas=LIBS], [link flags of a CBLAS library, e.g. "-lmkl_rt" or "-lblis" (default: OpenBLAS)])],
  [], [with_blas=auto])
AS_IF([test "x$with_blas" = xno],
      [AC_MSG_ERROR([Tessera needs a CBLAS library; --without-blas is not possible])])
AS_IF([test "x$with_blas" != xauto && test "x$with_blas" != xyes],
      [tsr_blas_candidates="$with_blas"],
      [tsr_blas_candidates="-lopenblas|-lcblas -lblas|-lblas"
       AS_IF([$PKG_CONFIG --exists openblas 2>/dev/null],
             [tsr_blas_candidates="`$PKG_CONFIG --libs openblas`|$tsr_blas_candidates"])])
AC_CHECK_HEADERS([cblas.h], [],
  [AC_MSG_ERROR([cblas.h not found: install OpenBLAS (apt-get install libopenblas-dev) or add your BLAS's include directory to CPPFLAGS])])
BLAS_LIBS=
tsr_save_LIBS=$LIBS
tsr_save_IFS=$IFS
IFS='|'
for tsr_blas in $tsr_blas_candidates; do
  IFS=$tsr_save_IFS
  AS_IF([test -z "$BLAS_LIBS"],
    [AC_MSG_CHECKING([for cblas_sgemm with $tsr_blas])
     LIBS="$tsr_blas $tsr_save_LIBS -lm"
     AC_LINK_IFELSE([AC_LANG_PROGRAM([[#include <cblas.h>]],
       [[float a = 1, b = 1, c = 0;
         cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, 1, 1, 1, 1.0f, &a, 1, &b, 1, 0.0f, &c, 1);]])],
       [AC_MSG_RESULT([yes]); BLAS_LIBS=$tsr_blas],
       [AC_MSG_RESULT([no])])])
done
IFS=$tsr_save_IFS
LIBS=$tsr_save_LIBS
AS_IF([test -z "$BLAS_LIBS"],
  [AS_IF([test "x$with_blas" != xauto && test "x$with_blas" != xyes],
         [AC_MSG_ERROR([--with-blas="$with_blas" does not link a CBLAS with cblas_sgemm])],
         [AC_MSG_ERROR([no CBLAS found: install OpenBLAS (apt-get install libopenblas-dev) or give --with-blas="LIBS"])])])
AC_SUBST([BLAS_LIBS])
AC_DEFINE_UNQUOTED([TSR_BLAS_LIBS], ["$BLAS_LIBS"], [link flags of the CBLAS library])
])
