"""``mlpaccel bench``: measure the ladder and write results.json, report.md and PNG charts."""

from __future__ import annotations

from pathlib import Path


def configure(parser) -> None:
    parser.add_argument("--backends", nargs="+", metavar="NAME",
                        help="backends to measure (default: every registered one; absent ones "
                             "appear as cells saying why)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", dest="mode", action="store_const", const="quick",
                      help="the short suite (default)")
    size.add_argument("--full", dest="mode", action="store_const", const="full",
                      help="the whole ladder: n up to 8192, 1e8 elements, batch 8192")
    parser.set_defaults(mode="quick")
    parser.add_argument("--out", default="mlpaccel-bench", help="output folder")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds of timing per case (default: 0.25 quick, 1.0 full)")
    parser.add_argument("--cap", type=float, default=60.0,
                        help="skip a case whose estimated single call exceeds this (s)")
    parser.add_argument("--no-peers", action="store_true",
                        help="do not measure the cuBLAS / PyTorch peers on a GPU machine")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args) -> int:
    from .. import bench, report

    doc = bench.run_suite(args.backends, mode=args.mode, budget_s=args.budget, cap_s=args.cap,
                          progress=not args.no_progress, peers=not args.no_peers)
    out = Path(args.out)
    path = report.publish(doc, out)
    print(report.ladder_text(doc))
    print(f"\nwrote {out / 'results.json'} and {path}")
    return 0
