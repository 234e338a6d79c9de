/*
 * test_grid_layout.c: the layout text ("dp=D,pp=P,tp=RxC") and the layout check of
 * tsr_grid_create().
 *
 * tsr_layout_parse(): keys in any order, each optional and defaulting to 1, "tp=N" meaning
 * 1xN; malformed text fails with TSR_ERR_INVALID_ARG and a tsr_last_error() naming the bad
 * part. tsr_layout_format() writes the canonical text and parses back to the same layout.
 * tsr_grid_create() with a layout whose product is not the communicator's size fails on
 * every rank with TSR_ERR_LAYOUT, a message naming every number, and a NULL grid.
 */
#include <tessera.h>

#include "tap.h"

/* Are the four fields of a layout (dp, pp, tp_rows, tp_cols)? */
static int layout_is(const tsr_layout_t *l, int dp, int pp, int rows, int cols)
{
    return l->dp == dp && l->pp == pp && l->tp_rows == rows && l->tp_cols == cols;
}

static void diag_layout(const char *what, const tsr_layout_t *l)
{
    fprintf(stderr, "#   [rank %d] %s: dp=%d pp=%d tp_rows=%d tp_cols=%d\n", tap_rank(), what, l->dp, l->pp,
            l->tp_rows, l->tp_cols);
}

/* Does text contain the decimal number n as a whole run of digits (not inside a longer one)? */
static int has_number(const char *text, long n)
{
    for (const char *p = text; *p;) {
        if (*p >= '0' && *p <= '9') {
            char *end;
            long v = strtol(p, &end, 10);
            if (v == n)
                return 1;
            p = end;
        } else {
            p++;
        }
    }
    return 0;
}

/* Does text contain one of the '|'-separated alternatives? */
static int contains_any(const char *text, const char *alternatives)
{
    char buf[128];
    snprintf(buf, sizeof buf, "%s", alternatives);
    for (char *p = buf, *bar; p; p = bar ? bar + 1 : NULL) {
        bar = strchr(p, '|');
        if (bar)
            *bar = '\0';
        if (strstr(text, p))
            return 1;
    }
    return 0;
}

/* A text that parses, with the layout it must give. */
struct good_case {
    const char *text;
    int dp, pp, rows, cols;
};

/* A text that must be rejected, with the substrings of which the error message must
 * contain one ('|'-separated; NULL: only that the message is not empty). */
struct bad_case {
    const char *text;
    const char *needle;
};

int main(int argc, char **argv)
{
    tap_init(&argc, &argv, "1 4");
    const int n = tap_size();

    /* --- tsr_layout_parse: accepted text --- */
    static const struct good_case good[] = {
        {"dp=2,pp=1,tp=2x2", 2, 1, 2, 2},
        {"dp=3,pp=5,tp=7x11", 3, 5, 7, 11},
        {"tp=2x3,dp=4,pp=5", 4, 5, 2, 3},   /* keys in any order */
        {"pp=6,tp=1x2,dp=7", 7, 6, 1, 2},
        {"pp=3", 1, 3, 1, 1},               /* missing keys default to 1 */
        {"dp=8", 8, 1, 1, 1},
        {"tp=3x1", 1, 1, 3, 1},
        {"dp=2,tp=2x4", 2, 1, 2, 4},
        {"tp=4", 1, 1, 1, 4},               /* tp=N means 1xN */
        {"dp=2,tp=16", 2, 1, 1, 16},
        {"dp=12,pp=10,tp=128", 12, 10, 1, 128}, /* several digits */
        {"", 1, 1, 1, 1},                   /* every key optional: no key at all is one rank */
    };
    for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
        tsr_layout_t l = TSR_LAYOUT_INIT;
        l.dp = l.pp = l.tp_rows = l.tp_cols = 99; /* parse must set every field */
        tsr_status_t st = tsr_layout_parse(good[i].text, &l);
        if (st != TSR_OK)
            fprintf(stderr, "#   [rank %d] \"%s\": %s (%s)\n", tap_rank(), good[i].text, tsr_status_name(st),
                    tsr_last_error());
        is_int(st, TSR_OK, "parse \"%s\" returns TSR_OK", good[i].text);
        int match = layout_is(&l, good[i].dp, good[i].pp, good[i].rows, good[i].cols);
        if (!match)
            diag_layout(good[i].text, &l);
        ok(match, "parse \"%s\" gives dp=%d pp=%d tp=%dx%d", good[i].text, good[i].dp, good[i].pp, good[i].rows,
           good[i].cols);
    }

    /* --- tsr_layout_parse: rejected text --- */
    static const struct bad_case bad[] = {
        {"dp=0", "dp"},                 /* zero */
        {"dp=-1", "dp|-1"},             /* negative */
        {"pp=0,dp=2", "pp"},
        {"tp=0x2", "tp|0x2"},
        {"tp=2x0", "tp|2x0"},
        {"tp=0", "tp"},
        {"tp=2x", "tp|2x"},             /* columns missing */
        {"tp=x2", "tp|x2"},             /* rows missing */
        {"tp=2x3x4", "tp|2x3x4"},       /* trailing garbage in the value */
        {"xx=3", "xx"},                 /* unknown key */
        {"dp=2,pipe=4", "pipe"},
        {"dp=2,,pp=1", NULL},           /* empty item */
        {"dp=abc", "dp|abc"},           /* not a number */
        {"dp=2x2", "dp|2x2"},           /* only tp takes RxC */
        {"dp=", "dp"},                  /* value missing */
        {"dp", "dp"},                   /* '=' missing */
        {"dp=4pp=2", "dp|4pp"},         /* separator missing */
        {"dp=1.5", "dp|1.5"},
        {"dp=99999999999999999999", "dp|99999999999999999999"}, /* out of range of int */
        {"dp=2,dp=3", "dp twice"},      /* a key twice */
        {"dp=2,", "ends with a comma"}, /* a trailing comma */
        {",dp=2", "empty item"},
        {"dp=1048576,pp=1048576", "more than the 2147483647"},      /* 2^40 ranks: no wrap to 0 */
        {"dp=18,pp=67,tp=683x20857", "more than the 2147483647"},   /* 2^34 + 2: no wrap to 2 */
        {"dp=1048577", "dp=1048577"},   /* above 2^20 */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        tsr_layout_t l = TSR_LAYOUT_INIT;
        tsr_clear_error();
        tsr_status_t st = tsr_layout_parse(bad[i].text, &l);
        const char *msg = tsr_last_error();
        if (!msg)
            msg = "";
        if (st != TSR_ERR_INVALID_ARG)
            fprintf(stderr, "#   [rank %d] \"%s\" gave %s\n", tap_rank(), bad[i].text, tsr_status_name(st));
        is_int(st, TSR_ERR_INVALID_ARG, "parse \"%s\" fails with TSR_ERR_INVALID_ARG", bad[i].text);
        int named = st != TSR_OK && msg[0] != '\0' && (!bad[i].needle || contains_any(msg, bad[i].needle));
        if (!named)
            fprintf(stderr, "#   [rank %d] message for \"%s\": \"%s\" (expected to contain %s)\n", tap_rank(),
                    bad[i].text, msg, bad[i].needle ? bad[i].needle : "anything");
        if (bad[i].needle)
            ok(named, "parse \"%s\": last error names the bad part (%s)", bad[i].text, bad[i].needle);
        else
            ok(named, "parse \"%s\": last error is set", bad[i].text);
    }

    /* --- parameter servers: ps=S --- */
    {
        tsr_layout_t l = TSR_LAYOUT_INIT;
        char buf[TSR_LAYOUT_STRLEN];
        is_int(l.ps, 0, "TSR_LAYOUT_INIT has no parameter server");
        is_int(tsr_layout_parse("ps=2,dp=4,tp=1x2", &l), TSR_OK, "parse \"ps=2,dp=4,tp=1x2\"");
        ok(l.ps == 2 && layout_is(&l, 4, 1, 1, 2), "... gives ps=2 dp=4 pp=1 tp=1x2");
        is_int(tsr_layout_ranks(&l), 10, "ps=2,dp=4,tp=1x2 needs 2 + 4 x 2 = 10 ranks");
        is_str(tsr_layout_format(&l, buf, sizeof buf), "ps=2,dp=4,pp=1,tp=1x2", "format puts ps first");
        is_int(tsr_layout_parse("dp=2", &l), TSR_OK, "parse \"dp=2\"");
        is_int(l.ps, 0, "... has no server");
        is_int(tsr_layout_parse("ps=0,dp=2", &l), TSR_ERR_INVALID_ARG, "ps=0 is refused");
        ok(strstr(tsr_last_error(), "\"ps=0\"") != NULL, "... naming the item: %s", tsr_last_error());
        is_int(tsr_layout_parse("ps=-1", &l), TSR_ERR_INVALID_ARG, "ps=-1 is refused");
        l = (tsr_layout_t)TSR_LAYOUT_INIT;
        l.ps = 2147483647;
        is_int(tsr_layout_ranks(&l), -1, "ps=INT_MAX plus one worker exceeds INT_MAX ranks");
        l.dp = l.pp = l.tp_rows = l.tp_cols = 2147483647;
        ok(strlen(tsr_layout_format(&l, buf, sizeof buf)) < TSR_LAYOUT_STRLEN - 1,
           "format of INT_MAX fields with ps fits TSR_LAYOUT_STRLEN");
    }

    /* --- tsr_layout_format: the canonical text --- */
    {
        char buf[TSR_LAYOUT_STRLEN];
        tsr_layout_t l = TSR_LAYOUT_INIT;
        ok(tsr_layout_format(&l, buf, sizeof buf) == buf, "format returns its buffer");
        is_str(buf, "dp=1,pp=1,tp=1x1", "format TSR_LAYOUT_INIT");
        l.dp = 2, l.pp = 1, l.tp_rows = 2, l.tp_cols = 2;
        is_str(tsr_layout_format(&l, buf, sizeof buf), "dp=2,pp=1,tp=2x2", "format dp=2 pp=1 tp=2x2");
        l.dp = 1, l.pp = 1, l.tp_rows = 1, l.tp_cols = 4;
        is_str(tsr_layout_format(&l, buf, sizeof buf), "dp=1,pp=1,tp=1x4", "format of a 1D tp layout keeps 1xN");
        l.dp = 16, l.pp = 3, l.tp_rows = 5, l.tp_cols = 12;
        is_str(tsr_layout_format(&l, buf, sizeof buf), "dp=16,pp=3,tp=5x12", "format dp=16 pp=3 tp=5x12");
        l.dp = l.pp = l.tp_rows = l.tp_cols = 2147483647;
        is_str(tsr_layout_format(&l, buf, sizeof buf), "dp=2147483647,pp=2147483647,tp=2147483647x2147483647",
               "format of INT_MAX fields fits TSR_LAYOUT_STRLEN");

        /* A short buffer: at most len bytes written, NUL-terminated, a prefix of the text. */
        char small[12];
        memset(small, '#', sizeof small);
        l.dp = 2, l.pp = 1, l.tp_rows = 2, l.tp_cols = 2;
        tsr_layout_format(&l, small, 6);
        int in_bounds = memchr(small, '\0', 6) != NULL && small[6] == '#' && small[11] == '#';
        ok(in_bounds, "format into 6 bytes writes at most 6 bytes, NUL-terminated");
        ok(in_bounds && strncmp(small, "dp=2,pp=1,tp=2x2", strlen(small)) == 0 && strlen(small) == 5,
           "format into 6 bytes keeps the first 5 characters");
    }

    /* --- format -> parse round trip --- */
    {
        static const int shapes[][4] = {{1, 1, 1, 1}, {2, 1, 2, 2}, {1, 1, 1, 8}, {4, 2, 1, 1},
                                        {3, 5, 7, 2}, {1, 64, 8, 1}, {1000, 1, 1, 3}};
        int all = 1;
        for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) {
            tsr_layout_t l = TSR_LAYOUT_INIT, back = TSR_LAYOUT_INIT;
            l.dp = shapes[i][0], l.pp = shapes[i][1], l.tp_rows = shapes[i][2], l.tp_cols = shapes[i][3];
            char buf[TSR_LAYOUT_STRLEN];
            tsr_layout_format(&l, buf, sizeof buf);
            tsr_status_t st = tsr_layout_parse(buf, &back);
            if (st != TSR_OK || !layout_is(&back, l.dp, l.pp, l.tp_rows, l.tp_cols)) {
                all = 0;
                fprintf(stderr, "#   [rank %d] round trip of \"%s\": %s\n", tap_rank(), buf, tsr_status_name(st));
                diag_layout("parsed back", &back);
            }
        }
        ok(all, "format then parse gives back each of 7 layouts");
    }

    /* --- tsr_layout_ranks --- */
    {
        tsr_layout_t l = TSR_LAYOUT_INIT;
        is_int(tsr_layout_ranks(&l), 1, "ranks of TSR_LAYOUT_INIT is 1");
        is_int(l.struct_size, sizeof(tsr_layout_t), "TSR_LAYOUT_INIT sets struct_size");
        tsr_layout_parse("dp=2,pp=1,tp=2x2", &l);
        is_int(tsr_layout_ranks(&l), 8, "ranks of dp=2,pp=1,tp=2x2 is 8");
        tsr_layout_parse("tp=3x5,pp=7,dp=2", &l);
        is_int(tsr_layout_ranks(&l), 210, "ranks of dp=2,pp=7,tp=3x5 is 210");
        tsr_layout_parse("tp=6", &l);
        is_int(tsr_layout_ranks(&l), 6, "ranks of tp=6 is 6");
        /* A layout made by hand whose product wraps to 4 in 32 bits (4 * (2^30 + 1)). */
        l.dp = 1300, l.pp = 2501, l.tp_rows = 1321, l.tp_cols = 1;
        is_int(tsr_layout_ranks(&l), -1, "ranks of dp=1300,pp=2501,tp=1321x1 (2^32 + 4) is -1, not 4");
        tsr_grid_t g = NULL;
        ok(tsr_grid_create(MPI_COMM_WORLD, &l, &g) == TSR_ERR_LAYOUT && !g &&
               strstr(tsr_last_error(), "needs more ranks than an MPI communicator holds"),
           "tsr_grid_create refuses that layout on %d ranks", n);
    }

    /* --- tsr_grid_create with a layout that does not fit the communicator --- */
    {
        /* dp=3 fits neither 1 nor 4 ranks. */
        tsr_layout_t l = TSR_LAYOUT_INIT;
        l.dp = 3;
        int sentinel;
        tsr_grid_t g = (tsr_grid_t)(void *)&sentinel; /* must be overwritten with NULL */
        tsr_clear_error();
        tsr_status_t st = tsr_grid_create(MPI_COMM_WORLD, &l, &g);
        const char *msg = tsr_last_error() ? tsr_last_error() : "";
        is_int(st, TSR_ERR_LAYOUT, "grid dp=3 on %d ranks fails with TSR_ERR_LAYOUT", n);
        ok(g == NULL, "grid dp=3 on %d ranks: the grid out-pointer is NULL", n);
        int named = strstr(msg, "dp=3") && strstr(msg, "pp=1") && strstr(msg, "tp=1x1") && has_number(msg, n);
        if (!named)
            fprintf(stderr, "#   [rank %d] message: \"%s\"\n", tap_rank(), msg);
        ok(named, "grid dp=3 on %d ranks: last error names dp=3, pp=1, tp=1x1 and %d", n, n);
        is_int(tsr_last_error_status(), TSR_ERR_LAYOUT, "grid dp=3 on %d ranks: last error status", n);
        if (g != NULL && g != (tsr_grid_t)(void *)&sentinel)
            tsr_grid_destroy(&g);

        /* Every number of a 2D layout named: dp=1, pp=2, tp=1x3 needs 6. */
        tsr_layout_t m = TSR_LAYOUT_INIT;
        m.pp = 2, m.tp_rows = 1, m.tp_cols = 3;
        g = (tsr_grid_t)(void *)&sentinel;
        tsr_clear_error();
        st = tsr_grid_create(MPI_COMM_WORLD, &m, &g);
        msg = tsr_last_error() ? tsr_last_error() : "";
        is_int(st, TSR_ERR_LAYOUT, "grid dp=1,pp=2,tp=1x3 on %d ranks fails with TSR_ERR_LAYOUT", n);
        ok(g == NULL, "grid dp=1,pp=2,tp=1x3 on %d ranks: the grid out-pointer is NULL", n);
        named = strstr(msg, "dp=1") && strstr(msg, "pp=2") && strstr(msg, "tp=1x3") && has_number(msg, n);
        if (!named || !has_number(msg, 6))
            fprintf(stderr, "#   [rank %d] message: \"%s\"\n", tap_rank(), msg);
        ok(named, "grid dp=1,pp=2,tp=1x3 on %d ranks: last error names dp=1, pp=2, tp=1x3 and %d", n, n);
        ok(has_number(msg, 6), "grid dp=1,pp=2,tp=1x3 on %d ranks: last error names the 6 ranks needed", n);
        if (g != NULL && g != (tsr_grid_t)(void *)&sentinel)
            tsr_grid_destroy(&g);

        /* After the failures every rank can still build a fitting grid (no rank was left
         * behind in a collective) and the user's communicator still works. */
        tsr_layout_t fit = TSR_LAYOUT_INIT;
        fit.dp = n;
        g = NULL;
        st = tsr_grid_create(MPI_COMM_WORLD, &fit, &g);
        is_int(st, TSR_OK, "grid dp=%d on %d ranks after the failures returns TSR_OK", n, n);
        tsr_grid_coords_t co = {0};
        if (g)
            tsr_grid_coords(g, &co);
        ok(g != NULL && co.size == n && co.dp == tap_rank(), "grid dp=%d after the failures: my coordinates", n);
        int one = 1, sum = 0;
        MPI_Allreduce(&one, &sum, 1, MPI_INT, MPI_SUM, MPI_COMM_WORLD);
        is_int(sum, n, "MPI_COMM_WORLD still usable after failed and successful grid creation");
        tsr_grid_destroy(&g);
        ok(g == NULL, "tsr_grid_destroy sets the grid to NULL");
    }

    return tap_done();
}
