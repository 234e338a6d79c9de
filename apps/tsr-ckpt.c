/*
 * tsr-ckpt: inspect Tessera checkpoints, and bring GPT-2 weights in and out, without mpiexec.
 *
 *   tsr-ckpt info FILE|DIR        the metadata: root, /config and /layout attributes
 *   tsr-ckpt list FILE|DIR        every dataset with its global shape
 *   tsr-ckpt verify FILE|DIR      every checksum, every value finite, the file complete for
 *                                 its own /config; exit 1 naming each thing that fails
 *   tsr-ckpt diff FILE1 FILE2     per dataset, the largest absolute and relative difference
 *   tsr-ckpt import FORMAT IN DIR     llm.c's or Hugging Face's GPT-2 weights IN as the
 *                                 checkpoint DIR/step_0.h5 (fresh optimizer state)
 *   tsr-ckpt export FORMAT CKPT OUT   the parameters of a checkpoint as such a weights file
 *
 * A directory stands for the checkpoint its `latest` file names. The formats and what is
 * checked: doc/model.md ("Weights exchange") and lib/model/weights.c.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <tessera.h>

#include "app.h"

static const char usage[] =
    "Usage: tsr-ckpt info FILE|DIR\n"
    "       tsr-ckpt list FILE|DIR\n"
    "       tsr-ckpt verify FILE|DIR\n"
    "       tsr-ckpt diff FILE1|DIR1 FILE2|DIR2\n"
    "       tsr-ckpt import llmc|hf IN DIR [--heads N]\n"
    "       tsr-ckpt export llmc|hf FILE|DIR OUT [--padded-vocab N] [--dtype fp32|bf16]\n"
    "Inspect Tessera checkpoints (parallel HDF5 files). A directory means its latest checkpoint.\n"
    "import reads GPT-2 weights, llm.c's model file (llmc: gpt2_124M.bin, fp32 or bf16) or Hugging\n"
    "Face's safetensors (hf: model.safetensors, F32, BF16 or F16), and writes them as the checkpoint\n"
    "DIR/step_0.h5 of the model their shapes say, with a fresh optimizer, which tsr-train --resume and\n"
    "tsr-generate --ckpt read on any layout; DIR must hold no checkpoint yet. export writes the\n"
    "parameters of any checkpoint as such a file (safetensors in F32).\n"
    "Options:\n"
    "  --heads N          import hf: attention heads (the file does not say; default dim / 64)\n"
    "  --padded-vocab N   export llmc: rows of wte in the file (default: the vocabulary rounded\n"
    "                     up to a multiple of 128, as llm.c pads); the padding rows are zero\n"
    "  --dtype fp32|bf16  export llmc: fp32 (version 3, default) or bf16 (version 5, rounded to\n"
    "                     nearest even)\n"
    "  --help, --version\n";

/* Open FILE, or the checkpoint DIR/latest names; prints the one-line reason on failure. The
 * file opened goes to *opened (malloc'ed) when it is not NULL. */
static tsr_ckpt_reader_t open_checkpoint(tsr_comm_t comm, const char *arg, char **opened)
{
    size_t len = strlen(arg) + NAME_MAX + 2; /* room for DIR/<the name latest holds> */
    char *path = malloc(len);
    struct stat st;
    tsr_ckpt_reader_t r = NULL;
    if (!path) {
        fprintf(stderr, "tsr-ckpt: no memory for a path\n");
        return NULL;
    }
    snprintf(path, len, "%s", arg);
    if (stat(arg, &st) == 0 && S_ISDIR(st.st_mode) && tsr_ckpt_latest(arg, path, len) != TSR_OK)
        fprintf(stderr, "tsr-ckpt: %s\n", tsr_last_error());
    else if (tsr_ckpt_reader_open(comm, path, &r) != TSR_OK)
        fprintf(stderr, "tsr-ckpt: %s\n", tsr_last_error());
    if (r && opened) {
        *opened = path;
        path = NULL;
    }
    free(path);
    return r;
}

static void print_attr(const char *name, const char *value, void *ctx)
{
    printf("  %-*s %s\n", *(int *)ctx, name, value);
}

static int cmd_info(tsr_ckpt_reader_t r)
{
    static const char *const groups[] = {"/", "/config", "/layout"};
    int width = 16;
    for (size_t i = 0; i < sizeof groups / sizeof groups[0]; i++) {
        printf("%s\n", groups[i]);
        if (tsr_ckpt_attrs(r, groups[i], print_attr, &width) != TSR_OK)
            printf("  (none)\n");
    }
    return 0;
}

static int cmd_list(tsr_ckpt_reader_t r)
{
    tsr_ckpt_dataset_info_t *list;
    size_t n;
    if (tsr_ckpt_list(r, &list, &n) != TSR_OK) {
        fprintf(stderr, "tsr-ckpt: %s\n", tsr_last_error());
        return 1;
    }
    for (size_t i = 0; i < n; i++) {
        char shape[64];
        printf("%-40s %-7s %s\n", list[i].name, list[i].type,
               tsr_ckpt_format_shape(list[i].ndim, list[i].dims, shape, sizeof shape));
    }
    free(list);
    return 0;
}

/* Print a failure and count it. */
static void failure(size_t *failed)
{
    fprintf(stderr, "tsr-ckpt: %s\n", tsr_last_error());
    (*failed)++;
}

/* Whether the file says which model it holds (tsr-train's checkpoints do; tsr-bench's not). */
static int has_model(tsr_ckpt_reader_t r)
{
    int64_t layers;
    int has = tsr_ckpt_get_i64(r, "/config", "n_layer", &layers) == TSR_OK;
    tsr_clear_error();
    return has;
}

/* Everything tsr-train's --resume relies on: checksums, finite values, a consistent state, a
 * complete model. Every dataset is checked; each failure is one line. */
static int cmd_verify(tsr_ckpt_reader_t r)
{
    tsr_ckpt_dataset_info_t *list;
    size_t n, failed = 0;
    if (tsr_ckpt_verify_metadata(r) != TSR_OK)
        failure(&failed);
    if (tsr_ckpt_list(r, &list, &n) != TSR_OK) {
        failure(&failed);
        return 1;
    }
    for (size_t i = 0; i < n; i++)
        if (tsr_ckpt_verify_dataset(r, list[i].name) != TSR_OK)
            failure(&failed);
    free(list);
    if (tsr_ckpt_verify_state(r) != TSR_OK)
        failure(&failed);
    if (has_model(r) && tsr_gpt_ckpt_verify(r, NULL) != TSR_OK)
        failure(&failed);
    if (failed)
        return 1;
    printf("%zu datasets verified\n", n);
    return 0;
}

/* Read a whole fp32 dataset into a new array. */
static float *read_whole(tsr_ckpt_reader_t r, const tsr_ckpt_dataset_info_t *d)
{
    int64_t rows = d->ndim == 2 ? d->dims[0] : 1, cols = d->ndim == 2 ? d->dims[1] : d->dims[0];
    tsr_ckpt_piece_t p = tsr_ckpt_block(0, rows, 0, cols);
    float *v = malloc((size_t)(rows * cols > 0 ? rows * cols : 1) * sizeof *v);
    if (v && tsr_ckpt_read_f32(r, d->name, d->ndim, d->dims, &p, v) != TSR_OK) {
        fprintf(stderr, "tsr-ckpt: %s\n", tsr_last_error());
        free(v);
        return NULL;
    }
    return v;
}

static int cmd_diff(tsr_ckpt_reader_t a, tsr_ckpt_reader_t b)
{
    tsr_ckpt_dataset_info_t *la, *lb;
    size_t na, nb;
    int status = 0;
    if (tsr_ckpt_list(a, &la, &na) != TSR_OK || tsr_ckpt_list(b, &lb, &nb) != TSR_OK) {
        fprintf(stderr, "tsr-ckpt: %s\n", tsr_last_error());
        return 2;
    }
    printf("%-40s %14s %14s\n", "dataset", "max_abs_diff", "max_rel_diff");
    for (size_t i = 0; i < na; i++) {
        if (!la[i].is_float)
            continue;
        const tsr_ckpt_dataset_info_t *other = NULL;
        for (size_t j = 0; j < nb && !other; j++)
            if (strcmp(la[i].name, lb[j].name) == 0)
                other = &lb[j];
        if (!other || other->ndim != la[i].ndim || other->dims[0] != la[i].dims[0] ||
            other->dims[1] != la[i].dims[1]) {
            printf("%-40s %s\n", la[i].name, other ? "shapes differ" : "only in the first");
            status = 1;
            continue;
        }
        float *x = read_whole(a, &la[i]), *y = read_whole(b, other);
        if (!x || !y) {
            free(x);
            free(y);
            return 2;
        }
        size_t n = (size_t)(la[i].dims[0] * (la[i].ndim == 2 ? la[i].dims[1] : 1));
        double abs_max = 0, rel_max = 0;
        for (size_t k = 0; k < n; k++) {
            double d = fabs((double)x[k] - (double)y[k]), m = fmax(fabs((double)x[k]), fabs((double)y[k]));
            abs_max = fmax(abs_max, d);
            if (m > 0)
                rel_max = fmax(rel_max, d / m);
        }
        printf("%-40s %14.6g %14.6g\n", la[i].name, abs_max, rel_max);
        status |= abs_max > 0;
        free(x);
        free(y);
    }
    for (size_t j = 0; j < nb; j++) {
        int found = 0;
        for (size_t i = 0; i < na && !found; i++)
            found = strcmp(la[i].name, lb[j].name) == 0;
        if (!found && lb[j].is_float) {
            printf("%-40s only in the second\n", lb[j].name);
            status = 1;
        }
    }
    free(la);
    free(lb);
    return status;
}

/* What import and export take besides their arguments. */
typedef struct weights_args {
    tsr_gpt_weights_format_t format;
    tsr_gpt_weights_options_t opts;
    int heads_given, vocab_given, dtype_given;
} weights_args_t;

/* Print the one-line reason of a failure; returns 1. */
static int fail(void)
{
    fprintf(stderr, "tsr-ckpt: %s\n", tsr_last_error());
    return 1;
}

/* A directory import may write into: missing (it is created), or a directory without a
 * checkpoint, so that none is replaced. */
static int check_import_dir(const char *dir)
{
    struct stat st;
    if (stat(dir, &st) != 0)
        return errno == ENOENT ? 0 : (fprintf(stderr, "tsr-ckpt: %s: %s\n", dir, strerror(errno)), 1);
    if (!S_ISDIR(st.st_mode)) {
        fprintf(stderr, "tsr-ckpt: %s is not a directory (expected the checkpoint directory to import into)\n", dir);
        return 1;
    }
    static const char *const taken[] = {"latest", "step_0.h5"};
    for (size_t i = 0; i < sizeof taken / sizeof *taken; i++) {
        size_t len = strlen(dir) + strlen(taken[i]) + 2;
        char *path = malloc(len);
        int exists = path && (snprintf(path, len, "%s/%s", dir, taken[i]), stat(path, &st) == 0);
        free(path);
        if (exists) {
            fprintf(stderr, "tsr-ckpt: %s already holds checkpoints (%s/%s); import into a new or empty directory\n",
                    dir, dir, taken[i]);
            return 1;
        }
    }
    return 0;
}

/* import FORMAT IN DIR: the weights as DIR/step_0.h5, saved as tsr-train saves a model (from
 * a model of the file's shapes on this one rank, its parameters overwritten). */
static int cmd_import(const weights_args_t *a, const char *in, const char *dir)
{
    tsr_gpt_config_t cfg;
    float *params = NULL;
    tsr_device_t dev = NULL;
    tsr_grid_t grid = NULL;
    tsr_gpt_t gpt = NULL;
    tsr_ckpt_lock_t lock = NULL;
    tsr_ckpt_writer_t w = NULL;
    tsr_layout_t layout = TSR_LAYOUT_INIT;
    tsr_gpt_options_t go = TSR_GPT_OPTIONS_INIT;
    tsr_zero_config_t z = train_zero_defaults();
    char model[TSR_GPT_CONFIG_STRLEN], from[PATH_MAX + 16];
    int status = 1;
    if (check_import_dir(dir))
        return 1;
    if (tsr_gpt_weights_read(a->format, in, &a->opts, &cfg, &params) != TSR_OK)
        return fail();
    go.batch = 1; /* the model's buffers for one sequence: import runs no step */
    snprintf(from, sizeof from, "%s %s", tsr_gpt_weights_format_name(a->format), in);
    if (tsr_device_create(TSR_DEVICE_CPU, 0, &dev) != TSR_OK || tsr_grid_create(MPI_COMM_SELF, &layout, &grid) != TSR_OK ||
        tsr_ckpt_lock(tsr_grid_comm(grid, TSR_AXIS_WORLD), dir, &lock) != TSR_OK ||
        tsr_gpt_create(grid, dev, &cfg, &go, &z, &gpt) != TSR_OK || tsr_gpt_set_params(gpt, params) != TSR_OK ||
        tsr_ckpt_writer_create(tsr_grid_comm(grid, TSR_AXIS_WORLD), dir, 0, &w) != TSR_OK ||
        tsr_gpt_ckpt_save(w, grid, tsr_gpt_optimizer(gpt), &z, &cfg, &go, 0) != TSR_OK || tsr_ckpt_set_str(w, "/", "imported_from", from) != TSR_OK ||
        tsr_ckpt_commit(&w, 0) != TSR_OK) {
        status = fail();
        tsr_ckpt_abort(&w);
    } else {
        printf("imported %s into %s/step_0.h5: %s, %lld parameters%s\n", from, dir,
               tsr_gpt_config_format(&cfg, model, sizeof model), (long long)tsr_gpt_param_count(&cfg),
               a->format == TSR_GPT_WEIGHTS_LLMC ? " (the padding rows of wte, if any, are ignored)" : "");
        status = 0;
    }
    tsr_ckpt_unlock(&lock);
    tsr_gpt_destroy(&gpt);
    tsr_grid_destroy(&grid);
    tsr_device_destroy(&dev);
    free(params);
    return status;
}

/* export FORMAT CKPT OUT: the checkpoint's parameters as a weights file. */
static int cmd_export(const weights_args_t *a, tsr_comm_t self, const char *ckpt, const char *out)
{
    tsr_gpt_config_t cfg;
    float *params = NULL;
    char *path = NULL, model[TSR_GPT_CONFIG_STRLEN];
    struct stat in_st, out_st;
    int status = 1;
    tsr_ckpt_reader_t r = open_checkpoint(self, ckpt, &path);
    if (!r)
        return 1;
    if (stat(path, &in_st) == 0 && stat(out, &out_st) == 0 && in_st.st_dev == out_st.st_dev &&
        in_st.st_ino == out_st.st_ino)
        fprintf(stderr, "tsr-ckpt: %s is the checkpoint being exported (expected another file to write)\n", out);
    else if (tsr_gpt_ckpt_read_params(r, &cfg, &params) != TSR_OK ||
             tsr_gpt_weights_write(a->format, out, &a->opts, &cfg, params) != TSR_OK)
        status = fail();
    else
        status = 0;
    if (status == 0)
        printf("exported %s to %s (%s): %s\n", path, out,
               a->format == TSR_GPT_WEIGHTS_HF ? "safetensors, F32"
               : a->opts.dtype == TSR_DTYPE_BF16 ? "llm.c model file, version 5, bf16"
                                                  : "llm.c model file, version 3, fp32",
               tsr_gpt_config_format(&cfg, model, sizeof model));
    tsr_ckpt_reader_close(&r);
    free(path);
    free(params);
    return status;
}

/* A positive integer option value; returns 0, or prints the usage error and returns 2. */
static int parse_count(const char *opt, const char *text, int *out)
{
    char *end = NULL;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (errno || end == text || *end || v < 1 || v > INT_MAX) {
        fprintf(stderr, "tsr-ckpt: %s %s is not a positive integer (try --help)\n", opt, text);
        return 2;
    }
    *out = (int)v;
    return 0;
}

/* The options of import and export, each only where it means something. */
static int check_weights_args(const char *cmd, const char *format, weights_args_t *a)
{
    int import = strcmp(cmd, "import") == 0;
    if (tsr_gpt_weights_format_parse(format, &a->format) != TSR_OK) {
        fprintf(stderr, "tsr-ckpt: %s (try --help)\n", tsr_last_error());
        return 2;
    }
    const char *misplaced = a->heads_given && !(import && a->format == TSR_GPT_WEIGHTS_HF) ? "--heads"
                            : a->vocab_given && !(!import && a->format == TSR_GPT_WEIGHTS_LLMC) ? "--padded-vocab"
                            : a->dtype_given && !(!import && a->format == TSR_GPT_WEIGHTS_LLMC) ? "--dtype"
                                                                                               : NULL;
    if (misplaced) {
        fprintf(stderr, "tsr-ckpt: %s is an option of %s (try --help)\n", misplaced,
                strcmp(misplaced, "--heads") == 0 ? "import hf" : "export llmc");
        return 2;
    }
    return 0;
}

int main(int argc, char **argv)
{
    enum { O_HEADS = 256, O_PADDED_VOCAB, O_DTYPE };
    static const struct option options[] = {{"help", no_argument, 0, 'h'},
                                            {"version", no_argument, 0, 'V'},
                                            {"heads", required_argument, 0, O_HEADS},
                                            {"padded-vocab", required_argument, 0, O_PADDED_VOCAB},
                                            {"dtype", required_argument, 0, O_DTYPE},
                                            {0}};
    weights_args_t wa = {TSR_GPT_WEIGHTS_LLMC, TSR_GPT_WEIGHTS_OPTIONS_INIT, 0, 0, 0};
    for (int c; (c = getopt_long(argc, argv, "hV", options, NULL)) != -1;) {
        if (c == 'h') {
            fputs(usage, stdout);
            return 0;
        }
        if (c == 'V') {
            printf("tsr-ckpt (%s)\n", tsr_build_info());
            return 0;
        }
        if (c == O_HEADS) {
            if (parse_count("--heads", optarg, &wa.opts.heads))
                return 2;
            wa.heads_given = 1;
        } else if (c == O_PADDED_VOCAB) {
            if (parse_count("--padded-vocab", optarg, &wa.opts.padded_vocab))
                return 2;
            wa.vocab_given = 1;
        } else if (c == O_DTYPE) {
            if (strcmp(optarg, "fp32") && strcmp(optarg, "bf16")) {
                fprintf(stderr, "tsr-ckpt: --dtype %s: expected fp32 or bf16 (try --help)\n", optarg);
                return 2;
            }
            wa.opts.dtype = strcmp(optarg, "bf16") == 0 ? TSR_DTYPE_BF16 : TSR_DTYPE_F32;
            wa.dtype_given = 1;
        } else {
            fputs(usage, stderr);
            return 2;
        }
    }
    const char *cmd = optind < argc ? argv[optind] : NULL;
    int nargs = argc - optind - 1;
    int two = cmd && strcmp(cmd, "diff") == 0;
    int weights = cmd && (strcmp(cmd, "import") == 0 || strcmp(cmd, "export") == 0);
    if (!cmd || (strcmp(cmd, "info") && strcmp(cmd, "list") && strcmp(cmd, "verify") && !two && !weights) ||
        nargs != (weights ? 3 : two ? 2 : 1)) {
        fprintf(stderr, "tsr-ckpt: %s\n%s",
                !cmd ? "no command given"
                     : "expected info|list|verify FILE, diff FILE1 FILE2, import FORMAT IN DIR or export FORMAT CKPT OUT",
                usage);
        return 2;
    }
    if (!weights && (wa.heads_given || wa.vocab_given || wa.dtype_given)) {
        fprintf(stderr, "tsr-ckpt: --heads, --padded-vocab and --dtype are options of import and export (try --help)\n");
        return 2;
    }
    int bad = weights ? check_weights_args(cmd, argv[optind + 1], &wa) : 0;
    if (bad)
        return bad;

    MPI_Init(&argc, &argv);
    tsr_comm_t self = NULL;
    int status = 2;
    tsr_ckpt_reader_t r = NULL, r2 = NULL;
    if (tsr_comm_create(MPI_COMM_SELF, &self) != TSR_OK) {
        fprintf(stderr, "tsr-ckpt: %s\n", tsr_last_error());
    } else if (weights) {
        status = strcmp(cmd, "import") == 0 ? cmd_import(&wa, argv[optind + 2], argv[optind + 3])
                                            : cmd_export(&wa, self, argv[optind + 2], argv[optind + 3]);
    } else if ((r = open_checkpoint(self, argv[optind + 1], NULL)) != NULL &&
               (!two || (r2 = open_checkpoint(self, argv[optind + 2], NULL)) != NULL)) {
        if (strcmp(cmd, "info") == 0)
            status = cmd_info(r);
        else if (strcmp(cmd, "list") == 0)
            status = cmd_list(r);
        else if (strcmp(cmd, "verify") == 0)
            status = cmd_verify(r);
        else
            status = cmd_diff(r, r2);
    }
    tsr_ckpt_reader_close(&r2);
    tsr_ckpt_reader_close(&r);
    tsr_comm_destroy(&self);
    MPI_Finalize();
    return status;
}
