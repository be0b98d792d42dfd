"""The numba backend's fused training step (``NumbaSGDStep``, ``_numba_kernels.sgd_step``).

One compiled call runs forward, loss, backward and the SGD update, the update inside the
weight-gradient GEMMs (deltas scaled by -lr, ``accum`` GEMMs into W). Checked against a float64
NumPy model taking the same step from the same weights, at the shapes where the kernels switch
path (narrow outputs <= 16 columns, serial vs parallel twins, widths that are not multiples of
the 6 x 64 tile, batch 1), and through ``MLP.fit`` against the per-op step.
"""

from __future__ import annotations

import numpy as np
import pytest

import mlpaccel
from mlpaccel import MLP

pytestmark = pytest.mark.skipif(
    mlpaccel.backends.unavailable_reason("numba") is not None, reason="numba not installed")

# (sizes, hidden activation, output activation, loss, use_bias, batch)
CASES = [
    ([784, 256, 256, 10], "relu", "softmax", "cross_entropy", True, 64),
    ([784, 256, 256, 10], "relu", "softmax", "cross_entropy", True, 256),  # parallel paths
    ([13, 70, 33, 5], "tanh", "softmax", "cross_entropy", True, 7),
    ([5, 17, 1], "sigmoid", "sigmoid", "mse", True, 1),
    ([9, 16, 16, 16, 3], "leaky_relu", None, "mse", False, 300),
    ([3, 1, 4], "linear", "linear", "mse", True, 20),
    ([20, 65, 64, 2], "gelu", "softmax", "cross_entropy", False, 129),
]
TOL = {np.float32: 2e-4, np.float64: 1e-10}  # max error / max update


def _models(sizes, act, out, loss, bias, dtype, fused=True, seed=0):
    kw = dict(activation=act, output_activation=out, loss=loss, use_bias=bias, init="he",
              random_state=seed)
    be = mlpaccel.get_backend("numba", fused_step=fused)
    m = MLP(sizes, backend=be, dtype=dtype, **kw)
    ref = MLP(sizes, backend="numpy", dtype="float64", **kw)
    ref.set_weights(m.get_weights())
    return m, ref


def _batch(rng, sizes, batch, loss, dtype):
    x = rng.standard_normal((batch, sizes[0])).astype(dtype)
    if loss == "cross_entropy":
        t = np.eye(sizes[-1], dtype=dtype)[rng.integers(0, sizes[-1], batch)]
    else:
        t = rng.random((batch, sizes[-1])).astype(dtype)
    return x, t


def _flat(model):
    return np.concatenate([np.ravel(a) for wb in model.get_weights() for a in wb
                           if a is not None]).astype(np.float64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("sizes,act,out,loss,bias,batch", CASES)
def test_fused_step_matches_float64_numpy_steps(sizes, act, out, loss, bias, batch, dtype):
    rng = np.random.default_rng(1)
    m, ref = _models(sizes, act, out, loss, bias, dtype)
    step = m.backend.fused_sgd_step(m, batch)
    assert step is not None
    p0 = _flat(ref)
    for _ in range(3):  # the workspace is reused and W changes in place between steps
        x, t = _batch(rng, sizes, batch, loss, dtype)
        got = float(step.step(m._params, x, t, 0.05))
        want = ref.train_step(x.astype(np.float64), t.astype(np.float64), "sgd", 0.05)
        assert got == pytest.approx(want, rel=TOL[dtype] * 10, abs=1e-12)
    moved = np.max(np.abs(_flat(ref) - p0))
    assert moved > 0
    assert np.max(np.abs(_flat(m) - _flat(ref))) <= TOL[dtype] * moved


def test_fit_runs_the_fused_step_and_matches_the_per_op_fit(monkeypatch):
    from mlpaccel.backends.numba_step import NumbaSGDStep

    calls = []
    real = NumbaSGDStep.epoch
    monkeypatch.setattr(NumbaSGDStep, "epoch", lambda self, p, X, *a: calls.append(
        (self.batch, X.shape[0])) or real(self, p, X, *a))
    monkeypatch.setattr(NumbaSGDStep, "step", lambda *a: pytest.fail("a Python call per step"))
    rng = np.random.default_rng(2)
    X = rng.standard_normal((300, 12)).astype(np.float32)
    y = rng.integers(0, 4, 300)
    runs = {}
    for fused in (True, False):
        m = MLP([12, 40, 20, 4], output_activation="softmax", random_state=3,
                backend=mlpaccel.get_backend("numba", fused_step=fused))
        m.fit(X, y, epochs=3, batch_size=64, learning_rate=0.1, verbose=0)
        runs[fused] = m
    assert calls == [(64, 300)] * 3  # one call per epoch; its short last batch inside it
    a, b = runs[True], runs[False]
    np.testing.assert_allclose(a.history["loss"], b.history["loss"], rtol=1e-5)
    np.testing.assert_allclose(_flat(a), _flat(b), rtol=1e-4, atol=1e-5)
    assert a.history["loss"][-1] < a.history["loss"][0]


@pytest.mark.parametrize("why", ["weight_decay", "bce", "off"])
def test_models_it_does_not_cover_train_through_the_per_op_step(monkeypatch, why):
    from mlpaccel.backends.numba_step import NumbaSGDStep

    monkeypatch.setattr(NumbaSGDStep, "step", lambda *a: pytest.fail("fused step used"))
    rng = np.random.default_rng(4)
    X = rng.standard_normal((50, 6)).astype(np.float32)
    y = rng.integers(0, 2, 50)
    be = mlpaccel.get_backend("numba", fused_step=why != "off")
    if why == "bce":
        m = MLP([6, 8, 1], output_activation="sigmoid", loss="binary_cross_entropy",
                backend=be)
        assert be.fused_sgd_step(m, 10) is None
    else:
        m = MLP([6, 8, 2], output_activation="softmax", backend=be)
    opt = mlpaccel.optim.SGD(learning_rate=0.1, weight_decay=1e-3 if why == "weight_decay"
                             else 0.0)
    m.fit(X, y, epochs=2, batch_size=10, optimizer=opt, verbose=0)
    assert np.isfinite(m.history["loss"][-1])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_epoch_call_equals_a_loop_of_steps(dtype):
    """``epoch`` runs the same kernels in the same order as one ``step`` per batch (the last
    one short): bit-identical weights, and the running loss of the trainer's axpy."""
    rng = np.random.default_rng(5)
    sizes = [30, 70, 20, 5]
    a, _ = _models(sizes, "relu", "softmax", "cross_entropy", True, dtype)
    b, _ = _models(sizes, "relu", "softmax", "cross_entropy", True, dtype)
    X, T = _batch(rng, sizes, 150, "cross_entropy", dtype)
    weights = np.array([64 / 150, 64 / 150, 22 / 150], dtype)
    acc = np.zeros((), dtype)
    a.backend.fused_sgd_step(a, 64).epoch(a._params, X, T, 0.05, weights, acc)
    want = np.zeros((), dtype)
    for i, r0 in enumerate(range(0, 150, 64)):
        m = min(64, 150 - r0)
        step = b.backend.fused_sgd_step(b, m)
        loss = step.step(b._params, X[r0:r0 + m], T[r0:r0 + m], 0.05)
        b.backend.axpy(float(weights[i]), loss, want)
    np.testing.assert_array_equal(a._params, b._params)
    assert float(acc) == float(want)  # both one FMA per batch (fastmath "contract")
    before = a._params.copy()
    step = a.backend.fused_sgd_step(a, 64)
    with pytest.raises(ValueError, match="3 .* values"):
        step.epoch(a._params, X, T, 0.05, weights[:2], acc)
    with pytest.raises(ValueError, match="0-d"):
        step.epoch(a._params, X, T, 0.05, weights, acc.reshape(1))
    with pytest.raises(ValueError, match=r"\(N, 30\)"):
        step.epoch(a._params, X[:, :29], T, 0.05, weights, acc)
    np.testing.assert_array_equal(a._params, before)


def test_fused_step_rejects_bad_buffers_and_leaves_weights_alone():
    m, _ = _models([6, 8, 3], "relu", "softmax", "cross_entropy", True, np.float32)
    step = m.backend.fused_sgd_step(m, 4)
    before = m._params.copy()
    x = np.zeros((4, 6), np.float32)
    t = np.zeros((4, 3), np.float32)
    with pytest.raises(ValueError, match=r"\(4, 6\)"):
        step.step(m._params, x[:3], t[:3], 0.1)
    with pytest.raises(ValueError, match="float32"):
        step.step(m._params, x.astype(np.float64), t, 0.1)
    with pytest.raises(ValueError, match="flat"):
        step.step(m._params[:-1], x, t, 0.1)
    np.testing.assert_array_equal(m._params, before)
    info = m.backend.info()
    assert info["fused_step"].startswith("on")
    assert mlpaccel.get_backend("numba", fused_step=False).info()["fused_step"].startswith("off")
