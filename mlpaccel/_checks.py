"""Input validation for the trainer: every check runs on the host BEFORE any weight changes."""

from __future__ import annotations

import numpy as np


def check_X(X, n_features: int, what: str = "X") -> np.ndarray:
    """X as a 2-D finite float host array (M, n_features), M >= 1, else a typed error.
    float32/float64 input is kept as it is (no copy); ints and bools become float64."""
    if isinstance(X, (str, bytes)):
        raise TypeError(f"{what} must be a numeric 2-D array, got a string")
    try:
        a = np.asarray(X)
    except Exception as exc:
        raise TypeError(f"{what} must be a numeric 2-D array: {exc}") from exc
    if a.dtype.kind not in "fiub":
        raise TypeError(f"{what} must be numeric (float, int or bool), got dtype {a.dtype}; "
                        "convert it with np.asarray(X, dtype=float)")
    if a.ndim != 2:
        hint = " (one sample: X.reshape(1, -1); one feature: X.reshape(-1, 1))" if a.ndim == 1 \
            else ""
        raise ValueError(f"{what} must be 2-D (samples, features), got shape {a.shape}{hint}")
    if a.shape[0] == 0:
        raise ValueError(f"{what} is empty: it has 0 samples")
    if a.shape[1] != n_features:
        raise ValueError(f"{what} has {a.shape[1]} features but the model's input layer has "
                         f"{n_features}")
    if a.dtype.kind != "f" or a.dtype.itemsize < 4:
        a = a.astype(np.float64)
    # min/max propagate NaN and show inf without a temporary as large as X
    if not (np.isfinite(a.min()) and np.isfinite(a.max())):
        bad = int(np.count_nonzero(~np.isfinite(a)))
        raise ValueError(f"{what} contains {bad} NaN or infinite value(s); clean or impute them")
    return a


def check_targets(y, m: int, n_out: int, loss) -> np.ndarray:
    """Targets as a float64 host array (M, n_out): one-hot rows for cross-entropy labels."""
    if isinstance(y, (str, bytes)):
        raise TypeError("y must be a numeric array, got a string")
    a = np.asarray(y)
    if a.dtype.kind not in "fiub":
        raise TypeError(f"y must be numeric, got dtype {a.dtype}; encode string labels as "
                        "integers 0..C-1 (or use mlpaccel.sklearn.MLPClassifier)")
    if a.ndim == 0 or a.shape[0] != m:
        raise ValueError(f"y has {a.shape[0] if a.ndim else 0} rows but X has {m} samples")
    af = a.astype(np.float64, copy=False)
    if not np.all(np.isfinite(af)):
        raise ValueError("y contains NaN or infinite values")
    if loss.name == "cross_entropy":
        if a.ndim == 1 or (a.ndim == 2 and a.shape[1] == 1 and n_out > 1):
            labels = af.reshape(-1)
            if np.any(labels != np.round(labels)):
                raise ValueError("cross_entropy needs integer class labels 0..C-1, got "
                                 "non-integer values")
            lo, hi = labels.min(), labels.max()
            if lo < 0 or hi >= n_out:
                raise ValueError(f"labels must be in [0, {n_out}) for an output layer of "
                                 f"{n_out} units, got values from {lo:g} to {hi:g}")
            out = np.zeros((m, n_out))
            out[np.arange(m), labels.astype(np.int64)] = 1.0
            return out
        if a.ndim == 2 and a.shape[1] == n_out:
            if np.any(af < 0):
                raise ValueError("probability targets for cross_entropy must be >= 0")
            return af
        raise ValueError(f"y must be labels of shape ({m},) or one-hot rows ({m}, {n_out}), "
                         f"got shape {a.shape}")
    if a.ndim == 1:
        if n_out != 1:
            raise ValueError(f"y must have shape ({m}, {n_out}) for {n_out} outputs, got "
                             f"{a.shape}")
        af = af.reshape(m, 1)
    elif a.ndim != 2 or a.shape[1] != n_out:
        raise ValueError(f"y must have shape ({m}, {n_out}), got {a.shape}")
    if loss.name == "binary_cross_entropy" and (np.any(af < 0) or np.any(af > 1)):
        raise ValueError("binary_cross_entropy targets must lie in [0, 1] (labels 0 or 1)")
    return af
