/**
 * @file tessera/timer.h
 * @brief Wall-clock time and accumulating timers.
 */
#ifndef TESSERA_TIMER_H
#define TESSERA_TIMER_H

#include <tessera/visibility.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Seconds on a monotonic clock; only differences are meaningful. */
TSR_API double tsr_time_now(void);

/** An accumulating stopwatch: total seconds over count start/stop intervals. */
typedef struct tsr_timer {
    double started; /**< time of the running interval's start, or a negative value if stopped */
    double total;   /**< seconds accumulated over finished intervals */
    long count;     /**< number of finished intervals */
} tsr_timer_t;

/** A stopped timer with nothing accumulated. */
#define TSR_TIMER_INIT {-1.0, 0.0, 0}

/** Start an interval (restarts it if one is running). */
TSR_API void tsr_timer_start(tsr_timer_t *t);

/** End the running interval and add it to the total. @return its length in seconds (0 if none ran). */
TSR_API double tsr_timer_stop(tsr_timer_t *t);

/** Forget everything accumulated. */
TSR_API void tsr_timer_reset(tsr_timer_t *t);

#ifdef __cplusplus
}
#endif
#endif /* TESSERA_TIMER_H */
