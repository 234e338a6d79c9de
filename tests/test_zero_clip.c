/*
 * test_zero_clip: the global gradient norm and clipping across dp, pp and tp, the ownership
 * rule behind it (every global element written to a checkpoint by exactly one rank), dynamic
 * loss scaling, the low-precision working copy, the LR schedule and argument errors.
 *
 * Norm cases: a serial parameter set (2D-split blocks, a tensor replicated over tp, tensors
 * replicated over tp rows and over tp columns, a tied tensor on the first and last pipeline
 * stage) is split the way tp and pp would split it, over layouts dp=1 (1 rank), dp=2
 * (2 ranks), and dp=2 with tp=1x2, tp=2x1 or pp=2 (4 ranks), for stages 0-3. Every dp rank
 * writes its own gradient; the global norm of their mean must equal the serial norm within
 * 1e-6, and a clipped SGD step (lr 1) must move each parameter by exactly the clipped mean.
 *
 * Fresh seed per run (printed); TSR_TEST_SEED=N repeats one.
 */
#include <time.h>
#include <tessera.h>

#include "tap.h"

static uint64_t seed;
static tsr_device_t dev;

enum split { BLOCK_2D, REPL_TP, REPL_TP_ROW, REPL_TP_COL, TIED_PP };

typedef struct spec {
    const char *name;
    long rows, cols;
    int layer;
    enum split split;
} spec_t;

static const spec_t specs[] = {
    {"a.w", 6, 5, 0, BLOCK_2D},  {"a.g", 1, 5, 0, REPL_TP}, {"b.w", 7, 4, 1, REPL_TP_ROW},
    {"b.b", 1, 4, 1, REPL_TP_COL}, {"c.w", 3, 9, 2, BLOCK_2D}, {"emb", 5, 3, 3, TIED_PP}, /* split by tp too */
};
#define NSPEC ((int)(sizeof specs / sizeof *specs))

/* Part idx of parts of n: [off, off + len). */
static void part(long n, int parts, int idx, long *off, long *len)
{
    *off = n * idx / parts;
    *len = n * (idx + 1) / parts - *off;
}

/* Does this rank hold tensor k, and which block? */
static int block_of(int k, const tsr_layout_t *lay, const tsr_grid_coords_t *c, tsr_zero_tensor_t *t)
{
    const spec_t *s = &specs[k];
    int stage = s->split == TIED_PP ? -1 : s->layer % lay->pp;
    if (stage >= 0 && stage != c->pp)
        return 0;
    if (stage < 0 && c->pp != 0 && c->pp != lay->pp - 1)
        return 0;
    *t = (tsr_zero_tensor_t)TSR_ZERO_TENSOR_INIT;
    t->name = s->name;
    t->rows = s->rows;
    t->cols = s->cols;
    t->layer = s->layer;
    int split_rows = s->split == BLOCK_2D || s->split == TIED_PP || s->split == REPL_TP_ROW;
    int split_cols = s->split == BLOCK_2D || s->split == TIED_PP || s->split == REPL_TP_COL;
    t->row_off = 0, t->local_rows = s->rows, t->col_off = 0, t->local_cols = s->cols;
    if (split_rows)
        part(s->rows, lay->tp_rows, c->tp_row, &t->row_off, &t->local_rows);
    if (split_cols)
        part(s->cols, lay->tp_cols, c->tp_col, &t->col_off, &t->local_cols);
    t->flags = s->split == REPL_TP       ? TSR_ZERO_REPLICATED_TP | TSR_ZERO_NO_DECAY
               : s->split == REPL_TP_ROW ? TSR_ZERO_REPLICATED_TP_ROW
               : s->split == REPL_TP_COL ? TSR_ZERO_REPLICATED_TP_COL
               : s->split == TIED_PP     ? TSR_ZERO_REPLICATED_PP
                                         : 0;
    return 1;
}

/* Gradient of dp rank d at global element e of tensor k, and initial parameter. */
static float grad_of(int k, int d, long e) { return tsr_rng_uniform(seed, 500 + 16 * (uint64_t)k + (uint64_t)d, (uint64_t)e) - 0.5f; }
static float init_of(int k, long e) { return tsr_rng_uniform(seed, 900 + (uint64_t)k, (uint64_t)e) - 0.5f; }

/* Global linear index of local element i of a block. */
static long global_index(const tsr_zero_tensor_t *t, size_t i)
{
    long r = t->row_off + (long)i / t->local_cols, c = t->col_off + (long)i % t->local_cols;
    return r * t->cols + c;
}

/* The serial mean gradient's norm. */
static double serial_norm(int dp)
{
    double sq = 0;
    for (int k = 0; k < NSPEC; k++)
        for (long e = 0; e < specs[k].rows * specs[k].cols; e++) {
            double g = 0;
            for (int d = 0; d < dp; d++)
                g += grad_of(k, d, e);
            g /= dp;
            sq += g * g;
        }
    return sqrt(sq);
}

typedef struct held {
    int id[NSPEC]; /* registered id, -1 if not held */
    tsr_zero_tensor_t t[NSPEC];
} held_t;

static tsr_status_t build(tsr_grid_t grid, const tsr_zero_config_t *cfg, held_t *h, tsr_zero_t *z)
{
    tsr_layout_t lay;
    tsr_grid_coords_t c;
    tsr_grid_layout(grid, &lay);
    tsr_grid_coords(grid, &c);
    tsr_status_t st = tsr_zero_create(grid, dev, cfg, z);
    for (int k = 0; k < NSPEC && st == TSR_OK; k++) {
        h->id[k] = -1;
        if (block_of(k, &lay, &c, &h->t[k]))
            st = tsr_zero_register(*z, &h->t[k], &h->id[k]);
    }
    if (st == TSR_OK)
        st = tsr_zero_commit(*z);
    for (int k = 0; k < NSPEC && st == TSR_OK; k++) {
        tsr_zero_piece_t pc;
        if (h->id[k] < 0 || (st = tsr_zero_piece(*z, h->id[k], TSR_ZERO_PARAM, &pc)) != TSR_OK)
            continue;
        for (size_t i = pc.begin; i < pc.end; i++)
            pc.data[i - pc.begin] = init_of(k, global_index(&h->t[k], i));
    }
    return st == TSR_OK ? tsr_zero_sync_params(*z) : st;
}

/* Fill this dp rank's gradient of every held tensor, layer by layer, times scale. */
static tsr_status_t fill_grads(tsr_zero_t z, const held_t *h, int d, float scale)
{
    tsr_status_t st = TSR_OK;
    for (int layer = 0; layer < 4 && st == TSR_OK; layer++) {
        int any = 0;
        for (int k = 0; k < NSPEC; k++)
            any |= h->id[k] >= 0 && specs[k].layer == layer;
        if (!any)
            continue;
        st = tsr_zero_grad_begin(z, layer);
        for (int k = 0; k < NSPEC && st == TSR_OK; k++) {
            float *g = NULL;
            if (h->id[k] < 0 || specs[k].layer != layer || (st = tsr_zero_view(z, h->id[k], NULL, &g)) != TSR_OK)
                continue;
            size_t n = (size_t)(h->t[k].local_rows * h->t[k].local_cols);
            for (size_t i = 0; i < n; i++)
                g[i] = scale * grad_of(k, d, global_index(&h->t[k], i));
        }
        if (st == TSR_OK)
            st = tsr_zero_grad_ready(z, layer);
    }
    return st;
}

/* Every global parameter element is in exactly one rank's write range. */
static int writes_tile(tsr_zero_t z, const held_t *h)
{
    long total = 0, off[NSPEC];
    for (int k = 0; k < NSPEC; k++) {
        off[k] = total;
        total += specs[k].rows * specs[k].cols;
    }
    int *count = calloc((size_t)total, sizeof *count);
    for (int k = 0; k < NSPEC; k++) {
        tsr_zero_piece_t pc;
        if (h->id[k] < 0 || tsr_zero_piece(z, h->id[k], TSR_ZERO_PARAM, &pc) != TSR_OK)
            continue;
        for (size_t i = pc.write_begin; i < pc.write_end; i++)
            count[off[k] + global_index(&h->t[k], i)]++;
    }
    MPI_Allreduce(MPI_IN_PLACE, count, (int)total, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    int good = 1;
    for (long e = 0; e < total; e++)
        good &= count[e] == 1;
    free(count);
    return good;
}

/* Normwise error of held master parameters against p0 - coef * mean gradient:
 * max |got - want| / max |want|, so that values near zero are not judged by their own size. */
static double update_error(tsr_zero_t z, const held_t *h, int dp, double coef)
{
    double err = 0, scale = 0;
    for (int k = 0; k < NSPEC; k++) {
        tsr_zero_piece_t pc;
        if (h->id[k] < 0 || tsr_zero_piece(z, h->id[k], TSR_ZERO_PARAM, &pc) != TSR_OK)
            continue;
        for (size_t i = pc.begin; i < pc.end; i++) {
            long e = global_index(&h->t[k], i);
            double g = 0;
            for (int d = 0; d < dp; d++)
                g += grad_of(k, d, e);
            double want = init_of(k, e) - coef * g / dp, abs_err = fabs(pc.data[i - pc.begin] - want);
            scale = fmax(scale, fabs(want));
            if (!(abs_err <= err))
                err = abs_err;
        }
    }
    return scale > 0 ? err / scale : err;
}

static void norm_case(const tsr_layout_t *lay)
{
    char text[TSR_LAYOUT_STRLEN];
    tsr_layout_format(lay, text, sizeof text);
    tsr_grid_t grid = NULL;
    if (tsr_grid_create(MPI_COMM_WORLD, lay, &grid) != TSR_OK) {
        ok(0, "%s: grid (%s)", text, tsr_last_error());
        return;
    }
    tsr_grid_coords_t c;
    tsr_grid_coords(grid, &c);
    double want = serial_norm(lay->dp);
    for (int stage = 0; stage <= 3; stage++) {
        tsr_zero_config_t cfg = TSR_ZERO_CONFIG_INIT;
        cfg.stage = stage;
        cfg.optim = TSR_OPTIM_SGD;
        cfg.lr = 1.0f;
        cfg.clip_norm = (float)(0.5 * want);
        held_t h;
        tsr_zero_t z = NULL;
        tsr_zero_step_info_t info = {0};
        tsr_status_t st = build(grid, &cfg, &h, &z);
        if (st == TSR_OK)
            st = fill_grads(z, &h, c.dp, 1.0f);
        if (st == TSR_OK)
            st = tsr_zero_step(z, &info);
        if (st != TSR_OK)
            fprintf(stderr, "#   [rank %d] %s stage %d: %s\n", tap_rank(), text, stage, tsr_last_error());
        is_rel(info.grad_norm, want, 1e-6, "%s stage %d: global norm %.9g equals the serial norm", text, stage, want);
        double coef = cfg.clip_norm / (want + 1e-6), err = st == TSR_OK ? update_error(z, &h, lay->dp, coef) : INFINITY;
        ok(err <= 1e-6, "%s stage %d: clipped update equals the serial one (rel err %.2g)", text, stage, err);
        ok(st == TSR_OK && writes_tile(z, &h), "%s stage %d: checkpoint write ranges cover each element once", text,
           stage);
        tsr_zero_destroy(&z);
    }
    tsr_grid_destroy(&grid);
}

/* ---- single-layout checks on a dp = world grid ---- */

static void check_rounding(void)
{
    float b[] = {1.00390625f, 1.01171875f, -2.0f, 3.0e38f};
    tsr_zero_round(TSR_PRECISION_BF16, b, 4);
    ok(b[0] == 1.0f && b[1] == 1.015625f && b[2] == -2.0f && isfinite(b[3]),
       "bf16 rounding: ties to even (%g, %g)", (double)b[0], (double)b[1]);
    float h[] = {1.00048828125f, 65519.0f, 65520.0f, 1e-8f, 3e-8f, -0.1f};
    tsr_zero_round(TSR_PRECISION_FP16, h, 6);
    ok(h[0] == 1.0f && h[1] == 65504.0f && isinf(h[2]) && h[3] == 0.0f && h[4] == 5.9604644775390625e-08f &&
           h[5] == -0.0999755859375f,
       "fp16 rounding: ties to even, overflow to inf, subnormals (%g %g %g %g %g %g)", (double)h[0], (double)h[1],
       (double)h[2], (double)h[3], (double)h[4], (double)h[5]);
}

static void check_schedule(void)
{
    tsr_zero_config_t c = TSR_ZERO_CONFIG_INIT;
    c.lr = 1.0f;
    ok(tsr_zero_lr_at(&c, 7) == 1.0f, "constant schedule");
    c.schedule = TSR_LR_WARMUP_COSINE;
    c.warmup_steps = 4;
    c.total_steps = 12;
    c.min_lr = 0.1f;
    double mid = 0.1 + 0.9 * 0.5 * (1 + cos(3.14159265358979323846 * 0.5));
    ok(fabs(tsr_zero_lr_at(&c, 1) - 0.25) < 1e-7 && fabs(tsr_zero_lr_at(&c, 4) - 1.0) < 1e-7 &&
           fabs(tsr_zero_lr_at(&c, 8) - mid) < 1e-6 && fabs(tsr_zero_lr_at(&c, 12) - 0.1) < 1e-6 &&
           fabs(tsr_zero_lr_at(&c, 40) - 0.1) < 1e-6,
       "warmup-cosine schedule: %g %g %g %g", (double)tsr_zero_lr_at(&c, 1), (double)tsr_zero_lr_at(&c, 4),
       (double)tsr_zero_lr_at(&c, 8), (double)tsr_zero_lr_at(&c, 12));
    c.schedule = TSR_LR_WARMUP_LINEAR;
    ok(fabs(tsr_zero_lr_at(&c, 2) - 0.5) < 1e-7 && fabs(tsr_zero_lr_at(&c, 8) - 0.55) < 1e-6 &&
           fabs(tsr_zero_lr_at(&c, 12) - 0.1) < 1e-6 && fabs(tsr_zero_lr_at(&c, 13) - 0.1) < 1e-6,
       "warmup-linear schedule: %g %g %g", (double)tsr_zero_lr_at(&c, 2), (double)tsr_zero_lr_at(&c, 8),
       (double)tsr_zero_lr_at(&c, 12));
    c.schedule = TSR_LR_CONSTANT;
    ok(fabs(tsr_zero_lr_at(&c, 3) - 0.75) < 1e-7 && tsr_zero_lr_at(&c, 5) == 1.0f && tsr_zero_lr_at(&c, 99) == 1.0f,
       "constant schedule with warmup: %g %g", (double)tsr_zero_lr_at(&c, 3), (double)tsr_zero_lr_at(&c, 5));
}

/* The working copy is the bf16 rounding of the fp32 master, before and after a step. */
static void check_mixed(tsr_grid_t grid)
{
    tsr_zero_config_t cfg = TSR_ZERO_CONFIG_INIT;
    cfg.stage = 1;
    cfg.precision = TSR_PRECISION_BF16;
    held_t h;
    tsr_zero_t z = NULL;
    tsr_grid_coords_t c;
    tsr_grid_coords(grid, &c);
    tsr_status_t st = build(grid, &cfg, &h, &z);
    for (int round = 0; round < 2; round++) {
        if (round == 1 && st == TSR_OK && (st = fill_grads(z, &h, c.dp, 1.0f)) == TSR_OK)
            st = tsr_zero_step(z, NULL);
        int good = st == TSR_OK, differs = 0;
        for (int k = 0; k < NSPEC && good; k++) {
            tsr_zero_piece_t pc;
            float *w = NULL;
            good = tsr_zero_piece(z, h.id[k], TSR_ZERO_PARAM, &pc) == TSR_OK &&
                   tsr_zero_view(z, h.id[k], &w, NULL) == TSR_OK;
            for (size_t i = pc.begin; good && i < pc.end; i++) {
                float r = pc.data[i - pc.begin];
                tsr_zero_round(TSR_PRECISION_BF16, &r, 1);
                good = w[i] == r;
                differs |= w[i] != pc.data[i - pc.begin];
            }
        }
        MPI_Allreduce(MPI_IN_PLACE, &differs, 1, MPI_INT, MPI_LOR, MPI_COMM_WORLD);
        ok(good && differs, "bf16 stage 1 %s: working copy = bf16(master), master keeps fp32 bits",
           round ? "after a step" : "after init");
    }
    tsr_zero_destroy(&z);
}

/* Overflow skips the step and halves the scale; a window of clean steps doubles it. */
static void check_loss_scale(tsr_grid_t grid)
{
    tsr_zero_config_t cfg = TSR_ZERO_CONFIG_INIT;
    cfg.stage = 2;
    cfg.optim = TSR_OPTIM_SGD;
    cfg.lr = 1.0f;
    cfg.dynamic_loss_scale = 1;
    cfg.loss_scale = 1024.0f;
    cfg.loss_scale_window = 2;
    tsr_layout_t lay;
    tsr_grid_layout(grid, &lay);
    tsr_grid_coords_t c;
    tsr_grid_coords(grid, &c);
    held_t h;
    tsr_zero_t z = NULL;
    tsr_zero_step_info_t i1 = {0}, i2 = {0}, i3 = {0};
    tsr_status_t st = build(grid, &cfg, &h, &z);
    if (st == TSR_OK)
        st = fill_grads(z, &h, c.dp, tsr_zero_loss_scale(z));
    if (st == TSR_OK)
        st = tsr_zero_step(z, &i1);
    double err = st == TSR_OK ? update_error(z, &h, lay.dp, 1.0) : INFINITY;
    ok(st == TSR_OK && !i1.skipped && err <= 1e-6 && fabs(i1.grad_norm - serial_norm(lay.dp)) <= 1e-6 * i1.grad_norm,
       "scaled gradients are unscaled: update rel err %.2g, norm %g", err, i1.grad_norm);
    if (st == TSR_OK && (st = fill_grads(z, &h, c.dp, tsr_zero_loss_scale(z))) == TSR_OK)
        st = tsr_zero_step(z, &i2);
    ok(st == TSR_OK && !i2.skipped, "a clean second step is not skipped");
    err = st == TSR_OK ? update_error(z, &h, lay.dp, 2.0) : INFINITY;
    ok(err <= 1e-6 && i2.loss_scale == 2048.0f, "after %d clean steps the scale doubles to %g (update err %.2g)",
       cfg.loss_scale_window, (double)i2.loss_scale, err);
    tsr_zero_state_t before;
    tsr_zero_get_state(z, &before);
    /* Overflow: rank 0's gradient of layer 0 gets an infinity. */
    if (st == TSR_OK && (st = tsr_zero_grad_begin(z, 0)) == TSR_OK) {
        float *g = NULL;
        tsr_zero_view(z, h.id[0], NULL, &g);
        if (tap_rank() == 0 && g)
            g[0] = INFINITY;
        st = tsr_zero_step(z, &i3);
    }
    tsr_zero_state_t after;
    tsr_zero_get_state(z, &after);
    err = st == TSR_OK ? update_error(z, &h, lay.dp, 2.0) : INFINITY;
    ok(st == TSR_OK && i3.skipped && !isfinite(i3.grad_norm) && i3.loss_scale == 1024.0f && after.step == before.step &&
           err <= 1e-6,
       "overflow on one rank: step skipped everywhere, scale halved to %g, parameters untouched", (double)i3.loss_scale);
    tsr_zero_state_t set = {7, 64.0f, 1}, got;
    ok(tsr_zero_set_state(z, &set) == TSR_OK && (tsr_zero_get_state(z, &got), got.step == 7 && got.loss_scale == 64.0f),
       "optimizer state set and read back");
    tsr_zero_destroy(&z);
}

static void check_errors(tsr_grid_t grid)
{
    tsr_zero_config_t cfg = TSR_ZERO_CONFIG_INIT;
    tsr_zero_t z = NULL;
    cfg.stage = 4;
    ok(tsr_zero_create(grid, dev, &cfg, &z) == TSR_ERR_INVALID_ARG && strstr(tsr_last_error(), "0..3"),
       "stage 4 rejected: %s", tsr_last_error());
    cfg.stage = 0;
    cfg.optim = TSR_OPTIM_SGD;
    held_t h;
    tsr_status_t st = build(grid, &cfg, &h, &z);
    tsr_zero_tensor_t t = h.t[0];
    t.name = "late";
    ok(st == TSR_OK && tsr_zero_register(z, &t, NULL) == TSR_ERR_INVALID_ARG, "register after commit rejected");
    tsr_zero_piece_t pc;
    ok(tsr_zero_piece(z, h.id[0], TSR_ZERO_V, &pc) == TSR_ERR_INVALID_ARG, "SGD keeps no v: %s", tsr_last_error());
    ok(tsr_zero_gather(z, 99) == TSR_ERR_INVALID_ARG, "unknown layer rejected: %s", tsr_last_error());
    tsr_zero_destroy(&z);
    tsr_zero_tensor_t bad = TSR_ZERO_TENSOR_INIT;
    bad.name = "x";
    bad.rows = bad.cols = 4;
    bad.local_rows = bad.local_cols = 3;
    bad.row_off = 2;
    tsr_zero_create(grid, dev, &cfg, &z);
    ok(tsr_zero_register(z, &bad, NULL) == TSR_ERR_INVALID_ARG, "block outside its tensor rejected: %s",
       tsr_last_error());
    tsr_zero_destroy(&z);
    tsr_zero_destroy(&z);
    ok(z == NULL, "destroy NULLs the handle and accepts NULL");
}

/* Names survive the registry growing: a model registers far more than its first allocation. */
static void check_many_names(tsr_grid_t grid)
{
    tsr_zero_config_t cfg = TSR_ZERO_CONFIG_INIT;
    tsr_zero_t z = NULL;
    enum { MANY = 40 };
    int good = tsr_zero_create(grid, dev, &cfg, &z) == TSR_OK;
    for (int i = 0; i < MANY && good; i++) {
        char name[32];
        snprintf(name, sizeof name, "tensor%02d", i);
        tsr_zero_tensor_t t = TSR_ZERO_TENSOR_INIT;
        t.name = name;
        t.rows = t.local_rows = 1;
        t.cols = t.local_cols = 3;
        t.layer = i;
        t.flags = TSR_ZERO_REPLICATED_TP | TSR_ZERO_REPLICATED_PP;
        good = tsr_zero_register(z, &t, NULL) == TSR_OK;
    }
    /* Reuse whatever the registry freed as it grew, so a name pointing there reads garbage. */
    enum { FILLERS = 64 };
    void *filler[FILLERS];
    for (int i = 0; i < FILLERS; i++)
        if ((filler[i] = malloc((size_t)(i + 1) * 256)))
            memset(filler[i], 'X', (size_t)(i + 1) * 256);
    for (int i = 0; i < MANY && good; i++) {
        char name[32];
        tsr_zero_tensor_t d;
        snprintf(name, sizeof name, "tensor%02d", i);
        good = tsr_zero_tensor_desc(z, i, &d) == TSR_OK && d.name && strcmp(d.name, name) == 0;
    }
    for (int i = 0; i < FILLERS; i++)
        free(filler[i]);
    ok(good, "the names of %d registered tensors read back after the registry grew", MANY);
    tsr_zero_destroy(&z);
}

int main(int argc, char **argv)
{
    tap_init(&argc, &argv, "1 2 4");
    seed = tap_seed();
    if (tsr_device_create(TSR_DEVICE_CPU, 0, &dev) != TSR_OK)
        MPI_Abort(MPI_COMM_WORLD, 2);
    int n = tap_size();
    tsr_layout_t lay = TSR_LAYOUT_INIT;
    if (n <= 2) {
        lay.dp = n;
        norm_case(&lay);
    } else {
        const char *layouts[] = {"dp=2,tp=1x2", "dp=2,tp=2x1", "dp=2,pp=2"};
        for (int i = 0; i < 3; i++) {
            tsr_layout_parse(layouts[i], &lay);
            norm_case(&lay);
        }
    }
    check_rounding();
    check_schedule();
    tsr_grid_t grid = NULL;
    lay = (tsr_layout_t)TSR_LAYOUT_INIT;
    lay.dp = n;
    if (tsr_grid_create(MPI_COMM_WORLD, &lay, &grid) != TSR_OK)
        MPI_Abort(MPI_COMM_WORLD, 2);
    check_mixed(grid);
    check_loss_scale(grid);
    check_errors(grid);
    check_many_names(grid);
    tsr_grid_destroy(&grid);
    tsr_device_destroy(&dev);
    return tap_done();
}
