"""Build step of the CUDA emulator: kernels/<module>.cu -> a cached shared library.

The source is preprocessed by g++ with ``kernels/emu/cuda_emu.h`` force-included and
``-DMLPACCEL_EMU -DMLPACCEL_EMU_SCAN`` (so ``__global__`` and ``__shared__`` survive as tokens,
also inside macro-generated kernels), then rewritten:

* ``extern __shared__ T name[];`` -> ``T* name = (T*)::emu::dynamic_smem();`` (per-block buffer
  of ``shared_mem`` bytes);
* ``__shared__`` -> ``static thread_local`` (one block at a time per OS thread, so one copy per
  running block);
* ``__global__`` is dropped; for each ``extern "C" __global__ void name(...)`` two C entry points
  are appended: ``__emu_launch_<name>`` (runs a launch) and ``__emu_sig_<name>`` (parameter type
  codes, so argument checks use the compiler's view of the types, typedefs included).

The library is cached under ``cache_dir()/emu/<hash>/`` where the hash covers the source, every
header under kernels/ (and the source's folder), the flags and the compiler version: an edited
kernel or header is always rebuilt.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .._paths import cache_dir, kernel_dir
from ..errors import KernelError

#: bump when the generated code or the runtime contract changes (part of the cache key)
EMU_ABI = "emu-3"
BASE_FLAGS = ("-std=c++17", "-O2", "-fPIC", "-shared", "-pthread", "-fno-strict-aliasing",
              "-fwrapv", "-fstack-clash-protection", "-U_FORTIFY_SOURCE", "-DMLPACCEL_EMU")
HEADER_SUFFIXES = (".cuh", ".h", ".hpp", ".inl")

_EXTERN_SHARED = re.compile(
    r"extern\s+__shared__\s+((?:__attribute__\s*\(\(\s*aligned\s*\(\s*\d+\s*\)\s*\)\)\s*)*)"
    r"([A-Za-z_][\w:<>,\s\*]*?)\s*((?:__attribute__\s*\(\(\s*aligned\s*\(\s*\d+\s*\)\s*\)\)\s*)*)"
    r"\b([A-Za-z_]\w*)\s*\[\s*\]\s*;")
_SHARED = re.compile(r"\b__shared__\b")
_GLOBAL = re.compile(r"\b__global__\b")
_KERNEL = re.compile(r"__global__\s+(?:[\w:]+\s+)*?void\s+([A-Za-z_]\w*)\s*\(([^)]*)\)\s*\{")
_EXTERN_C = re.compile(r'extern\s*"C"\s*$')


def compiler() -> str | None:
    """The C++ compiler the emulator uses: $CXX if set, else g++ (None when absent)."""
    name = os.environ.get("MLPACCEL_EMU_CXX") or os.environ.get("CXX") or "g++"
    return shutil.which(name)


@functools.lru_cache(maxsize=8)
def compiler_version(cxx: str) -> str:
    """First line of ``cxx --version`` (part of the cache key and of info())."""
    out = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30)
    return out.stdout.splitlines()[0].strip() if out.stdout else cxx


@dataclass
class KernelSig:
    """One entry point: its name, parameter names (from the source) and type codes (from C)."""

    name: str
    params: list[str]
    codes: list[str] = field(default_factory=list)


def _strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def _extern_c_blocks(text: str) -> list[tuple[int, int]]:
    """Spans of ``extern "C" { ... }`` blocks (kernels inside need no own extern "C")."""
    spans = []
    for m in re.finditer(r'extern\s*"C"\s*\{', text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        spans.append((m.end(), i))
    return spans


def find_kernels(pre: str) -> list[KernelSig]:
    """``extern "C" __global__ void name(params)`` definitions in preprocessed text."""
    text = "\n".join(line for line in pre.splitlines() if not line.startswith("#"))
    blocks = _extern_c_blocks(text)
    found: dict[str, KernelSig] = {}
    for m in _KERNEL.finditer(text):
        head = text[max(0, m.start() - 200):m.start()].rstrip()
        # skip qualifiers between extern "C" and __global__ (e.g. static inline, attributes)
        head = re.sub(r"(?:\b__\w+__(?:\s*\([^)]*\))?\s*)+$", "", head).rstrip()
        inside = any(a <= m.start() < b for a, b in blocks)
        if not (_EXTERN_C.search(head) or inside):
            continue  # a template or internal __global__: not launchable by name
        params = []
        for p in m.group(2).split(","):
            p = p.strip()
            if not p or p == "void":
                continue
            ident = re.findall(r"[A-Za-z_]\w*", p)
            params.append(ident[-1] if ident else "?")
        found[m.group(1)] = KernelSig(m.group(1), params)
    return list(found.values())


def rewrite(pre: str) -> str:
    """Turn preprocessed CUDA into C++ for the emulator (see the module docstring)."""
    def ext(m: re.Match) -> str:
        ty = re.sub(r"\s+", " ", m.group(2)).strip()
        return f"{ty}* {m.group(4)} = reinterpret_cast<{ty}*>(::emu::dynamic_smem());"

    out = _EXTERN_SHARED.sub(ext, pre)
    if re.search(r"\bextern\s+__shared__\b", out):
        bad = re.search(r"extern\s+__shared__[^;]*;", out)
        raise KernelError("cannot emulate this dynamic shared-memory declaration: "
                          f"{bad.group(0) if bad else 'extern __shared__'} (write it as "
                          "`extern __shared__ T name[];` inside the kernel)")
    out = _SHARED.sub("static thread_local", out)
    return _GLOBAL.sub("", out)


def stubs(kernels: list[KernelSig]) -> str:
    """C entry points appended to the rewritten source, one pair per kernel."""
    parts = ["\n// ---- generated by mlpaccel.backends._emu_build\n"]
    for k in kernels:
        n = k.name
        parts.append(
            f"static void __emu_body_{n}(void** a) {{ ::emu::call(&{n}, a); }}\n"
            f'extern "C" __attribute__((visibility("default"))) int __emu_launch_{n}('
            "void** a, const long long* cfg, char* err, int errlen, long long* fault) "
            f"{{ return ::emu::run(&__emu_body_{n}, a, cfg, err, errlen, fault); }}\n"
            f'extern "C" __attribute__((visibility("default"))) int __emu_sig_{n}('
            f"char* buf, int n) {{ return ::emu::signature(&{n}, buf, n); }}\n")
    return "".join(parts)


def _headers(dirs: list[Path]) -> list[Path]:
    files: set[Path] = set()
    for d in dirs:
        if d.is_dir():
            for sub in (d, d / "emu"):
                if sub.is_dir():
                    files.update(p for p in sub.iterdir() if p.suffix in HEADER_SUFFIXES)
    return sorted(files)


def cache_key(src: Path, kdir: Path, flags: list[str], cxx: str) -> str:
    """Hash of everything that changes the library: sources, headers, flags, compiler."""
    h = hashlib.sha256()
    h.update(EMU_ABI.encode())
    h.update(compiler_version(cxx).encode() + b"\0" + cxx.encode() + b"\0")
    h.update("\0".join(flags).encode())
    h.update(str(src).encode() + b"\0" + src.read_bytes())
    for p in _headers([kdir, src.parent]):
        h.update(str(p).encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:24]


def _run(cmd: list[str], what: str, src: Path) -> str:
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        msg = (res.stderr or res.stdout).strip()
        if len(msg) > 6000:
            msg = msg[:6000] + "\n... (truncated)"
        raise KernelError(f"cuda-emu: {what} of {src} failed (g++ exit {res.returncode}):\n{msg}")
    return res.stdout


@dataclass
class BuiltModule:
    """A compiled emulator library and its entry points."""

    source: Path
    lib_path: Path
    lib: ctypes.CDLL
    kernels: dict[str, KernelSig]


def build(src: Path, options: tuple[str, ...] = (), kdir: Path | None = None,
          cxx: str | None = None) -> BuiltModule:
    """Compile ``src`` for the emulator (or reuse the cached library) and load it."""
    kdir = Path(kdir) if kdir is not None else kernel_dir()
    cxx = cxx or compiler()
    if cxx is None:
        raise KernelError("cuda-emu needs a C++ compiler: install g++ (or set CXX)")
    src = Path(src).resolve()
    if not src.is_file():
        raise KernelError(f"cuda-emu: kernel source {src} not found")
    header = kdir / "emu" / "cuda_emu.h"
    incs = [f"-I{kdir}", f"-I{src.parent}"]
    flags = list(BASE_FLAGS) + incs + list(options)
    key = cache_key(src, kdir, flags + [str(header)], cxx)
    out_dir = cache_dir() / "emu" / f"{src.stem}-{key}"
    lib_path, meta_path = out_dir / "lib.so", out_dir / "kernels.json"
    if not (lib_path.is_file() and meta_path.is_file()):
        _compile(src, header, flags, cxx, out_dir)
    meta = json.loads(meta_path.read_text())
    lib = ctypes.CDLL(str(lib_path))
    kernels = {}
    for k in meta["kernels"]:
        sig = KernelSig(k["name"], k["params"])
        fn = getattr(lib, f"__emu_sig_{sig.name}")
        fn.argtypes = [ctypes.c_char_p, ctypes.c_int]
        buf = ctypes.create_string_buffer(512)
        fn(buf, 512)
        sig.codes = [c for c in buf.value.decode().split(",") if c]
        kernels[sig.name] = sig
    return BuiltModule(src, lib_path, lib, kernels)


def _prune(root: Path, max_age_days: float = 30.0) -> None:
    """Drop cached libraries not rebuilt for ``max_age_days`` (edited kernels leave old ones)."""
    cutoff = time.time() - max_age_days * 86400
    for d in root.iterdir():
        try:
            if d.is_dir() and d.stat().st_mtime < cutoff:
                shutil.rmtree(d, ignore_errors=True)
        except OSError:
            pass


def _compile(src: Path, header: Path, flags: list[str], cxx: str, out_dir: Path) -> None:
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out_dir.name + ".", dir=out_dir.parent))
    try:
        pre_flags = [f for f in flags if f not in ("-shared", "-fPIC", "-O2")]
        pre = _run([cxx, "-E", "-DMLPACCEL_EMU_SCAN", *pre_flags, "-include", str(header),
                    "-x", "c++", str(src)], "preprocessing", src)
        kernels = find_kernels(pre)
        code = rewrite(pre) + stubs(kernels)
        (tmp / "module.ii").write_text(code)
        # The .ii is already preprocessed: -D/-I/-include must not apply twice.
        cflags = [f for f in flags if not f.startswith(("-D", "-I", "-U"))]
        _run([cxx, *cflags, "-x", "c++", str(tmp / "module.ii"), "-o", str(tmp / "lib.so")],
             "compilation", src)
        (tmp / "kernels.json").write_text(json.dumps(
            {"source": str(src), "flags": flags,
             "kernels": [{"name": k.name, "params": k.params} for k in kernels]}, indent=1))
        try:
            os.replace(tmp, out_dir)  # atomic; another process may have won the race
        except OSError:
            if not (out_dir / "lib.so").is_file():
                raise
        _prune(out_dir.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
