"""Every benchmark body runs once at tiny sizes (so bench/ cannot rot), and the timer is honest."""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mlpaccel import bench, get_backend
from mlpaccel.backends import available_backends

BENCH_DIR = Path(__file__).resolve().parent.parent / "bench"
BENCH_FILES = ["test_matmul", "test_activations", "test_training", "test_seed_experiments"]
FAST = [b for b in available_backends() if b != "cuda-emu"]  # emu compiles: covered elsewhere


def _load(name: str):
    """Import bench/<name>.py (and bench/conftest.py as ``conftest``, which they import)."""
    if str(BENCH_DIR) not in sys.path:
        sys.path.insert(0, str(BENCH_DIR))
    key = f"_mlpaccel_bench_{name}"
    if key in sys.modules:
        return sys.modules[key]
    spec = importlib.util.spec_from_file_location(key, BENCH_DIR / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    saved = sys.modules.get("conftest")
    cspec = importlib.util.spec_from_file_location("conftest", BENCH_DIR / "conftest.py")
    conf = importlib.util.module_from_spec(cspec)
    cspec.loader.exec_module(conf)
    sys.modules["conftest"] = conf
    try:
        spec.loader.exec_module(mod)
    finally:
        if saved is not None:
            sys.modules["conftest"] = saved
        else:
            sys.modules.pop("conftest", None)
    sys.modules[key] = mod
    return mod


@pytest.mark.parametrize("module", BENCH_FILES)
@pytest.mark.parametrize("backend_name", FAST)
def test_bench_bodies_run_at_tiny_sizes(module, backend_name):
    mod = _load(module)
    B = get_backend(backend_name)
    cases = mod.make_cases(tiny=True)
    assert cases
    for case in cases:
        result = case.setup(B)()
        B.synchronize()
        if case.op.startswith("matmul"):  # the body computes the right thing, not just runs
            m, n, _ = case.shape
            assert B.to_numpy(result).shape == (m, n)


def test_matmul_case_computes_the_product():
    case = bench.matmul_case(5, 4, 3, ta=True)
    B = get_backend("numpy")
    out = case.setup(B)()
    a = bench._rand((3, 5), "float32", 1)
    b = bench._rand((3, 4), "float32", 2)
    np.testing.assert_allclose(out, a.T @ b, rtol=1e-5)
    assert case.flops == 2 * 5 * 4 * 3


def test_epoch_case_runs_one_epoch():
    mod = _load("test_training")
    case = mod.epoch_case(batch=8, samples=32, layers=(6, 5, 3))
    case.setup(get_backend("numpy"))()
    assert case.extra["steps_per_epoch"] == 4


def test_measure_syncs_every_round_and_separates_compile_time():
    calls = {"fn": 0, "sync": 0}

    def fn():
        calls["fn"] += 1
        time.sleep(0.05 if calls["fn"] == 1 else 0.003)  # the first call "compiles"

    def sync():
        calls["sync"] += 1

    t = bench.measure(fn, sync, budget_s=0.05, min_rounds=3)
    assert calls["sync"] == t.rounds + 2  # cold call, one warm-up, then one per round
    assert t.inner == 1
    assert 0.002 < t.median_s < 0.03
    assert t.compile_s > 0.03
    assert t.min_s <= t.median_s


def test_run_cases_marks_absent_and_too_big(monkeypatch):
    real = bench.unavailable_reason
    monkeypatch.setattr(bench, "unavailable_reason",
                        lambda n: "No module named 'numba'; pip install mlpaccel[numba]"
                        if n == "numba" else real(n))
    cases = [bench.matmul_case(8, 8, 8), bench.matmul_case(256, 256, 256)]
    rows = bench.run_cases(cases, ["python", "numba"], budget_s=0.01)
    by = {(r["backend"], r["shape"][0]): r for r in rows}
    assert by[("python", 8)]["status"] == "ok" and by[("python", 8)]["gflops"] > 0
    assert by[("python", 256)]["status"] == "skipped"
    assert "n > 128" in by[("python", 256)]["notes"]
    assert by[("numba", 8)]["status"] == "unavailable"
    assert len(rows) == 4  # nothing vanishes


def test_quick_suite_has_the_numba_target_epochs_and_skips_them_on_the_slow_rungs():
    epochs = [c for c in bench.suite("quick") if c.op == "train_epoch"]
    assert sorted(c.shape[0] for c in epochs) == [64, 256]
    rows = bench.run_cases(epochs[:1], ["python", "cuda-emu"], budget_s=0.01)
    assert [r["status"] for r in rows] == ["skipped", "skipped"]
    assert all("samples > 5,000" in r["notes"] for r in rows)


def test_run_cases_skips_what_would_exceed_the_cap():
    cases = [bench.matmul_case(16, 16, 16), bench.matmul_case(128, 128, 128)]
    rows = bench.run_cases(cases, ["python"], budget_s=0.01, cap_s=1e-4)
    assert rows[0]["status"] == "ok"
    assert rows[1]["status"] == "skipped" and "> 0.0001 s" in rows[1]["notes"]


def test_demo_training_run_learns():
    data = bench.load_demo_data(n_train=512, n_test=256)
    row = bench.train_run("numpy", data, epochs=3, batch=32, lr=0.01)
    assert row["status"] == "ok"
    assert row["extra"]["accuracy"] > 0.6  # better than chance on either dataset
    assert row["extra"]["steps"] == 3 * (512 // 32)


def test_mlp_gemm_shapes_cover_every_batch_and_form():
    shapes = bench.mlp_gemm_shapes(full=True)
    assert len(shapes) == 3 * len(bench.MLP_GEMM_BATCHES)
    for b in bench.MLP_GEMM_BATCHES:
        assert {(b, 256, 784, False, False), (784, 256, b, True, False),
                (b, 784, 256, False, True)} <= set(shapes)
    cases = bench.mlp_matmul_cases(full=False)
    assert {c.op for c in cases} == {"matmul", "matmul_tn", "matmul_nt"}
    assert all(c.group == "matmul-mlp" for c in cases)
    assert {c.shape for c in cases} <= {c.shape for c in bench.suite("quick")}


def test_cublas_peer_rows_time_square_and_mlp_shapes(monkeypatch):
    """cublas_rows against a stand-in CuPy (NumPy underneath): every square size and MLP
    shape gets a 'cuBLAS (CuPy)' row whose product is really op(A) @ op(B)."""
    import types

    from mlpaccel import peers

    products = []

    def matmul(a, b, out):
        np.matmul(a, b, out=out)
        products.append((a.shape, b.shape, out))
        return out

    runtime = types.SimpleNamespace(getDeviceCount=lambda: 1, deviceSynchronize=lambda: None)
    fake = types.SimpleNamespace(asarray=np.asarray, empty=np.empty, float32=np.float32,
                                 matmul=matmul, cuda=types.SimpleNamespace(runtime=runtime))
    monkeypatch.setitem(sys.modules, "cupy", fake)
    rows = peers.cublas_rows(sizes=(8,), budget_s=0.001, mlp_full=False)
    assert [r["backend"] for r in rows] == ["cuBLAS (CuPy)"] * 6
    assert rows[0]["group"] == "matmul-square" and rows[0]["shape"] == [8, 8, 8]
    mlp = {(r["op"], tuple(r["shape"])) for r in rows[1:]}
    assert mlp == {(c.op, c.shape) for c in bench.mlp_matmul_cases(full=False)}
    assert all(r["status"] == "ok" and r["gflops"] > 0 for r in rows)
    # the A^T B case: A stored (K, M) = (1024, 784) and read transposed
    tn = [p for p in products if p[2].shape == (784, 256)]
    assert tn and tn[0][0] == (784, 1024) and tn[0][1] == (1024, 256)


def test_torch_peer_epoch_trains_every_sample_as_fit_does(monkeypatch):
    """The PyTorch peer's epoch covers all samples, the short last batch included (MLP.fit's
    epoch does), so the epoch ratios compare the same work; its row says so."""
    torch = pytest.importorskip("torch")
    from mlpaccel import peers

    sizes = []
    real = torch.nn.CrossEntropyLoss

    class Counting(real):
        def forward(self, z, y):
            sizes.append(int(z.shape[0]))
            return super().forward(z, y)

    monkeypatch.setattr(torch.nn, "CrossEntropyLoss", Counting)
    x, y = torch.rand(1000, 784), torch.randint(0, 10, (1000,))
    peers._torch_epoch(torch, x, y, (784, 16, 10), 256, False, 1)
    assert sizes == [256, 256, 256, 232]
    rows = peers.torch_rows(batches=(256,), samples=1000, epochs=1, adam_batches=(),
                            layers=(784, 16, 10))
    assert rows and rows[0]["extra"]["steps_per_epoch"] == 4
    assert rows[0]["extra"]["samples"] == 1000
