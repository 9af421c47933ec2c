"""Tucker-2 for Conv2d (Kim et al., 2016): decompose the kernel ``W (Cout, Cin, kh, kw)`` along
its two channel modes only, ``W ~ core x_0 U_out x_1 U_in``, which runs as three convolutions:

    1x1 (Cin -> r_in, weight U_in^T)  ->  kh x kw core (r_in -> r_out, the conv's stride/padding)
    ->  1x1 (r_out -> Cout, weight U_out, the conv's bias)

The decomposition is TensorLy's ``partial_tucker`` (HOOI from an HOSVD start). At full ranks
(Cout, Cin) the factors are square orthogonal and the three convs equal the original.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from ..core.errors import UsageError
from .svd import check_rank


def max_ranks(layer: nn.Conv2d) -> tuple[int, int]:
    return layer.out_channels, layer.in_channels


def supported(layer: nn.Module) -> str | None:
    """None when Tucker-2 applies, else why not."""
    if type(layer) is not nn.Conv2d:
        return "not a Conv2d"
    if layer.groups != 1:
        return "grouped/depthwise conv"
    if isinstance(layer.padding, str):
        return "string padding"
    if layer.kernel_size == (1, 1):
        return "1x1 kernel (Tucker-2 would only split it into more 1x1 convs)"
    return None


def tucker_conv(layer: nn.Conv2d, ranks: tuple[int, int], *, name: str = "", n_iter_max: int = 2) -> nn.Sequential:
    """Three convs (1x1, core, 1x1) approximating ``layer`` with ranks (r_out, r_in)."""
    from tensorly.decomposition import partial_tucker

    why = supported(layer)
    if why:
        raise UsageError(f"Tucker-2 cannot factorize {name or 'this layer'}: {why}")
    r_out, r_in = ranks
    check_rank(r_out, layer.out_channels, f"{name} (output mode)", "out_channels")
    check_rank(r_in, layer.in_channels, f"{name} (input mode)", "in_channels")
    w = layer.weight.detach()
    with warnings.catch_warnings():  # TensorLy warns when a rank exceeds the other modes' size
        warnings.simplefilter("ignore")
        (core, (u_out, u_in)), _ = partial_tucker(
            w.double().cpu().numpy(), rank=[r_out, r_in], modes=[0, 1], n_iter_max=n_iter_max, init="svd",
        )
    first = nn.Conv2d(layer.in_channels, r_in, 1, bias=False)
    mid = nn.Conv2d(r_in, r_out, layer.kernel_size, layer.stride, layer.padding, layer.dilation,
                    bias=False, padding_mode=layer.padding_mode)
    last = nn.Conv2d(r_out, layer.out_channels, 1, bias=layer.bias is not None)
    seq = nn.Sequential(first, mid, last).to(w.device, w.dtype)

    def t(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).to(w.device, w.dtype)

    with torch.no_grad():
        first.weight.copy_(t(u_in.T[:, :, None, None]))
        mid.weight.copy_(t(core))
        last.weight.copy_(t(u_out[:, :, None, None]))
        if layer.bias is not None:
            last.bias.copy_(layer.bias.detach())
    return seq
