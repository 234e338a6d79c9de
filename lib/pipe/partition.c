/*
 * partition.c: contiguous split of layers into parts minimizing the most expensive part.
 *
 * Dynamic programming over prefixes: best[k][j] is the smallest possible maximum when the
 * first j layers form k parts, best[k][j] = min over i of max(best[k-1][i], cost(i..j)).
 * O(parts * layers^2) time, which is nothing for any real model depth, and exact, unlike
 * a greedy fill that can strand an expensive layer at the end.
 */
#include <stdlib.h>

#include "pipe_impl.h"

tsr_status_t tsr_pipe_partition(const double *cost, int layers, int parts, int *bounds, double *max_cost)
{
    tsr_status_t rc = TSR_OK;
    double *prefix = NULL, *best = NULL;
    int *cut = NULL;
    TSR_CHECK(cost && bounds, TSR_ERR_INVALID_ARG, "partition needs costs and a bounds array");
    TSR_CHECK(parts >= 1 && layers >= parts, TSR_ERR_INVALID_ARG,
              "cannot split %d layers into %d non-empty parts", layers, parts);
    size_t L = (size_t)layers, P = (size_t)parts;
    prefix = malloc((L + 1) * sizeof *prefix);
    best = malloc((P + 1) * (L + 1) * sizeof *best);
    cut = malloc((P + 1) * (L + 1) * sizeof *cut);
    TSR_CHECK(prefix && best && cut, TSR_ERR_OUT_OF_MEMORY, "partition tables for %d layers, %d parts", layers, parts);
    prefix[0] = 0;
    for (size_t i = 0; i < L; i++) {
        TSR_CHECK(cost[i] >= 0, TSR_ERR_INVALID_ARG, "layer %zu has negative cost %g", i, cost[i]);
        prefix[i + 1] = prefix[i] + cost[i];
    }
    for (size_t j = 1; j <= L; j++) {
        best[1 * (L + 1) + j] = prefix[j];
        cut[1 * (L + 1) + j] = 0;
    }
    for (size_t k = 2; k <= P; k++)
        for (size_t j = k; j <= L; j++) {
            double b = -1;
            int c = 0;
            for (size_t i = k - 1; i < j; i++) {
                double last = prefix[j] - prefix[i], prev = best[(k - 1) * (L + 1) + i];
                double v = last > prev ? last : prev;
                if (b < 0 || v < b) {
                    b = v;
                    c = (int)i;
                }
            }
            best[k * (L + 1) + j] = b;
            cut[k * (L + 1) + j] = c;
        }
    bounds[P] = layers;
    for (size_t k = P, j = L; k >= 1; k--) {
        bounds[k - 1] = cut[k * (L + 1) + j];
        j = (size_t)bounds[k - 1];
    }
    if (max_cost)
        *max_cost = best[P * (L + 1) + L];
cleanup:
    free(prefix);
    free(best);
    free(cut);
    return rc;
}
