/*
 * test_core_options: tsr_parse_i64, tsr_parse_u64 and tsr_parse_f64 take the whole text or
 * nothing: signs, spaces, trailing characters, overflow, "inf" and "nan" are refused with
 * TSR_ERR_INVALID_ARG saying what was expected, and the output is left untouched.
 */
#include <math.h>
#include <stdint.h>
#include <string.h>
#include <tessera.h>

#include "tap.h"

static int i64_fails(const char *text, int64_t lo, int64_t hi, const char *expect)
{
    int64_t v = 77;
    return tsr_parse_i64(text, lo, hi, &v) == TSR_ERR_INVALID_ARG && v == 77 && strstr(tsr_last_error(), expect);
}

static int u64_fails(const char *text)
{
    uint64_t v = 77;
    return tsr_parse_u64(text, &v) == TSR_ERR_INVALID_ARG && v == 77 && strstr(tsr_last_error(), "expected an integer");
}

static int f64_fails(const char *text)
{
    double v = 77;
    return tsr_parse_f64(text, &v) == TSR_ERR_INVALID_ARG && v == 77 && strstr(tsr_last_error(), "a finite number");
}

int main(int argc, char **argv)
{
    tap_init(&argc, &argv, "1");
    int64_t i = 0;
    uint64_t u = 0;
    double d = 0;

    ok(tsr_parse_i64("42", 1, 100, &i) == TSR_OK && i == 42, "42 in [1, 100]");
    ok(tsr_parse_i64("-3", -5, 5, &i) == TSR_OK && i == -3, "-3 in [-5, 5]");
    ok(tsr_parse_i64("9223372036854775807", 0, INT64_MAX, &i) == TSR_OK && i == INT64_MAX, "INT64_MAX");
    ok(i64_fails("-3", 1, 1024, "expected an integer in [1, 1024]"), "-3 below the range names the range");
    ok(i64_fails("2000", 1, 1024, "[1, 1024]"), "2000 above the range");
    ok(i64_fails("9223372036854775808", 0, INT64_MAX, "expected an integer"), "overflow of int64");
    ok(i64_fails("", 0, 9, "expected"), "empty text");
    ok(i64_fails("12abc", 0, 100, "expected"), "trailing characters");
    ok(i64_fails(" 5", 0, 9, "expected"), "a leading space");
    ok(i64_fails("+5", 0, 9, "expected"), "a plus sign");
    ok(i64_fails("1.5", 0, 9, "expected"), "a fraction");
    ok(i64_fails("0x10", 0, 100, "expected"), "hexadecimal");

    ok(tsr_parse_u64("18446744073709551615", &u) == TSR_OK && u == UINT64_MAX, "UINT64_MAX");
    ok(u64_fails("-1"), "-1 is not an unsigned integer (strtoull would wrap it)");
    ok(u64_fails("18446744073709551616"), "overflow of uint64");
    ok(u64_fails("7 "), "a trailing space");

    ok(tsr_parse_f64("1e-3", &d) == TSR_OK && d == 1e-3, "1e-3");
    ok(tsr_parse_f64("-2.5", &d) == TSR_OK && d == -2.5, "-2.5");
    ok(tsr_parse_f64(".5", &d) == TSR_OK && d == 0.5, ".5");
    ok(f64_fails("inf") && f64_fails("-inf") && f64_fails("infinity"), "infinities are refused");
    ok(f64_fails("nan") && f64_fails("NaN"), "NaN is refused");
    ok(f64_fails("1e400") && f64_fails("-1e999"), "values that overflow a double are refused");
    ok(f64_fails("0x1p3"), "hexadecimal floats are refused");
    ok(f64_fails("") && f64_fails("3e") && f64_fails("1,5") && f64_fails(" 1"), "malformed text is refused");
    return tap_done();
}
