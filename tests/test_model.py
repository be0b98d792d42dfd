"""The MLP's API: construction, fit (batching, shuffling, continuation, validation, early
stopping, callbacks, progress), predict/score, train_step, weights, errors, divergence,
capture of the step, and the Perceptron. Mostly on numpy; one fit on every backend."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import mlpaccel
from mlpaccel import MLP, Perceptron, TrainingDivergedError
from mlpaccel.training import EarlyStopping

XOR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
XOR_Y = np.array([0, 1, 1, 0])


def _clf(**kw):
    args = dict(activation="tanh", loss="cross_entropy", backend="numpy", dtype="float64",
                random_state=0)
    args.update(kw)
    return MLP([2, 8, 2], **args)


def _blobs(rng, n=60):
    X = rng.normal(size=(n, 2))
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(int)
    return X, y


# ---------------------------------------------------------------- construction
def test_defaults_and_repr():
    m = MLP([3, 4, 2], backend="numpy")
    assert m.activations == ["relu", "linear"] and m.loss.name == "mse"
    assert m.dtype == np.float32
    m = MLP([3, 4, 2], output_activation="softmax", backend="numpy")
    assert m.loss.name == "cross_entropy"
    m = MLP([3, 4, 1], loss="binary_cross_entropy", backend="numpy")
    assert m.activations[-1] == "sigmoid"
    assert "MLP([3, 4, 1]" in repr(m)


def test_per_layer_activations():
    m = MLP([2, 3, 3, 1], activation=["relu", "tanh"], backend="numpy")
    assert m.activations == ["relu", "tanh", "linear"]
    m = MLP([2, 3, 1], activation=["relu", "sigmoid"], backend="numpy")
    assert m.activations == ["relu", "sigmoid"]
    with pytest.raises(ValueError, match="entries"):
        MLP([2, 3, 3, 1], activation=["relu"], backend="numpy")


@pytest.mark.parametrize("kwargs, err, match", [
    (dict(layer_sizes=[3]), ValueError, "layer_sizes"),
    (dict(layer_sizes=3), ValueError, "layer_sizes"),
    (dict(layer_sizes=[3, 0, 2]), ValueError, "layer_sizes"),
    (dict(layer_sizes=[3, 2.5, 2]), ValueError, "layer_sizes"),
    (dict(activation="rleu"), ValueError, "did you mean 'relu'"),
    (dict(loss="msee"), ValueError, "did you mean 'mse'"),
    (dict(loss="cross_entropy", output_activation="sigmoid"), ValueError, "softmax"),
    (dict(dtype="int32"), TypeError, "float32"),
    (dict(init="xaiver"), ValueError, "did you mean 'xavier'"),
    (dict(backend="nmupy"), ValueError, "did you mean 'numpy'"),
])
def test_constructor_errors(kwargs, err, match):
    args = dict(layer_sizes=[3, 4, 2], backend="numpy")
    args.update(kwargs)
    with pytest.raises(err, match=match):
        MLP(**args)


def test_same_seed_same_weights_on_every_backend(backend):
    ref = MLP([5, 7, 3], backend="numpy", dtype="float64", init="he", random_state=42)
    m = MLP([5, 7, 3], backend=backend, dtype="float64", init="he", random_state=42)
    for (W, b), (W2, b2) in zip(ref.get_weights(), m.get_weights()):
        np.testing.assert_array_equal(W, W2)
        np.testing.assert_array_equal(b, b2)


def test_initializers():
    u = MLP([50, 40, 3], init="uniform", backend="numpy", random_state=1).get_weights()
    assert all(np.abs(W).max() <= 1 and np.abs(W).max() > 0.9 for W, _ in u)
    assert np.abs(u[0][1]).max() > 0  # seed 000 draws biases from U(-1, 1) too
    x = MLP([50, 40, 3], init="glorot", backend="numpy", random_state=1).get_weights()
    assert np.abs(x[0][0]).max() <= np.sqrt(6 / 90) and not x[0][1].any()
    h = MLP([400, 300, 3], init="he", backend="numpy", dtype="float64",
            random_state=1).get_weights()
    assert h[0][0].std() == pytest.approx(np.sqrt(2 / 400), rel=0.02)
    other = MLP([50, 40, 3], init="uniform", backend="numpy", random_state=2).get_weights()
    assert not np.array_equal(u[0][0], other[0][0])
    with pytest.warns(UserWarning, match="identical"):
        z = MLP([2, 3, 1], init="zeros", backend="numpy")
    assert not any(W.any() for W, _ in z.get_weights())


def test_explicit_weights_and_no_bias():
    W = [(np.ones((2, 3)), None), (np.full((3, 1), 2.0), None)]
    m = MLP([2, 3, 1], activation="linear", use_bias=False, init=W, backend="numpy",
            dtype="float64")
    assert [b for _, b in m.get_weights()] == [None, None]
    np.testing.assert_allclose(m.predict(np.array([[1.0, 2.0]])), [[18.0]])
    with pytest.raises(ValueError, match="use_bias=False"):
        m.set_weights([(np.ones((2, 3)), np.zeros(3)), (np.ones((3, 1)), None)])
    with pytest.raises(ValueError, match="shape"):
        MLP([2, 3, 1], init=[(np.ones((3, 2)), np.zeros(3)), (np.ones((3, 1)), np.zeros(1))],
            backend="numpy")


# ---------------------------------------------------------------- fit
def test_fit_learns_xor_and_returns_self():
    m = _clf()
    assert m.fit(XOR_X, XOR_Y, epochs=200, batch_size=None, optimizer="adam",
                 learning_rate=0.05, verbose=0) is m
    assert m.score(XOR_X, XOR_Y) == 1.0
    assert list(m.predict(XOR_X)) == [0, 1, 1, 0]
    assert set(m.history) == {"loss", "accuracy"} and len(m.history["loss"]) == 200
    assert m.history["loss"][-1] < 0.1 * m.history["loss"][0]
    p = m.predict_proba(XOR_X)
    assert p.shape == (4, 2)
    np.testing.assert_allclose(p.sum(1), 1.0)


def test_one_fit_equals_numpy_on_every_backend(backend, rng):
    """The whole trainer (shuffled mini-batches, ragged last batch, Adam) gives the same
    weights on every backend in float64."""
    X, y = _blobs(rng, 22)
    kw = dict(activation="relu", loss="cross_entropy", dtype="float64", random_state=3)
    ref = MLP([2, 5, 2], backend="numpy", **kw)
    m = MLP([2, 5, 2], backend=backend, **kw)
    for model in (ref, m):
        model.fit(X, y, epochs=3, batch_size=8, optimizer="adam", learning_rate=0.01,
                  verbose=0)
    for (W, b), (W2, b2) in zip(ref.get_weights(), m.get_weights()):
        np.testing.assert_allclose(W2, W, rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(b2, b, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(m.history["loss"], ref.history["loss"], rtol=1e-9)


def test_fit_on_device_data_equals_fit_on_host_data(backend, rng):
    """``device_data`` uploads once; fit on it (twice, so the second reuses the recorded
    epoch) gives the weights and history of fit on host arrays, Adam included."""
    X, y = _blobs(rng, 22)
    kw = dict(activation="relu", loss="cross_entropy", dtype="float64", random_state=3,
              backend=backend)
    host, dev = MLP([2, 5, 2], **kw), MLP([2, 5, 2], **kw)
    Xd, Td = dev.device_data(X, y)
    assert Xd.shape == (22, 2) and Td.shape == (22, 2)
    for _ in range(2):
        host.fit(X, y, epochs=2, batch_size=8, optimizer="adam", learning_rate=0.01, verbose=0)
        dev.fit(Xd, Td, epochs=2, batch_size=8, optimizer="adam", learning_rate=0.01,
                verbose=0)
    for (W, b), (W2, b2) in zip(host.get_weights(), dev.get_weights()):
        np.testing.assert_allclose(W2, W, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(b2, b, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(dev.history["loss"], host.history["loss"], rtol=1e-12)
    np.testing.assert_allclose(dev.history["accuracy"], host.history["accuracy"])


def test_host_backends_take_their_device_data_without_checking_or_copying_again(
        monkeypatch, rng):
    """On the numpy/numba backends device data are NumPy arrays: fit must still know them
    (validated once in ``device_data``) instead of re-validating and re-copying the whole
    set per call; an equal copy made by the user is host data again."""
    import mlpaccel.training as training

    X, y = _blobs(rng, 12)
    m = MLP([2, 5, 2], activation="relu", loss="cross_entropy", dtype="float64",
            random_state=1, backend="numpy")
    Xd, Td = m.device_data(X, y)
    assert m._made_on_device(Xd) and m._made_on_device(Td)
    assert not m._made_on_device(Xd.copy()) and not m._made_on_device(X)
    assert not MLP([2, 5, 2], backend="numpy")._made_on_device(Xd)  # another model's data

    def no_check(*args, **kwargs):
        raise AssertionError("device data was validated again")

    monkeypatch.setattr(training, "check_X", no_check)
    copies = []
    real_asarray = m.backend.asarray
    monkeypatch.setattr(m.backend, "asarray", lambda *a, **k: copies.append(a) or
                        real_asarray(*a, **k))
    m.fit(Xd, Td, epochs=2, batch_size=4, verbose=0)
    assert copies == [] and len(m.history["loss"]) == 2
    with pytest.raises(AssertionError, match="validated again"):
        m.fit(Xd.copy(), Td, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="device targets"):
        m.fit(Xd, y, epochs=1, verbose=0)  # labels next to device X: a typed error


def test_device_data_shapes_are_checked():
    from mlpaccel.training import _check_device_data

    class Dev:  # a stand-in device array: only shape and dtype are looked at
        def __init__(self, shape, dtype="float64"):
            self.shape, self.dtype = shape, np.dtype(dtype)

    m = _clf()
    with pytest.raises(ValueError, match=r"device X must have shape \(M, 2\)"):
        _check_device_data(m, Dev((4, 3)), Dev((4, 2)))
    with pytest.raises(ValueError, match="model.device_data"):
        _check_device_data(m, Dev((4, 2)), np.zeros(4))
    with pytest.raises(TypeError, match="float64"):
        _check_device_data(m, Dev((4, 2), "float32"), Dev((4, 2), "float32"))


def test_fit_continues_and_keeps_optimizer_state(rng):
    """Keras semantics: fit(1) + fit(1) == fit(2) with the same optimizer (Adam's moments and
    step count survive); naming another optimizer starts fresh."""
    X, y = _blobs(rng, 16)
    a, b = _clf(), _clf()
    a.fit(X, y, epochs=2, batch_size=None, optimizer="adam", learning_rate=0.01, verbose=0)
    b.fit(X, y, epochs=1, batch_size=None, optimizer="adam", learning_rate=0.01, verbose=0)
    opt = b.optimizer
    b.fit(X, y, epochs=1, batch_size=None, optimizer="adam", learning_rate=0.01, verbose=0)
    assert b.optimizer is opt and opt.iterations == 2
    for (W, _), (W2, _) in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(W, W2)
    assert b.history["loss"] == a.history["loss"]
    b.fit(X, y, epochs=1, batch_size=None, optimizer="sgd", verbose=0)
    assert b.optimizer is not opt


def test_shuffle_sequence_is_the_same_however_epochs_are_split(rng):
    """The next epoch's order is drawn ahead (to overlap a GPU epoch); an unused draw carries
    over, so 4 epochs in one fit, in four fits, or with a stop after 2 train alike."""
    X, y = _blobs(rng, 30)

    class StopAfter2:
        def on_epoch_end(self, epoch, logs):
            if epoch == 1:
                model.stop_training = True

    runs = []
    for plan in ([4], [1, 1, 1, 1], "stop"):
        model = _clf()
        if plan == "stop":  # asks for 3, stops after 2 with the 3rd order drawn, then 2 more
            model.fit(X, y, epochs=3, batch_size=8, verbose=0, callbacks=[StopAfter2()])
            model.fit(X, y, epochs=2, batch_size=8, verbose=0)
        else:
            for n in plan:
                model.fit(X, y, epochs=n, batch_size=8, verbose=0)
        runs.append(model.get_weights())
    for other in runs[1:]:
        for (W, b), (W2, b2) in zip(runs[0], other):
            np.testing.assert_array_equal(W2, W)
            np.testing.assert_array_equal(b2, b)


def test_batch_modes_step_counts(rng):
    X, y = _blobs(rng, 10)
    for batch_size, steps in [(None, 1), (1, 10), (4, 3), (100, 1)]:
        m = _clf()
        m.fit(X, y, epochs=2, batch_size=batch_size, optimizer="adam", verbose=0)
        assert m.optimizer.iterations == 2 * steps, batch_size


def test_full_batch_step_is_gradient_descent(rng):
    """batch_size=None: one plain GD step per epoch with the batch-mean gradient."""
    X, y = _blobs(rng, 12)
    a, b = _clf(), _clf()
    a.fit(X, y, epochs=1, batch_size=None, optimizer="sgd", learning_rate=0.3, verbose=0)
    b.train_step(X, y, optimizer="sgd", learning_rate=0.3)
    for (W, c), (W2, c2) in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(W, W2)
        np.testing.assert_array_equal(c, c2)


def test_epoch_loss_is_the_sample_weighted_mean_of_batch_losses(rng):
    X, y = _blobs(rng, 10)
    a, b = _clf(), _clf()
    a.fit(X, y, epochs=1, batch_size=4, shuffle=False, optimizer="sgd", learning_rate=0.1,
          verbose=0)
    losses = [b.train_step(X[s:s + 4], y[s:s + 4], optimizer="sgd", learning_rate=0.1)
              for s in range(0, 10, 4)]
    want = (4 * losses[0] + 4 * losses[1] + 2 * losses[2]) / 10
    assert a.history["loss"][0] == pytest.approx(want, rel=1e-12)


def test_shuffle_follows_random_state(rng):
    X, y = _blobs(rng, 30)

    def run(seed, shuffle=True):
        m = _clf(random_state=0)
        m._shuffle_rng = np.random.default_rng(seed)
        m.fit(X, y, epochs=2, batch_size=5, optimizer="sgd", learning_rate=0.1,
              shuffle=shuffle, verbose=0)
        return m.get_weights()[0][0]

    np.testing.assert_array_equal(run(1), run(1))
    assert not np.array_equal(run(1), run(2))
    np.testing.assert_array_equal(run(1, False), run(2, False))


def test_validation_data_and_fraction(rng):
    X, y = _blobs(rng, 40)
    m = _clf()
    m.fit(X[:30], y[:30], epochs=3, validation_data=(X[30:], y[30:]), verbose=0)
    assert set(m.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert m.history["val_loss"][-1] == pytest.approx(m.evaluate(X[30:], y[30:])["loss"])
    m = _clf()
    m.fit(X, y, epochs=2, validation_fraction=0.25, verbose=0)
    assert len(m.history["val_loss"]) == 2
    with pytest.raises(ValueError, match="validation_fraction"):
        m.fit(X, y, validation_fraction=1.5, verbose=0)


def test_early_stopping_restores_best_weights(rng):
    """Validation targets are the negated training targets, so val_loss is best at the first
    epoch and rises after: training stops after `patience` epochs and restores epoch 1."""
    X = rng.normal(size=(32, 3))
    y = X @ np.array([[1.0], [-2.0], [0.5]])
    m = MLP([3, 4, 1], activation="tanh", backend="numpy", dtype="float64", random_state=0)
    seen = []
    m.fit(X, y, epochs=50, batch_size=8, optimizer="adam", learning_rate=0.05, verbose=0,
          validation_data=(X, -y), early_stopping=EarlyStopping(patience=3),
          callbacks=[lambda epoch, logs: seen.append((logs["val_loss"], m.get_weights()))])
    val = [v for v, _ in seen]
    best = int(np.argmin(val))
    assert len(val) == best + 4 < 50
    for (W, b), (W2, b2) in zip(m.get_weights(), seen[best][1]):
        np.testing.assert_array_equal(W, W2)
        np.testing.assert_array_equal(b, b2)


def test_early_stopping_variants(rng):
    X, y = _blobs(rng, 20)
    m = _clf()
    m.fit(X, y, epochs=3, early_stopping=True, verbose=0)  # monitors loss without validation
    m.fit(X, y, epochs=3, early_stopping={"patience": 2}, verbose=0)
    with pytest.raises(TypeError, match="early_stopping"):
        m.fit(X, y, early_stopping="yes", verbose=0)
    before = m.get_weights()[0][0]
    with pytest.raises(ValueError, match="val_loss"):  # no validation data: nothing to watch
        m.fit(X, y, early_stopping=EarlyStopping(monitor="val_loss"), verbose=0)
    np.testing.assert_array_equal(before, m.get_weights()[0][0])


def test_early_stopping_on_accuracy_maximises(rng):
    X, y = _blobs(rng, 40)
    m = _clf()
    stop = EarlyStopping(monitor="val_accuracy", patience=2)
    m.fit(X[:30], y[:30], epochs=40, optimizer="adam", learning_rate=0.05, verbose=0,
          validation_data=(X[30:], y[30:]), early_stopping=stop)
    acc = m.history["val_accuracy"]
    assert stop.best == max(acc) and acc[stop.best_epoch] == max(acc)


def test_callbacks_and_stop_training(rng):
    X, y = _blobs(rng, 20)
    m = _clf()
    calls = []

    class Stopper:
        def on_epoch_end(self, epoch, logs):
            calls.append((epoch, sorted(logs)))
            if epoch == 2:
                m.stop_training = True

    m.fit(X, y, epochs=10, callbacks=[Stopper()], verbose=0)
    assert calls == [(e, ["accuracy", "loss"]) for e in range(3)]
    with pytest.raises(TypeError, match="callback"):
        m.fit(X, y, callbacks=[3], verbose=0)


def test_verbose_levels(rng, capsys):
    X, y = _blobs(rng, 20)
    _clf().fit(X, y, epochs=2, verbose=0)
    assert capsys.readouterr() == ("", "")
    _clf().fit(X, y, epochs=2, verbose=2)
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Iteration 1, loss = ") and out[1].startswith("Iteration 2, ")
    pytest.importorskip("tqdm")
    _clf().fit(X, y, epochs=2, verbose=1)
    assert "2/2" in capsys.readouterr().err


def test_metrics_off_and_regression_history(rng):
    X, y = _blobs(rng, 20)
    m = _clf()
    m.fit(X, y, epochs=1, metrics=(), verbose=0)
    assert set(m.history) == {"loss"}
    r = MLP([2, 3, 1], backend="numpy")
    with pytest.raises(ValueError, match="accuracy"):
        r.fit(X, y.astype(float), metrics=["accuracy"], verbose=0)


# ---------------------------------------------------------------- predict / score
def test_binary_cross_entropy_predict_and_score(rng):
    X, y = _blobs(rng, 40)
    m = MLP([2, 6, 1], activation="tanh", loss="binary_cross_entropy", backend="numpy",
            dtype="float64", random_state=0)
    m.fit(X, y, epochs=100, batch_size=None, optimizer="adam", learning_rate=0.05, verbose=0)
    pred = m.predict(X)
    assert pred.shape == (40,) and set(np.unique(pred)) <= {0, 1}
    assert m.score(X, y) == pytest.approx(np.mean(pred == y)) and m.score(X, y) > 0.9


def test_regression_score_is_r2(rng):
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    X = rng.normal(size=(30, 2))
    y = np.column_stack([X[:, 0] - X[:, 1], X[:, 0] * 2])
    m = MLP([2, 5, 2], activation="tanh", backend="numpy", dtype="float64", random_state=0)
    m.fit(X, y, epochs=30, optimizer="adam", learning_rate=0.02, verbose=0)
    assert m.predict(X).shape == (30, 2)
    assert m.score(X, y) == pytest.approx(sklearn_metrics.r2_score(y, m.predict(X)))


def test_train_step_returns_loss_before_the_step(rng):
    X, y = _blobs(rng, 8)
    m = _clf()
    before = m.evaluate(X, y)["loss"]
    assert m.train_step(X, y, optimizer="sgd", learning_rate=0.5) == pytest.approx(before)
    assert m.evaluate(X, y)["loss"] < before
    opt = mlpaccel.optim.get("momentum", learning_rate=0.1)
    m.train_step(X, y, optimizer=opt)
    m.train_step(X, y, optimizer=opt)
    assert opt.iterations == 2 and m.optimizer is opt


def test_weights_roundtrip_and_to_backend(rng):
    m = _clf()
    w = m.get_weights()
    w[0][0][0, 0] = 123.0  # a copy: the model is unchanged
    assert m.get_weights()[0][0][0, 0] != 123.0
    m.set_weights(w)
    assert m.get_weights()[0][0][0, 0] == 123.0
    p = m.predict_proba(XOR_X)
    assert m.to("python") is m and m.backend.name == "python"
    np.testing.assert_allclose(m.predict_proba(XOR_X), p, rtol=1e-12)
    m.fit(XOR_X, XOR_Y, epochs=1, verbose=0)  # trains on the new backend


# ---------------------------------------------------------------- errors before any change
BAD_INPUTS = [
    (lambda X, y: (X[:, :1], y), ValueError, "features"),
    (lambda X, y: (X[0], y), ValueError, "2-D"),
    (lambda X, y: (np.where(X > 1, np.nan, X), y), ValueError, "NaN"),
    (lambda X, y: (np.where(X > 1, np.inf, X), y), ValueError, "NaN or infinite"),
    (lambda X, y: (X, y + 5), ValueError, r"\[0, 2\)"),
    (lambda X, y: (X, y - 1), ValueError, r"\[0, 2\)"),
    (lambda X, y: (X, y + 0.5), ValueError, "integer"),
    (lambda X, y: (X[:0], y[:0]), ValueError, "empty"),
    (lambda X, y: (X, y[:-1]), ValueError, "rows"),
    (lambda X, y: (X.astype(str), y), TypeError, "numeric"),
    (lambda X, y: (X, np.array(["a"] * len(y))), TypeError, "numeric"),
]


@pytest.mark.parametrize("mutate, err, match", BAD_INPUTS)
def test_bad_input_raises_before_any_weight_change(mutate, err, match, rng):
    X, y = _blobs(rng, 12)
    X[0, 0] = 2.0  # so that the "X > 1" mutations hit
    Xb, yb = mutate(X, y)
    m = _clf()
    before = m.get_weights()
    with pytest.raises(err, match=match):
        m.fit(Xb, yb, epochs=1, verbose=0)
    with pytest.raises(err, match=match):
        m.train_step(Xb, yb)
    for (W, b), (W2, b2) in zip(before, m.get_weights()):
        np.testing.assert_array_equal(W, W2)
        np.testing.assert_array_equal(b, b2)
    assert m.history == {}


@pytest.mark.parametrize("kwargs, err, match", [
    (dict(optimizer="adma"), ValueError, "did you mean 'adam'"),
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(epochs=-1), ValueError, "epochs"),
    (dict(verbose=5), ValueError, "verbose"),
    (dict(validation_data=([[1.0, 2.0, 3.0]], [0])), ValueError, "features"),
])
def test_bad_fit_arguments(kwargs, err, match, rng):
    X, y = _blobs(rng, 12)
    m = _clf()
    before = m.get_weights()[0][0]
    with pytest.raises(err, match=match):
        m.fit(X, y, **kwargs)
    np.testing.assert_array_equal(before, m.get_weights()[0][0])


def test_divergence_raises_and_keeps_last_good_weights(rng):
    X = rng.normal(size=(16, 2)) * 100
    y = X @ np.array([[50.0], [-80.0]])
    m = MLP([2, 4, 1], activation="relu", backend="numpy", dtype="float32", random_state=0)
    start = m.get_weights()
    with np.errstate(all="ignore"), pytest.raises(TrainingDivergedError, match="learning rate"):
        m.fit(X, y, epochs=50, batch_size=4, optimizer="sgd", learning_rate=10.0, verbose=0)
    w = m.get_weights()
    assert all(np.all(np.isfinite(W)) and np.all(np.isfinite(b)) for W, b in w)
    assert len(m.history.get("loss", [])) < 50
    assert not np.array_equal(w[0][0], start[0][0]) or not m.history.get("loss")
    m2 = MLP([2, 4, 1], activation="relu", backend="numpy", dtype="float32", random_state=0)
    with np.errstate(all="ignore"), pytest.raises(TrainingDivergedError):
        for _ in range(50):
            m2.train_step(X, y, optimizer="sgd", learning_rate=10.0)
    assert all(np.all(np.isfinite(W)) for W, _ in m2.get_weights())
    assert np.isfinite(m2.evaluate(X, y)["loss"])  # the restored weights give a finite loss


# ---------------------------------------------------------------- the step's plumbing
def test_full_batches_go_through_capture_once(rng, monkeypatch):
    backend = mlpaccel.get_backend("numpy")
    captured = []

    def capture(fn):
        captured.append(fn)
        return fn

    monkeypatch.setattr(backend, "capture", capture)
    X, y = _blobs(rng, 10)
    m = _clf()
    # an epoch's batches (4 + 4 + the short last 2) are one recorded program, built once
    m.fit(X, y, epochs=3, batch_size=4, optimizer="sgd", verbose=0)
    assert len(captured) == 1
    m.fit(X, y, epochs=2, batch_size=4, optimizer="sgd", verbose=0)  # same data, same program
    assert len(captured) == 1
    # numpy reads Adam's step count on the host: its epochs run eagerly, nothing is recorded
    m.fit(X, y, epochs=1, batch_size=4, optimizer="adam", verbose=0)
    assert len(captured) == 1
    sgd = mlpaccel.optim.SGD(learning_rate=0.1)
    m.fit(X, y, epochs=2, batch_size=4, optimizer=sgd, verbose=0)
    assert len(captured) == 2
    sgd.learning_rate = 0.05  # a baked-in scalar changed: the epoch is recorded anew
    m.fit(X, y, epochs=1, batch_size=4, optimizer=sgd, verbose=0)
    assert len(captured) == 3 and sgd.iterations == 3 * 3


def test_a_cached_epoch_makes_no_batch_views(rng, monkeypatch):
    """The per-batch views are made when an epoch program is built, not on every fit call
    (on a GPU each view costs microseconds of Python, ~1,900 of them per epoch at b64)."""
    X, y = _blobs(rng, 10)
    m = _clf()
    m.fit(X, y, epochs=1, batch_size=4, optimizer="sgd", verbose=0)
    views = []
    real = m.backend.view
    monkeypatch.setattr(m.backend, "view", lambda *a, **k: views.append(a) or real(*a, **k))
    m.fit(X, y, epochs=2, batch_size=4, optimizer="sgd", verbose=0)
    assert len(views) <= 2  # fit's whole-set views of the staging buffers only
    m.fit(X, y, epochs=1, batch_size=3, optimizer="sgd", verbose=0)  # a new batch size
    assert len(views) >= 2 + 2 * 4


def test_adam_with_a_device_step_count_is_recorded_and_matches_numpy(rng, monkeypatch):
    """cuda-emu counts Adam's steps on the device (as the GPU does inside a CUDA graph): the
    whole epoch is handed to capture, and the weights match the numpy backend's Adam."""
    emu = mlpaccel.get_backend("cuda-emu") if "cuda-emu" in mlpaccel.available_backends() \
        else pytest.skip("cuda-emu unavailable")
    assert emu.device_step_count
    captured = []
    monkeypatch.setattr(emu, "capture", lambda fn: captured.append(fn) or fn)
    X, y = _blobs(rng, 10)
    models = [_clf(backend=b) for b in ("numpy", emu)]
    for m in models:
        m.fit(X, y, epochs=3, batch_size=4, optimizer="adam", learning_rate=0.05, verbose=0)
    assert len(captured) == 1 and models[1].optimizer.iterations == 9
    for (W0, b0), (W1, b1) in zip(models[0].get_weights(), models[1].get_weights()):
        np.testing.assert_allclose(W1, W0, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(b1, b0, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- Perceptron
@pytest.mark.parametrize("gate, y", [("AND", [0, 0, 0, 1]), ("OR", [0, 1, 1, 1]),
                                     ("NAND", [1, 1, 1, 0])])
def test_perceptron_learns_linear_gates(gate, y):
    p = Perceptron(learning_rate=0.1, max_epochs=50)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p.fit(XOR_X, y)
    assert p.converged_ and p.errors_[-1] == 0 and p.n_iter_ <= 50
    assert list(p.predict(XOR_X)) == y and p.score(XOR_X, y) == 1.0
    assert p.coef_.shape == (2,)


def test_perceptron_fails_on_xor_with_warning():
    p = Perceptron(max_epochs=20)
    with pytest.warns(UserWarning, match="did not converge"):
        p.fit(XOR_X, XOR_Y)
    assert p.converged_ is False and p.n_iter_ == 20 and p.score(XOR_X, XOR_Y) < 1.0


def test_perceptron_seed001_and_gate_weights(backend):
    """Seed 001: w = (1, 1), b = -1.5 computes AND."""
    p = Perceptron.from_weights([1, 1], -1.5, backend=backend)
    assert list(p.predict(XOR_X)) == [0, 0, 0, 1]
    with pytest.raises(RuntimeError, match="not fitted"):
        Perceptron().predict(XOR_X)


def test_perceptron_rule_by_hand():
    """One epoch on AND from zero weights, lr 1: w += (t - o) x, b += (t - o)."""
    p = Perceptron(learning_rate=1.0, max_epochs=1)
    with pytest.warns(UserWarning):
        p.fit(XOR_X, [0, 0, 0, 1])
    w, b = np.zeros(2), 0.0
    for x, t in zip(XOR_X, [0, 0, 0, 1]):
        o = float(x @ w + b > 0)
        w, b = w + (t - o) * x, b + (t - o)
    np.testing.assert_array_equal(p.coef_, w)
    assert p.intercept_ == b


def test_pickle_round_trip_keeps_weights_and_trains_again():
    import copy
    import pickle

    X, y = np.random.default_rng(0).standard_normal((32, 3)), np.arange(32) % 2
    m = MLP([3, 5, 2], output_activation="softmax", backend="numpy", dtype="float64",
            random_state=0)
    m.fit(X, y, epochs=2, verbose=0, metrics=())
    m2 = pickle.loads(pickle.dumps(m))
    for (W, b), (W2, b2) in zip(m.get_weights(), m2.get_weights()):
        np.testing.assert_array_equal(W, W2)
        np.testing.assert_array_equal(b, b2)
    np.testing.assert_array_equal(m.predict_proba(X), m2.predict_proba(X))
    assert m2.history == m.history and m2.backend is m.backend
    m3 = copy.deepcopy(m)
    m3.fit(X, y, epochs=1, verbose=0, metrics=())  # trains without touching the original
    assert not np.array_equal(m3.get_weights()[0][0], m.get_weights()[0][0])
