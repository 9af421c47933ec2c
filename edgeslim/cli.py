"""The `edgeslim` command: one sub-command per verb, same names as the API.

Each sub-command lives next to the code it drives (edgeslim/<pkg>/cli.py) and defines
``register(subparsers)``; this file only assembles them and turns errors into one clear line.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import os
import re
import sys
import traceback

from .core.errors import EdgeslimError

_COMMAND_MODULES = [
    "edgeslim.models.cli",
    "edgeslim.train.cli",
    "edgeslim.measure.cli",
    "edgeslim.runtimes.cli",
    "edgeslim.codec.cli",
    "edgeslim.quantization.cli",
    "edgeslim.pruning.cli",
    "edgeslim.distillation.cli",
    "edgeslim.lowrank.cli",
    "edgeslim.reparameterization.cli",
    "edgeslim.search.cli",
    "edgeslim.nas.cli",
    "edgeslim.agent.cli",
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
    try:
        args = parser.parse_args([a for a in argv if a != "--debug"])
    except SystemExit as e:  # usage errors (2), --help and --version (0): a return code, also in process
        return e.code if isinstance(e.code, int) else 2
    args.debug = debug
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        from .cli_common import check_outputs

        check_outputs(args)  # before any work: an output never destroys an input
        from .train import record_fits

        with record_fits():  # every fit the command runs; its report records the BatchNorm re-estimates
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
    except Exception as e:  # a bug, unless the system refused a file operation: one line either way
        if args.debug:
            traceback.print_exc()
        problem = os_problem(e, getattr(args, "out", None))
        if problem is not None:
            print(f"error: {problem[0]}\n  hint: {problem[1]}", file=sys.stderr)
            return 1
        print(f"error: unexpected {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}", file=sys.stderr)
        print("  hint: rerun with --debug for the traceback and report it", file=sys.stderr)
        return 1


_WRITE_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EFBIG, errno.EROFS}
_OS_TEXT = {  # errno -> (what, hint); {path} is the file the system refused
    errno.ENOSPC: ("no space left on device writing {path}", "free some space, or write somewhere else"),
    getattr(errno, "EDQUOT", errno.ENOSPC): ("disk quota exceeded writing {path}",
                                             "free some space, or write somewhere else"),
    errno.EFBIG: ("file too large for the file system: {path}", "write somewhere else"),
    errno.EROFS: ("read-only file system: {path}", "write somewhere writable"),
    errno.EACCES: ("permission denied: {path}", "check its permissions, or use another location"),
    errno.EPERM: ("operation not permitted: {path}", "check its permissions, or use another location"),
    errno.ENOTDIR: ("not a directory: {path} (a part of the path is a file)", "use a path whose folders are folders"),
    errno.EISDIR: ("{path} is a directory, where a file is needed", "name a file, not a folder"),
    errno.EEXIST: ("{path} already exists (and is not a folder that can be used)", "remove it, or use another path"),
    errno.ENOENT: ("no such file or directory: {path}", "check the path"),
    errno.EIO: ("input/output error on {path}", "the disk or file system is failing; check it, or use another"),
    errno.EMFILE: ("too many open files (at {path})", "raise the limit (ulimit -n), or rerun with fewer workers"),
}


def os_problem(e: BaseException, out: str | None = None) -> tuple[str, str] | None:
    """(message, hint) when ``e`` -- or an exception it came from, or a library's error text that quotes
    one ("os error 28") -- is the system refusing a file operation; else None (a real bug)."""
    chain, seen = [], e
    while seen is not None and len(chain) < 20:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    os_err = next((c for c in chain if isinstance(c, OSError) and c.errno is not None), None)
    if os_err is not None:
        code, path = os_err.errno, os_err.filename
    else:
        m = re.search(r"\(os error (\d+)\)|\[Errno (\d+)\]", " ".join(str(c) for c in chain))
        if m is None:
            return None
        code, path = int(m[1] or m[2]), None
    what, hint = _OS_TEXT.get(code, (f"{os.strerror(code).lower()}: {{path}}", "check the path and the disk"))
    if path is None and out and code in _WRITE_ERRNOS:  # the system did not say which file: the output it was
        path = out
    elif path is None:
        return os.strerror(code).lower(), hint
    return what.format(path=_shown(os.fsdecode(path) if isinstance(path, (str, bytes)) else str(path))), hint


def _shown(path: str) -> str:
    """An atomic write's temporary file (.NAME.XXXXXXXX.tmp beside NAME) is shown as the file it becomes."""
    head, _, name = path.rpartition(os.sep)
    m = re.fullmatch(r"\.(.+)\.[A-Za-z0-9_]{8}\.tmp", name)
    return (f"{head}{os.sep}{m[1]}" if head or path.startswith(os.sep) else m[1]) if m else path



def run_captured(*args, cwd=None, env: dict | None = None):
    """Run the ``edgeslim`` command in this process (``edgeslim.cli.main``, what the console script
    calls) and return a CompletedProcess with its exit code and captured stdout/stderr. A fresh
    interpreter per call spends seconds importing torch; tests use this and ``cli_command`` once."""
    import contextlib
    import io
    import os
    import subprocess

    import numpy as np
    import torch

    out, err = io.StringIO(), io.StringIO()
    old_cwd, old_env = os.getcwd(), {k: os.environ.get(k) for k in (env or {})}
    threads, state = torch.get_num_threads(), np.random.get_state()
    try:
        if cwd is not None:
            os.chdir(cwd)
        os.environ.update({k: str(v) for k, v in (env or {}).items()})
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main([str(a) for a in args])
            except SystemExit as e:
                rc = e.code if isinstance(e.code, int) else 1
    finally:
        os.chdir(old_cwd)
        for k, v in old_env.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        torch.set_num_threads(threads)  # a command sets its own; the caller's stays
        np.random.set_state(state)
    return subprocess.CompletedProcess(list(args), rc, out.getvalue(), err.getvalue())


if __name__ == "__main__":
    sys.exit(main())
