"""Backend registry: name -> lazy factory. ``get_backend("numba")`` imports numba only then.

Names: ``python``, ``numpy`` (alias ``cpu``), ``numba``, ``cuda`` (aliases ``gpu``, ``cuda:N``
for device N), ``cuda-emu`` (the cuda backend's kernels run on the CPU; never chosen by
``auto``), and ``auto``: cuda if usable, else numba if installed, else numpy. The environment
variable ``MLPACCEL_BACKEND`` says what ``auto`` means.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
import threading
from collections.abc import Callable

from ..errors import BackendUnavailableError
from .base import Backend

log = logging.getLogger("mlpaccel")

#: name -> "module:Class"; a fifth backend is one more line here (or one register_backend call)
_REGISTRY: dict[str, str | Callable[..., Backend]] = {
    "python": "mlpaccel.backends.python:PythonBackend",
    "numpy": "mlpaccel.backends.numpy:NumpyBackend",
    "numba": "mlpaccel.backends.numba:NumbaBackend",
    "cuda": "mlpaccel.backends.cuda:CudaBackend",
    "cuda-emu": "mlpaccel.backends.cuda:CudaEmuBackend",
}
_ALIASES = {"cpu": "numpy", "gpu": "cuda", "sisd": "python", "cuda_emu": "cuda-emu",
            "emu": "cuda-emu"}
_AUTO_ORDER = ("cuda", "numba", "numpy")

_instances: dict[tuple, Backend] = {}
_lock = threading.Lock()
_auto_logged = False


def register_backend(name: str, factory: str | Callable[..., Backend]) -> None:
    """Add a backend: ``factory`` is a Backend subclass/callable or a ``"module:Class"`` path."""
    _REGISTRY[name.lower()] = factory
    backend_class.cache_clear()


def backend_names() -> list[str]:
    """Every registered backend name (available here or not)."""
    return list(_REGISTRY)


def _canonical(name: str) -> tuple[str, dict]:
    """``"cuda:1"`` -> ("cuda", {"device": 1}); aliases resolved; unknown names rejected."""
    if not isinstance(name, str):
        raise TypeError(f"backend must be a name or a Backend, got {type(name).__name__}")
    key = name.strip().lower()
    options: dict = {}
    if ":" in key:
        key, _, dev = key.partition(":")
        if not dev.isdigit():
            raise ValueError(f"device index in {name!r} must be an integer, e.g. 'cuda:0'")
        options["device"] = int(dev)
    key = _ALIASES.get(key, key)
    if key != "auto" and key not in _REGISTRY:
        import difflib

        valid = sorted(set(_REGISTRY) | set(_ALIASES) | {"auto"})
        close = difflib.get_close_matches(key, valid, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown backend {name!r}{hint}; valid names: {', '.join(valid)}")
    return key, options



@functools.cache
def backend_class(name: str) -> type[Backend] | Callable[..., Backend]:
    """Import and return the class (or factory) registered under a canonical name."""
    target = _REGISTRY[name]
    if not isinstance(target, str):
        return target
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def _reason(name: str) -> str | None:
    try:
        cls = backend_class(name)
    except Exception as exc:  # an import error of our own module: report, never raise
        return f"cannot import the {name} backend: {type(exc).__name__}: {exc}"
    probe = getattr(cls, "unavailable_reason", None)
    return probe() if probe else None


def unavailable_reason(name: str) -> str | None:
    """None if backend ``name`` can run here, else why not (and which extra to install)."""
    key, _ = _canonical(name)
    if key == "auto":
        return None
    return _reason(key)


def available_backends() -> list[str]:
    """The registered backends that can run on this machine, in ladder order."""
    return [n for n in _REGISTRY if _reason(n) is None]


def _resolve_auto() -> str:
    global _auto_logged
    wanted = os.environ.get("MLPACCEL_BACKEND", "").strip()
    if wanted and wanted.lower() != "auto":
        choice = wanted
    else:
        choice = next(n for n in _AUTO_ORDER if n == "numpy" or _reason(n) is None)
    if not _auto_logged:
        log.info("backend 'auto' -> %r", choice)
        _auto_logged = True
    return choice


def get_backend(name: str | Backend = "auto", **options) -> Backend:
    """Return the backend called ``name`` (an instance, shared per name and options).

    Raises ValueError for an unknown name and BackendUnavailableError (saying why and what to
    install) for a known backend that cannot run here. Never falls back silently."""
    if isinstance(name, Backend):
        return name
    key, opts = _canonical(name)
    if key == "auto":
        return get_backend(_resolve_auto(), **options)
    opts.update(options)
    reason = _reason(key)
    if reason is not None:
        raise BackendUnavailableError(f"backend {key!r} is not available: {reason}")
    cache_key = (key, tuple(sorted(opts.items())))
    with _lock:
        inst = _instances.get(cache_key)
        if inst is None:
            inst = backend_class(key)(**opts)
            _instances[cache_key] = inst
    return inst


__all__ = [
    "Backend",
    "BackendUnavailableError",
    "available_backends",
    "backend_names",
    "get_backend",
    "register_backend",
    "unavailable_reason",
]
