"""The fused output layer (kernels/head.cu, mlpaccel/backends/cuda_head.py).

The conformance suite (test_conformance.py ``output_layer``) checks the numbers on every
backend; here, on cuda-emu: that the kernel (not the composed ops) runs where it should and
only there, that every grid size gives the same result up to rounding and the same grid gives
bit-identical reruns, the checked emulator (thread schedules, guard pages) over the multi-block
path, the trainer using it (fit equals the numpy backend's fit), and bad arguments. On a GPU
(``cuda`` marker): the MNIST-shaped layer at batch 64 / 8192 against float64.
"""

from __future__ import annotations

import numpy as np
import pytest

import mlpaccel
from mlpaccel.backends import cuda_head, unavailable_reason
from mlpaccel.backends import reference as ref

from .test_conformance import _output_layer_reference


@pytest.fixture
def launches(monkeypatch):
    """The plans ``cuda_head.launch`` ran during the test."""
    seen = []
    real = cuda_head.launch

    def spy(backend, plan, *args):
        seen.append(plan)
        return real(backend, plan, *args)

    monkeypatch.setattr(cuda_head, "launch", spy)
    return seen


def _problem(m, k, c, dtype=np.float32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((m, k)).astype(dtype)
    W = (0.5 * rng.standard_normal((k, c))).astype(dtype)
    b = rng.standard_normal(c).astype(dtype)
    t = np.eye(c, dtype=dtype)[rng.integers(0, c, m)]
    zb = rng.standard_normal((m, k)).astype(dtype)
    return x, W, b, t, zb


def _run(B, x, W, b, t, zb, below="relu"):
    """(E, grad_x, grad_W, grad_b, the layer below's bias gradient) as host arrays."""
    ab = ref.activation(below, zb.astype(np.float64)).astype(zb.dtype)
    gbb = B.zeros((x.shape[1],), x.dtype)
    E, gx, gW, gb = B.output_layer_grad(B.asarray(x), B.asarray(W), B.asarray(b), B.asarray(t),
                                        below=(below, B.asarray(zb), B.asarray(ab)),
                                        out_grad_b_below=gbb)
    return [B.to_numpy(v) for v in (E, gx, gW, gb, gbb)]


def _reference(x, W, b, t, below, zb):
    E, gx, gW, gb = _output_layer_reference(
        x, W, b, t, below, zb, ref.activation(below, zb.astype(np.float64)), {})
    return E, gx, gW, gb, gx.sum(axis=0)


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


@pytest.mark.emu
def test_the_epoch_loss_sum_needs_no_extra_launch(emu, monkeypatch):
    """loss_acc = (acc, w): acc += w * loss in the kernel's last block - the only launch -
    with the same bits as the axpy it replaces."""
    x, W, b, t, zb = _problem(40, 9, 10)
    seen = []
    real = emu.driver.launch
    monkeypatch.setattr(emu.driver, "launch", lambda *a, **k: (seen.append(a[1]), real(*a, **k)))
    acc = emu.asarray(np.array(0.75, np.float32))
    E, *_ = emu.output_layer_grad(emu.asarray(x), emu.asarray(W), emu.asarray(b),
                                  emu.asarray(t), need_grad_x=False, loss_acc=(acc, 0.5))
    assert seen == ["xent_head_c16_f32"]
    want = np.float32(0.75) + np.float32(0.5) * np.float32(emu.to_numpy(E))
    assert emu.to_numpy(acc).item() == want
    with pytest.raises(ValueError, match="loss_acc"):
        emu.output_layer_grad(emu.asarray(x), emu.asarray(W), emu.asarray(b), emu.asarray(t),
                              loss_acc=(emu.asarray(np.zeros(2, np.float32)), 1.0))


@pytest.mark.emu
def test_the_kernel_runs_for_softmax_ce_up_to_32_classes(emu, launches):
    for c, kernel in ((2, "xent_head_c16_f32"), (16, "xent_head_c16_f32"),
                      (17, "xent_head_c32_f32"), (32, "xent_head_c32_f32")):
        _run(emu, *_problem(9, 5, c))
        assert launches[-1].kernel == kernel and launches[-1].C == c
    x, W, b, t, zb = _problem(9, 5, 10, np.float64)
    _run(emu, x, W, b, t, zb)
    assert launches[-1].kernel == "xent_head_c16_f64"
    assert "on:" in emu.info()["fused_head"]


@pytest.mark.emu
def test_the_composed_ops_run_everywhere_else(emu, launches):
    x, W, b, t, zb = _problem(9, 5, 33)
    _run(emu, x, W, b, t, zb)                                    # 33 classes
    x, W, b, t, zb = _problem(9, 5, 10)
    emu.output_layer_grad(emu.asarray(x), emu.asarray(W), emu.asarray(b),
                          emu.asarray(t.argmax(1).astype(np.int32)))  # class ids
    emu.output_layer_grad(emu.asarray(x), emu.asarray(W), emu.asarray(b), emu.asarray(t),
                          "mse")                                 # another loss
    emu.output_layer_grad(emu.asarray(x), emu.asarray(W), emu.asarray(b), emu.asarray(t),
                          activation="sigmoid")                  # an activated output
    off = mlpaccel.get_backend("cuda-emu", fused_head=False)
    _run(off, x, W, b, t, zb)
    assert off.info()["fused_head"] == "off"
    assert launches == []
    big = cuda_head.plan(64, 4096, 32, np.float32)               # W + its gradient > smem
    assert big is None
    m = cuda_head.MAX_FUSED_ROWS + 1                             # a batch the ops do faster
    _run(emu, *_problem(m, 5, 10))
    assert launches == []
    _run(mlpaccel.get_backend("cuda-emu", head_blocks=70), *_problem(m, 5, 10))
    assert [p.M for p in launches] == [m]                        # unless the grid is forced


@pytest.mark.emu
def test_every_grid_size_agrees_and_each_is_deterministic(emu):
    """150 rows = 19 chunks of 8: one block (direct write), 2..19 blocks (last-block sum of
    the partials, uneven chunks per block); grids beyond the chunk count are clamped."""
    x, W, b, t, zb = _problem(150, 37, 10)
    want = _reference(x, W, b, t, "relu", zb)
    for g in (1, 2, 3, 7, 19, 50):
        B = mlpaccel.get_backend("cuda-emu", head_blocks=g)
        first = _run(B, x, W, b, t, zb)
        again = _run(B, x, W, b, t, zb)
        for u, v in zip(first, again):
            np.testing.assert_array_equal(u, v)
        for got, exp in zip(first, want):
            assert _rel(got, exp) <= 2e-6, g
    assert cuda_head.plan(150, 37, 10, np.float32, blocks=50).blocks == 19


@pytest.mark.emu
def test_the_last_blocks_sum_covers_more_partials_than_one_pass(checked_emu):
    """S = K C + C + 1 + K partial values per block; the last block's threads sum HEAD_RB = 16
    of them each per pass (4,096 per pass): K = 160, C = 30 gives S = 4,991, two passes, the
    second one partial (lanes past S re-read element S-1 and drop it). Checked emulator:
    forward/reverse orders and guard pages around the partials."""
    from mlpaccel.backends.cuda import CudaEmuBackend

    class Checked(type(checked_emu)):
        pass

    x, W, b, t, zb = _problem(40, 160, 30)
    want = _reference(x, W, b, t, "relu", zb)
    for g in (2, 5):
        B = Checked(head_blocks=g)
        assert isinstance(B, CudaEmuBackend)
        got = _run(B, x, W, b, t, zb)
        for u, v in zip(got, want):
            assert _rel(u, v) <= 2e-6, g
        np.testing.assert_array_equal(got[2], _run(B, x, W, b, t, zb)[2])


@pytest.mark.emu
def test_race_free_and_in_bounds_under_the_checked_emulator(checked_emu):
    """Forward and reverse thread orders give the same outputs (a missing barrier between the
    phases would not) and guard pages catch out-of-bounds reads/writes: 3 blocks over 5 chunks
    (a partial last chunk), K not a multiple of 32, the two class-count variants."""
    from mlpaccel.backends.cuda import CudaEmuBackend

    class Checked(type(checked_emu)):
        pass

    B = Checked(head_blocks=3)
    assert isinstance(B, CudaEmuBackend) and B.driver.info()["check_bounds"] is True
    for c in (10, 23):
        x, W, b, t, zb = _problem(37, 45, c)
        got = _run(B, x, W, b, t, zb, below="sigmoid")
        want = _reference(x, W, b, t, "sigmoid", zb)
        assert len(got) == len(want) == 5
        for u, v in zip(got, want):
            assert _rel(u, v) <= 2e-6


@pytest.mark.emu
def test_fit_runs_the_fused_output_layer_and_matches_numpy(emu, launches):
    rng = np.random.default_rng(3)
    X = rng.standard_normal((70, 12)).astype(np.float32)
    y = rng.integers(0, 4, 70)
    models = [mlpaccel.MLP([12, 16, 4], loss="cross_entropy", backend=be, random_state=0)
              for be in (emu, mlpaccel.get_backend("numpy"))]
    hist = [m.fit(X, y, epochs=2, batch_size=32, optimizer="momentum", learning_rate=0.1,
                  shuffle=False) for m in models]
    assert launches and {p.M for p in launches} == {32, 6}  # two full batches + the rest
    for u, v in zip(models[0].get_weights(), models[1].get_weights()):
        for uu, vv in zip(u, v):  # (W, b) per layer
            np.testing.assert_allclose(uu, vv, rtol=2e-5, atol=2e-6)
    # the epoch losses, summed inside the kernel (loss_acc) on cuda-emu, by axpy on numpy
    np.testing.assert_allclose(models[0].history["loss"], models[1].history["loss"], rtol=1e-5)
    assert len(models[0].history["loss"]) == 2 and hist[0] is models[0]


@pytest.mark.emu
def test_bad_arguments_raise_and_leave_the_outputs_alone(emu):
    x, W, b, t, zb = _problem(8, 5, 3)
    gW = emu.asarray(np.full((5, 3), 7.0, np.float32))
    with pytest.raises(ValueError, match="b has shape"):
        emu.output_layer_grad(emu.asarray(x), emu.asarray(W), emu.asarray(b[:2]),
                              emu.asarray(t), out_grad_W=gW)
    with pytest.raises(ValueError, match="below's z has shape"):
        emu.output_layer_grad(emu.asarray(x), emu.asarray(W), emu.asarray(b), emu.asarray(t),
                              out_grad_W=gW, below=("relu", emu.asarray(zb[:, :4]),
                                                    emu.asarray(zb[:, :4])))
    with pytest.raises(ValueError, match="do not chain|shape"):
        emu.output_layer_grad(emu.asarray(x[:, :4]), emu.asarray(W), emu.asarray(b),
                              emu.asarray(t), out_grad_W=gW)
    np.testing.assert_array_equal(emu.to_numpy(gW), 7.0)


@pytest.mark.emu
def test_a_measured_choice_in_the_tuning_table_decides(emu, launches, monkeypatch):
    """``tools/head_bench.py --save`` writes per batch bucket the fastest grid, or 0 when the
    composed ops won; the backend follows it within one octave and falls back to its rule."""
    from mlpaccel.backends import cuda_gemm

    key = cuda_head.table_key
    table = {key(np.float32, 5, 10, 64): {"blocks": 3},
             key(np.float32, 5, 10, 1024): {"blocks": 0},
             "fp32:nn:64x64x64": {"config": "64x64x16", "split_k": 1}}
    monkeypatch.setattr(cuda_gemm, "load_table", lambda device, path=None: table)
    d = emu.driver
    assert cuda_head.tuned_blocks(d, 64, 5, 10, np.float32) == 3          # the bucket itself
    assert cuda_head.tuned_blocks(d, 100, 5, 10, np.float32) == \
        cuda_head.default_blocks(100, 5, 10)                                # one octave away
    assert cuda_head.tuned_blocks(d, 600, 5, 10, np.float32) == 0          # near 1024: composed
    assert cuda_head.tuned_blocks(d, 200, 5, 10, np.float32) is None       # too far: the rule
    assert cuda_head.tuned_blocks(d, 64, 6, 10, np.float32) is None        # another layer
    assert cuda_head.tuned_blocks(d, 64, 5, 10, np.float64) is None        # another dtype
    _run(emu, *_problem(64, 5, 10))
    assert [(p.M, p.blocks) for p in launches] == [(64, 3)]
    _run(emu, *_problem(600, 5, 10))                                        # composed: no launch
    assert len(launches) == 1


def test_shared_memory_and_grid_rules():
    assert cuda_head.smem_bytes(256, 10, 16, 4) == (2 * 2560 + 256 + 8 * 256 + 8 * 16 + 16 + 33) * 4
    # the H200 sweep's best grids: 8 (b64), 32 (b256), 64 (b1024), 128 (b8192)
    assert cuda_head.default_blocks(64, 256, 10) == 8          # one chunk per block
    assert 24 <= cuda_head.default_blocks(256, 256, 10) <= 32
    assert 48 <= cuda_head.default_blocks(1024, 256, 10) <= 64
    assert cuda_head.default_blocks(1, 256, 10) == 1
    assert cuda_head.default_blocks(64, 784, 32) < 8           # bigger partials: fewer blocks
    assert cuda_head.plan(5, 4, 33, np.float32) is None
    assert cuda_head.plan(5, 4, 3, np.int32) is None


# ---------------------------------------------------------------- on a real GPU
@pytest.mark.cuda
@pytest.mark.parametrize("m", [64, 1000, 8192])
def test_the_mnist_output_layer_on_the_gpu(m):
    reason = unavailable_reason("cuda")
    if reason is not None:
        pytest.skip(f"cuda unavailable: {reason}")
    # the kernel itself at every size (a forced grid: by default b > 512 composes the ops)
    B = mlpaccel.get_backend("cuda", head_blocks=cuda_head.default_blocks(m, 256, 10))
    x, W, b, t, zb = _problem(m, 256, 10, seed=m)
    got = _run(B, x, W, b, t, zb)
    want = _reference(x, W, b, t, "relu", zb)
    for u, v in zip(got, want):
        assert _rel(u, v) <= 1e-5
    for u, v in zip(got, _run(B, x, W, b, t, zb)):
        np.testing.assert_array_equal(u, v)


@pytest.mark.emu
def test_head_bench_tool_smoke(emu, tmp_path, monkeypatch):
    """tools/head_bench.py on cuda-emu: the table, the check against the composed ops, and
    --save's entries (written to a temporary table here)."""
    import importlib
    import json
    import sys
    from pathlib import Path

    from mlpaccel.backends import cuda_gemm

    tools = Path(__file__).resolve().parent.parent / "tools"
    monkeypatch.syspath_prepend(str(tools))
    saved = {}

    def fake_save(driver, entries, path=None):
        saved.update(entries)
        return tmp_path / "table.json"
    monkeypatch.setattr(cuda_gemm, "save_table", fake_save)
    hb = importlib.import_module("head_bench")
    out = tmp_path / "hb.json"
    assert hb.main(["--backend", "cuda-emu", "--batches", "16", "--reps", "1",
                    "--gather-rows", "40", "--json", str(out), "--save"]) == 0
    doc = json.loads(out.read_text())
    row = doc["head_us"]["16"]
    assert row["max rel. difference fused vs composed"] < 1e-5
    assert {"fused, grid 1", "fused, grid 2"} <= set(row) and doc["gather"]["correct"]
    (key, entry), = saved.items()
    assert key == cuda_head.table_key(np.float32, 256, 10, 16) and entry["blocks"] in (0, 1, 2)
    sys.modules.pop("head_bench", None)
