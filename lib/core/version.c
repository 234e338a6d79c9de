/* version.c: what the linked library is and what it was built with. */
#include "config.h"
#include "core/internal.h"

#if TSR_HAVE_CUDA
#define CUDA_INFO "cuda: cuBLAS"
#else
#define CUDA_INFO "cuda: not built"
#endif
#if TSR_HAVE_NCCL
#define NCCL_INFO "nccl: yes"
#else
#define NCCL_INFO "nccl: not built"
#endif

const char *tsr_version(void)
{
    return TSR_VERSION;
}

const char *tsr_build_info(void)
{
    return "Tessera " TSR_VERSION " (cpu: CBLAS " TSR_BLAS_LIBS "; " CUDA_INFO "; " NCCL_INFO ")";
}
