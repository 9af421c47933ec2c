"""``imagefolder:PATH[:SIZE]``: a folder of class subfolders of images (torchvision's ImageFolder).

Layouts: PATH/<class>/<image> (test carved), or PATH/train/<class>/... with an
optional PATH/test/<class>/... used as the test split. The test split is carved
with a fixed seed so it stays the same across ``seed`` values; validation is
carved from what is left with ``seed``.

Every image is resized to one size: SIZE x SIZE when given, else the first
training image's size (scaled down to fit 224 x 224 if larger). Greyscale
first image -> 1 channel, anything else -> RGB. Images are decoded per batch;
mean and std are measured on up to 100 training images.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..core.errors import DataError
from . import images
from .images import path_and_size
from .bundle import BatchedSplit, Batch, DataMeta, Normalizer, carve

TEST_FRACTION = 0.1
MAX_SIDE = 224
LAYOUT_HINT = (
    "lay it out as PATH/<class>/<image>, or PATH/train/<class>/<image> with an optional PATH/test/<class>/<image>"
)


def parse(spec: str) -> tuple[Path, int | None]:
    """'PATH' or 'PATH:SIZE' (the part after 'imagefolder:') -> (path, size or None)."""
    return path_and_size("imagefolder", spec, 32)


def build(spec: str, *, val_fraction: float, seed: int):
    """(train, val, test, meta) for load(); val is None when val_fraction is 0."""
    root, size = parse(spec)
    train_root, test_root = _roots(root)
    classes, class_to_idx, pool = _scan(train_root)
    if test_root is None:
        kept, carved = carve(len(pool), TEST_FRACTION, 0)
        test_samples, pool = [pool[i] for i in carved], [pool[i] for i in kept]
    else:
        test_samples = _scan_test(test_root, class_to_idx)
    first = _open(pool[0][0])
    mode = images.mode_of(first)
    hw = (size, size) if size else _fit(first.height, first.width)
    mean, std = _stats(pool, mode, hw)
    normalize = Normalizer(mean, std)
    kept, carved = carve(len(pool), val_fraction, seed)
    train = ImageSplit([pool[i] for i in kept], mode, hw, normalize)
    val = None if carved is None else ImageSplit([pool[i] for i in carved], mode, hw, normalize)
    test = ImageSplit(test_samples, mode, hw, normalize)
    meta = DataMeta(
        name=f"imagefolder:{root}" + (f":{size}" if size else ""),
        classes=classes,
        num_classes=len(classes),
        input_shape=(1 if mode == "L" else 3, *hw),
        mean=mean,
        std=std,
    )
    return train, val, test, meta


class ImageSplit(BatchedSplit):
    """(path, label) samples decoded, resized and normalised one batch at a time."""

    def __init__(self, samples: list[tuple[str, int]], mode: str, hw: tuple[int, int], normalize: Normalizer):
        self.samples, self.mode, self.hw, self.normalize = samples, mode, hw, normalize

    def __len__(self) -> int:
        return len(self.samples)

    def labels_present(self) -> set[int]:
        return {label for _, label in self.samples}

    def __getitems__(self, indices: list[int]) -> Batch:
        picked = [self.samples[i] for i in indices]
        pixels = torch.stack([_pixels(path, self.mode, self.hw) for path, _ in picked])
        return self.normalize(pixels), torch.tensor([label for _, label in picked], dtype=torch.int64)


def _roots(root: Path) -> tuple[Path, Path | None]:
    if not root.is_dir():
        raise DataError(f"imagefolder: {root} is not a folder", hint=LAYOUT_HINT)
    train, test = root / "train", root / "test"
    if test.is_dir():
        if not train.is_dir():
            raise DataError(f"imagefolder: {root} has a test/ folder but no train/ folder", hint=LAYOUT_HINT)
        return train, test
    return (train if train.is_dir() else root), None


def _image_folder():
    try:
        from torchvision.datasets import ImageFolder
        from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset
    except ImportError:
        raise DataError(
            "imagefolder datasets need torchvision, which is not installed", hint="pip install torchvision"
        ) from None
    return ImageFolder, IMG_EXTENSIONS, make_dataset


def _scan(folder: Path) -> tuple[list[str], dict[str, int], list[tuple[str, int]]]:
    image_folder, _, _ = _image_folder()
    try:
        found = image_folder(str(folder))
    except FileNotFoundError as e:  # no class folders, or a class folder without images
        raise DataError(f"imagefolder: {folder}: {e}", hint=LAYOUT_HINT) from None
    return found.classes, found.class_to_idx, found.samples


def _scan_test(folder: Path, class_to_idx: dict[str, int]) -> list[tuple[str, int]]:
    _, extensions, make_dataset = _image_folder()
    extra = sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name not in class_to_idx)
    if extra:
        raise DataError(
            f"imagefolder: {folder} has classes not in the training folder: {', '.join(extra)}", hint=LAYOUT_HINT
        )
    samples = make_dataset(str(folder), class_to_idx, extensions=extensions, allow_empty=True)
    if not samples:
        raise DataError(f"imagefolder: {folder} holds no images ({', '.join(extensions)})", hint=LAYOUT_HINT)
    return samples


def _open(path: str):
    return images.open_image(path, "imagefolder")


def _pixels(path: str, mode: str, hw: tuple[int, int]) -> torch.Tensor:
    """uint8 (C, H, W)."""
    return images.pixels(path, mode, hw, "imagefolder")


def _fit(height: int, width: int) -> tuple[int, int]:
    return images.fit(height, width, MAX_SIDE)


def _stats(samples: list[tuple[str, int]], mode: str, hw: tuple[int, int]) -> tuple[tuple[float, ...], ...]:
    """Per-channel mean and std (0..1 scale) of up to STATS_SAMPLES evenly spaced images."""
    return images.stats([path for path, _ in samples], mode, hw, "imagefolder")
