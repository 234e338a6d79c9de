/*
 * layer_impl.h: the CPU (fp32) layer-operation kernels of cpu_layer.c, the reference that
 * the CUDA kernels are tested against. Arguments are checked by kernels_layer.c; the
 * semantics are those of tessera/kernels.h. The tp operations (lib/tp) compute their local
 * parts with these.
 */
#ifndef TESSERA_LAYER_IMPL_H
#define TESSERA_LAYER_IMPL_H

#include "core/internal.h"

void tsr__cpu_layernorm_forward(int rows, int cols, const float *x, const float *gamma, const float *beta,
                                float eps, float *y, float *mean, float *rstd);

tsr_status_t tsr__cpu_layernorm_backward(int rows, int cols, const float *dy, const float *x, const float *gamma,
                                         const float *mean, const float *rstd, float *dx, float *dgamma,
                                         float *dbeta);

void tsr__cpu_gelu_forward(size_t n, const float *x, float *y);

void tsr__cpu_gelu_backward(size_t n, const float *x, const float *dy, float *dx);

void tsr__cpu_add(size_t n, const float *a, const float *b, float *y);

void tsr__cpu_bias_grad(int rows, int cols, const float *dy, int ld, float *db);

void tsr__cpu_layernorm_stats(int rows, int cols, const float *x, float *stats);

void tsr__cpu_layernorm_apply(int rows, int cols, int width, const float *x, const float *gamma, const float *beta,
                              float eps, const float *stats, float *y, float *mean, float *rstd);

void tsr__cpu_layernorm_backward_stats(int rows, int cols, const float *dy, const float *x, const float *gamma,
                                       const float *mean, const float *rstd, float *stats);

void tsr__cpu_layernorm_backward_apply(int rows, int cols, int width, const float *dy, const float *x,
                                       const float *gamma, const float *mean, const float *rstd, const float *stats,
                                       float *dx);

void tsr__cpu_axpby_2d(int rows, int cols, float alpha, const float *src, int lds, float beta, float *dst, int ldd);

void tsr__cpu_embedding_forward(const int32_t *tokens, int seqs, int T, int C, int v0, int nv, const float *wte,
                                const float *wpe, float *out);

tsr_status_t tsr__cpu_embedding_backward(const int32_t *tokens, int seqs, int T, int C, int v0, int nv,
                                         const float *dout, float *dwte, float *dwpe);

void tsr__cpu_cross_entropy_stats(int rows, int V, int v0, const float *logits, int ld, const int32_t *targets,
                                  float *stats);

void tsr__cpu_cross_entropy_finish(int rows, int V, int v0, float *logits, int ld, const int32_t *targets, int parts,
                                   const float *stats, float *losses, float dscale);

#endif /* TESSERA_LAYER_IMPL_H */
