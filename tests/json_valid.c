/* json_valid FILE: exit 0 if FILE holds one JSON value (and nothing else but white space), 1
 * otherwise with a line on stderr; for the shell tests that read tsr-train's traces. */
#include <stdio.h>
#include <stdlib.h>

#include "json_check.h"

int main(int argc, char **argv)
{
    long len = 0;
    char *text = argc == 2 ? json_slurp(argv[1], &len) : NULL;
    const char *end = text ? json_value(text) : NULL;
    int valid = end && *json_ws(end) == '\0';
    if (!valid)
        fprintf(stderr, "json_valid: %s is not valid JSON%s\n", argc == 2 ? argv[1] : "(no file)",
                end || !text ? "" : " (at a syntax error)");
    free(text);
    return valid ? 0 : 1;
}
