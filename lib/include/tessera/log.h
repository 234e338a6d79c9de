/**
 * @file tessera/log.h
 * @brief One line per event, prefixed with the rank's place in the process grid.
 *
 * The level comes from the environment variable TSR_LOG (error, warn, info or debug;
 * default warn) when the first message is logged, or from tsr_log_set_level(). Lines go
 * to standard error as "[dp0 pp1 tp(0,1)] warn: message". Creating a grid sets the prefix.
 */
#ifndef TESSERA_LOG_H
#define TESSERA_LOG_H

#include <stdarg.h>
#include <tessera/status.h>
#include <tessera/visibility.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Log levels, most severe first. */
typedef enum tsr_log_level {
    TSR_LOG_ERROR = 0,
    TSR_LOG_WARN = 1,
    TSR_LOG_INFO = 2,
    TSR_LOG_DEBUG = 3
} tsr_log_level_t;

/** The current level: messages at or above this severity are printed. */
TSR_API tsr_log_level_t tsr_log_level(void);

/** Override the level taken from TSR_LOG. */
TSR_API void tsr_log_set_level(tsr_log_level_t level);

/**
 * Parse a level name ("error", "warn", "info", "debug", case-insensitive).
 * @return #TSR_OK, or TSR_ERR_INVALID_ARG naming the accepted values.
 */
TSR_API tsr_status_t tsr_log_level_parse(const char *name, tsr_log_level_t *out);

/** Set the prefix printed before each line, e.g. "[dp0 pp1 tp(0,1)]" (copied; NULL clears). */
TSR_API void tsr_log_set_prefix(const char *prefix);

/** The current prefix ("" if none). */
TSR_API const char *tsr_log_prefix(void);

/** Log one line at @p level if the current level allows it. A trailing newline is added. */
TSR_API void tsr_log(tsr_log_level_t level, const char *fmt, ...) TSR_PRINTF(2, 3);

/** tsr_log() with a va_list. */
TSR_API void tsr_vlog(tsr_log_level_t level, const char *fmt, va_list ap);

#ifdef __cplusplus
}
#endif
#endif /* TESSERA_LOG_H */
