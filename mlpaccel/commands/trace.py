"""``mlpaccel trace``: one backprop step printed with every number and its formula.

Default: seed 002's 2-2-2 network (x = [0.1, 0.2], target [0.4, 0.6], lr 0.5). ``--example
seed001`` gives seed 001's 2-2-1 net with biases; ``--layers 3,4,2`` a random net (with
``--x`` and ``--target``).
"""

from __future__ import annotations

import sys


def _floats(text: str) -> list[float]:
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError as exc:
        raise SystemExit(f"mlpaccel trace: expected comma-separated numbers, got {text!r}") \
            from exc


def configure(parser) -> None:
    """Add the trace options to ``parser``."""
    parser.add_argument("--example", choices=["seed002", "seed001"], default="seed002",
                        help="worked example from the course notes (default: seed002)")
    parser.add_argument("--layers", help="instead of an example: layer sizes, e.g. 2,3,2")
    parser.add_argument("--activation", default="sigmoid", help="hidden activation (--layers)")
    parser.add_argument("--output-activation", default="sigmoid", help="output activation")
    parser.add_argument("--random-state", type=int, default=0, help="seed for --layers weights")
    parser.add_argument("--x", help="input sample, comma-separated (default: the example's)")
    parser.add_argument("--target", help="target, comma-separated (default: the example's)")
    parser.add_argument("--lr", type=float, help="learning rate (default: the example's)")
    parser.add_argument("--backend", default="numpy", help="backend computing the numbers")


def run(args) -> int:
    """Print the walk-through; 0 on success, 2 on bad arguments."""
    from ..model import MLP
    from ..trace import EXAMPLES, example_model, trace_step

    ex = EXAMPLES[args.example]
    try:
        if args.layers:
            sizes = [int(v) for v in args.layers.split(",")]
            if not (args.x and args.target):
                print("mlpaccel trace: --layers needs --x and --target", file=sys.stderr)
                return 2
            model = MLP(sizes, activation=args.activation,
                        output_activation=args.output_activation, loss="mse",
                        backend=args.backend, dtype="float64", init="xavier",
                        random_state=args.random_state)
        else:
            model = example_model(args.example, backend=args.backend)
        x = _floats(args.x) if args.x else ex["x"]
        t = _floats(args.target) if args.target else ex["t"]
        lr = args.lr if args.lr is not None else ex["learning_rate"]
        trace_step(model, x, t, learning_rate=lr)
    except (ValueError, TypeError) as exc:
        print(f"mlpaccel trace: {exc}", file=sys.stderr)
        return 2
    return 0
