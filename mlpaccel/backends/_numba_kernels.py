"""The numba backend's kernels: our own parallel GEMM, fused layer ops, losses and updates.

Imported only when the numba backend is constructed (it imports numba at the top).

GEMM (BLIS-style, float32 and float64)
--------------------------------------
``C = op(A) @ op(B)`` is cut into MR x NR tiles of C (MR = 6 rows, NR = 4 vectors = 64 float32
/ 32 float64 columns) and K blocks of at most KC. The micro-kernel ``_micro_tile`` keeps one
tile in 24 vector registers (zmm on AVX-512) and per k does 4 vector loads of B, 6 broadcasts
of A and 24 FMAs. It is a numba ``@intrinsic`` emitting LLVM vector IR (``<16 x float>``,
``llvm.fma``): LLVM does not reliably turn plain Python loops into a register-blocked kernel
(the accumulators stay in memory and it runs ~10x slower).

The micro-kernel reads A through (row, column) strides, so A and A^T are both read in place
with no copy; a row of B must hold the tile's NR columns contiguously, so B is read in place
and B^T is packed into [panel][k][NR] buffers (packing *is* the transposition): by the task
that uses the panel when A is small, else once up front. Partial edge panels are packed with
zero padding into small per-task buffers. Tiles are grouped into (row block, column block)
tasks run with ``prange``: one parallel region per call (two for B^T with a large A).
Full tiles accumulate in C itself (``_micro_tile_c``: the bias is the accumulators' start
value, ReLU is applied from the registers); partial edge tiles go through a tile buffer whose
write-back applies the fused epilogue ``z = acc + bias``, ``a = f(z)``. Outputs of at most 16
columns use ``gemm_narrow`` (12 x 16 tiles, ``_micro_narrow``).

fastmath: only ``contract`` (FMA) is enabled anywhere, never ``nnan``/``ninf``, so the stable
activations and losses keep their inf/NaN behaviour.
"""

from __future__ import annotations

import math
import types as _pytypes

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

#: micro-tile: MR rows x NV vectors (NR = NV * lanes columns)
MR = 6
NV = 4
KC = 1024  # K block: a B micro-panel (<= 256 KB) stays in L2 while A panels stream past
# (measured, 1 thread: KC 256 / 512 / 1024 -> 88 / 101 / 108 GFLOP/s at 256x784x256)
MC_PANELS = 16  # at most 96 rows of A per task (A block 96 KB: L2)
NC_PANELS = 8  # at most 512 float32 columns per task
BIG_MACS = 1 << 24  # products this big get ~8 tasks per thread (see gemm)
# A B^T with an A this small (it stays in L2 while a task sweeps it): tasks own column
# panels and pack them (see gemm). 2 threads: 64x256x256 121 -> 65 us, 256^3 202 -> 177;
# at 256x784x256 (800 KB of A) the shared up-front packing is faster (163 vs 136 GFLOP/s)
LOCAL_PACK_BYTES = 256 * 1024

FM = {"contract"}  # fastmath flags that cannot change inf/NaN results
_OPTS = dict(cache=True, nogil=True)

# activation codes (order of mlpaccel.activations; softmax is row-wise and handled apart)
STEP, LINEAR, SIGMOID, TANH, RELU, LEAKY_RELU, ELU, SOFTPLUS, GELU, SOFTMAX = range(10)
CODES = {"step": STEP, "linear": LINEAR, "sigmoid": SIGMOID, "tanh": TANH, "relu": RELU,
         "leaky_relu": LEAKY_RELU, "elu": ELU, "softplus": SOFTPLUS, "gelu": GELU,
         "softmax": SOFTMAX}
SQRT_HALF = 1.0 / math.sqrt(2.0)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


# ----------------------------------------------------------------------------- micro-kernel
def _vector_types(context, dtype):
    """(is32, lanes, vector type, pointer to it, intp) of one zmm register of ``dtype``
    (16 float32 / 8 float64 lanes): what every intrinsic below builds on."""
    is32 = dtype == types.float32
    lanes = 16 if is32 else 8
    vty = ir.VectorType(context.get_value_type(dtype), lanes)
    return is32, lanes, vty, vty.as_pointer(), context.get_value_type(types.intp)


def _data(context, builder, array_type, value):
    """The data pointer of a numba array argument inside an intrinsic."""
    return context.make_array(array_type)(context, builder, value).data


def _fma(builder, vty, lanes, is32):
    """The ``llvm.fma`` intrinsic on vectors of ``vty``."""
    return cgutils.get_or_insert_function(
        builder.module, ir.FunctionType(vty, [vty, vty, vty]),
        f"llvm.fma.v{lanes}{'f32' if is32 else 'f64'}")


@intrinsic
def _micro_tile(typingctx, ap, ao, rsa, csa, bp, bo, rsb, kc, tile):
    """tile[i*NR + j] = sum_k ap[ao + i*rsa + k*csa] * bp[bo + k*rsb + j], i < MR, j < NR.

    A is read with any strides (a packed panel, a row-major A, or A^T in place); each row k
    of B must hold NR contiguous elements (B in place, or a packed panel)."""
    i = types.intp
    sig = types.void(ap, i, i, i, bp, i, i, i, tile)

    def codegen(context, builder, signature, args):
        apv, aov, rsav, csav, bpv, bov, rsbv, kcv, tv = args
        ap_t, bp_t, t_t = signature.args[0], signature.args[4], signature.args[8]
        is32, lanes, vty, vptr, intp = _vector_types(context, ap_t.dtype)
        nr = NV * lanes
        a_ptr = _data(context, builder, ap_t, apv)
        b_ptr = _data(context, builder, bp_t, bpv)
        t_ptr = _data(context, builder, t_t, tv)
        fma = _fma(builder, vty, lanes, is32)
        # allocas in the entry block: SROA/mem2reg turns them into registers
        accs = [cgutils.alloca_once_value(builder, ir.Constant(vty, None))
                for _ in range(MR * NV)]
        undef = ir.Constant(vty, ir.Undefined)
        splat = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)
        zero32 = ir.Constant(ir.IntType(32), 0)
        with cgutils.for_range(builder, kcv) as loop:
            k = loop.index
            pb = builder.add(bov, builder.mul(k, rsbv))
            pa = builder.add(aov, builder.mul(k, csav))
            bvs = []
            for v in range(NV):
                p = builder.gep(b_ptr, [builder.add(pb, ir.Constant(intp, v * lanes))])
                bvs.append(builder.load(builder.bitcast(p, vptr), align=4))
            for i in range(MR):
                ai = builder.add(pa, builder.mul(ir.Constant(intp, i), rsav))
                a = builder.load(builder.gep(a_ptr, [ai]))
                av = builder.shuffle_vector(builder.insert_element(undef, a, zero32), undef,
                                            splat)
                for v in range(NV):
                    acc = accs[i * NV + v]
                    builder.store(builder.call(fma, [av, bvs[v], builder.load(acc)]), acc)
        for i in range(MR):
            for v in range(NV):
                p = builder.gep(t_ptr, [ir.Constant(intp, i * nr + v * lanes)])
                builder.store(builder.load(accs[i * NV + v]), builder.bitcast(p, vptr), align=4)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _micro_tile_c(typingctx, ap, ao, rsa, csa, bp, bo, rsb, kc, cp, co, ldc, init, biasp,
                  bofs, relu, outp, partp, pofs):
    """As ``_micro_tile``, but the MR x NR tile lives in C itself (no tile buffer, no copy):
    acc starts at 0 (init 0), at C (init 1: a later K block) or at the bias row (init 2);
    then C[co + i*ldc + j] = acc and, when ``relu`` is 1, outp[same] = max(acc, 0). ``relu``
    2 is ReLU's backward epilogue: C[...] = acc where outp[same] (the layer's z) > 0, else 0,
    and, when ``pofs`` >= 0, the tile's column sums are added to partp[pofs + j].
    For full tiles only (every row and column inside C)."""
    i = types.intp
    sig = types.void(ap, i, i, i, bp, i, i, i, cp, i, i, i, biasp, i, i, outp, partp, i)

    def codegen(context, builder, signature, args):
        (apv, aov, rsav, csav, bpv, bov, rsbv, kcv, cpv, cov, ldcv, initv, biv, bofv, reluv,
         opv, ppv, pofv) = args
        st = signature.args
        is32, lanes, vty, vptr, intp = _vector_types(context, st[0].dtype)
        a_ptr = _data(context, builder, st[0], apv)
        b_ptr = _data(context, builder, st[4], bpv)
        c_ptr = _data(context, builder, st[8], cpv)
        bias_ptr = _data(context, builder, st[12], biv)
        o_ptr = _data(context, builder, st[15], opv)
        p_ptr = _data(context, builder, st[16], ppv)
        fma = _fma(builder, vty, lanes, is32)
        zero_v = ir.Constant(vty, None)
        accs = [cgutils.alloca_once_value(builder, zero_v) for _ in range(MR * NV)]

        def cvec(base_ptr, i_, v):
            off = builder.add(cov, builder.add(builder.mul(ir.Constant(intp, i_), ldcv),
                                               ir.Constant(intp, v * lanes)))
            return builder.bitcast(builder.gep(base_ptr, [off]), vptr)

        is_c = builder.icmp_signed("==", initv, ir.Constant(intp, 1))
        is_b = builder.icmp_signed("==", initv, ir.Constant(intp, 2))
        with builder.if_else(is_c) as (then_c, else_c):
            with then_c:
                for i_ in range(MR):
                    for v in range(NV):
                        builder.store(builder.load(cvec(c_ptr, i_, v), align=4),
                                      accs[i_ * NV + v])
            with else_c:
                with builder.if_then(is_b):
                    for v in range(NV):
                        p = builder.gep(bias_ptr, [builder.add(bofv,
                                                               ir.Constant(intp, v * lanes))])
                        bv = builder.load(builder.bitcast(p, vptr), align=4)
                        for i_ in range(MR):
                            builder.store(bv, accs[i_ * NV + v])
        undef = ir.Constant(vty, ir.Undefined)
        splat = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)
        zero32 = ir.Constant(ir.IntType(32), 0)
        with cgutils.for_range(builder, kcv) as loop:
            k = loop.index
            pb = builder.add(bov, builder.mul(k, rsbv))
            pa = builder.add(aov, builder.mul(k, csav))
            bvs = []
            for v in range(NV):
                p = builder.gep(b_ptr, [builder.add(pb, ir.Constant(intp, v * lanes))])
                bvs.append(builder.load(builder.bitcast(p, vptr), align=4))
            for i_ in range(MR):
                ai = builder.add(pa, builder.mul(ir.Constant(intp, i_), rsav))
                a = builder.load(builder.gep(a_ptr, [ai]))
                av = builder.shuffle_vector(builder.insert_element(undef, a, zero32), undef,
                                            splat)
                for v in range(NV):
                    acc = accs[i_ * NV + v]
                    builder.store(builder.call(fma, [av, bvs[v], builder.load(acc)]), acc)
        is_mask = builder.icmp_signed("==", reluv, ir.Constant(intp, 2))
        with builder.if_then(is_mask):  # acc = z > 0 ? acc : 0 (NaN z -> 0, as _dact's RELU)
            for i_ in range(MR):
                for v in range(NV):
                    zv = builder.load(cvec(o_ptr, i_, v), align=4)
                    x = builder.load(accs[i_ * NV + v])
                    builder.store(builder.select(builder.fcmp_ordered(">", zv, zero_v), x,
                                                 zero_v), accs[i_ * NV + v])
            with builder.if_then(builder.icmp_signed(">=", pofv, ir.Constant(intp, 0))):
                for v in range(NV):
                    col = builder.load(accs[v])
                    for i_ in range(1, MR):
                        col = builder.fadd(col, builder.load(accs[i_ * NV + v]))
                    pp = builder.bitcast(builder.gep(p_ptr, [builder.add(
                        pofv, ir.Constant(intp, v * lanes))]), vptr)
                    builder.store(builder.fadd(builder.load(pp, align=4), col), pp, align=4)
        for i_ in range(MR):
            for v in range(NV):
                builder.store(builder.load(accs[i_ * NV + v]), cvec(c_ptr, i_, v), align=4)
        with builder.if_then(builder.icmp_signed("==", reluv, ir.Constant(intp, 1))):
            for i_ in range(MR):
                for v in range(NV):
                    x = builder.load(accs[i_ * NV + v])
                    # x > 0 ? x : 0 (NaN -> 0, as _act's RELU: v > 0 is false for NaN)
                    y = builder.select(builder.fcmp_ordered(">", x, zero_v), x, zero_v)
                    builder.store(y, cvec(o_ptr, i_, v), align=4)
        return context.get_dummy_value()

    return sig, codegen


#: narrow GEMM (N <= 16 columns): tiles of MRN rows x 16 columns
MRN = 12
NRN = 16


@intrinsic
def _micro_narrow(typingctx, ap, ao, rsa, csa, wp, kc, tile):
    """tile[i*16 + j] = sum_k ap[ao + i*rsa + k*csa] * wp[k*16 + j], i < MRN, j < 16.

    For outputs of at most 16 columns (a 10-class layer): one row of the packed, zero-padded
    B is one zmm (float32) or two (float64); MRN = 12 independent accumulator rows hide the
    FMA latency. Per k: 1-2 vector loads, 12 broadcasts, 12-24 FMAs."""
    i = types.intp
    sig = types.void(ap, i, i, i, wp, i, tile)

    def codegen(context, builder, signature, args):
        apv, aov, rsav, csav, wpv, kcv, tv = args
        st = signature.args
        is32, lanes, vty, vptr, intp = _vector_types(context, st[0].dtype)
        nv = NRN // lanes
        a_ptr = _data(context, builder, st[0], apv)
        w_ptr = _data(context, builder, st[4], wpv)
        t_ptr = _data(context, builder, st[6], tv)
        fma = _fma(builder, vty, lanes, is32)
        accs = [cgutils.alloca_once_value(builder, ir.Constant(vty, None))
                for _ in range(MRN * nv)]
        undef = ir.Constant(vty, ir.Undefined)
        splat = ir.Constant(ir.VectorType(ir.IntType(32), lanes), [0] * lanes)
        zero32 = ir.Constant(ir.IntType(32), 0)
        with cgutils.for_range(builder, kcv) as loop:
            k = loop.index
            pw = builder.mul(k, ir.Constant(intp, NRN))
            pa = builder.add(aov, builder.mul(k, csav))
            wvs = []
            for v in range(nv):
                p = builder.gep(w_ptr, [builder.add(pw, ir.Constant(intp, v * lanes))])
                wvs.append(builder.load(builder.bitcast(p, vptr), align=4))
            for i_ in range(MRN):
                ai = builder.add(pa, builder.mul(ir.Constant(intp, i_), rsav))
                a = builder.load(builder.gep(a_ptr, [ai]))
                av = builder.shuffle_vector(builder.insert_element(undef, a, zero32), undef,
                                            splat)
                for v in range(nv):
                    acc = accs[i_ * nv + v]
                    builder.store(builder.call(fma, [av, wvs[v], builder.load(acc)]), acc)
        for i_ in range(MRN):
            for v in range(nv):
                p = builder.gep(t_ptr, [ir.Constant(intp, i_ * NRN + v * lanes)])
                builder.store(builder.load(accs[i_ * nv + v]), builder.bitcast(p, vptr),
                              align=4)
        return context.get_dummy_value()

    return sig, codegen


@intrinsic
def _fetch_add(typingctx, arr, idx):
    """Atomically ``arr[idx] += 1``; returns the old value (int64 ``arr``): the GEMM's task
    counter, each thread takes its next task with it."""
    sig = types.int64(arr, types.intp)

    def codegen(context, builder, signature, args):
        arrv, idxv = args
        data = _data(context, builder, signature.args[0], arrv)
        ptr = builder.gep(data, [idxv])
        return builder.atomic_rmw("add", ptr, ir.Constant(ir.IntType(64), 1), "monotonic")

    return sig, codegen


@intrinsic
def _transpose_block(typingctx, src, so, lds, dst, do, ldd):
    """dst[do + c*ldd + r] = src[so + r*lds + c] for r, c < L (L = one vector: 16 float32,
    8 float64): L vector loads, log2(L) rounds of L two-input shuffles (each round swaps one
    bit of the row index with the same bit of the column index), L vector stores. The B^T
    panel packing's transposition, instead of L*L scalar loads and strided stores."""
    i = types.intp
    sig = types.void(src, i, i, dst, i, i)

    def codegen(context, builder, signature, args):
        srcv, sov, ldsv, dstv, dov, lddv = args
        st = signature.args
        is32, lanes, vty, vptr, intp = _vector_types(context, st[0].dtype)
        s_ptr = _data(context, builder, st[0], srcv)
        d_ptr = _data(context, builder, st[3], dstv)
        align = 4 if is32 else 8
        rows = []
        for r in range(lanes):
            off = builder.add(sov, builder.mul(ir.Constant(intp, r), ldsv))
            rows.append(builder.load(builder.bitcast(builder.gep(s_ptr, [off]), vptr),
                                     align=align))
        t = 1
        while t < lanes:
            new = list(rows)
            for r0 in range(lanes):
                if r0 & t:
                    continue
                r1 = r0 | t
                m0 = [j if not j & t else lanes + (j ^ t) for j in range(lanes)]
                m1 = [lanes + j if j & t else j ^ t for j in range(lanes)]
                i32v = ir.IntType(32)
                new[r0] = builder.shuffle_vector(rows[r0], rows[r1],
                                                 ir.Constant(ir.VectorType(i32v, lanes), m0))
                new[r1] = builder.shuffle_vector(rows[r0], rows[r1],
                                                 ir.Constant(ir.VectorType(i32v, lanes), m1))
            rows = new
            t *= 2
        for c in range(lanes):
            off = builder.add(dov, builder.mul(ir.Constant(intp, c), lddv))
            builder.store(rows[c], builder.bitcast(builder.gep(d_ptr, [off]), vptr),
                          align=align)
        return context.get_dummy_value()

    return sig, codegen


# ----------------------------------------------------------------------------- scalar math
@njit(inline="always", **_OPTS)
def _sigmoid(v, one):
    e = math.exp(-abs(v))  # e^-|z| never overflows
    return one / (one + e) if v >= 0 else e / (one + e)


@njit(inline="always", **_OPTS)
def _act(code, v, alpha, one):
    """f(v) for an activation code (not softmax). Written to be stable for |v| up to 1e4."""
    zero = one - one
    if code == RELU:
        return v if v > zero else zero
    if code == LINEAR:
        return v
    if code == LEAKY_RELU:
        return v if v > zero else alpha * v
    if code == SIGMOID:
        return _sigmoid(v, one)
    if code == TANH:
        return math.tanh(v)
    if code == ELU:
        return v if v > zero else alpha * math.expm1(min(v, zero))
    if code == SOFTPLUS:
        return max(v, zero) + math.log1p(math.exp(-abs(v)))
    if code == GELU:
        return one / (one + one) * v * (one + math.erf(v * SQRT_HALF))
    if code == STEP:
        return one if v > zero else zero
    return v


@njit(inline="always", **_OPTS)
def _dact(code, z, a, g, alpha, one):
    """g * f'(z), with f' in terms of z or a = f(z) (see mlpaccel.activations)."""
    zero = one - one
    if code == RELU:
        return g if z > zero else zero
    if code == LINEAR:
        return g
    if code == LEAKY_RELU:
        return g if z > zero else alpha * g
    if code == SIGMOID:
        return g * a * (one - a)
    if code == TANH:
        return g * (one - a * a)
    if code == ELU:
        return g if z > zero else g * (a + alpha)
    if code == SOFTPLUS:
        return g * _sigmoid(z, one)
    if code == GELU:
        cdf = one / (one + one) * (one + math.erf(z * SQRT_HALF))
        pdf = INV_SQRT_2PI * math.exp(-(one / (one + one)) * z * z)
        return g * (cdf + z * pdf)
    return zero  # step


# ----------------------------------------------------------------------------- GEMM
@njit(**_OPTS)
def _pack_a(A, ta, Ap, i0, pc, kc, M):
    """Rows i0..i0+MR of op(A) (the last, partial panel), columns pc..pc+kc ->
    Ap[k*MR + i], zero padded. Full panels are read in place by the micro-kernel."""
    mr = min(MR, M - i0)
    for k in range(kc):
        for i in range(MR):
            if i < mr:
                Ap[k * MR + i] = A[pc + k, i0 + i] if ta else A[i0 + i, pc + k]
            else:
                Ap[k * MR + i] = 0


@njit(**_OPTS)
def _pack_b(B, tb, Bp, base, j0, pc, kc, N, NR):
    """Columns j0..j0+NR of op(B), rows pc..pc+kc -> Bp[base + k*NR + j] (zero padded).
    Used for B^T (whose columns are strided) and for the last, partial column panel."""
    nr = min(NR, N - j0)
    if tb:  # B is (N, K): a transposition, by L x L blocks in vector registers
        L = NR // NV  # one vector: 16 float32 / 8 float64
        K = B.shape[1]
        Bf = B.reshape(B.size)
        kf = kc - kc % L
        jf = nr - nr % L
        for k0 in range(0, kf, L):
            for jb in range(0, jf, L):
                _transpose_block(Bf, (j0 + jb) * K + pc + k0, K, Bp, base + k0 * NR + jb, NR)
            for j in range(jf, nr):  # leftover columns of op(B) (a partial panel)
                for k in range(k0, k0 + L):
                    Bp[base + k * NR + j] = B[j0 + j, pc + k]
        for j in range(nr):  # leftover rows of op(B) (K not a multiple of L)
            row = B[j0 + j, pc + kf:pc + kc]
            dst = Bp[base + kf * NR + j:]
            for k in range(kc - kf):
                dst[k * NR] = row[k]
    else:
        for k in range(kc):
            for j in range(nr):
                Bp[base + k * NR + j] = B[pc + k, j0 + j]
    if nr < NR:
        for k in range(kc):
            for j in range(nr, NR):
                Bp[base + k * NR + j] = 0


@njit(**_OPTS)
def _task_split(nap, nbp, nthreads):
    """Panels per task (rows, cols): at most MC/NC, small enough for ~4 tasks per thread."""
    mcp = min(MC_PANELS, nap)
    ncp = min(NC_PANELS, nbp)
    while ((nap + mcp - 1) // mcp) * ((nbp + ncp - 1) // ncp) < 4 * nthreads:
        if ncp > 1 and 2 * ncp >= mcp:
            ncp = (ncp + 1) // 2
        elif mcp > 1:
            mcp = (mcp + 1) // 2
        else:
            break
    return mcp, ncp


@njit(parallel=True, **_OPTS)
def gemm(A, B, C, ta, tb, bias, has_bias, code, alpha, Aout, one, nthreads, accum, dcode,
         Zx, Ax, gb, want_gb):
    """C = op(A) @ op(B) (+ bias); when ``code`` is not LINEAR also Aout = f(C). With
    ``accum``: C += op(A) @ op(B) (no bias, code LINEAR; a fused training step adds
    x^T (-lr delta) straight into W this way). With ``dcode >= 0`` (code LINEAR, no bias):
    the backward epilogue C = (op(A) @ op(B)) * f'(Zx, Ax) for activation ``dcode`` (the
    layer below's delta, computed by the core that holds the tile), and when ``want_gb``
    gb_j = sum_i C_ij (its bias gradient; per-row-block partial sums in float64, added in
    a fixed order: deterministic).

    A (M, K) or (K, M) if ta; B (K, N) or (N, K) if tb; C, Aout (M, N); bias (N,);
    ``alpha`` (activation parameter) and ``one`` are scalars of C's dtype; ``nthreads`` sizes
    the task split (passed in: reading it inside would stop numba from caching this).

    Full MR-row panels of op(A) and NR-column panels of B are read in place (A and A^T only
    differ in the strides handed to the micro-kernel); B^T is packed once up front (its
    columns are strided), and each task packs its partial edge panels into small buffers.
    One parallel region computes everything (two for B^T): few fork/joins per call."""
    if ta:
        K, M = A.shape
    else:
        M, K = A.shape
    N = C.shape[1]
    NR = NV * (16 if C.itemsize == 4 else 8)
    Af = A.reshape(A.size)
    Bf = B.reshape(B.size)
    Cf = C.reshape(C.size)
    Of = Aout.reshape(Aout.size)
    nap = (M + MR - 1) // MR
    nbp = (N + NR - 1) // NR
    nkb = max(1, (K + KC - 1) // KC)
    kcmax = (K + nkb - 1) // nkb  # equal K blocks (1100 -> 2 x 550, not 1024 + 76)
    if ta:  # element (i, k) of op(A) at i*rsa + k*csa
        rsa, csa = 1, M
    else:
        rsa, csa = K, 1
    # B^T: its panels must be packed ([panel][k][NR]). With a small A (an MLP's delta W^T)
    # each task owns whole column panels over all rows and packs them itself: one parallel
    # region, and the packed panel stays in the core that uses it. Otherwise every panel is
    # packed once over the whole K up front, in parallel.
    local = tb and M * K * C.itemsize <= LOCAL_PACK_BYTES and nbp >= 2 * nthreads
    Bp = np.empty(nbp * K * NR if tb and not local else 1, dtype=C.dtype)
    if tb and not local:
        for jp in prange(nbp):
            _pack_b(B, True, Bp, jp * K * NR, jp * NR, 0, K, N, NR)
    if local:
        mcp, ncp = nap, 1
    else:  # big products: twice the tasks, for a better balance of the last ones
        # (measured, 2 threads: 256x784x256 510 -> 470 us, 256^3 170 -> 159 us)
        mcp, ncp = _task_split(nap, nbp, nthreads * (2 if M * N * K >= BIG_MACS else 1))
    nmb = (nap + mcp - 1) // mcp
    nnb = (nbp + ncp - 1) // ncp
    # Tasks are taken from a shared queue through an atomic counter (``_fetch_add``), in
    # one prange step per thread: a thread the VM deschedules leaves its share to the
    # other (as numba's chunksize-1 dynamic schedule did, without setting the chunksize
    # around every call: ~2 us of Python per GEMM).
    ctr = np.zeros(1, dtype=np.int64)
    ntask = nmb * nnb
    dgrad = dcode >= 0
    # bias-gradient partial sums per row block (C's dtype: the vector epilogue adds into it)
    part = np.zeros((nmb if dgrad and want_gb else 1, N if dgrad and want_gb else 1), C.dtype)
    Pf = part.reshape(part.size)
    Zf = Zx.reshape(Zx.size)
    for _q in prange(nthreads):
        tile = np.empty(MR * NR, dtype=C.dtype)
        Ae = np.empty(MR * kcmax, dtype=C.dtype)
        Be = np.empty(NR * kcmax, dtype=C.dtype)
        while True:
            t = _fetch_add(ctr, 0)
            if t >= ntask:
                break
            ib = t // nnb
            jb = t % nnb
            ip_lo, ip_hi = ib * mcp, min(nap, (ib + 1) * mcp)
            jp_lo, jp_hi = jb * ncp, min(nbp, (jb + 1) * ncp)
            Bl = np.empty((jp_hi - jp_lo) * K * NR if local else 1, dtype=C.dtype)
            if local:
                for jp in range(jp_lo, jp_hi):
                    _pack_b(B, True, Bl, (jp - jp_lo) * K * NR, jp * NR, 0, K, N, NR)
            for kb in range(nkb):
                pc = kb * kcmax
                kc = min(kcmax, K - pc)
                if ip_hi == nap and M % MR:
                    _pack_a(A, ta, Ae, (nap - 1) * MR, pc, kc, M)
                for jp in range(jp_lo, jp_hi):
                    j0 = jp * NR
                    nr = min(NR, N - j0)
                    if local:
                        bsrc, bo, rsb = Bl, (jp - jp_lo) * K * NR + pc * NR, NR
                    elif tb:
                        bsrc, bo, rsb = Bp, jp * K * NR + pc * NR, NR
                    elif nr < NR:
                        _pack_b(B, False, Be, 0, j0, pc, kc, N, NR)
                        bsrc, bo, rsb = Be, 0, NR
                    else:
                        bsrc, bo, rsb = Bf, pc * N + j0, N
                    for ip in range(ip_lo, ip_hi):
                        i0 = ip * MR
                        mr = min(MR, M - i0)
                        if mr == MR and nr == NR:  # full tile: accumulate in C itself
                            init = 1 if kb > 0 or accum else (2 if has_bias else 0)
                            last = kb == nkb - 1
                            if last and dgrad and dcode == RELU:  # mask (+ sums) in registers
                                _micro_tile_c(Af, i0 * rsa + pc * csa, rsa, csa, bsrc, bo, rsb,
                                              kc, Cf, i0 * N + j0, N, init, bias, j0, 2, Zf,
                                              Pf, ib * N + j0 if want_gb else -1)
                                continue
                            _micro_tile_c(Af, i0 * rsa + pc * csa, rsa, csa, bsrc, bo, rsb, kc,
                                          Cf, i0 * N + j0, N, init, bias, j0,
                                          1 if last and code == RELU else 0, Of, Pf, -1)
                            if last and code != LINEAR and code != RELU:
                                _act_tile(C, i0, j0, NR, code, alpha, Aout, one)
                            if last and dgrad:
                                _dgrad_tile(C, i0, j0, MR, NR, dcode, Zx, Ax, alpha, one, part,
                                            ib, want_gb)
                            continue
                        if mr < MR:
                            _micro_tile(Ae, 0, 1, MR, bsrc, bo, rsb, kc, tile)
                        else:
                            _micro_tile(Af, i0 * rsa + pc * csa, rsa, csa, bsrc, bo, rsb, kc,
                                        tile)
                        _write_tile(C, tile, i0, j0, mr, nr, NR, kb == 0 and not accum,
                                    kb == nkb - 1, bias, has_bias, code, alpha, Aout, one)
                        if kb == nkb - 1 and dgrad:
                            _dgrad_tile(C, i0, j0, mr, nr, dcode, Zx, Ax, alpha, one, part, ib,
                                        want_gb)
    if dgrad and want_gb:
        for j in range(N):
            t = 0.0  # float64 across the row blocks
            for r in range(part.shape[0]):
                t += part[r, j]
            gb[j] = t
    if K == 0 and not accum:  # empty sum: C = bias (or 0), still through the epilogue
        z = np.zeros(MR * NR, dtype=C.dtype)
        for i0 in range(0, M, MR):
            for j0 in range(0, N, NR):
                _write_tile(C, z, i0, j0, min(MR, M - i0), min(NR, N - j0), NR, True, True,
                            bias, has_bias, code, alpha, Aout, one)
        if dgrad and want_gb:
            gb[:] = 0
    return C


@njit(inline="always", **_OPTS)
def _dgrad_tile(C, i0, j0, mr, nr, code, Z, A, alpha, one, part, ib, want_gb):
    """C = C * f'(Z, A) over one mr x nr tile (just written by this core: in L1), adding
    its column sums into part[ib] (ReLU: a branch-free loop that vectorizes)."""
    zero = one - one
    for i in range(mr):
        cr = C[i0 + i, j0:j0 + nr]
        zr = Z[i0 + i, j0:j0 + nr]
        if code == RELU:
            for j in range(nr):
                cr[j] = cr[j] if zr[j] > zero else zero
        else:
            ar = A[i0 + i, j0:j0 + nr]
            for j in range(nr):
                cr[j] = _dact(code, zr[j], ar[j], cr[j], alpha, one)
        if want_gb:
            pr = part[ib, j0:j0 + nr]
            for j in range(nr):
                pr[j] += cr[j]


@njit(inline="always", **_OPTS)
def _act_tile(C, i0, j0, NR, code, alpha, Aout, one):
    """Aout = f(C) over one full MR x NR tile (activations without a vector epilogue)."""
    for i in range(MR):
        for j in range(NR):
            Aout[i0 + i, j0 + j] = _act(code, C[i0 + i, j0 + j], alpha, one)


@njit(inline="always", **_OPTS)
def _write_tile(C, tile, i0, j0, mr, nr, NR, first, last, bias, has_bias, code, alpha, Aout,
                one):
    for i in range(mr):
        r = i * NR
        if not first:
            for j in range(nr):
                tile[r + j] += C[i0 + i, j0 + j]
        if last:
            if has_bias:
                for j in range(nr):
                    tile[r + j] += bias[j0 + j]
            if code != LINEAR:
                for j in range(nr):
                    Aout[i0 + i, j0 + j] = _act(code, tile[r + j], alpha, one)
        for j in range(nr):
            C[i0 + i, j0 + j] = tile[r + j]


@njit(parallel=True, **_OPTS)
def gemm_narrow(A, B, C, ta, tb, bias, has_bias, code, alpha, Aout, one, accum):
    """C = op(A) @ op(B) (+ bias), Aout = f(C), for C with N <= 16 columns and K >= 1
    (``accum``: C += op(A) @ op(B), as ``gemm``).

    op(B) (K x N) is packed once into K rows of 16 (zero padded: a few KB); op(A) is read in
    place through strides (A or A^T alike), 12 rows per task; the last, partial row block is
    packed. The write-back applies bias and activation (as ``gemm``)."""
    if ta:
        K, M = A.shape
    else:
        M, K = A.shape
    N = C.shape[1]
    Wp = np.zeros(K * NRN, dtype=C.dtype)
    for k in range(K):
        for j in range(N):
            Wp[k * NRN + j] = B[j, k] if tb else B[k, j]
    Af = A.reshape(A.size)
    rsa, csa = (1, M) if ta else (K, 1)
    nblk = (M + MRN - 1) // MRN
    for t in prange(nblk):
        tile = np.empty(MRN * NRN, dtype=C.dtype)
        i0 = t * MRN
        mr = min(MRN, M - i0)
        if mr == MRN:
            _micro_narrow(Af, i0 * rsa, rsa, csa, Wp, K, tile)
        else:  # pack the partial rows (zero padded) so the kernel reads only valid memory
            Ae = np.zeros(MRN * K, dtype=C.dtype)
            for k in range(K):
                for i in range(mr):
                    Ae[k * MRN + i] = A[k, i0 + i] if ta else A[i0 + i, k]
            _micro_narrow(Ae, 0, 1, MRN, Wp, K, tile)
        _write_tile(C, tile, i0, 0, mr, N, NRN, not accum, True, bias, has_bias, code, alpha,
                    Aout, one)
    return C


# ----------------------------------------------------------------------------- elementwise
# Flat kernels take 1-D contiguous arrays (the backend passes reshape(-1) views).
@njit(parallel=True, **_OPTS)
def act_flat(code, z, out, alpha, one):
    """out = f(z) elementwise (every activation but softmax)."""
    for i in prange(z.size):
        out[i] = _act(code, z[i], alpha, one)


@njit(parallel=True, **_OPTS)
def dact_flat(code, z, a, g, out, alpha, one):
    """out = g * f'(z) elementwise (every activation but softmax)."""
    if code == RELU:  # the common case as its own branch-free loop (vectorizes: ~5x)
        zero = one - one
        for i in prange(g.size):
            out[i] = g[i] if z[i] > zero else zero
    else:
        for i in prange(g.size):
            out[i] = _dact(code, z[i], a[i], g[i], alpha, one)


@njit(parallel=True, **_OPTS)
def softmax_rows(z, out):
    """out_i = e^(z_i - max z_i) / sum e^(z_i - max z_i), row by row."""
    for r in prange(z.shape[0]):
        mx = z[r, 0]
        for j in range(1, z.shape[1]):
            mx = max(mx, z[r, j])
        s = 0.0
        for j in range(z.shape[1]):
            e = math.exp(z[r, j] - mx)
            out[r, j] = e
            s += e
        inv = 1.0 / s
        for j in range(z.shape[1]):
            out[r, j] = out[r, j] * inv


@njit(parallel=True, **_OPTS)
def softmax_grad_rows(a, g, out):
    """out_i = a_i * (g_i - sum_j g_j a_j), row by row (the softmax Jacobian-vector product)."""
    for r in prange(a.shape[0]):
        s = 0.0
        for j in range(a.shape[1]):
            s += g[r, j] * a[r, j]
        for j in range(a.shape[1]):
            out[r, j] = a[r, j] * (g[r, j] - s)


@njit(parallel=True, **_OPTS)
def bias_add(z, b, out):
    """out = z + b (b broadcast over rows); out may be z."""
    for r in prange(z.shape[0]):
        for j in range(z.shape[1]):
            out[r, j] = z[r, j] + b[j]


@njit(parallel=True, fastmath=FM, **_OPTS)
def sum_rows(x, out):
    """out_j = sum_i x_ij, accumulated in float64 over column blocks (one block per task)."""
    m, n = x.shape
    nblk = (n + 63) // 64
    for t in prange(nblk):
        j0 = t * 64
        j1 = min(n, j0 + 64)
        acc = np.zeros(64)
        for i in range(m):
            for j in range(j0, j1):
                acc[j - j0] += x[i, j]
        for j in range(j0, j1):
            out[j] = acc[j - j0]


@njit(parallel=True, fastmath=FM, **_OPTS)
def gemm_tiny_out(A, B, C, ta, tb, nchunks):
    """C = op(A) op(B) for a tiny C (M*N <= 16) and a long K, e.g. the 1e6-element inner
    product: tiles of C would waste almost all their work, so split K into ``nchunks`` tasks,
    each summing its slice with 4 independent accumulators, then add the partial sums."""
    M, N = C.shape
    K = A.shape[0] if ta else A.shape[1]
    partial = np.zeros((nchunks, M, N))
    step = (K + nchunks - 1) // nchunks
    for c in prange(nchunks):
        k0 = c * step
        k1 = min(K, k0 + step)
        for i in range(M):
            for j in range(N):
                s0 = 0.0
                s1 = 0.0
                s2 = 0.0
                s3 = 0.0
                k = k0
                while k + 4 <= k1:
                    if ta:
                        a0, a1, a2, a3 = A[k, i], A[k + 1, i], A[k + 2, i], A[k + 3, i]
                    else:
                        a0, a1, a2, a3 = A[i, k], A[i, k + 1], A[i, k + 2], A[i, k + 3]
                    if tb:
                        b0, b1, b2, b3 = B[j, k], B[j, k + 1], B[j, k + 2], B[j, k + 3]
                    else:
                        b0, b1, b2, b3 = B[k, j], B[k + 1, j], B[k + 2, j], B[k + 3, j]
                    s0 += a0 * b0
                    s1 += a1 * b1
                    s2 += a2 * b2
                    s3 += a3 * b3
                    k += 4
                while k < k1:
                    s0 += (A[k, i] if ta else A[i, k]) * (B[j, k] if tb else B[k, j])
                    k += 1
                partial[c, i, j] = (s0 + s1) + (s2 + s3)
    for i in range(M):
        for j in range(N):
            t = 0.0
            for c in range(nchunks):
                t += partial[c, i, j]
            C[i, j] = t


@njit(parallel=True, fastmath=FM, **_OPTS)
def axpy(alpha, x, y):
    """y += alpha * x over flat buffers."""
    for i in prange(y.size):
        y[i] += alpha * x[i]


@njit(parallel=True, **_OPTS)
def scale(alpha, x):
    """x *= alpha over a flat buffer."""
    for i in prange(x.size):
        x[i] *= alpha


@njit(parallel=True, **_OPTS)
def take_rows(x, idx, out):
    """out[r] = x[idx[r]] (mini-batch gather)."""
    n = x.shape[1]
    for r in prange(idx.size):
        src = idx[r]
        for j in range(n):
            out[r, j] = x[src, j]


# ----------------------------------------------------------------------------- fused backward
@njit(parallel=True, fastmath=FM, **_OPTS)
def delta_and_bias_grad(code, z, a, g, delta, gb, has_bias, alpha, one):
    """delta = g * f'(z) and gb_j = sum_i delta_ij in one pass over column blocks."""
    m, n = g.shape
    nblk = (n + 63) // 64
    for t in prange(nblk):
        j0 = t * 64
        j1 = min(n, j0 + 64)
        w = j1 - j0
        acc = np.zeros(64)
        if code == RELU:  # the common case as its own branch-free loop (vectorizes)
            zero = one - one
            for i in range(m):
                zr, gr, dr = z[i, j0:j1], g[i, j0:j1], delta[i, j0:j1]
                for j in range(w):
                    d = gr[j] if zr[j] > zero else zero
                    dr[j] = d
                    acc[j] += d
        else:
            for i in range(m):
                for j in range(j0, j1):
                    d = _dact(code, z[i, j], a[i, j], g[i, j], alpha, one)
                    delta[i, j] = d
                    acc[j - j0] += d
        if has_bias:
            for j in range(j0, j1):
                gb[j] = acc[j - j0]


# ----------------------------------------------------------------------------- losses
@njit(parallel=True, **_OPTS)
def softmax_xent_ids(z, labels, grad):
    """Fused softmax + cross-entropy with integer labels: returns the batch-mean loss and
    writes grad = (softmax(z) - onehot) / M, one pass per row (log-sum-exp after the max)."""
    m, c = z.shape
    total = 0.0
    inv_m = 1.0 / m
    for r in prange(m):
        mx = z[r, 0]
        for j in range(1, c):
            mx = max(mx, z[r, j])
        s = 0.0
        for j in range(c):
            e = math.exp(z[r, j] - mx)
            grad[r, j] = e
            s += e
        y = labels[r]
        total += mx + math.log(s) - z[r, y]
        k = inv_m / s
        for j in range(c):
            grad[r, j] = grad[r, j] * k
        grad[r, y] -= inv_m
    return total * inv_m


@njit(inline="always", **_OPTS)
def _xent_row(z, y, grad, r, inv_m, s):
    """Row r of softmax cross-entropy with probability targets y: grad[r] = s (softmax(z_r) -
    y_r) / M (``inv_m`` = 1 / M); returns the row's loss logsumexp(z_r) sum(y_r) - y_r . z_r
    (log-sum-exp after the row maximum)."""
    c = z.shape[1]
    mx = z[r, 0]
    for j in range(1, c):
        mx = max(mx, z[r, j])
    se = 0.0
    ysum = 0.0
    yz = 0.0
    for j in range(c):
        e = math.exp(z[r, j] - mx)
        grad[r, j] = e
        se += e
        ysum += y[r, j]
        yz += y[r, j] * z[r, j]
    k = inv_m / se
    for j in range(c):
        grad[r, j] = s * (grad[r, j] * k - y[r, j] * inv_m)
    return (mx + math.log(se)) * ysum - yz


@njit(parallel=True, **_OPTS)
def softmax_xent_probs(z, y, grad):
    """As softmax_xent_ids with one-hot / probability rows y (M, C)."""
    m = z.shape[0]
    total = 0.0
    inv_m = 1.0 / m
    for r in prange(m):
        total += _xent_row(z, y, grad, r, inv_m, 1.0)
    return total * inv_m


@njit(parallel=True, **_OPTS)
def mse(o, t, grad):
    """Returns mean_i 1/2 sum_j (o - t)^2; grad = (o - t) / M."""
    m, n = o.shape
    total = 0.0
    inv_m = 1.0 / m
    for r in prange(m):
        for j in range(n):
            d = o[r, j] - t[r, j]
            total += 0.5 * d * d
            grad[r, j] = d * inv_m
    return total * inv_m


@njit(parallel=True, **_OPTS)
def bce(o, t, grad, eps):
    """Binary cross-entropy (mean over all elements) with o clipped to [eps, 1 - eps]."""
    m, n = o.shape
    total = 0.0
    inv = 1.0 / (m * n)
    for r in prange(m):
        for j in range(n):
            oc = min(max(o[r, j], eps), 1.0 - eps)
            tt = t[r, j]
            total -= tt * math.log(oc) + (1.0 - tt) * math.log1p(-oc)
            grad[r, j] = (oc - tt) / (oc * (1.0 - oc)) * inv
    return total * inv


# ----------------------------------------------------------------------------- optimizers
# One parallel loop over the flat buffers per call; scalars arrive in the buffers' dtype.
@njit(parallel=True, fastmath=FM, **_OPTS)
def sgd(p, g, lr, wd):
    """p -= lr (g + wd p); contiguous halves (a 256-byte round-robin matching the GEMM's
    column panels measured 97-137 us instead of 58 at 270k parameters: it defeats the
    hardware prefetchers, and the W it leaves in L2 bought nothing on a quiet machine).
    Vectorized (zmm FMAs), 16-18 us at 270k float32 on 2 threads when p is not shared; in a
    training step ~50 us because the forward GEMM leaves W's lines in *both* cores' caches
    and every store here must first invalidate the other core's copy (after a forward over
    W: a pure read pass 7 -> 11 us, a pure write pass 17 -> 42 us; PREFETCHW 1-4 KB ahead
    did not help; see bench/numba_notes.md, pass 4)."""
    for i in prange(p.size):
        p[i] -= lr * (g[i] + wd * p[i])


@njit(parallel=True, fastmath=FM, **_OPTS)
def momentum(p, g, buf, lr, mom, wd, nesterov):
    for i in prange(p.size):
        gi = g[i] + wd * p[i]
        b = mom * buf[i] + gi
        buf[i] = b
        p[i] -= lr * (gi + mom * b if nesterov else b)


@njit(parallel=True, fastmath=FM, **_OPTS)
def adagrad(p, g, sum_sq, lr, eps, wd):
    for i in prange(p.size):
        gi = g[i] + wd * p[i]
        s = sum_sq[i] + gi * gi
        sum_sq[i] = s
        p[i] -= lr * gi / (math.sqrt(s) + eps)


@njit(parallel=True, fastmath=FM, **_OPTS)
def adadelta(p, g, sq, acc, lr, rho, eps, wd, one):
    for i in prange(p.size):
        gi = g[i] + wd * p[i]
        s = rho * sq[i] + (one - rho) * gi * gi
        sq[i] = s
        d = math.sqrt(acc[i] + eps) / math.sqrt(s + eps) * gi
        acc[i] = rho * acc[i] + (one - rho) * d * d
        p[i] -= lr * d


@njit(parallel=True, fastmath=FM, **_OPTS)
def rmsprop(p, g, sq, lr, rho, eps, wd, one):
    for i in prange(p.size):
        gi = g[i] + wd * p[i]
        s = rho * sq[i] + (one - rho) * gi * gi
        sq[i] = s
        p[i] -= lr * gi / (math.sqrt(s) + eps)


@njit(parallel=True, fastmath=FM, **_OPTS)
def adam(p, g, m, v, lr, b1, b2, bc1, bc2, eps, wd, decoupled, one):
    """bc1 = 1 - b1^step, bc2 = 1 - b2^step (computed by the caller)."""
    for i in prange(p.size):
        pi = p[i]
        if decoupled:
            pi = pi * (one - lr * wd)
            gi = g[i]
        else:
            gi = g[i] + wd * pi
        mi = b1 * m[i] + (one - b1) * gi
        vi = b2 * v[i] + (one - b2) * gi * gi
        m[i] = mi
        v[i] = vi
        p[i] = pi - lr * (mi / bc1) / (math.sqrt(vi / bc2) + eps)


# ----------------------------------------------------------------------------- serial twins
# A parallel region costs a fork/join (microseconds when the cores are idle, far more on a
# busy machine). Below these sizes the backend calls a serial twin of the same kernel (the
# same source compiled without parallel=True; prange then runs as range).
SERIAL_ELEMENTS = 1 << 15  # elementwise / row kernels: fewer elements than this run serially
SERIAL_MACS = 1 << 20  # GEMM: fewer multiply-adds (M*N*K) than this run serially
# gemm_narrow (N <= 16) pays for its fork/join sooner (2 threads, 256x256x10: forward 27 -> 21
# us, A^T B 26 -> 18; 128x256x10 13 -> 12 / 15 -> 13; 64x256x10 about even)
SERIAL_MACS_NARROW = 1 << 18

PARALLEL_KERNELS = ("gemm", "gemm_narrow", "act_flat", "dact_flat", "softmax_rows",
                    "softmax_grad_rows", "bias_add", "sum_rows", "axpy", "scale", "take_rows",
                    "delta_and_bias_grad", "softmax_xent_ids", "softmax_xent_probs", "mse",
                    "bce", "sgd", "momentum", "adagrad", "adadelta", "rmsprop", "adam")


def _serial_twin(dispatcher):
    py = dispatcher.py_func
    fn = _pytypes.FunctionType(py.__code__, py.__globals__, py.__name__ + "_serial",
                               py.__defaults__, py.__closure__)
    fn.__qualname__ = py.__qualname__ + "_serial"  # its own on-disk cache entry
    fn.__doc__ = py.__doc__
    flags = {k: v for k, v in dispatcher.targetoptions.items()
             if k not in ("parallel", "nopython")}
    return njit(cache=True, **flags)(fn)


SERIAL = {name: _serial_twin(globals()[name]) for name in PARALLEL_KERNELS}


# ----------------------------------------------------------------------------- the whole step
# A plain-SGD training step of an MLP as ONE compiled call (the numba counterpart of the cuda
# backend's recorded step): no Python between the ~12 kernels of a step, and no separate
# update pass. The backward pass carries deltas pre-scaled by -lr, so each weight gradient
# GEMM adds x^T (-lr delta) straight into W (``accum``) and each bias gets its column sums:
# the gradient is never written out and the update never re-reads W (after the forward GEMM
# both cores hold W's lines, so a separate update pass pays a coherence miss per line).
LOSS_XENT, LOSS_MSE = 0, 1
_gemm_serial = SERIAL["gemm"]
_gemm_narrow_serial = SERIAL["gemm_narrow"]
_delta_serial = SERIAL["delta_and_bias_grad"]


@njit(**_OPTS)
def gemm_auto(A, B, C, ta, tb, bias, has_bias, code, alpha, Aout, one, nthreads, accum):
    """The GEMM for this size (no derivative epilogue): ``gemm_narrow`` for outputs of at
    most 16 columns (the 64-column tile would waste most of its work), else ``gemm_wide``;
    each as its serial twin below its threshold. The backend's ``_gemm`` and the fused step
    both pick kernels here."""
    if ta:
        K, M = A.shape
    else:
        M, K = A.shape
    N = C.shape[1]
    macs = M * N * K
    if N <= NRN and K > 0:
        if macs < SERIAL_MACS_NARROW:
            _gemm_narrow_serial(A, B, C, ta, tb, bias, has_bias, code, alpha, Aout, one, accum)
        else:
            gemm_narrow(A, B, C, ta, tb, bias, has_bias, code, alpha, Aout, one, accum)
    else:
        gemm_wide(A, B, C, ta, tb, bias, has_bias, code, alpha, Aout, one, nthreads, accum,
                   code - code - 1, C, C, bias, has_bias)


@njit(**_OPTS)
def gemm_wide(A, B, C, ta, tb, bias, has_bias, code, alpha, Aout, one, nthreads, accum,
               dcode, Zx, Ax, gb, want_gb):
    """``gemm`` (which hands its tasks out itself: atomic counter, one prange step per
    thread), or its serial twin below SERIAL_MACS multiply-adds (no fork/join)."""
    if ta:
        K, M = A.shape
    else:
        M, K = A.shape
    if M * C.shape[1] * K < SERIAL_MACS:
        _gemm_serial(A, B, C, ta, tb, bias, has_bias, code, alpha, Aout, one, nthreads, accum,
                     dcode, Zx, Ax, gb, want_gb)
    else:
        gemm(A, B, C, ta, tb, bias, has_bias, code, alpha, Aout, one, nthreads, accum, dcode,
             Zx, Ax, gb, want_gb)


@njit(**_OPTS)
def _scaled_loss_grad(kind, o, t, g, s):
    """Batch-mean loss of output o (M, N) against targets t; g = s * d loss / d o.
    kind LOSS_XENT: o are logits, softmax cross-entropy with probability rows t (as
    ``softmax_xent_probs``); LOSS_MSE: 1/2 sum (o - t)^2 (as ``mse``)."""
    m, c = o.shape
    total = 0.0
    inv_m = 1.0 / m
    for r in range(m):
        if kind == LOSS_XENT:
            total += _xent_row(o, t, g, r, inv_m, s)
        else:
            for j in range(c):
                d = o[r, j] - t[r, j]
                total += 0.5 * d * d
                g[r, j] = s * (d * inv_m)
    return total * inv_m


@njit(**_OPTS)
def _delta_auto(code, z, a, g, delta, gb, has_bias, alpha, one):
    if g.size < SERIAL_ELEMENTS:
        _delta_serial(code, z, a, g, delta, gb, has_bias, alpha, one)
    else:
        delta_and_bias_grad(code, z, a, g, delta, gb, has_bias, alpha, one)


@njit(fastmath=FM, **_OPTS)  # acc += w * loss contracts to one FMA, as the axpy kernel's
def sgd_step(P, x, t, lr, sizes, w_off, b_off, codes, alphas, loss_kind, Zb, Ab, Db, Gb,
             loss_out, one, nthreads, batch, weights, acc):
    """SGD steps over the rows of x (N, n_0), targets t (N, n_L), ``batch`` rows at a time
    (the last batch may be shorter): one step (``_sgd_one``) per batch, in order. After
    batch i: loss_out[0] = its loss before its update, and when ``acc`` has an element
    acc[0] += weights[i] * loss (an epoch's running loss: weights[i] = rows_i / N). One call
    for a whole epoch: no Python between the steps. Workspace for ``batch`` rows."""
    n0 = sizes[0]
    nL = sizes[sizes.size - 1]
    n = x.shape[0]
    xf = x.reshape(x.size)
    tf = t.reshape(t.size)
    i = 0
    for r0 in range(0, n, batch):
        m = min(batch, n - r0)
        _sgd_one(P, xf[r0 * n0:(r0 + m) * n0].reshape((m, n0)),
                 tf[r0 * nL:(r0 + m) * nL].reshape((m, nL)), lr, sizes, w_off, b_off, codes,
                 alphas, loss_kind, Zb, Ab, Db, Gb, loss_out, one, nthreads)
        if acc.size:
            acc[0] += weights[i] * loss_out[0]
        i += 1


@njit(**_OPTS)
def _sgd_one(P, x, t, lr, sizes, w_off, b_off, codes, alphas, loss_kind, Zb, Ab, Db, Gb,
             loss_out, one, nthreads):
    """One SGD step p -= lr * d loss / d p of an MLP held in the flat buffer P (the MLP layout:
    per layer W (n_l, n_{l+1}) at w_off[l], b at b_off[l] or -1 without biases), on the batch
    x (M, n_0) with targets t (M, n_L); writes the loss before the update to loss_out[0].

    Layer l computes z = a_{l-1} W_l + b_l, a_l = f_l(z) (``codes[l]``, ``alphas[l]``); the
    loss is ``loss_kind`` on the output a_L (LOSS_XENT: a_L are logits, codes[-1] LINEAR).
    Workspace: Zb, Ab >= M * sum(n_1..n_L) (z and a of every layer), Db >= 3 M max(n_l)
    (two deltas, ping-pong, and the incoming gradient), Gb >= 2 max(n_l) (bias gradients);
    ``one``: 1 in P's dtype."""
    L = sizes.size - 1
    m = x.shape[0]
    s = -lr
    # flags and codes as run-time values: a literal argument (False, LINEAR) would make numba
    # compile the GEMMs once more per distinct literal (+3 variants each, ~10 s of compile)
    no = m < 0
    yes = not no
    lin = codes[0] * 0 + LINEAR
    nmax = 0
    for l in range(1, L + 1):
        nmax = max(nmax, sizes[l])
    # forward: z and a of every layer kept for the backward pass
    off = 0
    a_prev = x
    for l in range(L):
        k, n = sizes[l], sizes[l + 1]
        W = P[w_off[l]:w_off[l] + k * n].reshape((k, n))
        has_b = b_off[l] >= 0
        bias = P[b_off[l]:b_off[l] + n] if has_b else P[0:1]
        z = Zb[off:off + m * n].reshape((m, n))
        a = z if codes[l] == LINEAR else Ab[off:off + m * n].reshape((m, n))
        gemm_auto(a_prev, W, z, no, no, bias, has_b, codes[l], alphas[l], a, one, nthreads,
                   no)
        a_prev = a
        off += m * n
    # loss, and the top layer's delta (x -lr) with its bias gradient
    nL = sizes[L]
    off -= m * nL
    zL = Zb[off:off + m * nL].reshape((m, nL))
    aL = zL if codes[L - 1] == LINEAR else Ab[off:off + m * nL].reshape((m, nL))
    # gradients w.r.t. a layer's output land in the scratch slot 2 and its delta in slot 0/1:
    # delta_and_bias_grad in place (g is delta) does not vectorize (256 x 256: 93 vs 17 us)
    scratch = Db[2 * m * nmax:2 * m * nmax + m * nL].reshape((m, nL))
    d = Db[0:m * nL].reshape((m, nL))
    loss_out[0] = _scaled_loss_grad(loss_kind, aL, t, scratch, s)
    gb = Gb[0:nL]
    _delta_auto(codes[L - 1], zL, aL, scratch, d, gb, yes, alphas[L - 1], one)
    # backward, top layer first: the delta of the layer below (through the OLD W_l), then
    # W_l += a_{l-1}^T d and b_l += colsum(d)
    turn = 0
    for l in range(L - 1, -1, -1):
        k, n = sizes[l], sizes[l + 1]
        W = P[w_off[l]:w_off[l] + k * n].reshape((k, n))
        nxt = 1 - turn
        a_in = x
        dn = d
        gbn = gb
        if l > 0:  # the layer below's delta (slot nxt) and bias gradient
            off -= m * k
            zb = Zb[off:off + m * k].reshape((m, k))
            a_in = zb if codes[l - 1] == LINEAR else Ab[off:off + m * k].reshape((m, k))
            dn = Db[nxt * m * nmax:nxt * m * nmax + m * k].reshape((m, k))
            gbn = Gb[nxt * nmax:nxt * nmax + k]
            if k > NRN:  # f' and the bias sums in the GEMM's epilogue, tile by tile
                gemm_wide(d, W, dn, no, yes, gbn, no, lin, alphas[l - 1], dn, one, nthreads,
                           no, codes[l - 1], zb, a_in, gbn, yes)
            else:  # narrow: the GEMM, then one pass (into another buffer: see above)
                gx = Db[2 * m * nmax:2 * m * nmax + m * k].reshape((m, k))
                gemm_auto(d, W, gx, no, yes, P[0:1], no, lin, alphas[l], gx, one, nthreads,
                           no)
                _delta_auto(codes[l - 1], zb, a_in, gx, dn, gbn, yes, alphas[l - 1], one)
        gemm_auto(a_in, d, W, yes, no, P[0:1], no, lin, alphas[l], W, one, nthreads, yes)
        if b_off[l] >= 0:
            bo = b_off[l]
            for j in range(n):
                P[bo + j] += gb[j]
        d = dn
        gb = gbn
        turn = nxt
