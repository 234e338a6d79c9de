/* layout.c: parsing and printing "dp=D,pp=P,tp=RxC". */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"

/* A positive decimal int spanning [s, end), or -1. */
static int parse_positive(const char *s, const char *end)
{
    char *stop;
    if (s == end || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    long v = strtol(s, &stop, 10);
    if (stop != end || errno || v < 1 || v > 1 << 20)
        return -1;
    return (int)v;
}

tsr_status_t tsr_layout_parse(const char *text, tsr_layout_t *out)
{
    tsr_layout_t layout = TSR_LAYOUT_INIT;
    int seen_dp = 0, seen_pp = 0, seen_tp = 0;
    if (!text)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "layout is NULL (expected dp=D,pp=P,tp=RxC)");
    for (const char *item = text; *item;) {
        const char *end = strchr(item, ',');
        if (!end)
            end = item + strlen(item);
        const char *eq = memchr(item, '=', (size_t)(end - item));
        int keylen = eq ? (int)(eq - item) : (int)(end - item);
        const char *value = eq ? eq + 1 : end;
        int ok = eq != NULL;
        if (ok && keylen == 2 && strncmp(item, "dp", 2) == 0 && !seen_dp++) {
            ok = (layout.dp = parse_positive(value, end)) > 0;
        } else if (ok && keylen == 2 && strncmp(item, "pp", 2) == 0 && !seen_pp++) {
            ok = (layout.pp = parse_positive(value, end)) > 0;
        } else if (ok && keylen == 2 && strncmp(item, "tp", 2) == 0 && !seen_tp++) {
            const char *x = memchr(value, 'x', (size_t)(end - value));
            if (x) {
                layout.tp_rows = parse_positive(value, x);
                layout.tp_cols = parse_positive(x + 1, end);
            } else {
                layout.tp_rows = 1; /* tp=N is the 1D (Megatron) layout 1xN */
                layout.tp_cols = parse_positive(value, end);
            }
            ok = layout.tp_rows > 0 && layout.tp_cols > 0;
        } else {
            ok = 0;
        }
        if (!ok)
            return TSR_ERROR(TSR_ERR_INVALID_ARG,
                             "bad layout item \"%.*s\" in \"%s\" (expected dp=D,pp=P,tp=RxC or tp=N, each a "
                             "positive integer, each key at most once)", (int)(end - item), item, text);
        item = *end ? end + 1 : end;
        if (*end && !*item)
            return TSR_ERROR(TSR_ERR_INVALID_ARG, "layout \"%s\" ends with a comma", text);
    }
    *out = layout;
    return TSR_OK;
}

char *tsr_layout_format(const tsr_layout_t *layout, char *buf, size_t len)
{
    snprintf(buf, len, "dp=%d,pp=%d,tp=%dx%d", layout->dp, layout->pp, layout->tp_rows, layout->tp_cols);
    return buf;
}

int tsr_layout_ranks(const tsr_layout_t *layout)
{
    return layout->dp * layout->pp * layout->tp_rows * layout->tp_cols;
}
