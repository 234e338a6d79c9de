/**
 * @file tessera/prof.h
 * @brief Where a rank's time goes: named, nested regions with a category.
 *
 * The library opens a region around every kernel of tessera/kernels.h (and the device copies),
 * every communication (labelled by the grid axis of its communicator: dp, pp, tp, tp_row,
 * tp_col, world, ps), every wait for a request, every pipeline action, the optimizer step,
 * checkpoint I/O and tsr_gpt_train_step() itself (category TSR_PROF_STEP). Applications may
 * open their own regions.
 *
 * Off by default; then a region costs one branch. When on, each region adds its inclusive and
 * exclusive ("self": minus the regions nested in it) host time to a total per (category,
 * name, label). The self times of every region inside a step add up to the step's length;
 * the step region's own self time is what no region covers. On a CUDA device, kernels and
 * NCCL operations are also timed with CUDA events on the device's stream (device seconds).
 * At TSR_PROF_EVENTS and above each region is also kept as an event for a Chrome trace.
 *
 * The profiler is per process and not thread-safe: regions belong to the thread that drives
 * the library. Names and labels are kept as pointers: pass strings that live as long as the
 * process (string literals).
 */
#ifndef TESSERA_PROF_H
#define TESSERA_PROF_H

#include <stddef.h>

#include <tessera/grid.h>
#include <tessera/status.h>
#include <tessera/visibility.h>

#ifdef __cplusplus
extern "C" {
#endif

/** What a region is. */
typedef enum tsr_prof_cat {
    TSR_PROF_STEP = 0, /**< a training step; its self time is the untracked rest ("other") */
    TSR_PROF_KERNEL,   /**< a kernel of tessera/kernels.h or a device copy; name: its family */
    TSR_PROF_COMM,     /**< a communication; name: the operation, label: the axis */
    TSR_PROF_WAIT,     /**< the host waiting for a request or a pipeline message */
    TSR_PROF_PIPE,     /**< a pipeline action (F, B, W, sends); arg: the micro-batch */
    TSR_PROF_OPTIM,    /**< the optimizer step (gradient reduction, clipping, update) */
    TSR_PROF_CKPT,     /**< checkpoint I/O */
    TSR_PROF_HOST,     /**< other host work an application marks (data loading, logging) */
    TSR_PROF_CAT_COUNT
} tsr_prof_cat_t;

/** How much is recorded. */
typedef enum tsr_prof_level {
    TSR_PROF_OFF = 0,       /**< nothing */
    TSR_PROF_TOTALS,        /**< totals per region name */
    TSR_PROF_EVENTS,        /**< also every region but kernels as a trace event */
    TSR_PROF_KERNEL_EVENTS, /**< also every kernel as a trace event */
} tsr_prof_level_t;

/** "step", "kernel", "comm", "wait", "pipe", "optim", "ckpt", "host". */
TSR_API const char *tsr_prof_cat_name(tsr_prof_cat_t cat);

/** Set the level for the regions opened from now on. */
TSR_API void tsr_prof_set_level(tsr_prof_level_t level);

/** The current level. */
TSR_API tsr_prof_level_t tsr_prof_level(void);

/**
 * Open a region. @p label may be NULL; @p arg is kept with the trace event (a micro-batch; -1: none).
 * @return the region's handle for tsr_prof_end(), or -1 when nothing is recorded (profiler
 * off, or regions nested more than 32 deep).
 */
TSR_API int tsr_prof_begin(tsr_prof_cat_t cat, const char *name, const char *label, int arg);

/** Close region @p region and any region opened inside it and still open. Accepts -1. */
TSR_API void tsr_prof_end(int region);

/** Forget the totals (and the events), keeping the level. Closes nothing. */
TSR_API void tsr_prof_reset(void);

/** Forget the events only. */
TSR_API void tsr_prof_clear_events(void);

/** Accumulated time of one (category, name, label). */
typedef struct tsr_prof_total {
    tsr_prof_cat_t cat;
    const char *name;
    const char *label; /**< NULL if none */
    long count;        /**< closed regions */
    double seconds;    /**< inclusive host seconds */
    double self;       /**< exclusive host seconds: minus the regions nested inside */
    double device;     /**< seconds on the device by CUDA events; 0 if not timed there */
    int on_device;     /**< whether @c device was measured */
} tsr_prof_total_t;

/**
 * The totals, one per (category, name, label), ordered by category, then by time, largest
 * first. Waits for the device events still outstanding. @p *out is malloc'ed (free() it);
 * NULL with @p *n = 0 when there is none.
 */
TSR_API tsr_status_t tsr_prof_totals(tsr_prof_total_t **out, size_t *n);

/** One recorded region (host times from tsr_time_now()). */
typedef struct tsr_prof_event {
    tsr_prof_cat_t cat;
    const char *name;
    const char *label; /**< NULL if none */
    int arg;
    int depth;      /**< 0 for a region opened with none open */
    double start;   /**< seconds */
    double end;     /**< seconds; below start while still open */
    double device;  /**< device seconds of a CUDA-timed region, else 0 */
} tsr_prof_event_t;

/**
 * The events recorded since the last reset or clear (valid until the next region opens).
 * @p dropped (may be NULL): events not kept because the limit of 2^20 was reached.
 */
TSR_API const tsr_prof_event_t *tsr_prof_events(size_t *count, size_t *dropped);

/**
 * Gather every rank's events to rank 0 of @p grid's world and let rank 0 write one Chrome
 * trace JSON file (chrome://tracing, Perfetto): one process per rank named by its grid
 * coordinates ("dp0 pp1 tp0,1"; "ps0" for a server), one thread per category, times in
 * microseconds from the earliest event on rank 0's clock. Collective over the grid's
 * world; @p path matters on rank 0 only.
 */
TSR_API tsr_status_t tsr_prof_write_trace(tsr_grid_t grid, const char *path);

#ifdef __cplusplus
}
#endif
#endif /* TESSERA_PROF_H */
