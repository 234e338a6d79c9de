/*
 * test_model_layout: the tiny GPT trained for 10 steps gives the same per-step losses
 * (within 1e-4 relative) on every layout as on one rank: data, tensor (1D and 2D, square and
 * not) and pipeline parallelism and their combinations, with ZeRO stages 0-3 and the four
 * pipeline schedules each used at least once, AdamW with gradient clipping; the global
 * gradient norms are compared too (each element of a replicated tensor must be counted
 * once). With activation recomputation (block, attention) a layout's losses and norms are
 * bitwise those of the same layout without it. The reference runs on rank 0 alone
 * (MPI_COMM_SELF) with one micro-batch; the data is synthetic text, the seed fresh per run
 * (TSR_TEST_SEED=N repeats one).
 */
#include <stdio.h>
#include <string.h>
#include <tessera.h>

#include "tap.h"
#include "gpt_runs.h"

#define STEPS 10
#define TOL 1e-4

/* The one-rank losses of a model depth, computed on rank 0 and shared. */
static void reference(int layers, double *losses)
{
    gpt_run_t one = {"dp=1", 0, "gpipe", 1, layers, TSR_GPT_RECOMPUTE_NONE, TSR_DEVICE_CPU, TSR_PRECISION_FP32};
    gpt_run_reference(&one, STEPS, losses);
}

/* A run with recomputation (its peak activation bytes in `kept`) against the same run
 * without it: the same bits, and fewer activation bytes. */
static void compare_bitwise(const gpt_run_t *r, const double *got, uint64_t kept)
{
    gpt_run_t plain = *r;
    double want[2 * STEPS];
    plain.recompute = TSR_GPT_RECOMPUTE_NONE;
    gpt_run_train(MPI_COMM_WORLD, &plain, STEPS, want);
    ok(memcmp(got, want, sizeof want) == 0, "%s, recompute %s: 10 losses and norms bitwise those without recomputation",
       r->layout, tsr_gpt_recompute_name(r->recompute));
    ok(kept < gpt_runs_.peak_activations, "%s, recompute %s: peak activation bytes %llu, below %llu without", r->layout,
       tsr_gpt_recompute_name(r->recompute), (unsigned long long)kept,
       (unsigned long long)gpt_runs_.peak_activations);
}

static void compare(const gpt_run_t *r)
{
    double ref[2 * STEPS], got[2 * STEPS], worst, worst_norm;
    reference(r->layers, ref);
    double t0 = MPI_Wtime();
    gpt_run_train(MPI_COMM_WORLD, r, STEPS, got);
    gpt_runs_worst(got, ref, STEPS, &worst, &worst_norm);
    diag("%s zero=%d %s m=%d L=%d recompute %s: loss %.6f -> %.6f (1 rank %.6f -> %.6f), %.2f s", r->layout, r->zero,
         r->schedule, r->micro_batches, r->layers, tsr_gpt_recompute_name(r->recompute), got[0], got[STEPS - 1],
         ref[0], ref[STEPS - 1], MPI_Wtime() - t0);
    ok(worst <= TOL && got[STEPS - 1] < got[0], "%s, ZeRO %d, %s, %d micro-batches: 10 losses within 1e-4 of 1 rank "
       "(worst %.2g) and decreasing", r->layout, r->zero, r->schedule, r->micro_batches, worst);
    /* Adam hardly notices a wrong clipping factor, so the norm itself is compared: a
     * replicated tensor counted twice or an owned one missed would show here. */
    ok(worst_norm <= TOL, "%s: 10 global gradient norms (clipped at 1) within 1e-4 of 1 rank (worst %.2g)",
       r->layout, worst_norm);
    if (r->recompute != TSR_GPT_RECOMPUTE_NONE)
        compare_bitwise(r, got, gpt_runs_.peak_activations);
}

int main(int argc, char **argv)
{
    tap_init(&argc, &argv, "1 2 4 6 8");
    gpt_runs_init(4);
    const tsr_device_kind_t CPU = TSR_DEVICE_CPU;
    const tsr_precision_t F32 = TSR_PRECISION_FP32;
    const tsr_gpt_recompute_t N = TSR_GPT_RECOMPUTE_NONE, A = TSR_GPT_RECOMPUTE_ATTENTION,
                              B = TSR_GPT_RECOMPUTE_BLOCK;
    const gpt_run_t one[] = {{"dp=1", 2, "gpipe", 2, 2, N, CPU, F32}, {"dp=1", 0, "1f1b", 2, 2, B, CPU, F32}};
    const gpt_run_t two[] = {{"dp=2", 1, "1f1b", 1, 2, N, CPU, F32},
                             {"pp=2", 0, "1f1b", 2, 2, N, CPU, F32},
                             {"pp=2", 2, "zb-h1", 2, 2, A, CPU, F32}};
    const gpt_run_t four[] = {
        {"tp=2x2", 0, "1f1b", 1, 2, N, CPU, F32},        {"tp=1x4", 3, "1f1b", 1, 2, N, CPU, F32},
        {"dp=2,tp=1x2", 2, "1f1b", 2, 2, N, CPU, F32},   {"pp=4", 1, "gpipe", 4, 4, N, CPU, F32},
        {"pp=2,tp=2x1", 2, "interleaved:2", 2, 4, N, CPU, F32}, {"dp=2,pp=2", 3, "zb-h1", 2, 2, N, CPU, F32},
        {"pp=2,tp=1x2", 1, "zb-h1", 2, 2, N, CPU, F32},  {"tp=2x2", 2, "1f1b", 2, 2, B, CPU, F32}};
    const gpt_run_t six[] = {{"tp=3x2", 2, "1f1b", 1, 2, N, CPU, F32}};
    const gpt_run_t eight[] = {{"pp=2,tp=2x2", 1, "1f1b", 2, 2, N, CPU, F32}};
    const gpt_run_t *runs = NULL;
    size_t n = 0;
    switch (tap_size()) {
    case 1: runs = one, n = sizeof one / sizeof *one; break;
    case 2: runs = two, n = sizeof two / sizeof *two; break;
    case 4: runs = four, n = sizeof four / sizeof *four; break;
    case 6: runs = six, n = sizeof six / sizeof *six; break;
    case 8: runs = eight, n = sizeof eight / sizeof *eight; break;
    default: tap_skip_all("runs at 1, 2, 4, 6 or 8 ranks");
    }
    for (size_t i = 0; i < n; i++)
        compare(&runs[i]);
    gpt_runs_done();
    return tap_done();
}
