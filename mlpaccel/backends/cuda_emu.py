"""``EmuDriver``: runs kernels/*.cu on the CPU (the ``cuda-emu`` backend's kernel driver).

The very same CUDA C sources are compiled with g++ through ``kernels/emu/cuda_emu.h`` (see
``_emu_build``) and launched through ctypes with NumPy arrays. Threads of a block are fibers
switched only at ``__syncthreads()`` and warp collectives, so barriers, shared memory, shuffles,
votes and the tensor-core/cp.async wrappers behave as on a GPU, at CPU speed (slow by design:
this is for testing the cuda backend without a GPU).

Checking modes catch the bugs a GPU hides or turns into hangs:

* ``schedules=("forward", "reverse")`` runs each launch once per thread order between
  barriers (on copies of the arrays) and raises ``KernelError`` when the outputs differ: a
  missing ``__syncthreads()`` / ``__syncwarp()`` (a data race);
* ``check_bounds=True`` copies every array into a buffer between ``PROT_NONE`` guard pages and
  raises ``KernelError`` naming the kernel and the argument on an out-of-bounds access;
* always on: a ``__syncthreads()`` not reached by every thread of the block (barrier
  divergence), a warp collective that cannot complete, or a crash raise ``KernelError``
  instead of hanging or killing the process.

``MLPACCEL_EMU_CHECK=1`` turns both checking modes on for every EmuDriver built with the
defaults; ``MLPACCEL_EMU_SCHEDULES=forward,reverse,shuffle`` and ``MLPACCEL_EMU_WORKERS=N`` set
them one by one.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import KernelError
from ._emu_build import BuiltModule, build, compiler, compiler_version
from ._emu_guard import GuardedBuffers
from .launch import KernelDriver, dim3

SCHEDULES = {"forward": 0, "reverse": 1, "shuffle": 2}
#: pointer type code (from the compiled signature) -> the NumPy dtype an array must have
POINTER_DTYPES = {"f": np.float32, "d": np.float64, "i": np.int32, "u": np.uint32,
                  "q": np.int64, "Q": np.uint64, "c": np.int8, "b": np.uint8, "s": np.int16,
                  "S": np.uint16, "B": np.bool_}
#: scalar type code -> (NumPy scalar type, ctypes type)
SCALAR_TYPES = {"f": (np.float32, ctypes.c_float), "d": (np.float64, ctypes.c_double),
                "i": (np.int32, ctypes.c_int32), "u": (np.uint32, ctypes.c_uint32),
                "q": (np.int64, ctypes.c_int64), "Q": (np.uint64, ctypes.c_uint64)}
MAX_THREADS_PER_BLOCK = 1024
MAX_BLOCK = (1024, 1024, 64)
MAX_DYNAMIC_SMEM = 227 * 1024  # H100 opt-in limit per block
_LAUNCH_LOCK = threading.Lock()  # the runtime's worker pool is per library, not re-entrant
_TRUE = ("1", "true", "yes", "on")


def emulator_available() -> tuple[bool, str]:
    """(True, compiler) when a C++ compiler for the emulator exists, else (False, why)."""
    cxx = compiler()
    if cxx is None:
        return False, "no C++ compiler found (install g++ or set CXX)"
    return True, compiler_version(cxx)


def _env_schedules() -> tuple[str, ...]:
    env = os.environ.get("MLPACCEL_EMU_SCHEDULES")
    if env:
        return tuple(s.strip() for s in env.split(",") if s.strip())
    if os.environ.get("MLPACCEL_EMU_CHECK", "").lower() in _TRUE:
        return ("forward", "reverse")
    return ("forward",)


class EmuModule:
    """Handle returned by :meth:`EmuDriver.load`: a built library and its entry points."""

    def __init__(self, name: str, built: BuiltModule):
        self.name = name
        self.built = built
        self._fns: dict[str, Any] = {}

    @property
    def kernels(self) -> list[str]:
        """Names of the module's ``extern "C" __global__`` entry points."""
        return sorted(self.built.kernels)

    def function(self, kernel: str):
        fn = self._fns.get(kernel)
        if fn is None:
            if kernel not in self.built.kernels:
                raise KernelError(f"kernel {kernel!r} is not an extern \"C\" __global__ entry "
                                  f"point of {self.built.source.name}; it has: "
                                  f"{', '.join(self.kernels) or 'none'}")
            fn = getattr(self.built.lib, f"__emu_launch_{kernel}")
            fn.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int,
                           ctypes.c_void_p]
            fn.restype = ctypes.c_int
            self._fns[kernel] = fn
        return fn

    def __repr__(self) -> str:
        return f"EmuModule({self.name!r}, {len(self.built.kernels)} kernels)"


class EmuDriver(KernelDriver):
    """Kernel driver that compiles kernels/*.cu with g++ and runs them on the CPU.

    Parameters
    ----------
    schedules: thread orders between barriers, each a name in ``SCHEDULES``; with two or more
        every launch runs once per schedule on copies and fails on differing outputs.
        Default: ``MLPACCEL_EMU_SCHEDULES``, else ("forward", "reverse") when
        ``MLPACCEL_EMU_CHECK=1``, else ("forward",).
    check_bounds: run on guarded copies of the arrays (default: ``MLPACCEL_EMU_CHECK``).
    workers: OS threads that run blocks in parallel (default ``MLPACCEL_EMU_WORKERS`` or
        min(2, cpu count)); threads of one block always share one OS thread.
    kernel_dir: folder of the ``.cu`` sources (default: the package's kernels/).
    seed: seed of the "shuffle" schedule.
    """

    name = "emu"
    xp = np

    def __init__(self, schedules: Sequence[str] | None = None, check_bounds: bool | None = None,
                 workers: int | None = None, kernel_dir: str | os.PathLike | None = None,
                 seed: int = 0):
        self.schedules = tuple(schedules) if schedules is not None else _env_schedules()
        for s in self.schedules:
            if s not in SCHEDULES:
                raise ValueError(f"unknown schedule {s!r}; valid: {', '.join(SCHEDULES)}")
        if not self.schedules:
            raise ValueError("schedules must name at least one schedule")
        if check_bounds is None:
            check_bounds = os.environ.get("MLPACCEL_EMU_CHECK", "").lower() in _TRUE
        self.check_bounds = bool(check_bounds)
        if workers is None:
            workers = int(os.environ.get("MLPACCEL_EMU_WORKERS", 0)) or min(2, os.cpu_count() or 1)
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = int(workers)
        self.kernel_dir = Path(kernel_dir) if kernel_dir is not None else None
        self.seed = int(seed)
        self._modules: dict[tuple[str, tuple[str, ...]], EmuModule] = {}

    # ------------------------------------------------------------------ loading
    def _source(self, module: str) -> Path:
        p = Path(module)
        if p.suffix == ".cu" or p.is_absolute() or len(p.parts) > 1:
            return p if p.suffix else p.with_suffix(".cu")
        from .._paths import kernel_dir
        base = self.kernel_dir if self.kernel_dir is not None else kernel_dir()
        return base / f"{module}.cu"

    def load(self, module: str, options: tuple[str, ...] = (), arch: str | None = None
             ) -> EmuModule:
        """Compile ``kernels/<module>.cu`` (or a path to a ``.cu`` file) with ``options``,
        reusing the cached library when nothing changed; returns the module handle. ``arch``
        (a GPU target such as "sm_90a") is ignored: the emulator runs every instruction it
        models on any host."""
        key = (str(module), tuple(options))
        mod = self._modules.get(key)
        if mod is None:
            src = self._source(module)
            from .._paths import kernel_dir
            built = build(src, tuple(options), kdir=kernel_dir())
            mod = EmuModule(Path(src).stem, built)
            self._modules[key] = mod
        return mod

    # ------------------------------------------------------------------ launching
    def _check_args(self, mod: EmuModule, kernel: str, args: Sequence[Any]) -> list[str]:
        sig = mod.built.kernels[kernel]
        if len(args) != len(sig.codes):
            raise TypeError(f"kernel {kernel!r} takes {len(sig.codes)} arguments "
                            f"({', '.join(sig.params)}), got {len(args)}")
        for i, (a, code) in enumerate(zip(args, sig.codes)):
            pname = sig.params[i] if i < len(sig.params) else f"#{i}"
            where = f"argument {i} ({pname!r}) of kernel {kernel!r}"
            if code.startswith("p"):
                if not isinstance(a, np.ndarray):
                    raise TypeError(f"{where} is a pointer: pass a NumPy array, not "
                                    f"{type(a).__name__}")
                want = POINTER_DTYPES.get(code[1:])
                if want is not None and a.dtype != want:
                    raise TypeError(f"{where} points to {np.dtype(want).name} but the array "
                                    f"has dtype {a.dtype}")
                if not a.flags.c_contiguous:
                    raise TypeError(f"{where}: the array must be C-contiguous "
                                    "(use np.ascontiguousarray)")
            else:
                if code not in SCALAR_TYPES:
                    raise TypeError(f"{where} has a C type the emulator cannot pass "
                                    f"(type code {code!r})")
                want = SCALAR_TYPES[code][0]
                if type(a) is not want:
                    hint = (" (a Python float/int has no exact C type: a float would become a "
                            "double)" if isinstance(a, (float, int)) else "")
                    raise TypeError(f"{where} is a C {np.dtype(want).name}: pass "
                                    f"np.{np.dtype(want).name}(value), not "
                                    f"{type(a).__name__}{hint}")
        return sig.codes

    @staticmethod
    def _check_config(kernel: str, grid, block, shared_mem: int):
        g, b = dim3(grid), dim3(block)
        if any(x < 1 for x in g) or any(x < 1 for x in b):
            raise KernelError(f"kernel {kernel!r}: grid {g} and block {b} must be >= 1 "
                              "in every dimension")
        if b[0] * b[1] * b[2] > MAX_THREADS_PER_BLOCK or any(
                x > m for x, m in zip(b, MAX_BLOCK)):
            raise KernelError(f"kernel {kernel!r}: block {b} exceeds the CUDA limits "
                              f"({MAX_THREADS_PER_BLOCK} threads, {MAX_BLOCK})")
        if g[1] > 65535 or g[2] > 65535 or g[0] > 2**31 - 1:
            raise KernelError(f"kernel {kernel!r}: grid {g} exceeds the CUDA limits")
        if not 0 <= int(shared_mem) <= MAX_DYNAMIC_SMEM:
            raise KernelError(f"kernel {kernel!r}: {shared_mem} bytes of dynamic shared memory "
                              f"(the limit is {MAX_DYNAMIC_SMEM})")
        return g, b

    def launch(self, module: EmuModule, kernel: str, grid, block, args: Sequence[Any],
               shared_mem: int = 0) -> None:
        """Run ``kernel`` of ``module`` on the CPU; see the class docstring for the checks.
        Arrays are C-contiguous NumPy arrays of the pointer's type, scalars NumPy scalars of
        the exact C type. Raises ``KernelError`` naming the kernel when it fails."""
        fn = module.function(kernel)
        codes = self._check_args(module, kernel, args)
        g, b = self._check_config(kernel, grid, block, shared_mem)
        arrays = [i for i, a in enumerate(args) if isinstance(a, np.ndarray)]
        checking = self.check_bounds or len(self.schedules) > 1
        if not checking:
            self._run(module, kernel, fn, codes, args, g, b, shared_mem, self.schedules[0], None)
            return
        # Arguments passed twice (in-place ops) must stay one buffer in the copies too.
        first: dict[tuple[int, int], int] = {}
        alias = {i: first.setdefault((args[i].ctypes.data, args[i].nbytes), i) for i in arrays}
        reps = sorted(set(alias.values()))
        originals = {i: args[i].copy() for i in reps}
        results: list[dict[int, np.ndarray]] = []
        for sched in self.schedules:
            guards = None
            try:
                if self.check_bounds:
                    guards = GuardedBuffers([originals.get(i) for i in range(len(args))])
                    addrs = {i: guards.pointer(alias[i]) for i in arrays}
                    self._run(module, kernel, fn, codes, args, g, b, shared_mem, sched, guards,
                              addrs)
                    self._check_canaries(module, kernel, guards)
                    results.append({i: guards.items[i].result(args[i]) for i in reps})
                else:
                    work = {i: originals[i].copy() for i in reps}
                    addrs = {i: work[alias[i]].ctypes.data for i in arrays}
                    self._run(module, kernel, fn, codes, args, g, b, shared_mem, sched, None,
                              addrs)
                    results.append(work)
            finally:
                if guards is not None:
                    guards.free()
        for s in range(1, len(results)):
            self._compare(module, kernel, results[0], results[s], self.schedules[0],
                          self.schedules[s])
        for i in reps:
            out = results[0][i]
            # copy back only what the kernel changed (a read-only input stays untouched)
            if args[i].flags.writeable and not np.array_equal(
                    out.reshape(-1).view(np.uint8), originals[i].reshape(-1).view(np.uint8)):
                args[i][...] = out

    def _run(self, module, kernel, fn, codes, args, g, b, shared_mem, sched, guards,
             addrs: dict[int, int] | None = None) -> None:
        holders = []
        ptrs = (ctypes.c_void_p * max(1, len(args)))()
        for i, (a, code) in enumerate(zip(args, codes)):
            if code.startswith("p"):
                h = ctypes.c_void_p(addrs[i] if addrs is not None else a.ctypes.data)
            else:
                h = SCALAR_TYPES[code][1](a.item())
            holders.append(h)
            ptrs[i] = ctypes.addressof(h)
        poison = 1 if (self.check_bounds or len(self.schedules) > 1) else 0
        cfg = (ctypes.c_longlong * 11)(*g, *b, int(shared_mem), SCHEDULES[sched], self.seed,
                                       self.workers, poison)
        err = ctypes.create_string_buffer(2048)
        fault = (ctypes.c_longlong * 4)()
        with _LAUNCH_LOCK:
            rc = fn(ptrs, cfg, err, len(err), fault)
        if rc == 0:
            return
        msg = err.value.decode(errors="replace")
        where = f"kernel {kernel!r} ({module.built.source.name}, grid {g}, block {b})"
        if fault[0]:
            loc = guards.locate(fault[1] & (2**64 - 1)) if guards is not None else None
            if loc is not None:
                i, desc = loc
                pname = module.built.kernels[kernel].params[i]
                rw = {1: "write", 0: "read"}.get(int(fault[2]), "access")
                a = args[i]
                raise KernelError(f"{where}: out-of-bounds {rw} of argument {i} ({pname!r}, "
                                  f"{a.dtype}[{a.size}]): {desc}; {msg.split(':')[0]}. Check the "
                                  "bounds test of the edge tile.")
            hint = ("" if guards is not None else " Rerun with EmuDriver(check_bounds=True) or "
                    "MLPACCEL_EMU_CHECK=1 to locate an out-of-bounds access.")
            raise KernelError(f"{where} crashed: {msg}.{hint}")
        raise KernelError(f"{where}: {msg}")

    @staticmethod
    def _check_canaries(module, kernel, guards: GuardedBuffers) -> None:
        for i, g in enumerate(guards.items):
            if g is None:
                continue
            damage = g.canary_damage()
            if damage:
                pname = module.built.kernels[kernel].params[i]
                raise KernelError(f"kernel {kernel!r} ({module.built.source.name}): out-of-bounds "
                                  f"{damage} of argument {i} ({pname!r}). Check the bounds test "
                                  "of the edge tile.")

    @staticmethod
    def _compare(module, kernel, ref: dict, got: dict, s0: str, s1: str) -> None:
        for i, a in ref.items():
            b = got[i]
            if a.dtype.kind == "f":
                # Tolerance: float atomics legitimately sum in a schedule-dependent order.
                tol = 1e-4 if a.dtype.itemsize <= 4 else 1e-10
                finite = np.abs(a[np.isfinite(a)])
                scale = float(finite.max()) if finite.size else 0.0
                with np.errstate(invalid="ignore"):
                    close = np.isclose(a, b, rtol=tol, atol=tol * scale, equal_nan=True)
            else:
                close = a == b
            if not np.all(close):
                bad = np.flatnonzero(~close.reshape(-1))
                j = int(bad[0])
                pname = module.built.kernels[kernel].params[i]
                raise KernelError(
                    f"kernel {kernel!r} ({module.built.source.name}): outputs differ between "
                    f"thread schedules {s0!r} and {s1!r} in argument {i} ({pname!r}): "
                    f"{bad.size} of {a.size} elements, first at flat index {j} "
                    f"({a.reshape(-1)[j]!r} vs {b.reshape(-1)[j]!r}). This is a data race: "
                    "a missing __syncthreads() (or __syncwarp()) between a shared-memory write "
                    "and another thread's read or write of it.")

    def synchronize(self) -> None:
        """Launches are synchronous on the CPU: nothing to wait for."""

    def info(self) -> dict:
        """Says this is an emulator (slow by design), with its compiler and checking modes."""
        cxx = compiler()
        return {
            "driver": self.name,
            "emulator": True,
            "device": "CPU emulator of CUDA kernels (cuda-emu)",
            "note": "slow by design: for testing kernels without a GPU, not for speed",
            "compiler": compiler_version(cxx) if cxx else "none",
            "workers": self.workers,
            "schedules": ",".join(self.schedules),
            "check_bounds": self.check_bounds,
        }
