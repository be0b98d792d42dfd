"""Small generated data sets: logic gates, TensorFlow-Playground 2-D sets, two-class blobs.

Every generator returns ``(X, y)``: ``X`` float64 of shape (n_samples, n_features) and ``y``
int64 class ids of shape (n_samples,). Randomness comes only from ``random_state`` (None, an
int seed or a ``numpy.random.Generator``), so the same seed gives the same points everywhere.

The Playground sets follow the geometry of ``classify*Data`` in TensorFlow Playground's
``src/dataset.ts``; its labels +1 / -1 become 1 / 0 here. Playground's noise slider (0-50 %)
is the ``noise`` argument divided by 100, i.e. ``noise`` in [0, 0.5].
"""

from __future__ import annotations

import numpy as np

#: truth tables of the two-input gates, rows in the order (0,0), (0,1), (1,0), (1,1)
GATES: dict[str, tuple[int, int, int, int]] = {
    "and": (0, 0, 0, 1),
    "or": (0, 1, 1, 1),
    "nand": (1, 1, 1, 0),
    "nor": (1, 0, 0, 0),
    "xor": (0, 1, 1, 0),
    "xnor": (1, 0, 0, 1),
}

_GATE_INPUTS = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)


def _rng(random_state) -> np.random.Generator:
    if isinstance(random_state, np.random.Generator):
        return random_state
    if random_state is None or isinstance(random_state, (int, np.integer)):
        return np.random.default_rng(random_state)
    raise TypeError(
        f"random_state must be None, an int or a numpy Generator, got {random_state!r}")


def _check_n(n_samples, minimum: int = 1) -> int:
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)):
        raise TypeError(f"n_samples must be an int, got {type(n_samples).__name__}")
    if n_samples < minimum:
        raise ValueError(f"n_samples must be >= {minimum}, got {n_samples}")
    return int(n_samples)


def _check_noise(noise) -> float:
    noise = float(noise)
    if not np.isfinite(noise) or noise < 0:
        raise ValueError(f"noise must be a finite number >= 0 (Playground uses 0..0.5), "
                         f"got {noise}")
    return noise


def logic_gate(name: str, dtype=np.float64) -> tuple[np.ndarray, np.ndarray]:
    """Truth table of a two-input gate: X (4, 2) of 0/1 in ``dtype``, y (4,) int64.

    ``name`` is one of and, or, nand, nor, xor, xnor (case-insensitive)."""
    key = str(name).lower()
    if key not in GATES:
        raise ValueError(f"unknown logic gate {name!r}; valid names: {', '.join(GATES)}")
    return _GATE_INPUTS.astype(dtype), np.array(GATES[key], dtype=np.int64)


def _finish(X: np.ndarray, y: np.ndarray, rng: np.random.Generator, shuffle: bool):
    # The generators emit class 1 first, then class 0 (as dataset.ts does); Playground shuffles
    # before splitting train/test, so do we unless asked not to.
    if shuffle:
        order = rng.permutation(len(y))
        X, y = X[order], y[order]
    return np.ascontiguousarray(X), y.astype(np.int64)


def _class_sizes(n: int) -> tuple[int, int]:
    return (n + 1) // 2, n // 2  # (class 1, class 0); dataset.ts splits numSamples / 2 each


def circle(n_samples: int = 500, noise: float = 0.0, random_state=None,
           shuffle: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Playground "circle": class 1 uniform in radius r ~ U(0, 2.5), class 0 in r ~ U(3.5, 5)
    (radius 5, boundary radius 2.5). The label is decided on the point plus uniform noise
    U(-5, 5) * noise per axis, so noisy points near the ring can take the other label."""
    n = _check_n(n_samples)
    noise = _check_noise(noise)
    rng = _rng(random_state)
    radius = 5.0
    parts_X, parts_y = [], []
    for count, (r_lo, r_hi) in zip(_class_sizes(n), [(0.0, radius * 0.5),
                                                      (radius * 0.7, radius)]):
        r = rng.uniform(r_lo, r_hi, count)
        angle = rng.uniform(0.0, 2 * np.pi, count)
        pts = np.column_stack([r * np.sin(angle), r * np.cos(angle)])
        jitter = rng.uniform(-radius, radius, (count, 2)) * noise
        label = (np.hypot(*(pts + jitter).T) < radius * 0.5).astype(np.int64)
        parts_X.append(pts)
        parts_y.append(label)
    return _finish(np.concatenate(parts_X), np.concatenate(parts_y), rng, shuffle)


def xor(n_samples: int = 500, noise: float = 0.0, random_state=None,
        shuffle: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Playground "xor": x, y ~ U(-5, 5) pushed 0.3 away from each axis (padding); class 1
    when x * y >= 0 (first and third quadrants), judged on the point plus U(-5, 5) * noise."""
    n = _check_n(n_samples)
    noise = _check_noise(noise)
    rng = _rng(random_state)
    pts = rng.uniform(-5.0, 5.0, (n, 2))
    pts += np.where(pts > 0, 0.3, -0.3)  # padding keeps a clear gap along both axes
    noisy = pts + rng.uniform(-5.0, 5.0, (n, 2)) * noise
    label = (noisy[:, 0] * noisy[:, 1] >= 0).astype(np.int64)
    return _finish(pts, label, rng, shuffle)


def gauss(n_samples: int = 500, noise: float = 0.0, random_state=None,
          shuffle: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Playground "gauss": two isotropic Gaussians, class 1 around (2, 2), class 0 around
    (-2, -2), variance 0.5 + 7 * noise (Playground's linear map of noise [0, 0.5] -> [0.5, 4])."""
    n = _check_n(n_samples)
    noise = _check_noise(noise)
    rng = _rng(random_state)
    std = np.sqrt(0.5 + noise * (4.0 - 0.5) / 0.5)
    n1, n0 = _class_sizes(n)
    X = np.concatenate([rng.normal(2.0, std, (n1, 2)), rng.normal(-2.0, std, (n0, 2))])
    y = np.concatenate([np.ones(n1, np.int64), np.zeros(n0, np.int64)])
    return _finish(X, y, rng, shuffle)


def spiral(n_samples: int = 500, noise: float = 0.0, random_state=None,
           shuffle: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Playground "spiral": two arms, point i of m per arm at r = 5 i / m and angle
    t = 1.75 * 2 pi i / m (+ pi for class 0): (r sin t, r cos t) + U(-1, 1) * noise."""
    n = _check_n(n_samples)
    noise = _check_noise(noise)
    rng = _rng(random_state)
    parts_X, parts_y = [], []
    for label, (count, delta_t) in enumerate(zip(_class_sizes(n)[::-1], (np.pi, 0.0))):
        i = np.arange(count, dtype=np.float64)
        m = max(count, 1)
        r = i / m * 5.0
        t = 1.75 * i / m * 2 * np.pi + delta_t
        pts = np.column_stack([r * np.sin(t), r * np.cos(t)])
        pts += rng.uniform(-1.0, 1.0, (count, 2)) * noise
        parts_X.append(pts)
        parts_y.append(np.full(count, label, np.int64))
    return _finish(np.concatenate(parts_X), np.concatenate(parts_y), rng, shuffle)


def make_classification(n_samples: int = 100, n_features: int = 2, n_classes: int = 2,
                        n_clusters_per_class: int = 2, class_sep: float = 1.0,
                        flip_y: float = 0.01, random_state=None,
                        shuffle: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Blobs in the style of scikit-learn's ``make_classification`` (seed 003 uses it with
    two features, two classes, nothing redundant): each class gets ``n_clusters_per_class``
    Gaussian clusters centred on distinct vertices of a hypercube of side 2 * class_sep, each
    cluster stretched by a random linear map; a fraction ``flip_y`` of labels is then
    reassigned at random. All features are informative. Not bit-identical to scikit-learn."""
    n = _check_n(n_samples)
    if n_classes < 2 or n_features < 1 or n_clusters_per_class < 1:
        raise ValueError("need n_classes >= 2, n_features >= 1, n_clusters_per_class >= 1")
    n_clusters = n_classes * n_clusters_per_class
    if n_clusters > 2 ** n_features:
        raise ValueError(f"n_classes * n_clusters_per_class = {n_clusters} must be <= "
                         f"2 ** n_features = {2 ** n_features} (one hypercube vertex each)")
    if not 0.0 <= flip_y <= 1.0:
        raise ValueError(f"flip_y must be in [0, 1], got {flip_y}")
    rng = _rng(random_state)
    vertices = rng.choice(2 ** n_features, n_clusters, replace=False)
    bits = (vertices[:, None] >> np.arange(n_features)) & 1
    centroids = (2.0 * bits - 1.0) * class_sep
    sizes = np.full(n_clusters, n // n_clusters)
    sizes[: n % n_clusters] += 1
    X = np.empty((n, n_features))
    y = np.empty(n, np.int64)
    start = 0
    for k in range(n_clusters):
        stop = start + sizes[k]
        stretch = 2.0 * rng.random((n_features, n_features)) - 1.0
        X[start:stop] = rng.standard_normal((sizes[k], n_features)) @ stretch + centroids[k]
        y[start:stop] = k % n_classes
        start = stop
    flip = rng.random(n) < flip_y
    y[flip] = rng.integers(0, n_classes, int(flip.sum()))
    return _finish(X, y, rng, shuffle)


blobs = make_classification

#: the generated sets by name (used by ``mlpaccel.datasets.load`` and ``mlpaccel train``)
PLAYGROUND = {"circle": circle, "xor": xor, "gauss": gauss, "spiral": spiral}
