/*
 * test_data_shards: token shards and the sequence-indexed loader.
 *
 * A shard written by tsr_dataset_write reads back token for token; several shards (uint16 and
 * uint32, a comma list or a glob) give the documented sequences; the shuffle is a permutation
 * per epoch; more than 2^31 tokens over sparse shards are addressed; damaged or foreign files
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
    int32_t back[N];
    ok(rc == TSR_OK && tsr_dataset_tokens(ds) == N && tsr_dataset_read(ds, 0, N, back) == TSR_OK,
       "it reads back: %d tokens", N);
    int same = 1;
    for (int i = 0; i < N && rc == TSR_OK; i++)
        same &= back[i] == tokens[i];
    ok(same, "... each the same");

    /* The loader: global sequence g is sequence g mod n of the epoch, starting at token (g mod n) * T,
     * with n = (N - 1) / T. */
    enum { G = 6, T = 16 };
    int32_t x[G * T], y[G * T], xs[G * T], ys[G * T];
    int64_t nseq = (N - 1) / T;
    int good = tsr_dataset_sequences(ds, T) == nseq;
    for (int64_t pos = 0; pos < 200 && rc == TSR_OK; pos += 37) {
        rc = tsr_dataset_batch(ds, pos, G, T, 0, G, x, y);
        for (int j = 0; j < G; j++) {
            int64_t start = (pos + j) % nseq * T;
            for (int t = 0; t < T; t++)
                good &= x[j * T + t] == tokens[start + t] && y[j * T + t] == tokens[start + t + 1];
        }
    }
    ok(rc == TSR_OK && good, "inputs and next-token targets come from the documented positions, epoch after epoch");

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

    /* Shuffling: each epoch a permutation of the sequences, another one the next epoch, the same
     * for the same seed. */
    tsr_dataset_set_shuffle(ds, 1, 99);
    int seen[(N - 1) / T] = {0}, moved = 0, differs = 0, again = 1;
    for (int64_t g = 0; g < 2 * nseq; g++) {
        int32_t a[T], b[T], c[T];
        tsr_dataset_batch(ds, g, 1, T, 0, 1, a, b);
        int64_t k = -1;
        for (int64_t q = 0; q < nseq && k < 0; q++)
            if (memcmp(a, back + q * T, sizeof a) == 0)
                k = q;
        if (g < nseq && k >= 0)
            seen[k]++;
        moved += k != g % nseq;
        int32_t e[T];
        tsr_dataset_batch(ds, g < nseq ? g + nseq : g - nseq, 1, T, 0, 1, e, c);
        differs += memcmp(a, e, sizeof a) != 0;
        tsr_dataset_batch(ds, g, 1, T, 0, 1, e, c);
        again &= memcmp(a, e, sizeof a) == 0;
    }
    int once = 1;
    for (int64_t q = 0; q < nseq; q++)
        once &= seen[q] == 1;
    ok(once && moved > nseq && differs > nseq / 2 && again,
       "--shuffle: each epoch of %lld sequences gives each once (%d of %lld moved), epochs differ (%d), repeatable",
       (long long)nseq, moved, (long long)(2 * nseq), differs);
    tsr_dataset_close(&ds);
    ok(ds == NULL, "close NULLs the handle");

    /* Several shards, uint16 and uint32: a comma list and a glob give the same data, sequences
     * never cross a shard, and a shard too short for a sequence holds none. */
    const int widths[3] = {2, 4, 2}, counts[3] = {100, 50, 10};
    uint32_t all[160];
    int64_t at = 0;
    for (int k = 0; k < 3; k++) {
        tsr_dataset_writer_t w = NULL;
        uint32_t part[100];
        for (int i = 0; i < counts[k]; i++)
            all[at + i] = part[i] = (uint32_t)(widths[k] == 4 ? 70000 + 13 * at + i : (7 * (at + i)) % VOCAB);
        at += counts[k];
        snprintf(path, sizeof path, "%s/part_%d.bin", dir, k);
        rc = tsr_dataset_writer_create(path, widths[k], &w);
        if (rc == TSR_OK)
            rc = tsr_dataset_writer_append(w, part, (size_t)counts[k]);
        if (rc == TSR_OK)
            rc = tsr_dataset_writer_close(&w);
    }
    ok(rc == TSR_OK, "three shards written, the second of uint32 tokens: %s", rc == TSR_OK ? "" : tsr_last_error());
    char list[1600];
    snprintf(list, sizeof list, "%s/part_0.bin,%s/part_1.bin,%s/part_2.bin", dir, dir, dir);
    tsr_dataset_t dl = NULL, dg = NULL;
    snprintf(path, sizeof path, "%s/part_*.bin", dir);
    rc = tsr_dataset_open(list, 100000, &dl);
    if (rc == TSR_OK)
        rc = tsr_dataset_open(path, 100000, &dg);
    int32_t lx[9 * 10], ly[9 * 10], gx2[9 * 10], gy2[9 * 10];
    /* sequences of 10: shard 0 has 9 (starts 0..80), shard 1 has 4, shard 2 (10 tokens) none */
    int layout_ok = rc == TSR_OK && tsr_dataset_shard_count(dl) == 3 && tsr_dataset_tokens(dl) == 160 &&
                    tsr_dataset_sequences(dl, 10) == 13;
    for (int64_t pos = 0; layout_ok && pos < 26; pos += 9) {
        layout_ok &= tsr_dataset_batch(dl, pos, 9, 10, 0, 9, lx, ly) == TSR_OK &&
                     tsr_dataset_batch(dg, pos, 9, 10, 0, 9, gx2, gy2) == TSR_OK &&
                     memcmp(lx, gx2, sizeof lx) == 0 && memcmp(ly, gy2, sizeof ly) == 0;
        for (int j = 0; j < 9; j++) {
            int64_t q = (pos + j) % 13, start = q < 9 ? q * 10 : 100 + (q - 9) * 10;
            for (int t = 0; t < 10; t++)
                layout_ok &= lx[j * 10 + t] == (int32_t)all[start + t] && ly[j * 10 + t] == (int32_t)all[start + t + 1];
        }
    }
    ok(layout_ok, "a comma list and a glob of 3 shards (uint16, uint32, uint16) give the documented sequences");
    tsr_dataset_close(&dg);
    tsr_dataset_close(&dl);
    snprintf(path, sizeof path, "%s/none_*.bin", dir);
    ok(error_has(tsr_dataset_open(path, VOCAB, &dl), TSR_ERR_IO, "none_*.bin matches no file"),
       "a glob that matches nothing is named");

    /* More than 2^31 tokens over two sparse shards of 1.2e9 tokens: a sequence far into the
     * second is found, with the token written there. */
    const int64_t big = 1200000000;
    int sparse = 1;
    for (int k = 0; k < 2 && sparse; k++) {
        int32_t h[TSR_DATA_HEADER_WORDS] = {TSR_DATA_MAGIC, 1, (int32_t)big};
        snprintf(path, sizeof path, "%s/big_%d.bin", dir, k);
        FILE *bf = fopen(path, "wb");
        sparse = bf && fwrite(h, sizeof h, 1, bf) == 1 && ftruncate(fileno(bf), (off_t)(sizeof h + 2 * big)) == 0;
        if (bf)
            fclose(bf);
    }
    /* global sequence g = n0 + 5e7 (n0 = (big - 1) / T in shard 0) starts at token 8e8 of shard 1 */
    int64_t n0 = (big - 1) / T, g = n0 + 50000000, off = (int64_t)50000000 * T;
    if (sparse) {
        snprintf(path, sizeof path, "%s/big_1.bin", dir);
        FILE *bf = fopen(path, "r+b");
        uint16_t mark[2] = {123, 45};
        sparse = bf && fseeko(bf, (off_t)(TSR_DATA_HEADER_WORDS * 4 + 2 * off), SEEK_SET) == 0 &&
                 fwrite(mark, sizeof mark, 1, bf) == 1;
        if (bf)
            fclose(bf);
    }
    snprintf(path, sizeof path, "%s/big_*.bin", dir);
    if (!sparse) {
        skip(1, "no sparse files of 2.4 GB here");
    } else {
        int32_t bx[T], by[T];
        rc = tsr_dataset_open(path, VOCAB, &dl);
        ok(rc == TSR_OK && tsr_dataset_tokens(dl) == 2 * big && tsr_dataset_batch(dl, g, 1, T, 0, 1, bx, by) == TSR_OK &&
               bx[0] == 123 && bx[1] == 45 && by[0] == 45 && by[1] == 0,
           "%lld tokens in 2 shards (more than 2^31): sequence %lld reads token %lld of the second", (long long)(2 * big),
           (long long)g, (long long)off);
        tsr_dataset_close(&dl);
    }
    for (int k = 0; k < 2; k++) {
        snprintf(path, sizeof path, "%s/big_%d.bin", dir, k);
        unlink(path);
    }

    /* Refusals. */
    int32_t header[TSR_DATA_HEADER_WORDS] = {TSR_DATA_MAGIC, 1, N};
    rc = open_named("good.bin", 256, &ds);
    int32_t vx[N], vy[N];
    ok(rc == TSR_OK && error_has(tsr_dataset_batch(ds, 0, 1, N - 2, 0, 1, vx, vy), TSR_ERR_INVALID_ARG,
                                 "not below the vocabulary size 256"),
       "a token at or above the vocabulary is named with its position when it is read");
    tsr_dataset_close(&ds);
    header[0] = 12345;
    write_raw("magic.bin", header, tokens, N, 0);
    ok(error_has(open_named("magic.bin", VOCAB, &ds), TSR_ERR_FORMAT, "magic number 12345, expected 20240520 or 20240801"),
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
