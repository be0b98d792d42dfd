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
                budget_s: float = 0.5) -> list[dict]:
    """Square float32 ``cupy.matmul`` (cuBLAS SGEMM) rows labelled backend 'cuBLAS'."""
    try:
        import cupy as cp

        cp.cuda.runtime.getDeviceCount()
    except Exception:  # no cupy or no device: no peer rows
        return []
    rows = []
    for n in sizes:
        case = bench.matmul_case(n, n, n)
        a = cp.asarray(bench._rand((n, n), "float32", 1))
        b = cp.asarray(bench._rand((n, n), "float32", 2))
        out = cp.empty((n, n), cp.float32)
        t = bench.measure(lambda a=a, b=b, out=out: cp.matmul(a, b, out=out),
                          cp.cuda.runtime.deviceSynchronize, budget_s=budget_s)
        rows.append(bench._row(machine, "cuBLAS (CuPy)", case, "ok", timing=t))
    return rows


def torch_rows(batches=(64, 256, 1024, 8192), machine: str = "m0",
               layers=bench.MNIST_LAYERS, samples: int = bench.MNIST_SAMPLES,
               epochs: int = 3) -> list[dict]:
    """PyTorch's MNIST-shaped epoch (SGD lr 0.01), eager and CUDA-graph, best of ``epochs``;
    plus TF32 tensor-core GEMM rows (the ceiling our FP32 kernels do not use)."""
    try:
        import torch

        if not torch.cuda.is_available():
            return []
    except Exception:
        return []
    dev = torch.device("cuda")
    rows = []
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
    for batch in batches:
        for graph in (False, True):
            try:
                best = _torch_epoch(torch, x, y, layers, batch, graph, epochs)
            except Exception as exc:  # a peer failing must not lose our own rows
                log.warning("torch peer b%d graph=%s failed: %s", batch, graph, exc)
                continue
            what = "PyTorch CUDA graph" if graph else "PyTorch eager"
            steps = samples // batch
            case = bench.Case("train_peer", "training", (batch,),
                              steps * bench.mlp_step_flops(batch, layers), 0.0, lambda B: None,
                              extra={"what": what, "steps_per_epoch": steps})
            row = bench._row(machine, "torch", case, "ok")
            row.update(median_s=best / steps, min_s=best / steps, rounds=epochs, inner=steps)
            row["gflops"] = case.flops / best / 1e9
            row["extra"].update(epoch_s=best, samples_per_s=steps * batch / best)
            rows.append(row)
    return rows


def _torch_epoch(torch, x, y, layers, batch, graph, epochs) -> float:
    nn = torch.nn
    mods = []
    for i, (fi, fo) in enumerate(zip(layers[:-1], layers[1:])):
        mods.append(nn.Linear(fi, fo))
        if i < len(layers) - 2:
            mods.append(nn.ReLU())
    model = nn.Sequential(*mods).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = nn.CrossEntropyLoss()
    n = x.shape[0] // batch * batch

    def step(xb, yb):
        opt.zero_grad(set_to_none=not graph)
        loss = loss_fn(model(xb), yb)
        loss.backward()
        opt.step()
        return loss

    if graph:  # the PyTorch docs' whole-network capture: static buffers, warm-up on a side stream
        sx, sy = x[:batch].clone(), y[:batch].clone()
        s = torch.cuda.Stream()
        s.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s):
            for _ in range(3):
                step(sx, sy)
        torch.cuda.current_stream().wait_stream(s)
        g = torch.cuda.CUDAGraph()
        opt.zero_grad(set_to_none=False)
        with torch.cuda.graph(g):
            step(sx, sy)

        def run(xb, yb):
            sx.copy_(xb)
            sy.copy_(yb)
            g.replay()
    else:
        run = step
    best = float("inf")
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0], device=x.device)[:n]
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for i in range(0, n, batch):
            idx = perm[i:i + batch]
            run(x[idx], y[idx])
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return best


def peer_rows(mode: str = "quick", machine: str = "m0") -> list[dict]:
    """All peer rows available here (none on a machine without a GPU)."""
    sizes = (256, 512, 1024, 2048, 4096, 8192) if mode == "full" else (256, 1024, 4096)
    batches = (64, 256, 1024, 8192) if mode == "full" else (256, 1024)
    return cublas_rows(sizes, machine) + torch_rows(batches, machine)


