"""Latency measured in the runtime that deploys the model (ONNX Runtime) or in torch eager.

Rules: warm-up runs first, then N timed runs; report median and p90 with batch, threads and
runtime. ``bench`` times several targets in one process, one at a time (an ONNX Runtime session's
idle threads spin and would slow a session running beside it), over rounds in shuffled order so
that the noise of a shared machine hits all of them alike: compare only figures from one
``bench`` call.
"""
from __future__ import annotations

import contextlib
import os
import random
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from ..core.errors import UsageError
from ..export import runtime
from ..core.shapes import batched


@contextlib.contextmanager
def torch_threads(n: int):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def _runner(target: Any, x: np.ndarray, threads: int) -> tuple[Callable[[], Any], str]:
    if isinstance(target, nn.Module):
        model = target.eval()
        xt = torch.from_numpy(x)

        def run_torch():
            with torch.inference_mode(), torch_threads(threads):
                model(xt)
        return run_torch, f"torch {torch.__version__} eager"
    path = Path(target)
    if path.suffix != ".onnx" or not path.is_file():
        raise UsageError(f"cannot time {target!r}: give an nn.Module or an existing .onnx file")
    sess = runtime.session(path, threads=threads)
    name = sess.get_inputs()[0].name
    import onnxruntime

    return (lambda: sess.run(None, {name: x})), f"onnxruntime {onnxruntime.__version__}"


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
          seed: int = 0, rounds: int = 1) -> list[dict[str, Any]]:
    """Median/p90 latency of each target (nn.Module -> torch eager, .onnx path -> ONNX Runtime),
    measured in one process on the same input, one target at a time in shuffled order (a block of
    warm-up and timed runs each, its session alone alive).

    ``rounds`` > 1 repeats that with fresh ONNX Runtime sessions and a new order each time and
    reports the median over rounds of the per-round figures (with ``per_round_ms``): rounds
    alternate the targets, so the noise of a shared machine hits them alike, and a session's speed
    drifts more between sessions than between runs."""
    check_timing(threads=threads, warmup=warmup, runs=runs, rounds=rounds)
    if rounds > 1:
        per = [bench(targets, input_shape, threads=threads, warmup=warmup, runs=runs, seed=seed + k)
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
        fn, name = _runner(targets[i], x, threads)
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
        del fn  # the session and its threads go before the next target's start
        results[i] = _summary(times, name, threads, shape)
    return results


def latency(target: Any, input_shape, *, threads: int = 2, warmup: int = 10, runs: int = 50) -> dict[str, Any]:
    return bench([target], input_shape, threads=threads, warmup=warmup, runs=runs)[0]


def artifact_size(path: str | os.PathLike) -> int:
    """Bytes on disk of an artifact; a directory counts every file in it (e.g. external data)."""
    p = Path(path)
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    size = p.stat().st_size
    if p.suffix == ".onnx":  # external-data files travel with the model
        import onnx

        m = onnx.load(str(p), load_external_data=False)
        ext = {e.value for t in m.graph.initializer for e in t.external_data if e.key == "location"}
        size += sum((p.parent / loc).stat().st_size for loc in ext if (p.parent / loc).is_file())
    return size


def onnx_accuracy(onnx_path: str | os.PathLike, loader: Any, *, max_batches: int | None = None,
                  threads: int = 2, per_image: bool = False) -> dict[str, Any]:
    """Top-1 of the deployed artifact, run in ONNX Runtime (None when the data has no labels).
    ``per_image``: also return ``correct``, one boolean per image in the loader's order."""
    sess = runtime.session(onnx_path, threads=threads)
    hits: list[np.ndarray] = []
    total = 0
    labelled = True
    for i, (x, y) in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        out = runtime.run(sess, x.numpy())
        total += len(y)
        if (y < 0).any():
            labelled = False
            continue
        hits.append(out.argmax(1) == y.numpy())
    correct = np.concatenate(hits) if hits else np.zeros(0, dtype=bool)
    res: dict[str, Any] = {"top1": 100.0 * int(correct.sum()) / total if labelled and total else None, "n": total}
    if per_image:
        res["correct"] = correct if labelled else None
    return res
