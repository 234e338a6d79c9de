/*
 * test_ckpt_lock: two writers of one checkpoint directory (issue 16).
 *
 * Two writers of the same step in the same directory, interleaved dataset by dataset as two
 * jobs would be, each write a temporary file of their own: both commit, and the committed
 * file is whole (it verifies and holds the values of the writer that committed last).
 *
 * tsr_ckpt_lock: a directory locked by one process is refused to another (here: rank 1 on
 * its own communicator while rank 0 holds it), naming the holder's pid; after
 * tsr_ckpt_unlock the other gets it. A second lock in the same process is refused too (an
 * open-file-description lock). Locking creates the directory, refuses a file, and removes
 * the temporary files of writers that died, nothing else.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <tessera.h>

#include "tap.h"

static char dir[256];

static int exists(const char *name)
{
    char path[512];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return stat(path, &st) == 0;
}

static void touch(const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    if (f)
        fclose(f);
}

/* Whether dir holds a file whose name ends with suffix. */
static int any_ending(const char *suffix)
{
    char cmd[600];
    snprintf(cmd, sizeof cmd, "ls '%s' | grep -q '%s$'", dir, suffix);
    return system(cmd) == 0;
}

int main(int argc, char **argv)
{
    tap_init(&argc, &argv, "1 2");
    int rank = tap_rank(), size = tap_size();
    tsr_comm_t world = NULL, self = NULL;
    tsr_comm_create(MPI_COMM_WORLD, &world);
    tsr_comm_create(MPI_COMM_SELF, &self);
    if (rank == 0) {
        snprintf(dir, sizeof dir, "%s/tsr-ckpt-lock-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
        if (!mkdtemp(dir))
            dir[0] = '\0';
    }
    MPI_Bcast(dir, sizeof dir, MPI_CHAR, 0, MPI_COMM_WORLD);

    /* --- two writers of step 5, interleaved --- */
    enum { N = 64 };
    const int64_t dims[1] = {N};
    int64_t lo = N * rank / size, hi = N * (rank + 1) / size;
    tsr_ckpt_piece_t piece = tsr_ckpt_block(0, 1, lo, hi - lo);
    float a[N], b[N];
    for (int i = 0; i < N; i++)
        a[i] = (float)i, b[i] = (float)(1000 + i);
    tsr_ckpt_writer_t wa = NULL, wb = NULL;
    tsr_status_t ra = tsr_ckpt_writer_create(world, dir, 5, &wa);
    tsr_status_t rb = tsr_ckpt_writer_create(world, dir, 5, &wb);
    ok(ra == TSR_OK && rb == TSR_OK, "two writers of step 5 in one directory start");
    ok(any_ending(".tmp") && !exists("step_5.h5.tmp"), "each writes a temporary file of its own (not step_5.h5.tmp)");
    for (int k = 0; k < 3; k++) {
        char name[32];
        snprintf(name, sizeof name, "/params/t%d", k);
        if (ra == TSR_OK)
            ra = tsr_ckpt_write_f32(wa, name, 1, dims, &piece, a + lo);
        if (rb == TSR_OK)
            rb = tsr_ckpt_write_f32(wb, name, 1, dims, &piece, b + lo);
    }
    if (ra == TSR_OK)
        ra = tsr_ckpt_commit(&wa, 0);
    else
        tsr_ckpt_abort(&wa);
    if (rb == TSR_OK)
        rb = tsr_ckpt_commit(&wb, 0);
    else
        tsr_ckpt_abort(&wb);
    if (ra != TSR_OK || rb != TSR_OK)
        diag("commit: %s", tsr_last_error());
    ok(ra == TSR_OK && rb == TSR_OK, "both commit");
    tsr_ckpt_reader_t r = NULL;
    float got[N] = {0};
    char path[512];
    snprintf(path, sizeof path, "%s/step_5.h5", dir);
    tsr_status_t rr = tsr_ckpt_reader_open(world, path, &r);
    if (rr == TSR_OK)
        rr = tsr_ckpt_verify(r);
    if (rr == TSR_OK)
        rr = tsr_ckpt_read_f32(r, "/params/t1", 1, dims, &piece, got + lo);
    if (rr != TSR_OK)
        diag("step_5.h5: %s", tsr_last_error());
    tsr_ckpt_reader_close(&r);
    ok(rr == TSR_OK && memcmp(got + lo, b + lo, (size_t)(hi - lo) * sizeof *got) == 0,
       "the committed step_5.h5 verifies and holds the last committer's values");
    ok(!any_ending(".tmp") && !any_ending(".reserve"), "no temporary file is left");
    MPI_Barrier(MPI_COMM_WORLD);

    /* --- tsr_ckpt_lock --- */
    char sub[300], file[300];
    snprintf(sub, sizeof sub, "%s/locked/a", dir);
    snprintf(file, sizeof file, "%s/step_5.h5", dir);
    tsr_ckpt_lock_t lock = NULL, again = NULL;
    if (rank == 0) {
        touch("step_9.h5.123-00ab.tmp");
        touch("step_9.h5.123-00ab.reserve");
        touch("latest.123-00ab.tmp");
        touch("notes.tmp");
    }
    MPI_Barrier(MPI_COMM_WORLD);
    tsr_status_t rl = tsr_ckpt_lock(world, dir, &lock);
    ok(rl == TSR_OK && lock, "the directory locks");
    ok(!exists("step_9.h5.123-00ab.tmp") && !exists("step_9.h5.123-00ab.reserve") && !exists("latest.123-00ab.tmp") &&
           exists("notes.tmp") && exists("step_5.h5"),
       "locking removes the temporary files of writers that died, nothing else");
    if (rank == 0) {
        tsr_status_t st = tsr_ckpt_lock(self, dir, &again);
        char pid[64];
        snprintf(pid, sizeof pid, "(pid %ld on ", (long)getpid());
        ok(st == TSR_ERR_IO && !again && strstr(tsr_last_error(), "is in use by another job") &&
               strstr(tsr_last_error(), pid),
           "a second lock in the same process is refused, naming the holder");
    } else {
        ok(1, "(rank 0 checks the second lock in its process)");
    }
    MPI_Barrier(MPI_COMM_WORLD);
    if (size > 1) {
        long holder = rank == 0 ? (long)getpid() : 0;
        MPI_Bcast(&holder, 1, MPI_LONG, 0, MPI_COMM_WORLD);
        tsr_status_t st = TSR_OK;
        char pid[64];
        snprintf(pid, sizeof pid, "(pid %ld on ", holder);
        if (rank == 1)
            st = tsr_ckpt_lock(self, dir, &again);
        if (rank == 1 && st != TSR_ERR_IO)
            diag("rank 1: %s: %s", tsr_status_name(st), tsr_last_error());
        ok(rank != 1 || (st == TSR_ERR_IO && !again && strstr(tsr_last_error(), pid)),
           "another process (rank 1) is refused while rank 0 holds the lock, naming rank 0's pid");
        MPI_Barrier(MPI_COMM_WORLD); /* rank 0 holds the lock until rank 1 has tried */
        tsr_ckpt_unlock(&lock);
        MPI_Barrier(MPI_COMM_WORLD);
        if (rank == 1)
            st = tsr_ckpt_lock(self, dir, &again);
        ok(rank != 1 || (st == TSR_OK && again), "after tsr_ckpt_unlock, rank 1 gets it");
        tsr_ckpt_unlock(&again);
    } else {
        skip(2, "one process (needs 2 ranks)");
    }
    tsr_ckpt_unlock(&lock);
    MPI_Barrier(MPI_COMM_WORLD);

    rl = tsr_ckpt_lock(world, sub, &lock);
    ok(rl == TSR_OK && access(sub, F_OK) == 0, "locking a directory that does not exist creates it");
    tsr_ckpt_unlock(&lock);
    rl = tsr_ckpt_lock(world, file, &lock);
    ok(rl == TSR_ERR_IO && !lock && strstr(tsr_last_error(), "is a regular file, not a directory"),
       "locking a file as a directory is refused on every rank");
    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            diag("could not remove %s", dir);
    }
    tsr_comm_destroy(&self);
    tsr_comm_destroy(&world);
    return tap_done();
}
