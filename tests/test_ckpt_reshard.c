/*
 * test_ckpt_reshard: a checkpoint written by tsr_ckpt_save_zero on one layout, loaded by
 * tsr_ckpt_load_zero on another, gives every rank exactly the parameters and optimizer
 * state it stores there, bitwise.
 *
 * Every global element of every tensor and kind (params, m, v) is a function of (tensor,
 * global index, kind) through tsr_rng, set through the optimizer's pieces before saving; the
 * loading layout compares what it holds with the same function, so the check does not depend
 * on how the writer split anything. The model is split the way tp and pp would split it (see
 * test_ckpt_state.c). Rank-count changes run inside one 4-rank job: a grid on a
 * sub-communicator of rank 0 alone saves or loads while the other ranks wait at a barrier.
 *
 * Fresh seed per run (printed); TSR_TEST_SEED=N repeats one.
 */
#include <dirent.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <tessera.h>

#include "tap.h"
#include "test_ckpt_model.h"

static MPI_Comm solo; /* rank 0 alone; MPI_COMM_NULL elsewhere */

typedef struct model {
    int id[NSPEC];                 /* registered id, -1 if this rank holds none of it */
    tsr_zero_tensor_t t[NSPEC];
    tsr_zero_config_t cfg;
    tsr_zero_t z;
} model_t;


/* The value of global element e of tensor k for one kind of state; m and v kept as AdamW
 * would (v >= 0). */
static float value_of(int k, int kind, long e)
{
    float u = tsr_rng_uniform(seed, 100 * (uint64_t)kind + (uint64_t)k, (uint64_t)e);
    return kind == TSR_ZERO_V ? u * 1e-3f : u - 0.5f;
}

/* A saved or loaded layout: a grid over MPI_COMM_WORLD or over rank 0 alone. */
typedef struct side {
    const char *layout;
    int alone;
    int stage;
} side_t;

static tsr_zero_config_t config_of(int stage, tsr_optim_kind_t optim)
{
    tsr_zero_config_t c = TSR_ZERO_CONFIG_INIT;
    c.stage = stage;
    c.optim = optim;
    c.momentum = 0.9f;
    c.dynamic_loss_scale = 1;
    return c;
}

/* Register this rank's blocks on a fresh optimizer (all state zero). */
static tsr_status_t build(tsr_grid_t grid, const tsr_zero_config_t *cfg, model_t *m)
{
    tsr_layout_t lay;
    tsr_grid_coords_t c;
    tsr_grid_layout(grid, &lay);
    tsr_grid_coords(grid, &c);
    m->cfg = *cfg;
    tsr_status_t st = tsr_zero_create(grid, dev, cfg, &m->z);
    for (int k = 0; k < NSPEC && st == TSR_OK; k++) {
        m->id[k] = -1;
        if (block_of(&model_specs[k], &lay, &c, &m->t[k]))
            st = tsr_zero_register(m->z, &m->t[k], &m->id[k]);
    }
    return st == TSR_OK ? tsr_zero_commit(m->z) : st;
}

static tsr_status_t fill(model_t *m, const tsr_zero_state_t *state)
{
    tsr_status_t st = TSR_OK;
    for (int k = 0; k < NSPEC && st == TSR_OK; k++)
        for (int kind = 0; kind < kinds_of(&m->cfg) && st == TSR_OK && m->id[k] >= 0; kind++) {
            tsr_zero_piece_t pc;
            if ((st = tsr_zero_piece(m->z, m->id[k], (tsr_zero_kind_t)kind, &pc)) != TSR_OK)
                break;
            for (size_t i = pc.begin; i < pc.end; i++)
                pc.data[i - pc.begin] = value_of(k, kind, global_index(&m->t[k], i));
        }
    if (st == TSR_OK)
        st = tsr_zero_sync_params(m->z);
    return st == TSR_OK ? tsr_zero_set_state(m->z, state) : st;
}

/* Elements this rank holds that differ from the generator (-1: the optimizer failed), in
 * every stored piece and, in stages 0-2, the working parameters; *held counts them. */
static long mismatches(const model_t *m, long *held)
{
    long bad = 0;
    *held = 0;
    for (int k = 0; k < NSPEC; k++) {
        if (m->id[k] < 0)
            continue;
        for (int kind = 0; kind < kinds_of(&m->cfg); kind++) {
            tsr_zero_piece_t pc;
            if (tsr_zero_piece(m->z, m->id[k], (tsr_zero_kind_t)kind, &pc) != TSR_OK)
                return -1;
            for (size_t i = pc.begin; i < pc.end; i++) {
                float want = value_of(k, kind, global_index(&m->t[k], i));
                bad += memcmp(&pc.data[i - pc.begin], &want, sizeof want) != 0;
            }
            *held += (long)(pc.end - pc.begin);
        }
        float *w = NULL;
        if (m->cfg.stage < 3 && (tsr_zero_view(m->z, m->id[k], &w, NULL) != TSR_OK || !w))
            return -1;
        for (size_t i = 0; m->cfg.stage < 3 && i < (size_t)(m->t[k].local_rows * m->t[k].local_cols); i++) {
            float want = value_of(k, TSR_ZERO_PARAM, global_index(&m->t[k], i));
            bad += memcmp(&w[i], &want, sizeof want) != 0;
        }
    }
    return bad;
}

static void report(tsr_status_t st, const char *what)
{
    if (st != TSR_OK)
        fprintf(stderr, "#   [rank %d] %s: %s\n", tap_rank(), what, tsr_last_error());
}

/* The grid of a side, or NULL on the ranks it leaves out. */
static tsr_grid_t grid_of(const side_t *s, tsr_status_t *st)
{
    tsr_layout_t lay;
    tsr_grid_t grid = NULL;
    MPI_Comm comm = s->alone ? solo : MPI_COMM_WORLD;
    *st = TSR_OK;
    if (comm == MPI_COMM_NULL)
        return NULL;
    *st = tsr_layout_parse(s->layout, &lay);
    if (*st == TSR_OK)
        *st = tsr_grid_create(comm, &lay, &grid);
    report(*st, s->layout);
    return grid;
}

static int member(const side_t *s)
{
    return !s->alone || solo != MPI_COMM_NULL;
}

static void side_name(const side_t *s, char *buf, size_t len)
{
    snprintf(buf, len, "%s%s stage %d", s->alone ? "1 rank " : "4 ranks ", s->layout, s->stage);
}

/* Save from `from` with optimizer `optim`, then load into each of `to` and compare. */
static void reshard(const side_t *from, const side_t *to, int nto, tsr_optim_kind_t optim, int64_t step)
{
    char src[96];
    side_name(from, src, sizeof src);
    tsr_zero_state_t state = {step * 10, (float)(1 << (step % 20)), step};
    tsr_status_t st;
    tsr_grid_t grid = grid_of(from, &st);
    if (grid) {
        tsr_zero_config_t cfg = config_of(from->stage, optim);
        model_t m = {0};
        tsr_ckpt_writer_t w = NULL;
        if (st == TSR_OK && (st = build(grid, &cfg, &m)) == TSR_OK && (st = fill(&m, &state)) == TSR_OK)
            st = tsr_ckpt_writer_create(tsr_grid_comm(grid, TSR_AXIS_WORLD), dir, step, &w);
        if (st == TSR_OK)
            st = tsr_ckpt_save_zero(w, grid, m.z, &cfg);
        report(st, "save");
        if (st == TSR_OK)
            st = tsr_ckpt_commit(&w, 0);
        else
            tsr_ckpt_abort(&w);
        tsr_zero_destroy(&m.z);
        tsr_grid_destroy(&grid);
    }
    int saved = st == TSR_OK;
    MPI_Allreduce(MPI_IN_PLACE, &saved, 1, MPI_INT, MPI_LAND, MPI_COMM_WORLD);
    ok(saved, "%s %s: saved", src, optim == TSR_OPTIM_SGD ? "SGD" : "AdamW");
    char path[600];
    snprintf(path, sizeof path, "%s/step_%lld.h5", dir, (long long)step);
    for (int i = 0; i < nto; i++) {
        char dst[96];
        side_name(&to[i], dst, sizeof dst);
        long bad = 0, held = 0;
        tsr_zero_state_t got = {0};
        grid = grid_of(&to[i], &st);
        if (grid) {
            tsr_zero_config_t cfg = config_of(to[i].stage, optim);
            model_t m = {0};
            tsr_ckpt_reader_t r = NULL;
            if (st == TSR_OK && (st = build(grid, &cfg, &m)) == TSR_OK)
                st = tsr_ckpt_reader_open(tsr_grid_comm(grid, TSR_AXIS_WORLD), path, &r);
            if (st == TSR_OK)
                st = tsr_ckpt_load_zero(r, grid, m.z, &cfg);
            report(st, "load");
            tsr_ckpt_reader_close(&r);
            bad = st == TSR_OK ? mismatches(&m, &held) : -1;
            tsr_zero_get_state(m.z, &got);
            tsr_zero_destroy(&m.z);
            tsr_grid_destroy(&grid);
            if (bad > 0)
                fprintf(stderr, "#   [rank %d] %ld of %ld values differ\n", tap_rank(), bad, held);
        } else {
            got = state;
        }
        MPI_Barrier(MPI_COMM_WORLD); /* the ranks left out wait here */
        ok(bad == 0 && (held > 0 || !member(&to[i])) && got.step == state.step &&
               got.loss_scale == state.loss_scale && got.good_steps == state.good_steps,
           "%s -> %s: every params/m%s value loaded bitwise (%ld here), step and loss scale restored", src, dst,
           optim == TSR_OPTIM_ADAMW ? "/v" : "", held);
    }
}


int main(int argc, char **argv)
{
    tap_init(&argc, &argv, "4");
    seed = tap_seed();
    if (tap_size() != 4) {
        printf("1..0 # SKIP needs 4 ranks, has %d\n", tap_size());
        MPI_Finalize();
        return 0;
    }
    if (tsr_device_create(TSR_DEVICE_CPU, 0, &dev) != TSR_OK)
        MPI_Abort(MPI_COMM_WORLD, 2);
    MPI_Comm_split(MPI_COMM_WORLD, tap_rank() == 0 ? 0 : MPI_UNDEFINED, 0, &solo);
    make_dir("tsr-ckpt-reshard");

    const side_t dp4_s1 = {"dp=4", 0, 1}, tp2x2_s0 = {"tp=2x2", 0, 0}, one_s3 = {"dp=1", 1, 3};
    const side_t pp2tp2x1_s3 = {"pp=2,tp=2x1", 0, 3};
    const side_t from_dp4[] = {{"dp=1", 1, 0}, {"dp=4", 0, 3}};
    const side_t from_tp2x2[] = {{"tp=1x4", 0, 2}};
    const side_t from_one[] = {{"dp=2,tp=1x2", 0, 2}, {"pp=2,tp=1x2", 0, 1}};
    const side_t from_pp2[] = {{"dp=2,tp=2x1", 0, 1}};
    reshard(&dp4_s1, from_dp4, 2, TSR_OPTIM_ADAMW, 1);
    reshard(&tp2x2_s0, from_tp2x2, 1, TSR_OPTIM_ADAMW, 2);
    reshard(&one_s3, from_one, 2, TSR_OPTIM_ADAMW, 3);
    reshard(&pp2tp2x1_s3, from_pp2, 1, TSR_OPTIM_SGD, 4);

    remove_dir();
    if (solo != MPI_COMM_NULL)
        MPI_Comm_free(&solo);
    tsr_device_destroy(&dev);
    return tap_done();
}
