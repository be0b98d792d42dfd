"""Central finite differences (float64) against every analytic gradient, on every backend.

For a scalar function S of an input u, dS/du_i ~ (S(u + h e_i) - S(u - h e_i)) / 2h with an
error of order h^2 (truncation) + eps/h (rounding); h = 1e-5 keeps both far below the 1e-6
relative tolerance. Every function value is computed by the backend under test, so the check
ties each backend's derivative to its own forward pass. Points where the function has a kink
(relu, leaky_relu, elu, step at z = 0) are moved away from it.
"""

from __future__ import annotations

import numpy as np
import pytest

from mlpaccel import activations as acts

from .conftest import ACT_IDS, ACTIVATION_CASES

H = 1e-5
RTOL = 1e-6
KINKED = {"relu", "leaky_relu", "elu", "step"}


def numeric_grad(f, u: np.ndarray) -> np.ndarray:
    """Central differences of the scalar function ``f`` at ``u`` (float64), element by element."""
    grad = np.zeros_like(u)
    for i in np.ndindex(u.shape):
        old = u[i]
        u[i] = old + H
        hi = f(u)
        u[i] = old - H
        lo = f(u)
        u[i] = old
        grad[i] = (hi - lo) / (2 * H)
    return grad


def assert_grad_close(analytic, numeric, what: str):
    analytic = np.asarray(analytic, np.float64)
    assert analytic.shape == numeric.shape, f"{what}: shape {analytic.shape} != {numeric.shape}"
    denom = max(np.linalg.norm(analytic), np.linalg.norm(numeric))
    if denom == 0.0:  # both exactly zero (step): nothing to compare
        return
    rel = np.linalg.norm(analytic - numeric) / denom
    assert rel < RTOL, f"{what}: relative error {rel:.3g} >= {RTOL}"


def away_from_kink(z: np.ndarray, name: str, margin: float = 0.1) -> np.ndarray:
    """Push values within ``margin`` of 0 out of it when ``name`` has a kink at 0."""
    if name not in KINKED:
        return z
    return np.where(z >= 0, z + margin, z - margin)


def scalar(backend, a) -> float:
    return float(backend.to_numpy(a))


# ---------------------------------------------------------------------------- activations
@pytest.mark.parametrize("name,params", ACTIVATION_CASES, ids=ACT_IDS)
def test_activation_grad_matches_finite_differences(backend, rng, name, params):
    z = away_from_kink(2.0 * rng.standard_normal((3, 5)), name)
    g = rng.standard_normal(z.shape)

    def s(u):  # S(z) = sum(g * f(z)); dS/dz = activation_grad(z, f(z), g)
        return float(np.sum(g * backend.to_numpy(backend.activation(name, backend.asarray(u),
                                                                    **params))))

    dz = backend.asarray(z)
    a = backend.activation(name, dz, **params)
    analytic = backend.to_numpy(backend.activation_grad(name, dz, a, backend.asarray(g),
                                                        **params))
    assert_grad_close(analytic, numeric_grad(s, z.copy()), name)


def test_every_activation_is_covered():
    assert {n for n, _ in ACTIVATION_CASES} == set(acts.ACTIVATIONS)


# ---------------------------------------------------------------------------- losses
def _check_loss(backend, fn, o: np.ndarray, target):
    _, grad = fn(backend.asarray(o), target)
    numeric = numeric_grad(lambda u: scalar(backend, fn(backend.asarray(u), target)[0]), o.copy())
    assert_grad_close(backend.to_numpy(grad), numeric, fn.__name__)


def test_mse_grad(backend, rng):
    o, t = rng.standard_normal((4, 3)), rng.standard_normal((4, 3))
    _check_loss(backend, backend.mse, o, t)


def test_binary_cross_entropy_grad(backend, rng):
    o = rng.uniform(0.1, 0.9, (4, 3))  # inside the clipping range
    t = rng.uniform(0.0, 1.0, (4, 3))
    t[0] = [0.0, 1.0, 1.0]
    _check_loss(backend, backend.binary_cross_entropy, o, t)


@pytest.mark.parametrize("form", ["ids", "onehot", "probs"])
def test_softmax_cross_entropy_grad(backend, rng, form):
    m, c = 4, 5
    z = 3.0 * rng.standard_normal((m, c))
    ids = rng.integers(0, c, m)
    if form == "ids":
        labels = ids
    elif form == "onehot":
        labels = np.eye(c)[ids]
    else:
        labels = rng.dirichlet(np.ones(c), m)
    _check_loss(backend, backend.softmax_cross_entropy, z, labels)


# ---------------------------------------------------------------------------- dense layer
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("name,params", ACTIVATION_CASES, ids=ACT_IDS)
def test_linear_backward_matches_finite_differences(backend, rng, name, params, bias):
    m, k, n = 4, 3, 2 if name != "softmax" else 3
    for _ in range(100):  # draw until no pre-activation sits near a kink
        x, W = rng.standard_normal((m, k)), rng.standard_normal((k, n))
        b = rng.standard_normal(n) if bias else None
        z = x @ W + (b if bias else 0.0)
        if name not in KINKED or np.abs(z).min() > 0.05:
            break
    G = rng.standard_normal((m, n))

    def s(xx, WW, bb):  # S = sum(G * a), a = f(x W + b)
        _, a = backend.linear_forward(backend.asarray(xx), backend.asarray(WW),
                                      None if bb is None else backend.asarray(bb), name,
                                      **params)
        return float(np.sum(G * backend.to_numpy(a)))

    dx, dW = backend.asarray(x), backend.asarray(W)
    db = backend.asarray(b) if bias else None
    dz, da = backend.linear_forward(dx, dW, db, name, **params)
    gx, gW, gb = backend.linear_backward(dx, dW, dz, da, backend.asarray(G), name,
                                         has_bias=bias, **params)
    assert_grad_close(backend.to_numpy(gx), numeric_grad(lambda u: s(u, W, b), x.copy()),
                      "grad_x")
    assert_grad_close(backend.to_numpy(gW), numeric_grad(lambda u: s(x, u, b), W.copy()),
                      "grad_W")
    if bias:
        assert_grad_close(backend.to_numpy(gb), numeric_grad(lambda u: s(x, W, u), b.copy()),
                          "grad_b")
    else:
        assert gb is None
