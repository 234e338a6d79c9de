/* status.c: status messages from the X-macro table and the per-thread last-error detail. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "core/internal.h"

static const char *const status_messages[] = {
#define TSR_STATUS_MESSAGE_(name, msg) msg,
    TSR_STATUS_MAP(TSR_STATUS_MESSAGE_)
#undef TSR_STATUS_MESSAGE_
};

static const char *const status_names[] = {
#define TSR_STATUS_NAME_(name, msg) #name,
    TSR_STATUS_MAP(TSR_STATUS_NAME_)
#undef TSR_STATUS_NAME_
};

/* The last error of this thread. A fixed buffer: raising an error never allocates. */
static _Thread_local struct {
    tsr_status_t status;
    const char *file;
    int line;
    char detail[1024];
} last_error;

const char *tsr_strerror(tsr_status_t status)
{
    if ((unsigned)status >= TSR_STATUS_COUNT_)
        return "unknown status";
    return status_messages[status];
}

const char *tsr_status_name(tsr_status_t status)
{
    if ((unsigned)status >= TSR_STATUS_COUNT_)
        return "UNKNOWN";
    return status_names[status];
}

tsr_status_t tsr__error(tsr_status_t status, const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_error.detail, sizeof last_error.detail, fmt, ap);
    va_end(ap);
    last_error.status = status;
    last_error.file = file;
    last_error.line = line;
    tsr_log(TSR_LOG_DEBUG, "%s:%d: %s: %s", file, line, tsr_strerror(status), last_error.detail);
    return status;
}

tsr_status_t tsr__error_mpi(int mpi_code, const char *call, const char *file, int line)
{
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(mpi_code, text, &len) != MPI_SUCCESS)
        snprintf(text, sizeof text, "MPI error code %d", mpi_code);
    /* MPI messages can span lines; keep the detail to one. */
    for (char *p = text; *p; p++)
        if (*p == '\n')
            *p = ' ';
    return tsr__error(TSR_ERR_MPI, file, line, "%s failed: %s", call, text);
}

const char *tsr_last_error(void)
{
    return last_error.detail;
}

tsr_status_t tsr_last_error_status(void)
{
    return last_error.status;
}

void tsr_last_error_location(const char **file, int *line)
{
    if (file)
        *file = last_error.file ? last_error.file : "";
    if (line)
        *line = last_error.line;
}

void tsr_clear_error(void)
{
    memset(&last_error, 0, sizeof last_error);
}
