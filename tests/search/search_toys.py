"""Tiny data and models for the search tests: a learnable toy task, a few batches per split."""
from __future__ import annotations

from edgeslim.data import DataBundle
from edgeslim.data.bundle import DataMeta
from edgeslim.testing.models import TinyConvNet, toy_loader

SPEC = "edgeslim.testing.models:TinyConvNet"


def toy_bundle(n_train: int = 256, n_eval: int = 96, batch_size: int = 32) -> DataBundle:
    meta = DataMeta(name="toy", classes=[str(i) for i in range(4)], num_classes=4, input_shape=(1, 8, 8),
                    mean=(0.0,), std=(1.0,))
    return DataBundle(train=toy_loader(n=n_train, batch_size=batch_size, seed=1),
                      val=toy_loader(n=n_eval, batch_size=batch_size, seed=2),
                      test=toy_loader(n=n_eval, batch_size=batch_size, seed=3), meta=meta)


def trained_toy(epochs: int = 6):
    from edgeslim.train import fit

    model = TinyConvNet(num_classes=4, width=16)
    fit(model, toy_bundle(), epochs=epochs, lr=0.05, progress=False, seed=0)
    return model.eval()




def write_imagefolder(root, n_per_class: int = 40, seed: int = 0):
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


SMALL_SPACE = {"prune_ratio": [0.0, 0.3], "allocation": ["uniform"], "lowrank": [False], "distill": [False],
               "finetune_epochs": [0, 1], "finetune_batches": 3}
