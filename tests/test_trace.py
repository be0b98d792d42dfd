"""The backprop walk-through: seed 002's numbers and formulas on screen, and `mlpaccel trace`."""

from __future__ import annotations

import re

import numpy as np
import pytest

from mlpaccel.cli import main
from mlpaccel.trace import SEED002, example_model

SEED002_LINES = [  # (label, number) as seed 002 writes them
    ("z1 = W1*x1 + W2*x2", "0.08000000"),
    ("h1 = sigmoid(z1)", "0.51998934"),
    ("h2 = sigmoid(z2)", "0.52747230"),
    ("z3 = W5*h1 + W6*h2", "0.44498412"),
    ("z4 = W7*h1 + W8*h2", "0.68047592"),
    ("o1 = sigmoid(z3)", "0.60944600"),
    ("o2 = sigmoid(z4)", "0.66384491"),
    ("E_o1 = 1/2 (t1 - o1)^2", "0.02193381"),
    ("E_o2 = 1/2 (t2 - o2)^2", "0.00203809"),
    ("E_total = E_o1 + E_o2", "0.02397190"),
    ("dE/do1 = -(t1 - o1)", "0.20944600"),
    ("do1/dz3 = o1 * (1 - o1)", "0.23802157"),
    ("dE/dW5 = delta_z3 * h1", "0.02592286"),
    ("W5+ = W5 - 0.5 * dE/dW5", "0.43703857"),
    ("W6+", "0.38685205"), ("W7+", "0.69629578"), ("W8+", "0.59624247"),
    ("W1+", "0.29959556"), ("W2+", "0.24919112"), ("W3+", "0.39964496"),
    ("W4+", "0.34928991"),
]


def _check(text):
    lines = text.splitlines()
    for label, number in SEED002_LINES:
        hits = [ln for ln in lines if ln.strip().startswith(label)]
        assert hits, f"no line starting with {label!r}"
        assert hits[0].rstrip().endswith("= " + number), hits[0]


def test_trace_step_prints_seed002(backend, capsys):
    m = example_model("seed002", backend=backend)
    text = m.trace_step(SEED002["x"], SEED002["t"], learning_rate=0.5)
    assert capsys.readouterr().out.strip() == text.strip()
    _check(text)
    # the step was applied: the model now holds the printed W+
    np.testing.assert_allclose(m.get_weights()[1][0][0, 0], 0.43703857, atol=1e-8)


def test_trace_hidden_deltas_sum_over_the_next_layer():
    text = example_model().trace_step(SEED002["x"], SEED002["t"], file=False)
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("dE/dh1"))
    assert "delta_z3*W5 + delta_z4*W7" in line
    nums = [float(v) for v in re.findall(r"[-\d.]+\*[-\d.]+", line)[0].split("*")]
    assert len(nums) == 2


def test_cli_trace_default_is_seed002(capsys):
    assert main(["trace"]) == 0
    _check(capsys.readouterr().out)


def test_cli_trace_seed001_and_custom_net(capsys):
    assert main(["trace", "--example", "seed001"]) == 0
    out = capsys.readouterr().out
    assert "E_total = E_o1 = 0.25161222" in out
    assert "b2_1+ = 0.30000000 - 0.2 * 0.14624551 = 0.27075090" in out
    assert main(["trace", "--layers", "3,4,2", "--activation", "tanh", "--x", "1,2,3",
                 "--target", "0.1,0.9", "--lr", "0.1"]) == 0
    out = capsys.readouterr().out
    assert "h4 = tanh(z4)" in out and "W20+" in out
    assert main(["trace", "--layers", "3,2", "--x", "1,2", "--target", "1,0"]) == 2
    assert "features" in capsys.readouterr().err


@pytest.mark.parametrize("loss, out_act", [("cross_entropy", "softmax"),
                                           ("binary_cross_entropy", "sigmoid")])
def test_trace_other_losses_match_a_train_step(loss, out_act):
    from mlpaccel import MLP

    kw = dict(activation="relu", output_activation=out_act, loss=loss, backend="numpy",
              dtype="float64", random_state=0)
    a, b = MLP([3, 4, 2], **kw), MLP([3, 4, 2], **kw)
    x, t = [0.5, -1.0, 2.0], [0.0, 1.0]
    a.trace_step(x, t, learning_rate=0.1, file=False)
    b.train_step(np.array([x]), np.array([t]), optimizer="sgd", learning_rate=0.1)
    for (W, c), (W2, c2) in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(W, W2)
        np.testing.assert_array_equal(c, c2)
