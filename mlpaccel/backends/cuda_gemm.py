"""Our own CUDA GEMM (kernels/gemm.cu): configuration choice, launch, and autotuning.

``matmul(driver, a, b, ...)`` computes ``C = op(A) @ op(B)`` (+ bias, activation epilogue) with
any ``KernelDriver`` (CuPy on a GPU, the g++ emulator on the CPU). It reads the transposed
operands in place (no copies), picks a tile configuration from the tuning table
(``mlpaccel/tuning/<device>.json``, written by ``autotune``) or a shape heuristic, and splits K
across blocks when the output alone cannot fill the GPU (e.g. ``x^T delta`` with a large batch).
No cupy import here: arrays come from ``driver.xp``.
"""

from __future__ import annotations

import json
import math
import os
import re
import time
import warnings
import weakref
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import activations as _act

MODULE = "gemm"
TUNING_DIR = Path(__file__).resolve().parent.parent / "tuning"


@dataclass(frozen=True)
class GemmConfig:
    """One tile configuration of kernels/gemm.cu or kernels/gemm_wgmma.cu (``cfg_id`` is its
    ``-DGEMM_CFG``, unique across both modules)."""

    name: str
    cfg_id: int
    precision: str  # "fp32" (SIMT), "tf32" (tensor cores, fp32 in/out), "fp64"
    bm: int
    bn: int
    bk: int
    threads: int
    stages: int = 0  # > 0: cp.async ring of this depth in dynamic smem (16-byte path only)
    #: fp32 ring whose stages hold both operands k-major [BK][B?+4] (gemm_simt_ring: cp.async
    #: for the m/n-contiguous operand, register staging + transposing stores for the other)
    kmajor: bool = False
    #: kernels/<module>.cu that holds the config
    module: str = MODULE
    #: the transpose forms it has entry points for (gemm_wgmma: nn and nt only)
    forms: tuple[str, ...] = ("nn", "tn", "nt", "tt")
    #: None: the driver's default target; "sm_90a": compiled for sm_90a only (wgmma), so a
    #: candidate only on compute capability 9.0 devices (and on the emulator)
    arch: str | None = None
    #: only the 16-byte path exists (no "_s_" entry points): operands must be 16-byte aligned
    #: with every leading dimension % 4 == 0
    vec_only: bool = False

    def dynamic_smem(self, transpose_a: bool, transpose_b: bool, vec: bool) -> int:
        """Bytes of dynamic shared memory the launch needs (0 unless a cp.async config runs
        its 16-byte path); mirrors SA/SB in gemm_tc_async (tf32), gemm_simt_async and
        gemm_simt_ring (fp32), and SD/SR in gemm_wgmma."""
        if not (self.stages and vec):
            return 0
        if self.module == "gemm_wgmma":  # A tile [BM x BK] + B tile as stored, padded
            sr = self.bn * (self.bk + 4) if transpose_b else self.bk * (self.bn + 8)
            return self.stages * (self.bm * self.bk + sr) * 4
        if self.kmajor:  # every form: [BK][BM+4] + [BK][BN+4] per stage
            return self.stages * self.bk * (self.bm + 4 + self.bn + 4) * 4
        if self.precision == "tf32":
            sa = self.bk * (self.bm + 8) if transpose_a else self.bm * (self.bk + 4)
            sb = self.bn * (self.bk + 4) if transpose_b else self.bk * (self.bn + 8)
        else:  # m/n-contiguous [BK][B?+4]; k-contiguous rows + 4 floats per 4 rows
            sa = self.bk * (self.bm + 4) if transpose_a else self.bm * (self.bk + 1)
            sb = self.bn * (self.bk + 1) if transpose_b else self.bk * (self.bn + 4)
        return self.stages * (sa + sb) * 4


# Must match the table at the end of kernels/gemm.cu.
_CONFIGS = (
    GemmConfig("128x128x8", 0, "fp32", 128, 128, 8, 256),
    GemmConfig("128x128x16", 1, "fp32", 128, 128, 16, 256),
    GemmConfig("128x64x8", 2, "fp32", 128, 64, 8, 128),
    GemmConfig("64x64x16", 3, "fp32", 64, 64, 16, 128),
    GemmConfig("32x64x16", 4, "fp32", 32, 64, 16, 128),
    GemmConfig("tc128x128x16", 5, "tf32", 128, 128, 16, 256),
    GemmConfig("tc64x64x16", 6, "tf32", 64, 64, 16, 128),
    GemmConfig("64x64x8", 7, "fp64", 64, 64, 8, 128),
    GemmConfig("128x256x8", 8, "fp32", 128, 256, 8, 256),
    GemmConfig("tc128x128x16w4", 9, "tf32", 128, 128, 16, 128),
    GemmConfig("tc128x128x32s3", 10, "tf32", 128, 128, 32, 256, 3),
    GemmConfig("tc128x128x16s4", 11, "tf32", 128, 128, 16, 256, 4),
    GemmConfig("tc128x256x32s3", 12, "tf32", 128, 256, 32, 256, 3),
    GemmConfig("128x128x16s3", 13, "fp32", 128, 128, 16, 256, 3),
    GemmConfig("128x128x16s4", 14, "fp32", 128, 128, 16, 256, 4),
    GemmConfig("128x256x16s3", 15, "fp32", 128, 256, 16, 256, 3),
    # v3, unmeasured: 256x128 tile, 4x2 warps of 64x64, 16x8 per thread (kernels/NOTES.md)
    GemmConfig("256x128x8s3", 16, "fp32", 256, 128, 8, 256, 3, kmajor=True),
    # v4, unmeasured: TF32 on Hopper wgmma (kernels/gemm_wgmma.cu, sm_90a; kernels/NOTES.md)
    GemmConfig("wg128x128x32s3", 17, "tf32", 128, 128, 32, 256, 3, module="gemm_wgmma",
               forms=("nn", "nt"), arch="sm_90a", vec_only=True),
    GemmConfig("wg256x128x32s4", 18, "tf32", 256, 128, 32, 256, 4, module="gemm_wgmma",
               forms=("nn", "nt"), arch="sm_90a", vec_only=True),
    # unmeasured: small tiles with a 4-deep cp.async ring for the latency-bound batch-64 GEMMs
    GemmConfig("32x64x16s4", 19, "fp32", 32, 64, 16, 128, 4),
    GemmConfig("64x64x16s4", 20, "fp32", 64, 64, 16, 128, 4),
    # config 18 with wgmma groups overlapping across k-tiles (wait_group 1), unmeasured
    GemmConfig("wg256x128x32s4o", 21, "tf32", 256, 128, 32, 256, 4, module="gemm_wgmma",
               forms=("nn", "nt"), arch="sm_90a", vec_only=True),
)
_BY_NAME = {c.name: c for c in _CONFIGS}
PRECISIONS = ("fp32", "tf32", "fp64")

#: activation name -> epilogue code in gemm.cu (forward f and backward f')
EPILOGUE_ACTIVATIONS = {"relu": 1, "leaky_relu": 2, "sigmoid": 3, "tanh": 4, "gelu": 5}
#: which saved array f'(.) reads in the backward epilogue: "z" (pre-activation) or "a"
GRAD_AUX = {"relu": "z", "leaky_relu": "z", "sigmoid": "a", "tanh": "a", "gelu": "z"}

_modules: weakref.WeakKeyDictionary[Any, dict[Any, Any]] = weakref.WeakKeyDictionary()
_tables: dict[str, dict] = {}
#: split-K tile tickets per driver (``_tile_counters``) and the grown-out ones kept alive
_counters: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_retired_counters: list = []


def configs(precision: str | None = None) -> list[GemmConfig]:
    """Every selectable configuration (optionally of one precision), for tests and tuning."""
    return [c for c in _CONFIGS if precision is None or c.precision == precision]


def config_by_name(name: str) -> GemmConfig:
    """The configuration called ``name`` (ValueError listing the valid names otherwise)."""
    try:
        return _BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown GEMM config {name!r}; valid: {', '.join(_BY_NAME)}") from None


# ---------------------------------------------------------------- device facts
def device_name(driver) -> str:
    """A file-name-safe device name for the tuning table ("emu" for the emulator)."""
    info = {}
    try:
        info = driver.info() or {}
    except Exception:  # noqa: BLE001 - info() is descriptive only; never fail a matmul on it
        pass
    name = str(info.get("device") or info.get("device_name") or getattr(driver, "name", "gpu"))
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_").lower() or "gpu"


def _sm_count(driver) -> int:
    n = getattr(driver, "sm_count", None)
    if n is None:
        try:
            info = driver.info() or {}
            n = info.get("multiprocessors") or info.get("sm_count")
        except Exception:  # noqa: BLE001
            n = None
    return int(n) if n else 132


def _ptr(x) -> int:
    data = getattr(x, "data", None)
    p = getattr(data, "ptr", None)  # cupy
    return int(p) if p is not None else int(x.ctypes.data)


# ---------------------------------------------------------------- tuning table
def _bucket(v: int) -> int:
    """Shape bucket: the next power of two (>= 16)."""
    return max(16, 1 << max(0, int(v) - 1).bit_length())


def table_key(precision: str, form: str, M: int, N: int, K: int) -> str:
    """Tuning-table key of a problem: precision, transpose form and power-of-two buckets."""
    return f"{precision}:{form}:{_bucket(M)}x{_bucket(N)}x{_bucket(K)}"


def _user_tuning_dir() -> Path:
    from .._paths import cache_dir

    return cache_dir() / "tuning"


def _read_entries(p: Path) -> dict:
    try:
        return json.loads(p.read_text()).get("entries", {}) if p.is_file() else {}
    except (OSError, ValueError):
        return {}  # a damaged table must not break matmul: fall back to the heuristic


def load_table(device: str, path: Path | None = None) -> dict:
    """The tuning table for ``device`` ({} when none was saved), cached per process: the
    shipped ``mlpaccel/tuning/<device>.json`` overlaid by the user's cache copy (written by
    ``autotune`` when the package folder is read-only), or only ``path`` when given."""
    if path is not None:
        return _read_entries(path)
    if device not in _tables:
        table = _read_entries(TUNING_DIR / f"{device}.json")
        table.update(_read_entries(_user_tuning_dir() / f"{device}.json"))
        _tables[device] = table
    return _tables[device]


# Cost model of the heuristic, per config: blocks resident per SM (from ptxas registers and
# smem, see kernels/NOTES.md) and relative arithmetic efficiency of its per-thread tile
# (8x8 and larger = 1; 8x4 and 4x4 issue more smem loads per FMA).
_MODEL = {
    "128x128x8": (2, 1.0), "128x64x8": (3, 0.95), "64x64x16": (4, 0.8), "32x64x16": (8, 0.55),
    "128x256x8": (1, 1.0), "tc128x128x32s3": (1, 1.2), "tc128x128x16": (2, 1.0),
    "tc64x64x16": (4, 0.8), "64x64x8": (3, 1.0),
}
# The configs the untuned heuristic chooses from: measured ones only. The fp32 cp.async configs
# (13-15: slower on the H200), 256x128x8s3 (16), the wgmma configs (17, 18, 21; sm_90a only)
# and the small 4-stage rings (19, 20), not yet measured, are left to the autotuner.
_HEURISTIC = {
    "fp32": ("128x128x8", "128x64x8", "64x64x16", "32x64x16"),
    "tf32": ("tc128x128x32s3", "tc128x128x16", "tc64x64x16"),
    "fp64": ("64x64x8",),
}
# per-SM FLOP/s by precision and device bandwidth (H100-class; only ratios matter)
_SM_RATE = {"fp32": 0.5e12, "tf32": 2.0e12, "fp64": 0.25e12}
# device bandwidth; the split-K finish (the last slice of a tile sums the partials after the
# others: a few dependent global-memory round trips; it was a second launch, ~7 us of CuPy host
# time, until the finish moved into the GEMM - a guess until a GPU run re-fits it); fixed cost
# of one wave of blocks (prologue, pipeline fill, epilogue) that makes tiny grids latency-bound
_BW, _FINISH_S, _WAVE_S = 2.5e12, 3e-6, 2e-6


def estimate(cfg: GemmConfig, split: int, M: int, N: int, K: int, sms: int = 132) -> float:
    """Modelled seconds of one config/split: waves of resident blocks x the time of one block
    (its full tile, also where the matrix edge wastes part of it) + the split-K reduction."""
    per_sm, eff = _MODEL.get(cfg.name, (1, 0.5))
    blocks = math.ceil(M / cfg.bm) * math.ceil(N / cfg.bn) * split
    waves = math.ceil(blocks / (sms * per_sm))
    k_chunk = math.ceil(K / split) if K else 0
    block_s = 2.0 * cfg.bm * cfg.bn * max(k_chunk, 1) * per_sm / (_SM_RATE[cfg.precision] * eff)
    t = waves * (_WAVE_S + block_s)
    if split > 1:
        t += (split + 1) * M * N * 4 / _BW + _FINISH_S
    return t


def heuristic(M: int, N: int, K: int, precision: str, sms: int = 132) -> tuple[GemmConfig, int]:
    """Default (config, split_k) when the tuning table has no entry: the minimum of
    ``estimate`` over the precision's main configs and K splits 1..16 (each slice >= 128)."""
    best = None
    for name in _HEURISTIC[precision]:
        cfg = _BY_NAME[name]
        split = 1
        while split == 1 or (split <= 16 and K // split >= 128):
            t = estimate(cfg, split, M, N, K, sms)
            if best is None or t < best[0]:
                best = (t, cfg, split)
            split *= 2
    return best[1], best[2]


def select(driver, M: int, N: int, K: int, form: str = "nn",
           precision: str = "fp32") -> tuple[GemmConfig, int]:
    """(config, split_k) for this problem: tuning table entry if any, else ``heuristic``."""
    entry = load_table(device_name(driver)).get(table_key(precision, form, M, N, K))
    if entry and entry.get("config") in _BY_NAME:
        cfg = _BY_NAME[entry["config"]]
        if cfg.precision == precision and skip_reason(cfg, form, M, N, K, driver) is None:
            return cfg, max(1, int(entry.get("split_k", 1)))
    return heuristic(M, N, K, precision, _sm_count(driver))


# ---------------------------------------------------------------- launch
def _module(driver, cfg: GemmConfig):
    per = _modules.setdefault(driver, {})
    if cfg.cfg_id not in per:
        opts = (f"-DGEMM_CFG={cfg.cfg_id}",)
        if cfg.arch:  # per-module target (the emulator ignores it)
            per[cfg.cfg_id] = driver.load(cfg.module, opts, arch=cfg.arch)
        else:
            per[cfg.cfg_id] = driver.load(cfg.module, opts)
    return per[cfg.cfg_id]


def _compute_capability(driver) -> str | None:
    """"9.0" etc. for a GPU driver; None for the emulator (which runs every config)."""
    if getattr(driver, "name", "") == "emu":
        return None
    try:
        cc = (driver.info() or {}).get("compute_capability")
    except Exception:  # noqa: BLE001 - descriptive only
        cc = None
    return str(cc) if cc else None


def _vec_ok(a_cols: int, b_cols: int) -> bool:
    return a_cols % 4 == 0 and b_cols % 4 == 0


def skip_reason(cfg: GemmConfig, form: str, M: int, N: int, K: int, driver=None) -> str | None:
    """Why ``cfg`` cannot run this problem (None when it can): a transpose form without entry
    points, a 16-byte-only config on leading dimensions not % 4, an sm_90a config on a device
    that is not compute capability 9.0. ``autotune`` skips such candidates and says why."""
    if form not in cfg.forms:
        return (f"{cfg.name} has entry points for {'/'.join(cfg.forms)} only (wgmma reads its "
                f"shared-memory operand K-major: A must be stored (M, K)), not {form}")
    if cfg.vec_only:
        ta, tb = form[0] == "t", form[1] == "t"
        if not _vec_ok(M if ta else K, K if tb else N):
            return (f"{cfg.name} needs the 16-byte path (every leading dimension % 4 == 0 and "
                    f"16-byte aligned operands); {form} {M}x{N}x{K} does not have it")
    if cfg.arch == "sm_90a" and driver is not None:
        cc = _compute_capability(driver)
        if cc is not None and cc != "9.0":
            return (f"{cfg.name} is compiled for sm_90a (wgmma, Hopper only); this device is "
                    f"compute capability {cc}")
    return None


def _dummy(driver, dt):
    """A small per-driver array passed for unused pointer parameters (bias, Z, aux). Never
    ``out`` itself: aliased arguments would confuse the emulator's guarded copies."""
    per = _modules.setdefault(driver, {})
    key = ("dummy", np.dtype(dt).str)
    if key not in per:
        per[key] = driver.xp.zeros(4, dtype=dt)
    return per[key]


def _check2d(name: str, x) -> None:
    if getattr(x, "ndim", None) != 2:
        raise ValueError(f"matmul: {name} must be a 2-D array, got shape "
                         f"{getattr(x, 'shape', None)}")
    if not x.flags.c_contiguous:
        raise ValueError(f"matmul: {name} must be C-contiguous (pass xp.ascontiguousarray({name}))")


def _epilogue(activation, grad_activation, bias, z_out, grad_aux) -> int:
    epi = 1 if bias is not None else 0
    if activation is not None:
        name = _act.canonical(activation)
        if name != "linear":
            if name not in EPILOGUE_ACTIVATIONS:
                raise ValueError(f"matmul: activation {name!r} has no GEMM epilogue; use one of "
                                 f"{sorted(EPILOGUE_ACTIVATIONS)} or apply it separately")
            epi |= EPILOGUE_ACTIVATIONS[name] << 1
    if z_out is not None:
        epi |= 16
    if grad_activation is not None:
        name = _act.canonical(grad_activation)
        if name != "linear":
            if name not in EPILOGUE_ACTIVATIONS:
                raise ValueError(f"matmul: grad_activation {name!r} has no GEMM epilogue; use "
                                 f"one of {sorted(EPILOGUE_ACTIVATIONS)}")
            if grad_aux is None:
                raise ValueError(f"matmul: grad_activation={name!r} needs grad_aux "
                                 f"(the layer's saved {GRAD_AUX[name]})")
            epi |= EPILOGUE_ACTIVATIONS[name] << 5
    return epi


def matmul(driver, a, b, transpose_a: bool = False, transpose_b: bool = False, out=None,
           bias=None, activation: str | None = None, precision: str = "fp32",
           config: str | GemmConfig | None = None, *, z_out=None, grad_activation=None,
           grad_aux=None, alpha: float = 0.01, split_k: int | None = None, workspace=None,
           tiles=None):
    """C = epilogue(op(A) @ op(B)) on ``driver``; returns ``out`` (allocated when None).

    Shapes: op(A) (M, K), op(B) (K, N), C (M, N); op(X) = X^T when its flag is set (read in
    place). Epilogue, in order: ``+ bias`` (N,); store the pre-activation into ``z_out`` (M, N)
    when given; ``activation`` f (relu, leaky_relu with slope ``alpha``, sigmoid, tanh, gelu);
    multiply by ``grad_activation``'s derivative f'(grad_aux) (grad_aux (M, N) is z for
    relu/leaky_relu/gelu and a = f(z) for sigmoid/tanh; see ``GRAD_AUX``) - the backward
    ``delta = (delta_next W^T) * f'(z)`` in one kernel. ``precision``: "fp32" (float32 SIMT),
    "tf32" (float32 in/out on tensor cores, ~1e-3 relative error) or "fp64"; float64 inputs
    always use fp64. ``config`` forces a tile configuration, ``split_k`` a K split (1 = none);
    by default both come from the tuning table or the heuristic. Split-K needs a (split, M, N)
    workspace: ``workspace(n, dtype)`` returns a flat array of >= n elements (a buffer that
    outlives a recorded graph, e.g. the backend's scratch); without it one is allocated.
    ``tiles(n)``: >= n zeroed uint32 tickets for split-K's per-tile count (each launch leaves
    them at zero); default: one buffer per driver - GEMMs that may run at the same time (on
    two streams) must each pass their own.
    """
    xp = driver.xp
    _check2d("a", a)
    _check2d("b", b)
    if a.dtype != b.dtype or a.dtype not in (np.float32, np.float64):
        raise TypeError(f"matmul: a and b must both be float32 or float64, got {a.dtype} and "
                        f"{b.dtype}")
    dt = np.dtype(a.dtype)
    if dt == np.float64:
        if precision == "tf32":
            raise ValueError("matmul: precision='tf32' needs float32 inputs")
        precision = "fp64"
    elif precision not in ("fp32", "tf32"):
        raise ValueError(f"matmul: precision must be 'fp32' or 'tf32' for float32, "
                         f"got {precision!r}")
    M, K = (a.shape[1], a.shape[0]) if transpose_a else a.shape
    Kb, N = (b.shape[1], b.shape[0]) if transpose_b else b.shape
    if K != Kb:
        raise ValueError(f"matmul: inner dimensions differ: op(a) is {M}x{K}, op(b) is {Kb}x{N}")
    if out is None:
        out = xp.empty((M, N), dtype=dt)
    for nm, arr, shape in (("out", out, (M, N)), ("z_out", z_out, (M, N)),
                           ("grad_aux", grad_aux, (M, N)), ("bias", bias, (N,))):
        if arr is None:
            continue
        if tuple(arr.shape) != shape or arr.dtype != dt or not arr.flags.c_contiguous:
            raise ValueError(f"matmul: {nm} must be a C-contiguous {dt} array of shape {shape}, "
                             f"got {arr.dtype} {tuple(arr.shape)}")
    epi = _epilogue(activation, grad_activation, bias, z_out, grad_aux)
    if M == 0 or N == 0:
        return out

    form = ("t" if transpose_a else "n") + ("t" if transpose_b else "n")
    # 16-byte loads need every operand's leading dimension % 4 and aligned base pointers
    vec = (dt == np.float32 and _vec_ok(a.shape[1], b.shape[1])
           and _ptr(a) % 16 == 0 and _ptr(b) % 16 == 0)
    if config is not None:
        cfg = config if isinstance(config, GemmConfig) else config_by_name(config)
        if cfg.precision != precision:
            raise ValueError(f"matmul: config {cfg.name} is {cfg.precision}, not {precision}")
        if form not in cfg.forms:
            raise ValueError(f"matmul: {skip_reason(cfg, form, M, N, K)}")
        if cfg.vec_only and not vec:
            raise ValueError(f"matmul: config {cfg.name} needs 16-byte aligned operands whose "
                             f"leading dimensions are multiples of 4 (a {tuple(a.shape)}, b "
                             f"{tuple(b.shape)}); use another config")
        why = skip_reason(cfg, form, M, N, K, driver) if cfg.arch else None
        if why:
            raise ValueError(f"matmul: {why}")
        split = 1
    else:
        cfg, split = select(driver, M, N, K, form, precision)
        if form not in cfg.forms or (cfg.vec_only and not vec):
            # a table entry of the shape's bucket whose config cannot run this call (e.g.
            # wgmma on an unaligned view): the heuristic's choice, which always can
            cfg, split = heuristic(M, N, K, precision, _sm_count(driver))
    if split_k is not None:
        split = max(1, int(split_k))
    if K == 0:
        split = 1  # an empty sum: the epilogue alone (bias, activation) on zeros
    kernel = f"gemm_{cfg.name}_{form}_{'v' if vec else 's'}_{'f64' if dt == np.float64 else 'f32'}"
    k_chunk = K
    if split > 1:
        k_chunk = math.ceil(math.ceil(K / split) / 16) * 16  # multiple of every BK
        split = max(1, math.ceil(K / k_chunk))
    gy = math.ceil(M / cfg.bm)
    if gy > 65535:
        raise ValueError(f"matmul: M={M} needs {gy} row blocks, over CUDA's 65535 grid limit")
    grid = (math.ceil(N / cfg.bn), gy, split)
    scalar = dt.type
    smem = cfg.dynamic_smem(transpose_a, transpose_b, vec)
    mod = _module(driver, cfg)
    dummy = _dummy(driver, dt)
    no_tiles = _tile_counters(driver, 1)
    if split == 1:
        args = (a, b, out, bias if bias is not None else dummy,
                z_out if z_out is not None else dummy, grad_aux if grad_aux is not None else dummy,
                np.int32(M), np.int32(N), np.int32(K), np.int32(max(K, 1)), np.int32(epi),
                scalar(alpha), dummy, no_tiles, np.int32(0))
        driver.launch(mod, kernel, grid, (cfg.threads, 1, 1), args, smem)
        return out
    if workspace is None:
        ws = xp.empty((split, M, N), dtype=dt)
    else:  # the launches on one stream are ordered: one scratch serves every split GEMM
        ws = workspace(split * M * N, dt)[:split * M * N].reshape(split, M, N)
    # one launch: the slices store raw partials (epi 0) and the last slice of each output
    # tile sums them in slice order and applies the epilogue into ``out`` (gemm.cu,
    # gemm_splitk_finish); the per-tile tickets return to zero by the end of the launch
    args = (a, b, ws, bias if bias is not None else dummy,
            z_out if z_out is not None else dummy, grad_aux if grad_aux is not None else dummy,
            np.int32(M), np.int32(N), np.int32(K), np.int32(k_chunk), np.int32(0),
            scalar(alpha), out,
            (tiles or (lambda n: _tile_counters(driver, n)))(grid[0] * grid[1]), np.int32(epi))
    driver.launch(mod, kernel, grid, (cfg.threads, 1, 1), args, smem)
    return out


def _tile_counters(driver, n: int):
    """Zeroed uint32 tickets, one per output tile of a split-K launch (each launch leaves them
    at zero again), cached per driver. A grown buffer's predecessor is kept alive: a recorded
    CUDA graph may still point at it."""
    buf = _counters.get(driver)
    if buf is None or buf.size < n:
        if buf is not None:
            _retired_counters.append(buf)
        buf = driver.xp.zeros(max(int(n), 4096), dtype=np.uint32)
        _counters[driver] = buf
    return buf


# ---------------------------------------------------------------- autotuning
def _timer(driver, fn, warmup: int, repeats: int, inner: int | None = None) -> float:
    """Median seconds of ``fn()``. On a GPU ``inner`` calls are recorded into one CUDA graph
    and each replay is timed with CUDA events: device time only, as in a recorded training
    step (timing single Python launches would favour candidates with fewer launches, e.g.
    no split-K, whenever the host is slower than the kernel). Falls back to events around
    single calls if recording fails; wall clock on the emulator. ``inner`` defaults to enough
    calls for ~0.2 ms per replay (at most 20)."""
    xp = driver.xp
    for _ in range(warmup):
        fn()
    driver.synchronize()
    cuda = getattr(xp, "cuda", None)
    if cuda is not None:
        if inner is None:
            e0, e1 = cuda.Event(), cuda.Event()
            e0.record()
            fn()
            e1.record()
            e1.synchronize()
            once = cuda.get_elapsed_time(e0, e1) / 1e3
            inner = max(1, min(20, math.ceil(2e-4 / max(once, 1e-7))))
        graph, stream = _record(cuda, fn, inner)
        times = []
        for _ in range(repeats):
            e0, e1 = cuda.Event(), cuda.Event()
            if graph is not None:
                e0.record(stream)
                graph.launch(stream)
                e1.record(stream)
            else:
                e0.record()
                fn()
                e1.record()
            e1.synchronize()
            times.append(cuda.get_elapsed_time(e0, e1) / 1e3 / (inner if graph else 1))
        return float(np.median(times))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        driver.synchronize()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def _record(cuda, fn, n: int):
    """(graph of ``n`` calls of ``fn``, its stream), or (None, None) if recording fails."""
    stream = cuda.Stream(non_blocking=True)
    mode = getattr(cuda.runtime, "streamCaptureModeRelaxed", None)
    try:
        with stream:
            stream.begin_capture(mode) if mode is not None else stream.begin_capture()
            try:
                for _ in range(n):
                    fn()
            finally:
                graph = stream.end_capture()
        return graph, stream
    except Exception as exc:  # noqa: BLE001 - time single calls instead
        warnings.warn(f"autotune: recording failed ({exc}); timing single launches",
                      RuntimeWarning, stacklevel=3)
        return None, None


#: deepest K split the autotuner tries (the heuristic stops at 16)
MAX_SPLIT = 64


def candidates(M: int, N: int, K: int, precision: str, form: str = "nn", driver=None,
               skipped: list | None = None) -> list[tuple[GemmConfig, int]]:
    """(config, split_k) pairs worth timing for a shape: every config of the precision that
    can run it (``skip_reason``; the others are appended to ``skipped`` as {"config",
    "skipped": why}), and K splits 2..MAX_SPLIT for the configs whose grid is small."""
    out = []
    for c in configs(precision):
        why = skip_reason(c, form, M, N, K, driver)
        if why:
            if skipped is not None:
                skipped.append({"config": c.name, "skipped": why})
            continue
        out.append((c, 1))
        blocks = math.ceil(M / c.bm) * math.ceil(N / c.bn)
        s = 2
        # small grids (the MLP's batch-64 layers) need deep splits: each K slice of >= 48
        # keeps >= 3 k-tiles (784 / 16 = 49: the batch-64 forward GEMM may split 16 ways),
        # and a block's k-loop is latency-bound there, not FMA-bound; beyond 16 slices
        # (weight gradients over a batch of 8192: K = 8192 for a 256 x 256 output, 4 tiles of
        # 128 x 128) only while each slice keeps K >= 128
        while s <= MAX_SPLIT and K // s >= (48 if s <= 16 else 128) and blocks * s <= 4 * 132:
            out.append((c, s))
            s *= 2
    return out


#: autotune acceptance: max |C - reference| / rms(reference) per precision. Unit-normal
#: operands give entries of size ~sqrt(K); rounding gives ~1e-6 (fp32) and ~3e-3 (tf32, at
#: K = 8192) of that, while one lost k-tile or a stale/unwritten element is >= 3e-2.
VERIFY_TOL = {"fp32": 1e-3, "tf32": 2e-2, "fp64": 1e-9}


def _reference(driver, a, b, ta: bool, tb: bool):
    """op(A) @ op(B) in float64 by the array library (cuBLAS DGEMM through CuPy on a GPU,
    NumPy on cuda-emu): independent of every kernel in gemm.cu and of TF32 settings."""
    xp = driver.xp
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return xp.matmul(a64.T if ta else a64, b64.T if tb else b64)


def verify_error(driver, out, ref) -> float:
    """max |out - ref| / rms(ref) (inf when ``out`` holds a NaN/inf, e.g. unwritten)."""
    xp = driver.xp
    if not bool(xp.isfinite(out).all()):
        return math.inf
    if not ref.size:
        return 0.0
    ref64 = ref.astype(np.float64, copy=False)
    scale = float(xp.sqrt(xp.mean(ref64 * ref64)))
    err = float(xp.max(xp.abs(out.astype(np.float64) - ref64)))
    return err / (scale if scale > 0 else 1.0)


def tune_shape(driver, M: int, N: int, K: int, form: str = "nn", precision: str = "fp32",
               warmup: int = 3, repeats: int = 10, seed: int = 0, verify: bool = True,
               rejected: list | None = None, skipped: list | None = None) -> list[dict]:
    """Median time of every candidate (config, split_k) for one problem, fastest first:
    ``[{"config", "split_k", "seconds", "gflops", "error"}, ...]``. Compilation happens in the
    checked first run, outside the timings (CUDA events on a GPU, wall clock on the emulator).

    With ``verify`` (default) each candidate first computes the product into a NaN-poisoned
    output that must match a float64 ``xp.matmul`` (``verify_error`` <= ``VERIFY_TOL``); a candidate
    that differs, leaves an element unwritten or raises (compile or launch error) is never
    timed nor returned, so the autotuner cannot pick a wrong kernel. Rejections are appended
    to ``rejected`` ({"config", "split_k", "error"/"exception"}) when given, and warned.
    Configs that cannot run the problem at all (``skip_reason``: a form without entry points,
    an sm_90a config off Hopper) are not tried; they go to ``skipped`` with the reason."""
    xp = driver.xp
    rng = np.random.default_rng(seed)
    dt = np.float64 if precision == "fp64" else np.float32
    ta, tb = form[0] == "t", form[1] == "t"
    a = xp.asarray(rng.standard_normal((K, M) if ta else (M, K)).astype(dt))
    b = xp.asarray(rng.standard_normal((N, K) if tb else (K, N)).astype(dt))
    out = xp.empty((M, N), dtype=dt)
    cands = candidates(M, N, K, precision, form, driver, skipped)
    # split-K scratch for the deepest split tried (big shapes try none: 8192^2 x 64 slices
    # would be 17 GB), allocated outside any recording
    ws = xp.empty(max([s for _, s in cands if s > 1], default=1) * M * N, dtype=dt)
    ref = _reference(driver, a, b, ta, tb) if verify else None
    rows = []
    for cfg, split in cands:
        def run(cfg=cfg, split=split):
            matmul(driver, a, b, ta, tb, out=out, precision=precision, config=cfg,
                   split_k=split, workspace=lambda n, _dt: ws)
        err = None
        if verify:
            why: dict = {}
            try:
                out.fill(np.nan)
                run()
                driver.synchronize()
                err = verify_error(driver, out, ref)
                if not err <= VERIFY_TOL[precision]:
                    why = {"error": err}
            except Exception as exc:  # noqa: BLE001 - a broken candidate is skipped, not fatal
                why = {"exception": f"{type(exc).__name__}: {str(exc)[:500]}"}
            if why:
                bad = dict(config=cfg.name, split_k=split, **why)
                if rejected is not None:
                    rejected.append(bad)
                warnings.warn(f"autotune {precision} {form} {M}x{N}x{K}: rejected {cfg.name} "
                              f"split {split}: {why}", RuntimeWarning, stacklevel=2)
                continue
        t = _timer(driver, run, warmup, repeats)
        rows.append({"config": cfg.name, "split_k": split, "seconds": t,
                     "gflops": 2.0 * M * N * K / t / 1e9, "error": err})
    return sorted(rows, key=lambda r: r["seconds"])


def save_table(driver, table: dict, path: Path | None = None) -> Path:
    """Merge ``table`` ({key: {"config", "split_k", ...}}) into ``mlpaccel/tuning/<device>.json``
    (the user's cache folder when the package is read-only; or ``path``) and drop the cached
    copy so the next matmul reads it. Returns the file written."""
    device = device_name(driver)
    targets = [path] if path is not None else [TUNING_DIR / f"{device}.json",
                                               _user_tuning_dir() / f"{device}.json"]
    err: OSError | None = None
    for p in targets:
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            entries = _read_entries(p)
            entries.update(table)
            # atomic: a run killed mid-write (a timed-out tuning step) keeps the old table
            tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"device": device, "entries": entries}, indent=1,
                                      sort_keys=True) + "\n")
            os.replace(tmp, p)
        except OSError as exc:
            err = exc
            continue
        _tables.pop(device, None)
        return p
    raise OSError(f"cannot write the GEMM tuning table ({targets}): {err}")


def autotune(driver, shapes: Iterable[Sequence], precision: str = "fp32", warmup: int = 3,
             repeats: int = 10, write: bool = True, path: Path | None = None) -> dict:
    """Time every candidate (config, split_k) for each shape (``tune_shape``), keep the fastest.

    ``shapes``: (M, N, K) or (M, N, K, form) with form in nn/tn/nt/tt. Only candidates whose
    result matches ``xp.matmul`` are timed (``tune_shape``'s check). Returns the table
    ``{key: {"config", "split_k", "seconds", "gflops", "error", "shape"}}`` (plus
    ``"rejected"`` when a candidate failed the check, ``"skipped"`` with the reason for each
    config that cannot run the shape on this device; a shape with no valid candidate gets
    no entry, i.e. keeps the heuristic); with ``write`` merges each shape's entry into
    ``mlpaccel/tuning/<device>.json`` (or ``path``) as soon as it is measured."""
    table: dict = {}
    for shape in shapes:
        M, N, K = (int(v) for v in shape[:3])
        form = shape[3] if len(shape) > 3 else "nn"
        rejected: list = []
        skipped: list = []
        rows = tune_shape(driver, M, N, K, form, precision, warmup, repeats,
                          rejected=rejected, skipped=skipped)
        if not rows:
            continue
        entry = dict(rows[0], shape=[M, N, K])
        if rejected:
            entry["rejected"] = rejected
        if skipped:
            entry["skipped"] = skipped
        key = table_key(precision, form, M, N, K)
        table[key] = entry
        if write:  # shape by shape: a tuning run cut short keeps what it measured
            save_table(driver, {key: entry}, path)
    return table
