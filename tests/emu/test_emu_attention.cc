// test_emu_attention.cc: the CUDA launchers of lib/device/cuda_attention.cu (causal flash
// attention: the wmma bf16 kernels and the fp32 CUDA-core ones) and of cuda_gemm_epilogue.cu
// (scale_bias, gelu, dgelu), run under the CPU emulation (tests/emu/cuda_emu.h) against
// references computed here in double from the formulas of tessera/kernels.h, on the inputs
// as the GPU sees them (rounded to bf16 first for bf16).
//
// Attention: q, k, v rows of seqs T tokens with leading dimension ld_in, head h in columns
// [h hd, (h+1) hd); o likewise with ld_o; lse[(s heads + h) T + t] (fp32). The backward
// takes the forward's own o and lse, as training does; its reference takes
// delta = rowsum(dO∘o) from that o (what the kernels are given) and the probabilities from
// the exact scores. Every buffer is checked to be written exactly where it should be: the
// outputs start as 0x7f bytes (a huge finite value), input padding is NaN.
#define TAP_NO_MPI 1 // one process, no MPI: see tests/tap.h
#include "tap.h"

#include "device/cuda_attention.h"
#include "device/cuda_gemm_epilogue.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <memory>
#include <vector>

static uint64_t rng_state;
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

static const char *dt_name(tsr_dtype_t dt) { return dt == TSR_DTYPE_BF16 ? "bf16" : "f32"; }

// Tolerances of the brief: max|err| / max|ref| over an array.
static double tol_of(tsr_dtype_t dt) { return dt == TSR_DTYPE_BF16 ? 1e-2 : 1e-5; }

// Device memory stand-in: n elements of dt (f32 or bf16), 64-byte aligned as cudaMalloc's are.
class Buf
{
  public:
    Buf(tsr_dtype_t dt, size_t n) : dt_(dt), n_(n)
    {
        if (posix_memalign(&p_, 64, bytes() ? bytes() : 1) != 0)
            abort();
    }
    ~Buf() { free(p_); }
    Buf(const Buf &) = delete;
    Buf &operator=(const Buf &) = delete;

    size_t size() const { return n_; }
    size_t esize() const { return dt_ == TSR_DTYPE_BF16 ? 2 : 4; }
    size_t bytes() const { return n_ * esize(); }
    void *at(size_t i) const { return (char *)p_ + i * esize(); }
    const unsigned char *raw() const { return (const unsigned char *)p_; }
    void fill_bytes(int b) { memset(p_, b, bytes()); }

    float get(size_t i) const
    {
        if (dt_ == TSR_DTYPE_BF16) {
            uint16_t h;
            memcpy(&h, at(i), 2);
            uint32_t u = (uint32_t)h << 16;
            float f;
            memcpy(&f, &u, 4);
            return f;
        }
        float f;
        memcpy(&f, at(i), 4);
        return f;
    }
    // Stores v as the element type holds it (bf16: rounded to nearest even) and returns that.
    float set(size_t i, float v)
    {
        if (dt_ == TSR_DTYPE_BF16) {
            __nv_bfloat16 h = __float2bfloat16(v);
            memcpy(at(i), &h, 2);
        } else {
            memcpy(at(i), &v, 4);
        }
        return get(i);
    }
    void fill_nan()
    {
        for (size_t i = 0; i < n_; i++)
            set(i, NAN);
    }

  private:
    tsr_dtype_t dt_;
    size_t n_;
    void *p_;
};

// A rows × cols matrix inside a Buf: element (r, c) at off + r ld + c.
struct View {
    Buf *b;
    size_t off;
    size_t rows;
    int cols, ld;
    size_t index(size_t r, int c) const { return off + r * (size_t)ld + (size_t)c; }
    float get(size_t r, int c) const { return b->get(index(r, c)); }
    float set(size_t r, int c, float v) const { return b->set(index(r, c), v); }
    void *ptr() const { return b->at(off); }
    float *fptr() const { return (float *)b->at(off); }
    // The matrix as doubles, row-major without padding.
    std::vector<double> values() const
    {
        std::vector<double> x(rows * (size_t)cols);
        for (size_t r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
                x[r * cols + c] = get(r, c);
        return x;
    }
    // Random values in [lo, hi), rounded to the element type; returns them as stored.
    std::vector<double> randomize(double lo, double hi) const
    {
        std::vector<double> x(rows * (size_t)cols);
        for (size_t r = 0; r < rows; r++)
            for (int c = 0; c < cols; c++)
                x[r * cols + c] = set(r, c, (float)uniform(lo, hi));
        return x;
    }
};

// The bytes of a buffer before a launch, to tell what the launch wrote.
class Snapshot
{
  public:
    explicit Snapshot(const Buf &b) : b_(b), before_(b.raw(), b.raw() + b.bytes()) {}
    // Elements that changed outside the given views (each view's rows × cols may change).
    size_t changed_outside(std::initializer_list<View> written) const
    {
        std::vector<char> mask(b_.size(), 0);
        for (const View &v : written)
            for (size_t r = 0; r < v.rows; r++)
                for (int c = 0; c < v.cols; c++)
                    mask[v.index(r, c)] = 1;
        size_t bad = 0, es = b_.esize();
        for (size_t i = 0; i < b_.size(); i++)
            if (!mask[i] && memcmp(b_.raw() + i * es, before_.data() + i * es, es) != 0)
                bad++;
        return bad;
    }

    const Buf &buf() const { return b_; }

  private:
    const Buf &b_;
    std::vector<unsigned char> before_;
};

// Buffers a launch must not write (each counted once, however many views it holds).
class Untouched
{
  public:
    Untouched(std::initializer_list<const Buf *> bufs)
    {
        for (const Buf *b : bufs) {
            bool seen = false;
            for (const auto &s : snaps_)
                seen = seen || &s->buf() == b;
            if (!seen)
                snaps_.emplace_back(new Snapshot(*b));
        }
    }
    size_t changed() const
    {
        size_t n = 0;
        for (const auto &s : snaps_)
            n += s->changed_outside({});
        return n;
    }

  private:
    std::vector<std::unique_ptr<Snapshot>> snaps_;
};

// ok() on max|got - ref| / max(max|ref|, floor) over the view; NaN, or an element never
// written (0x7f bytes: 3.4e38), fails. floor is for arrays that are 0 exactly.
static void check_close(const View &got, const std::vector<double> &ref, double tol, double floor, const char *fmt,
                        ...) TAP_PRINTF_(5, 6);
static void check_close(const View &got, const std::vector<double> &ref, double tol, double floor, const char *fmt,
                        ...)
{
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    double norm = floor, diff = 0;
    size_t worst = 0;
    for (size_t r = 0; r < got.rows; r++)
        for (int c = 0; c < got.cols; c++) {
            const size_t i = r * got.cols + c;
            const double d = fabs((double)got.get(r, c) - ref[i]);
            if (d > diff || d != d) {
                diff = d;
                worst = i;
            }
            norm = fabs(ref[i]) > norm ? fabs(ref[i]) : norm;
        }
    const double err = diff / (norm > 1e-30 ? norm : 1e-30);
    if (!ok(err <= tol, "%s: relative error within %g", name, tol))
        diag("max|err| %.3g at row %zu column %zu (got %.9g, expected %.9g), norm %.3g: relative %.3g",
             diff, worst / got.cols, worst % got.cols, (double)got.get(worst / got.cols, (int)(worst % got.cols)),
             ref[worst], norm, err);
}

// ok() on max over the view of |got - ref| / max(|ref|, 1): element by element, for values of
// very different sizes.
static void check_each(const View &got, const std::vector<double> &ref, double tol, const char *fmt, ...)
    TAP_PRINTF_(4, 5);
static void check_each(const View &got, const std::vector<double> &ref, double tol, const char *fmt, ...)
{
    char name[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(name, sizeof name, fmt, ap);
    va_end(ap);
    double worst_err = 0;
    size_t worst = 0;
    for (size_t r = 0; r < got.rows; r++)
        for (int c = 0; c < got.cols; c++) {
            const size_t i = r * got.cols + c;
            const double e = fabs((double)got.get(r, c) - ref[i]) / (fabs(ref[i]) > 1 ? fabs(ref[i]) : 1.0);
            if (e > worst_err || e != e) {
                worst_err = e;
                worst = i;
            }
        }
    if (!ok(worst_err <= tol, "%s: error of each element within %g", name, tol))
        diag("at row %zu column %zu got %.9g, expected %.9g: relative %.3g", worst / got.cols, worst % got.cols,
             (double)got.get(worst / got.cols, (int)(worst % got.cols)), ref[worst], worst_err);
}

// ---------------------------------------------------------------------------------------------
// Attention

struct AttnCase {
    const char *name;
    int seqs, T, heads, hd;
    int ld_in, ld_o; // ld_in >= 3 heads hd when packed, else >= heads hd
    bool packed;     // q, k, v in one buffer at columns 0, C, 2C (and dq, dk, dv), as the model has them
    double qscale;   // q uniform in ±2 qscale: larger scores, more peaked rows
};

// The reference on unpadded rows × C matrices (C = heads hd) of doubles.
struct AttnRef {
    const AttnCase &c;
    int C;
    size_t rows, stats;
    double scale;
    explicit AttnRef(const AttnCase &cs)
        : c(cs), C(cs.heads * cs.hd), rows((size_t)cs.seqs * cs.T), stats((size_t)cs.seqs * cs.heads * cs.T),
          scale(1.0 / sqrt((double)cs.hd))
    {
    }
    // Index of row s T + t, column h hd.
    size_t at(int s, int t, int h) const { return ((size_t)s * c.T + t) * C + (size_t)h * c.hd; }

    // p[0..i]: the softmax of query row i's scaled scores against keys 0..i; returns the lse.
    double probs(const std::vector<double> &q, const std::vector<double> &k, int s, int h, int i,
                 std::vector<double> &p) const
    {
        double mx = -INFINITY, sum = 0;
        for (int j = 0; j <= i; j++) {
            double dot = 0;
            for (int e = 0; e < c.hd; e++)
                dot += q[at(s, i, h) + e] * k[at(s, j, h) + e];
            p[j] = dot * scale;
            mx = p[j] > mx ? p[j] : mx;
        }
        for (int j = 0; j <= i; j++)
            sum += p[j] = exp(p[j] - mx);
        for (int j = 0; j <= i; j++)
            p[j] /= sum;
        return mx + log(sum);
    }

    void forward(const std::vector<double> &q, const std::vector<double> &k, const std::vector<double> &v,
                 std::vector<double> &o, std::vector<double> &lse) const
    {
        std::vector<double> p(c.T);
        o.assign(rows * C, 0.0);
        lse.assign(stats, 0.0);
        for (int s = 0; s < c.seqs; s++)
            for (int h = 0; h < c.heads; h++)
                for (int i = 0; i < c.T; i++) {
                    lse[((size_t)s * c.heads + h) * c.T + i] = probs(q, k, s, h, i, p);
                    for (int j = 0; j <= i; j++)
                        for (int e = 0; e < c.hd; e++)
                            o[at(s, i, h) + e] += p[j] * v[at(s, j, h) + e];
                }
    }

    // o: the o the backward is given (delta = rowsum(dO∘o) comes from it).
    void backward(const std::vector<double> &q, const std::vector<double> &k, const std::vector<double> &v,
                  const std::vector<double> &o, const std::vector<double> &d_o, std::vector<double> &delta,
                  std::vector<double> &dq, std::vector<double> &dk, std::vector<double> &dv) const
    {
        std::vector<double> p(c.T);
        delta.assign(stats, 0.0);
        dq.assign(rows * C, 0.0);
        dk.assign(rows * C, 0.0);
        dv.assign(rows * C, 0.0);
        for (int s = 0; s < c.seqs; s++)
            for (int h = 0; h < c.heads; h++)
                for (int i = 0; i < c.T; i++) {
                    probs(q, k, s, h, i, p);
                    const size_t qi = at(s, i, h);
                    double dl = 0;
                    for (int e = 0; e < c.hd; e++)
                        dl += d_o[qi + e] * o[qi + e];
                    delta[((size_t)s * c.heads + h) * c.T + i] = dl;
                    for (int j = 0; j <= i; j++) {
                        const size_t kj = at(s, j, h);
                        double dp = 0;
                        for (int e = 0; e < c.hd; e++)
                            dp += d_o[qi + e] * v[kj + e];
                        const double ds = p[j] * (dp - dl) * scale;
                        for (int e = 0; e < c.hd; e++) {
                            dq[qi + e] += ds * k[kj + e];
                            dk[kj + e] += ds * q[qi + e];
                            dv[kj + e] += p[j] * d_o[qi + e];
                        }
                    }
                }
    }
};

static void test_attention(tsr_dtype_t dt, const AttnCase &c)
{
    const AttnRef ref(c);
    const int C = ref.C;
    const size_t rows = ref.rows, stats = ref.stats;
    const double tol = tol_of(dt);
    char label[160];
    snprintf(label, sizeof label, "attention %s %s (seqs %d, T %d, heads %d, hd %d, ld_in %d, ld_o %d%s)",
             dt_name(dt), c.name, c.seqs, c.T, c.heads, c.hd, c.ld_in, c.ld_o, c.packed ? ", packed qkv" : "");

    std::vector<std::unique_ptr<Buf>> keep;
    auto make = [&](tsr_dtype_t t, size_t n) {
        keep.emplace_back(new Buf(t, n));
        return keep.back().get();
    };
    // Three matrices rows × C with leading dimension ld_in: one buffer at columns 0, C, 2C, or three.
    auto triple = [&](View (&m)[3]) {
        Buf *one = c.packed ? make(dt, rows * c.ld_in) : NULL;
        for (int j = 0; j < 3; j++)
            m[j] = c.packed ? View{one, (size_t)j * C, rows, C, c.ld_in}
                            : View{make(dt, rows * c.ld_in), 0, rows, C, c.ld_in};
    };
    View in[3], grad[3];
    triple(in);
    triple(grad);
    Buf *bo = make(dt, rows * c.ld_o), *bdo = make(dt, rows * c.ld_o);
    Buf *blse = make(TSR_DTYPE_F32, stats + 8), *bdelta = make(TSR_DTYPE_F32, stats + 8);
    const View o{bo, 0, rows, C, c.ld_o}, d_o{bdo, 0, rows, C, c.ld_o};
    const View lse{blse, 0, stats, 1, 1}, delta{bdelta, 0, stats, 1, 1};

    for (int j = 0; j < 3; j++) {
        in[j].b->fill_nan(); // padding: NaN, so that reading it shows
        grad[j].b->fill_bytes(0x7f);
    }
    bdo->fill_nan();
    bo->fill_bytes(0x7f);
    blse->fill_bytes(0x7f);
    bdelta->fill_bytes(0x7f);
    const std::vector<double> q = in[0].randomize(-2 * c.qscale, 2 * c.qscale), k = in[1].randomize(-2, 2),
                              v = in[2].randomize(-1, 1), dov = d_o.randomize(-1, 1);

    std::vector<double> o_ref, lse_ref;
    ref.forward(q, k, v, o_ref, lse_ref);
    {
        Snapshot s_o(*bo), s_lse(*blse);
        Untouched inputs({in[0].b, in[1].b, in[2].b, bdo, grad[0].b, grad[1].b, grad[2].b, bdelta});
        cudaError_t err = tsr__cuda_attention_forward(dt, c.seqs, c.T, c.heads, c.hd, in[0].ptr(), in[1].ptr(),
                                                      in[2].ptr(), c.ld_in, o.ptr(), c.ld_o, lse.fptr(), 0);
        if (!is_int(err, cudaSuccess, "%s: forward runs", label))
            diag("%s", tsr_emu::last_message());
        check_close(o, o_ref, tol, 0.0, "%s: forward o", label);
        check_close(lse, lse_ref, tol, 0.0, "%s: forward lse", label);
        is_int(s_o.changed_outside({o}) + s_lse.changed_outside({lse}) + inputs.changed(), 0,
               "%s: forward writes o and lse, only where it should", label);
    }

    std::vector<double> o_given = o.values(), delta_ref, dq_ref, dk_ref, dv_ref;
    ref.backward(q, k, v, o_given, dov, delta_ref, dq_ref, dk_ref, dv_ref);
    {
        Snapshot s_delta(*bdelta), s_g0(*grad[0].b), s_g1(*grad[1].b), s_g2(*grad[2].b);
        Untouched inputs({in[0].b, in[1].b, in[2].b, bo, bdo, blse});
        cudaError_t err = tsr__cuda_attention_backward(dt, c.seqs, c.T, c.heads, c.hd, in[0].ptr(), in[1].ptr(),
                                                       in[2].ptr(), c.ld_in, o.ptr(), d_o.ptr(), c.ld_o, lse.fptr(),
                                                       delta.fptr(), grad[0].ptr(), grad[1].ptr(), grad[2].ptr(), 0);
        if (!is_int(err, cudaSuccess, "%s: backward runs", label))
            diag("%s", tsr_emu::last_message());
        // delta adds up products of the stored values in fp32: fp32's tolerance for both types.
        check_close(delta, delta_ref, 1e-5, 0.0, "%s: backward delta = rowsum(dO o)", label);
        // With one token p = 1 and dp = delta: dq and dk are 0, up to rounding on the scale of dv.
        double floor = 0;
        if (c.T == 1)
            for (double x : dv_ref)
                floor = fabs(x) > floor ? fabs(x) : floor;
        check_close(grad[0], dq_ref, tol, floor, "%s: backward dq", label);
        check_close(grad[1], dk_ref, tol, floor, "%s: backward dk", label);
        check_close(grad[2], dv_ref, tol, 0.0, "%s: backward dv", label);
        size_t bad = s_delta.changed_outside({delta}) + inputs.changed();
        if (c.packed)
            bad += s_g0.changed_outside({grad[0], grad[1], grad[2]});
        else
            bad += s_g0.changed_outside({grad[0]}) + s_g1.changed_outside({grad[1]}) +
                   s_g2.changed_outside({grad[2]});
        is_int(bad, 0, "%s: backward writes delta, dq, dk, dv only where it should, no input", label);
    }
}

// Launches the launchers refuse, or that have nothing to do: nothing may be written.
static void test_attention_args(void)
{
    const int T = 4, hd = 16;
    Buf x(TSR_DTYPE_F32, (size_t)T * hd), out(TSR_DTYPE_F32, (size_t)T * hd), lse(TSR_DTYPE_F32, T),
        delta(TSR_DTYPE_F32, T);
    for (size_t i = 0; i < x.size(); i++)
        x.set(i, (float)uniform(-1, 1));
    out.fill_bytes(0x7f);
    lse.fill_bytes(0x7f);
    delta.fill_bytes(0x7f);
    Snapshot s_out(out), s_lse(lse), s_delta(delta);
    const float *lp = (const float *)lse.at(0);
    float *dl = (float *)delta.at(0);
    is_int(tsr__cuda_attention_forward(TSR_DTYPE_F32, 1, T, 1, 48, x.at(0), x.at(0), x.at(0), hd, out.at(0), hd,
                                       (float *)lse.at(0), 0),
           cudaErrorInvalidValue, "attention forward: hd 48 is refused");
    is_int(tsr__cuda_attention_forward(TSR_DTYPE_F64, 1, T, 1, hd, x.at(0), x.at(0), x.at(0), hd, out.at(0), hd,
                                       (float *)lse.at(0), 0),
           cudaErrorInvalidValue, "attention forward: f64 is refused");
    is_int(tsr__cuda_attention_forward(TSR_DTYPE_F32, 1, -1, 1, hd, x.at(0), x.at(0), x.at(0), hd, out.at(0), hd,
                                       (float *)lse.at(0), 0),
           cudaErrorInvalidValue, "attention forward: T -1 is refused");
    is_int(tsr__cuda_attention_forward(TSR_DTYPE_BF16, 1, 0, 1, hd, x.at(0), x.at(0), x.at(0), hd, out.at(0), hd,
                                       (float *)lse.at(0), 0),
           cudaSuccess, "attention forward: T 0 does nothing");
    is_int(tsr__cuda_attention_backward(TSR_DTYPE_F32, 1, T, 1, 8, x.at(0), x.at(0), x.at(0), hd, x.at(0), x.at(0),
                                        hd, lp, dl, out.at(0), out.at(0), out.at(0), 0),
           cudaErrorInvalidValue, "attention backward: hd 8 is refused");
    is_int(tsr__cuda_attention_backward(TSR_DTYPE_I32, 1, T, 1, hd, x.at(0), x.at(0), x.at(0), hd, x.at(0), x.at(0),
                                        hd, lp, dl, out.at(0), out.at(0), out.at(0), 0),
           cudaErrorInvalidValue, "attention backward: i32 is refused");
    is_int(tsr__cuda_attention_backward(TSR_DTYPE_BF16, 2, T, 0, hd, x.at(0), x.at(0), x.at(0), hd, x.at(0),
                                        x.at(0), hd, lp, dl, out.at(0), out.at(0), out.at(0), 0),
           cudaSuccess, "attention backward: 0 heads does nothing");
    is_int(s_out.changed_outside({}) + s_lse.changed_outside({}) + s_delta.changed_outside({}), 0,
           "attention: refused and empty launches write nothing");
}

// ---------------------------------------------------------------------------------------------
// GEMM epilogues: gelu(x) = x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))), in double.

static const double GELU_SCALE = 0.7978845608028654, GELU_CUBE = 0.044715;

static double gelu_ref(double x) { return 0.5 * x * (1.0 + tanh(GELU_SCALE * (x + GELU_CUBE * x * x * x))); }

static double gelu_grad_ref(double x)
{
    const double t = tanh(GELU_SCALE * (x + GELU_CUBE * x * x * x));
    return 0.5 * (1.0 + t) + 0.5 * x * GELU_SCALE * (1.0 + 3.0 * GELU_CUBE * x * x) * (1.0 - t * t);
}

// x = beta x + bias[j] (x is not read when beta is 0: it starts as NaN then), bias NULL or not.
static void test_scale_bias(tsr_dtype_t dt, int rows, int cols, int ldx, float beta, bool with_bias)
{
    char label[160];
    snprintf(label, sizeof label, "gemm scale_bias %s (%d x %d, ldx %d, beta %g, %s)", dt_name(dt), rows, cols, ldx,
             (double)beta, with_bias ? "bias" : "no bias");
    Buf bx(dt, (size_t)rows * ldx), bb(dt, (size_t)cols + 8);
    const View x{&bx, 0, (size_t)rows, cols, ldx}, bias{&bb, 0, 1, cols, cols};
    bx.fill_nan();
    bb.fill_nan();
    std::vector<double> x0(x.rows * (size_t)cols, NAN), b0(cols, 0.0);
    if (beta != 0.0f)
        x0 = x.randomize(-4, 4);
    if (with_bias)
        b0 = bias.randomize(-1, 1);
    std::vector<double> want(x0.size());
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < cols; j++)
            want[(size_t)r * cols + j] = (beta == 0.0f ? 0.0 : (double)beta * x0[(size_t)r * cols + j]) + b0[j];
    Snapshot sx(bx), sb(bb);
    cudaError_t err = tsr__cuda_gemm_scale_bias(dt, rows, cols, x.ptr(), ldx, beta, with_bias ? bias.ptr() : NULL, 0);
    if (!is_int(err, cudaSuccess, "%s: runs", label))
        diag("%s", tsr_emu::last_message());
    check_close(x, want, tol_of(dt), 0.0, "%s: x", label);
    is_int(sx.changed_outside({x}) + sb.changed_outside({}), 0, "%s: writes x only where it should", label);
}

// BIAS_GELU as cuda_gemm.c runs it when cuBLASLt does not fuse it: aux holds the product,
// scale_bias(beta 1) adds the bias to it, gelu writes c = gelu(aux). Then DGELU on a fresh
// product in c with that aux: c = c gelu'(aux). With edges, aux starts with the edge values
// below (once the bias is added, up to rounding), checked element by element.
static void test_gelu(tsr_dtype_t dt, int rows, int cols, int ld_aux, int ldc, bool edges)
{
    char label[160];
    snprintf(label, sizeof label, "gemm gelu/dgelu %s (%d x %d, ld_aux %d, ldc %d%s)", dt_name(dt), rows, cols,
             ld_aux, ldc, edges ? ", edge values" : "");
    Buf baux(dt, (size_t)rows * ld_aux), bc(dt, (size_t)rows * ldc), bb(dt, (size_t)cols);
    const View aux{&baux, 0, (size_t)rows, cols, ld_aux}, c{&bc, 0, (size_t)rows, cols, ldc},
        bias{&bb, 0, 1, cols, cols};
    baux.fill_nan();
    bc.fill_bytes(0x7f);
    std::vector<double> p = aux.randomize(-5, 5), b0 = bias.randomize(-1, 1);
    static const float edge[] = {0.0f, -0.0f, 1e-3f, -1e-3f, 0.5f, -0.5f, 1.0f, -1.0f, 2.5f, -2.5f,
                                 4.0f, -4.0f, 6.0f, -6.0f, 10.0f, -10.0f, 30.0f, -30.0f, 100.0f, -100.0f};
    const int nedge = edges ? (int)(sizeof edge / sizeof edge[0]) : 0;
    for (int e = 0; e < nedge && e < rows * cols; e++)
        p[e] = aux.set(e / cols, e % cols, edge[e] - (float)b0[e % cols]);
    auto check = [&](const View &got, const std::vector<double> &want, const char *what) {
        if (edges)
            check_each(got, want, tol_of(dt), "%s: %s", label, what);
        else
            check_close(got, want, tol_of(dt), 0.0, "%s: %s", label, what);
    };
    {
        std::vector<double> pre(p.size());
        for (int r = 0; r < rows; r++)
            for (int j = 0; j < cols; j++)
                pre[(size_t)r * cols + j] = p[(size_t)r * cols + j] + b0[j];
        Snapshot sa(baux), sb(bb);
        cudaError_t err = tsr__cuda_gemm_scale_bias(dt, rows, cols, aux.ptr(), ld_aux, 1.0f, bias.ptr(), 0);
        if (!is_int(err, cudaSuccess, "%s: bias into aux runs", label))
            diag("%s", tsr_emu::last_message());
        check(aux, pre, "aux = product + bias");
        is_int(sa.changed_outside({aux}) + sb.changed_outside({}), 0, "%s: bias writes aux only", label);
    }
    const std::vector<double> a = aux.values(); // what gelu and dgelu read
    {
        std::vector<double> act(a.size());
        for (size_t i = 0; i < a.size(); i++)
            act[i] = gelu_ref(a[i]);
        Snapshot sa(baux), sc(bc);
        cudaError_t err = tsr__cuda_gemm_gelu(dt, rows, cols, aux.ptr(), ld_aux, c.ptr(), ldc, 0);
        if (!is_int(err, cudaSuccess, "%s: gelu runs", label))
            diag("%s", tsr_emu::last_message());
        check(c, act, "c = gelu(aux)");
        is_int(sa.changed_outside({}) + sc.changed_outside({c}), 0, "%s: gelu writes c only", label);
    }
    {
        bc.fill_nan();
        const std::vector<double> g = c.randomize(-2, 2);
        std::vector<double> want(g.size());
        for (size_t i = 0; i < g.size(); i++)
            want[i] = g[i] * gelu_grad_ref(a[i]);
        Snapshot sa(baux), sc(bc);
        cudaError_t err = tsr__cuda_gemm_dgelu(dt, rows, cols, aux.ptr(), ld_aux, c.ptr(), ldc, 0);
        if (!is_int(err, cudaSuccess, "%s: dgelu runs", label))
            diag("%s", tsr_emu::last_message());
        check(c, want, "c = c gelu'(aux)");
        is_int(sa.changed_outside({}) + sc.changed_outside({c}), 0, "%s: dgelu writes c only", label);
    }
}

// More elements than the 65535 blocks of 256 threads the launchers cap the grid at: the
// grid-stride loop must go round. beta 2 without bias is exact.
static void test_epilogue_grid_stride(void)
{
    const int rows = 2, cols = 8388607; // 254 elements past 65535 * 256
    Buf bx(TSR_DTYPE_F32, (size_t)rows * cols);
    const View x{&bx, 0, (size_t)rows, cols, cols};
    const std::vector<double> x0 = x.randomize(-1, 1);
    cudaError_t err = tsr__cuda_gemm_scale_bias(TSR_DTYPE_F32, rows, cols, x.ptr(), cols, 2.0f, NULL, 0);
    if (!is_int(err, cudaSuccess, "gemm scale_bias f32 past the grid cap (2 x %d): runs", cols))
        diag("%s", tsr_emu::last_message());
    size_t wrong = 0;
    for (size_t i = 0; i < x0.size(); i++)
        wrong += bx.get(i) != (float)(2.0 * x0[i]);
    is_int(wrong, 0, "gemm scale_bias f32 past the grid cap (2 x %d): every element doubled", cols);
}

int main(int argc, char **argv)
{
    tap_init(&argc, &argv, "1");
    rng_state = tap_seed();
    const tsr_dtype_t dts[] = {TSR_DTYPE_F32, TSR_DTYPE_BF16};
    // T past the tiles (64 rows bf16, 32 fp32): partial last tiles, a single row, a whole tile
    // plus one, whole tiles; odd leading dimensions take the bf16 kernels' element-wise loads.
    const AttnCase cases[] = {
        {"GPT-2 head size", 2, 130, 3, 64, 3 * 3 * 64, 3 * 64, true, 1.0},
        {"peaked rows", 1, 96, 2, 64, 3 * 2 * 64 + 8, 2 * 64 + 8, true, 4.0},
        {"odd ld", 3, 77, 2, 32, 2 * 32 + 5, 2 * 32 + 7, false, 1.0},
        {"hd 128", 1, 65, 2, 128, 2 * 128 + 8, 2 * 128, false, 1.0},
        {"one token", 2, 1, 3, 16, 3 * 3 * 16, 3 * 16 + 1, true, 1.0},
        {"hd 16", 2, 50, 1, 16, 17, 16, false, 2.0},
        {"whole tiles", 1, 128, 2, 32, 3 * 2 * 32, 2 * 32, true, 1.0},
    };
    double t0 = seconds();
    for (tsr_dtype_t dt : dts)
        for (const AttnCase &c : cases)
            test_attention(dt, c);
    test_attention_args();
    double t1 = seconds();
    for (tsr_dtype_t dt : dts) {
        test_scale_bias(dt, 37, 300, 301, 0.0f, true); // the GEMM's k == 0 or alpha == 0 path
        test_scale_bias(dt, 5, 1000, 1003, 1.0f, true); // the bias after a plain product
        test_scale_bias(dt, 1, 7, 7, 0.5f, false);
        test_scale_bias(dt, 3, 129, 130, 0.0f, false);
        test_gelu(dt, 33, 129, 131, 130, false);
        test_gelu(dt, 2, 11, 11, 13, true);
    }
    test_epilogue_grid_stride();
    double t2 = seconds();
    diag("attention %.2f s, epilogues %.2f s", t1 - t0, t2 - t1);
    return tap_done();
}
