/*
 * memory.c: the tracked allocator's bookkeeping. The device backends allocate; this file
 * remembers each live allocation (pointer -> size, category) in a hash table so that a
 * free needs only the pointer, and keeps current and peak bytes per (device, category).
 */
#include "config.h"
#if HAVE_MALLOPT
#include <malloc.h>
#endif
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"

typedef struct mem_entry {
    void *ptr;
    size_t bytes;
    tsr_mem_category_t category;
    struct mem_entry *next;
} mem_entry_t;

typedef struct mem_table {
    mem_entry_t **buckets;
    size_t nbuckets; /* a power of two, or 0 before the first record */
    size_t count;
    tsr_mem_stats_t stats;
} mem_table_t;

static const char *const category_names[TSR_MEM_CATEGORY_COUNT] = {
    [TSR_MEM_PARAMS] = "params",           [TSR_MEM_GRADS] = "grads", [TSR_MEM_OPTIM] = "optim",
    [TSR_MEM_ACTIVATIONS] = "activations", [TSR_MEM_COMM] = "comm",   [TSR_MEM_WORKSPACE] = "workspace",
};

static mem_table_t tables[TSR_DEVICE_KIND_COUNT];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

void *tsr__calloc(size_t count, size_t size)
{
    return calloc(count ? count : 1, size ? size : 1);
}

int tsr_mem_keep_freed_host_memory(void)
{
#if HAVE_MALLOPT && defined(M_MMAP_THRESHOLD) && defined(M_TRIM_THRESHOLD)
    if (getenv("MALLOC_MMAP_THRESHOLD_") || getenv("MALLOC_TRIM_THRESHOLD_") || getenv("GLIBC_TUNABLES"))
        return 0;
    return mallopt(M_MMAP_THRESHOLD, 1 << 30) == 1 && mallopt(M_TRIM_THRESHOLD, INT_MAX) == 1;
#else
    return 0;
#endif
}

const char *tsr_mem_category_name(tsr_mem_category_t category)
{
    if ((unsigned)category >= TSR_MEM_CATEGORY_COUNT)
        return "unknown";
    return category_names[category];
}

static size_t bucket_of(const void *ptr, size_t nbuckets)
{
    uint64_t h = (uint64_t)(uintptr_t)ptr;
    h ^= h >> 33; /* murmur3's finalizer: aligned pointers differ only in their middle bits */
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    return (size_t)h & (nbuckets - 1);
}

/* Double the bucket array when the load factor reaches 1. Returns 0 on allocation failure. */
static int grow(mem_table_t *t)
{
    size_t n = t->nbuckets ? 2 * t->nbuckets : 256;
    mem_entry_t **b = calloc(n, sizeof *b);
    if (!b)
        return 0;
    for (size_t i = 0; i < t->nbuckets; i++) {
        for (mem_entry_t *e = t->buckets[i], *next; e; e = next) {
            next = e->next;
            size_t j = bucket_of(e->ptr, n);
            e->next = b[j];
            b[j] = e;
        }
    }
    free(t->buckets);
    t->buckets = b;
    t->nbuckets = n;
    return 1;
}

tsr_status_t tsr__mem_record(tsr_device_kind_t kind, tsr_mem_category_t category, void *ptr, size_t bytes)
{
    if ((unsigned)kind >= TSR_DEVICE_KIND_COUNT || (unsigned)category >= TSR_MEM_CATEGORY_COUNT)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "memory category %d or device kind %d out of range",
                         (int)category, (int)kind);
    mem_entry_t *e = malloc(sizeof *e);
    if (!e)
        return TSR_ERROR(TSR_ERR_OUT_OF_MEMORY, "no host memory for the allocation table");
    pthread_mutex_lock(&lock);
    mem_table_t *t = &tables[kind];
    if (t->count >= t->nbuckets && !grow(t)) {
        pthread_mutex_unlock(&lock);
        free(e);
        return TSR_ERROR(TSR_ERR_OUT_OF_MEMORY, "no host memory for the allocation table");
    }
    size_t j = bucket_of(ptr, t->nbuckets);
    *e = (mem_entry_t){ptr, bytes, category, t->buckets[j]};
    t->buckets[j] = e;
    t->count++;
    tsr_mem_stats_t *s = &t->stats;
    s->current[category] += bytes;
    if (s->current[category] > s->peak[category])
        s->peak[category] = s->current[category];
    s->total_current += bytes;
    if (s->total_current > s->total_peak)
        s->total_peak = s->total_current;
    s->live_allocations++;
    s->allocations++;
    pthread_mutex_unlock(&lock);
    return TSR_OK;
}

tsr_status_t tsr__mem_forget(tsr_device_kind_t kind, void *ptr)
{
    mem_entry_t *found = NULL;
    pthread_mutex_lock(&lock);
    mem_table_t *t = &tables[kind];
    if (t->nbuckets) {
        for (mem_entry_t **link = &t->buckets[bucket_of(ptr, t->nbuckets)]; *link; link = &(*link)->next) {
            if ((*link)->ptr == ptr) {
                found = *link;
                *link = found->next;
                break;
            }
        }
    }
    if (found) {
        t->count--;
        t->stats.current[found->category] -= found->bytes;
        t->stats.total_current -= found->bytes;
        t->stats.live_allocations--;
    }
    pthread_mutex_unlock(&lock);
    if (!found)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "%p was not allocated by tsr_device_alloc on this %s device, "
                         "or was freed already", ptr, tsr_device_kind_name(kind));
    free(found);
    return TSR_OK;
}

void tsr_mem_stats(tsr_device_kind_t kind, tsr_mem_stats_t *out)
{
    memset(out, 0, sizeof *out);
    if ((unsigned)kind >= TSR_DEVICE_KIND_COUNT)
        return;
    pthread_mutex_lock(&lock);
    *out = tables[kind].stats;
    pthread_mutex_unlock(&lock);
}

void tsr_mem_reset_peaks(tsr_device_kind_t kind)
{
    if ((unsigned)kind >= TSR_DEVICE_KIND_COUNT)
        return;
    pthread_mutex_lock(&lock);
    tsr_mem_stats_t *s = &tables[kind].stats;
    memcpy(s->peak, s->current, sizeof s->peak);
    s->total_peak = s->total_current;
    pthread_mutex_unlock(&lock);
}
