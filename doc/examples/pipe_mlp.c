/*
 * pipe_mlp.c: train a small MLP with pipeline parallelism, one pipeline stage per rank.
 *
 *   mpiexec -n 4 pipe_mlp [SCHEDULE [TRACE.json]]   (gpipe, 1f1b (default), interleaved, zb-h1)
 *
 * The model is 8 layers y = tanh(x Wᵀ + b) of width 16, started near the identity,
 * learning to halve a fixed set of random inputs. The partitioner gives each virtual stage its layers; the stage callbacks
 * below are all a model needs to supply. Stage 0 generates its micro-batch itself and the
 * last stage computes the loss itself: the executor only moves activations and gradients.
 * Each step zeroes the gradients, runs the schedule (gradients accumulate over the
 * micro-batches inside the callbacks), and takes an SGD step; the last stage prints the loss.
 *
 * Build against an installed Tessera:
 *   mpicc pipe_mlp.c $(pkg-config --cflags --libs tessera) -lm -o pipe_mlp
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <tessera.h>

enum { LAYERS = 8, WIDTH = 16, ROWS = 4, MICRO = 8, STEPS = 40, CHUNKS_MAX = 2 };
static const float LR = 0.5f;
#define N (ROWS * WIDTH)

typedef struct model {
    int p, stage, split, bounds[LAYERS + 1], step;
    tsr_device_t dev;
    float W[LAYERS][WIDTH * WIDTH], b[LAYERS][WIDTH], dW[LAYERS][WIDTH * WIDTH], db[LAYERS][WIDTH];
    float x[MICRO][LAYERS][N], y[MICRO][LAYERS][N], dz[MICRO][LAYERS][N]; /* kept for backward */
    double loss;
} model_t;

/* Layers of one chunk of this stage: virtual stage chunk * p + stage (Megatron's order). */
static int lo(const model_t *m, int c) { return m->bounds[c * m->p + m->stage]; }
static int hi(const model_t *m, int c) { return m->bounds[c * m->p + m->stage + 1]; }
static int first(const model_t *m, int c) { return lo(m, c) == 0; }
static int last(const model_t *m, int c) { return hi(m, c) == LAYERS; }
/* The fixed training set: inputs (what 1) uniform in [-1, 1), targets (what 2) half the inputs. */
static float data(int what, int mb, int i) { return (2 * tsr_rng_uniform(1, (uint64_t)mb, (uint64_t)i) - 1) / what; }

static size_t bytes(void *ctx, int chunk, tsr_pipe_side_t side)
{
    (void)ctx, (void)chunk, (void)side;
    return N * sizeof(float); /* every layer boundary carries ROWS x WIDTH floats */
}

static tsr_status_t forward(void *ctx, int c, int mb, const void *in, void *out)
{
    model_t *m = ctx;
    float input[N];
    const float *x = in;
    if (first(m, c)) { /* stage 0 reads its micro-batch itself */
        for (int i = 0; i < N; i++)
            input[i] = data(1, mb, i);
        x = input;
    }
    for (int l = lo(m, c); l < hi(m, c); l++) {
        memcpy(m->x[mb][l], x, sizeof m->x[mb][l]);
        for (int r = 0; r < ROWS; r++)
            memcpy(&m->y[mb][l][r * WIDTH], m->b[l], sizeof m->b[l]);
        tsr_status_t st = tsr_device_gemm_f32(m->dev, TSR_NO_TRANS, TSR_TRANS, ROWS, WIDTH, WIDTH, 1.0f, x, WIDTH,
                                              m->W[l], WIDTH, 1.0f, m->y[mb][l], WIDTH);
        if (st != TSR_OK)
            return st;
        for (int i = 0; i < N; i++)
            m->y[mb][l][i] = tanhf(m->y[mb][l][i]);
        x = m->y[mb][l];
    }
    if (last(m, c)) /* the last stage computes the loss itself; out is NULL */
        for (int i = 0; i < N; i++)
            m->loss += 0.5 * pow(x[i] - data(2, mb, i), 2) / (MICRO * ROWS);
    else
        memcpy(out, x, sizeof(float) * N);
    return TSR_OK;
}

static tsr_status_t weight_grad_layer(model_t *m, int mb, int l)
{
    for (int i = 0; i < N; i++)
        m->db[l][i % WIDTH] += m->dz[mb][l][i];
    return tsr_device_gemm_f32(m->dev, TSR_TRANS, TSR_NO_TRANS, WIDTH, WIDTH, ROWS, 1.0f, m->dz[mb][l], WIDTH,
                               m->x[mb][l], WIDTH, 1.0f, m->dW[l], WIDTH);
}

static tsr_status_t backward(void *ctx, int c, int mb, const void *in, const void *grad_out, void *grad_in)
{
    model_t *m = ctx;
    float dy[N], dx[N];
    (void)in; /* this model keeps its own copy of every layer input */
    for (int i = 0; i < N; i++) /* the last stage seeds the gradient from its loss */
        dy[i] = last(m, c) ? (m->y[mb][LAYERS - 1][i] - data(2, mb, i)) / (MICRO * ROWS)
                           : ((const float *)grad_out)[i];
    for (int l = hi(m, c) - 1; l >= lo(m, c); l--) {
        for (int i = 0; i < N; i++)
            m->dz[mb][l][i] = dy[i] * (1 - m->y[mb][l][i] * m->y[mb][l][i]);
        tsr_status_t st = m->split ? TSR_OK : weight_grad_layer(m, mb, l); /* ZB-H1 defers it to W */
        if (st == TSR_OK)
            st = tsr_device_gemm_f32(m->dev, TSR_NO_TRANS, TSR_NO_TRANS, ROWS, WIDTH, WIDTH, 1.0f, m->dz[mb][l], WIDTH,
                                     m->W[l], WIDTH, 0.0f, dx, WIDTH);
        if (st != TSR_OK)
            return st;
        memcpy(dy, dx, sizeof dy);
    }
    if (!first(m, c))
        memcpy(grad_in, dy, sizeof dy);
    return TSR_OK;
}

static tsr_status_t weight_grad(void *ctx, int c, int mb, const void *in, const void *grad_out)
{
    model_t *m = ctx;
    (void)in, (void)grad_out;
    for (int l = lo(m, c); l < hi(m, c); l++) {
        tsr_status_t st = weight_grad_layer(m, mb, l);
        if (st != TSR_OK)
            return st;
    }
    return TSR_OK;
}

static int fail(const char *what)
{
    fprintf(stderr, "pipe_mlp: %s: %s\n", what, tsr_last_error());
    MPI_Abort(MPI_COMM_WORLD, 1);
    return 1;
}

int main(int argc, char **argv)
{
    static model_t m;
    tsr_layout_t layout = TSR_LAYOUT_INIT;
    tsr_grid_t grid = NULL;
    tsr_pipe_schedule_t sched = NULL;
    tsr_pipe_trace_t trace = NULL;
    tsr_pipe_kind_t kind = TSR_PIPE_1F1B;
    MPI_Init(&argc, &argv);
    MPI_Comm_size(MPI_COMM_WORLD, &layout.pp);
    if (argc > 1 && tsr_pipe_kind_parse(argv[1], &kind) != TSR_OK)
        return fail("schedule");
    int chunks = kind == TSR_PIPE_INTERLEAVED && MICRO % layout.pp == 0 && 2 * layout.pp <= LAYERS ? CHUNKS_MAX : 1;
    if (tsr_grid_create(MPI_COMM_WORLD, &layout, &grid) != TSR_OK || tsr_device_create(TSR_DEVICE_CPU, 0, &m.dev) != TSR_OK ||
        tsr_pipe_trace_create(&trace) != TSR_OK)
        return fail("setup");
    tsr_comm_t pp = tsr_grid_comm(grid, TSR_AXIS_PP);
    m.p = layout.pp;
    m.stage = tsr_comm_rank(pp);
    m.split = kind == TSR_PIPE_ZB_H1;
    double cost[LAYERS];
    for (int l = 0; l < LAYERS; l++)
        cost[l] = 1.0;
    if (tsr_pipe_partition(cost, LAYERS, m.p * chunks, m.bounds, NULL) != TSR_OK ||
        tsr_pipe_schedule_create(kind, m.p, MICRO, chunks, &sched) != TSR_OK)
        return fail("schedule");
    for (int l = 0; l < LAYERS; l++)
        for (int i = 0; i < WIDTH * WIDTH; i++)
            m.W[l][i] = (i / WIDTH == i % WIDTH) + 0.2f * (tsr_rng_uniform(3, (uint64_t)l, (uint64_t)i) - 0.5f);

    tsr_pipe_stage_t stage = TSR_PIPE_STAGE_INIT;
    stage.ctx = &m;
    stage.buffer_bytes = bytes;
    stage.forward = forward;
    stage.backward = backward;
    stage.weight_grad = m.split ? weight_grad : NULL;
    for (m.step = 0; m.step < STEPS; m.step++) {
        memset(m.dW, 0, sizeof m.dW);
        memset(m.db, 0, sizeof m.db);
        m.loss = 0;
        if (tsr_pipe_execute(sched, pp, m.dev, &stage, NULL, m.step == STEPS - 1 ? trace : NULL) != TSR_OK)
            return fail("execute");
        for (int l = 0; l < LAYERS; l++) {
            for (int i = 0; i < WIDTH * WIDTH; i++)
                m.W[l][i] -= LR * m.dW[l][i];
            for (int j = 0; j < WIDTH; j++)
                m.b[l][j] -= LR * m.db[l][j];
        }
        if (last(&m, chunks - 1) && (m.step % 10 == 0 || m.step == STEPS - 1))
            printf("%s p=%d v=%d step %2d loss %.5f\n", tsr_pipe_kind_name(kind), m.p, chunks, m.step, m.loss);
    }
    if (argc > 2 && tsr_pipe_trace_write(trace, pp, argv[2]) != TSR_OK)
        return fail("trace");
    tsr_pipe_trace_destroy(&trace);
    tsr_pipe_schedule_destroy(&sched);
    tsr_device_destroy(&m.dev);
    tsr_grid_destroy(&grid);
    MPI_Finalize();
    return 0;
}
