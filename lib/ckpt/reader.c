/* reader.c: opening, checking and reading a checkpoint, on any layout. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ckpt/ckpt_impl.h"

struct tsr_ckpt_reader {
    tsr_comm_t comm;
    hid_t file;
    char path[4096];
};

static int is_hdf5(const char *path)
{
#if H5_VERSION_GE(1, 12, 0)
    return H5Fis_accessible(path, H5P_DEFAULT) > 0;
#else
    return H5Fis_hdf5(path) > 0;
#endif
}

tsr_status_t tsr_ckpt_reader_open(tsr_comm_t comm, const char *path, tsr_ckpt_reader_t *out)
{
    tsr_status_t rc = TSR_OK;
    ckpt_quiet_t quiet;
    hid_t fapl = -1;
    struct stat st;
    char format[64] = "";
    int64_t version = 0;
    struct tsr_ckpt_reader *r = tsr__calloc(1, sizeof *r);
    *out = NULL;
    if (!r)
        return TSR_ERROR(TSR_ERR_OUT_OF_MEMORY, "no memory for a checkpoint reader");
    tsr__ckpt_quiet_begin(&quiet);
    r->comm = comm;
    r->file = -1;
    snprintf(r->path, sizeof r->path, "%s", path);
    TSR_CHECK(stat(path, &st) == 0, TSR_ERR_IO, "%s: %s", path, strerror(errno));
    TSR_CHECK(is_hdf5(path), TSR_ERR_FORMAT,
              "%s is not an HDF5 file (expected a Tessera checkpoint)", path);
    CKPT_CALL_H5(fapl = tsr__ckpt_fapl(comm), "file access properties");
    r->file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    if (r->file < 0) {
        rc = CKPT_H5_ERROR(TSR_ERR_CORRUPT, "%s is truncated or damaged", path);
        goto cleanup;
    }
    *out = r;
    rc = tsr_ckpt_get_str(r, "/", "format", format, sizeof format);
    TSR_CHECK(rc == TSR_OK && strcmp(format, TSR_CKPT_FORMAT) == 0, TSR_ERR_FORMAT,
              "%s is not a Tessera checkpoint (its root attribute format is %s%s%s, expected \"%s\")", path,
              rc == TSR_OK ? "\"" : "missing", rc == TSR_OK ? format : "", rc == TSR_OK ? "\"" : "",
              TSR_CKPT_FORMAT);
    TSR_TRY(tsr_ckpt_get_i64(r, "/", "version", &version));
    TSR_CHECK(version >= 1 && version <= TSR_CKPT_VERSION, TSR_ERR_FORMAT,
              "%s is checkpoint format version %lld; this Tessera reads versions 1 to %d", path,
              (long long)version, TSR_CKPT_VERSION);
cleanup:
    if (fapl >= 0)
        H5Pclose(fapl);
    tsr__ckpt_quiet_end(&quiet);
    if (rc != TSR_OK) {
        *out = NULL;
        tsr_ckpt_reader_close(&r);
    }
    return rc;
}

void tsr_ckpt_reader_close(tsr_ckpt_reader_t *r)
{
    if (!r || !*r)
        return;
    if ((*r)->file >= 0) {
        ckpt_quiet_t quiet;
        tsr__ckpt_quiet_begin(&quiet);
        H5Fclose((*r)->file);
        tsr__ckpt_quiet_end(&quiet);
    }
    free(*r);
    *r = NULL;
}

/* Open a dataset and check its type class and exact shape. */
static tsr_status_t open_dataset(struct tsr_ckpt_reader *r, const char *name, H5T_class_t cls, int ndim,
                                 const int64_t dims[], hid_t *out)
{
    tsr_status_t rc = TSR_OK;
    hid_t dset = -1, space = -1, type = -1;
    hsize_t got[2] = {0, 0};
    *out = -1;
    TSR_CHECK(H5Lexists(r->file, name, H5P_DEFAULT) > 0, TSR_ERR_MISMATCH, "%s has no dataset %s", r->path, name);
    CKPT_CALL_H5(dset = H5Dopen2(r->file, name, H5P_DEFAULT), "%s: cannot open dataset %s", r->path, name);
    CKPT_CALL_H5(space = H5Dget_space(dset), "%s: dataset %s", r->path, name);
    CKPT_CALL_H5(type = H5Dget_type(dset), "%s: dataset %s", r->path, name);
    int rank = H5Sget_simple_extent_ndims(space);
    TSR_CHECK(rank == 1 || rank == 2, TSR_ERR_FORMAT, "%s: dataset %s has %d dimensions", r->path, name, rank);
    H5Sget_simple_extent_dims(space, got, NULL);
    TSR_CHECK(H5Tget_class(type) == cls, TSR_ERR_FORMAT, "%s: dataset %s has the wrong element type", r->path, name);
    TSR_CHECK(rank == ndim && (int64_t)got[0] == dims[0] && (ndim == 1 || (int64_t)got[1] == dims[1]),
              TSR_ERR_MISMATCH, "%s: dataset %s has shape %lld%s%lld, expected %lld%s%lld", r->path, name,
              (long long)got[0], rank == 2 ? "x" : "", rank == 2 ? (long long)got[1] : 0LL, (long long)dims[0],
              ndim == 2 ? "x" : "", ndim == 2 ? (long long)dims[1] : 0LL);
    *out = dset;
    dset = -1;
cleanup:
    CKPT_CLOSE(type, space, dset);
    return rc;
}

/* Read a piece of an open fp32 dataset collectively. */
static tsr_status_t read_piece(struct tsr_ckpt_reader *r, hid_t dset, const char *name, int ndim,
                               const int64_t dims[], const tsr_ckpt_piece_t *piece, float *data)
{
    tsr_status_t rc = TSR_OK;
    hid_t fspace = -1, mspace = -1, dxpl = -1;
    hsize_t mcount = (hsize_t)(piece->count > 0 ? piece->count : 1);
    CKPT_CALL_H5(fspace = H5Dget_space(dset), "dataset %s", name);
    CKPT_CALL_H5(mspace = H5Screate_simple(1, &mcount, NULL), "dataspace");
    CKPT_CALL_H5(dxpl = H5Pcreate(H5P_DATASET_XFER), "transfer properties");
    CKPT_CALL_H5(H5Pset_dxpl_mpio(dxpl, H5FD_MPIO_COLLECTIVE), "transfer properties");
    TSR_TRY(tsr__ckpt_select_piece(fspace, ndim, dims, piece));
    if (piece->count == 0)
        CKPT_CALL_H5(H5Sselect_none(mspace), "selection");
    CKPT_CALL_H5(H5Dread(dset, H5T_NATIVE_FLOAT, mspace, fspace, dxpl, data), "%s: cannot read dataset %s",
                 r->path, name);
cleanup:
    CKPT_CLOSE(dxpl, mspace, fspace);
    return rc;
}

/* After a collective step: if any rank failed, every rank returns the lowest failing
 * rank's error, so no rank goes on into a collective that another has left. */
static tsr_status_t reader_agree(struct tsr_ckpt_reader *r, tsr_status_t mine)
{
    int rank = tsr_comm_rank(r->comm), size = tsr_comm_size(r->comm);
    int flag = mine != TSR_OK ? size - rank : 0;
    char msg[512];
    int32_t status = (int32_t)mine;
    tsr_status_t rc = tsr_comm_allreduce(r->comm, TSR_IN_PLACE, &flag, 1, TSR_DTYPE_I32, TSR_REDUCE_MAX);
    if (rc != TSR_OK || flag == 0)
        return rc;
    snprintf(msg, sizeof msg, "%s", mine != TSR_OK ? tsr_last_error() : "");
    tsr_comm_bcast(r->comm, &status, 1, TSR_DTYPE_I32, size - flag);
    tsr_comm_bcast(r->comm, msg, sizeof msg, TSR_DTYPE_U8, size - flag);
    return TSR_ERROR((tsr_status_t)status, "%s (on rank %d)", msg, size - flag);
}

tsr_status_t tsr_ckpt_read_f32(tsr_ckpt_reader_t r, const char *name, int ndim, const int64_t dims[],
                               const tsr_ckpt_piece_t *piece, float *data)
{
    tsr_status_t rc = TSR_OK, mine;
    ckpt_quiet_t quiet;
    hid_t dset = -1;
    tsr_ckpt_piece_t nothing = tsr_ckpt_nothing();
    tsr__ckpt_quiet_begin(&quiet);
    /* A bad piece on one rank must not leave the others waiting in the collective read:
     * that rank reads nothing, and the ranks agree on the outcome afterwards. */
    mine = tsr__ckpt_check_piece(name, ndim, dims, piece);
    if (mine != TSR_OK)
        piece = &nothing;
    TSR_TRY(open_dataset(r, name, H5T_FLOAT, ndim, dims, &dset)); /* the same verdict on every rank */
    tsr_status_t read = read_piece(r, dset, name, ndim, dims, piece, data);
    rc = reader_agree(r, mine != TSR_OK ? mine : read);
cleanup:
    CKPT_CLOSE(dset);
    tsr__ckpt_quiet_end(&quiet);
    return rc;
}

tsr_status_t tsr_ckpt_read_i64(tsr_ckpt_reader_t r, const char *name, int64_t n, int64_t *values)
{
    tsr_status_t rc = TSR_OK;
    ckpt_quiet_t quiet;
    hid_t dset = -1;
    const int64_t dims[1] = {n};
    tsr__ckpt_quiet_begin(&quiet);
    TSR_TRY(open_dataset(r, name, H5T_INTEGER, 1, dims, &dset));
    CKPT_CALL_H5(H5Dread(dset, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, values), "%s: cannot read %s",
                 r->path, name);
cleanup:
    if (dset >= 0)
        H5Dclose(dset);
    tsr__ckpt_quiet_end(&quiet);
    return rc;
}

/* Verify one fp32 dataset: each rank checksums a slab of whole rows, the sums add up. */
static tsr_status_t verify_dataset(struct tsr_ckpt_reader *r, const char *name)
{
    tsr_status_t rc = TSR_OK;
    hid_t dset = -1, space = -1, attr = -1;
    hsize_t d[2] = {0, 1};
    uint64_t stored = 0, sum = 0;
    float *buf = NULL;
    CKPT_CALL_H5(dset = H5Dopen2(r->file, name, H5P_DEFAULT), "%s: cannot open %s", r->path, name);
    CKPT_CALL_H5(space = H5Dget_space(dset), "%s: dataset %s", r->path, name);
    int ndim = H5Sget_simple_extent_ndims(space);
    H5Sget_simple_extent_dims(space, d, NULL);
    TSR_CHECK(H5Aexists(dset, "checksum") > 0, TSR_ERR_CORRUPT, "%s: dataset %s has no checksum attribute",
              r->path, name);
    CKPT_CALL_H5(attr = H5Aopen(dset, "checksum", H5P_DEFAULT), "%s: %s checksum", r->path, name);
    CKPT_CALL_H5(H5Aread(attr, H5T_NATIVE_UINT64, &stored), "%s: %s checksum", r->path, name);

    /* Rows (elements, for 1D) are dealt out in balanced slabs, read a bounded batch at a time. */
    int64_t dims[2] = {(int64_t)d[0], (int64_t)(ndim == 2 ? d[1] : 0)};
    int64_t rows = ndim == 2 ? dims[0] : 1, cols = ndim == 2 ? dims[1] : dims[0];
    int rank = tsr_comm_rank(r->comm), size = tsr_comm_size(r->comm);
    int64_t units = ndim == 2 ? rows : cols, lo = units * rank / size, hi = units * (rank + 1) / size;
    int64_t unit_len = ndim == 2 ? cols : 1, per_batch = (1 << 22) / (unit_len > 0 ? unit_len : 1) + 1;
    int64_t batches = (units + size - 1) / size / per_batch + 1; /* the same number on every rank */
    buf = malloc((size_t)(per_batch * unit_len > 0 ? per_batch * unit_len : 1) * sizeof *buf);
    TSR_CHECK(buf, TSR_ERR_OUT_OF_MEMORY, "no memory to verify %s", name);
    for (int64_t b = 0, at = lo; b < batches; b++) {
        int64_t n = hi - at < per_batch ? hi - at : per_batch;
        tsr_ckpt_piece_t p = ndim == 2 ? tsr_ckpt_block(at, n, 0, cols) : tsr_ckpt_block(0, 1, at, n);
        if (n <= 0 || unit_len == 0)
            p = tsr_ckpt_nothing();
        TSR_TRY(read_piece(r, dset, name, ndim, dims, &p, buf));
        sum += tsr__ckpt_piece_checksum(ndim, dims, &p, buf);
        at += n > 0 ? n : 0;
    }
    int64_t count = 0;
    TSR_TRY(tsr__ckpt_sum(r->comm, &sum, &count));
    TSR_CHECK(sum == stored, TSR_ERR_CORRUPT, "%s: dataset %s fails its checksum (stored %016llx, computed %016llx)",
              r->path, name, (unsigned long long)stored, (unsigned long long)sum);
cleanup:
    free(buf);
    CKPT_CLOSE(attr, space, dset);
    return rc;
}

tsr_status_t tsr_ckpt_verify_dataset(tsr_ckpt_reader_t r, const char *name)
{
    ckpt_quiet_t quiet;
    tsr__ckpt_quiet_begin(&quiet);
    tsr_status_t rc = verify_dataset(r, name);
    tsr__ckpt_quiet_end(&quiet);
    return rc;
}

/* H5Ovisit's list of datasets, grown as it goes. */
typedef struct dataset_list {
    tsr_ckpt_dataset_info_t *items;
    size_t n, cap;
} dataset_list_t;

static herr_t collect_dataset(hid_t obj, const char *name, const H5O_info_t *info, void *data)
{
    dataset_list_t *list = data;
    if (info->type != H5O_TYPE_DATASET)
        return 0;
    if (list->n == list->cap) {
        list->cap = list->cap ? 2 * list->cap : 64;
        tsr_ckpt_dataset_info_t *grown = realloc(list->items, list->cap * sizeof *grown);
        if (!grown)
            return -1;
        list->items = grown;
    }
    tsr_ckpt_dataset_info_t *d = memset(&list->items[list->n], 0, sizeof *d);
    snprintf(d->name, sizeof d->name, "/%s", name);
    hid_t dset = H5Dopen2(obj, name, H5P_DEFAULT), space = H5Dget_space(dset), type = H5Dget_type(dset);
    hsize_t dims[2] = {0, 0};
    d->ndim = H5Sget_simple_extent_ndims(space);
    H5Sget_simple_extent_dims(space, dims, NULL);
    d->dims[0] = (int64_t)dims[0];
    d->dims[1] = d->ndim == 2 ? (int64_t)dims[1] : 0;
    d->is_float = H5Tget_class(type) == H5T_FLOAT;
    d->has_checksum = H5Aexists(dset, "checksum") > 0;
    if (d->has_checksum) {
        hid_t a = H5Aopen(dset, "checksum", H5P_DEFAULT);
        H5Aread(a, H5T_NATIVE_UINT64, &d->checksum);
        H5Aclose(a);
    }
    H5Tclose(type);
    H5Sclose(space);
    H5Dclose(dset);
    list->n++;
    return 0;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const tsr_ckpt_dataset_info_t *)a)->name, ((const tsr_ckpt_dataset_info_t *)b)->name);
}

tsr_status_t tsr_ckpt_list(tsr_ckpt_reader_t r, tsr_ckpt_dataset_info_t **out, size_t *n)
{
    tsr_status_t rc = TSR_OK;
    ckpt_quiet_t quiet;
    dataset_list_t list = {NULL, 0, 0};
    tsr__ckpt_quiet_begin(&quiet);
    CKPT_CALL_H5(H5Ovisit(r->file, H5_INDEX_NAME, H5_ITER_INC, collect_dataset, &list),
                 "%s: cannot list its datasets", r->path);
    /* H5Ovisit goes group by group ("/a/m" before "/a.b/m"); callers get plain name order. */
    qsort(list.items, list.n, sizeof *list.items, by_name);
cleanup:
    tsr__ckpt_quiet_end(&quiet);
    if (rc != TSR_OK) {
        free(list.items);
        list.items = NULL;
        list.n = 0;
    }
    *out = list.items;
    *n = list.n;
    return rc;
}

tsr_status_t tsr_ckpt_verify(tsr_ckpt_reader_t r)
{
    tsr_ckpt_dataset_info_t *list = NULL;
    size_t n = 0;
    tsr_status_t rc = tsr_ckpt_list(r, &list, &n);
    for (size_t i = 0; i < n && rc == TSR_OK; i++)
        if (list[i].is_float)
            rc = tsr_ckpt_verify_dataset(r, list[i].name);
    free(list);
    return rc;
}

/* H5Aiterate callback: format one attribute as text and hand it to the caller. */
typedef struct attr_visit {
    tsr_ckpt_attr_fn fn;
    void *ctx;
} attr_visit_t;

static herr_t visit_attr(hid_t loc, const char *name, const H5A_info_t *info, void *data)
{
    attr_visit_t *v = data;
    char text[512] = "?";
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT), type = H5Aget_type(a);
    (void)info;
    switch (H5Tget_class(type)) {
    case H5T_INTEGER: {
        int64_t x = 0;
        if (H5Aread(a, H5T_NATIVE_INT64, &x) >= 0)
            snprintf(text, sizeof text, "%lld", (long long)x);
        break;
    }
    case H5T_FLOAT: {
        double x = 0;
        if (H5Aread(a, H5T_NATIVE_DOUBLE, &x) >= 0)
            snprintf(text, sizeof text, "%.17g", x);
        break;
    }
    case H5T_STRING: {
        size_t size = H5Tget_size(type);
        hid_t mtype = H5Tcopy(H5T_C_S1);
        char *s = calloc(1, size + 1);
        if (s && H5Tis_variable_str(type) <= 0 && H5Tset_size(mtype, size) >= 0 && H5Aread(a, mtype, s) >= 0)
            snprintf(text, sizeof text, "%s", s);
        free(s);
        H5Tclose(mtype);
        break;
    }
    default:
        break;
    }
    H5Tclose(type);
    H5Aclose(a);
    v->fn(name, text, v->ctx);
    return 0;
}

tsr_status_t tsr_ckpt_attrs(tsr_ckpt_reader_t r, const char *group, tsr_ckpt_attr_fn fn, void *ctx)
{
    tsr_status_t rc = TSR_OK;
    ckpt_quiet_t quiet;
    attr_visit_t visit = {fn, ctx};
    hsize_t idx = 0;
    tsr__ckpt_quiet_begin(&quiet);
    hid_t g = tsr__ckpt_group(r->file, group, 0);
    if (g < 0) {
        H5Eclear2(H5E_DEFAULT);
        rc = TSR_ERROR(TSR_ERR_FORMAT, "%s has no group %s", r->path, group);
    } else if (H5Aiterate2(g, H5_INDEX_NAME, H5_ITER_INC, &idx, visit_attr, &visit) < 0) {
        rc = CKPT_H5_ERROR(TSR_ERR_FORMAT, "%s: cannot read the attributes of %s", r->path, group);
    }
    if (g >= 0)
        H5Gclose(g);
    tsr__ckpt_quiet_end(&quiet);
    return rc;
}

/* Open attribute group/name or fail with TSR_ERR_FORMAT naming it. */
static tsr_status_t open_attr(struct tsr_ckpt_reader *r, const char *group, const char *name, hid_t *g, hid_t *a)
{
    *a = -1;
    *g = tsr__ckpt_group(r->file, group, 0);
    if (*g < 0 || H5Aexists(*g, name) <= 0 || (*a = H5Aopen(*g, name, H5P_DEFAULT)) < 0) {
        H5Eclear2(H5E_DEFAULT);
        return TSR_ERROR(TSR_ERR_FORMAT, "%s has no attribute %s%s%s", r->path, group,
                         strcmp(group, "/") ? "/" : "", name);
    }
    return TSR_OK;
}

static tsr_status_t get_attr(struct tsr_ckpt_reader *r, const char *group, const char *name, hid_t mem_type,
                             void *value)
{
    tsr_status_t rc;
    ckpt_quiet_t quiet;
    hid_t g = -1, a = -1;
    tsr__ckpt_quiet_begin(&quiet);
    rc = open_attr(r, group, name, &g, &a);
    if (rc == TSR_OK && H5Aread(a, mem_type, value) < 0)
        rc = CKPT_H5_ERROR(TSR_ERR_FORMAT, "%s: attribute %s of %s has the wrong type", r->path, name, group);
    CKPT_CLOSE(a, g);
    tsr__ckpt_quiet_end(&quiet);
    return rc;
}

tsr_status_t tsr_ckpt_get_i64(tsr_ckpt_reader_t r, const char *group, const char *name, int64_t *value)
{
    return get_attr(r, group, name, H5T_NATIVE_INT64, value);
}

tsr_status_t tsr_ckpt_get_f64(tsr_ckpt_reader_t r, const char *group, const char *name, double *value)
{
    return get_attr(r, group, name, H5T_NATIVE_DOUBLE, value);
}

tsr_status_t tsr_ckpt_get_str(tsr_ckpt_reader_t r, const char *group, const char *name, char *buf, size_t len)
{
    tsr_status_t rc;
    ckpt_quiet_t quiet;
    hid_t g = -1, a = -1, ftype = -1, mtype = -1;
    tsr__ckpt_quiet_begin(&quiet);
    rc = open_attr(r, group, name, &g, &a);
    if (rc == TSR_OK) {
        ftype = H5Aget_type(a);
        size_t size = ftype >= 0 ? H5Tget_size(ftype) : 0;
        char *tmp = size ? calloc(1, size + 1) : NULL;
        mtype = H5Tcopy(H5T_C_S1);
        if (!tmp || H5Tget_class(ftype) != H5T_STRING || H5Tis_variable_str(ftype) > 0 ||
            H5Tset_size(mtype, size) < 0 || H5Aread(a, mtype, tmp) < 0)
            rc = CKPT_H5_ERROR(TSR_ERR_FORMAT, "%s: attribute %s of %s is not a string", r->path, name, group);
        else
            snprintf(buf, len, "%s", tmp);
        free(tmp);
    }
    CKPT_CLOSE(mtype, ftype, a, g);
    tsr__ckpt_quiet_end(&quiet);
    return rc;
}

tsr_status_t tsr_ckpt_expect_i64(tsr_ckpt_reader_t r, const char *group, const char *name, int64_t expected)
{
    int64_t got = 0;
    tsr_status_t rc = tsr_ckpt_get_i64(r, group, name, &got);
    if (rc != TSR_OK)
        return rc;
    if (got != expected)
        return TSR_ERROR(TSR_ERR_MISMATCH, "checkpoint %s %s is %lld, this run has %lld", group, name,
                         (long long)got, (long long)expected);
    return TSR_OK;
}

tsr_status_t tsr_ckpt_expect_str(tsr_ckpt_reader_t r, const char *group, const char *name, const char *expected)
{
    char got[256];
    tsr_status_t rc = tsr_ckpt_get_str(r, group, name, got, sizeof got);
    if (rc != TSR_OK)
        return rc;
    if (strcmp(got, expected) != 0)
        return TSR_ERROR(TSR_ERR_MISMATCH, "checkpoint %s %s is \"%s\", this run has \"%s\"", group, name, got,
                         expected);
    return TSR_OK;
}
