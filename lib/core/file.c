/* file.c: checks of the files Tessera reads and writes, and formatted strings. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/internal.h"

char *tsr__strdupf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (s) {
        va_start(ap, fmt);
        vsnprintf(s, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    return s;
}

const char *tsr__file_kind(mode_t mode)
{
    if (S_ISREG(mode))
        return "a regular file";
    if (S_ISDIR(mode))
        return "a directory";
    if (S_ISFIFO(mode))
        return "a FIFO";
    if (S_ISSOCK(mode))
        return "a socket";
    if (S_ISCHR(mode))
        return "a character device";
    if (S_ISBLK(mode))
        return "a block device";
    return "not a regular file";
}

tsr_status_t tsr__check_regular(const char *path, const struct stat *st, const char *expected)
{
    if (S_ISREG(st->st_mode))
        return TSR_OK;
    return TSR_ERROR(TSR_ERR_IO, "%s is %s, not a regular file (expected %s)", path, tsr__file_kind(st->st_mode),
                     expected);
}

tsr_status_t tsr__stat_regular(const char *path, const char *expected)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return TSR_ERROR(TSR_ERR_IO, "%s: %s", path, strerror(errno));
    return tsr__check_regular(path, &st, expected);
}
