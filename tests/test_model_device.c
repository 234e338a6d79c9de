/*
 * test_model_device: the GPT on a GPU gives the per-step losses and gradient norms of the
 * same model on the CPU, over 8 steps of the tiny model's shape (AdamW, clipping): fp32
 * within 1e-4 (cuBLAS sums in another order), bf16 within 3e-2 with losses decreasing, at
 * ZeRO stages 0 and 2; and several ranks sharing the one GPU (host-staged MPI, as NCCL
 * refuses two ranks on one GPU) in data, pipeline and tensor parallelism (dp=2, pp=2,
 * tp=1x2, tp=2x2) against the CPU on one rank, within 1e-4. Every point skips without a GPU
 * (test_model_layout checks the layouts on the CPU). The reference runs on rank 0 alone
 * (MPI_COMM_SELF); synthetic text, the seed fresh per run (TSR_TEST_SEED=N repeats one).
 */
#include <math.h>
#include <stdio.h>
#include <tessera.h>

#include "tap.h"
#include "gpt_runs.h"

#define STEPS 8

static const char *describe(const gpt_run_t *r, char *buf, size_t len)
{
    snprintf(buf, len, "%s%s, %s, ZeRO %d, %s, %d micro-batches", r->device == TSR_DEVICE_CPU ? "cpu" : "cuda",
             r->precision == TSR_PRECISION_BF16 ? " bf16" : "", r->layout, r->zero, r->schedule, r->micro_batches);
    return buf;
}

static void compare(const gpt_run_t *r, const gpt_run_t *ref, double tol)
{
    double want[2 * STEPS], got[2 * STEPS], worst, worst_norm;
    char what[160], against[160];
    gpt_run_reference(ref, STEPS, want);
    gpt_run_train(MPI_COMM_WORLD, r, STEPS, got);
    gpt_runs_worst(got, want, STEPS, &worst, &worst_norm);
    describe(r, what, sizeof what);
    describe(ref, against, sizeof against);
    diag("%s: loss %.6f -> %.6f (%s: %.6f -> %.6f)", what, got[0], got[STEPS - 1], against, want[0],
         want[STEPS - 1]);
    ok(worst <= tol && got[STEPS - 1] < got[0], "%s: %d losses within %g of %s (worst %.2g), decreasing", what,
       STEPS, tol, against, worst);
    ok(worst_norm <= 3 * tol, "%s: %d gradient norms within %g (worst %.2g)", what, STEPS, 3 * tol, worst_norm);
}

#define N TSR_GPT_RECOMPUTE_NONE
#define CPU TSR_DEVICE_CPU
#define GPU TSR_DEVICE_CUDA
#define F32 TSR_PRECISION_FP32
#define B16 TSR_PRECISION_BF16

/* Each run on the GPU against the CPU on one rank; skipped without a GPU. */
static void compare_all(const gpt_run_t *runs, size_t n, int gpus)
{
    static const gpt_run_t cpu = {"dp=1", 0, "gpipe", 1, 2, N, CPU, F32};
    for (size_t i = 0; i < n; i++) {
        if (!gpus) {
            skip(2, "no GPU");
            continue;
        }
        compare(&runs[i], &cpu, runs[i].precision == B16 ? 3e-2 : 1e-4);
    }
}

int main(int argc, char **argv)
{
    tap_init(&argc, &argv, "1 2 4");
    gpt_runs_init(2); /* head size 16 */
    int gpus = tsr_device_count(TSR_DEVICE_CUDA) > 0;
    static const gpt_run_t one[] = {{"dp=1", 0, "gpipe", 1, 2, N, GPU, F32}, {"dp=1", 2, "1f1b", 2, 2, N, GPU, F32},
                                {"dp=1", 0, "gpipe", 1, 2, N, GPU, B16}};
    static const gpt_run_t two[] = {{"dp=2", 0, "1f1b", 1, 2, N, GPU, F32}, {"pp=2", 1, "1f1b", 2, 2, N, GPU, F32},
                                {"tp=1x2", 2, "1f1b", 1, 2, N, GPU, F32}, {"tp=1x2", 0, "1f1b", 1, 2, N, GPU, B16}};
    static const gpt_run_t four[] = {{"tp=2x2", 0, "1f1b", 1, 2, N, GPU, F32}, {"tp=2x2", 1, "1f1b", 1, 2, N, GPU, B16}};
    switch (tap_size()) {
    case 1: compare_all(one, sizeof one / sizeof *one, gpus); break;
    case 2: compare_all(two, sizeof two / sizeof *two, gpus); break;
    case 4: compare_all(four, sizeof four / sizeof *four, gpus); break;
    default: tap_skip_all("runs at 1, 2 or 4 ranks");
    }
    gpt_runs_done();
    return tap_done();
}
