"""The fused output layer (kernels/head.cu) against the ops it replaces, and its grid sweep;
the row gather of an epoch's shuffle against ``xp.take``. Device time per call: each variant
recorded ``--reps`` times into one graph (``backend.capture``), best of 3 replays between CUDA
events (wall time on cuda-emu, for a dry run).

    PYTHONPATH=. python3 tools/head_bench.py --json out.json
    PYTHONPATH=. python3 tools/head_bench.py --backend cuda-emu --batches 16 --reps 1  # dry run
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from step_profile import replay_us as _time  # noqa: E402

import mlpaccel  # noqa: E402
from mlpaccel.backends import cuda_head  # noqa: E402
from mlpaccel.backends.base import Backend  # noqa: E402


def head_row(name: str, m: int, reps: int, K=256, C=10,
             grids=(1, 2, 4, 8, 16, 32, 64, 128, 256)) -> dict:
    """{variant: µs} for the MNIST output layer (K=256 -> C=10, relu below) at batch m."""
    rng = np.random.default_rng(m)
    B = mlpaccel.get_backend(name)
    x = B.asarray(rng.random((m, K), dtype=np.float32))
    W = B.asarray(0.1 * rng.standard_normal((K, C)).astype(np.float32))
    b = B.asarray(np.zeros(C, np.float32))
    t = B.asarray(np.eye(C, dtype=np.float32)[rng.integers(0, C, m)])
    z = B.asarray(rng.standard_normal((m, K)).astype(np.float32))
    gW, gb, gbb = B.zeros((K, C), np.float32), B.zeros((C,), np.float32), \
        B.zeros((K,), np.float32)
    Z, A = B.zeros((m, C), np.float32), B.zeros((m, C), np.float32)
    loss = B.zeros((), np.float32)
    below = ("relu", z, z)
    row = {"default grid": float(cuda_head.default_blocks(m, K, C))}
    # checked first: the fused outputs against the composed ops' (float32 both)
    got = [B.to_numpy(v).copy() for v in B.output_layer_grad(
        x, W, b, t, below=below, out_grad_b_below=gbb)] + [B.to_numpy(gbb).copy()]
    ref = [B.to_numpy(v).copy() for v in Backend.output_layer_grad(
        B, x, W, b, t, below=below, out_grad_b_below=gbb)] + [B.to_numpy(gbb).copy()]
    row["max rel. difference fused vs composed"] = max(
        float(np.abs(u - v).max() / max(np.abs(v).max(), 1e-30)) for u, v in zip(got, ref))

    def fused(BB):
        return lambda: BB.output_layer_grad(x, W, b, t, out_grad_W=gW, out_grad_b=gb,
                                            below=below, out_loss=loss, out_grad_b_below=gbb)
    row["fused (default grid)"] = _time(B, fused(B), reps)
    row["composed ops (+ colsum below)"] = _time(B, lambda: Backend.output_layer_grad(
        B, x, W, b, t, out_grad_W=gW, out_grad_b=gb, below=below, out_z=Z, out_a=A,
        out_loss=loss, out_grad_b_below=gbb), reps)
    chunks = -(-m // cuda_head.ROWS)
    for g in grids:
        if g <= chunks:
            Bg = mlpaccel.get_backend(name, head_blocks=g)
            row[f"fused, grid {g}"] = _time(Bg, fused(Bg), reps)
    return row


def save_choices(name: str, res: dict, K=256, C=10) -> str:
    """Per batch: the fastest fused grid, or 0 when the composed ops were faster, into the
    device's tuning table (read back by ``cuda_head.tuned_blocks``). Returns the file."""
    from mlpaccel.backends import cuda_gemm

    entries = {}
    for m, row in res.items():
        grids = {int(k.rsplit(" ", 1)[1]): v for k, v in row.items()
                 if k.startswith("fused, grid ")}
        g, us = min(grids.items(), key=lambda kv: kv[1]) if grids else (0, float("inf"))
        composed = row["composed ops (+ colsum below)"]
        entries[cuda_head.table_key(np.float32, K, C, m)] = {
            "blocks": g if us < composed else 0, "fused_us": round(us, 2),
            "composed_us": round(composed, 2)}
    B = mlpaccel.get_backend(name)
    path = cuda_gemm.save_table(B.driver, entries)
    print(f"head choices -> {path}: " + ", ".join(f"{k.rsplit(':', 1)[1]} {v['blocks']}"
                                                   for k, v in entries.items()))
    return str(path)


def gather_rows(name: str, reps: int, n=60000, cols=784):
    """µs for an epoch's shuffle of n x cols float32: our take_rows vs xp.take."""
    B = mlpaccel.get_backend(name)
    rng = np.random.default_rng(1)
    X = B.asarray(rng.random((n, cols), dtype=np.float32))
    out = B.zeros((n, cols), np.float32)
    order = rng.permutation(n)
    idx = B.xp.asarray(order)
    res = {"take_rows (ours, device indices)": _time(B, lambda: B.take_rows(X, idx, out=out),
                                                     reps),
           "xp.take": _time(B, lambda: B.xp.take(X, idx, axis=0, out=out), reps)}
    B.take_rows(X, order, out=out)
    ok = bool((B.to_numpy(out)[:100] == B.to_numpy(X)[order[:100]]).all())
    res["GB/s (ours, read + write)"] = 2 * n * cols * 4 / res["take_rows (ours, device indices)"] \
        / 1e3
    res["correct"] = ok
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="cuda")
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 256, 1024, 8192])
    ap.add_argument("--reps", type=int, default=50)
    ap.add_argument("--gather-rows", type=int, default=60000)
    ap.add_argument("--json", default=None)
    ap.add_argument("--save", action="store_true",
                    help="write the fastest choice per batch (grid, or 0 = composed ops) into "
                         "the device's tuning table (mlpaccel/tuning/<device>.json)")
    args = ap.parse_args(argv)
    res = {m: head_row(args.backend, m, args.reps) for m in args.batches}
    names = list(dict.fromkeys(k for r in res.values() for k in r))
    print(f"{'µs per call':38s}" + "".join(f"{'b' + str(b):>10s}" for b in res))
    for k in names:
        print(f"{k:38s}" + "".join(f"{res[b].get(k, float('nan')):10.3g}" for b in res))
    g = gather_rows(args.backend, max(1, args.reps // 10), n=args.gather_rows)
    for k, v in g.items():
        print(f"gather {args.gather_rows} x 784: {k}: {v:.1f}" if not isinstance(v, bool)
              else f"gather: correct = {v}")
    saved = save_choices(args.backend, res) if args.save else None
    if args.json:
        Path(args.json).write_text(json.dumps({"head_us": res, "gather": g, "table": saved},
                                              indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
