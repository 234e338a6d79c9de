/*
 * zero.c: ZeRO stages 0-3 over flat, bucketed buffers.
 *
 * One bucket per layer. A bucket of n elements is padded to dp * s (s = ceil(n / dp)); dp
 * rank r owns bucket elements [r*s, (r+1)*s) in every stage (the cut used for the update in
 * stages >= 1, and for the global norm and checkpoint writing in all stages). Whole buffers
 * ("full") use the padded bucket layout, bucket b at offset off; sharded buffers hold the
 * shards one after another, bucket b at offset shard_off.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/internal.h"

/* Scalars of one update, the same for every element of a step. */
typedef struct update {
    float lr;        /* learning rate of this step */
    float grad_coef; /* gradients are multiplied by this: 1/(dp * loss scale), times the clip factor */
    float bc1, bc2;  /* AdamW bias corrections 1 - beta^t */
} update_t;

typedef struct tensor_rec {
    tsr_zero_tensor_t desc;
    char name[TSR_ZERO_NAME_MAX];
    size_t n;      /* local elements */
    int bucket;    /* index into buckets */
    size_t off;    /* first element within the bucket */
    int counted;   /* the ownership rule says this rank counts (and writes) its block */
} tensor_rec_t;

/* Where a gathered layer (stage 3) stands. */
enum { GATHER_NONE = 0, GATHER_IN_FLIGHT, GATHER_VALID };

typedef struct bucket {
    int layer;
    size_t n, s;          /* real elements; shard length */
    size_t off, shard_off; /* offsets in full and sharded buffers */
    int *tensors, ntensors; /* tensor ids, in registration order */
    int ready_count;      /* stages 0-1: grad_ready calls this step */
    int launched;         /* a reduction was started and not yet finished */
    tsr_request_t req;    /* that reduction */
    float *grad_full;     /* stages 2-3: this layer's whole gradient while it is computed */
    float *rs_recv;       /* stages 2-3: reduce-scatter result before it is added to the shard */
    float *gathered;      /* stage 3: the layer's gathered working parameters */
    tsr_request_t gather_req;
    int gather_state;
} bucket_t;

struct tsr_zero {
    tsr_zero_config_t cfg;
    tsr_grid_t grid;
    tsr_device_t dev;
    tsr_comm_t dp, world;
    int N, r; /* dp size and rank */
    tsr_grid_coords_t coords;
    tensor_rec_t *tensors;
    int ntensors, cap;
    bucket_t *buckets;
    int nbuckets;
    int committed;
    size_t padded_total, shard_total;
    float *params_full;  /* stages 0-2: working parameters, whole */
    float *params_shard; /* stage 3: working parameters, this rank's shards */
    float *master;       /* low precision only: fp32 master (whole in stage 0, shards otherwise) */
    float *grads_full;   /* stages 0-1 */
    float *grads_shard;  /* stages 2-3 */
    float *m, *v;        /* optimizer state (whole in stage 0, shards otherwise) */
    long step, good_steps;
    float loss_scale;
    double grad_div;        /* the summed gradients are divided by this: the dp size, or a server's round */
    int ps_worker;          /* the grid is a parameter-server worker's: the servers update */
    tsr__ps_worker_t *ps;   /* its link to the servers, from the commit on */
    int ps_published;       /* the initial parameters went to the servers */
    double loss;            /* the step's loss (tsr__zero_set_loss()) */
};

static tsr_status_t check_config(const tsr_zero_config_t *c)
{
    if (!c || c->struct_size < sizeof(tsr_zero_config_t))
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "zero config not initialized with TSR_ZERO_CONFIG_INIT");
    if (c->stage < 0 || c->stage > 3)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "ZeRO stage must be 0..3, got %d", c->stage);
    if (c->optim != TSR_OPTIM_ADAMW && c->optim != TSR_OPTIM_SGD)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "optimizer must be TSR_OPTIM_ADAMW or TSR_OPTIM_SGD, got %d",
                         (int)c->optim);
    if (!(c->lr >= 0) || !(c->weight_decay >= 0) || !(c->clip_norm >= 0))
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "lr, weight_decay and clip_norm must be >= 0, got %g, %g, %g",
                         (double)c->lr, (double)c->weight_decay, (double)c->clip_norm);
    if (c->optim == TSR_OPTIM_ADAMW && !(c->beta1 >= 0 && c->beta1 < 1 && c->beta2 >= 0 && c->beta2 < 1 && c->eps > 0))
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "AdamW needs 0 <= beta1, beta2 < 1 and eps > 0, got %g, %g, %g",
                         (double)c->beta1, (double)c->beta2, (double)c->eps);
    if (c->optim == TSR_OPTIM_SGD && !(c->momentum >= 0 && c->momentum < 1))
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "SGD momentum must be in [0, 1), got %g", (double)c->momentum);
    if ((unsigned)c->schedule > TSR_LR_WARMUP_LINEAR)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "unknown LR schedule %d", (int)c->schedule);
    if (c->warmup_steps < 0)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "warmup_steps must be >= 0, got %ld", c->warmup_steps);
    if (c->schedule != TSR_LR_CONSTANT && c->total_steps < c->warmup_steps)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "a decaying LR schedule needs warmup_steps <= total_steps, got %ld and %ld",
                         c->warmup_steps, c->total_steps);
    if (c->schedule != TSR_LR_CONSTANT && !(c->min_lr >= 0 && c->min_lr <= c->lr))
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "min_lr must be in [0, lr], got %g (lr %g)", (double)c->min_lr,
                         (double)c->lr);
    if (c->micro_batches < 1)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "micro_batches must be >= 1, got %d", c->micro_batches);
    if ((unsigned)c->precision > TSR_PRECISION_FP16)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "unknown precision %d", (int)c->precision);
    if (c->dynamic_loss_scale && (!(c->loss_scale > 0) || c->loss_scale_window < 1))
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "dynamic loss scaling needs loss_scale > 0 and loss_scale_window >= 1");
    return TSR_OK;
}

tsr_status_t tsr_zero_create(tsr_grid_t grid, tsr_device_t dev, const tsr_zero_config_t *cfg, tsr_zero_t *out)
{
    tsr_status_t rc = TSR_OK;
    struct tsr_zero *z = NULL;
    *out = NULL;
    TSR_CHECK(grid && dev, TSR_ERR_INVALID_ARG, "tsr_zero_create needs a grid and a device");
    TSR_TRY(check_config(cfg));
    z = tsr__calloc(1, sizeof *z);
    TSR_CHECK(z, TSR_ERR_OUT_OF_MEMORY, "no memory for an optimizer");
    z->cfg = *cfg;
    z->cfg.struct_size = sizeof z->cfg;
    z->grid = grid;
    z->dev = dev;
    z->dp = tsr_grid_comm(grid, TSR_AXIS_DP);
    z->world = tsr_grid_comm(grid, TSR_AXIS_WORLD);
    z->N = tsr_comm_size(z->dp);
    z->r = tsr_comm_rank(z->dp);
    tsr_grid_coords(grid, &z->coords);
    z->loss_scale = cfg->dynamic_loss_scale ? cfg->loss_scale : 1.0f;
    z->grad_div = z->N;
    z->ps_worker = tsr_grid_ps_comm(grid) && !tsr_grid_is_server(grid);
    TSR_CHECK(!z->ps_worker || cfg->stage == 0, TSR_ERR_INVALID_ARG,
              "with parameter servers (ps=S) the servers hold the optimizer state: the ZeRO stage must be 0, got %d",
              cfg->stage);
    TSR_CHECK(!z->ps_worker || (cfg->precision == TSR_PRECISION_FP32 && !cfg->dynamic_loss_scale &&
                                tsr_device_kind(dev) == TSR_DEVICE_CPU),
              TSR_ERR_NOT_SUPPORTED, "parameter servers (ps=S) train in fp32 on the CPU device");
    *out = z;
    z = NULL;
cleanup:
    free(z);
    return rc;
}

void tsr__zero_set_grad_divisor(tsr_zero_t z, double divisor)
{
    z->grad_div = divisor;
}

void tsr__zero_set_loss(tsr_zero_t z, double loss)
{
    z->loss = loss;
}

double tsr__zero_loss(tsr_zero_t z)
{
    return z->loss;
}

tsr__ps_worker_t *tsr__zero_ps_worker(tsr_zero_t z)
{
    return z->ps;
}

tsr_device_t tsr_zero_device(tsr_zero_t z)
{
    return z->dev;
}

static void free_buf(tsr_zero_t z, float **p)
{
    void *v = *p;
    tsr_device_free(z->dev, &v);
    *p = NULL;
}

void tsr_zero_destroy(tsr_zero_t *opt)
{
    if (!opt || !*opt)
        return;
    tsr_zero_t z = *opt;
    tsr__ps_worker_leave(&z->ps);
    for (int b = 0; b < z->nbuckets; b++) {
        bucket_t *k = &z->buckets[b];
        tsr_request_wait(&k->req);
        tsr_request_wait(&k->gather_req);
        free_buf(z, &k->grad_full);
        free_buf(z, &k->rs_recv);
        free_buf(z, &k->gathered);
        free(k->tensors);
    }
    float **bufs[] = {&z->params_full, &z->params_shard, &z->master, &z->grads_full, &z->grads_shard, &z->m, &z->v};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        free_buf(z, bufs[i]);
    free(z->buckets);
    free(z->tensors);
    free(z);
    *opt = NULL;
}

static tsr_status_t check_tensor(const tsr_zero_tensor_t *t)
{
    if (!t || t->struct_size < sizeof(tsr_zero_tensor_t))
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "tensor description not initialized with TSR_ZERO_TENSOR_INIT");
    if (!t->name || !t->name[0] || strlen(t->name) >= TSR_ZERO_NAME_MAX)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "a tensor needs a name of 1 to %d characters", TSR_ZERO_NAME_MAX - 1);
    if (t->rows < 1 || t->cols < 1 || t->local_rows < 1 || t->local_cols < 1 || t->row_off < 0 || t->col_off < 0 ||
        t->row_off + t->local_rows > t->rows || t->col_off + t->local_cols > t->cols)
        return TSR_ERROR(TSR_ERR_INVALID_ARG,
                         "tensor %s: block [%ld+%ld) x [%ld+%ld) must be non-empty and inside its %ld x %ld shape",
                         t->name, t->row_off, t->local_rows, t->col_off, t->local_cols, t->rows, t->cols);
    if (t->layer < 0)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "tensor %s: layer id must be >= 0, got %d", t->name, t->layer);
    return TSR_OK;
}

/* The ownership rule of the header, for this rank's coordinates. */
static int counts_block(const tsr_grid_coords_t *c, unsigned flags)
{
    if ((flags & TSR_ZERO_REPLICATED_TP) && c->tp != 0)
        return 0;
    if ((flags & TSR_ZERO_REPLICATED_TP_ROW) && c->tp_col != 0)
        return 0;
    if ((flags & TSR_ZERO_REPLICATED_TP_COL) && c->tp_row != 0)
        return 0;
    if ((flags & TSR_ZERO_REPLICATED_PP) && c->pp != 0)
        return 0;
    return 1;
}

tsr_status_t tsr_zero_register(tsr_zero_t z, const tsr_zero_tensor_t *t, int *id)
{
    tsr_status_t rc = TSR_OK;
    TSR_CHECK(!z->committed, TSR_ERR_INVALID_ARG, "tensors must be registered before tsr_zero_commit");
    TSR_TRY(check_tensor(t));
    for (int i = 0; i < z->ntensors; i++)
        TSR_CHECK(strcmp(z->tensors[i].name, t->name) != 0, TSR_ERR_INVALID_ARG, "tensor %s registered twice",
                  t->name);
    if (z->ntensors == z->cap) {
        int cap = z->cap ? 2 * z->cap : 16;
        tensor_rec_t *grown = realloc(z->tensors, (size_t)cap * sizeof *grown);
        TSR_CHECK(grown, TSR_ERR_OUT_OF_MEMORY, "no memory for %d tensor records", cap);
        z->tensors = grown;
        z->cap = cap;
    }
    tensor_rec_t *rec = &z->tensors[z->ntensors];
    memset(rec, 0, sizeof *rec);
    rec->desc = *t;
    rec->desc.struct_size = sizeof rec->desc;
    strcpy(rec->name, t->name);
    rec->desc.name = NULL; /* set on each copy handed out: the array moves as it grows */
    rec->n = (size_t)t->local_rows * (size_t)t->local_cols;
    rec->counted = counts_block(&z->coords, t->flags);
    if (id)
        *id = z->ntensors;
    z->ntensors++;
cleanup:
    return rc;
}

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

/* One bucket per distinct layer id, in increasing layer order. */
static tsr_status_t build_buckets(tsr_zero_t z)
{
    tsr_status_t rc = TSR_OK;
    int *layers = malloc((size_t)z->ntensors * sizeof *layers);
    TSR_CHECK(layers, TSR_ERR_OUT_OF_MEMORY, "no memory for layer ids");
    for (int i = 0; i < z->ntensors; i++)
        layers[i] = z->tensors[i].desc.layer;
    qsort(layers, (size_t)z->ntensors, sizeof *layers, cmp_int);
    z->buckets = tsr__calloc((size_t)z->ntensors, sizeof *z->buckets);
    TSR_CHECK(z->buckets, TSR_ERR_OUT_OF_MEMORY, "no memory for buckets");
    for (int i = 0; i < z->ntensors; i++) {
        if (i > 0 && layers[i] == layers[i - 1])
            continue;
        bucket_t *k = &z->buckets[z->nbuckets++];
        k->layer = layers[i];
        k->tensors = malloc((size_t)z->ntensors * sizeof *k->tensors);
        TSR_CHECK(k->tensors, TSR_ERR_OUT_OF_MEMORY, "no memory for a bucket");
        for (int t = 0; t < z->ntensors; t++) {
            tensor_rec_t *rec = &z->tensors[t];
            if (rec->desc.layer != k->layer)
                continue;
            rec->bucket = z->nbuckets - 1;
            rec->off = k->n;
            k->n += rec->n;
            k->tensors[k->ntensors++] = t;
        }
        k->s = (k->n + (size_t)z->N - 1) / (size_t)z->N;
        k->off = z->padded_total;
        k->shard_off = z->shard_total;
        z->padded_total += k->s * (size_t)z->N;
        z->shard_total += k->s;
    }
cleanup:
    free(layers);
    return rc;
}

/* A tracked buffer of n floats, contents undefined. */
static tsr_status_t alloc_floats(tsr_zero_t z, tsr_mem_category_t cat, size_t n, float **out)
{
    void *p = NULL;
    tsr_status_t rc = tsr_device_alloc(z->dev, cat, n * sizeof(float), &p);
    *out = p;
    return rc;
}

/* A zeroed tracked buffer of n floats. */
static tsr_status_t alloc_zeroed(tsr_zero_t z, tsr_mem_category_t cat, size_t n, float **out)
{
    tsr_status_t rc = TSR_OK;
    TSR_TRY(alloc_floats(z, cat, n, out));
    if (*out)
        TSR_TRY(tsr_device_memset(z->dev, *out, 0, n * sizeof(float)));
cleanup:
    if (rc != TSR_OK)
        free_buf(z, out);
    return rc;
}

/* Stage 0 keeps every buffer whole; stage s >= 1 shards the optimizer state, s >= 2 the
 * gradients, s = 3 the parameters. The master copy exists only below fp32 and is sharded
 * from stage 1 on, like the state it is updated with. */
static tsr_status_t allocate(tsr_zero_t z)
{
    tsr_status_t rc = TSR_OK;
    int st = z->cfg.stage;
    size_t state_n = st == 0 ? z->padded_total : z->shard_total;
    if (st < 3)
        TSR_TRY(alloc_zeroed(z, TSR_MEM_PARAMS, z->padded_total, &z->params_full));
    else
        TSR_TRY(alloc_zeroed(z, TSR_MEM_PARAMS, z->shard_total, &z->params_shard));
    if (z->cfg.precision != TSR_PRECISION_FP32)
        TSR_TRY(alloc_zeroed(z, TSR_MEM_PARAMS, state_n, &z->master));
    if (st < 2)
        TSR_TRY(alloc_zeroed(z, TSR_MEM_GRADS, z->padded_total, &z->grads_full));
    else
        TSR_TRY(alloc_zeroed(z, TSR_MEM_GRADS, z->shard_total, &z->grads_shard));
    if (z->ps_worker) /* the servers keep the state */
        goto cleanup;
    if (z->cfg.optim == TSR_OPTIM_ADAMW || z->cfg.momentum > 0)
        TSR_TRY(alloc_zeroed(z, TSR_MEM_OPTIM, state_n, &z->m));
    if (z->cfg.optim == TSR_OPTIM_ADAMW)
        TSR_TRY(alloc_zeroed(z, TSR_MEM_OPTIM, state_n, &z->v));
cleanup:
    return rc;
}

tsr_status_t tsr_zero_commit(tsr_zero_t z)
{
    tsr_status_t rc = TSR_OK;
    TSR_CHECK(!z->committed, TSR_ERR_INVALID_ARG, "tsr_zero_commit called twice");
    TSR_CHECK(z->ntensors > 0, TSR_ERR_INVALID_ARG, "tsr_zero_commit: no tensor registered");
    size_t total = 0;
    for (int i = 0; i < z->ntensors; i++)
        total += z->tensors[i].n;
    /* Ranks of a dp group that disagree would pair mismatched collectives: check first. */
    long long mine[4] = {z->ntensors, (long long)total, -z->ntensors, -(long long)total}, all[4];
    TSR_TRY(tsr_comm_allreduce(z->dp, mine, all, 4, TSR_DTYPE_I64, TSR_REDUCE_MAX));
    TSR_CHECK(all[0] == -all[2] && all[1] == -all[3], TSR_ERR_MISMATCH,
              "dp ranks registered different tensors (this rank: %d tensors, %zu elements)", z->ntensors, total);
    TSR_TRY(build_buckets(z));
    TSR_TRY(allocate(z));
    z->committed = 1;
    if (z->ps_worker)
        TSR_TRY(tsr__ps_worker_join(z->grid, z, &z->ps));
cleanup:
    return rc;
}

int tsr_zero_tensor_count(tsr_zero_t z)
{
    return z->ntensors;
}

static tsr_status_t check_id(tsr_zero_t z, int id)
{
    if (id < 0 || id >= z->ntensors)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "tensor id %d out of range [0, %d)", id, z->ntensors);
    if (!z->committed)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "optimizer not committed: call tsr_zero_commit first");
    return TSR_OK;
}

tsr_status_t tsr_zero_tensor_desc(tsr_zero_t z, int id, tsr_zero_tensor_t *out)
{
    if (id < 0 || id >= z->ntensors)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "tensor id %d out of range [0, %d)", id, z->ntensors);
    *out = z->tensors[id].desc;
    out->name = z->tensors[id].name;
    return TSR_OK;
}

size_t tsr_zero_local_elements(tsr_zero_t z)
{
    size_t n = 0;
    for (int i = 0; i < z->ntensors; i++)
        n += z->tensors[i].n;
    return n;
}

void tsr_zero_flat_elements(tsr_zero_t z, size_t *padded, size_t *shard)
{
    if (padded)
        *padded = z->padded_total;
    if (shard)
        *shard = z->shard_total;
}

/* The bucket of a layer id, or NULL. */
static bucket_t *bucket_of(tsr_zero_t z, int layer)
{
    for (int b = 0; b < z->nbuckets; b++)
        if (z->buckets[b].layer == layer)
            return &z->buckets[b];
    return NULL;
}

static tsr_status_t find_layer(tsr_zero_t z, int layer, bucket_t **out)
{
    if (!z->committed)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "optimizer not committed: call tsr_zero_commit first");
    *out = bucket_of(z, layer);
    if (!*out)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "no tensor was registered with layer id %d", layer);
    return TSR_OK;
}

tsr_status_t tsr_zero_view(tsr_zero_t z, int id, float **param, float **grad)
{
    tsr_status_t rc = TSR_OK;
    TSR_TRY(check_id(z, id));
    const tensor_rec_t *t = &z->tensors[id];
    const bucket_t *k = &z->buckets[t->bucket];
    if (param) {
        if (z->cfg.stage < 3)
            *param = z->params_full + k->off + t->off;
        else
            *param = k->gather_state == GATHER_VALID ? k->gathered + t->off : NULL;
    }
    if (grad) {
        if (z->cfg.stage < 2)
            *grad = z->grads_full + k->off + t->off;
        else
            *grad = k->grad_full ? k->grad_full + t->off : NULL;
    }
cleanup:
    return rc;
}

/* ---- stage 3: gather and release ---- */

/* This rank's working shard of a bucket. */
static float *working_shard(tsr_zero_t z, const bucket_t *k)
{
    if (z->cfg.stage == 3)
        return z->params_shard + k->shard_off;
    return z->params_full + k->off + (size_t)z->r * k->s;
}

static tsr_status_t start_gather(tsr_zero_t z, bucket_t *k)
{
    tsr_status_t rc = TSR_OK;
    TSR_TRY(alloc_floats(z, TSR_MEM_PARAMS, k->s * (size_t)z->N, &k->gathered));
    if (z->N == 1) {
        TSR_TRY(tsr_device_copy(z->dev, k->gathered, z->params_shard + k->shard_off, k->s * sizeof(float),
                                TSR_COPY_DEVICE_TO_DEVICE));
        k->gather_state = GATHER_VALID;
    } else {
        TSR_TRY(tsr_comm_iallgather(z->dp, z->params_shard + k->shard_off, k->gathered, k->s, TSR_DTYPE_F32,
                                    &k->gather_req));
        k->gather_state = GATHER_IN_FLIGHT;
    }
cleanup:
    return rc;
}

tsr_status_t tsr_zero_prefetch(tsr_zero_t z, int layer)
{
    bucket_t *k = z->committed ? bucket_of(z, layer) : NULL;
    if (z->cfg.stage < 3 || !k || k->gather_state != GATHER_NONE)
        return TSR_OK;
    return start_gather(z, k);
}

tsr_status_t tsr_zero_gather(tsr_zero_t z, int layer)
{
    tsr_status_t rc = TSR_OK;
    bucket_t *k = NULL;
    TSR_TRY(find_layer(z, layer, &k));
    if (z->cfg.stage < 3)
        goto cleanup;
    if (k->gather_state == GATHER_NONE)
        TSR_TRY(start_gather(z, k));
    TSR_TRY(tsr_request_wait(&k->gather_req));
    k->gather_state = GATHER_VALID;
cleanup:
    return rc;
}

tsr_status_t tsr_zero_release(tsr_zero_t z, int layer)
{
    tsr_status_t rc = TSR_OK;
    bucket_t *k = NULL;
    TSR_TRY(find_layer(z, layer, &k));
    if (z->cfg.stage < 3)
        goto cleanup;
    TSR_TRY(tsr_request_wait(&k->gather_req));
    free_buf(z, &k->gathered);
    k->gather_state = GATHER_NONE;
cleanup:
    return rc;
}

/* ---- gradient reduction ---- */

static tsr_status_t finish_reduce(tsr_zero_t z, bucket_t *k);

/* Start the reduction of one bucket: all-reduce in place (stage 0) or reduce-scatter of the
 * layer's whole gradient into a staging shard (stages 1-3; MPI forbids the receive buffer to
 * overlap the send buffer, and the in-place form would need a different layout). Sums; the
 * step averages.
 * Stages 2-3 keep one reduce-scatter in flight: the previous layer's overlapped this
 * layer's backward, and finishing it frees its whole gradient before more are allocated. */
static tsr_status_t launch_reduce(tsr_zero_t z, bucket_t *k)
{
    tsr_status_t rc = TSR_OK;
    if (z->cfg.stage >= 2)
        for (int b = 0; b < z->nbuckets; b++)
            if (&z->buckets[b] != k)
                TSR_TRY(finish_reduce(z, &z->buckets[b]));
    k->launched = 1;
    if (z->N == 1)
        goto cleanup;
    if (z->cfg.stage == 0) {
        TSR_TRY(tsr_comm_iallreduce(z->dp, TSR_IN_PLACE, z->grads_full + k->off, k->s * (size_t)z->N, TSR_DTYPE_F32,
                                    TSR_REDUCE_SUM, &k->req));
    } else {
        const float *whole = z->cfg.stage == 1 ? z->grads_full + k->off : k->grad_full;
        TSR_TRY(alloc_floats(z, TSR_MEM_COMM, k->s, &k->rs_recv));
        TSR_TRY(tsr_comm_ireduce_scatter(z->dp, whole, k->rs_recv, k->s, TSR_DTYPE_F32, TSR_REDUCE_SUM, &k->req));
    }
cleanup:
    return rc;
}

/* Wait for a bucket's reduction. Stage 1 keeps the result in its staging shard, which the
 * step reads (shard_grad) and tsr_zero_zero_grad frees; stages 2-3 add it into the gradient
 * shard and free the layer's whole gradient. */
static tsr_status_t finish_reduce(tsr_zero_t z, bucket_t *k)
{
    tsr_status_t rc = TSR_OK;
    if (!k->launched)
        goto cleanup;
    TSR_TRY(tsr_request_wait(&k->req));
    k->launched = 0;
    if (z->cfg.stage >= 2) {
        const float *src = z->N == 1 ? k->grad_full : k->rs_recv;
        TSR_TRY(tsr_kernel_axpy(z->dev, k->s, 1.0f, src, z->grads_shard + k->shard_off));
        free_buf(z, &k->rs_recv);
        free_buf(z, &k->grad_full);
    }
cleanup:
    return rc;
}

tsr_status_t tsr_zero_grad_begin(tsr_zero_t z, int layer)
{
    tsr_status_t rc = TSR_OK;
    bucket_t *k = NULL;
    TSR_TRY(find_layer(z, layer, &k));
    if (z->cfg.stage < 2)
        goto cleanup;
    TSR_TRY(finish_reduce(z, k)); /* the previous micro-batch's reduce-scatter of this layer */
    if (!k->grad_full)
        TSR_TRY(alloc_zeroed(z, TSR_MEM_GRADS, k->s * (size_t)z->N, &k->grad_full));
cleanup:
    return rc;
}

tsr_status_t tsr_zero_grad_ready(tsr_zero_t z, int layer)
{
    tsr_status_t rc = TSR_OK;
    bucket_t *k = NULL;
    TSR_TRY(find_layer(z, layer, &k));
    if (z->cfg.stage < 2) {
        TSR_CHECK(k->ready_count < z->cfg.micro_batches, TSR_ERR_INVALID_ARG,
                  "layer %d marked ready %d times in one step, but micro_batches is %d", layer, k->ready_count + 1,
                  z->cfg.micro_batches);
        if (++k->ready_count == z->cfg.micro_batches)
            TSR_TRY(launch_reduce(z, k));
    } else {
        TSR_CHECK(k->grad_full && !k->launched, TSR_ERR_INVALID_ARG,
                  "layer %d marked ready without tsr_zero_grad_begin for this micro-batch", layer);
        TSR_TRY(launch_reduce(z, k));
    }
cleanup:
    return rc;
}

/* Every bucket reduced: layers never marked ready are reduced now, blocking. */
static tsr_status_t finish_all_reductions(tsr_zero_t z)
{
    tsr_status_t rc = TSR_OK;
    for (int b = 0; b < z->nbuckets; b++) {
        bucket_t *k = &z->buckets[b];
        int pending = z->cfg.stage < 2 ? k->ready_count < z->cfg.micro_batches : k->grad_full != NULL;
        if (pending && !k->launched)
            TSR_TRY(launch_reduce(z, k));
    }
    for (int b = 0; b < z->nbuckets; b++) {
        TSR_TRY(finish_reduce(z, &z->buckets[b]));
        z->buckets[b].ready_count = 0;
    }
cleanup:
    return rc;
}

/* ---- the step ---- */

/* Reduced (summed) gradient at bucket element i, for i in this rank's shard. */
static const float *shard_grad(tsr_zero_t z, const bucket_t *k)
{
    if (z->cfg.stage == 1 && k->rs_recv)
        return k->rs_recv;
    if (z->cfg.stage < 2)
        return z->grads_full + k->off + (size_t)z->r * k->s;
    return z->grads_shard + k->shard_off;
}

/* Sum of squares of the gradient elements this rank counts under the ownership rule, one
 * reduction per run of adjacent counted tensors (each reduction waits for the device). */
static tsr_status_t local_sumsq(tsr_zero_t z, double *out)
{
    tsr_status_t rc = TSR_OK;
    double sum = 0.0, part = 0.0;
    for (int b = 0; b < z->nbuckets; b++) {
        const bucket_t *k = &z->buckets[b];
        size_t lo0 = (size_t)z->r * k->s, hi0 = lo0 + k->s, run_lo = 0, run_hi = 0;
        const float *g = shard_grad(z, k);
        for (int j = 0; j <= k->ntensors; j++) {
            size_t lo = 0, hi = 0;
            if (j < k->ntensors) {
                const tensor_rec_t *t = &z->tensors[k->tensors[j]];
                lo = t->off > lo0 ? t->off : lo0;
                hi = t->off + t->n < hi0 ? t->off + t->n : hi0;
                if (!t->counted || hi <= lo)
                    lo = hi = 0;
            }
            if (hi > lo && lo == run_hi && run_hi > run_lo) {
                run_hi = hi; /* extends the run */
                continue;
            }
            if (run_hi > run_lo) {
                TSR_TRY(tsr_kernel_sumsq(z->dev, g + (run_lo - lo0), run_hi - run_lo, &part));
                sum += part;
            }
            run_lo = lo, run_hi = hi;
        }
    }
cleanup:
    *out = sum;
    return rc;
}

/* The elements a rank updates: the whole bucket in stage 0, its shard otherwise. */
static size_t update_begin(tsr_zero_t z, const bucket_t *k)
{
    return z->cfg.stage == 0 ? 0 : (size_t)z->r * k->s;
}

static size_t update_len(tsr_zero_t z, const bucket_t *k)
{
    return z->cfg.stage == 0 ? k->s * (size_t)z->N : k->s;
}

/* The fp32 master parameters of a bucket's update range. */
static float *master_of(tsr_zero_t z, const bucket_t *k)
{
    if (z->master)
        return z->master + (z->cfg.stage == 0 ? k->off : k->shard_off);
    return z->cfg.stage == 0 ? z->params_full + k->off : working_shard(z, k);
}

static float *state_of(tsr_zero_t z, float *buf, const bucket_t *k)
{
    if (!buf)
        return NULL;
    return buf + (z->cfg.stage == 0 ? k->off : k->shard_off);
}

static const float *update_grad(tsr_zero_t z, const bucket_t *k)
{
    return z->cfg.stage == 0 ? z->grads_full + k->off : shard_grad(z, k);
}

static tsr_status_t update_bucket(tsr_zero_t z, const bucket_t *k, const update_t *u)
{
    tsr_status_t rc = TSR_OK;
    size_t lo0 = update_begin(z, k), hi0 = lo0 + update_len(z, k);
    float *p = master_of(z, k), *m = state_of(z, z->m, k), *v = state_of(z, z->v, k);
    const float *g = update_grad(z, k);
    for (int j = 0; j < k->ntensors; j++) {
        const tensor_rec_t *t = &z->tensors[k->tensors[j]];
        size_t lo = t->off > lo0 ? t->off : lo0, hi = t->off + t->n < hi0 ? t->off + t->n : hi0;
        if (hi <= lo)
            continue;
        size_t o = lo - lo0;
        float wd = (t->desc.flags & TSR_ZERO_NO_DECAY) ? 0.0f : z->cfg.weight_decay;
        if (z->cfg.optim == TSR_OPTIM_ADAMW) {
            tsr_adamw_params_t hp = {u->lr, z->cfg.beta1, z->cfg.beta2, z->cfg.eps, wd, u->bc1, u->bc2, u->grad_coef};
            TSR_TRY(tsr_kernel_adamw(z->dev, hi - lo, p + o, g + o, m + o, v + o, &hp, TSR_DTYPE_F32, NULL));
        } else {
            TSR_TRY(tsr_kernel_sgd(z->dev, hi - lo, p + o, g + o, m ? m + o : NULL, u->lr, z->cfg.momentum, wd,
                                   u->grad_coef, TSR_DTYPE_F32, NULL));
        }
    }
cleanup:
    return rc;
}

/* Copy the master into the working copy over a bucket's update range, rounded to the
 * working precision on the CPU. On a GPU the copy stays exact: the model's compute copies
 * round it when they convert it to bf16. */
static tsr_status_t refresh_working(tsr_zero_t z, const bucket_t *k)
{
    float *w = z->cfg.stage == 0 ? z->params_full + k->off : working_shard(z, k);
    size_t n = update_len(z, k);
    tsr_status_t rc = tsr_device_copy(z->dev, w, master_of(z, k), n * sizeof(float), TSR_COPY_DEVICE_TO_DEVICE);
    if (rc == TSR_OK && tsr_device_kind(z->dev) == TSR_DEVICE_CPU)
        tsr_zero_round(z->cfg.precision, w, n);
    return rc;
}

tsr_status_t tsr_zero_sync_params(tsr_zero_t z)
{
    tsr_status_t rc = TSR_OK;
    tsr_request_t *reqs = NULL;
    TSR_CHECK(z->committed, TSR_ERR_INVALID_ARG, "optimizer not committed: call tsr_zero_commit first");
    if (z->ps_worker) {
        TSR_CHECK(z->ps && !z->ps_published, TSR_ERR_NOT_SUPPORTED,
                  "a parameter-server worker publishes its initial parameters once (resuming is not built)");
        z->ps_published = 1;
        TSR_TRY(tsr__ps_worker_publish(z->ps));
        goto cleanup;
    }
    if (z->master)
        for (int b = 0; b < z->nbuckets; b++)
            TSR_TRY(refresh_working(z, &z->buckets[b]));
    if (z->cfg.stage == 0 || z->cfg.stage == 3 || z->N == 1)
        goto cleanup;
    reqs = tsr__calloc((size_t)z->nbuckets, sizeof *reqs);
    TSR_CHECK(reqs, TSR_ERR_OUT_OF_MEMORY, "no memory for %d requests", z->nbuckets);
    for (int b = 0; b < z->nbuckets; b++) {
        const bucket_t *k = &z->buckets[b];
        TSR_TRY(tsr_comm_iallgather(z->dp, TSR_IN_PLACE, z->params_full + k->off, k->s, TSR_DTYPE_F32, &reqs[b]));
    }
cleanup:
    if (reqs) {
        tsr_status_t w = tsr_request_waitall((size_t)z->nbuckets, reqs);
        if (rc == TSR_OK)
            rc = w;
    }
    free(reqs);
    return rc;
}

tsr_status_t tsr_zero_zero_grad(tsr_zero_t z)
{
    tsr_status_t rc = TSR_OK;
    TSR_CHECK(z->committed, TSR_ERR_INVALID_ARG, "optimizer not committed: call tsr_zero_commit first");
    for (int b = 0; b < z->nbuckets; b++) {
        bucket_t *k = &z->buckets[b];
        TSR_TRY(tsr_request_wait(&k->req));
        k->launched = 0;
        k->ready_count = 0;
        free_buf(z, &k->rs_recv);
        free_buf(z, &k->grad_full);
    }
    if (z->grads_full)
        TSR_TRY(tsr_device_memset(z->dev, z->grads_full, 0, z->padded_total * sizeof(float)));
    if (z->grads_shard)
        TSR_TRY(tsr_device_memset(z->dev, z->grads_shard, 0, z->shard_total * sizeof(float)));
cleanup:
    return rc;
}

float tsr_zero_loss_scale(tsr_zero_t z)
{
    return z->loss_scale;
}

/* After a step: halve the loss scale on overflow, double it after a window of clean steps. */
static void adjust_loss_scale(tsr_zero_t z, int overflow)
{
    if (!z->cfg.dynamic_loss_scale)
        return;
    if (overflow) {
        z->loss_scale = z->loss_scale > 2.0f ? z->loss_scale * 0.5f : 1.0f;
        z->good_steps = 0;
    } else if (++z->good_steps >= z->cfg.loss_scale_window) {
        z->loss_scale *= 2.0f;
        z->good_steps = 0;
    }
}

tsr_status_t tsr_zero_step(tsr_zero_t z, tsr_zero_step_info_t *info)
{
    TSR__REGION(NULL, TSR_PROF_OPTIM, "optimizer step", NULL);
    tsr_status_t rc = TSR_OK;
    TSR_CHECK(z->committed, TSR_ERR_INVALID_ARG, "optimizer not committed: call tsr_zero_commit first");
    for (int b = 0; b < z->nbuckets; b++)
        TSR_CHECK(z->buckets[b].gather_state == GATHER_NONE, TSR_ERR_INVALID_ARG,
                  "layer %d is still gathered at the step: release it first", z->buckets[b].layer);
    TSR_TRY(finish_all_reductions(z));
    if (z->ps_worker) {
        double norm = 0.0;
        float lr = 0.0f;
        TSR_CHECK(z->ps_published, TSR_ERR_INVALID_ARG, "call tsr_zero_sync_params before the first step");
        TSR_TRY(tsr__ps_worker_exchange(z->ps, z->step + 1, &z->loss, &norm, &lr));
        z->step++;
        TSR_TRY(tsr_zero_zero_grad(z));
        if (info) {
            info->step = z->step;
            info->grad_norm = norm;
            info->lr = lr;
            info->loss_scale = z->loss_scale;
            info->skipped = 0;
        }
        goto cleanup;
    }

    double sum = 0.0;
    TSR_TRY(local_sumsq(z, &sum));
    TSR_TRY(tsr_comm_allreduce(z->world, TSR_IN_PLACE, &sum, 1, TSR_DTYPE_F64, TSR_REDUCE_SUM));
    double inv = 1.0 / (z->grad_div * (double)z->loss_scale);
    double norm = sqrt(sum) * inv;
    int overflow = !isfinite(norm);
    update_t u = {0};
    if (!overflow) {
        double clip = z->cfg.clip_norm > 0 && norm > z->cfg.clip_norm ? z->cfg.clip_norm / (norm + 1e-6) : 1.0;
        z->step++;
        u.lr = tsr_zero_lr_at(&z->cfg, z->step);
        u.grad_coef = (float)(inv * clip);
        u.bc1 = 1.0f - powf(z->cfg.beta1, (float)z->step);
        u.bc2 = 1.0f - powf(z->cfg.beta2, (float)z->step);
        for (int b = 0; b < z->nbuckets; b++)
            TSR_TRY(update_bucket(z, &z->buckets[b], &u));
        TSR_TRY(tsr_zero_sync_params(z));
    }
    adjust_loss_scale(z, overflow);
    TSR_TRY(tsr_zero_zero_grad(z));
    if (info) {
        info->step = z->step;
        info->grad_norm = norm;
        info->lr = u.lr;
        info->loss_scale = z->loss_scale;
        info->skipped = overflow;
    }
cleanup:
    return rc;
}

/* ---- checkpoint access ---- */

tsr_status_t tsr_zero_piece(tsr_zero_t z, int id, tsr_zero_kind_t kind, tsr_zero_piece_t *out)
{
    tsr_status_t rc = TSR_OK;
    TSR_TRY(check_id(z, id));
    float *buf = kind == TSR_ZERO_M ? z->m : kind == TSR_ZERO_V ? z->v : NULL;
    TSR_CHECK(kind == TSR_ZERO_PARAM || buf, TSR_ERR_INVALID_ARG, "this optimizer keeps no %s state",
              kind == TSR_ZERO_M ? "m (momentum)" : "v");
    const tensor_rec_t *t = &z->tensors[id];
    const bucket_t *k = &z->buckets[t->bucket];
    float *base = kind == TSR_ZERO_PARAM ? master_of(z, k) : state_of(z, buf, k);
    size_t lo0 = update_begin(z, k), hi0 = lo0 + update_len(z, k);
    size_t lo = t->off > lo0 ? t->off : lo0, hi = t->off + t->n < hi0 ? t->off + t->n : hi0;
    memset(out, 0, sizeof *out);
    if (hi > lo) {
        out->begin = lo - t->off;
        out->end = hi - t->off;
        out->data = base + (lo - lo0);
    }
    /* The writer of an element is the rank whose shard holds it, among the ranks that count. */
    size_t wlo0 = (size_t)z->r * k->s, whi0 = wlo0 + k->s;
    size_t wlo = t->off > wlo0 ? t->off : wlo0, whi = t->off + t->n < whi0 ? t->off + t->n : whi0;
    if (t->counted && whi > wlo) {
        out->write_begin = wlo - t->off;
        out->write_end = whi - t->off;
    }
cleanup:
    return rc;
}

void tsr_zero_get_state(tsr_zero_t z, tsr_zero_state_t *out)
{
    out->step = z->step;
    out->loss_scale = z->loss_scale;
    out->good_steps = z->good_steps;
}

tsr_status_t tsr_zero_set_state(tsr_zero_t z, const tsr_zero_state_t *s)
{
    if (s->step < 0 || !(s->loss_scale > 0) || s->good_steps < 0)
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "optimizer state needs step >= 0, loss_scale > 0, good_steps >= 0");
    z->step = s->step;
    z->loss_scale = s->loss_scale;
    z->good_steps = s->good_steps;
    return TSR_OK;
}
