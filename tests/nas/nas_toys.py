"""Tiny spaces and data for the NAS tests (8x8 inputs, 4 classes, a few batches per split)."""
from __future__ import annotations

from edgeslim.data import DataBundle
from edgeslim.data.bundle import DataMeta
from edgeslim.testing.models import toy_loader

TINY_MB = {"type": "mobilenet", "stem": {"out": 8}, "head": {"out": 16}, "divisor": 4,
           "stages": [{"channels": 8, "stride": 1, "depth": [1], "expand": [1]},
                      {"channels": 12, "stride": 2, "depth": [1, 2], "width": [0.5, 1.0], "expand": [2, 3],
                       "kernel": [3, 5]},
                      {"channels": 16, "stride": 2, "depth": [1, 2], "width": [0.5, 1.0], "expand": [2, 3],
                       "kernel": [3, 5]}]}
TINY_RES = {"type": "resnet", "stem": {}, "head": None, "divisor": 4,
            "stages": [{"channels": 8, "stride": 1, "depth": [1, 2], "width": [0.5, 1.0]},
                       {"channels": 16, "stride": 2, "depth": [1, 2], "width": [0.5, 1.0]}]}


def toy_bundle(n_train: int = 128, n_eval: int = 64, batch_size: int = 32) -> DataBundle:
    meta = DataMeta(name="toy", classes=[str(i) for i in range(4)], num_classes=4, input_shape=(1, 8, 8),
                    mean=(0.0,), std=(1.0,))
    return DataBundle(train=toy_loader(n=n_train, batch_size=batch_size, seed=1),
                      val=toy_loader(n=n_eval, batch_size=batch_size, seed=2),
                      test=toy_loader(n=n_eval, batch_size=batch_size, seed=3), meta=meta)


def write_imagefolder(root, n_per_class: int = 24, seed: int = 0):
    """4 classes of 8x8 grey PNGs whose class is the bright quadrant (learnable in seconds)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c in range(4):
        d = root / f"c{c}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            img = rng.normal(90, 30, (8, 8))
            r, k = (c // 2) * 4, (c % 2) * 4
            img[r:r + 4, k:k + 4] += 110
            Image.fromarray(np.clip(img, 0, 255).astype("uint8"), mode="L").save(d / f"{i}.png")
    return root
