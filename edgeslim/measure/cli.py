"""`edgeslim profile` (one model, every figure, per layer) and `edgeslim bench` (several, side by side)."""
from __future__ import annotations

import tempfile
from pathlib import Path

from .. import runtimes
from ..agent.cli import add_agent_args, agent_from_args
from ..cli_common import (add_data_args, add_measure_args, add_model_args, emit, input_shape, load_data,
                          load_model, positive_int)
from ..core.shapes import batched


def register(sub) -> None:
    p = sub.add_parser("profile", help="params, MACs, size, latency (and accuracy) of a model or .onnx")
    add_model_args(p)
    add_data_args(p)
    add_measure_args(p)
    p.add_argument("--runtime", choices=runtimes.names(), default="onnxruntime")
    p.add_argument("--metric", metavar="NAME|package.module:function",
                   help="what the accuracy figure is, on the test split of --data: top1 (default for classifiers), "
                        "top5, map, miou, or your function (predict, loader) -> float | per-sample values")
    p.add_argument("--json", action="store_true")
    add_agent_args(p)
    p.set_defaults(func=run_profile)

    b = sub.add_parser("bench", help="time several models/.onnx files side by side in one process")
    b.add_argument("models", nargs="+", metavar="MODEL", help="checkpoints, specs or .onnx files")
    b.add_argument("--num-classes", type=positive_int)
    b.add_argument("--in-channels", type=positive_int)
    b.add_argument("--spec")
    add_measure_args(b)
    b.add_argument("--runtime", choices=runtimes.names(), default="onnxruntime",
                   help="where PyTorch models run (.onnx files always run in ONNX Runtime)")
    b.add_argument("--rounds", type=positive_int, default=3,
                   help="rounds of fresh sessions in shuffled order; the figure is the median over rounds (default 3)")
    b.add_argument("--json", action="store_true")
    add_agent_args(b)
    b.set_defaults(func=run_bench)


def _onnx_shape(path: str, args) -> tuple[int, ...]:
    if args.input_shape:
        return batched(args.input_shape)
    from ..runtimes.onnxruntime import input_shape as onnx_input_shape

    return onnx_input_shape(path)


def _onnx_layers(path: str) -> list[dict]:
    import onnx
    from onnx import numpy_helper

    m = onnx.load(path)
    sizes = {t.name: numpy_helper.to_array(t).size for t in m.graph.initializer}
    return [{"name": n.name or n.op_type, "type": n.op_type, "params": sum(sizes.get(i, 0) for i in n.input)}
            for n in m.graph.node]


def run_profile(args) -> int:
    from .. import metrics
    from ..core.errors import UsageError
    from . import profile

    given = metrics.resolve(args.metric) if args.metric else None  # typed by the user: imported now, before any loading
    agent = agent_from_args(args)  # a usage error before any loading
    is_onnx = args.model.endswith(".onnx")
    data = load_data(args)
    metric = _data_metric(given, data)
    if is_onnx:
        if not Path(args.model).is_file():
            raise UsageError(f"no such ONNX file: {args.model}")
        target, shape, layers = args.model, _onnx_shape(args.model, args), _onnx_layers(args.model)
    else:
        target, info = load_model(args, data)
        shape, layers = input_shape(args, info, target), None
    loader = data.test if data is not None else None
    fig = profile(target, shape, runtime=args.runtime, threads=args.threads, runs=args.runs, warmup=args.warmup,
                  loader=loader, max_batches=args.max_batches, agent=agent, metric=metric)
    layers = fig.get("layers") or layers or []
    fig["layers"] = layers
    emit(args, fig, _profile_text(args.model, fig, layers))
    return 0


def _profile_text(name: str, fig: dict, layers: list[dict]) -> str:
    lines = [f"{name}: {fig['params']:,} params"
             + (f", {fig['macs']:,} MACs" if fig["macs"] is not None else "")
             + f", {fig['size_bytes']:,} bytes (ONNX)",
             f"latency: median {fig['latency_ms']:.3f} ms, p90 {fig['latency_p90_ms']:.3f} ms "
             f"({fig['runtime']}, {fig['threads']} threads, batch {fig['batch']}, input {fig['input_shape']})"]
    if fig.get("timed_on"):
        lines.append(f"timed on: {_where(fig['timed_on'])}")
    if fig.get("accuracy") is not None:
        lines.append(_accuracy_text(fig))
    if fig.get("memory_access"):
        lines.append(f"memory access (estimate): {fig['memory_access']['total_bytes']:,} bytes")
    if layers:
        w = max(len(r["name"]) for r in layers)
        has_macs = "macs" in layers[0]
        lines.append("")
        lines.append(f"{'layer':<{w}}  {'type':<18} {'params':>10}" + (f" {'MACs':>14}" if has_macs else ""))
        for r in layers:
            lines.append(f"{r['name']:<{w}}  {r['type']:<18} {r['params']:>10,}" + (f" {r['macs']:>14,}" if has_macs else ""))
    return "\n".join(lines)


def _data_metric(given, data):
    """The metric of ``profile``: the user's, else the data's task's default; one that scores another
    task than the data's is refused."""
    from .. import metrics

    meta = getattr(data, "meta", None)
    if meta is None:
        return given or metrics.get()
    task = getattr(meta, "task", "classification")
    metric = given or metrics.get(metrics.default_for(task))
    metrics.check_task(metric, task, getattr(meta, "name", "the data"))
    return metric


def _accuracy_text(fig: dict) -> str:
    """'accuracy: 91.20% top-1 (test split)'; 'map: 31.20 (test split; map_50 55.10)' for another metric."""
    m = fig.get("metric") or {}
    name, v = m.get("name") or "top1", fig["accuracy"]
    if name in ("top1", "top5"):
        return f"accuracy: {v:.2f}% {'top-1' if name == 'top1' else 'top-5'} (test split)"
    extra = ", ".join(f"{k} {x:.2f}" for k, x in (m.get("extra") or {}).items() if x is not None)
    return f"{name}: {v:.2f} (test split" + (f"; {extra})" if extra else ")")


def run_bench(args) -> int:
    import argparse as _ap

    from . import bench, check_input
    from .profile import example_input

    agent = agent_from_args(args)  # a usage error before any loading
    if agent is not None and not runtimes.get(args.runtime).suffix and not all(m.endswith(".onnx")
                                                                            for m in args.models):
        from ..core.errors import UsageError

        raise UsageError(f"the device agent times artifact files; --runtime {args.runtime} runs PyTorch models here",
                         hint="use a runtime that writes files (--runtime onnxruntime) with --agent")
    targets, names, shape = [], [], None
    with tempfile.TemporaryDirectory() as tmp:
        for i, spec in enumerate(args.models):
            if spec.endswith(".onnx"):
                targets.append(spec)
                shape = shape or _onnx_shape(spec, args)
            else:
                ns = _ap.Namespace(model=spec, num_classes=args.num_classes, in_channels=args.in_channels, spec=args.spec)
                model, info = load_model(ns)
                shape = shape or input_shape(args, info)
                check_input(model, shape, spec)  # the first model's shape must fit every one
                rt = runtimes.get(args.runtime)
                if rt.suffix:  # a runtime that runs files: time the model's artifact
                    path = Path(tmp) / f"{i}{rt.suffix}"
                    rt.export(model, path, example_input(shape))
                    targets.append(str(path))
                else:
                    targets.append(model)
            names.append(spec)
        res = bench(targets, shape, threads=args.threads, warmup=args.warmup, runs=args.runs,
                    rounds=args.rounds, agent=agent)
    base = res[0]["median_ms"]
    rows = [{"model": n, "median_ms": r["median_ms"], "p90_ms": r["p90_ms"], "ratio_to_first": r["median_ms"] / base,
             "runtime": r["runtime"]} for n, r in zip(names, res)]
    out = {"input_shape": list(shape), "threads": args.threads, "runs": args.runs, "results": rows}
    if agent is not None:
        out["timed_on"] = res[0]["timed_on"]
    w = max(len(n) for n in names)
    text = [f"{'model':<{w}}  {'median ms':>10}  {'p90 ms':>10}  {'x first':>8}  runtime"]
    text += [f"{r['model']:<{w}}  {r['median_ms']:>10.3f}  {r['p90_ms']:>10.3f}  {r['ratio_to_first']:>8.2f}  {r['runtime']}"
             for r in rows]
    text.append(f"(one session at a time, median over {args.rounds} rounds in shuffled order, {args.runs} "
                f"runs each, {args.threads} threads, input {list(shape)})")
    if agent is not None:
        text.append(f"timed on: {_where(out['timed_on'])}")
    emit(args, out, "\n".join(text))
    return 0


def _where(timed_on: dict) -> str:
    m = timed_on.get("machine") or {}
    return f"agent {timed_on['agent']} ({m.get('cpu', 'unknown CPU')}, {m.get('cores', '?')} cores)"
