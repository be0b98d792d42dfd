"""The user's own tables and the usual preparation steps: CSV, digits, split, standardize."""

from __future__ import annotations

import csv
import os

import numpy as np

from .errors import DatasetFormatError
from .synthetic import _rng


def digits(normalize: bool = False, dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 handwritten digits: X (1797, 64) pixel intensities 0..16 in
    ``dtype`` (divided by 16 when ``normalize``), y (1797,) int64 digits 0..9.

    Needs scikit-learn (the ``sklearn`` extra): ``pip install 'mlpaccel[sklearn]'``."""
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise ImportError("digits() needs scikit-learn; install it with "
                          "pip install 'mlpaccel[sklearn]'") from exc
    X, y = load_digits(return_X_y=True)
    X = X.astype(dtype)
    if normalize:
        X /= 16
    return X, y.astype(np.int64)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def load_csv(path: str | os.PathLike, target: int | str = -1, delimiter: str = ",",
             header: bool | None = None, dtype=np.float64, return_classes: bool = False):
    """Read a numeric table: X (n, columns - 1) in ``dtype`` and y (n,) from column ``target``.

    ``target``: a column index (negative counts from the end) or a header name. ``header``:
    True / False, or None to treat the first row as names when any cell in it is not a number.
    y is int64 when every target value is an integer, float64 otherwise (regression), and,
    when the targets are text, int64 codes 0..k-1 of the sorted distinct values (pass
    ``return_classes=True`` to also get those values: ``(X, y, classes)``)."""
    with open(path, newline="") as fh:
        rows = [row for row in csv.reader(fh, delimiter=delimiter) if row and any(
            cell.strip() for cell in row)]
    if not rows:
        raise DatasetFormatError(f"{path}: no rows")
    if header is None:
        header = not all(_is_number(cell) for cell in rows[0])
    names = [c.strip() for c in rows[0]] if header else None
    body = rows[1:] if header else rows
    if not body:
        raise DatasetFormatError(f"{path}: a header but no data rows")
    width = len(rows[0])
    for lineno, row in enumerate(body, start=2 if header else 1):
        if len(row) != width:
            raise DatasetFormatError(f"{path}:{lineno}: {len(row)} fields, expected {width}")
    col = _target_index(target, names, width, path)
    try:
        X = np.array([[float(c) for i, c in enumerate(r) if i != col] for r in body], dtype)
    except ValueError as exc:
        raise DatasetFormatError(f"{path}: a feature cell is not a number ({exc}); only the "
                                 f"target column may hold text") from exc
    X = X.reshape(len(body), width - 1)
    raw = [r[col].strip() for r in body]
    classes = None
    if all(_is_number(v) for v in raw):
        y = np.array([float(v) for v in raw])
        if np.all(np.isfinite(y)) and np.all(y == np.round(y)):
            y = y.astype(np.int64)
    else:
        classes, y = np.unique(np.array(raw), return_inverse=True)
        y = y.astype(np.int64)
    if return_classes:
        return X, y, classes
    return X, y


def _target_index(target, names, width: int, path) -> int:
    if isinstance(target, str):
        if names is None:
            raise ValueError(f"target={target!r} is a column name but {path} has no header; "
                             f"pass a column index")
        if target not in names:
            raise ValueError(f"target column {target!r} not in {path}; columns: {names}")
        return names.index(target)
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)):
        raise TypeError(f"target must be a column index or name, got {target!r}")
    if not -width <= target < width:
        raise ValueError(f"target index {target} out of range for {width} columns")
    if width < 2:
        raise DatasetFormatError(f"{path}: need at least one feature column and the target")
    return int(target) % width


def train_test_split(X, y, test_size: float | int = 0.25, random_state=None,
                     stratify=None, shuffle: bool = True):
    """Split into ``X_train, X_test, y_train, y_test`` (scikit-learn's order).

    ``test_size``: a fraction in (0, 1) or a number of samples. ``stratify``: None, True (use
    ``y``) or an array of class labels; keeps each class's share in both parts (each class
    rounds its own test count, so totals can differ from ``test_size`` by a few samples)."""
    X = np.asarray(X)
    y = np.asarray(y)
    n = len(X)
    if len(y) != n:
        raise ValueError(f"X has {n} rows but y has {len(y)}")
    n_test = _n_test(test_size, n)
    rng = _rng(random_state)
    if stratify is None or stratify is False:
        order = rng.permutation(n) if shuffle else np.arange(n)
        test, train = order[:n_test], order[n_test:]
    else:
        if not shuffle:
            raise ValueError("stratify needs shuffle=True")
        labels = y if stratify is True else np.asarray(stratify)
        if len(labels) != n:
            raise ValueError(f"stratify has {len(labels)} labels for {n} samples")
        test_parts, train_parts = [], []
        for cls in np.unique(labels):
            idx = rng.permutation(np.flatnonzero(labels == cls))
            k = int(round(len(idx) * n_test / n))
            test_parts.append(idx[:k])
            train_parts.append(idx[k:])
        test = rng.permutation(np.concatenate(test_parts))
        train = rng.permutation(np.concatenate(train_parts))
    return X[train], X[test], y[train], y[test]


def _n_test(test_size, n: int) -> int:
    if isinstance(test_size, (float, np.floating)):
        if not 0.0 < test_size < 1.0:
            raise ValueError(f"test_size as a fraction must be in (0, 1), got {test_size}")
        n_test = int(np.ceil(test_size * n))
    elif isinstance(test_size, (int, np.integer)) and not isinstance(test_size, bool):
        n_test = int(test_size)
    else:
        raise TypeError(f"test_size must be a float fraction or an int count, got {test_size!r}")
    if not 0 < n_test < n:
        raise ValueError(f"test_size={test_size} leaves {n_test} of {n} samples for testing; "
                         f"both parts need at least one")
    return n_test


def standardize(X, mean=None, std=None):
    """Return ``(X - mean) / std, mean, std`` per column (X of shape (n, features)).

    Without ``mean``/``std`` they are computed from X (population std); pass the training
    set's values to transform a test set the same way. Columns with std 0 are divided by 1."""
    X = np.asarray(X)
    if X.ndim != 2:
        raise ValueError(f"X must be 2-D (samples, features), got shape {X.shape}")
    work = X.astype(X.dtype if X.dtype.kind == "f" else np.float64)
    if mean is None:
        mean = work.mean(axis=0)
    if std is None:
        std = work.std(axis=0)
        std = np.where(std == 0, 1.0, std).astype(work.dtype)
    mean = np.asarray(mean, dtype=work.dtype)
    std = np.asarray(std, dtype=work.dtype)
    if mean.shape not in ((), (X.shape[1],)) or std.shape not in ((), (X.shape[1],)):
        raise ValueError(f"mean {mean.shape} and std {std.shape} must be scalars or have "
                         f"one value per column ({X.shape[1]})")
    if np.any(std == 0):
        raise ValueError("std contains zeros; pass 1 for constant columns")
    return (work - mean) / std, mean, std
