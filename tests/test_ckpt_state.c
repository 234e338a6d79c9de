/*
 * test_ckpt_state: tsr_ckpt_save_zero / tsr_ckpt_load_zero round trips at one layout, and
 * their failure paths.
 *
 * The model is split the way tp and pp split a transformer: 2D blocks, 1D column and row
 * splits, a tensor replicated over tp, blocks replicated over tp rows and over tp columns,
 * and a tied embedding held by the first and the last pipeline stage. Each case trains 2
 * steps with random gradients (so m and v are not trivial), saves, loads into a fresh
 * optimizer at the same layout and stage, and compares every stored piece of params, m and v
 * bitwise, the working parameters, and step and loss scale. Gradients are multiples of 1/16,
 * so their dp sums are exact in any order and the replicas of a block stay bitwise equal.
 *
 * Failure paths: a checkpoint of another model (a tensor of another shape, a tensor missing
 * from it, a tensor the model lacks) or of another optimizer is refused with
 * TSR_ERR_MISMATCH naming the dataset, the optimizer untouched; a fault injected during a
 * save leaves the previous checkpoint verifying and latest unchanged; a flipped byte in a
 * moment is found by the checksums of the load (the test finds its offset with HDF5).
 *
 * Fresh seed per run (printed); TSR_TEST_SEED=N repeats one.
 */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <hdf5.h>
#include <tessera.h>

#include "tap.h"
#include "test_ckpt_model.h"

#define NBASE NSPEC
#define NMAX (NBASE + 1)

/* Model variants for the mismatch tests. */
enum variant { SAME, OTHER_SHAPE, EXTRA_TENSOR, FEWER_TENSORS };

typedef struct model {
    spec_t specs[NMAX];
    int n;
    int id[NMAX];                 /* registered id, -1 if this rank holds none of it */
    tsr_zero_tensor_t t[NMAX];
    tsr_zero_config_t cfg;
    tsr_zero_t z;
} model_t;

static void make_specs(model_t *m, enum variant v)
{
    m->n = 0;
    for (int k = 0; k < NBASE; k++) {
        if (v == FEWER_TENSORS && strcmp(model_specs[k].name, "h0.ln.g") == 0)
            continue;
        m->specs[m->n] = model_specs[k];
        if (v == OTHER_SHAPE && strcmp(model_specs[k].name, "h0.fc") == 0)
            m->specs[m->n].cols = 4;
        m->n++;
    }
    if (v == EXTRA_TENSOR)
        m->specs[m->n++] = (spec_t){"h1.extra", 4, 4, 2, BLOCK_2D, 0};
}


static float init_of(int k, long e) { return tsr_rng_uniform(seed, 900 + (uint64_t)k, (uint64_t)e) - 0.5f; }

/* A multiple of 1/16 in [-1/2, 1/2): sums over dp ranks are exact in any order. */
static float grad_of(int k, int step, int d, long e)
{
    uint32_t u = tsr_rng_u32(seed, 5000 + 64 * (uint64_t)k + 8 * (uint64_t)step + (uint64_t)d, (uint64_t)e);
    return (float)((int)(u % 16) - 8) / 16.0f;
}

static tsr_status_t build(tsr_grid_t grid, const tsr_zero_config_t *cfg, enum variant v, model_t *m)
{
    tsr_layout_t lay;
    tsr_grid_coords_t c;
    tsr_grid_layout(grid, &lay);
    tsr_grid_coords(grid, &c);
    make_specs(m, v);
    m->cfg = *cfg;
    tsr_status_t st = tsr_zero_create(grid, dev, cfg, &m->z);
    for (int k = 0; k < m->n && st == TSR_OK; k++) {
        m->id[k] = -1;
        if (block_of(&m->specs[k], &lay, &c, &m->t[k]))
            st = tsr_zero_register(m->z, &m->t[k], &m->id[k]);
    }
    if (st == TSR_OK)
        st = tsr_zero_commit(m->z);
    for (int k = 0; k < m->n && st == TSR_OK; k++) {
        tsr_zero_piece_t pc;
        if (m->id[k] < 0 || (st = tsr_zero_piece(m->z, m->id[k], TSR_ZERO_PARAM, &pc)) != TSR_OK)
            continue;
        for (size_t i = pc.begin; i < pc.end; i++)
            pc.data[i - pc.begin] = init_of(k, global_index(&m->t[k], i));
    }
    return st == TSR_OK ? tsr_zero_sync_params(m->z) : st;
}

/* Steps with random gradients, layer by layer as a model's backward would give them. */
static tsr_status_t train(model_t *m, int d, int steps)
{
    tsr_status_t st = TSR_OK;
    for (int s = 0; s < steps && st == TSR_OK; s++) {
        for (int layer = NLAYER - 1; layer >= 0 && st == TSR_OK; layer--) {
            int any = 0;
            for (int k = 0; k < m->n; k++)
                any |= m->id[k] >= 0 && m->t[k].layer == layer;
            if (!any)
                continue;
            st = tsr_zero_grad_begin(m->z, layer);
            for (int k = 0; k < m->n && st == TSR_OK; k++) {
                float *g = NULL;
                if (m->id[k] < 0 || m->t[k].layer != layer || (st = tsr_zero_view(m->z, m->id[k], NULL, &g)) != TSR_OK)
                    continue;
                size_t n = (size_t)(m->t[k].local_rows * m->t[k].local_cols);
                for (size_t i = 0; i < n; i++)
                    g[i] = grad_of(k, s, d, global_index(&m->t[k], i));
            }
            if (st == TSR_OK)
                st = tsr_zero_grad_ready(m->z, layer);
        }
        if (st == TSR_OK)
            st = tsr_zero_step(m->z, NULL);
    }
    return st;
}

/* Every stored piece of every kind, and the working parameters (stages 0-2), in one array. */
static float *snapshot(const model_t *m, size_t *n)
{
    size_t total = 0, at = 0;
    for (int pass = 0; pass < 2; pass++) {
        float *out = pass ? malloc((total ? total : 1) * sizeof *out) : NULL;
        at = 0;
        for (int k = 0; k < m->n; k++) {
            if (m->id[k] < 0)
                continue;
            for (int kind = 0; kind < kinds_of(&m->cfg); kind++) {
                tsr_zero_piece_t pc;
                if (tsr_zero_piece(m->z, m->id[k], (tsr_zero_kind_t)kind, &pc) != TSR_OK)
                    continue;
                if (out && pc.end > pc.begin) /* an empty piece has NULL data */
                    memcpy(out + at, pc.data, (pc.end - pc.begin) * sizeof(float));
                at += pc.end - pc.begin;
            }
            float *w = NULL;
            size_t len = (size_t)(m->t[k].local_rows * m->t[k].local_cols);
            if (m->cfg.stage < 3 && tsr_zero_view(m->z, m->id[k], &w, NULL) == TSR_OK && w) {
                if (out)
                    memcpy(out + at, w, len * sizeof(float));
                at += len;
            }
        }
        total = at;
        if (out) {
            *n = total;
            return out;
        }
    }
    return NULL;
}

static int same_snapshot(const float *a, size_t na, const float *b, size_t nb)
{
    return na == nb && memcmp(a, b, na * sizeof *a) == 0;
}

/* ---- checkpoint directory ---- */


static int64_t next_step = 1;

static tsr_status_t save(tsr_grid_t grid, const model_t *m, int64_t step)
{
    tsr_ckpt_writer_t w = NULL;
    tsr_status_t st = tsr_ckpt_writer_create(tsr_grid_comm(grid, TSR_AXIS_WORLD), dir, step, &w);
    if (st == TSR_OK)
        st = tsr_ckpt_save_zero(w, grid, m->z, &m->cfg);
    if (st != TSR_OK) {
        tsr_ckpt_abort(&w);
        return st;
    }
    return tsr_ckpt_commit(&w, 0);
}

static tsr_status_t load(tsr_grid_t grid, const model_t *m)
{
    char path[600];
    tsr_ckpt_reader_t r = NULL;
    tsr_status_t st = tsr_ckpt_latest(dir, path, sizeof path);
    if (st == TSR_OK)
        st = tsr_ckpt_reader_open(tsr_grid_comm(grid, TSR_AXIS_WORLD), path, &r);
    if (st == TSR_OK)
        st = tsr_ckpt_load_zero(r, grid, m->z, &m->cfg);
    tsr_ckpt_reader_close(&r);
    return st;
}

static void report(tsr_status_t st, const char *what)
{
    if (st != TSR_OK)
        fprintf(stderr, "#   [rank %d] %s: %s\n", tap_rank(), what, tsr_last_error());
}

/* ---- the cases ---- */

typedef struct layout_case {
    const char *layout;
    int stage;
    tsr_optim_kind_t optim;
} layout_case_t;

static tsr_zero_config_t config_of(const layout_case_t *lc)
{
    tsr_zero_config_t c = TSR_ZERO_CONFIG_INIT;
    c.stage = lc->stage;
    c.optim = lc->optim;
    c.lr = 0.01f;
    c.weight_decay = 0.01f;
    c.momentum = 0.9f;
    c.dynamic_loss_scale = 1;
    c.loss_scale = 256.0f;
    c.loss_scale_window = 1; /* the scale doubles every step: a restored value that differs shows */
    return c;
}

static void round_trip(const layout_case_t *lc)
{
    char what[96];
    snprintf(what, sizeof what, "%s stage %d %s", lc->layout, lc->stage, lc->optim == TSR_OPTIM_SGD ? "SGD" : "AdamW");
    tsr_layout_t lay;
    tsr_grid_t grid = NULL;
    if (tsr_layout_parse(lc->layout, &lay) != TSR_OK || tsr_grid_create(MPI_COMM_WORLD, &lay, &grid) != TSR_OK) {
        ok(0, "%s: grid (%s)", what, tsr_last_error());
        return;
    }
    tsr_grid_coords_t c;
    tsr_grid_coords(grid, &c);
    tsr_zero_config_t cfg = config_of(lc);
    model_t a = {0}, b = {0};
    tsr_status_t st = build(grid, &cfg, SAME, &a);
    if (st == TSR_OK)
        st = train(&a, c.dp, 2);
    report(st, "train");
    size_t na = 0, nb = 0;
    float *before = snapshot(&a, &na);
    double nonzero = 0;
    for (size_t i = 0; i < na; i++)
        nonzero += before[i] != 0;
    tsr_zero_state_t sa, sb;
    tsr_zero_get_state(a.z, &sa);
    int64_t step = next_step++;
    tsr_status_t saved = st == TSR_OK ? save(grid, &a, step) : st;
    report(saved, "save");
    ok(saved == TSR_OK, "%s: saved after 2 steps", what);

    st = build(grid, &cfg, SAME, &b);
    float *fresh = snapshot(&b, &nb);
    int differs = !same_snapshot(before, na, fresh, nb);
    MPI_Allreduce(MPI_IN_PLACE, &differs, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD);
    free(fresh);
    if (st == TSR_OK)
        st = load(grid, &b);
    report(st, "load");
    float *after = snapshot(&b, &nb);
    tsr_zero_get_state(b.z, &sb);
    ok(st == TSR_OK && differs && nonzero > 0.5 * (double)na && same_snapshot(before, na, after, nb),
       "%s: every params/m%s piece and the working copy loaded bitwise (%zu values here)", what,
       kinds_of(&cfg) == 3 ? "/v" : "", na);
    ok(sb.step == 2 && sb.step == sa.step && sb.loss_scale == sa.loss_scale && sa.loss_scale == 1024.0f &&
           sb.good_steps == sa.good_steps,
       "%s: step %ld and loss scale %g restored", what, sb.step, (double)sb.loss_scale);
    free(before);
    free(after);
    tsr_zero_destroy(&a.z);
    tsr_zero_destroy(&b.z);
    tsr_grid_destroy(&grid);
}

static int error_names(tsr_status_t st, tsr_status_t want, const char *text)
{
    const char *e = tsr_last_error();
    int good = st == want && strstr(e, text) && !strchr(e, '\n');
    if (!good)
        fprintf(stderr, "#   [rank %d] got %s: %s\n", tap_rank(), tsr_status_name(st), e);
    return good;
}

/* Load the latest checkpoint (AdamW, lc's layout) into a model that differs from it. */
static void refused(tsr_grid_t grid, const layout_case_t *lc, enum variant v, tsr_optim_kind_t optim,
                    const char *names, const char *what)
{
    layout_case_t other = *lc;
    other.optim = optim;
    tsr_zero_config_t cfg = config_of(&other);
    model_t m = {0};
    tsr_status_t st = build(grid, &cfg, v, &m);
    tsr_grid_coords_t c;
    tsr_grid_coords(grid, &c);
    if (st == TSR_OK)
        st = train(&m, c.dp, 1);
    size_t n0 = 0, n1 = 0;
    float *before = snapshot(&m, &n0);
    tsr_zero_state_t s0, s1;
    tsr_zero_get_state(m.z, &s0);
    tsr_status_t got = st == TSR_OK ? load(grid, &m) : st;
    int named = error_names(got, TSR_ERR_MISMATCH, names);
    const char *msg = tsr_last_error();
    float *after = snapshot(&m, &n1);
    tsr_zero_get_state(m.z, &s1);
    ok(named && same_snapshot(before, n0, after, n1) && s0.step == s1.step && s0.loss_scale == s1.loss_scale,
       "%s: refused, naming %s, optimizer untouched (%s)", what, names, named ? msg : "");
    free(before);
    free(after);
    tsr_zero_destroy(&m.z);
}

static int file_exists(const char *name)
{
    char path[600];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return stat(path, &st) == 0;
}

static void fault_during_save(tsr_grid_t grid, const layout_case_t *lc)
{
    char before[600], after[600], fault[64], name[64];
    tsr_zero_config_t cfg = config_of(lc);
    model_t m = {0};
    tsr_status_t st = build(grid, &cfg, SAME, &m);
    int victim = tap_size() - 1;
    snprintf(fault, sizeof fault, "%d:/params/h0.fc.w", victim);
    tsr_ckpt_latest(dir, before, sizeof before);
    setenv("TSR_CKPT_FAULT", fault, 1);
    int64_t step = next_step++;
    tsr_status_t got = st == TSR_OK ? save(grid, &m, step) : st;
    unsetenv("TSR_CKPT_FAULT");
    char text[64];
    snprintf(text, sizeof text, "rank %d failed writing /params/h0.fc.w", victim);
    ok(error_names(got, TSR_ERR_IO, text), "fault injected on rank %d during tsr_ckpt_save_zero: every rank reports "
       "it (%s)", victim, tsr_last_error());
    tsr_status_t found = tsr_ckpt_latest(dir, after, sizeof after);
    snprintf(name, sizeof name, "step_%lld.h5", (long long)step);
    char tmp[80];
    snprintf(tmp, sizeof tmp, "%s.tmp", name);
    ok(found == TSR_OK && strcmp(before, after) == 0 && !file_exists(name) && !file_exists(tmp),
       "after the fault latest still names %s and no step_%lld file is left", strrchr(after, '/') + 1,
       (long long)step);
    tsr_ckpt_reader_t r = NULL;
    st = tsr_ckpt_reader_open(tsr_grid_comm(grid, TSR_AXIS_WORLD), after, &r);
    if (st == TSR_OK)
        st = tsr_ckpt_verify(r);
    report(st, "verify");
    tsr_ckpt_reader_close(&r);
    ok(st == TSR_OK, "the previous checkpoint still verifies");
    tsr_zero_destroy(&m.z);
}

/* A configuration that is not the optimizer's is refused before anything is written. */
static void wrong_config(tsr_grid_t grid, const layout_case_t *lc)
{
    tsr_zero_config_t cfg = config_of(lc), sgd = cfg;
    sgd.optim = TSR_OPTIM_SGD;
    model_t m = {0};
    tsr_ckpt_writer_t w = NULL;
    tsr_status_t st = build(grid, &cfg, SAME, &m);
    if (st == TSR_OK)
        st = tsr_ckpt_writer_create(tsr_grid_comm(grid, TSR_AXIS_WORLD), dir, next_step, &w);
    tsr_status_t got = st == TSR_OK ? tsr_ckpt_save_zero(w, grid, m.z, &sgd) : st;
    ok(error_names(got, TSR_ERR_INVALID_ARG, "says sgd, but the optimizer keeps AdamW"),
       "save with an SGD configuration for an AdamW optimizer refused: %s", tsr_last_error());
    tsr_ckpt_abort(&w);
    tsr_zero_destroy(&m.z);
}

/* File offset of a dataset's data (rank 0 opens the file serially). */
static long data_offset(const char *path, const char *name)
{
    long offset = -1;
    if (tap_rank() == 0) {
        hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT), d = H5Dopen2(f, name, H5P_DEFAULT);
        offset = (long)H5Dget_offset(d);
        H5Dclose(d);
        H5Fclose(f);
    }
    MPI_Bcast(&offset, 1, MPI_LONG, 0, MPI_COMM_WORLD);
    return offset;
}

/* Rank 0 copies src to dst flipping one bit of byte `flip`. */
static void copy_flipped(const char *src, const char *dst, long flip)
{
    if (tap_rank() == 0) {
        FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
        long n = 0;
        for (int ch; in && out && (ch = fgetc(in)) != EOF; n++)
            fputc(n == flip ? ch ^ 0x10 : ch, out);
        if (in)
            fclose(in);
        if (out)
            fclose(out);
    }
    MPI_Barrier(MPI_COMM_WORLD);
}

/* A value of a moment damaged on disk: the load's checksums name the dataset. */
static void corrupt_load(tsr_grid_t grid, const layout_case_t *lc)
{
    char latest[600], damaged[600];
    const char *victim = "/optim/h0.fc.w/v";
    tsr_zero_config_t cfg = config_of(lc);
    model_t m = {0};
    tsr_ckpt_reader_t r = NULL;
    tsr_status_t st = tsr_ckpt_latest(dir, latest, sizeof latest);
    snprintf(damaged, sizeof damaged, "%s/damaged.h5", dir);
    long offset = st == TSR_OK ? data_offset(latest, victim) : -1;
    copy_flipped(latest, damaged, offset + 5);
    if (st == TSR_OK)
        st = build(grid, &cfg, SAME, &m);
    if (st == TSR_OK)
        st = tsr_ckpt_reader_open(tsr_grid_comm(grid, TSR_AXIS_WORLD), damaged, &r);
    tsr_status_t got = st == TSR_OK ? tsr_ckpt_load_zero(r, grid, m.z, &cfg) : st;
    ok(offset > 0 && error_names(got, TSR_ERR_CORRUPT, victim), "a flipped bit in %s is found while loading: %s",
       victim, tsr_last_error());
    tsr_ckpt_reader_close(&r);
    tsr_zero_destroy(&m.z);
}

/* The failure paths against the checkpoint of the last round trip (AdamW at lc). */
static void failures(const layout_case_t *lc)
{
    tsr_layout_t lay;
    tsr_grid_t grid = NULL;
    if (tsr_layout_parse(lc->layout, &lay) != TSR_OK || tsr_grid_create(MPI_COMM_WORLD, &lay, &grid) != TSR_OK) {
        ok(0, "%s: grid (%s)", lc->layout, tsr_last_error());
        return;
    }
    refused(grid, lc, OTHER_SHAPE, TSR_OPTIM_ADAMW, "/params/h0.fc", "a tensor of another shape");
    refused(grid, lc, EXTRA_TENSOR, TSR_OPTIM_ADAMW, "/params/h1.extra", "a tensor missing from the checkpoint");
    refused(grid, lc, FEWER_TENSORS, TSR_OPTIM_ADAMW, "/params/h0.ln.g", "a checkpoint tensor the model lacks");
    refused(grid, lc, SAME, TSR_OPTIM_SGD, "optimizer is \"adamw\", this run has \"sgd\"", "another optimizer");
    wrong_config(grid, lc);
    corrupt_load(grid, lc);
    fault_during_save(grid, lc);
    tsr_grid_destroy(&grid);
}

int main(int argc, char **argv)
{
    tap_init(&argc, &argv, "1 2 4");
    seed = tap_seed();
    if (tsr_device_create(TSR_DEVICE_CPU, 0, &dev) != TSR_OK)
        MPI_Abort(MPI_COMM_WORLD, 2);
    make_dir("tsr-ckpt-state");
    static const layout_case_t cases1[] = {{"dp=1", 3, TSR_OPTIM_SGD}, {"dp=1", 0, TSR_OPTIM_ADAMW}};
    static const layout_case_t cases2[] = {
        {"tp=1x2", 0, TSR_OPTIM_SGD}, {"pp=2", 1, TSR_OPTIM_ADAMW}, {"dp=2", 2, TSR_OPTIM_ADAMW}};
    static const layout_case_t cases4[] = {{"pp=2,tp=2x1", 3, TSR_OPTIM_ADAMW}, {"dp=2,tp=1x2", 1, TSR_OPTIM_ADAMW}};
    const layout_case_t *cases = tap_size() == 1 ? cases1 : tap_size() == 2 ? cases2 : cases4;
    int ncases = tap_size() == 1 ? 2 : tap_size() == 2 ? 3 : 2;
    for (int i = 0; i < ncases; i++)
        round_trip(&cases[i]);
    failures(&cases[ncases - 1]);
    remove_dir();
    tsr_device_destroy(&dev);
    return tap_done();
}
