"""What machine a measurement ran on: CPU, cores, BLAS and threads, library versions, GPU.

Everything here is best effort and never raises: a missing package or an unreadable file
becomes an absent key, so the report header shows what is known and nothing else.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import os
import platform
import socket


def cpu_model() -> str:
    """The CPU's marketing name (from /proc/cpuinfo on Linux, else platform)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def blas_info() -> dict:
    """BLAS library, version, architecture and thread count as threadpoolctl sees them."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return {}
    import numpy  # noqa: F401  (loads the BLAS so threadpoolctl can see it)

    out = {}
    for pool in threadpool_info():
        api = pool.get("user_api")
        if api == "blas" and "blas" not in out:
            out["blas"] = f"{pool.get('internal_api')} {pool.get('version')}"
            out["blas_threads"] = pool.get("num_threads")
            if pool.get("architecture"):
                out["blas_arch"] = pool.get("architecture")
        elif api == "openmp" and "openmp_threads" not in out:
            out["openmp_threads"] = pool.get("num_threads")
    return out


def gpu_info() -> dict:
    """GPU name, memory, driver and CUDA runtime from the cuda backend's info(), if usable."""
    from .backends import get_backend, unavailable_reason

    if unavailable_reason("cuda") is not None:
        return {}
    try:
        info = dict(get_backend("cuda").info())
    except Exception:  # a broken driver must not break the report header
        return {}
    info.pop("backend", None)
    return {f"gpu_{k}" if not k.startswith("gpu") else k: v for k, v in info.items()}


def machine_info(include_gpu: bool = True) -> dict:
    """One flat dict describing this machine (JSON-serialisable)."""
    info = {
        "hostname": socket.gethostname(),
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }
    for pkg in ("numpy", "numba", "cupy", "cupy-cuda12x", "cupy-cuda13x", "torch", "mlpaccel"):
        v = _version(pkg)
        if v:
            info[pkg.replace("-", "_")] = v
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS",
                "OPENBLAS_CORETYPE"):
        if os.environ.get(var):
            info[var] = os.environ[var]
    info.update(blas_info())
    if include_gpu:
        info.update(gpu_info())
    return info


def describe(info: dict) -> str:
    """A one-line label for a machine: GPU name if any, else CPU model and core count."""
    gpu = info.get("gpu_name") or info.get("gpu_device") or info.get("gpu_device_name")
    if gpu:
        return f"{gpu} ({info.get('hostname', '?')})"
    return f"{info.get('cpu', '?')}, {info.get('cpu_count', '?')} cores"
