"""The course notes' worked numbers (../shared/seeds/README.md), reproduced on every backend
in float64 to 1e-6. Conventions from the seeds: E = 1/2 sum (t - o)^2 per sample (our mse with
one sample), W of shape (fan_in, fan_out), plain gradient descent W <- W - lr dE/dW."""

from __future__ import annotations

import numpy as np
import pytest

from mlpaccel import MLP
from mlpaccel.optim import gradient_descent_1d

ATOL = 1e-6

SEED001_W = [(np.array([[0.10, 0.20], [0.30, 0.40]]), np.array([0.1, 0.2])),
             (np.array([[0.50], [0.60]]), np.array([0.3]))]
# seed 002: W1, W2 into h1 and W3, W4 into h2 -> columns of the (fan_in, fan_out) matrix
SEED002_W = [(np.array([[0.30, 0.40], [0.25, 0.35]]), None),
             (np.array([[0.45, 0.70], [0.40, 0.60]]), None)]


def _sigmoid_net(weights, backend, use_bias=True):
    return MLP([2, 2, len(weights[1][0][0])], activation="sigmoid",
               output_activation="sigmoid", loss="mse", backend=backend, dtype="float64",
               use_bias=use_bias, init=weights)


def test_seed001_one_step(backend):
    m = _sigmoid_net(SEED001_W, backend)
    x, t = np.array([[0.0, 0.0]]), np.array([[0.0]])
    assert m.evaluate(x, t)["loss"] == pytest.approx(0.251612, abs=ATOL)
    np.testing.assert_allclose(m.predict(x), [[0.709383]], atol=ATOL)
    E = m.train_step(x, t, optimizer="sgd", learning_rate=0.2)
    assert E == pytest.approx(0.251612, abs=ATOL)  # the loss before the step
    (W1, b1), (W2, b2) = m.get_weights()
    np.testing.assert_allclose(W2[:, 0], [0.484645, 0.583918], atol=ATOL)  # w5, w6
    np.testing.assert_allclose(b2, [0.270750], atol=ATOL)                 # b3
    np.testing.assert_allclose(b1, [0.096353, 0.195656], atol=ATOL)
    np.testing.assert_array_equal(W1, SEED001_W[0][0])  # input is 0: W1 unchanged
    np.testing.assert_allclose(m.predict(x), [[0.699553]], atol=ATOL)
    assert m.evaluate(x, t)["loss"] == pytest.approx(0.244687, abs=ATOL)


def test_seed001_hidden_activations(backend):
    m = _sigmoid_net(SEED001_W, backend)
    hidden = MLP([2, 2], activation=[], output_activation="sigmoid", backend=backend,
                 dtype="float64", init=[SEED001_W[0]])
    np.testing.assert_allclose(hidden.predict(np.zeros((1, 2))), [[0.524979, 0.549834]],
                               atol=ATOL)
    assert m.layer_sizes == [2, 2, 1]


def test_seed002_forward_and_update(backend):
    m = _sigmoid_net(SEED002_W, backend, use_bias=False)
    x, t = np.array([[0.1, 0.2]]), np.array([[0.4, 0.6]])
    np.testing.assert_allclose(m.predict(x), [[0.60944600, 0.66384491]], atol=ATOL)
    hidden = MLP([2, 2], activation=[], output_activation="sigmoid", backend=backend,
                 dtype="float64", use_bias=False, init=[SEED002_W[0]])
    np.testing.assert_allclose(hidden.predict(x), [[0.51998934, 0.52747230]], atol=ATOL)
    E = m.train_step(x, t, optimizer="sgd", learning_rate=0.5)
    assert E == pytest.approx(0.02397190, abs=ATOL)
    (Wh, bh), (Wo, bo) = m.get_weights()
    assert bh is None and bo is None
    # W5..W8: W5 = h1->o1, W6 = h2->o1, W7 = h1->o2, W8 = h2->o2
    np.testing.assert_allclose([Wo[0, 0], Wo[1, 0], Wo[0, 1], Wo[1, 1]],
                               [0.43703857, 0.38685205, 0.69629578, 0.59624247], atol=ATOL)
    np.testing.assert_allclose([Wh[0, 0], Wh[1, 0], Wh[0, 1], Wh[1, 1]],
                               [0.29959556, 0.24919112, 0.39964496, 0.34928991], atol=ATOL)


def test_seed002_gradient_dE_dW5():
    """dE/dW5 = 0.02592286: recovered from the update W5+ = W5 - lr dE/dW5."""
    m = _sigmoid_net(SEED002_W, "numpy", use_bias=False)
    m.train_step(np.array([[0.1, 0.2]]), np.array([[0.4, 0.6]]), learning_rate=1.0)
    assert 0.45 - m.get_weights()[1][0][0, 0] == pytest.approx(0.02592286, abs=1e-8)


def test_seed001_gradient_descent_1d():
    """(x - 3)^2 + 10 from x = 10 with lr 0.2: 7.2, 5.52, 4.512, ... -> 3."""
    path = gradient_descent_1d(lambda x: 2 * x - 6, 10.0, 0.2, steps=100)
    np.testing.assert_allclose(path[1:6], [7.2, 5.52, 4.512, 3.9072, 3.54432], rtol=1e-12)
    assert path[-1] == pytest.approx(3.0, abs=ATOL)
    assert (path[-1] - 3) ** 2 + 10 == pytest.approx(10.0, abs=ATOL)
    losses = [(x - 3) ** 2 + 10 for x in path]
    assert all(a > b for a, b in zip(losses, losses[1:]) if a - 10 > 1e-20)


def test_gradient_descent_1d_stops_at_precision():
    path = gradient_descent_1d(lambda x: 2 * x - 6, 10.0, 0.2, steps=1000, precision=1e-5)
    assert len(path) < 100 and abs(path[-1] - 3) < 1e-4


@pytest.mark.slow
def test_seed001_mlp2_xnor_90000_epochs():
    """MLP2: per-sample updates (batch_size=1), samples in order, 90,000 epochs (360k steps)."""
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
    T = np.array([[1], [0], [0], [1]], dtype=float)
    m = _sigmoid_net(SEED001_W, "numpy")
    m.fit(X, T, epochs=90_000, batch_size=1, shuffle=False, optimizer="sgd",
          learning_rate=0.2, verbose=0)
    np.testing.assert_allclose(m.predict(X)[:, 0],
                               [0.99196032, 0.00835708, 0.00836107, 0.98974873], atol=ATOL)
    assert len(m.history["loss"]) == 90_000


def test_seed001_mlp2_first_epochs_every_backend(backend):
    """The same per-sample XNOR run, 25 epochs, equals a hand-written NumPy MLP2 loop."""
    X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=float)
    T = np.array([[1], [0], [0], [1]], dtype=float)
    m = _sigmoid_net(SEED001_W, backend)
    m.fit(X, T, epochs=25, batch_size=1, shuffle=False, optimizer="sgd", learning_rate=0.2,
          verbose=0)
    W1, B1 = SEED001_W[0][0].copy(), SEED001_W[0][1].copy()
    W2, B2 = SEED001_W[1][0].copy(), SEED001_W[1][1].copy()

    def act(v):
        return 1 / (1 + np.exp(-v))
    for _ in range(25):  # seed 001's fit(), verbatim in matrix form
        for x, y in zip(X, T):
            l0 = x.reshape(1, -1)
            l1 = act(l0 @ W1 + B1)
            l2 = act(l1 @ W2 + B2)
            d2 = (l2 - y) * l2 * (1 - l2)
            d1 = (d2 @ W2.T) * l1 * (1 - l1)
            W2 -= 0.2 * l1.T @ d2
            W1 -= 0.2 * l0.T @ d1
            B2 -= 0.2 * d2.sum(0)
            B1 -= 0.2 * d1.sum(0)
    (w1, b1), (w2, b2) = m.get_weights()
    for got, want in [(w1, W1), (b1, B1), (w2, W2), (b2, B2)]:
        np.testing.assert_allclose(got, want, atol=1e-12)
