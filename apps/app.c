/* apps/app.c: the error conventions tsr-train and tsr-generate share (apps/app.h). */
#include "app.h"

#include <stdarg.h>
#include <stdio.h>

MPI_Comm agree_comm = MPI_COMM_WORLD;
static char app_error[512];

tsr_status_t set_app_error(tsr_status_t status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(app_error, sizeof app_error, fmt, ap);
    va_end(ap);
    return status;
}

int usage_error(const char *fmt, ...)
{
    int rank = 0;
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (rank == 0) {
        va_list ap;
        va_start(ap, fmt);
        fprintf(stderr, "%s: ", app_name);
        vfprintf(stderr, fmt, ap);
        fputs(" (try --help)\n", stderr);
        va_end(ap);
    }
    return 2;
}

int failed(tsr_status_t rc, const char *what)
{
    int rank, size;
    MPI_Comm_rank(agree_comm, &rank);
    MPI_Comm_size(agree_comm, &size);
    /* the lowest rank with a cause, else the lowest with an echo of another's failure */
    int mine = rc == TSR_OK ? 2 * size : rc == TSR_ERR_ABORTED ? size + rank : rank, first = 2 * size;
    MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, agree_comm);
    if (first == 2 * size)
        return 0;
    if (rank == first % size)
        fprintf(stderr, "%s: %s%s%s\n", app_name, what ? what : "", what ? ": " : "",
                app_error[0] ? app_error : tsr_last_error());
    return 1;
}
