"""Initial weights, drawn on the host with one seeded generator so every backend starts equal.

| name              | W (fan_in, fan_out)                         | b          |
|-------------------|---------------------------------------------|------------|
| uniform           | U(-1, 1)  (seed 000's ``np.random.uniform``) | U(-1, 1)   |
| xavier / glorot   | U(-r, r), r = sqrt(6 / (fan_in + fan_out))  | 0          |
| he / kaiming      | N(0, 2 / fan_in)                            | 0          |
| zeros             | 0 (warns: symmetric units never differ)     | 0          |

Explicit weights are a list of ``(W, b)`` pairs (``b`` may be None without biases).
"""

from __future__ import annotations

import warnings

import numpy as np

from ._names import lookup

INITIALIZERS = ("uniform", "xavier", "he", "zeros")
ALIASES = {"glorot": "xavier", "glorot_uniform": "xavier", "xavier_uniform": "xavier",
           "kaiming": "he", "he_normal": "he", "kaiming_normal": "he", "zero": "zeros"}


def canonical(name: str) -> str:
    """The catalogue name of an initializer, or ValueError with a did-you-mean hint."""
    if not isinstance(name, str):
        raise TypeError(f"init must be a name or a list of (W, b) pairs, got {type(name).__name__}")
    return lookup("init", name, INITIALIZERS, ALIASES)


def initial_weights(name: str, layer_sizes, use_bias: bool, random_state=None):
    """``[(W, b), ...]`` float64 host arrays for ``layer_sizes`` drawn with
    ``np.random.default_rng(random_state)`` (W before b, layer by layer)."""
    name = canonical(name)
    if name == "zeros":
        warnings.warn("init='zeros' makes every hidden unit identical; they receive identical "
                      "gradients and never differ (use 'xavier' or 'he')", stacklevel=3)
    rng = np.random.default_rng(random_state)
    out = []
    for fan_in, fan_out in zip(layer_sizes[:-1], layer_sizes[1:]):
        b = np.zeros(fan_out) if use_bias else None
        if name == "uniform":
            W = rng.uniform(-1.0, 1.0, (fan_in, fan_out))
            if use_bias:
                b = rng.uniform(-1.0, 1.0, fan_out)
        elif name == "xavier":
            r = np.sqrt(6.0 / (fan_in + fan_out))
            W = rng.uniform(-r, r, (fan_in, fan_out))
        elif name == "he":
            W = rng.normal(0.0, np.sqrt(2.0 / fan_in), (fan_in, fan_out))
        else:
            W = np.zeros((fan_in, fan_out))
        out.append((W, b))
    return out
