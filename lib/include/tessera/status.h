/**
 * @file tessera/status.h
 * @brief Status codes, their messages, and the detail of the last error.
 *
 * Every fallible Tessera function returns a ::tsr_status_t; 0 (#TSR_OK) is success.
 * The codes and their messages come from one table, #TSR_STATUS_MAP, so the enum and
 * tsr_strerror() cannot drift apart. When a call fails, tsr_last_error() says what went
 * wrong in one line, and tsr_last_error_location() where in the library it was noticed.
 */
#ifndef TESSERA_STATUS_H
#define TESSERA_STATUS_H

#include <tessera/visibility.h>

#ifdef __cplusplus
extern "C" {
#endif

/** The status table: X(NAME, message). Codes are numbered in this order from 0. */
#define TSR_STATUS_MAP(X)                                                         \
    X(OK, "success")                                                              \
    X(ERR_INVALID_ARG, "invalid argument")                                        \
    X(ERR_OUT_OF_MEMORY, "out of memory")                                         \
    X(ERR_NOT_SUPPORTED, "not supported by this build")                           \
    X(ERR_LAYOUT, "process layout does not fit the communicator")                 \
    X(ERR_MPI, "MPI error")                                                       \
    X(ERR_HDF5, "HDF5 error")                                                     \
    X(ERR_CUDA, "CUDA error")                                                     \
    X(ERR_CUBLAS, "cuBLAS error")                                                 \
    X(ERR_NCCL, "NCCL error")                                                     \
    X(ERR_IO, "input/output error")                                               \
    X(ERR_FORMAT, "unrecognized or malformed file")                               \
    X(ERR_CORRUPT, "data failed its checksum")                                    \
    X(ERR_MISMATCH, "configuration does not match")                               \
    X(ERR_INTERNAL, "internal error (a bug in Tessera)")                          \
    X(ERR_ABORTED, "ended because another rank failed")

/** A status code: #TSR_OK or one of the TSR_ERR_* values. */
typedef enum tsr_status {
#define TSR_STATUS_ENUM_(name, msg) TSR_##name,
    TSR_STATUS_MAP(TSR_STATUS_ENUM_)
#undef TSR_STATUS_ENUM_
    TSR_STATUS_COUNT_ /**< number of codes; not a status */
} tsr_status_t;

/** The fixed message of a status code ("unknown status" for a value outside the table). */
TSR_API const char *tsr_strerror(tsr_status_t status);

/** The symbolic name of a status code without its prefix, e.g. "ERR_LAYOUT". */
TSR_API const char *tsr_status_name(tsr_status_t status);

/**
 * The one-line detail of the last error raised on this thread, e.g.
 * "layout dp=3 x pp=1 x tp=1x1 needs 3 ranks but the communicator has 4".
 * Empty when no error has been raised. The string stays valid until the next error.
 */
TSR_API const char *tsr_last_error(void);

/** The status of the last error raised on this thread (#TSR_OK if none). */
TSR_API tsr_status_t tsr_last_error_status(void);

/** Source file and line where the last error was raised ("" and 0 if none). */
TSR_API void tsr_last_error_location(const char **file, int *line);

/** Forget the last error on this thread. */
TSR_API void tsr_clear_error(void);

#ifdef __cplusplus
}
#endif
#endif /* TESSERA_STATUS_H */
