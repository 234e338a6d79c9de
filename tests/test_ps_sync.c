/*
 * test_ps_sync: parameter servers at staleness 0 train the tiny GPT exactly as synchronous
 * data parallelism with the same global batch: over 6 steps the losses (the mean over the
 * replicas of each round, as every worker reports it) and the gradient norms are within
 * 1e-5 (relative) of the same worker
 * layout without servers, for W = 2 and 4 replicas, S = 1 and 2 servers, AdamW (clipping
 * at 1, weight decay) and SGD with momentum, one layout with tp=1x2 and one with pp=2. The
 * bytes each worker rank sends (its pushes) and the servers send (the replies) are those of
 * the formula of tessera/ps.h, from the job communicator's counters. At staleness inf with
 * replica 0 delayed (TSR_PS_DELAY), the run completes with finite, decreasing losses and
 * the servers see workers ahead of the rounds. The reference runs first on the workers'
 * ranks; the data is synthetic text, the seed fresh per run (TSR_TEST_SEED=N repeats one).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <tessera.h>

#include "tap.h"

#define STEPS 6
#define BATCH 8
#define TOL 1e-5
#define TEXT_BYTES 65536

static uint64_t seed;
static char *text;
static tsr_device_t dev;

typedef struct run {
    const char *layout; /* with ps=S */
    tsr_optim_kind_t optim;
    int64_t staleness;
} run_t;

static void die(const char *what)
{
    fprintf(stderr, "# [rank %d] %s: %s\n", tap_rank(), what, tsr_last_error());
    MPI_Abort(MPI_COMM_WORLD, 2);
}

static tsr_gpt_config_t model(void)
{
    tsr_gpt_config_t c = TSR_GPT_CONFIG_INIT;
    c.layers = 2, c.dim = 32, c.heads = 4, c.vocab = 256, c.seq = 16;
    return c;
}

static tsr_zero_config_t optimizer(tsr_optim_kind_t kind)
{
    tsr_zero_config_t z = TSR_ZERO_CONFIG_INIT;
    z.optim = kind;
    z.lr = kind == TSR_OPTIM_ADAMW ? 3e-3f : 0.1f;
    z.momentum = 0.9f;
    z.clip_norm = 1.0f;
    z.weight_decay = 0.1f;
    return z;
}

/* Sequence j of step s: T + 1 bytes of the text from an offset drawn from (seed, s, j). */
static void batch(int step, int first, int count, int seq, int32_t *in, int32_t *tg)
{
    for (int i = 0; i < count; i++) {
        uint32_t r = tsr_rng_u32(seed, tsr_rng_stream(7, (uint32_t)step), (uint64_t)(first + i));
        size_t off = r % (TEXT_BYTES - seq - 1);
        for (int t = 0; t < seq; t++) {
            in[i * seq + t] = (unsigned char)text[off + t];
            tg[i * seq + t] = (unsigned char)text[off + t + 1];
        }
    }
}

/* What one rank saw: per-step loss and norm; pushed and replied bytes, and the formula's. */
typedef struct result {
    double loss[STEPS], norm[STEPS];
    unsigned long long sent, want_sent, want_replies;
    tsr_ps_stats_t stats;
} result_t;

/* The elements this worker holds and counts, from its optimizer's pieces. */
static void elements(tsr_zero_t z, unsigned long long *held, unsigned long long *counted)
{
    *held = *counted = 0;
    for (int i = 0; i < tsr_zero_tensor_count(z); i++) {
        tsr_zero_tensor_t d;
        tsr_zero_piece_t pc;
        if (tsr_zero_tensor_desc(z, i, &d) || tsr_zero_piece(z, i, TSR_ZERO_PARAM, &pc))
            die("tensor");
        *held += (unsigned long long)d.local_rows * (unsigned long long)d.local_cols;
        *counted += pc.write_end - pc.write_begin;
    }
}

/* Train STEPS steps on `layout` over comm (a server serves instead). */
static void train(MPI_Comm comm, const char *layout, const run_t *r, result_t *out)
{
    tsr_layout_t lay = TSR_LAYOUT_INIT;
    tsr_grid_t grid = NULL;
    tsr_gpt_t gpt = NULL;
    tsr_gpt_config_t cfg = model();
    tsr_gpt_options_t opt = TSR_GPT_OPTIONS_INIT;
    tsr_zero_config_t z = optimizer(r->optim);
    memset(out, 0, sizeof *out);
    if (tsr_layout_parse(layout, &lay) || tsr_grid_create(comm, &lay, &grid))
        die(layout);
    if (tsr_grid_is_server(grid)) {
        tsr_ps_config_t pc = TSR_PS_CONFIG_INIT;
        tsr_comm_counters_t c;
        pc.staleness = r->staleness;
        if (tsr_ps_serve(grid, dev, &z, &pc, &out->stats))
            die("tsr_ps_serve");
        tsr_comm_counters(tsr_grid_ps_comm(grid), &c);
        out->sent = c.bytes[TSR_COMM_SEND];
        tsr_grid_destroy(&grid);
        return;
    }
    opt.seed = seed;
    opt.batch = BATCH;
    opt.poll_us = 50;
    if (tsr_gpt_create(grid, dev, &cfg, &opt, &z, &gpt))
        die("tsr_gpt_create");
    tsr_comm_t job = tsr_grid_ps_comm(grid);
    if (job)
        tsr_comm_reset_counters(job);
    int first, count;
    tsr_gpt_batch_slice(gpt, &first, &count);
    int32_t *in = malloc(sizeof(int32_t) * count * cfg.seq), *tg = malloc(sizeof(int32_t) * count * cfg.seq);
    for (int s = 0; s < STEPS; s++) {
        tsr_gpt_step_info_t info;
        batch(s, first, count, cfg.seq, in, tg);
        if (tsr_gpt_train_step(gpt, in, tg, &info))
            die("tsr_gpt_train_step");
        out->loss[s] = info.loss;
        out->norm[s] = info.grad_norm;
    }
    if (job) {
        tsr_comm_counters_t c;
        unsigned long long held, counted;
        tsr_comm_counters(job, &c);
        elements(tsr_gpt_optimizer(gpt), &held, &counted);
        out->sent = c.bytes[TSR_COMM_SEND];
        out->want_sent = STEPS * ((unsigned long long)lay.ps * TSR_PS_HEADER_BYTES + 4 * counted);
        out->want_replies = STEPS * ((unsigned long long)lay.ps * TSR_PS_HEADER_BYTES + 4 * held);
    }
    free(in);
    free(tg);
    tsr_gpt_destroy(&gpt);
    tsr_grid_destroy(&grid);
}

/* The worker layout of a PS layout: "ps=S," dropped. */
static const char *workers_of(const char *layout)
{
    const char *comma = strchr(layout, ',');
    return comma ? comma + 1 : "dp=1";
}

static int servers_of(const char *layout)
{
    return atoi(layout + 3);
}

static void compare(const run_t *r)
{
    int S = servers_of(r->layout), worker = tap_rank() < tap_size() - S;
    MPI_Comm wcomm;
    result_t ref, got;
    MPI_Comm_split(MPI_COMM_WORLD, worker, tap_rank(), &wcomm);
    if (worker)
        train(wcomm, workers_of(r->layout), r, &ref);
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = MPI_Wtime();
    train(MPI_COMM_WORLD, r->layout, r, &got);
    double secs = MPI_Wtime() - t0;
    double worst = 0, worst_norm = 0, *mean = got.loss;
    if (worker)
        for (int s = 0; s < STEPS; s++) {
            double e = fabs(mean[s] - ref.loss[s]) / fabs(ref.loss[s]);
            double en = fabs(got.norm[s] - ref.norm[s]) / fabs(ref.norm[s]);
            worst = e > worst ? e : worst;
            worst_norm = en > worst_norm ? en : worst_norm;
        }
    unsigned long long pushes_wrong = worker && got.sent != got.want_sent, replies = worker ? 0 : got.sent;
    unsigned long long want_replies = worker ? got.want_replies : 0;
    MPI_Allreduce(MPI_IN_PLACE, &replies, 1, MPI_UNSIGNED_LONG_LONG, MPI_SUM, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, &want_replies, 1, MPI_UNSIGNED_LONG_LONG, MPI_SUM, MPI_COMM_WORLD);
    const char *name = r->optim == TSR_OPTIM_ADAMW ? "AdamW" : "SGD";
    if (tap_rank() == 0)
        diag("%s %s s=0: mean loss %.6f -> %.6f (synchronous %.6f -> %.6f), %.2f s", r->layout, name, mean[0],
         mean[STEPS - 1], worker ? ref.loss[0] : 0.0, worker ? ref.loss[STEPS - 1] : 0.0, secs);
    ok(worst <= TOL, "%s, %s, staleness 0: 6 losses on every worker within 1e-5 of synchronous %s (worst %.2g)",
       r->layout, name, workers_of(r->layout), worst);
    ok(worst_norm <= TOL, "%s, %s, staleness 0: 6 gradient norms within 1e-5 of synchronous (worst %.2g)", r->layout,
       name, worst_norm);
    ok(!pushes_wrong, "%s: each worker rank sent %llu bytes in 6 steps, the formula's %llu", r->layout, got.sent,
       got.want_sent);
    ok(replies == want_replies, "%s: the servers replied %llu bytes in 6 steps, the formula's %llu", r->layout, replies,
       want_replies);
    MPI_Comm_free(&wcomm);
}

/* Staleness inf with replica 0 sleeping 30 ms a step: it completes, learns, and the fast
 * replica runs ahead of the rounds. */
static void asynchronous(const char *layout)
{
    run_t r = {layout, TSR_OPTIM_ADAMW, TSR_PS_STALENESS_INF};
    result_t got;
    setenv("TSR_PS_DELAY", "0:30", 1);
    train(MPI_COMM_WORLD, layout, &r, &got);
    unsetenv("TSR_PS_DELAY");
    int S = servers_of(layout), worker = tap_rank() < tap_size() - S;
    int bad = worker && !(isfinite(got.loss[STEPS - 1]) && got.loss[STEPS - 1] < got.loss[0]);
    long long lag = worker ? 0 : got.stats.max_lag;
    MPI_Allreduce(MPI_IN_PLACE, &bad, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, &lag, 1, MPI_LONG_LONG, MPI_MAX, MPI_COMM_WORLD);
    ok(!bad, "%s, staleness inf, replica 0 delayed: every replica's loss finite and decreasing", layout);
    ok(lag >= 1, "%s, staleness inf: a worker pushed %lld clocks ahead of the rounds applied", layout, lag);
}

int main(int argc, char **argv)
{
    tap_init(&argc, &argv, "3 4 5 6");
    seed = tap_seed() % 1000003;
    if (tsr_device_create(TSR_DEVICE_CPU, 0, &dev))
        die("cpu device");
    text = malloc(TEXT_BYTES);
    tsr_data_synthetic_text(seed, TEXT_BYTES, text);
    const tsr_optim_kind_t A = TSR_OPTIM_ADAMW, G = TSR_OPTIM_SGD;
    const run_t three[] = {{"ps=1,dp=2", A, 0}, {"ps=1,dp=2", G, 0}};
    const run_t four[] = {{"ps=2,dp=2", A, 0}, {"ps=2,dp=2", G, 0}};
    const run_t five[] = {{"ps=1,dp=4", A, 0}, {"ps=1,dp=2,pp=2", A, 0}};
    const run_t six[] = {{"ps=2,dp=4", G, 0}, {"ps=2,dp=2,tp=1x2", A, 0}};
    const run_t *runs = NULL;
    size_t n = 0;
    switch (tap_size()) {
    case 3: runs = three, n = 2; break;
    case 4: runs = four, n = 2; break;
    case 5: runs = five, n = 2; break;
    case 6: runs = six, n = 2; break;
    default: tap_skip_all("runs at 3, 4, 5 or 6 ranks");
    }
    for (size_t i = 0; i < n; i++)
        compare(&runs[i]);
    if (tap_size() == 3)
        asynchronous("ps=1,dp=2");
    tsr_device_destroy(&dev);
    free(text);
    return tap_done();
}
