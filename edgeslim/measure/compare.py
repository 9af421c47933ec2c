"""Baseline-versus-result figures for a Report, measured side by side in one process.

Both models are exported by the deploying runtime (ONNX Runtime; a quantization simulation as its int8
file) unless given as .onnx files, timed side by side with ``bench``, sized on disk, and scored by
running the exported artifacts in that runtime with the run's metric (``accuracy`` holds its value, in
its points: top-1 in percent by default); the peak memory of running each is measured in a fresh
process (``memory.peak_memories``).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from ..core.report import figures
from .counts import count_macs, count_params
from .latency import artifact_size, bench
from .memory import peak_memories
from .profile import artifact_score, deploy_runtime, example_input, onnx_params
from ..core.shapes import batched


def _artifact(target: nn.Module | str | os.PathLike, path: Path, shape, loader, runtime: str) -> tuple[Path, dict]:
    if isinstance(target, nn.Module):
        info = deploy_runtime(runtime).export(target, path, example_input(shape), loader=loader)
        return path, {"params": count_params(target), "macs": count_macs(target, shape)[0], "export": info}
    return Path(target), {"params": onnx_params(target) if Path(target).suffix == ".onnx" else None, "macs": None}


def compare(baseline: nn.Module | str | os.PathLike, result: nn.Module | str | os.PathLike, input_shape, *,
            workdir: str | os.PathLike, loader: Any = None, threads: int = 2, warmup: int = 10, runs: int = 50,
            max_batches: int | None = None, runtime: str = "onnxruntime", agent: Any = None,
            metric: Any = "top1") -> tuple[dict, dict]:
    """(baseline FIGURES, result FIGURES), both in ``runtime``. Modules are exported into ``workdir``
    (the result as model + the runtime's suffix, the deployable file of an out DIR; the baseline as
    baseline + the suffix).
    ``agent`` (an edgeslim.agent.Agent): latency and peak memory are measured on that device, the
    accuracy here (the same file, the same runtime). ``metric``: what ``accuracy`` holds (a name, a
    callable or a Metric; see ``compare_scored`` for its extra figures)."""
    b, r, _ = compare_scored(baseline, result, input_shape, workdir=workdir, loader=loader, threads=threads,
                             warmup=warmup, runs=runs, max_batches=max_batches, runtime=runtime, agent=agent,
                             metric=metric)
    return b, r


def compare_scored(baseline: nn.Module | str | os.PathLike, result: nn.Module | str | os.PathLike, input_shape, *,
                   workdir: str | os.PathLike, loader: Any = None, threads: int = 2, warmup: int = 10, runs: int = 50,
                   max_batches: int | None = None, runtime: str = "onnxruntime", agent: Any = None,
                   metric: Any = "top1") -> tuple[dict, dict, dict | None]:
    """``compare``, plus the metric's Scores: (baseline FIGURES, result FIGURES, {"baseline": Score,
    "result": Score}, or None without a loader)."""
    from .. import metrics
    from ..runtimes import suffix_of

    m = metrics.resolve(metric)
    suffix = suffix_of(runtime)
    result_name, baseline_name = "model" + suffix, "baseline" + suffix
    shape = batched(input_shape)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    b_path, b_info = _artifact(baseline, workdir / baseline_name, shape, loader, runtime)
    r_path, r_info = _artifact(result, workdir / result_name, shape, loader, runtime)
    b_lat, r_lat = bench([b_path, r_path], shape, threads=threads, warmup=warmup, runs=runs, agent=agent)
    if agent is None:
        b_mem, r_mem = peak_memories([b_path, r_path], shape, threads=threads)  # each in its suffix's runtime
    else:
        b_mem, r_mem = (agent.time(p, shape, threads=threads, warmup=0, runs=1, memory=True) for p in (b_path, r_path))
    out, scores = [], []
    for path, info, lat, mem in ((b_path, b_info, b_lat, b_mem), (r_path, r_info, r_lat, r_mem)):
        score = (artifact_score(path, loader, metric=m, threads=threads, max_batches=max_batches)
                 if loader is not None else None)
        scores.append(score)
        out.append(figures(params=info["params"], macs=info["macs"], size_bytes=artifact_size(path),
                           latency_ms=lat["median_ms"], latency_p90_ms=lat["p90_ms"],
                           accuracy=None if score is None else score.value, runtime=lat["runtime"], threads=threads,
                           batch=shape[0], input_shape=list(shape), artifact=path.name,
                           peak_memory_bytes=mem["peak_memory_bytes"]))
    return out[0], out[1], None if loader is None else {"baseline": scores[0], "result": scores[1]}
