"""The zoo's dense-prediction models, for 64x64 canvases (fashion-mnist-detect / -seg):

- ``tinydet``: an anchor-free single-stage detector in the CenterNet style (edgeslim.models.centernet):
  a stride-16 conv backbone, a U-Net-like neck back to stride 4 and three heads (class heat-map,
  box size, centre offset). ``forward`` in training returns the raw head maps (``HeadMaps``) and
  ``detection_loss(outputs, targets)`` is the loss; in eval mode ``forward`` runs the separate
  ``postprocess`` module (max-pool peak NMS, top-k, box decoding) and, for batch 1, returns
  torchvision's export convention: boxes (k, 4) float x1, y1, x2, y2 in input pixels, scores (k,) and
  labels (k,) int64, with a fixed k (``topk``, default 50; low-score entries included). For a larger
  batch that forward returns the first image's detections; ``predict(x)`` gives every image's.
- ``tinyseg``: an encoder-decoder with an LR-ASPP head (Howard et al., 2019): a stride-16 branch
  gated by global context, joined with stride-4 features; per-pixel class logits (N, K, H, W) at
  the input resolution in both modes (the loss: cross-entropy, 255 = ignore; edgeslim.train.task).

Both are plain conv + BatchNorm + ReLU stacks (no custom layer with its own parameters), so
channel pruning traces through backbone, neck and heads, and int8 quantizes every conv; the
detector's post-processing has no weights and stays float.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..core.errors import UsageError
from .centernet import HeadMaps, Postprocess, centernet_distill_loss, centernet_loss
from .zoo import Size, image_size, register_model

MIN_SIZE = 16  # four stride-2 convolutions leave at least one cell
HEATMAP_PRIOR = 0.1  # initial heat-map score (CenterNet's bias init): the focal loss starts sane


def conv_bn_relu(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride, k // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


def _stage(cin: int, cout: int) -> nn.Sequential:
    """Halve the resolution, then one more 3x3 conv."""
    return nn.Sequential(conv_bn_relu(cin, cout, 3, 2), conv_bn_relu(cout, cout))


def _check(name: str, width: int, in_channels: int, num_classes: int, input_size) -> None:
    image_size(name, input_size, minimum=MIN_SIZE, default=64)
    for what, v in (("width", width), ("in_channels", in_channels), ("num_classes", num_classes)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise UsageError(f"{name}: {what} must be a positive integer, got {v!r}")


def _up(x: Tensor, like: Tensor, mode: str = "nearest") -> Tensor:
    kw = {} if mode == "nearest" else {"align_corners": False}
    return F.interpolate(x, size=like.shape[-2:], mode=mode, **kw)


class TinyDet(nn.Module):
    """CenterNet-style detector: backbone to stride 16, neck back to stride 4, heat-map / size / offset heads."""

    task = "detection"
    output_names = ("boxes", "scores", "labels")  # its exported file's outputs (batch 1, torchvision's convention)

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 16, topk: int = 50,
                 input_size: Size | None = None):
        super().__init__()
        _check("tinydet", width, in_channels, num_classes, input_size)
        if isinstance(topk, bool) or not isinstance(topk, int) or topk < 1:
            raise UsageError(f"tinydet: topk must be a positive integer, got {topk!r}")
        c1, c2, c3, c4, head = width, 2 * width, 4 * width, 6 * width, 2 * width
        self.num_classes = num_classes
        self.stem = conv_bn_relu(in_channels, c1, 3, 2)  # /2
        self.stage1, self.stage2, self.stage3 = _stage(c1, c2), _stage(c2, c3), _stage(c3, c4)  # /4 /8 /16
        self.fuse2 = conv_bn_relu(c4 + c3, c3)  # /8: the upsampled /16 features joined with the /8 ones
        self.fuse1 = conv_bn_relu(c3 + c2, head)  # /4
        self.heatmap_head = nn.Sequential(conv_bn_relu(head, head), nn.Conv2d(head, num_classes, 1))
        self.size_head = nn.Sequential(conv_bn_relu(head, head), nn.Conv2d(head, 2, 1))
        self.offset_head = nn.Sequential(conv_bn_relu(head, head), nn.Conv2d(head, 2, 1))
        self.postprocess = Postprocess(topk)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        nn.init.constant_(self.heatmap_head[-1].bias, -math.log(1 / HEATMAP_PRIOR - 1))
        for head_conv in (self.heatmap_head[-1], self.size_head[-1], self.offset_head[-1]):
            nn.init.normal_(head_conv.weight, std=0.01)
        nn.init.zeros_(self.size_head[-1].bias)
        nn.init.zeros_(self.offset_head[-1].bias)

    def heads(self, x: Tensor) -> HeadMaps:
        """The raw head maps at stride 4, whatever the mode."""
        s1 = self.stage1(self.stem(x))
        s2 = self.stage2(s1)
        s3 = self.stage3(s2)
        p2 = self.fuse2(torch.cat([_up(s3, s2), s2], 1))
        p1 = self.fuse1(torch.cat([_up(p2, s1), s1], 1))
        return HeadMaps(self.heatmap_head(p1), self.size_head(p1), self.offset_head(p1))

    def forward(self, x: Tensor):
        if self.training:
            return self.heads(x)
        maps = self.heads(x)  # the whole batch: BatchNorm re-estimates run this forward
        boxes, scores, labels = self.postprocess(HeadMaps(*(m[:1] for m in maps)), x.shape[-2:])
        return boxes[0], scores[0], labels[0]

    def detection_loss(self, outputs: HeadMaps, targets: list[dict]) -> Tensor:
        """CenterNet's loss of the training-mode outputs against the batch's targets (a list of
        {"boxes", "labels"} dicts, labels 0-based)."""
        return centernet_loss(outputs, targets)

    def distill_loss(self, outputs: HeadMaps, teacher_outputs: HeadMaps) -> Tensor:
        """Distillation from a teacher's training-mode head maps (``centernet_distill_loss``)."""
        return centernet_distill_loss(HeadMaps(*outputs), HeadMaps(*teacher_outputs))

    @torch.no_grad()
    def predict(self, x: Tensor) -> list[dict[str, Tensor]]:
        """Every image's ``topk`` detections, torchvision-style: one {"boxes", "scores", "labels"} per
        image (computed in eval mode; the mode is put back)."""
        was_training = self.training
        self.eval()
        try:
            boxes, scores, labels = self.postprocess(self.heads(x), tuple(x.shape[-2:]))
        finally:
            self.train(was_training)
        return [{"boxes": b, "scores": s, "labels": lab} for b, s, lab in zip(boxes, scores, labels)]


class TinySeg(nn.Module):
    """Encoder to stride 16 with an LR-ASPP head joined at stride 4; logits at the input resolution."""

    task = "segmentation"

    def __init__(self, num_classes: int = 11, in_channels: int = 1, width: int = 16, input_size: Size | None = None):
        super().__init__()
        _check("tinyseg", width, in_channels, num_classes, input_size)
        c1, c2, c3, c4, inter = width, 2 * width, 4 * width, 6 * width, 4 * width
        self.stem = conv_bn_relu(in_channels, c1, 3, 2)  # /2
        self.stage1, self.stage2, self.stage3 = _stage(c1, c2), _stage(c2, c3), _stage(c3, c4)  # /4 /8 /16
        self.branch = conv_bn_relu(c4, inter, 1)
        self.gate = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(c4, inter, 1), nn.Sigmoid())  # global context
        self.high_classifier = nn.Conv2d(inter, num_classes, 1)
        self.low_classifier = nn.Conv2d(c2, num_classes, 1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        low = self.stage1(self.stem(x))
        high = self.stage3(self.stage2(low))
        y = _up(self.branch(high) * self.gate(high), low, "bilinear")
        y = self.high_classifier(y) + self.low_classifier(low)
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


@register_model("tinydet", input_shape=(1, 64, 64), min_size=MIN_SIZE, task="detection",
                description="CenterNet-style detector, stride 4 (heat-map/size/offset heads, top-k boxes)")
def tinydet(num_classes: int = 10, in_channels: int = 1, width: int = 16, topk: int = 50,
            input_size: Size | None = None) -> nn.Module:
    return TinyDet(num_classes, in_channels, width, topk, input_size)


@register_model("tinyseg", input_shape=(1, 64, 64), min_size=MIN_SIZE, task="segmentation",
                description="encoder + LR-ASPP head, per-pixel class logits at the input resolution")
def tinyseg(num_classes: int = 11, in_channels: int = 1, width: int = 16, input_size: Size | None = None) -> nn.Module:
    return TinySeg(num_classes, in_channels, width, input_size)
