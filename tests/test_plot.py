"""mlpaccel.plot: each figure is built headless, holds the right data, and saves to a file."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("matplotlib")

from mlpaccel import plot  # noqa: E402
from mlpaccel.backends import reference  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _is_png(path) -> bool:
    return path.is_file() and path.read_bytes()[:8] == PNG_MAGIC


def test_activations_plot_draws_f_and_its_derivative(tmp_path):
    out = tmp_path / "sub" / "act.png"
    fig = plot.plot_activations(("sigmoid", "relu"), path=out)
    assert _is_png(out)
    ax = fig.axes[0]
    z = ax.lines[2].get_xdata()
    f, df = ax.lines[2].get_ydata(), ax.lines[3].get_ydata()  # after the two axis lines
    s = 1 / (1 + np.exp(-z))
    np.testing.assert_allclose(f, s, atol=1e-12)
    np.testing.assert_allclose(df, s * (1 - s), atol=1e-12)
    relu = fig.axes[1]
    np.testing.assert_array_equal(relu.lines[3].get_ydata(), (z > 0).astype(float))
    with pytest.raises(ValueError, match="softmax"):
        plot.plot_activations(("softmax",))


class _Quadrant:
    """A stand-in classifier: P(class 1) = sigmoid(4 x1 x2) (the xor pattern)."""

    def predict_proba(self, X):
        p = 1 / (1 + np.exp(-4 * X[:, 0] * X[:, 1]))
        return np.column_stack([1 - p, p])

    def score(self, X, y):
        return float(np.mean((self.predict_proba(X)[:, 1] > 0.5) == y))


def test_decision_boundary_binary_and_multiclass(tmp_path):
    from mlpaccel import datasets as ds

    X, y = ds.xor(100, random_state=0)
    fig = plot.plot_decision_boundary(_Quadrant(), X, y, path=tmp_path / "db.png",
                                      resolution=40)
    assert _is_png(tmp_path / "db.png")
    ax = fig.axes[0]
    assert ax.get_title() == "accuracy 1.000"
    from matplotlib.collections import PathCollection

    points = np.concatenate([c.get_offsets() for c in ax.collections
                             if type(c) is PathCollection])  # the scatter dots
    assert sorted(map(tuple, points.round(9))) == sorted(map(tuple, X.round(9)))

    class Three:
        def predict_proba(self, X):
            return np.eye(3)[(X[:, 0] > 0).astype(int) + (X[:, 1] > 0).astype(int)]

    fig3 = plot.plot_decision_boundary(Three(), X, np.arange(100) % 3, resolution=30)
    assert len(fig3.axes) == 1  # no probability colour bar for more than two classes
    with pytest.raises(ValueError, match="2 features"):
        plot.plot_decision_boundary(_Quadrant(), np.zeros((5, 3)), np.zeros(5))


def test_history_plot_from_dict_model_and_sklearn(tmp_path):
    hist = {"loss": [1.0, 0.5, 0.25], "val_loss": [1.1, 0.6, 0.4], "accuracy": [0.5, 0.7, 0.9]}
    fig = plot.plot_history(hist, path=tmp_path / "h.png")
    assert _is_png(tmp_path / "h.png") and len(fig.axes) == 2
    np.testing.assert_array_equal(fig.axes[0].lines[1].get_ydata(), hist["val_loss"])
    assert fig.axes[0].get_yscale() == "log"

    class FakeSk:
        loss_curve_ = [0.9, 0.8]
        validation_scores_ = None

    assert len(plot.plot_history(FakeSk()).axes) == 1
    with pytest.raises(ValueError, match="no loss"):
        plot.plot_history({"loss": []})
    with pytest.raises(TypeError):
        plot.plot_history([1, 2])


def test_gradient_descent_1d_follows_seed_001(tmp_path):
    fig = plot.plot_gradient_descent_1d(path=tmp_path / "gd.png")
    assert _is_png(tmp_path / "gd.png")
    xs = fig.axes[0].collections[0].get_offsets()[:, 0]
    np.testing.assert_allclose(xs[:5], [10, 7.2, 5.52, 4.512, 3.9072])  # the seed's printout
    assert abs(xs[-1] - 3.0) < 1e-3 and len(xs) == 21


def test_gradient_quiver_arrows_point_downhill(tmp_path):
    fig = plot.plot_gradient_quiver(path=tmp_path / "q.svg")
    assert (tmp_path / "q.svg").read_text().lstrip().startswith("<?xml")
    from matplotlib.quiver import Quiver

    q = next(c for c in fig.axes[0].collections if isinstance(c, Quiver))
    pos = q.get_offsets()
    np.testing.assert_allclose(q.U, -2 * pos[:, 0])
    np.testing.assert_allclose(q.V, -2 * pos[:, 1])


def test_reference_module_is_the_oracle_for_the_activation_plot():
    # the plot uses the numpy backend; it must agree with the float64 reference
    z = np.linspace(-5, 5, 401).reshape(1, -1)
    fig = plot.plot_activations(("tanh",))
    np.testing.assert_allclose(fig.axes[0].lines[2].get_ydata(),
                               reference.activation("tanh", z)[0], atol=1e-12)
