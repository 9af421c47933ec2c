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
