"""Fused small-MLP SGD step (kernels/fused_mlp.cu, 2 launches) vs the MLP's regular step
(``MLP._make_grad_fn`` + ``sgd_update``, ~13 launches), device µs per step.

Networks: width w in --widths, 3 hidden layers, input = w, 10 classes ([w, w, w, w, 10]).
Each variant's ``--reps`` steps are recorded into one graph (``backend.capture``) and replayed
between CUDA events (best of 5 replays), so the numbers are device time per step with no Python
launch cost. Before timing, one fused step is checked against the regular step (same weights,
same batch: loss and updated weights must agree to 1e-4 relative).

    PYTHONPATH=. python3 tools/fused_mlp_bench.py --json $OUT/fused_mlp_bench.json
    PYTHONPATH=. python3 tools/fused_mlp_bench.py --backend cuda-emu --widths 16 --batches 8 \
        --reps 1                                                      # smoke test, no GPU
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mlpaccel  # noqa: E402
from mlpaccel.backends.cuda_fused_mlp import FusedMLPStep  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from step_profile import _timer  # noqa: E402  (CUDA events, else wall time)


def _time(B, body, tries: int) -> float:
    """Seconds of one replay of ``body`` (recorded on its second call), best of ``tries``."""
    rec = B.capture(body)
    rec()
    rec()
    B.synchronize()
    start, stop = _timer(B)
    best = float("inf")
    for _ in range(tries):
        t0 = start()
        rec()
        best = min(best, stop(t0))
    return best


def bench_one(B, width: int, batch: int, reps: int, lr: float = 0.01, tries: int = 5,
              rows_per_block: int | None = None) -> dict:
    sizes = [width, width, width, width, 10]
    rng = np.random.default_rng(0)
    m = mlpaccel.MLP(sizes, loss="cross_entropy", backend=B, random_state=0)
    x = B.asarray(rng.standard_normal((batch, width)).astype(np.float32), np.float32)
    t = B.asarray(np.eye(10, dtype=np.float32)[rng.integers(0, 10, batch)], np.float32)
    fused = FusedMLPStep.for_model(m, batch, rows_per_block=rows_per_block)
    p0 = B.to_numpy(m._params).copy()
    fparams = B.asarray(p0, np.float32)  # the fused step trains its own copy
    _, _, loss_buf, grad_fn = m._make_grad_fn(batch)

    def regular():
        grad_fn(x, t)
        B.sgd_update(m._params, m._grads, lr)

    # correctness first: one step each from the same weights
    loss_f = float(B.to_numpy(fused.step(fparams, x, t, lr)))
    regular()
    loss_r = float(B.to_numpy(loss_buf))
    pf, pr = B.to_numpy(fparams), B.to_numpy(m._params)
    err_p = float(np.abs(pf - pr).max() / max(np.abs(pr).max(), 1e-30))
    err_l = abs(loss_f - loss_r) / max(abs(loss_r), 1e-30)
    ok = err_p <= 1e-4 and err_l <= 1e-4

    def fused_body():
        for _ in range(reps):
            fused.step(fparams, x, t, lr)

    def regular_body():
        for _ in range(reps):
            regular()

    us_f = _time(B, fused_body, tries) / reps * 1e6
    us_r = _time(B, regular_body, tries) / reps * 1e6
    return {"width": width, "batch": batch, "layer_sizes": sizes, "fused_us": us_f,
            "regular_us": us_r, "speedup": us_r / us_f, "check_ok": ok,
            "loss_rel_err": err_l, "param_rel_err": err_p, "fused": fused.info()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="cuda")
    ap.add_argument("--widths", type=int, nargs="+", default=[16, 32, 64, 128])
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 256, 1024, 8192])
    ap.add_argument("--reps", type=int, default=20, help="steps per recorded graph")
    ap.add_argument("--tries", type=int, default=5, help="replays timed (best is kept)")
    ap.add_argument("--rows-per-block", type=int, default=None, choices=(8, 16, 32),
                    help="force the fused kernel's tile (default: chosen per batch)")
    ap.add_argument("--json", default=None, help="write the results to this file")
    args = ap.parse_args(argv)
    B = mlpaccel.get_backend(args.backend)
    rows = []
    print(f"{'width':>5s} {'batch':>6s} {'tile':>4s} {'blocks':>6s} {'fused µs':>9s} "
          f"{'regular µs':>10s} {'speedup':>7s}  check")
    for w in args.widths:
        for b in args.batches:
            r = bench_one(B, w, b, args.reps, tries=args.tries,
                          rows_per_block=args.rows_per_block)
            rows.append(r)
            f = r["fused"]
            print(f"{w:5d} {b:6d} {f['rows_per_block']:4d} {f['blocks']:6d} "
                  f"{r['fused_us']:9.1f} {r['regular_us']:10.1f} {r['speedup']:7.2f}  "
                  f"{'ok' if r['check_ok'] else 'MISMATCH'} (loss {r['loss_rel_err']:.1e}, "
                  f"params {r['param_rel_err']:.1e})", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"backend": B.name, "info": B.info(),
                                               "reps": args.reps, "results": rows},
                                              indent=1, default=str))
    return 0 if all(r["check_ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
