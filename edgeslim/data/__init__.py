"""Datasets as DataLoaders: ``load("fashion-mnist" | "fashion-mnist-detect" | "fashion-mnist-seg" |
"imagefolder:PATH" | "coco:PATH" | "segfolder:PATH" | "synthetic:C,H,W[:N]")``; meta.task says which
kind of labels the batches carry (classification, detection, segmentation)."""
from __future__ import annotations

from .bundle import IGNORE, TASKS, DataBundle, DataMeta
from .registry import FORMS, load

__all__ = ["DataBundle", "DataMeta", "FORMS", "IGNORE", "TASKS", "load"]
