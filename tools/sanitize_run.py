"""Run every CUDA kernel of the cuda backend once, small: the workload of compute-sanitizer.

    PYTHONPATH=. compute-sanitizer --tool memcheck python3 tools/sanitize_run.py
    PYTHONPATH=. python3 tools/sanitize_run.py --backend cuda-emu      # the same on the CPU

The CASES table below is also what ``tools/gpu_check.py`` uses to compare cuda against cuda-emu
and the float64 reference on the same inputs, and what tests/test_cuda_backend.py runs. Each
case takes a backend and a dict of NumPy inputs and returns a dict of NumPy outputs, so the
very same function runs on any backend (the numpy backend on float64 inputs is the oracle).
Shapes are primes and non-multiples of every tile size so that edge tiles are exercised.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

import numpy as np

ACTIVATIONS = ("step", "linear", "sigmoid", "tanh", "relu", "leaky_relu", "elu", "softplus",
               "gelu", "softmax")
OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "adadelta", "rmsprop", "adam", "adamw")
FORMS = ((False, False), (True, False), (False, True), (True, True))


def make_inputs(rng: np.random.Generator, scale: int = 1) -> dict:
    """Host inputs shared by every case (float64; cases cast to the dtype under test).
    ``scale`` > 1 makes the arrays larger (multi-block grids, the two-pass column sum)."""
    m, k, n = 37 * scale, 29, 45
    c = 10
    return {
        "a": rng.standard_normal((m, k)), "b": rng.standard_normal((k, n)),
        "at": rng.standard_normal((k, m)), "bt": rng.standard_normal((n, k)),
        "bias": rng.standard_normal(n),
        "z": rng.standard_normal((m, n)) * 3, "g": rng.standard_normal((m, n)),
        "prob": rng.uniform(0.02, 0.98, (m, n)), "target": rng.uniform(0, 1, (m, n)),
        "logits": rng.standard_normal((m, c)) * 4, "ids": rng.integers(0, c, m),
        "p": rng.standard_normal(1000 * scale + 3), "pg": rng.standard_normal(1000 * scale + 3),
        "state": rng.uniform(0.1, 1.0, 1000 * scale + 3),
    }


Case = Callable[[object, dict, np.dtype], dict]


def _dev(B, inp, dt, *names):
    return [B.asarray(inp[n], dt) for n in names]


def _matmul(ta, tb) -> Case:
    def case(B, inp, dt):
        a, b = _dev(B, inp, dt, "at" if ta else "a", "bt" if tb else "b")
        return {"c": B.to_numpy(B.matmul(a, b, transpose_a=ta, transpose_b=tb))}
    return case


def _activation(name) -> Case:
    def case(B, inp, dt):
        z, g = _dev(B, inp, dt, "z", "g")
        a = B.activation(name, z)
        d = B.activation_grad(name, z, a, g)
        return {"a": B.to_numpy(a), "grad": B.to_numpy(d)}
    return case


def _linear(name) -> Case:
    def case(B, inp, dt):
        x, W, b, g = _dev(B, inp, dt, "a", "b", "bias", "g")
        z, a = B.linear_forward(x, W, b, name)
        gx, gW, gb = B.linear_backward(x, W, z, a, g, name)
        return {k: B.to_numpy(v) for k, v in
                dict(z=z, a=a, gx=gx, gW=gW, gb=gb).items()}
    return case


def _elementwise(B, inp, dt):
    z, b, g = _dev(B, inp, dt, "z", "bias", "g")
    zb = B.bias_add(z, b)
    s = B.sum_rows(g)
    y = B.copy(z)
    B.axpy(0.5, g, y)
    B.scale(-2.0, y)
    return {"bias_add": B.to_numpy(zb), "sum_rows": B.to_numpy(s), "axpy_scale": B.to_numpy(y)}


def _losses(B, inp, dt):
    o, t, p, z = _dev(B, inp, dt, "prob", "target", "prob", "logits")
    out = {}
    for name, (loss, grad) in {
        "mse": B.mse(o, t), "bce": B.binary_cross_entropy(p, t),
        "xent_ids": B.softmax_cross_entropy(z, inp["ids"]),
        "xent_prob": B.softmax_cross_entropy(
            z, np.eye(z.shape[1])[inp["ids"]].astype(dt)),
    }.items():
        out[name] = B.to_numpy(loss)
        out[name + "_grad"] = B.to_numpy(grad)
    return out


def _output_layer(B, inp, dt):
    """The fused output layer (kernels/head.cu on cuda): x (m, 29) -> 10 classes, relu below,
    the layer below's bias gradient too; and the row gather of a shuffle."""
    x, zb = _dev(B, inp, dt, "a", "a")
    W = B.asarray(inp["b"][:, :10], dt)
    bias = B.asarray(inp["bias"][:10], dt)
    t = B.asarray(np.eye(10)[inp["ids"]], dt)
    gbb = B.zeros((x.shape[1],), dt)
    E, gx, gW, gb = B.output_layer_grad(x, W, bias, t, below=("relu", zb, zb),
                                        out_grad_b_below=gbb)
    perm = np.random.default_rng(0).permutation(x.shape[0])
    rows = B.take_rows(x, perm)
    return {"loss": B.to_numpy(E), "gx": B.to_numpy(gx), "gW": B.to_numpy(gW),
            "gb": B.to_numpy(gb), "gb_below": B.to_numpy(gbb), "take_rows": B.to_numpy(rows)}


def _optimizer(name) -> Case:
    def case(B, inp, dt):
        p, g, s1, s2 = _dev(B, inp, dt, "p", "pg", "state", "state")
        z1, z2 = B.zeros(p.shape, dt), B.zeros(p.shape, dt)
        for step in (1, 2):  # two steps: the state written by the first is read by the second
            if name == "sgd":
                B.sgd_update(p, g, 0.1, weight_decay=0.01)
            elif name in ("momentum", "nesterov"):
                B.momentum_update(p, g, z1, 0.1, 0.9, 0.01, nesterov=name == "nesterov")
            elif name == "adagrad":
                B.adagrad_update(p, g, s1, 0.1, weight_decay=0.01)
            elif name == "adadelta":
                B.adadelta_update(p, g, s1, s2, 1.0, weight_decay=0.01)
            elif name == "rmsprop":
                B.rmsprop_update(p, g, s1, 0.01, weight_decay=0.01)
            else:
                B.adam_update(p, g, z1, z2, step, 1e-2, weight_decay=0.01,
                              decoupled=name == "adamw")
        return {"p": B.to_numpy(p)}
    return case


CASES: dict[str, Case] = {
    **{f"matmul_{'t' if ta else 'n'}{'t' if tb else 'n'}": _matmul(ta, tb) for ta, tb in FORMS},
    **{f"act_{n}": _activation(n) for n in ACTIVATIONS},
    **{f"linear_{n}": _linear(n) for n in ("linear", "relu", "sigmoid", "tanh", "leaky_relu",
                                           "gelu", "elu", "softplus")},
    "elementwise": _elementwise,
    "losses": _losses,
    "output_layer": _output_layer,
    **{f"optim_{n}": _optimizer(n) for n in OPTIMIZERS},
}


def run_case(B, name: str, inp: dict, dtype) -> dict:
    """Run CASES[name] on backend B with inputs cast to ``dtype``; NumPy outputs."""
    out = CASES[name](B, inp, np.dtype(dtype))
    B.synchronize()
    return out


def max_rel_err(got: np.ndarray, ref: np.ndarray) -> float:
    """max |got - ref| / max(|ref|, 1): a relative error that stays finite near zero."""
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    if got.shape != ref.shape:
        return float("inf")
    if got.size == 0:
        return 0.0
    return float(np.max(np.abs(got - ref) / np.maximum(np.abs(ref), 1.0)))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="cuda", help="backend to run (default cuda)")
    ap.add_argument("--scale", type=int, default=30,
                    help="size multiplier (default 30: multi-block grids everywhere)")
    ap.add_argument("--no-pool", action="store_true",
                    help="bypass CuPy's memory pool so memcheck sees every array's exact bounds")
    args = ap.parse_args(argv)
    import mlpaccel
    from mlpaccel.backends import cuda_gemm

    if args.no_pool:
        import cupy

        cupy.cuda.set_allocator(None)
    B = mlpaccel.get_backend(args.backend)
    inp = make_inputs(np.random.default_rng(0), args.scale)
    n = 0
    for dt in (np.float32, np.float64):
        for name in CASES:
            run_case(B, name, inp, dt)
            n += 1
    # every GEMM tile configuration, every transpose form, with and without a K split
    for cfg in cuda_gemm.configs():
        dt = np.float64 if cfg.precision == "fp64" else np.float32
        x, y = B.asarray(inp["a"], dt), B.asarray(inp["b"], dt)
        for ta, tb in FORMS:
            xx = B.asarray(inp["at"], dt) if ta else x
            yy = B.asarray(inp["bt"], dt) if tb else y
            for split in (1, 3):
                cuda_gemm.matmul(B.driver, xx, yy, ta, tb, precision=cfg.precision,
                                 config=cfg, split_k=split)
                n += 1
    B.synchronize()
    print(f"sanitize_run: {n} kernel cases ran on {args.backend}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
