/*
 * fuzz_shard: the token-shard reader on arbitrary bytes (libFuzzer target; see HACKING).
 *
 * Each input is written to a file, opened as a shard with a vocabulary its first bytes
 * choose, and every loader batch its header allows is drawn for a few steps. Errors are
 * fine; a crash, a hang or a sanitizer report is not. Seeds: shards of tsr-tokenize.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <tessera.h>

#include "fuzz.h"

static char path[256];
static volatile unsigned sink;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    fuzz_path(path, sizeof path, "shard", "bin");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    tsr_dataset_t ds = NULL;
    /* Vocabulary from header bytes the format leaves 0 (word 3): 0 means 256, bytes-level. */
    int vocab = size >= 16 ? (data[12] | data[13] << 8) : 256;
    vocab = vocab ? vocab : 256;
    if (!fuzz_write(path, data, size) || tsr_dataset_open(path, vocab, &ds) != TSR_OK)
        return 0;
    int64_t tokens = tsr_dataset_tokens(ds);
    int32_t t[256];
    for (int64_t i = 0; i < tokens; i += 256) { /* every token is readable, or refused */
        int64_t n = tokens - i < 256 ? tokens - i : 256;
        if (tsr_dataset_read(ds, i, n, t) == TSR_OK)
            sink += (unsigned)t[0];
    }
    for (int shuffle = 0; shuffle < 2; shuffle++) {
        tsr_dataset_set_shuffle(ds, shuffle, 7);
        sink += (unsigned)tsr_dataset_sequences(ds, 3);
    }
    int seq = size >= 16 ? 1 + data[14] % 64 : 8, batch = size >= 16 ? 1 + data[15] % 8 : 2;
    int32_t *in = malloc(sizeof *in * (size_t)(seq * batch)), *tg = malloc(sizeof *tg * (size_t)(seq * batch));
    for (int64_t step = 0; in && tg && step < 4; step++)
        tsr_dataset_batch(ds, step * 1000003, batch, seq, 0, batch, in, tg);
    free(in);
    free(tg);
    tsr_dataset_close(&ds);
    tsr_clear_error();
    return 0;
}
