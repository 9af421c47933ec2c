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
