"""One call that gathers every figure of a model or an .onnx file (what `edgeslim profile` prints)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import onnx
import torch
from torch import nn

from .. import metrics, runtimes
from ..core.report import figures
from .counts import check_input, count_macs, count_params, memory_access_cost
from .latency import artifact_size, bench, check_timing
from ..core.shapes import batched


def onnx_params(path: str | os.PathLike) -> int:
    m = onnx.load(str(path))
    total = 0
    for t in m.graph.initializer:
        n = 1
        for d in t.dims:
            n *= d
        total += n
    return total


def example_input(shape) -> torch.Tensor:
    """The example batch a model is exported with (fixed seed: the same file every time)."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


def deploy_runtime(runtime: str = "onnxruntime") -> runtimes.Runtime:
    """The runtime that writes a model's artifact when figures are measured in ``runtime``: that one
    when it writes files, else ONNX Runtime (torch eager times the module, the .onnx file is sized)."""
    rt = runtimes.get(runtime)
    return rt if rt.suffix else runtimes.get()


def profile(target: nn.Module | str | os.PathLike, input_shape, *, runtime: str = "onnxruntime", threads: int = 2,
            warmup: int = 10, runs: int = 50, loader: Any = None, max_batches: int | None = None,
            onnx_path: str | os.PathLike | None = None, agent: Any = None, metric: Any = "top1") -> dict[str, Any]:
    """FIGURES (+ "layers", "memory_access", and "metric" with a loader) for a PyTorch model or an .onnx file.

    For a model and a runtime that writes files ("onnxruntime"), the model is exported (to ``onnx_path``
    or a temp file) and the artifact is what gets timed and sized; accuracy comes from that artifact.
    With runtime "torch" the module is timed and scored, the exported file still sized.
    ``agent`` (an ``edgeslim.agent.Agent``): the artifact is timed on that device agent (``timed_on``
    says so); everything else is measured here. ``metric`` (a name, a callable, a Metric): what
    ``accuracy`` holds, in the metric's points; ``out["metric"]`` names it with its ``extra`` figures.
    """
    shape = batched(input_shape)
    m = metrics.resolve(metric)
    check_timing(threads=threads, warmup=warmup, runs=runs)  # before the export, not after it
    if agent is not None and isinstance(target, nn.Module) and not runtimes.get(runtime).suffix:
        from ..core.errors import UsageError

        raise UsageError(f"the device agent times artifact files; runtime {runtime} runs the PyTorch module here",
                         hint="use a runtime that writes files (--runtime onnxruntime) with --agent")
    deploy = deploy_runtime(runtime)
    is_file = not isinstance(target, nn.Module)
    extra: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if is_file:
            artifact = Path(target)
            params, macs = onnx_params(artifact), None
        else:
            check_input(target, shape)
            params = count_params(target)
            macs, layers = count_macs(target, shape)
            extra["layers"] = layers
            extra["memory_access"] = memory_access_cost(target, shape)
            artifact = Path(onnx_path or Path(tmp) / f"model{deploy.suffix}")
            extra["export"] = deploy.export(target, artifact, example_input(shape), loader=loader)
        timed = artifact if (is_file or runtimes.get(runtime).suffix) else target
        lat = bench([timed], shape, threads=threads, warmup=warmup, runs=runs, agent=agent)[0]
        score = None
        if loader is not None:
            score = (torch_score(target, loader, metric=m, max_batches=max_batches) if timed is target else
                     artifact_score(artifact, loader, metric=m, threads=threads, max_batches=max_batches))
            extra["metric"] = {"name": m.name, "extra": dict(score.extra)}
        acc = None if score is None else score.value
        size = artifact_size(artifact)
    out = figures(params=params, macs=macs, size_bytes=size, latency_ms=lat["median_ms"],
                  latency_p90_ms=lat["p90_ms"], accuracy=acc, runtime=lat["runtime"], threads=threads,
                  batch=shape[0], input_shape=list(shape),
                  artifact=str(artifact) if (is_file or onnx_path) else f"{artifact.name} (temporary export)")
    out.update(extra)
    if "timed_on" in lat:
        out["timed_on"] = lat["timed_on"]
    return out


def metric_run(metric: Any, runner: Any):
    """What ``metric`` calls for a runtime's runner: the runner itself (its first output), or its
    ``outputs`` (every output) for a metric whose ``outputs`` is "all" (map)."""
    return runner.outputs if metrics.outputs_of(metric) == "all" else runner


def artifact_score(artifact: str | os.PathLike, loader: Any, *, metric: Any = "top1", runtime: str | None = None,
                   threads: int = 2, max_batches: int | None = None) -> metrics.Score:
    """``metric``'s Score (value, per-sample values, extra) of a deployed artifact, run in ``runtime``
    (default: the runtime its suffix names)."""
    m = metrics.resolve(metric)
    rt = runtimes.get(runtime) if runtime else runtimes.for_artifact(artifact) or runtimes.get()
    return m.evaluate(metric_run(m, rt.load(artifact, threads=threads)), loader, max_batches=max_batches)


def torch_score(model: nn.Module, loader: Any, *, metric: Any = "top1", max_batches: int | None = None) -> metrics.Score:
    """``metric``'s Score of a PyTorch model, on the device it is on, in eval mode (its training mode
    is restored)."""
    m = metrics.resolve(metric)
    was_training = model.training
    device = next((p.device for p in model.parameters()), "cpu")
    try:
        run = metrics.torch_runner(model, device, outputs=metrics.outputs_of(m))
        return m.evaluate(run, loader, max_batches=max_batches)
    finally:
        model.train(was_training)


def artifact_accuracy(artifact: str | os.PathLike, loader: Any, *, max_batches: int | None = None,
                      threads: int = 2, metric: Any = "top1") -> float | None:
    """``metric``'s value of a deployed artifact, run in the runtime its suffix names."""
    return artifact_score(artifact, loader, metric=metric, threads=threads, max_batches=max_batches).value


def ort_op_times(onnx_path: str | os.PathLike, input_shape, *, threads: int = 2, warmup: int = 10,
                 runs: int = 100, seed: int = 0) -> dict[str, Any]:
    """ONNX Runtime's own profiler on one file: where a run's time goes.

    Returns ``run_ms`` (median of the session's model_run events), ``kernel_ms`` (the sum over the
    executed nodes of each node's median kernel time), ``between_ms`` (run_ms - kernel_ms: the
    runtime's own work between kernels, per-node dispatch and thread hand-offs), ``nodes`` (nodes
    executed per run, after ONNX Runtime's graph optimizations) and ``ops_ms`` (kernel ms per op
    type, largest first)."""
    import collections
    import json

    import numpy as np

    from ..runtimes.onnxruntime import session

    x = np.random.default_rng(seed).standard_normal(tuple(input_shape), dtype=np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        sess = session(onnx_path, threads=threads, profile_prefix=str(Path(tmp) / "ort"))
        feed = {sess.get_inputs()[0].name: x}
        for _ in range(warmup + runs):
            sess.run(None, feed)
        events = json.loads(Path(sess.end_profiling()).read_text())
    per_node: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    model_runs = []
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_node[(e["name"], e["args"].get("op_name", "?"))].append(e["dur"] / 1e3)
        elif e.get("cat") == "Session" and e["name"] == "model_run":
            model_runs.append(e["dur"] / 1e3)
    by_op: collections.Counter = collections.Counter()
    for (_, op), v in per_node.items():  # the last `runs` calls of each node (after warm-up)
        by_op[op] += float(np.median(v[-runs:]))
    run_ms = float(np.median(model_runs[-runs:]))
    kernel_ms = float(sum(by_op.values()))
    return {"run_ms": run_ms, "kernel_ms": kernel_ms, "between_ms": run_ms - kernel_ms, "nodes": len(per_node),
            "ops_ms": dict(by_op.most_common())}
