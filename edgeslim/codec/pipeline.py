"""Deep Compression, the three stages of Han, Mao and Dally (ICLR 2016), behind one config.

    small, report = edgeslim.deep_compress(model, DeepCompress(prune=0.92, bits={"conv": 8, "fc": 5}),
                                           data=data, spec="lenet300", out="out/")

1. magnitude pruning per layer, retrained with the masks re-applied after every optimizer step;
2. k-means weight sharing per layer (linear init), then centroid fine-tuning with gradients
   pooled per centroid (the pruned weights stay zero);
3. Huffman coding of the codebook indices and of the relative sparse indices into ``.esz``.

Per-layer settings (``prune``, ``bits``, ``index_bits``) are a single value or a
``{pattern: value}`` map: ``"conv"`` and ``"fc"`` match every Conv / Linear layer, any other
key is a regex on the qualified layer name (``features\\.0``); the first matching key wins.
A layer no ``bits`` key matches keeps its float weights (stored raw in the .esz).
"""
from __future__ import annotations

import copy
import dataclasses
import math
import re
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from ..core.config import Config
from ..core.errors import UsageError
from ..core.registry import Context, register
from ..output import Compressed, OutputOptions, eval_split, write_result
from . import container
from ..quantization.sharing import INITS, check_bits, share, bake, shared_of

LAYER_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
_GROUPS = {"conv": (nn.Conv1d, nn.Conv2d, nn.Conv3d), "fc": (nn.Linear,), "linear": (nn.Linear,)}


@dataclasses.dataclass(frozen=True, kw_only=True)
class DeepCompress(Config):
    """Deep Compression: pruning -> trained weight sharing -> Huffman coding (.esz)."""

    kind = "deep_compress"
    final = True  # produces the deployable format (.esz), so it is a recipe's last step
    prune: float | dict = 0.9  # fraction of each layer's weights removed, in [0, 1); or {pattern: rate}
    bits: int | dict = dataclasses.field(default_factory=lambda: {"conv": 8, "fc": 5})  # codebook = 2**bits
    index_bits: int | dict = 5  # relative-index width before Huffman coding
    prune_epochs: float = 1.0  # retraining after pruning (split over prune_steps rounds)
    prune_steps: int = 1  # iterative pruning: reach the rate in this many prune+retrain rounds
    finetune_epochs: float = 1.0  # centroid fine-tuning after weight sharing
    init: str = "linear"  # centroid initialisation: linear | density | random
    kmeans_iters: int = 30
    lr: float | None = None  # retraining learning rate (SGD; default 0.05: short retraining recovers faster)
    finetune_lr: float | None = None  # centroid learning rate (Adam; default 1e-4)
    max_batches: int | None = None  # cap training batches per epoch (quick runs)
    include: tuple[str, ...] = ()  # layer regexes to compress (default: every Conv/Linear)
    exclude: tuple[str, ...] = ()

    def validate(self) -> None:
        for name, v in _items(self.prune):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < 1 or math.isnan(v):
                raise UsageError(f"prune rate must be in [0, 1), got {v!r}" + (f" for {name!r}" if name else ""),
                                 hint="0.9 removes 90% of the weights of each layer; 1.0 would remove all")
        for field in ("bits", "index_bits"):
            for name, v in _items(getattr(self, field)):
                check_bits(v, f"{field}" + (f" for {name!r}" if name else ""))
        for field in ("prune_epochs", "finetune_epochs"):
            v = getattr(self, field)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise UsageError(f"{field} must be a number >= 0, got {v!r}")
        if isinstance(self.prune_steps, bool) or not isinstance(self.prune_steps, int) or self.prune_steps < 1:
            raise UsageError(f"prune_steps must be an integer >= 1, got {self.prune_steps!r}")
        if self.init not in INITS:
            raise UsageError(f"unknown centroid initialisation {self.init!r}", hint=f"one of: {', '.join(INITS)}")
        if not isinstance(self.kmeans_iters, int) or self.kmeans_iters < 1:
            raise UsageError(f"kmeans_iters must be a positive integer, got {self.kmeans_iters!r}")
        for field in ("lr", "finetune_lr"):
            v = getattr(self, field)
            if v is not None and (not isinstance(v, (int, float)) or v <= 0):
                raise UsageError(f"{field} must be positive, got {v!r}")
        if self.max_batches is not None and (not isinstance(self.max_batches, int) or self.max_batches < 1):
            raise UsageError(f"max_batches must be a positive integer, got {self.max_batches!r}")

    def __hash__(self) -> int:  # dict fields: hash their sorted items
        return hash(tuple((f.name, repr(_freeze(getattr(self, f.name)))) for f in dataclasses.fields(self)))


def _freeze(v: Any) -> Any:
    return tuple(sorted((k, _freeze(x)) for k, x in v.items())) if isinstance(v, dict) else v


def _items(v: Any) -> list[tuple[str, Any]]:
    return list(v.items()) if isinstance(v, Mapping) else [("", v)]


# -- per-layer settings ------------------------------------------------------------------

def per_layer(layers: list[tuple[str, nn.Module]], value: Any, default: Any = None) -> dict[str, Any]:
    """{layer name: value} from a scalar or a {pattern: value} map (first match wins)."""
    if not isinstance(value, Mapping):
        return {n: value for n, _ in layers}
    for key in value:
        if key in _GROUPS:
            continue
        try:
            re.compile(key)
        except re.error as e:
            raise UsageError(f"bad layer pattern {key!r}: {e}") from None
        if not any(re.fullmatch(key, n) for n, _ in layers):
            raise UsageError(f"layer pattern {key!r} matches no layer",
                             hint="layers: " + ", ".join(n for n, _ in layers[:10]))
    out = {}
    for n, m in layers:
        out[n] = default
        for key, v in value.items():
            if (key in _GROUPS and isinstance(m, _GROUPS[key])) or (key not in _GROUPS and re.fullmatch(key, n)):
                out[n] = v
                break
    return out


def _kept(numel: int, rate: float) -> int:
    return numel - int(round(rate * numel))


def plan(model: nn.Module, config: DeepCompress) -> list[dict[str, Any]]:
    """Per-layer plan (name, type, weights, prune, kept, bits, index_bits), checked up front so a
    bad setting fails before any training."""
    from ..core.select import select_layers

    layers = select_layers(model, types=LAYER_TYPES, include=config.include, exclude=config.exclude)
    if not layers:
        raise UsageError("no Conv/Linear layer to compress", hint="check --include / --exclude")
    rates = per_layer(layers, config.prune, 0.0)
    bits = per_layer(layers, config.bits, None)
    ibits = per_layer(layers, config.index_bits, 5)
    rows = []
    for n, m in layers:
        numel = m.weight.numel()
        kept = max(1, _kept(numel, rates[n]))
        b = bits[n]
        if b is not None and kept < (1 << b):
            raise UsageError(
                f"layer {n!r} keeps {kept} of {numel} weights, fewer than the {1 << b} centroids of {b} bits",
                hint=f"give it at most {max(1, int(math.log2(kept)))} bits with a per-layer entry "
                     f"(bits {{{n!r}: {max(1, int(math.log2(kept)))}, ...}}, CLI --bits {n}=N,conv=8,fc=5) "
                     "or prune it less")
        rows.append({"name": n, "type": type(m).__name__, "weights": numel, "prune": float(rates[n]),
                     "kept": kept, "bits": b, "index_bits": int(ibits[n])})
    return rows


# -- stage 1: pruning ----------------------------------------------------------------------

def magnitude_mask(weight: torch.Tensor, rate: float, old: torch.Tensor | None = None) -> torch.Tensor:
    """Keep the largest-magnitude (1 - rate) share of ``weight`` (and nothing ``old`` removed)."""
    w = weight.detach().abs()
    if old is not None:
        w = torch.where(old, w, torch.full_like(w, -1.0))
    flat = w.reshape(-1)
    keep = max(1, _kept(flat.numel(), rate))
    mask = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    mask[torch.topk(flat, keep, sorted=False).indices] = True
    return mask.reshape(weight.shape)


def _apply_masks(modules: dict[str, nn.Module], masks: dict[str, torch.Tensor]) -> None:
    with torch.no_grad():
        for n, mask in masks.items():
            m = modules[n]
            if shared_of(m) is None:
                m.weight.mul_(mask.to(m.weight.device, m.weight.dtype))


# -- training helpers ------------------------------------------------------------------------

def _loss(teacher: nn.Module | None):
    """Cross-entropy on labelled batches; distillation from the uncompressed model otherwise."""

    from ..distillation.losses import teacher_runner

    run_teacher = teacher_runner(teacher) if teacher is not None else None

    def loss_fn(out, y, x):
        if (y >= 0).all():
            return F.cross_entropy(out, y)
        t = run_teacher(x)
        return F.kl_div(F.log_softmax(out, 1), F.log_softmax(t, 1), reduction="batchmean", log_target=True)

    return loss_fn


def _accuracy(model: nn.Module, loader, max_batches=None) -> float | None:
    from ..train import task_score

    if loader is None:
        return None
    return task_score(model, loader, max_batches=max_batches)


# -- the handler -----------------------------------------------------------------------------

@register(DeepCompress)
def _apply(model: nn.Module, config: DeepCompress, ctx: Context) -> nn.Module:
    """Prune, share, fine-tune; the returned model holds the weight-shared float32 weights
    (exactly what the .esz decodes to). What happened goes into ctx.details."""
    from ..train import fit

    rows = plan(model, config)
    modules = dict(model.named_modules())
    data = ctx.data
    train = getattr(data, "train", None) if data is not None else None
    loader = None
    if data is not None:
        loader = getattr(data, "test", None) or getattr(data, "val", None)
    teacher = copy.deepcopy(model).eval() if train is not None else None
    if teacher is not None:
        for p in teacher.parameters():
            p.requires_grad_(False)
    cap = getattr(ctx, "max_eval_batches", None)
    stages: dict[str, Any] = {"baseline": {"accuracy": _accuracy(model, loader, cap)}}
    notes = ctx.details.setdefault("notes", [])
    if train is None:
        notes.append("no training data: pruning and weight sharing were applied without retraining")

    # 1. pruning, retrained with masks re-applied after each optimizer step
    masks: dict[str, torch.Tensor] = {}
    steps = config.prune_steps
    for s in range(1, steps + 1):
        for r in rows:
            rate = r["prune"] * s / steps if steps > 1 else r["prune"]
            if r["prune"] > 0:
                masks[r["name"]] = magnitude_mask(modules[r["name"]].weight, rate, masks.get(r["name"]))
        _apply_masks(modules, masks)
        if train is not None and config.prune_epochs > 0 and masks:
            fit(model, train, epochs=config.prune_epochs / steps, lr=config.lr or 0.05, optimizer="sgd",
                max_batches=config.max_batches, loss_fn=_loss(teacher), seed=ctx.seed + s, progress=ctx.progress,
                on_step=[lambda step, m: _apply_masks(modules, masks)])
            _apply_masks(modules, masks)
    stages["pruned"] = {"accuracy": _accuracy(model, loader, cap)}

    # 2. trained weight sharing: k-means codebooks, then centroid fine-tuning
    for r in rows:
        if r["bits"] is None:
            continue
        m = modules[r["name"]]
        mask = masks.get(r["name"], torch.ones_like(m.weight, dtype=torch.bool))
        share(m, r["bits"], mask=mask, init=config.init, iters=config.kmeans_iters, seed=ctx.seed, name=r["name"])
    stages["quantized"] = {"accuracy": _accuracy(model, loader, cap)}
    if train is not None and config.finetune_epochs > 0 and any(r["bits"] for r in rows):
        # centroids are trained with Adam: the pooled gradient of a centroid is a sum over
        # thousands of weights, whose scale plain SGD would have to be tuned to per layer
        fit(model, train, epochs=config.finetune_epochs, lr=config.finetune_lr or 1e-4, optimizer="adam",
            weight_decay=0.0, max_batches=config.max_batches, loss_fn=_loss(teacher), seed=ctx.seed + 100,
            progress=ctx.progress, on_step=[lambda step, m: _apply_masks(modules, masks)])
        stages["finetuned"] = {"accuracy": _accuracy(model, loader, cap)}
    bake(model)
    _apply_masks(modules, masks)
    model.eval()
    ctx.details["layers_plan"] = rows
    ctx.details["stages"] = stages
    ctx.details["split"] = "test" if data is not None and getattr(data, "test", None) is not None else "val"
    ctx.details["config"] = config.to_dict()
    return model


# -- the verb ---------------------------------------------------------------------------------

def _bytes(bits: int) -> int:
    return (int(bits) + 7) // 8


def size_table(model: nn.Module, rows: list[dict], stats: dict[str, dict], baseline_state: dict) -> tuple[list, dict]:
    """The paper's per-layer table and the size after each stage (bytes).

    pruning: kept weights in fp32 plus relative indices (fixed width, fillers included);
    quantization: fixed-width codebook indices + relative indices + fp32 codebook;
    Huffman: the coded streams, their tables and the codebook, as stored in the .esz.
    Tensors left in float (biases, BN, unshared layers) count their raw bytes in every stage.
    """
    by_name = {r["name"]: r for r in rows}
    table = []
    totals = {"fp32": 0, "pruning": 0, "quantization": 0, "huffman": 0}
    for key, t in model.state_dict().items():
        layer = key[: -len(".weight")] if key.endswith(".weight") else None
        r = by_name.get(layer) if layer is not None else None
        raw = t.numel() * t.element_size()
        fp32 = baseline_state[key].numel() * baseline_state[key].element_size() if key in baseline_state else raw
        st = stats.get(key, {})
        if r is None or r["bits"] is None or "value_bytes" not in st:
            for k, v in (("fp32", fp32), ("pruning", raw), ("quantization", raw), ("huffman", raw)):
                totals[k] += v
            continue
        numel, kept, entries, ib, b = t.numel(), st["kept"], st["entries"], r["index_bits"], r["bits"]
        dense = kept == numel
        pruned = numel * 4 if dense else _bytes(entries * (32 + ib))
        quant = _bytes(kept * b + (0 if dense else entries * ib)) + 4 * (1 << b)
        huff = (st["codebook_bytes"] + st["value_table_bytes"] + st["value_bytes"]
                + st["index_table_bytes"] + st["index_bytes"])
        for k, v in (("fp32", fp32), ("pruning", pruned), ("quantization", quant), ("huffman", huff)):
            totals[k] += v
        table.append({
            "layer": layer, "type": r["type"], "weights": numel, "kept": kept,
            "kept_pct": round(100.0 * kept / numel, 2), "bits": b, "index_bits": ib if not dense else None,
            "fillers": st["fillers"],
            # fixed-width index bits spent per kept weight, fillers included (P+Q in the paper's tables)
            "index_bits_per_weight": round(ib * entries / max(kept, 1), 2) if not dense else None, "codebook_used": st["codebook_bytes"] // 4,
            "huffman_weight_bits": round(st["value_bits"] / max(kept, 1), 2),
            "huffman_index_bits": round(st["index_bits_total"] / max(kept, 1), 2) if not dense else None,
            "fp32_bytes": fp32, "pruned_bytes": pruned, "quantized_bytes": quant, "huffman_bytes": huff,
            "ratio": round(fp32 / max(huff, 1), 2),
        })
    return table, totals


def state_bytes(model: nn.Module) -> int:
    """Bytes of every tensor of the model's state (fp32 weights of an uncompressed model)."""
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


@dataclasses.dataclass(frozen=True, kw_only=True)
class DeepCompressRun:
    """What ``deep_compress`` is told besides the model and the config (its keyword arguments).

    spec / build: the architecture, so the .esz (and DIR/checkpoint) rebuild the module. input_shape:
    (C, H, W), default the data's. classes / metrics: for the sidecar. model_name / data_name: what
    the report calls them. max_eval_batches caps the accuracy checks; threads / runs / warmup: the
    latency measurement of an out DIR."""

    spec: str | None = None
    build: dict | None = None
    input_shape: tuple | None = None
    classes: list | None = None
    metrics: dict | None = None
    seed: int = 0
    progress: bool = True
    model_name: str | None = None
    data_name: str | None = None
    max_eval_batches: int | None = None
    threads: int = 2
    runs: int = 20
    warmup: int = 5

    def output_options(self) -> OutputOptions:
        return OutputOptions(command="deepcompress", threads=self.threads, runs=self.runs, warmup=self.warmup,
                             max_batches=self.max_eval_batches)


def deep_compress(model: nn.Module, config: DeepCompress | None = None, *, data: Any = None, out=None,
                  inplace: bool = False, ctx: Context | None = None, options: DeepCompressRun | None = None, **kw):
    """Deep-Compress ``model`` -> (weight-shared model, Report).

    The returned model holds exactly the float32 weights the .esz decodes to. ``options`` (or its
    fields as keyword arguments: spec, build, input_shape, classes, metrics, seed, progress, model_name,
    data_name, max_eval_batches, threads, runs, warmup) say how to name and rebuild it; ``out`` writes
    DIR/model.esz, DIR/model.onnx (dense), DIR/checkpoint (with a spec) and DIR/report.json|md.
    """
    run = _run_options(options, kw)
    config = _checked(model, config)
    ctx = ctx or Context(data=data, seed=run.seed, progress=run.progress)
    ctx.max_eval_batches = run.max_eval_batches  # read by the handler's accuracy checks
    if data is not None:
        ctx.data = data
    meta = getattr(data, "meta", None)
    run = dataclasses.replace(run, input_shape=run.input_shape if run.input_shape is not None else (
        tuple(meta.input_shape) if meta is not None else None), classes=run.classes if run.classes is not None else (
        list(meta.classes) if meta is not None and meta.labelled else None),
        data_name=run.data_name or getattr(meta, "name", None))
    base_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    original = copy.deepcopy(model) if inplace and out is not None else model  # the baseline DIR measures
    result = _apply((model if inplace else copy.deepcopy(model)).cpu(), config, ctx)
    side = _sidecar(result, ctx.details["stages"], config, run)
    blob, stats, decoded = _encode(result, ctx.details["layers_plan"], side, run.spec)
    _, loader = eval_split(data)
    ctx.details["stages"]["huffman"] = {"accuracy": _accuracy(decoded, loader, run.max_eval_batches)}
    details = _esz_details(ctx.details, result, blob, stats, base_state)
    report = _esz_report(model, result, details, sum(t.numel() * t.element_size() for t in base_state.values()),
                         len(blob), run)
    # the exact bytes and sidecar, so write_esz (and the CLI) write what was measured
    result.edgeslim_esz = {"blob": blob, "sidecar": side}
    if out is not None:
        from ..core.outdir import OutDir

        with OutDir(out) as stage:  # the whole DIR at once
            report = write_esz(stage, original, result, report, data=data, input_shape=run.input_shape,
                               options=run.output_options())
    return result, report


def _run_options(options: DeepCompressRun | None, kw: dict) -> DeepCompressRun:
    if options is not None and kw:
        raise UsageError(f"deep_compress takes options= or its fields as keywords, not both (got {sorted(kw)})")
    try:
        return options if options is not None else DeepCompressRun(**kw)
    except TypeError as e:
        raise TypeError(f"deep_compress(): {e}") from None


def _checked(model, config) -> DeepCompress:
    if not isinstance(model, nn.Module):
        raise UsageError(f"deep_compress expects a torch.nn.Module, got {type(model).__name__}")
    config = config or DeepCompress()
    if not isinstance(config, DeepCompress):
        raise UsageError(f"deep_compress takes a DeepCompress config, got {type(config).__name__}")
    return config


def _sidecar(result: nn.Module, stages: dict, config: DeepCompress, run: DeepCompressRun) -> dict | None:
    """The architecture record the .esz (and the checkpoint) carry; None without a spec."""
    if run.spec is None:
        return None
    from .esz import sidecar

    acc = stages.get("finetuned", stages["quantized"])["accuracy"]  # == the decoded model's (bit-exact)
    return sidecar(result, spec=run.spec, build=run.build, input_shape=run.input_shape, classes=run.classes,
                   metrics={"test_top1": acc, "baseline_top1": stages["baseline"]["accuracy"], "data": run.data_name,
                            **(run.metrics or {})},
                   extra={"deep_compress": config.to_dict()})


def _encode(result: nn.Module, rows: list[dict], side: dict | None, spec: str | None):
    """(.esz bytes, per-tensor coding stats, the model decoded from those bytes), checked bit-exact."""
    from .esz import build_model, encode_model

    coded = {r["name"]: r["index_bits"] for r in rows if r["bits"] is not None}
    blob, stats = encode_model(result, coded, side=side)
    decoded_state = container.decode(blob).state_dict
    exact = all(torch.equal(decoded_state[k], v.detach().cpu()) for k, v in result.state_dict().items())
    if not exact:  # pragma: no cover - would be a codec bug
        raise container.EszError("internal error: the .esz does not decode to the compressed weights")
    if side is not None:
        return blob, stats, build_model(side, decoded_state, "the encoded model", spec=spec)
    decoded = copy.deepcopy(result)
    decoded.load_state_dict(decoded_state)
    return blob, stats, decoded


def _esz_details(details: dict, result: nn.Module, blob: bytes, stats: dict, base_state: dict) -> dict:
    """The handler's details plus the paper's per-layer table, the size and accuracy after each stage."""
    stages = details["stages"]
    table, totals = size_table(result, details.pop("layers_plan"), stats, base_state)
    fp32 = sum(t.numel() * t.element_size() for t in base_state.values())
    acc_q = stages.get("finetuned", stages["quantized"])["accuracy"]
    stage_list = [{"stage": "fp32", "size_bytes": fp32, "ratio": 1.0, "accuracy": stages["baseline"]["accuracy"]}]
    for name, size, acc in (("pruning", totals["pruning"], stages["pruned"]["accuracy"]),
                            ("quantization", totals["quantization"], acc_q),
                            ("huffman", totals["huffman"], stages["huffman"]["accuracy"]),
                            ("esz file", len(blob), stages["huffman"]["accuracy"])):
        stage_list.append({"stage": name, "size_bytes": size, "ratio": fp32 / size, "accuracy": acc})
    stage_list[2]["accuracy_before_finetune"] = stages["quantized"]["accuracy"]
    details.update({
        "layers": table, "stages": stage_list, "esz_bytes": len(blob), "fp32_bytes": fp32,
        "weights_kept": sum(t["kept"] for t in table), "weights_total": sum(t["weights"] for t in table),
        "decoded_bit_exact": True, "decoded_accuracy": stages["huffman"]["accuracy"], "accuracy_after_stage": {
            s["stage"]: s["accuracy"] for s in stage_list if s["stage"] != "esz file"},
    })
    notes = details.setdefault("notes", [])
    for s in stage_list[1:]:
        acc = "–" if s["accuracy"] is None else f"{s['accuracy']:.2f}%"
        notes.append(f"{s['stage']}: {s['size_bytes']:,} bytes, {s['ratio']:.1f}x smaller than fp32, top-1 {acc}")
    return details


def _esz_report(model: nn.Module, result: nn.Module, details: dict, fp32_bytes: int, esz_bytes: int,
                run: DeepCompressRun):
    """The Report of the storage figures (no latency: an out DIR measures it, see write_esz)."""
    from ..core.report import Report, figures
    from ..measure import count_macs, count_params

    stages = details["stages"]
    shape = (1, *run.input_shape) if run.input_shape is not None else None
    common = dict(input_shape=list(shape) if shape else None, batch=1 if shape else None)
    base_fig = figures(params=count_params(model), size_bytes=fp32_bytes, accuracy=stages[0]["accuracy"],
                       artifact="fp32 weights", **common)
    res_fig = figures(params=count_params(result), size_bytes=esz_bytes, accuracy=stages[-1]["accuracy"],
                      artifact="model.esz", **common)
    if shape is not None:
        try:
            base_fig["macs"] = count_macs(model, shape)[0]
            res_fig["macs"] = count_macs(result, shape)[0]
        except Exception:  # MAC counting is informative only; it must not fail the compression
            pass
    return Report(command="deepcompress", model=run.model_name or run.spec, data=run.data_name,
                  baseline=base_fig, result=res_fig, details=details)


LATENCY_NOTE = ("latency of the dense decoded model (model.onnx) vs the fp32 baseline in ONNX Runtime: "
                "Deep Compression shrinks storage, not compute")


def write_esz(stage, original: nn.Module, result: nn.Module, report, *, data: Any, input_shape, options):
    """DIR/model.esz, DIR/model.onnx (the dense decoded model), DIR/checkpoint (when the sidecar names
    the spec) and DIR/report.* through the one writer (output.write_result) into ``stage`` (an OutDir's
    staging directory); returns the written Report. ``report``: deep_compress's, whose storage figures
    (fp32 bytes vs the .esz, accuracy of the decoded model) the written one keeps beside the latencies
    measured side by side; ``options``: the OutputOptions to measure with (threads, runs, warmup)."""
    if input_shape is None:
        raise UsageError("the input shape is unknown: DIR/model.onnx and its latency need it",
                         hint="pass input_shape=(C, H, W) or data=... (CLI: --input-shape N,C,H,W)")
    esz = result.edgeslim_esz
    side = esz["sidecar"] or {}
    opts = dataclasses.replace(options, command="deepcompress", model_name=report.model, data_name=report.data,
                               spec=side.get("spec"), build=side.get("build"), classes=side.get("classes"),
                               metrics=side.get("metrics"), extra=side.get("extra"), keep_baseline=False)

    def storage_figures(written) -> None:
        written.details["onnx"] = {**written.details.pop("export", {}), "accuracy": written.result["accuracy"]}
        for mine, fig in ((report.baseline, written.baseline), (report.result, written.result)):
            fig.update(size_bytes=mine["size_bytes"], accuracy=mine["accuracy"], artifact=mine["artifact"])
        written.result["size_bytes"] = (Path(stage) / "model.esz").stat().st_size
        written.details["latency_note"] = LATENCY_NOTE

    steps = [{"step": 1, "type": DeepCompress.kind}]
    return write_result(stage, original, Compressed(result, result, False, [], steps), opts, data=data,
                        input_shape=input_shape, extra_details=report.details, extras={"model.esz": esz["blob"]},
                        finish=storage_figures)
