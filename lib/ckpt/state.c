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

static const char *optim_name(tsr_optim_kind_t kind)
{
    return kind == TSR_OPTIM_SGD ? "sgd" : "adamw";
}

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
                         optim_name(cfg->optim), kinds == 3 ? "keeps AdamW's m and v" : "keeps no v");
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

static tsr_status_t save_attributes(tsr_ckpt_writer_t w, tsr_grid_t grid, tsr_zero_t opt,
                                    const tsr_zero_config_t *cfg)
{
    tsr_status_t rc = TSR_OK;
    tsr_layout_t layout;
    tsr_zero_state_t state;
    char text[TSR_LAYOUT_STRLEN];
    tsr_grid_layout(grid, &layout);
    tsr_zero_get_state(opt, &state);
    TSR_TRY(tsr_ckpt_set_str(w, "/config", "optimizer", optim_name(cfg->optim)));
    TSR_TRY(tsr_ckpt_set_str(w, "/layout", "layout", tsr_layout_format(&layout, text, sizeof text)));
    TSR_TRY(tsr_ckpt_set_i64(w, "/layout", "zero_stage", cfg->stage));
    TSR_TRY(tsr_ckpt_set_str(w, "/layout", "optimizer", optim_name(cfg->optim)));
    TSR_TRY(tsr_ckpt_set_i64(w, "/optim", "step", state.step));
    TSR_TRY(tsr_ckpt_set_f64(w, "/optim", "loss_scale", (double)state.loss_scale));
    TSR_TRY(tsr_ckpt_set_i64(w, "/optim", "good_steps", state.good_steps));
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
    return bsearch(&key, info, n, sizeof *info, by_dataset_name);
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
            TSR_CHECK(d->is_float && d->ndim == ndim && d->dims[0] == dims[0] && d->dims[1] == dims[1],
                      TSR_ERR_MISMATCH, "checkpoint dataset %s is %s%lld%s%lld, this model has %lld%s%lld",
                      name, d->is_float ? "" : "int64 ", (long long)d->dims[0], d->ndim == 2 ? " x " : "",
                      d->ndim == 2 ? (long long)d->dims[1] : 0LL, (long long)dims[0], ndim == 2 ? " x " : "",
                      ndim == 2 ? (long long)dims[1] : 0LL);
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

static tsr_status_t load_scalars(tsr_ckpt_reader_t r, tsr_zero_state_t *state)
{
    tsr_status_t rc = TSR_OK;
    int64_t step = 0, good = 0;
    double scale = 0;
    TSR_TRY(tsr_ckpt_get_i64(r, "/optim", "step", &step));
    TSR_TRY(tsr_ckpt_get_f64(r, "/optim", "loss_scale", &scale));
    TSR_TRY(tsr_ckpt_get_i64(r, "/optim", "good_steps", &good));
    state->step = (long)step;
    state->loss_scale = (float)scale;
    state->good_steps = (long)good;
    TSR_CHECK(step >= 0 && good >= 0 && scale > 0, TSR_ERR_FORMAT,
              "checkpoint optimizer state is invalid: step %lld, loss_scale %g, good_steps %lld", (long long)step,
              scale, (long long)good);
cleanup:
    return rc;
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
    TSR_TRY(tsr_ckpt_expect_str(r, "/config", "optimizer", optim_name(cfg->optim)));
    TSR_TRY(tsr_ckpt_list(r, &info, &ninfo));
    qsort(info, ninfo, sizeof *info, by_dataset_name);
    TSR_TRY(check_datasets(&list, info, ninfo));
    TSR_TRY(load_scalars(r, &state));
    TSR_TRY(read_all(r, comm, opt, &list, info, ninfo));
    TSR_TRY(tsr_zero_set_state(opt, &state));
    TSR_TRY(tsr_zero_sync_params(opt));
cleanup:
    free(info);
    free(list.t);
    return rc;
}
