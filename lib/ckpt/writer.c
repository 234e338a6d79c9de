/*
 * writer.c: writing a checkpoint collectively, and committing it atomically.
 *
 * Failure protocol: before each collective step the ranks agree (one allreduce) on
 * whether any of them has failed. From the first failure on, every rank skips all
 * further HDF5 work, so no rank waits in a collective that another has left; the failing
 * rank's message is broadcast once, and tsr_ckpt_commit() reports it on every rank after
 * removing the temporary file. Earlier checkpoints and `latest` are never touched until
 * the new file is complete and durable.
 *
 * Disk full. HDF5 cannot survive a failed write of its own metadata on some ranks only: the
 * ranks part ways inside H5Fclose and wait for ever. So a full disk must never reach HDF5's
 * metadata writes. Rank 0 first sets aside RESERVE_BASE bytes in a file of their own beside
 * the checkpoint, grows it by RESERVE_PER_DATASET for each dataset, and frees it just before
 * the file is closed, whether it is committed or
 * abandoned: the metadata flushed at close then has room. And before each dataset's values
 * are written, rank 0 reserves the dataset's bytes in the file (fallocate): a full disk is
 * found there, as ENOSPC with its path, by one rank at an agreed point, instead of in the
 * middle of a collective write.
 */
#define _GNU_SOURCE /* fallocate, FALLOC_FL_KEEP_SIZE */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ckpt/ckpt_impl.h"

/* Room kept for the metadata HDF5 writes when the file closes: object headers, groups and
 * attributes take about 1.5 KiB per dataset (measured: 857 KiB for 600 datasets). */
#define RESERVE_BASE (1 << 20)
#define RESERVE_PER_DATASET (4 << 10)

struct tsr_ckpt_writer {
    tsr_comm_t comm;
    hid_t file;
    char *dir, *tmp_path, *reserve_path;
    char final_name[64];
    char job[40];            /* this writer's name in temporary files, unique per job */
    int fd;                  /* rank 0: the temporary file, to reserve its space; else -1 */
    int can_reserve;         /* rank 0: 0 once the file system said fallocate is not supported */
    int reserve_fd;          /* rank 0: the metadata reserve, ours; else -1 */
    int64_t reserved;        /* rank 0: its size */
    int64_t step;
    uint64_t meta_sum;       /* the metadata checksum of the attributes set so far */
    tsr_status_t local_rc;   /* this rank's first failure, TSR_OK if none */
    char local_msg[1024];
    int failed_rank;         /* agreed: the lowest rank that failed, -1 if none */
    tsr_status_t failed_rc;  /* agreed: its status and message */
    char failed_msg[1024];
    char *fault_dataset;     /* TSR_CKPT_FAULT injection for this rank, NULL if none */
};

/* Remember this rank's first failure (the detail is in tsr_last_error()). */
static void fail_local(struct tsr_ckpt_writer *w, tsr_status_t rc, const char *doing)
{
    if (w->local_rc != TSR_OK)
        return;
    w->local_rc = rc;
    snprintf(w->local_msg, sizeof w->local_msg, "%s: %s", doing, tsr_last_error());
}

static tsr_status_t agreed_error(const struct tsr_ckpt_writer *w)
{
    return TSR_ERROR(w->failed_rc, "rank %d failed %s", w->failed_rank, w->failed_msg);
}

/* Agree whether any rank has failed; on the first failure, share its status and message.
 * Also reduce `mine` with MAX into *any (if any is not NULL), in the same allreduce. */
static tsr_status_t agree_max(struct tsr_ckpt_writer *w, int mine, int *any)
{
    if (w->failed_rank >= 0)
        return agreed_error(w);
    int rank = tsr_comm_rank(w->comm), size = tsr_comm_size(w->comm);
    int flags[2] = {w->local_rc != TSR_OK ? size - rank : 0, mine}; /* MAX picks the lowest failing rank */
    tsr_status_t rc = tsr_comm_allreduce(w->comm, TSR_IN_PLACE, flags, 2, TSR_DTYPE_I32, TSR_REDUCE_MAX);
    if (rc != TSR_OK)
        return rc; /* communication itself broke: nothing sensible left to do collectively */
    if (any)
        *any = flags[1];
    if (flags[0] == 0)
        return TSR_OK;
    w->failed_rank = size - flags[0];
    int32_t status = (int32_t)w->local_rc;
    memcpy(w->failed_msg, w->local_msg, sizeof w->failed_msg);
    tsr_comm_bcast(w->comm, &status, 1, TSR_DTYPE_I32, w->failed_rank);
    tsr_comm_bcast(w->comm, w->failed_msg, sizeof w->failed_msg, TSR_DTYPE_U8, w->failed_rank);
    w->failed_rc = (tsr_status_t)status;
    return agreed_error(w);
}

static tsr_status_t agree(struct tsr_ckpt_writer *w)
{
    return agree_max(w, 0, NULL);
}

/* Whether a piece is one contiguous run of the dataset in the file (row-major). */
static int contiguous_in_file(int ndim, const int64_t dims[], const tsr_ckpt_piece_t *p)
{
    if (p->count == 0 || ndim == 1 || p->cols == dims[1])
        return 1;
    return p->offset / p->cols == (p->offset + p->count - 1) / p->cols; /* within one block row */
}

tsr_status_t tsr__ckpt_make_dir(const char *dir)
{
    tsr_status_t rc = TSR_OK;
    struct stat st;
    char *buf = NULL;
    TSR_CHECK(dir && *dir, TSR_ERR_INVALID_ARG, "the checkpoint directory is empty (expected a directory path)");
    TSR_CHECK(buf = tsr__strdupf("%s", dir), TSR_ERR_OUT_OF_MEMORY, "no memory for a path");
    for (char *p = buf + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        TSR_CHECK(mkdir(buf, 0777) == 0 || errno == EEXIST, TSR_ERR_IO, "cannot create directory %s: %s", buf,
                  strerror(errno));
        *p = '/';
    }
    TSR_CHECK(mkdir(dir, 0777) == 0 || errno == EEXIST, TSR_ERR_IO, "cannot create directory %s: %s", dir,
              strerror(errno));
    TSR_CHECK(stat(dir, &st) == 0, TSR_ERR_IO, "%s: %s", dir, strerror(errno));
    TSR_CHECK(S_ISDIR(st.st_mode), TSR_ERR_IO, "%s is %s, not a directory (expected a checkpoint directory)", dir,
              tsr__file_kind(st.st_mode));
cleanup:
    free(buf);
    return rc;
}

/* TSR_CKPT_FAULT="RANK:DATASET": a malformed value is an error, not silently no fault. */
static tsr_status_t parse_fault(struct tsr_ckpt_writer *w)
{
    const char *env = getenv("TSR_CKPT_FAULT");
    const char *colon = env ? strchr(env, ':') : NULL;
    char rank_text[16];
    int64_t rank;
    if (!env || !*env)
        return TSR_OK;
    if (!colon || colon == env || (size_t)(colon - env) >= sizeof rank_text || colon[1] != '/')
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "TSR_CKPT_FAULT=%s: expected RANK:DATASET, e.g. 1:/params/wte", env);
    snprintf(rank_text, sizeof rank_text, "%.*s", (int)(colon - env), env);
    if (tsr_parse_i64(rank_text, 0, tsr_comm_size(w->comm) - 1, &rank) != TSR_OK)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "TSR_CKPT_FAULT=%s: rank %s is not a rank of this job (expected 0 to %d)",
                         env, rank_text, tsr_comm_size(w->comm) - 1);
    if (rank == tsr_comm_rank(w->comm) && !(w->fault_dataset = tsr__strdupf("%s", colon + 1)))
        return TSR_ERROR(TSR_ERR_OUT_OF_MEMORY, "no memory for TSR_CKPT_FAULT");
    return TSR_OK;
}

/* A name for this job's temporary files: rank 0's pid and a few bits of its clock. */
static void job_name(char *buf, size_t len)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t h = ((uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec) * 0x9E3779B97F4A7C15ULL;
    snprintf(buf, len, "%ld-%08x", (long)getpid(), (unsigned)(h >> 32));
}

/* Rank 0: make the metadata reserve `bytes` long (allocated, not a hole). */
static tsr_status_t grow_reserve(struct tsr_ckpt_writer *w, int64_t bytes)
{
    if (bytes <= w->reserved)
        return TSR_OK;
    int err = posix_fallocate(w->reserve_fd, 0, (off_t)bytes);
    if (err != 0)
        return TSR_ERROR(TSR_ERR_IO, "cannot reserve %lld bytes for the checkpoint's metadata in %s: %s",
                         (long long)bytes, w->reserve_path, strerror(err));
    w->reserved = bytes;
    return TSR_OK;
}

/* Rank 0: the metadata reserve, then the temporary file itself, both new (O_EXCL). */
static tsr_status_t prepare_files(struct tsr_ckpt_writer *w)
{
    tsr_status_t rc = TSR_OK;
    w->reserve_fd = open(w->reserve_path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    TSR_CHECK(w->reserve_fd >= 0, TSR_ERR_IO, "cannot create %s: %s", w->reserve_path, strerror(errno));
    TSR_TRY(grow_reserve(w, RESERVE_BASE));
    w->fd = open(w->tmp_path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    TSR_CHECK(w->fd >= 0, TSR_ERR_IO, "cannot create %s: %s", w->tmp_path, strerror(errno));
cleanup:
    return rc;
}

/* Rank 0: give the metadata reserve back to the file system (before HDF5 closes the file). */
static void release_reserve(struct tsr_ckpt_writer *w)
{
    if (w->reserve_fd < 0)
        return;
    close(w->reserve_fd);
    unlink(w->reserve_path);
    w->reserve_fd = -1;
}

/*
 * Rank 0: reserve the bytes of an open dataset in the file before its values are written,
 * so that a full disk shows here, with its errno, and not in HDF5's collective writes.
 * File systems without fallocate (some NFS) go unreserved: a full disk then fails the
 * write itself, on some ranks, which the ranks agree on as on any failure, and the metadata
 * reserve still lets the file close.
 */
static void reserve_dataset(struct tsr_ckpt_writer *w, hid_t dset, const char *name, int64_t bytes,
                            const char *doing)
{
    if (tsr_comm_rank(w->comm) != 0 || w->reserve_fd < 0)
        return;
    tsr_status_t rc = grow_reserve(w, w->reserved + RESERVE_PER_DATASET);
    if (rc != TSR_OK) {
        fail_local(w, rc, doing);
        return;
    }
#ifdef FALLOC_FL_KEEP_SIZE
    haddr_t at = dset >= 0 ? H5Dget_offset(dset) : HADDR_UNDEF;
    if (!w->can_reserve || at == HADDR_UNDEF || bytes <= 0)
        return;
    if (fallocate(w->fd, FALLOC_FL_KEEP_SIZE, (off_t)at, (off_t)bytes) == 0)
        return;
    if (errno == EOPNOTSUPP || errno == ENOSYS) {
        w->can_reserve = 0;
        return;
    }
    fail_local(w, TSR_ERROR(TSR_ERR_IO, "cannot reserve %lld bytes for %s in %s: %s", (long long)bytes, name,
                            w->tmp_path, strerror(errno)), doing);
#else
    (void)w, (void)dset, (void)name, (void)bytes, (void)doing;
#endif
}

tsr_status_t tsr_ckpt_writer_create(tsr_comm_t comm, const char *dir, int64_t step, tsr_ckpt_writer_t *out)
{
    TSR__REGION(NULL, TSR_PROF_CKPT, "create", NULL);
    tsr_status_t rc = TSR_OK;
    hid_t fapl = -1;
    struct tsr_ckpt_writer *w = tsr__calloc(1, sizeof *w);
    *out = NULL;
    tsr__ckpt_quiet();
    if (!w)
        return TSR_ERROR(TSR_ERR_OUT_OF_MEMORY, "no memory for a checkpoint writer");
    w->comm = comm;
    w->file = -1;
    w->fd = -1;
    w->reserve_fd = -1;
    w->can_reserve = 1;
    w->failed_rank = -1;
    w->step = step;
    snprintf(w->final_name, sizeof w->final_name, "step_%lld.h5", (long long)step);
    if ((rc = parse_fault(w)) != TSR_OK)
        fail_local(w, rc, "starting");
    else if (step < 0)
        fail_local(w, TSR_ERROR(TSR_ERR_INVALID_ARG, "step %lld is negative", (long long)step), "starting");
    else if (!(w->dir = tsr__strdupf("%s", dir ? dir : "")))
        fail_local(w, TSR_ERROR(TSR_ERR_OUT_OF_MEMORY, "no memory for a path"), "starting");
    else if (tsr_comm_rank(comm) == 0 && (rc = tsr__ckpt_make_dir(dir)) != TSR_OK)
        fail_local(w, rc, "starting");
    rc = TSR_OK;
    if (tsr_comm_rank(comm) == 0)
        job_name(w->job, sizeof w->job);
    TSR_TRY(agree(w));
    TSR_TRY(tsr_comm_bcast(comm, w->job, sizeof w->job, TSR_DTYPE_U8, 0));
    w->tmp_path = tsr__strdupf("%s/%s.%s.tmp", dir, w->final_name, w->job);
    w->reserve_path = tsr__strdupf("%s/%s.%s.reserve", dir, w->final_name, w->job);
    if (!w->tmp_path || !w->reserve_path)
        fail_local(w, TSR_ERROR(TSR_ERR_OUT_OF_MEMORY, "no memory for a path"), "starting");
    else if (tsr_comm_rank(comm) == 0 && (rc = prepare_files(w)) != TSR_OK)
        fail_local(w, rc, "creating the file");
    rc = TSR_OK;
    TSR_TRY(agree(w));

    fapl = tsr__ckpt_fapl(comm);
    if (fapl < 0 || (w->file = H5Fcreate(w->tmp_path, H5F_ACC_TRUNC, H5P_DEFAULT, fapl)) < 0)
        fail_local(w, CKPT_H5_ERROR(TSR_ERR_IO, "cannot create %s", w->tmp_path), "creating the file");
    TSR_TRY(agree(w));

    /* Every rank writes the same attribute values: rank 0's clock decides "created". */
    char created[32];
    time_t now = time(NULL);
    strftime(created, sizeof created, "%Y-%m-%dT%H:%M:%SZ", gmtime(&now));
    TSR_TRY(tsr_comm_bcast(comm, created, sizeof created, TSR_DTYPE_U8, 0));
    *out = w;
    TSR_TRY(tsr_ckpt_set_str(w, "/", "format", TSR_CKPT_FORMAT));
    TSR_TRY(tsr_ckpt_set_i64(w, "/", "version", TSR_CKPT_VERSION));
    TSR_TRY(tsr_ckpt_set_i64(w, "/", "step", step));
    TSR_TRY(tsr_ckpt_set_str(w, "/", "created", created));
cleanup:
    if (fapl >= 0)
        H5Pclose(fapl);
    if (rc != TSR_OK) {
        *out = NULL;
        tsr_ckpt_abort(&w);
    }
    return rc;
}

void tsr_ckpt_writer_fail(tsr_ckpt_writer_t w, tsr_status_t status)
{
    fail_local(w, status != TSR_OK ? status : TSR_ERR_INTERNAL, "preparing the checkpoint");
}

/* Create (or open) a dataset of the given type and shape, creating its groups. */
static hid_t create_dataset(hid_t file, const char *name, hid_t type, int ndim, const int64_t dims[])
{
    hsize_t hdims[2] = {(hsize_t)dims[0], ndim == 2 ? (hsize_t)dims[1] : 0};
    hid_t space = H5Screate_simple(ndim, hdims, NULL);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    hid_t dset = -1;
    if (space >= 0 && lcpl >= 0 && H5Pset_create_intermediate_group(lcpl, 1) >= 0)
        dset = H5Dcreate2(file, name, type, space, lcpl, H5P_DEFAULT, H5P_DEFAULT);
    CKPT_CLOSE(lcpl, space);
    return dset;
}

static tsr_status_t write_checksum(hid_t dset, uint64_t checksum)
{
    tsr_status_t rc = TSR_OK;
    hid_t space = H5Screate(H5S_SCALAR), attr = -1;
    CKPT_CALL_H5(space, "dataspace");
    CKPT_CALL_H5(attr = H5Acreate2(dset, "checksum", H5T_STD_U64LE, space, H5P_DEFAULT, H5P_DEFAULT),
                 "cannot create the checksum attribute");
    CKPT_CALL_H5(H5Awrite(attr, H5T_NATIVE_UINT64, &checksum), "cannot write the checksum attribute");
cleanup:
    CKPT_CLOSE(attr, space);
    return rc;
}

/* A failed H5Dwrite: where the file system said why (errno survives HDF5 and MPI-IO, e.g.
 * "No space left on device" where fallocate could not reserve the bytes first), say it. */
static tsr_status_t write_error(const struct tsr_ckpt_writer *w, const char *name)
{
    int err = errno;
    if (err == ENOSPC || err == EDQUOT || err == EIO || err == EFBIG || err == EROFS)
        return CKPT_H5_ERROR(TSR_ERR_IO, "cannot write dataset %s to %s: %s", name, w->tmp_path, strerror(err));
    return CKPT_H5_ERROR(TSR_ERR_IO, "cannot write dataset %s to %s", name, w->tmp_path);
}

/* This rank's part of a dataset must be finite: a checkpoint never holds NaN or Inf. */
static tsr_status_t check_finite(const char *name, const tsr_ckpt_piece_t *piece, const float *data)
{
    int nonneg = tsr__ckpt_is_second_moment(name);
    int64_t bad = tsr__ckpt_bad_value(data, piece->count, nonneg);
    if (bad < 0)
        return TSR_OK;
    return TSR_ERROR(TSR_ERR_INVALID_ARG, "dataset %s: element %lld of this rank's piece is %g (a checkpoint holds %s)",
                     name, (long long)bad, (double)data[bad],
                     nonneg && isfinite(data[bad]) ? "no negative second moment" : "finite values only");
}

static int injected(const struct tsr_ckpt_writer *w, const char *name)
{
    return w->fault_dataset && strcmp(w->fault_dataset, name) == 0;
}

tsr_status_t tsr_ckpt_write_f32(tsr_ckpt_writer_t w, const char *name, int ndim, const int64_t dims[],
                                const tsr_ckpt_piece_t *piece, const float *data)
{
    TSR__REGION(NULL, TSR_PROF_CKPT, "write", NULL);
    tsr_status_t rc = TSR_OK;
    hid_t dset = -1, fspace = -1, mspace = -1, dxpl = -1;
    char doing[300];
    snprintf(doing, sizeof doing, "writing %s", name);
    tsr__ckpt_quiet();

    rc = tsr__ckpt_check_piece(name, ndim, dims, piece);
    if (rc == TSR_OK && injected(w, name))
        rc = TSR_ERROR(TSR_ERR_IO, "injected fault (TSR_CKPT_FAULT=%s)", getenv("TSR_CKPT_FAULT"));
    if (rc == TSR_OK)
        rc = check_finite(name, piece, data);
    if (rc != TSR_OK)
        fail_local(w, rc, doing);
    /* When every rank's piece is one contiguous run (ZeRO shards, row blocks), independent
     * writes go straight to the file; otherwise collective buffering assembles the strided
     * pieces of 2D blocks into large writes. All ranks must choose the same. */
    int fragmented = 0;
    TSR_TRY(agree_max(w, !contiguous_in_file(ndim, dims, piece), &fragmented));
    H5FD_mpio_xfer_t mode = fragmented ? H5FD_MPIO_COLLECTIVE : H5FD_MPIO_INDEPENDENT;

    if ((dset = create_dataset(w->file, name, H5T_IEEE_F32LE, ndim, dims)) < 0)
        fail_local(w, CKPT_H5_ERROR(TSR_ERR_HDF5, "cannot create dataset %s", name), doing);
    reserve_dataset(w, dset, name, (ndim == 2 ? dims[0] * dims[1] : dims[0]) * (int64_t)sizeof(float), doing);
    TSR_TRY(agree(w));

    hsize_t mcount = (hsize_t)(piece->count > 0 ? piece->count : 1);
    if ((fspace = H5Dget_space(dset)) < 0 || (mspace = H5Screate_simple(1, &mcount, NULL)) < 0 ||
        (dxpl = H5Pcreate(H5P_DATASET_XFER)) < 0 || H5Pset_dxpl_mpio(dxpl, mode) < 0) {
        fail_local(w, CKPT_H5_ERROR(TSR_ERR_HDF5, "cannot set up the write of %s", name), doing);
    } else if ((rc = tsr__ckpt_select_piece(fspace, ndim, dims, piece)) != TSR_OK ||
               (piece->count == 0 && H5Sselect_none(mspace) < 0)) {
        fail_local(w, rc ? rc : CKPT_H5_ERROR(TSR_ERR_HDF5, "selection"), doing);
    } else if ((errno = 0, H5Dwrite(dset, H5T_NATIVE_FLOAT, mspace, fspace, dxpl, data)) < 0) {
        fail_local(w, write_error(w, name), doing);
    }
    rc = TSR_OK;
    TSR_TRY(agree(w));

    /* The pieces must cover the dataset exactly once; the checksum is their sum. */
    uint64_t checksum = tsr__ckpt_piece_checksum(ndim, dims, piece, data);
    int64_t count = piece->count, total = ndim == 2 ? dims[0] * dims[1] : dims[0];
    TSR_TRY(tsr__ckpt_sum(w->comm, &checksum, &count));
    if (count != total) {
        fail_local(w, TSR_ERROR(TSR_ERR_INVALID_ARG, "the ranks' pieces hold %lld elements of %lld: they must "
                                "cover the dataset exactly once", (long long)count, (long long)total), doing);
    } else if ((rc = write_checksum(dset, checksum)) != TSR_OK) {
        fail_local(w, rc, doing);
    }
    rc = TSR_OK;
    TSR_TRY(agree(w));
cleanup:
    CKPT_CLOSE(dxpl, mspace, fspace, dset);
    return rc;
}

tsr_status_t tsr_ckpt_write_i64(tsr_ckpt_writer_t w, const char *name, int64_t n, const int64_t *values)
{
    TSR__REGION(NULL, TSR_PROF_CKPT, "write", NULL);
    tsr_status_t rc = TSR_OK;
    hid_t dset = -1, space = -1, dxpl = -1;
    const int64_t dims[1] = {n};
    uint64_t checksum = 0;
    char doing[300];
    snprintf(doing, sizeof doing, "writing %s", name);
    tsr__ckpt_quiet();
    if (n < 1 || n > CKPT_MAX_ELEMENTS)
        fail_local(w, TSR_ERROR(TSR_ERR_INVALID_ARG, "dataset %s: %lld values", name, (long long)n), doing);
    else if (injected(w, name))
        fail_local(w, TSR_ERROR(TSR_ERR_IO, "injected fault (TSR_CKPT_FAULT=%s)", getenv("TSR_CKPT_FAULT")), doing);
    TSR_TRY(agree(w));
    if ((dset = create_dataset(w->file, name, H5T_STD_I64LE, 1, dims)) < 0)
        fail_local(w, CKPT_H5_ERROR(TSR_ERR_HDF5, "cannot create dataset %s", name), doing);
    reserve_dataset(w, dset, name, n * (int64_t)sizeof(int64_t), doing);
    TSR_TRY(agree(w));
    if ((space = H5Dget_space(dset)) < 0 || (dxpl = H5Pcreate(H5P_DATASET_XFER)) < 0 ||
        H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE) < 0 ||
        (tsr_comm_rank(w->comm) != 0 && H5Sselect_none(space) < 0) ||
        (errno = 0, H5Dwrite(dset, H5T_NATIVE_INT64, space, space, dxpl, values)) < 0)
        fail_local(w, write_error(w, name), doing);
    TSR_TRY(agree(w));
    /* Rank 0's values are the ones written: its checksum is the one every rank stores. */
    if (tsr_comm_rank(w->comm) == 0)
        checksum = tsr_ckpt_checksum_i64(0, (size_t)n, values);
    TSR_TRY(tsr_comm_bcast(w->comm, &checksum, sizeof checksum, TSR_DTYPE_U8, 0));
    if ((rc = write_checksum(dset, checksum)) != TSR_OK)
        fail_local(w, rc, doing);
    rc = TSR_OK;
    TSR_TRY(agree(w));
cleanup:
    CKPT_CLOSE(dxpl, space, dset);
    return rc;
}

/* A group as the metadata checksum names it: "/" or "/a/b", no trailing or doubled '/'. */
static int canonical_group(const char *group)
{
    if (!group || group[0] != '/')
        return 0;
    if (group[1] == '\0')
        return 1;
    return !strstr(group, "//") && group[strlen(group) - 1] != '/';
}

/*
 * Write one scalar attribute of `type` from `value` on a group; every rank alike. Its
 * share of the metadata checksum is kind and the bytes at sum_value (sum_len of them).
 */
static tsr_status_t set_attr(struct tsr_ckpt_writer *w, const char *group, const char *name, hid_t file_type,
                             hid_t mem_type, const void *value, char kind, const void *sum_value, size_t sum_len)
{
    tsr_status_t rc = TSR_OK;
    hid_t g = -1, space = -1, attr = -1;
    char doing[300];
    snprintf(doing, sizeof doing, "setting %s attribute %s", group ? group : "(null)", name ? name : "(null)");
    tsr__ckpt_quiet();
    if (!canonical_group(group) || !name || !*name)
        fail_local(w, TSR_ERROR(TSR_ERR_INVALID_ARG, "attribute %s of group %s: expected a group \"/\" or \"/a/b\" "
                                "and a name", name ? name : "(null)", group ? group : "(null)"), doing);
    else if (strcmp(group, "/") == 0 && strcmp(name, CKPT_METADATA_CHECKSUM) == 0)
        fail_local(w, TSR_ERROR(TSR_ERR_INVALID_ARG, "the root attribute %s is the writer's own", name), doing);
    TSR_TRY(agree(w));
    if ((g = tsr__ckpt_group(w->file, group, 1)) < 0 || (space = H5Screate(H5S_SCALAR)) < 0 ||
        (attr = H5Acreate2(g, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT)) < 0 ||
        H5Awrite(attr, mem_type, value) < 0)
        fail_local(w, CKPT_H5_ERROR(TSR_ERR_HDF5, "cannot set attribute %s of %s", name, group), doing);
    TSR_TRY(agree(w));
    w->meta_sum += tsr__ckpt_attr_checksum(group, name, kind, sum_value, sum_len);
cleanup:
    CKPT_CLOSE(attr, space, g);
    return rc;
}

tsr_status_t tsr_ckpt_set_i64(tsr_ckpt_writer_t w, const char *group, const char *name, int64_t value)
{
    return set_attr(w, group, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &value, 'i', &value, sizeof value);
}

tsr_status_t tsr_ckpt_set_f64(tsr_ckpt_writer_t w, const char *group, const char *name, double value)
{
    return set_attr(w, group, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &value, 'f', &value, sizeof value);
}

tsr_status_t tsr_ckpt_set_str(tsr_ckpt_writer_t w, const char *group, const char *name, const char *value)
{
    hid_t type = H5Tcopy(H5T_C_S1);
    tsr_status_t rc;
    tsr__ckpt_quiet();
    if (type < 0 || !value || H5Tset_size(type, strlen(value) + 1) < 0 || H5Tset_strpad(type, H5T_STR_NULLTERM) < 0)
        rc = TSR_ERROR(TSR_ERR_HDF5, "cannot make a string type for %s", name);
    else
        rc = set_attr(w, group, name, type, type, value, 's', value, strlen(value));
    if (type >= 0)
        H5Tclose(type);
    return rc;
}

/* The root attribute that seals every other attribute (written last, by commit). */
static tsr_status_t write_metadata_checksum(struct tsr_ckpt_writer *w)
{
    tsr_status_t rc = TSR_OK;
    hid_t g = -1, space = -1, attr = -1;
    int64_t sum = (int64_t)w->meta_sum; /* stored as the int64 of the same bits */
    CKPT_CALL_H5(g = H5Gopen2(w->file, "/", H5P_DEFAULT), "root group");
    CKPT_CALL_H5(space = H5Screate(H5S_SCALAR), "dataspace");
    CKPT_CALL_H5(attr = H5Acreate2(g, CKPT_METADATA_CHECKSUM, H5T_STD_I64LE, space, H5P_DEFAULT, H5P_DEFAULT),
                 "cannot create the metadata checksum");
    CKPT_CALL_H5(H5Awrite(attr, H5T_NATIVE_INT64, &sum), "cannot write the metadata checksum");
cleanup:
    CKPT_CLOSE(attr, space, g);
    return rc;
}

/* fsync a file or directory by path. */
static int sync_path(const char *path)
{
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return -1;
    int r = fsync(fd);
    close(fd);
    return r;
}

/* Delete step_<N>.h5 files beyond the newest `keep` (rank 0 only), never `current`, the file
 * latest now names (a run resumed from an older checkpoint writes below newer step numbers). */
static void retain(const char *dir, int keep, const char *current)
{
    DIR *d = opendir(dir);
    long long steps[4096];
    int n = 0;
    if (!d)
        return;
    for (struct dirent *e; (e = readdir(d)) && n < 4096;) {
        long long s;
        char tail[8];
        if (sscanf(e->d_name, "step_%lld.h%2s", &s, tail) == 2 && strcmp(tail, "5") == 0 &&
            strcmp(e->d_name, current) != 0)
            steps[n++] = s;
    }
    closedir(d);
    for (int i = 0; i < n; i++) {
        int newer = 0;
        for (int j = 0; j < n; j++)
            newer += steps[j] > steps[i];
        char *path = newer + 1 >= keep ? tsr__strdupf("%s/step_%lld.h5", dir, steps[i]) : NULL;
        if (path)
            unlink(path);
        free(path);
    }
}

/* Rank 0: give back blocks reserved past the end of the closed file (growing and shrinking
 * it by a byte drops every block beyond its size, on any file system). */
static void trim_reservation(struct tsr_ckpt_writer *w)
{
    struct stat st;
    if (w->fd >= 0 && fstat(w->fd, &st) == 0 && ftruncate(w->fd, st.st_size + 1) == 0 &&
        ftruncate(w->fd, st.st_size) != 0)
        fail_local(w, TSR_ERROR(TSR_ERR_IO, "cannot truncate %s: %s", w->tmp_path, strerror(errno)),
                   "closing the file");
}

/* Rank 0's part of a commit: make the file durable, rename it, replace latest. */
static tsr_status_t publish(struct tsr_ckpt_writer *w, int keep)
{
    tsr_status_t rc = TSR_OK;
    FILE *f = NULL;
    char *final_path = tsr__strdupf("%s/%s", w->dir, w->final_name);
    char *latest_tmp = tsr__strdupf("%s/latest.%s.tmp", w->dir, w->job);
    char *latest = tsr__strdupf("%s/latest", w->dir);
    TSR_CHECK(final_path && latest_tmp && latest, TSR_ERR_OUT_OF_MEMORY, "no memory for a path");
    TSR_CHECK(fsync(w->fd) == 0 && rename(w->tmp_path, final_path) == 0, TSR_ERR_IO,
              "cannot make %s durable as %s: %s", w->tmp_path, final_path, strerror(errno));
    f = fopen(latest_tmp, "w");
    if (!f || fprintf(f, "%s\n", w->final_name) < 0 || fflush(f) != 0 || fsync(fileno(f)) != 0) {
        int err = errno;
        unlink(latest_tmp);
        TSR_CHECK(0, TSR_ERR_IO, "cannot write %s: %s (%s is complete)", latest_tmp, strerror(err), final_path);
    }
    int closed = fclose(f);
    f = NULL;
    TSR_CHECK(closed == 0, TSR_ERR_IO, "cannot write %s: %s (%s is complete)", latest_tmp, strerror(errno),
              final_path);
    TSR_CHECK(rename(latest_tmp, latest) == 0, TSR_ERR_IO, "cannot replace %s: %s (%s is complete)", latest,
              strerror(errno), final_path);
    sync_path(w->dir);
    if (keep > 0)
        retain(w->dir, keep, w->final_name);
cleanup:
    if (f)
        fclose(f);
    free(final_path);
    free(latest_tmp);
    free(latest);
    return rc;
}

static void free_writer(struct tsr_ckpt_writer *w)
{
    if (w->fd >= 0)
        close(w->fd);
    free(w->dir);
    free(w->tmp_path);
    free(w->reserve_path);
    free(w->fault_dataset);
    free(w);
}

tsr_status_t tsr_ckpt_commit(tsr_ckpt_writer_t *wp, int keep)
{
    TSR__REGION(NULL, TSR_PROF_CKPT, "commit", NULL);
    struct tsr_ckpt_writer *w = *wp;
    tsr__ckpt_quiet();
    tsr_status_t rc = agree(w);
    if (rc == TSR_OK) {
        if ((rc = write_metadata_checksum(w)) != TSR_OK)
            fail_local(w, rc, "sealing the attributes");
        rc = agree(w);
    }
    if (rc == TSR_OK) {
        release_reserve(w);
        rc = agree(w); /* the room is free before any rank flushes metadata into it */
    }
    if (rc == TSR_OK) {
        if (H5Fclose(w->file) < 0)
            fail_local(w, CKPT_H5_ERROR(TSR_ERR_IO, "cannot close %s", w->tmp_path), "closing the file");
        w->file = -1;
        if (tsr_comm_rank(w->comm) == 0)
            trim_reservation(w);
        rc = agree(w);
    }
    if (rc == TSR_OK && tsr_comm_rank(w->comm) == 0) {
        tsr_status_t published = publish(w, keep);
        if (published != TSR_OK)
            fail_local(w, published, "publishing the checkpoint");
    }
    if (rc == TSR_OK)
        rc = agree(w);
    if (rc == TSR_OK) {
        free_writer(w);
        *wp = NULL;
        return TSR_OK;
    }
    /* Keep the agreed error for the caller: tsr_ckpt_abort() may raise none. */
    char detail[1024];
    snprintf(detail, sizeof detail, "%s", tsr_last_error());
    tsr_ckpt_abort(wp);
    return TSR_ERROR(rc, "%s", detail);
}

void tsr_ckpt_abort(tsr_ckpt_writer_t *wp)
{
    if (!wp || !*wp)
        return;
    struct tsr_ckpt_writer *w = *wp;
    tsr__ckpt_quiet();
    release_reserve(w);
    tsr_comm_barrier(w->comm); /* the room is free before any rank flushes metadata into it */
    if (w->file >= 0)
        H5Fclose(w->file); /* collective: every rank aborts at the same agreed point */
    if (tsr_comm_rank(w->comm) == 0 && w->tmp_path && w->fd >= 0)
        unlink(w->tmp_path);
    tsr_comm_barrier(w->comm); /* when any rank returns, the temporary files are gone */
    free_writer(w);
    *wp = NULL;
}

tsr_status_t tsr_ckpt_latest(const char *dir, char *path, size_t len)
{
    tsr_status_t rc = TSR_OK;
    char name[NAME_MAX + 2] = "";
    FILE *f = NULL;
    char *latest = tsr__strdupf("%s/latest", dir);
    TSR_CHECK(latest, TSR_ERR_OUT_OF_MEMORY, "no memory for a path");
    TSR_TRY(tsr__stat_regular(latest, "the file naming the latest checkpoint"));
    f = fopen(latest, "r");
    TSR_CHECK(f, TSR_ERR_IO, "%s: %s (no checkpoint has been committed there)", latest, strerror(errno));
    size_t got = fread(name, 1, sizeof name - 1, f);
    name[got] = '\0';
    if (got > 0 && name[got - 1] == '\n')
        name[--got] = '\0';
    TSR_CHECK(got > 0 && got <= NAME_MAX && strcspn(name, "/\n \t") == got && strcmp(name, ".") &&
                  strcmp(name, ".."), TSR_ERR_FORMAT, "%s does not name a checkpoint file (expected one line "
              "such as step_10.h5)", latest);
    size_t need = strlen(dir) + 1 + got + 1;
    TSR_CHECK(need <= len, TSR_ERR_INVALID_ARG, "the path of the checkpoint %s names needs %zu bytes, the buffer "
              "has %zu", latest, need, len);
    snprintf(path, len, "%s/%s", dir, name);
cleanup:
    if (f)
        fclose(f);
    free(latest);
    return rc;
}
