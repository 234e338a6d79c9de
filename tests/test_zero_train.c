/*
 * test_zero_train: ZeRO stages 0-3 with AdamW and SGD train a small MLP for 5 steps, each dp
 * rank on its own micro-batch, and must end with the parameters of a plain serial optimizer
 * written here, run on the concatenated batch. Also: the per-rank bytes of the tracked
 * allocator against the ZeRO formulas, gradient accumulation over micro-batches, and stage 3
 * gather/release bounds.
 *
 * The model: 3 layers 5 -> 7 -> 6 -> 3 (tanh between), 111 parameters in layers of 42, 48
 * and 21 (not multiples of 2 or 4). Loss: 0.5 * squared error, mean over the global batch;
 * a rank differentiates the mean over its own rows, and the optimizer's dp average makes it
 * the global mean. Errors are normwise: max |p - ref| / max |ref| over all parameters.
 *
 * Fresh seed per run (printed); TSR_TEST_SEED=N repeats one.
 */
#include <time.h>
#include <tessera.h>

#include "tap.h"

#define L 3
#define ROWS 4 /* rows per dp rank per step */
#define STEPS 5
static const int dims[L + 1] = {5, 7, 6, 3};

static uint64_t seed;
static tsr_device_t dev;
static int N; /* dp size = world size */

/* Parameter k = 2l (weight, dims[l] x dims[l+1]) or 2l+1 (bias, 1 x dims[l+1]). */
static long prows(int k) { return k % 2 ? 1 : dims[k / 2]; }
static long pcols(int k) { return dims[k / 2 + 1]; }
static size_t psize(int k) { return (size_t)(prows(k) * pcols(k)); }
static float init_value(int k, size_t i) { return tsr_rng_uniform(seed, 1000 + (uint64_t)k, i) - 0.5f; }

/* Global batch of a step: N * ROWS rows of input and target. */
static void batch(int step, float *x, float *y)
{
    int rows = N * ROWS;
    for (int i = 0; i < rows * dims[0]; i++)
        x[i] = 2.0f * tsr_rng_uniform(seed, 100 + (uint64_t)step, (uint64_t)i) - 1.0f;
    for (int i = 0; i < rows * dims[L]; i++)
        y[i] = 2.0f * tsr_rng_uniform(seed, 200 + (uint64_t)step, (uint64_t)i) - 1.0f;
}

/* Where the model finds its weights: the optimizer's views, or plain arrays. */
typedef struct model {
    tsr_zero_t z;       /* NULL: serial arrays */
    int prefetch;       /* stage 3: prefetch the next layer in forward */
    float *p[2 * L], *g[2 * L];
    tsr_status_t st;    /* first failure */
} model_t;

static void note(model_t *m, tsr_status_t st, const char *what)
{
    if (st != TSR_OK && m->st == TSR_OK) {
        m->st = st;
        fprintf(stderr, "#   [rank %d] %s: %s\n", tap_rank(), what, tsr_last_error());
    }
}

static void fetch(model_t *m, int l)
{
    if (!m->z)
        return;
    for (int k = 2 * l; k < 2 * l + 2; k++)
        note(m, tsr_zero_view(m->z, k, &m->p[k], &m->g[k]), "view");
}

/* Rows n of x through the MLP, keeping every activation: h[0] = x, h[l+1] = layer l's output. */
static void forward(model_t *m, int n, const float *x, float **h)
{
    memcpy(h[0], x, (size_t)n * dims[0] * sizeof(float));
    for (int l = 0; l < L; l++) {
        if (m->z) {
            note(m, tsr_zero_gather(m->z, l), "gather");
            if (m->prefetch)
                note(m, tsr_zero_prefetch(m->z, l + 1), "prefetch");
        }
        fetch(m, l);
        const float *w = m->p[2 * l], *b = m->p[2 * l + 1];
        float *out = h[l + 1];
        for (int r = 0; r < n; r++)
            memcpy(out + (size_t)r * dims[l + 1], b, (size_t)dims[l + 1] * sizeof(float));
        tsr_device_gemm_f32(dev, TSR_NO_TRANS, TSR_NO_TRANS, n, dims[l + 1], dims[l], 1.0f, h[l], dims[l], w,
                            dims[l + 1], 1.0f, out, dims[l + 1]);
        if (l < L - 1)
            for (int i = 0; i < n * dims[l + 1]; i++)
                out[i] = tanhf(out[i]);
        if (m->z)
            note(m, tsr_zero_release(m->z, l), "release");
    }
}

/* Add the gradient of sum over rows of 0.5 |out - y|^2 / denom into the model's gradients. */
static void backward(model_t *m, int n, const float *y, float **h, float denom)
{
    int wmax = 8;
    float *dz = calloc((size_t)n * wmax, sizeof(float)), *dh = calloc((size_t)n * wmax, sizeof(float));
    for (int i = 0; i < n * dims[L]; i++)
        dz[i] = (h[L][i] - y[i]) / denom;
    for (int l = L - 1; l >= 0; l--) {
        if (m->z) {
            note(m, tsr_zero_gather(m->z, l), "gather");
            note(m, tsr_zero_grad_begin(m->z, l), "grad_begin");
        }
        fetch(m, l);
        int din = dims[l], dout = dims[l + 1];
        tsr_device_gemm_f32(dev, TSR_TRANS, TSR_NO_TRANS, din, dout, n, 1.0f, h[l], din, dz, dout, 1.0f,
                            m->g[2 * l], dout);
        for (int r = 0; r < n; r++)
            for (int c = 0; c < dout; c++)
                m->g[2 * l + 1][c] += dz[r * dout + c];
        if (l > 0) {
            tsr_device_gemm_f32(dev, TSR_NO_TRANS, TSR_TRANS, n, din, dout, 1.0f, dz, dout, m->p[2 * l], dout, 0.0f,
                                dh, din);
            for (int i = 0; i < n * din; i++)
                dz[i] = dh[i] * (1.0f - h[l][i] * h[l][i]);
        }
        if (m->z) {
            note(m, tsr_zero_grad_ready(m->z, l), "grad_ready");
            note(m, tsr_zero_release(m->z, l), "release");
        }
    }
    free(dz);
    free(dh);
}

/* Gradient of the mean loss over rows [first, first + n) of a global batch, added in. */
static void train_rows(model_t *m, const float *x, const float *y, int first, int n, float denom)
{
    float *h[L + 1];
    for (int l = 0; l <= L; l++)
        h[l] = malloc((size_t)n * dims[l] * sizeof(float));
    forward(m, n, x + (size_t)first * dims[0], h);
    backward(m, n, y + (size_t)first * dims[L], h, denom);
    for (int l = 0; l <= L; l++)
        free(h[l]);
}

/* ---- the serial reference: textbook AdamW and SGD on whole arrays ---- */

typedef struct serial {
    float *p[2 * L], *g[2 * L], *m[2 * L], *v[2 * L];
} serial_t;

static float serial_lr(const tsr_zero_config_t *c, int t)
{
    if (c->schedule == TSR_LR_CONSTANT)
        return c->lr;
    if (t <= c->warmup_steps)
        return c->lr * t / c->warmup_steps;
    double pr = (double)(t - c->warmup_steps) / (double)(c->total_steps - c->warmup_steps);
    return (float)(c->min_lr + 0.5 * (c->lr - c->min_lr) * (1.0 + cos(3.14159265358979323846 * pr)));
}

static void serial_step(serial_t *s, const tsr_zero_config_t *c, int t)
{
    double sq = 0;
    for (int k = 0; k < 2 * L; k++)
        for (size_t i = 0; i < psize(k); i++)
            sq += (double)s->g[k][i] * s->g[k][i];
    double norm = sqrt(sq), clip = c->clip_norm > 0 && norm > c->clip_norm ? c->clip_norm / (norm + 1e-6) : 1.0;
    float lr = serial_lr(c, t);
    for (int k = 0; k < 2 * L; k++) {
        float wd = k % 2 ? 0.0f : c->weight_decay; /* biases registered without decay */
        for (size_t i = 0; i < psize(k); i++) {
            float g = (float)(s->g[k][i] * clip), p = s->p[k][i];
            if (c->optim == TSR_OPTIM_ADAMW) {
                s->m[k][i] = c->beta1 * s->m[k][i] + (1 - c->beta1) * g;
                s->v[k][i] = c->beta2 * s->v[k][i] + (1 - c->beta2) * g * g;
                float mhat = s->m[k][i] / (1 - powf(c->beta1, (float)t));
                float vhat = s->v[k][i] / (1 - powf(c->beta2, (float)t));
                s->p[k][i] = p - lr * wd * p - lr * mhat / (sqrtf(vhat) + c->eps);
            } else {
                s->m[k][i] = c->momentum * s->m[k][i] + g;
                s->p[k][i] = p - lr * wd * p - lr * s->m[k][i];
            }
            s->g[k][i] = 0;
        }
    }
}

static void serial_train(serial_t *s, const tsr_zero_config_t *c)
{
    int rows = N * ROWS;
    float *x = malloc((size_t)rows * dims[0] * sizeof(float)), *y = malloc((size_t)rows * dims[L] * sizeof(float));
    model_t m = {0};
    for (int k = 0; k < 2 * L; k++) {
        s->p[k] = malloc(psize(k) * sizeof(float));
        s->g[k] = calloc(psize(k), sizeof(float));
        s->m[k] = calloc(psize(k), sizeof(float));
        s->v[k] = calloc(psize(k), sizeof(float));
        for (size_t i = 0; i < psize(k); i++)
            s->p[k][i] = init_value(k, i);
        m.p[k] = s->p[k];
        m.g[k] = s->g[k];
    }
    for (int t = 1; t <= STEPS; t++) {
        batch(t, x, y);
        train_rows(&m, x, y, 0, rows, (float)rows);
        serial_step(s, c, t);
    }
    free(x);
    free(y);
}

static void serial_free(serial_t *s)
{
    for (int k = 0; k < 2 * L; k++) {
        free(s->p[k]);
        free(s->g[k]);
        free(s->m[k]);
        free(s->v[k]);
    }
}

/* ---- the distributed run ---- */

static tsr_status_t setup(tsr_grid_t grid, const tsr_zero_config_t *c, tsr_zero_t *out)
{
    tsr_status_t st = tsr_zero_create(grid, dev, c, out);
    char name[32];
    for (int k = 0; k < 2 * L && st == TSR_OK; k++) {
        tsr_zero_tensor_t t = TSR_ZERO_TENSOR_INIT;
        snprintf(name, sizeof name, "l%d.%s", k / 2, k % 2 ? "b" : "w");
        t.name = name;
        t.rows = t.local_rows = prows(k);
        t.cols = t.local_cols = pcols(k);
        t.layer = k / 2;
        t.flags = k % 2 ? TSR_ZERO_NO_DECAY : 0;
        st = tsr_zero_register(*out, &t, NULL);
    }
    if (st == TSR_OK)
        st = tsr_zero_commit(*out);
    for (int k = 0; k < 2 * L && st == TSR_OK; k++) {
        tsr_zero_piece_t pc;
        st = tsr_zero_piece(*out, k, TSR_ZERO_PARAM, &pc);
        for (size_t i = pc.begin; st == TSR_OK && i < pc.end; i++)
            pc.data[i - pc.begin] = init_value(k, i);
    }
    if (st == TSR_OK)
        st = tsr_zero_sync_params(*out);
    return st;
}

/* Normwise error of the master pieces this rank holds against the reference. */
static double piece_error(tsr_zero_t z, const serial_t *s, size_t *held)
{
    double err = 0, scale = 0;
    *held = 0;
    for (int k = 0; k < 2 * L; k++) {
        tsr_zero_piece_t pc;
        if (tsr_zero_piece(z, k, TSR_ZERO_PARAM, &pc) != TSR_OK)
            return INFINITY;
        *held += pc.end - pc.begin;
        for (size_t i = 0; i < psize(k); i++)
            scale = fmax(scale, fabs(s->p[k][i]));
        for (size_t i = pc.begin; i < pc.end; i++) {
            double e = fabs((double)pc.data[i - pc.begin] - s->p[k][i]);
            if (!(e <= err))
                err = e;
        }
    }
    return err / scale;
}

/* Normwise error of the working copies (gathered in stage 3) against the reference. */
static double working_error(tsr_zero_t z, const serial_t *s)
{
    double err = 0, scale = 0;
    for (int l = 0; l < L; l++) {
        if (tsr_zero_gather(z, l) != TSR_OK)
            return INFINITY;
        for (int k = 2 * l; k < 2 * l + 2; k++) {
            float *p = NULL;
            tsr_zero_view(z, k, &p, NULL);
            if (!p)
                return INFINITY;
            for (size_t i = 0; i < psize(k); i++) {
                scale = fmax(scale, fabs(s->p[k][i]));
                double e = fabs((double)p[i] - s->p[k][i]);
                if (!(e <= err))
                    err = e;
            }
        }
        tsr_zero_release(z, l);
    }
    return err / scale;
}

/* Bytes of one category allocated now. */
static uint64_t mem_now(tsr_mem_category_t c)
{
    tsr_mem_stats_t ms;
    tsr_mem_stats(TSR_DEVICE_CPU, &ms);
    return ms.current[c];
}

static uint64_t mem_peak(tsr_mem_category_t c)
{
    tsr_mem_stats_t ms;
    tsr_mem_stats(TSR_DEVICE_CPU, &ms);
    return ms.peak[c];
}

/* Checks of the tracked bytes after a step against the ZeRO formulas, within one bucket of
 * padding (a bucket pads its shard by less than one element). */
static void check_memory(tsr_zero_t z, const tsr_zero_config_t *c, const char *what)
{
    size_t psi = tsr_zero_local_elements(z), padded, shard;
    tsr_zero_flat_elements(z, &padded, &shard);
    double per = (double)psi / N, pad = L; /* at most one element per bucket */
    double optim = (double)mem_now(TSR_MEM_OPTIM) / (c->optim == TSR_OPTIM_ADAMW ? 8.0 : 4.0);
    double grads = (double)mem_now(TSR_MEM_GRADS) / 4.0, params = (double)mem_now(TSR_MEM_PARAMS) / 4.0;
    if (c->stage >= 1)
        ok(optim >= per && optim <= per + pad, "%s: optimizer state %.0f elements per rank = Psi/N %.2f (+%g)", what,
           optim, per, pad);
    else
        ok(optim >= psi && optim <= psi + N * pad, "%s: optimizer state %.0f elements = Psi %zu", what, optim, psi);
    if (c->stage >= 2)
        ok(grads >= per && grads <= per + pad, "%s: gradients %.0f elements per rank = Psi/N %.2f", what, grads, per);
    else
        ok(grads >= psi && grads <= psi + N * pad, "%s: gradients %.0f elements = Psi %zu", what, grads, psi);
    if (c->stage == 3)
        ok(params >= per && params <= per + pad, "%s: parameters %.0f elements per rank = Psi/N %.2f", what, params,
           per);
    else
        ok(params >= psi && params <= psi + N * pad, "%s: parameters %.0f elements = Psi %zu", what, params, psi);
}

/* Largest padded layer, in bytes. */
static uint64_t largest_layer_bytes(void)
{
    uint64_t best = 0;
    for (int l = 0; l < L; l++) {
        uint64_t n = psize(2 * l) + psize(2 * l + 1), s = (n + (uint64_t)N - 1) / (uint64_t)N;
        if (s * N * 4 > best)
            best = s * N * 4;
    }
    return best;
}

/* Steps first..last of distributed training, each rank on its rows split into micro-batches. */
static tsr_zero_step_info_t train_steps(model_t *m, int first, int last, int micro)
{
    int rows = N * ROWS, me = tap_rank(), mb = ROWS / micro;
    float *x = malloc((size_t)rows * dims[0] * sizeof(float)), *y = malloc((size_t)rows * dims[L] * sizeof(float));
    tsr_zero_step_info_t info = {0};
    for (int t = first; t <= last && m->st == TSR_OK; t++) {
        batch(t, x, y);
        for (int u = 0; u < micro; u++)
            train_rows(m, x, y, me * ROWS + u * mb, mb, (float)ROWS);
        note(m, tsr_zero_step(m->z, &info), "step");
    }
    free(x);
    free(y);
    return info;
}

/* Bytes a rank sends over dp per step, with S = the sum of the shard lengths: stage 0
 * all-reduces (2 (N-1) 4S), stage 1 reduce-scatters and all-gathers once (the same volume),
 * stage 2 reduce-scatters every micro-batch, stage 3 also gathers every layer twice per
 * micro-batch (forward and backward) and all-gathers nothing after the step. */
static uint64_t dp_bytes_per_step(int stage, int micro)
{
    uint64_t S = 0;
    for (int l = 0; l < L; l++)
        S += (psize(2 * l) + psize(2 * l + 1) + (uint64_t)N - 1) / (uint64_t)N;
    uint64_t unit = 4 * (uint64_t)(N - 1) * S; /* one reduce-scatter or all-gather of everything */
    switch (stage) {
    case 0:
    case 1: return 2 * unit;
    case 2: return (uint64_t)micro * unit + unit;
    default: return 3 * (uint64_t)micro * unit;
    }
}

static void run_case(tsr_grid_t grid, const tsr_zero_config_t *c, int micro, int prefetch, int check_mem)
{
    char what[96];
    snprintf(what, sizeof what, "dp=%d stage %d %s%s", N, c->stage, c->optim == TSR_OPTIM_ADAMW ? "AdamW" : "SGD",
             micro > 1 ? " 2 micro-batches" : "");
    serial_t s;
    serial_train(&s, c);

    tsr_zero_config_t cfg = *c;
    cfg.micro_batches = micro;
    tsr_zero_t z = NULL;
    model_t m = {0};
    m.st = setup(grid, &cfg, &z);
    note(&m, m.st, "setup");
    m.z = z;
    m.prefetch = prefetch;
    uint64_t params0 = mem_now(TSR_MEM_PARAMS), grads0 = mem_now(TSR_MEM_GRADS);
    tsr_mem_reset_peaks(TSR_DEVICE_CPU);
    tsr_comm_t dp = tsr_grid_comm(grid, TSR_AXIS_DP);
    tsr_comm_counters_t traffic;
    tsr_comm_reset_counters(dp);
    tsr_zero_step_info_t info = train_steps(&m, 1, STEPS, micro);
    tsr_comm_counters(dp, &traffic);
    ok(traffic.bytes_sent == dp_bytes_per_step(cfg.stage, micro) * STEPS,
       "%s: dp traffic %llu bytes = %d steps x %llu (ZeRO volume)", what, (unsigned long long)traffic.bytes_sent, STEPS,
       (unsigned long long)dp_bytes_per_step(cfg.stage, micro));
    ok(m.st == TSR_OK && info.step == STEPS, "%s: %d steps run", what, STEPS);
    size_t held = 0;
    double perr = m.st == TSR_OK ? piece_error(z, &s, &held) : INFINITY;
    ok(perr <= 1e-6, "%s: master parameters equal the serial run (rel err %.2g)", what, perr);
    double werr = m.st == TSR_OK ? working_error(z, &s) : INFINITY;
    ok(werr <= 1e-6, "%s: working parameters equal the serial run (rel err %.2g)", what, werr);
    if (check_mem) {
        check_memory(z, &cfg, what);
        if (cfg.stage >= 2)
            ok(mem_peak(TSR_MEM_GRADS) <= grads0 + 2 * largest_layer_bytes(),
               "%s: gradient peak %llu <= shard %llu + two layers in flight", what,
               (unsigned long long)mem_peak(TSR_MEM_GRADS), (unsigned long long)grads0);
        if (cfg.stage == 3)
            ok(mem_peak(TSR_MEM_PARAMS) <= params0 + (prefetch ? 2 : 1) * largest_layer_bytes(),
               "%s: parameter peak %llu <= shard %llu + %d gathered layer(s)", what,
               (unsigned long long)mem_peak(TSR_MEM_PARAMS), (unsigned long long)params0, prefetch ? 2 : 1);
    }
    tsr_zero_destroy(&z);
    serial_free(&s);
}

/* Whole tensors of one kind of state, assembled from every rank's write range. */
static void export_state(tsr_zero_t z, tsr_zero_kind_t kind, float **out)
{
    for (int k = 0; k < 2 * L; k++) {
        out[k] = calloc(psize(k), sizeof(float));
        tsr_zero_piece_t pc;
        if (tsr_zero_piece(z, k, kind, &pc) == TSR_OK)
            for (size_t i = pc.write_begin; i < pc.write_end; i++)
                out[k][i] = pc.data[i - pc.begin];
        MPI_Allreduce(MPI_IN_PLACE, out[k], (int)psize(k), MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
    }
}

/* Write the pieces this rank stores from whole tensors, as a checkpoint reader would. */
static tsr_status_t import_state(tsr_zero_t z, tsr_zero_kind_t kind, float **in)
{
    tsr_status_t st = TSR_OK;
    for (int k = 0; k < 2 * L && st == TSR_OK; k++) {
        tsr_zero_piece_t pc;
        if ((st = tsr_zero_piece(z, k, kind, &pc)) == TSR_OK && pc.end > pc.begin)
            memcpy(pc.data, in[k] + pc.begin, (pc.end - pc.begin) * sizeof(float));
    }
    return st;
}

/* A checkpoint round trip through the piece accessors: 2 steps at stage "from", the state
 * exported as whole tensors, imported into a fresh optimizer at stage "to", 3 more steps:
 * the result must equal 5 uninterrupted serial steps. */
static void reshard_case(tsr_grid_t grid, const tsr_zero_config_t *c, int from, int to)
{
    serial_t s;
    serial_train(&s, c);
    tsr_zero_config_t cfg = *c;
    float *state[3][2 * L];
    tsr_zero_state_t scalars;
    model_t m = {0};
    cfg.stage = from;
    m.st = setup(grid, &cfg, &m.z);
    note(&m, m.st, "setup");
    train_steps(&m, 1, 2, 1);
    for (int kind = 0; kind < 3; kind++)
        export_state(m.z, (tsr_zero_kind_t)kind, state[kind]);
    tsr_zero_get_state(m.z, &scalars);
    tsr_zero_destroy(&m.z);

    cfg.stage = to;
    note(&m, setup(grid, &cfg, &m.z), "setup");
    for (int kind = 0; kind < 3 && m.st == TSR_OK; kind++)
        note(&m, import_state(m.z, (tsr_zero_kind_t)kind, state[kind]), "import");
    if (m.st == TSR_OK)
        note(&m, tsr_zero_sync_params(m.z), "sync");
    if (m.st == TSR_OK)
        note(&m, tsr_zero_set_state(m.z, &scalars), "set state");
    tsr_zero_step_info_t info = train_steps(&m, 3, STEPS, 1);
    size_t held = 0;
    double err = m.st == TSR_OK && info.step == STEPS ? piece_error(m.z, &s, &held) : INFINITY;
    ok(err <= 1e-6, "dp=%d checkpoint round trip stage %d -> stage %d: 2 + 3 steps equal 5 serial steps (rel err %.2g)",
       N, from, to, err);
    for (int kind = 0; kind < 3; kind++)
        for (int k = 0; k < 2 * L; k++)
            free(state[kind][k]);
    tsr_zero_destroy(&m.z);
    serial_free(&s);
}

int main(int argc, char **argv)
{
    tap_init(&argc, &argv, "1 2 4");
    seed = tap_seed();
    N = tap_size();
    tsr_layout_t layout = TSR_LAYOUT_INIT;
    layout.dp = N;
    tsr_grid_t grid = NULL;
    if (tsr_device_create(TSR_DEVICE_CPU, 0, &dev) != TSR_OK || tsr_grid_create(MPI_COMM_WORLD, &layout, &grid) != TSR_OK) {
        fprintf(stderr, "# setup failed: %s\n", tsr_last_error());
        MPI_Abort(MPI_COMM_WORLD, 2);
    }

    tsr_zero_config_t adamw = TSR_ZERO_CONFIG_INIT;
    adamw.lr = 0.01f;
    adamw.weight_decay = 0.1f;
    adamw.schedule = TSR_LR_WARMUP_COSINE;
    adamw.warmup_steps = 2;
    adamw.total_steps = 6;
    adamw.min_lr = 0.001f;
    adamw.eps = 1e-3f; /* large enough that the update depends on the gradient's scale */
    tsr_zero_config_t sgd = TSR_ZERO_CONFIG_INIT;
    sgd.optim = TSR_OPTIM_SGD;
    sgd.lr = 0.1f;
    sgd.momentum = 0.9f;
    sgd.weight_decay = 0.01f;
    for (int stage = 0; stage <= 3; stage++) {
        adamw.stage = sgd.stage = stage;
        run_case(grid, &adamw, 1, 1, 1);
        run_case(grid, &sgd, 1, 1, 0);
    }
    /* Accumulation over micro-batches: stage 0 reduces once, stage 3 reduce-scatters each;
     * clipped at a norm below the first steps' (the clip test checks the norm exactly). */
    sgd.clip_norm = adamw.clip_norm = 0.2f;
    sgd.stage = 0;
    run_case(grid, &sgd, 2, 0, 0);
    adamw.stage = 3;
    run_case(grid, &adamw, 2, 0, 1);
    adamw.clip_norm = 0;
    reshard_case(grid, &adamw, 2, 3);
    reshard_case(grid, &adamw, 3, 0);

    tsr_grid_destroy(&grid);
    tsr_device_destroy(&dev);
    return tap_done();
}
