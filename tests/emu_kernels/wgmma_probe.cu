// wgmma_probe.cu - one wgmma.mma_async m64nNk8 .tf32 (RS form) on a known shared-memory matrix,
// with a matrix descriptor built here bit by bit from the PTX ISA's "Matrix Descriptor Format"
// (not with common.cuh's wgmma_desc), so tests/test_emulator.py can check the emulator's
// descriptor decoding and fragment layouts against the PTX definition independently of
// kernels/gemm_wgmma.cu. One warpgroup per block (128 threads, or fewer to test the error).
// mlpaccel-arch: sm_90a
#include "common.cuh"

// image: `smem_bytes` bytes copied into dynamic shared memory; B is read from window address
// smem_addr(smem) + start_off with the given LBO / SBO (bytes) and swizzle-mode bits.
// a: 64 x 8 row-major (instruction A), d: 64 x N row-major in (initial D) and out (result).
template <int N>
__device__ void wgmma_probe(const float* image, int smem_bytes, const float* a, float* d,
                            int start_off, int lbo, int sbo, int swizzle, int scale_d) {
    extern __shared__ __align__(128) float probe_smem[];
    for (int i = threadIdx.x; i < smem_bytes / 4; i += blockDim.x) probe_smem[i] = image[i];
    fence_proxy_async_smem();
    __syncthreads();
    const int tid = threadIdx.x, w = tid >> 5, g = (tid & 31) >> 2, t = tid & 3;
    const int r = 16 * w + g;
    uint32_t af[4] = {__float_as_uint(a[r * 8 + t]), __float_as_uint(a[(r + 8) * 8 + t]),
                      __float_as_uint(a[r * 8 + t + 4]), __float_as_uint(a[(r + 8) * 8 + t + 4])};
    float acc[N / 2];
    for (int i = 0; i < N / 2; ++i)
        acc[i] = d[(r + 8 * ((i >> 1) & 1)) * N + 8 * (i >> 2) + 2 * t + (i & 1)];
    const unsigned long long start = smem_addr(probe_smem) + (unsigned)start_off;
    const unsigned long long desc = ((start & 0x3FFFFull) >> 4)                 // bits 0-13
                                    | (((unsigned long long)(lbo & 0x3FFFF) >> 4) << 16)
                                    | (((unsigned long long)(sbo & 0x3FFFF) >> 4) << 32)
                                    | ((unsigned long long)(swizzle & 3) << 62);
    for (int i = 0; i < N / 2; ++i) wgmma_reg_fence(acc[i]);
    wgmma_fence();
    if constexpr (N == 128) wgmma_m64n128k8_tf32_rs(acc, af, desc, scale_d);
    else wgmma_m64n256k8_tf32_rs(acc, af, desc, scale_d);
    wgmma_commit();
    wgmma_wait<0>();
    for (int i = 0; i < N / 2; ++i) wgmma_reg_fence(acc[i]);
    for (int i = 0; i < N / 2; ++i)
        d[(r + 8 * ((i >> 1) & 1)) * N + 8 * (i >> 2) + 2 * t + (i & 1)] = acc[i];
}

extern "C" __global__ void wgmma_probe_n128(const float* image, int smem_bytes, const float* a,
                                            float* d, int start_off, int lbo, int sbo,
                                            int swizzle, int scale_d) {
    wgmma_probe<128>(image, smem_bytes, a, d, start_off, lbo, sbo, swizzle, scale_d);
}

extern "C" __global__ void wgmma_probe_n256(const float* image, int smem_bytes, const float* a,
                                            float* d, int start_off, int lbo, int sbo,
                                            int swizzle, int scale_d) {
    wgmma_probe<256>(image, smem_bytes, a, d, start_off, lbo, sbo, swizzle, scale_d);
}

// Threads 64.. of the warpgroup return before the wgmma: impossible collective (an error on
// the emulator, a hang on a GPU).
extern "C" __global__ void wgmma_probe_early_exit(const float* image, int smem_bytes,
                                                  const float* a, float* d) {
    if (threadIdx.x >= 64) return;
    wgmma_probe<128>(image, smem_bytes, a, d, 0, 128, 256, 0, 0);
}
