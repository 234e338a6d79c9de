/*
 * ckpt_impl.h: what the checkpoint writer and reader share, private to lib/ckpt.
 * HDF5 calls happen only here; communication goes through tsr_comm.
 */
#ifndef TESSERA_CKPT_IMPL_H
#define TESSERA_CKPT_IMPL_H

#include <hdf5.h>

#include "core/internal.h"

/* Turn off HDF5's printing of its error stack for the calls of one public function, so a
 * failure becomes one line of ours instead of a page of HDF5's. */
typedef struct ckpt_quiet {
    H5E_auto2_t func;
    void *data;
} ckpt_quiet_t;
void tsr__ckpt_quiet_begin(ckpt_quiet_t *q);
void tsr__ckpt_quiet_end(const ckpt_quiet_t *q);

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

/* Check a piece against a dataset shape: TSR_ERR_INVALID_ARG naming the dataset. */
tsr_status_t tsr__ckpt_check_piece(const char *name, int ndim, const int64_t dims[], const tsr_ckpt_piece_t *p);

/* Select the piece's elements in a dataspace of shape dims (none if it is empty). */
tsr_status_t tsr__ckpt_select_piece(hid_t space, int ndim, const int64_t dims[], const tsr_ckpt_piece_t *p);

/* The checksum of a piece's values (see tessera/ckpt.h). */
uint64_t tsr__ckpt_piece_checksum(int ndim, const int64_t dims[], const tsr_ckpt_piece_t *p, const float *v);

/* Sum a 64-bit checksum modulo 2^64 and a count over comm (exact, via 32-bit halves). */
tsr_status_t tsr__ckpt_sum(tsr_comm_t comm, uint64_t *checksum, int64_t *count);

/* Open group path in file, creating it and its parents if create is set. */
hid_t tsr__ckpt_group(hid_t file, const char *path, int create);

#endif /* TESSERA_CKPT_IMPL_H */
