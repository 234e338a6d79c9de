/*
 * rng.c: Philox-4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3",
 * SC'11). Element i of (seed, stream) is word i mod 4 of the block with counter
 * (i / 4, stream) and key seed, so any range of elements can be generated on its own.
 */
#include <math.h>

#include "core/internal.h"

#define PHILOX_M0 0xD2511F53u
#define PHILOX_M1 0xCD9E8D57u
#define PHILOX_W0 0x9E3779B9u
#define PHILOX_W1 0xBB67AE85u

static inline uint32_t mulhilo(uint32_t a, uint32_t b, uint32_t *hi)
{
    uint64_t p = (uint64_t)a * b;
    *hi = (uint32_t)(p >> 32);
    return (uint32_t)p;
}

void tsr_philox4x32(const uint32_t counter[4], const uint32_t key[2], uint32_t out[4])
{
    uint32_t c0 = counter[0], c1 = counter[1], c2 = counter[2], c3 = counter[3];
    uint32_t k0 = key[0], k1 = key[1];
    for (int round = 0; round < 10; round++) {
        uint32_t hi0, hi1;
        uint32_t lo0 = mulhilo(PHILOX_M0, c0, &hi0);
        uint32_t lo1 = mulhilo(PHILOX_M1, c2, &hi1);
        c0 = hi1 ^ c1 ^ k0;
        c1 = lo1;
        c2 = hi0 ^ c3 ^ k1;
        c3 = lo0;
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    out[0] = c0;
    out[1] = c1;
    out[2] = c2;
    out[3] = c3;
}

uint64_t tsr_rng_stream(uint32_t tensor_id, uint32_t step)
{
    return (uint64_t)tensor_id << 32 | step;
}

/* The four words of block b of (seed, stream). */
static void rng_block(uint64_t seed, uint64_t stream, uint64_t block, uint32_t out[4])
{
    const uint32_t counter[4] = {(uint32_t)block, (uint32_t)(block >> 32), (uint32_t)stream,
                                 (uint32_t)(stream >> 32)};
    const uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    tsr_philox4x32(counter, key, out);
}

/* The top 24 bits as a float in [0, 1): exactly representable, never 1. */
static inline float u32_to_unit(uint32_t x)
{
    return (float)(x >> 8) * (1.0f / 16777216.0f);
}

/* Box-Muller on two words; which = 0 gives the cosine branch, 1 the sine branch. */
static inline float box_muller(uint32_t a, uint32_t b, int which)
{
    double u1 = ((double)a + 1.0) * (1.0 / 4294967296.0); /* (0, 1]: log is finite */
    double u2 = (double)b * (1.0 / 4294967296.0);
    double r = sqrt(-2.0 * log(u1));
    double theta = 6.283185307179586 * u2;
    return (float)(which ? r * sin(theta) : r * cos(theta));
}

uint32_t tsr_rng_u32(uint64_t seed, uint64_t stream, uint64_t index)
{
    uint32_t w[4];
    rng_block(seed, stream, index / 4, w);
    return w[index % 4];
}

float tsr_rng_uniform(uint64_t seed, uint64_t stream, uint64_t index)
{
    return u32_to_unit(tsr_rng_u32(seed, stream, index));
}

/* Normal element i comes from words (0,1) or (2,3) of block 2^63 + i / 4, a block range that
 * uniform draws never reach, so the normal and uniform values of one stream are independent. */
#define NORMAL_BLOCK_BASE ((uint64_t)1 << 63)

float tsr_rng_normal(uint64_t seed, uint64_t stream, uint64_t index)
{
    uint32_t w[4];
    rng_block(seed, stream, NORMAL_BLOCK_BASE + index / 4, w);
    unsigned k = (unsigned)(index % 4);
    return box_muller(w[k & 2], w[(k & 2) + 1], k & 1);
}

void tsr_rng_fill_uniform(uint64_t seed, uint64_t stream, uint64_t offset, size_t n, float lo, float hi,
                          float *out)
{
    float scale = hi - lo;
    size_t i = 0;
    while (i < n) {
        uint64_t index = offset + i;
        uint32_t w[4];
        rng_block(seed, stream, index / 4, w);
        for (unsigned k = (unsigned)(index % 4); k < 4 && i < n; k++, i++)
            out[i] = lo + scale * u32_to_unit(w[k]);
    }
}

void tsr_rng_fill_normal(uint64_t seed, uint64_t stream, uint64_t offset, size_t n, float mean, float std,
                         float *out)
{
    size_t i = 0;
    while (i < n) {
        uint64_t index = offset + i;
        uint32_t w[4];
        rng_block(seed, stream, NORMAL_BLOCK_BASE + index / 4, w);
        for (unsigned k = (unsigned)(index % 4); k < 4 && i < n; k++, i++)
            out[i] = mean + std * box_muller(w[k & 2], w[(k & 2) + 1], k & 1);
    }
}
