/*
 * test_prof_regions.c: the profiler of tessera/prof.h on real ranks. Off, a region records
 * nothing; on, nested regions give exclusive times that add up (outer self = outer minus
 * inner), closing a region closes what it holds, equal names from different strings merge,
 * nesting stops at 32; kernels become trace events only at TSR_PROF_KERNEL_EVENTS;
 * communication carries its grid axis. Then one GPT training step and a checkpoint with
 * every event recorded, written as a Chrome trace: valid JSON, one process per rank named by
 * its grid coordinates, events of every category (waits where there are pipeline
 * messages). At 1 rank (pp=1) and 4 (dp=2, pp=2).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <tessera.h>
#include <unistd.h>

#include "tap.h"
#include "json_check.h"

static void spin(double seconds)
{
    double t0 = tsr_time_now();
    while (tsr_time_now() - t0 < seconds)
        ;
}

/* The total of (cat, name, label) in a fresh read of the totals, or a zeroed one. */
static tsr_prof_total_t total(tsr_prof_cat_t cat, const char *name, const char *label)
{
    tsr_prof_total_t *t = NULL, found;
    size_t n = 0;
    memset(&found, 0, sizeof found);
    if (tsr_prof_totals(&t, &n) != TSR_OK)
        return found;
    for (size_t i = 0; i < n; i++)
        if (t[i].cat == cat && !strcmp(t[i].name, name) &&
            (label ? t[i].label && !strcmp(t[i].label, label) : !t[i].label))
            found = t[i];
    free(t);
    return found;
}

static size_t total_count(void)
{
    tsr_prof_total_t *t = NULL;
    size_t n = 0;
    tsr_prof_totals(&t, &n);
    free(t);
    return n;
}

static void check_off(void)
{
    ok(tsr_prof_level() == TSR_PROF_OFF, "the profiler is off by default");
    int r = tsr_prof_begin(TSR_PROF_HOST, "off", NULL, -1);
    tsr_prof_end(r);
    is_int(r, -1, "off: a region gets no handle");
    is_int((long long)total_count(), 0, "off: no totals");
}

static void check_nesting(void)
{
    tsr_prof_reset();
    tsr_prof_set_level(TSR_PROF_TOTALS);
    int outer = tsr_prof_begin(TSR_PROF_HOST, "outer", NULL, -1);
    spin(0.002);
    int inner = tsr_prof_begin(TSR_PROF_HOST, "inner", NULL, -1);
    spin(0.003);
    tsr_prof_end(inner);
    spin(0.001);
    tsr_prof_end(outer);
    tsr_prof_total_t o = total(TSR_PROF_HOST, "outer", NULL), i = total(TSR_PROF_HOST, "inner", NULL);
    ok(o.count == 1 && i.count == 1, "one outer and one inner region closed");
    ok(o.seconds >= 0.006 && i.seconds >= 0.003 && o.seconds > i.seconds, "inclusive times cover the spins");
    is_rel(o.self, o.seconds - i.seconds, 1e-9, "outer self time = outer - inner");
    is_rel(i.self, i.seconds, 1e-12, "the innermost region's self time is its whole time");

    /* closing a region closes the regions it holds */
    int a = tsr_prof_begin(TSR_PROF_HOST, "a", NULL, -1);
    tsr_prof_begin(TSR_PROF_HOST, "b", NULL, -1);
    tsr_prof_end(a);
    int next = tsr_prof_begin(TSR_PROF_HOST, "c", NULL, -1);
    tsr_prof_end(next);
    ok(total(TSR_PROF_HOST, "b", NULL).count == 1 && next == 0,
       "ending a region closes the open region inside it");

    /* equal text from different strings is one total */
    char n1[] = "same", n2[] = "same";
    tsr_prof_end(tsr_prof_begin(TSR_PROF_HOST, n1, "x", -1));
    tsr_prof_end(tsr_prof_begin(TSR_PROF_HOST, n2, "x", -1));
    is_int(total(TSR_PROF_HOST, "same", "x").count, 2, "regions named alike merge in the totals");

    int handles[33], last = 0;
    for (int k = 0; k < 33; k++)
        last = handles[k] = tsr_prof_begin(TSR_PROF_HOST, "deep", NULL, -1);
    tsr_prof_end(handles[0]);
    ok(handles[31] == 31 && last == -1, "regions nest 32 deep, the 33rd is not recorded");
    tsr_prof_reset();
    is_int((long long)total_count(), 0, "reset forgets the totals");
}

static int count_events(tsr_prof_cat_t cat, const char *name)
{
    size_t n = 0;
    const tsr_prof_event_t *ev = tsr_prof_events(&n, NULL);
    int k = 0;
    for (size_t i = 0; i < n; i++)
        k += ev[i].cat == cat && !strcmp(ev[i].name, name) && ev[i].end >= ev[i].start;
    return k;
}

static void check_events(tsr_device_t dev)
{
    float a[4] = {1, 2, 3, 4}, b[4] = {4, 3, 2, 1}, y[4];
    tsr_prof_set_level(TSR_PROF_EVENTS);
    int r = tsr_prof_begin(TSR_PROF_HOST, "around", NULL, 7);
    tsr_status_t st = tsr_kernel_add(dev, TSR_DTYPE_F32, 4, a, b, y);
    tsr_prof_end(r);
    ok(st == TSR_OK && count_events(TSR_PROF_HOST, "around") == 1 && count_events(TSR_PROF_KERNEL, "add") == 0,
       "TSR_PROF_EVENTS keeps regions but not kernels as events");
    is_int(total(TSR_PROF_KERNEL, "add", NULL).count, 1, "the kernel is in the totals all the same");
    tsr_prof_set_level(TSR_PROF_KERNEL_EVENTS);
    tsr_prof_clear_events();
    r = tsr_prof_begin(TSR_PROF_HOST, "around", NULL, 7);
    tsr_kernel_add(dev, TSR_DTYPE_F32, 4, a, b, y);
    tsr_prof_end(r);
    size_t n = 0;
    const tsr_prof_event_t *ev = tsr_prof_events(&n, NULL);
    ok(n == 2 && ev[0].arg == 7 && ev[0].depth == 0 && ev[1].cat == TSR_PROF_KERNEL && ev[1].depth == 1 &&
           ev[1].start >= ev[0].start && ev[1].end <= ev[0].end && ev[1].device == 0,
       "TSR_PROF_KERNEL_EVENTS: the kernel nested in its host region, host-timed on the CPU");
    tsr_prof_set_level(TSR_PROF_OFF);
    tsr_prof_reset();
}

static void check_comm_labels(tsr_grid_t grid)
{
    double x = 1, y = 0;
    tsr_prof_set_level(TSR_PROF_TOTALS);
    tsr_status_t st = tsr_comm_allreduce(tsr_grid_comm(grid, TSR_AXIS_DP), &x, &y, 1, TSR_DTYPE_F64, TSR_REDUCE_SUM);
    st = st ? st : tsr_comm_allreduce(tsr_grid_comm(grid, TSR_AXIS_TP_ROW), &x, &y, 1, TSR_DTYPE_F64, TSR_REDUCE_SUM);
    tsr_prof_set_level(TSR_PROF_OFF);
    ok(st == TSR_OK && total(TSR_PROF_COMM, "allreduce", "dp").count == 1 &&
           total(TSR_PROF_COMM, "allreduce", "tp_row").count == 1,
       "a collective is recorded under its operation and its communicator's axis");
    tsr_prof_reset();
}

/* One training step and a checkpoint at every level of detail, then the trace. */
static void check_trace(tsr_grid_t grid, tsr_device_t dev, const tsr_layout_t *lay, const char *dir)
{
    tsr_gpt_config_t cfg = TSR_GPT_CONFIG_INIT;
    tsr_gpt_options_t opt = TSR_GPT_OPTIONS_INIT;
    tsr_zero_config_t z = TSR_ZERO_CONFIG_INIT;
    tsr_gpt_t gpt = NULL;
    tsr_ckpt_writer_t w = NULL;
    int32_t *in = NULL, *tg = NULL;
    int first = 0, count = 0;
    char path[512];
    cfg.layers = 2, cfg.dim = 32, cfg.heads = 2, cfg.vocab = 64, cfg.seq = 8;
    opt.batch = 4;
    opt.micro_batches = 2;
    opt.poll_us = 50;
    snprintf(path, sizeof path, "%s/trace.json", dir);
    tsr_status_t st = tsr_gpt_create(grid, dev, &cfg, &opt, &z, &gpt);
    if (st == TSR_OK) {
        tsr_gpt_batch_slice(gpt, &first, &count);
        in = calloc((size_t)count * cfg.seq, sizeof *in);
        tg = calloc((size_t)count * cfg.seq, sizeof *tg);
        for (int i = 0; in && tg && i < count * cfg.seq; i++)
            in[i] = i % cfg.vocab, tg[i] = (i + 1) % cfg.vocab;
        st = in && tg ? TSR_OK : TSR_ERR_OUT_OF_MEMORY;
    }
    tsr_prof_set_level(TSR_PROF_KERNEL_EVENTS);
    tsr_gpt_step_info_t info;
    if (st == TSR_OK)
        st = tsr_gpt_train_step(gpt, in, tg, &info);
    if (st == TSR_OK)
        st = tsr_ckpt_writer_create(tsr_grid_comm(grid, TSR_AXIS_WORLD), dir, 1, &w);
    if (st == TSR_OK) {
        st = tsr_ckpt_save_zero(w, grid, tsr_gpt_optimizer(gpt), &z);
        tsr_status_t c = tsr_ckpt_commit(&w, 0);
        st = st ? st : c;
    }
    tsr_prof_set_level(TSR_PROF_OFF);
    if (st != TSR_OK)
        diag("[rank %d] step or checkpoint: %s", tap_rank(), tsr_last_error());
    ok(st == TSR_OK, "a training step and a checkpoint with every event recorded");
    st = tsr_prof_write_trace(grid, path);
    ok(st == TSR_OK, "tsr_prof_write_trace");
    if (tap_rank() == 0) {
        long len = 0;
        char *text = json_slurp(path, &len);
        const char *end = text ? json_value(text) : NULL;
        ok(end && *json_ws(end) == '\0', "the trace is valid JSON (%ld bytes)", len);
        int named = 0;
        for (int d = 0; d < lay->dp; d++)
            for (int p = 0; p < lay->pp; p++) {
                char want[64];
                snprintf(want, sizeof want, "\"args\":{\"name\":\"dp%d pp%d tp0,0\"}", d, p);
                named += text && strstr(text, want) != NULL;
            }
        is_int(named, lay->dp * lay->pp, "one process per rank, named by its grid coordinates");
        const char *cats[] = {"step", "kernel", "comm", "pipe", "optim", "ckpt", "wait"};
        int ncats = lay->pp > 1 ? 7 : 6; /* one stage waits for no pipeline message */
        for (int k = 0; k < ncats; k++) {
            char want[32];
            snprintf(want, sizeof want, "\"cat\":\"%s\"", cats[k]);
            ok(text && strstr(text, want), "the trace holds %s events", cats[k]);
        }
        ok(text && strstr(text, "\"name\":\"F pp\""), "pipeline actions are named and on the pp axis");
        free(text);
    } else {
        /* the other ranks' points, so that every rank plans the same number */
        for (int k = 0; k < 3 + (lay->pp > 1 ? 7 : 6); k++)
            ok(1, "(checked on rank 0)");
    }
    tsr_prof_reset();
    free(in);
    free(tg);
    tsr_gpt_destroy(&gpt);
}

int main(int argc, char **argv)
{
    tap_init(&argc, &argv, "1 4");
    tsr_layout_t lay = TSR_LAYOUT_INIT;
    tsr_grid_t grid = NULL;
    tsr_device_t dev = NULL;
    char dir[] = "/tmp/tsr-prof.XXXXXX";
    int made = tap_rank() == 0 ? mkdtemp(dir) != NULL : 1;
    MPI_Bcast(dir, (int)sizeof dir, MPI_CHAR, 0, MPI_COMM_WORLD);
    if (tap_size() == 4)
        lay.dp = 2, lay.pp = 2;
    tsr_status_t st = tsr_device_create(TSR_DEVICE_CPU, 0, &dev);
    if (st == TSR_OK)
        st = tsr_grid_create(MPI_COMM_WORLD, &lay, &grid);
    if (!ok(st == TSR_OK && made, "CPU device, grid dp=%d pp=%d and a directory", lay.dp, lay.pp))
        return tap_done();
    check_off();
    check_nesting();
    check_events(dev);
    check_comm_labels(grid);
    check_trace(grid, dev, &lay, dir);
    MPI_Barrier(MPI_COMM_WORLD);
    if (tap_rank() == 0) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            diag("could not remove %s", dir);
    }
    tsr_grid_destroy(&grid);
    tsr_device_destroy(&dev);
    return tap_done();
}
