// emu_intrinsics.cuh - CPU bodies of the PTX wrappers declared in kernels/common.cuh.
//
// Included by common.cuh under `#ifdef MLPACCEL_EMU` (the cuda-emu backend); the device
// bodies there use inline PTX. Semantics follow the PTX ISA:
//   f32_to_tf32        cvt.rna.tf32.f32: round to nearest, ties away from zero, to a 10-bit
//                      mantissa; the low 13 bits of the result are zero.
//   mma_m16n8k8_tf32   mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32, a warp collective:
//                      the 32 lanes' fragments are gathered (layouts in cuda_emu.h,
//                      emu::complete_warp_op), D = A*B + C in fp32, and scattered back.
//   cp_async_16*       cp.async.cg 16 bytes: copied synchronously, so commit/wait are no-ops.
//   smem_addr          __cvta_generic_to_shared: the emulated shared window (cuda_emu.h,
//                      emu::shared_window_offset; dynamic shared memory only).
//   wgmma_m64n{128,256}k8_tf32_rs  wgmma.mma_async RS .tf32, a warpgroup collective
//                      (emu::warpgroup_collective / complete_wgmma: fragments and the matrix
//                      descriptor decoded as the PTX ISA defines them). Synchronous, so
//                      wgmma_fence / commit / wait and fence_proxy_async_smem are no-ops.
#pragma once
#ifndef MLPACCEL_EMU_INTRINSICS_CUH
#define MLPACCEL_EMU_INTRINSICS_CUH

__device__ __forceinline__ uint32_t f32_to_tf32(float x) {
    uint32_t u = __float_as_uint(x);
    if ((u & 0x7f800000u) == 0x7f800000u) {
        // Inf keeps its bits; NaN becomes the canonical NaN (low 13 bits zero either way).
        return (u & 0x007fffffu) ? 0x7fffffffu & ~0x1fffu : u;
    }
    // Adding half a TF32 ulp to the magnitude bits and truncating rounds ties away from zero
    // (sign-magnitude); a carry into the exponent is the correct rounding up (to Inf at the top).
    return (u + 0x1000u) & ~0x1fffu;
}

__device__ __forceinline__ void mma_m16n8k8_tf32(float d[4], const uint32_t a[4],
                                                 const uint32_t b[2], const float c[4]) {
    const void* in[3] = {a, b, c};
    float out[4];
    ::emu::warp_collective(::emu::OP_MMA, 0xffffffffu, in, out, 0, 0, 0, __FILE__, __LINE__);
    d[0] = out[0];
    d[1] = out[1];
    d[2] = out[2];
    d[3] = out[3];
}

__device__ __forceinline__ void cp_async_16(void* smem, const void* gmem) {
    memcpy(smem, gmem, 16);
}

__device__ __forceinline__ void cp_async_16_zfill(void* smem, const void* gmem, int src_bytes) {
    int n = src_bytes < 0 ? 0 : (src_bytes > 16 ? 16 : src_bytes);
    if (n) memcpy(smem, gmem, n);
    memset(static_cast<char*>(smem) + n, 0, 16 - n);
}

__device__ __forceinline__ void cp_async_commit() {}

template <int N>
__device__ __forceinline__ void cp_async_wait() {}

#define smem_addr(p) ::emu::shared_window_offset((p), __FILE__, __LINE__)

__device__ __forceinline__ void fence_proxy_async_smem() {}
__device__ __forceinline__ void wgmma_fence() {}
__device__ __forceinline__ void wgmma_commit() {}
template <int N>
__device__ __forceinline__ void wgmma_wait() {}
__device__ __forceinline__ void wgmma_reg_fence(float&) {}

#define wgmma_m64n128k8_tf32_rs(d, a, desc, scale) \
    ::emu::wgmma_rs<128>((d), (a), (desc), (scale), __FILE__, __LINE__)
#define wgmma_m64n256k8_tf32_rs(d, a, desc, scale) \
    ::emu::wgmma_rs<256>((d), (a), (desc), (scale), __FILE__, __LINE__)
namespace emu {
template <int N>
inline void wgmma_rs(float (&d)[N / 2], const uint32_t a[4], unsigned long long desc_b,
                     int scale_d, const char* file, int line) {
    const uint64_t desc = desc_b;
    const void* in[3] = {a, &desc, &scale_d};
    warpgroup_collective(OP_WGMMA, in, d, N, file, line);
}
}  // namespace emu

#endif  // MLPACCEL_EMU_INTRINSICS_CUH
