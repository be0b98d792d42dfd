"""Save and load an MLP: one ``.npz`` holding the weights and a JSON metadata record.

The file is a NumPy ``.npz`` (a zip) with arrays ``W0, b0, W1, ...`` in the model's dtype and
``__mlpaccel__``: the UTF-8 bytes of a JSON object (format name and version, layer sizes,
activations, loss, dtype, use_bias, history) whose ``sha256`` field covers the rest of the
metadata and every weight byte. ``save`` writes a temporary file next to the target and
``os.replace``-s it (atomic: a crash leaves the old file or the new one, never half of one).
``load`` never unpickles (``allow_pickle=False``) and rejects truncated, modified or foreign
files with :class:`ModelFileError`; the round trip is bit-exact and lands on any backend.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import zipfile

import numpy as np

from .errors import MLPAccelError

FORMAT = "mlpaccel.MLP"
FORMAT_VERSION = 1
_META_KEY = "__mlpaccel__"


class ModelFileError(MLPAccelError, ValueError):
    """The file is not a readable mlpaccel model (truncated, modified, foreign, too new)."""


def _digest(meta: dict, arrays: dict) -> str:
    """sha256 over the canonical JSON of ``meta`` (without its hash) and every array's name,
    dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    body = {k: v for k, v in meta.items() if k != "sha256"}
    h.update(json.dumps(body, sort_keys=True).encode())
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def save(model, path) -> None:
    """Write ``model`` to ``path`` (used as given; ``.npz`` is the customary suffix)."""
    from . import __version__

    arrays = {}
    for i, (W, b) in enumerate(model.get_weights()):
        arrays[f"W{i}"] = W.astype(model.dtype, copy=False)
        if b is not None:
            arrays[f"b{i}"] = b.astype(model.dtype, copy=False)
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "mlpaccel_version": __version__,
        "layer_sizes": list(model.layer_sizes),
        "activations": list(model.activations),
        "loss": model.loss.name,
        "dtype": model.dtype.name,
        "use_bias": model.use_bias,
        "random_state": model.random_state if isinstance(model.random_state, int) else None,
        "history": {k: [float(v) for v in vs] for k, vs in model.history.items()},
    }
    meta["sha256"] = _digest(meta, arrays)
    arrays[_META_KEY] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _read(path) -> tuple[dict, dict]:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no model file at {path!r}")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (zipfile.BadZipFile, EOFError, OSError, ValueError, KeyError) as exc:
        raise ModelFileError(f"{path!r} is not a readable mlpaccel model file (truncated, "
                             f"corrupted or not an .npz): {type(exc).__name__}: {exc}") from exc
    raw = arrays.pop(_META_KEY, None)
    if raw is None or raw.dtype != np.uint8 or raw.ndim != 1:
        raise ModelFileError(f"{path!r} is an .npz but not an mlpaccel model (no "
                             f"{_META_KEY!r} record); save models with MLP.save")
    try:
        meta = json.loads(raw.tobytes().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelFileError(f"{path!r}: the metadata record is damaged: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ModelFileError(f"{path!r} is not an mlpaccel MLP file (format "
                             f"{meta.get('format') if isinstance(meta, dict) else None!r})")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(f"{path!r} has format version {version!r}; this mlpaccel reads "
                             f"versions <= {FORMAT_VERSION}: upgrade mlpaccel")
    if meta.get("sha256") != _digest(meta, arrays):
        raise ModelFileError(f"{path!r} failed its sha256 check: the weights or metadata were "
                             "modified or corrupted after saving")
    return meta, arrays


def load(path, backend="auto"):
    """The model saved at ``path``, placed on ``backend``."""
    from .model import MLP

    meta, arrays = _read(path)
    try:
        sizes = meta["layer_sizes"]
        use_bias = bool(meta["use_bias"])
        weights = [(arrays[f"W{i}"], arrays[f"b{i}"] if use_bias else None)
                   for i in range(len(sizes) - 1)]
        model = MLP(sizes, activation=meta["activations"], loss=meta["loss"],
                    backend=backend, dtype=meta["dtype"], init=weights,
                    random_state=meta.get("random_state"), use_bias=use_bias)
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{os.fspath(path)!r}: inconsistent model record: "
                             f"{type(exc).__name__}: {exc}") from exc
    model.history = {k: list(v) for k, v in meta.get("history", {}).items()}
    return model
