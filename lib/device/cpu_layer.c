/*
 * cpu_layer.c: the CPU layer-operation kernels (fp32): the reference for the CUDA ones and
 * the compute of the GPT model on the CPU device.
 *
 * Row statistics are formed in double (biased variance, eps inside the square root), GELU in
 * float with its tanh form (cpu_math.h). An accumulated output (dgamma, db, dwte, dwpe)
 * receives this call's sum, formed in float from zero in row order, then added once.
 *
 * Threads (OpenMP) take rows, or for the column sums blocks of columns, so that every output
 * is computed by one thread in the serial order: the results do not depend on their number.
 * The softmax of the cross-entropy takes its exponentials in float (tsr__expf) and sums them
 * in double.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "device/cpu_math.h"
#include "device/layer_impl.h"

/* Columns summed at once through a stack buffer by the column reductions. */
#define COL_BLOCK 64

/* Rows of cols elements below which a row loop stays on the calling thread. */
#define PAR_ROWS(rows, cols) ((size_t)(rows) * (size_t)(cols) >= TSR_CPU_PAR_MIN && (rows) > 1)

TSR_CPU_KERNEL
void tsr__cpu_layernorm_forward(int rows, int cols, const float *x, const float *gamma, const float *beta,
                                float eps, float *y, float *mean, float *rstd)
{
#pragma omp parallel for schedule(static) if (PAR_ROWS(rows, cols))
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
TSR_CPU_KERNEL
static void layernorm_dx_row(int cols, const float *dy, const float *x, const float *gamma, float mean, float rstd,
                             double mg, double mgx, float *dx)
{
    double rs = rstd;
#pragma omp simd
    for (int c = 0; c < cols; c++) {
        double xhat = (x[c] - mean) * rs;
        double g = (double)dy[c] * gamma[c];
        dx[c] += (float)(rstd * (g - mg - xhat * mgx));
    }
}

TSR_CPU_KERNEL
tsr_status_t tsr__cpu_layernorm_backward(int rows, int cols, const float *dy, const float *x, const float *gamma,
                                         const float *mean, const float *rstd, float *dx, float *dgamma,
                                         float *dbeta)
{
    /* dgamma and dbeta: each block of columns summed over the rows in row order by one thread. */
    int nblocks = dgamma ? (cols + COL_BLOCK - 1) / COL_BLOCK : 0;
#pragma omp parallel for schedule(static) if (PAR_ROWS(rows, cols))
    for (int bk = 0; bk < nblocks; bk++) {
        int c0 = bk * COL_BLOCK, w = cols - c0 < COL_BLOCK ? cols - c0 : COL_BLOCK;
        float pg[COL_BLOCK] = {0}, pb[COL_BLOCK] = {0};
        for (int r = 0; r < rows; r++) {
            const float *xr = x + (size_t)r * cols + c0, *dyr = dy + (size_t)r * cols + c0;
            float m = mean[r];
            double rs = rstd[r];
#pragma omp simd
            for (int j = 0; j < w; j++) {
                pg[j] += (float)(dyr[j] * ((xr[j] - m) * rs));
                pb[j] += dyr[j];
            }
        }
        for (int j = 0; j < w; j++) {
            dgamma[c0 + j] += pg[j];
            dbeta[c0 + j] += pb[j];
        }
    }
    if (!dx)
        return TSR_OK;
#pragma omp parallel for schedule(static) if (PAR_ROWS(rows, cols))
    for (int r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * cols, *dyr = dy + (size_t)r * cols;
        float m = mean[r];
        double rs = rstd[r];
        /* Means along the row of g = dy gamma and of g xhat. */
        double sg = 0, sgx = 0;
        for (int c = 0; c < cols; c++) {
            double g = (double)dyr[c] * gamma[c];
            sg += g;
            sgx += g * ((xr[c] - m) * rs);
        }
        layernorm_dx_row(cols, dyr, xr, gamma, m, rstd[r], sg / cols, sgx / cols, dx + (size_t)r * cols);
    }
    return TSR_OK;
}

TSR_CPU_KERNEL
void tsr__cpu_layernorm_stats(int rows, int cols, const float *x, float *stats)
{
#pragma omp parallel for schedule(static) if (PAR_ROWS(rows, cols))
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

TSR_CPU_KERNEL
void tsr__cpu_layernorm_apply(int rows, int cols, int width, const float *x, const float *gamma, const float *beta,
                              float eps, const float *stats, float *y, float *mean, float *rstd)
{
#pragma omp parallel for schedule(static) if (PAR_ROWS(rows, cols))
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

TSR_CPU_KERNEL
void tsr__cpu_layernorm_backward_stats(int rows, int cols, const float *dy, const float *x, const float *gamma,
                                       const float *mean, const float *rstd, float *stats)
{
#pragma omp parallel for schedule(static) if (PAR_ROWS(rows, cols))
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

TSR_CPU_KERNEL
void tsr__cpu_layernorm_backward_apply(int rows, int cols, int width, const float *dy, const float *x,
                                       const float *gamma, const float *mean, const float *rstd, const float *stats,
                                       float *dx)
{
#pragma omp parallel for schedule(static) if (PAR_ROWS(rows, cols))
    for (int r = 0; r < rows; r++) {
        size_t o = (size_t)r * cols;
        layernorm_dx_row(cols, dy + o, x + o, gamma, mean[r], rstd[r], (double)stats[2 * (size_t)r] / width,
                         (double)stats[2 * (size_t)r + 1] / width, dx + o);
    }
}

TSR_CPU_KERNEL
void tsr__cpu_gelu_forward(size_t n, const float *x, float *y)
{
#pragma omp parallel for simd schedule(static) if (n >= TSR_CPU_PAR_MIN)
    for (size_t i = 0; i < n; i++)
        y[i] = tsr__gelu(x[i]);
}

TSR_CPU_KERNEL
void tsr__cpu_gelu_backward(size_t n, const float *x, const float *dy, float *dx)
{
#pragma omp parallel for simd schedule(static) if (n >= TSR_CPU_PAR_MIN)
    for (size_t i = 0; i < n; i++)
        dx[i] = dy[i] * tsr__gelu_grad(x[i]);
}

TSR_CPU_KERNEL
void tsr__cpu_add(size_t n, const float *a, const float *b, float *y)
{
#pragma omp parallel for simd schedule(static) if (n >= TSR_CPU_PAR_MIN)
    for (size_t i = 0; i < n; i++)
        y[i] = a[i] + b[i];
}

TSR_CPU_KERNEL
void tsr__cpu_axpby_2d(int rows, int cols, float alpha, const float *src, int lds, float beta, float *dst, int ldd)
{
#pragma omp parallel for schedule(static) if (PAR_ROWS(rows, cols))
    for (int r = 0; r < rows; r++) {
        const float *s = src + (size_t)r * lds;
        float *d = dst + (size_t)r * ldd;
        if (beta == 0.0f)
#pragma omp simd
            for (int c = 0; c < cols; c++)
                d[c] = alpha * s[c];
        else
#pragma omp simd
            for (int c = 0; c < cols; c++)
                d[c] = alpha * s[c] + beta * d[c];
    }
}

TSR_CPU_KERNEL
void tsr__cpu_bias_grad(int rows, int cols, const float *dy, int ld, float *db)
{
    int nblocks = (cols + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for schedule(static) if (PAR_ROWS(rows, cols))
    for (int bk = 0; bk < nblocks; bk++) {
        int c0 = bk * COL_BLOCK, w = cols - c0 < COL_BLOCK ? cols - c0 : COL_BLOCK;
        float sum[COL_BLOCK] = {0};
        for (int r = 0; r < rows; r++) {
            const float *row = dy + (size_t)r * ld + c0;
#pragma omp simd
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
    int n = seqs * T;
#pragma omp parallel for schedule(static) if (PAR_ROWS(n, C))
    for (int i = 0; i < n; i++) {
        int id = tokens[i] - v0, t = i % T;
        const float *w = wte && id >= 0 && id < nv ? wte + (size_t)id * C : NULL;
        const float *p = wpe ? wpe + (size_t)t * C : NULL;
        float *o = out + (size_t)i * C;
        if (w && p)
#pragma omp simd
            for (int c = 0; c < C; c++)
                o[c] = w[c] + p[c];
        else
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

/* dst[0..w) += the sum, from zero in the order given, of rows[k] + c0 over k < count (stride C). */
static void add_rows(const float *dout, int C, int c0, int w, const int *pos, int count, int stride, float *dst)
{
    float sum[COL_BLOCK] = {0};
    for (int k = 0; k < count; k++) {
        const float *row = dout + (size_t)(pos ? pos[k] : k * stride) * C + c0;
#pragma omp simd
        for (int j = 0; j < w; j++)
            sum[j] += row[j];
    }
    for (int j = 0; j < w; j++)
        dst[j] += sum[j];
}

tsr_status_t tsr__cpu_embedding_backward(const int32_t *tokens, int seqs, int T, int C, int v0, int nv,
                                         const float *dout, float *dwte, float *dwpe)
{
    size_t n = (size_t)seqs * T, in_block = 0, groups = 0;
    occurrence_t *occ = NULL;
    int *pos = NULL, *first = NULL; /* occurrence positions in order; group g is [first[g], first[g + 1]) */
    int cblocks = (C + COL_BLOCK - 1) / COL_BLOCK;
    if (dwte) {
        occ = tsr__calloc(n ? n : 1, sizeof *occ);
        pos = tsr__calloc(2 * n + 1, sizeof *pos);
        if (!occ || !pos) {
            free(occ);
            free(pos);
            return TSR_ERROR(TSR_ERR_OUT_OF_MEMORY, "embedding backward: no memory to group %zu tokens", n);
        }
        first = pos + n;
    }
    /* dwte: the occurrences of each token of the block summed in position order, then added once. */
    for (size_t i = 0; dwte && i < n; i++)
        if (tokens[i] >= v0 && tokens[i] - v0 < nv) {
            occ[in_block].token = tokens[i];
            occ[in_block++].pos = (int)i;
        }
    if (in_block)
        qsort(occ, in_block, sizeof *occ, occurrence_cmp);
    for (size_t k = 0; k < in_block; k++) {
        pos[k] = occ[k].pos;
        if (k == 0 || occ[k].token != occ[k - 1].token)
            first[groups++] = (int)k;
    }
    if (first)
        first[groups] = (int)in_block;
    long work = (long)groups * cblocks;
#pragma omp parallel for schedule(static) if (PAR_ROWS(in_block, C))
    for (long u = 0; u < work; u++) {
        int g = (int)(u / cblocks), c0 = (int)(u % cblocks) * COL_BLOCK, w = C - c0 < COL_BLOCK ? C - c0 : COL_BLOCK;
        float *dst = dwte + (size_t)(occ[first[g]].token - v0) * C + c0;
        add_rows(dout, C, c0, w, pos + first[g], first[g + 1] - first[g], 0, dst);
    }
    /* dwpe: position t summed over the sequences, then added once. */
    work = dwpe ? (long)T * cblocks : 0;
#pragma omp parallel for schedule(static) if (PAR_ROWS(n, C))
    for (long u = 0; u < work; u++) {
        int t = (int)(u / cblocks), c0 = (int)(u % cblocks) * COL_BLOCK, w = C - c0 < COL_BLOCK ? C - c0 : COL_BLOCK;
        add_rows(dout + (size_t)t * C, C, c0, w, NULL, seqs, T, dwpe + (size_t)t * C + c0);
    }
    free(occ);
    free(pos);
    return TSR_OK;
}

/* The largest of row[0..V). */
static float row_max(const float *row, int V)
{
    float mx = -INFINITY;
#pragma omp simd reduction(max : mx)
    for (int j = 0; j < V; j++)
        mx = row[j] > mx ? row[j] : mx;
    return mx;
}

TSR_CPU_KERNEL
void tsr__cpu_cross_entropy_stats(int rows, int V, int v0, const float *logits, int ld, const int32_t *targets,
                                  float *stats)
{
#pragma omp parallel for schedule(static) if (PAR_ROWS(rows, V))
    for (int r = 0; r < rows; r++) {
        const float *row = logits + (size_t)r * ld;
        int t = targets[r] - v0;
        float mx = row_max(row, V);
        double sum = 0;
#pragma omp simd reduction(+ : sum)
        for (int j = 0; j < V; j++)
            sum += tsr__expf(row[j] - mx);
        stats[3 * (size_t)r] = mx;
        stats[3 * (size_t)r + 1] = (float)sum;
        stats[3 * (size_t)r + 2] = t >= 0 && t < V ? row[t] : 0.0f;
    }
}

TSR_CPU_KERNEL
void tsr__cpu_cross_entropy_finish(int rows, int V, int v0, float *logits, int ld, const int32_t *targets, int parts,
                                   const float *stats, float *losses, float dscale)
{
#pragma omp parallel for schedule(static) if (PAR_ROWS(rows, V))
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
        float scale = (float)(dscale / sum);
#pragma omp simd
        for (int j = 0; j < V; j++)
            row[j] = scale * tsr__expf(row[j] - mx);
        if (t >= 0 && t < V)
            row[t] -= dscale;
    }
}
