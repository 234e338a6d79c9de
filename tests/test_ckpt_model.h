/*
 * test_ckpt_model.h: the model of the checkpoint-state tests (test_ckpt_state.c and
 * test_ckpt_reshard.c): a few tensors split the way tp and pp split a transformer (2D
 * blocks, 1D column and row splits, a tensor replicated over tp, blocks replicated over tp
 * rows and over tp columns, a tied embedding held by the first and the last pipeline
 * stage), and the scratch directory the tests write into. Include after tap.h.
 */
#ifndef TESSERA_TESTS_CKPT_MODEL_H
#define TESSERA_TESTS_CKPT_MODEL_H

#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <tessera.h>

static uint64_t seed;
static tsr_device_t dev;
static char dir[256];

enum split { BLOCK_2D, ROWS_TP, COLS_TP, REPL_TP, REPL_TP_ROW, REPL_TP_COL };

typedef struct spec {
    const char *name;
    long rows, cols;
    int layer; /* 0..NLAYER-1; layer l lives on pipeline stage l * pp / NLAYER */
    enum split split;
    int tied;  /* also held by the last stage (tied embedding) */
} spec_t;

#define NLAYER 4
static const spec_t model_specs[] = {
    {"wte", 11, 6, 0, BLOCK_2D, 1},    {"h0.ln.g", 1, 6, 1, REPL_TP, 0},      {"h0.attn.w", 6, 9, 1, REPL_TP_ROW, 0},
    {"h0.fc.w", 6, 10, 1, COLS_TP, 0}, {"h0.fc.b", 1, 10, 1, REPL_TP_COL, 0}, {"h0.proj.w", 10, 6, 2, ROWS_TP, 0},
    {"h0.fc", 7, 5, 2, BLOCK_2D, 0}, /* a prefix of h0.fc.w's name: datasets match by name, not position */
};
#define NSPEC ((int)(sizeof model_specs / sizeof *model_specs))

static void part(long n, int parts, int idx, long *off, long *len)
{
    *off = n * idx / parts;
    *len = n * (idx + 1) / parts - *off;
}

/* This rank's block of a tensor, or 0 if its pipeline stage does not hold it. */
static int block_of(const spec_t *s, const tsr_layout_t *lay, const tsr_grid_coords_t *c, tsr_zero_tensor_t *t)
{
    int stage = s->layer * lay->pp / NLAYER, last = lay->pp - 1;
    if (stage != c->pp && !(s->tied && c->pp == last))
        return 0;
    int tp = lay->tp_rows * lay->tp_cols;
    *t = (tsr_zero_tensor_t)TSR_ZERO_TENSOR_INIT;
    t->name = s->name;
    t->rows = t->local_rows = s->rows;
    t->cols = t->local_cols = s->cols;
    t->layer = stage != c->pp ? NLAYER - 1 : s->layer;
    switch (s->split) {
    case BLOCK_2D:
        part(s->rows, lay->tp_rows, c->tp_row, &t->row_off, &t->local_rows);
        part(s->cols, lay->tp_cols, c->tp_col, &t->col_off, &t->local_cols);
        break;
    case ROWS_TP: part(s->rows, tp, c->tp, &t->row_off, &t->local_rows); break;
    case COLS_TP: part(s->cols, tp, c->tp, &t->col_off, &t->local_cols); break;
    case REPL_TP: t->flags = TSR_ZERO_REPLICATED_TP | TSR_ZERO_NO_DECAY; break;
    case REPL_TP_ROW:
        part(s->rows, lay->tp_rows, c->tp_row, &t->row_off, &t->local_rows);
        t->flags = TSR_ZERO_REPLICATED_TP_ROW;
        break;
    case REPL_TP_COL:
        part(s->cols, lay->tp_cols, c->tp_col, &t->col_off, &t->local_cols);
        t->flags = TSR_ZERO_REPLICATED_TP_COL;
        break;
    }
    if (s->tied)
        t->flags |= TSR_ZERO_REPLICATED_PP;
    return 1;
}

static long global_index(const tsr_zero_tensor_t *t, size_t i)
{
    long r = t->row_off + (long)i / t->local_cols, c = t->col_off + (long)i % t->local_cols;
    return r * t->cols + c;
}

/* How many kinds of per-element state the optimizer keeps: params, and m, and v. */
static int kinds_of(const tsr_zero_config_t *c)
{
    return c->optim == TSR_OPTIM_ADAMW ? 3 : c->momentum > 0 ? 2 : 1;
}


static void make_dir(const char *prefix)
{
    if (tap_rank() == 0) {
        snprintf(dir, sizeof dir, "%s/%s.XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", prefix);
        if (!mkdtemp(dir))
            dir[0] = '\0';
    }
    MPI_Bcast(dir, sizeof dir, MPI_CHAR, 0, MPI_COMM_WORLD);
    if (!dir[0]) {
        fprintf(stderr, "# cannot create a temporary directory\n");
        MPI_Abort(MPI_COMM_WORLD, 2);
    }
}

static void remove_dir(void)
{
    MPI_Barrier(MPI_COMM_WORLD);
    if (tap_rank() != 0)
        return;
    DIR *d = opendir(dir);
    for (struct dirent *e; d && (e = readdir(d));) {
        char path[600];
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) {
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
    }
    if (d)
        closedir(d);
    rmdir(dir);
}

#endif /* TESSERA_TESTS_CKPT_MODEL_H */
