"""PyTorch eager mode as a Runtime: the model itself is the artifact (nothing to export or size)."""
from __future__ import annotations

import contextlib
import os
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.errors import EdgeslimError, UsageError
from .base import Runner, timed_runs


@contextlib.contextmanager
def torch_threads(n: int):
    """Inside the block torch uses ``n`` intra-op threads."""
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


class TorchRunner:
    """An nn.Module (in eval mode) as a Runner, run under inference mode with its own thread count."""

    def __init__(self, model: nn.Module, threads: int):
        self.model, self.threads = model, threads

    def __call__(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode(), torch_threads(self.threads):
            out = self.model(torch.from_numpy(x))
        return (out[0] if isinstance(out, (tuple, list)) else out).numpy()

    def outputs(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        with torch.inference_mode(), torch_threads(self.threads):
            out = self.model(torch.from_numpy(x))
        parts = out.values() if isinstance(out, dict) else out if isinstance(out, (tuple, list)) else (out,)
        return tuple(o.numpy() for o in parts)


class TorchEager:
    """torch eager on the CPU: what the model costs before any export."""

    name = "torch"
    suffix = ""  # no file: the artifact is the nn.Module

    def version(self) -> str:
        return f"torch {torch.__version__} eager"

    def export(self, model: nn.Module, path: str | os.PathLike, example: torch.Tensor, *,
               loader: Any = None) -> dict:
        raise EdgeslimError("the torch runtime runs the model itself and writes no artifact",
                            hint="export with the onnxruntime runtime (edgeslim.runtimes.get())")

    def load(self, artifact: nn.Module, *, threads: int = 2) -> TorchRunner:
        """The model put in eval mode (as given, not copied)."""
        if not isinstance(artifact, nn.Module):
            raise UsageError(f"the torch runtime runs an nn.Module, got {type(artifact).__name__}")
        return TorchRunner(artifact.eval(), threads)

    def time(self, runner: Runner, x: np.ndarray, *, warmup: int, runs: int) -> list[float]:
        if isinstance(runner, TorchRunner):  # the forward pass alone, on a tensor made once
            model, xt, threads = runner.model, torch.from_numpy(x), runner.threads

            def run_torch():
                with torch.inference_mode(), torch_threads(threads):
                    model(xt)
            return timed_runs(run_torch, warmup=warmup, runs=runs)
        return timed_runs(lambda: runner(x), warmup=warmup, runs=runs)

    def size(self, artifact: Any) -> int:
        raise EdgeslimError("the torch runtime has no artifact on disk to size",
                            hint="export with the onnxruntime runtime and size that file")

    def kernels(self, artifact: Any, *, threads: int = 1) -> dict:
        return {"runtime": self.version(), "integer": {}, "float": {}}  # eager PyTorch compiles nothing
