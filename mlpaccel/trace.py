"""The backprop walk-through on screen: one SGD step on one sample, written out as seed 002
writes it, every number beside its formula.

Naming follows seed 002: inputs x1..xn; pre-activations z and weights W numbered on through
the whole network (W1 = x1 -> h1, W2 = x2 -> h1, W3 = x1 -> h2, ...; z1, z2 hidden, z3, z4
output for the 2-2-2 net); hidden units h (h<l>_<j> with several hidden layers); outputs o.
The numbers come from the model's own backend (forward, loss, backward); the step applied
afterwards is the model's ``train_step`` with plain SGD, so the printed W+ are what it holds.
"""

from __future__ import annotations

import re
import sys

import numpy as np

from . import activations as _act
from ._checks import check_targets, check_X

#: seed 002's 2-2-2 example: W1..W4 hidden, W5..W8 output, no biases, lr 0.5
SEED002 = {
    "layer_sizes": [2, 2, 2],
    "weights": [(np.array([[0.30, 0.40], [0.25, 0.35]]), None),
                (np.array([[0.45, 0.70], [0.40, 0.60]]), None)],
    "x": [0.1, 0.2],
    "t": [0.4, 0.6],
    "learning_rate": 0.5,
}


#: seed 001's 2-2-1 example (with biases): x = [0, 0], target 0, lr 0.2
SEED001 = {
    "layer_sizes": [2, 2, 1],
    "weights": [(np.array([[0.10, 0.20], [0.30, 0.40]]), np.array([0.1, 0.2])),
                (np.array([[0.50], [0.60]]), np.array([0.3]))],
    "x": [0.0, 0.0],
    "t": [0.0],
    "learning_rate": 0.2,
}
EXAMPLES = {"seed002": SEED002, "seed001": SEED001}


def example_model(name="seed002", backend="numpy"):
    """The worked example ``name`` (seed001 or seed002) as a float64 sigmoid/MSE MLP."""
    from .model import MLP

    ex = EXAMPLES[name]
    use_bias = ex["weights"][0][1] is not None
    return MLP(ex["layer_sizes"], activation="sigmoid", output_activation="sigmoid",
               loss="mse", backend=backend, dtype="float64", use_bias=use_bias,
               init=ex["weights"])


def seed002_model(backend="numpy"):
    """Seed 002's network (sigmoid, no biases, MSE) in float64."""
    from .model import MLP

    return MLP(SEED002["layer_sizes"], activation="sigmoid", output_activation="sigmoid",
               loss="mse", backend=backend, dtype="float64", use_bias=False,
               init=SEED002["weights"])


def _f(v: float) -> str:
    return f"{v:.8f}"


def _pf(v: float) -> str:
    """A factor in a product: negative numbers in parentheses."""
    return _f(v) if v >= 0 else f"({_f(v)})"


def _pg(v: float) -> str:
    """A weight in a product (shortest form): negative numbers in parentheses."""
    return f"{v:g}" if v >= 0 else f"({v:g})"


def _names(sizes):
    """Unit names per layer: x.., then h.. (or h<l>_..), then o.."""
    n_hidden = len(sizes) - 2
    names = [[f"x{i + 1}" for i in range(sizes[0])]]
    for layer in range(1, len(sizes) - 1):
        pre = "h" if n_hidden == 1 else f"h{layer}_"
        names.append([f"{pre}{j + 1}" for j in range(sizes[layer])])
    names.append([f"o{j + 1}" for j in range(sizes[-1])])
    return names


def trace_step(model, x, t, learning_rate=0.5, file=None) -> str:
    """Print (to ``file``, default stdout; ``file=False`` prints nothing) and return the
    walk-through of one SGD step of ``model`` on one sample ``x`` (n_in,) with target ``t``;
    the step is applied to the model."""
    B = model.backend
    X = check_X(np.asarray(x, dtype=float).reshape(1, -1), model.layer_sizes[0], "x")
    T = check_targets(np.asarray(t).reshape(1, -1) if np.ndim(t) else np.asarray([t]),
                      1, model.layer_sizes[-1], model.loss)
    lines: list[str] = []
    out = lines.append
    sizes, acts = model.layer_sizes, model._run_acts
    names = _names(sizes)
    weights = model.get_weights()
    lr = float(learning_rate)

    # ---- forward, on the backend
    xs = [B.asarray(X, dtype=model.dtype)]
    zs, as_ = [], []
    for (W, b), act in zip(model._views, acts):
        z, a = B.linear_forward(xs[-1], W, b, act)
        zs.append(z)
        as_.append(a)
        xs.append(a)
    zh = [B.to_numpy(z)[0] for z in zs]
    ah = [B.to_numpy(a)[0] for a in as_]
    inputs = [X[0]] + ah
    w_index, z_index = [], []  # running numbers W1.., z1.. as in seed 002
    wn = zn = 0
    for W, _ in weights:
        fan_in, fan_out = W.shape
        w_index.append(np.arange(wn, wn + W.size).reshape(fan_out, fan_in).T + 1)
        z_index.append(np.arange(zn, zn + fan_out) + 1)
        wn += W.size
        zn += fan_out

    out(f"Network {'-'.join(map(str, sizes))}, activations {model.activations}, loss "
        f"{model.loss.name}, learning rate {lr:g}, backend {B.name}")
    out("x = [" + ", ".join(_f(v) for v in X[0]) + "], target = ["
        + ", ".join(_f(v) for v in T[0]) + "]")
    out("")
    out("Forward pass")
    for layer, ((W, b), act) in enumerate(zip(weights, model.activations)):
        fan_in, fan_out = W.shape
        for j in range(fan_out):
            zname = f"z{z_index[layer][j]}"
            terms = " + ".join(f"W{w_index[layer][i, j]}*{names[layer][i]}" for i in range(fan_in))
            nums = " + ".join(f"{_pg(W[i, j])}*{_pf(inputs[layer][i])}" for i in range(fan_in))
            if b is not None:
                terms += f" + b{layer + 1}_{j + 1}"
                nums += f" + {_pg(b[j])}"
            out(f"  {zname} = {terms} = {nums} = {_f(zh[layer][j])}")
        for j in range(fan_out):
            zname = f"z{z_index[layer][j]}"
            value = ah[layer][j]
            if layer == len(weights) - 1 and model.loss.fused_activation is not None:
                value = B.to_numpy(B.activation(act, zs[layer]))[0][j]
            out(f"  {names[layer + 1][j]} = {act}({zname}) = {_f(value)}")
    # ---- loss and its gradient, on the backend
    loss, g = model.loss(B, as_[-1], B.asarray(T, dtype=model.dtype))
    E = float(B.to_numpy(loss))
    out("")
    out(f"Error ({model.loss.name}: {model.loss.formula})")
    o = ah[-1]
    if model.loss.name == "mse":
        for j in range(sizes[-1]):
            e = 0.5 * (T[0, j] - o[j]) ** 2
            out(f"  E_o{j + 1} = 1/2 (t{j + 1} - o{j + 1})^2 = 1/2 ({_f(T[0, j])} - {_f(o[j])})^2"
                f" = {_f(e)}")
        out("  E_total = " + " + ".join(f"E_o{j + 1}" for j in range(sizes[-1]))
            + f" = {_f(E)}")
    else:
        out(f"  E = {_f(E)}")

    # ---- backward, on the backend: delta = dE/da * f'(z); dE/dW = input^T delta
    out("")
    out("Backward pass")
    grad_a = g
    grads = [None] * len(weights)
    next_delta = None
    for layer in range(len(weights) - 1, -1, -1):
        W, b = weights[layer]
        act = acts[layer]
        Wd, bd = model._views[layer]
        delta = grad_a if act == "linear" else B.activation_grad(act, zs[layer], as_[layer],
                                                                 grad_a)
        dh = B.to_numpy(delta)[0]
        gah = B.to_numpy(grad_a)[0]
        spec = _act.ACTIVATIONS[act]
        elementwise = not spec.rowwise
        fprime = (B.to_numpy(B.activation_grad(act, zs[layer], as_[layer],
                                               B.asarray(np.ones((1, W.shape[1])),
                                                         dtype=model.dtype)))[0]
                  if elementwise and act != "linear" else np.ones(W.shape[1]))
        out(f" layer {layer + 1} ({'output' if layer == len(weights) - 1 else 'hidden'}, "
            f"{model.activations[layer]})")
        for j in range(W.shape[1]):
            u = names[layer + 1][j]
            zname = f"z{z_index[layer][j]}"
            if layer == len(weights) - 1:
                if model.loss.name == "mse":
                    out(f"  dE/d{u} = -(t{j + 1} - {u}) = -({_f(T[0, j])} - {_f(o[j])}) = "
                        f"{_f(gah[j])}")
                elif model.loss.fused_activation is not None:
                    out(f"  dE/d{zname} = {model.loss.fused_activation}({zname}) - t{j + 1} = "
                        f"{_f(gah[j])}")
                else:
                    out(f"  dE/d{u} = {_f(gah[j])}")
            else:
                nxt = weights[layer + 1][0]
                terms = " + ".join(f"delta_z{z_index[layer + 1][k]}*W{w_index[layer + 1][j, k]}"
                                   for k in range(nxt.shape[1]))
                dn = B.to_numpy(next_delta)[0]
                nums = " + ".join(f"{_pf(dn[k])}*{_pg(nxt[j, k])}" for k in range(nxt.shape[1]))
                out(f"  dE/d{u} = {terms} = {nums} = {_f(gah[j])}")
            if act != "linear" and elementwise:
                formula = re.sub(r"\bz\b", zname, re.sub(r"\ba\b", u, spec.derivative))
                out(f"  d{u}/d{zname} = {formula} = {_f(fprime[j])}")
                out(f"  delta_{zname} = dE/d{u} * d{u}/d{zname} = {_pf(gah[j])} * "
                    f"{_pf(fprime[j])} = {_f(dh[j])}")
            else:
                out(f"  delta_{zname} = {_f(dh[j])}")
        gW = B.matmul(xs[layer], delta, transpose_a=True)
        gWh = B.to_numpy(gW)
        gbh = B.to_numpy(B.sum_rows(delta)) if b is not None else None
        grads[layer] = (gWh, gbh)
        for j in range(W.shape[1]):
            for i in range(W.shape[0]):
                k = w_index[layer][i, j]
                out(f"  dE/dW{k} = delta_z{z_index[layer][j]} * {names[layer][i]} = "
                    f"{_pf(dh[j])} * {_pf(inputs[layer][i])} = {_f(gWh[i, j])}")
            if b is not None:
                out(f"  dE/db{layer + 1}_{j + 1} = delta_z{z_index[layer][j]} = {_f(gbh[j])}")
        if layer > 0:
            grad_a = B.matmul(delta, Wd, transpose_b=True)
            next_delta = delta

    # ---- the update, applied by the model itself
    model.train_step(X, T, optimizer="sgd", learning_rate=lr)
    new = model.get_weights()
    out("")
    out(f"Update (gradient descent, W+ = W - lr * dE/dW, lr = {lr:g})")
    for layer, ((W, b), (Wn, bn)) in enumerate(zip(weights, new)):
        gWh, gbh = grads[layer]
        for j in range(W.shape[1]):
            for i in range(W.shape[0]):
                k = w_index[layer][i, j]
                out(f"  W{k}+ = W{k} - {lr:g} * dE/dW{k} = {W[i, j]:g} - {lr:g} * "
                    f"{_pf(gWh[i, j])} = {_f(Wn[i, j])}")
            if b is not None:
                out(f"  b{layer + 1}_{j + 1}+ = {_f(b[j])} - {lr:g} * {_pf(gbh[j])} = "
                    f"{_f(bn[j])}")
    text = "\n".join(lines)
    if file is not False:
        print(text, file=file if file is not None else sys.stdout)
    return text
