/* common.c: HDF5 error handling, piece selection and checksums for the checkpoint module. */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "ckpt/ckpt_impl.h"

void tsr__ckpt_quiet(void)
{
    H5Eset_auto2(H5E_DEFAULT, NULL, NULL);
}

/* H5Ewalk2 callback: keep the innermost (first) description, at most 160 characters. */
static herr_t innermost(unsigned n, const H5E_error2_t *e, void *data)
{
    if (n == 0)
        snprintf(data, 161, "%s", e->desc ? e->desc : "");
    return 0;
}

tsr_status_t tsr__ckpt_h5_error(tsr_status_t status, const char *file, int line, const char *fmt, ...)
{
    char what[512], why[161] = "";
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_DOWNWARD, innermost, why);
    H5Eclear2(H5E_DEFAULT);
    for (char *p = why; *p; p++) /* one line */
        if (*p == '\n')
            *p = ' ';
    if (!why[0])
        return tsr__error(status, file, line, "%s", what);
    return tsr__error(status, file, line, "%s (HDF5: %s)", what, why);
}

void tsr__ckpt_close(size_t n, const hid_t *ids)
{
    for (size_t i = 0; i < n; i++)
        if (ids[i] >= 0)
            H5Idec_ref(ids[i]); /* at a count of zero, the same as H5Dclose, H5Sclose, ... */
}

const char *tsr_ckpt_hdf5_version(void)
{
    static char text[48];
    unsigned major = 0, minor = 0, release = 0;
    if (!text[0]) {
        if (H5get_libversion(&major, &minor, &release) < 0)
            snprintf(text, sizeof text, "HDF5 (version unknown)");
        else
            snprintf(text, sizeof text, "HDF5 %u.%u.%u", major, minor, release);
    }
    return text;
}

hid_t tsr__ckpt_fapl(tsr_comm_t comm)
{
    hid_t fapl = H5Pcreate(H5P_FILE_ACCESS);
    if (fapl < 0)
        return fapl;
    /* Datasets of 1 MiB or more start on 1 MiB boundaries: whole stripes for parallel file
     * systems. Smaller objects are packed, so that a small model's file is not mostly padding
     * (the tiny GPT's checkpoint: 15.8 MB with every object of 64 KiB or more aligned, 1.5 MB
     * now); the writer reserves each dataset's bytes where HDF5 put it, aligned or not. */
    if (H5Pset_fapl_mpio(fapl, tsr_comm_mpi(comm), MPI_INFO_NULL) < 0 ||
        H5Pset_alignment(fapl, 1 << 20, 1 << 20) < 0 || H5Pset_all_coll_metadata_ops(fapl, 1) < 0 ||
        H5Pset_coll_metadata_write(fapl, 1) < 0) {
        H5Pclose(fapl);
        return -1;
    }
    return fapl;
}

tsr_status_t tsr__ckpt_shape(hid_t space, const char *path, const char *name, int *ndim, int64_t dims[2])
{
    hsize_t d[H5S_MAX_RANK];
    int rank = H5Sget_simple_extent_ndims(space);
    *ndim = 0;
    dims[0] = dims[1] = 0;
    if (H5Sget_simple_extent_type(space) != H5S_SIMPLE || rank < 1 || rank > 2)
        return TSR_ERROR(TSR_ERR_FORMAT, "%s: dataset %s has %d dimensions (expected 1 or 2)", path, name,
                         rank > 0 ? rank : 0);
    if (H5Sget_simple_extent_dims(space, d, NULL) != rank) /* rank <= 2 here: d has room */
        return TSR_ERROR(TSR_ERR_FORMAT, "%s: dataset %s: its shape cannot be read", path, name);
    int64_t n = 1;
    for (int i = 0; i < rank; i++) {
        if (d[i] > (hsize_t)CKPT_MAX_ELEMENTS || (d[i] > 0 && n > CKPT_MAX_ELEMENTS / (int64_t)d[i]))
            return TSR_ERROR(TSR_ERR_FORMAT, "%s: dataset %s has more than 2^56 elements (expected a tensor)", path,
                             name);
        n *= (int64_t)d[i];
        dims[i] = (int64_t)d[i];
    }
    *ndim = rank;
    return TSR_OK;
}

const char *tsr__ckpt_type_name(hid_t type, char *buf, size_t len)
{
    size_t bits = 8 * H5Tget_size(type);
    switch (H5Tget_class(type)) {
    case H5T_FLOAT: snprintf(buf, len, "float%zu", bits); break;
    case H5T_INTEGER: snprintf(buf, len, "%sint%zu", H5Tget_sign(type) == H5T_SGN_NONE ? "u" : "", bits); break;
    case H5T_STRING: snprintf(buf, len, "string"); break;
    case H5T_COMPOUND: snprintf(buf, len, "compound"); break;
    case H5T_ARRAY: snprintf(buf, len, "array"); break;
    case H5T_ENUM: snprintf(buf, len, "enum"); break;
    default: snprintf(buf, len, "other"); break;
    }
    return buf;
}

char *tsr_ckpt_format_shape(int ndim, const int64_t dims[2], char *buf, size_t len)
{
    if (ndim == 2)
        snprintf(buf, len, "%lld x %lld", (long long)dims[0], (long long)dims[1]);
    else
        snprintf(buf, len, "%lld", (long long)dims[0]);
    return buf;
}

int64_t tsr__ckpt_bad_value(const float *v, int64_t n, int nonneg)
{
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(v[i]) || (nonneg && v[i] < 0))
            return i;
    return -1;
}

int tsr__ckpt_is_second_moment(const char *name)
{
    size_t len = strlen(name);
    return strncmp(name, "/optim/", 7) == 0 && len > 9 && strcmp(name + len - 2, "/v") == 0;
}

/* FNV-1a over bytes, continuing from h. */
static uint64_t fnv(uint64_t h, const void *bytes, size_t n)
{
    const unsigned char *b = bytes;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}

static inline uint64_t finalize(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

uint64_t tsr__ckpt_attr_checksum(const char *group, const char *name, char kind, const void *value, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    h = fnv(h, group, strlen(group) + 1);
    h = fnv(h, name, strlen(name) + 1);
    h = fnv(h, &kind, 1);
    return finalize(fnv(h, value, len));
}

tsr_status_t tsr__ckpt_check_piece(const char *name, int ndim, const int64_t dims[], const tsr_ckpt_piece_t *p)
{
    int64_t rows = ndim == 2 ? dims[0] : 1, cols = ndim == 2 ? dims[1] : dims[0];
    if (ndim != 1 && ndim != 2)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "dataset %s: %d dimensions (expected 1 or 2)", name, ndim);
    if (rows < 0 || cols < 0 || (rows > 0 && cols > CKPT_MAX_ELEMENTS / rows))
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "dataset %s: shape %lld x %lld (expected at most 2^56 elements)", name,
                         (long long)rows, (long long)cols);
    if (p->count == 0)
        return TSR_OK;
    /* Each bound is checked before it is added to, so nothing here can overflow. */
    if (p->row0 < 0 || p->rows < 0 || p->row0 > rows || p->rows > rows - p->row0 || p->col0 < 0 || p->cols < 0 ||
        p->col0 > cols || p->cols > cols - p->col0 || p->offset < 0 || p->count < 0 ||
        p->offset > p->rows * p->cols || p->count > p->rows * p->cols - p->offset)
        return TSR_ERROR(TSR_ERR_INVALID_ARG,
                         "dataset %s of %lld x %lld: piece rows %lld+%lld, columns %lld+%lld, elements %lld+%lld "
                         "does not fit in it", name, (long long)rows, (long long)cols, (long long)p->row0,
                         (long long)p->rows, (long long)p->col0, (long long)p->cols, (long long)p->offset,
                         (long long)p->count);
    return TSR_OK;
}

/* OR one rectangle (global coordinates) into the selection; the first one replaces it. */
static herr_t select_rect(hid_t space, int ndim, int *first, int64_t r, int64_t nr, int64_t c, int64_t nc)
{
    hsize_t start[2] = {(hsize_t)r, (hsize_t)c}, count[2] = {(hsize_t)nr, (hsize_t)nc};
    H5S_seloper_t op = *first ? H5S_SELECT_SET : H5S_SELECT_OR;
    *first = 0;
    if (ndim == 1)
        return H5Sselect_hyperslab(space, op, &start[1], NULL, &count[1], NULL);
    return H5Sselect_hyperslab(space, op, start, NULL, count, NULL);
}

tsr_status_t tsr__ckpt_select_piece(hid_t space, int ndim, const int64_t dims[], const tsr_ckpt_piece_t *p)
{
    tsr_status_t rc = TSR_OK;
    (void)dims;
    if (p->count == 0) {
        CKPT_CALL_H5(H5Sselect_none(space), "cannot select nothing");
        return TSR_OK;
    }
    /* The run [s, e] of block elements: a partial first row, whole rows, a partial last row. */
    int64_t s = p->offset, e = p->offset + p->count - 1;
    int64_t ra = s / p->cols, ca = s % p->cols, rb = e / p->cols, cb = e % p->cols;
    int first = 1;
    if (ra == rb) {
        CKPT_CALL_H5(select_rect(space, ndim, &first, p->row0 + ra, 1, p->col0 + ca, cb - ca + 1), "selection");
        return TSR_OK;
    }
    int64_t full_a = ra, full_b = rb;
    if (ca > 0) {
        CKPT_CALL_H5(select_rect(space, ndim, &first, p->row0 + ra, 1, p->col0 + ca, p->cols - ca), "selection");
        full_a = ra + 1;
    }
    if (cb < p->cols - 1) {
        CKPT_CALL_H5(select_rect(space, ndim, &first, p->row0 + rb, 1, p->col0, cb + 1), "selection");
        full_b = rb - 1;
    }
    if (full_b >= full_a)
        CKPT_CALL_H5(select_rect(space, ndim, &first, p->row0 + full_a, full_b - full_a + 1, p->col0, p->cols),
                     "selection");
cleanup:
    return rc;
}

/* The mix of one element: murmur3's 64-bit finalizer of (index * golden ratio + value bits). */
static inline uint64_t mix(uint64_t index, float value)
{
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    return finalize(index * 0x9E3779B97F4A7C15ULL + bits);
}

uint64_t tsr_ckpt_checksum(uint64_t first, size_t n, const float *values)
{
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += mix(first + i, values[i]);
    return sum;
}

uint64_t tsr_ckpt_checksum_i64(uint64_t first, size_t n, const int64_t *values)
{
    /* The index and the value each pass through the mix: 64-bit values have no spare bits. */
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += finalize(finalize((first + i) * 0x9E3779B97F4A7C15ULL) + (uint64_t)values[i]);
    return sum;
}

uint64_t tsr__ckpt_piece_checksum(int ndim, const int64_t dims[], const tsr_ckpt_piece_t *p, const float *v)
{
    int64_t global_cols = ndim == 2 ? dims[1] : dims[0];
    uint64_t sum = 0;
    int64_t i = 0;
    while (i < p->count) {
        /* One stretch of a block row: contiguous in the global tensor too. */
        int64_t k = p->offset + i, r = k / p->cols, c = k % p->cols;
        int64_t n = p->cols - c < p->count - i ? p->cols - c : p->count - i;
        uint64_t g = (uint64_t)((p->row0 + r) * global_cols + p->col0 + c);
        sum += tsr_ckpt_checksum(g, (size_t)n, v + i);
        i += n;
    }
    return sum;
}

tsr_status_t tsr__ckpt_sum(tsr_comm_t comm, uint64_t *checksum, int64_t *count)
{
    /* Halves summed as int64 cannot overflow below 2^31 ranks; recombined modulo 2^64. */
    int64_t v[3] = {(int64_t)(*checksum & 0xffffffffu), (int64_t)(*checksum >> 32), *count};
    tsr_status_t rc = tsr_comm_allreduce(comm, TSR_IN_PLACE, v, 3, TSR_DTYPE_I64, TSR_REDUCE_SUM);
    *checksum = (uint64_t)v[0] + ((uint64_t)v[1] << 32);
    *count = v[2];
    return rc;
}

hid_t tsr__ckpt_group(hid_t file, const char *path, int create)
{
    if (strcmp(path, "/") == 0)
        return H5Gopen2(file, "/", H5P_DEFAULT);
    htri_t exists = H5Lexists(file, path, H5P_DEFAULT);
    if (exists > 0 || !create)
        return H5Gopen2(file, path, H5P_DEFAULT);
    hid_t lcpl = H5Pcreate(H5P_LINK_CREATE);
    if (lcpl < 0)
        return lcpl;
    H5Pset_create_intermediate_group(lcpl, 1);
    hid_t g = H5Gcreate2(file, path, lcpl, H5P_DEFAULT, H5P_DEFAULT);
    H5Pclose(lcpl);
    return g;
}

tsr_ckpt_piece_t tsr_ckpt_block(int64_t row0, int64_t rows, int64_t col0, int64_t cols)
{
    tsr_ckpt_piece_t p = {row0, rows, col0, cols, 0, rows * cols};
    return p;
}

tsr_ckpt_piece_t tsr_ckpt_nothing(void)
{
    tsr_ckpt_piece_t p = {0, 0, 0, 0, 0, 0};
    return p;
}
