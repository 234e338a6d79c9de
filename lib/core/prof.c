/*
 * prof.c: the profiler of tessera/prof.h: a stack of open regions, totals per (category,
 * name, label), and optionally the regions as trace events.
 *
 * Exclusive time: a region's inclusive time is added to its parent's "child" time when it
 * closes, and its self time is inclusive minus child. Device-timed regions (CUDA events,
 * from lib/device) stay pending until the totals or the events are read, so that reading
 * their elapsed time never stalls the stream in the middle of a step.
 */
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"

enum { MAX_DEPTH = 32, MAX_EVENTS = 1 << 20 };

typedef struct open_region {
    tsr_prof_cat_t cat;
    const char *name, *label;
    int arg;
    double start, child;
    size_t event; /* index in events, or SIZE_MAX when not kept */
} open_region_t;

typedef struct pending {
    size_t total, event; /* event: SIZE_MAX when not kept */
    void *e0, *e1;
    tsr__prof_elapsed_fn elapsed;
} pending_t;

int tsr__prof_on;
static tsr_prof_level_t level;
static open_region_t stack[MAX_DEPTH];
static int depth;
static tsr_prof_total_t *totals;
static size_t ntotals, cap_totals;
static tsr_prof_event_t *events;
static size_t nevents, cap_events, dropped_events;
static pending_t *pending;
static size_t npending, cap_pending;

static const char *const cat_names[TSR_PROF_CAT_COUNT] = {
    [TSR_PROF_STEP] = "step", [TSR_PROF_KERNEL] = "kernel", [TSR_PROF_COMM] = "comm",
    [TSR_PROF_WAIT] = "wait", [TSR_PROF_PIPE] = "pipe",     [TSR_PROF_OPTIM] = "optim",
    [TSR_PROF_CKPT] = "ckpt", [TSR_PROF_HOST] = "host",
};

const char *tsr_prof_cat_name(tsr_prof_cat_t cat)
{
    return (unsigned)cat < TSR_PROF_CAT_COUNT ? cat_names[cat] : "unknown";
}

void tsr_prof_set_level(tsr_prof_level_t l)
{
    level = l < TSR_PROF_OFF ? TSR_PROF_OFF : l > TSR_PROF_KERNEL_EVENTS ? TSR_PROF_KERNEL_EVENTS : l;
    tsr__prof_on = level != TSR_PROF_OFF;
}

tsr_prof_level_t tsr_prof_level(void)
{
    return level;
}

/* Grow *buf of *cap elements of size bytes to hold one more than n; 0 when out of memory. */
static int grow(void **buf, size_t *cap, size_t n, size_t size)
{
    if (n < *cap)
        return 1;
    size_t want = *cap ? 2 * *cap : 64;
    void *p = realloc(*buf, want * size);
    if (!p)
        return 0;
    *buf = p;
    *cap = want;
    return 1;
}

static size_t keep_event(tsr_prof_cat_t cat, const char *name, const char *label, int arg, double start)
{
    if (level < (cat == TSR_PROF_KERNEL ? TSR_PROF_KERNEL_EVENTS : TSR_PROF_EVENTS))
        return SIZE_MAX;
    if (nevents >= MAX_EVENTS || !grow((void **)&events, &cap_events, nevents, sizeof *events)) {
        dropped_events++;
        return SIZE_MAX;
    }
    tsr_prof_event_t e = {cat, name, label, arg, depth, start, start - 1.0, 0.0};
    events[nevents] = e;
    return nevents++;
}

int tsr_prof_begin(tsr_prof_cat_t cat, const char *name, const char *label, int arg)
{
    if (!tsr__prof_on || depth == MAX_DEPTH)
        return -1;
    open_region_t *r = &stack[depth];
    r->cat = cat;
    r->name = name ? name : "?";
    r->label = label;
    r->arg = arg;
    r->child = 0.0;
    r->start = tsr_time_now();
    r->event = keep_event(cat, r->name, label, arg, r->start);
    return depth++;
}

/* The total of (cat, name, label), added if new; SIZE_MAX when out of memory. Names are
 * compared as pointers here (the same literal each time); tsr_prof_totals merges equal text. */
static size_t total_of(const open_region_t *r)
{
    for (size_t i = ntotals; i-- > 0;)
        if (totals[i].name == r->name && totals[i].label == r->label && totals[i].cat == r->cat)
            return i;
    if (!grow((void **)&totals, &cap_totals, ntotals, sizeof *totals))
        return SIZE_MAX;
    tsr_prof_total_t t = {r->cat, r->name, r->label, 0, 0.0, 0.0, 0.0, 0};
    totals[ntotals] = t;
    return ntotals++;
}

/* Close the innermost open region; device events e0/e1 (or NULL) time it on the device. */
static void close_top(void *e0, void *e1, tsr__prof_elapsed_fn elapsed)
{
    open_region_t *r = &stack[--depth];
    double now = tsr_time_now(), seconds = now - r->start;
    if (depth > 0)
        stack[depth - 1].child += seconds;
    if (r->event != SIZE_MAX && r->event < nevents)
        events[r->event].end = now;
    size_t t = total_of(r);
    if (t != SIZE_MAX) {
        totals[t].count++;
        totals[t].seconds += seconds;
        totals[t].self += seconds - r->child;
    }
    if (!e0 || !e1 || !elapsed)
        return;
    if (t == SIZE_MAX || !grow((void **)&pending, &cap_pending, npending, sizeof *pending)) {
        elapsed(e0, e1); /* only to release the events */
        return;
    }
    totals[t].on_device = 1;
    pending_t p = {t, r->event, e0, e1, elapsed};
    pending[npending++] = p;
}

void tsr_prof_end(int region)
{
    if (region < 0 || region >= depth)
        return;
    while (depth > region)
        close_top(NULL, NULL, NULL);
}

void tsr__prof_end_device(int region, void *e0, void *e1, tsr__prof_elapsed_fn elapsed)
{
    if (region < 0 || region >= depth) {
        if (e0 && e1 && elapsed)
            elapsed(e0, e1);
        return;
    }
    while (depth > region + 1)
        close_top(NULL, NULL, NULL);
    close_top(e0, e1, elapsed);
}

/* Read the device times still outstanding (waits for their events). */
static void settle(void)
{
    for (size_t i = 0; i < npending; i++) {
        const pending_t *p = &pending[i];
        double s = p->elapsed(p->e0, p->e1);
        if (s < 0)
            continue;
        if (p->total < ntotals)
            totals[p->total].device += s;
        if (p->event < nevents)
            events[p->event].device = s;
    }
    npending = 0;
}

void tsr_prof_clear_events(void)
{
    settle();
    nevents = 0;
    dropped_events = 0;
    for (int i = 0; i < depth; i++)
        stack[i].event = SIZE_MAX;
}

void tsr_prof_reset(void)
{
    tsr_prof_clear_events();
    ntotals = 0;
}

static int same_text(const char *a, const char *b)
{
    return a == b || (a && b && strcmp(a, b) == 0);
}

/* Category first, then the larger time (device time where measured) first. */
static int by_cat_then_time(const void *pa, const void *pb)
{
    const tsr_prof_total_t *a = pa, *b = pb;
    if (a->cat != b->cat)
        return a->cat < b->cat ? -1 : 1;
    double ta = a->on_device ? a->device : a->self, tb = b->on_device ? b->device : b->self;
    return ta > tb ? -1 : ta < tb ? 1 : 0;
}

tsr_status_t tsr_prof_totals(tsr_prof_total_t **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    settle();
    if (ntotals == 0)
        return TSR_OK;
    tsr_prof_total_t *t = malloc(ntotals * sizeof *t);
    if (!t)
        return TSR_ERROR(TSR_ERR_OUT_OF_MEMORY, "profile totals of %zu regions", ntotals);
    size_t k = 0;
    for (size_t i = 0; i < ntotals; i++) {
        size_t j = 0;
        while (j < k && !(t[j].cat == totals[i].cat && same_text(t[j].name, totals[i].name) &&
                          same_text(t[j].label, totals[i].label)))
            j++;
        if (j == k) {
            t[k++] = totals[i];
            continue;
        }
        t[j].count += totals[i].count;
        t[j].seconds += totals[i].seconds;
        t[j].self += totals[i].self;
        t[j].device += totals[i].device;
        t[j].on_device |= totals[i].on_device;
    }
    qsort(t, k, sizeof *t, by_cat_then_time);
    *out = t;
    *n = k;
    return TSR_OK;
}

const tsr_prof_event_t *tsr_prof_events(size_t *count, size_t *dropped)
{
    settle();
    *count = nevents;
    if (dropped)
        *dropped = dropped_events;
    return events;
}
