"""Where an MLP.fit epoch's time goes beyond its steps: the recorded epoch alone (the short
last batch is part of it), the host shuffle, the device gather, and fit's own bookkeeping.

Then fit's per-epoch loop once more, phase by phase (each phase followed by a synchronize, so
a phase's time is its host time plus the device time it waits for), and the host functions
that take the most time in fit(epochs=5) (cProfile, own time). Where the backend runs weight
gradients on a second stream, the recorded epoch is also timed on one stream.

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
    if getattr(B, "concurrent_backward", False):
        one = mlpaccel.MLP([784, 256, 256, 10], loss="cross_entropy", random_state=0,
                           backend=mlpaccel.get_backend(B.name, concurrent_backward=False))
        X1, T1 = one.device_data(x, y)
        one.fit(X1, T1, epochs=2, **kw)
        run1 = next(v[1] for k, v in one._steps.items() if isinstance(k, tuple) and
                    k[0] == "epoch")
        res["recorded epoch alone, one stream"] = _median(run1, B.synchronize)
        del one, X1, T1
    res.update(_phases(m, Xd, Td, batch))
    return {k: v * 1e3 for k, v in res.items()}


def _phases(m, Xd, Td, batch: int, repeats: int = 5) -> dict:
    """Seconds (medians) of each step of fit's per-epoch loop, synchronised after each."""
    B = m.backend
    N = Xd.shape[0]
    Xs_flat, Ts_flat, acc = m._staging(N)
    Xs, Ts = B.view(Xs_flat, 0, (N, 784)), B.view(Ts_flat, 0, (N, 10))
    opt = m.optimizer
    snapshot = B.copy(m._params)
    st = {}
    phases = {
        "snapshot copy": lambda: B.assign(snapshot, m._params),
        "zero the loss": lambda: B.assign(acc, np.zeros((), m.dtype)),
        "draw the order": lambda: st.__setitem__("order", m._shuffle_rng.permutation(N)),
        "row_indices (check + upload)": lambda: st.__setitem__("idx",
                                                               B.row_indices(st["order"], N)),
        "take_rows X": lambda: B.take_rows(Xd, st["idx"], out=Xs),
        "take_rows T": lambda: B.take_rows(Td, st["idx"], out=Ts),
        "_epoch_fn lookup + run": lambda: m._epoch_fn(N, batch, acc, opt, (Xs_flat, Ts_flat))(),
        "read the loss": lambda: float(B.to_numpy(acc)),
    }
    times = {k: [] for k in phases}
    for _ in range(repeats):
        for k, fn in phases.items():
            B.synchronize()
            t0 = time.perf_counter()
            fn()
            B.synchronize()
            times[k].append(time.perf_counter() - t0)
    out = {f"phase: {k}": statistics.median(v) for k, v in times.items()}
    out["phases summed"] = sum(out.values())
    return out


def _host_profile(m, Xd, Td, batch: int, top: int = 12) -> list[str]:
    """The functions with the most own time in fit(epochs=5) (cProfile), as text lines."""
    import cProfile
    import io
    import pstats

    kw = dict(batch_size=batch, optimizer="sgd", learning_rate=0.01, verbose=0, metrics=())
    prof = cProfile.Profile()
    prof.enable()
    m.fit(Xd, Td, epochs=5, **kw)
    m.backend.synchronize()
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(top)
    return [ln for ln in buf.getvalue().splitlines() if ln.strip()]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="cuda")
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 1024, 8192])
    ap.add_argument("--samples", type=int, default=60000)
    ap.add_argument("--json", default=None)
    ap.add_argument("--no-profile", dest="profile", action="store_false",
                    help="skip the cProfile of fit at the largest batch")
    args = ap.parse_args(argv)
    res = {b: breakdown(args.backend, b, args.samples) for b in args.batches}
    for b, r in res.items():
        print(f"batch {b}: " + "; ".join(f"{k} {v:.2f} ms" for k, v in r.items()), flush=True)
    prof = {}
    if args.profile:
        b = args.batches[-1]
        m = mlpaccel.MLP([784, 256, 256, 10], loss="cross_entropy", backend=args.backend,
                         random_state=0)
        rng = np.random.default_rng(0)
        Xd, Td = m.device_data(rng.random((args.samples, 784), dtype=np.float32),
                               rng.integers(0, 10, args.samples))
        m.fit(Xd, Td, epochs=2, batch_size=b, optimizer="sgd", learning_rate=0.01, verbose=0,
              metrics=())
        prof = {b: _host_profile(m, Xd, Td, b)}
        print(f"cProfile of fit(epochs=5) at batch {b}, by own time:")
        print("\n".join(prof[b]))
    if args.json:
        Path(args.json).write_text(json.dumps({**res, "cprofile": prof}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
