"""Static resource report of kernels/*.cu from nvcc/ptxas (no GPU needed).

For each ``.cu`` file, ``nvcc -arch=sm_90 -cubin -Xptxas -v --std=c++17 -I kernels`` reports
(``-arch=sm_90a`` for a source marked ``// mlpaccel-arch: sm_90a``, see ``source_arch``),
per entry point: registers per thread, spill stores/loads, stack frame and static shared
memory; the kept PTX gives ``.maxntid`` (from ``__launch_bounds__``), the block size used for
the theoretical occupancy (else 256 threads are assumed). Results are cached by a hash of the
sources, headers, flags and nvcc version (nvcc on a large file takes minutes).

Occupancy on sm_90 (H100) per SM: 65536 registers allocated per warp in units of 256, 64 warps,
32 blocks, 228 KB shared memory (1 KB reserved per block, 128-byte granularity):
``blocks = min(32, 64 // warps, regs_limit, smem_limit)``, occupancy = blocks * warps / 64.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from ._paths import cache_dir, kernel_dir

NVCC_FLAGS = ("-arch=sm_90", "-cubin", "-Xptxas", "-v", "--std=c++17")
ASSUMED_BLOCK = 256
#: per-block static shared memory limit without opt-in (bytes)
SMEM_STATIC_LIMIT = 48 * 1024
SM90 = {"regs": 65536, "reg_unit": 256, "warps": 64, "blocks": 32, "smem": 233472,
        "smem_reserved": 1024, "smem_unit": 128}

_ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(sm_\w+)'")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers(?:, used (\d+) barriers)?(?:, (\d+) bytes smem)?")
_MAXNTID = re.compile(r"\.entry\s+(\w+)\s*\((?:[^)]*)\)\s*((?:\.\w+[^\n{]*\n\s*)*)\{", re.S)


@dataclass
class KernelRow:
    """One entry point's resources and theoretical occupancy on sm_90."""

    file: str
    kernel: str
    registers: int
    spill_stores: int
    spill_loads: int
    stack: int
    smem_static: int
    block: int
    block_from: str  # "launch_bounds" or "assumed"
    occupancy: float
    limiter: str


def nvcc_path() -> str | None:
    """nvcc from $NVCC, PATH or /usr/local/bin / /usr/local/cuda/bin (None when absent)."""
    for cand in (os.environ.get("NVCC"), shutil.which("nvcc"), "/usr/local/bin/nvcc",
                 "/usr/local/cuda/bin/nvcc"):
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


def occupancy(registers: int, smem: int, block: int) -> tuple[float, str]:
    """Theoretical occupancy (fraction of 64 warps) on sm_90 and what limits it."""
    warps = -(-block // 32)
    limits = {"blocks/SM": SM90["blocks"], "warps": SM90["warps"] // warps}
    if registers > 0:
        per_warp = -(-registers * 32 // SM90["reg_unit"]) * SM90["reg_unit"]
        limits["registers"] = (SM90["regs"] // per_warp) // warps
    per_block = -(-smem // SM90["smem_unit"]) * SM90["smem_unit"] + SM90["smem_reserved"]
    limits["shared memory"] = SM90["smem"] // per_block
    limiter = min(limits, key=lambda k: limits[k])
    blocks = limits[limiter]
    return blocks * warps / SM90["warps"], limiter


def parse_ptxas(log: str) -> dict[str, dict]:
    """Per-kernel numbers from ``-Xptxas -v`` output."""
    out: dict[str, dict] = {}
    cur = None
    for line in log.splitlines():
        m = _ENTRY.search(line)
        if m:
            cur = out.setdefault(m.group(1), {"registers": 0, "spill_stores": 0,
                                              "spill_loads": 0, "stack": 0, "smem_static": 0})
            continue
        if cur is None:
            continue
        m = _FRAME.search(line)
        if m:
            cur["stack"], cur["spill_stores"], cur["spill_loads"] = map(int, m.groups())
            continue
        m = _USED.search(line)
        if m:
            cur["registers"] = int(m.group(1))
            cur["smem_static"] = int(m.group(3) or 0)
    return out


def parse_maxntid(ptx: str) -> dict[str, int]:
    """Block size fixed by ``__launch_bounds__`` (PTX ``.maxntid x, y, z``) per entry."""
    out = {}
    for m in _MAXNTID.finditer(ptx):
        d = re.search(r"\.maxntid\s+(\d+)(?:\s*,\s*(\d+))?(?:\s*,\s*(\d+))?", m.group(2))
        if d:
            out[m.group(1)] = int(d.group(1)) * int(d.group(2) or 1) * int(d.group(3) or 1)
    return out


@functools.lru_cache(maxsize=4)
def _version(nvcc: str) -> str:
    res = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60)
    return res.stdout.strip().splitlines()[-1] if res.stdout.strip() else nvcc


_file_locks: dict[str, threading.Lock] = {}
_locks_guard = threading.Lock()


def compile_report(src: Path, nvcc: str, include: Path | None = None) -> dict:
    """Run nvcc on one file (or reuse the cached result): {"ok", "log", "kernels", "maxntid"}.
    One compile per file at a time: a second caller (e.g. a test while ``prefetch`` runs)
    waits for the first and then reads its cached result."""
    with _locks_guard:
        lock = _file_locks.setdefault(str(Path(src).resolve()), threading.Lock())
    with lock:
        return _compile_report(src, nvcc, include)


def prefetch(sources: list[Path], include: Path | None = None) -> threading.Thread | None:
    """Compile ``sources`` into the cache on a background thread (None without nvcc): the
    test session starts ptxas's minutes of work on gemm.cu while other tests run."""
    nvcc = nvcc_path()
    if nvcc is None:
        return None

    def work():
        for src in sorted(sources, key=lambda p: -p.stat().st_size):  # the longest first
            try:
                compile_report(src, nvcc, include)
            except Exception:  # the test that needs it reports the error itself
                pass
    t = threading.Thread(target=work, name="mlpaccel-nvcc-prefetch", daemon=True)
    t.start()
    return t


_ARCH_MARK = re.compile(r"mlpaccel-arch:\s*(sm_\w+)")


def source_arch(src: Path) -> str:
    """The target a source is built for: "sm_90" unless its first lines say otherwise with a
    ``// mlpaccel-arch: sm_90a`` marker (gemm_wgmma.cu: wgmma exists only on sm_90a)."""
    try:
        head = Path(src).read_text(errors="replace")[:2000]
    except OSError:
        return "sm_90"
    m = _ARCH_MARK.search(head)
    return m.group(1) if m else "sm_90"


def _compile_report(src: Path, nvcc: str, include: Path | None = None) -> dict:
    include = include or kernel_dir()
    arch = source_arch(src)
    flags = [f"-arch={arch}" if f == "-arch=sm_90" else f for f in NVCC_FLAGS]
    flags.append(f"-I{include}")
    h = hashlib.sha256(("\0".join(flags) + _version(nvcc)).encode())
    h.update(src.read_bytes())
    for p in sorted(include.glob("*.cuh")) + sorted(src.parent.glob("*.cuh")):
        h.update(p.name.encode() + p.read_bytes())
    cached = cache_dir() / "kernel_report" / f"{src.stem}-{h.hexdigest()[:20]}.json"
    if cached.is_file():
        return json.loads(cached.read_text())
    with tempfile.TemporaryDirectory(prefix="mlpaccel-nvcc-") as tmp:
        res = subprocess.run([nvcc, *flags, "--keep", "--keep-dir", tmp, str(src), "-o",
                              os.path.join(tmp, src.stem + ".cubin")],
                             capture_output=True, text=True, cwd=tmp)
        log = res.stdout + res.stderr
        ptx_file = Path(tmp) / (src.stem + ".ptx")
        ptx = ptx_file.read_text() if ptx_file.is_file() else ""
    result = {"ok": res.returncode == 0, "log": log, "kernels": parse_ptxas(log),
              "maxntid": parse_maxntid(ptx)}
    if result["ok"]:
        cached.parent.mkdir(parents=True, exist_ok=True)
        cached.write_text(json.dumps(result))
    return result


def kernel_rows(sources: list[Path] | None = None, nvcc: str | None = None,
                include: Path | None = None) -> tuple[list[KernelRow], dict[str, str]]:
    """Rows for every entry point of ``sources`` (default kernels/*.cu) and, per file that did
    not compile, nvcc's message. Raises FileNotFoundError without nvcc."""
    nvcc = nvcc or nvcc_path()
    if nvcc is None:
        raise FileNotFoundError("nvcc not found (set NVCC or install the CUDA toolkit)")
    if sources is None:
        sources = sorted(kernel_dir().glob("*.cu"))
    with ThreadPoolExecutor(max_workers=max(1, min(len(sources), os.cpu_count() or 1))) as ex:
        reports = list(ex.map(lambda s: compile_report(s, nvcc, include), sources))
    rows, errors = [], {}
    for src, rep in zip(sources, reports):
        if not rep["ok"]:
            errors[src.name] = rep["log"]
            continue
        for name, k in sorted(rep["kernels"].items()):
            block = rep["maxntid"].get(name)
            frm = "launch_bounds" if block else "assumed"
            block = block or ASSUMED_BLOCK
            occ, lim = occupancy(k["registers"], k["smem_static"], block)
            rows.append(KernelRow(src.name, name, k["registers"], k["spill_stores"],
                                  k["spill_loads"], k["stack"], k["smem_static"], block, frm,
                                  occ, lim))
    return rows, errors


def print_kernel_table(file=None) -> int:
    """Print the per-kernel table (for ``mlpaccel info --kernels``); 1 if a file failed."""
    file = file or sys.stdout
    try:
        rows, errors = kernel_rows()
    except FileNotFoundError as e:
        print(f"kernel table: {e}", file=file)
        return 0
    print(f"{'file':15s} {'kernel':34s} {'regs':>4s} {'spill st/ld':>11s} {'stack':>5s} "
          f"{'smem B':>6s} {'block':>6s} {'occupancy':>9s}  limiter", file=file)
    for r in rows:
        blk = f"{r.block}{'' if r.block_from == 'launch_bounds' else '*'}"
        print(f"{r.file:15s} {r.kernel:34s} {r.registers:4d} "
              f"{f'{r.spill_stores}/{r.spill_loads}':>11s} {r.stack:5d} {r.smem_static:6d} "
              f"{blk:>6s} {r.occupancy:9.0%}  {r.limiter}", file=file)
    print("sm_90 (H100); * = block size assumed (no __launch_bounds__)", file=file)
    for name, log in errors.items():
        print(f"{name}: nvcc failed:\n{log.strip()[:2000]}", file=file)
    return 1 if errors else 0


def rows_as_dicts() -> list[dict]:
    """The table as plain dicts (JSON-friendly), e.g. for bench/results."""
    return [asdict(r) for r in kernel_rows()[0]]
