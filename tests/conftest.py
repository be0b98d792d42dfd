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


def pytest_collection_modifyitems(config, items):
    for item in items:
        callspec = getattr(item, "callspec", None)
        name = callspec.params.get("backend") if callspec else None
        if name is None:
            continue
        for (gap_backend, pattern), reason in KNOWN_GAPS.items():
            if gap_backend == name and fnmatch.fnmatch(item.name, pattern):
                item.add_marker(pytest.mark.xfail(reason=reason, strict=True))
