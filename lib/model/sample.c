/*
 * sample.c: the next token from a row of logits, as Hugging Face's generate() and llm.c do:
 * greedy at temperature 0; else softmax(logits / temperature), cut to the top_k most likely
 * and then to the fewest most likely whose probabilities reach top_p, renormalized, and
 * drawn with one uniform number that depends only on (seed, sequence, position).
 */
#include <math.h>
#include <stdlib.h>

#include "model_impl.h"

typedef struct cand {
    float logit;
    int32_t id;
} cand_t;

/* Most likely first; ties to the lower id, so the order is total. */
static int by_logit(const void *a, const void *b)
{
    const cand_t *x = a, *y = b;
    if (x->logit != y->logit)
        return x->logit > y->logit ? -1 : 1;
    return (x->id > y->id) - (x->id < y->id);
}

tsr_status_t tsr_gpt_sampler_check(const tsr_gpt_sampler_t *s)
{
    if (!s || s->struct_size != sizeof *s)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "sampler not from TSR_GPT_SAMPLER_INIT");
    if (!isfinite(s->temperature) || s->temperature < 0)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "temperature %g (expected a finite number >= 0; 0 is greedy)",
                         (double)s->temperature);
    if (s->top_k < 0)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "top-k %d (expected >= 0; 0 keeps every token)", s->top_k);
    if (!(s->top_p > 0.0f && s->top_p <= 1.0f))
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "top-p %g is outside (0, 1]", (double)s->top_p);
    return TSR_OK;
}

tsr_status_t tsr_gpt_sample(const tsr_gpt_sampler_t *s, const float *logits, int vocab, uint64_t seq, uint64_t pos,
                            int32_t *token)
{
    tsr_status_t rc = TSR_OK;
    cand_t *c = NULL;
    TSR_TRY(tsr_gpt_sampler_check(s));
    TSR_CHECK(logits && token && vocab >= 1, TSR_ERR_INVALID_ARG, "tsr_gpt_sample: NULL logits or token, or vocabulary %d",
              vocab);
    for (int i = 0; i < vocab; i++)
        TSR_CHECK(isfinite(logits[i]), TSR_ERR_INVALID_ARG, "logit %d is not finite (%g)", i, (double)logits[i]);
    if (s->temperature == 0.0f) {
        int best = 0;
        for (int i = 1; i < vocab; i++)
            if (logits[i] > logits[best])
                best = i;
        *token = best;
        goto cleanup;
    }
    c = malloc((size_t)vocab * sizeof *c);
    TSR_CHECK(c, TSR_ERR_OUT_OF_MEMORY, "no memory to sample from %d logits", vocab);
    for (int i = 0; i < vocab; i++)
        c[i] = (cand_t){logits[i], i};
    qsort(c, (size_t)vocab, sizeof *c, by_logit);
    int keep = s->top_k > 0 && s->top_k < vocab ? s->top_k : vocab;
    /* probabilities of the kept tokens (in double: top-p's sums see every one of them) */
    double total = 0.0, *p = malloc((size_t)keep * sizeof *p);
    TSR_CHECK(p, TSR_ERR_OUT_OF_MEMORY, "no memory to sample from %d logits", vocab);
    for (int i = 0; i < keep; i++)
        total += p[i] = exp(((double)c[i].logit - (double)c[0].logit) / (double)s->temperature);
    if (s->top_p < 1.0f) {
        double cum = 0.0;
        int k = 0;
        while (k < keep && cum < (double)s->top_p * total)
            cum += p[k++];
        keep = k > 0 ? k : 1;
        total = cum > 0 ? cum : p[0];
    }
    double u = (double)tsr_rng_uniform(s->seed, tsr_rng_stream(0x5a3d1e00u, (uint32_t)seq), pos) * total, cum = 0.0;
    int pick = keep - 1;
    for (int i = 0; i < keep; i++) {
        cum += p[i];
        if (u < cum) {
            pick = i;
            break;
        }
    }
    *token = c[pick].id;
    free(p);
cleanup:
    free(c);
    return rc;
}
