"""The `edgeslim` command: one sub-command per verb, same names as the API.

Each sub-command lives next to the code it drives (edgeslim/<pkg>/cli.py) and defines
``register(subparsers)``; this file only assembles them and turns errors into one clear line.
"""
from __future__ import annotations

import argparse
import importlib
import os
import sys
import traceback

from .core.errors import EdgeslimError

_COMMAND_MODULES = [
    "edgeslim.models.cli",
    "edgeslim.train.cli",
    "edgeslim.measure.cli",
    "edgeslim.export.cli",
    "edgeslim.codec.cli",
    "edgeslim.quant.cli",
    "edgeslim.prune.cli",
    "edgeslim.distill.cli",
    "edgeslim.lowrank.cli",
    "edgeslim.reparam.cli",
    "edgeslim.search.cli",
]


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # usage errors: one line + hint, exit 2
        self.exit(2, f"error: {message}\n  hint: see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(prog="edgeslim", description="Compress PyTorch models for edge deployment under an accuracy SLA.")
    parser.add_argument("--version", action="version", version=f"edgeslim {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    import warnings

    warnings.filterwarnings("ignore")
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv  # accepted anywhere on the line
    parser = build_parser()
    args = parser.parse_args([a for a in argv if a != "--debug"])
    args.debug = debug
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except EdgeslimError as e:
        if args.debug:
            traceback.print_exc()
        print(f"error: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"  hint: {e.hint}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("interrupted; artifacts already written are complete (writes are atomic)", file=sys.stderr)
        return 130
    except Exception as e:  # a bug: keep the one-line contract, traceback on request
        if args.debug:
            traceback.print_exc()
        print(f"error: unexpected {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", file=sys.stderr)
        print("  hint: rerun with --debug for the traceback and report it", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
