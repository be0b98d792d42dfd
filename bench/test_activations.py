"""Elementwise (memory-bound) kernels: activation forward/backward at 1e3..1e8 elements, the
copy that measures bandwidth, and the fused dense layer and softmax-CE."""

from __future__ import annotations

import pytest
from conftest import MODE, backend_params, case_params, run_case

from mlpaccel import bench


def make_cases(tiny: bool = False) -> list[bench.Case]:
    """Activations, copy, linear_fwd and softmax_ce from the mode's suite (tiny: small)."""
    if tiny:
        return [bench.activation_case("sigmoid", 100), bench.activation_case("relu", 100, True),
                bench.copy_case(64), bench.linear_case(4, 5, 3), bench.softmax_ce_case(4, 3)]
    return [c for c in bench.suite(MODE) if c.group in ("activation", "copy", "fused")]


@pytest.mark.parametrize("case", case_params(make_cases()))
@pytest.mark.parametrize("backend_name", backend_params())
def test_elementwise(benchmark, backend_name, case):
    run_case(benchmark, backend_name, case)
