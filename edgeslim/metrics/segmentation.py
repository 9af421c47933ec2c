"""Mean intersection over union (``miou``) of per-pixel class maps.

One confusion matrix over every labelled pixel of the split (mask value 255 is ignored); the IoU of a
class is TP / (TP + FP + FN), and value is the mean over the classes present (in the masks or the
predictions: a class neither labels nor predicts anywhere has no IoU and is left out), in points
(0..100). extra: ``pixel_accuracy`` (percent of labelled pixels right). per_sample: None; an IoU over
all pixels is not a mean of per-image values, so the SLA uses a bound that needs none.

The runner gives, for a batch (N, C, H, W), class scores (N, K, H, W) (argmax over K is the class) or
class indices (N, H, W) directly (a model exported with its argmax).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from ..core.errors import DataError, ModelError
from .base import Run, Score, batches, to_numpy

IGNORE = 255


class MeanIoU:
    name = "miou"
    outputs = "first"
    task = "segmentation"

    def evaluate(self, run: Run, loader: Any, *, max_batches: int | None = None) -> Score:
        confusion = np.zeros((0, 0), dtype=np.int64)
        count = 0
        for x, masks in batches(loader, max_batches):
            masks = _masks(masks)
            count += len(masks)
            pred, k = _classes(np.asarray(run(to_numpy(x))), masks.shape)
            confusion = _accumulate(confusion, masks, pred, k)
        return _score(confusion, count)


def _masks(masks: Any) -> np.ndarray:
    if isinstance(masks, (list, tuple)):
        raise DataError("miou scores segmentation data, but the batches' labels are a list (detection "
                        "targets?)", hint="use map for detection data")
    masks = to_numpy(masks)
    if masks.ndim != 3 or masks.dtype.kind not in "iu":
        raise DataError(f"miou scores segmentation data, whose labels are integer class masks (N, H, W); got "
                        f"{masks.dtype} of shape {tuple(masks.shape)}", hint="use top1 for classification data")
    if (masks < 0).any():
        raise DataError(f"a segmentation mask holds the class index {int(masks.min())}; indices are 0..K-1, "
                        f"{IGNORE} for pixels to ignore")
    return masks.astype(np.int64, copy=False)


def _classes(out: np.ndarray, shape: tuple) -> tuple[np.ndarray, int]:
    """(predicted class per pixel (N, H, W), number of classes the output can express)."""
    if out.ndim == 4 and out.shape[0] == shape[0] and out.shape[2:] == shape[1:]:
        return out.argmax(1), out.shape[1]
    if out.ndim == 3 and out.shape == shape:
        if out.dtype.kind == "f" and not np.array_equal(out, np.round(out)):
            raise ModelError("a segmentation model's (N, H, W) output must hold class indices, got fractions")
        pred = out.astype(np.int64)
        if (pred < 0).any():
            raise ModelError(f"a segmentation model predicted the class index {int(pred.min())}")
        return pred, int(pred.max()) + 1 if pred.size else 0
    raise ModelError(f"miou needs class scores (N, K, H, W) or class indices (N, H, W) matching masks of shape "
                     f"{tuple(shape)}; the model gave {tuple(out.shape)}")


def _accumulate(confusion: np.ndarray, masks: np.ndarray, pred: np.ndarray, k_out: int) -> np.ndarray:
    valid = masks != IGNORE
    truth, guess = masks[valid], pred[valid]
    k = max(len(confusion), k_out, int(truth.max()) + 1 if truth.size else 0)
    if k > len(confusion):
        grown = np.zeros((k, k), dtype=np.int64)
        grown[: len(confusion), : len(confusion)] = confusion
        confusion = grown
    if truth.size:
        confusion += np.bincount(truth * k + guess, minlength=k * k).reshape(k, k)
    return confusion


def _score(confusion: np.ndarray, count: int) -> Score:
    total = int(confusion.sum())
    if total == 0:  # no labelled pixel: nothing to score
        return Score(None, None, count)
    tp = np.diag(confusion).astype(np.float64)
    union = confusion.sum(0) + confusion.sum(1) - tp
    present = union > 0
    miou = float((tp[present] / union[present]).mean())
    return Score(100.0 * miou, None, count, extra={"pixel_accuracy": 100.0 * float(tp.sum()) / total})
