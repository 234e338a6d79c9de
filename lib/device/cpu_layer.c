/*
 * cpu_layer.c: the CPU layer-operation kernels (fp32): the reference for the CUDA ones and
 * the compute of the GPT model on the CPU device.
 *
 * They compute what the tp ops of lib/tp/norm.c and lib/tp/embed.c compute on one rank,
 * with the same formulas and roundings (row statistics in double, biased variance, eps
 * inside the square root, GELU's tanh form in float), so a model on these kernels follows
 * the same loss curve. An accumulated output (dgamma, db, dwte, dwpe) receives this call's
 * sum, formed in float from zero in row order, as the tp ops do.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "device/layer_impl.h"

/* sqrt(2/pi), the constant of the tanh form of GELU (as in lib/tp/norm.c). */
#define GELU_SCALE 0.7978845608028654
#define GELU_CUBE 0.044715

/* Columns summed at once through a stack buffer by the column reductions. */
#define COL_BLOCK 256

void tsr__cpu_layernorm_forward(int rows, int cols, const float *x, const float *gamma, const float *beta,
                                float eps, float *y, float *mean, float *rstd)
{
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * cols;
        float *yr = y + (size_t)r * cols;
        double sum = 0, sumsq = 0;
        for (int c = 0; c < cols; c++) {
            double v = xr[c];
            sum += v;
            sumsq += v * v;
        }
        double m = sum / cols, var = sumsq / cols - m * m;
        double rs = 1.0 / sqrt((var > 0 ? var : 0) + eps);
        mean[r] = (float)m;
        rstd[r] = (float)rs;
        for (int c = 0; c < cols; c++)
            yr[c] = (float)((xr[c] - m) * rs) * gamma[c] + beta[c];
    }
}

tsr_status_t tsr__cpu_layernorm_backward(int rows, int cols, const float *dy, const float *x, const float *gamma,
                                         const float *mean, const float *rstd, float *dx, float *dgamma,
                                         float *dbeta)
{
    float *pg = tsr__calloc(2 * (size_t)cols, sizeof *pg); /* dgamma, then dbeta, of this call */
    if (!pg)
        return TSR_ERROR(TSR_ERR_OUT_OF_MEMORY, "layernorm backward: no memory for %d column sums", 2 * cols);
    float *pb = pg + cols;
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * cols, *dyr = dy + (size_t)r * cols;
        float *dxr = dx + (size_t)r * cols;
        float m = mean[r];
        double rs = rstd[r];
        /* Means along the row of g = dy gamma and of g xhat. */
        double sg = 0, sgx = 0;
        for (int c = 0; c < cols; c++) {
            double xhat = (xr[c] - m) * rs;
            double g = (double)dyr[c] * gamma[c];
            sg += g;
            sgx += g * xhat;
            pg[c] += (float)(dyr[c] * xhat);
            pb[c] += dyr[c];
        }
        double mg = sg / cols, mgx = sgx / cols;
        for (int c = 0; c < cols; c++) {
            double xhat = (xr[c] - m) * rs;
            double g = (double)dyr[c] * gamma[c];
            dxr[c] += (float)(rstd[r] * (g - mg - xhat * mgx));
        }
    }
    for (int c = 0; c < cols; c++) {
        dgamma[c] += pg[c];
        dbeta[c] += pb[c];
    }
    free(pg);
    return TSR_OK;
}

void tsr__cpu_gelu_forward(size_t n, const float *x, float *y)
{
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        y[i] = 0.5f * v * (1.0f + tanhf((float)GELU_SCALE * (v + (float)GELU_CUBE * v * v * v)));
    }
}

void tsr__cpu_gelu_backward(size_t n, const float *x, const float *dy, float *dx)
{
    for (size_t i = 0; i < n; i++) {
        float v = x[i];
        float t = tanhf((float)GELU_SCALE * (v + (float)GELU_CUBE * v * v * v));
        float dt = (float)GELU_SCALE * (1.0f + 3.0f * (float)GELU_CUBE * v * v) * (1.0f - t * t);
        dx[i] = dy[i] * (0.5f * (1.0f + t) + 0.5f * v * dt);
    }
}

void tsr__cpu_add(size_t n, const float *a, const float *b, float *y)
{
    for (size_t i = 0; i < n; i++)
        y[i] = a[i] + b[i];
}

void tsr__cpu_bias_grad(int rows, int cols, const float *dy, int ld, float *db)
{
    float sum[COL_BLOCK];
    for (int c0 = 0; c0 < cols; c0 += COL_BLOCK) {
        int w = cols - c0 < COL_BLOCK ? cols - c0 : COL_BLOCK;
        memset(sum, 0, sizeof sum);
        for (int r = 0; r < rows; r++) {
            const float *row = dy + (size_t)r * ld + c0;
            for (int j = 0; j < w; j++)
                sum[j] += row[j];
        }
        for (int j = 0; j < w; j++)
            db[c0 + j] += sum[j];
    }
}

void tsr__cpu_embedding_forward(const int32_t *tokens, int seqs, int T, int C, const float *wte, const float *wpe,
                                float *out)
{
    for (int s = 0; s < seqs; s++)
        for (int t = 0; t < T; t++) {
            size_t i = (size_t)s * T + t;
            const float *w = wte + (size_t)tokens[i] * C, *p = wpe + (size_t)t * C;
            float *o = out + i * C;
            for (int c = 0; c < C; c++)
                o[c] = w[c] + p[c];
        }
}

/* A token and where it occurs, ordered by token then position. */
typedef struct occurrence {
    int32_t token;
    int pos;
} occurrence_t;

static int occurrence_cmp(const void *pa, const void *pb)
{
    const occurrence_t *a = pa, *b = pb;
    if (a->token != b->token)
        return a->token < b->token ? -1 : 1;
    return (a->pos > b->pos) - (a->pos < b->pos);
}

tsr_status_t tsr__cpu_embedding_backward(const int32_t *tokens, int seqs, int T, int C, const float *dout,
                                         float *dwte, float *dwpe)
{
    size_t n = (size_t)seqs * T;
    float sum[COL_BLOCK];
    occurrence_t *occ = tsr__calloc(n, sizeof *occ);
    if (!occ)
        return TSR_ERROR(TSR_ERR_OUT_OF_MEMORY, "embedding backward: no memory to group %zu tokens", n);
    /* dwte: the occurrences of each token summed in position order, then added once. */
    for (size_t i = 0; i < n; i++) {
        occ[i].token = tokens[i];
        occ[i].pos = (int)i;
    }
    qsort(occ, n, sizeof *occ, occurrence_cmp);
    for (size_t first = 0, end; first < n; first = end) {
        for (end = first + 1; end < n && occ[end].token == occ[first].token; end++)
            ;
        float *dst = dwte + (size_t)occ[first].token * C;
        for (int c0 = 0; c0 < C; c0 += COL_BLOCK) {
            int w = C - c0 < COL_BLOCK ? C - c0 : COL_BLOCK;
            memset(sum, 0, sizeof sum);
            for (size_t k = first; k < end; k++) {
                const float *row = dout + (size_t)occ[k].pos * C + c0;
                for (int j = 0; j < w; j++)
                    sum[j] += row[j];
            }
            for (int j = 0; j < w; j++)
                dst[c0 + j] += sum[j];
        }
    }
    /* dwpe: position t summed over the sequences, then added once. */
    for (int t = 0; t < T; t++)
        for (int c0 = 0; c0 < C; c0 += COL_BLOCK) {
            int w = C - c0 < COL_BLOCK ? C - c0 : COL_BLOCK;
            memset(sum, 0, sizeof sum);
            for (int s = 0; s < seqs; s++) {
                const float *row = dout + ((size_t)s * T + t) * C + c0;
                for (int j = 0; j < w; j++)
                    sum[j] += row[j];
            }
            for (int j = 0; j < w; j++)
                dwpe[(size_t)t * C + c0 + j] += sum[j];
        }
    free(occ);
    return TSR_OK;
}

void tsr__cpu_cross_entropy(int rows, int V, float *logits, int ld, const int32_t *targets, float *losses,
                            float dscale)
{
    for (int r = 0; r < rows; r++) {
        float *row = logits + (size_t)r * ld;
        int t = targets[r];
        float mx = -INFINITY;
        for (int j = 0; j < V; j++)
            mx = row[j] > mx ? row[j] : mx;
        /* exp(l - max) is kept in the row, so each logit costs one exp. */
        double sum = 0;
        float target = row[t];
        for (int j = 0; j < V; j++) {
            double e = exp((double)row[j] - mx);
            sum += e;
            row[j] = (float)e;
        }
        losses[r] = (float)(mx + log(sum) - target);
        double scale = (double)dscale / sum;
        for (int j = 0; j < V; j++)
            row[j] = (float)(scale * row[j] - (j == t ? (double)dscale : 0.0));
    }
}
