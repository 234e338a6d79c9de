/**
 * @file tessera/rng.h
 * @brief Counter-based random numbers (Philox-4x32-10).
 *
 * A value is a pure function of (seed, stream, index): no state is carried from one
 * call to the next. A rank that fills elements [offset, offset+n) of a tensor gets exactly
 * the values a single process gets for those indices when it fills the whole tensor, so
 * initial weights and dropout masks are the same for every layout. Choose a stream per
 * tensor (and per step, for dropout) with tsr_rng_stream().
 */
#ifndef TESSERA_RNG_H
#define TESSERA_RNG_H

#include <stddef.h>
#include <stdint.h>
#include <tessera/visibility.h>

#ifdef __cplusplus
extern "C" {
#endif

/** The raw Philox-4x32-10 block function: four 32-bit words from a 128-bit counter and 64-bit key. */
TSR_API void tsr_philox4x32(const uint32_t counter[4], const uint32_t key[2], uint32_t out[4]);

/** A stream number from a tensor id and a step, so each (tensor, step) pair draws its own values. */
TSR_API uint64_t tsr_rng_stream(uint32_t tensor_id, uint32_t step);

/** The 32 random bits of element @p index of (seed, stream). */
TSR_API uint32_t tsr_rng_u32(uint64_t seed, uint64_t stream, uint64_t index);

/** Element @p index of (seed, stream) as a float uniform in [0, 1). */
TSR_API float tsr_rng_uniform(uint64_t seed, uint64_t stream, uint64_t index);

/** Element @p index of (seed, stream) as a standard normal float (Box-Muller). */
TSR_API float tsr_rng_normal(uint64_t seed, uint64_t stream, uint64_t index);

/** out[i] = lo + (hi - lo) * uniform(seed, stream, offset + i) for i in [0, n). */
TSR_API void tsr_rng_fill_uniform(uint64_t seed, uint64_t stream, uint64_t offset, size_t n,
                                  float lo, float hi, float *out);

/** out[i] = mean + std * normal(seed, stream, offset + i) for i in [0, n). */
TSR_API void tsr_rng_fill_normal(uint64_t seed, uint64_t stream, uint64_t offset, size_t n,
                                 float mean, float std, float *out);

#ifdef __cplusplus
}
#endif
#endif /* TESSERA_RNG_H */
