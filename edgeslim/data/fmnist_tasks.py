"""``fashion-mnist-detect`` and ``fashion-mnist-seg``: detection and segmentation data made from
Fashion-MNIST on the spot, no download beyond Fashion-MNIST itself (see canvas.py for how a canvas is
made).

    fashion-mnist-detect[:SIZE[:N_TRAIN[:N_TEST]]]     e.g. fashion-mnist-detect:64:2000:500
    fashion-mnist-seg[:SIZE[:N_TRAIN[:N_TEST]]]

SIZE: canvas side in pixels (default 64, 32..256); N_TRAIN: canvases of the training data, validation
included (default 12,000); N_TEST: test canvases (default 2,000). Both forms are the same canvases:
detect labels each with its garments' boxes and classes (meta.classes: the 10 garments), seg with a
mask per pixel (class 0 "background", garment c is 1 + c: meta.classes has 11 entries).

Train canvases are made only from Fashion-MNIST training images and test canvases only from test
images, so no test garment is seen in training. Validation (round(N_TRAIN * val_fraction) canvases)
is made from training images carved off with ``seed``, so its garments are not in the training
canvases either. Train and validation follow ``seed``; the test canvases are the same for every seed.
"""
from __future__ import annotations

import collections
import os

import numpy as np
import torch

from ..core.errors import DataError, UsageError
from . import fashion_mnist
from .bundle import DataMeta, Normalizer, carve
from .canvas import Canvases, make_canvases
from .tasks import BoxSplit, MaskSplit

KINDS = {"fashion-mnist-detect": "detection", "fashion-mnist-seg": "segmentation"}
DEFAULTS = (64, 12_000, 2_000)
SIZES = (32, 256)
FORMS = tuple(f"{kind}[:SIZE[:N_TRAIN[:N_TEST]]]" for kind in KINDS)
_MAX_BYTES = 2**31  # images and masks of all splits together, as uint8
_CACHE: collections.OrderedDict = collections.OrderedDict()
_TEST_SEED = 0


def parse(kind: str, spec: str) -> tuple[int, int, int]:
    """'[SIZE[:N_TRAIN[:N_TEST]]]' (the part after the kind and its colon) -> (SIZE, N_TRAIN, N_TEST)."""
    form = f"{kind}[:SIZE[:N_TRAIN[:N_TEST]]]"
    parts = spec.split(":") if spec else []
    try:
        values = [int(p) for p in parts]
    except ValueError:
        values = []
    if len(parts) > 3 or len(values) != len(parts):
        raise UsageError(f"bad spec '{kind}:{spec}': need up to three integers",
                         hint=f"write {form}, e.g. {kind}:64:2000:500")
    size, n_train, n_test = values + list(DEFAULTS[len(values):])
    if not SIZES[0] <= size <= SIZES[1] or n_train < 2 or n_test < 1:
        raise UsageError(f"bad spec '{kind}:{spec}': SIZE must be {SIZES[0]}..{SIZES[1]}, N_TRAIN at least 2 and "
                         "N_TEST at least 1", hint=f"write {form}, e.g. {kind}:64:2000:500")
    if 2 * (n_train + n_test) * size * size > _MAX_BYTES:
        raise UsageError(f"{kind}:{spec} would hold {2 * (n_train + n_test) * size * size / 2**30:.1f} GiB of "
                         f"canvases (limit {_MAX_BYTES / 2**30:.0f} GiB)", hint="use a smaller SIZE or fewer canvases")
    return size, n_train, n_test


def canvases(arrays, *, size: int, n_train: int, n_test: int, val_fraction: float,
             seed: int) -> dict[str, Canvases | None]:
    """The canvases of each split ("train", "val" (None when val_fraction is 0), "test") from
    Fashion-MNIST's (train_x, train_y, test_x, test_y)."""
    train_x, train_y, test_x, test_y = (a.numpy() for a in arrays)
    train_x, test_x = train_x.reshape(-1, 28, 28), test_x.reshape(-1, 28, 28)
    n_val = max(1, round(n_train * val_fraction)) if val_fraction > 0 else 0
    if n_val >= n_train:
        raise DataError(f"cannot make {val_fraction:.0%} of {n_train} canvases a separate split and keep any for "
                        "training", hint="use a smaller val_fraction or a larger N_TRAIN")
    kept, carved = carve(len(train_x), val_fraction, seed)
    return {
        "train": make_canvases(train_x, train_y, kept.numpy(), n_train - n_val, size, [seed, 1]),
        "val": None if carved is None else make_canvases(train_x, train_y, carved.numpy(), n_val, size, [seed, 2]),
        "test": make_canvases(test_x, test_y, np.arange(len(test_x)), n_test, size, [_TEST_SEED, 3]),
    }


def build(kind: str, spec: str, *, val_fraction: float, seed: int, data_dir: str | os.PathLike | None,
          download: bool):
    """(train, val, test, meta) for load(); val is None when val_fraction is 0."""
    size, n_train, n_test = parse(kind, spec)
    files = fashion_mnist.find(data_dir, download=download)
    arrays = fashion_mnist.load_arrays(files)
    key = (fashion_mnist.files_key(files), size, n_train, n_test, val_fraction, seed)
    if key not in _CACHE:
        _CACHE[key] = canvases(arrays, size=size, n_train=n_train, n_test=n_test, val_fraction=val_fraction,
                               seed=seed)
        while len(_CACHE) > 2:
            _CACHE.popitem(last=False)
    made = _CACHE[key]
    sample = made["train"].images[:2000]
    mean, std = (round(float(sample.mean()) / 255, 4),), (round(max(float(sample.std()) / 255, 1e-3), 4),)
    normalize = Normalizer(mean, std)
    task = KINDS[kind]
    splits = [None if made[s] is None else _split(made[s], task, normalize) for s in ("train", "val", "test")]
    classes = list(fashion_mnist.CLASSES) if task == "detection" else ["background", *fashion_mnist.CLASSES]
    meta = DataMeta(name=f"{kind}:{size}:{n_train}:{n_test}", classes=classes, num_classes=len(classes),
                    input_shape=(1, size, size), mean=mean, std=std, task=task)
    return (*splits, meta)


def _split(c: Canvases, task: str, normalize: Normalizer):
    images = torch.from_numpy(c.images).unsqueeze(1)  # (N, 1, S, S) uint8
    if task == "detection":
        return BoxSplit(images, torch.from_numpy(c.boxes), torch.from_numpy(c.labels),
                        torch.from_numpy(c.offsets), normalize)
    return MaskSplit(images, torch.from_numpy(c.masks), normalize)
