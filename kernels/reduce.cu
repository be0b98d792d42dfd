// reduce.cu - column sums (bias gradients) and the elementwise losses (MSE, binary
// cross-entropy) whose scalar loss is reduced on the device.
//
// colsum_<T>(const T* x, T* out, long long m, int n, long long rows_per_chunk)
//   x row-major (m, n). Block = (32, 8) threads: threadIdx.x picks one of 32 adjacent columns
//   (a warp reads 128 contiguous bytes of one row: coalesced), threadIdx.y one of 8 row lanes.
//   blockIdx.x = column tile, blockIdx.y = chunk of rows_per_chunk rows. The 8 row lanes are
//   combined through shared memory; the block writes out[blockIdx.y * n + col]. With
//   gridDim.y == 1 that is the answer; otherwise `out` is a (gridDim.y, n) partial buffer and
//   the host sums it with a second colsum launch (gridDim.y = 1). Fixed order: deterministic.
//
// mse_<T>(o, t, grad, partials, counter, loss, long long n, T grad_scale, T loss_scale)
//   grad = (o - t) * grad_scale (= 1 / M); loss = loss_scale * sum (o - t)^2 (= 1 / (2 M)).
// bce_<T>(o, t, grad, partials, counter, loss, long long n, T eps)
//   oc = clip(o, eps, 1 - eps); loss = -mean(t log oc + (1 - t) log(1 - oc));
//   grad = (oc - t) / (oc (1 - oc)) / n.
//   Grid-stride over n with blockDim.x = 256; the scalar loss is finished by the last block
//   (grid_sum_finish in common.cuh): partials holds gridDim.x T, counter one zeroed unsigned.
#include "common.cuh"

namespace mlp {

template <class T>
__device__ void colsum(const T* x, T* out, long long m, int n, long long rows_per_chunk) {
    __shared__ T part[8][33];  // +1 column: no bank conflicts when a column is read down
    const int col = blockIdx.x * 32 + threadIdx.x;
    const long long r0 = (long long)blockIdx.y * rows_per_chunk;
    long long r1 = r0 + rows_per_chunk;
    if (r1 > m) r1 = m;
    T s = T(0);
    if (col < n)
        for (long long r = r0 + threadIdx.y; r < r1; r += 8) s += x[r * n + col];
    part[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && col < n) {
        T t = part[0][threadIdx.x];
#pragma unroll
        for (int k = 1; k < 8; ++k) t += part[k][threadIdx.x];
        out[(long long)blockIdx.y * n + col] = t;
    }
}

template <class T>
__device__ void mse(const T* o, const T* t, T* grad, T* partials, unsigned* counter, T* loss,
                    long long n, T grad_scale, T loss_scale) {
    __shared__ T scratch[33];
    T acc = T(0);
    for (long long i = gtid(); i < n; i += gstride()) {
        T d = o[i] - t[i];
        grad[i] = d * grad_scale;
        acc += d * d;
    }
    grid_sum_finish(block_sum(acc, scratch), partials, counter, loss, loss_scale, scratch);
}

template <class T>
__device__ void bce(const T* o, const T* t, T* grad, T* partials, unsigned* counter, T* loss,
                    long long n, T eps) {
    __shared__ T scratch[33];
    const T inv_n = T(1) / T(n);
    T acc = T(0);
    for (long long i = gtid(); i < n; i += gstride()) {
        T oc = m_min(m_max(o[i], eps), T(1) - eps);
        T ti = t[i];
        acc += ti * m_log(oc) + (T(1) - ti) * m_log1p(-oc);
        grad[i] = (oc - ti) / (oc * (T(1) - oc)) * inv_n;
    }
    grid_sum_finish(block_sum(acc, scratch), partials, counter, loss, -inv_n, scratch);
}

}  // namespace mlp

#define MLP_REDUCE(T, SFX)                                                                     \
    extern "C" __global__ void colsum_##SFX(const T* x, T* out, long long m, int n,           \
                                            long long rows_per_chunk) {                       \
        mlp::colsum<T>(x, out, m, n, rows_per_chunk);                                         \
    }                                                                                         \
    extern "C" __global__ void mse_##SFX(const T* o, const T* t, T* grad, T* partials,        \
                                         unsigned* counter, T* loss, long long n,             \
                                         T grad_scale, T loss_scale) {                        \
        mlp::mse<T>(o, t, grad, partials, counter, loss, n, grad_scale, loss_scale);          \
    }                                                                                         \
    extern "C" __global__ void bce_##SFX(const T* o, const T* t, T* grad, T* partials,        \
                                         unsigned* counter, T* loss, long long n, T eps) {    \
        mlp::bce<T>(o, t, grad, partials, counter, loss, n, eps);                             \
    }

MLP_REDUCE(float, f32)
MLP_REDUCE(double, f64)
