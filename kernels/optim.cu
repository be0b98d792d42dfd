// optim.cu - optimizer updates, in place, one launch over a whole flat parameter buffer.
//
// Parameters, gradients and optimizer states of every layer live in flat buffers (views per
// layer), so one grid-stride launch updates the whole model: one kernel per step instead of
// one per tensor (the host cost of a launch, ~7 us in CuPy, exceeds the work of a small layer).
// Thread -> element: grid-stride over n, blockDim.x = 256. Formulas follow PyTorch (see
// mlpaccel/backends/base.py); hyper-parameters arrive as T scalars, flags as int.
//
//   sgd_<T>(p, g, n, lr, wd)                                p -= lr (g + wd p)
//   momentum_<T>(p, g, buf, n, lr, mu, wd, nesterov)        g' = g + wd p; buf = mu buf + g';
//                                                           p -= lr (nesterov ? g' + mu buf : buf)
//   adagrad_<T>(p, g, sum_sq, n, lr, eps, wd)               s += g'^2; p -= lr g' / (sqrt s + eps)
//   adadelta_<T>(p, g, sq, acc, n, lr, rho, eps, wd)
//   rmsprop_<T>(p, g, sq, n, lr, rho, eps, wd)
//   adam_<T>(p, g, m, v, n, lr, b1, b2, eps, wd, bc1, bc2, decoupled)
//       bc1 = 1 - b1^step, bc2 = 1 - b2^step computed on the host in double precision.
//   adam_dstep_<T>(p, g, m, v, n, lr, b1, b2, eps, wd, const T* step, decoupled)
//       the same with the step count read from device memory (a recorded CUDA graph replays
//       it correctly when the trainer advances that counter on the device).
#include "common.cuh"

namespace mlp {

template <class T>
__device__ void sgd(T* p, const T* g, long long n, T lr, T wd) {
    for (long long i = gtid(); i < n; i += gstride()) p[i] = p[i] - lr * (g[i] + wd * p[i]);
}

template <class T>
__device__ void momentum(T* p, const T* g, T* buf, long long n, T lr, T mu, T wd, int nesterov) {
    for (long long i = gtid(); i < n; i += gstride()) {
        T pi = p[i];
        T gi = g[i] + wd * pi;
        T b = mu * buf[i] + gi;
        buf[i] = b;
        p[i] = pi - lr * (nesterov ? gi + mu * b : b);
    }
}

template <class T>
__device__ void adagrad(T* p, const T* g, T* sum_sq, long long n, T lr, T eps, T wd) {
    for (long long i = gtid(); i < n; i += gstride()) {
        T pi = p[i];
        T gi = g[i] + wd * pi;
        T s = sum_sq[i] + gi * gi;
        sum_sq[i] = s;
        p[i] = pi - lr * gi / (m_sqrt(s) + eps);
    }
}

template <class T>
__device__ void adadelta(T* p, const T* g, T* sq, T* acc, long long n, T lr, T rho, T eps,
                         T wd) {
    for (long long i = gtid(); i < n; i += gstride()) {
        T pi = p[i];
        T gi = g[i] + wd * pi;
        T s = rho * sq[i] + (T(1) - rho) * gi * gi;
        T a = acc[i];
        T delta = m_sqrt(a + eps) / m_sqrt(s + eps) * gi;
        sq[i] = s;
        acc[i] = rho * a + (T(1) - rho) * delta * delta;
        p[i] = pi - lr * delta;
    }
}

template <class T>
__device__ void rmsprop(T* p, const T* g, T* sq, long long n, T lr, T rho, T eps, T wd) {
    for (long long i = gtid(); i < n; i += gstride()) {
        T pi = p[i];
        T gi = g[i] + wd * pi;
        T s = rho * sq[i] + (T(1) - rho) * gi * gi;
        sq[i] = s;
        p[i] = pi - lr * gi / (m_sqrt(s) + eps);
    }
}

template <class T>
__device__ void adam(T* p, const T* g, T* m, T* v, long long n, T lr, T b1, T b2, T eps, T wd,
                     T bc1, T bc2, int decoupled) {
    for (long long i = gtid(); i < n; i += gstride()) {
        T pi = p[i];
        T gi = g[i];
        if (decoupled) pi = pi * (T(1) - lr * wd);  // AdamW: decay the weights, not the grad
        else gi = gi + wd * pi;
        T mi = b1 * m[i] + (T(1) - b1) * gi;
        T vi = b2 * v[i] + (T(1) - b2) * gi * gi;
        m[i] = mi;
        v[i] = vi;
        p[i] = pi - lr * (mi / bc1) / (m_sqrt(vi / bc2) + eps);
    }
}

template <class T>
__device__ void adam_dstep(T* p, const T* g, T* m, T* v, long long n, T lr, T b1, T b2, T eps,
                           T wd, const T* step, int decoupled) {
    const double t = (double)step[0];  // uniform across threads; pow in double like the host
    const T bc1 = T(1.0 - pow((double)b1, t));
    const T bc2 = T(1.0 - pow((double)b2, t));
    adam(p, g, m, v, n, lr, b1, b2, eps, wd, bc1, bc2, decoupled);
}

}  // namespace mlp

#define MLP_OPTIM(T, SFX)                                                                      \
    extern "C" __global__ void sgd_##SFX(T* p, const T* g, long long n, T lr, T wd) {         \
        mlp::sgd<T>(p, g, n, lr, wd);                                                         \
    }                                                                                         \
    extern "C" __global__ void momentum_##SFX(T* p, const T* g, T* buf, long long n, T lr,    \
                                              T mu, T wd, int nesterov) {                     \
        mlp::momentum<T>(p, g, buf, n, lr, mu, wd, nesterov);                                 \
    }                                                                                         \
    extern "C" __global__ void adagrad_##SFX(T* p, const T* g, T* s, long long n, T lr, T eps,\
                                             T wd) {                                          \
        mlp::adagrad<T>(p, g, s, n, lr, eps, wd);                                             \
    }                                                                                         \
    extern "C" __global__ void adadelta_##SFX(T* p, const T* g, T* sq, T* acc, long long n,   \
                                              T lr, T rho, T eps, T wd) {                     \
        mlp::adadelta<T>(p, g, sq, acc, n, lr, rho, eps, wd);                                 \
    }                                                                                         \
    extern "C" __global__ void rmsprop_##SFX(T* p, const T* g, T* sq, long long n, T lr,      \
                                             T rho, T eps, T wd) {                            \
        mlp::rmsprop<T>(p, g, sq, n, lr, rho, eps, wd);                                       \
    }                                                                                         \
    extern "C" __global__ void adam_##SFX(T* p, const T* g, T* m, T* v, long long n, T lr,    \
                                          T b1, T b2, T eps, T wd, T bc1, T bc2,              \
                                          int decoupled) {                                    \
        mlp::adam<T>(p, g, m, v, n, lr, b1, b2, eps, wd, bc1, bc2, decoupled);                \
    }                                                                                         \
    extern "C" __global__ void adam_dstep_##SFX(T* p, const T* g, T* m, T* v, long long n,    \
                                                T lr, T b1, T b2, T eps, T wd, const T* step, \
                                                int decoupled) {                              \
        mlp::adam_dstep<T>(p, g, m, v, n, lr, b1, b2, eps, wd, step, decoupled);              \
    }

MLP_OPTIM(float, f32)
MLP_OPTIM(double, f64)
