"""The fused small-MLP SGD step (kernels/fused_mlp.cu, mlpaccel/backends/cuda_fused_mlp.py).

On cuda-emu (every CI run): loss and parameters after 1 and 5 steps against a float64 NumPy
reference of the same step and against mlpaccel's own MLP on the numpy backend; every tile size
and the multi-tile (accumulating) path; one run under the checked emulator (two thread
schedules + guard-page bounds checks); unsupported shapes raise; a smoke run of
tools/fused_mlp_bench.py. On a GPU (``cuda`` marker) the same reference check.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

import mlpaccel
from mlpaccel.backends import unavailable_reason
from mlpaccel.backends.cuda_fused_mlp import FusedMLPStep, smem_bytes
from mlpaccel.params import ParamLayout

TOOLS = Path(__file__).resolve().parent.parent / "tools"


# ---------------------------------------------------------------- the float64 reference
def ref_step(p, sizes, x, t, lr):
    """(loss before the step, parameters after it) in float64: relu hidden layers, linear
    output, loss = mean_i logsumexp(z_i) - t_i . z_i, gradient (softmax - t) / M, SGD."""
    p = np.asarray(p, np.float64).copy()
    x, t = np.asarray(x, np.float64), np.asarray(t, np.float64)
    lay = ParamLayout(sizes, True)
    Ws = [(p[w:w + s[0] * s[1]].reshape(s), p[b:b + bs[0]]) for w, s, b, bs in lay.entries]
    acts, a = [x], x
    for i, (W, b) in enumerate(Ws):
        z = a @ W + b
        a = np.maximum(z, 0) if i < len(Ws) - 1 else z
        acts.append(a)
    mx = a.max(1, keepdims=True)
    e = np.exp(a - mx)
    s = e.sum(1, keepdims=True)
    loss = float(np.mean(mx[:, 0] + np.log(s[:, 0]) - (t * a).sum(1)))
    d = (e / s - t) / len(x)
    g = np.zeros_like(p)
    for i in range(len(Ws) - 1, -1, -1):
        w_off, shape, b_off, bs = lay.entries[i]
        g[w_off:w_off + shape[0] * shape[1]] = (acts[i].T @ d).ravel()
        g[b_off:b_off + bs[0]] = d.sum(0)
        if i:
            d = (d @ Ws[i][0].T) * (acts[i] > 0)
    return loss, p - lr * g


def _problem(sizes, m, seed):
    rng = np.random.default_rng(seed)
    lay = ParamLayout(sizes, True)
    # He-like scale keeps the activations O(1) at every width
    weights = [(rng.standard_normal(s) * np.sqrt(2.0 / s[0]), rng.standard_normal(bs) * 0.1)
               for _, s, _, bs in lay.entries]
    p = lay.flatten(weights, np.float64).astype(np.float32)
    x = rng.standard_normal((m, sizes[0])).astype(np.float32)
    t = np.eye(sizes[-1], dtype=np.float32)[rng.integers(0, sizes[-1], m)]
    return p, x, t


def _rel(a, b):
    return float(np.abs(np.asarray(a, np.float64) - b).max() / max(np.abs(b).max(), 1e-30))


def _run_and_compare(B, sizes, m, steps=(1, 5), lr=0.05, seed=0, tol=2e-5, **kw):
    p, x, t = _problem(sizes, m, seed)
    st = FusedMLPStep(B, sizes, m, **kw)
    P, X, T = B.asarray(p, np.float32), B.asarray(x, np.float32), B.asarray(t, np.float32)
    ref_p = p.astype(np.float64)
    for k in range(1, max(steps) + 1):
        loss = float(B.to_numpy(st.step(P, X, T, lr)))
        ref_loss, ref_p = ref_step(ref_p, sizes, x, t, lr)
        if k in steps:
            assert abs(loss - ref_loss) <= tol * max(1.0, abs(ref_loss)), (sizes, m, k)
            assert _rel(B.to_numpy(P), ref_p) <= tol * k, (sizes, m, k)
    return st, p, x, t, B.to_numpy(P)


SHAPES = [  # (layer sizes, batch): widths 1..128, non-multiples of 32, batches 1, 7, 64, 300
    ([2, 16, 16, 2], 7),
    ([2, 16, 16, 2], 300),
    ([1, 1, 2], 1),
    ([3, 5], 64),                      # no hidden layer
    ([5, 33, 100, 3], 64),
    ([64, 64, 64, 10], 7),
    ([37, 128, 96, 128, 10], 7),
    ([128, 128, 128, 10], 1),
]


@pytest.mark.emu
@pytest.mark.parametrize("sizes,m", SHAPES, ids=[f"{'-'.join(map(str, s))}_b{m}"
                                                 for s, m in SHAPES])
def test_fused_step_matches_float64_reference_after_1_and_5_steps(emu, sizes, m):
    _run_and_compare(emu, sizes, m)


@pytest.mark.emu
@pytest.mark.parametrize("tm", [8, 16, 32])
@pytest.mark.parametrize("blocks", [1, 3, None], ids=["1block", "3blocks", "auto"])
def test_every_tile_size_and_the_multi_tile_accumulation(emu, tm, blocks):
    """Blocks that take several tiles accumulate into their partial slot; a partial last tile
    (rows past the batch) must contribute nothing."""
    st, *_ = _run_and_compare(emu, [6, 20, 9, 4], 45, steps=(1, 2), rows_per_block=tm,
                              max_blocks=blocks)
    assert st.rows_per_block == tm
    if blocks is not None:
        assert st.grid == min(blocks, -(-45 // tm))


@pytest.mark.emu
def test_matches_mlp_on_the_numpy_backend(emu):
    """Five fused steps = five ``MLP.train_step`` SGD steps of the regular trainer (numpy
    backend, same initial weights, same batch): losses and weights."""
    sizes, m, lr = [10, 24, 17, 4], 64, 0.1
    p, x, t = _problem(sizes, m, 3)
    lay = ParamLayout(sizes, True)
    model = mlpaccel.MLP(sizes, activation="relu", loss="cross_entropy", backend="numpy",
                         init=lay.unflatten(p.astype(np.float64)))
    st = FusedMLPStep(emu, sizes, m)
    P, X, T = emu.asarray(p, np.float32), emu.asarray(x, np.float32), emu.asarray(t, np.float32)
    for _ in range(5):
        want = model.train_step(x, t, optimizer="sgd", learning_rate=lr)
        got = float(emu.to_numpy(st.step(P, X, T, lr)))
        assert got == pytest.approx(want, rel=1e-5)
    flat = lay.flatten(model.get_weights(), np.float64)
    assert _rel(emu.to_numpy(P), flat) <= 1e-5


@pytest.mark.emu
def test_for_model_trains_the_models_own_parameters_and_device_lr(emu):
    sizes, m = [4, 12, 3], 16
    model = mlpaccel.MLP(sizes, loss="cross_entropy", backend=emu, random_state=1)
    p0 = emu.to_numpy(model._params).copy()
    _, x, t = _problem(sizes, m, 4)
    st = FusedMLPStep.for_model(model, m)
    lr = emu.asarray(np.array([0.2], np.float32), np.float32)
    loss = st.step(model._params, emu.asarray(x, np.float32), emu.asarray(t, np.float32), lr)
    ref_loss, ref_p = ref_step(p0, sizes, x, t, 0.2)
    assert float(emu.to_numpy(loss)) == pytest.approx(ref_loss, rel=1e-5)
    assert _rel(emu.to_numpy(model._params), ref_p) <= 1e-5
    tanh = mlpaccel.MLP(sizes, activation="tanh", loss="cross_entropy", backend=emu)
    with pytest.raises(ValueError, match="relu only"):
        FusedMLPStep.for_model(tanh, m)


@pytest.mark.emu
def test_is_deterministic(emu):
    """The same step twice from the same weights gives bit-identical results (no atomics)."""
    sizes, m = [8, 40, 40, 5], 100
    p, x, t = _problem(sizes, m, 5)
    st = FusedMLPStep(emu, sizes, m, rows_per_block=8, max_blocks=4)
    outs = []
    for _ in range(2):
        P = emu.asarray(p, np.float32)
        loss = float(emu.to_numpy(st.step(P, emu.asarray(x, np.float32),
                                          emu.asarray(t, np.float32), 0.1)))
        outs.append((loss, emu.to_numpy(P)))
    assert outs[0][0] == outs[1][0]
    np.testing.assert_array_equal(outs[0][1], outs[1][1])


@pytest.mark.emu
def test_race_free_and_in_bounds_under_the_checked_emulator(checked_emu):
    """Both thread orders between barriers must give the same outputs (a missing
    __syncthreads() would differ) and guard pages catch any out-of-bounds access; the shape
    covers several tiles per block, a partial tile and widths that are not multiples of 32."""
    info = checked_emu.driver.info()
    assert info["check_bounds"] is True and "reverse" in info["schedules"]
    _run_and_compare(checked_emu, [7, 33, 20, 3], 21, steps=(1, 2), rows_per_block=8,
                     max_blocks=2)


@pytest.mark.emu
@pytest.mark.parametrize("sizes,match", [
    ([129, 16, 2], "widths <= 128"),
    ([16, 256, 10], "widths <= 128"),
    ([4] * 18 + [2], "<= 16 layers"),
    ([4, 8, 1], ">= 2 output units"),
    ([4, 0, 2], "positive integers"),
    ([4], "positive integers"),
])
def test_unsupported_shapes_raise_and_say_what_to_use(emu, sizes, match):
    with pytest.raises(ValueError, match=match) as exc:
        FusedMLPStep(emu, sizes, 8)
    if "128" in match or "layers" in match:
        assert "mlpaccel.MLP" in str(exc.value)


@pytest.mark.emu
def test_bad_arguments_raise(emu):
    with pytest.raises(TypeError, match="cuda or cuda-emu"):
        FusedMLPStep(mlpaccel.get_backend("numpy"), [2, 4, 2], 8)
    with pytest.raises(ValueError, match="batch"):
        FusedMLPStep(emu, [2, 4, 2], 0)
    with pytest.raises(ValueError, match="rows_per_block"):
        FusedMLPStep(emu, [2, 4, 2], 8, rows_per_block=12)
    st = FusedMLPStep(emu, [2, 4, 2], 8)
    P = emu.zeros((st.n_params,), np.float32)
    x, t = emu.zeros((8, 2), np.float32), emu.zeros((8, 2), np.float32)
    with pytest.raises(ValueError, match="shape"):
        st.step(P, emu.zeros((7, 2), np.float32), t, 0.1)
    with pytest.raises(ValueError, match="float32"):
        st.step(emu.zeros((st.n_params,), np.float64), x, t, 0.1)
    with pytest.raises(TypeError, match="device array"):
        st.step(P, [[0.0, 0.0]] * 8, t, 0.1)


def test_shared_memory_formula():
    # 128-128-128-128-10 at 32 rows: acts 4 x 32 x 129, deltas 2 x 32 x 129, Ws 129 x 129
    assert smem_bytes([128, 128, 128, 128, 10], 32) == 4 * (4 * 32 * 129 + 2 * 32 * 129
                                                            + 129 * 129)
    assert smem_bytes([3, 5], 8) == 4 * (8 * 5 + 2 * 8 * 5 + 4 * 5)


@pytest.mark.emu
def test_bench_tool_smoke(emu, tmp_path):
    sys.path.insert(0, str(TOOLS))
    try:
        import fused_mlp_bench
    finally:
        sys.path.remove(str(TOOLS))
    out = tmp_path / "bench.json"
    rc = fused_mlp_bench.main(["--backend", "cuda-emu", "--widths", "16", "--batches", "8",
                               "--reps", "1", "--tries", "1", "--json", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())["results"]
    assert len(res) == 1 and res[0]["check_ok"] and res[0]["fused"]["launches"] == 2
    assert res[0]["fused_us"] > 0 and res[0]["regular_us"] > 0


# ---------------------------------------------------------------- on a real GPU
@pytest.mark.cuda
@pytest.mark.parametrize("sizes,m", [([2, 16, 16, 2], 300), ([64, 64, 64, 10], 1000),
                                     ([128, 128, 128, 128, 10], 8192), ([5, 33, 100, 3], 7)])
def test_fused_step_on_the_gpu_matches_the_reference(sizes, m):
    reason = unavailable_reason("cuda")
    if reason is not None:
        pytest.skip(f"cuda unavailable: {reason}")
    B = mlpaccel.get_backend("cuda")
    _run_and_compare(B, sizes, m, tol=1e-4)
