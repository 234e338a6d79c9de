/*
 * test_model_config: the model's configuration: presets, "key=value" parsing and its
 * errors (an empty model, a key twice, a trailing comma), the text form, the parameter
 * count (GPT-2 small has 124,439,808 with the tied embedding counted once), what
 * tsr_gpt_create() refuses, the tensors checkpoints hold (tsr_gpt_tensor_info) against what
 * the model registers, and the whole backward checked against the forward: an SGD step
 * lowers the loss of its batch by lr |g|^2.
 */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <tessera.h>

#include "tap.h"

static int parse_fails(const char *text, const char *expect)
{
    tsr_gpt_config_t c = TSR_GPT_CONFIG_INIT;
    return tsr_gpt_config_parse(text, &c) == TSR_ERR_INVALID_ARG && strstr(tsr_last_error(), expect) != NULL;
}

int main(int argc, char **argv)
{
    tap_init(&argc, &argv, "1");
    tsr_gpt_config_t c = TSR_GPT_CONFIG_INIT;
    char buf[TSR_GPT_CONFIG_STRLEN];

    ok(tsr_gpt_config_parse("tiny", &c) == TSR_OK, "tiny parses");
    is_str(tsr_gpt_config_format(&c, buf, sizeof buf), "layers=2,dim=64,heads=4,vocab=256,seq=64", "tiny's shape");
    ok(tsr_gpt_config_parse("gpt2-124m", &c) == TSR_OK, "gpt2-124m parses");
    is_str(tsr_gpt_config_format(&c, buf, sizeof buf), "layers=12,dim=768,heads=12,vocab=50257,seq=1024",
           "gpt2-124m's shape");
    is_int(tsr_gpt_param_count(&c), 124439808LL, "gpt2-124m has 124,439,808 parameters");
    ok(tsr_gpt_config_parse("seq=32,layers=3", &c) == TSR_OK, "keys in any order, others default");
    is_str(tsr_gpt_config_format(&c, buf, sizeof buf), "layers=3,dim=64,heads=4,vocab=256,seq=32", "their values");
    tsr_gpt_config_t back;
    ok(tsr_gpt_config_parse(buf, &back) == TSR_OK && back.layers == 3 && back.dim == 64 && back.heads == 4 &&
           back.vocab == 256 && back.seq == 32,
       "the text form parses back");
    ok(parse_fails("dim=30,heads=4", "dim=30 is not a multiple of heads=4"), "dim not a multiple of heads");
    ok(parse_fails("layers=0", "layers=0 is not a positive integer"), "zero layers");
    ok(parse_fails("depth=3", "unknown key 'depth'"), "unknown key");
    ok(parse_fails("huge", "expected tiny, gpt2-124m"), "unknown preset");
    ok(parse_fails("vocab=70000", "exceeds the 65536"), "vocabulary beyond 16-bit tokens");
    ok(parse_fails("", "model is empty (expected tiny, gpt2-124m"), "an empty model is refused, not tiny");
    ok(parse_fails("layers=2,layers=3", "gives layers twice"), "a key given twice (the layout's rule)");
    ok(parse_fails("layers=2,", "ends with a comma"), "a trailing comma (the layout's rule)");
    ok(parse_fails("layers=2,,dim=32", "empty item"), "an empty item");

    /* recomputation names round-trip; an unknown one names the choices */
    int round_trip = 1;
    for (int k = TSR_GPT_RECOMPUTE_NONE; k <= TSR_GPT_RECOMPUTE_BLOCK; k++) {
        tsr_gpt_recompute_t back = (tsr_gpt_recompute_t)-1;
        round_trip &= tsr_gpt_recompute_parse(tsr_gpt_recompute_name((tsr_gpt_recompute_t)k), &back) == TSR_OK &&
                       back == (tsr_gpt_recompute_t)k;
    }
    tsr_gpt_recompute_t rr;
    ok(round_trip && tsr_gpt_recompute_parse("full", &rr) == TSR_ERR_INVALID_ARG &&
           strstr(tsr_last_error(), "expected none, attention or block"),
       "recomputation names none, attention, block round-trip; \"full\" is refused naming them");
    tsr_clear_error();

    /* what the model refuses on one rank */
    tsr_device_t dev = NULL;
    tsr_grid_t grid = NULL;
    tsr_layout_t lay = TSR_LAYOUT_INIT;
    tsr_gpt_t gpt = NULL;
    tsr_zero_config_t z = TSR_ZERO_CONFIG_INIT;
    tsr_gpt_options_t o = TSR_GPT_OPTIONS_INIT;
    tsr_gpt_config_parse("tiny", &c);
    tsr_device_create(TSR_DEVICE_CPU, 0, &dev);
    tsr_grid_create(MPI_COMM_WORLD, &lay, &grid);
    o.batch = 6, o.micro_batches = 4;
    ok(tsr_gpt_create(grid, dev, &c, &o, &z, &gpt) == TSR_ERR_INVALID_ARG && !gpt &&
           strstr(tsr_last_error(), "batch of 6 sequences must be a multiple of dp=1 x 4"),
       "a batch that micro-batches do not divide is refused");
    o.batch = 8, o.micro_batches = 1, o.chunks = 2;
    ok(tsr_gpt_create(grid, dev, &c, &o, &z, &gpt) == TSR_ERR_INVALID_ARG &&
           strstr(tsr_last_error(), "need the interleaved schedule"),
       "chunks without the interleaved schedule are refused");
    o.chunks = 1;
    z.precision = TSR_PRECISION_BF16;
    ok(tsr_gpt_create(grid, dev, &c, &o, &z, &gpt) == TSR_ERR_NOT_SUPPORTED && !gpt &&
           strstr(tsr_last_error(), "bf16 compute needs a CUDA device"),
       "bf16 on the CPU is refused");
    z.precision = TSR_PRECISION_FP32;
    o.recompute = (tsr_gpt_recompute_t)7;
    ok(tsr_gpt_create(grid, dev, &c, &o, &z, &gpt) == TSR_ERR_INVALID_ARG && !gpt &&
           strstr(tsr_last_error(), "expected none, attention or block"),
       "an unknown recomputation is refused");
    o.recompute = TSR_GPT_RECOMPUTE_NONE;
    ok(tsr_gpt_create(grid, dev, &c, &o, &z, &gpt) == TSR_OK && gpt, "tiny builds on one rank");
    int first = -1, count = -1;
    tsr_gpt_batch_slice(gpt, &first, &count);
    ok(first == 0 && count == 8, "one rank trains on the whole batch");
    is_int(tsr_zero_local_elements(tsr_gpt_optimizer(gpt)), tsr_gpt_param_count(&c),
           "one rank registers every parameter once");
    /* tsr_gpt_tensor_info, from which tsr-ckpt verify knows what a checkpoint needs, lists
     * exactly the tensors the model registers, in order, with their shapes. */
    tsr_zero_t zopt = tsr_gpt_optimizer(gpt);
    int same = tsr_zero_tensor_count(zopt) == tsr_gpt_tensor_count(&c);
    for (int i = 0; same && i < tsr_gpt_tensor_count(&c); i++) {
        tsr_zero_tensor_t d;
        char name[64];
        int64_t rows, cols;
        same = tsr_zero_tensor_desc(zopt, i, &d) == TSR_OK &&
               tsr_gpt_tensor_info(&c, i, name, sizeof name, &rows, &cols) == TSR_OK && strcmp(d.name, name) == 0 &&
               d.rows == rows && d.cols == cols;
        if (!same)
            diag("tensor %d: the model registers %s %ld x %ld, tsr_gpt_tensor_info says %s %lld x %lld", i, d.name,
                 d.rows, d.cols, name, (long long)rows, (long long)cols);
    }
    ok(same, "tsr_gpt_tensor_info lists the %d tensors the model registers, names and shapes",
       tsr_gpt_tensor_count(&c));
    tsr_gpt_destroy(&gpt);
    ok(gpt == NULL, "destroy NULLs the handle");

    /* The backward against the forward, end to end: one SGD step of size lr along the
     * gradient g lowers the loss of the same batch by lr |g|^2 to first order. */
    tsr_gpt_config_parse("layers=2,dim=32,heads=4,vocab=64,seq=16", &c);
    z.optim = TSR_OPTIM_SGD, z.lr = 1e-3f, z.momentum = 0.0f, z.clip_norm = 0.0f, z.weight_decay = 0.0f;
    const char *env = getenv("TSR_TEST_SEED");
    o.batch = 4, o.seed = env ? strtoull(env, NULL, 0) : (unsigned long long)time(NULL);
    diag("seed %llu (TSR_TEST_SEED=%llu repeats this run)", (unsigned long long)o.seed,
         (unsigned long long)o.seed);
    ok(tsr_gpt_create(grid, dev, &c, &o, &z, &gpt) == TSR_OK, "a small model with SGD builds");
    int32_t in[4 * 16], tg[4 * 16];
    for (int i = 0; i < 4 * 16; i++)
        in[i] = (int32_t)(tsr_rng_u32(o.seed, 0, (uint64_t)i) % 64), tg[i] = (int32_t)(tsr_rng_u32(o.seed, 1, (uint64_t)i) % 64);
    tsr_gpt_step_info_t s1, s2;
    ok(tsr_gpt_train_step(gpt, in, tg, &s1) == TSR_OK && tsr_gpt_train_step(gpt, in, tg, &s2) == TSR_OK,
       "two steps on one batch");
    double predicted = 1e-3 * s1.grad_norm * s1.grad_norm, seen = s1.loss - s2.loss;
    is_rel(seen, predicted, 2e-2, "the loss falls by lr |g|^2 (%.6g seen, %.6g predicted)", seen, predicted);
    tsr_gpt_destroy(&gpt);
    tsr_grid_destroy(&grid);
    tsr_device_destroy(&dev);
    return tap_done();
}
