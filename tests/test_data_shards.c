/*
 * test_data_shards: token shards and the step-indexed loader.
 *
 * A shard written by tsr_dataset_write reads back token for token; damaged or foreign files
 * (bad magic, wrong version, truncated, token at or above the vocabulary, missing) are
 * refused with one line naming the problem. The loader gives inputs and next-token
 * targets from the documented positions, and the global batch split across data-parallel
 * ranks (each fetching its own sequences) equals the batch fetched whole.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <tessera.h>

#include "tap.h"

static char dir[256];

static void write_raw(const char *name, const int32_t *header, const uint16_t *tokens, size_t n, size_t cut)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    fwrite(header, sizeof(int32_t), TSR_DATA_HEADER_WORDS, f);
    fwrite(tokens, sizeof *tokens, n - cut, f);
    fclose(f);
}

static tsr_status_t open_named(const char *name, int vocab, tsr_dataset_t *ds)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return tsr_dataset_open(path, vocab, ds);
}

static int error_has(tsr_status_t rc, tsr_status_t want, const char *needle)
{
    int good = rc == want && strstr(tsr_last_error(), needle);
    if (!good)
        diag("status %s, error \"%s\"; wanted %s with \"%s\"", tsr_status_name(rc), tsr_last_error(),
             tsr_status_name(want), needle);
    return good;
}

int main(int argc, char **argv)
{
    tap_init(&argc, &argv, "1 2");
    int rank = tap_rank(), size = tap_size();
    snprintf(dir, sizeof dir, "%s/tsr-data-%d-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", rank);
    if (!mkdtemp(dir))
        tap_skip_all("cannot make a temporary directory");

    /* A shard of 1000 tokens from the RNG, vocabulary 300. */
    enum { N = 1000, VOCAB = 300 };
    uint16_t tokens[N];
    for (int i = 0; i < N; i++)
        tokens[i] = (uint16_t)(tsr_rng_u32(7, 1, (uint64_t)i) % VOCAB);
    char path[512];
    snprintf(path, sizeof path, "%s/good.bin", dir);
    ok(tsr_dataset_write(path, tokens, N) == TSR_OK, "tsr_dataset_write writes a shard");
    tsr_dataset_t ds = NULL;
    tsr_status_t rc = tsr_dataset_open(path, VOCAB, &ds);
    ok(rc == TSR_OK && tsr_dataset_tokens(ds) == N && memcmp(tsr_dataset_data(ds), tokens, sizeof tokens) == 0,
       "it reads back: %d tokens, each the same", N);

    /* The loader: sequence j of step s starts at ((s*G + j) * T) mod (N - T - 1). */
    enum { G = 6, T = 16 };
    int32_t x[G * T], y[G * T], xs[G * T], ys[G * T];
    int good = 1;
    for (int64_t step = 0; step < 40 && rc == TSR_OK; step += 13) {
        rc = tsr_dataset_batch(ds, step, G, T, 0, G, x, y);
        for (int j = 0; j < G; j++) {
            int64_t start = ((step * G + j) * T) % (N - T - 1);
            for (int t = 0; t < T; t++)
                good &= x[j * T + t] == tokens[start + t] && y[j * T + t] == tokens[start + t + 1];
        }
    }
    ok(rc == TSR_OK && good, "inputs and next-token targets come from the documented positions, wrapping");

    /* Data parallel: each rank fetches its own G/size sequences; together they are the batch. */
    int per = G / size;
    rc = tsr_dataset_batch(ds, 5, G, T, rank * per, per, xs, ys);
    int32_t gx[G * T], gy[G * T];
    MPI_Allgather(xs, per * T, MPI_INT32_T, gx, per * T, MPI_INT32_T, MPI_COMM_WORLD);
    MPI_Allgather(ys, per * T, MPI_INT32_T, gy, per * T, MPI_INT32_T, MPI_COMM_WORLD);
    tsr_dataset_batch(ds, 5, G, T, 0, G, x, y);
    ok(rc == TSR_OK && memcmp(gx, x, sizeof x) == 0 && memcmp(gy, y, sizeof y) == 0,
       "the global batch split over %d ranks equals the batch fetched whole", size);
    ok(tsr_dataset_batch(ds, 0, G, T, G - 1, 2, x, y) == TSR_ERR_INVALID_ARG,
       "sequences beyond the global batch are refused");
    tsr_dataset_close(&ds);
    ok(ds == NULL, "close NULLs the handle");

    /* Refusals. */
    int32_t header[TSR_DATA_HEADER_WORDS] = {TSR_DATA_MAGIC, 1, N};
    rc = open_named("good.bin", 256, &ds);
    ok(error_has(rc, TSR_ERR_INVALID_ARG, "not below the vocabulary size 256") && ds == NULL,
       "a token at or above the vocabulary is named with its position");
    header[0] = 12345;
    write_raw("magic.bin", header, tokens, N, 0);
    ok(error_has(open_named("magic.bin", VOCAB, &ds), TSR_ERR_FORMAT, "magic number 12345, expected 20240520"),
       "a wrong magic number is named");
    header[0] = TSR_DATA_MAGIC;
    header[1] = 2;
    write_raw("version.bin", header, tokens, N, 0);
    ok(error_has(open_named("version.bin", VOCAB, &ds), TSR_ERR_FORMAT, "version 2"), "a wrong version is named");
    header[1] = 1;
    write_raw("short.bin", header, tokens, N, 10);
    ok(error_has(open_named("short.bin", VOCAB, &ds), TSR_ERR_FORMAT, "says 1000 tokens"),
       "a truncated shard is refused");
    ok(error_has(open_named("missing.bin", VOCAB, &ds), TSR_ERR_IO, "missing.bin"), "a missing file is named");
    snprintf(path, sizeof path, "%s/tiny.bin", dir);
    FILE *f = fopen(path, "wb");
    fwrite(header, 1, 100, f);
    fclose(f);
    ok(error_has(open_named("tiny.bin", VOCAB, &ds), TSR_ERR_FORMAT, "shorter than"),
       "a file shorter than the header is refused");

    /* Synthetic text: deterministic, printable, seed-dependent. */
    char a[4096], b[4096], c[4096];
    tsr_data_synthetic_text(1, sizeof a, a);
    tsr_data_synthetic_text(1, sizeof b, b);
    tsr_data_synthetic_text(2, sizeof c, c);
    int printable = 1;
    for (size_t i = 0; i < sizeof a; i++)
        printable &= (a[i] >= ' ' && a[i] < 127) || a[i] == '\n';
    ok(memcmp(a, b, sizeof a) == 0 && memcmp(a, c, sizeof a) != 0 && printable,
       "synthetic text is a function of its seed, and printable");

    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        diag("could not remove %s", dir);
    return tap_done();
}
