"""``mlpaccel info``: every backend, available or why not, with its versions and device."""

from __future__ import annotations

import json


def configure(parser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--kernels", action="store_true",
                        help="also print the static resource table of every CUDA kernel "
                             "(registers, spills, shared memory, occupancy; needs nvcc)")


def collect() -> dict:
    """{backend name: {"available": bool, "reason" or info fields}} for every registered one."""
    from ..backends import backend_names, get_backend, unavailable_reason

    rows = {}
    for name in backend_names():
        reason = unavailable_reason(name)
        if reason is not None:
            rows[name] = {"available": False, "reason": reason}
            continue
        try:
            rows[name] = {"available": True, **get_backend(name).info()}
        except Exception as exc:  # report, never crash the overview
            rows[name] = {"available": False, "reason": f"{type(exc).__name__}: {exc}"}
    return rows


def run(args) -> int:
    from .. import __version__

    rows = collect()
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    else:
        print(f"mlpaccel {__version__}")
        for name, row in rows.items():
            if row["available"]:
                details = ", ".join(f"{k}={v}" for k, v in row.items()
                                    if k not in ("available", "backend"))
                print(f"  {name:9s} yes  {details}")
            else:
                print(f"  {name:9s} no   {row['reason']}")
    if args.kernels:
        try:
            from ..kernel_report import print_kernel_table
        except ImportError:
            print("kernel table: not available in this version")
            return 1
        return int(print_kernel_table() or 0)
    return 0
