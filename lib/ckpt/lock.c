/*
 * lock.c: one job per checkpoint directory.
 *
 * Rank 0 holds a write lock on DIR/lock for the lifetime of the handle. The lock is an
 * open-file-description lock (fcntl F_OFD_SETLK where Linux has it, POSIX F_SETLK
 * elsewhere): the kernel drops it when the holder exits or is killed, so a crash never
 * leaves a stale lock, and a second job is refused at once, told who holds it. The file
 * itself stays; it names the last holder ("pid 1234 on node7 since 2026-12-01T10:00:00Z").
 */
#define _GNU_SOURCE /* F_OFD_SETLK */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ckpt/ckpt_impl.h"

#ifdef F_OFD_SETLK
#define LOCK_CMD F_OFD_SETLK
#else
#define LOCK_CMD F_SETLK
#endif

struct tsr_ckpt_lock {
    int fd; /* rank 0: the locked DIR/lock; -1 elsewhere */
};

/* Take the lock on an open DIR/lock; EAGAIN or EACCES when another holds it. */
static int take(int fd)
{
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = F_WRLCK;
    fl.l_whence = SEEK_SET; /* l_start = l_len = 0: the whole file */
    return fcntl(fd, LOCK_CMD, &fl);
}

/* Write who holds the lock into it, replacing the previous holder's line. */
static int write_holder(int fd)
{
    char host[256] = "?", when[32], line[400];
    time_t now = time(NULL);
    gethostname(host, sizeof host - 1);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    int n = snprintf(line, sizeof line, "pid %ld on %s since %s\n", (long)getpid(), host, when);
    return ftruncate(fd, 0) == 0 && pwrite(fd, line, (size_t)n, 0) == n && fsync(fd) == 0 ? 0 : -1;
}

/* Create, write, sync and remove a file in dir: the directory takes checkpoints. */
static tsr_status_t probe(const char *dir)
{
    tsr_status_t rc = TSR_OK;
    char *path = tsr__strdupf("%s/.tsr-probe.%ld", dir, (long)getpid());
    int fd = -1;
    TSR_CHECK(path, TSR_ERR_OUT_OF_MEMORY, "no memory for a path");
    fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    TSR_CHECK(fd >= 0, TSR_ERR_IO, "cannot create a file in %s: %s", dir, strerror(errno));
    TSR_CHECK(write(fd, "tessera\n", 8) == 8 && fsync(fd) == 0, TSR_ERR_IO, "cannot write a file in %s: %s", dir,
              strerror(errno));
    close(fd);
    fd = -1;
    TSR_CHECK(unlink(path) == 0, TSR_ERR_IO, "cannot remove a file from %s: %s", dir, strerror(errno));
cleanup:
    if (fd >= 0) {
        close(fd);
        unlink(path);
    }
    free(path);
    return rc;
}

/* Temporary files of the writer ("step_N.h5.JOB.tmp", ".reserve", "latest.JOB.tmp"): with
 * the lock held, any there was left by a job that died. */
static int is_leftover(const char *name)
{
    size_t len = strlen(name);
    int tmp = len > 4 && strcmp(name + len - 4, ".tmp") == 0, reserve = len > 8 && strcmp(name + len - 8, ".reserve") == 0;
    return (strncmp(name, "step_", 5) == 0 && strstr(name, ".h5.") && (tmp || reserve)) ||
           (strncmp(name, "latest.", 7) == 0 && tmp);
}

static void remove_leftovers(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    for (struct dirent *e; (e = readdir(d));) {
        char *path = is_leftover(e->d_name) ? tsr__strdupf("%s/%s", dir, e->d_name) : NULL;
        if (path)
            unlink(path);
        free(path);
    }
    closedir(d);
}

/* Rank 0's part: the directory, the lock, the probe. */
static tsr_status_t lock_dir(const char *dir, int *fd_out)
{
    tsr_status_t rc = TSR_OK;
    char *path = NULL;
    int fd = -1;
    TSR_TRY(tsr__ckpt_make_dir(dir));
    TSR_CHECK(path = tsr__strdupf("%s/lock", dir), TSR_ERR_OUT_OF_MEMORY, "no memory for a path");
    fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0666);
    TSR_CHECK(fd >= 0, TSR_ERR_IO, "cannot create %s: %s", path, strerror(errno));
    if (take(fd) != 0) {
        int err = errno;
        char holder[400] = "";
        TSR_CHECK(err == EAGAIN || err == EACCES, TSR_ERR_IO, "cannot lock %s: %s", path, strerror(err));
        ssize_t got = pread(fd, holder, sizeof holder - 1, 0);
        holder[got > 0 ? got : 0] = '\0';
        holder[strcspn(holder, "\n")] = '\0';
        TSR_CHECK(0, TSR_ERR_IO,
                  "checkpoint directory %s is in use by another job (%s holds %s; expected one job per directory)",
                  dir, holder[0] ? holder : "an unknown process", path);
    }
    TSR_CHECK(write_holder(fd) == 0, TSR_ERR_IO, "cannot write %s: %s", path, strerror(errno));
    TSR_TRY(probe(dir));
    remove_leftovers(dir);
    *fd_out = fd;
    fd = -1;
cleanup:
    if (fd >= 0)
        close(fd);
    free(path);
    return rc;
}

tsr_status_t tsr_ckpt_lock(tsr_comm_t comm, const char *dir, tsr_ckpt_lock_t *out)
{
    tsr_status_t rc = TSR_OK, mine = TSR_OK;
    struct tsr_ckpt_lock *l = tsr__calloc(1, sizeof *l);
    int rank = tsr_comm_rank(comm), size = tsr_comm_size(comm);
    char msg[1024] = "";
    *out = NULL;
    if (!l)
        mine = TSR_ERROR(TSR_ERR_OUT_OF_MEMORY, "no memory for a checkpoint lock");
    else
        l->fd = -1;
    if (mine == TSR_OK && rank == 0)
        mine = lock_dir(dir, &l->fd);
    /* Every rank returns the verdict of the lowest failing rank (rank 0 alone touches the directory). */
    int flag = mine != TSR_OK ? size - rank : 0;
    int32_t status = (int32_t)mine;
    if (mine != TSR_OK)
        snprintf(msg, sizeof msg, "%s", tsr_last_error());
    TSR_TRY(tsr_comm_allreduce(comm, TSR_IN_PLACE, &flag, 1, TSR_DTYPE_I32, TSR_REDUCE_MAX));
    if (flag) {
        TSR_TRY(tsr_comm_bcast(comm, &status, 1, TSR_DTYPE_I32, size - flag));
        TSR_TRY(tsr_comm_bcast(comm, msg, sizeof msg, TSR_DTYPE_U8, size - flag));
        TSR_CHECK(0, (tsr_status_t)status, "%s", msg);
    }
    *out = l;
    l = NULL;
cleanup:
    tsr_ckpt_unlock(&l);
    return rc;
}

void tsr_ckpt_unlock(tsr_ckpt_lock_t *lock)
{
    if (!lock || !*lock)
        return;
    if ((*lock)->fd >= 0)
        close((*lock)->fd); /* closing the descriptor releases the lock */
    free(*lock);
    *lock = NULL;
}
