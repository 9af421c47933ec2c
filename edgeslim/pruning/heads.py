"""Vision-transformer pruning: whole attention heads, MLP hidden width and embedding width.

    small = edgeslim.prune(vit, HeadPrune(heads=0.34, mlp=0.5, embed=0.25, importance="taylor"), data=data)

``heads`` removes that fraction of every fused-qkv attention's heads (timm's, DeiT's and edgeslim's
layout, see edgeslim.graph.attention), ranked per layer by the summed importance of a head's q, k and
v channels and its projection inputs (magnitude ``l1``/``l2``, or ``taylor``: |w * dL/dw| from a few
calibration batches). ``mlp`` removes that fraction of every MLP's hidden units, and ``embed`` that
fraction of the embedding width: the residual stream is one channel group (patch embedding, class
and distillation tokens, position embedding, every norm and every block's input and output
projections), so it stays consistent. The result is a plain, smaller model that exports as usual.
"""
from __future__ import annotations

import copy
import dataclasses

import torch
from torch import nn

from ..core.config import Config
from ..core.errors import ModelError, UsageError
from ..core.registry import Context, register
from ..graph import attention, forward_problem, output_shape
from ..graph.probe import breaking
from .importance import IMPORTANCE_NAMES
from .structured import (_check_forward, _check_ratio, criterion, example_input, exclusions, macs_of, prune_once,
                         split_finetune)


@dataclasses.dataclass(frozen=True, kw_only=True)
class HeadPrune(Config):
    kind = "head_prune"
    heads: float = 0.5  # fraction of each attention layer's heads removed (whole heads)
    mlp: float = 0.0  # fraction of each MLP's hidden units removed
    embed: float = 0.0  # fraction of the embedding (residual stream) width removed
    importance: str = "l1"
    calibration_batches: int = 4  # batches for taylor
    finetune_epochs: float = 0.0
    lr: float | None = None
    max_batches: int | None = None
    distill: bool = False

    def validate(self) -> None:
        for field in ("heads", "mlp", "embed"):
            _check_ratio(getattr(self, field), field)
        if self.importance not in IMPORTANCE_NAMES:
            raise UsageError(f"unknown importance {self.importance!r}", hint=f"one of: {', '.join(IMPORTANCE_NAMES)}")
        if self.finetune_epochs < 0:
            raise UsageError("finetune_epochs must be >= 0")

    def untrained(self) -> "HeadPrune":
        return self.replace(finetune_epochs=0.0)

    def split_training(self):
        return split_finetune(self)


def group_kind(g) -> str | None:
    """'heads' (a fused-qkv attention), 'embed' (the residual stream: it holds a LayerNorm) or 'mlp'
    (any other group rooted at a Linear); None for the rest (convolutions of hybrid stems)."""
    if g._attention is not None:
        return "heads"
    if any(isinstance(m.module, nn.LayerNorm) for m in g.members):
        return "embed"
    root = next((m.module for m in g.members if m.name == g.root), None)
    return "mlp" if isinstance(root, nn.Linear) else None


def _head_plan(groups, fraction: float, crit) -> dict[str, list[int]]:
    """qkv root -> the heads to remove (the least important; at least one head stays)."""
    plan = {}
    for g in groups:
        attn = g._attention
        n = min(int(fraction * attn.num_heads + 0.5), attn.num_heads - 1)
        scores = attention.scores_of_heads(crit.channel_scores(g), attn)
        plan[g.root] = torch.argsort(scores, stable=True)[:n].tolist() if n > 0 else []
    return plan


def _cut(model: nn.Module, root: str, heads: list[int]) -> None:
    attn = model.get_submodule(root.rsplit(".", 1)[0]) if "." in root else model
    attention.remove(attn, attention.head_channels(attn, heads), whole_heads=len(heads))


def _remove_heads(model: nn.Module, groups, fraction: float, crit, example, ref_shape) -> list[dict]:
    """Remove the planned heads of every attention whose cut, tried on a copy first, keeps the model
    working; the others keep their heads, with the reason."""
    plan = _head_plan(groups, fraction, crit)

    def trial(roots: set) -> str | None:
        m = copy.deepcopy(model)
        try:
            for r in roots:
                _cut(m, r, plan[r])
        except Exception as e:  # noqa: BLE001 - a cut the layout does not allow
            return f"{type(e).__name__}: {e}"
        return forward_problem(m, example, ref_shape)

    broken = breaking([r for r, h in plan.items() if h], trial)
    rows = []
    for g in groups:
        heads = g._attention.num_heads
        drop = [] if g.root in broken else plan[g.root]
        note = (f"removing heads breaks the model ({broken[g.root]})" if g.root in broken else
                "one head would round to none" if fraction and not plan[g.root] else "")
        if drop:
            _cut(model, g.root, drop)
        rows.append({"layer": g.root, "heads": heads, "kept": heads - len(drop), "note": note})
    return rows


@register(HeadPrune)
def _apply(model: nn.Module, cfg: HeadPrune, ctx: Context) -> nn.Module:
    example = example_input(model, ctx)
    ref_shape = output_shape(model, example)
    crit, batches = criterion(cfg, ctx)
    _, groups = exclusions(model, example, ref_shape=ref_shape)
    heads = [g for g in groups if g.prunable and group_kind(g) == "heads"]
    if cfg.heads and not heads:
        raise ModelError("head pruning found no attention with a fused qkv projection to prune",
                         hint="it prunes timm/DeiT-style attention (qkv, proj, num_heads, head_dim); for "
                         "nn.MultiheadAttention use channel pruning, which removes the same dims from every head")
    base = macs_of(model, example)
    crit.prepare(model, batches)
    rows = _remove_heads(model, heads, cfg.heads, crit, example, ref_shape)
    ratios = {"mlp": cfg.mlp, "embed": cfg.embed}
    excl, after = exclusions(model, example, ref_shape=ref_shape)  # the model changed: try its groups again
    layer_ratios = {g.root: ratios[k] for g in after if g.prunable and (k := group_kind(g)) in ratios and ratios[k]}
    if layer_ratios:
        rows += prune_once(model, example, ratio=0.0, importance=crit, batches=batches, exclude=excl,
                           layer_ratios=layer_ratios)
    _check_forward(model, example, ref_shape)
    final = macs_of(model, example)
    ctx.details.update({"granularity": "heads", "importance": cfg.importance, "heads": cfg.heads, "mlp": cfg.mlp,
                        "embed": cfg.embed, "macs_before": base, "macs_after": final,
                        "macs_kept": final / base if base else None,
                        "layers": [{k: v for k, v in r.items() if k != "removed"} for r in rows]})
    return model.eval()
