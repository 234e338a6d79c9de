/**
 * @file tessera/options.h
 * @brief Checked parsing of the numbers that command lines and the environment give.
 *
 * Every program of Tessera reads its numeric options through these functions, so that
 * "--stages -3", "--lr inf", "--seed -1" or "12abc" are refused the same way everywhere:
 * TSR_ERR_INVALID_ARG and a message saying what was expected, which the caller prefixes
 * with the option's name ("--stages -3: expected an integer in [1, 1024]").
 *
 * Lists of key=value items ("dp=2,pp=4", "layers=2,dim=64") follow one set of rules,
 * shared by tsr_layout_parse() and tsr_gpt_config_parse(): items separated by single
 * commas, no empty item and no trailing comma, every item key=value with a known key, and
 * each key at most once.
 */
#ifndef TESSERA_OPTIONS_H
#define TESSERA_OPTIONS_H

#include <stdint.h>
#include <tessera/status.h>
#include <tessera/visibility.h>

#ifdef __cplusplus
extern "C" {
#endif

/**
 * Parse the whole of @p text as a decimal integer in [@p lo, @p hi] (no sign other than a
 * leading '-', no spaces, no trailing characters). @p out is untouched on failure.
 * @return TSR_ERR_INVALID_ARG "expected an integer in [lo, hi]" otherwise.
 */
TSR_API tsr_status_t tsr_parse_i64(const char *text, int64_t lo, int64_t hi, int64_t *out);

/** As tsr_parse_i64() for an unsigned 64-bit integer (no sign at all: "-1" is refused). */
TSR_API tsr_status_t tsr_parse_u64(const char *text, uint64_t *out);

/**
 * Parse the whole of @p text as a finite floating-point number: "inf", "nan" and values
 * that overflow a double are refused. @return TSR_ERR_INVALID_ARG "expected a finite number".
 */
TSR_API tsr_status_t tsr_parse_f64(const char *text, double *out);

#ifdef __cplusplus
}
#endif
#endif /* TESSERA_OPTIONS_H */
