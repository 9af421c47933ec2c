"""COCO mean average precision (``map``) through torchmetrics' MeanAveragePrecision.

value: mAP@[.5:.95] (IoU thresholds 0.50, 0.55, ... 0.95; up to 100 detections per image), in points
(0..100). extra: ``map_50`` (mAP@.5), ``map_75`` and ``mar_100`` (mean recall at 100 detections), the
same points. per_sample: None; mAP ranks every detection of the whole split together, so it is not a
mean of per-image values, and the SLA uses a bound that needs none.

The runner is called on one image at a time (batch 1, the export convention of detection models)
and must give every output (``outputs = "all"``): boxes (n, 4) xyxy in input pixels, scores (n,),
labels (n,) 0-based class indices; a leading batch axis of 1 is dropped. The evaluation itself is
pycocotools' (or faster-coco-eval's when pycocotools is absent).
"""
from __future__ import annotations

import contextlib
import io
from typing import Any

import numpy as np

from ..core.errors import DataError, EdgeslimError, ModelError
from .base import Run, Score, batches, first_line, to_numpy

EXTRA = ("map_50", "map_75", "mar_100")
INSTALL = "pip install 'edgeslim[detection]' (torchmetrics with pycocotools or faster-coco-eval)"


class MeanAP:
    name = "map"
    outputs = "all"
    task = "detection"

    def evaluate(self, run: Run, loader: Any, *, max_batches: int | None = None) -> Score:
        mean_ap, count, boxes = _new_metric(), 0, 0
        for x, targets in batches(loader, max_batches):
            x = to_numpy(x)
            truth = [_target(t, i) for i, t in enumerate(_targets(targets, len(x)))]
            preds = [_prediction(run(x[i:i + 1])) for i in range(len(x))]
            mean_ap.update(preds, truth)
            count += len(x)
            boxes += sum(len(t["labels"]) for t in truth)
        if boxes == 0:  # no ground truth: mAP is undefined (torchmetrics says -1)
            return Score(None, None, count)
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress; --json owns stdout
            result = mean_ap.compute()
        figures = {k: _points(result[k]) for k in ("map", *EXTRA)}
        return Score(figures.pop("map"), None, count, extra=figures)


def _new_metric():
    try:
        from torchmetrics.detection import MeanAveragePrecision
    except ImportError:
        raise EdgeslimError("the map metric needs torchmetrics, which is not installed", hint=INSTALL) from None
    for backend, module in (("pycocotools", "pycocotools"), ("faster_coco_eval", "faster_coco_eval")):
        try:
            __import__(module)
        except ImportError:
            continue
        return MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend=backend)
    raise EdgeslimError("the map metric needs pycocotools or faster-coco-eval, neither is installed", hint=INSTALL)


def _points(v: Any) -> float | None:
    v = float(v)
    return None if v < 0 else 100.0 * v  # torchmetrics' -1: no ground truth of that kind


def _targets(targets: Any, n: int) -> list:
    if not isinstance(targets, (list, tuple)) or not all(isinstance(t, dict) for t in targets):
        raise DataError(f"map scores detection data, but the batches' labels are a {type(targets).__name__}, "
                        "not a list of {'boxes', 'labels'} dicts", hint="use top1 for classification, miou for "
                        "segmentation, or detection data (coco:PATH, fashion-mnist-detect)")
    if len(targets) != n:
        raise DataError(f"a detection batch has {n} images but {len(targets)} targets")
    return list(targets)


def _target(t: dict, i: int) -> dict:
    import torch

    try:
        boxes = torch.as_tensor(to_numpy(t["boxes"]), dtype=torch.float32).reshape(-1, 4)
        labels = torch.as_tensor(to_numpy(t["labels"]), dtype=torch.int64).reshape(-1)
    except (KeyError, ValueError, RuntimeError, TypeError) as e:
        raise DataError(f"detection target {i} of a batch is not {{'boxes': (n, 4), 'labels': (n,)}}: "
                        f"{first_line(e)}") from None
    if len(boxes) != len(labels):
        raise DataError(f"detection target {i} of a batch has {len(boxes)} boxes but {len(labels)} labels")
    return {"boxes": boxes, "labels": labels}


def _prediction(out: Any) -> dict:
    """boxes / scores / labels of one image's outputs as the tensors torchmetrics takes."""
    import torch

    if not isinstance(out, (tuple, list)) or len(out) < 3:
        raise ModelError("map needs every output of a detection model (boxes, scores, labels); the runner "
                         f"gave {_describe(out)}", hint="build the runner with outputs='all', e.g. "
                         "edgeslim.metrics.torch_runner(model, outputs='all')")
    boxes, scores, labels = (np.asarray(to_numpy(o)) for o in out[:3])
    boxes, scores, labels = (a[0] if a.ndim == want + 1 and a.shape[0] == 1 else a  # a batch axis of 1
                             for a, want in ((boxes, 2), (scores, 1), (labels, 1)))
    n = len(scores) if scores.ndim == 1 else -1
    if boxes.ndim != 2 or boxes.shape[1] != 4 or scores.ndim != 1 or labels.shape != (n,) or len(boxes) != n:
        raise ModelError(f"detection outputs must be boxes (n, 4), scores (n,), labels (n,); got shapes "
                         f"{tuple(boxes.shape)}, {tuple(scores.shape)}, {tuple(labels.shape)}")
    if not (np.isfinite(boxes).all() and np.isfinite(scores).all()):
        raise ModelError("a detection model gave a NaN or infinite box or score")
    if labels.dtype.kind == "f" and not np.array_equal(labels, np.round(labels)):
        raise ModelError(f"detection labels must be class indices, got {labels[labels != np.round(labels)][0]}")
    return {"boxes": torch.as_tensor(boxes, dtype=torch.float32),
            "scores": torch.as_tensor(scores, dtype=torch.float32), "labels": torch.as_tensor(labels.astype(np.int64))}


def _describe(out: Any) -> str:
    if isinstance(out, (tuple, list)):
        return f"{len(out)} output{'s' if len(out) != 1 else ''}"
    shape = getattr(out, "shape", None)
    return f"one {type(out).__name__}" + (f" of shape {tuple(shape)}" if shape is not None else "")
