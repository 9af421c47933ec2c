"""Data-free quantization helpers (Nagel et al., "Data-Free Quantization", 2019).

- Cross-layer equalization: for consecutive layers A -> ReLU -> B, scale output channel i of A by
  1/s_i and input channel i of B by s_i (ReLU is positively homogeneous, so the function is
  unchanged) with s_i = sqrt(r_A,i / r_B,i), which equalises the per-channel weight ranges and so
  the per-tensor / per-channel quantization error.
- Bias correction: quantizing W adds an expected error dW * E[x] to the output; it is removed from
  the bias. E[x] comes from the BatchNorm statistics of the producing layer (mean beta, std
  |gamma|, through a ReLU when there is one), so no data is needed.
"""
from __future__ import annotations

import math

import torch
import torch.fx
from torch import nn

from . import graph as qgraph


def bn_stats(model: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{conv name: (beta, |gamma|)} of every foldable Conv/Linear + BN pair (call before folding)."""
    from ..reparameterization.fold_bn import find_conv_bn_pairs

    mods = dict(model.named_modules())
    return {c: (mods[b].bias.detach().clone().double(), mods[b].weight.detach().abs().clone().double())
            for c, b in find_conv_bn_pairs(model) if getattr(mods[b], "affine", False)}


def layer_pairs(model: nn.Module, names: list[str]) -> list[tuple[str, str, bool]]:
    """(A, B, relu between) for layers traced as A -> [ReLU] -> B with no other user."""
    try:
        gm = qgraph.symbolic_trace(model)
    except Exception:  # noqa: BLE001
        return []
    wanted = set(names)
    out = []
    for node in gm.graph.nodes:
        if node.op != "call_module" or node.target not in wanted:
            continue
        end = qgraph._follow_relu(gm, node)
        if len(end.users) != 1:
            continue
        user = next(iter(end.users))
        if user.op == "call_module" and user.target in wanted and user.args[0] is end:
            out.append((node.target, user.target, end is not node))
    return out


def _in_axis(m: nn.Module) -> int | None:
    if isinstance(m, nn.Linear):
        return 1
    if isinstance(m, nn.Conv2d):
        if m.groups == 1:
            return 1
        if m.groups == m.in_channels == m.out_channels:
            return 0  # depthwise: input channel i is output channel i
    return None


@torch.no_grad()
def equalize(model: nn.Module, names: list[str], stats: dict | None = None, iters: int = 2) -> int:
    """Cross-layer equalization in place. Returns the number of equalized pairs."""
    mods = dict(model.named_modules())
    pairs = [(a, b, r) for a, b, r in layer_pairs(model, names)
             if r and _in_axis(mods[b]) is not None and mods[a].weight.shape[0] == mods[b].weight.shape[_in_axis(mods[b])]]
    for _ in range(iters):
        for a, b, _r in pairs:
            A, B = mods[a], mods[b]
            ax = _in_axis(B)
            ra = A.weight.detach().abs().reshape(A.weight.shape[0], -1).amax(1).double()
            rb = B.weight.detach().abs().movedim(ax, 0).reshape(B.weight.shape[ax], -1).amax(1).double()
            s = torch.where((ra > 0) & (rb > 0), torch.sqrt(ra / rb.clamp(min=1e-30)), torch.ones_like(ra))
            shape_a = [-1] + [1] * (A.weight.dim() - 1)
            A.weight.div_(s.float().reshape(shape_a))
            if A.bias is not None:
                A.bias.div_(s.float())
            shape_b = [1] * B.weight.dim()
            shape_b[ax] = -1
            B.weight.mul_(s.float().reshape(shape_b))
            if stats is not None and a in stats:
                beta, g = stats[a]
                stats[a] = (beta / s, g / s)
    return len(pairs)


def _relu_mean(mu: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """E[max(0, X)] for X ~ N(mu, sigma^2)."""
    sigma = sigma.clamp(min=1e-12)
    z = mu / sigma
    pdf = torch.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + torch.erf(z / math.sqrt(2)))
    return sigma * pdf + mu * cdf


@torch.no_grad()
def bias_correction(model: nn.Module, stats: dict | None, pairs: list[tuple[str, str, bool]]) -> int:
    """Subtract dW * E[x] from the bias of each quantized layer whose input statistics are known.
    ``pairs`` come from ``layer_pairs`` on the float model (before the layers were swapped)."""
    if not stats:
        return 0
    layers = dict(qgraph.quant_layers(model))
    done = 0
    for a, b, relu in pairs:
        if a not in stats or b not in layers:
            continue
        B = layers[b]
        ax = _in_axis(B)
        if ax is None:
            continue
        beta, g = stats[a]
        ex = _relu_mean(beta, g) if relu else beta
        w = B.weight.detach().double()
        dw = B.weight_fq(B.weight).detach().double() - w
        if isinstance(B, nn.Linear):
            err = dw @ ex
        elif ax == 1:
            err = (dw.sum(dim=(2, 3)) * ex[None, :]).sum(1)
        else:
            err = dw.sum(dim=(1, 2, 3)) * ex
        if B.bias is None:
            B.bias = nn.Parameter(torch.zeros(B.weight.shape[0], dtype=B.weight.dtype))
        B.bias.sub_(err.float())
        done += 1
    return done
