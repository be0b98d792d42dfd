"""The oracle: NumPy definitions of every Backend operation, written for clarity.

The tests run these in float64 and compare every backend against them. The functions are
dtype-generic (they keep their input's dtype), so the numpy backend reuses them directly.
Numeric traps are handled here once: exp never sees a large positive argument.
"""

from __future__ import annotations

import math

import numpy as np

SQRT_HALF = 1.0 / math.sqrt(2.0)
INV_SQRT_2PI = 1.0 / math.sqrt(2.0 * math.pi)


def bce_eps(dtype) -> float:
    """Clipping used by binary cross-entropy: 1e-7 in float32, 1e-12 in float64."""
    return 1e-7 if np.dtype(dtype) == np.float32 else 1e-12


# ---------------------------------------------------------------- matmul
def matmul(a, b, transpose_a=False, transpose_b=False):
    """op(A) @ op(B)."""
    return (a.T if transpose_a else a) @ (b.T if transpose_b else b)


# ---------------------------------------------------------------- activations
def _erf(x):
    try:  # scipy's erf is vectorised; fall back to math.erf per element
        from scipy.special import erf

        return erf(x).astype(x.dtype, copy=False)
    except ImportError:  # pragma: no cover - scipy is optional
        return np.vectorize(math.erf, otypes=[x.dtype])(x)


def sigmoid(z):
    """1 / (1 + e^-z), computed from e^-|z| so exp never overflows."""
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(z.dtype, copy=False)


def softmax(z):
    """Row-wise e^(z - max) / sum e^(z - max)."""
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def activation(name, z, alpha=None):
    """f(z) for every name in mlpaccel.activations."""
    dt = z.dtype
    if name == "step":
        return (z > 0).astype(dt)
    if name == "linear":
        return z.copy()
    if name == "sigmoid":
        return sigmoid(z)
    if name == "tanh":
        return np.tanh(z)
    if name == "relu":
        return np.maximum(z, 0).astype(dt, copy=False)
    if name == "leaky_relu":
        alpha = 0.01 if alpha is None else alpha
        return np.where(z > 0, z, dt.type(alpha) * z).astype(dt, copy=False)
    if name == "elu":
        alpha = 1.0 if alpha is None else alpha
        return np.where(z > 0, z, dt.type(alpha) * np.expm1(np.minimum(z, 0))).astype(dt)
    if name == "softplus":  # max(z, 0) + log1p(e^-|z|)
        return (np.maximum(z, 0) + np.log1p(np.exp(-np.abs(z)))).astype(dt, copy=False)
    if name == "gelu":  # exact (erf) form, PyTorch's default
        return (0.5 * z * (1.0 + _erf(z * dt.type(SQRT_HALF)))).astype(dt, copy=False)
    if name == "softmax":
        return softmax(z)
    raise ValueError(f"unknown activation {name!r}")


def activation_grad(name, z, a, g, alpha=None):
    """g * f'(z) (softmax: the Jacobian-vector product)."""
    dt = g.dtype
    if name == "step":
        return np.zeros_like(g)
    if name == "linear":
        return g.copy()
    if name == "sigmoid":
        return g * a * (1 - a)
    if name == "tanh":
        return g * (1 - a * a)
    if name == "relu":
        return np.where(z > 0, g, 0).astype(dt, copy=False)
    if name == "leaky_relu":
        alpha = 0.01 if alpha is None else alpha
        return np.where(z > 0, g, dt.type(alpha) * g).astype(dt, copy=False)
    if name == "elu":
        alpha = 1.0 if alpha is None else alpha
        return np.where(z > 0, g, g * (a + dt.type(alpha))).astype(dt, copy=False)
    if name == "softplus":
        return g * sigmoid(z)
    if name == "gelu":
        cdf = 0.5 * (1.0 + _erf(z * dt.type(SQRT_HALF)))
        pdf = dt.type(INV_SQRT_2PI) * np.exp(-0.5 * z * z)
        return (g * (cdf + z * pdf)).astype(dt, copy=False)
    if name == "softmax":
        return a * (g - (g * a).sum(axis=-1, keepdims=True))
    raise ValueError(f"unknown activation {name!r}")


# ---------------------------------------------------------------- helpers
def bias_add(z, b):
    return z + b


def sum_rows(x):
    return x.sum(axis=0)


# ---------------------------------------------------------------- losses
def mse(o, t):
    """(mean_i 1/2 sum_j (o - t)^2, (o - t) / M)."""
    m = o.shape[0]
    d = o - t
    return 0.5 * (d * d).sum() / m, d / o.dtype.type(m)


def binary_cross_entropy(o, t):
    """(-mean(t log o + (1 - t) log(1 - o)), d/do) with o clipped to [eps, 1 - eps]."""
    eps = bce_eps(o.dtype)
    oc = np.clip(o, eps, 1 - eps)
    loss = -(t * np.log(oc) + (1 - t) * np.log1p(-oc)).mean()
    grad = (oc - t) / (oc * (1 - oc)) / o.dtype.type(o.size)
    return loss, grad.astype(o.dtype, copy=False)


def one_hot(labels, n_classes, dtype):
    labels = np.asarray(labels)
    out = np.zeros((labels.shape[0], n_classes), dtype=dtype)
    out[np.arange(labels.shape[0]), labels.astype(np.int64)] = 1
    return out


def softmax_cross_entropy(z, labels):
    """(mean_i logsumexp(z_i) - y_i . z_i, (softmax(z) - y) / M); labels ids (M,) or (M, C)."""
    m, c = z.shape
    y = one_hot(labels, c, z.dtype) if np.ndim(labels) == 1 else np.asarray(labels, z.dtype)
    zmax = z.max(axis=1, keepdims=True)
    lse = zmax[:, 0] + np.log(np.exp(z - zmax).sum(axis=1))
    loss = (lse - (y * z).sum(axis=1)).sum() / m
    return loss, (softmax(z) - y) / z.dtype.type(m)


# ---------------------------------------------------------------- optimizer updates (new arrays)
def sgd(p, g, lr, weight_decay=0.0):
    return p - lr * (g + weight_decay * p)


def momentum(p, g, buf, lr, momentum=0.9, weight_decay=0.0, nesterov=False):
    g = g + weight_decay * p
    buf = momentum * buf + g
    step = g + momentum * buf if nesterov else buf
    return p - lr * step, buf


def adagrad(p, g, sum_sq, lr, eps=1e-10, weight_decay=0.0):
    g = g + weight_decay * p
    sum_sq = sum_sq + g * g
    return p - lr * g / (np.sqrt(sum_sq) + eps), sum_sq


def adadelta(p, g, square_avg, acc_delta, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0):
    g = g + weight_decay * p
    square_avg = rho * square_avg + (1 - rho) * g * g
    delta = np.sqrt(acc_delta + eps) / np.sqrt(square_avg + eps) * g
    acc_delta = rho * acc_delta + (1 - rho) * delta * delta
    return p - lr * delta, square_avg, acc_delta


def rmsprop(p, g, square_avg, lr=0.01, rho=0.99, eps=1e-8, weight_decay=0.0):
    g = g + weight_decay * p
    square_avg = rho * square_avg + (1 - rho) * g * g
    return p - lr * g / (np.sqrt(square_avg) + eps), square_avg


def adam(p, g, m, v, step, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.0,
         decoupled=False):
    if decoupled:
        p = p * (1 - lr * weight_decay)
    else:
        g = g + weight_decay * p
    m = beta1 * m + (1 - beta1) * g
    v = beta2 * v + (1 - beta2) * g * g
    mhat = m / (1 - beta1**step)
    vhat = v / (1 - beta2**step)
    return p - lr * mhat / (np.sqrt(vhat) + eps), m, v
