"""Latency measured in the runtime that deploys the model (ONNX Runtime) or in torch eager.

Rules: warm-up runs first, then N timed runs; report median and p90 with batch, threads and
runtime. ``bench`` times several targets in one process, one at a time (an ONNX Runtime session's
idle threads spin and would slow a session running beside it), over rounds in shuffled order so
that the noise of a shared machine hits all of them alike: compare only figures from one
``bench`` call.
"""
from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from .. import metrics, runtimes
from ..core.errors import UsageError
from ..core.shapes import batched
from ..runtimes.torch_eager import torch_threads

__all__ = ["artifact_size", "bench", "check_timing", "latency", "onnx_accuracy", "torch_threads"]


def _runtime_of(target: Any) -> tuple[runtimes.Runtime, Any]:
    """(the runtime that runs ``target``, its artifact): an nn.Module runs in torch eager, a file in the
    runtime its suffix names (.onnx: ONNX Runtime)."""
    if isinstance(target, nn.Module):
        return runtimes.get("torch"), target
    path = Path(target)
    rt = runtimes.for_artifact(path)
    if rt is None or not path.is_file():
        raise UsageError(f"cannot time {target!r}: give an nn.Module or an existing .onnx file")
    return rt, path


def _summary(times_ms: list[float], runtime_name: str, threads: int, shape) -> dict[str, Any]:
    arr = np.asarray(times_ms)
    return {"median_ms": float(np.median(arr)), "p90_ms": float(np.percentile(arr, 90)),
            "mean_ms": float(arr.mean()), "runs": len(arr), "threads": threads,
            "batch": int(shape[0]), "input_shape": list(shape), "runtime": runtime_name}


def check_timing(*, threads: int = 1, warmup: int = 0, runs: int = 1, rounds: int = 1) -> None:
    """Timing settings that would time nothing (runs 0), or make no sense (threads 0, warm-up -5),
    are one UsageError naming the value and its range."""
    for name, value, low in (("threads", threads, 1), ("warmup", warmup, 0), ("runs", runs, 1),
                             ("rounds", rounds, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise UsageError(f"{name} must be an integer >= {low}, got {value!r}")


def bench(targets: list[Any], input_shape, *, threads: int = 2, warmup: int = 10, runs: int = 50,
          seed: int = 0, rounds: int = 1, agent: Any = None) -> list[dict[str, Any]]:
    """Median/p90 latency of each target (nn.Module -> torch eager, .onnx path -> ONNX Runtime),
    measured in one process on the same input, one target at a time in shuffled order (a block of
    warm-up and timed runs each, its session alone alive).

    ``rounds`` > 1 repeats that with fresh ONNX Runtime sessions and a new order each time and
    reports the median over rounds of the per-round figures (with ``per_round_ms``): rounds
    alternate the targets, so the noise of a shared machine hits them alike, and a session's speed
    drifts more between sessions than between runs.

    ``agent`` (an ``edgeslim.agent.Agent``): each file is timed on that device agent instead of here,
    in the same order and rounds; the figures' ``runtime`` says so and ``timed_on`` names the agent
    and its machine. The agent times files: an nn.Module target is a UsageError."""
    check_timing(threads=threads, warmup=warmup, runs=runs, rounds=rounds)
    if agent is not None:
        for t in targets:
            _remote_artifact(t)  # every target checked before the first is sent
    if rounds > 1:
        per = [bench(targets, input_shape, threads=threads, warmup=warmup, runs=runs, seed=seed + k, agent=agent)
               for k in range(rounds)]
        out = []
        for i in range(len(targets)):
            rs = [r[i] for r in per]
            s = dict(rs[0])
            for k in ("median_ms", "p90_ms", "mean_ms"):
                s[k] = float(np.median([r[k] for r in rs]))
            s.update(runs=sum(r["runs"] for r in rs), rounds=rounds, per_round_ms=[r["median_ms"] for r in rs])
            out.append(s)
        return out
    shape = batched(input_shape)
    x = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
    # One live session at a time, in shuffled order: ONNX Runtime's idle intra-op threads spin-wait
    # after each run, so sessions alternating run by run steal each other's cores (on 2 cores the
    # faster, compressed file suffered most; see benchmarks/RESULTS.md)
    order = list(range(len(targets)))
    random.Random(seed).shuffle(order)
    results: list[dict[str, Any] | None] = [None] * len(targets)
    for i in order:
        if agent is not None:
            results[i] = _remote(agent, targets[i], shape, threads=threads, warmup=warmup, runs=runs, seed=seed)
            continue
        rt, artifact = _runtime_of(targets[i])
        runner = rt.load(artifact, threads=threads)
        times = rt.time(runner, x, warmup=warmup, runs=runs)
        del runner  # the session and its threads go before the next target's start
        results[i] = _summary(times, rt.version(), threads, shape)
    return results


def _remote_artifact(target: Any) -> Path:
    if isinstance(target, nn.Module):
        raise UsageError("the device agent times artifact files, not a PyTorch module",
                         hint="export the model first (a runtime that writes files, e.g. --runtime onnxruntime)")
    path = Path(target)
    if not path.is_file():
        raise UsageError(f"cannot time {target!r} on the agent: no such file")
    return path


def _remote(agent: Any, target: Any, shape, *, threads: int, warmup: int, runs: int, seed: int) -> dict[str, Any]:
    """One target timed on the device agent, summarized like a local timing."""
    res = agent.time(_remote_artifact(target), shape, threads=threads, warmup=warmup, runs=runs, seed=seed)
    out = _summary(res["times_ms"], f"{res['runtime']} on agent {agent.url}", threads, shape)
    out["timed_on"] = {"agent": agent.url, "machine": res.get("host")}
    return out


def latency(target: Any, input_shape, *, threads: int = 2, warmup: int = 10, runs: int = 50,
            agent: Any = None) -> dict[str, Any]:
    return bench([target], input_shape, threads=threads, warmup=warmup, runs=runs, agent=agent)[0]


def artifact_size(path: str | os.PathLike) -> int:
    """Bytes on disk of an artifact; a directory counts every file in it, an .onnx file the
    external-data files it names."""
    p = Path(path)
    rt = runtimes.for_artifact(p) if p.is_file() else None
    return rt.size(p) if rt is not None else runtimes.file_size(p)


def onnx_accuracy(onnx_path: str | os.PathLike, loader: Any, *, max_batches: int | None = None,
                  threads: int = 2, per_image: bool = False) -> dict[str, Any]:
    """Top-1 of the deployed artifact, run in ONNX Runtime (None when the data has no labels).
    ``per_image``: also return ``correct``, one boolean per image in the loader's order."""
    runner = runtimes.get("onnxruntime").load(onnx_path, threads=threads)
    score = metrics.get("top1").evaluate(runner, loader, max_batches=max_batches)
    res: dict[str, Any] = {"top1": score.value, "n": score.count}
    if per_image:
        res["correct"] = score.per_sample
    return res
