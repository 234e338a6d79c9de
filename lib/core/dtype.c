/* dtype.c: sizes and names of the element types. */
#include <tessera/dtype.h>

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
