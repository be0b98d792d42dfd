// common.cuh - shared by every kernels/*.cu: portable types, math overloads, reductions, and
// the wrappers for tensor-core and asynchronous-copy instructions.
//
// The same sources compile three ways: NVRTC (cupy.RawModule, the `cuda` backend), nvcc (static
// checks: `nvcc -arch=sm_90 -cubin -Xptxas -v`) and g++ with -DMLPACCEL_EMU (the `cuda-emu`
// backend), which supplies CUDA's built-ins (threadIdx, __syncthreads, shuffles, atomics, math)
// and the emulated bodies of the PTX wrappers from emu/emu_intrinsics.cuh.
// Nothing here includes a system header: NVRTC has none.
#pragma once

#ifdef MLPACCEL_EMU
#include "emu/emu_intrinsics.cuh"
#else
// NVRTC has no <cstdint>; where nvcc already defines it, the typedef is identical (repeating
// an identical typedef is legal C++). (No uint64_t: stdint spells it `unsigned long`.)
typedef unsigned int uint32_t;

// ---------------------------------------------------------------- PTX wrappers (device bodies)
// Round an fp32 value to TF32 (10-bit mantissa): round to nearest, ties away from zero; the low
// 13 mantissa bits of the result are zero.
__device__ __forceinline__ uint32_t f32_to_tf32(float x) {
    uint32_t r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
    return r;
}

// D = A(16x8, row) * B(8x8, col) + C, TF32 inputs, fp32 accumulate; warp-collective. Fragment
// layouts are the PTX ISA's for mma.m16n8k8 .tf32 (a: 4 regs, b: 2 regs, c/d: 4 floats).
__device__ __forceinline__ void mma_m16n8k8_tf32(float d[4], const uint32_t a[4],
                                                 const uint32_t b[2], const float c[4]) {
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]),
          "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
}

// 16-byte global -> shared copy that bypasses L1 (cp.async.cg); completes asynchronously.
__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem) {
    uint32_t s = (uint32_t)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\n" ::"r"(s), "l"(gmem));
}

// As cp_async_16 but reads only src_bytes (0..16) and zero-fills the rest: edge tiles.
__device__ __forceinline__ void cp_async_16_zfill(void* smem, const void* gmem, int src_bytes) {
    uint32_t s = (uint32_t)__cvta_generic_to_shared(smem);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem),
                 "r"(src_bytes));
}

__device__ __forceinline__ void cp_async_commit() {
    asm volatile("cp.async.commit_group;\n" ::);
}

// Wait until at most N committed groups are still in flight.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}
#endif  // MLPACCEL_EMU

namespace mlp {

// ---------------------------------------------------------------- math overloads
// One spelling per function for float and double, so templates pick the precise variant
// (expf for float, exp for double) without relying on <cmath> overloads NVRTC may lack.
__device__ __forceinline__ float m_exp(float x) { return expf(x); }
__device__ __forceinline__ double m_exp(double x) { return exp(x); }
__device__ __forceinline__ float m_expm1(float x) { return expm1f(x); }
__device__ __forceinline__ double m_expm1(double x) { return expm1(x); }
__device__ __forceinline__ float m_log(float x) { return logf(x); }
__device__ __forceinline__ double m_log(double x) { return log(x); }
__device__ __forceinline__ float m_log1p(float x) { return log1pf(x); }
__device__ __forceinline__ double m_log1p(double x) { return log1p(x); }
__device__ __forceinline__ float m_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ double m_tanh(double x) { return tanh(x); }
__device__ __forceinline__ float m_erf(float x) { return erff(x); }
__device__ __forceinline__ double m_erf(double x) { return erf(x); }
__device__ __forceinline__ float m_sqrt(float x) { return sqrtf(x); }
__device__ __forceinline__ double m_sqrt(double x) { return sqrt(x); }
__device__ __forceinline__ float m_fabs(float x) { return fabsf(x); }
__device__ __forceinline__ double m_fabs(double x) { return fabs(x); }
__device__ __forceinline__ float m_max(float a, float b) { return fmaxf(a, b); }
__device__ __forceinline__ double m_max(double a, double b) { return fmax(a, b); }
__device__ __forceinline__ float m_min(float a, float b) { return fminf(a, b); }
__device__ __forceinline__ double m_min(double a, double b) { return fmin(a, b); }

// ---------------------------------------------------------------- z > 0, flush-proof
// CuPy compiles every kernel with -ftz=true (it appends the flag after ours), so a float32
// compare reads a subnormal z (|z| < 1.2e-38) as 0: step(1e-41) would be 0, not 1. Comparing
// the bits instead is exact in every mode: the bit patterns 1 .. 0x7f800000 are exactly the
// floats in (0, +inf] (+0, negatives and NaN fall outside). float64 is never flushed.
__device__ __forceinline__ bool positive(float z) {
    return __float_as_uint(z) - 1u < 0x7f800000u;
}
__device__ __forceinline__ bool positive(double z) { return z > 0.0; }

// ---------------------------------------------------------------- activations by code
// The fused epilogues' activation codes (mlpaccel/backends/cuda_gemm.py EPILOGUE_ACTIVATIONS):
// 1 relu, 2 leaky_relu (slope p), 3 sigmoid, 4 tanh, 5 gelu (erf form); 0 = identity.
template <typename T>
__device__ __forceinline__ T act_by_code(T z, int code, T p) {
    switch (code) {
    case 1: return positive(z) ? z : T(0);
    case 2: return positive(z) ? z : p * z;
    case 3: {  // stable: never exp of a large positive number
        if (z >= T(0)) return T(1) / (T(1) + m_exp(-z));
        T e = m_exp(z);
        return e / (T(1) + e);
    }
    case 4: return m_tanh(z);
    case 5: return T(0.5) * z * (T(1) + m_erf(z * T(0.70710678118654752440)));
    default: return z;
    }
}

// f' by code, from the value the derivative reads: x = z for relu/leaky_relu/gelu, x = a = f(z)
// for sigmoid/tanh (cuda_gemm.GRAD_AUX); 0 = identity (f' = 1).
template <typename T>
__device__ __forceinline__ T dact_by_code(T x, int code, T p) {
    switch (code) {
    case 1: return positive(x) ? T(1) : T(0);
    case 2: return positive(x) ? T(1) : p;
    case 3: return x * (T(1) - x);
    case 4: return T(1) - x * x;
    case 5: {
        T cdf = T(0.5) * (T(1) + m_erf(x * T(0.70710678118654752440)));
        return cdf + x * T(0.39894228040143267794) * m_exp(T(-0.5) * x * x);
    }
    default: return T(1);
    }
}

// -inf without <limits>: the most negative finite value is enough as a max-reduction seed
// and never produces inf - inf = NaN.
template <class T> struct Lowest;
template <> struct Lowest<float> { __device__ static float v() { return -3.402823466e38f; } };
template <> struct Lowest<double> { __device__ static double v() { return -1.7976931348623157e308; } };

// 16-byte vector of T: float4 for float, double2 for double.
template <class T> struct Vec16;
template <> struct Vec16<float> { typedef float4 type; enum { n = 4 }; };
template <> struct Vec16<double> { typedef double2 type; enum { n = 2 }; };

__device__ __forceinline__ bool aligned16(const void* p) {
    return (((unsigned long long)p) & 15ull) == 0ull;
}

// ---------------------------------------------------------------- reductions
template <class T>
__device__ __forceinline__ T warp_sum(T v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

template <class T>
__device__ __forceinline__ T warp_max(T v) {
    for (int o = 16; o > 0; o >>= 1) v = m_max(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over a whole block (blockDim.x a multiple of 32, <= 1024); every thread gets the total.
// `scratch` holds >= 32 T in shared memory. Two barriers: the caller may reuse scratch after.
template <class T>
__device__ T block_sum(T v, T* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int nwarps = blockDim.x >> 5;
    v = warp_sum(v);
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    T t = lane < nwarps ? scratch[lane] : T(0);
    t = warp_sum(t);
    __syncthreads();  // everyone has read scratch before anyone writes it again
    return t;
}

// Deterministic grid-wide sum without a second launch ("threadfence reduction"): each block
// writes its partial sum; the last block to finish (ticket from an atomic counter) adds the
// partials in block order, writes total * scale to *out and resets the counter for the next
// launch. partials: gridDim.x T; counter: one unsigned, zero before the first launch;
// scratch: >= 33 T of shared memory (32 for block_sum, one for the "last block" flag).
template <class T>
__device__ void grid_sum_finish(T block_total, T* partials, unsigned* counter, T* out, T scale,
                                T* scratch) {
    if (threadIdx.x == 0) {
        partials[blockIdx.x] = block_total;
        __threadfence();  // the partial is visible to every block before the ticket is taken
        unsigned ticket = atomicAdd(counter, 1u);
        scratch[32] = (ticket == gridDim.x - 1) ? T(1) : T(0);
    }
    __syncthreads();
    if (scratch[32] == T(0)) return;  // uniform per block: no barrier divergence
    __threadfence();
    T s = T(0);
    for (unsigned i = threadIdx.x; i < gridDim.x; i += blockDim.x)
        s += ((volatile T*)partials)[i];
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) {
        *out = s * scale;
        *counter = 0u;
    }
}

// Grid-stride loop bounds as 64-bit integers (arrays may exceed 2^31 elements).
__device__ __forceinline__ long long gtid() {
    return (long long)blockIdx.x * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ long long gstride() {
    return (long long)gridDim.x * blockDim.x;
}

}  // namespace mlp
