/* cuda_attention_cached.h: the launcher of the KV-cache attention kernel in cuda_attention_cached.cu. */
#ifndef TESSERA_CUDA_ATTENTION_CACHED_H
#define TESSERA_CUDA_ATTENTION_CACHED_H

#ifdef TSR_CUDA_EMU
#include "cuda_emu.h"
#else
#include <cuda_runtime.h>
#endif
#include <tessera/dtype.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Bytes of shared memory one block of the kernel needs for a cache of T rows and heads of hd. */
size_t tsr__cuda_attention_cached_smem(int T, int hd);

/*
 * Queue tsr_kernel_attention_cached() on stream: dt F32 or BF16, shapes checked by the
 * caller (tsr__cuda_attention_cached_smem() at most 48 KiB).
 */
cudaError_t tsr__cuda_attention_cached(tsr_dtype_t dt, int seqs, int n, int pos, int T, int heads, int hd,
                                       const void *q, int ld_q, const void *kc, const void *vc, int ld_c, void *o,
                                       int ld_o, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif /* TESSERA_CUDA_ATTENTION_CACHED_H */
