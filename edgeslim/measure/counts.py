"""Static figures of a PyTorch model: parameters, MACs per layer, memory-access cost."""
from __future__ import annotations

import re
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ..core.errors import UsageError
from ..core.shapes import batched


def count_params(model: nn.Module) -> int:
    """Unique parameters (shared tensors counted once)."""
    seen, total = set(), 0
    for p in model.parameters():
        if p.data_ptr() not in seen:
            seen.add(p.data_ptr())
            total += p.numel()
    return total


def _leaves(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if n and not list(m.children())]


@torch.no_grad()
def count_macs(model: nn.Module, input_shape) -> tuple[int, list[dict[str, Any]]]:
    """Multiply-accumulates for one input, from torch.utils.flop_counter (FLOPs / 2), with a
    per-layer table of leaf modules (name, type, params, macs, output shape)."""
    model = model.eval()
    x = torch.zeros(batched(input_shape), device=next(iter(model.parameters()), torch.zeros(1)).device)
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
        model.eval()(torch.zeros(batched(input_shape)))
    finally:
        for h in handles:
            h.remove()
    b = bytes_per_element
    return {"activation_read_bytes": reads * b, "activation_write_bytes": writes * b,
            "weight_bytes": weights * b, "total_bytes": (reads + writes + weights) * b}


_TOO_SMALL = ("Kernel size can't be greater", "Output size is too small", "smaller than kernel size",
              "Padding size should be less than")
_SHAPE_HINT = "give the model's own input shape (`edgeslim models` lists it), or leave --input-shape out"


def shape_problem(error: Exception, shape, name: str = "the model") -> tuple[str, str] | None:
    """(message, hint) when ``error`` (raised running ``name`` on ``shape``) says the input does not fit
    the model -- too small for a kernel or pooling window, wrong channels, wrong flattened size --
    else None (some other failure, not the shape's fault)."""
    if not isinstance(error, RuntimeError):
        return None
    text = str(error).splitlines()[0] if str(error) else ""
    dims = ",".join(str(int(s)) for s in shape)
    if any(k in text for k in _TOO_SMALL):
        m = re.search(r"input size per channel: \((.+?)\)\. Kernel size: \((.+?)\)", text)
        why = (f"a {m[2].replace(' ', '')} kernel is larger than the {m[1].replace(' ', '')} feature map that "
               "reaches it" if m else text)
        return f"input shape [{dims}] is too small for {name}: {why}", _SHAPE_HINT
    m = re.search(r"to have (\d+) channels, but got (\d+) channels", text)
    if m:
        return (f"input shape [{dims}] does not fit {name}: its first convolution takes {m[1]} channel(s), the shape "
                f"gives {m[2]}", f"give --input-shape N,{m[1]},H,W (or --in-channels for a freshly built model)")
    m = re.search(r"mat1 and mat2 shapes cannot be multiplied \((\d+)x(\d+) and (\d+)x(\d+)\)", text)
    if m:
        return (f"input shape [{dims}] does not fit {name}: a Linear layer takes {m[3]} features and gets {m[2]} "
                f"(the model is built for one image size)", _SHAPE_HINT)
    if "can't allocate memory" in text or "out of memory" in text.lower():
        m = re.search(r"allocate (\d+) bytes", text)
        need = f" (one tensor of {int(m[1]) / 2**30:.1f} GiB)" if m else ""
        return (f"input shape [{dims}] needs more memory than is free to run {name}{need}",
                "use a smaller --input-shape (batch or image size)")
    if re.search(r"shape '\[.*\]' is invalid for input of size|size mismatch|The size of tensor a", text):
        return f"input shape [{dims}] does not fit {name}: {text}", _SHAPE_HINT
    return None


@torch.no_grad()
def check_input(model: nn.Module, input_shape, name: str = "the model") -> None:
    """Run ``model`` once on zeros of ``input_shape``; an input that does not fit is one UsageError
    naming the shape and why (not a raw RuntimeError from deep inside a layer)."""
    shape = batched(input_shape)
    device = next(iter(model.parameters()), torch.zeros(1)).device
    try:
        model.eval()(torch.zeros(shape, device=device))
    except RuntimeError as e:
        problem = shape_problem(e, shape, name)
        if problem is None:
            raise
        raise UsageError(problem[0], hint=problem[1]) from None


def check_fits_data(model: nn.Module, input_shape, data, name: str = "the model") -> None:
    """A model meant for labelled ``data`` serves its task, takes its (C, H, W) images and predicts its
    classes (a classifier's logits, a segmenter's per-pixel logits at the input size, a detector's
    ``num_classes``); else one DataError naming what does not fit."""
    from ..core.errors import DataError
    from ..models import task_of

    if not data.meta.labelled:
        return
    task, want = task_of(model), getattr(data.meta, "task", "classification")
    if task != want:
        raise DataError(f"{name} is a {task} model but {data.meta.name} holds {want} labels",
                        hint=f"use {task} data with it, or a {want} model with this data")
    shape = (1, *tuple(input_shape)[-3:])
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(shape))
    except RuntimeError as e:
        problem = shape_problem(e, shape, name)
        what = problem[0] if problem else f"the model cannot take the data's input shape {list(shape)}: " \
                                          f"{str(e).splitlines()[0]}"
        raise DataError(what, hint="choose data that matches the model, or pass --in-channels when building a "
                                   "fresh one") from None
    if task == "detection":
        if isinstance(getattr(model, "num_classes", None), int):
            data.meta.check_model_classes(model.num_classes, name)
        return
    if task == "segmentation":
        if out.ndim != 4 or tuple(out.shape[2:]) != tuple(shape[2:]):
            raise DataError(f"{name} gives {tuple(out.shape)} for an input of {shape}; a segmenter gives per-pixel "
                            "class logits (N, K, H, W) at the input size", hint="use a segmentation model")
        data.meta.check_model_classes(int(out.shape[1]), name)
        return
    if out.ndim != 2 or out.shape[1] != data.meta.num_classes:
        raise DataError(f"the model predicts {out.shape[-1]} classes but {data.meta.name} has {data.meta.num_classes}",
                        hint="pass --num-classes when building a fresh model, or use matching data")
