// cuda_emu.h - lets kernels/*.cu compile with g++ and run on the CPU (the `cuda-emu` backend).
//
// Force-included (g++ -include) before every kernel source, with -DMLPACCEL_EMU. It supplies
// CUDA's built-ins: execution-space qualifiers, threadIdx/blockIdx/blockDim/gridDim, vector
// types, __syncthreads, warp shuffles/votes/__syncwarp, atomics, math intrinsics. The Python
// driver (mlpaccel/backends/cuda_emu.py) preprocesses the source with this header, rewrites
// `extern __shared__ T name[];` and `__shared__` declarations, and appends one launch stub per
// `extern "C" __global__` entry point; the stubs call emu::run() below.
//
// Execution model: the threads of a block are cooperative fibers on one OS thread (a hand-written
// x86-64 stack switch; ucontext elsewhere). A fiber runs until it blocks in __syncthreads() or a
// warp collective, then the scheduler resumes the next runnable fiber, in the launch's schedule
// order (forward, reverse or shuffled). Static __shared__ variables become `static thread_local`
// (one block at a time per OS thread = one copy per block); blocks are spread over a few OS
// threads. A collective is completed by the last lane of its mask to arrive, which reads and
// writes the other lanes' operands through pointers into their (suspended) stacks.
#ifndef MLPACCEL_CUDA_EMU_H
#define MLPACCEL_CUDA_EMU_H

#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <type_traits>
#include <utility>

#if !defined(__x86_64__)
#include <ucontext.h>
#define EMU_UCONTEXT 1
#else
#include <ucontext.h>  // REG_ERR: was the faulting access a write?
#endif

// ----------------------------------------------------------------- qualifiers and keywords
#ifndef MLPACCEL_EMU_SCAN
#define __global__
#endif
#define __device__
#define __host__
#define __constant__
#define __managed__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __grid_constant__
// The driver preprocesses with MLPACCEL_EMU_SCAN, keeping __global__ and __shared__ as tokens
// that it rewrites itself (see top); a plain g++ compile gets per-OS-thread statics.
#ifndef MLPACCEL_EMU_SCAN
#define __shared__ static thread_local
#endif
#ifndef __CUDA_ARCH__
#define __CUDA_ARCH__ 900
#endif
#ifndef __CUDACC__
#define __CUDACC__ 1
#endif

// ----------------------------------------------------------------- vector types (CUDA alignment)
#define EMU_VEC2(T, N, A) struct __attribute__((aligned(A))) N { T x, y; };
#define EMU_VEC3(T, N) struct N { T x, y, z; };
#define EMU_VEC4(T, N, A) struct __attribute__((aligned(A))) N { T x, y, z, w; };
EMU_VEC2(float, float2, 8)
EMU_VEC3(float, float3)
EMU_VEC4(float, float4, 16)
EMU_VEC2(int, int2, 8)
EMU_VEC3(int, int3)
EMU_VEC4(int, int4, 16)
EMU_VEC2(unsigned int, uint2, 8)
EMU_VEC3(unsigned int, uint3)
EMU_VEC4(unsigned int, uint4, 16)
EMU_VEC2(double, double2, 16)
EMU_VEC2(long long, longlong2, 16)
EMU_VEC2(unsigned long long, ulonglong2, 16)
EMU_VEC4(unsigned char, uchar4, 4)
EMU_VEC4(char, char4, 4)
#undef EMU_VEC2
#undef EMU_VEC3
#undef EMU_VEC4
inline float2 make_float2(float x, float y) { return {x, y}; }
inline float3 make_float3(float x, float y, float z) { return {x, y, z}; }
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }
inline int2 make_int2(int x, int y) { return {x, y}; }
inline int3 make_int3(int x, int y, int z) { return {x, y, z}; }
inline int4 make_int4(int x, int y, int z, int w) { return {x, y, z, w}; }
inline uint2 make_uint2(unsigned x, unsigned y) { return {x, y}; }
inline uint3 make_uint3(unsigned x, unsigned y, unsigned z) { return {x, y, z}; }
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return {x, y, z, w}; }
inline double2 make_double2(double x, double y) { return {x, y}; }
struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned vx = 1, unsigned vy = 1, unsigned vz = 1) : x(vx), y(vy), z(vz) {}
};
static_assert(alignof(float4) == 16 && sizeof(float4) == 16, "float4 must match CUDA");
static_assert(alignof(double2) == 16 && alignof(float2) == 8, "vector alignment must match CUDA");

// ----------------------------------------------------------------- runtime state
namespace emu {

enum FiberState { RUNNABLE = 0, AT_BARRIER = 1, IN_WARP_OP = 2, EXITED = 3 };
enum WarpOp { OP_SHFL = 1, OP_SHFL_UP, OP_SHFL_DOWN, OP_SHFL_XOR, OP_BALLOT, OP_SYNCWARP,
              OP_MMA, OP_REDUCE, OP_WGMMA };
enum Schedule { SCHED_FORWARD = 0, SCHED_REVERSE = 1, SCHED_SHUFFLE = 2 };

struct Fiber {
    void* sp;            // saved stack pointer (x86-64 switch)
#ifdef EMU_UCONTEXT
    ucontext_t uc;
#endif
    int state;
    unsigned linear;     // linear thread index in the block
    uint3 tid;
    // barrier operands
    const char* bar_file;
    int bar_line, bar_pred, bar_result;
    // warp collective operands (pointers into this fiber's own stack)
    int op;
    unsigned mask;
    const void* in;
    void* out;
    int p0, p1, size;
    const char* op_file;
    int op_line;
    char* stack_lo;      // lowest usable byte of this fiber's stack (guard page below it)
};

struct Worker {
    Fiber* fibers = nullptr;
    unsigned fiber_cap = 0;
    char* stacks = nullptr;        // fiber_cap * (stack + guard) bytes
    size_t stack_bytes = 0, stacks_len = 0;
    void* sched_sp = nullptr;
#ifdef EMU_UCONTEXT
    ucontext_t sched_uc;
#endif
    Fiber* cur = nullptr;
    unsigned* order = nullptr;
    char* dyn_smem = nullptr;
    size_t dyn_cap = 0;
    size_t dyn_size = 0;           // this launch's dynamic shared memory bytes
    char* altstack = nullptr;
    sigjmp_buf jb;
    volatile int in_kernel = 0;
    // per launch / block
    void (*body)(void**) = nullptr;
    void** args = nullptr;
    unsigned nthreads = 0;
    int n_exited = 0, n_barrier = 0, n_warp = 0;
    int has_err = 0;
    char err[1536];
    void* fault_addr = nullptr;
    int fault_sig = 0, fault_write = -1, fault_stack = 0;
};

struct BlockCoords { uint3 idx; dim3 dim; dim3 grid; };

extern "C" void __emu_ctx_switch(void** save_sp, void* new_sp);

static thread_local Worker* tls_worker = nullptr;
static thread_local Fiber* tls_fiber = nullptr;
static thread_local BlockCoords tls_block;

}  // namespace emu

// CUDA's built-in variables: per fiber (threadIdx) or per block on this OS thread.
#define threadIdx (::emu::tls_fiber->tid)
#define blockIdx (::emu::tls_block.idx)
#define blockDim (::emu::tls_block.dim)
#define gridDim (::emu::tls_block.grid)
static constexpr int warpSize = 32;

// ----------------------------------------------------------------- fiber switching
#if !defined(EMU_UCONTEXT)
// void __emu_ctx_switch(void** save_sp, void* new_sp): push the callee-saved registers, save
// the stack pointer, load the other one, pop its registers, return into it. ~10 ns.
asm(R"(
    .text
    .p2align 4
    .globl __emu_ctx_switch
    .hidden __emu_ctx_switch
    .type __emu_ctx_switch,@function
__emu_ctx_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size __emu_ctx_switch, .-__emu_ctx_switch
)");
#endif

namespace emu {

static void set_error(Worker* w, const char* fmt, ...) __attribute__((format(printf, 2, 3)));
static void set_error(Worker* w, const char* fmt, ...) {
    if (w->has_err) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(w->err, sizeof(w->err), fmt, ap);
    va_end(ap);
    w->has_err = 1;
}

// Switch from the running fiber back to the scheduler. The memory clobbers stop the compiler
// from keeping shared-memory (static) values in registers across the switch.
__attribute__((noinline)) static void yield_to_scheduler() {
    asm volatile("" ::: "memory");
    Worker* w = tls_worker;
    Fiber* f = w->cur;
#ifdef EMU_UCONTEXT
    swapcontext(&f->uc, &w->sched_uc);
#else
    __emu_ctx_switch(&f->sp, w->sched_sp);
#endif
    asm volatile("" ::: "memory");
}

static void fiber_main() {
    Worker* w = tls_worker;
    Fiber* f = w->cur;
    w->body(w->args);
    f->state = EXITED;
    w->n_exited++;
    yield_to_scheduler();
    __builtin_trap();  // an exited fiber is never resumed
}

static void format_range(char* out, size_t n, const unsigned* ids, int count) {
    // "0-15, 17, 20-31" (at most ~100 characters)
    size_t pos = 0;
    out[0] = 0;
    for (int i = 0; i < count && pos + 24 < n && pos < 100;) {
        int j = i;
        while (j + 1 < count && ids[j + 1] == ids[j] + 1) j++;
        if (j > i) pos += snprintf(out + pos, n - pos, "%s%u-%u", pos ? ", " : "", ids[i], ids[j]);
        else pos += snprintf(out + pos, n - pos, "%s%u", pos ? ", " : "", ids[i]);
        i = j + 1;
        if (i < count && (pos + 24 >= n || pos >= 100)) { snprintf(out + pos, n - pos, ", ..."); }
    }
}

static const char* op_name(int op) {
    switch (op) {
        case OP_SHFL: return "__shfl_sync";
        case OP_SHFL_UP: return "__shfl_up_sync";
        case OP_SHFL_DOWN: return "__shfl_down_sync";
        case OP_SHFL_XOR: return "__shfl_xor_sync";
        case OP_BALLOT: return "__ballot_sync/__any_sync/__all_sync";
        case OP_SYNCWARP: return "__syncwarp";
        case OP_MMA: return "mma_m16n8k8_tf32";
        case OP_REDUCE: return "__reduce_*_sync";
        case OP_WGMMA: return "wgmma.mma_async (warpgroup)";
    }
    return "?";
}

// Lanes of warp `base/32` that exist in this block (a partial last warp has fewer than 32).
static inline unsigned existing_lanes(Worker* w, unsigned base) {
    unsigned n = w->nthreads - base;
    return n >= 32 ? 0xffffffffu : ((1u << n) - 1u);
}

// Perform the collective for every lane in `m` of the warp starting at fiber `base`.
static void complete_warp_op(Worker* w, unsigned base, unsigned m) {
    Fiber* L = w->fibers + base;
    const Fiber& me = L[__builtin_ctz(m)];
    int op = me.op;
    if (op == OP_MMA) {
        // Gather the PTX ISA fragments of mma.m16n8k8.row.col .tf32 (groupID g = lane/4,
        // t = lane%4): a0 (g, t) a1 (g+8, t) a2 (g, t+4) a3 (g+8, t+4); b0 (k=t, n=g)
        // b1 (k=t+4, n=g); c/d i: (g + 8*(i/2), 2t + i%2). Inputs are read as tf32 (low 13 bits
        // of each .b32 ignored); products are exact in fp32, sums are fp32 in k order.
        float A[16][8], B[8][8], C[16][8];
        for (int lane = 0; lane < 32; lane++) {
            const void* const* ptrs = static_cast<const void* const*>(L[lane].in);
            const uint32_t* a = static_cast<const uint32_t*>(ptrs[0]);
            const uint32_t* b = static_cast<const uint32_t*>(ptrs[1]);
            const float* c = static_cast<const float*>(ptrs[2]);
            int g = lane >> 2, t = lane & 3;
            uint32_t av[4] = {a[0], a[1], a[2], a[3]};
            uint32_t bv[2] = {b[0], b[1]};
            for (int i = 0; i < 4; i++) av[i] &= 0xffffe000u;
            for (int i = 0; i < 2; i++) bv[i] &= 0xffffe000u;
            memcpy(&A[g][t], &av[0], 4);
            memcpy(&A[g + 8][t], &av[1], 4);
            memcpy(&A[g][t + 4], &av[2], 4);
            memcpy(&A[g + 8][t + 4], &av[3], 4);
            memcpy(&B[t][g], &bv[0], 4);
            memcpy(&B[t + 4][g], &bv[1], 4);
            for (int i = 0; i < 4; i++) C[g + 8 * (i >> 1)][2 * t + (i & 1)] = c[i];
        }
        for (int lane = 0; lane < 32; lane++) {
            float* d = static_cast<float*>(L[lane].out);
            int g = lane >> 2, t = lane & 3;
            for (int i = 0; i < 4; i++) {
                int r = g + 8 * (i >> 1), col = 2 * t + (i & 1);
                float acc = C[r][col];
                for (int k = 0; k < 8; k++) acc = fmaf(A[r][k], B[k][col], acc);
                d[i] = acc;
            }
        }
    } else if (op == OP_BALLOT || op == OP_REDUCE) {
        unsigned ballot = 0;
        long long red = 0;
        bool first = true;
        for (unsigned r = m; r; r &= r - 1) {
            int lane = __builtin_ctz(r);
            const Fiber& f = L[lane];
            if (op == OP_BALLOT) {
                if (*static_cast<const int*>(f.in)) ballot |= 1u << lane;
            } else {
                long long v = f.size == 4 && f.p1 ? (long long)*static_cast<const unsigned*>(f.in)
                                                  : (long long)*static_cast<const int*>(f.in);
                if (first) red = v;
                else if (f.p0 == 0) red += v;
                else if (f.p0 == 1) red = v < red ? v : red;
                else if (f.p0 == 2) red = v > red ? v : red;
                else if (f.p0 == 3) red &= v;
                else if (f.p0 == 4) red |= v;
                else red ^= v;
                first = false;
            }
        }
        for (unsigned r = m; r; r &= r - 1) {
            const Fiber& f = L[__builtin_ctz(r)];
            if (op == OP_BALLOT) *static_cast<unsigned*>(f.out) = ballot;
            else if (f.p1) *static_cast<unsigned*>(f.out) = (unsigned)red;
            else *static_cast<int*>(f.out) = (int)red;
        }
    } else if (op != OP_SYNCWARP) {
        for (unsigned r = m; r; r &= r - 1) {
            int lane = __builtin_ctz(r);
            const Fiber& f = L[lane];
            int width = f.p1, seg = lane & ~(width - 1), src = lane;
            if (op == OP_SHFL) src = seg + (f.p0 & (width - 1));
            else if (op == OP_SHFL_UP) src = (lane - seg) >= f.p0 ? lane - f.p0 : lane;
            else if (op == OP_SHFL_DOWN) src = (lane - seg) + f.p0 < width ? lane + f.p0 : lane;
            else if (op == OP_SHFL_XOR) {
                src = lane ^ f.p0;
                if (src >= seg + width) src = lane;  // later segments are not readable
            }
            // A source lane outside the mask is undefined on a GPU; return the own value.
            if (src < 0 || src > 31 || !((m >> src) & 1u)) src = lane;
            memcpy(f.out, L[src].in, f.size);
        }
    }
    for (unsigned r = m; r; r &= r - 1) {
        L[__builtin_ctz(r)].state = RUNNABLE;
        w->n_warp--;
    }
}

// Called by a lane entering a warp collective: complete it if every lane of its mask has
// arrived, else suspend until the last one does.
__attribute__((noinline)) static void warp_collective(int op, unsigned mask, const void* in,
                                                      void* out, int p0, int p1, int size,
                                                      const char* file, int line) {
    asm volatile("" ::: "memory");
    Worker* w = tls_worker;
    Fiber* f = w->cur;
    unsigned lane = f->linear & 31u, base = f->linear - lane;
    unsigned m = mask & existing_lanes(w, base);
    f->op = op; f->mask = m; f->in = in; f->out = out; f->p0 = p0; f->p1 = p1; f->size = size;
    f->op_file = file; f->op_line = line;
    f->state = IN_WARP_OP;
    w->n_warp++;
    if (!((m >> lane) & 1u)) {
        set_error(w, "%s at %s:%d: the mask 0x%08x does not include the calling lane %u "
                  "(thread %u)", op_name(op), file, line, mask, lane, f->linear);
        yield_to_scheduler();
    }
    if (op == OP_MMA && m != 0xffffffffu) {
        set_error(w, "mma_m16n8k8_tf32 at %s:%d needs a full warp of 32 threads (block of %u "
                  "threads)", file, line, w->nthreads);
        yield_to_scheduler();
    }
    bool all = true;
    for (unsigned r = m; r; r &= r - 1) {
        const Fiber& o = w->fibers[base + __builtin_ctz(r)];
        if (o.state == EXITED) {
            set_error(w, "%s(mask=0x%08x) at %s:%d: lane %d (thread %u) has already exited, "
                      "so the collective can never complete (a hang on a GPU)", op_name(op),
                      mask, file, line, __builtin_ctz(r), base + __builtin_ctz(r));
            yield_to_scheduler();
        }
        if (o.state != IN_WARP_OP) { all = false; break; }
    }
    if (all) {
        for (unsigned r = m; r; r &= r - 1) {
            const Fiber& o = w->fibers[base + __builtin_ctz(r)];
            if (o.op != op || o.mask != m) {
                set_error(w, "warp collective mismatch in warp %u: lane %u calls %s(mask=0x%08x) "
                          "at %s:%d but lane %d calls %s(mask=0x%08x) at %s:%d", base / 32, lane,
                          op_name(op), m, file, line, __builtin_ctz(r), op_name(o.op), o.mask,
                          o.op_file, o.op_line);
                yield_to_scheduler();
            }
        }
        complete_warp_op(w, base, m);
    } else {
        yield_to_scheduler();
    }
    asm volatile("" ::: "memory");
}

// __syncthreads() and its reducing variants: kind 0 plain, 1 count, 2 and, 3 or.
__attribute__((noinline)) static int syncthreads(const char* file, int line, int kind, int pred) {
    asm volatile("" ::: "memory");
    Worker* w = tls_worker;
    Fiber* f = w->cur;
    f->bar_file = file; f->bar_line = line; f->bar_pred = pred != 0; f->p0 = kind;
    f->state = AT_BARRIER;
    w->n_barrier++;
    yield_to_scheduler();
    asm volatile("" ::: "memory");
    return f->bar_result;
}

// Every live fiber waits at a barrier: check it is one barrier reached by every thread, then
// release them. Returns false (and sets the error) on barrier divergence.
static bool release_barrier(Worker* w) {
    unsigned n = w->nthreads;
    Fiber* F = w->fibers;
    const Fiber* first = nullptr;
    for (unsigned i = 0; i < n; i++) if (F[i].state == AT_BARRIER) { first = &F[i]; break; }
    char a[160], b[160];
    if (w->n_exited > 0) {
        unsigned* ids = w->order;  // reuse as scratch: the round is over
        int na = 0;
        for (unsigned i = 0; i < n; i++) if (F[i].state == AT_BARRIER) ids[na++] = i;
        format_range(a, sizeof a, ids, na);
        int nb = 0;
        for (unsigned i = 0; i < n; i++) if (F[i].state == EXITED) ids[nb++] = i;
        format_range(b, sizeof b, ids, nb);
        set_error(w, "barrier divergence: threads %s wait at __syncthreads() (%s:%d) but threads "
                  "%s have already exited (returned before the barrier); every thread of a block "
                  "must reach each __syncthreads() - on a GPU this hangs or corrupts data",
                  a, first->bar_file, first->bar_line, b);
        return false;
    }
    int count = 0, all = 1, any = 0;
    for (unsigned i = 0; i < n; i++) {
        const Fiber& o = F[i];
        if (o.bar_line != first->bar_line ||
            (o.bar_file != first->bar_file && strcmp(o.bar_file, first->bar_file) != 0)) {
            set_error(w, "barrier divergence: thread %u waits at __syncthreads() (%s:%d) but "
                      "thread %u waits at a different one (%s:%d); a barrier inside a branch "
                      "that not all threads take", first->linear, first->bar_file,
                      first->bar_line, o.linear, o.bar_file, o.bar_line);
            return false;
        }
        count += o.bar_pred; all &= o.bar_pred; any |= o.bar_pred;
    }
    int kind = first->p0;
    int result = kind == 1 ? count : kind == 2 ? all : kind == 3 ? any : 0;
    for (unsigned i = 0; i < n; i++) { F[i].bar_result = result; F[i].state = RUNNABLE; }
    w->n_barrier = 0;
    return true;
}

static void report_deadlock(Worker* w) {
    unsigned n = w->nthreads;
    for (unsigned i = 0; i < n; i++) {
        const Fiber& f = w->fibers[i];
        if (f.state != IN_WARP_OP) continue;
        if (f.op == OP_WGMMA) {
            unsigned wg = i & ~127u;
            for (unsigned j = wg; j < wg + 128 && j < n; j++) {
                const Fiber& o = w->fibers[j];
                if (o.state == IN_WARP_OP && o.op == OP_WGMMA) continue;
                set_error(w, "deadlock: thread %u waits in %s at %s:%d for thread %u of its "
                          "warpgroup (threads %u-%u), which %s", i, op_name(f.op), f.op_file,
                          f.op_line, j, wg, wg + 127,
                          o.state == AT_BARRIER ? "waits at __syncthreads()"
                          : o.state == EXITED   ? "has already exited"
                                                : "waits in another collective");
                return;
            }
        }
        unsigned base = i & ~31u;
        for (unsigned r = f.mask; r; r &= r - 1) {
            const Fiber& o = w->fibers[base + __builtin_ctz(r)];
            if (o.state == EXITED) {
                set_error(w, "%s(mask=0x%08x) at %s:%d: thread %u waits for lane %d (thread %u), "
                          "which has already exited, so the collective can never complete (a "
                          "hang on a GPU)", op_name(f.op), f.mask, f.op_file, f.op_line, i,
                          __builtin_ctz(r), o.linear);
                return;
            }
            if (o.state == AT_BARRIER) {
                set_error(w, "deadlock: thread %u waits in %s(mask=0x%08x) at %s:%d for lane %d "
                          "(thread %u), which waits at __syncthreads() (%s:%d)", i,
                          op_name(f.op), f.mask, f.op_file, f.op_line, __builtin_ctz(r), o.linear,
                          o.bar_file, o.bar_line);
                return;
            }
        }
        set_error(w, "deadlock: thread %u waits in %s(mask=0x%08x) at %s:%d and the lanes of its "
                  "mask cannot all arrive", i, op_name(f.op), f.mask, f.op_file, f.op_line);
        return;
    }
    set_error(w, "deadlock: no thread of the block can make progress");
}

// ----------------------------------------------------------------- per-worker resources
static const size_t kStackBytes = 128 * 1024;

static bool worker_reserve(Worker* w, unsigned nthreads, size_t smem) {
    if (nthreads > w->fiber_cap) {
        if (w->stacks) munmap(w->stacks, w->stacks_len);
        free(w->fibers);
        free(w->order);
        size_t page = (size_t)sysconf(_SC_PAGESIZE);
        size_t per = kStackBytes + page;
        w->stacks_len = per * nthreads;
        void* mem = mmap(nullptr, w->stacks_len, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (mem == MAP_FAILED) { w->stacks = nullptr; w->fiber_cap = 0; return false; }
        w->stacks = static_cast<char*>(mem);
        for (unsigned i = 0; i < nthreads; i++) mprotect(w->stacks + i * per, page, PROT_NONE);
        w->fibers = static_cast<Fiber*>(calloc(nthreads, sizeof(Fiber)));
        w->order = static_cast<unsigned*>(calloc(nthreads, sizeof(unsigned)));
        for (unsigned i = 0; i < nthreads; i++) w->fibers[i].stack_lo = w->stacks + i * per + page;
        w->fiber_cap = nthreads;
        w->stack_bytes = kStackBytes;
    }
    if (smem > w->dyn_cap) {
        free(w->dyn_smem);
        w->dyn_smem = static_cast<char*>(aligned_alloc(128, (smem + 127) & ~(size_t)127));
        if (!w->dyn_smem) { w->dyn_cap = 0; return false; }
        w->dyn_cap = smem;
    }
    if (!w->altstack) w->altstack = static_cast<char*>(malloc(64 * 1024));
    return true;
}

static void fiber_prepare(Worker* w, Fiber* f) {
    char* top = f->stack_lo + w->stack_bytes;
#ifdef EMU_UCONTEXT
    getcontext(&f->uc);
    f->uc.uc_stack.ss_sp = f->stack_lo;
    f->uc.uc_stack.ss_size = w->stack_bytes;
    f->uc.uc_link = nullptr;
    makecontext(&f->uc, fiber_main, 0);
#else
    // Frame popped by __emu_ctx_switch: r15 r14 r13 r12 rbx rbp, then `ret` into fiber_main
    // with rsp = top - 8, as if fiber_main had been called.
    void** sp = reinterpret_cast<void**>(top);
    *--sp = nullptr;                                   // fake return address of fiber_main
    *--sp = reinterpret_cast<void*>(&fiber_main);
    for (int i = 0; i < 6; i++) *--sp = nullptr;
    f->sp = sp;
#endif
}

static inline uint64_t mix64(uint64_t x) {
    x ^= x >> 33; x *= 0xff51afd7ed558ccdULL; x ^= x >> 33; x *= 0xc4ceb9fe1a85ec53ULL;
    return x ^ (x >> 33);
}

// Run one block to completion (or to its first error).
static void run_block(Worker* w, int schedule, uint64_t seed, uint64_t block_linear) {
    unsigned n = w->nthreads;
    dim3 bd = tls_block.dim;
    for (unsigned i = 0; i < n; i++) {
        Fiber* f = w->fibers + i;
        f->state = RUNNABLE;
        f->linear = i;
        f->tid = {i % bd.x, (i / bd.x) % bd.y, i / (bd.x * bd.y)};
        f->bar_result = 0;
        fiber_prepare(w, f);
    }
    w->n_exited = w->n_barrier = w->n_warp = 0;
    unsigned* order = w->order;
    while (!w->has_err) {
        // The order is rebuilt every round: release_barrier() uses the array as scratch.
        for (unsigned k = 0; k < n; k++) order[k] = schedule == SCHED_REVERSE ? n - 1 - k : k;
        if (schedule == SCHED_SHUFFLE) {
            uint64_t s = mix64(seed ^ mix64(block_linear + 1));
            for (unsigned k = n - 1; k > 0; k--) {
                s = mix64(s + k);
                unsigned j = (unsigned)(s % (k + 1));
                unsigned t = order[k]; order[k] = order[j]; order[j] = t;
            }
        }
        bool progress = false;
        for (unsigned k = 0; k < n && !w->has_err; k++) {
            Fiber* f = w->fibers + order[k];
            if (f->state != RUNNABLE) continue;
            progress = true;
            w->cur = f;
            tls_fiber = f;
#ifdef EMU_UCONTEXT
            swapcontext(&w->sched_uc, &f->uc);
#else
            __emu_ctx_switch(&w->sched_sp, f->sp);
#endif
        }
        if (w->has_err) return;
        if ((unsigned)w->n_exited == n) return;
        if (progress) continue;
        if (w->n_warp == 0 && w->n_barrier > 0) {
            if (!release_barrier(w)) return;
        } else {
            report_deadlock(w);
            return;
        }
    }
}

// ----------------------------------------------------------------- launches
struct Launch {
    void (*body)(void**);
    void** args;
    unsigned grid[3], block[3];
    size_t smem;
    int schedule, poison;
    uint64_t seed, nblocks;
    uint64_t next_block;       // atomic counter
    int abort;                 // atomic flag
};

static Worker g_workers[16];
static struct sigaction g_old_segv, g_old_bus;

static void fault_handler(int sig, siginfo_t* si, void* ucv) {
    Worker* w = tls_worker;
    if (!w || !w->in_kernel) {
        // Not ours: restore the previous handlers and let the fault happen again.
        sigaction(SIGSEGV, &g_old_segv, nullptr);
        sigaction(SIGBUS, &g_old_bus, nullptr);
        return;
    }
    w->fault_sig = sig;
    w->fault_addr = si->si_addr;
#if defined(__x86_64__) && defined(REG_ERR)
    ucontext_t* uc = static_cast<ucontext_t*>(ucv);
    w->fault_write = (uc->uc_mcontext.gregs[REG_ERR] & 2) ? 1 : 0;
#else
    (void)ucv;
    w->fault_write = -1;
#endif
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    char* a = static_cast<char*>(si->si_addr);
    for (unsigned i = 0; i < w->fiber_cap; i++) {
        char* lo = w->fibers[i].stack_lo;
        if (a >= lo - page && a < lo) w->fault_stack = 1;
    }
    w->in_kernel = 0;
    siglongjmp(w->jb, 1);
}

static void worker_loop(Worker* w, Launch* L) {
    tls_worker = w;
    stack_t ss, old_ss;
    ss.ss_sp = w->altstack;
    ss.ss_size = 64 * 1024;
    ss.ss_flags = 0;
    sigaltstack(&ss, &old_ss);
    w->body = L->body;
    w->args = L->args;
    w->nthreads = L->block[0] * L->block[1] * L->block[2];
    w->dyn_size = L->smem;
    w->has_err = 0;
    w->fault_sig = 0;
    w->fault_stack = 0;
    tls_block.dim = dim3(L->block[0], L->block[1], L->block[2]);
    tls_block.grid = dim3(L->grid[0], L->grid[1], L->grid[2]);
    if (sigsetjmp(w->jb, 1) == 0) {
        w->in_kernel = 1;
        for (;;) {
            if (__atomic_load_n(&L->abort, __ATOMIC_RELAXED)) break;
            uint64_t b = __atomic_fetch_add(&L->next_block, 1, __ATOMIC_RELAXED);
            if (b >= L->nblocks) break;
            tls_block.idx = {(unsigned)(b % L->grid[0]), (unsigned)((b / L->grid[0]) % L->grid[1]),
                             (unsigned)(b / ((uint64_t)L->grid[0] * L->grid[1]))};
            if (L->poison && L->smem) memset(w->dyn_smem, 0xff, L->smem);  // NaN / -1
            run_block(w, L->schedule, L->seed, b);
            if (w->has_err) {
                char tmp[sizeof(w->err)];
                snprintf(tmp, sizeof tmp, "block (%u,%u,%u): %s", tls_block.idx.x,
                         tls_block.idx.y, tls_block.idx.z, w->err);
                memcpy(w->err, tmp, sizeof tmp);
                __atomic_store_n(&L->abort, 1, __ATOMIC_RELAXED);
                break;
            }
        }
        w->in_kernel = 0;
    } else {
        w->has_err = 1;
        snprintf(w->err, sizeof(w->err), "block (%u,%u,%u) thread (%u,%u,%u): %s at address %p",
                 tls_block.idx.x, tls_block.idx.y, tls_block.idx.z,
                 tls_fiber ? tls_fiber->tid.x : 0, tls_fiber ? tls_fiber->tid.y : 0,
                 tls_fiber ? tls_fiber->tid.z : 0,
                 w->fault_stack ? "stack overflow of an emulated thread (more than 128 KB of "
                                  "local arrays?)"
                 : w->fault_sig == SIGBUS ? "bus error" : "segmentation fault",
                 w->fault_addr);
        __atomic_store_n(&L->abort, 1, __ATOMIC_RELAXED);
    }
    sigaltstack(&old_ss, nullptr);
    tls_fiber = nullptr;
}

static void* worker_thread(void* p) {
    auto* pair = static_cast<std::pair<Worker*, Launch*>*>(p);
    worker_loop(pair->first, pair->second);
    return nullptr;
}

// cfg: grid xyz, block xyz, dynamic smem bytes, schedule, seed, workers, poison.
// fault (out): signal, address, write flag (-1 unknown), stack overflow flag.
// Returns 0 on success, 1 on a kernel error (message in err).
static int run(void (*body)(void**), void** args, const long long* cfg, char* err, int errlen,
               long long* fault) {
    Launch L{};
    L.body = body;
    L.args = args;
    for (int i = 0; i < 3; i++) { L.grid[i] = (unsigned)cfg[i]; L.block[i] = (unsigned)cfg[3 + i]; }
    L.smem = (size_t)cfg[6];
    L.schedule = (int)cfg[7];
    L.seed = (uint64_t)cfg[8];
    int nworkers = (int)cfg[9];
    L.poison = (int)cfg[10];
    L.nblocks = (uint64_t)L.grid[0] * L.grid[1] * L.grid[2];
    unsigned nthreads = L.block[0] * L.block[1] * L.block[2];
    if (nworkers < 1) nworkers = 1;
    if (nworkers > 16) nworkers = 16;
    if ((uint64_t)nworkers > L.nblocks) nworkers = (int)L.nblocks;
    for (int i = 0; i < nworkers; i++) {
        if (!worker_reserve(&g_workers[i], nthreads, L.smem)) {
            snprintf(err, errlen, "out of memory for %u fiber stacks", nthreads);
            return 1;
        }
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = fault_handler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &g_old_segv);
    sigaction(SIGBUS, &sa, &g_old_bus);
    pthread_t th[16];
    std::pair<Worker*, Launch*> pairs[16];
    int started = 0;
    for (int i = 1; i < nworkers; i++) {
        pairs[i] = {&g_workers[i], &L};
        if (pthread_create(&th[i], nullptr, worker_thread, &pairs[i]) != 0) break;
        started = i;
    }
    Worker* saved = tls_worker;
    worker_loop(&g_workers[0], &L);
    tls_worker = saved;
    for (int i = 1; i <= started; i++) pthread_join(th[i], nullptr);
    sigaction(SIGSEGV, &g_old_segv, nullptr);
    sigaction(SIGBUS, &g_old_bus, nullptr);
    for (int i = 0; i <= started; i++) {
        Worker* w = &g_workers[i];
        if (w->has_err) {
            snprintf(err, errlen, "%s", w->err);
            fault[0] = w->fault_sig;
            fault[1] = (long long)(uintptr_t)w->fault_addr;
            fault[2] = w->fault_write;
            fault[3] = w->fault_stack;
            return 1;
        }
    }
    return 0;
}

// Parameter type codes for the driver's argument checks: f float, d double, i int, u unsigned,
// q long long/long, Q unsigned long long/unsigned long, c char, b unsigned char, s short,
// v void; a leading p marks a pointer; vector pointees map to their scalar (float4 -> f).
template <class T> struct Code { static const char* get() { return "?"; } };
#define EMU_CODE(T, C) template <> struct Code<T> { static const char* get() { return C; } };
EMU_CODE(float, "f") EMU_CODE(double, "d") EMU_CODE(int, "i") EMU_CODE(unsigned, "u")
EMU_CODE(long long, "q") EMU_CODE(long, "q") EMU_CODE(unsigned long long, "Q")
EMU_CODE(unsigned long, "Q") EMU_CODE(char, "c") EMU_CODE(signed char, "c")
EMU_CODE(unsigned char, "b") EMU_CODE(short, "s") EMU_CODE(unsigned short, "S")
EMU_CODE(void, "v") EMU_CODE(bool, "B")
EMU_CODE(float2, "f") EMU_CODE(float4, "f") EMU_CODE(double2, "d") EMU_CODE(int2, "i")
EMU_CODE(int4, "i") EMU_CODE(uint2, "u") EMU_CODE(uint4, "u")
#undef EMU_CODE
template <class T> struct Code<T*> {
    static const char* get() {
        static char buf[8];
        snprintf(buf, sizeof buf, "p%s", Code<typename std::remove_cv<T>::type>::get());
        return buf;
    }
};
template <class T> struct Code<const T> { static const char* get() { return Code<T>::get(); } };

template <class... P, size_t... I>
static inline void call_with(void (*k)(P...), void** a, std::index_sequence<I...>) {
    k(*static_cast<typename std::remove_reference<P>::type*>(a[I])...);
}
template <class... P>
static inline void call(void (*k)(P...), void** a) {
    call_with(k, a, std::index_sequence_for<P...>{});
}
template <class... P>
static inline int signature(void (*)(P...), char* buf, int n) {
    buf[0] = 0;
    const char* codes[] = {Code<typename std::remove_cv<P>::type>::get()..., ""};
    for (size_t i = 0; i < sizeof...(P); i++) {
        strncat(buf, codes[i], n - strlen(buf) - 2);
        strncat(buf, ",", n - strlen(buf) - 1);
    }
    return (int)sizeof...(P);
}

static inline void* dynamic_smem() { return tls_worker->dyn_smem; }

// ----------------------------------------------------------------- the shared window
// On a GPU a shared-memory address (cvta.to.shared / __cvta_generic_to_shared) is an offset
// in the block's shared window, which is what wgmma matrix descriptors hold. The emulator maps
// the block's dynamic shared memory to window offsets [kSharedBase, kSharedBase + size): a
// non-zero base (as on sm_90, where the window starts with 1 KB reserved for the system), so a
// kernel that put a plain buffer offset into a descriptor instead of a window address reads
// the wrong place here too. Static __shared__ variables are per-OS-thread statics in the
// emulator and have no window address: converting one is an error.
static const uint32_t kSharedBase = 1024;

static uint32_t shared_window_offset(const void* p, const char* file, int line) {
    Worker* w = tls_worker;
    const char* c = static_cast<const char*>(p);
    if (!w->dyn_smem || c < w->dyn_smem || c >= w->dyn_smem + w->dyn_size) {
        set_error(w, "__cvta_generic_to_shared at %s:%d: %p is not in the block's dynamic "
                  "shared memory (%zu bytes); the emulator gives window addresses to dynamic "
                  "shared memory only", file, line, p, w->dyn_size);
        yield_to_scheduler();
    }
    return kSharedBase + (uint32_t)(c - w->dyn_smem);
}

// The bytes at window offset [addr, addr + n) of the block's shared memory, or nullptr (and
// the error set) when they are outside its dynamic shared memory.
static const char* shared_window_bytes(uint32_t addr, size_t n, const char* what,
                                       const char* file, int line) {
    Worker* w = tls_worker;
    if (addr < kSharedBase || (size_t)(addr - kSharedBase) + n > w->dyn_size) {
        set_error(w, "%s at %s:%d reads shared window bytes [0x%x, 0x%zx), outside the "
                  "block's dynamic shared memory [0x%x, 0x%zx)", what, file, line, addr,
                  (size_t)addr + n, kSharedBase, (size_t)kSharedBase + w->dyn_size);
        return nullptr;
    }
    return w->dyn_smem + (addr - kSharedBase);
}

// ----------------------------------------------------------------- warpgroup collectives
// wgmma.mma_async ... .m64nNk8.f32.tf32.tf32 (RS form: A from registers, B from shared memory
// through a matrix descriptor), decoded as the PTX ISA defines it, independently of any
// kernel's own convention. Every thread of the warpgroup (128 consecutive threads, all 4
// warps) passes in = {const uint32_t a[4], const uint64_t* desc, const int* scale_d} and
// out = float d[N/2]; the last to arrive computes for all (the instruction is synchronous
// here: wgmma.fence / commit_group / wait_group are no-ops).
//   A (64 x 8): warp w, lane 4g+t: a0 (16w+g, t), a1 (16w+g+8, t), a2 (16w+g, t+4),
//               a3 (16w+g+8, t+4)                       [PTX wgmma .m64nNk8 A fragments]
//   D (64 x N): d[i] at row 16w + g + 8*((i>>1)&1), column 8*(i>>2) + 2t + (i&1)
//   B (8 x N) from the descriptor: start = bits 0-13 << 4, LBO = bits 16-29 << 4, SBO =
//     bits 32-45 << 4, swizzle = bits 62-63 (only 0, no swizzle, is emulated; the base offset
//     bits 49-51 are unused without swizzle). K-major without swizzle, canonical layout
//     ((8,m),(T,2k)):((1T,SBO),(1,LBO)), T = 4 tf32 per 16 bytes: element (k, n) at
//     start + (n/8)*SBO + (n%8)*16 + (k/4)*LBO + (k%4)*4.
// Inputs are read as tf32 (the low 13 bits of each 32-bit value ignored, as the mma.sync
// emulation does); products are exact in fp32, sums fp32 in k order (fmaf).
static void complete_wgmma(Worker* w, unsigned wg, const char* file, int line) {
    Fiber* L = w->fibers + wg;
    const int n_cols = L[0].p0;
    uint64_t desc = 0;
    int scale_d = 0;
    for (int i = 0; i < 128; i++) {
        const void* const* ptrs = static_cast<const void* const*>(L[i].in);
        const uint64_t di = *static_cast<const uint64_t*>(ptrs[1]);
        const int si = *static_cast<const int*>(ptrs[2]);
        if (i == 0) { desc = di; scale_d = si; }
        if (L[i].p0 != n_cols || di != desc || (si != 0) != (scale_d != 0)) {
            set_error(w, "wgmma at %s:%d: the threads of warpgroup %u disagree on the shape, "
                      "descriptor or scale-d (thread %u: n%d desc 0x%016llx scale-d %d; thread "
                      "%u: n%d desc 0x%016llx scale-d %d); they must be warpgroup-uniform",
                      file, line, wg / 128, wg, n_cols, (unsigned long long)desc, scale_d,
                      wg + i, L[i].p0, (unsigned long long)di, si);
            return;
        }
    }
    const uint32_t start = (uint32_t)(desc & 0x3FFFu) << 4;
    const uint32_t lbo = (uint32_t)((desc >> 16) & 0x3FFFu) << 4;
    const uint32_t sbo = (uint32_t)((desc >> 32) & 0x3FFFu) << 4;
    const unsigned swz = (unsigned)(desc >> 62);
    if (swz != 0) {
        set_error(w, "wgmma at %s:%d: descriptor 0x%016llx has swizzle mode %u; only mode 0 (no "
                  "swizzle) is emulated", file, line, (unsigned long long)desc, swz);
        return;
    }
    static thread_local float A[64][8], B[8][256], D[64][256];
    for (int i = 0; i < 128; i++) {
        const void* const* ptrs = static_cast<const void* const*>(L[i].in);
        const uint32_t* a = static_cast<const uint32_t*>(ptrs[0]);
        const int wq = i >> 5, g = (i & 31) >> 2, t = i & 3;
        const int r = 16 * wq + g;
        uint32_t av[4] = {a[0] & 0xffffe000u, a[1] & 0xffffe000u, a[2] & 0xffffe000u,
                          a[3] & 0xffffe000u};
        memcpy(&A[r][t], &av[0], 4);
        memcpy(&A[r + 8][t], &av[1], 4);
        memcpy(&A[r][t + 4], &av[2], 4);
        memcpy(&A[r + 8][t + 4], &av[3], 4);
        const float* d = static_cast<const float*>(L[i].out);
        for (int j = 0; j < n_cols / 2; j++)
            D[r + 8 * ((j >> 1) & 1)][8 * (j >> 2) + 2 * t + (j & 1)] = scale_d ? d[j] : 0.f;
    }
    for (int n = 0; n < n_cols; n++)
        for (int k = 0; k < 8; k++) {
            const uint32_t addr = start + (uint32_t)(n / 8) * sbo + (uint32_t)(n % 8) * 16 +
                                  (uint32_t)(k / 4) * lbo + (uint32_t)(k % 4) * 4;
            const char* src = shared_window_bytes(addr, 4, "wgmma (B from the descriptor)",
                                                  file, line);
            if (!src) return;
            uint32_t v;
            memcpy(&v, src, 4);
            v &= 0xffffe000u;
            memcpy(&B[k][n], &v, 4);
        }
    for (int m = 0; m < 64; m++)
        for (int n = 0; n < n_cols; n++) {
            float acc = D[m][n];
            for (int k = 0; k < 8; k++) acc = fmaf(A[m][k], B[k][n], acc);
            D[m][n] = acc;
        }
    for (int i = 0; i < 128; i++) {
        float* d = static_cast<float*>(L[i].out);
        const int wq = i >> 5, g = (i & 31) >> 2, t = i & 3;
        for (int j = 0; j < n_cols / 2; j++)
            d[j] = D[16 * wq + g + 8 * ((j >> 1) & 1)][8 * (j >> 2) + 2 * t + (j & 1)];
    }
}

// A thread entering a warpgroup collective: complete it when all 128 threads of its
// warpgroup have arrived, else suspend. An impossible one (a block whose last warpgroup is
// partial, a thread of the warpgroup that exited or waits elsewhere) is an error, never a
// hang.
__attribute__((noinline)) static void warpgroup_collective(int op, const void* in, void* out,
                                                           int p0, const char* file,
                                                           int line) {
    asm volatile("" ::: "memory");
    Worker* w = tls_worker;
    Fiber* f = w->cur;
    const unsigned wg = f->linear & ~127u;
    f->op = op; f->mask = 0xffffffffu; f->in = in; f->out = out; f->p0 = p0; f->p1 = 0;
    f->size = 0; f->op_file = file; f->op_line = line;
    f->state = IN_WARP_OP;
    w->n_warp++;
    if (wg + 128 > w->nthreads) {
        set_error(w, "%s at %s:%d needs a whole warpgroup of 128 threads; thread %u is in a "
                  "partial one (block of %u threads)", op_name(op), file, line, f->linear,
                  w->nthreads);
        yield_to_scheduler();
    }
    for (unsigned j = wg; j < wg + 128; j++) {
        const Fiber& o = w->fibers[j];
        if (o.state == EXITED) {
            set_error(w, "%s at %s:%d: thread %u of the warpgroup (threads %u-%u) has already "
                      "exited, so the collective can never complete (a hang on a GPU)",
                      op_name(op), file, line, j, wg, wg + 127);
            yield_to_scheduler();
        }
        // Not all here yet (a thread still running, at a barrier, or in a warp collective of
        // its own warp): the last to arrive completes it; a real deadlock is reported by the
        // scheduler (report_deadlock) when nothing can progress.
        if (o.state != IN_WARP_OP || o.op != op) {
            yield_to_scheduler();
            asm volatile("" ::: "memory");
            return;
        }
    }
    if (op == OP_WGMMA) complete_wgmma(w, wg, file, line);
    if (w->has_err) yield_to_scheduler();
    for (unsigned j = wg; j < wg + 128; j++) {
        w->fibers[j].state = RUNNABLE;
        w->n_warp--;
    }
    asm volatile("" ::: "memory");
}

[[noreturn]] static void trap(const char* file, int line) {
    Worker* w = tls_worker;
    set_error(w, "__trap() at %s:%d", file, line);
    w->in_kernel = 0;
    siglongjmp(w->jb, 2);
}

}  // namespace emu

// ----------------------------------------------------------------- synchronisation
#define __syncthreads() ::emu::syncthreads(__FILE__, __LINE__, 0, 0)
#define __syncthreads_count(p) ::emu::syncthreads(__FILE__, __LINE__, 1, (p))
#define __syncthreads_and(p) ::emu::syncthreads(__FILE__, __LINE__, 2, (p))
#define __syncthreads_or(p) ::emu::syncthreads(__FILE__, __LINE__, 3, (p))
#define __trap() ::emu::trap(__FILE__, __LINE__)
inline void __threadfence() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_block() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __threadfence_system() { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
inline void __nanosleep(unsigned) {}

namespace emu {
template <class T>
inline T shfl(int op, const char* file, int line, unsigned mask, T var, int p0, int width) {
    static_assert(sizeof(T) <= 8, "shuffles move at most 8 bytes");
    T in = var, out = var;
    if (width <= 0 || width > 32 || (width & (width - 1))) width = 32;
    warp_collective(op, mask, &in, &out, p0, width, (int)sizeof(T), file, line);
    return out;
}
inline unsigned ballot(const char* file, int line, unsigned mask, int pred) {
    int in = pred != 0;
    unsigned out = 0;
    warp_collective(OP_BALLOT, mask, &in, &out, 0, 0, 4, file, line);
    return out;
}
template <class T>
inline T reduce(const char* file, int line, int kind, unsigned mask, T v) {
    static_assert(sizeof(T) == 4, "__reduce_*_sync takes int or unsigned");
    T in = v, out = v;
    warp_collective(OP_REDUCE, mask, &in, &out, kind, (T)-1 > 0, 4, file, line);
    return out;
}
inline unsigned active_mask() {
    Worker* w = tls_worker;
    unsigned base = w->cur->linear & ~31u, m = 0, ex = existing_lanes(w, base);
    for (unsigned r = ex; r; r &= r - 1)
        if (w->fibers[base + __builtin_ctz(r)].state != EXITED) m |= 1u << __builtin_ctz(r);
    return m;
}
}  // namespace emu

#define __shfl_sync(m, v, ...) ::emu::shfl(::emu::OP_SHFL, __FILE__, __LINE__, m, v, __VA_ARGS__)
#define __shfl_up_sync(m, v, ...) \
    ::emu::shfl(::emu::OP_SHFL_UP, __FILE__, __LINE__, m, v, __VA_ARGS__)
#define __shfl_down_sync(m, v, ...) \
    ::emu::shfl(::emu::OP_SHFL_DOWN, __FILE__, __LINE__, m, v, __VA_ARGS__)
#define __shfl_xor_sync(m, v, ...) \
    ::emu::shfl(::emu::OP_SHFL_XOR, __FILE__, __LINE__, m, v, __VA_ARGS__)
namespace emu {
// Default width (the macros pass __VA_ARGS__ = lane [, width]).
template <class T>
inline T shfl(int op, const char* file, int line, unsigned mask, T var, int p0) {
    return shfl(op, file, line, mask, var, p0, 32);
}
}  // namespace emu
#define __ballot_sync(m, p) ::emu::ballot(__FILE__, __LINE__, (m), (p))
#define __any_sync(m, p) (::emu::ballot(__FILE__, __LINE__, (m), (p)) != 0u)
#define __all_sync(m, p) (::emu::ballot(__FILE__, __LINE__, (m), (p)) == \
                          ((m) & ::emu::existing_lanes(::emu::tls_worker,   \
                                                       ::emu::tls_fiber->linear & ~31u)))
#define __syncwarp ::emu::SyncwarpAt{__FILE__, __LINE__}
#define __activemask() ::emu::active_mask()
#define __reduce_add_sync(m, v) ::emu::reduce(__FILE__, __LINE__, 0, (m), (v))
#define __reduce_min_sync(m, v) ::emu::reduce(__FILE__, __LINE__, 1, (m), (v))
#define __reduce_max_sync(m, v) ::emu::reduce(__FILE__, __LINE__, 2, (m), (v))
#define __reduce_and_sync(m, v) ::emu::reduce(__FILE__, __LINE__, 3, (m), (v))
#define __reduce_or_sync(m, v) ::emu::reduce(__FILE__, __LINE__, 4, (m), (v))
#define __reduce_xor_sync(m, v) ::emu::reduce(__FILE__, __LINE__, 5, (m), (v))
namespace emu {
// __syncwarp() / __syncwarp(mask): an object that remembers where it was called.
struct SyncwarpAt {
    const char* file;
    int line;
    void operator()(unsigned mask = 0xffffffffu) const {
        warp_collective(OP_SYNCWARP, mask, nullptr, nullptr, 0, 0, 0, file, line);
    }
};
}  // namespace emu

// ----------------------------------------------------------------- atomics
// Fibers of one block never preempt each other, but blocks run on several OS threads: use real
// atomic read-modify-writes. Each returns the old value, as in CUDA.
#define EMU_ATOMIC_INT(T)                                                                  \
    inline T atomicAdd(T* p, T v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }     \
    inline T atomicSub(T* p, T v) { return __atomic_fetch_sub(p, v, __ATOMIC_SEQ_CST); }     \
    inline T atomicAnd(T* p, T v) { return __atomic_fetch_and(p, v, __ATOMIC_SEQ_CST); }     \
    inline T atomicOr(T* p, T v) { return __atomic_fetch_or(p, v, __ATOMIC_SEQ_CST); }       \
    inline T atomicXor(T* p, T v) { return __atomic_fetch_xor(p, v, __ATOMIC_SEQ_CST); }     \
    inline T atomicExch(T* p, T v) { return __atomic_exchange_n(p, v, __ATOMIC_SEQ_CST); }   \
    inline T atomicCAS(T* p, T cmp, T v) {                                                 \
        __atomic_compare_exchange_n(p, &cmp, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST); \
        return cmp;                                                                        \
    }                                                                                      \
    inline T atomicMax(T* p, T v) {                                                        \
        T old = __atomic_load_n(p, __ATOMIC_SEQ_CST);                                      \
        while (old < v && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_SEQ_CST,  \
                                                       __ATOMIC_SEQ_CST)) {}               \
        return old;                                                                        \
    }                                                                                      \
    inline T atomicMin(T* p, T v) {                                                        \
        T old = __atomic_load_n(p, __ATOMIC_SEQ_CST);                                      \
        while (old > v && !__atomic_compare_exchange_n(p, &old, v, true, __ATOMIC_SEQ_CST,  \
                                                       __ATOMIC_SEQ_CST)) {}               \
        return old;                                                                        \
    }
EMU_ATOMIC_INT(int)
EMU_ATOMIC_INT(unsigned int)
EMU_ATOMIC_INT(unsigned long long)
EMU_ATOMIC_INT(long long)
#undef EMU_ATOMIC_INT
inline unsigned atomicInc(unsigned* p, unsigned lim) {
    unsigned old = __atomic_load_n(p, __ATOMIC_SEQ_CST);
    while (!__atomic_compare_exchange_n(p, &old, old >= lim ? 0u : old + 1u, true,
                                        __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {}
    return old;
}
#define EMU_ATOMIC_FP(T, U)                                                                \
    inline T atomicAdd(T* p, T v) {                                                        \
        U* q = reinterpret_cast<U*>(p);                                                    \
        U old = __atomic_load_n(q, __ATOMIC_SEQ_CST), nw;                                  \
        do {                                                                               \
            T f, r;                                                                        \
            memcpy(&f, &old, sizeof f);                                                    \
            r = f + v;                                                                     \
            memcpy(&nw, &r, sizeof nw);                                                    \
        } while (!__atomic_compare_exchange_n(q, &old, nw, true, __ATOMIC_SEQ_CST,          \
                                              __ATOMIC_SEQ_CST));                          \
        T res;                                                                             \
        memcpy(&res, &old, sizeof res);                                                    \
        return res;                                                                        \
    }                                                                                      \
    inline T atomicExch(T* p, T v) {                                                       \
        U nw, old;                                                                         \
        memcpy(&nw, &v, sizeof nw);                                                        \
        old = __atomic_exchange_n(reinterpret_cast<U*>(p), nw, __ATOMIC_SEQ_CST);          \
        T res;                                                                             \
        memcpy(&res, &old, sizeof res);                                                    \
        return res;                                                                        \
    }
EMU_ATOMIC_FP(float, uint32_t)
EMU_ATOMIC_FP(double, uint64_t)
#undef EMU_ATOMIC_FP
#define atomicAdd_block atomicAdd
#define atomicMax_block atomicMax

// ----------------------------------------------------------------- loads, bits, math intrinsics
template <class T> inline T __ldg(const T* p) { return *p; }
template <class T> inline T __ldcg(const T* p) { return *p; }
template <class T> inline T __ldca(const T* p) { return *p; }
template <class T> inline T __ldcs(const T* p) { return *p; }
template <class T> inline T __ldlu(const T* p) { return *p; }
template <class T> inline void __stcg(T* p, T v) { *p = v; }
template <class T> inline void __stcs(T* p, T v) { *p = v; }
template <class T> inline void __stwt(T* p, T v) { *p = v; }

inline unsigned __float_as_uint(float x) { unsigned u; memcpy(&u, &x, 4); return u; }
inline int __float_as_int(float x) { int u; memcpy(&u, &x, 4); return u; }
inline float __uint_as_float(unsigned u) { float x; memcpy(&x, &u, 4); return x; }
inline float __int_as_float(int u) { float x; memcpy(&x, &u, 4); return x; }
inline long long __double_as_longlong(double x) { long long u; memcpy(&u, &x, 8); return u; }
inline double __longlong_as_double(long long u) { double x; memcpy(&x, &u, 8); return x; }
inline int __double2hiint(double x) { return (int)(__double_as_longlong(x) >> 32); }
inline int __double2loint(double x) { return (int)__double_as_longlong(x); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x ? __builtin_clz((unsigned)x) : 32; }
inline int __clzll(long long x) { return x ? __builtin_clzll((unsigned long long)x) : 64; }
inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline unsigned __brev(unsigned x) {
    x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
    x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
    x = ((x >> 4) & 0x0f0f0f0fu) | ((x & 0x0f0f0f0fu) << 4);
    x = ((x >> 8) & 0x00ff00ffu) | ((x & 0x00ff00ffu) << 8);
    return (x >> 16) | (x << 16);
}
inline int __mul24(int a, int b) { return (int)((long long)(a << 8 >> 8) * (b << 8 >> 8)); }
inline unsigned __umul24(unsigned a, unsigned b) { return (a & 0xffffffu) * (b & 0xffffffu); }
inline int __mulhi(int a, int b) { return (int)(((long long)a * b) >> 32); }
inline unsigned __umulhi(unsigned a, unsigned b) {
    return (unsigned)(((unsigned long long)a * b) >> 32);
}
inline long long __mul64hi(long long a, long long b) { return (long long)(((__int128)a * b) >> 64); }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return (unsigned long long)(((unsigned __int128)a * b) >> 64);
}

// Fast-math intrinsics: the CPU computes them at full precision (tests use tolerances).
inline float __expf(float x) { return expf(x); }
inline float __exp10f(float x) { return powf(10.0f, x); }
inline float __logf(float x) { return logf(x); }
inline float __log2f(float x) { return log2f(x); }
inline float __log10f(float x) { return log10f(x); }
inline float __sinf(float x) { return sinf(x); }
inline float __cosf(float x) { return cosf(x); }
inline float __tanf(float x) { return tanf(x); }
inline void __sincosf(float x, float* s, float* c) { *s = sinf(x); *c = cosf(x); }
inline float __powf(float x, float y) { return powf(x, y); }
inline float __fdividef(float a, float b) { return a / b; }
inline float fdividef(float a, float b) { return a / b; }
inline float __frcp_rn(float x) { return 1.0f / x; }
inline double __drcp_rn(double x) { return 1.0 / x; }
inline float __fsqrt_rn(float x) { return sqrtf(x); }
inline double __dsqrt_rn(double x) { return sqrt(x); }
inline float __frsqrt_rn(float x) { return 1.0f / sqrtf(x); }
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline double rsqrt(double x) { return 1.0 / sqrt(x); }
inline float rcbrtf(float x) { return 1.0f / cbrtf(x); }
inline double rcbrt(double x) { return 1.0 / cbrt(x); }
inline float __saturatef(float x) { return x < 0.0f ? 0.0f : (x > 1.0f ? 1.0f : (x != x ? 0.0f : x)); }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }
inline float normcdff(float x) { return 0.5f * erfcf(-x * 0.70710678118654752f); }
inline double normcdf(double x) { return 0.5 * erfc(-x * 0.70710678118654752); }
inline int __float2int_rn(float x) { return (int)nearbyintf(x); }
inline int __float2int_rz(float x) { return (int)x; }
inline int __float2int_rd(float x) { return (int)floorf(x); }
inline int __float2int_ru(float x) { return (int)ceilf(x); }
inline unsigned __float2uint_rn(float x) { return (unsigned)nearbyintf(x); }
inline unsigned __float2uint_rz(float x) { return (unsigned)x; }
inline float __int2float_rn(int x) { return (float)x; }
inline float __uint2float_rn(unsigned x) { return (float)x; }
inline int __double2int_rn(double x) { return (int)nearbyint(x); }
inline int __double2int_rz(double x) { return (int)x; }
inline float __double2float_rn(double x) { return (float)x; }
inline double __int2double_rn(int x) { return (double)x; }

// CUDA's global min/max overloads (host C++ has only std::min/std::max).
#define EMU_MINMAX(T)                                  \
    inline T min(T a, T b) { return b < a ? b : a; }   \
    inline T max(T a, T b) { return a < b ? b : a; }
EMU_MINMAX(int)
EMU_MINMAX(unsigned int)
EMU_MINMAX(long long)
EMU_MINMAX(unsigned long long)
EMU_MINMAX(long)
EMU_MINMAX(unsigned long)
#undef EMU_MINMAX
inline float min(float a, float b) { return fminf(a, b); }
inline float max(float a, float b) { return fmaxf(a, b); }
inline double min(double a, double b) { return fmin(a, b); }
inline double max(double a, double b) { return fmax(a, b); }
inline unsigned min(int a, unsigned b) { return min((unsigned)a, b); }
inline unsigned min(unsigned a, int b) { return min(a, (unsigned)b); }
inline unsigned max(int a, unsigned b) { return max((unsigned)a, b); }
inline unsigned max(unsigned a, int b) { return max(a, (unsigned)b); }
inline long long min(long long a, int b) { return min(a, (long long)b); }
inline long long min(int a, long long b) { return min((long long)a, b); }
inline long long max(long long a, int b) { return max(a, (long long)b); }
inline long long max(int a, long long b) { return max((long long)a, b); }

#endif  // MLPACCEL_CUDA_EMU_H
