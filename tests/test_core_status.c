/*
 * test_core_status: status codes and their messages, the detail of the last error
 * (tsr_last_error and friends), and parsing of log level names.
 */
#include <ctype.h>
#include <pthread.h>
#include <tessera.h>

#include "tap.h"

/* The table as the header defines it: code, symbolic name, message. */
static const struct {
    tsr_status_t code;
    const char *name;
    const char *message;
} expected_codes[] = {
#define ROW_(name, msg) {TSR_##name, #name, msg},
    TSR_STATUS_MAP(ROW_)
#undef ROW_
};
static const int n_codes = (int)(sizeof expected_codes / sizeof expected_codes[0]);

/* Case-insensitive substring test. */
static int contains_ci(const char *haystack, const char *needle)
{
    if (!haystack || !needle)
        return 0;
    size_t hn = strlen(haystack), nn = strlen(needle);
    for (size_t i = 0; i + nn <= hn; i++) {
        size_t j = 0;
        while (j < nn && tolower((unsigned char)haystack[i + j]) == tolower((unsigned char)needle[j]))
            j++;
        if (j == nn)
            return 1;
    }
    return 0;
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = s ? strlen(s) : 0, m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* Check that the last error is `status`, that its detail mentions each of `words`
 * (NULL-terminated) and that its location is a library source line. */
static void check_last_error(const char *what, tsr_status_t got, tsr_status_t status, const char *const *words)
{
    is_int(got, status, "%s returns %s", what, tsr_status_name(status));
    is_int(tsr_last_error_status(), status, "%s: tsr_last_error_status() is %s", what, tsr_status_name(status));
    const char *detail = tsr_last_error();
    ok(detail != NULL && detail[0] != '\0', "%s: tsr_last_error() is not empty", what);
    if (detail && tap_rank() == 0)
        diag("%s: detail \"%s\"", what, detail);
    for (const char *const *w = words; *w; w++)
        ok(contains_ci(detail, *w), "%s: the detail mentions \"%s\"", what, *w);
    const char *file = NULL;
    int line = -1;
    tsr_last_error_location(&file, &line);
    ok(file != NULL && strstr(file, "lib/") != NULL && ends_with(file, ".c"),
       "%s: the error location is a source file under lib/ (%s)", what, file ? file : "(null)");
    ok(line > 0, "%s: the error location has a line number > 0 (%d)", what, line);
}

static void check_no_error(const char *when)
{
    const char *detail = tsr_last_error();
    is_str(detail, "", "%s: tsr_last_error() is empty", when);
    is_int(tsr_last_error_status(), TSR_OK, "%s: tsr_last_error_status() is TSR_OK", when);
    const char *file = NULL;
    int line = -1;
    tsr_last_error_location(&file, &line);
    is_str(file, "", "%s: the error location file is \"\"", when);
    is_int(line, 0, "%s: the error location line is 0", when);
}

/* A thread that raises an error of its own and reports what it saw. */
struct thread_result {
    tsr_status_t status_before, status_after, parse_rc;
    int detail_mentions_bad_value;
};

static void *thread_main(void *arg)
{
    struct thread_result *r = arg;
    r->status_before = tsr_last_error_status();
    tsr_log_level_t level;
    r->parse_rc = tsr_log_level_parse("thread-only-level", &level);
    r->status_after = tsr_last_error_status();
    r->detail_mentions_bad_value = contains_ci(tsr_last_error(), "thread-only-level");
    return NULL;
}

int main(int argc, char **argv)
{
    tap_init(&argc, &argv, "1 2 4");

    /* --- Messages and names of every code -------------------------------------------- */
    is_int(n_codes, TSR_STATUS_COUNT_, "TSR_STATUS_COUNT_ is the number of rows of TSR_STATUS_MAP");
    is_int(TSR_OK, 0, "TSR_OK is 0");
    for (int i = 0; i < n_codes; i++) {
        tsr_status_t code = expected_codes[i].code;
        is_int(code, i, "TSR_%s is numbered %d", expected_codes[i].name, i);
        const char *msg = tsr_strerror(code);
        ok(msg != NULL && msg[0] != '\0', "tsr_strerror(TSR_%s) is not empty", expected_codes[i].name);
        is_str(msg, expected_codes[i].message, "tsr_strerror(TSR_%s) is the table's message", expected_codes[i].name);
        is_str(tsr_status_name(code), expected_codes[i].name, "tsr_status_name(TSR_%s)", expected_codes[i].name);
    }
    is_str(tsr_strerror(TSR_OK), "success", "tsr_strerror(TSR_OK) is \"success\"");

    int distinct_msgs = 1, distinct_names = 1;
    for (int i = 0; i < n_codes; i++)
        for (int j = i + 1; j < n_codes; j++) {
            const char *a = tsr_strerror(expected_codes[i].code), *b = tsr_strerror(expected_codes[j].code);
            if (!a || !b || strcmp(a, b) == 0)
                distinct_msgs = 0;
            a = tsr_status_name(expected_codes[i].code);
            b = tsr_status_name(expected_codes[j].code);
            if (!a || !b || strcmp(a, b) == 0)
                distinct_names = 0;
        }
    ok(distinct_msgs, "tsr_strerror() gives a distinct message for every code");
    ok(distinct_names, "tsr_status_name() gives a distinct name for every code");

    /* Values outside the table. */
    const int bad_values[] = {TSR_STATUS_COUNT_, TSR_STATUS_COUNT_ + 1, 1000, -1};
    for (size_t i = 0; i < sizeof bad_values / sizeof bad_values[0]; i++) {
        tsr_status_t bad = (tsr_status_t)bad_values[i];
        const char *msg = tsr_strerror(bad);
        ok(msg != NULL && contains_ci(msg, "unknown"), "tsr_strerror(%d) (out of range) says \"unknown\" (got \"%s\")",
           bad_values[i], msg ? msg : "(null)");
        const char *name = tsr_status_name(bad);
        ok(name != NULL, "tsr_status_name(%d) (out of range) is not NULL", bad_values[i]);
    }

    /* --- The last error ----------------------------------------------------------------- */
    check_no_error("before any error");

    tsr_device_kind_t kind = TSR_DEVICE_CPU;
    tsr_status_t rc = tsr_device_kind_parse("tpu", &kind);
    check_last_error("tsr_device_kind_parse(\"tpu\")", rc, TSR_ERR_INVALID_ARG,
                     (const char *const[]){"tpu", "cpu", "cuda", NULL});

    tsr_clear_error();
    check_no_error("after tsr_clear_error()");

    tsr_layout_t layout = TSR_LAYOUT_INIT;
    rc = tsr_layout_parse("dp=0", &layout);
    check_last_error("tsr_layout_parse(\"dp=0\")", rc, TSR_ERR_INVALID_ARG, (const char *const[]){"dp", NULL});

    /* A second error replaces the first. */
    rc = tsr_layout_parse("pp=zebra", &layout);
    check_last_error("tsr_layout_parse(\"pp=zebra\") after another error", rc, TSR_ERR_INVALID_ARG,
                     (const char *const[]){"zebra", NULL});

    tsr_log_level_t level = TSR_LOG_WARN;
    rc = tsr_log_level_parse("verbose", &level);
    check_last_error("tsr_log_level_parse(\"verbose\")", rc, TSR_ERR_INVALID_ARG,
                     (const char *const[]){"verbose", "error", "warn", "info", "debug", NULL});
    ok(!contains_ci(tsr_last_error(), "zebra"), "the newer error's detail does not keep the older one's text");

    tsr_clear_error();
    check_no_error("after a second tsr_clear_error()");

    /* Errors are per thread: a thread sees none of this one's and raises its own unseen here. */
    rc = tsr_device_kind_parse("main-thread-kind", &kind);
    is_int(rc, TSR_ERR_INVALID_ARG, "tsr_device_kind_parse(\"main-thread-kind\") fails in the main thread");
    struct thread_result tr = {TSR_ERR_INTERNAL, TSR_OK, TSR_OK, 0};
    pthread_t thread;
    int created = pthread_create(&thread, NULL, thread_main, &tr) == 0;
    if (created)
        pthread_join(thread, NULL);
    ok(created, "a second thread runs");
    is_int(tr.status_before, TSR_OK, "a new thread starts with no last error");
    is_int(tr.parse_rc, TSR_ERR_INVALID_ARG, "tsr_log_level_parse fails in the second thread");
    is_int(tr.status_after, TSR_ERR_INVALID_ARG, "the second thread sees its own error status");
    ok(tr.detail_mentions_bad_value, "the second thread's detail mentions its own bad value");
    ok(contains_ci(tsr_last_error(), "main-thread-kind") && !contains_ci(tsr_last_error(), "thread-only-level"),
       "the main thread's detail is still its own error");
    tsr_clear_error();

    /* --- Log level names ----------------------------------------------------------------- */
    static const struct {
        const char *text;
        tsr_log_level_t level;
    } names[] = {
        {"error", TSR_LOG_ERROR}, {"warn", TSR_LOG_WARN},   {"info", TSR_LOG_INFO},   {"debug", TSR_LOG_DEBUG},
        {"ERROR", TSR_LOG_ERROR}, {"Warn", TSR_LOG_WARN},   {"INFO", TSR_LOG_INFO},   {"DeBuG", TSR_LOG_DEBUG},
        {"eRRoR", TSR_LOG_ERROR}, {"WARN", TSR_LOG_WARN},   {"Info", TSR_LOG_INFO},   {"DEBUG", TSR_LOG_DEBUG},
    };
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        /* Start from a level different from the expected one, so a parse that writes nothing fails. */
        tsr_log_level_t out = names[i].level == TSR_LOG_DEBUG ? TSR_LOG_ERROR : TSR_LOG_DEBUG;
        rc = tsr_log_level_parse(names[i].text, &out);
        is_int(rc, TSR_OK, "tsr_log_level_parse(\"%s\") succeeds", names[i].text);
        is_int(out, names[i].level, "tsr_log_level_parse(\"%s\") gives level %d", names[i].text, (int)names[i].level);
    }
    static const char *const bad_names[] = {"verbose", "", "warning ", "err", "debug2", "3"};
    for (size_t i = 0; i < sizeof bad_names / sizeof bad_names[0]; i++) {
        tsr_log_level_t out = TSR_LOG_WARN;
        rc = tsr_log_level_parse(bad_names[i], &out);
        is_int(rc, TSR_ERR_INVALID_ARG, "tsr_log_level_parse(\"%s\") fails with TSR_ERR_INVALID_ARG", bad_names[i]);
    }
    tsr_clear_error();

    return tap_done();
}
