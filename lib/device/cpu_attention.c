/*
 * cpu_attention.c: causal multi-head attention on the CPU, fp32 in memory and double inside,
 * one query row at a time, never holding more than one row of the T×T matrix.
 *
 * The arithmetic follows lib/tp/attention.c (scores, max, exponentials and the products
 * accumulated in double) so that a model built on these kernels reproduces the losses of
 * the one built on lib/tp to rounding. The backward recomputes each row's probabilities from
 * the scores in double instead of trusting the fp32 lse, and takes delta = Σ_j p_ij dp_ij
 * (equal to rowsum(dO∘O)) in double, as lib/tp does, rather than from the fp32 o.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "device/attention_impl.h"

/* Row t of sequence s, head h, of a matrix with leading dimension ld. */
static size_t at(int T, int ld, int hd, int s, int t, int h)
{
    return ((size_t)s * T + t) * (size_t)ld + (size_t)h * hd;
}

/*
 * p[0..i] = softmax of the scaled scores of query row qi against keys 0..i of one head;
 * returns the row's log-sum-exp.
 */
static double row_probs(const float *qi, const float *k, int T, int ld, int hd, int s, int h, int i, double scale,
                        double *p)
{
    double mx = -INFINITY, sum = 0;
    for (int j = 0; j <= i; j++) {
        const float *kj = k + at(T, ld, hd, s, j, h);
        double dot = 0;
        for (int e = 0; e < hd; e++)
            dot += (double)qi[e] * kj[e];
        p[j] = dot * scale;
        mx = p[j] > mx ? p[j] : mx;
    }
    for (int j = 0; j <= i; j++) {
        p[j] = exp(p[j] - mx);
        sum += p[j];
    }
    for (int j = 0; j <= i; j++)
        p[j] /= sum;
    return mx + log(sum);
}

tsr_status_t tsr__cpu_attention_forward(int seqs, int T, int heads, int hd, const float *q, const float *k,
                                        const float *v, int ld_in, float *o, int ld_o, float *lse)
{
    tsr_status_t rc = TSR_OK;
    double *p = tsr__calloc((size_t)T, sizeof *p), *acc = tsr__calloc((size_t)hd, sizeof *acc);
    TSR_CHECK(p && acc, TSR_ERR_OUT_OF_MEMORY, "no memory for attention forward scratch (T = %d)", T);
    const double scale = 1.0 / sqrt((double)hd);
    for (int s = 0; s < seqs; s++)
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < T; i++) {
                const float *qi = q + at(T, ld_in, hd, s, i, h);
                double l = row_probs(qi, k, T, ld_in, hd, s, h, i, scale, p);
                memset(acc, 0, (size_t)hd * sizeof *acc);
                for (int j = 0; j <= i; j++) {
                    const float *vj = v + at(T, ld_in, hd, s, j, h);
                    for (int e = 0; e < hd; e++)
                        acc[e] += p[j] * vj[e];
                }
                float *oi = o + at(T, ld_o, hd, s, i, h);
                for (int e = 0; e < hd; e++)
                    oi[e] = (float)acc[e];
                lse[((size_t)s * heads + h) * T + i] = (float)l;
            }
cleanup:
    free(p);
    free(acc);
    return rc;
}

tsr_status_t tsr__cpu_attention_backward(int seqs, int T, int heads, int hd, const float *q, const float *k,
                                         const float *v, int ld_in, const float *o, const float *d_o, int ld_o,
                                         const float *lse, float *delta, float *dq, float *dk, float *dv)
{
    tsr_status_t rc = TSR_OK;
    (void)o; /* see the file comment: delta comes from the recomputed probabilities */
    (void)lse;
    size_t rows = (size_t)T * hd;
    double *p = tsr__calloc((size_t)T, sizeof *p), *dp = tsr__calloc((size_t)T, sizeof *dp);
    double *dqi = tsr__calloc((size_t)hd, sizeof *dqi);
    double *dk_acc = tsr__calloc(rows, sizeof *dk_acc), *dv_acc = tsr__calloc(rows, sizeof *dv_acc);
    TSR_CHECK(p && dp && dqi && dk_acc && dv_acc, TSR_ERR_OUT_OF_MEMORY,
              "no memory for attention backward scratch (T = %d, hd = %d)", T, hd);
    const double scale = 1.0 / sqrt((double)hd);
    for (int s = 0; s < seqs; s++)
        for (int h = 0; h < heads; h++) {
            memset(dk_acc, 0, rows * sizeof *dk_acc);
            memset(dv_acc, 0, rows * sizeof *dv_acc);
            for (int i = 0; i < T; i++) {
                const float *qi = q + at(T, ld_in, hd, s, i, h);
                const float *doi = d_o + at(T, ld_o, hd, s, i, h);
                row_probs(qi, k, T, ld_in, hd, s, h, i, scale, p);
                double dot = 0;
                for (int j = 0; j <= i; j++) {
                    const float *vj = v + at(T, ld_in, hd, s, j, h);
                    double acc = 0;
                    for (int e = 0; e < hd; e++)
                        acc += (double)doi[e] * vj[e];
                    dp[j] = acc;
                    dot += p[j] * acc;
                }
                delta[((size_t)s * heads + h) * T + i] = (float)dot;
                memset(dqi, 0, (size_t)hd * sizeof *dqi);
                for (int j = 0; j <= i; j++) {
                    const double ds = p[j] * (dp[j] - dot) * scale;
                    const float *kj = k + at(T, ld_in, hd, s, j, h);
                    double *dkj = dk_acc + (size_t)j * hd, *dvj = dv_acc + (size_t)j * hd;
                    for (int e = 0; e < hd; e++) {
                        dqi[e] += ds * kj[e];
                        dkj[e] += ds * qi[e];
                        dvj[e] += p[j] * doi[e];
                    }
                }
                float *dq_row = dq + at(T, ld_in, hd, s, i, h);
                for (int e = 0; e < hd; e++)
                    dq_row[e] = (float)dqi[e];
            }
            for (int j = 0; j < T; j++) {
                float *dk_row = dk + at(T, ld_in, hd, s, j, h), *dv_row = dv + at(T, ld_in, hd, s, j, h);
                for (int e = 0; e < hd; e++) {
                    dk_row[e] = (float)dk_acc[(size_t)j * hd + e];
                    dv_row[e] = (float)dv_acc[(size_t)j * hd + e];
                }
            }
        }
cleanup:
    free(p);
    free(dp);
    free(dqi);
    free(dk_acc);
    free(dv_acc);
    return rc;
}
