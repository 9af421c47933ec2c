"""Trained weight sharing (Deep Compression, section 3).

The kept weights of a layer are clustered with 1-D k-means into 2**bits shared values
(the codebook); each weight then stores only the index of its centroid. Centroids are
initialised linearly over [min, max] by default: the paper found it keeps the few large
weights, which matter most, better than density-based or random (Forgy) initialisation.

Fine-tuning keeps weights tied to the codebook: a parametrization computes
``weight = where(mask, codebook[index], 0)``, so autograd gives each centroid the sum of
the gradients of the weights assigned to it (the paper's pooled gradient, figure 3) and
pruned weights stay exactly zero. ``bake`` turns the parametrization back into a plain
weight tensor holding exactly those float32 values, so the encoder and the decoder see
the same bits.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..core.errors import UsageError

INITS = ("linear", "density", "random")
MAX_CENTROIDS = 256


def check_bits(bits, what: str = "bits") -> int:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 8:
        raise UsageError(
            f"{what} must be an integer in 1..8 (a codebook of at most 256 entries), got {bits!r}",
            hint="Deep Compression uses 8 bits for conv layers and 5 for fully connected ones",
        )
    return bits


def _check_k(k: int, n: int, name: str = "") -> None:
    where = f" in layer {name!r}" if name else ""
    if k > MAX_CENTROIDS:
        raise UsageError(f"a codebook of {k} entries is larger than {MAX_CENTROIDS}{where}", hint="use bits <= 8")
    if k < 1:
        raise UsageError(f"a codebook needs at least one entry{where}")
    if n < k:
        raise UsageError(
            f"layer{where or ''} has {n} weights to cluster, fewer than its {k} centroids",
            hint="give this layer fewer bits (a per-layer map such as {'conv1': 4, 'conv': 8}) or prune it less",
        )


def init_centroids(w: torch.Tensor, k: int, method: str = "linear", *, seed: int = 0) -> torch.Tensor:
    """Initial centroids (float64, sorted) for the 1-D weights ``w``."""
    w = w.detach().reshape(-1).double()
    if method == "linear":
        return torch.linspace(float(w.min()), float(w.max()), k, dtype=torch.float64)
    if method == "density":
        # equally spaced on the y-axis of the CDF: dense where the weights are dense
        q = (torch.arange(k, dtype=torch.float64) + 0.5) / k
        return torch.quantile(w, q) if w.numel() <= 16_000_000 else torch.quantile(w[:16_000_000], q)
    if method == "random":
        g = torch.Generator().manual_seed(seed)
        return torch.sort(w[torch.randperm(w.numel(), generator=g)[:k]]).values
    raise UsageError(f"unknown centroid initialisation {method!r}", hint=f"one of: {', '.join(INITS)}")


def _assign(w: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """Index of the nearest centroid (centroids sorted ascending); ties go to the lower one."""
    mid = (c[1:] + c[:-1]) / 2
    return torch.bucketize(w, mid, right=False)


def kmeans(w: torch.Tensor, k: int, *, init: str = "linear", iters: int = 30, seed: int = 0,
           name: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """1-D Lloyd k-means. Returns (codebook float32 [k] sorted ascending, index int64 like w).

    Empty clusters keep their previous centroid (they cost nothing once Huffman coded).
    The final assignment is made against the float32 codebook, so codebook[index] is the
    nearest float32 centroid of every weight.
    """
    flat = w.detach().reshape(-1).double()
    _check_k(k, flat.numel(), name)
    c = init_centroids(flat, k, init, seed=seed)
    for _ in range(iters):
        a = _assign(flat, c)
        sums = torch.zeros(k, dtype=torch.float64).scatter_add_(0, a, flat)
        counts = torch.bincount(a, minlength=k)
        new = torch.where(counts > 0, sums / counts.clamp(min=1), c)
        new = torch.sort(new).values
        if torch.equal(new, c):
            break
        c = new
    codebook = torch.sort(c.float()).values
    idx = _assign(flat.float(), codebook)
    return codebook, idx.reshape(w.shape)


class SharedWeight(nn.Module):
    """Parametrization: weight = where(mask, codebook[index], 0). The codebook is trained."""

    def __init__(self, codebook: torch.Tensor, index: torch.Tensor, mask: torch.Tensor):
        super().__init__()
        self.codebook = nn.Parameter(codebook.detach().clone().float())
        self.register_buffer("index", index.detach().clone().long())
        self.register_buffer("mask", mask.detach().clone().bool())

    def forward(self, original: torch.Tensor) -> torch.Tensor:  # original is ignored: tied to codebook
        shared = self.codebook[self.index]
        return torch.where(self.mask, shared, torch.zeros((), dtype=shared.dtype, device=shared.device))


def share(module: nn.Module, bits: int, *, mask: torch.Tensor | None = None, init: str = "linear",
          iters: int = 30, seed: int = 0, name: str = "") -> SharedWeight:
    """Cluster ``module.weight`` (its kept entries) into 2**bits centroids and tie it to them."""
    check_bits(bits)
    w = module.weight.detach()
    mask = torch.ones_like(w, dtype=torch.bool) if mask is None else mask.to(w.device).bool()
    kept = w[mask]
    codebook, idx_kept = kmeans(kept, 1 << bits, init=init, iters=iters, seed=seed, name=name)
    index = torch.zeros(w.shape, dtype=torch.long, device=w.device)
    index[mask] = idx_kept.to(w.device)
    p = SharedWeight(codebook.to(w.device), index, mask)
    if parametrize.is_parametrized(module, "weight"):
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    parametrize.register_parametrization(module, "weight", p, unsafe=True)
    module.parametrizations.weight.original.requires_grad_(False)
    return p


def shared_of(module: nn.Module) -> SharedWeight | None:
    if parametrize.is_parametrized(module, "weight"):
        for p in module.parametrizations.weight:
            if isinstance(p, SharedWeight):
                return p
    return None


def bake(model: nn.Module) -> dict[str, dict[str, torch.Tensor]]:
    """Replace every SharedWeight parametrization by the plain weight it computes.

    Returns {layer name: {"codebook", "index", "mask"}} (detached, on CPU) for the encoder.
    """
    out = {}
    for name, m in list(model.named_modules()):
        p = shared_of(m)
        if p is None:
            continue
        out[name] = {"codebook": p.codebook.detach().cpu().clone(), "index": p.index.cpu().clone(),
                     "mask": p.mask.cpu().clone()}
        parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
        m.weight.requires_grad_(True)
    return out
