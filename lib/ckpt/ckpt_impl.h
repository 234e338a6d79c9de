/*
 * ckpt_impl.h: what the checkpoint writer and reader share, private to lib/ckpt.
 * HDF5 calls happen only here; communication goes through tsr_comm.
 */
#ifndef TESSERA_CKPT_IMPL_H
#define TESSERA_CKPT_IMPL_H

#include <hdf5.h>

#include "core/internal.h"

/* Turn off HDF5's printing of its error stack, for good: a failure becomes one line of
 * ours, and HDF5 stays quiet when it closes at exit too ("infinite loop closing library").
 * Called on entry to every public function of the module (the setting is per thread in a
 * thread-safe HDF5). */
void tsr__ckpt_quiet(void);

/* Record an HDF5 failure of `what`, with the innermost message of HDF5's error stack. */
tsr_status_t tsr__ckpt_h5_error(tsr_status_t status, const char *file, int line, const char *fmt, ...)
    TSR_PRINTF(4, 5);
#define CKPT_H5_ERROR(status, ...) tsr__ckpt_h5_error((status), __FILE__, __LINE__, __VA_ARGS__)

/* If an HDF5 call returned a negative id or status, record it and jump to cleanup. */
#define CKPT_CALL_H5(call, ...)                                                                    \
    do {                                                                                           \
        if ((call) < 0) {                                                                          \
            rc = CKPT_H5_ERROR(TSR_ERR_HDF5, __VA_ARGS__);                                         \
            goto cleanup;                                                                          \
        }                                                                                          \
    } while (0)

/* Close every valid id of the list, of any kind (dataset, dataspace, attribute, group,
 * type, property list): the cleanup of a function that opened several. */
#define CKPT_CLOSE(...) tsr__ckpt_close(sizeof((hid_t[]){__VA_ARGS__}) / sizeof(hid_t), (hid_t[]){__VA_ARGS__})
void tsr__ckpt_close(size_t n, const hid_t *ids);

/* A file access property list for MPI-IO on comm, with Tessera's tuning. */
hid_t tsr__ckpt_fapl(tsr_comm_t comm);

/* The most elements a checkpoint dataset may have: its bytes and every index fit in int64. */
#define CKPT_MAX_ELEMENTS ((int64_t)1 << 56)

/* The shape of a dataset's dataspace, checked before anything is read from it: a simple
 * dataspace of 1 or 2 dimensions (at most CKPT_MAX_ELEMENTS elements). dims[1] is 0 for 1-D.
 * TSR_ERR_FORMAT naming path and dataset otherwise. */
tsr_status_t tsr__ckpt_shape(hid_t space, const char *path, const char *name, int *ndim, int64_t dims[2]);

/* "float32", "int64", "uint8", "float64", "string", ... of an HDF5 type, into buf. */
const char *tsr__ckpt_type_name(hid_t type, char *buf, size_t len);

/* Check a piece against a dataset shape: TSR_ERR_INVALID_ARG naming the dataset. */
tsr_status_t tsr__ckpt_check_piece(const char *name, int ndim, const int64_t dims[], const tsr_ckpt_piece_t *p);

/* Select the piece's elements in a dataspace of shape dims (none if it is empty). */
tsr_status_t tsr__ckpt_select_piece(hid_t space, int ndim, const int64_t dims[], const tsr_ckpt_piece_t *p);

/* The checksum of a piece's values (see tessera/ckpt.h). */
uint64_t tsr__ckpt_piece_checksum(int ndim, const int64_t dims[], const tsr_ckpt_piece_t *p, const float *v);

/* The first element of v[0..n) that is not finite, or (if nonneg) negative; -1 if none. */
int64_t tsr__ckpt_bad_value(const float *v, int64_t n, int nonneg);

/* Whether dataset `name` holds a second moment (/optim/<tensor>/v), which is never negative. */
int tsr__ckpt_is_second_moment(const char *name);

/* The share of one attribute in a file's metadata checksum: kind 'i' (value: int64), 'f'
 * (double) or 's' (the string's bytes, len of them). */
uint64_t tsr__ckpt_attr_checksum(const char *group, const char *name, char kind, const void *value, size_t len);

/* The root attribute holding the metadata checksum, and the first format version with it. */
#define CKPT_METADATA_CHECKSUM "metadata_checksum"
#define CKPT_VERSION_CHECKSUMMED 2

/* mkdir -p dir, then check that it is a directory; TSR_ERR_IO naming what failed. */
tsr_status_t tsr__ckpt_make_dir(const char *dir);

/* The path a reader was opened with, for messages. */
const char *tsr__ckpt_reader_path(tsr_ckpt_reader_t r);

/* Sum a 64-bit checksum modulo 2^64 and a count over comm (exact, via 32-bit halves). */
tsr_status_t tsr__ckpt_sum(tsr_comm_t comm, uint64_t *checksum, int64_t *count);

/* Open group path in file, creating it and its parents if create is set. */
hid_t tsr__ckpt_group(hid_t file, const char *path, int create);

#endif /* TESSERA_CKPT_IMPL_H */
