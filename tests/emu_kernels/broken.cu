// broken.cu - deliberately wrong kernels: the emulator's checks must catch each one
// (tests/test_emulator.py). Do not "fix" them.
#include "common.cuh"

// (a) A tiled GEMM whose first __syncthreads() is missing: threads read tiles that other
// threads have not written yet.
extern "C" __global__ void gemm_missing_sync(const float* A, const float* B, float* C, int M,
                                             int N, int K) {
    __shared__ float As[16][16];
    __shared__ float Bs[16][17];
    int tx = threadIdx.x, ty = threadIdx.y;
    int row = blockIdx.y * 16 + ty, col = blockIdx.x * 16 + tx;
    float acc = 0;
    for (int k0 = 0; k0 < K; k0 += 16) {
        As[ty][tx] = (row < M && k0 + tx < K) ? A[row * K + k0 + tx] : 0.0f;
        Bs[ty][tx] = (col < N && k0 + ty < K) ? B[(k0 + ty) * N + col] : 0.0f;
        // BUG: missing __syncthreads();
        for (int k = 0; k < 16; k++) acc += As[ty][k] * Bs[k][tx];
        __syncthreads();
    }
    if (row < M && col < N) C[row * N + col] = acc;
}

// (a') A block reduction whose tree steps lack __syncthreads().
extern "C" __global__ void reduce_missing_sync(const float* x, float* out) {
    __shared__ float s[256];
    int t = threadIdx.x;
    s[t] = x[blockIdx.x * 256 + t];
    __syncthreads();
    for (int d = 128; d > 0; d >>= 1) {
        if (t < d) s[t] += s[t + d];
        // BUG: missing __syncthreads();
    }
    if (t == 0) out[blockIdx.x] = s[0];
}

// (b) Edge tile without a bounds test: tiles of 64 columns copy all 64 even in the last tile.
extern "C" __global__ void copy_no_edge_check(const float* x, float* y, int n) {
    int i = blockIdx.x * 64 + threadIdx.x;
    y[i] = x[i];  // BUG: no `if (i < n)`
}

// (b') Writes one element past the end (stays inside the 16-byte alignment padding).
extern "C" __global__ void write_one_past(float* y, int n) {
    int i = threadIdx.x;
    if (i <= n) y[i] = 1.0f;  // BUG: <= instead of <
}

// (c) Barrier divergence: threads past n return before the __syncthreads().
extern "C" __global__ void early_return_then_sync(const float* x, float* y, int n) {
    __shared__ float s[256];
    int i = threadIdx.x;
    if (i >= n) return;  // BUG: exited threads never reach the barrier
    s[i] = x[i];
    __syncthreads();
    y[i] = s[n - 1 - i];
}

// (c') A barrier inside a branch that only half the block takes.
extern "C" __global__ void sync_in_branch(float* y) {
    if (threadIdx.x < 16) {
        __syncthreads();  // BUG
        y[threadIdx.x] = 1.0f;
    } else {
        y[threadIdx.x] = 2.0f;
        __syncthreads();
    }
}

// (c'') A full-mask shuffle after some lanes have exited.
extern "C" __global__ void shuffle_after_exit(const float* x, float* y) {
    int lane = threadIdx.x;
    if (lane >= 20) return;
    y[lane] = __shfl_down_sync(0xffffffffu, x[lane], 1);  // BUG: mask names exited lanes
}
