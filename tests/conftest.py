"""Shared fixtures: every test that takes ``backend`` runs once per registered backend.

Unavailable backends skip with the reason; known gaps (tests/known_gaps.py) are applied as
strict xfails, so a gap that gets fixed turns the suite red until the table is updated.
"""

from __future__ import annotations

import fnmatch

import numpy as np
import pytest

import mlpaccel
from mlpaccel.activations import ACTIVATIONS
from mlpaccel.backends import backend_names, unavailable_reason

from .known_gaps import KNOWN_GAPS

ALL_BACKENDS = backend_names()
_BACKEND_OF: dict[str, str] = {}  # test node id -> the backend it runs on (from its params)
#: backends too slow for large shapes (pure Python loops, the CPU emulator)
SLOW_BACKENDS = {"python", "cuda-emu"}

TOLERANCE = {  # per dtype: (rtol, atol) for elementwise results vs the float64 reference
    np.dtype(np.float32): (2e-5, 2e-6),
    np.dtype(np.float64): (1e-11, 1e-13),
}
#: per dtype: c in ||C - C_ref||_F <= c * sqrt(K) * ||C_ref||_F for a matmul with inner size K
#: (rounding errors of a K-term sum grow like sqrt(K) for random data)
MATMUL_RTOL = {
    np.dtype(np.float32): 2e-6,
    np.dtype(np.float64): 1e-14,
}
DTYPES = [np.float32, np.float64]
#: (activation name, params): every catalogue entry, plus non-default parameters
ACTIVATION_CASES = [(name, {}) for name in ACTIVATIONS] + [
    ("leaky_relu", {"alpha": 0.2}),
    ("elu", {"alpha": 0.5}),
]
ACT_IDS = [n + "".join(f"-{k}{v}" for k, v in p.items()) for n, p in ACTIVATION_CASES]


def _marks(name: str):
    marks = []
    if name == "cuda":
        marks.append(pytest.mark.cuda)
    if name == "cuda-emu":
        marks.append(pytest.mark.emu)
    return marks


@pytest.fixture(params=[pytest.param(n, marks=_marks(n), id=n) for n in ALL_BACKENDS])
def backend(request):
    reason = unavailable_reason(request.param)
    if reason is not None:
        pytest.skip(f"{request.param} unavailable: {reason}")
    return mlpaccel.get_backend(request.param)


@pytest.fixture
def rng(request):
    """A generator seeded from the test's id: fresh inputs per test, reproducible per run."""
    import zlib

    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture(scope="session")
def emu():
    """The cuda-emu backend (its kernels compiled once per session); skips without g++.
    (tests/test_cuda_gemm.py has its own ``emu``: the bare emulator driver.)"""
    reason = unavailable_reason("cuda-emu")
    if reason is not None:
        pytest.skip(f"cuda-emu unavailable: {reason}")
    return mlpaccel.get_backend("cuda-emu")


@pytest.fixture(scope="session")
def checked_emu():
    """cuda-emu with the race detector (two thread schedules) and guard-page bounds checks."""
    if unavailable_reason("cuda-emu") is not None:
        pytest.skip("cuda-emu unavailable")
    from mlpaccel.backends.cuda import CudaEmuBackend
    from mlpaccel.backends.cuda_emu import EmuDriver

    class Checked(CudaEmuBackend):
        def _make_driver(self):
            return EmuDriver(schedules=("forward", "reverse"), check_bounds=True)

    return Checked()


def pytest_collection_finish(session):
    """When the nvcc static checks are in this session, start their compiles now (cached by
    source hash; a cold ptxas run of gemm.cu takes minutes of one core) so they overlap the
    rest of the suite instead of running after it."""
    import os
    from pathlib import Path

    if os.environ.get("MLPACCEL_NVCC_CHECKS", "1") == "0":
        return
    if not any(item.nodeid.startswith("tests/test_kernel_static.py") for item in session.items):
        return
    from mlpaccel import kernel_report as kr

    root = Path(__file__).resolve().parent.parent
    sources = sorted((root / "kernels").glob("*.cu"))
    kr.prefetch(sources, include=root / "kernels")


def pytest_collection_modifyitems(config, items):
    for item in items:
        callspec = getattr(item, "callspec", None)
        name = callspec.params.get("backend") if callspec else None
        if name is None:
            continue
        _BACKEND_OF[item.nodeid] = name
        for (gap_backend, pattern), reason in KNOWN_GAPS.items():
            if gap_backend == name and fnmatch.fnmatch(item.name, pattern):
                item.add_marker(pytest.mark.xfail(reason=reason, strict=True))


# ---------------------------------------------------------------- per-backend tally
_TALLY: dict[str, dict[str, int]] = {}


def pytest_runtest_logreport(report):
    """Count outcomes per backend parameter (call phase, or setup when it skipped/failed)."""
    if report.when != "call" and not (report.when == "setup" and report.outcome != "passed"):
        return
    name = _BACKEND_OF.get(report.nodeid)
    if name is None:
        return
    outcome = "xfailed" if hasattr(report, "wasxfail") else report.outcome
    tally = _TALLY.setdefault(name, {})
    tally[outcome] = tally.get(outcome, 0) + 1


def pytest_terminal_summary(terminalreporter):
    """One line per backend, e.g. 'cuda-emu: 412 passed, 24 skipped' (the CUDA kernels'
    emulated run is visible in every CI log)."""
    if not _TALLY:
        return
    terminalreporter.section("tests per backend")
    for name in ALL_BACKENDS:
        counts = _TALLY.get(name)
        if counts:
            text = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
            terminalreporter.write_line(f"{name}: {text}")
