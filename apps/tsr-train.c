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
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <tessera.h>

/* Bytes of synthetic text behind --data synthetic. */
#define SYNTHETIC_BYTES (1 << 20)

static const char usage[] =
    "Usage: mpiexec -n N tsr-train [OPTIONS]\n"
    "Train a GPT-2 model on a dp x pp x tp grid of ranks (AdamW, betas 0.9/0.95, weight decay 0.1,\n"
    "gradient clipping at global norm 1, constant learning rate).\n"
    "  --layout dp=D,pp=P,tp=RxC   process grid (default dp=N); tp=1xC is 1D (Megatron), else 2D (SUMMA)\n"
    "  --zero 0..3                 ZeRO stage (default 0)\n"
    "  --schedule KIND             gpipe, 1f1b, interleaved:V or zb-h1 (default 1f1b)\n"
    "  --model SPEC                tiny, gpt2-124m or layers=L,dim=H,heads=A,vocab=V,seq=T (default tiny)\n"
    "  --data FILE.bin|synthetic   llm.c token shard, or synthetic byte-level text (default synthetic)\n"
    "  --batch B                   global batch in sequences (default 8)\n"
    "  --micro-batches M           micro-batches per step on each dp rank (default 1)\n"
    "  --steps S                   train until step S (default 10); resuming at or past it trains nothing\n"
    "  --lr X                      learning rate, finite and positive (default 1e-3)\n"
    "  --seed N                    seed of the initial weights (default 1234)\n"
    "  --device cpu|cuda           device (default cpu); cuda: rank r uses GPU (local rank mod GPUs)\n"
    "  --precision fp32|bf16       precision (default fp32); bf16 (cuda only): bf16 compute, fp32 master\n"
    "  --recompute none|attention|block  replay each block's attention sublayer, or the whole block,\n"
    "                              in its backward instead of keeping its activations (default none)\n"
    "  --ckpt-dir DIR              write checkpoints into DIR (every --ckpt-every steps and at the end);\n"
    "                              checked and locked before step 1: one job per directory\n"
    "  --ckpt-every K              checkpoint interval in steps (default 0: only at the end)\n"
    "  --resume [latest|FILE]      continue from DIR/latest (needs --ckpt-dir) or from FILE\n"
    "  --log-json FILE             one JSON object per step (loss, grad_norm, lr, ms, tokens_per_s, mfu,\n"
    "                              peak bytes per memory category)\n"
    "  --trace FILE                Chrome trace JSON of the last step's pipeline (when pp > 1)\n"
    "  --help, --version\n"
    "A step whose loss or gradient norm is not finite stops the run with an error (exit 1).\n"
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
    const char *data, *ckpt_dir, *resume, *log_json, *trace;
    long steps, ckpt_every;
} options_t;

static int world_rank, world_size;
/* The ranks' summed peak FLOP/s, the MFU's denominator (tsr_gpt_peak_flops). */
static double peak_flops;
static char app_error[512]; /* an error found by tsr-train itself, not by the library */

/* Record an error of tsr-train's own for failed() to print. */
static tsr_status_t set_app_error(tsr_status_t status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(app_error, sizeof app_error, fmt, ap);
    va_end(ap);
    return status;
}

/* Print a one-line error on rank 0 (usage errors: every rank sees the same). */
static int usage_error(const char *fmt, ...)
{
    if (world_rank == 0) {
        va_list ap;
        va_start(ap, fmt);
        fputs("tsr-train: ", stderr);
        vfprintf(stderr, fmt, ap);
        fputs(" (try --help)\n", stderr);
        va_end(ap);
    }
    return 2;
}

/*
 * Agree on failure across the world: if any rank's rc is not TSR_OK, the lowest failing
 * rank prints its error and every rank returns 1.
 */
static int failed(tsr_status_t rc, const char *what)
{
    int mine = rc != TSR_OK ? world_rank : world_size, first = world_size;
    MPI_Allreduce(&mine, &first, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
    if (first == world_size)
        return 0;
    if (world_rank == first)
        fprintf(stderr, "tsr-train: %s%s%s\n", what ? what : "", what ? ": " : "",
                app_error[0] ? app_error : tsr_last_error());
    return 1;
}

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

static int parse_schedule(const char *text, options_t *o)
{
    if (tsr_pipe_spec_parse(text, &o->gpt.schedule, &o->gpt.chunks) != TSR_OK)
        return usage_error("--schedule %s: %s", text, tsr_last_error());
    snprintf(o->schedule_text, sizeof o->schedule_text, "%s", text);
    return 0;
}

/* Parse argv into *o; returns 0, 2 on a usage error, or -1 after --help/--version. */
static int parse_options(int argc, char **argv, options_t *o)
{
    enum { O_LAYOUT = 256, O_ZERO, O_SCHEDULE, O_MODEL, O_DATA, O_BATCH, O_MICRO, O_STEPS, O_LR, O_SEED,
           O_DEVICE, O_PRECISION, O_RECOMPUTE, O_COMPUTE, O_CKPT_DIR, O_CKPT_EVERY, O_RESUME, O_LOG_JSON, O_TRACE, O_HELP, O_VERSION };
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
        {"trace", required_argument, 0, O_TRACE}, {"help", no_argument, 0, O_HELP},
        {"version", no_argument, 0, O_VERSION}, {0, 0, 0, 0}};
    long v;
    double x;
    opterr = 0;
    for (int c; (c = getopt_long(argc, argv, ":", longopts, NULL)) != -1;) {
        switch (c) {
        case O_LAYOUT:
            if (tsr_layout_parse(optarg, &o->layout) != TSR_OK)
                return usage_error("--layout %s: %s", optarg, tsr_last_error());
            o->have_layout = 1;
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
    if (o->ckpt_every > 0 && !o->ckpt_dir)
        return usage_error("--ckpt-every needs --ckpt-dir");
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

/* ---------- checkpoints ---------- */

static tsr_status_t save(const options_t *o, tsr_grid_t grid, tsr_gpt_t gpt, long step)
{
    tsr_ckpt_writer_t w = NULL;
    char layout[TSR_LAYOUT_STRLEN];
    const tsr_gpt_config_t *m = &o->model;
    int64_t pos = step;
    tsr_comm_t world = tsr_grid_comm(grid, TSR_AXIS_WORLD);
    tsr_status_t rc = tsr_ckpt_writer_create(world, o->ckpt_dir, step, &w);
    if (rc == TSR_OK)
        rc = tsr_ckpt_save_zero(w, grid, tsr_gpt_optimizer(gpt), &o->zero);
    if (rc == TSR_OK)
        rc = tsr_gpt_config_save(w, m);
    if (rc == TSR_OK)
        rc = tsr_ckpt_set_i64(w, "/config", "batch", o->gpt.batch);
    if (rc == TSR_OK)
        rc = tsr_ckpt_set_str(w, "/layout", "grid", tsr_layout_format(&o->layout, layout, sizeof layout));
    if (rc == TSR_OK)
        rc = tsr_ckpt_set_str(w, "/layout", "schedule", o->schedule_text);
    if (rc == TSR_OK)
        rc = tsr_ckpt_set_i64(w, "/layout", "micro_batches", o->gpt.micro_batches);
    if (rc == TSR_OK)
        rc = tsr_ckpt_set_i64(w, "/", "tokens_seen", (int64_t)step * o->gpt.batch * m->seq);
    if (rc == TSR_OK)
        rc = tsr_ckpt_set_i64(w, "/", "seed", (int64_t)o->gpt.seed);
    if (rc == TSR_OK)
        rc = tsr_ckpt_write_i64(w, "/data/step", 1, &pos);
    if (rc != TSR_OK) {
        tsr_ckpt_abort(&w);
        return rc;
    }
    return tsr_ckpt_commit(&w, 0);
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

/*
 * Restore the optimizer from the checkpoint at path; *step gets its data position. Every value
 * read is covered by a checksum, and they must agree: the loader's position /data/step is the
 * checkpoint's step, and the optimizer has taken no more steps than that.
 */
static tsr_status_t resume(const options_t *o, tsr_grid_t grid, tsr_gpt_t gpt, const char *path, long *step)
{
    tsr_ckpt_reader_t r = NULL;
    int64_t pos = 0, at = 0;
    tsr_zero_state_t state;
    tsr_status_t rc = tsr_ckpt_reader_open(tsr_grid_comm(grid, TSR_AXIS_WORLD), path, &r);
    if (rc == TSR_OK)
        rc = tsr_ckpt_verify_metadata(r);
    if (rc == TSR_OK)
        rc = tsr_gpt_config_expect(r, &o->model);
    if (rc == TSR_OK)
        rc = tsr_ckpt_expect_i64(r, "/config", "batch", o->gpt.batch);
    if (rc == TSR_OK)
        rc = tsr_ckpt_load_zero(r, grid, tsr_gpt_optimizer(gpt), &o->zero);
    if (rc == TSR_OK)
        rc = tsr_ckpt_read_i64(r, "/data/step", 1, &pos);
    if (rc == TSR_OK)
        rc = tsr_ckpt_get_i64(r, "/", "step", &at);
    tsr_zero_get_state(tsr_gpt_optimizer(gpt), &state);
    if (rc == TSR_OK && (pos != at || pos < 0 || pos > LONG_MAX))
        rc = set_app_error(TSR_ERR_FORMAT, "%s: the loader's position /data/step is %lld, but the checkpoint is of "
                           "step %lld", path, (long long)pos, (long long)at);
    if (rc == TSR_OK && state.step > pos)
        rc = set_app_error(TSR_ERR_FORMAT, "%s: /optim step is %ld, past the checkpoint's step %lld", path,
                           state.step, (long long)pos);
    *step = (long)pos;
    tsr_ckpt_reader_close(&r);
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

static void log_step(const options_t *o, FILE *json, long step, long steps, const tsr_gpt_step_info_t *info,
                     double ms, double tokens)
{
    tsr_mem_stats_t mem;
    tsr_mem_stats(o->device, &mem);
    double tps = tokens / (ms / 1e3), mfu = tsr_gpt_flops_per_token(&o->model) * tps / peak_flops;
    printf("step %ld/%ld  loss %.4f  grad norm %.3f  lr %.2e  %.1f ms  %.0f tok/s  MFU %.2f%%  peak mem %.1f MiB\n",
           step, steps, info->loss, info->grad_norm, info->lr, ms, tps, 100 * mfu,
           (double)mem.total_peak / (1 << 20));
    fflush(stdout);
    if (!json)
        return;
    fprintf(json, "{\"step\":%ld,", step);
    json_number(json, "loss", "%.17g", info->loss);
    json_number(json, "grad_norm", "%.17g", info->grad_norm);
    json_number(json, "lr", "%.9g", info->lr);
    json_number(json, "ms", "%.3f", ms);
    json_number(json, "tokens_per_s", "%.1f", tps);
    json_number(json, "mfu", "%.6f", mfu);
    fputs("\"peak_bytes\":{", json);
    for (int c = 0; c < TSR_MEM_CATEGORY_COUNT; c++)
        fprintf(json, "\"%s\":%llu,", tsr_mem_category_name((tsr_mem_category_t)c), (unsigned long long)mem.peak[c]);
    fprintf(json, "\"total\":%llu}}\n", (unsigned long long)mem.total_peak);
    fflush(json);
}

/* Rank 0: the one line of a step whose loss or gradient norm is not finite. */
static void report_not_finite(long step, const tsr_gpt_step_info_t *info)
{
    double bad = isfinite(info->loss) ? info->grad_norm : info->loss;
    if (world_rank == 0)
        fprintf(stderr, "tsr-train: step %ld: the %s is %s (expected a finite number; try a lower --lr)\n", step,
                isfinite(info->loss) ? "gradient norm" : "loss", isnan(bad) ? "NaN" : bad > 0 ? "+Inf" : "-Inf");
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

static int train(const options_t *o)
{
    tsr_device_t dev = NULL;
    tsr_grid_t grid = NULL;
    tsr_gpt_t gpt = NULL;
    tsr_dataset_t ds = NULL;
    tsr_pipe_trace_t trace = NULL;
    FILE *json = NULL;
    int32_t *in = NULL, *tg = NULL;
    tsr_ckpt_lock_t lock = NULL;
    int status = 1, first = 0, count = 0;
    long step = 0;
    char *path = NULL;
    tsr_status_t rc = open_device(o->device, &dev);
    if (failed(rc, "--device"))
        goto done;
    if (failed(tsr_grid_create(MPI_COMM_WORLD, &o->layout, &grid), NULL))
        goto done;
    MPI_Barrier(MPI_COMM_WORLD); /* the ranks of a node measure their shares together */
    if (failed(tsr_gpt_peak_flops(dev, o->zero.precision, &peak_flops), NULL))
        goto done;
    MPI_Allreduce(MPI_IN_PLACE, &peak_flops, 1, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD);
    if (world_rank == 0 && o->device == TSR_DEVICE_CPU) {
        const char *how = NULL;
        int threads = tsr_device_cpu_threads(&how);
        printf("tsr-train: %d CPU thread%s per rank (%s); measured fp32 GEMM peak %.1f GFLOP/s per rank\n", threads,
               threads == 1 ? "" : "s", how, peak_flops / world_size / 1e9);
    }
    if (o->data && strcmp(o->data, "synthetic") != 0) {
        if (failed(tsr_dataset_open(o->data, o->model.vocab, &ds), "--data"))
            goto done;
    } else if (open_synthetic(o->model.vocab, &ds)) {
        goto done;
    }
    if (failed(tsr_gpt_create(grid, dev, &o->model, &o->gpt, &o->zero, &gpt), NULL))
        goto done;
    int64_t params = tsr_gpt_param_count(&o->model);
    if (world_rank == 0) {
        char lay[TSR_LAYOUT_STRLEN], model[TSR_GPT_CONFIG_STRLEN];
        printf("tsr-train: model %s (%lld parameters), layout %s, ZeRO %d, schedule %s, batch %d x %d tokens in "
               "%d micro-batches, data %s, %s %s\n",
               tsr_gpt_config_format(&o->model, model, sizeof model), (long long)params,
               tsr_layout_format(&o->layout, lay, sizeof lay), o->zero.stage, o->schedule_text, o->gpt.batch,
               o->model.seq, o->gpt.micro_batches, o->data ? o->data : "synthetic", tsr_device_kind_name(o->device),
               o->zero.precision == TSR_PRECISION_BF16 ? "bf16" : "fp32");
    }
    /* Before anything is read from or written to them: the directory is this job's alone. */
    if (check_outputs(o, tsr_grid_comm(grid, TSR_AXIS_WORLD), &lock))
        goto done;
    if (o->resume) {
        if (failed(resume_path(o, &path), "--resume") || failed(resume(o, grid, gpt, path, &step), "--resume"))
            goto done;
        if (world_rank == 0)
            printf("tsr-train: resumed from %s at step %ld\n", path, step);
        if (step >= o->steps) {
            if (world_rank == 0)
                printf("tsr-train: nothing to train: the checkpoint is at step %ld, not before --steps %ld\n", step,
                       o->steps);
            status = 0;
            goto done;
        }
    }
    if (o->trace && o->layout.pp > 1) {
        if (failed(tsr_pipe_trace_create(&trace), "--trace"))
            goto done;
        tsr_gpt_set_trace(gpt, trace);
    }
    if (world_rank == 0 && o->log_json && !(json = fopen(o->log_json, o->resume ? "a" : "w")))
        rc = set_app_error(TSR_ERR_IO, "%s: %s", o->log_json, strerror(errno));
    if (failed(rc, "--log-json"))
        goto done;
    tsr_gpt_batch_slice(gpt, &first, &count);
    in = malloc(sizeof *in * (size_t)count * o->model.seq);
    tg = malloc(sizeof *tg * (size_t)count * o->model.seq);
    if (failed(in && tg ? TSR_OK : set_app_error(TSR_ERR_OUT_OF_MEMORY, "no memory for the batch"), NULL))
        goto done;
    for (; step < o->steps; step++) {
        tsr_gpt_step_info_t info;
        rc = tsr_dataset_batch(ds, step, o->gpt.batch, o->model.seq, first, count, in, tg);
        if (failed(rc, "--data"))
            goto done;
        if (trace)
            tsr_pipe_trace_clear(trace);
        double t0 = MPI_Wtime();
        if (failed(tsr_gpt_train_step(gpt, in, tg, &info), NULL))
            goto done;
        if (!isfinite(info.loss) || !isfinite(info.grad_norm)) { /* the same on every rank */
            report_not_finite(step + 1, &info);
            goto done;
        }
        double ms = (MPI_Wtime() - t0) * 1e3;
        if (world_rank == 0)
            log_step(o, json, step + 1, o->steps, &info, ms, (double)o->gpt.batch * o->model.seq);
        int due = o->ckpt_dir && ((o->ckpt_every > 0 && (step + 1) % o->ckpt_every == 0) || step + 1 == o->steps);
        if (due && failed(save(o, grid, gpt, step + 1), "checkpoint"))
            goto done;
        if (due && world_rank == 0)
            printf("tsr-train: checkpoint %s/step_%ld.h5\n", o->ckpt_dir, step + 1);
    }
    if (trace && failed(tsr_pipe_trace_write(trace, tsr_grid_comm(grid, TSR_AXIS_WORLD), o->trace), "--trace"))
        goto done;
    status = 0;
done:
    if (json)
        fclose(json);
    free(path);
    tsr_ckpt_unlock(&lock);
    free(in);
    free(tg);
    tsr_pipe_trace_destroy(&trace);
    tsr_gpt_destroy(&gpt);
    tsr_dataset_close(&ds);
    tsr_grid_destroy(&grid);
    tsr_device_destroy(&dev);
    return status;
}

int main(int argc, char **argv)
{
    options_t o = {0};
    tsr_layout_t lay = TSR_LAYOUT_INIT;
    tsr_zero_config_t z = TSR_ZERO_CONFIG_INIT;
    tsr_gpt_options_t g = TSR_GPT_OPTIONS_INIT;
    tsr_gpt_config_t m = TSR_GPT_CONFIG_INIT;
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world_size);
    o.layout = lay, o.zero = z, o.gpt = g, o.model = m;
    o.zero.beta2 = 0.95f, o.zero.weight_decay = 0.1f, o.zero.clip_norm = 1.0f;
    o.gpt.poll_us = 50;
    o.steps = 10;
    snprintf(o.model_text, sizeof o.model_text, "tiny");
    snprintf(o.schedule_text, sizeof o.schedule_text, "1f1b");
    int status = parse_options(argc, argv, &o);
    if (status == 0)
        status = train(&o);
    MPI_Finalize();
    return status < 0 ? 0 : status;
}
