"""The ``mlpaccel`` command line: info, train, trace, bench, demo, report.

Each subcommand lives in its own module exposing ``configure(parser)`` and ``run(args) -> int``;
this file only wires them to argparse, importing a module when its command runs.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

COMMANDS = {  # name -> (module, one-line help)
    "info": ("mlpaccel.commands.info", "show each backend: available or why not, versions, device"),
    "train": ("mlpaccel.commands.train", "train an MLP on a dataset and report accuracy and time"),
    "trace": ("mlpaccel.commands.trace", "print one backprop step with every number and formula"),
    "bench": ("mlpaccel.commands.bench", "measure the python -> numpy -> numba -> cuda ladder"),
    "demo": ("mlpaccel.commands.demo", "quick bench + short training on every backend + report"),
    "report": ("mlpaccel.commands.report", "merge results.json files into one report"),
}


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="mlpaccel", description="One MLP, four devices: why AI needs dedicated hardware.")
    parser.add_argument("--version", action="version", version=f"mlpaccel {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        try:
            importlib.import_module(module).configure(p)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            p.set_defaults(_missing=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.command:
        parser.print_help()
        return 0
    if getattr(args, "_missing", False):
        print(f"mlpaccel {args.command}: not available in this version", file=sys.stderr)
        return 2
    return int(importlib.import_module(args._module).run(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
