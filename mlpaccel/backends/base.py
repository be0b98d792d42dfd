"""The Backend contract: every device implements these operations with these meanings.

Conventions (the same on every backend)
---------------------------------------
* Samples are rows. A layer's weight ``W`` has shape (fan_in, fan_out) and ``b`` shape (fan_out,),
  so a layer computes ``z = x @ W + b`` (the seeds' Z = XW + B) and ``a = f(z)``.
* Backward: ``delta = grad_a * f'(z)``, ``grad_W = x^T @ delta``, ``grad_b = sum_rows(delta)``,
  ``grad_x = delta @ W^T``.
* Arrays are the backend's own type (NumPy array, CuPy array, the python backend's list-backed
  array, ...). Every backend array exposes ``.shape`` (tuple) and ``.dtype`` (a NumPy dtype).
  ``asarray`` and ``to_numpy`` are the only crossings between host and device.
* ``out=``: when given, the result is written into ``out`` (same shape and dtype, contiguous)
  and ``out`` is returned; nothing is allocated. Without it a new array is returned.
* dtypes: float32 and float64 are supported everywhere; results keep the input dtype.
* Losses return ``(loss, grad)``: ``loss`` is a 0-d backend array (``float(to_numpy(loss))``
  reads it; keeping it on the device lets a whole epoch run without host synchronisation) and
  ``grad`` is d loss / d input, already divided by the batch size.
* Optimizer updates work in place on (usually flat) parameter, gradient and state buffers.
  Where seed 001's slides and PyTorch's documented algorithm differ, PyTorch is followed with
  its defaults so that results match it step for step; each method says where.

A new backend subclasses :class:`Backend`, implements every ``@abstractmethod`` and passes the
conformance suite unchanged. The composite operations (``linear_forward``, ``linear_backward``)
have correct defaults built from the primitives; fast backends override them with fused kernels.
"""

from __future__ import annotations

import abc
import functools
from typing import Any, ClassVar

import numpy as np

from .. import activations as _act

SUPPORTED_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def check_dtype(dtype) -> np.dtype:
    """Return ``dtype`` as a NumPy dtype if it is float32 or float64, else raise TypeError."""
    try:
        dt = np.dtype(dtype)
    except TypeError as exc:
        raise TypeError(f"dtype must be 'float32' or 'float64', got {dtype!r}") from exc
    if dt not in SUPPORTED_DTYPES:
        raise TypeError(f"dtype must be 'float32' or 'float64', got {dt.name!r}")
    return dt


class Backend(abc.ABC):
    """One device. Subclasses set ``name`` and implement the abstract methods below."""

    name: ClassVar[str] = "abstract"
    #: a one-line description of what the hardware does differently (used by the report)
    rung: ClassVar[str] = ""
    #: True for a backend that only emulates another one (never chosen by ``auto``)
    is_emulator: ClassVar[bool] = False

    def __init__(self, **options: Any) -> None:
        if options:
            raise TypeError(f"backend {self.name!r} takes no options, got {sorted(options)}")

    # ------------------------------------------------------------------ identity
    @classmethod
    def is_available(cls) -> bool:
        """True when this backend can run here. Cheap after the first call; never raises."""
        return cls.unavailable_reason() is None

    @classmethod
    @functools.cache
    def unavailable_reason(cls) -> str | None:
        """None when usable, else a sentence saying why not and how to fix it (cached)."""
        try:
            return cls._probe()
        except Exception as exc:  # a probe must never raise to the caller
            return f"{type(exc).__name__}: {exc}"

    @classmethod
    def _probe(cls) -> str | None:
        """Override: check for packages/devices; return None if usable, else the reason."""
        return None

    def info(self) -> dict:
        """Describe the device: library versions, device name, threads, capability, ..."""
        return {"backend": self.name}

    def synchronize(self) -> None:
        """Block until all queued work has finished (a no-op on synchronous CPU backends)."""
        return None

    def __repr__(self) -> str:
        return f"<mlpaccel backend {self.name!r}>"

    # ------------------------------------------------------------------ arrays
    @abc.abstractmethod
    def asarray(self, x, dtype=None):
        """Copy host data (NumPy array, nested lists, or this backend's own array) into a new
        contiguous backend array of ``dtype`` (default: x's float dtype, else float32)."""

    @abc.abstractmethod
    def to_numpy(self, a) -> np.ndarray:
        """Copy a backend array to a NumPy array on the host (the result is never a view)."""

    @abc.abstractmethod
    def zeros(self, shape, dtype=np.float32):
        """A new array of zeros of ``shape`` (int or tuple) and ``dtype``."""

    @abc.abstractmethod
    def view(self, flat, offset: int, shape):
        """A view of ``prod(shape)`` elements of the 1-D array ``flat`` starting at ``offset``,
        shaped ``shape``: writes through the view change ``flat``. Parameters, gradients and
        optimizer states live in flat buffers so that one update call covers all layers."""

    @abc.abstractmethod
    def assign(self, dst, src) -> None:
        """Copy ``src`` (host data or a backend array of the same size) into ``dst`` in place."""

    @abc.abstractmethod
    def take_rows(self, x, indices, out=None):
        """Rows ``x[indices]`` of a 2-D array (``indices``: 1-D integer host array, or what
        ``row_indices`` returned) -> (k, cols). This is how a shuffled mini-batch is cut from
        data already on the device."""

    def row_indices(self, indices, n: int):
        """Host row indices for ``n`` rows, checked once and put where ``take_rows`` reads
        them (int64 in [0, n)): gathering several arrays by one order (an epoch's inputs and
        targets) then checks and uploads it once. Host backends keep a NumPy array."""
        return host_row_indices(indices, n)

    def empty(self, shape, dtype=np.float32):
        """An array of ``shape`` whose contents are unspecified (default: zeros)."""
        return self.zeros(shape, dtype)

    def copy(self, a):
        """A new array equal to ``a``."""
        out = self.empty(a.shape, a.dtype)
        self.assign(out, a)
        return out

    # ------------------------------------------------------------------ matmul
    @abc.abstractmethod
    def matmul(self, a, b, transpose_a: bool = False, transpose_b: bool = False, out=None):
        """C = op(A) @ op(B), op(X) = X^T when the flag is set. Shapes: op(A) (M, K),
        op(B) (K, N) -> C (M, N). The transposed forms are what backprop needs (x^T delta,
        delta W^T); fast backends read the operand transposed instead of copying it."""

    # ------------------------------------------------------------------ elementwise
    @abc.abstractmethod
    def activation(self, name: str, z, out=None, **params):
        """a = f(z) elementwise (softmax: per row) for a name in ``mlpaccel.activations``.
        Stable for |z| up to 1e4 in float32 and float64: no NaN, no overflow warnings."""

    @abc.abstractmethod
    def activation_grad(self, name: str, z, a, grad_out, out=None, **params):
        """grad_z = grad_out * f'(z), where f' uses z or a = f(z), whichever is natural
        (sigmoid: a(1-a); relu: z > 0). For softmax: the Jacobian-vector product
        a * (grad_out - sum_j grad_out_j a_j) per row. For step: zeros."""

    @abc.abstractmethod
    def bias_add(self, z, b, out=None):
        """z + b with b (N,) broadcast over the rows of z (M, N). ``out`` may be ``z``."""

    @abc.abstractmethod
    def sum_rows(self, x, out=None):
        """Column sums over the rows: s_j = sum_i x_ij, (M, N) -> (N,). Bias gradients."""

    @abc.abstractmethod
    def axpy(self, alpha: float, x, y):
        """y += alpha * x in place (same shape); returns y."""

    @abc.abstractmethod
    def scale(self, alpha: float, x):
        """x *= alpha in place; returns x."""

    # ------------------------------------------------------------------ losses
    @abc.abstractmethod
    def mse(self, output, target):
        """E = mean over the batch of 1/2 sum_j (o_j - t_j)^2; grad = (o - t) / batch.
        Shapes (M, N). With one sample this is exactly the seeds' E = 1/2 sum (t - o)^2."""

    @abc.abstractmethod
    def binary_cross_entropy(self, output, target):
        """E = -mean over all elements of t log o + (1 - t) log(1 - o) (PyTorch's BCELoss,
        o clipped to [eps, 1 - eps] with eps = 1e-7 (float32) / 1e-12 (float64));
        grad = (o - t) / (o (1 - o)) / size, with the same clipping."""

    @abc.abstractmethod
    def softmax_cross_entropy(self, logits, labels):
        """Fused softmax + cross-entropy, averaged over the batch (PyTorch's CrossEntropyLoss).
        logits (M, C); labels: integer class ids (M,) or one-hot / probability rows (M, C).
        E = mean_i [logsumexp(z_i) - sum_c y_ic z_ic]; grad = (softmax(z) - y) / M.
        Log-sum-exp is computed after subtracting the row maximum (no overflow)."""

    # ------------------------------------------------------------------ optimizer updates
    @abc.abstractmethod
    def sgd_update(self, p, g, lr: float, weight_decay: float = 0.0) -> None:
        """p -= lr * (g + weight_decay * p)."""

    @abc.abstractmethod
    def momentum_update(self, p, g, buf, lr: float, momentum: float = 0.9,
                        weight_decay: float = 0.0, nesterov: bool = False) -> None:
        """PyTorch SGD with momentum (dampening 0): g' = g + wd p; buf = momentum buf + g';
        step = g' + momentum buf if nesterov else buf; p -= lr step. ``buf`` starts at zero,
        which equals PyTorch's first step buf = g'. (The slides' v = a v - lr g, w += v is the
        same trajectory with the learning rate folded into v.)"""

    @abc.abstractmethod
    def adagrad_update(self, p, g, sum_sq, lr: float, eps: float = 1e-10,
                       weight_decay: float = 0.0) -> None:
        """g' = g + wd p; sum_sq += g'^2; p -= lr g' / (sqrt(sum_sq) + eps). PyTorch puts eps
        outside the square root (the slides put it inside); PyTorch's is followed."""

    @abc.abstractmethod
    def adadelta_update(self, p, g, square_avg, acc_delta, lr: float = 1.0, rho: float = 0.9,
                        eps: float = 1e-6, weight_decay: float = 0.0) -> None:
        """g' = g + wd p; square_avg = rho sa + (1 - rho) g'^2;
        delta = sqrt(acc_delta + eps) / sqrt(square_avg + eps) g';
        acc_delta = rho ad + (1 - rho) delta^2; p -= lr delta. The slides have no lr; PyTorch
        multiplies by lr (default 1.0, which is the slides' rule)."""

    @abc.abstractmethod
    def rmsprop_update(self, p, g, square_avg, lr: float = 0.01, rho: float = 0.99,
                       eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        """g' = g + wd p; square_avg = rho sa + (1 - rho) g'^2; p -= lr g' / (sqrt(sa) + eps).
        ``rho`` is PyTorch's ``alpha``; eps outside the root as in PyTorch."""

    @abc.abstractmethod
    def adam_update(self, p, g, m, v, step: int, lr: float = 1e-3, beta1: float = 0.9,
                    beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0,
                    decoupled: bool = False) -> None:
        """Adam (``decoupled=False``: g' = g + wd p) or AdamW (``decoupled=True``:
        p *= 1 - lr wd first, g' = g). m = b1 m + (1 - b1) g'; v = b2 v + (1 - b2) g'^2;
        p -= lr (m / (1 - b1^step)) / (sqrt(v / (1 - b2^step)) + eps). ``step`` counts from 1.
        eps is added after the square root of the bias-corrected v, as in PyTorch."""

    # ------------------------------------------------------------------ composites
    def linear_forward(self, x, W, b, activation: str = "linear", out_z=None, out_a=None,
                       **params):
        """One dense layer: z = x @ W + b (b may be None), a = f(z). Shapes x (M, K),
        W (K, N), b (N,) -> z, a (M, N). For ``linear`` a is z (the same array)."""
        name = _act.canonical(activation)
        z = self.matmul(x, W, out=out_z)
        if b is not None:
            z = self.bias_add(z, b, out=z)
        if name == "linear":
            return z, z
        return z, self.activation(name, z, out=out_a, **params)

    def linear_backward(self, x, W, z, a, grad_a, activation: str = "linear",
                        need_grad_x: bool = True, has_bias: bool = True,
                        out_grad_W=None, out_grad_b=None, below=None, **params):
        """Backward of ``linear_forward``: delta = grad_a * f'(z); grad_W = x^T delta (K, N);
        grad_b = sum_rows(delta) (N,) or None without a bias; grad_x = delta W^T (M, K) or
        None when ``need_grad_x`` is False (the first layer needs no input gradient).

        ``below = (activation, z, a[, params])`` of the layer that produced ``x`` (z, a of
        shape (M, K)): grad_x then comes back as that layer's delta, (delta W^T) * f'(z) -
        one GEMM with the derivative in its epilogue where the backend has one - and the
        next call takes it with ``activation="linear"``."""
        name = _act.canonical(activation)
        delta = grad_a if name == "linear" else self.activation_grad(name, z, a, grad_a, **params)
        grad_W = self.matmul(x, delta, transpose_a=True, out=out_grad_W)
        grad_b = self.sum_rows(delta, out=out_grad_b) if has_bias else None
        grad_x = self.matmul(delta, W, transpose_b=True) if need_grad_x else None
        if grad_x is not None and below is not None:
            bname, bz, ba, bparams = _below(below)
            if bname != "linear":
                grad_x = self.activation_grad(bname, bz, ba, grad_x, **bparams)
        return grad_x, grad_W, grad_b

    #: the Backend loss methods ``output_layer_grad`` accepts
    LOSS_METHODS = ("mse", "binary_cross_entropy", "softmax_cross_entropy")

    def output_layer_grad(self, x, W, b, target, loss: str = "softmax_cross_entropy",
                          activation: str = "linear", need_grad_x: bool = True,
                          out_grad_W=None, out_grad_b=None, below=None, out_z=None, out_a=None,
                          out_loss=None, out_grad_b_below=None, loss_acc=None, **params):
        """The output layer's forward, loss and backward in one call: z = x W + b, a = f(z),
        (E, g) = ``loss``(a, target) (a Backend loss method, e.g. "softmax_cross_entropy"),
        then ``linear_backward(x, W, z, a, g, ..., below=below)``. Shapes x (M, K), W (K, C),
        b (C,) or None, target as the loss takes it. Returns (E, grad_x, grad_W, grad_b): E
        0-d (written into ``out_loss`` when given, and that array returned), grad_x (M, K)
        (the layer below's delta when ``below`` is given; None without ``need_grad_x``),
        grad_W (K, C), grad_b (C,) or None. ``out_z``/``out_a`` receive z and a where the
        backend materialises them; a fused backend may keep the logits on chip and leave
        them untouched. ``out_grad_b_below`` (K,): also write sum_rows(grad_x) into it - the
        bias gradient of the layer below when grad_x is its delta (``below`` given).
        ``loss_acc = (acc, w)``: also acc += w * E (a 0-d running sum, e.g. an epoch's loss)."""
        if loss not in self.LOSS_METHODS:
            raise ValueError(f"output_layer_grad: loss must be one of {self.LOSS_METHODS}, "
                             f"got {loss!r}")
        z, a = self.linear_forward(x, W, b, activation, out_z=out_z, out_a=out_a, **params)
        E, g = getattr(self, loss)(a, target)
        grad_x, grad_W, grad_b = self.linear_backward(
            x, W, z, a, g, activation, need_grad_x, b is not None, out_grad_W, out_grad_b,
            below, **params)
        if out_loss is not None:
            self.assign(out_loss, E)
            E = out_loss
        if out_grad_b_below is not None and grad_x is not None:
            self.sum_rows(grad_x, out=out_grad_b_below)
        if loss_acc is not None:
            self.axpy(loss_acc[1], E, loss_acc[0])
        return E, grad_x, grad_W, grad_b

    def fused_sgd_step(self, model, batch: int):
        """A whole plain-SGD training step of ``model`` (an ``MLP``) at ``batch`` rows as one
        fused program, or None where this backend has none for it. The object's
        ``step(params, x, t, lr)`` updates the flat ``params`` in place (p -= lr * mean
        gradient of the model's loss on x (batch, n_in), targets t (batch, n_out)) and returns
        the loss before the update as a 0-d array. It may also offer ``epoch(params, X, T,
        lr, weights, acc)``: the steps over every ``batch`` rows of X, T (the last batch may be
        shorter) in one call, ``acc += weights[i] * loss_i``; the trainer then uses that."""
        return None

    def capture(self, fn):
        """Return a callable equivalent to ``fn`` (which only touches preallocated buffers).
        Backends that can record work once and replay it (CUDA graphs) override this; the
        default runs ``fn`` as it is."""
        return fn


def host_row_indices(indices, n: int) -> np.ndarray:
    """``take_rows``' host indices checked and normalised: a 1-D integer array in [-n, n) ->
    int64 in [0, n) (negative ones count from the end, as NumPy's). TypeError / IndexError
    say what is wrong."""
    idx = np.asarray(indices)
    if idx.ndim != 1 or idx.dtype.kind not in "iu":
        raise TypeError(f"indices must be a 1-D integer array, got {idx.dtype} {idx.shape}")
    lo, hi = (int(idx.min()), int(idx.max())) if idx.size else (0, 0)
    if lo < -n or hi >= n:
        raise IndexError(f"row index out of range for {n} rows: min {lo}, max {hi}")
    if lo < 0:
        idx = np.where(idx < 0, idx + n, idx)
    # (an epoch's shuffle order is all >= 0: no temporaries; each is 480 KB at 60k rows)
    return idx.astype(np.int64, copy=False)


def _below(below) -> tuple:
    """``linear_backward``'s ``below`` as (canonical activation, z, a, params)."""
    if not isinstance(below, (tuple, list)) or len(below) not in (3, 4):
        raise TypeError(f"below must be (activation, z, a) or (activation, z, a, params), "
                        f"got {below!r}")
    params = dict(below[3]) if len(below) == 4 and below[3] else {}
    return _act.canonical(below[0]), below[1], below[2], params
