/*
 * test_pipe_schedule.c: schedule generators, simulator and partitioner (pure computation, 1 rank).
 *
 * For every p in 1..8, m in 1..32 and v in {1, 2} (interleaved with v=2 where m is a multiple
 * of p), each generator's schedule must pass the rendezvous simulator. With unit costs
 * (forward 1, backward 2; ZB-H1 splits the backward into B 1 and W 1), 1F1B's bubble must
 * be (p-1)/(m+p-1), GPipe's peak live activations m on every stage, 1F1B's at most p on
 * stage 0, interleaved's bubble below 1F1B's (and equal to (p-1)/(v m+p-1)) and ZB-H1's
 * below 1F1B's (and equal to its formula for m >= p) with no stage holding more than 1F1B's
 * peak, p. Schedules are checked under rendezvous rules and timed under the executor's. A 1F1B schedule with two sends swapped must be reported as a
 * deadlock naming both stages; malformed schedules must be rejected. The partitioner must
 * reach the brute-force optimum on random costs.
 */
#include <stdlib.h>
#include <string.h>
#include <tessera.h>
#include <time.h>
#include <unistd.h>

#include "tap.h"

static uint64_t seed;

/* Generate, check under rendezvous rules, and time under the executor's rules (eager: its
 * receives are posted ahead, so its sends never wait for the receiver to get there). */
static int simulate(tsr_pipe_kind_t kind, int p, int m, int v, const tsr_pipe_costs_t *c, tsr_pipe_sim_t *out)
{
    tsr_pipe_schedule_t s = NULL;
    tsr_pipe_costs_t rules = c ? *c : (tsr_pipe_costs_t)TSR_PIPE_COSTS_INIT;
    rules.eager = 0;
    tsr_status_t st = tsr_pipe_schedule_create(kind, p, m, v, &s);
    if (st == TSR_OK)
        st = tsr_pipe_simulate(s, &rules, NULL);
    rules.eager = c ? c->eager : 1;
    if (st == TSR_OK)
        st = tsr_pipe_simulate(s, &rules, out);
    if (st != TSR_OK)
        fprintf(stderr, "#   %s p=%d m=%d v=%d: %s\n", tsr_pipe_kind_name(kind), p, m, v, tsr_last_error());
    tsr_pipe_schedule_destroy(&s);
    return st == TSR_OK;
}

static void sweep(void)
{
    tsr_pipe_costs_t unit = TSR_PIPE_COSTS_INIT, zb = TSR_PIPE_COSTS_INIT;
    unit.eager = zb.eager = 1;
    zb.backward = 1.0;
    zb.weight = 1.0;
    int runs = 0, failed_sim = 0, bad_1f1b = 0, bad_gpipe = 0, bad_1f1b_peak = 0, bad_inter = 0, bad_zb = 0,
        bad_zb_mem = 0, bad_zb_formula = 0, bad_inter_formula = 0;
    for (int p = 1; p <= 8; p++)
        for (int m = 1; m <= 32; m++) {
            tsr_pipe_sim_t g, f, i1, z;
            int okg = simulate(TSR_PIPE_GPIPE, p, m, 1, &unit, &g);
            int okf = simulate(TSR_PIPE_1F1B, p, m, 1, &unit, &f);
            int oki = simulate(TSR_PIPE_INTERLEAVED, p, m, 1, &unit, &i1);
            int okz = simulate(TSR_PIPE_ZB_H1, p, m, 1, &zb, &z);
            runs += 4;
            failed_sim += !okg + !okf + !oki + !okz;
            tsr_pipe_costs_t strict = unit;
            tsr_pipe_sim_t fr;
            strict.eager = 0;
            int okr = simulate(TSR_PIPE_1F1B, p, m, 1, &strict, &fr);
            if (okr && fabs(fr.bubble - (double)(p - 1) / (m + p - 1)) > 1e-12) {
                bad_1f1b++;
                diag("1F1B p=%d m=%d under rendezvous: bubble %.6f, expected %.6f", p, m, fr.bubble,
                     (double)(p - 1) / (m + p - 1));
            }
            tsr_pipe_sim_free(&fr);
            if (okf && fabs(f.bubble - (double)(p - 1) / (m + p - 1)) > 1e-12) {
                bad_1f1b++;
                diag("1F1B p=%d m=%d: bubble %.6f, expected %.6f", p, m, f.bubble, (double)(p - 1) / (m + p - 1));
            }
            for (int s = 0; okg && s < p; s++)
                bad_gpipe += g.peak_live[s] != m;
            if (okf && f.peak_live[0] > p)
                bad_1f1b_peak++;
            if (okf && okz && p > 1 && !(z.bubble < f.bubble)) {
                bad_zb++;
                diag("ZB-H1 p=%d m=%d: bubble %.4f not below 1F1B's %.4f", p, m, z.bubble, f.bubble);
            }
            int zb_peak = 0, f_peak = 0;
            for (int s = 0; okf && okz && s < p; s++) {
                zb_peak = z.peak_live[s] > zb_peak ? z.peak_live[s] : zb_peak;
                f_peak = f.peak_live[s] > f_peak ? f.peak_live[s] : f_peak;
            }
            bad_zb_mem += zb_peak > f_peak;
            if (okz && m >= p && fabs(z.bubble - tsr_pipe_bubble_formula(TSR_PIPE_ZB_H1, p, m, 1, &zb)) > 1e-12) {
                bad_zb_formula++;
                diag("ZB-H1 p=%d m=%d: bubble %.6f, formula %.6f", p, m, z.bubble,
                     tsr_pipe_bubble_formula(TSR_PIPE_ZB_H1, p, m, 1, &zb));
            }
            if (m % p == 0) {
                tsr_pipe_sim_t i2;
                int ok2 = simulate(TSR_PIPE_INTERLEAVED, p, m, 2, &unit, &i2);
                runs++;
                failed_sim += !ok2;
                if (ok2 && fabs(i2.bubble - (double)(p - 1) / (2 * m + p - 1)) > 1e-12) {
                    bad_inter_formula++;
                    diag("interleaved p=%d m=%d v=2: bubble %.6f, expected %.6f", p, m, i2.bubble,
                         (double)(p - 1) / (2 * m + p - 1));
                }
                if (ok2 && okf && p > 1 && !(i2.bubble < f.bubble)) {
                    bad_inter++;
                    diag("interleaved p=%d m=%d v=2: bubble %.4f not below 1F1B's %.4f", p, m, i2.bubble, f.bubble);
                }
                tsr_pipe_sim_free(&i2);
            }
            tsr_pipe_sim_free(&g);
            tsr_pipe_sim_free(&f);
            tsr_pipe_sim_free(&i1);
            tsr_pipe_sim_free(&z);
        }
    is_int(failed_sim, 0, "all %d generated schedules (p 1..8, m 1..32, v 1..2) run without deadlock under rendezvous and buffered rules", runs);
    is_int(bad_1f1b, 0, "1F1B bubble is (p-1)/(m+p-1) with forward 1, backward 2 (rendezvous and buffered)");
    is_int(bad_gpipe, 0, "GPipe peak live activations are m on every stage");
    is_int(bad_1f1b_peak, 0, "1F1B peak live activations on stage 0 are at most p");
    is_int(bad_inter, 0, "interleaved (v=2) bubble below 1F1B's for p > 1");
    is_int(bad_zb, 0, "ZB-H1 bubble below 1F1B's for p > 1");
    is_int(bad_zb_mem, 0, "ZB-H1 peak live activations (F to W) at most 1F1B's peak (p)");
    is_int(bad_inter_formula, 0, "interleaved (v=2) bubble is (p-1)/(v m+p-1)");
    is_int(bad_zb_formula, 0, "ZB-H1 bubble is (p-1)(F+B-W)/(m(F+B+W)+(p-1)(F+B-W)) with F=B=W=1 for m >= p");
}

static void eager_matches(void)
{
    tsr_pipe_costs_t eager = TSR_PIPE_COSTS_INIT, rendezvous = TSR_PIPE_COSTS_INIT;
    eager.eager = 1;
    tsr_pipe_sim_t a, b;
    int good = simulate(TSR_PIPE_1F1B, 4, 8, 1, &rendezvous, &a) && simulate(TSR_PIPE_1F1B, 4, 8, 1, &eager, &b);
    ok(good && fabs(a.makespan - b.makespan) < 1e-12 && fabs(a.makespan - 33.0) < 1e-12,
       "1F1B p=4 m=8: makespan 33 with rendezvous and with buffered sends");
    tsr_pipe_sim_free(&a);
    tsr_pipe_sim_free(&b);

    /* One micro-batch through two stages: F, transfer, F, B, transfer, B. */
    tsr_pipe_costs_t slow = TSR_PIPE_COSTS_INIT;
    slow.transfer = 0.5;
    for (slow.eager = 0; slow.eager < 2; slow.eager++) {
        good = simulate(TSR_PIPE_GPIPE, 2, 1, 1, &slow, &a);
        ok(good && fabs(a.makespan - 7.0) < 1e-12 && fabs(a.idle[0] - 4.0) < 1e-12 && fabs(a.idle[1] - 4.0) < 1e-12,
           "GPipe p=2 m=1 with transfer 0.5 (%s): makespan 7, idle 4 per stage", slow.eager ? "buffered" : "rendezvous");
        tsr_pipe_sim_free(&a);
    }
}

/* Find the i-th action of stage s with op. */
static tsr_pipe_action_t *nth(tsr_pipe_schedule_t sched, int s, tsr_pipe_op_t op, int i)
{
    tsr_pipe_action_t *a = tsr_pipe_schedule_actions(sched, s);
    for (size_t k = 0; k < tsr_pipe_schedule_length(sched, s); k++)
        if (a[k].op == op && i-- == 0)
            return &a[k];
    return NULL;
}

static void deadlock_detected(void)
{
    tsr_pipe_schedule_t s = NULL;
    tsr_pipe_schedule_create(TSR_PIPE_1F1B, 4, 8, 1, &s);
    /* Stage 1 sends mb 1's activation where mb 0's was, and mb 0's where mb 1's was. */
    tsr_pipe_action_t *x = nth(s, 1, TSR_PIPE_SEND_ACT, 0), *y = nth(s, 1, TSR_PIPE_SEND_ACT, 1);
    tsr_status_t st = TSR_ERR_INTERNAL;
    if (x && y) {
        int mb = x->mb;
        x->mb = y->mb;
        y->mb = mb;
        st = tsr_pipe_simulate(s, NULL, NULL);
    }
    const char *msg = tsr_last_error();
    ok(st == TSR_ERR_INVALID_ARG && strstr(msg, "deadlock") && strstr(msg, "stage 1 waits") &&
           strstr(msg, "stage 2 waits"),
       "two swapped sends are a deadlock naming stages 1 and 2");
    diag("%s", msg);
    tsr_pipe_schedule_destroy(&s);

    tsr_pipe_schedule_create(TSR_PIPE_GPIPE, 2, 2, 1, &s);
    tsr_pipe_action_t *b = nth(s, 0, TSR_PIPE_BACKWARD, 0), *f = nth(s, 0, TSR_PIPE_FORWARD, 0);
    if (b && f)
        b->op = TSR_PIPE_FORWARD, f->op = TSR_PIPE_FORWARD;
    st = tsr_pipe_simulate(s, NULL, NULL);
    ok(st == TSR_ERR_INVALID_ARG && strstr(tsr_last_error(), "stage 0"), "a repeated forward is rejected (%s)",
       tsr_last_error());
    tsr_pipe_schedule_destroy(&s);

    tsr_pipe_schedule_create_empty(2, 1, 1, &s);
    tsr_pipe_action_t f0 = {TSR_PIPE_FORWARD, 0, 0, -1}, r = {TSR_PIPE_RECV_ACT, 0, 0, 0};
    tsr_pipe_schedule_append(s, 0, &f0);
    tsr_pipe_schedule_append(s, 1, &r);
    st = tsr_pipe_simulate(s, NULL, NULL);
    ok(st == TSR_ERR_INVALID_ARG && strstr(tsr_last_error(), "deadlock: stage 1 waits at action 0"),
       "a receive that nothing sends is a deadlock of its stage (%s)", tsr_last_error());
    tsr_pipe_schedule_destroy(&s);
    ok(tsr_pipe_schedule_create(TSR_PIPE_INTERLEAVED, 4, 6, 2, &s) == TSR_ERR_INVALID_ARG && !s,
       "interleaved with m not a multiple of p is refused");
}

/* Smallest maximum over all splits of cost[0..L) into P non-empty contiguous parts. */
static double brute(const double *cost, int L, int P)
{
    if (P == 1) {
        double sum = 0;
        for (int i = 0; i < L; i++)
            sum += cost[i];
        return sum;
    }
    double best = -1, head = 0;
    for (int i = 1; i <= L - P + 1; i++) {
        head += cost[i - 1];
        double rest = brute(cost + i, L - i, P - 1), v = head > rest ? head : rest;
        if (best < 0 || v < best)
            best = v;
    }
    return best;
}

static void partition(void)
{
    int bad = 0, cases = 0, bad_bounds = 0;
    for (int trial = 0; trial < 300; trial++) {
        int L = 1 + (int)(tsr_rng_uniform(seed, 1, (uint64_t)trial) * 10);
        int P = 1 + (int)(tsr_rng_uniform(seed, 2, (uint64_t)trial) * L);
        if (P > L)
            P = L;
        double cost[16], got = 0, worst = 0;
        int bounds[17];
        for (int i = 0; i < L; i++)
            cost[i] = trial % 2 ? 0.1 + tsr_rng_uniform(seed, 3, (uint64_t)(trial * 16 + i)) /* all distinct */
                                : (double)(int)(1 + 9 * tsr_rng_uniform(seed, 3, (uint64_t)(trial * 16 + i))); /* ties */
        if (tsr_pipe_partition(cost, L, P, bounds, &got) != TSR_OK) {
            bad++;
            continue;
        }
        cases++;
        bad += fabs(got - brute(cost, L, P)) > 1e-9;
        for (int k = 0; k < P; k++) {
            double sum = 0;
            bad_bounds += bounds[k + 1] <= bounds[k];
            for (int i = bounds[k]; i < bounds[k + 1]; i++)
                sum += cost[i];
            worst = sum > worst ? sum : worst;
        }
        bad_bounds += bounds[0] != 0 || bounds[P] != L || fabs(worst - got) > 1e-9;
    }
    is_int(bad, 0, "partitioner reaches the brute-force optimum on %d random cost vectors (L <= 10)", cases);
    is_int(bad_bounds, 0, "partitioner's bounds are contiguous, non-empty and achieve the reported cost");
    int bounds[3];
    double cost[3] = {1, 1, 1};
    ok(tsr_pipe_partition(cost, 3, 4, bounds, NULL) == TSR_ERR_INVALID_ARG, "4 parts of 3 layers are refused");
}

static void svg(void)
{
    tsr_pipe_schedule_t s = NULL;
    tsr_pipe_sim_t r;
    char path[] = "/tmp/test_pipe_XXXXXX";
    int fd = mkstemp(path), good = 0;
    if (fd >= 0 && tsr_pipe_schedule_create(TSR_PIPE_INTERLEAVED, 4, 8, 2, &s) == TSR_OK &&
        tsr_pipe_simulate(s, NULL, &r) == TSR_OK) {
        good = tsr_pipe_write_svg(s, &r, path) == TSR_OK;
        FILE *f = fopen(path, "r");
        char head[8] = {0};
        int rects = 0;
        char line[512];
        if (f && fgets(head, sizeof head, f))
            while (fgets(line, sizeof line, f))
                rects += strstr(line, "<title>") != NULL;
        good = good && memcmp(head, "<svg", 4) == 0 && rects == 4 * 8 * 2 * 2;
        if (f)
            fclose(f);
        tsr_pipe_sim_free(&r);
    }
    ok(good, "SVG of interleaved p=4 m=8 v=2 has one block per F and B (128)");
    if (fd >= 0) {
        close(fd);
        unlink(path);
    }
    tsr_pipe_schedule_destroy(&s);
}

int main(int argc, char **argv)
{
    tap_init(&argc, &argv, "1");
    seed = getenv("TSR_TEST_SEED") ? strtoull(getenv("TSR_TEST_SEED"), NULL, 0) : (uint64_t)time(NULL);
    diag("seed %llu (TSR_TEST_SEED=%llu repeats it)", (unsigned long long)seed, (unsigned long long)seed);
    sweep();
    eager_matches();
    deadlock_detected();
    partition();
    svg();
    return tap_done();
}
