/*
 * test_tp_ref: the serial references' backward passes against central finite differences
 * in double precision, for every operation: linear, layernorm, GELU, attention, embedding
 * and cross-entropy. Each check perturbs every input element of a small random problem
 * and compares d(sum(dy ⊙ f))/d(input) with the analytical gradient.
 */
#include "test_tp_common.h"

#define FD_STEP 1e-6
#define FD_TOL 1e-6

/* A scalar loss of the problem's current inputs. */
typedef double (*loss_fn)(void *ctx);

/* Compare grad (n) with central differences of loss over in (n), perturbed one at a time. */
static void fd_check(const char *what, loss_fn loss, void *ctx, double *in, const double *grad, size_t n)
{
    double *num = malloc(n * sizeof *num);
    for (size_t i = 0; i < n; i++) {
        double keep = in[i];
        in[i] = keep + FD_STEP;
        double up = loss(ctx);
        in[i] = keep - FD_STEP;
        double down = loss(ctx);
        in[i] = keep;
        num[i] = (up - down) / (2 * FD_STEP);
    }
    double err = tp_rel_err(grad, num, n);
    ok(err <= FD_TOL, "%s: gradient of %zu elements matches finite differences (relative error %.2g)", what, n, err);
    free(num);
}

static double dot(const double *a, const double *b, size_t n)
{
    double s = 0;
    for (size_t i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/* Linear: m=5 rows, k=4 in, n=3 out. */
struct lin { int m, n, k; double *x, *w, *b, *dy, *y; };
static double lin_loss(void *p)
{
    struct lin *c = p;
    tsr_ref_linear_forward(c->m, c->n, c->k, c->x, c->w, c->b, c->y);
    return dot(c->y, c->dy, (size_t)c->m * c->n);
}
static void check_linear(void)
{
    struct lin c = {5, 3, 4, tp_random(20, -1, 1), tp_random(12, -1, 1), tp_random(3, -1, 1), tp_random(15, -1, 1),
                    malloc(15 * sizeof(double))};
    double dx[20], dw[12] = {0}, db[3] = {0};
    tsr_ref_linear_backward(c.m, c.n, c.k, c.x, c.w, c.dy, dx, dw, db);
    fd_check("linear dX", lin_loss, &c, c.x, dx, 20);
    fd_check("linear dW", lin_loss, &c, c.w, dw, 12);
    fd_check("linear db", lin_loss, &c, c.b, db, 3);
    free(c.x), free(c.w), free(c.b), free(c.dy), free(c.y);
}

/* Layernorm: 4 rows of 6. */
struct ln { double *x, *g, *b, *dy, *y, mean[4], rstd[4]; };
static double ln_loss(void *p)
{
    struct ln *c = p;
    tsr_ref_layernorm_forward(4, 6, c->x, c->g, c->b, 1e-5, c->y, c->mean, c->rstd);
    return dot(c->y, c->dy, 24);
}
static void check_layernorm(void)
{
    struct ln c = {tp_random(24, -2, 2), tp_random(6, 0.5, 1.5), tp_random(6, -1, 1), tp_random(24, -1, 1),
                   malloc(24 * sizeof(double)), {0}, {0}};
    double dx[24], dg[6] = {0}, dbeta[6] = {0};
    ln_loss(&c);
    tsr_ref_layernorm_backward(4, 6, c.x, c.g, c.mean, c.rstd, c.dy, dx, dg, dbeta);
    fd_check("layernorm dX", ln_loss, &c, c.x, dx, 24);
    fd_check("layernorm dgamma", ln_loss, &c, c.g, dg, 6);
    fd_check("layernorm dbeta", ln_loss, &c, c.b, dbeta, 6);
    free(c.x), free(c.g), free(c.b), free(c.dy), free(c.y);
}

struct ge { double *x, *dy, *y; };
static double gelu_loss(void *p)
{
    struct ge *c = p;
    tsr_ref_gelu_forward(16, c->x, c->y);
    return dot(c->y, c->dy, 16);
}
static void check_gelu(void)
{
    struct ge c = {tp_random(16, -3, 3), tp_random(16, -1, 1), malloc(16 * sizeof(double))};
    double dx[16];
    tsr_ref_gelu_backward(16, c.x, c.dy, dx);
    fd_check("gelu dX", gelu_loss, &c, c.x, dx, 16);
    free(c.x), free(c.dy), free(c.y);
}

/* Attention: B=2, T=3, 2 heads of 2: matrices 6 x 4. */
struct at { double *q, *k, *v, *dy, *o, att[2 * 2 * 3 * 3]; };
static double att_loss(void *p)
{
    struct at *c = p;
    tsr_ref_attention_forward(2, 3, 2, 2, c->q, c->k, c->v, c->o, c->att);
    return dot(c->o, c->dy, 24);
}
static void check_attention(void)
{
    struct at c = {tp_random(24, -1, 1), tp_random(24, -1, 1), tp_random(24, -1, 1), tp_random(24, -1, 1),
                   malloc(24 * sizeof(double)), {0}};
    double dq[24], dk[24], dv[24];
    att_loss(&c);
    tsr_ref_attention_backward(2, 3, 2, 2, c.q, c.k, c.v, c.att, c.dy, dq, dk, dv);
    fd_check("attention dQ", att_loss, &c, c.q, dq, 24);
    fd_check("attention dK", att_loss, &c, c.k, dk, 24);
    fd_check("attention dV", att_loss, &c, c.v, dv, 24);
    free(c.q), free(c.k), free(c.v), free(c.dy), free(c.o);
}

/* Embedding: 6 tokens (B=2, T=3), vocabulary 5, width 4. */
struct em { int32_t *tok; double *wte, *wpe, *dy, *x; };
static double emb_loss(void *p)
{
    struct em *c = p;
    tsr_ref_embedding_forward(6, 3, 4, c->tok, c->wte, c->wpe, c->x);
    return dot(c->x, c->dy, 24);
}
static void check_embedding(void)
{
    struct em c = {tp_tokens(6, 5), tp_random(20, -1, 1), tp_random(12, -1, 1), tp_random(24, -1, 1),
                   malloc(24 * sizeof(double))};
    double dwte[20] = {0}, dwpe[12] = {0};
    tsr_ref_embedding_backward(6, 3, 4, c.tok, c.dy, dwte, dwpe);
    fd_check("embedding dwte", emb_loss, &c, c.wte, dwte, 20);
    fd_check("embedding dwpe", emb_loss, &c, c.wpe, dwpe, 12);
    free(c.tok), free(c.wte), free(c.wpe), free(c.dy), free(c.x);
}

/* Cross-entropy: 5 rows of vocabulary 7, logits large enough to need the stable form. */
struct ce { int32_t *t; double *l; };
static double ce_loss(void *p)
{
    struct ce *c = p;
    return 0.75 * tsr_ref_cross_entropy_forward(5, 7, c->l, c->t);
}
static void check_cross_entropy(void)
{
    struct ce c = {tp_tokens(5, 7), tp_random(35, -4, 4)};
    double dl[35];
    tsr_ref_cross_entropy_backward(5, 7, c.l, c.t, 0.75, dl);
    fd_check("cross-entropy dlogits", ce_loss, &c, c.l, dl, 35);
    double big[3] = {1000, 1001, 999};
    int32_t t0 = 1;
    double want = log(exp(-1.0) + 1.0 + exp(-2.0)); /* lse - logit[1], shifted by 1001 */
    is_rel(tsr_ref_cross_entropy_forward(1, 3, big, &t0), want, 1e-12,
           "cross-entropy of logits near 1000 is finite and exact");
    free(c.t), free(c.l);
}

int main(int argc, char **argv)
{
    tap_init(&argc, &argv, "1");
    tp_test_start();
    check_linear();
    check_layernorm();
    check_gelu();
    check_attention();
    check_embedding();
    check_cross_entropy();
    tsr_device_destroy(&tp_dev);
    return tap_done();
}
