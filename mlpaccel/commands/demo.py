"""``mlpaccel demo`` (what ``make demo`` runs): a quick bench, a short training run of the same
MLP on every available backend, the ladder table on the terminal and the report on disk.

On a machine without a GPU, results recorded on a GPU machine (``make gpu-check`` writes
``bench/results/**/results.json``; an installed package ships them in ``mlpaccel/results/``)
are shown beside this machine's rows, each marked with its machine (GPU name and date).
"""

from __future__ import annotations

import time
from pathlib import Path

#: per backend: how much the demo trains (slow rungs get a token run so the demo stays short)
TRAIN_SIZES = {
    "python": {"max_samples": 64, "max_test": 32, "batch": 16, "epochs": 1},
    "cuda-emu": {"max_samples": 512, "max_test": 256, "batch": 64, "epochs": 1},
}
DEFAULT_TRAIN = {"max_samples": 2048, "max_test": 1024, "batch": 64, "epochs": 2}


def configure(parser) -> None:
    parser.add_argument("--out", default="mlpaccel-report", help="report folder")
    parser.add_argument("--backends", nargs="+", metavar="NAME",
                        help="backends to include (default: every registered one)")
    parser.add_argument("--no-recorded", action="store_true",
                        help="do not show recorded GPU results beside this machine's")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def recorded_results() -> list[Path]:
    """results.json files recorded on GPU machines: the checkout's bench/results/ tree and
    the package's mlpaccel/results/ folder."""
    here = Path(__file__).resolve().parent.parent
    found = sorted((here.parent / "bench" / "results").glob("**/results.json"))
    found += sorted((here / "results").glob("*.json"))
    return found


def _gpu_names(doc: dict) -> tuple:
    return tuple(sorted({info.get("gpu_device") or info.get("gpu_name") or ""
                         for info in doc["machines"].values()} - {""}))


def _recorded_gpu_docs(paths=None) -> list[dict]:
    """The newest recorded run per GPU model (several runs on one GPU would only repeat its
    rows): results.json files from ``paths`` (default ``recorded_results()``)."""
    from .. import bench

    newest: dict[tuple, dict] = {}
    for path in recorded_results() if paths is None else paths:
        try:
            doc = bench.load_results(path)
        except (OSError, ValueError):
            continue
        gpus = _gpu_names(doc)
        if gpus and str(doc.get("created", "")) >= str(newest.get(gpus, {}).get("created", "")):
            newest[gpus] = doc
    return list(newest.values())


def run(args) -> int:
    from .. import bench, report
    from ..backends import backend_names, unavailable_reason

    t0 = time.perf_counter()
    backends = args.backends or backend_names()
    print("mlpaccel demo: measuring the ladder " + " -> ".join(backends))
    doc = bench.run_suite(backends, mode="demo", progress=not args.no_progress)
    data = bench.load_demo_data()
    print(f"training the same MLP ({'-'.join(map(str, data[5]))}) on {data[0]} per backend")
    for name in backends:
        sizes = TRAIN_SIZES.get(name, DEFAULT_TRAIN)
        try:
            row = bench.train_run(name, data, **sizes)
        except Exception as exc:  # report the failure in its cell, keep the demo going
            row = bench._row("m0", name, bench.Case("train_run", "demo-training",
                                                    (sizes["batch"],), 0, 0, lambda B: None),
                             "error", f"{type(exc).__name__}: {exc}")
        doc["rows"].append(row)
        if row["status"] == "ok":
            e = row["extra"]
            print(f"  {name:9s} {e['samples']:5d} samples x {e['epochs']} epochs in "
                  f"{row['median_s']:.2f} s ({e['samples_per_s']:,.0f} samples/s), "
                  f"loss {e['loss']:.3f}, test accuracy {e['accuracy']:.1%}")
        else:
            print(f"  {name:9s} {row['notes']}")
    if not args.no_recorded and unavailable_reason("cuda") is not None:
        recorded = _recorded_gpu_docs()
        if recorded:
            doc = bench.merge_results([doc] + recorded)
            doc["mode"] = "demo + recorded GPU results"
    out = Path(args.out)
    path = report.publish(doc, out)
    print()
    print(report.ladder_text(doc))
    if len(doc["machines"]) > 1:
        from ..machine import describe

        for mid, info in doc["machines"].items():
            print(f"  @{mid}: {describe(info)}, {info.get('date', '')}")
    print(f"\nreport: {path} (and PNG charts beside it); "
          f"demo took {time.perf_counter() - t0:.0f} s")
    return 0
