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

