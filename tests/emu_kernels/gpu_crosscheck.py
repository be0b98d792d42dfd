"""Run the emulator's feature kernels on a real GPU and save the outputs (GPU machine only).

    PYTHONPATH=. python3 tests/emu_kernels/gpu_crosscheck.py OUT.npz

The inputs are regenerated from fixed seeds; compare with the emulator via
``python tests/emu_kernels/gpu_crosscheck.py --compare OUT.npz`` on any machine.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
KERNELS = HERE.parent.parent / "kernels"


def inputs():
    rng = np.random.default_rng(123)
    bits = rng.integers(0, 2**32, 4096, dtype=np.uint64).astype(np.uint32)
    ties = (rng.integers(0, 2**19, 256, dtype=np.uint64).astype(np.uint32) << 13) | 0x1000
    x = np.concatenate([bits, ties]).view(np.float32)
    a = rng.standard_normal((4, 16, 8)).astype(np.float32)
    b = rng.standard_normal((4, 8, 8)).astype(np.float32)
    c = rng.standard_normal((4, 16, 8)).astype(np.float32)
    w = rng.integers(0, 20, 64).astype(np.int32)
    return x, a, b, c, w


def run(launch, xp, zeros):
    x, a, b, c, w = inputs()
    out = {}
    t = zeros(x.size, np.uint32)
    launch("tf32_round", ((x.size + 255) // 256,), (256,), [xp(x), t, np.int32(x.size)])
    out["tf32"] = t
    d = zeros(c.shape, np.float32)
    launch("mma_tile", (2,), (64,), [xp(a), xp(b), xp(c), d])
    out["mma"] = d
    o = zeros(12 * 64, np.int32)
    launch("warp_ops", (1,), (64,), [xp(w), o])
    out["warp"] = o
    return out


def main_gpu(path):
    import cupy as cp

    src = (HERE / "features.cu").read_text()
    mod = cp.RawModule(code=src, options=(f"-I{KERNELS}", "--std=c++17"),
                       name_expressions=None)

    def launch(name, grid, block, args):
        mod.get_function(name)(grid, block, tuple(args))

    res = run(launch, cp.asarray, lambda s, dt: cp.zeros(s, dt))
    cp.cuda.Device().synchronize()
    np.savez(path, **{k: cp.asnumpy(v) for k, v in res.items()},
             device=cp.cuda.runtime.getDeviceProperties(0)["name"].decode())


def compare(path):
    from mlpaccel.backends.cuda_emu import EmuDriver

    drv = EmuDriver()
    mod = drv.load(str(HERE / "features.cu"))
    emu = run(lambda n, g, b, a: drv.launch(mod, n, g, b, a), np.asarray, np.zeros)
    gpu = np.load(path)
    print("device:", gpu["device"])
    for k, v in emu.items():
        diff = np.abs(v.astype(np.float64) - gpu[k].astype(np.float64))
        print(f"{k:6s} identical={np.array_equal(v, gpu[k])} max|diff|={diff.max():.3g}")


if __name__ == "__main__":
    if sys.argv[1] == "--compare":
        compare(sys.argv[2])
    else:
        main_gpu(sys.argv[1])
