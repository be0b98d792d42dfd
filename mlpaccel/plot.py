"""Figures for the curriculum (matplotlib extra): activations, decision boundaries, loss
curves, and seed 001's gradient-descent demos.

Every function returns a ``matplotlib.figure.Figure`` and, given ``path``, also saves it there
(format from the suffix). Figures are built with the object-oriented API (``Figure`` plus
``FigureCanvasAgg``), never through ``pyplot``: nothing global changes, no window opens, and it
works headless with no backend to select. In Jupyter the returned figure displays itself.
"""

from __future__ import annotations

import os

import numpy as np

#: TensorFlow Playground's colours: orange for the negative class, blue for the positive one
ORANGE = "#f59322"
BLUE = "#0877bd"
_CLASS_COLORS = (ORANGE, BLUE, "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                 "#7f7f7f", "#bcbd22", "#17becf")


def figure(width: float = 6.0, height: float = 4.0):
    """A new headless ``Figure`` (constrained layout) to combine panels of these plots."""
    return _figure(width, height)


def _figure(width: float, height: float):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise ImportError("mlpaccel.plot needs matplotlib; install it with "
                          "pip install 'mlpaccel[plot]'") from exc
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save(fig, path):
    """Save ``fig`` to ``path`` (folders created); returns ``fig``."""
    return _finish(fig, path)


def _finish(fig, path):
    if path is not None:
        path = os.fspath(path)
        folder = os.path.dirname(path)
        if folder:
            os.makedirs(folder, exist_ok=True)
        fig.savefig(path, dpi=110)
    return fig


def plot_activations(names=("step", "sigmoid", "tanh", "relu", "leaky_relu", "gelu"),
                     z_range=(-5.0, 5.0), backend="numpy", path=None):
    """One panel per activation: f(z) (solid) and f'(z) (dashed) over ``z_range``, computed by
    ``backend``'s ``activation`` / ``activation_grad`` (the derivative as grad_out = 1)."""
    from . import activations as _act
    from .backends import get_backend

    B = get_backend(backend)
    names = [_act.canonical(n) for n in names]
    if "softmax" in names:
        raise ValueError("softmax is row-wise (no 1-D curve); plot the others")
    z = np.linspace(*z_range, 401).reshape(1, -1)
    cols = min(3, len(names))
    rows = -(-len(names) // cols)
    fig = _figure(3.4 * cols, 2.6 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    zb = B.asarray(z, dtype=np.float64)
    ones = B.asarray(np.ones_like(z), dtype=np.float64)
    for ax, name in zip(axes, names):
        a = B.activation(name, zb)
        da = B.activation_grad(name, zb, a, ones)
        ax.axhline(0, color="0.8", lw=0.8)
        ax.axvline(0, color="0.8", lw=0.8)
        ax.plot(z[0], B.to_numpy(a)[0], color=BLUE, lw=2, label="f(z)")
        ax.plot(z[0], B.to_numpy(da)[0], color=ORANGE, lw=2, ls="--", label="f'(z)")
        ax.set_title(f"{name}: {_act.ACTIVATIONS[name].formula}", fontsize=9)
        ax.set_xlabel("z")
        ax.legend(fontsize=8, loc="upper left")
    for ax in axes[len(names):]:
        ax.set_visible(False)
    return _finish(fig, path)


def _scores_on_grid(model, grid: np.ndarray) -> np.ndarray:
    """(n, k) class probabilities for the grid points from ``predict_proba`` (or predict)."""
    if hasattr(model, "predict_proba"):
        p = np.asarray(model.predict_proba(grid), dtype=np.float64)
    else:
        p = np.asarray(model.predict(grid), dtype=np.float64)
    return p.reshape(len(grid), -1)


def plot_decision_boundary(model, X, y, path=None, resolution: int = 200, title=None,
                           ax=None, margin: float = 0.5):
    """Playground-style view of a 2-feature classifier: the background shows the model's
    confidence (orange = class 0, blue = class 1, white = 0.5; with more classes the argmax
    class colour), the line is the 0.5 contour, the dots are the data (X (n, 2), labels y).
    ``model`` is anything with ``predict_proba`` (an MLP, a scikit-learn estimator)."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y).ravel()
    if X.ndim != 2 or X.shape[1] != 2:
        raise ValueError(f"a decision boundary needs X with 2 features, got shape {X.shape}")
    if len(y) != len(X):
        raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
    from matplotlib.colors import LinearSegmentedColormap, ListedColormap

    lo = X.min(axis=0) - margin
    hi = X.max(axis=0) + margin
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], resolution),
                         np.linspace(lo[1], hi[1], resolution))
    grid = np.column_stack([gx.ravel(), gy.ravel()])
    p = _scores_on_grid(model, grid)
    if ax is None:
        fig = _figure(5.0, 4.6)
        ax = fig.subplots()
    else:
        fig = ax.figure
    classes = np.unique(y)
    if p.shape[1] <= 2:  # binary: P(class 1) on an orange-white-blue scale
        p1 = (p[:, -1]).reshape(gx.shape)
        cmap = LinearSegmentedColormap.from_list("playground", [ORANGE, "#ffffff", BLUE])
        mesh = ax.contourf(gx, gy, p1, levels=np.linspace(0, 1, 21), cmap=cmap, alpha=0.75)
        ax.contour(gx, gy, p1, levels=[0.5], colors="0.25", linewidths=1.2)
        fig.colorbar(mesh, ax=ax, label="P(class 1)", ticks=[0, 0.5, 1])
    else:
        k = p.shape[1]
        cmap = ListedColormap(_CLASS_COLORS[:k])
        ax.contourf(gx, gy, p.argmax(1).reshape(gx.shape), levels=np.arange(k + 1) - 0.5,
                    cmap=cmap, alpha=0.35)
    for i, cls in enumerate(classes):
        sel = y == cls
        ax.scatter(X[sel, 0], X[sel, 1], s=18, color=_CLASS_COLORS[i % len(_CLASS_COLORS)],
                   edgecolors="white", linewidths=0.6, label=f"class {cls}")
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_xlabel("x1")
    ax.set_ylabel("x2")
    ax.legend(loc="upper right", fontsize=8, framealpha=0.8)
    if title is None and hasattr(model, "score"):
        try:
            title = f"accuracy {model.score(X, y):.3f}"
        except Exception:  # a model that cannot score these labels: no title, still a plot
            title = None
    if title:
        ax.set_title(title)
    return _finish(fig, path)


def plot_history(history, path=None, title=None, ax=None):
    """Loss curves from ``history``: a dict like ``MLP.history`` ({"loss": [...],
    "val_loss": [...], "accuracy": [...], ...}), a model with ``.history``, or a scikit-learn
    estimator (``loss_curve_``, ``validation_scores_``). Losses left, accuracies right (when
    present), per epoch. With ``ax`` only the loss panel is drawn, into that axes."""
    if hasattr(history, "loss_curve_"):
        hist = {"loss": list(history.loss_curve_)}
        if getattr(history, "validation_scores_", None):
            hist["val_score"] = list(history.validation_scores_)
    elif hasattr(history, "history"):
        hist = dict(history.history)
    elif isinstance(history, dict):
        hist = dict(history)
    else:
        raise TypeError(f"history must be a dict, a model with .history or a fitted "
                        f"scikit-learn estimator, got {type(history).__name__}")
    loss_keys = [k for k in hist if "loss" in k and len(hist[k])]
    other = [k for k in hist if k not in loss_keys and len(hist[k]) and k != "lr"
             and np.ndim(hist[k]) == 1]
    if not loss_keys:
        raise ValueError(f"history has no loss values (keys: {sorted(hist)}); train first")
    if ax is not None:
        fig, axes, other = ax.figure, [ax], []
    else:
        fig = _figure(9.0 if other else 5.0, 3.6)
        axes = fig.subplots(1, 2 if other else 1, squeeze=False)[0]
    palette = {0: BLUE, 1: ORANGE}
    for i, key in enumerate(loss_keys):
        epochs = np.arange(1, len(hist[key]) + 1)
        axes[0].plot(epochs, hist[key], color=palette.get(i), lw=2,
                     ls="--" if key.startswith("val") else "-", label=key)
    axes[0].set_xlabel("epoch")
    axes[0].set_ylabel("loss")
    if all(np.all(np.asarray(hist[k]) > 0) for k in loss_keys):
        axes[0].set_yscale("log")
    axes[0].legend()
    axes[0].grid(alpha=0.3)
    if other:
        for i, key in enumerate(other):
            epochs = np.arange(1, len(hist[key]) + 1)
            axes[1].plot(epochs, hist[key], color=palette.get(i), lw=2,
                         ls="--" if key.startswith("val") else "-", label=key)
        axes[1].set_xlabel("epoch")
        axes[1].set_ylabel("score")
        axes[1].legend()
        axes[1].grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return _finish(fig, path)


def plot_gradient_descent_1d(x0: float = 10.0, learning_rate: float = 0.2, steps: int = 20,
                             path=None):
    """Seed 001's 1-D gradient descent (``mlpaccel.optim.gradient_descent_1d``): the loss
    (x - 3)^2 + 10 and the steps x <- x - lr (2x - 6) from ``x0``, each an arrow from x_t to
    x_t+1 (x0 = 10, lr 0.2: 7.2, 5.52, 4.512, ... -> 3)."""
    from .optim import gradient_descent_1d

    xs = np.array(gradient_descent_1d(lambda x: 2.0 * x - 6.0, x0, learning_rate, steps))
    ys = (xs - 3.0) ** 2 + 10.0
    span = max(abs(xs - 3.0).max(), 1.0) * 1.15
    grid = np.linspace(3.0 - span, 3.0 + span, 400)
    fig = _figure(6.0, 4.0)
    ax = fig.subplots()
    ax.plot(grid, (grid - 3.0) ** 2 + 10.0, color="0.4", lw=1.5, label="y = (x - 3)² + 10")
    for i in range(len(xs) - 1):
        ax.annotate("", xy=(xs[i + 1], ys[i + 1]), xytext=(xs[i], ys[i]),
                    arrowprops=dict(arrowstyle="->", color=ORANGE, lw=1.2))
    ax.scatter(xs, ys, color=BLUE, zorder=3, s=22, label=f"x_t, lr = {learning_rate:g}")
    ax.scatter([3.0], [10.0], marker="*", s=160, color=ORANGE, zorder=4, label="minimum (3, 10)")
    ax.set_xlabel("x")
    ax.set_ylabel("loss")
    ax.set_title(f"gradient descent from x = {x0:g}: {len(xs) - 1} steps -> x = {xs[-1]:.6f}")
    ax.legend()
    ax.grid(alpha=0.3)
    return _finish(fig, path)


def plot_gradient_quiver(path=None, lim: float = 5.0, step: float = 0.5):
    """Seed 001's 2-D picture: the negative gradient (-2x, -2y) of f = x^2 + y^2 as arrows on
    a grid (np.arange(-lim, lim, step)) over the contours of f; every arrow points to (0, 0)."""
    r = np.arange(-lim, lim, step)
    X, Y = np.meshgrid(r, r)
    U, V = -2.0 * X, -2.0 * Y
    fig = _figure(5.2, 5.0)
    ax = fig.subplots()
    fine = np.linspace(-lim, lim, 200)
    FX, FY = np.meshgrid(fine, fine)
    cs = ax.contour(FX, FY, FX ** 2 + FY ** 2, levels=8, cmap="Blues", linewidths=0.8)
    ax.clabel(cs, fontsize=7)
    ax.quiver(X, Y, U, V, np.hypot(U, V), cmap="Oranges", units="width")
    ax.plot([0], [0], marker="*", ms=12, color=BLUE)
    ax.set_aspect("equal")
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_title("-∇f for f(x, y) = x² + y²: arrows point to the minimum")
    return _finish(fig, path)


__all__ = ["BLUE", "ORANGE", "figure", "plot_activations", "save",
           "plot_decision_boundary", "plot_gradient_descent_1d", "plot_gradient_quiver",
           "plot_history"]
