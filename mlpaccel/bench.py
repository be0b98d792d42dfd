"""Measuring the ladder: one honest timer, the benchmark cases, and the results.json format.

Used by ``mlpaccel bench`` / ``mlpaccel demo`` and by the pytest-benchmark suites in ``bench/``
(they share :func:`cases` and each case's ``setup``), so both measure the same code.

Timing rules (:func:`measure`)
------------------------------
* The first call is timed alone ("cold"); then warm-up calls; ``compile_s = cold - warm`` is the
  one-off JIT/NVRTC/first-touch cost, reported apart and never inside a round.
* Every round ends with ``backend.synchronize()``, so asynchronous GPU work is inside the round.
* A round repeats the call ``inner`` times (so a round lasts >= ~2 ms and the clock's resolution
  does not matter); rounds repeat until the time budget is spent (at least 3, at most 200).
* Reported: median, min and inter-quartile range of the per-call time over rounds.

results.json (schema ``mlpaccel-bench``, version 1)
---------------------------------------------------
::

    {"schema": "mlpaccel-bench", "version": 1, "mode": "quick" | "full" | "demo",
     "created": "2026-11-24 22:00 UTC",
     "machines": {"<machine id>": {machine_info() fields: hostname, date, cpu, cpu_count, blas,
                                   blas_threads, numpy, numba, cupy, gpu_name, gpu_memory, ...}},
     "rows": [{"machine": "<machine id>", "backend": "numpy", "op": "matmul",
               "group": "matmul-square", "shape": [256, 256, 256], "dtype": "float32",
               "status": "ok" | "skipped" | "unavailable" | "error",
               "median_s": 1.2e-4, "min_s": ..., "iqr_s": ..., "rounds": 40, "inner": 8,
               "compile_s": 0.0, "flops": 33554432, "bytes": 786432,
               "gflops": 270.1, "gbps": 6.3, "notes": "", "extra": {...}}, ...]}

``shape`` is (M, N, K) for matmul-like ops (C is M x N, K is the summed length), (n,) for
elementwise ops, (batch,) for training. ``flops`` counts a multiply-add as 2, ``bytes`` is the
minimum traffic (every operand read once, every result written once). Rows that did not run
keep their op, shape and backend and say why in ``notes`` (absent backend, size limit, estimated
time over the cap), so the report shows a cell instead of a hole. ``extra`` holds op-specific
numbers (samples_per_s, steps, loss, accuracy for training rows).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import logging
import math
import statistics
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import numpy as np

from .backends import backend_names, get_backend, unavailable_reason

log = logging.getLogger("mlpaccel.bench")

SCHEMA = "mlpaccel-bench"
SCHEMA_VERSION = 1
#: the MNIST-shaped network every training benchmark uses
MNIST_LAYERS = (784, 256, 256, 10)
MNIST_SAMPLES = 60_000
#: rows estimated to take longer than this (one call) are skipped with a note
DEFAULT_CAP_S = 60.0

# ----------------------------------------------------------------------------- timing


@dataclasses.dataclass
class Timing:
    """Per-call seconds over rounds: median, min, inter-quartile range; compile time apart."""

    median_s: float
    min_s: float
    iqr_s: float
    rounds: int
    inner: int
    compile_s: float
    cold_s: float


def measure(fn: Callable[[], object], sync: Callable[[], None] = lambda: None,
            budget_s: float = 0.5, warmup: int = 1, min_rounds: int = 3,
            max_rounds: int = 200, min_round_s: float = 2e-3) -> Timing:
    """Time ``fn()`` (synchronised by ``sync()`` in every round) within about ``budget_s``."""
    t0 = time.perf_counter()
    fn()
    sync()
    cold = time.perf_counter() - t0
    warm = cold
    for _ in range(max(warmup, 1)):
        t0 = time.perf_counter()
        fn()
        sync()
        warm = time.perf_counter() - t0
    inner = 1 if warm >= min_round_s else min(1000, math.ceil(min_round_s / max(warm, 1e-7)))
    per_round = warm * inner
    rounds = int(min(max_rounds, max(min_rounds, budget_s // max(per_round, 1e-9))))
    samples = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        sync()
        samples.append((time.perf_counter() - t0) / inner)
    samples.sort()
    q = statistics.quantiles(samples, n=4) if len(samples) >= 2 else [samples[0]] * 3
    median = statistics.median(samples)
    return Timing(median_s=median, min_s=samples[0], iqr_s=q[2] - q[0], rounds=rounds,
                  inner=inner, compile_s=max(0.0, cold - median), cold_s=cold)


# ----------------------------------------------------------------------------- cases


@dataclasses.dataclass
class Case:
    """One measurement: ``setup(backend)`` builds inputs on the device and returns the call."""

    op: str
    group: str
    shape: tuple
    flops: float
    bytes: float
    setup: Callable[[object], Callable[[], object]]
    dtype: str = "float32"
    #: backends this case is too big for -> the note shown in its cell
    limits: dict = dataclasses.field(default_factory=dict)
    extra: dict = dataclasses.field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.op}[{'x'.join(str(s) for s in self.shape)}]"


def _rand(shape, dtype, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


def matmul_case(m: int, n: int, k: int, ta: bool = False, tb: bool = False,
                dtype: str = "float32", group: str = "matmul-square") -> Case:
    """C (m, n) = op(A) @ op(B) with K = k; 2mnk flops; A, B read and C written once."""
    item = np.dtype(dtype).itemsize

    def setup(B):
        a = B.asarray(_rand((k, m) if ta else (m, k), dtype, 1), dtype=dtype)
        b = B.asarray(_rand((n, k) if tb else (k, n), dtype, 2), dtype=dtype)
        out = B.zeros((m, n), dtype)
        return lambda: B.matmul(a, b, transpose_a=ta, transpose_b=tb, out=out)

    op = "matmul" + ("_tn" if ta else "") + ("_nt" if tb else "")
    return Case(op, group, (m, n, k), 2.0 * m * n * k, item * (m * k + k * n + m * n), setup,
                dtype)


#: nominal flops per element, for placing elementwise kernels on the roofline
ACT_FLOPS = {"relu": 1, "sigmoid": 4, "tanh": 6}


def activation_case(name: str, n: int, backward: bool = False,
                    dtype: str = "float32") -> Case:
    """f(z) or grad_out * f'(z) over n elements: memory-bound (2 or 4 arrays touched)."""
    item = np.dtype(dtype).itemsize
    shape2 = (n // 1000, 1000) if n >= 1000 else (1, n)

    def setup(B):
        z = B.asarray(_rand(shape2, dtype, 3), dtype=dtype)
        out = B.zeros(shape2, dtype)
        if not backward:
            return lambda: B.activation(name, z, out=out)
        a = B.activation(name, z)
        g = B.asarray(_rand(shape2, dtype, 4), dtype=dtype)
        return lambda: B.activation_grad(name, z, a, g, out=out)

    arrays = 4 if backward else 2
    flops = (ACT_FLOPS.get(name, 2) + (2 if backward else 0)) * n
    return Case(f"{name}_{'bwd' if backward else 'fwd'}", "activation", (n,), flops,
                arrays * n * item, setup, dtype)


def copy_case(n: int, dtype: str = "float32") -> Case:
    """dst[...] = src over n elements: the memory-bandwidth ceiling (read n + write n)."""
    item = np.dtype(dtype).itemsize

    def setup(B):
        src = B.asarray(_rand((n,), dtype, 5), dtype=dtype)
        dst = B.zeros((n,), dtype)
        return lambda: B.assign(dst, src)

    return Case("copy", "copy", (n,), 0.0, 2 * n * item, setup, dtype)


def linear_case(m: int, k: int, n: int, activation: str = "relu",
                dtype: str = "float32") -> Case:
    """Fused dense layer z = x W + b, a = f(z): x (m, k), W (k, n)."""
    item = np.dtype(dtype).itemsize

    def setup(B):
        x = B.asarray(_rand((m, k), dtype, 6), dtype=dtype)
        W = B.asarray(_rand((k, n), dtype, 7) * 0.05, dtype=dtype)
        b = B.asarray(_rand((n,), dtype, 8), dtype=dtype)
        z, a = B.zeros((m, n), dtype), B.zeros((m, n), dtype)
        return lambda: B.linear_forward(x, W, b, activation, out_z=z, out_a=a)

    return Case("linear_fwd", "fused", (m, n, k), 2.0 * m * n * k + 2.0 * m * n,
                item * (m * k + k * n + n + 2 * m * n), setup, dtype)


def softmax_ce_case(m: int, c: int = 10, dtype: str = "float32") -> Case:
    """Fused softmax + cross-entropy (loss and gradient) over logits (m, c)."""
    item = np.dtype(dtype).itemsize

    def setup(B):
        logits = B.asarray(_rand((m, c), dtype, 9), dtype=dtype)
        labels = np.random.default_rng(10).integers(0, c, m)
        return lambda: B.softmax_cross_entropy(logits, labels)

    return Case("softmax_ce", "fused", (m, c), 6.0 * m * c, item * 2 * m * c, setup, dtype)


def mlp_step_flops(batch: int, layers=MNIST_LAYERS) -> float:
    """Counted flops of one SGD step: forward 2*b*fi*fo per layer, backward twice that
    (grad_W and grad_x; the first layer skips grad_x), plus the update (2 per parameter)."""
    f = 0.0
    for i, (fi, fo) in enumerate(zip(layers[:-1], layers[1:])):
        f += 2.0 * batch * fi * fo * (3 if i > 0 else 2) + 2.0 * fi * fo
    return f


def epoch_flops(samples: int = MNIST_SAMPLES, batch: int = 256, layers=MNIST_LAYERS) -> float:
    """Counted flops of one epoch (forward + backward + update) of the MNIST-shaped MLP."""
    steps = math.ceil(samples / batch)
    return steps * mlp_step_flops(batch, layers) * 1.0  # last batch counted full (upper bound)


def _param_views(B, layers, dtype, rng):
    sizes = [(fi, fo) for fi, fo in zip(layers[:-1], layers[1:])]
    total = sum(fi * fo + fo for fi, fo in sizes)
    flat = np.zeros(total, dtype)
    off = 0
    for fi, fo in sizes:  # He-uniform, drawn on the host (the design's "host decides")
        lim = math.sqrt(6.0 / fi)
        flat[off:off + fi * fo] = rng.uniform(-lim, lim, fi * fo)
        off += fi * fo + fo
    p = B.asarray(flat, dtype=dtype)
    g = B.zeros(total, dtype)
    Ws, bs, gWs, gbs = [], [], [], []
    off = 0
    for fi, fo in sizes:
        Ws.append(B.view(p, off, (fi, fo)))
        gWs.append(B.view(g, off, (fi, fo)))
        off += fi * fo
        bs.append(B.view(p, off, (fo,)))
        gbs.append(B.view(g, off, (fo,)))
        off += fo
    return p, g, Ws, bs, gWs, gbs


def make_step(B, batch: int = 0, layers=MNIST_LAYERS, dtype: str = "float32",
              lr: float = 0.01, seed: int = 0):
    """A training step of the MLP written on the Backend interface alone (the design's data
    path): linear_forward per layer, softmax-CE, linear_backward per layer, one SGD update over
    the flat parameter buffer. Returns ``(step(x, labels) -> loss, params)``;
    ``step.predict(x)`` gives the predicted classes as a NumPy array."""
    rng = np.random.default_rng(seed)
    p, g, Ws, bs, gWs, gbs = _param_views(B, layers, dtype, rng)
    acts = ["relu"] * (len(layers) - 2) + ["linear"]

    def step(x, labels):
        a_prev, cache = x, []
        for W, b, act in zip(Ws, bs, acts):
            z, a = B.linear_forward(a_prev, W, b, act)
            cache.append((a_prev, z, a))
            a_prev = a
        loss, grad = B.softmax_cross_entropy(a_prev, labels)
        act = acts[-1]
        for i in reversed(range(len(Ws))):
            x_in, z, a = cache[i]
            below = (acts[i - 1], *cache[i - 1][1:]) if i > 0 else None  # grad -> its delta
            grad, _, _ = B.linear_backward(x_in, Ws[i], z, a, grad, act, need_grad_x=i > 0,
                                           out_grad_W=gWs[i], out_grad_b=gbs[i], below=below)
            act = "linear"
        B.sgd_update(p, g, lr)
        return loss

    def predict(x):
        a = x
        for W, b, act in zip(Ws, bs, acts):
            _, a = B.linear_forward(a, W, b, act)
        return B.to_numpy(a).argmax(axis=1)

    step.predict = predict
    return step, p


def train_step_case(batch: int, dtype: str = "float32", layers=MNIST_LAYERS) -> Case:
    """One SGD step of the MNIST-shaped MLP on a device-resident batch."""
    item = np.dtype(dtype).itemsize
    params = sum(fi * fo + fo for fi, fo in zip(layers[:-1], layers[1:]))

    def setup(B):
        step, _ = make_step(B, batch, layers, dtype)
        x = B.asarray(_rand((batch, layers[0]), dtype, 11), dtype=dtype)
        y = np.random.default_rng(12).integers(0, layers[-1], batch)
        return lambda: step(x, y)

    steps = math.ceil(MNIST_SAMPLES / batch)
    return Case("train_step", "training", (batch,), mlp_step_flops(batch, layers),
                item * (batch * layers[0] + 3 * params), setup, dtype,
                extra={"steps_per_epoch": steps, "layers": list(layers)})


def fit_epoch_case(batch: int, samples: int = MNIST_SAMPLES, layers=MNIST_LAYERS,
                   dtype: str = "float32", optimizer: str = "sgd") -> Case:
    """One epoch of the library's trainer, ``MLP.fit`` (SGD lr 0.01 or Adam lr 1e-3; whatever
    fusion or graph capture the backend offers), on ``samples`` random MNIST-shaped rows that
    are already on the device (``model.device_data``, uploaded once in setup, as PyTorch's
    peer keeps its data on the GPU)."""

    def setup(B):
        from . import optim
        from .model import MLP

        rng = np.random.default_rng(15)
        x = rng.random((samples, layers[0]), dtype=np.float32)
        y = rng.integers(0, layers[-1], samples)
        model = MLP(list(layers), loss="cross_entropy", backend=B, dtype=dtype,
                    random_state=0)
        xd, td = model.device_data(x, y)
        opt = optim.get(optimizer, learning_rate=0.01 if optimizer == "sgd" else 1e-3)
        return lambda: model.fit(xd, td, epochs=1, batch_size=batch, optimizer=opt,
                                 verbose=0, metrics=())

    steps = math.ceil(samples / batch)
    name = {"sgd": "SGD", "adam": "Adam"}.get(optimizer, optimizer)
    return Case("train_epoch", "training", (batch,), steps * mlp_step_flops(batch, layers), 0.0,
                setup, dtype, extra={"what": f"MLP.fit epoch ({name})", "optimizer": optimizer,
                                     "samples": samples, "steps_per_epoch": steps})


def dot_python_case(n: int, kind: str) -> Case:
    """Seed 003's inner product of n floats in pure Python: a for loop or a comprehension."""

    def setup(_B):
        a = _rand((n,), "float64", 13).tolist()
        b = _rand((n,), "float64", 14).tolist()
        if kind == "loop":
            def run():
                s = 0.0
                for i in range(n):
                    s += a[i] * b[i]
                return s
        else:
            def run():
                return sum([x * y for x, y in zip(a, b)])
        return run

    return Case(f"dot_{kind}", "seed-dot", (n,), 2.0 * n, 16.0 * n, setup, "float64")


def dot_case(n: int) -> Case:
    """The same inner product through the backend: (1, n) @ (n, 1)."""

    def setup(B):
        a = B.asarray(_rand((1, n), "float64", 13), dtype="float64")
        b = B.asarray(_rand((n, 1), "float64", 14), dtype="float64")
        out = B.zeros((1, 1), "float64")
        return lambda: B.matmul(a, b, out=out)

    return Case("dot", "seed-dot", (n,), 2.0 * n, 16.0 * n, setup, "float64")


# --- seed 000: XOR from three separately trained perceptrons vs an MLP with backprop --------

XOR_X = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float64)
XOR_Y = np.array([0, 1, 1, 0], dtype=np.float64)


def _train_perceptron(targets, lr=0.1, epochs=20, seed=0):
    """Rosenblatt rule on the four gate inputs; step activation. Returns (w, b)."""
    rng = np.random.default_rng(seed)
    w, b = rng.uniform(-1, 1, 2), rng.uniform(-1, 1)
    for _ in range(epochs):
        for x, t in zip(XOR_X, targets):
            y = 1.0 if x @ w + b > 0 else 0.0
            w += lr * (t - y) * x
            b += lr * (t - y)
    return w, b


def xor_perceptrons():
    """NAND and OR trained separately, AND on their outputs (seed 000, no backprop).
    Returns predict(x) for one sample."""
    nand = _train_perceptron(np.array([1, 1, 1, 0.0]), seed=1)
    orr = _train_perceptron(np.array([0, 1, 1, 1.0]), seed=2)
    andd = _train_perceptron(np.array([0, 0, 0, 1.0]), seed=3)

    def fire(p, x):
        return 1.0 if x @ p[0] + p[1] > 0 else 0.0

    def predict(x):
        h = np.array([fire(nand, x), fire(orr, x)])
        return fire(andd, h)

    return predict


def xor_mlp(epochs=10_000, hidden=8, lr=0.05, seed=0):
    """Seed 000's MLP: 2-8-1 sigmoid, weights uniform(-1, 1), full-batch backprop.
    Returns predict(x) for one sample."""
    rng = np.random.default_rng(seed)
    W1, b1 = rng.uniform(-1, 1, (2, hidden)), np.zeros((1, hidden))
    W2, b2 = rng.uniform(-1, 1, (hidden, 1)), np.zeros((1, 1))
    sig = lambda z: 1.0 / (1.0 + np.exp(-z))  # noqa: E731
    y = XOR_Y[:, None]
    for _ in range(epochs):
        h = sig(XOR_X @ W1 + b1)
        o = sig(h @ W2 + b2)
        d_o = (y - o) * o * (1 - o)
        d_h = (d_o @ W2.T) * h * (1 - h)
        W2 += lr * h.T @ d_o
        b2 += lr * d_o.sum(0, keepdims=True)
        W1 += lr * XOR_X.T @ d_h
        b1 += lr * d_h.sum(0, keepdims=True)

    def predict(x):
        return float(sig(sig(x[None, :] @ W1 + b1) @ W2 + b2)[0, 0] > 0.5)

    return predict


def xor_case(kind: str, epochs: int = 10_000) -> Case:
    """Time per prediction (all four XOR inputs, per sample) as seed 000 measured it."""

    def setup(_B):
        predict = xor_perceptrons() if kind == "perceptrons" else xor_mlp(epochs)

        def run():
            for x in XOR_X:
                predict(x)
        return run

    return Case(f"xor_{kind}", "seed-xor", (4,), 0.0, 0.0, setup, "float64",
                extra={"per": "4 predictions"})


# ----------------------------------------------------------------------------- suites

#: per backend: largest square matmul n, largest elementwise n, largest training batch
LIMITS = {
    "python": {"matmul": 128, "elementwise": 100_000, "batch": 16, "dot": 1_000_000,
               "epoch": 5_000},
    # the emulator runs one CUDA thread at a time: a 1e6-long dot is one thread's 1e6-step loop
    # (and a 60k-sample epoch ~15 s)
    "cuda-emu": {"matmul": 256, "elementwise": 1_000_000, "batch": 64, "dot": 100_000,
                 "epoch": 5_000},
}
CPU_MATMUL_MAX = 2048


def _limit_note(backend: str, kind: str, size: int) -> str | None:
    lim = LIMITS.get(backend, {}).get(kind)
    if lim is not None and size > lim:
        sym = {"matmul": "n", "elementwise": "size", "batch": "batch", "dot": "size",
               "epoch": "samples"}[kind]
        return f"skipped: {sym} > {lim:,} on {backend}"
    return None


#: the GEMM shapes of the 784-256-256-10 MLP's first layer at the batches the epochs use
MLP_GEMM_BATCHES = (64, 256, 1024, 8192)


def mlp_gemm_shapes(full: bool = True) -> list[tuple[int, int, int, bool, bool]]:
    """(m, n, k, transpose_a, transpose_b) of the first layer's three GEMMs per batch b:
    forward x W (b x 256, K = 784), grad_W = x^T delta (784 x 256, K = b) and
    grad_x = delta W^T (b x 784, K = 256); ``full=False``: the quick subset."""
    if not full:
        return [(64, 256, 784, False, False), (256, 256, 256, False, False),
                (1024, 256, 784, False, False), (784, 256, 1024, True, False),
                (1024, 784, 256, False, True)]
    out = []
    for b in MLP_GEMM_BATCHES:
        out += [(b, 256, 784, False, False), (784, 256, b, True, False),
                (b, 784, 256, False, True)]
    return out


def mlp_matmul_cases(full: bool = True) -> list[Case]:
    """``matmul_case`` for each of ``mlp_gemm_shapes(full)`` (group "matmul-mlp")."""
    return [matmul_case(m, n, k, ta=ta, tb=tb, group="matmul-mlp")
            for m, n, k, ta, tb in mlp_gemm_shapes(full)]


def suite(mode: str = "quick") -> list[Case]:
    """The cases of a run. ``quick`` (demo, < 2 min on 2 cores), ``full`` (the whole ladder)."""
    full = mode == "full"
    sq = [32, 64, 128, 256, 512, 1024] + ([2048, 4096, 8192] if full else [])
    cases = [matmul_case(n, n, n) for n in sq]
    cases += mlp_matmul_cases(full)
    ns = [10**3, 10**4, 10**5, 10**6, 10**7] + ([10**8] if full else [])
    for n in ns:
        cases.append(activation_case("sigmoid", n))
        cases.append(activation_case("relu", n, backward=True))
    for n in ([2**20, 2**24] + ([2**27] if full else [])):
        cases.append(copy_case(n))
    cases.append(linear_case(1024, 784, 256))
    cases.append(softmax_ce_case(1024))
    for b in ([16, 64, 256, 1024] + ([8192] if full else [])):
        cases.append(train_step_case(b))
    # whole MLP.fit epochs: the batches the epoch targets name (numba vs NumPy / PyTorch CPU at
    # 64 and 256; cuda vs PyTorch CUDA graphs up to 8192)
    cases += [fit_epoch_case(b) for b in ((64, 256, 1024, 8192) if full else (64, 256))]
    if full:
        cases += [fit_epoch_case(b, optimizer="adam") for b in (64, 1024)]
    cases += [dot_python_case(10**6, "loop"), dot_python_case(10**6, "listcomp"),
              dot_case(10**6)]
    cases += [xor_case("perceptrons"), xor_case("mlp", epochs=10_000 if full else 2_000)]
    return cases


def _size_kind(case: Case) -> tuple[str, int] | None:
    if case.group.startswith("matmul") or case.op == "linear_fwd":
        return "matmul", max(case.shape)
    if case.group in ("activation", "copy"):
        return "elementwise", case.shape[0]
    if case.op == "train_epoch":
        return "epoch", case.extra["samples"]
    if case.group == "training":
        return "batch", case.shape[0]
    if case.group == "seed-dot":
        return "dot", case.shape[0]
    return None


def _backend_independent(case: Case) -> bool:
    """Pure-Python/NumPy seed experiments run once, labelled with the backend they model."""
    return case.op.startswith("dot_") or case.group == "seed-xor"


# ----------------------------------------------------------------------------- running


def _row(machine: str, backend: str, case: Case, status: str, notes: str = "",
         timing: Timing | None = None) -> dict:
    row = {"machine": machine, "backend": backend, "op": case.op, "group": case.group,
           "shape": list(case.shape), "dtype": case.dtype, "status": status,
           "median_s": None, "min_s": None, "iqr_s": None, "rounds": 0, "inner": 0,
           "compile_s": None, "flops": case.flops, "bytes": case.bytes,
           "gflops": None, "gbps": None, "notes": notes, "extra": dict(case.extra)}
    if timing is not None:
        row.update(median_s=timing.median_s, min_s=timing.min_s, iqr_s=timing.iqr_s,
                   rounds=timing.rounds, inner=timing.inner, compile_s=timing.compile_s)
        if case.flops:
            row["gflops"] = case.flops / timing.median_s / 1e9
        if case.bytes:
            row["gbps"] = case.bytes / timing.median_s / 1e9
        if case.op == "train_epoch":  # a whole epoch measured as one call
            row["extra"]["epoch_s"] = timing.median_s
            row["extra"]["samples_per_s"] = case.extra["samples"] / timing.median_s
        elif case.group == "training":
            steps = case.extra["steps_per_epoch"]
            row["extra"]["epoch_s"] = steps * timing.median_s
            row["extra"]["samples_per_s"] = case.shape[0] / timing.median_s
    return row


class _RateMemo:
    """The last measured flop (or byte) rate per backend and group, to predict a call's time.
    Cases run from small to large and rates grow with size, so the last (largest) case's rate
    overestimates the next one's time: the prediction errs on the safe side."""

    def __init__(self):
        self.rates: dict[tuple, float] = {}

    def estimate(self, backend: str, case: Case) -> float | None:
        work = case.flops or case.bytes
        rate = self.rates.get((backend, case.group))
        return work / rate if rate and work else None

    def record(self, backend: str, case: Case, t: float) -> None:
        work = case.flops or case.bytes
        if work and t > 0:
            self.rates[(backend, case.group)] = work / t


def run_cases(cases: Iterable[Case], backends: Iterable[str], machine: str = "m0",
              budget_s: float = 0.3, cap_s: float = DEFAULT_CAP_S, progress=None) -> list[dict]:
    """Measure every case on every backend; rows for everything, measured or not."""
    cases, backends = list(cases), list(backends)
    rows: list[dict] = []
    memo = _RateMemo()
    done_independent: set[str] = set()
    for name in backends:
        reason = unavailable_reason(name)
        B = None if reason else get_backend(name)
        for case in cases:
            if progress is not None:
                progress.set_description(f"{name:8s} {case.label}")
                progress.update(1)
            if _backend_independent(case):
                if case.op in done_independent:
                    continue
                label = "python" if case.op.startswith("dot_") else "numpy"
                done_independent.add(case.op)
                B_used, name_used = None, label
            else:
                B_used, name_used = B, name
                if reason:
                    rows.append(_row(machine, name, case, "unavailable", _short(reason)))
                    continue
                kind = _size_kind(case)
                note = _limit_note(name, *kind) if kind else None
                if note:
                    rows.append(_row(machine, name, case, "skipped", note))
                    continue
                est = memo.estimate(name, case)
                if est is not None and est > cap_s:
                    rows.append(_row(machine, name, case, "skipped",
                                     f"skipped: > {cap_s:g} s (estimated {est:.0f} s)"))
                    continue
            try:
                fn = case.setup(B_used)
                sync = B_used.synchronize if B_used is not None else (lambda: None)
                timing = measure(fn, sync, budget_s=budget_s)
            except Exception as exc:  # one broken kernel must not lose the whole run
                log.warning("%s on %s failed: %s", case.label, name_used, exc)
                rows.append(_row(machine, name_used, case, "error",
                                 f"{type(exc).__name__}: {_short(str(exc))}"))
                continue
            memo.record(name_used, case, timing.median_s)
            rows.append(_row(machine, name_used, case, "ok", timing=timing))
    return rows


def _short(text: str, n: int = 140) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def default_backends() -> list[str]:
    """Every registered backend (absent ones become 'unavailable' cells)."""
    return backend_names()


def results_document(rows: list[dict], machines: dict, mode: str) -> dict:
    """Wrap rows and machine descriptions in the versioned results.json structure."""
    return {"schema": SCHEMA, "version": SCHEMA_VERSION, "mode": mode,
            "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machines": machines, "rows": rows}


def save_results(doc: dict, path: str | Path) -> Path:
    """Write a results document as JSON (creating the folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1, default=_json_default))
    return path


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    return str(obj)


def load_results(path: str | Path) -> dict:
    """Read a results.json, checking its schema and version (ValueError if foreign)."""
    doc = json.loads(Path(path).read_text())
    if doc.get("schema") != SCHEMA:
        raise ValueError(f"{path}: not an mlpaccel results file (schema {doc.get('schema')!r})")
    if doc.get("version") != SCHEMA_VERSION:
        raise ValueError(f"{path}: results version {doc.get('version')} is not supported "
                         f"(this mlpaccel reads version {SCHEMA_VERSION})")
    return doc


def merge_results(docs: list[dict]) -> dict:
    """One document from several (machines renamed m0, m1, ... in order; rows re-labelled)."""
    machines, rows = {}, []
    for i, doc in enumerate(docs):
        rename = {}
        for old, info in doc["machines"].items():
            new = f"m{len(machines)}"
            rename[old] = new
            machines[new] = info
        for row in doc["rows"]:
            rows.append({**row, "machine": rename.get(row["machine"], row["machine"])})
        del i
    return {"schema": SCHEMA, "version": SCHEMA_VERSION, "mode": "merged",
            "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "machines": machines, "rows": rows}


# ----------------------------------------------------------------------------- short training


def _idx_images(path: Path) -> np.ndarray:
    import gzip

    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    n, rows, cols = (int.from_bytes(raw[i:i + 4], "big") for i in (4, 8, 12))
    return np.frombuffer(raw, np.uint8, offset=16).reshape(n, rows * cols)


def _idx_labels(path: Path) -> np.ndarray:
    import gzip

    with gzip.open(path, "rb") as fh:
        raw = fh.read()
    return np.frombuffer(raw, np.uint8, offset=8).astype(np.int64)


def data_dirs() -> list[Path]:
    """Where a local MNIST copy may be: $MLPACCEL_DATA, ./data, ../shared/data, the cache."""
    import os

    from ._paths import cache_dir

    dirs = [os.environ.get("MLPACCEL_DATA"), "data", "../shared/data"]
    out = [Path(d) for d in dirs if d]
    out.append(cache_dir() / "data")
    return out


def load_demo_data(n_train: int = 4096, n_test: int = 1024, seed: int = 0):
    """A small MNIST subset if one is on disk (never downloads), else Playground's circle.
    Returns (name, x_train, y_train, x_test, y_test, layers) with x float32 in [0, 1]."""
    for d in data_dirs():
        img = d / "mnist" / "train-images-idx3-ubyte.gz"
        lab = d / "mnist" / "train-labels-idx1-ubyte.gz"
        if img.exists() and lab.exists():
            try:
                x = _idx_images(img)[: n_train + n_test].astype(np.float32) / 255.0
                y = _idx_labels(lab)[: n_train + n_test]
            except (OSError, ValueError) as exc:
                log.warning("cannot read %s: %s", img, exc)
                continue
            return ("MNIST subset", x[:n_train], y[:n_train], x[n_train:], y[n_train:],
                    MNIST_LAYERS)
    from . import datasets

    x, y = datasets.circle(n_samples=n_train + n_test, noise=0.1, random_state=seed)
    x = (x / 6).astype(np.float32)  # Playground coordinates span [-6, 6]
    return ("Playground circle", x[:n_train], y[:n_train], x[n_train:], y[n_train:],
            (2, 16, 16, 2))


def train_run(backend: str, data, epochs: int = 2, batch: int = 64, lr: float = 0.01,
              machine: str = "m0", max_samples: int | None = None,
              max_test: int | None = None) -> dict:
    """Train the MLP on ``data`` (from :func:`load_demo_data`) for a few epochs on one
    backend; a results row with wall time, samples/s, final loss and test accuracy."""
    name, xtr, ytr, xte, yte, layers = data
    if max_samples is not None:
        xtr, ytr = xtr[:max_samples], ytr[:max_samples]
    if max_test is not None:
        xte, yte = xte[:max_test], yte[:max_test]
    case = Case("train_run", "demo-training", (batch,), 0.0, 0.0, lambda B: None,
                extra={"dataset": name, "epochs": epochs, "samples": len(xtr), "tested": len(xte),
                       "layers": list(layers)})
    reason = unavailable_reason(backend)
    if reason:
        return _row(machine, backend, case, "unavailable", _short(reason))
    from .model import MLP

    B = get_backend(backend)
    # the same MLP class every user trains; a two-batch warm-up (JIT / NVRTC compile, graph
    # capture) runs first and is undone, so the timed epochs measure training only
    model = MLP(list(layers), activation="relu", output_activation="softmax", backend=B,
                init="he", random_state=0)
    from . import optim

    start = model.get_weights()
    model.fit(xtr[:2 * batch], ytr[:2 * batch], epochs=1, batch_size=batch, verbose=0,
              metrics=(), optimizer=optim.get("adam", learning_rate=lr))  # every code path once
    model.set_weights(start)
    B.synchronize()
    t0 = time.perf_counter()
    model.fit(xtr, ytr, epochs=epochs, batch_size=batch, verbose=0, metrics=(),
              optimizer=optim.get("adam", learning_rate=lr))  # a fresh optimizer state
    B.synchronize()
    wall = time.perf_counter() - t0
    steps = epochs * -(-len(xtr) // batch)
    acc = float(model.score(xte, yte))
    loss = model.history["loss"][-1]
    row = _row(machine, backend, case, "ok")
    row.update(median_s=wall, min_s=wall, rounds=1, inner=1)
    row["flops"] = steps * mlp_step_flops(batch, layers)
    row["gflops"] = row["flops"] / wall / 1e9
    row["extra"].update(loss=float(loss), accuracy=acc, steps=steps,
                        samples_per_s=steps * batch / wall)
    return row


# ----------------------------------------------------------------------------- one run

#: per mode: the case list, time budget per case, and the demo's training sizes
MODES = {"quick": {"budget_s": 0.25}, "full": {"budget_s": 1.0}, "demo": {"budget_s": 0.15}}


def demo_cases() -> list[Case]:
    """The demo's subset of the quick suite (under two minutes with every CPU backend)."""
    keep = {("matmul", "matmul-square"), ("matmul", "matmul-mlp"), ("sigmoid_fwd", "activation"),
            ("relu_bwd", "activation"), ("copy", "copy"), ("linear_fwd", "fused"),
            ("softmax_ce", "fused"), ("train_step", "training")}
    out = []
    for c in suite("quick"):
        if c.group.startswith("seed"):
            out.append(c)
        elif (c.op, c.group) in keep and not (c.group == "activation" and c.shape[0] > 10**6):
            if c.group == "matmul-mlp" and c.shape != (1024, 256, 784):
                continue
            if c.group == "training" and c.shape[0] not in (16, 256):
                continue
            out.append(c)
    return out


def rungs(backends) -> dict:
    """{backend: its rung sentence} for the backends whose class can be imported."""
    from .backends import backend_class

    out = {}
    for name in backends:
        try:
            out[name] = backend_class(name).rung
        except Exception:  # not built here: the report falls back to no sentence
            pass
    return out


def run_suite(backends: list[str] | None = None, mode: str = "quick",
              cases: list[Case] | None = None, budget_s: float | None = None,
              cap_s: float = DEFAULT_CAP_S, progress: bool = True, peers: bool = True) -> dict:
    """Measure ``cases`` (default: the mode's suite) on ``backends`` -> a results document.
    ``peers``: also measure cuBLAS and PyTorch where a GPU and those libraries are present."""
    from .machine import machine_info

    if mode not in MODES:
        raise ValueError(f"mode must be one of {sorted(MODES)}, got {mode!r}")
    backends = list(backends or default_backends())
    if cases is None:
        cases = demo_cases() if mode == "demo" else suite(mode)
    budget = MODES[mode]["budget_s"] if budget_s is None else budget_s
    bar = None
    if progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=len(cases) * len(backends), unit="case", leave=False)
        except ImportError:
            bar = None
    try:
        rows = run_cases(cases, backends, budget_s=budget, cap_s=cap_s, progress=bar)
    finally:
        if bar is not None:
            bar.close()
    if peers and mode != "demo":
        from .peers import peer_rows

        rows += peer_rows(mode)
    doc = results_document(rows, {"m0": machine_info()}, mode)
    doc["rungs"] = rungs(backends)
    return doc
