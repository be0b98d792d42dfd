"""Optimizers: three steps of each against PyTorch's documented algorithm written out here in
NumPy (and against torch.optim itself when torch is installed), on the flat buffers."""

from __future__ import annotations

import numpy as np
import pytest

import mlpaccel
from mlpaccel import optim

N_STEPS = 3


def _pytorch_formula(name, p, grads, h):
    """PyTorch's documented update rules (torch.optim docs), default dampening/amsgrad off."""
    p = p.copy()
    lr, wd = h["learning_rate"], h.get("weight_decay", 0.0)
    s1 = np.zeros_like(p)
    s2 = np.zeros_like(p)
    for t, g in enumerate(grads, start=1):
        if name == "adamw":
            p = p * (1 - lr * wd)
        else:
            g = g + wd * p
        if name == "sgd":
            p = p - lr * g
        elif name in ("momentum", "nesterov"):
            s1 = g.copy() if t == 1 else h["momentum"] * s1 + g
            step = g + h["momentum"] * s1 if name == "nesterov" else s1
            p = p - lr * step
        elif name == "adagrad":
            s1 = s1 + g * g
            p = p - lr * g / (np.sqrt(s1) + h["eps"])
        elif name == "adadelta":
            s1 = h["rho"] * s1 + (1 - h["rho"]) * g * g
            delta = np.sqrt(s2 + h["eps"]) / np.sqrt(s1 + h["eps"]) * g
            s2 = h["rho"] * s2 + (1 - h["rho"]) * delta * delta
            p = p - lr * delta
        elif name == "rmsprop":
            s1 = h["rho"] * s1 + (1 - h["rho"]) * g * g
            p = p - lr * g / (np.sqrt(s1) + h["eps"])
        elif name in ("adam", "adamw"):
            s1 = h["beta1"] * s1 + (1 - h["beta1"]) * g
            s2 = h["beta2"] * s2 + (1 - h["beta2"]) * g * g
            mhat = s1 / (1 - h["beta1"] ** t)
            vhat = s2 / (1 - h["beta2"] ** t)
            p = p - lr * mhat / (np.sqrt(vhat) + h["eps"])
    return p


HPARAMS = {  # non-default values so a swapped or ignored argument shows
    "sgd": {"learning_rate": 0.1, "weight_decay": 0.01},
    "momentum": {"learning_rate": 0.05, "momentum": 0.8, "weight_decay": 0.02},
    "nesterov": {"learning_rate": 0.05, "momentum": 0.7, "weight_decay": 0.0},
    "adagrad": {"learning_rate": 0.2, "eps": 1e-10, "weight_decay": 0.01},
    "adadelta": {"learning_rate": 0.9, "rho": 0.85, "eps": 1e-6, "weight_decay": 0.01},
    "rmsprop": {"learning_rate": 0.01, "rho": 0.9, "eps": 1e-8, "weight_decay": 0.01},
    "adam": {"learning_rate": 0.01, "beta1": 0.8, "beta2": 0.99, "eps": 1e-8,
             "weight_decay": 0.01},
    "adamw": {"learning_rate": 0.01, "beta1": 0.85, "beta2": 0.995, "eps": 1e-8,
              "weight_decay": 0.1},
}


@pytest.mark.parametrize("name", list(HPARAMS))
def test_steps_match_pytorch_formulas(name, backend, rng):
    h = HPARAMS[name]
    p0 = rng.normal(size=37)
    grads = [rng.normal(size=37) for _ in range(N_STEPS)]
    opt = optim.get(name, **h)
    p = backend.asarray(p0, dtype=np.float64)
    for g in grads:
        opt.step(backend, p, backend.asarray(g, dtype=np.float64))
    np.testing.assert_allclose(backend.to_numpy(p), _pytorch_formula(name, p0, grads, h),
                               rtol=1e-12, atol=1e-14)
    assert opt.iterations == N_STEPS


@pytest.mark.parametrize("name", list(HPARAMS))
def test_steps_match_torch(name, rng):
    torch = pytest.importorskip("torch")
    h = HPARAMS[name]
    p0 = rng.normal(size=(5, 3))
    grads = [rng.normal(size=(5, 3)) for _ in range(N_STEPS)]
    tp = torch.nn.Parameter(torch.tensor(p0))
    lr, wd = h["learning_rate"], h["weight_decay"]
    ctor = {
        "sgd": lambda: torch.optim.SGD([tp], lr=lr, weight_decay=wd),
        "momentum": lambda: torch.optim.SGD([tp], lr=lr, momentum=h["momentum"],
                                            weight_decay=wd),
        "nesterov": lambda: torch.optim.SGD([tp], lr=lr, momentum=h["momentum"],
                                            weight_decay=wd, nesterov=True),
        "adagrad": lambda: torch.optim.Adagrad([tp], lr=lr, eps=h["eps"], weight_decay=wd),
        "adadelta": lambda: torch.optim.Adadelta([tp], lr=lr, rho=h["rho"], eps=h["eps"],
                                                 weight_decay=wd),
        "rmsprop": lambda: torch.optim.RMSprop([tp], lr=lr, alpha=h["rho"], eps=h["eps"],
                                               weight_decay=wd),
        "adam": lambda: torch.optim.Adam([tp], lr=lr, betas=(h["beta1"], h["beta2"]),
                                         eps=h["eps"], weight_decay=wd),
        "adamw": lambda: torch.optim.AdamW([tp], lr=lr, betas=(h["beta1"], h["beta2"]),
                                           eps=h["eps"], weight_decay=wd),
    }[name]()
    backend = mlpaccel.get_backend("numpy")
    opt = optim.get(name, **h)
    p = backend.asarray(p0.ravel(), dtype=np.float64)
    for g in grads:
        tp.grad = torch.tensor(g)
        ctor.step()
        opt.step(backend, p, backend.asarray(g.ravel(), dtype=np.float64))
    np.testing.assert_allclose(backend.to_numpy(p), tp.detach().numpy().ravel(), rtol=1e-10,
                               atol=1e-12)


def test_defaults_are_pytorchs():
    assert optim.get("adam").hparams == {"learning_rate": 1e-3, "beta1": 0.9, "beta2": 0.999,
                                         "eps": 1e-8, "weight_decay": 0.0}
    assert optim.get("adamw").hparams["weight_decay"] == 0.01
    assert optim.get("adadelta").hparams["learning_rate"] == 1.0
    assert optim.get("rmsprop").hparams["rho"] == 0.99
    assert optim.get("adagrad").hparams["eps"] == 1e-10


def test_get_names_classes_and_errors():
    assert isinstance(optim.get("Adam"), optim.Adam)
    assert isinstance(optim.get("nesterov"), optim.Nesterov)
    o = optim.AdamW(learning_rate=0.1)
    assert optim.get(o) is o
    with pytest.raises(ValueError, match="did you mean 'adam'"):
        optim.get("adma")
    with pytest.raises(TypeError, match="momentum"):
        optim.get("adam", momentum=0.9)
    with pytest.raises(ValueError, match="learning_rate"):
        optim.get("sgd", learning_rate=float("nan"))
    with pytest.raises(TypeError):
        optim.get(3)


def test_state_persists_and_reset_clears(rng):
    backend = mlpaccel.get_backend("numpy")
    opt = optim.Momentum(learning_rate=0.1, momentum=0.9)
    p = backend.asarray(np.zeros(4), dtype=np.float64)
    g = backend.asarray(np.ones(4), dtype=np.float64)
    opt.step(backend, p, g)
    opt.step(backend, p, g)  # buf = 1.9 on the second step
    np.testing.assert_allclose(backend.to_numpy(p), -0.1 * (1 + 1.9))
    opt.reset()
    assert opt.iterations == 0 and opt.state == []


def test_state_moves_with_the_model_between_backends(rng):
    """A model moved with .to() keeps its Adam moments (carried through the host)."""
    X, y = rng.normal(size=(8, 3)), rng.integers(0, 2, 8)
    kw = dict(activation="tanh", loss="cross_entropy", dtype="float64", random_state=0)
    a = mlpaccel.MLP([3, 4, 2], backend="numpy", **kw)
    b = mlpaccel.MLP([3, 4, 2], backend="numpy", **kw)
    oa, ob = optim.Adam(learning_rate=0.05), optim.Adam(learning_rate=0.05)
    for _ in range(3):
        a.train_step(X, y, optimizer=oa)
        b.train_step(X, y, optimizer=ob)
    b.to("python")
    for _ in range(2):
        a.train_step(X, y, optimizer=oa)
        b.train_step(X, y, optimizer=ob)
    for (wa, ba), (wb, bb) in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_allclose(wa, wb, rtol=1e-12)
        np.testing.assert_allclose(ba, bb, rtol=1e-12)
