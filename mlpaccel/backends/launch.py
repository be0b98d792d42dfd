"""The launcher interface between the cuda backend and whatever runs its kernels.

The cuda backend (``cuda.py``) decides which kernel computes which op, with which launch
configuration and tile sizes; a *driver* only loads ``kernels/<module>.cu`` and launches entry
points by name. Two drivers implement this interface:

* ``CupyDriver`` (in ``cuda.py``): arrays are CuPy arrays; modules compile with NVRTC through
  ``cupy.RawModule`` (cached per device); launches go to the current CuPy stream.
* ``EmuDriver`` (in ``cuda_emu.py``): arrays are NumPy arrays; the very same ``.cu`` sources
  are compiled with g++ through ``kernels/emu/`` and run on the CPU (``cuda-emu``).

Kernel ABI shared by both drivers (every ``kernels/*.cu`` follows it):
* entry points are ``extern "C" __global__ void <op>_<dtype>(...)`` (e.g. ``gemm_nn_f32``);
* parameters are pointers to float / double / int / long long (unsigned) or scalars of the
  types float, double, int, unsigned, long long; from Python, pointers are passed as
  contiguous arrays of this driver's ``xp``, scalars as NumPy scalars of the exact C type
  (``np.float32``, ``np.float64``, ``np.int32``, ``np.uint32``, ``np.int64``) - never a
  Python ``float``/``int``, whose C type would be ambiguous;
* ``kernels/*.cu`` include ``"common.cuh"`` and nothing outside ``kernels/`` (plus the C math
  library the device offers), so NVRTC and the emulator see the same code.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

Dim3 = tuple[int, int, int]


def dim3(v: int | Sequence[int]) -> Dim3:
    """Normalise a launch dimension (int or up to three ints) to a 3-tuple."""
    if isinstance(v, int):
        return (int(v), 1, 1)
    t = tuple(int(x) for x in v) + (1, 1, 1)
    return t[:3]  # type: ignore[return-value]


class KernelDriver(abc.ABC):
    """Loads kernel modules and launches their entry points. One instance per device."""

    #: array module of this driver's arrays (cupy or numpy)
    xp: Any
    #: short name for info(): "cupy" or "emu"
    name: str = "abstract"

    @abc.abstractmethod
    def load(self, module: str, options: tuple[str, ...] = (), arch: str | None = None) -> Any:
        """Compile (or fetch from cache) ``kernels/<module>.cu`` with compiler ``options``
        (e.g. ``("-DTILE_M=64",)``; the same options reach NVRTC and g++) and return a handle.
        ``arch`` (e.g. "sm_90a") asks a GPU driver for that exact target instead of the
        device's default (the emulator ignores it). Raises ``KernelError`` with the compiler's
        message when it does not compile."""

    @abc.abstractmethod
    def launch(self, module: Any, kernel: str, grid, block, args: Sequence[Any],
               shared_mem: int = 0) -> None:
        """Launch entry point ``kernel`` of a loaded module on a ``grid`` of ``block``-sized
        thread blocks (ints or 1-3-tuples) with ``shared_mem`` bytes of dynamic shared memory.
        Asynchronous on a GPU; errors surface as ``KernelError`` naming the kernel."""

    @abc.abstractmethod
    def synchronize(self) -> None:
        """Wait for every launch to finish."""

    def info(self) -> dict:
        """Device description for ``Backend.info()``."""
        return {"driver": self.name}
