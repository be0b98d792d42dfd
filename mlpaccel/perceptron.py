"""Rosenblatt's perceptron (seed 001): one unit, step activation, the perceptron learning rule

    o = step(x . w + b),   w <- w + lr (t - o) x,   b <- b + lr (t - o)

run through the Backend like the MLP: ``linear_forward`` with ``step``, the rule's (o - t) x
is ``linear_backward`` of the MSE gradient with the step treated as identity, and the update
is ``sgd_update`` over the flat [w, b] buffer. It learns AND, OR, NAND; on XOR (not linearly
separable) it warns and sets ``converged_ = False``.
"""

from __future__ import annotations

import warnings

import numpy as np

from ._checks import check_X
from .backends import get_backend
from .backends.base import check_dtype
from .params import ParamLayout


class ConvergenceWarning(UserWarning):
    """Training stopped before every training sample was classified correctly."""


class Perceptron:
    """A single threshold unit trained with the perceptron rule (samples in order, or
    shuffled by ``random_state`` when ``shuffle``). Labels are 0/1."""

    def __init__(self, learning_rate=0.1, max_epochs=100, init="zeros", backend="numpy",
                 dtype="float64", random_state=None, shuffle=False):
        if not learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}")
        if int(max_epochs) < 1:
            raise ValueError(f"max_epochs must be >= 1, got {max_epochs!r}")
        if init not in ("zeros", "uniform"):
            raise ValueError(f"init must be 'zeros' or 'uniform', got {init!r}")
        self.learning_rate = float(learning_rate)
        self.max_epochs = int(max_epochs)
        self.init = init
        self.backend = get_backend(backend)
        self.dtype = check_dtype(dtype)
        self.random_state = random_state
        self.shuffle = shuffle
        self.converged_ = None
        self.n_iter_ = 0
        self.errors_: list[int] = []

    def fit(self, X, y):
        """Train until an epoch classifies every sample correctly (or ``max_epochs``)."""
        X = np.asarray(X)
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D (samples, features), got shape {X.shape}")
        X = check_X(X, X.shape[1])
        y = np.asarray(y)
        if y.shape != (X.shape[0],) or not np.all(np.isin(y, (0, 1))):
            raise ValueError(f"y must be 0/1 labels of shape ({X.shape[0]},)")
        B, n = self.backend, X.shape[1]
        rng = np.random.default_rng(self.random_state)
        self._layout = ParamLayout([n, 1], use_bias=True)
        flat = (rng.uniform(-1, 1, self._layout.size) if self.init == "uniform"
                else np.zeros(self._layout.size))
        self._params = B.asarray(flat.astype(self.dtype), dtype=self.dtype)
        self._grads = B.zeros(self._layout.size, self.dtype)
        (W, b), = self._layout.views(B, self._params)
        (gW, gb), = self._layout.views(B, self._grads)
        Xd = B.asarray(X, dtype=self.dtype)
        Td = B.asarray(y.reshape(-1, 1).astype(self.dtype), dtype=self.dtype)
        self.errors_, self.converged_ = [], False
        for epoch in range(1, self.max_epochs + 1):
            order = rng.permutation(len(X)) if self.shuffle else np.arange(len(X))
            for i in order:
                x = B.take_rows(Xd, np.array([i]))
                t = B.take_rows(Td, np.array([i]))
                z, o = B.linear_forward(x, W, b, "step")
                _, g = B.mse(o, t)  # g = o - t for one sample
                # the rule ignores step's derivative: backprop (o - t) as through identity
                B.linear_backward(x, W, z, o, g, "linear", need_grad_x=False,
                                  out_grad_W=gW, out_grad_b=gb)
                B.sgd_update(self._params, self._grads, self.learning_rate)
            wrong = int(np.sum(self.predict(X) != y))
            self.errors_.append(wrong)
            self.n_iter_ = epoch
            if wrong == 0:
                self.converged_ = True
                break
        if not self.converged_:
            warnings.warn(f"the perceptron did not converge in {self.max_epochs} epochs "
                          f"({self.errors_[-1]} of {len(X)} samples still wrong): the classes "
                          "are not linearly separable (XOR needs a hidden layer: use MLP)",
                          ConvergenceWarning, stacklevel=2)
        return self

    @classmethod
    def from_weights(cls, w, b, **kwargs):
        """A perceptron with given weights ``w`` (n,) and bias ``b``, e.g. seed 001's AND
        gate ``from_weights([1, 1], -1.5)``; ``kwargs`` as for the constructor."""
        p = cls(**kwargs)
        w = np.asarray(w, dtype=np.float64).reshape(-1)
        p._layout = ParamLayout([w.size, 1], use_bias=True)
        flat = np.append(w, float(b)).astype(p.dtype)
        p._params = p.backend.asarray(flat, dtype=p.dtype)
        return p

    @property
    def coef_(self) -> np.ndarray:
        """The weights w (n_features,)."""
        return self.backend.to_numpy(self._params)[:-1].copy()

    @property
    def intercept_(self) -> float:
        """The bias b."""
        return float(self.backend.to_numpy(self._params)[-1])

    def predict(self, X) -> np.ndarray:
        """step(X w + b) as 0/1 integers (M,)."""
        if not hasattr(self, "_layout"):
            raise RuntimeError("this Perceptron is not fitted yet: call fit(X, y) first")
        X = check_X(X, self._layout.layer_sizes[0])
        B = self.backend
        (W, b), = self._layout.views(B, self._params)
        _, o = B.linear_forward(B.asarray(X, dtype=self.dtype), W, b, "step")
        return B.to_numpy(o)[:, 0].astype(np.int64)

    def score(self, X, y) -> float:
        """Accuracy."""
        return float(np.mean(self.predict(X) == np.asarray(y)))
