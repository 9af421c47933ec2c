"""The policy space of ``edgeslim auto``: what a trial may choose, as a YAML-expressible config.

    block_ratio: [0.0, 0.125, 0.25, ..., 1.0]       # fraction of residual blocks removed (depth)
    prune_ratio: [0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]   # fraction of channels removed
    allocation: [uniform, sensitivity]        # one ratio for every group, or per-group ratios
                                              # from a sensitivity scan at the same MACs
    round_to: 8                               # pruned channel counts are multiples of 8
    bits: [float, 8, 4]                       # format of the artifact: fp32, int8, or 4-bit weights
                                              # (AdaRound; packed INT4 in the file) with int8 activations
    layer_bits: first_last                    # none | first_last | all: layers that get their own
                                              # choice among the same formats (mixed precision)
    lowrank: [false, true]                    # Tucker-2 on the convolutions (kept only where faster)
    lowrank_energy: [0.9, 0.95, 0.98]         # its ranks: the fraction of each layer's energy kept
    head_ratio: [0.0, 0.34, 0.5]              # vision transformers (fused-qkv attention): fraction of
                                              # each attention layer's heads removed
    mlp_ratio: [0.0, 0.25, 0.5]               # ... and of each MLP's hidden units
    tokens_merged: [0, 8, 16, 24, 32]         # token merging (ToMe) over all blocks, where blocks take it
    distill: [false, true]                    # fine-tune with KD from the input model, or plain CE
    finetune_epochs: [0, 1, 2, 4]             # epochs of at most finetune_batches batches
    finetune_batches: 40
    finetune_lr: 0.05                         # cosine decay to 0 (SGD: the training loop's default rate)
    finetune_optimizer: sgd                   # sgd | adam (detectors and segmenters trained with Adam
                                              # fine-tune better with adam and about 0.001)
    distill_alpha: 0.5                        # weight of the teacher's soft targets; the rest is the labels'
    fold_bn: true                             # fixed pass (BN folding) on float results

A trial's choices (``params``) become a recipe (``steps``) that ``edgeslim compress`` replays.
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

from ..core.config import Config
from ..core.errors import UsageError

LAYER_BITS = ("none", "first_last", "all")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SearchSpace(Config):
    kind = "search_space"
    # fraction of the removable residual blocks removed, least loss increase first (eighths: every
    # count from 1 to 7 blocks is reachable when a model has 7)
    block_ratio: tuple[float, ...] = (0.0, 0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875, 1.0)
    prune_ratio: tuple[float, ...] = (0.0, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
    allocation: tuple[str, ...] = ("uniform", "sensitivity")
    importance: str = "l1"
    round_to: int = 8  # pruned channel counts are multiples of this (ONNX Runtime's kernels prefer it)
    bits: tuple[Any, ...] = ("float", 8, 4)
    layer_bits: str = "first_last"
    calibration: str = "minmax"
    adaround_iters: int = 300  # per layer, where any layer has 4-bit weights
    lowrank: tuple[bool, ...] = (False, True)
    lowrank_energy: tuple[float, ...] = (0.9, 0.95, 0.98)  # kept energy: sets each layer's Tucker ranks
    head_ratio: tuple[float, ...] = (0.0, 0.34, 0.5)  # asked only of models with fused-qkv attention
    mlp_ratio: tuple[float, ...] = (0.0, 0.25, 0.5)
    tokens_merged: tuple[int, ...] = (0, 8, 16, 24, 32)  # asked only of models whose blocks merge tokens
    distill: tuple[bool, ...] = (False, True)
    finetune_epochs: tuple[float, ...] = (0, 1, 2, 4)
    finetune_batches: int | None = 40
    finetune_lr: float = 0.05
    finetune_optimizer: str = "sgd"
    distill_alpha: float = 0.5  # KD: weight of the soft targets; 1 - alpha goes to the labels
    fold_bn: bool = True

    def validate(self) -> None:
        for name in ("block_ratio", "prune_ratio", "allocation", "bits", "lowrank", "distill", "finetune_epochs",
                     "head_ratio", "mlp_ratio", "tokens_merged"):
            v = getattr(self, name)
            if not isinstance(v, tuple) or not v:
                raise UsageError(f"space.{name} must be a non-empty list of choices, got {v!r}")
        for r in self.prune_ratio:
            if not isinstance(r, (int, float)) or not 0 <= r < 1:
                raise UsageError(f"space.prune_ratio choices must be in [0, 1), got {r!r}")
        for name in ("head_ratio", "mlp_ratio"):
            for r in getattr(self, name):
                if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 <= r < 1:
                    raise UsageError(f"space.{name} choices must be in [0, 1), got {r!r}")
        for t in self.tokens_merged:
            if isinstance(t, bool) or not isinstance(t, int) or t < 0:
                raise UsageError(f"space.tokens_merged choices must be integers >= 0, got {t!r}")
        for r in self.block_ratio:
            if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 <= r <= 1:
                raise UsageError(f"space.block_ratio choices must be in [0, 1], got {r!r}",
                                 hint="the fraction of the removable residual blocks removed: 0.5 removes half")
        for a in self.allocation:
            if a not in ("uniform", "sensitivity"):
                raise UsageError(f"unknown allocation {a!r}", hint="use uniform and/or sensitivity")
        for b in self.bits:
            if b not in ("float", 8, 4):
                raise UsageError(f"space.bits choices are 'float', 8 and 4, got {b!r}",
                                 hint="4 means 4-bit weights with 8-bit activations (W4A8)")
        if not isinstance(self.adaround_iters, int) or self.adaround_iters < 0:
            raise UsageError(f"space.adaround_iters must be an integer >= 0, got {self.adaround_iters!r}")
        if self.layer_bits not in LAYER_BITS:
            raise UsageError(f"unknown layer_bits {self.layer_bits!r}", hint=f"one of: {', '.join(LAYER_BITS)}")
        for e in self.finetune_epochs:
            if not isinstance(e, (int, float)) or e < 0:
                raise UsageError(f"space.finetune_epochs choices must be >= 0, got {e!r}")
        if self.finetune_batches is not None and (not isinstance(self.finetune_batches, int) or self.finetune_batches < 1):
            raise UsageError(f"space.finetune_batches must be a positive integer or null, got {self.finetune_batches!r}")
        if isinstance(self.finetune_lr, bool) or not isinstance(self.finetune_lr, (int, float)) or not self.finetune_lr > 0:
            raise UsageError(f"space.finetune_lr must be a number > 0, got {self.finetune_lr!r}")
        if self.finetune_optimizer not in ("sgd", "adam"):
            raise UsageError(f"space.finetune_optimizer must be sgd or adam, got {self.finetune_optimizer!r}")
        if isinstance(self.distill_alpha, bool) or not isinstance(self.distill_alpha, (int, float)) \
                or not 0 <= self.distill_alpha <= 1:
            raise UsageError(f"space.distill_alpha must be in [0, 1], got {self.distill_alpha!r}",
                             hint="the weight of the teacher's soft targets; 1 - alpha goes to the labels")
        if not isinstance(self.round_to, int) or isinstance(self.round_to, bool) or self.round_to < 1:
            raise UsageError(f"space.round_to must be a positive integer, got {self.round_to!r}")
        if not isinstance(self.lowrank_energy, tuple) or not self.lowrank_energy:
            raise UsageError(f"space.lowrank_energy must be a non-empty list of choices, got {self.lowrank_energy!r}")
        for e in self.lowrank_energy:
            if isinstance(e, bool) or not isinstance(e, (int, float)) or not 0 < e <= 1:
                raise UsageError(f"space.lowrank_energy choices must be in (0, 1], got {e!r}",
                                 hint="the fraction of each layer's energy the Tucker ranks keep, e.g. 0.95")


def load_space(source: Any = None) -> SearchSpace:
    """The default space, or one from a YAML file / dict (keys not given keep their default)."""
    import yaml
    from pathlib import Path

    if source is None:
        return SearchSpace()
    if isinstance(source, SearchSpace):
        return source
    if isinstance(source, (str, Path)):
        p = Path(source)
        if not p.is_file():
            raise UsageError(f"space file {str(p)!r} not found")
        source = yaml.safe_load(p.read_text()) or {}
    if not isinstance(source, dict):
        raise UsageError("a search space is a mapping of option -> choices")
    source = {k: v for k, v in source.items() if k != "type"}
    for k, v in list(source.items()):  # a scalar where a list is expected means "fixed"
        f = {f.name: f for f in dataclasses.fields(SearchSpace)}.get(k)
        if f is not None and "tuple" in str(f.type) and not isinstance(v, (list, tuple)):
            source[k] = [v]
    return SearchSpace.from_dict(source)


# -- a trial's choices ---------------------------------------------------------------------------------
def quant_layer_names(model) -> list[str]:
    from torch import nn

    return [n for n, m in model.named_modules() if type(m) in (nn.Conv2d, nn.Linear)]


def bit_layers(space: SearchSpace, model) -> list[str]:
    names = quant_layer_names(model)
    if space.layer_bits == "none" or not names:
        return []
    if space.layer_bits == "first_last":
        return [names[0], names[-1]] if len(names) > 1 else names
    return names


def _param_name(layer: str) -> str:
    return f"bits:{layer}"


def suggest(trial, space: SearchSpace, model) -> dict[str, Any]:
    """Ask an Optuna trial for one policy (only the choices that matter are asked)."""
    p: dict[str, Any] = {}
    if len(space.block_ratio) > 1:
        p["block_ratio"] = trial.suggest_categorical("block_ratio", list(space.block_ratio))
    p["prune_ratio"] = trial.suggest_categorical("prune_ratio", list(space.prune_ratio))
    if p["prune_ratio"] > 0 and len(space.allocation) > 1:
        p["allocation"] = trial.suggest_categorical("allocation", list(space.allocation))
    _suggest_transformer(trial, space, model, p)
    formats = [str(b) for b in space.bits]
    p["bits"] = trial.suggest_categorical("bits", formats)
    if p["bits"] != "float" and len(formats) > 1:
        for layer in bit_layers(space, model):  # a per-layer override among the same formats
            p[_param_name(layer)] = trial.suggest_categorical(_param_name(layer), formats)
    if len(space.lowrank) > 1:
        p["lowrank"] = trial.suggest_categorical("lowrank", list(space.lowrank))
    if p.get("lowrank", space.lowrank[0]) and len(space.lowrank_energy) > 1:
        p["lowrank_energy"] = trial.suggest_categorical("lowrank_energy", list(space.lowrank_energy))
    p["finetune_epochs"] = trial.suggest_categorical("finetune_epochs", list(space.finetune_epochs))
    if p["finetune_epochs"] > 0 and len(space.distill) > 1:
        p["distill"] = trial.suggest_categorical("distill", list(space.distill))
    return p


def _suggest_transformer(trial, space: SearchSpace, model, p: dict) -> None:
    """Head, MLP and token-merging choices, asked only of models that have them (a single choice is
    recorded without asking; models without them get none: ``full_policy`` fills 0)."""
    from ..graph.attention import attention_modules
    from ..pruning.tokens import merging_blocks

    names = (["head_ratio", "mlp_ratio"] if attention_modules(model) else []) + \
        (["tokens_merged"] if merging_blocks(model) else [])
    for name in names:
        choices = list(getattr(space, name))
        p[name] = trial.suggest_categorical(name, choices) if len(choices) > 1 else choices[0]


def full_policy(params: dict, space: SearchSpace) -> dict:
    """Fill the choices a trial did not have to ask (fixed by the space or irrelevant)."""
    p = dict(params)
    p.setdefault("block_ratio", space.block_ratio[0])
    p.setdefault("allocation", space.allocation[0])
    p["bits"] = str(p.get("bits", space.bits[0]))
    p.setdefault("lowrank", space.lowrank[0])
    p.setdefault("lowrank_energy", space.lowrank_energy[0])  # asked whenever it matters and has choices
    p.setdefault("distill", space.distill[0])
    for name in ("head_ratio", "mlp_ratio", "tokens_merged"):
        p.setdefault(name, 0)  # a model without attention / merging blocks
    return p


def blocks_removed(ratio: float, order: list[str] | None) -> list[str]:
    """The blocks a block ratio removes: the first round(ratio * n) of the removal order."""
    if not order or ratio <= 0:
        return []
    return list(order[:math.floor(ratio * len(order) + 0.5)])


def describe(params: dict, space: SearchSpace, block_order: list[str] | None = None) -> str:
    p = full_policy(params, space)
    parts = []
    if p["block_ratio"] > 0:
        n = len(blocks_removed(p["block_ratio"], block_order))
        parts.append(f"drop {n}/{len(block_order)} blocks" if block_order else f"drop blocks {p['block_ratio']:.2f}")
    if p["head_ratio"] > 0 or p["mlp_ratio"] > 0:
        parts.append(f"heads {p['head_ratio']:g} mlp {p['mlp_ratio']:g}")
    if p["prune_ratio"] > 0:
        parts.append(f"prune {p['prune_ratio']:.2f} ({p['allocation']})")
    if p["tokens_merged"] > 0:
        parts.append(f"tome {p['tokens_merged']}")
    if p.get("lowrank"):
        parts.append(f"tucker {float(p['lowrank_energy']):g}")
    if p["finetune_epochs"] > 0:
        parts.append(f"{'kd' if p['distill'] else 'ft'} {p['finetune_epochs']:g}ep")
    if p["bits"] == "float":
        parts.append("fp32")
    else:
        other = {}
        for k, v in p.items():
            if k.startswith("bits:") and v != p["bits"]:
                other.setdefault(FORMAT_NAMES[v], []).append(k[5:])
        parts.append(FORMAT_NAMES[p["bits"]] + "".join(f" ({f}: {', '.join(ls)})" for f, ls in other.items()))
    return " · ".join(parts)


FORMAT_NAMES = {"float": "float", "8": "int8", "4": "w4a8"}


def build_steps(params: dict, space: SearchSpace, *, layer_ratios: dict[str, float] | None = None,
                block_order: list[str] | None = None) -> list[Config]:
    """The recipe of a policy. ``layer_ratios`` (group root -> ratio) comes from the sensitivity
    allocation when the policy asks for it, ``block_order`` (removable residual blocks, least
    harmful first) from the depth scan; both are written out explicitly so the recipe replays
    without the scans."""
    from ..distillation import KD
    from ..lowrank import Tucker
    from ..pruning import BlockPrune, ChannelPrune, HeadPrune, TokenMerge
    from ..quantization import PTQ
    from ..reparameterization import Reparam
    from .recipe import Finetune

    p = full_policy(params, space)
    steps: list[Config] = []
    dropped: list[str] = []
    if p["block_ratio"] > 0:
        if block_order:
            dropped = blocks_removed(p["block_ratio"], block_order)
            if dropped:
                steps.append(BlockPrune(blocks=tuple(dropped)))
        else:
            steps.append(BlockPrune(ratio=float(p["block_ratio"])))
    if p["head_ratio"] > 0 or p["mlp_ratio"] > 0:
        steps.append(HeadPrune(heads=float(p["head_ratio"]), mlp=float(p["mlp_ratio"]), importance=space.importance))
    if p["prune_ratio"] > 0:
        # groups rooted in a removed block are gone: their ratios would match nothing
        kept = {k: v for k, v in (layer_ratios or {}).items() if not any(k.startswith(b + ".") for b in dropped)}
        if p["allocation"] == "sensitivity" and kept:
            pairs = tuple((re.escape(k), round(float(v), 4)) for k, v in sorted(kept.items()))
            steps.append(ChannelPrune(ratio=0.0, importance=space.importance, layer_ratios=pairs,
                                      round_to=space.round_to))
        else:
            steps.append(ChannelPrune(ratio=float(p["prune_ratio"]), importance=space.importance,
                                      round_to=space.round_to))
    if p["tokens_merged"] > 0:  # before fine-tuning, which then adapts to the merged tokens
        steps.append(TokenMerge(tokens=int(p["tokens_merged"])))
    if p.get("lowrank"):
        steps.append(Tucker(energy=float(p["lowrank_energy"]), check_latency=True, latency_runs=10, min_channels=16))
    if p["finetune_epochs"] > 0:
        if p["distill"]:
            steps.append(KD(epochs=float(p["finetune_epochs"]), lr=space.finetune_lr, alpha=float(space.distill_alpha),
                             max_batches=space.finetune_batches, optimizer=space.finetune_optimizer))
        else:
            steps.append(Finetune(epochs=float(p["finetune_epochs"]), lr=space.finetune_lr,
                                  max_batches=space.finetune_batches, optimizer=space.finetune_optimizer))
    if p["bits"] != "float":
        default = int(p["bits"])
        layer = {k[5:]: (None if v == "float" else int(v)) for k, v in sorted(p.items()) if k.startswith("bits:")}
        overrides = tuple((re.escape(k), b) for k, b in layer.items() if b != default)
        low = default < 8 or any(b is not None and b < 8 for b in layer.values())
        kw: dict[str, Any] = {"weight_bits": default} if default != 8 else {}
        if low and space.adaround_iters > 0:  # learned rounding: 4-bit weights lose ~1 point without it
            kw.update(adaround=True, adaround_iters=space.adaround_iters)
        steps.append(PTQ(bits=8, calibration=space.calibration, mixed_precision=overrides, **kw))
    elif space.fold_bn:
        steps.append(Reparam())
    return steps
