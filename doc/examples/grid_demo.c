/*
 * grid_demo.c: build a dp × pp × tp process grid and communicate along each of its axes.
 *
 *   mpiexec -n 4 grid_demo [LAYOUT]      (default layout: dp=1,pp=1,tp=2x2)
 *
 * Each rank contributes its world rank; the demo sums it over its tp row, its tp column
 * and its data-parallel group through Tessera, checks each sum against the ranks the grid
 * says belong there, and prints the bytes each communicator counted. A layout that does
 * not fit the number of ranks is reported in one line, with a non-zero exit.
 *
 * Build against an installed Tessera:
 *   mpicc grid_demo.c $(pkg-config --cflags --libs tessera) -o grid_demo
 */
#include <stdio.h>
#include <stdlib.h>
#include <tessera.h>

#define LINE 256

/* Sum of the world ranks that share this rank's group along one axis, from coordinates. */
static int expected_sum(tsr_grid_t grid, tsr_axis_t axis)
{
    tsr_layout_t l;
    tsr_grid_coords_t me;
    tsr_grid_layout(grid, &l);
    tsr_grid_coords(grid, &me);
    int sum = 0;
    for (int i = 0; i < (axis == TSR_AXIS_TP_ROW ? l.tp_cols : axis == TSR_AXIS_TP_COL ? l.tp_rows : l.dp); i++) {
        if (axis == TSR_AXIS_TP_ROW)
            sum += tsr_grid_rank_of(grid, me.dp, me.pp, me.tp_row, i);
        else if (axis == TSR_AXIS_TP_COL)
            sum += tsr_grid_rank_of(grid, me.dp, me.pp, i, me.tp_col);
        else
            sum += tsr_grid_rank_of(grid, i, me.pp, me.tp_row, me.tp_col);
    }
    return sum;
}

int main(int argc, char **argv)
{
    const tsr_axis_t axes[] = {TSR_AXIS_TP_ROW, TSR_AXIS_TP_COL, TSR_AXIS_DP};
    tsr_layout_t layout = TSR_LAYOUT_INIT;
    tsr_grid_t grid = NULL;
    tsr_status_t rc;
    int rank, failures = 0;

    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    rc = tsr_layout_parse(argc > 1 ? argv[1] : "dp=1,pp=1,tp=2x2", &layout);
    if (rc == TSR_OK)
        rc = tsr_grid_create(MPI_COMM_WORLD, &layout, &grid);
    if (rc != TSR_OK) {
        if (rank == 0)
            fprintf(stderr, "grid_demo: %s: %s\n", tsr_strerror(rc), tsr_last_error());
        MPI_Finalize();
        return 1;
    }

    /* One line per rank, gathered so rank 0 prints them in order. */
    char line[LINE], *lines = NULL;
    tsr_grid_coords_t me;
    tsr_grid_coords(grid, &me);
    int len = snprintf(line, sizeof line, "rank %d %s:", me.rank, tsr_log_prefix());
    for (size_t a = 0; a < sizeof axes / sizeof axes[0]; a++) {
        tsr_comm_t comm = tsr_grid_comm(grid, axes[a]);
        int sum = me.rank, expected = expected_sum(grid, axes[a]);
        rc = tsr_comm_allreduce(comm, TSR_IN_PLACE, &sum, 1, TSR_DTYPE_I32, TSR_REDUCE_SUM);
        if (rc != TSR_OK || sum != expected) {
            fprintf(stderr, "grid_demo: rank %d: sum over %s is %d, expected %d (%s)\n", me.rank,
                    tsr_axis_name(axes[a]), sum, expected, rc ? tsr_last_error() : "wrong value");
            failures++;
        }
        tsr_comm_counters_t counted;
        tsr_comm_counters(comm, &counted);
        len += snprintf(line + len, sizeof line - (size_t)len, "  %s sum %2d over %d ranks, %llu B sent;",
                        tsr_axis_name(axes[a]), sum, tsr_comm_size(comm), (unsigned long long)counted.bytes_sent);
    }
    if (rank == 0)
        lines = malloc((size_t)me.size * LINE);
    MPI_Gather(line, LINE, MPI_CHAR, lines, LINE, MPI_CHAR, 0, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, &failures, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
    if (rank == 0) {
        char text[TSR_LAYOUT_STRLEN];
        for (int r = 0; r < me.size; r++)
            printf("%s\n", lines + (size_t)r * LINE);
        printf("grid_demo: %s on %d ranks: %s\n", tsr_layout_format(&layout, text, sizeof text), me.size,
               failures ? "FAILED" : "every sum matches the grid");
        free(lines);
    }
    tsr_grid_destroy(&grid);
    MPI_Finalize();
    return failures ? 1 : 0;
}
