"""Token reduction for vision transformers: token merging (ToMe) with a per-block schedule.

    fast = edgeslim.prune(vit, TokenMerge(tokens=30))           # 30 tokens merged over all blocks
    fast = edgeslim.prune(vit, TokenMerge(target_macs=0.66))    # as few as keep <= 66% of the MACs

No training: each block merges its share of tokens after attention (edgeslim.models.tome); the
exported ONNX graph holds fewer tokens block by block, so it runs faster in any runtime. It applies
to models whose transformer blocks take a ``merge`` count (edgeslim's ``vit_tiny`` / ``deit_tiny``,
and any model built from edgeslim.models.vit blocks).
"""
from __future__ import annotations

import dataclasses

from torch import nn

from ..core.config import Config
from ..core.errors import ModelError, UsageError
from ..core.registry import Context, register
from ..models.tome import schedule
from .structured import bisect_kept, example_input, macs_of

SCHEDULES = ("constant", "decreasing")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TokenMerge(Config):
    kind = "token_merge"
    tokens: int = 16  # tokens merged over all blocks
    target_macs: float | None = None  # instead: the fewest merged tokens keeping <= this fraction of the MACs
    schedule: str = "constant"  # constant | decreasing (more merged in early blocks)

    def validate(self) -> None:
        if isinstance(self.tokens, bool) or not isinstance(self.tokens, int) or self.tokens < 0:
            raise UsageError(f"tokens must be an integer >= 0, got {self.tokens!r}")
        if self.target_macs is not None and not 0 < self.target_macs < 1:
            raise UsageError(f"target_macs is the fraction of MACs kept and must be in (0, 1), got {self.target_macs}")
        if self.schedule not in SCHEDULES:
            raise UsageError(f"unknown schedule {self.schedule!r}", hint=f"one of: {', '.join(SCHEDULES)}")


def merging_blocks(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(getattr(m, "merge", None), int) and hasattr(m, "attn")]


def _set(blocks, total: int, kind: str) -> list[int]:
    plan = schedule(len(blocks), total, kind)
    for b, r in zip(blocks, plan):
        b.merge = r
    return plan


def _free_tokens(model: nn.Module) -> int:
    grid = getattr(model, "grid", None)
    return grid[0] * grid[1] if grid else 0


@register(TokenMerge)
def _apply(model: nn.Module, cfg: TokenMerge, ctx: Context) -> nn.Module:
    blocks = merging_blocks(model)
    if not blocks:
        raise ModelError(f"token merging needs transformer blocks that take a merge count; {type(model).__name__} has none",
                         hint="use edgeslim's vit_tiny / deit_tiny (edgeslim.models.vit blocks)")
    example = example_input(model, ctx)
    base = macs_of(model, example)
    total = cfg.tokens
    if cfg.target_macs is not None:
        hi = _free_tokens(model) or 16 * len(blocks)

        def kept(t: float) -> float:
            _set(blocks, int(round(t)), cfg.schedule)
            return macs_of(model, example) / base

        if kept(hi) > cfg.target_macs:
            raise UsageError(f"target_macs {cfg.target_macs} is out of reach: merging every token it can keeps "
                             f"{kept(hi):.3f} of the MACs", hint="raise target_macs, or prune heads / MLP as well")
        total = int(round(bisect_kept(kept, cfg.target_macs, 0, hi, 10)))
        while total > 0 and kept(total - 1) <= cfg.target_macs:
            total -= 1
        while kept(total) > cfg.target_macs:
            total += 1
    plan = _set(blocks, total, cfg.schedule)
    final = macs_of(model, example)
    ctx.details.update({"tokens_merged": total, "schedule": cfg.schedule, "per_block": plan,
                        "macs_before": base, "macs_after": final, "macs_kept": final / base if base else None})
    return model.eval()
