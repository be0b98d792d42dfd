"""save/load: exact round trip onto any backend; atomic writes; no unpickling; truncated,
tampered and foreign files rejected with ModelFileError."""

from __future__ import annotations

import json
import os
import zipfile

import numpy as np
import pytest

from mlpaccel import MLP
from mlpaccel.persistence import ModelFileError


@pytest.fixture
def model(rng):
    m = MLP([4, 6, 5, 3], activation=["tanh", "relu"], loss="cross_entropy",
            backend="numpy", dtype="float32", random_state=7)
    X, y = rng.normal(size=(20, 4)), rng.integers(0, 3, 20)
    m.fit(X, y, epochs=2, batch_size=8, optimizer="adam", verbose=0)
    return m


def test_round_trip_is_exact_on_every_backend(model, backend, tmp_path):
    path = tmp_path / "m.npz"
    model.save(path)
    back = MLP.load(path, backend=backend)
    assert back.backend.name == backend.name
    assert back.layer_sizes == model.layer_sizes and back.activations == model.activations
    assert back.loss.name == "cross_entropy" and back.dtype == np.float32
    for (W, b), (W2, b2) in zip(model.get_weights(), back.get_weights()):
        assert W2.dtype == np.float32
        np.testing.assert_array_equal(W, W2)
        np.testing.assert_array_equal(b, b2)
    assert back.history == model.history
    X = np.random.default_rng(0).normal(size=(5, 4))
    np.testing.assert_allclose(back.predict_proba(X), model.predict_proba(X), rtol=1e-5)


def test_no_bias_float64_round_trip(tmp_path):
    m = MLP([2, 2, 2], activation="sigmoid", output_activation="sigmoid", use_bias=False,
            backend="numpy", dtype="float64", random_state=1)
    m.save(tmp_path / "s.npz")
    back = MLP.load(tmp_path / "s.npz", backend="numpy")
    assert back.use_bias is False and back.get_weights()[0][1] is None
    np.testing.assert_array_equal(back.get_weights()[1][0], m.get_weights()[1][0])


def test_save_is_atomic_and_leaves_no_temp_files(model, tmp_path, monkeypatch):
    path = tmp_path / "m.npz"
    model.save(path)
    good = path.read_bytes()

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", broken)
    with pytest.raises(OSError, match="disk full"):
        model.save(path)
    assert path.read_bytes() == good  # the old file is intact
    assert os.listdir(tmp_path) == ["m.npz"]


def test_truncated_file_rejected(model, tmp_path):
    path = tmp_path / "m.npz"
    model.save(path)
    data = path.read_bytes()
    for cut in (len(data) // 2, 10, 0):
        path.write_bytes(data[:cut])
        with pytest.raises(ModelFileError, match="not a readable"):
            MLP.load(path, backend="numpy")


def _rewrite(path, change):
    with np.load(path, allow_pickle=False) as npz:
        arrays = {k: npz[k] for k in npz.files}
    change(arrays)
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def test_tampered_weights_rejected(model, tmp_path):
    path = tmp_path / "m.npz"
    model.save(path)

    def flip(arrays):
        arrays["W1"] = arrays["W1"].copy()
        arrays["W1"][0, 0] += 1e-3

    _rewrite(path, flip)
    with pytest.raises(ModelFileError, match="sha256"):
        MLP.load(path, backend="numpy")


def test_tampered_metadata_rejected(model, tmp_path):
    path = tmp_path / "m.npz"
    model.save(path)

    def relabel(arrays):
        meta = json.loads(arrays["__mlpaccel__"].tobytes())
        meta["activations"][0] = "relu"
        arrays["__mlpaccel__"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)

    _rewrite(path, relabel)
    with pytest.raises(ModelFileError, match="sha256"):
        MLP.load(path, backend="numpy")


def test_foreign_files_rejected(tmp_path):
    plain = tmp_path / "plain.npz"
    np.savez(plain, a=np.arange(3))
    with pytest.raises(ModelFileError, match="not an mlpaccel model"):
        MLP.load(plain, backend="numpy")
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(ModelFileError):
        MLP.load(text, backend="numpy")
    zipped = tmp_path / "other.npz"
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("x.txt", "not an array")
    with pytest.raises(ModelFileError):
        MLP.load(zipped, backend="numpy")
    with pytest.raises(FileNotFoundError):
        MLP.load(tmp_path / "missing.npz", backend="numpy")


def test_pickled_arrays_are_never_loaded(tmp_path):
    """An object array needs pickle; load refuses it instead of executing anything."""
    path = tmp_path / "evil.npz"
    np.savez(path, __mlpaccel__=np.array([{"format": "mlpaccel.MLP"}], dtype=object))
    with pytest.raises(ModelFileError):
        MLP.load(path, backend="numpy")


def test_newer_format_version_rejected(model, tmp_path):
    path = tmp_path / "m.npz"
    model.save(path)

    def bump(arrays):
        meta = json.loads(arrays["__mlpaccel__"].tobytes())
        meta["format_version"] = 99
        arrays["__mlpaccel__"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)

    _rewrite(path, bump)
    with pytest.raises(ModelFileError, match="upgrade"):
        MLP.load(path, backend="numpy")
