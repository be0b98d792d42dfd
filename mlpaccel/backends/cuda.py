"""cuda: the SIMT rung. CuPy arrays, our own CUDA C kernels (kernels/*.cu), CUDA graphs.

Thousands of threads run the same instruction stream on different elements; the GPU hides memory
latency by switching between warps instead of caching. Every op of the Backend contract is one of
our kernels (``kernels/elementwise.cu``, ``softmax.cu``, ``reduce.cu``, ``optim.cu``, and the GEMM
of ``cuda_gemm.py`` / ``kernels/gemm.cu``); CuPy only allocates, copies and gathers rows.

Two backends share this file above the launcher (``launch.KernelDriver``):

* ``cuda`` - :class:`CupyDriver`: NVRTC through ``cupy.RawModule``, launches on the current CuPy
  stream, ``capture()`` records a whole step into a CUDA graph;
* ``cuda-emu`` - ``cuda_emu.EmuDriver``: the same ``.cu`` files compiled with g++ and run on the
  CPU with NumPy arrays (slow by design; it exists so CI exercises this very code).

Launch configurations are chosen here, the same for both drivers: 256-thread blocks, grid-stride
loops capped at ``8 x multiprocessors`` blocks, one warp per row for row-wise ops.
"""

from __future__ import annotations

import contextlib
import importlib.util
import re
import shutil
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import activations as _act
from .._paths import kernel_dir
from ..errors import DeviceOutOfMemoryError, KernelError
from . import reference as ref
from .base import Backend, _below, check_dtype, host_row_indices
from .launch import KernelDriver, dim3

BLOCK = 256  # threads per block of the 1-D kernels (8 warps)
_SFX = {np.dtype(np.float32): "f32", np.dtype(np.float64): "f64"}
_GEMMS = ("ours", "cublas")
_PRECISIONS = ("fp32", "tf32")
_CUDA_EXTRA = ("CuPy is not installed: pip install 'mlpaccel[cuda13]' (CUDA 13 driver) or "
               "'mlpaccel[cuda]' (CUDA 12)")


# ====================================================================== the CuPy driver
class _Module:
    """A compiled RawModule and the functions fetched from it (get_function is not free)."""

    __slots__ = ("name", "raw", "functions")

    def __init__(self, name: str, raw: Any) -> None:
        self.name, self.raw, self.functions = name, raw, {}


class _CubinFunction:
    """A function of a cubin we loaded ourselves (``cupy.cuda.function.Function``) with the
    ``max_dynamic_shared_size_bytes`` setter that ``RawKernel`` offers."""

    __slots__ = ("fn", "_driver")

    def __init__(self, cupy, fn) -> None:
        self.fn = fn
        self._driver = cupy.cuda.driver

    @property
    def max_dynamic_shared_size_bytes(self) -> int:
        attr = getattr(self._driver, "CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES", 8)
        return self._driver.funcGetAttribute(attr, self.fn.ptr)

    @max_dynamic_shared_size_bytes.setter
    def max_dynamic_shared_size_bytes(self, nbytes: int) -> None:
        attr = getattr(self._driver, "CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES", 8)
        self._driver.funcSetAttribute(self.fn.ptr, attr, int(nbytes))

    def __call__(self, grid, block, args, shared_mem: int = 0):
        self.fn(grid, block, args, shared_mem=shared_mem)


class _CubinModule:
    """``cupy.cuda.function.Module`` with RawModule's ``get_function`` spelling."""

    __slots__ = ("cupy", "module")

    def __init__(self, cupy, module) -> None:
        self.cupy, self.module = cupy, module

    def get_function(self, name: str) -> _CubinFunction:
        return _CubinFunction(self.cupy, self.module.get_function(name))


class CupyDriver(KernelDriver):
    """Compiles ``kernels/<module>.cu`` with NVRTC (``cupy.RawModule``) and launches on the
    current CuPy stream of device ``device``. Modules are cached per (device, module, options)."""

    name = "cupy"

    def __init__(self, device: int = 0) -> None:
        import cupy

        self.cupy = cupy
        self.xp = cupy
        self.device = int(device)
        self._dev = cupy.cuda.Device(self.device)
        self._modules: dict[tuple, _Module] = {}
        props = cupy.cuda.runtime.getDeviceProperties(self.device)
        self.props = props
        self.sm_count = int(props.get("multiProcessorCount", 1))

    def load(self, module: str, options: tuple[str, ...] = (), arch: str | None = None
             ) -> _Module:
        key = (self.device, module, tuple(options), arch)
        mod = self._modules.get(key)
        if mod is not None:
            return mod
        kdir = kernel_dir()
        path = kdir / f"{module}.cu"
        try:
            code = path.read_text()
        except OSError as exc:
            raise KernelError(f"kernel source {path} cannot be read: {exc}") from exc
        opts = ("--std=c++17", f"-I{kdir}", *options)
        if arch is not None:
            raw = self._load_for_arch(module, code, opts, arch)
        else:
            try:
                with self._dev:
                    raw = self.cupy.RawModule(code=code, options=opts)
                    raw.compile()  # compile now so a syntax error surfaces here, not at launch
            except Exception as exc:  # cupy.cuda.compiler.CompileException and NVRTC errors
                raise KernelError(f"kernels/{module}.cu does not compile with NVRTC "
                                  f"(options {opts}):\n{exc}") from exc
        mod = self._modules[key] = _Module(module, raw)
        return mod

    def _load_for_arch(self, module: str, code: str, opts: tuple[str, ...], arch: str):
        """Compile with NVRTC ourselves for exactly ``arch`` (e.g. "sm_90a": wgmma exists only
        there) and load the cubin. cupy.RawModule cannot do it: CuPy appends its own
        ``-arch=sm_XY`` for the device (never the "a" variant), so an arch in our options
        would be a second, conflicting one. We add ``-ftz=true`` as CuPy does, so these
        kernels see the same float mode as every other module."""
        m = re.fullmatch(r"sm_(\d)(\d+)a?", arch)
        cc = f"{self.props.get('major')}.{self.props.get('minor')}"
        if m is None or f"{m.group(1)}.{m.group(2)}" != cc:
            raise KernelError(f"kernels/{module}.cu is built for {arch} only; device "
                              f"{self.device} is compute capability {cc}")
        try:
            from cupy_backends.cuda.libs import nvrtc
        except ImportError:  # older CuPy
            from cupy.cuda import nvrtc
        nv_opts = [*opts, f"-arch={arch}", "-ftz=true"]
        try:
            prog = nvrtc.createProgram(code, f"{module}.cu", [], [])
        except Exception as exc:  # noqa: BLE001
            raise KernelError(f"NVRTC cannot create a program for kernels/{module}.cu: "
                              f"{exc}") from exc
        try:
            try:
                nvrtc.compileProgram(prog, nv_opts)
            except Exception as exc:  # nvrtc.NVRTCError: the log says why
                try:
                    log = nvrtc.getProgramLog(prog)
                except Exception:  # noqa: BLE001
                    log = ""
                raise KernelError(f"kernels/{module}.cu does not compile with NVRTC for "
                                  f"{arch} (options {nv_opts}):\n{exc}\n{log}") from exc
            try:
                cubin = nvrtc.getCUBIN(prog)
            except Exception as exc:  # noqa: BLE001
                raise KernelError(f"NVRTC gave no {arch} cubin for kernels/{module}.cu "
                                  f"(CuPy/NVRTC too old for getCUBIN?): {exc}") from exc
        finally:
            nvrtc.destroyProgram(prog)
        try:
            with self._dev:
                raw = self.cupy.cuda.function.Module()
                raw.load(cubin)
        except Exception as exc:  # noqa: BLE001
            raise KernelError(f"loading the {arch} cubin of kernels/{module}.cu on device "
                              f"{self.device} failed: {exc}") from exc
        return _CubinModule(self.cupy, raw)

    def launch(self, module: _Module, kernel: str, grid, block, args: Sequence[Any],
               shared_mem: int = 0) -> None:
        fn = module.functions.get(kernel)
        try:
            if fn is None:
                fn = module.functions[kernel] = module.raw.get_function(kernel)
            if shared_mem > 48 * 1024:  # beyond the default a kernel must opt in
                fn.max_dynamic_shared_size_bytes = shared_mem
            with self._dev:
                fn(dim3(grid), dim3(block), tuple(args), shared_mem=shared_mem)
        except Exception as exc:
            raise KernelError(f"launching {module.name}.{kernel} (grid {dim3(grid)}, block "
                              f"{dim3(block)}, shared {shared_mem} B) failed: {exc}") from exc

    def synchronize(self) -> None:
        with self._dev:
            self.cupy.cuda.runtime.deviceSynchronize()

    def info(self) -> dict:
        rt = self.cupy.cuda.runtime
        p = self.props
        name = p.get("name", b"?")
        free, total = self._dev.mem_info
        return {
            "driver": self.name,
            "device": name.decode() if isinstance(name, bytes) else str(name),
            "device_index": self.device,
            "compute_capability": f"{p.get('major')}.{p.get('minor')}",
            "multiprocessors": self.sm_count,
            "memory_total_gib": round(total / 2**30, 2),
            "memory_free_gib": round(free / 2**30, 2),
            "cuda_driver": _cuda_version(rt.driverGetVersion()),
            "cuda_runtime": _cuda_version(rt.runtimeGetVersion()),
            "cupy": self.cupy.__version__,
        }


def _cuda_version(v: int) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}"


# ====================================================================== graphs
class _GraphStep:
    """``capture(fn)`` on a GPU: call 1 runs ``fn`` eagerly on a private stream (it allocates
    what it needs); call 2 records ``fn`` into a CUDA graph and launches it; later calls only
    launch the graph (one host call for the whole step) and return call 2's result arrays,
    which every replay rewrites in place. If recording fails, ``fn`` runs eagerly from then on
    and ``info()["graph"]`` says why. Python scalars that ``fn`` passes to kernels are frozen
    in the graph: everything that changes per step must live in device buffers."""

    def __init__(self, backend: CudaBackend, fn) -> None:
        self.backend, self.fn = backend, fn
        self.calls = 0
        self.graph = None
        self.result = None
        self.eager_reason: str | None = None
        self.keep: list = []  # arrays allocated while recording: alive as long as the graph
        self._events = None  # two reusable events (creating one per call costs host time)

    def _run_on_stream(self, body):
        cuda = self.backend.driver.cupy.cuda
        stream = self.backend._capture_stream()
        outer = cuda.get_current_stream()
        if self._events is None:
            self._events = (cuda.Event(disable_timing=True), cuda.Event(disable_timing=True))
        ev_in, ev_out = self._events
        stream.wait_event(outer.record(ev_in))  # see the producer's writes on the outer stream
        try:
            with stream:
                return body(stream)
        finally:
            outer.wait_event(stream.record(ev_out))  # consumers on the outer stream wait for us

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if args or kwargs or self.eager_reason is not None:
            return self.fn(*args, **kwargs)
        if self.graph is not None:
            return self._run_on_stream(lambda s: (self.graph.launch(s), self.result)[1])
        if self.calls == 1:
            return self._run_on_stream(lambda s: self.fn())
        return self._run_on_stream(self._record)

    def _record(self, stream):
        be = self.backend
        be._capture_keep = self.keep
        result = None
        try:
            # relaxed: a recorded epoch allocates its temporaries (kept alive in self.keep)
            # while recording, and cudaMalloc is "unsafe" in the default global mode
            mode = getattr(be.driver.cupy.cuda.runtime, "streamCaptureModeRelaxed", None)
            stream.begin_capture(mode) if mode is not None else stream.begin_capture()
            try:
                result = self.fn()
            finally:
                graph = stream.end_capture()  # always end, or the stream stays unusable
        except Exception as exc:  # nothing recorded ran
            why = f"{type(exc).__name__}: {exc}"
            be._capture_keep = None
            if getattr(be, "concurrent_backward", False):
                # the second stream's fork/join is the newest thing in a recording: record
                # on one stream before giving up on graphs (and say so in info())
                be.concurrent_backward, be._side = False, None
                result = self._record(stream)
                if self.graph is not None:
                    be._graph_state += (f" (on one stream: recording with the second stream "
                                        f"failed: {why})")
                return result
            self.eager_reason = why
            be._graph_state = f"eager: capture failed ({self.eager_reason})"
            return self.fn()
        finally:
            be._capture_keep = None
        self.graph, self.result = graph, result
        be._graph_state = "captured: recorded work replays as one CUDA graph launch"
        graph.launch(stream)
        return result


# ====================================================================== the backend
class CudaBackend(Backend):
    """Our kernels on an NVIDIA GPU. Options: ``device`` (index), ``gemm`` ("ours" or "cublas",
    the latter ``cupy.matmul`` for comparison only), ``precision`` ("fp32" or "tf32": TF32
    tensor cores in our GEMM, relative error ~1e-3), ``fused_mlp`` (default True: plain-SGD
    training of float32 ReLU/softmax-CE MLPs whose widths are all <= 128 runs each step as
    the fused kernels of ``cuda_fused_mlp``; False: always the layer-by-layer step),
    ``fused_head`` (default True: a softmax-CE output layer of <= 32 classes runs forward and
    backward as one kernel, ``output_layer_grad``; False: the composed ops) and
    ``head_blocks`` (that kernel's grid; default: ``cuda_head.default_blocks``; the kernel
    runs for batches <= ``cuda_head.MAX_FUSED_ROWS`` unless ``head_blocks`` is given) and
    ``concurrent_backward`` (default True: in ``linear_backward`` the weight gradient runs on
    a second stream beside the input gradient's GEMM - two small, latency-bound launches at
    once instead of one after the other; False: one stream, for comparison)."""

    name = "cuda"
    rung = ("SIMT: thousands of threads in lock-step warps; memory latency is hidden by "
            "switching warps, and a whole training epoch can be one CUDA graph launch.")
    #: adam_update takes the step count as a device array (so Adam can be recorded in a graph)
    device_step_count = True

    def __init__(self, device: int = 0, gemm: str = "ours", precision: str = "fp32",
                 fused_mlp: bool = True, fused_head: bool = True,
                 head_blocks: int | None = None, concurrent_backward: bool = True) -> None:
        self.fused_mlp = bool(fused_mlp)
        self.concurrent_backward = bool(concurrent_backward)
        self.fused_head = bool(fused_head)
        self.head_blocks = None if head_blocks is None else max(1, int(head_blocks))
        if gemm not in _GEMMS:
            raise ValueError(f"gemm must be one of {_GEMMS}, got {gemm!r}")
        if precision not in _PRECISIONS:
            raise ValueError(f"precision must be one of {_PRECISIONS}, got {precision!r}")
        self.device, self.gemm, self.precision = int(device), gemm, precision
        self.driver = self._make_driver()
        self.xp = self.driver.xp
        self._mods: dict[str, Any] = {}
        self._scratch: dict[tuple, Any] = {}
        self._retired: list = []  # replaced scratch buffers: a recorded graph may still use them
        self._capture_keep: list | None = None
        self._stream = None
        self._side = None  # (stream, fork event, join event) of _beside, made on first use
        self._lane = "main"  # "side" while work is issued to _beside's second stream
        self._graph_state = "not used yet"
        self.max_blocks = 8 * max(1, int(getattr(self.driver, "sm_count", 1) or 1))

    # ------------------------------------------------------------------ identity
    @classmethod
    def _probe(cls) -> str | None:
        if importlib.util.find_spec("cupy") is None:
            return _CUDA_EXTRA
        try:
            import cupy

            n = cupy.cuda.runtime.getDeviceCount()
        except Exception as exc:  # no driver, wrong CUDA major, ...
            return f"no CUDA device/driver usable by CuPy ({type(exc).__name__}: {exc})"
        if n < 1:
            return "no CUDA device/driver: CuPy sees 0 devices"
        return None

    def _make_driver(self) -> KernelDriver:
        import cupy

        n = cupy.cuda.runtime.getDeviceCount()
        if not 0 <= self.device < n:
            raise ValueError(f"CUDA device {self.device} does not exist; this machine has "
                             f"{n} (use cuda:0 .. cuda:{n - 1})")
        return CupyDriver(self.device)

    def info(self) -> dict:
        out = {"backend": self.name, "emulator": self.is_emulator, **self.driver.info(),
               "gemm": self.gemm if self.gemm == "cublas" else f"ours ({self.precision})",
               "graph": self._graph_state,
               "fused_mlp": ("on: plain-SGD steps of MLPs with every width <= 128 (float32, "
                             "ReLU, softmax-CE) run as two fused launches" if self.fused_mlp
                             else "off"),
               "fused_head": ("on: a softmax-CE output layer (<= 32 classes, batches <= "
                              f"{_head().MAX_FUSED_ROWS} rows) runs forward and backward as "
                              "one launch" if self.fused_head else "off"),
               "concurrent_backward": (("on: weight gradients run on a second stream beside "
                                        "the input gradient" + (
                                            "" if getattr(self.driver, "cupy", None) else
                                            " (the emulator runs both in issue order)"))
                                       if self.concurrent_backward else "off")}
        return out

    def synchronize(self) -> None:
        self.driver.synchronize()

    # ------------------------------------------------------------------ kernels
    def _launch(self, module: str, kernel: str, grid, block, args, shared_mem: int = 0):
        mod = self._mods.get(module)
        if mod is None:
            mod = self._mods[module] = self.driver.load(module)
        self.driver.launch(mod, kernel, grid, block, args, shared_mem)

    def _grid(self, n: int, per_thread: int = 1) -> int:
        """Blocks for a grid-stride loop over n items, each thread taking per_thread at a time."""
        return max(1, min(self.max_blocks, -(-n // (BLOCK * per_thread))))

    def _scratch_buf(self, key: str, n: int, dtype, zero: bool = False):
        """A cached device buffer of >= n elements (loss partials, column-sum partials, the
        reduction ticket counter). Reused across calls so that a recorded step allocates
        nothing; a grown buffer's predecessor is retired, never freed. Each lane (the current
        stream, ``_beside``'s second stream) has its own buffers: kernels running at the same
        time never share one."""
        dt = np.dtype(dtype)
        k = (key, self._lane, dt)
        buf = self._scratch.get(k)
        if buf is None or buf.size < n:
            if buf is not None:
                self._retired.append(buf)
            buf = self._alloc((max(n, 64),), dt, zero=zero)
            self._scratch[k] = buf
        return buf

    # ------------------------------------------------------------------ arrays
    def _alloc(self, shape, dtype, zero: bool):
        shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
        nbytes = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
        try:
            with self._device_ctx():
                a = (self.xp.zeros if zero else self.xp.empty)(shape, dtype=dtype)
        except MemoryError as exc:  # cupy's OutOfMemoryError and NumPy's are MemoryErrors
            raise DeviceOutOfMemoryError(
                f"{self.name}: could not allocate {nbytes} bytes ({nbytes / 2**20:.1f} MiB) for "
                f"an array of shape {shape} {np.dtype(dtype).name}: {exc}. Use a smaller batch "
                "or free arrays you no longer need.") from exc
        if self._capture_keep is not None:
            self._capture_keep.append(a)
        return a

    def _device_ctx(self):
        dev = getattr(self.driver, "_dev", None)
        return dev if dev is not None else contextlib.nullcontext()

    def asarray(self, x, dtype=None):
        if dtype is None:
            kind = getattr(getattr(x, "dtype", None), "kind", None)
            dtype = x.dtype if kind == "f" else np.float32
        dt = check_dtype(dtype)
        if not isinstance(x, self.xp.ndarray):
            x = np.asarray(x)
        nbytes = int(x.size) * dt.itemsize
        try:
            with self._device_ctx():
                return self.xp.array(x, dtype=dt, order="C", copy=True)
        except MemoryError as exc:
            raise DeviceOutOfMemoryError(
                f"{self.name}: could not allocate {nbytes} bytes for an array of shape "
                f"{tuple(x.shape)} {dt.name}: {exc}") from exc

    def to_numpy(self, a) -> np.ndarray:
        if isinstance(a, np.ndarray):
            return np.array(a, copy=True)
        return a.get()  # a CuPy array: one device-to-host copy

    def zeros(self, shape, dtype=np.float32):
        return self._alloc(shape, check_dtype(dtype), zero=True)

    def empty(self, shape, dtype=np.float32):
        return self._alloc(shape, check_dtype(dtype), zero=False)

    def view(self, flat, offset, shape):
        shape = (shape,) if isinstance(shape, (int, np.integer)) else tuple(shape)
        size = int(np.prod(shape, dtype=np.int64))
        if offset < 0 or offset + size > flat.size:
            raise ValueError(f"view of {size} elements at offset {offset} does not fit in a "
                             f"buffer of {flat.size}")
        return flat[offset:offset + size].reshape(shape)

    def assign(self, dst, src) -> None:
        src = src if isinstance(src, self.xp.ndarray) else self.xp.asarray(np.asarray(src))
        if src.size != dst.size:
            raise ValueError(f"assign: {src.size} elements do not fit into {dst.shape}")
        with self._device_ctx():
            self.xp.copyto(dst, src.reshape(dst.shape).astype(dst.dtype, copy=False))

    def row_indices(self, indices, n: int):
        """The indices checked on the host, then uploaded once (``take_rows`` does not check
        device indices again)."""
        with self._device_ctx():
            return self.xp.asarray(host_row_indices(indices, n))

    def take_rows(self, x, indices, out=None):
        """``x[indices]`` by our gather kernel (16-byte slots, one pass: an epoch's shuffle of
        60k x 784 floats moves 376 MB) for a C-contiguous 2-D float array; anything else by
        ``xp.take``. Host indices are range-checked on the host; device indices are not."""
        with self._device_ctx():
            if isinstance(indices, self.xp.ndarray) and not isinstance(indices, np.ndarray):
                idx = indices.astype(np.int64, copy=False)  # on the device: not checked
            else:  # host indices (NumPy arrays, also on cuda-emu, whose arrays are NumPy's)
                idx = self.xp.asarray(host_row_indices(indices, int(x.shape[0])))
            fits = (isinstance(x, self.xp.ndarray) and x.ndim == 2 and x.flags.c_contiguous
                    and x.dtype in (np.float32, np.float64) and idx.ndim == 1)
            if fits and out is not None:
                fits = (out.dtype == x.dtype and out.flags.c_contiguous
                        and tuple(out.shape) == (idx.shape[0], x.shape[1]))
            if not fits:
                return self.xp.take(x, idx, axis=0, out=out)
            k, cols = int(idx.shape[0]), int(x.shape[1])
            if out is None:
                out = self._alloc((k, cols), x.dtype, zero=False)
            if k * cols:
                idx = self.xp.ascontiguousarray(idx)
                self._launch("elementwise", f"take_rows_{self._sfx(x.dtype)}",
                             self._grid(k * cols, 4), BLOCK,
                             (x, idx, out, np.int64(k), np.int64(cols)))
            return out

    # ------------------------------------------------------------------ argument checks
    def _dev_array(self, x, dtype=None):
        """x as a C-contiguous device array of ``dtype`` (no copy when it already is one)."""
        if not isinstance(x, self.xp.ndarray):
            return self.asarray(x, dtype)
        if dtype is not None and x.dtype != dtype:
            x = x.astype(dtype)
        if not x.flags.c_contiguous:
            x = self.xp.ascontiguousarray(x)
        return x

    def _out(self, out, shape, dtype):
        if out is None:
            return self._alloc(tuple(shape), dtype, zero=False)
        if tuple(out.shape) != tuple(shape) or out.dtype != dtype:
            raise ValueError(f"out has shape {tuple(out.shape)} {out.dtype}, expected "
                             f"{tuple(shape)} {np.dtype(dtype).name}")
        if not out.flags.c_contiguous:
            raise ValueError("out must be C-contiguous (our kernels write it linearly)")
        return out

    @staticmethod
    def _same_shape(what: str, ref_arr, *others) -> None:
        for o in others:
            if tuple(o.shape) != tuple(ref_arr.shape):
                raise ValueError(f"{what}: shapes differ: {tuple(ref_arr.shape)} vs "
                                 f"{tuple(o.shape)}")

    def _sfx(self, dtype) -> str:
        return _SFX[check_dtype(dtype)]

    # ------------------------------------------------------------------ matmul
    def matmul(self, a, b, transpose_a=False, transpose_b=False, out=None):
        a = self._dev_array(a)
        b = self._dev_array(b, a.dtype)
        if a.ndim != 2 or b.ndim != 2:
            raise ValueError(f"matmul needs 2-D operands, got {a.shape} and {b.shape}")
        m, k = (a.shape[1], a.shape[0]) if transpose_a else a.shape
        k2, n = (b.shape[1], b.shape[0]) if transpose_b else b.shape
        if k != k2:
            raise ValueError(f"matmul: op(A) is {m}x{k} but op(B) is {k2}x{n}")
        if self.gemm == "cublas":
            res = self.xp.matmul(a.T if transpose_a else a, b.T if transpose_b else b)
            if out is None:
                return res
            self._out(out, (m, n), a.dtype)[...] = res
            return out
        out = self._out(out, (m, n), a.dtype)
        return _gemm().matmul(self.driver, a, b, transpose_a=transpose_a,
                              transpose_b=transpose_b, out=out, precision=self._precision(a.dtype),
                              split_k=self._split_k(), workspace=self._splitk_ws,
                        tiles=self._tiles)

    def _precision(self, dtype) -> str:
        """The GEMM precision for arrays of ``dtype``: the tf32 option applies to float32
        only (float64 always runs the fp64 kernels)."""
        return self.precision if np.dtype(dtype) == np.float32 else "fp32"

    def _split_k(self) -> int | None:
        """None: the GEMM picks its K split (tuning table or heuristic), also while recording
        a graph, since split-K's workspace is the backend's scratch (``_splitk_ws``)."""
        return None

    def _splitk_ws(self, n: int, dtype):
        """Split-K partial sums: one scratch buffer for every GEMM. Launches on one stream run
        in order, so a GEMM's reduction has read the partials before the next GEMM writes."""
        return self._scratch_buf("splitk", n, dtype)

    def _tiles(self, n: int):
        """Split-K's per-tile tickets (zero between launches), one buffer per lane."""
        return self._scratch_buf("tiles", max(int(n), 4096), np.uint32, zero=True)

    @contextlib.contextmanager
    def _beside(self):
        """``with self._beside() as side:`` - work issued inside ``with side():`` runs on a
        second stream, after everything issued before the block, at the same time as the work
        issued outside ``side()`` in the block; leaving the block makes the current stream
        wait for the side work (also inside a CUDA-graph recording, where the two streams
        become two branches of the graph). The side lane has its own scratch buffers. On the
        emulator, or with ``concurrent_backward=False``, everything runs in issue order."""
        cupy = getattr(self.driver, "cupy", None)
        if cupy is None or not self.concurrent_backward:
            yield lambda: self._in_lane("side", None)
            return
        cuda = cupy.cuda
        with self._device_ctx():
            main = cuda.get_current_stream()
            if self._side is None:
                self._side = (cuda.Stream(non_blocking=True), cuda.Event(disable_timing=True),
                              cuda.Event(disable_timing=True))
            side, fork, join = self._side
            side.wait_event(main.record(fork))
            try:
                yield lambda: self._in_lane("side", side)
            finally:
                main.wait_event(side.record(join))

    @contextlib.contextmanager
    def _in_lane(self, lane: str, stream):
        prev = self._lane
        self._lane = lane
        try:
            if stream is None:
                yield
            else:
                with stream:
                    yield
        finally:
            self._lane = prev

    # ------------------------------------------------------------------ elementwise
    def activation(self, name, z, out=None, **params):
        name = _act.canonical(name)
        p = _act.resolve_params(name, params)
        z = self._dev_array(z)
        out = self._out(out, z.shape, z.dtype)
        if z.size == 0:
            return out
        t = z.dtype.type
        if name == "softmax":
            m, c = self._rows(z)
            self._launch("softmax", f"softmax_{self._sfx(z.dtype)}", self._row_grid(m), BLOCK,
                         (z, out, np.int32(m), np.int32(c)))
            return out
        per = 16 // z.dtype.itemsize
        self._launch("elementwise", f"act_{name}_{self._sfx(z.dtype)}",
                     self._grid(z.size, per), BLOCK,
                     (z, out, np.int64(z.size), t(p.get("alpha", 0.0))))
        return out

    def activation_grad(self, name, z, a, grad_out, out=None, **params):
        name = _act.canonical(name)
        p = _act.resolve_params(name, params)
        g = self._dev_array(grad_out)
        z = g if z is None else self._dev_array(z, g.dtype)
        a = g if a is None else self._dev_array(a, g.dtype)
        self._same_shape(f"activation_grad({name})", g, z, a)
        out = self._out(out, g.shape, g.dtype)
        if g.size == 0:
            return out
        sfx = self._sfx(g.dtype)
        if name == "softmax":
            m, c = self._rows(g)
            self._launch("softmax", f"softmax_grad_{sfx}", self._row_grid(m), BLOCK,
                         (a, g, out, np.int32(m), np.int32(c)))
            return out
        per = 16 // g.dtype.itemsize
        self._launch("elementwise", f"act_grad_{name}_{sfx}", self._grid(g.size, per), BLOCK,
                     (z, a, g, out, np.int64(g.size), g.dtype.type(p.get("alpha", 0.0))))
        return out

    @staticmethod
    def _rows(x) -> tuple[int, int]:
        """(rows, columns) of a row-wise op: the last axis is the row (a 1-D x is one row)."""
        c = int(x.shape[-1]) if x.ndim else 1
        if c >= 2**31 or x.size // max(c, 1) >= 2**31:
            raise ValueError(f"row-wise kernels take < 2^31 rows and columns, got {x.shape}")
        return int(x.size // max(c, 1)), c

    def _row_grid(self, m: int) -> int:
        """Blocks for the warp-per-row kernels (BLOCK / 32 rows per block per pass)."""
        return max(1, min(self.max_blocks, -(-m // (BLOCK // 32))))

    def bias_add(self, z, b, out=None):
        z = self._dev_array(z)
        b = self._dev_array(b, z.dtype)
        if z.ndim != 2 or b.shape != (z.shape[1],):
            raise ValueError(f"bias_add: z must be (M, N) and b (N,), got {z.shape} and "
                             f"{b.shape}")
        out = self._out(out, z.shape, z.dtype)
        if z.size:
            self._launch("elementwise", f"bias_add_{self._sfx(z.dtype)}", self._grid(z.size),
                         BLOCK, (z, b, out, np.int64(z.shape[0]), np.int64(z.shape[1])))
        return out

    def sum_rows(self, x, out=None):
        x = self._dev_array(x)
        if x.ndim != 2:
            raise ValueError(f"sum_rows needs a 2-D array (M, N), got shape {x.shape}")
        m, n = (int(s) for s in x.shape)
        out = self._out(out, (n,), x.dtype)
        if n == 0:
            return out
        if m == 0:
            out[...] = 0
            return out
        sfx = self._sfx(x.dtype)
        col_tiles = -(-n // 32)
        # Split the rows into chunks so that ~4 blocks per multiprocessor are busy, but give
        # each block >= 64 rows: below that the second pass costs more than it saves.
        chunks = max(1, min(-(-m // 64), -(-self.max_blocks // (2 * col_tiles))))
        rows_per_chunk = -(-m // chunks)
        chunks = -(-m // rows_per_chunk)
        if chunks == 1:
            self._launch("reduce", f"colsum_{sfx}", (col_tiles, 1), (32, 8),
                         (x, out, np.int64(m), np.int32(n), np.int64(rows_per_chunk)))
            return out
        part = self._scratch_buf("colsum", chunks * n, x.dtype)
        self._launch("reduce", f"colsum_{sfx}", (col_tiles, chunks), (32, 8),
                     (x, part, np.int64(m), np.int32(n), np.int64(rows_per_chunk)))
        self._launch("reduce", f"colsum_{sfx}", (col_tiles, 1), (32, 8),
                     (part, out, np.int64(chunks), np.int32(n), np.int64(chunks)))
        return out

    def axpy(self, alpha, x, y):
        x = self._dev_array(x, y.dtype)
        self._same_shape("axpy", y, x)
        self._check_inplace("axpy", y)
        if y.size:
            self._launch("elementwise", f"axpy_{self._sfx(y.dtype)}",
                         self._grid(y.size, 16 // y.dtype.itemsize), BLOCK,
                         (y.dtype.type(alpha), x, y, np.int64(y.size)))
        return y

    def scale(self, alpha, x):
        self._check_inplace("scale", x)
        if x.size:
            self._launch("elementwise", f"scale_{self._sfx(x.dtype)}",
                         self._grid(x.size, 16 // x.dtype.itemsize), BLOCK,
                         (x.dtype.type(alpha), x, np.int64(x.size)))
        return x

    def _check_inplace(self, what: str, *arrays) -> None:
        for a in arrays:
            if not isinstance(a, self.xp.ndarray) or not a.flags.c_contiguous:
                raise ValueError(f"{what} updates in place: pass a C-contiguous {self.name} "
                                 "array (from asarray/zeros/view)")
            check_dtype(a.dtype)

    # ------------------------------------------------------------------ losses
    def _loss_scratch(self, dtype, blocks: int):
        partials = self._scratch_buf("loss_partials", blocks, dtype)
        counter = self._scratch_buf("loss_counter", 1, np.uint32, zero=True)
        return partials, counter

    def _elementwise_loss(self, kernel: str, output, target, *scalars):
        o = self._dev_array(output)
        t = self._dev_array(target, o.dtype)
        self._same_shape(kernel, o, t)
        if o.size == 0:
            raise ValueError(f"{kernel}: empty batch")
        grad = self._alloc(o.shape, o.dtype, zero=False)
        loss = self._alloc((), o.dtype, zero=False)
        blocks = self._grid(o.size)
        partials, counter = self._loss_scratch(o.dtype, blocks)
        self._launch("reduce", f"{kernel}_{self._sfx(o.dtype)}", blocks, BLOCK,
                     (o, t, grad, partials, counter, loss, np.int64(o.size),
                      *(o.dtype.type(s) for s in scalars)))
        return loss, grad

    def mse(self, output, target):
        m = int(output.shape[0]) if output.ndim else 1
        return self._elementwise_loss("mse", output, target, 1.0 / m, 0.5 / m)

    def binary_cross_entropy(self, output, target):
        return self._elementwise_loss("bce", output, target, ref.bce_eps(output.dtype))

    def softmax_cross_entropy(self, logits, labels):
        z = self._dev_array(logits)
        if z.ndim != 2 or z.shape[0] == 0:
            raise ValueError(f"softmax_cross_entropy: logits must be (M, C) with M >= 1, got "
                             f"{z.shape}")
        m, c = self._rows(z)
        y, kind = self._labels(labels, z)
        grad = self._alloc(z.shape, z.dtype, zero=False)
        loss = self._alloc((), z.dtype, zero=False)
        blocks = self._row_grid(m)
        partials, counter = self._loss_scratch(z.dtype, blocks)
        self._launch("softmax", f"xent_{kind}_{self._sfx(z.dtype)}", blocks, BLOCK,
                     (z, y, grad, partials, counter, loss, np.int32(m), np.int32(c)))
        return loss, grad

    def _labels(self, labels, z):
        """Labels as a device array and the kernel variant: i32 / i64 / fid (ids stored as
        floats of z's dtype) for class ids (M,), prob for one-hot/probability rows (M, C)."""
        m, c = z.shape
        on_host = isinstance(labels, np.ndarray) or not isinstance(labels, self.xp.ndarray)
        if on_host:  # ids in host memory are checked (on a GPU that would cost a sync)
            host = np.asarray(labels)
            if host.ndim == 1 and host.dtype.kind in "iub" and host.size and (
                    host.min() < 0 or host.max() >= c):
                raise ValueError(f"class ids must lie in [0, {c}), got min {host.min()} "
                                 f"max {host.max()}")
        if not isinstance(labels, self.xp.ndarray):
            if host.ndim == 1 and host.dtype.kind in "iub":
                host = host.astype(np.int32)
            elif host.dtype != z.dtype:
                host = host.astype(z.dtype)
            with self._device_ctx():
                labels = self.xp.asarray(np.ascontiguousarray(host))
        if labels.ndim == 1:
            if labels.shape[0] != m:
                raise ValueError(f"{labels.shape[0]} labels for {m} rows of logits")
            if labels.dtype == np.int32:
                kind = "i32"
            elif labels.dtype == np.int64:
                kind = "i64"
            elif labels.dtype.kind in "iub":
                labels, kind = labels.astype(np.int32), "i32"
            else:
                labels, kind = labels.astype(z.dtype, copy=False), "fid"
        elif labels.ndim == 2:
            if tuple(labels.shape) != (m, c):
                raise ValueError(f"one-hot labels have shape {labels.shape}, logits {z.shape}")
            labels, kind = labels.astype(z.dtype, copy=False), "prob"
        else:
            raise ValueError(f"labels must be class ids (M,) or rows (M, C), got {labels.shape}")
        if not labels.flags.c_contiguous:
            labels = self.xp.ascontiguousarray(labels)
        return labels, kind

    # ------------------------------------------------------------------ optimizers
    def _update(self, kernel: str, arrays, scalars, ints=(), tail=(), flags=()) -> None:
        """Launch optimizer ``kernel`` over the flat buffers: arrays (p, g, states...), then
        n, the T scalars, the int flags ``ints``, extra pointer args ``tail`` and ``flags``."""
        p = arrays[0]
        self._check_inplace(kernel, p, *arrays[2:])
        g = self._dev_array(arrays[1], p.dtype)
        self._same_shape(kernel, p, g, *arrays[2:])
        for s in arrays[2:]:
            if s.dtype != p.dtype:
                raise TypeError(f"{kernel}: state dtype {s.dtype} differs from {p.dtype}")
        if p.size == 0:
            return
        t = p.dtype.type
        self._launch("optim", f"{kernel}_{self._sfx(p.dtype)}", self._grid(p.size), BLOCK,
                     (p, g, *arrays[2:], np.int64(p.size), *(t(s) for s in scalars),
                      *(np.int32(i) for i in ints), *tail, *(np.int32(f) for f in flags)))

    def sgd_update(self, p, g, lr, weight_decay=0.0):
        self._update("sgd", (p, g), (lr, weight_decay))

    def momentum_update(self, p, g, buf, lr, momentum=0.9, weight_decay=0.0, nesterov=False):
        self._update("momentum", (p, g, buf), (lr, momentum, weight_decay), (bool(nesterov),))

    def adagrad_update(self, p, g, sum_sq, lr, eps=1e-10, weight_decay=0.0):
        self._update("adagrad", (p, g, sum_sq), (lr, eps, weight_decay))

    def adadelta_update(self, p, g, square_avg, acc_delta, lr=1.0, rho=0.9, eps=1e-6,
                        weight_decay=0.0):
        self._update("adadelta", (p, g, square_avg, acc_delta), (lr, rho, eps, weight_decay))

    def rmsprop_update(self, p, g, square_avg, lr=0.01, rho=0.99, eps=1e-8, weight_decay=0.0):
        self._update("rmsprop", (p, g, square_avg), (lr, rho, eps, weight_decay))

    def adam_update(self, p, g, m, v, step, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
                    weight_decay=0.0, decoupled=False):
        """As Backend.adam_update. ``step`` may also be a 1-element device array of p's dtype
        holding the step count: the kernel then reads it on the device, which is what a
        training step recorded into a CUDA graph needs (a host int would be frozen in the
        graph, so recording with one is refused and the step runs eagerly instead)."""
        if isinstance(step, self.xp.ndarray):
            if step.size != 1 or step.dtype != p.dtype:
                raise ValueError(f"a device step must be one {p.dtype} element, got "
                                 f"{step.dtype} {tuple(step.shape)}")
            self._update("adam_dstep", (p, g, m, v),
                         (lr, beta1, beta2, eps, weight_decay), (), tail=(step,),
                         flags=(bool(decoupled),))
            return
        if self._capture_keep is not None:
            raise ValueError("adam_update with a host step count cannot be recorded in a CUDA "
                             "graph (it would be frozen); pass step as a 1-element device array")
        if int(step) < 1:
            raise ValueError(f"adam step counts from 1, got {step}")
        bc1 = 1.0 - beta1 ** int(step)  # bias corrections in double on the host
        bc2 = 1.0 - beta2 ** int(step)
        self._update("adam", (p, g, m, v), (lr, beta1, beta2, eps, weight_decay, bc1, bc2),
                     (bool(decoupled),))

    # ------------------------------------------------------------------ composites
    def linear_forward(self, x, W, b, activation="linear", out_z=None, out_a=None, **params):
        """z = x @ W + b and a = f(z) in one GEMM launch: the epilogue adds the bias, stores z
        (the backward pass of relu, gelu, ... reads it) and writes f(z) for the activations
        gemm.cu has (relu, leaky_relu, sigmoid, tanh, gelu); the others take one more
        elementwise launch. Shapes x (M, K), W (K, N), b (N,) -> z, a (M, N)."""
        name = _act.canonical(activation)
        p = _act.resolve_params(name, params)
        if self.gemm == "cublas":
            return super().linear_forward(x, W, b, name, out_z=out_z, out_a=out_a, **params)
        x = self._dev_array(x)
        W = self._dev_array(W, x.dtype)
        if x.ndim != 2 or W.ndim != 2 or x.shape[1] != W.shape[0]:
            raise ValueError(f"linear_forward: x {x.shape} and W {W.shape} do not chain")
        if b is not None:
            b = self._dev_array(b, x.dtype)
            if b.shape != (W.shape[1],):
                raise ValueError(f"linear_forward: b has shape {b.shape}, expected "
                                 f"({W.shape[1]},)")
        shape = (x.shape[0], W.shape[1])
        z = self._out(out_z, shape, x.dtype)
        gemm = _gemm()
        if name in gemm.EPILOGUE_ACTIVATIONS:
            a = self._out(out_a, shape, x.dtype)
            gemm.matmul(self.driver, x, W, out=a, bias=b, activation=name, z_out=z,
                        alpha=p.get("alpha", 0.01), precision=self._precision(x.dtype),
                        split_k=self._split_k(), workspace=self._splitk_ws,
                        tiles=self._tiles)
            return z, a
        gemm.matmul(self.driver, x, W, out=z, bias=b, precision=self._precision(x.dtype),
                    split_k=self._split_k(), workspace=self._splitk_ws, tiles=self._tiles)
        if name == "linear":
            return z, z
        return z, self.activation(name, z, out=out_a, **p)

    def fused_sgd_step(self, model, batch):
        """``cuda_fused_mlp.FusedMLPStep`` for ``model`` when it computes it (every width
        <= 128, float32, biases, ReLU hidden layers, softmax-CE) and ``fused_mlp`` is on."""
        if not self.fused_mlp:
            return None
        from .cuda_fused_mlp import FusedMLPStep

        try:
            return FusedMLPStep.for_model(model, batch)
        except ValueError:  # a model the kernel does not compute: the layer-by-layer step
            return None

    def linear_backward(self, x, W, z, a, grad_a, activation="linear", need_grad_x=True,
                        has_bias=True, out_grad_W=None, out_grad_b=None, below=None,
                        **params):
        """As ``Backend.linear_backward``. grad_W = x^T delta runs on a second stream
        (``_beside``) at the same time as the rest - grad_x = delta W^T when it is needed
        (and grad_b with grad_W), else grad_b: two small, latency-bound launches at once. With
        ``below`` the layer below's derivative runs in the epilogue of the GEMM that makes
        grad_x (delta_below = (delta W^T) * f'(z_below) in one launch, split-K included), for
        the activations gemm.cu has; others take one more elementwise launch."""
        name = _act.canonical(activation)
        if below is not None:
            bname, bz, ba, bparams = _below(below)
        delta = grad_a if name == "linear" else self.activation_grad(name, z, a, grad_a, **params)
        # operands on the device and outputs allocated on the current stream before the fork:
        # the side stream only launches kernels into memory the current stream owns
        x = self._dev_array(x)
        delta = self._dev_array(delta, x.dtype)
        W = self._dev_array(W, x.dtype)
        if x.ndim != 2 or delta.ndim != 2 or x.shape[0] != delta.shape[0]:
            raise ValueError(f"linear_backward: x {tuple(x.shape)} and delta "
                             f"{tuple(delta.shape)} must be 2-D with the same rows")
        m, k, n = int(x.shape[0]), int(x.shape[1]), int(delta.shape[1])
        if need_grad_x and (W.ndim != 2 or tuple(W.shape) != (k, n)):
            raise ValueError(f"linear_backward: W has shape {tuple(W.shape)}, expected "
                             f"{(k, n)} for x {(m, k)} and delta {(m, n)}")
        gW = self._out(out_grad_W, (k, n), x.dtype)
        gb = self._out(out_grad_b, (n,), x.dtype) if has_bias else None
        aux = None
        fused = need_grad_x and below is not None and self.gemm != "cublas"
        gemm = _gemm()
        if fused and bname in gemm.GRAD_AUX:
            aux = self._dev_array(bz if gemm.GRAD_AUX[bname] == "z" else ba, x.dtype)
            if tuple(aux.shape) != (m, k):
                raise ValueError(f"linear_backward: below's {gemm.GRAD_AUX[bname]} has shape "
                                 f"{tuple(aux.shape)}, expected {(m, k)} (the layer's input)")
        grad_x = None
        with self._beside() as side:
            with side():
                grad_W = self.matmul(x, delta, transpose_a=True, out=gW)
                if need_grad_x and has_bias:
                    self.sum_rows(delta, out=gb)
            if not need_grad_x:
                if has_bias:
                    self.sum_rows(delta, out=gb)
            elif aux is not None:
                alpha = _act.resolve_params(bname, bparams).get("alpha", 0.01)
                grad_x = self._out(None, (m, k), x.dtype)
                gemm.matmul(self.driver, delta, W, transpose_b=True, out=grad_x,
                            grad_activation=bname, grad_aux=aux, alpha=alpha,
                            precision=self._precision(delta.dtype), split_k=self._split_k(),
                            workspace=self._splitk_ws, tiles=self._tiles)
            else:
                grad_x = self.matmul(delta, W, transpose_b=True)
                if below is not None and bname != "linear":
                    grad_x = self.activation_grad(bname, bz, ba, grad_x, **bparams)
        return grad_x, grad_W, gb

    def output_layer_grad(self, x, W, b, target, loss="softmax_cross_entropy",
                          activation="linear", need_grad_x=True, out_grad_W=None,
                          out_grad_b=None, below=None, out_z=None, out_a=None, out_loss=None,
                          out_grad_b_below=None, loss_acc=None, **params):
        """As ``Backend.output_layer_grad``. A softmax-CE output layer of <= 32 classes with
        one-hot/probability target rows (M, C) runs as ONE launch (kernels/head.cu, host side
        ``cuda_head``) that keeps the logits on chip and writes the loss, grad_W, grad_b and
        grad_x - with the layer below's f' applied for the activations gemm.cu has (others
        take one more elementwise launch) - and the column sums of grad_x into
        ``out_grad_b_below`` - and adds w * loss into ``loss_acc = (acc, w)``. ``out_z``/``out_a``
        are then left untouched.
        Everything else (other losses, class ids as targets, wider layers, ``fused_head``
        off) runs the composed ops."""
        head = _head()
        name = _act.canonical(activation)
        args = (x, W, b, target, loss, activation, need_grad_x, out_grad_W, out_grad_b, below,
                out_z, out_a, out_loss, out_grad_b_below, loss_acc)
        if not (self.fused_head and loss == "softmax_cross_entropy" and name == "linear"
                and isinstance(x, self.xp.ndarray) and isinstance(target, self.xp.ndarray)):
            return super().output_layer_grad(*args, **params)
        x = self._dev_array(x)
        W = self._dev_array(W, x.dtype)
        if x.ndim != 2 or W.ndim != 2 or x.shape[1] != W.shape[0] or target.ndim != 2 or \
                tuple(target.shape) != (x.shape[0], W.shape[1]):
            return super().output_layer_grad(*args, **params)  # raises the shape error
        M, K = (int(v) for v in x.shape)
        C = int(W.shape[1])
        blocks = self.head_blocks  # forced grid; else the device's measured choice, else
        if blocks is None:         # the rule (fused up to MAX_FUSED_ROWS rows)
            blocks = head.tuned_blocks(self.driver, M, K, C, x.dtype)
            if blocks is None and M > head.MAX_FUSED_ROWS:
                blocks = 0
        if blocks == 0:  # the composed ops measured faster here
            return super().output_layer_grad(*args, **params)
        plan = head.plan(M, K, C, x.dtype, blocks=blocks)
        if plan is None:
            return super().output_layer_grad(*args, **params)
        t = self._dev_array(target, x.dtype)
        if b is not None:
            b = self._dev_array(b, x.dtype)
            if tuple(b.shape) != (C,):
                raise ValueError(f"output_layer_grad: b has shape {tuple(b.shape)}, expected "
                                 f"({C},)")
        gW = self._out(out_grad_W, (K, C), x.dtype)
        gb = self._out(out_grad_b, (C,), x.dtype) if b is not None else None
        E = self._out(out_loss, (), x.dtype)
        dX = self._alloc((M, K), x.dtype, zero=False) if need_grad_x else None
        gbb = None
        if need_grad_x and out_grad_b_below is not None:
            gbb = self._out(out_grad_b_below, (K,), x.dtype)
        dact, aux, alpha, after, colsum_after = 0, None, 0.01, None, None
        if need_grad_x and below is not None:
            bname, bz, ba, bparams = _below(below)
            gemm = _gemm()
            if bname in gemm.GRAD_AUX:
                dact = gemm.EPILOGUE_ACTIVATIONS[bname]
                aux = self._dev_array(bz if gemm.GRAD_AUX[bname] == "z" else ba, x.dtype)
                if tuple(aux.shape) != (M, K):
                    raise ValueError(f"output_layer_grad: below's {gemm.GRAD_AUX[bname]} has "
                                     f"shape {tuple(aux.shape)}, expected {(M, K)}")
                alpha = _act.resolve_params(bname, bparams).get("alpha", 0.01)
            elif bname != "linear":
                after = (bname, bz, ba, bparams)
                gbb, colsum_after = None, gbb  # the column sums need f' applied first
        part = self._scratch_buf("head_partials", head.partial_size(plan), x.dtype)
        counter = self._scratch_buf("head_counter", 1, np.uint32, zero=True)
        if loss_acc is not None:
            acc = loss_acc[0]
            if not (isinstance(acc, self.xp.ndarray) and acc.dtype == x.dtype and acc.size == 1):
                raise ValueError(f"output_layer_grad: loss_acc[0] must be a one-element "
                                 f"{x.dtype} device array")
            loss_acc = (acc, float(loss_acc[1]))
        head.launch(self, plan, x, W, b, t, gW, gb, E, dX, gbb, aux, dact, alpha, part, counter,
                    loss_acc)
        if after is not None:
            dX = self.activation_grad(after[0], after[1], after[2], dX, out=dX, **after[3])
            if colsum_after is not None:
                self.sum_rows(dX, out=colsum_after)
        return E, dX, gW, gb

    # ------------------------------------------------------------------ graphs
    def _capture_stream(self):
        if self._stream is None:
            with self._device_ctx():
                self._stream = self.driver.cupy.cuda.Stream(non_blocking=True)
        return self._stream

    def capture(self, fn):
        """Record ``fn`` (a whole training step over preallocated buffers) into a CUDA graph
        on its second call and replay it from then on; see :class:`_GraphStep`. Falls back to
        eager launches (and says why in ``info()["graph"]``) when recording fails, e.g. when
        ``fn`` reaches cuBLAS (``gemm="cublas"``) or synchronises with the host."""
        return _GraphStep(self, fn)


def _head():
    """The output-layer module (kernels/head.cu's host side), imported on first use."""
    from . import cuda_head

    return cuda_head


def _gemm():
    """The GEMM module (kernels/gemm.cu's host side), imported on first use."""
    from . import cuda_gemm

    return cuda_gemm


# ====================================================================== the emulator
class CudaEmuBackend(CudaBackend):
    """The cuda backend's code and kernels, run on the CPU: each ``.cu`` file is compiled with
    g++ (``cuda_emu.EmuDriver``) and launched on NumPy arrays. An emulator - slow by design;
    it exists so that every CI run tests the kernels and this backend without a GPU."""

    name = "cuda-emu"
    rung = "The cuda backend's kernels emulated on the CPU (a test tool, slow by design)."
    is_emulator = True

    @classmethod
    def _probe(cls) -> str | None:
        if importlib.util.find_spec("mlpaccel.backends.cuda_emu") is None:
            return "the CUDA emulator (mlpaccel/backends/cuda_emu.py) is not part of this install"
        if shutil.which("g++") is None:
            return "no C++ compiler: cuda-emu compiles kernels/*.cu with g++ (apt install g++)"
        return None

    def _make_driver(self) -> KernelDriver:
        from .cuda_emu import EmuDriver

        return EmuDriver()

    def info(self) -> dict:
        out = super().info()
        out["note"] = "emulator: the CUDA kernels run on the CPU, slow by design"
        return out

    def capture(self, fn):
        """No CUDA graphs on the CPU: ``fn`` runs eagerly."""
        self._graph_state = "eager: the emulator has no CUDA graphs"
        return fn


__all__ = ["CudaBackend", "CudaEmuBackend", "CupyDriver"]
