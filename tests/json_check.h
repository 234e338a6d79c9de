/*
 * json_check.h: a minimal JSON syntax check for the tests that read Chrome traces (header-only):
 * json_value() returns the end of the value at s, or NULL where the text is not JSON.
 * value := object | array | string | number | true | false | null.
 */
#ifndef TSR_TESTS_JSON_CHECK_H
#define TSR_TESTS_JSON_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef TAP_UNUSED_
#define TAP_UNUSED_ __attribute__((unused))
#endif

static TAP_UNUSED_ const char *json_value(const char *s);
static TAP_UNUSED_ const char *json_ws(const char *s)
{
    while (*s == ' ' || *s == '\n' || *s == '\t' || *s == '\r')
        s++;
    return s;
}
static TAP_UNUSED_ const char *json_string(const char *s)
{
    if (*s++ != '"')
        return NULL;
    for (; *s && *s != '"'; s++)
        if (*s == '\\' && !*++s)
            return NULL;
    return *s == '"' ? s + 1 : NULL;
}
static TAP_UNUSED_ const char *json_seq(const char *s, char close, int object)
{
    s = json_ws(s + 1);
    if (*s == close)
        return s + 1;
    for (;;) {
        if (object) {
            if (!(s = json_string(json_ws(s))))
                return NULL;
            s = json_ws(s);
            if (*s++ != ':')
                return NULL;
        }
        if (!(s = json_value(s)))
            return NULL;
        s = json_ws(s);
        if (*s == close)
            return s + 1;
        if (*s++ != ',')
            return NULL;
    }
}
static TAP_UNUSED_ const char *json_value(const char *s)
{
    s = json_ws(s);
    if (*s == '{')
        return json_seq(s, '}', 1);
    if (*s == '[')
        return json_seq(s, ']', 0);
    if (*s == '"')
        return json_string(s);
    if (!strncmp(s, "true", 4) || !strncmp(s, "null", 4))
        return s + 4;
    if (!strncmp(s, "false", 5))
        return s + 5;
    char *end;
    strtod(s, &end);
    return end == s ? NULL : end;
}


/* The whole file at path as a NUL-terminated string (free() it), its length in *len; NULL if
 * it cannot be read. */
static TAP_UNUSED_ char *json_slurp(const char *path, long *len)
{
    FILE *f = fopen(path, "r");
    char *text = NULL;
    *len = 0;
    if (f && fseek(f, 0, SEEK_END) == 0 && (*len = ftell(f)) > 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (text = calloc((size_t)*len + 1, 1)) && fread(text, 1, (size_t)*len, f) != (size_t)*len) {
        free(text);
        text = NULL;
    }
    if (f)
        fclose(f);
    return text;
}

#endif /* TSR_TESTS_JSON_CHECK_H */
