/* options.c: checked parsing of numbers and of key=value lists (see tessera/options.h). */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"

/* strtoll and friends skip leading spaces and accept a '+': an option value may not. */
static int plain_number(const char *text, int sign_allowed)
{
    if (!text || !*text)
        return 0;
    if (sign_allowed && *text == '-')
        text++;
    return isdigit((unsigned char)*text);
}

tsr_status_t tsr_parse_i64(const char *text, int64_t lo, int64_t hi, int64_t *out)
{
    char *end = NULL;
    long long v = 0;
    if (plain_number(text, 1)) {
        errno = 0;
        v = strtoll(text, &end, 10);
    }
    if (!end || *end || errno == ERANGE || v < lo || v > hi)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "expected an integer in [%" PRId64 ", %" PRId64 "]", lo, hi);
    *out = (int64_t)v;
    return TSR_OK;
}

tsr_status_t tsr_parse_u64(const char *text, uint64_t *out)
{
    char *end = NULL;
    unsigned long long v = 0;
    if (plain_number(text, 0)) {
        errno = 0;
        v = strtoull(text, &end, 10);
    }
    if (!end || *end || errno == ERANGE)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "expected an integer in [0, %" PRIu64 "]", UINT64_MAX);
    *out = (uint64_t)v;
    return TSR_OK;
}

tsr_status_t tsr_parse_f64(const char *text, double *out)
{
    char *end = NULL;
    double v = 0;
    /* A digit or a point must come first (after a sign): that leaves out "inf", "nan", "0x". */
    const char *p = text && (*text == '-' || *text == '+') ? text + 1 : text;
    if (p && (isdigit((unsigned char)*p) || (*p == '.' && isdigit((unsigned char)p[1]))) &&
        !(p[0] == '0' && (p[1] == 'x' || p[1] == 'X'))) {
        errno = 0;
        v = strtod(text, &end);
    }
    if (!end || *end || !isfinite(v) || (errno == ERANGE && fabs(v) > 1))
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "expected a finite number");
    *out = v;
    return TSR_OK;
}

tsr_status_t tsr__kv_split(const char *what, const char *text, const char *const keys[], int nkeys,
                           tsr__kv_t values[], const char *expected)
{
    for (int k = 0; k < nkeys; k++)
        values[k] = (tsr__kv_t){NULL, 0};
    for (const char *item = text; *item;) {
        size_t len = strcspn(item, ","), klen = strcspn(item, "=,");
        if (len == 0)
            return TSR_ERROR(TSR_ERR_INVALID_ARG, "%s \"%s\" has an empty item (expected %s)", what, text,
                             expected);
        if (klen >= len || klen == 0)
            return TSR_ERROR(TSR_ERR_INVALID_ARG, "%s \"%s\": item \"%.*s\" is not key=value (expected %s)", what,
                             text, (int)len, item, expected);
        int k = 0;
        while (k < nkeys && !(strlen(keys[k]) == klen && strncmp(item, keys[k], klen) == 0))
            k++;
        if (k == nkeys)
            return TSR_ERROR(TSR_ERR_INVALID_ARG, "%s \"%s\": unknown key '%.*s' (expected %s)", what, text,
                             (int)klen, item, expected);
        if (values[k].value)
            return TSR_ERROR(TSR_ERR_INVALID_ARG, "%s \"%s\" gives %s twice (expected each key at most once)",
                             what, text, keys[k]);
        values[k].value = item + klen + 1;
        values[k].len = len - klen - 1;
        item += len;
        if (*item == ',' && !*++item)
            return TSR_ERROR(TSR_ERR_INVALID_ARG, "%s \"%s\" ends with a comma (expected %s)", what, text, expected);
    }
    return TSR_OK;
}
