/*
 * tsr-generate: generate text from a checkpoint on a dp × pp × tp grid of MPI ranks (see
 * doc/tsr-generate.1).
 *
 *   mpiexec -n N tsr-generate --ckpt FILE|DIR --layout ... --prompt TEXT --max-tokens 64
 *
 * Every rank parses the same options and reads the same prompt; rank 0 alone prints. An
 * error is one line on stderr (from the lowest rank that saw it) and a non-zero exit.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <tessera.h>

#include "app.h"

const char app_name[] = "tsr-generate";

/* llm.c's tokenizer file: a header of 256 uint32 (magic, version, vocabulary size, and in
 * version 2 the end-of-text id), then per token its length (one byte) and bytes. */
#define TOKENIZER_MAGIC 20240328u

static const char usage[] =
    "Usage: mpiexec -n N tsr-generate --ckpt FILE|DIR (--prompt TEXT | --prompt-file F | --prompt-tokens IDS)\n"
    "                    [OPTIONS]\n"
    "Generate text from a Tessera checkpoint on a dp x pp x tp grid of ranks, with a KV cache.\n"
    "  --ckpt FILE|DIR             a checkpoint file, or a directory (its latest checkpoint)\n"
    "  --layout dp=D,pp=P,tp=RxC   process grid (default dp=1,pp=1,tp=1xN over the N ranks)\n"
    "  --prompt TEXT               the prompt, as bytes (a model whose vocabulary is 256 bytes)\n"
    "  --prompt-file F             the prompt, the bytes of file F\n"
    "  --prompt-tokens IDS         the prompt as token ids, separated by commas or spaces\n"
    "  --max-tokens N              tokens to generate after the prompt (default 64)\n"
    "  --temperature X             0 is greedy; else softmax(logits / X) (default 1)\n"
    "  --top-k K                   sample among the K most likely tokens (default 0: all)\n"
    "  --top-p P                   then among the fewest whose probabilities reach P, in (0, 1] (default 1)\n"
    "  --seed S                    seed of the draws (default 1234): a draw depends on (S, sequence, position)\n"
    "  --batch B                   sequences, all from the prompt, a multiple of dp (default dp)\n"
    "  --tokenizer FILE            llm.c tokenizer (gpt2_tokenizer.bin) to print text for token ids\n"
    "  --device cpu|cuda           device (default cpu); --precision fp32|bf16 (bf16: cuda only)\n"
    "  --json                      print one JSON object (tokens, text, speeds) instead of text\n"
    "  --help, --version\n"
    "Rank 0 prints each sequence's text (byte-level models, or with --tokenizer) or token ids, then\n"
    "on stderr the tokens/s of the prompt and of the decoding.\n";

typedef struct options {
    tsr_layout_t layout;
    int have_layout, batch, max_tokens, json;
    tsr_gpt_sampler_t sampler;
    tsr_device_kind_t device;
    tsr_precision_t precision;
    const char *ckpt, *prompt, *prompt_file, *prompt_tokens, *tokenizer;
} options_t;

static int world_rank, world_size;

static int parse_int(const char *opt, const char *text, long lo, long hi, int *out)
{
    int64_t v;
    if (tsr_parse_i64(text, lo, hi, &v) != TSR_OK)
        return usage_error("%s %s: %s", opt, text, tsr_last_error());
    *out = (int)v;
    return 0;
}

static int parse_float(const char *opt, const char *text, float *out)
{
    double v;
    if (tsr_parse_f64(text, &v) != TSR_OK)
        return usage_error("%s %s: %s", opt, text, tsr_last_error());
    *out = (float)v;
    return 0;
}

static int parse_options(int argc, char **argv, options_t *o)
{
    enum { O_CKPT = 256, O_LAYOUT, O_PROMPT, O_PROMPT_FILE, O_PROMPT_TOKENS, O_MAX, O_TEMP, O_TOPK, O_TOPP, O_SEED,
           O_BATCH, O_TOKENIZER, O_DEVICE, O_PRECISION, O_JSON, O_HELP, O_VERSION };
    static const struct option longopts[] = {
        {"ckpt", required_argument, 0, O_CKPT}, {"layout", required_argument, 0, O_LAYOUT},
        {"prompt", required_argument, 0, O_PROMPT}, {"prompt-file", required_argument, 0, O_PROMPT_FILE},
        {"prompt-tokens", required_argument, 0, O_PROMPT_TOKENS}, {"max-tokens", required_argument, 0, O_MAX},
        {"temperature", required_argument, 0, O_TEMP}, {"top-k", required_argument, 0, O_TOPK},
        {"top-p", required_argument, 0, O_TOPP}, {"seed", required_argument, 0, O_SEED},
        {"batch", required_argument, 0, O_BATCH}, {"tokenizer", required_argument, 0, O_TOKENIZER},
        {"device", required_argument, 0, O_DEVICE}, {"precision", required_argument, 0, O_PRECISION},
        {"json", no_argument, 0, O_JSON}, {"help", no_argument, 0, O_HELP}, {"version", no_argument, 0, O_VERSION},
        {0, 0, 0, 0}};
    int prompts = 0;
    opterr = 0;
    for (int c; (c = getopt_long(argc, argv, ":", longopts, NULL)) != -1;) {
        switch (c) {
        case O_CKPT: o->ckpt = optarg; break;
        case O_LAYOUT:
            if (tsr_layout_parse(optarg, &o->layout) != TSR_OK)
                return usage_error("--layout %s: %s", optarg, tsr_last_error());
            o->have_layout = 1;
            break;
        case O_PROMPT: o->prompt = optarg, prompts++; break;
        case O_PROMPT_FILE: o->prompt_file = optarg, prompts++; break;
        case O_PROMPT_TOKENS: o->prompt_tokens = optarg, prompts++; break;
        case O_MAX:
            if (parse_int("--max-tokens", optarg, 1, INT_MAX, &o->max_tokens))
                return 2;
            break;
        case O_TEMP:
            if (parse_float("--temperature", optarg, &o->sampler.temperature))
                return 2;
            break;
        case O_TOPK:
            if (parse_int("--top-k", optarg, 0, INT_MAX, &o->sampler.top_k))
                return 2;
            break;
        case O_TOPP:
            if (parse_float("--top-p", optarg, &o->sampler.top_p))
                return 2;
            break;
        case O_SEED:
            if (tsr_parse_u64(optarg, &o->sampler.seed) != TSR_OK)
                return usage_error("--seed %s: %s", optarg, tsr_last_error());
            break;
        case O_BATCH:
            if (parse_int("--batch", optarg, 1, 1 << 20, &o->batch))
                return 2;
            break;
        case O_TOKENIZER: o->tokenizer = optarg; break;
        case O_DEVICE:
            if (tsr_device_kind_parse(optarg, &o->device) != TSR_OK)
                return usage_error("--device %s: expected cpu or cuda", optarg);
            if (!tsr_device_kind_built(o->device))
                return usage_error("--device %s: this build of Tessera has no %s backend (reconfigure with "
                                   "--with-%s)", optarg, optarg, optarg);
            break;
        case O_PRECISION:
            if (strcmp(optarg, "fp32") && strcmp(optarg, "bf16"))
                return usage_error("--precision %s: expected fp32 or bf16", optarg);
            o->precision = strcmp(optarg, "bf16") == 0 ? TSR_PRECISION_BF16 : TSR_PRECISION_FP32;
            break;
        case O_JSON: o->json = 1; break;
        case O_HELP:
            if (world_rank == 0)
                fputs(usage, stdout);
            return -1;
        case O_VERSION:
            if (world_rank == 0)
                printf("tsr-generate (%s)\n", tsr_build_info());
            return -1;
        case ':': return usage_error("%s needs a value", argv[optind - 1]);
        default: return usage_error("unknown option %s", argv[optind - 1]);
        }
    }
    if (optind < argc)
        return usage_error("unexpected argument %s", argv[optind]);
    if (!o->ckpt || !*o->ckpt)
        return usage_error("--ckpt FILE|DIR is needed");
    if (prompts != 1)
        return usage_error("give exactly one of --prompt, --prompt-file and --prompt-tokens (got %d)", prompts);
    if (tsr_gpt_sampler_check(&o->sampler) != TSR_OK)
        return usage_error("%s", tsr_last_error());
    if (!o->have_layout)
        o->layout.tp_cols = world_size;
    if (tsr_layout_ranks(&o->layout) != world_size) {
        char buf[TSR_LAYOUT_STRLEN];
        return usage_error("--layout %s needs %d ranks, but mpiexec started %d",
                           tsr_layout_format(&o->layout, buf, sizeof buf), tsr_layout_ranks(&o->layout),
                           world_size);
    }
    if (!o->batch)
        o->batch = o->layout.dp;
    if (o->batch % o->layout.dp)
        return usage_error("--batch %d does not split over dp=%d replicas (expected a multiple of %d)", o->batch,
                           o->layout.dp, o->layout.dp);
    if (o->precision == TSR_PRECISION_BF16 && o->device == TSR_DEVICE_CPU)
        return usage_error("--precision bf16 needs --device cuda (the CPU computes in fp32)");
    return 0;
}

/* ---------- the prompt and the tokenizer ---------- */

static tsr_status_t read_file(const char *path, char **out, size_t *len)
{
    struct stat st;
    FILE *f = NULL;
    *out = NULL;
    if (stat(path, &st) != 0)
        return set_app_error(TSR_ERR_IO, "%s: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return set_app_error(TSR_ERR_IO, "%s is not a regular file", path);
    if (!(f = fopen(path, "rb")))
        return set_app_error(TSR_ERR_IO, "%s: %s", path, strerror(errno));
    *out = malloc((size_t)st.st_size + 1);
    *len = *out ? fread(*out, 1, (size_t)st.st_size, f) : 0;
    int bad = !*out || ferror(f);
    fclose(f);
    if (bad)
        return set_app_error(TSR_ERR_IO, "cannot read %s", path);
    (*out)[*len] = '\0';
    return TSR_OK;
}

/* The prompt's token ids, malloc'ed, into *ids and *n. */
static tsr_status_t prompt_ids(const options_t *o, int vocab, int32_t **ids, int *n)
{
    tsr_status_t rc = TSR_OK;
    char *text = NULL;
    size_t len = 0;
    *ids = NULL, *n = 0;
    if (o->prompt_tokens) {
        const char *p = o->prompt_tokens;
        *ids = malloc((strlen(p) / 2 + 1) * sizeof **ids);
        if (!*ids)
            return set_app_error(TSR_ERR_OUT_OF_MEMORY, "no memory for the prompt");
        while (*p) {
            char *end;
            p += strspn(p, ", \t\n");
            if (!*p)
                break;
            errno = 0;
            long v = strtol(p, &end, 10);
            if (end == p || errno || (*end && !strchr(", \t\n", *end)))
                return set_app_error(TSR_ERR_INVALID_ARG, "--prompt-tokens: \"%.*s\" is not a token id",
                                     (int)strcspn(p, ", \t\n"), p);
            if (v < 0 || v >= vocab)
                return set_app_error(TSR_ERR_INVALID_ARG,
                                     "--prompt-tokens: token id %ld is outside the vocabulary (expected 0 to %d)", v,
                                     vocab - 1);
            (*ids)[(*n)++] = (int32_t)v;
            p = end;
        }
    } else {
        if (vocab != 256)
            return set_app_error(TSR_ERR_INVALID_ARG,
                                 "the model's vocabulary has %d tokens, not the 256 bytes a text prompt is read as; "
                                 "give --prompt-tokens", vocab);
        if (o->prompt_file && (rc = read_file(o->prompt_file, &text, &len)) != TSR_OK)
            goto cleanup;
        const char *t = o->prompt_file ? text : o->prompt;
        len = o->prompt_file ? len : strlen(o->prompt);
        *ids = malloc((len + 1) * sizeof **ids);
        if (!*ids) {
            rc = set_app_error(TSR_ERR_OUT_OF_MEMORY, "no memory for the prompt");
            goto cleanup;
        }
        for (size_t i = 0; i < len; i++)
            (*ids)[i] = (unsigned char)t[i];
        *n = (int)len;
    }
    if (*n == 0)
        rc = set_app_error(TSR_ERR_INVALID_ARG, "the prompt is empty (expected at least one token)");
cleanup:
    free(text);
    return rc;
}

/* An llm.c tokenizer: the bytes of each token id. */
typedef struct tokenizer {
    int vocab;
    char **piece;
} tokenizer_t;

static tsr_status_t tokenizer_load(const char *path, int vocab, tokenizer_t *t)
{
    char *buf = NULL;
    size_t len = 0;
    uint32_t h[256];
    tsr_status_t rc = read_file(path, &buf, &len);
    if (rc != TSR_OK)
        return rc;
    if (len < sizeof h) {
        free(buf);
        return set_app_error(TSR_ERR_FORMAT, "%s: %zu bytes, shorter than llm.c's tokenizer header of 1024", path, len);
    }
    memcpy(h, buf, sizeof h);
    if (h[0] != TOKENIZER_MAGIC || (h[1] != 1 && h[1] != 2) || (int)h[2] < vocab) {
        free(buf);
        return set_app_error(TSR_ERR_FORMAT, "%s: magic %u, version %u, %u tokens (expected llm.c's tokenizer: magic "
                             "%u, version 1 or 2, at least the model's %d tokens)", path, h[0], h[1], h[2],
                             TOKENIZER_MAGIC, vocab);
    }
    t->vocab = (int)h[2];
    t->piece = calloc((size_t)t->vocab, sizeof *t->piece);
    size_t at = sizeof h;
    for (int i = 0; t->piece && i < t->vocab; i++) {
        size_t n = at < len ? (unsigned char)buf[at] : 0;
        if (at >= len || at + 1 + n > len || n == 0) {
            free(buf);
            return set_app_error(TSR_ERR_FORMAT, "%s: token %d runs past the end of the file (truncated?)", path, i);
        }
        if ((t->piece[i] = malloc(n + 1))) {
            memcpy(t->piece[i], buf + at + 1, n);
            t->piece[i][n] = '\0';
        }
        at += 1 + n;
    }
    free(buf);
    return t->piece ? TSR_OK : set_app_error(TSR_ERR_OUT_OF_MEMORY, "no memory for the tokenizer");
}

static void tokenizer_free(tokenizer_t *t)
{
    for (int i = 0; t->piece && i < t->vocab; i++)
        free(t->piece[i]);
    free(t->piece);
}

/* Write token ids as text (bytes, or the tokenizer's pieces), JSON-escaped when json. */
static void put_text(FILE *f, const int32_t *ids, int n, const tokenizer_t *tok, int json)
{
    for (int i = 0; i < n; i++) {
        char one[2] = {(char)ids[i], 0};
        const char *s = tok->piece ? (ids[i] < tok->vocab && tok->piece[ids[i]] ? tok->piece[ids[i]] : "") : one;
        size_t len = tok->piece ? strlen(s) : 1;
        for (size_t k = 0; k < len; k++) {
            unsigned char c = (unsigned char)s[k];
            if (!json)
                fputc(c, f);
            else if (c == '"' || c == '\\')
                fprintf(f, "\\%c", c);
            else if (c < 0x20 || c >= 0x7f)
                fprintf(f, "\\u%04x", c);
            else
                fputc(c, f);
        }
    }
}

/* ---------- the run ---------- */

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

/* The checkpoint file --ckpt names: itself, or the latest of a directory (DIR or DIR/latest). */
static tsr_status_t ckpt_path(const char *arg, char *path, size_t len)
{
    struct stat st;
    const char *slash = strrchr(arg, '/');
    if (stat(arg, &st) == 0 && S_ISDIR(st.st_mode))
        return tsr_ckpt_latest(arg, path, len);
    if (strcmp(slash ? slash + 1 : arg, "latest") == 0) {
        char dir[PATH_MAX];
        snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - arg) : 1, slash ? arg : ".");
        return tsr_ckpt_latest(dir, path, len);
    }
    if (snprintf(path, len, "%s", arg) >= (int)len)
        return set_app_error(TSR_ERR_INVALID_ARG, "--ckpt: the path is too long");
    return TSR_OK;
}

/* Every replica's sequences on rank 0 (rank 0 is the first stage's tp rank 0 of replica 0;
 * the first stage's tp ranks 0 of all replicas share its dp communicator). */
static void gather_tokens(tsr_grid_t grid, const int32_t *mine, int count, int len, int32_t *all)
{
    tsr_grid_coords_t at;
    tsr_grid_coords(grid, &at);
    if (at.pp != 0 || at.tp_row != 0 || at.tp_col != 0)
        return;
    MPI_Gather(mine, count * len, MPI_INT32_T, all, count * len, MPI_INT32_T, 0,
               tsr_comm_mpi(tsr_grid_comm(grid, TSR_AXIS_DP)));
}

static int generate(const options_t *o)
{
    tsr_device_t dev = NULL;
    tsr_grid_t grid = NULL;
    tsr_gpt_t gpt = NULL;
    tsr_gpt_infer_t ctx = NULL;
    tokenizer_t tok = {0};
    tsr_gpt_config_t cfg;
    int32_t *prompt = NULL, *seqs = NULL, *all = NULL, *next = NULL;
    float *logits = NULL;
    int status = 1, np = 0, first = 0, count = 0;
    char path[PATH_MAX + NAME_MAX + 2];
    tsr_status_t rc = ckpt_path(o->ckpt, path, sizeof path);
    if (failed(rc, "--ckpt") || failed(tsr_gpt_ckpt_config(path, &cfg), "--ckpt"))
        goto done;
    if (failed(prompt_ids(o, cfg.vocab, &prompt, &np), NULL))
        goto done;
    if (np > cfg.seq)
        rc = set_app_error(TSR_ERR_INVALID_ARG, "the prompt of %d tokens is longer than the model's context of %d", np,
                           cfg.seq);
    else if (o->max_tokens > cfg.seq - np)
        rc = set_app_error(TSR_ERR_INVALID_ARG, "--max-tokens %d after a prompt of %d tokens passes the model's "
                           "context of %d (at most %d)", o->max_tokens, np, cfg.seq, cfg.seq - np);
    if (failed(rc, NULL))
        goto done;
    if (o->tokenizer && failed(tokenizer_load(o->tokenizer, cfg.vocab, &tok), "--tokenizer"))
        goto done;
    if (failed(open_device(o->device, &dev), "--device") ||
        failed(tsr_grid_create(MPI_COMM_WORLD, &o->layout, &grid), "--layout"))
        goto done;
    tsr_gpt_options_t go = TSR_GPT_OPTIONS_INIT;
    tsr_zero_config_t z = TSR_ZERO_CONFIG_INIT;
    go.batch = o->batch;
    z.precision = o->precision;
    if (failed(tsr_gpt_create(grid, dev, &cfg, &go, &z, &gpt), NULL) || failed(tsr_gpt_ckpt_load(gpt, &z, path), path) ||
        failed(tsr_gpt_infer_create(gpt, o->batch, &ctx), NULL))
        goto done;
    tsr_gpt_infer_slice(ctx, &first, &count);
    int len = np + o->max_tokens;
    seqs = malloc(sizeof *seqs * (size_t)count * len);
    next = malloc(sizeof *next * (size_t)count * np);
    logits = malloc(sizeof *logits * (size_t)count * cfg.vocab);
    all = malloc(sizeof *all * (size_t)o->batch * len);
    if (failed(seqs && next && logits && all ? TSR_OK : set_app_error(TSR_ERR_OUT_OF_MEMORY, "no memory"), NULL))
        goto done;
    for (int i = 0; i < count; i++) {
        memcpy(seqs + (size_t)i * len, prompt, sizeof *prompt * np);
        memcpy(next + (size_t)i * np, prompt, sizeof *prompt * np);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    double t0 = MPI_Wtime(), t1 = t0;
    for (int p = np, n = np; p < len; p++, n = 1) {
        rc = tsr_gpt_infer_step(ctx, n, next, 0, logits);
        for (int i = 0; i < count && rc == TSR_OK; i++)
            rc = tsr_gpt_sample(&o->sampler, logits + (size_t)i * cfg.vocab, cfg.vocab, (uint64_t)(first + i),
                                (uint64_t)p, &seqs[(size_t)i * len + p]);
        for (int i = 0; i < count; i++)
            next[i] = seqs[(size_t)i * len + p];
        if (failed(rc, NULL))
            goto done;
        if (p == np)
            t1 = MPI_Wtime();
    }
    double t2 = MPI_Wtime();
    gather_tokens(grid, seqs, count, len, all);
    if (world_rank == 0) {
        double prompt_tps = (double)o->batch * np / (t1 - t0);
        double decode_tps = o->max_tokens > 1 ? (double)o->batch * (o->max_tokens - 1) / (t2 - t1) : 0.0;
        int text = cfg.vocab == 256 || tok.piece;
        if (o->json) {
            printf("{\"prompt_tokens\":%d,\"max_tokens\":%d,\"batch\":%d,\"temperature\":%g,\"top_k\":%d,"
                   "\"top_p\":%g,\"seed\":%llu,\"sequences\":[",
                   np, o->max_tokens, o->batch, (double)o->sampler.temperature, o->sampler.top_k,
                   (double)o->sampler.top_p, (unsigned long long)o->sampler.seed);
            for (int b = 0; b < o->batch; b++) {
                const int32_t *s = all + (size_t)b * len;
                printf("%s{\"tokens\":[", b ? "," : "");
                for (int i = np; i < len; i++)
                    printf("%s%d", i > np ? "," : "", s[i]);
                printf("]");
                if (text) {
                    printf(",\"text\":\"");
                    put_text(stdout, s + np, o->max_tokens, &tok, 1);
                    printf("\"");
                }
                printf("}");
            }
            printf("],\"prompt_tokens_per_s\":%.1f,\"decode_tokens_per_s\":%.1f}\n", prompt_tps, decode_tps);
        } else {
            for (int b = 0; b < o->batch; b++) {
                const int32_t *s = all + (size_t)b * len;
                if (text) {
                    put_text(stdout, s, len, &tok, 0);
                } else {
                    for (int i = 0; i < len; i++)
                        printf("%s%d", i ? " " : "", s[i]);
                }
                putchar('\n');
            }
            fprintf(stderr, "tsr-generate: prompt %d x %d tokens at %.1f tokens/s, %d x %d tokens decoded at %.1f "
                    "tokens/s\n", o->batch, np, prompt_tps, o->batch, o->max_tokens - 1, decode_tps);
        }
        fflush(stdout);
    }
    status = 0;
done:
    free(prompt);
    free(seqs);
    free(next);
    free(logits);
    free(all);
    tokenizer_free(&tok);
    tsr_gpt_infer_destroy(&ctx);
    tsr_gpt_destroy(&gpt);
    tsr_grid_destroy(&grid);
    tsr_device_destroy(&dev);
    return status;
}

int main(int argc, char **argv)
{
    options_t o = {0};
    tsr_layout_t lay = TSR_LAYOUT_INIT;
    tsr_gpt_sampler_t s = TSR_GPT_SAMPLER_INIT;
    tsr_mem_keep_freed_host_memory(); /* before MPI_Init: MPI's buffers too */
    MPI_Init(&argc, &argv);
    MPI_Comm_rank(MPI_COMM_WORLD, &world_rank);
    MPI_Comm_size(MPI_COMM_WORLD, &world_size);
    o.layout = lay, o.sampler = s;
    o.max_tokens = 64;
    o.device = TSR_DEVICE_CPU;
    o.precision = TSR_PRECISION_FP32;
    int status = parse_options(argc, argv, &o);
    if (status == 0)
        status = generate(&o);
    MPI_Finalize();
    return status < 0 ? 0 : status;
}
