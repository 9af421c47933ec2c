"""Importance criteria: which channels (structured) or weights (unstructured) matter least.

A criterion is anything that satisfies the ``Importance`` protocol:

    crit = get_importance("taylor")
    crit.prepare(model, batches)          # data-driven criteria collect statistics here
    crit.channel_scores(group)            # one score per channel of a ChannelGroup
    crit.weight_scores(name, module)      # one score per weight (fine / vector / kernel / N:M)

Higher score = more important = kept. Scores are kept separate from the surgery
that removes channels, so a new criterion is one small class.
"""
from __future__ import annotations

from typing import Any, Iterable, Protocol, runtime_checkable

import torch
from torch import nn

from ..core.errors import DataError, UsageError
from ..graph import ChannelGroup

_WEIGHTED = (nn.modules.conv._ConvNd, nn.Linear)
_NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)


@runtime_checkable
class Importance(Protocol):
    name: str
    needs_data: bool  # prepare() must see calibration batches
    normalize: bool  # divide scores by the group mean before global ranking

    def prepare(self, model: nn.Module, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> None: ...

    def channel_scores(self, group: ChannelGroup) -> torch.Tensor: ...

    def weight_scores(self, name: str, module: nn.Module) -> torch.Tensor: ...


# -- helpers ------------------------------------------------------------------
def _rows(module: nn.Module, tensor: torch.Tensor, role: str, idxs: list[int]) -> torch.Tensor | None:
    """Per-channel slices of a weight-shaped tensor, flattened: (len(idxs), -1)."""
    if isinstance(module, nn.modules.conv._ConvNd):
        transposed = module.transposed
        if role == "out":
            t = tensor.transpose(0, 1) if transposed else tensor
            return t[idxs].flatten(1)
        if module.groups > 1:  # grouped conv inputs are not a plain column slice
            return None
        t = tensor if transposed else tensor.transpose(0, 1)
        return t[idxs].flatten(1)
    if isinstance(module, nn.Linear):
        return tensor[idxs] if role == "out" else tensor[:, idxs].t()
    return None


def _scatter(size: int, parts: list[tuple[list[int], torch.Tensor]]) -> torch.Tensor | None:
    """Average per-member scores into the group's channel numbering."""
    if not parts:
        return None
    total = torch.zeros(size, dtype=torch.float64)
    count = torch.zeros(size, dtype=torch.float64)
    for root_idxs, s in parts:
        idx = torch.as_tensor(root_idxs, dtype=torch.long)
        total.index_add_(0, idx, s.detach().double().cpu())
        count.index_add_(0, idx, torch.ones(len(root_idxs), dtype=torch.float64))
    return total / count.clamp_min(1)


# -- criteria -----------------------------------------------------------------
class Magnitude:
    """Mean |w| (p=1) or RMS of w (p=2) of every weight that goes with a channel."""

    needs_data = False
    normalize = True

    def __init__(self, p: int = 1):
        self.p = p
        self.name = f"l{p}"

    def prepare(self, model, batches) -> None:
        pass

    def _reduce(self, rows: torch.Tensor) -> torch.Tensor:
        return rows.abs().mean(1) if self.p == 1 else rows.pow(2).mean(1).sqrt()

    def channel_scores(self, group: ChannelGroup) -> torch.Tensor:
        parts = []
        for m in group.members:
            if isinstance(m.module, _WEIGHTED):
                rows = _rows(m.module, m.module.weight.data, m.role, m.idxs)
                if rows is not None:
                    parts.append((m.root_idxs, self._reduce(rows)))
        out = _scatter(group.size, parts)
        return out if out is not None else torch.ones(group.size, dtype=torch.float64)

    def weight_scores(self, name, module) -> torch.Tensor:
        w = module.weight.data
        return w.abs() if self.p == 1 else w.pow(2)


class BNScale:
    """|gamma| of the BatchNorm/LayerNorm after a channel (network slimming, Liu et al. 2017).

    Ranked globally on raw values (that is the point of the L1 penalty on gammas);
    groups without a norm layer fall back to L1 magnitude.
    """

    name = "bn"
    needs_data = False
    normalize = False

    def __init__(self):
        self._fallback = Magnitude(1)
        self.fallback_groups: list[str] = []

    def prepare(self, model, batches) -> None:
        self.fallback_groups = []

    def channel_scores(self, group: ChannelGroup) -> torch.Tensor:
        parts = [
            (m.root_idxs, m.module.weight.data[m.idxs].abs())
            for m in group.members
            if isinstance(m.module, _NORMS) and getattr(m.module, "weight", None) is not None
            and m.module.weight.dim() == 1
        ]
        out = _scatter(group.size, parts)
        if out is None:
            self.fallback_groups.append(group.root)
            return self._fallback.channel_scores(group)
        return out

    def weight_scores(self, name, module):
        raise UsageError("importance 'bn' ranks channels, not single weights",
                         hint="use --importance l1|l2|taylor|random with unstructured granularities")


class Taylor:
    """First-order Taylor estimate of the loss change when a channel goes:
    |sum over the channel's weights of w * dL/dw| (Molchanov et al. 2019), gradients
    accumulated over a few calibration batches. Unlabelled data uses the model's own
    predictions as targets."""

    name = "taylor"
    needs_data = True
    normalize = True

    def __init__(self):
        self.grads: dict[int, torch.Tensor] = {}
        self.pseudo_labels = False

    def prepare(self, model, batches) -> None:
        if not batches:
            raise DataError("importance 'taylor' needs calibration batches", hint="pass data (--data D)")
        params = [p for p in model.parameters()]
        saved = [p.grad for p in params]
        was_training = model.training
        model.eval()  # BN statistics stay as they are
        try:
            for p in params:
                p.grad = None
            with torch.enable_grad():
                for x, y in batches:
                    out = model(x)
                    if y is None or (y < 0).any():
                        self.pseudo_labels = True
                        y = out.detach().argmax(1)
                    nn.functional.cross_entropy(out, y).backward()
            self.grads = {id(p): p.grad.detach().clone() for p in params if p.grad is not None}
        finally:
            for p, g in zip(params, saved):
                p.grad = g
            model.train(was_training)

    def _wg(self, p: torch.Tensor) -> torch.Tensor | None:
        g = self.grads.get(id(p))
        return None if g is None or g.shape != p.shape else p.data * g

    def channel_scores(self, group: ChannelGroup) -> torch.Tensor:
        total = torch.zeros(group.size, dtype=torch.float64)
        for m in group.members:
            mod = m.module
            if isinstance(mod, _WEIGHTED):
                wg = self._wg(mod.weight)
                if wg is not None:
                    rows = _rows(mod, wg, m.role, m.idxs)
                    if rows is not None:
                        total.index_add_(0, torch.as_tensor(m.root_idxs), rows.sum(1).double())
                if m.role == "out" and getattr(mod, "bias", None) is not None:
                    bg = self._wg(mod.bias)
                    if bg is not None:
                        total.index_add_(0, torch.as_tensor(m.root_idxs), bg[m.idxs].double())
            elif isinstance(mod, _NORMS) and getattr(mod, "weight", None) is not None and mod.weight.dim() == 1:
                for p in (mod.weight, mod.bias):
                    if p is not None:
                        pg = self._wg(p)
                        if pg is not None:
                            total.index_add_(0, torch.as_tensor(m.root_idxs), pg[m.idxs].double())
        return total.abs()

    def weight_scores(self, name, module):
        wg = self._wg(module.weight)
        if wg is None:
            raise DataError(f"no gradient for {name!r}; call prepare() with calibration batches first")
        return wg.abs()


class Activation:
    """Activation statistics from calibration batches, after the channel's norm layer
    (or its conv/linear when it has none), through a ReLU:

    - ``mean``: mean positive activation of the channel;
    - ``apoz``: 1 - Average Percentage of Zeros (Hu et al. 2016): channels that are
      almost always zero after the ReLU score low.
    """

    needs_data = True
    normalize = True

    def __init__(self, kind: str = "mean"):
        self.kind = kind
        self.name = "activation" if kind == "mean" else "apoz"
        self.stats: dict[int, torch.Tensor] = {}

    def prepare(self, model, batches) -> None:
        if not batches:
            raise DataError(f"importance {self.name!r} needs calibration batches", hint="pass data (--data D)")
        sums: dict[int, torch.Tensor] = {}
        counts: dict[int, int] = {}

        def hook(mod, _inp, out):
            if not isinstance(out, torch.Tensor) or out.dim() < 2:
                return
            a = out.detach().float()
            # channels on dim 1 for NC(HW) tensors, last dim for token tensors (B, T, C)
            a = a.movedim(1, -1) if not (a.dim() == 3 and isinstance(mod, (nn.Linear, nn.LayerNorm))) else a
            a = a.reshape(-1, a.shape[-1])
            v = a.clamp_min(0) if self.kind == "mean" else (a > 0).float()
            s = v.sum(0)
            k = id(mod)
            sums[k] = sums.get(k, 0) + s
            counts[k] = counts.get(k, 0) + a.shape[0]

        hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, _WEIGHTED + _NORMS)]
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                for x, _ in batches:
                    model(x)
        finally:
            for h in hooks:
                h.remove()
            model.train(was_training)
        self.stats = {k: sums[k] / counts[k] for k in sums}

    def channel_scores(self, group: ChannelGroup) -> torch.Tensor:
        outs = [m for m in group.members if m.role == "out" and id(m.module) in self.stats]
        norms = [m for m in outs if isinstance(m.module, _NORMS)]
        use = norms or outs
        parts = []
        for m in use:
            s = self.stats[id(m.module)]
            if s.numel() > max(m.idxs, default=-1):
                parts.append((m.root_idxs, s[m.idxs]))
        out = _scatter(group.size, parts)
        return out if out is not None else torch.ones(group.size, dtype=torch.float64)

    def weight_scores(self, name, module):
        raise UsageError(f"importance {self.name!r} ranks channels, not single weights",
                         hint="use --importance l1|l2|taylor|random with unstructured granularities")


class Random:
    """Uniform random scores: the baseline every criterion must beat."""

    name = "random"
    needs_data = False
    normalize = False

    def __init__(self, seed: int = 0):
        self.gen = torch.Generator().manual_seed(seed)

    def prepare(self, model, batches) -> None:
        pass

    def channel_scores(self, group: ChannelGroup) -> torch.Tensor:
        return torch.rand(group.size, generator=self.gen, dtype=torch.float64)

    def weight_scores(self, name, module) -> torch.Tensor:
        return torch.rand(module.weight.shape, generator=self.gen)


IMPORTANCE_NAMES = ("l1", "l2", "bn", "taylor", "activation", "apoz", "random")


def get_importance(spec: Any, *, seed: int = 0) -> Importance:
    """A criterion from its name (see IMPORTANCE_NAMES) or an object with the protocol."""
    if not isinstance(spec, str):
        if isinstance(spec, Importance):
            return spec
        raise UsageError(f"importance must be a name or an Importance object, got {type(spec).__name__}")
    table = {
        "l1": lambda: Magnitude(1), "l2": lambda: Magnitude(2), "bn": BNScale, "taylor": Taylor,
        "activation": lambda: Activation("mean"), "apoz": lambda: Activation("apoz"),
        "random": lambda: Random(seed),
    }
    if spec not in table:
        raise UsageError(f"unknown importance {spec!r}", hint=f"one of: {', '.join(IMPORTANCE_NAMES)}")
    return table[spec]()


def calibration_batches(data: Any, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first ``n`` batches of a DataBundle's train split (or of a DataLoader)."""
    if data is None or n <= 0:
        return []
    loader = getattr(data, "train", data)
    if loader is None:
        loader = getattr(data, "val", None) or getattr(data, "test", None)
    if loader is None:
        return []
    out = []
    for i, batch in enumerate(loader):
        if i >= n:
            break
        x, y = (batch[0], batch[1]) if isinstance(batch, (list, tuple)) else (batch, None)
        out.append((x, y))
    return out


def iter_scores(crit: Importance, groups: Iterable[ChannelGroup]) -> dict[str, torch.Tensor]:
    return {g.root: crit.channel_scores(g) for g in groups}
