# TSR_CHECK_HDF5: parallel HDF5 (required). --with-hdf5=DIR, else pkg-config: the package
# of the MPI that CC uses (hdf5-mpich or hdf5-openmpi), then hdf5. Needs TSR_CHECK_MPI first.
# Sets HDF5_CPPFLAGS, HDF5_LIBS and tsr_hdf5_found.
AC_DEFUN([TSR_CHECK_HDF5], [
AC_ARG_WITH([hdf5],
  [AS_HELP_STRING([--with-hdf5=DIR], [parallel HDF5 installation prefix (default: found by pkg-config)])],
  [], [with_hdf5=auto])
AS_IF([test "x$with_hdf5" = xno],
      [AC_MSG_ERROR([Tessera needs parallel HDF5; --without-hdf5 is not possible])])
tsr_hdf5_found=
AS_IF([test "x$with_hdf5" != xauto && test "x$with_hdf5" != xyes],
      [AS_IF([test -d "$with_hdf5"], [],
             [AC_MSG_ERROR([--with-hdf5=$with_hdf5: no such directory])])
       HDF5_CPPFLAGS="-I$with_hdf5/include"
       HDF5_LIBS="-L$with_hdf5/lib -lhdf5"
       tsr_hdf5_found="$with_hdf5"],
      [AS_CASE([$tsr_mpi_flavor],
               [openmpi], [tsr_hdf5_pcs="hdf5-openmpi hdf5"],
               [mpich], [tsr_hdf5_pcs="hdf5-mpich hdf5"],
               [tsr_hdf5_pcs="hdf5-mpich hdf5-openmpi hdf5"])
       for tsr_pc in $tsr_hdf5_pcs; do
         AS_IF([test -z "$tsr_hdf5_found" && $PKG_CONFIG --exists $tsr_pc 2>/dev/null],
               [HDF5_CPPFLAGS=`$PKG_CONFIG --cflags $tsr_pc`
                HDF5_LIBS=`$PKG_CONFIG --libs $tsr_pc`
                tsr_hdf5_found="pkg-config $tsr_pc"])
       done
       AS_IF([test -z "$tsr_hdf5_found"],
             [HDF5_LIBS="-lhdf5"; tsr_hdf5_found="default paths"])])
tsr_save_CPPFLAGS=$CPPFLAGS
tsr_save_LIBS=$LIBS
CPPFLAGS="$CPPFLAGS $HDF5_CPPFLAGS"
LIBS="$HDF5_LIBS $LIBS"
AC_MSG_CHECKING([for HDF5 ($tsr_hdf5_found)])
AC_LINK_IFELSE([AC_LANG_PROGRAM([[#include <hdf5.h>]], [[H5open();]])],
  [AC_MSG_RESULT([yes])],
  [AC_MSG_RESULT([no])
   AC_MSG_ERROR([HDF5 not found ($tsr_hdf5_found): install parallel HDF5 for your MPI (Debian/Ubuntu: libhdf5-mpich-dev for MPICH, libhdf5-openmpi-dev for Open MPI) or use --with-hdf5=DIR])])
AC_MSG_CHECKING([whether HDF5 is built with parallel (MPI-IO) support])
AC_COMPILE_IFELSE([AC_LANG_PROGRAM([[#include <hdf5.h>
#if !defined(H5_HAVE_PARALLEL) || !H5_HAVE_PARALLEL
#error serial HDF5
#endif]], [])],
  [AC_MSG_RESULT([yes])],
  [AC_MSG_RESULT([no])
   AC_MSG_ERROR([the HDF5 found ($tsr_hdf5_found) is serial; Tessera needs parallel HDF5 (H5_HAVE_PARALLEL): install libhdf5-mpich-dev (MPICH) or libhdf5-openmpi-dev (Open MPI), or point --with-hdf5=DIR at a parallel build])])
CPPFLAGS=$tsr_save_CPPFLAGS
LIBS=$tsr_save_LIBS
AC_SUBST([HDF5_CPPFLAGS])
AC_SUBST([HDF5_LIBS])
])
