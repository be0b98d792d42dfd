"""Where the package's non-Python files live, installed or in a source checkout."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path


def kernel_dir() -> Path:
    """Directory holding kernels/*.cu: the ``kernels/`` folder beside the imported
    ``mlpaccel/`` source folder when there is one (a source checkout, e.g. on PYTHONPATH:
    its own kernels, even when another checkout is installed in editable mode and owns the
    name ``mlpaccel.kernels``), else the installed package ``mlpaccel.kernels``."""
    beside = Path(__file__).resolve().parent.parent / "kernels"
    if (beside / "common.cuh").is_file():
        return beside
    spec = importlib.util.find_spec("mlpaccel.kernels")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return beside


def cache_dir() -> Path:
    """Per-user cache folder (compiled emulator libraries, tuning tables, datasets)."""
    base = os.environ.get("MLPACCEL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "mlpaccel"
    )
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path
