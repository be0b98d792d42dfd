"""``mlpaccel report a.json b.json ...``: merge results from several machines into one report."""

from __future__ import annotations

from pathlib import Path


def configure(parser) -> None:
    parser.add_argument("results", nargs="+", help="results.json files (from mlpaccel bench, "
                                                  "mlpaccel demo or make gpu-check)")
    parser.add_argument("--out", default="mlpaccel-report", help="output folder")


def run(args) -> int:
    import sys

    from .. import bench, report

    docs = []
    for name in args.results:
        try:
            docs.append(bench.load_results(name))
        except (OSError, ValueError) as exc:
            print(f"mlpaccel report: {exc}", file=sys.stderr)
            return 2
    doc = bench.merge_results(docs)
    out = Path(args.out)
    path = report.publish(doc, out)
    print(report.ladder_text(doc))
    print(f"\nmerged {len(docs)} file(s) ({len(doc['machines'])} machine(s)) into {path}")
    return 0
