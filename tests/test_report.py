"""The report from a synthetic results.json: tables, cells for absent backends, merging."""

from __future__ import annotations

import json

import pytest

from mlpaccel import bench, report
from mlpaccel.cli import main


def _row(backend, op, shape, status="ok", median=None, machine="m0", group=None, **extra):
    case_flops = {"matmul": 2.0 * shape[0] ** 3, "copy": 0.0}.get(op, 1e6)
    case_bytes = 8.0 * shape[0] if op == "copy" else 1e3
    row = {"machine": machine, "backend": backend, "op": op,
           "group": group or ("matmul-square" if op == "matmul" else op), "shape": list(shape),
           "dtype": "float32", "status": status, "median_s": median, "min_s": median,
           "iqr_s": 0.0, "rounds": 3, "inner": 1, "compile_s": 0.0, "flops": case_flops,
           "bytes": case_bytes, "gflops": None, "gbps": None, "notes": extra.pop("notes", ""),
           "extra": extra}
    if median:
        row["gflops"] = case_flops / median / 1e9 if case_flops else None
        row["gbps"] = case_bytes / median / 1e9
    return row


def synthetic(machine_name="laptop", gpu=False) -> dict:
    rows = [
        _row("python", "matmul", (64, 64, 64), median=2 * 64**3 / 0.05e9),     # 0.05 GFLOP/s
        _row("python", "matmul", (256, 256, 256), "skipped",
             notes="skipped: n > 128 on python"),
        _row("numpy", "matmul", (64, 64, 64), median=2 * 64**3 / 50e9),        # 50 GFLOP/s
        _row("numpy", "matmul", (256, 256, 256), median=2 * 256**3 / 200e9),   # 200 GFLOP/s
        _row("numba", "matmul", (64, 64, 64), "unavailable",
             notes="Numba is not installed: pip install mlpaccel[numba]"),
        _row("cuda", "matmul", (64, 64, 64), "unavailable",
             notes="no CUDA device found (cudaErrorNoDevice)"),
        _row("numpy", "copy", (2**20,), median=8 * 2**20 / 20e9, group="copy"),
        _row("numpy", "train_step", (256,), median=0.01, group="training",
             steps_per_epoch=235, epoch_s=2.35, samples_per_s=25600.0),
        _row("python", "dot_loop", (10**6,), median=0.08, group="seed-dot"),
        _row("numpy", "xor_mlp", (4,), median=4e-5, group="seed-xor"),
    ]
    info = {"hostname": machine_name, "cpu": "Test CPU", "cpu_count": 2, "date": "2026-11-24"}
    if gpu:
        info["gpu_device"] = "NVIDIA H100 80GB HBM3"
        rows.append(_row("cuda", "matmul", (256, 256, 256), median=2 * 256**3 / 4000e9))
    return bench.results_document(rows, {"m0": info}, "quick")


def test_ladder_table_has_a_cell_for_every_backend_and_size():
    table = report.ladder_table(synthetic())
    lines = {line.split("|")[1].strip(): line for line in table.splitlines()[2:]
             if line.startswith("|")}
    assert set(lines) == {"python", "numpy", "numba", "cuda"}
    assert "skipped: n > 128" in lines["python"]
    assert "not installed" in lines["numba"]
    assert "- numba: Numba is not installed: pip install mlpaccel[numba]" in table
    assert "no CUDA device" in lines["cuda"]
    cells = [c.strip() for c in lines["numpy"].split("|")[1:-1]]
    assert cells[1:4] == ["50", "200", "200"]          # n=64, n=256, peak
    assert cells[4] == "1×" and cells[5] == "4,000×"   # vs numpy, vs python (200 / 0.05)


def test_report_sections_and_charts(tmp_path):
    path = report.write_report(synthetic(), tmp_path)
    text = path.read_text()
    for heading in ("## Machines", "## The ladder", "## Roofline", "## Training",
                    "## The seeds' claims", "## What each rung does differently"):
        assert heading in text
    assert "Test CPU" in text
    assert "515.0 ms" in text and "80 ms" in text     # seed 003 beside the measured loop
    assert "2.35 s" in text                            # epoch extrapolated from the step
    for png in ("gflops_vs_n.png", "roofline.png", "training.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"


def test_no_backprop_count_reconstructs_seed_000():
    ops = report.no_backprop_ops()
    assert ops == float(784 * 100 + 100 * 10) ** 2 * 60_000
    hours = ops / report.SEED_CPU_OPS / 3600
    assert 100 < hours < 150                            # the seed says ~123 h


def test_merge_marks_each_machine(tmp_path):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    bench.save_results(synthetic("laptop"), a)
    bench.save_results(synthetic("gpu-box", gpu=True), b)
    merged = bench.merge_results([bench.load_results(a), bench.load_results(b)])
    assert list(merged["machines"]) == ["m0", "m1"]
    assert {r["machine"] for r in merged["rows"]} == {"m0", "m1"}
    table = report.ladder_table(merged)
    assert "numpy @m0" in table and "cuda @m1" in table
    assert "H100" in report.machines_section(merged)


def test_report_command_merges_files(tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    bench.save_results(synthetic("laptop"), a)
    bench.save_results(synthetic("gpu-box", gpu=True), b)
    out = tmp_path / "rep"
    assert main(["report", str(a), str(b), "--out", str(out)]) == 0
    assert "cuda @m1" in capsys.readouterr().out
    doc = json.loads((out / "results.json").read_text())
    assert len(doc["machines"]) == 2 and (out / "report.md").exists()


def test_load_results_rejects_foreign_files(tmp_path):
    p = tmp_path / "x.json"
    p.write_text(json.dumps({"schema": "other"}))
    with pytest.raises(ValueError, match="not an mlpaccel results file"):
        bench.load_results(p)
    p.write_text(json.dumps({"schema": bench.SCHEMA, "version": 99}))
    with pytest.raises(ValueError, match="version 99"):
        bench.load_results(p)


def test_bench_command_writes_results_and_report(tmp_path, monkeypatch):
    tiny = [bench.matmul_case(8, 8, 8), bench.copy_case(256),
            bench.train_step_case(4, layers=(6, 5, 3))]
    monkeypatch.setattr(bench, "suite", lambda mode="quick": tiny)
    out = tmp_path / "b"
    assert main(["bench", "--backends", "numpy", "python", "--out", str(out), "--budget",
                 "0.01", "--no-progress", "--no-peers"]) == 0
    doc = bench.load_results(out / "results.json")
    assert {(r["backend"], r["op"]) for r in doc["rows"]} >= {("numpy", "matmul"),
                                                             ("python", "matmul")}
    assert all(r["status"] == "ok" for r in doc["rows"])
    assert doc["machines"]["m0"]["cpu_count"] >= 1
    assert (out / "report.md").exists()


def test_roofline_bandwidth_comes_from_the_largest_copy():
    doc = synthetic()
    # a small, cache-resident copy that looks faster than memory must not set the ceiling
    doc["rows"].append(_row("numpy", "copy", (2**10,), median=8 * 2**10 / 90e9, group="copy"))
    peak, bw = report.ceilings(doc)["numpy"]
    assert peak == pytest.approx(200.0)
    assert bw == pytest.approx(20.0)


def test_peer_ratio_table_pairs_gpu_with_gpu_and_cpu_with_cpu():
    def epoch(backend, op, batch, secs, what, optimizer="sgd"):
        r = _row(backend, op, (batch,), median=secs / 100, group="training", what=what,
                 optimizer=optimizer, epoch_s=secs)
        return r

    rows = [_row("cuda", "matmul", (4096,) * 3, median=2 * 4096**3 / 40e12),
            _row("cuBLAS (CuPy)", "matmul", (4096,) * 3, median=2 * 4096**3 / 50e12),
            epoch("cuda", "train_epoch", 64, 0.05, "MLP.fit epoch (SGD)"),
            epoch("torch", "train_peer", 64, 0.1, "PyTorch CUDA graph (SGD)"),
            epoch("torch", "train_peer", 64, 0.5, "PyTorch eager (CPU) (SGD)"),
            epoch("numba", "train_epoch", 64, 0.4, "MLP.fit epoch (SGD)"),
            epoch("numpy", "train_epoch", 64, 0.8, "MLP.fit epoch (SGD)"),
            epoch("cuda", "train_epoch", 1024, 0.02, "MLP.fit epoch (Adam)", "adam")]
    doc = {"machines": {"m0": {}}, "rows": rows}
    text = report.peer_ratio_table(doc)
    assert "| cuda vs cuBLAS (CuPy) | 4096³ | 40,000 | 50,000 | 0.80 |" in text
    mlp = [_row(b, "matmul_nt", (64, 784, 256), median=2 * 64 * 784 * 256 / r,
                group="matmul-mlp") for b, r in (("cuda", 1e12), ("cuBLAS (CuPy)", 2e12))]
    for r in mlp:
        r["gflops"] = 2 * 64 * 784 * 256 / r["median_s"] / 1e9
    text2 = report.peer_ratio_table({"machines": {"m0": {}}, "rows": rows + mlp})
    assert "| cuda vs cuBLAS (CuPy) | 64×784×256 (A·Bᵀ) | 1,000 | 2,000 | 0.50 |" in text2
    lines = [ln for ln in text.splitlines() if ln.startswith("| cuda |") or
             ln.startswith("| numba |")]
    assert lines == [
        "| cuda | sgd | 64 | 50 ms | PyTorch CUDA graph (SGD) | 100 ms | 0.50 |",
        "| numba | sgd | 64 | 400 ms | PyTorch eager (CPU) (SGD) | 500 ms | 0.80 |",
        "| numba | sgd | 64 | 400 ms | numpy MLP.fit | 800 ms | 0.50 |"]  # no Adam peer: none
    assert report.peer_ratio_table({"machines": {"m0": {}}, "rows": rows[-1:]}) == ""


def test_demo_shows_the_newest_recorded_run_per_gpu(tmp_path):
    from mlpaccel.commands.demo import _recorded_gpu_docs

    paths = []
    for i, (gpu, created) in enumerate([("NVIDIA H200", "2026-12-04 12:09 UTC"),
                                        ("NVIDIA H200", "2026-12-04 14:45 UTC"),
                                        ("NVIDIA H100 80GB HBM3", "2026-11-24 22:44 UTC"),
                                        (None, "2026-12-05 00:00 UTC")]):
        doc = synthetic(gpu=gpu is not None)
        if gpu:
            doc["machines"]["m0"]["gpu_device"] = gpu
        doc["created"] = created
        p = tmp_path / f"r{i}" / "results.json"
        p.parent.mkdir()
        p.write_text(json.dumps(doc))
        paths.append(p)
    docs = _recorded_gpu_docs(paths)
    got = sorted((d["machines"]["m0"]["gpu_device"], d["created"]) for d in docs)
    assert got == [("NVIDIA H100 80GB HBM3", "2026-11-24 22:44 UTC"),
                   ("NVIDIA H200", "2026-12-04 14:45 UTC")]
