"""Peer measurements on a GPU machine: cuBLAS (through CuPy) as the GEMM reference and PyTorch
(eager, and the whole step captured in a CUDA graph) as the training reference.

These are not mlpaccel backends: they are what the backends are compared with. Each function
returns results rows (the format of ``bench.py``) and an empty list when the library or a GPU
is missing, so the report simply has no peer rows.
"""

from __future__ import annotations

import logging
import time

from . import bench

log = logging.getLogger("mlpaccel.bench")


def cublas_rows(sizes=(256, 512, 1024, 2048, 4096, 8192), machine: str = "m0",
                budget_s: float = 0.5, mlp_full: bool = False) -> list[dict]:
    """float32 ``cupy.matmul`` (cuBLAS SGEMM) rows labelled backend 'cuBLAS (CuPy)': square
    ``sizes`` and the MLP's GEMM shapes (``bench.mlp_gemm_shapes(mlp_full)``, transposed
    operands passed as transposed views, as our kernels read them)."""
    try:
        import cupy as cp

        cp.cuda.runtime.getDeviceCount()
    except Exception:  # no cupy or no device: no peer rows
        return []
    shapes = [(n, n, n, False, False) for n in sizes] + bench.mlp_gemm_shapes(mlp_full)
    rows = []
    for m, n, k, ta, tb in shapes:
        square = m == n == k and not (ta or tb)
        case = bench.matmul_case(m, n, k, ta=ta, tb=tb,
                                 group="matmul-square" if square else "matmul-mlp")
        a = cp.asarray(bench._rand((k, m) if ta else (m, k), "float32", 1))
        b = cp.asarray(bench._rand((n, k) if tb else (k, n), "float32", 2))
        opa, opb = (a.T if ta else a), (b.T if tb else b)
        out = cp.empty((m, n), cp.float32)
        t = bench.measure(lambda opa=opa, opb=opb, out=out: cp.matmul(opa, opb, out=out),
                          cp.cuda.runtime.deviceSynchronize, budget_s=budget_s)
        rows.append(bench._row(machine, "cuBLAS (CuPy)", case, "ok", timing=t))
    return rows


def torch_rows(batches=(64, 256, 1024, 8192), machine: str = "m0",
               layers=bench.MNIST_LAYERS, samples: int = bench.MNIST_SAMPLES,
               epochs: int = 3, adam_batches=(64, 1024)) -> list[dict]:
    """PyTorch's MNIST-shaped epoch (SGD lr 0.01; Adam lr 1e-3 at ``adam_batches``), eager and
    CUDA-graph, best of ``epochs``; plus TF32 tensor-core GEMM rows (the ceiling our FP32
    kernels do not use). Without a GPU: the eager epochs on the CPU (same thread count as
    ours), the CPU peer of the numba and numpy backends."""
    try:
        import torch
    except Exception:
        return []
    gpu = torch.cuda.is_available()
    dev = torch.device("cuda" if gpu else "cpu")
    rows = []
    if gpu:
        torch.backends.cuda.matmul.allow_tf32 = True
        for n in (4096, 8192):
            a = torch.randn(n, n, device=dev)
            b = torch.randn(n, n, device=dev)
            t = bench.measure(lambda a=a, b=b: a @ b, torch.cuda.synchronize, budget_s=0.5)
            rows.append(bench._row(machine, "PyTorch TF32", bench.matmul_case(n, n, n), "ok",
                                   timing=t))
        torch.backends.cuda.matmul.allow_tf32 = False
    x = torch.rand(samples, layers[0], device=dev)
    y = torch.randint(0, layers[-1], (samples,), device=dev)
    runs = [(b, "sgd") for b in batches] + [(b, "adam") for b in adam_batches]
    for batch, optimizer in runs:
        for graph in ((False, True) if gpu else (False,)):
            try:
                best = _torch_epoch(torch, x, y, layers, batch, graph, epochs, optimizer)
            except Exception as exc:  # a peer failing must not lose our own rows
                log.warning("torch peer b%d %s graph=%s failed: %s", batch, optimizer, graph,
                            exc)
                continue
            what = ("PyTorch CUDA graph" if graph else "PyTorch eager") + \
                ("" if gpu else " (CPU)") + f" ({'SGD' if optimizer == 'sgd' else 'Adam'})"
            steps = -(-samples // batch)  # the short last batch included, as MLP.fit
            flops = (samples // batch) * bench.mlp_step_flops(batch, layers) + \
                (bench.mlp_step_flops(samples % batch, layers) if samples % batch else 0.0)
            case = bench.Case("train_peer", "training", (batch,), flops, 0.0, lambda B: None,
                              extra={"what": what, "optimizer": optimizer, "graph": graph,
                                     "steps_per_epoch": steps, "samples": samples,
                                     "threads": torch.get_num_threads()})
            row = bench._row(machine, "torch", case, "ok")
            row.update(median_s=best / steps, min_s=best / steps, rounds=epochs, inner=steps)
            row["gflops"] = case.flops / best / 1e9
            row["extra"].update(epoch_s=best, samples_per_s=samples / best)
            rows.append(row)
    return rows


def _torch_epoch(torch, x, y, layers, batch, graph, epochs, optimizer="sgd") -> float:
    nn = torch.nn
    mods = []
    for i, (fi, fo) in enumerate(zip(layers[:-1], layers[1:])):
        mods.append(nn.Linear(fi, fo))
        if i < len(layers) - 2:
            mods.append(nn.ReLU())
    model = nn.Sequential(*mods).to(x.device)
    if optimizer == "adam":  # capturable: the step count lives on the device, as ours does
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, capturable=graph)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = nn.CrossEntropyLoss()
    N = x.shape[0]  # every sample, the short last batch included, as MLP.fit trains
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)

    def step(xb, yb):
        opt.zero_grad(set_to_none=not graph)
        loss = loss_fn(model(xb), yb)
        loss.backward()
        opt.step()
        return loss

    if graph:  # the PyTorch docs' whole-network capture: static buffers, warm-up on a side
        # stream; one graph per batch size (the full batches and the short last one)
        opt.zero_grad(set_to_none=False)
        graphs = {}
        for size in sorted({batch, N % batch} - {0}, reverse=True):
            sx, sy = x[:size].clone(), y[:size].clone()
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                for _ in range(3):
                    step(sx, sy)
            torch.cuda.current_stream().wait_stream(s)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                step(sx, sy)
            graphs[size] = (g, sx, sy)

        def run(xb, yb):
            g, sx, sy = graphs[xb.shape[0]]
            sx.copy_(xb)
            sy.copy_(yb)
            g.replay()
    else:
        run = step
    best = float("inf")
    for _ in range(epochs):
        perm = torch.randperm(N, device=x.device)
        sync()
        t0 = time.perf_counter()
        for i in range(0, N, batch):
            idx = perm[i:i + batch]
            run(x[idx], y[idx])
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


def peer_rows(mode: str = "quick", machine: str = "m0") -> list[dict]:
    """All peer rows available here (none on a machine without a GPU)."""
    sizes = (256, 512, 1024, 2048, 4096, 8192) if mode == "full" else (256, 1024, 4096)
    batches = (64, 256, 1024, 8192) if mode == "full" else (64, 256, 1024)
    adam = (64, 1024) if mode == "full" else ()
    return (cublas_rows(sizes, machine, mlp_full=mode == "full")
            + _torch_peer(batches, adam, machine))


def _torch_peer(batches, adam, machine):
    """torch_rows on a GPU; on a CPU only the batches the numba target names (64, 256)."""
    try:
        import torch

        gpu = torch.cuda.is_available()
    except Exception:
        return []
    if not gpu:
        batches, adam = tuple(b for b in batches if b <= 256) or (256,), ()
    return torch_rows(batches, machine, adam_batches=adam)


