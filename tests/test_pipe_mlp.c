/*
 * test_pipe_mlp.c: the executor trains a real MLP exactly like a serial run.
 *
 * An MLP of L tanh layers (y = tanh(x Wᵀ + b), L = max(4, p v), width 8), split by the
 * partitioner into one part per virtual stage, is trained for 3 SGD steps with m = 8
 * micro-batches under each schedule (GPipe, 1F1B, interleaved with v = 2, ZB-H1 with its
 * weight gradients in separate W callbacks) on p = the number of ranks, and again with the
 * messages posted in order (in_order: each at its action, one tag, matched in posting order
 * as NCCL matches them, so a list order the two ends disagree on would mix messages up; on
 * MPI strictly, each message synchronous and alone in flight, so an order NCCL's stream
 * would deadlock on hangs or fails here; one rank, which only sends to itself, runs plain).
 * Every rank checks
 * its layers against a serial double-precision run of the same model on the same data
 * (relative error 1e-5). The activation pool of the last stage must hold at least m buffers
 * under GPipe and no more than its simulated peak plus what is in flight under 1F1B. The
 * Chrome trace of the 1F1B run must be valid JSON with one process per rank. The executor
 * must refuse, before communicating, a ZB-H1 schedule without weight_grad, options of another
 * size, a schedule for another number of stages, and a schedule that fails the simulator.
 *
 * Data and initial weights are drawn with a fresh seed each run (printed; TSR_TEST_SEED=N
 * repeats it).
 */
#include <stdlib.h>
#include <string.h>
#include <tessera.h>
#include <time.h>
#include <unistd.h>

#include "tap.h"
#include "json_check.h"

enum { D = 8, R = 3, M = 8, STEPS = 3, MAXL = 16 };
static const float LR = 0.5f;
static uint64_t seed;

/* The model and what a stage keeps between its forward and backward. */
typedef struct mlp {
    int p, v, me, L, split;
    int bounds[MAXL + 1];   /* virtual stage k holds layers [bounds[k], bounds[k+1]) */
    tsr_device_t dev;
    float W[MAXL][D * D], b[MAXL][D], dW[MAXL][D * D], db[MAXL][D];
    float x[M][MAXL][R * D];  /* input of each layer, per micro-batch */
    float y[M][MAXL][R * D];  /* output of each layer */
    float dz[M][MAXL][R * D]; /* gradient before tanh, kept for W */
    int step;
} mlp_t;

static float input_value(int step, int mb, int i) { return 2 * tsr_rng_uniform(seed, 1000 + (uint64_t)(step * M + mb), (uint64_t)i) - 1; }
static float target_value(int step, int mb, int i) { return 2 * tsr_rng_uniform(seed, 5000 + (uint64_t)(step * M + mb), (uint64_t)i) - 1; }
static float weight_init(int l, int i) { return 0.8f * (tsr_rng_uniform(seed, (uint64_t)l, (uint64_t)i) - 0.5f); }

static int first_layer(const mlp_t *n, int chunk) { return n->bounds[chunk * n->p + n->me]; }
static int end_layer(const mlp_t *n, int chunk) { return n->bounds[chunk * n->p + n->me + 1]; }
static int is_first(const mlp_t *n, int chunk) { return chunk * n->p + n->me == 0; }
static int is_last(const mlp_t *n, int chunk) { return chunk * n->p + n->me == n->p * n->v - 1; }

static size_t buffer_bytes(void *ctx, int chunk, tsr_pipe_side_t side)
{
    (void)ctx;
    (void)chunk;
    (void)side;
    return R * D * sizeof(float);
}

static tsr_status_t forward(void *ctx, int chunk, int mb, const void *in, void *out)
{
    mlp_t *n = ctx;
    float first[R * D];
    const float *x = in;
    if (is_first(n, chunk)) {
        for (int i = 0; i < R * D; i++)
            first[i] = input_value(n->step, mb, i);
        x = first;
    }
    for (int l = first_layer(n, chunk); l < end_layer(n, chunk); l++) {
        memcpy(n->x[mb][l], x, sizeof n->x[mb][l]);
        float *y = n->y[mb][l];
        for (int r = 0; r < R; r++)
            memcpy(y + r * D, n->b[l], sizeof n->b[l]);
        tsr_status_t st = tsr_device_gemm_f32(n->dev, TSR_NO_TRANS, TSR_TRANS, R, D, D, 1.0f, x, D, n->W[l], D, 1.0f, y, D);
        if (st != TSR_OK)
            return st;
        for (int i = 0; i < R * D; i++)
            y[i] = tanhf(y[i]);
        x = y;
    }
    if (!is_last(n, chunk))
        memcpy(out, x, R * D * sizeof(float));
    return TSR_OK;
}

static tsr_status_t weight_layer(mlp_t *n, int mb, int l)
{
    for (int r = 0; r < R; r++)
        for (int j = 0; j < D; j++)
            n->db[l][j] += n->dz[mb][l][r * D + j];
    return tsr_device_gemm_f32(n->dev, TSR_TRANS, TSR_NO_TRANS, D, D, R, 1.0f, n->dz[mb][l], D, n->x[mb][l], D, 1.0f,
                               n->dW[l], D);
}

static tsr_status_t backward(void *ctx, int chunk, int mb, const void *in, const void *grad_out, void *grad_in)
{
    mlp_t *n = ctx;
    float dy[R * D], dx[R * D];
    (void)in;
    if (is_last(n, chunk)) {
        /* loss = 0.5 sum (y - t)^2 / (M R) over the whole batch */
        const float *y = n->y[mb][end_layer(n, chunk) - 1];
        for (int i = 0; i < R * D; i++)
            dy[i] = (y[i] - target_value(n->step, mb, i)) / (M * R);
    } else {
        memcpy(dy, grad_out, sizeof dy);
    }
    for (int l = end_layer(n, chunk) - 1; l >= first_layer(n, chunk); l--) {
        for (int i = 0; i < R * D; i++)
            n->dz[mb][l][i] = dy[i] * (1 - n->y[mb][l][i] * n->y[mb][l][i]);
        if (!n->split && weight_layer(n, mb, l) != TSR_OK)
            return TSR_ERR_INTERNAL;
        tsr_status_t st = tsr_device_gemm_f32(n->dev, TSR_NO_TRANS, TSR_NO_TRANS, R, D, D, 1.0f, n->dz[mb][l], D,
                                              n->W[l], D, 0.0f, dx, D);
        if (st != TSR_OK)
            return st;
        memcpy(dy, dx, sizeof dy);
    }
    if (!is_first(n, chunk))
        memcpy(grad_in, dy, sizeof dy);
    return TSR_OK;
}

static tsr_status_t weight_grad(void *ctx, int chunk, int mb, const void *in, const void *grad_out)
{
    mlp_t *n = ctx;
    (void)in;
    (void)grad_out;
    for (int l = first_layer(n, chunk); l < end_layer(n, chunk); l++) {
        tsr_status_t st = weight_layer(n, mb, l);
        if (st != TSR_OK)
            return st;
    }
    return TSR_OK;
}

static void init_weights(int L, float W[][D * D], float b[][D])
{
    for (int l = 0; l < L; l++) {
        for (int i = 0; i < D * D; i++)
            W[l][i] = weight_init(l, i);
        for (int j = 0; j < D; j++)
            b[l][j] = weight_init(l + 100, j);
    }
}

/* The serial reference: STEPS steps of full-batch gradient descent in double precision. */
static void serial(int L, double W[][D * D], double b[][D])
{
    float Wf[MAXL][D * D], bf[MAXL][D];
    init_weights(L, Wf, bf);
    for (int l = 0; l < L; l++) {
        for (int i = 0; i < D * D; i++)
            W[l][i] = Wf[l][i];
        for (int j = 0; j < D; j++)
            b[l][j] = bf[l][j];
    }
    static double ys[MAXL + 1][R * D];
    for (int step = 0; step < STEPS; step++) {
        double dW[MAXL][D * D] = {{0}}, db[MAXL][D] = {{0}};
        for (int mb = 0; mb < M; mb++) {
            for (int i = 0; i < R * D; i++)
                ys[0][i] = input_value(step, mb, i);
            for (int l = 0; l < L; l++)
                for (int r = 0; r < R; r++)
                    for (int j = 0; j < D; j++) {
                        double z = b[l][j];
                        for (int k = 0; k < D; k++)
                            z += ys[l][r * D + k] * W[l][j * D + k];
                        ys[l + 1][r * D + j] = tanh(z);
                    }
            double dy[R * D], dz[R * D];
            for (int i = 0; i < R * D; i++)
                dy[i] = (ys[L][i] - target_value(step, mb, i)) / (M * R);
            for (int l = L - 1; l >= 0; l--) {
                for (int i = 0; i < R * D; i++)
                    dz[i] = dy[i] * (1 - ys[l + 1][i] * ys[l + 1][i]);
                for (int r = 0; r < R; r++)
                    for (int j = 0; j < D; j++) {
                        db[l][j] += dz[r * D + j];
                        for (int k = 0; k < D; k++)
                            dW[l][j * D + k] += dz[r * D + j] * ys[l][r * D + k];
                    }
                for (int r = 0; r < R; r++)
                    for (int k = 0; k < D; k++) {
                        double s = 0;
                        for (int j = 0; j < D; j++)
                            s += dz[r * D + j] * W[l][j * D + k];
                        dy[r * D + k] = s;
                    }
            }
        }
        for (int l = 0; l < L; l++) {
            for (int i = 0; i < D * D; i++)
                W[l][i] -= LR * dW[l][i];
            for (int j = 0; j < D; j++)
                b[l][j] -= LR * db[l][j];
        }
    }
}

/* Largest |got - ref| over this rank's layers, relative to the largest |ref| there. */
static double compare(const mlp_t *n, double W[][D * D], double b[][D])
{
    double diff = 0, norm = 1e-30;
    for (int c = 0; c < n->v; c++)
        for (int l = first_layer(n, c); l < end_layer(n, c); l++) {
            for (int i = 0; i < D * D; i++) {
                diff = fmax(diff, fabs(n->W[l][i] - W[l][i]));
                norm = fmax(norm, fabs(W[l][i]));
            }
            for (int j = 0; j < D; j++) {
                diff = fmax(diff, fabs(n->b[l][j] - b[l][j]));
                norm = fmax(norm, fabs(b[l][j]));
            }
        }
    return diff / norm;
}

/* Train STEPS steps with one schedule; returns the executor's status. */
static tsr_status_t train(mlp_t *n, tsr_pipe_kind_t kind, tsr_comm_t pp, const tsr_pipe_exec_config_t *cfg,
                          tsr_pipe_trace_t trace, uint64_t *pool_peak)
{
    tsr_pipe_schedule_t s = NULL;
    tsr_pipe_stage_t stage = TSR_PIPE_STAGE_INIT;
    tsr_mem_stats_t mem;
    stage.ctx = n;
    stage.buffer_bytes = buffer_bytes;
    stage.forward = forward;
    stage.backward = backward;
    stage.weight_grad = n->split ? weight_grad : NULL;
    tsr_status_t st = tsr_pipe_schedule_create(kind, n->p, M, n->v, &s);
    tsr_mem_reset_peaks(TSR_DEVICE_CPU);
    for (n->step = 0; st == TSR_OK && n->step < STEPS; n->step++) {
        memset(n->dW, 0, sizeof n->dW);
        memset(n->db, 0, sizeof n->db);
        st = tsr_pipe_execute(s, pp, n->dev, &stage, cfg, n->step == 0 ? trace : NULL);
        for (int l = 0; l < n->L; l++) {
            for (int i = 0; i < D * D; i++)
                n->W[l][i] -= LR * n->dW[l][i];
            for (int j = 0; j < D; j++)
                n->b[l][j] -= LR * n->db[l][j];
        }
    }
    tsr_mem_stats(TSR_DEVICE_CPU, &mem);
    *pool_peak = mem.peak[TSR_MEM_ACTIVATIONS];
    if (st != TSR_OK)
        fprintf(stderr, "#   [rank %d] %s: %s\n", tap_rank(), tsr_pipe_kind_name(kind), tsr_last_error());
    tsr_pipe_schedule_destroy(&s);
    return st;
}

static void check_trace_file(const char *path, int ranks)
{
    FILE *f = fopen(path, "r");
    char *text = NULL;
    long len = 0;
    if (f && fseek(f, 0, SEEK_END) == 0 && (len = ftell(f)) > 0 && fseek(f, 0, SEEK_SET) == 0 &&
        (text = calloc((size_t)len + 1, 1)) && fread(text, 1, (size_t)len, f) != (size_t)len) {
        free(text);
        text = NULL;
    }
    if (f)
        fclose(f);
    const char *end = text ? json_value(text) : NULL;
    ok(end && *json_ws(end) == '\0', "Chrome trace is valid JSON (%ld bytes)", len);
    int procs = 0, seen[64] = {0};
    for (const char *s = text; s && (s = strstr(s, "\"process_name\",\"ph\":\"M\",\"pid\":")); s++) {
        int pid = atoi(s + strlen("\"process_name\",\"ph\":\"M\",\"pid\":"));
        if (pid >= 0 && pid < 64 && !seen[pid]++)
            procs++;
    }
    int forwards = 0;
    for (const char *s = text; s && (s = strstr(s, "\"cat\":\"F\"")); s++)
        forwards++;
    is_int(procs, ranks, "trace names one process per rank");
    is_int(forwards, ranks * M, "trace holds every rank's %d forwards", M);
    free(text);
}

/* What the executor refuses before it communicates (every rank fails alike). */
static void refusals(tsr_comm_t pp, tsr_device_t dev, mlp_t *n)
{
    tsr_pipe_schedule_t s = NULL;
    tsr_pipe_stage_t stage = TSR_PIPE_STAGE_INIT;
    int p = tsr_comm_size(pp);
    stage.ctx = n;
    stage.buffer_bytes = buffer_bytes;
    stage.forward = forward;
    stage.backward = backward;
    tsr_pipe_schedule_create(TSR_PIPE_ZB_H1, p, M, 1, &s);
    tsr_status_t st = tsr_pipe_execute(s, pp, dev, &stage, NULL, NULL);
    ok(st == TSR_ERR_INVALID_ARG && strstr(tsr_last_error(), "weight_grad"),
       "ZB-H1 without a weight_grad callback is refused");
    tsr_pipe_schedule_destroy(&s);

    tsr_pipe_exec_config_t old = TSR_PIPE_EXEC_INIT;
    old.struct_size -= sizeof(int); /* a caller built against a header before in_order */
    tsr_pipe_schedule_create(TSR_PIPE_1F1B, p, M, 1, &s);
    st = tsr_pipe_execute(s, pp, dev, &stage, &old, NULL);
    ok(st == TSR_ERR_INVALID_ARG && strstr(tsr_last_error(), "TSR_PIPE_EXEC_INIT"),
       "options of another size are refused (%s)", tsr_last_error());
    tsr_pipe_schedule_destroy(&s);

    tsr_pipe_schedule_create(TSR_PIPE_1F1B, p + 1, M, 1, &s);
    st = tsr_pipe_execute(s, pp, dev, &stage, NULL, NULL);
    ok(st == TSR_ERR_INVALID_ARG && strstr(tsr_last_error(), "stages"),
       "a schedule for p+1 stages is refused on p ranks");
    tsr_pipe_schedule_destroy(&s);

    /* On every stage the first F and the first B trade places: B would run before its F. */
    tsr_pipe_schedule_create(TSR_PIPE_GPIPE, p, 2, 1, &s);
    for (int r = 0; r < p; r++) {
        tsr_pipe_action_t *a = tsr_pipe_schedule_actions(s, r), *f = NULL, *b = NULL;
        for (size_t i = 0; i < tsr_pipe_schedule_length(s, r); i++) {
            if (a[i].op == TSR_PIPE_FORWARD && !f)
                f = &a[i];
            if (a[i].op == TSR_PIPE_BACKWARD && !b)
                b = &a[i];
        }
        if (f && b) {
            f->op = TSR_PIPE_BACKWARD;
            b->op = TSR_PIPE_FORWARD;
        }
    }
    st = tsr_pipe_execute(s, pp, dev, &stage, NULL, NULL);
    ok(st == TSR_ERR_INVALID_ARG && strstr(tsr_last_error(), "before its forward"),
       "a schedule that fails the simulator is refused before running (%s)", tsr_last_error());
    tsr_pipe_schedule_destroy(&s);
}

int main(int argc, char **argv)
{
    tap_init(&argc, &argv, "1 2 4");
    seed = tap_seed();

    tsr_layout_t layout = TSR_LAYOUT_INIT;
    layout.pp = tap_size();
    tsr_grid_t grid = NULL;
    tsr_device_t dev = NULL;
    tsr_pipe_trace_t trace = NULL;
    tsr_status_t st = tsr_grid_create(MPI_COMM_WORLD, &layout, &grid);
    if (st == TSR_OK)
        st = tsr_device_create(TSR_DEVICE_CPU, 0, &dev);
    if (st == TSR_OK)
        st = tsr_pipe_trace_create(&trace);
    ok(st == TSR_OK, "grid pp=%d, CPU device and trace", layout.pp);
    if (st != TSR_OK)
        return tap_done();
    tsr_comm_t pp = tsr_grid_comm(grid, TSR_AXIS_PP);
    static mlp_t net;
    static double W[MAXL][D * D], b[MAXL][D];
    uint64_t pool[TSR_PIPE_KIND_COUNT] = {0};
    const tsr_pipe_kind_t kinds[] = {TSR_PIPE_GPIPE, TSR_PIPE_1F1B, TSR_PIPE_INTERLEAVED, TSR_PIPE_ZB_H1};
    tsr_pipe_exec_config_t in_order = TSR_PIPE_EXEC_INIT;
    in_order.in_order = 1;
    for (int k = 0; k < 8; k++) {
        tsr_pipe_kind_t kind = kinds[k % 4];
        int ordered = k >= 4;
        memset(&net, 0, sizeof net);
        net.p = layout.pp;
        net.v = kind == TSR_PIPE_INTERLEAVED ? 2 : 1;
        net.me = tsr_comm_rank(pp);
        net.L = net.p * net.v > 4 ? net.p * net.v : 4;
        net.split = kind == TSR_PIPE_ZB_H1;
        net.dev = dev;
        double cost[MAXL];
        for (int l = 0; l < net.L; l++)
            cost[l] = 1.0;
        tsr_pipe_partition(cost, net.L, net.p * net.v, net.bounds, NULL);
        init_weights(net.L, net.W, net.b);
        serial(net.L, W, b);
        uint64_t peak;
        st = train(&net, kind, pp, ordered ? &in_order : NULL, kind == TSR_PIPE_1F1B && !ordered ? trace : NULL,
                   &peak);
        if (!ordered)
            pool[kind] = peak;
        double err = compare(&net, W, b);
        ok(st == TSR_OK && err <= 1e-5, "%s (p=%d m=%d v=%d, %d layers)%s: parameters after %d steps match serial",
           tsr_pipe_kind_name(kind), net.p, M, net.v, net.L, ordered ? ", messages in order" : "", STEPS);
        TAP_DETAIL_(err <= 1e-5, "relative error %.3g > 1e-5", err);
    }

    /* The last stage holds every micro-batch's input under GPipe, about one under 1F1B. */
    const uint64_t slot = (R * D * sizeof(float) + TSR_DEVICE_ALIGNMENT - 1) / TSR_DEVICE_ALIGNMENT * TSR_DEVICE_ALIGNMENT;
    int last = tsr_comm_rank(pp) == layout.pp - 1 && layout.pp > 1;
    tsr_pipe_exec_config_t cfg = TSR_PIPE_EXEC_INIT;
    int pool_ok = !last || (pool[TSR_PIPE_GPIPE] >= M * slot &&
                            pool[TSR_PIPE_1F1B] <= (uint64_t)(1 + 3 * cfg.lookahead + 2) * slot);
    ok(pool_ok, "activation pool of the last stage: GPipe >= m slots, 1F1B <= 1 + 3 lookahead + 2 slots");
    TAP_DETAIL_(pool_ok, "GPipe pool %llu bytes, 1F1B pool %llu bytes, slot %llu bytes",
                (unsigned long long)pool[TSR_PIPE_GPIPE], (unsigned long long)pool[TSR_PIPE_1F1B],
                (unsigned long long)slot);

    refusals(pp, dev, &net);

    char path[64] = "/tmp/test_pipe_trace_XXXXXX";
    if (tap_rank() == 0) {
        int fd = mkstemp(path);
        if (fd >= 0)
            close(fd);
    }
    st = tsr_pipe_trace_write(trace, pp, path);
    ok(st == TSR_OK, "trace written (%s)", st == TSR_OK ? "ok" : tsr_last_error());
    if (tap_rank() == 0) {
        check_trace_file(path, tap_size());
        unlink(path);
    } else {
        ok(1, "Chrome trace is valid JSON (checked on rank 0)");
        ok(1, "trace names one process per rank (checked on rank 0)");
        ok(1, "trace holds every rank's forwards (checked on rank 0)");
    }
    tsr_pipe_trace_destroy(&trace);
    tsr_device_destroy(&dev);
    tsr_grid_destroy(&grid);
    return tap_done();
}
