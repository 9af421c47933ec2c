"""CP decomposition for Conv2d (Lebedev et al., 2015): ``W (Cout, Cin, kh, kw) ~ sum_r
lambda_r a_r (x) b_r (x) h_r (x) v_r`` runs as four thin convolutions:

    1x1 (Cin -> R)  ->  depthwise kh x 1 (stride/pad in H)  ->  depthwise 1 x kw (stride/pad in W)
    ->  1x1 (R -> Cout, weight a_r * lambda_r, the conv's bias)

The decomposition is TensorLy's ``parafac`` (ALS). CP is not exact at any small rank and ALS can
be slow and unstable on large kernels; Tucker-2 is usually the safer first choice.

:class:`CPConv` is this method's :class:`~edgeslim.lowrank.decomposition.Decomposition`.
"""
from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import torch
from torch import nn

from ..core.errors import UsageError
from . import rank as _rank
from .decomposition import Geometry
from .svd import check_rank
from .tucker import conv_unsupported


def max_rank(layer: nn.Conv2d) -> int:
    # a 4-way tensor's CP rank never exceeds the product of all but its largest dimension
    dims = sorted([layer.out_channels, layer.in_channels, *layer.kernel_size])
    return int(np.prod(dims[:-1]))


def supported(layer: nn.Module) -> str | None:
    why = conv_unsupported(layer, "nothing for CP to separate")
    if why is not None:
        return why
    if layer.padding_mode != "zeros":
        return f"padding_mode={layer.padding_mode!r} does not separate into H and W passes"
    return None


def cp_conv(layer: nn.Conv2d, rank: int, *, name: str = "", n_iter_max: int = 25, seed: int = 0) -> nn.Sequential:
    from tensorly.decomposition import parafac

    why = supported(layer)
    if why:
        raise UsageError(f"CP cannot factorize {name or 'this layer'}: {why}")
    check_rank(rank, max_rank(layer), name, "the product of the kernel's dimensions except the largest")
    w = layer.weight.detach()
    with warnings.catch_warnings():  # TensorLy warns when rank exceeds a mode's size (it pads the init)
        warnings.simplefilter("ignore")
        cp = parafac(w.double().cpu().numpy(), rank, n_iter_max=n_iter_max, init="svd", random_state=seed)
    lam = np.asarray(cp.weights)
    a, b, kh, kw = (np.asarray(f) for f in cp.factors)
    (sh, sw), (ph, pw), (dh, dw) = layer.stride, layer.padding, layer.dilation
    first = nn.Conv2d(layer.in_channels, rank, 1, bias=False)
    vert = nn.Conv2d(rank, rank, (layer.kernel_size[0], 1), (sh, 1), (ph, 0), (dh, 1), groups=rank, bias=False)
    horiz = nn.Conv2d(rank, rank, (1, layer.kernel_size[1]), (1, sw), (0, pw), (1, dw), groups=rank, bias=False)
    last = nn.Conv2d(rank, layer.out_channels, 1, bias=layer.bias is not None)
    seq = nn.Sequential(first, vert, horiz, last).to(w.device, w.dtype)

    def t(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x)).to(w.device, w.dtype)

    with torch.no_grad():
        first.weight.copy_(t(b.T[:, :, None, None]))
        vert.weight.copy_(t(kh.T[:, None, :, None]))
        horiz.weight.copy_(t(kw.T[:, None, None, :]))
        last.weight.copy_(t((a * lam[None, :])[:, :, None, None]))
        if layer.bias is not None:
            last.bias.copy_(layer.bias.detach())
    return seq


@dataclasses.dataclass(frozen=True)
class CPConv:
    """The Decomposition behind ``CP``: one rank per layer, read from the channel modes' spectra."""

    n_iter_max: int = 25
    layer_type = nn.Conv2d

    def unsupported(self, layer: nn.Module) -> str | None:
        return supported(layer)

    def fixed_ranks(self, layer: nn.Conv2d, rank: int, name: str) -> int:
        check_rank(rank, max_rank(layer), name, "the product of the kernel's dimensions except the largest")
        return rank

    def spectra(self, layer: nn.Conv2d) -> tuple:
        return _rank.channel_spectra(layer.weight)

    def energy_ranks(self, spectra: tuple, energy: float) -> int:
        # the larger of the two modes' ranks: one rank has to carry both channel modes
        return max(_rank.energy_rank(s, energy) for s in spectra)

    def vbmf_ranks(self, layer: nn.Conv2d) -> int:
        return max(_rank.vbmf_ranks_conv(layer.weight))

    def ratio_ranks(self, layer: nn.Conv2d, ratio: float, geo: Geometry, metric: str) -> int:
        return _rank.cp_rank_for_ratio(layer, ratio, geo.in_hw, geo.out_hw, metric)

    def cost(self, layer: nn.Conv2d, ranks: int, geo: Geometry) -> tuple[int, int]:
        return _rank.cp_cost(layer, ranks, geo.in_hw, geo.out_hw)

    def build(self, layer: nn.Conv2d, ranks: int, *, name: str, seed: int) -> nn.Module:
        return cp_conv(layer, ranks, name=name, n_iter_max=self.n_iter_max, seed=seed)  # seeds ALS
