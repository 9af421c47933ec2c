"""Recipes: a list of technique configs run in order, and the artifact they produce.

    version: 1
    steps:
      - {type: channel_prune, ratio: 0.5}
      - {type: finetune, epochs: 1, max_batches: 100}
      - {type: ptq, bits: 8}

Every fine-tune is a step of its own: a step's own ``finetune_epochs`` (with ``distill``: a ``kd``
step, which learns from the recipe's teacher; without: plain cross-entropy) is split off when the
recipe is read (``Config.split_training``). A step that produces the deployable format (``final``:
quantization) must be the last. ``version`` (written as 1) may be missing in older files.

``edgeslim.compress(model, recipe, data=data, out="runs/c")`` runs the steps on a copy of the model
and, with ``out``, writes the usual out DIR: model.onnx (QDQ int8 when the recipe quantizes),
checkpoint/ (float results only: a quantized model is deployed as its ONNX file), report.json and
report.md (baseline = the fp32 ONNX of the input model, measured side by side). ``auto`` writes the
recipe of its winner (winner.yaml) in this format, so the search result replays exactly.
"""
from __future__ import annotations

import copy
import dataclasses
import os
from pathlib import Path
from typing import Any

import yaml
from torch import nn

from ..core.config import Config
from ..core.errors import UsageError
from ..core.registry import Context, apply, export_for
from ..core.shapes import unbatched
from ..output import Compressed
from ..output.result import jsonable
from ..train.finetune import Finetune

RECIPE_KEYS = ("version", "steps", "seed", "meta")
RECIPE_VERSION = 1  # what recipe_dict writes
READS_VERSIONS = (1,)  # what load_recipe reads (a file without a version is a version 1 file)

__all__ = ["Finetune", "RECIPE_KEYS", "RECIPE_VERSION", "apply_step", "check_order", "compress", "expand_steps",
           "load_recipe", "recipe_dict", "recipe_yaml", "register_all", "run_steps"]


def register_all() -> None:
    """Import every technique package so that each config type is known to Config.from_dict."""
    from .. import distillation, lowrank, quantization, reparameterization, train  # noqa: F401
    from ..pruning import depth, structured, unstructured  # noqa: F401
    from ..quantization import dynamic, nonuniform, qat  # noqa: F401


# -- reading -------------------------------------------------------------------------------------
def load_recipe(source: Any) -> tuple[list[Config], dict]:
    """Steps from a YAML path, YAML text, a dict ``{"steps": [...]}``, or a list of dicts/configs.
    Returns (steps, the rest of the recipe: seed, meta)."""
    register_all()
    if isinstance(source, (str, os.PathLike)) and not (isinstance(source, str) and "\n" in source):
        p = Path(source)
        if not p.is_file():
            raise UsageError(f"recipe file {str(p)!r} not found", hint="give a YAML file with a 'steps:' list")
        text = p.read_text()
        try:
            source = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise UsageError(f"recipe {p} is not valid YAML: {str(e).splitlines()[0]}") from None
    elif isinstance(source, str):
        try:
            source = yaml.safe_load(source)
        except yaml.YAMLError as e:
            raise UsageError(f"recipe is not valid YAML: {str(e).splitlines()[0]}") from None
    extra: dict = {}
    if isinstance(source, dict):
        unknown = sorted(set(source) - set(RECIPE_KEYS))
        if unknown:
            raise UsageError(f"unknown key {unknown[0]!r} in the recipe", hint=f"valid keys: {', '.join(RECIPE_KEYS)}")
        _check_version(source.get("version", 1))  # no version: a file written before recipes had one
        extra = {k: v for k, v in source.items() if k not in ("steps", "version")}
        source = source.get("steps")
    if not isinstance(source, (list, tuple)) or not source:
        raise UsageError("a recipe needs a non-empty 'steps' list",
                         hint="steps: [{type: channel_prune, ratio: 0.5}, {type: ptq, bits: 8}]")
    steps = []
    for i, s in enumerate(source):
        if isinstance(s, Config):
            steps.append(s)
        elif isinstance(s, dict):
            try:
                steps.append(Config.from_dict(s))
            except UsageError as e:
                raise UsageError(f"recipe step {i + 1}: {e.message}", hint=e.hint) from None
        else:
            raise UsageError(f"recipe step {i + 1} must be a mapping with a 'type' key, got {type(s).__name__}")
    steps = expand_steps(steps)
    check_order(steps)
    return steps, extra


def _check_version(version: Any) -> None:
    if isinstance(version, bool) or version not in READS_VERSIONS:
        reads = ", ".join(map(str, READS_VERSIONS))
        raise UsageError(f"recipe version {version!r} is not one this edgeslim reads (it reads version {reads})",
                         hint="write the recipe for a version listed, or use the edgeslim release that wrote it")


def expand_steps(steps: list[Config]) -> list[Config]:
    """Each step's own fine-tuning as an explicit step after it (``Config.split_training``):
    ``channel_prune {ratio: 0.5, finetune_epochs: 1}`` runs as ``channel_prune {ratio: 0.5}`` +
    ``finetune {epochs: 1}`` (``kd`` when the step distils). Steps that interleave pruning and
    training (iterative / AGP schedules, masked fine-tuning) keep theirs."""
    out: list[Config] = []
    for step in steps:
        head, training = step.split_training()
        out.append(head)
        if training is not None:
            out.append(training)
    return out


def recipe_dict(steps: list[Config], **extra: Any) -> dict:
    rest = {k: v for k, v in extra.items() if k != "version"}
    return {"version": RECIPE_VERSION, "steps": [s.to_dict() for s in steps], **rest}


def recipe_yaml(steps: list[Config], **extra: Any) -> str:
    return yaml.safe_dump(recipe_dict(steps, **extra), sort_keys=False)


def check_order(steps: list[Config]) -> None:
    """A step that produces the deployable format (``final``) must be the last, and be one a recipe
    can deploy (an exporter is registered for it)."""
    for i, s in enumerate(steps[:-1]):
        if s.final:
            raise UsageError(f"recipe step {i + 1} ({s.kind}) must be the last step",
                             hint="quantization / coding produce the deployable format; put them last")
    if steps and steps[-1].final:
        try:
            export_for(steps[-1])
        except UsageError:
            raise UsageError(f"recipe step {len(steps)} ({steps[-1].kind}) produces a format of its own, "
                             "not a model a recipe deploys as ONNX", hint="run it with its own command") from None


# -- running ---------------------------------------------------------------------------------------
def apply_step(model: nn.Module, cfg: Config, *, data: Any, input_shape, teacher: nn.Module | None,
               seed: int = 0, progress: bool = False) -> tuple[nn.Module, dict]:
    """Run one step on ``model`` (modified in place where the technique allows) -> (model, details).
    ``teacher`` is used only by the steps that distil (``kd``, or a step with ``distill: true``)."""
    shape = unbatched(input_shape) if input_shape is not None else None
    ctx = Context(data=data, teacher=teacher, input_shape=shape, seed=seed, progress=progress)
    return apply(model.eval(), cfg, ctx), ctx.details


def run_steps(model: nn.Module, steps: list[Config], *, data: Any, input_shape, teacher: nn.Module | None = None,
              seed: int = 0, progress: bool = False, log=None) -> Compressed:
    """Run ``steps`` in order on a copy of ``model``, each step's fine-tuning as a step of its own
    (``expand_steps``); the steps that distil learn from ``teacher``, by default the input model."""
    from ..train import bn_report, record_fits

    register_all()
    steps = expand_steps(steps)
    check_order(steps)
    work = copy.deepcopy(model).eval()
    teacher = copy.deepcopy(teacher if teacher is not None else model).eval()  # the caller's stays untouched
    details, float_model, quantized = [], work, False
    for i, cfg in enumerate(steps):
        if log:
            log(f"step {i + 1}/{len(steps)}: {cfg.kind}")
        if cfg.final:
            float_model = copy.deepcopy(work)
            quantized = True
        with record_fits() as fits:  # the step's own fine-tunes: their BatchNorm re-estimates go in its details
            work, d = apply_step(work, cfg, data=data, input_shape=input_shape, teacher=teacher, seed=seed,
                                 progress=progress)
        details.append({"step": i + 1, "type": cfg.kind, **jsonable(d),
                        **({"bn_recalibration": bn_report(fits)} if fits else {})})
    if not quantized:
        float_model = work
    return Compressed(work.eval(), float_model.eval(), quantized, list(steps), details)


# -- the verb ----------------------------------------------------------------------------------------
def compress(model: nn.Module, recipe: Any, *, data: Any = None, out: str | os.PathLike | None = None,
             input_shape=None, teacher: nn.Module | None = None, seed: int | None = None, progress: bool = False,
             log=None, **output: Any):
    """Run a recipe (YAML path/text, dict, or list of configs) on a copy of ``model``.

    Without ``out`` returns the compressed model. With ``out`` also writes DIR/model.onnx,
    DIR/checkpoint (float results, when ``spec`` says how to rebuild the architecture),
    DIR/report.json and DIR/report.md, and returns the Report's model and Report as a tuple.
    ``output``: how the out DIR is written and measured, the fields of ``edgeslim.output.OutputOptions``
    (spec, build, model_name, threads, runs, ...).
    """
    from ..output import OutputOptions

    if not isinstance(model, nn.Module):
        raise UsageError(f"compress expects a torch.nn.Module, got {type(model).__name__}")
    fields = {f.name for f in dataclasses.fields(OutputOptions)} - {"command"}
    unknown = sorted(set(output) - fields)
    if unknown:
        raise TypeError(f"compress() got an unexpected keyword argument {unknown[0]!r}")
    opts = OutputOptions(command="compress", **output)  # checked before any step runs
    steps, extra = load_recipe(recipe)
    if out is not None:
        from ..runtimes import check_exportable

        check_exportable(steps[-1] if steps else None, opts.runtime)  # before any step runs
    seed = int(extra.get("seed", 0) if seed is None else seed)
    shape = _input_shape(model, data, input_shape)
    result = run_steps(model, steps, data=data, input_shape=shape, teacher=teacher, seed=seed, progress=progress,
                       log=log)
    if out is None:
        return result.model
    from ..core.outdir import OutDir
    from ..output import write_result

    with OutDir(out) as stage:  # the whole DIR at once
        report = write_result(stage, model, result, opts, data=data, input_shape=shape,
                              extra_details={"recipe": recipe_dict(steps, seed=seed)})
    return result.model, report


def _input_shape(model, data, input_shape) -> tuple[int, ...]:
    if input_shape is not None:
        return unbatched(input_shape)
    if data is not None and getattr(data, "meta", None) is not None:
        return tuple(data.meta.input_shape)
    s = getattr(model, "input_shape", None)
    if s is None:
        raise UsageError("the input shape is unknown", hint="pass input_shape=(C, H, W) or data=...")
    return tuple(s)
