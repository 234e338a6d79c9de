/*
 * fuzz_weights: the GPT-2 weights-file reader (tsr_gpt_weights_read, lib/model/weights.c) on
 * arbitrary bytes (libFuzzer target; see HACKING).
 *
 * Each input is written to a file and read as an llm.c model file and as a safetensors file
 * (with the default heads, dim / 64, and with one head, so that a small dim reaches the
 * tensors). Errors are fine; a crash, a hang, a sanitizer report or an allocation far beyond
 * the file's size is not. A file that reads is written back with tsr_gpt_weights_write, as
 * llm.c fp32 and as safetensors, and each copy must read back as the same model with the
 * same parameters bit for bit (else abort: a crash for libFuzzer and the replay). Seeds:
 * small valid files of tests/weights-craft (llm.c fp32 and bf16, safetensors F32, BF16 and
 * F16) and the minimized inputs of past findings (tests/fuzz/make-seeds.sh).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <tessera.h>

#include "fuzz.h"

static char path[256], back[256];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    fuzz_path(path, sizeof path, "weights", "bin");
    fuzz_path(back, sizeof back, "weights-back", "bin");
    return 0;
}

/* Write the model out as `format`, read it back: the same model and parameters, or abort. */
static void round_trip(tsr_gpt_weights_format_t format, const tsr_gpt_config_t *cfg, const float *params)
{
    tsr_gpt_weights_options_t wo = TSR_GPT_WEIGHTS_OPTIONS_INIT, ro = TSR_GPT_WEIGHTS_OPTIONS_INIT;
    tsr_gpt_config_t again;
    float *p = NULL;
    const char *name = tsr_gpt_weights_format_name(format);
    ro.heads = cfg->heads;
    if (tsr_gpt_weights_write(format, back, &wo, cfg, params) != TSR_OK) {
        fprintf(stderr, "fuzz_weights: a model that read does not write as %s: %s\n", name, tsr_last_error());
        abort();
    }
    if (tsr_gpt_weights_read(format, back, &ro, &again, &p) != TSR_OK) {
        fprintf(stderr, "fuzz_weights: the %s file written does not read back: %s\n", name, tsr_last_error());
        abort();
    }
    int64_t n = tsr_gpt_param_count(cfg);
    if (again.layers != cfg->layers || again.dim != cfg->dim || again.heads != cfg->heads ||
        again.vocab != cfg->vocab || again.seq != cfg->seq || memcmp(p, params, (size_t)n * sizeof *p) != 0) {
        fprintf(stderr, "fuzz_weights: the %s file written reads back as another model or other values\n", name);
        abort();
    }
    free(p);
    unlink(back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const struct {
        tsr_gpt_weights_format_t format;
        int heads;
    } ways[] = {{TSR_GPT_WEIGHTS_LLMC, 0}, {TSR_GPT_WEIGHTS_HF, 0}, {TSR_GPT_WEIGHTS_HF, 1}};
    if (!fuzz_write(path, data, size))
        return 0;
    for (size_t w = 0; w < sizeof ways / sizeof *ways; w++) {
        tsr_gpt_weights_options_t o = TSR_GPT_WEIGHTS_OPTIONS_INIT;
        tsr_gpt_config_t cfg;
        float *params = NULL;
        o.heads = ways[w].heads;
        if (tsr_gpt_weights_read(ways[w].format, path, &o, &cfg, &params) == TSR_OK) {
            round_trip(TSR_GPT_WEIGHTS_LLMC, &cfg, params);
            round_trip(TSR_GPT_WEIGHTS_HF, &cfg, params);
        }
        free(params);
    }
    tsr_clear_error();
    return 0;
}
