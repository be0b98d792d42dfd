"""mlpaccel: one MLP, four devices - measuring why AI needs dedicated hardware.

>>> from mlpaccel import MLP
>>> model = MLP([784, 256, 10], backend="numpy")      # or "python", "numba", "cuda"

Backends are imported lazily: ``import mlpaccel`` loads neither numba nor cupy.
"""

from __future__ import annotations

from .backends import (
    Backend,
    available_backends,
    backend_names,
    get_backend,
    register_backend,
    unavailable_reason,
)
from .errors import (
    BackendUnavailableError,
    DeviceOutOfMemoryError,
    KernelError,
    MLPAccelError,
    TrainingDivergedError,
)

__version__ = "0.1.0"

_LAZY = {  # public names that live in modules the trainer issue provides; loaded on first use
    "MLP": "mlpaccel.model",
    "Perceptron": "mlpaccel.model",
    "optim": "mlpaccel.optim",
    "datasets": "mlpaccel.datasets",
    "losses": "mlpaccel.losses",
    "activations": "mlpaccel.activations",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mlpaccel' has no attribute {name!r}")
    import importlib

    mod = importlib.import_module(module)
    value = mod if module.endswith("." + name) else getattr(mod, name)
    globals()[name] = value
    return value


__all__ = [
    "MLP", "Perceptron", "Backend", "BackendUnavailableError", "DeviceOutOfMemoryError",
    "KernelError", "MLPAccelError", "TrainingDivergedError", "available_backends",
    "backend_names", "get_backend", "register_backend", "unavailable_reason", "__version__",
]
