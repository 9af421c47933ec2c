"""Export a fake-quantized model to ONNX QDQ and check what ONNX Runtime makes of it.

The quantizers export themselves (see qmodules): activations as QuantizeLinear ->
DequantizeLinear with the calibrated scale / zero point, weights as int8 initializers ->
DequantizeLinear (per-channel, axis 0), biases as int32 -> DequantizeLinear. ONNX Runtime's graph
optimiser fuses ``DQ -> Conv -> Q`` into QLinearConv (and Gemm / MatMul / Add likewise);
``integer_ops`` dumps the optimised graph and lists which layers still run in float.
"""
from __future__ import annotations

import collections
import contextlib
import copy
import io
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from torch import nn

from ..core.errors import ExportError
from ..core.io import atomic_path
from .qmodules import exporting, register_torchscript_symbolics, translation_table

INTEGER_OPS = {"QLinearConv", "ConvInteger", "MatMulInteger", "QLinearMatMul", "QGemm", "QLinearAdd",
               "DynamicQuantizeMatMul", "MatMulIntegerToFloat", "QLinearGlobalAveragePool",
               "QLinearAveragePool", "QLinearMul", "QLinearConcat", "QLinearLeakyRelu", "QLinearSigmoid",
               "NhwcQLinearConv", "QLinearSoftmax"}
FLOAT_COMPUTE_OPS = {"Conv", "Gemm", "MatMul", "FusedConv", "FusedGemm", "FusedMatMul", "NchwcConv", "ConvTranspose"}


def export_qdq(model: nn.Module, path: str | os.PathLike, example: torch.Tensor, *, opset: int = 18,
               dynamic_batch: bool = True) -> dict[str, Any]:
    """Write the QDQ ONNX file of a model prepared by PTQ / QAT. Returns {"path", "size_bytes"}."""
    model = copy.deepcopy(model).cpu().eval()
    from .qmodules import QUANT_LAYERS, FakeQuant

    for p in model.parameters():
        p.requires_grad_(False)
    for m in model.modules():
        if isinstance(m, FakeQuant):
            m.unlearn()  # learned (LSQ) scales become constants: ONNX Runtime fuses only constant Q/DQ
    for m in model.modules():
        if isinstance(m, QUANT_LAYERS):
            m.freeze_for_export()
    path = Path(path)
    shapes = ({0: torch.export.Dim("batch", min=1)},) if dynamic_batch else None
    x = example[:1].cpu()
    with atomic_path(path) as tmp:
        errors = []
        with exporting(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            # TorchScript exporter first (fast), dynamo with a translation table as the fallback
            try:
                register_torchscript_symbolics(17)
                axes = {"input": {0: "batch"}, "output": {0: "batch"}} if dynamic_batch else None
                torch.onnx.export(model, (x,), str(tmp), dynamo=False, input_names=["input"], output_names=["output"],
                                  dynamic_axes=axes, opset_version=17, do_constant_folding=False)
            except Exception as e:  # noqa: BLE001 - the exporters raise many types
                errors.append(f"torchscript: {_first_line(e)}")
                try:
                    prog = torch.onnx.export(model, (x,), dynamo=True, input_names=["input"],
                                             output_names=["output"], dynamic_shapes=shapes, opset_version=opset,
                                             custom_translation_table=translation_table())
                    prog.save(str(tmp), external_data=False)
                except Exception as e2:  # noqa: BLE001
                    errors.append(f"dynamo: {_first_line(e2)}")
                    raise ExportError("cannot export the quantized model to ONNX: " + "; ".join(errors),
                                      hint="a layer may use an operator ONNX lacks; exclude it from quantization") from None
        _tidy(tmp)
        try:
            onnx.checker.check_model(str(tmp))
        except Exception as e:  # noqa: BLE001
            raise ExportError(f"the QDQ graph fails the ONNX checker: {str(e).splitlines()[0]}") from None
    return {"path": str(path), "size_bytes": path.stat().st_size}


def _first_line(e: Exception) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def _tidy(path: Path) -> None:
    """Drop float initializers nothing uses any more (the exporter keeps float weights as buffers)."""
    m = onnx.load(str(path))
    used = {i for n in m.graph.node for i in n.input} | {o.name for o in m.graph.output}
    keep = [t for t in m.graph.initializer if t.name in used]
    del m.graph.initializer[:]
    m.graph.initializer.extend(keep)
    for n in m.graph.node:  # the exporter's per-node stack traces only add bytes
        del n.metadata_props[:]
        n.doc_string = ""
    for v in m.graph.value_info:
        del v.metadata_props[:]
    onnx.save(m, str(path))


def integer_ops(path: str | os.PathLike, threads: int = 2) -> dict[str, Any]:
    """Op counts of the graph ONNX Runtime actually runs (after its optimisation), which compute
    ops are integer, and which stayed float."""
    from ..export.runtime import session

    with tempfile.TemporaryDirectory() as d:
        opt = Path(d) / "optimized.onnx"
        try:
            session(path, threads=threads, optimized_model_path=str(opt), level="all")
            g = onnx.load(str(opt)).graph
        except Exception:  # noqa: BLE001 - some layouts cannot be saved; the extended level can
            import onnxruntime as ort

            so = ort.SessionOptions()
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
            so.optimized_model_filepath = str(opt)
            ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
            g = onnx.load(str(opt)).graph
    counts = collections.Counter(n.op_type for n in g.node)
    integer = {k: v for k, v in counts.items() if k in INTEGER_OPS}
    floats = []
    for n in g.node:
        if n.op_type in FLOAT_COMPUTE_OPS:
            weight = next((i for i in n.input[1:2]), "")
            floats.append({"op": n.op_type, "node": n.name, "weight": weight})
    return {"ops": dict(counts), "integer_ops": integer, "float_compute": floats}


@torch.no_grad()
def parity(model: nn.Module, path: str | os.PathLike, batches: list[torch.Tensor], threads: int = 2) -> dict:
    """Simulation vs. ONNX Runtime on the same inputs: max abs diff and top-1 agreement."""
    from ..export.runtime import run, session

    sess = session(path, threads=threads)
    model.eval()
    diff, agree, total = 0.0, 0, 0
    for x in batches:
        ref = model(x).numpy()
        got = run(sess, x.numpy())
        diff = max(diff, float(np.abs(ref - got).max()))
        if ref.ndim == 2:
            agree += int((ref.argmax(1) == got.argmax(1)).sum())
            total += ref.shape[0]
    return {"max_abs_diff": diff, "top1_agreement": agree / total if total else None}
