/*
 * nofalloc.c: an LD_PRELOAD module for tests/test_ckpt_enospc.sh: fallocate(2) says
 * EOPNOTSUPP, as on file systems without it (some NFS), so that the checkpoint writer
 * cannot reserve a dataset's bytes and a full disk fails the write itself.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>

int fallocate(int fd, int mode, off_t offset, off_t len)
{
    (void)fd, (void)mode, (void)offset, (void)len;
    errno = EOPNOTSUPP;
    return -1;
}

int fallocate64(int fd, int mode, off_t offset, off_t len)
{
    return fallocate(fd, mode, offset, len);
}
