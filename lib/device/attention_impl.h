/*
 * attention_impl.h: the CPU twins of causal multi-head attention (cpu_attention.c), behind
 * tsr_kernel_attention_forward() and tsr_kernel_attention_backward(). Arguments are checked
 * by the caller (kernels_attention.c); shapes and layouts are those of tessera/kernels.h.
 */
#ifndef TESSERA_ATTENTION_IMPL_H
#define TESSERA_ATTENTION_IMPL_H

#include "core/internal.h"

/* o and lse from q, k, v (fp32). Fails only when scratch memory cannot be had. */
tsr_status_t tsr__cpu_attention_forward(int seqs, int T, int heads, int hd, const float *q, const float *k,
                                        const float *v, int ld_in, float *o, int ld_o, float *lse);

/* dq, dk, dv (=) from d_o; delta receives rowsum(dO∘O) (scratch). Fails only without scratch memory. */
tsr_status_t tsr__cpu_attention_backward(int seqs, int T, int heads, int hd, const float *q, const float *k,
                                         const float *v, int ld_in, const float *o, const float *d_o, int ld_o,
                                         const float *lse, float *delta, float *dq, float *dk, float *dv);

#endif /* TESSERA_ATTENTION_IMPL_H */
