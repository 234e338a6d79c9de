/* zero_impl.h: private to lib/zero. The element-wise optimizer kernels (optim.c). */
#ifndef TESSERA_ZERO_IMPL_H
#define TESSERA_ZERO_IMPL_H

#include <stddef.h>
#include <tessera.h>

/* Scalars of one update, the same for every element of a step. */
typedef struct tsr__zero_update {
    float lr;         /* learning rate of this step */
    float grad_coef;  /* gradients are multiplied by this: 1/(dp * loss scale), times the clip factor */
    float bc1, bc2;   /* AdamW bias corrections 1 - beta^t */
} tsr__zero_update_t;

/* AdamW on n elements; wd is 0 for tensors without decay. */
void tsr__zero_adamw(const tsr_zero_config_t *cfg, const tsr__zero_update_t *u, float wd, size_t n, float *p,
                     const float *g, float *m, float *v);

/* SGD with momentum on n elements (m may be NULL when momentum is 0). */
void tsr__zero_sgd(const tsr_zero_config_t *cfg, const tsr__zero_update_t *u, float wd, size_t n, float *p,
                   const float *g, float *m);

/* Sum of squares of n floats, in double. */
double tsr__zero_sumsq(const float *g, size_t n);

#endif /* TESSERA_ZERO_IMPL_H */
