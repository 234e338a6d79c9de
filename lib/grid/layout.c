/* layout.c: parsing and printing "ps=S,dp=D,pp=P,tp=RxC". */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "core/internal.h"

#define LAYOUT_EXPECTED "ps=S,dp=D,pp=P,tp=RxC or tp=N, each a positive integer"
/* A grid axis longer than this is surely a typo, and the checks below stay in 64 bits. */
#define AXIS_MAX (1 << 20)

/* A positive decimal int of at most AXIS_MAX spanning [s, s + len), or -1. */
static int parse_positive(const char *s, size_t len)
{
    char buf[16];
    int64_t v;
    if (len == 0 || len >= sizeof buf)
        return -1;
    memcpy(buf, s, len);
    buf[len] = '\0';
    return tsr_parse_i64(buf, 1, AXIS_MAX, &v) == TSR_OK ? (int)v : -1;
}

/* ps + dp * pp * tp_rows * tp_cols, or -1 if a factor is below 1, ps below 0, or the count
 * exceeds INT_MAX (no MPI communicator has more ranks). */
static int64_t checked_ranks(const tsr_layout_t *l)
{
    const int f[4] = {l->dp, l->pp, l->tp_rows, l->tp_cols};
    int64_t n = 1;
    for (int i = 0; i < 4; i++) {
        if (f[i] < 1 || n > INT_MAX / f[i])
            return -1;
        n *= f[i];
    }
    if (l->ps < 0 || n > INT_MAX - l->ps)
        return -1;
    return n + l->ps;
}

tsr_status_t tsr_layout_parse(const char *text, tsr_layout_t *out)
{
    static const char *const keys[] = {"dp", "pp", "tp", "ps"};
    tsr__kv_t v[4];
    tsr_layout_t layout = TSR_LAYOUT_INIT;
    if (!text)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "layout is NULL (expected " LAYOUT_EXPECTED ")");
    tsr_status_t rc = tsr__kv_split("layout", text, keys, 4, v, LAYOUT_EXPECTED);
    if (rc != TSR_OK)
        return rc;
    if (v[0].value)
        layout.dp = parse_positive(v[0].value, v[0].len);
    if (v[1].value)
        layout.pp = parse_positive(v[1].value, v[1].len);
    if (v[2].value) {
        const char *x = memchr(v[2].value, 'x', v[2].len);
        size_t rows = x ? (size_t)(x - v[2].value) : 0;
        /* tp=N is the 1D (Megatron) layout 1xN */
        layout.tp_rows = x ? parse_positive(v[2].value, rows) : 1;
        layout.tp_cols = x ? parse_positive(x + 1, v[2].len - rows - 1) : parse_positive(v[2].value, v[2].len);
    }
    if (v[3].value)
        layout.ps = parse_positive(v[3].value, v[3].len);
    const int *field[4] = {&layout.dp, &layout.pp, &layout.tp_rows, &layout.ps};
    for (int k = 0; k < 4; k++)
        if ((k == 3 ? v[3].value && *field[k] < 1 : *field[k] < 1) || (k == 2 && layout.tp_cols < 1))
            return TSR_ERROR(TSR_ERR_INVALID_ARG, "bad layout item \"%s=%.*s\" in \"%s\" (expected " LAYOUT_EXPECTED
                             " of at most %d)", keys[k], (int)v[k].len, v[k].value, text, AXIS_MAX);
    if (checked_ranks(&layout) < 0)
        return TSR_ERROR(TSR_ERR_INVALID_ARG,
                         "layout \"%s\" needs %d + %d x %d x %d x %d ranks, more than the %d an MPI communicator "
                         "holds", text, layout.ps, layout.dp, layout.pp, layout.tp_rows, layout.tp_cols, INT_MAX);
    *out = layout;
    return TSR_OK;
}

char *tsr_layout_format(const tsr_layout_t *layout, char *buf, size_t len)
{
    char ps[24] = "";
    if (layout->ps > 0)
        snprintf(ps, sizeof ps, "ps=%d,", layout->ps);
    snprintf(buf, len, "%sdp=%d,pp=%d,tp=%dx%d", ps, layout->dp, layout->pp, layout->tp_rows, layout->tp_cols);
    return buf;
}

int tsr_layout_ranks(const tsr_layout_t *layout)
{
    return (int)checked_ranks(layout);
}
