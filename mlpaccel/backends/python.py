"""python: the SISD rung. Plain Python floats in lists; every multiply-add is one interpreted step.

Arrays are :class:`PyArray`: a flat Python list, an offset into it and a shape, so that
``view(flat, offset, shape)`` shares the list with ``flat`` (the trainer keeps all parameters in
one flat buffer). Arithmetic is Python's double; ``dtype`` only says what ``to_numpy`` casts to.
NumPy appears only at the boundary (``asarray``, ``to_numpy``). The math is ``reference.py``'s.
"""

from __future__ import annotations

import math
import operator
import platform

import numpy as np

from .. import activations as _act
from .base import Backend, check_dtype

SQRT_HALF = 1.0 / math.sqrt(2.0)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def _size(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _shape(shape) -> tuple:
    if isinstance(shape, (int, np.integer)):
        shape = (shape,)
    shape = tuple(int(s) for s in shape)
    if any(s < 0 for s in shape):
        raise ValueError(f"shape must not have negative entries, got {shape}")
    return shape


class PyArray:
    """``prod(shape)`` consecutive elements of the list ``data`` starting at ``offset``."""

    __slots__ = ("data", "offset", "shape", "dtype")

    def __init__(self, data: list, offset: int, shape: tuple, dtype) -> None:
        self.data = data
        self.offset = offset
        self.shape = shape
        self.dtype = np.dtype(dtype)

    @property
    def size(self) -> int:
        return _size(self.shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def values(self) -> list:
        """The elements as a new flat list (row-major)."""
        return self.data[self.offset:self.offset + self.size]

    def rows(self) -> list:
        """A 2-D array's rows as new lists."""
        m, n = self.shape
        d, o = self.data, self.offset
        return [d[o + i * n:o + (i + 1) * n] for i in range(m)]

    def cols(self) -> list:
        """A 2-D array's columns as new lists (strided slices of the flat list)."""
        m, n = self.shape
        d, o = self.data, self.offset
        return [d[o + j:o + m * n:n] for j in range(n)]

    def set(self, values: list) -> None:
        """Overwrite the elements in place (slice assignment keeps the shared list)."""
        self.data[self.offset:self.offset + self.size] = values

    def __array__(self, dtype=None, copy=None):
        out = np.array(self.values(), dtype=self.dtype).reshape(self.shape)
        return out if dtype is None else out.astype(dtype)

    def __len__(self) -> int:
        if not self.shape:
            raise TypeError("len() of a 0-d array")
        return self.shape[0]

    def __repr__(self) -> str:
        return f"PyArray(shape={self.shape}, dtype={self.dtype.name})"


def _check(a, name: str = "array") -> PyArray:
    if not isinstance(a, PyArray):
        raise TypeError(f"the python backend needs its own arrays for {name} (use "
                        f"backend.asarray(x)); got {type(a).__name__}")
    return a


def _result(out, shape, dtype, values: list) -> PyArray:
    """Write ``values`` into ``out`` (checked) or wrap them in a new array."""
    if out is None:
        return PyArray(values, 0, shape, dtype)
    _check(out, "out")
    if out.shape != tuple(shape):
        raise ValueError(f"out has shape {out.shape}, expected {tuple(shape)}")
    out.set(values)
    return out


# ---------------------------------------------------------------- scalar activations
def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)  # z < 0: exp cannot overflow
    return e / (1.0 + e)


def _softplus(z: float) -> float:
    return max(z, 0.0) + math.log1p(math.exp(-abs(z)))


def _gelu(z: float) -> float:
    return 0.5 * z * (1.0 + math.erf(z * SQRT_HALF))


def _gelu_grad(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z * SQRT_HALF)) + z * INV_SQRT_2PI * math.exp(-0.5 * z * z)


def _softmax_row(row: list) -> list:
    m = max(row)
    e = [math.exp(v - m) for v in row]
    s = sum(e)
    return [v / s for v in e]


class PythonBackend(Backend):
    name = "python"
    rung = "SISD: one multiply-add at a time, each one an interpreted Python step."

    def info(self) -> dict:
        return {"backend": self.name, "device": "cpu", "python": platform.python_version(),
                "implementation": platform.python_implementation(),
                "model": "one multiply-add at a time"}

    # ------------------------------------------------------------------ arrays
    def asarray(self, x, dtype=None):
        if isinstance(x, PyArray):
            if dtype is None or np.dtype(dtype) == x.dtype:
                return PyArray(x.values(), 0, x.shape, x.dtype)
            x = np.array(x.values(), dtype=x.dtype).reshape(x.shape)  # round via NumPy below
        if dtype is None:
            kind = getattr(getattr(x, "dtype", None), "kind", None)
            dtype = x.dtype if kind == "f" else np.float32
        dt = check_dtype(dtype)
        host = np.asarray(x, dtype=dt)  # round to dtype once, then compute in double
        return PyArray(host.astype(np.float64).ravel().tolist(), 0, host.shape, dt)

    def to_numpy(self, a):
        return np.array(_check(a).values(), dtype=a.dtype).reshape(a.shape)

    def zeros(self, shape, dtype=np.float32):
        shape = _shape(shape)
        return PyArray([0.0] * _size(shape), 0, shape, check_dtype(dtype))

    def view(self, flat, offset, shape):
        _check(flat, "flat")
        if flat.ndim != 1:
            raise ValueError(f"view needs a 1-D flat array, got shape {flat.shape}")
        shape, offset = _shape(shape), int(offset)
        if offset < 0 or offset + _size(shape) > flat.size:
            raise ValueError(f"view of {_size(shape)} elements at offset {offset} does not fit "
                             f"in a flat array of {flat.size}")
        return PyArray(flat.data, flat.offset + offset, shape, flat.dtype)

    def assign(self, dst, src):
        _check(dst, "dst")
        if isinstance(src, PyArray):
            values = src.values()
        else:
            values = np.asarray(src, dtype=dst.dtype).astype(np.float64).ravel().tolist()
        if len(values) != dst.size:
            raise ValueError(f"assign: source has {len(values)} elements, "
                             f"destination {dst.shape} has {dst.size}")
        dst.set(values)

    def take_rows(self, x, indices, out=None):
        rows = _check(x).rows()
        idx = [int(i) for i in np.asarray(indices).ravel()]
        values = [v for i in idx for v in rows[i]]
        return _result(out, (len(idx), x.shape[1]), x.dtype, values)

    # ------------------------------------------------------------------ matmul
    def matmul(self, a, b, transpose_a=False, transpose_b=False, out=None):
        _check(a, "a")
        _check(b, "b")
        if a.ndim != 2 or b.ndim != 2:
            raise ValueError(f"matmul needs 2-D arrays, got {a.shape} and {b.shape}")
        # rows of op(A) and columns of op(B); a transposed operand is read by strided slices
        arows = a.cols() if transpose_a else a.rows()
        bcols = b.rows() if transpose_b else b.cols()
        k_a = a.shape[0] if transpose_a else a.shape[1]
        k_b = b.shape[1] if transpose_b else b.shape[0]
        if k_a != k_b:
            raise ValueError(f"matmul: inner dimensions differ: op(a) is "
                             f"({len(arows)}, {k_a}), op(b) is ({k_b}, {len(bcols)})")
        mul = operator.mul
        values = []
        for arow in arows:  # one dot product per output element: K multiply-adds in sequence
            values.extend([sum(map(mul, arow, col), 0.0) for col in bcols])
        return _result(out, (len(arows), len(bcols)), a.dtype, values)

    # ------------------------------------------------------------------ elementwise
    def activation(self, name, z, out=None, **params):
        name = _act.canonical(name)
        p = _act.resolve_params(name, params)
        v = _check(z, "z").values()
        if name == "step":
            r = [1.0 if x > 0 else 0.0 for x in v]
        elif name == "linear":
            r = v
        elif name == "sigmoid":
            r = [_sigmoid(x) for x in v]
        elif name == "tanh":
            r = [math.tanh(x) for x in v]
        elif name == "relu":
            r = [x if x > 0 else 0.0 for x in v]
        elif name == "leaky_relu":
            alpha = p["alpha"]
            r = [x if x > 0 else alpha * x for x in v]
        elif name == "elu":
            alpha = p["alpha"]
            r = [x if x > 0 else alpha * math.expm1(x) for x in v]
        elif name == "softplus":
            r = [_softplus(x) for x in v]
        elif name == "gelu":
            r = [_gelu(x) for x in v]
        else:  # softmax, per row
            r = [y for row in z.rows() for y in _softmax_row(row)]
        return _result(out, z.shape, z.dtype, r)

    def activation_grad(self, name, z, a, grad_out, out=None, **params):
        name = _act.canonical(name)
        p = _act.resolve_params(name, params)
        g = _check(grad_out, "grad_out").values()
        if name == "step":
            r = [0.0] * len(g)
        elif name == "linear":
            r = g
        elif name in ("sigmoid", "tanh", "softmax"):  # written in terms of the output a
            av = _check(a, "a").values()
            if name == "sigmoid":
                r = [gi * ai * (1.0 - ai) for gi, ai in zip(g, av)]
            elif name == "tanh":
                r = [gi * (1.0 - ai * ai) for gi, ai in zip(g, av)]
            else:
                n = a.shape[-1]
                r = []
                for i in range(0, len(g), n):
                    gr, ar = g[i:i + n], av[i:i + n]
                    s = sum(map(operator.mul, gr, ar), 0.0)
                    r.extend([ai * (gi - s) for gi, ai in zip(gr, ar)])
        elif name == "elu":  # z decides the branch, a gives the derivative a + alpha
            alpha = p["alpha"]
            r = [gi if zi > 0 else gi * (ai + alpha)
                 for gi, zi, ai in zip(g, _check(z, "z").values(), _check(a, "a").values())]
        else:  # written in terms of the input z
            zv = _check(z, "z").values()
            if name == "relu":
                r = [gi if zi > 0 else 0.0 for gi, zi in zip(g, zv)]
            elif name == "leaky_relu":
                alpha = p["alpha"]
                r = [gi if zi > 0 else alpha * gi for gi, zi in zip(g, zv)]
            elif name == "softplus":
                r = [gi * _sigmoid(zi) for gi, zi in zip(g, zv)]
            else:  # gelu
                r = [gi * _gelu_grad(zi) for gi, zi in zip(g, zv)]
        return _result(out, grad_out.shape, grad_out.dtype, r)

    def bias_add(self, z, b, out=None):
        m, n = _check(z, "z").shape
        bv = _check(b, "b").values()
        if len(bv) != n:
            raise ValueError(f"bias_add: b has {len(bv)} elements, z has {n} columns")
        r = [x + y for row in z.rows() for x, y in zip(row, bv)]
        return _result(out, z.shape, z.dtype, r)

    def sum_rows(self, x, out=None):
        r = [sum(col, 0.0) for col in _check(x, "x").cols()]
        return _result(out, (x.shape[1],), x.dtype, r)

    def axpy(self, alpha, x, y):
        alpha = float(alpha)
        _check(y, "y").set([yi + alpha * xi for xi, yi in zip(_check(x, "x").values(),
                                                              y.values())])
        return y

    def scale(self, alpha, x):
        alpha = float(alpha)
        _check(x, "x").set([alpha * v for v in x.values()])
        return x

    # ------------------------------------------------------------------ losses
    def _host_like(self, t, like: PyArray) -> list:
        """Target values as a flat list of floats matching ``like``'s size."""
        v = t.values() if isinstance(t, PyArray) else (
            np.asarray(t, dtype=np.float64).ravel().tolist())
        if len(v) != like.size:
            raise ValueError(f"target has {len(v)} elements, output {like.shape} has {like.size}")
        return v

    def mse(self, output, target):
        o = _check(output, "output").values()
        t = self._host_like(target, output)
        m = output.shape[0]
        d = [oi - ti for oi, ti in zip(o, t)]
        loss = 0.5 * sum([x * x for x in d], 0.0) / m
        return (PyArray([loss], 0, (), output.dtype),
                PyArray([x / m for x in d], 0, output.shape, output.dtype))

    def binary_cross_entropy(self, output, target):
        o = _check(output, "output").values()
        t = self._host_like(target, output)
        eps = 1e-7 if output.dtype == np.float32 else 1e-12
        hi = 1.0 - eps
        oc = [min(max(x, eps), hi) for x in o]
        n = len(o)
        loss = -sum([ti * math.log(x) + (1.0 - ti) * math.log1p(-x)
                     for x, ti in zip(oc, t)], 0.0) / n
        grad = [(x - ti) / (x * (1.0 - x)) / n for x, ti in zip(oc, t)]
        return (PyArray([loss], 0, (), output.dtype),
                PyArray(grad, 0, output.shape, output.dtype))

    def softmax_cross_entropy(self, logits, labels):
        m, c = _check(logits, "logits").shape
        if isinstance(labels, PyArray):
            lab, ndim = labels.values(), labels.ndim
        else:
            host = np.asarray(labels)
            lab, ndim = host.ravel().tolist(), host.ndim
        if ndim == 1 and len(lab) == m:  # class ids (M,)
            ids = [int(v) for v in lab]
            if any(i < 0 or i >= c for i in ids):
                raise ValueError(f"labels must be class ids in [0, {c}), got values from "
                                 f"{min(ids)} to {max(ids)}")
            y = [[1.0 if j == i else 0.0 for j in range(c)] for i in ids]
        elif ndim == 2 and len(lab) == m * c:  # one-hot / probability rows (M, C)
            y = [lab[i * c:(i + 1) * c] for i in range(m)]
        else:
            raise ValueError(f"labels must be class ids of shape ({m},) or rows of shape "
                             f"({m}, {c}); got {ndim}-d labels with {len(lab)} elements")
        total, grad = 0.0, []
        for row, yr in zip(logits.rows(), y):
            zmax = max(row)
            e = [math.exp(v - zmax) for v in row]  # every exponent <= 0: no overflow
            s = sum(e, 0.0)
            total += zmax + math.log(s) - sum(map(operator.mul, yr, row), 0.0)
            grad.extend([(ei / s - yi) / m for ei, yi in zip(e, yr)])
        return (PyArray([total / m], 0, (), logits.dtype),
                PyArray(grad, 0, logits.shape, logits.dtype))

    # ------------------------------------------------------------------ optimizer updates
    @staticmethod
    def _decayed(p: list, g: list, wd: float) -> list:
        return [gi + wd * pi for gi, pi in zip(g, p)] if wd else g

    def sgd_update(self, p, g, lr, weight_decay=0.0):
        pv = _check(p, "p").values()
        gv = self._decayed(pv, _check(g, "g").values(), float(weight_decay))
        p.set([pi - lr * gi for pi, gi in zip(pv, gv)])

    def momentum_update(self, p, g, buf, lr, momentum=0.9, weight_decay=0.0, nesterov=False):
        pv = _check(p, "p").values()
        gv = self._decayed(pv, _check(g, "g").values(), float(weight_decay))
        bv = [momentum * bi + gi for bi, gi in zip(_check(buf, "buf").values(), gv)]
        step = [gi + momentum * bi for gi, bi in zip(gv, bv)] if nesterov else bv
        buf.set(bv)
        p.set([pi - lr * si for pi, si in zip(pv, step)])

    def adagrad_update(self, p, g, sum_sq, lr, eps=1e-10, weight_decay=0.0):
        pv = _check(p, "p").values()
        gv = self._decayed(pv, _check(g, "g").values(), float(weight_decay))
        sv = [si + gi * gi for si, gi in zip(_check(sum_sq, "sum_sq").values(), gv)]
        sum_sq.set(sv)
        p.set([pi - lr * gi / (math.sqrt(si) + eps) for pi, gi, si in zip(pv, gv, sv)])

    def adadelta_update(self, p, g, square_avg, acc_delta, lr=1.0, rho=0.9, eps=1e-6,
                        weight_decay=0.0):
        pv = _check(p, "p").values()
        gv = self._decayed(pv, _check(g, "g").values(), float(weight_decay))
        sa = [rho * s + (1 - rho) * gi * gi
              for s, gi in zip(_check(square_avg, "square_avg").values(), gv)]
        ad = _check(acc_delta, "acc_delta").values()
        delta = [math.sqrt(d + eps) / math.sqrt(s + eps) * gi for d, s, gi in zip(ad, sa, gv)]
        square_avg.set(sa)
        acc_delta.set([rho * d + (1 - rho) * dl * dl for d, dl in zip(ad, delta)])
        p.set([pi - lr * dl for pi, dl in zip(pv, delta)])

    def rmsprop_update(self, p, g, square_avg, lr=0.01, rho=0.99, eps=1e-8, weight_decay=0.0):
        pv = _check(p, "p").values()
        gv = self._decayed(pv, _check(g, "g").values(), float(weight_decay))
        sa = [rho * s + (1 - rho) * gi * gi
              for s, gi in zip(_check(square_avg, "square_avg").values(), gv)]
        square_avg.set(sa)
        p.set([pi - lr * gi / (math.sqrt(s) + eps) for pi, gi, s in zip(pv, gv, sa)])

    def adam_update(self, p, g, m, v, step, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
                    weight_decay=0.0, decoupled=False):
        if int(step) < 1:
            raise ValueError(f"adam step counts from 1, got {step}")
        pv = _check(p, "p").values()
        gv = _check(g, "g").values()
        if decoupled:  # AdamW: shrink the weights first, the gradient stays as it is
            pv = [pi * (1 - lr * weight_decay) for pi in pv]
        else:
            gv = self._decayed(pv, gv, float(weight_decay))
        mv = [beta1 * mi + (1 - beta1) * gi for mi, gi in zip(_check(m, "m").values(), gv)]
        vv = [beta2 * vi + (1 - beta2) * gi * gi for vi, gi in zip(_check(v, "v").values(), gv)]
        c1, c2 = 1 - beta1 ** step, 1 - beta2 ** step
        m.set(mv)
        v.set(vv)
        p.set([pi - lr * (mi / c1) / (math.sqrt(vi / c2) + eps)
               for pi, mi, vi in zip(pv, mv, vv)])


__all__ = ["PyArray", "PythonBackend"]
