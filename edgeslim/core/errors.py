"""One small exception hierarchy.

The CLI turns these into one line plus a hint: UsageError exits 2, every other
EdgeslimError exits 1. Anything else is a bug and shows a traceback with --debug.
"""
from __future__ import annotations


class EdgeslimError(Exception):
    """Base class. ``hint`` tells the user what to do about it."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(EdgeslimError, ValueError):
    """Bad arguments or configuration (exit code 2)."""

    exit_code = 2


class DataError(EdgeslimError):
    """A dataset is missing, corrupt or does not fit the model."""


class ModelError(EdgeslimError):
    """A model spec cannot be resolved, built or loaded."""


class CheckpointError(ModelError):
    """A checkpoint is missing, unsafe (pickled code) or corrupt."""


class ExportError(EdgeslimError):
    """ONNX export or its verification in ONNX Runtime failed."""
