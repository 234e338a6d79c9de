/*
 * tsr-train: train a GPT on a dp × pp × tp grid of MPI ranks (see doc/tsr-train.1).
 *
 *   mpiexec -n N tsr-train --layout dp=D,pp=P,tp=RxC --zero S --schedule 1f1b --model tiny
 *       --data synthetic --batch B --micro-batches M --steps K [--ckpt-dir DIR --ckpt-every K]
 *
 * Every rank parses the same options; rank 0 alone prints. An error is one line on stderr
 * (from the lowest rank that saw it) and a non-zero exit on every rank.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <float.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <tessera.h>

#include "app.h"

const char app_name[] = "tsr-train";

/* Bytes of synthetic text behind --data synthetic. */
#define SYNTHETIC_BYTES (1 << 20)

static const char usage[] =
    "Usage: mpiexec -n N tsr-train [OPTIONS]\n"
    "Train a GPT-2 model on a dp x pp x tp grid of ranks.\n"
    "  --layout dp=D,pp=P,tp=RxC   process grid (default dp=N); tp=1xC is 1D (Megatron), else 2D (SUMMA);\n"
    "                              ps=S adds S parameter-server ranks (dp defaults to what is left),\n"
    "                              which hold the state and write the checkpoints (not with --trace)\n"
    "  --staleness K|inf           with ps=S: a worker runs at most K rounds ahead of the servers'\n"
    "                              updates (default 0: synchronous); inf: fully asynchronous\n"
    "  --zero 0..3                 ZeRO stage (default 0)\n"
    "  --schedule KIND             gpipe, 1f1b, interleaved:V or zb-h1 (default 1f1b)\n"
    "  --model SPEC                tiny, gpt2-124m or layers=L,dim=H,heads=A,vocab=V,seq=T (default tiny)\n"
    "  --data SHARDS|synthetic     llm.c token shards (uint16 or uint32): a file, a glob pattern or a\n"
    "                              comma-separated list; or synthetic byte-level text (default)\n"
    "  --shuffle                   shuffle the sequences of each epoch (a function of --seed and the epoch)\n"
    "  --batch B                   global batch in sequences (default 8); may change on resume\n"
    "  --micro-batches M           micro-batches per step on each dp rank (default 1)\n"
    "  --steps S                   train until step S (default 10); resuming at or past it trains nothing\n"
    "  --lr X                      peak learning rate, finite and positive (default 1e-3)\n"
    "  --lr-schedule KIND          constant, cosine or linear: after the warmup, hold --lr or decay it\n"
    "                              to --min-lr at --steps (default constant)\n"
    "  --warmup-steps N            linear warmup from lr/N to lr over the first N steps (default 0)\n"
    "  --min-lr X                  final learning rate of cosine and linear, 0 to --lr (default 0)\n"
    "  --optimizer adamw|sgd       AdamW, or SGD with momentum (default adamw)\n"
    "  --weight-decay X            decoupled weight decay, not of biases and gains (default 0.1)\n"
    "  --beta1 X, --beta2 X        AdamW's moment decay rates, in [0, 1) (default 0.9 and 0.95)\n"
    "  --eps X                     AdamW's epsilon, positive (default 1e-8)\n"
    "  --momentum X                SGD's momentum, in [0, 1) (default 0.9)\n"
    "  --grad-clip X               clip gradients to global norm X; 0: no clipping (default 1)\n"
    "  --seed N                    seed of the initial weights (default 1234)\n"
    "  --peak-tflops X             peak TFLOP/s of one rank for MFU, instead of measuring it (cpu) or\n"
    "                              the H100 figure (cuda)\n"
    "  --device cpu|cuda           device (default cpu); cuda: rank r uses GPU (local rank mod GPUs)\n"
    "  --precision fp32|bf16       precision (default fp32); bf16 (cuda only): bf16 compute, fp32 master\n"
    "  --recompute none|attention|block  replay each block's attention sublayer, or the whole block,\n"
    "                              in its backward instead of keeping its activations (default none)\n"
    "  --ckpt-dir DIR              write checkpoints into DIR (every --ckpt-every steps and at the end);\n"
    "                              checked and locked before step 1: one job per directory\n"
    "  --ckpt-every K              checkpoint interval in steps (default 0: only at the end)\n"
    "  --ckpt-keep N               keep the newest N step files, removing older ones once the new\n"
    "                              latest is committed (default 0: keep all)\n"
    "  --time-limit MINUTES        stop (checkpoint, exit 0) before MINUTES of wall time have passed\n"
    "  --max-bad-steps N           steps whose loss or gradient norm is not finite that the run\n"
    "                              survives, without an update (default 0: the first ends it)\n"
    "  --resume [latest|FILE]      continue from DIR/latest (needs --ckpt-dir) or from FILE, on any\n"
    "                              layout, ZeRO stage or ps=S, whatever wrote it\n"
    "  --val-data SHARDS           validation shards (a file, a glob or a comma-separated list): the mean\n"
    "                              loss over their first --val-batches x --batch sequences, never shuffled\n"
    "  --val-every K               validation loss every K steps (default 0: at the last step only)\n"
    "  --val-batches N             global batches of validation sequences, at least 1 (default 1)\n"
    "  --log-json FILE             one JSON object per step (step, time, tokens_seen, loss, grad_norm,\n"
    "                              val_loss, lr, ms, tokens_per_s, mfu, peak bytes per memory category,\n"
    "                              peak_max_bytes and peak_rank: the largest peak over the ranks)\n"
    "  --trace FILE                Chrome trace JSON of the last step on every rank (any layout): data,\n"
    "                              pipeline actions, communication by axis, waits, optimizer, checkpoint\n"
    "  --trace-kernels             the trace also holds every kernel (a larger file)\n"
    "  --help, --version\n"
    "The optimizer's hyperparameters are stored in each checkpoint: a resume that changes one warns\n"
    "(the run goes on with the new value); one that changes --optimizer is an error.\n"
    "SIGTERM or SIGUSR1 (e.g. Slurm's --signal) makes every rank finish its step, write a checkpoint\n"
    "(with --ckpt-dir) and exit 0; a second signal ends the run at once.\n"
    "More than --max-bad-steps steps whose loss or gradient norm is not finite end the run with an\n"
    "error (exit 1).\n"
    "Rank 0 prints one line per step; MFU = (6*P + 12*L*H*T) * tokens/s / the ranks' summed peak:\n"
    "on the cpu each rank's fp32 GEMM rate measured at start, on a GPU 989.4 TFLOP/s (bf16) or\n"
    "66.9 TFLOP/s (fp32). The CPU threads per rank: OMP_NUM_THREADS, else the rank's share of its\n"
    "CPUs (see ENVIRONMENT in tsr-train(1)).\n";

/* Everything the options say. */
typedef struct options {
    tsr_layout_t layout;
    int have_layout;
    tsr_zero_config_t zero;
    tsr_gpt_options_t gpt;
    tsr_gpt_config_t model;
    char model_text[TSR_GPT_CONFIG_STRLEN];
    char schedule_text[32];
    tsr_device_kind_t device;
    const char *data, *ckpt_dir, *resume, *log_json, *trace, *val_data;
    long steps, ckpt_every, ckpt_keep, max_bad_steps, val_every, val_batches;
    int have_val_every, have_val_batches;
    int shuffle, trace_kernels;
    double time_limit_s; /* 0: none */
    float peak_tflops;   /* 0: measure (cpu) or the datasheet's (cuda) */
    int64_t staleness;
    int have_staleness;
    int layout_has_dp;
} options_t;

/* The signal that asked the run to stop (SIGTERM, SIGUSR1), or 0. */
static volatile sig_atomic_t stop_signal;

static int world_rank, world_size;
/* The ranks' summed peak FLOP/s, the MFU's denominator (tsr_gpt_peak_flops). */
static double peak_flops;

static int parse_long(const char *opt, const char *text, long lo, long hi, long *out)
{
    int64_t v;
    if (tsr_parse_i64(text, lo, hi, &v) != TSR_OK)
        return usage_error("%s %s: %s", opt, text, tsr_last_error());
    *out = (long)v;
    return 0;
}

/* An option naming a file or directory: not empty. */
static int parse_path(const char *opt, const char *text, const char **out)
{
    if (!*text)
        return usage_error("%s is empty (expected a path)", opt);
    *out = text;
    return 0;
}

/* A real number in [lo, hi] (hi excluded when hi_open), finite; *what says so in the error. */
static int parse_real(const char *opt, const char *text, double lo, double hi, int hi_open, const char *what,
                      float *out)
{
    double x;
    if (tsr_parse_f64(text, &x) != TSR_OK || !isfinite(x) || x < lo || x > hi || (hi_open && x == hi))
        return usage_error("%s %s: expected %s", opt, text, what);
    *out = (float)x;
    return 0;
}

static int parse_schedule(const char *text, options_t *o)
{
    if (tsr_pipe_spec_parse(text, &o->gpt.schedule, &o->gpt.chunks) != TSR_OK)
        return usage_error("--schedule %s: %s", text, tsr_last_error());
    snprintf(o->schedule_text, sizeof o->schedule_text, "%s", text);
    return 0;
}

/* A layout with ps=S: the workers' dp, when not given, is what the servers leave; what is
 * not built with servers is refused here. */
static int check_ps(options_t *o)
{
    char buf[TSR_LAYOUT_STRLEN];
    int group = o->layout.pp * o->layout.tp_rows * o->layout.tp_cols, workers = world_size - o->layout.ps;
    if (workers < 1)
        return usage_error("--layout ps=%d: %d servers leave no worker rank of the %d ranks mpiexec started",
                           o->layout.ps, o->layout.ps, world_size);
    if (!o->layout_has_dp) {
        if (workers % group)
            return usage_error("--layout %s: the %d worker ranks (%d minus ps=%d) do not divide into groups of "
                               "pp x tp = %d ranks", tsr_layout_format(&o->layout, buf, sizeof buf), workers,
                               world_size, o->layout.ps, group);
        o->layout.dp = workers / group;
    }
    if (o->trace)
        return usage_error("--trace is not built with parameter servers (ps=S) yet");
    return 0;
}

/* Parse argv into *o; returns 0, 2 on a usage error, or -1 after --help/--version. */
static int parse_options(int argc, char **argv, options_t *o)
{
    enum { O_LAYOUT = 256, O_ZERO, O_SCHEDULE, O_MODEL, O_DATA, O_BATCH, O_MICRO, O_STEPS, O_LR, O_SEED,
           O_DEVICE, O_PRECISION, O_RECOMPUTE, O_COMPUTE, O_CKPT_DIR, O_CKPT_EVERY, O_RESUME, O_LOG_JSON, O_TRACE, O_HELP, O_VERSION,
           O_STALENESS, O_LR_SCHEDULE, O_WARMUP, O_MIN_LR, O_OPTIMIZER, O_WD, O_BETA1, O_BETA2, O_EPS, O_MOMENTUM, O_PEAK,
           O_CLIP, O_CKPT_KEEP, O_TIME_LIMIT, O_MAX_BAD, O_SHUFFLE, O_TRACE_KERNELS, O_VAL_DATA, O_VAL_EVERY,
           O_VAL_BATCHES };
    static const struct option longopts[] = {
        {"layout", required_argument, 0, O_LAYOUT}, {"zero", required_argument, 0, O_ZERO},
        {"schedule", required_argument, 0, O_SCHEDULE}, {"model", required_argument, 0, O_MODEL},
        {"data", required_argument, 0, O_DATA}, {"batch", required_argument, 0, O_BATCH},
        {"micro-batches", required_argument, 0, O_MICRO}, {"steps", required_argument, 0, O_STEPS},
        {"lr", required_argument, 0, O_LR}, {"seed", required_argument, 0, O_SEED},
        {"device", required_argument, 0, O_DEVICE}, {"precision", required_argument, 0, O_PRECISION},
        {"recompute", required_argument, 0, O_RECOMPUTE}, {"compute", required_argument, 0, O_COMPUTE},
        {"ckpt-dir", required_argument, 0, O_CKPT_DIR}, {"ckpt-every", required_argument, 0, O_CKPT_EVERY},
        {"resume", optional_argument, 0, O_RESUME}, {"log-json", required_argument, 0, O_LOG_JSON},
        {"trace", required_argument, 0, O_TRACE}, {"trace-kernels", no_argument, 0, O_TRACE_KERNELS},
        {"help", no_argument, 0, O_HELP},
        {"version", no_argument, 0, O_VERSION}, {"staleness", required_argument, 0, O_STALENESS},
        {"lr-schedule", required_argument, 0, O_LR_SCHEDULE},
        {"warmup-steps", required_argument, 0, O_WARMUP}, {"min-lr", required_argument, 0, O_MIN_LR},
        {"optimizer", required_argument, 0, O_OPTIMIZER}, {"weight-decay", required_argument, 0, O_WD},
        {"beta1", required_argument, 0, O_BETA1}, {"beta2", required_argument, 0, O_BETA2},
        {"eps", required_argument, 0, O_EPS}, {"momentum", required_argument, 0, O_MOMENTUM},
        {"peak-tflops", required_argument, 0, O_PEAK},
        {"grad-clip", required_argument, 0, O_CLIP}, {"ckpt-keep", required_argument, 0, O_CKPT_KEEP},
        {"time-limit", required_argument, 0, O_TIME_LIMIT}, {"max-bad-steps", required_argument, 0, O_MAX_BAD},
        {"shuffle", no_argument, 0, O_SHUFFLE}, {"val-data", required_argument, 0, O_VAL_DATA},
        {"val-every", required_argument, 0, O_VAL_EVERY}, {"val-batches", required_argument, 0, O_VAL_BATCHES},
        {0, 0, 0, 0}};
    long v;
    double x;
    opterr = 0;
    for (int c; (c = getopt_long(argc, argv, ":", longopts, NULL)) != -1;) {
        switch (c) {
        case O_LAYOUT:
            if (tsr_layout_parse(optarg, &o->layout) != TSR_OK)
                return usage_error("--layout %s: %s", optarg, tsr_last_error());
            o->have_layout = 1;
            o->layout_has_dp = strstr(optarg, "dp=") != NULL;
            break;
        case O_STALENESS:
            if (tsr_ps_staleness_parse(optarg, &o->staleness) != TSR_OK)
                return usage_error("--staleness %s: expected a non-negative integer or inf", optarg);
            o->have_staleness = 1;
            break;
        case O_ZERO:
            if (parse_long("--zero", optarg, 0, 3, &v))
                return 2;
            o->zero.stage = (int)v;
            break;
        case O_SCHEDULE:
            if (parse_schedule(optarg, o))
                return 2;
            break;
        case O_MODEL:
            if (tsr_gpt_config_parse(optarg, &o->model) != TSR_OK)
                return usage_error("--model %s: %s", optarg, tsr_last_error());
            snprintf(o->model_text, sizeof o->model_text, "%s", optarg);
            break;
        case O_DATA:
            if (parse_path("--data", optarg, &o->data))
                return 2;
            break;
        case O_BATCH:
            if (parse_long("--batch", optarg, 1, INT_MAX, &v))
                return 2;
            o->gpt.batch = (int)v;
            break;
        case O_MICRO:
            if (parse_long("--micro-batches", optarg, 1, INT_MAX, &v))
                return 2;
            o->gpt.micro_batches = (int)v;
            break;
        case O_STEPS:
            if (parse_long("--steps", optarg, 0, LONG_MAX, &o->steps))
                return 2;
            break;
        case O_LR:
            if (tsr_parse_f64(optarg, &x) != TSR_OK || !(x > 0) || x > FLT_MAX || (float)x == 0)
                return usage_error("--lr %s: expected a finite positive number", optarg);
            o->zero.lr = (float)x;
            break;
        case O_LR_SCHEDULE:
            if (tsr_lr_schedule_parse(optarg, &o->zero.schedule) != TSR_OK)
                return usage_error("--lr-schedule %s: expected constant, cosine or linear", optarg);
            break;
        case O_WARMUP:
            if (parse_long("--warmup-steps", optarg, 0, LONG_MAX, &o->zero.warmup_steps))
                return 2;
            break;
        case O_MIN_LR:
            if (parse_real("--min-lr", optarg, 0, FLT_MAX, 0, "a finite number >= 0", &o->zero.min_lr))
                return 2;
            break;
        case O_OPTIMIZER:
            if (tsr_optim_kind_parse(optarg, &o->zero.optim) != TSR_OK)
                return usage_error("--optimizer %s: expected adamw or sgd", optarg);
            break;
        case O_WD:
            if (parse_real("--weight-decay", optarg, 0, FLT_MAX, 0, "a finite number >= 0", &o->zero.weight_decay))
                return 2;
            break;
        case O_BETA1:
        case O_BETA2:
            if (parse_real(c == O_BETA1 ? "--beta1" : "--beta2", optarg, 0, 1, 1, "a number in [0, 1)",
                           c == O_BETA1 ? &o->zero.beta1 : &o->zero.beta2))
                return 2;
            break;
        case O_EPS:
            if (parse_real("--eps", optarg, 0, FLT_MAX, 0, "a finite positive number", &o->zero.eps))
                return 2;
            if (o->zero.eps == 0)
                return usage_error("--eps %s: expected a finite positive number", optarg);
            break;
        case O_MOMENTUM:
            if (parse_real("--momentum", optarg, 0, 1, 1, "a number in [0, 1)", &o->zero.momentum))
                return 2;
            break;
        case O_PEAK:
            if (parse_real("--peak-tflops", optarg, 0, FLT_MAX, 0, "a finite positive number", &o->peak_tflops))
                return 2;
            if (o->peak_tflops == 0)
                return usage_error("--peak-tflops %s: expected a finite positive number", optarg);
            break;
        case O_CLIP:
            if (parse_real("--grad-clip", optarg, 0, FLT_MAX, 0, "a finite number >= 0 (0: no clipping)",
                           &o->zero.clip_norm))
                return 2;
            break;
        case O_SHUFFLE:
            o->shuffle = 1;
            break;
        case O_VAL_DATA:
            if (parse_path("--val-data", optarg, &o->val_data))
                return 2;
            break;
        case O_VAL_EVERY:
            if (parse_long("--val-every", optarg, 0, LONG_MAX, &o->val_every))
                return 2;
            o->have_val_every = 1;
            break;
        case O_VAL_BATCHES:
            if (parse_long("--val-batches", optarg, 1, INT_MAX, &o->val_batches))
                return 2;
            o->have_val_batches = 1;
            break;
        case O_CKPT_KEEP:
            if (parse_long("--ckpt-keep", optarg, 0, INT_MAX, &o->ckpt_keep))
                return 2;
            break;
        case O_TIME_LIMIT: {
            float minutes;
            if (parse_real("--time-limit", optarg, 0, 1e9, 0, "a positive number of minutes", &minutes))
                return 2;
            if (minutes == 0)
                return usage_error("--time-limit %s: expected a positive number of minutes", optarg);
            o->time_limit_s = 60.0 * minutes;
            break;
        }
        case O_MAX_BAD:
            if (parse_long("--max-bad-steps", optarg, 0, LONG_MAX, &o->max_bad_steps))
                return 2;
            break;
        case O_SEED:
            if (tsr_parse_u64(optarg, &o->gpt.seed) != TSR_OK)
                return usage_error("--seed %s: %s", optarg, tsr_last_error());
            break;
        case O_DEVICE: {
            tsr_device_kind_t kind;
            if (tsr_device_kind_parse(optarg, &kind) != TSR_OK)
                return usage_error("--device %s: expected cpu or cuda", optarg);
            if (!tsr_device_kind_built(kind))
                return usage_error("--device %s: this build of Tessera has no %s backend (reconfigure with "
                                   "--with-%s)", optarg, optarg, optarg);
            o->device = kind;
            break;
        }
        case O_PRECISION:
            if (strcmp(optarg, "fp32") == 0)
                o->zero.precision = TSR_PRECISION_FP32;
            else if (strcmp(optarg, "bf16") == 0)
                o->zero.precision = TSR_PRECISION_BF16;
            else
                return usage_error("--precision %s: expected fp32 or bf16", optarg);
            break;
        case O_RECOMPUTE:
            if (tsr_gpt_recompute_parse(optarg, &o->gpt.recompute) != TSR_OK)
                return usage_error("--recompute %s: expected none, attention or block", optarg);
            break;
        case O_COMPUTE:
            return usage_error("--compute is gone: the model has one engine, the tp operations on the device "
                               "kernels, for every layout and device");
        case O_CKPT_DIR:
            if (parse_path("--ckpt-dir", optarg, &o->ckpt_dir))
                return 2;
            break;
        case O_CKPT_EVERY:
            if (parse_long("--ckpt-every", optarg, 0, LONG_MAX, &o->ckpt_every))
                return 2;
            break;
        case O_RESUME:
            /* "--resume FILE" as well as "--resume=FILE"; a bare --resume means latest */
            if (!optarg && optind < argc && argv[optind][0] != '-')
                optarg = argv[optind++];
            if (optarg && parse_path("--resume", optarg, &o->resume))
                return 2;
            o->resume = optarg ? optarg : "latest";
            break;
        case O_LOG_JSON:
            if (parse_path("--log-json", optarg, &o->log_json))
                return 2;
            break;
        case O_TRACE:
            if (parse_path("--trace", optarg, &o->trace))
                return 2;
            break;
        case O_TRACE_KERNELS: o->trace_kernels = 1; break;
        case O_HELP:
            if (world_rank == 0)
                fputs(usage, stdout);
            return -1;
        case O_VERSION:
            if (world_rank == 0)
                printf("tsr-train (%s)\n", tsr_build_info());
            return -1;
        case ':': return usage_error("%s needs a value", argv[optind - 1]);
        default: return usage_error("unknown option %s", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return usage_error("unexpected argument %s", argv[optind]);
    if (!o->have_layout)
        o->layout.dp = world_size;
    if (o->have_staleness && o->layout.ps == 0)
        return usage_error("--staleness needs parameter servers: add ps=S to --layout");
    if (o->layout.ps > 0 && check_ps(o))
        return 2;
    if (tsr_layout_ranks(&o->layout) != world_size) {
        char buf[TSR_LAYOUT_STRLEN];
        return usage_error("--layout %s needs %d ranks, but mpiexec started %d",
                           tsr_layout_format(&o->layout, buf, sizeof buf), tsr_layout_ranks(&o->layout),
                           world_size);
    }
    if (o->model.heads % o->layout.tp_cols)
        return usage_error("--model %s: %d heads are not divisible by the %d tp columns", o->model_text,
                           o->model.heads, o->layout.tp_cols);
    if (o->zero.precision == TSR_PRECISION_BF16 && o->device == TSR_DEVICE_CPU)
        return usage_error("--precision bf16 needs --device cuda (the CPU trains in fp32)");
    if (o->device != TSR_DEVICE_CPU && o->layout.tp_rows * o->layout.tp_cols != 1)
        return usage_error("--device %s trains with dp and pp only: the layout's tp grid must be 1x1, got tp=%dx%d",
                           tsr_device_kind_name(o->device), o->layout.tp_rows, o->layout.tp_cols);
    /* Sizes the model and the checkpoint compute from the options stay far inside int and int64. */
    if ((int64_t)o->gpt.batch * o->model.seq > INT_MAX / 4)
        return usage_error("--batch %d: %d sequences of %d tokens exceed %d tokens per step", o->gpt.batch,
                           o->gpt.batch, o->model.seq, INT_MAX / 4);
    if (o->steps > INT64_MAX / ((int64_t)o->gpt.batch * o->model.seq))
        return usage_error("--steps %ld: that many steps of %d x %d tokens overflow the count of tokens seen", o->steps,
                           o->gpt.batch, o->model.seq);
    if (o->zero.schedule != TSR_LR_CONSTANT && o->zero.min_lr > o->zero.lr)
        return usage_error("--min-lr %g is above --lr %g (expected 0 to --lr)", (double)o->zero.min_lr,
                           (double)o->zero.lr);
    if (o->zero.schedule != TSR_LR_CONSTANT && o->zero.warmup_steps > o->steps)
        return usage_error("--warmup-steps %ld is past --steps %ld, where the %s decay ends", o->zero.warmup_steps,
                           o->steps, tsr_lr_schedule_name(o->zero.schedule));
    o->zero.total_steps = o->steps;
    if (o->ckpt_every > 0 && !o->ckpt_dir)
        return usage_error("--ckpt-every needs --ckpt-dir");
    if (o->trace_kernels && !o->trace)
        return usage_error("--trace-kernels needs --trace FILE (it adds the kernels to that trace)");
    if (o->ckpt_keep > 0 && !o->ckpt_dir)
        return usage_error("--ckpt-keep needs --ckpt-dir");
    if ((o->have_val_every || o->have_val_batches) && !o->val_data)
        return usage_error("%s needs --val-data", o->have_val_every ? "--val-every" : "--val-batches");
    if (o->val_data && (int64_t)o->val_batches * o->gpt.batch * o->model.seq > INT_MAX / 4)
        return usage_error("--val-batches %ld: %ld batches of %d x %d tokens exceed %d validation tokens",
                           o->val_batches, o->val_batches, o->gpt.batch, o->model.seq, INT_MAX / 4);
    if (o->resume && strcmp(o->resume, "latest") == 0 && !o->ckpt_dir)
        return usage_error("--resume latest needs --ckpt-dir");
    return 0;
}

/* ---------- data ---------- */

/* Write the synthetic corpus as a byte-level shard in a temporary file and open it on every
 * rank. Returns non-zero after failed() has reported the error (once). */
static int open_synthetic(int vocab, tsr_dataset_t *ds)
{
    char *path = NULL;
    int len = 0, status = 1;
    tsr_status_t rc = TSR_OK;
    if (world_rank == 0) {
        const char *dir = getenv("TMPDIR") && *getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
        char *text = malloc(SYNTHETIC_BYTES);
        uint16_t *tok = malloc(SYNTHETIC_BYTES * sizeof *tok);
        len = snprintf(NULL, 0, "%s/tsr-train-synthetic-%ld.bin", dir, (long)getpid()) + 1;
        path = malloc((size_t)len);
        if (!text || !tok || !path) {
            rc = set_app_error(TSR_ERR_OUT_OF_MEMORY, "no memory for the synthetic text");
        } else {
            snprintf(path, (size_t)len, "%s/tsr-train-synthetic-%ld.bin", dir, (long)getpid());
            tsr_data_synthetic_text(1, SYNTHETIC_BYTES, text);
            for (size_t i = 0; i < SYNTHETIC_BYTES; i++)
                tok[i] = (unsigned char)text[i];
            rc = tsr_dataset_write(path, tok, SYNTHETIC_BYTES);
        }
        free(text);
        free(tok);
    }
    if (failed(rc, "--data synthetic"))
        goto done;
    MPI_Bcast(&len, 1, MPI_INT, 0, MPI_COMM_WORLD);
    if (world_rank != 0 && !(path = malloc((size_t)len)))
        rc = set_app_error(TSR_ERR_OUT_OF_MEMORY, "no memory for a path");
    if (failed(rc, "--data synthetic"))
        goto done;
    MPI_Bcast(path, len, MPI_CHAR, 0, MPI_COMM_WORLD);
    rc = tsr_dataset_open(path, vocab, ds);
    MPI_Barrier(MPI_COMM_WORLD); /* the mapping outlives the name */
    if (world_rank == 0)
        unlink(path);
    status = failed(rc, "--data synthetic");
done:
    free(path);
    return status;
}

/* ---------- validation ---------- */

/* The fixed validation sequences: the first batches x --batch of --val-data, this replica's
 * share of each batch read once before step 1. */
typedef struct val_set {
    int batches, count; /* global batches; this replica's sequences of each */
    int32_t *in, *tg;   /* [batches][count * seq] */
    double *seq_loss;   /* one global batch's summed losses per sequence */
    MPI_Comm across;    /* with parameter servers (has_across): this rank's place in every replica */
    int has_across;
} val_set_t;

static void val_free(val_set_t *v)
{
    free(v->in);
    free(v->tg);
    free(v->seq_loss);
    if (v->has_across)
        MPI_Comm_free(&v->across);
    memset(v, 0, sizeof *v);
}

/* Open --val-data and read this replica's sequences of its first --val-batches global batches,
 * in order (no shuffling, whatever --shuffle says). */
static tsr_status_t val_load(const options_t *o, tsr_gpt_t gpt, val_set_t *v)
{
    tsr_dataset_t vds = NULL;
    int first = 0, T = o->model.seq, B = o->gpt.batch;
    tsr_gpt_batch_slice(gpt, &first, &v->count);
    v->batches = (int)o->val_batches;
    if (o->layout.ps > 0) { /* the workers: world ranks [0, dp x group) in replica order */
        MPI_Comm_split(agree_comm, world_rank % (o->layout.pp * o->layout.tp_rows * o->layout.tp_cols), world_rank,
                       &v->across);
        v->has_across = 1;
    }
    tsr_status_t rc = tsr_dataset_open(o->val_data, o->model.vocab, &vds);
    if (rc != TSR_OK)
        return rc;
    int64_t have = tsr_dataset_sequences(vds, T), want = (int64_t)v->batches * B;
    size_t n = (size_t)v->batches * (size_t)v->count * (size_t)T;
    if (have < want)
        rc = set_app_error(TSR_ERR_INVALID_ARG, "%s holds %lld sequences of %d tokens, fewer than --val-batches %d x "
                           "--batch %d = %lld", o->val_data, (long long)have, T, v->batches, B, (long long)want);
    else if (!(v->in = malloc(sizeof *v->in * n)) || !(v->tg = malloc(sizeof *v->tg * n)) ||
             !(v->seq_loss = malloc(sizeof *v->seq_loss * (size_t)B)))
        rc = set_app_error(TSR_ERR_OUT_OF_MEMORY, "no memory for %zu validation tokens", n);
    for (int b = 0; rc == TSR_OK && b < v->batches; b++) {
        size_t off = (size_t)b * (size_t)v->count * (size_t)T;
        rc = tsr_dataset_batch(vds, (int64_t)b * B, B, T, first, v->count, v->in + off, v->tg + off);
    }
    tsr_dataset_close(&vds);
    return rc;
}

/* The mean loss over the validation sequences: each sequence's summed loss (the same on every
 * rank), added in double in sequence order, so the sum's order does not depend on the layout.
 * With parameter servers a replica's model holds the losses of its own sequences only, computed
 * with the parameters it pulled last (those of every replica alike at staleness 0): the
 * replicas' losses are added (one non-zero addend per sequence, exact) over v->across. */
static tsr_status_t val_loss(const options_t *o, tsr_gpt_t gpt, val_set_t *v, double *loss)
{
    double sum = 0.0;
    int B = o->gpt.batch, T = o->model.seq;
    for (int b = 0; b < v->batches; b++) {
        size_t off = (size_t)b * (size_t)v->count * (size_t)T;
        tsr_status_t rc = tsr_gpt_eval_sequences(gpt, v->in + off, v->tg + off, v->seq_loss);
        if (rc != TSR_OK)
            return rc;
        if (v->has_across)
            MPI_Allreduce(MPI_IN_PLACE, v->seq_loss, B, MPI_DOUBLE, MPI_SUM, v->across);
        for (int i = 0; i < B; i++)
            sum += v->seq_loss[i];
    }
    *loss = sum / ((double)v->batches * B * T);
    return TSR_OK;
}

/* ---------- checkpoints ---------- */

/* What the run trains on, as /data attributes (information: a resume on other data warns). */
static tsr_status_t save_data_record(tsr_ckpt_writer_t w, const options_t *o, tsr_dataset_t ds)
{
    tsr_status_t rc = tsr_ckpt_set_str(w, "/data", "spec", o->data ? o->data : "synthetic");
    if (rc == TSR_OK)
        rc = tsr_ckpt_set_i64(w, "/data", "shards", tsr_dataset_shard_count(ds));
    if (rc == TSR_OK)
        rc = tsr_ckpt_set_i64(w, "/data", "tokens", tsr_dataset_tokens(ds));
    if (rc == TSR_OK)
        rc = tsr_ckpt_set_i64(w, "/data", "shuffle", o->shuffle);
    return rc;
}

/* Rank 0: a warning line for each way the data differs from the checkpoint's record. */
static void warn_changed_data(tsr_ckpt_reader_t r, const options_t *o, tsr_dataset_t ds)
{
    char spec[4096] = "";
    int64_t shards = 0, tokens = 0, shuffle = 0;
    int known = tsr_ckpt_get_str(r, "/data", "spec", spec, sizeof spec) == TSR_OK &&
                tsr_ckpt_get_i64(r, "/data", "shards", &shards) == TSR_OK &&
                tsr_ckpt_get_i64(r, "/data", "tokens", &tokens) == TSR_OK &&
                tsr_ckpt_get_i64(r, "/data", "shuffle", &shuffle) == TSR_OK;
    tsr_clear_error();
    if (world_rank != 0 || !known)
        return;
    const char *now = o->data ? o->data : "synthetic";
    if (strcmp(spec, now) != 0 || shards != tsr_dataset_shard_count(ds) || tokens != tsr_dataset_tokens(ds))
        fprintf(stderr, "tsr-train: warning: --data %s (%d shards, %lld tokens) is not the checkpoint's %s (%lld "
                "shards, %lld tokens); the loader goes on at its token position\n", now, tsr_dataset_shard_count(ds),
                (long long)tsr_dataset_tokens(ds), spec, (long long)shards, (long long)tokens);
    if (shuffle != o->shuffle)
        fprintf(stderr, "tsr-train: warning: the checkpoint's run %s its data, this one %s\n",
                shuffle ? "shuffled" : "did not shuffle", o->shuffle ? "shuffles" : "does not");
}

/* The checkpoint of step `step`, after `seen` tokens of the data (the loader's position), of
 * the optimizer `opt` on `grid`: the model's, or with parameter servers the servers'. */
static tsr_status_t save(const options_t *o, tsr_grid_t grid, tsr_zero_t opt, tsr_dataset_t ds, long step,
                         int64_t seen)
{
    tsr_ckpt_writer_t w = NULL;
    char layout[TSR_LAYOUT_STRLEN];
    tsr_comm_t world = tsr_grid_comm(grid, TSR_AXIS_WORLD);
    tsr_status_t rc = tsr_ckpt_writer_create(world, o->ckpt_dir, step, &w);
    if (rc == TSR_OK)
        rc = tsr_gpt_ckpt_save(w, grid, opt, &o->zero, &o->model, &o->gpt, seen);
    if (rc == TSR_OK)
        rc = save_data_record(w, o, ds);
    if (rc == TSR_OK)
        rc = tsr_ckpt_set_str(w, "/layout", "grid", tsr_layout_format(&o->layout, layout, sizeof layout));
    if (rc == TSR_OK)
        rc = tsr_ckpt_set_str(w, "/layout", "schedule", o->schedule_text);
    if (rc != TSR_OK) {
        tsr_ckpt_abort(&w);
        return rc;
    }
    return tsr_ckpt_commit(&w, (int)o->ckpt_keep);
}

/* The checkpoint --resume names, malloc'ed (DIR/latest's file, or FILE). */
static tsr_status_t resume_path(const options_t *o, char **path)
{
    size_t len = strlen(o->resume) + (o->ckpt_dir ? strlen(o->ckpt_dir) : 0) + NAME_MAX + 2;
    tsr_status_t rc = TSR_OK;
    if (!(*path = malloc(len)))
        return set_app_error(TSR_ERR_OUT_OF_MEMORY, "no memory for a path");
    if (strcmp(o->resume, "latest") == 0)
        rc = tsr_ckpt_latest(o->ckpt_dir, *path, len);
    else
        snprintf(*path, len, "%s", o->resume);
    return rc;
}

/* Rank 0: one warning line per hyperparameter this run sets differently from the checkpoint's. */
static void warn_changed_optimizer(tsr_ckpt_reader_t r, const char *path, const tsr_zero_config_t *now)
{
    tsr_zero_config_t was;
    if (tsr_ckpt_get_zero_config(r, &was) != TSR_OK) {
        if (world_rank == 0)
            fprintf(stderr, "tsr-train: warning: %s records no optimizer hyperparameters (%s); they are not "
                    "compared\n", path, tsr_last_error());
        tsr_clear_error();
        return;
    }
    if (world_rank != 0)
        return;
    const struct { const char *opt; float was, now; int used; } f[] = {
        {"--lr", was.lr, now->lr, 1},
        {"--min-lr", was.min_lr, now->min_lr, now->schedule != TSR_LR_CONSTANT},
        {"--weight-decay", was.weight_decay, now->weight_decay, 1},
        {"--beta1", was.beta1, now->beta1, now->optim == TSR_OPTIM_ADAMW},
        {"--beta2", was.beta2, now->beta2, now->optim == TSR_OPTIM_ADAMW},
        {"--eps", was.eps, now->eps, now->optim == TSR_OPTIM_ADAMW},
        {"--momentum", was.momentum, now->momentum, now->optim == TSR_OPTIM_SGD},
        {"--grad-clip", was.clip_norm, now->clip_norm, 1}};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        if (f[i].used && f[i].was != f[i].now)
            fprintf(stderr, "tsr-train: warning: %s %g differs from the checkpoint's %g (the run goes on with %g)\n",
                    f[i].opt, (double)f[i].now, (double)f[i].was, (double)f[i].now);
    if (was.schedule != now->schedule)
        fprintf(stderr, "tsr-train: warning: --lr-schedule %s differs from the checkpoint's %s (the run goes on "
                "with %s)\n", tsr_lr_schedule_name(now->schedule), tsr_lr_schedule_name(was.schedule),
                tsr_lr_schedule_name(now->schedule));
    if (was.warmup_steps != now->warmup_steps)
        fprintf(stderr, "tsr-train: warning: --warmup-steps %ld differs from the checkpoint's %ld (the run goes on "
                "with %ld)\n", now->warmup_steps, was.warmup_steps, now->warmup_steps);
    if (now->schedule != TSR_LR_CONSTANT && was.schedule == now->schedule && was.total_steps != now->total_steps)
        fprintf(stderr, "tsr-train: warning: the %s decay now ends at --steps %ld, the checkpoint's at step %ld\n",
                tsr_lr_schedule_name(now->schedule), now->total_steps, was.total_steps);
}

/*
 * Restore the optimizer from the checkpoint at path; *step gets its step and *seen the loader's
 * position in tokens. Every value read is covered by a checksum, and they must agree: the
 * position /data/tokens is the root's tokens_seen, whole sequences of this model, and the
 * optimizer has taken no more steps than the checkpoint's. The global batch may differ.
 * With parameter servers the workers check the file and the servers load it (ps_load()),
 * once every worker has found it good.
 */
static tsr_status_t resume(const options_t *o, tsr_grid_t grid, tsr_gpt_t gpt, tsr_dataset_t ds, const char *path,
                           long *step, int64_t *seen)
{
    tsr_ckpt_reader_t r = NULL;
    int64_t pos = 0, at = 0, tokens_seen = 0;
    tsr_zero_state_t state;
    tsr_status_t rc = tsr_ckpt_reader_open(tsr_grid_comm(grid, TSR_AXIS_WORLD), path, &r);
    if (rc == TSR_OK)
        rc = tsr_ckpt_verify_metadata(r);
    if (rc == TSR_OK)
        rc = tsr_gpt_config_expect(r, &o->model);
    if (rc == TSR_OK && o->layout.ps == 0)
        rc = tsr_ckpt_load_zero(r, grid, tsr_gpt_optimizer(gpt), &o->zero);
    if (rc == TSR_OK)
        warn_changed_optimizer(r, path, &o->zero);
    if (rc == TSR_OK)
        warn_changed_data(r, o, ds);
    if (rc == TSR_OK)
        rc = tsr_ckpt_read_i64(r, "/data/tokens", 1, &pos);
    if (rc == TSR_OK)
        rc = tsr_ckpt_get_i64(r, "/", "tokens_seen", &tokens_seen);
    if (rc == TSR_OK)
        rc = tsr_ckpt_get_i64(r, "/", "step", &at);
    if (rc == TSR_OK && o->layout.ps > 0) {
        int64_t restored = -1;
        rc = tsr_ps_restore(tsr_gpt_optimizer(gpt), &restored);
        if (rc == TSR_OK && restored != at)
            rc = set_app_error(TSR_ERR_INTERNAL, "%s: the servers resumed at step %lld, the file says %lld", path,
                               (long long)restored, (long long)at);
    }
    tsr_zero_get_state(tsr_gpt_optimizer(gpt), &state);
    if (rc == TSR_OK && (pos != tokens_seen || pos < 0 || pos % o->model.seq != 0))
        rc = set_app_error(TSR_ERR_FORMAT, "%s: the loader's position /data/tokens is %lld, but the checkpoint's "
                           "tokens_seen is %lld (expected equal, whole sequences of %d)", path, (long long)pos,
                           (long long)tokens_seen, o->model.seq);
    if (rc == TSR_OK && (at < 0 || at > LONG_MAX || state.step > at))
        rc = set_app_error(TSR_ERR_FORMAT, "%s: /optim step is %ld, past the checkpoint's step %lld", path,
                           state.step, (long long)at);
    *step = (long)at;
    *seen = pos;
    tsr_ckpt_reader_close(&r);
    return rc;
}

/* What the parameter servers' checkpoint callbacks need (tessera/ps.h). */
typedef struct ps_io {
    const options_t *o;
    tsr_dataset_t ds;
} ps_io_t;

/* The servers' save callback: the checkpoint of their shards, as save() writes a ZeRO run's. */
static tsr_status_t ps_save(void *ctx, tsr_grid_t grid, tsr_zero_t opt, int64_t step, int64_t seen)
{
    const ps_io_t *io = ctx;
    return save(io->o, grid, opt, io->ds, (long)step, seen);
}

/* The servers' load callback: their shards of the checkpoint --resume names (the workers
 * have checked it), and its step. */
static tsr_status_t ps_load(void *ctx, tsr_grid_t grid, tsr_zero_t opt, int64_t *step)
{
    const ps_io_t *io = ctx;
    tsr_ckpt_reader_t r = NULL;
    char *path = NULL;
    tsr_status_t rc = resume_path(io->o, &path);
    if (rc == TSR_OK)
        rc = tsr_ckpt_reader_open(tsr_grid_comm(grid, TSR_AXIS_WORLD), path, &r);
    if (rc == TSR_OK)
        rc = tsr_gpt_config_expect(r, &io->o->model);
    if (rc == TSR_OK)
        rc = tsr_ckpt_load_zero(r, grid, opt, &io->o->zero);
    if (rc == TSR_OK)
        rc = tsr_ckpt_get_i64(r, "/", "step", step);
    tsr_ckpt_reader_close(&r);
    free(path);
    return rc;
}

/* Rank 0: a file the run writes at its end can be written now: create it (and remove it
 * again), or open an existing one for appending, which changes nothing. */
static tsr_status_t probe_output(const char *path)
{
    struct stat st;
    int existed = stat(path, &st) == 0;
    if (existed && !S_ISREG(st.st_mode))
        return set_app_error(TSR_ERR_IO, "%s is %s (expected a file to write)", path,
                             S_ISDIR(st.st_mode) ? "a directory" : "not a regular file");
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0)
        return set_app_error(TSR_ERR_IO, "cannot write %s: %s", path, strerror(errno));
    int wrote = existed || write(fd, "{}", 2) == 2;
    int err = errno;
    close(fd);
    if (!existed)
        unlink(path);
    return wrote ? TSR_OK : set_app_error(TSR_ERR_IO, "cannot write %s: %s", path, strerror(err));
}

/* Before step 1: every output path of the run is usable, and the checkpoint directory is this job's. */
static int check_outputs(const options_t *o, tsr_comm_t world, tsr_ckpt_lock_t *lock)
{
    if (o->ckpt_dir && failed(tsr_ckpt_lock(world, o->ckpt_dir, lock), "--ckpt-dir"))
        return 1;
    return o->trace && failed(world_rank == 0 ? probe_output(o->trace) : TSR_OK, "--trace");
}

/* ---------- the run ---------- */

/* Seconds since the epoch, for the JSON lines' timestamps. */
static double wall_clock(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A JSON number, or null for what JSON cannot hold (a NaN or an infinity). */
static void json_number(FILE *f, const char *key, const char *fmt, double x)
{
    fprintf(f, "\"%s\":", key);
    if (isfinite(x))
        fprintf(f, fmt, x);
    else
        fputs("null", f);
    fputc(',', f);
}

/* The largest peak of tracked memory over the ranks that train (agree_comm), and its rank. */
typedef struct peak {
    double bytes;
    int rank;
} peak_t;

static peak_t peak_over_ranks(const options_t *o)
{
    tsr_mem_stats_t mem;
    tsr_mem_stats(o->device, &mem);
    peak_t mine = {(double)mem.total_peak, world_rank}, max;
    MPI_Allreduce(&mine, &max, 1, MPI_DOUBLE_INT, MPI_MAXLOC, agree_comm);
    return max;
}

static void log_step(const options_t *o, FILE *json, long step, long steps, const tsr_gpt_step_info_t *info,
                     double val, peak_t peak, double ms, double tokens, int64_t seen)
{
    tsr_mem_stats_t mem;
    tsr_mem_stats(o->device, &mem);
    double tps = tokens / (ms / 1e3), mfu = tsr_gpt_flops_per_token(&o->model) * tps / peak_flops;
    char vtext[32] = "";
    if (!isnan(val))
        snprintf(vtext, sizeof vtext, "  val loss %.4f", val);
    printf("step %ld/%ld  loss %.4f%s  grad norm %.3f  lr %.2e  %.1f ms  %.0f tok/s  MFU %.2f%%  peak mem %.1f MiB "
           "(rank %d)\n", step, steps, info->loss, vtext, info->grad_norm, info->lr, ms, tps, 100 * mfu,
           peak.bytes / (1 << 20), peak.rank);
    fflush(stdout);
    if (!json)
        return;
    fprintf(json, "{\"step\":%ld,\"time\":%.3f,\"tokens_seen\":%lld,", step, wall_clock(), (long long)seen);
    json_number(json, "loss", "%.17g", info->loss);
    json_number(json, "grad_norm", "%.17g", info->grad_norm);
    json_number(json, "val_loss", "%.17g", val); /* null when not computed this step */
    json_number(json, "lr", "%.9g", info->lr);
    json_number(json, "ms", "%.3f", ms);
    json_number(json, "tokens_per_s", "%.1f", tps);
    json_number(json, "mfu", "%.6f", mfu);
    fputs("\"peak_bytes\":{", json);
    for (int c = 0; c < TSR_MEM_CATEGORY_COUNT; c++)
        fprintf(json, "\"%s\":%llu,", tsr_mem_category_name((tsr_mem_category_t)c), (unsigned long long)mem.peak[c]);
    fprintf(json, "\"total\":%llu},\"peak_max_bytes\":%.0f,\"peak_rank\":%d}\n", (unsigned long long)mem.total_peak,
            peak.bytes, peak.rank);
    fflush(json);
}

/* Rank 0: the one line of a step whose loss or gradient norm is not finite: the error that
 * ends the run after more than --max-bad-steps of them, or a warning before. */
static void report_not_finite(const options_t *o, long step, const tsr_gpt_step_info_t *info, long bad_steps)
{
    double bad = isfinite(info->loss) ? info->grad_norm : info->loss;
    const char *what = isfinite(info->loss) ? "gradient norm" : "loss";
    const char *value = isnan(bad) ? "NaN" : bad > 0 ? "+Inf" : "-Inf";
    if (world_rank != 0)
        return;
    if (bad_steps > o->max_bad_steps && o->max_bad_steps == 0)
        fprintf(stderr, "tsr-train: step %ld: the %s is %s (expected a finite number; try a lower --lr)\n", step,
                what, value);
    else if (bad_steps > o->max_bad_steps)
        fprintf(stderr, "tsr-train: step %ld: the %s is %s: %ld steps not finite, more than --max-bad-steps %ld "
                "(try a lower --lr)\n", step, what, value, bad_steps, o->max_bad_steps);
    else
        fprintf(stderr, "tsr-train: warning: step %ld: the %s is %s; no update (%ld of --max-bad-steps %ld)\n", step,
                what, value, bad_steps, o->max_bad_steps);
}

/* The first SIGTERM or SIGUSR1 asks the run to stop after its step; the handler is then reset,
 * so a second one ends the process at once. */
static void on_stop_signal(int sig)
{
    stop_signal = sig;
}

static void catch_stop_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sa.sa_flags = SA_RESTART | SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGUSR1, &sa, NULL);
}

/*
 * After each step, whether to stop now: a stop signal seen by any rank, or (rank 0's clock)
 * too little time left under --time-limit for another step and a checkpoint, judged from the
 * slowest step and checkpoint so far, doubled. One small allreduce over the ranks that train
 * (agree_comm: with parameter servers, the workers), the same verdict on each. Returns the
 * signal, -1 for the time limit, or 0.
 */
static int should_stop(const options_t *o, double start, double step_s, double ckpt_s)
{
    int why[2] = {(int)stop_signal, 0};
    if (world_rank == 0 && o->time_limit_s > 0)
        why[1] = MPI_Wtime() - start + 2 * (step_s + ckpt_s) >= o->time_limit_s;
    MPI_Allreduce(MPI_IN_PLACE, why, 2, MPI_INT, MPI_MAX, agree_comm);
    return why[0] ? why[0] : why[1] ? -1 : 0;
}

/* Rank r on a node uses GPU (r mod the node's GPUs); the CPU device otherwise. */
static tsr_status_t open_device(tsr_device_kind_t kind, tsr_device_t *dev)
{
    MPI_Comm node;
    int local = 0, n = tsr_device_count(kind);
    if (kind == TSR_DEVICE_CPU)
        return tsr_device_create(kind, 0, dev);
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, world_rank, MPI_INFO_NULL, &node);
    MPI_Comm_rank(node, &local);
    MPI_Comm_free(&node);
    if (n < 1)
        return set_app_error(TSR_ERR_CUDA, "no %s device is visible to rank %d", tsr_device_kind_name(kind),
                             world_rank);
    return tsr_device_create(kind, local % n, dev);
}

/* failed() after the model joined the parameter servers: a worker rank that fails first tells
 * the servers (tsr_ps_cancel()), so that the workers waiting in a step for its push are
 * released and fail too, with TSR_ERR_ABORTED. Without servers, failed(). */
static int worker_failed(tsr_grid_t grid, tsr_status_t rc, const char *what)
{
    if (rc != TSR_OK)
        tsr_ps_cancel(grid);
    return failed(rc, what);
}

/* With parameter servers, once the workers' optimizers are gone (the servers have
 * returned): the job's exit status, non-zero if any rank failed. A worker that failed has
 * said why; a server's error (serve_rc) is printed only when no worker failed, for then
 * it is the cause and not the echo. */
static int ps_final(int status, int server, tsr_status_t serve_rc)
{
    int mine[2] = {server ? 0 : status, server ? status : 0}, all[2];
    MPI_Allreduce(mine, all, 2, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
    if (server && all[0] == 0)
        failed(serve_rc, "parameter server");
    MPI_Comm_free(&agree_comm);
    agree_comm = MPI_COMM_WORLD;
    return all[0] > all[1] ? all[0] : all[1];
}

/* ---------- the start-up summary ---------- */

/* Rank 0: the libraries the run uses, with versions: Tessera's build, the first line of
 * MPI_Get_library_version and HDF5's H5get_libversion. */
static void print_libraries(void)
{
    char mpi[MPI_MAX_LIBRARY_VERSION_STRING] = "";
    int len = 0;
    MPI_Get_library_version(mpi, &len);
    mpi[strcspn(mpi, "\n")] = '\0';
    for (char *p = mpi; *p; p++)
        if (*p == '\t')
            *p = ' ';
    for (size_t n = strlen(mpi); n > 0 && mpi[n - 1] == ' '; n--)
        mpi[n - 1] = '\0';
    printf("tsr-train: libraries: %s; MPI: %s; %s\n", tsr_build_info(), mpi, tsr_ckpt_hdf5_version());
}

/* Rank 0: the ranks, the layout and the device of each rank (the CPU threads per rank follow). */
static void print_placement(const options_t *o)
{
    char lay[TSR_LAYOUT_STRLEN], dev[64];
    if (o->device == TSR_DEVICE_CPU)
        snprintf(dev, sizeof dev, "cpu");
    else
        snprintf(dev, sizeof dev, "%s (rank r: GPU local rank mod %d)", tsr_device_kind_name(o->device),
                 tsr_device_count(o->device));
    printf("tsr-train: %d rank%s, layout %s, device %s\n", world_size, world_size == 1 ? "" : "s",
           tsr_layout_format(&o->layout, lay, sizeof lay), dev);
}

/* Rank 0: which blocks sit on which pipeline stage (and where the embeddings and the head are). */
static void print_stages(const options_t *o, tsr_gpt_t gpt)
{
    int stage, first, end, last_k = 0;
    while (tsr_gpt_stage_blocks(gpt, last_k + 1, &stage, &first, &end) == 0)
        last_k++;
    fputs("tsr-train: blocks per pipeline stage:", stdout);
    for (int s = 0; s < o->layout.pp; s++) {
        printf("%sstage %d:", s ? "; " : " ", s);
        for (int k = s, sep = 0; tsr_gpt_stage_blocks(gpt, k, &stage, &first, &end) == 0; k += o->layout.pp) {
            if (end > first)
                printf("%s %d-%d", sep++ ? "," : "", first, end - 1);
            else
                printf("%s none", sep++ ? "," : "");
            if (k == 0)
                fputs(" + embeddings", stdout);
            if (k == last_k)
                fputs(" + head", stdout);
        }
    }
    putchar('\n');
}

/* Bytes of a file, or -1. */
static double file_bytes(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (double)st.st_size : -1;
}

/* "1.53 MB in 0.04 s, 0.04 GB/s" (decimal units) for a checkpoint moved in `s` seconds. */
static const char *io_rate(double bytes, double s, char *buf, size_t len)
{
    if (bytes < 0)
        snprintf(buf, len, "%.2f s", s);
    else
        snprintf(buf, len, "%.2f MB in %.2f s, %.3f GB/s", bytes / 1e6, s, s > 0 ? bytes / s / 1e9 : 0.0);
    return buf;
}

static int train(const options_t *o)
{
    tsr_device_t dev = NULL;
    tsr_grid_t grid = NULL;
    tsr_gpt_t gpt = NULL;
    tsr_dataset_t ds = NULL;
    FILE *json = NULL;
    int32_t *in = NULL, *tg = NULL;
    tsr_ckpt_lock_t lock = NULL;
    val_set_t val = {0};
    int status = 1, first = 0, count = 0;
    long step = 0, bad_steps = 0;
    int64_t seen = 0; /* tokens the loader has given: its position */
    double start = MPI_Wtime(), step_s = 0, ckpt_s = 0;
    char *path = NULL;
    tsr_status_t serve_rc = TSR_OK;
    tsr_status_t rc = open_device(o->device, &dev);
    if (failed(rc, "--device"))
        goto done;
    if (failed(tsr_grid_create(MPI_COMM_WORLD, &o->layout, &grid), NULL))
        goto done;
    MPI_Barrier(MPI_COMM_WORLD); /* the ranks of a node measure their shares together */
    if (o->peak_tflops > 0)
        peak_flops = o->peak_tflops * 1e12;
    else if (failed(tsr_gpt_peak_flops(dev, o->zero.precision, &peak_flops), NULL))
        goto done;
    MPI_Allreduce(MPI_IN_PLACE, &peak_flops, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    if (world_rank == 0) {
        print_libraries();
        print_placement(o);
    }
    if (world_rank == 0 && o->device == TSR_DEVICE_CPU) {
        const char *how = NULL;
        int threads = tsr_device_cpu_threads(&how);
        printf("tsr-train: %d CPU thread%s per rank (%s); %s fp32 GEMM peak %.1f GFLOP/s per rank\n", threads,
               threads == 1 ? "" : "s", how, o->peak_tflops > 0 ? "given" : "measured", peak_flops / world_size / 1e9);
    }
    if (o->data && strcmp(o->data, "synthetic") != 0) {
        if (failed(tsr_dataset_open(o->data, o->model.vocab, &ds), "--data"))
            goto done;
    } else if (open_synthetic(o->model.vocab, &ds)) {
        goto done;
    }
    tsr_dataset_set_shuffle(ds, o->shuffle, o->gpt.seed);
    if (o->layout.ps > 0) {
        /* The servers write the checkpoints, but the whole job locks the directory, before
         * the servers start serving. */
        if (check_outputs(o, tsr_grid_ps_comm(grid), &lock))
            goto done;
        /* from here the workers and the servers agree apart, and together in ps_final() */
        MPI_Comm_split(MPI_COMM_WORLD, tsr_grid_is_server(grid), world_rank, &agree_comm);
        if (tsr_grid_is_server(grid)) {
            tsr_ps_config_t ps = TSR_PS_CONFIG_INIT;
            ps_io_t io = {o, ds};
            ps.staleness = o->have_staleness ? o->staleness : 0;
            ps.save = ps_save, ps.load = ps_load, ps.ctx = &io;
            serve_rc = tsr_ps_serve(grid, dev, &o->zero, &ps, NULL);
            status = serve_rc != TSR_OK;
            goto done;
        }
    }
    int64_t params = tsr_gpt_param_count(&o->model);
    if (world_rank == 0) {
        char lay[TSR_LAYOUT_STRLEN], model[TSR_GPT_CONFIG_STRLEN];
        char ps[48] = "";
        if (o->layout.ps > 0 && o->have_staleness && o->staleness == TSR_PS_STALENESS_INF)
            snprintf(ps, sizeof ps, ", staleness inf");
        else if (o->layout.ps > 0)
            snprintf(ps, sizeof ps, ", staleness %lld", (long long)(o->have_staleness ? o->staleness : 0));
        printf("tsr-train: model %s (%lld parameters), layout %s%s, ZeRO %d, schedule %s, batch %d x %d tokens in "
               "%d micro-batches, data %s, %s %s\n"
               "tsr-train: optimizer %s, lr %g (%s schedule, %ld warmup steps), weight decay %g, gradient clip %g\n",
               tsr_gpt_config_format(&o->model, model, sizeof model), (long long)params,
               tsr_layout_format(&o->layout, lay, sizeof lay), ps, o->zero.stage, o->schedule_text, o->gpt.batch,
               o->model.seq, o->gpt.micro_batches, o->data ? o->data : "synthetic", tsr_device_kind_name(o->device),
               o->zero.precision == TSR_PRECISION_BF16 ? "bf16" : "fp32", tsr_optim_kind_name(o->zero.optim),
               (double)o->zero.lr, tsr_lr_schedule_name(o->zero.schedule), o->zero.warmup_steps,
               (double)o->zero.weight_decay, (double)o->zero.clip_norm);
        fflush(stdout); /* a large model takes a while to build */
    }
    double built = MPI_Wtime();
    if (failed(tsr_gpt_create(grid, dev, &o->model, &o->gpt, &o->zero, &gpt), NULL)) {
        tsr_ps_cancel(grid);
        goto done;
    }
    built = MPI_Wtime() - built;
    MPI_Allreduce(MPI_IN_PLACE, &built, 1, MPI_DOUBLE, MPI_MAX, agree_comm);
    if (world_rank == 0) {
        printf("tsr-train: model built in %.2f s (the slowest rank)\n", built);
        print_stages(o, gpt);
        fflush(stdout);
    }
    /* Before anything is read from or written to them: the directory is this job's alone. */
    if (o->layout.ps == 0 && check_outputs(o, tsr_grid_comm(grid, TSR_AXIS_WORLD), &lock))
        goto done;
    if (o->resume) {
        char rate[96];
        double r0 = MPI_Wtime();
        if (worker_failed(grid, resume_path(o, &path), "--resume") ||
            worker_failed(grid, resume(o, grid, gpt, ds, path, &step, &seen), "--resume"))
            goto done;
        if (world_rank == 0)
            printf("tsr-train: resumed from %s at step %ld (read %s)\n", path, step,
                   io_rate(file_bytes(path), MPI_Wtime() - r0, rate, sizeof rate));
        if (step >= o->steps) {
            if (world_rank == 0)
                printf("tsr-train: nothing to train: the checkpoint is at step %ld, not before --steps %ld\n", step,
                       o->steps);
            status = 0;
            goto done;
        }
    }
    if (o->trace)
        tsr_prof_set_level(o->trace_kernels ? TSR_PROF_KERNEL_EVENTS : TSR_PROF_EVENTS);
    if (world_rank == 0 && o->log_json && !(json = fopen(o->log_json, o->resume ? "a" : "w")))
        rc = set_app_error(TSR_ERR_IO, "%s: %s", o->log_json, strerror(errno));
    if (worker_failed(grid, rc, "--log-json"))
        goto done;
    tsr_gpt_batch_slice(gpt, &first, &count);
    in = malloc(sizeof *in * (size_t)count * o->model.seq);
    tg = malloc(sizeof *tg * (size_t)count * o->model.seq);
    if (worker_failed(grid, in && tg ? TSR_OK : set_app_error(TSR_ERR_OUT_OF_MEMORY, "no memory for the batch"), NULL))
        goto done;
    if (o->val_data && worker_failed(grid, val_load(o, gpt, &val), "--val-data"))
        goto done;
    for (; step < o->steps; step++) {
        tsr_gpt_step_info_t info;
        tsr_prof_clear_events(); /* the trace: the last step and what follows it */
        int region = tsr_prof_begin(TSR_PROF_HOST, "data", NULL, -1);
        rc = tsr_dataset_batch(ds, seen / o->model.seq, o->gpt.batch, o->model.seq, first, count, in, tg);
        tsr_prof_end(region);
        if (worker_failed(grid, rc, "--data"))
            goto done;
        double t0 = MPI_Wtime();
        if (worker_failed(grid, tsr_gpt_train_step(gpt, in, tg, &info), NULL))
            goto done;
        double ms = (MPI_Wtime() - t0) * 1e3;
        seen += (int64_t)o->gpt.batch * o->model.seq;
        if (o->layout.ps > 0 && o->staleness != 0) {
            /* Each replica hears the loss and norm of the last round its server applied, and at
             * staleness > 0 replicas at one step may have heard different rounds: agree, so that
             * all stop at the same step (a non-finite value makes the sum non-finite). */
            double v[2] = {info.loss, info.grad_norm};
            MPI_Allreduce(MPI_IN_PLACE, v, 2, MPI_DOUBLE, MPI_SUM, agree_comm);
            if (!isfinite(v[0]) || !isfinite(v[1]))
                info.loss = v[0], info.grad_norm = v[1];
        }
        if (!isfinite(info.loss) || !isfinite(info.grad_norm)) { /* the same on every rank */
            report_not_finite(o, step + 1, &info, ++bad_steps);
            if (bad_steps > o->max_bad_steps)
                goto done;
        }
        double vl = NAN;
        if (o->val_data && ((o->val_every > 0 && (step + 1) % o->val_every == 0) || step + 1 == o->steps) &&
            worker_failed(grid, val_loss(o, gpt, &val, &vl), "--val-data"))
            goto done;
        region = tsr_prof_begin(TSR_PROF_HOST, "log", NULL, -1);
        peak_t peak = peak_over_ranks(o);
        if (world_rank == 0)
            log_step(o, json, step + 1, o->steps, &info, vl, peak, ms, (double)o->gpt.batch * o->model.seq, seen);
        tsr_prof_end(region);
        step_s = fmax(step_s, ms / 1e3);
        int stop = step + 1 < o->steps ? should_stop(o, start, step_s, ckpt_s) : 0;
        double stop_at = MPI_Wtime() - start;
        int due = o->ckpt_dir &&
                  ((o->ckpt_every > 0 && (step + 1) % o->ckpt_every == 0) || step + 1 == o->steps || stop);
        double c0 = MPI_Wtime();
        region = due ? tsr_prof_begin(TSR_PROF_CKPT, "save checkpoint", NULL, (int)(step + 1)) : -1;
        rc = TSR_OK;
        if (due && o->layout.ps > 0)
            rc = tsr_ps_checkpoint(tsr_gpt_optimizer(gpt), seen);
        else if (due)
            rc = save(o, grid, tsr_gpt_optimizer(gpt), ds, step + 1, seen);
        tsr_prof_end(region);
        if (worker_failed(grid, rc, "checkpoint"))
            goto done;
        ckpt_s = due ? fmax(ckpt_s, MPI_Wtime() - c0) : ckpt_s;
        if (due && world_rank == 0) {
            char file[4096], rate[96];
            snprintf(file, sizeof file, "%s/step_%ld.h5", o->ckpt_dir, step + 1);
            printf("tsr-train: checkpoint %s (wrote %s)\n", file, io_rate(file_bytes(file), MPI_Wtime() - c0, rate,
                                                                          sizeof rate));
            fflush(stdout);
        }
        if (stop) {
            if (world_rank == 0)
                printf("tsr-train: %s: stopped after step %ld of %ld, %.1f s into the run%s\n",
                       stop < 0 ? "--time-limit" : stop == SIGTERM ? "SIGTERM" : "SIGUSR1", step + 1, o->steps,
                       stop_at, o->ckpt_dir ? "" : " (no --ckpt-dir: nothing saved)");
            break;
        }
    }
    tsr_prof_set_level(TSR_PROF_OFF);
    if (o->trace && worker_failed(grid, tsr_prof_write_trace(grid, o->trace), "--trace"))
        goto done;
    status = 0;
done:
    if (json)
        fclose(json);
    free(path);
    tsr_ckpt_unlock(&lock);
    free(in);
    free(tg);
    val_free(&val);
    tsr_gpt_destroy(&gpt);
    if (agree_comm != MPI_COMM_WORLD)
        status = ps_final(status, tsr_grid_is_server(grid), serve_rc);
    tsr_dataset_close(&ds);
    tsr_grid_destroy(&grid);
    tsr_device_destroy(&dev);
    return status;
}

int main(int argc, char **argv)
{
    options_t o = {0};
    tsr_layout_t lay = TSR_LAYOUT_INIT;
    tsr_zero_config_t z = train_zero_defaults();
    tsr_gpt_options_t g = TSR_GPT_OPTIONS_INIT;
    tsr_gpt_config_t m = TSR_GPT_CONFIG_INIT;
    tsr_mem_keep_freed_host_memory(); /* before MPI_Init: MPI's buffers too */
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world_size);
    catch_stop_signals();
    o.layout = lay, o.zero = z, o.gpt = g, o.model = m;
    o.gpt.poll_us = 50;
    o.steps = 10;
    o.val_batches = 1;
    snprintf(o.model_text, sizeof o.model_text, "tiny");
    snprintf(o.schedule_text, sizeof o.schedule_text, "1f1b");
    int status = parse_options(argc, argv, &o);
    if (status == 0)
        status = train(&o);
    MPI_Finalize();
    return status < 0 ? 0 : status;
}
