"""Recipes: a list of technique configs run in order, and the artifact they produce.

    steps:
      - {type: channel_prune, ratio: 0.5}
      - {type: finetune, epochs: 1, max_batches: 100}
      - {type: ptq, bits: 8}

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
import tempfile
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from ..core.config import Config
from ..core.errors import DataError, UsageError
from ..core.registry import Context, apply, register
from ..core.shapes import batched, unbatched

RECIPE_KEYS = ("steps", "seed", "meta")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Finetune(Config):
    """Plain fine-tuning (cross-entropy) between compression steps; ``kd`` is its distilled twin."""

    kind = "finetune"
    epochs: float = 1.0
    lr: float | None = 0.01
    optimizer: str = "sgd"
    max_batches: int | None = None  # cap batches per epoch

    def validate(self) -> None:
        if not isinstance(self.epochs, (int, float)) or self.epochs < 0:
            raise UsageError(f"finetune.epochs must be >= 0, got {self.epochs!r}")
        if self.max_batches is not None and (not isinstance(self.max_batches, int) or self.max_batches < 1):
            raise UsageError(f"finetune.max_batches must be a positive integer, got {self.max_batches!r}")
        if self.optimizer not in ("sgd", "adam"):
            raise UsageError(f"unknown optimizer {self.optimizer!r}", hint="use 'sgd' or 'adam'")


@register(Finetune)
def _finetune(model: nn.Module, cfg: Finetune, ctx: Context) -> nn.Module:
    from ..train import fit

    if ctx.data is None:
        raise DataError("fine-tuning needs training data", hint="pass data=... (--data D)")
    fit(model, ctx.data, epochs=cfg.epochs, lr=cfg.lr, optimizer=cfg.optimizer, max_batches=cfg.max_batches,
        seed=ctx.seed, progress=ctx.progress)
    ctx.details.setdefault("notes", []).append(f"fine-tuned {cfg.epochs:g} epoch(s)"
                                               + (f" of at most {cfg.max_batches} batches" if cfg.max_batches else ""))
    return model.eval()


def register_all() -> None:
    """Import every technique package so that each config type is known to Config.from_dict."""
    from .. import distillation, lowrank, quantization, reparameterization  # noqa: F401
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
        extra = {k: v for k, v in source.items() if k != "steps"}
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
    check_order(steps)
    return steps, extra


def recipe_dict(steps: list[Config], **extra: Any) -> dict:
    return {"steps": [s.to_dict() for s in steps], **extra}


def recipe_yaml(steps: list[Config], **extra: Any) -> str:
    return yaml.safe_dump(recipe_dict(steps, **extra), sort_keys=False)


def family(cfg: Config) -> str:
    """prune | quant | distill | lowrank | reparam | finetune | other."""
    mod = type(cfg).__module__
    for package, fam in (("pruning", "prune"), ("quantization", "quant"), ("distillation", "distill"),
                         ("lowrank", "lowrank"), ("reparameterization", "reparam"), ("codec", "codec")):
        if mod.startswith(f"edgeslim.{package}"):
            return fam
    return "finetune" if isinstance(cfg, Finetune) else "other"


def check_order(steps: list[Config]) -> None:
    for i, s in enumerate(steps[:-1]):
        if family(s) in ("quant", "codec"):
            raise UsageError(f"recipe step {i + 1} ({s.kind}) must be the last step",
                             hint="quantization / coding produce the deployable format; put them last")


# -- running ---------------------------------------------------------------------------------------
def apply_step(model: nn.Module, cfg: Config, *, data: Any, input_shape, teacher: nn.Module | None,
               seed: int = 0, progress: bool = False) -> tuple[nn.Module, dict]:
    """Run one step on ``model`` (modified in place where the technique allows) -> (model, details)."""
    fam = family(cfg)
    shape = tuple(input_shape)
    if fam == "prune":
        from ..pruning import prune_with_details

        return prune_with_details(model, cfg, data=data, input_shape=shape, inplace=True, teacher=teacher,
                                  seed=seed, progress=progress)
    if fam == "quant":
        from ..quantization import quantize_with_details

        return quantize_with_details(model, cfg, data=data, inplace=True, seed=seed, progress=progress)
    if fam == "distill":
        from ..distillation import distill_with_details

        if teacher is None:
            raise UsageError("a kd step needs a teacher", hint="compress uses the input model as the teacher")
        return distill_with_details(model, teacher, data, cfg, inplace=True, seed=seed, progress=progress)
    if fam == "lowrank":
        from ..lowrank import factorize_with_details

        return factorize_with_details(model, cfg, data, input_shape=shape, inplace=True, seed=seed,
                                      progress=progress)
    if fam == "reparam":
        ctx = Context(data=data, seed=seed, progress=progress)
        model = apply(model.eval(), cfg, ctx)
        return model, ctx.details
    if fam == "codec":
        raise UsageError("deep_compress produces a .esz container, not an ONNX model; run `edgeslim deepcompress`")
    ctx = Context(data=data, teacher=teacher, seed=seed, progress=progress)
    ctx.input_shape = shape  # type: ignore[attr-defined]
    return apply(model, cfg, ctx), ctx.details


@dataclasses.dataclass
class Compressed:
    model: nn.Module  # the result (a quantization simulation when the recipe quantizes)
    float_model: nn.Module  # the model before the quantization step (== model when none)
    quantized: bool
    steps: list[Config]
    details: list[dict]


def run_steps(model: nn.Module, steps: list[Config], *, data: Any, input_shape, teacher: nn.Module | None = None,
              seed: int = 0, progress: bool = False, log=None) -> Compressed:
    """Run ``steps`` in order on a copy of ``model``; the input model is the KD teacher by default."""
    from ..train import bn_report, record_fits

    check_order(steps)
    work = copy.deepcopy(model).eval()
    teacher = teacher if teacher is not None else copy.deepcopy(model).eval()
    details, float_model, quantized = [], work, False
    for i, cfg in enumerate(steps):
        if log:
            log(f"step {i + 1}/{len(steps)}: {cfg.kind}")
        if family(cfg) == "quant":
            float_model = copy.deepcopy(work)
            quantized = True
        with record_fits() as fits:  # the step's own fine-tunes: their BatchNorm re-estimates go in its details
            work, d = apply_step(work, cfg, data=data, input_shape=input_shape, teacher=teacher, seed=seed,
                                 progress=progress)
        details.append({"step": i + 1, "type": cfg.kind, **_jsonable(d),
                        **({"bn_recalibration": bn_report(fits)} if fits else {})})
    if not quantized:
        float_model = work
    return Compressed(work.eval(), float_model.eval(), quantized, list(steps), details)


def export_artifact(result: Compressed, path: str | os.PathLike, input_shape, *, loader=None) -> dict:
    """Write the deployable ONNX file (QDQ int8 for PTQ/QAT, float otherwise) atomically."""
    shape = batched(input_shape)
    if result.quantized:
        from ..quantization import export as qexport

        x = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
        return qexport(result.model, path, x, loader=loader)
    from ..export import onnx as export_onnx

    return export_onnx(result.model, path, input_shape=shape, loader=loader)


# -- per-layer policy ------------------------------------------------------------------------------
def layer_policy(original: nn.Module, result: Compressed) -> list[dict]:
    """One row per Conv2d / Linear of the original model: channels before and after, how it was
    decomposed, its weight bit width in the deployed artifact; ``removed`` when its whole block went
    (depth pruning)."""
    bits: dict[str, Any] = {}
    floats: set[str] = set()
    dropped = [b for d in result.details if d.get("type") == "block_prune" for b in d.get("removed") or []]
    for d in result.details:
        if d.get("type") in ("ptq", "qat"):
            for row in d.get("layers") or []:
                bits[row["layer"]] = row.get("weight_bits")
            for row in d.get("float_layers") or []:
                floats.add(row["layer"])
    after = dict(result.float_model.named_modules())
    rows = []
    for name, m in original.named_modules():
        if not isinstance(m, (nn.Conv2d, nn.Linear)):
            continue
        new = after.get(name)
        out_b = m.out_channels if isinstance(m, nn.Conv2d) else m.out_features
        in_b = m.in_channels if isinstance(m, nn.Conv2d) else m.in_features
        row = {"layer": name, "type": type(m).__name__, "out": out_b, "out_after": None, "in": in_b, "in_after": None,
               "lowrank": "", "weight_bits": None, "params": sum(p.numel() for p in m.parameters()), "params_after": None,
               "removed": any(name.startswith(b + ".") for b in dropped)}
        if isinstance(new, type(m)):
            row["out_after"] = new.out_channels if isinstance(new, nn.Conv2d) else new.out_features
            row["in_after"] = new.in_channels if isinstance(new, nn.Conv2d) else new.in_features
            row["params_after"] = sum(p.numel() for p in new.parameters())
        elif new is not None:  # replaced by a factorized sequence
            subs = [s for s in new.modules() if isinstance(s, (nn.Conv2d, nn.Linear))]
            row["lowrank"] = f"{type(new).__name__} of {len(subs)}"
            row["params_after"] = sum(p.numel() for p in new.parameters())
            if subs:
                f, l = subs[0], subs[-1]
                row["in_after"] = f.in_channels if isinstance(f, nn.Conv2d) else f.in_features
                row["out_after"] = l.out_channels if isinstance(l, nn.Conv2d) else l.out_features
        if row["removed"]:
            row.update(out_after=0, in_after=0, params_after=0)
        elif result.quantized:
            hit = [b for k, b in bits.items() if k == name or k.startswith(name + ".")]
            row["weight_bits"] = (hit[0] if hit else "float") if name not in floats else "float"
        else:
            row["weight_bits"] = "float"
        rows.append(row)
    return rows


def _jsonable(d: Any) -> Any:
    import json

    from ..core.io import _json_default

    try:
        return json.loads(json.dumps(d, default=_json_default))
    except TypeError:
        return {k: str(v) for k, v in d.items()} if isinstance(d, dict) else str(d)


# -- the verb ----------------------------------------------------------------------------------------
def compress(model: nn.Module, recipe: Any, *, data: Any = None, out: str | os.PathLike | None = None,
             input_shape=None, teacher: nn.Module | None = None, seed: int | None = None, spec: str | None = None,
             build: dict | None = None, model_name: str | None = None, threads: int = 2, runs: int = 50,
             progress: bool = False, log=None):
    """Run a recipe (YAML path/text, dict, or list of configs) on a copy of ``model``.

    Without ``out`` returns the compressed model. With ``out`` also writes DIR/model.onnx,
    DIR/checkpoint (float results, when ``spec`` says how to rebuild the architecture),
    DIR/report.json and DIR/report.md, and returns the Report's model and Report as a tuple.
    """
    if not isinstance(model, nn.Module):
        raise UsageError(f"compress expects a torch.nn.Module, got {type(model).__name__}")
    steps, extra = load_recipe(recipe)
    seed = int(extra.get("seed", 0) if seed is None else seed)
    shape = _input_shape(model, data, input_shape)
    result = run_steps(model, steps, data=data, input_shape=shape, teacher=teacher, seed=seed, progress=progress,
                       log=log)
    if out is None:
        return result.model
    from ..core.outdir import OutDir

    with OutDir(out) as stage:  # the whole DIR at once
        report = write_outputs(model, result, stage, data=data, input_shape=shape, spec=spec, build=build,
                               model_name=model_name, command="compress", threads=threads, runs=runs,
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


def _split(data, name: str):
    return getattr(data, name, None) if data is not None else None


def write_outputs(original: nn.Module, result: Compressed, out: str | os.PathLike, *, data, input_shape, spec=None,
                  build=None, model_name=None, command="compress", threads=2, runs=50, extra_details=None,
                  artifact: str | os.PathLike | None = None, max_batches: int | None = None):
    """model.onnx, checkpoint/ (float results), report.json/.md with the baseline measured side by side
    on the test split, written into ``out`` as it is: callers pass an OutDir's staging directory so
    the whole DIR changes at once. ``artifact``: an already exported result to use as model.onnx."""
    import shutil

    from ..core.io import atomic_path
    from ..core.report import Report
    from ..train import record_bn
    from ..measure import compare, count_macs

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    shape = (1, *tuple(input_shape))
    test = _split(data, "test") or _split(data, "val")
    split = "test" if _split(data, "test") is not None else ("val" if test is not None else None)
    model_onnx = out / "model.onnx"
    if artifact is not None:
        with atomic_path(model_onnx) as tmp:
            shutil.copyfile(artifact, tmp)
    else:
        export_artifact(result, model_onnx, shape, loader=test)
    notes = []
    if not result.quantized and spec:
        from .. import models

        models.save(result.model, out / "checkpoint", spec=spec, input_shape=tuple(input_shape), build=build,
                    classes=list(data.meta.classes) if data is not None and data.meta.labelled else None,
                    extra={"command": command})
    elif not result.quantized:
        notes.append("no checkpoint written: the architecture spec of the input model is unknown")
    else:
        notes.append("the result is quantized: deploy model.onnx (int8 QDQ); no float checkpoint is written")
    with tempfile.TemporaryDirectory() as tmp:
        base, res = compare(original, model_onnx, shape, workdir=tmp, loader=test, threads=threads, runs=runs,
                            max_batches=max_batches)
    res["macs"] = count_macs(result.float_model, shape)[0]
    res["params"] = sum(p.numel() for p in result.float_model.parameters())
    details = {"split": split, "steps": result.details, "layers": layer_policy(original, result),
               "quantized": result.quantized, **(extra_details or {})}
    details["notes"] = list(details.get("notes", [])) + notes
    data_name = data.meta.name if data is not None and getattr(data, "meta", None) is not None else None
    report = Report(command=command, model=model_name or spec or type(original).__name__, data=data_name,
                    baseline=base, result=res, details=record_bn(details))
    report.write(out)
    return report
