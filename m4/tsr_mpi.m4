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
# Which MPI: its parallel HDF5 and its launcher must be the same one.
AC_MSG_CHECKING([which MPI library $CC uses])
AC_COMPILE_IFELSE([AC_LANG_PROGRAM([[#include <mpi.h>
#ifndef OPEN_MPI
#error not Open MPI
#endif]], [])], [tsr_mpi_flavor=openmpi],
  [AC_COMPILE_IFELSE([AC_LANG_PROGRAM([[#include <mpi.h>
#ifndef MPICH_VERSION
#error not MPICH
#endif]], [])], [tsr_mpi_flavor=mpich], [tsr_mpi_flavor=other])])
AC_MSG_RESULT([$tsr_mpi_flavor])
# How the MPI library says whether it takes CUDA device buffers (comm_mpi.c, tsr_comm_gpu_aware):
# MPICH 4 and Open MPI 5 answer MPIX_GPU_query_support, Open MPI 4.1 MPIX_Query_cuda_support
# (declared in its mpi-ext.h).
AC_CHECK_HEADERS([mpi-ext.h], [], [], [[#include <mpi.h>]])
AC_CHECK_FUNCS([MPIX_GPU_query_support MPIX_Query_cuda_support])
AS_IF([test "$ac_cv_func_MPIX_GPU_query_support" = yes], [tsr_gpu_aware_summary="asked through MPIX_GPU_query_support"],
      [test "$ac_cv_func_MPIX_Query_cuda_support" = yes], [tsr_gpu_aware_summary="asked through MPIX_Query_cuda_support"],
      [tsr_gpu_aware_summary="not asked (this MPI has no query; TSR_GPU_AWARE_MPI=1 says it is)"])
AC_ARG_VAR([MPIEXEC], [launcher for the MPI tests (default: the mpiexec of the same MPI as CC)])
AC_ARG_VAR([MPIEXEC_FLAGS], [extra flags for MPIEXEC in the tests])
# Debian names each MPI's programs with a suffix (mpicc.openmpi, mpiexec.openmpi); prefer the
# launcher that goes with the compiler over whichever plain mpiexec the alternatives chose.
tsr_cc_name=`basename "$CC" | cut -d' ' -f1`
AS_CASE([$tsr_cc_name], [*.openmpi|*.mpich], [tsr_mpi_suffix=`echo "$tsr_cc_name" | sed 's/.*\././'`],
        [tsr_mpi_suffix=])
AC_PATH_PROGS([MPIEXEC], [mpiexec$tsr_mpi_suffix mpirun$tsr_mpi_suffix mpiexec mpirun], [mpiexec])
# Open MPI's mpirun ends a run that exits non-zero with a multi-line "Primary job terminated
# normally, but 1 process returned a non-zero exit code" banner; -q (--quiet) leaves the
# program's own one-line error alone. Open MPI 4.1's MPI-IO (OMPIO) overflows a buffer in its
# sharedfp/lockedfile component on a file path of about 1000 bytes or more and aborts; Tessera
# uses no shared file pointers, so "--mca sharedfp ^lockedfile" leaves that component out.
# That is configure's launcher for users too (tessera.pc,
# doc/examples/demo.sh). The tests' --oversubscribe (more ranks than cores) is not: they get it
# from OMPI_MCA_rmaps_base_oversubscribe in tests/local.mk, so no user's job oversubscribes.
AC_MSG_CHECKING([which MPI library $MPIEXEC launches])
AS_IF([$MPIEXEC --version 2>&1 | grep -q "Open MPI\|OpenRTE"], [tsr_mpiexec_flavor=openmpi],
      [$MPIEXEC --version 2>&1 | grep -q "HYDRA\|MPICH"], [tsr_mpiexec_flavor=mpich],
      [tsr_mpiexec_flavor=other])
AC_MSG_RESULT([$tsr_mpiexec_flavor])
AS_IF([test "$tsr_mpiexec_flavor" = openmpi && test "${MPIEXEC_FLAGS+set}" != set], [MPIEXEC_FLAGS="-q --mca sharedfp ^lockedfile"])
AS_IF([test "$tsr_mpiexec_flavor" != other && test "$tsr_mpiexec_flavor" != "$tsr_mpi_flavor"],
      [AC_MSG_WARN([$MPIEXEC is $tsr_mpiexec_flavor's launcher but $CC builds for $tsr_mpi_flavor: set MPIEXEC to the launcher of the same MPI])])
# The Makefiles hold configure's choice as TSR_MPIEXEC(_FLAGS), not as make variables named
# MPIEXEC(_FLAGS), which would hide the user's: `MPIEXEC=srun make check` (the environment)
# and `make check MPIEXEC=srun` both win over configure's launcher (tests/local.mk).
AC_SUBST([TSR_MPIEXEC], [$MPIEXEC])
AC_SUBST([TSR_MPIEXEC_FLAGS], [$MPIEXEC_FLAGS])
AM_SUBST_NOTMAKE([MPIEXEC])
AM_SUBST_NOTMAKE([MPIEXEC_FLAGS])
])
