"""One call that gathers every figure of a model or an .onnx file (what `edgeslim profile` prints)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import onnx
from torch import nn

from ..core.report import figures
from .counts import count_macs, count_params, memory_access_cost
from .latency import artifact_size, bench, onnx_accuracy


def onnx_params(path: str | os.PathLike) -> int:
    m = onnx.load(str(path))
    total = 0
    for t in m.graph.initializer:
        n = 1
        for d in t.dims:
            n *= d
        total += n
    return total


def profile(target: nn.Module | str | os.PathLike, input_shape, *, runtime: str = "onnxruntime", threads: int = 2,
            warmup: int = 10, runs: int = 50, loader: Any = None, max_batches: int | None = None,
            onnx_path: str | os.PathLike | None = None) -> dict[str, Any]:
    """FIGURES (+ "layers" and "memory_access") for a PyTorch model or an .onnx file.

    For a model and runtime "onnxruntime", the model is exported (to ``onnx_path`` or a temp file)
    and the artifact is what gets timed and sized; accuracy comes from that artifact.
    """
    shape = tuple(input_shape) if len(input_shape) == 4 else (1, *input_shape)
    is_onnx = not isinstance(target, nn.Module)
    extra: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if is_onnx:
            artifact = Path(target)
            params, macs = onnx_params(artifact), None
        else:
            params = count_params(target)
            macs, layers = count_macs(target, shape)
            extra["layers"] = layers
            extra["memory_access"] = memory_access_cost(target, shape)
            from ..export import onnx as export_onnx

            artifact = Path(onnx_path or Path(tmp) / "model.onnx")
            extra["export"] = export_onnx(target, artifact, input_shape=shape, loader=loader)
        timed = artifact if (is_onnx or runtime == "onnxruntime") else target
        lat = bench([timed], shape, threads=threads, warmup=warmup, runs=runs)[0]
        acc = None
        if loader is not None:
            if timed is target:
                from ..train import evaluate

                acc = evaluate(target, loader, max_batches=max_batches)["top1"]
            else:
                acc = onnx_accuracy(artifact, loader, max_batches=max_batches, threads=threads)["top1"]
        size = artifact_size(artifact)
    out = figures(params=params, macs=macs, size_bytes=size, latency_ms=lat["median_ms"],
                  latency_p90_ms=lat["p90_ms"], accuracy=acc, runtime=lat["runtime"], threads=threads,
                  batch=shape[0], input_shape=list(shape),
                  artifact=str(artifact) if (is_onnx or onnx_path) else "model.onnx (temporary export)")
    out.update(extra)
    return out
