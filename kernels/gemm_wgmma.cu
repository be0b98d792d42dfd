// mlpaccel TF32 GEMM on Hopper wgmma (sm_90a only): C = op(A) op(B) (+ epilogue), row-major.
// mlpaccel-arch: sm_90a
//
// Same contract as kernels/gemm.cu (signature, epilogue bits, split-K finish: see its header
// comment), for the forms whose A is K-contiguous: nn (B stored (K, N)) and nt (B stored
// (N, K)); tn/tt are not built (the host refuses them for these configs). 16-byte path only:
// every leading dimension % 4 == 0 and 16-byte aligned A and B (the host refuses the others).
//
// Why transposed: wgmma takes its B operand from shared memory through a matrix descriptor,
// and for .tf32 that operand must be K-major (the transpose immediates exist only for
// f16/bf16). A's rows are K-major, so the kernel computes C^T = op(B)^T A^T:
//   instruction M (64 per warpgroup) = our N      instruction A (registers) = op(B)^T (N x K)
//   instruction N (BM)               = our M      instruction B (descriptor) = A^T, K-major =
//                                                  A's rows, copied unchanged
// and the epilogue writes the accumulator fragments transposed into C.
//
// Block tile BM (rows of C) x BN (columns of C), BK = 32, STAGES-deep cp.async ring in dynamic
// shared memory; BN / 64 warpgroups of 128 threads (every thread loads). Per k-tile:
//   wait for its cp.async group, fence.proxy.async (this thread's copies -> the async proxy
//   wgmma reads through), __syncthreads, refill the stage the previous tile used, read the
//   warpgroup's B fragments (rounded to TF32 with cvt.rna) for the BK/8 k-steps, wgmma.fence,
//   BK/8 x wgmma m64n{BM}k8, commit, wait_group 0 (so the next refill may overwrite the stage).
//   OVERLAP (config 21): wait_group 1 instead, so tile t's group runs while tile t+1's
//   fragments load; two fragment buffers, STAGES - 2 tiles ahead, the refill at tile t goes to
//   tile t-2's stage (finished in every warpgroup by the barrier at the top of tile t).
// Shared memory per stage (floats):
//   Ds: A tile, BM rows x BK, no-swizzle K-major core matrices: core matrix (r/8, k/4) of
//       8 rows x 4 floats (128 contiguous bytes, row r%8 at 16-byte offset) at byte
//       ((r/8) * (BK/4) + k/4) * 128, so LBO (K-adjacent) = 128 bytes, SBO (8-row groups) =
//       BK/4 * 128 = 1024 bytes; k-step s starts at + 256 s bytes. The 8 threads of a 16-byte
//       cp.async phase write one core matrix (8 rows of one 16-byte k chunk): no bank conflict;
//       a warp reads 8 rows x 64 contiguous bytes of A (whole 32-byte sectors).
//   Rs: B tile as stored: nn [BK][BN + 8] (k rows), nt [BN][BK + 4] (n rows); the fragment
//       reads (4 per k-step, lanes g = lane/4 along n, t = lane%4 along k) hit 32 distinct
//       banks with these pads (as gemm_tc_async's).
// Thread -> output: warpgroup q, warp w in it, lane 4g + t owns, for i < BM/2, the accumulator
//   d[i] = C[bm0 + 8*(i>>2) + 2t + (i&1)][bn0 + 64q + 16w + g + 8*((i>>1)&1)].
// Dynamic smem: STAGES * (BM*BK + (nn ? BK*(BN+8) : BN*(BK+4))) * 4 bytes (cuda_gemm.py).
//
// Entry points: gemm_<cfg>_<nn|nt>_v_f32, signature as gemm.cu's. -DGEMM_CFG=<id> compiles one
// configuration (ids in mlpaccel/backends/cuda_gemm.py).
#include "common.cuh"

#ifndef GEMM_CFG
#define GEMM_CFG (-1)
#endif
#define GEMM_WANT(id) (GEMM_CFG < 0 || GEMM_CFG == (id))

template <int BM>
__device__ __forceinline__ void gemm_wgmma_mma(float (&d)[BM / 2], const uint32_t a[4],
                                               unsigned long long desc, int scale_d) {
    if constexpr (BM == 128) wgmma_m64n128k8_tf32_rs(d, a, desc, scale_d);
    else wgmma_m64n256k8_tf32_rs(d, a, desc, scale_d);
}

template <int BM, int BN, int BK, int STAGES, bool TB, bool OVERLAP>
__device__ __forceinline__ void gemm_wgmma(const float* __restrict__ A,
                                           const float* __restrict__ B, float* C,
                                           const float* bias, float* Z, const float* aux,
                                           int M, int N, int K, int k_chunk, int epi, float p) {
    static_assert(BM == 128 || BM == 256, "wgmma n128 / n256 only");
    static_assert(BN % 64 == 0 && BK % 8 == 0, "tile");
    static_assert(!OVERLAP || STAGES >= 4, "overlap: tile t-1 in wgmma, t computed, >= 2 ahead");
    // prefetch distance: tiles in flight ahead of the one being multiplied
    constexpr int AHEAD = OVERLAP ? STAGES - 2 : STAGES - 1;
    constexpr int NT = (BN / 64) * 128;
    constexpr int KC = BK / 4;                  // 16-byte k chunks per row
    constexpr int SD = BM * BK;                 // A tile (descriptor operand), floats
    constexpr int LR = TB ? BK + 4 : BN + 8;    // B tile row pitch
    constexpr int SR = TB ? BN * LR : BK * LR;  // B tile, floats
    constexpr uint32_t LBO = 128, SBO = KC * 128;
    extern __shared__ __align__(128) float gemm_smem[];
    float* Ds = gemm_smem;
    float* Rs = gemm_smem + STAGES * SD;

    const int tid = threadIdx.x;
    const int wq = tid >> 7, warp = (tid >> 5) & 3, lane = tid & 31;
    const int g = lane >> 2, t4 = lane & 3;
    const int bm0 = blockIdx.y * BM, bn0 = blockIdx.x * BN;
    const int kb = blockIdx.z * k_chunk;
    const int ke = K < kb + k_chunk ? K : kb + k_chunk;
    if (gridDim.z > 1) C += (long long)blockIdx.z * M * N;

    auto fetch = [&](int k0, int stage) {
        float* ds = Ds + stage * SD;
        float* rs = Rs + stage * SR;
#pragma unroll
        for (int q = 0; q < (BM * KC + NT - 1) / NT; ++q) {
            const int f = tid + q * NT;
            if ((BM * KC) % NT != 0 && f >= BM * KC) break;
            const int r8 = f & 7, kc = (f >> 3) % KC, rg = f / (8 * KC);
            const int r = rg * 8 + r8, k = k0 + kc * 4;
            const bool in = bm0 + r < M && k < ke;
            const float* src = in ? A + (long long)(bm0 + r) * K + k : A;
            cp_async_16_zfill(ds + (rg * KC + kc) * 32 + r8 * 4, src, in ? 16 : 0);
        }
        // B tile as stored: (N, K) rows n for nt, (K, N) rows k for nn; zeros outside
        if (TB) gemm_cp_tile<BN, BK, LR, 0, NT>(B, K, bn0, N, k0, ke, rs, tid);
        else gemm_cp_tile<BK, BN, LR, 0, NT>(B, N, k0, ke, bn0, N, rs, tid);
    };
    // instruction A element (row pr of this warpgroup's 64, k): op(B)[k][n], n = 64 wq + pr
    auto ra = [&](const float* rs, int pr, int k) -> uint32_t {
        const int n = wq * 64 + pr;
        return f32_to_tf32(TB ? rs[n * LR + k] : rs[k * LR + n]);
    };

    // OVERLAP: no instruction but wgmma may define the accumulators while a group is in flight
    // (else ptxas serialises every wgmma), so they are not zeroed here: the first wgmma runs
    // with scale-d = 0 (D = A B), and there is always a first one (>= 2 k-tiles, zeros past K).
    float acc[BM / 2];
    if constexpr (!OVERLAP) {
#pragma unroll
        for (int i = 0; i < BM / 2; ++i) acc[i] = 0.f;
    }

    const uint32_t ds_addr = smem_addr(Ds);
    const int ntiles = ke > kb ? (ke - kb + BK - 1) / BK : 0;
    // OVERLAP runs an even number of k-tiles: the extra one lies past ke, so fetch zero-fills it
    const int padded = !OVERLAP ? ntiles : ntiles < 2 ? 2 : ntiles + (ntiles & 1);
#pragma unroll
    for (int s = 0; s < AHEAD; ++s) {
        if (s < padded) fetch(kb + s * BK, s);
        cp_async_commit();
    }
    // One k-tile: its B fragments into af (rounded to TF32), then BK/8 wgmma on the A tile's
    // descriptor, committed as one group.
    auto multiply = [&](int t, uint32_t (&af)[BK / 8][4]) {
        const int stage = t % STAGES;
        const float* rs = Rs + stage * SR;
#pragma unroll
        for (int s = 0; s < BK / 8; ++s) {
            const int pr = warp * 16 + g, k = s * 8 + t4;
            af[s][0] = ra(rs, pr, k);
            af[s][1] = ra(rs, pr + 8, k);
            af[s][2] = ra(rs, pr, k + 4);
            af[s][3] = ra(rs, pr + 8, k + 4);
        }
        const uint32_t base = ds_addr + (uint32_t)(stage * SD * 4);
        if constexpr (!OVERLAP) {
#pragma unroll
            for (int i = 0; i < BM / 2; ++i) wgmma_reg_fence(acc[i]);
        }
        wgmma_fence();  // af (and, the first time, acc) were written by other instructions
#pragma unroll
        for (int s = 0; s < BK / 8; ++s)
            gemm_wgmma_mma<BM>(acc, af[s], wgmma_desc(base + (uint32_t)s * 2 * LBO, LBO, SBO),
                               OVERLAP ? (t > 0 || s > 0) : 1);
        wgmma_commit();
    };
    if constexpr (!OVERLAP) {
        uint32_t af[BK / 8][4];
        for (int t = 0; t < ntiles; ++t) {
            cp_async_wait<STAGES - 2>();
            fence_proxy_async_smem();  // this thread's landed copies -> visible to wgmma's reads
            __syncthreads();           // everyone's; and every warpgroup finished tile t-1's wgmma
            {
                const int nt = t + STAGES - 1;
                if (nt < ntiles) fetch(kb + nt * BK, nt % STAGES);
                cp_async_commit();
            }
            multiply(t, af);
            wgmma_wait<0>();  // before the next refill may overwrite this stage
#pragma unroll
            for (int i = 0; i < BM / 2; ++i) wgmma_reg_fence(acc[i]);
        }
    } else {
        // Tile t's wgmma group is issued while tile t-1's may still run: wait_group 1 after
        // each commit (so t-1 is done by the end of iteration t), two fragment buffers (the
        // RS form reads af asynchronously: af of t-1 is rewritten only at t+1, after that
        // wait), and the refill at iteration t targets tile t-2's stage (every warpgroup
        // passed iteration t-1's wait - the barrier below says so - so t-2 is finished).
        // Unrolled by two with no branch around the wgmma (a branch made NVVM copy the
        // accumulators at the join, and ptxas then serialised every wgmma): an odd tile count
        // runs one more k-tile, of zeros (cp.async zero-fills past ke), which adds nothing.
        uint32_t af0[BK / 8][4], af1[BK / 8][4];
        auto step = [&](int t, uint32_t (&af)[BK / 8][4]) {
            cp_async_wait<STAGES - 3>();  // tile t landed (groups after it: AHEAD - 1)
            fence_proxy_async_smem();
            __syncthreads();
            {
                const int nt = t + AHEAD;
                if (nt < padded) fetch(kb + nt * BK, nt % STAGES);
                cp_async_commit();
            }
            multiply(t, af);
            wgmma_wait<1>();
        };
        for (int t = 0; t < padded; t += 2) {
            step(t, af0);
            step(t + 1, af1);
        }
        wgmma_wait<0>();
#pragma unroll
        for (int i = 0; i < BM / 2; ++i) wgmma_reg_fence(acc[i]);
    }
    cp_async_wait<0>();

#pragma unroll
    for (int i = 0; i < BM / 2; ++i) {
        const int m = bm0 + 8 * (i >> 2) + 2 * t4 + (i & 1);
        const int n = bn0 + wq * 64 + warp * 16 + g + 8 * ((i >> 1) & 1);
        if (m < M && n < N) gemm_store(C, bias, Z, aux, N, m, n, acc[i], epi, p);
    }
}

// ---------------------------------------------------------------- entry points
#define GEMM_PARAMS(T)                                                                       \
    const T *A, const T *B, T *C, const T *bias, T *Z, const T *aux, int M, int N, int K,    \
        int k_chunk, int epi, T p, T *Cout, unsigned *tiles, int epi_out
#define GEMM_ARGS A, B, C, bias, Z, aux, M, N, K, k_chunk, epi, p

#define GEMM_WG_ONE(NAME, SUF, BM, BN, BK, ST, MINB, TB, OV)                                 \
    extern "C" __global__ void __launch_bounds__((BN / 64) * 128, MINB)                      \
        gemm_##NAME##SUF(GEMM_PARAMS(float)) {                                               \
        gemm_wgmma<BM, BN, BK, ST, TB, OV>(GEMM_ARGS);                                       \
        gemm_splitk_finish<float, BM, BN>(C, Cout, tiles, bias, Z, aux, M, N, epi_out, p);   \
    }
#define GEMM_WG(NAME, BM, BN, BK, ST, MINB, OV)                                              \
    GEMM_WG_ONE(NAME, _nn_v_f32, BM, BN, BK, ST, MINB, false, OV)                            \
    GEMM_WG_ONE(NAME, _nt_v_f32, BM, BN, BK, ST, MINB, true, OV)

// Configuration table; ids and names must match CONFIGS in mlpaccel/backends/cuda_gemm.py.
//                    name           BM   BN  BK  stages  blocks/SM   threads, smem (nn)
#if GEMM_WANT(17)
GEMM_WG(wg128x128x32s3, 128, 128, 32, 3, 2, false)  // 256, m64n128k8, 99.75 KB (nt 102 KB)
#endif
#if GEMM_WANT(18)
GEMM_WG(wg256x128x32s4, 256, 128, 32, 4, 1, false)  // 256, m64n256k8, 196 KB (nt 200 KB)
#endif
// the same tile with wgmma groups overlapping across k-tiles (wait_group 1; 2 tiles ahead)
#if GEMM_WANT(21)
GEMM_WG(wg256x128x32s4o, 256, 128, 32, 4, 1, true)  // 256, m64n256k8, 196 KB (nt 200 KB)
#endif
