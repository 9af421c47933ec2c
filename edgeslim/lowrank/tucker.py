"""Tucker-2 for Conv2d (Kim et al., 2016): decompose the kernel ``W (Cout, Cin, kh, kw)`` along
its two channel modes only, ``W ~ core x_0 U_out x_1 U_in``, which runs as three convolutions:

    1x1 (Cin -> r_in, weight U_in^T)  ->  kh x kw core (r_in -> r_out, the conv's stride/padding)
    ->  1x1 (r_out -> Cout, weight U_out, the conv's bias)

The decomposition is TensorLy's ``partial_tucker`` on modes 0 and 1 only, on TensorLy's PyTorch
backend: the HOSVD start takes each factor from the eigenvectors of the small Gram matrix of the
mode's unfolding (``Cout x Cout`` and ``Cin x Cin``, never an SVD of the wide ``C x C k^2``
unfolding), then ``n_iter_max`` HOOI sweeps with the same Gram trick refine it (0 = closed-form
HOSVD). It runs in torch on one thread: well under a second for a 512x512x3x3 kernel. At full
ranks (Cout, Cin) the factors are square orthogonal and the three convs equal the original.

:class:`TuckerConv` is this method's :class:`~edgeslim.lowrank.decomposition.Decomposition`.
"""
from __future__ import annotations

import contextlib
import dataclasses
import warnings

import torch
from torch import nn

from ..core.errors import UsageError
from . import rank as _rank
from .decomposition import Geometry
from .svd import check_rank


def max_ranks(layer: nn.Conv2d) -> tuple[int, int]:
    return layer.out_channels, layer.in_channels


def conv_unsupported(layer: nn.Module, one_by_one: str) -> str | None:
    """Why a layer cannot be split into thin convolutions (None: it can); ``one_by_one`` says why a 1x1
    kernel is left alone by the calling decomposition."""
    if type(layer) is not nn.Conv2d:
        return "not a Conv2d"
    if layer.groups != 1:
        return "grouped/depthwise conv"
    if isinstance(layer.padding, str):
        return "string padding"
    if layer.kernel_size == (1, 1):
        return f"1x1 kernel ({one_by_one})"
    return None


def supported(layer: nn.Module) -> str | None:
    """None when Tucker-2 applies, else why not."""
    return conv_unsupported(layer, "Tucker-2 would only split it into more 1x1 convs")


@contextlib.contextmanager
def one_thread():
    """Run torch on one intra-op thread for the block: kernel-sized linear algebra gains little from
    threads, and on shared cores their synchronisation made decompositions 3-10x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def gram_svd(matrix: torch.Tensor, n_eigenvecs: int | None = None, **_) -> tuple[torch.Tensor, ...]:
    """Truncated SVD through ``eigh`` of the Gram matrix of the matrix's short side (TensorLy's
    SVD-function interface; TensorLy's own ``symeig_svd`` takes the long side for wide matrices)."""
    n = min(matrix.shape) if n_eigenvecs is None else min(n_eigenvecs, *matrix.shape)
    wide = matrix.shape[0] <= matrix.shape[1]
    a = matrix if wide else matrix.T
    s2, vecs = torch.linalg.eigh(a @ a.T)
    vecs, s = vecs.flip(1)[:, :n], s2.flip(0)[:n].clamp_min(0).sqrt()
    other = (vecs.T @ a) / s.clamp_min(torch.finfo(s.dtype).tiny ** 0.5)[:, None]
    return (vecs, s, other) if wide else (other.T, s, vecs.T)


def tucker2(weight: torch.Tensor, ranks: tuple[int, int],
            n_iter_max: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(core (r_out, r_in, kh, kw), U_out (Cout, r_out), U_in (Cin, r_in)) of a 4-d kernel, float64.

    TensorLy's ``partial_tucker`` gives the HOSVD start; the HOOI sweeps are TensorLy's update
    (``multi_mode_dot`` with the other factor, then the leading singular vectors of the mode's
    unfolding) with :func:`gram_svd`, because ``partial_tucker``'s own sweeps always call a full SVD.
    """
    import tensorly as tl
    from tensorly.decomposition import partial_tucker
    from tensorly.tenalg import multi_mode_dot

    w = weight.detach().to("cpu", torch.float64)
    modes = [0, 1]
    with tl.backend_context("pytorch"), warnings.catch_warnings(), one_thread():
        warnings.simplefilter("ignore")  # TensorLy warns when a rank exceeds the other modes' size
        (core, factors), _ = partial_tucker(w, rank=list(ranks), modes=modes, n_iter_max=0, init="svd",
                                            svd=gram_svd)
        for _ in range(n_iter_max):
            for i, mode in enumerate(modes):
                y = tl.unfold(multi_mode_dot(w, factors, modes=modes, skip=i, transpose=True), mode)
                if ranks[i] <= min(y.shape):  # else the HOSVD factor already spans y's columns
                    factors[i] = gram_svd(y, ranks[i])[0]
        if n_iter_max:
            core = multi_mode_dot(w, factors, modes=modes, transpose=True)
    return core, factors[0], factors[1]


def tucker_conv(layer: nn.Conv2d, ranks: tuple[int, int], *, name: str = "", n_iter_max: int = 2) -> nn.Sequential:
    """Three convs (1x1, core, 1x1) approximating ``layer`` with ranks (r_out, r_in)."""
    why = supported(layer)
    if why:
        raise UsageError(f"Tucker-2 cannot factorize {name or 'this layer'}: {why}")
    r_out, r_in = ranks
    check_rank(r_out, layer.out_channels, f"{name} (output mode)", "out_channels")
    check_rank(r_in, layer.in_channels, f"{name} (input mode)", "in_channels")
    w = layer.weight.detach()
    core, u_out, u_in = tucker2(w, (r_out, r_in), n_iter_max)
    first = nn.Conv2d(layer.in_channels, r_in, 1, bias=False)
    mid = nn.Conv2d(r_in, r_out, layer.kernel_size, layer.stride, layer.padding, layer.dilation,
                    bias=False, padding_mode=layer.padding_mode)
    last = nn.Conv2d(r_out, layer.out_channels, 1, bias=layer.bias is not None)
    seq = nn.Sequential(first, mid, last).to(w.device, w.dtype)
    with torch.no_grad():
        first.weight.copy_(u_in.T[:, :, None, None])
        mid.weight.copy_(core)
        last.weight.copy_(u_out[:, :, None, None])
        if layer.bias is not None:
            last.bias.copy_(layer.bias.detach())
    return seq


@dataclasses.dataclass(frozen=True)
class TuckerConv:
    """The Decomposition behind ``Tucker``: ranks ``(r_out, r_in)``, one per channel mode."""

    n_iter_max: int = 2
    layer_type = nn.Conv2d

    def unsupported(self, layer: nn.Module) -> str | None:
        return supported(layer)

    def fixed_ranks(self, layer: nn.Conv2d, rank: int, name: str) -> tuple[int, int]:
        check_rank(rank, layer.out_channels, f"{name} (output mode)", "out_channels")
        check_rank(rank, layer.in_channels, f"{name} (input mode)", "in_channels")
        return (rank, rank)

    def spectra(self, layer: nn.Conv2d) -> tuple:
        return _rank.channel_spectra(layer.weight)

    def energy_ranks(self, spectra: tuple, energy: float) -> tuple[int, int]:
        return _rank.energy_rank(spectra[0], energy), _rank.energy_rank(spectra[1], energy)

    def vbmf_ranks(self, layer: nn.Conv2d) -> tuple[int, int]:
        return _rank.vbmf_ranks_conv(layer.weight)

    def ratio_ranks(self, layer: nn.Conv2d, ratio: float, geo: Geometry, metric: str) -> tuple[int, int]:
        return _rank.tucker_ranks_for_ratio(layer, ratio, geo.in_hw, geo.out_hw, metric)

    def cost(self, layer: nn.Conv2d, ranks: tuple[int, int], geo: Geometry) -> tuple[int, int]:
        return _rank.tucker_cost(layer, *ranks, geo.in_hw, geo.out_hw)

    def build(self, layer: nn.Conv2d, ranks: tuple[int, int], *, name: str, seed: int) -> nn.Module:
        return tucker_conv(layer, ranks, name=name, n_iter_max=self.n_iter_max)  # HOSVD start: no seed
