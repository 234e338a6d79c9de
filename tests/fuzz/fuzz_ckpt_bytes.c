/*
 * fuzz_ckpt_bytes: the checkpoint reader on arbitrary bytes (libFuzzer target; see HACKING).
 *
 * Each input is written to a file and read the ways tsr-ckpt and tsr-train --resume read a
 * checkpoint (ckpt_common.c). Seeds: real tiny checkpoints (tests/fuzz/make-seeds.sh). Most
 * mutations are refused by HDF5 itself; the ones it accepts reach Tessera's checks. HDF5's
 * own parser is fuzzed too, and the crashes found inside it are HDF5's (see HACKING).
 */
#include <stdint.h>
#include <tessera.h>

#include "fuzz.h"

static char path[256];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    fuzz_ckpt_setup(argc, argv);
    fuzz_path(path, sizeof path, "ckpt", "h5");
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (fuzz_write(path, data, size))
        fuzz_ckpt_read(path);
    return 0;
}
