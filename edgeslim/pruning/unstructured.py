"""Mask-based pruning: fine-grained, vector, kernel and N:M sparsity.

    sparse = edgeslim.prune(model, SparsePrune(granularity="fine", ratio=0.9, finetune_epochs=2), data=data)

Masks are computed from an importance score, the masked weights are zeroed, and
fine-tuning re-applies the masks after every optimizer step (fit's ``on_step``), so
pruned weights stay zero. At the end the zeros are simply left in the dense weights:
the model is a plain nn.Module with no masks or parametrizations.

Granularities (of a weight of shape (out, in, kh, kw) for convs, (out, in) for Linear):
- ``fine``: single weights;
- ``vector``: one row of a kernel (kw weights at a fixed kernel row) - convs only;
- ``kernel``: a whole kh x kw kernel - convs only;
- ``nm``: N:M semi-structured - in every run of M consecutive input channels (for each
  output and kernel position) only N weights stay non-zero (2:4 as on sparse tensor cores).

Size honesty: dense runtimes (the ONNX file) store every zero, so the ONNX file does not
shrink. ``sparse_size`` encodes the pruned tensors for real (CSR, bitmap, or N:M values +
2-bit indices, whichever is smallest per tensor) and counts the bytes.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import re
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.config import Config
from ..core.errors import DataError, UsageError
from ..core.registry import Context, register
from ..core.select import select_layers
from .importance import calibration_batches, get_importance
from .schedule import SCHEDULES, AGPMasks, step_fractions
from .structured import finetune_options

GRANULARITIES = ("fine", "vector", "kernel", "nm")
_CONV = nn.modules.conv._ConvNd


@dataclasses.dataclass(frozen=True, kw_only=True)
class SparsePrune(Config):
    kind = "sparse_prune"
    granularity: str = "fine"
    ratio: float = 0.5  # fraction of weights (fine) / vectors / kernels zeroed; N:M sets its own
    nm: str = "2:4"
    importance: str = "l1"  # l1 | l2 | taylor | random
    global_ranking: bool = False
    exclude: tuple[str, ...] = ()
    exclude_types: tuple[str, ...] = ()
    schedule: str = "oneshot"
    steps: int = 3
    finetune_epochs: float = 0.0
    lr: float | None = None
    max_batches: int | None = None  # cap fine-tuning batches per epoch (quick runs)
    calibration_batches: int = 4
    distill: bool = False  # fine-tune with a KD loss from the unpruned model

    def validate(self) -> None:
        if self.granularity not in GRANULARITIES:
            raise UsageError(f"unknown granularity {self.granularity!r}",
                             hint=f"one of: {', '.join(GRANULARITIES)} (channel pruning is ChannelPrune)")
        if not isinstance(self.ratio, (int, float)) or isinstance(self.ratio, bool) or not 0 <= self.ratio < 1:
            raise UsageError(f"ratio must be in [0, 1), got {self.ratio!r}", hint="0.9 zeroes 90% of the weights")
        n, m = parse_nm(self.nm)
        if self.importance not in ("l1", "l2", "taylor", "random"):
            raise UsageError(f"importance {self.importance!r} does not score single weights",
                             hint="use l1, l2, taylor or random for fine/vector/kernel/nm pruning")
        if self.schedule not in SCHEDULES:
            raise UsageError(f"unknown schedule {self.schedule!r}", hint=f"one of: {', '.join(SCHEDULES)}")
        if self.steps < 1 or self.finetune_epochs < 0:
            raise UsageError("steps must be >= 1 and finetune_epochs >= 0")

    def untrained(self) -> "SparsePrune":
        return self.replace(finetune_epochs=0.0)

    # split_training stays the default (self, None): the fine-tuning of masked weights re-applies
    # the masks after every optimizer step, which a separate finetune step would not do

    @property
    def target(self) -> float:
        if self.granularity == "nm":
            n, m = parse_nm(self.nm)
            return 1 - n / m
        return float(self.ratio)


def parse_nm(text: str) -> tuple[int, int]:
    mt = re.fullmatch(r"\s*(\d+)\s*:\s*(\d+)\s*", str(text))
    if not mt:
        raise UsageError(f"bad N:M pattern {text!r}", hint="write it as N:M, e.g. 2:4")
    n, m = int(mt.group(1)), int(mt.group(2))
    if not 0 < n < m:
        raise UsageError(f"N:M needs 0 < N < M, got {n}:{m}", hint="e.g. 2:4 keeps 2 of every 4 weights")
    return n, m


# -- masks --------------------------------------------------------------------------
def _block_scores(w_scores: torch.Tensor, module: nn.Module, granularity: str) -> torch.Tensor:
    """Scores per prunable unit, broadcastable back to the weight shape."""
    if granularity == "fine":
        return w_scores
    if granularity == "vector":
        return w_scores.sum(-1, keepdim=True)
    if granularity == "kernel":
        return w_scores.flatten(2).sum(-1).reshape(*w_scores.shape[:2], *([1] * (w_scores.dim() - 2)))
    raise ValueError(granularity)


def _threshold_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    k = int(math.floor(sparsity * scores.numel() + 0.5))
    if k <= 0:
        return torch.ones_like(scores, dtype=torch.bool)
    flat = scores.flatten()
    drop = torch.argsort(flat, stable=True)[:k]
    mask = torch.ones(flat.numel(), dtype=torch.bool)
    mask[drop] = False
    return mask.reshape(scores.shape)


def nm_mask(scores: torch.Tensor, n: int, m: int, name: str = "weight") -> torch.Tensor:
    """Keep the ``n`` best of every ``m`` consecutive input channels (per output, per kernel position)."""
    cin = scores.shape[1]
    if cin % m:
        raise UsageError(f"{m} does not divide the input size {cin} of layer {name!r} (N:M needs groups of {m})",
                         hint=f"exclude it: --exclude '{re.escape(name)}'")
    s = scores.movedim(1, -1)  # (..., in)
    g = s.reshape(*s.shape[:-1], cin // m, m)
    keep = torch.topk(g, n, dim=-1).indices
    mask = torch.zeros_like(g, dtype=torch.bool).scatter_(-1, keep, True)
    return mask.reshape(s.shape).movedim(-1, 1)


class MaskSet:
    """Masks for a set of layers, re-applied after every optimizer step."""

    def __init__(self, model: nn.Module, layers: list[tuple[str, nn.Module]], cfg: SparsePrune, crit):
        self.model, self.layers, self.cfg, self.crit = model, layers, cfg, crit
        self.masks: dict[str, torch.Tensor] = {}

    def update(self, sparsity: float) -> None:
        cfg = self.cfg
        if cfg.granularity == "nm":
            n, m = parse_nm(cfg.nm)
            for name, mod in self.layers:
                self.masks[name] = nm_mask(self.crit.weight_scores(name, mod), n, m, name)
            return
        blocks = {name: _block_scores(self.crit.weight_scores(name, mod), mod, cfg.granularity)
                  for name, mod in self.layers}
        if cfg.global_ranking:
            allv = torch.cat([b.flatten().float() for b in blocks.values()])
            k = int(math.floor(sparsity * allv.numel() + 0.5))
            thr = torch.kthvalue(allv, k).values if k > 0 else None
            for name, mod in self.layers:
                b = blocks[name]
                mask = torch.ones_like(b, dtype=torch.bool) if thr is None else b.float() > thr
                if not mask.any():  # never empty a whole layer
                    mask = _threshold_mask(b, min(sparsity, 1 - 1 / b.numel()))
                self.masks[name] = mask.expand_as(mod.weight).clone()
        else:
            for name, mod in self.layers:
                self.masks[name] = _threshold_mask(blocks[name], sparsity).expand_as(mod.weight).clone()

    @torch.no_grad()
    def reapply(self) -> None:
        for name, mod in self.layers:
            mask = self.masks.get(name)
            if mask is not None:
                mod.weight.mul_(mask.to(mod.weight.device, mod.weight.dtype))


def _select(model: nn.Module, cfg: SparsePrune) -> tuple[list[tuple[str, nn.Module]], list[str]]:
    layers = select_layers(model, types=(_CONV, nn.Linear), exclude=cfg.exclude)
    if cfg.exclude_types:
        layers = [(n, m) for n, m in layers
                  if type(m).__name__ not in cfg.exclude_types
                  and f"{type(m).__module__}.{type(m).__qualname__}" not in cfg.exclude_types]
    skipped = []
    if cfg.granularity in ("vector", "kernel"):
        skipped = [n for n, m in layers if not isinstance(m, _CONV)]
        layers = [(n, m) for n, m in layers if isinstance(m, _CONV)]
    if cfg.granularity == "nm":
        _, m_ = parse_nm(cfg.nm)
        bad = [(n, mod.weight.shape[1]) for n, mod in layers if mod.weight.shape[1] % m_]
        if bad:
            names = ", ".join(f"{n} (input size {c})" for n, c in bad[:4])
            rx = "|".join(re.escape(n) for n, _ in bad)
            raise UsageError(f"N:M {cfg.nm}: {m_} does not divide the input size of {len(bad)} layer(s): {names}",
                             hint=f"exclude them: --exclude '{rx}'")
    if not layers:
        raise UsageError(f"no layer to prune with granularity {cfg.granularity!r}",
                         hint="vector/kernel apply to conv layers only" if cfg.granularity in ("vector", "kernel") else
                         "exclude fewer layers")
    return layers, skipped


# -- size accounting ---------------------------------------------------------------------
def _csr_bytes(w: np.ndarray) -> int:
    rows = w.reshape(w.shape[0], -1)
    nz = rows != 0
    cols = rows.shape[1]
    idx_dtype = np.uint16 if cols <= 65536 else np.uint32
    values = rows[nz].astype(np.float32)
    col_idx = np.nonzero(nz)[1].astype(idx_dtype)
    row_ptr = np.concatenate([[0], np.cumsum(nz.sum(1))]).astype(np.uint32)
    return len(values.tobytes()) + len(col_idx.tobytes()) + len(row_ptr.tobytes())


def _bitmap_bytes(w: np.ndarray) -> int:
    flat = w.reshape(-1)
    bits = np.packbits(flat != 0)
    return len(bits.tobytes()) + len(flat[flat != 0].astype(np.float32).tobytes())


def _nm_bytes(w: np.ndarray, n: int, m: int) -> int | None:
    """Values of the kept weights + a 2-bit position per kept weight (log2 m bits, padded to 2)."""
    if w.ndim < 2 or w.shape[1] % m:
        return None
    s = np.moveaxis(w, 1, -1).reshape(-1, m)
    if ((s != 0).sum(1) > n).any():
        return None
    bits = max(2, math.ceil(math.log2(m)))
    pos = np.argsort(s == 0, axis=1, kind="stable")[:, :n]  # positions of the kept weights
    values = np.take_along_axis(s, pos, axis=1).astype(np.float32)
    idx_bits = np.unpackbits(pos.astype(np.uint8)[..., None], axis=-1)[..., -bits:]
    return len(values.tobytes()) + len(np.packbits(idx_bits.reshape(-1)).tobytes())


def sparse_size(model: nn.Module, layers: list[str] | None = None, *, nm: tuple[int, int] | None = None) -> dict[str, Any]:
    """Bytes of the model with the pruned layers stored sparse (real encodings), the rest dense fp32."""
    named = dict(model.named_modules())
    layers = layers if layers is not None else [n for n, m in named.items() if isinstance(m, (_CONV, nn.Linear))]
    sparse_params = {id(named[n].weight) for n in layers}
    dense_rest = 0
    seen = set()
    for p in list(model.parameters()) + list(model.buffers()):
        if id(p) in sparse_params or id(p) in seen:
            continue
        seen.add(id(p))
        dense_rest += p.numel() * p.element_size()
    per_layer = []
    total_sparse = 0
    dense_weights = 0
    for n in layers:
        w = named[n].weight.detach().cpu().float().numpy()
        enc = {"dense": w.size * 4, "csr": _csr_bytes(w), "bitmap": _bitmap_bytes(w)}
        if nm is not None:
            b = _nm_bytes(w, *nm)
            if b is not None:
                enc["nm"] = b
        best = min(enc, key=enc.get)
        total_sparse += enc[best]
        dense_weights += enc["dense"]
        per_layer.append({"layer": n, "nonzero": int((w != 0).sum()), "numel": int(w.size),
                          "sparsity": round(1 - float((w != 0).sum()) / w.size, 4), "encoding": best,
                          "bytes": enc[best], "dense_bytes": enc["dense"]})
    return {"sparse_bytes": total_sparse + dense_rest, "dense_bytes": dense_weights + dense_rest,
            "layers": per_layer}


# -- the handler --------------------------------------------------------------------------
def _agp(model: nn.Module, cfg: SparsePrune, ctx: Context, masks: MaskSet, crit, notes: list[str]) -> list:
    """AGP: the masks follow the cubic schedule step by step while the one trainer fine-tunes."""
    from ..train.finetune import finetune

    loader = ctx.data.train
    per_epoch = len(loader) if cfg.max_batches is None else min(len(loader), cfg.max_batches)
    total = max(1, math.ceil(per_epoch * cfg.finetune_epochs))
    sched = AGPMasks(masks.update, masks.reapply, final=cfg.target, total_steps=total)
    masks.update(sched.target(0))
    masks.reapply()

    def rescore(sparsity: float) -> None:
        if crit.needs_data:
            crit.prepare(model, calibration_batches(ctx.data, cfg.calibration_batches))
        masks.update(sparsity)

    sched.update = rescore
    finetune(model, ctx, finetune_options(cfg, cfg.finetune_epochs), on_step=[sched])
    masks.update(cfg.target)  # the schedule ends at the target; make sure of it
    masks.reapply()
    notes.append(f"AGP: {sched.n_events} pruning events every {sched.frequency} steps")
    return sched.trace


def _stepped(model: nn.Module, cfg: SparsePrune, ctx: Context, masks: MaskSet, crit, notes: list[str]) -> list:
    """One-shot or iterative: mask to a growing target, then fine-tune with the masks held."""
    from ..train.finetune import finetune

    if cfg.schedule == "agp":
        notes.append("AGP without fine-tuning (or for N:M) is one-shot")
    fractions = [1.0] if cfg.granularity == "nm" or cfg.schedule == "agp" else step_fractions(cfg.schedule, cfg.steps)
    epochs = cfg.finetune_epochs / len(fractions) if cfg.finetune_epochs else 0
    trace = []
    for i, f in enumerate(fractions):
        if i > 0 and crit.needs_data:
            crit.prepare(model, calibration_batches(ctx.data, cfg.calibration_batches))
        masks.update(cfg.target * f)
        masks.reapply()
        trace.append((i + 1, cfg.target * f))
        if epochs:
            finetune(model, ctx, finetune_options(cfg, epochs), on_step=[lambda s, m: masks.reapply()])
            masks.reapply()
    return trace


@register(SparsePrune)
def _apply(model: nn.Module, cfg: SparsePrune, ctx: Context) -> nn.Module:
    layers, skipped = _select(model, cfg)
    crit = get_importance(cfg.importance, seed=ctx.seed)
    batches = calibration_batches(ctx.data, cfg.calibration_batches) if crit.needs_data else []
    if crit.needs_data and not batches:
        raise DataError(f"importance {cfg.importance!r} needs calibration data", hint="pass data=... (--data D)")
    crit.prepare(model, batches)
    masks = MaskSet(model, layers, cfg, crit)
    notes: list[str] = []
    if cfg.finetune_epochs and ctx.data is None:
        raise DataError("fine-tuning needs training data", hint="pass data=... or set finetune_epochs=0")
    if cfg.finetune_epochs and cfg.distill and ctx.teacher is None:
        ctx.teacher = copy.deepcopy(model)
        notes.append("fine-tuned with distillation from the unpruned model")
    if cfg.schedule == "agp" and cfg.granularity != "nm" and cfg.finetune_epochs:
        trace = _agp(model, cfg, ctx, masks, crit, notes)
    else:
        trace = _stepped(model, cfg, ctx, masks, crit, notes)
    _record(model, cfg, ctx, layers, skipped, trace, notes)
    model.eval()
    return model


def _record(model: nn.Module, cfg: SparsePrune, ctx: Context, layers, skipped, trace, notes: list[str]) -> None:
    names = [n for n, _ in layers]
    size = sparse_size(model, names, nm=parse_nm(cfg.nm) if cfg.granularity == "nm" else None)
    nz = sum(r["nonzero"] for r in size["layers"])
    tot = sum(r["numel"] for r in size["layers"])
    if skipped:
        notes.append(f"{cfg.granularity} pruning applies to conv layers; left dense: {', '.join(skipped)}")
    notes.append("the ONNX file stays dense (zeros are stored); sparse_size_bytes counts a real sparse "
                 "encoding (CSR / bitmap / N:M, the smallest per tensor) of the pruned weights")
    ctx.details.update({
        "granularity": cfg.granularity,
        "nm": cfg.nm if cfg.granularity == "nm" else None,
        "importance": cfg.importance,
        "ranking": "global" if cfg.global_ranking else "per-layer",
        "schedule": cfg.schedule,
        "schedule_trace": trace[:50],
        "target_sparsity": cfg.target,
        "sparsity": 1 - nz / tot if tot else 0.0,
        "sparse_size_bytes": size["sparse_bytes"],
        "dense_size_bytes": size["dense_bytes"],
        "layers": size["layers"],
        "notes": ctx.details.get("notes", []) + notes,
    })
