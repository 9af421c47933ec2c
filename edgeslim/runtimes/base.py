"""The Runtime seam: where a model is deployed, timed and sized.

A Runtime turns a PyTorch model into its deployable artifact, loads an artifact into a Runner
(one batch in, the first output out), times a Runner and sizes an artifact. Every latency, size
and deployed-accuracy figure of edgeslim comes through one (see ``edgeslim.runtimes.get``).
"""
from __future__ import annotations

import os
import time as _time
from typing import TYPE_CHECKING, Any, Callable, Protocol, runtime_checkable

if TYPE_CHECKING:  # the seam itself imports no framework: a memory probe loads artifacts without torch
    import numpy as np
    import torch
    from torch import nn


@runtime_checkable
class Runner(Protocol):
    """A loaded artifact."""

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """One batch in (float32 NCHW), its first output out."""
        ...

    def outputs(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        """One batch in, every output out in the graph's order, each in its own dtype (a detector at batch
        1: boxes, scores, labels). The batch must be one the artifact runs as a whole."""
        ...


@runtime_checkable
class Runtime(Protocol):
    """Export, load, time and size in one deployment runtime."""

    name: str  # the registry name, e.g. "onnxruntime"
    suffix: str  # the artifact's file suffix, e.g. ".onnx" ("" when the artifact is no file)
    weight_bits: tuple[int, ...]  # the integer weight widths its quantized export deploys (the search's formats)

    def version(self) -> str:
        """What the figures were measured in, e.g. "onnxruntime 1.20.1"."""
        ...

    def export(self, model: nn.Module, path: str | os.PathLike, example: torch.Tensor, *,
               loader: Any = None) -> dict:
        """Write the deployable artifact of ``model`` at ``path`` (a quantization simulation through the
        runtime's own integer path); returns {"path", "size_bytes", ...}."""
        ...

    def load(self, artifact: Any, *, threads: int = 2) -> Runner:
        """A Runner of ``artifact`` using ``threads`` threads."""
        ...

    def time(self, runner: Runner, x: np.ndarray, *, warmup: int, runs: int) -> list[float]:
        """Milliseconds of each of ``runs`` timed runs on ``x``, after ``warmup`` untimed ones."""
        ...

    def size(self, artifact: Any) -> int:
        """Bytes on disk of the real artifact (external data included)."""
        ...

    def kernels(self, artifact: Any, *, threads: int = 1) -> dict:
        """What the artifact runs as in this runtime: {"runtime", "integer": {op: count}, "float": {op:
        count}} over its compute operators, as the runtime compiled it (plus what else it tells, such
        as a delegate); empty counts where it runs no file."""
        ...


def timed_runs(fn: Callable[[], Any], *, warmup: int, runs: int) -> list[float]:
    """Call ``fn`` ``warmup`` times, then ``runs`` times timed; per-run milliseconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = _time.perf_counter()
        fn()
        times.append((_time.perf_counter() - t0) * 1e3)
    return times


def file_size(path: str | os.PathLike) -> int:
    """Bytes on disk of a file, or of every file under a directory."""
    from pathlib import Path

    p = Path(path)
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return p.stat().st_size


def deploy_config(model: nn.Module):
    """The config that made ``model`` a deployable format (a quantization), whose registered exporter
    writes each runtime's file; None for a float model."""
    cfg = getattr(model, "edgeslim_config", None)
    return cfg if getattr(cfg, "final", False) else None

