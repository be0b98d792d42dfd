// fused_mlp.cu - one SGD training step of a small MLP in two launches ("fully fused", in the
// spirit of tiny-cuda-nn): float32, every layer width <= 128, ReLU hidden layers, a linear
// output layer with softmax cross-entropy (targets = one-hot / probability rows, loss = batch
// mean), then p -= lr * mean gradient.
//
// Parameters: ONE flat buffer in mlpaccel's layout (mlpaccel/params.py ParamLayout): per layer
// W (n_in, n_out) row-major, then b (n_out,). So layer l's block is an (n_in + 1) x n_out
// row-major matrix [W; b], and the bias is the weight of a constant-1 input column.
//
// Launch 1: fused_mlp_fwdbwd_tm<TM>_f32 - grid = min(tiles, cap) blocks of 256 threads (8 warps);
//   a tile is TM (8, 16 or 32) consecutive batch rows; block b takes tiles b, b + grid, ...
//   Per tile, everything stays in shared memory (dynamic smem, see below):
//     1. x rows -> act[0] (zeros for rows past the batch; column n_0 holds the constant 1)
//     2. per layer l: stage [W; b] into smem (coalesced, 16 loads in flight per thread), then
//        act[l+1] = relu([act[l], 1] . [W; b]); the last layer writes the logits into D0
//     3. softmax-CE, one warp per row: row loss into a per-thread accumulator, D0 becomes
//        delta = (softmax - y) / M in place (0 for rows past the batch)
//     4. per layer l = L-1 .. 0: stage W_l into smem again (not for l = L-1: still there from
//        the forward; row stride n_out|1, conflict-free for the transposed read), then in one
//        barrier interval
//          dP_l[i][j] (+)= sum_r [act[l], 1][r][i] * delta[r][j]     -> the block's partial slot
//          delta_prev[r][i] = (sum_j delta[r][j] W[i][j]) * (act[l][r][i] > 0)   (if l > 0)
//        (row i = n_in of dP_l is the bias gradient: the constant-1 column)
//   After its tiles: the block's loss sum -> loss_part[blockIdx.x].
//   Partial slots: part[blockIdx.x * nparams + p], written by the first tile, accumulated by the
//   later ones (same thread, same element: no atomics, deterministic for a given grid).
// Launch 2: fused_mlp_sgd_f32 / fused_mlp_sgd_dlr_f32 (lr read from a device scalar, for CUDA
//   graphs) - grid-stride over the parameters: g = sum_b part[b][p] in block order (fixed,
//   deterministic), p -= lr * g; block 0's first warp adds the loss partials in a fixed order
//   and writes loss = sum / M.
//
// Shared memory (floats; the host computes the same sum, cuda_fused_mlp.smem_bytes):
//   act[l], l < L:  TM x ((n_l + 1) | 1)      (n_l values + the 1 column, odd row stride)
//   D0, D1:         TM x (max_{l>=1} n_l | 1) each (logits/deltas, ping-pong)
//   Ws:             max_l (n_l + 1) x (n_{l+1} | 1)   ([W; b] of the layer being computed)
// e.g. 128-128-128-128-10, TM = 32: 66 + 33 + 66.6 KB = 166 KB (1 block/SM); TM = 8: 91 KB.
//
// Entry points:
//   fused_mlp_fwdbwd_tm{8,16,32}_f32(const float* params, const float* x, const float* y,
//        const int* dims, int nlayers, int m, float* part, float* loss_part, long long nparams)
//        dims = (n_0, ..., n_L) in device memory; nlayers = L <= 16; m = batch rows.
//   fused_mlp_sgd_f32(float* params, const float* part, int nparts, long long nparams, float lr,
//        const float* loss_part, float* loss, int m)
//   fused_mlp_sgd_dlr_f32(... the same, with const float* lr ...)
#include "common.cuh"

namespace mlp {
namespace fused {

constexpr int NT = 256;    // threads per block of launch 1
constexpr int MAXL = 16;   // layers
constexpr int RN = 4;      // output columns per thread in the tile GEMMs

__device__ __forceinline__ int act_stride(int w) { return (w + 1) | 1; }
__device__ __forceinline__ int odd(int w) { return w | 1; }

// ---------------------------------------------------------------- operand accessors
struct RowMajor {  // x(r, k) = p[r * ld + k]
    const float* p;
    int ld;
    __device__ __forceinline__ float operator()(int r, int k) const { return p[r * ld + k]; }
};
struct ColMajor {  // x(r, k) = p[k * ld + r]  (a transposed read)
    const float* p;
    int ld;
    __device__ __forceinline__ float operator()(int r, int k) const { return p[k * ld + r]; }
};

// ---------------------------------------------------------------- output functors
struct StoreRelu {  // hidden layer: a = max(z, 0)
    float* p;
    int ld;
    __device__ __forceinline__ void operator()(int r, int c, float v) const {
        p[r * ld + c] = positive(v) ? v : 0.f;
    }
};
struct Store {  // logits
    float* p;
    int ld;
    __device__ __forceinline__ void operator()(int r, int c, float v) const { p[r * ld + c] = v; }
};
struct StoreReluMask {  // delta_prev = v * relu'(a): a > 0 <=> z > 0 for relu
    float* p;
    int ld;
    const float* a;
    int lda;
    __device__ __forceinline__ void operator()(int r, int c, float v) const {
        p[r * ld + c] = positive(a[r * lda + c]) ? v : 0.f;
    }
};
struct PartialOut {  // the block's partial gradient slot: = on its first tile, += after
    float* p;
    int ld;
    bool first;
    __device__ __forceinline__ void operator()(int r, int c, float v) const {
        float* q = p + r * ld + c;
        *q = first ? v : *q + v;
    }
};

// C(M x N) = sum_{k < K} a(r, k) b(k, c), written through out(r, c, value). Work item = RM rows
// x RN columns, both strided (rows rg + i * nrg, columns cg + j * ncg) so that the lanes of a
// warp (consecutive cg) touch consecutive columns: coalesced global reads, no bank conflicts.
// Out-of-range rows/columns are clamped for the loads and skipped for the store, so the k loop
// has no branches. Every thread of the block must call it (no barrier inside).
template <int RM, class A, class B, class Out>
__device__ __forceinline__ void tile_gemm(int M, int N, int K, const A& a, const B& b,
                                          const Out& out) {
    const int ncg = (N + RN - 1) / RN;
    const int nrg = (M + RM - 1) / RM;
    for (int item = threadIdx.x; item < nrg * ncg; item += NT) {
        const int cg = item % ncg, rg = item / ncg;
        int rr[RM], cc[RN];
#pragma unroll
        for (int i = 0; i < RM; ++i) rr[i] = min(rg + i * nrg, M - 1);
#pragma unroll
        for (int j = 0; j < RN; ++j) cc[j] = min(cg + j * ncg, N - 1);
        float acc[RM][RN];
#pragma unroll
        for (int i = 0; i < RM; ++i)
#pragma unroll
            for (int j = 0; j < RN; ++j) acc[i][j] = 0.f;
#pragma unroll 4
        for (int k = 0; k < K; ++k) {
            float av[RM], bv[RN];
#pragma unroll
            for (int i = 0; i < RM; ++i) av[i] = a(rr[i], k);
#pragma unroll
            for (int j = 0; j < RN; ++j) bv[j] = b(k, cc[j]);
#pragma unroll
            for (int i = 0; i < RM; ++i)
#pragma unroll
                for (int j = 0; j < RN; ++j) acc[i][j] = fmaf(av[i], bv[j], acc[i][j]);
        }
#pragma unroll
        for (int i = 0; i < RM; ++i) {
            const int r = rg + i * nrg;
#pragma unroll
            for (int j = 0; j < RN; ++j) {
                const int c = cg + j * ncg;
                if (r < M && c < N) out(r, c, acc[i][j]);
            }
        }
    }
}

// dst[r * ld + c] = src[r * n + c] for r < rows, c < n: a whole block copies a row-major
// matrix from global into a padded smem layout, coalesced, with 16 independent loads in flight
// per thread before the stores (a load -> store loop would wait one memory latency per element).
__device__ __forceinline__ void stage(float* dst, int ld, const float* __restrict__ src,
                                      int rows, int n) {
    const int total = rows * n;
    for (int base = threadIdx.x; base < total; base += NT * 16) {
        float v[16];
#pragma unroll
        for (int u = 0; u < 16; ++u) {
            const int idx = base + u * NT;
            v[u] = idx < total ? src[idx] : 0.f;
        }
#pragma unroll
        for (int u = 0; u < 16; ++u) {
            const int idx = base + u * NT;
            if (idx < total) {
                const int r = idx / n;
                dst[r * ld + idx - r * n] = v[u];
            }
        }
    }
}

template <int TM>
__device__ void fwdbwd(const float* __restrict__ P, const float* __restrict__ X,
                       const float* __restrict__ Y, const int* __restrict__ dims, int L, int m,
                       float* __restrict__ part, float* __restrict__ loss_part,
                       long long nparams) {
    constexpr int RM = TM / 8;  // rows per thread in the forward/dX GEMMs: 8 x 32 work items
    __shared__ int s_n[MAXL + 1];   // widths n_0 .. n_L
    __shared__ int s_act[MAXL];     // smem offset (floats) of act[l]
    __shared__ int s_poff[MAXL];    // parameter offset of layer l's [W; b]
    __shared__ int s_misc[4];       // D0, D1, Ws offsets, delta row stride
    __shared__ float s_red[33];
    extern __shared__ __align__(16) float sm[];

    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    if (tid == 0) {
        int off = 0, poff = 0, maxw = 1;
        for (int l = 0; l <= L; ++l) s_n[l] = dims[l];
        for (int l = 0; l < L; ++l) {
            s_act[l] = off;
            off += TM * act_stride(s_n[l]);
            s_poff[l] = poff;
            poff += (s_n[l] + 1) * s_n[l + 1];
            maxw = max(maxw, s_n[l + 1]);
        }
        const int sd = odd(maxw);
        s_misc[0] = off;
        s_misc[1] = off + TM * sd;
        s_misc[2] = off + 2 * TM * sd;
        s_misc[3] = sd;
    }
    __syncthreads();
    // the constant-1 column of every layer input (never overwritten)
    for (int l = 0; l < L; ++l) {
        const int n = s_n[l];
        for (int r = tid; r < TM; r += NT) sm[s_act[l] + r * act_stride(n) + n] = 1.f;
    }

    float* Ws = sm + s_misc[2];
    const float inv_m = 1.f / (float)m;
    const int sd = s_misc[3];
    const int C = s_n[L];
    float* slot = part + (long long)blockIdx.x * nparams;
    const int ntiles = (m + TM - 1) / TM;
    float loss_acc = 0.f;
    bool first = true;
    for (int tile = blockIdx.x; tile < ntiles; tile += gridDim.x) {
        const int row0 = tile * TM;
        {   // 1. the tile's inputs (rows past the batch: zeros), 16 loads in flight per thread
            const int n0 = s_n[0], s0 = act_stride(n0);
            const int rows = min(TM, m - row0);
            stage(sm + s_act[0], s0, X + (long long)row0 * n0, rows, n0);
            for (int idx = rows * n0 + tid; idx < TM * n0; idx += NT) {
                const int r = idx / n0;
                sm[s_act[0] + r * s0 + idx - r * n0] = 0.f;
            }
        }
        // 2. forward: per layer stage [W; b] into smem, then the tile GEMM
        for (int l = 0; l < L; ++l) {
            const int nin = s_n[l], nout = s_n[l + 1];
            stage(Ws, odd(nout), P + s_poff[l], nin + 1, nout);
            __syncthreads();  // Ws staged; act[l] complete
            RowMajor a = {sm + s_act[l], act_stride(nin)};
            RowMajor w = {Ws, odd(nout)};
            if (l + 1 < L) {
                StoreRelu o = {sm + s_act[l + 1], act_stride(nout)};
                tile_gemm<RM>(TM, nout, nin + 1, a, w, o);
            } else {
                Store o = {sm + s_misc[0], sd};
                tile_gemm<RM>(TM, nout, nin + 1, a, w, o);
            }
            __syncthreads();
        }
        // 3. softmax cross-entropy, one warp per row (warp-uniform row test)
        for (int r = warp; r < TM; r += NT / 32) {
            float* z = sm + s_misc[0] + r * sd;
            const int gr = row0 + r;
            if (gr < m) {
                const float* y = Y + (long long)gr * C;
                float mx = Lowest<float>::v();
                for (int j = lane; j < C; j += 32) mx = m_max(mx, z[j]);
                mx = warp_max(mx);
                float s = 0.f, dot = 0.f;
                for (int j = lane; j < C; j += 32) {
                    s += m_exp(z[j] - mx);
                    dot += y[j] * z[j];
                }
                s = warp_sum(s);
                dot = warp_sum(dot);
                if (lane == 0) loss_acc += (mx + m_log(s)) - dot;
                const float inv_s = 1.f / s;
                for (int j = lane; j < C; j += 32) z[j] = (m_exp(z[j] - mx) * inv_s - y[j]) * inv_m;
            } else {
                for (int j = lane; j < C; j += 32) z[j] = 0.f;
            }
        }
        // 4. backward
        float* Dc = sm + s_misc[0];
        float* Dn = sm + s_misc[1];
        for (int l = L - 1; l >= 0; --l) {
            const int nin = s_n[l], nout = s_n[l + 1], sw = odd(nout);
            // the last layer's W is still staged from the forward pass; dX reads rows < nin
            if (l > 0 && l < L - 1) stage(Ws, sw, P + s_poff[l], nin, nout);
            __syncthreads();  // Ws staged; delta (Dc) complete
            const float* act = sm + s_act[l];
            const int sa = act_stride(nin);
            {   // dP_l = [act, 1]^T delta: rows i <= nin (i = nin: the bias), K = TM rows
                ColMajor a = {act, sa};
                RowMajor d = {Dc, sd};
                PartialOut o = {slot + s_poff[l], nout, first};
                tile_gemm<4>(nin + 1, nout, TM, a, d, o);
            }
            if (l > 0) {  // delta_prev = (delta W^T) * relu'(act)
                RowMajor d = {Dc, sd};
                ColMajor wt = {Ws, sw};  // wt(k = j, c = i) = Ws[i * sw + j]
                StoreReluMask o = {Dn, sd, act, sa};
                tile_gemm<RM>(TM, nin, nout, d, wt, o);
            }
            __syncthreads();
            float* t = Dc;
            Dc = Dn;
            Dn = t;
        }
        first = false;
    }
    if (first) {  // no tile for this block (the host never launches that): an all-zero slot
        for (long long p = tid; p < nparams; p += NT) slot[p] = 0.f;
    }
    const float total = block_sum(loss_acc, s_red);
    if (tid == 0) loss_part[blockIdx.x] = total;
}

__device__ __forceinline__ void sgd_reduce(float* __restrict__ P, const float* __restrict__ part,
                                           int nparts, long long nparams, float lr,
                                           const float* __restrict__ loss_part,
                                           float* __restrict__ loss, int m) {
    for (long long p = gtid(); p < nparams; p += gstride()) {
        float g = 0.f;
#pragma unroll 4
        for (int b = 0; b < nparts; ++b) g += part[(long long)b * nparams + p];
        P[p] = P[p] - lr * g;
    }
    if (blockIdx.x == 0 && threadIdx.x < 32) {
        float s = 0.f;
        for (int b = threadIdx.x; b < nparts; b += 32) s += loss_part[b];
        s = warp_sum(s);
        if (threadIdx.x == 0) *loss = s / (float)m;
    }
}

}  // namespace fused
}  // namespace mlp

extern "C" __global__ void __launch_bounds__(256)
    fused_mlp_fwdbwd_tm8_f32(const float* params, const float* x, const float* y,
                             const int* dims, int nlayers, int m, float* part, float* loss_part,
                             long long nparams) {
    mlp::fused::fwdbwd<8>(params, x, y, dims, nlayers, m, part, loss_part, nparams);
}

extern "C" __global__ void __launch_bounds__(256)
    fused_mlp_fwdbwd_tm16_f32(const float* params, const float* x, const float* y,
                              const int* dims, int nlayers, int m, float* part, float* loss_part,
                              long long nparams) {
    mlp::fused::fwdbwd<16>(params, x, y, dims, nlayers, m, part, loss_part, nparams);
}

extern "C" __global__ void __launch_bounds__(256)
    fused_mlp_fwdbwd_tm32_f32(const float* params, const float* x, const float* y,
                              const int* dims, int nlayers, int m, float* part, float* loss_part,
                              long long nparams) {
    mlp::fused::fwdbwd<32>(params, x, y, dims, nlayers, m, part, loss_part, nparams);
}

extern "C" __global__ void fused_mlp_sgd_f32(float* params, const float* part, int nparts,
                                             long long nparams, float lr,
                                             const float* loss_part, float* loss, int m) {
    mlp::fused::sgd_reduce(params, part, nparts, nparams, lr, loss_part, loss, m);
}

extern "C" __global__ void fused_mlp_sgd_dlr_f32(float* params, const float* part, int nparts,
                                                 long long nparams, const float* lr,
                                                 const float* loss_part, float* loss, int m) {
    mlp::fused::sgd_reduce(params, part, nparts, nparams, *lr, loss_part, loss, m);
}
