"""AdaRound (Nagel et al., 2020): learn whether each weight rounds up or down.

Layer by layer, in model order, the weight is written as ``s * clamp(floor(W / s) + h(V))`` with
the rectified sigmoid ``h(V) = clip(sigmoid(V) * (zeta - gamma) + gamma, 0, 1)`` and V trained
with Adam so that the layer's output matches the float model's:

    min_V  || f(W x) - f(W~ x~) ||^2  +  lambda * sum(1 - |2 h(V) - 1|^beta)

- ``x~`` are the layer's inputs in the quantized model, in which the earlier layers already use
  their learned rounding and activations are fake-quantized; ``x`` and the target ``f(W x)``
  come from the float model (the paper's asymmetric reconstruction, as AIMET does), so a layer
  also corrects the error its predecessors left.
- ``f`` is the activation that follows the layer when it is a ReLU / ReLU6 (errors it clips
  away do not count).
- The reconstruction error is summed over output channels and averaged over images and
  positions; the regulariser (lambda 0.01) starts after a 20 % warm-up with beta annealed
  linearly from 20 to 2 (AIMET's defaults). Each step uses a random mini-batch of the cached
  samples.

The hard rounding (h >= 0.5) is then written into the weights, so the frozen weight grid
reproduces it exactly (in simulation and in the exported file).
"""
from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F
from torch import nn

from . import graph as qgraph
from .qmodules import FakeQuant

ZETA, GAMMA = 1.1, -0.1


def _h(v: torch.Tensor) -> torch.Tensor:
    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0, 1)


def _layer_out(layer: nn.Module, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    if isinstance(layer, nn.Conv2d):
        return layer._conv_forward(x, w, b)
    return F.linear(x, w, b)


def _activations(model: nn.Module) -> dict[str, callable]:
    """layer name -> the ReLU / ReLU6 applied right after it (traced models only)."""
    if not isinstance(model, torch.fx.GraphModule):
        return {}
    out = {}
    for node in model.graph.nodes:
        m = qgraph._mod(model, node)
        if not isinstance(m, qgraph.QUANT_LAYERS) or len(node.users) != 1:
            continue
        user = next(iter(node.users))
        um = qgraph._mod(model, user)
        if isinstance(um, FakeQuant) and len(user.users) == 1:  # output quantizer between (ReLU follows it)
            user = next(iter(user.users))
            um = qgraph._mod(model, user)
        if isinstance(um, nn.ReLU6) or (user.op == "call_function" and user.target in (F.relu6, F.hardtanh)):
            out[node.target] = lambda t: torch.clamp(t, 0, 6)
        elif isinstance(um, nn.ReLU) or (user.op in ("call_function", "call_method")
                                         and user.target in (F.relu, torch.relu, "relu", "relu_")):
            out[node.target] = torch.relu
    return out


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


def adaround(model: nn.Module, batches: list[torch.Tensor], *, iters: int = 1000, lam: float = 0.01,
             batch_size: int = 32, max_images: int = 256, lr: float = 1e-3, warm_start: float = 0.2,
             seed: int = 0) -> dict:
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
    # the float reference: the same graph with every quantizer off and the weights as they are now
    ref = copy.deepcopy(model).eval()
    for m in ref.modules():
        if isinstance(m, FakeQuant):
            m.mode = "off"
    ref_layers = dict(qgraph.quant_layers(ref))
    acts = _activations(model)
    rows = []
    for name, layer in qgraph.quant_layers(model):
        fq = layer.weight_fq
        if fq.mode != "quant" or iters == 0:
            continue
        act = acts.get(name, lambda t: t)
        xq = _inputs(model, layer, calib)  # inputs as the quantized model (learned rounding so far) makes them
        xf = _inputs(ref, ref_layers[name], calib)
        w = layer.weight.detach()
        s = fq.scale.detach().reshape([-1] + [1] * (w.dim() - 1)) if fq.scale.dim() else fq.scale.detach()
        with torch.no_grad():
            _, b = layer.q_weight_bias()
            b = None if b is None else b.detach()
            target = act(_layer_out(layer, xf, w, b))

        def rec_loss(out, tgt):  # squared error summed over channels, averaged over images and positions
            return (out - tgt).pow(2).sum(1).mean()

        wf = torch.floor(w / s)
        rest = (w / s - wf).clamp(0.01, 0.99)
        v = nn.Parameter(-torch.log((ZETA - GAMMA) / (rest - GAMMA) - 1))
        opt = torch.optim.Adam([v], lr=lr)
        with torch.no_grad():
            nearest = torch.clamp(torch.round(w / s), fq.qmin, fq.qmax) * s
            before = float(rec_loss(act(_layer_out(layer, xq, nearest, b)), target))
        warm = int(warm_start * iters)
        bs = min(batch_size, xq.shape[0])
        for it in range(iters):
            idx = torch.randint(0, xq.shape[0], (bs,), generator=g)
            hv = _h(v)
            ws = torch.clamp(wf + hv, fq.qmin, fq.qmax) * s
            loss = rec_loss(act(_layer_out(layer, xq[idx], ws, b)), target[idx])
            if it >= warm:
                beta = 2 + (20 - 2) * (1 - (it - warm) / max(1, iters - warm))
                loss = loss + lam * (1 - (2 * hv - 1).abs().pow(beta)).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            hard = torch.clamp(wf + (_h(v) >= 0.5).to(w.dtype), fq.qmin, fq.qmax) * s
            after = float(rec_loss(act(_layer_out(layer, xq, hard, b)), target))
            flipped = float(((hard - nearest).abs() > 0).double().mean())
            layer.weight.copy_(hard)
        rows.append({"layer": name, "rec_error_nearest": before, "rec_error_adaround": after,
                     "changed_vs_nearest": round(flipped, 4)})
    return {"layers": rows, "seconds": round(time.perf_counter() - t0, 2), "iters": iters,
            "batch_size": batch_size, "images": n}
