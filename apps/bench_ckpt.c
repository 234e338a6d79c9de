/*
 * bench_ckpt.c: tsr-bench ckpt: checkpoint write and read bandwidth against a plain write.
 *
 * The state is a set of fp32 tensors of `--bytes` in all, each sharded ZeRO-style: every
 * rank holds a contiguous 1/N of each tensor. Each repetition writes a checkpoint (create,
 * write every tensor, commit with fsync and rename), reads it back, and then, alternating
 * with it on the same file system, rank 0 writes the same number of bytes to one file with
 * write(2) and fsync. Figures are medians over repetitions; reads may come from the page
 * cache, as they would right after a save.
 */
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

#define COLS 1024 /* tensor width: rows of 4 KiB */

static const char usage[] =
    "Usage: mpiexec -n N tsr-bench ckpt [--json] [--bytes B] [--tensors T] [--reps R] [--dir DIR] [--keep]\n"
    "  --bytes B     total checkpoint state in bytes (default 67108864; suffixes k, M, G)\n"
    "  --tensors T   number of tensors the state is split into (default 16)\n"
    "  --reps R      repetitions; medians are reported (default 3)\n"
    "  --dir DIR     where to write (default $TMPDIR or /tmp, in tsr-bench-ckpt.<pid>)\n"
    "  --keep        leave the last checkpoint in DIR (for tsr-ckpt); otherwise DIR is emptied\n";

static double median(double *v, int n)
{
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && v[j] < v[j - 1]; j--) {
            double t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* "64M", "1.5G", "4096": a positive number of bytes up to 1 TiB, or -1. */
static long long parse_bytes(const char *s)
{
    char num[64];
    size_t len = strlen(s);
    double v, unit = 1;
    if (len == 0 || len >= sizeof num)
        return -1;
    switch (s[len - 1]) {
    case 'k': case 'K': unit = 1024; break;
    case 'm': case 'M': unit = 1024 * 1024; break;
    case 'g': case 'G': unit = 1024.0 * 1024 * 1024; break;
    default: break;
    }
    snprintf(num, sizeof num, "%.*s", (int)(unit > 1 ? len - 1 : len), s);
    if (tsr_parse_f64(num, &v) != TSR_OK || !(v * unit >= 1) || v * unit > 1099511627776.0)
        return -1;
    return (long long)(v * unit);
}

/* This rank's run of tensor t (rows x COLS) and its values. */
static tsr_ckpt_piece_t shard(int64_t rows, int rank, int size)
{
    int64_t total = rows * COLS, lo = total * rank / size, hi = total * (rank + 1) / size;
    tsr_ckpt_piece_t p = tsr_ckpt_block(0, rows, 0, COLS);
    p.offset = lo;
    p.count = hi - lo;
    return p;
}

static tsr_status_t write_checkpoint(tsr_comm_t comm, const char *dir, int64_t step, int tensors, int64_t rows,
                                     const float *data)
{
    tsr_ckpt_writer_t w = NULL;
    const int64_t dims[2] = {rows, COLS};
    tsr_ckpt_piece_t p = shard(rows, tsr_comm_rank(comm), tsr_comm_size(comm));
    tsr_status_t rc = tsr_ckpt_writer_create(comm, dir, step, &w);
    for (int t = 0; t < tensors && rc == TSR_OK; t++) {
        char name[64];
        snprintf(name, sizeof name, "/optim/tensor%03d/m", t);
        rc = tsr_ckpt_write_f32(w, name, 2, dims, &p, data + (size_t)t * (size_t)p.count);
    }
    if (rc != TSR_OK) {
        tsr_ckpt_abort(&w);
        return rc;
    }
    return tsr_ckpt_commit(&w, 1);
}

static tsr_status_t read_checkpoint(tsr_comm_t comm, const char *dir, int tensors, int64_t rows, float *data)
{
    char path[4200];
    tsr_ckpt_reader_t r = NULL;
    const int64_t dims[2] = {rows, COLS};
    tsr_ckpt_piece_t p = shard(rows, tsr_comm_rank(comm), tsr_comm_size(comm));
    tsr_status_t rc = tsr_ckpt_latest(dir, path, sizeof path);
    if (rc == TSR_OK)
        rc = tsr_ckpt_reader_open(comm, path, &r);
    for (int t = 0; t < tensors && rc == TSR_OK; t++) {
        char name[64];
        snprintf(name, sizeof name, "/optim/tensor%03d/m", t);
        rc = tsr_ckpt_read_f32(r, name, 2, dims, &p, data + (size_t)t * (size_t)p.count);
    }
    tsr_ckpt_reader_close(&r);
    return rc;
}

/* The plain write: one process, one file, sequential write(2), then fsync. */
static int raw_write(const char *dir, const char *buf, long long bytes)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/raw.bin", dir);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return -1;
    const size_t chunk = 64 << 20;
    for (long long done = 0; done < bytes;) {
        size_t n = (size_t)(bytes - done) < chunk ? (size_t)(bytes - done) : chunk;
        ssize_t w = write(fd, buf, n);
        if (w <= 0) {
            close(fd);
            return -1;
        }
        done += w;
    }
    int r = fsync(fd);
    close(fd);
    unlink(path);
    return r;
}

int bench_ckpt(int argc, char **argv)
{
    static const struct option options[] = {
        {"json", no_argument, 0, 'j'},        {"bytes", required_argument, 0, 'b'},
        {"tensors", required_argument, 0, 't'}, {"reps", required_argument, 0, 'r'},
        {"dir", required_argument, 0, 'd'},   {"keep", no_argument, 0, 'k'},
        {"help", no_argument, 0, 'h'},        {0},
    };
    long long bytes = 64LL << 20;
    int tensors = 16, reps = 3, json = 0, keep = 0;
    char dir[4096] = "";
    for (int c; (c = getopt_long(argc, argv, "", options, NULL)) != -1;) {
        switch (c) {
        case 'j': json = 1; break;
        case 'b': bytes = parse_bytes(optarg); break;
        case 't':
            if (bench_int("ckpt", "--tensors", optarg, 1, 100000, &tensors))
                return 1;
            break;
        case 'r':
            if (bench_int("ckpt", "--reps", optarg, 1, 100, &reps))
                return 1;
            break;
        case 'd': snprintf(dir, sizeof dir, "%s", optarg); break;
        case 'k': keep = 1; break;
        case 'h':
            if (bench_rank() == 0)
                fputs(usage, stdout);
            return 0;
        default: return bench_fail("ckpt", "bad option (see tsr-bench ckpt --help)");
        }
    }
    if (bytes <= 0)
        return bench_fail("ckpt", "--bytes: expected a positive size such as 4096, 64M or 1G (at most 1T)");

    tsr_comm_t comm = NULL;
    if (tsr_comm_create(MPI_COMM_WORLD, &comm) != TSR_OK)
        return bench_fail("ckpt", "%s", tsr_last_error());
    int rank = tsr_comm_rank(comm), size = tsr_comm_size(comm);
    if (!dir[0]) {
        int pid = (int)getpid();
        tsr_comm_bcast(comm, &pid, 1, TSR_DTYPE_I32, 0);
        snprintf(dir, sizeof dir, "%s/tsr-bench-ckpt.%d", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", pid);
    }
    /* Whole rows per tensor: the state is rounded down to tensors x rows x 4 KiB. */
    int64_t rows = bytes / tensors / (COLS * (int64_t)sizeof(float));
    if (rows < 1)
        rows = 1;
    long long state = (long long)tensors * rows * COLS * (long long)sizeof(float);
    tsr_ckpt_piece_t p = shard(rows, rank, size);
    float *data = malloc((size_t)tensors * (size_t)(p.count > 0 ? p.count : 1) * sizeof *data);
    char *raw = rank == 0 ? malloc(64 << 20) : NULL;
    double wt[100], rt[100], raw_t[100];
    char failed[4400] = "";
    tsr_status_t rc = data && (rank || raw) ? TSR_OK : TSR_ERR_OUT_OF_MEMORY;
    if (rc != TSR_OK)
        snprintf(failed, sizeof failed, "no memory for %lld bytes of state", state);
    if (rc == TSR_OK) {
        for (int t = 0; t < tensors; t++)
            tsr_rng_fill_uniform(1, (uint64_t)t, (uint64_t)p.offset, (size_t)p.count, -1.0f, 1.0f,
                                 data + (size_t)t * (size_t)p.count);
        if (raw)
            memset(raw, 0x5a, 64 << 20);
    }
    for (int i = 0; i < reps && rc == TSR_OK && !failed[0]; i++) {
        tsr_comm_barrier(comm);
        double t0 = tsr_time_now();
        rc = write_checkpoint(comm, dir, i + 1, tensors, rows, data);
        tsr_comm_barrier(comm);
        double t1 = tsr_time_now();
        if (rc == TSR_OK)
            rc = read_checkpoint(comm, dir, tensors, rows, data);
        tsr_comm_barrier(comm);
        double t2 = tsr_time_now();
        int raw_ok = rank != 0 || raw_write(dir, raw, state) == 0;
        tsr_comm_barrier(comm);
        double t3 = tsr_time_now();
        tsr_comm_bcast(comm, &raw_ok, 1, TSR_DTYPE_I32, 0);
        if (rc != TSR_OK)
            snprintf(failed, sizeof failed, "%s", tsr_last_error());
        else if (!raw_ok)
            snprintf(failed, sizeof failed, "the plain write of %lld bytes to %s failed", state, dir);
        wt[i] = t1 - t0;
        rt[i] = t2 - t1;
        raw_t[i] = t3 - t2;
    }
    if (failed[0]) {
        int status = bench_fail("ckpt", "%s", failed);
        free(data);
        free(raw);
        tsr_comm_destroy(&comm);
        return status;
    }
    double w = state / median(wt, reps) / 1e9, r = state / median(rt, reps) / 1e9;
    double plain = state / median(raw_t, reps) / 1e9;
    if (rank == 0) {
        if (json)
            printf("{\"bench\": \"ckpt\", \"ranks\": %d, \"bytes\": %lld, \"tensors\": %d, \"reps\": %d, "
                   "\"write_gbps\": %.4f, \"read_gbps\": %.4f, \"raw_write_gbps\": %.4f, \"write_ratio\": %.4f}\n",
                   size, state, tensors, reps, w, r, plain, w / plain);
        else
            printf("ckpt: %d ranks, %lld bytes in %d tensors, median of %d: write %.3f GB/s, read %.3f GB/s, "
                   "plain write %.3f GB/s, write ratio %.3f\n", size, state, tensors, reps, w, r, plain, w / plain);
    }
    tsr_comm_barrier(comm);
    if (!keep && rank == 0) {
        char path[4200];
        snprintf(path, sizeof path, "%s/step_%d.h5", dir, reps);
        unlink(path);
        snprintf(path, sizeof path, "%s/latest", dir);
        unlink(path);
        rmdir(dir);
    }
    free(data);
    free(raw);
    tsr_comm_destroy(&comm);
    return 0;
}
