"""numba: the many-cores rung. Every op is one of our own ``@njit(parallel=True)`` kernels.

Arrays are NumPy arrays (as on the numpy backend), so crossing to and from the host is free;
the compute is ours: a BLIS-style packed, register-blocked parallel GEMM (no ``np.dot`` inside
numba, which would only re-enter BLAS), the bias and activation fused into the GEMM's
write-back, the activation derivative and the bias gradient fused into one pass, a one-pass
softmax cross-entropy, and optimizer updates as one parallel loop over a flat buffer.
The kernels live in ``_numba_kernels`` (imported on first use: ``import mlpaccel`` never
imports numba). They are compiled on first call and cached on disk (``cache=True``); the
first-call time is measured by :meth:`NumbaBackend.warm_up` and shown in :meth:`info`.
"""

from __future__ import annotations

import importlib.util
import time

import numpy as np

from .. import activations as _act
from .base import Backend, _below, check_dtype, host_row_indices
from .host_arrays import HostArrays
from .reference import bce_eps

#: outputs this narrow (or narrower) use the 12 x 16 tile kernel (``gemm_narrow``; the
#: kernels' NRN, repeated here because this module must not import numba)
NARROW_N = 16
TINY_OUT = 16  # outputs (M*N) at most this small, with K at least TINY_OUT_MIN_K, split K
TINY_OUT_MIN_K = 1 << 14


def _kernels():
    from . import _numba_kernels

    return _numba_kernels


def _flat(a):
    """A 1-D view of a C-contiguous array (the flat kernels need one)."""
    if not a.flags.c_contiguous:
        raise ValueError("numba backend: arrays must be C-contiguous (use asarray/zeros/view)")
    return a.reshape(-1)


def _c(a, dtype=None):
    return np.ascontiguousarray(a, dtype=dtype)


class NumbaBackend(HostArrays, Backend):
    name = "numba"
    rung = ("Many cores: every core runs our own compiled, vectorised kernels, and fusing "
            "ops into one pass saves the memory traffic between them.")

    def __init__(self, fused_step: bool = True) -> None:
        """``fused_step`` (default True): ``MLP.fit``'s plain-SGD steps run as one compiled
        call with the update fused into the weight-gradient GEMMs (``numba_step``); False:
        always the per-op step (forward, loss, backward, ``sgd_update``)."""
        super().__init__()
        self.fused_step = bool(fused_step)
        self._k = _kernels()
        self._jit_seconds: float | None = None

    @classmethod
    def _probe(cls):
        if importlib.util.find_spec("numba") is None:
            return "numba is not installed: pip install 'mlpaccel[numba]'"
        return None

    # ------------------------------------------------------------------ identity
    def info(self) -> dict:
        import llvmlite
        import numba

        info = {"backend": self.name, "device": "cpu", "numba": numba.__version__,
                "llvmlite": llvmlite.__version__, "threads": numba.get_num_threads()}
        try:
            info["threading_layer"] = numba.threading_layer()
        except ValueError:  # no parallel kernel has run yet
            info["threading_layer"] = numba.config.THREADING_LAYER
        try:
            import llvmlite.binding as llvm

            feats = llvm.get_host_cpu_features()
            info["cpu"] = llvm.get_host_cpu_name()
            info["simd"] = " ".join(f for f in ("avx2", "fma", "avx512f", "avx512bw")
                                    if feats.get(f))
        except Exception:  # noqa: BLE001 - optional detail
            pass
        info["gemm"] = (f"register-blocked {self._k.MR} x {self._k.NV}-vector micro-kernel, "
                        f"K blocks of {self._k.KC}")
        info["jit_seconds"] = self._jit_seconds
        info["fused_step"] = ("on: plain-SGD steps of MLPs (cross_entropy or mse) run as one "
                              "compiled call, the update inside the weight-gradient GEMMs"
                              if self.fused_step else "off (per-op steps)")
        return info

    def warm_up(self, dtypes=(np.float32,)) -> float:
        """Run the training-path kernels once per dtype, at a small size (serial twins) and
        at one above the parallel thresholds, and the fused training step, compiling them or
        loading them from numba's disk cache. Returns the seconds taken, also shown as
        ``info()["jit_seconds"]``."""
        t0 = time.perf_counter()
        for dt in dtypes:
            for m, k, n in ((3, 4, 5), (256, 64, 128)):  # serial twins, then parallel kernels
                x = self.asarray(np.ones((m, k)), dt)
                W = self.asarray(np.ones((k, n)), dt)
                b = self.zeros(n, dt)
                z, a = self.linear_forward(x, W, b, "relu")
                self.activation("sigmoid", z)
                self.activation("softmax", z)
                _, g = self.softmax_cross_entropy(a, np.zeros(m, np.int64))
                self.linear_backward(x, W, z, a, g, "relu")
                self.take_rows(x, np.arange(m))
                self.sgd_update(self.zeros(m * n, dt), self.zeros(m * n, dt), 0.1)
            # the fused training step (one compiled function per dtype, whatever the shapes)
            from .numba_step import NumbaSGDStep

            step = NumbaSGDStep(self, [3, 20, 2], ["relu", "linear"], "cross_entropy", True, dt,
                                batch=2)
            step.step(np.zeros(step.n_params, dt), np.ones((2, 3), dt), np.ones((2, 2), dt), 0.1)
        self._jit_seconds = round(time.perf_counter() - t0, 3)
        return self._jit_seconds

    def _kern(self, name, work):
        """The parallel kernel ``name``, or its serial twin when ``work`` (elements) is too
        small to pay for a parallel region's fork/join."""
        if work < self._k.SERIAL_ELEMENTS:
            return self._k.SERIAL[name]
        return getattr(self._k, name)

    # ------------------------------------------------------------------ arrays
    def take_rows(self, x, indices, out=None):
        idx = host_row_indices(indices, x.shape[0])
        if out is None:
            out = np.empty((idx.size, x.shape[1]), x.dtype)
        self._kern("take_rows", out.size)(_c(x), idx, out)
        return out

    # ------------------------------------------------------------------ matmul
    def _gemm(self, a, b, ta, tb, out, bias=None, code=None, alpha=0.0, out_a=None,
              below=None):
        """C = op(a) op(b) (+ bias, a = f(C) for activation ``code``) into ``out``;
        ``below = (code, z, a)``: C = (op(a) op(b)) * f'(z, a) instead (the backward
        epilogue: code LINEAR, no bias, an output wider than NARROW_N)."""
        import numba

        a, b = _c(a), _c(b)
        if a.dtype != b.dtype:
            raise TypeError(f"matmul operands differ in dtype: {a.dtype} and {b.dtype}")
        check_dtype(a.dtype)
        m, k = (a.shape[1], a.shape[0]) if ta else a.shape
        k2, n = (b.shape[1], b.shape[0]) if tb else b.shape
        if k != k2:
            raise ValueError(f"matmul shapes do not match: op(A) is {(m, k)}, op(B) {(k2, n)}")
        out = self._out(out, (m, n), a.dtype)
        code = self._k.LINEAR if code is None else code
        if code != self._k.LINEAR:
            out_a = self._out(out_a, (m, n), a.dtype)
        else:
            out_a = out
        if m == 0 or n == 0:  # nothing to compute (the kernel's task split needs work)
            return out, out_a
        has_bias = bias is not None
        bias = _c(bias, a.dtype) if has_bias else np.zeros(1, a.dtype)
        if has_bias and bias.shape != (n,):
            raise ValueError(f"bias must have shape ({n},), got {bias.shape}")
        one = a.dtype.type(1)
        if m * n <= TINY_OUT and k >= TINY_OUT_MIN_K and not has_bias and code == self._k.LINEAR:
            # an inner product or a few of them: split K instead of tiling C
            self._k.gemm_tiny_out(a, b, out, bool(ta), bool(tb), 8 * numba.get_num_threads())
            return out, out_a
        # kernel choice (narrow tile, serial twin or parallel) by size: gemm_auto/gemm_wide
        args = (a, b, out, bool(ta), bool(tb), bias, has_bias, code, a.dtype.type(alpha),
                out_a, one, numba.get_num_threads(), False)
        if below is None:
            self._k.gemm_auto(*args)
        else:
            dcode, zx, ax = below
            self._k.gemm_wide(*args, dcode, zx, ax, bias, False)
        return out, out_a

    @staticmethod
    def _out(out, shape, dtype):
        if out is None:
            return np.empty(shape, dtype)
        if out.shape != tuple(shape) or out.dtype != dtype or not out.flags.c_contiguous:
            raise ValueError(f"out must be a C-contiguous {dtype} array of shape {shape}, "
                             f"got {out.dtype} {out.shape}")
        return out

    def matmul(self, a, b, transpose_a=False, transpose_b=False, out=None):
        return self._gemm(a, b, transpose_a, transpose_b, out)[0]

    # ------------------------------------------------------------------ elementwise
    def activation(self, name, z, out=None, **params):
        name = _act.canonical(name)
        alpha = _act.resolve_params(name, params).get("alpha", 0.0)
        z = _c(z)
        out = self._out(out, z.shape, z.dtype)
        one = z.dtype.type(1)
        if name == "softmax":
            kern = self._kern("softmax_rows", z.size)
            kern(z.reshape(-1, z.shape[-1]), out.reshape(-1, z.shape[-1]))
        else:
            kern = self._kern("act_flat", z.size)
            kern(self._k.CODES[name], _flat(z), _flat(out), z.dtype.type(alpha),
                 one)
        return out

    def activation_grad(self, name, z, a, grad_out, out=None, **params):
        name = _act.canonical(name)
        alpha = _act.resolve_params(name, params).get("alpha", 0.0)
        g = _c(grad_out)
        out = self._out(out, g.shape, g.dtype)
        z = g if z is None else _c(z, g.dtype)
        a = g if a is None else _c(a, g.dtype)
        if name == "softmax":
            c = g.shape[-1]
            kern = self._kern("softmax_grad_rows", g.size)
            kern(a.reshape(-1, c), g.reshape(-1, c), out.reshape(-1, c))
        else:
            kern = self._kern("dact_flat", g.size)
            kern(self._k.CODES[name], _flat(z), _flat(a), _flat(g), _flat(out),
                 g.dtype.type(alpha), g.dtype.type(1))
        return out

    def bias_add(self, z, b, out=None):
        z = _c(z)
        out = self._out(out, z.shape, z.dtype)
        self._kern("bias_add", z.size)(z, _c(b, z.dtype), out)
        return out

    def sum_rows(self, x, out=None):
        x = _c(x)
        out = self._out(out, (x.shape[1],), x.dtype)
        self._kern("sum_rows", x.size)(x, out)
        return out

    def axpy(self, alpha, x, y):
        self._kern("axpy", y.size)(y.dtype.type(alpha), _flat(_c(x, y.dtype)), _flat(y))
        return y

    def scale(self, alpha, x):
        self._kern("scale", x.size)(x.dtype.type(alpha), _flat(x))
        return x

    # ------------------------------------------------------------------ losses
    def mse(self, output, target):
        o = _c(output)
        grad = np.empty_like(o)
        loss = self._kern("mse", o.size)(o, _c(target, o.dtype).reshape(o.shape), grad)
        return np.asarray(loss, o.dtype), grad

    def binary_cross_entropy(self, output, target):
        o = _c(output)
        grad = np.empty_like(o)
        loss = self._kern("bce", o.size)(o.reshape(o.shape[0], -1), _c(target, o.dtype).reshape(
            o.shape[0], -1), grad.reshape(o.shape[0], -1), bce_eps(o.dtype))
        return np.asarray(loss, o.dtype), grad

    def softmax_cross_entropy(self, logits, labels):
        z = _c(logits)
        m, c = z.shape
        grad = np.empty_like(z)
        labels = np.asarray(labels)
        if labels.ndim == 1:
            if labels.shape[0] != m:
                raise ValueError(f"labels has {labels.shape[0]} entries for {m} rows")
            ids = labels.astype(np.int64, copy=False)
            if m and (ids.min() < 0 or ids.max() >= c):
                raise ValueError(f"labels must be class ids in [0, {c}), got "
                                 f"[{ids.min()}, {ids.max()}]")
            loss = self._kern("softmax_xent_ids", z.size)(z, np.ascontiguousarray(ids), grad)
        else:
            kern = self._kern("softmax_xent_probs", z.size)
            loss = kern(z, _c(labels, z.dtype).reshape(m, c), grad)
        return np.asarray(loss, z.dtype), grad

    # ------------------------------------------------------------------ optimizer updates
    def sgd_update(self, p, g, lr, weight_decay=0.0):
        t = p.dtype.type
        self._kern("sgd", p.size)(_flat(p), _flat(g), t(lr), t(weight_decay))

    def momentum_update(self, p, g, buf, lr, momentum=0.9, weight_decay=0.0, nesterov=False):
        t = p.dtype.type
        kern = self._kern("momentum", p.size)
        kern(_flat(p), _flat(g), _flat(buf), t(lr), t(momentum), t(weight_decay),
             bool(nesterov))

    def adagrad_update(self, p, g, sum_sq, lr, eps=1e-10, weight_decay=0.0):
        t = p.dtype.type
        kern = self._kern("adagrad", p.size)
        kern(_flat(p), _flat(g), _flat(sum_sq), t(lr), t(eps), t(weight_decay))

    def adadelta_update(self, p, g, square_avg, acc_delta, lr=1.0, rho=0.9, eps=1e-6,
                        weight_decay=0.0):
        t = p.dtype.type
        kern = self._kern("adadelta", p.size)
        kern(_flat(p), _flat(g), _flat(square_avg), _flat(acc_delta), t(lr),
             t(rho), t(eps), t(weight_decay), t(1))

    def rmsprop_update(self, p, g, square_avg, lr=0.01, rho=0.99, eps=1e-8, weight_decay=0.0):
        t = p.dtype.type
        self._kern("rmsprop", p.size)(_flat(p), _flat(g), _flat(square_avg), t(lr), t(rho), t(eps),
                        t(weight_decay), t(1))

    def adam_update(self, p, g, m, v, step, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
                    weight_decay=0.0, decoupled=False):
        if step < 1:
            raise ValueError(f"adam step counts from 1, got {step}")
        t = p.dtype.type
        kern = self._kern("adam", p.size)
        kern(_flat(p), _flat(g), _flat(m), _flat(v), t(lr), t(beta1), t(beta2),
             t(1 - beta1**step), t(1 - beta2**step), t(eps), t(weight_decay),
             bool(decoupled), t(1))

    # ------------------------------------------------------------------ fused composites
    def fused_sgd_step(self, model, batch):
        """``numba_step.NumbaSGDStep``: the whole step of ``model`` in one compiled call, the
        update fused into the weight-gradient GEMMs (None for a loss it does not cover)."""
        if not self.fused_step:
            return None
        from .numba_step import NumbaSGDStep

        return NumbaSGDStep.for_model(model, batch)

    def linear_forward(self, x, W, b, activation="linear", out_z=None, out_a=None, **params):
        """z = x @ W + b and a = f(z) in one GEMM: bias and activation are applied in the
        GEMM's write-back while the tile is still in cache (softmax: one extra row pass)."""
        name = _act.canonical(activation)
        alpha = _act.resolve_params(name, params).get("alpha", 0.0)
        if name == "softmax":
            z, _ = self._gemm(x, W, False, False, out_z, bias=b)
            return z, self.activation("softmax", z, out=out_a)
        z, a = self._gemm(x, W, False, False, out_z, bias=b, code=self._k.CODES[name],
                          alpha=alpha, out_a=out_a)
        return z, a

    def linear_backward(self, x, W, z, a, grad_a, activation="linear", need_grad_x=True,
                        has_bias=True, out_grad_W=None, out_grad_b=None, below=None,
                        **params):
        """delta = grad_a * f'(z) and grad_b = sum_rows(delta) in one pass; then
        grad_W = x^T delta and grad_x = delta W^T by the GEMM reading x and W transposed.
        ``below``: as in ``Backend.linear_backward`` (grad_x comes back as the delta of the
        layer below: its derivative applied in the dX GEMM's epilogue when that layer is
        wider than NARROW_N, else in one pass over grad_x)."""
        name = _act.canonical(activation)
        alpha = _act.resolve_params(name, params).get("alpha", 0.0)
        g = _c(grad_a)
        n = g.shape[1]
        grad_b = self._out(out_grad_b, (n,), g.dtype) if has_bias else None
        if name in ("softmax", "linear"):  # linear: delta is grad_a itself, no copy
            delta = g if name == "linear" else self.activation_grad("softmax", z, a, g)
            if has_bias:
                self._kern("sum_rows", delta.size)(delta, grad_b)
        else:
            delta = np.empty_like(g)
            zz = g if z is None else _c(z, g.dtype)
            aa = g if a is None else _c(a, g.dtype)
            gb = grad_b if has_bias else np.empty(n, g.dtype)
            kern = self._kern("delta_and_bias_grad", g.size)
            kern(self._k.CODES[name], zz, aa, g, delta, gb, has_bias,
                 g.dtype.type(alpha), g.dtype.type(1))
        grad_W = self._gemm(x, delta, True, False, out_grad_W)[0]
        if not need_grad_x:
            return None, grad_W, grad_b
        bname, bz, ba, bparams = _below(below) if below is not None else ("linear", None,
                                                                           None, {})
        k = W.shape[0]
        if (bname not in ("linear", "softmax") and k > NARROW_N and delta.shape[1] > 0
                and bz is not None and ba is not None):
            # the layer below's f' in the GEMM's epilogue, on the tile its core just wrote
            shape = (delta.shape[0], k)
            bz = _c(bz, g.dtype)
            ba = _c(ba, g.dtype)
            if bz.shape != shape or ba.shape != shape:
                raise ValueError(f"linear_backward: below's z and a must have shape {shape} "
                                 f"(the layer's input), got {bz.shape} and {ba.shape}")
            balpha = _act.resolve_params(bname, bparams).get("alpha", 0.0)
            grad_x = self._gemm(delta, W, False, True, None, alpha=balpha,
                                below=(self._k.CODES[bname], bz, ba))[0]
            return grad_x, grad_W, grad_b
        grad_x = self._gemm(delta, W, False, True, None)[0]
        if bname != "linear":
            grad_x = self.activation_grad(bname, bz, ba, grad_x,
                                          out=None if bname == "softmax" else grad_x,
                                          **bparams)
        return grad_x, grad_W, grad_b
