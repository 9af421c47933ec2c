"""The model zoo: small reference networks for 28-32 px inputs (Fashion-MNIST, CIFAR), and a small
detector and segmenter for 64 px canvases (``tinydet``, ``tinyseg``: edgeslim.models.dense).

Each entry is a factory ``fn(num_classes, in_channels, input_size, **kw) -> nn.Module`` registered
by name with its default input shape and its task (``TASKS``: what its outputs are and which loss
trains it; see edgeslim.train.task). ``input_size`` is (H, W) or one side: the LeNets size their
first fully connected layer from it; the others pool adaptively (or are fully convolutional) and
take any size from a minimum (``ZooEntry.min_size``), which the factory checks. Models are always
built fresh.
"""
from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, Sequence

from torch import nn

from ..core.errors import UsageError

Size = int | Sequence[int]
TASKS = ("classification", "detection", "segmentation")


@dataclasses.dataclass(frozen=True)
class ZooEntry:
    name: str
    factory: Callable[..., nn.Module]
    input_shape: tuple[int, int, int]  # (C, H, W) default
    description: str
    min_size: int = 1  # the smallest side (pixels) the model takes
    task: str = "classification"  # one of TASKS


ZOO: dict[str, ZooEntry] = {}


def register_model(name: str, *, input_shape=(1, 28, 28), description: str = "", min_size: int = 1,
                   task: str = "classification"):
    if task not in TASKS:
        raise UsageError(f"zoo model {name!r}: unknown task {task!r}", hint=f"one of: {', '.join(TASKS)}")

    def deco(fn):
        ZOO[name] = ZooEntry(name, fn, tuple(input_shape), description or (fn.__doc__ or "").strip().split("\n")[0],
                             min_size, task)
        return fn

    return deco


def task_of(model: nn.Module) -> str:
    """The task a built model serves: its ``task`` attribute (edgeslim's detectors and segmenters, the
    torchvision wrappers set one), else "classification"."""
    task = getattr(model, "task", None)
    return task if task in TASKS else "classification"


def image_size(name: str, input_size: Size | None, *, minimum: int = 1, default: int = 28) -> tuple[int, int]:
    """``input_size`` (one side, or (H, W); None: the default) as (H, W), checked against ``minimum``."""
    if input_size is None:
        return default, default
    side = isinstance(input_size, int) and not isinstance(input_size, bool)
    hw = (input_size, input_size) if side else tuple(input_size) if isinstance(input_size, (list, tuple)) else ()
    if len(hw) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in hw):
        raise UsageError(f"{name}: input_size must be one positive side or (height, width), got {input_size!r}")
    if min(hw) < minimum:
        raise UsageError(f"{name} takes inputs of at least {minimum}x{minimum} pixels, got {hw[0]}x{hw[1]}",
                         hint=f"resize the data (imagefolder:PATH:SIZE with SIZE >= {minimum}) or choose another model")
    return hw


def size_kwargs(spec: str, input_size: Size | None) -> dict[str, Any]:
    """The create() keyword that builds zoo model ``spec`` for inputs of ``input_size`` (H, W): empty
    when ``spec`` is not a zoo model taking ``input_size``, or the size is its default."""
    entry = ZOO.get(spec)
    if entry is None or input_size is None or "input_size" not in inspect.signature(entry.factory).parameters:
        return {}
    hw = image_size(spec, input_size, minimum=entry.min_size)
    return {} if hw == tuple(entry.input_shape[1:]) else {"input_size": list(hw)}


# --------------------------------------------------------------------------- LeNets
@register_model("lenet300", description="LeNet-300-100 MLP (266,610 params for 10 classes)")
def lenet300(num_classes: int = 10, in_channels: int = 1, input_size: Size | None = None) -> nn.Module:
    h, w = image_size("lenet300", input_size)
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(in_channels * h * w, 300), nn.ReLU(),
        nn.Linear(300, 100), nn.ReLU(),
        nn.Linear(100, num_classes),
    )


class LeNet5(nn.Module):
    """LeNet-5, Caffe variant: conv 20 and 50 (5x5), max-pool, fc 500 (431,080 params)."""

    MIN_SIZE = 16  # two 5x5 convs and two 2x2 pools leave at least one pixel

    def __init__(self, num_classes: int = 10, in_channels: int = 1, input_size: Size | None = None):
        super().__init__()
        h, w = image_size("lenet5", input_size, minimum=self.MIN_SIZE)
        self.conv1 = nn.Conv2d(in_channels, 20, 5)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.pool2 = nn.MaxPool2d(2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(50 * (((h - 4) // 2 - 4) // 2) * (((w - 4) // 2 - 4) // 2), 500)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(500, num_classes)

    def forward(self, x):
        x = self.pool1(self.conv1(x))
        x = self.pool2(self.conv2(x))
        return self.fc2(self.relu(self.fc1(self.flatten(x))))


register_model("lenet5", description="LeNet-5 (Caffe variant, 431,080 params)", min_size=LeNet5.MIN_SIZE)(LeNet5)


# --------------------------------------------------------------------------- CIFAR-style ResNets
class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:  # projection shortcut (option B): prunable, exports cleanly
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.relu2 = nn.ReLU()

    def forward(self, x):
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) of He et al. for 28-32 px inputs: 3 stages of 16/32/64 channels."""

    def __init__(self, depth: int, num_classes: int = 10, in_channels: int = 1, width: int = 16,
                 input_size: Size | None = None):
        super().__init__()
        image_size(f"resnet{depth}", input_size)  # pools adaptively: any size
        if (depth - 2) % 6:
            raise ValueError("depth must be 6n+2")
        n = (depth - 2) // 6
        widths = [width, width * 2, width * 4]
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        layers, cin = [], widths[0]
        for i, w in enumerate(widths):
            blocks = []
            for j in range(n):
                blocks.append(BasicBlock(cin, w, 2 if (i > 0 and j == 0) else 1))
                cin = w
            layers.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = layers
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.flatten(self.pool(x)))


@register_model("resnet8", description="CIFAR-style ResNet-8 (16/32/64 channels)")
def resnet8(num_classes: int = 10, in_channels: int = 1, width: int = 16, input_size: Size | None = None) -> nn.Module:
    return CifarResNet(8, num_classes, in_channels, width, input_size)


@register_model("resnet20", description="CIFAR-style ResNet-20 (16/32/64 channels)")
def resnet20(num_classes: int = 10, in_channels: int = 1, width: int = 16, input_size: Size | None = None) -> nn.Module:
    return CifarResNet(20, num_classes, in_channels, width, input_size)


# --------------------------------------------------------------------------- MobileNetV2 (tiny)
def _make_divisible(v: float, divisor: int = 8) -> int:
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand -> 3x3 depthwise -> 1x1 project (linear), residual when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
        layers += [
            nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6(),
            nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_res = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2Tiny(nn.Module):
    """MobileNetV2 for 28-32 px inputs, with a width multiplier."""

    # expansion t, channels c, repeats n, stride s
    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 2), (6, 64, 2, 2), (6, 96, 1, 1))

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width_mult: float = 1.0, last_channels: int = 320,
                 input_size: Size | None = None):
        super().__init__()
        image_size("mobilenetv2_tiny", input_size)  # pools adaptively: any size
        cin = _make_divisible(16 * width_mult)
        feats: list[nn.Module] = [nn.Sequential(nn.Conv2d(in_channels, cin, 3, 1, 1, bias=False), nn.BatchNorm2d(cin), nn.ReLU6())]
        for t, c, n, s in self.SETTINGS:
            cout = _make_divisible(c * width_mult)
            for i in range(n):
                feats.append(InvertedResidual(cin, cout, s if i == 0 else 1, t))
                cin = cout
        last = _make_divisible(last_channels * max(1.0, width_mult))
        feats.append(nn.Sequential(nn.Conv2d(cin, last, 1, bias=False), nn.BatchNorm2d(last), nn.ReLU6()))
        self.features = nn.Sequential(*feats)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(last, num_classes)

    def forward(self, x):
        return self.classifier(self.flatten(self.pool(self.features(x))))


register_model("mobilenetv2_tiny", description="MobileNetV2 (inverted residuals) for 28-32 px, width multiplier")(
    MobileNetV2Tiny)


# --------------------------------------------------------------------------- VGG (small)
VGG_MIN_SIZE = 8


@register_model("vgg_small", description="VGG-style 6-conv net with BatchNorm (32-64-128)", min_size=VGG_MIN_SIZE)
def vgg_small(num_classes: int = 10, in_channels: int = 1, width: int = 32, input_size: Size | None = None) -> nn.Module:
    image_size("vgg_small", input_size, minimum=VGG_MIN_SIZE)  # three 2x2 max-pools, then adaptive pooling
    layers: list[nn.Module] = []
    cin = in_channels
    for cout in (width, width, "M", width * 2, width * 2, "M", width * 4, width * 4, "M"):
        if cout == "M":
            layers.append(nn.MaxPool2d(2))
            continue
        layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
        cin = cout
    return nn.Sequential(
        nn.Sequential(*layers), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(cin, 256), nn.ReLU(), nn.Dropout(0.2), nn.Linear(256, num_classes),
    )


def default_input_shape(name: str) -> tuple[int, int, int]:
    return ZOO[name].input_shape

