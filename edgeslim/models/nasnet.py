"""``nasnet``: a plain network described by data -- what architecture search (``edgeslim.nas``)
extracts from its supernet. It needs no supernet code: the checkpoint's build arguments (stem,
blocks, head as numbers) rebuild it, and its weights load through safetensors like any zoo model.

    blocks: [{"type": "mb", "cin": 16, "cout": 24, "stride": 2, "hidden": 96, "kernel": 5}, ...]
            [{"type": "basic", "cin": 16, "cout": 32, "stride": 2}, ...]

``mb`` is MobileNetV2's inverted residual (1x1 expand when hidden > cin, k x k depthwise, 1x1 linear
projection, residual when shapes match); ``basic`` is the CIFAR ResNet block (two 3x3 convs, a 1x1
projection shortcut when shapes change). The supernet (``edgeslim.nas.supernet``) uses these module
names at its largest sizes, so a subnet's weights are slices of the supernet's.
"""
from __future__ import annotations

from torch import nn

from ..core.errors import UsageError
from .zoo import BasicBlock, Size, image_size, register_model

ACTS = {"relu": nn.ReLU, "relu6": nn.ReLU6}


class MBBlock(nn.Module):
    """Inverted residual with a chosen hidden width and depthwise kernel."""

    def __init__(self, cin: int, cout: int, stride: int, hidden: int, kernel: int = 3, res: bool | None = None):
        super().__init__()
        layers: list[nn.Module] = []
        if hidden != cin:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.ReLU6()]
        layers += [nn.Conv2d(hidden, hidden, kernel, stride, kernel // 2, groups=hidden, bias=False),
                   nn.BatchNorm2d(hidden), nn.ReLU6(), nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.use_res = (stride == 1 and cin == cout) if res is None else bool(res)

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


def conv_bn_act(cin: int, cout: int, kernel: int, act: str, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(cout), ACTS[act]())


def make_block(d: dict) -> nn.Module:
    kind = d.get("type")
    cin, cout, stride = int(d["cin"]), int(d["cout"]), int(d["stride"])
    if kind == "mb":
        res = d.get("res")
        if res and (stride != 1 or cin != cout):
            raise UsageError(f"nasnet: a residual block needs stride 1 and cin == cout, got {d}")
        return MBBlock(cin, cout, stride, int(d["hidden"]), int(d.get("kernel", 3)), res)
    if kind == "basic":
        block = BasicBlock(cin, cout, stride)
        if d.get("proj") and isinstance(block.shortcut, nn.Identity):  # the supernet's block had a projection
            block.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        return block
    raise UsageError(f"nasnet: unknown block type {kind!r}", hint="one of: mb, basic")


class NasNet(nn.Module):
    """stem (conv-BN-act) -> blocks -> optional 1x1 head (conv-BN-act) -> pool -> linear."""

    def __init__(self, num_classes: int, in_channels: int, stem: dict, blocks: list[dict], head: dict | None = None):
        super().__init__()
        act = stem.get("act", "relu6")
        if act not in ACTS:
            raise UsageError(f"nasnet: unknown activation {act!r}", hint=f"one of: {', '.join(ACTS)}")
        self.stem = conv_bn_act(in_channels, int(stem["out"]), int(stem.get("kernel", 3)), act,
                                 int(stem.get("stride", 1)))
        self.blocks = nn.Sequential(*(make_block(b) for b in blocks))
        last = int(blocks[-1]["cout"]) if blocks else int(stem["out"])
        self.head = conv_bn_act(last, int(head["out"]), 1, act) if head else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(int(head["out"]) if head else last, num_classes)

    def forward(self, x):
        return self.classifier(self.flatten(self.pool(self.head(self.blocks(self.stem(x))))))


def tiny_blocks() -> list[dict]:
    """mobilenetv2_tiny's blocks as nasnet data: what ``nasnet`` builds when it is given none."""
    from .zoo import MobileNetV2Tiny

    blocks, cin = [], 16
    for t, c, n, s in MobileNetV2Tiny.SETTINGS:
        for i in range(n):
            blocks.append({"type": "mb", "cin": cin, "cout": c, "stride": s if i == 0 else 1, "hidden": cin * t,
                           "kernel": 3})
            cin = c
    return blocks


@register_model("nasnet", description="a network found by `edgeslim nas` (stem, blocks, head as data; "
                                      "default: mobilenetv2_tiny's layout)")
def nasnet(num_classes: int = 10, in_channels: int = 1, stem: dict | None = None, blocks: list | None = None,
           head: dict | None = None, input_size: Size | None = None) -> nn.Module:
    image_size("nasnet", input_size)  # pools adaptively: any size
    if stem is None and blocks is None and head is None:
        stem, blocks, head = {"out": 16}, tiny_blocks(), {"out": 320}
    if not isinstance(stem, dict) or not isinstance(blocks, list) or not blocks:
        raise UsageError("nasnet needs stem= (a dict) and blocks= (a non-empty list): it is built from what "
                         "`edgeslim nas` found", hint="load the checkpoint `edgeslim nas` wrote (DIR/checkpoint)")
    return NasNet(num_classes, in_channels, stem, blocks, head)

