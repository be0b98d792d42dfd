"""One fused SGD training step of a small MLP on cuda / cuda-emu (kernels/fused_mlp.cu).

For MLPs whose every width is <= 128 (float32, ReLU hidden layers, linear output + softmax
cross-entropy, loss = batch mean) a whole step - forward, loss, backward, SGD update - is two
kernel launches instead of ~13: launch 1 runs forward and backward of a tile of batch rows per
block with the activations in shared memory and writes each block's partial weight/bias
gradients; launch 2 adds the partials in a fixed order (deterministic, no float atomics) and
applies ``p -= lr * g``.

    >>> step = FusedMLPStep(backend, [2, 16, 16, 2], batch=64)
    >>> loss = step.step(params, x, t, lr=0.05)   # params: flat, MLP layout; updated in place

``params`` uses the MLP's flat layout (per layer W (n_in, n_out) row-major, then b), so
``step.step(model._params, x, t, lr)`` trains an ``MLP`` in place (see :meth:`for_model`).
``step`` allocates nothing, so it can be recorded with ``backend.capture``; a Python ``lr`` is
then frozen in the graph - pass a 1-element float32 device array to change it between replays.
"""

from __future__ import annotations

import numpy as np

from ..params import ParamLayout

MAX_WIDTH = 128
MAX_LAYERS = 16
THREADS = 256
TILE_ROWS = (8, 16, 32)
MAX_SMEM = 227 * 1024  # per-block opt-in limit on H100/H200 (and the emulator's)
MODULE = "fused_mlp"
_INSTEAD = ("use mlpaccel.MLP (its regular per-op step handles any size) on the same backend")


def _act_stride(w: int) -> int:
    return (w + 1) | 1


def smem_bytes(layer_sizes, tile_rows: int) -> int:
    """Dynamic shared memory of launch 1 (the same sum as the kernel's header comment)."""
    n = list(layer_sizes)
    L = len(n) - 1
    acts = sum(tile_rows * _act_stride(w) for w in n[:L])
    sd = max(n[1:]) | 1
    ws = max((n[l] + 1) * (n[l + 1] | 1) for l in range(L))
    return 4 * (acts + 2 * tile_rows * sd + ws)


def flops_per_step(layer_sizes, batch: int) -> int:
    """Multiply-adds x 2 of one step: forward, weight gradients (incl. bias) and dX (not for
    the first layer)."""
    n = list(layer_sizes)
    f = 0
    for l in range(len(n) - 1):
        f += 2 * batch * (n[l] + 1) * n[l + 1] * 2  # forward + dW
        if l > 0:
            f += 2 * batch * n[l] * n[l + 1]  # dX
    return f


class FusedMLPStep:
    """Two-launch SGD step for one MLP shape and batch size on ``backend`` (a ``CudaBackend``:
    ``cuda`` or ``cuda-emu``). Raises ValueError for shapes it does not support.

    ``rows_per_block`` (8, 16 or 32) and ``max_blocks`` override the launch-1 tiling (tests,
    benchmarks); by default the smallest tile that keeps <= 2 blocks per multiprocessor busy.
    """

    launches = 2

    def __init__(self, backend, layer_sizes, batch: int, rows_per_block: int | None = None,
                 max_blocks: int | None = None) -> None:
        from .cuda import CudaBackend

        if not isinstance(backend, CudaBackend):
            raise TypeError(f"FusedMLPStep runs on the cuda or cuda-emu backend, got "
                            f"{getattr(backend, 'name', type(backend).__name__)!r}; {_INSTEAD}")
        sizes = list(layer_sizes) if not isinstance(layer_sizes, (str, bytes)) else []
        if len(sizes) < 2 or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool)
                                     and s >= 1 for s in sizes):
            raise ValueError(f"layer_sizes must be >= 2 positive integers [n_in, ..., n_out], "
                             f"got {layer_sizes!r}")
        sizes = [int(s) for s in sizes]
        if max(sizes) > MAX_WIDTH:
            raise ValueError(f"the fused step keeps a tile's activations in shared memory and "
                             f"supports widths <= {MAX_WIDTH}; layer_sizes {sizes} has width "
                             f"{max(sizes)}: {_INSTEAD}")
        if len(sizes) - 1 > MAX_LAYERS:
            raise ValueError(f"the fused step supports <= {MAX_LAYERS} layers, got "
                             f"{len(sizes) - 1}: {_INSTEAD}")
        if sizes[-1] < 2:
            raise ValueError("softmax cross-entropy needs >= 2 output units, got 1")
        if not isinstance(batch, (int, np.integer)) or isinstance(batch, bool) or batch < 1:
            raise ValueError(f"batch must be a positive integer, got {batch!r}")
        self.backend = backend
        self.layer_sizes = sizes
        self.batch = int(batch)
        self.n_layers = len(sizes) - 1
        self.layout = ParamLayout(sizes, True)
        self.n_params = self.layout.size
        n_sm = max(1, backend.max_blocks // 8)  # max_blocks = 8 x multiprocessors
        cap = int(max_blocks) if max_blocks is not None else 2 * n_sm
        if cap < 1:
            raise ValueError(f"max_blocks must be >= 1, got {max_blocks}")
        if rows_per_block is None:
            fits = [tm for tm in TILE_ROWS if -(-self.batch // tm) <= cap
                    and smem_bytes(sizes, tm) <= MAX_SMEM]
            rows_per_block = fits[0] if fits else TILE_ROWS[-1]
        if rows_per_block not in TILE_ROWS:
            raise ValueError(f"rows_per_block must be one of {TILE_ROWS}, got {rows_per_block}")
        self.rows_per_block = int(rows_per_block)
        self.smem = smem_bytes(sizes, self.rows_per_block)
        if self.smem > MAX_SMEM:
            raise ValueError(f"layer_sizes {sizes} need {self.smem} bytes of shared memory per "
                             f"block at {self.rows_per_block} rows per block (limit {MAX_SMEM}): "
                             f"too many layers for the fused step; {_INSTEAD}")
        tiles = -(-self.batch // self.rows_per_block)
        self.grid = min(tiles, cap)
        self.kernel = f"fused_mlp_fwdbwd_tm{self.rows_per_block}_f32"
        xp = backend.xp
        with backend._device_ctx():
            self._dims = xp.asarray(np.asarray(sizes, dtype=np.int32))
        self._part = backend.empty((self.grid * self.n_params,), np.float32)
        self._loss_part = backend.empty((self.grid,), np.float32)
        self.loss = backend.zeros((), np.float32)

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def for_model(cls, model, batch: int, **kwargs) -> FusedMLPStep:
        """A fused step for ``model`` (an ``mlpaccel.MLP``): checks that the model is what the
        kernel computes (float32, biases, ReLU hidden layers, softmax cross-entropy); then
        ``step(model._params, x, t, lr)`` trains it in place."""
        why = []
        if np.dtype(model.dtype) != np.float32:
            why.append(f"dtype {np.dtype(model.dtype).name} (float32 only)")
        if not model.use_bias:
            why.append("use_bias=False (the kernel's layout has biases)")
        if any(a != "relu" for a in model.activations[:-1]):
            why.append(f"hidden activations {model.activations[:-1]} (relu only)")
        if model.loss.name != "cross_entropy":
            why.append(f"loss {model.loss.name!r} (cross_entropy only)")
        if why:
            raise ValueError("the fused step does not compute this model: " + "; ".join(why)
                             + f"; {_INSTEAD}")
        return cls(model.backend, model.layer_sizes, batch, **kwargs)

    def info(self) -> dict:
        return {"layer_sizes": self.layer_sizes, "batch": self.batch,
                "rows_per_block": self.rows_per_block, "blocks": self.grid,
                "threads": THREADS, "smem_bytes": self.smem, "n_params": self.n_params,
                "partial_bytes": 4 * self.grid * self.n_params, "launches": self.launches,
                "flops": flops_per_step(self.layer_sizes, self.batch)}

    # ------------------------------------------------------------------ the step
    def _check(self, what: str, a, shape) -> None:
        B = self.backend
        if not isinstance(a, B.xp.ndarray):
            raise TypeError(f"{what} must be a {B.name} device array (backend.asarray(..., "
                            f"np.float32)), got {type(a).__name__}")
        if a.dtype != np.float32 or tuple(a.shape) != tuple(shape) or not a.flags.c_contiguous:
            raise ValueError(f"{what} must be a C-contiguous float32 array of shape "
                             f"{tuple(shape)}, got {a.dtype} {tuple(a.shape)}")

    def step(self, params, x, t, lr):
        """One SGD step: ``params`` (flat, MLP layout) updated in place with the mean gradient
        of softmax-CE over the batch ``x`` (batch, n_in) with one-hot/probability targets
        ``t`` (batch, n_out). Returns the loss before the update as a 0-d device array (the
        same buffer every call). ``lr``: a float, or a 1-element float32 device array read on
        the device (what a recorded CUDA graph needs to change it)."""
        B = self.backend
        self._check("params", params, (self.n_params,))
        self._check("x", x, (self.batch, self.layer_sizes[0]))
        self._check("t", t, (self.batch, self.layer_sizes[-1]))
        B._launch(MODULE, self.kernel, self.grid, THREADS,
                  (params, x, t, self._dims, np.int32(self.n_layers), np.int32(self.batch),
                   self._part, self._loss_part, np.int64(self.n_params)), shared_mem=self.smem)
        common = (self._part, np.int32(self.grid), np.int64(self.n_params))
        tail = (self._loss_part, self.loss, np.int32(self.batch))
        grid2 = B._grid(self.n_params)
        if isinstance(lr, B.xp.ndarray):
            if lr.size != 1 or lr.dtype != np.float32:
                raise ValueError(f"a device lr must be one float32 element, got {lr.dtype} "
                                 f"{tuple(lr.shape)}")
            B._launch(MODULE, "fused_mlp_sgd_dlr_f32", grid2, THREADS,
                      (params, *common, lr.reshape(()) if lr.ndim else lr, *tail))
        else:
            B._launch(MODULE, "fused_mlp_sgd_f32", grid2, THREADS,
                      (params, *common, np.float32(lr), *tail))
        return self.loss


__all__ = ["FusedMLPStep", "MAX_WIDTH", "flops_per_step", "smem_bytes"]
