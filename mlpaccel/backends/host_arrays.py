"""Array management for the backends whose arrays are NumPy arrays in host memory
(numpy, numba): one definition of asarray / to_numpy / zeros / empty / view / assign."""

from __future__ import annotations

import numpy as np

from .base import check_dtype


class HostArrays:
    """Mixin: the Backend array methods for C-contiguous NumPy arrays."""

    def asarray(self, x, dtype=None):
        if dtype is None:
            dtype = x.dtype if isinstance(x, np.ndarray) and x.dtype.kind == "f" else np.float32
        return np.array(x, dtype=check_dtype(dtype), order="C", copy=True)

    def to_numpy(self, a):
        return np.array(a, copy=True)

    def zeros(self, shape, dtype=np.float32):
        return np.zeros(shape, dtype=check_dtype(dtype))

    def empty(self, shape, dtype=np.float32):
        return np.empty(shape, dtype=check_dtype(dtype))

    def view(self, flat, offset, shape):
        size = int(np.prod(shape, dtype=np.int64))
        return flat[offset:offset + size].reshape(shape)

    def assign(self, dst, src):
        dst[...] = np.asarray(src).reshape(dst.shape)
