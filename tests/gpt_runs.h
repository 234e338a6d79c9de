/*
 * gpt_runs.h: what the model's layout tests share (test_model_layout on the CPU,
 * test_model_device on a GPU): a run of the GPT described by its layout, ZeRO stage,
 * schedule, micro-batches, depth, recomputation, device and precision, trained for a few
 * steps on batches of a synthetic text, recording each step's loss and gradient norm.
 * Header-only, like tap.h (include it after tap.h).
 */
#ifndef TSR_TESTS_GPT_RUNS_H
#define TSR_TESTS_GPT_RUNS_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <tessera.h>

#define GPT_RUNS_BATCH 8
#define GPT_RUNS_TEXT_BYTES 65536

/* One run to compare; the fields after `layers` default to 0: no recomputation, the CPU, fp32. */
typedef struct gpt_run {
    const char *layout;
    int zero;
    const char *schedule; /* "1f1b", "interleaved:2", ... */
    int micro_batches;
    int layers;
    tsr_gpt_recompute_t recompute;
    tsr_device_kind_t device;
    tsr_precision_t precision;
} gpt_run_t;

static struct {
    uint64_t seed;
    char *text;
    int heads;                 /* of the model: dim 32, vocab 256, seq 16 */
    uint64_t peak_activations; /* this rank's, in the last gpt_run_train() */
} gpt_runs_;

static TAP_UNUSED_ void gpt_runs_die(const char *what)
{
    fprintf(stderr, "# [rank %d] %s: %s\n", tap_rank(), what, tsr_last_error());
    MPI_Abort(MPI_COMM_WORLD, 2);
}

/* A fresh seed (tap_seed) and its synthetic text; the model has `heads` heads. */
static TAP_UNUSED_ void gpt_runs_init(int heads)
{
    gpt_runs_.seed = tap_seed();
    gpt_runs_.heads = heads;
    gpt_runs_.text = malloc(GPT_RUNS_TEXT_BYTES);
    if (!gpt_runs_.text)
        gpt_runs_die("no memory for the text");
    tsr_data_synthetic_text(gpt_runs_.seed, GPT_RUNS_TEXT_BYTES, gpt_runs_.text);
}

static TAP_UNUSED_ void gpt_runs_done(void) { free(gpt_runs_.text); }

/* Sequence j of step s: seq + 1 bytes of the text from an offset drawn from (seed, s, j). */
static TAP_UNUSED_ void gpt_runs_batch(int step, int first, int count, int seq, int32_t *in, int32_t *tg)
{
    for (int i = 0; i < count; i++) {
        uint32_t r = tsr_rng_u32(gpt_runs_.seed, tsr_rng_stream(7, (uint32_t)step), (uint64_t)(first + i));
        size_t off = r % (GPT_RUNS_TEXT_BYTES - seq - 1);
        for (int t = 0; t < seq; t++) {
            in[i * seq + t] = (unsigned char)gpt_runs_.text[off + t];
            tg[i * seq + t] = (unsigned char)gpt_runs_.text[off + t + 1];
        }
    }
}

/* Train `steps` steps of run r over comm (AdamW, lr 3e-3, eps 1e-5, clipping at 1, weight decay 0.1):
 * losses[s] is the global mean loss of step s, losses[steps + s] its gradient norm. */
static TAP_UNUSED_ void gpt_run_train(MPI_Comm comm, const gpt_run_t *r, int steps, double *losses)
{
    tsr_layout_t lay = TSR_LAYOUT_INIT;
    tsr_grid_t grid = NULL;
    tsr_gpt_t gpt = NULL;
    tsr_device_t dev = NULL;
    tsr_gpt_config_t cfg = TSR_GPT_CONFIG_INIT;
    tsr_gpt_options_t opt = TSR_GPT_OPTIONS_INIT;
    tsr_zero_config_t z = TSR_ZERO_CONFIG_INIT;
    const char *colon = strchr(r->schedule, ':');
    char kind[32];
    cfg.layers = r->layers, cfg.dim = 32, cfg.heads = gpt_runs_.heads, cfg.vocab = 256, cfg.seq = 16;
    snprintf(kind, sizeof kind, "%.*s", colon ? (int)(colon - r->schedule) : (int)strlen(r->schedule), r->schedule);
    if (tsr_device_create(r->device, 0, &dev))
        gpt_runs_die("device");
    if (tsr_layout_parse(r->layout, &lay) || tsr_grid_create(comm, &lay, &grid))
        gpt_runs_die(r->layout);
    opt.seed = gpt_runs_.seed;
    opt.batch = GPT_RUNS_BATCH;
    opt.micro_batches = r->micro_batches;
    opt.chunks = colon ? atoi(colon + 1) : 1;
    opt.poll_us = 50;
    opt.recompute = r->recompute;
    if (tsr_pipe_kind_parse(kind, &opt.schedule))
        gpt_runs_die(r->schedule);
    z.stage = r->zero;
    z.lr = 3e-3f;
    z.clip_norm = 1.0f;
    z.weight_decay = 0.1f;
    /* Adam's eps at 1e-5, not 1e-8: at initialization the attention is nearly uniform and many
     * q and k weight gradients are ~1e-8, where Adam's first step g / (|g| + eps) turns their
     * rounding (which differs with the order of the sums: micro-batches, tp partial sums) into
     * updates of up to lr. With 1e-8 (seed 1796296036) a 4-layer model on one rank drifted 6e-5
     * in its gradient norms from 1 to 4 micro-batches, and pp=2,tp=2x1 2.8e-4 from 1 rank; with
     * 1e-5 the latter is 4.9e-7. */
    z.eps = 1e-5f;
    z.precision = r->precision;
    tsr_mem_reset_peaks(r->device);
    if (tsr_gpt_create(grid, dev, &cfg, &opt, &z, &gpt))
        gpt_runs_die("tsr_gpt_create");
    int first, count;
    tsr_gpt_batch_slice(gpt, &first, &count);
    int32_t *in = malloc(sizeof(int32_t) * count * cfg.seq), *tg = malloc(sizeof(int32_t) * count * cfg.seq);
    if (!in || !tg)
        gpt_runs_die("no memory for a batch");
    for (int s = 0; s < steps; s++) {
        tsr_gpt_step_info_t info;
        gpt_runs_batch(s, first, count, cfg.seq, in, tg);
        if (tsr_gpt_train_step(gpt, in, tg, &info))
            gpt_runs_die("tsr_gpt_train_step");
        losses[s] = info.loss;
        losses[steps + s] = info.grad_norm;
    }
    tsr_mem_stats_t mem;
    tsr_mem_stats(r->device, &mem);
    gpt_runs_.peak_activations = mem.peak[TSR_MEM_ACTIVATIONS];
    free(in);
    free(tg);
    tsr_gpt_destroy(&gpt);
    tsr_grid_destroy(&grid);
    tsr_device_destroy(&dev);
}

/* Run `ref` on rank 0 alone (MPI_COMM_SELF) and share its 2 * steps figures. */
static TAP_UNUSED_ void gpt_run_reference(const gpt_run_t *ref, int steps, double *losses)
{
    if (tap_rank() == 0)
        gpt_run_train(MPI_COMM_SELF, ref, steps, losses);
    MPI_Bcast(losses, 2 * steps, MPI_DOUBLE, 0, MPI_COMM_WORLD);
}

/* The largest relative differences of the losses and of the norms of two runs. */
static TAP_UNUSED_ void gpt_runs_worst(const double *got, const double *want, int steps, double *loss,
                                       double *norm)
{
    *loss = *norm = 0;
    for (int s = 0; s < 2 * steps; s++) {
        double e = fabs(got[s] - want[s]) / fabs(want[s]);
        double *w = s < steps ? loss : norm;
        *w = e > *w ? e : *w;
    }
}

#endif
