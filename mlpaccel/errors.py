"""Typed errors raised by mlpaccel. Each message says what went wrong and what to do."""


class MLPAccelError(Exception):
    """Base class of every error mlpaccel raises on purpose."""


class BackendUnavailableError(MLPAccelError, RuntimeError):
    """A backend was named explicitly but cannot run here (package missing, no device, ...)."""


class TrainingDivergedError(MLPAccelError, RuntimeError):
    """The loss became NaN or infinite; the model keeps its last good weights."""


class KernelError(MLPAccelError, RuntimeError):
    """A CUDA kernel (real or emulated) failed: compile error, race, out-of-bounds, divergence."""


class DeviceOutOfMemoryError(MLPAccelError, MemoryError):
    """The device could not allocate the bytes asked for."""
