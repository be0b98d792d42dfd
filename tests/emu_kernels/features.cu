// features.cu - test kernels for the CPU emulator (tests/test_emulator.py): each exercises one
// CUDA feature the emulator must honour. They also compile with nvcc (static checks).
#include "common.cuh"

// Writes, per thread, its built-in coordinates: 3-D grid and block.
extern "C" __global__ void coords(int* out) {
    unsigned bl = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    unsigned tl = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    unsigned n = blockDim.x * blockDim.y * blockDim.z;
    int* o = out + 10 * (bl * n + tl);
    o[0] = blockIdx.x; o[1] = blockIdx.y; o[2] = blockIdx.z;
    o[3] = threadIdx.x; o[4] = threadIdx.y; o[5] = threadIdx.z;
    o[6] = blockDim.x * 100 + blockDim.y * 10 + blockDim.z;
    o[7] = gridDim.x * 100 + gridDim.y * 10 + gridDim.z;
    o[8] = warpSize;
    o[9] = (int)tl;
}

// C = A @ B (row-major, M x K times K x N), 16 x 16 tiles in static shared memory.
template <typename T, int TILE>
__device__ void tiled_gemm(const T* A, const T* B, T* C, int M, int N, int K, bool sync1,
                           bool sync2) {
    __shared__ T As[TILE][TILE];
    __shared__ T Bs[TILE][TILE + 1];
    int tx = threadIdx.x, ty = threadIdx.y;
    int row = blockIdx.y * TILE + ty, col = blockIdx.x * TILE + tx;
    T acc = 0;
    for (int k0 = 0; k0 < K; k0 += TILE) {
        As[ty][tx] = (row < M && k0 + tx < K) ? A[(long long)row * K + k0 + tx] : T(0);
        Bs[ty][tx] = (col < N && k0 + ty < K) ? B[(long long)(k0 + ty) * N + col] : T(0);
        if (sync1) __syncthreads();
#pragma unroll
        for (int k = 0; k < TILE; k++) acc += As[ty][k] * Bs[k][tx];
        if (sync2) __syncthreads();
    }
    if (row < M && col < N) C[(long long)row * N + col] = acc;
}
extern "C" __global__ void __launch_bounds__(256) tiled_gemm_f32(const float* __restrict__ A,
        const float* __restrict__ B, float* __restrict__ C, int M, int N, int K) {
    tiled_gemm<float, 16>(A, B, C, M, N, K, true, true);
}
extern "C" __global__ void tiled_gemm_f64(const double* A, const double* B, double* C, int M,
                                          int N, int K) {
    tiled_gemm<double, 16>(A, B, C, M, N, K, true, true);
}

// Reverses each block's slice through dynamic shared memory (shared_mem = blockDim.x * 4).
extern "C" __global__ void dyn_reverse(const float* x, float* y, int n) {
    extern __shared__ __align__(16) float buf[];
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    buf[threadIdx.x] = i < n ? x[i] : -1.0f;
    __syncthreads();
    int j = blockIdx.x * blockDim.x + (blockDim.x - 1 - threadIdx.x);
    if (j < n) y[j] = buf[threadIdx.x];
}

// Warp collectives: 12 outputs per thread.
extern "C" __global__ void warp_ops(const int* x, int* out) {
    int t = blockIdx.x * blockDim.x + threadIdx.x;
    int lane = threadIdx.x & 31;
    int v = x[t];
    int* o = out + 12 * t;
    o[0] = __shfl_sync(0xffffffffu, v, 3);                 // broadcast lane 3
    o[1] = __shfl_sync(0xffffffffu, v, lane + 1, 8);       // rotate inside groups of 8
    o[2] = __shfl_up_sync(0xffffffffu, v, 2);
    o[3] = __shfl_down_sync(0xffffffffu, v, 5, 16);
    o[4] = __shfl_xor_sync(0xffffffffu, v, 1);
    o[5] = (int)__ballot_sync(0xffffffffu, v & 1);
    o[6] = __any_sync(0xffffffffu, v == 7);
    o[7] = __all_sync(0xffffffffu, v >= 0);
    int s = v;                                              // butterfly sum
    for (int d = 16; d > 0; d >>= 1) s += __shfl_xor_sync(0xffffffffu, s, d);
    o[8] = s;
    __syncwarp();
    // half-warp masks: each half runs its own collective
    unsigned half = lane < 16 ? 0x0000ffffu : 0xffff0000u;
    o[9] = __shfl_sync(half, v, 0, 16);
    o[10] = (int)__ballot_sync(half, v > 10);
    __syncwarp(half);
    double dv = v * 0.5;
    o[11] = (int)(2.0 * __shfl_down_sync(0xffffffffu, dv, 1));
}

// Atomics on one counter block: out = [fsum, isum, imax, cas_wins, exch_last]; dsum separate.
extern "C" __global__ void atomics(const float* x, float* fsum, double* dsum, int* ints,
                                   unsigned* usum, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    atomicAdd(fsum, x[i]);
    atomicAdd(dsum, (double)x[i]);
    atomicAdd(&ints[0], 1);
    atomicMax(&ints[1], i);
    if (atomicCAS(&ints[2], 0, i + 1) == 0) atomicAdd(&ints[3], 1);  // exactly one winner
    atomicExch(&ints[4], 7);
    atomicAdd(usum, 2u);
}

// 16-byte vector loads/stores through reinterpret_cast, __ldg, int4 and double2.
extern "C" __global__ void vec_copy(const float* x, float* y, const int* a, int* b,
                                    const double* c, double* d, int n4) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n4) return;
    float4 v = __ldg(reinterpret_cast<const float4*>(x) + i);
    v.x *= 2.0f; v.y *= 2.0f; v.z *= 2.0f; v.w *= 2.0f;
    reinterpret_cast<float4*>(y)[i] = v;
    int4 w = reinterpret_cast<const int4*>(a)[i];
    reinterpret_cast<int4*>(b)[i] = make_int4(w.w, w.z, w.y, w.x);
    double2 e = reinterpret_cast<const double2*>(c)[i];
    reinterpret_cast<double2*>(d)[i] = make_double2(e.y, e.x);
    float2 f = reinterpret_cast<const float2*>(x)[2 * i];
    y[4 * i] += 0.0f * f.x;
}

// Math functions and intrinsics: 24 results per input.
extern "C" __global__ void math_f32(const float* x, float* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
    float v = x[i];
    float* o = out + 24 * i;
    o[0] = expf(v); o[1] = __expf(v); o[2] = logf(fabsf(v) + 1.0f); o[3] = log1pf(fabsf(v));
    o[4] = expm1f(v); o[5] = tanhf(v); o[6] = erff(v); o[7] = fmaxf(v, 0.5f);
    o[8] = fminf(v, 0.5f); o[9] = fabsf(v); o[10] = sqrtf(fabsf(v)); o[11] = rsqrtf(fabsf(v) + 1);
    o[12] = __fdividef(v, 3.0f); o[13] = __frcp_rn(v + 10.0f); o[14] = fmaf(v, 2.0f, 1.0f);
    o[15] = __uint_as_float(__float_as_uint(v));
    o[16] = (float)min(3, (int)v); o[17] = (float)max(2u, 5u); o[18] = min(v, 1.0f);
    o[19] = max(v, -1.0f); o[20] = (float)exp((double)v); o[21] = __saturatef(v);
    o[22] = rsqrtf(4.0f); o[23] = (float)__popc(__float_as_uint(v));
}

// __syncthreads_count / _and / _or
extern "C" __global__ void sync_count(const int* x, int* out) {
    int t = threadIdx.x;
    int c = __syncthreads_count(x[t] > 0);
    int a = __syncthreads_and(x[t] > 0);
    int o = __syncthreads_or(x[t] > 0);
    if (t == 0) { out[0] = c; out[1] = a; out[2] = o; }
}

// TF32 rounding, elementwise (bit patterns out).
extern "C" __global__ void tf32_round(const float* x, unsigned* out, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) out[i] = f32_to_tf32(x[i]);
}

// One mma.m16n8k8 per warp: D(16x8) = A(16x8) B(8x8) + C, all row-major in global memory;
// warp w handles problem w. Fragments follow the PTX ISA layouts.
extern "C" __global__ void mma_tile(const float* A, const float* B, const float* C, float* D) {
    int w = (blockIdx.x * blockDim.x + threadIdx.x) / 32, lane = threadIdx.x & 31;
    int g = lane >> 2, t = lane & 3;
    const float* a = A + w * 128;
    const float* b = B + w * 64;
    const float* c = C + w * 128;
    float* d = D + w * 128;
    uint32_t af[4] = {f32_to_tf32(a[g * 8 + t]), f32_to_tf32(a[(g + 8) * 8 + t]),
                      f32_to_tf32(a[g * 8 + t + 4]), f32_to_tf32(a[(g + 8) * 8 + t + 4])};
    uint32_t bf[2] = {f32_to_tf32(b[t * 8 + g]), f32_to_tf32(b[(t + 4) * 8 + g])};
    float cf[4], df[4];
    for (int i = 0; i < 4; i++) cf[i] = c[(g + 8 * (i >> 1)) * 8 + 2 * t + (i & 1)];
    mma_m16n8k8_tf32(df, af, bf, cf);
    for (int i = 0; i < 4; i++) d[(g + 8 * (i >> 1)) * 8 + 2 * t + (i & 1)] = df[i];
}

// cp.async into shared memory (the last chunk zero-filled past n), then out = 2 * smem.
extern "C" __global__ void cp_async_copy(const float* x, float* y, int n) {
    __shared__ __align__(16) float s[128];
    int c = threadIdx.x;  // 32 threads x 4 floats
    int base = blockIdx.x * 128 + 4 * c;
    int rem = n - base;
    int bytes = rem >= 4 ? 16 : (rem > 0 ? 4 * rem : 0);
    if (bytes == 16) cp_async_16(&s[4 * c], x + base);
    else cp_async_16_zfill(&s[4 * c], x + (bytes ? base : 0), bytes);
    cp_async_commit();
    cp_async_wait<0>();
    __syncthreads();
    for (int k = 0; k < 4; k++) {
        int j = blockIdx.x * 128 + 4 * ((c + 1) % 32) + k;
        if (j < n) y[j] = 2.0f * s[4 * ((c + 1) % 32) + k];
    }
}

// y = a * x + y; launched in place (x is y) to check argument aliasing in the checked modes.
extern "C" __global__ void axpy_f32(const float* x, float* y, float a, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] = a * x[i] + y[i];
}
