/*
 * weights-craft: GPT-2 weights files of random values, written here independently of the
 * library's adapter (lib/model/weights.c), for tests/test_ckpt_import.sh. Not a test itself.
 *
 *   weights-craft write KIND FILE [OPTIONS]   a file of KIND in the exporter's canonical form:
 *       llmc        llm.c model file, version 3 (fp32), wte's padding rows zero
 *       llmc-bf16   version 5 (bf16)
 *       hf          safetensors, F32, keys in the canonical order, no prefix
 *       hf-bf16, hf-f16   the same values in BF16 / F16
 *     options: --seed S, --model L,C,NH,V,VP,T (default 2,64,4,256,384,64), and for hf:
 *     --prefix (names under "transformer."), --lm-head (a tied lm_head.weight), --mask (the
 *     attn.bias and attn.masked_bias buffers of old files), --shuffle (keys in another order),
 *     --as-f32 (hf-bf16 and hf-f16's values in F32)
 *   weights-craft bad CASE FILE [--seed S]    a malformed file (the cases: see bad_cases)
 *   weights-craft loss KIND CKPT [--seed S] [--model ...] [--layout LAYOUT]
 *       under mpiexec: the mean loss of the model in checkpoint CKPT (tsr_gpt_eval on LAYOUT)
 *       on a fixed batch of 2 sequences, against a double-precision forward of the weights
 *       KIND and the seed make, computed here from llm.c's tensors (weights as (out, in),
 *       fused [q; k; v]) with the tsr_ref_* pieces of tessera/tp.h; exit 0 within 1e-5
 *       relative, 1 otherwise.
 *
 * The weights live here in llm.c's orientation; the Hugging Face files are their transposes
 * (Conv1D stores (in, out)). Values are large enough (weights of std 1/sqrt(fan-in), an
 * embedding of std 0.5, gains 1 +- 0.2) that a tensor taken in the wrong orientation or
 * place changes the loss by far more than the tolerance.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <tessera.h>

typedef struct shape {
    int L, C, NH, V, VP, T;
} shape_t;

/* llm.c's sixteen tensors: name, rows and cols per layer (layered) or whole. */
enum { WTE, WPE, LN1W, LN1B, QKVW, QKVB, ATTPROJW, ATTPROJB, LN2W, LN2B, FCW, FCB, FCPROJW, FCPROJB, LNFW, LNFB, NT };

typedef struct model {
    shape_t s;
    int64_t rows[NT], cols[NT], layered[NT];
    float *t[NT]; /* tensor k: (layered ? L : 1) blocks of rows x cols */
} model_t;

static uint64_t rng_state;

static uint64_t next_u64(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double uniform(void) { return ((double)(next_u64() >> 11) + 0.5) / 9007199254740992.0; }

static double normal(void) { return sqrt(-2 * log(uniform())) * cos(6.283185307179586 * uniform()); }

/* Truncation: any bf16 value will do. Not inlined: GCC 12.2 at -O1 and above drops the mask
 * where this is inlined into `quant == 'b' ? bf16_round(f) : f` (its GIMPLE is right, the
 * machine code stores f unmasked; clang 14 is right), which made the bf16 reference fp32. */
__attribute__((noinline)) static float bf16_round(float x)
{
    uint32_t u;
    memcpy(&u, &x, 4);
    u &= 0xffff0000u;
    memcpy(&x, &u, 4);
    return x;
}

static float f16_round(float x)
{
    if (x == 0)
        return x;
    int e;
    frexpf(fabsf(x), &e);
    int E = e - 1 < -14 ? -14 : e - 1;
    return ldexpf(rintf(ldexpf(x, 10 - E)), E - 10);
}

static uint16_t f16_bits(float x) /* x is an f16 value */
{
    uint16_t sign = signbit(x) ? 0x8000 : 0;
    x = fabsf(x);
    if (x == 0)
        return sign;
    int e;
    frexpf(x, &e);
    if (e - 1 < -14)
        return sign | (uint16_t)lrintf(ldexpf(x, 24));
    return sign | (uint16_t)((e - 1 + 15) << 10) | (uint16_t)(lrintf(ldexpf(x, 10 - (e - 1))) - 1024);
}

/* The random model of a seed; `quant` 0 (fp32), 'b' (bf16 values) or 'h' (f16 values). */
static int make_model(model_t *m, shape_t s, uint64_t seed, int quant)
{
    int64_t C = s.C;
    const int64_t r[NT] = {s.VP, s.T, 1, 1, 3 * C, 1, C, 1, 1, 1, 4 * C, 1, C, 1, 1, 1};
    const int64_t c[NT] = {C, C, C, C, C, 3 * C, C, C, C, C, C, 4 * C, 4 * C, C, C, C};
    memset(m, 0, sizeof *m);
    m->s = s;
    rng_state = seed;
    for (int k = 0; k < NT; k++) {
        m->rows[k] = r[k], m->cols[k] = c[k], m->layered[k] = k >= LN1W && k <= FCPROJB;
        int64_t blocks = m->layered[k] ? s.L : 1, n = blocks * r[k] * c[k];
        if (!(m->t[k] = malloc((size_t)n * sizeof(float))))
            return -1;
        for (int64_t i = 0; i < n; i++) {
            double v;
            int64_t row = (i / c[k]) % r[k];
            if (k == WTE)
                v = row < s.V ? 0.5 * normal() : 0.0; /* padding rows zero */
            else if (k == WPE)
                v = 0.3 * normal();
            else if (k == LN1W || k == LN2W || k == LNFW)
                v = 1 + 0.2 * normal();
            else if (r[k] == 1)
                v = 0.1 * normal(); /* biases and layernorm shifts */
            else
                v = normal() / sqrt((double)c[k]); /* (out, in): fan-in is the columns */
            float f = (float)v;
            m->t[k][i] = quant == 'b' ? bf16_round(f) : quant == 'h' ? f16_round(f) : f;
        }
    }
    return 0;
}

static void free_model(model_t *m)
{
    for (int k = 0; k < NT; k++)
        free(m->t[k]);
}

static int parse_shape(const char *text, shape_t *s)
{
    return sscanf(text, "%d,%d,%d,%d,%d,%d", &s->L, &s->C, &s->NH, &s->V, &s->VP, &s->T) == 6 ? 0 : -1;
}

/* ---------- llm.c ---------- */

static int write_llmc(const model_t *m, const char *path, int bf16, const int32_t *header_edit)
{
    FILE *f = fopen(path, "wb");
    int32_t h[256] = {20240326, bf16 ? 5 : 3, m->s.T, m->s.V, m->s.L, m->s.NH, m->s.C, m->s.VP};
    if (!f)
        return -1;
    for (int i = 0; header_edit && header_edit[i] >= 0; i += 2)
        h[header_edit[i]] = header_edit[i + 1];
    fwrite(h, sizeof h, 1, f);
    for (int k = 0; k < NT; k++) {
        int64_t n = (m->layered[k] ? m->s.L : 1) * m->rows[k] * m->cols[k];
        for (int64_t i = 0; i < n; i++) {
            if (bf16) {
                uint32_t u;
                memcpy(&u, &m->t[k][i], 4);
                uint16_t b = (uint16_t)(u >> 16);
                fwrite(&b, 2, 1, f);
            } else {
                fwrite(&m->t[k][i], 4, 1, f);
            }
        }
    }
    return fclose(f) == 0 ? 0 : -1;
}

/* ---------- safetensors ---------- */

typedef struct hf_tensor {
    char name[96], dtype[16];
    int ndim;
    int64_t shape[2];
    float *data; /* rows x cols values (malloc'ed) */
    int64_t begin, end;
} hf_tensor_t;

static const char *const hf_block_name[12] = {
    "ln_1.weight", "ln_1.bias", "attn.c_attn.weight", "attn.c_attn.bias", "attn.c_proj.weight", "attn.c_proj.bias",
    "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias"};
static const int hf_block_src[12] = {LN1W, LN1B, QKVW, QKVB, ATTPROJW, ATTPROJB, LN2W, LN2B, FCW, FCB, FCPROJW, FCPROJB};

/* Tensor k of layer l as Hugging Face stores it: matrices transposed, wte without padding. */
static void hf_add(hf_tensor_t *t, const model_t *m, const char *name, int k, int l)
{
    int64_t r = k == WTE ? m->s.V : m->rows[k], c = m->cols[k];
    const float *src = m->t[k] + (m->layered[k] ? (int64_t)l * m->rows[k] * c : 0);
    int transpose = m->rows[k] > 1 && k != WTE && k != WPE;
    snprintf(t->name, sizeof t->name, "%s", name);
    snprintf(t->dtype, sizeof t->dtype, "F32");
    t->ndim = r == 1 ? 1 : 2;
    t->shape[0] = r == 1 ? c : transpose ? c : r;
    t->shape[1] = transpose ? r : c;
    t->data = malloc((size_t)(r * c) * sizeof(float));
    for (int64_t i = 0; i < r; i++)
        for (int64_t j = 0; j < c; j++)
            t->data[transpose ? j * r + i : i * c + j] = src[i * c + j];
}

static int64_t numel(const hf_tensor_t *t) { return t->ndim == 1 ? t->shape[0] : t->shape[0] * t->shape[1]; }

static int elem_size(const char *dtype) { return strcmp(dtype, "F32") == 0 || strcmp(dtype, "I32") == 0 ? 4 : 2; }

/* The tensors in the canonical order, with the extras asked for. */
static int hf_tensors(const model_t *m, int prefix, int lm_head, int mask, hf_tensor_t **out)
{
    int n = 0, cap = 4 + 14 * m->s.L + 1;
    hf_tensor_t *t = calloc((size_t)cap, sizeof *t);
    char name[96];
    const char *p = prefix ? "transformer." : "";
    if (!t)
        return -1;
    snprintf(name, sizeof name, "%swte.weight", p);
    hf_add(&t[n++], m, name, WTE, 0);
    snprintf(name, sizeof name, "%swpe.weight", p);
    hf_add(&t[n++], m, name, WPE, 0);
    for (int l = 0; l < m->s.L; l++) {
        for (int b = 0; b < 12; b++) {
            snprintf(name, sizeof name, "%sh.%d.%s", p, l, hf_block_name[b]);
            hf_add(&t[n++], m, name, hf_block_src[b], l);
        }
        if (mask)
            for (int b = 0; b < 2; b++) {
                snprintf(name, sizeof name, "%sh.%d.%s", p, l, b ? "attn.masked_bias" : "attn.bias");
                hf_add(&t[n++], m, name, LNFB, 0); /* any contents: they are ignored */
            }
    }
    snprintf(name, sizeof name, "%sln_f.weight", p);
    hf_add(&t[n++], m, name, LNFW, 0);
    snprintf(name, sizeof name, "%sln_f.bias", p);
    hf_add(&t[n++], m, name, LNFB, 0);
    if (lm_head)
        hf_add(&t[n++], m, "lm_head.weight", WTE, 0);
    *out = t;
    return n;
}

/* Offsets one after the other (each tensor's own dtype), then the file: the header, padded with
 * blanks to a multiple of 8 bytes, and the data. `raw_header` replaces the JSON when given;
 * `hlen_edit` (> 0) replaces the stored header length. */
static int write_hf(const char *path, hf_tensor_t *t, int n, int keep_offsets, const char *raw_header,
                    uint64_t hlen_edit)
{
    size_t cap = 256 + (size_t)n * 256, len = 0;
    char *h = malloc(cap);
    int64_t at = 0; /* the data's length: every tensor's bytes, whatever the offsets say */
    FILE *f = fopen(path, "wb");
    if (!h || !f)
        return -1;
    len += (size_t)snprintf(h + len, cap - len, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int i = 0; i < n; i++) {
        if (!keep_offsets) {
            t[i].begin = at;
            t[i].end = at + numel(&t[i]) * elem_size(t[i].dtype);
        }
        at += numel(&t[i]) * elem_size(t[i].dtype);
        len += (size_t)snprintf(h + len, cap - len, ",\"%s\":{\"dtype\":\"%s\",\"shape\":[", t[i].name, t[i].dtype);
        for (int d = 0; d < t[i].ndim; d++)
            len += (size_t)snprintf(h + len, cap - len, "%s%lld", d ? "," : "", (long long)t[i].shape[d]);
        len += (size_t)snprintf(h + len, cap - len, "],\"data_offsets\":[%lld,%lld]}", (long long)t[i].begin,
                                (long long)t[i].end);
    }
    len += (size_t)snprintf(h + len, cap - len, "}");
    if (raw_header)
        len = (size_t)snprintf(h, cap, "%s", raw_header);
    while ((8 + len) % 8)
        h[len++] = ' ';
    uint64_t hl = hlen_edit ? hlen_edit : len;
    fwrite(&hl, 8, 1, f);
    fwrite(h, 1, len, f);
    unsigned char *data = calloc((size_t)(at > 0 ? at : 1), 1);
    for (int i = 0; i < n && data; i++) {
        int64_t k = numel(&t[i]);
        for (int64_t e = 0; e < k && t[i].begin + (e + 1) * elem_size(t[i].dtype) <= at; e++) {
            float x = t[i].data ? t[i].data[e] : 0;
            uint32_t u;
            memcpy(&u, &x, 4);
            if (strcmp(t[i].dtype, "F32") == 0) {
                memcpy(data + t[i].begin + 4 * e, &u, 4);
            } else {
                uint16_t b = strcmp(t[i].dtype, "F16") == 0 ? f16_bits(x) : (uint16_t)(u >> 16);
                memcpy(data + t[i].begin + 2 * e, &b, 2);
            }
        }
    }
    fwrite(data, 1, (size_t)at, f);
    free(data);
    free(h);
    return fclose(f) == 0 ? 0 : -1;
}

static void free_tensors(hf_tensor_t *t, int n)
{
    for (int i = 0; i < n; i++)
        free(t[i].data);
    free(t);
}

/* ---------- the reference loss ---------- */

/* y (m x out) = x (m x in) W^T + b, W (out x in) as llm.c stores it. */
static void linear_t(int m, int out, int in, const double *x, const float *w, const float *b, double *y)
{
    for (int r = 0; r < m; r++)
        for (int o = 0; o < out; o++) {
            double s = b[o];
            for (int i = 0; i < in; i++)
                s += x[(size_t)r * in + i] * w[(size_t)o * in + i];
            y[(size_t)r * out + o] = s;
        }
}

static double *dvec(const float *f, size_t n)
{
    double *d = malloc(n * sizeof *d);
    for (size_t i = 0; i < n; i++)
        d[i] = f[i];
    return d;
}

static double reference_loss(const model_t *m, int B, const int32_t *in, const int32_t *tg)
{
    int T = m->s.T, C = m->s.C, NH = m->s.NH, V = m->s.V, M = B * T;
    double *x = calloc((size_t)M * C, sizeof *x), *a = malloc((size_t)M * C * sizeof *a);
    double *qkv = malloc((size_t)M * 3 * C * sizeof *qkv), *q = malloc((size_t)M * C * sizeof *q);
    double *k = malloc((size_t)M * C * sizeof *k), *v = malloc((size_t)M * C * sizeof *v);
    double *o = malloc((size_t)M * C * sizeof *o), *y = malloc((size_t)M * 4 * C * sizeof *y);
    double *g = malloc((size_t)M * 4 * C * sizeof *g), *att = malloc((size_t)B * NH * T * T * sizeof *att);
    double *mean = malloc((size_t)M * sizeof *mean), *rstd = malloc((size_t)M * sizeof *rstd);
    double *logits = malloc((size_t)M * V * sizeof *logits);
    for (int r = 0; r < M; r++)
        for (int c = 0; c < C; c++)
            x[(size_t)r * C + c] = (double)m->t[WTE][(size_t)in[r] * C + c] + (double)m->t[WPE][(size_t)(r % T) * C + c];
    for (int l = 0; l < m->s.L; l++) {
#define LAYER(K) (m->t[K] + (size_t)l * m->rows[K] * m->cols[K])
        double *gw = dvec(LAYER(LN1W), (size_t)C), *gb = dvec(LAYER(LN1B), (size_t)C);
        tsr_ref_layernorm_forward(M, C, x, gw, gb, 1e-5, a, mean, rstd);
        free(gw), free(gb);
        linear_t(M, 3 * C, C, a, LAYER(QKVW), LAYER(QKVB), qkv);
        for (int r = 0; r < M; r++)
            for (int c = 0; c < C; c++) {
                q[(size_t)r * C + c] = qkv[(size_t)r * 3 * C + c];
                k[(size_t)r * C + c] = qkv[(size_t)r * 3 * C + C + c];
                v[(size_t)r * C + c] = qkv[(size_t)r * 3 * C + 2 * C + c];
            }
        tsr_ref_attention_forward(B, T, NH, C / NH, q, k, v, o, att);
        linear_t(M, C, C, o, LAYER(ATTPROJW), LAYER(ATTPROJB), a);
        for (size_t i = 0; i < (size_t)M * C; i++)
            x[i] += a[i];
        gw = dvec(LAYER(LN2W), (size_t)C), gb = dvec(LAYER(LN2B), (size_t)C);
        tsr_ref_layernorm_forward(M, C, x, gw, gb, 1e-5, a, mean, rstd);
        free(gw), free(gb);
        linear_t(M, 4 * C, C, a, LAYER(FCW), LAYER(FCB), y);
        tsr_ref_gelu_forward((size_t)M * 4 * C, y, g);
        linear_t(M, C, 4 * C, g, LAYER(FCPROJW), LAYER(FCPROJB), a);
        for (size_t i = 0; i < (size_t)M * C; i++)
            x[i] += a[i];
#undef LAYER
    }
    double *gw = dvec(m->t[LNFW], (size_t)C), *gb = dvec(m->t[LNFB], (size_t)C);
    tsr_ref_layernorm_forward(M, C, x, gw, gb, 1e-5, a, mean, rstd);
    free(gw), free(gb);
    float *zero = calloc((size_t)V, sizeof *zero);
    linear_t(M, V, C, a, m->t[WTE], zero, logits); /* the first V rows of wte: the padding is no token */
    double loss = tsr_ref_cross_entropy_forward(M, V, logits, tg);
    free(zero), free(x), free(a), free(qkv), free(q), free(k), free(v), free(o), free(y), free(g), free(att);
    free(mean), free(rstd), free(logits);
    return loss;
}

static int fail_line(const char *what)
{
    fprintf(stderr, "weights-craft loss: %s: %s\n", what, tsr_last_error());
    return 1;
}

static int cmd_loss(const model_t *m, const char *ckpt, const char *layout_text)
{
    enum { B = 2 };
    int rank, status = 1;
    tsr_layout_t layout = TSR_LAYOUT_INIT;
    tsr_device_t dev = NULL;
    tsr_grid_t grid = NULL;
    tsr_gpt_t gpt = NULL;
    tsr_comm_t self = NULL;
    tsr_ckpt_reader_t r = NULL;
    tsr_gpt_config_t cfg;
    tsr_gpt_options_t go = TSR_GPT_OPTIONS_INIT;
    tsr_zero_config_t z = TSR_ZERO_CONFIG_INIT;
    int32_t in[B * 1024], tg[B * 1024];
    double loss = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (m->s.T > 1024)
        return fail_line("the model's sequences are longer than 1024");
    for (int i = 0; i < B * m->s.T; i++) /* the fixed batch: a sequence and its shift by one */
        in[i] = (int32_t)(next_u64() % (uint64_t)m->s.V);
    for (int i = 0; i < B * m->s.T; i++)
        tg[i] = i % m->s.T == m->s.T - 1 ? (int32_t)(next_u64() % (uint64_t)m->s.V) : in[i + 1];
    if (tsr_layout_parse(layout_text, &layout) != TSR_OK)
        return fail_line("--layout");
    if (tsr_comm_create(MPI_COMM_SELF, &self) != TSR_OK || tsr_ckpt_reader_open(self, ckpt, &r) != TSR_OK ||
        tsr_gpt_config_load(r, &cfg) != TSR_OK)
        return fail_line(ckpt);
    tsr_ckpt_reader_close(&r);
    tsr_comm_destroy(&self);
    go.batch = B;
    if (tsr_device_create(TSR_DEVICE_CPU, 0, &dev) != TSR_OK || tsr_grid_create(MPI_COMM_WORLD, &layout, &grid) != TSR_OK ||
        tsr_gpt_create(grid, dev, &cfg, &go, &z, &gpt) != TSR_OK ||
        tsr_ckpt_reader_open(tsr_grid_comm(grid, TSR_AXIS_WORLD), ckpt, &r) != TSR_OK ||
        tsr_ckpt_load_zero(r, grid, tsr_gpt_optimizer(gpt), &z) != TSR_OK) {
        status = fail_line(ckpt);
        goto done;
    }
    int first, count;
    tsr_gpt_batch_slice(gpt, &first, &count);
    if (tsr_gpt_eval(gpt, in + first * m->s.T, tg + first * m->s.T, &loss) != TSR_OK) {
        status = fail_line("tsr_gpt_eval");
        goto done;
    }
    double ref = reference_loss(m, B, in, tg), rel = fabs(loss - ref) / fabs(ref);
    if (rank == 0)
        printf("loss %.9g reference %.9g relative difference %.3g\n", loss, ref, rel);
    status = rel <= 1e-5 ? 0 : 1;
done:
    tsr_ckpt_reader_close(&r);
    tsr_gpt_destroy(&gpt);
    tsr_grid_destroy(&grid);
    tsr_device_destroy(&dev);
    return status;
}

/* ---------- malformed files ---------- */

static const char *const bad_cases[] = {
    "llmc-short", "llmc-magic", "llmc-version", "llmc-zero", "llmc-heads", "llmc-vp", "llmc-size", "llmc-huge",
    "llmc-layers", "llmc-nan", "hf-short", "hf-hlen", "hf-limit", "hf-json", "hf-trailing", "hf-range", "hf-overlap", "hf-gap",
    "hf-missing", "hf-extra", "hf-shape", "hf-dtype", "hf-unknown-dtype", "hf-inf", "hf-lm-head", "hf-twice",
    "hf-name", "hf-no-heads", NULL};

static hf_tensor_t *find_tensor(hf_tensor_t *t, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(t[i].name, name) == 0)
            return &t[i];
    return NULL;
}

/* Append a copy of tensor i named `name`. */
static int append_copy(hf_tensor_t **t, int *n, int i, const char *name)
{
    hf_tensor_t *grown = realloc(*t, (size_t)(*n + 1) * sizeof **t);
    if (!grown)
        return -1;
    *t = grown;
    grown[*n] = grown[i];
    grown[*n].data = malloc((size_t)numel(&grown[i]) * sizeof(float));
    if (!grown[*n].data)
        return -1;
    memcpy(grown[*n].data, grown[i].data, (size_t)numel(&grown[i]) * sizeof(float));
    snprintf(grown[*n].name, sizeof grown[*n].name, "%s", name);
    (*n)++;
    return 0;
}

static int write_bad(const char *c, const char *path, const model_t *m)
{
    if (strncmp(c, "llmc-", 5) == 0) {
        int32_t e[8] = {-1};
        if (strcmp(c, "llmc-short") == 0) {
            FILE *f = fopen(path, "wb");
            int32_t h[25] = {20240326, 3};
            fwrite(h, sizeof h, 1, f);
            return fclose(f);
        }
        if (strcmp(c, "llmc-nan") == 0) {
            m->t[FCW][77] = NAN; /* one weight of layer 0's fcw */
            return write_llmc(m, path, 0, NULL);
        }
        const struct { const char *name; int32_t e[6]; } edits[] = {
            {"llmc-magic", {0, 20240520, -1}}, {"llmc-version", {1, 4, -1}}, {"llmc-zero", {4, 0, -1}},
            {"llmc-heads", {5, 5, -1}},        {"llmc-vp", {7, 128, -1}},    {"llmc-size", {4, 3, -1}},
            {"llmc-huge", {6, 1 << 30, -1}},   {"llmc-layers", {4, 5000, -1}}};
        for (size_t i = 0; i < sizeof edits / sizeof *edits; i++)
            if (strcmp(c, edits[i].name) == 0)
                memcpy(e, edits[i].e, sizeof edits[i].e);
        return write_llmc(m, path, 0, e);
    }
    hf_tensor_t *t = NULL;
    int n = hf_tensors(m, 0, strcmp(c, "hf-lm-head") == 0, 0, &t), rc = 0;
    char name[96];
    if (n < 0)
        return -1;
    if (strcmp(c, "hf-short") == 0) {
        FILE *f = fopen(path, "wb");
        fwrite("\x10\0\0", 1, 3, f);
        rc = fclose(f);
    } else if (strcmp(c, "hf-hlen") == 0) {
        rc = write_hf(path, t, n, 0, NULL, 1ull << 40);
    } else if (strcmp(c, "hf-limit") == 0) {
        /* a header length over safetensors' 100 MB, in a (sparse) file that long */
        FILE *f = fopen(path, "wb");
        uint64_t hl = 150000000;
        fwrite(&hl, 8, 1, f);
        fwrite("{", 1, 1, f);
        rc = fclose(f) || truncate(path, 200000000);
    } else if (strcmp(c, "hf-json") == 0) {
        rc = write_hf(path, t, n, 0, "{\"wte.weight\":{\"dtype\":\"F32\",\"shape\":[256,64],\"data_offsets\":[0,65536]", 0);
    } else if (strcmp(c, "hf-trailing") == 0) {
        rc = write_hf(path, t, n, 0, "{} {}", 0);
    } else if (strcmp(c, "hf-range") == 0 || strcmp(c, "hf-overlap") == 0 || strcmp(c, "hf-gap") == 0) {
        write_hf(path, t, n, 0, NULL, 0); /* the offsets, then one moved */
        hf_tensor_t *x = find_tensor(t, n, "h.0.ln_2.bias");
        int64_t d = strcmp(c, "hf-range") == 0 ? 1 << 30 : strcmp(c, "hf-overlap") == 0 ? -8 : 8;
        x->begin += d, x->end += d;
        rc = write_hf(path, t, n, 1, NULL, 0);
    } else if (strcmp(c, "hf-missing") == 0) {
        free(t[n - 3].data); /* h.1.mlp.c_proj.bias, the last tensor of the last block */
        memmove(&t[n - 3], &t[n - 2], 2 * sizeof *t);
        t[n - 1].data = NULL;
        rc = write_hf(path, t, n - 1, 0, NULL, 0);
    } else if (strcmp(c, "hf-extra") == 0) {
        rc = append_copy(&t, &n, n - 1, "h.0.attn.c_attn.scale");
        rc = rc ? rc : write_hf(path, t, n, 0, NULL, 0);
    } else if (strcmp(c, "hf-shape") == 0) {
        hf_tensor_t *x = find_tensor(t, n, "h.1.mlp.c_fc.weight");
        int64_t s0 = x->shape[0];
        x->shape[0] = x->shape[1], x->shape[1] = s0; /* llm.c's orientation, not Conv1D's */
        rc = write_hf(path, t, n, 0, NULL, 0);
    } else if (strcmp(c, "hf-dtype") == 0 || strcmp(c, "hf-unknown-dtype") == 0) {
        snprintf(find_tensor(t, n, "h.0.attn.c_proj.bias")->dtype, 16, "%s", c[3] == 'd' ? "I32" : "F33");
        rc = write_hf(path, t, n, 0, NULL, 0);
    } else if (strcmp(c, "hf-inf") == 0) {
        find_tensor(t, n, "h.1.ln_1.weight")->data[5] = INFINITY;
        rc = write_hf(path, t, n, 0, NULL, 0);
    } else if (strcmp(c, "hf-lm-head") == 0) {
        find_tensor(t, n, "lm_head.weight")->data[100] += 1.0f;
        rc = write_hf(path, t, n, 0, NULL, 0);
    } else if (strcmp(c, "hf-twice") == 0) {
        snprintf(name, sizeof name, "transformer.%.80s", t[n - 1].name); /* ln_f.bias and transformer.ln_f.bias */
        rc = append_copy(&t, &n, n - 1, name);
        rc = rc ? rc : write_hf(path, t, n, 0, NULL, 0);
    } else if (strcmp(c, "hf-name") == 0) {
        snprintf(t[2].name, sizeof t[2].name, "h.0.ln_1\\nweight"); /* an escaped newline in a name */
        rc = write_hf(path, t, n, 0, NULL, 0);
    } else if (strcmp(c, "hf-no-heads") == 0) {
        rc = -2; /* written by the caller with another shape */
    } else {
        rc = -3;
    }
    free_tensors(t, n);
    return rc;
}

/* ---------- main ---------- */

static int usage(void)
{
    fprintf(stderr, "usage: weights-craft write KIND FILE | bad CASE FILE | loss KIND CKPT [--seed S] [--model "
                    "L,C,NH,V,VP,T] [--layout L] [--prefix] [--lm-head] [--mask] [--shuffle] [--as-f32]\n");
    return 2;
}

int main(int argc, char **argv)
{
    shape_t s = {2, 64, 4, 256, 384, 64};
    uint64_t seed = 1;
    const char *layout = "dp=1", *pos[3] = {NULL, NULL, NULL};
    int npos = 0, prefix = 0, lm_head = 0, mask = 0, shuffle = 0, as_f32 = 0, status = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc)
            seed = strtoull(argv[++i], NULL, 0);
        else if (strcmp(argv[i], "--model") == 0 && i + 1 < argc && parse_shape(argv[i + 1], &s) == 0)
            i++;
        else if (strcmp(argv[i], "--layout") == 0 && i + 1 < argc)
            layout = argv[++i];
        else if (strcmp(argv[i], "--prefix") == 0)
            prefix = 1;
        else if (strcmp(argv[i], "--lm-head") == 0)
            lm_head = 1;
        else if (strcmp(argv[i], "--mask") == 0)
            mask = 1;
        else if (strcmp(argv[i], "--shuffle") == 0)
            shuffle = 1;
        else if (strcmp(argv[i], "--as-f32") == 0)
            as_f32 = 1;
        else if (argv[i][0] != '-' && npos < 3)
            pos[npos++] = argv[i];
        else
            return usage();
    }
    if (npos != 3)
        return usage();
    const char *cmd = pos[0], *kind = pos[1], *path = pos[2];
    int quant = strstr(kind, "bf16") ? 'b' : strstr(kind, "f16") ? 'h' : 0;
    model_t m;
    if (strcmp(cmd, "bad") == 0 && strcmp(kind, "hf-no-heads") == 0)
        s.C = 48, s.NH = 4; /* a dim that is no multiple of 64 */
    if (make_model(&m, s, seed, quant) != 0) {
        fprintf(stderr, "weights-craft: no memory\n");
        return 1;
    }
    if (strcmp(cmd, "write") == 0 && strncmp(kind, "llmc", 4) == 0) {
        status = write_llmc(&m, path, quant == 'b', NULL);
    } else if (strcmp(cmd, "write") == 0 && strncmp(kind, "hf", 2) == 0) {
        hf_tensor_t *t = NULL;
        int n = hf_tensors(&m, prefix, lm_head, mask, &t);
        for (int i = 0; i < n; i++)
            snprintf(t[i].dtype, sizeof t[i].dtype, "%s", as_f32 ? "F32" : quant == 'b' ? "BF16" : quant == 'h' ? "F16" : "F32");
        for (int i = 0; shuffle && i + 1 < n; i += 2) { /* pairs swapped: the order is the file's business */
            hf_tensor_t x = t[i];
            t[i] = t[i + 1], t[i + 1] = x;
        }
        status = n < 0 ? -1 : write_hf(path, t, n, 0, NULL, 0);
        if (n >= 0)
            free_tensors(t, n);
    } else if (strcmp(cmd, "bad") == 0) {
        int known = 0;
        for (int i = 0; bad_cases[i]; i++)
            known |= strcmp(kind, bad_cases[i]) == 0;
        if (!known) {
            fprintf(stderr, "weights-craft: unknown case %s\n", kind);
            return 2;
        }
        if (strcmp(kind, "hf-no-heads") == 0) {
            hf_tensor_t *t = NULL;
            int n = hf_tensors(&m, 0, 0, 0, &t);
            status = write_hf(path, t, n, 0, NULL, 0);
            free_tensors(t, n);
        } else {
            status = write_bad(kind, path, &m);
        }
    } else if (strcmp(cmd, "loss") == 0) {
        MPI_Init(&argc, &argv);
        status = cmd_loss(&m, path, layout);
        MPI_Finalize();
    } else {
        free_model(&m);
        return usage();
    }
    free_model(&m);
    if (status != 0 && strcmp(cmd, "loss") != 0)
        fprintf(stderr, "weights-craft: cannot write %s\n", path);
    return status != 0;
}
