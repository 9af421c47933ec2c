"""Datasets as DataLoaders: ``load("fashion-mnist" | "imagefolder:PATH" | "synthetic:C,H,W[:N]")``."""
from __future__ import annotations

from .bundle import DataBundle, DataMeta
from .registry import load

__all__ = ["DataBundle", "DataMeta", "load"]
