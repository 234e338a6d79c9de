/*
 * state.c: saving and loading a ZeRO optimizer's whole state (parameters, moments, scalars)
 * through the checkpoint writer and reader, on any layout.
 *
 * Every rank of the grid must name the same datasets in the same order, but a rank knows
 * only the tensors it registered (pipeline stages hold different layers). So the ranks first
 * agree on the global list: every rank's names and shapes are gathered, sorted and
 * deduplicated. A rank then passes, for each global tensor, its ownership range (writing) or
 * everything it stores (reading), or an empty piece when it holds none of that tensor.
 */
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ckpt/ckpt_impl.h"

/* A tensor of the whole grid, and this rank's id for it (-1 if it holds none of it). */
typedef struct global_tensor {
    char name[TSR_ZERO_NAME_MAX];
    int64_t rows, cols;
    int id;
} global_tensor_t;

/* The agreed list, and which per-element states every rank's optimizer keeps. */
typedef struct tensor_list {
    global_tensor_t *t;
    int n;
    int kinds;                /* TSR_ZERO_PARAM + 1 (params), + M, + V: 1, 2 or 3 */
} tensor_list_t;

/* The longest dataset name: "/optim/" + tensor name + "/m". */
#define DATASET_MAX (TSR_ZERO_NAME_MAX + 16)

static void dataset_name(const char *tensor, tsr_zero_kind_t kind, char out[DATASET_MAX])
{
    if (kind == TSR_ZERO_PARAM)
        snprintf(out, DATASET_MAX, "/params/%s", tensor);
    else
        snprintf(out, DATASET_MAX, "/optim/%s/%s", tensor, kind == TSR_ZERO_M ? "m" : "v");
}

/* A 1 x n tensor (a vector) is stored as a 1-D dataset of n elements. */
static int tensor_dims(const global_tensor_t *t, int64_t dims[2])
{
    if (t->rows == 1) {
        dims[0] = t->cols;
        dims[1] = 0;
        return 1;
    }
    dims[0] = t->rows;
    dims[1] = t->cols;
    return 2;
}

static int by_name(const void *a, const void *b)
{
    return strcmp(((const global_tensor_t *)a)->name, ((const global_tensor_t *)b)->name);
}

/* How many kinds of state this optimizer keeps (params always; m; v), or -1 if it cannot
 * say (not committed). tsr_zero_piece() refuses a state the optimizer does not keep. */
static int count_kinds(tsr_zero_t opt)
{
    tsr_zero_piece_t pc;
    if (tsr_zero_tensor_count(opt) < 1 || tsr_zero_piece(opt, 0, TSR_ZERO_PARAM, &pc) != TSR_OK)
        return -1;
    int kinds = 1 + (tsr_zero_piece(opt, 0, TSR_ZERO_M, &pc) == TSR_OK);
    if (kinds == 2)
        kinds += tsr_zero_piece(opt, 0, TSR_ZERO_V, &pc) == TSR_OK;
    tsr_clear_error();
    return kinds;
}

/* Sort the gathered records, merge duplicates (replicas of one tensor) and check that every
 * rank gave a tensor the same shape. The same on every rank: it sees the same records. */
static tsr_status_t merge_tensors(global_tensor_t *all, int n_all, tsr_zero_t opt, tensor_list_t *out)
{
    tsr_status_t rc = TSR_OK;
    int n = 0;
    qsort(all, (size_t)n_all, sizeof *all, by_name);
    for (int i = 0; i < n_all; i++) {
        if (!all[i].name[0])
            continue;
        if (n > 0 && strcmp(all[n - 1].name, all[i].name) == 0) {
            TSR_CHECK(all[n - 1].rows == all[i].rows && all[n - 1].cols == all[i].cols, TSR_ERR_MISMATCH,
                      "tensor %s is registered as %lld x %lld on one rank and %lld x %lld on another",
                      all[i].name, (long long)all[n - 1].rows, (long long)all[n - 1].cols,
                      (long long)all[i].rows, (long long)all[i].cols);
            continue;
        }
        TSR_CHECK(!strchr(all[i].name, '/'), TSR_ERR_INVALID_ARG,
                  "tensor %s: a name saved to a checkpoint cannot contain '/'", all[i].name);
        all[n] = all[i];
        all[n].id = -1;
        n++;
    }
    for (int id = 0; id < tsr_zero_tensor_count(opt); id++) {
        global_tensor_t key;
        tsr_zero_tensor_t desc;
        TSR_TRY(tsr_zero_tensor_desc(opt, id, &desc));
        snprintf(key.name, sizeof key.name, "%s", desc.name);
        global_tensor_t *g = bsearch(&key, all, (size_t)n, sizeof *all, by_name);
        if (g)
            g->id = id;
    }
    out->t = all;
    out->n = n;
cleanup:
    return rc;
}

/* The optimizer kind the caller names must be the one the handle runs: AdamW keeps v. */
static tsr_status_t check_kind(const tsr_zero_config_t *cfg, int kinds)
{
    if (kinds < 0)
        return TSR_ERROR(TSR_ERR_INVALID_ARG,
                         "the optimizer is not committed: call tsr_zero_commit before saving or loading it");
    if (!cfg || cfg->struct_size < sizeof(tsr_zero_config_t))
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "the optimizer's configuration is needed (TSR_ZERO_CONFIG_INIT)");
    if ((cfg->optim == TSR_OPTIM_ADAMW) != (kinds == 3))
        return TSR_ERROR(TSR_ERR_INVALID_ARG, "the configuration says %s, but the optimizer %s",
                         tsr_optim_kind_name(cfg->optim), kinds == 3 ? "keeps AdamW's m and v" : "keeps no v");
    return TSR_OK;
}

/* This rank's tensor names and shapes, in registration order. */
static tsr_status_t local_tensors(tsr_zero_t opt, global_tensor_t **out)
{
    tsr_status_t rc = TSR_OK;
    int n = tsr_zero_tensor_count(opt);
    global_tensor_t *mine = tsr__calloc((size_t)(n > 0 ? n : 1), sizeof *mine);
    TSR_CHECK(mine, TSR_ERR_OUT_OF_MEMORY, "no memory for %d tensor names", n);
    for (int id = 0; id < n; id++) {
        tsr_zero_tensor_t desc;
        TSR_TRY(tsr_zero_tensor_desc(opt, id, &desc));
        snprintf(mine[id].name, sizeof mine[id].name, "%s", desc.name);
        mine[id].rows = desc.rows;
        mine[id].cols = desc.cols;
    }
cleanup:
    if (rc != TSR_OK) {
        free(mine);
        mine = NULL;
    }
    *out = mine;
    return rc;
}

/*
 * Agree over comm on every tensor of the grid: one allreduce (largest local count, whether
 * the ranks keep the same states, whether any rank failed so far), one allgather of
 * fixed-size name records. A rank's own failure is folded into the allreduce, so that no
 * rank is left waiting in the allgather.
 */
static tsr_status_t agree_tensors(tsr_comm_t comm, tsr_zero_t opt, const tsr_zero_config_t *cfg,
                                  tensor_list_t *out)
{
    tsr_status_t rc = TSR_OK, local;
    global_tensor_t *mine = NULL, *all = NULL;
    int size = tsr_comm_size(comm), n_local = tsr_zero_tensor_count(opt), kinds = count_kinds(opt);
    memset(out, 0, sizeof *out);
    local = check_kind(cfg, kinds);
    if (local == TSR_OK)
        local = local_tensors(opt, &mine);
    char why[512];
    snprintf(why, sizeof why, "%s", local != TSR_OK ? tsr_last_error() : "");
    /* MAX of (count, kinds, -kinds, failed): the largest count, and kinds agree iff max == -min. */
    int64_t v[4] = {n_local, kinds, -(int64_t)kinds, local != TSR_OK};
    TSR_TRY(tsr_comm_allreduce(comm, TSR_IN_PLACE, v, 4, TSR_DTYPE_I64, TSR_REDUCE_MAX));
    TSR_CHECK(local == TSR_OK, local, "%s", why);
    TSR_CHECK(!v[3], TSR_ERR_INVALID_ARG, "another rank cannot save or load its optimizer (see its error)");
    TSR_CHECK(v[1] == -v[2], TSR_ERR_MISMATCH,
              "the ranks' optimizers keep different states (this rank: %s), so they do not share one configuration",
              kinds == 3 ? "params, m, v" : kinds == 2 ? "params, m" : "params only");
    int64_t max_n = v[0];
    all = tsr__calloc((size_t)(max_n * size), sizeof *all);
    TSR_CHECK(all, TSR_ERR_OUT_OF_MEMORY, "no memory for %lld tensor names", (long long)(max_n * size));
    memcpy(all + max_n * tsr_comm_rank(comm), mine, (size_t)n_local * sizeof *all);
    TSR_TRY(tsr_comm_allgather(comm, TSR_IN_PLACE, all, (size_t)max_n * sizeof *all, TSR_DTYPE_U8));
    TSR_TRY(merge_tensors(all, (int)(max_n * size), opt, out));
    out->kinds = kinds;
    all = NULL;
cleanup:
    free(all);
    free(mine);
    return rc;
}

/* ---- saving ---- */

/* This rank's share of one dataset: the ownership range of its block, or nothing. */
static tsr_status_t write_piece(tsr_zero_t opt, const global_tensor_t *g, tsr_zero_kind_t kind,
                                tsr_ckpt_piece_t *piece, const float **data)
{
    tsr_status_t rc = TSR_OK;
    tsr_zero_tensor_t d;
    tsr_zero_piece_t pc;
    *piece = tsr_ckpt_nothing();
    *data = NULL;
    if (g->id < 0)
        return TSR_OK;
    TSR_TRY(tsr_zero_tensor_desc(opt, g->id, &d));
    TSR_TRY(tsr_zero_piece(opt, g->id, kind, &pc));
    if (pc.write_end > pc.write_begin) {
        *piece = tsr_ckpt_block(d.row_off, d.local_rows, d.col_off, d.local_cols);
        piece->offset = (int64_t)pc.write_begin;
        piece->count = (int64_t)(pc.write_end - pc.write_begin);
        *data = pc.data + (pc.write_begin - pc.begin);
    }
cleanup:
    return rc;
}

/* The hyperparameters of the update, which a resume may change (information, see
 * tsr_ckpt_get_zero_config()): floats as the doubles they convert to exactly. */
static tsr_status_t save_hyperparameters(tsr_ckpt_writer_t w, const tsr_zero_config_t *cfg)
{
    tsr_status_t rc = TSR_OK;
    const struct { const char *name; float value; } f[] = {
        {"lr", cfg->lr}, {"min_lr", cfg->min_lr}, {"weight_decay", cfg->weight_decay}, {"beta1", cfg->beta1},
        {"beta2", cfg->beta2}, {"eps", cfg->eps}, {"momentum", cfg->momentum}, {"clip_norm", cfg->clip_norm}};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++)
        TSR_TRY(tsr_ckpt_set_f64(w, "/optim", f[i].name, (double)f[i].value));
    TSR_TRY(tsr_ckpt_set_str(w, "/optim", "lr_schedule", tsr_lr_schedule_name(cfg->schedule)));
    TSR_TRY(tsr_ckpt_set_i64(w, "/optim", "warmup_steps", cfg->warmup_steps));
    TSR_TRY(tsr_ckpt_set_i64(w, "/optim", "total_steps", cfg->total_steps));
cleanup:
    return rc;
}

tsr_status_t tsr_ckpt_get_zero_config(tsr_ckpt_reader_t r, tsr_zero_config_t *cfg)
{
    tsr_status_t rc = TSR_OK;
    tsr_zero_config_t c = TSR_ZERO_CONFIG_INIT;
    char text[32];
    int64_t stage = 0, warmup = 0, total = 0;
    struct { const char *name; float *value; } f[] = {
        {"lr", &c.lr}, {"min_lr", &c.min_lr}, {"weight_decay", &c.weight_decay}, {"beta1", &c.beta1},
        {"beta2", &c.beta2}, {"eps", &c.eps}, {"momentum", &c.momentum}, {"clip_norm", &c.clip_norm}};
    for (size_t i = 0; i < sizeof f / sizeof f[0]; i++) {
        double v = 0;
        TSR_TRY(tsr_ckpt_get_f64(r, "/optim", f[i].name, &v));
        *f[i].value = (float)v;
    }
    TSR_TRY(tsr_ckpt_get_str(r, "/config", "optimizer", text, sizeof text));
    TSR_TRY(tsr_optim_kind_parse(text, &c.optim));
    TSR_TRY(tsr_ckpt_get_str(r, "/optim", "lr_schedule", text, sizeof text));
    TSR_TRY(tsr_lr_schedule_parse(text, &c.schedule));
    TSR_TRY(tsr_ckpt_get_i64(r, "/optim", "warmup_steps", &warmup));
    TSR_TRY(tsr_ckpt_get_i64(r, "/optim", "total_steps", &total));
    TSR_TRY(tsr_ckpt_get_i64(r, "/layout", "zero_stage", &stage));
    TSR_CHECK(warmup >= 0 && warmup <= LONG_MAX && total >= 0 && total <= LONG_MAX && stage >= 0 && stage <= 3,
              TSR_ERR_FORMAT, "%s: /optim warmup_steps %lld, total_steps %lld or /layout zero_stage %lld out of range",
              tsr__ckpt_reader_path(r), (long long)warmup, (long long)total, (long long)stage);
    c.warmup_steps = (long)warmup, c.total_steps = (long)total, c.stage = (int)stage;
    *cfg = c;
cleanup:
    return rc;
}

static tsr_status_t save_attributes(tsr_ckpt_writer_t w, tsr_grid_t grid, tsr_zero_t opt,
                                    const tsr_zero_config_t *cfg)
{
    tsr_status_t rc = TSR_OK;
    tsr_layout_t layout;
    tsr_zero_state_t state;
    char text[TSR_LAYOUT_STRLEN];
    tsr_grid_layout(grid, &layout);
    tsr_zero_get_state(opt, &state);
    TSR_TRY(tsr_ckpt_set_str(w, "/config", "optimizer", tsr_optim_kind_name(cfg->optim)));
    TSR_TRY(tsr_ckpt_set_str(w, "/layout", "layout", tsr_layout_format(&layout, text, sizeof text)));
    TSR_TRY(tsr_ckpt_set_i64(w, "/layout", "zero_stage", cfg->stage));
    TSR_TRY(tsr_ckpt_set_str(w, "/layout", "optimizer", tsr_optim_kind_name(cfg->optim)));
    TSR_TRY(tsr_ckpt_set_i64(w, "/optim", "step", state.step));
    TSR_TRY(tsr_ckpt_set_f64(w, "/optim", "loss_scale", (double)state.loss_scale));
    TSR_TRY(tsr_ckpt_set_i64(w, "/optim", "good_steps", state.good_steps));
    TSR_TRY(save_hyperparameters(w, cfg));
cleanup:
    return rc;
}

tsr_status_t tsr_ckpt_save_zero(tsr_ckpt_writer_t w, tsr_grid_t grid, tsr_zero_t opt, const tsr_zero_config_t *cfg)
{
    tsr_status_t rc = TSR_OK;
    tensor_list_t list = {0};
    float *host = NULL;
    int on_gpu = tsr_device_kind(tsr_zero_device(opt)) != TSR_DEVICE_CPU;
    TSR_TRY(agree_tensors(tsr_grid_comm(grid, TSR_AXIS_WORLD), opt, cfg, &list));
    TSR_TRY(save_attributes(w, grid, opt, cfg));
    for (int kind = TSR_ZERO_PARAM; kind < list.kinds; kind++) {
        for (int i = 0; i < list.n; i++) {
            char name[DATASET_MAX];
            int64_t dims[2];
            int ndim = tensor_dims(&list.t[i], dims);
            tsr_ckpt_piece_t piece;
            const float *data;
            dataset_name(list.t[i].name, (tsr_zero_kind_t)kind, name);
            /* A rank that cannot give its piece still takes part with none: the writer's
             * coverage check then fails on every rank together. */
            if (write_piece(opt, &list.t[i], (tsr_zero_kind_t)kind, &piece, &data) != TSR_OK)
                piece = tsr_ckpt_nothing();
            if (on_gpu && piece.count > 0) { /* HDF5 writes from host memory */
                float *grown = realloc(host, (size_t)piece.count * sizeof *host);
                TSR_CHECK(grown, TSR_ERR_OUT_OF_MEMORY, "no memory to stage %lld values of %s",
                          (long long)piece.count, name);
                host = grown;
                TSR_TRY(tsr_device_copy(tsr_zero_device(opt), host, data, (size_t)piece.count * sizeof *host,
                                        TSR_COPY_DEVICE_TO_HOST));
                data = host;
            }
            TSR_TRY(tsr_ckpt_write_f32(w, name, ndim, dims, &piece, data));
        }
    }
cleanup:
    free(host);
    free(list.t);
    return rc;
}

/* ---- loading ---- */

static int by_dataset_name(const void *a, const void *b)
{
    return strcmp(((const tsr_ckpt_dataset_info_t *)a)->name, ((const tsr_ckpt_dataset_info_t *)b)->name);
}

/* Find a dataset in the file's list, sorted with by_dataset_name (HDF5's traversal order is
 * not that of whole paths: "/optim/a/m" comes before "/optim/a.b/m" there). */
static const tsr_ckpt_dataset_info_t *find_dataset(const tsr_ckpt_dataset_info_t *info, size_t n, const char *name)
{
    tsr_ckpt_dataset_info_t key;
    snprintf(key.name, sizeof key.name, "%s", name);
    return n > 0 ? bsearch(&key, info, n, sizeof *info, by_dataset_name) : NULL; /* info may be NULL then */
}

/* Whether a /params or /optim dataset of the file belongs to a tensor and kind of the list. */
static int expected_dataset(const tensor_list_t *list, const char *name)
{
    global_tensor_t key;
    int kind = TSR_ZERO_PARAM;
    if (strncmp(name, "/params/", 8) == 0) {
        snprintf(key.name, sizeof key.name, "%s", name + 8);
    } else {
        size_t len = strlen(name);
        if (len < 10 || name[len - 2] != '/' || (name[len - 1] != 'm' && name[len - 1] != 'v'))
            return 0;
        kind = name[len - 1] == 'm' ? TSR_ZERO_M : TSR_ZERO_V;
        snprintf(key.name, sizeof key.name, "%.*s", (int)(len - 9), name + 7);
    }
    return kind < list->kinds && bsearch(&key, list->t, (size_t)list->n, sizeof *list->t, by_name);
}

/*
 * The checkpoint must hold exactly this model's state: every dataset the list needs, of its
 * shape, and no other tensor under /params or /optim. Every rank reads the same file and
 * holds the same list, so all reach the same verdict without communicating.
 */
static tsr_status_t check_datasets(const tensor_list_t *list, const tsr_ckpt_dataset_info_t *info, size_t n)
{
    tsr_status_t rc = TSR_OK;
    for (int kind = TSR_ZERO_PARAM; kind < list->kinds; kind++)
        for (int i = 0; i < list->n; i++) {
            char name[DATASET_MAX];
            int64_t dims[2];
            int ndim = tensor_dims(&list->t[i], dims);
            dataset_name(list->t[i].name, (tsr_zero_kind_t)kind, name);
            const tsr_ckpt_dataset_info_t *d = find_dataset(info, n, name);
            TSR_CHECK(d, TSR_ERR_MISMATCH, "the checkpoint has no dataset %s, which this model's tensor %s needs",
                      name, list->t[i].name);
            char got[48], want[48];
            TSR_CHECK(d->is_float, TSR_ERR_MISMATCH, "checkpoint dataset %s is %s %s, this model has float32 %s",
                      name, d->type, tsr_ckpt_format_shape(d->ndim, d->dims, got, sizeof got),
                      tsr_ckpt_format_shape(ndim, dims, want, sizeof want));
            TSR_CHECK(d->ndim == ndim && d->dims[0] == dims[0] && d->dims[1] == dims[1], TSR_ERR_MISMATCH,
                      "checkpoint dataset %s is %s, this model has %s", name,
                      tsr_ckpt_format_shape(d->ndim, d->dims, got, sizeof got), tsr_ckpt_format_shape(ndim, dims, want, sizeof want));
        }
    /* Parameters first: a tensor the model lacks is named by its parameter, not its moments. */
    static const char *const groups[] = {"/params/", "/optim/"};
    for (int gi = 0; gi < 2; gi++)
        for (size_t k = 0; k < n; k++) {
            int ours = strncmp(info[k].name, groups[gi], strlen(groups[gi])) == 0;
            TSR_CHECK(!ours || expected_dataset(list, info[k].name), TSR_ERR_MISMATCH,
                      "the checkpoint has dataset %s, which this model and optimizer do not have", info[k].name);
        }
cleanup:
    return rc;
}

/* The scalar state, which must agree with how this optimizer runs: an fp32 run that does
 * not scale its loss resumes with loss_scale 1, never with a scale that divides its gradients. */
static tsr_status_t load_scalars(tsr_ckpt_reader_t r, const tsr_zero_config_t *cfg, tsr_zero_state_t *state)
{
    tsr_status_t rc = TSR_OK;
    int64_t step = 0, good = 0;
    double scale = 0;
    const char *path = tsr__ckpt_reader_path(r);
    TSR_TRY(tsr_ckpt_get_i64(r, "/optim", "step", &step));
    TSR_TRY(tsr_ckpt_get_f64(r, "/optim", "loss_scale", &scale));
    TSR_TRY(tsr_ckpt_get_i64(r, "/optim", "good_steps", &good));
    TSR_CHECK(step >= 0 && step <= LONG_MAX && good >= 0 && good <= LONG_MAX && isfinite(scale) && scale > 0 &&
                  scale <= FLT_MAX, TSR_ERR_FORMAT,
              "%s: its optimizer state is invalid: step %lld, loss_scale %g, good_steps %lld (expected step and "
              "good_steps >= 0, a finite positive loss_scale)", path, (long long)step, scale, (long long)good);
    if (!cfg->dynamic_loss_scale)
        TSR_CHECK(scale == 1 && good == 0, TSR_ERR_MISMATCH,
                  "%s: /optim loss_scale is %g and good_steps %lld, but this run does not scale its loss (expected "
                  "1 and 0)", path, scale, (long long)good);
    else
        TSR_CHECK(good < cfg->loss_scale_window, TSR_ERR_MISMATCH,
                  "%s: /optim good_steps is %lld, not below this run's loss-scale window of %d", path, (long long)good,
                  cfg->loss_scale_window);
    state->step = (long)step;
    state->loss_scale = (float)scale;
    state->good_steps = (long)good;
cleanup:
    return rc;
}

/* A value a checkpoint may not hold in this rank's piece: its global index, or -1. */
static int64_t bad_element(int ndim, const int64_t dims[], const tsr_ckpt_piece_t *p, const float *v, int nonneg)
{
    int64_t k = tsr__ckpt_bad_value(v, p->count, nonneg);
    if (k < 0)
        return -1;
    int64_t cols = ndim == 2 ? dims[1] : dims[0], e = p->offset + k;
    return (p->row0 + e / p->cols) * cols + p->col0 + e % p->cols;
}

/* Everything this rank stores of one tensor, and the checksum of its ownership range. */
static tsr_status_t read_piece(tsr_ckpt_reader_t r, tsr_zero_t opt, const global_tensor_t *g,
                               tsr_zero_kind_t kind, uint64_t *checksum)
{
    tsr_status_t rc = TSR_OK;
    char name[DATASET_MAX];
    int64_t dims[2];
    int ndim = tensor_dims(g, dims);
    tsr_ckpt_piece_t piece = tsr_ckpt_nothing();
    tsr_zero_piece_t pc = {0};
    tsr_zero_tensor_t d;
    tsr_device_t dev = tsr_zero_device(opt);
    float *data = NULL, *host = NULL;
    dataset_name(g->name, kind, name);
    *checksum = 0;
    if (g->id >= 0) {
        TSR_TRY(tsr_zero_tensor_desc(opt, g->id, &d));
        TSR_TRY(tsr_zero_piece(opt, g->id, kind, &pc));
        if (pc.end > pc.begin) {
            piece = tsr_ckpt_block(d.row_off, d.local_rows, d.col_off, d.local_cols);
            piece.offset = (int64_t)pc.begin;
            piece.count = (int64_t)(pc.end - pc.begin);
        }
    }
    data = pc.data;
    if (tsr_device_kind(dev) != TSR_DEVICE_CPU && pc.end > pc.begin) { /* HDF5 reads into host memory */
        host = malloc((pc.end - pc.begin) * sizeof *host);
        TSR_CHECK(host, TSR_ERR_OUT_OF_MEMORY, "no memory to stage %zu values of %s", pc.end - pc.begin, name);
        data = host;
    }
    TSR_TRY(tsr_ckpt_read_f32(r, name, ndim, dims, &piece, data));
    int64_t bad = bad_element(ndim, dims, &piece, data, kind == TSR_ZERO_V);
    TSR_CHECK(bad < 0, TSR_ERR_CORRUPT, "%s: dataset %s holds %s at element %lld (expected %s)",
              tsr__ckpt_reader_path(r), name, kind == TSR_ZERO_V ? "a negative or non-finite value" : "a non-finite value",
              (long long)bad, kind == TSR_ZERO_V ? "finite second moments, none below 0" : "finite values");
    if (pc.write_end > pc.write_begin) {
        /* The ownership ranges tile the tensor once, so their checksums add up to the file's. */
        tsr_ckpt_piece_t own = piece;
        own.offset = (int64_t)pc.write_begin;
        own.count = (int64_t)(pc.write_end - pc.write_begin);
        *checksum = tsr__ckpt_piece_checksum(ndim, dims, &own, data + (pc.write_begin - pc.begin));
    }
    if (host)
        TSR_TRY(tsr_device_copy(dev, pc.data, host, (pc.end - pc.begin) * sizeof *host, TSR_COPY_HOST_TO_DEVICE));
cleanup:
    free(host);
    return rc;
}

/*
 * Read every dataset into the optimizer. A rank whose read fails goes on with empty pieces
 * so that no rank waits in a collective read alone; then one allreduce agrees on failures
 * and adds the checksums of the ownership ranges, compared with the stored ones.
 */
static tsr_status_t read_all(tsr_ckpt_reader_t r, tsr_comm_t comm, tsr_zero_t opt, const tensor_list_t *list,
                             const tsr_ckpt_dataset_info_t *info, size_t ninfo)
{
    tsr_status_t rc = TSR_OK, local = TSR_OK;
    int nd = list->n * list->kinds, size = tsr_comm_size(comm), rank = tsr_comm_rank(comm);
    char msg[512] = "";
    int64_t *sums = tsr__calloc((size_t)(2 * nd + 1), sizeof *sums);
    TSR_CHECK(sums, TSR_ERR_OUT_OF_MEMORY, "no memory for %d checksums", nd);
    for (int kind = TSR_ZERO_PARAM; kind < list->kinds; kind++)
        for (int i = 0; i < list->n; i++) {
            uint64_t sum = 0;
            if (local == TSR_OK) {
                local = read_piece(r, opt, &list->t[i], (tsr_zero_kind_t)kind, &sum);
                if (local != TSR_OK)
                    snprintf(msg, sizeof msg, "%s", tsr_last_error());
            } else {
                global_tensor_t none = list->t[i];
                none.id = -1;
                read_piece(r, opt, &none, (tsr_zero_kind_t)kind, &sum);
            }
            int k = kind * list->n + i;
            sums[2 * k] = (int64_t)(sum & 0xffffffffu);
            sums[2 * k + 1] = (int64_t)(sum >> 32);
        }
    /* Checksum halves summed as int64 cannot overflow below 2^31 ranks; the last value counts
     * the ranks that failed. Only a failure costs more collectives: who, and its message. */
    sums[2 * nd] = local != TSR_OK;
    TSR_TRY(tsr_comm_allreduce(comm, TSR_IN_PLACE, sums, (size_t)(2 * nd + 1), TSR_DTYPE_I64, TSR_REDUCE_SUM));
    if (sums[2 * nd] != 0) {
        int32_t who = local != TSR_OK ? rank : size, status = (int32_t)local;
        TSR_TRY(tsr_comm_allreduce(comm, TSR_IN_PLACE, &who, 1, TSR_DTYPE_I32, TSR_REDUCE_MIN));
        TSR_TRY(tsr_comm_bcast(comm, &status, 1, TSR_DTYPE_I32, who));
        TSR_TRY(tsr_comm_bcast(comm, msg, sizeof msg, TSR_DTYPE_U8, who));
        TSR_CHECK(0, (tsr_status_t)status, "rank %d failed loading the checkpoint: %s", who, msg);
    }
    for (int kind = TSR_ZERO_PARAM; kind < list->kinds; kind++)
        for (int i = 0; i < list->n; i++) {
            int k = kind * list->n + i;
            char name[DATASET_MAX];
            dataset_name(list->t[i].name, (tsr_zero_kind_t)kind, name);
            uint64_t got = (uint64_t)sums[2 * k] + ((uint64_t)sums[2 * k + 1] << 32);
            const tsr_ckpt_dataset_info_t *d = find_dataset(info, ninfo, name);
            TSR_CHECK(d && d->has_checksum && d->checksum == got, TSR_ERR_CORRUPT,
                      "checkpoint dataset %s fails its checksum (stored %016llx, read %016llx); the optimizer "
                      "now holds part of it", name, d ? (unsigned long long)d->checksum : 0ULL, (unsigned long long)got);
        }
cleanup:
    free(sums);
    return rc;
}

tsr_status_t tsr_ckpt_load_zero(tsr_ckpt_reader_t r, tsr_grid_t grid, tsr_zero_t opt, const tsr_zero_config_t *cfg)
{
    tsr_status_t rc = TSR_OK;
    tensor_list_t list = {0};
    tsr_ckpt_dataset_info_t *info = NULL;
    size_t ninfo = 0;
    tsr_zero_state_t state;
    tsr_comm_t comm = tsr_grid_comm(grid, TSR_AXIS_WORLD);
    TSR_TRY(agree_tensors(comm, opt, cfg, &list));
    TSR_TRY(tsr_ckpt_verify_metadata(r)); /* every attribute read below is covered */
    TSR_TRY(tsr_ckpt_expect_str(r, "/config", "optimizer", tsr_optim_kind_name(cfg->optim)));
    TSR_TRY(tsr_ckpt_list(r, &info, &ninfo));
    if (ninfo > 1)
        qsort(info, ninfo, sizeof *info, by_dataset_name);
    TSR_TRY(check_datasets(&list, info, ninfo));
    TSR_TRY(load_scalars(r, cfg, &state));
    TSR_TRY(read_all(r, comm, opt, &list, info, ninfo));
    TSR_TRY(tsr_zero_set_state(opt, &state));
    TSR_TRY(tsr_zero_sync_params(opt));
cleanup:
    free(info);
    free(list.t);
    return rc;
}

/* ---- checking the state a file holds (tsr-ckpt verify) ---- */

/* The tensor of /params/<t> or /optim/<t>/m|v into t (and 'p', 'm' or 'v'), or 0. */
static int dataset_tensor(const char *name, char t[TSR_ZERO_NAME_MAX], char *kind)
{
    size_t len = strlen(name);
    if (strncmp(name, "/params/", 8) == 0 && len - 8 < TSR_ZERO_NAME_MAX && !strchr(name + 8, '/')) {
        snprintf(t, TSR_ZERO_NAME_MAX, "%s", name + 8);
        *kind = 'p';
        return 1;
    }
    if (strncmp(name, "/optim/", 7) == 0 && len > 9 && name[len - 2] == '/' && (name[len - 1] == 'm' || name[len - 1] == 'v') &&
        len - 9 < TSR_ZERO_NAME_MAX && !memchr(name + 7, '/', len - 9)) {
        snprintf(t, TSR_ZERO_NAME_MAX, "%.*s", (int)(len - 9), name + 7);
        *kind = name[len - 1];
        return 1;
    }
    return 0;
}

/* Whether group/name exists, telling a missing attribute from one that cannot be read. */
static int has_i64(tsr_ckpt_reader_t r, const char *group, const char *name)
{
    int64_t v;
    int has = tsr_ckpt_get_i64(r, group, name, &v) == TSR_OK;
    tsr_clear_error();
    return has;
}

/* The moments of every parameter, by the optimizer's kind, of its shape; none astray. */
static tsr_status_t check_state_datasets(const char *path, const char *optim, const tsr_ckpt_dataset_info_t *info,
                                         size_t n)
{
    tsr_status_t rc = TSR_OK;
    int adamw = strcmp(optim, "adamw") == 0, with_m = -1;
    char t[TSR_ZERO_NAME_MAX], kind, name[DATASET_MAX], got[48], want[48];
    for (size_t i = 0; i < n; i++) {
        if (!dataset_tensor(info[i].name, t, &kind)) {
            TSR_CHECK(strncmp(info[i].name, "/params/", 8) && strncmp(info[i].name, "/optim/", 7), TSR_ERR_FORMAT,
                      "%s: dataset %s is neither /params/<tensor> nor /optim/<tensor>/m or v", path, info[i].name);
            continue;
        }
        TSR_CHECK(info[i].is_float, TSR_ERR_FORMAT, "%s: dataset %s is %s (expected float32)", path, info[i].name,
                  info[i].type);
        if (kind != 'p') {
            snprintf(name, sizeof name, "/params/%s", t);
            TSR_CHECK(find_dataset(info, n, name), TSR_ERR_FORMAT, "%s: dataset %s has no parameter %s", path,
                      info[i].name, name);
            TSR_CHECK(adamw || kind == 'm', TSR_ERR_FORMAT, "%s: dataset %s: the %s optimizer keeps no v", path,
                      info[i].name, optim);
            continue;
        }
        for (int k = 0; k < 2; k++) {
            snprintf(name, sizeof name, "/optim/%s/%c", t, "mv"[k]);
            const tsr_ckpt_dataset_info_t *d = find_dataset(info, n, name);
            if (!adamw && k == 0) { /* SGD: momentum for every tensor or for none */
                TSR_CHECK(with_m < 0 || with_m == (d != NULL), TSR_ERR_FORMAT,
                          "%s: %s %s, but other tensors' momentum is %s (expected all or none)", path, name,
                          d ? "exists" : "is missing", d ? "missing" : "there");
                with_m = d != NULL;
            }
            if (!adamw && !d)
                continue;
            TSR_CHECK(d, TSR_ERR_FORMAT, "%s has no dataset %s, which the %s state of %s needs", path, name, optim,
                      info[i].name);
            TSR_CHECK(d->ndim == info[i].ndim && d->dims[0] == info[i].dims[0] && d->dims[1] == info[i].dims[1],
                      TSR_ERR_FORMAT, "%s: dataset %s is %s, but its parameter %s is %s", path, name,
                      tsr_ckpt_format_shape(d->ndim, d->dims, got, sizeof got), info[i].name,
                      tsr_ckpt_format_shape(info[i].ndim, info[i].dims, want, sizeof want));
        }
    }
cleanup:
    return rc;
}

tsr_status_t tsr_ckpt_verify_state(tsr_ckpt_reader_t r)
{
    tsr_status_t rc = TSR_OK;
    tsr_ckpt_dataset_info_t *info = NULL;
    size_t n = 0;
    const char *path = tsr__ckpt_reader_path(r);
    char optim[16];
    TSR_TRY(tsr_ckpt_list(r, &info, &n));
    const tsr_ckpt_dataset_info_t *pos = find_dataset(info, n, "/data/tokens");
    if (pos) {
        int64_t data_tokens = -1, seen = -1;
        TSR_CHECK(strcmp(pos->type, "int64") == 0 && pos->ndim == 1 && pos->dims[0] == 1, TSR_ERR_FORMAT,
                  "%s: dataset /data/tokens is not one int64 (the loader's position)", path);
        TSR_TRY(tsr_ckpt_read_i64(r, "/data/tokens", 1, &data_tokens));
        TSR_TRY(tsr_ckpt_get_i64(r, "/", "tokens_seen", &seen));
        TSR_CHECK(data_tokens == seen && seen >= 0, TSR_ERR_FORMAT,
                  "%s: the loader's position /data/tokens is %lld, but the checkpoint's tokens_seen is %lld", path,
                  (long long)data_tokens, (long long)seen);
    }
    if (!has_i64(r, "/optim", "step"))
        goto cleanup; /* no optimizer state: datasets of another writer */
    tsr_zero_state_t state;
    tsr_zero_config_t any = TSR_ZERO_CONFIG_INIT;
    any.dynamic_loss_scale = 1, any.loss_scale_window = INT_MAX; /* the file alone cannot tell */
    TSR_TRY(load_scalars(r, &any, &state));
    TSR_TRY(tsr_ckpt_get_str(r, "/config", "optimizer", optim, sizeof optim));
    TSR_CHECK(strcmp(optim, "adamw") == 0 || strcmp(optim, "sgd") == 0, TSR_ERR_FORMAT,
              "%s: /config optimizer is \"%s\" (expected adamw or sgd)", path, optim);
    TSR_TRY(check_state_datasets(path, optim, info, n));
cleanup:
    free(info);
    return rc;
}
