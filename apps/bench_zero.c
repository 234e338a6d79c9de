/*
 * bench_zero.c: tsr-bench zero. Per-rank memory of ZeRO stages 0-3 at the current dp size
 * (all ranks data-parallel), measured by the tracked allocator, next to the ZeRO formulas.
 *
 * The model is --layers layers of a --width x --width weight and a bias, Ψ parameters. One
 * training step runs the way a model drives the optimizer (gather and prefetch, gradient
 * begin/ready per layer, release); bytes_* are the allocator's current bytes after the step
 * (the steady state), peak_* its peaks during the step. Formulas, in bytes per rank, N = dp:
 *   params  4Ψ (stages 0-2) or 4Ψ/N (stage 3), plus the fp32 master copy below fp32:
 *           4Ψ in stage 0, 4Ψ/N from stage 1 on (it is sharded like the optimizer state)
 *   grads   4Ψ (stages 0-1) or 4Ψ/N (stages 2-3)
 *   optim   8Ψ (AdamW: m, v) or 4Ψ (SGD momentum) in stage 0, divided by N from stage 1 on
 * On the CPU the low-precision working copy is stored as fp32 (values rounded to bf16), so
 * it counts 4 bytes per element where a GPU would count 2.
 */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench.h"

typedef struct opts {
    int layers, width, json, stage;
    tsr_optim_kind_t optim;
    tsr_precision_t precision;
} opts_t;

static void usage(void)
{
    printf("usage: tsr-bench zero [--layers L] [--width H] [--optim adamw|sgd] [--precision fp32|bf16]\n"
           "                      [--stage S] [--json] [--help]\n"
           "Per-rank bytes of params, grads and optimizer state for ZeRO stages 0-3 (or --stage S)\n"
           "at dp = number of ranks, measured by the tracked allocator, next to the ZeRO formulas.\n"
           "The model: L layers (default 4) of an H x H weight and a bias (default H = 256).\n");
}

static int parse(int argc, char **argv, opts_t *o)
{
    static const struct option longopts[] = {
        {"layers", required_argument, NULL, 'l'}, {"width", required_argument, NULL, 'w'},
        {"optim", required_argument, NULL, 'o'},  {"precision", required_argument, NULL, 'p'},
        {"stage", required_argument, NULL, 's'},  {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0},
    };
    *o = (opts_t){4, 256, 0, -1, TSR_OPTIM_ADAMW, TSR_PRECISION_FP32};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (c) {
        case 'l':
            if (bench_int("zero", "--layers", optarg, 1, 4096, &o->layers))
                return 1;
            break;
        case 'w':
            if (bench_int("zero", "--width", optarg, 1, 1 << 16, &o->width))
                return 1;
            break;
        case 's':
            if (bench_int("zero", "--stage", optarg, 0, 3, &o->stage))
                return 1;
            break;
        case 'j': o->json = 1; break;
        case 'o':
            if (strcmp(optarg, "adamw") && strcmp(optarg, "sgd"))
                return bench_fail("zero", "--optim must be adamw or sgd, got '%s'", optarg);
            o->optim = strcmp(optarg, "sgd") ? TSR_OPTIM_ADAMW : TSR_OPTIM_SGD;
            break;
        case 'p':
            if (strcmp(optarg, "fp32") && strcmp(optarg, "bf16"))
                return bench_fail("zero", "--precision must be fp32 or bf16, got '%s'", optarg);
            o->precision = strcmp(optarg, "bf16") ? TSR_PRECISION_FP32 : TSR_PRECISION_BF16;
            break;
        case 'h':
            if (bench_rank() == 0)
                usage();
            return 0;
        default: return bench_fail("zero", "unknown option (see --help)");
        }
    }
    if (optind < argc)
        return bench_fail("zero", "unexpected argument '%s'", argv[optind]);
    if (o->layers < 1 || o->width < 1 || o->stage < -1 || o->stage > 3)
        return bench_fail("zero", "need --layers >= 1, --width >= 1 and --stage 0..3");
    return -1;
}

/* Register, commit and initialize the model. */
static tsr_status_t build(tsr_grid_t grid, tsr_device_t dev, const opts_t *o, int stage, tsr_zero_t *z)
{
    tsr_zero_config_t cfg = TSR_ZERO_CONFIG_INIT;
    cfg.stage = stage;
    cfg.optim = o->optim;
    cfg.momentum = 0.9f;
    cfg.precision = o->precision;
    tsr_status_t st = tsr_zero_create(grid, dev, &cfg, z);
    char name[32];
    for (int k = 0; k < 2 * o->layers && st == TSR_OK; k++) {
        tsr_zero_tensor_t t = TSR_ZERO_TENSOR_INIT;
        snprintf(name, sizeof name, "l%d.%s", k / 2, k % 2 ? "b" : "w");
        t.name = name;
        t.rows = t.local_rows = k % 2 ? 1 : o->width;
        t.cols = t.local_cols = o->width;
        t.layer = k / 2;
        t.flags = k % 2 ? TSR_ZERO_NO_DECAY : 0;
        st = tsr_zero_register(*z, &t, NULL);
    }
    if (st == TSR_OK)
        st = tsr_zero_commit(*z);
    for (int k = 0; k < 2 * o->layers && st == TSR_OK; k++) {
        tsr_zero_piece_t pc;
        if ((st = tsr_zero_piece(*z, k, TSR_ZERO_PARAM, &pc)) == TSR_OK && pc.end > pc.begin)
            tsr_rng_fill_uniform(1, (uint64_t)k, pc.begin, pc.end - pc.begin, -0.1f, 0.1f, pc.data);
    }
    return st == TSR_OK ? tsr_zero_sync_params(*z) : st;
}

/* One step as a model drives it; the "gradient" is a function of the parameter. */
static tsr_status_t one_step(tsr_zero_t z, int layers)
{
    tsr_status_t st = TSR_OK;
    for (int l = 0; l < layers && st == TSR_OK; l++) {
        st = tsr_zero_gather(z, l);
        if (st == TSR_OK)
            st = tsr_zero_prefetch(z, l + 1);
        if (st == TSR_OK)
            st = tsr_zero_release(z, l);
    }
    for (int l = layers - 1; l >= 0 && st == TSR_OK; l--) {
        st = tsr_zero_gather(z, l);
        if (st == TSR_OK)
            st = tsr_zero_grad_begin(z, l);
        for (int k = 2 * l; k < 2 * l + 2 && st == TSR_OK; k++) {
            float *p = NULL, *g = NULL;
            tsr_zero_tensor_t t;
            st = tsr_zero_view(z, k, &p, &g);
            tsr_zero_tensor_desc(z, k, &t);
            for (long i = 0; st == TSR_OK && i < t.local_rows * t.local_cols; i++)
                g[i] += 0.5f * p[i];
        }
        if (st == TSR_OK)
            st = tsr_zero_grad_ready(z, l);
        if (st == TSR_OK)
            st = tsr_zero_release(z, l);
    }
    return st == TSR_OK ? tsr_zero_step(z, NULL) : st;
}

static void report(const opts_t *o, int stage, int N, size_t psi, const tsr_mem_stats_t *ms, double ms_step)
{
    double per = (double)psi / N;
    double master = o->precision == TSR_PRECISION_FP32 ? 0 : stage == 0 ? 4.0 * psi : 4.0 * per;
    double fp = (stage == 3 ? 4.0 * per : 4.0 * psi) + master, fg = stage >= 2 ? 4.0 * per : 4.0 * psi;
    double fo = (o->optim == TSR_OPTIM_ADAMW ? 8.0 : 4.0) * (stage >= 1 ? per : (double)psi);
    const uint64_t *cur = ms->current, *pk = ms->peak;
    if (o->json) {
        printf("{\"bench\":\"zero\",\"stage\":%d,\"dp\":%d,\"optim\":\"%s\",\"precision\":\"%s\",\"layers\":%d,"
               "\"width\":%d,\"params\":%zu,\"bytes_params\":%llu,\"bytes_grads\":%llu,\"bytes_optim\":%llu,"
               "\"peak_params\":%llu,\"peak_grads\":%llu,\"peak_optim\":%llu,\"peak_comm\":%llu,"
               "\"formula_params\":%.0f,\"formula_grads\":%.0f,\"formula_optim\":%.0f,\"step_ms\":%.3f}\n",
               stage, N, o->optim == TSR_OPTIM_ADAMW ? "adamw" : "sgd",
               o->precision == TSR_PRECISION_FP32 ? "fp32" : "bf16", o->layers, o->width, psi,
               (unsigned long long)cur[TSR_MEM_PARAMS], (unsigned long long)cur[TSR_MEM_GRADS],
               (unsigned long long)cur[TSR_MEM_OPTIM], (unsigned long long)pk[TSR_MEM_PARAMS],
               (unsigned long long)pk[TSR_MEM_GRADS], (unsigned long long)pk[TSR_MEM_OPTIM],
               (unsigned long long)pk[TSR_MEM_COMM], fp, fg, fo, ms_step);
    } else {
        printf("%5d %3d %10zu | %12llu %12.0f %12llu | %12llu %12.0f %12llu | %12llu %12.0f\n", stage, N, psi,
               (unsigned long long)cur[TSR_MEM_PARAMS], fp, (unsigned long long)pk[TSR_MEM_PARAMS],
               (unsigned long long)cur[TSR_MEM_GRADS], fg, (unsigned long long)pk[TSR_MEM_GRADS],
               (unsigned long long)cur[TSR_MEM_OPTIM], fo);
    }
    fflush(stdout);
}

/* The largest value of x over the ranks. */
static void max_over_ranks(uint64_t *x, int n)
{
    MPI_Allreduce(MPI_IN_PLACE, x, n, MPI_UINT64_T, MPI_MAX, MPI_COMM_WORLD);
}

int bench_zero(int argc, char **argv)
{
    opts_t o;
    int rc = parse(argc, argv, &o);
    if (rc >= 0)
        return rc;
    int N = 0;
    MPI_Comm_size(MPI_COMM_WORLD, &N);
    tsr_layout_t lay = TSR_LAYOUT_INIT;
    lay.dp = N;
    tsr_grid_t grid = NULL;
    tsr_device_t dev = NULL;
    if (tsr_device_create(TSR_DEVICE_CPU, 0, &dev) != TSR_OK || tsr_grid_create(MPI_COMM_WORLD, &lay, &grid) != TSR_OK)
        return bench_fail("zero", "%s", tsr_last_error());
    if (!o.json && bench_rank() == 0)
        printf("stage  dp     params |  params_now      formula  params_peak |   grads_now      formula   "
               "grads_peak |   optim_now      formula\n");
    for (int stage = 0; stage <= 3 && rc < 0; stage++) {
        if (o.stage >= 0 && stage != o.stage)
            continue;
        tsr_zero_t z = NULL;
        tsr_status_t st = build(grid, dev, &o, stage, &z);
        tsr_mem_reset_peaks(TSR_DEVICE_CPU);
        MPI_Barrier(MPI_COMM_WORLD);
        double t0 = tsr_time_now();
        if (st == TSR_OK)
            st = one_step(z, o.layers);
        double t1 = tsr_time_now();
        tsr_mem_stats_t ms;
        tsr_mem_stats(TSR_DEVICE_CPU, &ms);
        uint64_t fields[2 * TSR_MEM_CATEGORY_COUNT + 2];
        memcpy(fields, ms.current, sizeof ms.current);
        memcpy(fields + TSR_MEM_CATEGORY_COUNT, ms.peak, sizeof ms.peak);
        fields[2 * TSR_MEM_CATEGORY_COUNT] = (uint64_t)((t1 - t0) * 1e6);
        fields[2 * TSR_MEM_CATEGORY_COUNT + 1] = st != TSR_OK;
        max_over_ranks(fields, 2 * TSR_MEM_CATEGORY_COUNT + 2);
        if (fields[2 * TSR_MEM_CATEGORY_COUNT + 1]) {
            rc = bench_fail("zero", "stage %d: %s", stage, st != TSR_OK ? tsr_last_error() : "failed on another rank");
        } else if (bench_rank() == 0) {
            memcpy(ms.current, fields, sizeof ms.current);
            memcpy(ms.peak, fields + TSR_MEM_CATEGORY_COUNT, sizeof ms.peak);
            report(&o, stage, N, tsr_zero_local_elements(z), &ms, fields[2 * TSR_MEM_CATEGORY_COUNT] / 1e3);
        }
        tsr_zero_destroy(&z);
    }
    tsr_grid_destroy(&grid);
    tsr_device_destroy(&dev);
    return rc < 0 ? 0 : rc;
}
