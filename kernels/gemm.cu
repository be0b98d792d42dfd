// mlpaccel GEMM kernels: C = op(A) op(B) (+ bias) (activation epilogue), row-major.
//
// op(A) is (M, K): A is stored (M, K) ("n") or (K, M) ("t", read transposed in place).
// op(B) is (K, N): B is stored (K, N) ("n") or (N, K) ("t").  C is (M, N), ldc = N.
// No transposed copy is ever made: the loaders read the stored layout and write the shared-
// memory tile in the layout the inner loop wants.
//
// Entry points (extern "C"), one per configuration x transpose form x load width:
//   gemm_<cfg>_<nn|tn|nt|tt>_<v|s>_f32   SIMT FP32 (v: 16-byte loads, needs every leading
//                                         dimension % 4 == 0 and 16-byte aligned pointers)
//   gemm_<cfg>s<3|4>_<form>_<v|s>_f32    SIMT FP32 with a cp.async ring (v path; s = gemm_simt):
//                                         gemm_simt_async (13-15) or gemm_simt_ring (16)
//   gemm_<tccfg>_<form>_<v|s>_f32        TF32 tensor cores (mma.sync m16n8k8), FP32 accumulate
//   gemm_64x64x8_<form>_s_f64            FP64 (tests / golden numbers)
// All GEMM entry points share one signature:
//   (const T* A, const T* B, T* C, const T* bias, T* Z, const T* aux,
//    int M, int N, int K, int k_chunk, int epi, T param, T* Cout, unsigned* tiles, int epi_out)
// k_chunk: K range of one blockIdx.z slice (split-K; == K when gridDim.z == 1). With split-K
// slice z writes its raw partial product to C + z*M*N (epi must be 0); then the last slice to
// finish each output tile (a ticket per tile in tiles[], zero before the launch and reset by
// that block) adds the tile's partials in slice order z = 0, 1, ... (deterministic, no float
// atomics) and writes epilogue_out(sum) into Cout - no second launch.
// Without split-K (gridDim.z == 1) Cout, tiles and epi_out are not used.
// epi bits: 1 = add bias[n]; (epi >> 1) & 7 = activation f applied to the output;
//           16 = also store the pre-activation into Z; (epi >> 5) & 7 = multiply the output
//           by f'(aux[m, n]) (backward: delta = (grad W^T) * f'(z)); param = leaky_relu slope.
// Activation codes: 1 relu, 2 leaky_relu, 3 sigmoid, 4 tanh, 5 gelu (erf form). The
// derivative reads z for relu/leaky_relu/gelu and a = f(z) for sigmoid/tanh.
// -DGEMM_CFG=<id> compiles one configuration only (ids in mlpaccel/backends/cuda_gemm.py).
#include "common.cuh"

#ifndef GEMM_CFG
#define GEMM_CFG (-1)
#endif
#define GEMM_WANT(id) (GEMM_CFG < 0 || GEMM_CFG == (id))

#ifdef MLPACCEL_EMU
#ifndef __align__
#define __align__(n) alignas(n)
#endif
struct alignas(16) gemm_v4f { float x, y, z, w; };
#else
typedef float4 gemm_v4f;
#endif

// ---------------------------------------------------------------- epilogue
// gemm_store (one output element through the epilogue) and gemm_splitk_finish: common.cuh,
// shared with gemm_wgmma.cu; f and f' by code: mlp::act_by_code / mlp::dact_by_code.

// ---------------------------------------------------------------- global tile loader
// Loads an R x CC tile (rows [r0, rmax), cols [c0, cmax)) of a row-major matrix with leading
// dimension ld into registers, four consecutive columns per slot. VEC: one 16-byte load per
// slot (cmax and ld multiples of 4, so a slot is entirely in or out); else four predicated
// scalar loads. Out-of-range elements read as zero, so edge tiles need no special inner loop.
template <typename T, int R, int CC, int NT, bool VEC>
struct GemmTileLoader {
    static constexpr int SLOTS = R * CC / 4;
    static constexpr int PER = (SLOTS + NT - 1) / NT;
    T v[PER][4];

    __device__ __forceinline__ void load(const T* g, int ld, int r0, int rmax, int c0, int cmax,
                                         int tid) {
#pragma unroll
        for (int s = 0; s < PER; ++s) {
            const int f = tid + s * NT;
            const int r = f / (CC / 4), c = (f % (CC / 4)) * 4;
            const int gr = r0 + r, gc = c0 + c;
            const bool live = (SLOTS % NT == 0 || f < SLOTS) && gr < rmax;
            if (VEC) {
                if (live && gc < cmax) {
                    const gemm_v4f q =
                        *reinterpret_cast<const gemm_v4f*>(g + (long long)gr * ld + gc);
                    v[s][0] = q.x; v[s][1] = q.y; v[s][2] = q.z; v[s][3] = q.w;
                } else {
                    v[s][0] = v[s][1] = v[s][2] = v[s][3] = T(0);
                }
            } else {
#pragma unroll
                for (int i = 0; i < 4; ++i)
                    v[s][i] = (live && gc + i < cmax) ? g[(long long)gr * ld + gc + i] : T(0);
            }
        }
    }
    // Stores into smem laid out [CC][LDS] (transposed: column c of the tile becomes row c).
    template <int LDS>
    __device__ __forceinline__ void store_t(T* s, int tid) const {
#pragma unroll
        for (int q = 0; q < PER; ++q) {
            const int f = tid + q * NT;
            if (SLOTS % NT != 0 && f >= SLOTS) continue;
            const int r = f / (CC / 4), c = (f % (CC / 4)) * 4;
#pragma unroll
            for (int i = 0; i < 4; ++i) s[(c + i) * LDS + r] = v[q][i];
        }
    }
    // Stores into smem laid out [R][LDS] (same orientation as global), optionally converting
    // to TF32 bit patterns (done once here rather than once per warp that reads the value).
    template <int LDS, bool TF32>
    __device__ __forceinline__ void store_n(T* s, int tid) const {
#pragma unroll
        for (int q = 0; q < PER; ++q) {
            const int f = tid + q * NT;
            if (SLOTS % NT != 0 && f >= SLOTS) continue;
            const int r = f / (CC / 4), c = (f % (CC / 4)) * 4;
            T w[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                if constexpr (TF32) {
                    const uint32_t b = f32_to_tf32(v[q][i]);
                    w[i] = __uint_as_float(b);
                } else {
                    w[i] = v[q][i];
                }
            }
            if constexpr (sizeof(T) == 4) {
                gemm_v4f o; o.x = w[0]; o.y = w[1]; o.z = w[2]; o.w = w[3];
                *reinterpret_cast<gemm_v4f*>(s + r * LDS + c) = o;
            } else {
#pragma unroll
                for (int i = 0; i < 4; ++i) s[r * LDS + c + i] = w[i];
            }
        }
    }
};

template <typename T>
__device__ __forceinline__ void gemm_lds4(T* d, const T* s) {
    if constexpr (sizeof(T) == 4) {
        const gemm_v4f q = *reinterpret_cast<const gemm_v4f*>(s);
        d[0] = q.x; d[1] = q.y; d[2] = q.z; d[3] = q.w;
    } else {
#pragma unroll
        for (int i = 0; i < 4; ++i) d[i] = s[i];
    }
}

// ---------------------------------------------------------------- SIMT thread tile
// The SIMT kernels' lane -> output map: a warp's 32 lanes form WTR x WTC over its warp tile and
// lane (tr, tc) owns TM x TN outputs taken as 4x4 chunks strided by WTR*4 rows and WTC*4
// columns, so that per k the 16-byte smem reads of a warp touch WTR (A) and WTC (B) distinct
// consecutive 16-byte words: a broadcast / one 128-byte wavefront, no bank conflicts.
// These two helpers are gemm_simt's inner loop and output loop, expression for expression;
// gemm_simt and gemm_simt_async keep their inline copies because calling the helpers there
// gives the same PTX up to virtual-register numbering but a different register allocation in
// the SASS of the measured configs (checked with nvdisasm); gemm_simt_ring uses them.
// acc += one k-major smem tile pair (A tile as [BK][LA], B tile bs [BK][LB]) for the lane
// (tr, tc) of the warp tile at (wm0, wn0): TM/4 + TN/4 ld.shared.v4 per k.
template <typename T, int BK, int LA, int LB, int TM, int TN, int WTR, int WTC>
__device__ __forceinline__ void gemm_simt_tile(T (&acc)[TM][TN], const T* as, const T* bs,
                                               int wm0, int wn0, int tr, int tc) {
#pragma unroll
    for (int k = 0; k < BK; ++k) {
        T a[TM], b[TN];
#pragma unroll
        for (int c = 0; c < TM / 4; ++c)
            gemm_lds4(a + 4 * c, as + k * LA + wm0 + c * WTR * 4 + tr * 4);
#pragma unroll
        for (int c = 0; c < TN / 4; ++c)
            gemm_lds4(b + 4 * c, bs + k * LB + wn0 + c * WTC * 4 + tc * 4);
#pragma unroll
        for (int i = 0; i < TM; ++i)
#pragma unroll
            for (int j = 0; j < TN; ++j) acc[i][j] += a[i] * b[j];
    }
}

// Stores the TM x TN accumulators of lane (tr, tc) through gemm_store (the epilogue);
// (bm0, bn0): the block tile's first output, (wm0, wn0): the warp tile's offset in it.
template <typename T, int TM, int TN, int WTR, int WTC>
__device__ __forceinline__ void gemm_simt_store(const T (&acc)[TM][TN], T* C, const T* bias,
                                                T* Z, const T* aux, int M, int N, int bm0,
                                                int bn0, int wm0, int wn0, int tr, int tc,
                                                int epi, T p) {
#pragma unroll
    for (int i = 0; i < TM; ++i) {
        const int m = bm0 + wm0 + (i / 4) * WTR * 4 + tr * 4 + (i % 4);
        if (m >= M) continue;
#pragma unroll
        for (int j = 0; j < TN; ++j) {
            const int n = bn0 + wn0 + (j / 4) * WTC * 4 + tc * 4 + (j % 4);
            if (n < N) gemm_store(C, bias, Z, aux, N, m, n, acc[i][j], epi, p);
        }
    }
}

// ---------------------------------------------------------------- SIMT kernel
// Block tile BM x BN, K step BK; warps tile the block with WM x WN warp tiles; inside a warp
// the 32 lanes form (WM/TM) x (WN/TN) and each lane owns TM x TN outputs, taken as 4x4 chunks
// strided across the warp tile so that the 16-byte shared-memory reads of a warp hit distinct
// banks or broadcast. Smem holds A as [BK][BM] and B as [BK][BN] (k-major), double-buffered:
// the next tile is fetched into registers while the current one is multiplied, so there is one
// __syncthreads per K step.
template <typename T, int BM, int BN, int BK, int WM, int WN, int TM, int TN, bool TA, bool TB,
          bool VEC>
__device__ __forceinline__ void gemm_simt(const T* __restrict__ A, const T* __restrict__ B,
                                          T* C, const T* bias, T* Z, const T* aux, int M, int N,
                                          int K, int k_chunk, int epi, T p) {
    constexpr int NT = (BM / WM) * (BN / WN) * 32;
    constexpr int WTR = WM / TM, WTC = WN / TN;
    static_assert(WTR * WTC == 32, "a warp must have 32 lanes");
    static_assert(TM % 4 == 0 && TN % 4 == 0, "micro-tile in 4x4 chunks");
    constexpr int PAD = 4;
    constexpr int LA = BM + PAD, LB = BN + PAD;
    __shared__ __align__(16) T As[2][BK * LA];
    __shared__ __align__(16) T Bs[2][BK * LB];

    const int tid = threadIdx.x;
    const int warp = tid / 32, lane = tid % 32;
    const int wm0 = (warp / (BN / WN)) * WM, wn0 = (warp % (BN / WN)) * WN;
    const int tr = lane / WTC, tc = lane % WTC;
    const int bm0 = blockIdx.y * BM, bn0 = blockIdx.x * BN;
    const int kb = blockIdx.z * k_chunk;
    const int ke = K < kb + k_chunk ? K : kb + k_chunk;
    if (gridDim.z > 1) C += (long long)blockIdx.z * M * N;

    // op(A) tile: !TA -> rows m (BM) x cols k (BK); TA -> rows k (BK) x cols m (BM).
    GemmTileLoader<T, TA ? BK : BM, TA ? BM : BK, NT, VEC> la;
    // op(B) tile: !TB -> rows k (BK) x cols n (BN); TB -> rows n (BN) x cols k (BK).
    GemmTileLoader<T, TB ? BN : BK, TB ? BK : BN, NT, VEC> lb;
    auto fetch = [&](int k0) {
        if (TA) la.load(A, M, k0, ke, bm0, M, tid);
        else la.load(A, K, bm0, M, k0, ke, tid);
        if (TB) lb.load(B, K, bn0, N, k0, ke, tid);
        else lb.load(B, N, k0, ke, bn0, N, tid);
    };
    auto put = [&](int buf) {
        if (TA) la.template store_n<LA, false>(As[buf], tid);
        else la.template store_t<LA>(As[buf], tid);
        if (TB) lb.template store_t<LB>(Bs[buf], tid);
        else lb.template store_n<LB, false>(Bs[buf], tid);
    };

    T acc[TM][TN];
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = T(0);

    const int ntiles = ke > kb ? (ke - kb + BK - 1) / BK : 0;
    if (ntiles > 0) {
        fetch(kb);
        put(0);
    }
    __syncthreads();
    for (int t = 0; t < ntiles; ++t) {
        const int cur = t & 1;
        if (t + 1 < ntiles) fetch(kb + (t + 1) * BK);
        const T* as = As[cur];
        const T* bs = Bs[cur];
#pragma unroll
        for (int k = 0; k < BK; ++k) {
            T a[TM], b[TN];
#pragma unroll
            for (int c = 0; c < TM / 4; ++c)
                gemm_lds4(a + 4 * c, as + k * LA + wm0 + c * WTR * 4 + tr * 4);
#pragma unroll
            for (int c = 0; c < TN / 4; ++c)
                gemm_lds4(b + 4 * c, bs + k * LB + wn0 + c * WTC * 4 + tc * 4);
#pragma unroll
            for (int i = 0; i < TM; ++i)
#pragma unroll
                for (int j = 0; j < TN; ++j) acc[i][j] += a[i] * b[j];
        }
        if (t + 1 < ntiles) put(cur ^ 1);
        __syncthreads();
    }

#pragma unroll
    for (int i = 0; i < TM; ++i) {
        const int m = bm0 + wm0 + (i / 4) * WTR * 4 + tr * 4 + (i % 4);
        if (m >= M) continue;
#pragma unroll
        for (int j = 0; j < TN; ++j) {
            const int n = bn0 + wn0 + (j / 4) * WTC * 4 + tc * 4 + (j % 4);
            if (n < N) gemm_store(C, bias, Z, aux, N, m, n, acc[i][j], epi, p);
        }
    }
}

// ---------------------------------------------------------------- TF32 tensor-core kernel
// mma.sync m16n8k8 (row.col) with FP32 accumulators. Smem keeps each operand in its global
// orientation (16-byte copies, no transposing stores) with paddings chosen so that the
// fragment reads of a warp (lane = 4 g + t) fall in 32 distinct banks:
//   A k-contiguous [BM][BK+4], A m-contiguous [BK][BM+8], B n-contiguous [BK][BN+8],
//   B k-contiguous [BN][BK+4]. Values are rounded to TF32 once, when stored to smem.
template <int BM, int BN, int BK, int WM, int WN, bool TA, bool TB, bool VEC>
__device__ __forceinline__ void gemm_tc(const float* __restrict__ A,
                                        const float* __restrict__ B, float* C,
                                        const float* bias, float* Z, const float* aux, int M,
                                        int N, int K, int k_chunk, int epi, float p) {
    constexpr int NT = (BM / WM) * (BN / WN) * 32;
    constexpr int MT = WM / 16, NTL = WN / 8;
    constexpr int LA = TA ? BM + 8 : BK + 4;
    constexpr int LB = TB ? BK + 4 : BN + 8;
    constexpr int SA = TA ? BK * LA : BM * LA;
    constexpr int SB = TB ? BN * LB : BK * LB;
    __shared__ __align__(16) float As[2][SA];
    __shared__ __align__(16) float Bs[2][SB];

    const int tid = threadIdx.x;
    const int warp = tid / 32, lane = tid % 32;
    const int g = lane >> 2, t4 = lane & 3;
    const int wm0 = (warp / (BN / WN)) * WM, wn0 = (warp % (BN / WN)) * WN;
    const int bm0 = blockIdx.y * BM, bn0 = blockIdx.x * BN;
    const int kb = blockIdx.z * k_chunk;
    const int ke = K < kb + k_chunk ? K : kb + k_chunk;
    if (gridDim.z > 1) C += (long long)blockIdx.z * M * N;

    GemmTileLoader<float, TA ? BK : BM, TA ? BM : BK, NT, VEC> la;
    GemmTileLoader<float, TB ? BN : BK, TB ? BK : BN, NT, VEC> lb;
    auto fetch = [&](int k0) {
        if (TA) la.load(A, M, k0, ke, bm0, M, tid);
        else la.load(A, K, bm0, M, k0, ke, tid);
        if (TB) lb.load(B, K, bn0, N, k0, ke, tid);
        else lb.load(B, N, k0, ke, bn0, N, tid);
    };
    auto put = [&](int buf) {
        la.template store_n<LA, true>(As[buf], tid);
        lb.template store_n<LB, true>(Bs[buf], tid);
    };
    // element (m, k) of op(A) and (k, n) of op(B) in the smem tile
    auto sa = [&](const float* s, int m, int k) -> uint32_t {
        return __float_as_uint(TA ? s[k * LA + m] : s[m * LA + k]);
    };
    auto sb = [&](const float* s, int k, int n) -> uint32_t {
        return __float_as_uint(TB ? s[n * LB + k] : s[k * LB + n]);
    };

    float acc[MT][NTL][4];
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int j = 0; j < NTL; ++j)
#pragma unroll
            for (int r = 0; r < 4; ++r) acc[i][j][r] = 0.f;

    const int ntiles = ke > kb ? (ke - kb + BK - 1) / BK : 0;
    if (ntiles > 0) {
        fetch(kb);
        put(0);
    }
    __syncthreads();
    for (int t = 0; t < ntiles; ++t) {
        const int cur = t & 1;
        if (t + 1 < ntiles) fetch(kb + (t + 1) * BK);
        const float* as = As[cur];
        const float* bs = Bs[cur];
#pragma unroll
        for (int k8 = 0; k8 < BK; k8 += 8) {
            uint32_t af[MT][4], bf[NTL][2];
#pragma unroll
            for (int i = 0; i < MT; ++i) {
                const int m = wm0 + i * 16 + g;
                af[i][0] = sa(as, m, k8 + t4);
                af[i][1] = sa(as, m + 8, k8 + t4);
                af[i][2] = sa(as, m, k8 + t4 + 4);
                af[i][3] = sa(as, m + 8, k8 + t4 + 4);
            }
#pragma unroll
            for (int j = 0; j < NTL; ++j) {
                const int n = wn0 + j * 8 + g;
                bf[j][0] = sb(bs, k8 + t4, n);
                bf[j][1] = sb(bs, k8 + t4 + 4, n);
            }
#pragma unroll
            for (int i = 0; i < MT; ++i)
#pragma unroll
                for (int j = 0; j < NTL; ++j)
                    mma_m16n8k8_tf32(acc[i][j], af[i], bf[j], acc[i][j]);
        }
        if (t + 1 < ntiles) put(cur ^ 1);
        __syncthreads();
    }

    // accumulator r of tile (i, j): row g (+8 for r >= 2), column 2 t4 (+1 for odd r)
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int j = 0; j < NTL; ++j)
#pragma unroll
            for (int r = 0; r < 4; ++r) {
                const int m = bm0 + wm0 + i * 16 + g + (r >= 2 ? 8 : 0);
                const int n = bn0 + wn0 + j * 8 + 2 * t4 + (r & 1);
                if (m < M && n < N) gemm_store(C, bias, Z, aux, N, m, n, acc[i][j][r], epi, p);
            }
}

// ---------------------------------------------------------------- TF32, cp.async pipeline
// Same tiles and fragment reads as gemm_tc, but the global -> shared copies are cp.async
// (16 bytes, zero-filled outside the matrix) into a STAGES-deep ring in dynamic shared memory:
// STAGES-1 tiles are in flight while one is multiplied, and no register staging is needed.
// The copies keep raw fp32, so fragments are rounded to TF32 (cvt.rna) after the smem read.
// Needs the 16-byte path (VEC): the "_s_" entry points of these configs use gemm_tc with
// BK = 8 (static shared memory stays under 48 KB).
// Dynamic smem: STAGES * (SA + SB) * 4 bytes (cuda_gemm.py passes it at launch).
template <int R_, int C_, int L_>
struct GemmShape { static constexpr int r = R_, c = C_, l = L_; };

template <int BM, int BN, int BK, int WM, int WN, int STAGES, bool TA, bool TB>
__device__ __forceinline__ void gemm_tc_async(const float* __restrict__ A,
                                              const float* __restrict__ B, float* C,
                                              const float* bias, float* Z, const float* aux,
                                              int M, int N, int K, int k_chunk, int epi,
                                              float p) {
    constexpr int NT = (BM / WM) * (BN / WN) * 32;
    constexpr int MT = WM / 16, NTL = WN / 8;
    constexpr int LA = TA ? BM + 8 : BK + 4;
    constexpr int LB = TB ? BK + 4 : BN + 8;
    constexpr int SA = TA ? BK * LA : BM * LA;
    constexpr int SB = TB ? BN * LB : BK * LB;
    extern __shared__ __align__(16) float gemm_smem[];
    float* As = gemm_smem;
    float* Bs = gemm_smem + STAGES * SA;

    const int tid = threadIdx.x;
    const int warp = tid / 32, lane = tid % 32;
    const int g = lane >> 2, t4 = lane & 3;
    const int wm0 = (warp / (BN / WN)) * WM, wn0 = (warp % (BN / WN)) * WN;
    const int bm0 = blockIdx.y * BM, bn0 = blockIdx.x * BN;
    const int kb = blockIdx.z * k_chunk;
    const int ke = K < kb + k_chunk ? K : kb + k_chunk;
    if (gridDim.z > 1) C += (long long)blockIdx.z * M * N;

    // one R x CC tile (rows [r0, rmax), cols [c0, cmax)) of g (leading dim ld) -> s [R][LDS]
    auto issue = [&](const float* gm, int ld, int r0, int rmax, int c0, int cmax, float* s,
                     auto rc) {
        constexpr int R = decltype(rc)::r, CC = decltype(rc)::c, LDS = decltype(rc)::l;
        constexpr int SLOTS = R * CC / 4;
#pragma unroll
        for (int q = 0; q < (SLOTS + NT - 1) / NT; ++q) {
            const int f = tid + q * NT;
            if (SLOTS % NT != 0 && f >= SLOTS) break;
            const int r = f / (CC / 4), c = (f % (CC / 4)) * 4;
            const bool in = r0 + r < rmax && c0 + c < cmax;
            const float* src = in ? gm + (long long)(r0 + r) * ld + (c0 + c) : gm;
            cp_async_16_zfill(s + r * LDS + c, src, in ? 16 : 0);
        }
    };
    using ShA = GemmShape<TA ? BK : BM, TA ? BM : BK, LA>;
    using ShB = GemmShape<TB ? BN : BK, TB ? BK : BN, LB>;
    auto fetch = [&](int k0, int stage) {
        if (TA) issue(A, M, k0, ke, bm0, M, As + stage * SA, ShA{});
        else issue(A, K, bm0, M, k0, ke, As + stage * SA, ShA{});
        if (TB) issue(B, K, bn0, N, k0, ke, Bs + stage * SB, ShB{});
        else issue(B, N, k0, ke, bn0, N, Bs + stage * SB, ShB{});
    };
    auto sa = [&](const float* s, int m, int k) -> uint32_t {
        return f32_to_tf32(TA ? s[k * LA + m] : s[m * LA + k]);
    };
    auto sb = [&](const float* s, int k, int n) -> uint32_t {
        return f32_to_tf32(TB ? s[n * LB + k] : s[k * LB + n]);
    };

    float acc[MT][NTL][4];
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int j = 0; j < NTL; ++j)
#pragma unroll
            for (int r = 0; r < 4; ++r) acc[i][j][r] = 0.f;

    const int ntiles = ke > kb ? (ke - kb + BK - 1) / BK : 0;
    // prologue: STAGES-1 tiles in flight; a group is committed even when empty so that
    // "wait until <= STAGES-2 groups pending" always means "tile t has landed"
#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < ntiles) fetch(kb + s * BK, s);
        cp_async_commit();
    }
    for (int t = 0; t < ntiles; ++t) {
        cp_async_wait<STAGES - 2>();
        __syncthreads();  // tile t visible to all; every warp is done with tile t-1's stage
        {
            const int nt = t + STAGES - 1;
            if (nt < ntiles) fetch(kb + nt * BK, nt % STAGES);
            cp_async_commit();
        }
        const float* as = As + (t % STAGES) * SA;
        const float* bs = Bs + (t % STAGES) * SB;
#pragma unroll
        for (int k8 = 0; k8 < BK; k8 += 8) {
            uint32_t af[MT][4], bf[NTL][2];
#pragma unroll
            for (int i = 0; i < MT; ++i) {
                const int m = wm0 + i * 16 + g;
                af[i][0] = sa(as, m, k8 + t4);
                af[i][1] = sa(as, m + 8, k8 + t4);
                af[i][2] = sa(as, m, k8 + t4 + 4);
                af[i][3] = sa(as, m + 8, k8 + t4 + 4);
            }
#pragma unroll
            for (int j = 0; j < NTL; ++j) {
                const int n = wn0 + j * 8 + g;
                bf[j][0] = sb(bs, k8 + t4, n);
                bf[j][1] = sb(bs, k8 + t4 + 4, n);
            }
#pragma unroll
            for (int i = 0; i < MT; ++i)
#pragma unroll
                for (int j = 0; j < NTL; ++j)
                    mma_m16n8k8_tf32(acc[i][j], af[i], bf[j], acc[i][j]);
        }
    }
    cp_async_wait<0>();

#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int j = 0; j < NTL; ++j)
#pragma unroll
            for (int r = 0; r < 4; ++r) {
                const int m = bm0 + wm0 + i * 16 + g + (r >= 2 ? 8 : 0);
                const int n = bn0 + wn0 + j * 8 + 2 * t4 + (r & 1);
                if (m < M && n < N) gemm_store(C, bias, Z, aux, N, m, n, acc[i][j][r], epi, p);
            }
}

// ---------------------------------------------------------------- FP32 SIMT, cp.async pipeline
// gemm_simt's block/warp/thread tiling, outputs and epilogue, but the global -> shared copies
// are cp.async (16 bytes, zero-filled outside the matrix) into a STAGES-deep ring in dynamic
// shared memory (the same prologue / wait / barrier / refill sequence as gemm_tc_async), so
// STAGES-1 k-tiles are in flight while one is multiplied and no register staging is needed.
// cp.async cannot transpose, so each operand keeps its global orientation in smem:
//   m/n-contiguous (A in tn/tt, B in nn/tn): [BK][BM+4] / [BK][BN+4], read as in gemm_simt
//     (per k: TM/4 or TN/4 ld.shared.v4 along m/n);
//   k-contiguous (A in nn/nt, B in nt/tt): row r of the tile at r*BK + (r/4)*4 ("+4 floats
//     every 4 rows": the 4 (A) or 8 (B) rows a warp reads at once, 4 rows apart, land in
//     distinct 4-bank groups), read as one ld.shared.v4 of 4 consecutive k per row.
// The inner loop therefore runs over groups of KG (4 or 2) k: each thread holds a[KG][TM] and
// b[KG][TN] (KG = 2: ld.shared.v2 for the k-contiguous operand, fewer live registers).
// KU: unroll factor of that k-group loop (0 = all BK/KG groups; 1 keeps one group's operands
// live, no cross-group prefetch: with KG = 2 this fits 128 registers).
// MINB: __launch_bounds__ minimum blocks per SM (2 caps registers at 128 for 256 threads).
// Needs the 16-byte path (every leading dimension % 4, aligned pointers): the "_s_" entry
// points of these configs are gemm_simt with BK = 8 (static smem, register staging).
// Dynamic smem: STAGES * (SA + SB) * 4 bytes (cuda_gemm.py GemmConfig.dynamic_smem).
#ifdef MLPACCEL_EMU
struct alignas(8) gemm_v2f { float x, y; };
#else
typedef float2 gemm_v2f;
#endif
// KG consecutive floats from shared memory (one ld.shared.v4 / .v2; s aligned to 4 KG bytes)
template <int KG>
__device__ __forceinline__ void gemm_ldsk(float* d, const float* s) {
    if constexpr (KG == 4) {
        gemm_lds4(d, s);
    } else {
        const gemm_v2f q = *reinterpret_cast<const gemm_v2f*>(s);
        d[0] = q.x; d[1] = q.y;
    }
}

// gemm_cp_tile (an R x CC tile by 16-byte cp.async): common.cuh, shared with gemm_wgmma.cu.

template <int BM, int BN, int BK, int WM, int WN, int TM, int TN, int STAGES, int KG, int KU,
          bool TA, bool TB>
__device__ __forceinline__ void gemm_simt_async(const float* __restrict__ A,
                                                const float* __restrict__ B, float* C,
                                                const float* bias, float* Z, const float* aux,
                                                int M, int N, int K, int k_chunk, int epi,
                                                float p) {
    constexpr int NT = (BM / WM) * (BN / WN) * 32;
    constexpr int WTR = WM / TM, WTC = WN / TN;
    static_assert(WTR * WTC == 32, "a warp must have 32 lanes");
    static_assert(TM % 4 == 0 && TN % 4 == 0, "micro-tile in 4x4 chunks");
    static_assert((KG == 2 || KG == 4) && BK % 4 == 0, "k in groups of KG (8 or 16 bytes)");
    static_assert(BM % 4 == 0 && BN % 4 == 0, "k-contiguous rows padded per group of 4");
    // m/n-contiguous: [BK][B?+4]; k-contiguous: row r at r*BK + (r/4)*4
    constexpr int LA = TA ? BM + 4 : BK, PA = TA ? 0 : 4;
    constexpr int LB = TB ? BK : BN + 4, PB = TB ? 4 : 0;
    constexpr int SA = TA ? BK * LA : BM * (BK + 1);
    constexpr int SB = TB ? BN * (BK + 1) : BK * LB;
    extern __shared__ __align__(16) float gemm_smem[];
    float* As = gemm_smem;
    float* Bs = gemm_smem + STAGES * SA;

    const int tid = threadIdx.x;
    const int warp = tid / 32, lane = tid % 32;
    const int wm0 = (warp / (BN / WN)) * WM, wn0 = (warp % (BN / WN)) * WN;
    const int tr = lane / WTC, tc = lane % WTC;
    const int bm0 = blockIdx.y * BM, bn0 = blockIdx.x * BN;
    const int kb = blockIdx.z * k_chunk;
    const int ke = K < kb + k_chunk ? K : kb + k_chunk;
    if (gridDim.z > 1) C += (long long)blockIdx.z * M * N;

    auto fetch = [&](int k0, int stage) {
        float* sa = As + stage * SA;
        float* sb = Bs + stage * SB;
        if (TA) gemm_cp_tile<BK, BM, LA, PA, NT>(A, M, k0, ke, bm0, M, sa, tid);
        else gemm_cp_tile<BM, BK, LA, PA, NT>(A, K, bm0, M, k0, ke, sa, tid);
        if (TB) gemm_cp_tile<BN, BK, LB, PB, NT>(B, K, bn0, N, k0, ke, sb, tid);
        else gemm_cp_tile<BK, BN, LB, PB, NT>(B, N, k0, ke, bn0, N, sb, tid);
    };

    float acc[TM][TN];
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = 0.f;

    const int ntiles = ke > kb ? (ke - kb + BK - 1) / BK : 0;
    // prologue: STAGES-1 tiles in flight; a group is committed even when empty so that
    // "wait until <= STAGES-2 groups pending" always means "tile t has landed"
#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < ntiles) fetch(kb + s * BK, s);
        cp_async_commit();
    }
    for (int t = 0; t < ntiles; ++t) {
        cp_async_wait<STAGES - 2>();
        __syncthreads();  // tile t visible to all; every warp is done with tile t-1's stage
        {
            const int nt = t + STAGES - 1;
            if (nt < ntiles) fetch(kb + nt * BK, nt % STAGES);
            cp_async_commit();
        }
        const float* as = As + (t % STAGES) * SA;
        const float* bs = Bs + (t % STAGES) * SB;
        constexpr int kunroll = KU > 0 ? KU : BK / KG;
#pragma unroll kunroll
        for (int k4 = 0; k4 < BK; k4 += KG) {
            float a[KG][TM], b[KG][TN];
#pragma unroll
            for (int c = 0; c < TM / 4; ++c) {
                const int m0 = wm0 + c * WTR * 4 + tr * 4;  // gemm_simt's rows m0 .. m0+3
                if (TA) {
#pragma unroll
                    for (int kk = 0; kk < KG; ++kk)
                        gemm_lds4(&a[kk][c * 4], as + (k4 + kk) * LA + m0);
                } else {
#pragma unroll
                    for (int i = 0; i < 4; ++i) {
                        float q[KG];
                        gemm_ldsk<KG>(q, as + (m0 + i) * LA + ((m0 + i) / 4) * PA + k4);
#pragma unroll
                        for (int kk = 0; kk < KG; ++kk) a[kk][c * 4 + i] = q[kk];
                    }
                }
            }
#pragma unroll
            for (int c = 0; c < TN / 4; ++c) {
                const int n0 = wn0 + c * WTC * 4 + tc * 4;
                if (!TB) {
#pragma unroll
                    for (int kk = 0; kk < KG; ++kk)
                        gemm_lds4(&b[kk][c * 4], bs + (k4 + kk) * LB + n0);
                } else {
#pragma unroll
                    for (int j = 0; j < 4; ++j) {
                        float q[KG];
                        gemm_ldsk<KG>(q, bs + (n0 + j) * LB + ((n0 + j) / 4) * PB + k4);
#pragma unroll
                        for (int kk = 0; kk < KG; ++kk) b[kk][c * 4 + j] = q[kk];
                    }
                }
            }
#pragma unroll
            for (int kk = 0; kk < KG; ++kk)
#pragma unroll
                for (int i = 0; i < TM; ++i)
#pragma unroll
                    for (int j = 0; j < TN; ++j) acc[i][j] += a[kk][i] * b[kk][j];
        }
    }
    cp_async_wait<0>();

#pragma unroll
    for (int i = 0; i < TM; ++i) {
        const int m = bm0 + wm0 + (i / 4) * WTR * 4 + tr * 4 + (i % 4);
        if (m >= M) continue;
#pragma unroll
        for (int j = 0; j < TN; ++j) {
            const int n = bn0 + wn0 + (j / 4) * WTC * 4 + tc * 4 + (j % 4);
            if (n < N) gemm_store(C, bias, Z, aux, N, m, n, acc[i][j], epi, p);
        }
    }
}

// ---------------------------------------------------------------- FP32 SIMT, mixed ring (v3)
// gemm_simt's k-major smem tiles and inner loop (gemm_simt_tile: per k, TM/4 + TN/4
// ld.shared.v4, conflict-free), fed by a STAGES-deep ring in dynamic shared memory in which
// each operand takes the cheaper way into the k-major layout:
//   m/n-contiguous operand (A in tn/tt, B in nn/tn): 16-byte cp.async straight into
//     [BK][B?+4] (zero-filled outside the matrix), STAGES-1 k-tiles ahead - no registers, no
//     STS instructions (gemm_simt_async's prologue / wait / barrier / refill sequence);
//   k-contiguous operand (A in nn/nt, B in nt/tt): gemm_simt's register staging - ld.global.v4
//     of 4 consecutive k into registers one k-tile ahead, then 4 transposing scalar st.shared
//     into the ring stage of the next tile (conflict-free: rows 4 apart land 16 banks apart).
//     (cp.async cannot transpose; read untransposed, it costs more LDS per FFMA, see 13-15.)
// One __syncthreads per k-tile. Stage s of the ring holds tile t = s mod STAGES of both
// operands. Hazards (iteration t, after its barrier): cp.async refills stage (t-1) mod STAGES,
// which every warp finished reading before that barrier; the registers of tile t+1 are stored
// into stage (t+1) mod STAGES after the multiply of tile t - last read as tile t+1-STAGES <= t-1
// (STAGES >= 2), and first read after the next barrier.
// 16-byte path only; the "_s_" entry points of these configs are gemm_simt with the same tiles.
// Dynamic smem: STAGES * BK * ((BM+4) + (BN+4)) * 4 bytes (cuda_gemm.py, GemmConfig.kmajor).
template <int BM, int BN, int BK, int WM, int WN, int TM, int TN, int STAGES, bool TA, bool TB>
__device__ __forceinline__ void gemm_simt_ring(const float* __restrict__ A,
                                               const float* __restrict__ B, float* C,
                                               const float* bias, float* Z, const float* aux,
                                               int M, int N, int K, int k_chunk, int epi,
                                               float p) {
    constexpr int NT = (BM / WM) * (BN / WN) * 32;
    constexpr int WTR = WM / TM, WTC = WN / TN;
    static_assert(WTR * WTC == 32, "a warp must have 32 lanes");
    static_assert(TM % 4 == 0 && TN % 4 == 0, "micro-tile in 4x4 chunks");
    static_assert(STAGES >= 2, "a ring of at least two stages");
    constexpr int LA = BM + 4, LB = BN + 4;  // k-major rows, +4 floats: see gemm_simt
    constexpr int SA = BK * LA, SB = BK * LB;
    constexpr bool CPA = TA, CPB = !TB;  // operands copied by cp.async (m/n-contiguous)
    constexpr bool ASYNC = CPA || CPB;
    extern __shared__ __align__(16) float gemm_smem[];
    float* As = gemm_smem;
    float* Bs = gemm_smem + STAGES * SA;

    const int tid = threadIdx.x;
    const int warp = tid / 32, lane = tid % 32;
    const int wm0 = (warp / (BN / WN)) * WM, wn0 = (warp % (BN / WN)) * WN;
    const int tr = lane / WTC, tc = lane % WTC;
    const int bm0 = blockIdx.y * BM, bn0 = blockIdx.x * BN;
    const int kb = blockIdx.z * k_chunk;
    const int ke = K < kb + k_chunk ? K : kb + k_chunk;
    if (gridDim.z > 1) C += (long long)blockIdx.z * M * N;

    // register staging of the k-contiguous operand(s): rows m (n) x 4 consecutive k per slot
    GemmTileLoader<float, BM, BK, NT, true> la;  // used when !CPA (A stored (M, K))
    GemmTileLoader<float, BN, BK, NT, true> lb;  // used when !CPB (B stored (N, K))
    auto issue = [&](int k0, int stage) {  // cp.async of tile k0 into a ring stage
        if constexpr (CPA)
            gemm_cp_tile<BK, BM, LA, 0, NT>(A, M, k0, ke, bm0, M, As + stage * SA, tid);
        if constexpr (CPB)
            gemm_cp_tile<BK, BN, LB, 0, NT>(B, N, k0, ke, bn0, N, Bs + stage * SB, tid);
    };
    auto fetch = [&](int k0) {  // global -> registers
        if constexpr (!CPA) la.load(A, K, bm0, M, k0, ke, tid);
        if constexpr (!CPB) lb.load(B, K, bn0, N, k0, ke, tid);
    };
    auto put = [&](int stage) {  // registers -> ring stage, transposed to k-major
        if constexpr (!CPA) la.template store_t<LA>(As + stage * SA, tid);
        if constexpr (!CPB) lb.template store_t<LB>(Bs + stage * SB, tid);
    };

    float acc[TM][TN];
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = 0.f;

    const int ntiles = ke > kb ? (ke - kb + BK - 1) / BK : 0;
    if constexpr (ASYNC) {
        // STAGES-1 tiles in flight; a group is committed even when empty so that "wait until
        // <= STAGES-2 groups pending" always means "tile t has landed"
#pragma unroll
        for (int s = 0; s < STAGES - 1; ++s) {
            if (s < ntiles) issue(kb + s * BK, s);
            cp_async_commit();
        }
    }
    if (ntiles > 0) {
        fetch(kb);
        put(0);
    }
    int rd = 0;  // ring stage of tile t
    for (int t = 0; t < ntiles; ++t) {
        if constexpr (ASYNC) cp_async_wait<STAGES - 2>();
        __syncthreads();  // tile t visible to all; every warp is done with tile t-1's stage
        const int nx = rd + 1 == STAGES ? 0 : rd + 1;  // stage of tile t+1
        if constexpr (ASYNC) {
            const int nt = t + STAGES - 1;  // into stage (t-1) mod STAGES
            if (nt < ntiles) issue(kb + nt * BK, rd == 0 ? STAGES - 1 : rd - 1);
            cp_async_commit();
        }
        if (t + 1 < ntiles) fetch(kb + (t + 1) * BK);
        gemm_simt_tile<float, BK, LA, LB, TM, TN, WTR, WTC>(acc, As + rd * SA, Bs + rd * SB,
                                                            wm0, wn0, tr, tc);
        if (t + 1 < ntiles) put(nx);
        rd = nx;
    }
    if constexpr (ASYNC) cp_async_wait<0>();

    gemm_simt_store<float, TM, TN, WTR, WTC>(acc, C, bias, Z, aux, M, N, bm0, bn0, wm0,
                                             wn0, tr, tc, epi, p);
}

// gemm_splitk_finish (the in-kernel split-K finish): common.cuh, shared with gemm_wgmma.cu.

// ---------------------------------------------------------------- entry points
#define GEMM_PARAMS(T)                                                                       \
    const T *A, const T *B, T *C, const T *bias, T *Z, const T *aux, int M, int N, int K,    \
        int k_chunk, int epi, T p, T *Cout, unsigned *tiles, int epi_out
#define GEMM_ARGS A, B, C, bias, Z, aux, M, N, K, k_chunk, epi, p
#define GEMM_FINISH(T, BM, BN)                                                               \
    gemm_splitk_finish<T, BM, BN>(C, Cout, tiles, bias, Z, aux, M, N, epi_out, p)

#define GEMM_SIMT_ONE(NAME, T, SUF, BM, BN, BK, WM, WN, TM, TN, TA, TB, VEC)                 \
    extern "C" __global__ void __launch_bounds__((BM / WM) * (BN / WN) * 32)                 \
        gemm_##NAME##SUF(GEMM_PARAMS(T)) {                                                   \
        gemm_simt<T, BM, BN, BK, WM, WN, TM, TN, TA, TB, VEC>(GEMM_ARGS);                    \
        GEMM_FINISH(T, BM, BN);                                                              \
    }
#define GEMM_SIMT_F32(NAME, BM, BN, BK, WM, WN, TM, TN)                                      \
    GEMM_SIMT_ONE(NAME, float, _nn_v_f32, BM, BN, BK, WM, WN, TM, TN, false, false, true)    \
    GEMM_SIMT_ONE(NAME, float, _tn_v_f32, BM, BN, BK, WM, WN, TM, TN, true, false, true)     \
    GEMM_SIMT_ONE(NAME, float, _nt_v_f32, BM, BN, BK, WM, WN, TM, TN, false, true, true)     \
    GEMM_SIMT_ONE(NAME, float, _tt_v_f32, BM, BN, BK, WM, WN, TM, TN, true, true, true)      \
    GEMM_SIMT_ONE(NAME, float, _nn_s_f32, BM, BN, BK, WM, WN, TM, TN, false, false, false)   \
    GEMM_SIMT_ONE(NAME, float, _tn_s_f32, BM, BN, BK, WM, WN, TM, TN, true, false, false)    \
    GEMM_SIMT_ONE(NAME, float, _nt_s_f32, BM, BN, BK, WM, WN, TM, TN, false, true, false)    \
    GEMM_SIMT_ONE(NAME, float, _tt_s_f32, BM, BN, BK, WM, WN, TM, TN, true, true, false)
#define GEMM_SIMT_F64(NAME, BM, BN, BK, WM, WN, TM, TN)                                      \
    GEMM_SIMT_ONE(NAME, double, _nn_s_f64, BM, BN, BK, WM, WN, TM, TN, false, false, false)  \
    GEMM_SIMT_ONE(NAME, double, _tn_s_f64, BM, BN, BK, WM, WN, TM, TN, true, false, false)   \
    GEMM_SIMT_ONE(NAME, double, _nt_s_f64, BM, BN, BK, WM, WN, TM, TN, false, true, false)   \
    GEMM_SIMT_ONE(NAME, double, _tt_s_f64, BM, BN, BK, WM, WN, TM, TN, true, true, false)

#define GEMM_TC_ONE(NAME, SUF, BM, BN, BK, WM, WN, TA, TB, VEC)                              \
    extern "C" __global__ void __launch_bounds__((BM / WM) * (BN / WN) * 32)                 \
        gemm_##NAME##SUF(GEMM_PARAMS(float)) {                                               \
        gemm_tc<BM, BN, BK, WM, WN, TA, TB, VEC>(GEMM_ARGS);                                 \
        GEMM_FINISH(float, BM, BN);                                                          \
    }
#define GEMM_TC(NAME, BM, BN, BK, WM, WN)                                                    \
    GEMM_TC_ONE(NAME, _nn_v_f32, BM, BN, BK, WM, WN, false, false, true)                     \
    GEMM_TC_ONE(NAME, _tn_v_f32, BM, BN, BK, WM, WN, true, false, true)                      \
    GEMM_TC_ONE(NAME, _nt_v_f32, BM, BN, BK, WM, WN, false, true, true)                      \
    GEMM_TC_ONE(NAME, _tt_v_f32, BM, BN, BK, WM, WN, true, true, true)                       \
    GEMM_TC_ONE(NAME, _nn_s_f32, BM, BN, BK, WM, WN, false, false, false)                    \
    GEMM_TC_ONE(NAME, _tn_s_f32, BM, BN, BK, WM, WN, true, false, false)                     \
    GEMM_TC_ONE(NAME, _nt_s_f32, BM, BN, BK, WM, WN, false, true, false)                     \
    GEMM_TC_ONE(NAME, _tt_s_f32, BM, BN, BK, WM, WN, true, true, false)

#define GEMM_TCA_ONE(NAME, SUF, BM, BN, BK, WM, WN, ST, TA, TB)                              \
    extern "C" __global__ void __launch_bounds__((BM / WM) * (BN / WN) * 32)                 \
        gemm_##NAME##SUF(GEMM_PARAMS(float)) {                                               \
        gemm_tc_async<BM, BN, BK, WM, WN, ST, TA, TB>(GEMM_ARGS);                            \
        GEMM_FINISH(float, BM, BN);                                                          \
    }
#define GEMM_TCA(NAME, BM, BN, BK, WM, WN, ST)                                               \
    GEMM_TCA_ONE(NAME, _nn_v_f32, BM, BN, BK, WM, WN, ST, false, false)                      \
    GEMM_TCA_ONE(NAME, _tn_v_f32, BM, BN, BK, WM, WN, ST, true, false)                       \
    GEMM_TCA_ONE(NAME, _nt_v_f32, BM, BN, BK, WM, WN, ST, false, true)                       \
    GEMM_TCA_ONE(NAME, _tt_v_f32, BM, BN, BK, WM, WN, ST, true, true)                        \
    GEMM_TC_ONE(NAME, _nn_s_f32, BM, BN, 8, WM, WN, false, false, false)                    \
    GEMM_TC_ONE(NAME, _tn_s_f32, BM, BN, 8, WM, WN, true, false, false)                     \
    GEMM_TC_ONE(NAME, _nt_s_f32, BM, BN, 8, WM, WN, false, true, false)                     \
    GEMM_TC_ONE(NAME, _tt_s_f32, BM, BN, 8, WM, WN, true, true, false)

#define GEMM_SA_ONE(NAME, SUF, BM, BN, BK, WM, WN, TM, TN, ST, KG, KU, MINB, TA, TB)        \
    extern "C" __global__ void __launch_bounds__((BM / WM) * (BN / WN) * 32, MINB)           \
        gemm_##NAME##SUF(GEMM_PARAMS(float)) {                                               \
        gemm_simt_async<BM, BN, BK, WM, WN, TM, TN, ST, KG, KU, TA, TB>(GEMM_ARGS);          \
        GEMM_FINISH(float, BM, BN);                                                          \
    }
// fp32 cp.async config: the 16-byte path pipelined (gemm_simt_async), the scalar path = the
// register-staged gemm_simt at BK 8 (same tiles, static smem)
#define GEMM_SIMT_ASYNC(NAME, BM, BN, BK, WM, WN, TM, TN, ST, KG, KU, MINB)                  \
    GEMM_SA_ONE(NAME, _nn_v_f32, BM, BN, BK, WM, WN, TM, TN, ST, KG, KU, MINB, false, false) \
    GEMM_SA_ONE(NAME, _tn_v_f32, BM, BN, BK, WM, WN, TM, TN, ST, KG, KU, MINB, true, false)  \
    GEMM_SA_ONE(NAME, _nt_v_f32, BM, BN, BK, WM, WN, TM, TN, ST, KG, KU, MINB, false, true)  \
    GEMM_SA_ONE(NAME, _tt_v_f32, BM, BN, BK, WM, WN, TM, TN, ST, KG, KU, MINB, true, true)   \
    GEMM_SIMT_ONE(NAME, float, _nn_s_f32, BM, BN, 8, WM, WN, TM, TN, false, false, false)    \
    GEMM_SIMT_ONE(NAME, float, _tn_s_f32, BM, BN, 8, WM, WN, TM, TN, true, false, false)     \
    GEMM_SIMT_ONE(NAME, float, _nt_s_f32, BM, BN, 8, WM, WN, TM, TN, false, true, false)     \
    GEMM_SIMT_ONE(NAME, float, _tt_s_f32, BM, BN, 8, WM, WN, TM, TN, true, true, false)

#define GEMM_SR_ONE(NAME, SUF, BM, BN, BK, WM, WN, TM, TN, ST, TA, TB)                     \
    extern "C" __global__ void __launch_bounds__((BM / WM) * (BN / WN) * 32, 1)              \
        gemm_##NAME##SUF(GEMM_PARAMS(float)) {                                               \
        gemm_simt_ring<BM, BN, BK, WM, WN, TM, TN, ST, TA, TB>(GEMM_ARGS);                   \
        GEMM_FINISH(float, BM, BN);                                                          \
    }
// fp32 mixed-ring config (v3): the 16-byte path is gemm_simt_ring (cp.async for the
// m/n-contiguous operand, register staging for the k-contiguous one), the scalar path the
// register-staged gemm_simt with the same tiles (static smem)
#define GEMM_SIMT_RING(NAME, BM, BN, BK, WM, WN, TM, TN, ST)                                 \
    GEMM_SR_ONE(NAME, _nn_v_f32, BM, BN, BK, WM, WN, TM, TN, ST, false, false)               \
    GEMM_SR_ONE(NAME, _tn_v_f32, BM, BN, BK, WM, WN, TM, TN, ST, true, false)                \
    GEMM_SR_ONE(NAME, _nt_v_f32, BM, BN, BK, WM, WN, TM, TN, ST, false, true)                \
    GEMM_SR_ONE(NAME, _tt_v_f32, BM, BN, BK, WM, WN, TM, TN, ST, true, true)                 \
    GEMM_SIMT_ONE(NAME, float, _nn_s_f32, BM, BN, BK, WM, WN, TM, TN, false, false, false)   \
    GEMM_SIMT_ONE(NAME, float, _tn_s_f32, BM, BN, BK, WM, WN, TM, TN, true, false, false)    \
    GEMM_SIMT_ONE(NAME, float, _nt_s_f32, BM, BN, BK, WM, WN, TM, TN, false, true, false)    \
    GEMM_SIMT_ONE(NAME, float, _tt_s_f32, BM, BN, BK, WM, WN, TM, TN, true, true, false)

// Configuration table; ids and names must match CONFIGS in mlpaccel/backends/cuda_gemm.py.
//                       name         BM   BN  BK  WM  WN  TM TN   threads
#if GEMM_WANT(0)
GEMM_SIMT_F32(128x128x8, 128, 128, 8, 32, 64, 8, 8)     // 256
#endif
#if GEMM_WANT(1)
GEMM_SIMT_F32(128x128x16, 128, 128, 16, 32, 64, 8, 8)   // 256
#endif
#if GEMM_WANT(2)
GEMM_SIMT_F32(128x64x8, 128, 64, 8, 32, 64, 8, 8)       // 128
#endif
#if GEMM_WANT(3)
GEMM_SIMT_F32(64x64x16, 64, 64, 16, 32, 32, 8, 4)       // 128
#endif
#if GEMM_WANT(4)
GEMM_SIMT_F32(32x64x16, 32, 64, 16, 16, 32, 4, 4)       // 128
#endif
#if GEMM_WANT(5)
GEMM_TC(tc128x128x16, 128, 128, 16, 64, 32)             // 256, warp tile 64x32
#endif
#if GEMM_WANT(6)
GEMM_TC(tc64x64x16, 64, 64, 16, 32, 32)                 // 128, warp tile 32x32
#endif
#if GEMM_WANT(7)
GEMM_SIMT_F64(64x64x8, 64, 64, 8, 32, 32, 8, 4)         // 128
#endif
#if GEMM_WANT(8)
GEMM_SIMT_F32(128x256x8, 128, 256, 8, 32, 128, 8, 16)   // 256, 8x16 per thread
#endif
#if GEMM_WANT(9)
GEMM_TC(tc128x128x16w4, 128, 128, 16, 64, 64)           // 128, warp tile 64x64
#endif
#if GEMM_WANT(10)
GEMM_TCA(tc128x128x32s3, 128, 128, 32, 64, 32, 3)       // 256, cp.async 3 stages, 108 KB
#endif
#if GEMM_WANT(11)
GEMM_TCA(tc128x128x16s4, 128, 128, 16, 64, 32, 4)       // 256, cp.async 4 stages, 76 KB
#endif
#if GEMM_WANT(12)
GEMM_TCA(tc128x256x32s3, 128, 256, 32, 64, 64, 3)       // 256, warp tile 64x64, 3 stages
#endif
// fp32 cp.async (gemm_simt_async):  name  BM  BN  BK  WM  WN  TM TN  stages KG KU minblocks/SM
#if GEMM_WANT(13)
GEMM_SIMT_ASYNC(128x128x16s3, 128, 128, 16, 32, 64, 8, 8, 3, 2, 1, 2)  // 256, 3 stages, 50 KB
#endif
#if GEMM_WANT(14)
GEMM_SIMT_ASYNC(128x128x16s4, 128, 128, 16, 32, 64, 8, 8, 4, 2, 1, 2)  // 256, 4 stages, 67 KB
#endif
#if GEMM_WANT(15)
GEMM_SIMT_ASYNC(128x256x16s3, 128, 256, 16, 32, 128, 8, 16, 3, 2, 1, 1) // 256, 8x16, 74 KB
#endif
// fp32 mixed ring (gemm_simt_ring):  name  BM  BN  BK  WM  WN  TM TN  stages
#if GEMM_WANT(16)
GEMM_SIMT_RING(256x128x8s3, 256, 128, 8, 64, 64, 16, 8, 3)  // 256 = 4x2 warps, 16x8, 36.75 KB
#endif
// small tiles with a 4-deep ring (unmeasured): the batch-64 layers' GEMMs run a long K loop on
// a handful of blocks, each k-tile waiting out a global-memory latency with the register
// double buffer; here 3 k-tiles are in flight while one is multiplied
#if GEMM_WANT(19)
GEMM_SIMT_ASYNC(32x64x16s4, 32, 64, 16, 16, 32, 4, 4, 4, 4, 0, 4)    // 128, 4x4, 26 KB
#endif
#if GEMM_WANT(20)
GEMM_SIMT_ASYNC(64x64x16s4, 64, 64, 16, 32, 32, 8, 4, 4, 4, 0, 4)    // 128, 8x4, 34 KB
#endif
