"""Every Backend operation on every backend against the float64 reference (reference.py).

Inputs are drawn fresh per test (the ``rng`` fixture), in the dtype under test; the reference
runs in float64 on exactly those values. Tolerances are per dtype (conftest.TOLERANCE for
elementwise results, conftest.MATMUL_RTOL for anything containing a K-term sum).
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from mlpaccel import activations as acts
from mlpaccel.backends import reference as ref

from .conftest import ACT_IDS, ACTIVATION_CASES, DTYPES, MATMUL_RTOL, SLOW_BACKENDS, TOLERANCE

HYPO = settings(max_examples=20, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow])

#: magnitudes up to 1e4 on both sides (the contract's stability range), plus zero
EXTREMES = np.array([-1e4, -1e3, -100.0, -30.0, -5.0, -1e-3, 0.0, 1e-3, 5.0, 30.0, 100.0,
                     1e3, 1e4])


@contextlib.contextmanager
def strict_numerics():
    """Turn every warning, and NumPy overflow / invalid / divide-by-zero, into an error."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with np.errstate(over="raise", invalid="raise", divide="raise"):
            yield


def host(backend, a) -> np.ndarray:
    out = backend.to_numpy(a)
    assert isinstance(out, np.ndarray)
    return out


def close(actual, expected, dtype, scale=1.0):
    """Elementwise comparison with the per-dtype tolerance; ``scale`` widens atol."""
    rtol, atol = TOLERANCE[np.dtype(dtype)]
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, rtol=rtol,
                               atol=atol * scale)


def close_sum(actual, expected, dtype, k):
    """Norm-wise comparison for results of K-term sums (matmul, column sums)."""
    actual = np.asarray(actual, np.float64)
    assert actual.shape == expected.shape
    assert np.all(np.isfinite(actual))
    err = np.linalg.norm(actual - expected)
    bound = MATMUL_RTOL[np.dtype(dtype)] * np.sqrt(max(k, 1)) * max(np.linalg.norm(expected),
                                                                   1e-300)
    assert err <= bound, f"relative error {err / max(np.linalg.norm(expected), 1e-300):.3g}"


def draw(rng, shape, dtype, scale=1.0):
    return (scale * rng.standard_normal(shape)).astype(dtype)


# ---------------------------------------------------------------------------- matmul
# 32^3: square, so a transpose that is really a reshape (same shape, wrong values) shows up
SMALL_SHAPES = [(1, 1, 1), (7, 13, 5), (32, 32, 32), (257, 129, 65)]
LARGE_SHAPES = [(512, 512, 512), (1000, 784, 128), (64, 2048, 33)]


def _check_matmul(backend, rng, m, k, n, ta, tb, dtype, use_out):
    a = draw(rng, (k, m) if ta else (m, k), dtype)
    b = draw(rng, (n, k) if tb else (k, n), dtype)
    expected = ref.matmul(a.astype(np.float64), b.astype(np.float64), ta, tb)
    da, db = backend.asarray(a), backend.asarray(b)
    out = backend.zeros((m, n), dtype) if use_out else None
    c = backend.matmul(da, db, transpose_a=ta, transpose_b=tb, out=out)
    if use_out:
        assert c is out
    assert c.shape == (m, n) and c.dtype == np.dtype(dtype)
    close_sum(host(backend, c), expected, dtype, k)
    # the operands are read, never written
    np.testing.assert_array_equal(host(backend, da), a)
    np.testing.assert_array_equal(host(backend, db), b)


@pytest.mark.parametrize("use_out", [False, True], ids=["new", "out"])
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("tb", [False, True], ids=["B", "Bt"])
@pytest.mark.parametrize("ta", [False, True], ids=["A", "At"])
@pytest.mark.parametrize("shape", SMALL_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matmul(backend, rng, shape, ta, tb, dtype, use_out):
    _check_matmul(backend, rng, *shape, ta, tb, dtype, use_out)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("tb", [False, True], ids=["B", "Bt"])
@pytest.mark.parametrize("ta", [False, True], ids=["A", "At"])
@pytest.mark.parametrize("shape", LARGE_SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_matmul_large(backend, rng, shape, ta, tb, dtype):
    if backend.name in SLOW_BACKENDS:
        pytest.skip(f"{backend.name} is too slow for {shape}; small shapes cover it")
    _check_matmul(backend, rng, *shape, ta, tb, dtype, use_out=False)


@HYPO
@given(m=st.integers(1, 24), k=st.integers(1, 24), n=st.integers(1, 24), ta=st.booleans(),
       tb=st.booleans(), dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**32 - 1))
def test_matmul_hypothesis(backend, m, k, n, ta, tb, dtype, seed):
    _check_matmul(backend, np.random.default_rng(seed), m, k, n, ta, tb, dtype, use_out=False)


def test_matmul_rejects_mismatched_shapes(backend):
    a, b = backend.zeros((3, 4), np.float64), backend.zeros((5, 2), np.float64)
    with pytest.raises(ValueError):
        backend.matmul(a, b)


# ---------------------------------------------------------------------------- activations
def _act_inputs(rng, dtype):
    """A (16, 13) matrix: random values of several magnitudes plus the extremes per row."""
    z = draw(rng, (16, EXTREMES.size), np.float64, scale=3.0)
    z[0], z[1] = EXTREMES, -EXTREMES
    z[2] = rng.permutation(EXTREMES)
    z[3] *= 1e3
    return z.astype(dtype)


def _check_activation(backend, name, params, z, use_out=False):
    dtype = z.dtype
    z64 = z.astype(np.float64)
    expected = ref.activation(name, z64, **params)
    dz = backend.asarray(z)
    out = backend.zeros(z.shape, dtype) if use_out else None
    with strict_numerics():
        a = backend.activation(name, dz, out=out, **params)
        got = host(backend, a)
    if use_out:
        assert a is out
    assert got.shape == z.shape and got.dtype == dtype
    assert np.all(np.isfinite(got)), f"{name}: non-finite output"
    close(got, expected, dtype)


def _check_activation_grad(backend, rng, name, params, z, use_out=False):
    dtype = z.dtype
    z64 = z.astype(np.float64)
    a = ref.activation(name, z64, **params).astype(dtype)  # the same a for backend and oracle
    g = draw(rng, z.shape, dtype)
    expected = ref.activation_grad(name, z64, a.astype(np.float64), g.astype(np.float64),
                                   **params)
    out = backend.zeros(z.shape, dtype) if use_out else None
    with strict_numerics():
        r = backend.activation_grad(name, backend.asarray(z), backend.asarray(a),
                                    backend.asarray(g), out=out, **params)
        got = host(backend, r)
    if use_out:
        assert r is out
    assert got.shape == z.shape and got.dtype == dtype
    assert np.all(np.isfinite(got)), f"{name}: non-finite gradient"
    # softmax's JVP subtracts a row sum: cancellation scales with |g|
    close(got, expected, dtype, scale=float(np.abs(g).max()))


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name,params", ACTIVATION_CASES, ids=ACT_IDS)
def test_activation(backend, rng, name, params, dtype):
    z = _act_inputs(rng, dtype)
    _check_activation(backend, name, params, z)
    _check_activation(backend, name, params, z, use_out=True)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("name,params", ACTIVATION_CASES, ids=ACT_IDS)
def test_activation_grad(backend, rng, name, params, dtype):
    z = _act_inputs(rng, dtype)
    _check_activation_grad(backend, rng, name, params, z)
    _check_activation_grad(backend, rng, name, params, z, use_out=True)


@HYPO
@given(name=st.sampled_from(list(acts.ACTIVATIONS)), dtype=st.sampled_from(DTYPES),
       z=hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=2, max_side=9),
                    elements=st.floats(-1e4, 1e4, allow_subnormal=False)),
       seed=st.integers(0, 2**32 - 1))
def test_activation_hypothesis(backend, name, dtype, z, seed):
    z = z.astype(dtype)
    _check_activation(backend, name, {}, z)
    _check_activation_grad(backend, np.random.default_rng(seed), name, {}, z)


#: float32 subnormals (|z| < 1.18e-38) and their neighbours: a GPU kernel compiled with
#: flush-to-zero (CuPy always passes -ftz=true) reads them as 0 in a plain compare
SUBNORMALS32 = np.array([[1.7056e-41, -1.7056e-41, 1e-45, -1e-45, 1.1e-38, 1.2e-38, 0.0, -0.0,
                          3.0, -3.0]], dtype=np.float32)


@pytest.mark.parametrize("name", ["step", "relu", "leaky_relu", "elu", "linear"])
def test_sign_based_activations_see_float32_subnormals(backend, rng, name):
    """step, relu, leaky_relu, elu switch on z > 0: a positive subnormal is > 0 (found by
    hypothesis on an H200: step(1.7e-41) gave 0 under flush-to-zero)."""
    _check_activation(backend, name, {}, SUBNORMALS32)
    _check_activation_grad(backend, rng, name, {}, SUBNORMALS32)
    got = host(backend, backend.activation(name, backend.asarray(SUBNORMALS32)))
    want = ref.activation(name, SUBNORMALS32.astype(np.float64))
    if name == "step":
        np.testing.assert_array_equal(got, want)


def test_activation_aliases_and_bad_names(backend, rng):
    z = backend.asarray(draw(rng, (2, 3), np.float64))
    np.testing.assert_array_equal(host(backend, backend.activation("logistic", z)),
                                  host(backend, backend.activation("sigmoid", z)))
    with pytest.raises(ValueError, match="valid names"):
        backend.activation("sigmoidd", z)
    with pytest.raises(ValueError, match="alpha"):
        backend.activation("relu", z, alpha=0.1)


# ---------------------------------------------------------------------------- helpers
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_bias_add_and_sum_rows(backend, rng, dtype):
    for m, n in [(1, 1), (7, 5), (129, 33)]:
        z, b = draw(rng, (m, n), dtype), draw(rng, (n,), dtype)
        expected = ref.bias_add(z.astype(np.float64), b.astype(np.float64))
        dz, db = backend.asarray(z), backend.asarray(b)
        close(host(backend, backend.bias_add(dz, db)), expected, dtype)
        np.testing.assert_array_equal(host(backend, dz), z)  # not in place without out=
        r = backend.bias_add(dz, db, out=dz)  # the contract allows out=z
        assert r is dz
        close(host(backend, dz), expected, dtype)

        x = draw(rng, (m, n), dtype)
        expected = ref.sum_rows(x.astype(np.float64))
        close_sum(host(backend, backend.sum_rows(backend.asarray(x))), expected, dtype, m)
        out = backend.zeros((n,), dtype)
        assert backend.sum_rows(backend.asarray(x), out=out) is out
        close_sum(host(backend, out), expected, dtype, m)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_axpy_and_scale(backend, rng, dtype):
    x, y = draw(rng, (6, 7), dtype), draw(rng, (6, 7), dtype)
    dx, dy = backend.asarray(x), backend.asarray(y)
    assert backend.axpy(-0.75, dx, dy) is dy
    close(host(backend, dy), y.astype(np.float64) - 0.75 * x.astype(np.float64), dtype)
    np.testing.assert_array_equal(host(backend, dx), x)
    assert backend.scale(2.5, dx) is dx
    close(host(backend, dx), 2.5 * x.astype(np.float64), dtype)


# ---------------------------------------------------------------------------- arrays
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_array_round_trips(backend, rng, dtype):
    x = draw(rng, (5, 3), dtype)
    x0 = x.copy()
    d = backend.asarray(x)
    assert d.shape == (5, 3) and d.dtype == np.dtype(dtype)
    back = host(backend, d)
    np.testing.assert_array_equal(back, x)
    assert back.dtype == np.dtype(dtype)
    back[0, 0] = 123.0  # to_numpy is a copy
    assert host(backend, d)[0, 0] == x[0, 0]
    x[1, 1] = 321.0  # asarray is a copy
    assert host(backend, d)[1, 1] != 321.0

    again = backend.asarray(d)  # from the backend's own array
    assert again.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(host(backend, again), host(backend, d))
    other = np.float64 if dtype == np.float32 else np.float32
    assert backend.asarray(x, dtype=other).dtype == np.dtype(other)
    converted = backend.asarray(d, dtype=np.dtype(other))  # device array to the other dtype
    assert converted.dtype == np.dtype(other)
    np.testing.assert_array_equal(host(backend, converted), x0.astype(other))
    assert backend.asarray([[1.0, 2.0]]).dtype == np.float32  # non-array input: float32
    np.testing.assert_array_equal(host(backend, backend.asarray([[1.0, 2.0]], dtype)),
                                  [[1.0, 2.0]])
    with pytest.raises(TypeError):
        backend.asarray(x, dtype=np.int32)

    for shape in [4, (4,), (2, 3), (0, 3)]:
        z = backend.zeros(shape, dtype)
        expected = (shape,) if isinstance(shape, int) else shape
        assert z.shape == expected and z.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(host(backend, z), np.zeros(expected))
    c = backend.copy(d)
    backend.scale(2.0, c)
    np.testing.assert_array_equal(host(backend, d), x0)  # the copy is independent
    np.testing.assert_array_equal(host(backend, c), 2 * x0)
    assert backend.empty((2, 2), dtype).shape == (2, 2)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_view_and_assign_share_the_flat_buffer(backend, rng, dtype):
    flat = backend.zeros((20,), dtype)
    w = backend.view(flat, 3, (3, 4))  # elements 3..14
    b = backend.view(flat, 15, (4,))  # elements 15..18
    assert w.shape == (3, 4) and b.shape == (4,)
    vals = draw(rng, (3, 4), dtype)
    backend.assign(w, vals)  # from host data
    bias = backend.asarray(draw(rng, (4,), dtype))
    backend.assign(b, bias)  # from a backend array
    expected = np.zeros(20, dtype)
    expected[3:15] = vals.ravel()
    expected[15:19] = host(backend, bias)
    np.testing.assert_array_equal(host(backend, flat), expected)
    np.testing.assert_array_equal(host(backend, w), vals)

    backend.scale(2.0, w)  # an in-place op on a view writes through to flat
    backend.axpy(1.0, bias, b)
    expected[3:19] *= 2
    np.testing.assert_array_equal(host(backend, flat), expected)

    # an op writing into a view through out= lands in flat too
    x = draw(rng, (2, 3), dtype)
    backend.matmul(backend.asarray(x), backend.view(flat, 0, (3, 4)),
                   out=backend.view(flat, 12, (2, 4)))
    got = host(backend, flat)
    np.testing.assert_array_equal(got[:12], expected[:12])
    close_sum(got[12:], (x.astype(np.float64) @ expected[:12].reshape(3, 4)).ravel(), dtype, 3)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_take_rows(backend, rng, dtype):
    x = draw(rng, (11, 4), dtype)
    idx = rng.permutation(11)[:6]
    d = backend.asarray(x)
    np.testing.assert_array_equal(host(backend, backend.take_rows(d, idx)), x[idx])
    out = backend.zeros((6, 4), dtype)
    assert backend.take_rows(d, idx, out=out) is out
    np.testing.assert_array_equal(host(backend, out), x[idx])
    rep = np.array([3, 3, 0], dtype=np.int32)
    np.testing.assert_array_equal(host(backend, backend.take_rows(d, rep)), x[rep])
    # rows that are not whole 16-byte slots (7 columns), negative indices, many rows
    y = draw(rng, (300, 7), dtype)
    back = np.array([-1, 0, 299, -300, 5])
    np.testing.assert_array_equal(host(backend, backend.take_rows(backend.asarray(y), back)),
                                  y[back])
    perm = rng.permutation(300)
    z = draw(rng, (300, 12), dtype)
    np.testing.assert_array_equal(host(backend, backend.take_rows(backend.asarray(z), perm)),
                                  z[perm])
    with pytest.raises(IndexError):
        backend.take_rows(d, np.array([11]))
    # one order checked (and uploaded) once by row_indices, then used for several gathers
    both = backend.row_indices(back, 300)
    for arr in (y, draw(rng, (300, 3), dtype)):
        np.testing.assert_array_equal(host(backend, backend.take_rows(backend.asarray(arr),
                                                                       both)), arr[back])
    with pytest.raises(IndexError, match="out of range for 300 rows"):
        backend.row_indices(np.array([0, 300]), 300)
    with pytest.raises(TypeError, match="1-D integer"):
        backend.row_indices(np.array([0.5]), 300)


# ---------------------------------------------------------------------------- losses
def _loss(backend, fn, output, target):
    with strict_numerics():
        loss, grad = fn(backend.asarray(output), target)
        lv, gv = host(backend, loss), host(backend, grad)
    assert lv.ndim == 0, "a loss is a 0-d backend array"
    assert gv.shape == np.shape(output) and gv.dtype == output.dtype
    assert np.isfinite(float(lv)) and np.all(np.isfinite(gv))
    return float(lv), gv


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_mse(backend, rng, dtype):
    for m, n in [(1, 1), (1, 3), (17, 4)]:
        o, t = draw(rng, (m, n), dtype), draw(rng, (m, n), dtype)
        el, eg = ref.mse(o.astype(np.float64), t.astype(np.float64))
        for target in (t, backend.asarray(t)):
            lv, gv = _loss(backend, backend.mse, o, target)
            close(lv, el, dtype)
            close(gv, eg, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
def test_binary_cross_entropy(backend, rng, dtype):
    o = rng.uniform(1e-3, 1 - 1e-3, (9, 3)).astype(dtype)
    t = rng.integers(0, 2, (9, 3)).astype(dtype)
    t[0] = rng.uniform(0, 1, 3)  # soft targets are allowed
    el, eg = ref.binary_cross_entropy(o.astype(np.float64), t.astype(np.float64))
    for target in (t, backend.asarray(t)):
        lv, gv = _loss(backend, backend.binary_cross_entropy, o, target)
        close(lv, el, dtype)
        close(gv, eg, dtype)


def test_binary_cross_entropy_clips_saturated_outputs(backend):
    o = np.array([[0.0, 1.0, 1e-20, 1 - 1e-16, 0.5]])
    t = np.array([[1.0, 0.0, 1.0, 0.0, 1.0]])
    el, eg = ref.binary_cross_entropy(o, t)
    lv, gv = _loss(backend, backend.binary_cross_entropy, o, t)
    np.testing.assert_allclose(lv, el, rtol=1e-9)
    np.testing.assert_allclose(gv, eg, rtol=1e-9)
    # float32 clips at 1e-7: finite, and the saturated gradients are huge with the right sign
    lv, gv = _loss(backend, backend.binary_cross_entropy, o.astype(np.float32), t)
    assert lv > 5 and gv[0, 0] < -1e5 and gv[0, 1] > 1e5


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("form", ["ids", "onehot", "probs"])
def test_softmax_cross_entropy(backend, rng, dtype, form):
    m, c = 13, 7
    z = draw(rng, (m, c), dtype, scale=3.0)
    z[0] = [1e4, -1e4, 0, 5, -5, 1e4, 3]  # extreme logits: no overflow, finite loss
    z[1] = -1e4
    z[2, 0] = 1e3
    ids = rng.integers(0, c, m)
    if form == "ids":
        labels = ids
    elif form == "onehot":
        labels = ref.one_hot(ids, c, dtype)
    else:
        labels = rng.dirichlet(np.ones(c), m).astype(dtype)
    el, eg = ref.softmax_cross_entropy(z.astype(np.float64), labels)
    lv, gv = _loss(backend, backend.softmax_cross_entropy, z, labels)
    close(lv, el, dtype, scale=max(1.0, abs(el)))
    close(gv, eg, dtype)
    if form != "ids":  # labels may also live on the device
        lv2, gv2 = _loss(backend, backend.softmax_cross_entropy, z, backend.asarray(labels))
        assert lv2 == pytest.approx(lv) and np.allclose(gv2, gv)


@HYPO
@given(z=hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=2, max_side=8),
                    elements=st.floats(-1e4, 1e4, allow_subnormal=False)),
       dtype=st.sampled_from(DTYPES), seed=st.integers(0, 2**32 - 1))
def test_softmax_cross_entropy_hypothesis(backend, z, dtype, seed):
    z = z.astype(dtype)
    labels = np.random.default_rng(seed).integers(0, z.shape[1], z.shape[0])
    el, eg = ref.softmax_cross_entropy(z.astype(np.float64), labels)
    lv, gv = _loss(backend, backend.softmax_cross_entropy, z, labels)
    # the loss carries the logits' own rounding (|z| up to 1e4): compare at their scale
    close(lv, el, dtype, scale=max(1.0, float(np.abs(z).max())))
    close(gv, eg, dtype)


# ---------------------------------------------------------------------------- optimizers
OPT_CASES = [  # (backend method, reference function, state count, hyper-parameters)
    ("sgd_update", ref.sgd, 0, {"lr": 0.1}),
    ("sgd_update", ref.sgd, 0, {"lr": 0.1, "weight_decay": 0.01}),
    ("momentum_update", ref.momentum, 1, {"lr": 0.05, "momentum": 0.9}),
    ("momentum_update", ref.momentum, 1, {"lr": 0.05, "momentum": 0.8, "weight_decay": 0.1,
                                          "nesterov": True}),
    ("adagrad_update", ref.adagrad, 1, {"lr": 0.1}),
    ("adagrad_update", ref.adagrad, 1, {"lr": 0.1, "eps": 1e-6, "weight_decay": 0.05}),
    ("adadelta_update", ref.adadelta, 2, {}),
    ("adadelta_update", ref.adadelta, 2, {"lr": 0.5, "rho": 0.8, "eps": 1e-5,
                                          "weight_decay": 0.1}),
    ("rmsprop_update", ref.rmsprop, 1, {}),
    ("rmsprop_update", ref.rmsprop, 1, {"lr": 0.003, "rho": 0.9, "weight_decay": 0.02}),
    ("adam_update", ref.adam, 2, {}),
    ("adam_update", ref.adam, 2, {"lr": 0.01, "beta1": 0.8, "beta2": 0.99, "eps": 1e-6,
                                  "weight_decay": 0.1}),
    ("adam_update", ref.adam, 2, {"lr": 0.01, "weight_decay": 0.1, "decoupled": True}),
]


def _opt_id(case):
    method, _, _, hp = case
    return method.removesuffix("_update") + "".join(f"-{k}{v}" for k, v in hp.items())


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("case", OPT_CASES, ids=[_opt_id(c) for c in OPT_CASES])
def test_optimizer_update(backend, rng, case, dtype):
    method, oracle, n_states, hp = case
    n, off, steps = 37, 5, 4
    # the parameters and states are views into flat buffers, as in the trainer
    p0 = draw(rng, (n,), dtype)
    flat_p = backend.asarray(np.concatenate([np.full(off, 7.0, dtype), p0]))
    p = backend.view(flat_p, off, (n,))
    states = [backend.zeros((n,), dtype) for _ in range(n_states)]
    ep, es = p0.astype(np.float64), [np.zeros(n) for _ in range(n_states)]
    for step in range(1, steps + 1):
        g = draw(rng, (n,), dtype)
        extra = {"step": step} if method == "adam_update" else {}
        with strict_numerics():
            result = getattr(backend, method)(p, backend.asarray(g), *states, **extra, **hp)
        assert result is None, "updates work in place and return None"
        pos = (step,) if method == "adam_update" else ()
        out = oracle(ep, g.astype(np.float64), *es, *pos, **hp)
        ep, es = (out, []) if n_states == 0 else (out[0], list(out[1:]))
    rtol, atol = TOLERANCE[np.dtype(dtype)]
    got = host(backend, flat_p)
    np.testing.assert_array_equal(got[:off], 7.0)  # neighbours in the flat buffer untouched
    np.testing.assert_allclose(got[off:], ep, rtol=5 * rtol, atol=5 * atol)
    for s, e in zip(states, es):
        np.testing.assert_allclose(host(backend, s), e, rtol=5 * rtol, atol=5 * atol)


# ---------------------------------------------------------------------------- fused layers
@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("name,params", ACTIVATION_CASES, ids=ACT_IDS)
def test_linear_forward_backward(backend, rng, name, params, bias, dtype):
    m, k, n = 19, 11, 6
    x, W = draw(rng, (m, k), dtype), draw(rng, (k, n), dtype, scale=0.5)
    b = draw(rng, (n,), dtype) if bias else None
    x64, W64 = x.astype(np.float64), W.astype(np.float64)
    z64 = x64 @ W64 + (b.astype(np.float64) if bias else 0.0)
    a64 = ref.activation(name, z64, **params)

    dx, dW = backend.asarray(x), backend.asarray(W)
    db = backend.asarray(b) if bias else None
    with strict_numerics():
        z, a = backend.linear_forward(dx, dW, db, name, **params)
    if name == "linear":
        assert a is z, "for 'linear' the activation is z itself"
    close_sum(host(backend, z), z64, dtype, k)
    zb = host(backend, z).astype(np.float64)  # the backend's z: a must be f(that z)
    close(host(backend, a), ref.activation(name, zb, **params), dtype,
          scale=float(np.abs(zb).max()))

    # with preallocated outputs
    oz, oa = backend.zeros((m, n), dtype), backend.zeros((m, n), dtype)
    z2, a2 = backend.linear_forward(dx, dW, db, name, out_z=oz, out_a=oa, **params)
    assert z2 is oz and (name == "linear" or a2 is oa)
    np.testing.assert_allclose(host(backend, z2), host(backend, z), rtol=1e-6, atol=1e-12)

    # backward from the reference z, a (cast to dtype) so only the backward is under test
    zc, ac, ga = z64.astype(dtype), a64.astype(dtype), draw(rng, (m, n), dtype)
    delta = ref.activation_grad(name, zc.astype(np.float64), ac.astype(np.float64),
                                ga.astype(np.float64), **params)
    for need_grad_x in (True, False):
        owW = backend.zeros((k, n), dtype)
        owb = backend.zeros((n,), dtype) if bias else None
        with strict_numerics():
            gx, gW, gb = backend.linear_backward(
                dx, dW, backend.asarray(zc), backend.asarray(ac), backend.asarray(ga), name,
                need_grad_x=need_grad_x, has_bias=bias, out_grad_W=owW, out_grad_b=owb,
                **params)
        assert gW is owW and (gb is owb)
        close_sum(host(backend, gW), x64.T @ delta, dtype, m)
        if bias:
            close_sum(host(backend, gb), delta.sum(axis=0), dtype, m)
        else:
            assert gb is None
        if need_grad_x:
            close_sum(host(backend, gx), delta @ W64.T, dtype, n)
        else:
            assert gx is None


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("top", ["relu", "linear"])
@pytest.mark.parametrize("name,params", ACTIVATION_CASES, ids=ACT_IDS)
@pytest.mark.parametrize("m,k,n", [(21, 9, 7), (40, 67, 33)], ids=["narrow", "wide"])
def test_linear_backward_hands_down_the_delta_of_the_layer_below(backend, rng, name, params,
                                                                 top, dtype, m, k, n):
    """``below=(f, z, a, params)``: grad_x comes back as (delta W^T) * f'(z) of the layer
    that produced x, ready for that layer's call with activation="linear". ``wide``: the
    layer below is wider than a narrow kernel's 16 columns (numba then applies f' in the
    GEMM's epilogue, on partial tiles too)."""
    x, W = draw(rng, (m, k), dtype), draw(rng, (k, n), dtype, scale=0.5)
    zb64 = rng.standard_normal((m, k))  # the layer below's z and a = f(z)
    ab64 = ref.activation(name, zb64, **params)
    z64 = x.astype(np.float64) @ W.astype(np.float64)
    a64 = ref.activation(top, z64)
    ga = draw(rng, (m, n), dtype)
    zc, ac, zbc, abc = (v.astype(dtype) for v in (z64, a64, zb64, ab64))
    delta = ref.activation_grad(top, zc.astype(np.float64), ac.astype(np.float64),
                                ga.astype(np.float64))
    expected = ref.activation_grad(name, zbc.astype(np.float64), abc.astype(np.float64),
                                   delta @ W.astype(np.float64).T, **params)
    with strict_numerics():
        gx, gW, gb = backend.linear_backward(
            backend.asarray(x), backend.asarray(W), backend.asarray(zc), backend.asarray(ac),
            backend.asarray(ga), top,
            below=(name, backend.asarray(zbc), backend.asarray(abc), params))
    close_sum(host(backend, gx), expected, dtype, n)
    close_sum(host(backend, gW), x.astype(np.float64).T @ delta, dtype, m)
    close_sum(host(backend, gb), delta.sum(axis=0), dtype, m)
    with pytest.raises(TypeError, match="below"):
        backend.linear_backward(backend.asarray(x), backend.asarray(W), backend.asarray(zc),
                                backend.asarray(ac), backend.asarray(ga), top, below="relu")


def _output_layer_reference(x, W, b, t, below_name, zb, ab, params):
    """float64: E, the layer below's delta (or the raw grad_x), grad_W, grad_b of a linear
    softmax-CE output layer."""
    x, W, t = (np.asarray(v, np.float64) for v in (x, W, t))
    z = x @ W + (0.0 if b is None else np.asarray(b, np.float64))
    mx = z.max(axis=1, keepdims=True)
    e = np.exp(z - mx)
    s = e.sum(axis=1, keepdims=True)
    E = float(np.mean(mx[:, 0] + np.log(s[:, 0]) - (t * z).sum(axis=1)))
    delta = (e / s - t) / len(x)
    gx = delta @ W.T
    if below_name is not None:
        gx = ref.activation_grad(below_name, np.asarray(zb, np.float64),
                                 np.asarray(ab, np.float64), gx, **params)
    return E, gx, x.T @ delta, delta.sum(axis=0)


#: (M, K, C): one row; rows < one 8-row chunk; many chunks per block; C at the 16 and 32 limits;
#: C past 32 (the cuda kernel's limit: composed ops)
OUTPUT_LAYER_SHAPES = [(1, 3, 2), (7, 13, 10), (150, 40, 16), (67, 9, 32), (20, 11, 33)]


@pytest.mark.parametrize("dtype", DTYPES, ids=["f32", "f64"])
@pytest.mark.parametrize("below", [None, "linear", "relu", "tanh", "elu"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
@pytest.mark.parametrize("m,k,c", OUTPUT_LAYER_SHAPES, ids=lambda v: str(v))
def test_output_layer_grad_is_forward_loss_and_backward(backend, rng, m, k, c, bias, below,
                                                        dtype):
    """``output_layer_grad``: linear + softmax-CE on one-hot rows, the loss, grad_W, grad_b
    and the layer below's delta against float64 (the cuda backends run it as one kernel up
    to 32 classes; every other case composes the ops)."""
    x, W = draw(rng, (m, k), dtype), draw(rng, (k, c), dtype, scale=0.5)
    b = draw(rng, (c,), dtype) if bias else None
    t = np.eye(c, dtype=dtype)[rng.integers(0, c, m)]
    zb = draw(rng, (m, k), dtype)
    ab = ref.activation(below, zb.astype(np.float64)).astype(dtype) if below else None
    E64, gx64, gW64, gb64 = _output_layer_reference(x, W, b, t, below, zb, ab, {})
    below_arg = (below, backend.asarray(zb), backend.asarray(ab)) if below else None
    owW = backend.zeros((k, c), dtype)
    loss_buf = backend.zeros((), dtype)
    gb_below = backend.zeros((k,), dtype)  # the layer below's bias gradient: colsum(grad_x)
    with strict_numerics():
        E, gx, gW, gb = backend.output_layer_grad(
            backend.asarray(x), backend.asarray(W), None if b is None else backend.asarray(b),
            backend.asarray(t), "softmax_cross_entropy", below=below_arg, out_grad_W=owW,
            out_loss=loss_buf, out_grad_b_below=gb_below)
    assert E is loss_buf and gW is owW
    close_sum(host(backend, gb_below), gx64.sum(axis=0), dtype, m)
    # the loss: logsumexp minus y . z, a difference of O(1) terms: elementwise tolerance
    close(host(backend, E).reshape(()), E64, dtype, scale=10)
    close_sum(host(backend, gx), gx64, dtype, c)
    close_sum(host(backend, gW), gW64, dtype, m)
    if bias:
        close_sum(host(backend, gb), gb64, dtype, m)
    else:
        assert gb is None
    # no input gradient for the first layer; the loss alone comes back without out_loss
    E2, gx2, _, _ = backend.output_layer_grad(
        backend.asarray(x), backend.asarray(W), None if b is None else backend.asarray(b),
        backend.asarray(t), need_grad_x=False)
    assert gx2 is None
    close(host(backend, E2).reshape(()), E64, dtype, scale=10)
    # the epoch's running loss: acc += w * E in the same call
    acc = backend.asarray(np.array(1.5, dtype=dtype))
    backend.output_layer_grad(
        backend.asarray(x), backend.asarray(W), None if b is None else backend.asarray(b),
        backend.asarray(t), need_grad_x=False, loss_acc=(acc, 0.25))
    close(host(backend, acc).reshape(()), 1.5 + 0.25 * E64, dtype, scale=10)


def test_output_layer_grad_takes_any_loss_and_rejects_unknown_ones(backend, rng):
    x, W, t = draw(rng, (6, 4), np.float64), draw(rng, (4, 3), np.float64), \
        draw(rng, (6, 3), np.float64)
    E, gx, gW, gb = backend.output_layer_grad(backend.asarray(x), backend.asarray(W), None,
                                              backend.asarray(t), "mse", "tanh")
    z = np.tanh(x @ W)
    g = (z - t) / 6 * (1 - z * z)
    close_sum(host(backend, E).reshape(()), np.array(0.5 * np.mean(((z - t) ** 2).sum(1))),
              np.float64, 4)
    close_sum(host(backend, gW), x.T @ g, np.float64, 6)
    close_sum(host(backend, gx), g @ W.T, np.float64, 3)
    assert gb is None
    with pytest.raises(ValueError, match="loss must be one of"):
        backend.output_layer_grad(backend.asarray(x), backend.asarray(W), None,
                                  backend.asarray(t), "hinge")


# ---------------------------------------------------------------------------- identity, capture
def test_identity(backend):
    assert backend.is_available() and type(backend).unavailable_reason() is None
    info = backend.info()
    assert info["backend"] == backend.name and len(info) > 1
    assert isinstance(type(backend).rung, str) and type(backend).rung
    backend.synchronize()


def test_capture_replays_the_work(backend, rng):
    x = draw(rng, (3, 4), np.float64)
    dx, dy = backend.asarray(x), backend.zeros((3, 4), np.float64)
    step = backend.capture(lambda: backend.axpy(0.5, dx, dy))
    for _ in range(3):
        step()
    backend.synchronize()
    close(host(backend, dy), 1.5 * x, np.float64)
