/*
 * bench_train.c: tsr-bench train. Training throughput of the GPT model on the grid of ranks
 * it is started on: tokens per second, milliseconds per step, model FLOP/s and MFU, the loss
 * of the last step, the pipeline bubble measured from the executor's trace, and the tracked
 * allocator's peak bytes per category.
 *
 * The data are synthetic: each sequence of the global batch is a window of T + 1 token ids
 * drawn uniformly from [0, vocab) by the counter-based RNG, inputs its first T and targets
 * its last T, as a language model reads text. A few such batches are made before the clock
 * starts and the steps cycle through them, so the timed loop does nothing but train.
 *
 * FLOPs per token = 6·P + 12·L·H·T (tsr_gpt_flops_per_token: P parameters, L layers, H = dim,
 * T = seq). MFU = FLOPs per token · tokens/s / (devices · peak), devices being the distinct
 * (host, GPU index) pairs on cuda and the ranks on cpu; the peak of a CPU rank is measured at
 * start (tsr_gpt_peak_flops, an fp32 GEMM on the rank's threads), and the achieved GFLOP/s per
 * rank is also given as a fraction of that measured GEMM rate.
 *
 * --breakdown: the profiler (tessera/prof.h) records the timed steps, and rank 0's exclusive
 * times are printed as milliseconds per step by kernel family, communication (axis and op),
 * host wait, host code of pipeline actions and the optimizer, and "other" (the step's own
 * time outside every region), with their sum against the step time rank 0 measured. On cuda
 * kernels and NCCL operations count their CUDA-event times; host-timed parts that overlap the
 * device's work (waits, host code) are listed but not summed, and "other" is the step time
 * the device-timed parts leave (the device's idle time).
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "app.h"
#include "bench.h"

/* Peak dense bf16 TFLOP/s of an H100 SXM, the default MFU reference on cuda. */
#define H100_SXM_BF16_TFLOPS 989.4
/* Distinct synthetic batches the steps cycle through. */
#define DATA_BATCHES 4
/* Seed of the synthetic token ids (the model's weights use the gpt options' own seed). */
#define DATA_SEED 7

typedef struct opts {
    int json, have_layout, have_precision, warmup, steps, breakdown;
    tsr_device_kind_t device;
    tsr_layout_t layout;
    tsr_gpt_config_t model;
    tsr_gpt_options_t gpt;
    tsr_zero_config_t zero;
    double peak_tflops; /* per device; 0: unknown; < 0: measured (cpu) */
} opts_t;

static void usage(void)
{
    printf("usage: mpiexec -n N tsr-bench train [--json] [OPTIONS]\n"
           "Training throughput of the GPT model with synthetic tokens: tokens/s (global), ms per step,\n"
           "model TFLOP/s, MFU, the last step's loss, the pipeline bubble measured from the executor's\n"
           "trace, the peak bytes per memory category (the largest over the ranks, over warmup and\n"
           "timed steps) and the device allocations a timed step makes (the most of any rank; on cuda\n"
           "each is a cudaMalloc, and its cudaFree waits for the whole GPU).\n"
           "  --device cpu|cuda        device (default cpu; on cuda each rank takes GPU local rank mod count)\n"
           "  --model SPEC             tiny, gpt2-124m or layers=L,dim=H,heads=A,vocab=V,seq=T (default tiny)\n"
           "  --layout LAYOUT          process grid dp=D,pp=P,tp=RxC (default dp=N)\n"
           "  --batch B                global batch in sequences per step (default 8)\n"
           "  --micro-batches M        micro-batches per step on each dp rank (default 1)\n"
           "  --precision fp32|bf16    working precision (default fp32 on cpu, bf16 on cuda)\n"
           "  --zero-stage S           ZeRO stage 0..3 (default 0)\n"
           "  --schedule KIND          gpipe, 1f1b, interleaved:V or zb-h1 (default 1f1b)\n"
           "  --poll-us N              pipeline waits test every N microseconds and sleep between (default 0:\n"
           "                           wait inside MPI); helps nodes running more ranks than cores\n"
           "  --recompute none|attention|block  activation recomputation in the backward (default none)\n"
           "  --steps S                timed steps (default 10)\n"
           "  --warmup W               untimed steps before them (default 2)\n"
           "  --peak-tflops X          peak TFLOP/s of one device for MFU (default: on cpu the fp32 GEMM\n"
           "                           rate each rank measures at start, on cuda %.1f, the H100 SXM dense\n"
           "                           bf16 figure; 0: unknown, MFU not reported)\n"
           "  --breakdown              rank 0's milliseconds per step by kernel family, communication (axis,\n"
           "                           op), host wait, host code and other (untracked), with their sum against\n"
           "                           the step time (in the JSON too: \"breakdown\")\n"
           "  --json                   one JSON object on one line\n"
           "  --help                   this text\n"
           "FLOPs per token = 6*P + 12*L*H*T (P parameters, L layers, H dim, T seq; attention is not\n"
           "halved for the causal mask). MFU = FLOPs per token * tokens/s / (devices * peak), devices\n"
           "being the distinct (host, GPU) pairs on cuda and the ranks on cpu. On cpu the achieved GFLOP/s\n"
           "per rank is also given as a fraction of the measured GEMM rate (sgemm). CPU threads per rank:\n"
           "OMP_NUM_THREADS, else the rank's share of its CPUs (ENVIRONMENT in tsr-bench(1)).\n"
           "bubble = 1 - compute seconds\n"
           "of all ranks / (ranks * the timed steps' pipeline spans).\n",
           H100_SXM_BF16_TFLOPS);
}

static int parse_int(const char *opt, const char *text, long lo, long hi, int *out)
{
    return bench_int("train", opt, text, lo, hi, out);
}

/* 0: run; 1: bad input (message printed); -1: --help printed. */
static int parse(int argc, char **argv, int world, opts_t *o)
{
    enum { O_DEVICE = 256, O_MODEL, O_LAYOUT, O_BATCH, O_MICRO, O_PRECISION, O_ZERO, O_STEPS, O_WARMUP, O_PEAK,
           O_RECOMPUTE, O_SCHEDULE, O_POLL, O_BREAKDOWN, O_JSON, O_HELP };
    static const struct option longopts[] = {
        {"device", required_argument, 0, O_DEVICE}, {"model", required_argument, 0, O_MODEL},
        {"layout", required_argument, 0, O_LAYOUT}, {"batch", required_argument, 0, O_BATCH},
        {"micro-batches", required_argument, 0, O_MICRO}, {"precision", required_argument, 0, O_PRECISION},
        {"zero-stage", required_argument, 0, O_ZERO}, {"steps", required_argument, 0, O_STEPS},
        {"warmup", required_argument, 0, O_WARMUP}, {"peak-tflops", required_argument, 0, O_PEAK},
        {"recompute", required_argument, 0, O_RECOMPUTE}, {"schedule", required_argument, 0, O_SCHEDULE},
        {"poll-us", required_argument, 0, O_POLL}, {"breakdown", no_argument, 0, O_BREAKDOWN},
        {"json", no_argument, 0, O_JSON}, {"help", no_argument, 0, O_HELP}, {0, 0, 0, 0}};
    const tsr_layout_t lay = TSR_LAYOUT_INIT;
    const tsr_gpt_config_t model = TSR_GPT_CONFIG_INIT;
    const tsr_gpt_options_t gpt = TSR_GPT_OPTIONS_INIT;
    const tsr_zero_config_t zero = train_zero_defaults(); /* a step here is a step of tsr-train */
    int have_peak = 0;
    *o = (opts_t){0, 0, 0, 2, 10, 0, TSR_DEVICE_CPU, lay, model, gpt, zero, 0.0};
    opterr = 0;
    optind = 1;
    for (int c; (c = getopt_long(argc, argv, ":", longopts, NULL)) != -1;) {
        switch (c) {
        case O_DEVICE:
            if (tsr_device_kind_parse(optarg, &o->device) != TSR_OK)
                return bench_fail("train", "--device %s: expected cpu or cuda", optarg);
            break;
        case O_MODEL:
            if (tsr_gpt_config_parse(optarg, &o->model) != TSR_OK)
                return bench_fail("train", "--model %s: %s", optarg, tsr_last_error());
            break;
        case O_LAYOUT:
            if (tsr_layout_parse(optarg, &o->layout) != TSR_OK)
                return bench_fail("train", "--layout %s: %s", optarg, tsr_last_error());
            o->have_layout = 1;
            break;
        case O_BATCH:
            if (parse_int("--batch", optarg, 1, INT_MAX, &o->gpt.batch))
                return 1;
            break;
        case O_MICRO:
            if (parse_int("--micro-batches", optarg, 1, INT_MAX, &o->gpt.micro_batches))
                return 1;
            break;
        case O_PRECISION:
            if (strcmp(optarg, "fp32") && strcmp(optarg, "bf16"))
                return bench_fail("train", "--precision %s: expected fp32 or bf16", optarg);
            o->zero.precision = strcmp(optarg, "fp32") ? TSR_PRECISION_BF16 : TSR_PRECISION_FP32;
            o->have_precision = 1;
            break;
        case O_ZERO:
            if (parse_int("--zero-stage", optarg, 0, 3, &o->zero.stage))
                return 1;
            break;
        case O_STEPS:
            if (parse_int("--steps", optarg, 1, INT_MAX, &o->steps))
                return 1;
            break;
        case O_WARMUP:
            if (parse_int("--warmup", optarg, 0, INT_MAX, &o->warmup))
                return 1;
            break;
        case O_PEAK:
            if (tsr_parse_f64(optarg, &o->peak_tflops) != TSR_OK || !(o->peak_tflops >= 0))
                return bench_fail("train", "--peak-tflops %s: expected a finite number >= 0 (0: unknown)", optarg);
            have_peak = 1;
            break;
        case O_RECOMPUTE:
            if (tsr_gpt_recompute_parse(optarg, &o->gpt.recompute) != TSR_OK)
                return bench_fail("train", "--recompute %s: expected none, attention or block", optarg);
            break;
        case O_SCHEDULE:
            if (tsr_pipe_spec_parse(optarg, &o->gpt.schedule, &o->gpt.chunks) != TSR_OK)
                return bench_fail("train", "--schedule %s: %s", optarg, tsr_last_error());
            break;
        case O_POLL:
            if (parse_int("--poll-us", optarg, 0, 1000000, &o->gpt.poll_us))
                return 1;
            break;
        case O_BREAKDOWN: o->breakdown = 1; break;
        case O_JSON: o->json = 1; break;
        case O_HELP:
            if (bench_rank() == 0)
                usage();
            return -1;
        case ':': return bench_fail("train", "%s needs a value", argv[optind - 1]);
        default: return bench_fail("train", "unknown option %s (see tsr-bench train --help)", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return bench_fail("train", "unexpected argument %s", argv[optind]);
    if (bench_layout("train", o->have_layout, world, &o->layout))
        return 1;
    if (o->gpt.batch % ((int64_t)o->layout.dp * o->gpt.micro_batches))
        return bench_fail("train", "--batch %d is not divisible by dp=%d x %d micro-batches", o->gpt.batch,
                          o->layout.dp, o->gpt.micro_batches);
    if ((int64_t)o->gpt.batch * o->model.seq > INT_MAX / 4)
        return bench_fail("train", "--batch %d: %d sequences of %d tokens exceed %d tokens per step", o->gpt.batch,
                          o->gpt.batch, o->model.seq, INT_MAX / 4);
    if (o->device == TSR_DEVICE_CUDA && !tsr_device_kind_built(TSR_DEVICE_CUDA))
        return bench_fail("train", "--device cuda: this build has no CUDA backend");
    if (!o->have_precision)
        o->zero.precision = o->device == TSR_DEVICE_CUDA ? TSR_PRECISION_BF16 : TSR_PRECISION_FP32;
    if (!have_peak)
        o->peak_tflops = o->device == TSR_DEVICE_CUDA ? H100_SXM_BF16_TFLOPS : -1.0;
    return 0;
}

/* Agree on failure (bench_failed()), as tsr-bench train. */
static int train_failed(tsr_status_t st, const char *what, const char *own)
{
    return bench_failed("train", st, what, own);
}

/* One rank's device, by host name and index. */
typedef struct device_id {
    char host[MPI_MAX_PROCESSOR_NAME];
    int index;
} device_id_t;

static int device_id_cmp(const void *a, const void *b)
{
    const device_id_t *x = a, *y = b;
    int c = strcmp(x->host, y->host);
    return c ? c : (x->index > y->index) - (x->index < y->index);
}

/* The number of distinct (host, GPU index) pairs the ranks use: the GPUs behind the MFU. */
static int distinct_devices(int index)
{
    int size = 0, len = 0, n = 1;
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    device_id_t me, *all = calloc((size_t)size, sizeof *all);
    memset(&me, 0, sizeof me);
    MPI_Get_processor_name(me.host, &len);
    me.index = index;
    if (!all) /* every rank asks for the same few bytes; a failure here is the machine's */
        abort();
    MPI_Allgather(&me, (int)sizeof me, MPI_BYTE, all, (int)sizeof me, MPI_BYTE, MPI_COMM_WORLD);
    qsort(all, (size_t)size, sizeof *all, device_id_cmp);
    for (int i = 1; i < size; i++)
        n += device_id_cmp(&all[i - 1], &all[i]) != 0;
    free(all);
    return n;
}

/*
 * Synthetic batch b for this replica's sequences [first, first + count): sequence s is the
 * window (seed, stream(s, b), index 0..T) of token ids; inputs its first T, targets its last T.
 */
static void make_batch(int b, int first, int count, int seq, int vocab, int32_t *in, int32_t *tg)
{
    for (int i = 0; i < count; i++) {
        uint64_t stream = tsr_rng_stream((uint32_t)(first + i), (uint32_t)b);
        for (int j = 0; j <= seq; j++) {
            /* multiply-shift maps 32 random bits onto [0, vocab) without a modulo's skew */
            int32_t tok = (int32_t)(((uint64_t)tsr_rng_u32(DATA_SEED, stream, (uint64_t)j) * (uint64_t)vocab) >> 32);
            if (j < seq)
                in[(size_t)i * seq + j] = tok;
            if (j > 0)
                tg[(size_t)i * seq + j - 1] = tok;
        }
    }
}

/* What one run measured, reduced over the ranks. */
typedef struct result {
    double seconds, loss;
    double bubble; /* idle fraction of the pipeline's compute, from the executor's trace */
    int devices;
    double sgemm_flops; /* the ranks' measured fp32 GEMM rate, summed (cpu; 0 on cuda) */
    tsr_mem_stats_t mem; /* peaks: the largest over the ranks */
    double allocs_per_step; /* tsr_device_alloc calls in a timed step, the most of any rank */
    double own_seconds;     /* this rank's timed steps by its own clock (--breakdown) */
    tsr_prof_total_t *prof; /* this rank's profile of the timed steps (--breakdown) */
    size_t nprof;
} result_t;

/* How a profile total enters the breakdown. */
typedef enum { PART_SUMMED, PART_LISTED, PART_OTHER } part_kind_t;

/* Seconds of total t in the breakdown and whether they are summed: exclusive host seconds on
 * the CPU; on a device, CUDA-event seconds where measured and host-timed communication (staged
 * MPI holds the device too), with the rest listed only. The step's own time is "other". */
static part_kind_t part_of(const tsr_prof_total_t *t, int device_clock, double *seconds)
{
    *seconds = t->on_device ? t->device : t->self;
    if (t->cat == TSR_PROF_STEP)
        return PART_OTHER;
    if (!device_clock || t->on_device || t->cat == TSR_PROF_COMM)
        return PART_SUMMED;
    return PART_LISTED;
}

/* Group headings of the text breakdown, in the profiler's category order. */
static const char *const part_heading[TSR_PROF_CAT_COUNT] = {
    [TSR_PROF_KERNEL] = "kernels",  [TSR_PROF_COMM] = "communication",
    [TSR_PROF_WAIT] = "host waits", [TSR_PROF_PIPE] = "host code in pipeline actions",
    [TSR_PROF_OPTIM] = "host code in the optimizer step", [TSR_PROF_CKPT] = "checkpoint I/O",
    [TSR_PROF_HOST] = "host",
};

/* A part's name: "gemm+bias", "dp allreduce", "pp wait". */
static void part_name(const tsr_prof_total_t *t, char *buf, size_t len)
{
    if (t->label)
        snprintf(buf, len, "%s %s", t->label, t->name);
    else
        snprintf(buf, len, "%s", t->name);
}

/* The breakdown's figures: per step, summed parts, other, and whether device clocks apply. */
static void breakdown_sums(const opts_t *o, const result_t *r, int *device_clock, double *sum, double *other,
                           double *step)
{
    *device_clock = 0;
    for (size_t i = 0; i < r->nprof; i++)
        *device_clock |= r->prof[i].on_device;
    double summed = 0, own = 0, s;
    for (size_t i = 0; i < r->nprof; i++) {
        part_kind_t k = part_of(&r->prof[i], *device_clock, &s);
        if (k == PART_SUMMED)
            summed += s;
        else if (k == PART_OTHER)
            own += s;
    }
    *step = r->own_seconds / o->steps;
    summed /= o->steps;
    own /= o->steps;
    /* on a device the step's host self time overlaps the device's work: the idle rest instead */
    *other = *device_clock ? (*step > summed ? *step - summed : 0.0) : own;
    *sum = summed + *other;
}

static void report_breakdown_json(const opts_t *o, const result_t *r)
{
    int device_clock;
    double sum, other, step, s;
    breakdown_sums(o, r, &device_clock, &sum, &other, &step);
    printf(",\"breakdown\":{\"rank\":0,\"clock\":\"%s\",\"step_ms\":%.4f,\"sum_ms\":%.4f,\"other_ms\":%.4f,"
           "\"parts\":[",
           device_clock ? "cuda events" : "host", 1e3 * step, 1e3 * sum, 1e3 * other);
    int first = 1;
    for (size_t i = 0; i < r->nprof; i++) {
        const tsr_prof_total_t *t = &r->prof[i];
        part_kind_t k = part_of(t, device_clock, &s);
        if (k == PART_OTHER)
            continue;
        printf("%s{\"cat\":\"%s\",\"name\":\"%s\",\"axis\":", first ? "" : ",", tsr_prof_cat_name(t->cat), t->name);
        printf(t->label ? "\"%s\"" : "null", t->label);
        printf(",\"ms\":%.4f,\"calls\":%.2f,\"summed\":%s}", 1e3 * s / o->steps, (double)t->count / o->steps,
               k == PART_SUMMED ? "true" : "false");
        first = 0;
    }
    printf("]}");
}

static void report_breakdown_text(const opts_t *o, const result_t *r)
{
    int device_clock;
    double sum, other, step, s;
    char name[128];
    breakdown_sums(o, r, &device_clock, &sum, &other, &step);
    printf("\nwhere a step's time goes on rank 0 (ms per step, exclusive of nested regions; %s):\n",
           device_clock ? "device parts by CUDA events, [listed] parts overlap them and are not summed"
                        : "host clock");
    int heading = -1;
    for (size_t i = 0; i < r->nprof; i++) {
        const tsr_prof_total_t *t = &r->prof[i];
        part_kind_t k = part_of(t, device_clock, &s);
        if (k == PART_OTHER)
            continue;
        if ((int)t->cat != heading) {
            heading = (int)t->cat;
            printf("  %s\n", part_heading[t->cat] ? part_heading[t->cat] : tsr_prof_cat_name(t->cat));
        }
        part_name(t, name, sizeof name);
        printf("    %-28s %10.3f %6.1f%% %9.1f calls%s\n", name, 1e3 * s / o->steps,
               step > 0 ? 100 * s / o->steps / step : 0.0, (double)t->count / o->steps,
               k == PART_LISTED ? "  [listed]" : "");
    }
    printf("  %-30s %10.3f %6.1f%%\n", device_clock ? "other (device idle)" : "other (untracked)", 1e3 * other,
           step > 0 ? 100 * other / step : 0.0);
    printf("  sum %.3f ms, measured step %.3f ms (%.1f%%)\n", 1e3 * sum, 1e3 * step,
           step > 0 ? 100 * sum / step : 0.0);
}

static void report(const opts_t *o, const result_t *r)
{
    char lay[TSR_LAYOUT_STRLEN], model[TSR_GPT_CONFIG_STRLEN];
    int64_t params = tsr_gpt_param_count(&o->model);
    const tsr_gpt_config_t *m = &o->model;
    double flops_per_token = tsr_gpt_flops_per_token(m);
    double tokens_per_s = (double)o->gpt.batch * m->seq * o->steps / r->seconds;
    double tflops = flops_per_token * tokens_per_s / 1e12, ms = 1e3 * r->seconds / o->steps;
    double peak = o->peak_tflops < 0 ? r->sgemm_flops / 1e12 / r->devices : o->peak_tflops;
    double sgemm = r->sgemm_flops > 0 ? tflops * 1e12 / r->sgemm_flops : NAN;
    double mfu = o->peak_tflops < 0 ? sgemm : peak > 0 ? tflops / (r->devices * peak) : NAN;
    const char *threads_how = NULL;
    int threads = o->device == TSR_DEVICE_CPU ? tsr_device_cpu_threads(&threads_how) : 0;
    const char *prec = o->zero.precision == TSR_PRECISION_BF16 ? "bf16" : "fp32";
    const char *recompute = tsr_gpt_recompute_name(o->gpt.recompute);
    char mfu_text[32], loss_text[32], sgemm_text[32], schedule[32];
    tsr_layout_format(&o->layout, lay, sizeof lay);
    /* the spelling --schedule takes */
    snprintf(schedule, sizeof schedule, o->gpt.schedule == TSR_PIPE_INTERLEAVED ? "%s:%d" : "%s",
             tsr_pipe_kind_name(o->gpt.schedule), o->gpt.chunks);
    tsr_gpt_config_format(m, model, sizeof model);
    if (o->json) {
        /* JSON has no NaN: an unknown MFU or a broken loss is null */
        snprintf(mfu_text, sizeof mfu_text, isfinite(mfu) ? "%.6f" : "null", mfu);
        snprintf(loss_text, sizeof loss_text, isfinite(r->loss) ? "%.6f" : "null", r->loss);
        snprintf(sgemm_text, sizeof sgemm_text, isfinite(sgemm) ? "%.6f" : "null", sgemm);
        printf("{\"bench\":\"train\",\"device\":\"%s\",\"devices\":%d,\"layout\":\"%s\",\"model\":\"%s\","
               "\"params\":%lld,\"schedule\":\"%s\",\"precision\":\"%s\",\"recompute\":\"%s\",\"zero_stage\":%d,\"batch\":%d,\"micro_batches\":%d,"
               "\"seq\":%d,\"warmup\":%d,\"steps\":%d,\"seconds\":%.6f,\"ms_per_step\":%.3f,\"tokens_per_s\":%.1f,"
               "\"flops_per_token\":%.0f,\"tflops\":%.6f,\"peak_tflops\":%g,\"mfu\":%s,\"threads\":%d,"
               "\"gflops_per_rank\":%.3f,\"sgemm_gflops_per_rank\":%.3f,\"sgemm_fraction\":%s,\"loss\":%s,"
               "\"bubble\":%.4f,\"allocs_per_step\":%g,\"peak_bytes\":{",
               tsr_device_kind_name(o->device), r->devices, lay, model, (long long)params, schedule, prec, recompute, o->zero.stage,
               o->gpt.batch, o->gpt.micro_batches, m->seq, o->warmup, o->steps, r->seconds, ms, tokens_per_s,
               flops_per_token, tflops, peak, mfu_text, threads, tflops * 1e3 / r->devices,
               r->sgemm_flops / 1e9 / r->devices, sgemm_text, loss_text, r->bubble,
               r->allocs_per_step);
        for (int c = 0; c < TSR_MEM_CATEGORY_COUNT; c++)
            printf("\"%s\":%llu,", tsr_mem_category_name((tsr_mem_category_t)c), (unsigned long long)r->mem.peak[c]);
        printf("\"total\":%llu}", (unsigned long long)r->mem.total_peak);
        if (o->breakdown)
            report_breakdown_json(o, r);
        printf("}\n");
    } else {
        const char *unit = o->device == TSR_DEVICE_CUDA ? "GPU" : "rank";
        snprintf(mfu_text, sizeof mfu_text, isfinite(mfu) ? "%.2f%%" : "-", 100 * mfu);
        printf("model %s (%lld parameters), layout %s, %s %s on %d %s%s, recompute %s, ZeRO %d\n", model,
               (long long)params, lay, tsr_device_kind_name(o->device), prec, r->devices, unit,
               r->devices == 1 ? "" : "s", recompute, o->zero.stage);
        printf("batch %d x %d tokens in %d micro-batch%s, schedule %s, %d warmup + %d timed steps\n", o->gpt.batch,
               m->seq, o->gpt.micro_batches, o->gpt.micro_batches == 1 ? "" : "es", schedule, o->warmup, o->steps);
        if (threads)
            printf("%d CPU thread%s per rank (%s); fp32 GEMM measured at %.1f GFLOP/s per rank; achieved %.1f "
                   "GFLOP/s per rank, %.1f%% of it\n",
                   threads, threads == 1 ? "" : "s", threads_how, r->sgemm_flops / 1e9 / r->devices,
                   tflops * 1e3 / r->devices, 100 * sgemm);
        printf("\n");
        printf("%14s %10s %10s %8s %10s %8s\n%14.1f %10.3f %10.4f %8s %10.4f %7.1f%%\n\n", "tokens/s", "ms/step",
               "TFLOP/s", "MFU", "loss", "bubble", tokens_per_s, ms, tflops, mfu_text, r->loss, 100 * r->bubble);
        printf("peak MiB per rank (largest over ranks):");
        for (int c = 0; c < TSR_MEM_CATEGORY_COUNT; c++)
            printf(" %s %.2f", tsr_mem_category_name((tsr_mem_category_t)c), r->mem.peak[c] / 1048576.0);
        printf(", total %.2f\n", r->mem.total_peak / 1048576.0);
        printf("device allocations per timed step (most of any rank): %g\n", r->allocs_per_step);
        if (o->breakdown)
            report_breakdown_text(o, r);
    }
    fflush(stdout);
}

/* This rank's compute in the trace of one step: seconds in F, B and W actions, and the span
 * from its first action's start to its last action's end. */
static void step_compute(tsr_pipe_trace_t trace, double *busy, double *first, double *last)
{
    size_t n = 0;
    const tsr_pipe_event_t *ev = tsr_pipe_trace_events(trace, &n);
    *busy = 0, *first = INFINITY, *last = -INFINITY;
    for (size_t i = 0; i < n; i++) {
        if (ev[i].op == TSR_PIPE_FORWARD || ev[i].op == TSR_PIPE_BACKWARD || ev[i].op == TSR_PIPE_WEIGHT)
            *busy += ev[i].end - ev[i].start;
        *first = ev[i].start < *first ? ev[i].start : *first;
        *last = ev[i].end > *last ? ev[i].end : *last;
    }
    tsr_pipe_trace_clear(trace);
}

/* The measured bubble of the timed steps: 1 - (compute of every rank) / (ranks x the sum of the
 * steps' pipeline spans), a step's span running from the first action anywhere to the last. */
static double measured_bubble(const double *busy, double *first, double *last, int steps)
{
    int world = 1;
    double compute = 0, span = 0;
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    MPI_Allreduce(MPI_IN_PLACE, first, steps, MPI_DOUBLE, MPI_MIN, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, last, steps, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    for (int s = 0; s < steps; s++)
        compute += busy[s], span += last[s] - first[s];
    MPI_Allreduce(MPI_IN_PLACE, &compute, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    return span > 0 ? 1.0 - compute / (world * span) : 0.0;
}

/* Warm up, then time o->steps steps; fills r on every rank. */
static tsr_status_t run_steps(const opts_t *o, tsr_device_t dev, tsr_gpt_t gpt, const int32_t *in,
                              const int32_t *tg, size_t batch_len, result_t *r)
{
    tsr_gpt_step_info_t info = {0};
    tsr_status_t st = TSR_OK;
    tsr_pipe_trace_t trace = NULL;
    int good = 0;
    double *busy = calloc((size_t)o->steps * 3, sizeof *busy), *first = busy + o->steps, *last = first + o->steps;
    if (train_failed(busy ? tsr_pipe_trace_create(&trace) : TSR_ERR_OUT_OF_MEMORY, NULL, "no memory for the trace"))
        goto done;
    /* the first steps allocate what a step keeps; the peak must see them */
    tsr_mem_reset_peaks(o->device);
    for (int s = 0; s < o->warmup && st == TSR_OK; s++)
        st = tsr_gpt_train_step(gpt, in + (s % DATA_BATCHES) * batch_len, tg + (s % DATA_BATCHES) * batch_len, &info);
    if (st == TSR_OK)
        st = tsr_device_sync(dev);
    if (train_failed(st, "warmup", NULL))
        goto done;
    tsr_gpt_set_trace(gpt, trace);
    MPI_Barrier(MPI_COMM_WORLD);
    if (o->breakdown) {
        tsr_prof_reset();
        tsr_prof_set_level(TSR_PROF_TOTALS);
    }
    tsr_mem_stats_t before;
    tsr_mem_stats(o->device, &before);
    double t0 = tsr_time_now();
    for (int s = 0; s < o->steps && st == TSR_OK; s++) {
        int b = (o->warmup + s) % DATA_BATCHES;
        st = tsr_gpt_train_step(gpt, in + b * batch_len, tg + b * batch_len, &info);
        step_compute(trace, &busy[s], &first[s], &last[s]);
    }
    if (st == TSR_OK)
        st = tsr_device_sync(dev);
    r->own_seconds = tsr_time_now() - t0;
    tsr_prof_set_level(TSR_PROF_OFF);
    if (st == TSR_OK && o->breakdown)
        st = tsr_prof_totals(&r->prof, &r->nprof);
    if (train_failed(st, "step", NULL))
        goto done;
    MPI_Barrier(MPI_COMM_WORLD);
    r->seconds = tsr_time_now() - t0;
    r->loss = info.loss;
    r->bubble = measured_bubble(busy, first, last, o->steps);
    MPI_Allreduce(MPI_IN_PLACE, &r->seconds, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    tsr_mem_stats(o->device, &r->mem);
    r->allocs_per_step = (double)(r->mem.allocations - before.allocations) / o->steps;
    MPI_Allreduce(MPI_IN_PLACE, &r->allocs_per_step, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, r->mem.peak, TSR_MEM_CATEGORY_COUNT, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, &r->mem.total_peak, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD);
    good = 1;
done:
    tsr_gpt_set_trace(gpt, NULL);
    tsr_pipe_trace_destroy(&trace);
    free(busy);
    return good ? TSR_OK : st != TSR_OK ? st : TSR_ERR_INTERNAL;
}

int bench_train(int argc, char **argv)
{
    opts_t o;
    int world = 0, status = 1, first = 0, count = 0, index = 0;
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    int rc = parse(argc, argv, world, &o);
    if (rc)
        return rc < 0 ? 0 : rc;
    if (o.device == TSR_DEVICE_CUDA) {
        /* the smallest count on any node decides, so that every rank stops together */
        int gpus = tsr_device_count(TSR_DEVICE_CUDA);
        MPI_Allreduce(MPI_IN_PLACE, &gpus, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
        if (gpus < 1)
            return bench_fail("train", "--device cuda: no GPU visible");
        index = bench_local_rank() % gpus;
    }
    tsr_device_t dev = NULL;
    tsr_grid_t grid = NULL;
    tsr_gpt_t gpt = NULL;
    int32_t *in = NULL, *tg = NULL;
    result_t r = {0};
    if (train_failed(tsr_device_create(o.device, index, &dev), "device", NULL))
        goto done;
    if (train_failed(tsr_grid_create(MPI_COMM_WORLD, &o.layout, &grid), "layout", NULL))
        goto done;
    if (o.device == TSR_DEVICE_CPU) {
        MPI_Barrier(MPI_COMM_WORLD); /* the ranks of a node measure their shares together */
        if (train_failed(tsr_gpt_peak_flops(dev, o.zero.precision, &r.sgemm_flops), "peak", NULL))
            goto done;
        MPI_Allreduce(MPI_IN_PLACE, &r.sgemm_flops, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    }
    if (train_failed(tsr_gpt_create(grid, dev, &o.model, &o.gpt, &o.zero, &gpt), "model", NULL))
        goto done;
    r.devices = o.device == TSR_DEVICE_CUDA ? distinct_devices(index) : world;
    tsr_gpt_batch_slice(gpt, &first, &count);
    size_t batch_len = (size_t)count * o.model.seq;
    in = malloc(DATA_BATCHES * batch_len * sizeof *in);
    tg = malloc(DATA_BATCHES * batch_len * sizeof *tg);
    if (train_failed(in && tg ? TSR_OK : TSR_ERR_OUT_OF_MEMORY, NULL, "no memory for the synthetic batches"))
        goto done;
    for (int b = 0; b < DATA_BATCHES; b++)
        make_batch(b, first, count, o.model.seq, o.model.vocab, in + b * batch_len, tg + b * batch_len);
    if (run_steps(&o, dev, gpt, in, tg, batch_len, &r) != TSR_OK)
        goto done;
    if (bench_rank() == 0)
        report(&o, &r);
    status = 0;
done:
    free(r.prof);
    free(in);
    free(tg);
    tsr_gpt_destroy(&gpt);
    tsr_grid_destroy(&grid);
    tsr_device_destroy(&dev);
    return status;
}
