"""AdaRound (Nagel et al., 2020): learn whether each weight rounds up or down.

Layer by layer, in model order, the weight is written as ``s * (floor(W / s) + h(V))`` with the
rectified sigmoid h; V is trained so the layer's output on the calibration inputs (as the
already-quantized earlier layers produce them) matches the float layer's output, with a
regulariser that pushes h to 0 or 1 (beta annealed 20 -> 2). The hard rounding is then written
into the weights, so the frozen weight grid reproduces it exactly (in simulation and export).
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn

from . import graph as qgraph

ZETA, GAMMA = 1.1, -0.1


def _h(v: torch.Tensor) -> torch.Tensor:
    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0, 1)


def _layer_out(layer: nn.Module, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    if isinstance(layer, nn.Conv2d):
        return layer._conv_forward(x, w, b)
    return F.linear(x, w, b)


@torch.no_grad()
def _inputs(model: nn.Module, layer: nn.Module, batches: list[torch.Tensor]) -> torch.Tensor:
    got = []
    h = layer.register_forward_pre_hook(lambda m, args: got.append(args[0].detach()))
    try:
        for x in batches:
            model(x)
    finally:
        h.remove()
    return torch.cat(got)


def adaround(model: nn.Module, batches: list[torch.Tensor], *, iters: int = 300, lam: float = 0.01,
             batch_size: int = 32, max_images: int = 256, lr: float = 1e-2, seed: int = 0) -> dict:
    """Learn the rounding of every quantized layer's weights in place. Returns a summary."""
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(seed)
    calib, n = [], 0
    for x in batches:
        calib.append(x[: max_images - n])
        n += calib[-1].shape[0]
        if n >= max_images:
            break
    model.eval()
    rows = []
    for name, layer in qgraph.quant_layers(model):
        fq = layer.weight_fq
        if fq.mode != "quant" or iters == 0:
            continue
        x = _inputs(model, layer, calib)
        w = layer.weight.detach()
        s = fq.scale.detach().reshape([-1] + [1] * (w.dim() - 1)) if fq.scale.dim() else fq.scale.detach()
        with torch.no_grad():
            _, b = layer.q_weight_bias()
            b = None if b is None else b.detach()
            target = _layer_out(layer, x, w, b)
        wf = torch.floor(w / s)
        rest = (w / s - wf).clamp(0.01, 0.99)
        v = nn.Parameter(-torch.log((ZETA - GAMMA) / (rest - GAMMA) - 1))
        opt = torch.optim.Adam([v], lr=lr)
        nearest = torch.clamp(torch.round(w / s), fq.qmin, fq.qmax) * s
        before = float(F.mse_loss(_layer_out(layer, x, nearest, b), target))
        warm = int(0.2 * iters)
        for it in range(iters):
            idx = torch.randint(0, x.shape[0], (min(batch_size, x.shape[0]),), generator=g)
            ws = torch.clamp(wf + _h(v), fq.qmin, fq.qmax) * s
            rec = F.mse_loss(_layer_out(layer, x[idx], ws, b), target[idx])
            if it < warm:
                loss = rec
            else:
                beta = 20 - (20 - 2) * (it - warm) / max(1, iters - warm)
                loss = rec + lam * (1 - (2 * _h(v) - 1).abs().pow(beta)).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
        with torch.no_grad():
            hard = torch.clamp(wf + (_h(v) >= 0.5).to(w.dtype), fq.qmin, fq.qmax) * s
            after = float(F.mse_loss(_layer_out(layer, x, hard, b), target))
            layer.weight.copy_(hard)
        rows.append({"layer": name, "mse_nearest": before, "mse_adaround": after})
    return {"layers": rows, "seconds": round(time.perf_counter() - t0, 2), "iters": iters}
