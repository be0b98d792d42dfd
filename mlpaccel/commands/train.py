"""``mlpaccel train``: train an MLP on a dataset and report accuracy and wall time.

    mlpaccel train --dataset spiral --backend numba --hidden 16,16 --epochs 200 --plot out.png
    mlpaccel train --dataset mnist --data-dir ../shared/data --hidden 256,256 --epochs 3
    mlpaccel train --dataset my.csv --target label --hidden 32
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

#: the 2-D generated sets (plotted with their decision boundary)
_GENERATED = ("xor", "circle", "gauss", "spiral", "blobs")
_GATE_NAMES = ("and", "or", "nand", "nor", "xnor", "gate-xor")  # plain "xor" is Playground's
_NAMED = (*_GENERATED, "digits", "mnist", "fashion-mnist", *_GATE_NAMES)


def _hidden(text: str) -> list[int]:
    import argparse

    try:
        sizes = [int(s) for s in text.replace(" ", "").split(",") if s]
    except ValueError:
        sizes = None
    if sizes is None or any(s < 1 for s in sizes):
        raise argparse.ArgumentTypeError(f"--hidden takes positive integers like 16,16; got "
                                         f"{text!r}")
    return sizes


def configure(parser) -> None:
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", default="spiral", metavar="NAME|CSV",
                      help=f"one of {', '.join(_NAMED)}, or a CSV file (default: spiral); "
                           "the gates train and test on their 4-row truth table")
    data.add_argument("--target", default=None,
                      help="CSV: the label column, by name or index (default: the last)")
    data.add_argument("--data-dir", default=None,
                      help="folder with the MNIST / Fashion-MNIST IDX files (default: "
                           "$MLPACCEL_DATA, then the cache folder)")
    data.add_argument("--download", action="store_true",
                      help="download missing MNIST / Fashion-MNIST files")
    data.add_argument("--n-samples", type=int, default=500,
                      help="generated sets: number of points (default 500)")
    data.add_argument("--noise", type=float, default=0.0,
                      help="generated sets: Playground noise 0..0.5 (default 0)")
    data.add_argument("--test-size", type=float, default=0.2,
                      help="held-out fraction for sets without a test split (default 0.2)")
    data.add_argument("--limit", type=int, default=None,
                      help="use only the first N training samples (quick runs)")
    model = parser.add_argument_group("model and training")
    model.add_argument("--backend", default="auto",
                       help="python, numpy, numba, cuda, cuda-emu or auto (default)")
    model.add_argument("--hidden", type=_hidden, default=[16, 16],
                       help="hidden layer sizes, comma-separated (default 16,16)")
    model.add_argument("--activation", default="relu", help="hidden activation (default relu)")
    model.add_argument("--epochs", type=int, default=100, help="passes over the data (100)")
    model.add_argument("--batch-size", type=int, default=32,
                       help="mini-batch size; 0 = full batch (default 32)")
    model.add_argument("--optimizer", default="adam",
                       help="sgd, momentum, nesterov, adagrad, adadelta, rmsprop, adam, adamw")
    model.add_argument("--lr", type=float, default=None,
                       help="learning rate (default 0.01, as a Playground-like start; "
                            "adadelta: 1.0)")
    model.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    model.add_argument("--seed", type=int, default=0, help="random seed (data, weights)")
    out = parser.add_argument_group("output")
    out.add_argument("--save", default=None, metavar="PATH", help="save the trained model")
    out.add_argument("--plot", default=None, metavar="PNG",
                     help="save a figure: decision boundary (2-D sets) and loss curve")
    out.add_argument("--json", action="store_true", help="print the results as JSON")
    out.add_argument("--quiet", action="store_true", help="no progress bar")


def load_data(args):
    """``(X_train, y_train, X_test, y_test, info)`` for ``args.dataset`` (labels 0..C-1)."""
    from .. import datasets as ds

    name = args.dataset
    key = name.lower().replace("_", "-")
    info = {"dataset": name}
    if key in ("mnist", "fashion-mnist"):
        loader = ds.mnist if key == "mnist" else ds.fashion_mnist
        (Xtr, ytr), (Xte, yte) = loader(args.data_dir, download=args.download,
                                        dtype=args.dtype, progress=not args.quiet)
    elif key in _GATE_NAMES or (key.startswith("gate-") and key[5:] in ds.GATES):
        Xtr, ytr = ds.logic_gate(key.removeprefix("gate-"))
        Xte, yte = Xtr, ytr  # a truth table has nothing to hold out
    else:
        if key in _GENERATED:
            X, y = ds.load(key, n_samples=args.n_samples, random_state=args.seed,
                           **({"noise": args.noise} if key != "blobs" else {}))
        elif key == "digits":
            X, y = ds.digits(normalize=True)
        elif os.path.isfile(name):
            target = args.target if args.target is not None else -1
            if isinstance(target, str) and target.lstrip("-").isdigit():
                target = int(target)
            X, y = ds.load_csv(name, target=target)
            if y.dtype.kind == "f":
                raise ValueError(f"{name}: the target column holds non-integer values; "
                                 f"mlpaccel train does classification (use integer or text "
                                 f"labels)")
            X, _, _ = ds.standardize(X)
            info["classes"] = np.unique(y).tolist()
            y = np.unique(y, return_inverse=True)[1]  # any integer labels -> 0..C-1
        else:
            raise ValueError(f"unknown dataset {name!r}: not one of {', '.join(_NAMED)} and "
                             f"not an existing CSV file")
        Xtr, Xte, ytr, yte = ds.train_test_split(X, y, test_size=args.test_size,
                                                 random_state=args.seed, stratify=True)
    if args.limit is not None:
        if args.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {args.limit}")
        Xtr, ytr = Xtr[: args.limit], ytr[: args.limit]
    return Xtr, ytr, Xte, yte, info


def _train(args, Xtr, ytr):
    from ..model import MLP

    n_classes = int(max(ytr.max(), 1)) + 1
    sizes = [Xtr.shape[1], *args.hidden, n_classes]
    init = "he" if args.activation.lower() in ("relu", "leaky_relu", "elu", "gelu") else "xavier"
    model = MLP(sizes, activation=args.activation, output_activation="softmax",
                loss="cross_entropy", backend=args.backend, dtype=args.dtype, init=init,
                random_state=args.seed)
    batch = None if args.batch_size == 0 else args.batch_size
    if args.lr is None:
        args.lr = 1.0 if args.optimizer.lower() == "adadelta" else 0.01
    verbose = 0 if (args.quiet or args.json or not sys.stderr.isatty()) else 1
    if args.epochs > 0:  # warm-up: numba compiles / CUDA loads kernels on the first step
        initial = model.get_weights()
        rows = min(batch or len(Xtr), len(Xtr))
        model.train_step(Xtr[:rows], ytr[:rows], optimizer=args.optimizer,
                         learning_rate=args.lr)
        model.set_weights(initial)
        model.optimizer.reset()
    start = time.perf_counter()
    model.fit(Xtr, ytr, epochs=args.epochs, batch_size=batch, optimizer=args.optimizer,
              learning_rate=args.lr, verbose=verbose)
    model.backend.synchronize()
    return model, time.perf_counter() - start


def _plot(args, model, Xtr, ytr, Xte, yte) -> None:
    from .. import plot

    two_d = Xtr.shape[1] == 2
    fig = plot.figure(10.0 if two_d else 5.5, 4.2)
    axes = fig.subplots(1, 2 if two_d else 1, squeeze=False)[0]
    if two_d:
        X = np.concatenate([Xtr, Xte]) if Xte is not Xtr else Xtr
        y = np.concatenate([ytr, yte]) if Xte is not Xtr else ytr
        plot.plot_decision_boundary(model, X, y, ax=axes[0],
                                    title=f"{args.dataset}: test accuracy "
                                          f"{model.score(Xte, yte):.3f}")
    plot.plot_history(model.history, ax=axes[-1])
    axes[-1].set_title(f"{model.backend.name}, hidden {args.hidden}, {args.optimizer}")
    plot.save(fig, args.plot)


def run(args) -> int:
    from ..errors import MLPAccelError

    try:
        Xtr, ytr, Xte, yte, info = load_data(args)
        model, seconds = _train(args, Xtr, ytr)
        result = {
            **info,
            "backend": model.backend.name,
            "layers": model.layer_sizes,
            "activation": args.activation,
            "dtype": args.dtype,
            "optimizer": args.optimizer,
            "batch_size": args.batch_size,
            "epochs": args.epochs,
            "n_train": int(len(Xtr)),
            "n_test": int(len(Xte)),
            "train_accuracy": model.score(Xtr, ytr),
            "test_accuracy": model.score(Xte, yte),
            "fit_seconds": seconds,
            "seconds_per_epoch": seconds / args.epochs if args.epochs else 0.0,
        }
        if args.save:
            model.save(args.save)
            result["saved"] = args.save
        if args.plot:
            _plot(args, model, Xtr, ytr, Xte, yte)
            result["plot"] = args.plot
    except (MLPAccelError, ValueError, TypeError, OSError, ImportError) as exc:
        print(f"mlpaccel train: error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{result['dataset']}: {result['n_train']} train / {result['n_test']} test samples, "
          f"layers {result['layers']} ({args.activation}), {args.optimizer}, "
          f"batch {args.batch_size or 'full'}, {args.dtype}, backend {result['backend']}")
    print(f"accuracy  train {result['train_accuracy']:.4f}  test {result['test_accuracy']:.4f}")
    print(f"wall time {seconds:.3f} s for {args.epochs} epochs "
          f"({1e3 * result['seconds_per_epoch']:.2f} ms/epoch, after a warm-up step)")
    for key in ("saved", "plot"):
        if key in result:
            print(f"{key}: {result[key]}")
    return 0
