"""A whole plain-SGD training step of an MLP as one compiled numba call.

The numba counterpart of the cuda backend's recorded step: forward, loss, backward and update
of every layer run inside one ``@njit`` function (``_numba_kernels.sgd_step``) that calls the
backend's own parallel GEMM and fused kernels, so a step costs one Python call instead of ~15
(at batch 64 that per-call Python was ~10 % of an epoch). The update is fused into the
backward pass: deltas carry the factor -lr, and each weight-gradient GEMM adds
``a^T (-lr delta)`` straight into W (no gradient buffer, no separate update pass).

    >>> step = NumbaSGDStep.for_model(model, batch=64)   # None if the model is not covered
    >>> loss = step.step(model._params, x, t, lr=0.01)   # params updated in place
    >>> step.epoch(model._params, X, T, 0.01, weights, acc)  # every batch of X, one call

Covered: any widths and depth, float32/float64, with or without biases, every elementwise
hidden/output activation, softmax cross-entropy (probability-row targets) or MSE. What it
computes equals ``grad_fn`` + ``sgd_update`` up to float rounding (the -lr factor is applied
to the delta before the sums instead of to the summed gradient).
"""

from __future__ import annotations

import numpy as np

from .. import activations as _act


class NumbaSGDStep:
    """One fused SGD step for one MLP shape and batch size on the numba backend."""

    def __init__(self, backend, layer_sizes, activations, loss: str, use_bias: bool, dtype,
                 batch: int) -> None:
        from . import _numba_kernels as K

        self._k = K
        sizes = [int(s) for s in layer_sizes]
        acts = [_act.canonical(a) for a in activations]
        if len(acts) != len(sizes) - 1:
            raise ValueError(f"{len(sizes) - 1} layers need as many activations, got {acts}")
        if "softmax" in acts:
            raise ValueError("softmax as a layer activation is not fused (cross_entropy fuses "
                             "it into the loss)")
        if loss == "cross_entropy":
            if acts[-1] != "linear":
                raise ValueError("cross_entropy takes the output layer's logits (linear)")
            self.loss_kind = K.LOSS_XENT
        elif loss == "mse":
            self.loss_kind = K.LOSS_MSE
        else:
            raise ValueError(f"loss {loss!r} is not fused (cross_entropy and mse are)")
        if int(batch) < 1:
            raise ValueError(f"batch must be >= 1, got {batch}")
        self.backend, self.batch = backend, int(batch)
        self.dtype = np.dtype(dtype)
        self.layer_sizes = tuple(sizes)
        t = self.dtype.type
        self._sizes = np.asarray(sizes, np.int64)
        self._codes = np.asarray([K.CODES[a] for a in acts], np.int64)
        self._alphas = np.asarray([_act.resolve_params(a, {}).get("alpha", 0.0) for a in acts],
                                  self.dtype)
        w_off, b_off, off = [], [], 0
        for n_in, n_out in zip(sizes[:-1], sizes[1:]):
            w_off.append(off)
            off += n_in * n_out
            b_off.append(off if use_bias else -1)
            off += n_out if use_bias else 0
        self.n_params = off
        self._w_off = np.asarray(w_off, np.int64)
        self._b_off = np.asarray(b_off, np.int64)
        m, hidden = self.batch, sum(sizes[1:])
        nmax = max(sizes[1:])
        self._Z = np.empty(m * hidden, self.dtype)
        self._A = np.empty(m * hidden, self.dtype)
        self._D = np.empty(3 * m * nmax, self.dtype)
        self._G = np.empty(2 * nmax, self.dtype)
        self._loss = np.zeros(1, self.dtype)
        self.loss = self._loss.reshape(())  # the 0-d view step() returns
        self._one = t(1)
        self._none = np.zeros(0, self.dtype)  # step(): no running loss to add to

    @classmethod
    def for_model(cls, model, batch: int):
        """The step for ``model`` (an ``mlpaccel.MLP``) at ``batch`` rows, or None when the
        model's loss or activations are not covered (the trainer then runs its per-op step)."""
        try:
            return cls(model.backend, model.layer_sizes, model._run_acts, model.loss.name,
                       model.use_bias, model.dtype, batch)
        except ValueError:
            return None

    def step(self, params, x, t, lr):
        """p -= lr * d loss / d p over the batch ``x`` (batch, n_in), targets ``t``
        (batch, n_out) (cross_entropy: one-hot / probability rows); ``params`` flat, MLP
        layout, updated in place. Returns the loss before the update (0-d, the same array
        every call)."""
        m = self.batch
        if x.shape != (m, self.layer_sizes[0]) or t.shape != (m, self.layer_sizes[-1]):
            raise ValueError(f"x and t must be ({m}, {self.layer_sizes[0]}) and "
                             f"({m}, {self.layer_sizes[-1]}), got {x.shape} and {t.shape}")
        self._run(params, x, t, lr, self._none, self._none)
        return self.loss

    def epoch(self, params, X, T, lr, weights, acc):
        """Every step of an epoch in one compiled call: the rows of ``X`` (N, n_in) and ``T``
        (N, n_out) in order, ``batch`` at a time (the last batch may be shorter), each batch
        one :meth:`step`; ``acc`` (0-d) += weights[i] * loss of batch i (``weights``: one per
        batch, rows_i / N for the epoch's mean loss). What a loop of ``step`` calls computes,
        without the Python call per step (~20 us each with its argument checks)."""
        n = X.shape[0] if getattr(X, "ndim", 0) == 2 else -1
        if n < 1 or X.shape[1] != self.layer_sizes[0] or T.shape != (n, self.layer_sizes[-1]):
            raise ValueError(f"X and T must be (N, {self.layer_sizes[0]}) and "
                             f"(N, {self.layer_sizes[-1]}) with N >= 1, got "
                             f"{getattr(X, 'shape', None)} and {getattr(T, 'shape', None)}")
        steps = -(-n // self.batch)
        w = np.ascontiguousarray(weights)
        if w.shape != (steps,) or w.dtype != self.dtype:
            raise ValueError(f"weights must be {steps} {self.dtype} values (one per batch)")
        if acc.shape != () or acc.dtype != self.dtype:
            raise ValueError(f"acc must be a 0-d {self.dtype} array")
        self._run(params, X, T, lr, w, acc.reshape(1))

    def _run(self, params, x, t, lr, weights, acc):
        import numba

        dt = self.dtype
        if params.shape != (self.n_params,) or params.dtype != dt:
            raise ValueError(f"params must be the flat {dt} buffer of {self.n_params} values")
        if x.dtype != dt or t.dtype != dt or not (x.flags.c_contiguous and t.flags.c_contiguous):
            raise ValueError(f"x and t must be C-contiguous {dt} arrays")
        self._k.sgd_step(params, x, t, dt.type(lr), self._sizes, self._w_off, self._b_off,
                         self._codes, self._alphas, self.loss_kind, self._Z, self._A, self._D,
                         self._G, self._loss, self._one, numba.get_num_threads(), self.batch,
                         weights, acc)
