"""The flat parameter layout: every layer's W and b live in ONE 1-D buffer, layer by layer.

Gradients and optimizer states use the same layout, so one optimizer call updates all layers,
and snapshots, moves and save/load are one copy of one buffer.
"""

from __future__ import annotations

import numpy as np


class ParamLayout:
    """Offsets of ``W_l`` (fan_in, fan_out) and ``b_l`` (fan_out,) in the flat buffer."""

    def __init__(self, layer_sizes, use_bias: bool) -> None:
        self.layer_sizes = tuple(int(s) for s in layer_sizes)
        self.use_bias = bool(use_bias)
        self.entries = []  # (W offset, W shape, b offset or None, b shape)
        off = 0
        for fan_in, fan_out in zip(self.layer_sizes[:-1], self.layer_sizes[1:]):
            w_off = off
            off += fan_in * fan_out
            b_off = None
            if self.use_bias:
                b_off = off
                off += fan_out
            self.entries.append((w_off, (fan_in, fan_out), b_off, (fan_out,)))
        self.size = off

    def views(self, backend, flat) -> list:
        """``[(W, b), ...]`` backend views into ``flat`` (b is None without biases)."""
        out = []
        for w_off, w_shape, b_off, b_shape in self.entries:
            W = backend.view(flat, w_off, w_shape)
            b = backend.view(flat, b_off, b_shape) if b_off is not None else None
            out.append((W, b))
        return out

    def flatten(self, weights, dtype) -> np.ndarray:
        """Host ``[(W, b), ...]`` -> flat host array; shapes must match the layout exactly."""
        flat = np.empty(self.size, dtype=dtype)
        if len(weights) != len(self.entries):
            raise ValueError(f"expected {len(self.entries)} (W, b) pairs, got {len(weights)}")
        for i, (pair, (w_off, w_shape, b_off, b_shape)) in enumerate(zip(weights, self.entries)):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise ValueError(f"layer {i}: expected a (W, b) pair, got {type(pair).__name__}")
            W, b = pair
            W = _as_float_array(W, f"layer {i} W")
            if W.shape != w_shape:
                raise ValueError(f"layer {i}: W must have shape {w_shape} (fan_in, fan_out), "
                                 f"got {W.shape}")
            flat[w_off:w_off + W.size] = W.ravel()
            if b_off is None:
                if b is not None:
                    raise ValueError(f"layer {i}: the model has use_bias=False, so b must be "
                                     "None")
                continue
            if b is None:
                raise ValueError(f"layer {i}: b is None but the model has biases (use_bias=True)")
            b = _as_float_array(b, f"layer {i} b").reshape(-1)
            if b.shape != b_shape:
                raise ValueError(f"layer {i}: b must have shape {b_shape}, got {b.shape}")
            flat[b_off:b_off + b.size] = b
        if not np.all(np.isfinite(flat)):
            raise ValueError("weights contain NaN or infinity")
        return flat

    def unflatten(self, flat: np.ndarray) -> list:
        """Flat host array -> ``[(W, b), ...]`` new host arrays."""
        out = []
        for w_off, w_shape, b_off, b_shape in self.entries:
            W = flat[w_off:w_off + w_shape[0] * w_shape[1]].reshape(w_shape).copy()
            b = flat[b_off:b_off + b_shape[0]].copy() if b_off is not None else None
            out.append((W, b))
        return out


def _as_float_array(x, what: str) -> np.ndarray:
    a = np.asarray(x)
    if a.dtype.kind not in "fiub":
        raise TypeError(f"{what} must be numeric, got dtype {a.dtype}")
    return a.astype(np.float64)
