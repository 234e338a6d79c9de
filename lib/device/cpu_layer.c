/*
 * cpu_layer.c: the CPU layer-operation kernels (fp32): the reference for the CUDA ones and
 * the compute of the GPT model on the CPU device.
 *
 * Row statistics are formed in double (biased variance, eps inside the square root), GELU in
 * float with its tanh form. An accumulated output (dgamma, db, dwte, dwpe) receives this
 * call's sum, formed in float from zero in row order, then added once.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "device/layer_impl.h"

/* sqrt(2/pi), the constant of the tanh form of GELU. */
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

/* dx += rstd (g - mg - xhat mgx) over one row, g = dy gamma, from the row means mg and mgx. */
static void layernorm_dx_row(int cols, const float *dy, const float *x, const float *gamma, float mean, float rstd,
                             double mg, double mgx, float *dx)
{
    double rs = rstd;
    for (int c = 0; c < cols; c++) {
        double xhat = (x[c] - mean) * rs;
        double g = (double)dy[c] * gamma[c];
        dx[c] += (float)(rstd * (g - mg - xhat * mgx));
    }
}

tsr_status_t tsr__cpu_layernorm_backward(int rows, int cols, const float *dy, const float *x, const float *gamma,
                                         const float *mean, const float *rstd, float *dx, float *dgamma,
                                         float *dbeta)
{
    float *pg = NULL, *pb = NULL; /* dgamma, then dbeta, of this call */
    if (dgamma) {
        pg = tsr__calloc(2 * (size_t)cols, sizeof *pg);
        if (!pg)
            return TSR_ERROR(TSR_ERR_OUT_OF_MEMORY, "layernorm backward: no memory for %d column sums", 2 * cols);
        pb = pg + cols;
    }
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * cols, *dyr = dy + (size_t)r * cols;
        float m = mean[r];
        double rs = rstd[r];
        if (pg)
            for (int c = 0; c < cols; c++) {
                pg[c] += (float)(dyr[c] * ((xr[c] - m) * rs));
                pb[c] += dyr[c];
            }
        if (!dx)
            continue;
        /* Means along the row of g = dy gamma and of g xhat. */
        double sg = 0, sgx = 0;
        for (int c = 0; c < cols; c++) {
            double g = (double)dyr[c] * gamma[c];
            sg += g;
            sgx += g * ((xr[c] - m) * rs);
        }
        layernorm_dx_row(cols, dyr, xr, gamma, m, rstd[r], sg / cols, sgx / cols, dx + (size_t)r * cols);
    }
    if (pg)
        for (int c = 0; c < cols; c++) {
            dgamma[c] += pg[c];
            dbeta[c] += pb[c];
        }
    free(pg);
    return TSR_OK;
}

void tsr__cpu_layernorm_stats(int rows, int cols, const float *x, float *stats)
{
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * cols;
        double sum = 0, sq = 0;
        for (int c = 0; c < cols; c++)
            sum += xr[c];
        double m = sum / cols;
        for (int c = 0; c < cols; c++)
            sq += (xr[c] - m) * (xr[c] - m);
        /* S m from S as stored, its rounding error carried in Q's place (tessera/kernels.h). */
        float s = (float)sum;
        double sm = (double)s * s / cols;
        stats[3 * (size_t)r] = s;
        stats[3 * (size_t)r + 1] = (float)(sq + (sm - (float)sm));
        stats[3 * (size_t)r + 2] = (float)sm;
    }
}

void tsr__cpu_layernorm_apply(int rows, int cols, int width, const float *x, const float *gamma, const float *beta,
                              float eps, const float *stats, float *y, float *mean, float *rstd)
{
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * cols, *st = stats + 3 * (size_t)r;
        float *yr = y + (size_t)r * cols;
        double m = (double)st[0] / width, var = ((double)st[1] + st[2]) / width - m * m;
        double rs = 1.0 / sqrt((var > 0 ? var : 0) + eps);
        mean[r] = (float)m;
        rstd[r] = (float)rs;
        for (int c = 0; c < cols; c++)
            yr[c] = (float)((xr[c] - m) * rs) * gamma[c] + beta[c];
    }
}

void tsr__cpu_layernorm_backward_stats(int rows, int cols, const float *dy, const float *x, const float *gamma,
                                       const float *mean, const float *rstd, float *stats)
{
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * cols, *dyr = dy + (size_t)r * cols;
        double sg = 0, sgx = 0, rs = rstd[r];
        for (int c = 0; c < cols; c++) {
            double g = (double)dyr[c] * gamma[c];
            sg += g;
            sgx += g * ((xr[c] - mean[r]) * rs);
        }
        stats[2 * (size_t)r] = (float)sg;
        stats[2 * (size_t)r + 1] = (float)sgx;
    }
}

void tsr__cpu_layernorm_backward_apply(int rows, int cols, int width, const float *dy, const float *x,
                                       const float *gamma, const float *mean, const float *rstd, const float *stats,
                                       float *dx)
{
    for (int r = 0; r < rows; r++) {
        size_t o = (size_t)r * cols;
        layernorm_dx_row(cols, dy + o, x + o, gamma, mean[r], rstd[r], (double)stats[2 * (size_t)r] / width,
                         (double)stats[2 * (size_t)r + 1] / width, dx + o);
    }
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

void tsr__cpu_axpby_2d(int rows, int cols, float alpha, const float *src, int lds, float beta, float *dst, int ldd)
{
    for (int r = 0; r < rows; r++) {
        const float *s = src + (size_t)r * lds;
        float *d = dst + (size_t)r * ldd;
        if (beta == 0.0f)
            for (int c = 0; c < cols; c++)
                d[c] = alpha * s[c];
        else
            for (int c = 0; c < cols; c++)
                d[c] = alpha * s[c] + beta * d[c];
    }
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

void tsr__cpu_embedding_forward(const int32_t *tokens, int seqs, int T, int C, int v0, int nv, const float *wte,
                                const float *wpe, float *out)
{
    for (int s = 0; s < seqs; s++)
        for (int t = 0; t < T; t++) {
            size_t i = (size_t)s * T + t;
            int id = tokens[i] - v0;
            const float *w = wte && id >= 0 && id < nv ? wte + (size_t)id * C : NULL;
            const float *p = wpe ? wpe + (size_t)t * C : NULL;
            float *o = out + i * C;
            for (int c = 0; c < C; c++)
                o[c] = (w ? w[c] : 0.0f) + (p ? p[c] : 0.0f);
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

tsr_status_t tsr__cpu_embedding_backward(const int32_t *tokens, int seqs, int T, int C, int v0, int nv,
                                         const float *dout, float *dwte, float *dwpe)
{
    size_t n = (size_t)seqs * T, in_block = 0;
    float sum[COL_BLOCK];
    occurrence_t *occ = NULL;
    if (dwte) {
        occ = tsr__calloc(n ? n : 1, sizeof *occ);
        if (!occ)
            return TSR_ERROR(TSR_ERR_OUT_OF_MEMORY, "embedding backward: no memory to group %zu tokens", n);
    }
    /* dwte: the occurrences of each token of the block summed in position order, then added once. */
    for (size_t i = 0; dwte && i < n; i++)
        if (tokens[i] >= v0 && tokens[i] - v0 < nv) {
            occ[in_block].token = tokens[i];
            occ[in_block++].pos = (int)i;
        }
    if (in_block)
        qsort(occ, in_block, sizeof *occ, occurrence_cmp);
    for (size_t first = 0, end; first < in_block; first = end) {
        for (end = first + 1; end < in_block && occ[end].token == occ[first].token; end++)
            ;
        float *dst = dwte + (size_t)(occ[first].token - v0) * C;
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
    for (int t = 0; dwpe && t < T; t++)
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

void tsr__cpu_cross_entropy_stats(int rows, int V, int v0, const float *logits, int ld, const int32_t *targets,
                                  float *stats)
{
    for (int r = 0; r < rows; r++) {
        const float *row = logits + (size_t)r * ld;
        int t = targets[r] - v0;
        float mx = -INFINITY;
        for (int j = 0; j < V; j++)
            mx = row[j] > mx ? row[j] : mx;
        double sum = 0;
        for (int j = 0; j < V; j++)
            sum += exp((double)row[j] - mx);
        stats[3 * (size_t)r] = mx;
        stats[3 * (size_t)r + 1] = (float)sum;
        stats[3 * (size_t)r + 2] = t >= 0 && t < V ? row[t] : 0.0f;
    }
}

void tsr__cpu_cross_entropy_finish(int rows, int V, int v0, float *logits, int ld, const int32_t *targets, int parts,
                                   const float *stats, float *losses, float dscale)
{
    for (int r = 0; r < rows; r++) {
        float *row = logits + (size_t)r * ld;
        int t = targets[r] - v0;
        /* The row's maximum, sum of exponentials and target logit over every block. */
        float mx = -INFINITY;
        for (int p = 0; p < parts; p++)
            mx = stats[3 * ((size_t)p * rows + r)] > mx ? stats[3 * ((size_t)p * rows + r)] : mx;
        double sum = 0, target = 0;
        for (int p = 0; p < parts; p++) {
            const float *st = stats + 3 * ((size_t)p * rows + r);
            sum += st[1] * exp((double)st[0] - mx);
            target += st[2];
        }
        losses[r] = (float)(mx + log(sum) - target);
        double scale = (double)dscale / sum;
        for (int j = 0; j < V; j++)
            row[j] = (float)(scale * exp((double)row[j] - mx) - (j == t ? (double)dscale : 0.0));
    }
}
