"""Where an MLP.fit epoch's time goes beyond its steps: the recorded epoch alone (the short
last batch is part of it), the host shuffle, the device gather, and fit's own bookkeeping.

    PYTHONPATH=. python3 tools/epoch_breakdown.py --backend cuda --batches 64 1024 8192
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mlpaccel  # noqa: E402


def _median(fn, sync, n=5) -> float:
    out = []
    for _ in range(n):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def breakdown(backend: str, batch: int, samples: int = 60000) -> dict:
    """Milliseconds of each part of one epoch at ``batch``."""
    rng = np.random.default_rng(0)
    x = rng.random((samples, 784), dtype=np.float32)
    y = rng.integers(0, 10, samples)
    m = mlpaccel.MLP([784, 256, 256, 10], loss="cross_entropy", backend=backend,
                     random_state=0)
    B = m.backend
    Xd, Td = m.device_data(x, y)
    kw = dict(batch_size=batch, optimizer="sgd", learning_rate=0.01, verbose=0, metrics=())
    m.fit(Xd, Td, epochs=2, **kw)  # compile, record
    res = {"fit(epochs=1)": _median(lambda: m.fit(Xd, Td, epochs=1, **kw), B.synchronize),
           "fit(epochs=5) / 5": _median(lambda: m.fit(Xd, Td, epochs=5, **kw),
                                        B.synchronize, 3) / 5}
    run = next(v[1] for k, v in m._steps.items() if isinstance(k, tuple) and k[0] == "epoch")
    res["recorded epoch alone (short last batch included)"] = _median(run, B.synchronize)
    order = np.random.default_rng(1).permutation(samples)
    res["host permutation"] = _median(lambda: np.random.default_rng(1).permutation(samples),
                                      lambda: None)
    Xs = B.empty((samples, 784), np.float32)
    res["take_rows X"] = _median(lambda: B.take_rows(Xd, order, out=Xs), B.synchronize)
    return {k: v * 1e3 for k, v in res.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="cuda")
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 1024, 8192])
    ap.add_argument("--samples", type=int, default=60000)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    res = {b: breakdown(args.backend, b, args.samples) for b in args.batches}
    for b, r in res.items():
        print(f"batch {b}: " + "; ".join(f"{k} {v:.2f} ms" for k, v in r.items()), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
