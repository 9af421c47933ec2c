"""Small models exercising every channel coupling structured pruning must respect."""
from __future__ import annotations

import torch
from torch import nn


class MobileBlock(nn.Module):
    """Inverted residual: expand 1x1 -> depthwise 3x3 -> project 1x1, residual add."""

    def __init__(self, c: int, expand: int = 4):
        super().__init__()
        h = c * expand
        self.expand = nn.Sequential(nn.Conv2d(c, h, 1, bias=False), nn.BatchNorm2d(h), nn.ReLU6())
        self.dw = nn.Sequential(nn.Conv2d(h, h, 3, padding=1, groups=h, bias=False), nn.BatchNorm2d(h), nn.ReLU6())
        self.project = nn.Sequential(nn.Conv2d(h, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        return x + self.project(self.dw(self.expand(x)))


class MobileNetLike(nn.Module):
    input_shape = (3, 16, 16)

    def __init__(self, num_classes: int = 5):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU6())
        self.block1 = MobileBlock(16)
        self.block2 = MobileBlock(16)
        self.grouped = nn.Sequential(nn.Conv2d(16, 32, 3, padding=1, groups=4, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, num_classes))

    def forward(self, x):
        return self.head(self.grouped(self.block2(self.block1(self.stem(x)))))


class DenseLayer(nn.Module):
    def __init__(self, cin: int, growth: int):
        super().__init__()
        self.norm = nn.BatchNorm2d(cin)
        self.conv = nn.Conv2d(cin, growth, 3, padding=1, bias=False)

    def forward(self, x):
        return torch.cat([x, self.conv(torch.relu(self.norm(x)))], 1)


class DenseNetLike(nn.Module):
    """Concatenations: each layer's output joins every later layer's input."""

    input_shape = (1, 12, 12)

    def __init__(self, num_classes: int = 5):
        super().__init__()
        self.stem = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.l1 = DenseLayer(8, 8)
        self.l2 = DenseLayer(16, 8)
        self.l3 = DenseLayer(24, 8)
        self.trans = nn.Sequential(nn.BatchNorm2d(32), nn.ReLU(), nn.Conv2d(32, 16, 1), nn.AvgPool2d(2))
        self.flat = nn.Flatten()
        self.fc = nn.Linear(16 * 6 * 6, num_classes)  # flatten -> Linear: channel c owns 36 inputs

    def forward(self, x):
        return self.fc(self.flat(self.trans(self.l3(self.l2(self.l1(self.stem(x)))))))


class AttentionBlock(nn.Module):
    """Pre-norm transformer block on (B, T, E) tokens with nn.MultiheadAttention."""

    def __init__(self, e: int, heads: int):
        super().__init__()
        self.ln1 = nn.LayerNorm(e)
        self.attn = nn.MultiheadAttention(e, heads, batch_first=True)
        self.ln2 = nn.LayerNorm(e)
        self.mlp = nn.Sequential(nn.Linear(e, 2 * e), nn.GELU(), nn.Linear(2 * e, e))

    def forward(self, x):
        h = self.ln1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.ln2(x))


class TinyTransformer(nn.Module):
    """Patch embedding + one attention block + mean-pool classifier. Input (N, 1, 8, 8)."""

    input_shape = (1, 8, 8)

    def __init__(self, num_classes: int = 4, e: int = 16, heads: int = 4):
        super().__init__()
        self.embed = nn.Conv2d(1, e, 2, stride=2)
        self.block = AttentionBlock(e, heads)
        self.norm = nn.LayerNorm(e)
        self.fc = nn.Linear(e, num_classes)

    def forward(self, x):
        t = self.embed(x).flatten(2).transpose(1, 2)  # (B, 16 tokens, E)
        return self.fc(self.norm(self.block(t)).mean(1))


class Scale(nn.Module):
    """A custom layer with its own per-channel parameter."""

    def __init__(self, c: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(1, c, 1, 1))

    def forward(self, x):
        return x * self.gamma


class WithCustom(nn.Module):
    input_shape = (1, 8, 8)

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.scale = Scale(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.pool(torch.relu(self.conv2(torch.relu(self.scale(self.conv1(x)))))).flatten(1))


class FixedMask(nn.Module):
    """conv1's output is multiplied by a buffer of fixed width: the tracer cannot see that removing
    conv1's channels breaks the product; conv2's channels are free."""

    input_shape = (1, 8, 8)

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.register_buffer("mask", torch.ones(1, 8, 1, 1))
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv2(torch.relu(self.conv1(x)) * self.mask)).mean((2, 3)))


class Untraceable(nn.Module):
    input_shape = (1, 8, 8)

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        with torch.no_grad():
            return self.fc(self.conv(x).mean((2, 3)))
