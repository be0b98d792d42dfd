"""The seeds' experiments: seed 003's inner product of 1e6 floats (Python loop, list
comprehension, then each backend) and seed 000's XOR (three perceptrons vs an MLP)."""

from __future__ import annotations

import pytest
from conftest import backend_params, run_case

from mlpaccel import bench

N = 10**6


def make_cases(tiny: bool = False) -> list[bench.Case]:
    n = 1000 if tiny else N
    return [bench.dot_python_case(n, "loop"), bench.dot_python_case(n, "listcomp"),
            bench.xor_case("perceptrons", epochs=10), bench.xor_case("mlp", epochs=50 if tiny
                                                                      else 10_000)]


@pytest.mark.parametrize("kind", ["loop", "listcomp"])
def test_dot_pure_python(benchmark, kind):
    run_case(benchmark, "numpy", bench.dot_python_case(N, kind))


@pytest.mark.parametrize("backend_name", backend_params())
def test_dot_backend(benchmark, backend_name):
    run_case(benchmark, backend_name, bench.dot_case(N))


@pytest.mark.parametrize("kind", ["perceptrons", "mlp"])
def test_xor_prediction(benchmark, kind):
    run_case(benchmark, "numpy", bench.xor_case(kind))
