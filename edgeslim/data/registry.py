"""Dataset names -> loaders. ``load(name)`` is the one entry point."""
from __future__ import annotations

import os

from ..core.errors import UsageError
from . import coco, fashion_mnist, fmnist_tasks, imagefolder, segfolder, synthetic
from .bundle import DataBundle, check_labels, make_loader

FORMS = (
    "fashion-mnist",
    fmnist_tasks.FORMS[0] + "  (detection canvases made from Fashion-MNIST)",
    fmnist_tasks.FORMS[1] + "  (segmentation canvases made from Fashion-MNIST)",
    "imagefolder:PATH[:SIZE]  (class subfolders of images; needs torchvision)",
    coco.FORM + "  (images plus a COCO instances JSON: detection)",
    segfolder.FORM + "  (images/ plus same-named PNG class masks in masks/: segmentation)",
    synthetic.FORM + "  (random unlabelled inputs)",
)


def load(
    name: str,
    *,
    batch_size: int = 128,
    val_fraction: float = 0.1,
    seed: int = 0,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    num_workers: int = 0,
    eval_batch_size: int | None = None,
) -> DataBundle:
    """Load a dataset by name as train / val / test DataLoaders plus its DataMeta.

    Batches are ``(x, y)``: x float32 (N, C, H, W) normalised with meta.mean /
    meta.std; y by meta.task: classification int64 (N,) (-1 where the data has no
    labels), detection a list of N {"boxes": float32 (n, 4) xyxy, "labels": int64
    (n,)} dicts, segmentation int64 (N, H, W) masks (255: ignore). Train is shuffled
    (deterministically from ``seed``); val and test are not. The validation
    split is carved from the training data, never from the test data, and is
    None when ``val_fraction`` is 0. ``eval_batch_size`` (default: batch_size)
    is the batch size of val and test.
    """
    eval_batch_size = batch_size if eval_batch_size is None else eval_batch_size
    for label, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise UsageError(f"{label} must be a positive integer, got {value!r}")
    if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) or not 0 <= val_fraction < 1:
        raise UsageError(f"val_fraction must be in [0, 1), got {val_fraction!r}", hint="0 means no validation split")
    if isinstance(num_workers, bool) or not isinstance(num_workers, int) or num_workers < 0:
        raise UsageError(f"num_workers must be a non-negative integer, got {num_workers!r}")

    splits = _build(name, val_fraction=val_fraction, seed=seed, data_dir=data_dir, download=download)
    train, val, test, meta = splits
    check_labels(train, meta)
    return DataBundle(
        train=make_loader(train, batch_size=batch_size, num_workers=num_workers, shuffle_seed=seed),
        val=make_loader(val, batch_size=eval_batch_size, num_workers=num_workers),
        test=make_loader(test, batch_size=eval_batch_size, num_workers=num_workers),
        meta=meta,
    )


def _build(name: str, *, val_fraction: float, seed: int, data_dir, download: bool):
    """(train, val, test, meta) of the dataset ``name`` names."""
    kind, _, arg = name.strip().partition(":")
    kind = kind.lower().replace("_", "-")
    if kind in ("fashion-mnist", "fashionmnist") and not arg:
        return fashion_mnist.build(val_fraction=val_fraction, seed=seed, data_dir=data_dir, download=download)
    if kind in fmnist_tasks.KINDS:
        return fmnist_tasks.build(kind, arg, val_fraction=val_fraction, seed=seed, data_dir=data_dir,
                                  download=download)
    builders = {"coco": coco.build, "segfolder": segfolder.build, "imagefolder": imagefolder.build}
    if kind in builders and arg:
        return builders[kind](arg, val_fraction=val_fraction, seed=seed)
    if kind == "synthetic":
        return synthetic.build(arg, val_fraction=val_fraction, seed=seed)
    raise UsageError(f"unknown dataset {name!r}", hint="valid forms: " + "; ".join(FORMS))
