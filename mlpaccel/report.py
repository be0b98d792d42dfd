"""The report: markdown tables and PNG charts from a results document (see ``bench.py``).

``write_report(doc, out_dir)`` writes ``report.md`` plus ``gflops_vs_n.png``, ``roofline.png``
and ``training.png`` (matplotlib's Agg backend; charts are skipped with a note when matplotlib
is missing). Every table keeps a cell for every backend: absent or skipped rows say why.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

from . import bench
from .machine import describe

#: seed 000: "a CPU doing 8e8 operations per second needs ~123 hours for 28x28 inputs without
#: backprop". Reconstructed count (the seed gives none): without backprop every weight's
#: gradient needs its own forward pass (finite differences), so one sample costs W forward
#: passes of W multiply-adds each = W^2, for W weights of a 784-100-10 net, over 60,000 samples.
NO_BACKPROP_LAYERS = (784, 100, 10)
SEED_CPU_OPS = 8e8
SEED_HOURS = 123.0
#: seed 003's inner product of 1e6 floats (ms) and seed 000's XOR prediction times (us)
SEED_DOT_MS = {"dot_loop": 515.0, "dot_listcomp": 549.0, "numpy": 1.39}
SEED_XOR_US = {"xor_perceptrons": 36.182, "xor_mlp": 17.115}


def _fmt(x: float | None, digits: int = 3) -> str:
    if x is None or not math.isfinite(x):
        return "—"
    if x == 0:
        return "0"
    if abs(x) >= 10 ** digits:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def _fmt_time(s: float | None) -> str:
    if s is None:
        return "—"
    for unit, scale in (("h", 3600), ("min", 60), ("s", 1), ("ms", 1e-3), ("µs", 1e-6)):
        if s >= scale or unit == "µs":
            if unit == "h" and s >= 86400 * 365:
                return f"{s / 86400 / 365:,.3g} years"
            if unit == "h" and s >= 3600 * 1000:
                return f"{s / 86400:,.3g} days"
            return f"{s / scale:.3g} {unit}"
    return "—"


def _cell_note(row: dict) -> str:
    """A short cell for a row that did not run: 'skipped: > 60 s', 'no CUDA device', ..."""
    note = row.get("notes") or row["status"]
    if row["status"] == "unavailable":
        low = note.lower()
        if "pip install" in low:
            return "not installed"
        if "no module named" in low or "not installed" in low:
            mod = note.split("'")[1] if "'" in note else row["backend"]
            if mod.startswith("mlpaccel.backends"):
                return "not built"
            return f"not installed ({mod})"
        if "device" in low or "driver" in low or "gpu" in low:
            return "no CUDA device"
        return "unavailable"
    if row["status"] == "error":
        return "error"
    return note.split(" on ")[0] if note.startswith("skipped: ") else note


def _label(row: dict, multi: bool) -> str:
    return f"{row['backend']} @{row['machine']}" if multi else row["backend"]


def _series(doc: dict, op: str, group: str | None = None) -> dict:
    """{label: {shape tuple: row}} for one op, in first-appearance order."""
    multi = len(doc["machines"]) > 1
    out: dict = {}
    for row in doc["rows"]:
        if row["op"] == op and (group is None or row["group"] == group):
            out.setdefault(_label(row, multi), {})[tuple(row["shape"])] = row
    return out


def _peak(rows) -> float | None:
    vals = [r["gflops"] for r in rows if r.get("gflops")]
    return max(vals) if vals else None


def _ref_peak(series: dict, label: str, backend: str) -> float | None:
    """Peak of ``backend`` on the same machine as ``label`` (else any machine)."""
    machine = label.split(" @")[1] if " @" in label else None
    same = f"{backend} @{machine}" if machine else backend
    if same in series:
        return _peak(series[same].values())
    for key, rows in series.items():
        if key.split(" @")[0] == backend:
            return _peak(rows.values())
    return None


def ladder_table(doc: dict) -> str:
    """GFLOP/s of square float32 matmul per backend and n, with speedups vs numpy and python."""
    series = _series(doc, "matmul", "matmul-square")
    if not series:
        return "_no square matmul rows_\n"
    sizes = sorted({s[0] for rows in series.values() for s in rows})
    head = "| backend | " + " | ".join(f"n={n}" for n in sizes) + \
        " | peak GFLOP/s | × numpy | × python |\n"
    head += "|---" * (len(sizes) + 4) + "|\n"
    lines = []
    for label, rows in series.items():
        cells = []
        for n in sizes:
            row = rows.get((n, n, n))
            if row is None:
                cells.append("")
            elif row["status"] == "ok":
                cells.append(_fmt(row["gflops"]))
            else:
                cells.append(_cell_note(row))
        peak = _peak(rows.values())
        vs = []
        for ref in ("numpy", "python"):
            ref_peak = _ref_peak(series, label, ref)
            vs.append(f"{_fmt(peak / ref_peak, 2)}×" if peak and ref_peak else "—")
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {_fmt(peak)} | "
                     + " | ".join(vs) + " |")
    return head + "\n".join(lines) + "\n" + absent_notes(doc)


def absent_notes(doc: dict) -> str:
    """One line per backend that did not run here: the full reason and how to fix it."""
    multi = len(doc["machines"]) > 1
    seen = {}
    for r in doc["rows"]:
        if r["status"] in ("unavailable", "error"):
            seen.setdefault(_label(r, multi), r["notes"])
    if not seen:
        return ""
    return "\n" + "\n".join(f"- {lab}: {why}" for lab, why in seen.items()) + "\n"


def ops_table(doc: dict, group: str) -> str:
    """One table of a group of ops: rows (op, shape), columns backends; GFLOP/s or GB/s."""
    multi = len(doc["machines"]) > 1
    rows = [r for r in doc["rows"] if r["group"] == group]
    if not rows:
        return ""
    labels = list(dict.fromkeys(_label(r, multi) for r in rows))
    keys = list(dict.fromkeys((r["op"], tuple(r["shape"])) for r in rows))
    index = {(r["op"], tuple(r["shape"]), _label(r, multi)): r for r in rows}
    memory_bound = group in ("activation", "copy")
    unit = "GB/s" if memory_bound else "GFLOP/s"
    out = "| op | shape | " + " | ".join(labels) + " |\n" + "|---" * (len(labels) + 2) + "|\n"
    out = out.replace("| op |", f"| op ({unit}, median time) |", 1)
    for op, shape in keys:
        cells = []
        for lab in labels:
            r = index.get((op, shape, lab))
            if r is None:
                cells.append("")
            elif r["status"] != "ok":
                cells.append(_cell_note(r))
            else:
                rate = r["gbps"] if memory_bound else r["gflops"]
                cells.append(f"{_fmt(rate)} ({_fmt_time(r['median_s'])})")
        out += f"| {op} | {'×'.join(map(str, shape))} | " + " | ".join(cells) + " |\n"
    return out


def training_table(doc: dict) -> str:
    """Per backend and batch: ms per step, one MNIST-shaped epoch, samples/s."""
    multi = len(doc["machines"]) > 1
    rows = [r for r in doc["rows"] if r["op"] in ("train_step", "train_epoch", "train_peer")]
    if not rows:
        return "_no training rows_\n"
    out = ("| backend | what | batch | ms / step | epoch (60k × 784, 784-256-256-10) | "
           "samples/s | GFLOP/s |\n|---|---|---|---|---|---|---|\n")
    for r in rows:
        lab = _label(r, multi)
        what = r["extra"].get("what", r["op"])
        if r["status"] != "ok":
            out += f"| {lab} | {what} | {r['shape'][0]} | {_cell_note(r)} | | | |\n"
            continue
        e = r["extra"]
        epoch = e.get("epoch_s")
        measured = "steps × step" if r["op"] == "train_step" else "measured"
        out += (f"| {lab} | {what} | {r['shape'][0]} | {r['median_s'] * 1e3:.3g} | "
                f"{_fmt_time(epoch)} ({measured}) | {_fmt(e.get('samples_per_s'))} | "
                f"{_fmt(r['gflops'])} |\n")
    return out


def demo_training_table(doc: dict) -> str:
    """The demo's short training runs: dataset, epochs, wall time, final loss and accuracy."""
    rows = [r for r in doc["rows"] if r["op"] == "train_run"]
    if not rows:
        return ""
    multi = len(doc["machines"]) > 1
    out = ("| backend | dataset | epochs | wall time | samples/s | final loss | accuracy |\n"
           "|---|---|---|---|---|---|---|\n")
    for r in rows:
        e = r["extra"]
        if r["status"] != "ok":
            out += f"| {_label(r, multi)} | {e.get('dataset', '')} | | {_cell_note(r)} | | | |\n"
            continue
        out += (f"| {_label(r, multi)} | {e.get('dataset')} | {e.get('epochs')} | "
                f"{_fmt_time(r['median_s'])} | {_fmt(e.get('samples_per_s'))} | "
                f"{_fmt(e.get('loss'), 4)} | {_fmt(e.get('accuracy'), 3)} |\n")
    return out


def _best_rate(doc: dict, label: str, groups=("matmul-mlp", "matmul-square")) -> float | None:
    multi = len(doc["machines"]) > 1
    for g in groups:
        rates = [r["gflops"] for r in doc["rows"] if r["group"] == g and r.get("gflops")
                 and _label(r, multi) == label]
        if rates:
            return max(rates)
    return None


def no_backprop_ops(layers=NO_BACKPROP_LAYERS, samples: int = bench.MNIST_SAMPLES) -> float:
    """Multiply-adds of one epoch without backprop: W forward passes (one per weight, finite
    differences) of W multiply-adds each, per sample: W^2 * samples."""
    W = sum(fi * fo for fi, fo in zip(layers[:-1], layers[1:]))
    return float(W) ** 2 * samples


def seed_claims(doc: dict) -> str:
    """The seeds' numbers recomputed from this run's measured rates."""
    multi = len(doc["machines"]) > 1
    out = ["### Seed 003: the inner product of 10⁶ floats", "",
           "| how | seed 003 | measured | note |", "|---|---|---|---|"]
    for r in doc["rows"]:
        if r["group"] != "seed-dot":
            continue
        key = r["op"] if r["op"] != "dot" else r["backend"]
        seed = SEED_DOT_MS.get(key)
        how = {"dot_loop": "Python for loop", "dot_listcomp": "list comprehension"}.get(
            r["op"], f"Backend.matmul on {_label(r, multi)}")
        if r["op"].startswith("dot_") and multi:
            how += f" @{r['machine']}"
        meas = _fmt_time(r["median_s"]) if r["status"] == "ok" else _cell_note(r)
        out.append(f"| {how} | {f'{seed} ms' if seed else '—'} | {meas} | float64 |")
    out += ["", "### Seed 000: XOR, three separately trained perceptrons vs an MLP with backprop",
            "", "| model | seed 000 (per prediction) | measured (per prediction) |",
            "|---|---|---|"]
    for r in doc["rows"]:
        if r["group"] == "seed-xor" and r["status"] == "ok":
            name = "NAND + OR → AND perceptrons" if "perc" in r["op"] else "MLP 2-8-1 (backprop)"
            out.append(f"| {name} | {SEED_XOR_US[r['op']]:.0f} µs | "
                       f"{_fmt_time(r['median_s'] / 4)} |")
    out.append("")
    out.append("Both run as the seed wrote them (one NumPy call per sample): the time per "
               "prediction is Python overhead, not arithmetic — which is the point of the ladder.")
    # MNIST epoch from counted flops
    flops = bench.epoch_flops(batch=256)
    nb_ops = no_backprop_ops()
    seed_rate_hours = nb_ops / SEED_CPU_OPS / 3600
    out += ["", "### One MNIST epoch, and seed 000's “no backprop ≈ 123 hours”", "",
            f"An epoch of the 784-256-256-10 MLP at batch 256 is {flops / 1e9:.1f} GFLOP "
            "(counted: forward 2·b·in·out per layer, backward twice that, SGD update). "
            "Seed 000's thought experiment (a CPU doing 8·10⁸ operations/s needs about 123 hours "
            "for 28×28 inputs without backprop) is reconstructed as: without backprop each "
            "weight's gradient needs its own forward pass (finite differences), so one sample "
            f"costs W² multiply-adds; for a {'-'.join(map(str, NO_BACKPROP_LAYERS))} net "
            f"(W = {int(math.sqrt(nb_ops / bench.MNIST_SAMPLES)):,}) over 60,000 samples that is "
            f"{nb_ops:.3g} multiply-adds = {seed_rate_hours:.0f} h at 8·10⁸/s (seed: 123 h). "
            "With backprop the same epoch is ~3·W·60,000 multiply-adds.", "",
            "| backend | GEMM rate used | MNIST epoch (from flops) | measured epoch (b256) | "
            "784-100-10 epoch without backprop (W² / sample) | the same with backprop |",
            "|---|---|---|---|---|---|"]
    labels = list(dict.fromkeys(_label(r, multi) for r in doc["rows"]
                                if r["group"].startswith("matmul")))
    bp_flops = 3 * 2 * math.sqrt(nb_ops / bench.MNIST_SAMPLES) * bench.MNIST_SAMPLES
    out.append(f"| seed 000's CPU | 0.8 (1 op = 1 multiply-add) | "
               f"{_fmt_time(flops / 2 / SEED_CPU_OPS)} | — | "
               f"{_fmt_time(nb_ops / SEED_CPU_OPS)} | {_fmt_time(bp_flops / 2 / SEED_CPU_OPS)} |")
    for lab in labels:
        rate = _best_rate(doc, lab)
        if not rate:
            continue
        # prefer the trainer's measured epoch (MLP.fit), else the step times the step count
        measured = sorted((r["op"] != "train_epoch", r["extra"]["epoch_s"]) for r in doc["rows"]
                          if r["op"] in ("train_epoch", "train_step") and r["status"] == "ok"
                          and _label(r, multi) == lab and r["shape"][0] == 256)
        meas = _fmt_time(measured[0][1]) if measured else "—"
        out.append(f"| {lab} | {_fmt(rate)} GFLOP/s | {_fmt_time(flops / rate / 1e9)} | {meas} | "
                   f"{_fmt_time(2 * nb_ops / rate / 1e9)} | {_fmt_time(bp_flops / rate / 1e9)} |")
    return "\n".join(out) + "\n"


def compile_table(doc: dict) -> str:
    """Per backend: the largest one-off first-call cost (JIT, NVRTC, first touch), measured
    as first call minus warm median and kept out of every timed round."""
    multi = len(doc["machines"]) > 1
    worst: dict = {}
    for r in doc["rows"]:
        c = r.get("compile_s")
        if r["status"] == "ok" and c is not None and r["op"] != "train_run":
            lab = _label(r, multi)
            if c > worst.get(lab, (-1.0, ""))[0]:
                worst[lab] = (c, f"{r['op']} {'×'.join(map(str, r['shape']))}")
    if not worst:
        return ""
    out = "| backend | largest first-call extra time | on |\n|---|---|---|\n"
    return out + "".join(f"| {lab} | {_fmt_time(c)} | {what} |\n"
                         for lab, (c, what) in worst.items())


def rung_sentences(doc: dict) -> str:
    """One plain sentence per backend, from each Backend class's ``rung`` attribute."""
    from .backends import backend_class

    seen = list(dict.fromkeys(r["backend"] for r in doc["rows"]
                              if r["group"].startswith("matmul")))
    lines = []
    for name in seen:
        text = doc.get("rungs", {}).get(name)
        if not text:
            try:
                text = backend_class(name).rung
            except Exception:  # a backend not built here: no sentence rather than a crash
                text = ""
        lines.append(f"- **{name}** — {text or '(no description)'}")
    return "\n".join(lines) + "\n"


def machines_section(doc: dict) -> str:
    """The device header: one block per machine."""
    out = []
    keys = ("cpu", "cpu_count", "blas", "blas_threads", "blas_arch", "openmp_threads",
            "gpu_name", "gpu_memory", "gpu_driver", "gpu_cuda_runtime", "numpy", "numba",
            "cupy", "cupy_cuda12x", "cupy_cuda13x", "torch", "python", "platform", "date")
    for mid, info in doc["machines"].items():
        out.append(f"**{mid}: {describe(info)}**  ")
        details = [f"{k}: {info[k]}" for k in keys if info.get(k) not in (None, "")]
        extra = [f"{k}: {v}" for k, v in info.items() if k.startswith("gpu_") and k not in keys]
        out.append(" · ".join(details + extra))
        out.append("")
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------- charts


def _plt():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def chart_gflops(doc: dict, path: Path) -> bool:
    """GFLOP/s against n (log-log), one line per backend (and machine)."""
    plt = _plt()
    series = _series(doc, "matmul", "matmul-square")
    if plt is None or not series:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, rows in series.items():
        pts = sorted((s[0], r["gflops"]) for s, r in rows.items() if r.get("gflops"))
        if pts:
            ax.plot(*zip(*pts), marker="o", label=label, **_style(plt, label))
    return _save_loglog(plt, fig, ax, path, "n (square float32 matmul n×n×n)",
                        "GFLOP/s (2n³ / median time)",
                        "The ladder: matmul throughput per backend")


def _save_loglog(plt, fig, ax, path, xlabel: str, ylabel: str, title: str) -> bool:
    """Finish a log2-x / log-y chart (labels, grid, legend) and write it to ``path``."""
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _style(plt, label: str) -> dict:
    """One colour per backend (the same on every machine), one line style per machine."""
    backend, _, machine = label.partition(" @")
    colors = plt.get_cmap("tab20").colors
    order = ["python", "numpy", "numba", "cuda", "cuda-emu", "cuBLAS (CuPy)", "PyTorch TF32",
             "torch"]
    idx = order.index(backend) if backend in order else 8 + sum(map(ord, backend)) % 12
    styles = ["-", "--", ":", "-."]
    m = int(machine[1:]) if machine[1:].isdigit() else 0
    return {"color": colors[(2 * idx) % 20], "linestyle": styles[m % len(styles)]}


def ceilings(doc: dict) -> dict:
    """{label: (peak GFLOP/s from the best GEMM, bandwidth GB/s from the largest copy)}.
    The largest copy, not the fastest: a small copy fits in the CPU caches and would report
    cache bandwidth instead of memory bandwidth."""
    multi = len(doc["machines"]) > 1
    peak, bw = defaultdict(float), {}
    for r in doc["rows"]:
        lab = _label(r, multi)
        if r["group"].startswith("matmul") and r.get("gflops"):
            peak[lab] = max(peak[lab], r["gflops"])
        if r["op"] == "copy" and r.get("gbps") and r["bytes"] >= bw.get(lab, (0, 0))[0]:
            bw[lab] = (r["bytes"], r["gbps"])
    return {lab: (peak[lab], bw[lab][1]) for lab in peak if lab in bw}


def chart_roofline(doc: dict, path: Path) -> bool:
    """Roofline per backend: min(peak, bandwidth × intensity), kernels placed as points."""
    plt = _plt()
    ceil = ceilings(doc)
    if plt is None or not ceil:
        return False
    multi = len(doc["machines"]) > 1
    fig, ax = plt.subplots(figsize=(7.5, 5))
    markers = {"matmul": "o", "linear_fwd": "s", "sigmoid_fwd": "^", "relu_bwd": "v",
               "softmax_ce": "D", "train_step": "*"}
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    ai = [2 ** (i / 4) for i in range(-12, 44)]
    for i, (lab, (peak, bw)) in enumerate(ceil.items()):
        c = colors[i % len(colors)]
        ax.plot(ai, [min(peak, bw * x) for x in ai], color=c, lw=1.5,
                label=f"{lab}: {peak:.3g} GFLOP/s, {bw:.3g} GB/s")
        for op, mk in markers.items():
            rows = [r for r in doc["rows"] if r["op"] == op and _label(r, multi) == lab
                    and r.get("gflops") and r["bytes"]]
            if not rows:
                continue
            r = max(rows, key=lambda r: r["flops"])  # the largest size of each kernel
            ax.scatter(r["flops"] / r["bytes"], r["gflops"], marker=mk, color=c, s=45,
                       edgecolors="k", linewidths=0.4, zorder=3)
    for op, mk in markers.items():
        ax.scatter([], [], marker=mk, color="grey", label=op)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (flop / byte)")
    ax.set_ylabel("GFLOP/s")
    ax.set_title("Roofline: matmul is compute-bound, activations memory-bound")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def chart_training(doc: dict, path: Path) -> bool:
    """Samples/s of one training step per backend and batch size (log scale)."""
    plt = _plt()
    multi = len(doc["machines"]) > 1
    rows = [r for r in doc["rows"] if r["op"] in ("train_step", "train_epoch", "train_peer")
            and r["status"] == "ok"]
    if plt is None or not rows:
        return False
    by = defaultdict(list)
    for r in rows:
        by[_label(r, multi) + ("" if r["op"] == "train_step" else f" {r['extra']['what']}")] \
            .append((r["shape"][0], r["extra"]["samples_per_s"]))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (lab, pts) in enumerate(by.items()):
        ax.plot(*zip(*sorted(pts)), marker="o", label=lab,
                color=plt.get_cmap("tab20").colors[i % 20])
    return _save_loglog(plt, fig, ax, path, "batch size",
                        "training samples / s (784-256-256-10, SGD)",
                        "Training throughput per backend (train_step: our Backend-level step)")


# ----------------------------------------------------------------------------- the report


def _ok(doc: dict, **match) -> list[dict]:
    return [r for r in doc["rows"] if r["status"] == "ok"
            and all(r.get(k) == v for k, v in match.items())]


def peer_ratio_table(doc: dict) -> str:
    """The targets' ratios, measured in this run: our GEMM vs cuBLAS (square sizes), our
    numba GEMM vs NumPy's BLAS, and each MLP.fit epoch vs NumPy's and PyTorch's epoch at the
    same batch and optimizer (< 1 = ours faster). Empty when no peer was measured."""
    out = []
    for machine in doc["machines"]:
        def times(backend, op="matmul", machine=machine, **kw):
            return {tuple(r["shape"]): r for r in _ok(doc, machine=machine, backend=backend,
                                                       op=op, **kw)}
        gemm = []

        def ratio_row(ours, peer, label, a, b):
            return (f"| {ours} vs {peer} | {label} | {_fmt(a['gflops'])} | {_fmt(b['gflops'])} | "
                    f"{a['gflops'] / b['gflops']:.2f} |")
        forms = {"matmul": "", "matmul_tn": " (Aᵀ·B)", "matmul_nt": " (A·Bᵀ)"}
        for ours, peer in (("cuda", "cuBLAS (CuPy)"), ("numba", "numpy")):
            a, b = times(ours, group="matmul-square"), times(peer, group="matmul-square")
            gemm += [ratio_row(ours, peer, f"{s[0]}³", a[s], b[s])
                     for s in sorted(set(a) & set(b)) if s[0] >= 512]
            for op, form in forms.items():  # the MLP's shapes, every form, by batch
                a = times(ours, op=op, group="matmul-mlp")
                b = times(peer, op=op, group="matmul-mlp")
                batch = (lambda s: s[2]) if op == "matmul_tn" else (lambda s: s[0])
                gemm += [ratio_row(ours, peer, "×".join(map(str, s)) + form, a[s], b[s])
                         for s in sorted(set(a) & set(b), key=lambda s: (batch(s), s))]
        if gemm:
            out += [f"GEMM on {machine} (float32, GFLOP/s; ratio = ours / peer, target 0.9 "
                    "for cuda vs cuBLAS, 0.7 for numba vs NumPy; MLP shapes are m×n×k):", "",
                    "| ours vs peer | n | ours | peer | ratio |", "|---|---|---|---|---|", *gemm,
                    ""]
        epochs = []
        for r in _ok(doc, machine=machine, op="train_epoch"):
            if r["backend"] in ("numpy", "python", "cuda-emu"):
                continue
            batch, opt = r["shape"][0], r["extra"].get("optimizer", "sgd")
            ours = r["extra"]["epoch_s"]
            gpu = r["backend"].startswith("cuda")  # compare GPU with GPU, CPU with CPU
            peers = [p for p in _ok(doc, machine=machine, op="train_peer")
                     if p["shape"][0] == batch and p["extra"].get("optimizer", "sgd") == opt
                     and ("(CPU)" not in p["extra"]["what"]) == gpu]
            if not gpu:
                peers += [p for p in _ok(doc, machine=machine, op="train_epoch",
                                         backend="numpy")
                          if p["shape"][0] == batch
                          and p["extra"].get("optimizer", "sgd") == opt]
            for p in peers:
                name = p["extra"]["what"] if p["op"] == "train_peer" else "numpy MLP.fit"
                epochs.append(f"| {r['backend']} | {opt} | {batch} | {_fmt_time(ours)} | {name} | "
                              f"{_fmt_time(p['extra']['epoch_s'])} | "
                              f"{ours / p['extra']['epoch_s']:.2f} |")
        if epochs:
            out += [f"One MNIST-shaped epoch on {machine} (60k × 784, 784-256-256-10, data on "
                    "the device; ratio = ours / peer, lower is better):", "",
                    "| ours | optimizer | batch | epoch | peer | peer epoch | ratio |",
                    "|---|---|---|---|---|---|---|", *epochs, ""]
    return "\n".join(out) + "\n" if out else ""


def render(doc: dict, charts: dict | None = None) -> str:
    """The whole report.md text."""
    charts = charts or {}
    parts = ["# Why AI needs dedicated hardware — measured", "",
             f"Results: {doc.get('mode', '?')} run, {doc.get('created', '')}. float32 unless "
             "noted; times are medians over rounds, each round synchronised; compile/JIT time "
             "is excluded from rounds and listed in results.json (`compile_s`).", "",
             "## Machines", "", machines_section(doc),
             "## The ladder: square matmul, GFLOP/s", "", ladder_table(doc)]
    if charts.get("gflops"):
        parts += ["![GFLOP/s vs n](gflops_vs_n.png)", ""]
    parts += ["## What each rung does differently", "", rung_sentences(doc),
              "## MLP-shaped matmuls (forward and the backprop transposes)", "",
              ops_table(doc, "matmul-mlp"), "## Memory-bound kernels", "",
              ops_table(doc, "activation"), ops_table(doc, "copy"),
              "## Fused ops", "", ops_table(doc, "fused"), "## Roofline", ""]
    ceil = ceilings(doc)
    if ceil:
        parts.append("Measured ceilings (peak = best GEMM, bandwidth = largest copy):\n")
        parts += [f"- {lab}: {p:.3g} GFLOP/s, {b:.3g} GB/s, ridge at {p / b:.2g} flop/byte"
                  for lab, (p, b) in ceil.items()]
        parts.append("")
    if charts.get("roofline"):
        parts += ["![roofline](roofline.png)", ""]
    parts += ["## Training", "", training_table(doc), demo_training_table(doc)]
    ratios = peer_ratio_table(doc)
    if ratios.strip():
        parts += ["## Against the peers (the targets' ratios, same run)", "", ratios]
    if charts.get("training"):
        parts += ["![training throughput](training.png)", ""]
    parts += ["## The seeds' claims, recomputed", "", seed_claims(doc),
              "## One-off costs (compile / JIT / first touch), excluded from the timings", "",
              compile_table(doc)]
    return "\n".join(parts)


def publish(doc: dict, out_dir: str | Path) -> Path:
    """Save ``doc`` as out_dir/results.json and write the report beside it (report.md + PNGs);
    returns report.md's path. What ``mlpaccel bench``, ``demo`` and ``report`` all end with."""
    from .bench import save_results

    save_results(doc, Path(out_dir) / "results.json")
    return write_report(doc, out_dir)


def write_report(doc: dict, out_dir: str | Path) -> Path:
    """Write report.md and the PNG charts into ``out_dir``; returns report.md's path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    charts = {"gflops": chart_gflops(doc, out / "gflops_vs_n.png"),
              "roofline": chart_roofline(doc, out / "roofline.png"),
              "training": chart_training(doc, out / "training.png")}
    path = out / "report.md"
    path.write_text(render(doc, charts))
    return path


def ladder_text(doc: dict) -> str:
    """The ladder table as plain text for the terminal (GFLOP/s)."""
    md = ladder_table(doc).splitlines()
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in md
            if line.startswith("|") and not line.startswith("|---")]
    notes = [line for line in md if line.startswith("- ")]
    widths = [max(len(r[i]) for r in rows if i < len(r)) for i in range(len(rows[0]))]
    table = "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
    return table + ("\n" + "\n".join(notes) if notes else "")
