"""Host side of kernels/head.cu: a classifier's output layer (linear + softmax-CE + the
gradients of W, b and of the layer below) as one launch.

``tuned_blocks`` says what was measured fastest on this device (a grid, or 0 = the composed
ops; from the tuning table ``tools/head_bench.py --save`` writes), ``default_blocks`` and
``MAX_FUSED_ROWS`` decide without a measurement, ``plan`` says whether the kernel computes a
call (entry point, blocks, shared memory) and ``launch`` runs it.
``CudaBackend.output_layer_grad`` uses them and composes the ops otherwise. No cupy import
here: arrays come from the backend.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MODULE = "head"
NT = 256           # threads per block (head.cu NT)
ROWS = NT // 32    # rows per chunk: one per warp (head.cu RW)
CMAX = (16, 32)    # class-count variants (entry points xent_head_c<CMAX>_<T>)
SCRATCH = 33       # block_sum scratch + the last-block flag
#: shared memory a launch may ask for (the H100/H200 opt-in limit is 227 KB; leave room)
MAX_SMEM = 160 * 1024
#: batches up to this many rows take the fused kernel by default; larger ones the composed ops.
#: Measured on an H200 (tools/head_bench.py, 784-256-256-10's output layer, best grid): fused
#: vs composed 15.6 vs 25.7 µs at b64, 21.5 vs 31.6 at b256, 36.2 vs 35.9 at b1024, 97.6 vs
#: 80.2 at b8192 - each chunk of 8 rows costs ~7.5 µs of serialized global-load latency
#: (kernels/NOTES.md), so the kernel wins only while the chunks are few.
MAX_FUSED_ROWS = 512
#: per-chunk time / per-block cost of the final sum, both fitted to the H200 grid sweep at
#: b1024 (7.5 µs per chunk, 0.33 µs per block of S = 2827 partial values). Both loops have
#: issued their loads together since (not yet measured): the next ``head_bench --save``
#: stores measured grids, which ``tuned_blocks`` prefers to this rule.
_CHUNK_OVER_BLOCK = 7.5 / 0.33


def smem_bytes(K: int, C: int, cmax: int, itemsize: int) -> int:
    """Dynamic shared memory of one block: Ws and acc (C x K each), accb (K), xs (ROWS x K),
    ds (ROWS x cmax), bs (cmax), scratch - in elements of the dtype (head.cu's layout)."""
    return (2 * K * C + K + ROWS * K + ROWS * cmax + cmax + SCRATCH) * itemsize


def default_blocks(M: int, K: int, C: int) -> int:
    """Blocks for M rows. A block loops over chunks of 8 rows (~7.5 µs each on an H200,
    latency-bound), and the last block adds every block's partials (S = K C + C + 1 + K
    values; ~0.33 µs per block at S = 2827): time ~ chunks / G * 7.5 + G * 0.33 * S / 2827,
    least at G = sqrt(chunks * 22.7 * 2827 / S) - the H200 sweep's best grids were 8 (b64),
    32 (b256), 64 (b1024), 128 (b8192); this gives 8, 27, 54, 152."""
    chunks = -(-M // ROWS)
    S = K * C + C + 1 + K
    g = int(round(math.sqrt(chunks * _CHUNK_OVER_BLOCK * 2827.0 / S)))
    return max(1, min(chunks, g))


@dataclass(frozen=True)
class HeadPlan:
    kernel: str
    blocks: int
    smem: int
    M: int
    K: int
    C: int


def plan(M: int, K: int, C: int, dtype, blocks: int | None = None) -> HeadPlan | None:
    """The launch for x (M, K) -> C classes in ``dtype``, or None when the kernel does not
    compute it (C > 32, empty, or W, its gradient and the row buffers exceed MAX_SMEM)."""
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)) or M < 1 or K < 1 or C < 1:
        return None
    cmax = next((c for c in CMAX if C <= c), None)
    if cmax is None:
        return None
    smem = smem_bytes(K, C, cmax, dt.itemsize)
    if smem > MAX_SMEM:
        return None
    chunks = -(-M // ROWS)
    g = default_blocks(M, K, C) if blocks is None else max(1, min(int(blocks), chunks))
    sfx = "f32" if dt == np.float32 else "f64"
    return HeadPlan(f"xent_head_c{cmax}_{sfx}", g, smem, M, K, C)


# ---------------------------------------------------------------- measured choice
def table_key(dtype, K: int, C: int, M: int) -> str:
    """Key of a measured choice in the device's tuning table (shared with the GEMM's):
    dtype, layer shape and the batch's power-of-two bucket."""
    return f"head:{'f32' if np.dtype(dtype) == np.float32 else 'f64'}:{K}x{C}:b{_bucket(M)}"


def _bucket(v: int) -> int:
    return 1 << max(0, int(v) - 1).bit_length()


def tuned_blocks(driver, M: int, K: int, C: int, dtype) -> int | None:
    """What ``tools/head_bench.py --save`` measured fastest on this device for this layer at
    the nearest batch bucket (at most one octave away): the fused kernel's grid (> 0; the
    grid itself only for the same bucket, else ``default_blocks``), 0 when the composed ops
    won, None without a measurement (the caller's rule decides)."""
    from .cuda_gemm import device_name, load_table

    table = load_table(device_name(driver))
    if not table:
        return None
    want = table_key(dtype, K, C, M)
    hit = _tuned.get((want, M))
    if hit is not None and hit[0] is table:  # the table object changes when one is saved
        return hit[1]
    blocks = _lookup(table, want, M, K, C)
    _tuned[(want, M)] = (table, blocks)
    return blocks


#: tuned_blocks' answers, per (key, rows), with the table they came from: the scan over the
#: table's keys would otherwise run on every eager call of the output layer
_tuned: dict = {}


def _lookup(table: dict, want: str, M: int, K: int, C: int) -> int | None:
    """``tuned_blocks``' search: the entry of the nearest batch bucket for this layer."""
    stem, b = want.rsplit(":b", 1)
    best, dist = None, 2.0
    for key, entry in table.items():
        if not key.startswith(stem + ":b"):
            continue
        d = abs(math.log2(int(key.rsplit(":b", 1)[1])) - math.log2(int(b)))
        if d < dist:
            best, dist = (key, entry), d
    if best is None or dist > 1.0:
        return None
    blocks = int(best[1].get("blocks", 0))
    if blocks <= 0:
        return 0
    return blocks if best[0] == want else default_blocks(M, K, C)


def partial_size(p: HeadPlan) -> int:
    """Elements of the partials buffer a launch with more than one block needs (room for
    the layer below's bias gradient included)."""
    return p.blocks * (p.K * p.C + p.C + 1 + p.K) if p.blocks > 1 else 1


def launch(backend, p: HeadPlan, x, W, b, y, gW, gb, loss, dX, gbb, aux, dact: int,
           alpha: float, part, counter, loss_acc=None) -> None:
    """Run the planned kernel. ``b``/``gb`` None: no bias; ``dX`` None: no input gradient;
    ``gbb`` None: no column sums of dX (the layer below's bias gradient); ``aux`` None or
    dact 0: dX without a derivative; ``loss_acc`` = (acc, w): also acc += w * loss.
    Unused pointers get a valid stand-in."""
    stand_in = x
    flags = (1 if b is not None else 0) | (2 if dX is not None else 0) | \
        (4 if dX is not None and gbb is not None else 0) | (8 if loss_acc is not None else 0)
    acc, w = loss_acc if loss_acc is not None else (loss, 0.0)
    T = x.dtype.type
    backend._launch(MODULE, p.kernel, p.blocks, NT,
                    (x, W, stand_in if b is None else b, y, gW, gW if gb is None else gb, loss,
                     stand_in if dX is None else dX, gW if gbb is None else gbb,
                     stand_in if aux is None else aux,
                     np.int32(dact if aux is not None else 0), T(alpha), part, counter,
                     np.int32(p.M), np.int32(p.K), np.int32(p.C), np.int32(flags), acc,
                     T(w)),
                    shared_mem=p.smem)
