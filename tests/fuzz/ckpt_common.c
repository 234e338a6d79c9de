/*
 * ckpt_common.c: what the checkpoint fuzz targets share: a tiny GPT on one rank, and the
 * reading of a checkpoint file the ways tsr-ckpt and tsr-train --resume read one.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <tessera.h>

#include "fuzz.h"

static tsr_comm_t self;
static tsr_grid_t grid;
static tsr_gpt_t gpt;
static tsr_gpt_config_t model = TSR_GPT_CONFIG_INIT;
static tsr_zero_config_t zcfg = TSR_ZERO_CONFIG_INIT;

void fuzz_ckpt_setup(int *argc, char ***argv)
{
    tsr_layout_t layout = TSR_LAYOUT_INIT;
    tsr_gpt_options_t opts = TSR_GPT_OPTIONS_INIT;
    tsr_device_t dev = NULL;
    MPI_Init(argc, argv);
    tsr_gpt_config_parse(FUZZ_MODEL, &model);
    opts.batch = 1;
    if (tsr_comm_create(MPI_COMM_SELF, &self) != TSR_OK || tsr_device_create(TSR_DEVICE_CPU, 0, &dev) != TSR_OK ||
        tsr_grid_create(MPI_COMM_SELF, &layout, &grid) != TSR_OK ||
        tsr_gpt_create(grid, dev, &model, &opts, &zcfg, &gpt) != TSR_OK) {
        fprintf(stderr, "fuzz: setup: %s\n", tsr_last_error());
        abort();
    }
}

int fuzz_ckpt_write_base(const char *dir, char *path, size_t len)
{
    tsr_ckpt_writer_t w = NULL;
    int64_t pos = 3;
    tsr_status_t rc = tsr_ckpt_writer_create(self, dir, 3, &w);
    if (rc == TSR_OK)
        rc = tsr_ckpt_save_zero(w, grid, tsr_gpt_optimizer(gpt), &zcfg);
    if (rc == TSR_OK)
        rc = tsr_gpt_config_save(w, &model);
    if (rc == TSR_OK)
        rc = tsr_ckpt_set_i64(w, "/", "tokens_seen", pos);
    if (rc == TSR_OK)
        rc = tsr_ckpt_write_i64(w, "/data/tokens", 1, &pos);
    if (rc != TSR_OK) {
        fprintf(stderr, "fuzz: base checkpoint: %s\n", tsr_last_error());
        tsr_ckpt_abort(&w);
        return 0;
    }
    if (tsr_ckpt_commit(&w, 0) != TSR_OK)
        return 0;
    snprintf(path, len, "%s/step_3.h5", dir);
    return 1;
}

tsr_status_t fuzz_ckpt_seal(const char *path, uint64_t *sum)
{
    tsr_ckpt_reader_t r = NULL;
    uint64_t stored = 0;
    tsr_status_t rc = tsr_ckpt_reader_open(self, path, &r);
    if (rc == TSR_OK)
        rc = tsr_ckpt_metadata_checksum(r, &stored, sum);
    tsr_ckpt_reader_close(&r);
    return rc;
}

static void ignore_attr(const char *name, const char *value, void *ctx)
{
    (void)name, (void)value, (void)ctx;
}

/* Read a dataset whole, as tsr-ckpt diff does (small ones: the file bounds the big). */
static void read_dataset(tsr_ckpt_reader_t r, const tsr_ckpt_dataset_info_t *d)
{
    int64_t n = d->dims[0] * (d->ndim == 2 ? d->dims[1] : 1);
    if (n < 1 || n > (1 << 20))
        return;
    if (d->is_float) {
        float *v = malloc((size_t)n * sizeof *v);
        tsr_ckpt_piece_t p = tsr_ckpt_block(0, d->ndim == 2 ? d->dims[0] : 1, 0, d->ndim == 2 ? d->dims[1] : n);
        if (v)
            tsr_ckpt_read_f32(r, d->name, d->ndim, d->dims, &p, v);
        free(v);
    } else if (strcmp(d->type, "int64") == 0 && d->ndim == 1) {
        int64_t *v = malloc((size_t)n * sizeof *v);
        if (v)
            tsr_ckpt_read_i64(r, d->name, n, v);
        free(v);
    }
}

void fuzz_ckpt_read(const char *path)
{
    tsr_ckpt_reader_t r = NULL;
    tsr_ckpt_dataset_info_t *list = NULL;
    size_t n = 0;
    char text[256];
    int64_t i64;
    double f64;
    if (tsr_ckpt_reader_open(self, path, &r) != TSR_OK)
        return;
    static const char *const groups[] = {"/", "/config", "/layout", "/optim", "/nowhere"};
    for (size_t g = 0; g < sizeof groups / sizeof *groups; g++)
        tsr_ckpt_attrs(r, groups[g], ignore_attr, NULL);
    tsr_ckpt_get_str(r, "/config", "model", text, sizeof text);
    tsr_ckpt_get_i64(r, "/", "step", &i64);
    tsr_ckpt_get_f64(r, "/optim", "loss_scale", &f64);
    tsr_ckpt_get_i64(r, "/", "tokens_seen", &i64);
    if (tsr_ckpt_list(r, &list, &n) == TSR_OK) {
        for (size_t k = 0; k < n; k++)
            read_dataset(r, &list[k]);
    }
    free(list);
    tsr_ckpt_verify(r); /* every dataset, the metadata, the state */
    tsr_gpt_ckpt_verify(r, NULL);
    tsr_gpt_config_expect(r, &model);
    tsr_ckpt_load_zero(r, grid, tsr_gpt_optimizer(gpt), &zcfg);
    tsr_ckpt_read_i64(r, "/data/tokens", 1, &i64);
    tsr_zero_config_t saved;
    tsr_ckpt_get_zero_config(r, &saved);
    tsr_ckpt_reader_close(&r);
    tsr_clear_error();
}
