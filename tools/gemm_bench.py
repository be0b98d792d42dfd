"""Check and time our GEMM (kernels/gemm.cu) against cuBLAS on the GPU, in one call.

    PYTHONPATH=. python3 tools/gemm_bench.py --out OUTDIR [--quick]

1. compiles every configuration (NVRTC, in parallel threads);
2. correctness: every config x transpose form x load path vs float64 at edge shapes, plus the
   epilogues, against cupy.matmul on float64 copies;
3. timing (CUDA events, warm-up, median): square 512..8192 and the MLP shapes
   (B x 784 -> 256 forward, x^T delta and delta W^T backward, B = 64/256/1024/8192): every
   candidate (config, split_k) of ours vs cupy.matmul (cuBLAS FP32) and, for TF32, ours vs
   torch.matmul with allow_tf32 (cuBLAS TF32);
4. writes OUTDIR/gemm_bench.json, the tuning table OUTDIR/<device>.json (also saved into
   mlpaccel/tuning/), and prints a table.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mlpaccel.backends import cuda_gemm as cg  # noqa: E402


def _numpy_as_cupy():
    """A stand-in ``cupy`` module over NumPy for ``--emu`` (a dry run of this script on the CPU
    emulator, to check its code paths before spending GPU time)."""
    import types

    class _Ev:
        def record(self):
            self.t = time.perf_counter()

        def synchronize(self):
            pass

    shim = types.ModuleType("cupy")
    shim.__dict__.update({k: getattr(np, k) for k in dir(np) if not k.startswith("__")})
    shim.__version__ = "numpy-shim"
    shim.asnumpy = np.asarray
    shim.random = np.random
    shim.cuda = types.SimpleNamespace(
        Event=_Ev, get_elapsed_time=lambda a, b: (b.t - a.t) * 1e3,
        runtime=types.SimpleNamespace(deviceSynchronize=lambda: None))
    return shim


def make_driver(emu=False):
    """The backend's CupyDriver, or a minimal stand-in when cuda.py cannot be used."""
    if emu:
        from mlpaccel.backends.cuda_emu import EmuDriver

        return EmuDriver()
    try:
        from mlpaccel.backends.cuda import CupyDriver

        return CupyDriver()
    except Exception as exc:  # noqa: BLE001 - cuda.py in flux: keep the benchmark running
        print(f"CupyDriver unavailable ({exc!r}); using the local MiniDriver", flush=True)
    import cupy

    kdir = Path(__file__).resolve().parent.parent / "kernels"

    class MiniDriver:
        name, xp = "cupy", cupy
        sm_count = cupy.cuda.runtime.getDeviceProperties(0)["multiProcessorCount"]

        def __init__(self):
            self.mods = {}

        def load(self, module, options=(), arch=None):
            if arch is not None:
                raise RuntimeError(f"MiniDriver cannot compile for {arch}")
            key = (module, tuple(options))
            if key not in self.mods:
                m = cupy.RawModule(code=(kdir / f"{module}.cu").read_text(),
                                   options=("--std=c++17", f"-I{kdir}", *options))
                m.compile()
                self.mods[key] = m
            return self.mods[key]

        def launch(self, mod, kernel, grid, block, args, shared_mem=0):
            fn = mod.get_function(kernel)
            if shared_mem > 48 * 1024:
                fn.max_dynamic_shared_size_bytes = shared_mem
            fn(tuple(grid), tuple(block), tuple(args), shared_mem=shared_mem)

        def synchronize(self):
            cupy.cuda.runtime.deviceSynchronize()

        def info(self):
            n = cupy.cuda.runtime.getDeviceProperties(0)["name"]
            return {"device": n.decode() if isinstance(n, bytes) else n}

    return MiniDriver()


def event_median(fn, warmup=2, repeats=10):
    import cupy

    for _ in range(warmup):
        fn()
    cupy.cuda.runtime.deviceSynchronize()
    ts = []
    for _ in range(repeats):
        e0, e1 = cupy.cuda.Event(), cupy.cuda.Event()
        e0.record()
        fn()
        e1.record()
        e1.synchronize()
        ts.append(cupy.cuda.get_elapsed_time(e0, e1) / 1e3)
    return float(np.median(ts))


def relerr(got, ref):
    import cupy

    return float(cupy.linalg.norm(got.astype(cupy.float64) - ref) / max(
        float(cupy.linalg.norm(ref)), 1e-300))


def check_correctness(d, log, emu=False):
    """Every config x form x load path at edge shapes vs float64 cupy.matmul."""
    import cupy

    rng = cupy.random.default_rng(1)
    rows, ok = [], True
    for cfg in cg.configs():
        dt = cupy.float64 if cfg.precision == "fp64" else cupy.float32
        tol = {"fp32": 1e-5, "tf32": 3e-3, "fp64": 1e-12}[cfg.precision]
        big = [(257, 509, 131), (3 * cfg.bm + 1, 2 * cfg.bn + 3, 1001), (1024, 768, 512)]
        if cfg.vec_only:  # 16-byte path only (wgmma): N and K multiples of 4
            big = [(257, 508, 132), (3 * cfg.bm + 1, 2 * cfg.bn + 4, 1000), (1024, 768, 512),
                   (4096, 4096, 4096)]
            small = [(1, 4, 4), (cfg.bm + 1, cfg.bn - 4, 20)]
        else:
            small = [(1, 1, 1), (cfg.bm + 1, cfg.bn - 4, 21)]
        for (M, N, K) in small + ([] if emu else big):
            for form in ("nn", "tn", "nt", "tt"):
                why = cg.skip_reason(cfg, form, M, N, K, d)
                if why:
                    rows.append({"config": cfg.name, "form": form, "shape": [M, N, K],
                                 "skipped": why})
                    continue
                ta, tb = form[0] == "t", form[1] == "t"
                a = rng.standard_normal((K, M) if ta else (M, K)).astype(dt)
                b = rng.standard_normal((N, K) if tb else (K, N)).astype(dt)
                out = cupy.full((M, N), cupy.nan, dtype=dt)
                cg.matmul(d, a, b, ta, tb, out=out, precision=cfg.precision, config=cfg)
                a64, b64 = a.astype(cupy.float64), b.astype(cupy.float64)
                ref = (a64.T if ta else a64) @ (b64.T if tb else b64)
                e = relerr(out, ref) if bool(cupy.isfinite(out).all()) else float("inf")
                good = e < tol
                ok &= good
                rows.append({"config": cfg.name, "form": form, "shape": [M, N, K],
                             "relerr": e, "ok": good})
                if not good:
                    log(f"FAIL {cfg.name} {form} {M}x{N}x{K}: relerr {e:.3e}")
    # epilogues + split-K through the default selection
    M, N, K = (40, 37, 600) if emu else (1000, 777, 2053)
    a = rng.standard_normal((M, K), dtype=cupy.float32)
    b = rng.standard_normal((K, N), dtype=cupy.float32)
    bias = rng.standard_normal(N, dtype=cupy.float32)
    z = cupy.empty((M, N), cupy.float32)
    out = cg.matmul(d, a, b, bias=bias, activation="relu", z_out=z)
    zref = a.astype(cupy.float64) @ b.astype(cupy.float64) + bias
    e1, e2 = relerr(z, zref), relerr(out, cupy.maximum(zref, 0))
    for split in (1, 4):
        g = cg.matmul(d, a, b, transpose_a=False, grad_activation="relu", grad_aux=zref.astype(
            cupy.float32), split_k=split)
        e3 = relerr(g, (a.astype(cupy.float64) @ b.astype(cupy.float64)) * (zref > 0))
        ok &= e3 < 1e-5
        rows.append({"config": "epilogue_grad_relu", "split_k": split, "relerr": e3})
    ok &= e1 < 1e-5 and e2 < 1e-5
    rows.append({"config": "epilogue_bias_relu_z", "relerr": [e1, e2]})
    log(f"correctness: {'all OK' if ok else 'FAILURES'} ({len(rows)} checks); "
        f"epilogue errs {e1:.1e} {e2:.1e}")
    return ok, rows


def shapes(quick, emu=False):
    if emu:  # tiny stand-ins for the dry run
        return [(64, 64, 64, "nn", "square"), (16, 32, 24, "nn", "fwd B=16"),
                (24, 32, 300, "tn", "dW B=300"), (16, 24, 32, "nt", "dX B=16")]
    sq = [512, 1024, 2048, 4096] if quick else [512, 1024, 2048, 4096, 8192]
    out = [(n, n, n, "nn", "square") for n in sq]
    for B in (64, 256, 1024, 8192):
        out += [(B, 256, 784, "nn", f"fwd B={B}"), (784, 256, B, "tn", f"dW B={B}"),
                (B, 784, 256, "nt", f"dX B={B}")]
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=".", help="folder for gemm_bench.json and the table")
    ap.add_argument("--quick", action="store_true", help="skip 8192^3")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--emu", action="store_true",
                    help="dry run on the CPU emulator with tiny shapes (checks this script)")
    args = ap.parse_args(argv)
    if args.emu:
        sys.modules["cupy"] = _numpy_as_cupy()
    outdir = Path(args.out)
    outdir.mkdir(parents=True, exist_ok=True)

    def log(msg):
        print(msg, flush=True)

    import cupy

    d = make_driver(args.emu)
    dev = cg.device_name(d)
    log(f"device {dev}, cupy {cupy.__version__}")
    t0 = time.perf_counter()
    runnable = [c for c in cg.configs() if not cg.skip_reason(c, "nn", 64, 64, 64, d)]
    for c in cg.configs():
        if c not in runnable:
            log(f"not a candidate here: {cg.skip_reason(c, 'nn', 64, 64, 64, d)}")
    with ThreadPoolExecutor(8) as ex:  # NVRTC compiles release the GIL: compile in parallel
        list(ex.map(lambda c: cg._module(d, c), runnable))
    log(f"compiled {len(runnable)} configs in {time.perf_counter() - t0:.1f} s")

    ok, corr = check_correctness(d, log, args.emu)
    result = {"device": dev, "correct": ok, "correctness": corr, "timings": []}
    bad = {r["config"] for r in corr if r.get("ok") is False}
    if bad:
        log(f"excluded from tuning (wrong results): {sorted(bad)}")

    try:
        if args.emu:
            raise ImportError("no torch TF32 reference in the dry run")
        import torch

        torch.backends.cuda.matmul.allow_tf32 = True
    except Exception:  # noqa: BLE001 - torch is optional: TF32 reference skipped
        torch = None
    table, lines = {}, []
    for M, N, K, form, label in shapes(args.quick, args.emu):
        ta, tb = form[0] == "t", form[1] == "t"
        rng = cupy.random.default_rng(0)
        a = rng.standard_normal((K, M) if ta else (M, K), dtype=cupy.float32)
        b = rng.standard_normal((N, K) if tb else (K, N), dtype=cupy.float32)
        ao, bo = (a.T if ta else a), (b.T if tb else b)
        flops = 2.0 * M * N * K
        reps = args.repeats if flops < 1e12 else max(5, args.repeats // 2)
        t_cublas = event_median(lambda ao=ao, bo=bo: cupy.matmul(ao, bo), repeats=reps)
        row = {"label": label, "shape": [M, N, K], "form": form, "cublas_fp32_s": t_cublas}
        for prec in ("fp32", "tf32"):
            skipped: list = []
            cands = [c for c in cg.tune_shape(d, M, N, K, form, prec, warmup=2, repeats=reps,
                                              skipped=skipped)
                     if c["config"] not in bad]  # never tune in a config that gave wrong results
            row[prec] = cands
            if skipped:
                row[f"{prec}_skipped"] = skipped
            table[cg.table_key(prec, form, M, N, K)] = dict(cands[0], shape=[M, N, K])
        d_sel, s_sel = cg.select(d, M, N, K, form, "fp32")
        row["heuristic_fp32"] = [d_sel.name, s_sel]
        if torch is not None:
            ta_t = torch.as_tensor(a, device="cuda")
            tb_t = torch.as_tensor(b, device="cuda")
            at, bt = (ta_t.T if ta else ta_t), (tb_t.T if tb else tb_t)
            row["cublas_tf32_s"] = event_median(lambda at=at, bt=bt: torch.matmul(at, bt),
                                                repeats=reps)
        result["timings"].append(row)
        f32, t32 = row["fp32"][0], row["tf32"][0]
        tf = row.get("cublas_tf32_s")
        line = (f"{label:>12} {M:>5}x{N:>5}x{K:>5} {form} | cuBLAS {flops / t_cublas / 1e12:6.2f} "
                f"| ours {f32['gflops'] / 1e3:6.2f} TF/s {t_cublas / f32['seconds'] * 100:5.1f}% "
                f"({f32['config']},s{f32['split_k']}) | tf32 cuBLAS "
                f"{(flops / tf / 1e12) if tf else math.nan:6.1f} ours {t32['gflops'] / 1e3:6.1f} "
                f"{(tf / t32['seconds'] * 100) if tf else math.nan:5.1f}% ({t32['config']},"
                f"s{t32['split_k']})")
        lines.append(line)
        log(line)
        (outdir / "gemm_bench.json").write_text(json.dumps(result, indent=1))  # partial too
    p = cg.save_table(d, table, outdir / "tuning.json" if args.emu else None)
    (outdir / p.name).write_text(p.read_text())
    (outdir / "gemm_bench.json").write_text(json.dumps(result, indent=1))
    log("\n".join(["", "TFLOP/s; % = cuBLAS time / our time (same run)", *lines]))
    log(f"correctness {'OK' if ok else 'FAILED'}; table {p}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
