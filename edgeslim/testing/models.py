"""Tiny models for fast tests: every technique should apply to these in well under a second."""
from __future__ import annotations

from torch import nn


class TinyConvNet(nn.Module):
    """conv-bn-relu x2, pool, linear head. Input (N, 1, 8, 8) by default."""

    input_shape = (1, 8, 8)

    def __init__(self, num_classes: int = 4, in_channels: int = 1, width: int = 8):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(width, width * 2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width * 2)
        self.relu2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(width * 2, num_classes)

    def forward(self, x):
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        return self.fc(self.flatten(self.pool(x)))


class TinyMLP(nn.Sequential):
    """Flatten -> 32 -> 16 -> classes. Input (N, 1, 8, 8) by default."""

    input_shape = (1, 8, 8)

    def __init__(self, num_classes: int = 4, in_channels: int = 1, image_size: int = 8):
        super().__init__(
            nn.Flatten(), nn.Linear(in_channels * image_size * image_size, 32), nn.ReLU(),
            nn.Linear(32, 16), nn.ReLU(), nn.Linear(16, num_classes),
        )


class TinyResBlock(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.relu2 = nn.ReLU()

    def forward(self, x):
        return self.relu2(x + self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x))))))


class TinyResNet(nn.Module):
    """stem + two residual blocks + head: exercises channel dependencies across additions."""

    input_shape = (1, 8, 8)

    def __init__(self, num_classes: int = 4, in_channels: int = 1, width: int = 8):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        self.block1 = TinyResBlock(width)
        self.block2 = TinyResBlock(width)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.fc(self.flatten(self.pool(self.block2(self.block1(self.stem(x))))))


def tiny_vit(num_classes: int = 4) -> nn.Module:
    """A 2-block ViT on 1x8x8 inputs (patch 2: 16 tokens, width 16, 2 heads)."""
    from ..models.vit import VisionTransformer

    return VisionTransformer(num_classes, 1, 8, patch_size=2, dim=16, depth=2, num_heads=2, mlp_ratio=2.0)


TOY_MODELS = {"tiny_conv": TinyConvNet, "tiny_mlp": TinyMLP, "tiny_resnet": TinyResNet, "tiny_vit": tiny_vit}


def toy_loader(input_shape=(1, 8, 8), num_classes: int = 4, n: int = 64, batch_size: int = 16, seed: int = 0,
               shuffle: bool = False):
    """A small labelled DataLoader whose labels a tiny model can learn (class = brightest quadrant);
    ``shuffle``: reshuffled every epoch by a generator of its own seeded with ``seed``, as a
    DataBundle's train loader is."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *input_shape, generator=g)
    y = torch.randint(0, num_classes, (n,), generator=g)
    c, h, w = input_shape
    for i in range(n):  # make the label visible in the input
        q = int(y[i])
        x[i, :, (q // 2) * (h // 2):(q // 2 + 1) * (h // 2), (q % 2) * (w // 2):(q % 2 + 1) * (w // 2)] += 2.0
    return DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=shuffle,
                      generator=torch.Generator().manual_seed(seed) if shuffle else None)
