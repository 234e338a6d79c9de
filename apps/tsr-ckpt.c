/*
 * tsr-ckpt: inspect Tessera checkpoints without mpiexec.
 *
 *   tsr-ckpt info FILE|DIR        the metadata: root, /config and /layout attributes
 *   tsr-ckpt list FILE|DIR        every dataset with its global shape
 *   tsr-ckpt verify FILE|DIR      every checksum, every value finite, the file complete for
 *                                 its own /config; exit 1 naming each thing that fails
 *   tsr-ckpt diff FILE1 FILE2     per dataset, the largest absolute and relative difference
 *
 * A directory stands for the checkpoint its `latest` file names.
 */
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <tessera.h>

static const char usage[] =
    "Usage: tsr-ckpt info FILE|DIR\n"
    "       tsr-ckpt list FILE|DIR\n"
    "       tsr-ckpt verify FILE|DIR\n"
    "       tsr-ckpt diff FILE1|DIR1 FILE2|DIR2\n"
    "Inspect Tessera checkpoints (parallel HDF5 files). A directory means its latest checkpoint.\n"
    "Options: --help, --version.\n";

/* Open FILE, or the checkpoint DIR/latest names; prints the one-line reason on failure. */
static tsr_ckpt_reader_t open_checkpoint(tsr_comm_t comm, const char *arg)
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

int main(int argc, char **argv)
{
    static const struct option options[] = {{"help", no_argument, 0, 'h'}, {"version", no_argument, 0, 'V'}, {0}};
    for (int c; (c = getopt_long(argc, argv, "hV", options, NULL)) != -1;) {
        if (c == 'h') {
            fputs(usage, stdout);
            return 0;
        }
        if (c == 'V') {
            printf("tsr-ckpt (%s)\n", tsr_build_info());
            return 0;
        }
        fputs(usage, stderr);
        return 2;
    }
    const char *cmd = optind < argc ? argv[optind] : NULL;
    int nargs = argc - optind - 1;
    int two = cmd && strcmp(cmd, "diff") == 0;
    if (!cmd || (strcmp(cmd, "info") && strcmp(cmd, "list") && strcmp(cmd, "verify") && !two) ||
        nargs != (two ? 2 : 1)) {
        fprintf(stderr, "tsr-ckpt: %s\n%s", !cmd ? "no command given" : "expected info|list|verify FILE or diff FILE1 FILE2",
                usage);
        return 2;
    }

    MPI_Init(&argc, &argv);
    tsr_comm_t self = NULL;
    int status = 2;
    tsr_ckpt_reader_t r = NULL, r2 = NULL;
    if (tsr_comm_create(MPI_COMM_SELF, &self) != TSR_OK) {
        fprintf(stderr, "tsr-ckpt: %s\n", tsr_last_error());
    } else if ((r = open_checkpoint(self, argv[optind + 1])) != NULL &&
               (!two || (r2 = open_checkpoint(self, argv[optind + 2])) != NULL)) {
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
