/*
 * apps/app.h: the error conventions tsr-train and tsr-generate share. Every failure is one
 * line on stderr, "TOOL: what: why", printed once for the job; usage errors exit 2, other
 * failures 1. Also tsr-train's optimizer defaults, which tsr-ckpt import records and
 * tsr-bench train and ps train with.
 */
#ifndef TSR_APP_H
#define TSR_APP_H

#include <tessera.h>

/* The tool's name, the prefix of its messages; each tool defines it. */
extern const char app_name[];

/* The ranks that agree on failure in failed(): MPI_COMM_WORLD unless the tool sets another
 * (tsr-train with parameter servers: the workers and the servers apart). */
extern MPI_Comm agree_comm;

/* Record an error of the tool's own, not the library's, for failed() to print; returns status. */
tsr_status_t set_app_error(tsr_status_t status, const char *fmt, ...) TSR_PRINTF(2, 3);

/* Print "TOOL: message (try --help)" on world rank 0 (every rank finds the same usage error);
 * returns 2. */
int usage_error(const char *fmt, ...) TSR_PRINTF(1, 2);

/* Agree on failure over agree_comm: if any rank's rc is not TSR_OK, the lowest failing rank
 * prints "TOOL: what: the error" (its set_app_error() message, else the library's) and every
 * rank returns 1; 0 when every rank succeeded. A rank whose rc is TSR_ERR_ABORTED (it failed
 * because another did) prints only when no rank failed otherwise. Collective. */
int failed(tsr_status_t rc, const char *what);

/* tsr-train's optimizer defaults: TSR_ZERO_CONFIG_INIT's but beta2 0.95, weight decay 0.1,
 * clipping at a norm of 1 and SGD momentum 0.9. tsr-ckpt import records them in the
 * checkpoints it writes, so that tsr-train --resume with its defaults warns of no change. */
static inline tsr_zero_config_t train_zero_defaults(void)
{
    tsr_zero_config_t z = TSR_ZERO_CONFIG_INIT;
    z.beta2 = 0.95f, z.weight_decay = 0.1f, z.clip_norm = 1.0f, z.momentum = 0.9f;
    return z;
}

#endif
