"""A small vision transformer for 28-32 px inputs (``vit_tiny``) and its DeiT variant with a
distillation token (``deit_tiny``).

The layout is the one timm and DeiT use -- patch embedding by a strided conv, a class token (and a
distillation token), learned position embeddings, pre-norm blocks of multi-head self-attention with
one fused ``qkv`` projection and a two-layer GELU MLP -- so what edgeslim does to it (head, MLP and
embedding pruning, token merging, int8) is what it does to those models. Attention reads its head
count and width from ``num_heads`` / ``head_dim``, which head pruning updates.

Token merging (ToMe): a block with ``merge > 0`` merges that many tokens after its attention
(``edgeslim.models.tome``); the model carries each token's size for proportional attention, and the
exported graph really holds fewer tokens.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import UsageError

from .zoo import Size, image_size, register_model


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, head_dim: int | None = None):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = head_dim or dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.qkv = nn.Linear(dim, 3 * self.num_heads * self.head_dim)
        self.proj = nn.Linear(self.num_heads * self.head_dim, dim)

    def forward(self, x: torch.Tensor, size: torch.Tensor | None = None):
        """(output, keys averaged over heads: what token merging compares)."""
        b, n, _ = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * self.scale) @ k.transpose(-2, -1)
        if size is not None:  # proportional attention: a merged token counts as the tokens it holds
            attn = attn + size.log().transpose(1, 2).unsqueeze(1)
        out = (attn.softmax(-1) @ v).transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim)
        return self.proj(out), k.mean(1)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.merge = 0  # tokens token merging removes after this block's attention
        self.protected = 1  # leading tokens (class, distillation) never merged

    def forward(self, x: torch.Tensor, size: torch.Tensor | None = None):
        a, keys = self.attn(self.norm1(x), size)
        x = x + a
        if self.merge and size is not None:
            from .tome import merge_tokens

            x, size = merge_tokens(x, keys, size, self.merge, self.protected)
        return x + self.mlp(self.norm2(x)), size


class VisionTransformer(nn.Module):
    """ViT (``distilled=False``) or DeiT (a distillation token and head, averaged with the class
    head at inference; ``forward_train`` returns both for the distillation loss)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, input_size: Size | None = None, *,
                 patch_size: int = 4, dim: int = 96, depth: int = 6, num_heads: int = 3, mlp_ratio: float = 2.0,
                 distilled: bool = False, name: str = "vit_tiny"):
        super().__init__()
        h, w = image_size(name, input_size, minimum=patch_size)
        self.grid = (h // patch_size, w // patch_size)
        self.prefix = 2 if distilled else 1
        self.patch_embed = nn.Conv2d(in_channels, dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.dist_token = nn.Parameter(torch.zeros(1, 1, dim)) if distilled else None
        self.pos_embed = nn.Parameter(torch.randn(1, self.prefix + self.grid[0] * self.grid[1], dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim, num_heads, mlp_ratio) for _ in range(depth))
        for blk in self.blocks:
            blk.protected = self.prefix
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)
        self.head_dist = nn.Linear(dim, num_classes) if distilled else None
        self.apply(_init)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        if distilled:
            nn.init.trunc_normal_(self.dist_token, std=0.02)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        tokens = [self.cls_token.expand(x.shape[0], -1, -1)]
        if self.dist_token is not None:
            tokens.append(self.dist_token.expand(x.shape[0], -1, -1))
        x = torch.cat([*tokens, x], dim=1) + self.pos_embed
        size = torch.ones_like(x[..., :1]) if any(b.merge for b in self.blocks) else None
        for blk in self.blocks:
            x, size = blk(x, size)
        return self.norm(x)

    def forward_train(self, x: torch.Tensor):
        """(class-head logits, distillation-head logits or None)."""
        f = self.features(x)
        return self.head(f[:, 0]), (self.head_dist(f[:, 1]) if self.head_dist is not None else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cls, dist = self.forward_train(x)
        return cls if dist is None else (cls + dist) / 2


class DeiT(VisionTransformer):
    """A ViT with a distillation token and head (Touvron et al. 2021). In training mode it returns
    (class logits, distillation logits); its losses say how each head learns."""

    def __init__(self, *args, **kw):
        super().__init__(*args, distilled=True, **kw)

    def forward(self, x: torch.Tensor):
        cls, dist = self.forward_train(x)
        return (cls, dist) if self.training else (cls + dist) / 2

    def classification_loss(self, outputs, labels: torch.Tensor) -> torch.Tensor:
        """Without a teacher both heads learn the labels."""
        if not isinstance(outputs, tuple):
            return F.cross_entropy(outputs, labels)
        return (F.cross_entropy(outputs[0], labels) + F.cross_entropy(outputs[1], labels)) / 2

    def distill_loss(self, outputs, teacher_logits: torch.Tensor) -> torch.Tensor:
        """DeiT's hard distillation: the distillation head learns the teacher's decisions."""
        if not isinstance(outputs, tuple):
            raise UsageError("distill_loss takes a DeiT's training-mode outputs (class logits, distillation logits)")
        return F.cross_entropy(outputs[1], teacher_logits.argmax(-1))


def _init(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
    elif isinstance(m, nn.Conv2d):
        nn.init.kaiming_normal_(m.weight, mode="fan_out")
        fan_in = m.in_channels * math.prod(m.kernel_size)
        nn.init.uniform_(m.bias, -1 / math.sqrt(fan_in), 1 / math.sqrt(fan_in))


@register_model("vit_tiny", description="ViT for 28-32 px: patch 4, width 96, 6 blocks of 3 heads, MLP x2", min_size=4)
def vit_tiny(num_classes: int = 10, in_channels: int = 1, input_size: Size | None = None, dim: int = 96,
             depth: int = 6, num_heads: int = 3, mlp_ratio: float = 2.0) -> nn.Module:
    return VisionTransformer(num_classes, in_channels, input_size, dim=dim, depth=depth, num_heads=num_heads,
                             mlp_ratio=mlp_ratio)


@register_model("deit_tiny", description="vit_tiny with a DeiT distillation token and head", min_size=4)
def deit_tiny(num_classes: int = 10, in_channels: int = 1, input_size: Size | None = None, dim: int = 96,
              depth: int = 6, num_heads: int = 3, mlp_ratio: float = 2.0) -> nn.Module:
    return DeiT(num_classes, in_channels, input_size, dim=dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
                name="deit_tiny")
