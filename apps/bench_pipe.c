/*
 * bench_pipe.c: tsr-bench pipe: run each pipeline schedule with synthetic stages and compare
 * the measured bubble with the simulated one and the textbook formula.
 *
 * A synthetic stage computes nothing: its forward, backward and weight-gradient callbacks
 * sleep for a fixed time (nanosleep), so the bench measures the schedule, not the CPU, and
 * oversubscribed cores do not distort it. p is the number of ranks (one pipeline); with
 * --stages P different from it nothing is executed and only the simulation is reported
 * (handy for drawing pictures on one rank).
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"

typedef struct options {
    int json, stages, micro_batches, chunks, repeat, poll_us;
    double forward_ms, backward_ms, weight_ms;
    int kinds[TSR_PIPE_KIND_COUNT], nkinds;
    const char *svg, *trace;
} options_t;

/* What a synthetic stage sleeps, per chunk, in seconds. */
typedef struct synth {
    double f, b, w;
} synth_t;

static void sleep_for(double seconds)
{
    struct timespec ts = {(time_t)seconds, (long)((seconds - (double)(time_t)seconds) * 1e9)};
    while (nanosleep(&ts, &ts) != 0)
        ;
}

static size_t synth_bytes(void *ctx, int chunk, tsr_pipe_side_t side)
{
    (void)ctx;
    (void)chunk;
    (void)side;
    return 64;
}

static tsr_status_t synth_forward(void *ctx, int chunk, int mb, const void *in, void *out)
{
    (void)chunk, (void)mb, (void)in, (void)out;
    sleep_for(((synth_t *)ctx)->f);
    return TSR_OK;
}

static tsr_status_t synth_backward(void *ctx, int chunk, int mb, const void *in, const void *gout, void *gin)
{
    (void)chunk, (void)mb, (void)in, (void)gout, (void)gin;
    sleep_for(((synth_t *)ctx)->b);
    return TSR_OK;
}

static tsr_status_t synth_weight(void *ctx, int chunk, int mb, const void *in, const void *gout)
{
    (void)chunk, (void)mb, (void)in, (void)gout;
    sleep_for(((synth_t *)ctx)->w);
    return TSR_OK;
}

static void usage(void)
{
    printf("usage: mpiexec -n P tsr-bench pipe [options]\n"
           "  --json                one JSON object per schedule\n"
           "  --schedule LIST       comma-separated gpipe,1f1b,interleaved,zb-h1 (default: all)\n"
           "  --micro-batches M     micro-batches per step (default 8)\n"
           "  --chunks V            model chunks per stage for interleaved (default 2)\n"
           "  --stages P            simulate P stages instead of running on the ranks\n"
           "  --forward-ms F        forward sleep of a whole stage (default 10)\n"
           "  --backward-ms B       backward sleep of a whole stage, weight gradient included (default 20)\n"
           "  --weight-ms W         part of B that ZB-H1 runs as W (default B/2)\n"
           "  --repeat N            timed runs per schedule, the fastest reported (default 3)\n"
           "  --svg FILE            draw the simulated schedule(s) (FILE, or FILE with -NAME before .svg)\n"
           "  --trace FILE          write the Chrome trace of the executed schedule(s) likewise\n"
           "  --poll-us U           waiting ranks test every U microseconds and sleep between\n"
           "                        (default 50; 0 waits inside MPI, which spins)\n"
           "  --help                this text\n");
}

static int parse_kinds(const char *list, options_t *o)
{
    char buf[128];
    snprintf(buf, sizeof buf, "%s", list);
    o->nkinds = 0;
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        tsr_pipe_kind_t k;
        if (tsr_pipe_kind_parse(t, &k) != TSR_OK || o->nkinds == TSR_PIPE_KIND_COUNT)
            return bench_fail("pipe", "%s", tsr_last_error());
        o->kinds[o->nkinds++] = k;
    }
    return 0;
}

static int parse(int argc, char **argv, options_t *o, int *done)
{
    static const struct option longs[] = {
        {"json", no_argument, NULL, 'j'},          {"schedule", required_argument, NULL, 's'},
        {"micro-batches", required_argument, NULL, 'm'}, {"chunks", required_argument, NULL, 'v'},
        {"stages", required_argument, NULL, 'p'},  {"forward-ms", required_argument, NULL, 'F'},
        {"backward-ms", required_argument, NULL, 'B'}, {"weight-ms", required_argument, NULL, 'W'},
        {"repeat", required_argument, NULL, 'r'},  {"svg", required_argument, NULL, 'g'},
        {"trace", required_argument, NULL, 't'},   {"poll-us", required_argument, NULL, 'u'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    const options_t defaults = {0, 0, 8, 2, 3, 50, 10.0, 20.0, -1.0, {0, 1, 2, 3}, 4, NULL, NULL};
    *o = defaults;
    *done = 0;
    int c, bad = 0;
    optind = 1;
    opterr = 0;
    while ((c = getopt_long(argc, argv, "", longs, NULL)) != -1) {
        switch (c) {
        case 'j': o->json = 1; break;
        case 's':
            if (parse_kinds(optarg, o))
                return 1;
            break;
        case 'm': bad = bench_int("pipe", "--micro-batches", optarg, 1, 1 << 20, &o->micro_batches); break;
        case 'v': bad = bench_int("pipe", "--chunks", optarg, 1, 1024, &o->chunks); break;
        case 'p': bad = bench_int("pipe", "--stages", optarg, 1, 1 << 16, &o->stages); break;
        case 'F': bad = bench_number("pipe", "--forward-ms", optarg, 0, 1e6, &o->forward_ms); break;
        case 'B': bad = bench_number("pipe", "--backward-ms", optarg, 0, 1e6, &o->backward_ms); break;
        case 'W': bad = bench_number("pipe", "--weight-ms", optarg, 0, 1e6, &o->weight_ms); break;
        case 'r': bad = bench_int("pipe", "--repeat", optarg, 1, 1 << 20, &o->repeat); break;
        case 'g': o->svg = optarg; break;
        case 't': o->trace = optarg; break;
        case 'u': bad = bench_int("pipe", "--poll-us", optarg, 0, 1000000, &o->poll_us); break;
        case 'h':
            if (bench_rank() == 0)
                usage();
            *done = 1;
            return 0;
        default: return bench_fail("pipe", "bad option or missing value: %s; try --help", argv[optind - 1]);
        }
        if (bad)
            return 1;
    }
    if (o->weight_ms < 0)
        o->weight_ms = o->backward_ms / 2;
    if (o->micro_batches < 1 || o->chunks < 1 || o->repeat < 1 || o->poll_us < 0 || o->forward_ms < 0 || o->backward_ms < 0 ||
        o->weight_ms > o->backward_ms)
        return bench_fail("pipe", "need micro-batches, chunks, repeat >= 1 and 0 <= weight-ms <= backward-ms");
    return 0;
}

/* FILE itself for one schedule, else FILE with -NAME inserted before its extension. */
static void output_name(const char *file, const options_t *o, tsr_pipe_kind_t kind, char *out, size_t len)
{
    const char *dot = strrchr(file, '.');
    if (o->nkinds == 1 || !dot)
        snprintf(out, len, o->nkinds == 1 ? "%s" : "%s-%s", file, tsr_pipe_kind_name(kind));
    else
        snprintf(out, len, "%.*s-%s%s", (int)(dot - file), file, tsr_pipe_kind_name(kind), dot);
}

/* Per-stage costs in milliseconds for this schedule (ZB-H1 splits the backward). */
static tsr_pipe_costs_t costs_of(const options_t *o, tsr_pipe_kind_t kind)
{
    tsr_pipe_costs_t c = TSR_PIPE_COSTS_INIT;
    c.eager = 1; /* the executor posts receives ahead: sends never wait for the receiver to get there */
    c.forward = o->forward_ms;
    c.backward = kind == TSR_PIPE_ZB_H1 ? o->backward_ms - o->weight_ms : o->backward_ms;
    c.weight = kind == TSR_PIPE_ZB_H1 ? o->weight_ms : 0.0;
    return c;
}

/* Run the schedule o->repeat times (after one warm-up run); the fastest run's makespan and
 * compute time summed over ranks, both in seconds. */
static tsr_status_t measure(const options_t *o, tsr_pipe_schedule_t s, const tsr_pipe_costs_t *c, int chunks,
                            tsr_comm_t pp, tsr_device_t dev, tsr_pipe_trace_t trace, double *span, double *busy)
{
    synth_t sy = {c->forward / chunks * 1e-3, c->backward / chunks * 1e-3, c->weight / chunks * 1e-3};
    tsr_pipe_stage_t st = TSR_PIPE_STAGE_INIT;
    tsr_pipe_exec_config_t cfg = TSR_PIPE_EXEC_INIT;
    cfg.poll_us = o->poll_us;
    st.ctx = &sy;
    st.buffer_bytes = synth_bytes;
    st.forward = synth_forward;
    st.backward = synth_backward;
    st.weight_grad = synth_weight;
    *span = -1;
    for (int rep = 0; rep <= o->repeat; rep++) {
        tsr_pipe_trace_clear(trace);
        tsr_status_t rc = tsr_comm_barrier(pp);
        if (rc == TSR_OK)
            rc = tsr_pipe_execute(s, pp, dev, &st, &cfg, trace);
        if (rc != TSR_OK)
            return rc;
        size_t n;
        const tsr_pipe_event_t *ev = tsr_pipe_trace_events(trace, &n);
        double first = 1e300, last = -1e300, mine = 0, t[2], g[2];
        for (size_t i = 0; i < n; i++) {
            if (ev[i].op > TSR_PIPE_WEIGHT)
                continue;
            first = ev[i].start < first ? ev[i].start : first;
            last = ev[i].end > last ? ev[i].end : last;
            mine += ev[i].end - ev[i].start;
        }
        /* Clocks of one host agree. The makespan runs from the first compute anywhere (stage
         * 0's first forward) to the last one, as in the simulation: ranks leave the barrier
         * milliseconds apart when cores are oversubscribed, and that is not the schedule's. */
        t[0] = -first;
        t[1] = last;
        MPI_Allreduce(t, g, 2, MPI_DOUBLE, MPI_MAX, tsr_comm_mpi(pp));
        double total = 0;
        MPI_Allreduce(&mine, &total, 1, MPI_DOUBLE, MPI_SUM, tsr_comm_mpi(pp));
        if (rep > 0 && (*span < 0 || g[1] + g[0] < *span)) {
            *span = g[1] + g[0];
            *busy = total;
        }
    }
    return TSR_OK;
}

static void print_result(const options_t *o, tsr_pipe_kind_t kind, int p, int v, const tsr_pipe_sim_t *sim,
                         double formula, double measured, double span_ms)
{
    char peaks[256];
    size_t used = 0;
    for (int s = 0; s < p && used < sizeof peaks; s++)
        used += (size_t)snprintf(peaks + used, sizeof peaks - used, "%s%d", s ? "," : "", sim->peak_live[s]);
    if (o->json) {
        char meas[32] = "null", span[32] = "null";
        if (measured >= 0) {
            snprintf(meas, sizeof meas, "%.4f", measured);
            snprintf(span, sizeof span, "%.2f", span_ms);
        }
        printf("{\"schedule\":\"%s\",\"stages\":%d,\"micro_batches\":%d,\"chunks\":%d,\"forward_ms\":%g,"
               "\"backward_ms\":%g,\"weight_ms\":%g,\"makespan_ms\":%s,\"makespan_simulated_ms\":%.2f,"
               "\"bubble_measured\":%s,\"bubble_simulated\":%.4f,\"bubble_formula\":%.4f,\"peak_live\":[%s]}\n",
               tsr_pipe_kind_name(kind), p, o->micro_batches, v, o->forward_ms, o->backward_ms,
               kind == TSR_PIPE_ZB_H1 ? o->weight_ms : 0.0, span, sim->makespan, meas, sim->bubble, formula, peaks);
    } else {
        char meas[32] = "-", span[32] = "-";
        if (measured >= 0) {
            snprintf(meas, sizeof meas, "%.4f", measured);
            snprintf(span, sizeof span, "%.2f", span_ms);
        }
        printf("%-12s p=%d m=%-3d v=%d  makespan %8s ms (simulated %8.2f)  bubble measured %6s simulated "
               "%6.4f formula %6.4f  peak_live [%s]\n",
               tsr_pipe_kind_name(kind), p, o->micro_batches, v, span, sim->makespan, meas, sim->bubble, formula,
               peaks);
    }
    fflush(stdout);
}

static int run_kind(const options_t *o, tsr_pipe_kind_t kind, int p, int execute, tsr_comm_t pp, tsr_device_t dev,
                    tsr_pipe_trace_t trace)
{
    int v = kind == TSR_PIPE_INTERLEAVED ? o->chunks : 1, me = bench_rank();
    tsr_pipe_schedule_t s = NULL;
    tsr_pipe_sim_t sim;
    tsr_pipe_costs_t c = costs_of(o, kind);
    char file[512];
    if (kind == TSR_PIPE_INTERLEAVED && v > 1 && o->micro_batches % p != 0) {
        if (me == 0)
            fprintf(stderr, "tsr-bench pipe: interleaved skipped: m=%d is not a multiple of p=%d\n", o->micro_batches, p);
        return 0;
    }
    if (tsr_pipe_schedule_create(kind, p, o->micro_batches, v, &s) != TSR_OK || tsr_pipe_simulate(s, &c, &sim) != TSR_OK)
        return bench_fail("pipe", "%s", tsr_last_error());
    double span = -1, busy = 0, measured = -1;
    tsr_status_t rc = TSR_OK;
    if (execute) {
        rc = measure(o, s, &c, v, pp, dev, trace, &span, &busy);
        if (rc == TSR_OK)
            measured = 1.0 - busy / (p * span);
        if (rc == TSR_OK && o->trace) {
            output_name(o->trace, o, kind, file, sizeof file);
            rc = tsr_pipe_trace_write(trace, pp, file);
        }
    }
    if (rc == TSR_OK && o->svg && me == 0) {
        output_name(o->svg, o, kind, file, sizeof file);
        rc = tsr_pipe_write_svg(s, &sim, file);
    }
    if (rc == TSR_OK && me == 0)
        print_result(o, kind, p, v, &sim, tsr_pipe_bubble_formula(kind, p, o->micro_batches, v, &c), measured,
                     span * 1e3);
    tsr_pipe_sim_free(&sim);
    tsr_pipe_schedule_destroy(&s);
    return rc == TSR_OK ? 0 : bench_fail("pipe", "%s", tsr_last_error());
}

int bench_pipe(int argc, char **argv)
{
    options_t o;
    int done, status = 0, ranks;
    if (parse(argc, argv, &o, &done) || done)
        return done ? 0 : 1;
    MPI_Comm_size(MPI_COMM_WORLD, &ranks);
    int p = o.stages > 0 ? o.stages : ranks, execute = p == ranks;
    tsr_layout_t layout = TSR_LAYOUT_INIT;
    tsr_grid_t grid = NULL;
    tsr_device_t dev = NULL;
    tsr_pipe_trace_t trace = NULL;
    layout.pp = ranks;
    if (tsr_grid_create(MPI_COMM_WORLD, &layout, &grid) != TSR_OK ||
        tsr_device_create(TSR_DEVICE_CPU, 0, &dev) != TSR_OK || tsr_pipe_trace_create(&trace) != TSR_OK)
        return bench_fail("pipe", "%s", tsr_last_error());
    for (int k = 0; k < o.nkinds && status == 0; k++)
        status = run_kind(&o, (tsr_pipe_kind_t)o.kinds[k], p, execute, tsr_grid_comm(grid, TSR_AXIS_PP), dev, trace);
    tsr_pipe_trace_destroy(&trace);
    tsr_device_destroy(&dev);
    tsr_grid_destroy(&grid);
    return status;
}
