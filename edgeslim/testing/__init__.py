"""Toy models and helpers for tests (kept in the package so every test folder can reuse them)."""
from __future__ import annotations


def fashion_mnist_available() -> bool:
    """True when Fashion-MNIST can be loaded without a download."""
    from ..core.errors import DataError
    from ..data import fashion_mnist

    try:
        fashion_mnist.find(download=False)
    except DataError:
        return False
    return True


def cli_command() -> list[str]:
    """The argv prefix that runs the real ``edgeslim`` console script: the installed script beside
    this Python, else the module (a checkout on PYTHONPATH without ``pip install``)."""
    import sys
    from pathlib import Path

    exe = Path(sys.executable).with_name("edgeslim")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "edgeslim.cli"]


def run_cli(*args, cwd=None, env: dict | None = None):
    """Run the ``edgeslim`` command in this process (``edgeslim.cli.main``, what the console script
    calls) and return a CompletedProcess with its exit code and captured stdout/stderr. A fresh
    interpreter per call spends seconds importing torch; tests use this and ``cli_command`` once."""
    import contextlib
    import io
    import os
    import subprocess

    import numpy as np
    import torch

    from ..cli import main

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

