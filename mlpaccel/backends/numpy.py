"""numpy: the SIMD rung. Vectorised NumPy; matmul goes to the BLAS NumPy was built with.

Each elementwise op is one pass of compiled, vectorised C over the whole array, and matmul is
BLAS's blocked, SIMD, multi-threaded GEMM. The math is the reference's (``reference.py``).
"""

from __future__ import annotations

import os

import numpy as np

from .. import activations as _act
from . import reference as ref
from .base import Backend
from .host_arrays import HostArrays


def _write(out, value):
    if out is None:
        return value
    out[...] = value
    return out


class NumpyBackend(HostArrays, Backend):
    name = "numpy"
    rung = ("SIMD: one instruction works on 8-16 numbers at once, and BLAS blocks the matmul "
            "for the caches.")

    def info(self) -> dict:
        info = {"backend": self.name, "device": "cpu", "numpy": np.__version__,
                "cpu_count": os.cpu_count()}
        try:
            from threadpoolctl import threadpool_info

            blas = [p for p in threadpool_info() if p.get("user_api") == "blas"]
            if blas:
                info["blas"] = f"{blas[0].get('internal_api')} {blas[0].get('version')}"
                info["blas_threads"] = blas[0].get("num_threads")
                info["blas_arch"] = blas[0].get("architecture")
        except ImportError:
            pass
        return info

    # arrays
    def take_rows(self, x, indices, out=None):
        return np.take(x, np.asarray(indices), axis=0, out=out)

    # matmul
    def matmul(self, a, b, transpose_a=False, transpose_b=False, out=None):
        return np.matmul(a.T if transpose_a else a, b.T if transpose_b else b, out=out)

    # elementwise
    def activation(self, name, z, out=None, **params):
        name = _act.canonical(name)
        p = _act.resolve_params(name, params)
        return _write(out, ref.activation(name, z, **p))

    def activation_grad(self, name, z, a, grad_out, out=None, **params):
        name = _act.canonical(name)
        p = _act.resolve_params(name, params)
        return _write(out, ref.activation_grad(name, z, a, grad_out, **p))

    def bias_add(self, z, b, out=None):
        return np.add(z, b, out=out)

    def sum_rows(self, x, out=None):
        return np.sum(x, axis=0, out=out)

    def axpy(self, alpha, x, y):
        y += y.dtype.type(alpha) * x
        return y

    def scale(self, alpha, x):
        x *= x.dtype.type(alpha)
        return x

    # losses
    def mse(self, output, target):
        loss, grad = ref.mse(output, np.asarray(target, output.dtype))
        return np.asarray(loss, output.dtype), grad

    def binary_cross_entropy(self, output, target):
        loss, grad = ref.binary_cross_entropy(output, np.asarray(target, output.dtype))
        return np.asarray(loss, output.dtype), grad

    def softmax_cross_entropy(self, logits, labels):
        loss, grad = ref.softmax_cross_entropy(logits, np.asarray(labels))
        return np.asarray(loss, logits.dtype), grad

    # optimizer updates (in place; arithmetic as in reference.py)
    def sgd_update(self, p, g, lr, weight_decay=0.0):
        p[...] = ref.sgd(p, g, lr, weight_decay)

    def momentum_update(self, p, g, buf, lr, momentum=0.9, weight_decay=0.0, nesterov=False):
        p[...], buf[...] = ref.momentum(p, g, buf, lr, momentum, weight_decay, nesterov)

    def adagrad_update(self, p, g, sum_sq, lr, eps=1e-10, weight_decay=0.0):
        p[...], sum_sq[...] = ref.adagrad(p, g, sum_sq, lr, eps, weight_decay)

    def adadelta_update(self, p, g, square_avg, acc_delta, lr=1.0, rho=0.9, eps=1e-6,
                        weight_decay=0.0):
        p[...], square_avg[...], acc_delta[...] = ref.adadelta(
            p, g, square_avg, acc_delta, lr, rho, eps, weight_decay)

    def rmsprop_update(self, p, g, square_avg, lr=0.01, rho=0.99, eps=1e-8, weight_decay=0.0):
        p[...], square_avg[...] = ref.rmsprop(p, g, square_avg, lr, rho, eps, weight_decay)

    def adam_update(self, p, g, m, v, step, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
                    weight_decay=0.0, decoupled=False):
        p[...], m[...], v[...] = ref.adam(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay,
                                          decoupled)
