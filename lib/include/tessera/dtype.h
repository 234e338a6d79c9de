/**
 * @file tessera/dtype.h
 * @brief Element types of device buffers and communicated buffers.
 */
#ifndef TESSERA_DTYPE_H
#define TESSERA_DTYPE_H

#include <stddef.h>
#include <tessera/visibility.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Element types. BF16 is bfloat16 (the top 16 bits of an IEEE float), device compute only. */
typedef enum tsr_dtype {
    TSR_DTYPE_F32 = 0,
    TSR_DTYPE_F64,
    TSR_DTYPE_I32,
    TSR_DTYPE_I64,
    TSR_DTYPE_U8,
    TSR_DTYPE_BF16,
    TSR_DTYPE_COUNT
} tsr_dtype_t;

/** Size in bytes of one element of @p dtype (0 for an invalid type). */
TSR_API size_t tsr_dtype_size(tsr_dtype_t dtype);

/** The name of @p dtype ("f32", "bf16", ...; "invalid" for an invalid type). */
TSR_API const char *tsr_dtype_name(tsr_dtype_t dtype);

#ifdef __cplusplus
}
#endif
#endif /* TESSERA_DTYPE_H */
