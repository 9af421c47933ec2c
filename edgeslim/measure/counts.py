"""Static figures of a PyTorch model: parameters, MACs per layer, memory-access cost."""
from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_params(model: nn.Module) -> int:
    """Unique parameters (shared tensors counted once)."""
    seen, total = set(), 0
    for p in model.parameters():
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel()
    return total


def _batch_shape(input_shape) -> tuple[int, ...]:
    shape = tuple(int(s) for s in input_shape)
    return shape if len(shape) == 4 else (1, *shape)


def _leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if n and not list(m.children())]


@torch.no_grad()
def count_macs(model: nn.Module, input_shape) -> tuple[int, list[dict[str, Any]]]:
    """Multiply-accumulates for one input, from torch.utils.flop_counter (FLOPs / 2), with a
    per-layer table of leaf modules (name, type, params, macs, output shape)."""
    model = model.eval()
    x = torch.zeros(_batch_shape(input_shape), device=next(iter(model.parameters()), torch.zeros(1)).device)
    per_layer: list[dict[str, Any]] = []
    handles = []
    for name, m in _leaves(model):
        def pre(mod, args, name=name):
            mod._edgeslim_counter = FlopCounterMode(display=False)
            mod._edgeslim_counter.__enter__()

        def post(mod, args, out, name=name):
            counter = mod._edgeslim_counter
            counter.__exit__(None, None, None)
            del mod._edgeslim_counter
            per_layer.append({
                "name": name, "type": type(mod).__name__,
                "params": sum(p.numel() for p in mod.parameters(recurse=False)),
                "macs": counter.get_total_flops() // 2,
                "output_shape": list(out.shape) if isinstance(out, torch.Tensor) else None,
            })
        handles += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    total_counter = FlopCounterMode(display=False)
    try:
        # leaf counters nest inside the total; FlopCounterMode supports nesting
        with total_counter:
            model(x)
    finally:
        for h in handles:
            h.remove()
    return total_counter.get_total_flops() // 2, per_layer


@torch.no_grad()
def memory_access_cost(model: nn.Module, input_shape, *, bytes_per_element: int = 4) -> dict[str, int]:
    """Estimated bytes moved by one inference: each leaf layer reads its inputs and weights and
    writes its outputs (no cache reuse assumed; an estimate, not a measurement)."""
    reads = writes = weights = 0
    handles = []

    def hook(mod, args, out):
        nonlocal reads, writes, weights
        reads += sum(a.numel() for a in args if isinstance(a, torch.Tensor))
        writes += out.numel() if isinstance(out, torch.Tensor) else 0
        weights += sum(p.numel() for p in mod.parameters(recurse=False))
        weights += sum(b.numel() for b in mod.buffers(recurse=False))

    for _, m in _leaves(model):
        handles.append(m.register_forward_hook(hook))
    try:
        model.eval()(torch.zeros(_batch_shape(input_shape)))
    finally:
        for h in handles:
            h.remove()
    b = bytes_per_element
    return {"activation_read_bytes": reads * b, "activation_write_bytes": writes * b,
            "weight_bytes": weights * b, "total_bytes": (reads + writes + weights) * b}
