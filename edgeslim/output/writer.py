"""The one writer of a result's out DIR, used by every command and API verb that writes one:

    DIR/model.onnx      the deployable result (exported here, or a given artifact copied in; the
                        runtime's file: model.xml+.bin, model.tflite, model.pte)
    DIR/checkpoint/     safetensors + sidecar (float results whose spec is known); loads with models.load(DIR)
    DIR/report.json|md  baseline and result measured side by side on the test split (else val), with
                        the peak memory of running each and what the runtime compiled the result to
    DIR/<extras>        what the technique adds (model.esz, plots)

``write_result`` writes into the directory it is given as it is: callers pass the staging directory
of ``staged`` (or core.outdir.OutDir) so DIR changes all at once.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Mapping

from torch import nn

from ..core.errors import UsageError
from ..core.report import Report
from ..core.shapes import batched, unbatched
from .options import OutputOptions
from .result import Compressed, export_artifact, layer_policy

# files the writer itself owns: an extra may not replace them
RESERVED = ("model.onnx", "report.json", "report.md", "checkpoint", "baseline.onnx")
QUANTIZED_NOTE = "the result is quantized: deploy {artifact} (its int8 file); no float checkpoint is written"
NO_SPEC_NOTE = "no checkpoint written: the architecture spec of the input model is unknown"
_EXPORT_KEYS = ("size_bytes", "max_abs_diff", "top1_agreement", "opset")


def eval_split(data: Any) -> tuple[str | None, Any]:
    """(name, loader) of the split final figures are measured on: test, else val, else (None, None)."""
    for name in ("test", "val"):
        loader = getattr(data, name, None) if data is not None else None
        if loader is not None:
            return name, loader
    return None, None


def _labelled(data: Any) -> bool:
    meta = getattr(data, "meta", None)
    return meta is None or bool(getattr(meta, "labelled", True))


def write_result(stage: str | os.PathLike, original: nn.Module, result: Compressed, opts: OutputOptions, *,
                 data: Any, input_shape, extra_details: dict | None = None,
                 artifact: str | os.PathLike | None = None, extras: Mapping[str, bytes | str | os.PathLike] | None = None,
                 checkpoint: Callable[[Path], list[str] | None] | None = None,
                 finish: Callable[[Report], None] | None = None) -> Report:
    """Write model.onnx, checkpoint/, the extras and report.json/.md of ``result`` into ``stage``;
    return the Report.

    ``input_shape``: (C, H, W) or (N, C, H, W), the batch the latency is measured at. ``artifact``: an
    already exported result to use as model.onnx. ``extras``: {file name: bytes or a file to copy}.
    ``checkpoint``: writes DIR/checkpoint itself (given its path) instead of the default rule (float
    results with a known spec), returning notes. ``finish``: adjusts the Report before it is written."""
    stage = Path(stage)
    stage.mkdir(parents=True, exist_ok=True)
    shape = batched(input_shape)
    split, loader = eval_split(data)
    labelled = loader is not None and _labelled(data)
    extras = {_extra_name(name): content for name, content in (extras or {}).items()}  # refused before any work
    exported = _write_artifact(result, stage / opts.artifact, shape, loader, artifact, opts.runtime)
    _write_extras(stage, extras)
    metric = opts.scorer(data)
    base, res, scores = _measure(original, stage, shape, opts, loader if labelled else None, metric)
    notes = _write_checkpoint(stage / "checkpoint", result, opts, data, shape, (metric.name, res.get("accuracy")),
                              checkpoint)
    details = _details(original, result, opts, split, loader if labelled else None, res, exported,
                       extra_details or {}, metric, scores)
    details["kernels"] = _kernels(opts, stage / opts.artifact, result.quantized)
    details["notes"] = list(details.get("notes", [])) + notes + ([details["kernels"]["note"]]
                                                                 if "note" in details["kernels"] else [])
    from ..train import record_bn

    meta = getattr(data, "meta", None)
    report = Report(command=opts.command, model=opts.model_name or opts.spec or type(original).__name__,
                    data=opts.data_name or getattr(meta, "name", None), baseline=base, result=res,
                    details=record_bn(details), machine=_agent_machine(opts, res))
    if finish is not None:
        finish(report)
    report.write(stage)
    return report


def _write_artifact(result: Compressed, path: Path, shape, loader, artifact, runtime: str) -> dict | None:
    """model.onnx (or the runtime's file): exported (its verification figures returned), or
    ``artifact`` copied in with its companion files."""
    if artifact is None:
        info = export_artifact(result, path, shape, loader=loader, runtime=runtime)
        return {k: info[k] for k in _EXPORT_KEYS if k in info}
    if Path(artifact).resolve() != path.resolve():
        from ..runtimes import copy_artifact

        copy_artifact(artifact, path)
    return None


def _extra_name(name: str) -> Path:
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts or rel.parts[0] in RESERVED:
        raise UsageError(f"extra output {name!r} must be a relative name inside DIR other than {', '.join(RESERVED)}")
    return rel


def _write_extras(stage: Path, extras: Mapping[Path, bytes | str | os.PathLike]) -> None:
    from ..core.io import atomic_path, atomic_write_bytes

    for rel, content in extras.items():
        dst = stage / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, (bytes, bytearray, memoryview)):
            atomic_write_bytes(dst, bytes(content))
        else:
            with atomic_path(dst) as tmp:
                shutil.copyfile(content, tmp)


def _measure(original: nn.Module, stage: Path, shape, opts: OutputOptions, loader, metric) -> tuple[dict, dict, Any]:
    """Baseline and result FIGURES, measured side by side (same threads, batch and runtime), and both
    artifacts' Scores in ``metric`` (None without labelled data)."""
    from ..measure.compare import compare_scored

    with contextlib.ExitStack() as stack:
        work = stage if opts.keep_baseline else Path(stack.enter_context(tempfile.TemporaryDirectory()))
        return compare_scored(original, stage / opts.artifact, shape, workdir=work, loader=loader,
                              threads=opts.threads, runtime=opts.runtime, agent=opts.agent, runs=opts.runs,
                              warmup=opts.warmup, max_batches=opts.max_batches, metric=metric)


def _write_checkpoint(ckpt: Path, result: Compressed, opts: OutputOptions, data, shape, score: tuple,
                      hook) -> list[str]:
    """DIR/checkpoint by the rule (float results whose spec is known) or by ``hook``; the notes why not.
    ``score``: (the metric's name, the result's figure), recorded as test_<name> in the sidecar."""
    if hook is not None:
        return list(hook(ckpt) or [])
    if result.quantized:
        return [QUANTIZED_NOTE.format(artifact=opts.artifact)]
    if not opts.spec:
        return [NO_SPEC_NOTE]
    from .. import models

    known = list(getattr(getattr(data, "meta", None), "classes", None) or []) if _labelled(data) else []
    classes = known or opts.classes
    metrics = dict(opts.metrics or {})
    name, accuracy = score
    key = f"test_{name}"  # test_top1 for classifiers, test_map, test_<module:function>
    if accuracy is not None or key not in metrics:
        metrics[key] = accuracy
    models.save(result.model, ckpt, spec=opts.spec, input_shape=unbatched(shape), build=opts.build,
                classes=classes, metrics=metrics, extra={"command": opts.command, **(opts.extra or {})})
    return []


def _details(original, result: Compressed, opts: OutputOptions, split, loader, res: dict, exported,
             extra: dict, metric, scores: dict | None = None) -> dict:
    """The writer's details (split, steps, per-layer table, export check, the metric and its extra
    figures, the torch score in the same metric), then the caller's, which win on a shared key."""
    from ..measure.profile import torch_score

    res["macs"] = _macs(result.float_model, res.get("input_shape"))
    res["params"] = sum(p.numel() for p in result.float_model.parameters())
    details: dict[str, Any] = {"split": split, "steps": result.details, "quantized": result.quantized}
    if opts.layer_table and "layers" not in extra:
        details["layers"] = layer_policy(original, result)
    if exported:
        details["export"] = exported
    if scores:
        details["metric"] = {"name": metric.name, "split": split,
                             **{k: {"value": sc.value, "extra": dict(sc.extra)} for k, sc in scores.items()}}
    if loader is not None:
        torch_acc = torch_score(result.model, loader, metric=metric, max_batches=opts.max_batches).value
        details.update(accuracy_split=split, torch_accuracy=torch_acc)
        if result.quantized:  # the simulation and the deployed file: both, since they can differ
            details.update(simulated_accuracy=torch_acc, deployed_accuracy=res.get("accuracy"))
            if torch_acc is not None and res.get("accuracy") is not None:
                details["simulated_vs_deployed"] = round(torch_acc - res["accuracy"], 4)
    details.update(extra)
    return details


def _agent_machine(opts: OutputOptions, res: dict) -> dict | None:
    """The device agent's machine, which the latency and memory were measured on (None: this one)."""
    if opts.agent is None:
        return None
    return {**(opts.agent.info().get("machine") or {}), "agent": opts.agent.url, "threads": res.get("threads"),
            "runtime": res.get("runtime")}


def _kernels(opts: OutputOptions, path: Path, quantized: bool) -> dict:
    """What the deployed file runs as in its runtime (integer / float compute operators), and a note
    where a quantized result still computes in float."""
    from ..runtimes import get

    k = get(opts.runtime).kernels(path, threads=opts.threads)
    if quantized and k.get("float"):
        k["note"] = (f"after {k['runtime']}'s compilation these compute operators still run in float: "
                     + ", ".join(f"{op} x{n}" for op, n in k["float"].items())
                     + (f" ({', '.join(k['float_nodes'])})" if k.get("float_nodes") else ""))
    return k


def _macs(model: nn.Module, shape) -> int | None:
    from ..measure import count_macs

    return count_macs(model, tuple(shape))[0] if shape else None
