"""Re-parameterization: fold what training needed but inference does not (BN, parallel branches).

    folded = edgeslim.reparam(model)            # RepVGG blocks, then every Conv+BN pair
"""
from __future__ import annotations

import dataclasses

from torch import nn

from ..core.config import Config
from ..core.errors import UsageError
from ..core.registry import Context, register, run
from .fold_bn import find_conv_bn_pairs, fold_bn, fuse_conv_bn_weights
from .repvgg import RepVGGBlock, fold_repvgg

__all__ = ["Reparam", "RepVGGBlock", "find_conv_bn_pairs", "fold_bn", "fold_repvgg", "fuse_conv_bn_weights", "reparam"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Reparam(Config):
    """Which folds to apply (all by default)."""

    kind = "reparam"
    repvgg: bool = True  # multi-branch RepVGG blocks -> one 3x3 conv
    conv_bn: bool = True  # Conv/Linear followed by BatchNorm -> one layer

    def validate(self) -> None:
        for f in ("repvgg", "conv_bn"):
            if not isinstance(getattr(self, f), bool):
                raise UsageError(f"reparam.{f} must be true or false")


@register(Reparam)
def _apply(model: nn.Module, config: Reparam, ctx: Context) -> nn.Module:
    record: list[dict] = []
    if config.repvgg:
        model = fold_repvgg(model, inplace=True, record=record)
    if config.conv_bn:
        model = fold_bn(model, inplace=True, record=record)
    ctx.details.setdefault("folds", []).extend(record)
    n = {k: sum(1 for r in record if r["fold"] == k and r["applied"]) for k in ("repvgg", "switch_to_deploy", "conv_bn")}
    ctx.details.setdefault("notes", []).append(
        f"folded {n['repvgg']} RepVGG block(s), {n['switch_to_deploy']} switch_to_deploy module(s), "
        f"{n['conv_bn']} Conv+BN pair(s)"
        if record else "nothing to fold: no RepVGG block and no Conv/Linear followed by BatchNorm"
    )
    return model


def reparam(model: nn.Module, config: Reparam | None = None, *, inplace: bool = False,
            ctx: Context | None = None) -> nn.Module:
    """Apply every fold that applies; the model must be in eval mode. What was folded goes into
    ``ctx.details["folds"]`` when a Context is given. The caller's model is copied unless inplace."""
    if isinstance(model, nn.Module):
        _check_eval(model)
    return run(model, config or Reparam(), ctx, inplace=inplace, accepts=(Reparam,))[0]


def _check_eval(model: nn.Module) -> None:
    for name, m in model.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training:
            raise UsageError(
                f"cannot fold: BatchNorm {name!r} is in training mode (it normalises with batch statistics)",
                hint="call model.eval() before reparam",
            )
