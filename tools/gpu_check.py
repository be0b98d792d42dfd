"""One call on a GPU machine: tests, emulator cross-check, sanitizers, GEMM autotune, benchmarks.

    make gpu-check                       # = PYTHONPATH=. python3 tools/gpu_check.py --out DIR
    PYTHONPATH=. python3 tools/gpu_check.py --out DIR --steps tests,compare

Steps (each in a subprocess with its own time limit, inside one overall budget; a failure or a
timeout never stops the later steps):

  tests      pytest of every cuda-marked test (the conformance suite on cuda included)
  compare    cuda vs cuda-emu vs the float64 reference on the same inputs, every op
  autotune   cuda_gemm.autotune over the benchmark and MLP shapes -> mlpaccel/tuning/ (+ copy)
  head       tools/head_bench.py --save: fused output layer vs composed ops per batch and
             grid -> the same tuning table (before bench, whose epochs then use it)
  bench      python3 -m mlpaccel bench --full --backends cuda --out DIR/bench (+ the peers)
  mnist      tools/mnist_fast.py recipes: test accuracy and training wall time on the GPU
  profile    tools/step_profile.py: device time of each op of a training step (b64/1024/8192)
  breakdown  tools/epoch_breakdown.py: fit(epochs=1) beyond the recorded epoch, phase by phase
  bandwidth  activation kernels vs the device-to-device copy bandwidth (target >= 85%)
  racecheck  compute-sanitizer --tool racecheck over tools/sanitize_run.py
  memcheck   compute-sanitizer --tool memcheck over the same run (every kernel once)
  gemm_bench tools/gemm_bench.py (if it exists)

Writes DIR/gpu_check.json, DIR/summary.md and DIR/logs/<step>.log, and prints the summary last.
Needs no network and no install: the GPU machine's python3 with CuPy, run from the checkout.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable or "python3"


# ====================================================================== orchestration
@dataclass
class StepResult:
    name: str
    status: str  # ok | fail | timeout | skip | error
    seconds: float = 0.0
    numbers: dict = field(default_factory=dict)  # key numbers for the summary
    note: str = ""


@dataclass
class Step:
    name: str
    limit_s: float
    run: Callable[[Context, float], StepResult]
    doc: str = ""


@dataclass
class Context:
    out: Path
    env: dict
    python: str = PY

    @property
    def logs(self) -> Path:
        p = self.out / "logs"
        p.mkdir(parents=True, exist_ok=True)
        return p


def run_cmd(cmd: list[str], limit_s: float, log: Path, env: dict | None = None,
            cwd: Path = ROOT) -> tuple[int | None, str, float]:
    """Run ``cmd`` with output to ``log``; kill its whole process group after ``limit_s``.
    Returns (exit code or None on timeout, the output's tail, seconds)."""
    t0 = time.monotonic()
    with open(log, "w") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        try:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=cwd, env=env,
                                    start_new_session=True)
        except OSError as exc:
            fh.write(f"cannot start: {exc}\n")
            return 127, f"cannot start {cmd[0]}: {exc}", time.monotonic() - t0
        try:
            rc: int | None = proc.wait(timeout=max(1.0, limit_s))
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            rc = None
    with open(log, errors="replace") as fh:
        tail = fh.read()[-4000:]
    return rc, tail, time.monotonic() - t0


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # the child's own session: only what it started
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def run_steps(steps: list[Step], ctx: Context, budget_s: float,
              clock: Callable[[], float] = time.monotonic,
              after_each: Callable[[list[StepResult]], None] | None = None
              ) -> list[StepResult]:
    """Run every step in order, each under min(its limit, what is left of the budget).
    A step that raises becomes status "error"; with < 5 s of budget left, "skip".
    ``after_each(results so far)`` runs after every step (main() rewrites the summary there,
    so a run killed from outside still leaves gpu_check.json and summary.md behind)."""
    results = []
    t_end = clock() + budget_s
    for step in steps:
        left = t_end - clock()
        if left < 5:
            results.append(StepResult(step.name, "skip", 0.0, note="overall time budget used up"))
            continue
        limit = min(step.limit_s, left)
        t0 = clock()
        try:
            res = step.run(ctx, limit)
        except Exception as exc:  # one broken step must not stop the others
            res = StepResult(step.name, "error", note=f"{type(exc).__name__}: {exc}")
        res.name = step.name
        if not res.seconds:
            res.seconds = clock() - t0
        results.append(res)
        print(f"[gpu-check] {res.name:10s} {res.status:7s} {res.seconds:6.1f}s  {res.note}",
              flush=True)
        if after_each is not None:
            after_each(results)
    return results


# ====================================================================== steps
def _self_cmd(ctx: Context, phase: str) -> list[str]:
    """This script in a child process running one in-process phase (isolates crashes)."""
    return [ctx.python, str(Path(__file__).resolve()), "--phase", phase, "--out", str(ctx.out)]


def _status(rc: int | None) -> str:
    return "timeout" if rc is None else ("ok" if rc == 0 else "fail")


def missing_modules(names=("pytest", "hypothesis", "numpy", "cupy")) -> list[str]:
    """Which of the modules the test step needs cannot be imported here."""
    import importlib.util

    return [n for n in names if importlib.util.find_spec(n) is None]


def step_tests(ctx: Context, limit: float) -> StepResult:
    missing = missing_modules()
    if "pytest" in missing:
        return StepResult("tests", "skip", note="pytest is not installed on this machine")
    junit = ctx.out / "pytest-cuda.xml"
    # -o addopts=-ra: the project's addopts name pytest-benchmark, which may be absent here
    # --continue-on-collection-errors: a test module needing a package this machine lacks
    # (numba, hypothesis, ...) must not stop the cuda tests of the other modules
    # -v --tb=short: every test's name and verdict reach the log as it runs, so a run cut off
    # by its time limit still says which test failed (a junit file is only written at the end)
    cmd = [ctx.python, "-m", "pytest", "-v", "--tb=short", "-o", "addopts=-ra", "-m", "cuda",
           "--continue-on-collection-errors", "-p", "no:cacheprovider",
           "--junitxml", str(junit), "tests"]
    if not missing_modules(("xdist",)):  # NVRTC compiles dominate: spread the modules over workers
        cmd[3:3] = ["-n", str(max(2, min(8, (os.cpu_count() or 4) // 2)))]
    rc, tail, secs = run_cmd(cmd, limit, ctx.logs / "tests.log", ctx.env)
    nums = parse_pytest_summary(tail)
    note = ", ".join(f"{v} {k}" for k, v in nums.items()) or _last_line(tail)
    if missing:
        note += f" (not installed: {', '.join(missing)})"
    status = _status(rc)
    if rc == 5 or (status == "ok" and not nums.get("passed")):  # 5: nothing collected
        status, note = "fail", f"no cuda test ran ({note}): is the GPU visible to CuPy?"
    return StepResult("tests", status, secs, nums, note)


def parse_pytest_summary(text: str) -> dict:
    """{"passed": n, "failed": n, ...} from pytest's last summary line."""
    out = {}
    lines = [ln for ln in text.splitlines() if re.search(r"\b(passed|failed|error|skipped)", ln)]
    if lines:
        for n, word in re.findall(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed|"
                                  r"deselected)", lines[-1]):
            out[word.rstrip("s") if word.startswith("error") else word] = int(n)
    return out


def step_compare(ctx: Context, limit: float) -> StepResult:
    rc, tail, secs = run_cmd(_self_cmd(ctx, "compare"), limit, ctx.logs / "compare.log",
                             ctx.env)
    data = _read_json(ctx.out / "compare.json")
    nums = {}
    if data:
        nums = {"cases": len(data.get("rows", [])), "mismatches": data.get("mismatches"),
                "worst_cuda_vs_ref": data.get("worst_cuda_vs_ref"),
                "worst_cuda_vs_emu": data.get("worst_cuda_vs_emu")}
    note = f"{nums.get('mismatches')} mismatches over {nums.get('cases')} cases" if data else \
        _last_line(tail)
    return StepResult("compare", _status(rc), secs, nums, note)


def find_sanitizer() -> str | None:
    """compute-sanitizer on PATH or in the usual CUDA install folders."""
    found = shutil.which("compute-sanitizer")
    if found:
        return found
    for base in [os.environ.get("CUDA_HOME", ""), "/usr/local/cuda", "/opt/cuda"]:
        for sub in ("bin", "compute-sanitizer"):
            p = Path(base) / sub / "compute-sanitizer"
            if base and p.is_file():
                return str(p)
    return None


def parse_sanitizer(text: str) -> int | None:
    """The error count of compute-sanitizer's "ERROR SUMMARY: N errors" line (None: absent)."""
    m = re.findall(r"ERROR SUMMARY:\s*(\d+) error", text)
    return int(m[-1]) if m else None


def _sanitizer_step(tool: str) -> Callable[[Context, float], StepResult]:
    def run(ctx: Context, limit: float) -> StepResult:
        exe = find_sanitizer()
        if exe is None:
            return StepResult(tool, "skip", note="compute-sanitizer not found")
        cmd = [exe, "--tool", tool, "--error-exitcode", "3", "--print-limit", "20",
               ctx.python, str(ROOT / "tools" / "sanitize_run.py"), "--no-pool"]
        # shared-memory hazards do not depend on array sizes; out-of-bounds accesses need
        # multi-block grids with ragged edges, which scale 10 has (370-row arrays)
        cmd += ["--scale", "3" if tool == "racecheck" else "10"]
        rc, tail, secs = run_cmd(cmd, limit, ctx.logs / f"{tool}.log", ctx.env)
        errors = parse_sanitizer(tail)
        status = _status(rc)
        if status == "ok" and errors:
            status = "fail"
        return StepResult(tool, status, secs, {"errors": errors},
                          f"{errors} errors" if errors is not None else _last_line(tail))
    return run


def step_bandwidth(ctx: Context, limit: float) -> StepResult:
    rc, tail, secs = run_cmd(_self_cmd(ctx, "bandwidth"), limit, ctx.logs / "bandwidth.log",
                             ctx.env)
    data = _read_json(ctx.out / "bandwidth.json") or {}
    rows = data.get("rows", [])
    nums = {"copy_GBps": data.get("copy_GBps")}
    nums.update({r["kernel"]: f"{r['fraction_of_copy']:.0%}" for r in rows})
    worst = min((r["fraction_of_copy"] for r in rows), default=None)
    status = _status(rc)
    if status == "ok" and worst is not None and worst < 0.85:
        status = "fail"
    note = f"worst {worst:.0%} of copy bandwidth" if worst is not None else _last_line(tail)
    return StepResult("bandwidth", status, secs, nums, note)


def step_autotune(ctx: Context, limit: float) -> StepResult:
    rc, tail, secs = run_cmd(_self_cmd(ctx, "autotune"), limit, ctx.logs / "autotune.log",
                             ctx.env)
    data = _read_json(ctx.out / "autotune.json") or {}
    nums = {"shapes": len(data.get("entries", {})), "table": data.get("table")}
    return StepResult("autotune", _status(rc), secs, nums,
                      f"{nums['shapes']} shapes tuned" if data else _last_line(tail))


def step_bench(ctx: Context, limit: float) -> StepResult:
    if not (ROOT / "mlpaccel" / "commands" / "bench.py").is_file():
        return StepResult("bench", "skip", note="mlpaccel bench does not exist in this checkout")
    out = ctx.out / "bench"
    # the full suite on cuda alone, with the peers (cuBLAS, PyTorch eager and CUDA-graph
    # epochs, SGD and Adam): the GPU targets are ratios to them, measured in the same run
    cmd = [ctx.python, "-m", "mlpaccel", "bench", "--full", "--backends", "cuda", "--out",
           str(out), "--no-progress", "--budget", "0.5"]
    rc, tail, secs = run_cmd(cmd, limit, ctx.logs / "bench.log", ctx.env)
    files = sorted(p.name for p in out.glob("*")) if out.is_dir() else []
    return StepResult("bench", _status(rc), secs, {"files": files}, _last_line(tail))


def mnist_dir() -> Path | None:
    """The MNIST IDX files: $MLPACCEL_DATA/mnist, ./.data/mnist (carried to a GPU machine),
    ../shared/data/mnist."""
    for base in (os.environ.get("MLPACCEL_DATA"), ROOT / ".data", ROOT.parent / "shared" / "data"):
        if base and (Path(base) / "mnist" / "train-images-idx3-ubyte.gz").is_file():
            return Path(base) / "mnist"
    return None


#: HIDDEN/OPTIMIZER/LR/BATCH/EPOCHS runs of tools/mnist_fast.py (target: >= 98.0% test
#: accuracy in < 1 s of training with the data on the GPU)
MNIST_RECIPES = ("1024,1024/adam/5e-4/256/10", "1024,1024/adam/5e-4/256/8",
                 "512,512/adam/5e-4/256/10", "256,256/adam/1e-3/128/12",
                 "256,256/momentum/0.05/64/10")


def step_mnist(ctx: Context, limit: float) -> StepResult:
    data = mnist_dir()
    if data is None:
        return StepResult("mnist", "skip", note="no MNIST files (.data/mnist, $MLPACCEL_DATA)")
    cmd = [ctx.python, str(ROOT / "tools" / "mnist_fast.py"), "--data-dir", str(data),
           "--backend", "cuda", "--json", str(ctx.out / "mnist.json")]
    for r in MNIST_RECIPES:
        cmd += ["--recipe", r]
    rc, tail, secs = run_cmd(cmd, limit, ctx.logs / "mnist.log", ctx.env)
    rows = _read_json(ctx.out / "mnist.json") or []
    nums = {f"{r['layers'][1]}x{r['optimizer']}x{r['epochs']}":
            f"{r['test_accuracy']:.4f} in {r['train_wall_s']:.3f}s" for r in rows}
    return StepResult("mnist", _status(rc), secs, nums, _last_line(tail) if not rows else "")


def step_profile(ctx: Context, limit: float) -> StepResult:
    cmd = [ctx.python, str(ROOT / "tools" / "step_profile.py"), "--batches", "64", "1024", "8192",
           "--json", str(ctx.out / "step_profile.json")]
    rc, tail, secs = run_cmd(cmd, limit, ctx.logs / "profile.log", ctx.env)
    lines = [ln for ln in tail.splitlines() if ln.startswith("b") and "whole step" in ln]
    return StepResult("profile", _status(rc), secs, {}, "; ".join(lines) or _last_line(tail))


def step_breakdown(ctx: Context, limit: float) -> StepResult:
    """tools/epoch_breakdown.py: fit's time beyond the recorded epoch, phase by phase, the
    epoch on one stream vs two, and a cProfile of fit's host time."""
    cmd = [ctx.python, str(ROOT / "tools" / "epoch_breakdown.py"), "--batches", "64", "1024",
           "8192", "--json", str(ctx.out / "epoch_breakdown.json")]
    rc, tail, secs = run_cmd(cmd, limit, ctx.logs / "breakdown.log", ctx.env)
    lines = [ln[:200] for ln in tail.splitlines() if ln.startswith("batch ")]
    return StepResult("breakdown", _status(rc), secs, {}, "; ".join(lines) or _last_line(tail))


def step_head(ctx: Context, limit: float) -> StepResult:
    """tools/head_bench.py: the fused output layer vs the composed ops over batch and grid,
    and the shuffle gather (kernels/head.cu's MAX_FUSED_ROWS and grid rule come from this)."""
    out = ctx.out / "head_bench.json"
    cmd = [ctx.python, str(ROOT / "tools" / "head_bench.py"), "--json", str(out), "--save"]
    rc, tail, secs = run_cmd(cmd, limit, ctx.logs / "head.log", ctx.env)
    doc = _read_json(out) or {}
    if doc.get("table") and Path(doc["table"]).is_file():  # the table with the head choices
        shutil.copy(doc["table"], ctx.out / Path(doc["table"]).name)
    nums = {f"b{b}": f"fused {r.get('fused (default grid)', float('nan')):.1f} vs composed "
                     f"{r.get('composed ops (+ colsum below)', float('nan')):.1f} us"
            for b, r in (doc.get("head_us") or {}).items()}
    return StepResult("head", _status(rc), secs, nums, _last_line(tail))


def step_gemm_bench(ctx: Context, limit: float) -> StepResult:
    script = ROOT / "tools" / "gemm_bench.py"
    if not script.is_file():
        return StepResult("gemm_bench", "skip", note="tools/gemm_bench.py does not exist")
    cmd = [ctx.python, str(script)]
    try:  # pass --out only if the script takes it
        helptext = subprocess.run(cmd + ["--help"], capture_output=True, text=True, timeout=60,
                                  env=ctx.env, cwd=ROOT).stdout
    except (OSError, subprocess.SubprocessError):
        helptext = ""
    if "--out" in helptext:
        cmd += ["--out", str(ctx.out / "gemm_bench")]
    rc, tail, secs = run_cmd(cmd, limit, ctx.logs / "gemm_bench.log", ctx.env)
    return StepResult("gemm_bench", _status(rc), secs, {}, _last_line(tail))


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:160] if lines else ""


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


STEPS = [  # in priority order: a step cut by the overall budget loses the least
    Step("tests", 240, step_tests, "pytest -m cuda (conformance suite on cuda included)"),
    Step("compare", 60, step_compare, "cuda vs cuda-emu vs float64 reference"),
    Step("autotune", 150, step_autotune, "GEMM tile sweep -> mlpaccel/tuning/"),
    Step("head", 60, step_head, "tools/head_bench.py: fused output layer vs composed ops "
         "-> the tuning table (before bench, whose epochs then use it)"),
    Step("bench", 150, step_bench, "mlpaccel bench --full --backends cuda (+ peers)"),
    Step("mnist", 90, step_mnist, "tools/mnist_fast.py: MNIST accuracy and training time"),
    Step("profile", 45, step_profile, "tools/step_profile.py: device time per op of a step"),
    Step("breakdown", 60, step_breakdown, "tools/epoch_breakdown.py: fit beyond the recorded "
         "epoch, phase by phase; one stream vs two"),
    Step("bandwidth", 30, step_bandwidth, "activation kernels vs copy bandwidth"),
    Step("racecheck", 90, _sanitizer_step("racecheck"), "compute-sanitizer racecheck"),
    Step("memcheck", 120, _sanitizer_step("memcheck"), "compute-sanitizer memcheck"),
    Step("gemm_bench", 60, step_gemm_bench, "tools/gemm_bench.py"),
]


# ====================================================================== in-process phases
def phase_compare(out: Path) -> int:
    """Every case of tools/sanitize_run.py on cuda, cuda-emu and numpy-float64: errors."""
    import numpy as np

    sys.path.insert(0, str(ROOT / "tools"))
    import sanitize_run as sr

    import mlpaccel
    from mlpaccel.backends import unavailable_reason

    cuda = mlpaccel.get_backend("cuda")
    emu = None if unavailable_reason("cuda-emu") else mlpaccel.get_backend("cuda-emu")
    oracle = mlpaccel.get_backend("numpy")
    inp = sr.make_inputs(np.random.default_rng(1234))
    tol = {"float32": 2e-4, "float64": 1e-9}
    rows, mismatches = [], 0
    for dt in ("float32", "float64"):
        for name in sr.CASES:
            ref = sr.run_case(oracle, name, inp, np.float64)
            got = sr.run_case(cuda, name, inp, dt)
            emu_out = sr.run_case(emu, name, inp, dt) if emu is not None else None
            for key, r in ref.items():
                t = tol[dt] * (10 if name.startswith(("matmul", "linear")) else 1)
                e_ref = sr.max_rel_err(got[key], r)
                e_emu = sr.max_rel_err(got[key], emu_out[key]) if emu_out else None
                bad = not e_ref <= t or (e_emu is not None and not e_emu <= t)
                mismatches += bad
                rows.append({"case": name, "output": key, "dtype": dt, "cuda_vs_ref": e_ref,
                             "cuda_vs_emu": e_emu, "tolerance": t, "ok": not bad})
    doc = {"rows": rows, "mismatches": mismatches, "emulator": emu is not None,
           "worst_cuda_vs_ref": max(r["cuda_vs_ref"] for r in rows),
           "worst_cuda_vs_emu": max((r["cuda_vs_emu"] or 0.0) for r in rows)}
    (out / "compare.json").write_text(json.dumps(doc, indent=1))
    for r in rows:
        if not r["ok"]:
            print(f"MISMATCH {r}")
    print(f"compare: {len(rows)} outputs, {mismatches} mismatches")
    return 1 if mismatches else 0


def phase_bandwidth(out: Path, n: int = 1 << 26, repeats: int = 20) -> int:
    """GB/s of the elementwise kernels on n float32 (read + write bytes) against cudaMemcpy
    device-to-device on the same buffers; CUDA-event timing, mean of ``repeats``."""
    import cupy
    import numpy as np

    import mlpaccel

    B = mlpaccel.get_backend("cuda")
    x = cupy.random.standard_normal(n, dtype=cupy.float32)
    g = cupy.random.standard_normal(n, dtype=cupy.float32)
    y = cupy.empty_like(x)
    a = B.activation("sigmoid", x)
    nbytes = x.nbytes

    def timed(fn) -> float:
        for _ in range(3):
            fn()
        e0, e1 = cupy.cuda.Event(), cupy.cuda.Event()
        e0.record()
        for _ in range(repeats):
            fn()
        e1.record()
        e1.synchronize()
        return cupy.cuda.get_elapsed_time(e0, e1) / 1e3 / repeats

    copy_s = timed(lambda: y.data.copy_from_device_async(x.data, nbytes))
    copy_bw = 2 * nbytes / copy_s / 1e9
    cases = {  # kernel -> (call, bytes moved)
        "relu": (lambda: B.activation("relu", x, out=y), 2 * nbytes),
        "sigmoid": (lambda: B.activation("sigmoid", x, out=y), 2 * nbytes),
        "gelu": (lambda: B.activation("gelu", x, out=y), 2 * nbytes),
        "relu_grad": (lambda: B.activation_grad("relu", x, a, g, out=y), 3 * nbytes),
        "sigmoid_grad": (lambda: B.activation_grad("sigmoid", x, a, g, out=y), 3 * nbytes),
        "axpy": (lambda: B.axpy(np.float32(0.5), g, y), 3 * nbytes),
    }
    rows = []
    for name, (fn, moved) in cases.items():
        secs = timed(fn)
        bw = moved / secs / 1e9
        rows.append({"kernel": name, "seconds": secs, "GBps": bw, "fraction_of_copy": bw / copy_bw})
        print(f"{name:14s} {bw:8.0f} GB/s  {bw / copy_bw:6.1%} of copy", flush=True)
    doc = {"n": n, "dtype": "float32", "copy_GBps": copy_bw, "rows": rows,
           "device": B.info().get("device")}
    (out / "bandwidth.json").write_text(json.dumps(doc, indent=1))
    print(f"copy {copy_bw:.0f} GB/s")
    return 0


#: (M, N, K, form) of the matmul ladder and the MLP's layers (784-256-256-10) at each batch
def tuning_shapes() -> list[tuple]:
    shapes = [(n, n, n, "nn") for n in (512, 1024, 2048, 4096, 8192)]
    for batch in (64, 256, 1024, 8192):
        for fan_in, fan_out in ((784, 256), (256, 256), (256, 10)):
            shapes.append((batch, fan_out, fan_in, "nn"))  # forward  x W
            shapes.append((fan_in, fan_out, batch, "tn"))  # grad_W  x^T delta
            shapes.append((batch, fan_in, fan_out, "nt"))  # grad_x  delta W^T
    return shapes


def phase_autotune(out: Path) -> int:
    import mlpaccel
    from mlpaccel.backends import cuda_gemm

    B = mlpaccel.get_backend("cuda")
    shapes = tuning_shapes()
    entries = {}
    for precision in ("fp32", "tf32"):
        t0 = time.monotonic()
        entries.update(cuda_gemm.autotune(B.driver, shapes, precision=precision, warmup=2,
                                          repeats=5))
        print(f"autotune {precision}: {len(shapes)} shapes in {time.monotonic() - t0:.1f}s",
              flush=True)
    table = cuda_gemm.TUNING_DIR / f"{cuda_gemm.device_name(B.driver)}.json"
    if table.is_file():
        shutil.copy(table, out / table.name)
    (out / "autotune.json").write_text(json.dumps(
        {"table": str(table.relative_to(ROOT)) if table.is_relative_to(ROOT) else str(table),
         "entries": entries}, indent=1, default=str))
    return 0


# ====================================================================== summary
def environment() -> dict:
    env = {"host": platform.node(), "python": platform.python_version(),
           "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}
    try:
        q = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
                            "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
        env["gpu"] = q.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        env["gpu"] = None
    return env


def _fmt_numbers(nums: dict) -> str:
    parts = []
    for k, v in nums.items():
        if v is None or v == [] or v == {}:
            continue
        if isinstance(v, float):
            v = f"{v:.3g}"
        elif isinstance(v, list):
            v = f"{len(v)} files"
        parts.append(f"{k}={v}")
    return ", ".join(parts)


def summary_markdown(results: list[StepResult], env: dict, total_s: float) -> str:
    lines = [f"# gpu-check: {env.get('gpu') or 'no GPU found'}", "",
             f"{env.get('date')} on {env.get('host')}, Python {env.get('python')}, "
             f"total {total_s:.0f} s", "",
             "| step | status | seconds | key numbers |", "| --- | --- | ---: | --- |"]
    for r in results:
        key = "; ".join(x for x in (_fmt_numbers(r.numbers), r.note) if x)
        lines.append(f"| {r.name} | {r.status} | {r.seconds:.1f} | {key.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def write_outputs(results: list[StepResult], ctx: Context, env: dict, total_s: float) -> str:
    ctx.out.mkdir(parents=True, exist_ok=True)
    doc = {"environment": env, "total_seconds": total_s,
           "steps": [r.__dict__ for r in results],
           "ok": all(r.status in ("ok", "skip") for r in results)}
    (ctx.out / "gpu_check.json").write_text(json.dumps(doc, indent=1, default=str))
    md = summary_markdown(results, env, total_s)
    (ctx.out / "summary.md").write_text(md)
    return md


# ====================================================================== CLI
def parse_args(argv=None, names: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description="One-call GPU check (tests, emulator cross-check, "
                                 "sanitizers, GEMM autotune, benchmarks).")
    ap.add_argument("--out", default="bench/results/gpu", help="results folder")
    names = names or [s.name for s in STEPS]
    ap.add_argument("--steps", default=",".join(names),
                    help="comma-separated subset of: " + ", ".join(names))
    ap.add_argument("--budget", type=float, default=520.0,
                    help="overall seconds for all steps (default 520, under 9 minutes)")
    ap.add_argument("--phase", choices=("compare", "autotune", "bandwidth"),
                    help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    wanted = [s.strip() for s in args.steps.split(",") if s.strip()]
    unknown = sorted(set(wanted) - set(names))
    if unknown:
        ap.error(f"unknown step(s) {unknown}; valid: {names}")
    args.steps = wanted
    return args


def child_env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("MLPACCEL_CACHE", str(ROOT / "build" / "cache"))
    return env


def main(argv=None, steps: list[Step] | None = None) -> int:
    steps = steps or STEPS
    args = parse_args(argv, [s.name for s in steps])
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args.phase == "compare":
        return phase_compare(out)
    if args.phase == "autotune":
        return phase_autotune(out)
    if args.phase == "bandwidth":
        return phase_bandwidth(out)
    ctx = Context(out=out, env=child_env())
    chosen = [s for s in steps if s.name in args.steps]
    t0 = time.monotonic()
    env = environment()
    results = run_steps(chosen, ctx, args.budget, after_each=lambda done: write_outputs(
        done, ctx, env, time.monotonic() - t0))
    md = write_outputs(results, ctx, env, time.monotonic() - t0)
    print()
    print(md)
    return 0 if all(r.status in ("ok", "skip") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
