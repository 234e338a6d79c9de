// test_emu_layer_optim.cc: the launchers of lib/device/cuda_layer.cu (layernorm, whole and
// split into column blocks, GELU, add, strided axpby, bias gradient, embeddings of a
// vocabulary block, cross-entropy over vocabulary blocks) and lib/device/cuda_optim.cu
// (AdamW, SGD, sums, axpy, scale, casts, copy) run on the CPU under the CUDA emulation
// (tests/emu/cuda_emu.h), in float and bf16, against references computed here in double from the formulas of
// tessera/kernels.h and lib/device/cpu_*.c. Shapes reach both the vectorized and the scalar
// path of each launcher (aligned or not, sizes that are or are not whole packs), grid-stride
// loops, and the global-atomic variants; accumulated outputs start from nonzero values.
// Split kernels run on 1, 2 and 3 blocks, their statistics combined here as the callers'
// collectives would, against the reference of the whole row or vocabulary.
//
// Tolerances: max |got - ref| / max |ref| over an output (GELU's: at least a tenth of its
// inputs' scale), 1e-5 for fp32 outputs (bf16 inputs are rounded first and the reference uses
// the rounded values), 1e-2 for bf16 outputs; double sums to 1e-12 of the sum of the
// magnitudes; casts and scaling bit for bit.
#define TAP_NO_MPI 1 // one process, no MPI: see tests/tap.h
#include "tap.h"

#include "device/cuda_layer.h"
#include "device/cuda_optim.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <memory>
#include <vector>

static const double TOL_F32 = 1e-5, TOL_BF16 = 1e-2;
// Double sums: the rounding of a few dozen additions, against the sum of the magnitudes.
static const double TOL_SUM = 1e-12;

static uint64_t rng_state;
static uint32_t rand_u32(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_state >> 32);
}
static double uniform(double lo, double hi)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return lo + (hi - lo) * (double)(rng_state >> 11) / 9007199254740992.0;
}

static double seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

// bf16 by the bits, independently of the emulation's __nv_bfloat16: round to nearest even,
// NaN to the canonical 0x7fff (cpu_optim.c's tsr__bf16_from_f32).
static uint16_t bf16_round(float x)
{
    uint32_t u;
    if (isnan(x))
        return 0x7fffu;
    memcpy(&u, &x, sizeof u);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

static float bf16_value(uint16_t h)
{
    uint32_t u = (uint32_t)h << 16;
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

static uint32_t f32_bits(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return u;
}

static float f32_of_bits(uint32_t u)
{
    float x;
    memcpy(&x, &u, sizeof x);
    return x;
}

// n values of T `shift` elements past a 64-byte boundary: device buffers are aligned, and a
// shift that breaks 16-byte alignment sends a launcher down its scalar path. Nothing lies
// past the end, so that an address sanitizer sees a kernel reading beyond it.
template <typename T> class Aligned {
  public:
    explicit Aligned(size_t n, size_t shift = 0)
    {
        if (posix_memalign(&base_, 64, (n + shift) * sizeof(T) + 1) != 0) {
            fprintf(stderr, "test_emu_layer_optim: out of memory\n");
            exit(1);
        }
        p_ = static_cast<T *>(base_) + shift;
    }
    ~Aligned() { free(base_); }
    Aligned(const Aligned &) = delete;
    Aligned &operator=(const Aligned &) = delete;
    T *get() const { return p_; }
    T &operator[](size_t i) const { return p_[i]; }

  private:
    void *base_;
    T *p_;
};

// n activations of the type under test: float, or bf16 kept as its bits.
class Act {
  public:
    Act(bool bf16, size_t n, size_t shift = 0) : bf16_(bf16), n_(n), f_(bf16 ? 0 : n, shift), h_(bf16 ? n : 0, shift)
    {
    }
    void *data() const { return bf16_ ? static_cast<void *>(h_.get()) : static_cast<void *>(f_.get()); }
    size_t bytes() const { return n_ * (bf16_ ? 2 : 4); }
    double get(size_t i) const { return bf16_ ? bf16_value(h_[i]) : f_[i]; }
    // Stored as the type holds it: get(i) then returns the value a GPU would see.
    void set(size_t i, double v)
    {
        if (bf16_)
            h_[i] = bf16_round((float)v);
        else
            f_[i] = (float)v;
    }
    void fill(double lo, double hi)
    {
        for (size_t i = 0; i < n_; i++)
            set(i, uniform(lo, hi));
    }
    std::vector<double> values() const
    {
        std::vector<double> v(n_);
        for (size_t i = 0; i < n_; i++)
            v[i] = get(i);
        return v;
    }

  private:
    bool bf16_;
    size_t n_;
    Aligned<float> f_;
    Aligned<uint16_t> h_;
};

static std::vector<double> doubles(const float *p, size_t n) { return std::vector<double>(p, p + n); }

// max |got - ref| / max(max |ref|, at_least). Where ref is NaN, got must be NaN too; a NaN in
// got elsewhere is an infinite error.
static double rel_err(const std::vector<double> &got, const std::vector<double> &ref, double at_least = 0)
{
    double diff = 0, norm = at_least;
    for (size_t i = 0; i < ref.size(); i++) {
        if (isnan(ref[i])) {
            if (!isnan(got[i]))
                return INFINITY;
            continue;
        }
        double d = fabs(got[i] - ref[i]);
        if (!(d <= diff))
            diff = isnan(d) ? INFINITY : d;
        norm = fmax(norm, fabs(ref[i]));
    }
    return diff / (norm > 1e-30 ? norm : 1e-30);
}

static const char *tname(bool bf16) { return bf16 ? "bf16" : "f32"; }
static double tol(bool bf16) { return bf16 ? TOL_BF16 : TOL_F32; }

// One test point: the launcher returned cudaSuccess and `what` is within tol of its reference.
static void check(cudaError_t rc, double err, double tolerance, const char *name, const char *what)
{
    ok(rc == cudaSuccess && err <= tolerance, "%s: %s within %g (relative error %.2g)", name, what, tolerance, err);
    if (rc != cudaSuccess)
        diag("%s: the launch failed: %s (%s)", name, cudaGetErrorString(rc), tsr_emu::last_message());
}

// The first error of a sequence of launches.
static void keep_first(cudaError_t &first, cudaError_t rc)
{
    if (first == cudaSuccess)
        first = rc;
}

// ---------------------------------------------------------------------------------------
// Layer operations (cuda_layer.h).

// rows×cols; shift misaligns every activation pointer (the scalar path). Rows lie up to 3
// off zero, or (offset > 0) `offset` off zero, some 100 deviations for the largest spread:
// a one-pass variance in fp32 would lose every digit there, the two-pass one none.
static void test_layernorm(bool bf16, int rows, int cols, size_t shift, double offset = 0)
{
    char name[128];
    snprintf(name, sizeof name, "layernorm %s %dx%d%s%s", tname(bf16), rows, cols, shift ? " misaligned" : "",
             offset > 0 ? " far from zero" : "");
    const size_t n = (size_t)rows * cols;
    const float eps = 1e-5f;
    Act x(bf16, n, shift), gamma(bf16, cols, shift), beta(bf16, cols, shift), y(bf16, n, shift);
    for (int r = 0; r < rows; r++) {
        double at = offset > 0 ? offset : uniform(-1, 3), spread = uniform(0.5, 2);
        for (int c = 0; c < cols; c++)
            x.set((size_t)r * cols + c, at + spread * uniform(-1, 1));
    }
    gamma.fill(0.5, 1.5);
    beta.fill(-0.5, 0.5);
    for (size_t i = 0; i < n; i++)
        y.set(i, NAN);
    std::vector<float> mean(rows, NAN), rstd(rows, NAN);
    cudaError_t rc = tsr__cuda_layernorm_forward(bf16, rows, cols, x.data(), gamma.data(), beta.data(), eps,
                                                 y.data(), mean.data(), rstd.data(), 0);
    std::vector<double> yref(n), mref(rows), rref(rows);
    for (int r = 0; r < rows; r++) {
        const size_t o = (size_t)r * cols;
        double sum = 0, sq = 0;
        for (int c = 0; c < cols; c++)
            sum += x.get(o + c);
        double m = sum / cols;
        for (int c = 0; c < cols; c++)
            sq += (x.get(o + c) - m) * (x.get(o + c) - m);
        double rs = 1 / sqrt(sq / cols + eps);
        for (int c = 0; c < cols; c++)
            yref[o + c] = (x.get(o + c) - m) * rs * gamma.get(c) + beta.get(c);
        mref[r] = m;
        rref[r] = rs;
    }
    check(rc, rel_err(y.values(), yref), tol(bf16), name, "forward y");
    check(rc, rel_err(doubles(mean.data(), rows), mref), TOL_F32, name, "forward mean");
    check(rc, rel_err(doubles(rstd.data(), rows), rref), TOL_F32, name, "forward rstd");

    // Backward from the reference's statistics, as floats: dx, dgamma, dbeta accumulate (+=).
    Act dy(bf16, n, shift), dx0(bf16, n, shift);
    for (size_t i = 0; i < n; i++)
        dy.set(i, 0.2 + uniform(-1, 1));
    dx0.fill(-1, 1);
    std::vector<float> m32(mref.begin(), mref.end()), rs32(rref.begin(), rref.end()), dgamma0(cols), dbeta0(cols);
    for (int c = 0; c < cols; c++) {
        dgamma0[c] = (float)uniform(-1, 1);
        dbeta0[c] = (float)uniform(-1, 1);
    }
    std::vector<double> dxref = dx0.values(), dgref = doubles(dgamma0.data(), cols),
                        dbref = doubles(dbeta0.data(), cols);
    for (int r = 0; r < rows; r++) {
        const size_t o = (size_t)r * cols;
        const double m = m32[r], rs = rs32[r];
        double sg = 0, sgx = 0;
        for (int c = 0; c < cols; c++) {
            double xhat = (x.get(o + c) - m) * rs, g = dy.get(o + c) * gamma.get(c);
            sg += g;
            sgx += g * xhat;
            dgref[c] += dy.get(o + c) * xhat;
            dbref[c] += dy.get(o + c);
        }
        const double mg = sg / cols, mgx = sgx / cols;
        for (int c = 0; c < cols; c++) {
            double xhat = (x.get(o + c) - m) * rs, g = dy.get(o + c) * gamma.get(c);
            dxref[o + c] += rs * (g - mg - xhat * mgx);
        }
    }
    // All three outputs, then dx alone and dgamma, dbeta alone (the halves of a split backward),
    // the last also with gamma NULL: only dx reads it, so the weight half need not pass one.
    static const char *const which[4] = {"", " (dx only)", " (dgamma, dbeta only)",
                                         " (dgamma, dbeta only, gamma NULL)"};
    for (int k = 0; k < 4; k++) {
        Act dx(bf16, n, shift);
        for (size_t i = 0; i < n; i++)
            dx.set(i, dx0.get(i));
        std::vector<float> dgamma = dgamma0, dbeta = dbeta0;
        const bool want_dx = k < 2, want_dw = k != 1;
        rc = tsr__cuda_layernorm_backward(bf16, rows, cols, dy.data(), x.data(), k == 3 ? NULL : gamma.data(),
                                          m32.data(), rs32.data(), want_dx ? dx.data() : NULL,
                                          want_dw ? dgamma.data() : NULL, want_dw ? dbeta.data() : NULL, 0);
        char what[64];
        if (want_dx) {
            snprintf(what, sizeof what, "backward dx +=%s", which[k]);
            check(rc, rel_err(dx.values(), dxref), tol(bf16), name, what);
        }
        if (want_dw) {
            snprintf(what, sizeof what, "backward dgamma +=%s", which[k]);
            check(rc, rel_err(doubles(dgamma.data(), cols), dgref), TOL_F32, name, what);
            snprintf(what, sizeof what, "backward dbeta +=%s", which[k]);
            check(rc, rel_err(doubles(dbeta.data(), cols), dbref), TOL_F32, name, what);
        }
    }
}

// The layernorm of rows of `width` values split into column blocks of the given widths, as
// ranks holding a block each run it: stats of every block, summed over the blocks in block
// order in fp32 (the all-reduce), then apply on every block; the same for the backward
// (backward stats, summed, backward apply), and the parameter gradients of each block from
// layernorm_backward with dx NULL. Against the whole-row reference in double; every block
// must get the same bits of mean and rstd. shift misaligns every activation pointer.
//
// Rows lie up to 1.5 deviations off zero: enough that a one-pass fp32 variance would miss
// 1e-5. far > 0 puts every row's mean `far` deviations off zero, where the fp32 sums of the
// blocks' stats lose digits: rstd and y are then held to the bound tessera/kernels.h
// states, a relative error of 2^-23 mean^2/variance a block in the variance (half that in
// rstd), on top of the usual tolerance.
static void test_layernorm_split(bool bf16, int rows, const std::vector<int> &widths, size_t shift, double far = 0)
{
    char name[160];
    int width = 0, nb = (int)widths.size();
    char list[64] = "";
    for (int b = 0; b < nb; b++) {
        width += widths[b];
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%d", b ? "+" : "", widths[b]);
    }
    char off[48] = "";
    if (far > 0)
        snprintf(off, sizeof off, ", means %g deviations off zero", far);
    snprintf(name, sizeof name, "split layernorm %s %d rows of %d as %s%s%s", tname(bf16), rows, width, list,
             shift ? " misaligned" : "", off);
    const double far_tol = far > 0 ? nb * ldexp(1, -24) * far * far : 0;
    const float eps = 1e-5f;
    const size_t n = (size_t)rows * width;
    std::vector<double> x(n), gamma(width), beta(width), dy(n);
    for (int r = 0; r < rows; r++) {
        // uniform(-spread, spread) has deviation spread / sqrt(3).
        double spread = uniform(0.5, 2), offset = far > 0 ? far * spread / sqrt(3.0) : uniform(-1, 1.5);
        for (int c = 0; c < width; c++)
            x[(size_t)r * width + c] = offset + spread * uniform(-1, 1);
    }
    for (int c = 0; c < width; c++) {
        gamma[c] = uniform(0.5, 1.5);
        beta[c] = uniform(-0.5, 0.5);
    }
    for (double &v : dy)
        v = 0.2 + uniform(-1, 1);
    // Each block's x, gamma, beta, dy, dx (from random values), stored as the type holds them.
    std::vector<std::unique_ptr<Act>> bx, bg, bb, bdy, bdx, by;
    std::vector<std::vector<float>> bdg(nb), bdb(nb);
    std::vector<int> c0(nb);
    for (int b = 0, at = 0; b < nb; at += widths[b], b++) {
        const int w = widths[b];
        c0[b] = at;
        bx.emplace_back(new Act(bf16, (size_t)rows * w, shift));
        bdy.emplace_back(new Act(bf16, (size_t)rows * w, shift));
        bdx.emplace_back(new Act(bf16, (size_t)rows * w, shift));
        by.emplace_back(new Act(bf16, (size_t)rows * w, shift));
        bg.emplace_back(new Act(bf16, w, shift));
        bb.emplace_back(new Act(bf16, w, shift));
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < w; c++) {
                const size_t i = (size_t)r * w + c, g = (size_t)r * width + at + c;
                bx[b]->set(i, x[g]);
                bdy[b]->set(i, dy[g]);
                bdx[b]->set(i, uniform(-1, 1));
                by[b]->set(i, NAN);
            }
        for (int c = 0; c < w; c++) {
            bg[b]->set(c, gamma[at + c]);
            bb[b]->set(c, beta[at + c]);
            bdg[b].push_back((float)uniform(-1, 1));
            bdb[b].push_back((float)uniform(-1, 1));
        }
    }
    // The values the kernels see: x, gamma, beta, dy as stored, dx's initial values.
    std::vector<double> xs(n), dys(n), dx0(n), gs(width), bs(width);
    for (int b = 0; b < nb; b++)
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < widths[b]; c++) {
                const size_t i = (size_t)r * widths[b] + c, g = (size_t)r * width + c0[b] + c;
                xs[g] = bx[b]->get(i);
                dys[g] = bdy[b]->get(i);
                dx0[g] = bdx[b]->get(i);
                if (r == 0) {
                    gs[c0[b] + c] = bg[b]->get(c);
                    bs[c0[b] + c] = bb[b]->get(c);
                }
            }

    cudaError_t rc = cudaSuccess;
    std::vector<float> stats(3 * (size_t)rows, 0.0f), part(3 * (size_t)rows, NAN);
    for (int b = 0; b < nb; b++) {
        keep_first(rc, tsr__cuda_layernorm_stats(bf16, rows, widths[b], bx[b]->data(), part.data(), 0));
        for (size_t i = 0; i < part.size(); i++)
            stats[i] += part[i];
    }
    std::vector<std::vector<float>> mean(nb, std::vector<float>(rows, NAN)), rstd = mean;
    for (int b = 0; b < nb; b++)
        keep_first(rc, tsr__cuda_layernorm_apply(bf16, rows, widths[b], width, bx[b]->data(), bg[b]->data(),
                                                 bb[b]->data(), eps, stats.data(), by[b]->data(), mean[b].data(),
                                                 rstd[b].data(), 0));
    std::vector<double> yref(n), ygot(n), mref(rows), rref(rows);
    for (int r = 0; r < rows; r++) {
        const size_t o = (size_t)r * width;
        double sum = 0, sq = 0;
        for (int c = 0; c < width; c++)
            sum += xs[o + c];
        const double m = sum / width;
        for (int c = 0; c < width; c++)
            sq += (xs[o + c] - m) * (xs[o + c] - m);
        const double rs = 1 / sqrt(sq / width + eps);
        for (int c = 0; c < width; c++)
            yref[o + c] = (xs[o + c] - m) * rs * gs[c] + bs[c];
        mref[r] = m;
        rref[r] = rs;
    }
    bool same = true;
    for (int b = 0; b < nb; b++) {
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < widths[b]; c++)
                ygot[(size_t)r * width + c0[b] + c] = by[b]->get((size_t)r * widths[b] + c);
        same = same && memcmp(mean[b].data(), mean[0].data(), rows * sizeof(float)) == 0 &&
               memcmp(rstd[b].data(), rstd[0].data(), rows * sizeof(float)) == 0;
    }
    check(rc, rel_err(ygot, yref), tol(bf16) + far_tol, name, "apply y");
    check(rc, rel_err(doubles(mean[0].data(), rows), mref), TOL_F32, name, "apply mean");
    check(rc, rel_err(doubles(rstd[0].data(), rows), rref), TOL_F32 + far_tol, name, "apply rstd");
    ok(rc == cudaSuccess && same, "%s: every block writes the same mean and rstd bits", name);

    // Backward from the reference's statistics as floats, as test_layernorm does.
    std::vector<float> m32(mref.begin(), mref.end()), rs32(rref.begin(), rref.end());
    std::vector<double> dxref = dx0, dgref(width), dbref(width);
    for (int b = 0; b < nb; b++)
        for (int c = 0; c < widths[b]; c++) {
            dgref[c0[b] + c] = bdg[b][c];
            dbref[c0[b] + c] = bdb[b][c];
        }
    for (int r = 0; r < rows; r++) {
        const size_t o = (size_t)r * width;
        const double m = m32[r], rs = rs32[r];
        double sg = 0, sgx = 0;
        for (int c = 0; c < width; c++) {
            double xhat = (xs[o + c] - m) * rs, g = dys[o + c] * gs[c];
            sg += g;
            sgx += g * xhat;
            dgref[c] += dys[o + c] * xhat;
            dbref[c] += dys[o + c];
        }
        for (int c = 0; c < width; c++) {
            double xhat = (xs[o + c] - m) * rs, g = dys[o + c] * gs[c];
            dxref[o + c] += rs * (g - sg / width - xhat * sgx / width);
        }
    }
    rc = cudaSuccess;
    std::vector<float> bstats(2 * (size_t)rows, 0.0f), bpart(2 * (size_t)rows, NAN);
    for (int b = 0; b < nb; b++) {
        keep_first(rc, tsr__cuda_layernorm_backward_stats(bf16, rows, widths[b], bdy[b]->data(), bx[b]->data(),
                                                          bg[b]->data(), m32.data(), rs32.data(), bpart.data(), 0));
        for (size_t i = 0; i < bpart.size(); i++)
            bstats[i] += bpart[i];
    }
    for (int b = 0; b < nb; b++) {
        keep_first(rc, tsr__cuda_layernorm_backward_apply(bf16, rows, widths[b], width, bdy[b]->data(), bx[b]->data(),
                                                          bg[b]->data(), m32.data(), rs32.data(), bstats.data(),
                                                          bdx[b]->data(), 0));
        keep_first(rc, tsr__cuda_layernorm_backward(bf16, rows, widths[b], bdy[b]->data(), bx[b]->data(),
                                                    bg[b]->data(), m32.data(), rs32.data(), NULL, bdg[b].data(),
                                                    bdb[b].data(), 0));
    }
    std::vector<double> dxgot(n), dggot(width), dbgot(width);
    for (int b = 0; b < nb; b++) {
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < widths[b]; c++)
                dxgot[(size_t)r * width + c0[b] + c] = bdx[b]->get((size_t)r * widths[b] + c);
        for (int c = 0; c < widths[b]; c++) {
            dggot[c0[b] + c] = bdg[b][c];
            dbgot[c0[b] + c] = bdb[b][c];
        }
    }
    check(rc, rel_err(dxgot, dxref), tol(bf16), name, "backward apply dx +=");
    check(rc, rel_err(dggot, dgref), TOL_F32, name, "backward dgamma += (dx NULL)");
    check(rc, rel_err(dbgot, dbref), TOL_F32, name, "backward dbeta += (dx NULL)");
}

static double gelu(double v) { return 0.5 * v * (1 + tanh(sqrt(2 / M_PI) * (v + 0.044715 * v * v * v))); }

static double gelu_grad(double v)
{
    double t = tanh(sqrt(2 / M_PI) * (v + 0.044715 * v * v * v));
    return 0.5 * (1 + t) + 0.5 * v * sqrt(2 / M_PI) * (1 + 3 * 0.044715 * v * v) * (1 - t * t);
}

static double max_abs(const std::vector<double> &v)
{
    double m = 0;
    for (double x : v)
        m = fmax(m, fabs(x));
    return m;
}

// GELU forward and backward and add on n elements into separate outputs.
//
// GELU errors are measured against at least a tenth of the inputs' scale, as in
// tests/test_kernels_layer.c: GELU(x) is tiny below x = -4, where float finds it by
// cancellation (1 + tanh), and GELU'(x) crosses zero near -0.75, so with few elements the
// rounding of a value there would read as a large relative error.
static void test_maps(bool bf16, size_t n, size_t shift)
{
    char name[128];
    snprintf(name, sizeof name, "gelu/add %s n=%zu%s", tname(bf16), n, shift ? " misaligned" : "");
    Act x(bf16, n, shift), dy(bf16, n, shift), y(bf16, n, shift);
    x.fill(-5, 5);
    dy.fill(-1, 1);
    for (size_t i = 0; i < n; i++)
        y.set(i, NAN);
    std::vector<double> ref(n);
    const double x_floor = 0.1 * max_abs(x.values()), dy_floor = 0.1 * max_abs(dy.values());
    cudaError_t rc = tsr__cuda_gelu_forward(bf16, n, x.data(), y.data(), 0);
    for (size_t i = 0; i < n; i++)
        ref[i] = gelu(x.get(i));
    check(rc, rel_err(y.values(), ref, x_floor), tol(bf16), name, "gelu forward");
    rc = tsr__cuda_gelu_backward(bf16, n, x.data(), dy.data(), y.data(), 0);
    for (size_t i = 0; i < n; i++)
        ref[i] = dy.get(i) * gelu_grad(x.get(i));
    check(rc, rel_err(y.values(), ref, dy_floor), tol(bf16), name, "gelu backward");
    rc = tsr__cuda_add(bf16, n, x.data(), dy.data(), y.data(), 0);
    for (size_t i = 0; i < n; i++)
        ref[i] = x.get(i) + dy.get(i);
    check(rc, rel_err(y.values(), ref), tol(bf16), name, "add");
}

// The same maps with the output on an input, as tessera/kernels.h allows.
static void test_maps_in_place(bool bf16)
{
    char name[128];
    const size_t n = 1003;
    snprintf(name, sizeof name, "gelu/add %s n=%zu in place", tname(bf16), n);
    Act x(bf16, n), dy(bf16, n), b(bf16, n);
    x.fill(-5, 5);
    dy.fill(-1, 1);
    b.fill(-1, 1);
    std::vector<double> x0 = x.values(), dy0 = dy.values(), b0 = b.values(), ref(n);
    cudaError_t rc = tsr__cuda_gelu_backward(bf16, n, x.data(), dy.data(), dy.data(), 0);
    for (size_t i = 0; i < n; i++)
        ref[i] = dy0[i] * gelu_grad(x0[i]);
    check(rc, rel_err(dy.values(), ref, 0.1 * max_abs(dy0)), tol(bf16), name, "gelu backward, dx = dy");
    rc = tsr__cuda_gelu_forward(bf16, n, x.data(), x.data(), 0);
    for (size_t i = 0; i < n; i++)
        ref[i] = gelu(x0[i]);
    check(rc, rel_err(x.values(), ref, 0.1 * max_abs(x0)), tol(bf16), name, "gelu forward, y = x");
    std::vector<double> a0 = x.values();
    rc = tsr__cuda_add(bf16, n, x.data(), b.data(), x.data(), 0);
    for (size_t i = 0; i < n; i++)
        ref[i] = a0[i] + b0[i];
    check(rc, rel_err(x.values(), ref), tol(bf16), name, "add, y = a");
    a0 = x.values();
    rc = tsr__cuda_add(bf16, n, x.data(), b.data(), b.data(), 0);
    for (size_t i = 0; i < n; i++)
        ref[i] = a0[i] + b0[i];
    check(rc, rel_err(b.values(), ref), tol(bf16), name, "add, y = b");
}

static void test_maps_empty(bool bf16)
{
    cudaError_t rc = tsr__cuda_gelu_forward(bf16, 0, NULL, NULL, 0);
    keep_first(rc, tsr__cuda_gelu_backward(bf16, 0, NULL, NULL, NULL, 0));
    keep_first(rc, tsr__cuda_add(bf16, 0, NULL, NULL, NULL, 0));
    is_int(rc, cudaSuccess, "gelu/add %s n=0: no error, nothing touched (NULL pointers)", tname(bf16));
}

// db += column sums of rows×cols of dy (leading dimension ld; the columns past cols are NaN).
static void test_bias_grad(bool bf16, int rows, int cols, int ld, size_t shift)
{
    char name[128];
    snprintf(name, sizeof name, "bias_grad %s %dx%d ld %d%s", tname(bf16), rows, cols, ld,
             shift ? " misaligned" : "");
    Act dy(bf16, (size_t)rows * ld, shift);
    std::vector<double> ref(cols);
    std::vector<float> db(cols);
    for (int c = 0; c < cols; c++) {
        db[c] = (float)uniform(-1, 1);
        ref[c] = db[c];
    }
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < ld; c++) {
            dy.set((size_t)r * ld + c, c < cols ? 0.25 + uniform(-1, 1) : NAN);
            if (c < cols)
                ref[c] += dy.get((size_t)r * ld + c);
        }
    cudaError_t rc = tsr__cuda_bias_grad(bf16, rows, cols, dy.data(), ld, db.data(), 0);
    check(rc, rel_err(doubles(db.data(), cols), ref), TOL_F32, name, "db +=");
}

// dst = alpha src + beta dst over rows×cols (leading dimensions lds and ldd), src of one type
// and dst of another; the columns past cols hold NaN in src (must not be read) and a
// sentinel in dst (must stay). With beta 0, dst starts as NaN (must not be read). sshift and
// dshift misalign src and dst; in_place runs it with dst = src (then ldd = lds, one type).
static void test_axpby(bool sbf, bool dbf, int rows, int cols, int lds, int ldd, float beta, size_t sshift,
                       size_t dshift, bool in_place = false)
{
    char name[160];
    snprintf(name, sizeof name, "axpby_2d %s to %s %dx%d lds %d ldd %d beta %g%s%s%s", tname(sbf), tname(dbf), rows,
             cols, lds, ldd, (double)beta, sshift ? " src misaligned" : "", dshift ? " dst misaligned" : "",
             in_place ? " in place" : "");
    const float alpha = -1.25f;
    const double sentinel = 4096.0; // a bf16 value, so either type holds it
    Act src(sbf, (size_t)rows * lds, sshift), dst_own(dbf, in_place ? 0 : (size_t)rows * ldd, dshift);
    Act &dst = in_place ? src : dst_own;
    for (int r = 0; r < rows; r++)
        for (int c = 0; c < lds; c++)
            src.set((size_t)r * lds + c, c < cols ? uniform(-2, 2) : NAN);
    if (!in_place)
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < ldd; c++)
                dst.set((size_t)r * ldd + c, c >= cols ? sentinel : beta == 0.0f ? NAN : uniform(-2, 2));
    std::vector<double> s0 = src.values(), d0 = dst.values(), ref, got;
    cudaError_t rc = tsr__cuda_axpby_2d(rows, cols, alpha, sbf, src.data(), lds, beta, dbf, dst.data(), ldd, 0);
    size_t pad_changed = 0;
    for (int r = 0; r < rows; r++) {
        for (int c = 0; c < cols; c++) {
            const double sv = s0[(size_t)r * lds + c], dv = d0[(size_t)r * ldd + c];
            ref.push_back(alpha * sv + (beta == 0.0f ? 0.0 : beta * dv));
            got.push_back(dst.get((size_t)r * ldd + c));
        }
        for (int c = cols; c < ldd && !in_place; c++)
            pad_changed += dst.get((size_t)r * ldd + c) != sentinel;
    }
    check(rc, rel_err(got, ref), tol(dbf), name, beta == 0.0f ? "dst = alpha src (dst not read)"
                                                               : "dst = alpha src + beta dst");
    if (ldd > cols && !in_place)
        is_int(pad_changed, 0, "%s: columns cols..ldd-1 untouched", name);
}

// seqs sequences of T tokens of a vocabulary of `vocab`, C channels, the embedding of the
// block [v0, v0 + nv) (wte holds its nv rows); a few tokens lie just outside the block. shift
// misaligns wte, wpe, out and dout, tok_shift the tokens. use: 3 both tables, 1 wte alone
// (wpe NULL, dwpe NULL), 2 wpe alone.
static void test_embedding(bool bf16, int seqs, int T, int C, int vocab, int v0, int nv, size_t shift,
                           size_t tok_shift, int use = 3)
{
    char name[160];
    snprintf(name, sizeof name, "embedding %s %dx%d C=%d vocab %d block [%d, %d)%s%s%s", tname(bf16), seqs, T, C,
             vocab, v0, v0 + nv, use == 1 ? " wte only" : use == 2 ? " wpe only" : "", shift ? " misaligned" : "",
             tok_shift ? " tokens misaligned" : "");
    const bool te = use & 1, pe = use & 2;
    const size_t n = (size_t)seqs * T;
    Aligned<int32_t> tokens(n, tok_shift);
    for (size_t i = 0; i < n; i++)
        tokens[i] = (int32_t)(rand_u32() % (uint32_t)vocab);
    tokens[n - 1] = v0 + nv - 1; // the block's first and last rows, and its neighbours
    if (n > 1)
        tokens[0] = v0;
    if (n > 2 && v0 > 0)
        tokens[1] = v0 - 1;
    if (n > 3 && v0 + nv < vocab)
        tokens[2] = v0 + nv;
    auto inside = [&](size_t i) { return tokens[i] >= v0 && tokens[i] < v0 + nv; };
    Act wte(bf16, (size_t)nv * C, shift), wpe(bf16, (size_t)T * C, shift), out(bf16, n * C, shift);
    wte.fill(-1, 1);
    wpe.fill(-1, 1);
    for (size_t i = 0; i < n * C; i++)
        out.set(i, NAN);
    cudaError_t rc = tsr__cuda_embedding_forward(bf16, tokens.get(), seqs, T, C, v0, nv, te ? wte.data() : NULL,
                                                 pe ? wpe.data() : NULL, out.data(), 0);
    std::vector<double> ref(n * C);
    for (size_t i = 0; i < n; i++)
        for (int c = 0; c < C; c++)
            ref[i * C + c] = (te && inside(i) ? wte.get((size_t)(tokens[i] - v0) * C + c) : 0.0) +
                             (pe ? wpe.get((i % T) * C + c) : 0.0);
    check(rc, rel_err(out.values(), ref), tol(bf16), name, "forward (zeros outside the block)");

    Act dout(bf16, n * C, shift);
    dout.fill(-1, 1);
    std::vector<float> dwte((size_t)nv * C), dwpe((size_t)T * C);
    for (float &v : dwte)
        v = (float)uniform(-1, 1);
    for (float &v : dwpe)
        v = (float)uniform(-1, 1);
    const std::vector<float> dwte0 = dwte, dwpe0 = dwpe;
    std::vector<double> wref = doubles(dwte.data(), dwte.size()), pref = doubles(dwpe.data(), dwpe.size());
    for (size_t i = 0; i < n; i++)
        for (int c = 0; c < C; c++) {
            if (inside(i))
                wref[(size_t)(tokens[i] - v0) * C + c] += dout.get(i * C + c);
            pref[(i % T) * C + c] += dout.get(i * C + c);
        }
    float *gte = te ? dwte.data() : NULL, *gpe = pe ? dwpe.data() : NULL;
    rc = tsr__cuda_embedding_backward(bf16, tokens.get(), seqs, T, C, v0, nv, dout.data(), gte, gpe, 0);
    if (te)
        check(rc, rel_err(doubles(dwte.data(), dwte.size()), wref), TOL_F32, name,
              "backward dwte += (tokens of the block only; rows of absent tokens kept)");
    if (pe)
        check(rc, rel_err(doubles(dwpe.data(), dwpe.size()), pref), TOL_F32, name, "backward dwpe +=");
    // Documented as deterministic: a second run (threads started in the other order) gives the same bits.
    std::vector<float> dwte2 = dwte0, dwpe2 = dwpe0;
    rc = tsr__cuda_embedding_backward(bf16, tokens.get(), seqs, T, C, v0, nv, dout.data(),
                                      te ? dwte2.data() : NULL, pe ? dwpe2.data() : NULL, 0);
    ok(rc == cudaSuccess && memcmp(dwte2.data(), te ? dwte.data() : dwte0.data(), dwte.size() * sizeof(float)) == 0 &&
           memcmp(dwpe2.data(), pe ? dwpe.data() : dwpe0.data(), dwpe.size() * sizeof(float)) == 0,
       "%s: backward again gives the same bits", name);
}

// rows×V logits split into vocabulary blocks of the given widths, each in its own buffer of
// leading dimension width + pad (columns past the width hold a sentinel that must stay),
// as the ranks of a vocabulary-parallel group hold them: stats of every block, gathered in
// block order, then finish on every block. Against the whole-vocabulary reference in
// double. offset shifts every logit (90: exp would overflow without subtracting the row's
// maximum); shift misaligns every block; row r's target lies in block r mod nb (the last
// row's in the last column); bad_targets: row 1's target is V (in no block) and
// row 2's -1, which leave the loss without a target term and the gradient without a one-hot.
static void test_cross_entropy(bool bf16, int rows, const std::vector<int> &widths, int pad, size_t shift,
                               double offset, bool bad_targets)
{
    char name[160], list[64] = "";
    int V = 0, nb = (int)widths.size();
    for (int b = 0; b < nb; b++) {
        V += widths[b];
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%d", b ? "+" : "", widths[b]);
    }
    snprintf(name, sizeof name, "cross_entropy %s %dx%d as %s, ld width+%d%s%s%s", tname(bf16), rows, V, list, pad,
             shift ? " misaligned" : "", offset != 0 ? " logits near 90" : "",
             bad_targets ? " targets in no block" : "");
    const float dscale = 0.375f, sentinel = 4096.0f; // a bf16 value, so either type holds it
    std::vector<std::unique_ptr<Act>> blk;
    std::vector<int> v0(nb);
    std::vector<double> l0((size_t)rows * V); // the logits as stored
    for (int b = 0, at = 0; b < nb; at += widths[b], b++) {
        const int ld = widths[b] + pad;
        v0[b] = at;
        blk.emplace_back(new Act(bf16, (size_t)rows * ld, shift));
        for (int r = 0; r < rows; r++)
            for (int c = 0; c < ld; c++) {
                blk[b]->set((size_t)r * ld + c, c < widths[b] ? offset + uniform(-8, 8) : sentinel);
                if (c < widths[b])
                    l0[(size_t)r * V + at + c] = blk[b]->get((size_t)r * ld + c);
            }
    }
    Aligned<int32_t> targets(rows);
    for (int r = 0; r < rows; r++) { // row r's target in block r mod nb
        const int b = r % nb;
        targets[r] = (int32_t)(v0[b] + (int)(rand_u32() % (uint32_t)widths[b]));
    }
    targets[rows - 1] = V - 1; // the last column, where a scalar tail lives
    if (bad_targets) {
        targets[1] = V;
        targets[2] = -1;
    }
    cudaError_t rc = cudaSuccess;
    std::vector<float> stats(3 * (size_t)nb * rows, NAN);
    for (int b = 0; b < nb; b++)
        keep_first(rc, tsr__cuda_cross_entropy_stats(bf16, rows, widths[b], v0[b], blk[b]->data(), widths[b] + pad,
                                                     targets.get(), stats.data() + 3 * (size_t)b * rows, 0));
    std::vector<double> sref(stats.size()); // each block's (max, sum of exp, target logit)
    for (int b = 0; b < nb; b++)
        for (int r = 0; r < rows; r++) {
            const double *lr = l0.data() + (size_t)r * V + v0[b];
            double mx = -INFINITY, s = 0;
            for (int c = 0; c < widths[b]; c++)
                mx = fmax(mx, lr[c]);
            for (int c = 0; c < widths[b]; c++)
                s += exp(lr[c] - mx);
            const int t = targets[r] - v0[b];
            double *st = sref.data() + 3 * ((size_t)b * rows + r);
            st[0] = mx;
            st[1] = s;
            st[2] = t >= 0 && t < widths[b] ? lr[t] : 0.0;
        }
    check(rc, rel_err(doubles(stats.data(), stats.size()), sref), TOL_F32, name, "stats of every block");

    std::vector<std::vector<float>> losses(nb, std::vector<float>(rows, NAN));
    rc = cudaSuccess;
    for (int b = 0; b < nb; b++)
        keep_first(rc, tsr__cuda_cross_entropy_finish(bf16, rows, widths[b], v0[b], blk[b]->data(), widths[b] + pad,
                                                      targets.get(), nb, stats.data(), losses[b].data(), dscale, 0));
    std::vector<double> lref(rows), grad, gref, soft, softref;
    size_t pad_changed = 0;
    for (int r = 0; r < rows; r++) {
        const double *lr = l0.data() + (size_t)r * V;
        const int t = targets[r];
        double mx = -INFINITY, s = 0;
        for (int c = 0; c < V; c++)
            mx = fmax(mx, lr[c]);
        for (int c = 0; c < V; c++)
            s += exp(lr[c] - mx);
        const double lse = mx + log(s);
        lref[r] = lse - (t >= 0 && t < V ? lr[t] : 0.0);
        for (int b = 0; b < nb; b++) {
            const int ld = widths[b] + pad;
            for (int c = 0; c < widths[b]; c++) {
                const double p = exp(lr[v0[b] + c] - lse), g = blk[b]->get((size_t)r * ld + c);
                grad.push_back(g);
                gref.push_back(dscale * (p - (v0[b] + c == t ? 1.0 : 0.0)));
                if (v0[b] + c != t) { // the softmax alone, far smaller than the one-hot term when V is large
                    soft.push_back(g);
                    softref.push_back(dscale * p);
                }
            }
            for (int c = widths[b]; c < ld; c++)
                pad_changed += blk[b]->get((size_t)r * ld + c) != sentinel;
        }
    }
    bool same = true;
    for (int b = 1; b < nb; b++)
        same = same && memcmp(losses[b].data(), losses[0].data(), rows * sizeof(float)) == 0;
    check(rc, rel_err(doubles(losses[0].data(), rows), lref), TOL_F32, name,
          bad_targets ? "losses (no target term where the target is in no block)" : "losses");
    if (nb > 1)
        ok(rc == cudaSuccess && same, "%s: every block writes the same loss bits", name);
    check(rc, rel_err(grad, gref), tol(bf16), name, "dscale (softmax - onehot)");
    check(rc, rel_err(soft, softref), tol(bf16), name, "dscale softmax off the targets");
    if (pad > 0)
        is_int(pad_changed, 0, "%s: columns past each block's width untouched", name);
}

// ---------------------------------------------------------------------------------------
// Optimizer updates, reductions, casts (cuda_optim.h).

enum work_kind { WORK_NONE, WORK_F32, WORK_BF16 };
static const char *work_name(work_kind w)
{
    return w == WORK_F32 ? "f32 work" : w == WORK_BF16 ? "bf16 work" : "no work";
}

// work (n values of the kind) == p converted: bit for bit.
static size_t work_mismatches(work_kind w, size_t n, const float *p, const Aligned<float> &wf,
                              const Aligned<uint16_t> &wh)
{
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        bad += w == WORK_F32 ? f32_bits(wf[i]) != f32_bits(p[i]) : w == WORK_BF16 ? wh[i] != bf16_round(p[i]) : 0;
    return bad;
}

struct optim_bufs {
    Aligned<float> p, g, m, v, wf;
    Aligned<uint16_t> wh;
    optim_bufs(size_t n, size_t shift, work_kind w, size_t work_shift)
        : p(n, shift), g(n, shift), m(n, shift), v(n, shift), wf(w == WORK_F32 ? n : 0, work_shift),
          wh(w == WORK_BF16 ? n : 0, work_shift)
    {
    }
};

// steps AdamW updates of n values from m = v = 0, t = 1, 2, ... (bias corrections 1 - beta^t),
// against the formula of tessera/kernels.h in double.
static void test_adamw(size_t n, size_t shift, work_kind w, size_t work_shift, int steps)
{
    char name[128];
    snprintf(name, sizeof name, "adamw n=%zu%s, %s%s, %d step%s", n, shift ? " misaligned" : "", work_name(w),
             work_shift ? " misaligned" : "", steps, steps > 1 ? "s" : "");
    optim_bufs b(n, shift, w, work_shift);
    std::vector<double> pr(n), mr(n, 0.0), vr(n, 0.0);
    for (size_t i = 0; i < n; i++) {
        b.p[i] = (float)uniform(-0.5, 0.5);
        pr[i] = b.p[i];
        b.m[i] = b.v[i] = 0.0f;
    }
    const float lr = 0.05f, beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, wd = 0.1f, coef = 0.5f;
    cudaError_t rc = cudaSuccess;
    for (int t = 1; t <= steps; t++) {
        for (size_t i = 0; i < n; i++) // a few gradients far smaller than the rest
            b.g[i] = (float)(uniform(-1, 1) * (i % 7 == 3 ? 1e-3 : 1.0));
        const float bc1 = 1.0f - powf(beta1, (float)t), bc2 = 1.0f - powf(beta2, (float)t);
        // As kernels_optim.c derives them from tsr_adamw_params_t.
        const tsr__cuda_adamw_t a = {beta1, beta2, eps, coef, lr / bc1, sqrtf(bc2), 1.0f - lr * wd};
        keep_first(rc, tsr__cuda_adamw(n, b.p.get(), b.g.get(), b.m.get(), b.v.get(), &a,
                                       w == WORK_F32 ? b.wf.get() : NULL, w == WORK_BF16 ? b.wh.get() : NULL, 0));
        for (size_t i = 0; i < n; i++) {
            double g = (double)b.g[i] * coef;
            mr[i] = beta1 * mr[i] + (1 - (double)beta1) * g;
            vr[i] = beta2 * vr[i] + (1 - (double)beta2) * g * g;
            pr[i] = pr[i] * (1 - (double)lr * wd) - (double)lr / bc1 * mr[i] / (sqrt(vr[i]) / sqrt((double)bc2) + eps);
        }
    }
    // Against p's starting scale (0.5): a p that ends near zero has lost the digits it had.
    check(rc, rel_err(doubles(b.p.get(), n), pr, 0.5), TOL_F32, name, "p");
    check(rc, rel_err(doubles(b.m.get(), n), mr), TOL_F32, name, "m");
    check(rc, rel_err(doubles(b.v.get(), n), vr), TOL_F32, name, "v");
    if (w != WORK_NONE)
        is_int(work_mismatches(w, n, b.p.get(), b.wf, b.wh), 0, "%s: work is p converted, bit for bit", name);
}

// steps SGD updates with (m from 0) or without momentum.
static void test_sgd(size_t n, size_t shift, bool momentum, work_kind w, size_t work_shift, int steps)
{
    char name[128];
    snprintf(name, sizeof name, "sgd n=%zu%s, %s, %s%s, %d step%s", n, shift ? " misaligned" : "",
             momentum ? "momentum" : "no momentum", work_name(w), work_shift ? " misaligned" : "", steps,
             steps > 1 ? "s" : "");
    optim_bufs b(n, shift, w, work_shift);
    std::vector<double> pr(n), mr(n, 0.0);
    for (size_t i = 0; i < n; i++) {
        b.p[i] = (float)uniform(-0.5, 0.5);
        pr[i] = b.p[i];
        b.m[i] = 0.0f;
    }
    const float lr = 0.05f, mu = 0.9f, wd = 0.1f, coef = 0.5f;
    cudaError_t rc = cudaSuccess;
    for (int t = 1; t <= steps; t++) {
        for (size_t i = 0; i < n; i++)
            b.g[i] = (float)uniform(-1, 1);
        keep_first(rc, tsr__cuda_sgd(n, b.p.get(), b.g.get(), momentum ? b.m.get() : NULL, lr, mu, 1.0f - lr * wd,
                                     coef, w == WORK_F32 ? b.wf.get() : NULL, w == WORK_BF16 ? b.wh.get() : NULL, 0));
        for (size_t i = 0; i < n; i++) {
            double d = (double)b.g[i] * coef;
            if (momentum) {
                mr[i] = mu * mr[i] + d;
                d = mr[i];
            }
            pr[i] = pr[i] * (1 - (double)lr * wd) - lr * d;
        }
    }
    // Against p's starting scale (0.5): a p that ends near zero has lost the digits it had.
    check(rc, rel_err(doubles(b.p.get(), n), pr, 0.5), TOL_F32, name, "p");
    if (momentum)
        check(rc, rel_err(doubles(b.m.get(), n), mr), TOL_F32, name, "m");
    if (w != WORK_NONE)
        is_int(work_mismatches(w, n, b.p.get(), b.wf, b.wh), 0, "%s: work is p converted, bit for bit", name);
}

// sumsq and sum of n floats, from an aligned pointer and (when shifted) from a misaligned copy
// of the same values, which must give the same bits (the packs do not depend on alignment).
static void test_reduce(size_t n, bool also_misaligned)
{
    Aligned<float> x(n), xs(n, 1);
    for (size_t i = 0; i < n; i++)
        x[i] = xs[i] = (float)(0.25 + uniform(-1, 1));
    long double sum = 0, sumsq = 0, mag = 0;
    for (size_t i = 0; i < n; i++) {
        sum += x[i];
        sumsq += (long double)x[i] * x[i];
        mag += fabsl(x[i]);
    }
    std::vector<double> scratch(TSR__CUDA_REDUCE_SCRATCH);
    for (int square = 0; square < 2; square++) {
        const char *what = square ? "sumsq" : "sum";
        const double ref = (double)(square ? sumsq : sum), scale = (double)(square ? sumsq : mag);
        double out = NAN, out2 = NAN;
        for (double &s : scratch)
            s = NAN;
        cudaError_t rc = (square ? tsr__cuda_sumsq : tsr__cuda_sum)(x.get(), n, scratch.data(), &out, 0);
        double err = fabs(out - ref) / scale;
        ok(rc == cudaSuccess && err <= TOL_SUM, "%s of %zu floats: within %g of the sum of magnitudes (%.2g)", what,
           n, TOL_SUM, err);
        if (!also_misaligned)
            continue;
        rc = (square ? tsr__cuda_sumsq : tsr__cuda_sum)(xs.get(), n, scratch.data(), &out2, 0);
        ok(rc == cudaSuccess && memcmp(&out, &out2, sizeof out) == 0,
           "%s of %zu floats from a misaligned pointer (scalar loads): the same bits", what, n);
    }
}

static void test_axpy(size_t n, size_t shift)
{
    char name[128];
    snprintf(name, sizeof name, "axpy n=%zu%s", n, shift ? " misaligned" : "");
    const float alpha = -0.75f;
    Aligned<float> x(n, shift), y(n);
    std::vector<double> ref(n);
    for (size_t i = 0; i < n; i++) {
        x[i] = (float)uniform(-1, 1);
        y[i] = (float)uniform(-1, 1);
        ref[i] = y[i] + (double)alpha * x[i];
    }
    cudaError_t rc = tsr__cuda_axpy(n, alpha, x.get(), y.get(), 0);
    check(rc, rel_err(doubles(y.get(), n), ref), TOL_F32, name, "y += alpha x");
}

// x *= alpha: the product rounded to float, then (bf16) to bf16, bit for bit.
static void test_scale(bool bf16, size_t n, size_t shift)
{
    const float alpha = 0.3f;
    cudaError_t rc;
    size_t bad = 0;
    if (bf16) {
        Aligned<uint16_t> x(n, shift), x0(n);
        for (size_t i = 0; i < n; i++)
            x[i] = x0[i] = bf16_round((float)uniform(-100, 100));
        rc = tsr__cuda_scale_bf16(x.get(), n, alpha, 0);
        for (size_t i = 0; i < n; i++) // a bf16 times a float is exact in double
            bad += x[i] != bf16_round((float)((double)bf16_value(x0[i]) * alpha));
    } else {
        Aligned<float> x(n, shift), x0(n);
        for (size_t i = 0; i < n; i++)
            x[i] = x0[i] = (float)uniform(-100, 100);
        rc = tsr__cuda_scale_f32(x.get(), n, alpha, 0);
        for (size_t i = 0; i < n; i++)
            bad += f32_bits(x[i]) != f32_bits((float)((double)x0[i] * alpha));
    }
    ok(rc == cudaSuccess && bad == 0, "scale %s n=%zu%s: x alpha rounded once, bit for bit (%zu differ)",
       tname(bf16), n, shift ? " misaligned" : "", bad);
}

// Every bf16 value to f32: exact.
static void test_cast_bf16_f32(size_t shift)
{
    const size_t all = 65536;
    Aligned<uint16_t> h(all, shift);
    Aligned<float> f(all, shift);
    for (size_t i = 0; i < all; i++) {
        h[i] = (uint16_t)i;
        f[i] = NAN;
    }
    cudaError_t rc = tsr__cuda_cast_bf16_f32(h.get(), f.get(), all, 0);
    size_t bad = 0;
    for (size_t i = 0; i < all; i++)
        bad += f32_bits(f[i]) != (uint32_t)i << 16;
    ok(rc == cudaSuccess && bad == 0, "cast bf16 to f32%s: all 65536 values exact (%zu differ)",
       shift ? " misaligned" : "", bad);
}

// f32 to bf16 of special values and random bit patterns, n in all: rounded to nearest even, a
// NaN stays a NaN.
static void test_cast_f32_bf16(size_t n, size_t shift)
{
    static const uint32_t special[] = {
        0x00000000u, 0x80000000u, 0x7f800000u, 0xff800000u, 0x7fc00000u, 0xffc00001u, 0x7f800001u,
        0x7f7fffffu, // the largest float rounds up to infinity
        0x7f7f7fffu, 0x7f7f8000u, 0x3f808000u, 0x3f818000u, 0x3f808001u, 0xbf818000u, // ties to even
        0x00000001u, 0x00008000u, 0x00018000u, 0x007fffffu, 0x00800000u, 0x0000ffffu};
    const size_t ns = sizeof special / sizeof special[0];
    n = n < ns ? ns : n;
    Aligned<float> src(n, shift);
    Aligned<uint16_t> dst(n, shift);
    for (size_t i = 0; i < n; i++) {
        src[i] = f32_of_bits(i < ns ? special[i] : rand_u32());
        dst[i] = 0x1234;
    }
    cudaError_t rc = tsr__cuda_cast_f32_bf16(src.get(), dst.get(), n, 0);
    size_t bad = 0;
    for (size_t i = 0; i < n; i++)
        bad += isnan(src[i]) ? !isnan(bf16_value(dst[i])) : dst[i] != bf16_round(src[i]);
    ok(rc == cudaSuccess && bad == 0,
       "cast f32 to bf16 of %zu values%s (specials, ties, overflow, random bits): rounded to nearest even (%zu differ)",
       n, shift ? " misaligned" : "", bad);
}

static void test_copy(void)
{
    const size_t bytes = 1000003;
    std::vector<unsigned char> a(bytes + 1), b(bytes + 1, 0xee);
    for (unsigned char &c : a)
        c = (unsigned char)rand_u32();
    cudaError_t rc = tsr__cuda_copy(b.data() + 1, a.data(), bytes, 0);
    ok(rc == cudaSuccess && memcmp(b.data() + 1, a.data(), bytes) == 0 && b[0] == 0xee, "copy of %zu bytes", bytes);
    rc = tsr__cuda_copy(b.data(), b.data(), bytes, 0);
    keep_first(rc, tsr__cuda_copy(b.data(), a.data(), 0, 0));
    ok(rc == cudaSuccess && b[0] == 0xee && memcmp(b.data() + 1, a.data(), bytes) == 0,
       "copy onto itself and of 0 bytes: no error, nothing changed");
}

static void test_optim_empty(void)
{
    const tsr__cuda_adamw_t a = {0.9f, 0.95f, 1e-8f, 1.0f, 1.0f, 1.0f, 1.0f};
    cudaError_t rc = tsr__cuda_adamw(0, NULL, NULL, NULL, NULL, &a, NULL, NULL, 0);
    keep_first(rc, tsr__cuda_sgd(0, NULL, NULL, NULL, 0.1f, 0.9f, 1.0f, 1.0f, NULL, NULL, 0));
    keep_first(rc, tsr__cuda_axpy(0, 2.0f, NULL, NULL, 0));
    keep_first(rc, tsr__cuda_scale_f32(NULL, 0, 2.0f, 0));
    keep_first(rc, tsr__cuda_scale_bf16(NULL, 0, 2.0f, 0));
    keep_first(rc, tsr__cuda_cast_f32_bf16(NULL, NULL, 0, 0));
    keep_first(rc, tsr__cuda_cast_bf16_f32(NULL, NULL, 0, 0));
    is_int(rc, cudaSuccess, "adamw, sgd, axpy, scale, casts of 0 values: no error, nothing touched (NULL pointers)");
}

int main(int argc, char **argv)
{
    tap_init(&argc, &argv, "1");
    rng_state = tap_seed();
    const double t0 = seconds();

    // Grid-stride sizes: map kernels run at most 2048 blocks of 256 threads, the optimizer's
    // element-wise kernels 4096 blocks of 256 (a thread per pack of 4, or per value).
    const size_t map_big = (size_t)2048 * 256 * 4 + 4 * 1000 + 3, map_big_scalar = (size_t)2048 * 256 + 1001;
    const size_t opt_big = (size_t)4096 * 256 * 4 + 4 * 100 + 3, opt_big_scalar = (size_t)4096 * 256 + 999;

    for (int bf16 = 0; bf16 < 2; bf16++) {
        test_layernorm(bf16, 1, 1, 0);
        test_layernorm(bf16, 1, 300, 0);
        test_layernorm(bf16, 3, 33, 0);      // not whole packs: scalar
        test_layernorm(bf16, 37, 256, 0);    // vectorized; rows not a multiple of the block's 8
        test_layernorm(bf16, 5, 1000, 0);    // several passes of a warp over a row
        test_layernorm(bf16, 9, 64, 1);      // misaligned: scalar
        test_layernorm(bf16, 4200, 24, 0);   // more than 512 blocks of rows: grid-stride backward
        test_layernorm(bf16, 3, 6144, 0);    // 48 KiB of column sums: the shared-memory backward
        test_layernorm(bf16, 3, 6200, 0);    // more: the global-atomic backward
        test_layernorm(bf16, 2, 6150, 0);    // the same, scalar
        test_layernorm(bf16, 16, 768, 0, 30.0);
        test_layernorm(bf16, 5, 1000, 1, 30.0);

        test_layernorm_split(bf16, 5, {300}, 0);  // one block: the whole row
        test_layernorm_split(bf16, 5, {256, 64}, 0);
        test_layernorm_split(bf16, 7, {512, 200, 56}, 0);
        test_layernorm_split(bf16, 7, {100, 37, 163}, 0); // blocks that are not whole packs: scalar
        test_layernorm_split(bf16, 6, {64, 64, 64}, 1);   // misaligned: scalar
        test_layernorm_split(bf16, 300, {96, 96}, 0);     // rows over many blocks of threads
        test_layernorm_split(bf16, 100, {96, 96, 96}, 0, 10.0);

        test_maps(bf16, 1, 0);
        test_maps(bf16, 5, 0);
        test_maps(bf16, 1003, 0);
        test_maps(bf16, 1003, 1);
        test_maps(bf16, map_big, 0);
        test_maps(bf16, map_big_scalar, 1);
        test_maps_in_place(bf16);
        test_maps_empty(bf16);

        test_bias_grad(bf16, 1, 1, 1, 0);
        test_bias_grad(bf16, 1, 300, 301, 0);
        test_bias_grad(bf16, 5, 37, 41, 0);
        test_bias_grad(bf16, 300, 64, 64, 0);     // 3 row shares: atomics
        test_bias_grad(bf16, 1000, 200, 208, 0);
        test_bias_grad(bf16, 1000, 200, 203, 0);  // odd ld: scalar
        test_bias_grad(bf16, 7, 1000, 1000, 0);   // several column blocks, one row share: plain adds
        test_bias_grad(bf16, 64, 48, 48, 1);      // misaligned
        test_bias_grad(bf16, 140000, 5, 5, 0);    // more rows than 1024 row shares cover: grid-stride

        test_embedding(bf16, 1, 1, 1, 1, 0, 1, 0, 0);
        test_embedding(bf16, 3, 17, 37, 11, 0, 11, 0, 0);
        test_embedding(bf16, 2, 64, 64, 50, 0, 50, 0, 0);
        test_embedding(bf16, 4, 200, 300, 7, 0, 7, 0, 0);    // ~115 occurrences a token; several passes over C
        test_embedding(bf16, 2, 300, 48, 5000, 0, 5000, 0, 1); // nearly all distinct; tokens misaligned
        test_embedding(bf16, 1, 700, 16, 3, 0, 3, 1, 0);     // misaligned rows
        test_embedding(bf16, 3, 17, 37, 11, 3, 5, 0, 0);     // a block: tokens outside it
        test_embedding(bf16, 4, 200, 300, 20, 6, 7, 0, 0);   // many occurrences, a third of them in the block
        test_embedding(bf16, 2, 300, 48, 5000, 2500, 1000, 0, 1);
        test_embedding(bf16, 1, 700, 16, 9, 3, 3, 1, 0);     // misaligned, a block
        test_embedding(bf16, 2, 64, 64, 50, 10, 20, 0, 0, 1); // wte alone
        test_embedding(bf16, 2, 64, 64, 50, 0, 50, 0, 0, 2);  // wpe alone
        test_embedding(bf16, 3, 31, 13, 50, 40, 10, 1, 0, 1); // wte alone (the last block), scalar
        test_embedding(bf16, 3, 31, 13, 50, 0, 50, 1, 0, 2);  // wpe alone, scalar

        test_cross_entropy(bf16, 1, {1}, 0, 0, 0, false);
        test_cross_entropy(bf16, 1, {777}, 7, 0, 0, false);
        test_cross_entropy(bf16, 3, {50}, 3, 0, 0, false);   // odd ld: scalar
        test_cross_entropy(bf16, 4, {37}, 3, 0, 0, false);   // packs, then a tail below V
        test_cross_entropy(bf16, 5, {1000}, 8, 0, 0, false);
        test_cross_entropy(bf16, 2, {50257}, 47, 0, 0, false); // GPT-2: V 50257, ld 50304
        test_cross_entropy(bf16, 2, {25000, 25257}, 47, 0, 0, false); // ld 25047 (scalar) and 25304
        test_cross_entropy(bf16, 2, {16384, 17000, 16873}, 47, 0, 0, false);
        test_cross_entropy(bf16, 3, {64}, 0, 1, 0, false);   // misaligned: scalar
        test_cross_entropy(bf16, 3, {48, 52}, 4, 1, 0, false);
        test_cross_entropy(bf16, 3, {37, 41, 22}, 1, 0, 0, false); // odd ld
        test_cross_entropy(bf16, 3, {3000}, 0, 0, 90, false);
        test_cross_entropy(bf16, 3, {1000, 1200, 800}, 0, 0, 90, false);
        test_cross_entropy(bf16, 4, {100}, 4, 0, 0, true);
        test_cross_entropy(bf16, 4, {40, 60}, 4, 0, 0, true);
        test_cross_entropy(bf16, 5, {30, 30, 40}, 0, 0, 0, true);
    }

    for (int sbf = 0; sbf < 2; sbf++)
        for (int dbf = 0; dbf < 2; dbf++) {
            test_axpby(sbf, dbf, 3, 40, 40, 40, 0.5f, 0, 0);    // contiguous: vectorized
            test_axpby(sbf, dbf, 3, 40, 40, 40, 0.0f, 0, 0);
            test_axpby(sbf, dbf, 5, 37, 41, 45, 0.5f, 0, 0);    // odd sizes: scalar
            test_axpby(sbf, dbf, 4, 64, 72, 80, -2.0f, 0, 0);   // strided, vectorized
            test_axpby(sbf, dbf, 4, 64, 72, 80, 0.5f, 1, 0);    // src misaligned: scalar
            test_axpby(sbf, dbf, 4, 64, 72, 80, 0.0f, 0, 1);    // dst misaligned: scalar
            test_axpby(sbf, dbf, 4, 64, 66, 64, 0.5f, 0, 0);    // src rows misaligned by lds: scalar
            test_axpby(sbf, dbf, 4, 64, 64, 66, 0.5f, 0, 0);    // dst rows misaligned by ldd: scalar
            test_axpby(sbf, dbf, 1100, 4000, 4008, 4016, 1.0f, 0, 0); // more packs than threads: grid-stride
        }
    for (int bf16 = 0; bf16 < 2; bf16++) {
        test_axpby(bf16, bf16, 3, 40, 48, 48, 0.75f, 0, 0, true);
        test_axpby(bf16, bf16, 3, 37, 37, 37, 0.0f, 1, 1, true);
    }

    for (int w = WORK_NONE; w <= WORK_BF16; w++) {
        test_adamw(1, 0, (work_kind)w, 0, 3);
        test_adamw(3, 0, (work_kind)w, 0, 3);
        test_adamw(1029, 0, (work_kind)w, 0, 3);
        test_adamw(1000, 1, (work_kind)w, 0, 3);
        test_sgd(1029, 0, true, (work_kind)w, 0, 3);
        test_sgd(1000, 1, true, (work_kind)w, 0, 3);
        test_sgd(1029, 0, false, (work_kind)w, 0, 2);
    }
    test_adamw(1024, 0, WORK_BF16, 1, 2); // only the work copy misaligned: scalar
    test_sgd(1024, 0, true, WORK_F32, 1, 2);
    test_adamw(opt_big, 0, WORK_BF16, 0, 2);
    test_adamw(opt_big_scalar, 1, WORK_F32, 0, 2);
    test_sgd(opt_big, 0, true, WORK_BF16, 0, 1);
    test_sgd(opt_big_scalar, 1, false, WORK_NONE, 0, 1);

    test_reduce(1, false);
    test_reduce(5, true);
    test_reduce(1023, false);
    test_reduce((size_t)TSR__CUDA_REDUCE_BLOCKS * 256 * 4 + 7, false); // one more pack than threads
    test_reduce(3000003, true);

    test_axpy(1, 0);
    test_axpy(1003, 0);
    test_axpy(1003, 1);
    test_axpy(opt_big, 0);
    test_axpy(opt_big_scalar, 1);
    for (int bf16 = 0; bf16 < 2; bf16++) {
        test_scale(bf16, 7, 0);
        test_scale(bf16, 1003, 0);
        test_scale(bf16, 1003, 1);
        test_scale(bf16, opt_big, 0);
    }
    test_cast_bf16_f32(0);
    test_cast_bf16_f32(1);
    test_cast_f32_bf16(100003, 0);
    test_cast_f32_bf16(1003, 1);
    test_cast_f32_bf16(opt_big, 0);
    test_copy();
    test_optim_empty();

    diag("ran in %.1f s", seconds() - t0);
    return tap_done();
}
