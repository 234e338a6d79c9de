/*
 * tsr-bench ps: parameter servers against synchronous data parallelism under a straggler.
 *
 *   mpiexec -n S+W*G tsr-bench ps --layout ps=S,dp=W[,pp=P,tp=RxC] [--json] [OPTIONS]
 *
 * Every configuration trains the same model on the same synthetic English-like text
 * (tsr_data_synthetic_text) for the same number of samples: --rounds R global batches of
 * --batch B sequences. The synchronous run is ZeRO stage 0 on the W·G worker ranks alone
 * (layout dp=W,pp=P,tp=RxC; the servers wait asleep); each PS run uses the whole job at one
 * staleness. In a PS run the replicas draw work from a shared counter (MPI_Fetch_and_op on a
 * window at the first server): ticket t is batch t / W's replica slot t mod W, and a replica
 * stops when the counter passes R·W, so every run trains exactly R·W replica batches, the
 * samples of R synchronous steps, however the replicas share them out.
 *
 * The straggler: `fixed` makes replica W-1 sleep --delay-ms before each of its steps;
 * `moving` makes replica r sleep before its own steps k with k mod W = r, so that each step
 * of the synchronous run has one slow replica, a different one each time. The delay is by
 * default the mean step time of the synchronous run without straggler (measured first), so
 * a delayed step takes about twice as long.
 *
 * Each result: seconds from the first step to the last replica's end, tokens/s, its ratio
 * to the synchronous run's under the same straggler, the validation loss after training
 * (mean cross-entropy of --val-batches fixed batches from text no step trains on, with the
 * parameters of the replica that finished last: its last reply came after every push) and its ratio to
 * the synchronous run's, the servers' rounds and largest lag, and the bytes each worker rank
 * sent per step (its pushes) and the servers replied, from comm's counters, beside the
 * formula of tessera/ps.h.
 */
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "app.h"
#include "bench.h"

#define TEXT_BYTES (1 << 20) /* the first half trains, the second validates */
#define TEXT_SEED 20261202
#define MAX_STALENESS 8

enum { STRAGGLER_NONE, STRAGGLER_FIXED, STRAGGLER_MOVING, STRAGGLER_KINDS };
static const char *const straggler_names[] = {"none", "fixed", "moving"};

typedef struct opts {
    tsr_layout_t layout; /* with ps = S */
    tsr_gpt_config_t model;
    tsr_gpt_options_t gpt;
    tsr_zero_config_t zero;
    int rounds, val_batches, json;
    int nstale;
    int64_t staleness[MAX_STALENESS];
    int stragglers[STRAGGLER_KINDS]; /* which kinds to run */
    double delay_ms;                 /* < 0: the synchronous step time */
} opts_t;

/* What one configuration measured, reduced over the job. */
typedef struct result {
    double seconds, val_loss;
    long long sent_per_step, want_sent_per_step; /* the worker rank whose push bytes are worst */
    unsigned long long replies, want_replies;    /* all servers' replies, and the formula's */
    tsr_ps_stats_t stats;                        /* the largest over the servers */
} result_t;

static const char *sub = "ps";
static char *text;
static tsr_device_t dev;

static void usage(void)
{
    printf("usage: mpiexec -n N tsr-bench ps --layout ps=S,dp=W[,pp=P,tp=RxC] [--json] [OPTIONS]\n"
           "Parameter servers at several staleness bounds against synchronous data parallelism with the\n"
           "same global batch, with and without a straggler, over the same number of samples.\n"
           "  --layout LAYOUT          ps=S,dp=W,... : S server ranks and W worker replicas (required)\n"
           "  --model SPEC             tiny, gpt2-124m or layers=L,dim=H,heads=A,vocab=V,seq=T (default tiny)\n"
           "  --batch B                global batch in sequences per round (default 8; divisible by W)\n"
           "  --rounds R               samples of R synchronous steps per configuration (default 30)\n"
           "  --staleness LIST         comma-separated bounds, integers or inf (default 0,1,2,4,inf)\n"
           "  --straggler LIST         none, fixed, moving, comma-separated (default none,fixed,moving)\n"
           "  --delay-ms D             a straggler's sleep before each delayed step (default: the\n"
           "                           synchronous run's mean step time, so a delayed step takes twice as long)\n"
           "  --lr X                   AdamW learning rate (default 3e-3)\n"
           "  --val-batches N          validation batches of B/W sequences each replica evaluates (default 4)\n"
           "  --json                   one JSON object per configuration, one per line\n"
           "  --help                   this text\n"
           "The vocabulary must be at least 256 (the text is bytes).\n");
}

static int parse_list(const char *arg, opts_t *o, int stale)
{
    char buf[256];
    if (strlen(arg) >= sizeof buf)
        return bench_fail(sub, "%s %s: too long", stale ? "--staleness" : "--straggler", arg);
    snprintf(buf, sizeof buf, "%s", arg);
    if (stale)
        o->nstale = 0;
    else
        memset(o->stragglers, 0, sizeof o->stragglers);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (stale) {
            if (o->nstale == MAX_STALENESS)
                return bench_fail(sub, "--staleness %s: at most %d values", arg, MAX_STALENESS);
            if (tsr_ps_staleness_parse(tok, &o->staleness[o->nstale++]) != TSR_OK)
                return bench_fail(sub, "--staleness %s: %s", arg, tsr_last_error());
            continue;
        }
        int k;
        for (k = 0; k < STRAGGLER_KINDS && strcmp(tok, straggler_names[k]); k++)
            ;
        if (k == STRAGGLER_KINDS)
            return bench_fail(sub, "--straggler %s: \"%s\" is not none, fixed or moving", arg, tok);
        o->stragglers[k] = 1;
    }
    if (stale ? o->nstale == 0 : !(o->stragglers[0] | o->stragglers[1] | o->stragglers[2]))
        return bench_fail(sub, "%s %s: expected at least one value", stale ? "--staleness" : "--straggler", arg);
    return 0;
}

/* 0: run; 1: bad input (message printed); -1: --help printed. */
static int parse(int argc, char **argv, int world, opts_t *o)
{
    enum { O_LAYOUT = 256, O_MODEL, O_BATCH, O_ROUNDS, O_STALE, O_STRAG, O_DELAY, O_LR, O_VAL, O_JSON, O_HELP };
    static const struct option longopts[] = {
        {"layout", required_argument, 0, O_LAYOUT},    {"model", required_argument, 0, O_MODEL},
        {"batch", required_argument, 0, O_BATCH},      {"rounds", required_argument, 0, O_ROUNDS},
        {"staleness", required_argument, 0, O_STALE},  {"straggler", required_argument, 0, O_STRAG},
        {"delay-ms", required_argument, 0, O_DELAY},   {"lr", required_argument, 0, O_LR},
        {"val-batches", required_argument, 0, O_VAL},  {"json", no_argument, 0, O_JSON},
        {"help", no_argument, 0, O_HELP},              {0, 0, 0, 0}};
    const tsr_layout_t lay = TSR_LAYOUT_INIT;
    const tsr_gpt_config_t model = TSR_GPT_CONFIG_INIT;
    const tsr_gpt_options_t gpt = TSR_GPT_OPTIONS_INIT;
    const tsr_zero_config_t zero = train_zero_defaults();
    int have_layout = 0;
    *o = (opts_t){lay, model, gpt, zero, 30, 4, 0, 5, {0, 1, 2, 4, TSR_PS_STALENESS_INF}, {1, 1, 1}, -1.0};
    o->gpt.batch = 8;
    o->zero.lr = 3e-3f;
    opterr = 0;
    optind = 1;
    for (int c; (c = getopt_long(argc, argv, ":", longopts, NULL)) != -1;) {
        double x;
        switch (c) {
        case O_LAYOUT:
            if (tsr_layout_parse(optarg, &o->layout) != TSR_OK)
                return bench_fail(sub, "--layout %s: %s", optarg, tsr_last_error());
            have_layout = 1;
            break;
        case O_MODEL:
            if (tsr_gpt_config_parse(optarg, &o->model) != TSR_OK)
                return bench_fail(sub, "--model %s: %s", optarg, tsr_last_error());
            break;
        case O_BATCH:
            if (bench_int(sub, "--batch", optarg, 1, INT_MAX, &o->gpt.batch))
                return 1;
            break;
        case O_ROUNDS:
            if (bench_int(sub, "--rounds", optarg, 1, 1000000, &o->rounds))
                return 1;
            break;
        case O_STALE:
            if (parse_list(optarg, o, 1))
                return 1;
            break;
        case O_STRAG:
            if (parse_list(optarg, o, 0))
                return 1;
            break;
        case O_DELAY:
            if (bench_number(sub, "--delay-ms", optarg, 0, 3600000, &o->delay_ms))
                return 1;
            break;
        case O_LR:
            if (bench_number(sub, "--lr", optarg, 0, 1e3, &x))
                return 1;
            o->zero.lr = (float)x;
            break;
        case O_VAL:
            if (bench_int(sub, "--val-batches", optarg, 1, 10000, &o->val_batches))
                return 1;
            break;
        case O_JSON: o->json = 1; break;
        case O_HELP:
            if (bench_rank() == 0)
                usage();
            return -1;
        case ':': return bench_fail(sub, "%s needs a value", argv[optind - 1]);
        default: return bench_fail(sub, "unknown option %s (see tsr-bench ps --help)", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return bench_fail(sub, "unexpected argument %s", argv[optind]);
    char buf[TSR_LAYOUT_STRLEN];
    const tsr_layout_t *l = &o->layout;
    if (!have_layout || l->ps < 1)
        return bench_fail(sub, "--layout: expected ps=S,dp=W,... with S >= 1 servers (see tsr-bench ps --help)");
    if (tsr_layout_ranks(l) != world)
        return bench_fail(sub, "--layout %s needs %d ranks, but mpiexec started %d",
                          tsr_layout_format(l, buf, sizeof buf), tsr_layout_ranks(l), world);
    if (o->gpt.batch % l->dp)
        return bench_fail(sub, "--batch %d is not divisible by dp=%d", o->gpt.batch, l->dp);
    if (o->model.vocab < 256)
        return bench_fail(sub, "--model: vocab=%d is smaller than the 256 byte values of the text", o->model.vocab);
    if (o->model.seq + 1 >= TEXT_BYTES / 2 || (int64_t)o->gpt.batch * o->model.seq > INT_MAX / 4)
        return bench_fail(sub, "--batch %d of seq=%d: too many tokens per round", o->gpt.batch, o->model.seq);
    if ((int64_t)o->rounds * l->dp > INT_MAX / 2)
        return bench_fail(sub, "--rounds %d of %d replicas: too many tickets", o->rounds, l->dp);
    return 0;
}

/* Wait for every rank of comm without spinning (the servers of a synchronous run: their
 * cores are the workers'). */
static void sleepy_barrier(MPI_Comm comm)
{
    MPI_Request req;
    int done = 0;
    MPI_Ibarrier(comm, &req);
    for (MPI_Test(&req, &done, MPI_STATUS_IGNORE); !done; MPI_Test(&req, &done, MPI_STATUS_IGNORE))
        nanosleep(&(struct timespec){0, 200000}, NULL);
}

static void sleep_ms(double ms)
{
    if (ms <= 0)
        return;
    struct timespec ts = {(time_t)(ms / 1000), (long)(fmod(ms, 1000.0) * 1e6)};
    nanosleep(&ts, NULL);
}

static void fail(const char *what)
{
    fprintf(stderr, "tsr-bench ps: rank %d: %s: %s\n", bench_rank(), what, tsr_last_error());
    MPI_Abort(MPI_COMM_WORLD, 1);
}

/* Replica slot `slot`'s share of batch `b` (b < 0: validation batch -b-1): this rank's
 * `count` sequences from sequence `first` of the slot, windows of T + 1 bytes of the text's
 * training (first) or validation (second) half at offsets drawn from (b, slot, sequence). */
static void make_batch(int b, int slot, int per_replica, int first, int count, int seq, int32_t *in, int32_t *tg)
{
    size_t half = TEXT_BYTES / 2, base = b < 0 ? half : 0;
    for (int i = 0; i < count; i++) {
        uint64_t j = (uint64_t)slot * (uint64_t)per_replica + (uint64_t)(first + i);
        uint64_t stream = tsr_rng_stream(b < 0 ? 1u : 0u, (uint32_t)(b < 0 ? -b - 1 : b));
        size_t off = base + tsr_rng_u32(TEXT_SEED, stream, j) % (half - (size_t)seq - 1);
        for (int t = 0; t < seq; t++) {
            in[(size_t)i * seq + t] = (unsigned char)text[off + t];
            tg[(size_t)i * seq + t] = (unsigned char)text[off + t + 1];
        }
    }
}

/* Does replica r of W sleep before its own step k? */
static int delayed(int straggler, int r, int W, long k)
{
    return straggler == STRAGGLER_FIXED ? r == W - 1 : straggler == STRAGGLER_MOVING ? k % W == r : 0;
}

/* The elements this worker rank holds and counts (tessera/ps.h's formula). */
static void elements(tsr_zero_t z, long long *held, long long *counted)
{
    *held = *counted = 0;
    for (int i = 0; i < tsr_zero_tensor_count(z); i++) {
        tsr_zero_tensor_t d;
        tsr_zero_piece_t pc;
        if (tsr_zero_tensor_desc(z, i, &d) != TSR_OK || tsr_zero_piece(z, i, TSR_ZERO_PARAM, &pc) != TSR_OK)
            fail("the optimizer's tensors");
        *held += (long long)d.local_rows * d.local_cols;
        *counted += (long long)(pc.write_end - pc.write_begin);
    }
}

/* Validation loss of this replica's parameters, the mean over its sequences of the global
 * batch (tsr_gpt_eval_sequences: a PS worker's grid does not reach the other replicas, whose
 * entries stay 0); every rank of the replica gets it. */
static double validate(const opts_t *o, tsr_gpt_t gpt, int replica, int32_t *in, int32_t *tg, double *seq_loss)
{
    int first, count, per = o->gpt.batch / o->layout.dp;
    double sum = 0;
    tsr_gpt_batch_slice(gpt, &first, &count);
    for (int v = 0; v < o->val_batches; v++) {
        make_batch(-v - 1, 0, per, first % per, count, o->model.seq, in, tg);
        if (tsr_gpt_eval_sequences(gpt, in, tg, seq_loss) != TSR_OK)
            fail("validation");
        for (int i = 0; i < per; i++)
            sum += seq_loss[replica * per + i];
    }
    return sum / ((double)o->val_batches * per * o->model.seq);
}

/*
 * One configuration: staleness < 0 is the synchronous run on the workers alone. Collective
 * over MPI_COMM_WORLD; every rank returns the job's result.
 */
static void measure(const opts_t *o, int64_t staleness, int straggler, double delay_ms, result_t *res)
{
    const tsr_layout_t *l = &o->layout;
    int world = 0, rank = bench_rank(), S = l->ps, W = l->dp, sync = staleness < 0;
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    int server = rank >= world - S; /* the servers are the last S ranks (tessera/grid.h) */
    MPI_Comm workers;
    MPI_Comm_split(MPI_COMM_WORLD, server, rank, &workers);
    /* The ticket counter, at the first server. */
    int *counter = NULL;
    MPI_Win win;
    MPI_Win_allocate(rank == world - S ? (MPI_Aint)sizeof(int) : 0, sizeof(int), MPI_INFO_NULL, MPI_COMM_WORLD,
                     &counter, &win);
    if (rank == world - S)
        *counter = 0;
    MPI_Barrier(MPI_COMM_WORLD);

    tsr_layout_t lay = *l;
    if (sync)
        lay.ps = 0;
    tsr_grid_t grid = NULL;
    tsr_gpt_t gpt = NULL;
    tsr_ps_stats_t stats = {0, 0, 0};
    double t_end = 0, t0 = 0, val = 0;
    long steps = 0;
    long long sent = 0, want_sent = 0;
    unsigned long long replies = 0, want_replies = 0;
    if (server && sync) {
        sleepy_barrier(MPI_COMM_WORLD);
    } else if (server) {
        tsr_ps_config_t pc = TSR_PS_CONFIG_INIT;
        tsr_comm_counters_t c;
        pc.staleness = staleness;
        if (tsr_grid_create(MPI_COMM_WORLD, &lay, &grid) != TSR_OK)
            fail("grid");
        if (tsr_ps_serve(grid, dev, &o->zero, &pc, &stats) != TSR_OK)
            fail("serve");
        tsr_comm_counters(tsr_grid_ps_comm(grid), &c);
        replies = c.bytes[TSR_COMM_SEND];
        tsr_grid_destroy(&grid);
        sleepy_barrier(MPI_COMM_WORLD);
    } else {
        if (tsr_grid_create(sync ? workers : MPI_COMM_WORLD, &lay, &grid) != TSR_OK)
            fail("grid");
        if (tsr_gpt_create(grid, dev, &o->model, &o->gpt, &o->zero, &gpt) != TSR_OK)
            fail("model");
        tsr_grid_coords_t gc;
        tsr_grid_coords(grid, &gc);
        int replica = gc.dp, first, count, per = o->gpt.batch / W;
        MPI_Comm group;
        MPI_Comm_split(workers, replica, rank, &group);
        int leader;
        MPI_Comm_rank(group, &leader);
        leader = leader == 0;
        tsr_comm_t job = sync ? tsr_grid_comm(grid, TSR_AXIS_DP) : tsr_grid_ps_comm(grid);
        tsr_comm_reset_counters(job);
        tsr_gpt_batch_slice(gpt, &first, &count);
        size_t n = (size_t)count * (size_t)o->model.seq;
        int32_t *in = malloc(n * sizeof *in + 1), *tg = malloc(n * sizeof *tg + 1);
        double *seq_loss = malloc((size_t)o->gpt.batch * sizeof *seq_loss);
        if (!in || !tg || !seq_loss) {
            fprintf(stderr, "tsr-bench ps: rank %d: no memory for a batch of %zu tokens\n", rank, n);
            MPI_Abort(MPI_COMM_WORLD, 1);
        }
        MPI_Barrier(workers);
        t0 = MPI_Wtime();
        for (long k = 0;; k++) {
            int ticket;
            if (sync) {
                if (k == o->rounds)
                    break;
                ticket = (int)k * W + replica;
            } else {
                const int one = 1;
                if (leader) {
                    MPI_Win_lock(MPI_LOCK_SHARED, world - S, 0, win);
                    MPI_Fetch_and_op(&one, &ticket, MPI_INT, world - S, 0, MPI_SUM, win);
                    MPI_Win_unlock(world - S, win);
                }
                MPI_Bcast(&ticket, 1, MPI_INT, 0, group);
                if (ticket >= o->rounds * W)
                    break;
            }
            if (delayed(straggler, replica, W, k))
                sleep_ms(delay_ms);
            make_batch(ticket / W, ticket % W, per, first % per, count, o->model.seq, in, tg);
            if (tsr_gpt_train_step(gpt, in, tg, NULL) != TSR_OK)
                fail("training step");
            steps++;
        }
        t_end = MPI_Wtime();
        tsr_comm_counters_t c;
        tsr_comm_counters(job, &c);
        long long held, counted;
        elements(tsr_gpt_optimizer(gpt), &held, &counted);
        sent = steps ? (long long)(c.bytes[sync ? TSR_COMM_ALLREDUCE : TSR_COMM_SEND] / (unsigned long long)steps) : 0;
        want_sent = sync ? -1 : S * (long long)TSR_PS_HEADER_BYTES + 4 * counted;
        want_replies = sync ? 0 : (unsigned long long)steps * ((unsigned long long)S * TSR_PS_HEADER_BYTES + 4ull * held);
        val = validate(o, gpt, replica, in, tg, seq_loss);
        free(seq_loss);
        free(in);
        free(tg);
        tsr_gpt_destroy(&gpt); /* a PS worker's optimizer says goodbye to the servers here */
        tsr_grid_destroy(&grid);
        MPI_Comm_free(&group);
        /* The loss of the replica that finished last: its last reply came after every push
         * had been taken, so it holds the parameters after all the rounds. */
        struct { double t; int rank; } mine = {t_end, rank}, last;
        MPI_Allreduce(&mine, &last, 1, MPI_DOUBLE_INT, MPI_MAXLOC, workers);
        int wrank;
        MPI_Comm_rank(workers, &wrank);
        int root = last.rank == rank ? wrank : 0;
        MPI_Allreduce(MPI_IN_PLACE, &root, 1, MPI_INT, MPI_MAX, workers);
        MPI_Bcast(&val, 1, MPI_DOUBLE, root, workers);
        MPI_Allreduce(MPI_IN_PLACE, &t0, 1, MPI_DOUBLE, MPI_MIN, workers);
        t_end = last.t;
        sleepy_barrier(MPI_COMM_WORLD);
    }
    MPI_Win_free(&win);
    MPI_Comm_free(&workers);
    /* Rank 0 is a worker: it has the seconds and the loss; the job sums the rest. */
    long long worst[2] = {0, 0}; /* the worker rank whose push bytes differ most from the formula */
    if (!server)
        worst[0] = sent, worst[1] = want_sent;
    long long diff = server ? 0 : llabs(sent - want_sent), maxdiff = 0;
    MPI_Allreduce(&diff, &maxdiff, 1, MPI_LONG_LONG, MPI_MAX, MPI_COMM_WORLD);
    int who = !server && diff == maxdiff ? rank : world;
    MPI_Allreduce(MPI_IN_PLACE, &who, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    MPI_Bcast(worst, 2, MPI_LONG_LONG, who, MPI_COMM_WORLD);
    unsigned long long bytes[2] = {replies, want_replies};
    MPI_Allreduce(MPI_IN_PLACE, bytes, 2, MPI_UNSIGNED_LONG_LONG, MPI_SUM, MPI_COMM_WORLD);
    long long st[3] = {stats.rounds, stats.pushes, stats.max_lag};
    MPI_Allreduce(MPI_IN_PLACE, st, 3, MPI_LONG_LONG, MPI_MAX, MPI_COMM_WORLD);
    double tv[2] = {t_end - t0, val};
    MPI_Bcast(tv, 2, MPI_DOUBLE, 0, MPI_COMM_WORLD);
    *res = (result_t){tv[0], tv[1], worst[0], worst[1], bytes[0], bytes[1], {st[0], st[1], st[2]}};
}

static void report(const opts_t *o, int64_t staleness, int straggler, double delay_ms, const result_t *r,
                   const result_t *sync)
{
    if (bench_rank() != 0)
        return;
    char lay[TSR_LAYOUT_STRLEN], stale[24], model[128];
    double tokens = (double)o->rounds * o->gpt.batch * o->model.seq;
    double tps = tokens / r->seconds, speedup = sync->seconds / r->seconds, loss_ratio = r->val_loss / sync->val_loss;
    tsr_layout_format(&o->layout, lay, sizeof lay);
    tsr_gpt_config_format(&o->model, model, sizeof model);
    if (staleness < 0)
        snprintf(stale, sizeof stale, "sync");
    else if (staleness == TSR_PS_STALENESS_INF)
        snprintf(stale, sizeof stale, "inf");
    else
        snprintf(stale, sizeof stale, "%lld", (long long)staleness);
    int match = staleness < 0 || (r->sent_per_step == r->want_sent_per_step && r->replies == r->want_replies);
    if (o->json) {
        printf("{\"bench\":\"ps\",\"layout\":\"%s\",\"model\":\"%s\",\"batch\":%d,\"rounds\":%d,\"mode\":\"%s\","
               "\"staleness\":\"%s\",\"straggler\":\"%s\",\"delay_ms\":%.3f,\"seconds\":%.6f,\"tokens_per_s\":%.1f,"
               "\"speedup_vs_sync\":%.4f,\"val_loss\":%.6f,\"val_loss_vs_sync\":%.4f",
               lay, model, o->gpt.batch, o->rounds, staleness < 0 ? "dp" : "ps", stale, straggler_names[straggler],
               straggler == STRAGGLER_NONE ? 0.0 : delay_ms, r->seconds, tps, speedup, r->val_loss, loss_ratio);
        if (staleness >= 0)
            printf(",\"server_rounds\":%lld,\"pushes\":%lld,\"max_lag\":%lld,\"push_bytes_per_step\":%lld,"
                   "\"push_bytes_formula\":%lld,\"reply_bytes\":%llu,\"reply_bytes_formula\":%llu,\"bytes_match\":%s",
                   (long long)r->stats.rounds, (long long)r->stats.pushes, (long long)r->stats.max_lag,
                   r->sent_per_step, r->want_sent_per_step, r->replies, r->want_replies, match ? "true" : "false");
        else
            printf(",\"allreduce_bytes_per_step\":%lld", r->sent_per_step);
        printf("}\n");
    } else {
        printf("%-6s %-5s %-7s %9.3f %11.0f %8.2fx %9.4f %7.3f", staleness < 0 ? "dp" : "ps", stale,
               straggler_names[straggler], r->seconds, tps, speedup, r->val_loss, loss_ratio);
        if (staleness >= 0)
            printf("  %6lld %4lld  %10lld %s", (long long)r->stats.rounds, (long long)r->stats.max_lag,
                   r->sent_per_step, match ? "= formula" : "!= formula");
        printf("\n");
    }
    fflush(stdout);
}

int bench_ps(int argc, char **argv)
{
    int world = 0;
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    opts_t o;
    int p = parse(argc, argv, world, &o);
    if (p)
        return p < 0 ? 0 : 1;
    if (tsr_device_create(TSR_DEVICE_CPU, 0, &dev) != TSR_OK)
        return bench_fail(sub, "cpu device: %s", tsr_last_error());
    text = malloc(TEXT_BYTES);
    if (!text)
        return bench_fail(sub, "no memory for %d bytes of text", TEXT_BYTES);
    tsr_data_synthetic_text(TEXT_SEED, TEXT_BYTES, text);
    if (!o.json && bench_rank() == 0) {
        char lay[TSR_LAYOUT_STRLEN], model[128];
        printf("tsr-bench ps: %s, model %s, global batch %d, %d rounds (%lld tokens) per configuration\n",
               tsr_layout_format(&o.layout, lay, sizeof lay), tsr_gpt_config_format(&o.model, model, sizeof model),
               o.gpt.batch, o.rounds, (long long)o.rounds * o.gpt.batch * o.model.seq);
        printf("%-6s %-5s %-7s %9s %11s %9s %9s %7s  %6s %4s  %10s\n", "mode", "stale", "strag", "seconds", "tokens/s",
               "vs dp", "val loss", "vs dp", "rounds", "lag", "push B/step");
    }
    result_t sync_none, sync, r;
    measure(&o, -1, STRAGGLER_NONE, 0, &sync_none);
    double delay = o.delay_ms >= 0 ? o.delay_ms : 1000.0 * sync_none.seconds / o.rounds;
    if (!o.json && bench_rank() == 0)
        printf("# straggler delay %.1f ms per delayed step (%s)\n", delay,
               o.delay_ms >= 0 ? "--delay-ms" : "the synchronous step time");
    for (int k = 0; k < STRAGGLER_KINDS; k++) {
        if (!o.stragglers[k])
            continue;
        if (k == STRAGGLER_NONE)
            sync = sync_none;
        else
            measure(&o, -1, k, delay, &sync);
        report(&o, -1, k, delay, &sync, &sync);
        for (int i = 0; i < o.nstale; i++) {
            measure(&o, o.staleness[i], k, delay, &r);
            report(&o, o.staleness[i], k, delay, &r, &sync);
        }
    }
    free(text);
    tsr_device_destroy(&dev);
    return 0;
}
