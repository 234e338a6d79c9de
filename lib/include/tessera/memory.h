/**
 * @file tessera/memory.h
 * @brief The tracked allocator's accounting: current and peak bytes per category and device.
 *
 * Every buffer that holds model state or activations is allocated through
 * tsr_device_alloc() (see tessera/device.h) with a category; the library keeps current and
 * peak bytes for each (device kind, category) pair, and the peak of their sum. Benchmarks
 * and tests read memory figures from here, never from the operating system.
 */
#ifndef TESSERA_MEMORY_H
#define TESSERA_MEMORY_H

#include <stddef.h>
#include <stdint.h>
#include <tessera/visibility.h>

#ifdef __cplusplus
extern "C" {
#endif

/** What an allocation holds. */
typedef enum tsr_mem_category {
    TSR_MEM_PARAMS = 0,  /**< model parameters (master and working copies) */
    TSR_MEM_GRADS,       /**< gradients */
    TSR_MEM_OPTIM,       /**< optimizer state (moments, momentum) */
    TSR_MEM_ACTIVATIONS, /**< activations kept for the backward pass */
    TSR_MEM_COMM,        /**< communication buffers */
    TSR_MEM_WORKSPACE,   /**< everything else: scratch, staging */
    TSR_MEM_CATEGORY_COUNT
} tsr_mem_category_t;

/** Where memory lives. */
typedef enum tsr_device_kind {
    TSR_DEVICE_CPU = 0,
    TSR_DEVICE_CUDA = 1,
    TSR_DEVICE_KIND_COUNT
} tsr_device_kind_t;

/** A snapshot of the allocator's accounting for one device kind. */
typedef struct tsr_mem_stats {
    uint64_t current[TSR_MEM_CATEGORY_COUNT]; /**< bytes allocated now, per category */
    uint64_t peak[TSR_MEM_CATEGORY_COUNT];    /**< largest current[] seen, per category */
    uint64_t total_current;                   /**< sum of current[] */
    uint64_t total_peak;                      /**< largest total_current seen (not the sum of peak[]) */
    uint64_t live_allocations;                /**< allocations not yet freed */
    uint64_t allocations;                     /**< allocations made since the start (on a GPU, each a cudaMalloc) */
} tsr_mem_stats_t;

/** The lower-case name of a category ("params", "grads", ...), or "unknown". */
TSR_API const char *tsr_mem_category_name(tsr_mem_category_t category);

/** Copy the accounting of one device kind into @p out. */
TSR_API void tsr_mem_stats(tsr_device_kind_t kind, tsr_mem_stats_t *out);

/** Set every peak of one device kind to its current value (e.g. between benchmark phases). */
TSR_API void tsr_mem_reset_peaks(tsr_device_kind_t kind);

/**
 * Ask the C library's malloc to keep freed large blocks for reuse instead of giving them back
 * to the kernel. Every training step frees and allocates the same large host buffers (ZeRO's
 * per-bucket receive and gradient buffers, the MPI library's temporaries for reduce-scatter
 * and allgather); returned to the kernel, each comes back as fresh pages that the kernel
 * zeroes on first touch (dp=2 on the GPT-2 124M shape: 200,000 page faults, 800 MB zeroed,
 * about a fifth of the step). The cost: the process's resident memory stays at its
 * high-water mark, as with a caching allocator; the tracked figures of this header do not
 * change. glibc only (mallopt: mmap threshold 1 GiB, trim threshold 2 GiB); does nothing
 * elsewhere, and nothing when the user chose malloc's settings (MALLOC_MMAP_THRESHOLD_,
 * MALLOC_TRIM_THRESHOLD_ or GLIBC_TUNABLES in the environment). The tsr-* drivers call it
 * first thing; in a driver of your own call it once, before MPI_Init (an MPI library may
 * interpose on malloc when it starts: UCX does).
 *
 * @return 1 when the settings were changed, 0 otherwise.
 */
TSR_API int tsr_mem_keep_freed_host_memory(void);

#ifdef __cplusplus
}
#endif
#endif /* TESSERA_MEMORY_H */
