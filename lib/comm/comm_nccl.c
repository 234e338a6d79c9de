/*
 * comm_nccl.c: the seam for the NCCL backend (device buffers on CUDA streams). Its
 * operations arrive with the CUDA backend; until then the entry has none, and
 * tsr_comm_set_backend(TSR_COMM_BACKEND_NCCL) reports TSR_ERR_NOT_SUPPORTED.
 */
#include "comm/comm_impl.h"

const tsr_comm_ops_t tsr__comm_nccl_ops = {.name = "nccl"};
