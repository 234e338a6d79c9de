/*
 * weights.c: GPT-2 weights in llm.c's and Hugging Face's files, in and out (tsr-ckpt import
 * and export): the adapter between their tensors and the model's (tsr_gpt_tensor_info()).
 *
 * A table of file tensors (spec_t) says, for each format, which block of a file tensor is
 * which model tensor and whether it is transposed: llm.c stores weights as (out, in), the
 * transpose of Tessera's a W, and fuses Q, K and V into rows [q; k; v] of one (3C, C)
 * tensor; Hugging Face's Conv1D weights are (in, out), Tessera's orientation, with c_attn
 * (C, 3C) fused by columns. One function (transfer) moves values either way through it, so
 * that import and export cannot disagree.
 *
 * Everything read from a file is checked before it is used: each size against the file's
 * length (in overflow-checked 64-bit arithmetic) before any allocation, so that a crafted
 * header cannot make us allocate or read past what the file holds; each value for being
 * finite. Errors name the file and what is wrong, on one line.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model_impl.h"

#define LLMC_MAGIC 20240326
#define LLMC_HEADER_WORDS 256
#define LLMC_HEADER_BYTES (LLMC_HEADER_WORDS * 4)
/* safetensors' own bound on its JSON header (MAX_HEADER_SIZE of the reference reader) */
#define HF_MAX_HEADER 100000000ull
#define HF_MAX_DIMS 8
#define HF_NAME_MAX 256
/* Bounds on what a file may declare beyond its length: a model's tables grow with its blocks
 * (kilobytes each, whatever their width), a header's with its tensors. GPT-2 XL has 48 blocks,
 * 580 tensors. */
#define MAX_LAYERS 4096
#define HF_MAX_TENSORS 65536
/* A model's buffers for one sequence (tsr-ckpt import builds it with batch 1) are led by its
 * seq x vocab logits, which the file does not hold: a huge seq or vocab with a tiny dim makes
 * a file of megabytes ask for hundreds of gigabytes. The logits may be at most the larger of
 * 2^26 values (GPT-2's 1024 x 50257 are 51M) and 4 times the parameters the file holds. */
#define MAX_LOGITS_FLOOR (1ll << 26)
#define MAX_LOGITS_PER_PARAM 4

static const char *const format_names[] = {[TSR_GPT_WEIGHTS_LLMC] = "llmc", [TSR_GPT_WEIGHTS_HF] = "hf"};

tsr_status_t tsr_gpt_weights_format_parse(const char *name, tsr_gpt_weights_format_t *out)
{
    for (int f = 0; f < 2; f++)
        if (name && strcmp(name, format_names[f]) == 0) {
            *out = (tsr_gpt_weights_format_t)f;
            return TSR_OK;
        }
    return TSR_ERROR(TSR_ERR_INVALID_ARG, "unknown weights format \"%s\" (expected llmc or hf)",
                     name ? name : "(null)");
}

const char *tsr_gpt_weights_format_name(tsr_gpt_weights_format_t format)
{
    return (unsigned)format < 2 ? format_names[format] : "unknown";
}

/* ---------- the tables ---------- */

/* Block rows [r0, r0 + rows) x cols [c0, c0 + cols) of a file tensor is the model's tensor
 * dest (a block parameter LN1G ... B2 for a per-layer tensor, else a tensor index), or its
 * transpose. */
typedef struct part {
    int64_t r0, c0, rows, cols;
    int dest, transpose;
} part_t;

/* One file tensor: rows x cols per layer (a vector is 1 x cols); llm.c keeps the layers of a
 * per-layer tensor one after the other, Hugging Face names each h.<l>.<name>. */
typedef struct spec {
    const char *name;
    int64_t rows, cols;
    int per_layer, vector, nparts;
    part_t part[3];
} spec_t;

enum { NSPEC = 16 };

static part_t whole(int64_t rows, int64_t cols, int dest, int transpose)
{
    part_t p = {0, 0, rows, cols, dest, transpose};
    return p;
}

/* Three parts side by side: the fused Q, K, V (by rows when `by_rows`, else by columns). */
static void fused(spec_t *s, int64_t c, int by_rows, int transpose)
{
    static const int dest[3] = {WQ, WK, WV}, bias[3] = {BQ, BK, BV};
    s->nparts = 3;
    for (int k = 0; k < 3; k++) {
        part_t p = {by_rows ? k * c : 0, by_rows ? 0 : k * c, by_rows ? c : s->rows, by_rows ? s->cols : c,
                    s->vector ? bias[k] : dest[k], transpose};
        s->part[k] = p;
    }
}

static spec_t vec(const char *name, int64_t n, int per_layer, int dest)
{
    spec_t s = {name, 1, n, per_layer, 1, 1, {whole(1, n, dest, 0)}};
    return s;
}

static spec_t mat(const char *name, int64_t rows, int64_t cols, int per_layer, int dest, int transpose)
{
    spec_t s = {name, rows, cols, per_layer, 0, 1, {whole(rows, cols, dest, transpose)}};
    return s;
}

/* llm.c's sixteen tensors in its order; wte has vp rows, of which the first vocab are the model's. */
static void llmc_specs(const tsr_gpt_config_t *cfg, int64_t vp, spec_t *s)
{
    int64_t c = cfg->dim, L = cfg->layers;
    int lnf = (int)(2 + L * NBLOCK);
    s[0] = mat("wte", vp, c, 0, 0, 0);
    s[0].part[0].rows = cfg->vocab;
    s[1] = mat("wpe", cfg->seq, c, 0, 1, 0);
    s[2] = vec("ln1w", c, 1, LN1G);
    s[3] = vec("ln1b", c, 1, LN1B);
    s[4] = mat("qkvw", 3 * c, c, 1, WQ, 1);
    fused(&s[4], c, 1, 1);
    s[5] = vec("qkvb", 3 * c, 1, BQ);
    fused(&s[5], c, 0, 0);
    s[6] = mat("attprojw", c, c, 1, WO, 1);
    s[7] = vec("attprojb", c, 1, BO);
    s[8] = vec("ln2w", c, 1, LN2G);
    s[9] = vec("ln2b", c, 1, LN2B);
    s[10] = mat("fcw", 4 * c, c, 1, W1, 1);
    s[11] = vec("fcb", 4 * c, 1, B1);
    s[12] = mat("fcprojw", c, 4 * c, 1, W2, 1);
    s[13] = vec("fcprojb", c, 1, B2);
    s[14] = vec("lnfw", c, 0, lnf);
    s[15] = vec("lnfb", c, 0, lnf + 1);
}

/* Hugging Face's tensors in the canonical order: wte, wpe, each block's twelve (h.<l>.name),
 * ln_f. */
static void hf_specs(const tsr_gpt_config_t *cfg, spec_t *s)
{
    int64_t c = cfg->dim, L = cfg->layers;
    int lnf = (int)(2 + L * NBLOCK);
    s[0] = mat("wte.weight", cfg->vocab, c, 0, 0, 0);
    s[1] = mat("wpe.weight", cfg->seq, c, 0, 1, 0);
    s[2] = vec("ln_1.weight", c, 1, LN1G);
    s[3] = vec("ln_1.bias", c, 1, LN1B);
    s[4] = mat("attn.c_attn.weight", c, 3 * c, 1, WQ, 0);
    fused(&s[4], c, 0, 0);
    s[5] = vec("attn.c_attn.bias", 3 * c, 1, BQ);
    fused(&s[5], c, 0, 0);
    s[6] = mat("attn.c_proj.weight", c, c, 1, WO, 0);
    s[7] = vec("attn.c_proj.bias", c, 1, BO);
    s[8] = vec("ln_2.weight", c, 1, LN2G);
    s[9] = vec("ln_2.bias", c, 1, LN2B);
    s[10] = mat("mlp.c_fc.weight", c, 4 * c, 1, W1, 0);
    s[11] = vec("mlp.c_fc.bias", 4 * c, 1, B1);
    s[12] = mat("mlp.c_proj.weight", 4 * c, c, 1, W2, 0);
    s[13] = vec("mlp.c_proj.bias", c, 1, B2);
    s[14] = vec("ln_f.weight", c, 0, lnf);
    s[15] = vec("ln_f.bias", c, 0, lnf + 1);
}

/* Where each model tensor starts in the flat parameter array; n + 1 offsets, malloc'ed. */
static tsr_status_t tensor_offsets(const tsr_gpt_config_t *cfg, int64_t **out)
{
    tsr_status_t rc = TSR_OK;
    int n = tsr_gpt_tensor_count(cfg);
    int64_t *off = tsr__calloc((size_t)n + 1, sizeof *off);
    char name[TSR_ZERO_NAME_MAX];
    int64_t rows, cols;
    TSR_CHECK(off, TSR_ERR_OUT_OF_MEMORY, "no memory for the model's tensor offsets");
    for (int i = 0; i < n; i++) {
        TSR_TRY(tsr_gpt_tensor_info(cfg, i, name, sizeof name, &rows, &cols));
        off[i + 1] = off[i] + rows * cols;
    }
    *out = off;
    off = NULL;
cleanup:
    free(off);
    return rc;
}

/*
 * Move the values of file tensor s of layer l (block: rows x cols, row-major) into the
 * model's parameters (to_model) or out of them. Into the model, returns the first element of
 * the block that is not finite, or -1; the block's other elements (llm.c's padding rows) are
 * not read. Out of it, returns -1 and leaves those elements as they were.
 */
static int64_t transfer(const spec_t *s, int l, float *block, float *params, const int64_t *off, int to_model)
{
    for (int k = 0; k < s->nparts; k++) {
        const part_t *p = &s->part[k];
        float *t = params + off[s->per_layer ? 2 + l * NBLOCK + p->dest : p->dest];
        for (int64_t i = 0; i < p->rows; i++)
            for (int64_t j = 0; j < p->cols; j++) {
                int64_t f = (p->r0 + i) * s->cols + p->c0 + j;
                float *m = p->transpose ? t + j * p->rows + i : t + i * p->cols + j;
                if (!to_model) {
                    block[f] = *m;
                } else if (isfinite(block[f])) {
                    *m = block[f];
                } else {
                    return f;
                }
            }
    }
    return -1;
}

/* ---------- element types ---------- */

typedef enum { E_F32, E_BF16, E_F16, E_OTHER } elem_t;

static uint32_t get_le32(const unsigned char *b)
{
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static void put_le32(unsigned char *b, uint32_t v)
{
    b[0] = (unsigned char)v, b[1] = (unsigned char)(v >> 8), b[2] = (unsigned char)(v >> 16);
    b[3] = (unsigned char)(v >> 24);
}

static float f32_from_f16(uint16_t h)
{
    int exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    float v = exp == 0 ? ldexpf((float)man, -24)
              : exp == 31 ? (man ? NAN : INFINITY)
                          : ldexpf((float)(man | 0x400), exp - 25);
    return h & 0x8000 ? -v : v;
}

/* n little-endian values of type e into floats (exactly: every bf16 and f16 is a float). */
static void decode(elem_t e, const unsigned char *src, size_t n, float *dst)
{
    for (size_t i = 0; i < n; i++) {
        if (e == E_F32) {
            uint32_t u = get_le32(src + 4 * i);
            memcpy(&dst[i], &u, sizeof u);
        } else {
            uint16_t h = (uint16_t)(src[2 * i] | src[2 * i + 1] << 8);
            dst[i] = e == E_BF16 ? tsr__f32_from_bf16(h) : f32_from_f16(h);
        }
    }
}

/* ---------- reading ---------- */

/* Open a file to read: a regular file (O_NONBLOCK: a FIFO must not block the open). */
static tsr_status_t open_input(const char *path, const char *what, int *fd, uint64_t *size)
{
    tsr_status_t rc = TSR_OK;
    struct stat st;
    *fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    TSR_CHECK(*fd >= 0, TSR_ERR_IO, "%s: %s", path, strerror(errno));
    TSR_CHECK(fstat(*fd, &st) == 0, TSR_ERR_IO, "%s: %s", path, strerror(errno));
    TSR_TRY(tsr__check_regular(path, &st, what));
    *size = (uint64_t)st.st_size;
cleanup:
    return rc;
}

/* All n bytes at offset (the caller checked that the file holds them). */
static tsr_status_t read_at(int fd, const char *path, uint64_t offset, size_t n, void *buf)
{
    for (size_t done = 0; done < n;) {
        ssize_t got = pread(fd, (char *)buf + done, n - done, (off_t)(offset + done));
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            return TSR_ERROR(TSR_ERR_IO, "%s: cannot read %zu bytes at offset %llu: %s", path, n - done,
                             (unsigned long long)(offset + done), got < 0 ? strerror(errno) : "the file ended");
        done += (size_t)got;
    }
    return TSR_OK;
}

/* a * b + c, or 0 when it overflows (*ok cleared). */
static uint64_t muladd(uint64_t a, uint64_t b, uint64_t c, int *ok)
{
    uint64_t r;
    if (__builtin_mul_overflow(a, b, &r) || __builtin_add_overflow(r, c, &r))
        *ok = 0;
    return *ok ? r : 0;
}

/* A model read from a file must be one Tessera builds (vocabulary, ...), whose buffers for
 * one sequence are not out of proportion to the file (MAX_LOGITS_FLOOR). */
static tsr_status_t check_model(const char *path, const tsr_gpt_config_t *cfg)
{
    char why[512];
    if (tsr_gpt_config_check(cfg) != TSR_OK) {
        snprintf(why, sizeof why, "%s", tsr_last_error());
        return TSR_ERROR(TSR_ERR_FORMAT, "%s: not a model Tessera builds: %s", path, why);
    }
    int64_t logits = (int64_t)cfg->seq * cfg->vocab, params = tsr_gpt_param_count(cfg);
    if (logits > MAX_LOGITS_FLOOR && logits > MAX_LOGITS_PER_PARAM * params)
        return TSR_ERROR(TSR_ERR_FORMAT, "%s: the model's logits of one sequence, seq=%d x vocab=%d = %lld values, "
                         "are more than 2^26 and %d times its %lld parameters (the bound on what a model built "
                         "from a weights file may allocate beyond the file)", path, cfg->seq, cfg->vocab,
                         (long long)logits, MAX_LOGITS_PER_PARAM, (long long)params);
    return TSR_OK;
}

/* Buffers for one file tensor (of at most max elements of `size` bytes) and the parameters. */
typedef struct reading {
    unsigned char *bytes;
    float *block, *params;
    int64_t *off;
} reading_t;

static tsr_status_t reading_alloc(reading_t *rd, const tsr_gpt_config_t *cfg, uint64_t max, size_t size)
{
    tsr_status_t rc = TSR_OK;
    TSR_TRY(tensor_offsets(cfg, &rd->off));
    rd->bytes = malloc(max * size > 0 ? max * size : 1);
    rd->block = malloc(max > 0 ? max * sizeof(float) : 1);
    rd->params = malloc((size_t)tsr_gpt_param_count(cfg) * sizeof(float));
    TSR_CHECK(rd->bytes && rd->block && rd->params, TSR_ERR_OUT_OF_MEMORY,
              "no memory for the %lld parameters of the model", (long long)tsr_gpt_param_count(cfg));
cleanup:
    return rc;
}

static void reading_free(reading_t *rd)
{
    free(rd->bytes);
    free(rd->block);
    free(rd->params);
    free(rd->off);
}

/* Read file tensor s of layer l (n elements of type e at offset) into the model. */
static tsr_status_t read_tensor(int fd, const char *path, reading_t *rd, const spec_t *s, int l, elem_t e,
                                uint64_t offset, const char *name)
{
    size_t n = (size_t)(s->rows * s->cols), size = e == E_F32 ? 4 : 2;
    tsr_status_t rc = read_at(fd, path, offset, n * size, rd->bytes);
    if (rc != TSR_OK)
        return rc;
    decode(e, rd->bytes, n, rd->block);
    int64_t bad = transfer(s, l, rd->block, rd->params, rd->off, 1);
    if (bad >= 0)
        return TSR_ERROR(TSR_ERR_FORMAT, "%s: tensor %s holds %g at element %lld (expected finite weights)", path, name,
                         (double)rd->block[bad], (long long)bad);
    return TSR_OK;
}

static tsr_status_t llmc_read(const char *path, tsr_gpt_config_t *cfg_out, float **params)
{
    tsr_status_t rc = TSR_OK;
    int fd = -1, ok = 1;
    uint64_t size = 0;
    unsigned char raw[LLMC_HEADER_BYTES];
    int32_t h[8];
    reading_t rd = {0};
    spec_t s[NSPEC];
    TSR_TRY(open_input(path, "an llm.c model file", &fd, &size));
    TSR_CHECK(size >= LLMC_HEADER_BYTES, TSR_ERR_FORMAT,
              "%s: %llu bytes, shorter than the %d-byte header of an llm.c model file", path,
              (unsigned long long)size, LLMC_HEADER_BYTES);
    TSR_TRY(read_at(fd, path, 0, sizeof raw, raw));
    for (int i = 0; i < 8; i++)
        h[i] = (int32_t)get_le32(raw + 4 * i);
    TSR_CHECK(h[0] == LLMC_MAGIC, TSR_ERR_FORMAT, "%s: magic number %d, expected %d (an llm.c model file)", path,
              h[0], LLMC_MAGIC);
    TSR_CHECK(h[1] == 3 || h[1] == 5, TSR_ERR_FORMAT, "%s: version %d, expected 3 (fp32) or 5 (bf16)", path, h[1]);
    static const char *const field[] = {"maxT", "V", "L", "NH", "C", "Vp"};
    for (int i = 0; i < 6; i++)
        TSR_CHECK(h[2 + i] >= 1, TSR_ERR_FORMAT, "%s: the header's %s is %d (expected a positive size)", path,
                  field[i], h[2 + i]);
    int64_t T = h[2], V = h[3], L = h[4], NH = h[5], C = h[6], Vp = h[7];
    TSR_CHECK(C % NH == 0, TSR_ERR_FORMAT, "%s: the header's channels C=%lld are not a multiple of its heads NH=%lld",
              path, (long long)C, (long long)NH);
    TSR_CHECK(Vp >= V, TSR_ERR_FORMAT, "%s: the header's padded vocabulary Vp=%lld is smaller than its vocabulary "
              "V=%lld", path, (long long)Vp, (long long)V);
    TSR_CHECK(L <= MAX_LAYERS, TSR_ERR_FORMAT, "%s: the header's L=%lld layers are more than the %d this reader "
              "takes", path, (long long)L, MAX_LAYERS);
    elem_t e = h[1] == 3 ? E_F32 : E_BF16;
    uint64_t esize = e == E_F32 ? 4 : 2;
    /* elements: Vp C + T C + L (12 C^2 + 13 C) + 2 C */
    uint64_t block = muladd(muladd(12, (uint64_t)C, 13, &ok), (uint64_t)C, 0, &ok);
    uint64_t n = muladd((uint64_t)Vp + (uint64_t)T + 2, (uint64_t)C, 0, &ok);
    n = muladd((uint64_t)L, block, n, &ok);
    uint64_t need = muladd(n, esize, LLMC_HEADER_BYTES, &ok);
    TSR_CHECK(ok && need == size, TSR_ERR_FORMAT,
              "%s: the header's shapes (maxT=%lld, V=%lld, L=%lld, NH=%lld, C=%lld, Vp=%lld, %s) need %s%llu bytes, "
              "the file has %llu", path, (long long)T, (long long)V, (long long)L, (long long)NH, (long long)C,
              (long long)Vp, e == E_F32 ? "fp32" : "bf16", ok ? "" : "more than ", ok ? (unsigned long long)need
              : (unsigned long long)UINT64_MAX, (unsigned long long)size);
    tsr_gpt_config_t cfg = {sizeof cfg, (int)L, (int)C, (int)NH, (int)V, (int)T};
    TSR_TRY(check_model(path, &cfg));
    llmc_specs(&cfg, Vp, s);
    uint64_t max = 0;
    for (int k = 0; k < NSPEC; k++)
        max = (uint64_t)(s[k].rows * s[k].cols) > max ? (uint64_t)(s[k].rows * s[k].cols) : max;
    TSR_TRY(reading_alloc(&rd, &cfg, max, (size_t)esize));
    uint64_t at = LLMC_HEADER_BYTES;
    for (int k = 0; k < NSPEC; k++)
        for (int l = 0; l < (s[k].per_layer ? cfg.layers : 1); l++) {
            char name[64];
            snprintf(name, sizeof name, s[k].per_layer ? "%s (layer %d)" : "%s", s[k].name, l);
            TSR_TRY(read_tensor(fd, path, &rd, &s[k], l, e, at, name));
            at += (uint64_t)(s[k].rows * s[k].cols) * esize;
        }
    *cfg_out = cfg;
    *params = rd.params;
    rd.params = NULL;
cleanup:
    reading_free(&rd);
    if (fd >= 0)
        close(fd);
    return rc;
}

/* ---------- safetensors' JSON header ---------- */

static const struct {
    const char *name;
    int size;
    elem_t e;
} hf_dtypes[] = {{"F32", 4, E_F32},   {"BF16", 2, E_BF16},  {"F16", 2, E_F16},     {"F64", 8, E_OTHER},
                 {"I64", 8, E_OTHER}, {"U64", 8, E_OTHER},  {"I32", 4, E_OTHER},   {"U32", 4, E_OTHER},
                 {"I16", 2, E_OTHER}, {"U16", 2, E_OTHER},  {"I8", 1, E_OTHER},    {"U8", 1, E_OTHER},
                 {"BOOL", 1, E_OTHER}, {"F8_E4M3", 1, E_OTHER}, {"F8_E5M2", 1, E_OTHER}};

/* One tensor of the header. */
typedef struct hf_entry {
    char name[HF_NAME_MAX]; /* without a "transformer." prefix */
    int dtype;              /* index in hf_dtypes */
    int ndim;
    uint64_t shape[HF_MAX_DIMS];
    uint64_t begin, end;    /* data_offsets, from the start of the data */
    int used;
} hf_entry_t;

typedef struct json {
    const char *path, *s;
    size_t n, i;
} json_t;

static tsr_status_t json_fail(const json_t *j, const char *expected)
{
    return TSR_ERROR(TSR_ERR_FORMAT, "%s: the safetensors header is not valid: expected %s at byte %zu", j->path,
                     expected, 8 + j->i);
}

static void json_ws(json_t *j)
{
    while (j->i < j->n && (j->s[j->i] == ' ' || j->s[j->i] == '\t' || j->s[j->i] == '\n' || j->s[j->i] == '\r'))
        j->i++;
}

/* The next non-blank character is c: consume it. */
static int json_eat(json_t *j, char c)
{
    json_ws(j);
    if (j->i < j->n && j->s[j->i] == c) {
        j->i++;
        return 1;
    }
    return 0;
}

static int hex4(const char *s, unsigned *v)
{
    *v = 0;
    for (int k = 0; k < 4; k++) {
        char c = s[k];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0)
            return 0;
        *v = *v << 4 | (unsigned)d;
    }
    return 1;
}

/* A JSON string, decoded to UTF-8 into buf (cap bytes with the NUL; longer is an error). With
 * `ascii`, only printable ASCII is accepted: names and dtypes, which error messages print. */
static tsr_status_t json_string(json_t *j, char *buf, size_t cap, int ascii)
{
    size_t len = 0;
    if (!json_eat(j, '"'))
        return json_fail(j, "a string");
    while (j->i < j->n && j->s[j->i] != '"') {
        unsigned char c = (unsigned char)j->s[j->i++];
        unsigned cp = c;
        if (c < 0x20) {
            j->i--;
            return json_fail(j, "no control character in a string");
        }
        if (c == '\\') {
            if (j->i >= j->n)
                break;
            char e = j->s[j->i++];
            const char *plain = strchr("\"\\/bfnrt", e);
            if (e && plain) {
                cp = (unsigned char)"\"\\/\b\f\n\r\t"[plain - "\"\\/bfnrt"];
            } else if (e == 'u' && j->i + 4 <= j->n && hex4(j->s + j->i, &cp)) {
                j->i += 4;
                unsigned lo;
                if (cp >= 0xd800 && cp < 0xdc00 && j->i + 6 <= j->n && j->s[j->i] == '\\' && j->s[j->i + 1] == 'u' &&
                    hex4(j->s + j->i + 2, &lo) && lo >= 0xdc00 && lo < 0xe000) {
                    cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
                    j->i += 6;
                } else if (cp >= 0xd800 && cp < 0xe000) {
                    return json_fail(j, "a whole UTF-16 surrogate pair");
                }
            } else {
                j->i--;
                return json_fail(j, "an escape \\\" \\\\ \\/ \\b \\f \\n \\r \\t or \\uXXXX");
            }
        }
        /* code point to UTF-8 (a raw byte of the header is copied as it is) */
        unsigned char u[4];
        size_t m = 0;
        if (cp < 0x80 || c != '\\')
            u[m++] = (unsigned char)cp;
        else if (cp < 0x800)
            u[m++] = (unsigned char)(0xc0 | cp >> 6), u[m++] = (unsigned char)(0x80 | (cp & 0x3f));
        else if (cp < 0x10000)
            u[m++] = (unsigned char)(0xe0 | cp >> 12), u[m++] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f)),
            u[m++] = (unsigned char)(0x80 | (cp & 0x3f));
        else
            u[m++] = (unsigned char)(0xf0 | cp >> 18), u[m++] = (unsigned char)(0x80 | ((cp >> 12) & 0x3f)),
            u[m++] = (unsigned char)(0x80 | ((cp >> 6) & 0x3f)), u[m++] = (unsigned char)(0x80 | (cp & 0x3f));
        if (len + m >= cap)
            return TSR_ERROR(TSR_ERR_FORMAT, "%s: the safetensors header has a string of more than %zu bytes at byte "
                             "%zu (expected tensor names and values up to that)", j->path, cap - 1, 8 + j->i);
        if (cp == 0)
            return json_fail(j, "no NUL character in a string");
        if (ascii && (cp < 0x20 || cp > 0x7e))
            return TSR_ERROR(TSR_ERR_FORMAT, "%s: the safetensors header has a name with the character U+%04X before "
                             "byte %zu (expected printable ASCII, as tensor names and dtypes are)", j->path, cp,
                             8 + j->i);
        memcpy(buf + len, u, m);
        len += m;
    }
    if (!json_eat(j, '"'))
        return json_fail(j, "the end of a string");
    buf[len] = '\0';
    return TSR_OK;
}

/* A non-negative integer without fraction or exponent. */
static tsr_status_t json_uint(json_t *j, uint64_t *v)
{
    json_ws(j);
    size_t start = j->i;
    *v = 0;
    while (j->i < j->n && j->s[j->i] >= '0' && j->s[j->i] <= '9') {
        if (__builtin_mul_overflow(*v, 10, v) || __builtin_add_overflow(*v, (uint64_t)(j->s[j->i] - '0'), v))
            return json_fail(j, "an integer below 2^64");
        j->i++;
    }
    if (j->i == start || (j->s[start] == '0' && j->i - start > 1) ||
        (j->i < j->n && (j->s[j->i] == '.' || j->s[j->i] == 'e' || j->s[j->i] == 'E'))) {
        j->i = start;
        return json_fail(j, "a non-negative integer");
    }
    return TSR_OK;
}

/* [a, b, ...] of at most max integers. */
static tsr_status_t json_uints(json_t *j, uint64_t *v, int max, int *n)
{
    *n = 0;
    if (!json_eat(j, '['))
        return json_fail(j, "an array of integers");
    if (json_eat(j, ']'))
        return TSR_OK;
    do {
        if (*n == max)
            return json_fail(j, max == 2 ? "two data_offsets" : "a shape of at most 8 dimensions");
        tsr_status_t rc = json_uint(j, &v[(*n)++]);
        if (rc != TSR_OK)
            return rc;
    } while (json_eat(j, ','));
    return json_eat(j, ']') ? TSR_OK : json_fail(j, "',' or ']'");
}

/* {"dtype": ..., "shape": [...], "data_offsets": [b, e]}, each once and nothing else. */
static tsr_status_t json_tensor(json_t *j, hf_entry_t *t)
{
    tsr_status_t rc = TSR_OK;
    char key[32], dtype[32];
    int seen[3] = {0, 0, 0}, n = 0;
    uint64_t offs[2];
    if (!json_eat(j, '{'))
        return json_fail(j, "a tensor's {dtype, shape, data_offsets}");
    do {
        TSR_TRY(json_string(j, key, sizeof key, 1));
        if (!json_eat(j, ':'))
            return json_fail(j, "':'");
        int k = strcmp(key, "dtype") == 0 ? 0 : strcmp(key, "shape") == 0 ? 1 : strcmp(key, "data_offsets") == 0 ? 2 : -1;
        TSR_CHECK(k >= 0 && !seen[k], TSR_ERR_FORMAT, "%s: tensor %s has %s key \"%s\" (expected dtype, shape and "
                  "data_offsets once each)", j->path, t->name, k < 0 ? "an unknown" : "a second", key);
        seen[k] = 1;
        if (k == 0) {
            TSR_TRY(json_string(j, dtype, sizeof dtype, 1));
            t->dtype = -1;
            for (int d = 0; d < (int)(sizeof hf_dtypes / sizeof *hf_dtypes); d++)
                if (strcmp(dtype, hf_dtypes[d].name) == 0)
                    t->dtype = d;
            TSR_CHECK(t->dtype >= 0, TSR_ERR_FORMAT, "%s: tensor %s has an unknown dtype \"%s\" (expected F32, BF16, "
                      "F16 or another safetensors type)", j->path, t->name, dtype);
        } else if (k == 1) {
            TSR_TRY(json_uints(j, t->shape, HF_MAX_DIMS, &t->ndim));
        } else {
            TSR_TRY(json_uints(j, offs, 2, &n));
            TSR_CHECK(n == 2, TSR_ERR_FORMAT, "%s: tensor %s has %d data_offsets (expected 2: begin and end)", j->path,
                      t->name, n);
            t->begin = offs[0], t->end = offs[1];
        }
    } while (json_eat(j, ','));
    if (!json_eat(j, '}'))
        return json_fail(j, "',' or '}'");
    TSR_CHECK(seen[0] && seen[1] && seen[2], TSR_ERR_FORMAT, "%s: tensor %s has no %s", j->path, t->name,
              !seen[0] ? "dtype" : !seen[1] ? "shape" : "data_offsets");
cleanup:
    return rc;
}

/* "__metadata__": {"key": "value", ...}, strings only (what safetensors allows). */
static tsr_status_t json_metadata(json_t *j)
{
    char text[HF_NAME_MAX * 4];
    if (!json_eat(j, '{'))
        return json_fail(j, "the __metadata__ object");
    if (json_eat(j, '}'))
        return TSR_OK;
    do {
        tsr_status_t rc = json_string(j, text, sizeof text, 0);
        if (rc == TSR_OK && !json_eat(j, ':'))
            rc = json_fail(j, "':'");
        if (rc == TSR_OK)
            rc = json_string(j, text, sizeof text, 0);
        if (rc != TSR_OK)
            return rc;
    } while (json_eat(j, ','));
    return json_eat(j, '}') ? TSR_OK : json_fail(j, "',' or '}'");
}

/* The whole header: one object of tensors and an optional __metadata__, then blanks only. */
static tsr_status_t json_header(json_t *j, hf_entry_t **out, size_t *count)
{
    tsr_status_t rc = TSR_OK;
    hf_entry_t *e = NULL;
    size_t n = 0, cap = 0;
    int metadata = 0;
    char name[HF_NAME_MAX];
    TSR_CHECK(json_eat(j, '{'), TSR_ERR_FORMAT, "%s: the safetensors header is not valid: expected '{' at byte %zu",
              j->path, 8 + j->i);
    if (!json_eat(j, '}')) {
        do {
            TSR_TRY(json_string(j, name, sizeof name, 1));
            TSR_CHECK(json_eat(j, ':'), TSR_ERR_FORMAT, "%s: the safetensors header is not valid: expected ':' at "
                      "byte %zu", j->path, 8 + j->i);
            if (strcmp(name, "__metadata__") == 0) {
                TSR_CHECK(!metadata, TSR_ERR_FORMAT, "%s: the safetensors header has two __metadata__", j->path);
                metadata = 1;
                TSR_TRY(json_metadata(j));
                continue;
            }
            TSR_CHECK(n < HF_MAX_TENSORS, TSR_ERR_FORMAT, "%s: the safetensors header has more than %d tensors "
                      "(a GPT-2 has 4 and 12 per block)", j->path, HF_MAX_TENSORS);
            if (n == cap) {
                cap = cap ? 2 * cap : 64;
                hf_entry_t *grown = realloc(e, cap * sizeof *e);
                TSR_CHECK(grown, TSR_ERR_OUT_OF_MEMORY, "no memory for %zu tensors", cap);
                e = grown;
            }
            memset(&e[n], 0, sizeof e[n]);
            const char *bare = strncmp(name, "transformer.", 12) == 0 ? name + 12 : name;
            snprintf(e[n].name, sizeof e[n].name, "%s", bare);
            TSR_TRY(json_tensor(j, &e[n]));
            n++;
        } while (json_eat(j, ','));
        TSR_CHECK(json_eat(j, '}'), TSR_ERR_FORMAT, "%s: the safetensors header is not valid: expected ',' or '}' "
                  "at byte %zu", j->path, 8 + j->i);
    }
    json_ws(j);
    TSR_CHECK(j->i == j->n, TSR_ERR_FORMAT, "%s: the safetensors header has more than one JSON object (byte %zu)",
              j->path, 8 + j->i);
    *out = e;
    *count = n;
    e = NULL;
cleanup:
    free(e);
    return rc;
}

/* ---------- safetensors: checks and reading ---------- */

static int by_begin(const void *a, const void *b)
{
    const hf_entry_t *x = *(hf_entry_t *const *)a, *y = *(hf_entry_t *const *)b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : x->end < y->end ? -1 : x->end > y->end;
}

static int by_entry_name(const void *a, const void *b)
{
    return strcmp(((const hf_entry_t *)a)->name, ((const hf_entry_t *)b)->name);
}

/* Each tensor's bytes are what its dtype and shape need and lie in the data; together they
 * cover the data exactly, without overlap (as safetensors' own reader demands). */
static tsr_status_t hf_check_offsets(const char *path, hf_entry_t *e, size_t n, uint64_t data)
{
    tsr_status_t rc = TSR_OK;
    hf_entry_t **order = malloc((n ? n : 1) * sizeof *order);
    TSR_CHECK(order, TSR_ERR_OUT_OF_MEMORY, "no memory for %zu tensors", n);
    for (size_t i = 0; i < n; i++) {
        int ok = 1;
        uint64_t bytes = (uint64_t)hf_dtypes[e[i].dtype].size;
        for (int d = 0; d < e[i].ndim; d++)
            bytes = muladd(bytes, e[i].shape[d], 0, &ok);
        TSR_CHECK(e[i].begin <= e[i].end && e[i].end <= data, TSR_ERR_FORMAT,
                  "%s: tensor %s's data_offsets [%llu, %llu] are out of range (the data holds %llu bytes)", path,
                  e[i].name, (unsigned long long)e[i].begin, (unsigned long long)e[i].end, (unsigned long long)data);
        TSR_CHECK(ok && e[i].end - e[i].begin == bytes, TSR_ERR_FORMAT,
                  "%s: tensor %s's data_offsets [%llu, %llu] hold %llu bytes, but its dtype %s and shape need %s%llu",
                  path, e[i].name, (unsigned long long)e[i].begin, (unsigned long long)e[i].end,
                  (unsigned long long)(e[i].end - e[i].begin), hf_dtypes[e[i].dtype].name, ok ? "" : "more than ",
                  ok ? (unsigned long long)bytes : (unsigned long long)UINT64_MAX);
        order[i] = &e[i];
    }
    qsort(order, n, sizeof *order, by_begin);
    uint64_t at = 0;
    for (size_t i = 0; i < n; i++) {
        TSR_CHECK(order[i]->begin >= at, TSR_ERR_FORMAT,
                  "%s: tensors %s and %s overlap (data_offsets [%llu, %llu] and [%llu, %llu])", path,
                  order[i - 1]->name, order[i]->name, (unsigned long long)order[i - 1]->begin,
                  (unsigned long long)order[i - 1]->end, (unsigned long long)order[i]->begin,
                  (unsigned long long)order[i]->end);
        TSR_CHECK(order[i]->begin == at, TSR_ERR_FORMAT, "%s: data bytes %llu to %llu belong to no tensor (expected "
                  "the tensors to cover the data)", path, (unsigned long long)at, (unsigned long long)order[i]->begin);
        at = order[i]->end;
    }
    TSR_CHECK(at == data, TSR_ERR_FORMAT, "%s: data bytes %llu to %llu belong to no tensor (expected the tensors to "
              "cover the data)", path, (unsigned long long)at, (unsigned long long)data);
cleanup:
    free(order);
    return rc;
}

/* The per-layer tensors of a block of Hugging Face's GPT-2 that carry no weights: the
 * attention's causal mask buffers of older files. */
static int hf_mask_buffer(const char *rest)
{
    return strcmp(rest, "attn.bias") == 0 || strcmp(rest, "attn.masked_bias") == 0;
}

/* "h.<l>.<rest>": l (decimal, no leading zero, below 2^20) and rest; -1 otherwise. */
static int hf_layer(const char *name, const char **rest)
{
    long l = 0;
    const char *p = name + 2;
    if (strncmp(name, "h.", 2) != 0 || *p < '0' || *p > '9' || (p[0] == '0' && p[1] != '.'))
        return -1;
    for (; *p >= '0' && *p <= '9' && l < 1 << 20; p++)
        l = 10 * l + (*p - '0');
    if (*p != '.' || l >= 1 << 20)
        return -1;
    *rest = p + 1;
    return (int)l;
}

static const char *shape_text(const uint64_t *shape, int ndim, char *buf, size_t len)
{
    size_t at = (size_t)snprintf(buf, len, "[");
    for (int d = 0; d < ndim && at < len; d++)
        at += (size_t)snprintf(buf + at, len - at, "%s%llu", d ? ", " : "", (unsigned long long)shape[d]);
    if (at < len)
        snprintf(buf + at, len - at, "]");
    return buf;
}

/* Entry `name` of the sorted entries, of the shape s says (vector or matrix) and a weight dtype. */
static tsr_status_t hf_find(const char *path, hf_entry_t *e, size_t n, const char *name, const spec_t *s, int layers,
                            hf_entry_t **out)
{
    hf_entry_t key;
    char got[128], want[128];
    snprintf(key.name, sizeof key.name, "%s", name);
    hf_entry_t *t = n ? bsearch(&key, e, n, sizeof *e, by_entry_name) : NULL;
    if (!t)
        return TSR_ERROR(TSR_ERR_FORMAT, "%s: has no tensor %s (a GPT-2 of %d layers needs it)", path, name, layers);
    uint64_t shape[2] = {s->vector ? (uint64_t)s->cols : (uint64_t)s->rows, (uint64_t)s->cols};
    int ndim = s->vector ? 1 : 2;
    if (t->ndim != ndim || t->shape[0] != shape[0] || (ndim == 2 && t->shape[1] != shape[1]))
        return TSR_ERROR(TSR_ERR_FORMAT, "%s: tensor %s has shape %s, expected %s", path, name,
                         shape_text(t->shape, t->ndim, got, sizeof got), shape_text(shape, ndim, want, sizeof want));
    if (hf_dtypes[t->dtype].e == E_OTHER)
        return TSR_ERROR(TSR_ERR_FORMAT, "%s: tensor %s has dtype %s, expected F32, BF16 or F16", path, name,
                         hf_dtypes[t->dtype].name);
    t->used = 1;
    *out = t;
    return TSR_OK;
}

/* The model the entries hold: V, C from wte, T from wpe, L from the blocks, heads from opts. */
static tsr_status_t hf_config(const char *path, hf_entry_t *e, size_t n, const tsr_gpt_weights_options_t *opts,
                              tsr_gpt_config_t *cfg)
{
    hf_entry_t key, *wte, *wpe;
    char got[128];
    int layers = 0;
    for (size_t i = 0; i < n; i++) {
        const char *rest = NULL;
        int l = hf_layer(e[i].name, &rest);
        layers = l + 1 > layers ? l + 1 : layers;
    }
    snprintf(key.name, sizeof key.name, "wte.weight");
    wte = n ? bsearch(&key, e, n, sizeof *e, by_entry_name) : NULL;
    snprintf(key.name, sizeof key.name, "wpe.weight");
    wpe = n ? bsearch(&key, e, n, sizeof *e, by_entry_name) : NULL;
    if (!wte || !wpe)
        return TSR_ERROR(TSR_ERR_FORMAT, "%s: has no tensor %s (expected a GPT-2's weights)", path,
                         !wte ? "wte.weight" : "wpe.weight");
    if (wte->ndim != 2 || wte->shape[0] < 1 || wte->shape[1] < 1 || wte->shape[0] > 1 << 30 || wte->shape[1] > 1 << 30)
        return TSR_ERROR(TSR_ERR_FORMAT, "%s: tensor wte.weight has shape %s, expected [vocabulary, dim]", path,
                         shape_text(wte->shape, wte->ndim, got, sizeof got));
    if (wpe->ndim != 2 || wpe->shape[0] < 1 || wpe->shape[0] > 1 << 30 || wpe->shape[1] != wte->shape[1])
        return TSR_ERROR(TSR_ERR_FORMAT, "%s: tensor wpe.weight has shape %s, expected [positions, %llu]", path,
                         shape_text(wpe->shape, wpe->ndim, got, sizeof got), (unsigned long long)wte->shape[1]);
    if (layers == 0)
        return TSR_ERROR(TSR_ERR_FORMAT, "%s: has no transformer blocks (tensors h.0.*)", path);
    if (layers > MAX_LAYERS)
        return TSR_ERROR(TSR_ERR_FORMAT, "%s: has a block h.%d, more than the %d this reader takes", path, layers - 1,
                         MAX_LAYERS);
    int dim = (int)wte->shape[1];
    if (opts->heads == 0 && dim % 64 != 0)
        return TSR_ERROR(TSR_ERR_FORMAT, "%s: the model's dim %d is not a multiple of GPT-2's head size 64, so the "
                         "file does not say its heads (give them: --heads N)", path, dim);
    tsr_gpt_config_t c = {sizeof c, layers, dim, opts->heads ? opts->heads : dim / 64, (int)wte->shape[0],
                          (int)wpe->shape[0]};
    *cfg = c;
    return check_model(path, cfg);
}

static tsr_status_t hf_read(const char *path, const tsr_gpt_weights_options_t *opts, tsr_gpt_config_t *cfg_out,
                            float **params)
{
    tsr_status_t rc = TSR_OK;
    int fd = -1;
    uint64_t size = 0, hlen = 0;
    unsigned char raw[8];
    char *header = NULL;
    hf_entry_t *e = NULL, *t = NULL;
    size_t n = 0;
    reading_t rd = {0};
    spec_t s[NSPEC];
    tsr_gpt_config_t cfg;
    char name[HF_NAME_MAX];
    TSR_TRY(open_input(path, "a safetensors file", &fd, &size));
    TSR_CHECK(size >= 8, TSR_ERR_FORMAT, "%s: %llu bytes, shorter than the 8-byte header length of a safetensors file",
              path, (unsigned long long)size);
    TSR_TRY(read_at(fd, path, 0, 8, raw));
    hlen = (uint64_t)get_le32(raw) | (uint64_t)get_le32(raw + 4) << 32;
    TSR_CHECK(hlen <= size - 8, TSR_ERR_FORMAT, "%s: the safetensors header length %llu passes the end of the file "
              "(%llu bytes)", path, (unsigned long long)hlen, (unsigned long long)size);
    TSR_CHECK(hlen <= HF_MAX_HEADER, TSR_ERR_FORMAT, "%s: the safetensors header length %llu is over the format's "
              "limit of %llu bytes", path, (unsigned long long)hlen, HF_MAX_HEADER);
    header = malloc((size_t)hlen + 1);
    TSR_CHECK(header, TSR_ERR_OUT_OF_MEMORY, "no memory for a safetensors header of %llu bytes",
              (unsigned long long)hlen);
    TSR_TRY(read_at(fd, path, 8, (size_t)hlen, header));
    json_t j = {path, header, (size_t)hlen, 0};
    TSR_TRY(json_header(&j, &e, &n));
    TSR_TRY(hf_check_offsets(path, e, n, size - 8 - hlen));
    qsort(e, n, sizeof *e, by_entry_name);
    for (size_t i = 0; i + 1 < n; i++)
        TSR_CHECK(strcmp(e[i].name, e[i + 1].name) != 0, TSR_ERR_FORMAT,
                  "%s: tensor %s appears twice (with or without the prefix transformer.)", path, e[i].name);
    TSR_TRY(hf_config(path, e, n, opts, &cfg));
    hf_specs(&cfg, s);
    /* every weight, of its shape, before anything is allocated */
    for (int k = 0; k < NSPEC; k++)
        for (int l = 0; l < (s[k].per_layer ? cfg.layers : 1); l++) {
            snprintf(name, sizeof name, "h.%d.%s", l, s[k].name);
            TSR_TRY(hf_find(path, e, n, s[k].per_layer ? name : s[k].name, &s[k], cfg.layers, &t));
        }
    hf_entry_t *head = NULL;
    for (size_t i = 0; i < n; i++) {
        const char *rest = NULL;
        if (e[i].used || (hf_layer(e[i].name, &rest) >= 0 && hf_mask_buffer(rest)))
            continue;
        TSR_CHECK(strcmp(e[i].name, "lm_head.weight") == 0, TSR_ERR_FORMAT,
                  "%s: unexpected tensor %s (not one of GPT-2's weights)", path, e[i].name);
        TSR_TRY(hf_find(path, e, n, "lm_head.weight", &s[0], cfg.layers, &head));
    }
    uint64_t max = (uint64_t)cfg.vocab * (uint64_t)cfg.dim;
    for (int k = 0; k < NSPEC; k++)
        max = (uint64_t)(s[k].rows * s[k].cols) > max ? (uint64_t)(s[k].rows * s[k].cols) : max;
    TSR_TRY(reading_alloc(&rd, &cfg, max, 4));
    for (int k = 0; k < NSPEC; k++)
        for (int l = 0; l < (s[k].per_layer ? cfg.layers : 1); l++) {
            snprintf(name, sizeof name, "h.%d.%s", l, s[k].name);
            TSR_TRY(hf_find(path, e, n, s[k].per_layer ? name : s[k].name, &s[k], cfg.layers, &t));
            TSR_TRY(read_tensor(fd, path, &rd, &s[k], l, hf_dtypes[t->dtype].e, 8 + hlen + t->begin, t->name));
        }
    if (head) {
        /* tied: the output projection must be the embedding (compared as decoded values) */
        size_t count = (size_t)cfg.vocab * (size_t)cfg.dim;
        TSR_TRY(read_at(fd, path, 8 + hlen + head->begin, (size_t)(head->end - head->begin), rd.bytes));
        decode(hf_dtypes[head->dtype].e, rd.bytes, count, rd.block);
        for (size_t i = 0; i < count; i++)
            TSR_CHECK(memcmp(&rd.block[i], &rd.params[i], sizeof(float)) == 0, TSR_ERR_FORMAT,
                      "%s: lm_head.weight differs from wte.weight (element %zu: %g against %g); Tessera ties the "
                      "output projection to the embedding", path, i, (double)rd.block[i], (double)rd.params[i]);
    }
    *cfg_out = cfg;
    *params = rd.params;
    rd.params = NULL;
cleanup:
    reading_free(&rd);
    free(e);
    free(header);
    if (fd >= 0)
        close(fd);
    return rc;
}

tsr_status_t tsr_gpt_weights_read(tsr_gpt_weights_format_t format, const char *path,
                                  const tsr_gpt_weights_options_t *opts, tsr_gpt_config_t *cfg, float **params)
{
    tsr_gpt_weights_options_t dflt = TSR_GPT_WEIGHTS_OPTIONS_INIT;
    if (!path || !cfg || !params)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "tsr_gpt_weights_read: NULL argument");
    *params = NULL;
    opts = opts ? opts : &dflt;
    if (opts->struct_size != sizeof *opts)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "tsr_gpt_weights_read: options not from TSR_GPT_WEIGHTS_OPTIONS_INIT");
    if (opts->heads < 0)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "%d heads (expected a positive number, or 0: dim / 64)", opts->heads);
    if (format == TSR_GPT_WEIGHTS_LLMC)
        return llmc_read(path, cfg, params);
    if (format == TSR_GPT_WEIGHTS_HF)
        return hf_read(path, opts, cfg, params);
    return TSR_ERROR(TSR_ERR_INVALID_ARG, "unknown weights format %d", (int)format);
}

/* ---------- writing ---------- */

/* A file written under a temporary name beside its path, renamed over it once complete. */
typedef struct output {
    const char *path;
    char *tmp;
    FILE *f;
} output_t;

static tsr_status_t output_open(output_t *o, const char *path)
{
    struct stat st;
    o->path = path;
    if (stat(path, &st) == 0 && !S_ISREG(st.st_mode))
        return TSR_ERROR(TSR_ERR_IO, "%s is %s (expected a file to write)", path, tsr__file_kind(st.st_mode));
    o->tmp = tsr__strdupf("%s.%ld.tmp", path, (long)getpid());
    if (!o->tmp)
        return TSR_ERROR(TSR_ERR_OUT_OF_MEMORY, "no memory for a path");
    o->f = fopen(o->tmp, "wb");
    if (!o->f)
        return TSR_ERROR(TSR_ERR_IO, "%s: %s", o->tmp, strerror(errno));
    return TSR_OK;
}

static tsr_status_t output_write(output_t *o, const void *data, size_t n)
{
    if (n && fwrite(data, 1, n, o->f) != n)
        return TSR_ERROR(TSR_ERR_IO, "%s: %s", o->tmp, strerror(errno));
    return TSR_OK;
}

/* Flush, sync, close and rename; on failure (or rc != TSR_OK) remove the temporary file. */
static tsr_status_t output_close(output_t *o, tsr_status_t rc)
{
    if (rc == TSR_OK && o->f && (fflush(o->f) != 0 || fsync(fileno(o->f)) != 0))
        rc = TSR_ERROR(TSR_ERR_IO, "%s: %s", o->tmp, strerror(errno));
    if (o->f && fclose(o->f) != 0 && rc == TSR_OK)
        rc = TSR_ERROR(TSR_ERR_IO, "%s: %s", o->tmp, strerror(errno));
    o->f = NULL;
    if (rc == TSR_OK && rename(o->tmp, o->path) != 0)
        rc = TSR_ERROR(TSR_ERR_IO, "cannot rename %s to %s: %s", o->tmp, o->path, strerror(errno));
    if (rc != TSR_OK && o->tmp)
        unlink(o->tmp);
    free(o->tmp);
    o->tmp = NULL;
    return rc;
}

/* File tensor s of layer l out of the model, encoded (fp32 or bf16, little-endian) and written. */
static tsr_status_t write_tensor(output_t *o, const spec_t *s, int l, const float *params, const int64_t *off,
                                 int bf16, float *block, unsigned char *bytes)
{
    size_t n = (size_t)(s->rows * s->cols);
    memset(block, 0, n * sizeof *block);
    transfer(s, l, block, (float *)params, off, 0);
    for (size_t i = 0; i < n; i++) {
        uint32_t u;
        if (!bf16) {
            memcpy(&u, &block[i], sizeof u);
            put_le32(bytes + 4 * i, u);
            continue;
        }
        uint16_t h = tsr__bf16_from_f32(block[i]);
        if (!isfinite(tsr__f32_from_bf16(h)))
            return TSR_ERROR(TSR_ERR_INVALID_ARG, "%s: %s's element %zu, %g, is too large for bf16", o->path, s->name,
                             i, (double)block[i]);
        bytes[2 * i] = (unsigned char)h, bytes[2 * i + 1] = (unsigned char)(h >> 8);
    }
    return output_write(o, bytes, n * (bf16 ? 2 : 4));
}

/* Buffers for the largest file tensor of s. */
static tsr_status_t writing_alloc(const spec_t *s, float **block, unsigned char **bytes)
{
    size_t max = 1;
    for (int k = 0; k < NSPEC; k++)
        max = (size_t)(s[k].rows * s[k].cols) > max ? (size_t)(s[k].rows * s[k].cols) : max;
    *block = malloc(max * sizeof **block);
    *bytes = malloc(max * 4);
    return *block && *bytes ? TSR_OK : TSR_ERROR(TSR_ERR_OUT_OF_MEMORY, "no memory for a tensor of %zu values", max);
}

static tsr_status_t llmc_write(output_t *o, const tsr_gpt_weights_options_t *opts, const tsr_gpt_config_t *cfg,
                               const float *params, const int64_t *off)
{
    tsr_status_t rc = TSR_OK;
    float *block = NULL;
    unsigned char *bytes = NULL, header[LLMC_HEADER_BYTES] = {0};
    spec_t s[NSPEC];
    int bf16 = opts->dtype == TSR_DTYPE_BF16;
    int64_t vp = opts->padded_vocab ? opts->padded_vocab : ((int64_t)cfg->vocab + 127) / 128 * 128;
    TSR_CHECK(opts->dtype == TSR_DTYPE_F32 || bf16, TSR_ERR_INVALID_ARG,
              "llm.c model files hold fp32 or bf16 parameters, not %s", tsr_dtype_name(opts->dtype));
    TSR_CHECK(vp >= cfg->vocab && vp <= INT32_MAX, TSR_ERR_INVALID_ARG,
              "a padded vocabulary of %lld rows cannot hold the model's vocabulary of %d", (long long)vp, cfg->vocab);
    int32_t h[8] = {LLMC_MAGIC, bf16 ? 5 : 3, cfg->seq, cfg->vocab, cfg->layers, cfg->heads, cfg->dim, (int32_t)vp};
    for (int i = 0; i < 8; i++)
        put_le32(header + 4 * i, (uint32_t)h[i]);
    TSR_TRY(output_write(o, header, sizeof header));
    llmc_specs(cfg, vp, s);
    TSR_TRY(writing_alloc(s, &block, &bytes));
    for (int k = 0; k < NSPEC; k++)
        for (int l = 0; l < (s[k].per_layer ? cfg->layers : 1); l++)
            TSR_TRY(write_tensor(o, &s[k], l, params, off, bf16, block, bytes));
cleanup:
    free(block);
    free(bytes);
    return rc;
}

/* Append formatted text to a growing string. */
typedef struct text {
    char *s;
    size_t len, cap;
} text_t;

static int text_add(text_t *t, const char *fmt, ...) TSR_PRINTF(2, 3);
static int text_add(text_t *t, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return 0;
    if (t->len + (size_t)n + 1 > t->cap) {
        size_t cap = 2 * (t->len + (size_t)n + 1);
        char *grown = realloc(t->s, cap);
        if (!grown)
            return 0;
        t->s = grown, t->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(t->s + t->len, t->cap - t->len, fmt, ap);
    va_end(ap);
    t->len += (size_t)n;
    return 1;
}

static tsr_status_t hf_write(output_t *o, const tsr_gpt_weights_options_t *opts, const tsr_gpt_config_t *cfg,
                             const float *params, const int64_t *off)
{
    tsr_status_t rc = TSR_OK;
    float *block = NULL;
    unsigned char *bytes = NULL, len[8];
    text_t t = {0};
    spec_t s[NSPEC];
    uint64_t at = 0;
    int ok;
    TSR_CHECK(opts->dtype == TSR_DTYPE_F32, TSR_ERR_INVALID_ARG, "safetensors are written in F32, not %s",
              tsr_dtype_name(opts->dtype));
    TSR_CHECK(opts->padded_vocab == 0, TSR_ERR_INVALID_ARG,
              "a padded vocabulary is llm.c's; a safetensors wte has the vocabulary's rows");
    hf_specs(cfg, s);
    /* the header: tensors in the canonical order, then blanks up to a multiple of 8 bytes */
    ok = text_add(&t, "{\"__metadata__\":{\"format\":\"pt\"}");
    for (int l = -1; l <= cfg->layers; l++)
        for (int k = 0; k < NSPEC && ok; k++) {
            int global = l == -1 ? k < 2 : l == cfg->layers ? k >= 14 : 0;
            if (!(s[k].per_layer ? l >= 0 && l < cfg->layers : global))
                continue;
            uint64_t bytes_of = (uint64_t)(s[k].rows * s[k].cols) * 4;
            ok = s[k].per_layer ? text_add(&t, ",\"h.%d.%s\"", l, s[k].name) : text_add(&t, ",\"%s\"", s[k].name);
            ok = ok && (s[k].vector ? text_add(&t, ":{\"dtype\":\"F32\",\"shape\":[%lld]", (long long)s[k].cols)
                                    : text_add(&t, ":{\"dtype\":\"F32\",\"shape\":[%lld,%lld]", (long long)s[k].rows,
                                               (long long)s[k].cols));
            ok = ok && text_add(&t, ",\"data_offsets\":[%llu,%llu]}", (unsigned long long)at,
                                (unsigned long long)(at + bytes_of));
            at += bytes_of;
        }
    ok = ok && text_add(&t, "}");
    while (ok && (8 + t.len) % 8)
        ok = text_add(&t, " ");
    TSR_CHECK(ok, TSR_ERR_OUT_OF_MEMORY, "no memory for the safetensors header");
    put_le32(len, (uint32_t)t.len);
    put_le32(len + 4, (uint32_t)((uint64_t)t.len >> 32));
    TSR_TRY(output_write(o, len, sizeof len));
    TSR_TRY(output_write(o, t.s, t.len));
    TSR_TRY(writing_alloc(s, &block, &bytes));
    for (int l = -1; l <= cfg->layers; l++)
        for (int k = 0; k < NSPEC; k++) {
            int global = l == -1 ? k < 2 : l == cfg->layers ? k >= 14 : 0;
            if (s[k].per_layer ? l >= 0 && l < cfg->layers : global)
                TSR_TRY(write_tensor(o, &s[k], l < 0 ? 0 : l, params, off, 0, block, bytes));
        }
cleanup:
    free(t.s);
    free(block);
    free(bytes);
    return rc;
}

tsr_status_t tsr_gpt_weights_write(tsr_gpt_weights_format_t format, const char *path,
                                   const tsr_gpt_weights_options_t *opts, const tsr_gpt_config_t *cfg,
                                   const float *params)
{
    tsr_status_t rc = TSR_OK;
    tsr_gpt_weights_options_t dflt = TSR_GPT_WEIGHTS_OPTIONS_INIT;
    output_t o = {0};
    int64_t *off = NULL;
    TSR_CHECK(path && cfg && params, TSR_ERR_INVALID_ARG, "tsr_gpt_weights_write: NULL argument");
    opts = opts ? opts : &dflt;
    TSR_CHECK(opts->struct_size == sizeof *opts, TSR_ERR_INVALID_ARG,
              "tsr_gpt_weights_write: options not from TSR_GPT_WEIGHTS_OPTIONS_INIT");
    TSR_CHECK(format == TSR_GPT_WEIGHTS_LLMC || format == TSR_GPT_WEIGHTS_HF, TSR_ERR_INVALID_ARG,
              "unknown weights format %d", (int)format);
    TSR_TRY(tsr_gpt_config_check(cfg));
    TSR_TRY(tensor_offsets(cfg, &off));
    TSR_TRY(output_open(&o, path));
    if (format == TSR_GPT_WEIGHTS_LLMC)
        rc = llmc_write(&o, opts, cfg, params, off);
    else
        rc = hf_write(&o, opts, cfg, params, off);
cleanup:
    if (o.tmp)
        rc = output_close(&o, rc);
    free(off);
    return rc;
}
