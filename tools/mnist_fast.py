"""MNIST to high accuracy as fast as a backend can: data uploaded once (``model.device_data``),
a warm-up that compiles and records the epoch (then is undone), and the timed training.

    PYTHONPATH=. python3 tools/mnist_fast.py --data-dir ../shared/data/mnist --backend cuda
    PYTHONPATH=. python3 tools/mnist_fast.py --backend numba --epochs 8 --json out.json

Prints one JSON object: backend, recipe, training wall time (excluding the warm-up, which is
reported separately as compile/record time), per-epoch times and the test accuracy.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import mlpaccel  # noqa: E402
from mlpaccel import optim  # noqa: E402
from mlpaccel.datasets import mnist  # noqa: E402


def run(data, backend: str, hidden, optimizer: str, lr: float, batch: int, epochs: int,
        seed: int = 0) -> dict:
    """Train once (after an undone warm-up) and return the result row."""
    (xtr, ytr), (xte, yte) = data
    layers = [784, *hidden, 10]
    model = mlpaccel.MLP(layers, activation="relu", loss="cross_entropy", init="he",
                         backend=backend, random_state=seed)
    B = model.backend
    opt = optim.get(optimizer, learning_rate=lr)
    t0 = time.perf_counter()
    Xd, Td = model.device_data(xtr, ytr)
    B.synchronize()
    upload = time.perf_counter() - t0
    start = model.get_weights()
    # warm-up: epoch 1 runs eagerly (JIT/NVRTC compile), epoch 2 records the epoch where the
    # backend records; then the weights and the optimizer state start over, buffers kept
    t0 = time.perf_counter()
    model.fit(Xd, Td, epochs=2, batch_size=batch, optimizer=opt, verbose=0, metrics=())
    B.synchronize()
    warm = time.perf_counter() - t0
    model.set_weights(start)
    opt.restart()
    model.history = {}
    epoch_s = []
    t_all = time.perf_counter()
    for _ in range(epochs):
        t0 = time.perf_counter()
        # fit reads the epoch's loss back to the host: each epoch ends synchronized
        model.fit(Xd, Td, epochs=1, batch_size=batch, optimizer=opt, verbose=0, metrics=())
        epoch_s.append(time.perf_counter() - t0)
    B.synchronize()
    train_s = time.perf_counter() - t_all
    acc = float(model.score(xte, yte))
    return {"backend": B.name, "device": B.info().get("device"), "layers": layers,
            "optimizer": optimizer, "learning_rate": lr, "batch": batch, "epochs": epochs,
            "train_wall_s": round(train_s, 4), "epoch_s": [round(t, 4) for t in epoch_s],
            "warmup_compile_record_s": round(warm, 3), "upload_s": round(upload, 4),
            "test_accuracy": acc, "final_loss": model.history["loss"][-1],
            "graph": B.info().get("graph")}


def _recipe(text: str):
    """HIDDEN/OPTIMIZER/LR/BATCH/EPOCHS, e.g. 256,256/adam/1e-3/128/8."""
    h, o, lr, b, e = text.split("/")
    return [int(x) for x in h.split(",")], o, float(lr), int(b), int(e)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None, help="folder with the MNIST IDX files")
    ap.add_argument("--backend", default="cuda")
    ap.add_argument("--recipe", action="append", type=_recipe, default=None,
                    help="HIDDEN/OPTIMIZER/LR/BATCH/EPOCHS (repeatable; default "
                         "256,256/adam/1e-3/128/8)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args(argv)
    data = mnist(args.data_dir, progress=False)
    rows = []
    for recipe in args.recipe or [_recipe("256,256/adam/1e-3/128/8")]:
        row = run(data, args.backend, *recipe, seed=args.seed)
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "epoch_s"}), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
