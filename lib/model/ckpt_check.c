/*
 * ckpt_check.c: what a checkpoint of a GPT must hold, derived from its own /config: the
 * model's tensors (the names and global shapes gpt.c registers) and a valid configuration.
 * tsr-ckpt verify uses it, so that a file that cannot be resumed does not "verify". Also the
 * one way a model is saved (tsr-train, tsr-ckpt import) and its parameters read back whole
 * (tsr-ckpt export).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model_impl.h"

/* A transformer block's parameters, in gpt.c's registration order (enum LN1G ... B2). */
static const char *const block_param[NBLOCK] = {"ln_1.w", "ln_1.b", "attn.q.w", "attn.q.b", "attn.k.w",
                                                "attn.k.b", "attn.v.w", "attn.v.b", "attn.proj.w",
                                                "attn.proj.b", "ln_2.w", "ln_2.b", "mlp.fc.w",
                                                "mlp.fc.b", "mlp.proj.w", "mlp.proj.b"};

int tsr_gpt_tensor_count(const tsr_gpt_config_t *cfg)
{
    return 4 + NBLOCK * cfg->layers;
}

/* Global shape of block parameter p of a model of width h. */
static void block_shape(int p, int64_t h, int64_t *rows, int64_t *cols)
{
    switch (p) {
    case WQ: case WK: case WV: case WO: *rows = h, *cols = h; break;
    case W1: *rows = h, *cols = 4 * h; break;
    case B1: *rows = 1, *cols = 4 * h; break;
    case W2: *rows = 4 * h, *cols = h; break;
    default: *rows = 1, *cols = h; break; /* layernorm vectors, the other biases */
    }
}

tsr_status_t tsr_gpt_tensor_info(const tsr_gpt_config_t *cfg, int i, char *name, size_t len, int64_t *rows,
                                 int64_t *cols)
{
    int n = tsr_gpt_tensor_count(cfg), L = cfg->layers;
    int64_t h = cfg->dim;
    if (i < 0 || i >= n)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "tensor %d of a model of %d tensors", i, n);
    if (i == 0) {
        snprintf(name, len, "wte");
        *rows = cfg->vocab, *cols = h;
    } else if (i == 1) {
        snprintf(name, len, "wpe");
        *rows = cfg->seq, *cols = h;
    } else if (i < 2 + NBLOCK * L) {
        int l = (i - 2) / NBLOCK, p = (i - 2) % NBLOCK;
        snprintf(name, len, "h%d.%s", l, block_param[p]);
        block_shape(p, h, rows, cols);
    } else {
        snprintf(name, len, i == n - 2 ? "ln_f.w" : "ln_f.b");
        *rows = 1, *cols = h;
    }
    return TSR_OK;
}

/* The /config attributes of a model, in tsr_gpt_config_t's order (as config.c writes them). */
static const char *const config_attr[] = {"n_layer", "n_embd", "n_head", "vocab_size", "seq_len"};

tsr_status_t tsr_gpt_config_load(tsr_ckpt_reader_t r, tsr_gpt_config_t *out)
{
    tsr_status_t rc = TSR_OK;
    tsr_gpt_config_t cfg = TSR_GPT_CONFIG_INIT;
    int *field[] = {&cfg.layers, &cfg.dim, &cfg.heads, &cfg.vocab, &cfg.seq};
    char text[TSR_GPT_CONFIG_STRLEN], model[256];
    for (int k = 0; k < 5; k++) {
        int64_t v;
        TSR_TRY(tsr_ckpt_get_i64(r, "/config", config_attr[k], &v));
        TSR_CHECK(v >= 1 && v <= 1 << 30, TSR_ERR_FORMAT, "checkpoint /config %s is %lld (expected 1 to 2^30)",
                  config_attr[k], (long long)v);
        *field[k] = (int)v;
    }
    if (tsr_gpt_config_check(&cfg) != TSR_OK) {
        char why[512];
        snprintf(why, sizeof why, "%s", tsr_last_error());
        TSR_CHECK(0, TSR_ERR_FORMAT, "checkpoint /config is not a valid model: %s", why);
    }
    TSR_TRY(tsr_ckpt_get_str(r, "/config", "model", model, sizeof model));
    tsr_gpt_config_format(&cfg, text, sizeof text);
    TSR_CHECK(strcmp(model, text) == 0, TSR_ERR_FORMAT,
              "checkpoint /config model is \"%s\", but its n_layer, n_embd, ... say %s", model, text);
    *out = cfg;
cleanup:
    return rc;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const tsr_ckpt_dataset_info_t *)a)->name, ((const tsr_ckpt_dataset_info_t *)b)->name);
}

tsr_status_t tsr_gpt_ckpt_verify(tsr_ckpt_reader_t r, tsr_gpt_config_t *cfg_out)
{
    tsr_status_t rc = TSR_OK;
    tsr_ckpt_dataset_info_t *info = NULL, key;
    size_t n = 0;
    tsr_gpt_config_t cfg;
    char name[TSR_ZERO_NAME_MAX];
    int64_t rows, cols;
    TSR_TRY(tsr_gpt_config_load(r, &cfg));
    TSR_TRY(tsr_ckpt_list(r, &info, &n));
    int params = 0;
    for (size_t k = 0; k < n; k++)
        params += strncmp(info[k].name, "/params/", 8) == 0;
    for (int i = 0; i < tsr_gpt_tensor_count(&cfg); i++) {
        TSR_TRY(tsr_gpt_tensor_info(&cfg, i, name, sizeof name, &rows, &cols));
        snprintf(key.name, sizeof key.name, "/params/%s", name);
        const tsr_ckpt_dataset_info_t *d = n > 0 ? bsearch(&key, info, n, sizeof *info, by_name) : NULL;
        /* A vector (1 x n) is a 1-D dataset of n (tsr_ckpt_save_zero). */
        int ndim = rows == 1 ? 1 : 2;
        int64_t d0 = rows == 1 ? cols : rows, d1 = rows == 1 ? 0 : cols;
        TSR_CHECK(d, TSR_ERR_FORMAT, "the checkpoint has no dataset %s, which its model (%s) needs", key.name,
                  tsr_gpt_config_format(&cfg, name, sizeof name));
        const int64_t want[2] = {d0, d1};
        char got_text[48], want_text[48];
        TSR_CHECK(d->is_float && d->ndim == ndim && d->dims[0] == d0 && d->dims[1] == d1, TSR_ERR_FORMAT,
                  "checkpoint dataset %s is %s %s, its model needs float32 %s", key.name, d->type,
                  tsr_ckpt_format_shape(d->ndim, d->dims, got_text, sizeof got_text),
                  tsr_ckpt_format_shape(ndim, want, want_text, sizeof want_text));
    }
    TSR_CHECK(params == tsr_gpt_tensor_count(&cfg), TSR_ERR_FORMAT,
              "the checkpoint has %d datasets under /params, its model has %d tensors", params,
              tsr_gpt_tensor_count(&cfg));
    if (cfg_out)
        *cfg_out = cfg;
cleanup:
    free(info);
    return rc;
}

tsr_status_t tsr_gpt_ckpt_save(tsr_ckpt_writer_t w, tsr_grid_t grid, tsr_zero_t opt, const tsr_zero_config_t *zcfg,
                               const tsr_gpt_config_t *cfg, const tsr_gpt_options_t *opts, int64_t tokens_seen)
{
    tsr_status_t rc = TSR_OK;
    TSR_CHECK(w && grid && opt && zcfg && cfg && opts, TSR_ERR_INVALID_ARG, "tsr_gpt_ckpt_save: NULL argument");
    TSR_TRY(tsr_ckpt_save_zero(w, grid, opt, zcfg));
    TSR_TRY(tsr_gpt_config_save(w, cfg));
    TSR_TRY(tsr_ckpt_set_i64(w, "/layout", "batch", opts->batch));
    TSR_TRY(tsr_ckpt_set_i64(w, "/layout", "micro_batches", opts->micro_batches));
    TSR_TRY(tsr_ckpt_set_i64(w, "/", "tokens_seen", tokens_seen));
    TSR_TRY(tsr_ckpt_set_i64(w, "/", "seed", (int64_t)opts->seed));
    TSR_TRY(tsr_ckpt_write_i64(w, "/data/tokens", 1, &tokens_seen));
cleanup:
    return rc;
}

tsr_status_t tsr_gpt_ckpt_read_params(tsr_ckpt_reader_t r, tsr_gpt_config_t *cfg_out, float **params)
{
    tsr_status_t rc = TSR_OK;
    tsr_ckpt_dataset_info_t *info = NULL, key;
    size_t n = 0;
    tsr_gpt_config_t cfg;
    float *p = NULL;
    char name[TSR_ZERO_NAME_MAX];
    int64_t rows, cols, off = 0;
    TSR_CHECK(r && cfg_out && params, TSR_ERR_INVALID_ARG, "tsr_gpt_ckpt_read_params: NULL argument");
    *params = NULL;
    TSR_TRY(tsr_ckpt_verify_metadata(r));
    TSR_TRY(tsr_gpt_ckpt_verify(r, &cfg)); /* every dataset of its model, of its shape: the sizes below */
    TSR_TRY(tsr_ckpt_list(r, &info, &n));
    p = malloc((size_t)tsr_gpt_param_count(&cfg) * sizeof *p);
    TSR_CHECK(p, TSR_ERR_OUT_OF_MEMORY, "no memory for the %lld parameters of the checkpoint's model",
              (long long)tsr_gpt_param_count(&cfg));
    for (int i = 0; i < tsr_gpt_tensor_count(&cfg); i++) {
        TSR_TRY(tsr_gpt_tensor_info(&cfg, i, name, sizeof name, &rows, &cols));
        snprintf(key.name, sizeof key.name, "/params/%s", name);
        const tsr_ckpt_dataset_info_t *d = bsearch(&key, info, n, sizeof *info, by_name);
        TSR_CHECK(d, TSR_ERR_FORMAT, "the checkpoint has no dataset %s", key.name);
        tsr_ckpt_piece_t all = tsr_ckpt_block(0, d->ndim == 2 ? rows : 1, 0, d->ndim == 2 ? cols : rows * cols);
        TSR_TRY(tsr_ckpt_read_f32(r, key.name, d->ndim, d->dims, &all, p + off));
        /* the checksum and the values, as tsr_ckpt_verify_dataset() checks them, on what was read */
        uint64_t sum = tsr_ckpt_checksum(0, (size_t)(rows * cols), p + off);
        TSR_CHECK(d->has_checksum && sum == d->checksum, TSR_ERR_CORRUPT,
                  "checkpoint dataset %s fails its checksum (stored %016llx, computed %016llx)", key.name,
                  (unsigned long long)d->checksum, (unsigned long long)sum);
        for (int64_t k = 0; k < rows * cols; k++)
            TSR_CHECK(isfinite(p[off + k]), TSR_ERR_CORRUPT, "checkpoint dataset %s holds %g at element %lld "
                      "(expected finite values)", key.name, (double)p[off + k], (long long)k);
        off += rows * cols;
    }
    *cfg_out = cfg;
    *params = p;
    p = NULL;
cleanup:
    free(p);
    free(info);
    return rc;
}

tsr_status_t tsr_gpt_ckpt_config(const char *path, tsr_gpt_config_t *cfg)
{
    tsr_ckpt_reader_t r = NULL;
    tsr_comm_t self = NULL;
    tsr_status_t rc = TSR_OK;
    TSR_CHECK(path && cfg, TSR_ERR_INVALID_ARG, "tsr_gpt_ckpt_config: NULL argument");
    TSR_TRY(tsr_comm_create(MPI_COMM_SELF, &self));
    TSR_TRY(tsr_ckpt_reader_open(self, path, &r));
    TSR_TRY(tsr_ckpt_verify_metadata(r));
    TSR_TRY(tsr_gpt_config_load(r, cfg));
cleanup:
    tsr_ckpt_reader_close(&r);
    tsr_comm_destroy(&self);
    return rc;
}

tsr_status_t tsr_gpt_ckpt_load(tsr_gpt_t gpt, const tsr_zero_config_t *zcfg, const char *path)
{
    tsr_ckpt_reader_t r = NULL;
    tsr_status_t rc = TSR_OK;
    TSR_CHECK(gpt && zcfg && path, TSR_ERR_INVALID_ARG, "tsr_gpt_ckpt_load: NULL argument");
    TSR_TRY(tsr_ckpt_reader_open(tsr_grid_comm(gpt->grid, TSR_AXIS_WORLD), path, &r));
    TSR_TRY(tsr_ckpt_load_zero(r, gpt->grid, gpt->zero, zcfg));
cleanup:
    tsr_ckpt_reader_close(&r);
    return rc;
}
