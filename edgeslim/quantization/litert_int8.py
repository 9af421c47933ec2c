"""PTQ's int8 path for the litert runtime: a full-integer int8 .tflite through litert-torch's PT2E quantizer.

The simulation's float twin (``deploy.float_model``: quantizers removed, fake-quantized weights baked
in) is exported with torch.export, annotated by litert-torch's ``PT2EQuantizer`` (int8 symmetric
weights, per channel as the config says; int8 affine activations per tensor), calibrated on
edgeslim's calibration data (the export's loader, else the example: ``calib_batches`` batches, as
PTQ itself calibrates), and converted with ``QuantConfig(pt2e_quantizer=...)`` into a file whose
inputs, outputs and kernels are all int8 (the Runner quantizes / dequantizes the float batches).

The scales are the converter's own, computed by its observers on edgeslim's calibration images
(HistogramObserver per activation tensor, min/max per weight channel); edgeslim's own activation
scales are not transferable through this converter (the PT2E quantizer annotates its own graph,
after torch.export's decompositions and with conv+relu fused, and takes observers, not fixed scales).
The weights come out as edgeslim's anyway: the float twin holds them on edgeslim's narrow symmetric
grid (codes -127..127, the largest code of a channel at +-127), so the converter's min/max observer
recovers edgeslim's weight scale of every channel (measured equal on the toy models) and the int8
weights in the file are edgeslim's int8 codes.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from ..core.errors import ExportError, UsageError
from ..core.registry import register_export
from .deploy import config_of, float_model
from .ptq import PTQ, calibration_batches


def check_supported(cfg: PTQ) -> None:
    """The PTQ settings this path deploys as simulated: 8-bit weights and activations on every
    Conv2d / Linear, calibrated. Any other: a UsageError (the converter's quantizer is int8, whole-model)."""
    why = None
    if cfg.w_bits != 8 or cfg.a_bits != 8 or (cfg.first_last_bits not in (None, 8)):
        why = f"{cfg.w_bits}-bit weights / {cfg.a_bits}-bit activations (litert's int8 path is 8-bit only)"
    elif any(b != 8 for _, b in cfg.mixed_precision):
        why = "mixed precision (litert's int8 path quantizes every layer at 8 bits)"
    elif cfg.layers or cfg.exclude:
        why = "a layer selection (litert's int8 path quantizes every layer)"
    elif cfg.data_free:
        why = "data-free weight-only quantization (litert's int8 path quantizes activations too)"
    if why:
        raise UsageError(f"litert has no int8 path for this PTQ config: {why}",
                         hint="use PTQ(bits=8) with its defaults for litert, or export this model for onnxruntime")


def _pieces(x: torch.Tensor, n: int) -> list[torch.Tensor]:
    """``x`` in pieces of exactly ``n`` rows (a graph with a fixed batch); a batch under ``n`` is tiled."""
    if x.shape[0] < n:
        x = x.repeat(-(-n // x.shape[0]), *([1] * (x.dim() - 1)))[:n]
    return [x[i:i + n] for i in range(0, x.shape[0] - n + 1, n)]


def _exported(twin: nn.Module, example: torch.Tensor) -> tuple[nn.Module, int | None]:
    """The twin through torch.export: with a dynamic batch where the model allows one (calibrated on
    whole loader batches; returns batch None), else at the example's batch (returns that batch)."""
    dyn_example = example if example.shape[0] > 1 else example.repeat(2, *([1] * (example.dim() - 1)))
    try:  # a batch of 2 to trace with: torch specializes a traced size of 1
        batch = torch.export.Dim("batch", min=1)
        return torch.export.export(twin, (dyn_example,), dynamic_shapes=({0: batch},)).module(), None
    except Exception:  # noqa: BLE001 - the model fixes its batch somewhere: calibrate at the example's
        pass
    try:
        return torch.export.export(twin, (example,)).module(), int(example.shape[0])
    except Exception as e:  # noqa: BLE001 - torch.export raises many types
        raise ExportError(f"torch.export cannot trace the model for litert's int8 path: "
                          f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}") from None


def quantized_graph(model: nn.Module, example: torch.Tensor, batches: list[torch.Tensor], *,
                    per_channel: bool = True) -> tuple[nn.Module, object]:
    """(the PT2E-quantized graph of ``model``'s float twin calibrated on ``batches``, its quantizer)."""
    from litert_torch.quantize import pt2e_quantizer as pq
    from torchao.quantization.pt2e import move_exported_model_to_eval
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    twin = float_model(model).eval()
    graph, fixed_batch = _exported(twin, example)
    quantizer = pq.PT2EQuantizer().set_global(pq.get_symmetric_quantization_config(is_per_channel=per_channel))
    prepared = prepare_pt2e(graph, quantizer)
    with torch.no_grad():
        for x in batches:
            for piece in ([x] if fixed_batch is None else _pieces(x, fixed_batch)):
                prepared(piece)
    quantized = move_exported_model_to_eval(convert_pt2e(prepared, fold_quantize=False))
    for m in quantized.modules():  # the graph is in eval form already; the flag tells litert-torch so
        m.training = False
    return quantized, quantizer


@torch.no_grad()
def agreement(model: nn.Module, runner, x: torch.Tensor) -> dict:
    """{"max_abs_diff", "top1_agreement"} of the .tflite's Runner against the simulation on ``x``."""
    want = model(x)
    want = (want[0] if isinstance(want, (tuple, list)) else want).float().numpy()
    got = runner(x.numpy())
    if got.shape != want.shape or not np.isfinite(got).all():
        raise ExportError(f"litert's int8 file gives {'non-finite outputs' if got.shape == want.shape else got.shape}"
                          f" where the simulation gives {want.shape}")
    top1 = float((got.argmax(1) == want.argmax(1)).mean()) if want.ndim == 2 else None
    return {"max_abs_diff": float(np.abs(got - want).max()), "top1_agreement": top1}


@register_export(PTQ, runtime="litert")
def export_litert_int8(model: nn.Module, path, example: torch.Tensor, config: PTQ | None = None, *,
                       loader=None) -> dict:
    """Full-integer int8 .tflite of a PTQ simulation, written atomically; checked to load and run, its
    agreement with the simulation on the first calibration batch returned (``vs_simulation``)."""
    from litert_torch.quantize.quant_config import QuantConfig

    from ..runtimes import litert
    from ..runtimes.base import file_size

    cfg = config if config is not None else (config_of(model) or PTQ())
    check_supported(cfg)
    example = example.detach().float().cpu()
    batches = calibration_batches(loader if loader is not None else example, cfg.calib_batches)
    graph, quantizer = quantized_graph(model, example, batches, per_channel=cfg.per_channel)
    edge = litert.convert(graph, example, quant_config=QuantConfig(pt2e_quantizer=quantizer))
    with litert.atomic_path(path) as tmp:
        litert.write(edge, tmp)
        runner = litert.LiteRTRunner(litert.interpreter(tmp, threads=1), path)
        if runner.input_dtype != np.int8:
            raise ExportError(f"litert's int8 path wrote a {runner.input_dtype} input, not int8")
        check = agreement(model.eval(), runner, batches[0])
    return {"path": str(path), "size_bytes": file_size(path), "runtime": "litert", "format": "int8",
            "input_shape": list(example.shape), "calib_images": sum(int(b.shape[0]) for b in batches),
            "scales": "converter (litert-torch PT2E observers on edgeslim's calibration batches)",
            "vs_simulation": check}
