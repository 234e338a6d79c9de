/*
 * ref.c: serial references of the tp operations, in double precision, row-major. They are
 * the plain definitions the distributed operations are tested against, and their backward
 * passes are checked by finite differences (tests/test_tp_ref.c).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "tp_impl.h"

void tsr_ref_matmul(int m, int n, int k, const double *a, const double *b, double *c)
{
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int l = 0; l < k; l++)
                s += a[(size_t)i * k + l] * b[(size_t)l * n + j];
            c[(size_t)i * n + j] = s;
        }
}

void tsr_ref_linear_forward(int m, int n, int k, const double *x, const double *w, const double *b, double *y)
{
    tsr_ref_matmul(m, n, k, x, w, y);
    if (b)
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
                y[(size_t)i * n + j] += b[j];
}

void tsr_ref_linear_backward(int m, int n, int k, const double *x, const double *w, const double *dy, double *dx,
                             double *dw, double *db)
{
    for (int i = 0; i < m; i++)
        for (int l = 0; l < k; l++) {
            double s = 0;
            for (int j = 0; j < n; j++)
                s += dy[(size_t)i * n + j] * w[(size_t)l * n + j];
            if (dx)
                dx[(size_t)i * k + l] = s;
        }
    for (int l = 0; l < k; l++)
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int i = 0; i < m; i++)
                s += x[(size_t)i * k + l] * dy[(size_t)i * n + j];
            dw[(size_t)l * n + j] += s;
        }
    if (db)
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
                db[j] += dy[(size_t)i * n + j];
}

void tsr_ref_layernorm_forward(int m, int n, const double *x, const double *gamma, const double *beta, double eps,
                               double *y, double *mean, double *rstd)
{
    for (int i = 0; i < m; i++) {
        const double *r = x + (size_t)i * n;
        double mu = 0, var = 0;
        for (int j = 0; j < n; j++)
            mu += r[j];
        mu /= n;
        for (int j = 0; j < n; j++)
            var += (r[j] - mu) * (r[j] - mu);
        double rs = 1.0 / sqrt(var / n + eps);
        for (int j = 0; j < n; j++)
            y[(size_t)i * n + j] = (r[j] - mu) * rs * gamma[j] + beta[j];
        mean[i] = mu;
        rstd[i] = rs;
    }
}

void tsr_ref_layernorm_backward(int m, int n, const double *x, const double *gamma, const double *mean,
                                const double *rstd, const double *dy, double *dx, double *dgamma, double *dbeta)
{
    for (int i = 0; i < m; i++) {
        double mg = 0, mgx = 0;
        for (int j = 0; j < n; j++) {
            size_t e = (size_t)i * n + j;
            double xhat = (x[e] - mean[i]) * rstd[i], g = dy[e] * gamma[j];
            mg += g;
            mgx += g * xhat;
            dgamma[j] += dy[e] * xhat;
            dbeta[j] += dy[e];
        }
        mg /= n;
        mgx /= n;
        for (int j = 0; j < n; j++) {
            size_t e = (size_t)i * n + j;
            double xhat = (x[e] - mean[i]) * rstd[i];
            dx[e] = rstd[i] * (dy[e] * gamma[j] - mg - xhat * mgx);
        }
    }
}

#define GELU_SCALE 0.7978845608028654 /* sqrt(2/pi) */
#define GELU_CUBE 0.044715

void tsr_ref_gelu_forward(size_t n, const double *x, double *y)
{
    for (size_t i = 0; i < n; i++)
        y[i] = 0.5 * x[i] * (1.0 + tanh(GELU_SCALE * (x[i] + GELU_CUBE * x[i] * x[i] * x[i])));
}

void tsr_ref_gelu_backward(size_t n, const double *x, const double *dy, double *dx)
{
    for (size_t i = 0; i < n; i++) {
        double v = x[i], t = tanh(GELU_SCALE * (v + GELU_CUBE * v * v * v));
        double dt = GELU_SCALE * (1.0 + 3.0 * GELU_CUBE * v * v) * (1.0 - t * t);
        dx[i] = dy[i] * (0.5 * (1.0 + t) + 0.5 * v * dt);
    }
}

/* Element (token t of sequence b, head h, dimension e) of a (B·T) × (heads·d) matrix. */
#define AT(p, b, t, h, e) (p)[((size_t)(b) * seq_len + (t)) * ((size_t)heads * head_dim) + (size_t)(h) * head_dim + (e)]

void tsr_ref_attention_forward(int batch, int seq_len, int heads, int head_dim, const double *q, const double *k,
                               const double *v, double *o, double *att)
{
    double scale = 1.0 / sqrt((double)head_dim);
    for (int b = 0; b < batch; b++)
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < seq_len; i++) {
                double *p = att + (((size_t)b * heads + h) * seq_len + i) * seq_len, mx = -INFINITY, sum = 0;
                for (int j = 0; j < seq_len; j++) {
                    double s = 0;
                    for (int e = 0; e < head_dim && j <= i; e++)
                        s += AT(q, b, i, h, e) * AT(k, b, j, h, e);
                    p[j] = j <= i ? s * scale : 0;
                    if (j <= i && p[j] > mx)
                        mx = p[j];
                }
                for (int j = 0; j <= i; j++) {
                    p[j] = exp(p[j] - mx);
                    sum += p[j];
                }
                for (int j = 0; j <= i; j++)
                    p[j] /= sum;
                for (int e = 0; e < head_dim; e++) {
                    double s = 0;
                    for (int j = 0; j <= i; j++)
                        s += p[j] * AT(v, b, j, h, e);
                    AT(o, b, i, h, e) = s;
                }
            }
}

void tsr_ref_attention_backward(int batch, int seq_len, int heads, int head_dim, const double *q, const double *k,
                                const double *v, const double *att, const double *d_o, double *dq, double *dk,
                                double *dv)
{
    size_t total = (size_t)batch * seq_len * heads * head_dim;
    double scale = 1.0 / sqrt((double)head_dim);
    double *datt = malloc((size_t)(seq_len > 0 ? seq_len : 1) * sizeof *datt);
    memset(dq, 0, total * sizeof *dq);
    memset(dk, 0, total * sizeof *dk);
    memset(dv, 0, total * sizeof *dv);
    for (int b = 0; b < batch && datt; b++)
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < seq_len; i++) {
                const double *p = att + (((size_t)b * heads + h) * seq_len + i) * seq_len;
                double dot = 0;
                for (int j = 0; j <= i; j++) {
                    double s = 0;
                    for (int e = 0; e < head_dim; e++) {
                        s += AT(d_o, b, i, h, e) * AT(v, b, j, h, e);
                        AT(dv, b, j, h, e) += p[j] * AT(d_o, b, i, h, e);
                    }
                    datt[j] = s;
                    dot += p[j] * s;
                }
                for (int j = 0; j <= i; j++) {
                    double ds = p[j] * (datt[j] - dot) * scale;
                    for (int e = 0; e < head_dim; e++) {
                        AT(dq, b, i, h, e) += ds * AT(k, b, j, h, e);
                        AT(dk, b, j, h, e) += ds * AT(q, b, i, h, e);
                    }
                }
            }
    free(datt);
}

#undef AT

void tsr_ref_embedding_forward(int ntok, int seq_len, int h, const int32_t *tokens, const double *wte,
                               const double *wpe, double *x)
{
    for (int t = 0; t < ntok; t++)
        for (int j = 0; j < h; j++)
            x[(size_t)t * h + j] = wte[(size_t)tokens[t] * h + j] + wpe[(size_t)(t % seq_len) * h + j];
}

void tsr_ref_embedding_backward(int ntok, int seq_len, int h, const int32_t *tokens, const double *dx, double *dwte,
                                double *dwpe)
{
    for (int t = 0; t < ntok; t++)
        for (int j = 0; j < h; j++) {
            if (dwte)
                dwte[(size_t)tokens[t] * h + j] += dx[(size_t)t * h + j];
            if (dwpe)
                dwpe[(size_t)(t % seq_len) * h + j] += dx[(size_t)t * h + j];
        }
}

/* log(sum_j exp(row[j])), stably. */
static double log_sum_exp(int v, const double *row)
{
    double mx = -INFINITY, s = 0;
    for (int j = 0; j < v; j++)
        mx = row[j] > mx ? row[j] : mx;
    for (int j = 0; j < v; j++)
        s += exp(row[j] - mx);
    return mx + log(s);
}

double tsr_ref_cross_entropy_forward(int m, int v, const double *logits, const int32_t *targets)
{
    double loss = 0;
    for (int i = 0; i < m; i++) {
        const double *row = logits + (size_t)i * v;
        loss += log_sum_exp(v, row) - row[targets[i]];
    }
    return m > 0 ? loss / m : 0;
}

void tsr_ref_cross_entropy_backward(int m, int v, const double *logits, const int32_t *targets, double dloss,
                                    double *dlogits)
{
    for (int i = 0; i < m; i++) {
        const double *row = logits + (size_t)i * v;
        double lse = log_sum_exp(v, row);
        for (int j = 0; j < v; j++)
            dlogits[(size_t)i * v + j] = dloss / m * (exp(row[j] - lse) - (j == targets[i]));
    }
}
