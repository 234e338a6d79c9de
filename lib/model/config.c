/*
 * config.c: the GPT model's shape: presets, "key=value" parsing, checks, parameter count.
 */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_impl.h"

static const char *const recompute_names[] = {[TSR_GPT_RECOMPUTE_NONE] = "none",
                                              [TSR_GPT_RECOMPUTE_ATTENTION] = "attention",
                                              [TSR_GPT_RECOMPUTE_BLOCK] = "block"};

tsr_status_t tsr_gpt_recompute_parse(const char *name, tsr_gpt_recompute_t *out)
{
    for (int c = 0; c < (int)(sizeof recompute_names / sizeof *recompute_names); c++)
        if (name && strcmp(name, recompute_names[c]) == 0) {
            *out = (tsr_gpt_recompute_t)c;
            return TSR_OK;
        }
    return TSR_ERROR(TSR_ERR_INVALID_ARG, "unknown recomputation \"%s\": expected none, attention or block",
                     name ? name : "(null)");
}

const char *tsr_gpt_recompute_name(tsr_gpt_recompute_t recompute)
{
    return (unsigned)recompute < sizeof recompute_names / sizeof *recompute_names ? recompute_names[recompute]
                                                                                    : "unknown";
}

tsr_status_t tsr_gpt_config_check(const tsr_gpt_config_t *cfg)
{
    if (!cfg)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "model configuration is NULL");
    if (cfg->layers < 1 || cfg->dim < 1 || cfg->heads < 1 || cfg->vocab < 1 || cfg->seq < 1)
        return TSR_ERROR(TSR_ERR_INVALID_ARG,
                         "model sizes must be positive: layers=%d, dim=%d, heads=%d, vocab=%d, seq=%d",
                         cfg->layers, cfg->dim, cfg->heads, cfg->vocab, cfg->seq);
    if (cfg->dim % cfg->heads)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "model dim=%d is not a multiple of heads=%d", cfg->dim,
                         cfg->heads);
    if (cfg->vocab > 65536)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "model vocab=%d exceeds the 65536 ids of 16-bit token shards",
                         cfg->vocab);
    return TSR_OK;
}

static tsr_status_t parse_int(const char *key, const char *val, size_t len, int *out)
{
    char buf[32];
    char *end = NULL;
    if (len == 0 || len >= sizeof buf)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "model option %s needs a number", key);
    memcpy(buf, val, len);
    buf[len] = '\0';
    errno = 0;
    long v = strtol(buf, &end, 10);
    if (errno || *end || v < 1 || v > 1 << 30)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "model option %s=%s is not a positive integer", key, buf);
    *out = (int)v;
    return TSR_OK;
}

#define MODEL_EXPECTED "tiny, gpt2-124m or layers=L,dim=H,heads=A,vocab=V,seq=T"

tsr_status_t tsr_gpt_config_parse(const char *text, tsr_gpt_config_t *out)
{
    tsr_gpt_config_t cfg = TSR_GPT_CONFIG_INIT;
    if (!text || !out)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "model text is NULL");
    if (!*text)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "model is empty (expected " MODEL_EXPECTED ")");
    if (strcmp(text, "gpt2-124m") == 0) {
        cfg.layers = 12, cfg.dim = 768, cfg.heads = 12, cfg.vocab = 50257, cfg.seq = 1024;
    } else if (strcmp(text, "tiny") != 0) {
        /* the list rules of tessera/options.h, shared with tsr_layout_parse() */
        static const char *const keys[] = {"layers", "dim", "heads", "vocab", "seq"};
        int *fields[] = {&cfg.layers, &cfg.dim, &cfg.heads, &cfg.vocab, &cfg.seq};
        tsr__kv_t v[5];
        tsr_status_t rc = tsr__kv_split("model", text, keys, 5, v, MODEL_EXPECTED);
        for (int k = 0; k < 5 && rc == TSR_OK; k++)
            if (v[k].value)
                rc = parse_int(keys[k], v[k].value, v[k].len, fields[k]);
        if (rc != TSR_OK)
            return rc;
    }
    tsr_status_t rc = tsr_gpt_config_check(&cfg);
    if (rc == TSR_OK)
        *out = cfg;
    return rc;
}

char *tsr_gpt_config_format(const tsr_gpt_config_t *cfg, char *buf, size_t len)
{
    if (buf && len)
        snprintf(buf, len, "layers=%d,dim=%d,heads=%d,vocab=%d,seq=%d", cfg->layers, cfg->dim, cfg->heads,
                 cfg->vocab, cfg->seq);
    return buf;
}

int64_t tsr_gpt_param_count(const tsr_gpt_config_t *cfg)
{
    int64_t h = cfg->dim;
    int64_t block = 2 * h + 3 * (h * h + h) + (h * h + h) + 2 * h + (h * 4 * h + 4 * h) + (4 * h * h + h);
    return (int64_t)cfg->vocab * h + (int64_t)cfg->seq * h + cfg->layers * block + 2 * h;
}

double tsr_gpt_flops_per_token(const tsr_gpt_config_t *cfg)
{
    return 6.0 * (double)tsr_gpt_param_count(cfg) + 12.0 * cfg->layers * (double)cfg->dim * cfg->seq;
}

/* The side of the GEMM that measures a CPU rank's peak, and how many are timed: at least
 * PEAK_MIN_REPS and PEAK_MIN_SECONDS (a few GEMMs of 10 ms each are at the mercy of one
 * interrupted time slice on a shared node), at most PEAK_MAX_REPS. */
enum { PEAK_N = 1024, PEAK_MIN_REPS = 8, PEAK_MAX_REPS = 64 };
#define PEAK_MIN_SECONDS 0.25

tsr_status_t tsr_gpt_peak_flops(tsr_device_t dev, tsr_precision_t precision, double *flops)
{
    tsr_status_t rc = TSR_OK;
    float *a = NULL, *c = NULL;
    size_t n2 = (size_t)PEAK_N * PEAK_N;
    TSR_CHECK(dev && flops, TSR_ERR_INVALID_ARG, "tsr_gpt_peak_flops: NULL argument");
    *flops = 0;
    if (tsr_device_kind(dev) != TSR_DEVICE_CPU) {
        *flops = precision == TSR_PRECISION_BF16 ? 989.4e12 : 66.9e12;
        return TSR_OK;
    }
    /* host memory (the CPU device's), kept out of the tracked allocator's peaks */
    void *mem = NULL;
    if (posix_memalign(&mem, TSR_DEVICE_ALIGNMENT, 2 * n2 * sizeof *a) == 0)
        a = mem;
    TSR_CHECK(a, TSR_ERR_OUT_OF_MEMORY, "no memory for the %d x %d GEMM that measures the peak", PEAK_N, PEAK_N);
    c = a + n2;
    TSR_TRY(tsr_device_fill_f32(dev, a, 0.5f, n2));
    double best = INFINITY, spent = 0;
    for (int r = 0; r <= PEAK_MAX_REPS && (r <= PEAK_MIN_REPS || spent < PEAK_MIN_SECONDS); r++) {
        double t0 = tsr_time_now(); /* the first is a warm-up */
        TSR_TRY(tsr_device_gemm_f32(dev, TSR_NO_TRANS, TSR_NO_TRANS, PEAK_N, PEAK_N, PEAK_N, 1.0f, a, PEAK_N, a, PEAK_N,
                                    0.0f, c, PEAK_N));
        TSR_TRY(tsr_device_sync(dev));
        double t = tsr_time_now() - t0;
        if (r > 0) {
            spent += t;
            best = t < best ? t : best;
        }
    }
    *flops = 2.0 * PEAK_N * PEAK_N * PEAK_N / (best > 0 ? best : 1e-9);
cleanup:
    free(a);
    return rc;
}

/* The /config attributes of a model, in tsr_gpt_config_t's order. */
static const char *const attr_name[] = {"n_layer", "n_embd", "n_head", "vocab_size", "seq_len"};

static void config_fields(const tsr_gpt_config_t *cfg, int64_t *v)
{
    v[0] = cfg->layers, v[1] = cfg->dim, v[2] = cfg->heads, v[3] = cfg->vocab, v[4] = cfg->seq;
}

tsr_status_t tsr_gpt_config_save(tsr_ckpt_writer_t w, const tsr_gpt_config_t *cfg)
{
    tsr_status_t rc = TSR_OK;
    int64_t v[5];
    char text[TSR_GPT_CONFIG_STRLEN];
    TSR_CHECK(w && cfg, TSR_ERR_INVALID_ARG, "tsr_gpt_config_save: NULL argument");
    config_fields(cfg, v);
    for (int i = 0; i < 5; i++)
        TSR_TRY(tsr_ckpt_set_i64(w, "/config", attr_name[i], v[i]));
    TSR_TRY(tsr_ckpt_set_str(w, "/config", "model", tsr_gpt_config_format(cfg, text, sizeof text)));
cleanup:
    return rc;
}

tsr_status_t tsr_gpt_config_expect(tsr_ckpt_reader_t r, const tsr_gpt_config_t *cfg)
{
    tsr_status_t rc = TSR_OK;
    int64_t want[5], got[5];
    tsr_gpt_config_t theirs = *cfg;
    char a[TSR_GPT_CONFIG_STRLEN], b[TSR_GPT_CONFIG_STRLEN];
    TSR_CHECK(r && cfg, TSR_ERR_INVALID_ARG, "tsr_gpt_config_expect: NULL argument");
    config_fields(cfg, want);
    for (int i = 0; i < 5; i++)
        TSR_TRY(tsr_ckpt_get_i64(r, "/config", attr_name[i], &got[i]));
    theirs.layers = (int)got[0], theirs.dim = (int)got[1], theirs.heads = (int)got[2];
    theirs.vocab = (int)got[3], theirs.seq = (int)got[4];
    TSR_CHECK(memcmp(got, want, sizeof got) == 0, TSR_ERR_MISMATCH,
              "checkpoint was written for a different model: %s (this run: %s)",
              tsr_gpt_config_format(&theirs, a, sizeof a), tsr_gpt_config_format(cfg, b, sizeof b));
cleanup:
    return rc;
}
