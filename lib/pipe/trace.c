/*
 * trace.c: executed timelines as Chrome trace JSON (the pipeline's own, and the profiler's
 * whole-step trace of tessera/prof.h), simulated schedules as SVG Gantt charts.
 *
 * Clocks: tsr_time_now() is a per-host monotonic clock. Rank 0 estimates every other
 * rank's offset from its own by a few ping-pongs (Cristian's method: the reply's time
 * against the middle of the round trip, from the round with the shortest trip), so all
 * ranks share rank 0's time axis to within half a round trip, also across nodes.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipe_impl.h"

enum { FIELDS = 5 }; /* op, mb, chunk, start, end: one event as doubles on the wire */

static const char *const fill_colour[3][2] = {
    {"#4e79a7", "#a0cbe8"}, /* F: chunk 0, other chunks */
    {"#59a14f", "#8cd17d"}, /* B */
    {"#f28e2b", "#ffbe7d"}, /* W */
};

static void write_events(FILE *f, int rank, const double *ev, size_t n, double origin, int *first)
{
    for (size_t i = 0; i < n; i++) {
        const double *e = ev + i * FIELDS;
        tsr_pipe_op_t op = (tsr_pipe_op_t)e[0];
        int compute = tsr__pipe_is_compute(op);
        fprintf(f,
                "%s\n{\"name\":\"%s%s%d\",\"cat\":\"%s\",\"ph\":\"X\",\"pid\":%d,\"tid\":%d,\"ts\":%.3f,"
                "\"dur\":%.3f,\"args\":{\"mb\":%d,\"chunk\":%d}}",
                *first ? "" : ",", tsr_pipe_op_name(op), compute ? "" : " ", (int)e[1], tsr_pipe_op_name(op), rank,
                compute ? 0 : 1, (e[3] - origin) * 1e6, (e[4] - e[3]) * 1e6, (int)e[1], (int)e[2]);
        *first = 0;
    }
}

static void write_process_names(FILE *f, int ranks, int *first)
{
    for (int r = 0; r < ranks; r++) {
        fprintf(f,
                "%s\n{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":%d,\"args\":{\"name\":\"stage %d\"}},"
                "\n{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":%d,\"tid\":0,\"args\":{\"name\":\"compute\"}},"
                "\n{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":%d,\"tid\":1,\"args\":{\"name\":\"communication\"}}",
                *first ? "" : ",", r, r, r, r);
        *first = 0;
    }
}

/* This rank's events as doubles. */
static double *pack(tsr_pipe_trace_t t)
{
    double *buf = malloc((t->n + 1) * FIELDS * sizeof(double));
    for (size_t i = 0; buf && i < t->n; i++) {
        const tsr_pipe_event_t *e = &t->ev[i];
        double *d = buf + i * FIELDS;
        d[0] = e->op;
        d[1] = e->mb;
        d[2] = e->chunk;
        d[3] = e->start;
        d[4] = e->end;
    }
    return buf;
}

/* Earliest start among n packed events, or so_far if none is earlier. */
static double earliest(const double *ev, size_t n, double so_far)
{
    for (size_t i = 0; i < n; i++)
        if (ev[i * FIELDS + 3] < so_far)
            so_far = ev[i * FIELDS + 3];
    return so_far;
}

enum { PINGS = 5 };

/* Rank 0: offset of rank r's clock from its own. Rank r: answer the pings. */
static tsr_status_t clock_offset(tsr_comm_t comm, int r, double *offset)
{
    tsr_status_t rc = TSR_OK;
    double best_trip = -1, t = 0;
    *offset = 0;
    for (int k = 0; k < PINGS; k++) {
        if (tsr_comm_rank(comm) != 0) {
            TSR_TRY(tsr_comm_recv(comm, &t, 1, TSR_DTYPE_F64, 0, 2));
            t = tsr_time_now();
            TSR_TRY(tsr_comm_send(comm, &t, 1, TSR_DTYPE_F64, 0, 3));
            continue;
        }
        double sent = tsr_time_now();
        TSR_TRY(tsr_comm_send(comm, &sent, 1, TSR_DTYPE_F64, r, 2));
        TSR_TRY(tsr_comm_recv(comm, &t, 1, TSR_DTYPE_F64, r, 3));
        double back = tsr_time_now();
        if (best_trip < 0 || back - sent < best_trip) {
            best_trip = back - sent;
            *offset = t - 0.5 * (sent + back);
        }
    }
cleanup:
    return rc;
}

tsr_status_t tsr_pipe_trace_write(tsr_pipe_trace_t trace, tsr_comm_t comm, const char *path)
{
    tsr_status_t rc = TSR_OK;
    double *mine = NULL, **all = NULL;
    int64_t *counts = NULL;
    FILE *f = NULL;
    int me = tsr_comm_rank(comm), ranks = tsr_comm_size(comm), first = 1;
    TSR_CHECK(trace, TSR_ERR_INVALID_ARG, "no trace to write");
    mine = pack(trace);
    TSR_CHECK(mine, TSR_ERR_OUT_OF_MEMORY, "packing %zu trace events", trace->n);
    int64_t count = (int64_t)trace->n;
    if (me != 0) {
        double unused;
        TSR_TRY(clock_offset(comm, me, &unused));
        TSR_TRY(tsr_comm_send(comm, &count, 1, TSR_DTYPE_I64, 0, 0));
        TSR_TRY(tsr_comm_send(comm, mine, (size_t)count * FIELDS, TSR_DTYPE_F64, 0, 1));
        goto cleanup;
    }
    all = tsr__calloc((size_t)ranks, sizeof *all);
    counts = tsr__calloc((size_t)ranks, sizeof *counts);
    TSR_CHECK(all && counts, TSR_ERR_OUT_OF_MEMORY, "trace of %d ranks", ranks);
    all[0] = mine;
    mine = NULL;
    counts[0] = count;
    for (int r = 1; r < ranks; r++) {
        double offset;
        TSR_TRY(clock_offset(comm, r, &offset));
        TSR_TRY(tsr_comm_recv(comm, &counts[r], 1, TSR_DTYPE_I64, r, 0));
        all[r] = malloc(((size_t)counts[r] + 1) * FIELDS * sizeof(double));
        TSR_CHECK(all[r], TSR_ERR_OUT_OF_MEMORY, "trace events of rank %d", r);
        TSR_TRY(tsr_comm_recv(comm, all[r], (size_t)counts[r] * FIELDS, TSR_DTYPE_F64, r, 1));
        for (int64_t i = 0; i < counts[r]; i++) {
            all[r][i * FIELDS + 3] -= offset;
            all[r][i * FIELDS + 4] -= offset;
        }
    }
    double origin = 1e300;
    for (int r = 0; r < ranks; r++)
        origin = earliest(all[r], (size_t)counts[r], origin);
    if (origin == 1e300)
        origin = 0;
    f = fopen(path, "w");
    TSR_CHECK(f, TSR_ERR_IO, "cannot open trace file \"%s\" for writing", path ? path : "(null)");
    fprintf(f, "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[");
    write_process_names(f, ranks, &first);
    for (int r = 0; r < ranks; r++)
        write_events(f, r, all[r], (size_t)counts[r], origin, &first);
    fprintf(f, "\n]}\n");
    TSR_CHECK(fflush(f) == 0 && !ferror(f), TSR_ERR_IO, "writing trace file \"%s\" failed", path);
cleanup:
    if (f && fclose(f) != 0 && rc == TSR_OK)
        rc = TSR_ERROR(TSR_ERR_IO, "closing trace file \"%s\" failed", path);
    for (int r = 0; all && r < ranks; r++)
        free(all[r]);
    free(all);
    free(counts);
    free(mine);
    return rc;
}

/* ---- the profiler's trace ---- */

/* A growing text buffer; ok turns 0 when memory runs out. */
typedef struct text {
    char *s;
    size_t n, cap;
    int ok;
} text_t;

static void put(text_t *t, const char *fmt, ...) TSR_PRINTF(2, 3);

static void put(text_t *t, const char *fmt, ...)
{
    for (int tries = 0; t->ok && tries < 2; tries++) {
        va_list ap;
        va_start(ap, fmt);
        int len = vsnprintf(t->s ? t->s + t->n : NULL, t->s ? t->cap - t->n : 0, fmt, ap);
        va_end(ap);
        if (len < 0) {
            t->ok = 0;
        } else if (t->s && (size_t)len < t->cap - t->n) {
            t->n += (size_t)len;
            return;
        } else {
            size_t cap = 2 * (t->cap + (size_t)len) + 256;
            char *s = realloc(t->s, cap);
            t->ok = s != NULL;
            t->s = s ? s : t->s;
            t->cap = s ? cap : t->cap;
        }
    }
}

/* A name as a JSON string body: quotes, backslashes and control characters escaped. */
static void put_escaped(text_t *t, const char *s)
{
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            put(t, "\\%c", c);
        else if (c < 0x20)
            put(t, "\\u%04x", c);
        else
            put(t, "%c", c);
    }
}

/* This rank's part of the trace: its process and thread names, then its events, times in
 * microseconds from origin on rank 0's clock (offset: this clock minus rank 0's). */
static void format_rank(text_t *t, tsr_grid_t grid, int pid, const tsr_prof_event_t *ev, size_t n, double offset,
                        double origin)
{
    tsr_grid_coords_t c;
    tsr_grid_coords(grid, &c);
    char name[96];
    if (tsr_grid_is_server(grid))
        snprintf(name, sizeof name, "ps%d", c.rank);
    else
        snprintf(name, sizeof name, "dp%d pp%d tp%d,%d", c.dp, c.pp, c.tp_row, c.tp_col);
    put(t, ",\n{\"name\":\"process_name\",\"ph\":\"M\",\"pid\":%d,\"args\":{\"name\":\"%s\"}}", pid, name);
    put(t, ",\n{\"name\":\"process_sort_index\",\"ph\":\"M\",\"pid\":%d,\"args\":{\"sort_index\":%d}}", pid, pid);
    for (int k = 0; k < TSR_PROF_CAT_COUNT; k++)
        put(t, ",\n{\"name\":\"thread_name\",\"ph\":\"M\",\"pid\":%d,\"tid\":%d,\"args\":{\"name\":\"%s\"}}", pid, k,
            tsr_prof_cat_name((tsr_prof_cat_t)k));
    for (size_t i = 0; i < n; i++) {
        const tsr_prof_event_t *e = &ev[i];
        if (e->end < e->start)
            continue; /* still open */
        put(t, ",\n{\"name\":\"");
        put_escaped(t, e->name);
        if (e->label) {
            put(t, " ");
            put_escaped(t, e->label);
        }
        put(t, "\",\"cat\":\"%s\",\"ph\":\"X\",\"pid\":%d,\"tid\":%d,\"ts\":%.3f,\"dur\":%.3f", tsr_prof_cat_name(e->cat),
            pid, (int)e->cat, (e->start - offset - origin) * 1e6, (e->end - e->start) * 1e6);
        if (e->arg >= 0 || e->device > 0) {
            put(t, ",\"args\":{");
            if (e->arg >= 0)
                put(t, "\"mb\":%d%s", e->arg, e->device > 0 ? "," : "");
            if (e->device > 0)
                put(t, "\"device_ms\":%.6f", e->device * 1e3);
            put(t, "}");
        }
        put(t, "}");
    }
}

tsr_status_t tsr_prof_write_trace(tsr_grid_t grid, const char *path)
{
    tsr_status_t rc = TSR_OK;
    text_t t = {NULL, 0, 0, 1};
    char *buf = NULL;
    FILE *f = NULL;
    tsr_prof_level_t level = tsr_prof_level();
    TSR_CHECK(grid, TSR_ERR_INVALID_ARG, "tsr_prof_write_trace: NULL grid");
    tsr_prof_set_level(TSR_PROF_OFF); /* its own communication is no part of the trace */
    tsr_comm_t comm = tsr_grid_comm(grid, TSR_AXIS_WORLD);
    int me = tsr_comm_rank(comm), ranks = tsr_comm_size(comm);
    size_t n = 0;
    const tsr_prof_event_t *ev = tsr_prof_events(&n, NULL);

    /* every rank's offset from rank 0's clock, measured by rank 0 and sent back */
    double offset = 0.0;
    for (int r = 1; r < ranks; r++) {
        if (me == 0) {
            double off;
            TSR_TRY(clock_offset(comm, r, &off));
            TSR_TRY(tsr_comm_send(comm, &off, 1, TSR_DTYPE_F64, r, 4));
        } else if (me == r) {
            TSR_TRY(clock_offset(comm, r, &offset));
            TSR_TRY(tsr_comm_recv(comm, &offset, 1, TSR_DTYPE_F64, 0, 4));
        }
    }
    double origin = 1e300;
    for (size_t i = 0; i < n; i++)
        if (ev[i].start - offset < origin)
            origin = ev[i].start - offset;
    TSR_TRY(tsr_comm_allreduce(comm, TSR_IN_PLACE, &origin, 1, TSR_DTYPE_F64, TSR_REDUCE_MIN));
    if (origin == 1e300)
        origin = 0;
    format_rank(&t, grid, me, ev, n, offset, origin);
    int64_t len = t.ok ? (int64_t)t.n : -1;
    if (me != 0) {
        TSR_TRY(tsr_comm_send(comm, &len, 1, TSR_DTYPE_I64, 0, 5));
        if (len > 0)
            TSR_TRY(tsr_comm_send(comm, t.s, (size_t)len, TSR_DTYPE_U8, 0, 6));
        goto cleanup;
    }
    TSR_CHECK(len >= 0, TSR_ERR_OUT_OF_MEMORY, "formatting %zu trace events", n);
    /* with parameter servers every replica has a rank 0: replica 0's writes, the others gather only */
    tsr_grid_coords_t c;
    tsr_grid_coords(grid, &c);
    int writer = c.dp == 0 && !tsr_grid_is_server(grid);
    if (writer)
        f = fopen(path ? path : "", "w");
    if (f) {
        /* the leading comma of the first item is replaced by the metadata's own first item */
        fprintf(f, "{\"displayTimeUnit\":\"ms\",\"traceEvents\":[\n{\"name\":\"tessera\",\"ph\":\"M\",\"pid\":0,"
                   "\"args\":{}}");
        fwrite(t.s, 1, t.n, f);
    }
    for (int r = 1; r < ranks; r++) {
        int64_t rlen = 0;
        TSR_TRY(tsr_comm_recv(comm, &rlen, 1, TSR_DTYPE_I64, r, 5));
        TSR_CHECK(rlen >= 0, TSR_ERR_OUT_OF_MEMORY, "rank %d could not format its trace events", r);
        if (rlen == 0)
            continue;
        free(buf);
        buf = malloc((size_t)rlen);
        TSR_CHECK(buf, TSR_ERR_OUT_OF_MEMORY, "%lld bytes of trace events of rank %d", (long long)rlen, r);
        TSR_TRY(tsr_comm_recv(comm, buf, (size_t)rlen, TSR_DTYPE_U8, r, 6));
        if (f)
            fwrite(buf, 1, (size_t)rlen, f);
    }
    /* only now, so that the other ranks' messages are received whatever happens here */
    TSR_CHECK(f || !writer, TSR_ERR_IO, "cannot open trace file \"%s\" for writing", path ? path : "(null)");
    if (f) {
        fprintf(f, "\n]}\n");
        TSR_CHECK(fflush(f) == 0 && !ferror(f), TSR_ERR_IO, "writing trace file \"%s\" failed", path);
    }
cleanup:
    if (f && fclose(f) != 0 && rc == TSR_OK)
        rc = TSR_ERROR(TSR_ERR_IO, "closing trace file \"%s\" failed", path);
    free(buf);
    free(t.s);
    tsr_prof_set_level(level);
    return rc;
}

tsr_status_t tsr_pipe_write_svg(tsr_pipe_schedule_t sched, const tsr_pipe_sim_t *sim, const char *path)
{
    tsr_status_t rc = TSR_OK;
    FILE *f = NULL;
    TSR_CHECK(sched && sim && sim->stages == sched->p && sim->makespan > 0, TSR_ERR_INVALID_ARG,
              "the SVG needs a schedule and its simulation");
    f = fopen(path, "w");
    TSR_CHECK(f, TSR_ERR_IO, "cannot open SVG file \"%s\" for writing", path ? path : "(null)");
    const double left = 70, top = 30, row = 34, width = 1000;
    const double scale = width / sim->makespan, height = top + row * sched->p + 30;
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" font-family=\"sans-serif\">\n",
            left + width + 20, height);
    fprintf(f, "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n");
    fprintf(f, "<text x=\"%.0f\" y=\"20\" font-size=\"14\">%s  p=%d m=%d v=%d  makespan %.4g  bubble %.3f</text>\n",
            left, sched->kind >= 0 ? tsr_pipe_kind_name((tsr_pipe_kind_t)sched->kind) : "schedule", sched->p, sched->m,
            sched->v, sim->makespan, sim->bubble);
    for (int s = 0; s < sched->p; s++) {
        double y = top + row * s;
        fprintf(f, "<text x=\"5\" y=\"%.1f\" font-size=\"13\">stage %d</text>\n", y + row * 0.6, s);
        fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"#eeeeee\"/>\n", left, y + 2,
                width, row - 4);
        for (size_t i = 0; i < sched->len[s]; i++) {
            const tsr_pipe_action_t *a = &sched->acts[s][i];
            if (!tsr__pipe_is_compute(a->op))
                continue;
            double x0 = left + sim->start[s][i] * scale, w = (sim->end[s][i] - sim->start[s][i]) * scale;
            fprintf(f,
                    "<rect x=\"%.2f\" y=\"%.1f\" width=\"%.2f\" height=\"%.1f\" fill=\"%s\" stroke=\"black\" "
                    "stroke-width=\"0.5\"><title>%s mb %d chunk %d</title></rect>\n",
                    x0, y + 2, w, row - 4, fill_colour[a->op][a->chunk > 0], tsr_pipe_op_name(a->op), a->mb, a->chunk);
            fprintf(f, "<text x=\"%.2f\" y=\"%.1f\" font-size=\"%.0f\" text-anchor=\"middle\">%d</text>\n", x0 + w / 2,
                    y + row * 0.62, w < 14 ? 8.0 : 12.0, a->mb);
        }
    }
    double ly = top + row * sched->p + 18;
    const char *const legend[3] = {"forward", "backward", "weight grad"};
    for (int k = 0; k < 3; k++) {
        fprintf(f, "<rect x=\"%.0f\" y=\"%.0f\" width=\"14\" height=\"12\" fill=\"%s\"/>", left + 130.0 * k, ly - 10,
                fill_colour[k][0]);
        fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" font-size=\"12\">%s</text>\n", left + 130.0 * k + 18, ly, legend[k]);
    }
    if (sched->v > 1)
        fprintf(f, "<text x=\"%.0f\" y=\"%.0f\" font-size=\"12\">light: chunk &gt; 0</text>\n", left + 400, ly);
    fprintf(f, "</svg>\n");
    TSR_CHECK(fflush(f) == 0 && !ferror(f), TSR_ERR_IO, "writing SVG file \"%s\" failed", path);
cleanup:
    if (f && fclose(f) != 0 && rc == TSR_OK)
        rc = TSR_ERROR(TSR_ERR_IO, "closing SVG file \"%s\" failed", path);
    return rc;
}
