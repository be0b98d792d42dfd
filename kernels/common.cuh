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

// ---------------------------------------------------------------- Hopper wgmma (sm_90a only)
// Entry points that use these compile only with -arch=sm_90a (kernels/gemm_wgmma.cu; the
// cuda backend compiles that module for sm_90a itself). PTX ISA 8.x, "Asynchronous
// Warpgroup Level Matrix Multiply-Accumulate" (wgmma): a warpgroup = 4 consecutive warps
// (threads 128w .. 128w+127) issues each instruction together.

// The shared-window address of a generic pointer to shared memory (what descriptors hold).
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
    return (uint32_t)__cvta_generic_to_shared(p);
}

// Orders this thread's earlier generic-proxy writes of shared memory (st.shared, completed
// cp.async) before later async-proxy reads of it (wgmma operands from a descriptor).
__device__ __forceinline__ void fence_proxy_async_smem() {
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
}

// wgmma.fence: required before the first wgmma of a batch whose accumulator or A-fragment
// registers were written by other instructions.
__device__ __forceinline__ void wgmma_fence() {
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
}
__device__ __forceinline__ void wgmma_commit() {
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
}
// Wait until at most N committed wgmma groups of this warpgroup are pending.
template <int N>
__device__ __forceinline__ void wgmma_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Keeps the compiler from moving reads/writes of an accumulator register across the
// fence / wait asm statements (which do not name it): a register dependency on an empty asm.
__device__ __forceinline__ void wgmma_reg_fence(float& r) {
    asm volatile("" : "+f"(r)::"memory");
}

// D(64 x N, f32) = A(64 x 8, tf32, registers) * B(8 x N, tf32, shared memory via descriptor)
// + (scale_d ? D : 0); RS form, warpgroup-collective, asynchronous (commit + wait before D is
// read). Fragments (PTX ISA wgmma .m64nNk8 register layouts; CuTe ALayout_64x8 /
// CLayout_64xN agree): warp w of the warpgroup, lane = 4g + t:
//   a[0] (16w+g, t)  a[1] (16w+g+8, t)  a[2] (16w+g, t+4)  a[3] (16w+g+8, t+4)
//   d[i] (16w + g + 8*((i>>1)&1), 8*(i>>2) + 2t + (i&1)),  i < N/2.
// desc_b: 64-bit matrix descriptor of B, K-major (wgmma_desc below). tf32 has no transpose
// immediates, so B in shared memory must be K-major; imm-scale-a = imm-scale-b = 1.
__device__ __forceinline__ void wgmma_m64n128k8_tf32_rs(float (&d)[64], const uint32_t a[4],
                                                      unsigned long long desc_b,
                                                      int scale_d) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k8.f32.tf32.tf32 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
        "}, {%64, %65, %66, %67}, %68, p, 1, 1;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
          "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d)
        : "memory");
}

__device__ __forceinline__ void wgmma_m64n256k8_tf32_rs(float (&d)[128], const uint32_t a[4],
                                                      unsigned long long desc_b,
                                                      int scale_d) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %133, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n256k8.f32.tf32.tf32 {"
        "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
        "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
        "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
        "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63, "
        "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, "
        "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, "
        "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, "
        "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127"
        "}, {%128, %129, %130, %131}, %132, p, 1, 1;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]),
          "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]),
          "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]),
          "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]),
          "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]),
          "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]),
          "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]),
          "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63]),
          "+f"(d[64]), "+f"(d[65]), "+f"(d[66]), "+f"(d[67]), "+f"(d[68]), "+f"(d[69]), "+f"(d[70]), "+f"(d[71]),
          "+f"(d[72]), "+f"(d[73]), "+f"(d[74]), "+f"(d[75]), "+f"(d[76]), "+f"(d[77]), "+f"(d[78]), "+f"(d[79]),
          "+f"(d[80]), "+f"(d[81]), "+f"(d[82]), "+f"(d[83]), "+f"(d[84]), "+f"(d[85]), "+f"(d[86]), "+f"(d[87]),
          "+f"(d[88]), "+f"(d[89]), "+f"(d[90]), "+f"(d[91]), "+f"(d[92]), "+f"(d[93]), "+f"(d[94]), "+f"(d[95]),
          "+f"(d[96]), "+f"(d[97]), "+f"(d[98]), "+f"(d[99]), "+f"(d[100]), "+f"(d[101]), "+f"(d[102]), "+f"(d[103]),
          "+f"(d[104]), "+f"(d[105]), "+f"(d[106]), "+f"(d[107]), "+f"(d[108]), "+f"(d[109]), "+f"(d[110]), "+f"(d[111]),
          "+f"(d[112]), "+f"(d[113]), "+f"(d[114]), "+f"(d[115]), "+f"(d[116]), "+f"(d[117]), "+f"(d[118]), "+f"(d[119]),
          "+f"(d[120]), "+f"(d[121]), "+f"(d[122]), "+f"(d[123]), "+f"(d[124]), "+f"(d[125]), "+f"(d[126]), "+f"(d[127])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc_b), "r"(scale_d)
        : "memory");
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

// ---------------------------------------------------------------- wgmma matrix descriptor
// PTX ISA "Matrix Descriptor Format" (wgmma): bits 0-13 start address, 16-29 leading
// dimension byte offset (LBO), 32-45 stride dimension byte offset (SBO), each encoded as
// (x & 0x3FFFF) >> 4; bits 49-51 base offset (0: unused without swizzle); bits 62-63 swizzle
// mode (0 none, 1 128B, 2 64B, 3 32B). For a K-major operand without swizzle the canonical
// layout is ((8,m),(T,2k)):((1T,SBO),(1,LBO)) in units of elements, T = 16 bytes of elements:
// "core matrices" of 8 rows x 16 bytes (rows 16 bytes apart, 128 contiguous bytes), LBO = byte
// distance between core matrices adjacent in K, SBO = between core matrices adjacent in M/N.
__device__ __forceinline__ unsigned long long wgmma_desc(uint32_t start, uint32_t lbo,
                                                         uint32_t sbo) {
    return (unsigned long long)((start & 0x3FFFFu) >> 4) |
           ((unsigned long long)((lbo & 0x3FFFFu) >> 4) << 16) |
           ((unsigned long long)((sbo & 0x3FFFFu) >> 4) << 32);  // base offset 0, no swizzle
}

// ---------------------------------------------------------------- GEMM epilogue (gemm*.cu)
// The activation f and its derivative f' by code: mlp::act_by_code / mlp::dact_by_code
// (common.cuh, shared with head.cu).

// Applies the epilogue to one output element (m, n) with accumulator v and stores it.
template <typename T>
__device__ __forceinline__ void gemm_store(T* C, const T* bias, T* Z, const T* aux, int N,
                                           int m, int n, T v, int epi, T p) {
    const long long idx = (long long)m * N + n;
    if (epi & 1) v += bias[n];
    if (epi & 16) Z[idx] = v;
    const int act = (epi >> 1) & 7;
    if (act) v = mlp::act_by_code(v, act, p);
    const int dact = (epi >> 5) & 7;
    if (dact) v *= mlp::dact_by_code(aux[idx], dact, p);
    C[idx] = v;
}

// An R x CC tile (rows [r0, rmax), cols [c0, cmax)) of the row-major gm (leading dimension
// ld) into shared memory by 16-byte cp.async, zero-filled outside: row r at s + r*L + (r/4)*P.
template <int R, int CC, int L, int P, int NT>
__device__ __forceinline__ void gemm_cp_tile(const float* gm, int ld, int r0, int rmax, int c0,
                                             int cmax, float* s, int tid) {
    constexpr int SLOTS = R * CC / 4;
#pragma unroll
    for (int q = 0; q < (SLOTS + NT - 1) / NT; ++q) {
        const int f = tid + q * NT;
        if (SLOTS % NT != 0 && f >= SLOTS) break;
        const int r = f / (CC / 4), c = (f % (CC / 4)) * 4;
        const bool in = r0 + r < rmax && c0 + c < cmax;
        const float* src = in ? gm + (long long)(r0 + r) * ld + (c0 + c) : gm;
        cp_async_16_zfill(s + r * L + (r / 4) * P + c, src, in ? 16 : 0);
    }
}

// In-kernel split-K finish (kernels/gemm.cu header comment).
// Called by every thread of a split-K block after its partial tile is stored (W = the
// (splits, M, N) workspace). The last of the gridDim.z slices of an output tile to arrive sums
// the tile's partials in slice order and applies the epilogue (it was a separate reduce
// kernel until session 5; threadfence-reduction pattern, as grid_sum_finish).
template <typename T, int BM, int BN>
__device__ __forceinline__ void gemm_splitk_finish(const T* W, T* Cout, unsigned* tiles,
                                                   const T* bias, T* Z, const T* aux, int M,
                                                   int N, int epi, T p) {
    if (gridDim.z == 1) return;
    __shared__ int gemm_last_slice;
    __threadfence();  // this thread's partials are visible before the tile's ticket is taken
    __syncthreads();
    const unsigned tile = blockIdx.y * gridDim.x + blockIdx.x;
    if (threadIdx.x == 0)
        gemm_last_slice = atomicAdd(tiles + tile, 1u) == gridDim.z - 1;
    __syncthreads();
    if (!gemm_last_slice) return;  // uniform per block
    __threadfence();
    const long long total = (long long)M * N;
    const int bm0 = blockIdx.y * BM, bn0 = blockIdx.x * BN;
    // Each output sums its slices in slice order (the bits do not depend on which slice
    // finished last), ZB slices' loads in flight together: one L2 round trip per ZB slices,
    // where a volatile load per slice waited its turn. Past the last slice a lane re-reads
    // it and adds +0 (the sum starts at +0, so it is never -0: s + 0 == s, bit for bit).
    // __ldcg reads at L2, where the other slices' fenced stores are.
    constexpr int ZB = 8;
    const int nz = (int)gridDim.z;
    for (int e = threadIdx.x; e < BM * BN; e += blockDim.x) {
        const int m = bm0 + e / BN, n = bn0 + e % BN;
        if (m >= M || n >= N) continue;
        const T* w = W + ((long long)m * N + n);
        T s = T(0);
        for (int z0 = 0; z0 < nz; z0 += ZB) {
            T v[ZB];
#pragma unroll
            for (int j = 0; j < ZB; ++j)
                v[j] = __ldcg(w + (z0 + j < nz ? z0 + j : nz - 1) * total);
#pragma unroll
            for (int j = 0; j < ZB; ++j) s += z0 + j < nz ? v[j] : T(0);
        }
        gemm_store(Cout, bias, Z, aux, N, m, n, s, epi, p);
    }
    if (threadIdx.x == 0) tiles[tile] = 0u;  // ready for the next launch
}
