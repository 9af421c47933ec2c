"""``segfolder:PATH[:SIZE]``: images plus same-named PNG class masks (segmentation).

Layouts: PATH/images/<name>.<ext> with PATH/masks/<name>.png (the test split carved), or the same
under PATH/train/ with an optional PATH/test/ used as the test split. A mask is a single-channel PNG
(mode L, P or I) of class indices 0..K-1, 255 for pixels to ignore, the size of its image. Class names
come from PATH/classes.txt (one a line, line i naming class i) when there is one, else they are
"0".."K-1" with K one more than the largest index in any mask.

Images are resized bilinearly and masks by nearest neighbour to SIZE x SIZE (default: the first
image's size scaled down to fit 320 x 320). Greyscale first image -> 1 channel, anything else -> RGB.
The test split is carved with a fixed seed (10%) so it stays the same across seeds; validation is
carved from what is left with ``seed``. Every mask is read and checked when the data is loaded: a
missing mask or image, a mask of another size than its image, an RGB mask, an index past classes.txt.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..core.errors import DataError
from . import images
from .images import path_and_size
from .bundle import BatchedSplit, IGNORE, Batch, DataMeta, Normalizer, carve

FORM = "segfolder:PATH[:SIZE]"
MAX_SIDE = 320
TEST_FRACTION = 0.1
_MASK_MODES = {"L", "P", "I", "I;16", "1"}
LAYOUT_HINT = ("lay it out as PATH/images/<name>.<ext> and PATH/masks/<name>.png (or both under PATH/train/, "
               "with an optional PATH/test/), masks single-channel PNGs of class indices, 255 = ignore")


def parse(spec: str) -> tuple[Path, int | None]:
    """'PATH' or 'PATH:SIZE' (the part after 'segfolder:') -> (path, size or None)."""
    return path_and_size("segfolder", spec, 128)


def build(spec: str, *, val_fraction: float, seed: int):
    """(train, val, test, meta) for load(); val is None when val_fraction is 0."""
    root, size = parse(spec)
    train_root, test_root = _roots(root)
    names = _names(root)
    pool = scan(train_root, names)
    if test_root is None:
        kept, carved = carve(len(pool), TEST_FRACTION, 0)
        test, pool = [pool[i] for i in carved], [pool[i] for i in kept]
    else:
        test = scan(test_root, names)
    k = len(names) if names else 1 + max((max(s[2], default=0) for s in pool + test), default=0)
    first = images.open_image(pool[0][0], "segfolder")
    mode = images.mode_of(first)
    hw = (size, size) if size else images.fit(first.height, first.width, MAX_SIDE)
    mean, std = images.stats([s[0] for s in pool], mode, hw, "segfolder")
    normalize = Normalizer(mean, std)
    kept, carved = carve(len(pool), val_fraction, seed)
    train = MaskFolderSplit([pool[i] for i in kept], mode, hw, normalize)
    val = None if carved is None else MaskFolderSplit([pool[i] for i in carved], mode, hw, normalize)
    classes = names or [str(i) for i in range(k)]
    meta = DataMeta(name=f"segfolder:{root}" + (f":{size}" if size else ""), classes=classes, num_classes=k,
                    input_shape=(1 if mode == "L" else 3, *hw), mean=mean, std=std, task="segmentation")
    return train, val, MaskFolderSplit(test, mode, hw, normalize), meta


class MaskFolderSplit(BatchedSplit):
    """(image, mask, classes in the mask) samples decoded and resized one batch at a time."""

    def __init__(self, samples: list[tuple[str, str, frozenset]], mode: str, hw: tuple[int, int],
                 normalize: Normalizer):
        self.samples, self.mode, self.hw, self.normalize = samples, mode, hw, normalize

    def __len__(self) -> int:
        return len(self.samples)

    def labels_present(self) -> set[int]:
        return set().union(*(s[2] for s in self.samples))

    def __getitems__(self, indices: list[int]) -> Batch:
        picked = [self.samples[i] for i in indices]
        x = torch.stack([images.pixels(image, self.mode, self.hw, "segfolder") for image, _, _ in picked])
        masks = torch.stack([torch.from_numpy(_mask(mask, self.hw)) for _, mask, _ in picked])
        return self.normalize(x), masks


def _roots(root: Path) -> tuple[Path, Path | None]:
    if not root.is_dir():
        raise DataError(f"segfolder: {root} is not a folder", hint=LAYOUT_HINT)
    train, test = root / "train", root / "test"
    if test.is_dir():
        if not train.is_dir():
            raise DataError(f"segfolder: {root} has a test/ folder but no train/ folder", hint=LAYOUT_HINT)
        return train, test
    return (train if train.is_dir() else root), None


def _names(root: Path) -> list[str] | None:
    path = root / "classes.txt"
    if not path.is_file():
        return None
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
    while names and not names[-1]:
        names.pop()
    if not names or not all(names):
        raise DataError(f"segfolder: {path} must name one class a line, with no empty lines")
    return names


def scan(folder: Path, names: list[str] | None) -> list[tuple[str, str, frozenset]]:
    """(image, mask, the classes in the mask) for every image of folder/images/, all checked."""
    image_dir, mask_dir = folder / "images", folder / "masks"
    for d in (image_dir, mask_dir):
        if not d.is_dir():
            raise DataError(f"segfolder: {folder} has no {d.name}/ folder", hint=LAYOUT_HINT)
    files = images.image_files(image_dir)
    by_stem: dict[str, Path] = {}
    for f in files:
        if f.stem in by_stem:
            raise DataError(f"segfolder: {by_stem[f.stem].name} and {f.name} in {image_dir} share a name; "
                            "a mask belongs to one image", hint="rename or remove one of them")
        by_stem[f.stem] = f
    masks = {p.stem: p for p in mask_dir.iterdir() if p.is_file() and p.suffix.lower() == ".png"}
    if not by_stem:
        raise DataError(f"segfolder: {image_dir} holds no images", hint=LAYOUT_HINT)
    for stem, f in by_stem.items():
        if stem not in masks:
            raise DataError(f"segfolder: {f} has no mask {mask_dir / (stem + '.png')}", hint=LAYOUT_HINT)
    extra = sorted(set(masks) - set(by_stem))
    if extra:
        raise DataError(f"segfolder: {masks[extra[0]]} has no image in {image_dir}", hint=LAYOUT_HINT)
    return [(str(f), str(masks[stem]), _check_mask(f, masks[stem], names)) for stem, f in by_stem.items()]


def _check_mask(image: Path, mask: Path, names: list[str] | None) -> frozenset:
    opened = images.open_image(mask, "segfolder")
    if opened.mode not in _MASK_MODES:
        raise DataError(f"segfolder: mask {mask} is a {opened.mode} image; a mask is a single-channel PNG of "
                        "class indices", hint=LAYOUT_HINT)
    size = images.open_image(image, "segfolder", load=False).size
    if opened.size != size:
        raise DataError(f"segfolder: mask {mask} is {opened.size[0]}x{opened.size[1]} but its image {image.name} is "
                        f"{size[0]}x{size[1]}", hint="a mask has the size of its image")
    values = np.unique(np.asarray(opened))
    values = values[values != IGNORE]
    bad = values[(values < 0) | (values >= (len(names) if names else IGNORE))]
    if len(bad):
        limit = f"classes.txt names {len(names)} classes" if names else f"indices stop at {IGNORE - 1}"
        raise DataError(f"segfolder: mask {mask} holds class index {int(bad[0])}, but {limit}",
                        hint=f"indices are 0..K-1, {IGNORE} for pixels to ignore")
    return frozenset(int(v) for v in values)


def _mask(path: str, hw: tuple[int, int]) -> np.ndarray:
    """int64 (H, W) class indices, resized by nearest neighbour."""
    from PIL import Image

    mask = images.open_image(path, "segfolder")
    if mask.size != (hw[1], hw[0]):
        mask = mask.resize((hw[1], hw[0]), Image.NEAREST)
    return np.asarray(mask).astype(np.int64)
