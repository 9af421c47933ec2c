"""The peers' int8 flows (benchmarks/runtime_peers.py): each runtime's own quantization tool with its
documented defaults, fed the same calibration images as edgeslim, and the text that says so."""
from __future__ import annotations

import os
from pathlib import Path

ROLES = ("fp32", "edgeslim", "peer")


def one_line(e: BaseException) -> str:
    """The exception's type and the first non-empty line of its text (a table cell)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    text = lines[0] if lines else type(e).__name__
    return f"{type(e).__name__}: {text}"[:300]


def edgeslim_config():
    """The CLI ``edgeslim quantize`` defaults (edgeslim/quantization/cli.py build_config)."""
    from edgeslim.quantization import PTQ

    return PTQ(bits=8, calibration="minmax", weight_observer="minmax", per_channel=True, calib_batches=8)


def chunks(calib: list, batch: int) -> list:
    """The calibration images regrouped in batches of exactly ``batch`` (a graph with a fixed batch);
    the last one is filled up with images from the start (as edgeslim's ExecuTorch path does)."""
    import torch

    flat = torch.cat([x for x, _ in calib])
    n = int(flat.shape[0])
    if n % batch:
        flat = torch.cat([flat, flat.repeat(batch // n + 1, 1, 1, 1)[:batch - n % batch]])
    return list(flat.split(batch))


def peer_onnxruntime(src_onnx: Path, out: Path, calib: list, tmp: Path) -> dict:
    """ONNX Runtime's documented static flow: ``quant_pre_process`` (shape inference + optimization), then
    ``quantize_static`` with every default (QDQ, QInt8 activations and weights, per-tensor, MinMax)."""
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    name = ort.InferenceSession(str(src_onnx), providers=["CPUExecutionProvider"]).get_inputs()[0].name

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter([{name: x.numpy()} for x, _ in calib])

        def get_next(self):
            return next(self.it, None)

    pre, note = tmp / "pre.onnx", "quant_pre_process + quantize_static"
    try:
        quant_pre_process(str(src_onnx), str(pre))
        src = pre
    except Exception as e:  # noqa: BLE001 - the documented recommendation; record it and go on without
        src, note = src_onnx, f"quant_pre_process failed ({one_line(e)}); quantize_static on the fp32 file"
    quantize_static(str(src), str(out), Reader())
    return {"flow": note}


def peer_openvino(src_onnx: Path, out: Path, calib: list, tmp: Path) -> dict:
    """NNCF's documented flow: ``nncf.quantize(ov.convert_model(fp32.onnx), nncf.Dataset(images))`` with its
    defaults (preset PERFORMANCE: symmetric int8, per-channel weights, fast bias correction), one image per
    dataset item, ``subset_size`` = every calibration image; saved with ``ov.save_model`` (its default
    ``compress_to_fp16=True``: float constants left in the IR are stored as fp16)."""
    import nncf
    import openvino as ov

    images = [x[i:i + 1].numpy() for x, _ in calib for i in range(x.shape[0])]
    q = nncf.quantize(ov.convert_model(str(src_onnx)), nncf.Dataset(images), subset_size=len(images))
    ov.save_model(q, str(out))
    return {"flow": "nncf.quantize defaults", "images": len(images)}


def peer_litert(model, example, calib: list, out: Path) -> dict:
    """litert-torch's PT2E flow (its README): torch.export, ``PT2EQuantizer().set_global(
    get_symmetric_quantization_config())`` -- the config's defaults: static int8, per-tensor weights --,
    ``prepare_pt2e``, calibration, ``convert_pt2e(fold_quantize=False)``,
    ``litert_torch.convert(..., quant_config=QuantConfig(pt2e_quantizer=quantizer))``."""
    import torch
    import litert_torch
    from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
    from litert_torch.quantize.quant_config import QuantConfig
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config())
    m = prepare_pt2e(torch.export.export(model.eval(), (example,)).module(), quantizer)
    with torch.no_grad():
        for x in chunks(calib, int(example.shape[0])):
            m(x)
    m = convert_pt2e(m, fold_quantize=False)
    os.environ["LITERT_TORCH_SHOW_PROGRESS"] = "n"
    edge = litert_torch.convert(m, (example,), quant_config=QuantConfig(pt2e_quantizer=quantizer))
    edge.export(str(out))
    return {"flow": "PT2EQuantizer + get_symmetric_quantization_config() (static, per-tensor)"}


def peer_executorch(model, example, calib: list, out: Path) -> dict:
    """ExecuTorch's XNNPACK quantization flow (its docs): ``XNNPACKQuantizer().set_global(
    get_symmetric_quantization_config(is_per_channel=True))``, torch.export, ``prepare_pt2e``, calibration,
    ``convert_pt2e``, torch.export again, ``to_edge_transform_and_lower`` with the XnnpackPartitioner."""
    import torch
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (XNNPACKQuantizer,
                                                                         get_symmetric_quantization_config)
    from executorch.exir import to_edge_transform_and_lower
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    m = prepare_pt2e(torch.export.export(model.eval(), (example,)).module(), quantizer)
    with torch.no_grad():
        for x in chunks(calib, int(example.shape[0])):
            m(x)
    m = convert_pt2e(m)
    prog = to_edge_transform_and_lower(torch.export.export(m, (example,)), partitioner=[XnnpackPartitioner()])
    out.write_bytes(bytes(prog.to_executorch().buffer))
    return {"flow": "XNNPACKQuantizer + get_symmetric_quantization_config(is_per_channel=True)"}


def peer_flow_text() -> list[str]:
    cfg = edgeslim_config()
    return [
        "The flows (same model, same calibration images, per runtime):", "",
        f"- edgeslim int8: `edgeslim.quantize(model, PTQ(bits=8, calibration='{cfg.calibration}', weight_observer="
        f"'{cfg.weight_observer}', per_channel={cfg.per_channel}, calib_batches={cfg.calib_batches}), data=calib)` "
        "(the CLI `quantize` defaults: BN folded, int8 symmetric per-channel weights, uint8 per-tensor activations "
        "observed min/max), then `edgeslim.runtimes.get(NAME).export(q, path, example, loader=calib)`: QDQ ONNX "
        "(onnxruntime); the same QDQ ONNX through `ov.convert_model` to IR, fp32 constants kept fp32 (openvino); "
        "the simulation's float twin (edgeslim's int8 weights baked in) through litert-torch's PT2E quantizer, "
        "per-channel, static (litert) or XNNPACKQuantizer per-channel (executorch), calibrated on the same images.",
        "- ONNX Runtime peer: `quant_pre_process(fp32.onnx)` (the documented pre-processing: symbolic shape "
        "inference + ONNX Runtime optimization), then `quantize_static(pre.onnx, out, reader)` with every default: "
        "QDQ format, QInt8 activations and weights (S8S8), per-tensor weights, MinMax calibration.",
        "- OpenVINO peer: `nncf.quantize(ov.convert_model(fp32.onnx), nncf.Dataset(images), subset_size=N)` "
        "(N = every calibration image, one image per item; every other option default: preset PERFORMANCE, "
        "symmetric int8, per-channel weights, fast bias correction), `ov.save_model(q, out.xml)` with its "
        "default compress_to_fp16=True.",
        "- LiteRT peer: litert-torch's README flow, `torch.export` -> `prepare_pt2e(m, PT2EQuantizer().set_global("
        "get_symmetric_quantization_config()))` -> calibration -> `convert_pt2e(fold_quantize=False)` -> "
        "`litert_torch.convert(m, (example,), quant_config=QuantConfig(pt2e_quantizer=...))`; the config's "
        "defaults are static int8 activations and **per-tensor** weights (the README's example passes "
        "is_per_channel=True, is_dynamic=True, i.e. dynamic-range quantization, which uses no calibration images; "
        "the defaults are the static full-integer flow that does).",
        "- ExecuTorch peer: the XNNPACK quantization docs' flow, `XNNPACKQuantizer().set_global("
        "get_symmetric_quantization_config(is_per_channel=True))` (per-channel as the docs' example; the "
        "function's own default is per-tensor), `torch.export` -> `prepare_pt2e` -> calibration -> `convert_pt2e` "
        "-> `to_edge_transform_and_lower(torch.export(...), partitioner=[XnnpackPartitioner()])`.",
        "- PT2E graphs have a fixed batch: they are calibrated on the calibration images regrouped in batches of "
        "the example's batch (edgeslim's ExecuTorch path does the same; its LiteRT path calibrates a dynamic-batch "
        "capture on the loader's batches).",
    ]
