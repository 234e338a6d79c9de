/* dtype.c: sizes and names of the element types; bf16 conversions for the library. */
#include <math.h>
#include <string.h>

#include "core/internal.h"

static const struct {
    size_t size;
    const char *name;
} types[TSR_DTYPE_COUNT] = {
    [TSR_DTYPE_F32] = {4, "f32"}, [TSR_DTYPE_F64] = {8, "f64"}, [TSR_DTYPE_I32] = {4, "i32"},
    [TSR_DTYPE_I64] = {8, "i64"}, [TSR_DTYPE_U8] = {1, "u8"},   [TSR_DTYPE_BF16] = {2, "bf16"},
};

size_t tsr_dtype_size(tsr_dtype_t dtype)
{
    return (unsigned)dtype < TSR_DTYPE_COUNT ? types[dtype].size : 0;
}

const char *tsr_dtype_name(tsr_dtype_t dtype)
{
    return (unsigned)dtype < TSR_DTYPE_COUNT ? types[dtype].name : "invalid";
}

uint16_t tsr__bf16_from_f32(float x)
{
    uint32_t u;
    if (isnan(x))
        return 0x7fffu;
    memcpy(&u, &x, sizeof u);
    /* Round to nearest even on the 16 dropped bits; a carry into the exponent is the correct
     * rounding up, to infinity above the largest bf16. */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float tsr__f32_from_bf16(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}
