/*
 * writer.c: writing a checkpoint collectively, and committing it atomically.
 *
 * Failure protocol: before each collective step the ranks agree (one allreduce) on
 * whether any of them has failed. From the first failure on, every rank skips all
 * further HDF5 work, so no rank waits in a collective that another has left; the failing
 * rank's message is broadcast once, and tsr_ckpt_commit() reports it on every rank after
 * removing the temporary file. Earlier checkpoints and `latest` are never touched until
 * the new file is complete and durable.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "ckpt/ckpt_impl.h"

struct tsr_ckpt_writer {
    tsr_comm_t comm;
    hid_t file;
    char dir[4096];
    char tmp_path[4200];
    char final_name[64];
    int64_t step;
    tsr_status_t local_rc;   /* this rank's first failure, TSR_OK if none */
    char local_msg[512];
    int failed_rank;         /* agreed: the lowest rank that failed, -1 if none */
    tsr_status_t failed_rc;  /* agreed: its status and message */
    char failed_msg[512];
    char fault_dataset[256]; /* TSR_CKPT_FAULT injection for this rank, "" if none */
};

/* Remember this rank's first failure (the detail is in tsr_last_error()). */
static void fail_local(struct tsr_ckpt_writer *w, tsr_status_t rc, const char *doing)
{
    if (w->local_rc != TSR_OK)
        return;
    w->local_rc = rc;
    snprintf(w->local_msg, sizeof w->local_msg, "%s: %s", doing, tsr_last_error());
}

/* Agree whether any rank has failed; on the first failure, share its status and message.
 * Also reduce `mine` with MAX into *any (if any is not NULL), in the same allreduce. */
static tsr_status_t agree_max(struct tsr_ckpt_writer *w, int mine, int *any)
{
    if (w->failed_rank >= 0)
        return TSR_ERROR(w->failed_rc, "rank %d failed %s", w->failed_rank, w->failed_msg);
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
    return TSR_ERROR(w->failed_rc, "rank %d failed %s", w->failed_rank, w->failed_msg);
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

/* mkdir -p for one path, tolerating directories that exist. */
static int make_dirs(const char *path)
{
    char buf[4096];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1; *p; p++) {
        if (*p == '/') {
            *p = '\0';
            if (mkdir(buf, 0777) != 0 && errno != EEXIST)
                return -1;
            *p = '/';
        }
    }
    return mkdir(buf, 0777) != 0 && errno != EEXIST ? -1 : 0;
}

static void parse_fault(struct tsr_ckpt_writer *w)
{
    const char *env = getenv("TSR_CKPT_FAULT");
    const char *colon = env ? strchr(env, ':') : NULL;
    if (colon && atoi(env) == tsr_comm_rank(w->comm))
        snprintf(w->fault_dataset, sizeof w->fault_dataset, "%s", colon + 1);
}

tsr_status_t tsr_ckpt_writer_create(tsr_comm_t comm, const char *dir, int64_t step, tsr_ckpt_writer_t *out)
{
    tsr_status_t rc = TSR_OK;
    ckpt_quiet_t quiet;
    hid_t fapl = -1;
    struct tsr_ckpt_writer *w = tsr__calloc(1, sizeof *w);
    *out = NULL;
    if (!w)
        return TSR_ERROR(TSR_ERR_OUT_OF_MEMORY, "no memory for a checkpoint writer");
    tsr__ckpt_quiet_begin(&quiet);
    w->comm = comm;
    w->file = -1;
    w->failed_rank = -1;
    w->step = step;
    snprintf(w->dir, sizeof w->dir, "%s", dir);
    snprintf(w->final_name, sizeof w->final_name, "step_%lld.h5", (long long)step);
    snprintf(w->tmp_path, sizeof w->tmp_path, "%s/%s.tmp", dir, w->final_name);
    parse_fault(w);

    if (step < 0)
        fail_local(w, TSR_ERROR(TSR_ERR_INVALID_ARG, "step %lld is negative", (long long)step), "starting");
    else if (tsr_comm_rank(comm) == 0 && make_dirs(dir) != 0)
        fail_local(w, TSR_ERROR(TSR_ERR_IO, "cannot create directory %s: %s", dir, strerror(errno)), "starting");
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
    tsr__ckpt_quiet_end(&quiet);
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

tsr_status_t tsr_ckpt_write_f32(tsr_ckpt_writer_t w, const char *name, int ndim, const int64_t dims[],
                                const tsr_ckpt_piece_t *piece, const float *data)
{
    tsr_status_t rc = TSR_OK;
    ckpt_quiet_t quiet;
    hid_t dset = -1, fspace = -1, mspace = -1, dxpl = -1;
    char doing[300];
    snprintf(doing, sizeof doing, "writing %s", name);
    tsr__ckpt_quiet_begin(&quiet);

    rc = tsr__ckpt_check_piece(name, ndim, dims, piece);
    if (rc == TSR_OK && w->fault_dataset[0] && strcmp(w->fault_dataset, name) == 0)
        rc = TSR_ERROR(TSR_ERR_IO, "injected fault (TSR_CKPT_FAULT=%s)", getenv("TSR_CKPT_FAULT"));
    if (rc != TSR_OK)
        fail_local(w, rc, doing);
    /* When every rank's piece is one contiguous run (ZeRO shards, row blocks), independent
     * writes go straight to the file; otherwise collective buffering assembles the strided
     * pieces of 2D blocks into large writes. All ranks must choose the same. */
    int fragmented = 0;
    TSR_TRY(agree_max(w, !contiguous_in_file(ndim, dims, piece), &fragmented));
    H5FD_mpio_xfer_t mode = fragmented ? H5FD_MPIO_COLLECTIVE : H5FD_MPIO_INDEPENDENT;

    hsize_t mcount = (hsize_t)(piece->count > 0 ? piece->count : 1);
    if ((dset = create_dataset(w->file, name, H5T_IEEE_F32LE, ndim, dims)) < 0 ||
        (fspace = H5Dget_space(dset)) < 0 || (mspace = H5Screate_simple(1, &mcount, NULL)) < 0 ||
        (dxpl = H5Pcreate(H5P_DATASET_XFER)) < 0 || H5Pset_dxpl_mpio(dxpl, mode) < 0) {
        fail_local(w, CKPT_H5_ERROR(TSR_ERR_HDF5, "cannot create dataset %s", name), doing);
    } else if ((rc = tsr__ckpt_select_piece(fspace, ndim, dims, piece)) != TSR_OK ||
               (piece->count == 0 && H5Sselect_none(mspace) < 0)) {
        fail_local(w, rc ? rc : CKPT_H5_ERROR(TSR_ERR_HDF5, "selection"), doing);
    } else if (H5Dwrite(dset, H5T_NATIVE_FLOAT, mspace, fspace, dxpl, data) < 0) {
        fail_local(w, CKPT_H5_ERROR(TSR_ERR_IO, "cannot write dataset %s", name), doing);
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
    tsr__ckpt_quiet_end(&quiet);
    return rc;
}

tsr_status_t tsr_ckpt_write_i64(tsr_ckpt_writer_t w, const char *name, int64_t n, const int64_t *values)
{
    tsr_status_t rc = TSR_OK;
    ckpt_quiet_t quiet;
    hid_t dset = -1, space = -1, dxpl = -1;
    const int64_t dims[1] = {n};
    char doing[300];
    snprintf(doing, sizeof doing, "writing %s", name);
    tsr__ckpt_quiet_begin(&quiet);
    if (n < 1)
        fail_local(w, TSR_ERROR(TSR_ERR_INVALID_ARG, "dataset %s: %lld values", name, (long long)n), doing);
    else if (w->fault_dataset[0] && strcmp(w->fault_dataset, name) == 0)
        fail_local(w, TSR_ERROR(TSR_ERR_IO, "injected fault (TSR_CKPT_FAULT=%s)", getenv("TSR_CKPT_FAULT")), doing);
    TSR_TRY(agree(w));
    if ((dset = create_dataset(w->file, name, H5T_STD_I64LE, 1, dims)) < 0 || (space = H5Dget_space(dset)) < 0 ||
        (dxpl = H5Pcreate(H5P_DATASET_XFER)) < 0 || H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE) < 0 ||
        (tsr_comm_rank(w->comm) != 0 && H5Sselect_none(space) < 0) ||
        H5Dwrite(dset, H5T_NATIVE_INT64, space, space, dxpl, values) < 0)
        fail_local(w, CKPT_H5_ERROR(TSR_ERR_IO, "cannot write dataset %s", name), doing);
    TSR_TRY(agree(w));
cleanup:
    CKPT_CLOSE(dxpl, space, dset);
    tsr__ckpt_quiet_end(&quiet);
    return rc;
}

/* Write one scalar attribute of `type` from `value` on a group; every rank alike. */
static tsr_status_t set_attr(struct tsr_ckpt_writer *w, const char *group, const char *name, hid_t file_type,
                             hid_t mem_type, const void *value)
{
    tsr_status_t rc = TSR_OK;
    ckpt_quiet_t quiet;
    hid_t g = -1, space = -1, attr = -1;
    char doing[300];
    snprintf(doing, sizeof doing, "setting %s attribute %s", group, name);
    tsr__ckpt_quiet_begin(&quiet);
    TSR_TRY(agree(w));
    if ((g = tsr__ckpt_group(w->file, group, 1)) < 0 || (space = H5Screate(H5S_SCALAR)) < 0 ||
        (attr = H5Acreate2(g, name, file_type, space, H5P_DEFAULT, H5P_DEFAULT)) < 0 ||
        H5Awrite(attr, mem_type, value) < 0)
        fail_local(w, CKPT_H5_ERROR(TSR_ERR_HDF5, "cannot set attribute %s of %s", name, group), doing);
    TSR_TRY(agree(w));
cleanup:
    CKPT_CLOSE(attr, space, g);
    tsr__ckpt_quiet_end(&quiet);
    return rc;
}

tsr_status_t tsr_ckpt_set_i64(tsr_ckpt_writer_t w, const char *group, const char *name, int64_t value)
{
    return set_attr(w, group, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &value);
}

tsr_status_t tsr_ckpt_set_f64(tsr_ckpt_writer_t w, const char *group, const char *name, double value)
{
    return set_attr(w, group, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &value);
}

tsr_status_t tsr_ckpt_set_str(tsr_ckpt_writer_t w, const char *group, const char *name, const char *value)
{
    hid_t type = H5Tcopy(H5T_C_S1);
    tsr_status_t rc;
    if (type < 0 || H5Tset_size(type, strlen(value) + 1) < 0 || H5Tset_strpad(type, H5T_STR_NULLTERM) < 0)
        rc = TSR_ERROR(TSR_ERR_HDF5, "cannot make a string type for %s", name);
    else
        rc = set_attr(w, group, name, type, type, value);
    if (type >= 0)
        H5Tclose(type);
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

/* Delete step_<N>.h5 files beyond the newest `keep` (rank 0 only). */
static void retain(const char *dir, int keep)
{
    DIR *d = opendir(dir);
    long long steps[4096];
    int n = 0;
    if (!d)
        return;
    for (struct dirent *e; (e = readdir(d)) && n < 4096;) {
        long long s;
        char tail[8];
        if (sscanf(e->d_name, "step_%lld.h%2s", &s, tail) == 2 && strcmp(tail, "5") == 0)
            steps[n++] = s;
    }
    closedir(d);
    for (int i = 0; i < n; i++) {
        int newer = 0;
        for (int j = 0; j < n; j++)
            newer += steps[j] > steps[i];
        if (newer >= keep) {
            char path[4200];
            snprintf(path, sizeof path, "%s/step_%lld.h5", dir, steps[i]);
            unlink(path);
        }
    }
}

/* Rank 0's part of a commit: make the file durable, rename it, replace latest. */
static tsr_status_t publish(struct tsr_ckpt_writer *w, int keep)
{
    char final_path[4200], latest_tmp[4200], latest[4200];
    snprintf(final_path, sizeof final_path, "%s/%s", w->dir, w->final_name);
    snprintf(latest_tmp, sizeof latest_tmp, "%s/latest.tmp", w->dir);
    snprintf(latest, sizeof latest, "%s/latest", w->dir);
    if (sync_path(w->tmp_path) != 0 || rename(w->tmp_path, final_path) != 0)
        return TSR_ERROR(TSR_ERR_IO, "cannot make %s durable as %s: %s", w->tmp_path, final_path, strerror(errno));
    FILE *f = fopen(latest_tmp, "w");
    if (!f || fprintf(f, "%s\n", w->final_name) < 0 || fflush(f) != 0 || fsync(fileno(f)) != 0 || fclose(f) != 0) {
        int err = errno;
        if (f)
            fclose(f);
        unlink(latest_tmp);
        return TSR_ERROR(TSR_ERR_IO, "cannot write %s: %s (%s is complete)", latest_tmp, strerror(err), final_path);
    }
    if (rename(latest_tmp, latest) != 0)
        return TSR_ERROR(TSR_ERR_IO, "cannot replace %s: %s (%s is complete)", latest, strerror(errno), final_path);
    sync_path(w->dir);
    if (keep > 0)
        retain(w->dir, keep);
    return TSR_OK;
}

tsr_status_t tsr_ckpt_commit(tsr_ckpt_writer_t *wp, int keep)
{
    struct tsr_ckpt_writer *w = *wp;
    ckpt_quiet_t quiet;
    tsr_status_t rc = agree(w);
    tsr__ckpt_quiet_begin(&quiet);
    if (rc == TSR_OK) {
        if (H5Fclose(w->file) < 0)
            fail_local(w, CKPT_H5_ERROR(TSR_ERR_IO, "cannot close %s", w->tmp_path), "closing the file");
        w->file = -1;
        rc = agree(w);
    }
    if (rc == TSR_OK && tsr_comm_rank(w->comm) == 0) {
        tsr_status_t published = publish(w, keep);
        if (published != TSR_OK)
            fail_local(w, published, "publishing the checkpoint");
    }
    if (rc == TSR_OK)
        rc = agree(w);
    tsr__ckpt_quiet_end(&quiet);
    if (rc == TSR_OK) {
        free(w);
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
    ckpt_quiet_t quiet;
    tsr__ckpt_quiet_begin(&quiet);
    if (w->file >= 0)
        H5Fclose(w->file); /* collective: every rank aborts at the same agreed point */
    tsr__ckpt_quiet_end(&quiet);
    if (tsr_comm_rank(w->comm) == 0)
        unlink(w->tmp_path);
    tsr_comm_barrier(w->comm); /* when any rank returns, the temporary file is gone */
    free(w);
    *wp = NULL;
}

tsr_status_t tsr_ckpt_latest(const char *dir, char *path, size_t len)
{
    char latest[4200], name[256];
    snprintf(latest, sizeof latest, "%s/latest", dir);
    FILE *f = fopen(latest, "r");
    if (!f)
        return TSR_ERROR(TSR_ERR_IO, "%s: %s (no checkpoint has been committed there)", latest, strerror(errno));
    int got = fscanf(f, "%255s", name);
    fclose(f);
    if (got != 1 || strchr(name, '/'))
        return TSR_ERROR(TSR_ERR_FORMAT, "%s does not name a checkpoint file", latest);
    snprintf(path, len, "%s/%s", dir, name);
    return TSR_OK;
}
