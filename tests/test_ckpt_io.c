/*
 * test_ckpt_io: the checkpoint writer and reader on real parallel HDF5 files.
 *
 * Tensors are written split one way (2D blocks, ZeRO-like runs of the flattened tensor,
 * ranges) and read back split another way: every value must come back bitwise, since each
 * is a function of its global index. Then the failure paths: a fault injected on one rank
 * mid-write, pieces that do not cover a dataset, a flipped byte, a truncated file, an HDF5
 * file that is not a checkpoint, a text file, a missing file, a wrong shape, a config
 * mismatch, a NaN in one rank's piece, a buffer too small for tsr_ckpt_latest. Earlier
 * checkpoints must survive every failure.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <hdf5.h>
#include <tessera.h>

#include "tap.h"

static const uint64_t SEED = 20261123;
static tsr_comm_t comm;
static int rank, size;
static char dir[256];

/* The value of global element g of tensor t: exact in fp32, distinct per (t, g). */
static float value(int t, int64_t g)
{
    return tsr_rng_uniform(SEED, (uint64_t)t, (uint64_t)g) * 100.0f - 50.0f;
}

/* Fill the piece's values of tensor t (global row length cols). */
static float *piece_values(int t, int64_t cols, const tsr_ckpt_piece_t *p)
{
    float *v = malloc((size_t)(p->count > 0 ? p->count : 1) * sizeof *v);
    for (int64_t i = 0; i < p->count; i++) {
        int64_t k = p->offset + i;
        v[i] = value(t, (p->row0 + k / p->cols) * cols + p->col0 + k % p->cols);
    }
    return v;
}

/* Balanced split of n things into parts: [lo, hi) of part i. */
static void split(int64_t n, int parts, int i, int64_t *lo, int64_t *hi)
{
    *lo = n * i / parts;
    *hi = n * (i + 1) / parts;
}

/* The pieces of the three float tensors under decomposition `how` (0 or 1). */
enum { T_W = 0, T_FLAT = 1, T_BIAS = 2, NT = 3 };
static const int64_t dims[NT][2] = {{10, 7}, {13, 5}, {11, 0}};
static const int ndims[NT] = {2, 2, 1};

static tsr_ckpt_piece_t piece_of(int t, int how)
{
    int64_t lo, hi;
    if (t == T_W) {
        /* how 0: an r x c block grid; how 1: column strips. */
        int r = how == 0 ? (size >= 4 ? 2 : 1) : 1, c = size / r;
        int me = rank < r * c ? rank : -1;
        if (me < 0)
            return tsr_ckpt_nothing();
        int64_t r0, r1, c0, c1;
        split(dims[t][0], r, me / c, &r0, &r1);
        split(dims[t][1], c, me % c, &c0, &c1);
        return tsr_ckpt_block(r0, r1 - r0, c0, c1 - c0);
    }
    if (t == T_FLAT) {
        /* A ZeRO shard: a run of the whole tensor flattened (how 0), or of its lower half rows (how 1,
         * with rank 0 also writing the upper half as a block). */
        if (how == 0) {
            split(dims[t][0] * dims[t][1], size, rank, &lo, &hi);
            tsr_ckpt_piece_t p = tsr_ckpt_block(0, dims[t][0], 0, dims[t][1]);
            p.offset = lo;
            p.count = hi - lo;
            return p;
        }
        split(dims[t][0] * dims[t][1], size, size - 1 - rank, &lo, &hi);
        tsr_ckpt_piece_t p = tsr_ckpt_block(0, dims[t][0], 0, dims[t][1]);
        p.offset = lo;
        p.count = hi - lo;
        return p;
    }
    split(dims[t][0], size, how == 0 ? rank : size - 1 - rank, &lo, &hi);
    return tsr_ckpt_block(0, 1, lo, hi - lo);
}

static const char *names[NT] = {"/params/w", "/optim/flat/m", "/params/bias"};

/* Write checkpoint `step` with decomposition `how`; returns the commit status. */
static tsr_status_t write_ckpt(int64_t step, int how, int keep)
{
    tsr_ckpt_writer_t w = NULL;
    tsr_status_t rc = tsr_ckpt_writer_create(comm, dir, step, &w);
    for (int t = 0; t < NT && rc == TSR_OK; t++) {
        tsr_ckpt_piece_t p = piece_of(t, how);
        float *v = piece_values(t, ndims[t] == 2 ? dims[t][1] : dims[t][0], &p);
        rc = tsr_ckpt_write_f32(w, names[t], ndims[t], dims[t], &p, v);
        free(v);
    }
    int64_t rng[3] = {7, step, 42};
    if (rc == TSR_OK)
        rc = tsr_ckpt_write_i64(w, "/rng/counters", 3, rng);
    if (rc == TSR_OK)
        rc = tsr_ckpt_set_i64(w, "/config", "n_layer", 6);
    if (rc == TSR_OK)
        rc = tsr_ckpt_set_str(w, "/layout", "layout", "dp=1,pp=1,tp=2x2");
    if (rc != TSR_OK) {
        tsr_ckpt_abort(&w);
        return rc;
    }
    return tsr_ckpt_commit(&w, keep);
}

/* Read every tensor with decomposition `how` and compare bitwise with the generator. */
static int read_back(const char *path, int how, tsr_status_t *status)
{
    tsr_ckpt_reader_t r = NULL;
    int good = 1;
    tsr_status_t rc = tsr_ckpt_reader_open(comm, path, &r);
    for (int t = 0; t < NT && rc == TSR_OK; t++) {
        tsr_ckpt_piece_t p = piece_of(t, how);
        float *want = piece_values(t, ndims[t] == 2 ? dims[t][1] : dims[t][0], &p);
        float *got = calloc((size_t)(p.count > 0 ? p.count : 1), sizeof *got);
        rc = tsr_ckpt_read_f32(r, names[t], ndims[t], dims[t], &p, got);
        good &= rc == TSR_OK && memcmp(got, want, (size_t)p.count * sizeof *got) == 0;
        free(want);
        free(got);
    }
    int64_t rng[3] = {0, 0, 0};
    if (rc == TSR_OK)
        rc = tsr_ckpt_read_i64(r, "/rng/counters", 3, rng);
    good &= rc == TSR_OK && rng[0] == 7 && rng[2] == 42;
    tsr_ckpt_reader_close(&r);
    *status = rc;
    return good;
}

static int exists(const char *name)
{
    char path[512];
    struct stat st;
    snprintf(path, sizeof path, "%s/%s", dir, name);
    return stat(path, &st) == 0;
}

/* Every rank's error mentions `needle`, and the status is `want`. */
static int error_is(tsr_status_t rc, tsr_status_t want, const char *needle)
{
    int good = rc == want && strstr(tsr_last_error(), needle) != NULL;
    if (!good)
        diag("rank %d: status %s, error \"%s\" (wanted %s with \"%s\")", rank, tsr_status_name(rc),
             tsr_last_error(), tsr_status_name(want), needle);
    return good;
}

/* Rank 0 copies src to dst, truncated to `keep` bytes (all if negative), flipping byte `flip` if >= 0. */
static void copy_file(const char *src, const char *dst, long keep, long flip)
{
    if (rank == 0) {
        FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
        long n = 0;
        for (int ch; (ch = fgetc(in)) != EOF && (keep < 0 || n < keep); n++)
            fputc(n == flip ? ch ^ 0x10 : ch, out);
        fclose(in);
        fclose(out);
    }
    MPI_Barrier(MPI_COMM_WORLD);
}

/* File offset of a dataset's data (rank 0 opens the file serially). */
static long data_offset(const char *path, const char *name)
{
    long offset = -1;
    if (rank == 0) {
        hid_t f = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT), d = H5Dopen2(f, name, H5P_DEFAULT);
        offset = (long)H5Dget_offset(d);
        H5Dclose(d);
        H5Fclose(f);
    }
    MPI_Bcast(&offset, 1, MPI_LONG, 0, MPI_COMM_WORLD);
    return offset;
}

int main(int argc, char **argv)
{
    tap_init(&argc, &argv, "1 2 4");
    rank = tap_rank();
    size = tap_size();
    tsr_comm_create(MPI_COMM_WORLD, &comm);
    if (rank == 0) {
        snprintf(dir, sizeof dir, "%s/tsr-ckpt-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
        if (!mkdtemp(dir))
            dir[0] = '\0';
    }
    MPI_Bcast(dir, sizeof dir, MPI_CHAR, 0, MPI_COMM_WORLD);
    char path1[512], path[512], other[512];
    snprintf(path1, sizeof path1, "%s/step_1.h5", dir);
    tsr_status_t rc;

    /* Round trip, resharded. */
    rc = write_ckpt(1, 0, 2);
    ok(rc == TSR_OK, "step 1 written with 2D blocks, flat runs and ranges (%s)", tsr_last_error());
    ok(exists("step_1.h5") && !exists("step_1.h5.tmp"), "commit renamed step_1.h5.tmp to step_1.h5");
    rc = tsr_ckpt_latest(dir, path, sizeof path);
    ok(rc == TSR_OK && strcmp(path, path1) == 0, "latest names step_1.h5");
    ok(read_back(path1, 0, &rc), "read back with the writer's decomposition: bitwise equal");
    ok(read_back(path1, 1, &rc), "read back with another decomposition: bitwise equal (%s)", tsr_last_error());
    tsr_ckpt_reader_t r = NULL;
    rc = tsr_ckpt_reader_open(comm, path1, &r);
    ok(rc == TSR_OK && tsr_ckpt_verify(r) == TSR_OK, "verify recomputes every checksum");
    int64_t step = -1;
    ok(tsr_ckpt_get_i64(r, "/", "step", &step) == TSR_OK && step == 1, "root attribute step is 1");
    ok(tsr_ckpt_expect_i64(r, "/config", "n_layer", 6) == TSR_OK, "expect n_layer 6 passes");
    rc = tsr_ckpt_expect_i64(r, "/config", "n_layer", 12);
    ok(error_is(rc, TSR_ERR_MISMATCH, "n_layer is 6, this run has 12"), "expect n_layer 12 names both values");
    float buf[80];
    tsr_ckpt_piece_t whole = tsr_ckpt_block(0, 10, 0, 8);
    rc = tsr_ckpt_read_f32(r, "/params/w", 2, (const int64_t[]){10, 8}, &whole, buf);
    ok(error_is(rc, TSR_ERR_MISMATCH, "shape 10 x 7, expected 10 x 8"), "a wrong shape is named");
    tsr_ckpt_piece_t three = tsr_ckpt_block(0, 1, 0, 3);
    rc = tsr_ckpt_read_f32(r, "/params/nope", 1, (const int64_t[]){3}, &three, buf);
    ok(error_is(rc, TSR_ERR_MISMATCH, "/params/nope"), "a missing dataset is named");
    /* A bad piece on the last rank alone: every rank gets its error, none hangs. */
    tsr_ckpt_piece_t bad = rank == size - 1 ? tsr_ckpt_block(0, 11, 0, 7) : tsr_ckpt_nothing();
    rc = tsr_ckpt_read_f32(r, "/params/w", 2, dims[T_W], &bad, buf);
    ok(error_is(rc, TSR_ERR_INVALID_ARG, "does not fit"), "a bad piece on one rank is every rank's error, no hang");
    tsr_ckpt_dataset_info_t *list = NULL;
    size_t nlist = 0;
    rc = tsr_ckpt_list(r, &list, &nlist);
    int sorted = rc == TSR_OK && nlist == 4;
    for (size_t i = 1; sorted && i < nlist; i++)
        sorted = strcmp(list[i - 1].name, list[i].name) < 0;
    ok(sorted && strcmp(list[0].name, "/optim/flat/m") == 0, "tsr_ckpt_list gives the %zu datasets in name order",
       nlist);
    free(list);
    tsr_ckpt_reader_close(&r);
    ok(r == NULL, "reader_close NULLs the handle");

    /* A fault on the last rank in the middle of step 2: step 1 and latest stay. */
    char fault[64];
    snprintf(fault, sizeof fault, "%d:/optim/flat/m", size - 1);
    setenv("TSR_CKPT_FAULT", fault, 1);
    rc = write_ckpt(2, 0, 2);
    unsetenv("TSR_CKPT_FAULT");
    snprintf(fault, sizeof fault, "rank %d failed writing /optim/flat/m", size - 1);
    ok(error_is(rc, TSR_ERR_IO, fault), "an injected fault is reported on every rank with its rank and dataset");
    ok(!exists("step_2.h5") && !exists("step_2.h5.tmp"), "no step 2 file is left behind");
    rc = tsr_ckpt_latest(dir, path, sizeof path);
    ok(rc == TSR_OK && strcmp(path, path1) == 0, "latest still names step_1.h5");
    rc = tsr_ckpt_reader_open(comm, path1, &r);
    ok(rc == TSR_OK && tsr_ckpt_verify(r) == TSR_OK, "step 1 still verifies");
    tsr_ckpt_reader_close(&r);

    /* Pieces that cover a dataset twice (every rank the whole) or not at all. */
    {
        tsr_ckpt_writer_t w = NULL;
        rc = tsr_ckpt_writer_create(comm, dir, 3, &w);
        tsr_ckpt_piece_t p = size > 1 ? tsr_ckpt_block(0, 1, 0, 11) : tsr_ckpt_nothing();
        float *v = piece_values(T_BIAS, 11, &p);
        if (rc == TSR_OK)
            rc = tsr_ckpt_write_f32(w, "/params/bias", 1, (const int64_t[]){11}, &p, v);
        free(v);
        ok(error_is(rc, TSR_ERR_INVALID_ARG, "cover the dataset exactly once"),
           "pieces that do not cover a dataset exactly once are refused");
        rc = tsr_ckpt_commit(&w, 2);
        ok(rc != TSR_OK && w == NULL && !exists("step_3.h5"), "and that checkpoint is not committed");
    }

    /* A caller's own failure between writes poisons the checkpoint. */
    {
        tsr_ckpt_writer_t w = NULL;
        rc = tsr_ckpt_writer_create(comm, dir, 3, &w);
        if (rc == TSR_OK && rank == 0)
            tsr_ckpt_writer_fail(w, TSR_ERR_OUT_OF_MEMORY);
        rc = rc == TSR_OK ? tsr_ckpt_commit(&w, 2) : rc;
        ok(error_is(rc, TSR_ERR_OUT_OF_MEMORY, "rank 0 failed") && !exists("step_3.h5"),
           "tsr_ckpt_writer_fail on rank 0: commit publishes nothing and says so on every rank");
    }

    /* A value a checkpoint may not hold: the last rank's piece of /params/bias has a NaN. */
    {
        tsr_ckpt_writer_t w = NULL;
        tsr_ckpt_piece_t p = piece_of(T_BIAS, 0);
        float *v = piece_values(T_BIAS, 11, &p);
        if (rank == size - 1 && p.count > 0)
            v[p.count - 1] = NAN;
        rc = tsr_ckpt_writer_create(comm, dir, 3, &w);
        if (rc == TSR_OK)
            rc = tsr_ckpt_write_f32(w, "/params/bias", 1, (const int64_t[]){11}, &p, v);
        free(v);
        char want[128];
        snprintf(want, sizeof want, "rank %d failed writing /params/bias: dataset /params/bias: element %lld of this "
                 "rank's piece is nan", size - 1, (long long)(rank == size - 1 ? p.count - 1 : 0));
        int named = rank != size - 1 || error_is(rc, TSR_ERR_INVALID_ARG, want);
        ok(rc == TSR_ERR_INVALID_ARG && named && strstr(tsr_last_error(), "a checkpoint holds finite values only"),
           "a NaN in one rank's piece is refused on every rank, naming the dataset");
        tsr_ckpt_abort(&w);
        ok(!exists("step_3.h5") && w == NULL, "and nothing is committed");
    }

    /* A checkpoint of attributes only: no dataset to list, sort or verify. */
    {
        tsr_ckpt_writer_t w = NULL;
        tsr_ckpt_dataset_info_t *list = NULL;
        size_t count = 99;
        rc = tsr_ckpt_writer_create(comm, dir, 7, &w);
        if (rc == TSR_OK)
            rc = tsr_ckpt_set_i64(w, "/config", "n_layer", 6);
        rc = rc == TSR_OK ? tsr_ckpt_commit(&w, 0) : rc;
        snprintf(path, sizeof path, "%s/step_7.h5", dir);
        if (rc == TSR_OK)
            rc = tsr_ckpt_reader_open(comm, path, &r);
        if (rc == TSR_OK)
            rc = tsr_ckpt_list(r, &list, &count);
        if (rc == TSR_OK)
            rc = tsr_ckpt_verify(r);
        tsr_ckpt_reader_close(&r);
        free(list);
        ok(rc == TSR_OK && count == 0, "a checkpoint without datasets lists none and verifies");
        if (rank == 0)
            unlink(path);
        MPI_Barrier(MPI_COMM_WORLD);
    }

    /* tsr_ckpt_latest: a buffer too small is an error, not a truncated path. */
    {
        char small[8];
        rc = tsr_ckpt_latest(dir, small, sizeof small);
        ok(error_is(rc, TSR_ERR_INVALID_ARG, "the buffer has 8"), "tsr_ckpt_latest refuses a buffer too small");
    }

    /* Retention: with keep = 2 only the two newest remain. */
    ok(write_ckpt(4, 1, 2) == TSR_OK && write_ckpt(5, 0, 2) == TSR_OK, "steps 4 and 5 written");
    ok(!exists("step_1.h5") && exists("step_4.h5") && exists("step_5.h5"), "keep 2 removed step 1, kept 4 and 5");

    /* Damaged and foreign files. */
    snprintf(path, sizeof path, "%s/step_5.h5", dir);
    snprintf(other, sizeof other, "%s/flipped.h5", dir);
    long at = data_offset(path, "/optim/flat/m");
    copy_file(path, other, -1, at + 17);
    rc = tsr_ckpt_reader_open(comm, other, &r);
    if (rc == TSR_OK)
        rc = tsr_ckpt_verify(r);
    tsr_ckpt_reader_close(&r);
    ok(error_is(rc, TSR_ERR_CORRUPT, "/optim/flat/m fails its checksum"), "a flipped byte names its dataset");

    snprintf(other, sizeof other, "%s/truncated.h5", dir);
    struct stat st;
    stat(path, &st);
    copy_file(path, other, (long)st.st_size / 2, -1);
    rc = tsr_ckpt_reader_open(comm, other, &r);
    if (rc == TSR_OK)
        rc = tsr_ckpt_verify(r);
    tsr_ckpt_reader_close(&r);
    ok(error_is(rc, TSR_ERR_CORRUPT, "truncated.h5"), "a truncated file is a clear error");

    snprintf(other, sizeof other, "%s/foreign.h5", dir);
    if (rank == 0) {
        hid_t f = H5Fcreate(other, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
        H5Fclose(f);
    }
    MPI_Barrier(MPI_COMM_WORLD);
    rc = tsr_ckpt_reader_open(comm, other, &r);
    ok(error_is(rc, TSR_ERR_FORMAT, "not a Tessera checkpoint") && r == NULL,
       "an HDF5 file without format=tessera-ckpt is refused");

    snprintf(other, sizeof other, "%s/text.h5", dir);
    copy_file("/dev/null", other, -1, -1);
    rc = tsr_ckpt_reader_open(comm, other, &r);
    ok(error_is(rc, TSR_ERR_FORMAT, "not an HDF5 file"), "a file that is not HDF5 is refused");

    snprintf(other, sizeof other, "%s/missing.h5", dir);
    rc = tsr_ckpt_reader_open(comm, other, &r);
    ok(error_is(rc, TSR_ERR_IO, "missing.h5"), "a missing file is named");

    /* Checksums are per element and layout-independent. */
    float v[6] = {1, 2, 3, 4, 5, 6};
    ok(tsr_ckpt_checksum(0, 6, v) == tsr_ckpt_checksum(0, 2, v) + tsr_ckpt_checksum(2, 4, v + 2),
       "the checksum of a range is the sum of its parts' checksums");
    float swapped[6] = {2, 1, 3, 4, 5, 6};
    ok(tsr_ckpt_checksum(0, 6, v) != tsr_ckpt_checksum(0, 6, swapped), "swapping two values changes it");

    MPI_Barrier(MPI_COMM_WORLD);
    if (rank == 0) {
        char cmd[300];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
        if (system(cmd) != 0)
            diag("could not remove %s", dir);
    }
    tsr_comm_destroy(&comm);
    return tap_done();
}
