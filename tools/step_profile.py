"""Where one training step's GPU time goes: every backend op of the 784-256-256-10 SGD step,
each recorded ``--reps`` times into one graph (``backend.capture``) and replayed between CUDA
events, so the numbers are device time per op (graph-node gaps included, no Python launch
cost). The whole step is timed the same way; the parts should add up to it. Where the backend
runs weight gradients on a second stream (``concurrent_backward``), the backward ops and the
whole step are timed once more on one stream (rows "..., one stream").

    PYTHONPATH=. python3 tools/step_profile.py --batches 64 1024 8192 --json out.json
    PYTHONPATH=. python3 tools/step_profile.py --backend cuda-emu --batches 8 --reps 2  # dry run
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mlpaccel  # noqa: E402
from mlpaccel.backends.base import Backend  # noqa: E402


def _timer(B):
    """(start, stop -> seconds) on CUDA events where the backend has CuPy, else wall time."""
    cupy = getattr(getattr(B, "driver", None), "cupy", None)
    if cupy is not None:
        def start():
            e = cupy.cuda.Event()
            e.record()
            return e

        def stop(e0):
            e1 = cupy.cuda.Event()
            e1.record()
            e1.synchronize()
            return cupy.cuda.get_elapsed_time(e0, e1) / 1e3
        return start, stop
    return time.perf_counter, lambda t0: time.perf_counter() - t0


def profile(B, batch: int, reps: int, layers=(784, 256, 256, 10)) -> dict:
    """{op: microseconds per call} for one step at ``batch``."""
    rng = np.random.default_rng(0)
    m = mlpaccel.MLP(list(layers), loss="cross_entropy", backend=B, random_state=0)
    x = B.asarray(rng.random((batch, layers[0]), dtype=np.float32))
    t = B.asarray(np.eye(layers[-1], dtype=np.float32)[rng.integers(0, layers[-1], batch)])
    (W1, b1), (W2, b2), (W3, b3) = m._views
    (gW1, gb1), (gW2, gb2), (gW3, gb3) = m._gviews
    z = [B.zeros((batch, n), np.float32) for n in layers[1:]]
    a = [B.zeros((batch, n), np.float32) for n in layers[1:]]
    g3 = B.zeros((batch, layers[-1]), np.float32)
    loss_buf = B.zeros((), np.float32)
    # one forward/backward so every buffer holds real values
    B.linear_forward(x, W1, b1, "relu", out_z=z[0], out_a=a[0])
    B.linear_forward(a[0], W2, b2, "relu", out_z=z[1], out_a=a[1])
    B.linear_forward(a[1], W3, b3, "linear", out_z=z[2], out_a=a[2])
    _, g = B.softmax_cross_entropy(a[2], t)
    B.assign(g3, g)
    g2 = B.matmul(g3, W3, transpose_b=True)
    g1 = B.matmul(g2, W2, transpose_b=True)
    d = B.zeros((batch, 256), np.float32)
    ops = {
        "fwd1 x·W1+b, relu": lambda: B.linear_forward(x, W1, b1, "relu", out_z=z[0], out_a=a[0]),
        "fwd2 a1·W2+b, relu": lambda: B.linear_forward(a[0], W2, b2, "relu", out_z=z[1],
                                                       out_a=a[1]),
        # the output layer as the trainer runs it: forward, softmax-CE and backward in one
        # call (one kernel where the backend fuses it); below, the composed ops it replaces
        "out layer: fwd3+softmax-CE+bwd3": lambda: B.output_layer_grad(
            a[1], W3, b3, t, "softmax_cross_entropy", out_grad_W=gW3, out_grad_b=gb3,
            below=("relu", z[1], a[1]), out_loss=loss_buf),
        "  the same, composed ops": lambda: Backend.output_layer_grad(
            B, a[1], W3, b3, t, "softmax_cross_entropy", out_grad_W=gW3, out_grad_b=gb3,
            below=("relu", z[1], a[1]), out_z=z[2], out_a=a[2], out_loss=loss_buf),
        "  fwd3 a2·W3+b": lambda: B.linear_forward(a[1], W3, b3, "linear", out_z=z[2],
                                                   out_a=a[2]),
        "  softmax-CE loss+grad": lambda: B.assign(loss_buf,
                                                   B.softmax_cross_entropy(a[2], t)[0]),
        # as the trainer calls them: each dX comes back as the delta of the layer below
        # (relu' in the dX GEMM's epilogue), so layers 2 and 1 take it as "linear"
        "  bwd3 (linear_backward)": lambda: B.linear_backward(
            a[1], W3, z[2], a[2], g3, "linear", out_grad_W=gW3, out_grad_b=gb3,
            below=("relu", z[1], a[1])),
        "bwd2 (linear_backward)": lambda: B.linear_backward(
            a[0], W2, z[1], a[1], g2, "linear", out_grad_W=gW2, out_grad_b=gb2,
            below=("relu", z[0], a[0])),
        "bwd1 (linear_backward, no dX)": lambda: B.linear_backward(
            x, W1, z[0], a[0], g1, "linear", need_grad_x=False, out_grad_W=gW1,
            out_grad_b=gb1),
        "  relu_grad (b×256, now fused away)": lambda: B.activation_grad("relu", z[0], a[0], g1,
                                                                         out=d),
        "  dW1 = xᵀ·δ (784×256, K=b)": lambda: B.matmul(x, d, transpose_a=True, out=gW1),
        "  db1 = colsum δ": lambda: B.sum_rows(d, out=gb1),
        "  dX2 = δ·W2ᵀ (b×256)": lambda: B.matmul(d, W2, transpose_b=True),
        "sgd update (all params)": lambda: B.sgd_update(m._params, m._grads, 0.01),
        "loss axpy": lambda: B.axpy(0.5, loss_buf, loss_buf),
    }
    _, _, _, grad_fn = m._make_grad_fn(batch)

    def step():
        grad_fn(x, t)
        B.sgd_update(m._params, m._grads, 0.01)
    ops["whole step (grad_fn + update)"] = step
    res = {name: replay_us(B, fn, reps) for name, fn in ops.items()}
    if getattr(B, "concurrent_backward", False):  # A/B: the weight gradients on one stream
        B.concurrent_backward = False
        try:
            res["  bwd2, one stream"] = replay_us(B, ops["bwd2 (linear_backward)"], reps)
            res["  bwd1, one stream"] = replay_us(B, ops["bwd1 (linear_backward, no dX)"], reps)
            res["  whole step, one stream"] = replay_us(B, step, reps)
        finally:
            B.concurrent_backward = True
    return res


def replay_us(B, fn, reps: int) -> float:
    """Microseconds per call of ``fn``: ``reps`` calls recorded into one graph
    (``B.capture``), best of 3 replays between CUDA events (wall time without CuPy)."""
    start, stop = _timer(B)

    def body():
        for _ in range(reps):
            fn()
    rec = B.capture(body)
    rec()
    rec()  # call 2 records where the backend records
    B.synchronize()
    best = float("inf")
    for _ in range(3):
        t0 = start()
        rec()
        best = min(best, stop(t0))
    return best / reps * 1e6


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="cuda")
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 1024, 8192])
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    B = mlpaccel.get_backend(args.backend)
    res = {b: profile(B, b, args.reps) for b in args.batches}
    names = list(next(iter(res.values())))
    print(f"{'µs per call (' + B.name + ')':34s}" + "".join(f"{'b' + str(b):>10s}" for b in res))
    for n in names:
        print(f"{n:34s}" + "".join(f"{res[b][n]:10.1f}" for b in res))
    whole = "whole step (grad_fn + update)"
    for b, r in res.items():
        parts = sum(v for k, v in r.items() if not k.startswith(" ") and k != whole)
        steps = -(-60000 // b)
        print(f"b{b}: parts {parts:.1f} µs vs whole step {r[whole]:.1f} µs; x {steps} steps = "
              f"{r[whole] * steps / 1e3:.1f} ms/epoch")
    if args.json:
        Path(args.json).write_text(json.dumps({"backend": B.name, "info": B.info(),
                                               "reps": args.reps, "us_per_call": res},
                                              indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
