// ftz_probe.cu - z > 0 under flush-to-zero: the plain float compare against mlp::positive
// (common.cuh). CuPy compiles every kernel with -ftz=true, so on a GPU a float32 subnormal
// reads as 0 in a compare; on the emulator the same is modelled by setting the x86 MXCSR
// DAZ + FTZ bits around the compare (tests/test_emulator.py checks both columns).
#include "common.cuh"

extern "C" __global__ void sign_probe(const float* z, int* plain, int* bits, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= n) return;
#ifdef MLPACCEL_EMU
    const unsigned csr = __builtin_ia32_stmxcsr();
    __builtin_ia32_ldmxcsr(csr | 0x8040u);  // DAZ (bit 6) + FTZ (bit 15), as -ftz=true
#endif
    volatile float v = z[i];  // volatile: the compare must happen at run time, in this mode
    plain[i] = v > 0.f ? 1 : 0;
    bits[i] = mlp::positive((float)v) ? 1 : 0;
#ifdef MLPACCEL_EMU
    __builtin_ia32_ldmxcsr(csr);
#endif
}
