/* log.c: leveled one-line logging to stderr, prefixed with the rank's grid coordinates. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#include "core/internal.h"

static const char *const level_names[] = {"error", "warn", "info", "debug"};

static int level = -1; /* -1: not yet read from TSR_LOG */
static char prefix[128];

tsr_status_t tsr_log_level_parse(const char *name, tsr_log_level_t *out)
{
    for (int i = TSR_LOG_ERROR; i <= TSR_LOG_DEBUG; i++) {
        if (name && strcasecmp(name, level_names[i]) == 0) {
            *out = (tsr_log_level_t)i;
            return TSR_OK;
        }
    }
    return TSR_ERROR(TSR_ERR_INVALID_ARG, "unknown log level \"%s\" (expected error, warn, info or debug)",
                     name ? name : "(null)");
}

tsr_log_level_t tsr_log_level(void)
{
    if (level < 0) {
        const char *env = getenv("TSR_LOG");
        level = TSR_LOG_WARN;
        /* Parsed here rather than by tsr_log_level_parse(), which logs, and logging reads the level. */
        for (int i = TSR_LOG_ERROR; env && *env && i <= TSR_LOG_DEBUG; i++)
            if (strcasecmp(env, level_names[i]) == 0)
                level = i;
    }
    return (tsr_log_level_t)level;
}

void tsr_log_set_level(tsr_log_level_t new_level)
{
    level = new_level;
}

void tsr_log_set_prefix(const char *new_prefix)
{
    snprintf(prefix, sizeof prefix, "%s", new_prefix ? new_prefix : "");
}

const char *tsr_log_prefix(void)
{
    return prefix;
}

void tsr_vlog(tsr_log_level_t msg_level, const char *fmt, va_list ap)
{
    if ((int)msg_level > (int)tsr_log_level())
        return;
    /* Format the whole line first so that ranks sharing a terminal do not interleave mid-line. */
    char line[1024];
    int n = snprintf(line, sizeof line, "%s%s%s: ", prefix, prefix[0] ? " " : "", level_names[msg_level]);
    if (n < 0 || (size_t)n >= sizeof line)
        n = 0;
    vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    fprintf(stderr, "%s\n", line);
}

void tsr_log(tsr_log_level_t msg_level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tsr_vlog(msg_level, fmt, ap);
    va_end(ap);
}
