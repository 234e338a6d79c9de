/* timer.c: monotonic wall clock and accumulating stopwatches. */
#include <time.h>

#include "core/internal.h"

double tsr_time_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

void tsr_timer_start(tsr_timer_t *t)
{
    t->started = tsr_time_now();
}

double tsr_timer_stop(tsr_timer_t *t)
{
    if (t->started < 0)
        return 0.0;
    double elapsed = tsr_time_now() - t->started;
    t->total += elapsed;
    t->count++;
    t->started = -1.0;
    return elapsed;
}

void tsr_timer_reset(tsr_timer_t *t)
{
    tsr_timer_t stopped = TSR_TIMER_INIT;
    *t = stopped;
}
