"""matmul: square n^3 and the MLP's shapes, including the transposed forms of backprop."""

from __future__ import annotations

import pytest
from conftest import MODE, backend_params, case_params, run_case

from mlpaccel import bench


def make_cases(tiny: bool = False) -> list[bench.Case]:
    """Square n = 32..1024 (to 8192 in full mode) and the MLP-shaped (M, N, K) products."""
    if tiny:
        return [bench.matmul_case(8, 8, 8), bench.matmul_case(4, 3, 5, ta=True),
                bench.matmul_case(4, 3, 5, tb=True)]
    return [c for c in bench.suite(MODE) if c.group.startswith("matmul")]


@pytest.mark.parametrize("case", case_params(make_cases()))
@pytest.mark.parametrize("backend_name", backend_params())
def test_matmul(benchmark, backend_name, case):
    run_case(benchmark, backend_name, case)
