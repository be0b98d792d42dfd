"""The activation catalogue: names, formulas, parameters and which form each derivative uses.

Every backend implements ``activation(name, z)`` and ``activation_grad(name, z, a, grad_out)``
for exactly these names; the model validates names here so it never branches on them.

| name       | f(z)                                  | f'(.) written in terms of         |
|------------|---------------------------------------|-----------------------------------|
| step       | 1 if z > 0 else 0                     | 0 everywhere (not differentiable; |
|            |                                       | the perceptron rule does not use it) |
| linear     | z                                     | 1                                 |
| sigmoid    | 1 / (1 + e^-z)                        | a (1 - a)            (output a)   |
| tanh       | tanh z                                | 1 - a^2              (output a)   |
| relu       | max(z, 0)                             | 1 if z > 0 else 0    (input z)    |
| leaky_relu | z if z > 0 else alpha z (alpha=0.01)  | 1 if z > 0 else alpha (input z)   |
| elu        | z if z > 0 else alpha (e^z - 1) (1.0) | 1 if z > 0 else a + alpha (both)  |
| softplus   | log(1 + e^z)                          | sigmoid(z)           (input z)    |
| gelu       | z Phi(z) = z/2 (1 + erf(z/sqrt 2))    | Phi(z) + z phi(z)    (input z)    |
| softmax    | e^z_i / sum_j e^z_j  (per row)        | JVP: a (g - sum(g a)) (output a)  |

``activation_grad`` returns grad_out * f'(z) (for softmax the Jacobian-vector product), so the
derivative is folded into the incoming gradient as backprop needs it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from ._names import did_you_mean


@dataclass(frozen=True)
class ActivationSpec:
    name: str
    formula: str
    derivative: str
    params: dict = field(default_factory=dict)  # parameter name -> default
    rowwise: bool = False  # True when outputs of a row depend on each other (softmax)


ACTIVATIONS: dict[str, ActivationSpec] = {
    s.name: s
    for s in [
        ActivationSpec("step", "1 if z > 0 else 0", "0 (documented: no gradient flows)"),
        ActivationSpec("linear", "z", "1"),
        ActivationSpec("sigmoid", "1 / (1 + exp(-z))", "a * (1 - a)"),
        ActivationSpec("tanh", "tanh(z)", "1 - a**2"),
        ActivationSpec("relu", "max(z, 0)", "1 if z > 0 else 0"),
        ActivationSpec("leaky_relu", "z if z > 0 else alpha*z", "1 if z > 0 else alpha",
                       {"alpha": 0.01}),
        ActivationSpec("elu", "z if z > 0 else alpha*(exp(z) - 1)", "1 if z > 0 else a + alpha",
                       {"alpha": 1.0}),
        ActivationSpec("softplus", "log(1 + exp(z))", "sigmoid(z)"),
        ActivationSpec("gelu", "z * Phi(z)", "Phi(z) + z * phi(z)"),
        ActivationSpec("softmax", "exp(z_i) / sum_j exp(z_j) per row", "a * (g - sum(g * a))",
                       rowwise=True),
    ]
}

ALIASES = {"identity": "linear", "none": "linear", "logistic": "sigmoid", "lrelu": "leaky_relu"}


def canonical(name: str) -> str:
    """Return the catalogue name for ``name`` (accepting aliases), or raise ValueError."""
    if not isinstance(name, str):
        raise TypeError(f"activation must be a string name, got {type(name).__name__}: {name!r}")
    return _canonical(name)


@functools.lru_cache(maxsize=64)  # called several times per training step: keep it O(1)
def _canonical(name: str) -> str:
    key = ALIASES.get(name.lower(), name.lower())
    if key not in ACTIVATIONS:
        raise ValueError(
            f"unknown activation {name!r}; valid names: {', '.join(ACTIVATIONS)}"
            + _did_you_mean(name, ACTIVATIONS)
        )
    return key


def resolve_params(name: str, params: dict) -> dict:
    """Fill in the defaults of ``name``'s parameters and reject parameters it does not take."""
    if not params:  # the common case on the hot path
        return dict(ACTIVATIONS[name].params)
    spec = ACTIVATIONS[name]
    unknown = set(params) - set(spec.params)
    if unknown:
        raise ValueError(
            f"activation {name!r} takes parameters {sorted(spec.params) or 'none'}, "
            f"got {sorted(unknown)}"
        )
    out = dict(spec.params)
    out.update({k: float(v) for k, v in params.items() if v is not None})
    return out


def _did_you_mean(name: str, options) -> str:
    return did_you_mean(str(name).lower(), options)
