# TSR_CHECK_MPI_CC: choose the MPI compiler wrapper as CC. Respects MPICC, then CC.
AC_DEFUN([TSR_CHECK_MPI_CC], [
AC_ARG_VAR([MPICC], [MPI C compiler wrapper (default: mpicc)])
AS_IF([test -n "$MPICC"], [AS_IF([command -v "$MPICC" >/dev/null 2>&1], [CC=$MPICC],
                                [AC_MSG_ERROR([MPICC=$MPICC: no such program; name your MPI C compiler wrapper, e.g. MPICC=mpicc])])],
      [test -z "$CC"], [AC_CHECK_PROGS([CC], [mpicc mpiicc mpigcc], [])
                        AS_IF([test -z "$CC"],
                              [AC_MSG_ERROR([no MPI C compiler found: install an MPI library (e.g. apt-get install mpich libmpich-dev, or Open MPI) or name its wrapper with MPICC=/path/to/mpicc])])])
])

# TSR_CHECK_MPI: check that CC compiles and links MPI programs; find mpiexec for the tests.
AC_DEFUN([TSR_CHECK_MPI], [
AC_MSG_CHECKING([whether $CC compiles and links MPI programs])
AC_LINK_IFELSE([AC_LANG_PROGRAM([[#include <mpi.h>]],
                                [[MPI_Init(0, 0); MPI_Finalize();]])],
               [AC_MSG_RESULT([yes])],
               [AC_MSG_RESULT([no])
                AC_MSG_ERROR([$CC cannot build MPI programs: set MPICC (or CC) to your MPI compiler wrapper, e.g. MPICC=mpicc])])
AC_ARG_VAR([MPIEXEC], [launcher for the MPI tests (default: mpiexec)])
AC_ARG_VAR([MPIEXEC_FLAGS], [extra flags for MPIEXEC in the tests])
AC_PATH_PROGS([MPIEXEC], [mpiexec mpirun], [mpiexec])
# Open MPI refuses more ranks than cores unless told; the tests run up to 9 ranks.
AS_IF([test -z "$MPIEXEC_FLAGS" && $MPIEXEC --version 2>&1 | grep -q "Open MPI\|OpenRTE"],
      [MPIEXEC_FLAGS="--oversubscribe"])
])
