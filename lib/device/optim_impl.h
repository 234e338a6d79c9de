/*
 * optim_impl.h: the CPU optimizer updates, reductions, scaling and casts (cpu_optim.c),
 * private to lib/device but for tsr__cpu_axpy, which lib/comm's pairwise reduce-scatter sums
 * with. Arguments are already checked by kernels_optim.c; these cannot fail.
 *
 * bf16 values are stored on the CPU as uint16_t: the top half of the float.
 */
#ifndef TESSERA_OPTIM_IMPL_H
#define TESSERA_OPTIM_IMPL_H

#include <stddef.h>
#include <stdint.h>
#include <tessera/dtype.h>
#include <tessera/kernels.h>

/* AdamW over n values in tessera/kernels.h's order and float types, the same bits whatever the
 * number of threads; work (when not NULL) receives the new p as work_dt, F32 or BF16. */
void tsr__cpu_adamw(size_t n, float *p, const float *g, float *m, float *v, const tsr_adamw_params_t *hp,
                    tsr_dtype_t work_dt, void *work);

/* SGD (m NULL: no momentum); work as for AdamW. */
void tsr__cpu_sgd(size_t n, float *p, const float *g, float *m, float lr, float momentum, float weight_decay,
                  float grad_coef, tsr_dtype_t work_dt, void *work);

/* Double sums in a fixed order that does not depend on the number of threads (cpu_optim.c). */
double tsr__cpu_sumsq(const float *x, size_t n);
double tsr__cpu_sum(const float *x, size_t n);

/* y += alpha x. */
void tsr__cpu_axpy(size_t n, float alpha, const float *x, float *y);

/* x *= alpha, dt F32 or BF16 (the product rounded to float, then to bf16). */
void tsr__cpu_scale(tsr_dtype_t dt, size_t n, void *x, float alpha);

/* dst = src converted: F32 to BF16, BF16 to F32, or a copy of any one type to itself. */
void tsr__cpu_cast(tsr_dtype_t src_type, const void *src, tsr_dtype_t dst_type, void *dst, size_t n);

#endif /* TESSERA_OPTIM_IMPL_H */
