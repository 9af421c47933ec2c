"""In-memory splits of detection and segmentation data, batched like TensorSplit.

Detection batches are ``(x, targets)``: x float32 (N, C, H, W) normalised, targets a list of N dicts
{"boxes": float32 (n, 4) xyxy in input pixels, "labels": int64 (n,) 0-based}. Segmentation batches
are ``(x, masks)``: masks int64 (N, H, W) of class indices, IGNORE (255) where no class is scored.
"""
from __future__ import annotations

import torch

from .bundle import BatchedSplit, Batch, Normalizer


class BoxSplit(BatchedSplit):
    """Rows ``rows`` of uint8 images (N, C, H, W) and their boxes: every object's box (G, 4) and label
    (G,) in image order, image i owning objects ``offsets[i]:offsets[i + 1]``."""

    def __init__(self, images: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, offsets: torch.Tensor,
                 normalize: Normalizer, rows: torch.Tensor | None = None):
        self.images, self.boxes, self.labels, self.offsets = images, boxes, labels, offsets
        self.normalize = normalize
        self.rows = torch.arange(len(images)) if rows is None else rows

    def __len__(self) -> int:
        return len(self.rows)

    def target(self, row: int) -> dict:
        a, b = int(self.offsets[row]), int(self.offsets[row + 1])
        return {"boxes": self.boxes[a:b], "labels": self.labels[a:b]}

    def labels_present(self) -> set[int]:
        owner = torch.repeat_interleave(torch.arange(len(self.offsets) - 1), self.offsets.diff())
        return set(self.labels[torch.isin(owner, self.rows)].unique().tolist())

    def __getitems__(self, indices: list[int]) -> Batch:
        rows = self.rows[torch.as_tensor(indices, dtype=torch.long)]
        return self.normalize(self.images[rows]), [self.target(r) for r in rows.tolist()]


class MaskSplit(BatchedSplit):
    """Rows ``rows`` of uint8 images (N, C, H, W) and uint8 class masks (N, H, W)."""

    def __init__(self, images: torch.Tensor, masks: torch.Tensor, normalize: Normalizer,
                 rows: torch.Tensor | None = None):
        self.images, self.masks, self.normalize = images, masks, normalize
        self.rows = torch.arange(len(images)) if rows is None else rows

    def __len__(self) -> int:
        return len(self.rows)

    def labels_present(self) -> set[int]:
        counts = torch.bincount(self.masks[self.rows].flatten().to(torch.int64), minlength=256)
        return {c for c in torch.nonzero(counts[:255]).flatten().tolist()}

    def __getitems__(self, indices: list[int]) -> Batch:
        rows = self.rows[torch.as_tensor(indices, dtype=torch.long)]
        return self.normalize(self.images[rows]), self.masks[rows].to(torch.int64)
