/*
 * fuzz.h: what the fuzz targets share (tests/fuzz/fuzz_*.c). A target defines
 * LLVMFuzzerInitialize and LLVMFuzzerTestOneInput; libFuzzer (make fuzz, see HACKING) or
 * tests/fuzz/replay.c (make check, any compiler) calls them.
 */
#ifndef TESSERA_TESTS_FUZZ_H
#define TESSERA_TESTS_FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <tessera.h>

/* The model of the checkpoint seeds (tests/fuzz/make-seeds.sh). */
#define FUZZ_MODEL "layers=1,dim=4,heads=1,vocab=256,seq=4"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* ckpt_common.c: MPI and a tiny GPT (FUZZ_MODEL) on one rank. */
void fuzz_ckpt_setup(int *argc, char ***argv);
/* Write a real checkpoint of that model, dir/step_3.h5, into path; 0 if it cannot. */
int fuzz_ckpt_write_base(const char *dir, char *path, size_t len);
/* The metadata checksum the file's attributes have now. */
tsr_status_t fuzz_ckpt_seal(const char *path, uint64_t *sum);
/* Read the file every way tsr-ckpt and tsr-train --resume do; any error is fine. */
void fuzz_ckpt_read(const char *path);

/* A file of this process for the inputs: in TSR_FUZZ_DIR, else /dev/shm (memory), else TMPDIR. */
static inline void fuzz_path(char *buf, size_t len, const char *what, const char *ext)
{
    const char *dir = getenv("TSR_FUZZ_DIR");
    if (!dir)
        dir = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(buf, len, "%s/tsr-fuzz-%s-%ld.%s", dir, what, (long)getpid(), ext);
}

/* Write the input as the file; 0 if it cannot be. */
static inline int fuzz_write(const char *path, const uint8_t *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    int ok = f && (size == 0 || fwrite(data, 1, size, f) == size);
    if (f && fclose(f) != 0)
        ok = 0;
    return ok;
}

#endif /* TESSERA_TESTS_FUZZ_H */
