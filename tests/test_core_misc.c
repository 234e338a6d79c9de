/*
 * test_core_misc: the clock and timers, the version and build line, the log prefix and level,
 * and the lines tsr_log writes to standard error.
 */
#define _POSIX_C_SOURCE 200809L
#include <errno.h>
#include <time.h>
#include <unistd.h>
#include <tessera.h>

#include "tap.h"

static void sleep_seconds(double s)
{
    struct timespec ts = {(time_t)s, (long)((s - (double)(time_t)s) * 1e9)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* Run tsr_log calls with standard error redirected to a temporary file; return what was
 * written (malloc'd, NUL-terminated), or NULL. No test point may be recorded in between. */
typedef void (*log_body_fn)(void);
static char *capture_stderr(log_body_fn body)
{
    fflush(stderr);
    FILE *tmp = tmpfile();
    if (!tmp)
        return NULL;
    int saved = dup(fileno(stderr));
    if (saved < 0 || dup2(fileno(tmp), fileno(stderr)) < 0) {
        fclose(tmp);
        return NULL;
    }
    body();
    fflush(stderr);
    dup2(saved, fileno(stderr));
    close(saved);
    fseek(tmp, 0, SEEK_END);
    long len = ftell(tmp);
    rewind(tmp);
    char *text = malloc((size_t)(len > 0 ? len : 0) + 1);
    size_t got = len > 0 ? fread(text, 1, (size_t)len, tmp) : 0;
    text[got] = '\0';
    fclose(tmp);
    return text;
}

static void log_with_prefix(void)
{
    tsr_log_set_level(TSR_LOG_WARN);
    tsr_log_set_prefix("[test 7]");
    tsr_log(TSR_LOG_WARN, "hello %d", 42);
    tsr_log(TSR_LOG_INFO, "hidden info %d", 1);  /* below the level */
    tsr_log(TSR_LOG_DEBUG, "hidden debug %d", 2); /* below the level */
    tsr_log(TSR_LOG_ERROR, "bad %s", "thing");
}

static void log_every_level(void)
{
    tsr_log_set_level(TSR_LOG_DEBUG);
    tsr_log_set_prefix("[p]");
    tsr_log(TSR_LOG_DEBUG, "d");
    tsr_log(TSR_LOG_INFO, "i");
    tsr_log(TSR_LOG_WARN, "w");
    tsr_log(TSR_LOG_ERROR, "e");
}

static void log_error_only(void)
{
    tsr_log_set_level(TSR_LOG_ERROR);
    tsr_log_set_prefix("[q]");
    tsr_log(TSR_LOG_WARN, "not shown");
    tsr_log(TSR_LOG_ERROR, "shown");
}

static void log_without_prefix(void)
{
    tsr_log_set_level(TSR_LOG_WARN);
    tsr_log_set_prefix(NULL);
    tsr_log(TSR_LOG_WARN, "plain %s", "line");
}

static void log_first_message(void)
{
    /* The first message of the process: the level comes from TSR_LOG now. */
    tsr_log(TSR_LOG_DEBUG, "debug before any level was set");
}

int main(int argc, char **argv)
{
    tap_init(&argc, &argv, "1");

    /* --- TSR_LOG is read when the first message is logged ------------------------------ */
    setenv("TSR_LOG", "info", 1);
    char *first = capture_stderr(log_first_message);
    is_int(tsr_log_level(), TSR_LOG_INFO, "with TSR_LOG=info, the level after the first message is info");
    ok(first && first[0] == '\0', "a debug message at level info prints nothing (got \"%s\")", first ? first : "(null)");
    free(first);

    /* --- Clock ------------------------------------------------------------------------- */
    {
        double prev = tsr_time_now(), t0 = prev;
        int monotonic = 1;
        for (int i = 0; i < 10000; i++) {
            double t = tsr_time_now();
            monotonic &= t >= prev;
            prev = t;
        }
        ok(monotonic, "tsr_time_now never goes backwards over 10000 calls");
        ok(prev - t0 < 1.0, "10000 calls of tsr_time_now take less than a second of its time (%.3g s)", prev - t0);
        double a = tsr_time_now();
        sleep_seconds(0.05);
        double b = tsr_time_now();
        ok(b - a >= 0.049 && b - a < 2.0, "tsr_time_now advances by the 50 ms slept (%.4f s)", b - a);
    }

    /* --- Timers ------------------------------------------------------------------------ */
    {
        tsr_timer_t t = TSR_TIMER_INIT;
        ok(t.started < 0 && t.total == 0.0 && t.count == 0, "TSR_TIMER_INIT is stopped with nothing accumulated");
        double d0 = tsr_timer_stop(&t);
        ok(d0 == 0.0 && t.count == 0 && t.total == 0.0, "stopping a stopped timer returns 0 and counts nothing");

        double outer0 = tsr_time_now();
        tsr_timer_start(&t);
        ok(t.started >= 0, "a started timer has a start time");
        sleep_seconds(0.02);
        double d1 = tsr_timer_stop(&t);
        double outer1 = tsr_time_now();
        ok(d1 >= 0.019 && d1 <= outer1 - outer0 + 1e-3,
           "the first interval %.4f s lies between the 20 ms slept and the enclosing %.4f s",
           d1, outer1 - outer0);
        is_int(t.count, 1, "count is 1 after one interval");
        is_rel(t.total, d1, 1e-12, "total is the first interval");
        ok(t.started < 0, "a stopped timer's start time is negative");

        tsr_timer_start(&t);
        sleep_seconds(0.01);
        double d2 = tsr_timer_stop(&t);
        ok(d2 >= 0.009, "the second interval %.4f s covers the 10 ms slept", d2);
        is_int(t.count, 2, "count is 2 after two intervals");
        is_rel(t.total, d1 + d2, 1e-12, "total is the sum of both intervals");
        ok(t.total >= 0.0, "total is not negative");

        /* Restarting a running timer drops the part before the restart. */
        tsr_timer_start(&t);
        sleep_seconds(0.03);
        double restart_at = tsr_time_now();
        tsr_timer_start(&t);
        sleep_seconds(0.005);
        double d3 = tsr_timer_stop(&t);
        double end = tsr_time_now();
        ok(d3 >= 0.004 && d3 <= end - restart_at + 1e-3, "after a restart, the interval %.4f s counts from the restart (<= %.4f s)",
           d3, end - restart_at);
        is_int(t.count, 3, "a restarted interval counts once");
        is_rel(t.total, d1 + d2 + d3, 1e-12, "total adds the restarted interval only");

        /* An interval of nothing. */
        tsr_timer_start(&t);
        double d4 = tsr_timer_stop(&t);
        ok(d4 >= 0.0 && d4 < 0.5, "an empty interval is small and not negative (%.3g s)", d4);

        tsr_timer_reset(&t);
        ok(t.count == 0 && t.total == 0.0 && t.started < 0, "tsr_timer_reset forgets everything and stops the timer");
        tsr_timer_start(&t);
        tsr_timer_reset(&t);
        ok(tsr_timer_stop(&t) == 0.0 && t.count == 0, "a timer reset while running is stopped");
    }

    /* --- Version and build line ---------------------------------------------------------- */
    {
        is_str(tsr_version(), TSR_VERSION, "tsr_version() equals TSR_VERSION");
        char want[64];
        snprintf(want, sizeof want, "%d.%d.%d", TSR_VERSION_MAJOR, TSR_VERSION_MINOR, TSR_VERSION_PATCH);
        is_str(TSR_VERSION, want, "TSR_VERSION is MAJOR.MINOR.PATCH");
        const char *info = tsr_build_info();
        ok(info != NULL && info[0] != '\0', "tsr_build_info() is not empty");
        diag("build info: %s", info ? info : "(null)");
        ok(info != NULL && strstr(info, TSR_VERSION) != NULL, "tsr_build_info() mentions the version " TSR_VERSION);
        ok(info != NULL && strchr(info, '\n') == NULL, "tsr_build_info() is one line");
        is_int(tsr_device_kind_built(TSR_DEVICE_CUDA), TSR_HAVE_CUDA,
               "tsr_device_kind_built(CUDA) agrees with TSR_HAVE_CUDA");
    }

    /* --- Log prefix and level ------------------------------------------------------------ */
    {
        tsr_log_set_prefix(NULL);
        is_str(tsr_log_prefix(), "", "after clearing, the prefix is \"\"");
        char buf[32] = "[dp0 pp1 tp(0,1)]";
        tsr_log_set_prefix(buf);
        is_str(tsr_log_prefix(), "[dp0 pp1 tp(0,1)]", "tsr_log_prefix returns the prefix set");
        strcpy(buf, "[changed]");
        is_str(tsr_log_prefix(), "[dp0 pp1 tp(0,1)]", "the prefix is a copy, not the caller's buffer");
        tsr_log_set_prefix("[dp3 pp0 tp(1,1)]");
        is_str(tsr_log_prefix(), "[dp3 pp0 tp(1,1)]", "setting the prefix again replaces it");
        tsr_log_set_prefix(NULL);
        is_str(tsr_log_prefix(), "", "NULL clears the prefix");
        tsr_log_set_prefix("x");
        tsr_log_set_prefix("");
        is_str(tsr_log_prefix(), "", "an empty prefix reads back as \"\"");

        static const tsr_log_level_t levels[] = {TSR_LOG_DEBUG, TSR_LOG_ERROR, TSR_LOG_INFO, TSR_LOG_WARN};
        for (int i = 0; i < 4; i++) {
            tsr_log_set_level(levels[i]);
            is_int(tsr_log_level(), levels[i], "tsr_log_set_level(%d) then tsr_log_level()", (int)levels[i]);
        }
    }

    /* --- What tsr_log writes ------------------------------------------------------------- */
    {
        char *out = capture_stderr(log_with_prefix);
        is_str(out, "[test 7] warn: hello 42\n[test 7] error: bad thing\n",
               "at level warn, warn and error lines are written as \"<prefix> <level>: <message>\\n\"; info and debug are not");
        free(out);
        out = capture_stderr(log_every_level);
        is_str(out, "[p] debug: d\n[p] info: i\n[p] warn: w\n[p] error: e\n", "at level debug, every level is written");
        free(out);
        out = capture_stderr(log_error_only);
        is_str(out, "[q] error: shown\n", "at level error, only errors are written");
        free(out);
        out = capture_stderr(log_without_prefix);
        ok(out && strstr(out, "warn: plain line\n") != NULL && strchr(out, '[') == NULL,
           "without a prefix the line is the level and message (\"%s\")", out ? out : "(null)");
        ok(out && out[0] && strchr(out, '\n') == out + strlen(out) - 1, "without a prefix, one line is written");
        free(out);
        tsr_log_set_prefix(NULL);
        tsr_log_set_level(TSR_LOG_WARN);
    }

    return tap_done();
}
