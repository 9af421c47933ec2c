"""torchvision's detectors and segmenters (``torchvision:NAME`` for any builder in
torchvision.models.detection or .segmentation) behind the interface of edgeslim's own ``tinydet`` and
``tinyseg``, so that one trainer, one export convention and one set of metrics serve both.

Always built without pretrained weights (``weights=None, weights_backbone=None``: nothing downloads).

Detectors (``TorchvisionDetector``, task "detection"): ``num_classes`` counts the data's classes; the
torchvision model gets one more, its class 0 being the background, and labels are shifted by one on
the way in and out, so that labels stay 0-based over the data's classes as in every edgeslim loader.
torchvision computes the losses inside ``forward`` from images and targets together, so in training
mode ``forward(x)`` only prepares the images and ``detection_loss(outputs, targets)`` runs the model
and returns the sum of its losses -- the interface ``tinydet`` has, which edgeslim's trainer calls.
In eval mode ``forward(x)`` returns the first image's (boxes (n, 4) x1, y1, x2, y2 in input pixels,
scores (n,), labels (n,) int64), torchvision's convention for batch 1 (n varies: torchvision keeps the
detections above its own score threshold, at most ``detections_per_img``); ``predict(x)`` gives every
image's. The images reach the model as they are: edgeslim's loaders normalise them already, so the
model's own normalisation is made the identity (``image_mean`` 0, ``image_std`` 1; pass them to
override). torchvision still resizes the images internally (e.g. to 320 px for the ``*_320`` models,
``min_size`` / ``max_size`` for the R-CNNs) and maps the boxes back to input pixels.

Segmenters (``TorchvisionSegmenter``, task "segmentation"): ``forward(x)`` returns the "out" logits
(N, K, H, W) at the input resolution (an auxiliary head, if asked for, is not used).

Input channels: the models take RGB. ``in_channels=1`` (Fashion-MNIST) repeats the one channel three
times inside the wrapper, so the architecture stays torchvision's own; other counts are refused.
"""
from __future__ import annotations

import difflib
from typing import Any

import torch
from torch import Tensor, nn

from ..core.errors import DataError, UsageError
from .centernet import check_targets

COCO_CLASSES = 90  # torchvision's default detector has 91 outputs: the background and 90 COCO labels


def task_of_builder(name: str) -> str | None:
    """"detection" / "segmentation" for a builder of torchvision.models.detection / .segmentation, else None."""
    import torchvision

    for task, module in (("detection", torchvision.models.detection),
                         ("segmentation", torchvision.models.segmentation)):
        if name in torchvision.models.list_models(module=module):
            return task
    return None


def task_builders() -> list[str]:
    import torchvision

    return [n for m in (torchvision.models.detection, torchvision.models.segmentation)
            for n in torchvision.models.list_models(module=m)]


def build(name: str, task: str, num_classes: int | None, in_channels: int | None, kwargs: dict[str, Any]) -> nn.Module:
    """The wrapped torchvision model for builder ``name`` of ``task``."""
    import torchvision

    if in_channels not in (None, 1, 3):
        raise UsageError(f"torchvision:{name} takes 1 or 3 input channels, not {in_channels}",
                         hint="1-channel images are repeated to RGB; convert other images to RGB")
    if num_classes is not None and (type(num_classes) is not int or num_classes < 1):
        raise UsageError(f"torchvision:{name}: num_classes must be a positive integer, got {num_classes!r}")
    args = dict(kwargs, weights=None, weights_backbone=None)  # nothing is downloaded at run time
    if task == "detection":
        args.setdefault("image_mean", [0.0, 0.0, 0.0])  # the loaders normalise already
        args.setdefault("image_std", [1.0, 1.0, 1.0])
        args["num_classes"] = (num_classes if num_classes is not None else COCO_CLASSES) + 1
    elif num_classes is not None:
        args["num_classes"] = num_classes
    try:
        model = torchvision.models.get_model(name, **args)
    except (TypeError, ValueError, NotImplementedError) as e:  # an option the builder refuses
        raise UsageError(f"torchvision cannot build {name} with {kwargs or 'no extra arguments'}: "
                         f"{str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if task == "detection":
        return TorchvisionDetector(model, args["num_classes"] - 1, in_channels or 3)
    return TorchvisionSegmenter(model, in_channels or 3)


def unknown(name: str) -> UsageError:
    import torchvision

    names = torchvision.models.list_models(module=torchvision.models) + task_builders()
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    return UsageError(f"unknown torchvision model {name!r}",
                      hint=f"did you mean {', '.join(close)}?" if close else "see torchvision.models.list_models()")


def _rgb(x: Tensor, in_channels: int) -> Tensor:
    if x.ndim != 4 or x.shape[1] != in_channels:
        raise UsageError(f"the model takes (N, {in_channels}, H, W) images, got {tuple(x.shape)}")
    return x.expand(-1, 3, -1, -1) if in_channels == 1 else x


class TorchvisionDetector(nn.Module):
    """A torchvision detector with tinydet's interface (see the module docstring)."""

    task = "detection"
    output_names = ("boxes", "scores", "labels")

    def __init__(self, model: nn.Module, num_classes: int, in_channels: int = 3):
        super().__init__()
        self.model, self.num_classes, self.in_channels = model, num_classes, in_channels

    def forward(self, x: Tensor):
        if self.training:  # the losses need the targets too: detection_loss runs the model
            return x
        out = self.model(list(_rgb(x, self.in_channels)))[0]  # the whole batch: BatchNorm re-estimates run this
        return out["boxes"], out["scores"], out["labels"] - 1

    def detection_loss(self, outputs: Tensor, targets: list[dict]) -> Tensor:
        """The sum of torchvision's losses on the images ``forward`` returned in training mode."""
        if not self.model.training:
            raise UsageError("detection_loss needs the model in training mode (model.train()): torchvision "
                             "detectors compute their losses only then")
        check_targets(targets, len(outputs), self.num_classes)
        missing = [k for k in self._extra_targets() if any(k not in t for t in targets)]
        if missing:
            raise DataError(f"{type(self.model).__name__} trains on {' and '.join(missing)} as well as boxes, and the "
                            "targets have none", hint="edgeslim's detection data has boxes and labels: use a box "
                                                      "detector (ssdlite, fasterrcnn, retinanet, fcos)")
        shifted = [{**t, "labels": t["labels"].long() + 1} for t in targets]  # torchvision's 0 is the background
        losses = self.model(list(_rgb(outputs, self.in_channels)), shifted)
        return sum(losses.values())

    def _extra_targets(self) -> list[str]:
        """Target keys beyond boxes and labels this model's training needs (Mask / Keypoint R-CNN)."""
        heads = getattr(self.model, "roi_heads", None)
        return [key for key, has in (("masks", "has_mask"), ("keypoints", "has_keypoint"))
                if heads is not None and getattr(heads, has, lambda: False)()]

    @torch.no_grad()
    def predict(self, x: Tensor) -> list[dict[str, Tensor]]:
        """Every image's detections, labels 0-based (computed in eval mode; the mode is put back)."""
        was_training = self.training
        self.eval()
        try:
            outs = self.model(list(_rgb(x, self.in_channels)))
        finally:
            self.train(was_training)
        return [{"boxes": o["boxes"], "scores": o["scores"], "labels": o["labels"] - 1} for o in outs]


class TorchvisionSegmenter(nn.Module):
    """A torchvision segmenter whose forward returns the "out" logits (N, K, H, W)."""

    task = "segmentation"

    def __init__(self, model: nn.Module, in_channels: int = 3):
        super().__init__()
        self.model, self.in_channels = model, in_channels

    def forward(self, x: Tensor) -> Tensor:
        return self.model(_rgb(x, self.in_channels))["out"]
