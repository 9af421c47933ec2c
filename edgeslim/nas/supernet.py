"""The weight-sharing supernet of a space: every block at its largest (depth, width, expansion,
kernel), a subnet's weights are slices of it -- the first channels of every layer, the centre of every
kernel (OFA's elastic kernel without the transform matrices) -- and BatchNorm statistics are sliced
with them (recalibrated per subnet before it is scored: ``recalibrate``).

The module names are nasnet's (stem, blocks.N..., head, classifier), so ``extract`` copies slices by
name into a plain ``nasnet`` that needs no supernet code.

Two ways to run it:
- hard: ``set_arch(arch)`` picks one subnet (sliced convolutions: a small subnet costs little);
- soft: ``set_soft(probs)`` runs the largest network with every choice as a mask weighted by its
  probability (differentiable search): width and expansion mask channels, a kernel choice masks the
  kernel's border, depth gates a block against the identity. With one-hot probabilities (straight-
  through Gumbel samples) the soft forward equals the hard one.
"""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from ..core.errors import UsageError
from ..models.nasnet import MBBlock, conv_bn_act
from ..models.zoo import BasicBlock
from .space import Space


def bn(x: torch.Tensor, m: nn.BatchNorm2d) -> torch.Tensor:
    """BatchNorm over the first x.shape[1] channels of ``m`` (its running statistics sliced too)."""
    c = x.shape[1]
    momentum = m.momentum
    if m.training and m.track_running_stats:
        m.num_batches_tracked.add_(1)
        momentum = 1.0 / float(m.num_batches_tracked) if m.momentum is None else m.momentum
    return F.batch_norm(x, m.running_mean[:c], m.running_var[:c], m.weight[:c], m.bias[:c], m.training, momentum,
                        m.eps)


def conv(x: torch.Tensor, m: nn.Conv2d, cout: int, kernel: int | None = None, depthwise: bool = False) -> torch.Tensor:
    """``m`` sliced to x's input channels, ``cout`` outputs and the centre ``kernel`` of its kernel."""
    cin = x.shape[1]
    w = m.weight[:cin] if depthwise else m.weight[:cout, :cin]
    k = kernel or m.kernel_size[0]
    off = (m.kernel_size[0] - k) // 2
    if off:
        w = w[:, :, off:off + k, off:off + k]
    return F.conv2d(x, w.contiguous(), None, m.stride, k // 2, 1, cin if depthwise else 1)


def centre_mask(kmax: int, probs: torch.Tensor, kernels: Iterable[int]) -> torch.Tensor:
    """(kmax, kmax) weights: each kernel choice's centre square, weighted by its probability."""
    mask = torch.zeros(kmax, kmax, dtype=probs.dtype, device=probs.device)
    for p, k in zip(probs, kernels):
        off = (kmax - k) // 2
        box = torch.zeros(kmax, kmax, dtype=probs.dtype, device=probs.device)
        box[off:off + k, off:off + k] = 1
        mask = mask + p * box
    return mask


def channel_mask(n: int, probs: torch.Tensor, counts: Iterable[int]) -> torch.Tensor:
    """(1, n, 1, 1) weights: each choice keeps its first ``count`` channels, weighted by its probability."""
    idx = torch.arange(n, device=probs.device)
    mask = sum(p * (idx < c).to(probs.dtype) for p, c in zip(probs, counts))
    return mask.view(1, n, 1, 1)


class ElasticMB(MBBlock):
    """nasnet's MBBlock at its largest; ``active`` = (cout, expand, kernel) of the subnet."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int, kernel: int, res: bool):
        super().__init__(cin, cout, stride, cin * expand, kernel, res)
        self.expands = expand > 1
        self.active = (cout, expand, kernel)

    def forward(self, x):
        cout, expand, kernel = self.active
        h = x
        if self.expands:
            h = F.relu6(bn(conv(h, self.conv[0], x.shape[1] * expand), self.conv[1]))
        i = 3 if self.expands else 0
        h = F.relu6(bn(conv(h, self.conv[i], h.shape[1], kernel, depthwise=True), self.conv[i + 1]))
        y = bn(conv(h, self.conv[i + 3], cout), self.conv[i + 4])
        return x + y if self.use_res else y

    def soft(self, x, hidden_mask, kernel_mask, out_mask):
        h = x
        if self.expands:
            h = F.relu6(self.conv[1](self.conv[0](h))) * hidden_mask
        i = 3 if self.expands else 0
        dw = self.conv[i]
        h = F.conv2d(h, dw.weight * kernel_mask, None, dw.stride, dw.padding, 1, dw.groups)
        h = F.relu6(self.conv[i + 1](h)) * hidden_mask
        y = self.conv[i + 4](self.conv[i + 3](h)) * out_mask
        return x + y if self.use_res else y


class ElasticBasic(BasicBlock):
    """nasnet's basic (ResNet) block at its largest; ``active`` = (cout,)."""

    def __init__(self, cin: int, cout: int, stride: int, res: bool):
        super().__init__(cin, cout, stride)
        if not res and isinstance(self.shortcut, nn.Identity):  # a subnet's widths may differ: project
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.active = (cout,)

    def forward(self, x):
        (cout,) = self.active
        out = F.relu(bn(conv(x, self.conv1, cout), self.bn1))
        out = bn(conv(out, self.conv2, cout), self.bn2)
        sc = x if isinstance(self.shortcut, nn.Identity) else bn(conv(x, self.shortcut[0], cout), self.shortcut[1])
        return F.relu(out + sc)

    def soft(self, x, hidden_mask, kernel_mask, out_mask):
        out = F.relu(self.bn1(self.conv1(x))) * out_mask
        out = self.bn2(self.conv2(out)) * out_mask
        sc = self.shortcut(x) * (1 if isinstance(self.shortcut, nn.Identity) else out_mask)
        return F.relu(out + sc)


class Supernet(nn.Module):
    def __init__(self, space: Space, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.space, self.num_classes, self.in_channels = space, num_classes, in_channels
        big = space.net(space.largest())  # the largest subnet: every stage at its largest choices
        stem = big["stem"]
        self.stem = conv_bn_act(in_channels, stem["out"], stem["kernel"], stem["act"], stem["stride"])
        self.act = F.relu6 if stem["act"] == "relu6" else F.relu
        blocks, self.slot_of = [], []
        for b, (i, j) in zip(big["blocks"], space.slots()):
            if space.kind == "mobilenet":
                blocks.append(ElasticMB(b["cin"], b["cout"], b["stride"], max(space.stages[i].expand),
                                        max(space.stages[i].kernel), b["res"]))
            else:
                blocks.append(ElasticBasic(b["cin"], b["cout"], b["stride"], not b["proj"]))
            self.slot_of.append((i, j))
        self.blocks = nn.Sequential(*blocks)
        last = big["blocks"][-1]["cout"]
        head = big["head"]
        self.head = conv_bn_act(last, head["out"], 1, stem["act"]) if head else nn.Identity()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(head["out"] if head else last, num_classes)
        self.probs: dict[str, torch.Tensor] | None = None
        self.set_arch(space.largest())

    # -- hard: one subnet ------------------------------------------------------------------------------
    def set_arch(self, arch: dict) -> "Supernet":
        self.arch, self.probs = dict(arch), None
        self.stages = self.space.full(arch)
        self.stem_out = self.space.stem_out(self.stages)
        for block, (i, j) in zip(self.blocks, self.slot_of):
            s, c = self.space.stages[i], self.stages[i]
            cout = s.widths(self.space.divisor)[c["width"]]
            block.active = (cout, c["expand"], c["kernel"]) if isinstance(block, ElasticMB) else (cout,)
        return self

    def forward(self, x):
        if self.probs is not None:
            return self.forward_soft(x)
        x = self.act(bn(conv(x, self.stem[0], self.stem_out), self.stem[1]))
        for block, (i, j) in zip(self.blocks, self.slot_of):
            if j < self.stages[i]["depth"]:
                x = block(x)
        if not isinstance(self.head, nn.Identity):
            x = self.act(bn(conv(x, self.head[0], self.head[0].out_channels), self.head[1]))
        x = self.flatten(self.pool(x))
        return F.linear(x, self.classifier.weight[:, :x.shape[1]], self.classifier.bias)

    # -- soft: every choice weighted ---------------------------------------------------------------------
    def set_soft(self, probs: dict[str, torch.Tensor]) -> "Supernet":
        """Probabilities per decision (``Space.decisions`` order of choices); fixed choices are certain."""
        self.probs = probs
        return self

    def choice_probs(self, i: int, d: str) -> tuple[torch.Tensor, tuple]:
        choices = getattr(self.space.stages[i], d)
        name = f"s{i}.{d}"
        if len(choices) > 1:
            return self.probs[name], choices
        return torch.ones(1, device=self.classifier.weight.device), choices

    def forward_soft(self, x):
        sp = self.space
        wprobs = [self.choice_probs(i, "width") for i in range(len(sp.stages))]
        wcounts = [[s.widths(sp.divisor)[w] for w in wprobs[i][1]] for i, s in enumerate(sp.stages)]
        h = self.act(self.stem[1](self.stem[0](x)))
        if sp.kind == "resnet":
            h = h * channel_mask(h.shape[1], wprobs[0][0], wcounts[0])
        for block, (i, j) in zip(self.blocks, self.slot_of):
            pw, _ = wprobs[i]
            out_mask = channel_mask(block_out(block), pw, wcounts[i])
            if isinstance(block, ElasticMB):
                pe, expands = self.choice_probs(i, "expand")
                pk, kernels = self.choice_probs(i, "kernel")
                pin, cins = (pw, wcounts[i]) if j > 0 else self.input_probs(i, wprobs, wcounts)
                hidden = block.conv[0].out_channels if block.expands else h.shape[1]
                hp = torch.stack([a * b for a in pin for b in pe])
                hmask = channel_mask(hidden, hp, [c * e for c in cins for e in expands])
                kmask = centre_mask(max(kernels), pk, kernels)
                y = block.soft(h, hmask, kmask, out_mask)
            else:
                y = block.soft(h, None, None, out_mask)
            pd, depths = self.choice_probs(i, "depth")
            gate = sum(p for p, d in zip(pd, depths) if d > j)
            h = y if j == 0 else gate * y + (1 - gate) * h
        h = self.act(self.head[1](self.head[0](h))) if not isinstance(self.head, nn.Identity) else h
        return self.classifier(self.flatten(self.pool(h)))

    def input_probs(self, i: int, wprobs, wcounts) -> tuple[torch.Tensor, list[int]]:
        if i == 0:
            return (wprobs[0][0], wcounts[0]) if self.space.kind == "resnet" else \
                (torch.ones(1, device=self.classifier.weight.device), [self.stem_out])
        return wprobs[i - 1][0], wcounts[i - 1]


def block_out(block: nn.Module) -> int:
    return block.conv[-1].num_features if isinstance(block, ElasticMB) else block.bn2.num_features


def slice_to(src: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """The first entries of every dim of ``src``, the centre of its two kernel dims (4-d weights)."""
    idx = []
    for d, n in enumerate(shape):
        off = (src.shape[d] - n) // 2 if src.dim() == 4 and d >= 2 else 0
        idx.append(slice(off, off + n))
    return src[tuple(idx)]


def extract(supernet: Supernet, arch: dict) -> nn.Module:
    """The subnet ``arch`` as a plain ``nasnet`` (weights and BN statistics sliced from the supernet)."""
    from ..models import create

    net = supernet.space.net(arch)
    sub = create("nasnet", num_classes=supernet.num_classes, in_channels=supernet.in_channels, **net)
    index = [k for k, (i, j) in enumerate(supernet.slot_of) if j < supernet.space.full(arch)[i]["depth"]]
    src = supernet.state_dict()
    out = {}
    for name, t in sub.state_dict().items():
        parts = name.split(".")
        if parts[0] == "blocks":
            parts[1] = str(index[int(parts[1])])
        s = src[".".join(parts)]
        out[name] = s.clone() if s.dim() == 0 else slice_to(s, t.shape).clone()
    sub.load_state_dict(out)
    return sub.eval()


def recalibrate(model: nn.Module, batches: list[torch.Tensor]) -> nn.Module:
    """BatchNorm running statistics re-estimated on ``batches`` (a cumulative average over them): a
    shared supernet's statistics belong to no one subnet."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m.momentum, m.training) for m in norms]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
        m.train()
    with torch.no_grad():
        for x in batches:
            model(x)
    for m, (mom, tr) in zip(norms, saved):
        m.momentum = mom
        m.train(tr)
    return model


def from_model(model: nn.Module, space: Space, num_classes: int, in_channels: int) -> Supernet:
    """The supernet of ``space`` with ``model``'s weights where ``model`` is its largest subnet (a zoo
    mobilenetv2_tiny or resnet20 converted by ``convert.space_of``)."""
    from .convert import rename

    net = Supernet(space, num_classes, in_channels)
    own = net.state_dict()
    theirs = rename(model)
    missing = [k for k in own if k not in theirs]
    wrong = [k for k in own if k in theirs and theirs[k].shape != own[k].shape]
    if missing or wrong:
        raise UsageError(f"{type(model).__name__} is not the largest subnet of its space: "
                         f"{len(missing)} weights missing, {len(wrong)} of other shapes (e.g. {(missing + wrong)[:2]})")
    net.load_state_dict({k: theirs[k] for k in own})
    return net

