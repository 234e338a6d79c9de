/* grid.c: the dp × pp × tp(rows × cols) process grid and one communicator per axis, and
 * with ps > 0 the split of the job into workers and parameter servers. */
#include <stdio.h>
#include <stdlib.h>

#include "core/internal.h"

struct tsr_grid {
    tsr_layout_t layout;
    tsr_grid_coords_t coords;
    tsr_comm_t comms[TSR_AXIS_COUNT];
    tsr_comm_t job; /* with ps: every rank, servers and workers */
    int server;     /* this rank is a parameter server */
    int ps_joined;  /* a worker that took part in the servers' first agreement */
    tsr__ps_worker_t *ps_worker; /* its link to the servers, while it has one */
};

static const char *const axis_names[TSR_AXIS_COUNT] = {
    [TSR_AXIS_WORLD] = "world", [TSR_AXIS_DP] = "dp",         [TSR_AXIS_PP] = "pp",
    [TSR_AXIS_TP] = "tp",       [TSR_AXIS_TP_ROW] = "tp_row", [TSR_AXIS_TP_COL] = "tp_col",
};

const char *tsr_axis_name(tsr_axis_t axis)
{
    return (unsigned)axis < TSR_AXIS_COUNT ? axis_names[axis] : "unknown";
}

/* Name each communicator by its axis for the profiler; the job's, with servers, is "ps". */
static void label_comms(struct tsr_grid *g)
{
    for (int a = 0; a < TSR_AXIS_COUNT; a++)
        tsr__comm_set_label(g->comms[a], axis_names[a]);
    tsr__comm_set_label(g->job, "ps");
}

/* Coordinates of a rank; the inverse of tsr_grid_rank_of(). */
static tsr_grid_coords_t coords_of(const tsr_layout_t *l, int rank)
{
    tsr_grid_coords_t c;
    c.rank = rank;
    c.size = tsr_layout_ranks(l) - l->ps;
    c.tp_col = rank % l->tp_cols;
    c.tp_row = rank / l->tp_cols % l->tp_rows;
    c.tp = c.tp_row * l->tp_cols + c.tp_col;
    c.pp = rank / (l->tp_cols * l->tp_rows) % l->pp;
    c.dp = rank / (l->tp_cols * l->tp_rows * l->pp);
    return c;
}

/* The local checks: every rank reaches the same verdict without communicating. */
static tsr_status_t check_layout(const tsr_layout_t *l, int size)
{
    char text[TSR_LAYOUT_STRLEN];
    if (!l || l->struct_size < sizeof(tsr_layout_t))
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "layout not initialized with TSR_LAYOUT_INIT");
    if (l->dp < 1 || l->pp < 1 || l->tp_rows < 1 || l->tp_cols < 1 || l->ps < 0)
        return TSR_ERROR(TSR_ERR_LAYOUT, "layout %s has a size below 1", tsr_layout_format(l, text, sizeof text));
    int need = tsr_layout_ranks(l);
    if (l->ps > 0 && need != size)
        return TSR_ERROR(TSR_ERR_LAYOUT, "layout %s needs %d server + %d worker ranks = %d, but the communicator has %d",
                         tsr_layout_format(l, text, sizeof text), l->ps, need - l->ps, need, size);
    if (need < 0)
        return TSR_ERROR(TSR_ERR_LAYOUT, "layout dp=%d x pp=%d x tp=%dx%d needs more ranks than an MPI communicator "
                         "holds; the communicator has %d", l->dp, l->pp, l->tp_rows, l->tp_cols, size);
    if (need != size)
        return TSR_ERROR(TSR_ERR_LAYOUT, "layout dp=%d x pp=%d x tp=%dx%d needs %d ranks but the communicator has %d",
                         l->dp, l->pp, l->tp_rows, l->tp_cols, need, size);
    return TSR_OK;
}

/* Split the world so that ranks sharing a color form one communicator, ordered by key. */
static tsr_status_t split(tsr_comm_t world, int color, int key, tsr_comm_t *out)
{
    tsr_status_t rc = TSR_OK;
    MPI_Comm sub = MPI_COMM_NULL;
    TSR_CALL_MPI(MPI_Comm_split(tsr_comm_mpi(world), color, key, &sub));
    TSR_TRY(tsr__comm_adopt(sub, out));
    sub = MPI_COMM_NULL;
cleanup:
    if (sub != MPI_COMM_NULL)
        MPI_Comm_free(&sub);
    return rc;
}

tsr_status_t tsr_grid_create(MPI_Comm comm, const tsr_layout_t *layout, tsr_grid_t *out)
{
    tsr_status_t rc = TSR_OK;
    struct tsr_grid *g = NULL;
    int size = 0;
    char prefix[64];
    *out = NULL;
    TSR_CHECK(comm != MPI_COMM_NULL, TSR_ERR_INVALID_ARG, "tsr_grid_create needs a communicator, got MPI_COMM_NULL");
    TSR_CALL_MPI(MPI_Comm_size(comm, &size));
    TSR_TRY(check_layout(layout, size));
    g = tsr__calloc(1, sizeof *g);
    TSR_CHECK(g, TSR_ERR_OUT_OF_MEMORY, "no memory for a grid");
    g->layout = *layout;
    g->layout.struct_size = sizeof g->layout;
    tsr_comm_t job = NULL;
    TSR_TRY(tsr_comm_create(comm, &job));

    /* Ranks given different layouts would build different communicators and hang: agree first. */
    const tsr_layout_t *l = &g->layout;
    int mine[10] = {l->dp, l->pp, l->tp_rows, l->tp_cols, l->ps, -l->dp, -l->pp, -l->tp_rows, -l->tp_cols, -l->ps};
    int all[10];
    rc = tsr_comm_allreduce(job, mine, all, 10, TSR_DTYPE_I32, TSR_REDUCE_MAX);
    if (rc == TSR_OK && !(all[0] == -all[5] && all[1] == -all[6] && all[2] == -all[7] && all[3] == -all[8] &&
                          all[4] == -all[9]))
        rc = TSR_ERROR(TSR_ERR_LAYOUT, "ranks were given different layouts (this rank: ps=%d,dp=%d,pp=%d,tp=%dx%d)",
                       l->ps, l->dp, l->pp, l->tp_rows, l->tp_cols);
    if (rc != TSR_OK) {
        tsr_comm_destroy(&job);
        goto cleanup;
    }
    tsr_comm_reset_counters(job);
    if (l->ps == 0) {
        g->comms[TSR_AXIS_WORLD] = job;
    } else {
        /* servers last; a worker's world is its replica, a server's the servers */
        g->job = job;
        int workers = size - l->ps, rank = tsr_comm_rank(job);
        g->server = rank >= workers;
        int replica = g->server ? -1 : rank / (workers / l->dp);
        TSR_TRY(split(job, g->server ? l->dp : replica, rank, &g->comms[TSR_AXIS_WORLD]));
    }

    tsr_comm_t world = g->comms[TSR_AXIS_WORLD];
    if (g->server) {
        g->coords = coords_of(l, 0);
        g->coords.rank = tsr_comm_rank(world);
        g->coords.size = l->ps;
        for (int a = TSR_AXIS_DP; a < TSR_AXIS_COUNT; a++)
            TSR_TRY(split(world, g->coords.rank, 0, &g->comms[a]));
        snprintf(prefix, sizeof prefix, "[ps%d]", g->coords.rank);
        tsr_log_set_prefix(prefix);
        label_comms(g);
        *out = g;
        g = NULL;
        goto cleanup;
    }
    g->coords = coords_of(l, tsr_comm_rank(g->job ? g->job : world));
    const tsr_grid_coords_t *c = &g->coords;
    int tp_size = l->tp_rows * l->tp_cols;
    int tp_group = c->dp * l->pp + c->pp; /* which tp group: one per (dp, pp) */
    /* with ps, the data-parallel axis is the servers': a worker is alone on it */
    if (l->ps > 0)
        TSR_TRY(split(world, c->rank, 0, &g->comms[TSR_AXIS_DP]));
    else
        TSR_TRY(split(world, c->pp * tp_size + c->tp, c->dp, &g->comms[TSR_AXIS_DP]));
    TSR_TRY(split(world, c->dp * tp_size + c->tp, c->pp, &g->comms[TSR_AXIS_PP]));
    TSR_TRY(split(world, tp_group, c->tp, &g->comms[TSR_AXIS_TP]));
    TSR_TRY(split(world, tp_group * l->tp_rows + c->tp_row, c->tp_col, &g->comms[TSR_AXIS_TP_ROW]));
    TSR_TRY(split(world, tp_group * l->tp_cols + c->tp_col, c->tp_row, &g->comms[TSR_AXIS_TP_COL]));

    snprintf(prefix, sizeof prefix, "[dp%d pp%d tp(%d,%d)]", c->dp, c->pp, c->tp_row, c->tp_col);
    tsr_log_set_prefix(prefix);
    label_comms(g);
    *out = g;
    g = NULL;
cleanup:
    tsr_grid_destroy(&g);
    return rc;
}

void tsr_grid_destroy(tsr_grid_t *grid)
{
    if (!grid || !*grid)
        return;
    for (int a = TSR_AXIS_COUNT - 1; a >= 0; a--)
        tsr_comm_destroy(&(*grid)->comms[a]);
    tsr_comm_destroy(&(*grid)->job);
    free(*grid);
    *grid = NULL;
}

void tsr_grid_layout(tsr_grid_t grid, tsr_layout_t *out)
{
    *out = grid->layout;
}

void tsr_grid_coords(tsr_grid_t grid, tsr_grid_coords_t *out)
{
    *out = grid->coords;
}

tsr_comm_t tsr_grid_comm(tsr_grid_t grid, tsr_axis_t axis)
{
    return (unsigned)axis < TSR_AXIS_COUNT ? grid->comms[axis] : NULL;
}

/* Put one axis communicator on dev and pick its backend; `why` says why NCCL was not used. */
static tsr_status_t set_axis_device(tsr_comm_t c, tsr_device_t dev, int want_nccl, char *why, size_t len)
{
    tsr_status_t rc = TSR_OK;
    why[0] = '\0';
    TSR_TRY(tsr_comm_set_device(c, dev));
    if (!want_nccl)
        goto cleanup;
    if (tsr_comm_size(c) == 1) {
        snprintf(why, len, "a single rank has nothing to exchange");
        goto cleanup;
    }
    /* Not built, or ranks sharing a GPU: every rank of c gets the same verdict, and falls back. */
    rc = tsr_comm_set_backend(c, TSR_COMM_BACKEND_NCCL);
    if (rc == TSR_ERR_NOT_SUPPORTED) {
        snprintf(why, len, "%s", tsr_last_error());
        tsr_clear_error();
        rc = TSR_OK;
    }
cleanup:
    return rc;
}

tsr_status_t tsr_grid_set_device(tsr_grid_t grid, tsr_device_t dev, tsr_comm_backend_t preferred)
{
    tsr_status_t rc = TSR_OK;
    char why[320];
    TSR_CHECK(grid, TSR_ERR_INVALID_ARG, "tsr_grid_set_device on a NULL grid");
    TSR_CHECK((unsigned)preferred <= TSR_COMM_BACKEND_NCCL, TSR_ERR_INVALID_ARG,
              "communication backend %d out of range", (int)preferred);
    int gpu = dev && tsr_device_kind(dev) == TSR_DEVICE_CUDA;
    for (int a = 0; a < TSR_AXIS_COUNT; a++) {
        tsr_comm_t c = grid->comms[a];
        /* The pipeline axis too: on NCCL the executor posts its messages in list order
         * (tsr_pipe_exec_config_t.in_order), which NCCL matches as posted. */
        int nccl = gpu && preferred == TSR_COMM_BACKEND_NCCL;
        TSR_TRY(set_axis_device(c, dev, nccl, why, sizeof why));
        if (tsr_comm_rank(c) != 0) /* one line per communicator, not one per rank */
            continue;
        int n = tsr_comm_size(c);
        if (!gpu)
            tsr_log(TSR_LOG_INFO, "%s axis (%d rank%s): MPI on host memory", axis_names[a], n, n == 1 ? "" : "s");
        else if (tsr_comm_backend(c) == TSR_COMM_BACKEND_NCCL)
            tsr_log(TSR_LOG_INFO, "%s axis (%d ranks): NCCL on GPU memory", axis_names[a], n);
        else
            tsr_log(TSR_LOG_INFO, "%s axis (%d rank%s): MPI on GPU memory, %s%s%s%s", axis_names[a], n,
                    n == 1 ? "" : "s",
                    tsr_comm_gpu_aware(c) ? "messages direct (GPU-aware MPI), collectives staged through the host"
                                          : "staged through the host",
                    why[0] ? " (" : "", why, why[0] ? ")" : "");
    }
cleanup:
    return rc;
}

int tsr_grid_is_server(tsr_grid_t grid)
{
    return grid->server;
}

tsr_comm_t tsr_grid_ps_comm(tsr_grid_t grid)
{
    return grid->job;
}

void tsr__grid_set_ps_joined(tsr_grid_t grid)
{
    grid->ps_joined = 1;
}

int tsr__grid_ps_joined(tsr_grid_t grid)
{
    return grid->ps_joined;
}

void tsr__grid_set_ps_worker(tsr_grid_t grid, tsr__ps_worker_t *w)
{
    grid->ps_worker = w;
}

tsr__ps_worker_t *tsr__grid_ps_worker(tsr_grid_t grid)
{
    return grid->ps_worker;
}

int tsr_grid_rank_of(tsr_grid_t grid, int dp, int pp, int tp_row, int tp_col)
{
    const tsr_layout_t *l = &grid->layout;
    if (dp < 0 || dp >= l->dp || pp < 0 || pp >= l->pp || tp_row < 0 || tp_row >= l->tp_rows || tp_col < 0 ||
        tp_col >= l->tp_cols)
        return -1;
    return ((dp * l->pp + pp) * l->tp_rows + tp_row) * l->tp_cols + tp_col;
}
