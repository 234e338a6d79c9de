// test_emu_attention_cached.cc: the CUDA kernel of attention against a KV cache
// (lib/device/cuda_attention_cached.cu) under the CPU emulation, f32 and bf16, against the
// formula of tsr_kernel_attention_cached() in double on the inputs as the GPU sees them
// (rounded to bf16 first for bf16): a prefill-like step (n > 1 at pos 0), a step in the
// middle and a single token at the end of the cache, with padded leading dimensions. The
// rows of o outside the queries' columns stay as they were.
#define TAP_NO_MPI 1 // one process, no MPI: see tests/tap.h
#include "tap.h"

#include "device/cuda_attention_cached.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include <vector>

static uint64_t rng_state = 12345;
static float uniform(float lo, float hi)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return lo + (hi - lo) * (float)((double)(rng_state >> 11) / 9007199254740992.0);
}

// The value the device holds for v in dt.
static float as_dt(tsr_dtype_t dt, float v)
{
    return dt == TSR_DTYPE_BF16 ? __bfloat162float(__float2bfloat16(v)) : v;
}

// n elements of dt filled with the values of x (rounded for bf16).
static std::vector<unsigned char> device_copy(tsr_dtype_t dt, const std::vector<float> &x)
{
    size_t es = dt == TSR_DTYPE_BF16 ? 2 : 4;
    std::vector<unsigned char> b(x.size() * es);
    for (size_t i = 0; i < x.size(); i++) {
        if (dt == TSR_DTYPE_BF16) {
            __nv_bfloat16 h = __float2bfloat16(x[i]);
            memcpy(&b[i * 2], &h, 2);
        } else {
            memcpy(&b[i * 4], &x[i], 4);
        }
    }
    return b;
}

static float read(tsr_dtype_t dt, const std::vector<unsigned char> &b, size_t i)
{
    if (dt == TSR_DTYPE_BF16) {
        __nv_bfloat16 h;
        memcpy(&h, &b[i * 2], 2);
        return __bfloat162float(h);
    }
    float f;
    memcpy(&f, &b[i * 4], 4);
    return f;
}

static void check(tsr_dtype_t dt, int seqs, int n, int pos, int T, int heads, int hd)
{
    int w = heads * hd, ld_q = w + 3, ld_c = w + 5, ld_o = w + 1;
    std::vector<float> q((size_t)seqs * n * ld_q), k((size_t)seqs * T * ld_c), v((size_t)seqs * T * ld_c);
    for (auto *a : {&q, &k, &v})
        for (float &x : *a)
            x = as_dt(dt, uniform(-1.5f, 1.5f));
    std::vector<float> o0((size_t)seqs * n * ld_o, 7.0f);
    auto bq = device_copy(dt, q), bk = device_copy(dt, k), bv = device_copy(dt, v), bo = device_copy(dt, o0);
    cudaError_t err = tsr__cuda_attention_cached(dt, seqs, n, pos, T, heads, hd, bq.data(), ld_q, bk.data(),
                                                 bv.data(), ld_c, bo.data(), ld_o, 0);
    double md = 0, mx = 0;
    int outside = 0;
    for (int s = 0; s < seqs; s++)
        for (int h = 0; h < heads; h++)
            for (int i = 0; i < n; i++) {
                int keys = pos + i + 1;
                std::vector<double> p(keys);
                double m = -INFINITY, sum = 0;
                for (int j = 0; j < keys; j++) {
                    double acc = 0;
                    for (int d = 0; d < hd; d++)
                        acc += (double)q[((size_t)s * n + i) * ld_q + h * hd + d] *
                               k[((size_t)s * T + j) * ld_c + h * hd + d];
                    p[j] = acc / sqrt((double)hd);
                    m = fmax(m, p[j]);
                }
                for (int j = 0; j < keys; j++)
                    sum += p[j] = exp(p[j] - m);
                for (int d = 0; d < hd; d++) {
                    double ref = 0;
                    for (int j = 0; j < keys; j++)
                        ref += p[j] / sum * v[((size_t)s * T + j) * ld_c + h * hd + d];
                    double got = read(dt, bo, ((size_t)s * n + i) * ld_o + h * hd + d);
                    md = fmax(md, fabs(got - ref));
                    mx = fmax(mx, fabs(ref));
                }
            }
    for (int r = 0; r < seqs * n; r++)
        for (int c = w; c < ld_o; c++)
            outside += read(dt, bo, (size_t)r * ld_o + c) != 7.0f;
    double tol = dt == TSR_DTYPE_BF16 ? 1e-2 : 1e-5;
    ok(err == cudaSuccess && md / mx <= tol && outside == 0,
       "%s, %d seqs, %d queries at %d of %d, %d heads of %d: within %g (%.2g), nothing else written",
       dt == TSR_DTYPE_BF16 ? "bf16" : "f32", seqs, n, pos, T, heads, hd, tol, md / mx);
}

int main(int argc, char **argv)
{
    tap_init(&argc, &argv, "1");
    for (tsr_dtype_t dt : {TSR_DTYPE_F32, TSR_DTYPE_BF16}) {
        check(dt, 2, 5, 0, 24, 2, 16);
        check(dt, 3, 2, 9, 24, 2, 32);
        check(dt, 1, 1, 199, 200, 3, 64);
    }
    return tap_done();
}
