"""Depth pruning: remove whole residual blocks (the block becomes its identity shortcut).

    shallow = edgeslim.prune(model, BlockPrune(ratio=0.5), data=data)
    same = edgeslim.prune(model, BlockPrune(blocks=("layer1.1", "layer3.2")))

A residual network computes ``x + f(x)`` in each block whose input and output shapes agree, and it
degrades gracefully when some ``f`` are dropped (Veit et al., 2016: residual networks behave like
ensembles of shallower ones). Channel pruning makes each layer thinner but keeps every node of the
graph; on small inputs a runtime's per-node cost dominates, so only fewer nodes make the model much
faster there. Removing a block removes its convolutions, its addition and its activation.

Removable blocks are found, not declared: a sub-module whose output has its input's shape and whose
traced graph (torch.fx) adds its input, directly or through an identity, to another value. Blocks are
chosen greedily: at each step the block whose removal raises the training loss least (on
``calibration_batches`` batches, with the blocks chosen so far already removed). The result is an
ordinary nn.Module with ``nn.Identity`` where the blocks were; it saves, loads and exports like the
original. Fine-tune (or distil) afterwards, here (``finetune_epochs``, ``distill``) or as a later
recipe step: the following layers' inputs changed. In a recipe, the step's own fine-tuning becomes
a ``finetune`` (or ``kd``) step of its own (``split_training``).
"""
from __future__ import annotations

import copy
import dataclasses
import math
import operator

import torch
from torch import nn

from ..core.config import Config
from ..core.errors import DataError, UsageError
from ..core.registry import Context, register
from .importance import calibration_batches
from .structured import example_input, finetune_options, split_finetune


@dataclasses.dataclass(frozen=True, kw_only=True)
class BlockPrune(Config):
    kind = "block_prune"
    ratio: float = 0.5  # fraction of the removable residual blocks removed (rounded to a count)
    blocks: tuple[str, ...] = ()  # explicit block names to remove (overrides ratio; no data needed)
    calibration_batches: int = 8  # training batches that rank the blocks
    bn_batches: int = 50  # with data: re-estimate BatchNorm statistics after the removal
    finetune_epochs: float = 0.0  # fine-tuning after the removal (the next layers' inputs changed)
    lr: float | None = None
    max_batches: int | None = None  # cap fine-tuning batches per epoch (quick runs)
    distill: bool = False  # fine-tune with a KD loss from the unpruned model

    def validate(self) -> None:
        object.__setattr__(self, "blocks", tuple(self.blocks))
        if isinstance(self.ratio, bool) or not isinstance(self.ratio, (int, float)) or not 0 <= self.ratio <= 1:
            raise UsageError(f"block_prune ratio must be in [0, 1], got {self.ratio!r}",
                             hint="the fraction of removable residual blocks to remove: 0.5 removes half")
        for b in self.blocks:
            if not isinstance(b, str) or not b:
                raise UsageError(f"block_prune blocks are module names, got {b!r}")
        if isinstance(self.finetune_epochs, bool) or not isinstance(self.finetune_epochs, (int, float)) \
                or self.finetune_epochs < 0:
            raise UsageError(f"block_prune finetune_epochs must be >= 0, got {self.finetune_epochs!r}")
        for name in ("calibration_batches", "bn_batches"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise UsageError(f"block_prune {name} must be an integer >= 0, got {v!r}")

    def untrained(self) -> "BlockPrune":
        return self.replace(bn_batches=0, finetune_epochs=0.0)

    def split_training(self):
        return split_finetune(self)


# -- which blocks can go ---------------------------------------------------------------------------
def _adds_its_input(module: nn.Module) -> bool:
    """Whether the traced forward of ``module`` adds its (single) input, or an identity of it, to a value."""
    import torch.fx as fx

    class OwnForward(fx.Tracer):  # sub-modules stay calls: the add must be in this module's own forward
        def is_leaf_module(self, m, qualname):
            return True

    try:
        graph = OwnForward().trace(module)
    except Exception:  # noqa: BLE001 - untraceable control flow: not a candidate
        return False
    inputs = [n for n in graph.nodes if n.op == "placeholder"]  # torch.fx's name for a graph input
    if len(inputs) != 1:
        return False
    same = {inputs[0]}
    for n in graph.nodes:  # identities of the input (nn.Identity, an empty Sequential) count as the input
        if n.op == "call_module" and n.args and n.args[0] in same:
            sub = module.get_submodule(str(n.target))
            if isinstance(sub, nn.Identity) or (isinstance(sub, nn.Sequential) and len(sub) == 0):
                same.add(n)
    adds = (operator.add, operator.iadd, torch.add)
    for n in graph.nodes:
        is_add = (n.op == "call_function" and n.target in adds) or (n.op == "call_method" and n.target in ("add", "add_"))
        if is_add and len(n.args) >= 2 and (n.args[0] in same) != (n.args[1] in same):
            return True
    return False


def residual_blocks(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Names of the sub-modules that can be replaced by the identity, in model order: same input and
    output shape, some parameters, and an identity shortcut in their own forward."""
    shapes: dict[str, tuple] = {}
    hooks = []
    for name, m in model.named_modules():
        if not name or not any(True for _ in m.parameters()):
            continue

        def hook(mod, args, out, name=name):
            if len(args) == 1 and isinstance(args[0], torch.Tensor) and isinstance(out, torch.Tensor):
                shapes.setdefault(name, (tuple(args[0].shape), tuple(out.shape)))

        hooks.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for h in hooks:
            h.remove()
    return [name for name, m in model.named_modules()
            if name in shapes and shapes[name][0] == shapes[name][1] and _adds_its_input(m)]


def remove_blocks(model: nn.Module, names) -> nn.Module:
    """Replace each named block of ``model`` by ``nn.Identity`` (in place); returns the model."""
    for name in names:
        parent, _, leaf = name.rpartition(".")
        try:
            holder = model.get_submodule(parent) if parent else model
            getattr(holder, leaf)
        except AttributeError:
            raise UsageError(f"block_prune: the model has no block {name!r}",
                             hint="list the candidates with edgeslim.pruning.depth.residual_blocks(model, example)") from None
        setattr(holder, leaf, nn.Identity())
    return model


@torch.no_grad()
def _loss(model: nn.Module, batches) -> float:
    total, n = 0.0, 0
    for x, y in batches:
        total += float(nn.functional.cross_entropy(model(x), y, reduction="sum"))
        n += int(y.numel())
    return total / max(1, n)


def removal_order(model: nn.Module, example: torch.Tensor, batches, *, count: int | None = None,
                  candidates: list[str] | None = None) -> list[dict]:
    """Greedy order in which to remove residual blocks: each step removes the candidate whose removal
    (on top of the earlier ones) raises the loss on ``batches`` least. Returns ``count`` (default
    all) steps as {"block", "loss"} (the loss with it and every earlier block removed).
    ``candidates``: the removable blocks when already known (``residual_blocks``)."""
    cands = residual_blocks(model, example) if candidates is None else list(candidates)
    work = copy.deepcopy(model).eval()
    order: list[dict] = []
    count = len(cands) if count is None else min(count, len(cands))
    while len(order) < count:
        left = [c for c in cands if not any(c == o["block"] or c.startswith(o["block"] + ".") for o in order)]
        if not left:
            break
        scored = []
        for c in left:
            trial = remove_blocks(copy.deepcopy(work), [c])
            scored.append((_loss(trial, batches), c))
        loss, best = min(scored)
        remove_blocks(work, [best])
        order.append({"block": best, "loss": round(loss, 5)})
    return order


def _labelled(batches) -> bool:
    return bool(batches) and all(y is not None for _, y in batches)


# -- the handler -------------------------------------------------------------------------------------
@register(BlockPrune)
def _apply(model: nn.Module, cfg: BlockPrune, ctx: Context) -> nn.Module:
    from ..measure import count_macs

    example = example_input(model, ctx)
    cands = residual_blocks(model, example)
    base_macs = count_macs(model, tuple(example.shape))[0]
    notes = []
    if cfg.blocks:
        unknown = [b for b in cfg.blocks if b not in cands]
        if unknown:
            raise UsageError(f"block_prune: {', '.join(map(repr, unknown))} is not a removable residual block",
                             hint=f"removable here: {', '.join(cands) or 'none'}")
        chosen, order = list(cfg.blocks), []
    else:
        if not cands:
            raise UsageError("block_prune: the model has no removable residual block",
                             hint="it removes blocks that add their input to their output (ResNet, MobileNetV2)")
        count = math.floor(cfg.ratio * len(cands) + 0.5)
        batches = calibration_batches(ctx.data, cfg.calibration_batches) if count else []
        if count and not batches:
            raise DataError("block_prune ranks blocks by the loss on a few training batches",
                            hint="pass data=... (--data D), or name the blocks: blocks: [layer1.1, ...]")
        meta = getattr(ctx.data, "meta", None)
        if batches and (not _labelled(batches) or (meta is not None and not meta.labelled)):
            with torch.no_grad():  # no labels: the loss against the unpruned model's own predictions
                batches = [(x, model.eval()(x).argmax(1)) for x, _ in batches]
            notes.append("no labels: blocks ranked by the loss against the unpruned model's predictions")
        order = removal_order(model, example, batches, count=count, candidates=cands) if count else []
        chosen = [o["block"] for o in order]
        notes.append(f"removed {len(chosen)} of {len(cands)} removable residual blocks, least loss increase first "
                     f"(on {len(batches)} training batches)")
    if cfg.distill and cfg.finetune_epochs and ctx.teacher is None:
        ctx.teacher = copy.deepcopy(model).eval()
        notes.append("fine-tuned with distillation from the unpruned model")
    remove_blocks(model, chosen)
    if chosen and cfg.bn_batches and ctx.data is not None and getattr(ctx.data, "train", None) is not None:
        from ..train.loop import recalibrate_bn

        n_bn = recalibrate_bn(model, ctx.data, cfg.bn_batches)
        if n_bn:
            notes.append(f"re-estimated the statistics of {n_bn} BatchNorm layer(s) on {cfg.bn_batches} training batches")
    if cfg.finetune_epochs:
        from ..train.finetune import finetune

        finetune(model, ctx, finetune_options(cfg, cfg.finetune_epochs))
        notes.append(f"fine-tuned {cfg.finetune_epochs:g} epoch(s)")
    macs = count_macs(model, tuple(example.shape))[0]
    ctx.details.update({
        "granularity": "block",
        "candidates": cands,
        "removed": chosen,
        "order": order,
        "macs_before": base_macs,
        "macs_after": macs,
        "macs_kept": macs / base_macs if base_macs else None,
        "notes": ctx.details.get("notes", []) + notes,
    })
    return model.eval()

