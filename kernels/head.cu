// head.cu - a classifier's output layer, forward AND backward, in ONE launch: the linear layer,
// softmax cross-entropy, the weight and bias gradients and the input gradient handed to the
// layer below. At small batches the six launches this replaces (GEMM, softmax-CE, dW GEMM,
// column sums, dX GEMM with f', loss copy) are each latency-bound; here the logits never leave
// the chip.
//
//   z = x W + b;  E = (1/M) sum_i [lse(z_i) - y_i . z_i];  delta = (softmax(z) - y) / M
//   gW = x^T delta (K, C);  gb = colsum(delta) (C,);  dX = (delta W^T) * f'(aux) (M, K)
//   gbb = colsum(dX) (K,): the bias gradient of the layer below (its delta is dX)
//
// Shapes (row-major, contiguous): x (M, K), W (K, C), b (C,), y (M, C) one-hot / probability
// rows (the loss assumes each row sums to 1, as xent does), gW (K, C), gb (C,), loss (1
// element), dX and aux (M, K): aux is the layer below's z (relu, leaky_relu, gelu) or a
// (sigmoid, tanh), read when dact != 0 (codes of common.cuh dact_by_code). C <= CMAX.
//
// Launch: grid = G blocks (1 <= G <= ceil(M / 8)), NT = 256 threads, dynamic shared memory
// head_smem_bytes (host: cuda_head.smem_bytes). A chunk is 8 consecutive rows, one per warp;
// block g takes chunks g, g + G, ...
//   A. warp w, row r: the row is staged into xs[w][.] (XB loads in flight per lane); the
//      lanes split k (k = lane + 32 j); each lane keeps C partial dot products, reduced over
//      the warp by butterflies (every lane ends with all C logits);
//      softmax-CE in registers: lane c writes delta[w][c] = (p_c - y_c) / M, lane 0 adds the
//      row's lse - y . z to its loss sum.
//   B. (after one barrier) thread t owns k = t, t + 256, ...: it loads the chunk's 8 aux
//      values first (all in flight), then for the chunk's rows
//      dX[r][k] = (sum_c delta[r][c] W[k][c]) f'(aux[r][k])   and   acc[c][k] += x[r][k] delta[r][c]
//      with W[k][.] and acc[.][k] in registers (and accb[k] += sum_r dX[r][k]); threads t < C
//      add the bias gradient.
// Finish: with G = 1 the block writes gW, gb, loss, gbb. Else each block writes its partial
// [gW | gb | loss sum | gbb] (S = K C + C + 1 + K values) to part[g * S ...]; the last block
// to finish (ticket from an atomic counter, as grid_sum_finish) adds the partials in block
// order - deterministic, no float atomics - writes the outputs and resets the counter; each of
// its threads keeps HEAD_RB sums in registers so a partial's loads are in flight together.
//
// Shared memory (T): Ws[C][K] (W transposed, so thread-per-k reads are conflict-free),
// acc[C][K], accb[K], xs[8][K], ds[8][CMAX], bs[CMAX], scratch[33].
//
// Entry points: xent_head_c<16|32>_<f32|f64>(x, W, b, y, gW, gb, loss, dX, gbb, aux, dact, p,
//   part, counter, M, K, C, flags, loss_acc, acc_w); flags bit 0: add b and write gb, bit 1:
//   write dX, bit 2: write gbb (needs bit 1), bit 3: also *loss_acc += acc_w * loss (the
//   trainer's epoch loss sum: one launch fewer per step; axpy's expression, so axpy's bits).
//   Pointers a flag switches off are not read or written (pass any valid pointer).
#include "common.cuh"

namespace mlp {
namespace head {

constexpr int NT = 256;       // threads per block
constexpr int RW = NT / 32;   // rows per chunk: one per warp
constexpr int XB = 8;         // x values per lane loaded before any is stored (loads in flight)
constexpr int HEAD_RB = 16;   // partial sums per thread in the last block's finish (in flight)

template <class T, int CMAX>
__device__ void xent_head(T* sm, const T* __restrict__ x, const T* __restrict__ W,
                          const T* __restrict__ b, const T* __restrict__ y, T* gW, T* gb,
                          T* loss, T* dX, T* gbb, const T* __restrict__ aux, int dact, T p,
                          T* part, unsigned* counter, int M, int K, int C, int flags,
                          T* loss_acc, T acc_w) {
    const int KC = K * C;
    T* Ws = sm;                        // [C][K]
    T* acc = Ws + KC;                  // [C][K]
    T* accb = acc + KC;                // [K]
    T* xs = accb + K;                  // [RW][K]
    T* ds = xs + RW * K;               // [RW][CMAX]
    T* bs = ds + RW * CMAX;            // [CMAX]
    T* scratch = bs + CMAX;            // [33]
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const bool has_bias = flags & 1, want_dx = flags & 2, want_dbb = (flags & 6) == 6;
    const T inv_m = T(1) / T(M);

    for (int i = tid; i < KC; i += NT) {  // W (K, C) row-major -> Ws[c][k]; zero acc
        const int k = i / C, c = i - k * C;
        Ws[c * K + k] = W[i];
        acc[i] = T(0);
    }
    for (int k = tid; k < K; k += NT) accb[k] = T(0);
    if (tid < CMAX) bs[tid] = (has_bias && tid < C) ? b[tid] : T(0);
    T loss_sum = T(0);  // lane 0 of each warp: sum of its rows' losses
    T db_sum = T(0);    // thread t < C: sum of delta[.][t] over this block's rows
    __syncthreads();

    const int chunks = (M + RW - 1) / RW;
    for (int q = blockIdx.x; q < chunks; q += gridDim.x) {
        const int r0 = q * RW;
        const int r = r0 + warp;
        if (r < M) {  // A: warp-uniform branch (r depends on the warp only)
            const T* xr = x + (long long)r * K;
            T* xw = xs + warp * K;
            // the row into shared memory XB values per lane at a time, all loads in flight
            // before the first store (a load-use loop would wait out one global-memory
            // latency per 32 values: measured ~7.5 us per chunk on an H200 before this)
            for (int k0 = 0; k0 < K; k0 += 32 * XB) {
                T v[XB];
#pragma unroll
                for (int j = 0; j < XB; ++j) {
                    const int k = k0 + lane + 32 * j;
                    v[j] = k < K ? xr[k] : T(0);
                }
#pragma unroll
                for (int j = 0; j < XB; ++j) {
                    const int k = k0 + lane + 32 * j;
                    if (k < K) xw[k] = v[j];
                }
            }
            __syncwarp();
            T z[CMAX];
#pragma unroll
            for (int c = 0; c < CMAX; ++c) z[c] = T(0);
            for (int k = lane; k < K; k += 32) {
                const T xv = xw[k];
#pragma unroll
                for (int c = 0; c < CMAX; ++c)
                    if (c < C) z[c] += xv * Ws[c * K + k];
            }
            T mx = Lowest<T>::v(), zc = T(0);
#pragma unroll
            for (int c = 0; c < CMAX; ++c) {
                if (c < C) {
                    z[c] = warp_sum(z[c]) + bs[c];
                    mx = m_max(mx, z[c]);
                    if (lane == c) zc = z[c];
                }
            }
            T s = T(0);
#pragma unroll
            for (int c = 0; c < CMAX; ++c)
                if (c < C) s += m_exp(z[c] - mx);
            const T inv = T(1) / s;
            T yz = T(0);
            if (lane < C) {
                const T yc = y[(long long)r * C + lane];
                ds[warp * CMAX + lane] = (m_exp(zc - mx) * inv - yc) * inv_m;
                yz = yc * zc;
            }
            yz = warp_sum(yz);
            if (lane == 0) loss_sum += mx + m_log(s) - yz;
        }
        __syncthreads();
        // B
        const int nr = M - r0 < RW ? M - r0 : RW;
        for (int k = tid; k < K; k += NT) {
            T w[CMAX], a[CMAX];
#pragma unroll
            for (int c = 0; c < CMAX; ++c) {
                w[c] = c < C ? Ws[c * K + k] : T(0);
                a[c] = c < C ? acc[c * K + k] : T(0);
            }
            // the chunk's f'(aux) inputs, all loads issued before the first use
            T av[RW];
#pragma unroll
            for (int rr = 0; rr < RW; ++rr)
                av[rr] = (want_dx && dact && rr < nr) ? aux[(long long)(r0 + rr) * K + k] : T(0);
            T colsum = T(0);
#pragma unroll
            for (int rr = 0; rr < RW; ++rr) {
                if (rr >= nr) break;
                const T xv = xs[rr * K + k];
                const T* d = ds + rr * CMAX;
                T g = T(0);
#pragma unroll
                for (int c = 0; c < CMAX; ++c) {
                    if (c < C) {
                        const T dc = d[c];
                        g += dc * w[c];
                        a[c] += xv * dc;
                    }
                }
                if (want_dx) {
                    const long long idx = (long long)(r0 + rr) * K + k;
                    if (dact) g *= dact_by_code(av[rr], dact, p);
                    dX[idx] = g;
                    colsum += g;
                }
            }
            if (want_dbb) accb[k] += colsum;
#pragma unroll
            for (int c = 0; c < CMAX; ++c)
                if (c < C) acc[c * K + k] = a[c];
        }
        if (tid < C)
            for (int rr = 0; rr < nr; ++rr) db_sum += ds[rr * CMAX + tid];
        __syncthreads();  // xs and ds are rewritten by the next chunk
    }

    const T lsum = block_sum(loss_sum, scratch);
    if (gridDim.x == 1) {
        for (int i = tid; i < KC; i += NT) {
            const int k = i / C, c = i - k * C;
            gW[i] = acc[c * K + k];
        }
        if (has_bias && tid < C) gb[tid] = db_sum;
        if (tid == 0) {
            const T L = lsum * inv_m;
            *loss = L;
            if (flags & 8) *loss_acc += acc_w * L;
        }
        if (want_dbb)
            for (int k = tid; k < K; k += NT) gbb[k] = accb[k];
        return;
    }
    const int S = KC + C + 1 + (want_dbb ? K : 0);
    T* mine = part + (long long)blockIdx.x * S;
    for (int i = tid; i < KC; i += NT) {
        const int k = i / C, c = i - k * C;
        mine[i] = acc[c * K + k];
    }
    if (tid < C) mine[KC + tid] = db_sum;
    if (tid == 0) mine[KC + C] = lsum;
    if (want_dbb)
        for (int k = tid; k < K; k += NT) mine[KC + C + 1 + k] = accb[k];
    __threadfence();  // this thread's partials are visible before the ticket is taken
    __syncthreads();
    if (tid == 0) {
        const unsigned ticket = atomicAdd(counter, 1u);
        scratch[32] = (ticket == gridDim.x - 1) ? T(1) : T(0);
    }
    __syncthreads();
    if (scratch[32] == T(0)) return;  // uniform per block
    __threadfence();
    // Each thread sums its RB elements over the G partials in block order (so the bits do
    // not depend on the grid's timing), with the RB loads of one partial all in flight: one
    // L2 round trip per partial. (A volatile load per (partial, element) in program order
    // waited out one round trip each: ~0.33 us per block on an H200, run 6.) __ldcg reads
    // at L2, where the other blocks' fenced stores are; this SM's L1 never held them.
    for (int i0 = tid; i0 < S; i0 += HEAD_RB * NT) {
        T s[HEAD_RB];
#pragma unroll
        for (int j = 0; j < HEAD_RB; ++j) s[j] = T(0);
        for (unsigned g = 0; g < gridDim.x; ++g) {
            const T* pg = part + (long long)g * S;
#pragma unroll
            for (int j = 0; j < HEAD_RB; ++j) {  // no branch between the loads: past S a
                const int i = i0 + j * NT;       // lane re-reads element S-1 and drops it
                s[j] += __ldcg(pg + (i < S ? i : S - 1));
            }
        }
#pragma unroll
        for (int j = 0; j < HEAD_RB; ++j) {
            const int i = i0 + j * NT;
            if (i >= S) break;
            if (i < KC)
                gW[i] = s[j];
            else if (i < KC + C) {
                if (has_bias) gb[i - KC] = s[j];
            } else if (i == KC + C) {
                const T L = s[j] * inv_m;
                *loss = L;
                if (flags & 8) *loss_acc += acc_w * L;
            } else {
                gbb[i - KC - C - 1] = s[j];
            }
        }
    }
    if (tid == 0) *counter = 0u;
}

}  // namespace head
}  // namespace mlp

#define MLP_HEAD(T, SFX, CMAX)                                                                 \
    extern "C" __global__ void __launch_bounds__(256, 1) xent_head_c##CMAX##_##SFX(            \
        const T* x, const T* W, const T* b, const T* y, T* gW, T* gb, T* loss, T* dX,          \
        T* gbb, const T* aux, int dact, T p, T* part, unsigned* counter, int M, int K, int C,  \
        int flags, T* loss_acc, T acc_w) {                                                     \
        extern __shared__ __align__(16) T head_smem_##SFX[];                                   \
        mlp::head::xent_head<T, CMAX>(head_smem_##SFX, x, W, b, y, gW, gb, loss, dX, gbb, aux, \
                                      dact, p, part, counter, M, K, C, flags, loss_acc,        \
                                      acc_w);                                                  \
    }

MLP_HEAD(float, f32, 16)
MLP_HEAD(float, f32, 32)
MLP_HEAD(double, f64, 16)
MLP_HEAD(double, f64, 32)
