"""One SGD step of the MNIST-shaped MLP (784-256-256-10) at several batch sizes, and one whole
epoch (60,000 x 784 on the device, shuffled mini-batches) where it takes under a minute."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import MODE, backend_params, case_params, run_case

from mlpaccel import bench


def make_cases(tiny: bool = False) -> list[bench.Case]:
    if tiny:
        return [bench.train_step_case(4, layers=(6, 5, 3))]
    return [c for c in bench.suite(MODE) if c.group == "training"]


@pytest.mark.parametrize("case", case_params(make_cases()))
@pytest.mark.parametrize("backend_name", backend_params())
def test_train_step(benchmark, backend_name, case):
    run_case(benchmark, backend_name, case)


def epoch_case(batch: int, samples: int = bench.MNIST_SAMPLES,
               layers=bench.MNIST_LAYERS) -> bench.Case:
    """A whole epoch: ``samples`` rows on the device, shuffled batches cut with take_rows."""

    def setup(B):
        step, _ = bench.make_step(B, batch, layers)
        rng = np.random.default_rng(0)
        x = B.asarray(rng.random((samples, layers[0]), dtype=np.float32))
        y = rng.integers(0, layers[-1], samples)

        def epoch():
            order = rng.permutation(samples)
            for i in range(0, samples - batch + 1, batch):
                idx = order[i:i + batch]
                step(B.take_rows(x, idx), y[idx])
        return epoch

    steps = samples // batch
    return bench.Case("train_epoch", "training", (batch,),
                      steps * bench.mlp_step_flops(batch, layers), 0.0, setup,
                      extra={"steps_per_epoch": steps})


@pytest.mark.parametrize("batch", [64, 256, 1024])
@pytest.mark.parametrize("backend_name", [b for b in bench.backend_names()
                                          if b not in ("python", "cuda-emu")])
def test_epoch(benchmark, backend_name, batch):
    run_case(benchmark, backend_name, epoch_case(batch))
