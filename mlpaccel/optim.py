"""Optimizers: each step is ONE backend update call over the whole flat parameter buffer.

The formulas are seed 001's; where PyTorch's documented algorithm differs in a detail (eps
outside the root in Adagrad/RMSprop/Adam, Adadelta's learning-rate factor) PyTorch is followed
with its defaults, so results match ``torch.optim`` step for step (see ``backends/base.py``).

>>> opt = get("adam", learning_rate=1e-3)      # or Adam(learning_rate=1e-3)
>>> opt.step(backend, params, grads)           # params -= update(grads), in place

An optimizer keeps its state buffers (momentum, squared averages, ...) between steps, which is
why the trainer reuses the same object when ``fit`` is called again.
"""

from __future__ import annotations

import math

import numpy as np

from ._names import unknown_name

__all__ = ["Optimizer", "SGD", "Momentum", "Nesterov", "Adagrad", "Adadelta", "RMSprop", "Adam",
           "AdamW", "get", "OPTIMIZERS", "gradient_descent_1d"]


class Optimizer:
    """Base class: hyperparameters in ``self.hparams``, state buffers allocated on first step.

    Subclasses set ``name``, ``n_state`` (state buffers per parameter buffer) and ``defaults``
    and implement ``_update(backend, p, g, state)``."""

    name = "optimizer"
    n_state = 0
    defaults: dict = {}
    #: False when a step passes a scalar that changes every step (Adam's step count), so the
    #: update must not be baked into a captured graph
    capturable = True

    def capturable_on(self, backend) -> bool:
        """Whether ``update`` may be recorded once and replayed on ``backend``."""
        return self.capturable

    def __init__(self, **hparams) -> None:
        unknown = set(hparams) - set(self.defaults)
        if unknown:
            raise TypeError(f"optimizer {self.name!r} takes {sorted(self.defaults)}, "
                            f"got {sorted(unknown)}")
        self.hparams = {**self.defaults}
        for k, v in hparams.items():
            if v is not None:
                self.hparams[k] = float(v)
        for k, v in self.hparams.items():
            if not math.isfinite(v) or v < 0:
                raise ValueError(f"{self.name}: {k} must be a finite number >= 0, got {v!r}")
        self.iterations = 0
        self.generation = 0
        self.state: list = []
        self._backend = self._key = self._dtype = None

    @property
    def learning_rate(self) -> float:
        """The step size (settable; a captured step is re-recorded after a change)."""
        return self.hparams["learning_rate"]

    @learning_rate.setter
    def learning_rate(self, value: float) -> None:
        self.hparams["learning_rate"] = float(value)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v:g}" for k, v in self.hparams.items())
        return f"{type(self).__name__}({args})"

    def config(self) -> dict:
        """Name and hyperparameters (JSON-serialisable)."""
        return {"name": self.name, **self.hparams}

    def reset(self) -> None:
        """Forget the state (moments, step count)."""
        self.state = []
        self.iterations = 0
        self._backend = self._key = self._dtype = None

    def restart(self) -> None:
        """Zero the state buffers in place and restart the step count: training starts over
        without re-recording steps captured with these buffers (``reset`` drops them)."""
        for s in self.state:
            self._backend.assign(s, np.zeros(tuple(s.shape), s.dtype))
        self.iterations = 0

    def _ensure_state(self, backend, p) -> None:
        """Allocate zero state for buffer ``p`` (first step, or a buffer of another size);
        carry it through the host when the same buffer moved to another backend/dtype."""
        key = tuple(p.shape)
        if self._backend is backend and self._key == key and self._dtype == p.dtype:
            return
        if self._backend is not None and self._key == key:
            self.state = [backend.asarray(self._backend.to_numpy(s), dtype=p.dtype)
                          for s in self.state]
        else:
            self.state = [backend.zeros(p.shape, p.dtype) for _ in range(self.n_state)]
            self.iterations = 0
        self._backend, self._key, self._dtype = backend, key, p.dtype
        self.generation += 1  # new state buffers: steps captured with the old ones are stale

    def step(self, backend, params, grads) -> None:
        """One update of ``params`` (flat backend buffer) from ``grads`` (same layout)."""
        self._ensure_state(backend, params)
        self.iterations += 1
        self._update(backend, params, grads, self.state)

    def update(self, backend, params, grads) -> None:
        """The update alone, on state already allocated by ``_ensure_state`` and with
        ``iterations`` already counted: the part a captured (replayed) step contains."""
        self._update(backend, params, grads, self.state)

    def plain_step_size(self) -> float | None:
        """lr when an update is exactly p -= lr g (what a backend's fused training step
        applies), else None."""
        return None

    def _update(self, backend, p, g, state) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class SGD(Optimizer):
    """p -= lr (g + wd p)."""

    name = "sgd"
    defaults = {"learning_rate": 0.01, "weight_decay": 0.0}

    def plain_step_size(self) -> float | None:
        h = self.hparams
        return h["learning_rate"] if h["weight_decay"] == 0 else None

    def _update(self, backend, p, g, state):
        h = self.hparams
        backend.sgd_update(p, g, h["learning_rate"], h["weight_decay"])


class Momentum(Optimizer):
    """buf = momentum buf + g'; p -= lr buf (PyTorch SGD, dampening 0)."""

    name = "momentum"
    n_state = 1
    nesterov = False
    defaults = {"learning_rate": 0.01, "momentum": 0.9, "weight_decay": 0.0}

    def _update(self, backend, p, g, state):
        h = self.hparams
        backend.momentum_update(p, g, state[0], h["learning_rate"], h["momentum"],
                                h["weight_decay"], self.nesterov)


class Nesterov(Momentum):
    """buf = momentum buf + g'; p -= lr (g' + momentum buf)."""

    name = "nesterov"
    nesterov = True


class Adagrad(Optimizer):
    """sum_sq += g'^2; p -= lr g' / (sqrt(sum_sq) + eps)."""

    name = "adagrad"
    n_state = 1
    defaults = {"learning_rate": 0.01, "eps": 1e-10, "weight_decay": 0.0}

    def _update(self, backend, p, g, state):
        h = self.hparams
        backend.adagrad_update(p, g, state[0], h["learning_rate"], h["eps"], h["weight_decay"])


class Adadelta(Optimizer):
    """Zeiler's rule with PyTorch's learning-rate factor (default 1.0 = the slides' rule)."""

    name = "adadelta"
    n_state = 2
    defaults = {"learning_rate": 1.0, "rho": 0.9, "eps": 1e-6, "weight_decay": 0.0}

    def _update(self, backend, p, g, state):
        h = self.hparams
        backend.adadelta_update(p, g, state[0], state[1], h["learning_rate"], h["rho"],
                                h["eps"], h["weight_decay"])


class RMSprop(Optimizer):
    """sa = rho sa + (1 - rho) g'^2; p -= lr g' / (sqrt(sa) + eps) (rho is PyTorch's alpha)."""

    name = "rmsprop"
    n_state = 1
    defaults = {"learning_rate": 0.01, "rho": 0.99, "eps": 1e-8, "weight_decay": 0.0}

    def _update(self, backend, p, g, state):
        h = self.hparams
        backend.rmsprop_update(p, g, state[0], h["learning_rate"], h["rho"], h["eps"],
                               h["weight_decay"])


class Adam(Optimizer):
    """Bias-corrected first and second moments; eps after the root (PyTorch)."""

    name = "adam"
    n_state = 2
    decoupled = False
    capturable = False
    defaults = {"learning_rate": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8,
                "weight_decay": 0.0}

    def capturable_on(self, backend) -> bool:
        # a backend that reads the step count from device memory lets the whole update,
        # counter increment included, be recorded and replayed
        return bool(getattr(backend, "device_step_count", False))

    def _ensure_state(self, backend, p) -> None:
        super()._ensure_state(backend, p)
        if not self.capturable_on(backend):
            self._dstep = None
            return
        key = (backend, self.generation)
        if getattr(self, "_dstep_key", None) != key or self._dstep is None:
            # the count as one element of p's dtype (exact to 2**24 steps in float32) and a
            # constant 1 that axpy adds to it inside the step
            self._dstep = (backend.asarray(np.array([self.iterations], dtype=p.dtype)),
                           backend.asarray(np.ones(1, dtype=p.dtype)))
            self._dstep_key = key

    def restart(self) -> None:
        super().restart()
        if getattr(self, "_dstep", None) is not None:
            self._backend.assign(self._dstep[0], np.zeros(1, self._dtype))

    def reset(self) -> None:
        super().reset()
        self._dstep = None
        self._dstep_key = None

    def _update(self, backend, p, g, state):
        h = self.hparams
        step = self.iterations
        dstep = getattr(self, "_dstep", None)
        if dstep is not None:  # count on the device, in step with ``iterations`` on the host
            backend.axpy(1.0, dstep[1], dstep[0])
            step = dstep[0]
        backend.adam_update(p, g, state[0], state[1], step, h["learning_rate"],
                            h["beta1"], h["beta2"], h["eps"], h["weight_decay"], self.decoupled)


class AdamW(Adam):
    """Adam with decoupled weight decay: p *= 1 - lr wd before the Adam step."""

    name = "adamw"
    decoupled = True
    defaults = {**Adam.defaults, "weight_decay": 0.01}


OPTIMIZERS: dict[str, type[Optimizer]] = {
    c.name: c for c in (SGD, Momentum, Nesterov, Adagrad, Adadelta, RMSprop, Adam, AdamW)
}
_ALIASES = {"gd": "sgd", "sgd_momentum": "momentum", "nag": "nesterov"}


def get(name, **kwargs) -> Optimizer:
    """A new optimizer by name (``"sgd"``, ``"momentum"``, ..., ``"adamw"``) with keyword
    hyperparameters (``learning_rate``, ``momentum``, ``weight_decay``, ``rho``, ``beta1``,
    ``beta2``, ``eps``) as they apply; an Optimizer instance is returned as it is."""
    if isinstance(name, Optimizer):
        if kwargs:
            raise TypeError("pass hyperparameters to the optimizer's constructor, not to get()")
        return name
    if not isinstance(name, str):
        raise TypeError(f"optimizer must be a name or an mlpaccel.optim.Optimizer, got "
                        f"{type(name).__name__}")
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in OPTIMIZERS:
        raise ValueError(unknown_name("optimizer", name, OPTIMIZERS))
    return OPTIMIZERS[key](**kwargs)


def gradient_descent_1d(gradient, x0: float, learning_rate: float, steps: int = 100,
                        precision: float = 0.0) -> list[float]:
    """Seed 001's 1-D demo: x <- x - lr * gradient(x), ``steps`` times (stopping early once a
    step moves x by less than ``precision``). Returns the path [x0, x1, ...]."""
    path = [float(x0)]
    x = float(x0)
    for _ in range(steps):
        new = x - learning_rate * gradient(x)
        path.append(new)
        if abs(new - x) < precision:
            break
        x = new
    return path
