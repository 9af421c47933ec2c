"""Rank selection: how many components a factorized layer keeps.

- ``energy``: the smallest rank whose singular values keep that fraction of the squared spectrum
  (for Tucker-2, per channel mode of the kernel);
- a cost ratio (``params`` or ``macs`` of the factorized layer over the original): the largest
  rank that stays under it;
- VBMF: the rank that empirical variational Bayesian matrix factorization (Nakajima et al., 2013)
  estimates from the spectrum of each mode's unfolding -- no knob to set.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


# ---------------------------------------------------------------------------- spectra
def unfold_spectrum(weight: torch.Tensor, mode: int) -> np.ndarray:
    """Singular values (descending) of the mode-``mode`` unfolding, from the eigenvalues of its small
    Gram matrix (``C x C``), never an SVD of the wide ``C x (rest)`` matrix."""
    w = weight.detach().double().cpu()
    mat = w.movedim(mode, 0).reshape(w.shape[mode], -1)
    if mat.shape[0] > mat.shape[1]:
        mat = mat.T
    return torch.linalg.eigvalsh(mat @ mat.T).flip(0).clamp_min(0).sqrt().numpy()


def channel_spectra(weight: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Spectra of a conv kernel's output- and input-channel unfoldings: the modes Tucker-2 truncates,
    and CP's stand-in (a CP rank has no spectrum of its own to read an energy from)."""
    return unfold_spectrum(weight, 0), unfold_spectrum(weight, 1)


def energy_rank(s: np.ndarray, energy: float) -> int:
    e = np.cumsum(np.asarray(s, dtype=np.float64) ** 2)
    if e[-1] <= 0:
        return 1
    return int(min(len(s), np.searchsorted(e / e[-1], energy - 1e-12) + 1))


# ---------------------------------------------------------------------------- VBMF
def vbmf_rank(matrix: np.ndarray) -> int:
    """Rank estimated by analytic empirical VBMF with unknown noise variance (Nakajima et al.,
    JMLR 2013, Theorem / Eq. for the EVB threshold); at least 1."""
    y = np.asarray(matrix, dtype=np.float64)
    if y.shape[0] > y.shape[1]:
        y = y.T
    L, M = y.shape
    H = L
    s = np.linalg.svd(y, compute_uv=False)
    alpha = L / M
    tau_bar = 2.5129 * math.sqrt(alpha)
    x_bar = (1 + tau_bar) * (1 + alpha / tau_bar)
    residual = max(float(np.sum(y ** 2) - np.sum(s ** 2)), 0.0)
    eh_ub = int(min(math.ceil(L / (1 + alpha)) - 1, H)) - 1
    upper = (np.sum(s ** 2) + residual) / (L * M)
    if eh_ub + 1 < len(s):
        lower = max(s[eh_ub + 1] ** 2 / (M * x_bar), float(np.mean(s[eh_ub + 1:] ** 2)) / M)
    else:
        lower = upper * 1e-6
    lower = max(lower, upper * 1e-12)
    if lower >= upper:
        return 1

    def objective(sigma2: float) -> float:
        x = s ** 2 / (M * sigma2)
        z1, z2 = x[x > x_bar], x[x <= x_bar]
        tau_z1 = 0.5 * (z1 - (1 + alpha) + np.sqrt(np.maximum((z1 - (1 + alpha)) ** 2 - 4 * alpha, 0)))
        return float(
            np.sum(z2 - np.log(z2)) + np.sum(z1 - tau_z1) + np.sum(np.log((tau_z1 + 1) / z1))
            + alpha * np.sum(np.log(tau_z1 / alpha + 1)) + residual / (M * sigma2) + (L - H) * np.log(sigma2)
        )

    from scipy.optimize import minimize_scalar

    sigma2 = minimize_scalar(objective, bounds=(lower, upper), method="bounded").x
    threshold = math.sqrt(M * sigma2 * (1 + tau_bar) * (1 + alpha / tau_bar))
    return max(1, int(np.sum(s > threshold)))


def vbmf_ranks_conv(weight: torch.Tensor) -> tuple[int, int]:
    """(r_out, r_in) for Tucker-2 from VBMF on the output- and input-mode unfoldings."""
    w = weight.detach().double().cpu()
    out_mat = w.reshape(w.shape[0], -1).numpy()
    in_mat = w.transpose(0, 1).reshape(w.shape[1], -1).numpy()
    return min(vbmf_rank(out_mat), w.shape[0]), min(vbmf_rank(in_mat), w.shape[1])


# ---------------------------------------------------------------------------- cost models
def layer_cost(layer: nn.Module, in_hw: tuple[int, int], out_hw: tuple[int, int]) -> tuple[int, int]:
    """(params, MACs per sample) of a Conv2d or Linear (MACs of a Linear per application)."""
    if isinstance(layer, nn.Linear):
        return layer.weight.numel(), layer.in_features * layer.out_features
    k = layer.kernel_size[0] * layer.kernel_size[1]
    p = layer.out_channels * layer.in_channels // layer.groups * k
    return p, p * out_hw[0] * out_hw[1]


def svd_cost(layer: nn.Linear, r: int) -> tuple[int, int]:
    p = r * (layer.in_features + layer.out_features)
    return p, p


def tucker_cost(layer: nn.Conv2d, r_out: int, r_in: int, in_hw, out_hw) -> tuple[int, int]:
    k = layer.kernel_size[0] * layer.kernel_size[1]
    p1, p2, p3 = layer.in_channels * r_in, r_in * r_out * k, r_out * layer.out_channels
    return p1 + p2 + p3, p1 * in_hw[0] * in_hw[1] + (p2 + p3) * out_hw[0] * out_hw[1]


def cp_cost(layer: nn.Conv2d, r: int, in_hw, out_hw) -> tuple[int, int]:
    kh, kw = layer.kernel_size
    mid_h = out_hw[0]  # after the vertical pass H is already strided, W not yet
    p1, p2, p3, p4 = layer.in_channels * r, r * kh, r * kw, r * layer.out_channels
    macs = p1 * in_hw[0] * in_hw[1] + p2 * mid_h * in_hw[1] + (p3 + p4) * out_hw[0] * out_hw[1]
    return p1 + p2 + p3 + p4, macs


def _largest_under(n_max: int, cost, budget: float) -> int:
    """The largest r in [1, n_max] with cost(r) <= budget (cost increasing in r); 1 if none."""
    lo, hi = 1, n_max
    if cost(1) > budget:
        return 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if cost(mid) <= budget:
            lo = mid
        else:
            hi = mid - 1
    return lo


def svd_rank_for_ratio(layer: nn.Linear, ratio: float, metric: str = "macs") -> int:
    base = layer.weight.numel()
    i = 0 if metric == "params" else 1
    return _largest_under(min(layer.in_features, layer.out_features), lambda r: svd_cost(layer, r)[i], ratio * base)


def tucker_ranks_for_ratio(layer: nn.Conv2d, ratio: float, in_hw, out_hw, metric: str = "macs") -> tuple[int, int]:
    """Ranks (r_out, r_in) proportional to (Cout, Cin), the largest whose cost stays under ratio."""
    i = 0 if metric == "params" else 1
    budget = ratio * layer_cost(layer, in_hw, out_hw)[i]
    cout, cin = layer.out_channels, layer.in_channels
    steps = max(cout, cin)

    def ranks(j: int) -> tuple[int, int]:
        f = j / steps
        return max(1, min(cout, round(f * cout))), max(1, min(cin, round(f * cin)))

    j = _largest_under(steps, lambda j: tucker_cost(layer, *ranks(j), in_hw, out_hw)[i], budget)
    return ranks(j)


def cp_rank_for_ratio(layer: nn.Conv2d, ratio: float, in_hw, out_hw, metric: str = "macs") -> int:
    from .cp import max_rank

    i = 0 if metric == "params" else 1
    budget = ratio * layer_cost(layer, in_hw, out_hw)[i]
    return _largest_under(max_rank(layer), lambda r: cp_cost(layer, r, in_hw, out_hw)[i], budget)
