// softmax.cu - row-wise softmax, its Jacobian-vector product, and fused softmax + cross-entropy
// (loss and gradient in one launch, the loss reduced on the device).
//
// Layout: row-major (M, C) logits. Thread -> data map: one warp per row (ROWS_PER_BLOCK = 8 warps
// of a 256-thread block), lanes stride over the C columns; rows are grid-strided. Per row: max
// (warp shuffle), sum of e^(z - max), then the outputs. A warp per row keeps every reduction in
// registers (no shared memory, no __syncthreads) for the class counts an MLP has (C = 10..1000).
//
// Entry points (T = f32 | f64; launch with blockDim.x = 256):
//   softmax_<T>(const T* z, T* out, int m, int c)
//   softmax_grad_<T>(const T* a, const T* g, T* out, int m, int c)   a (g - sum_j g_j a_j)
//   xent_<L>_<T>(const T* z, const L* labels, T* grad, T* partials, unsigned* counter,
//                T* loss, int m, int c)
//       L = i32 | i64 | fid (class ids stored as T) | prob (one-hot / probability rows (M, C)).
//       loss = mean_i [logsumexp(z_i) - sum_c y_ic z_ic];  grad = (softmax(z) - y) / M.
//       Each block leaves its partial loss in partials[blockIdx.x]; the last block adds them
//       in order (deterministic) and resets *counter (see grid_sum_finish in common.cuh).
//       A class id outside [0, C) makes the loss NaN (the host cannot check device labels
//       without a synchronisation).
#include "common.cuh"

namespace mlp {

template <class T>
struct RowStats {
    T max, sum;  // row max and sum_j e^(z_j - max)
};

template <class T>
__device__ __forceinline__ RowStats<T> row_stats(const T* zr, int c, int lane) {
    T mx = Lowest<T>::v();
    for (int j = lane; j < c; j += 32) mx = m_max(mx, zr[j]);
    mx = warp_max(mx);
    T s = T(0);
    for (int j = lane; j < c; j += 32) s += m_exp(zr[j] - mx);
    s = warp_sum(s);
    RowStats<T> r = {mx, s};
    return r;
}

__device__ __forceinline__ int warps_per_block() { return blockDim.x >> 5; }
__device__ __forceinline__ long long first_row() {
    return (long long)blockIdx.x * warps_per_block() + (threadIdx.x >> 5);
}
__device__ __forceinline__ long long row_stride() {
    return (long long)gridDim.x * warps_per_block();
}

template <class T>
__device__ void softmax(const T* z, T* out, int m, int c) {
    const int lane = threadIdx.x & 31;
    for (long long i = first_row(); i < m; i += row_stride()) {
        const T* zr = z + i * c;
        RowStats<T> st = row_stats(zr, c, lane);
        const T inv = T(1) / st.sum;
        T* orow = out + i * c;
        for (int j = lane; j < c; j += 32) orow[j] = m_exp(zr[j] - st.max) * inv;
    }
}

template <class T>
__device__ void softmax_grad(const T* a, const T* g, T* out, int m, int c) {
    const int lane = threadIdx.x & 31;
    for (long long i = first_row(); i < m; i += row_stride()) {
        const T* ar = a + i * c;
        const T* gr = g + i * c;
        T dot = T(0);
        for (int j = lane; j < c; j += 32) dot += ar[j] * gr[j];
        dot = warp_sum(dot);
        T* orow = out + i * c;
        for (int j = lane; j < c; j += 32) orow[j] = ar[j] * (gr[j] - dot);
    }
}

// y_ic as the kernel sees it: class ids (any integer or float type) or probability rows.
template <class T, class L>
struct IdLabels {
    const L* y;
    __device__ long long id(long long i) const { return (long long)y[i]; }
    __device__ T at(long long i, int j, int c) const { return id(i) == j ? T(1) : T(0); }
    __device__ T dot(const T* zr, long long i, int c, int lane) const {
        // z_{i, y_i}; NaN for an id outside [0, c)
        long long k = id(i);
        if (k < 0 || k >= c) return T(0) / T(0);
        return lane == 0 ? zr[k] : T(0);
    }
};
template <class T>
struct ProbLabels {
    const T* y;
    __device__ T at(long long i, int j, int c) const { return y[i * c + j]; }
    __device__ T dot(const T* zr, long long i, int c, int lane) const {
        T s = T(0);
        for (int j = lane; j < c; j += 32) s += y[i * c + j] * zr[j];
        return s;
    }
};

template <class T, class Y>
__device__ void xent(const T* z, Y y, T* grad, T* partials, unsigned* counter, T* loss, int m,
                     int c) {
    __shared__ T scratch[33];
    const int lane = threadIdx.x & 31;
    const T inv_m = T(1) / T(m);
    T acc = T(0);  // this thread's share of sum_i loss_i (lane 0 of each warp holds it)
    for (long long i = first_row(); i < m; i += row_stride()) {
        const T* zr = z + i * c;
        RowStats<T> st = row_stats(zr, c, lane);
        const T inv = T(1) / st.sum;
        T* gr = grad + i * c;
        for (int j = lane; j < c; j += 32)
            gr[j] = (m_exp(zr[j] - st.max) * inv - y.at(i, j, c)) * inv_m;
        T yz = warp_sum(y.dot(zr, i, c, lane));
        if (lane == 0) acc += st.max + m_log(st.sum) - yz;
    }
    T total = block_sum(acc, scratch);
    grid_sum_finish(total, partials, counter, loss, inv_m, scratch);
}

}  // namespace mlp

#define MLP_SOFTMAX(T, SFX)                                                                     \
    extern "C" __global__ void softmax_##SFX(const T* z, T* out, int m, int c) {               \
        mlp::softmax<T>(z, out, m, c);                                                         \
    }                                                                                          \
    extern "C" __global__ void softmax_grad_##SFX(const T* a, const T* g, T* out, int m,       \
                                                  int c) {                                     \
        mlp::softmax_grad<T>(a, g, out, m, c);                                                 \
    }                                                                                          \
    extern "C" __global__ void xent_prob_##SFX(const T* z, const T* y, T* grad, T* partials,   \
                                               unsigned* counter, T* loss, int m, int c) {     \
        mlp::ProbLabels<T> lab = {y};                                                          \
        mlp::xent<T>(z, lab, grad, partials, counter, loss, m, c);                             \
    }

#define MLP_XENT_IDS(T, SFX, L, LSFX)                                                           \
    extern "C" __global__ void xent_##LSFX##_##SFX(const T* z, const L* y, T* grad,            \
                                                   T* partials, unsigned* counter, T* loss,    \
                                                   int m, int c) {                             \
        mlp::IdLabels<T, L> lab = {y};                                                         \
        mlp::xent<T>(z, lab, grad, partials, counter, loss, m, c);                             \
    }

MLP_SOFTMAX(float, f32)
MLP_SOFTMAX(double, f64)
MLP_XENT_IDS(float, f32, int, i32)
MLP_XENT_IDS(float, f32, long long, i64)
MLP_XENT_IDS(float, f32, float, fid)
MLP_XENT_IDS(double, f64, int, i32)
MLP_XENT_IDS(double, f64, long long, i64)
MLP_XENT_IDS(double, f64, double, fid)
