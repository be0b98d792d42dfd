// elementwise.cu - activations f(z), their derivatives g * f'(.), bias add, axpy, scale.
//
// Layout: flat contiguous arrays of n elements (activations, axpy, scale) or row-major (M, N)
// with a bias of N (bias_add). Thread -> element map: a grid-stride loop; when every pointer is
// 16-byte aligned each thread moves one float4 (double2) per step, then a scalar tail. These
// kernels are memory-bound (1 FLOP per 4-12 bytes): the target is >= 85% of the device-to-device
// copy bandwidth, which only full-width, coalesced 16-byte accesses reach.
//
// Entry points (T = f32 | f64):
//   act_<name>_<T>(const T* z, T* out, long long n, T alpha)
//   act_grad_<name>_<T>(const T* z, const T* a, const T* g, T* out, long long n, T alpha)
//   bias_add_<T>(const T* z, const T* b, T* out, long long m, long long n)
//   axpy_<T>(T alpha, const T* x, T* y, long long n)        y += alpha x
//   scale_<T>(T alpha, T* x, long long n)                    x *= alpha
//   take_rows_<T>(const T* x, const long long* idx, T* out, long long k, long long cols)
//                                           out[r, :] = x[idx[r], :] for r < k (a shuffle)
// `alpha` is the activation's parameter (leaky_relu slope, elu alpha), ignored by the others;
// every activation kernel has the same signature so the host code is one table.
#include "common.cuh"

namespace mlp {

// ---------------------------------------------------------------- forward functors
// Each is stable for |z| up to 1e4: exp only ever sees a non-positive argument.
struct Step {
    template <class T> __device__ T operator()(T z, T) const { return positive(z) ? T(1) : T(0); }
};
struct Linear {
    template <class T> __device__ T operator()(T z, T) const { return z; }
};
struct Sigmoid {
    template <class T> __device__ T operator()(T z, T) const {
        T e = m_exp(-m_fabs(z));  // in (0, 1]
        return z >= T(0) ? T(1) / (T(1) + e) : e / (T(1) + e);
    }
};
struct Tanh {
    template <class T> __device__ T operator()(T z, T) const { return m_tanh(z); }
};
struct Relu {
    template <class T> __device__ T operator()(T z, T) const { return positive(z) ? z : T(0); }
};
struct LeakyRelu {
    template <class T> __device__ T operator()(T z, T alpha) const {
        return positive(z) ? z : alpha * z;
    }
};
struct Elu {
    template <class T> __device__ T operator()(T z, T alpha) const {
        return positive(z) ? z : alpha * m_expm1(m_min(z, T(0)));
    }
};
struct Softplus {  // max(z, 0) + log1p(e^-|z|)
    template <class T> __device__ T operator()(T z, T) const {
        return m_max(z, T(0)) + m_log1p(m_exp(-m_fabs(z)));
    }
};
struct Mul {  // alpha z (scale)
    template <class T> __device__ T operator()(T z, T alpha) const { return alpha * z; }
};
struct Gelu {  // exact erf form (PyTorch's default)
    template <class T> __device__ T operator()(T z, T) const {
        return T(0.5) * z * (T(1) + m_erf(z * T(0.70710678118654752440)));
    }
};

// ---------------------------------------------------------------- derivative functors
// g * f'(.) from z, a = f(z) and the incoming gradient g.
struct StepGrad {
    template <class T> __device__ T operator()(T, T, T, T) const { return T(0); }
};
struct LinearGrad {
    template <class T> __device__ T operator()(T, T, T g, T) const { return g; }
};
struct SigmoidGrad {
    template <class T> __device__ T operator()(T, T a, T g, T) const { return g * a * (T(1) - a); }
};
struct TanhGrad {
    template <class T> __device__ T operator()(T, T a, T g, T) const { return g * (T(1) - a * a); }
};
struct ReluGrad {
    template <class T> __device__ T operator()(T z, T, T g, T) const { return positive(z) ? g : T(0); }
};
struct LeakyReluGrad {
    template <class T> __device__ T operator()(T z, T, T g, T alpha) const {
        return positive(z) ? g : alpha * g;
    }
};
struct EluGrad {
    template <class T> __device__ T operator()(T z, T a, T g, T alpha) const {
        return positive(z) ? g : g * (a + alpha);
    }
};
struct SoftplusGrad {  // sigmoid(z)
    template <class T> __device__ T operator()(T z, T, T g, T alpha) const {
        return g * Sigmoid()(z, alpha);
    }
};
struct GeluGrad {  // Phi(z) + z phi(z)
    template <class T> __device__ T operator()(T z, T, T g, T) const {
        T cdf = T(0.5) * (T(1) + m_erf(z * T(0.70710678118654752440)));
        T pdf = T(0.39894228040143267794) * m_exp(T(-0.5) * z * z);
        return g * (cdf + z * pdf);
    }
};

// ---------------------------------------------------------------- loops
template <class T, class F>
__device__ __forceinline__ void map1(const T* z, T* out, long long n, T alpha, F f) {
    typedef typename Vec16<T>::type V;
    const int W = Vec16<T>::n;
    long long i0 = 0;
    if (aligned16(z) && aligned16(out)) {
        const long long nv = n / W;
        const V* zv = reinterpret_cast<const V*>(z);
        V* ov = reinterpret_cast<V*>(out);
        for (long long i = gtid(); i < nv; i += gstride()) {
            V v = zv[i];
            T* e = reinterpret_cast<T*>(&v);
#pragma unroll
            for (int k = 0; k < W; ++k) e[k] = f(e[k], alpha);
            ov[i] = v;
        }
        i0 = nv * W;
    }
    for (long long i = i0 + gtid(); i < n; i += gstride()) out[i] = f(z[i], alpha);
}

template <class T, class F>
__device__ __forceinline__ void map3(const T* z, const T* a, const T* g, T* out, long long n,
                                     T alpha, F f) {
    typedef typename Vec16<T>::type V;
    const int W = Vec16<T>::n;
    long long i0 = 0;
    if (aligned16(z) && aligned16(a) && aligned16(g) && aligned16(out)) {
        const long long nv = n / W;
        for (long long i = gtid(); i < nv; i += gstride()) {
            V zv = reinterpret_cast<const V*>(z)[i];
            V av = reinterpret_cast<const V*>(a)[i];
            V gv = reinterpret_cast<const V*>(g)[i];
            V ov;
            const T* ze = reinterpret_cast<const T*>(&zv);
            const T* ae = reinterpret_cast<const T*>(&av);
            const T* ge = reinterpret_cast<const T*>(&gv);
            T* oe = reinterpret_cast<T*>(&ov);
#pragma unroll
            for (int k = 0; k < W; ++k) oe[k] = f(ze[k], ae[k], ge[k], alpha);
            reinterpret_cast<V*>(out)[i] = ov;
        }
        i0 = nv * W;
    }
    for (long long i = i0 + gtid(); i < n; i += gstride()) out[i] = f(z[i], a[i], g[i], alpha);
}

}  // namespace mlp

// `out` may alias an input (in-place activation, g *= f'), so no pointer is __restrict__: each
// thread reads its elements before it writes the same ones, which is safe without it.
#define MLP_ACT(NAME, FWD, GRAD, T, SFX)                                                         \
    extern "C" __global__ void act_##NAME##_##SFX(const T* z, T* out, long long n, T alpha) {   \
        mlp::map1<T>(z, out, n, alpha, mlp::FWD());                                              \
    }                                                                                            \
    extern "C" __global__ void act_grad_##NAME##_##SFX(const T* z, const T* a, const T* g,      \
                                                        T* out, long long n, T alpha) {          \
        mlp::map3<T>(z, a, g, out, n, alpha, mlp::GRAD());                                       \
    }

#define MLP_ACT_ALL(T, SFX)                                     \
    MLP_ACT(step, Step, StepGrad, T, SFX)                       \
    MLP_ACT(linear, Linear, LinearGrad, T, SFX)                 \
    MLP_ACT(sigmoid, Sigmoid, SigmoidGrad, T, SFX)              \
    MLP_ACT(tanh, Tanh, TanhGrad, T, SFX)                       \
    MLP_ACT(relu, Relu, ReluGrad, T, SFX)                       \
    MLP_ACT(leaky_relu, LeakyRelu, LeakyReluGrad, T, SFX)       \
    MLP_ACT(elu, Elu, EluGrad, T, SFX)                          \
    MLP_ACT(softplus, Softplus, SoftplusGrad, T, SFX)           \
    MLP_ACT(gelu, Gelu, GeluGrad, T, SFX)

MLP_ACT_ALL(float, f32)
MLP_ACT_ALL(double, f64)

// ---------------------------------------------------------------- bias add, axpy, scale
namespace mlp {
template <class T>
__device__ void bias_add(const T* z, const T* __restrict__ b, T* out, long long m, long long n) {
    const long long total = m * n;
    for (long long i = gtid(); i < total; i += gstride()) out[i] = z[i] + b[i % n];
}

template <class T>
__device__ void axpy(T alpha, const T* x, T* y, long long n) {
    typedef typename Vec16<T>::type V;
    const int W = Vec16<T>::n;
    long long i0 = 0;
    if (aligned16(x) && aligned16(y)) {
        const long long nv = n / W;
        for (long long i = gtid(); i < nv; i += gstride()) {
            V xv = reinterpret_cast<const V*>(x)[i];
            V yv = reinterpret_cast<V*>(y)[i];
            const T* xe = reinterpret_cast<const T*>(&xv);
            T* ye = reinterpret_cast<T*>(&yv);
#pragma unroll
            for (int k = 0; k < W; ++k) ye[k] += alpha * xe[k];
            reinterpret_cast<V*>(y)[i] = yv;
        }
        i0 = nv * W;
    }
    for (long long i = i0 + gtid(); i < n; i += gstride()) y[i] += alpha * x[i];
}

// Row gather (an epoch's shuffle: 60k rows of 784 floats = 188 MB read + written). One
// grid-stride loop over (row, 16-byte slot): consecutive threads take consecutive slots of a
// row, so a warp reads 512 contiguous bytes of one source row. Rows whose start is not 16-byte
// aligned (cols % W != 0) take the scalar loop. Indices are not checked here (the host does).
template <class T>
__device__ void take_rows(const T* __restrict__ x, const long long* __restrict__ idx,
                          T* __restrict__ out, long long k, long long cols) {
    typedef typename Vec16<T>::type V;
    const int W = Vec16<T>::n;
    if (cols % W == 0 && aligned16(x) && aligned16(out)) {
        const long long per = cols / W, total = k * per;
        if (total < (1ll << 31) && gstride() < (1ll << 31)) {  // 32-bit index math: cheaper
            const unsigned up = (unsigned)per, ut = (unsigned)total;
            for (unsigned i = (unsigned)gtid(); i < ut; i += (unsigned)gstride()) {
                const unsigned r = i / up, c = i - r * up;
                reinterpret_cast<V*>(out)[i] = reinterpret_cast<const V*>(x)[idx[r] * per + c];
            }
            return;
        }
        for (long long i = gtid(); i < total; i += gstride()) {
            const long long r = i / per, c = i - r * per;
            reinterpret_cast<V*>(out)[i] = reinterpret_cast<const V*>(x)[idx[r] * per + c];
        }
        return;
    }
    const long long total = k * cols;
    for (long long i = gtid(); i < total; i += gstride()) {
        const long long r = i / cols, c = i - r * cols;
        out[i] = x[idx[r] * cols + c];
    }
}
}  // namespace mlp

extern "C" __global__ void bias_add_f32(const float* z, const float* b, float* out, long long m,
                                        long long n) { mlp::bias_add(z, b, out, m, n); }
extern "C" __global__ void bias_add_f64(const double* z, const double* b, double* out,
                                        long long m, long long n) { mlp::bias_add(z, b, out, m, n); }
extern "C" __global__ void axpy_f32(float alpha, const float* x, float* y, long long n) {
    mlp::axpy(alpha, x, y, n);
}
extern "C" __global__ void axpy_f64(double alpha, const double* x, double* y, long long n) {
    mlp::axpy(alpha, x, y, n);
}
extern "C" __global__ void take_rows_f32(const float* x, const long long* idx, float* out,
                                         long long k, long long cols) {
    mlp::take_rows(x, idx, out, k, cols);
}
extern "C" __global__ void take_rows_f64(const double* x, const long long* idx, double* out,
                                         long long k, long long cols) {
    mlp::take_rows(x, idx, out, k, cols);
}
extern "C" __global__ void scale_f32(float alpha, float* x, long long n) {
    mlp::map1<float>(x, x, n, alpha, mlp::Mul());
}
extern "C" __global__ void scale_f64(double alpha, double* x, long long n) {
    mlp::map1<double>(x, x, n, alpha, mlp::Mul());
}
