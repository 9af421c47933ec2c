"""CenterNet-style detection (Zhou et al., "Objects as Points", 2019) for edgeslim's ``tinydet``:
the targets check, the heat-map encoding of boxes, the training loss and the post-processing.

A detector of this kind predicts, at output stride ``STRIDE``, three maps (``HeadMaps``): per-class
heat-map logits (N, K, h, w) whose sigmoid says "an object of class k is centred in this cell",
box sizes (N, 2, h, w) and sub-cell centre offsets (N, 2, h, w), both in units of the stride.

Boxes are (x1, y1, x2, y2) in input pixels; labels are 0-based over the data's classes (no
background class), as edgeslim's detection loaders give them.
"""
from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.errors import DataError, UsageError
from .structure import register_module_type

STRIDE = 4
MIN_OVERLAP = 0.7  # CenterNet: the Gaussian's radius keeps a box shifted that far at IoU >= 0.7
SIZE_WEIGHT, OFFSET_WEIGHT = 0.1, 1.0  # CenterNet's loss weights
TARGETS_HINT = ("a detection batch is (images, targets): targets a list with one dict per image, "
                "{'boxes': float (n, 4) x1,y1,x2,y2 in input pixels, 'labels': int64 (n,) in 0..K-1}")


class HeadMaps(NamedTuple):
    heatmap: Tensor  # (N, K, h, w) logits
    size: Tensor  # (N, 2, h, w): box width and height / STRIDE
    offset: Tensor  # (N, 2, h, w): box centre / STRIDE minus the cell it falls in


# ---------------------------------------------------------------------------- targets
def check_targets(targets: Any, batch: int, num_classes: int) -> None:
    """Detection targets as the loaders give them, for a batch of ``batch`` images; else one DataError
    naming what is wrong (checked on the whole batch at once: one device sync, not one per image)."""
    if not isinstance(targets, (list, tuple)) or len(targets) != batch:
        got = f"a {type(targets).__name__}" + (f" of {len(targets)}" if hasattr(targets, "__len__") else "")
        raise DataError(f"detection targets must be a list of {batch} dicts, one per image; got {got}",
                        hint=TARGETS_HINT)
    for i, t in enumerate(targets):
        if not (isinstance(t, dict) and isinstance(t.get("boxes"), Tensor) and isinstance(t.get("labels"), Tensor)):
            raise DataError(f"detection target {i} is not a dict of 'boxes' and 'labels' tensors", hint=TARGETS_HINT)
        b, lab = t["boxes"], t["labels"]
        if b.ndim != 2 or b.shape[1] != 4 or not b.is_floating_point():
            raise DataError(f"detection target {i}: 'boxes' must be float (n, 4), got {b.dtype} {tuple(b.shape)}",
                            hint=TARGETS_HINT)
        if lab.shape != b.shape[:1] or lab.is_floating_point() or lab.dtype == torch.bool:
            raise DataError(f"detection target {i}: 'labels' must be integers of shape ({b.shape[0]},), got "
                            f"{lab.dtype} {tuple(lab.shape)}", hint=TARGETS_HINT)
    boxes = torch.cat([t["boxes"] for t in targets]) if targets else torch.zeros(0, 4)
    labels = torch.cat([t["labels"] for t in targets]) if targets else torch.zeros(0, dtype=torch.long)
    if not len(labels):
        return
    bad_label = (labels < 0) | (labels >= num_classes)
    bad_box = ~torch.isfinite(boxes).all(1) | (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    flags = torch.stack([bad_label.any(), bad_box.any()]).tolist()
    if flags[0]:
        raise DataError(f"a detection label is outside 0..{num_classes - 1}: "
                        f"{int(labels[bad_label][0])} (the model has {num_classes} classes)",
                        hint="labels are 0-based over the data's classes; build the model with --num-classes")
    if flags[1]:
        raise DataError(f"a detection box is empty or not finite: {boxes[bad_box][0].tolist()}",
                        hint="boxes are x1, y1, x2, y2 in input pixels with x2 > x1 and y2 > y1")


def gaussian_radius(h: Tensor, w: Tensor, min_overlap: float = MIN_OVERLAP) -> Tensor:
    """CenterNet's heat-map radius (in cells) for boxes of size h x w cells: the smallest of its three
    corner-shift cases, computed as its reference code does."""
    o = min_overlap
    b1, c1 = h + w, w * h * (1 - o) / (1 + o)
    r1 = (b1 + torch.sqrt((b1 ** 2 - 4 * c1).clamp(min=0))) / 2
    b2, c2 = 2 * (h + w), (1 - o) * w * h
    r2 = (b2 + torch.sqrt((b2 ** 2 - 16 * c2).clamp(min=0))) / 2
    b3, c3 = -2 * o * (h + w), (o - 1) * w * h
    r3 = (b3 + torch.sqrt((b3 ** 2 - 16 * o * c3).clamp(min=0))) / 2
    return torch.minimum(torch.minimum(r1, r2), r3)


class Encoded(NamedTuple):
    heatmap: Tensor  # (N, K, h, w) targets in [0, 1], exactly 1 at each object's centre cell
    index: Tensor  # (M,) flat index of each object's centre cell into N * h * w
    size: Tensor  # (M, 2) width, height / STRIDE
    offset: Tensor  # (M, 2) centre / STRIDE minus its cell


def encode(targets: list[dict], num_classes: int, n: int, h: int, w: int, device: torch.device) -> Encoded:
    """The training targets of one batch on a (n, K, h, w) output grid: a Gaussian peak per object at
    its centre cell in its class's heat-map (overlapping peaks of one class keep their maximum)."""
    boxes = torch.cat([t["boxes"] for t in targets]).to(device, torch.float32) / STRIDE
    labels = torch.cat([t["labels"] for t in targets]).to(device, torch.long)
    image = torch.cat([torch.full((len(t["labels"]),), i, dtype=torch.long) for i, t in enumerate(targets)]).to(device)
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    px, py = cx.floor().clamp(0, w - 1), cy.floor().clamp(0, h - 1)  # a centre outside the map: its edge cell
    radius = gaussian_radius(bh, bw).floor().clamp(min=0)
    sigma2 = 2 * ((2 * radius + 1) / 6) ** 2
    dx = torch.arange(w, device=device, dtype=torch.float32)[None] - px[:, None]  # (M, w)
    dy = torch.arange(h, device=device, dtype=torch.float32)[None] - py[:, None]  # (M, h)
    gx = torch.exp(-dx ** 2 / sigma2[:, None]) * (dx.abs() <= radius[:, None])
    gy = torch.exp(-dy ** 2 / sigma2[:, None]) * (dy.abs() <= radius[:, None])
    peaks = (gy[:, :, None] * gx[:, None, :]).reshape(len(labels), h * w)
    heat = torch.zeros(n * num_classes, h * w, device=device)
    heat.scatter_reduce_(0, (image * num_classes + labels)[:, None].expand(-1, h * w), peaks, reduce="amax")
    index = image * (h * w) + (py * w + px).long()
    return Encoded(heat.view(n, num_classes, h, w), index, torch.stack([bw, bh], 1),
                   torch.stack([cx - px, cy - py], 1))


# ---------------------------------------------------------------------------- loss
def focal_loss(logits: Tensor, target: Tensor, alpha: float = 2.0, beta: float = 4.0) -> Tensor:
    """CenterNet's penalty-reduced pixel-wise focal loss on heat-map logits, summed over the batch and
    divided by the number of object centres (at least 1)."""
    p = logits.sigmoid()
    pos = target.eq(1).to(logits.dtype)
    pos_loss = F.logsigmoid(logits) * (1 - p) ** alpha * pos
    neg_loss = F.logsigmoid(-logits) * p ** alpha * (1 - target) ** beta * (1 - pos)
    return -(pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp(min=1)


def centernet_loss(maps: HeadMaps, targets: list[dict]) -> Tensor:
    """focal(heat-map) + 0.1 * L1(size) + L1(offset), the L1 terms at each object's centre cell."""
    heatmap, size, offset = maps
    n, k, h, w = heatmap.shape
    check_targets(targets, n, k)
    enc = encode(targets, k, n, h, w, heatmap.device)
    loss = focal_loss(heatmap, enc.heatmap)
    if not len(enc.index):  # no object in the batch: the regression heads learn nothing from it
        return loss + 0.0 * (size.sum() + offset.sum())
    pred_size = size.permute(0, 2, 3, 1).reshape(-1, 2)[enc.index]
    pred_offset = offset.permute(0, 2, 3, 1).reshape(-1, 2)[enc.index]
    return (loss + SIZE_WEIGHT * F.l1_loss(pred_size, enc.size)
            + OFFSET_WEIGHT * F.l1_loss(pred_offset, enc.offset))


def centernet_distill_loss(student: HeadMaps, teacher: HeadMaps) -> Tensor:
    """Distillation of head maps: the KL divergence of the student's heat-map probabilities from the
    teacher's at every cell and class (binary cross-entropy against the teacher's probabilities minus
    their entropy, so the term is 0 when the maps agree), plus the size and offset
    L1 terms (weighted as in ``centernet_loss``) at every cell, weighted by how sure the teacher is that
    an object's centre is there (its highest class probability at the cell)."""
    if [t.shape for t in student] != [t.shape for t in teacher]:
        raise UsageError(f"teacher and student head maps differ: {[tuple(t.shape) for t in teacher]} vs "
                         f"{[tuple(t.shape) for t in student]}")
    soft = teacher.heatmap.sigmoid()
    loss = (F.binary_cross_entropy_with_logits(student.heatmap, soft)
            - F.binary_cross_entropy_with_logits(teacher.heatmap, soft))
    weight = soft.amax(1, keepdim=True)
    norm = weight.sum().clamp(min=1e-6)
    size = (weight * (student.size - teacher.size).abs()).sum() / (2 * norm)
    offset = (weight * (student.offset - teacher.offset).abs()).sum() / (2 * norm)
    return loss + SIZE_WEIGHT * size + OFFSET_WEIGHT * offset


# ---------------------------------------------------------------------------- post-processing
class Postprocess(nn.Module):
    """Head maps -> the ``k`` best detections per image, a fixed number (fixed shapes keep the ONNX
    graph and every runtime simple): peaks are the cells that are the maximum of their 3x3
    neighbourhood in their class's heat-map (CenterNet's max-pool NMS), ranked by score; boxes are
    decoded from the size and offset at the peak and clipped to the image.

    Returns boxes (N, k, 4) float x1, y1, x2, y2 in input pixels, scores (N, k) in [0, 1] (sigmoid of
    the heat-map), labels (N, k) int64 0-based. When an image has fewer than ``k`` peaks the rest are
    filled with its best non-peak cells at score 0: filter on the score (e.g. > 0.3) to keep the
    confident ones. ``k`` is at most the number of heat-map cells (K * h * w)."""

    float_region = True  # box decoding and top-k stay float in an int8 model (edgeslim.quantization.graph)

    def __init__(self, k: int = 50, stride: int = STRIDE):
        super().__init__()
        self.k, self.stride = k, stride

    def forward(self, maps: HeadMaps | tuple, image_size: tuple[int, int]) -> tuple[Tensor, Tensor, Tensor]:
        heatmap, size, offset = maps
        n, num_classes, h, w = heatmap.shape
        heat = heatmap.sigmoid()
        peak = F.max_pool2d(heatmap, 3, stride=1, padding=1) == heatmap
        ranked = torch.where(peak, heat, heat - 1.0).flatten(1)  # every peak ahead of every non-peak
        top, idx = ranked.topk(min(self.k, num_classes * h * w), dim=1)
        labels = torch.div(idx, h * w, rounding_mode="floor")
        cell = idx - labels * (h * w)
        ys = torch.div(cell, w, rounding_mode="floor")
        xs = (cell - ys * w).to(heat.dtype)
        at = cell[:, None, :].expand(-1, 2, -1)
        wh = size.flatten(2).gather(2, at).clamp(min=0) * self.stride
        off = offset.flatten(2).gather(2, at)
        cx, cy = (xs + off[:, 0]) * self.stride, (ys.to(heat.dtype) + off[:, 1]) * self.stride
        height, width = image_size
        boxes = torch.stack([(cx - wh[:, 0] / 2).clamp(0, width), (cy - wh[:, 1] / 2).clamp(0, height),
                             (cx + wh[:, 0] / 2).clamp(0, width), (cy + wh[:, 1] / 2).clamp(0, height)], dim=-1)
        return boxes, top.clamp(min=0), labels

    def extra_repr(self) -> str:
        return f"k={self.k}, stride={self.stride}"


register_module_type(Postprocess, lambda m: {"k": m.k, "stride": m.stride})  # a changed top-k survives checkpoints
