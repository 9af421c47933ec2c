"""Small image folders for tests: PNG files whose class is visible in the pixels."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def write_image_folder(root: str | Path, *, classes: int = 3, per_class: int = 8, size: tuple[int, int] = (64, 64),
                       mode: str = "RGB", seed: int = 0) -> Path:
    """``root/c<k>/<i>.png`` images of ``size`` (H, W): noise plus a bright patch in the k-th of
    ``classes`` horizontal bands, so a small model can learn the class. Returns ``root``."""
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    h, w = size
    for k in range(classes):
        folder = root / f"c{k}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 100, (h, w, 3), dtype=np.uint8)
            top, bottom = k * h // classes, (k + 1) * h // classes
            pixels[top:max(bottom, top + 1)] += 120
            image = Image.fromarray(pixels)
            (image.convert("L") if mode == "L" else image).save(folder / f"{i:03d}.png")
    return root
