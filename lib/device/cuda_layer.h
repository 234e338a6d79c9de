/*
 * cuda_layer.h: launchers of the layer-operation kernels in cuda_layer.cu (layernorm, GELU,
 * add, strided axpby, bias gradient, embeddings, cross-entropy), callable from C. Each queues its work on
 * @p stream and returns the launch's error. @p bf16 selects the element type of the
 * activation arguments (void *): __nv_bfloat16 when nonzero, float otherwise. Arguments are
 * checked by the callers in kernels_layer.c; the semantics are those of tessera/kernels.h.
 */
#ifndef TESSERA_CUDA_LAYER_H
#define TESSERA_CUDA_LAYER_H

#ifdef TSR_CUDA_EMU
#include "cuda_emu.h"
#else
#include <cuda_runtime.h>
#endif
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

cudaError_t tsr__cuda_layernorm_forward(int bf16, int rows, int cols, const void *x, const void *gamma,
                                        const void *beta, float eps, void *y, float *mean, float *rstd,
                                        cudaStream_t stream);

cudaError_t tsr__cuda_layernorm_backward(int bf16, int rows, int cols, const void *dy, const void *x,
                                         const void *gamma, const float *mean, const float *rstd, void *dx,
                                         float *dgamma, float *dbeta, cudaStream_t stream);

cudaError_t tsr__cuda_layernorm_stats(int bf16, int rows, int cols, const void *x, float *stats, cudaStream_t stream);

cudaError_t tsr__cuda_layernorm_apply(int bf16, int rows, int cols, int width, const void *x, const void *gamma,
                                      const void *beta, float eps, const float *stats, void *y, float *mean,
                                      float *rstd, cudaStream_t stream);

cudaError_t tsr__cuda_layernorm_backward_stats(int bf16, int rows, int cols, const void *dy, const void *x,
                                               const void *gamma, const float *mean, const float *rstd, float *stats,
                                               cudaStream_t stream);

cudaError_t tsr__cuda_layernorm_backward_apply(int bf16, int rows, int cols, int width, const void *dy,
                                               const void *x, const void *gamma, const float *mean,
                                               const float *rstd, const float *stats, void *dx, cudaStream_t stream);

cudaError_t tsr__cuda_gelu_forward(int bf16, size_t n, const void *x, void *y, cudaStream_t stream);

cudaError_t tsr__cuda_gelu_backward(int bf16, size_t n, const void *x, const void *dy, void *dx,
                                    cudaStream_t stream);

cudaError_t tsr__cuda_add(int bf16, size_t n, const void *a, const void *b, void *y, cudaStream_t stream);

cudaError_t tsr__cuda_axpby_2d(int rows, int cols, float alpha, int src_bf16, const void *src, int lds, float beta,
                               int dst_bf16, void *dst, int ldd, cudaStream_t stream);

cudaError_t tsr__cuda_bias_grad(int bf16, int rows, int cols, const void *dy, int ld, float *db,
                                cudaStream_t stream);

cudaError_t tsr__cuda_embedding_forward(int bf16, const int32_t *tokens, int seqs, int T, int C, int v0, int nv,
                                        const void *wte, const void *wpe, void *out, cudaStream_t stream);

cudaError_t tsr__cuda_embedding_backward(int bf16, const int32_t *tokens, int seqs, int T, int C, int v0, int nv,
                                         const void *dout, float *dwte, float *dwpe, cudaStream_t stream);

cudaError_t tsr__cuda_cross_entropy_stats(int bf16, int rows, int V, int v0, const void *logits, int ld,
                                          const int32_t *targets, float *stats, cudaStream_t stream);

cudaError_t tsr__cuda_cross_entropy_finish(int bf16, int rows, int V, int v0, void *logits, int ld,
                                           const int32_t *targets, int parts, const float *stats, float *losses,
                                           float dscale, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif /* TESSERA_CUDA_LAYER_H */
