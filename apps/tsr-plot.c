/*
 * tsr-plot: a loss curve as SVG from tsr-train --log-json files (see doc/tsr-plot.1).
 *
 *   tsr-plot [--output FILE.svg] [--title TEXT] LOG.json [LOG.json ...]
 *
 * Each line of a log is one JSON object; its "step", "loss" and "val_loss" make two series
 * per file: the training loss and, where the file has any, the validation loss, each one
 * <polyline> against the step. Lines whose value is null (a step that was not finite, or
 * no validation that step) add no point. No library beyond libc: the JSON is checked by a
 * small parser of its own, and a malformed line is a one-line error naming file and line.
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char usage[] =
    "Usage: tsr-plot [OPTIONS] LOG.json [LOG.json ...]\n"
    "Write an SVG of the training loss (and val_loss where present) against step from the\n"
    "one-JSON-object-per-line files that tsr-train --log-json writes.\n"
    "  --output FILE   write the SVG to FILE (default: standard output)\n"
    "  --title TEXT    the plot's title (default: \"loss\")\n"
    "  --help, --version\n";

/* The picture: its size and the plot area's margins, in SVG user units (pixels). */
enum { WIDTH = 800, HEIGHT = 500, LEFT = 70, RIGHT = 180, TOP = 40, BOTTOM = 50 };

static const char *const colors[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2",
                                     "#17becf"};

/* One curve: (step, value) points in the order of the file. */
typedef struct series {
    char *label;
    double *x, *y;
    size_t n, cap;
    int dashed; /* validation */
} series_t;

static char error[1024];

static int fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error, sizeof error, fmt, ap);
    va_end(ap);
    return 1;
}

static int add_point(series_t *s, double x, double y)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 64;
        double *nx = realloc(s->x, cap * sizeof *nx);
        if (nx)
            s->x = nx;
        double *ny = nx ? realloc(s->y, cap * sizeof *ny) : NULL;
        if (!ny)
            return fail("no memory for %zu points", cap);
        s->y = ny;
        s->cap = cap;
    }
    s->x[s->n] = x;
    s->y[s->n] = y;
    s->n++;
    return 0;
}

/* ---------- a JSON line ---------- */

/* What one line says: the top-level numbers we plot (NAN: absent or null). */
typedef struct record {
    double step, loss, val_loss;
    int has_step;
} record_t;

typedef struct parser {
    const char *p;
    const char *why; /* what was expected where parsing stopped */
} parser_t;

static void skip_space(parser_t *ps)
{
    while (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\r' || *ps->p == '\n')
        ps->p++;
}

static int expect(parser_t *ps, const char *why)
{
    ps->why = why;
    return -1;
}

/* A JSON string; its contents (escapes kept as written) in key[0..len) when key is given. */
static int parse_string(parser_t *ps, char *key, size_t len)
{
    size_t k = 0;
    if (*ps->p != '"')
        return expect(ps, "a string");
    for (ps->p++; *ps->p != '"'; ps->p++) {
        if (!*ps->p || (unsigned char)*ps->p < 0x20)
            return expect(ps, "a closing quote");
        if (*ps->p == '\\') {
            ps->p++;
            if (!*ps->p || !strchr("\"\\/bfnrtu", *ps->p))
                return expect(ps, "a valid escape");
        }
        if (key && k + 1 < len)
            key[k++] = *ps->p;
    }
    ps->p++;
    if (key)
        key[k] = '\0';
    return 0;
}

/* A JSON number, in *x. */
static int parse_number(parser_t *ps, double *x)
{
    const char *s = ps->p;
    if (*s == '-')
        s++;
    if (*s < '0' || *s > '9')
        return expect(ps, "a value");
    char *end;
    errno = 0;
    *x = strtod(ps->p, &end);
    if (end == ps->p)
        return expect(ps, "a number");
    ps->p = end;
    return 0;
}

static int parse_value(parser_t *ps, int depth, double *num);

static int parse_object(parser_t *ps, int depth, record_t *rec)
{
    char key[64];
    if (*ps->p != '{')
        return expect(ps, "an object");
    if (depth > 32)
        return expect(ps, "less nesting");
    ps->p++;
    skip_space(ps);
    if (*ps->p == '}') {
        ps->p++;
        return 0;
    }
    for (;;) {
        double num = NAN;
        skip_space(ps);
        if (parse_string(ps, key, sizeof key))
            return -1;
        skip_space(ps);
        if (*ps->p != ':')
            return expect(ps, "a colon after a key");
        ps->p++;
        skip_space(ps);
        if (parse_value(ps, depth + 1, &num))
            return -1;
        if (rec && strcmp(key, "step") == 0 && !isnan(num))
            rec->step = num, rec->has_step = 1;
        else if (rec && strcmp(key, "loss") == 0)
            rec->loss = num;
        else if (rec && strcmp(key, "val_loss") == 0)
            rec->val_loss = num;
        skip_space(ps);
        if (*ps->p == '}') {
            ps->p++;
            return 0;
        }
        if (*ps->p != ',')
            return expect(ps, "a comma or a closing brace");
        ps->p++;
    }
}

static int parse_array(parser_t *ps, int depth)
{
    double ignored;
    ps->p++;
    skip_space(ps);
    if (*ps->p == ']') {
        ps->p++;
        return 0;
    }
    for (;;) {
        skip_space(ps);
        if (parse_value(ps, depth + 1, &ignored))
            return -1;
        skip_space(ps);
        if (*ps->p == ']') {
            ps->p++;
            return 0;
        }
        if (*ps->p != ',')
            return expect(ps, "a comma or a closing bracket");
        ps->p++;
    }
}

/* Any JSON value; a number's value in *num (NAN for anything else). */
static int parse_value(parser_t *ps, int depth, double *num)
{
    *num = NAN;
    if (depth > 32)
        return expect(ps, "less nesting");
    switch (*ps->p) {
    case '{': return parse_object(ps, depth, NULL);
    case '[': return parse_array(ps, depth);
    case '"': return parse_string(ps, NULL, 0);
    case 'n': return strncmp(ps->p, "null", 4) == 0 ? (ps->p += 4, 0) : expect(ps, "a value");
    case 't': return strncmp(ps->p, "true", 4) == 0 ? (ps->p += 4, 0) : expect(ps, "a value");
    case 'f': return strncmp(ps->p, "false", 5) == 0 ? (ps->p += 5, 0) : expect(ps, "a value");
    default: return parse_number(ps, num);
    }
}

/* ---------- reading the logs ---------- */

/* The file name without its directories. */
static const char *base_name(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash && slash[1] ? slash + 1 : path;
}

static int new_series(series_t *s, const char *path, const char *what, int dashed)
{
    size_t len = strlen(base_name(path)) + strlen(what) + 2;
    memset(s, 0, sizeof *s);
    if (!(s->label = malloc(len)))
        return fail("no memory for a label");
    snprintf(s->label, len, "%s %s", base_name(path), what);
    s->dashed = dashed;
    return 0;
}

/* Read one log into a train series and a validation series. */
static int read_log(const char *path, series_t *train, series_t *val)
{
    FILE *f = fopen(path, "r");
    char *line = NULL;
    size_t cap = 0;
    long lineno = 0;
    int status = 1;
    if (!f)
        return fail("%s: %s (expected a tsr-train --log-json file)", path, strerror(errno));
    if (new_series(train, path, "train", 0) || new_series(val, path, "val", 1))
        goto done;
    for (ssize_t len; (len = getline(&line, &cap, f)) >= 0;) {
        lineno++;
        parser_t ps = {line, NULL};
        record_t rec = {NAN, NAN, NAN, 0};
        skip_space(&ps);
        if (!*ps.p)
            continue; /* a blank line */
        if ((size_t)len != strlen(line)) {
            fail("%s:%ld: a NUL byte in the line (expected one JSON object per line)", path, lineno);
            goto done;
        }
        if (parse_object(&ps, 0, &rec) == 0) {
            skip_space(&ps);
            if (*ps.p)
                ps.why = "the end of the line after the object";
        }
        if (ps.why) {
            fail("%s:%ld: malformed JSON at column %ld: expected %s (one object per line, as tsr-train --log-json "
                 "writes)", path, lineno, (long)(ps.p - line) + 1, ps.why);
            goto done;
        }
        if (!rec.has_step) {
            fail("%s:%ld: the object has no numeric \"step\" (expected a tsr-train --log-json line)", path, lineno);
            goto done;
        }
        if (isfinite(rec.loss) && add_point(train, rec.step, rec.loss))
            goto done;
        if (isfinite(rec.val_loss) && add_point(val, rec.step, rec.val_loss))
            goto done;
    }
    if (ferror(f)) {
        fail("%s: cannot read: %s", path, strerror(errno));
        goto done;
    }
    if (train->n == 0 && val->n == 0) {
        fail("%s holds no loss values (expected the lines of tsr-train --log-json)", path);
        goto done;
    }
    status = 0;
done:
    free(line);
    fclose(f);
    return status;
}

/* ---------- the SVG ---------- */

static void put_escaped(FILE *out, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '&': fputs("&amp;", out); break;
        case '<': fputs("&lt;", out); break;
        case '>': fputs("&gt;", out); break;
        case '"': fputs("&quot;", out); break;
        default:
            if ((unsigned char)*s >= 0x20 || *s == '\t')
                fputc(*s, out);
        }
    }
}

/* A tick spacing near range / 6 of 1, 2 or 5 times a power of ten. */
static double tick_step(double range)
{
    double raw = range / 6, mag = pow(10, floor(log10(raw))), f = raw / mag;
    return (f < 1.5 ? 1 : f < 3.5 ? 2 : f < 7.5 ? 5 : 10) * mag;
}

typedef struct axis {
    double lo, hi, tick;
} axis_t;

static axis_t make_axis(double lo, double hi)
{
    axis_t a;
    if (!(hi > lo)) {
        double pad = lo != 0 ? fabs(lo) * 0.05 : 1;
        lo -= pad, hi += pad;
    }
    a.tick = tick_step(hi - lo);
    a.lo = floor(lo / a.tick) * a.tick;
    a.hi = ceil(hi / a.tick) * a.tick;
    return a;
}

static double map(const axis_t *a, double v, double from, double to)
{
    return from + (v - a->lo) / (a->hi - a->lo) * (to - from);
}

static void write_svg(FILE *out, const char *title, const series_t *s, size_t ns)
{
    double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
    for (size_t i = 0; i < ns; i++)
        for (size_t k = 0; k < s[i].n; k++) {
            xmin = fmin(xmin, s[i].x[k]), xmax = fmax(xmax, s[i].x[k]);
            ymin = fmin(ymin, s[i].y[k]), ymax = fmax(ymax, s[i].y[k]);
        }
    axis_t ax = make_axis(xmin, xmax), ay = make_axis(ymin, ymax);
    const double x0 = LEFT, x1 = WIDTH - RIGHT, y0 = HEIGHT - BOTTOM, y1 = TOP;
    fprintf(out, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
                 "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
                 "font-family=\"sans-serif\" font-size=\"12\">\n"
                 "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n",
            WIDTH, HEIGHT, WIDTH, HEIGHT);
    fprintf(out, "<text x=\"%g\" y=\"%d\" text-anchor=\"middle\" font-size=\"16\">", (x0 + x1) / 2, TOP / 2 + 6);
    put_escaped(out, title);
    fputs("</text>\n<g id=\"ticks\" text-anchor=\"middle\">\n", out);
    for (double v = ax.lo; v <= ax.hi + ax.tick / 2; v += ax.tick) {
        double x = map(&ax, v, x0, x1);
        fprintf(out, "<line x1=\"%.1f\" y1=\"%g\" x2=\"%.1f\" y2=\"%g\" stroke=\"black\"/>"
                     "<text x=\"%.1f\" y=\"%g\">%g</text>\n", x, y0, x, y0 + 5, x, y0 + 18, fabs(v) < ax.tick / 1e6 ? 0 : v);
    }
    fputs("</g>\n<g id=\"yticks\" text-anchor=\"end\">\n", out);
    for (double v = ay.lo; v <= ay.hi + ay.tick / 2; v += ay.tick) {
        double y = map(&ay, v, y0, y1);
        fprintf(out, "<line x1=\"%g\" y1=\"%.1f\" x2=\"%g\" y2=\"%.1f\" stroke=\"#ddd\"/>"
                     "<text x=\"%g\" y=\"%.1f\">%g</text>\n", x0, y, x1, y, x0 - 6, y + 4,
                fabs(v) < ay.tick / 1e6 ? 0 : v);
    }
    /* the axes over the grid lines */
    fputs("</g>\n<g id=\"axes\" stroke=\"black\" fill=\"none\">\n", out);
    fprintf(out, "<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\"/>\n", x0, y0, x1, y0);
    fprintf(out, "<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\"/>\n</g>\n", x0, y0, x0, y1);
    fprintf(out, "<text x=\"%g\" y=\"%d\" text-anchor=\"middle\">step</text>\n", (x0 + x1) / 2, HEIGHT - 12);
    fprintf(out, "<text x=\"16\" y=\"%g\" text-anchor=\"middle\" transform=\"rotate(-90 16 %g)\">loss</text>\n",
            (y0 + y1) / 2, (y0 + y1) / 2);
    for (size_t i = 0, c = 0; i < ns; i++) {
        if (s[i].n == 0)
            continue;
        const char *color = colors[c % (sizeof colors / sizeof colors[0])];
        fprintf(out, "<polyline class=\"series\" fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\"%s points=\"", color,
                s[i].dashed ? " stroke-dasharray=\"6 3\"" : "");
        for (size_t k = 0; k < s[i].n; k++)
            fprintf(out, "%s%.2f,%.2f", k ? " " : "", map(&ax, s[i].x[k], x0, x1), map(&ay, s[i].y[k], y0, y1));
        fputs("\"><title>", out);
        put_escaped(out, s[i].label);
        fputs("</title></polyline>\n", out);
        double ly = TOP + 10 + 18.0 * (double)c;
        fprintf(out, "<line x1=\"%g\" y1=\"%g\" x2=\"%g\" y2=\"%g\" stroke=\"%s\" stroke-width=\"1.5\"%s/>"
                     "<text x=\"%g\" y=\"%g\">", x1 + 12, ly, x1 + 36, ly, color,
                s[i].dashed ? " stroke-dasharray=\"6 3\"" : "", x1 + 42, ly + 4);
        put_escaped(out, s[i].label);
        fputs("</text>\n", out);
        c++;
    }
    fputs("</svg>\n", out);
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        {"output", required_argument, 0, 'o'}, {"title", required_argument, 0, 't'},
        {"help", no_argument, 0, 'h'},         {"version", no_argument, 0, 'V'},
        {0, 0, 0, 0},
    };
    const char *output = NULL, *title = "loss";
    opterr = 0;
    for (int c; (c = getopt_long(argc, argv, ":", options, NULL)) != -1;) {
        switch (c) {
        case 'o':
            if (!*optarg) {
                fprintf(stderr, "tsr-plot: --output is empty (expected a file name)\n");
                return 2;
            }
            output = optarg;
            break;
        case 't':
            title = optarg;
            break;
        case 'h':
            fputs(usage, stdout);
            return 0;
        case 'V':
            printf("tsr-plot (Tessera %s)\n", PACKAGE_VERSION);
            return 0;
        case ':':
            fprintf(stderr, "tsr-plot: %s needs a value (try --help)\n", argv[optind - 1]);
            return 2;
        default:
            fprintf(stderr, "tsr-plot: unknown option %s (try --help)\n", argv[optind - 1]);
            return 2;
        }
    }
    if (optind == argc) {
        fprintf(stderr, "tsr-plot: no log file given (expected one or more tsr-train --log-json files; try --help)\n");
        return 2;
    }
    size_t ns = 2 * (size_t)(argc - optind);
    series_t *s = calloc(ns, sizeof *s);
    int status = 1;
    FILE *out = NULL;
    if (!s) {
        fprintf(stderr, "tsr-plot: no memory\n");
        return 1;
    }
    for (int i = optind; i < argc; i++)
        if (read_log(argv[i], &s[2 * (i - optind)], &s[2 * (i - optind) + 1]))
            goto done;
    /* Written to FILE.tmp and renamed: a failed run leaves no half picture under the name. */
    char *tmp = NULL;
    if (output) {
        size_t len = strlen(output) + 5;
        if (!(tmp = malloc(len))) {
            fail("no memory");
            goto done;
        }
        snprintf(tmp, len, "%s.tmp", output);
        if (!(out = fopen(tmp, "w"))) {
            fail("cannot write %s: %s", tmp, strerror(errno));
            free(tmp);
            goto done;
        }
    }
    write_svg(out ? out : stdout, title, s, ns);
    if (out) {
        int bad = ferror(out) | (fclose(out) != 0);
        if (bad || rename(tmp, output) != 0) {
            fail("cannot write %s: %s", output, strerror(errno));
            remove(tmp);
            free(tmp);
            goto done;
        }
        free(tmp);
    } else if (fflush(stdout) != 0 || ferror(stdout)) {
        fail("cannot write the standard output: %s", strerror(errno));
        goto done;
    }
    status = 0;
done:
    if (status)
        fprintf(stderr, "tsr-plot: %s\n", error);
    for (size_t i = 0; i < ns; i++) {
        free(s[i].label);
        free(s[i].x);
        free(s[i].y);
    }
    free(s);
    return status;
}
