/*
 * cpu_attention.c: causal multi-head attention on the CPU in fp32, flash-style: threads take
 * (sequence, head) pairs; a query row meets the keys in blocks of KEY_BLOCK with an online
 * softmax (running maximum and sum, the accumulator rescaled when the maximum grows), so no
 * more than one block of a row of the T×T matrix exists at a time.
 *
 * The backward recomputes each row's probabilities from the scores and the forward's lse,
 * p_ij = exp(s_ij - lse_i), takes delta_i = rowsum(dO∘O) (written to the delta scratch), and
 * accumulates dK and dV of the pair in place. Every output element is formed by one thread in
 * key or query order, so the results do not depend on the number of threads.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "device/attention_impl.h"
#include "device/cpu_math.h"

/* Keys scored at once per query row. */
#define KEY_BLOCK 64

/* Row t of sequence s, head h, of a matrix with leading dimension ld. */
static size_t at(int T, int ld, int hd, int s, int t, int h)
{
    return ((size_t)s * T + t) * (size_t)ld + (size_t)h * hd;
}

static float dot(const float *a, const float *b, int n)
{
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int e = 0; e < n; e++)
        sum += a[e] * b[e];
    return sum;
}

/* y[0..n) += alpha x[0..n). */
static void axpy(int n, float alpha, const float *x, float *y)
{
#pragma omp simd
    for (int e = 0; e < n; e++)
        y[e] += alpha * x[e];
}

/* Whether the pairs are worth a team of threads. */
#define WORTH_THREADS(seqs, T, heads, hd) ((seqs) * (heads) > 1 && (double)(seqs) * (heads) * (T) * (T) * (hd) >= 1 << 20)

/* Output row i of pair (s, h): acc (hd floats of scratch) and sc (KEY_BLOCK) are the thread's. */
TSR_CPU_KERNEL
static void forward_row(int T, int hd, const float *q, const float *k, const float *v, int ld_in, float *o, int ld_o,
                        int s, int h, int i, float scale, float *acc, float *sc, float *lse)
{
    const float *qi = q + at(T, ld_in, hd, s, i, h);
    float mx = -INFINITY, l = 0.0f;
    memset(acc, 0, (size_t)hd * sizeof *acc);
    for (int j0 = 0; j0 <= i; j0 += KEY_BLOCK) {
        int nj = i + 1 - j0 < KEY_BLOCK ? i + 1 - j0 : KEY_BLOCK;
        float bm = mx;
        for (int j = 0; j < nj; j++) {
            sc[j] = dot(qi, k + at(T, ld_in, hd, s, j0 + j, h), hd) * scale;
            bm = sc[j] > bm ? sc[j] : bm;
        }
        if (bm > mx && mx > -INFINITY) {
            float corr = tsr__expf(mx - bm);
            l *= corr;
            for (int e = 0; e < hd; e++)
                acc[e] *= corr;
        }
        mx = bm;
#pragma omp simd
        for (int j = 0; j < nj; j++)
            sc[j] = tsr__expf(sc[j] - mx);
        for (int j = 0; j < nj; j++) {
            l += sc[j];
            axpy(hd, sc[j], v + at(T, ld_in, hd, s, j0 + j, h), acc);
        }
    }
    float *oi = o + at(T, ld_o, hd, s, i, h), inv = 1.0f / l;
    for (int e = 0; e < hd; e++)
        oi[e] = acc[e] * inv;
    *lse = mx + logf(l);
}

TSR_CPU_KERNEL
tsr_status_t tsr__cpu_attention_forward(int seqs, int T, int heads, int hd, const float *q, const float *k,
                                        const float *v, int ld_in, float *o, int ld_o, float *lse)
{
    int pairs = seqs * heads, failed = 0;
    const float scale = 1.0f / sqrtf((float)hd);
#pragma omp parallel if (WORTH_THREADS(seqs, T, heads, hd))
    {
        float *acc = malloc(((size_t)hd + KEY_BLOCK) * sizeof *acc);
#pragma omp for schedule(static)
        for (int p = 0; p < pairs; p++) {
            int s = p / heads, h = p % heads;
            if (!acc) {
                failed = 1;
                continue;
            }
            for (int i = 0; i < T; i++)
                forward_row(T, hd, q, k, v, ld_in, o, ld_o, s, h, i, scale, acc, acc + hd,
                            &lse[(size_t)p * T + i]);
        }
        free(acc);
    }
    if (failed)
        return TSR_ERROR(TSR_ERR_OUT_OF_MEMORY, "no memory for attention forward scratch (hd = %d)", hd);
    return TSR_OK;
}

/* The gradients of pair (s, h); dqi (hd floats) and sc (KEY_BLOCK) are the thread's scratch. */
TSR_CPU_KERNEL
static void backward_pair(int T, int hd, const float *q, const float *k, const float *v, int ld_in, const float *o,
                          const float *d_o, int ld_o, const float *lse, float *delta, float *dq, float *dk, float *dv,
                          int s, int h, float scale, float *dqi, float *sc)
{
    for (int j = 0; j < T; j++) {
        memset(dk + at(T, ld_in, hd, s, j, h), 0, (size_t)hd * sizeof *dk);
        memset(dv + at(T, ld_in, hd, s, j, h), 0, (size_t)hd * sizeof *dv);
    }
    for (int i = 0; i < T; i++) {
        const float *qi = q + at(T, ld_in, hd, s, i, h), *doi = d_o + at(T, ld_o, hd, s, i, h);
        float li = lse[i], di = dot(doi, o + at(T, ld_o, hd, s, i, h), hd);
        delta[i] = di;
        memset(dqi, 0, (size_t)hd * sizeof *dqi);
        for (int j0 = 0; j0 <= i; j0 += KEY_BLOCK) {
            int nj = i + 1 - j0 < KEY_BLOCK ? i + 1 - j0 : KEY_BLOCK;
            for (int j = 0; j < nj; j++)
                sc[j] = dot(qi, k + at(T, ld_in, hd, s, j0 + j, h), hd) * scale;
#pragma omp simd
            for (int j = 0; j < nj; j++)
                sc[j] = tsr__expf(sc[j] - li);
            for (int j = 0; j < nj; j++) {
                size_t kj = at(T, ld_in, hd, s, j0 + j, h);
                float dp = dot(doi, v + kj, hd), ds = sc[j] * (dp - di) * scale;
                axpy(hd, ds, k + kj, dqi);
                axpy(hd, ds, qi, dk + kj);
                axpy(hd, sc[j], doi, dv + kj);
            }
        }
        memcpy(dq + at(T, ld_in, hd, s, i, h), dqi, (size_t)hd * sizeof *dqi);
    }
}

TSR_CPU_KERNEL
tsr_status_t tsr__cpu_attention_backward(int seqs, int T, int heads, int hd, const float *q, const float *k,
                                         const float *v, int ld_in, const float *o, const float *d_o, int ld_o,
                                         const float *lse, float *delta, float *dq, float *dk, float *dv)
{
    int pairs = seqs * heads, failed = 0;
    const float scale = 1.0f / sqrtf((float)hd);
#pragma omp parallel if (WORTH_THREADS(seqs, T, heads, hd))
    {
        float *dqi = malloc(((size_t)hd + KEY_BLOCK) * sizeof *dqi);
#pragma omp for schedule(static)
        for (int p = 0; p < pairs; p++) {
            if (!dqi) {
                failed = 1;
                continue;
            }
            backward_pair(T, hd, q, k, v, ld_in, o, d_o, ld_o, lse + (size_t)p * T, delta + (size_t)p * T, dq, dk, dv,
                          p / heads, p % heads, scale, dqi, dqi + hd);
        }
        free(dqi);
    }
    if (failed)
        return TSR_ERROR(TSR_ERR_OUT_OF_MEMORY, "no memory for attention backward scratch (hd = %d)", hd);
    return TSR_OK;
}
