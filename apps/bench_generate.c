/*
 * bench_generate.c: tsr-bench generate. Generation speed of the GPT model on the grid of
 * ranks it is started on, through the inference context (tessera/model.h): a prompt of
 * --prompt-len tokens for each of --batch sequences, then --max-tokens tokens decoded
 * greedily one at a time through the KV caches, as tsr-generate does. It reports prompt
 * tokens/s (the prompt's forward and the first token), decode tokens/s and milliseconds per
 * decoded token (a step of every sequence), and the KV caches' bytes as the tracked
 * allocator counts them against 2·L·B·T·C·bytes (every block's keys and values for every
 * sequence's context of T tokens, the bytes of the compute type: 4 in fp32), split over the
 * ranks: by the pipeline stages' blocks, the replicas' sequences and the tp grid (heads over
 * its columns, in 2D sequences over its rows).
 *
 * The model is --model's with the initial weights of --seed, or a checkpoint's (--ckpt, of
 * any layout: tsr-train's, tsr-ckpt import's). The prompts are token ids drawn uniformly by
 * the counter-based RNG, the same on every layout.
 */
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bench.h"

/* Seed of the synthetic prompts. */
#define PROMPT_SEED 11

typedef struct opts {
    int json, have_layout, have_precision, warmup, runs, batch, prompt_len, max_tokens;
    const char *ckpt;
    tsr_device_kind_t device;
    tsr_layout_t layout;
    tsr_gpt_config_t model;
    tsr_gpt_options_t gpt;
    tsr_zero_config_t zero;
} opts_t;

static void usage(void)
{
    printf("usage: mpiexec -n N tsr-bench generate [--json] [OPTIONS]\n"
           "Generation speed of the GPT model through its KV caches: prompt tokens/s (global), decode\n"
           "tokens/s (global), ms per decoded token, and the KV caches' bytes (the tracked allocator's, the\n"
           "largest over the ranks) against 2*L*B*T*C*bytes / ranks. Greedy decoding of synthetic prompts.\n"
           "  --device cpu|cuda        device (default cpu; on cuda each rank takes GPU local rank mod count)\n"
           "  --model SPEC             tiny, gpt2-124m or layers=L,dim=H,heads=A,vocab=V,seq=T (default tiny)\n"
           "  --ckpt FILE|DIR          the model and weights of a checkpoint instead (a directory: its latest)\n"
           "  --layout LAYOUT          process grid dp=D,pp=P,tp=RxC (default dp=N)\n"
           "  --batch B                sequences generated at once, a multiple of dp (default 1)\n"
           "  --prompt-len N           prompt tokens per sequence (default 16)\n"
           "  --max-tokens N           tokens decoded per sequence after the prompt (default 32); prompt and\n"
           "                           decoded tokens must fit the model's context\n"
           "  --precision fp32|bf16    working precision (default fp32 on cpu, bf16 on cuda)\n"
           "  --zero-stage S           ZeRO stage 0..3 of the parameters (default 0; 3 gathers each layer)\n"
           "  --runs R                 timed generations, each from an empty cache (default 3)\n"
           "  --warmup W               untimed generations before them (default 1)\n"
           "  --json                   one JSON object on one line\n"
           "  --help                   this text\n"
           "prompt tokens/s = B * prompt-len / (time of the prompt's step and its sampling); decode tokens/s\n"
           "= B * (max-tokens - 1) / (time of the steps after it); ms per token = that time / (max-tokens - 1).\n"
           "The KV formula's T is the model's context (the caches are made for it), L its blocks, C its dim.\n");
}

static int parse_int(const char *opt, const char *text, long lo, long hi, int *out)
{
    return bench_int("generate", opt, text, lo, hi, out);
}

/* 0: run; 1: bad input (message printed); -1: --help printed. */
static int parse(int argc, char **argv, int world, opts_t *o)
{
    enum { O_DEVICE = 256, O_MODEL, O_CKPT, O_LAYOUT, O_BATCH, O_PROMPT, O_MAX, O_PRECISION, O_ZERO, O_RUNS,
           O_WARMUP, O_JSON, O_HELP };
    static const struct option longopts[] = {
        {"device", required_argument, 0, O_DEVICE}, {"model", required_argument, 0, O_MODEL},
        {"ckpt", required_argument, 0, O_CKPT}, {"layout", required_argument, 0, O_LAYOUT},
        {"batch", required_argument, 0, O_BATCH}, {"prompt-len", required_argument, 0, O_PROMPT},
        {"max-tokens", required_argument, 0, O_MAX}, {"precision", required_argument, 0, O_PRECISION},
        {"zero-stage", required_argument, 0, O_ZERO}, {"runs", required_argument, 0, O_RUNS},
        {"warmup", required_argument, 0, O_WARMUP}, {"json", no_argument, 0, O_JSON},
        {"help", no_argument, 0, O_HELP}, {0, 0, 0, 0}};
    const tsr_layout_t lay = TSR_LAYOUT_INIT;
    const tsr_gpt_config_t model = TSR_GPT_CONFIG_INIT;
    const tsr_gpt_options_t gpt = TSR_GPT_OPTIONS_INIT;
    const tsr_zero_config_t zero = TSR_ZERO_CONFIG_INIT;
    int have_model = 0;
    *o = (opts_t){0, 0, 0, 1, 3, 1, 16, 32, NULL, TSR_DEVICE_CPU, lay, model, gpt, zero};
    opterr = 0;
    optind = 1;
    for (int c; (c = getopt_long(argc, argv, ":", longopts, NULL)) != -1;) {
        switch (c) {
        case O_DEVICE:
            if (tsr_device_kind_parse(optarg, &o->device) != TSR_OK)
                return bench_fail("generate", "--device %s: expected cpu or cuda", optarg);
            break;
        case O_MODEL:
            if (tsr_gpt_config_parse(optarg, &o->model) != TSR_OK)
                return bench_fail("generate", "--model %s: %s", optarg, tsr_last_error());
            have_model = 1;
            break;
        case O_CKPT: o->ckpt = optarg; break;
        case O_LAYOUT:
            if (tsr_layout_parse(optarg, &o->layout) != TSR_OK)
                return bench_fail("generate", "--layout %s: %s", optarg, tsr_last_error());
            o->have_layout = 1;
            break;
        case O_BATCH:
            if (parse_int("--batch", optarg, 1, 65536, &o->batch))
                return 1;
            break;
        case O_PROMPT:
            if (parse_int("--prompt-len", optarg, 1, 1 << 30, &o->prompt_len))
                return 1;
            break;
        case O_MAX:
            if (parse_int("--max-tokens", optarg, 1, 1 << 30, &o->max_tokens))
                return 1;
            break;
        case O_PRECISION:
            if (strcmp(optarg, "fp32") && strcmp(optarg, "bf16"))
                return bench_fail("generate", "--precision %s: expected fp32 or bf16", optarg);
            o->zero.precision = strcmp(optarg, "fp32") ? TSR_PRECISION_BF16 : TSR_PRECISION_FP32;
            o->have_precision = 1;
            break;
        case O_ZERO:
            if (parse_int("--zero-stage", optarg, 0, 3, &o->zero.stage))
                return 1;
            break;
        case O_RUNS:
            if (parse_int("--runs", optarg, 1, 1000000, &o->runs))
                return 1;
            break;
        case O_WARMUP:
            if (parse_int("--warmup", optarg, 0, 1000000, &o->warmup))
                return 1;
            break;
        case O_JSON: o->json = 1; break;
        case O_HELP:
            if (bench_rank() == 0)
                usage();
            return -1;
        case ':': return bench_fail("generate", "%s needs a value", argv[optind - 1]);
        default: return bench_fail("generate", "unknown option %s (see tsr-bench generate --help)", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return bench_fail("generate", "unexpected argument %s", argv[optind]);
    if (have_model && o->ckpt)
        return bench_fail("generate", "--model and --ckpt both name the model (expected one of them)");
    if (bench_layout("generate", o->have_layout, world, &o->layout))
        return 1;
    if (o->batch % o->layout.dp)
        return bench_fail("generate", "--batch %d is not divisible by dp=%d", o->batch, o->layout.dp);
    if (o->device == TSR_DEVICE_CUDA && !tsr_device_kind_built(TSR_DEVICE_CUDA))
        return bench_fail("generate", "--device cuda: this build has no CUDA backend");
    if (!o->have_precision)
        o->zero.precision = o->device == TSR_DEVICE_CUDA ? TSR_PRECISION_BF16 : TSR_PRECISION_FP32;
    return 0;
}

/* The prompt and decode lengths fit the model's context (known once a checkpoint is read). */
static int check_lengths(const opts_t *o)
{
    if (o->prompt_len + (int64_t)o->max_tokens > o->model.seq)
        return bench_fail("generate", "--prompt-len %d and --max-tokens %d pass the model's context of %d (expected "
                          "at most %d together)", o->prompt_len, o->max_tokens, o->model.seq, o->model.seq);
    return 0;
}

/* The checkpoint --ckpt names: itself, or a directory's latest; its model into o->model. */
static tsr_status_t read_model(opts_t *o, char *path, size_t len)
{
    struct stat st;
    tsr_status_t rc = TSR_OK;
    if (stat(o->ckpt, &st) == 0 && S_ISDIR(st.st_mode))
        rc = tsr_ckpt_latest(o->ckpt, path, len);
    else
        snprintf(path, len, "%s", o->ckpt);
    if (rc == TSR_OK)
        rc = tsr_gpt_ckpt_config(path, &o->model);
    return rc;
}

/* What the timed generations measured, the largest over the ranks. */
typedef struct result {
    double prompt_s, decode_s; /* summed over the timed runs */
    uint64_t kv_bytes, kv_total; /* the caches of a rank (largest), and of all ranks */
} result_t;

/* One generation from an empty cache: the prompt step, then max_tokens - 1 steps of one
 * token; *prompt_s and *decode_s get their times on this rank. */
static tsr_status_t generate(const opts_t *o, tsr_device_t dev, tsr_gpt_infer_t ctx, const int32_t *prompt,
                             int32_t *next, float *logits, int first, int count, double *prompt_s, double *decode_s)
{
    const tsr_gpt_sampler_t greedy = {sizeof greedy, 0.0f, 0, 1.0f, 0};
    tsr_status_t rc = TSR_OK;
    int V = o->model.vocab, P = o->prompt_len;
    tsr_gpt_infer_reset(ctx);
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = tsr_time_now(), t1 = t0;
    for (int p = P, n = P; p < P + o->max_tokens && rc == TSR_OK; p++, n = 1) {
        rc = tsr_gpt_infer_step(ctx, n, n == P ? prompt : next, 0, logits);
        for (int i = 0; i < count && rc == TSR_OK; i++)
            rc = tsr_gpt_sample(&greedy, logits + (size_t)i * V, V, (uint64_t)(first + i), (uint64_t)p, &next[i]);
        if (p == P)
            t1 = tsr_time_now();
    }
    if (rc == TSR_OK)
        rc = tsr_device_sync(dev);
    *prompt_s = t1 - t0;
    *decode_s = tsr_time_now() - t1;
    return rc;
}

/* Token j of sequence s's prompt: 32 random bits mapped onto [0, vocab) by a multiply-shift. */
static int32_t random_token(int s, int j, int vocab)
{
    uint32_t u = tsr_rng_u32(PROMPT_SEED, tsr_rng_stream((uint32_t)s, 0), (uint64_t)j);
    return (int32_t)(((uint64_t)u * (uint64_t)vocab) >> 32);
}

static void report(const opts_t *o, const result_t *r, int world)
{
    char lay[TSR_LAYOUT_STRLEN], model[TSR_GPT_CONFIG_STRLEN];
    const tsr_gpt_config_t *m = &o->model;
    double prompt_tps = (double)o->batch * o->prompt_len * o->runs / r->prompt_s;
    int decoded = o->max_tokens - 1;
    double decode_tps = decoded > 0 ? (double)o->batch * decoded * o->runs / r->decode_s : 0.0;
    double ms = decoded > 0 ? 1e3 * r->decode_s / ((double)decoded * o->runs) : 0.0;
    int bytes = o->zero.precision == TSR_PRECISION_BF16 ? 2 : 4;
    double formula = 2.0 * m->layers * o->batch * m->seq * m->dim * bytes;
    const char *prec = bytes == 2 ? "bf16" : "fp32";
    tsr_layout_format(&o->layout, lay, sizeof lay);
    tsr_gpt_config_format(m, model, sizeof model);
    if (o->json) {
        printf("{\"bench\":\"generate\",\"device\":\"%s\",\"ranks\":%d,\"layout\":\"%s\",\"model\":\"%s\","
               "\"params\":%lld,\"precision\":\"%s\",\"zero_stage\":%d,\"from\":\"%s\",\"batch\":%d,"
               "\"prompt_len\":%d,\"max_tokens\":%d,\"warmup\":%d,\"runs\":%d,\"prompt_seconds\":%.6f,"
               "\"decode_seconds\":%.6f,\"prompt_tokens_per_s\":%.1f,\"decode_tokens_per_s\":%.1f,"
               "\"ms_per_token\":%.4f,\"kv_cache_bytes\":%llu,\"kv_cache_bytes_total\":%llu,"
               "\"kv_formula_bytes\":%.0f,\"kv_formula_bytes_per_rank\":%.0f}\n",
               tsr_device_kind_name(o->device), world, lay, model, (long long)tsr_gpt_param_count(m), prec,
               o->zero.stage, o->ckpt ? "checkpoint" : "initial weights", o->batch, o->prompt_len, o->max_tokens,
               o->warmup, o->runs, r->prompt_s, r->decode_s, prompt_tps, decode_tps, ms,
               (unsigned long long)r->kv_bytes, (unsigned long long)r->kv_total, formula, formula / world);
    } else {
        printf("model %s (%lld parameters, %s), layout %s, %s %s on %d rank%s, ZeRO %d\n", model,
               (long long)tsr_gpt_param_count(m), o->ckpt ? o->ckpt : "initial weights", lay,
               tsr_device_kind_name(o->device), prec, world, world == 1 ? "" : "s", o->zero.stage);
        printf("batch %d, prompt %d tokens, %d decoded greedily, %d warmup + %d timed generations\n\n", o->batch,
               o->prompt_len, o->max_tokens, o->warmup, o->runs);
        printf("%18s %18s %14s\n%18.1f %18.1f %14.4f\n\n", "prompt tokens/s", "decode tokens/s", "ms/token",
               prompt_tps, decode_tps, ms);
        printf("KV cache: %llu bytes per rank (largest; %llu on all ranks), formula 2*L*B*T*C*%d = %.0f, / %d "
               "ranks = %.0f\n", (unsigned long long)r->kv_bytes, (unsigned long long)r->kv_total, bytes, formula,
               world, formula / world);
    }
    fflush(stdout);
}

int bench_generate(int argc, char **argv)
{
    opts_t o;
    int world = 0, status = 1, index = 0, first = 0, count = 0;
    char path[PATH_MAX + NAME_MAX + 2];
    MPI_Comm_size(MPI_COMM_WORLD, &world);
    int rc = parse(argc, argv, world, &o);
    if (rc)
        return rc < 0 ? 0 : rc;
    if (o.ckpt && bench_failed("generate", read_model(&o, path, sizeof path), "--ckpt", NULL))
        return 1;
    if (check_lengths(&o))
        return 1;
    if (o.device == TSR_DEVICE_CUDA) {
        int gpus = tsr_device_count(TSR_DEVICE_CUDA);
        MPI_Allreduce(MPI_IN_PLACE, &gpus, 1, MPI_INT, MPI_MIN, MPI_COMM_WORLD);
        if (gpus < 1)
            return bench_fail("generate", "--device cuda: no GPU visible");
        index = bench_local_rank() % gpus;
    }
    tsr_device_t dev = NULL;
    tsr_grid_t grid = NULL;
    tsr_gpt_t gpt = NULL;
    tsr_gpt_infer_t ctx = NULL;
    int32_t *prompt = NULL, *next = NULL;
    float *logits = NULL;
    result_t r = {0};
    tsr_mem_stats_t before, after;
    if (bench_failed("generate", tsr_device_create(o.device, index, &dev), "device", NULL) ||
        bench_failed("generate", tsr_grid_create(MPI_COMM_WORLD, &o.layout, &grid), "layout", NULL))
        goto done;
    o.gpt.batch = o.batch;
    if (bench_failed("generate", tsr_gpt_create(grid, dev, &o.model, &o.gpt, &o.zero, &gpt), "model", NULL) ||
        (o.ckpt && bench_failed("generate", tsr_gpt_ckpt_load(gpt, &o.zero, path), path, NULL)))
        goto done;
    tsr_mem_stats(o.device, &before);
    if (bench_failed("generate", tsr_gpt_infer_create(gpt, o.batch, &ctx), "inference context", NULL))
        goto done;
    tsr_mem_stats(o.device, &after);
    /* the caches are the context's activations (its work buffers are workspace) */
    r.kv_bytes = after.current[TSR_MEM_ACTIVATIONS] - before.current[TSR_MEM_ACTIVATIONS];
    tsr_gpt_infer_slice(ctx, &first, &count);
    prompt = malloc(sizeof *prompt * (size_t)count * o.prompt_len);
    next = malloc(sizeof *next * (size_t)count);
    logits = malloc(sizeof *logits * (size_t)count * o.model.vocab);
    if (bench_failed("generate", prompt && next && logits ? TSR_OK : TSR_ERR_OUT_OF_MEMORY, NULL,
                     "no memory for the prompts"))
        goto done;
    for (int i = 0; i < count; i++)
        for (int j = 0; j < o.prompt_len; j++)
            prompt[(size_t)i * o.prompt_len + j] = random_token(first + i, j, o.model.vocab);
    tsr_status_t st = TSR_OK;
    for (int run = 0; run < o.warmup + o.runs && st == TSR_OK; run++) {
        double ps = 0, ds = 0;
        st = generate(&o, dev, ctx, prompt, next, logits, first, count, &ps, &ds);
        if (run >= o.warmup)
            r.prompt_s += ps, r.decode_s += ds;
    }
    if (bench_failed("generate", st, "generation", NULL))
        goto done;
    MPI_Allreduce(MPI_IN_PLACE, &r.prompt_s, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, &r.decode_s, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
    MPI_Allreduce(&r.kv_bytes, &r.kv_total, 1, MPI_UINT64_T, MPI_SUM, MPI_COMM_WORLD);
    MPI_Allreduce(MPI_IN_PLACE, &r.kv_bytes, 1, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD);
    if (bench_rank() == 0)
        report(&o, &r, world);
    status = 0;
done:
    free(prompt);
    free(next);
    free(logits);
    tsr_gpt_infer_destroy(&ctx);
    tsr_gpt_destroy(&gpt);
    tsr_grid_destroy(&grid);
    tsr_device_destroy(&dev);
    return status;
}
