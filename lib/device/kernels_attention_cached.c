/*
 * kernels_attention_cached.c: tsr_kernel_attention_cached() of tessera/kernels.h, attention
 * of new queries against a KV cache: argument checks, the CPU kernel (fp32, here), or the
 * CUDA launcher of cuda_attention_cached.cu. Kept apart from the training's flash kernels
 * (kernels_attention.c, cpu_attention.c), which do not know a cache.
 */
#include <math.h>
#include <stdlib.h>

#include "device/device_impl.h"

#if TSR_HAVE_CUDA
#include "device/cuda_attention_cached.h"
#include "device/cuda_impl.h"
#endif

/* Shared memory a CUDA block may take without opting in. */
#define CUDA_SMEM_DEFAULT (48 * 1024)

/* One (sequence, head) pair of every query row: scores, softmax, weighted sum; fp32. */
static void cpu_attention_cached(int seqs, int n, int pos, int T, int heads, int hd, const float *q, int ld_q,
                                 const float *kc, const float *vc, int ld_c, float *o, int ld_o, float *score)
{
    float scale = 1.0f / sqrtf((float)hd);
    for (int s = 0; s < seqs; s++)
        for (int h = 0; h < heads; h++) {
            const float *kb = kc + (size_t)s * T * ld_c + (size_t)h * hd;
            const float *vb = vc + (size_t)s * T * ld_c + (size_t)h * hd;
            for (int i = 0; i < n; i++) {
                const float *qr = q + ((size_t)s * n + i) * ld_q + (size_t)h * hd;
                float *orow = o + ((size_t)s * n + i) * ld_o + (size_t)h * hd;
                int keys = pos + i + 1;
                float mx = -INFINITY, sum = 0.0f;
                for (int j = 0; j < keys; j++) {
                    const float *kr = kb + (size_t)j * ld_c;
                    float acc = 0.0f;
                    for (int d = 0; d < hd; d++)
                        acc += qr[d] * kr[d];
                    score[j] = acc * scale;
                    mx = fmaxf(mx, score[j]);
                }
                for (int j = 0; j < keys; j++) {
                    score[j] = expf(score[j] - mx);
                    sum += score[j];
                }
                for (int d = 0; d < hd; d++)
                    orow[d] = 0.0f;
                for (int j = 0; j < keys; j++) {
                    const float *vr = vb + (size_t)j * ld_c;
                    float p = score[j] / sum;
                    for (int d = 0; d < hd; d++)
                        orow[d] += p * vr[d];
                }
            }
        }
}

tsr_status_t tsr_kernel_attention_cached(tsr_device_t dev, tsr_dtype_t dt, int seqs, int n, int pos, int T,
                                         int heads, int hd, const void *q, int ld_q, const void *kc, const void *vc,
                                         int ld_c, void *o, int ld_o)
{
    TSR__REGION(dev, TSR_PROF_KERNEL, "attention cached", NULL);
    static const char what[] = "attention with a KV cache";
    tsr_status_t rc = TSR_OK;
    float *score = NULL;
    TSR_CHECK(dev, TSR_ERR_INVALID_ARG, "%s: NULL device", what);
    TSR_CHECK(dt == TSR_DTYPE_F32 || (dt == TSR_DTYPE_BF16 && dev->kind == TSR_DEVICE_CUDA), TSR_ERR_NOT_SUPPORTED,
              "%s: element type %s on the %s (expected f32, or bf16 on CUDA)", what, tsr_dtype_name(dt),
              tsr_device_kind_name(dev->kind));
    TSR_CHECK(seqs >= 0 && n >= 0 && heads >= 0 && hd >= 1 && pos >= 0 && (long long)pos + n <= T, TSR_ERR_INVALID_ARG,
              "%s: seqs %d, n %d, heads %d, head size %d, positions %d..%d of a cache of %d rows (expected sizes "
              "not negative, a head size of at least 1, positions inside the cache)",
              what, seqs, n, heads, hd, pos, pos + n - 1, T);
    long long width = (long long)heads * hd;
    TSR_CHECK(ld_q >= width && ld_c >= width && ld_o >= width, TSR_ERR_INVALID_ARG,
              "%s: leading dimensions %d, %d, %d must be at least heads * hd = %lld", what, ld_q, ld_c, ld_o, width);
    if (seqs == 0 || n == 0 || heads == 0)
        goto cleanup;
    TSR_CHECK(q && kc && vc && o, TSR_ERR_INVALID_ARG, "%s: q, the cache and o must not be NULL", what);
    if (dev->kind == TSR_DEVICE_CPU) {
        score = malloc((size_t)T * sizeof *score);
        TSR_CHECK(score, TSR_ERR_OUT_OF_MEMORY, "%s: no memory for %d scores", what, T);
        cpu_attention_cached(seqs, n, pos, T, heads, hd, q, ld_q, kc, vc, ld_c, o, ld_o, score);
    } else {
#if TSR_HAVE_CUDA
        TSR_CHECK(tsr__cuda_attention_cached_smem(T, hd) <= CUDA_SMEM_DEFAULT && seqs <= 65535 && heads <= 65535,
                  TSR_ERR_NOT_SUPPORTED, "%s: a cache of %d rows, %d sequences or %d heads is more than the CUDA "
                  "kernel takes (at most %d rows with head size %d, 65535 sequences and heads)", what, T, seqs, heads,
                  (int)(CUDA_SMEM_DEFAULT / sizeof(float)) - hd - 4, hd);
        TSR_TRY(tsr__cuda_status(tsr__cuda_attention_cached(dt, seqs, n, pos, T, heads, hd, q, ld_q, kc, vc, ld_c, o,
                                                            ld_o, tsr__cuda_stream(dev)),
                                 what));
#else
        TSR_CHECK(0, TSR_ERR_NOT_SUPPORTED, "%s: this build has no CUDA backend", what);
#endif
    }
cleanup:
    free(score);
    return rc;
}
