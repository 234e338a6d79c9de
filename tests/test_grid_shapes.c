/*
 * test_grid_shapes.c: every grid shape that fits the world, its coordinates and the
 * membership of each axis communicator.
 *
 * For the world size n, every ordered factorization dp * pp * tp_rows * tp_cols == n is
 * built. The coordinates, tsr_grid_rank_of() and the members of each axis communicator are
 * checked against the documented rank order
 *     rank = ((dp * PP + pp) * TP_ROWS + tp_row) * TP_COLS + tp_col,  tp = tp_row * TP_COLS + tp_col
 * with the members of an axis communicator ranked along that axis (dp by dp index, pp by
 * stage, tp by tp index, tp_row by column, tp_col by row). Membership is read by gathering
 * the world rank over each axis communicator: the six gathers run at once, one round of
 * collectives per shape, so the 8-rank run stays fast on a small machine.
 */
#include <tessera.h>

#include "tap.h"

/* The documented rank order. */
static int rank_formula(int P, int R, int C, int dp, int pp, int row, int col)
{
    return ((dp * P + pp) * R + row) * C + col;
}

static const char *const axis_names[TSR_AXIS_COUNT] = {"world", "dp", "pp", "tp", "tp_row", "tp_col"};

int main(int argc, char **argv)
{
    tap_init(&argc, &argv, "1 2 3 4 5 6 7 8");
    const int n = tap_size(), w = tap_rank();
    double t0 = MPI_Wtime();

    for (int a = 0; a < TSR_AXIS_COUNT; a++)
        is_str(tsr_axis_name((tsr_axis_t)a), axis_names[a], "tsr_axis_name(%d)", a);

    MPI_Errhandler world_eh_before;
    MPI_Comm_get_errhandler(MPI_COMM_WORLD, &world_eh_before);

    int shapes = 0;
    for (int D = 1; D <= n; D++) {
        if (n % D)
            continue;
        for (int P = 1; P <= n / D; P++) {
            if ((n / D) % P)
                continue;
            for (int R = 1; R <= n / (D * P); R++) {
                if ((n / (D * P)) % R)
                    continue;
                const int C = n / (D * P * R);
                char name[96];
                snprintf(name, sizeof name, "dp=%d,pp=%d,tp=%dx%d on %d ranks", D, P, R, C, n);
                shapes++;

                /* Where this rank must sit. */
                const int col = w % C, row = (w / C) % R, pp = (w / (C * R)) % P, dp = w / (C * R * P);
                const int tp = row * C + col;

                tsr_layout_t layout = TSR_LAYOUT_INIT;
                layout.dp = D, layout.pp = P, layout.tp_rows = R, layout.tp_cols = C;
                tsr_grid_t g = NULL;
                tsr_status_t st = tsr_grid_create(MPI_COMM_WORLD, &layout, &g);
                if (st != TSR_OK)
                    fprintf(stderr, "#   [rank %d] %s: %s (%s)\n", w, name, tsr_status_name(st), tsr_last_error());
                ok(st == TSR_OK && g != NULL, "%s: tsr_grid_create", name);

                tsr_comm_t comms[TSR_AXIS_COUNT] = {0};
                MPI_Comm mpi[TSR_AXIS_COUNT];
                int usable = st == TSR_OK && g != NULL;
                for (int a = 0; a < TSR_AXIS_COUNT; a++) {
                    comms[a] = usable ? tsr_grid_comm(g, (tsr_axis_t)a) : NULL;
                    mpi[a] = comms[a] ? tsr_comm_mpi(comms[a]) : MPI_COMM_NULL;
                    if (mpi[a] == MPI_COMM_NULL)
                        usable = 0;
                }
                /* Agree on MPI_COMM_WORLD, while the grid lives, that every rank can go on:
                 * the user's communicator is still theirs to use. */
                int all_usable = 0;
                MPI_Allreduce(&usable, &all_usable, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
                const int npoints = 20; /* the points recorded below for one shape */
                if (!all_usable) {
                    skip(npoints, "grid creation failed");
                    if (g)
                        tsr_grid_destroy(&g);
                    continue;
                }

                /* Coordinates. */
                tsr_grid_coords_t co;
                memset(&co, 0xff, sizeof co);
                tsr_grid_coords(g, &co);
                int coords_ok = co.rank == w && co.size == n && co.dp == dp && co.pp == pp && co.tp == tp &&
                                co.tp_row == row && co.tp_col == col;
                if (!coords_ok)
                    fprintf(stderr,
                            "#   [rank %d] %s: coords rank=%d size=%d dp=%d pp=%d tp=%d (%d,%d), expected "
                            "rank=%d size=%d dp=%d pp=%d tp=%d (%d,%d)\n",
                            w, name, co.rank, co.size, co.dp, co.pp, co.tp, co.tp_row, co.tp_col, w, n, dp, pp, tp,
                            row, col);
                ok(coords_ok, "%s: tsr_grid_coords", name);

                /* tsr_grid_rank_of for every coordinate, and -1 outside. */
                int bad = 0;
                for (int d = 0; d < D; d++)
                    for (int p = 0; p < P; p++)
                        for (int r = 0; r < R; r++)
                            for (int c = 0; c < C; c++) {
                                int got = tsr_grid_rank_of(g, d, p, r, c);
                                if (got != rank_formula(P, R, C, d, p, r, c)) {
                                    if (!bad++)
                                        fprintf(stderr, "#   [rank %d] %s: rank_of(%d,%d,%d,%d) = %d, expected %d\n",
                                                w, name, d, p, r, c, got, rank_formula(P, R, C, d, p, r, c));
                                }
                            }
                ok(!bad, "%s: tsr_grid_rank_of for all %d coordinates", name, n);
                const int outside[][4] = {{-1, 0, 0, 0}, {D, 0, 0, 0},  {0, -1, 0, 0}, {0, P, 0, 0},
                                          {0, 0, -1, 0}, {0, 0, R, 0},  {0, 0, 0, -1}, {0, 0, 0, C},
                                          {D, P, R, C},  {0, 0, 0, n}, {-1, -1, -1, -1}};
                int out_bad = 0;
                for (size_t k = 0; k < sizeof outside / sizeof outside[0]; k++) {
                    int got = tsr_grid_rank_of(g, outside[k][0], outside[k][1], outside[k][2], outside[k][3]);
                    if (got != -1 && !out_bad++)
                        fprintf(stderr, "#   [rank %d] %s: rank_of(%d,%d,%d,%d) = %d, expected -1\n", w, name,
                                outside[k][0], outside[k][1], outside[k][2], outside[k][3], got);
                }
                ok(!out_bad, "%s: tsr_grid_rank_of is -1 out of range", name);

                /* The layout given back. */
                tsr_layout_t back = TSR_LAYOUT_INIT;
                back.dp = back.pp = back.tp_rows = back.tp_cols = 0;
                tsr_grid_layout(g, &back);
                ok(back.dp == D && back.pp == P && back.tp_rows == R && back.tp_cols == C,
                   "%s: tsr_grid_layout gives the layout back", name);

                /* The log prefix names this rank's coordinates. */
                char prefix[64];
                snprintf(prefix, sizeof prefix, "[dp%d pp%d tp(%d,%d)]", dp, pp, row, col);
                const char *got_prefix = tsr_log_prefix();
                is_str(got_prefix, prefix, "%s: log prefix", name);

                /* The world axis: a duplicate of the user's communicator, not the same one. */
                int cmp = MPI_UNEQUAL;
                MPI_Comm_compare(mpi[TSR_AXIS_WORLD], MPI_COMM_WORLD, &cmp);
                ok(cmp == MPI_CONGRUENT, "%s: world axis is congruent to MPI_COMM_WORLD but not it", name);

                /* Every axis communicator returns errors. */
                int eh_ok = 1;
                for (int a = 0; a < TSR_AXIS_COUNT; a++) {
                    MPI_Errhandler eh = MPI_ERRHANDLER_NULL;
                    MPI_Comm_get_errhandler(mpi[a], &eh);
                    if (eh != MPI_ERRORS_RETURN) {
                        eh_ok = 0;
                        fprintf(stderr, "#   [rank %d] %s: axis %s lacks MPI_ERRORS_RETURN\n", w, name, axis_names[a]);
                    }
                    if (eh != MPI_ERRHANDLER_NULL)
                        MPI_Errhandler_free(&eh);
                }
                ok(eh_ok, "%s: every axis communicator has MPI_ERRORS_RETURN", name);

                /* Expected size, own index and members of each axis. */
                int exp_size[TSR_AXIS_COUNT] = {n, D, P, R * C, C, R};
                int exp_index[TSR_AXIS_COUNT] = {w, dp, pp, tp, col, row};
                int *expected[TSR_AXIS_COUNT], *gathered[TSR_AXIS_COUNT];
                int mpi_size[TSR_AXIS_COUNT], mpi_rank[TSR_AXIS_COUNT];
                MPI_Request reqs[TSR_AXIS_COUNT];
                MPI_Status statuses[TSR_AXIS_COUNT];
                for (int a = 0; a < TSR_AXIS_COUNT; a++) {
                    MPI_Comm_size(mpi[a], &mpi_size[a]);
                    MPI_Comm_rank(mpi[a], &mpi_rank[a]);
                    expected[a] = calloc((size_t)exp_size[a], sizeof(int));
                    gathered[a] = calloc((size_t)mpi_size[a], sizeof(int));
                    for (int i = 0; i < exp_size[a]; i++) {
                        int e = 0;
                        switch ((tsr_axis_t)a) {
                        case TSR_AXIS_WORLD: e = i; break;
                        case TSR_AXIS_DP: e = rank_formula(P, R, C, i, pp, row, col); break;
                        case TSR_AXIS_PP: e = rank_formula(P, R, C, dp, i, row, col); break;
                        case TSR_AXIS_TP: e = rank_formula(P, R, C, dp, pp, i / C, i % C); break;
                        case TSR_AXIS_TP_ROW: e = rank_formula(P, R, C, dp, pp, row, i); break;
                        case TSR_AXIS_TP_COL: e = rank_formula(P, R, C, dp, pp, i, col); break;
                        default: break;
                        }
                        expected[a][i] = e;
                    }
                    /* One gather per axis, all six in flight together. */
                    MPI_Iallgather(&w, 1, MPI_INT, gathered[a], 1, MPI_INT, mpi[a], &reqs[a]);
                }
                MPI_Waitall(TSR_AXIS_COUNT, reqs, statuses);
                for (int a = 0; a < TSR_AXIS_COUNT; a++) {
                    int sr = tsr_comm_size(comms[a]) == exp_size[a] && tsr_comm_rank(comms[a]) == exp_index[a] &&
                             mpi_size[a] == exp_size[a] && mpi_rank[a] == exp_index[a];
                    if (!sr)
                        fprintf(stderr,
                                "#   [rank %d] %s: axis %s size %d (MPI %d) rank %d (MPI %d), expected size %d rank %d\n",
                                w, name, axis_names[a], tsr_comm_size(comms[a]), mpi_size[a], tsr_comm_rank(comms[a]),
                                mpi_rank[a], exp_size[a], exp_index[a]);
                    ok(sr, "%s: %s axis size %d and my rank in it", name, axis_names[a], exp_size[a]);
                    int members = mpi_size[a] == exp_size[a] &&
                                  memcmp(gathered[a], expected[a], (size_t)exp_size[a] * sizeof(int)) == 0;
                    if (!members) {
                        char got_s[160] = "", exp_s[160] = "";
                        for (int i = 0; i < mpi_size[a] && strlen(got_s) < 140; i++)
                            snprintf(got_s + strlen(got_s), sizeof got_s - strlen(got_s), " %d", gathered[a][i]);
                        for (int i = 0; i < exp_size[a] && strlen(exp_s) < 140; i++)
                            snprintf(exp_s + strlen(exp_s), sizeof exp_s - strlen(exp_s), " %d", expected[a][i]);
                        fprintf(stderr, "#   [rank %d] %s: axis %s members [%s ] expected [%s ]\n", w, name,
                                axis_names[a], got_s, exp_s);
                    }
                    ok(members, "%s: %s axis members in order", name, axis_names[a]);
                    free(expected[a]);
                    free(gathered[a]);
                }

                tsr_grid_destroy(&g);
                ok(g == NULL, "%s: tsr_grid_destroy sets the handle to NULL", name);
            }
        }
    }
    if (tap_rank() == 0) /* once, not once per rank */
        diag("%d grid shapes on %d ranks", shapes, n);

    /* The user's communicator is untouched: still usable, its error handler unchanged. */
    MPI_Errhandler world_eh_after;
    MPI_Comm_get_errhandler(MPI_COMM_WORLD, &world_eh_after);
    ok(world_eh_after == world_eh_before, "MPI_COMM_WORLD keeps its error handler");
    MPI_Errhandler_free(&world_eh_before);
    MPI_Errhandler_free(&world_eh_after);
    int sum = 0;
    MPI_Allreduce(&w, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    is_int(sum, n * (n - 1) / 2, "MPI_COMM_WORLD still usable after %d grids", shapes);

    tsr_grid_t none = NULL;
    tsr_grid_destroy(&none);
    ok(none == NULL, "tsr_grid_destroy accepts a NULL grid");
    tsr_grid_destroy(NULL);
    ok(1, "tsr_grid_destroy(NULL) does not crash");

    if (tap_rank() == 0) /* once, not once per rank */
        diag("%.2f s on %d ranks", MPI_Wtime() - t0, n);
    return tap_done();
}
