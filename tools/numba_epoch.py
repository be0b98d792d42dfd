#!/usr/bin/env python
"""Benchmark: one MNIST-shaped epoch and a matmul table, numba vs numpy vs PyTorch CPU.

One epoch = 60,000 random float32 samples of 784 features with int labels, MLP 784-256-256-10,
ReLU, softmax cross-entropy, SGD lr 0.01, shuffled mini-batches. The mlpaccel backends follow
DESIGN.md's data path using Backend ops only (take_rows, linear_forward,
softmax_cross_entropy, linear_backward, sgd_update on one flat parameter buffer made with
zeros + view). PyTorch (a benchmark peer only, not a dependency) runs the same network in
eager mode with the same thread count. The CPU may be shared, so every configuration runs
its contenders in turn (each in its own process), several times; medians and ratios printed.

    .venv/bin/python tools/numba_epoch.py                 # epochs at batch 64, 256, 1024
    .venv/bin/python tools/numba_epoch.py --matmul-only   # the GEMM ratio table only
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import numpy as np

import mlpaccel

SIZES = (784, 256, 256, 10)


def make_data(n, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.random((n, SIZES[0]), dtype=np.float32)
    y = rng.integers(0, SIZES[-1], n).astype(np.int64)
    return X, y


class BackendMLP:
    """The epoch on an mlpaccel backend, with every buffer preallocated."""

    def __init__(self, B, X, y, batch, seed=0):
        self.B, self.batch = B, batch
        self.X = B.asarray(X)
        self.y = y
        shapes = [(i, o) for i, o in zip(SIZES[:-1], SIZES[1:])]
        total = sum(i * o + o for i, o in shapes)
        self.P, self.G = B.zeros(total), B.zeros(total)
        rng = np.random.default_rng(seed)
        self.layers, off = [], 0
        for i, o in shapes:
            W, gW = B.view(self.P, off, (i, o)), B.view(self.G, off, (i, o))
            B.assign(W, rng.standard_normal((i, o)).astype(np.float32) * np.sqrt(2.0 / i))
            off += i * o
            b, gb = B.view(self.P, off, (o,)), B.view(self.G, off, (o,))
            off += o
            self.layers.append((W, b, gW, gb))
        self.xbuf = B.empty((batch, SIZES[0]))
        self.zs = [(B.empty((batch, o)), B.empty((batch, o))) for o in SIZES[1:]]

    def epoch(self, perm):
        B, n, bs = self.B, len(perm), self.batch
        loss = None
        for s in range(0, n - bs + 1, bs):  # full batches only (same work for every peer)
            idx = perm[s:s + bs]
            a = B.take_rows(self.X, idx, out=self.xbuf)
            acts = [a]
            for li, (W, b, _, _) in enumerate(self.layers):
                act = "relu" if li < len(self.layers) - 1 else "linear"
                z, a = B.linear_forward(a, W, b, act, out_z=self.zs[li][0],
                                        out_a=self.zs[li][1])
                acts.append((z, a))
            loss, g = B.softmax_cross_entropy(acts[-1][1], self.y[idx])
            for li in range(len(self.layers) - 1, -1, -1):
                W, _, gW, gb = self.layers[li]
                z, a = acts[li + 1]
                a_prev = acts[li] if li == 0 else acts[li][1]
                act = "relu" if li < len(self.layers) - 1 else "linear"
                g, _, _ = B.linear_backward(a_prev, W, z, a, g, act, need_grad_x=li > 0,
                                            out_grad_W=gW, out_grad_b=gb)
            B.sgd_update(self.P, self.G, 0.01)
        return float(B.to_numpy(loss))


class FitMLP:
    """The epoch through the real trainer: ``MLP.fit(epochs=1)`` with plain SGD, no metrics
    (what a user runs; includes the trainer's own overhead: shuffling, batching, loss sums).
    The data is handed over once with ``model.device_data`` (as PyTorch's tensors are made
    once), so an epoch does not include fit's validation and copy of the 188 MB input."""

    def __init__(self, B, X, y, batch, seed=0):
        from mlpaccel import MLP

        self.batch = batch
        self.model = MLP(list(SIZES), activation="relu", output_activation="softmax",
                         backend=B, init="he", random_state=seed)
        self.X, self.T = self.model.device_data(X, y)

    def epoch(self, perm):
        m = self.model
        m.fit(self.X, self.T, epochs=1, batch_size=self.batch, optimizer="sgd",
              learning_rate=0.01, verbose=0, metrics=())
        return m.history["loss"][-1]


class TorchMLP:
    """The same epoch in PyTorch CPU eager (nn.Sequential, CrossEntropyLoss, optim.SGD)."""

    def __init__(self, X, y, batch, threads):
        import torch

        torch.set_num_threads(threads)
        self.torch, self.batch = torch, batch
        self.X, self.y = torch.from_numpy(X), torch.from_numpy(y)
        layers = []
        for i, o in zip(SIZES[:-1], SIZES[1:]):
            layers += [torch.nn.Linear(i, o), torch.nn.ReLU()]
        self.net = torch.nn.Sequential(*layers[:-1])
        self.opt = torch.optim.SGD(self.net.parameters(), lr=0.01)
        self.lossf = torch.nn.CrossEntropyLoss()

    def epoch(self, perm):
        t, bs = self.torch, self.batch
        perm = t.from_numpy(perm)
        loss = None
        for s in range(0, len(perm) - bs + 1, bs):
            idx = perm[s:s + bs]
            self.opt.zero_grad(set_to_none=True)
            loss = self.lossf(self.net(self.X[idx]), self.y[idx])
            loss.backward()
            self.opt.step()
        return loss.item()


def _median_ms(times):
    return 1e3 * statistics.median(times)


def _backend(kind):
    """``numba-perop``: the numba backend with its fused training step turned off."""
    if kind == "numba-perop":
        return mlpaccel.get_backend("numba", fused_step=False)
    return mlpaccel.get_backend(kind)


# Each contender runs in its own process, and only one computes at a time. In one process,
# the idle thread pools of the others (OpenBLAS and PyTorch spin-wait after each call) steal
# the second core from the one being timed, which measured numba 3-7x slower than it is.
def _worker(conn, kind, threads, n, trainer=False):
    if kind != "torch":
        import numba

        numba.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)  # NumPy's BLAS (and torch's, when it uses one)
    except ImportError:
        pass
    X, y = make_data(n) if n else (None, None)
    runners = {}
    while True:
        msg = conn.recv()
        if msg is None:
            break
        if msg[0] == "epoch":
            _, bs, perm = msg
            if bs not in runners:
                cls = FitMLP if trainer else BackendMLP
                runners[bs] = (TorchMLP(X, y, bs, threads) if kind == "torch" else
                               cls(_backend(kind), X, y, bs))
            t0 = time.perf_counter()
            loss = runners[bs].epoch(perm)
            conn.send((time.perf_counter() - t0, loss))
        else:  # ("matmul", m, k, n, ta, tb, inner)
            _, m, k, nn, ta, tb, inner = msg
            rng = np.random.default_rng(2)
            a = rng.random((k, m) if ta else (m, k), dtype=np.float32)
            b = rng.random((nn, k) if tb else (k, nn), dtype=np.float32)
            c = np.empty((m, nn), np.float32)
            at, bt = (a.T if ta else a), (b.T if tb else b)
            nb = mlpaccel.get_backend("numba") if kind == "numba" else None
            call = (nb.matmul, (a, b, ta, tb)) if nb else (np.matmul, (at, bt))
            f = functools.partial(call[0], *call[1], out=c)
            f()
            t0 = time.perf_counter()
            for _ in range(inner):
                f()
            conn.send(((time.perf_counter() - t0) / inner, 0.0))


class Contenders:
    """One worker process per contender; ``run`` asks each in turn and collects times."""

    def __init__(self, kinds, threads, n, trainer=False):
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self.conns = {}
        self.procs = []
        for kind in kinds:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child, kind, threads, n, trainer),
                               daemon=True)
            proc.start()
            self.conns[kind] = parent
            self.procs.append(proc)

    def run(self, msg, rounds):
        times = {k: [] for k in self.conns}
        items = list(self.conns.items())
        for r in range(rounds + 1):  # the first round warms up (JIT, caches) and is dropped
            # the order rotates every round: no contender always runs right after another
            for kind, conn in items[r % len(items):] + items[:r % len(items)]:
                conn.send(msg)
                seconds, loss = conn.recv()
                if not np.isfinite(loss):
                    raise RuntimeError(f"{kind}: loss is {loss}")
                if r:
                    times[kind].append(seconds)
                time.sleep(0.3)  # let the previous contender's pool stop spinning (OpenBLAS)
        return times

    def close(self):
        for conn in self.conns.values():
            conn.send(None)
        for proc in self.procs:
            proc.join(timeout=10)


def run_epochs(batches, repeats, n, threads, with_torch, trainer=False, compare_perop=False,
               show_all=False):
    rng = np.random.default_rng(1)
    how = "MLP.fit (the real trainer)" if trainer else "Backend ops, preallocated"
    print(f"\n## One epoch, {n} samples, 784-256-256-10 ReLU, softmax-CE, SGD; {threads} threads;"
          f" median of {repeats} (ms); mlpaccel via {how}; one process per contender, "
          "run in turn\n")
    perop = trainer and compare_perop
    head = "| batch | numba | numpy | torch | numba/numpy | numba/torch |"
    if perop:
        head += " numba per-op | fused/per-op |"
    print(head + "\n|" + "---|" * (8 if perop else 6))
    kinds = ["numba", "numpy"] + (["torch"] if with_torch else []) + (
        ["numba-perop"] if perop else [])
    pool = Contenders(kinds, threads, n, trainer)
    try:
        for bs in batches:
            times = pool.run(("epoch", bs, rng.permutation(n)), repeats)
            ms = {k: _median_ms(v) for k, v in times.items()}
            if show_all:
                print("  " + "; ".join(f"{k}: " + " ".join(f"{1e3 * t:.0f}" for t in v)
                                       for k, v in times.items()), flush=True)
            tt = ms.get("torch", float("nan"))
            row = (f"| {bs} | {ms['numba']:.0f} | {ms['numpy']:.0f} | {tt:.0f} | "
                   f"{ms['numba'] / ms['numpy']:.2f} | {ms['numba'] / tt:.2f} |")
            if perop:
                row += f" {ms['numba-perop']:.0f} | {ms['numba'] / ms['numba-perop']:.2f} |"
            print(row, flush=True)
    finally:
        pool.close()


MATMUL_CASES = ([(n, n, n) for n in (512, 1024, 2048)]
                + [(64, 784, 256), (256, 784, 256), (784, 64, 256), (64, 256, 784)])


def run_matmul(repeats, threads):
    print(f"\n## matmul float32, GFLOP/s, median of {repeats}; {threads} threads; numba vs "
          "NumPy (its BLAS), one process each\n")
    print("| M x K x N | op | numba | numpy | numba/numpy |\n|---|---|---|---|---|")
    pool = Contenders(["numba", "numpy"], threads, 0)
    try:
        for m, k, n in MATMUL_CASES:
            for ta, tb in ((False, False), (True, False), (False, True)):
                flop = 2.0 * m * n * k
                inner = max(2, int(2e9 / flop))
                times = pool.run(("matmul", m, k, n, ta, tb, inner), repeats)
                gf = {k_: flop / statistics.median(v) / 1e9 for k_, v in times.items()}
                op = ("A^T B" if ta else "A B^T" if tb else "A B")
                print(f"| {m}x{k}x{n} | {op} | {gf['numba']:.0f} | {gf['numpy']:.0f} | "
                      f"{gf['numba'] / gf['numpy']:.2f} |", flush=True)
    finally:
        pool.close()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batches", type=int, nargs="+", default=[64, 256, 1024])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--samples", type=int, default=60_000)
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--matmul-only", action="store_true")
    ap.add_argument("--no-matmul", action="store_true")
    ap.add_argument("--trainer", action="store_true",
                    help="time mlpaccel's epochs through MLP.fit instead of Backend ops")
    ap.add_argument("--perop", action="store_true",
                    help="with --trainer: also time numba with its fused step off")
    ap.add_argument("--all-times", action="store_true",
                    help="also print every epoch's time (ms) per contender")
    ap.add_argument("--threads", type=int, default=None,
                    help="threads for numba, BLAS and torch (default: numba's default)")
    args = ap.parse_args(argv)
    import numba

    threads = args.threads or numba.get_num_threads()
    numba.set_num_threads(threads)
    nb = mlpaccel.get_backend("numba")
    jit = nb.warm_up((np.float32,))
    info = nb.info()
    print(f"numba {info['numba']}, {threads} threads ({info['threading_layer']}), "
          f"{info.get('cpu')} [{info.get('simd')}]; warm-up (JIT or cache load) {jit:.1f} s")
    if not args.matmul_only:
        with_torch = not args.no_torch
        if with_torch:
            try:
                import torch  # noqa: F401
            except ImportError:
                print("(PyTorch not installed: its column is empty)")
                with_torch = False
        run_epochs(args.batches, args.repeats, args.samples, threads, with_torch, args.trainer,
                   args.perop, args.all_times)
    if not args.no_matmul:
        run_matmul(max(args.repeats, 5), threads)


if __name__ == "__main__":
    main()
