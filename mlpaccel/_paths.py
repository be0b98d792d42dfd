"""Where the package's non-Python files live, installed or in a source checkout."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path


def kernel_dir() -> Path:
    """Directory holding kernels/*.cu: the installed package ``mlpaccel.kernels``, else the
    ``kernels/`` folder beside the ``mlpaccel/`` source folder (a plain checkout on PYTHONPATH)."""
    spec = importlib.util.find_spec("mlpaccel.kernels")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return Path(__file__).resolve().parent.parent / "kernels"


def cache_dir() -> Path:
    """Per-user cache folder (compiled emulator libraries, tuning tables, datasets)."""
    base = os.environ.get("MLPACCEL_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "mlpaccel"
    )
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path
