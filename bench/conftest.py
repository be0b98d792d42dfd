"""pytest-benchmark plumbing shared by bench/test_*.py (run: ``pytest bench/ --benchmark-only``).

Each test measures one :class:`mlpaccel.bench.Case` on one backend through the same setup code
that ``mlpaccel bench`` uses. The timed function synchronises the backend, so GPU work is
inside every round; the first (compile/JIT) call happens before timing and is recorded apart
in ``extra_info["compile_s"]``. ``MLPACCEL_BENCH_MODE=full`` selects the large sizes.
"""

from __future__ import annotations

import os
import time

import pytest

from mlpaccel import bench
from mlpaccel.backends import backend_names, get_backend, unavailable_reason

MODE = os.environ.get("MLPACCEL_BENCH_MODE", "quick")
BACKENDS = backend_names()


def backend_params():
    """One pytest param per registered backend (unavailable ones skip with the reason)."""
    return [pytest.param(name, id=name) for name in BACKENDS]


def case_params(cases):
    return [pytest.param(c, id=c.label) for c in cases]


def run_case(benchmark, backend_name: str, case: bench.Case) -> None:
    """Benchmark ``case`` on ``backend_name`` (skipping with the report's cell text)."""
    reason = unavailable_reason(backend_name)
    if reason is not None:
        pytest.skip(f"{backend_name} unavailable: {reason}")
    kind = bench._size_kind(case)
    note = bench._limit_note(backend_name, *kind) if kind else None
    if note:
        pytest.skip(note)
    B = get_backend(backend_name)
    fn = case.setup(B)
    t0 = time.perf_counter()
    fn()
    B.synchronize()
    cold = time.perf_counter() - t0
    t0 = time.perf_counter()
    fn()
    B.synchronize()
    warm = time.perf_counter() - t0

    def timed():
        fn()
        B.synchronize()

    benchmark.group = f"{case.op} {'x'.join(map(str, case.shape))} {case.dtype}"
    benchmark.extra_info.update(op=case.op, shape=list(case.shape), dtype=case.dtype,
                                flops=case.flops, bytes=case.bytes,
                                compile_s=max(0.0, cold - warm), backend=backend_name)
    rounds = max(3, min(100, int(1.0 / max(warm, 1e-6))))
    benchmark.pedantic(timed, rounds=rounds, warmup_rounds=1, iterations=1)
    median = benchmark.stats.stats.median if benchmark.stats else None
    if median:
        if case.flops:
            benchmark.extra_info["gflops"] = case.flops / median / 1e9
        if case.bytes:
            benchmark.extra_info["gbps"] = case.bytes / median / 1e9


def pytest_benchmark_update_machine_info(config, machine_info):
    """Add GPU, driver, CUDA runtime, library versions, BLAS and thread counts."""
    from mlpaccel.machine import machine_info as ours

    machine_info["mlpaccel"] = ours()
