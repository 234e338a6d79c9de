/*
 * reader.c: opening, checking and reading a checkpoint, on any layout.
 *
 * A checkpoint may be damaged or crafted, so nothing read from its structure is trusted
 * before it is checked: a dataset's rank before its dimensions are read, an attribute's
 * dataspace and type before its value is, the bytes a dataset stores before it is read.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "ckpt/ckpt_impl.h"

struct tsr_ckpt_reader {
    tsr_comm_t comm;
    hid_t file;
    int64_t version;
    char *path;
};

/* The longest string attribute read (a model name, a layout, a date): longer is damage. */
#define ATTR_STR_MAX 4096

static int is_hdf5(const char *path)
{
#if H5_VERSION_GE(1, 12, 0)
    return H5Fis_accessible(path, H5P_DEFAULT) > 0;
#else
    return H5Fis_hdf5(path) > 0;
#endif
}

/* "the root attribute format" or "attribute /config/model" */
static void attr_label(const char *group, const char *name, char *buf, size_t len)
{
    if (strcmp(group, "/") == 0)
        snprintf(buf, len, "root attribute %s", name);
    else
        snprintf(buf, len, "attribute %s/%s", group, name);
}

/* Open attribute group/name; TSR_ERR_FORMAT "PATH has no attribute ..." if it is missing. */
static tsr_status_t open_attr(struct tsr_ckpt_reader *r, const char *group, const char *name, hid_t *g, hid_t *a)
{
    char label[300];
    *a = -1;
    *g = tsr__ckpt_group(r->file, group, 0);
    if (*g < 0 || H5Aexists(*g, name) <= 0 || (*a = H5Aopen(*g, name, H5P_DEFAULT)) < 0) {
        H5Eclear2(H5E_DEFAULT);
        attr_label(group, name, label, sizeof label);
        return TSR_ERROR(TSR_ERR_FORMAT, "%s has no %s", r->path, label);
    }
    return TSR_OK;
}

/* What one scalar attribute holds, read by its stored type: an integer, a float or a
 * string (fixed-length, any padding, or variable-length). */
typedef struct attr_value {
    char kind; /* 'i', 'f' or 's' */
    int64_t i;
    double f;
    char s[ATTR_STR_MAX + 1];
    size_t len;
} attr_value_t;

/* Read a string attribute of type ftype. A fixed-length one is read with one more byte than
 * it stores, so a NULLPAD or SPACEPAD string keeps its last character. */
static herr_t read_string(hid_t a, hid_t ftype, attr_value_t *v)
{
    herr_t st = -1;
    hid_t mtype = H5Tcopy(H5T_C_S1);
    if (mtype < 0 || H5Tset_cset(mtype, H5Tget_cset(ftype)) < 0) {
        if (mtype >= 0)
            H5Tclose(mtype);
        return -1;
    }
    if (H5Tis_variable_str(ftype) > 0) {
        char *p = NULL;
        if (H5Tset_size(mtype, H5T_VARIABLE) >= 0 && (st = H5Aread(a, mtype, &p)) >= 0) {
            snprintf(v->s, sizeof v->s, "%s", p ? p : "");
            H5free_memory(p);
        }
    } else {
        size_t size = H5Tget_size(ftype);
        if (size > 0 && size <= ATTR_STR_MAX && H5Tset_size(mtype, size + 1) >= 0 &&
            H5Tset_strpad(mtype, H5T_STR_NULLTERM) >= 0)
            st = H5Aread(a, mtype, v->s);
        v->s[size <= ATTR_STR_MAX ? size : 0] = '\0';
    }
    v->len = strlen(v->s);
    H5Tclose(mtype);
    return st;
}

/* Read an open attribute into *v, checking first that it is one value of a kind we read. */
static tsr_status_t read_attr(struct tsr_ckpt_reader *r, hid_t a, const char *group, const char *name,
                              attr_value_t *v)
{
    tsr_status_t rc = TSR_OK;
    hid_t space = -1, type = -1;
    char label[300], tname[16];
    attr_label(group, name, label, sizeof label);
    memset(v, 0, sizeof *v);
    CKPT_CALL_H5(space = H5Aget_space(a), "%s: %s", r->path, label);
    CKPT_CALL_H5(type = H5Aget_type(a), "%s: %s", r->path, label);
    H5S_class_t sc = H5Sget_simple_extent_type(space);
    TSR_CHECK(sc == H5S_SCALAR || (sc == H5S_SIMPLE && H5Sget_simple_extent_npoints(space) == 1), TSR_ERR_FORMAT,
              "%s: %s holds %lld values (expected one)", r->path, label,
              sc == H5S_SIMPLE ? (long long)H5Sget_simple_extent_npoints(space) : 0LL);
    switch (H5Tget_class(type)) {
    case H5T_INTEGER:
        v->kind = 'i';
        CKPT_CALL_H5(H5Aread(a, H5T_NATIVE_INT64, &v->i), "%s: %s", r->path, label);
        break;
    case H5T_FLOAT:
        v->kind = 'f';
        CKPT_CALL_H5(H5Aread(a, H5T_NATIVE_DOUBLE, &v->f), "%s: %s", r->path, label);
        break;
    case H5T_STRING:
        v->kind = 's';
        TSR_CHECK(H5Tis_variable_str(type) > 0 || H5Tget_size(type) <= ATTR_STR_MAX, TSR_ERR_FORMAT,
                  "%s: %s is a string of %zu bytes (expected at most %d)", r->path, label, H5Tget_size(type),
                  ATTR_STR_MAX);
        CKPT_CALL_H5(read_string(a, type, v), "%s: %s", r->path, label);
        break;
    default:
        TSR_CHECK(0, TSR_ERR_FORMAT, "%s: %s is %s (expected an integer, a float or a string)", r->path, label,
                  tsr__ckpt_type_name(type, tname, sizeof tname));
    }
cleanup:
    CKPT_CLOSE(type, space);
    return rc;
}

static const char *kind_name(char kind)
{
    return kind == 'i' ? "an integer" : kind == 'f' ? "a float" : "a string";
}

/* Read attribute group/name, which must be of `kind`. */
static tsr_status_t get_attr(struct tsr_ckpt_reader *r, const char *group, const char *name, char kind,
                             attr_value_t *v)
{
    hid_t g = -1, a = -1;
    char label[300];
    tsr__ckpt_quiet();
    tsr_status_t rc = open_attr(r, group, name, &g, &a);
    if (rc == TSR_OK)
        rc = read_attr(r, a, group, name, v);
    if (rc == TSR_OK && v->kind != kind) {
        attr_label(group, name, label, sizeof label);
        rc = TSR_ERROR(TSR_ERR_FORMAT, "%s: %s is %s (expected %s)", r->path, label, kind_name(v->kind),
                       kind_name(kind));
    }
    CKPT_CLOSE(a, g);
    return rc;
}

tsr_status_t tsr_ckpt_reader_open(tsr_comm_t comm, const char *path, tsr_ckpt_reader_t *out)
{
    TSR__REGION(NULL, TSR_PROF_CKPT, "open", NULL);
    tsr_status_t rc = TSR_OK;
    hid_t fapl = -1;
    attr_value_t v;
    struct tsr_ckpt_reader *r = tsr__calloc(1, sizeof *r);
    *out = NULL;
    tsr__ckpt_quiet();
    TSR_CHECK(r, TSR_ERR_OUT_OF_MEMORY, "no memory for a checkpoint reader");
    r->comm = comm;
    r->file = -1;
    TSR_CHECK(path && *path, TSR_ERR_INVALID_ARG, "the checkpoint path is empty (expected a file)");
    TSR_CHECK(r->path = tsr__strdupf("%s", path), TSR_ERR_OUT_OF_MEMORY, "no memory for a path");
    /* A FIFO would block HDF5's open for ever, a directory fails obscurely: refuse both first. */
    TSR_TRY(tsr__stat_regular(path, "a checkpoint file"));
    TSR_CHECK(is_hdf5(path), TSR_ERR_FORMAT, "%s is not an HDF5 file (expected a Tessera checkpoint)", path);
    CKPT_CALL_H5(fapl = tsr__ckpt_fapl(comm), "file access properties");
    r->file = H5Fopen(path, H5F_ACC_RDONLY, fapl);
    if (r->file < 0) {
        rc = CKPT_H5_ERROR(TSR_ERR_CORRUPT, "%s is truncated or damaged", path);
        goto cleanup;
    }
    if (get_attr(r, "/", "format", 's', &v) != TSR_OK) {
        char why[512];
        snprintf(why, sizeof why, "%s", tsr_last_error());
        TSR_CHECK(0, TSR_ERR_FORMAT, "%s (not a Tessera checkpoint, whose format is \"%s\")", why, TSR_CKPT_FORMAT);
    }
    TSR_CHECK(strcmp(v.s, TSR_CKPT_FORMAT) == 0, TSR_ERR_FORMAT,
              "%s is not a Tessera checkpoint (its root attribute format is \"%s\", expected \"%s\")", path, v.s,
              TSR_CKPT_FORMAT);
    TSR_TRY(get_attr(r, "/", "version", 'i', &v));
    r->version = v.i;
    TSR_CHECK(r->version >= 1 && r->version <= TSR_CKPT_VERSION, TSR_ERR_FORMAT,
              "%s is checkpoint format version %lld; this Tessera reads versions 1 to %d", path,
              (long long)r->version, TSR_CKPT_VERSION);
    *out = r;
cleanup:
    if (fapl >= 0)
        H5Pclose(fapl);
    if (rc != TSR_OK)
        tsr_ckpt_reader_close(&r);
    return rc;
}

void tsr_ckpt_reader_close(tsr_ckpt_reader_t *r)
{
    if (!r || !*r)
        return;
    tsr__ckpt_quiet();
    if ((*r)->file >= 0)
        H5Fclose((*r)->file);
    free((*r)->path);
    free(*r);
    *r = NULL;
}

/* The element types a checkpoint's datasets have. */
enum elem { ELEM_OTHER, ELEM_F32, ELEM_I64 };

static enum elem elem_of(hid_t type)
{
    size_t size = H5Tget_size(type);
    if (H5Tget_class(type) == H5T_FLOAT && size == 4)
        return ELEM_F32;
    if (H5Tget_class(type) == H5T_INTEGER && size == 8 && H5Tget_sign(type) == H5T_SGN_2)
        return ELEM_I64;
    return ELEM_OTHER;
}

/* What a reader learns of a dataset before reading any of its values. */
typedef struct dset_info {
    int ndim;
    int64_t dims[2], n;
    enum elem elem;
    char type[16];
} dset_info_t;

/*
 * Check an open dataset: 1 or 2 dimensions, and every byte of it stored in the file, contiguous
 * as Tessera writes it (a dataset declared large with nothing stored would read as fill values
 * for ever).
 */
static tsr_status_t inspect(struct tsr_ckpt_reader *r, hid_t dset, const char *name, dset_info_t *d)
{
    tsr_status_t rc = TSR_OK;
    hid_t space = -1, type = -1, dcpl = -1;
    memset(d, 0, sizeof *d);
    CKPT_CALL_H5(space = H5Dget_space(dset), "%s: dataset %s", r->path, name);
    CKPT_CALL_H5(type = H5Dget_type(dset), "%s: dataset %s", r->path, name);
    CKPT_CALL_H5(dcpl = H5Dget_create_plist(dset), "%s: dataset %s", r->path, name);
    TSR_TRY(tsr__ckpt_shape(space, r->path, name, &d->ndim, d->dims));
    d->n = d->ndim == 2 ? d->dims[0] * d->dims[1] : d->dims[0];
    d->elem = elem_of(type);
    tsr__ckpt_type_name(type, d->type, sizeof d->type);
    H5D_layout_t layout = H5Pget_layout(dcpl);
    hsize_t stored = H5Dget_storage_size(dset), want = (hsize_t)d->n * H5Tget_size(type);
    TSR_CHECK(layout == H5D_CONTIGUOUS || layout == H5D_COMPACT, TSR_ERR_FORMAT,
              "%s: dataset %s is not stored contiguously (expected the layout Tessera writes)", r->path, name);
    TSR_CHECK(d->elem == ELEM_OTHER || stored == want, TSR_ERR_CORRUPT,
              "%s: dataset %s stores %llu of its %llu bytes", r->path, name, (unsigned long long)stored,
              (unsigned long long)want);
cleanup:
    CKPT_CLOSE(dcpl, type, space);
    return rc;
}

/* Open a dataset and check its element type and exact shape. */
static tsr_status_t open_dataset(struct tsr_ckpt_reader *r, const char *name, enum elem elem, int ndim,
                                 const int64_t dims[], hid_t *out)
{
    tsr_status_t rc = TSR_OK;
    hid_t dset = -1;
    dset_info_t d;
    char got[48], want[48];
    *out = -1;
    TSR_CHECK(H5Lexists(r->file, name, H5P_DEFAULT) > 0, TSR_ERR_MISMATCH, "%s has no dataset %s", r->path, name);
    CKPT_CALL_H5(dset = H5Dopen2(r->file, name, H5P_DEFAULT), "%s: cannot open dataset %s", r->path, name);
    TSR_TRY(inspect(r, dset, name, &d));
    TSR_CHECK(d.elem == elem, TSR_ERR_FORMAT, "%s: dataset %s is %s (expected %s)", r->path, name, d.type,
              elem == ELEM_F32 ? "float32" : "int64");
    TSR_CHECK(d.ndim == ndim && d.dims[0] == dims[0] && (ndim == 1 || d.dims[1] == dims[1]), TSR_ERR_MISMATCH,
              "%s: dataset %s has shape %s, expected %s", r->path, name, tsr_ckpt_format_shape(d.ndim, d.dims, got, sizeof got),
              tsr_ckpt_format_shape(ndim, dims, want, sizeof want));
    *out = dset;
    dset = -1;
cleanup:
    CKPT_CLOSE(dset);
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
    if (size == 1)
        return TSR_ERROR((tsr_status_t)status, "%s", msg);
    return TSR_ERROR((tsr_status_t)status, "%s (on rank %d)", msg, size - flag);
}

tsr_status_t tsr_ckpt_read_f32(tsr_ckpt_reader_t r, const char *name, int ndim, const int64_t dims[],
                               const tsr_ckpt_piece_t *piece, float *data)
{
    TSR__REGION(NULL, TSR_PROF_CKPT, "read", NULL);
    tsr_status_t rc = TSR_OK, mine;
    hid_t dset = -1;
    tsr_ckpt_piece_t nothing = tsr_ckpt_nothing();
    tsr__ckpt_quiet();
    /* A bad piece on one rank must not leave the others waiting in the collective read:
     * that rank reads nothing, and the ranks agree on the outcome afterwards. */
    mine = tsr__ckpt_check_piece(name, ndim, dims, piece);
    if (mine != TSR_OK)
        piece = &nothing;
    TSR_TRY(open_dataset(r, name, ELEM_F32, ndim, dims, &dset)); /* the same verdict on every rank */
    tsr_status_t read = read_piece(r, dset, name, ndim, dims, piece, data);
    rc = reader_agree(r, mine != TSR_OK ? mine : read);
cleanup:
    CKPT_CLOSE(dset);
    return rc;
}

/* Read an open dataset's "checksum" attribute: one unsigned 64-bit integer. */
static tsr_status_t stored_checksum(struct tsr_ckpt_reader *r, hid_t dset, const char *name, uint64_t *sum)
{
    tsr_status_t rc = TSR_OK;
    hid_t a = -1, space = -1, type = -1;
    TSR_CHECK(H5Aexists(dset, "checksum") > 0, TSR_ERR_CORRUPT, "%s: dataset %s has no checksum attribute",
              r->path, name);
    CKPT_CALL_H5(a = H5Aopen(dset, "checksum", H5P_DEFAULT), "%s: %s checksum", r->path, name);
    CKPT_CALL_H5(space = H5Aget_space(a), "%s: %s checksum", r->path, name);
    CKPT_CALL_H5(type = H5Aget_type(a), "%s: %s checksum", r->path, name);
    TSR_CHECK(H5Sget_simple_extent_npoints(space) == 1 && H5Tget_class(type) == H5T_INTEGER &&
                  H5Tget_size(type) == 8, TSR_ERR_CORRUPT,
              "%s: the checksum attribute of dataset %s is not one 64-bit integer", r->path, name);
    CKPT_CALL_H5(H5Aread(a, H5T_NATIVE_UINT64, sum), "%s: %s checksum", r->path, name);
cleanup:
    CKPT_CLOSE(type, space, a);
    return rc;
}

/* Read a whole open int64 dataset of n values (every rank alike) and check its checksum. */
static tsr_status_t read_i64_checked(struct tsr_ckpt_reader *r, hid_t dset, const char *name, int64_t n,
                                     int64_t *values)
{
    tsr_status_t rc = TSR_OK;
    uint64_t stored = 0;
    TSR_TRY(stored_checksum(r, dset, name, &stored));
    if (n > 0)
        CKPT_CALL_H5(H5Dread(dset, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, values), "%s: cannot read %s",
                     r->path, name);
    uint64_t sum = tsr_ckpt_checksum_i64(0, (size_t)n, values);
    TSR_CHECK(sum == stored, TSR_ERR_CORRUPT, "%s: dataset %s fails its checksum (stored %016llx, computed %016llx)",
              r->path, name, (unsigned long long)stored, (unsigned long long)sum);
cleanup:
    return rc;
}

tsr_status_t tsr_ckpt_read_i64(tsr_ckpt_reader_t r, const char *name, int64_t n, int64_t *values)
{
    TSR__REGION(NULL, TSR_PROF_CKPT, "read", NULL);
    tsr_status_t rc = TSR_OK;
    hid_t dset = -1;
    const int64_t dims[1] = {n};
    tsr__ckpt_quiet();
    TSR_TRY(open_dataset(r, name, ELEM_I64, 1, dims, &dset));
    TSR_TRY(read_i64_checked(r, dset, name, n, values));
cleanup:
    CKPT_CLOSE(dset);
    return rc;
}

/* The first value of v[0..n) a checkpoint may not hold: "nan at element 17 (expected ...)". */
static tsr_status_t check_values(struct tsr_ckpt_reader *r, const char *name, const float *v, int64_t n,
                                 int64_t first)
{
    int nonneg = tsr__ckpt_is_second_moment(name);
    int64_t bad = tsr__ckpt_bad_value(v, n, nonneg);
    if (bad < 0)
        return TSR_OK;
    return TSR_ERROR(TSR_ERR_CORRUPT, "%s: dataset %s holds %g at element %lld (expected %s)", r->path, name,
                     (double)v[bad], (long long)(first + bad),
                     nonneg && isfinite(v[bad]) ? "no negative second moment" : "finite values");
}

/* Verify an fp32 dataset: each rank checksums a slab of whole rows, the sums add up; every
 * value must be finite (and a second moment not negative). A rank that fails reads nothing
 * more but stays in the collective reads; the ranks agree at the end. */
static tsr_status_t verify_f32(struct tsr_ckpt_reader *r, hid_t dset, const char *name, const dset_info_t *d)
{
    tsr_status_t rc = TSR_OK, mine = TSR_OK;
    uint64_t stored = 0, sum = 0;
    float *buf = NULL;
    int64_t rows = d->ndim == 2 ? d->dims[0] : 1, cols = d->ndim == 2 ? d->dims[1] : d->dims[0];
    int rank = tsr_comm_rank(r->comm), size = tsr_comm_size(r->comm);
    /* Rows (elements, for 1D) are dealt out in balanced slabs, read a bounded batch at a time. */
    int64_t units = d->ndim == 2 ? rows : cols, lo = units / size * rank + (units % size < rank ? units % size : rank);
    int64_t hi = lo + units / size + (rank < units % size);
    int64_t unit_len = d->ndim == 2 ? cols : 1, per_batch = ((int64_t)1 << 22) / (unit_len > 0 ? unit_len : 1) + 1;
    int64_t batches = (units / size + 1) / per_batch + 1; /* the same number on every rank */
    int64_t buf_len = (hi - lo < per_batch ? hi - lo : per_batch) * unit_len;
    mine = stored_checksum(r, dset, name, &stored);
    if (mine == TSR_OK && !(buf = malloc((size_t)(buf_len > 0 ? buf_len : 1) * sizeof *buf)))
        mine = TSR_ERROR(TSR_ERR_OUT_OF_MEMORY, "no memory to verify %s", name);
    for (int64_t b = 0, at = lo; b < batches; b++) {
        int64_t n = hi - at < per_batch ? hi - at : per_batch;
        tsr_ckpt_piece_t p = d->ndim == 2 ? tsr_ckpt_block(at, n, 0, cols) : tsr_ckpt_block(0, 1, at, n);
        if (n <= 0 || unit_len == 0 || mine != TSR_OK)
            p = tsr_ckpt_nothing();
        tsr_status_t got = read_piece(r, dset, name, d->ndim, d->dims, &p, buf);
        if (mine == TSR_OK)
            mine = got != TSR_OK ? got : check_values(r, name, buf, p.count, at * unit_len);
        if (mine == TSR_OK)
            sum += tsr__ckpt_piece_checksum(d->ndim, d->dims, &p, buf);
        at += n > 0 ? n : 0;
    }
    TSR_TRY(reader_agree(r, mine));
    int64_t count = 0;
    TSR_TRY(tsr__ckpt_sum(r->comm, &sum, &count));
    TSR_CHECK(sum == stored, TSR_ERR_CORRUPT, "%s: dataset %s fails its checksum (stored %016llx, computed %016llx)",
              r->path, name, (unsigned long long)stored, (unsigned long long)sum);
cleanup:
    free(buf);
    return rc;
}

/* Verify an int64 dataset: small, read whole by every rank. */
static tsr_status_t verify_i64(struct tsr_ckpt_reader *r, hid_t dset, const char *name, const dset_info_t *d)
{
    int64_t *v = malloc((size_t)(d->n > 0 ? d->n : 1) * sizeof *v);
    tsr_status_t rc = v ? read_i64_checked(r, dset, name, d->n, v)
                        : TSR_ERROR(TSR_ERR_OUT_OF_MEMORY, "no memory to verify %s", name);
    free(v);
    return rc;
}

tsr_status_t tsr_ckpt_verify_dataset(tsr_ckpt_reader_t r, const char *name)
{
    tsr_status_t rc = TSR_OK;
    hid_t dset = -1;
    dset_info_t d;
    tsr__ckpt_quiet();
    TSR_CHECK(H5Lexists(r->file, name, H5P_DEFAULT) > 0, TSR_ERR_MISMATCH, "%s has no dataset %s", r->path, name);
    CKPT_CALL_H5(dset = H5Dopen2(r->file, name, H5P_DEFAULT), "%s: cannot open dataset %s", r->path, name);
    TSR_TRY(inspect(r, dset, name, &d));
    TSR_CHECK(d.elem != ELEM_OTHER, TSR_ERR_FORMAT, "%s: dataset %s is %s (expected float32 or int64)", r->path,
              name, d.type);
    TSR_TRY(d.elem == ELEM_F32 ? verify_f32(r, dset, name, &d) : verify_i64(r, dset, name, &d));
cleanup:
    CKPT_CLOSE(dset);
    return rc;
}

/* H5Ovisit's list of datasets, grown as it goes; the first failure stops the visit. */
typedef struct dataset_list {
    struct tsr_ckpt_reader *r;
    tsr_ckpt_dataset_info_t *items;
    size_t n, cap;
    tsr_status_t rc;
} dataset_list_t;

static herr_t collect_dataset(hid_t obj, const char *name, const H5O_info_t *info, void *data)
{
    dataset_list_t *list = data;
    hid_t dset = -1;
    dset_info_t d;
    if (info->type != H5O_TYPE_DATASET)
        return 0;
    if (list->n == list->cap) {
        size_t cap = list->cap ? 2 * list->cap : 64;
        tsr_ckpt_dataset_info_t *grown = realloc(list->items, cap * sizeof *grown);
        if (!grown) {
            list->rc = TSR_ERROR(TSR_ERR_OUT_OF_MEMORY, "no memory for the list of datasets");
            return -1;
        }
        list->items = grown;
        list->cap = cap;
    }
    tsr_ckpt_dataset_info_t *out = memset(&list->items[list->n], 0, sizeof *out);
    if (strlen(name) + 2 > sizeof out->name) {
        list->rc = TSR_ERROR(TSR_ERR_FORMAT, "%s: a dataset name of %zu characters (expected at most %zu)",
                             list->r->path, strlen(name), sizeof out->name - 2);
        return -1;
    }
    snprintf(out->name, sizeof out->name, "/%s", name);
    if ((dset = H5Dopen2(obj, name, H5P_DEFAULT)) < 0)
        list->rc = CKPT_H5_ERROR(TSR_ERR_FORMAT, "%s: cannot open dataset %s", list->r->path, out->name);
    else
        list->rc = inspect(list->r, dset, out->name, &d);
    if (list->rc == TSR_OK) {
        out->ndim = d.ndim;
        out->dims[0] = d.dims[0];
        out->dims[1] = d.dims[1];
        out->is_float = d.elem == ELEM_F32;
        snprintf(out->type, sizeof out->type, "%s", d.type);
        out->has_checksum = H5Aexists(dset, "checksum") > 0;
        if (out->has_checksum)
            list->rc = stored_checksum(list->r, dset, out->name, &out->checksum);
    }
    CKPT_CLOSE(dset);
    if (list->rc != TSR_OK)
        return -1;
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
    dataset_list_t list = {r, NULL, 0, 0, TSR_OK};
    tsr__ckpt_quiet();
    if (H5Ovisit(r->file, H5_INDEX_NAME, H5_ITER_INC, collect_dataset, &list) < 0) {
        rc = list.rc != TSR_OK ? list.rc : CKPT_H5_ERROR(TSR_ERR_FORMAT, "%s: cannot list its datasets", r->path);
        H5Eclear2(H5E_DEFAULT);
        goto cleanup;
    }
    /* H5Ovisit goes group by group ("/a/m" before "/a.b/m"); callers get plain name order. */
    if (list.n > 1) /* qsort's array may not be NULL, even for 0 elements */
        qsort(list.items, list.n, sizeof *list.items, by_name);
cleanup:
    if (rc != TSR_OK) {
        free(list.items);
        list.items = NULL;
        list.n = 0;
    }
    *out = list.items;
    *n = list.n;
    return rc;
}

/* ---- the metadata checksum: every attribute of every group ---- */

typedef struct attr_sum {
    struct tsr_ckpt_reader *r;
    const char *group;
    uint64_t sum;
    tsr_status_t rc;
} attr_sum_t;

static herr_t sum_attr(hid_t loc, const char *name, const H5A_info_t *info, void *data)
{
    attr_sum_t *s = data;
    attr_value_t v;
    hid_t a;
    (void)info;
    if (strcmp(s->group, "/") == 0 && strcmp(name, CKPT_METADATA_CHECKSUM) == 0)
        return 0;
    if ((a = H5Aopen(loc, name, H5P_DEFAULT)) < 0) {
        s->rc = CKPT_H5_ERROR(TSR_ERR_FORMAT, "%s: cannot open attribute %s of %s", s->r->path, name, s->group);
        return -1;
    }
    s->rc = read_attr(s->r, a, s->group, name, &v);
    H5Aclose(a);
    if (s->rc != TSR_OK)
        return -1;
    if (v.kind == 'i')
        s->sum += tsr__ckpt_attr_checksum(s->group, name, 'i', &v.i, sizeof v.i);
    else if (v.kind == 'f')
        s->sum += tsr__ckpt_attr_checksum(s->group, name, 'f', &v.f, sizeof v.f);
    else
        s->sum += tsr__ckpt_attr_checksum(s->group, name, 's', v.s, v.len);
    return 0;
}

static herr_t sum_group(hid_t obj, const char *name, const H5O_info_t *info, void *data)
{
    attr_sum_t *s = data;
    char group[300];
    hsize_t idx = 0;
    if (info->type != H5O_TYPE_GROUP)
        return 0;
    if (strlen(name) + 2 > sizeof group) {
        s->rc = TSR_ERROR(TSR_ERR_FORMAT, "%s: a group name of %zu characters", s->r->path, strlen(name));
        return -1;
    }
    snprintf(group, sizeof group, strcmp(name, ".") == 0 ? "/" : "/%s", name);
    hid_t g = H5Gopen2(obj, name, H5P_DEFAULT);
    if (g < 0) {
        s->rc = CKPT_H5_ERROR(TSR_ERR_FORMAT, "%s: cannot open group %s", s->r->path, group);
        return -1;
    }
    s->group = group;
    herr_t st = H5Aiterate2(g, H5_INDEX_NAME, H5_ITER_INC, &idx, sum_attr, s);
    H5Gclose(g);
    if (st < 0 && s->rc == TSR_OK)
        s->rc = CKPT_H5_ERROR(TSR_ERR_FORMAT, "%s: cannot read the attributes of %s", s->r->path, group);
    return st < 0 ? -1 : 0;
}

tsr_status_t tsr_ckpt_metadata_checksum(tsr_ckpt_reader_t r, uint64_t *stored, uint64_t *computed)
{
    attr_sum_t s = {r, "/", 0, TSR_OK};
    attr_value_t v;
    tsr__ckpt_quiet();
    *stored = *computed = 0;
    if (H5Ovisit(r->file, H5_INDEX_NAME, H5_ITER_INC, sum_group, &s) < 0) {
        H5Eclear2(H5E_DEFAULT);
        return s.rc != TSR_OK ? s.rc : TSR_ERROR(TSR_ERR_FORMAT, "%s: cannot visit its groups", r->path);
    }
    *computed = s.sum;
    tsr_status_t rc = get_attr(r, "/", CKPT_METADATA_CHECKSUM, 'i', &v);
    if (rc == TSR_OK)
        *stored = (uint64_t)v.i;
    return rc;
}

tsr_status_t tsr_ckpt_verify_metadata(tsr_ckpt_reader_t r)
{
    uint64_t stored, computed;
    if (r->version < CKPT_VERSION_CHECKSUMMED)
        return TSR_ERROR(TSR_ERR_FORMAT,
                         "%s is checkpoint format version %lld, whose attributes and int64 datasets no checksum "
                         "covers (expected version %d or later: write the checkpoint again)",
                         r->path, (long long)r->version, CKPT_VERSION_CHECKSUMMED);
    tsr_status_t rc = tsr_ckpt_metadata_checksum(r, &stored, &computed);
    if (rc != TSR_OK)
        return rc;
    if (stored != computed)
        return TSR_ERROR(TSR_ERR_CORRUPT,
                         "%s: its attributes fail their checksum (stored %016llx, computed %016llx): an attribute "
                         "was changed, added or removed", r->path, (unsigned long long)stored,
                         (unsigned long long)computed);
    return TSR_OK;
}

tsr_status_t tsr_ckpt_verify(tsr_ckpt_reader_t r)
{
    TSR__REGION(NULL, TSR_PROF_CKPT, "verify", NULL);
    tsr_ckpt_dataset_info_t *list = NULL;
    size_t n = 0;
    tsr_status_t rc = tsr_ckpt_verify_metadata(r);
    if (rc == TSR_OK)
        rc = tsr_ckpt_list(r, &list, &n);
    for (size_t i = 0; i < n && rc == TSR_OK; i++)
        rc = tsr_ckpt_verify_dataset(r, list[i].name);
    free(list);
    if (rc == TSR_OK)
        rc = tsr_ckpt_verify_state(r);
    return rc;
}

const char *tsr__ckpt_reader_path(tsr_ckpt_reader_t r)
{
    return r->path;
}

/* H5Aiterate callback: format one attribute as text and hand it to the caller. */
typedef struct attr_visit {
    struct tsr_ckpt_reader *r;
    const char *group;
    tsr_ckpt_attr_fn fn;
    void *ctx;
} attr_visit_t;

static herr_t visit_attr(hid_t loc, const char *name, const H5A_info_t *info, void *data)
{
    attr_visit_t *v = data;
    attr_value_t val;
    char text[ATTR_STR_MAX + 1] = "?";
    hid_t a = H5Aopen(loc, name, H5P_DEFAULT);
    (void)info;
    if (a >= 0 && read_attr(v->r, a, v->group, name, &val) == TSR_OK) {
        if (val.kind == 'i')
            snprintf(text, sizeof text, "%lld", (long long)val.i);
        else if (val.kind == 'f')
            snprintf(text, sizeof text, "%.17g", val.f);
        else
            snprintf(text, sizeof text, "%s", val.s);
    }
    H5Eclear2(H5E_DEFAULT);
    if (a >= 0)
        H5Aclose(a);
    v->fn(name, text, v->ctx);
    return 0;
}

tsr_status_t tsr_ckpt_attrs(tsr_ckpt_reader_t r, const char *group, tsr_ckpt_attr_fn fn, void *ctx)
{
    tsr_status_t rc = TSR_OK;
    attr_visit_t visit = {r, group, fn, ctx};
    hsize_t idx = 0;
    tsr__ckpt_quiet();
    hid_t g = tsr__ckpt_group(r->file, group, 0);
    if (g < 0) {
        H5Eclear2(H5E_DEFAULT);
        rc = TSR_ERROR(TSR_ERR_FORMAT, "%s has no group %s", r->path, group);
    } else if (H5Aiterate2(g, H5_INDEX_NAME, H5_ITER_INC, &idx, visit_attr, &visit) < 0) {
        rc = CKPT_H5_ERROR(TSR_ERR_FORMAT, "%s: cannot read the attributes of %s", r->path, group);
    }
    if (g >= 0)
        H5Gclose(g);
    return rc;
}

tsr_status_t tsr_ckpt_get_i64(tsr_ckpt_reader_t r, const char *group, const char *name, int64_t *value)
{
    attr_value_t v;
    tsr_status_t rc = get_attr(r, group, name, 'i', &v);
    if (rc == TSR_OK)
        *value = v.i;
    return rc;
}

tsr_status_t tsr_ckpt_get_f64(tsr_ckpt_reader_t r, const char *group, const char *name, double *value)
{
    attr_value_t v;
    tsr_status_t rc = get_attr(r, group, name, 'f', &v);
    if (rc == TSR_OK)
        *value = v.f;
    return rc;
}

tsr_status_t tsr_ckpt_get_str(tsr_ckpt_reader_t r, const char *group, const char *name, char *buf, size_t len)
{
    attr_value_t v;
    tsr_status_t rc = get_attr(r, group, name, 's', &v);
    if (rc == TSR_OK)
        snprintf(buf, len, "%s", v.s);
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
