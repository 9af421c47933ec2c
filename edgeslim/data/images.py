"""Image files through PIL, shared by the folder datasets (imagefolder:, coco:, segfolder:)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..core.errors import DataError, UsageError

STATS_SAMPLES = 100
GREY_MODES = {"1", "L", "LA", "I", "I;16", "F"}
EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def open_image(path: str | Path, kind: str, *, load: bool = True):
    """The PIL image at ``path`` (decoded unless ``load`` is false: then only its header is read);
    a DataError naming ``kind`` and the file when it cannot be read."""
    from PIL import Image, UnidentifiedImageError

    try:
        image = Image.open(path)
        if load:
            image.load()
    except (OSError, UnidentifiedImageError) as e:
        raise DataError(f"{kind}: cannot read image {path}: {e}", hint="delete or replace the file") from None
    return image


def mode_of(image) -> str:
    """The mode every image of a dataset is converted to: "L" when its first image is grey, else RGB."""
    return "L" if image.mode in GREY_MODES else "RGB"


def pixels(path: str | Path, mode: str, hw: tuple[int, int], kind: str) -> torch.Tensor:
    """uint8 (C, H, W), resized bilinearly to ``hw``."""
    from PIL import Image

    image = open_image(path, kind).convert(mode)
    if image.size != (hw[1], hw[0]):
        image = image.resize((hw[1], hw[0]), Image.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    array = array[None] if array.ndim == 2 else array.transpose(2, 0, 1)
    return torch.from_numpy(array.copy())  # PIL's buffer is read-only


def fit(height: int, width: int, max_side: int) -> tuple[int, int]:
    """(H, W) scaled down, keeping the aspect ratio, to fit ``max_side`` x ``max_side``."""
    scale = min(1.0, max_side / max(height, width))
    return max(1, round(height * scale)), max(1, round(width * scale))


def stats(paths: list, mode: str, hw: tuple[int, int], kind: str) -> tuple[tuple[float, ...], ...]:
    """Per-channel mean and std (0..1 scale) of up to STATS_SAMPLES evenly spaced images."""
    picks = np.linspace(0, len(paths) - 1, min(len(paths), STATS_SAMPLES)).round().astype(int)
    batch = torch.stack([pixels(paths[i], mode, hw, kind) for i in np.unique(picks)]).to(torch.float64) / 255
    mean = batch.mean(dim=(0, 2, 3))
    std = batch.std(dim=(0, 2, 3)).clamp_min(1e-3)  # a blank image set must not divide by zero
    return tuple(round(v, 4) for v in mean.tolist()), tuple(round(v, 4) for v in std.tolist())


def image_files(folder: Path) -> list[Path]:
    """The image files directly in ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in EXTENSIONS)


def path_and_size(kind: str, spec: str, example: int, *, is_path=Path.is_dir) -> tuple[Path, int | None]:
    """'PATH' or 'PATH:SIZE' (the part after '<kind>:') -> (path, size or None). A trailing ':N' is the
    size unless the whole spec is itself a path (``is_path``)."""
    head, sep, tail = spec.rpartition(":")
    if sep and tail.isdigit() and not is_path(Path(spec).expanduser()):
        if int(tail) < 1:
            raise UsageError(f"{kind}:{spec}: SIZE must be a positive integer", hint=f"e.g. {kind}:PATH:{example}")
        return Path(head).expanduser(), int(tail)
    return Path(spec).expanduser(), None
