"""PTQ's int8 path into ExecuTorch: PT2E with the XNNPACK quantizer, lowered to the XNNPACK delegate.

    q = edgeslim.quantize(model, PTQ(), data=data)
    edgeslim.export(q, "q.pte", runtime="executorch", example=x, loader=data.train)

The float twin of the simulation (``deploy.float_model``: quantizers removed, its fake-quantized
weights baked in) is captured with torch.export, annotated by ``XNNPACKQuantizer`` (int8, symmetric,
per-channel weights; static per-tensor activations), calibrated, converted (``convert_pt2e``) and
lowered to XNNPACK's integer kernels. The result is verified in ExecuTorch against the simulation
(max abs diff and top-1 agreement on the calibration images, recorded, not a failure: the two
quantize independently).
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..core.errors import ExportError, UsageError
from ..core.registry import register_export
from .deploy import float_model
from .ptq import PTQ, calibration_batches


def _check_bits(config: PTQ) -> None:
    """XNNPACK's integer kernels are 8-bit: a simulation on another grid would not be what runs."""
    asked = {"weight bits": config.w_bits, "activation bits": config.a_bits}
    if config.first_last_bits is not None:
        asked["first_last_bits"] = config.first_last_bits
    asked.update({f"mixed_precision {p!r}": b for p, b in config.mixed_precision if b is not None})
    other = {k: v for k, v in asked.items() if v != 8}
    if other:
        raise UsageError("executorch's int8 path (XNNPACK) runs 8-bit weights and activations; this PTQ asks for "
                         + ", ".join(f"{k} {v}" for k, v in other.items()),
                         hint="quantize with PTQ(bits=8), or export with runtime='onnxruntime'")


def calibration_images(loader: Any, config: PTQ | None, example: torch.Tensor) -> list[torch.Tensor]:
    """edgeslim's calibration data: the first ``config.calib_batches`` batches of ``loader`` (the
    example alone when there is no loader)."""
    if loader is None:
        return [example]
    n = config.calib_batches if config is not None else PTQ().calib_batches
    return [x.detach().cpu().float() for x in calibration_batches(loader, n)]


def in_chunks(images: list[torch.Tensor], batch: int) -> list[torch.Tensor]:
    """All ``images`` regrouped in batches of ``batch`` (the exported graph's fixed batch size); the
    last one is filled up with images from the start."""
    flat = torch.cat(images)
    n = int(flat.shape[0])
    if n % batch:
        flat = torch.cat([flat, flat.repeat((batch // n) + 1, *([1] * (flat.dim() - 1)))[:batch - n % batch]])
    return list(flat.split(batch))


def pt2e_int8(model: nn.Module, example: torch.Tensor, images: list[torch.Tensor]) -> nn.Module:
    """The PT2E int8 model of the float ``model``: XNNPACKQuantizer (symmetric, per-channel weights),
    ``prepare_pt2e``, calibration on ``images``, ``convert_pt2e``."""
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    try:
        captured = torch.export.export(model, (example,)).module()
    except Exception as e:  # torch.export raises many unrelated types
        raise ExportError(f"torch.export cannot capture the model for executorch's int8 path: "
                          f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}") from None
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(captured, quantizer)
    # The activation scales are PT2E's observers' (XNNPACKQuantizer's histogram observers), collected
    # on edgeslim's calibration images -- the batches the simulation was calibrated on -- not copied
    # from the simulation's own observers; the weights are the simulation's, re-gridded per channel.
    with torch.no_grad():
        for chunk in in_chunks(images, int(example.shape[0])):
            prepared(chunk)
    return convert_pt2e(prepared)


def _agreement(runner, model: nn.Module, images: list[torch.Tensor]) -> dict:
    """The .pte against the simulation on ``images``: max abs diff and top-1 agreement."""
    from ..runtimes.executorch import first_output

    diff, agree, total = 0.0, 0, 0
    for x in images:
        with torch.no_grad():
            ref = first_output(model(x)).float().numpy()
        got = runner(x.numpy())
        if got.shape != ref.shape or not np.isfinite(got).all():
            raise ExportError(f"the executorch int8 program gives {got.shape} outputs "
                              f"{'with NaN/inf ' if got.shape == ref.shape else ''}where the simulation gives {ref.shape}")
        diff = max(diff, float(np.abs(got - ref).max()))
        if ref.ndim == 2:
            agree += int((got.argmax(1) == ref.argmax(1)).sum())
            total += int(ref.shape[0])
    return {"max_abs_diff": diff, "top1_agreement": agree / total if total else None}


@register_export(PTQ, runtime="executorch")
def export_pte_int8(model: nn.Module, path: str | os.PathLike, example: torch.Tensor, config: PTQ | None = None,
                    *, loader: Any = None) -> dict:
    """The int8 .pte of a PTQ simulation, run by XNNPACK's integer kernels in ExecuTorch:
    {"path", "size_bytes", "max_abs_diff", "top1_agreement", "calib_images", "batch", "delegate"}."""
    from ..runtimes.executorch import load_runner, require, save_pte, to_pte

    require()
    config = config if config is not None else getattr(model, "edgeslim_config", None)
    if config is not None:
        _check_bits(config)
    example = example.detach().cpu().float()
    model = copy.deepcopy(model).cpu().eval()  # the caller's simulation is left as it is
    images = calibration_images(loader, config, example)
    quantized = pt2e_int8(float_model(model).eval(), example, images)
    buffer = to_pte(quantized, example)

    def verify(tmp: Path) -> dict:
        return _agreement(load_runner(tmp, threads=None, name=Path(path).name), model, images)

    info = save_pte(buffer, path, verify)
    return {**info, "calib_images": sum(int(x.shape[0]) for x in images), "batch": int(example.shape[0]),
            "delegate": "XnnpackBackend", "quantizer": "XNNPACKQuantizer (int8, symmetric, per-channel weights)"}


__all__ = ["calibration_images", "export_pte_int8", "in_chunks", "pt2e_int8"]
