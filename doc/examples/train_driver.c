/*
 * train_driver.c: a training driver on Tessera's public API, for a model of its own: a
 * 4-layer MLP y = tanh(x W + b) of width 16 learning to halve its inputs, on a dp x pp grid,
 * pipelined by the executor (1F1B), its parameters in a ZeRO optimizer (stage 1, AdamW),
 * checkpointed at the end and resumed from DIR/latest when there is one.
 *
 *   mpiexec -n 4 train_driver [dp=2,pp=2 [DIR]]     (run it twice: the second run resumes)
 *
 * The stage callbacks compute straight into the optimizer's parameter and gradient views,
 * which stay in place in ZeRO stages 0 and 1. Build against an installed Tessera:
 *   mpicc train_driver.c $(pkg-config --cflags --libs tessera) -lm -o train_driver
 */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <tessera.h>

enum { LAYERS = 4, W = 16, ROWS = 4, MICRO = 4, STEPS = 30 };
#define N (ROWS * W)

static struct {
    tsr_grid_coords_t at;
    int bounds[LAYERS + 1], id[LAYERS][2], step; /* id: optimizer ids of W and b */
    tsr_zero_t opt;
    float x[MICRO][LAYERS][N], y[MICRO][LAYERS][N]; /* layer inputs and outputs, for backward */
    double loss;
} m;

static float *view(int l, int which, int grad) /* the optimizer's parameter or gradient view */
{
    float *p, *g;
    return tsr_zero_view(m.opt, m.id[l][which], &p, &g) == TSR_OK ? (grad ? g : p) : NULL;
}
/* The data: micro-batch mb of this dp rank at this step, inputs in [-1, 1). */
static float input(int mb, int i)
{
    return 2 * tsr_rng_uniform(7, tsr_rng_stream((uint32_t)m.step, (uint32_t)(m.at.dp * MICRO + mb)), i) - 1;
}
static size_t bytes(void *ctx, int c, tsr_pipe_side_t s) { (void)ctx, (void)c, (void)s; return N * sizeof(float); }

static tsr_status_t forward(void *ctx, int c, int mb, const void *in, void *out)
{
    (void)ctx, (void)c;
    float buf[N];
    for (int i = 0; i < N; i++)
        buf[i] = in ? ((const float *)in)[i] : input(mb, i);
    for (int l = m.bounds[m.at.pp]; l < m.bounds[m.at.pp + 1]; l++) {
        const float *w = view(l, 0, 0), *b = view(l, 1, 0);
        memcpy(m.x[mb][l], buf, sizeof buf);
        for (int r = 0; r < ROWS; r++)
            for (int j = 0; j < W; j++) {
                float s = b[j];
                for (int k = 0; k < W; k++)
                    s += m.x[mb][l][r * W + k] * w[k * W + j];
                buf[r * W + j] = m.y[mb][l][r * W + j] = tanhf(s);
            }
    }
    if (out)
        memcpy(out, buf, sizeof buf);
    else /* last stage: mean squared error against input / 2 */
        for (int i = 0; i < N; i++)
            m.loss += pow(buf[i] - input(mb, i) / 2, 2) / (N * MICRO);
    return TSR_OK;
}

static tsr_status_t backward(void *ctx, int c, int mb, const void *in, const void *gout, void *gin)
{
    (void)ctx, (void)c, (void)in;
    float d[N], dx[N];
    int lo = m.bounds[m.at.pp], hi = m.bounds[m.at.pp + 1];
    for (int i = 0; i < N; i++) /* the loss's gradient is the mean over this replica's samples */
        d[i] = gout ? ((const float *)gout)[i] : 2 * (m.y[mb][hi - 1][i] - input(mb, i) / 2) / (N * MICRO);
    for (int l = hi - 1; l >= lo; l--) {
        const float *w = view(l, 0, 0);
        float *dw = view(l, 0, 1), *db = view(l, 1, 1);
        for (int i = 0; i < N; i++)
            d[i] *= 1 - m.y[mb][l][i] * m.y[mb][l][i];
        for (int r = 0; r < ROWS; r++)
            for (int k = 0; k < W; k++) {
                float s = 0;
                for (int j = 0; j < W; j++) {
                    s += d[r * W + j] * w[k * W + j];
                    dw[k * W + j] += m.x[mb][l][r * W + k] * d[r * W + j];
                }
                dx[r * W + k] = s;
            }
        for (int i = 0; i < N; i++)
            db[i % W] += d[i], d[i] = dx[i];
    }
    if (gin)
        memcpy(gin, d, sizeof d);
    return TSR_OK;
}

#define TRY(call) do { if ((call) != TSR_OK) { fprintf(stderr, "%s: %s\n", #call, tsr_last_error()); goto out; } } while (0)

int main(int argc, char **argv)
{
    MPI_Init(&argc, &argv);
    tsr_layout_t lay = TSR_LAYOUT_INIT;
    tsr_grid_t grid = NULL;
    tsr_device_t dev = NULL;
    tsr_pipe_schedule_t sched = NULL;
    tsr_zero_config_t zc = TSR_ZERO_CONFIG_INIT;
    tsr_pipe_stage_t stage = {sizeof stage, &m, bytes, forward, backward, NULL};
    const char *dir = argc > 2 ? argv[2] : "train_driver.ckpt";
    char path[512];
    double cost[LAYERS] = {1, 1, 1, 1};
    int status = 1;
    TRY(tsr_layout_parse(argc > 1 ? argv[1] : "dp=2,pp=2", &lay));
    TRY(tsr_device_create(TSR_DEVICE_CPU, 0, &dev));
    TRY(tsr_grid_create(MPI_COMM_WORLD, &lay, &grid));
    tsr_grid_coords(grid, &m.at);
    TRY(tsr_pipe_partition(cost, LAYERS, lay.pp, m.bounds, NULL));
    TRY(tsr_pipe_schedule_create(TSR_PIPE_1F1B, lay.pp, MICRO, 1, &sched));
    zc.stage = 1, zc.lr = 1e-2f, zc.clip_norm = 1.0f;
    TRY(tsr_zero_create(grid, dev, &zc, &m.opt));
    for (int l = m.bounds[m.at.pp]; l < m.bounds[m.at.pp + 1]; l++)
        for (int which = 0; which < 2; which++) { /* W is W x W, b is 1 x W; whole on each rank */
            char name[16];
            snprintf(name, sizeof name, "l%d.%s", l, which ? "b" : "w");
            tsr_zero_tensor_t t = {sizeof t, name, which ? 1 : W, W, 0, 0, which ? 1 : W, W, l, 0u};
            TRY(tsr_zero_register(m.opt, &t, &m.id[l][which]));
        }
    TRY(tsr_zero_commit(m.opt));
    if (tsr_ckpt_latest(dir, path, sizeof path) == TSR_OK) { /* resume: any layout can read it */
        tsr_ckpt_reader_t r = NULL;
        TRY(tsr_ckpt_reader_open(tsr_grid_comm(grid, TSR_AXIS_WORLD), path, &r));
        tsr_status_t lrc = tsr_ckpt_load_zero(r, grid, m.opt, &zc);
        tsr_ckpt_reader_close(&r);
        TRY(lrc);
    } else { /* start from the same weights on every layout: a function of the global index */
        for (int l = m.bounds[m.at.pp]; l < m.bounds[m.at.pp + 1]; l++) {
            tsr_zero_piece_t pc;
            TRY(tsr_zero_piece(m.opt, m.id[l][0], TSR_ZERO_PARAM, &pc));
            for (size_t i = pc.begin; i < pc.end; i++)
                pc.data[i - pc.begin] = (i % (W + 1) == 0) + 0.1f * tsr_rng_normal(3, (uint64_t)l, i);
        }
        TRY(tsr_zero_sync_params(m.opt));
    }
    tsr_zero_state_t st;
    tsr_zero_get_state(m.opt, &st);
    for (m.step = (int)st.step; m.step < (int)st.step + STEPS; m.step++) {
        tsr_zero_step_info_t info;
        m.loss = 0;
        TRY(tsr_pipe_execute(sched, tsr_grid_comm(grid, TSR_AXIS_PP), dev, &stage, NULL, NULL));
        for (int l = m.bounds[m.at.pp + 1] - 1; l >= m.bounds[m.at.pp]; l--)
            TRY(tsr_zero_grad_ready(m.opt, l));
        TRY(tsr_zero_step(m.opt, &info));
        if (m.at.pp == lay.pp - 1 && m.at.dp == 0 && (m.step + 1) % 10 == 0)
            printf("step %d  loss %.6f (replica 0)  grad norm %.4f\n", m.step + 1, m.loss, info.grad_norm);
    }
    tsr_ckpt_writer_t w = NULL;
    TRY(tsr_ckpt_writer_create(tsr_grid_comm(grid, TSR_AXIS_WORLD), dir, m.step, &w));
    tsr_status_t rc = tsr_ckpt_save_zero(w, grid, m.opt, &zc);
    if (rc != TSR_OK)
        tsr_ckpt_abort(&w); /* removes the temporary file: nothing is published */
    TRY(rc);
    TRY(tsr_ckpt_commit(&w, 2));
    if (m.at.rank == 0)
        printf("checkpoint of step %d in %s\n", m.step, dir);
    status = 0;
out:
    tsr_zero_destroy(&m.opt);
    tsr_pipe_schedule_destroy(&sched);
    tsr_grid_destroy(&grid);
    tsr_device_destroy(&dev);
    MPI_Finalize();
    return status;
}
